import Foundation

/// What `advkit evaluate` runs: which defenses, which attacks, how large, how long to train.
public struct EvaluationSettings: Codable, Equatable, Sendable {
    public var dataset: String = "fashion-mnist"
    public var defenses: [String] = EvaluationSettings.allDefenses
    public var attacks: [String] = ["fgsm", "pgd", "deepfool", "cw"]
    /// The main L∞ radius of the tables.
    public var epsilon: Float = 0.1
    /// The radii of the robustness curves.
    public var epsilons: [Float] = [0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3]
    /// Test images attacked.
    public var limit = 500
    /// Training images per model, from the defender's half of the training set (the attacker's surrogates
    /// train on the other half).
    public var trainImages = 20_000
    public var epochs = 2
    public var pgdSteps = 20
    public var threat = "both"
    public var seed: UInt64 = 0
    public var quick = false

    public static let allDefenses = ["none", "gda", "brelu", "gda+brelu", "fgsm-at", "pgd-at", "vat", "label-smoothing",
                                     "feature-squeezing", "noise", "detector"]
    public static let allAttacks = ["fgsm", "pgd", "deepfool", "cw"]

    public init() {}

    /// The small configuration of `--quick`: a couple of minutes on 2 cores.
    public static func quickSettings() -> EvaluationSettings {
        var s = EvaluationSettings()
        s.quick = true
        s.limit = 200
        s.trainImages = 6_000
        s.epochs = 1
        s.pgdSteps = 10
        s.attacks = ["fgsm", "pgd", "deepfool"]
        s.epsilons = [0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3]
        return s
    }

    public func validate() throws {
        for d in defenses where !EvaluationSettings.allDefenses.contains(d) {
            throw AdvKitError.invalidArgument("unknown defense '\(d)' (known: \(EvaluationSettings.allDefenses.joined(separator: ", ")))")
        }
        for a in attacks where !EvaluationSettings.allAttacks.contains(a) {
            throw AdvKitError.invalidArgument("unknown attack '\(a)' (known: \(EvaluationSettings.allAttacks.joined(separator: ", ")))")
        }
        guard !defenses.isEmpty, !attacks.isEmpty else { throw AdvKitError.invalidArgument("evaluate needs at least one defense and one attack") }
        try checkEpsilon(epsilon)
        guard epsilons.count >= 2 else { throw AdvKitError.invalidArgument("the curves need at least 2 epsilons") }
        for e in epsilons { try checkEpsilon(e) }
        guard limit >= 1, trainImages >= 10, epochs >= 1, pgdSteps >= 1 else {
            throw AdvKitError.invalidArgument("limit, training images, epochs and PGD steps must be positive")
        }
        guard ["white", "black", "both"].contains(threat) else { throw AdvKitError.invalidArgument("threat must be white, black or both, got \(threat)") }
    }
}

/// Every number of an evaluation. Timings live apart (`timings`) so that two runs with the same seed give the
/// same `results` (tested).
public struct EvaluationResults: Codable, Equatable {
    /// The weights a defense's numbers come from, as cached in the output folder.
    public struct ModelRecord: Codable, Equatable {
        public var name: String
        /// The classifier's weights, relative to the output folder ("models/none-1a2b….safetensors"); the
        /// inference-time defenses wrap the undefended model, so they name its file.
        public var file: String
        /// SHA-256 of `file`, lowercase hex.
        public var sha256: String
        /// The detector network's weights and their SHA-256 (the `detector` defense only).
        public var detectorFile: String?
        public var detectorSHA256: String?
        public var cleanAccuracy: Double
    }
    public struct Cell: Codable, Equatable {
        public var defense: String
        public var attack: String
        /// What was run: "white-box" (a model with nothing to adapt to), "adaptive: EOT (4 draws)",
        /// "adaptive: detector-aware PGD", "BPDA, squeezing detector not in the loss", "white-box (not adaptive)"
        /// (the attack ignores the defense's detector), or "transfer from X".
        public var form: String
        /// The attack's loss covers every part of the defense that decides the cell (model, squeeze, noise,
        /// detector). False: the number is an upper bound on robust accuracy, not a measure of the defense.
        public var adaptive: Bool
        public var robustAccuracy: Double
        public var medianL2: Double?
        public var medianLinf: Double?
    }
    public struct Curve: Codable, Equatable {
        public var defense: String
        public var attack: String
        /// As in `Cell`.
        public var form: String
        public var adaptive: Bool
        public var epsilons: [Float]
        public var robustAccuracy: [Double]

