@_spi(Support) import AdvKit
import AdvKitTestSupport
import Foundation
import XCTest

/// `ONNXClassifier.writeONNX`: a fine-tuned imported model written back as ONNX (the same graph, the trained
/// initializers), read again by AdvKit with the fine-tuned classifier's logits. onnxruntime's side is checked by
/// scripts/onnx/check_hardened.py (tests never need Python).
final class ONNXWriteBackTests: XCTestCase {
    static var fixtures: String { RepositoryPaths.root + "/Tests/Fixtures/onnx" }

    /// A few Adam steps on random images with random labels: enough to move every tensor the tape reads.
    private func fineTune(_ m: ONNXClassifier, seed: UInt64) throws {
        let n = 16
        let x = randomTensor(Shape([n] + m.inputShape.dims), seed: seed, lo: 0, hi: 1)
        let labels = (0..<n).map { Int32(($0 * 7 + Int(seed)) % m.classCount) }
        let data = try Dataset(images: x, labels: labels, classNames: (0..<m.classCount).map { "c\($0)" })
        var config = testTrainingConfiguration(epochs: 2, seed: seed)
        config.batchSize = 8
        config.learningRate = 1e-2
        try Trainer(model: m, configuration: config).fit(data)
    }

    private func images(for m: ONNXClassifier, _ n: Int = 6, seed: UInt64 = 11) -> Tensor {
        randomTensor(Shape([n] + m.inputShape.dims), seed: seed, lo: 0, hi: 1)
    }

