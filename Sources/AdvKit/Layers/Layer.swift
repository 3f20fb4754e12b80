import Foundation

/// A differentiable building block. Layers are reference types: a model and its optimizer share the
/// parameters, and a trained model is the same object you keep using.
public protocol Layer: AnyObject {
    /// Records the layer's computation on `x`'s tape.
    func callAsFunction(_ x: Variable) -> Variable
    /// Parameters and buffers by PyTorch's name within this layer ("weight", "bias", "running_mean", ...).
    var namedTensors: [(name: String, tensor: NamedTensor)] { get }
}

/// A tensor a layer owns: a trainable parameter, or a buffer that is saved but not trained
/// (BatchNorm's running statistics).
public enum NamedTensor {
    case parameter(Parameter)
    case buffer(Parameter)

    public var storage: Parameter {
        switch self { case let .parameter(p), let .buffer(p): return p }
    }

    public var isTrainable: Bool {
        if case .parameter = self { return true }
        return false
    }
}

extension Layer {
    public var namedTensors: [(name: String, tensor: NamedTensor)] { [] }

    /// The trainable parameters, in order.
    public var parameters: [Parameter] { namedTensors.filter { $0.tensor.isTrainable }.map { $0.tensor.storage } }

    /// Number of trainable scalars.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// Every parameter and buffer with its full PyTorch name ("conv1.weight").
    public var stateDict: [(name: String, tensor: Parameter)] { namedTensors.map { ($0.name, $0.tensor.storage) } }
}

/// PyTorch's default initialisation for Conv2d and Linear, drawn as PyTorch draws it: the weight by
/// `kaiming_uniform_(a = sqrt(5))` (uniform in ±sqrt(3)·gain/sqrt(fan_in), gain = sqrt(2/(1+a²)), which is
/// ±1/sqrt(fan_in) up to rounding), then the bias uniform in ±1/sqrt(fan_in). The bounds are computed in double
/// like Python's, so a `TorchGenerator` seeded as `torch.manual_seed` reproduces PyTorch's weights bit for bit.
enum Initializer {
    static func kaimingBound(fanIn: Int) -> Double {
        let a = 5.0.squareRoot()
        let gain = (2.0 / (1 + a * a)).squareRoot()
        return 3.0.squareRoot() * (gain / Double(fanIn).squareRoot())
    }

    static func biasBound(fanIn: Int) -> Double { 1 / Double(fanIn).squareRoot() }

    static func uniform(_ shape: Shape, bound: Double, rng: inout TorchGenerator) -> Tensor {
        let t = Tensor(uninitialized: shape)
        let p = t.storage.pointer
        for i in 0..<t.count { p[i] = rng.uniform(from: -bound, to: bound) }
        return t
    }
}

/// 2-D convolution (PyTorch's Conv2d): weight (out, in, k, k), bias (out).
public final class Conv2D: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int
    public let padding: Int

    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                bias: Bool = true, rng: inout TorchGenerator) {
        precondition(inputChannels > 0 && outputChannels > 0 && kernelSize > 0 && stride > 0 && padding >= 0,
                     "Conv2D: channels and kernel size must be > 0, stride > 0, padding >= 0")
        let fanIn = inputChannels * kernelSize * kernelSize
        weight = Parameter(Initializer.uniform([outputChannels, inputChannels, kernelSize, kernelSize],
                                               bound: Initializer.kaimingBound(fanIn: fanIn), rng: &rng))
        self.bias = bias ? Parameter(Initializer.uniform([outputChannels], bound: Initializer.biasBound(fanIn: fanIn), rng: &rng)) : nil
        self.stride = stride
        self.padding = padding
    }

    public func callAsFunction(_ x: Variable) -> Variable { callAsFunction(x, activation: .none) }

    /// The convolution with `activation` fused into its epilogue.
    public func callAsFunction(_ x: Variable, activation: FusedActivation) -> Variable {
        let t = x.tape
        return t.conv2d(x, weight: t.parameter(weight), bias: bias.map { t.parameter($0) }, stride: stride, padding: padding,
                        activation: activation)
    }

    /// The layer with `activation` fused, then a 2x2 stride-2 max-pool, in one kernel call (`Tape.conv2dMaxPool2x2`).
    public func maxPooled2x2(_ x: Variable, activation: FusedActivation) -> Variable {
        let t = x.tape
        return t.conv2dMaxPool2x2(x, weight: t.parameter(weight), bias: bias.map { t.parameter($0) }, stride: stride,
                                  padding: padding, activation: activation)
    }

    public var namedTensors: [(name: String, tensor: NamedTensor)] {
        [("weight", .parameter(weight))] + (bias.map { [("bias", .parameter($0))] } ?? [])
    }
}