        public init(defense: String, attack: String, form: String, adaptive: Bool, epsilons: [Float], robustAccuracy: [Double]) {
            precondition(epsilons.count == robustAccuracy.count, "a curve needs one robust accuracy per epsilon")
            (self.defense, self.attack, self.form, self.adaptive) = (defense, attack, form, adaptive)
            (self.epsilons, self.robustAccuracy) = (epsilons, robustAccuracy)
        }

        /// The largest rise of robust accuracy with ε: a point above an earlier (smaller-ε) point by more than
        /// `margin`, with the two indices; nil when the curve never rises that much. A curve that rises is a sign
        /// of gradient masking or of an attack that does not see the whole defense (Carlini et al. 2019, §5.2).
        public func rise(moreThan margin: Double = 0.02) -> (from: Int, to: Int, amount: Double)? {
            var best: (from: Int, to: Int, amount: Double)?
            var low = 0
            for j in robustAccuracy.indices.dropFirst() {
                if robustAccuracy[j - 1] < robustAccuracy[low] { low = j - 1 }
                let amount = robustAccuracy[j] - robustAccuracy[low]
                if amount > margin + 1e-9 && amount > (best?.amount ?? 0) { best = (low, j, amount) }
            }
            return best
        }

        /// Robust accuracy should not rise with ε: this check warns when a point lies more than 2 points above one
        /// at a smaller ε (`rise`), naming the defense, the attack, its form and both ε.
        public func riseCheck() -> Check {
            let what = "\(attack.uppercased()) (\(form))"
            let check = "robust accuracy does not rise with epsilon (\(attack.uppercased()))"
            guard let r = rise() else {
                return .init(defense: defense, check: check, passed: true, detail: "\(what): no point more than 2 points above one at a smaller eps")
            }
            return .init(defense: defense, check: check, passed: false,
                         detail: String(format: "%@ on %@: %.1f%% at eps %g, %.1f%% at eps %g (up %.1f points)", what, defense,
                                        robustAccuracy[r.from] * 100, epsilons[r.from], robustAccuracy[r.to] * 100, epsilons[r.to],
                                        r.amount * 100))
        }
    }
    /// The images a gallery shows: successful attacks first, then failed ones, then images the model already
    /// got wrong (each group in test-set order).
    public struct Gallery: Codable, Equatable {
        public var attack: String
        /// Test-set indices of the rows, top to bottom.
        public var indices: [Int]
        /// Per row: "fooled", "failed" (still right after the attack) or "already wrong" (wrong on the clean image).
        public var outcomes: [String]
        public var fooled: Int { outcomes.filter { $0 == "fooled" }.count }
        public var failed: Int { outcomes.filter { $0 == "failed" }.count }
        public var alreadyWrong: Int { outcomes.filter { $0 == "already wrong" }.count }
    }
    public struct Needed: Codable, Equatable {
        public var defense: String
        /// Median minimal perturbation over the images the model got right (DeepFool L2 / L∞, C&W L2).
        public var deepfoolL2: Double?
        public var deepfoolLinf: Double?
        public var cwL2: Double?
    }
    public struct Check: Codable, Equatable {
        public var defense: String
        public var check: String
        public var passed: Bool
        public var detail: String
    }

    public var settings: EvaluationSettings
    public var models: [ModelRecord] = []
    public var cleanAccuracy: [String: Double] = [:]
    public var whiteBox: [Cell] = []
    public var blackBox: [Cell] = []
    public var curves: [Curve] = []
    public var perturbationNeeded: [Needed] = []
    public var worstCase: [String: Double] = [:]
    public var sanity: [Check] = []
    /// The galleries of the undefended model, one per attack.
    public var galleries: [Gallery] = []
}

