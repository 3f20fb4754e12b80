import Foundation

/// What `advkit evaluate` runs: which model, which defenses and attacks with every hyper-parameter, how large, how
/// long to train. Recorded whole in results.json, and the resume key: two runs share finished units only when
/// their settings (and test images) are equal.
public struct EvaluationSettings: Codable, Equatable, Sendable {
    public var dataset: String = "fashion-mnist"
    /// The user's model, when the evaluation is of theirs (nil: AdvKit trains its built-in architecture).
    public var model: EvaluatedModel?
    public var defenses: [DefenseSpec] = EvaluationSettings.specs(DefenseSpec.defaultNames, epsilon: 0.1)
    /// The white-box attacks of the tables.
    public var attacks: [AttackSpec] = [.fgsm, .pgd, .deepfool(steps: 50), .cw(binarySearchSteps: 3, steps: 100),
                                        .autoattack(steps: 100, squareQueries: 5000)]
    /// The query-based attacks of the black-box table (beside the transfer attacks).
    public var queryAttacks: [AttackSpec] = [.square(queries: 5000), .hopSkipJump(queries: 5000)]
    /// The main L∞ radius of the tables.
    public var epsilon: Float = 0.1
    /// The radii of the robustness curves.
    public var epsilons: [Float] = [0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3]
    /// Test images attacked.
    public var limit = 500
    /// Training images per model, from the defender's half of the training set (the attacker's surrogates
    /// train on the other half).
    public var trainImages = 20_000
    /// Epochs of each trained model (a user's model: of each fine-tuning).
    public var epochs = 2
    /// The learning rate of training (Adam); nil: 1e-3 for a built-in model, 1e-4 when fine-tuning a user's.
    public var learningRate: Float?
    public var pgdSteps = 20
    public var threat = "both"
    public var seed: UInt64 = 0
    public var quick = false

    public init() {}

    /// The registry's specs for `names` (`DefenseSpec.named`).
    public static func specs(_ names: [String], epsilon: Float, quick: Bool = false) -> [DefenseSpec] {
        names.compactMap { try? DefenseSpec.named($0, epsilon: epsilon, quick: quick) }
    }

    /// The small configuration of `--quick`: a few minutes on 2 cores (fewer images, one epoch, PGD-10, AutoAttack
    /// and the query attacks on smaller budgets).
    public static func quickSettings() -> EvaluationSettings {
        var s = EvaluationSettings()
        s.quick = true
        s.limit = 200
        s.trainImages = 6_000
        s.epochs = 1
        s.pgdSteps = 10
        s.defenses = specs(DefenseSpec.defaultNames, epsilon: s.epsilon, quick: true)
        // AutoAttack at a quarter of the paper's budget (APGD/FAB 25 steps, Square 1,000 queries): at 100 steps and
        // 5,000 queries its cell alone took 7.5 minutes on the undefended CNN (200 images, a loaded 2-core machine).
        // The settings, the cell's form and the headline say which budget ran.
        // No DeepFool (nor C&W): the perturbation-needed table is the full run's. DeepFool runs twice per defense
        // (L2 and L∞) and took 69 of the 338 s of an idle --quick run (2026-11-22, 2 cores): 19 s on the noise
        // defense alone, whose 8 draws multiply every gradient. `--attacks fgsm,pgd,deepfool,autoattack` adds it.
        s.attacks = [.fgsm, .pgd, .autoattack(steps: 25, squareQueries: 1000)]
        // Square only: HopSkipJump took 205 of the 940 s of a --quick run (96 s on the noise defense alone); it runs
        // in the full evaluation and with --query-attacks square,hsja.
        s.queryAttacks = [.square(queries: 500)]
        return s
    }

    /// The effective learning rate.
    public var learningRateValue: Float { learningRate ?? (model == nil ? 1e-3 : 1e-4) }

    public func validate() throws {
        guard !defenses.isEmpty, !attacks.isEmpty else { throw AdvKitError.invalidArgument("evaluate needs at least one defense and one attack") }
        for d in defenses { try d.validate() }
        for a in attacks + queryAttacks { try a.validate() }
        if let twice = Dictionary(grouping: defenses.map(\.name), by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw AdvKitError.invalidArgument("the defense '\(twice)' is listed twice")
        }
        if let twice = Dictionary(grouping: (attacks + queryAttacks).map(\.name), by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw AdvKitError.invalidArgument("the attack '\(twice)' is listed twice")
        }
        if let q = attacks.first(where: \.isQueryBased) {
            throw AdvKitError.invalidArgument("\(q.name) is a query-based attack: it belongs to the black-box table (queryAttacks)")
        }
        if let w = queryAttacks.first(where: { !$0.isQueryBased }) {
            throw AdvKitError.invalidArgument("\(w.name) is a white-box attack, not a query-based one")
        }
        if model != nil, let d = defenses.first(where: \.changesArchitecture) {
            throw AdvKitError.invalidArgument("the defense '\(d.name)' changes the architecture, which a user's model fixes: leave it out")
        }
        try checkEpsilon(epsilon)
        guard epsilons.count >= 2 else { throw AdvKitError.invalidArgument("the curves need at least 2 epsilons") }
        for e in epsilons { try checkEpsilon(e) }
        guard limit >= 1, trainImages >= 10, epochs >= 1, pgdSteps >= 1 else {
            throw AdvKitError.invalidArgument("limit, training images, epochs and PGD steps must be positive")
        }
        if let learningRate, !(learningRate.isFinite && learningRate > 0) {
            throw AdvKitError.invalidArgument("the learning rate must be > 0, got \(learningRate)")
        }
        guard ["white", "black", "both"].contains(threat) else { throw AdvKitError.invalidArgument("threat must be white, black or both, got \(threat)") }
    }
}

/// The user's model an evaluation is of, as results.json records it.
public struct EvaluatedModel: Codable, Equatable, Sendable {
    /// The file as given.
    public var file: String
    /// SHA-256 of the file, lowercase hex.
    public var sha256: String
    /// "onnx" or "safetensors".
    public var format: String
    /// The built-in architecture of a safetensors model.
    public var architecture: String?
    /// The input the model takes: (C, H, W).
    public var inputShape: [Int]
    /// ONNX: the operator sets imported ("" is ai.onnx), the producer and the operators of the graph.
    public var opsets: [String: Int]?
    public var producer: String?
    public var operators: [String]?
    /// ONNX: the input preprocessing AdvKit adds inside the graph (scale, mean, std), when any.
    public var preprocessing: String?

    public init(file: String, sha256: String, format: String, architecture: String? = nil, inputShape: [Int],
                opsets: [String: Int]? = nil, producer: String? = nil, operators: [String]? = nil, preprocessing: String? = nil) {
        (self.file, self.sha256, self.format, self.architecture, self.inputShape) = (file, sha256, format, architecture, inputShape)
        (self.opsets, self.producer, self.operators, self.preprocessing) = (opsets, producer, operators, preprocessing)
    }
}
