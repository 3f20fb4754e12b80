/// Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy 2015), and its L2 form, the Fast Gradient Method:
///
///     x' = clip(x + ε·sign(∇ₓ L(x, y)), lo, hi)                 L∞, untargeted
///     x' = clip(x + ε·∇ₓ L / ‖∇ₓ L‖₂, lo, hi)                   L2 (FGM, per image; no step where ∇ = 0)
///     x' = clip(x − ε·s(∇ₓ L(x, t)), lo, hi)                    targeted (class t), and least-likely (FGSM-LL,
///                                                               Kurakin et al. 2017: t = the least likely class)
///
/// L is the softmax cross-entropy. One gradient per image. The L2 form is ART's FastGradientMethod(norm=2).
/// - Parameters: epsilon, the radius (default 0.1 for [0,1] images); norm (.linf).
public struct FGSM: Attack {
    public var epsilon: Float
    public var norm: Norm
    public var name: String { norm == .linf ? "fgsm" : "fgm-l2" }
    public var settings: [String: SettingValue] { ["epsilon": .float(epsilon), "norm": .string(norm.rawValue)] }

    public init(epsilon: Float = 0.1, norm: Norm = .linf) {
        self.epsilon = epsilon
        self.norm = norm
    }

    public func validate() throws { try checkEpsilon(epsilon) }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let e = AttackLoss().evaluate(model, batch.images, batch)
        var x = batch.images
        norm.step(&x, gradient: e.gradient, origin: batch.images, alpha: epsilon, epsilon: epsilon, bounds: batch.bounds)
        return x
    }
}

/// R+FGSM (Tramèr et al. 2018): a random sign step of size α, then FGSM with the rest of the budget:
///
///     x̃ = clip(x + α·sign(N(0, I)));   x' = clip(x̃ + (ε − α)·sign(∇ₓ L(x̃, y)))
///
/// - Parameters: epsilon (default 0.1), alpha (default ε/2; must be < ε). The noise comes from the seed.
public struct RFGSM: Attack {
    public var epsilon: Float
    public var alpha: Float
    public var name: String { "rfgsm" }
    public var settings: [String: SettingValue] { ["epsilon": .float(epsilon), "alpha": .float(alpha), "norm": .string("linf")] }

    public init(epsilon: Float = 0.1, alpha: Float? = nil) {
        self.epsilon = epsilon
        self.alpha = alpha ?? epsilon / 2
    }

    public func validate() throws {
        try checkEpsilon(epsilon)
        try checkEpsilon(alpha, "alpha")
        guard alpha < epsilon || epsilon == 0 else { throw AdvKitError.invalidArgument("R+FGSM needs alpha < epsilon, got alpha \(alpha), epsilon \(epsilon)") }
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        var noise = Tensor(uninitialized: batch.images.shape)
        Kernels.randomNormal(&noise, seed: batch.seed, stream: 0x5246, offset: UInt64(batch.offset * batch.images.shape.itemCount), mean: 0, std: 1)
        var x = batch.images
        // The random step moves by α·sign(noise); a step of α with ε = α projects onto the same ball.
        Kernels.linfStep(&x, gradient: noise, origin: batch.images, alpha: alpha, epsilon: epsilon, lo: batch.bounds.lo, hi: batch.bounds.hi)
        let e = AttackLoss().evaluate(model, x, batch)
        Kernels.linfStep(&x, gradient: e.gradient, origin: batch.images, alpha: epsilon - alpha, epsilon: epsilon,
                         lo: batch.bounds.lo, hi: batch.bounds.hi)
        return x
    }
}
