/// Auto-PGD (Croce & Hein 2020): PGD without a step size to tune, with the cross-entropy (APGD-CE), the
/// Difference of Logits Ratio (APGD-DLR) or the targeted DLR over the top classes (APGD-T) as its loss; the
/// attacks of AutoAttack.
///
///     z_{k+1} = Π(x_k + η_k · sign(∇L(x_k)))                         (L2: ∇L/‖∇L‖₂)
///     x_{k+1} = Π(x_k + a·(z_{k+1} − x_k) + (1 − a)·(x_k − x_{k−1})),   a = 0.75 (1 at the first step)
///
/// η starts at 2ε and is halved, per image, at checkpoints w_j = ⌈p_j·N⌉ (p₀ = 0, p₁ = 0.22,
/// p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) when the loss rose in fewer than ρ = 75% of the steps
/// since the last checkpoint, or when η and the best loss are both unchanged since then; a halving restarts
/// the image from its best point and that point's gradient. Each image returns the first point that reached
/// the goal, else its highest-loss point.
///
/// Losses (higher is better for the attacker; see `DLR` for the formulas and their gradients):
/// - `.crossEntropy`: CE(z, y) untargeted; −CE(z, t) for a targeted goal.
/// - `.dlr`: DLR(z, y) untargeted; the targeted DLR_t towards the goal's target for a targeted goal.
/// - `.targetedDLR` (APGD-T): with an untargeted goal, one run per target class t among the classes ranked
///   2nd, 3rd, … (targetClasses + 1)-th by the clean logits (at most classes − 1), each on the images no earlier
///   run has turned wrong, ascending DLR_t(z, y); success is any wrong class, as in AutoAttack. With a targeted
///   goal, one run towards the goal's target.
///
/// Images that already reach the goal on the clean image are returned unchanged, and an image leaves the batch
/// as soon as it reaches the goal (its returned point is fixed from then on; the other images' steps do not
/// depend on it), so the later steps only pay for the images still standing. Restarts run on the images no
/// earlier restart has broken. Random starts are keyed by (seed, loss, run, image index), as PGD's.
///
/// EOT (Athalye et al. 2018), for randomised defenses: with `eotDraws` > 1 the gradient, the loss and the
/// logits at each point are averages over that many evaluations of the model (AutoAttack "rand": 20).
///
/// - Parameters: epsilon (0.1), steps (100, the paper's), norm (.linf), loss (.crossEntropy), restarts (1),
///   targetClasses (9, APGD-T only), eotDraws (1), rho (0.75).
/// - Deviations from the paper: the random start is uniform in the ball (L∞: each pixel in [−ε, ε]; L2: a
///   Gaussian direction at a radius uniform in [0, ε]) where the paper starts on the ball's surface; an image
///   that reached the goal stops (the paper's code runs it to the end, keeping its first success: the same image).
public struct APGD: Attack {
    /// The loss APGD ascends.
    public enum Loss: String, Sendable, Codable, CaseIterable {
        /// APGD-CE.
        case crossEntropy = "ce"
        /// APGD-DLR.
        case dlr
        /// APGD-T: the targeted DLR over the top classes.
        case targetedDLR = "dlr-targeted"
    }

    public var epsilon: Float
    public var steps: Int
    public var norm: Norm
    public var loss: Loss
    public var restarts: Int
    /// APGD-T: how many runner-up classes of the clean logits to target in turn (capped at classes − 1).
    public var targetClasses: Int
    /// Model evaluations averaged per point (EOT); 1 for a deterministic model.
    public var eotDraws: Int
    public var rho: Float = 0.75

    public var name: String {
        switch loss {
        case .crossEntropy: return "apgd-ce"
        case .dlr: return "apgd-dlr"
        case .targetedDLR: return "apgd-t"
        }
    }

    public var settings: [String: SettingValue] {
        var s: [String: SettingValue] = [
            "epsilon": .float(epsilon), "steps": .int(steps), "norm": .string(norm.rawValue), "rho": .float(rho),
            "random_start": .bool(true), "restarts": .int(restarts), "loss": .string(loss.rawValue),
            "eot_draws": .int(eotDraws),
        ]
        if loss == .targetedDLR { s["target_classes"] = .int(targetClasses) }
        return s
    }

    public init(epsilon: Float = 0.1, steps: Int = 100, norm: Norm = .linf, loss: Loss = .crossEntropy, restarts: Int = 1,
                targetClasses: Int = 9, eotDraws: Int = 1) {
        self.epsilon = epsilon
        self.steps = steps
        self.norm = norm
        self.loss = loss
        self.restarts = restarts
        self.targetClasses = targetClasses
        self.eotDraws = eotDraws
    }

