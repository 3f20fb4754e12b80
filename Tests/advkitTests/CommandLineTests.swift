@_spi(Support) import AdvKit
import AdvKitTestSupport
import Foundation
import XCTest

/// The `advkit` command end to end, on small generated files in MNIST's format.
final class CommandLineTests: XCTestCase {
    private var dir = ""

    override func setUpWithError() throws {
        dir = temporaryDirectory()
        // A tiny "mnist" folder: 512 training and 64 test images of the squares task, 28×28, gzip'd IDX.
        for (split, count, seed) in [("train", 512, UInt64(1)), ("t10k", 64, 2)] {
            let d = squaresDataset(count: count, classes: 4, size: 28, seed: seed)
            try Gzip.compress(IDX.encode(d.images.reshaped([count, 28, 28]), as: .uint8))
                .write(to: URL(fileURLWithPath: "\(dir)/\(split)-images-idx3-ubyte.gz"))
            try IDX.encodeLabels(d.labels).write(to: URL(fileURLWithPath: "\(dir)/\(split)-labels-idx1-ubyte"))
        }
    }

    /// Runs the built `advkit` with `args`; returns (exit code, stdout, stderr).
    @discardableResult
    private func advkit(_ args: [String]) throws -> (Int32, String, String) { try runAdvkit(args) }

