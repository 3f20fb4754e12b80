@_spi(Support) import AdvKit
import ArgumentParser
import Foundation

@main
struct AdvKitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "advkit",
        abstract: "Adversarial robustness of image classifiers: train, predict, attack.",
        subcommands: [Train.self, Predict.self, AttackCommand.self, Evaluate.self, Merge.self]
    )
}

/// Runs a command body, turning AdvKit's errors into a clear message and a non-zero exit.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as AdvKitError {
        throw ValidationFailure(message: e.description)
    }
}

struct ValidationFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

extension ValidationFailure: LocalizedError {
    var errorDescription: String? { description }
}

/// Options shared by every command that reads data.
struct DataOptions: ParsableArguments {
    @Option(help: "Dataset: fashion-mnist, mnist or cifar10.")
    var dataset: DatasetName = .fashionMNIST

    @Option(help: "Folder of the dataset's files (default: Debian's /usr/share/datasets/fashion-mnist for fashion-mnist).")
    var dataDir: String?

    @Option(help: "IDX images file (uint8, or float32 as `advkit attack` writes); replaces --dataset's test split.")
    var images: String?

    @Option(help: "IDX labels file, with --images.")
    var labels: String?

    @Option(help: "Use only the first N test images.")
    var limit: Int?

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be >= 1, got \(limit)") }
        if (images == nil) != (labels == nil) { throw ValidationError("--images and --labels go together") }
    }

    var classNames: [String] {
        switch dataset {
        case .fashionMNIST: return Dataset.fashionMNISTClasses
        case .mnist: return Dataset.mnistClasses
        case .cifar10: return Dataset.cifar10Classes
        }
    }

    func load(_ split: Dataset.Split) throws -> Dataset {
        if split == .test, let images, let labels {
            return try Dataset.fromIDX(images: images, labels: labels, classNames: classNames).prefix(limit)
        }
        let d = try loadDataset(dataset, dataDir: dataDir, split: split)
        return split == .test ? d.prefix(limit) : d
    }
}

/// A dataset's split from its folder (Debian's Fashion-MNIST folder by default).
func loadDataset(_ dataset: DatasetName, dataDir: String?, split: Dataset.Split) throws -> Dataset {
    let dir: String
    switch (dataset, dataDir) {
    case let (_, given?): dir = given
    case (.fashionMNIST, nil): dir = Dataset.defaultFashionMNISTDirectory
    case (.mnist, nil), (.cifar10, nil):
        throw AdvKitError.invalidArgument("--dataset \(dataset.rawValue) needs --data-dir (the folder of its files)")
    }
    switch dataset {
    case .fashionMNIST: return try Dataset.mnistFormat(directory: dir, split: split)
    case .mnist: return try Dataset.mnistFormat(directory: dir, split: split, classNames: Dataset.mnistClasses, name: "mnist")
    case .cifar10: return try CIFAR10.load(directory: dir, split: split)
    }
}

enum DatasetName: String, ExpressibleByArgument, CaseIterable {
    case fashionMNIST = "fashion-mnist", mnist, cifar10
}

extension Architecture: ExpressibleByArgument {}

struct ModelOptions: ParsableArguments {
    @Option(help: "Architecture: cnn, mlp or resnet.")
    var arch: Architecture = .cnn

    @Option(help: "Hidden activation: relu, or brelu (bounded ReLU, see --brelu-bound).")
    var activation: ActivationName = .relu

    @Option(help: "The bound t of the bounded ReLU min(max(x,0),t).")
    var breluBound: Float = 1

    func validate() throws {
        guard breluBound.isFinite && breluBound > 0 else { throw ValidationError("--brelu-bound must be > 0, got \(breluBound)") }
    }

    var activationValue: Activation { activation == .relu ? .relu : .boundedReLU(breluBound) }

    func make(for data: Dataset, seed: UInt64) -> Model {
        Model(arch, inputShape: data.imageShape, classes: data.classCount, activation: activationValue, seed: seed)
    }

