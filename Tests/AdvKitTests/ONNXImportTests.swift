@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// Imported ONNX models against their references (Tests/Fixtures/onnx, made by scripts/onnx/make_fixtures.py):
/// onnxruntime's logits and the exporting framework's input gradient of Σ logits ⊙ upstream (float64 in the
/// framework), on the same inputs.
final class ONNXImportTests: XCTestCase {
    static var fixtures: String { RepositoryPaths.root + "/Tests/Fixtures/onnx" }

    /// The fixture's model and its reference tensors, with NHWC references turned into AdvKit's NCHW.
    private func load(_ name: String, options: ONNXInputOptions = ONNXInputOptions()) throws -> (ONNXClassifier, [String: Tensor]) {
        let m = try ONNXClassifier(contentsOf: "\(Self.fixtures)/\(name).onnx", options: options)
        var ref = try Safetensors.read("\(Self.fixtures)/\(name).ref.safetensors").tensors
        if m.layout == .nhwc {
            for k in ["input", "grad_input"] { ref[k] = nhwcToNCHW(ref[k]!) }
        }
        return (m, ref)
    }

    private func nhwcToNCHW(_ t: Tensor) -> Tensor {
        let n = t.shape[0], h = t.shape[1], w = t.shape[2], c = t.shape[3]
        var out = Tensor(zeros: [n, c, h, w])
        let s = t.scalars
        for i in 0..<n { for y in 0..<h { for x in 0..<w { for k in 0..<c { out[i, k, y, x] = s[((i * h + y) * w + x) * c + k] } } } }
        return out
    }

    /// max |got − want| relative to the reference's largest magnitude (floored at 1).
    private func relativeError(_ got: Tensor, _ want: Tensor) -> Double {
        let g = got.scalars, w = want.scalars
        let scale = max(1, w.map { Double(abs($0)) }.max() ?? 1)
        return zip(g, w).map { abs(Double($0) - Double($1)) }.max()! / scale
    }

