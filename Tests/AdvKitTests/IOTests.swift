@_spi(Support) import AdvKit
import AdvKitTestSupport
import XCTest

/// IDX, CIFAR-10 and safetensors: round trips, and a clear thrown error for every kind of bad file.
final class IOTests: XCTestCase {
    private func idxHeader(type: UInt8, dims: [UInt32]) -> [UInt8] {
        var b: [UInt8] = [0, 0, type, UInt8(dims.count)]
        for d in dims { b += withUnsafeBytes(of: d.bigEndian, Array.init) }
        return b
    }

    private func assertThrows(_ expression: @autoclosure () throws -> Any, containing text: String,
                              file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try expression()
            XCTFail("no error; wanted one containing \"\(text)\"", file: file, line: line)
        } catch {
            XCTAssertTrue("\(error)".contains(text), "error \"\(error)\" does not contain \"\(text)\"", file: file, line: line)
        }
    }

    func testIDXRoundTripsFloat32AndUInt8() throws {
        let dir = temporaryDirectory()
        let t = Tensor([0, 0.25, 1, 0.123456789, 0.5, 0.75], shape: [2, 1, 1, 3])
        try IDX.write(t, to: dir + "/x.idx")
        XCTAssertEqual(try IDX.readImages(dir + "/x.idx"), t, "float32 keeps every bit")
        try IDX.write(t, to: dir + "/x8.idx", as: .uint8)
        let back = try IDX.readImages(dir + "/x8.idx")
        XCTAssertEqual(back.bytes, t.bytes)
        try IDX.writeLabels([3, 0, 9], to: dir + "/y.idx")
        XCTAssertEqual(try IDX.readLabels(dir + "/y.idx"), [3, 0, 9])
    }

    func testIDXReadsGzip() throws {
        let dir = temporaryDirectory()
        let raw = Data(idxHeader(type: 0x08, dims: [2, 2, 2]) + [0, 255, 51, 0, 1, 2, 3, 4])
        try Gzip.compress(raw).write(to: URL(fileURLWithPath: dir + "/g.gz"))
        let t = try IDX.readImages(dir + "/g.gz")
        XCTAssertEqual(t.shape, [2, 1, 2, 2])
        XCTAssertEqual(t[0, 0, 0, 1], 1)
        XCTAssertEqual(t[0, 0, 1, 0], 0.2)
        // A gzip stream cut short.
        let gz = Gzip.compress(Data(idxHeader(type: 0x08, dims: [100, 28, 28]) + [UInt8](repeating: 7, count: 78_400)))
        try gz.prefix(gz.count / 2).write(to: URL(fileURLWithPath: dir + "/cut.gz"))
        assertThrows(try IDX.readImages(dir + "/cut.gz"), containing: "ends early")
    }

    /// `first`: the first records only, decompressed no further than needed (inflate stops after the 1 MB chunk
    /// that holds them): the same values as a whole read, the count capped by the file's, and a stream cut short
    /// after those records is not noticed (documented) while a whole read of it says so.
    func testIDXReadsTheFirstRecordsOnly() throws {
        let dir = temporaryDirectory()
        let n = 3000, pixels = 28 * 28  // 2.35 MB of bytes that do not compress: several 1 MB chunks
        var rng = SeededGenerator(seed: 5)
        let body = (0..<(n * pixels)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let gz = Gzip.compress(Data(idxHeader(type: 0x08, dims: [UInt32(n), 28, 28]) + body))
        try gz.write(to: URL(fileURLWithPath: dir + "/x.gz"))
        try Data(idxHeader(type: 0x08, dims: [UInt32(n), 28, 28]) + body).write(to: URL(fileURLWithPath: dir + "/x.idx"))
        let all = try IDX.readImages(dir + "/x.gz")
        for path in ["/x.gz", "/x.idx"] {
            let five = try IDX.readImages(dir + path, first: 5)
            XCTAssertEqual(five, all.batch(0..<5), path)
            XCTAssertEqual(try IDX.readImages(dir + path, first: n + 10), all, "more than the file has: all of it")
        }
        try gz.prefix(gz.count * 3 / 4).write(to: URL(fileURLWithPath: dir + "/cut.gz"))
        XCTAssertEqual(try IDX.readImages(dir + "/cut.gz", first: 5), all.batch(0..<5))
        assertThrows(try IDX.readImages(dir + "/cut.gz"), containing: "ends early")
        // Reading all of a file (first at least its count) still refuses trailing bytes.
        try Data(idxHeader(type: 0x08, dims: [2, 2]) + [1, 2, 3, 4, 5]).write(to: URL(fileURLWithPath: dir + "/tail.idx"))
        assertThrows(try IDX.readImages(dir + "/tail.idx", first: 5), containing: "trailing data")
        XCTAssertEqual(try IDX.read(dir + "/tail.idx", first: 1).values, [1, 2])
        let labels = (0..<n).map { Int32($0 % 10) }
        try Gzip.compress(IDX.encodeLabels(labels)).write(to: URL(fileURLWithPath: dir + "/y.gz"))
        XCTAssertEqual(try IDX.readLabels(dir + "/y.gz", first: 7), Array(labels.prefix(7)))
    }

    func testIDXBadFilesGiveClearErrors() throws {
        let dir = temporaryDirectory()
        func file(_ bytes: [UInt8], _ name: String) throws -> String {
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + name))
            return dir + "/" + name
        }
        assertThrows(try IDX.readImages(dir + "/missing"), containing: "no such file")
        assertThrows(try IDX.readImages(try file([0, 0], "short")), containing: "shorter than the 4-byte magic")
        assertThrows(try IDX.readImages(try file([1, 2, 8, 3], "magic")), containing: "wrong magic number")
        assertThrows(try IDX.readImages(try file([0, 0, 0x42, 1, 0, 0, 0, 1, 0], "type")), containing: "unknown type code 0x42")
        assertThrows(try IDX.readImages(try file(idxHeader(type: 8, dims: [2, 2, 2]) + [1, 2, 3], "trunc")),
                     containing: "truncated: dimensions [2, 2, 2] need 8 bytes")
        assertThrows(try IDX.readImages(try file(idxHeader(type: 8, dims: [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF]), "huge")),
                     containing: "too many elements")
        assertThrows(try IDX.readImages(try file(idxHeader(type: 8, dims: [4]) + [1, 2, 3, 4], "rank")), containing: "need 3 or 4 dimensions")
        assertThrows(try IDX.readLabels(try file(idxHeader(type: 8, dims: [2, 2]) + [1, 2, 3, 4], "lrank")), containing: "labels need 1 dimension")
        let nan = Float.nan.bitPattern.bigEndian
        assertThrows(try IDX.readImages(try file(idxHeader(type: 0x0D, dims: [1, 1, 1]) + withUnsafeBytes(of: nan, Array.init), "nan")),
                     containing: "NaN")
        assertThrows(try IDX.readImages(dir), containing: "is a directory")
    }

    func testCIFAR10ParsesRecordsAndRejectsBadLengthsAndLabels() throws {
        var bytes: [UInt8] = []
        for label: UInt8 in [3, 7] {
            bytes.append(label)
            bytes += (0..<3072).map { UInt8($0 % 256) }
        }
        let d = try CIFAR10.parse(Data(bytes))
        XCTAssertEqual(d.labels, [3, 7])
        XCTAssertEqual(d.images.shape, [2, 3, 32, 32])
        XCTAssertEqual(d.images[1, 0, 7, 31], 1)        // red plane, pixel 255 (row 7, column 31) of image 2: byte 255
        XCTAssertEqual(d.images[0, 1, 0, 0], 0)          // green plane starts at byte 1024 = 0 mod 256
        assertThrows(try CIFAR10.parse(Data(bytes.dropLast())), containing: "not a whole number of CIFAR-10 records")
        var bad = bytes
        bad[0] = 12
        assertThrows(try CIFAR10.parse(Data(bad)), containing: "record 0 has label 12")
        let dir = temporaryDirectory()
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/test_batch.bin"))
        XCTAssertEqual(try CIFAR10.load(directory: dir, split: .test).count, 2)
        assertThrows(try CIFAR10.load(directory: dir, split: .train), containing: "data_batch_1.bin")
    }

    func testSafetensorsRoundTripWithPyTorchNames() throws {
        let dir = temporaryDirectory()
        let model = Model(.cnn, seed: 3)
        try model.save(to: dir + "/m.safetensors", metadata: ["note": "test"])
        let file = try Safetensors.read(dir + "/m.safetensors")
        XCTAssertEqual(Set(file.tensors.keys), ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                                "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        XCTAssertEqual(file.tensors["conv1.weight"]?.shape, [32, 1, 5, 5])
        XCTAssertEqual(file.tensors["fc1.weight"]?.shape, [128, 1024])
        XCTAssertEqual(file.metadata["note"], "test")
        let other = Model(.cnn, seed: 4)
        try other.load(from: dir + "/m.safetensors")
        for (a, b) in zip(model.stateDict, other.stateDict) { XCTAssertEqual(a.tensor.value, b.tensor.value, a.name) }
        // ResNet: batch-norm buffers are saved too, under PyTorch's names.
        let resnet = Model(.resnet, inputShape: [3, 32, 32], seed: 1)
        let names = resnet.stateDict.map(\.name)
        XCTAssertTrue(names.contains("layer2.0.downsample.0.weight"))
        XCTAssertTrue(names.contains("layer1.0.bn1.running_var"))
    }

    func testSafetensorsLoadsThePyTorchTrainedModel() throws {
        guard FileManager.default.fileExists(atPath: RepositoryPaths.peerModel) else {
            throw XCTSkip("\(RepositoryPaths.peerModel) is not beside the repository")
        }
        let model = Model(.cnn)
        try model.load(from: RepositoryPaths.peerModel)
        XCTAssertEqual(model.parameterCount, 32 * 25 + 32 + 64 * 32 * 25 + 64 + 1024 * 128 + 128 + 1280 + 10)
    }

    func testSafetensorsHostileFilesGiveClearErrors() throws {
        func header(_ json: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
            let j = Array(json.utf8)
            return Data(withUnsafeBytes(of: (declaredLength ?? UInt64(j.count)).littleEndian, Array.init) + j + data)
        }
        let four = [UInt8](repeating: 0, count: 16)
        let cases: [(Data, String)] = [
            (Data([1, 2, 3]), "shorter than the 8-byte header length"),
            (header("{}", declaredLength: 1_000), "runs past the end of the file"),
            (header("{}", declaredLength: 1 << 40), "exceeds"),
            (header("{not json"), "not valid JSON"),
            (header("[1,2]"), "not a JSON object"),
            (header(#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#, data: [0, 0]), "outside the 2 bytes"),
            (header(#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[8,4]}}"#, data: four), "outside"),
            (header(#"{"a":{"dtype":"Q7","shape":[4],"data_offsets":[0,16]}}"#, data: four), "unknown dtype Q7"),
            (header(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#, data: four), "needs 12 bytes"),
            (header(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: four), "overlap"),
            (header(#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: four), "non-negative integer"),
            (header(#"{"a":{"dtype":"F32","shape":[4]}}"#, data: four), "needs a shape and two data_offsets"),
            (header(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}"#, data: four), "too many elements"),
        ]
        for (bytes, message) in cases {
            assertThrows(try Safetensors.parse(bytes, path: "bad.safetensors"), containing: message)
        }
        // Missing, extra and mis-shaped tensors against a model.
        let dir = temporaryDirectory()
        let mlp = Model(.mlp, seed: 0)
        try mlp.save(to: dir + "/mlp.safetensors")
        assertThrows(try Model(.cnn).load(from: dir + "/mlp.safetensors"), containing: "missing conv1.weight, conv1.bias")
        assertThrows(try Model(.mlp, inputShape: [1, 14, 14]).load(from: dir + "/mlp.safetensors"),
                     containing: "fc1.weight has shape [256, 784], the model needs [256, 196]")
        var state = mlp.stateDict.map { ($0.name, $0.tensor.value) }
        state.append(("extra.weight", Tensor([1])))
        try Safetensors.write(state, to: dir + "/extra.safetensors")
        assertThrows(try Model(.mlp).load(from: dir + "/extra.safetensors"), containing: "unexpected extra.weight")
    }

    func testAtomicWriteLeavesNoTemporaryFileAndReportsMissingFolder() throws {
        let dir = temporaryDirectory()
        try FileIO.writeAtomically(Data([1, 2, 3]), to: dir + "/a.bin")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["a.bin"])
        assertThrows(try FileIO.writeAtomically(Data([1]), to: dir + "/nope/a.bin"), containing: "does not exist")
    }
}
