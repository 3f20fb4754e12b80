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
