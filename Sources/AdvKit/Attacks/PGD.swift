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
    public var settings: [String: SettingValue] {
        ["epsilon": .float(epsilon), "alpha": .float(alpha), "steps": .int(steps), "norm": .string(norm.rawValue),
         "random_start": .bool(randomStart), "restarts": .int(restarts), "early_stop": .bool(earlyStop)]
    }

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
        var worst = WorstCase(batch.images)
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
                norm.step(&x, gradient: g, origin: batch.images, alpha: alpha, epsilon: epsilon, bounds: batch.bounds)
            }
            if restarts == 1 { return x }
            // Keep, per image, a restart that reached the goal, else the one with the highest loss.
            let e = loss.evaluate(model, x, batch)
            worst.offer(x, losses: batch.ascending(e.losses), reached: batch.reached(e.logits))
        }
        return worst.images
    }

    /// The starting point of restart `restart`: the clean images, or a random point of the ball.
    func start(_ batch: AttackBatch, restart: Int) -> Tensor {
        guard randomStart else { return batch.images }
        return norm.randomStart(batch, epsilon: epsilon, stream: (norm == .linf ? 0x5047_0000 : 0x5032_0000) &+ UInt64(restart))
    }
}