    func load(_ path: String, for data: Dataset) throws -> Model {
        let m = make(for: data, seed: 0)
        try m.load(from: path)
        return m
    }
}

enum ActivationName: String, ExpressibleByArgument { case relu, brelu }

enum DefenseName: String, ExpressibleByArgument, CaseIterable {
    case none, fgsmAT = "fgsm-at", pgdAT = "pgd-at", trades, vat, labelSmoothing = "label-smoothing", gda, brelu
    case gdaBrelu = "gda+brelu"
}

struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for the kernels (default: ADVKIT_THREADS, OMP_NUM_THREADS, else every CPU).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be >= 1, got \(threads)") }
    }

    func apply() { if let threads { Parallelism.threads = threads } }
}

extension TrainingConfiguration.OptimizerKind: ExpressibleByArgument {}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model and save it as safetensors (PyTorch's names).")

    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @OptionGroup var threads: ThreadOptions

    @Option(help: "Epochs.") var epochs = 1
    @Option(help: "Minibatch size.") var batchSize = 64
    @Option(help: "Learning rate.") var lr: Float = 1e-3
    @Option(help: "Optimizer: adam or sgd (momentum 0.9).") var optimizer: TrainingConfiguration.OptimizerKind = .adam
    @Option(help: "Seed of initialisation and shuffling.") var seed: UInt64 = 0
    @Option(help: "Use only the first N training images.") var trainLimit: Int?
    @Option(help: "Where to write the model (.safetensors); rewritten after every epoch.") var out: String
    @Flag(help: "No progress output.") var quiet = false
    @Flag(help: "Continue an interrupted run from the state file beside --out (same settings): the result equals an uninterrupted run.")
    var resume = false

    @Option(help: "Training-time defense: \(DefenseName.allCases.map(\.rawValue).joined(separator: ", ")).")
    var defense: DefenseName = .none
    @Option(help: "Adversarial training / TRADES: the L-inf radius.") var atEps: Float = 0.1
    @Option(help: "Adversarial training / TRADES: PGD steps (pgd-at, trades).") var atSteps = 7
    @Option(help: "Adversarial training / TRADES: PGD step size.") var atAlpha: Float = 0.025
    @Option(help: "Adversarial training: share of the loss on adversarial examples (default 0.5; 1 is Madry's all-adversarial batches).") var atRatio: Float?
    @Option(help: "TRADES: beta, the weight of the KL term.") var tradesBeta: Float = 6
    @Option(help: "VAT: xi, the finite-difference radius of the power iteration.") var vatXi: Float = 1e-6
    @Option(help: "VAT: the L2 radius of the virtual adversarial perturbation.") var vatEps: Float = 2
    @Option(help: "VAT: power iterations.") var vatIterations = 1
    @Option(help: "VAT: weight of the smoothness term.") var vatWeight: Float = 1
    @Option(help: "Label smoothing a (label-smoothing): the target is (1-a) one-hot + a/K.") var smoothing: Float = 0.1
    @Option(help: "GDA: standard deviation of the noisy copies.") var gdaSigma: Float = 0.3
    @Option(help: "GDA: noisy copies of every training image.") var gdaCopies = 10

    func validate() throws {
        if epochs < 1 { throw ValidationError("--epochs must be >= 1, got \(epochs)") }
        if batchSize < 1 { throw ValidationError("--batch-size must be >= 1, got \(batchSize)") }
        if !(lr.isFinite && lr > 0) { throw ValidationError("--lr must be > 0, got \(lr)") }
        if let trainLimit, trainLimit < 1 { throw ValidationError("--train-limit must be >= 1, got \(trainLimit)") }
        if !(smoothing >= 0 && smoothing < 1) { throw ValidationError("--smoothing must be in [0, 1), got \(smoothing)") }
        if !(gdaSigma.isFinite && gdaSigma >= 0) { throw ValidationError("--gda-sigma must be >= 0, got \(gdaSigma)") }
        if gdaCopies < 0 { throw ValidationError("--gda-copies must be >= 0, got \(gdaCopies)") }
        if [.brelu, .gdaBrelu].contains(defense) && model.activation == .relu && model.breluBound <= 0 {
            throw ValidationError("--brelu-bound must be > 0")
        }
    }

    var trainingDefense: TrainingDefense? {
        switch defense {
        case .fgsmAT: return .fgsm(epsilon: atEps, ratio: atRatio ?? 0.5)
        case .pgdAT: return .pgd(epsilon: atEps, steps: atSteps, alpha: atAlpha, ratio: atRatio ?? 0.5)
        case .trades: return .trades(epsilon: atEps, steps: atSteps, alpha: atAlpha, beta: tradesBeta)
        case .vat: return .vat(xi: vatXi, epsilon: vatEps, iterations: vatIterations, weight: vatWeight)
        case .none, .labelSmoothing, .gda, .brelu, .gdaBrelu: return nil
        }
    }

    func run() throws {
        try reportingErrors {
            threads.apply()
            var train = try data.load(.train).prefix(trainLimit)
            let test = try data.load(.test)
            if [.gda, .gdaBrelu].contains(defense) {
                train = try train.gaussianAugmented(sigma: gdaSigma, copies: gdaCopies, seed: seed)
            }
            var network = model
            if [.brelu, .gdaBrelu].contains(defense) { network.activation = .brelu }
            let m = network.make(for: train, seed: seed)
            var config = TrainingConfiguration()
            config.epochs = epochs
            config.batchSize = batchSize
            config.learningRate = lr
            config.optimizer = optimizer
            config.seed = seed
            config.progress = quiet ? .silent : .automatic
            if defense == .labelSmoothing { config.labelSmoothing = smoothing }
            let trainer = Trainer(model: m, configuration: config)
            if let d = trainingDefense {
                try d.validate()
                trainer.batchLoss = d.batchLoss(seed: seed, labelSmoothing: config.labelSmoothing)
            }
            let started = Date()
            if resume { FileHandle.standardError.write(Data("resuming from \(Trainer.stateFile(for: out))\n".utf8)) }
            let history = try trainer.fit(train, test: test, checkpoint: out, resume: resume)
            let acc = history.last?.testAccuracy ?? 0
            print(String(format: "trained %@ (defense %@) on %d images for %d epoch(s) in %.1fs: test accuracy %.2f%% on %d images; saved %@",
                         model.arch.rawValue, defense.rawValue, train.count, history.count, Date().timeIntervalSince(started), acc * 100, test.count, out))
        }
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Accuracy of a model on the test split or on IDX files.")

    @OptionGroup var data: DataOptions
    @OptionGroup var network: ModelOptions
    @OptionGroup var threads: ThreadOptions

    @Option(name: .customLong("model"), help: "The model (.safetensors).") var modelPath: String
    @Option(help: "Write accuracy, predictions and confidences as JSON to this file.") var json: String?

    func run() throws {
        try reportingErrors {
            threads.apply()
            let test = try data.load(.test)
            let m = try network.load(modelPath, for: test)
            let (classes, confidences) = m.predict(test.images)
            let correct = zip(classes, test.labels).filter { $0 == Int($1) }.count
            let accuracy = test.count > 0 ? Double(correct) / Double(test.count) : 0
            print(String(format: "accuracy %.2f%% (%d of %d images)", accuracy * 100, correct, test.count))
            if let json {
                try writeJSON(["accuracy": accuracy, "images": test.count, "predictions": classes,
                               "confidences": confidences.map(Double.init)], to: json)
            }
        }
    }
}

/// Writes a JSON object atomically (sorted keys, pretty-printed).
func writeJSON(_ object: [String: Any], to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    try FileIO.writeAtomically(data, to: path)
}
