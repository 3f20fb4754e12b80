import Foundation

// The gradient-masking checks of each defense.
extension Evaluator {
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
        if settings.attacks.contains(.pgd) {
            let form = self.form(.pgd, against: d).form
            let steps = settings.pgdSteps
            let few = try attack(.pgd, eps: settings.epsilon, against: d, steps: steps)
                .generate(d.classifier, images: test.images, labels: test.labels, seed: settings.seed)
            let many = try attack(.pgd, eps: settings.epsilon, against: d, steps: 2 * steps)
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
        if let evasion = d.detector?.evasionLoss(v) {
            loss -= Double(d.lambda) * Double(evasion.mean().value.scalar)
        }
        return loss
    }

    func attackLossName(_ d: Defended) -> String {
        let model = d.classifier is SqueezedClassifier ? "the squeezed model" : d.classifier is NoisyClassifier ? "the noisy model" : "the model"
        if d.detector?.isDifferentiable == true { return "CE(\(model)) - " + String(format: "%g", d.lambda) + "·CE(detector, clean)" }
        return "cross-entropy of \(model)"
    }

}