    /// APGD-T (Croce & Hein 2020): the targeted DLR towards each of the `targetClasses` most likely wrong classes
    /// in turn (AutoAttack's default 9, capped at classes − 1).
    public static func targeted(epsilon: Float = 0.1, steps: Int = 100, norm: Norm = .linf, targetClasses: Int = 9,
                                restarts: Int = 1, eotDraws: Int = 1) -> APGD {
        APGD(epsilon: epsilon, steps: steps, norm: norm, loss: .targetedDLR, restarts: restarts, targetClasses: targetClasses,
             eotDraws: eotDraws)
    }

    public func validate() throws {
        try checkEpsilon(epsilon)
        try checkSteps(steps)
        try checkSteps(restarts, "restarts")
        try checkSteps(targetClasses, "target classes")
        try checkSteps(eotDraws, "EOT draws")
        guard rho > 0 && rho <= 1 else { throw AdvKitError.invalidArgument("rho must be in (0, 1], got \(rho)") }
    }

    static func checkpoints(_ steps: Int) -> Set<Int> {
        var p: [Double] = [0, 0.22]
        while p.last! < 1 { p.append(p[p.count - 1] + max(p[p.count - 1] - p[p.count - 2] - 0.03, 0.06)) }
        return Set(p.dropFirst().map { Int((Double(steps) * $0).rounded(.up)) }.filter { $0 < steps })
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        perturb(model, batch, rows: nil)
    }

    /// The attack on images `rows` of `batch` (nil: all), returned in that order. Each image's random starts are
    /// those it gets in a run on the whole batch, so an image's result does not depend on which others are
    /// attacked with it (AutoAttack passes only the images still standing).
    func perturb(_ model: Classifier, _ batch: AttackBatch, rows: [Int]?) -> Tensor {
        let all = rows ?? Array(0..<batch.count)
        let sub = rows == nil ? batch : batch.selecting(all)
        var out = sub.images
        out.makeUnique()
        let d = sub.images.shape.itemCount
        let clean = averagedLogits(model, sub.images)
        var done = sub.reached(clean)
        // The runs: (loss targets, random-start stream, whether its losses compare with the first run's).
        var runs: [(targets: [Int32]?, stream: UInt64, comparable: Bool)] = []
        let base: UInt64 = 0x4150_0000 &+ UInt64(Loss.allCases.firstIndex(of: loss)!) << 12 &+ (norm == .linf ? 0 : 0x800)
        if loss == .targetedDLR && sub.targets == nil {
            let k = model.classCount
            let ranked = (0..<sub.count).map { i -> [Int32] in
                let z = clean.row(i)
                return Array((0..<k).sorted { z[$0] > z[$1] || (z[$0] == z[$1] && $0 < $1) }.map(Int32.init))
            }
            for rank in 1..<max(1, min(targetClasses, k - 1) + 1) {
                for restart in 0..<restarts {
                    runs.append((ranked.map { $0[rank] }, base &+ UInt64(rank) << 6 &+ UInt64(restart), rank == 1))
                }
            }
        } else {
            for restart in 0..<restarts { runs.append((sub.targets, base &+ UInt64(restart), true)) }
        }
        var bestLoss = [Float](repeating: -.infinity, count: sub.count)
        for run in runs {
            let active = (0..<sub.count).filter { !done[$0] }
            if active.isEmpty { break }
            let start = norm.randomStart(batch, epsilon: epsilon, stream: run.stream).gather(active.map { all[$0] })
            let r = ascend(model, sub.selecting(active), start: start, lossTargets: run.targets.map { t in active.map { t[$0] } })
            let op = out.storage.pointer, rp = r.images.storage.pointer
            for (j, i) in active.enumerated() where r.reached[j] || (run.comparable && r.losses[j] > bestLoss[i]) {
                (op + i * d).update(from: rp + j * d, count: d)
                bestLoss[i] = r.losses[j]
                done[i] = r.reached[j]
            }
        }
        return out
    }

