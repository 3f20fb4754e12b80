import Foundation

// The models and defenses an evaluation measures: trained or reused, cached in models/.
extension Evaluator {
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

}
