@_spi(Support) import AdvKit
import AdvKitTestSupport
import Foundation
import XCTest

/// `advkit predict` and `advkit attack` on your own files: PNG/JPEG folders and NumPy arrays in, PNG folders and
/// .npy out, labels optional, hostile files refused.
final class DataCommandLineTests: XCTestCase {
    private var dir = ""
    private let fixtures = RepositoryPaths.root + "/Tests/Fixtures/data"
    private let cnn = RepositoryPaths.root + "/Tests/Fixtures/onnx/cnn_dynamo.onnx"
    private let resnet = RepositoryPaths.root + "/Tests/Fixtures/onnx/resnet_bn_norm.onnx"

    override func setUpWithError() throws { dir = temporaryDirectory() }

    /// Runs the built `advkit` with `args`; returns (exit code, stdout, stderr).
    @discardableResult
    private func advkit(_ args: [String]) throws -> (Int32, String, String) { try runAdvkit(args) }

    private func readJSON(_ path: String) throws -> [String: Any] { try readJSONObject(path) }

    /// The class folder names of scripts/data/make_fixtures.py: sorted, they keep Fashion-MNIST's class order.
    private static let folders = ["0_T-shirt-top", "1_Trouser", "2_Pullover", "3_Dress", "4_Coat", "5_Sandal", "6_Shirt", "7_Sneaker", "8_Bag", "9_Ankle-boot"]

    /// Writes `data` as scripts/data/make_fixtures.py does with Pillow and NumPy: a PNG folder in class folders, a
    /// uint8 (N, H, W) .npy, a float32 (N, H, W, C) .npy and int64 labels.
    private func writeFiles(_ data: Dataset, to out: String) throws {
        let n = data.count, hw = 28 * 28
        let bytes = data.images.bytes
        for k in 0..<10 { try FileManager.default.createDirectory(atPath: "\(out)/png/\(Self.folders[k])", withIntermediateDirectories: true) }
        for i in 0..<n {
            let img = PNG.Image(width: 28, height: 28, channels: 1, pixels: Array(bytes[(i * hw)..<((i + 1) * hw)]))
            try PNG.encode(img).write(to: URL(fileURLWithPath: "\(out)/png/\(Self.folders[Int(data.labels[i])])/\(String(format: "%05d", i)).png"))
        }
        try NumPy.write(NumPy.Array(type: .uint8, shape: [n, 28, 28], values: bytes.map(Float.init)), to: out + "/uint8_nhw.npy")
        try NumPy.write(NumPy.Array(type: .float32, shape: [n, 28, 28, 1], values: bytes.map { Float($0) / 255 }), to: out + "/float32_nhwc.npy")
        try NumPy.write(NumPy.Array(type: .int64, shape: [n], values: data.labels.map(Float.init)), to: out + "/labels.npy")
    }

