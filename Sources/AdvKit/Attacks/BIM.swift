/// Basic Iterative Method / I-FGSM (Kurakin, Goodfellow & Bengio 2017), and its momentum variant MI-FGSM
/// (Dong et al. 2018):
///
///     x₀ = x;   x_{k+1} = Π_{ε,[lo,hi]}(x_k + α·sign(g_{k+1}))
///     BIM:      g_{k+1} = ∇ₓ L(x_k)
///     MI-FGSM:  g_{k+1} = μ·g_k + ∇ₓ L(x_k) / ‖∇ₓ L(x_k)‖₁      (per image)
///
/// Π projects onto the L∞ ball of radius ε around x, then clips to the pixel bounds. Targeted goals descend
/// the target's cross-entropy instead.
/// - Parameters: epsilon (0.1), alpha (ε/10), steps (min(ε·255 + 4, 1.25·ε·255) rounded, Kurakin's rule, at
///   least 1), momentum μ (0: BIM; 1.0 is Dong et al.'s choice).
public struct BIM: Attack {
    public var epsilon: Float
    public var alpha: Float
    public var steps: Int
    public var momentum: Float
    public var name: String { momentum == 0 ? "bim" : "mifgsm" }

    public init(epsilon: Float = 0.1, alpha: Float? = nil, steps: Int? = nil, momentum: Float = 0) {
        self.epsilon = epsilon
        self.alpha = alpha ?? epsilon / 10
        self.steps = steps ?? max(1, Int(min(epsilon * 255 + 4, 1.25 * epsilon * 255).rounded()))
        self.momentum = momentum
    }

    /// MI-FGSM with Dong et al.'s decay factor μ = 1.
    public static func momentum(epsilon: Float = 0.1, alpha: Float? = nil, steps: Int = 10, decay: Float = 1) -> BIM {
        BIM(epsilon: epsilon, alpha: alpha ?? epsilon / Float(steps), steps: steps, momentum: decay)
    }

    public func validate() throws {
        try checkEpsilon(epsilon)
        try checkEpsilon(alpha, "alpha")
        try checkSteps(steps)
        guard momentum.isFinite && momentum >= 0 else { throw AdvKitError.invalidArgument("momentum must be >= 0, got \(momentum)") }
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let loss = AttackLoss()
        var x = batch.images
        var velocity = momentum > 0 ? Tensor(zeros: x.shape) : Tensor(zeros: [0])
        let d = x.shape.itemCount
        for _ in 0..<steps {
            let e = loss.evaluate(model, x, batch)
            var direction = e.gradient
            if momentum > 0 {
                velocity.makeUnique()
                let v = velocity.storage.pointer, g = e.gradient.storage.pointer
                for i in 0..<batch.count {
                    var l1: Float = 0
                    for j in 0..<d { l1 += abs(g[i * d + j]) }
                    let inv = l1 > 0 ? 1 / l1 : 0
                    for j in 0..<d { v[i * d + j] = momentum * v[i * d + j] + g[i * d + j] * inv }
                }
                direction = velocity
            }
            Kernels.linfStep(&x, gradient: direction, origin: batch.images, alpha: alpha, epsilon: epsilon,
                             lo: batch.bounds.lo, hi: batch.bounds.hi)
        }
        return x
    }
}
