import Foundation

/// The architectures AdvKit builds, named like their PyTorch twins.
public enum Architecture: String, CaseIterable, Sendable {
    /// The reference CNN: conv1 Conv2d(C,32,5) → ReLU → MaxPool(2) → conv2 Conv2d(32,64,5) → ReLU → MaxPool(2)
    /// → flatten → fc1 Linear(·,128) → ReLU → fc2 Linear(128,classes).
    case cnn
    /// fc1 Linear(C·H·W, 256) → ReLU → fc2 Linear(256, 128) → ReLU → fc3 Linear(128, classes).
    case mlp
    /// A small ResNet (He et al. 2016): a 3×3 stem and three residual stages of 16, 32, 64 channels with batch
    /// norm, global average pooling, and fc. For transfer attacks and CIFAR-10.
    case resnet
}

/// The hidden-layer activation: ReLU, or the bounded ReLU min(max(x,0),t) of Zantedeschi et al. 2017.
public enum Activation: Equatable, Sendable {
    case relu
    case boundedReLU(Float)

    func layer() -> Layer {
        switch self {
        case .relu: return ReLU()
        case let .boundedReLU(t): return BoundedReLU(bound: t)
        }
    }
}

/// One of the built-in architectures as an image classifier: a `Network` from images (N, C, H, W) to logits
/// (N, classes) whose layers are built from the `Architecture`, with PyTorch's names and initial weights. For any
/// other composition of layers, use `Network`.
///
/// ```swift
/// var rng = TorchGenerator(seed: 0)          // torch.manual_seed(0): PyTorch's initial weights
/// let model = Model(.cnn, inputShape: [1, 28, 28], classes: 10, rng: &rng)
/// let logits = model.logits(images)           // inference
/// let tape = Tape(); let z = model(tape.input(images))  // differentiable
/// ```
public final class Model: Network {
    public let architecture: Architecture
    /// The layers (the same object as `body`).
    public let network: Sequential
    public let activation: Activation

    public init(_ architecture: Architecture, inputShape: Shape, classes: Int, activation: Activation = .relu,
                rng: inout TorchGenerator) {
        precondition(inputShape.rank == 3 && inputShape.count > 0, "inputShape must be (C, H, W), got \(inputShape)")
        precondition(classes >= 2, "a classifier needs at least 2 classes, got \(classes)")
        self.architecture = architecture
        self.activation = activation
        switch architecture {
        case .cnn: network = Model.referenceCNN(inputShape, classes, activation, &rng)
        case .mlp: network = Model.mlp(inputShape, classes, activation, &rng)
        case .resnet: network = Model.resnet(inputShape, classes, activation, &rng)
        }
        super.init(network, inputShape: inputShape, classes: classes)
    }

    /// Throws a clear error when `architecture` cannot be built for images of `inputShape` (C, H, W) with `classes`
    /// classes (the initialiser's preconditions, for shapes that come from data or a user).
    public static func validate(_ architecture: Architecture, inputShape: Shape, classes: Int) throws {
        guard inputShape.rank == 3, inputShape.count > 0 else {
            throw AdvKitError.invalidData("images must be (C, H, W) each, got \(inputShape)")
        }
        guard classes >= 2 else { throw AdvKitError.invalidData("a classifier needs at least 2 classes, got \(classes)") }
        switch architecture {
        case .cnn:
            guard convPool(convPool(inputShape[1], 5), 5) >= 1, convPool(convPool(inputShape[2], 5), 5) >= 1 else {
                throw AdvKitError.invalidData("the reference CNN (--arch cnn) needs images of at least 16×16, got \(inputShape[1])×\(inputShape[2])")
            }
        case .mlp:
            break
        case .resnet:
            guard (inputShape[1] + 3) / 4 == (inputShape[2] + 3) / 4 else {
                throw AdvKitError.invalidData("the ResNet (--arch resnet) needs square images, got \(inputShape[1])×\(inputShape[2])")
            }
        }
    }

    /// A convenience: a model initialised from `seed`, as `torch.manual_seed(seed)` then the PyTorch module would be.
    public convenience init(_ architecture: Architecture, inputShape: Shape = [1, 28, 28], classes: Int = 10,
                            activation: Activation = .relu, seed: UInt64 = 0) {
        var rng = TorchGenerator(seed: seed)
        self.init(architecture, inputShape: inputShape, classes: classes, activation: activation, rng: &rng)
    }

