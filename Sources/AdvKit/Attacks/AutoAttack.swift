import Foundation

/// AutoAttack (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
/// parameter-free attacks"): attacks run one after the other, each only on the images every earlier one left
/// standing. An image counts as broken by the first component whose output reaches the goal (inside the ball);
/// its adversarial image is that output. An image no component broke gets the clean image back, as in the
/// reference implementation. The ensemble's robust accuracy is therefore the per-image worst case over its
/// components: never above any component's on the same images (for components whose random draws are keyed by
/// image, as APGD's are, this holds image by image; see below).
///
///     standard: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000 queries)    — 100 steps each
///     rand:     APGD-CE, APGD-DLR, each with EOT over 20 draws of the gradient           — for randomised defenses
///
/// Components get the images still standing as smaller batches: `runWithReport` gathers them over the whole set
/// (batchSize at a time, so the few images left after APGD-CE make full batches), `run`/`perturb` within each
/// batch it is handed. APGD components are handed the whole batch with the rows to attack, so each image gets the
/// random start it gets when APGD runs alone; other components see the rows gathered at the batch's offset, so
/// their per-image random draws may differ from a run of the component alone on the same images (same
/// distribution, other draws). Prefer `runWithReport`: same images for APGD components, fewer, fuller batches.
///
/// - Parameters: components (in order); `epsilon`/`norm` (the factories set them): a component output outside
///   that ball (by more than 1e-5 relative) is not counted as broken.
public struct AutoAttack: Attack {
    public var components: [Attack]
    /// "standard", "rand", or "custom".
    public var version: String
    /// The threat model the outputs are checked against (nil: not checked).
    public var epsilon: Float?
    public var norm: Norm

    public var name: String { "autoattack" }

    public var settings: [String: SettingValue] {
        var s: [String: SettingValue] = ["version": .string(version), "norm": .string(norm.rawValue),
                                         "components": .string(components.map(\.name).joined(separator: ","))]
        if let epsilon { s["epsilon"] = .float(epsilon) }
        for c in components {
            for (k, v) in c.settings { s["\(c.name).\(k)"] = v }
        }
        return s
    }

    /// An ensemble of `components`, run in order on the images still standing.
    public init(components: [Attack], version: String = "custom", epsilon: Float? = nil, norm: Norm = .linf) {
        self.components = components
        self.version = version
        self.epsilon = epsilon
        self.norm = norm
    }

    /// AutoAttack "standard": APGD-CE, APGD-T, FAB-T and Square (Croce & Hein 2020's defaults: 100 steps, 9 target
    /// classes, 5,000 Square queries, one restart each).
    public static func standard(epsilon: Float = 0.1, norm: Norm = .linf, steps: Int = 100, targetClasses: Int = 9,
                                squareQueries: Int = 5000) -> AutoAttack {
        AutoAttack(components: [
            APGD(epsilon: epsilon, steps: steps, norm: norm, loss: .crossEntropy),
            APGD.targeted(epsilon: epsilon, steps: steps, norm: norm, targetClasses: targetClasses),
            FAB(epsilon: epsilon, norm: norm, targeted: true, steps: steps, targetClasses: targetClasses),
            SquareAttack(epsilon: epsilon, norm: norm, queries: squareQueries),
        ], version: "standard", epsilon: epsilon, norm: norm)
    }

    /// AutoAttack "rand", for randomised defenses: APGD-CE and APGD-DLR with EOT, each step's gradient the average
    /// over `eotDraws` (20) evaluations of the model.
    public static func rand(epsilon: Float = 0.1, norm: Norm = .linf, steps: Int = 100, eotDraws: Int = 20) -> AutoAttack {
        AutoAttack(components: [
            APGD(epsilon: epsilon, steps: steps, norm: norm, loss: .crossEntropy, eotDraws: eotDraws),
            APGD(epsilon: epsilon, steps: steps, norm: norm, loss: .dlr, eotDraws: eotDraws),
        ], version: "rand", epsilon: epsilon, norm: norm)
    }

    public func validate() throws {
        guard !components.isEmpty else { throw AdvKitError.invalidArgument("AutoAttack needs at least one component") }
        if let epsilon { try checkEpsilon(epsilon) }
        for c in components { try c.validate() }
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        perturbRecording(model, batch, chunkSize: batch.count).adversarial
    }

