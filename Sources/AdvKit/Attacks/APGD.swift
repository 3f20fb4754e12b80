/// APGD-CE (Croce & Hein 2020): PGD without a step size to tune, the first attack of AutoAttack.
///
///     z_{k+1} = Π(x_k + η_k · sign(∇L(x_k)))                         (L2: ∇L/‖∇L‖₂)
///     x_{k+1} = Π(x_k + a·(z_{k+1} − x_k) + (1 − a)·(x_k − x_{k−1})),   a = 0.75 (0 at the first step)
///
/// η starts at 2ε and is halved, per image, at checkpoints w_j = ⌈p_j·N⌉ (p₀ = 0, p₁ = 0.22,
/// p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) when the loss rose in fewer than ρ = 75% of the steps
/// since the last checkpoint, or when η and the best loss are both unchanged since then; a halving restarts
/// from the best point. Each image returns its highest-loss point (or the first that reached the goal).
/// - Parameters: epsilon (0.1), steps (100), norm (.linf), seed (random start uniform in the ball, as the paper).
public struct APGD: Attack {
    public var epsilon: Float
    public var steps: Int
    public var norm: Norm
    public var rho: Float = 0.75
    public var name: String { "apgd-ce" }
    public var settings: [String: SettingValue] {
        ["epsilon": .float(epsilon), "steps": .int(steps), "norm": .string(norm.rawValue), "rho": .float(rho),
         "random_start": .bool(true), "restarts": .int(1)]
    }

    public init(epsilon: Float = 0.1, steps: Int = 100, norm: Norm = .linf) {
        self.epsilon = epsilon
        self.steps = steps
        self.norm = norm
    }

    public func validate() throws {
        try checkEpsilon(epsilon)
        try checkSteps(steps)
    }

    static func checkpoints(_ steps: Int) -> Set<Int> {
        var p: [Double] = [0, 0.22]
        while p.last! < 1 { p.append(p[p.count - 1] + max(p[p.count - 1] - p[p.count - 2] - 0.03, 0.06)) }
        return Set(p.dropFirst().map { Int((Double(steps) * $0).rounded(.up)) }.filter { $0 < steps })
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let n = batch.count, d = batch.images.shape.itemCount
        let loss = AttackLoss()
        var x = PGD(epsilon: epsilon, alpha: 0, steps: 1, norm: norm, randomStart: true).start(batch, restart: 0)
        var eta = [Float](repeating: 2 * epsilon, count: n)
        let marks = APGD.checkpoints(steps)
        var e = loss.evaluate(model, x, batch)
        var lossNow = batch.ascending(e.losses)
        var worst = WorstCase(x)
        worst.offer(x, losses: lossNow, reached: batch.reached(e.logits))
        var previous = x
        var increases = [Int](repeating: 0, count: n)
        var lastMark = 0
        var etaAtMark = eta, bestAtMark = worst.losses
        for k in 0..<steps {
            let a: Float = k == 0 ? 1 : 0.75
            // z = Π(x + η·s(g)), per-image η
            var z = x
            z.makeUnique()
            let zp = z.storage.pointer, gp = e.gradient.storage.pointer
            for i in 0..<n {
                if norm == .linf {
                    for j in 0..<d { let g = gp[i * d + j]; zp[i * d + j] += eta[i] * (g > 0 ? 1 : (g < 0 ? -1 : 0)) }
                } else {
                    var s: Float = 0
                    for j in 0..<d { s += gp[i * d + j] * gp[i * d + j] }
                    let f = s > 0 ? eta[i] / s.squareRoot() : 0
                    for j in 0..<d { zp[i * d + j] += f * gp[i * d + j] }
                }
            }
            norm.project(&z, origin: batch.images, epsilon: epsilon, bounds: batch.bounds)
            var next = x
            next.makeUnique()
            let np = next.storage.pointer, xp = x.storage.pointer, pp = previous.storage.pointer
            for j in 0..<(n * d) { np[j] = xp[j] + a * (zp[j] - xp[j]) + (1 - a) * (xp[j] - pp[j]) }
            norm.project(&next, origin: batch.images, epsilon: epsilon, bounds: batch.bounds)
            previous = x
            x = next
            e = loss.evaluate(model, x, batch)
            let l = batch.ascending(e.losses)
            for i in 0..<n where l[i] > lossNow[i] { increases[i] += 1 }
            lossNow = l
            worst.offer(x, losses: l, reached: batch.reached(e.logits))
            if marks.contains(k + 1) {
                let window = k + 1 - lastMark
                for i in 0..<n {
                    let fewIncreases = Float(increases[i]) < rho * Float(window)
                    let stalled = etaAtMark[i] == eta[i] && bestAtMark[i] == worst.losses[i]
                    if fewIncreases || stalled {
                        eta[i] /= 2
                        // Restart this image from its best point.
                        x.makeUnique()
                        (x.storage.pointer + i * d).update(from: worst.images.storage.pointer + i * d, count: d)
                    }
                    increases[i] = 0
                }
                etaAtMark = eta
                bestAtMark = worst.losses
                lastMark = k + 1
                e = loss.evaluate(model, x, batch)
            }
        }
        return worst.images
    }
}
