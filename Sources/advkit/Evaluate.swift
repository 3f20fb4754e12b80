import AdvKit
import ArgumentParser
import Foundation

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train or reuse the defended models, attack each, and write a robustness report (Markdown, HTML, JSON, PNG).")

    @Option(help: "Dataset: fashion-mnist, mnist or cifar10 (cifar10 uses the ResNet).") var dataset: DatasetName = .fashionMNIST
    @Option(help: "Folder of the dataset's files (default for fashion-mnist: Debian's /usr/share/datasets/fashion-mnist).") var dataDir: String?
    @Option(help: "Defenses, comma-separated (default all: \(EvaluationSettings.allDefenses.joined(separator: ","))).") var defenses: String?
    @Option(help: "Attacks, comma-separated (default fgsm,pgd,deepfool,cw; --quick: fgsm,pgd,deepfool).") var attacks: String?
    @Option(help: "Epsilons of the curves, comma-separated, decimals or fractions (0,2/255,4/255,8/255); at least 2.") var eps: String?
    @Option(help: "The L-inf epsilon of the tables, e.g. 0.1 or 8/255. (default: 0.1)", transform: PixelAmount.argument) var tableEps: PixelAmount = PixelAmount(0.1)
    @Option(help: "Test images attacked (default 500; --quick 200).") var limit: Int?
    @Option(help: "Training images per model (default 20000; --quick 6000).") var trainImages: Int?
    @Option(help: "Training epochs per model (default 2; --quick 1).") var epochs: Int?
    @Option(help: "PGD steps (default 20; --quick 10).") var pgdSteps: Int?
    @Option(help: "Threat model: white, black or both.") var threat = "both"
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

    func settings() throws -> EvaluationSettings {
        var s = quick ? EvaluationSettings.quickSettings() : EvaluationSettings()
        s.dataset = dataset.rawValue
        s.seed = seed
        s.threat = threat
        s.epsilon = tableEps.value
        if let defenses { s.defenses = defenses.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        if let attacks { s.attacks = attacks.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        if let eps { s.epsilons = try PixelAmount.parseList(eps, option: "--eps") }
        if let limit { s.limit = limit }
        if let trainImages { s.trainImages = trainImages }
        if let epochs { s.epochs = epochs }
        if let pgdSteps { s.pgdSteps = pgdSteps }
        try s.validate()
        return s
    }

    func validate() throws {
        do { _ = try settings() } catch let e as AdvKitError { throw ValidationError(e.description) }
        _ = try parsedShard()
    }

    func run() throws {
        try reportingErrors {
            try OutputPath.checkDirectory(out, option: "--out")
            threads.apply()
            let s = try settings()
            let train = try loadDataset(dataset, dataDir: dataDir, split: .train)
            let test = try loadDataset(dataset, dataDir: dataDir, split: .test)
            let evaluator = try Evaluator(settings: s, train: train, test: test, outputDirectory: out)
            evaluator.progressStyle = quiet ? .silent : .automatic
            evaluator.shard = try parsedShard()
            evaluator.resume = !fresh
            evaluator.log = { line in if !quiet { FileHandle.standardError.write(Data((line + "\n").utf8)) } }
            let results = try evaluator.run()
            let files = try ReportWriter.write(results, evaluator: evaluator, classNames: test.classNames)
            if json {
                print(String(decoding: try Data(contentsOf: URL(fileURLWithPath: out + "/results.json")), as: UTF8.self))
            } else {
                print("wrote \(out)/: " + files.joined(separator: ", "))
                for d in results.models.map(\.name) {
                    let pgd = results.whiteBox.first { $0.defense == d && $0.attack == "pgd" }?.robustAccuracy
                    let name = d.padding(toLength: max(18, d.count), withPad: " ", startingAt: 0)
                    print(String(format: "  %@ clean %5.1f%%  PGD %@  worst case %@", name, (results.cleanAccuracy[d] ?? 0) * 100,
                                 pgd.map { String(format: "%5.1f%%", $0 * 100) } ?? "  -  ", results.worstCase[d].map { String(format: "%5.1f%%", $0 * 100) } ?? "  -  "))
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
