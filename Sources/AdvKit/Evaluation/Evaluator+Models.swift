import Foundation

// The models and defenses an evaluation measures: trained (a user's model: fine-tuned) or reused, cached in models/.
extension Evaluator {
    /// The defender's and the attacker's halves of the training set, each limited to `trainImages`.
    func half(_ attacker: Bool) throws -> Dataset {
        guard let train else { throw AdvKitError.invalidArgument("this evaluation has no training images (see Evaluator.needsTraining)") }
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

    /// What a trained defense trains with: the augmentation, the activation, label smoothing, the batch loss.
    struct Recipe {
        var gda: (sigma: Float, copies: Int)?
        var activation: Activation = .relu
        var labelSmoothing: Float = 0
        var defense: TrainingDefense?

        init(_ spec: DefenseSpec) {
            switch spec {
            case let .gda(sigma, copies): gda = (sigma, copies)
            case let .boundedReLU(bound): activation = .boundedReLU(bound)
            case let .gdaBoundedReLU(sigma, copies, bound): gda = (sigma, copies); activation = .boundedReLU(bound)
            case let .labelSmoothing(a): labelSmoothing = a
            default: defense = spec.trainingDefense
            }
        }
    }

    /// The model of `spec` (`.none` is the undefended one): a built-in architecture trained from scratch on the
    /// defender's half (the attacker's when `attacker`), or the user's model fine-tuned from its own weights; cached
    /// in models/ under a key of everything it depends on, and reused when the file is there.
    func trainedModel(_ spec: DefenseSpec, architecture: Architecture, attacker: Bool = false, seed: UInt64,
                      name: String? = nil) throws -> TrainableClassifier {
        let name = name ?? spec.name
        let fineTuned = userModel != nil && !attacker
        if fineTuned, spec == .none, let user = userModel {
            // The user's model as it is: nothing to train or cache; results.json names their file.
            let model = try user.load()
            modelFiles[ObjectIdentifier(model)] = user.record.file
            return model
        }
        let recipe = Recipe(spec)
        let data = try half(attacker)
        let specJSON = String(decoding: (try? JSONEncoder.sorted.encode(spec)) ?? Data(), as: UTF8.self)
        var parts = [name, settings.dataset, specJSON, "\(attacker)", "\(seed)", "\(data.count)", "\(settings.epochs)", "v3"]
        if fineTuned, let user = userModel {
            parts += ["fine-tuned", user.record.sha256, "\(settings.learningRateValue)"]
        } else {
            parts += [architecture.rawValue, "\(settings.learningRate.map { "\($0)" } ?? "-")"]
        }
        let dir = outputDirectory + "/models"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let relative = "models/\(name.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: " ", with: "-"))-\(Evaluator.key(parts)).safetensors"
        let file = outputDirectory + "/" + relative
        let model: TrainableClassifier
        if fineTuned, let user = userModel {
            model = try user.load()
        } else {
            try Model.validate(architecture, inputShape: imageShape, classes: test.classCount)
            model = Model(architecture, inputShape: imageShape, classes: test.classCount, activation: recipe.activation, seed: seed)
        }
        modelFiles[ObjectIdentifier(model)] = relative
        if FileManager.default.fileExists(atPath: file) {
            try model.load(from: file)
            log("reusing cached model \(name) (\(file))")
            try exportHardened(model, spec: spec)
            return model
        }
        let started = Date()
        var trainData = data
        if let g = recipe.gda { trainData = try data.gaussianAugmented(sigma: g.sigma, copies: g.copies, seed: seed) }
        var config = TrainingConfiguration()
        config.epochs = settings.epochs
        config.seed = seed
        config.labelSmoothing = recipe.labelSmoothing
        config.learningRate = fineTuned ? settings.learningRateValue : (settings.learningRate ?? config.learningRate)
        config.progress = progressStyle == .silent ? .silent : progressStyle
        let trainer = Trainer(model: model, configuration: config)
        if let defense = recipe.defense { trainer.batchLoss = defense.batchLoss(seed: seed, labelSmoothing: recipe.labelSmoothing) }
        try trainer.fit(trainData)
        try model.save(to: file, metadata: ["name": name, "key": parts.joined(separator: "|"), "advkit": AdvKitVersion.string])
        timings["train \(name)"] = Date().timeIntervalSince(started)
        log(String(format: "%@ model %@ in %.1fs (%@)", fineTuned ? "fine-tuned" : "trained", name, Date().timeIntervalSince(started), file))
        try exportHardened(model, spec: spec)
        return model
    }

    /// A fine-tuned copy of the user's model, written in their format to hardened/<defense>.<ext> (ONNX: the same
    /// graph with the fine-tuned initializers).
    func exportHardened(_ model: TrainableClassifier, spec: DefenseSpec) throws {
        guard let user = userModel, spec.isTrained else { return }
        let relative = "hardened/\(spec.name.replacingOccurrences(of: "+", with: "-")).\(user.fileExtension)"
        try FileManager.default.createDirectory(atPath: outputDirectory + "/hardened", withIntermediateDirectories: true)
        try user.export(model, outputDirectory + "/" + relative)
        hardenedFiles[spec.name] = relative
    }

    /// The classifier of each defense, and its detector when it has one.
    struct Defended {
        var spec: DefenseSpec
        var name: String { spec.name }
        var model: TrainableClassifier
        var classifier: Classifier
        /// The form of a gradient attack on `classifier` (see `Cell.form`), and whether it is adaptive.
        var form: String
        var adaptive = true
        /// The defense's detector: an image it flags counts as robust (feature squeezing's, the detector network).
        var detector: (any Detector)?
        /// λ of the detector-aware attack: CE(model) − λ·(the detector's evasion loss).
        var lambda: Float = 0
        /// Randomized smoothing: the smoothed classifier that scores the cells (PREDICT with `votes` draws at
        /// `alpha`), while the attacks meet `classifier`, the noisy base.
        var smoothing: Smoothing?

        /// The detector network's weights, for results.json.
        var detectorNetwork: DetectorNetwork? { detector as? DetectorNetwork }
    }

    /// A smoothed classifier and how an evaluation scores with it.
    struct Smoothing {
        var classifier: RandomizedSmoothing
        var votes: Int
        var alpha: Double
    }

    /// How attack `a` runs against `d` (what `attack(_:eps:against:)` builds), for the table and the JSON.
    /// Only PGD has a detector-aware form; the other attacks ignore a detector network.
    func form(_ a: AttackSpec, against d: Defended) -> (form: String, adaptive: Bool) {
        var budget = ""
        // The budget is in the settings and under the report's table; the form names the version when it is not
        // the standard one.
        if case .autoattack = a, d.classifier is NoisyClassifier {
            budget = ", AutoAttack rand (APGD-CE, APGD-DLR over the defense's averaged draws)"
        }
        if d.detector?.isDifferentiable == true { return a == .pgd ? (d.form, true) : ("white-box (not adaptive)" + budget, false) }
        return (d.form + budget, d.adaptive)
    }

    /// The classifier an attack meets under `spec`, with its detector and the form of the attack on it.
    func defended(_ spec: DefenseSpec) throws -> Defended {
        let seed = settings.seed
        switch spec {
        case .none:
            return Defended(spec: spec, model: undefended, classifier: undefended, form: "white-box")
        case .gda, .boundedReLU, .gdaBoundedReLU, .fgsmAT, .pgdAT, .trades, .vat, .labelSmoothing:
            let m = try trainedModel(spec, architecture: baseArchitecture, seed: seed)
            return Defended(spec: spec, model: m, classifier: m, form: "white-box")
        case let .featureSqueezing(squeezers, fpr, n):
            let det = try calibrated(SqueezingDetector(model: undefended, squeezers: squeezers, threshold: 0), falsePositiveRate: fpr,
                                     images: try half(false).prefix(n).images)
            // BPDA reaches through the squeeze to the model, but no attack here has the squeezing detector's score
            // in its loss, while its flags count as robust: the cells are upper bounds.
            return Defended(spec: spec, model: undefended, classifier: spec.wrapping(undefended, seed: seed),
                            form: "BPDA, squeezing detector not in the loss", adaptive: false, detector: det)
        case let .noise(_, draws):
            return Defended(spec: spec, model: undefended, classifier: spec.wrapping(undefended, seed: seed),
                            form: "adaptive: EOT (\(draws) draws)")
        case let .detector(fpr, n, lambda):
            // Calibrated on the last images of the defender's half: the network trained on the first ones.
            let defender = try half(false)
            let det = try calibrated(try detectorNetwork(), falsePositiveRate: fpr,
                                     images: defender.subset(Array(max(0, defender.count - n)..<defender.count)).images)
            return Defended(spec: spec, model: undefended, classifier: undefended, form: "adaptive: detector-aware PGD",
                            detector: det, lambda: lambda)
        case let .smoothing(sigma, copies, _, _, alpha, _, votes, draws):
            // The base is the GDA model trained at the same σ (the `gda` defense's file, trained once).
            let base = try trainedModel(.gda(sigma: sigma, copies: copies), architecture: baseArchitecture, seed: seed)
            let smoothed = RandomizedSmoothing(base, sigma: sigma, bounds: .unit)
            return Defended(spec: spec, model: base, classifier: spec.wrapping(base, seed: seed),
                            form: "adaptive: EOT (\(draws) draws) on the noisy base, scored by the smoothed vote (\(votes) draws, abstain = wrong)",
                            smoothing: Smoothing(classifier: smoothed, votes: votes, alpha: alpha))
        }
    }

    /// `detector` with its threshold set to flag `falsePositiveRate` of the clean `images`: every detector of an
    /// evaluation is calibrated here.
    func calibrated(_ detector: any Detector, falsePositiveRate: Double, images: Tensor) throws -> any Detector {
        var d = detector
        try d.calibrate(cleanImages: images, falsePositiveRate: falsePositiveRate)
        return d
    }

    /// The detector network of the `detector` defense, trained on PGD examples of the undefended model, cached in
    /// models/ like the classifiers (its key names the undefended model's file, so it follows that model).
    func detectorNetwork() throws -> DetectorNetwork {
        let data = try half(false).prefix(settings.quick ? 2000 : 5000)
        let attack = pgd(settings.epsilon)
        let arch: Architecture = (try? Model.validate(.cnn, inputShape: imageShape, classes: 2)) != nil ? .cnn : .mlp
        let parts = ["detector", settings.dataset, modelFiles[ObjectIdentifier(undefended)] ?? "-", settings.model?.sha256 ?? "-",
                     arch.rawValue, "pgd \(attack.epsilon) \(attack.alpha) \(attack.steps)", "\(data.count)", "\(settings.epochs)",
                     "\(settings.seed)"]
        let relative = "models/detector-\(Evaluator.key(parts)).safetensors"
        let file = outputDirectory + "/" + relative
        if FileManager.default.fileExists(atPath: file) {
            let network = Model(arch, inputShape: imageShape, classes: 2, seed: settings.seed)
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

    /// `file` (relative to the output folder, or the user's file as given) and its SHA-256, for results.json.
    func fingerprint(_ model: AnyObject) throws -> (file: String, sha256: String) {
        guard let file = modelFiles[ObjectIdentifier(model)] else { return ("", "") }
        if let user = settings.model, file == user.file { return (file, user.sha256) }
        return (file, try SHA256.hex(ofFile: outputDirectory + "/" + file))
    }

    func pgd(_ eps: Float, steps: Int? = nil) -> PGD {
        let s = steps ?? settings.pgdSteps
        return PGD(epsilon: eps, alpha: max(eps, 1e-6) * 2.5 / Float(s), steps: s)
    }
}

extension JSONEncoder {
    /// An encoder with sorted keys: the same value always gives the same bytes (cache and resume keys).
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return e
    }
}
