@_spi(Support) import AdvKit
import ArgumentParser
import Foundation

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attack a model and its defenses and write a robustness report (Markdown, HTML, JSON, PNG): AdvKit's built-in model trained here, or yours (--model mine.onnx), with hardened copies of yours written back in its format.")

    @Option(help: "Your model: .onnx (any exported classifier), or .safetensors with --arch. Without it AdvKit trains its built-in architecture. Its trained defenses fine-tune it from its own weights and are written back to OUT/hardened/ in its format.")
    var model: String?
    @OptionGroup var network: ModelOptions
    @Option(help: "Dataset: fashion-mnist, mnist or cifar10 (cifar10 uses the ResNet).") var dataset: DatasetName = .fashionMNIST
    @Option(help: "Folder of the dataset's files (default for fashion-mnist: Debian's /usr/share/datasets/fashion-mnist).") var dataDir: String?
    @Option(help: "Your own test images instead of --dataset's: an image folder (one subfolder per class), .npy, .npz or IDX (see `advkit attack --help`).") var images: String?
    @Option(help: "Labels of --images: .npy, .npz or IDX (an image folder's class folders or an .npz's labels array serve).") var labels: String?
    @Option(help: "Your own training images (same formats): the defenses train or fine-tune and calibrate on one half, the attacker's surrogates on the other. Without them (and with --images) only the undefended model and the noise defense, white-box, can run.") var trainImages: String?
    @Option(help: "Labels of --train-images.") var trainLabels: String?
    @Option(help: "A file of class names in the model's order, one per line.") var classes: String?
    @Option(help: "The layout of 4-dimensional NumPy images: nchw or nhwc. (default: where the 1 or 3 channels are)") var dataLayout: ImageLayout?
    @Option(help: "Resize every image of your files to HxW, e.g. 32x32.") var resize: String?
    @Option(help: "Defenses, comma-separated: \(DefenseSpec.names.joined(separator: ",")). (default: \(DefenseSpec.defaultNames.joined(separator: ",")); with --model, those but brelu and gda+brelu, which change the architecture; with --images and no --train-images: none,noise)") var defenses: String?
    @Option(help: "White-box attacks, comma-separated: \(AttackSpec.whiteBoxNames.joined(separator: ",")). (default: fgsm,pgd,deepfool,cw,autoattack; --quick: fgsm,pgd,autoattack with AutoAttack at 25 steps and 1000 Square queries)") var attacks: String?
    @Option(help: "Query-based black-box attacks, comma-separated: square, hsja, or none. (default: square,hsja; --quick: square)") var queryAttacks: String?
    @Option(help: "Queries per image of each query-based attack. (default 5000; --quick 500)") var queries: Int?
    @Option(help: "Epsilons of the curves, comma-separated, decimals or fractions (0,2/255,4/255,8/255); at least 2.") var eps: String?
    @Option(help: "The L-inf epsilon of the tables, e.g. 0.1 or 8/255. (default: 0.1)", transform: PixelAmount.argument) var tableEps: PixelAmount = PixelAmount(0.1)
    @Option(help: "Test images attacked (default 500; --quick 200).") var limit: Int?
    @Option(help: "Training images per model (default 20000; --quick 6000).") var trainLimit: Int?
    @Option(help: "Training (or fine-tuning) epochs per model (default 2; --quick 1).") var epochs: Int?
    @Option(help: "Learning rate (Adam) of training. (default: 1e-3 for the built-in model, 1e-4 when fine-tuning yours)") var lr: Float?
    @Option(help: "PGD steps (default 20; --quick 10).") var pgdSteps: Int?
    @Option(help: "Threat model: white, black or both. (default: both; with --images and no --train-images: white)") var threat: String?
    @Option(help: "Seed of everything random.") var seed: UInt64 = 0
    @OptionGroup var threads: ThreadOptions
    @Option(help: "Output folder.") var out = "advkit-report"
    @Flag(help: "A small configuration that finishes in a few minutes on 2 cores.") var quick = false
    @Flag(help: "No progress output.") var quiet = false
    @Flag(help: "Print results.json to standard output at the end.") var json = false
    @Flag(help: "Compute every cell again instead of resuming from the cells an interrupted run with the same settings kept in OUT/progress.")
    var fresh = false
    @Option(help: "Run share I of N (I from 0): the defenses at positions I, I+N, ...; join the shares with `advkit merge`.")
    var shard: String?

    func parsedShard() throws -> (index: Int, count: Int)? {
        guard let shard else { return nil }
        let parts = shard.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
            throw ValidationError("--shard wants I/N with 0 <= I < N, got '\(shard)'")
        }
        return (i, n)
    }

    static func names(_ list: String) -> [String] {
        list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Test images only: the user's files with no training files.
    var testOnly: Bool { images != nil && trainImages == nil }

    func settings() throws -> EvaluationSettings {
        var s = quick ? EvaluationSettings.quickSettings() : EvaluationSettings()
        s.dataset = images == nil ? dataset.rawValue : "files"
        s.seed = seed
        s.threat = threat ?? (testOnly ? "white" : "both")
        s.epsilon = tableEps.value
        var defenseNames = defenses.map(Evaluate.names) ?? DefenseSpec.defaultNames
        if defenses == nil, model != nil { defenseNames = defenseNames.filter { !["brelu", "gda+brelu"].contains($0) } }
        if defenses == nil, testOnly { defenseNames = ["none", "noise"] }
        s.defenses = try defenseNames.map { try DefenseSpec.named($0, epsilon: s.epsilon, quick: quick) }
        if let attacks {
            s.attacks = try Evaluate.names(attacks).map { name in
                let a = try AttackSpec.named(name, quick: quick)
                if a.isQueryBased { throw AdvKitError.invalidArgument("\(name) is query-based: give it to --query-attacks") }
                return a
            }
        }
        if let queryAttacks {
            s.queryAttacks = queryAttacks == "none" ? [] : try Evaluate.names(queryAttacks).map { name in
                let a = try AttackSpec.named(name, quick: quick)
                if !a.isQueryBased { throw AdvKitError.invalidArgument("\(name) is a white-box attack: give it to --attacks") }
                return a
            }
        }
        if let queries {
            s.queryAttacks = s.queryAttacks.map { a in
                switch a {
                case .square: return .square(queries: queries)
                case .hopSkipJump: return .hopSkipJump(queries: queries)
                default: return a
                }
            }
        }
        if let eps { s.epsilons = try PixelAmount.parseList(eps, option: "--eps") }
        if let limit { s.limit = limit }
        if let trainLimit { s.trainImages = trainLimit }
        if let epochs { s.epochs = epochs }
        if let pgdSteps { s.pgdSteps = pgdSteps }
        s.learningRate = lr
        if model != nil, let d = s.defenses.first(where: \.changesArchitecture) {
            throw AdvKitError.invalidArgument("--defenses \(d.name) changes the architecture, which your model fixes: leave it out")
        }
        try s.validate()
        return s
    }

    func validate() throws {
        do { _ = try settings() } catch let e as AdvKitError { throw ValidationError(e.description) }
        _ = try parsedShard()
        if queries != nil, queryAttacks == "none" { throw ValidationError("--queries does not apply with --query-attacks none") }
        let ownData: [(String, Bool)] = [("--labels", labels != nil), ("--classes", classes != nil), ("--data-layout", dataLayout != nil),
                                         ("--resize", resize != nil), ("--train-images", trainImages != nil)]
        if images == nil, let flag = ownData.first(where: \.1)?.0 { throw ValidationError("\(flag) applies to --images (your own files)") }
        _ = try DataOptions.parseResize(resize)
        if trainLabels != nil, trainImages == nil { throw ValidationError("--train-labels applies to --train-images") }
        if images != nil, dataDir != nil { throw ValidationError("--data-dir applies to --dataset, not to --images") }
        if model == nil {
            if network.arch != nil || network.activation != .relu || network.onnxOptionsGiven {
                throw ValidationError("--arch, --activation and the ONNX input options apply to --model (your model)")
            }
        }
    }

    /// The user's model, sized (safetensors) by the images.
    func userModel(sizedBy images: Shape, classes: Int) throws -> UserModel? {
        guard let path = model else { return nil }
        if ModelOptions.isONNX(path) {
            if network.arch != nil { throw AdvKitError.invalidArgument("--arch does not apply to an .onnx model: its graph is the architecture") }
            if network.activation != .relu { throw AdvKitError.invalidArgument("--activation does not apply to an .onnx model") }
            return try UserModel.onnx(path, options: try network.inputOptions())
        }
        if network.onnxOptionsGiven {
            throw AdvKitError.invalidArgument("--input-scale, --mean, --std and --layout apply to .onnx models; \(path) is safetensors")
        }
        return try UserModel.safetensors(path, architecture: network.archValue, activation: network.activationValue,
                                         inputShape: images, classes: classes)
    }

    /// The test and training sets: --dataset's, or the user's files laid out for the model's input.
    func loadData() throws -> (train: Dataset?, test: Dataset, user: UserModel?) {
        let defaultNames = DataOptions.classNames(of: dataset)
        guard let images else {
            let train = try loadDataset(dataset, dataDir: dataDir, split: .train)
            let test = try loadDataset(dataset, dataDir: dataDir, split: .test)
            return (train, test, try userModel(sizedBy: test.imageShape, classes: test.classCount))
        }
        // The model's input shape lays the files out (channels, layout, size) when it is ONNX.
        var shape: Shape?
        if let model, ModelOptions.isONNX(model) { shape = try ONNXClassifier(contentsOf: model, options: try network.inputOptions()).inputShape }
        let names = try DataOptions.readClassesFile(classes)
        func options() throws -> ImageLoadOptions {
            ImageLoadOptions(layout: dataLayout, imageShape: shape, resize: try DataOptions.parseResize(resize), classNames: names)
        }
        let test = try Dataset.load(images: images, labels: labels, options: try options()).dataset(defaultClassNames: defaultNames)
        var train: Dataset?
        if let trainImages {
            train = try Dataset.load(images: trainImages, labels: trainLabels, options: try options()).dataset(defaultClassNames: test.classNames)
        }
        let user = try userModel(sizedBy: test.imageShape, classes: test.classCount)
        if let user {
            let m = try user.load()
            try m.checkImages(test.images.batch(0..<min(1, test.count)))
            if m.classCount != test.classCount {
                throw AdvKitError.invalidData("the model has \(m.classCount) classes, the data \(test.classCount)")
            }
        }
        return (train, test, user)
    }

    func run() throws {
        try reportingErrors {
            try OutputPath.checkDirectory(out, option: "--out")
            threads.apply()
            let s = try settings()
            let (train, test, user) = try loadData()
            let evaluator = try Evaluator(settings: s, train: train, test: test, outputDirectory: out, userModel: user)
            evaluator.progressStyle = quiet ? .silent : .automatic
            evaluator.shard = try parsedShard()
            evaluator.resume = !fresh
            evaluator.log = { line in if !quiet { FileHandle.standardError.write(Data((line + "\n").utf8)) } }
            let results = try evaluator.run()
            let files = try ReportWriter.write(results, pictures: evaluator.reportPictures(), to: out, classNames: test.classNames,
                                               timings: evaluator.timings, shard: evaluator.shard.map { "\($0.index)/\($0.count)" })
            if json {
                print(String(decoding: try Data(contentsOf: URL(fileURLWithPath: out + "/results.json")), as: UTF8.self))
            } else {
                print("wrote \(out)/: " + files.joined(separator: ", "))
                let main = results.settings.attacks.contains { $0.name == "autoattack" } ? "autoattack" : "pgd"
                for d in results.models.map(\.name) {
                    let cell = results.whiteBox.first { $0.defense == d && $0.attack == main }?.robustAccuracy
                    let name = d.padding(toLength: max(18, d.count), withPad: " ", startingAt: 0)
                    var line = String(format: "  %@ clean %5.1f%%  %@ %@  worst case %@", name, (results.cleanAccuracy[d] ?? 0) * 100,
                                      main == "pgd" ? "PGD" : "AutoAttack", cell.map { String(format: "%5.1f%%", $0 * 100) } ?? "  -  ",
                                      results.worstCase[d].map { String(format: "%5.1f%%", $0 * 100) } ?? "  -  ")
                    if let h = results.models.first(where: { $0.name == d })?.hardenedFile { line += "  -> \(out)/\(h)" }
                    print(line)
                }
                let warnings = results.sanity.filter { !$0.passed }
                if !warnings.isEmpty { print("\(warnings.count) sanity check(s) warn about gradient masking: see report.md") }
            }
        }
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join the results of `advkit evaluate --shard I/N` runs into one report (the same as one run).")

    @Argument(help: "The shards' output folders.") var shards: [String]
    @Option(help: "Output folder of the merged report.") var out = "advkit-report"

    func validate() throws {
        if shards.isEmpty { throw ValidationError("give the shards' output folders") }
    }

    func run() throws {
        try reportingErrors {
            try OutputPath.checkDirectory(out, option: "--out")
            let merged = try ReportWriter.merge(shards, into: out)
            print("merged \(shards.count) shard(s), \(merged.models.count) defenses, into \(out)/ (results.json, report.md, report.html, pictures)")
        }
    }
}
