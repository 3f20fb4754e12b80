import Foundation

/// Settings of a training run.
public struct TrainingConfiguration: Sendable {
    public var epochs: Int = 1
    public var batchSize: Int = 64
    public var learningRate: Float = 1e-3
    public var optimizer: OptimizerKind = .adam
    public var momentum: Float = 0.9
    public var weightDecay: Float = 0
    public var schedule: LearningRateSchedule = .constant
    public var labelSmoothing: Float = 0
    /// Seed of the shuffling (and of anything random a loss does).
    public var seed: UInt64 = 0
    public var progress: ProgressReporter.Style = .automatic

    public enum OptimizerKind: String, CaseIterable, Sendable { case sgd, adam }

    public init() {}

    /// Checks every value; the error names the bad one.
    public func validate() throws {
        guard epochs >= 1 else { throw AdvKitError.invalidArgument("epochs must be >= 1, got \(epochs)") }
        guard batchSize >= 1 else { throw AdvKitError.invalidArgument("batch size must be >= 1, got \(batchSize)") }
        guard learningRate.isFinite && learningRate > 0 else { throw AdvKitError.invalidArgument("learning rate must be > 0, got \(learningRate)") }
        guard momentum.isFinite && momentum >= 0 && momentum < 1 else { throw AdvKitError.invalidArgument("momentum must be in [0, 1), got \(momentum)") }
        guard weightDecay.isFinite && weightDecay >= 0 else { throw AdvKitError.invalidArgument("weight decay must be >= 0, got \(weightDecay)") }
        guard labelSmoothing >= 0 && labelSmoothing < 1 else { throw AdvKitError.invalidArgument("label smoothing must be in [0, 1), got \(labelSmoothing)") }
    }

    func makeOptimizer() -> Optimizer {
        switch optimizer {
        case .adam: return Adam(learningRate: learningRate, weightDecay: weightDecay)
        case .sgd: return SGD(learningRate: learningRate, momentum: momentum, weightDecay: weightDecay)
        }
    }
}

/// One minibatch as the loss sees it.
public struct TrainingBatch {
    public var images: Tensor
    public var labels: [Int32]
    /// The batch's index over the whole run (epoch · batches per epoch + batch): random draws keyed by it are
    /// the same after a resume as in an uninterrupted run.
    public var step: Int
    public var epoch: Int
}

/// One epoch's record.
public struct EpochReport: Sendable, Codable {
    public var epoch: Int
    public var trainLoss: Double
    public var testAccuracy: Double?
    public var learningRate: Float
    public var seconds: Double
}

/// Mini-batch training of any `TrainableClassifier` (a built-in `Model`, a `Network` of layers, an imported
/// `ONNXClassifier`): seeded shuffling, a loss per batch on a `.training` tape, an optimizer step on every trainable
/// tensor, per-epoch loss and test accuracy, progress, and a checkpoint after each epoch.
///
/// ```swift
/// var config = TrainingConfiguration(); config.epochs = 1
/// let trainer = Trainer(model: model, configuration: config)
/// let history = try trainer.fit(train, test: test, checkpoint: "model.safetensors")
/// ```
public final class Trainer {
    public let model: TrainableClassifier
    public let configuration: TrainingConfiguration
    public let optimizer: Optimizer
    /// The loss of one batch as a scalar on the tape (default: mean cross-entropy with the configured label
    /// smoothing). Defenses replace it (adversarial training, VAT, ...).
    public var batchLoss: (Tape, TrainableClassifier, TrainingBatch) -> Variable

    public init(model: TrainableClassifier, configuration: TrainingConfiguration) {
        self.model = model
        self.configuration = configuration
        self.optimizer = configuration.makeOptimizer()
        let smoothing = configuration.labelSmoothing
        batchLoss = { tape, model, batch in
            tape.crossEntropy(model(tape.input(batch.images)), labels: batch.labels, labelSmoothing: smoothing).mean()
        }
    }

