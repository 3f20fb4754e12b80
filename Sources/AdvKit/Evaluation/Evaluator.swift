import Foundation

/// Runs an evaluation: trains (or reuses) the models, attacks every defense, writes the report.
public final class Evaluator {
    public let settings: EvaluationSettings
    /// The training images: the defender's half trains (or fine-tunes) the defenses and calibrates the detectors,
    /// the attacker's half the surrogates. nil: the user gave test images only, enough for the undefended model's
    /// white-box evaluation and the noise defense (`needsTraining` says what else would need them).
    public let train: Dataset?
    public let test: Dataset
    public let outputDirectory: String
    public var progressStyle: ProgressReporter.Style = .automatic
    /// Run only share `index` of `count`: the defenses whose position in the settings is index mod count.
    /// `EvaluationResults.merge` joins the shares into what one run gives.
    public var shard: (index: Int, count: Int)?
    /// Lines about what was reused or trained ("reusing cached model ..."), for the caller to print.
    public var log: (String) -> Void = { _ in }
    public internal(set) var timings: [String: Double] = [:]
    /// Called after each unit of work is computed (an attack against a defense, a curve, a defense's checks, a
    /// transfer attack) and saved, with the unit's name. Throwing stops the run; what is finished stays on disk and
    /// the next run with the same settings resumes from it (see `EvaluationJournal`).
    @_spi(Testing) public var afterEachUnit: ((String) throws -> Void)?
    /// Reuse the units an earlier run with the same settings finished (default). Off: compute every unit again
    /// (and overwrite the kept ones).
    public var resume = true
    /// Units the last `run()` found finished on disk and reused, and units it computed.
    @_spi(Testing) public private(set) var reusedUnits = 0
    @_spi(Testing) public private(set) var computedUnits = 0

    /// Per (defense, attack, form): which test images stayed robust (for the worst case).
    var robustFlags: [String: [Bool]] = [:]
    var galleries: [String: Gallery] = [:]
    var undefended: TrainableClassifier!
    /// Each cached model's file, relative to the output folder.
    var modelFiles: [ObjectIdentifier: String] = [:]
    /// The user's model, when the evaluation is of theirs.
    public let userModel: UserModel?
    /// The hardened copies of the user's model written in their format (defense name → file relative to the
    /// output folder).
    public internal(set) var hardenedFiles: [String: String] = [:]

    /// An evaluation of AdvKit's built-in architecture (trained here), or of `userModel` (its defenses fine-tune
    /// it from its own weights; `settings.model` is set from it).
    public init(settings: EvaluationSettings, train: Dataset?, test: Dataset, outputDirectory: String, userModel: UserModel? = nil) throws {
        var settings = settings
        settings.model = userModel?.record
        try settings.validate()
        let needs = Evaluator.needsTraining(settings, userModel: userModel != nil)
        if train == nil, !needs.isEmpty {
            throw AdvKitError.invalidArgument("training images are needed for \(needs.joined(separator: ", ")): give them, or leave those out")
        }
        if let train, train.count < 4 {
            throw AdvKitError.invalidArgument("the training set has \(train.count) image(s): too few to split into the defender's and the attacker's halves")
        }
        if let userModel, userModel.record.inputShape != test.imageShape.dims {
            throw AdvKitError.invalidData("the model takes images \(userModel.record.inputShape), the test images are \(test.imageShape.dims)")
        }
        if let train, train.imageShape != test.imageShape {
            throw AdvKitError.invalidData("the training images are \(train.imageShape.dims), the test images \(test.imageShape.dims)")
        }
        self.settings = settings
        self.train = train
        self.test = test.prefix(settings.limit)
        self.outputDirectory = outputDirectory
        self.userModel = userModel
    }

    /// What of `settings` needs training images: every defense but `none` and `noise` (training, fine-tuning,
    /// calibrating a detector), the built-in model itself, and the black-box threat (the attacker's surrogates).
    public static func needsTraining(_ settings: EvaluationSettings, userModel: Bool) -> [String] {
        var needs = settings.defenses.filter {
            switch $0 { case .none, .noise: return false; default: return true }
        }.map { "the \($0.name) defense" }
        if !userModel { needs.insert("the built-in model", at: 0) }
        if settings.threat != "white" { needs.append("the black-box surrogates (--threat white leaves them out)") }
        return needs
    }

    var imageShape: Shape { test.imageShape }
    var baseArchitecture: Architecture { imageShape[0] == 3 ? .resnet : .cnn }

    // MARK: running

