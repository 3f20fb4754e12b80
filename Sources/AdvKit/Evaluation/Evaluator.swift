import Foundation

/// Runs an evaluation: trains (or reuses) the models, attacks every defense, writes the report.
public final class Evaluator {
    public let settings: EvaluationSettings
    public let train: Dataset
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
    var undefended: Model!
    /// Each cached model's file, relative to the output folder.
    var modelFiles: [ObjectIdentifier: String] = [:]
    /// λ of the detector-aware attack: CE(model) − λ·CE(detector, clean).
    static let detectorLambda: Float = 1

    public init(settings: EvaluationSettings, train: Dataset, test: Dataset, outputDirectory: String) throws {
        try settings.validate()
        self.settings = settings
        self.train = train
        self.test = test.prefix(settings.limit)
        self.outputDirectory = outputDirectory
    }

    var imageShape: Shape { test.imageShape }
    var baseArchitecture: Architecture { imageShape[0] == 3 ? .resnet : .cnn }

    // MARK: running

    /// Per image: robust under this defense (right, or flagged by its detector).
    func robust(_ d: Defended, adversarial: Tensor) -> [Bool] {
        let pred = d.classifier.logits(of: adversarial).argmaxRows()
        let flagged = d.detector?.detect(adversarial) ?? d.squeezing?.detect(adversarial)
            ?? [Bool](repeating: false, count: pred.count)
        return (0..<pred.count).map { pred[$0] == Int(test.labels[$0]) || flagged[$0] }
    }

    func share(_ flags: [Bool]) -> Double { Double(flags.filter { $0 }.count) / Double(max(flags.count, 1)) }

    /// The attack against `d`, in the form `form(_:against:)` names (PGD with `steps`, default the settings').
    func attack(_ name: String, eps: Float, against d: Defended, steps: Int? = nil) -> Attack {
        switch name {
        case "fgsm": return FGSM(epsilon: eps)
        case "pgd":
            let p = pgd(eps, steps: steps)
            if let det = d.detector {
                return DetectorAwarePGD(detector: det, epsilon: eps, alpha: p.alpha, steps: p.steps, lambda: Evaluator.detectorLambda)
            }
            return p
        case "deepfool": return DeepFool(steps: 50)
        default: return CarliniWagnerL2(binarySearchSteps: settings.quick ? 2 : 3, steps: settings.quick ? 50 : 100)
        }
    }

