@_spi(Support) import AdvKit
import ArgumentParser
import Foundation

@main
struct AdvKitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "advkit",
        abstract: "Adversarial robustness of image classifiers: train, predict, attack, evaluate.",
        version: AdvKitVersion.string,
        subcommands: [Train.self, Predict.self, AttackCommand.self, Evaluate.self, Merge.self]
    )
}

/// Options shared by every command that reads data.
struct DataOptions: ParsableArguments {
    @Option(help: "Dataset: fashion-mnist, mnist or cifar10.")
    var dataset: DatasetName = .fashionMNIST

    @Option(help: "Folder of the dataset's files (default: Debian's /usr/share/datasets/fashion-mnist for fashion-mnist).")
    var dataDir: String?

    @Option(help: "Your own test images, replacing --dataset's test split: a folder of PNG/JPEG files (one subfolder per class, labelled by the sorted folder names, or flat and unlabeled), a NumPy .npy or .npz (uint8 0-255 or float in [0,1]; N,H,W, N,C,H,W or N,H,W,C), or an IDX file.")
    var images: String?

    @Option(help: "Labels for --images: .npy, .npz or IDX. Optional: an image folder's class folders or an .npz's y/labels array serve, and without labels the model's own predictions are the labels.")
    var labels: String?

    @Option(help: "Your own training images (train; attack's detector and squeezing calibration), replacing --dataset's training split; the same formats as --images.")
    var trainImages: String?

    @Option(help: "Labels for --train-images (as --labels).")
    var trainLabels: String?

    @Option(help: "A file of class names in the model's order, one per line (default: the class folders' names, else --dataset's).")
    var classes: String?

    @Option(help: ".npz: the key of the images. (default: the first of \(NPZKeys.images.joined(separator: ", ")))")
    var npzImages: String?

    @Option(help: ".npz: the key of the labels. (default: the first of \(NPZKeys.labels.joined(separator: ", ")))")
    var npzLabels: String?

    @Option(help: "The layout of 4-dimensional NumPy images: nchw or nhwc. (default: where the 1 or 3 channels are, and the model's input shape)")
    var dataLayout: ImageLayout?

    @Option(help: "Convert the images to 1 (grayscale) or 3 (RGB) channels. (default: an .onnx model's channels, else the files')")
    var channels: Int?

    @Option(help: "Resize every image to HxW, e.g. 32x32 (bilinear, antialiased as Pillow's); without it images of different sizes are an error.")
    var resize: String?

