import Foundation

/// Any composition of AdvKit's layers as an image classifier: images (N, C, H, W) → `body` → logits (N, classes).
/// It is predicted, attacked, trained by `Trainer` (with checkpoints and resume), saved and loaded like the built-in
/// architectures (`Model` is a `Network` whose body is one of them). Its tensors are named by the body, as in
/// PyTorch: a `Sequential` child "stem" owns "stem.weight".
///
/// ```swift
/// var rng = TorchGenerator(seed: 0)
/// let body = Sequential([
///     ("stem", Conv2D(inputChannels: 1, outputChannels: 8, kernelSize: 3, padding: 1, rng: &rng)), ("act", ReLU()),
///     ("block", Residual(body: Sequential([
///         ("conv", Conv2D(inputChannels: 8, outputChannels: 8, kernelSize: 3, padding: 1, rng: &rng)),
///         ("bn", BatchNorm2D(features: 8))]))),
///     ("pool", AvgPool2D(kernelSize: 2)), ("flatten", Flatten()),
///     ("fc", Linear(inputFeatures: 8 * 14 * 14, outputFeatures: 10, rng: &rng)),
/// ])
/// let net = Network(body, inputShape: [1, 28, 28], classes: 10)
/// try Trainer(model: net, configuration: config).fit(train, checkpoint: "net.safetensors")
/// let adversarial = try PGD(epsilon: 0.1).generate(net, images: x, labels: y)
/// ```
public class Network: TrainableClassifier {
    /// The layers from images to logits.
    public let body: Layer
    /// (C, H, W) of one image.
    public let inputShape: Shape
    public let classCount: Int

    /// `body` must map images (N, `inputShape`) to logits (N, `classes`); that is checked on every call. Its tensor
    /// names must be distinct (they key checkpoints and saved files).
    public init(_ body: Layer, inputShape: Shape, classes: Int) {
        precondition(inputShape.rank == 3 && inputShape.count > 0, "inputShape must be (C, H, W), got \(inputShape)")
        precondition(classes >= 2, "a classifier needs at least 2 classes, got \(classes)")
        let names = body.namedTensors.map(\.name)
        var seen = Set<String>()
        let repeated = names.filter { !seen.insert($0).inserted }
        precondition(repeated.isEmpty, "the network's tensor names must be distinct; repeated: \(repeated.joined(separator: ", "))")
        self.body = body
        self.inputShape = inputShape
        self.classCount = classes
    }

    public func callAsFunction(_ x: Variable) -> Variable {
        precondition(x.shape.rank == 4 && Shape(Array(x.shape.dims.dropFirst())) == inputShape,
                     "the model takes images of shape (N, \(inputShape[0]), \(inputShape[1]), \(inputShape[2])), got \(x.shape)")
        let z = body(x)
        precondition(z.shape.rank == 2 && z.shape[0] == x.shape[0] && z.shape[1] == classCount,
                     "the network's layers map \(x.shape) to \(z.shape); a classifier of \(classCount) classes gives (\(x.shape[0]), \(classCount))")
        return z
    }

    public var namedTensors: [(name: String, tensor: NamedTensor)] { body.namedTensors }

    /// Logits (N, classes) for a batch of images, in inference mode, in batches of `batchSize` (`logits(of:)`).
    public func logits(_ images: Tensor, batchSize: Int = 256) -> Tensor {
        precondition(batchSize > 0, "batchSize must be > 0, got \(batchSize)")
        return logits(of: images, batchSize: batchSize)
    }
}