    private func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (m, ref) = try load(name)
        let x = ref["input"]!, upstream = ref["upstream"]!
        let tape = Tape(mode: .inference)
        let v = tape.input(x)
        let z = m(v)
        XCTAssertEqual(z.shape, ref["logits"]!.shape, "\(name): logits shape", file: file, line: line)
        // Float32 convolutions summing a few hundred terms per output: 1e-4 of the largest logit.
        let logitError = relativeError(z.value, ref["logits"]!)
        XCTAssertLessThan(logitError, 1e-4, "\(name): logits vs onnxruntime", file: file, line: line)
        let g = tape.gradient(of: z, seed: upstream, wrt: v)
        // Float32 backward against a float64 framework gradient: 1e-3 of the largest component (the backward pass
        // accumulates over every output that an input reaches).
        let gradError = relativeError(g, ref["grad_input"]!)
        XCTAssertLessThan(gradError, 1e-3, "\(name): input gradient vs the framework's", file: file, line: line)
        print("\(name): logits error \(logitError), gradient error \(gradError); \(m.summary)")
    }

    func testReferenceCNNBothExportersAndFixedBatch() throws {
        try check("cnn_dynamo")
        try check("cnn_legacy")
        try check("cnn_batch1")
    }

    func testResNetsWithBatchNormAndNormalisationInside() throws {
        try check("resnet_bn_norm")
        try check("torchvision_resnet")
    }

    func testMobileNets() throws {
        try check("mobilenet_v3_small")
        try check("mobilenet_v2_narrow")
    }

    func testOpsZooBothExporters() throws {
        try check("ops_zoo_dynamo")
        try check("ops_zoo_legacy")
    }

    func testKerasNHWCThroughTf2onnx() throws {
        let (m, _) = try load("keras_cnn")
        XCTAssertEqual(m.layout, .nhwc)
        XCTAssertEqual(m.inputShape, [1, 28, 28])
        try check("keras_cnn")
    }

    func testAFixedBatchOfOneStillRunsBatches() throws {
        let (m, ref) = try load("cnn_batch1")
        let (d, _) = try load("cnn_dynamo")
        let x = try load("cnn_dynamo").1["input"]!
        XCTAssertEqual(ref["input"]!.shape[0], 1)
        XCTAssertEqual(m.logits(of: x).scalars, d.logits(of: x).scalars, "batch-1 export on 3 images = the dynamic export")
    }

    func testImportedCNNMatchesTheBuiltInModelOnTheSameWeights() throws {
        guard FileManager.default.fileExists(atPath: RepositoryPaths.peerModel) else {
            throw XCTSkip("\(RepositoryPaths.peerModel) is not beside the repository")
        }
        let builtIn = Model(.cnn)
        try builtIn.load(from: RepositoryPaths.peerModel)
        let (m, ref) = try load("cnn_dynamo")
        let x = ref["input"]!
        assertClose(m.logits(of: x).scalars, builtIn.logits(of: x).scalars, atol: 1e-5, rtol: 1e-5, "same weights, same kernels")
        XCTAssertTrue(m.notes.contains { $0.contains("fused 3 Relu") }, "\(m.notes)")
    }

    func testInputScaleAndNormalisationAreInsideTheGraph() throws {
        let (plain, ref) = try load("cnn_dynamo")
        let x = ref["input"]!
        // A model that expects 0-255 pixels, given scale 255 and images / 255: the same logits.
        let scaled = try ONNXClassifier(contentsOf: "\(Self.fixtures)/cnn_dynamo.onnx", options: ONNXInputOptions(inputScale: 2))
        assertClose(scaled.logits(of: x * 0.5).scalars, plain.logits(of: x).scalars, atol: 1e-5, rtol: 1e-5, "scale applied in the graph")
        let norm = try ONNXClassifier(contentsOf: "\(Self.fixtures)/cnn_dynamo.onnx", options: ONNXInputOptions(mean: [0.5], std: [0.25]))
        assertClose(norm.logits(of: x).scalars, plain.logits(of: (x - Tensor(repeating: 0.5, shape: x.shape)) * 4).scalars,
                    atol: 1e-4, rtol: 1e-4, "(x - mean) / std applied in the graph")
        // The gradient is with respect to the [0,1] pixels: chain rule through the scale.
        let t1 = Tape(), v1 = t1.input(x)
        let g1 = t1.gradient(of: norm(v1), seed: ref["upstream"]!, wrt: v1)
        let t2 = Tape(), v2 = t2.input((x - Tensor(repeating: 0.5, shape: x.shape)) * 4)
        let g2 = t2.gradient(of: plain(v2), seed: ref["upstream"]!, wrt: v2)
        assertClose(g1.scalars, (g2 * 4).scalars, atol: 1e-4, rtol: 1e-3, "d/dx of f((x - m)/s) = f'/s")
        XCTAssertThrowsError(try ONNXClassifier(contentsOf: "\(Self.fixtures)/resnet_bn_norm.onnx", options: ONNXInputOptions(mean: [0.1, 0.2])))
    }

    func testAttacksRunOnAnImportedModel() throws {
        let (m, ref) = try load("resnet_bn_norm")
        let x = ref["input"]!
        let labels = m.logits(of: x).argmaxRows().map(Int32.init)
        let r = try PGD(epsilon: 8 / 255, steps: 5).run(m, images: x, labels: labels)
        XCTAssertLessThanOrEqual(r.outcomes.map(\.linf).max()!, 8 / 255 + 1e-6)
        XCTAssertEqual(r.cleanAccuracy, 1)
    }

    func testBadFilesAndUnsupportedOpsGiveClearErrors() throws {
        let dir = temporaryDirectory()
        func expect(_ body: @autoclosure () throws -> Any, _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { XCTAssertTrue("\($0)".contains(text), "\($0)", line: line) }
        }
        // An unsupported op: named, with its node and what is supported.
        var model = try ONNXModel.read("\(Self.fixtures)/cnn_legacy.onnx")
        model.graph.nodes[1].opType = "Elu"
        expect(try ONNXClassifier(model, path: "m.onnx"), "unsupported op Elu (first at node")
        // Garbage, and a missing external-data file.
        try Data("definitely not protobuf".utf8).write(to: URL(fileURLWithPath: dir + "/garbage.onnx"))
        expect(try ONNXClassifier(contentsOf: dir + "/garbage.onnx"), "garbage.onnx")
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/cnn_dynamo.onnx", toPath: dir + "/lonely.onnx")
        expect(try ONNXClassifier(contentsOf: dir + "/lonely.onnx"), "the external data file cnn_dynamo.onnx.data of tensor conv1.weight")
        // Images of the wrong shape are refused before an attack runs.
        let (m, _) = try load("cnn_dynamo")
        expect(try FGSM().run(m, images: Tensor(zeros: [2, 1, 14, 14]), labels: [0, 1]), "the model takes images of shape")
        // Two data inputs.
        var two = try ONNXModel.read("\(Self.fixtures)/cnn_legacy.onnx")
        two.graph.inputs.append(ONNXValueInfo(name: "extra", elementType: .float, dims: [.fixed(1)]))
        expect(try ONNXClassifier(two, path: "two.onnx"), "2 data inputs")
    }

    /// Conv → BatchNormalization → Relu: the BN folded into the conv's weights and the Relu fused into the conv give
    /// the function the unfolded graph computes (the same graph with a zero added between Conv and BN, which
    /// blocks both rewrites), values and input gradients.
    func testFoldedBatchNormAndFusedReluComputeTheUnfoldedGraph() throws {
        var rng = SeededGenerator(seed: 3, stream: 1)
        func tensor(_ name: String, _ dims: [Int], lo: Float = -1, hi: Float = 1) -> ONNXTensor {
            let n = dims.reduce(1, *)
            let v = (0..<n).map { _ in lo + (hi - lo) * rng.nextUniform() }
            return ONNXTensor(name: name, dataType: .float, dims: dims, values: .float(Tensor(v, shape: Shape(dims))))
        }
        // One set of weights for both graphs.
        var weights = [tensor("W", [4, 3, 3, 3]), tensor("B", [4]), tensor("g", [4], lo: 0.5, hi: 1.5), tensor("b", [4]),
                       tensor("m", [4]), tensor("v", [4], lo: 0.2, hi: 2), tensor("F", [5, 4]), tensor("c", [5])]
        weights.append(ONNXTensor(name: "zero", dataType: .float, dims: [1], values: .float(Tensor([0]))))
        func graph(blocked: Bool) -> ONNXModel {
            let inits = weights
            var nodes = [ONNXNode(name: "conv", opType: "Conv", domain: "", inputs: ["x", "W", "B"], outputs: ["y"],
                                  attributes: ["pads": .ints([1, 1, 1, 1])])]
            if blocked { nodes.append(ONNXNode(name: "add0", opType: "Add", domain: "", inputs: ["y", "zero"], outputs: ["y0"], attributes: [:])) }
            nodes += [
                ONNXNode(name: "bn", opType: "BatchNormalization", domain: "", inputs: [blocked ? "y0" : "y", "g", "b", "m", "v"],
                         outputs: ["z"], attributes: ["epsilon": .float(1e-3)]),
                ONNXNode(name: "relu", opType: "Relu", domain: "", inputs: ["z"], outputs: ["r"], attributes: [:]),
                ONNXNode(name: "gap", opType: "GlobalAveragePool", domain: "", inputs: ["r"], outputs: ["p"], attributes: [:]),
                ONNXNode(name: "flat", opType: "Flatten", domain: "", inputs: ["p"], outputs: ["f"], attributes: [:]),
                ONNXNode(name: "fc", opType: "Gemm", domain: "", inputs: ["f", "F", "c"], outputs: ["logits"], attributes: ["transB": .int(1)]),
            ]
            let g = ONNXGraph(name: "g", nodes: nodes, initializers: Dictionary(uniqueKeysWithValues: inits.map { ($0.name, $0) }),
                              inputs: [ONNXValueInfo(name: "x", elementType: .float, dims: [.symbolic("n"), .fixed(3), .fixed(8), .fixed(8)])],
                              outputs: [ONNXValueInfo(name: "logits", elementType: .float, dims: [.symbolic("n"), .fixed(5)])])
            return ONNXModel(irVersion: 8, producerName: "test", producerVersion: "", opsetImports: ["": 17], graph: g)
        }
        let folded = try ONNXClassifier(graph(blocked: false)), plain = try ONNXClassifier(graph(blocked: true))
        XCTAssertTrue(folded.notes.contains { $0.contains("folded 1 BatchNormalization") }, "\(folded.notes)")
        XCTAssertTrue(folded.notes.contains { $0.contains("fused 1 Relu") }, "\(folded.notes)")
        XCTAssertFalse(plain.notes.contains { $0.contains("folded") }, "\(plain.notes)")
        let x = Tensor((0..<(2 * 3 * 64)).map { _ in rng.nextUniform() }, shape: [2, 3, 8, 8])
        // Folding rescales the weights in double, then rounds to float: agreement to float32 rounding.
        assertClose(folded.logits(of: x).scalars, plain.logits(of: x).scalars, atol: 1e-5, rtol: 1e-5, "folded = unfolded")
        let seed = Tensor((0..<10).map { _ in rng.nextUniform() }, shape: [2, 5])
        let t1 = Tape(), v1 = t1.input(x), t2 = Tape(), v2 = t2.input(x)
        assertClose(t1.gradient(of: folded(v1), seed: seed, wrt: v1).scalars, t2.gradient(of: plain(v2), seed: seed, wrt: v2).scalars,
                    atol: 1e-5, rtol: 1e-4, "input gradients")
    }
    /// A residual join writes into a Conv output that only it reads, but never into the logits: here the first
    /// graph output is that Conv's output under another name (an Identity), and a second output reads the join.
    /// The logits are those of the graph without the join, and the other operand's buffer is the one written.
    func testAJoinNeverWritesIntoTheLogits() throws {
        var rng = SeededGenerator(seed: 5, stream: 2)
        func tensor(_ name: String, _ dims: [Int]) -> ONNXTensor {
            let v = (0..<dims.reduce(1, *)).map { _ in 2 * rng.nextUniform() - 1 }
            return ONNXTensor(name: name, dataType: .float, dims: dims, values: .float(Tensor(v, shape: Shape(dims))))
        }
        let inits = [tensor("W", [5, 3, 4, 4]), tensor("V", [5, 3, 4, 4])]
        func graph(withJoin: Bool) -> ONNXModel {
            var nodes = [ONNXNode(name: "conv", opType: "Conv", domain: "", inputs: ["x", "W"], outputs: ["c"], attributes: [:]),
                         ONNXNode(name: "id", opType: "Identity", domain: "", inputs: ["c"], outputs: ["logits"], attributes: [:])]
            var outputs = [ONNXValueInfo(name: "logits", elementType: .float, dims: [.symbolic("n"), .fixed(5), .fixed(1), .fixed(1)])]
            if withJoin {
                nodes += [ONNXNode(name: "conv2", opType: "Conv", domain: "", inputs: ["x", "V"], outputs: ["s"], attributes: [:]),
                          ONNXNode(name: "add", opType: "Add", domain: "", inputs: ["c", "s"], outputs: ["sum"], attributes: [:]),
                          ONNXNode(name: "relu", opType: "Relu", domain: "", inputs: ["sum"], outputs: ["aux"], attributes: [:])]
                outputs.append(ONNXValueInfo(name: "aux", elementType: .float, dims: [.symbolic("n"), .fixed(5), .fixed(1), .fixed(1)]))
            }
            let g = ONNXGraph(name: "g", nodes: nodes, initializers: Dictionary(uniqueKeysWithValues: inits.map { ($0.name, $0) }),
                              inputs: [ONNXValueInfo(name: "x", elementType: .float, dims: [.symbolic("n"), .fixed(3), .fixed(4), .fixed(4)])],
                              outputs: outputs)
            return ONNXModel(irVersion: 8, producerName: "test", producerVersion: "", opsetImports: ["": 17], graph: g)
        }
        let joined = try ONNXClassifier(graph(withJoin: true)), plain = try ONNXClassifier(graph(withJoin: false))
        XCTAssertTrue(joined.notes.contains { $0.contains("residual join") }, "the join is fused: \(joined.notes)")
        XCTAssertTrue(joined.notes.contains { $0.contains("1 of the joins write into the Conv output") }, "\(joined.notes)")
        let x = Tensor((0..<(3 * 3 * 16)).map { _ in rng.nextUniform() }, shape: [3, 3, 4, 4])
        XCTAssertTrue(joined.logits(of: x) == plain.logits(of: x), "the logits are the Conv's output, not the join's")
    }
}
