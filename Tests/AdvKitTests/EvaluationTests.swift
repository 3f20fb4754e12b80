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

    private func run(_ dir: String, shard: (Int, Int)? = nil, log: @escaping (String) -> Void = { _ in }) throws -> (EvaluationResults, [String]) {
        let train = squaresDataset(count: 400, classes: 4, size: 28, seed: 1), test = squaresDataset(count: 24, classes: 4, size: 28, seed: 2)
        let e = try Evaluator(settings: tinySettings(), train: train, test: test, outputDirectory: dir)
        e.progressStyle = .silent
        e.shard = shard.map { (index: $0.0, count: $0.1) }
        e.log = log
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
}
