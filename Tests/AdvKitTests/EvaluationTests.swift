@_spi(Support) @_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

final class EvaluationTests: XCTestCase {
    private func tinySettings() -> EvaluationSettings {
        var s = EvaluationSettings.quickSettings()
        s.defenses = EvaluationSettings.specs(["none", "fgsm-at", "feature-squeezing", "noise", "detector"], epsilon: s.epsilon, quick: true)
        s.attacks = [.fgsm, .pgd, .deepfool(steps: 50)]
        s.queryAttacks = []
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
        for f in ["results.json", "report.md", "report.html", "curves-fgsm.svg", "curves-pgd.svg", "gallery-fgsm.png",
                  "gallery-pgd.png", "gallery-deepfool.png", "saliency.png"] {
            XCTAssertTrue(files.contains(f), "\(f) written")
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/" + f), f)
        }
        for f in files where f.hasSuffix(".png") {
            let img = try PNG.decode(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f)), path: f)
            XCTAssertGreaterThan(img.width * img.height, 100, "\(f) decodes to a picture")
        }
        let html = try String(contentsOfFile: dir + "/report.html", encoding: .utf8)
        XCTAssertEqual(html.components(separatedBy: "<svg class=").count - 1, files.filter { $0.hasSuffix(".svg") }.count,
                       "every figure is inline")
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
        XCTAssertEqual(Set(r.worstCase.keys), Set(tinySettings().defenses.map(\.name)))
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

    /// A run stopped inside the noise defense's cells resumes to the uninterrupted run's results: the noisy
    /// classifier's draws are keyed by the unit they are for, not by how many forward passes came before (which a
    /// resumed run, skipping the finished units, would not repeat).
    func testAKillInsideTheNoiseDefenseResumesToTheUninterruptedResults() throws {
        struct Interrupted: Error {}
        let (reference, _) = try run(temporaryDirectory("whole"))
        let dir = temporaryDirectory("killed-in-noise")
        var finished: [String] = []
        XCTAssertThrowsError(try run(dir, afterEachUnit: { unit in
            finished.append(unit)
            if unit == "white noise pgd" { throw Interrupted() }
        })) { XCTAssertTrue($0 is Interrupted) }
        XCTAssertTrue(finished.contains("white noise fgsm") && !finished.contains("curve noise pgd"), "stopped inside the noise defense: \(finished)")
        let (resumed, _) = try run(dir)
        XCTAssertEqual(resumed, reference, "the resumed noise cells draw what the uninterrupted run drew")
        let noisy = try XCTUnwrap(resumed.whiteBox.first { $0.defense == "noise" && $0.attack == "pgd" })
        XCTAssertEqual(noisy.form, "adaptive: EOT (8 draws)")
    }

    /// `Evaluator` on a user's ONNX model: the undefended model is theirs as it is, the trained defenses fine-tune it
    /// and are written back as ONNX that reads back to the same logits, results.json and the report say what was
    /// evaluated, AutoAttack enters the white-box table and Square/HopSkipJump the black-box one.
    func testAUsersONNXModelIsEvaluatedAndHardenedBackToONNX() throws {
        let path = RepositoryPaths.root + "/Tests/Fixtures/onnx/cnn_dynamo.onnx"
        var s = tinySettings()
        s.defenses = [.none, .fgsmAT(epsilon: 0.1, ratio: 0.5), .noise(sigma: 0.1, draws: 2)]
        s.attacks = [.fgsm, .pgd, .autoattack(steps: 3, squareQueries: 20)]
        s.queryAttacks = [.square(queries: 20), .hopSkipJump(queries: 30)]
        s.limit = 16
        s.trainImages = 64
        let train = squaresDataset(count: 160, classes: 10, size: 28, seed: 7), test = squaresDataset(count: 16, classes: 10, size: 28, seed: 8)
        let dir = temporaryDirectory("user-onnx")
        let user = try UserModel.onnx(path)
        let e = try Evaluator(settings: s, train: train, test: test, outputDirectory: dir, userModel: user)
        e.progressStyle = .silent
        let r = try e.run()
        _ = try ReportWriter.write(r, evaluator: e, classNames: test.classNames)

        let model = try XCTUnwrap(r.settings.model)
        XCTAssertEqual(model.format, "onnx")
        XCTAssertEqual(model.sha256, try SHA256.hex(ofFile: path))
        XCTAssertEqual(model.inputShape, [1, 28, 28])
        XCTAssertNotNil(model.opsets?[""])
        XCTAssertTrue(model.operators?.contains("Conv") == true)
        let none = try XCTUnwrap(r.models.first { $0.name == "none" })
        XCTAssertEqual(none.file, path, "the undefended model is the user's file")
        XCTAssertNil(none.hardenedFile)
        XCTAssertEqual(r.cleanAccuracy["none"]!, try ONNXClassifier(contentsOf: path).accuracy(test.images, labels: test.labels), accuracy: 1e-12)

        // The fine-tuned model, written back as ONNX, computes what the evaluated (cached) one computes.
        let at = try XCTUnwrap(r.models.first { $0.name == "fgsm-at" })
        let hardened = try XCTUnwrap(at.hardenedFile)
        XCTAssertEqual(hardened, "hardened/fgsm-at.onnx")
        XCTAssertEqual(try SHA256.hex(ofFile: dir + "/" + hardened), at.hardenedSHA256)
        let cached = try ONNXClassifier(contentsOf: path)
        try cached.load(from: dir + "/" + at.file)
        let written = try ONNXClassifier(contentsOf: dir + "/" + hardened)
        let a = cached.logits(of: test.images), b = written.logits(of: test.images)
        // float32 logits of the same weights; the write-back only moves folded batch norms and transposes (none here).
        XCTAssertLessThan(zip(a.scalars, b.scalars).map { abs($0 - $1) }.max()!, 1e-4)
        XCTAssertEqual(written.accuracy(test.images, labels: test.labels), at.cleanAccuracy, accuracy: 1e-12)
        XCTAssertNotEqual(a.scalars, try ONNXClassifier(contentsOf: path).logits(of: test.images).scalars, "fine-tuning changed the model")

        // AutoAttack in the white-box table, with its components' counts; Square and HopSkipJump in the black-box one.
        let aa = try XCTUnwrap(r.whiteBox.first { $0.defense == "none" && $0.attack == "autoattack" })
        XCTAssertEqual(aa.brokenBy.map { Set($0.keys) }, ["apgd-ce", "apgd-t", "fab-t", "square"])
        // The randomised defense gets AutoAttack's rand version.
        let rand = try XCTUnwrap(r.whiteBox.first { $0.defense == "noise" && $0.attack == "autoattack" })
        XCTAssertEqual(rand.brokenBy.map { Set($0.keys) }, ["apgd-ce", "apgd-dlr"])
        XCTAssertTrue(rand.form.contains("AutoAttack rand"), rand.form)
        for d in ["none", "fgsm-at", "noise"] {
            let worst = try XCTUnwrap(r.worstCase[d])
            for c in r.whiteBox + r.blackBox where c.defense == d && c.attack != "deepfool" {
                XCTAssertLessThanOrEqual(worst, c.robustAccuracy, "\(d): the worst case is no better than \(c.attack) (\(c.form))")
            }
            for q in ["square", "hsja"] {
                let cell = try XCTUnwrap(r.blackBox.first { $0.defense == d && $0.attack == q }, "\(d) / \(q)")
                XCTAssertTrue(cell.form.hasPrefix("query-based"), cell.form)
            }
        }
        let md = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
        XCTAssertTrue(md.contains("**Model evaluated:** `\(path)` (onnx"), String(md.prefix(400)))
        XCTAssertTrue(md.contains("**Headline:** clean accuracy"), String(md.prefix(600)))
        XCTAssertTrue(md.contains("AutoAttack (standard) robust accuracy at L∞ ε = 0.1"))
        XCTAssertTrue(md.contains("fgsm-at → `hardened/fgsm-at.onnx`"))
        XCTAssertTrue(md.contains("the randomised defense (noise) got its rand version"), md)

        // An architecture-changing defense is refused for a user's model; no training images: only none and noise.
        s.defenses = [.none, .boundedReLU(bound: 1)]
        XCTAssertThrowsError(try Evaluator(settings: s, train: train, test: test, outputDirectory: dir, userModel: user)) {
            XCTAssertTrue("\($0)".contains("'brelu' changes the architecture"), "\($0)")
        }
        s.defenses = [.none, .fgsmAT(epsilon: 0.1, ratio: 0.5)]
        XCTAssertThrowsError(try Evaluator(settings: s, train: nil, test: test, outputDirectory: dir, userModel: user)) {
            XCTAssertTrue("\($0)".contains("training images are needed for the fgsm-at defense"), "\($0)")
        }
    }

    /// `--shard` and `merge` on a user's model: each share fine-tunes and writes back only its own defenses, and
    /// the merged folder has the one run's results and every hardened file the results name.
    func testAUsersModelShardsAndMergesToTheOneRunsResults() throws {
        let path = RepositoryPaths.root + "/Tests/Fixtures/onnx/cnn_dynamo.onnx"
        var s = tinySettings()
        s.defenses = [.none, .fgsmAT(epsilon: 0.1, ratio: 0.5), .noise(sigma: 0.1, draws: 2)]
        s.attacks = [.fgsm, .pgd]
        s.limit = 16
        s.trainImages = 64
        let train = squaresDataset(count: 160, classes: 10, size: 28, seed: 7), test = squaresDataset(count: 16, classes: 10, size: 28, seed: 8)
        func evaluate(_ dir: String, shard: (index: Int, count: Int)?) throws -> EvaluationResults {
            let e = try Evaluator(settings: s, train: train, test: test, outputDirectory: dir, userModel: try UserModel.onnx(path))
            e.progressStyle = .silent
            e.shard = shard
            let r = try e.run()
            _ = try ReportWriter.write(r, evaluator: e, classNames: test.classNames)
            return r
        }
        let whole = try evaluate(temporaryDirectory("user-whole"), shard: nil)
        let s0 = temporaryDirectory("user-shard0"), s1 = temporaryDirectory("user-shard1"), merged = temporaryDirectory("user-merged")
        let a = try evaluate(s0, shard: (0, 2)), b = try evaluate(s1, shard: (1, 2))
        XCTAssertEqual(a.models.map(\.name), ["none", "noise"])
        XCTAssertEqual(b.models.map(\.name), ["fgsm-at"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: s0 + "/hardened/fgsm-at.onnx"), "share 0 does not fine-tune fgsm-at")
        let joined = try ReportWriter.merge([s0, s1], into: merged)
        XCTAssertEqual(joined, whole, "merging the shares gives what one run gives")
        XCTAssertEqual(joined.settings.model?.sha256, try SHA256.hex(ofFile: path))
        let at = try XCTUnwrap(joined.models.first { $0.name == "fgsm-at" })
        let hardened = try XCTUnwrap(at.hardenedFile)
        XCTAssertEqual(try SHA256.hex(ofFile: merged + "/" + hardened), at.hardenedSHA256, "the merged folder holds the hardened model it names")
        let md = try String(contentsOfFile: merged + "/report.md", encoding: .utf8)
        XCTAssertTrue(md.contains("**Model evaluated:** `\(path)` (onnx"), String(md.prefix(400)))

        // A share run at another thread count (its numbers differ in the last bits) is refused, naming both.
        let json = s1 + "/results.json"
        var doc = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        var versions = try XCTUnwrap(doc["versions"] as? [String: Any])
        versions["threads"] = (versions["threads"] as? Int ?? 1) + 7
        doc["versions"] = versions
        try JSONSerialization.data(withJSONObject: doc).write(to: URL(fileURLWithPath: json))
        XCTAssertThrowsError(try ReportWriter.merge([s0, s1], into: temporaryDirectory("user-mixed"))) {
            XCTAssertTrue("\($0)".contains("the shares ran at different thread counts"), "\($0)")
            XCTAssertTrue("\($0)".contains(s1), "\($0)")
        }
    }

    /// Issue "Honest numbers", items 1-3: each cell and curve says the form it ran, the detector's sanity checks
    /// compare its own attack with itself and report its own loss, models name their cached files, and galleries
    /// show successful attacks first.
    func testEveryCellSaysWhatRanAndTheChecksCompareLikeWithLike() throws {
        let dir = temporaryDirectory()
        let (r, _) = try run(dir)
        func cell(_ d: String, _ a: String) throws -> EvaluationResults.Cell {
            try XCTUnwrap(r.whiteBox.first { $0.defense == d && $0.attack == a }, "\(d) / \(a)")
        }
        // Forms: the detector's FGSM and DeepFool ignore the detector and say so; its PGD is the adaptive one.
        for a in ["fgsm", "deepfool"] {
            XCTAssertEqual(try cell("detector", a).form, "white-box (not adaptive)")
            XCTAssertFalse(try cell("detector", a).adaptive)
        }
        XCTAssertEqual(try cell("detector", "pgd").form, "adaptive: detector-aware PGD")
        XCTAssertTrue(try cell("detector", "pgd").adaptive)
        XCTAssertEqual(try cell("noise", "fgsm").form, "adaptive: EOT (8 draws)")
        XCTAssertTrue(try cell("none", "pgd").adaptive)
        XCTAssertFalse(try cell("feature-squeezing", "pgd").adaptive, "BPDA leaves the squeezing detector out of the loss")
        XCTAssertTrue(r.blackBox.allSatisfy { !$0.adaptive && $0.form.hasPrefix("transfer from") })
        for c in r.curves {
            let white = try cell(c.defense, c.attack)
            XCTAssertEqual(c.form, white.form, "\(c.defense) / \(c.attack): the curve runs the cell's attack")
            XCTAssertEqual(c.adaptive, white.adaptive)
        }

        // Checks: "more steps" runs the detector-aware PGD at both step counts, so its first number is the PGD cell's.
        func check(_ d: String, _ prefix: String) throws -> EvaluationResults.Check {
            try XCTUnwrap(r.sanity.first { $0.defense == d && $0.check.hasPrefix(prefix) }, "\(d): \(prefix)")
        }
        let steps = tinySettings().pgdSteps
        for d in ["none", "noise", "detector"] {
            let pgd = try cell(d, "pgd")
            let more = try check(d, "more PGD steps").detail
            XCTAssertTrue(more.contains(String(format: "PGD (%@): %d steps %.1f%%, %d steps", pgd.form, steps, pgd.robustAccuracy * 100, 2 * steps)),
                          "\(d): \(more)")
        }
        let detectorLoss = try check("detector", "the loss rises").detail, plainLoss = try check("none", "the loss rises").detail
        XCTAssertTrue(detectorLoss.contains("CE(the model) - 1·CE(detector, clean)"), detectorLoss)
        XCTAssertTrue(detectorLoss.contains("after PGD (adaptive: detector-aware PGD, \(steps) steps)"), detectorLoss)
        XCTAssertNotEqual(detectorLoss, plainLoss, "the detector's check reports the loss of the attack it ran")
        XCTAssertTrue(try check("feature-squeezing", "the loss rises").detail.contains("the squeezed model"))
        for c in r.curves {
            let rises = try check(c.defense, "robust accuracy does not rise with epsilon (\(c.attack.uppercased()))")
            XCTAssertEqual(rises.passed, c.rise() == nil, "\(c.defense) / \(c.attack)")
        }

        // The report: † on cells that are not adaptive, each form named, the footnote; the JSON has the flag.
        let md = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
        let detectorRow = try XCTUnwrap(md.split(separator: "\n").first { $0.hasPrefix("| detector |") })
        XCTAssertEqual(detectorRow.components(separatedBy: " †").count - 1, 2, "FGSM and DeepFool are marked: \(detectorRow)")
        XCTAssertTrue(detectorRow.hasSuffix("| fgsm: white-box (not adaptive); pgd: adaptive: detector-aware PGD; deepfool: white-box (not adaptive) |"),
                      String(detectorRow))
        XCTAssertTrue(md.contains("| none | ") && md.contains(" | white-box |"))
        XCTAssertTrue(md.contains("† not adaptive: the attack's loss leaves out part of the defense"))
        XCTAssertTrue(md.contains("| detector | fgsm † |"), "the curve table marks the detector's FGSM curve")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/results.json"))) as! [String: Any]
        let results = json["results"] as! [String: Any]
        let cells = results["whiteBox"] as! [[String: Any]]
        XCTAssertEqual(cells.first { $0["defense"] as? String == "detector" && $0["attack"] as? String == "fgsm" }?["adaptive"] as? Bool, false)

        // Models: the real cached files, relative to the output folder, with their SHA-256.
        XCTAssertEqual(r.models.count, tinySettings().defenses.count)
        for m in r.models {
            XCTAssertTrue(m.file.hasPrefix("models/") && m.file.hasSuffix(".safetensors"), "\(m.name): \(m.file)")
            XCTAssertEqual(try SHA256.hex(ofFile: dir + "/" + m.file), m.sha256, m.name)
            XCTAssertEqual(m.detectorFile != nil, m.name == "detector")
            if let f = m.detectorFile { XCTAssertEqual(try SHA256.hex(ofFile: dir + "/" + f), m.detectorSHA256) }
        }
        let none = try XCTUnwrap(r.models.first { $0.name == "none" })
        XCTAssertEqual(r.models.first { $0.name == "noise" }?.file, none.file, "the noise defense wraps the undefended model")

        // Galleries: the undefended model's FGSM outcomes, recomputed from its recorded file: fooled images first.
        let test = squaresDataset(count: 24, classes: 4, size: 28, seed: 2)
        let model = Model(.cnn, inputShape: test.imageShape, classes: 4, seed: 0)
        try model.load(from: dir + "/" + none.file)
        let outcomes = try FGSM(epsilon: tinySettings().epsilon).run(model, images: test.images, labels: test.labels, seed: 0).outcomes
        let fooled = outcomes.indices.filter { outcomes[$0].success }
        let failed = outcomes.indices.filter { outcomes[$0].cleanPrediction == outcomes[$0].label && !outcomes[$0].success }
        let wrong = outcomes.indices.filter { outcomes[$0].cleanPrediction != outcomes[$0].label }
        let gallery = try XCTUnwrap(r.galleries.first { $0.attack == "fgsm" })
        XCTAssertEqual(gallery.indices, Array((fooled + failed + wrong).prefix(6)))
        XCTAssertEqual(gallery.fooled, min(6, fooled.count))
        XCTAssertEqual(gallery.fooled + gallery.failed + gallery.alreadyWrong, gallery.indices.count)
        XCTAssertEqual(r.galleries.map(\.attack), tinySettings().attacks.map(\.name))
        XCTAssertTrue(md.contains("of the 6 images shown, \(gallery.fooled) fooled the model, \(gallery.failed)"), "the caption counts them")
    }

    func testARisingCurveWarnsNamingTheDefenseAttackAndEpsilons() {
        func curve(_ acc: [Double]) -> EvaluationResults.Curve {
            .init(defense: "detector", attack: "fgsm", form: "white-box (not adaptive)", adaptive: false,
                  epsilons: Array([0, 0.1, 0.2, 0.3].prefix(acc.count)), robustAccuracy: acc)
        }
        let rising = curve([0.9, 0.4, 0.45, 0.98])
        XCTAssertEqual(rising.rise().map { [$0.from, $0.to] }, [1, 3], "the largest rise: from the lowest earlier point")
        let check = rising.riseCheck()
        XCTAssertFalse(check.passed)
        XCTAssertEqual(check.defense, "detector")
        XCTAssertEqual(check.detail, "FGSM (white-box (not adaptive)) on detector: 40.0% at eps 0.1, 98.0% at eps 0.3 (up 58.0 points)")
        XCTAssertNil(curve([0.9, 0.5, 0.1, 0]).rise(), "a falling curve")
        XCTAssertNil(curve([0.5, 0.515, 0.2, 0.22]).rise(), "wiggles of 2 points or less are noise")
        XCTAssertTrue(curve([0.5, 0.515, 0.2, 0.22]).riseCheck().passed)
        XCTAssertEqual(curve([0.2, 0.1, 0.13]).rise()?.from, 1)
    }

    /// Item 5: one version, in results.json, the report and every unit of the journal; a unit or a results.json
    /// another version wrote is not reused.
    func testTheVersionIsRecordedEverywhereAndOtherVersionsAreNotReused() throws {
        XCTAssertEqual(AdvKitVersion.string, "0.3.0")
        let dir = temporaryDirectory()
        let (reference, _) = try run(dir)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/results.json"))) as! [String: Any]
        XCTAssertEqual((json["versions"] as? [String: Any])?["advkit"] as? String, AdvKitVersion.string)
        XCTAssertTrue(try String(contentsOfFile: dir + "/report.md", encoding: .utf8).contains("AdvKit \(AdvKitVersion.string)."))
        let units = try FileManager.default.subpathsOfDirectory(atPath: dir + "/progress").filter { $0.hasSuffix(".json") }
        XCTAssertEqual(units.count, 5 * 6, "5 defenses x (3 attacks + 2 curves + checks)")
        for u in units {
            let doc = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/progress/" + u))) as? [String: Any]
            XCTAssertEqual(doc?["advkit"] as? String, AdvKitVersion.string, u)
        }
        // A unit stamped by another version is recomputed (with the same result), the others reused.
        let victim = dir + "/progress/" + (try XCTUnwrap(units.first { $0.contains("white-detector-fgsm") }))
        let stamped = try String(contentsOfFile: victim, encoding: .utf8)
        try stamped.replacingOccurrences(of: "\"advkit\":\"\(AdvKitVersion.string)\"", with: "\"advkit\":\"0.1.0\"")
            .write(toFile: victim, atomically: true, encoding: .utf8)
        var counts = (reused: 0, computed: 0)
        let (again, _) = try run(dir, units: { counts = $0 })
        XCTAssertEqual(counts.computed, 1)
        XCTAssertEqual(again, reference)
        // A results.json of another version is refused by read (and so by merge).
        var old = json
        old["versions"] = ["advkit": "0.1.0"]
        try JSONSerialization.data(withJSONObject: old).write(to: URL(fileURLWithPath: dir + "/results.json"))
        XCTAssertThrowsError(try ReportWriter.read(dir)) {
            XCTAssertTrue("\($0)".contains("written by AdvKit 0.1.0, this is \(AdvKitVersion.string)"), "\($0)")
        }
    }

    func testBadSettingsAreRejected() {
        var s = tinySettings()
        XCTAssertThrowsError(try DefenseSpec.named("tinfoil", epsilon: 0.1)) { XCTAssertTrue("\($0)".contains("unknown defense 'tinfoil'")) }
        s.defenses = [.noise(sigma: 0.1, draws: 0)]
        XCTAssertThrowsError(try s.validate()) { XCTAssertTrue("\($0)".contains("noise: draws must be >= 1, got 0"), "\($0)") }
        s = tinySettings()
        s.defenses = [.none, .none]
        XCTAssertThrowsError(try s.validate()) { XCTAssertTrue("\($0)".contains("the defense 'none' is listed twice"), "\($0)") }
        s = tinySettings()
        s.attacks = [.square(queries: 10)]
        XCTAssertThrowsError(try s.validate()) { XCTAssertTrue("\($0)".contains("square is a query-based attack"), "\($0)") }
        s = tinySettings()
        s.model = EvaluatedModel(file: "m.onnx", sha256: "00", format: "onnx", inputShape: [1, 28, 28])
        s.defenses = [.none, .boundedReLU(bound: 1)]
        XCTAssertThrowsError(try s.validate()) { XCTAssertTrue("\($0)".contains("'brelu' changes the architecture"), "\($0)") }
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
        s.defenses = [.none, try DefenseSpec.named("feature-squeezing", epsilon: s.epsilon)]
        s.attacks = [.fgsm, .pgd]
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