    // MARK: architectures

    /// Spatial size after a valid k×k convolution and a 2×2 pool.
    private static func convPool(_ s: Int, _ k: Int) -> Int { (s - k + 1) / 2 }

    static func referenceCNN(_ input: Shape, _ classes: Int, _ act: Activation, _ rng: inout TorchGenerator) -> Sequential {
        let c = input[0], h = convPool(convPool(input[1], 5), 5), w = convPool(convPool(input[2], 5), 5)
        precondition(h >= 1 && w >= 1, "the reference CNN needs images of at least 16×16, got \(input)")
        return Sequential([
            ("conv1", Conv2D(inputChannels: c, outputChannels: 32, kernelSize: 5, rng: &rng)),
            ("act1", act.layer()),
            ("pool1", MaxPool2D(kernelSize: 2)),
            ("conv2", Conv2D(inputChannels: 32, outputChannels: 64, kernelSize: 5, rng: &rng)),
            ("act2", act.layer()),
            ("pool2", MaxPool2D(kernelSize: 2)),
            ("flatten", Flatten()),
            ("fc1", Linear(inputFeatures: 64 * h * w, outputFeatures: 128, rng: &rng)),
            ("act3", act.layer()),
            ("fc2", Linear(inputFeatures: 128, outputFeatures: classes, rng: &rng)),
        ])
    }

    static func mlp(_ input: Shape, _ classes: Int, _ act: Activation, _ rng: inout TorchGenerator) -> Sequential {
        Sequential([
            ("flatten", Flatten()),
            ("fc1", Linear(inputFeatures: input.count, outputFeatures: 256, rng: &rng)),
            ("act1", act.layer()),
            ("fc2", Linear(inputFeatures: 256, outputFeatures: 128, rng: &rng)),
            ("act2", act.layer()),
            ("fc3", Linear(inputFeatures: 128, outputFeatures: classes, rng: &rng)),
        ])
    }

    static func resnet(_ input: Shape, _ classes: Int, _ act: Activation, _ rng: inout TorchGenerator) -> Sequential {
        func block(_ cin: Int, _ cout: Int, stride: Int) -> Residual {
            let body = Sequential([
                ("conv1", Conv2D(inputChannels: cin, outputChannels: cout, kernelSize: 3, stride: stride, padding: 1,
                                 bias: false, rng: &rng)),
                ("bn1", BatchNorm2D(features: cout)),
                ("act", act.layer()),
                ("conv2", Conv2D(inputChannels: cout, outputChannels: cout, kernelSize: 3, padding: 1, bias: false,
                                 rng: &rng)),
                ("bn2", BatchNorm2D(features: cout)),
            ])
            var shortcut: Sequential?
            if stride != 1 || cin != cout {
                shortcut = Sequential([
                    ("0", Conv2D(inputChannels: cin, outputChannels: cout, kernelSize: 1, stride: stride, bias: false,
                                 rng: &rng)),
                    ("1", BatchNorm2D(features: cout)),
                ])
            }
            return Residual(body: body, shortcut: shortcut, activation: act.layer())
        }
        let h = (input[1] + 3) / 4, w = (input[2] + 3) / 4  // two stride-2 stages with padding 1
        precondition(h == w, "the ResNet needs square images, got \(input)")
        return Sequential([
            ("conv1", Conv2D(inputChannels: input[0], outputChannels: 16, kernelSize: 3, padding: 1, bias: false, rng: &rng)),
            ("bn1", BatchNorm2D(features: 16)),
            ("act", act.layer()),
            ("layer1", Sequential([("0", block(16, 16, stride: 1))])),
            ("layer2", Sequential([("0", block(16, 32, stride: 2))])),
            ("layer3", Sequential([("0", block(32, 64, stride: 2))])),
            ("avgpool", AvgPool2D(kernelSize: h)),
            ("flatten", Flatten()),
            ("fc", Linear(inputFeatures: 64, outputFeatures: classes, rng: &rng)),
        ])
    }
}
