@_spi(Support) @_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// Randomized smoothing as a defense of `advkit evaluate`: its certificates, its cells (EOT on the noisy base,
/// scored by the smoothed vote), the merge of shards, a resume from inside it, and the report's section.
final class SmoothingEvaluationTests: XCTestCase {
    private static let smoothing = DefenseSpec.smoothing(sigma: 0.3, copies: 1, selection: 10, estimation: 60, alpha: 0.01,
                                                         radii: [0, 0.1, 0.25, 0.5], votes: 20, draws: 2)

    private func settings() -> EvaluationSettings {
        var s = EvaluationSettings.quickSettings()
        s.defenses = [.none, .gda(sigma: 0.3, copies: 1), Self.smoothing]
        s.attacks = [.fgsm, .pgd]
        s.queryAttacks = []
        s.threat = "white"
        s.limit = 16
        s.trainImages = 200
        s.epochs = 1
        s.pgdSteps = 3
        s.epsilons = [0, 0.1, 0.3]
        return s
    }

    private func run(_ dir: String, shard: (Int, Int)? = nil, afterEachUnit: ((String) throws -> Void)? = nil) throws -> EvaluationResults {
        let train = squaresDataset(count: 400, classes: 4, size: 28, seed: 1), test = squaresDataset(count: 16, classes: 4, size: 28, seed: 2)
        let e = try Evaluator(settings: settings(), train: train, test: test, outputDirectory: dir)
        e.progressStyle = .silent
        e.shard = shard.map { (index: $0.0, count: $0.1) }
        e.afterEachUnit = afterEachUnit
        let r = try e.run()
        _ = try ReportWriter.write(r, evaluator: e, classNames: test.classNames)
        return r
    }

    func testSmoothingCertifiesScoresItsCellsByTheVoteAndMergesAcrossShards() throws {
        let dir = temporaryDirectory("whole")
        let r = try run(dir)
        let c = try XCTUnwrap(r.certified?.first, "the smoothing defense carries its certificates")
        XCTAssertEqual(r.certified?.count, 1)
        XCTAssertEqual(c.defense, "smoothing")
        XCTAssertEqual(c.radii, [0, 0.1, 0.25, 0.5])
        XCTAssertEqual([c.selection, c.estimation, c.votes], [10, 60, 20], "every effective value is recorded")
        XCTAssertEqual(c.alpha, 0.01)
        for j in 1..<c.certifiedAccuracy.count { XCTAssertLessThanOrEqual(c.certifiedAccuracy[j], c.certifiedAccuracy[j - 1]) }
        XCTAssertGreaterThanOrEqual(c.abstainRate, 0)
        XCTAssertLessThanOrEqual(c.certifiedAccuracy[0] + c.abstainRate, 1 + 1e-12, "right, wrong or abstaining")
        XCTAssertEqual(c.l2RadiusForLinfEpsilon, Double(Float(0.1)) * 28, accuracy: 1e-9, "ε·√d, d = 784")
        XCTAssertEqual(c.certifiedAtLinfEpsilon, 0, "σ 0.3 with 60 draws certifies at most 0.3·Φ⁻¹(0.01^(1/60)) ≈ 0.43 < 2.8")
        XCTAssertEqual(r.cleanAccuracy["smoothing"], c.cleanAccuracy, "the clean column is the smoothed vote's")

        // The cells: every attack, EOT on the noisy base, scored by the vote; in the worst case like the others.
        for a in ["fgsm", "pgd"] {
            let cell = try XCTUnwrap(r.whiteBox.first { $0.defense == "smoothing" && $0.attack == a })
            XCTAssertEqual(cell.form, "adaptive: EOT (2 draws) on the noisy base, scored by the smoothed vote (20 draws, abstain = wrong)")
            XCTAssertTrue(cell.adaptive)
        }
        XCTAssertNotNil(r.worstCase["smoothing"])
        XCTAssertEqual(r.curves.filter { $0.defense == "smoothing" }.count, 2)
        // The base is the GDA defense's model: the same cached file.
        XCTAssertEqual(r.models.first { $0.name == "smoothing" }?.file, r.models.first { $0.name == "gda" }?.file)

        // Shards: smoothing in one, gda in the other; merged, the same results as the whole run.
        let s0 = temporaryDirectory("shard0"), s1 = temporaryDirectory("shard1"), merged = temporaryDirectory("merged")
        let a = try run(s0, shard: (0, 2)), b = try run(s1, shard: (1, 2))
        XCTAssertEqual(a.models.map(\.name), ["none", "smoothing"])
        XCTAssertNotNil(a.certified)
        XCTAssertNil(b.certified, "a shard without smoothing has no certificates")
        XCTAssertEqual(try EvaluationResults.merge([a, b]), r)
        XCTAssertEqual(try EvaluationResults.merge([b, a]), r, "in either order")
        XCTAssertEqual(try ReportWriter.merge([s0, s1], into: merged), r)

        // The report's section: the table by radius, the formula and the paper.
        let md = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
        XCTAssertTrue(md.contains("## Randomized smoothing: certified accuracy (Cohen, Rosenfeld & Kolter 2019)"))
        XCTAssertTrue(md.contains("R = σ·Φ⁻¹(p̲_A)"))
        let row = try XCTUnwrap(md.split(separator: "\n").first { $0.hasPrefix("| smoothing | 0.3 |") }, md)
        XCTAssertTrue(row.contains(String(format: "%.1f%%", c.certifiedAccuracy[0] * 100)), String(row))
        let json = try String(contentsOfFile: dir + "/results.json", encoding: .utf8)
        XCTAssertTrue(json.contains("\"certified\""), "results.json carries the certificates")
    }

    /// A run stopped inside the smoothing defense's cells resumes to the uninterrupted run's results (the vote's
    /// draws are keyed by image index, the EOT draws by unit and image).
    func testAKillInsideTheSmoothingDefenseResumesToTheUninterruptedResults() throws {
        struct Interrupted: Error {}
        let reference = try run(temporaryDirectory("whole"))
        let dir = temporaryDirectory("killed-in-smoothing")
        var finished: [String] = []
        XCTAssertThrowsError(try run(dir, afterEachUnit: { unit in
            finished.append(unit)
            if unit == "white smoothing fgsm" { throw Interrupted() }
        })) { XCTAssertTrue($0 is Interrupted) }
        XCTAssertTrue(finished.contains("certified smoothing") && !finished.contains("white smoothing pgd"), "\(finished)")
        XCTAssertEqual(try run(dir), reference)
    }
}