    /// Starts the built `advkit` with `args` in the background, its output discarded (for the kill tests).
    private func startAdvkit(_ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = try advkitExecutable()
        p.arguments = args
        p.environment = ["ADVKIT_THREADS": "2"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    private let data = ["--dataset", "mnist"]

    func testTrainPredictAttackRoundTrip() throws {
        let model = dir + "/m.safetensors"
        var (code, out, err) = try advkit(["train", "--arch", "mlp"] + data + ["--data-dir", dir, "--epochs", "3", "--lr", "3e-3", "--out", model, "--quiet"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("test accuracy"), out)
        (code, out, err) = try advkit(["predict", "--arch", "mlp", "--model", model] + data + ["--data-dir", dir, "--json", dir + "/p.json"])
        XCTAssertEqual(code, 0, err)
        let p = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/p.json"))) as! [String: Any]
        XCTAssertGreaterThan(p["accuracy"] as! Double, 0.9, "the squares task is learned")
        XCTAssertEqual((p["predictions"] as! [Int]).count, 64)
        (code, out, err) = try advkit(["attack", "--arch", "mlp", "--model", model] + data + ["--data-dir", dir, "--attack", "pgd", "--eps", "0.3",
                                       "--steps", "10", "--alpha", "0.05", "--out", dir + "/adv.idx", "--json", dir + "/a.json", "--quiet"])
        XCTAssertEqual(code, 0, err)
        let a = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/a.json"))) as! [String: Any]
        XCTAssertLessThan(a["robust_accuracy"] as! Double, a["clean_accuracy"] as! Double)
        XCTAssertEqual((a["per_image"] as! [Any]).count, 64)
        // The adversarial images (float32 IDX) read back through --images: the same robust accuracy.
        let adv = try IDX.readImages(dir + "/adv.idx")
        XCTAssertLessThanOrEqual(adv.max(), 1)
        try IDX.writeLabels(try IDX.readLabels(dir + "/t10k-labels-idx1-ubyte"), to: dir + "/labels.idx")
        (code, out, err) = try advkit(["predict", "--arch", "mlp", "--model", model, "--images", dir + "/adv.idx", "--labels", dir + "/labels.idx",
                                       "--json", dir + "/p2.json"])
        XCTAssertEqual(code, 0, err)
        let p2 = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/p2.json"))) as! [String: Any]
        XCTAssertEqual(p2["accuracy"] as! Double, a["robust_accuracy"] as! Double, accuracy: 1e-9)
    }

    /// kill -9 in the middle of training leaves a loadable model; --resume then ends where an uninterrupted run
    /// ends, byte for byte.
    func testKillMidTrainingThenResume() throws {
        let args = ["train", "--arch", "mlp"] + data + ["--data-dir", dir, "--epochs", "6", "--batch-size", "8", "--lr", "1e-3", "--quiet"]
        let (code, _, err) = try advkit(args + ["--out", dir + "/whole.safetensors"])
        XCTAssertEqual(code, 0, err)
        let p = try startAdvkit(args + ["--out", dir + "/killed.safetensors"])
        // Wait for the first epoch's state file, then kill without warning.
        let state = dir + "/killed.safetensors.state"
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: state) && Date() < deadline && p.isRunning { usleep(2_000) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertTrue(FileManager.default.fileExists(atPath: state), "an epoch finished before the kill")
        // Whatever moment the kill hit, the files on disk are whole: old or new, never torn.
        XCTAssertNoThrow(try Model(.mlp, inputShape: [1, 28, 28], classes: 10).load(from: dir + "/killed.safetensors"))
        XCTAssertNoThrow(try Safetensors.read(state))
        let (code2, out2, err2) = try advkit(args + ["--out", dir + "/killed.safetensors", "--resume"])
        XCTAssertEqual(code2, 0, err2 + out2)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/whole.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: dir + "/killed.safetensors")),
                       "resumed weights are byte-identical to the uninterrupted run's")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers.count <= 1, true, "at most the killed process's temporary file: \(leftovers)")
    }

    /// kill -9 in the middle of `advkit evaluate`: the next run reuses the finished cells and writes the report an
    /// uninterrupted run writes.
    func testKillMidEvaluationThenResume() throws {
        let args = ["evaluate"] + data + ["--data-dir", dir, "--defenses", "none,fgsm-at", "--attacks", "fgsm,pgd",
                                          "--limit", "32", "--train-limit", "256", "--epochs", "1", "--pgd-steps", "5", "--query-attacks", "none",
                                          "--eps", "0,0.1,0.2,0.3", "--quiet"]
        let (code, _, err) = try advkit(args + ["--out", dir + "/whole"])
        XCTAssertEqual(code, 0, err)
        let p = try startAdvkit(args + ["--out", dir + "/killed"])
        func finishedUnits() -> Int {
            let files = FileManager.default.subpaths(atPath: dir + "/killed/progress") ?? []
            return files.filter { $0.hasSuffix(".json") }.count
        }
        let deadline = Date().addingTimeInterval(120)
        while finishedUnits() < 3 && Date() < deadline && p.isRunning { usleep(2_000) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let kept = finishedUnits()
        XCTAssertGreaterThanOrEqual(kept, 3, "cells finished before the kill")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/killed/results.json"))
        let (code2, _, err2) = try advkit(Array(args.dropLast()) + ["--out", dir + "/killed"])
        XCTAssertEqual(code2, 0, err2)
        XCTAssertTrue(err2.contains("resumed: reused \(kept) finished unit(s)"), "kept \(kept): \(err2)")
        XCTAssertEqual(try ReportWriter.read(dir + "/killed").results, try ReportWriter.read(dir + "/whole").results,
                       "the resumed report equals the uninterrupted one")
        // --fresh computes everything again, to the same numbers.
        let (code3, _, err3) = try advkit(Array(args.dropLast()) + ["--out", dir + "/killed", "--fresh"])
        XCTAssertEqual(code3, 0, err3)
        XCTAssertFalse(err3.contains("resumed:"), err3)
    }

    func testTrainingAndInferenceDefensesFromTheCommandLine() throws {
        let model = dir + "/at.safetensors"
        var (code, out, err) = try advkit(["train", "--arch", "mlp"] + data + ["--data-dir", dir, "--epochs", "2", "--lr", "3e-3",
                                           "--defense", "pgd-at", "--at-eps", "0.2", "--at-steps", "3", "--at-alpha", "0.08",
                                           "--out", model, "--quiet"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("defense pgd-at"), out)
        (code, out, err) = try advkit(["train", "--arch", "mlp"] + data + ["--data-dir", dir, "--epochs", "1", "--defense", "gda+brelu",
                                       "--gda-copies", "2", "--out", dir + "/gda.safetensors", "--quiet"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("on 1536 images"), "GDA trains on the originals and 2 noisy copies: \(out)")
        for (defense, key, options) in [("feature-squeezing", "detection_rate", ["--calibration-images", "64"]),
                                        ("noise", "noisy_robust_accuracy", ["--noise-draws", "2"])] {
            (code, out, err) = try advkit(["attack", "--arch", "mlp", "--model", model] + data + ["--data-dir", dir, "--attack", "pgd",
                                           "--eps", "0.2", "--steps", "5", "--limit", "32", "--defense", defense] + options + [
                                           "--out", dir + "/adv-\(defense).idx",
                                           "--json", dir + "/\(defense).json", "--quiet"])
            XCTAssertEqual(code, 0, err)
            let j = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/\(defense).json"))) as! [String: Any]
            let d = j["defense"] as! [String: Any]
            XCTAssertEqual(d["defense"] as? String, defense)
            XCTAssertNotNil(d[key], "\(defense) reports \(key)")
        }
        (code, _, err) = try advkit(["attack", "--arch", "mlp", "--model", model] + data + ["--data-dir", dir, "--attack", "fgsm",
                                     "--defense", "feature-squeezing", "--squeezers", "blur-3", "--out", dir + "/o9.idx"])
        XCTAssertNotEqual(code, 0)
        XCTAssertTrue(err.contains("unknown squeezer 'blur-3'"), err)
    }

    func testBadInputsExitNonZeroWithAClearMessageAndWriteNothing() throws {
        let model = dir + "/m.safetensors"
        try Model(.mlp, inputShape: [1, 28, 28], classes: 10, seed: 0).save(to: model)
        try Data("not an idx file".utf8).write(to: URL(fileURLWithPath: dir + "/bad.idx"))
        let cases: [([String], String)] = [
            (["attack", "--arch", "mlp", "--model", model, "--data-dir", dir] + data + ["--attack", "fgsm", "--eps=-0.1", "--out", dir + "/o1.idx"], "--eps must be >= 0"),
            (["attack", "--arch", "mlp", "--model", model, "--data-dir", dir] + data + ["--attack", "nope", "--out", dir + "/o2.idx"], "nope"),
            (["attack", "--arch", "mlp", "--model", model, "--data-dir", dir] + data + ["--attack", "pgd", "--steps", "0", "--out", dir + "/o3.idx"], "--steps must be >= 1"),
            (["attack", "--arch", "mlp", "--model", model, "--data-dir", dir] + data + ["--attack", "fgsm", "--targeted", "--out", dir + "/o4.idx"], "--targeted needs --target-class"),
            (["attack", "--arch", "mlp", "--model", model, "--data-dir", dir] + data + ["--attack", "fgsm", "--targeted", "--target-class", "12", "--out", dir + "/o5.idx"], "--target-class 12 is outside [0, 10)"),
            (["attack", "--arch", "cnn", "--model", model, "--data-dir", dir] + data + ["--attack", "fgsm", "--out", dir + "/o6.idx"], "the tensors do not match the model"),
            (["predict", "--arch", "mlp", "--model", dir + "/missing.safetensors", "--data-dir", dir] + data, "missing.safetensors: no such file"),
            (["predict", "--arch", "mlp", "--model", model, "--images", dir + "/bad.idx", "--labels", dir + "/bad.idx"], "not a valid IDX file"),
            (["train", "--data-dir", dir + "/nowhere"] + data + ["--out", dir + "/o7.safetensors"], "no such file"),
            (["train", "--data-dir", dir] + data + ["--batch-size", "0", "--out", dir + "/o8.safetensors"], "--batch-size must be >= 1"),
            (["predict", "--model", model, "--dataset", "cifar10"], "--dataset cifar10 needs --data-dir"),
            (["frobnicate"], "frobnicate"),
        ]
        for (args, message) in cases {
            let (code, out, err) = try advkit(args)
            XCTAssertNotEqual(code, 0, "\(args) should fail")
            XCTAssertTrue((err + out).contains(message), "\(args): \"\(err)\" does not say \"\(message)\"")
            XCTAssertFalse(err.contains("Fatal error") || err.contains("Stack dump"), "\(args) crashed: \(err)")
        }
        let written = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("o") }
        XCTAssertEqual(written, [], "a failed command writes no output file")
    }

    private func readJSON(_ path: String) throws -> [String: Any] { try readJSONObject(path) }

    /// What the JSON records is what ran: every effective setting (defaults included), the model's SHA-256 and
    /// the version; the norm asked for is the norm run; fractions are read as the field writes them.
    func testTheJSONRecordsWhatRan() throws {
        let model = dir + "/m.safetensors"
        try Model(.mlp, inputShape: [1, 28, 28], classes: 10, seed: 0).save(to: model)
        let common = ["attack", "--arch", "mlp", "--model", model] + data + ["--data-dir", dir, "--limit", "16", "--quiet"]
        var (code, out, err) = try advkit(common + ["--attack", "pgd", "--out", dir + "/a.idx", "--json", dir + "/a.json"])
        XCTAssertEqual(code, 0, err)
        var j = try readJSON(dir + "/a.json")
        var s = j["settings"] as! [String: Any]
        XCTAssertEqual(s["steps"] as? Int, 40, "the default steps are recorded")
        XCTAssertEqual(s["alpha"] as! Double, 2.5 * 0.1 / 40, accuracy: 1e-9, "the default step size is recorded")
        XCTAssertEqual(s["norm"] as? String, "linf")
        XCTAssertEqual(s["random_start"] as? Bool, true)
        XCTAssertEqual(s["restarts"] as? Int, 1)
        XCTAssertEqual(s["epsilon"] as! Double, 0.1, accuracy: 1e-9)
        let m = j["model"] as! [String: Any]
        XCTAssertEqual(m["sha256"] as? String, try SHA256.hex(ofFile: model))
        XCTAssertEqual(j["advkit_version"] as? String, AdvKitVersion.string)

        (code, out, err) = try advkit(common + ["--attack", "bim", "--eps", "8/255", "--out", dir + "/b.idx", "--json", dir + "/b.json"])
        XCTAssertEqual(code, 0, err)
        s = try readJSON(dir + "/b.json")["settings"] as! [String: Any]
        XCTAssertEqual(s["epsilon"] as! Double, 8.0 / 255, accuracy: 1e-7)
        XCTAssertEqual(s["eps_given_as"] as? String, "8/255")
        XCTAssertEqual(s["steps"] as? Int, 10, "Kurakin's rule at 8/255: min(8 + 4, 1.25 * 8) = 10")

        (code, out, err) = try advkit(common + ["--attack", "fgsm", "--norm", "l2", "--eps", "1", "--out", dir + "/c.idx", "--json", dir + "/c.json"])
        XCTAssertEqual(code, 0, err)
        j = try readJSON(dir + "/c.json")
        s = j["settings"] as! [String: Any]
        XCTAssertEqual(s["norm"] as? String, "l2")
        XCTAssertEqual(s["attack"] as? String, "fgm-l2")
        for o in j["per_image"] as! [[String: Any]] {
            XCTAssertLessThanOrEqual(o["l2"] as! Double, 1 + 1e-5, "an L2 attack of radius 1 stays in the L2 ball")
        }
        XCTAssertTrue(out.contains("l2 eps 1"), out)

        (code, out, _) = try advkit(["--version"])
        XCTAssertEqual(code, 0)
        XCTAssertEqual(out.trimmingCharacters(in: .whitespacesAndNewlines), AdvKitVersion.string)
    }

    /// Options the chosen attack, defense or training does not take are errors that say who takes them; inputs
    /// that used to trap end in a one-line message; output paths are checked before any work.
    func testOptionsThatDoNotApplyAndFormerTrapsAreClearErrors() throws {
        let model = dir + "/m.safetensors"
        try Model(.mlp, inputShape: [1, 28, 28], classes: 10, seed: 0).save(to: model)
        let attack = ["attack", "--arch", "mlp", "--model", model] + data + ["--data-dir", dir, "--limit", "8"]
        func idx(_ dims: [Int]) -> Data {
            var d = Data([0, 0, 0x08, UInt8(dims.count)])
            for v in dims { d.append(contentsOf: [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)]) }
            d.append(Data(repeating: 7, count: dims.reduce(1, *)))
            return d
        }
        try idx([32, 28, 28, 3]).write(to: URL(fileURLWithPath: dir + "/nhwc.idx"))
        try idx([32, 12, 12]).write(to: URL(fileURLWithPath: dir + "/small.idx"))
        try IDX.encodeLabels([Int32](repeating: 1, count: 32)).write(to: URL(fileURLWithPath: dir + "/l32.idx"))
        FileManager.default.createFile(atPath: dir + "/afile", contents: Data())
        try FileManager.default.createDirectory(atPath: dir + "/adir", withIntermediateDirectories: true)
        let cases: [([String], String)] = [
            (attack + ["--attack", "fgsm", "--steps", "10", "--restarts", "3", "--out", dir + "/o1.idx"],
             "--steps does not apply to --attack fgsm; it is taken by bim, mifgsm, pgd, apgd, apgd-dlr, apgd-t, deepfool, cw, fab, fab-t"),
            (attack + ["--attack", "cw", "--eps", "0.05", "--out", dir + "/o2.idx"], "--eps does not apply to --attack cw"),
            (attack + ["--attack", "mifgsm", "--norm", "l2", "--out", dir + "/o3.idx"], "--attack mifgsm runs in linf only"),
            (attack + ["--attack", "pgd", "--eps", "8/0", "--out", dir + "/o4.idx"], "'8/0' is not a number or a fraction such as 0.03 or 8/255"),
            (attack + ["--attack", "fgsm", "--noise-draws", "4", "--out", dir + "/o5.idx"], "--noise-draws does not apply to --defense none"),
            (attack + ["--attack", "fgsm", "--out", dir + "/o6.idx", "--json", dir + "/adir"], "--json \(dir)/adir is a folder"),
            (attack + ["--attack", "fgsm", "--out", dir + "/nowhere/o7.idx"], "does not exist"),
            (["train", "--arch", "mlp"] + data + ["--data-dir", dir, "--at-eps", "0.1", "--out", dir + "/o8.safetensors"],
             "--at-eps does not apply to --defense none"),
            (["predict", "--model", model, "--images", dir + "/nhwc.idx", "--labels", dir + "/l32.idx"], "the reference CNN (--arch cnn) needs"),
            (["predict", "--model", model, "--images", dir + "/small.idx", "--labels", dir + "/l32.idx"], "at least 16×16, got 12×12"),
            (["predict", "--arch", "mlp", "--model", model, "--images", dir + "/small.idx", "--labels", dir + "/l32.idx"], "the model needs [256, 144]"),
            (["evaluate", "--quick", "--out", dir + "/afile"], "--out \(dir)/afile is a file"),
        ]
        for (args, message) in cases {
            let (code, out, err) = try advkit(args)
            // 1: a failure in the work, 64: ArgumentParser's usage error; a trap would be 132 or 133.
            XCTAssertTrue(code == 1 || code == 64, "\(args) should fail with exit 1 or 64, not \(code) (a trap): \(err)")
            XCTAssertTrue((err + out).contains(message), "\(args): \"\(err)\" does not say \"\(message)\"")
            XCTAssertFalse(err.contains("NSCocoaErrorDomain") || err.contains("Fatal error") || err.contains("precondition"), err)
        }
        let written = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("o") }
        XCTAssertEqual(written, [], "a failed command writes no output file")
    }

    /// An ONNX export of the PyTorch-trained reference CNN (Tests/Fixtures/onnx) on the first 1,024 Fashion-MNIST test
    /// images: PyTorch's accuracy, and FGSM's robust accuracy; the same adversarial class image by image as the
    /// safetensors path where ../shared has the weights.
    func testAnONNXModelFromTheCommandLine() throws {
        _ = try fashionMNISTTest()
        let onnx = RepositoryPaths.root + "/Tests/Fixtures/onnx/cnn_dynamo.onnx"
        var (code, out, err) = try advkit(["predict", "--model", onnx, "--dataset", "fashion-mnist", "--limit", "1024", "--json", dir + "/p.json"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("accuracy 89.36% (915 of 1024 images)"), out)
        let p = try readJSON(dir + "/p.json")
        XCTAssertEqual((p["logits"] as! [[Double]]).count, 1024)
        XCTAssertEqual((p["model"] as! [String: Any])["arch"] as? String, "onnx")
        (code, out, err) = try advkit(["attack", "--model", onnx, "--dataset", "fashion-mnist", "--limit", "1024", "--attack", "fgsm",
                                       "--eps", "0.1", "--out", dir + "/adv.idx", "--json", dir + "/a.json", "--quiet"])
        XCTAssertEqual(code, 0, err)
        let a = try readJSON(dir + "/a.json")
        XCTAssertEqual(a["robust_accuracy"] as! Double, 168.0 / 1024, accuracy: 1e-9, "16.41%, as PyTorch's weights give through safetensors")
        (code, _, err) = try advkit(["predict", "--model", onnx, "--arch", "cnn", "--limit", "4"])
        XCTAssertTrue(code != 0 && err.contains("--arch does not apply to an .onnx model"), err)
        (code, _, err) = try advkit(["predict", "--model", RepositoryPaths.root + "/Tests/Fixtures/onnx/resnet_bn_norm.onnx", "--limit", "4"])
        XCTAssertTrue(code != 0 && err.contains("the model takes images of shape [3, 32, 32]"), err)
        guard FileManager.default.fileExists(atPath: RepositoryPaths.peerModel) else { return }
        (code, _, err) = try advkit(["attack", "--model", RepositoryPaths.peerModel, "--dataset", "fashion-mnist", "--limit", "1024",
                                     "--attack", "fgsm", "--eps", "0.1", "--out", dir + "/adv2.idx", "--json", dir + "/b.json", "--quiet"])
        XCTAssertEqual(code, 0, err)
        let classes = { (j: [String: Any]) in (j["per_image"] as! [[String: Any]]).map { $0["adversarial_prediction"] as! Int } }
        XCTAssertEqual(classes(a), classes(try readJSON(dir + "/b.json")), "the same adversarial class, image by image")
    }

    /// The AutoAttack-grade attacks from the command line: the ensemble records which component broke each image,
    /// the query attacks record each image's queries within the budget, and options that do not apply are refused.
    func testAutoAttackAndQueryAttacksFromTheCommandLine() throws {
        let model = dir + "/m.safetensors"
        var (code, out, err) = try advkit(["train", "--arch", "mlp"] + data + ["--data-dir", dir, "--epochs", "3", "--lr", "3e-3", "--out", model, "--quiet"])
        XCTAssertEqual(code, 0, err)
        let common = ["attack", "--arch", "mlp", "--model", model] + data + ["--data-dir", dir, "--limit", "16", "--quiet"]
        (code, out, err) = try advkit(common + ["--attack", "autoattack", "--eps", "0.3", "--out", dir + "/aa.idx", "--json", dir + "/aa.json"])
        XCTAssertEqual(code, 0, err)
        let aa = try readJSON(dir + "/aa.json")
        let brokenBy = aa["broken_by"] as! [Any]
        XCTAssertEqual(brokenBy.count, 16)
        let components = aa["components"] as! [String]
        XCTAssertEqual(components.first, "apgd-ce")
        let broken = brokenBy.compactMap { $0 as? String }
        XCTAssertTrue(broken.allSatisfy { components.contains($0) }, "\(broken)")
        let perImage = aa["per_image"] as! [[String: Any]]
        XCTAssertEqual(broken.count, perImage.filter { $0["success"] as! Bool }.count, "every success names its component")
        (code, out, err) = try advkit(common + ["--attack", "square", "--eps", "0.3", "--queries", "50", "--out", dir + "/sq.idx", "--json", dir + "/sq.json"])
        XCTAssertEqual(code, 0, err)
        let q = try readJSON(dir + "/sq.json")["queries"] as! [Int]
        XCTAssertEqual(q.count, 16)
        XCTAssertTrue(q.allSatisfy { $0 <= 50 }, "the budget holds per image: \(q)")
        (code, _, err) = try advkit(common + ["--attack", "hsja", "--eps", "0.1", "--out", dir + "/o1.idx"])
        XCTAssertTrue(code != 0 && err.contains("--eps does not apply to --attack hsja"), err)
        (code, _, err) = try advkit(common + ["--attack", "pgd", "--queries", "10", "--out", dir + "/o2.idx"])
        XCTAssertTrue(code != 0 && err.contains("--queries does not apply to --attack pgd; it is taken by square, hsja"), err)
        (code, _, err) = try advkit(common + ["--attack", "apgd-t", "--targeted", "--target-class", "1", "--out", dir + "/o3.idx"])
        XCTAssertTrue(code != 0 && err.contains("apgd-t chooses its own targets"), err)
    }
}
