import AdvKit
import AdvKitTestSupport
import XCTest

final class EvaluationTests: XCTestCase {
    private func tinySettings() -> EvaluationSettings {
        var s = EvaluationSettings.quickSettings()
        s.defenses = ["none", "fgsm-at", "feature-squeezing", "noise", "detector"]
        s.attacks = ["fgsm", "pgd", "deepfool"]
        s.limit = 24
        s.trainImages = 200
        s.epochs = 1
        s.pgdSteps = 3
        s.epsilons = [0, 0.1, 0.3]
        return s
    }

    private func run(_ dir: String, shard: (Int, Int)? = nil, log: @escaping (String) -> Void = { _ in },
                     afterEachUnit: ((String) throws -> Void)? = nil,
                     units: ((reused: Int, computed: Int)) -> Void = { _ in }) throws -> (EvaluationResults, [String]) {
        let train = squaresDataset(count: 400, classes: 4, size: 28, seed: 1), test = squaresDataset(count: 24, classes: 4, size: 28, seed: 2)
        let e = try Evaluator(settings: tinySettings(), train: train, test: test, outputDirectory: dir)
        e.progressStyle = .silent
        e.shard = shard.map { (index: $0.0, count: $0.1) }
        e.log = log
        e.afterEachUnit = afterEachUnit
        defer { units((e.reusedUnits, e.computedUnits)) }
        let r = try e.run()
        return (r, try ReportWriter.write(r, evaluator: e, classNames: test.classNames))
    }