    @Option(help: "Use only the first N test images.")
    var limit: Int?

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be >= 1, got \(limit)") }
        if images == nil {
            let needImages: [(String, Bool)] = [("--labels", labels != nil), ("--classes", classes != nil), ("--npz-images", npzImages != nil),
                                                ("--npz-labels", npzLabels != nil), ("--data-layout", dataLayout != nil),
                                                ("--channels", channels != nil), ("--resize", resize != nil)]
            if let flag = needImages.first(where: \.1)?.0 { throw ValidationError("\(flag) applies to --images (your own files)") }
        }
        if trainLabels != nil, trainImages == nil { throw ValidationError("--train-labels applies to --train-images (your own training files)") }
        if let channels, channels != 1 && channels != 3 { throw ValidationError("--channels must be 1 or 3, got \(channels)") }
        _ = try resizeValue()
    }

    /// --resize as (height, width): "32x32", "28x32" or "32".
    func resizeValue() throws -> (height: Int, width: Int)? { try DataOptions.parseResize(resize) }

    /// A --resize value as (height, width): "32x32", "28x32" or "32".
    static func parseResize(_ resize: String?) throws -> (height: Int, width: Int)? {
        guard let resize else { return nil }
        let parts = resize.lowercased().split(separator: "x", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard (parts.count == 1 || parts.count == 2), let h = parts[0], let w = parts.last!, (1...16_384).contains(h), (1...16_384).contains(w) else {
            throw ValidationError("--resize wants HxW (e.g. 32x32) with sides in 1...16384, got '\(resize)'")
        }
        return (h, w)
    }

    /// --dataset's class names.
    var classNames: [String] { DataOptions.classNames(of: dataset) }

    /// A dataset's class names.
    static func classNames(of dataset: DatasetName) -> [String] {
        switch dataset {
        case .fashionMNIST: return Dataset.fashionMNISTClasses
        case .mnist: return Dataset.mnistClasses
        case .cifar10: return Dataset.cifar10Classes
        }
    }

    /// The names of the --classes file: one per line, blank lines and surrounding spaces dropped.
    func classesFile() throws -> [String]? { try DataOptions.readClassesFile(classes) }

    /// The names of a --classes file (nil: none given).
    static func readClassesFile(_ classes: String?) throws -> [String]? {
        guard let classes else { return nil }
        let text = String(decoding: try FileIO.read(classes, limit: 1 << 24), as: UTF8.self)
        let names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !names.isEmpty else { throw AdvKitError.invalidFile(path: classes, reason: "lists no class names (want one per line)") }
        if let dup = Dictionary(grouping: names, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw AdvKitError.invalidFile(path: classes, reason: "lists the class '\(dup)' twice")
        }
        return names
    }

    func loadOptions(imageShape: Shape? = nil) throws -> ImageLoadOptions {
        ImageLoadOptions(layout: dataLayout, imageShape: imageShape, channels: channels, resize: try resizeValue(), imagesKey: npzImages,
                         labelsKey: npzLabels, classNames: try classesFile(), limit: limit)
    }

    /// What the JSON outputs record about the data.
    var record: [String: Any] {
        var r: [String: Any] = ["dataset": images == nil ? dataset.rawValue : "files"]
        if let images { r["images"] = images }
        if let labels { r["labels"] = labels }
        if let trainImages { r["train_images"] = trainImages }
        if let trainLabels { r["train_labels"] = trainLabels }
        if let dataDir { r["data_dir"] = dataDir }
        if let limit { r["limit"] = limit }
        return r
    }

    /// `record`, with what loading found: the files' format and layout, where the labels came from (or that they are
    /// the model's predictions), and the class names.
    func record(for test: Dataset) -> [String: Any] {
        var r = record
        r["class_names"] = test.classNames
        if let s = test.source {
            r["format"] = s.format.rawValue
            r["layout"] = s.layout.rawValue
            if s.labelsArePredictions { r["labels"] = "model predictions (no labels given)" } else if let l = s.labels { r["labels"] = l }
        }
        return r
    }

    /// A split without a model: the test split may be your own files, which must then have labels.
    func load(_ split: Dataset.Split) throws -> Dataset {
        if split == .train, let trainImages {
            return try Dataset.load(images: trainImages, labels: trainLabels, options: try loadOptions()).dataset(defaultClassNames: classNames)
        }
        if split == .test, let images {
            return try Dataset.load(images: images, labels: labels, options: try loadOptions()).dataset(defaultClassNames: classNames)
        }
        // The test split's first --limit images only: the rest of the files is not decompressed.
        let d = try loadDataset(dataset, dataDir: dataDir, split: split, first: split == .test ? limit : nil)
        return split == .test ? d.prefix(limit) : d
    }

    /// The test images and the model for `predict` and `attack`. Your own files are laid out and converted to an
    /// .onnx model's declared input (channels, layout); without labels the model's predictions on the clean images
    /// are the labels, as ART does, and a line says so.
    func loadTest(model path: String, _ network: ModelOptions) throws -> (test: Dataset, model: Classifier) {
        guard let images else {
            let d = try load(.test)
            return (d, try network.load(path, for: d))
        }
        var shape: Shape?
        if ModelOptions.isONNX(path) { shape = try ONNXClassifier(contentsOf: path, options: try network.inputOptions()).inputShape }
        let loaded = try Dataset.load(images: images, labels: labels, options: try loadOptions(imageShape: shape))
        // Built-in architectures are sized by the data: its classes are the files' class names, else --dataset's.
        let names = loaded.classNames ?? classNames
        let sizing = try Dataset(images: loaded.images, labels: [Int32](repeating: 0, count: loaded.count), classNames: names, name: images)
        let model = try network.load(path, for: sizing)
        let test = try loaded.dataset(for: model, defaultClassNames: classNames)
        if test.source?.labelsArePredictions == true {
            print("labels: none given, so the model's own predictions on the clean images are the labels (as ART does); clean accuracy is 100% by construction")
        }
        return (test, model)
    }
}

/// A dataset's split from its folder (Debian's Fashion-MNIST folder by default).
func loadDataset(_ dataset: DatasetName, dataDir: String?, split: Dataset.Split, first: Int? = nil) throws -> Dataset {
    let dir: String
    switch (dataset, dataDir) {
    case let (_, given?): dir = given
    case (.fashionMNIST, nil): dir = Dataset.defaultFashionMNISTDirectory
    case (.mnist, nil), (.cifar10, nil):
        throw AdvKitError.invalidArgument("--dataset \(dataset.rawValue) needs --data-dir (the folder of its files)")
    }
    switch dataset {
    case .fashionMNIST: return try Dataset.mnistFormat(directory: dir, split: split, first: first)
    case .mnist: return try Dataset.mnistFormat(directory: dir, split: split, classNames: Dataset.mnistClasses, name: "mnist", first: first)
    case .cifar10: return try CIFAR10.load(directory: dir, split: split)
    }
}