    /// The order of the examples in `epoch` (counted from 0): the `epoch + 1`-th `torch.randperm(count, generator=g)`
    /// of a generator seeded with `seed`, the order a PyTorch loop that shuffles with its own generator visits.
    public static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var rng = TorchGenerator(seed: seed)
        for _ in 0..<epoch { _ = rng.permutation(count) }
        return rng.permutation(count)
    }

    /// The file beside a checkpoint that holds everything a resume needs: the weights, the optimizer's state and
    /// the epochs done. (The checkpoint itself stays plain weights, loadable by PyTorch.)
    public static func stateFile(for checkpoint: String) -> String { checkpoint + ".state" }

    /// Trains for the configured epochs. `checkpoint`, if given, is rewritten (atomically) after each epoch,
    /// together with its state file. With `resume`, training continues after the last epoch the state file
    /// records, and ends with the same weights as an uninterrupted run (same seed and thread count; tested).
    @discardableResult
    public func fit(_ train: Dataset, test: Dataset? = nil, checkpoint: String? = nil, resume: Bool = false,
                    onEpoch: ((EpochReport) -> Void)? = nil) throws -> [EpochReport] {
        var startEpoch = 0
        if resume {
            guard let checkpoint else { throw AdvKitError.invalidArgument("resuming needs the checkpoint's path") }
            startEpoch = try restore(from: Trainer.stateFile(for: checkpoint))
        }
        try configuration.validate()
        guard train.count > 0 else { throw AdvKitError.invalidData("the training set is empty") }
        guard train.imageShape == model.inputShape else {
            throw AdvKitError.invalidData("the training images have shape \(train.imageShape), the model takes \(model.inputShape)")
        }
        guard train.classCount <= model.classCount else {
            throw AdvKitError.invalidData("the data has \(train.classCount) classes, the model \(model.classCount)")
        }
        let params = model.parameters
        let tape = Tape(mode: .training)
        var history: [EpochReport] = []
        let bs = configuration.batchSize
        let batches = (train.count + bs - 1) / bs
        for epoch in startEpoch..<configuration.epochs {
            let started = Date()
            optimizer.learningRate = configuration.schedule.rate(base: configuration.learningRate, epoch: epoch)
            let order = Trainer.permutation(count: train.count, seed: configuration.seed, epoch: epoch)
            let progress = ProgressReporter("epoch \(epoch + 1)/\(configuration.epochs)", total: batches, style: configuration.progress)
            var lossSum = 0.0
            for b in 0..<batches {
                let idx = Array(order[(b * bs)..<Swift.min((b + 1) * bs, train.count)])
                let x = train.images.gather(idx)
                let y = idx.map { train.labels[$0] }
                tape.reset()
                tape.mode = .training
                let loss = batchLoss(tape, model, TrainingBatch(images: x, labels: y, step: epoch * batches + b, epoch: epoch))
                let value = loss.value.scalar
                guard value.isFinite else {
                    throw AdvKitError.invalidData("the training loss became \(value) at epoch \(epoch + 1), batch \(b + 1): lower the learning rate")
                }
                lossSum += Double(value) * Double(idx.count)
                let grads = tape.gradients(of: loss, wrt: params)
                optimizer.step(params, gradients: grads)
                progress.update(b + 1, status: String(format: "loss %.4f", lossSum / Double(Swift.min((b + 1) * bs, train.count))))
            }
            let accuracy = test.map { model.accuracy($0.images, labels: $0.labels) }
            let report = EpochReport(epoch: epoch + 1, trainLoss: lossSum / Double(train.count), testAccuracy: accuracy,
                                     learningRate: optimizer.learningRate, seconds: Date().timeIntervalSince(started))
            progress.finish(String(format: "train loss %.4f", report.trainLoss)
                            + (accuracy.map { String(format: ", test accuracy %.2f%%", $0 * 100) } ?? "")
                            + String(format: ", %.1fs", report.seconds))
            history.append(report)
            if let checkpoint {
                var metadata = ["epoch": String(epoch + 1)]
                if let builtIn = model as? Model { metadata["arch"] = builtIn.architecture.rawValue }
                try model.save(to: checkpoint, metadata: metadata)
                let named = model.stateDict
                let tensors = named.map { ("model." + $0.name, $0.tensor.value) } + optimizer.state(named)
                try Safetensors.write(tensors, metadata: ["epochs_done": String(epoch + 1), "seed": String(configuration.seed)],
                                      to: Trainer.stateFile(for: checkpoint))
            }
            onEpoch?(report)
        }
        return history
    }

    /// Loads weights and optimizer state from a state file; returns the number of epochs it records as done.
    func restore(from path: String) throws -> Int {
        guard FileManager.default.fileExists(atPath: path) else {
            throw AdvKitError.io(path: path, reason: "no checkpoint state to resume from (train once with a checkpoint first)")
        }
        let file = try Safetensors.read(path)
        guard let done = file.metadata["epochs_done"].flatMap(Int.init), done >= 0 else {
            throw AdvKitError.invalidFile(path: path, reason: "not a training state file (no epochs_done)")
        }
        if let seed = file.metadata["seed"], seed != String(configuration.seed) {
            throw AdvKitError.invalidArgument("the checkpoint was trained with seed \(seed), not \(configuration.seed): resume with the same settings")
        }
        var weights: [String: Tensor] = [:]
        for (k, v) in file.tensors where k.hasPrefix("model.") { weights[String(k.dropFirst(6))] = v }
        try model.load(weights, path: path)
        try optimizer.restore(file.tensors, model.stateDict)
        guard done < configuration.epochs else {
            throw AdvKitError.invalidArgument("the checkpoint already has \(done) epoch(s) of the \(configuration.epochs) asked: nothing to resume")
        }
        return done
    }
}