/// Fully connected layer (PyTorch's Linear): weight (out, in), bias (out).
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?

    public init(inputFeatures: Int, outputFeatures: Int, bias: Bool = true, rng: inout TorchGenerator) {
        precondition(inputFeatures > 0 && outputFeatures > 0, "Linear: feature counts must be > 0")
        weight = Parameter(Initializer.uniform([outputFeatures, inputFeatures],
                                               bound: Initializer.kaimingBound(fanIn: inputFeatures), rng: &rng))
        self.bias = bias ? Parameter(Initializer.uniform([outputFeatures], bound: Initializer.biasBound(fanIn: inputFeatures),
                                                         rng: &rng)) : nil
    }

    public func callAsFunction(_ x: Variable) -> Variable { callAsFunction(x, activation: .none) }

    /// The layer with `activation` fused into its epilogue.
    public func callAsFunction(_ x: Variable, activation: FusedActivation) -> Variable {
        let t = x.tape
        let input = x.shape.rank == 2 ? x : t.flatten(x)
        return t.linear(input, weight: t.parameter(weight), bias: bias.map { t.parameter($0) }, activation: activation)
    }

    public var namedTensors: [(name: String, tensor: NamedTensor)] {
        [("weight", .parameter(weight))] + (bias.map { [("bias", .parameter($0))] } ?? [])
    }
}

public final class ReLU: Layer {
    public init() {}
    var fused: FusedActivation { .relu }
    public func callAsFunction(_ x: Variable) -> Variable { x.tape.relu(x) }
}

/// min(max(x, 0), t): bounded ReLU (Zantedeschi, Nicolae & Rawat 2017), a defense that caps how far an
/// activation can move.
public final class BoundedReLU: Layer {
    public let bound: Float
    public init(bound: Float = 1) {
        precondition(bound > 0, "BoundedReLU: the bound must be > 0, got \(bound)")
        self.bound = bound
    }
    public func callAsFunction(_ x: Variable) -> Variable { x.tape.boundedReLU(x, bound: bound) }
    var fused: FusedActivation { .boundedReLU(bound) }
}

public final class MaxPool2D: Layer {
    public let kernelSize: Int, stride: Int
    public init(kernelSize: Int, stride: Int? = nil) {
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
    }
    public func callAsFunction(_ x: Variable) -> Variable { x.tape.maxPool2d(x, kernel: kernelSize, stride: stride) }
}

public final class AvgPool2D: Layer {
    public let kernelSize: Int, stride: Int
    public init(kernelSize: Int, stride: Int? = nil) {
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
    }
    public func callAsFunction(_ x: Variable) -> Variable { x.tape.avgPool2d(x, kernel: kernelSize, stride: stride) }
}

public final class Flatten: Layer {
    public init() {}
    public func callAsFunction(_ x: Variable) -> Variable { x.tape.flatten(x) }
}

/// Inverted dropout: in training, zeroes each element with probability p and scales the rest by 1/(1-p);
/// the identity in inference. The mask comes from the counter-based generator: `seed`, then one stream per
/// call, so the same seed gives the same masks.
public final class Dropout: Layer {
    public let probability: Float
    public var seed: UInt64
    private var calls: UInt64 = 0

    public init(probability: Float = 0.5, seed: UInt64 = 0) {
        precondition(probability >= 0 && probability < 1, "Dropout: probability must be in [0, 1), got \(probability)")
        self.probability = probability
        self.seed = seed
    }

