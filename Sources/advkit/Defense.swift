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
    @Option(help: "Feature squeezing: the squeezers, comma-separated (bit-depth-B, median-K). (default: bit-depth-3,median-2)") var squeezers: String?
    @Option(help: "Feature squeezing, detector: the false-positive rate on clean images that sets the threshold. (default: \(DefenseSpec.defaultFalsePositiveRate))") var fpr: Double?
    @Option(help: "Feature squeezing, detector: clean training images that set the threshold (and train the detector network). (default: \(DefenseSpec.defaultCalibrationImages))") var calibrationImages: Int?
    @Option(help: "Noise, smoothing: standard deviation of the Gaussian noise. (default: \(DefenseSpec.defaultNoiseSigma))") var noiseSigma: Float?
    @Option(help: "Noise: draws averaged per prediction (and per gradient: EOT). (default: \(DefenseSpec.defaultNoiseDraws))") var noiseDraws: Int?
    @Option(help: "Smoothing: samples that estimate the top class's probability. (default: 1000)") var smoothingSamples: Int?
    @Option(help: "Smoothing: samples that choose the top class. (default: 100)") var smoothingSelection: Int?
    @Option(help: "Smoothing: 1 - confidence of the certificate. (default: 0.001)") var smoothingAlpha: Double?
    @Option(help: "Detector: a detector network (.safetensors, cnn with 2 classes); trained and saved there if missing.") var detectorModel: String?
    @Option(help: "Detector: epochs when training the detector network. (default: 2)") var detectorEpochs: Int?
    @Option(help: "Detector: weight of the detector's loss in the detector-aware attack. (default: \(DefenseSpec.defaultDetectorLambda))") var detectorLambda: Float?

    // The effective values: what was given, else the default.
    var squeezersValue: String { squeezers ?? "bit-depth-3,median-2" }
    var fprValue: Double { fpr ?? DefenseSpec.defaultFalsePositiveRate }
    var calibrationImagesValue: Int { calibrationImages ?? DefenseSpec.defaultCalibrationImages }
    var noiseSigmaValue: Float { noiseSigma ?? DefenseSpec.defaultNoiseSigma }
    var noiseDrawsValue: Int { noiseDraws ?? DefenseSpec.defaultNoiseDraws }
    var smoothingSamplesValue: Int { smoothingSamples ?? 1000 }
    var smoothingSelectionValue: Int { smoothingSelection ?? 100 }
    var smoothingAlphaValue: Double { smoothingAlpha ?? 0.001 }
    var detectorEpochsValue: Int { detectorEpochs ?? 2 }
    var detectorLambdaValue: Float { detectorLambda ?? DefenseSpec.defaultDetectorLambda }

    /// Which defenses take each option: an option given for another defense is an error, never ignored.
    private var givenOptions: [(flag: String, given: Bool, takenBy: [InferenceDefenseName])] {
        [("--squeezers", squeezers != nil, [.featureSqueezing]),
         ("--fpr", fpr != nil, [.featureSqueezing, .detector]),
         ("--calibration-images", calibrationImages != nil, [.featureSqueezing, .detector]),
         ("--noise-sigma", noiseSigma != nil, [.noise, .smoothing]),
         ("--noise-draws", noiseDraws != nil, [.noise]),
         ("--smoothing-samples", smoothingSamples != nil, [.smoothing]),
         ("--smoothing-selection", smoothingSelection != nil, [.smoothing]),
         ("--smoothing-alpha", smoothingAlpha != nil, [.smoothing]),
         ("--detector-model", detectorModel != nil, [.detector]),
         ("--detector-epochs", detectorEpochs != nil, [.detector]),
         ("--detector-lambda", detectorLambda != nil, [.detector]),
         ("--oblivious", oblivious, [.featureSqueezing, .noise, .smoothing, .detector])]
    }

    /// The defense's effective settings, as recorded in JSON.
    var settings: [String: Any] {
        var s: [String: Any] = ["defense": defense.rawValue]
        guard defense != .none else { return s }
        s["adaptive"] = !oblivious
        switch defense {
        case .none: break
        case .featureSqueezing:
            s["squeezers"] = squeezersValue; s["fpr"] = fprValue; s["calibration_images"] = calibrationImagesValue
        case .noise: s["noise_sigma"] = noiseSigmaValue; s["noise_draws"] = noiseDrawsValue
        case .smoothing:
            s["noise_sigma"] = noiseSigmaValue; s["smoothing_samples"] = smoothingSamplesValue
            s["smoothing_selection"] = smoothingSelectionValue; s["smoothing_alpha"] = smoothingAlphaValue
        case .detector:
            s["fpr"] = fprValue; s["calibration_images"] = calibrationImagesValue; s["detector_epochs"] = detectorEpochsValue
            s["detector_lambda"] = detectorLambdaValue
            if let detectorModel { s["detector_model"] = detectorModel }
        }
        return s
    }

    func validate() throws {
        for o in givenOptions where o.given && !o.takenBy.contains(defense) {
            throw ValidationError("\(o.flag) does not apply to --defense \(defense.rawValue); it is taken by --defense \(o.takenBy.map(\.rawValue).joined(separator: ", "))")
        }
        if !(fprValue > 0 && fprValue < 1) { throw ValidationError("--fpr must be in (0, 1), got \(fprValue)") }
        if calibrationImagesValue < 10 { throw ValidationError("--calibration-images must be >= 10, got \(calibrationImagesValue)") }
        if !(noiseSigmaValue.isFinite && noiseSigmaValue > 0) { throw ValidationError("--noise-sigma must be > 0, got \(noiseSigmaValue)") }
        if noiseDrawsValue < 1 { throw ValidationError("--noise-draws must be >= 1, got \(noiseDrawsValue)") }
        if smoothingSamplesValue < 1 || smoothingSelectionValue < 1 { throw ValidationError("--smoothing-samples and --smoothing-selection must be >= 1") }
        if !(smoothingAlphaValue > 0 && smoothingAlphaValue < 1) { throw ValidationError("--smoothing-alpha must be in (0, 1), got \(smoothingAlphaValue)") }
        if detectorEpochsValue < 1 { throw ValidationError("--detector-epochs must be >= 1, got \(detectorEpochsValue)") }
        if !(detectorLambdaValue.isFinite && detectorLambdaValue >= 0) { throw ValidationError("--detector-lambda must be >= 0, got \(detectorLambdaValue)") }
        _ = try parsedSqueezers()
    }

    func parsedSqueezers() throws -> [Squeezer] {
        try squeezersValue.split(separator: ",").map { part -> Squeezer in
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
    func target(_ model: Classifier, seed: UInt64) throws -> Classifier {
        if oblivious { return model }
        switch defense {
        case .none, .detector: return model
        case .featureSqueezing:
            return DefenseSpec.featureSqueezing(squeezers: try parsedSqueezers(), falsePositiveRate: fprValue,
                                                calibrationImages: calibrationImagesValue).wrapping(model, seed: seed)
        // Randomized smoothing's attack meets the noisy model (EOT), as the noise defense's does.
        case .noise, .smoothing: return DefenseSpec.noise(sigma: noiseSigmaValue, draws: noiseDrawsValue).wrapping(model, seed: seed)
        }
    }

    /// Loads or trains the detector network.
    func detectorNetwork(for model: Classifier, attack: Attack, train: Dataset, seed: UInt64, quiet: Bool) throws -> DetectorNetwork {
        if let path = detectorModel, FileManager.default.fileExists(atPath: path) {
            let net = Model(.cnn, inputShape: model.inputShape, classes: 2)
            try net.load(from: path)
            return DetectorNetwork(network: net)
        }
        var config = TrainingConfiguration()
        config.epochs = detectorEpochsValue
        config.seed = seed
        config.progress = quiet ? .silent : .automatic
        let data = train.prefix(calibrationImagesValue)
        let det = try DetectorNetwork.train(protecting: model, attack: attack, images: data.images, labels: data.labels,
                                            configuration: config, seed: seed)
        if let path = detectorModel { try det.network.save(to: path, metadata: ["role": "detector", "attack": attack.name]) }
        return det
    }

    /// Measures the defense on the clean and adversarial test images; prints a summary and returns the JSON fields.
    func evaluate(model: Classifier, test: Dataset, adversarial: Tensor, attack: Attack, train: () throws -> Dataset,
                  seed: UInt64, quiet: Bool) throws -> [String: Any] {
        func pct(_ x: Double) -> String { String(format: "%.2f%%", x * 100) }
        func accuracy(_ predictions: [Int?]) -> Double {
            Double(zip(predictions, test.labels).filter { $0 == Int($1) }.count) / Double(max(test.count, 1))
        }
        var out: [String: Any] = ["defense": defense.rawValue]
        if defense != .none { out["adaptive"] = !oblivious }
        switch defense {
        case .none:
            break
        case .featureSqueezing:
            let sq = try parsedSqueezers()
            let squeezed = SqueezedClassifier(model, squeezers: sq)
            let calibration = try train().prefix(calibrationImagesValue)
            let det = try SqueezingDetector(model: model, squeezers: sq, cleanImages: calibration.images, falsePositiveRate: fprValue)
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
            let noisy = NoisyClassifier(model, sigma: noiseSigmaValue, draws: noiseDrawsValue, seed: seed &+ 1)
            out["noise_sigma"] = noiseSigmaValue
            out["draws"] = noiseDrawsValue
            out["noisy_clean_accuracy"] = accuracy(noisy.logits(of: test.images).argmaxRows())
            out["noisy_robust_accuracy"] = accuracy(noisy.logits(of: adversarial).argmaxRows())
        case .smoothing:
            let smoothing = RandomizedSmoothing(model, sigma: noiseSigmaValue)
            let clean = try smoothing.certify(test.images, selection: smoothingSelectionValue, estimation: smoothingSamplesValue,
                                              alpha: smoothingAlphaValue, seed: seed)
            let adv = try smoothing.certify(adversarial, selection: smoothingSelectionValue, estimation: smoothingSamplesValue,
                                            alpha: smoothingAlphaValue, seed: seed &+ 1)
            let radii = zip(clean, test.labels).filter { $0.0.prediction == Int($0.1) }.map(\.0.radius).sorted()
            out["noise_sigma"] = noiseSigmaValue
            out["smoothed_clean_accuracy"] = accuracy(clean.map(\.prediction))
            out["smoothed_robust_accuracy"] = accuracy(adv.map(\.prediction))
            out["abstain_rate_clean"] = Double(clean.filter { $0.prediction == nil }.count) / Double(max(test.count, 1))
            out["median_certified_radius_correct"] = radii.isEmpty ? 0 : radii[radii.count / 2]
            out["certified_radii"] = clean.map(\.radius)
        case .detector:
            var det = try detectorNetwork(for: model, attack: attack, train: try train(), seed: seed, quiet: quiet)
            try det.calibrate(cleanImages: try train().prefix(calibrationImagesValue).images, falsePositiveRate: fprValue)
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
