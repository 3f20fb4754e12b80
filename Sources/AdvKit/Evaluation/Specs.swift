import Foundation

/// A defense an evaluation measures, with every hyper-parameter it runs with. It is what `advkit evaluate
/// --defenses` names, what results.json records under `settings`, and part of the resume key: a unit computed
/// with other parameters is never reused.
///
/// `DefenseSpec.named(_:epsilon:quick:)` is the registry: the one place the defaults live, shared by
/// `advkit evaluate` and `advkit attack --defense` (which builds its inference-time defenses with `wrapping`).
public enum DefenseSpec: Codable, Hashable, Sendable {
    /// The model as it is.
    case none
    /// Trained (a user's model: fine-tuned) on `copies` noisy copies of each image, N(0, σ²) added (Zantedeschi et
    /// al. 2017).
    case gda(sigma: Float, copies: Int)
    /// The built-in architecture with the bounded ReLU min(max(x, 0), bound) (Zantedeschi et al. 2017). Changes the
    /// architecture: not for a user's model.
    case boundedReLU(bound: Float)
    /// Both of the above.
    case gdaBoundedReLU(sigma: Float, copies: Int, bound: Float)
    /// Adversarial training with FGSM examples (`TrainingDefense.fgsm`).
    case fgsmAT(epsilon: Float, ratio: Float)
    /// Adversarial training with PGD examples (`TrainingDefense.pgd`).
    case pgdAT(epsilon: Float, steps: Int, alpha: Float, ratio: Float)
    /// TRADES (`TrainingDefense.trades`).
    case trades(epsilon: Float, steps: Int, alpha: Float, beta: Float)
    /// Virtual adversarial training (`TrainingDefense.vat`).
    case vat(xi: Float, epsilon: Float, iterations: Int, weight: Float)
    /// Trained on (1 − a)·one-hot + a/K targets.
    case labelSmoothing(amount: Float)
    /// Feature squeezing (Xu et al. 2018): the model sees the squeezed image, and a detector flags images whose
    /// prediction moves more than a threshold (set on clean images at `falsePositiveRate`) when squeezed.
    case featureSqueezing(squeezers: [Squeezer], falsePositiveRate: Double, calibrationImages: Int)
    /// Gaussian noise N(0, σ²) added to the input, the logits averaged over `draws` (the attack's gradient too: EOT).
    case noise(sigma: Float, draws: Int)
    /// A detector network (Metzen et al. 2017) trained on PGD examples of the model, calibrated at
    /// `falsePositiveRate`; the adaptive attack maximises CE(model) − λ·CE(detector, clean).
    case detector(falsePositiveRate: Double, calibrationImages: Int, lambda: Float)
    /// Randomized smoothing (Cohen, Rosenfeld & Kolter 2019) around the GDA model: the base classifier is the model
    /// trained on `copies` noisy copies at this σ (the `gda` defense's model, reused), as Cohen et al. train their
    /// base with the noise it is smoothed with; noisy copies are clipped to [0, 1] like that training's. CERTIFY
    /// with `selection` (n₀) and `estimation` (n) draws at confidence 1 − `alpha` gives the certified L2 radius
    /// σ·Φ⁻¹(p̲_A), reported as certified accuracy at each of `radii`. The attacks meet the noisy base with the
    /// logits averaged over `draws` draws (EOT: close to Salman et al. 2019's SmoothAdv, which averages softmax);
    /// an attacked image counts as robust when PREDICT (`votes` draws, the binomial test at `alpha`) names its
    /// label, abstaining counting as wrong.
    case smoothing(sigma: Float, copies: Int, selection: Int, estimation: Int, alpha: Double, radii: [Double], votes: Int, draws: Int)

    /// The names `named` knows, in the order of the report.
    public static let names = ["none", "gda", "brelu", "gda+brelu", "fgsm-at", "pgd-at", "trades", "vat", "label-smoothing",
                               "feature-squeezing", "noise", "detector", "smoothing"]
    /// The defenses a full evaluation of a built-in model runs (TRADES only when asked: it doubles PGD-AT's cost;
    /// randomized smoothing only when asked: alone in a --quick run, with the models cached, it took 366 s wall and
    /// 243 CPU-s on a loaded 2-core machine).
    public static let defaultNames = ["none", "gda", "brelu", "gda+brelu", "fgsm-at", "pgd-at", "vat", "label-smoothing",
                                      "feature-squeezing", "noise", "detector"]