    /// The attacker's surrogates for the transfer attacks: the built-in architectures that take the images (the
    /// ResNet needs square images, the CNN at least 16×16), each with its name, file name and seed offset.
    func surrogateArchitectures() -> [(name: String, file: String, architecture: Architecture, seedOffset: UInt64)] {
        let all: [(String, String, Architecture, UInt64)] = [("resnet surrogate", "surrogate-resnet", .resnet, 101),
                                                            ("cnn surrogate", "surrogate-cnn", .cnn, 202)]
        let usable = all.filter { (try? Model.validate($0.2, inputShape: imageShape, classes: test.classCount)) != nil }
        return usable.isEmpty ? [("mlp surrogate", "surrogate-mlp", .mlp, 303)] : usable
    }

    public func run() throws -> EvaluationResults {
        var results = EvaluationResults(settings: settings)
        try FileManager.default.createDirectory(atPath: outputDirectory, withIntermediateDirectories: true)
        let started = Date()
        undefended = try trainedModel(.none, architecture: baseArchitecture, seed: settings.seed)
        if let shard, !(shard.count >= 1 && shard.index >= 0 && shard.index < shard.count) {
            throw AdvKitError.invalidArgument("shard \(shard.index)/\(shard.count) is not one of 0/N ... (N-1)/N")
        }
        let mine = settings.defenses.enumerated().filter { shard == nil || $0.offset % shard!.count == shard!.index }.map(\.element)
        let defenses = try mine.map { try defended($0) }
        let white = settings.threat != "black", black = settings.threat != "white"
        let curveAttacks = settings.attacks.filter { $0 == .fgsm || $0 == .pgd }
        let surrogates = surrogateArchitectures()
        let cells = defenses.count * ((white ? settings.attacks.count + curveAttacks.count + 1 : 0) + (black ? settings.queryAttacks.count : 0))
            + (black ? surrogates.count : 0)
        /// The noise defense's draws are keyed by what they are for (a unit's name), not by how many forward passes
        /// came before: a run that reuses finished units draws what an uninterrupted one draws.
        func keyRandomness(_ what: String) {
            var h = EvaluationJournal.Hash()
            h.add(what)
            for d in defenses { (d.classifier as? NoisyClassifier)?.restart(stream: h.value) }
        }
        let bar = ProgressReporter("evaluate", total: cells, style: progressStyle)
        var done = 0
        func tick(_ what: String) {
            done += 1
            bar.update(done, status: what)
        }
        let journal = try EvaluationJournal(outputDirectory: outputDirectory, settings: settings, test: test)
        reusedUnits = 0
        computedUnits = 0
        /// A unit's result as kept on disk (`load`), or computed, kept (`save`), and announced.
        func unit<T>(_ name: String, load: () -> T?, save: (T) throws -> Void, _ compute: () throws -> T) throws -> T {
            if resume, let kept = load() {
                reusedUnits += 1
                return kept
            }
            let t0 = Date()
            keyRandomness(name)
            let value = try compute()
            try save(value)
            timings[name] = Date().timeIntervalSince(t0)
            computedUnits += 1
            try afterEachUnit?(name)
            return value
        }
        /// A unit kept as a small JSON file.
        func unit<T: Codable>(_ name: String, _ compute: () throws -> T) throws -> T {
            try unit(name, load: { journal.load(name, as: T.self) }, save: { try journal.save($0, unit: name) }, compute)
        }
        for d in defenses {
            let classifier = try fingerprint(d.model), detector = try d.detectorNetwork.map { try fingerprint($0.network) }
            var record = EvaluationResults.ModelRecord(name: d.name, file: classifier.file, sha256: classifier.sha256, detectorFile: detector?.file,
                                                       detectorSHA256: detector?.sha256, cleanAccuracy: d.model.accuracy(test.images, labels: test.labels))
            if let hardened = hardenedFiles[d.name] {
                record.hardenedFile = hardened
                record.hardenedSHA256 = try SHA256.hex(ofFile: outputDirectory + "/" + hardened)
            }
            results.models.append(record)
            keyRandomness("clean \(d.name)")
            results.cleanAccuracy[d.name] = share(robustClean(d))
        }
        // Randomized smoothing's certificates on the clean images (Evaluator+Cells.swift, Report+Certified.swift).
        for d in defenses where d.smoothing != nil {
            results.certified = (results.certified ?? []) + [try unit("certified \(d.name)") { try certifiedUnit(d) }]
        }
        // White-box: every attack against every defense, in its adaptive form where it has one (`form`).
        if white {
            for d in defenses {
                var needed = EvaluationResults.Needed(defense: d.name)
                for a in settings.attacks {
                    let w = try unit("white \(d.name) \(a.name)") { try whiteBoxCell(a, against: d) }
                    results.whiteBox.append(w.cell)
                    if !a.isMinimalPerturbation { robustFlags["\(d.name)|\(a.name)"] = w.flags }
                    if case .deepfool = a {
                        needed.deepfoolL2 = w.cell.medianL2
                        needed.deepfoolLinf = w.deepfoolLinf
                    }
                    if case .cw = a { needed.cwL2 = w.cell.medianL2 }
                    if let g = w.gallery {
                        galleries[a.name] = g
                        results.galleries.append(.init(attack: a.name, indices: g.indices, outcomes: g.outcomes))
                    }
                    tick("\(d.name) / \(a.name)")
                }
                if needed.deepfoolL2 != nil || needed.cwL2 != nil { results.perturbationNeeded.append(needed) }
                // Curves: robust accuracy against epsilon.
                for a in curveAttacks {
                    let curve = try unit("curve \(d.name) \(a.name)") { () throws -> EvaluationResults.Curve in
                        var accs: [Double] = []
                        for e in settings.epsilons {
                            let adv = try attack(a, eps: e, against: d).generate(d.classifier, images: test.images, labels: test.labels, seed: settings.seed)
                            accs.append(share(robust(d, adversarial: adv)))
                        }
                        let f = form(a, against: d)
                        return .init(defense: d.name, attack: a.name, form: f.form, adaptive: f.adaptive, epsilons: settings.epsilons,
                                     robustAccuracy: accs)
                    }
                    results.curves.append(curve)
                    tick("\(d.name) / \(a.name) curve")
                }
                let snapshot = results
                results.sanity += try unit("sanity \(d.name)") { try sanityChecks(d, results: snapshot) }
                tick("\(d.name) / sanity")
            }
        }
        // Black-box: surrogates the attacker trains on the other half of the data, attacks transferred. The
        // transferred images are kept (not the verdicts) so that shards, each with its own defenses, share them.
        if black {
            for (sname, file, arch, offset) in surrogates {
                // The transferred images, kept as a float32 IDX file.
                let images = journal.path("transfer \(sname)") + ".idx"
                let adv = try unit("transfer \(sname)", load: { () -> Tensor? in
                    guard let kept = try? IDX.read(images), kept.dims == [test.count] + test.imageShape.dims else { return nil }
                    return Tensor(kept.values, shape: Shape(kept.dims))
                }, save: { try IDX.write($0, to: images) }) {
                    let s = try trainedModel(.none, architecture: arch, attacker: true, seed: settings.seed &+ offset, name: file)
                    return try pgd(settings.epsilon).generate(s, images: test.images, labels: test.labels, seed: settings.seed)
                }
                for d in defenses {
                    keyRandomness("transfer verdict \(sname) \(d.name)")
                    let flags = robust(d, adversarial: adv)
                    robustFlags["\(d.name)|transfer \(sname)"] = flags
                    results.blackBox.append(.init(defense: d.name, attack: "pgd", form: "transfer from \(sname)", adaptive: false,
                                                  robustAccuracy: share(flags), medianL2: nil, medianLinf: nil))
                }
                tick(sname)
            }
            // Query-based: Square (scores) and HopSkipJump (labels) against what each defense answers.
            for d in defenses {
                for a in settings.queryAttacks {
                    let q = try unit("query \(d.name) \(a.name)") { try queryCell(a, against: d) }
                    results.blackBox.append(q.cell)
                    robustFlags["\(d.name)|query \(a.name)"] = q.flags
                    tick("\(d.name) / \(a.name)")
                }
            }
            for d in defenses {
                let whiteCell = results.whiteBox.first { $0.defense == d.name && $0.attack == "pgd" }
                for cell in results.blackBox where cell.defense == d.name {
                    if let whiteCell {
                        let white = whiteCell.robustAccuracy
                        results.sanity.append(.init(defense: d.name, check: "black-box does not beat white-box (\(cell.attack.uppercased()), \(cell.form))",
                                                    passed: cell.robustAccuracy + 0.02 >= white,
                                                    detail: String(format: "%@ %.1f%%, white-box PGD (%@) %.1f%%", cell.attack.uppercased(),
                                                                   cell.robustAccuracy * 100, whiteCell.form, white * 100)))
                    }
                }
            }
        }
        if reusedUnits > 0 {
            log("resumed: reused \(reusedUnits) finished unit(s) from \(journal.directory), computed \(computedUnits)")
        }
        // Worst case per image: robust only if every attack (minimal-perturbation ones aside) failed on it.
        for d in defenses {
            let keys = robustFlags.keys.filter { $0.hasPrefix(d.name + "|") }
            guard !keys.isEmpty else { continue }
            var all = [Bool](repeating: true, count: test.count)
            for k in keys { for (i, f) in robustFlags[k]!.enumerated() where !f { all[i] = false } }
            results.worstCase[d.name] = share(all)
        }
        bar.finish(String(format: "%d defenses, %d attacks, %.0fs", defenses.count, settings.attacks.count, Date().timeIntervalSince(started)))
        timings["total"] = Date().timeIntervalSince(started)
        return results.canonical()
    }

}