    public func callAsFunction(_ x: Variable) -> Variable {
        guard x.tape.mode == .training, probability > 0 else { return x }
        var mask = Tensor(uninitialized: x.shape)
        Kernels.randomUniform(&mask, seed: seed, stream: calls, lo: 0, hi: 1)
        calls += 1
        let keep = 1 - probability, scale = 1 / keep
        mask = mask.map { $0 < keep ? scale : 0 }
        return x.tape.multiply(x, by: mask)
    }
}

/// Batch normalisation over channels (PyTorch's BatchNorm2d; also takes (N, C) inputs): batch statistics
/// in training mode (updating the running ones with `momentum`), running statistics in inference.
public final class BatchNorm2D: Layer {
    public let weight: Parameter, bias: Parameter
    public let runningMean: Parameter, runningVar: Parameter
    public let momentum: Float, eps: Float

    public init(features: Int, momentum: Float = 0.1, eps: Float = 1e-5) {
        weight = Parameter(Tensor(repeating: 1, shape: [features]))
        bias = Parameter(Tensor(zeros: [features]))
        runningMean = Parameter(Tensor(zeros: [features]))
        runningVar = Parameter(Tensor(repeating: 1, shape: [features]))
        self.momentum = momentum
        self.eps = eps
    }

    public func callAsFunction(_ x: Variable) -> Variable {
        let t = x.tape
        precondition(x.shape.rank >= 2 && x.shape[1] == weight.value.count,
                     "BatchNorm2D: input \(x.shape) does not have \(weight.value.count) channels")
        let g = t.parameter(weight), b = t.parameter(bias)
        if t.mode == .training {
            let (y, mean, variance) = t.batchNormTraining(x, gamma: g, beta: b, eps: eps)
            // PyTorch keeps the unbiased variance in its running estimate.
            let m = Float(x.shape.count / x.shape[1])
            let unbiased = variance * (m / Swift.max(m - 1, 1))
            runningMean.value = runningMean.value * (1 - momentum) + mean * momentum
            runningVar.value = runningVar.value * (1 - momentum) + unbiased * momentum
            return y
        }
        var out = Tensor(uninitialized: x.shape)
        Kernels.batchNormEval(out: &out, input: x.value, gamma: weight.value, beta: bias.value,
                              runningMean: runningMean.value, runningVar: runningVar.value, eps: eps)
        let invstd = runningVar.value.map { 1 / ($0 + eps).squareRoot() }
        let scale = weight.value * invstd
        let c = x.shape[1], hw = x.shape.count(from: 2)
        return t.custom([x, g, b], value: out) { [xv = x.value, rm = runningMean.value] dy in
            // Inference-mode batch norm is affine per channel: y = scale (x - mean) + beta.
            var dx = Tensor(zeros: dy.shape), dg = Tensor(zeros: [c]), db = Tensor(zeros: [c])
            let n = dy.shape[0]
            let pdy = dy.storage.pointer, px = xv.storage.pointer
            dx.makeUnique(); dg.makeUnique(); db.makeUnique()
            for i in 0..<n {
                for ch in 0..<c {
                    let base = (i * c + ch) * hw
                    let s = scale.storage.pointer[ch], inv = invstd.storage.pointer[ch], mu = rm.storage.pointer[ch]
                    var sg: Float = 0, sb: Float = 0
                    for k in 0..<hw {
                        dx.storage.pointer[base + k] = s * pdy[base + k]
                        sg += pdy[base + k] * (px[base + k] - mu) * inv
                        sb += pdy[base + k]
                    }
                    dg.storage.pointer[ch] += sg
                    db.storage.pointer[ch] += sb
                }
            }
            return [dx, dg, db]
        }
    }

    public var namedTensors: [(name: String, tensor: NamedTensor)] {
        [("weight", .parameter(weight)), ("bias", .parameter(bias)),
         ("running_mean", .buffer(runningMean)), ("running_var", .buffer(runningVar))]
    }
}