    /// The PyTorch-trained reference CNN (its ONNX export) on the first 1,024 Fashion-MNIST test images as a PNG
    /// folder and as .npy (uint8 N,H,W and float32 N,H,W,C): the IDX figures, 89.36% and FGSM (eps 0.1) 16.41%.
    /// Then the attack writes PNGs, and reading them back gives exactly the robust accuracy it reported.
    func testFashionMNIST1024AsPNGAndNumPyGiveTheIDXFigures() throws {
        let test = try fashionMNISTTest().prefix(1024)
        try writeFiles(test, to: dir)
        let inputs: [(String, [String])] = [("png", ["--images", dir + "/png"]),
                                            ("uint8", ["--images", dir + "/uint8_nhw.npy", "--labels", dir + "/labels.npy"]),
                                            ("float32", ["--images", dir + "/float32_nhwc.npy", "--labels", dir + "/labels.npy"])]
        for (name, args) in inputs {
            var (code, out, err) = try advkit(["predict", "--model", cnn] + args + ["--json", "\(dir)/p-\(name).json"])
            XCTAssertEqual(code, 0, err)
            XCTAssertTrue(out.contains("accuracy 89.36% (915 of 1024 images)"), "\(name): \(out)")
            XCTAssertTrue(out.contains("predicted classes: T-shirt/top ") || out.contains("predicted classes: 0_T-shirt-top "), out)
            (code, out, err) = try advkit(["attack", "--model", cnn] + args + ["--attack", "fgsm", "--eps", "0.1", "--out", "\(dir)/adv-\(name).idx",
                                                                             "--json", "\(dir)/a-\(name).json", "--quiet"])
            XCTAssertEqual(code, 0, err)
            let a = try readJSON("\(dir)/a-\(name).json")
            XCTAssertEqual(a["robust_accuracy"] as! Double, 168.0 / 1024, accuracy: 1e-9, "\(name): 16.41%, as through IDX")
        }
        let p = try readJSON(dir + "/p-png.json")
        XCTAssertEqual((p["data"] as! [String: Any])["class_names"] as! [String], Self.folders, "the folder names are the class names")
        XCTAssertEqual((p["files"] as! [String]).count, 1024)
        XCTAssertTrue((p["prediction_names"] as! [String]).allSatisfy(Self.folders.contains))

        // PNG in, PNG out: the same relative names and class folders, on the 8-bit grid, and what was reported.
        var (code, out, err) = try advkit(["attack", "--model", cnn, "--images", dir + "/png", "--attack", "fgsm", "--eps", "0.1",
                                           "--out", dir + "/adv", "--json", dir + "/a-out.json", "--quiet"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("8-bit PNG output: pixels rounded to k/255 inside the ball"), out)
        XCTAssertTrue(out.contains("adversarial classes: "), out)
        let reported = try readJSON(dir + "/a-out.json")["robust_accuracy"] as! Double
        let inputNames = try Dataset.load(images: dir + "/png").imageNames!
        let back = try Dataset.load(images: dir + "/adv")
        XCTAssertEqual(back.imageNames, inputNames, "the same relative names")
        XCTAssertEqual(back.classNames, Self.folders)
        (code, out, err) = try advkit(["predict", "--model", cnn, "--images", dir + "/adv", "--json", dir + "/p-back.json"])
        XCTAssertEqual(code, 0, err)
        XCTAssertEqual(try readJSON(dir + "/p-back.json")["accuracy"] as! Double, reported, accuracy: 1e-12,
                       "the written PNGs fool the model exactly as often as the attack reported")
        XCTAssertEqual(reported, 168.0 / 1024, accuracy: 8.0 / 1024, "rounding to 8 bits moves FGSM's figure by a few images at most")
        // .npy out keeps the input's layout.
        (code, _, err) = try advkit(["attack", "--model", cnn, "--images", dir + "/float32_nhwc.npy", "--labels", dir + "/labels.npy",
                                     "--attack", "fgsm", "--eps", "0.1", "--out", dir + "/adv.npy", "--quiet"])
        XCTAssertEqual(code, 0, err)
        let npy = try NumPy.read(dir + "/adv.npy")
        XCTAssertEqual(npy.shape, [1024, 28, 28, 1])
        XCTAssertEqual(npy.type, .float32)
    }

    /// The committed 64-image fixtures (written by NumPy and Pillow) give one answer in every form, the IDX one.
    func testEveryFormOfTheFixturesGivesTheSameAnswer() throws {
        let labels = fixtures + "/labels.npy"
        let forms: [[String]] = [["--images", fixtures + "/png"], ["--images", fixtures + "/uint8_nhw.npy", "--labels", labels],
                                 ["--images", fixtures + "/float32_nhwc.npy", "--labels", labels],
                                 ["--images", fixtures + "/stored.npz"], ["--images", fixtures + "/deflated.npz"],
                                 ["--images", fixtures + "/uint8_nhw.npy", "--labels", fixtures + "/onehot.npy"]]
        var lines: [String] = []
        for args in forms {
            let (code, out, err) = try advkit(["predict", "--model", cnn] + args)
            XCTAssertEqual(code, 0, "\(args): \(err)")
            lines.append(out.split(separator: "\n").first { $0.hasPrefix("accuracy") }.map(String.init) ?? out)
        }
        XCTAssertEqual(Set(lines).count, 1, "\(lines)")
        guard FileManager.default.fileExists(atPath: Dataset.defaultFashionMNISTDirectory + "/t10k-images-idx3-ubyte.gz") else { return }
        let (_, idx, _) = try advkit(["predict", "--model", cnn, "--dataset", "fashion-mnist", "--limit", "64"])
        XCTAssertEqual(lines[0], idx.split(separator: "\n").first { $0.hasPrefix("accuracy") }.map(String.init))
    }

    /// An RGB folder with a 3-channel (CIFAR-shaped) model; a gray folder converted to its channels; no labels.
    func testRGBAndGrayFoldersWithAThreeChannelModel() throws {
        var rng = SeededGenerator(seed: 11, stream: 2)
        for i in 0..<12 {
            let px = (0..<(32 * 32 * 3)).map { j in UInt8((Float((j / 3) % 32) * 6 + 40 * rng.nextUniform() + Float(i * 9)).truncatingRemainder(dividingBy: 256)) }
            try FileManager.default.createDirectory(atPath: dir + "/rgb", withIntermediateDirectories: true)
            try PNG.encode(PNG.Image(width: 32, height: 32, channels: 3, pixels: px)).write(to: URL(fileURLWithPath: dir + "/rgb/img\(i).png"))
            try FileManager.default.createDirectory(atPath: dir + "/gray", withIntermediateDirectories: true)
            try PNG.encode(PNG.Image(width: 32, height: 32, channels: 1, pixels: stride(from: 0, to: px.count, by: 3).map { px[$0] }))
                .write(to: URL(fileURLWithPath: dir + "/gray/img\(i).png"))
        }
        var (code, out, err) = try advkit(["predict", "--model", resnet, "--images", dir + "/rgb", "--json", dir + "/p.json"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("labels: none given, so the model's own predictions on the clean images are the labels"), out)
        XCTAssertTrue(out.contains("accuracy 100.00% (12 of 12 images)"), out)
        let p = try readJSON(dir + "/p.json")
        XCTAssertEqual((p["data"] as! [String: Any])["labels"] as? String, "model predictions (no labels given)")
        let clean = p["predictions"] as! [Int]
        (code, _, err) = try advkit(["predict", "--model", resnet, "--images", dir + "/gray"])
        XCTAssertEqual(code, 0, "gray PNGs are repeated into the model's 3 channels: \(err)")
        (code, _, err) = try advkit(["predict", "--model", resnet, "--images", dir + "/gray", "--channels", "1"])
        XCTAssertTrue(code != 0 && err.contains("the model takes images of shape [3, 32, 32]"), err)
        // Attack it and read the RGB PNGs back with the clean predictions as labels: the reported figure.
        (code, out, err) = try advkit(["attack", "--model", resnet, "--images", dir + "/rgb", "--attack", "pgd", "--eps", "8/255", "--steps", "5",
                                       "--out", dir + "/adv", "--json", dir + "/a.json", "--quiet"])
        XCTAssertEqual(code, 0, err)
        let a = try readJSON(dir + "/a.json")
        XCTAssertEqual(a["clean_accuracy"] as! Double, 1, "the labels are the clean predictions")
        XCTAssertEqual((a["data"] as! [String: Any])["labels"] as? String, "model predictions (no labels given)")
        XCTAssertEqual(try ImageDecoding.read(dir + "/adv/img0.png").channels, 3)
        try NumPy.write(NumPy.Array(type: .int64, shape: [12], values: clean.map(Float.init)), to: dir + "/clean.npy")
        (code, _, err) = try advkit(["predict", "--model", resnet, "--images", dir + "/adv", "--labels", dir + "/clean.npy", "--json", dir + "/b.json"])
        XCTAssertEqual(code, 0, err)
        XCTAssertEqual(try readJSON(dir + "/b.json")["accuracy"] as! Double, a["robust_accuracy"] as! Double, accuracy: 1e-12)
        let linf = (a["per_image"] as! [[String: Any]]).map { $0["linf"] as! Double }.max()!
        XCTAssertLessThanOrEqual(linf, 8.0 / 255 + 1e-6, "the 8-bit images stay inside the ball")
    }

    /// Hostile files and bad options: a clear one-line error naming the file, a non-zero exit, nothing written.
    func testHostileFilesAndBadOptionsAreClearErrors() throws {
        let bad = fixtures + "/hostile"
        try FileManager.default.createDirectory(atPath: dir + "/folder/cls", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixtures + "/png/0_T-shirt-top/00019.png", toPath: dir + "/folder/cls/a.png")
        try FileManager.default.copyItem(atPath: bad + "/truncated.png", toPath: dir + "/folder/cls/b.png")
        try "x\ny\n".write(toFile: dir + "/wrong.txt", atomically: true, encoding: .utf8)
        let cases: [([String], [String])] = [
            (["--images", bad + "/pickled.npy"], ["pickled.npy", "holds Python objects", "never unpickles"]),
            (["--images", bad + "/lying_header.npy"], ["lying_header.npy", "truncated: shape (64, 28, 28) of uint8 needs 50176 bytes"]),
            (["--images", dir + "/folder"], ["folder/cls/b.png: not a valid PNG", "truncated"]),
            (["--images", bad + "/mixed_sizes"], ["mixed_sizes/b.png: is 32x30", "--resize"]),
            (["--images", fixtures + "/uint8_nhw.npy", "--labels", fixtures + "/kinds/gray.png"], ["gray.png: not a valid IDX file"]),
            (["--images", fixtures + "/png", "--classes", dir + "/wrong.txt"], ["the class folder '0_T-shirt-top' is not one of the 2 class names given (x, y)"]),
            (["--labels", fixtures + "/labels.npy"], ["--labels applies to --images"]),
            (["--images", fixtures + "/png", "--resize", "0x3"], ["--resize wants HxW"]),
            (["--images", fixtures + "/png", "--channels", "2"], ["--channels must be 1 or 3"]),
        ]
        for (args, messages) in cases {
            let (code, _, err) = try advkit(["attack", "--model", cnn, "--attack", "fgsm", "--out", dir + "/o.idx"] + args)
            XCTAssertNotEqual(code, 0, "\(args)")
            for m in messages { XCTAssertTrue(err.contains(m), "\(args): \(err) does not contain \(m)") }
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/o.idx"), "a failed command writes no output")
        }
        // Class folders that are not the model's classes: the labels would not mean the model's classes.
        try FileManager.default.createDirectory(atPath: dir + "/three/a", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixtures + "/png/0_T-shirt-top/00019.png", toPath: dir + "/three/a/x.png")
        var (code, _, err) = try advkit(["predict", "--model", cnn, "--images", dir + "/three"])
        XCTAssertTrue(code != 0 && err.contains("1 class folders, but the model has 10 classes"), err)
        try "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n".write(toFile: dir + "/classes.txt", atomically: true, encoding: .utf8)
        (code, _, err) = try advkit(["predict", "--model", cnn, "--images", dir + "/three", "--classes", dir + "/classes.txt"])
        XCTAssertEqual(code, 0, "the folder named among the model's 10 classes: \(err)")
        (code, _, err) = try advkit(["attack", "--model", cnn, "--images", fixtures + "/png", "--attack", "fgsm", "--out", dir + "/x.png"])
        XCTAssertTrue(code != 0 && err.contains("one image file cannot hold a batch"), err)
    }
}
