/// Basic Iterative Method / I-FGSM (Kurakin, Goodfellow & Bengio 2017), and its momentum variant MI-FGSM
/// (Dong et al. 2018):
///
///     x₀ = x;   x_{k+1} = Π_{ε,[lo,hi]}(x_k + α·s(g_{k+1}))
///     BIM:      g_{k+1} = ∇ₓ L(x_k)
///     MI-FGSM:  g_{k+1} = μ·g_k + ∇ₓ L(x_k) / ‖∇ₓ L(x_k)‖₁      (per image)
///     s(g) = sign(g) (L∞), or g/‖g‖₂ per image (L2: iterated FGM, ART's BasicIterativeMethod generalised)
///
/// Π projects onto the ball of radius ε around x, then clips to the pixel bounds. Targeted goals descend
/// the target's cross-entropy instead. No random start (that is PGD).
/// - Parameters: epsilon (0.1), norm (.linf), alpha (L∞: ε/10; L2: ε/4), steps (L∞: min(ε·255 + 4, 1.25·ε·255)
///   rounded, Kurakin's rule for [0,1] pixels, at least 1; L2: 10 — Kurakin's rule counts pixel levels, which
///   means nothing for an L2 radius — so that α·steps = 2.5ε, Madry et al.'s margin), momentum μ (0: BIM; 1.0 is
///   Dong et al.'s choice; L∞ only).
public struct BIM: Attack {
    public var epsilon: Float
    public var alpha: Float
    public var steps: Int
    public var momentum: Float
    public var norm: Norm
    public var name: String { momentum == 0 ? (norm == .linf ? "bim" : "bim-l2") : "mifgsm" }
    public var settings: [String: SettingValue] {
        ["epsilon": .float(epsilon), "alpha": .float(alpha), "steps": .int(steps), "norm": .string(norm.rawValue),
         "momentum": .float(momentum)]
    }

    public init(epsilon: Float = 0.1, alpha: Float? = nil, steps: Int? = nil, momentum: Float = 0, norm: Norm = .linf) {
        self.epsilon = epsilon
        self.norm = norm
        switch norm {
        case .linf:
            self.alpha = alpha ?? epsilon / 10
            self.steps = steps ?? max(1, Int(min(epsilon * 255 + 4, 1.25 * epsilon * 255).rounded()))
        case .l2:
            self.alpha = alpha ?? epsilon / 4
            self.steps = steps ?? 10
        }
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
        guard momentum == 0 || norm == .linf else { throw AdvKitError.invalidArgument("MI-FGSM is an L-inf attack: use norm linf, or BIM / PGD for L2") }
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
                let l1 = perImageNorms(e.gradient).l1
                for i in 0..<batch.count {
                    let inv = l1[i] > 0 ? 1 / l1[i] : 0
                    for j in 0..<d { v[i * d + j] = momentum * v[i * d + j] + g[i * d + j] * inv }
                }
                direction = velocity
            }
            norm.step(&x, gradient: direction, origin: batch.images, alpha: alpha, epsilon: epsilon, bounds: batch.bounds)
        }
        return x
    }
}