    public func run() throws -> EvaluationResults {
        var results = EvaluationResults(settings: settings)
        try FileManager.default.createDirectory(atPath: outputDirectory, withIntermediateDirectories: true)
        let started = Date()
        undefended = try trainedModel("none", architecture: baseArchitecture, seed: settings.seed)
        if let shard, !(shard.count >= 1 && shard.index >= 0 && shard.index < shard.count) {
            throw AdvKitError.invalidArgument("shard \(shard.index)/\(shard.count) is not one of 0/N ... (N-1)/N")
        }
        let mine = settings.defenses.enumerated().filter { shard == nil || $0.offset % shard!.count == shard!.index }.map(\.element)
        let defenses = try mine.map { try defended($0) }
        let white = settings.threat != "black", black = settings.threat != "white"
        let curveAttacks = settings.attacks.filter { $0 == "fgsm" || $0 == "pgd" }
        let cells = defenses.count * (settings.attacks.count + (white ? curveAttacks.count : 0) + 2) + (black ? 2 : 0)
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
            let classifier = try fingerprint(d.model), detector = try d.detector.map { try fingerprint($0.network) }
            results.models.append(.init(name: d.name, file: classifier.file, sha256: classifier.sha256, detectorFile: detector?.file,
                                        detectorSHA256: detector?.sha256, cleanAccuracy: d.model.accuracy(test.images, labels: test.labels)))
            results.cleanAccuracy[d.name] = share(robustClean(d))
        }
        // White-box: every attack against every defense, in its adaptive form where it has one (`form`).
        if white {
            for d in defenses {
                var needed = EvaluationResults.Needed(defense: d.name)
                for a in settings.attacks {
                    let w = try unit("white \(d.name) \(a)") { try whiteBoxCell(a, against: d) }
                    results.whiteBox.append(w.cell)
                    robustFlags["\(d.name)|\(a)"] = w.flags
                    if a == "deepfool" {
                        needed.deepfoolL2 = w.cell.medianL2
                        needed.deepfoolLinf = w.deepfoolLinf
                    }
                    if a == "cw" { needed.cwL2 = w.cell.medianL2 }
                    if let g = w.gallery {
                        galleries[a] = g
                        results.galleries.append(.init(attack: a, indices: g.indices, outcomes: g.outcomes))
                    }
                    tick("\(d.name) / \(a)")
                }
                if needed.deepfoolL2 != nil || needed.cwL2 != nil { results.perturbationNeeded.append(needed) }
                // Curves: robust accuracy against epsilon.
                for a in curveAttacks {
                    let curve = try unit("curve \(d.name) \(a)") { () throws -> EvaluationResults.Curve in
                        var accs: [Double] = []
                        for e in settings.epsilons {
                            let adv = try attack(a, eps: e, against: d).generate(d.classifier, images: test.images, labels: test.labels, seed: settings.seed)
                            accs.append(share(robust(d, adversarial: adv)))
                        }
                        let f = form(a, against: d)
                        return .init(defense: d.name, attack: a, form: f.form, adaptive: f.adaptive, epsilons: settings.epsilons,
                                     robustAccuracy: accs)
                    }
                    results.curves.append(curve)
                    tick("\(d.name) / \(a) curve")
                }
                let snapshot = results
                results.sanity += try unit("sanity \(d.name)") { try sanityChecks(d, results: snapshot) }
                tick("\(d.name) / sanity")
            }
        }
        // Black-box: surrogates the attacker trains on the other half of the data, attacks transferred. The
        // transferred images are kept (not the verdicts) so that shards, each with its own defenses, share them.
        if black {
            for (sname, file, arch, offset) in [("resnet surrogate", "surrogate-resnet", Architecture.resnet, UInt64(101)),
                                                 ("cnn surrogate", "surrogate-cnn", Architecture.cnn, UInt64(202))] {
                // The transferred images, kept as a float32 IDX file.
                let images = journal.path("transfer \(sname)") + ".idx"
                let adv = try unit("transfer \(sname)", load: { () -> Tensor? in
                    guard let kept = try? IDX.read(images), kept.dims == [test.count] + test.imageShape.dims else { return nil }
                    return Tensor(kept.values, shape: Shape(kept.dims))
                }, save: { try IDX.write($0, to: images) }) {
                    let s = try trainedModel(file, architecture: arch, attacker: true, seed: settings.seed &+ offset)
                    return try pgd(settings.epsilon).generate(s, images: test.images, labels: test.labels, seed: settings.seed)
                }
                for d in defenses {
                    let flags = robust(d, adversarial: adv)
                    robustFlags["\(d.name)|transfer \(sname)"] = flags
                    results.blackBox.append(.init(defense: d.name, attack: "pgd", form: "transfer from \(sname)", adaptive: false,
                                                  robustAccuracy: share(flags), medianL2: nil, medianLinf: nil))
                }
                tick(sname)
            }
            for d in defenses {
                let whiteCell = results.whiteBox.first { $0.defense == d.name && $0.attack == "pgd" }
                for cell in results.blackBox where cell.defense == d.name {
                    if let whiteCell {
                        let white = whiteCell.robustAccuracy
                        results.sanity.append(.init(defense: d.name, check: "black-box does not beat white-box (\(cell.form))",
                                                    passed: cell.robustAccuracy + 0.02 >= white,
                                                    detail: String(format: "transfer %.1f%%, white-box PGD (%@) %.1f%%", cell.robustAccuracy * 100,
                                                                   whiteCell.form, white * 100)))
                    }
                }
            }
        }
        if reusedUnits > 0 {
            log("resumed: reused \(reusedUnits) finished unit(s) from \(journal.directory), computed \(computedUnits)")
        }
        // Worst case per image: robust only if every attack (minimal-perturbation ones aside) failed on it.
        for d in defenses {
            let keys = robustFlags.keys.filter { $0.hasPrefix(d.name + "|") && !$0.hasSuffix("|deepfool") && !$0.hasSuffix("|cw") }
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