    func testATinyReportHasEveryFileAndTheyAreValid() throws {
        let dir = temporaryDirectory()
        let (r, files) = try run(dir)
        for f in ["results.json", "report.md", "report.html", "curves-fgsm.png", "curves-pgd.png", "gallery-fgsm.png",
                  "gallery-pgd.png", "gallery-deepfool.png", "saliency.png"] {
            XCTAssertTrue(files.contains(f), "\(f) written")
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/" + f), f)
        }
        for f in files where f.hasSuffix(".png") {
            let img = try PNG.decode(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f)), path: f)
            XCTAssertGreaterThan(img.width * img.height, 100, "\(f) decodes to a picture")
        }
        let html = try String(contentsOfFile: dir + "/report.html", encoding: .utf8)
        XCTAssertEqual(html.components(separatedBy: "src=\"data:image/png;base64,").count - 1, files.filter { $0.hasSuffix(".png") }.count,
                       "every picture is embedded")
        XCTAssertFalse(html.contains("src=\"curves") || html.contains("src=\"gallery"), "no reference to a file outside the page")
        for case let range? in [html.range(of: "data:image/png;base64,")] {
            let b64 = html[range.upperBound...].prefix { $0 != "\"" }
            XCTAssertNoThrow(try PNG.decode(Data(base64Encoded: String(b64))!), "the embedded picture decodes")
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/results.json"))) as! [String: Any]
        let results = json["results"] as! [String: Any]
        XCTAssertEqual((results["whiteBox"] as! [Any]).count, 5 * 3)
        XCTAssertEqual((results["blackBox"] as! [Any]).count, 5 * 2)
        XCTAssertNotNil(json["timings_seconds"])
        let md = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
        for heading in ["White-box", "Black-box", "Perturbation needed", "Robust accuracy against epsilon", "Sanity checks", "Gallery"] {
            XCTAssertTrue(md.contains(heading), "report.md has \(heading)")
        }
        XCTAssertEqual(Set(r.worstCase.keys), Set(tinySettings().defenses))
        for (d, w) in r.worstCase {
            let pgd = r.whiteBox.first { $0.defense == d && $0.attack == "pgd" }!.robustAccuracy
            XCTAssertLessThanOrEqual(w, pgd, "\(d): the worst case is no better than any single attack")
        }
    }

    func testSecondRunReusesModelsAndTheSameSeedGivesTheSameResults() throws {
        let dir = temporaryDirectory()
        let (first, _) = try run(dir)
        var lines: [String] = []
        let (second, _) = try run(dir) { lines.append($0) }
        XCTAssertTrue(lines.contains { $0.hasPrefix("reusing cached model none") }, "\(lines)")
        XCTAssertFalse(lines.contains { $0.hasPrefix("trained model") }, "nothing retrained")
        XCTAssertEqual(first, second)
        let (fresh, _) = try run(temporaryDirectory())
        XCTAssertEqual(first, fresh, "a fresh run with the same seed gives the same numbers")
        // Two shards, merged: the same results.json numbers as the whole run.
        let s0 = temporaryDirectory("shard0"), s1 = temporaryDirectory("shard1"), merged = temporaryDirectory("merged")
        let (a, _) = try run(s0, shard: (0, 2)), (b, _) = try run(s1, shard: (1, 2))
        XCTAssertEqual(a.models.map(\.name), ["none", "feature-squeezing", "detector"])
        XCTAssertEqual(b.models.map(\.name), ["fgsm-at", "noise"])
        let joined = try ReportWriter.merge([s0, s1], into: merged)
        XCTAssertEqual(joined, first, "merging the shards gives what one run gives")
        XCTAssertEqual(try ReportWriter.read(merged).results, first)
        XCTAssertTrue(FileManager.default.fileExists(atPath: merged + "/gallery-pgd.png"))
        XCTAssertThrowsError(try ReportWriter.merge([s0], into: temporaryDirectory("partial"))) {
            XCTAssertTrue("\($0)".contains("no shard covered fgsm-at, noise"), "\($0)")
        }
    }

    func testAnInterruptedEvaluationResumesFromItsFinishedUnits() throws {
        struct Interrupted: Error {}
        var whole = (reused: 0, computed: 0)
        let (reference, _) = try run(temporaryDirectory("whole"), units: { whole = $0 })
        XCTAssertEqual(whole.reused, 0)
        // 5 defenses x (3 attacks + 2 curves + checks) + 2 transfer attacks.
        XCTAssertEqual(whole.computed, 5 * 6 + 2)

        let dir = temporaryDirectory("interrupted")
        var finished: [String] = []
        XCTAssertThrowsError(try run(dir, afterEachUnit: { unit in
            finished.append(unit)
            if finished.count == 7 { throw Interrupted() }
        })) { XCTAssertTrue($0 is Interrupted) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/results.json"), "no report from a stopped run")

        var lines: [String] = [], counts = (reused: 0, computed: 0)
        let (resumed, files) = try run(dir, log: { lines.append($0) }, units: { counts = $0 })
        XCTAssertEqual(counts.reused, 7, "the 7 units finished before the interruption are reused")
        XCTAssertEqual(counts.computed, whole.computed - 7)
        XCTAssertTrue(lines.contains { $0.hasPrefix("resumed: reused 7 finished unit(s)") }, "\(lines)")
        XCTAssertEqual(resumed, reference, "a resumed evaluation gives what an uninterrupted one gives")
        XCTAssertTrue(files.contains("gallery-fgsm.png"), "pictures of reused cells are still drawn")

        // A damaged unit file is not trusted: that unit alone is recomputed, with the same result.
        let progress = try FileManager.default.subpathsOfDirectory(atPath: dir + "/progress").filter { $0.hasSuffix(".json") }
        let victim = try XCTUnwrap(progress.first { $0.contains("white-none-fgsm") })
        try Data("{\"cell\": 1".utf8).write(to: URL(fileURLWithPath: dir + "/progress/" + victim))
        let (again, _) = try run(dir, units: { counts = $0 })
        XCTAssertEqual(counts.computed, 1)
        XCTAssertEqual(again, reference)
    }

    func testBadSettingsAreRejected() {
        var s = tinySettings()
        s.defenses = ["tinfoil"]
        XCTAssertThrowsError(try s.validate()) { XCTAssertTrue("\($0)".contains("unknown defense 'tinfoil'")) }
        s = tinySettings()
        s.epsilons = [0.1]
        XCTAssertThrowsError(try s.validate()) { XCTAssertTrue("\($0)".contains("at least 2 epsilons")) }
        s = tinySettings()
        s.threat = "grey"
        XCTAssertThrowsError(try s.validate())
    }

    /// `advkit evaluate` on files a user supplies: MNIST's IDX layout and CIFAR-10's binary batches, generated here.
    func testEvaluateReadsMNISTAndCIFAR10FilesAndUsesTheResNetForCIFAR() throws {
        var s = tinySettings()
        s.defenses = ["none", "feature-squeezing"]
        s.attacks = ["fgsm", "pgd"]
        s.limit = 8
        s.trainImages = 40
        s.epsilons = [0, 0.1]
        s.threat = "white"
        // MNIST layout: gzip'd uint8 IDX files in a folder.
        let mnist = temporaryDirectory("mnist")
        for (split, n, seed) in [("train", 80, UInt64(3)), ("t10k", 8, 4)] {
            let d = squaresDataset(count: n, classes: 4, size: 28, seed: seed)
            try Gzip.compress(IDX.encode(d.images.reshaped([n, 28, 28]), as: .uint8))
                .write(to: URL(fileURLWithPath: "\(mnist)/\(split)-images-idx3-ubyte.gz"))
            try IDX.encodeLabels(d.labels).write(to: URL(fileURLWithPath: "\(mnist)/\(split)-labels-idx1-ubyte"))
        }
        let mTrain = try Dataset.mnistFormat(directory: mnist, split: .train, classNames: Dataset.mnistClasses, name: "mnist")
        let mTest = try Dataset.mnistFormat(directory: mnist, split: .test, classNames: Dataset.mnistClasses, name: "mnist")
        s.dataset = "mnist"
        let e1 = try Evaluator(settings: s, train: mTrain, test: mTest, outputDirectory: temporaryDirectory("mnist-report"))
        e1.progressStyle = .silent
        let r1 = try e1.run()
        XCTAssertEqual(r1.whiteBox.count, 4)
        XCTAssertTrue(try ReportWriter.write(r1, evaluator: e1, classNames: mTest.classNames).contains("report.html"))
        // CIFAR-10 binary batches: label byte + 3072 pixel bytes per record.
        let cifar = temporaryDirectory("cifar")
        func batch(_ n: Int, seed: UInt64) -> Data {
            var rng = SeededGenerator(seed: seed)
            var bytes: [UInt8] = []
            for _ in 0..<n {
                let label = UInt8(rng.next() % 3)
                bytes.append(label)
                // class k: channel k bright, others dark, plus noise
                for ch in 0..<3 { for _ in 0..<1024 { bytes.append(UInt8(ch == Int(label) ? 150 + rng.next() % 100 : rng.next() % 80)) } }
            }
            return Data(bytes)
        }
        try batch(60, seed: 5).write(to: URL(fileURLWithPath: cifar + "/data_batch_1.bin"))
        try batch(8, seed: 6).write(to: URL(fileURLWithPath: cifar + "/test_batch.bin"))
        let cTrain = try CIFAR10.load(directory: cifar, split: .train), cTest = try CIFAR10.load(directory: cifar, split: .test)
        s.dataset = "cifar10"
        let dir = temporaryDirectory("cifar-report")
        let e2 = try Evaluator(settings: s, train: cTrain, test: cTest, outputDirectory: dir)
        e2.progressStyle = .silent
        let r2 = try e2.run()
        XCTAssertEqual(r2.whiteBox.count, 4)
        let files = try ReportWriter.write(r2, evaluator: e2, classNames: cTest.classNames)
        let gallery = try PNG.decode(Data(contentsOf: URL(fileURLWithPath: dir + "/gallery-pgd.png")))
        XCTAssertEqual(gallery.channels, 3, "CIFAR-10 pictures are in colour")
        XCTAssertTrue(files.contains("saliency.png"))
        let saved = try FileManager.default.contentsOfDirectory(atPath: dir + "/models").first { $0.hasPrefix("none-") }!
        let names = try Safetensors.read(dir + "/models/" + saved).tensors.keys
        XCTAssertTrue(names.contains("layer1.0.bn1.running_mean"), "the CIFAR-10 model is the ResNet")
    }
}
