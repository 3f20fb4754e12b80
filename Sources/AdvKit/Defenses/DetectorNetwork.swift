import Foundation

/// A detector network (Metzen et al. 2017; "a classifier confirms whether the input is a real image or a
/// fake one"): a binary classifier, class 0 clean and class 1 adversarial, trained on clean images and on
/// adversarial examples of the protected model. Inputs it flags are rejected.
public struct DetectorNetwork: Detector {
    /// The binary classifier: any trainable one (a built-in `Model`, a `Network` of layers, an imported graph).
    public let network: TrainableClassifier
    /// Flag when P(adversarial) exceeds this (0.5 by default; `calibrate` sets it for a false-positive rate).
    public var threshold: Float = 0.5

    public init(network: TrainableClassifier) {
        precondition(network.classCount == 2, "a detector has 2 classes (clean, adversarial), got \(network.classCount)")
        self.network = network
    }

    /// Trains a detector of a built-in architecture (the reference CNN by default, initialised from `seed`) on
    /// `images` (clean) and `attack`'s adversarial examples of them against `model`, shuffled together.
    public static func train(protecting model: Classifier, attack: Attack, images: Tensor, labels: [Int32],
                             architecture: Architecture = .cnn, configuration: TrainingConfiguration,
                             seed: UInt64 = 0) throws -> DetectorNetwork {
        try Model.validate(architecture, inputShape: model.inputShape, classes: 2)
        let network = Model(architecture, inputShape: model.inputShape, classes: 2, seed: seed)
        return try train(protecting: model, attack: attack, images: images, labels: labels, network: network,
                         configuration: configuration, seed: seed)
    }

    /// Trains `network` (2 classes, the protected model's image shape) as the detector on `images` (clean) and
    /// `attack`'s adversarial examples of them against `model`, shuffled together.
    public static func train(protecting model: Classifier, attack: Attack, images: Tensor, labels: [Int32],
                             network: TrainableClassifier, configuration: TrainingConfiguration,
                             seed: UInt64 = 0) throws -> DetectorNetwork {
        guard network.classCount == 2 else {
            throw AdvKitError.invalidArgument("a detector network has 2 classes (clean, adversarial), this one \(network.classCount)")
        }
        guard network.inputShape == model.inputShape else {
            throw AdvKitError.invalidArgument("the detector network takes images of shape \(network.inputShape), the protected model \(model.inputShape)")
        }
        let adversarial = try attack.generate(model, images: images, labels: labels, seed: seed)
        let n = labels.count
        let data = try Dataset(images: Tensor.concatenate([images, adversarial]),
                               labels: [Int32](repeating: 0, count: n) + [Int32](repeating: 1, count: n),
                               classNames: ["clean", "adversarial"], name: "detector (\(attack.name))")
        try Trainer(model: network, configuration: configuration).fit(data)
        return DetectorNetwork(network: network)
    }

    /// P(adversarial) per image.
    public func scores(_ images: Tensor) -> [Float] {
        let p = Kernels.softmax(network.logits(of: images))
        return (0..<images.shape[0]).map { p.storage.pointer[$0 * 2 + 1] }
    }

    public var isDifferentiable: Bool { true }

    /// CE(D(x), clean) per image: descending it makes the detector call x clean.
    public func evasionLoss(_ x: Variable) -> Variable? {
        x.tape.crossEntropy(network(x), labels: [Int32](repeating: 0, count: x.shape[0]))
    }
}

/// The adaptive attack on a detector-guarded model (Carlini & Wagner 2017, "Adversarial examples are not easily
/// detected"): PGD on the combined loss CE(f(x'), y) − λ·CE(D(x'), clean), which makes the model wrong and the
/// detector call the input clean at once (any differentiable `Detector`: −λ·its `evasionLoss`). L∞ ball of
/// radius ε, random start.
public struct DetectorAwarePGD: Attack {
    public let detector: any Detector
    public var epsilon: Float
    public var alpha: Float
    public var steps: Int
    public var lambda: Float
    public var name: String { "pgd+detector" }
    public var settings: [String: SettingValue] {
        ["epsilon": .float(epsilon), "alpha": .float(alpha), "steps": .int(steps), "lambda": .float(lambda),
         "norm": .string("linf"), "random_start": .bool(true)]
    }

    public init(detector: any Detector, epsilon: Float = 0.1, alpha: Float = 0.01, steps: Int = 40, lambda: Float = 1) {
        self.detector = detector
        self.epsilon = epsilon
        self.alpha = alpha
        self.steps = steps
        self.lambda = lambda
    }

    public func validate() throws {
        try checkEpsilon(epsilon); try checkEpsilon(alpha, "alpha"); try checkSteps(steps); try checkEpsilon(lambda, "lambda")
        guard detector.isDifferentiable else { throw AdvKitError.invalidArgument("pgd+detector needs a differentiable detector") }
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let loss = AttackLoss()
        let tape = Tape(mode: .inference)
        var x = PGD(epsilon: epsilon, steps: 1).start(batch, restart: 0)
        for _ in 0..<steps {
            let g = loss.evaluate(model, x, batch).gradient
            tape.reset()
            let v = tape.input(x)
            let gd = tape.gradient(of: detector.evasionLoss(v)!, wrt: v)
            tape.reset()
            var combined = g
            combined.add(gd, scaledBy: -lambda)
            Norm.linf.step(&x, gradient: combined, origin: batch.images, alpha: alpha, epsilon: epsilon, bounds: batch.bounds)
        }
        return x
    }
}