enum DatasetName: String, ExpressibleByArgument, CaseIterable {
    case fashionMNIST = "fashion-mnist", mnist, cifar10
}

extension Architecture: ExpressibleByArgument {}

struct ModelOptions: ParsableArguments {
    @Option(help: "Architecture of a .safetensors model: cnn, mlp or resnet. (default: cnn) Not for .onnx: the graph is the architecture.")
    var arch: Architecture?

    @Option(help: "Hidden activation: relu, or brelu (bounded ReLU, see --brelu-bound).")
    var activation: ActivationName = .relu

    @Option(help: "The bound t of the bounded ReLU min(max(x,0),t).")
    var breluBound: Float = 1

    @Option(help: "ONNX: multiply the [0,1] pixels by this inside the graph (255 for a model trained on 0-255 pixels). (default: 1)")
    var inputScale: Float?
    @Option(help: "ONNX: per-channel mean subtracted inside the graph after the scale, comma-separated (e.g. 0.4914,0.4822,0.4465), for a normalisation the exported graph does not contain.")
    var mean: String?
    @Option(help: "ONNX: per-channel standard deviation divided by inside the graph, comma-separated.")
    var std: String?
    @Option(help: "ONNX: the model's input layout, nchw or nhwc. (default: read from the model's declared input shape)")
    var layout: ImageLayout?

    func validate() throws {
        guard breluBound.isFinite && breluBound > 0 else { throw ValidationError("--brelu-bound must be > 0, got \(breluBound)") }
        _ = try inputOptions()
    }

    var archValue: Architecture { arch ?? .cnn }

    var activationValue: Activation { activation == .relu ? .relu : .boundedReLU(breluBound) }

    /// The ONNX input options, parsed.
    func inputOptions() throws -> ONNXInputOptions {
        func floats(_ s: String?, _ flag: String) throws -> [Float]? {
            try s.map { text in
                try text.split(separator: ",").map {
                    guard let v = Float($0.trimmingCharacters(in: .whitespaces)), v.isFinite else {
                        throw ValidationError("\(flag): '\($0)' is not a number")
                    }
                    return v
                }
            }
        }
        let o = ONNXInputOptions(inputScale: inputScale ?? 1, mean: try floats(mean, "--mean"), std: try floats(std, "--std"), layout: layout)
        do { try o.validate() } catch let e as AdvKitError { throw ValidationError(e.description) }
        return o
    }

    var onnxOptionsGiven: Bool { inputScale != nil || mean != nil || std != nil || layout != nil }

    /// The architecture recorded in JSON: the built-in one, or "onnx".
    func archRecord(_ path: String) -> String { ModelOptions.isONNX(path) ? "onnx" : archValue.rawValue }

    static func isONNX(_ path: String) -> Bool { path.lowercased().hasSuffix(".onnx") }

    func make(for data: Dataset, seed: UInt64) throws -> Model {
        try Model.validate(archValue, inputShape: data.imageShape, classes: data.classCount)
        return Model(archValue, inputShape: data.imageShape, classes: data.classCount, activation: activationValue, seed: seed)
    }

    /// A model to predict with or attack: an ONNX graph (the file is the architecture), or safetensors weights of
    /// a built-in architecture sized for `data`.
    func load(_ path: String, for data: Dataset) throws -> Classifier {
        if ModelOptions.isONNX(path) {
            if arch != nil { throw AdvKitError.invalidArgument("--arch does not apply to an .onnx model: its graph is the architecture") }
            if activation != .relu { throw AdvKitError.invalidArgument("--activation does not apply to an .onnx model") }
            let m = try ONNXClassifier(contentsOf: path, options: try inputOptions())
            try m.checkImages(data.images.batch(0..<min(1, data.count)))
            return m
        }
        if onnxOptionsGiven {
            throw AdvKitError.invalidArgument("--input-scale, --mean, --std and --layout apply to .onnx models; \(path) is safetensors")
        }
        let m = try make(for: data, seed: 0)
        try m.load(from: path)
        return m
    }
}