    /// The defaults of the inference-time defenses, shared with `advkit attack --defense`.
    public static let defaultSqueezers: [Squeezer] = [.bitDepth(3), .median(2)]
    public static let defaultFalsePositiveRate = 0.05
    public static let defaultCalibrationImages = 2000
    public static let defaultNoiseSigma: Float = 0.1
    public static let defaultNoiseDraws = 8
    public static let defaultDetectorLambda: Float = 1
    /// GDA's σ (Zantedeschi et al. 2017).
    public static let defaultGDASigma: Float = 0.3
    /// Randomized smoothing's σ: the GDA defense's, whose model is its base.
    public static let defaultSmoothingSigma: Float = defaultGDASigma
    /// Cohen et al.'s n₀, n and α.
    public static let defaultSmoothingSelection = 100
    public static let defaultSmoothingEstimation = 10_000
    public static let defaultSmoothingAlpha = 0.001
    /// The L2 radii of the certified-accuracy table (Cohen et al.'s grid, to 1).
    public static let defaultSmoothingRadii: [Double] = [0, 0.25, 0.5, 0.75, 1.0]
    /// PREDICT's draws when scoring an image (clean or attacked). A --quick run scores its 200 images this way 26
    /// times (clean, cells, curve points, checks, transfers): at the ~7,000 base passes a second measured for
    /// CERTIFY, 100 draws are ~75 s of the defense's 366 s, and abstained on 7.5% of the clean Fashion-MNIST images
    /// (CERTIFY with n = 1,000: 4%); 1,000 draws would cost ten times that.
    public static let defaultSmoothingVotes = 100

    /// The defense called `name` with its defaults; ε is the table's (the adversarial trainings use it, PGD-AT and
    /// TRADES with 7 steps of ε/4), `quick` the small configuration's (GDA: 2 noisy copies instead of 10).
    public static func named(_ name: String, epsilon: Float, quick: Bool = false) throws -> DefenseSpec {
        let copies = quick ? 2 : 10
        switch name {
        case "none": return .none
        case "gda": return .gda(sigma: defaultGDASigma, copies: copies)
        case "brelu": return .boundedReLU(bound: 1)
        case "gda+brelu": return .gdaBoundedReLU(sigma: defaultGDASigma, copies: copies, bound: 1)
        case "fgsm-at": return .fgsmAT(epsilon: epsilon, ratio: 0.5)
        case "pgd-at": return .pgdAT(epsilon: epsilon, steps: 7, alpha: epsilon / 4, ratio: 0.5)
        case "trades": return .trades(epsilon: epsilon, steps: 7, alpha: epsilon / 4, beta: 6)
        case "vat": return .vat(xi: 1e-6, epsilon: 2, iterations: 1, weight: 1)
        case "label-smoothing": return .labelSmoothing(amount: 0.1)
        case "feature-squeezing":
            return .featureSqueezing(squeezers: defaultSqueezers, falsePositiveRate: defaultFalsePositiveRate,
                                     calibrationImages: defaultCalibrationImages)
        case "noise": return .noise(sigma: defaultNoiseSigma, draws: defaultNoiseDraws)
        case "detector":
            return .detector(falsePositiveRate: defaultFalsePositiveRate, calibrationImages: defaultCalibrationImages,
                             lambda: defaultDetectorLambda)
        case "smoothing":
            return .smoothing(sigma: defaultSmoothingSigma, copies: copies, selection: defaultSmoothingSelection,
                              estimation: quick ? 1000 : defaultSmoothingEstimation, alpha: defaultSmoothingAlpha,
                              radii: defaultSmoothingRadii, votes: defaultSmoothingVotes, draws: defaultNoiseDraws)
        default:
            throw AdvKitError.invalidArgument("unknown defense '\(name)' (known: \(names.joined(separator: ", ")))")
        }
    }

    /// The name in tables, results.json and `--defenses`.
    public var name: String {
        switch self {
        case .none: return "none"
        case .gda: return "gda"
        case .boundedReLU: return "brelu"
        case .gdaBoundedReLU: return "gda+brelu"
        case .fgsmAT: return "fgsm-at"
        case .pgdAT: return "pgd-at"
        case .trades: return "trades"
        case .vat: return "vat"
        case .labelSmoothing: return "label-smoothing"
        case .featureSqueezing: return "feature-squeezing"
        case .noise: return "noise"
        case .detector: return "detector"
        case .smoothing: return "smoothing"
        }
    }

