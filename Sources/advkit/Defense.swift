import AdvKit
import ArgumentParser
import Foundation

enum InferenceDefenseName: String, ExpressibleByArgument, CaseIterable {
    case none, featureSqueezing = "feature-squeezing", noise, smoothing, detector
}

/// `advkit attack --defense ...`: the options of the inference-time defenses, and the evaluation of each.
struct DefenseOptions: ParsableArguments {
    @Option(help: "Inference-time defense: \(InferenceDefenseName.allCases.map(\.rawValue).joined(separator: ", ")).")
    var defense: InferenceDefenseName = .none
    @Flag(help: "Attack the bare model and only then show the images to the defense (transfer). Default: the adaptive attack (BPDA through squeezing, EOT over noise, the detector-aware loss).")
    var oblivious = false
    @Option(help: "Feature squeezing: the squeezers, comma-separated (bit-depth-B, median-K).") var squeezers = "bit-depth-3,median-2"
    @Option(help: "Detectors: the false-positive rate on clean images that sets the threshold.") var fpr: Double = 0.05
    @Option(help: "Detectors: clean training images that set the threshold (and train the detector network).") var calibrationImages = 2000
    @Option(help: "Noise / smoothing: standard deviation of the Gaussian noise.") var noiseSigma: Float = 0.1
    @Option(help: "Noise: draws averaged per prediction (and per gradient: EOT).") var noiseDraws = 8
    @Option(help: "Smoothing: samples that estimate the top class's probability.") var smoothingSamples = 1000
    @Option(help: "Smoothing: samples that choose the top class.") var smoothingSelection = 100
    @Option(help: "Smoothing: 1 - confidence of the certificate.") var smoothingAlpha: Double = 0.001
    @Option(help: "Detector: a detector network (.safetensors, cnn with 2 classes); trained and saved there if missing.") var detectorModel: String?
    @Option(help: "Detector: epochs when training the detector network.") var detectorEpochs = 2
    @Option(help: "Detector-aware attack: weight of the detector's loss.") var detectorLambda: Float = 1

    func validate() throws {
        if !(fpr > 0 && fpr < 1) { throw ValidationError("--fpr must be in (0, 1), got \(fpr)") }
        if calibrationImages < 10 { throw ValidationError("--calibration-images must be >= 10, got \(calibrationImages)") }
        if !(noiseSigma.isFinite && noiseSigma > 0) { throw ValidationError("--noise-sigma must be > 0, got \(noiseSigma)") }
        if noiseDraws < 1 { throw ValidationError("--noise-draws must be >= 1, got \(noiseDraws)") }
        if smoothingSamples < 1 || smoothingSelection < 1 { throw ValidationError("--smoothing-samples and --smoothing-selection must be >= 1") }
        if !(smoothingAlpha > 0 && smoothingAlpha < 1) { throw ValidationError("--smoothing-alpha must be in (0, 1), got \(smoothingAlpha)") }
        if detectorEpochs < 1 { throw ValidationError("--detector-epochs must be >= 1, got \(detectorEpochs)") }
        _ = try parsedSqueezers()
    }

    func parsedSqueezers() throws -> [Squeezer] {
        try squeezers.split(separator: ",").map { part -> Squeezer in
            let s = part.trimmingCharacters(in: .whitespaces)
            if s.hasPrefix("bit-depth-"), let b = Int(s.dropFirst("bit-depth-".count)) {
                let q = Squeezer.bitDepth(b); try q.validate(); return q
            }
            if s.hasPrefix("median-"), let k = Int(s.dropFirst("median-".count)) {
                let q = Squeezer.median(k); try q.validate(); return q
            }
            throw ValidationError("unknown squeezer '\(s)' in --squeezers (want bit-depth-B or median-K)")
        }
    }

    /// The classifier the attack runs against.
    func target(_ model: Model, seed: UInt64) throws -> Classifier {
        if oblivious { return model }
        switch defense {
        case .none, .detector: return model
        case .featureSqueezing: return SqueezedClassifier(model, squeezers: try parsedSqueezers())
        case .noise, .smoothing: return NoisyClassifier(model, sigma: noiseSigma, draws: noiseDraws, seed: seed)
        }
    }

    /// Loads or trains the detector network.
    func detectorNetwork(for model: Model, attack: Attack, train: Dataset, seed: UInt64, quiet: Bool) throws -> DetectorNetwork {
        if let path = detectorModel, FileManager.default.fileExists(atPath: path) {
            let net = Model(.cnn, inputShape: model.inputShape, classes: 2)
            try net.load(from: path)
            return DetectorNetwork(network: net)
        }
        var config = TrainingConfiguration()
        config.epochs = detectorEpochs
        config.seed = seed
        config.progress = quiet ? .silent : .automatic
        let data = train.prefix(calibrationImages)
        let det = try DetectorNetwork.train(protecting: model, attack: attack, images: data.images, labels: data.labels,
                                            configuration: config, seed: seed)
        if let path = detectorModel { try det.network.save(to: path, metadata: ["role": "detector", "attack": attack.name]) }
        return det
    }

