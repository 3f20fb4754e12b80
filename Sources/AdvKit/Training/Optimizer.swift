import Foundation

/// Updates parameters from their gradients.
public protocol Optimizer: AnyObject {
    /// The learning rate of the next step (a schedule may change it between epochs).
    var learningRate: Float { get set }
    /// One update of each parameter with its gradient, in the same order.
    func step(_ parameters: [Parameter], gradients: [Tensor])
    /// The optimizer's state (moments, velocities, step counts) under names derived from the parameters' names,
    /// for a checkpoint that resumes exactly.
    func state(_ parameters: [(name: String, tensor: Parameter)]) -> [(String, Tensor)]
    /// Restores what `state` saved.
    func restore(_ tensors: [String: Tensor], _ parameters: [(name: String, tensor: Parameter)]) throws
}

/// Stochastic gradient descent with momentum and weight decay, as torch.optim.SGD:
/// g ← ∇ + λp;  v ← μv + g;  p ← p − ηv.
public final class SGD: Optimizer {
    public var learningRate: Float
    public let momentum: Float, weightDecay: Float
    private var velocity: [ObjectIdentifier: Tensor] = [:]

    public init(learningRate: Float = 0.01, momentum: Float = 0, weightDecay: Float = 0) {
        precondition(learningRate > 0 && momentum >= 0 && weightDecay >= 0, "SGD: lr must be > 0, momentum and weight decay >= 0")
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    public func step(_ parameters: [Parameter], gradients: [Tensor]) {
        precondition(parameters.count == gradients.count, "\(parameters.count) parameters, \(gradients.count) gradients")
        for (p, g) in zip(parameters, gradients) {
            let id = ObjectIdentifier(p)
            let first = velocity[id] == nil
            var v = velocity.removeValue(forKey: id) ?? Tensor(zeros: p.value.shape)
            Kernels.sgdStep(param: &p.value, velocity: &v, grad: g, lr: learningRate, momentum: momentum,
                            weightDecay: weightDecay, first: first)
            velocity[id] = v
        }
    }

    public func state(_ parameters: [(name: String, tensor: Parameter)]) -> [(String, Tensor)] {
        parameters.compactMap { p in velocity[ObjectIdentifier(p.tensor)].map { ("sgd.velocity." + p.name, $0) } }
    }

    public func restore(_ tensors: [String: Tensor], _ parameters: [(name: String, tensor: Parameter)]) throws {
        velocity = [:]
        for p in parameters {
            if let v = tensors["sgd.velocity." + p.name] {
                guard v.shape == p.tensor.value.shape else { throw AdvKitError.invalidData("the checkpoint's velocity of \(p.name) has shape \(v.shape)") }
                velocity[ObjectIdentifier(p.tensor)] = v
            }
        }
    }
}

/// Adam (Kingma & Ba 2015), as torch.optim.Adam: m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
/// p ← p − η m̂ / (√v̂ + ε) with bias-corrected m̂, v̂.
public final class Adam: Optimizer {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    private var state: [ObjectIdentifier: (m: Tensor, v: Tensor, t: Int)] = [:]

    public init(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8,
                weightDecay: Float = 0) {
        precondition(learningRate > 0, "Adam: lr must be > 0, got \(learningRate)")
        precondition((0..<1).contains(beta1) && (0..<1).contains(beta2), "Adam: betas must be in [0, 1)")
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    public func step(_ parameters: [Parameter], gradients: [Tensor]) {
        precondition(parameters.count == gradients.count, "\(parameters.count) parameters, \(gradients.count) gradients")
        for (p, g) in zip(parameters, gradients) {
            let id = ObjectIdentifier(p)
            var s = state.removeValue(forKey: id) ?? (Tensor(zeros: p.value.shape), Tensor(zeros: p.value.shape), 0)
            s.t += 1
            Kernels.adamStep(param: &p.value, m: &s.m, v: &s.v, grad: g, lr: learningRate, beta1: beta1, beta2: beta2,
                             eps: epsilon, weightDecay: weightDecay, step: s.t)
            state[id] = s
        }
    }

    public func state(_ parameters: [(name: String, tensor: Parameter)]) -> [(String, Tensor)] {
        parameters.flatMap { p -> [(String, Tensor)] in
            guard let s = state[ObjectIdentifier(p.tensor)] else { return [] }
            return [("adam.m." + p.name, s.m), ("adam.v." + p.name, s.v), ("adam.t." + p.name, Tensor([Float(s.t)]))]
        }
    }

    public func restore(_ tensors: [String: Tensor], _ parameters: [(name: String, tensor: Parameter)]) throws {
        state = [:]
        for p in parameters {
            guard let m = tensors["adam.m." + p.name], let v = tensors["adam.v." + p.name], let t = tensors["adam.t." + p.name] else { continue }
            guard m.shape == p.tensor.value.shape, v.shape == m.shape, t.count == 1 else {
                throw AdvKitError.invalidData("the checkpoint's Adam state of \(p.name) does not match the model")
            }
            state[ObjectIdentifier(p.tensor)] = (m, v, Int(t.scalar))
        }
    }
}

/// The learning rate for each epoch.
public enum LearningRateSchedule: Equatable, Sendable {
    case constant
    /// Multiply by `factor` every `every` epochs.
    case step(every: Int, factor: Float)
    /// Cosine annealing from the base rate to 0 over `epochs`.
    case cosine(epochs: Int)

    public func rate(base: Float, epoch: Int) -> Float {
        switch self {
        case .constant: return base
        case let .step(every, factor): return base * pow(factor, Float(epoch / Swift.max(every, 1)))
        case let .cosine(epochs): return base * 0.5 * (1 + cos(Float.pi * Float(epoch) / Float(Swift.max(epochs, 1))))
        }
    }
}
