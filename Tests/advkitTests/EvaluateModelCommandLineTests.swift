@_spi(Support) import AdvKit
import AdvKitTestSupport
import Foundation
import XCTest

/// `advkit evaluate --model`: a user's ONNX model evaluated on --dataset, and on the same images given as .npy files,
/// gives the same numbers and the same hardened model; the options that need what is not there are clear errors.
final class EvaluateModelCommandLineTests: XCTestCase {
    private let cnn = RepositoryPaths.root + "/Tests/Fixtures/onnx/cnn_dynamo.onnx"

    func testTheSameEvaluationFromTheDatasetAndFromNumPyFiles() throws {
        let fmnist = Dataset.defaultFashionMNISTDirectory
        guard FileManager.default.fileExists(atPath: fmnist + "/t10k-images-idx3-ubyte.gz") else {
            throw XCTSkip("Fashion-MNIST is not installed at \(fmnist) (scripts/setup.sh installs it)")
        }
        let dir = temporaryDirectory()
        // The files: the whole training split (the defender's and attacker's halves are its two halves) and the
        // first 32 test images, as uint8 NumPy arrays with int64 labels.
        let train = try Dataset.mnistFormat(directory: fmnist, split: .train), test = try Dataset.mnistFormat(directory: fmnist, split: .test).prefix(32)
        for (name, d) in [("train", train), ("test", test)] {
            try NumPy.write(NumPy.Array(type: .uint8, shape: [d.count, 28, 28], values: d.images.bytes.map(Float.init)), to: "\(dir)/\(name)_x.npy")
            try NumPy.write(NumPy.Array(type: .int64, shape: [d.count], values: d.labels.map(Float.init)), to: "\(dir)/\(name)_y.npy")
        }
        let common = ["evaluate", "--model", cnn, "--defenses", "none,fgsm-at,noise", "--attacks", "fgsm,pgd", "--query-attacks", "square",
                      "--queries", "30", "--limit", "32", "--train-limit", "200", "--epochs", "1", "--pgd-steps", "3", "--eps", "0,0.1",
                      "--threat", "white", "--quiet"]
        var (code, out, err) = try runAdvkit(common + ["--dataset", "fashion-mnist", "--out", dir + "/a"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("-> \(dir)/a/hardened/fgsm-at.onnx"), out)
        (code, out, err) = try runAdvkit(common + ["--images", dir + "/test_x.npy", "--labels", dir + "/test_y.npy",
                                                   "--train-images", dir + "/train_x.npy", "--train-labels", dir + "/train_y.npy", "--out", dir + "/b"])
        XCTAssertEqual(code, 0, err)
        let a = try ReportWriter.read(dir + "/a").results, b = try ReportWriter.read(dir + "/b").results
        XCTAssertEqual(a.settings.dataset, "fashion-mnist")
        XCTAssertEqual(b.settings.dataset, "files")
        XCTAssertEqual(a.whiteBox, b.whiteBox)
        XCTAssertEqual(a.curves, b.curves)
        XCTAssertEqual(a.cleanAccuracy, b.cleanAccuracy)
        XCTAssertEqual(a.worstCase, b.worstCase)
        XCTAssertEqual(a.models.map(\.hardenedSHA256), b.models.map(\.hardenedSHA256), "the same fine-tuned ONNX file")
        XCTAssertEqual(a.settings.model?.sha256, try SHA256.hex(ofFile: cnn))
        // The hardened model predicts, from its ONNX file, with the accuracy the report gives it.
        let at = try XCTUnwrap(a.models.first { $0.name == "fgsm-at" })
        (code, out, err) = try runAdvkit(["predict", "--model", dir + "/a/" + at.hardenedFile!, "--limit", "32", "--json", dir + "/p.json"])
        XCTAssertEqual(code, 0, err)
        XCTAssertEqual(try readJSONObject(dir + "/p.json")["accuracy"] as? Double ?? -1, at.cleanAccuracy, accuracy: 1e-12)

        // Test images alone: the undefended model and the noise defense, white-box; anything else names what it needs.
        (code, _, err) = try runAdvkit(["evaluate", "--model", cnn, "--images", dir + "/test_x.npy", "--labels", dir + "/test_y.npy",
                                        "--attacks", "fgsm", "--query-attacks", "none", "--limit", "8", "--eps", "0,0.1", "--quiet",
                                        "--out", dir + "/c"])
        XCTAssertEqual(code, 0, err)
        XCTAssertEqual(try ReportWriter.read(dir + "/c").results.models.map(\.name), ["none", "noise"])
        (code, _, err) = try runAdvkit(["evaluate", "--model", cnn, "--images", dir + "/test_x.npy", "--labels", dir + "/test_y.npy",
                                        "--defenses", "none,pgd-at", "--out", dir + "/d"])
        XCTAssertNotEqual(code, 0)
        XCTAssertTrue(err.contains("training images are needed for the pgd-at defense"), err)
        for (args, message) in [(["--defenses", "none,brelu"], "brelu changes the architecture"),
                                (["--attacks", "square"], "square is query-based: give it to --query-attacks"),
                                (["--query-attacks", "none", "--queries", "10"], "--queries does not apply with --query-attacks none"),
                                (["--arch", "cnn"], "--arch does not apply to an .onnx model")] {
            (code, _, err) = try runAdvkit(["evaluate", "--model", cnn, "--limit", "4"] + args + ["--out", dir + "/e"])
            XCTAssertNotEqual(code, 0, "\(args)")
            XCTAssertTrue(err.contains(message), "\(args): \(err)")
        }
    }
}