    /// The training-time defense of a trained defense (nil for the others).
    public var trainingDefense: TrainingDefense? {
        switch self {
        case let .fgsmAT(e, r): return .fgsm(epsilon: e, ratio: r)
        case let .pgdAT(e, s, a, r): return .pgd(epsilon: e, steps: s, alpha: a, ratio: r)
        case let .trades(e, s, a, b): return .trades(epsilon: e, steps: s, alpha: a, beta: b)
        case let .vat(xi, e, i, w): return .vat(xi: xi, epsilon: e, iterations: i, weight: w)
        default: return nil
        }
    }

    /// Whether the defense is a model of its own (trained, or fine-tuned from the user's), rather than the
    /// undefended model with something around it.
    public var isTrained: Bool {
        switch self {
        case .none, .featureSqueezing, .noise, .detector, .smoothing: return false
        default: return true
        }
    }

    /// Whether it changes the architecture (and so cannot apply to a user's model, whose graph is fixed).
    public var changesArchitecture: Bool {
        switch self {
        case .boundedReLU, .gdaBoundedReLU: return true
        default: return false
        }
    }

    /// The classifier an attack meets: the model itself for trained defenses and the detector (which flags rather
    /// than classifies), the squeezed or noisy model for those.
    public func wrapping(_ model: Classifier, seed: UInt64) -> Classifier {
        switch self {
        case let .featureSqueezing(squeezers, _, _): return SqueezedClassifier(model, squeezers: squeezers)
        case let .noise(sigma, draws): return NoisyClassifier(model, sigma: sigma, draws: draws, seed: seed)
        case let .smoothing(sigma, _, _, _, _, _, _, draws):
            return NoisyClassifier(model, sigma: sigma, draws: draws, seed: seed, bounds: .unit)
        default: return model
        }
    }

    /// Checks every parameter; the error names the bad one and the defense.
    public func validate() throws {
        func wrap(_ body: () throws -> Void) throws {
            do { try body() } catch let AdvKitError.invalidArgument(why) { throw AdvKitError.invalidArgument("\(name): \(why)") }
        }
        try wrap {
            try trainingDefense?.validate()
            switch self {
            case let .gda(sigma, copies), let .gdaBoundedReLU(sigma, copies, _):
                guard sigma.isFinite && sigma >= 0 else { throw AdvKitError.invalidArgument("sigma must be >= 0, got \(sigma)") }
                guard copies >= 1 else { throw AdvKitError.invalidArgument("copies must be >= 1, got \(copies)") }
            default: break
            }
            switch self {
            case let .boundedReLU(bound), let .gdaBoundedReLU(_, _, bound):
                guard bound.isFinite && bound > 0 else { throw AdvKitError.invalidArgument("the bound must be > 0, got \(bound)") }
            case let .labelSmoothing(a):
                guard a >= 0 && a < 1 else { throw AdvKitError.invalidArgument("the smoothing must be in [0, 1), got \(a)") }
            case let .featureSqueezing(squeezers, fpr, n):
                guard !squeezers.isEmpty else { throw AdvKitError.invalidArgument("needs at least one squeezer") }
                for s in squeezers { try s.validate() }
                try Self.checkCalibration(fpr, n)
            case let .noise(sigma, draws):
                guard sigma.isFinite && sigma > 0 else { throw AdvKitError.invalidArgument("sigma must be > 0, got \(sigma)") }
                guard draws >= 1 else { throw AdvKitError.invalidArgument("draws must be >= 1, got \(draws)") }
            case let .detector(fpr, n, lambda):
                try Self.checkCalibration(fpr, n)
                guard lambda.isFinite && lambda >= 0 else { throw AdvKitError.invalidArgument("lambda must be >= 0, got \(lambda)") }
            case let .smoothing(sigma, copies, selection, estimation, alpha, radii, votes, draws):
                guard sigma.isFinite && sigma > 0 else { throw AdvKitError.invalidArgument("sigma must be > 0, got \(sigma)") }
                guard copies >= 1 else { throw AdvKitError.invalidArgument("copies must be >= 1, got \(copies)") }
                guard selection >= 1 else { throw AdvKitError.invalidArgument("selection (n0) must be >= 1, got \(selection)") }
                guard estimation >= 1 else { throw AdvKitError.invalidArgument("estimation (n) must be >= 1, got \(estimation)") }
                guard alpha > 0 && alpha < 1 else { throw AdvKitError.invalidArgument("alpha must be in (0, 1), got \(alpha)") }
                guard !radii.isEmpty, radii.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                    throw AdvKitError.invalidArgument("radii must be one or more L2 radii >= 0, got \(radii)")
                }
                guard votes >= 1 else { throw AdvKitError.invalidArgument("votes must be >= 1, got \(votes)") }
                guard draws >= 1 else { throw AdvKitError.invalidArgument("draws must be >= 1, got \(draws)") }
            default: break
            }
        }
    }

    static func checkCalibration(_ fpr: Double, _ images: Int) throws {
        guard fpr > 0 && fpr < 1 else { throw AdvKitError.invalidArgument("the false-positive rate must be in (0, 1), got \(fpr)") }
        guard images >= 10 else { throw AdvKitError.invalidArgument("calibration images must be >= 10, got \(images)") }
    }
}