    /// The ensemble on `batch` (one batch of `run`, or the whole set for `runWithReport`): each component on the
    /// images still standing, `chunkSize` at a time. Returns the adversarial images, per image the index of the
    /// component that broke it (nil: none did, or the clean image already reached the goal), and each component's
    /// seconds.
    func perturbRecording(_ model: Classifier, _ batch: AttackBatch, chunkSize: Int,
                          afterComponent: (Int) -> Void = { _ in }) -> (adversarial: Tensor, brokenBy: [Int?], seconds: [Double]) {
        let n = batch.count, d = batch.images.shape.itemCount
        var out = batch.images
        out.makeUnique()
        var brokenBy = [Int?](repeating: nil, count: n)
        var seconds = [Double](repeating: 0, count: components.count)
        var standing = batch.reached(model.logits(of: batch.images)).map { !$0 }
        for (c, component) in components.enumerated() {
            let started = Date()
            let all = (0..<n).filter { standing[$0] }
            for first in stride(from: 0, to: all.count, by: max(chunkSize, 1)) {
                let rows = Array(all[first..<min(first + chunkSize, all.count)])
                let sub = batch.selecting(rows)
                let adv: Tensor
                if let apgd = component as? APGD {
                    adv = apgd.perturb(model, batch, rows: rows)
                } else {
                    adv = component.perturb(model, sub)
                }
                precondition(adv.shape == sub.images.shape, "\(component.name) returned shape \(adv.shape) for \(sub.images.shape)")
                var reached = sub.reached(model.logits(of: adv))
                if let epsilon {
                    let norms = perImageNorms(adv - sub.images)
                    for j in rows.indices where (norm == .linf ? norms.linf[j] : norms.l2[j]) > epsilon * (1 + 1e-5) + 1e-7 {
                        reached[j] = false
                    }
                }
                let op = out.storage.pointer, ap = adv.storage.pointer
                for (j, i) in rows.enumerated() where reached[j] {
                    (op + i * d).update(from: ap + j * d, count: d)
                    brokenBy[i] = c
                    standing[i] = false
                }
            }
            seconds[c] += Date().timeIntervalSince(started)
            afterComponent(c)
        }
        return (out, brokenBy, seconds)
    }

    /// What the ensemble did, image by image and component by component.
    public struct Report {
        /// The ensemble's images and outcomes, as `run` gives them.
        public var result: AttackResult
        /// The components' names, in order.
        public var componentNames: [String]
        /// Per image: the index into `componentNames` of the component that first broke it; nil where none did
        /// (the image is robust, or the model was already wrong on the clean image).
        public var brokenByIndex: [Int?]
        /// Per component: seconds spent in it (its attack and the test of its output).
        public var componentSeconds: [Double]

        /// Per image: the name of the component that first broke it, or nil.
        public var brokenBy: [String?] { brokenByIndex.map { $0.map { componentNames[$0] } } }

        /// Per component: how many images it broke (the images every earlier component left standing).
        public var brokenCounts: [Int] {
            componentNames.indices.map { c in brokenByIndex.filter { $0 == c }.count }
        }

        /// Robust accuracy after the first `count` components (0: the clean accuracy; all: the ensemble's).
        public func robustAccuracy(afterComponents count: Int) -> Double {
            let outcomes = result.outcomes
            guard !outcomes.isEmpty else { return 0 }
            let robust = outcomes.indices.filter { i in
                outcomes[i].cleanPrediction == outcomes[i].label && (brokenByIndex[i].map { $0 >= count } ?? true)
            }
            return Double(robust.count) / Double(outcomes.count)
        }
    }

    /// Runs the ensemble as `run` does and reports, per image, the component that broke it. Unlike `run`, which
    /// hands the ensemble `batchSize` images at a time, each component here runs on all the images still standing
    /// in the whole set, `batchSize` at a time: after APGD-CE a few percent of the images remain, and they make a
    /// few full batches instead of many nearly empty ones (fewer steps for the same images). APGD components give
    /// each image the same result either way (draws keyed by image).
    public func runWithReport(_ model: Classifier, images: Tensor, labels: [Int32], goal: Goal = .untargeted,
                              bounds: PixelBounds = .unit, seed: UInt64 = 0, batchSize: Int = 128,
                              progress: ProgressReporter.Style = .silent) throws -> Report {
        let started = Date()
        try checkInputs(model, images: images, labels: labels, goal: goal, bounds: bounds, batchSize: batchSize)
        let n = labels.count
        let clean = model.logits(of: images)
        let targets = try goal.resolveTargets(count: n, cleanLogits: clean, classes: model.classCount)
        let bar = ProgressReporter("\(name) \(goal)", total: components.count, style: progress)
        let whole = AttackBatch(images: images, labels: labels, targets: targets, goal: goal, bounds: bounds, offset: 0, seed: seed)
        let r = perturbRecording(model, whole, chunkSize: batchSize) { bar.update($0 + 1) }
        let adversarial = r.adversarial, brokenBy = r.brokenBy, seconds = r.seconds
        let outcomes = AttackOutcomes.evaluate(model, clean: images, cleanLogits: clean, adversarial: adversarial,
                                               labels: labels, targets: targets, margin: goal.margin)
        let result = AttackResult(attack: name, goal: goal, adversarial: adversarial, outcomes: outcomes,
                                  seconds: Date().timeIntervalSince(started))
        let report = Report(result: result, componentNames: components.map(\.name), brokenByIndex: brokenBy,
                            componentSeconds: seconds)
        if progress != .silent {
            let steps = components.indices.map { c in
                String(format: "%@ %.2f%%", components[c].name, report.robustAccuracy(afterComponents: c + 1) * 100)
            }.joined(separator: ", ")
            ProgressReporter("\(name) \(goal)", total: 1, style: progress)
                .finish(String(format: "robust accuracy %.2f%% (after %@), %.1fs", result.robustAccuracy * 100, steps, result.seconds))
        }
        return report
    }
}