    /// Measures the defense on the clean and adversarial test images; prints a summary and returns the JSON fields.
    func evaluate(model: Model, test: Dataset, adversarial: Tensor, attack: Attack, train: () throws -> Dataset,
                  seed: UInt64, quiet: Bool) throws -> [String: Any] {
        func pct(_ x: Double) -> String { String(format: "%.2f%%", x * 100) }
        func accuracy(_ predictions: [Int?]) -> Double {
            Double(zip(predictions, test.labels).filter { $0 == Int($1) }.count) / Double(max(test.count, 1))
        }
        var out: [String: Any] = ["defense": defense.rawValue, "adaptive": !oblivious]
        switch defense {
        case .none:
            break
        case .featureSqueezing:
            let sq = try parsedSqueezers()
            let squeezed = SqueezedClassifier(model, squeezers: sq)
            let calibration = try train().prefix(calibrationImages)
            let det = try SqueezingDetector(model: model, squeezers: sq, cleanImages: calibration.images, falsePositiveRate: fpr)
            let cleanScores = det.scores(test.images), advScores = det.scores(adversarial)
            let flagged = advScores.map { $0 > det.threshold }
            let advPred = squeezed.logits(of: adversarial).argmaxRows()
            // Robust: classified right by the squeezed model, or flagged by the detector.
            let robust = (0..<test.count).filter { advPred[$0] == Int(test.labels[$0]) || flagged[$0] }.count
            out["squeezers"] = sq.map(\.description)
            out["threshold"] = det.threshold
            out["squeezed_clean_accuracy"] = accuracy(squeezed.logits(of: test.images).argmaxRows())
            out["squeezed_robust_accuracy"] = accuracy(advPred)
            out["detection_rate"] = Double(flagged.filter { $0 }.count) / Double(max(test.count, 1))
            out["false_positive_rate"] = Double(cleanScores.filter { $0 > det.threshold }.count) / Double(max(test.count, 1))
            out["roc_auc"] = rocAUC(negatives: cleanScores, positives: advScores)
            out["robust_or_detected"] = Double(robust) / Double(max(test.count, 1))
        case .noise:
            let noisy = NoisyClassifier(model, sigma: noiseSigma, draws: noiseDraws, seed: seed &+ 1)
            out["noise_sigma"] = noiseSigma
            out["draws"] = noiseDraws
            out["noisy_clean_accuracy"] = accuracy(noisy.logits(of: test.images).argmaxRows())
            out["noisy_robust_accuracy"] = accuracy(noisy.logits(of: adversarial).argmaxRows())
        case .smoothing:
            let smoothing = RandomizedSmoothing(model, sigma: noiseSigma)
            let clean = try smoothing.certify(test.images, selection: smoothingSelection, estimation: smoothingSamples,
                                              alpha: smoothingAlpha, seed: seed)
            let adv = try smoothing.certify(adversarial, selection: smoothingSelection, estimation: smoothingSamples,
                                            alpha: smoothingAlpha, seed: seed &+ 1)
            let radii = zip(clean, test.labels).filter { $0.0.prediction == Int($0.1) }.map(\.0.radius).sorted()
            out["noise_sigma"] = noiseSigma
            out["smoothed_clean_accuracy"] = accuracy(clean.map(\.prediction))
            out["smoothed_robust_accuracy"] = accuracy(adv.map(\.prediction))
            out["abstain_rate_clean"] = Double(clean.filter { $0.prediction == nil }.count) / Double(max(test.count, 1))
            out["median_certified_radius_correct"] = radii.isEmpty ? 0 : radii[radii.count / 2]
            out["certified_radii"] = clean.map(\.radius)
        case .detector:
            var det = try detectorNetwork(for: model, attack: attack, train: try train(), seed: seed, quiet: quiet)
            try det.calibrate(cleanImages: try train().prefix(calibrationImages).images, falsePositiveRate: fpr)
            let rates = det.rates(clean: test.images, adversarial: adversarial)
            let flagged = det.detect(adversarial), advPred = model.logits(of: adversarial).argmaxRows()
            let robust = (0..<test.count).filter { advPred[$0] == Int(test.labels[$0]) || flagged[$0] }.count
            out["threshold"] = det.threshold
            out["detection_rate"] = rates.detection
            out["false_positive_rate"] = rates.falsePositive
            out["roc_auc"] = rocAUC(negatives: det.scores(test.images), positives: det.scores(adversarial))
            out["robust_or_detected"] = Double(robust) / Double(max(test.count, 1))
        }
        if defense != .none {
            let keys = out.keys.filter { !["certified_radii", "squeezers", "defense", "adaptive"].contains($0) }.sorted()
            let parts = keys.map { k -> String in
                if let d = out[k] as? Double { return "\(k) \(k.contains("rate") || k.contains("accuracy") || k.contains("robust") ? pct(d) : String(format: "%.4g", d))" }
                return "\(k) \(out[k]!)"
            }
            print("defense \(defense.rawValue) (\(oblivious ? "oblivious attack" : "adaptive attack")): " + parts.joined(separator: ", "))
        }
        return out
    }
}