/// An attack of an evaluation's tables, with its hyper-parameters (see `DefenseSpec` for why they live here).
/// The white-box attacks run at the table's ε (FGSM, PGD, AutoAttack) or report the perturbation they need
/// (DeepFool, C&W); the query attacks are the black-box table's, seeing only the outputs.
public enum AttackSpec: Codable, Hashable, Sendable {
    /// FGSM (Goodfellow et al. 2015), L∞.
    case fgsm
    /// PGD (Madry et al. 2018), L∞, random start, `EvaluationSettings.pgdSteps` steps of α = 2.5ε/steps.
    case pgd
    /// DeepFool (Moosavi-Dezfooli et al. 2016), L2 (its L∞ form too, for the perturbation-needed table).
    case deepfool(steps: Int)
    /// Carlini & Wagner L2 (2017).
    case cw(binarySearchSteps: Int, steps: Int)
    /// AutoAttack standard (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square, each on the images still standing.
    case autoattack(steps: Int, squareQueries: Int)
    /// Square (Andriushchenko et al. 2020), scores only, L∞ at the table's ε.
    case square(queries: Int)
    /// HopSkipJump (Chen et al. 2020), labels only, L∞; an image counts as broken when its adversarial image is
    /// within the table's ε.
    case hopSkipJump(queries: Int)

    /// The white-box names `named` knows.
    public static let whiteBoxNames = ["fgsm", "pgd", "deepfool", "cw", "autoattack"]
    /// The query-based black-box names.
    public static let queryNames = ["square", "hsja"]

    /// The attack called `name` with its defaults (`quick`: the small configuration's: C&W with 2 binary-search
    /// steps of 50 instead of 3 of 100; AutoAttack with 25 steps and 1,000 Square queries instead of 100 and 5,000;
    /// Square and HopSkipJump with 500 queries instead of 5,000).
    public static func named(_ name: String, quick: Bool = false) throws -> AttackSpec {
        switch name {
        case "fgsm": return .fgsm
        case "pgd": return .pgd
        case "deepfool": return .deepfool(steps: 50)
        case "cw": return quick ? .cw(binarySearchSteps: 2, steps: 50) : .cw(binarySearchSteps: 3, steps: 100)
        case "autoattack": return quick ? .autoattack(steps: 25, squareQueries: 1000) : .autoattack(steps: 100, squareQueries: 5000)
        case "square": return .square(queries: quick ? 500 : 5000)
        case "hsja": return .hopSkipJump(queries: quick ? 500 : 5000)
        default:
            throw AdvKitError.invalidArgument("unknown attack '\(name)' (known: \((whiteBoxNames + queryNames).joined(separator: ", ")))")
        }
    }

    public var name: String {
        switch self {
        case .fgsm: return "fgsm"
        case .pgd: return "pgd"
        case .deepfool: return "deepfool"
        case .cw: return "cw"
        case .autoattack: return "autoattack"
        case .square: return "square"
        case .hopSkipJump: return "hsja"
        }
    }

    /// Query-based: sees only the outputs (the black-box table's).
    public var isQueryBased: Bool {
        switch self {
        case .square, .hopSkipJump: return true
        default: return false
        }
    }

    /// Minimal-perturbation attacks report the perturbation needed, not a robust accuracy at ε: they stay out of
    /// the worst case.
    public var isMinimalPerturbation: Bool {
        switch self {
        case .deepfool, .cw: return true
        default: return false
        }
    }

    public func validate() throws {
        switch self {
        case .fgsm, .pgd: break
        case let .deepfool(steps): try checkSteps(steps)
        case let .cw(b, s): try checkSteps(b, "binary-search steps"); try checkSteps(s)
        case let .autoattack(steps, q): try checkSteps(steps); try checkSteps(q, "Square queries")
        case let .square(q), let .hopSkipJump(q):
            guard q >= 2 else { throw AdvKitError.invalidArgument("\(name): queries must be >= 2, got \(q)") }
        }
    }
}
