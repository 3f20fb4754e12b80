@_spi(Support) import AdvKit
import AdvKitTestSupport
import Foundation
import XCTest

/// `advkit train --model mine.onnx --out hardened.onnx`: the user's ONNX model fine-tuned with a training-time defense
/// and written back as ONNX, which `advkit predict` reads with the accuracy train printed.
final class ONNXTrainCommandLineTests: XCTestCase {
    private var dir = ""
    private let cnn = RepositoryPaths.root + "/Tests/Fixtures/onnx/cnn_dynamo.onnx"

    override func setUpWithError() throws {
        _ = try fashionMNISTTest()  // a skip without the data
        dir = temporaryDirectory()
    }

    /// The percentage in "<prefix> 85.80%".
    private func percent(after prefix: String, in text: String) -> String? {
        guard let r = text.range(of: prefix + " ") else { return nil }
        return text[r.upperBound...].split(separator: "%").first.map(String.init)
    }

    /// One epoch of PGD adversarial training on 300 images; the written ONNX file gives `predict` the test accuracy
    /// train printed (on the same 500 test images), stands alone (no external data beside it), and keeps the graph.
    func testPGDFineTunedONNXModelIsWrittenAsONNX() throws {
        let out = dir + "/hardened.onnx"
        var (code, stdout, stderr) = try runAdvkit(["train", "--model", cnn, "--defense", "pgd-at", "--at-steps", "3", "--out", out,
                                                    "--train-limit", "300", "--limit", "500", "--epochs", "1", "--quiet"])
        XCTAssertEqual(code, 0, stderr)
        XCTAssertTrue(stdout.contains("fine-tuned cnn_dynamo.onnx (defense pgd-at) on 300 images"), stdout)
        let trained = try XCTUnwrap(percent(after: "test accuracy", in: stdout), stdout)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        XCTAssertEqual(files, ["hardened.onnx", "hardened.onnx.safetensors", "hardened.onnx.safetensors.state"])

        (code, stdout, stderr) = try runAdvkit(["predict", "--model", out, "--limit", "500"])
        XCTAssertEqual(code, 0, stderr)
        XCTAssertEqual(percent(after: "accuracy", in: stdout), trained, stdout)
        let original = try ONNXModel.read(cnn), written = try ONNXModel.read(out)
        XCTAssertEqual(written.graph.nodes, original.graph.nodes)
        XCTAssertEqual(written.graph.inputs, original.graph.inputs)
        XCTAssertEqual(written.graph.outputs, original.graph.outputs)
        XCTAssertNotEqual(written.graph.initializers, original.graph.initializers, "fine-tuned")
    }

    /// Interrupted after epoch 1 and resumed: the same ONNX file, byte for byte, as an uninterrupted 2-epoch run.
    func testResumeGivesTheUninterruptedONNXFile() throws {
        let common = ["--model", cnn, "--defense", "fgsm-at", "--train-limit", "200", "--limit", "100", "--quiet"]
        var (code, _, stderr) = try runAdvkit(["train"] + common + ["--epochs", "2", "--out", dir + "/full.onnx"])
        XCTAssertEqual(code, 0, stderr)
        (code, _, stderr) = try runAdvkit(["train"] + common + ["--epochs", "1", "--out", dir + "/part.onnx"])
        XCTAssertEqual(code, 0, stderr)
        let afterOne = try Data(contentsOf: URL(fileURLWithPath: dir + "/part.onnx"))
        (code, _, stderr) = try runAdvkit(["train"] + common + ["--epochs", "2", "--out", dir + "/part.onnx", "--resume"])
        XCTAssertEqual(code, 0, stderr)
        let resumed = try Data(contentsOf: URL(fileURLWithPath: dir + "/part.onnx"))
        XCTAssertNotEqual(resumed, afterOne, "epoch 2 rewrote the file")
        XCTAssertEqual(resumed, try Data(contentsOf: URL(fileURLWithPath: dir + "/full.onnx")))
    }

    /// What does not apply is a one-line error, and nothing is written.
    func testOptionsThatDoNotApplyToAnONNXModel() throws {
        let cases: [([String], String)] = [
            (["--out", dir + "/a.onnx"], "give the model to fine-tune with --model FILE.onnx"),
            (["--model", cnn, "--defense", "brelu", "--out", dir + "/b.onnx"], "an .onnx model's graph is its architecture"),
            (["--model", cnn, "--defense", "gda+brelu", "--out", dir + "/c.onnx"], "an .onnx model's graph is its architecture"),
            (["--model", cnn, "--arch", "cnn", "--out", dir + "/d.onnx"], "--arch does not apply to an .onnx model"),
            (["--model", cnn, "--out", cnn], "--out must not be the --model file itself"),
            (["--model", dir + "/missing.safetensors", "--arch", "cnn", "--out", dir + "/e.onnx"], "needs an .onnx --model"),
        ]
        for (args, message) in cases {
            let (code, _, stderr) = try runAdvkit(["train", "--train-limit", "10", "--limit", "10", "--quiet"] + args)
            XCTAssertNotEqual(code, 0, "\(args)")
            XCTAssertTrue(stderr.contains(message), "\(args): \(stderr)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }
}
