/// Projected Gradient Descent (Madry et al. 2018) in the L∞ or L2 ball:
///
///     x₀ = x + U(ball(ε))  (random start) or x;     x_{k+1} = Π(x_k + α·s(∇ₓ L(x_k)))
///     s(g) = sign(g) (L∞)   or   g / ‖g‖₂ (L2, per image)
///
/// Π projects onto the ball around the clean image, then clips to the pixel bounds. With several restarts,
/// each image keeps the worst case over restarts: a successful restart, else the one with the highest loss.
/// With `earlyStop`, an image stops moving once it reaches the goal.
///
/// Random starts: L∞, each pixel uniform in [−ε, ε] (as torchattacks, ART and foolbox); L2, a Gaussian
/// direction scaled to a radius uniform in [0, ε]. Draws are keyed by (seed, restart, image index): the same
/// seed gives the same images at any batch size and thread count.
/// - Parameters: epsilon (0.1), alpha (2.5·ε/steps, Madry et al.'s rule), steps (40), norm (.linf),
///   randomStart (true), restarts (1), earlyStop (false).
public struct PGD: Attack {
    public var epsilon: Float
    public var alpha: Float
    public var steps: Int
    public var norm: Norm
    public var randomStart: Bool
    public var restarts: Int
    public var earlyStop: Bool
    public var name: String { norm == .linf ? "pgd" : "pgd-l2" }

    public init(epsilon: Float = 0.1, alpha: Float? = nil, steps: Int = 40, norm: Norm = .linf, randomStart: Bool = true,
                restarts: Int = 1, earlyStop: Bool = false) {
        self.epsilon = epsilon
        self.steps = steps
        self.alpha = alpha ?? 2.5 * epsilon / Float(max(steps, 1))  // Madry et al.: 2.5 ε / steps
        self.norm = norm
        self.randomStart = randomStart
        self.restarts = restarts
        self.earlyStop = earlyStop
    }

    public func validate() throws {
        try checkEpsilon(epsilon)
        try checkEpsilon(alpha, "alpha")
        try checkSteps(steps)
        try checkSteps(restarts, "restarts")
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let loss = AttackLoss()
        var best = batch.images
        var bestLoss = [Float](repeating: -.infinity, count: batch.count)
        var bestReached = [Bool](repeating: false, count: batch.count)
        let d = batch.images.shape.itemCount
        for restart in 0..<restarts {
            var x = start(batch, restart: restart)
            var frozen = [Bool](repeating: false, count: batch.count)
            for _ in 0..<steps {
                let e = loss.evaluate(model, x, batch)
                var g = e.gradient
                if earlyStop {
                    let reached = batch.reached(e.logits)
                    for i in 0..<batch.count where reached[i] { frozen[i] = true }
                    if frozen.allSatisfy({ $0 }) { break }
                    if frozen.contains(true) {
                        g.makeUnique()
                        for i in 0..<batch.count where frozen[i] { (g.storage.pointer + i * d).update(repeating: 0, count: d) }
                    }
                }
                step(&x, g, batch)
            }
            if restarts == 1 { return x }
            // Keep, per image, a restart that reached the goal, else the one with the highest loss.
            let e = loss.evaluate(model, x, batch)
            let reached = batch.reached(e.logits)
            best.makeUnique()
            for i in 0..<batch.count {
                let l = e.losses.storage.pointer[i] * (batch.targets == nil ? 1 : -1)
                if !bestReached[i] && (reached[i] || l > bestLoss[i]) {
                    (best.storage.pointer + i * d).update(from: x.storage.pointer + i * d, count: d)
                    bestLoss[i] = l
                    bestReached[i] = reached[i]
                }
            }
        }
        return best
    }

    func start(_ batch: AttackBatch, restart: Int) -> Tensor {
        var x = batch.images
        guard randomStart && epsilon > 0 else { return x }
        let d = x.shape.itemCount
        var noise = Tensor(uninitialized: x.shape)
        let offset = UInt64(batch.offset * d)
        switch norm {
        case .linf:
            Kernels.randomUniform(&noise, seed: batch.seed, stream: 0x5047_0000 &+ UInt64(restart), offset: offset, lo: -epsilon, hi: epsilon)
            x = x + noise
            Kernels.projectLinf(&x, origin: batch.images, epsilon: epsilon, lo: batch.bounds.lo, hi: batch.bounds.hi)
        case .l2:
            Kernels.randomNormal(&noise, seed: batch.seed, stream: 0x5032_0000 &+ UInt64(restart), offset: offset, mean: 0, std: 1)
            var radius = Tensor(uninitialized: [batch.count])
            Kernels.randomUniform(&radius, seed: batch.seed, stream: 0x5052_0000 &+ UInt64(restart), offset: UInt64(batch.offset), lo: 0, hi: epsilon)
            let p = noise.storage.pointer
            for i in 0..<batch.count {
                var s: Float = 0
                for j in 0..<d { s += p[i * d + j] * p[i * d + j] }
                let f = radius.storage.pointer[i] / max(s.squareRoot(), 1e-12)
                for j in 0..<d { p[i * d + j] *= f }
            }
            x = x + noise
            Kernels.projectL2(&x, origin: batch.images, epsilon: epsilon, lo: batch.bounds.lo, hi: batch.bounds.hi)
        }
        return x
    }

    func step(_ x: inout Tensor, _ g: Tensor, _ batch: AttackBatch) {
        switch norm {
        case .linf:
            Kernels.linfStep(&x, gradient: g, origin: batch.images, alpha: alpha, epsilon: epsilon, lo: batch.bounds.lo, hi: batch.bounds.hi)
        case .l2:
            Kernels.l2Step(&x, gradient: g, origin: batch.images, alpha: alpha, epsilon: epsilon, lo: batch.bounds.lo, hi: batch.bounds.hi)
        }
    }
}