    /// One APGD run from `start` on every image of `batch`: per image, the first point that reached the goal, or
    /// the highest-loss point and its loss.
    private func ascend(_ model: Classifier, _ batch: AttackBatch, start: Tensor,
                        lossTargets: [Int32]?) -> (images: Tensor, losses: [Float], reached: [Bool]) {
        let n0 = batch.count, d = batch.images.shape.itemCount
        var result = start
        result.makeUnique()
        var resultLoss = [Float](repeating: -.infinity, count: n0), resultReached = [Bool](repeating: false, count: n0)
        let evaluator = Evaluator(apgd: self, model: model)
        var s = State(batch: batch, x: start, lossTargets: lossTargets)
        var e = evaluator.evaluate(s.x, s)
        s.bestX = s.x
        s.bestGradient = e.gradient
        s.bestLoss = e.losses
        s.lossNow = e.losses
        s.gradient = e.gradient
        s.previous = s.x
        s.eta = [Float](repeating: 2 * epsilon, count: n0)
        s.increases = [Int](repeating: 0, count: n0)
        s.etaAtMark = s.eta
        s.bestAtMark = s.bestLoss

        // Images that reached the goal: their point is final; they leave the batch.
        func retire(_ reached: [Bool]) {
            guard reached.contains(true) else { return }
            let xp = s.x.storage.pointer, rp = result.storage.pointer
            var keep: [Int] = []
            for j in 0..<s.count {
                if reached[j] {
                    let i = s.index[j]
                    (rp + i * d).update(from: xp + j * d, count: d)
                    resultLoss[i] = s.lossNow[j]
                    resultReached[i] = true
                } else {
                    keep.append(j)
                }
            }
            s.keep(keep)
        }
        retire(s.reached(e.logits))

        let marks = APGD.checkpoints(steps)
        var lastMark = 0
        for k in 0..<steps {
            if s.count == 0 { break }
            let n = s.count
            let a: Float = k == 0 ? 1 : 0.75
            // z = Π(x + η·s(g)), per-image η
            var z = s.x
            z.makeUnique()
            let zp = z.storage.pointer, gp = s.gradient.storage.pointer
            for i in 0..<n {
                let eta = s.eta[i]
                if norm == .linf {
                    for j in 0..<d { let g = gp[i * d + j]; zp[i * d + j] += eta * (g > 0 ? 1 : (g < 0 ? -1 : 0)) }
                } else {
                    var sum: Float = 0
                    for j in 0..<d { sum += gp[i * d + j] * gp[i * d + j] }
                    let f = sum > 0 ? eta / sum.squareRoot() : 0
                    for j in 0..<d { zp[i * d + j] += f * gp[i * d + j] }
                }
            }
            norm.project(&z, origin: s.origin, epsilon: epsilon, bounds: batch.bounds)
            var next = Tensor(uninitialized: s.x.shape)
            let np = next.storage.pointer, xp = s.x.storage.pointer, pp = s.previous.storage.pointer
            for j in 0..<(n * d) { np[j] = xp[j] + a * (zp[j] - xp[j]) + (1 - a) * (xp[j] - pp[j]) }
            norm.project(&next, origin: s.origin, epsilon: epsilon, bounds: batch.bounds)
            s.previous = s.x
            s.x = next
            e = evaluator.evaluate(s.x, s)
            s.gradient = e.gradient
            let l = e.losses
            var improved: [Int] = []
            for i in 0..<n {
                if l[i] > s.lossNow[i] { s.increases[i] += 1 }
                if l[i] > s.bestLoss[i] { improved.append(i) }
            }
            s.lossNow = l
            if !improved.isEmpty {
                s.bestX.makeUnique()
                s.bestGradient.makeUnique()
                let bx = s.bestX.storage.pointer, bg = s.bestGradient.storage.pointer
                let cx = s.x.storage.pointer, cg = s.gradient.storage.pointer
                for i in improved {
                    s.bestLoss[i] = l[i]
                    (bx + i * d).update(from: cx + i * d, count: d)
                    (bg + i * d).update(from: cg + i * d, count: d)
                }
            }
            retire(s.reached(e.logits))
            if marks.contains(k + 1) {
                let window = k + 1 - lastMark
                for i in 0..<s.count {
                    let fewIncreases = Float(s.increases[i]) < rho * Float(window)
                    let stalled = s.etaAtMark[i] == s.eta[i] && s.bestAtMark[i] == s.bestLoss[i]
                    if fewIncreases || stalled {
                        s.eta[i] /= 2
                        // Restart this image from its best point, with that point's gradient.
                        s.x.makeUnique()
                        s.gradient.makeUnique()
                        (s.x.storage.pointer + i * d).update(from: s.bestX.storage.pointer + i * d, count: d)
                        (s.gradient.storage.pointer + i * d).update(from: s.bestGradient.storage.pointer + i * d, count: d)
                    }
                    s.increases[i] = 0
                }
                s.etaAtMark = s.eta
                s.bestAtMark = s.bestLoss
                lastMark = k + 1
            }
        }
        // The images still standing return their highest-loss point.
        let rp = result.storage.pointer, bp = s.bestX.storage.pointer
        for j in 0..<s.count {
            (rp + s.index[j] * d).update(from: bp + j * d, count: d)
            resultLoss[s.index[j]] = s.bestLoss[j]
        }
        return (result, resultLoss, resultReached)
    }