extension EvaluationResults {
    /// Entries in the settings' order of defenses (then attacks, then forms), so that a run and the merge of
    /// its shards compare equal.
    func canonical() -> EvaluationResults {
        var r = self
        let di = Dictionary(uniqueKeysWithValues: settings.defenses.enumerated().map { ($0.element, $0.offset) })
        let ai = Dictionary(uniqueKeysWithValues: settings.attacks.enumerated().map { ($0.element, $0.offset) })
        func cellOrder(_ a: Cell, _ b: Cell) -> Bool {
            (di[a.defense] ?? 0, ai[a.attack] ?? 0, a.form) < (di[b.defense] ?? 0, ai[b.attack] ?? 0, b.form)
        }
        r.whiteBox.sort(by: cellOrder)
        r.blackBox.sort(by: cellOrder)
        r.curves.sort { (di[$0.defense] ?? 0, ai[$0.attack] ?? 0) < (di[$1.defense] ?? 0, ai[$1.attack] ?? 0) }
        r.perturbationNeeded.sort { (di[$0.defense] ?? 0) < (di[$1.defense] ?? 0) }
        r.models.sort { (di[$0.name] ?? 0) < (di[$1.name] ?? 0) }
        r.galleries.sort { (ai[$0.attack] ?? 0) < (ai[$1.attack] ?? 0) }
        // Stable: a defense's checks keep the order they were made in.
        r.sanity = r.sanity.enumerated().sorted { (di[$0.element.defense] ?? 0, $0.offset) < (di[$1.element.defense] ?? 0, $1.offset) }.map(\.element)
        return r
    }