extension ImageLayout: ExpressibleByArgument {}

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
    static let configuration = CommandConfiguration(
        abstract: "Train a model, or fine-tune your own (--model), and save it as safetensors (PyTorch's names) or ONNX.")

    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @OptionGroup var threads: ThreadOptions

    @Option(name: .customLong("model"), help: "Fine-tune this model from its own weights instead of training a new one: .onnx (any exported classifier; --out may then be .onnx), or .safetensors with --arch.")
    var modelPath: String?

    @Option(help: "Epochs.") var epochs = 1
    @Option(help: "Minibatch size.") var batchSize = 64
    @Option(help: "Learning rate.") var lr: Float = 1e-3
    @Option(help: "Optimizer: adam or sgd (momentum 0.9).") var optimizer: TrainingConfiguration.OptimizerKind = .adam
    @Option(help: "Seed of initialisation and shuffling.") var seed: UInt64 = 0
    @Option(help: "Use only the first N training images.") var trainLimit: Int?
    @Option(help: "Where to write the model (.safetensors, or .onnx for an .onnx --model: the same graph with the fine-tuned weights); rewritten after every epoch.") var out: String
    @Flag(help: "No progress output.") var quiet = false
    @Flag(help: "Continue an interrupted run from the state file beside --out (OUT.state; OUT.safetensors.state for an .onnx --out) with the same settings: the result equals an uninterrupted run.")
    var resume = false

    @Option(help: "Training-time defense: \(DefenseName.allCases.map(\.rawValue).joined(separator: ", ")).")
    var defense: DefenseName = .none
    @Option(help: "fgsm-at, pgd-at, trades: the L-inf radius, e.g. 0.1 or 8/255. (default: 0.1)", transform: PixelAmount.argument) var atEps: PixelAmount?
    @Option(help: "pgd-at, trades: PGD steps. (default: 7)") var atSteps: Int?
    @Option(help: "pgd-at, trades: PGD step size. (default: 0.025)", transform: PixelAmount.argument) var atAlpha: PixelAmount?
    @Option(help: "fgsm-at, pgd-at: share of the loss on adversarial examples (1 is Madry's all-adversarial batches). (default: 0.5)") var atRatio: Float?
    @Option(help: "trades: beta, the weight of the KL term. (default: 6)") var tradesBeta: Float?
    @Option(help: "vat: xi, the finite-difference radius of the power iteration. (default: 1e-6)") var vatXi: Float?
    @Option(help: "vat: the L2 radius of the virtual adversarial perturbation. (default: 2)") var vatEps: Float?
    @Option(help: "vat: power iterations. (default: 1)") var vatIterations: Int?
    @Option(help: "vat: weight of the smoothness term. (default: 1)") var vatWeight: Float?
    @Option(help: "label-smoothing: a, the target is (1-a) one-hot + a/K. (default: 0.1)") var smoothing: Float?
    @Option(help: "gda, gda+brelu: standard deviation of the noisy copies. (default: 0.3)") var gdaSigma: Float?
    @Option(help: "gda, gda+brelu: noisy copies of every training image. (default: 10)") var gdaCopies: Int?

    /// Which training defenses take each option: one given for another defense is an error, never ignored.
    private var defenseOptions: [(flag: String, given: Bool, takenBy: [DefenseName])] {
        [("--at-eps", atEps != nil, [.fgsmAT, .pgdAT, .trades]), ("--at-steps", atSteps != nil, [.pgdAT, .trades]),
         ("--at-alpha", atAlpha != nil, [.pgdAT, .trades]), ("--at-ratio", atRatio != nil, [.fgsmAT, .pgdAT]),
         ("--trades-beta", tradesBeta != nil, [.trades]), ("--vat-xi", vatXi != nil, [.vat]),
         ("--vat-eps", vatEps != nil, [.vat]), ("--vat-iterations", vatIterations != nil, [.vat]),
         ("--vat-weight", vatWeight != nil, [.vat]), ("--smoothing", smoothing != nil, [.labelSmoothing]),
         ("--gda-sigma", gdaSigma != nil, [.gda, .gdaBrelu]), ("--gda-copies", gdaCopies != nil, [.gda, .gdaBrelu])]
    }

    func validate() throws {
        if epochs < 1 { throw ValidationError("--epochs must be >= 1, got \(epochs)") }
        if batchSize < 1 { throw ValidationError("--batch-size must be >= 1, got \(batchSize)") }
        if !(lr.isFinite && lr > 0) { throw ValidationError("--lr must be > 0, got \(lr)") }
        if let trainLimit, trainLimit < 1 { throw ValidationError("--train-limit must be >= 1, got \(trainLimit)") }
        for o in defenseOptions where o.given && !o.takenBy.contains(defense) {
            throw ValidationError("\(o.flag) does not apply to --defense \(defense.rawValue); it is taken by --defense \(o.takenBy.map(\.rawValue).joined(separator: ", "))")
        }
        let a = smoothing ?? 0.1
        if !(a >= 0 && a < 1) { throw ValidationError("--smoothing must be in [0, 1), got \(a)") }
        let sigma = gdaSigma ?? 0.3
        if !(sigma.isFinite && sigma >= 0) { throw ValidationError("--gda-sigma must be >= 0, got \(sigma)") }
        if (gdaCopies ?? 10) < 0 { throw ValidationError("--gda-copies must be >= 0, got \(gdaCopies ?? 10)") }
        try trainingDefense?.validate()
        let onnxModel = modelPath.map(ModelOptions.isONNX) ?? false
        if ModelOptions.isONNX(out) && !onnxModel {
            throw ValidationError(modelPath == nil
                ? "--out \(out): an .onnx output is a fine-tuned ONNX model; give the model to fine-tune with --model FILE.onnx (a model trained here is saved as .safetensors)"
                : "--out \(out): an .onnx output needs an .onnx --model; a safetensors model is saved as .safetensors")
        }
        if onnxModel && [.brelu, .gdaBrelu].contains(defense) {
            throw ValidationError("--defense \(defense.rawValue) changes the architecture (bounded ReLU activations), and an .onnx model's graph is its architecture: use pgd-at, trades, fgsm-at, vat, label-smoothing or gda")
        }
        if let modelPath, URL(fileURLWithPath: modelPath).standardizedFileURL.path == URL(fileURLWithPath: out).standardizedFileURL.path {
            throw ValidationError("--out must not be the --model file itself (\(out)): write the fine-tuned model to a new file")
        }
    }

    /// Where an .onnx --out keeps its trained tensors (safetensors) and, beside that, its resume state.
    static func onnxCheckpoint(_ out: String) -> String { out + ".safetensors" }

    /// Writes `model` once to a scratch file beside `out` (then removes it): a model that cannot be written back is
    /// an error before training, not after the first epoch.
    static func checkWritable(_ model: ONNXClassifier, _ out: String) throws {
        let url = URL(fileURLWithPath: out)
        let probe = url.deletingLastPathComponent().path + "/." + url.lastPathComponent + ".check-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: probe) }
        do {
            try model.writeONNX(to: probe)
        } catch let AdvKitError.io(_, reason) {
            throw AdvKitError.io(path: out, reason: reason)
        }
    }

    var trainingDefense: TrainingDefense? {
        switch defense {
        case .fgsmAT: return .fgsm(epsilon: atEps?.value ?? 0.1, ratio: atRatio ?? 0.5)
        case .pgdAT: return .pgd(epsilon: atEps?.value ?? 0.1, steps: atSteps ?? 7, alpha: atAlpha?.value ?? 0.025, ratio: atRatio ?? 0.5)
        case .trades: return .trades(epsilon: atEps?.value ?? 0.1, steps: atSteps ?? 7, alpha: atAlpha?.value ?? 0.025, beta: tradesBeta ?? 6)
        case .vat: return .vat(xi: vatXi ?? 1e-6, epsilon: vatEps ?? 2, iterations: vatIterations ?? 1, weight: vatWeight ?? 1)
        case .none, .labelSmoothing, .gda, .brelu, .gdaBrelu: return nil
        }
    }

    func run() throws {
        try reportingErrors {
            try OutputPath.checkFile(out, option: "--out")
            threads.apply()
            var train = try data.load(.train).prefix(trainLimit)
            let test = try data.load(.test)
            guard train.imageShape == test.imageShape else {
                throw AdvKitError.invalidData("the training images are \(train.imageShape.dims), the test images \(test.imageShape.dims): give both in the model's shape (--resize, --channels)")
            }
            if [.gda, .gdaBrelu].contains(defense) {
                train = try train.gaussianAugmented(sigma: gdaSigma ?? 0.3, copies: gdaCopies ?? 10, seed: seed)
            }
            var network = model
            if [.brelu, .gdaBrelu].contains(defense) { network.activation = .brelu }
            let m: TrainableClassifier
            if let modelPath {
                // ModelOptions.load checks --arch and the ONNX options against the file's kind.
                guard let loaded = try network.load(modelPath, for: train) as? TrainableClassifier else {
                    throw AdvKitError.invalidArgument("\(modelPath) cannot be fine-tuned")
                }
                m = loaded
            } else {
                m = try network.make(for: train, seed: seed)
            }
            var config = TrainingConfiguration()
            config.epochs = epochs
            config.batchSize = batchSize
            config.learningRate = lr
            config.optimizer = optimizer
            config.seed = seed
            config.progress = quiet ? .silent : .automatic
            if defense == .labelSmoothing { config.labelSmoothing = smoothing ?? 0.1 }
            let trainer = Trainer(model: m, configuration: config)
            if let d = trainingDefense {
                try d.validate()
                trainer.batchLoss = d.batchLoss(seed: seed, labelSmoothing: config.labelSmoothing)
            }
            let started = Date()
            // An ONNX --out: the trainer checkpoints the tensors as safetensors beside it (what --resume reads) and
            // the ONNX file is rewritten from them after every epoch.
            let onnx = m as? ONNXClassifier
            let checkpoint = onnx != nil && ModelOptions.isONNX(out) ? Train.onnxCheckpoint(out) : out
            if resume { FileHandle.standardError.write(Data("resuming from \(Trainer.stateFile(for: checkpoint))\n".utf8)) }
            if let onnx, checkpoint != out { try Train.checkWritable(onnx, out) }
            var writeError: Error?
            let history = try trainer.fit(train, test: test, checkpoint: checkpoint, resume: resume) { _ in
                guard let onnx, checkpoint != out, writeError == nil else { return }
                do { try onnx.writeONNX(to: out) } catch { writeError = error }
            }
            if let writeError { throw writeError }
            let acc = history.last?.testAccuracy ?? 0
            let what = modelPath.map { "fine-tuned " + URL(fileURLWithPath: $0).lastPathComponent } ?? "trained " + model.archValue.rawValue
            print(String(format: "%@ (defense %@) on %d images for %d epoch(s) in %.1fs: test accuracy %.2f%% on %d images; saved %@",
                         what, defense.rawValue, train.count, history.count, Date().timeIntervalSince(started), acc * 100, test.count,
                         out + (checkpoint != out ? " (its tensors and resume state: \(checkpoint))" : "")))
        }
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Accuracy of a model on the test split or on IDX files.")

    @OptionGroup var data: DataOptions
    @OptionGroup var network: ModelOptions
    @OptionGroup var threads: ThreadOptions

    @Option(name: .customLong("model"), help: "The model: .onnx (any exported classifier), or .safetensors with --arch.") var modelPath: String
    @Option(help: "Write accuracy, predictions, confidences and logits as JSON to this file.") var json: String?

    func run() throws {
        try reportingErrors {
            if let json { try OutputPath.checkFile(json, option: "--json") }
            threads.apply()
            let (test, m) = try data.loadTest(model: modelPath, network)
            try m.checkImages(test.images)
            let logits = m.logits(of: test.images)
            let z = logits.scalars, k = m.classCount
            let classes = logits.argmaxRows()
            // Softmax probability of the predicted class: 1 / Σ exp(z_j − z_max).
            let confidences = classes.enumerated().map { i, c -> Float in
                let row = z[(i * k)..<(i * k + k)]
                return Float(1 / row.reduce(0.0) { $0 + exp(Double($1 - z[i * k + c])) })
            }
            let correct = zip(classes, test.labels).filter { $0 == Int($1) }.count
            let accuracy = test.count > 0 ? Double(correct) / Double(test.count) : 0
            print(String(format: "accuracy %.2f%% (%d of %d images)", accuracy * 100, correct, test.count))
            print("predicted classes: " + classCounts(classes, names: test.classNames))
            if let json {
                let rows = (0..<test.count).map { i in (0..<k).map { Double(z[i * k + $0]) } }
                var record: [String: Any] = ["accuracy": accuracy, "images": test.count, "predictions": classes,
                               "prediction_names": classes.map { test.classNames.indices.contains($0) ? test.classNames[$0] : String($0) },
                               "confidences": confidences.map(Double.init), "logits": rows,
                               "model": try modelRecord(path: modelPath, arch: network.archRecord(modelPath)), "data": data.record(for: test),
                               "threads": Parallelism.threads, "advkit_version": AdvKitVersion.string]
                if let files = test.imageNames { record["files"] = files }
                try writeJSON(record, to: json)
            }
        }
    }
}