    /// Logits at `x`, averaged over the EOT draws.
    private func averagedLogits(_ model: Classifier, _ x: Tensor) -> Tensor {
        var z = model.logits(of: x)
        guard eotDraws > 1 else { return z }
        for _ in 1..<eotDraws { z += model.logits(of: x) }
        return z * (1 / Float(eotDraws))
    }

    /// The images of one run still standing, and everything APGD keeps per image; rows leave together.
    private struct State {
        var origin: Tensor
        var labels: [Int32]
        var goalTargets: [Int32]?
        var lossTargets: [Int32]?
        var goal: Goal
        /// Each row's position in the run's batch.
        var index: [Int]
        var x: Tensor, previous: Tensor, gradient: Tensor, bestX: Tensor, bestGradient: Tensor
        var eta: [Float] = [], lossNow: [Float] = [], bestLoss: [Float] = [], etaAtMark: [Float] = [], bestAtMark: [Float] = []
        var increases: [Int] = []

        init(batch: AttackBatch, x: Tensor, lossTargets: [Int32]?) {
            origin = batch.images
            labels = batch.labels
            goalTargets = batch.targets
            self.lossTargets = lossTargets
            goal = batch.goal
            index = Array(0..<batch.count)
            self.x = x
            previous = x
            gradient = x
            bestX = x
            bestGradient = x
        }

        var count: Int { index.count }

        /// The batch as the goal test and the cross-entropy see it.
        var batch: AttackBatch { AttackBatch(images: origin, labels: labels, targets: goalTargets, goal: goal) }

        func reached(_ logits: Tensor) -> [Bool] { batch.reached(logits) }

        mutating func keep(_ rows: [Int]) {
            origin = origin.gather(rows)
            labels = rows.map { labels[$0] }
            goalTargets = goalTargets.map { t in rows.map { t[$0] } }
            lossTargets = lossTargets.map { t in rows.map { t[$0] } }
            index = rows.map { index[$0] }
            x = x.gather(rows)
            previous = previous.gather(rows)
            gradient = gradient.gather(rows)
            bestX = bestX.gather(rows)
            bestGradient = bestGradient.gather(rows)
            eta = rows.map { eta[$0] }
            lossNow = rows.map { lossNow[$0] }
            bestLoss = rows.map { bestLoss[$0] }
            etaAtMark = rows.map { etaAtMark[$0] }
            bestAtMark = rows.map { bestAtMark[$0] }
            increases = rows.map { increases[$0] }
        }
    }

    /// The loss at a point, ascending (higher is better for the attacker), its input gradient and the logits,
    /// averaged over the EOT draws.
    private struct Evaluator {
        let apgd: APGD
        let model: Classifier
        let ce = AttackLoss()
        let logitLoss = LogitLoss()

        func evaluate(_ x: Tensor, _ s: State) -> (gradient: Tensor, logits: Tensor, losses: [Float]) {
            var sum: (gradient: Tensor, logits: Tensor, losses: [Float])?
            for _ in 0..<apgd.eotDraws {
                let e = once(x, s)
                if var t = sum {
                    t.gradient += e.gradient
                    t.logits += e.logits
                    for i in t.losses.indices { t.losses[i] += e.losses[i] }
                    sum = t
                } else {
                    sum = e
                }
            }
            guard apgd.eotDraws > 1, var t = sum else { return sum! }
            let f = 1 / Float(apgd.eotDraws)
            t.gradient = t.gradient * f
            t.logits = t.logits * f
            t.losses = t.losses.map { $0 * f }
            return t
        }

        private func once(_ x: Tensor, _ s: State) -> (gradient: Tensor, logits: Tensor, losses: [Float]) {
            switch apgd.loss {
            case .crossEntropy:
                var b = s.batch
                b.images = x
                let e = ce.evaluate(model, x, b)
                return (e.gradient, e.logits, b.ascending(e.losses))
            case .dlr, .targetedDLR:
                let labels = s.labels
                let e: AttackLoss.Evaluation
                if let t = s.lossTargets ?? s.goalTargets {
                    e = logitLoss.evaluate(model, x) { DLR.targetedLoss(logits: $0, labels: labels, targets: t) }
                } else {
                    e = logitLoss.evaluate(model, x) { DLR.loss(logits: $0, labels: labels) }
                }
                return (e.gradient, e.logits, e.losses.scalars)
            }
        }
    }
}

extension AttackBatch {
    /// Images `rows` of this batch with their labels and targets (same goal, bounds, offset and seed).
    func selecting(_ rows: [Int]) -> AttackBatch {
        AttackBatch(images: images.gather(rows), labels: rows.map { labels[$0] }, targets: targets.map { t in rows.map { t[$0] } },
                    goal: goal, bounds: bounds, offset: offset, seed: seed)
    }
}