    /// Joins the results of shards of one evaluation (same settings) into the results of the whole.
    public static func merge(_ parts: [EvaluationResults]) throws -> EvaluationResults {
        guard let first = parts.first else { throw AdvKitError.invalidArgument("merge needs at least one shard's results") }
        for p in parts.dropFirst() where p.settings != first.settings {
            throw AdvKitError.invalidData("the shards were run with different settings: cannot merge them")
        }
        var seen = Set<String>()
        var r = EvaluationResults(settings: first.settings)
        for p in parts {
            let names = Set(p.models.map(\.name))
            let twice = names.intersection(seen)
            guard twice.isEmpty else { throw AdvKitError.invalidData("defense \(twice.sorted().joined(separator: ", ")) appears in two shards") }
            seen.formUnion(names)
            r.models += p.models
            r.cleanAccuracy.merge(p.cleanAccuracy) { a, _ in a }
            r.whiteBox += p.whiteBox
            r.blackBox += p.blackBox
            r.curves += p.curves
            r.perturbationNeeded += p.perturbationNeeded
            r.worstCase.merge(p.worstCase) { a, _ in a }
            r.sanity += p.sanity
            r.galleries += p.galleries
        }
        let missing = first.settings.defenses.filter { !seen.contains($0) }
        guard missing.isEmpty else { throw AdvKitError.invalidData("no shard covered \(missing.joined(separator: ", ")): merge every shard") }
        return r.canonical()
    }
}

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
    public private(set) var timings: [String: Double] = [:]
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
    private var robustFlags: [String: [Bool]] = [:]
    private var galleries: [String: Gallery] = [:]
    private var undefended: Model!
    /// Each cached model's file, relative to the output folder.
    private var modelFiles: [ObjectIdentifier: String] = [:]
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

    // MARK: models

    /// The defender's and the attacker's halves of the training set, each limited to `trainImages`.
    func half(_ attacker: Bool) -> Dataset {
        let mid = train.count / 2
        let range = attacker ? mid..<train.count : 0..<mid
        let n = min(settings.trainImages, range.count)
        return train.subset(Array(range.prefix(n)))
    }

    /// A stable key of the settings a model depends on: a cached file is reused only when they all match.
    static func key(_ parts: [String]) -> String {
        var h = EvaluationJournal.Hash()
        for b in parts.joined(separator: "|").utf8 { h.add(b) }
        return String(h.value, radix: 16)
    }

    func trainedModel(_ name: String, architecture: Architecture, activation: Activation = .relu, defense: TrainingDefense? = nil,
                      labelSmoothing: Float = 0, gda: Bool = false, attacker: Bool = false, seed: UInt64) throws -> Model {
        let data = half(attacker)
        let parts = [name, settings.dataset, architecture.rawValue, "\(activation)", defense.map { "\($0)" } ?? "-",
                     "\(labelSmoothing)", "\(gda)", "\(attacker)", "\(seed)", "\(data.count)", "\(settings.epochs)", "v2-torch-init"]
        let dir = outputDirectory + "/models"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let relative = "models/\(name.replacingOccurrences(of: "+", with: "-"))-\(Evaluator.key(parts)).safetensors"
        let file = outputDirectory + "/" + relative
        let model = Model(architecture, inputShape: imageShape, classes: test.classCount, activation: activation, seed: seed)
        modelFiles[ObjectIdentifier(model)] = relative
        if FileManager.default.fileExists(atPath: file) {
            try model.load(from: file)
            log("reusing cached model \(name) (\(file))")
            return model
        }
        let started = Date()
        var trainData = data
        if gda { trainData = try data.gaussianAugmented(sigma: 0.3, copies: settings.quick ? 2 : 10, seed: seed) }
        var config = TrainingConfiguration()
        config.epochs = settings.epochs
        config.seed = seed
        config.labelSmoothing = labelSmoothing
        config.progress = progressStyle == .silent ? .silent : progressStyle
        let trainer = Trainer(model: model, configuration: config)
        if let defense { trainer.batchLoss = defense.batchLoss(seed: seed, labelSmoothing: labelSmoothing) }
        try trainer.fit(trainData)
        try model.save(to: file, metadata: ["name": name, "key": parts.joined(separator: "|"), "advkit": AdvKitVersion.string])
        timings["train \(name)"] = Date().timeIntervalSince(started)
        log(String(format: "trained model %@ in %.1fs (%@)", name, Date().timeIntervalSince(started), file))
        return model
    }

    /// The classifier of each defense, and its detector when it has one.
    struct Defended {
        var name: String
        var model: Model
        var classifier: Classifier
        /// The form of a gradient attack on `classifier` (see `Cell.form`), and whether it is adaptive.
        var form: String
        var adaptive = true
        var detector: DetectorNetwork?
        var squeezing: SqueezingDetector?
    }

    /// How attack `a` runs against `d` (what `attack(_:eps:against:)` builds), for the table and the JSON.
    /// Only PGD has a detector-aware form; the other attacks ignore a detector network.
    func form(_ a: String, against d: Defended) -> (form: String, adaptive: Bool) {
        if d.detector != nil { return a == "pgd" ? (d.form, true) : ("white-box (not adaptive)", false) }
        return (d.form, d.adaptive)
    }

    func defended(_ name: String) throws -> Defended {
        let seed = settings.seed
        let arch = baseArchitecture
        switch name {
        case "none": return Defended(name: name, model: undefended, classifier: undefended, form: "white-box")
        case "gda": let m = try trainedModel(name, architecture: arch, gda: true, seed: seed); return Defended(name: name, model: m, classifier: m, form: "white-box")
        case "brelu":
            let m = try trainedModel(name, architecture: arch, activation: .boundedReLU(1), seed: seed)
            return Defended(name: name, model: m, classifier: m, form: "white-box")
        case "gda+brelu":
            let m = try trainedModel(name, architecture: arch, activation: .boundedReLU(1), gda: true, seed: seed)
            return Defended(name: name, model: m, classifier: m, form: "white-box")
        case "fgsm-at":
            let m = try trainedModel(name, architecture: arch, defense: .fgsm(epsilon: settings.epsilon), seed: seed)
            return Defended(name: name, model: m, classifier: m, form: "white-box")
        case "pgd-at":
            let m = try trainedModel(name, architecture: arch, defense: .pgd(epsilon: settings.epsilon, steps: 7, alpha: settings.epsilon / 4), seed: seed)
            return Defended(name: name, model: m, classifier: m, form: "white-box")
        case "vat":
            let m = try trainedModel(name, architecture: arch, defense: .vat(xi: 1e-6, epsilon: 2, iterations: 1, weight: 1), seed: seed)
            return Defended(name: name, model: m, classifier: m, form: "white-box")
        case "label-smoothing":
            let m = try trainedModel(name, architecture: arch, labelSmoothing: 0.1, seed: seed)
            return Defended(name: name, model: m, classifier: m, form: "white-box")
        case "feature-squeezing":
            let sq: [Squeezer] = [.bitDepth(3), .median(2)]
            let det = try SqueezingDetector(model: undefended, squeezers: sq, cleanImages: half(false).prefix(1000).images)
            // BPDA reaches through the squeeze to the model, but no attack here has the squeezing detector's score
            // in its loss, while its flags count as robust: the cells are upper bounds.
            return Defended(name: name, model: undefended, classifier: SqueezedClassifier(undefended, squeezers: sq),
                            form: "BPDA, squeezing detector not in the loss", adaptive: false, squeezing: det)
        case "noise":
            return Defended(name: name, model: undefended, classifier: NoisyClassifier(undefended, sigma: 0.1, draws: 4, seed: seed),
                            form: "adaptive: EOT (4 draws)")
        case "detector":
            var det = try detectorNetwork()
            let defender = half(false)
            let calibration = defender.subset(Array(max(0, defender.count - 1000)..<defender.count))
            try det.calibrate(cleanImages: calibration.images, falsePositiveRate: 0.05)
            return Defended(name: name, model: undefended, classifier: undefended, form: "adaptive: detector-aware PGD", detector: det)
        default:
            throw AdvKitError.invalidArgument("unknown defense '\(name)'")
        }
    }

    /// The detector network of the `detector` defense, trained on PGD examples of the undefended model, cached in
    /// models/ like the classifiers (its key names the undefended model's file, so it follows that model).
    func detectorNetwork() throws -> DetectorNetwork {
        let data = half(false).prefix(settings.quick ? 2000 : 5000)
        let attack = pgd(settings.epsilon)
        let parts = ["detector", settings.dataset, modelFiles[ObjectIdentifier(undefended)] ?? "-",
                     "pgd \(attack.epsilon) \(attack.alpha) \(attack.steps)", "\(data.count)", "\(settings.epochs)", "\(settings.seed)"]
        let relative = "models/detector-\(Evaluator.key(parts)).safetensors"
        let file = outputDirectory + "/" + relative
        if FileManager.default.fileExists(atPath: file) {
            let network = Model(.cnn, inputShape: imageShape, classes: 2, seed: settings.seed)
            try network.load(from: file)
            modelFiles[ObjectIdentifier(network)] = relative
            log("reusing cached model detector network (\(file))")
            return DetectorNetwork(network: network)
        }
        let started = Date()
        var config = TrainingConfiguration()
        config.epochs = settings.epochs
        config.seed = settings.seed
        config.progress = .silent
        let det = try DetectorNetwork.train(protecting: undefended, attack: attack, images: data.images, labels: data.labels,
                                            configuration: config, seed: settings.seed)
        try det.network.save(to: file, metadata: ["name": "detector network", "key": parts.joined(separator: "|"),
                                                  "advkit": AdvKitVersion.string])
        modelFiles[ObjectIdentifier(det.network)] = relative
        timings["train detector network"] = Date().timeIntervalSince(started)
        log(String(format: "trained model detector network in %.1fs (%@)", Date().timeIntervalSince(started), file))
        return det
    }

    /// `file` (relative to the output folder) and its SHA-256, for results.json.
    func fingerprint(_ model: AnyObject) throws -> (file: String, sha256: String) {
        guard let file = modelFiles[ObjectIdentifier(model)] else { return ("", "") }
        return (file, try SHA256.hex(ofFile: outputDirectory + "/" + file))
    }

    func pgd(_ eps: Float, steps: Int? = nil) -> PGD {
        let s = steps ?? settings.pgdSteps
        return PGD(epsilon: eps, alpha: max(eps, 1e-6) * 2.5 / Float(s), steps: s)
    }

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

    /// One white-box cell, with what the report needs of it besides the table.
    struct WhiteBoxUnit: Codable {
        var cell: EvaluationResults.Cell
        var flags: [Bool]
        var deepfoolLinf: Double?
        var gallery: Gallery?
    }

    /// Images of an attack on the undefended model, for the report's pictures: successful attacks first, then
    /// failed ones, then images the model already got wrong (`EvaluationResults.Gallery`).
    struct Gallery: Codable {
        static let size = 6
        var indices: [Int]
        var outcomes: [String]
        var clean: Tensor.Record
        var adversarial: Tensor.Record
        var labels: [Int32]
        var cleanPred: [Int]
        var advPred: [Int]
        var advConf: [Float]

        /// The rows to show of an attack's outcomes: up to `size`, fooled images first (each group in test order).
        static func pick(_ outcomes: [AttackOutcome]) -> (indices: [Int], outcomes: [String]) {
            func kind(_ o: AttackOutcome) -> String {
                o.cleanPrediction != o.label ? "already wrong" : (o.success ? "fooled" : "failed")
            }
            let order = ["fooled", "failed", "already wrong"]
            let rows = outcomes.indices.map { ($0, kind(outcomes[$0])) }
                .sorted { (order.firstIndex(of: $0.1)!, $0.0) < (order.firstIndex(of: $1.1)!, $1.0) }.prefix(size)
            return (rows.map(\.0), rows.map(\.1))
        }
    }

    func whiteBoxCell(_ a: String, against d: Defended) throws -> WhiteBoxUnit {
        let r = try attack(a, eps: settings.epsilon, against: d).run(d.classifier, images: test.images, labels: test.labels,
                                                                     seed: settings.seed)
        let flags = robust(d, adversarial: r.adversarial)
        let f = form(a, against: d)
        var unit = WhiteBoxUnit(cell: .init(defense: d.name, attack: a, form: f.form, adaptive: f.adaptive, robustAccuracy: share(flags),
                                            medianL2: r.medianL2, medianLinf: r.medianLinf), flags: flags)
        if a == "deepfool" {
            unit.deepfoolLinf = try DeepFool(steps: 50, norm: .linf).run(d.classifier, images: test.images, labels: test.labels).medianLinf
        }
        if d.name == "none" {
            let (shown, kinds) = Gallery.pick(r.outcomes)
            unit.gallery = Gallery(indices: shown, outcomes: kinds, clean: test.images.gather(shown).record,
                                   adversarial: r.adversarial.gather(shown).record, labels: shown.map { test.labels[$0] },
                                   cleanPred: shown.map { r.outcomes[$0].cleanPrediction },
                                   advPred: shown.map { r.outcomes[$0].adversarialPrediction },
                                   advConf: shown.map { r.outcomes[$0].adversarialConfidence })
        }
        return unit
    }

    /// Per image: the defense's classifier is right on the clean image.
    func robustClean(_ d: Defended) -> [Bool] {
        let pred = d.classifier.logits(of: test.images).argmaxRows()
        return (0..<test.count).map { pred[$0] == Int(test.labels[$0]) }
    }

    /// Warnings about gradient masking and about attacks that do not see the whole defense, per defense
    /// (Carlini et al. 2019, "On evaluating adversarial robustness", §5). Each check compares like with like: the
    /// same attack form at more steps, and the loss that attack maximises on the classifier (and detector) it attacked.
    func sanityChecks(_ d: Defended, results: EvaluationResults) throws -> [EvaluationResults.Check] {
        var checks: [EvaluationResults.Check] = []
        if let curve = results.curves.first(where: { $0.defense == d.name && $0.attack == "pgd" }), let last = curve.robustAccuracy.last {
            checks.append(.init(defense: d.name, check: "robust accuracy falls near 0 at a large epsilon", passed: last <= 0.1,
                                detail: String(format: "PGD (%@) at eps %g leaves %.1f%%", curve.form, curve.epsilons.last!, last * 100)))
        }
        for curve in results.curves where curve.defense == d.name { checks.append(curve.riseCheck()) }
        if settings.attacks.contains("pgd") {
            let form = self.form("pgd", against: d).form
            let steps = settings.pgdSteps
            let few = try attack("pgd", eps: settings.epsilon, against: d, steps: steps)
                .generate(d.classifier, images: test.images, labels: test.labels, seed: settings.seed)
            let many = try attack("pgd", eps: settings.epsilon, against: d, steps: 2 * steps)
                .generate(d.classifier, images: test.images, labels: test.labels, seed: settings.seed)
            let a1 = share(robust(d, adversarial: few)), a2 = share(robust(d, adversarial: many))
            checks.append(.init(defense: d.name, check: "more PGD steps do not raise accuracy", passed: a2 <= a1 + 0.01,
                                detail: String(format: "PGD (%@): %d steps %.1f%%, %d steps %.1f%%", form, steps, a1 * 100, 2 * steps, a2 * 100)))
            let (l0, l1) = (attackLoss(d, test.images), attackLoss(d, few))
            checks.append(.init(defense: d.name, check: "the loss rises along the attack", passed: l1 > l0,
                                detail: String(format: "mean %@: %.3f clean, %.3f after PGD (%@, %d steps)", attackLossName(d), l0, l1, form, steps)))
        }
        return checks
    }

    /// The loss the PGD of `form("pgd", against: d)` maximises, averaged over the test images: the cross-entropy of
    /// the classifier attacked (squeezed, noisy, or the model), minus λ·CE(detector, clean) when there is a detector.
    func attackLoss(_ d: Defended, _ x: Tensor) -> Double {
        let tape = Tape(mode: .inference)
        let v = tape.input(x)
        var loss = Double(tape.crossEntropy(d.classifier(v), labels: test.labels).mean().value.scalar)
        if let det = d.detector {
            let clean = [Int32](repeating: 0, count: test.count)
            loss -= Double(Evaluator.detectorLambda) * Double(tape.crossEntropy(det.network(v), labels: clean).mean().value.scalar)
        }
        return loss
    }

    func attackLossName(_ d: Defended) -> String {
        let model = d.classifier is SqueezedClassifier ? "the squeezed model" : d.classifier is NoisyClassifier ? "the noisy model" : "the model"
        if d.detector != nil { return "CE(\(model)) - " + String(format: "%g", Evaluator.detectorLambda) + "·CE(detector, clean)" }
        return "cross-entropy of \(model)"
    }

    /// Pictures for the report: a gallery per attack on the undefended model and saliency maps.
    func gallery(_ attack: String) -> (png: PNG.Image, rows: [(label: Int, clean: Int, adv: Int, conf: Float, outcome: String)])? {
        guard let g = galleries[attack] else { return nil }
        let clean = Tensor(g.clean), adversarial = Tensor(g.adversarial)
        let n = min(Gallery.size, g.labels.count), (h, w) = (imageShape[1], imageShape[2]), scale = 3, pad = 6
        var img = PNG.Image(width: 3 * (w * scale + pad) + pad, height: n * (h * scale + pad) + pad)
        var rows: [(Int, Int, Int, Float, String)] = []
        for i in 0..<n {
            let y = pad + i * (h * scale + pad)
            img.paste(PNG.image(clean, index: i), at: pad, y, scale: scale)
            let delta = adversarial.batch(i..<(i + 1)) - clean.batch(i..<(i + 1))
            let m = max(delta.maxAbs(), 1e-6)
            img.paste(PNG.image(delta.map { 0.5 + $0 / (2 * m) }, index: 0), at: pad + (w * scale + pad), y, scale: scale)
            img.paste(PNG.image(adversarial, index: i), at: pad + 2 * (w * scale + pad), y, scale: scale)
            rows.append((Int(g.labels[i]), g.cleanPred[i], g.advPred[i], g.advConf[i], g.outcomes[i]))
        }
        return (img, rows)
    }

    func saliencyPicture() -> PNG.Image {
        let n = min(6, test.count), (h, w) = (imageShape[1], imageShape[2]), scale = 3, pad = 6
        let images = test.images.batch(0..<n)
        let maps = Saliency.gradient(undefended, images: images, classes: test.labels.prefix(n).map(Int.init))
        var img = PNG.Image(width: 2 * (w * scale + pad) + pad, height: n * (h * scale + pad) + pad)
        for i in 0..<n {
            let y = pad + i * (h * scale + pad)
            img.paste(PNG.image(images, index: i), at: pad, y, scale: scale)
            let m = maps.batch(i..<(i + 1))
            let top = max(m.max(), 1e-12)
            img.paste(PNG.image(m.map { $0 / top }, index: 0), at: pad + w * scale + pad, y, scale: scale)
        }
        return img
    }
}
