import AdvKit
import AdvKitTestSupport
import XCTest

/// A tiny protobuf writer, so each test builds exactly the bytes it needs (no Python, no onnx package).
private struct PB {
    var bytes: [UInt8] = []

    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
    mutating func key(_ field: Int, _ wire: Int) { varint(UInt64(field) << 3 | UInt64(wire)) }
    /// int64 / int32 / enum / bool (wire type 0); negative values take 10 bytes, as protobuf writes them.
    mutating func int(_ field: Int, _ v: Int64) { key(field, 0); varint(UInt64(bitPattern: v)) }
    mutating func fixed32(_ field: Int, _ v: UInt32) { key(field, 5); bytes += withUnsafeBytes(of: v.littleEndian, Array.init) }
    mutating func float(_ field: Int, _ v: Float) { fixed32(field, v.bitPattern) }
    mutating func double(_ field: Int, _ v: Double) { key(field, 1); bytes += withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) }
    mutating func data(_ field: Int, _ b: [UInt8]) { key(field, 2); varint(UInt64(b.count)); bytes += b }
    mutating func string(_ field: Int, _ s: String) { data(field, Array(s.utf8)) }
    mutating func message(_ field: Int, _ m: PB) { data(field, m.bytes) }
    mutating func packed(_ field: Int, _ values: [Int64]) {
        var inner = PB()
        for v in values { inner.varint(UInt64(bitPattern: v)) }
        data(field, inner.bytes)
    }
    mutating func packedFloats(_ field: Int, _ values: [Float]) {
        data(field, values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) })
    }
    mutating func packedDoubles(_ field: Int, _ values: [Double]) {
        data(field, values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) })
    }
}

/// onnx.proto's messages, built field by field.
private enum Proto {
    static func le<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) } }
    static func rawFloats(_ values: [Float]) -> [UInt8] { le(values.map(\.bitPattern)) }

    /// TensorProto with its data in raw_data (9).
    static func tensor(_ name: String, dims: [Int64], type: Int, raw: [UInt8]) -> PB {
        var t = PB()
        t.packed(1, dims)
        t.int(2, Int64(type))
        t.string(8, name)
        t.data(9, raw)
        return t
    }

    /// TensorProto with float_data (4), packed or one field per element (dims unpacked too when not packed).
    static func floatTensor(_ name: String, dims: [Int64], _ values: [Float], packed: Bool) -> PB {
        var t = PB()
        if packed { t.packed(1, dims) } else { for d in dims { t.int(1, d) } }
        t.int(2, 1)
        if packed { t.packedFloats(4, values) } else { for v in values { t.float(4, v) } }
        t.string(8, name)
        return t
    }

    enum Dim { case fixed(Int64), symbolic(String), none }

    /// ValueInfoProto with a tensor type; dims nil: no shape.
    static func valueInfo(_ name: String, elemType: Int = 1, dims: [Dim]?) -> PB {
        var tensorType = PB()
        tensorType.int(1, Int64(elemType))
        if let dims {
            var shape = PB()
            for d in dims {
                var dim = PB()
                switch d {
                case let .fixed(v): dim.int(1, v)
                case let .symbolic(s): dim.string(2, s)
                case .none: break
                }
                shape.message(1, dim)
            }
            tensorType.message(2, shape)
        }
        var type = PB()
        type.message(1, tensorType)
        var v = PB()
        v.string(1, name)
        v.message(2, type)
        return v
    }

    static func attribute(_ name: String, type: Int?, _ fill: (inout PB) -> Void) -> PB {
        var a = PB()
        a.string(1, name)
        fill(&a)
        if let type { a.int(20, Int64(type)) }
        return a
    }

    static func intsAttribute(_ name: String, _ values: [Int64]) -> PB {
        attribute(name, type: 7) { $0.packed(8, values) }
    }

    static func node(_ op: String, _ inputs: [String], _ outputs: [String], name: String = "", domain: String? = nil,
                     attributes: [PB] = []) -> PB {
        var n = PB()
        for i in inputs { n.string(1, i) }
        for o in outputs { n.string(2, o) }
        if !name.isEmpty { n.string(3, name) }
        n.string(4, op)
        for a in attributes { n.message(5, a) }
        if let domain { n.string(7, domain) }
        return n
    }

    static func graph(nodes: [PB], initializers: [PB] = [], inputs: [PB] = [], outputs: [PB] = [], name: String = "g",
                      extra: (inout PB) -> Void = { _ in }) -> PB {
        var g = PB()
        for n in nodes { g.message(1, n) }
        g.string(2, name)
        for t in initializers { g.message(5, t) }
        g.string(10, "a doc string, skipped")
        for i in inputs { g.message(11, i) }
        for o in outputs { g.message(12, o) }
        extra(&g)
        return g
    }

    static func model(_ graph: PB, opset: Int64 = 17, ir: Int64 = 8, producer: String = "pytorch",
                      version: String = "2.5.1", extra: (inout PB) -> Void = { _ in }) -> [UInt8] {
        var m = PB()
        m.int(1, ir)
        m.string(2, producer)
        m.string(3, version)
        m.message(7, graph)
        var o = PB()
        o.string(1, "")
        o.int(2, opset)
        m.message(8, o)
        extra(&m)
        return m.bytes
    }

    /// Float16 bits of each value.
    static func half(_ values: [Float]) -> [UInt16] { values.map { Float16($0).bitPattern } }

    static let convWeight: [Float] = (0..<18).map { Float($0) * 0.25 - 2 }
    static let convBias: [Float] = [0.5, -1.5]

    /// Conv(x, W, B) -> y, with W in raw_data and B in float_data: the shape of a legacy PyTorch export.
    static func tinyConvModel() -> [UInt8] {
        let conv = node("Conv", ["x", "W", "B"], ["y"], name: "conv1", attributes: [
            intsAttribute("kernel_shape", [3, 3]), intsAttribute("pads", [1, 1, 1, 1]), intsAttribute("strides", [1, 1]),
            attribute("group", type: 2) { $0.int(3, 1) },
        ])
        let g = graph(nodes: [conv],
                      initializers: [tensor("W", dims: [2, 1, 3, 3], type: 1, raw: rawFloats(convWeight)),
                                     floatTensor("B", dims: [2], convBias, packed: true)],
                      inputs: [valueInfo("x", dims: [.symbolic("N"), .fixed(1), .fixed(4), .fixed(4)]),
                               valueInfo("W", dims: [.fixed(2), .fixed(1), .fixed(3), .fixed(3)])],
                      outputs: [valueInfo("y", dims: [.symbolic("N"), .fixed(2), .fixed(4), .fixed(4)])],
                      name: "main_graph")
        return model(g)
    }
}