    /// The written file alone, in a folder of its own: it must not need the source's external data.
    private func writeAlone(_ m: ONNXClassifier, _ name: String) throws -> String {
        let dir = temporaryDirectory(name)
        let out = dir + "/" + name + ".onnx"
        try m.writeONNX(to: out)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [name + ".onnx"], "one file, no temporary left")
        return out
    }

    // MARK: fixtures

    /// Fine-tuned, written, read again: the same logits as the fine-tuned classifier, bit for bit (the written
    /// initializers are its float32 tensors, transposed back where the tape read a transposed copy, and the graph
    /// runs the same kernels on them); the graph (nodes, inputs, outputs, opsets) is the original's, the trained
    /// initializers differ from the original's and the others do not. resnet_bn_norm (BatchNormalization, external
    /// data), cnn_dynamo (Gemm, external data), keras_cnn (MatMul on (IN, OUT) kernels, NHWC), ops_zoo_dynamo.
    func testFineTunedFixturesAreWrittenBackWithTheirLogits() throws {
        for (k, fixture) in ["resnet_bn_norm", "cnn_dynamo", "keras_cnn", "ops_zoo_dynamo"].enumerated() {
            let original = try ONNXClassifier(contentsOf: "\(Self.fixtures)/\(fixture).onnx")
            let m = try ONNXClassifier(contentsOf: "\(Self.fixtures)/\(fixture).onnx")
            try fineTune(m, seed: UInt64(k + 1))
            let x = images(for: m)
            XCTAssertNotEqual(m.logits(of: x), original.logits(of: x), "\(fixture): fine-tuning changed the model")
            let written = try ONNXClassifier(contentsOf: try writeAlone(m, fixture))
            XCTAssertEqual(written.logits(of: x), m.logits(of: x), "\(fixture): the written model computes the fine-tuned one")
            let a = written.model, b = original.model
            XCTAssertEqual(a.graph.nodes, b.graph.nodes, fixture)
            XCTAssertEqual(a.graph.inputs, b.graph.inputs, fixture)
            XCTAssertEqual(a.graph.outputs, b.graph.outputs, fixture)
            XCTAssertEqual(a.graph.name, b.graph.name, fixture)
            XCTAssertEqual(a.opsetImports, b.opsetImports, fixture)
            XCTAssertEqual([a.irVersion, a.producerName, a.producerVersion] as [AnyHashable], [b.irVersion, b.producerName, b.producerVersion], fixture)
            XCTAssertEqual(Set(a.graph.initializers.keys), Set(b.graph.initializers.keys), fixture)
            let trained = Set(m.namedTensors.map { $0.name.replacingOccurrences(of: "+Transpose", with: "") })
            for (name, t) in b.graph.initializers {
                let w = a.graph.initializers[name]!
                XCTAssertEqual([w.dataType.rawValue] + w.dims, [t.dataType.rawValue] + t.dims, "\(fixture): \(name)")
                if trained.contains(name) {
                    XCTAssertNotEqual(w.values, t.values, "\(fixture): \(name) is trained")
                } else {
                    XCTAssertEqual(w.values, t.values, "\(fixture): \(name) is not trained")
                }
            }
        }
    }

    /// An untouched model written back: a file without external data comes out byte for byte; one with external
    /// data comes out self-contained with the same model (every initializer, integer ones included) and logits.
    func testAnUntouchedModelIsWrittenBackAsItWas() throws {
        for fixture in ["cnn_legacy", "keras_cnn", "ops_zoo_legacy"] {
            let path = "\(Self.fixtures)/\(fixture).onnx"
            let out = try writeAlone(try ONNXClassifier(contentsOf: path), fixture)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), try Data(contentsOf: URL(fileURLWithPath: path)), "\(fixture): byte for byte")
        }
        for fixture in ["cnn_dynamo", "resnet_bn_norm", "mobilenet_v3_small"] {
            let m = try ONNXClassifier(contentsOf: "\(Self.fixtures)/\(fixture).onnx")
            let out = try writeAlone(m, fixture)
            let written = try ONNXClassifier(contentsOf: out)
            XCTAssertEqual(written.model, m.model, fixture)
            let x = images(for: m, 3)
            XCTAssertEqual(written.logits(of: x), m.logits(of: x), fixture)
            // The external data is inline: the file now holds the bytes of the .data file.
            let size = { (p: String) in (try FileManager.default.attributesOfItem(atPath: p)[.size] as! NSNumber).intValue }
            XCTAssertGreaterThan(try size(out), try size("\(Self.fixtures)/\(fixture).onnx.data"), fixture)
        }
    }

    // MARK: a folded Conv + BatchNormalization

    /// Conv without bias → BatchNormalization (epsilon 1e-3) → Relu, Conv with bias → BatchNormalization (default
    /// epsilon; variance stored as double), global average pool, Flatten, MatMul on an (IN, OUT) weight, Add.
    /// Extra fields (doc strings, metadata, value_info) that AdvKit does not read must survive the write.
    private func foldedModelFile(_ dir: String) throws -> String {
        var rng = SeededGenerator(seed: 21, stream: 3)
        func values(_ n: Int, _ lo: Float, _ hi: Float) -> [Float] { (0..<n).map { _ in lo + (hi - lo) * rng.nextUniform() } }
        let c1 = 3, c2 = 4, k = 3
        let inits: [ProtoTensor] = [
            .init(name: "w1", dims: [c1, 1, 3, 3], values: values(c1 * 9, -0.6, 0.6)),
            .init(name: "g1", dims: [c1], values: values(c1, 0.5, 1.5)), .init(name: "b1", dims: [c1], values: values(c1, -0.3, 0.3)),
            .init(name: "m1", dims: [c1], values: values(c1, -0.2, 0.2)), .init(name: "v1", dims: [c1], values: values(c1, 0.3, 2)),
            .init(name: "w2", dims: [c2, c1, 3, 3], values: values(c2 * c1 * 9, -0.4, 0.4)), .init(name: "cb2", dims: [c2], values: values(c2, -0.2, 0.2)),
            .init(name: "g2", dims: [c2], values: values(c2, 0.5, 1.5)), .init(name: "b2", dims: [c2], values: values(c2, -0.3, 0.3)),
            .init(name: "m2", dims: [c2], values: values(c2, -0.2, 0.2)), .init(name: "v2", dims: [c2], values: values(c2, 0.3, 2), double: true),
            .init(name: "F", dims: [c2, k], values: values(c2 * k, -1, 1)), .init(name: "c", dims: [k], values: values(k, -0.1, 0.1)),
        ]
        let nodes: [ProtoNode] = [
            .init(name: "conv1", op: "Conv", inputs: ["x", "w1"], outputs: ["y1"], ints: ["pads": [1, 1, 1, 1]]),
            .init(name: "bn1", op: "BatchNormalization", inputs: ["y1", "g1", "b1", "m1", "v1"], outputs: ["z1"], floats: ["epsilon": 1e-3]),
            .init(name: "relu1", op: "Relu", inputs: ["z1"], outputs: ["r1"]),
            .init(name: "conv2", op: "Conv", inputs: ["r1", "w2", "cb2"], outputs: ["y2"], ints: ["pads": [1, 1, 1, 1], "strides": [2, 2]]),
            .init(name: "bn2", op: "BatchNormalization", inputs: ["y2", "g2", "b2", "m2", "v2"], outputs: ["z2"]),
            .init(name: "relu2", op: "Relu", inputs: ["z2"], outputs: ["r2"]),
            .init(name: "gap", op: "GlobalAveragePool", inputs: ["r2"], outputs: ["p"]),
            .init(name: "flat", op: "Flatten", inputs: ["p"], outputs: ["f"]),
            .init(name: "mm", op: "MatMul", inputs: ["f", "F"], outputs: ["h"]),
            .init(name: "add", op: "Add", inputs: ["h", "c"], outputs: ["logits"]),
        ]
        let path = dir + "/folded.onnx"
        try Data(ProtoModel.encode(nodes: nodes, initializers: inits, input: ("x", [-1, 1, 6, 6]), output: ("logits", [-1, k])))
            .write(to: URL(fileURLWithPath: path))
        return path
    }

    /// ONNX's semantics of `foldedModelFile`'s graph, in Double, from a model's initializers as they are (the batch
    /// norms unfolded): y = γ·(conv(x) − μ)/√(σ² + ε) + β.
    private func referenceLogits(_ model: ONNXModel, _ x: Tensor) -> [Double] {
        let t = model.graph.initializers
        func f(_ name: String) -> [Float] { t[name]!.floats }
        let n = x.shape[0]
        func bn(_ y: [Double], c: Int, hw: Int, _ g: String, _ b: String, _ m: String, _ v: String, eps: Double) -> [Double] {
            var out = y
            for i in 0..<n { for ch in 0..<c { for p in 0..<hw {
                let at = (i * c + ch) * hw + p
                let s = Double(f(g)[ch]) / (Double(f(v)[ch]) + Double(Float(eps))).squareRoot()
                out[at] = max(0, (y[at] - Double(f(m)[ch])) * s + Double(f(b)[ch]))  // the Relu after each
            } } }
            return out
        }
        let y1 = Reference.conv2d(x.scalars, f("w1"), nil, Reference.ConvGeometry(n: n, c: 1, h: 6, w: 6, oc: 3, kh: 3, kw: 3, stride: 1, pad: 1))
        let r1 = bn(y1, c: 3, hw: 36, "g1", "b1", "m1", "v1", eps: 1e-3)
        let y2 = Reference.conv2d(r1.map(Float.init), f("w2"), f("cb2"), Reference.ConvGeometry(n: n, c: 3, h: 6, w: 6, oc: 4, kh: 3, kw: 3, stride: 2, pad: 1))
        let r2 = bn(y2, c: 4, hw: 9, "g2", "b2", "m2", "v2", eps: 1e-5)
        var logits = [Double](repeating: 0, count: n * 3)
        for i in 0..<n { for o in 0..<3 {
            var s = Double(f("c")[o])
            for ch in 0..<4 { s += (0..<9).reduce(0.0) { $0 + r2[(i * 4 + ch) * 9 + $1] } / 9 * Double(f("F")[ch * 3 + o]) }
            logits[i * 3 + o] = s
        } }
        return logits
    }

    /// The folded pairs are written back with their batch norms as the identity plus the trained bias: γ = 1, μ = 0,
    /// σ² + ε = 1 in float32, the trained bias in the Conv's bias (β = 0) or in β (a Conv without bias). AdvKit reads
    /// the written file back to the fine-tuned logits bit for bit; ONNX's own unfolded semantics of the written file
    /// (in Double) agree within float32 rounding. Untouched, the file comes back byte for byte.
    func testFoldedBatchNormsAreWrittenAsIdentityPlusTheTrainedBias() throws {
        let dir = temporaryDirectory()
        let source = try foldedModelFile(dir)
        let untouched = try ONNXClassifier(contentsOf: source)
        XCTAssertTrue(untouched.notes.contains { $0.contains("folded 2 BatchNormalization") }, "\(untouched.notes)")
        try untouched.writeONNX(to: dir + "/same.onnx")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/same.onnx")), try Data(contentsOf: URL(fileURLWithPath: source)))

        let m = try ONNXClassifier(contentsOf: source)
        try fineTune(m, seed: 5)
        let x = images(for: m, 5)
        try m.writeONNX(to: dir + "/tuned.onnx")
        let written = try ONNXClassifier(contentsOf: dir + "/tuned.onnx")
        XCTAssertEqual(written.logits(of: x), m.logits(of: x), "AdvKit's fold of the written file gives back the trained tensors")
        XCTAssertEqual(written.model.graph.nodes, untouched.model.graph.nodes, "the batch norms are still in the graph")
        // float32 sums over 9 and 27 terms, then the head: 1e-5 relative to logits of order 1.
        assertClose(m.logits(of: x).scalars, referenceLogits(written.model, x), atol: 1e-5, rtol: 1e-5, "ONNX's semantics of the written file")

        let t = written.model.graph.initializers
        for (g, b, mean, v, eps) in [("g1", "b1", "m1", "v1", Float(1e-3)), ("g2", "b2", "m2", "v2", Float(1e-5))] {
            XCTAssertTrue(t[g]!.floats.allSatisfy { $0 == 1 }, g)
            XCTAssertTrue(t[mean]!.floats.allSatisfy { $0 == 0 }, mean)
            XCTAssertTrue(t[v]!.floats.allSatisfy { $0 + eps == 1 }, "\(v): σ² + ε = 1 in float32")
            _ = b
        }
        XCTAssertEqual(t["v2"]!.dataType, .double, "the data type is kept")
        XCTAssertTrue(t["b2"]!.floats.allSatisfy { $0 == 0 }, "conv2 has a bias: β = 0")
        let tensors = Dictionary(uniqueKeysWithValues: m.namedTensors.map { ($0.name, $0.tensor.storage.value.scalars) })
        XCTAssertEqual(t["b1"]!.floats, tensors["conv1.bias+bn1"], "conv1 has no bias: β is the trained bias")
        XCTAssertEqual(t["cb2"]!.floats, tensors["cb2+bn2"])
        XCTAssertEqual(t["w1"]!.floats, tensors["w1+bn1"])
        // Fields AdvKit does not read are copied.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/tuned.onnx"))
        for marker in ["model doc: kept", "graph doc: kept", "meta-key", "meta-value", "value-info-kept", "w1 doc: kept"] {
            XCTAssertNotNil(bytes.range(of: Data(marker.utf8)), marker)
        }
    }

    /// float16 and bfloat16 initializers are written in their own type: the trained float32 values rounded to
    /// nearest (ties to even), checked against the nearest representable neighbour found in Double.
    func testHalfPrecisionInitializersAreWrittenInTheirOwnType() throws {
        let dir = temporaryDirectory()
        let f = randomArray(12, seed: 3).map { Float16($0).bitPattern }
        let c = randomArray(3, seed: 4, lo: -0.1, hi: 0.1).map { UInt16($0.bitPattern >> 16) }
        let bytes = ProtoModel.encode(
            nodes: [.init(name: "flat", op: "Flatten", inputs: ["x"], outputs: ["f"]),
                    .init(name: "mm", op: "MatMul", inputs: ["f", "F"], outputs: ["h"]),
                    .init(name: "add", op: "Add", inputs: ["h", "c"], outputs: ["logits"])],
            initializers: [.init(name: "F", dims: [4, 3], values: [], halves: (10, f)), .init(name: "c", dims: [3], values: [], halves: (16, c))],
            input: ("x", [-1, 1, 2, 2]), output: ("logits", [-1, 3]))
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/half.onnx"))
        let m = try ONNXClassifier(contentsOf: dir + "/half.onnx")
        try fineTune(m, seed: 9)
        try m.writeONNX(to: dir + "/out.onnx")
        let t = try ONNXModel.read(dir + "/out.onnx").graph.initializers
        XCTAssertEqual(t["F"]!.dataType, .float16)
        XCTAssertEqual(t["c"]!.dataType, .bfloat16)
        let trained = Dictionary(uniqueKeysWithValues: m.namedTensors.map { ($0.name, $0.tensor.storage.value) })
        var fTrained = [Float](repeating: 0, count: 12)  // (OUT, IN) copy back to (IN, OUT)
        for o in 0..<3 { for i in 0..<4 { fTrained[i * 3 + o] = trained["F+Transpose"]!.scalars[o * 4 + i] } }
        /// The nearest value among `candidates` (ties: the even bit pattern).
        func nearest(_ v: Float, _ candidates: [(bits: UInt16, value: Float)]) -> Float {
            candidates.min { a, b in
                let da = abs(Double(a.value) - Double(v)), db = abs(Double(b.value) - Double(v))
                return da != db ? da < db : a.bits % 2 == 0
            }!.value
        }
        let wantF = fTrained.map { v -> Float in
            let h = Float16(v).bitPattern  // a neighbour; the nearest is it or one step either side
            return nearest(v, [h &- 1, h, h &+ 1].map { ($0, Float(Float16(bitPattern: $0))) })
        }
        let wantC = trained["c"]!.scalars.map { v -> Float in
            let h = UInt16(v.bitPattern >> 16)
            return nearest(v, [h, h &+ 1].map { ($0, Float(bitPattern: UInt32($0) << 16)) })
        }
        XCTAssertNotEqual(wantF, f.map { Float(Float16(bitPattern: $0)) }, "trained")
        XCTAssertEqual(t["F"]!.floats, wantF)
        XCTAssertEqual(t["c"]!.floats, wantC)
    }

    /// One initializer read by a convolution whose batch norm is folded and by another convolution as it is: training
    /// moves the two copies apart, no single value computes both, and writing ONNX is a clear error (no file).
    func testAnInitializerTrainedApartByTwoUsesIsAnError() throws {
        let dir = temporaryDirectory()
        let bytes = ProtoModel.encode(
            nodes: [.init(name: "conv1", op: "Conv", inputs: ["x", "W", "B"], outputs: ["y1"], ints: ["pads": [1, 1, 1, 1]]),
                    .init(name: "bn", op: "BatchNormalization", inputs: ["y1", "g", "b", "m", "v"], outputs: ["z1"]),
                    .init(name: "conv2", op: "Conv", inputs: ["z1", "W", "B"], outputs: ["y2"], ints: ["pads": [1, 1, 1, 1]]),
                    .init(name: "gap", op: "GlobalAveragePool", inputs: ["y2"], outputs: ["p"]),
                    .init(name: "flat", op: "Flatten", inputs: ["p"], outputs: ["logits"])],
            initializers: [.init(name: "W", dims: [2, 2, 3, 3], values: randomArray(36, seed: 5)), .init(name: "B", dims: [2], values: [0.1, -0.1]),
                           .init(name: "g", dims: [2], values: [1.2, 0.8]), .init(name: "b", dims: [2], values: [0.1, 0.2]),
                           .init(name: "m", dims: [2], values: [0.05, -0.05]), .init(name: "v", dims: [2], values: [0.9, 1.1])],
            input: ("x", [-1, 2, 4, 4]), output: ("logits", [-1, 2]))
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/shared.onnx"))
        let m = try ONNXClassifier(contentsOf: dir + "/shared.onnx")
        try m.writeONNX(to: dir + "/untouched.onnx")  // untouched: the file's own tensors compute both uses
        try fineTune(m, seed: 2)
        XCTAssertThrowsError(try m.writeONNX(to: dir + "/tuned.onnx")) { e in
            XCTAssertTrue("\(e)".contains("the initializer W is used by"), "\(e)")
            XCTAssertFalse("\(e)".contains("\n"), "one line")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/tuned.onnx"))
    }

    // MARK: errors

    /// An unwritable path is a thrown AdvKitError and leaves no file; a model not read from a file, or whose file
    /// changed since, cannot be written back.
    func testErrorsAreThrownAndLeaveNoFile() throws {
        let dir = temporaryDirectory()
        let m = try ONNXClassifier(contentsOf: "\(Self.fixtures)/cnn_legacy.onnx")
        func assertIO(_ path: String, _ what: String) {
            XCTAssertThrowsError(try m.writeONNX(to: path), what) { e in
                guard case .io? = e as? AdvKitError else { return XCTFail("\(what): \(e)") }
                XCTAssertFalse("\(e)".contains("\n"), "one line: \(e)")
            }
        }
        assertIO(dir + "/no/such/folder/x.onnx", "a missing folder")
        try FileManager.default.createDirectory(atPath: dir + "/taken.onnx", withIntermediateDirectories: false)
        assertIO(dir + "/taken.onnx", "a folder in the way")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["taken.onnx"], "no temporary file left")

        let inMemory = try ONNXClassifier(try ONNXModel.read("\(Self.fixtures)/cnn_legacy.onnx"))
        XCTAssertThrowsError(try inMemory.writeONNX(to: dir + "/y.onnx")) { XCTAssertTrue($0 is AdvKitError, "\($0)") }

        let copy = dir + "/copy.onnx"
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/cnn_legacy.onnx", toPath: copy)
        let fromCopy = try ONNXClassifier(contentsOf: copy)
        try FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/ops_zoo_legacy.onnx", toPath: copy)
        XCTAssertThrowsError(try fromCopy.writeONNX(to: dir + "/z.onnx")) { e in
            XCTAssertTrue("\(e)".contains("changed since"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/y.onnx") || FileManager.default.fileExists(atPath: dir + "/z.onnx"))
    }
}

// MARK: a small ONNX encoder for the synthetic models above (onnx.proto's field numbers)

private struct ProtoTensor {
    var name: String
    var dims: [Int]
    var values: [Float]
    var double = false
    /// float16 or bfloat16 bit patterns instead of float32 (the values are then ignored).
    var halves: (type: Int, bits: [UInt16])? = nil
}

private struct ProtoNode {
    var name: String
    var op: String
    var inputs: [String]
    var outputs: [String]
    var ints: [String: [Int]] = [:]
    var floats: [String: Float] = [:]
}

private enum ProtoModel {
    static func varint(_ v: UInt64, _ out: inout [UInt8]) {
        var v = v
        while v >= 0x80 { out.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }
    static func int(_ field: Int, _ v: Int, _ out: inout [UInt8]) {
        varint(UInt64(field << 3), &out)
        varint(UInt64(bitPattern: Int64(v)), &out)
    }
    static func bytes(_ field: Int, _ b: [UInt8], _ out: inout [UInt8]) {
        varint(UInt64(field << 3 | 2), &out)
        varint(UInt64(b.count), &out)
        out += b
    }
    static func string(_ field: Int, _ s: String, _ out: inout [UInt8]) { bytes(field, Array(s.utf8), &out) }

    static func tensor(_ t: ProtoTensor) -> [UInt8] {
        var o: [UInt8] = []
        for d in t.dims { int(1, d, &o) }
        int(2, t.halves?.type ?? (t.double ? 11 : 1), &o)
        string(8, t.name, &o)
        if t.name == "w1" { string(12, "w1 doc: kept", &o) }
        var raw: [UInt8] = []
        for h in t.halves?.bits ?? [] { withUnsafeBytes(of: h.littleEndian) { raw += $0 } }
        for v in t.halves == nil ? t.values : [] {
            if t.double { withUnsafeBytes(of: Double(v).bitPattern.littleEndian) { raw += $0 } } else { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw += $0 } }
        }
        bytes(9, raw, &o)
        return o
    }

    static func valueInfo(_ name: String, _ dims: [Int]) -> [UInt8] {
        var shape: [UInt8] = []
        for d in dims {
            var dim: [UInt8] = []
            if d < 0 { string(2, "batch", &dim) } else { int(1, d, &dim) }
            bytes(1, dim, &shape)
        }
        var tensorType: [UInt8] = []
        int(1, 1, &tensorType)
        bytes(2, shape, &tensorType)
        var type: [UInt8] = []
        bytes(1, tensorType, &type)
        var o: [UInt8] = []
        string(1, name, &o)
        bytes(2, type, &o)
        return o
    }

    static func encode(nodes: [ProtoNode], initializers: [ProtoTensor], input: (String, [Int]), output: (String, [Int])) -> [UInt8] {
        var g: [UInt8] = []
        for n in nodes {
            var o: [UInt8] = []
            for i in n.inputs { string(1, i, &o) }
            for x in n.outputs { string(2, x, &o) }
            string(3, n.name, &o)
            string(4, n.op, &o)
            for (k, v) in n.ints.sorted(by: { $0.key < $1.key }) {
                var a: [UInt8] = []
                string(1, k, &a)
                for x in v { int(8, x, &a) }
                int(20, 7, &a)
                bytes(5, a, &o)
            }
            for (k, v) in n.floats.sorted(by: { $0.key < $1.key }) {
                var a: [UInt8] = []
                string(1, k, &a)
                varint(UInt64(2 << 3 | 5), &a)
                withUnsafeBytes(of: v.bitPattern.littleEndian) { a += $0 }
                int(20, 1, &a)
                bytes(5, a, &o)
            }
            bytes(1, o, &g)
        }
        string(2, "folded", &g)
        for t in initializers { bytes(5, tensor(t), &g) }
        string(10, "graph doc: kept", &g)
        bytes(11, valueInfo(input.0, input.1), &g)
        bytes(12, valueInfo(output.0, output.1), &g)
        bytes(13, valueInfo("value-info-kept", [-1, 3, 6, 6]), &g)
        var m: [UInt8] = []
        int(1, 8, &m)
        var opset: [UInt8] = []
        int(2, 17, &opset)
        bytes(8, opset, &m)
        string(2, "advkit-tests", &m)
        string(6, "model doc: kept", &m)
        bytes(7, g, &m)
        var meta: [UInt8] = []
        string(1, "meta-key", &meta)
        string(2, "meta-value", &meta)
        bytes(14, meta, &m)
        return m
    }
}