/// The ONNX reader: onnx.proto's messages from the protobuf wire format, and a clear AdvKitError for every kind of
/// hostile or broken file (never a trap).
final class ONNXReaderTests: XCTestCase {
    private func assertThrows(_ expression: @autoclosure () throws -> Any, containing text: String,
                              file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try expression()
            XCTFail("no error; wanted one containing \"\(text)\"", file: file, line: line)
        } catch let error as AdvKitError {
            XCTAssertTrue("\(error)".contains(text), "error \"\(error)\" does not contain \"\(text)\"", file: file, line: line)
        } catch {
            XCTFail("\(error) is not an AdvKitError", file: file, line: line)
        }
    }

    private func parse(_ bytes: [UInt8], directory: String? = nil) throws -> ONNXModel {
        try ONNXModel.parse(Data(bytes), path: "m.onnx", directory: directory)
    }

    /// A model whose graph holds only `initializers` (and an Identity node, so it has one).
    private func modelWith(_ initializers: [PB], extra: (inout PB) -> Void = { _ in }) -> [UInt8] {
        Proto.model(Proto.graph(nodes: [Proto.node("Identity", ["a"], ["b"])], initializers: initializers, extra: extra))
    }

    private func values(_ t: ONNXTensor?) -> [Float] {
        guard let t, case let .float(x) = t.values else { XCTFail("not a float tensor: \(String(describing: t))"); return [] }
        return x.scalars
    }

    private func ints(_ t: ONNXTensor?) -> [Int64] {
        guard let t, case let .int(x) = t.values else { XCTFail("not an integer tensor: \(String(describing: t))"); return [] }
        return x
    }

    // MARK: well-formed files

    func testReadsATinyConvModel() throws {
        let m = try parse(Proto.tinyConvModel())
        XCTAssertEqual(m.irVersion, 8)
        XCTAssertEqual(m.producerName, "pytorch")
        XCTAssertEqual(m.producerVersion, "2.5.1")
        XCTAssertEqual(m.opsetImports, ["": 17])
        XCTAssertEqual(m.graph.name, "main_graph")
        XCTAssertEqual(m.graph.nodes.count, 1)
        let conv = m.graph.nodes[0]
        XCTAssertEqual(conv.name, "conv1")
        XCTAssertEqual(conv.opType, "Conv")
        XCTAssertEqual(conv.domain, "")
        XCTAssertEqual(conv.inputs, ["x", "W", "B"])
        XCTAssertEqual(conv.outputs, ["y"])
        XCTAssertEqual(conv.attributes["kernel_shape"], .ints([3, 3]))
        XCTAssertEqual(conv.attributes["pads"], .ints([1, 1, 1, 1]))
        XCTAssertEqual(conv.attributes["group"], .int(1))
        XCTAssertEqual(m.opTypes, ["Conv"])

        let w = m.graph.initializers["W"]
        XCTAssertEqual(w?.dims, [2, 1, 3, 3])
        XCTAssertEqual(w?.dataType, .float)
        if case let .float(t)? = w?.values { XCTAssertEqual(t.shape, [2, 1, 3, 3]) }
        XCTAssertEqual(values(w), Proto.convWeight, "raw_data keeps every bit")
        XCTAssertEqual(values(m.graph.initializers["B"]), Proto.convBias)

        // Old exporters list weights among the inputs too: kept as declared.
        XCTAssertEqual(m.graph.inputs.map(\.name), ["x", "W"])
        XCTAssertEqual(m.graph.dataInputs.map(\.name), ["x"])
        XCTAssertEqual(m.graph.inputs[0].elementType, .float)
        XCTAssertEqual(m.graph.inputs[0].dims, [.symbolic("N"), .fixed(1), .fixed(4), .fixed(4)])
        XCTAssertEqual(m.graph.outputs.map(\.name), ["y"])

        let summary = m.summary
        for part in ["pytorch 2.5.1", "IR version 8", "ai.onnx 17", "1 nodes", "2 initializers", "Conv",
                     "input  x: float [N, 1, 4, 4]", "output y: float [N, 2, 4, 4]"] {
            XCTAssertTrue(summary.contains(part), "summary lacks \"\(part)\":\n\(summary)")
        }
        XCTAssertFalse(summary.contains("input  W"), "initializers are not listed as inputs in the summary")
    }

    func testFloatDataPackedAndUnpackedGiveTheSameTensor() throws {
        let v: [Float] = [1, -2.5, 3.25, .greatestFiniteMagnitude, -0.0, 1e-30]
        let m = try parse(modelWith([Proto.floatTensor("p", dims: [2, 3], v, packed: true),
                                     Proto.floatTensor("u", dims: [2, 3], v, packed: false)]))
        XCTAssertEqual(m.graph.initializers["p"]?.dims, [2, 3])
        XCTAssertEqual(m.graph.initializers["u"]?.dims, [2, 3])
        XCTAssertEqual(values(m.graph.initializers["p"]).map(\.bitPattern), v.map(\.bitPattern))
        XCTAssertEqual(values(m.graph.initializers["u"]).map(\.bitPattern), v.map(\.bitPattern))

        // int64_data, packed and not; a packed run split over two fields is one list.
        var a = PB(), b = PB(), c = PB()
        a.packed(1, [3]); a.int(2, 7); a.packed(7, [-1, 0, Int64.max]); a.string(8, "a")
        b.int(1, 3); b.int(2, 7); b.int(7, -1); b.int(7, 0); b.int(7, Int64.max); b.string(8, "b")
        c.packed(1, [3]); c.int(2, 7); c.packed(7, [-1]); c.packed(7, [0, Int64.max]); c.string(8, "c")
        let n = try parse(modelWith([a, b, c]))
        for name in ["a", "b", "c"] { XCTAssertEqual(ints(n.graph.initializers[name]), [-1, 0, Int64.max], name) }
    }

    func testInt64DimsAndNegativeInts() throws {
        // A Reshape target [-1, 16] (int64_data, negative as a 10-byte varint), and negative attribute ints.
        var shape = PB()
        shape.packed(1, [2])
        shape.int(2, 7)
        shape.packed(7, [-1, 16])
        shape.string(8, "shape")
        let reshape = Proto.node("Reshape", ["x", "shape"], ["y"], attributes: [
            Proto.attribute("allowzero", type: 2) { $0.int(3, 0) },
            Proto.intsAttribute("axes", [-1, -2, Int64.min]),
            Proto.attribute("axis", type: 2) { $0.int(3, -1) },
        ])
        let m = try parse(Proto.model(Proto.graph(nodes: [reshape], initializers: [shape])))
        XCTAssertEqual(ints(m.graph.initializers["shape"]), [-1, 16])
        XCTAssertEqual(m.graph.initializers["shape"]?.dataType, .int64)
        XCTAssertEqual(m.graph.nodes[0].attributes["axes"], .ints([-1, -2, Int(Int64.min)]))
        XCTAssertEqual(m.graph.nodes[0].attributes["axis"], .int(-1))
        XCTAssertEqual(m.graph.nodes[0].attributes["allowzero"], .int(0))
    }

    func testHalfDoubleAndIntegerTypesInRawAndTypedFields() throws {
        let v: [Float] = [1.5, -2, 0.099975586, 65504, -0.0]  // exact in float16
        let halfBits = Proto.half(v)
        let bf: [Float] = [1.5, -2, 3.140625, -0x1p100]  // exact in bfloat16
        let bfBits = bf.map { UInt16($0.bitPattern >> 16) }
        var h32 = PB()  // float16 in int32_data's low 16 bits
        h32.packed(1, [5]); h32.int(2, 10); h32.packed(5, halfBits.map { Int64($0) }); h32.string(8, "h32")
        var bf32 = PB()
        bf32.packed(1, [4]); bf32.int(2, 16); for b in bfBits { bf32.int(5, Int64(b)) }; bf32.string(8, "bf32")
        var d = PB()
        d.packed(1, [2]); d.int(2, 11); d.packedDoubles(10, [0.25, -1e300]); d.string(8, "d")
        var du = PB()
        du.packed(1, [2]); du.int(2, 11); du.double(10, 0.25); du.double(10, 3); du.string(8, "du")
        var u8 = PB()  // uint8, int8 and bool in int32_data; int8 as a sign-extended varint
        u8.packed(1, [3]); u8.int(2, 2); u8.packed(5, [0, 255, 7]); u8.string(8, "u8")
        var i8 = PB()
        i8.packed(1, [2]); i8.int(2, 3); i8.packed(5, [-128, 127]); i8.string(8, "i8")
        var bo = PB()
        bo.packed(1, [3]); bo.int(2, 9); bo.packed(5, [1, 0, 1]); bo.string(8, "bool")
        var u32 = PB()
        u32.packed(1, [1]); u32.int(2, 12); u32.packed(11, [4_000_000_000]); u32.string(8, "u32")
        let m = try parse(modelWith([
            h32, bf32, d, du, u8, i8, bo, u32,
            Proto.tensor("h", dims: [5], type: 10, raw: Proto.le(halfBits)),
            Proto.tensor("bf", dims: [4], type: 16, raw: Proto.le(bfBits)),
            Proto.tensor("draw", dims: [2], type: 11, raw: Proto.le([(0.25 as Double).bitPattern, (-8 as Double).bitPattern])),
            Proto.tensor("i32", dims: [2], type: 6, raw: Proto.le([Int32(-5), Int32.max])),
            Proto.tensor("i16", dims: [2], type: 5, raw: Proto.le([Int16(-5), Int16.min])),
            Proto.tensor("u16", dims: [1], type: 4, raw: Proto.le([UInt16.max])),
            Proto.tensor("i64", dims: [2], type: 7, raw: Proto.le([Int64(-1), Int64.min])),
            Proto.tensor("u8raw", dims: [2], type: 2, raw: [0, 200]),
            Proto.tensor("i8raw", dims: [2], type: 3, raw: [0xff, 0x80]),
            Proto.tensor("boolraw", dims: [2], type: 9, raw: [1, 0]),
        ]))
        let t = m.graph.initializers
        XCTAssertEqual(values(t["h"]), v)
        XCTAssertEqual(values(t["h32"]), v)
        XCTAssertEqual(t["h"]?.dataType, .float16)
        XCTAssertEqual(values(t["bf"]), bf)
        XCTAssertEqual(values(t["bf32"]), bf)
        XCTAssertEqual(values(t["d"]), [0.25, -.infinity], "double converted to float (overflow to -inf)")
        XCTAssertEqual(values(t["du"]), [0.25, 3])
        XCTAssertEqual(values(t["draw"]), [0.25, -8])
        XCTAssertEqual(ints(t["u8"]), [0, 255, 7])
        XCTAssertEqual(ints(t["i8"]), [-128, 127])
        XCTAssertEqual(ints(t["bool"]), [1, 0, 1])
        XCTAssertEqual(ints(t["u32"]), [4_000_000_000])
        XCTAssertEqual(ints(t["i32"]), [-5, Int64(Int32.max)])
        XCTAssertEqual(ints(t["i16"]), [-5, Int64(Int16.min)])
        XCTAssertEqual(ints(t["u16"]), [65535])
        XCTAssertEqual(ints(t["i64"]), [-1, Int64.min])
        XCTAssertEqual(ints(t["u8raw"]), [0, 200])
        XCTAssertEqual(ints(t["i8raw"]), [-1, -128])
        XCTAssertEqual(ints(t["boolraw"]), [1, 0])
    }

    func testScalarsEmptyTensorsAndHighRank() throws {
        var empty = PB()  // dims [0, 3], no data at all: fine
        empty.packed(1, [0, 3]); empty.int(2, 1); empty.string(8, "empty")
        let m = try parse(modelWith([
            Proto.tensor("s", dims: [], type: 1, raw: Proto.rawFloats([2.5])),
            Proto.tensor("si", dims: [], type: 7, raw: Proto.le([Int64(42)])),
            empty,
            Proto.tensor("r5", dims: [1, 2, 1, 2, 1], type: 1, raw: Proto.rawFloats([1, 2, 3, 4])),
        ]))
        let t = m.graph.initializers
        XCTAssertEqual(t["s"]?.dims, [])
        if case let .float(x)? = t["s"]?.values { XCTAssertEqual(x.shape, .scalar); XCTAssertEqual(x.scalar, 2.5) }
        XCTAssertEqual(ints(t["si"]), [42])
        XCTAssertEqual(t["empty"]?.dims, [0, 3])
        XCTAssertEqual(values(t["empty"]), [])
        XCTAssertEqual(t["r5"]?.dims, [1, 2, 1, 2, 1], "dims keep a rank above Shape.maxRank")
        if case let .float(x)? = t["r5"]?.values { XCTAssertEqual(x.shape, [4], "stored flat") }
        XCTAssertEqual(values(t["r5"]), [1, 2, 3, 4])
    }

    func testAttributesOfEveryKind() throws {
        var graphAttr = PB()  // a subgraph (If/Loop bodies): kept as unsupported, never parsed
        graphAttr.message(1, Proto.node("Relu", ["a"], ["b"]))
        let node = Proto.node("Custom", ["x"], ["y"], name: "n", domain: "com.example", attributes: [
            Proto.attribute("f", type: 1) { $0.float(2, 0.125) },
            Proto.attribute("i", type: 2) { $0.int(3, -7) },
            Proto.attribute("s", type: 3) { $0.string(4, "NOTSET") },
            Proto.attribute("t", type: 4) { $0.message(5, Proto.tensor("value", dims: [2], type: 1, raw: Proto.rawFloats([1, 2]))) },
            Proto.attribute("fs", type: 6) { $0.packedFloats(7, [1.5, -2]) },
            Proto.attribute("fsu", type: 6) { $0.float(7, 1.5); $0.float(7, -2) },
            Proto.attribute("is", type: 7) { $0.packed(8, [1, -1]) },
            Proto.attribute("isu", type: 7) { $0.int(8, 1); $0.int(8, -1) },
            Proto.attribute("ss", type: 8) { $0.string(9, "a"); $0.string(9, "bc") },
            Proto.attribute("g", type: 5) { $0.message(6, graphAttr) },
            Proto.attribute("ts", type: 9) { $0.message(10, Proto.tensor("q", dims: [1], type: 1, raw: Proto.rawFloats([1]))) },
            Proto.attribute("gs", type: 10) { $0.message(11, graphAttr) },
            Proto.attribute("sp", type: 11) { $0.message(22, PB()) },
            Proto.attribute("tp", type: 13) { $0.message(14, PB()) },
            // IR version 1: no type field, inferred from the value set.
            Proto.attribute("old_i", type: nil) { $0.int(3, 5) },
            Proto.attribute("old_fs", type: nil) { $0.packedFloats(7, [0.5]) },
            Proto.attribute("old_g", type: nil) { $0.message(6, graphAttr) },
        ])
        let m = try parse(Proto.model(Proto.graph(nodes: [node])))
        let a = m.graph.nodes[0].attributes
        XCTAssertEqual(m.graph.nodes[0].domain, "com.example")
        XCTAssertEqual(a["f"], .float(0.125))
        XCTAssertEqual(a["i"], .int(-7))
        XCTAssertEqual(a["s"], .string("NOTSET"))
        guard case let .tensor(t)? = a["t"] else { return XCTFail("t is \(String(describing: a["t"]))") }
        XCTAssertEqual(t.name, "value")
        XCTAssertEqual(values(t), [1, 2])
        XCTAssertEqual(a["fs"], .floats([1.5, -2]))
        XCTAssertEqual(a["fsu"], .floats([1.5, -2]))
        XCTAssertEqual(a["is"], .ints([1, -1]))
        XCTAssertEqual(a["isu"], .ints([1, -1]))
        XCTAssertEqual(a["ss"], .strings(["a", "bc"]))
        XCTAssertEqual(a["g"], .unsupported(type: 5))
        XCTAssertEqual(a["ts"], .unsupported(type: 9))
        XCTAssertEqual(a["gs"], .unsupported(type: 10))
        XCTAssertEqual(a["sp"], .unsupported(type: 11))
        XCTAssertEqual(a["tp"], .unsupported(type: 13))
        XCTAssertEqual(a["old_i"], .int(5))
        XCTAssertEqual(a["old_fs"], .floats([0.5]))
        XCTAssertEqual(a["old_g"], .unsupported(type: 5))
        XCTAssertEqual(a.count, 17)
    }

    func testValueInfoWithSymbolicFixedAndMissingDims() throws {
        var sequenceType = PB()  // TypeProto.sequence_type (4): not a tensor
        sequenceType.message(4, PB())
        var seq = PB()
        seq.string(1, "seq")
        seq.message(2, sequenceType)
        let g = Proto.graph(nodes: [Proto.node("Identity", ["x"], ["y"])],
                            inputs: [Proto.valueInfo("x", dims: [.symbolic("batch"), .fixed(3), .none, .fixed(-1)]),
                                     Proto.valueInfo("noshape", elemType: 7, dims: nil),
                                     Proto.valueInfo("scalar", elemType: 10, dims: []),
                                     Proto.valueInfo("complex", elemType: 14, dims: [.fixed(2)]), seq],
                            outputs: [Proto.valueInfo("y", dims: [.fixed(1), .fixed(1000)])])
        let m = try parse(Proto.model(g))
        let i = m.graph.inputs
        XCTAssertEqual(i.map(\.name), ["x", "noshape", "scalar", "complex", "seq"])
        XCTAssertEqual(i[0].dims, [.symbolic("batch"), .fixed(3), .unknown, .unknown], "a negative size reads as unknown")
        XCTAssertEqual(i[1].elementType, .int64)
        XCTAssertNil(i[1].dims, "no shape: any rank")
        XCTAssertEqual(i[2].elementType, .float16)
        XCTAssertEqual(i[2].dims, [])
        XCTAssertNil(i[3].elementType, "complex64 is not a type AdvKit reads")
        XCTAssertNil(i[4].elementType)
        XCTAssertNil(i[4].dims)
        XCTAssertEqual(m.graph.outputs[0].dims, [.fixed(1), .fixed(1000)])
    }

    func testUnknownFieldsOfEveryWireTypeAreSkipped() throws {
        let m = try parse(Proto.model(Proto.graph(nodes: [Proto.node("Relu", ["x"], ["y"])])) { m in
            m.int(5, 12)                  // model_version (varint)
            m.fixed32(99, 7)
            m.double(98, 1)
            m.data(14, [1, 2, 3])         // metadata_props
            m.int(536_870_911, 1)         // the largest field number
            var o = PB()
            o.string(1, "ai.onnx.ml")
            o.int(2, 3)
            m.message(8, o)
        })
        XCTAssertEqual(m.opsetImports, ["": 17, "ai.onnx.ml": 3])
        XCTAssertEqual(m.opTypes, ["Relu"])
    }

    // MARK: external data

    func testExternalDataRelativeToTheModelsFolder() throws {
        let dir = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/weights", withIntermediateDirectories: true)
        let w: [Float] = (0..<6).map { Float($0) + 0.5 }
        let b: [Float] = [-1, 1]
        // 8 bytes of padding, W at offset 8, B right after it (no length: the rest of the file).
        try Data([UInt8](repeating: 0xee, count: 8) + Proto.rawFloats(w) + Proto.rawFloats(b))
            .write(to: URL(fileURLWithPath: dir + "/weights/m.data"))
        func external(_ name: String, dims: [Int64], _ entries: [(String, String)], location: Int64 = 1) -> PB {
            var t = PB()
            t.packed(1, dims)
            t.int(2, 1)
            t.string(8, name)
            for (k, v) in entries {
                var e = PB()
                e.string(1, k)
                e.string(2, v)
                t.message(13, e)
            }
            t.int(14, location)
            return t
        }
        let good = modelWith([external("W", dims: [2, 3], [("location", "weights/m.data"), ("offset", "8"), ("length", "24")]),
                              external("B", dims: [2], [("location", "weights/m.data"), ("offset", "32")])])
        try Data(good).write(to: URL(fileURLWithPath: dir + "/m.onnx"))
        let m = try ONNXModel.read(dir + "/m.onnx")
        XCTAssertEqual(values(m.graph.initializers["W"]), w)
        XCTAssertEqual(m.graph.initializers["W"]?.dims, [2, 3])
        XCTAssertEqual(values(m.graph.initializers["B"]), b)

        assertThrows(try parse(good), containing: "tensor W (float, dims [2, 3], 6 elements) keeps its data in the external file weights/m.data, but the model was given as bytes")
        XCTAssertEqual(values(try parse(good, directory: dir).graph.initializers["W"]), w)

        func bad(_ entries: [(String, String)], dims: [Int64] = [2, 3]) throws -> ONNXModel {
            try Data(modelWith([external("W", dims: dims, entries)])).write(to: URL(fileURLWithPath: dir + "/bad.onnx"))
            return try ONNXModel.read(dir + "/bad.onnx")
        }
        assertThrows(try bad([("location", "../../etc/passwd")]), containing: "leaves the model's folder")
        assertThrows(try bad([("location", "weights/../../x")]), containing: "leaves the model's folder")
        assertThrows(try bad([("location", "/etc/passwd")]), containing: "by an absolute path")
        assertThrows(try bad([("offset", "0")]), containing: "external data with no location")
        assertThrows(try bad([("location", "gone.data")]), containing: "the external data file gone.data of tensor W")
        assertThrows(try bad([("location", "gone.data")]), containing: "is missing (looked for \(dir)/gone.data)")
        assertThrows(try bad([("location", "weights")]), containing: "is a directory")
        assertThrows(try bad([("location", "weights/m.data"), ("offset", "41")]),
                     containing: "external data offset 41, past the end of weights/m.data (40 bytes)")
        assertThrows(try bad([("location", "weights/m.data"), ("offset", "8"), ("length", "1000")]),
                     containing: "offset 8 and length 1000, past the end of weights/m.data (40 bytes)")
        assertThrows(try bad([("location", "weights/m.data"), ("offset", "20")]),
                     containing: "needs 24 bytes, its external data in weights/m.data has length 20")
        assertThrows(try bad([("location", "weights/m.data"), ("offset", "-8")]), containing: "offset \"-8\", not a non-negative integer")
        assertThrows(try bad([("location", "weights/m.data"), ("offset", "99999999999999999999")]), containing: "not a non-negative integer")
        // The same bytes named by many tensors: refused before they cost more memory than the file holds.
        let twice = modelWith([external("W", dims: [2, 3], [("location", "weights/m.data"), ("offset", "8"), ("length", "24")]),
                               external("V", dims: [2, 3], [("location", "weights/m.data"), ("offset", "8"), ("length", "24")])])
        assertThrows(try parse(twice, directory: dir), containing: "take more bytes from weights/m.data than its 40")
        let aliased = modelWith([external("W", dims: [2, 3], [("location", "weights/m.data"), ("offset", "8"), ("length", "24")]),
                                 external("V", dims: [2, 3], [("location", "./weights//./m.data"), ("offset", "8"), ("length", "24")])])
        assertThrows(try parse(aliased, directory: dir), containing: "than its 40 (the same bytes named twice?)")
        // Empty files: an empty model says so; an empty external file serves a tensor of 0 elements.
        try Data().write(to: URL(fileURLWithPath: dir + "/empty.data"))
        try Data().write(to: URL(fileURLWithPath: dir + "/empty.onnx"))
        assertThrows(try ONNXModel.read(dir + "/empty.onnx"), containing: "the file is empty")
        try Data(modelWith([external("Z", dims: [0, 4], [("location", "empty.data")])])).write(to: URL(fileURLWithPath: dir + "/z.onnx"))
        XCTAssertEqual(try ONNXModel.read(dir + "/z.onnx").graph.initializers["Z"]?.dims, [0, 4])
        assertThrows(try ONNXModel.read(dir + "/none.onnx"), containing: "no such file")
    }

    // MARK: hostile and broken files

    func testHostileBytesGiveClearErrors() throws {
        assertThrows(try parse([]), containing: "the file is empty")
        // A length past the end: field 7 (graph) claiming 100 bytes with 3 there.
        assertThrows(try parse([0x3a, 100, 1, 2, 3]), containing: "field 7 of ModelProto runs past the end (offset 1, length 100")
        // A varint of 11 bytes (ir_version).
        assertThrows(try parse([0x08] + [UInt8](repeating: 0xff, count: 10) + [0x01]), containing: "longer than 10 bytes")
        // A 10-byte varint is fine (ir_version -1) but then there is no graph.
        assertThrows(try parse([0x08] + [UInt8](repeating: 0xff, count: 9) + [0x01]), containing: "the model has no graph")
        for wire: UInt8 in [3, 4] { assertThrows(try parse([0x08 | wire, 0]), containing: "wire type \(wire) (a group)") }
        for wire: UInt8 in [6, 7] { assertThrows(try parse([0x08 | wire, 0]), containing: "wire type \(wire), which does not exist") }
        assertThrows(try parse([0x00, 0]), containing: "field number 0")
        assertThrows(try parse([0x0a, 0]), containing: "field 1 of ModelProto has wire type 2, its type needs 0")
        assertThrows(try parse([0x08]), containing: "runs past the end of ModelProto")
        // Packed floats of a length that is not a multiple of 4.
        var odd = PB()
        odd.packed(1, [1]); odd.int(2, 1); odd.data(4, [0, 0, 0]); odd.string(8, "odd")
        assertThrows(try parse(modelWith([odd])), containing: "3 bytes of packed 4-byte values")

        // dims whose product overflows; a negative dim; raw_data shorter than dims imply.
        assertThrows(try parse(modelWith([Proto.tensor("big", dims: [1 << 31, 1 << 31, 1 << 31], type: 1, raw: [])])),
                     containing: "tensor big has dims [2147483648, 2147483648, 2147483648], whose product overflows")
        assertThrows(try parse(modelWith([Proto.tensor("big", dims: [1 << 62], type: 1, raw: [])])), containing: "whose product overflows")
        assertThrows(try parse(modelWith([Proto.tensor("neg", dims: [-1, 4], type: 1, raw: [])])),
                     containing: "tensor neg has a negative dimension -1")
        assertThrows(try parse(modelWith([Proto.tensor("short", dims: [4, 4], type: 1, raw: Proto.rawFloats([Float](repeating: 1, count: 15)))])),
                     containing: "tensor short (float, dims [4, 4], 16 elements) needs 64 bytes of raw_data, the file has 60")
        // A huge element count with no data: refused before anything is allocated.
        var huge = PB()
        huge.packed(1, [1 << 40]); huge.int(2, 1); huge.string(8, "huge")
        assertThrows(try parse(modelWith([huge])), containing: "tensor huge (float, dims [1099511627776], 1099511627776 elements) has no data")
        assertThrows(try parse(modelWith([Proto.floatTensor("few", dims: [3], [1, 2], packed: true)])),
                     containing: "has 2 values in float_data")
        var mixed = Proto.floatTensor("mixed", dims: [2], [1, 2], packed: true)
        mixed.packed(7, [1, 2])
        assertThrows(try parse(modelWith([mixed])), containing: "has int64_data, which onnx.proto does not allow for float")
        var both = Proto.tensor("both", dims: [1], type: 1, raw: Proto.rawFloats([1]))
        both.packedFloats(4, [1])
        assertThrows(try parse(modelWith([both])), containing: "has both raw_data and float_data")
        assertThrows(try parse(modelWith([Proto.tensor("c", dims: [1], type: 14, raw: [0, 0, 0, 0, 0, 0, 0, 0])])),
                     containing: "tensor c has data type 14 (complex64), which AdvKit does not read")
        assertThrows(try parse(modelWith([Proto.tensor("s", dims: [1], type: 8, raw: [])])), containing: "tensor s holds strings")
        var u64 = PB()
        u64.packed(1, [1]); u64.int(2, 13); u64.packed(11, [-1]); u64.string(8, "u64")
        assertThrows(try parse(modelWith([u64])), containing: "holds the uint64 value 18446744073709551615, which does not fit Int64")
        assertThrows(try parse(modelWith([Proto.tensor("", dims: [1], type: 1, raw: Proto.rawFloats([1]))])),
                     containing: "initializer 0 has no name")
        assertThrows(try parse(modelWith([Proto.tensor("w", dims: [1], type: 1, raw: Proto.rawFloats([1])),
                                          Proto.tensor("w", dims: [1], type: 1, raw: Proto.rawFloats([1]))])),
                     containing: "two initializers are named w")

        // A sparse initializer.
        assertThrows(try parse(modelWith([]) { $0.message(15, PB()) }), containing: "the graph has a sparse_initializer")
        // Nodes without an op type, attributes twice, a model with two graphs.
        assertThrows(try parse(Proto.model(Proto.graph(nodes: [Proto.node("", ["a"], ["b"])]))), containing: "node 0 (no op_type) has no op_type")
        let dup = Proto.node("Conv", ["x"], ["y"], name: "c", attributes: [Proto.intsAttribute("pads", [0]), Proto.intsAttribute("pads", [1])])
        assertThrows(try parse(Proto.model(Proto.graph(nodes: [dup]))), containing: "node c has two attributes named pads")
        assertThrows(try parse(Proto.model(Proto.graph(nodes: [Proto.node("Constant", [], ["k"], name: "k", attributes: [Proto.attribute("value", type: 4) { _ in }])]))),
                     containing: "attribute value of node k has type TENSOR but no tensor")
        let g = Proto.graph(nodes: [Proto.node("Relu", ["x"], ["y"])])
        assertThrows(try parse(Proto.model(g) { $0.message(7, g) }), containing: "the model holds two graphs")
        // Not ONNX at all: a zip (a PyTorch checkpoint) gets a hint.
        assertThrows(try parse([0x50, 0x4b, 0x03, 0x04, 0x14, 0, 0, 0]), containing: "export the model to ONNX first")
    }

    func testEveryPrefixOfAValidModelThrowsOrParses() throws {
        let bytes = Proto.tinyConvModel()
        var parsed = 0
        for n in 0..<bytes.count {
            do {
                _ = try parse(Array(bytes.prefix(n)))
                parsed += 1  // a cut between fields of ModelProto can still be a valid model
            } catch is AdvKitError {
            } catch {
                XCTFail("prefix \(n): \(error) is not an AdvKitError")
            }
        }
        XCTAssertNoThrow(try parse(bytes))
        XCTAssertLessThan(parsed, bytes.count / 10, "most prefixes are cut inside the graph")
    }

    func testFlippedBytesThrowOrParse() throws {
        // Deterministic mutations of a valid model: each byte set to a few values; never a trap.
        let bytes = Proto.tinyConvModel()
        for i in 0..<bytes.count {
            for v: UInt8 in [0x00, 0x7f, 0x80, 0xff, bytes[i] ^ 0x08] {
                var b = bytes
                b[i] = v
                do { _ = try parse(b) } catch is AdvKitError {} catch { XCTFail("byte \(i) = \(v): \(error) is not an AdvKitError") }
            }
        }
    }

    func testDeeplyNestedUnknownFieldsAreSkippedWithoutRecursing() throws {
        // 100,000 levels of field 100 (unknown to ModelProto), each holding the next: built outside-in with the
        // lengths computed first, so the bytes cost linear time.
        func nested(_ levels: Int, field: Int) -> PB {
            func varintSize(_ v: Int) -> Int { var n = 1, v = v; while v >= 0x80 { v >>= 7; n += 1 }; return n }
            var key = PB()
            key.key(field, 2)
            var lengths = [0]  // lengths[k]: bytes of level k's content (level 0 innermost, empty)
            for _ in 0..<levels { lengths.append(key.bytes.count + varintSize(lengths.last!) + lengths.last!) }
            var out = PB()
            for k in stride(from: levels - 1, through: 0, by: -1) {
                out.bytes += key.bytes
                out.varint(UInt64(lengths[k]))
            }
            return out
        }
        let deep = nested(100_000, field: 100)
        XCTAssertGreaterThan(deep.bytes.count, 300_000)
        let m = try parse(Proto.model(Proto.graph(nodes: [Proto.node("Relu", ["x"], ["y"])])) { $0.bytes += deep.bytes })
        XCTAssertEqual(m.opTypes, ["Relu"])
        // The same depth inside a known but unsupported place: a graph attribute (If/Loop bodies).
        let ifNode = Proto.node("If", ["c"], ["y"], attributes: [Proto.attribute("then_branch", type: 5) { $0.bytes += nested(100_000, field: 6).bytes }])
        XCTAssertEqual(try parse(Proto.model(Proto.graph(nodes: [ifNode]))).graph.nodes[0].attributes["then_branch"], .unsupported(type: 5))
        // Cut by one byte: the outermost level's length runs past the end.
        var cut = Proto.model(Proto.graph(nodes: [Proto.node("Relu", ["x"], ["y"])])) { $0.bytes += deep.bytes }
        cut.removeLast()
        assertThrows(try parse(cut), containing: "runs past the end")
    }

    // MARK: seeds and real exports

    /// The fuzz seeds (Fuzz/corpus/onnx: one selector byte, 3 = ONNX, then the model) must parse. With
    /// ADVKIT_WRITE_ONNX_CORPUS=1 this test writes them first.
    func testFuzzSeedModelsParse() throws {
        let seeds: [(String, [UInt8])] = [
            ("tiny-conv", Proto.tinyConvModel()),
            ("types", modelWith([Proto.tensor("h", dims: [2], type: 10, raw: Proto.le(Proto.half([1, 2]))),
                                 Proto.floatTensor("u", dims: [2], [1, 2], packed: false),
                                 Proto.tensor("i", dims: [2], type: 7, raw: Proto.le([Int64(-1), 3]))])),
            ("attributes", Proto.model(Proto.graph(nodes: [Proto.node("Gemm", ["a", "b"], ["c"], attributes: [
                Proto.attribute("alpha", type: 1) { $0.float(2, 1) }, Proto.attribute("transB", type: 2) { $0.int(3, 1) },
                Proto.attribute("mode", type: 3) { $0.string(4, "constant") }, Proto.attribute("ss", type: 8) { $0.string(9, "x") },
                Proto.attribute("t", type: 4) { $0.message(5, Proto.tensor("v", dims: [], type: 1, raw: Proto.rawFloats([3]))) },
            ])], inputs: [Proto.valueInfo("a", dims: [.symbolic("N"), .fixed(4)])], outputs: [Proto.valueInfo("c", dims: nil)]))),
        ]
        let folder = RepositoryPaths.root + "/Fuzz/corpus/onnx"
        if ProcessInfo.processInfo.environment["ADVKIT_WRITE_ONNX_CORPUS"] == "1" {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for (name, bytes) in seeds { try Data([3] + bytes).write(to: URL(fileURLWithPath: folder + "/" + name)) }
        }
        for (name, bytes) in seeds { XCTAssertNoThrow(try parse(bytes), name) }
        for file in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
            let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + file))
            XCTAssertEqual(data.first, 3, "\(file): the fuzz target's selector for ONNX is 3")
            XCTAssertNoThrow(try ONNXModel.parse(data.dropFirst()), file)
        }
    }

    /// Models exported by PyTorch (dynamo and legacy exporters) into Tests/Fixtures/onnx, with external data where
    /// the exporter wrote it.
    func testReadsExportedFixtures() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/onnx").path
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: folder) else {
            throw XCTSkip("no fixtures in \(folder) yet")
        }
        let models = files.filter { $0.hasSuffix(".onnx") }.sorted()
        XCTAssertFalse(models.isEmpty, "no .onnx file in \(folder)")
        for file in models {
            let m = try ONNXModel.read(folder + "/" + file)
            XCTAssertGreaterThan(m.graph.nodes.count, 0, file)
            XCTAssertFalse(m.opTypes.isEmpty, file)
            XCTAssertFalse(m.graph.initializers.isEmpty, file)
            XCTAssertFalse(m.graph.dataInputs.isEmpty, file)
            XCTAssertFalse(m.graph.outputs.isEmpty, file)
            XCTAssertNotNil(m.opsetImports[""], file)
            // Every node input is a graph input, an initializer, an earlier node's output or left out.
            var known = Set(m.graph.inputs.map(\.name)).union(m.graph.initializers.keys)
            for n in m.graph.nodes {
                for i in n.inputs where !i.isEmpty { XCTAssertTrue(known.contains(i), "\(file): \(n.opType) reads \(i) before it is made") }
                known.formUnion(n.outputs)
            }
        }
    }
}
