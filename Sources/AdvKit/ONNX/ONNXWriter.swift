import Foundation

/// Writing a fine-tuned imported model back as ONNX: the file it was read from, with the trained initializers.
///
/// The written file is the source file with every field of ModelProto and GraphProto copied byte for byte (nodes,
/// inputs, outputs, opsets, metadata, doc strings, value_info, ...) and only the initializer TensorProtos that change
/// re-encoded (the lengths of the messages that enclose them recomputed). A re-encoded tensor keeps its name, dims,
/// data type, doc string and metadata, and holds its values as raw_data (little-endian, in its own data type).
///
/// Which initializers change, from the tensors the tape reads (`namedTensors`, ONNXClassifier+Training.swift):
///
/// - an initializer read as it is: its trained values;
/// - an (IN, OUT) Gemm/MatMul weight trained as its (OUT, IN) copy ("+Transpose"): the copy transposed back;
/// - a convolution whose BatchNormalization was folded in at load ("+<bn node>"): the Conv's weight becomes the
///   trained folded weight W', and the BatchNormalization node, still in the graph, is set to pass the convolution
///   through plus the trained folded bias b'. ONNX's batch norm is y = γ·(x − μ)/√(σ² + ε) + β (Ioffe & Szegedy,
///   2015); with γ = 1, μ = 0 and σ² = 1 − ε rounded so that σ² + ε is exactly 1 in float32, it is y = x + β. The
///   bias b' goes into the Conv's bias input (β = 0), or into β for a Conv without one. Float32 arithmetic then
///   computes conv(x, W') + b' as the trained classifier does (up to the order of one rounding), and AdvKit's own
///   fold of the written file gives back W' and b' bit for bit (√(σ² + ε) in Double is within 2⁻²⁶ of 1, less than
///   half a float32 ulp). A folded pair that training left as it was keeps its original initializers.
///
/// Initializers stored as external data are written inline (raw_data; the external_data and data_location fields
/// dropped), so the output is one self-contained file (ONNX's protobuf limit makes that a model under 2 GB). Tensors
/// in node attributes stored as external data are inlined too. The file is written to a temporary file in the same
/// folder and renamed over `path`, so a failure never leaves a half-written model.
///
/// The input options (scale, mean, std, layout) stay outside the graph, as when the model was read: the written
/// model takes the same input as the original.
extension ONNXClassifier {
    /// Writes this classifier, with its current (fine-tuned) tensors, as an ONNX file at `path` (see above).
    ///
    /// Throws `AdvKitError` when the source file is gone or has changed since it was read, when an initializer is
    /// shared by two uses that training moved apart (no single value computes both), or when `path` cannot be
    /// written.
    public func writeONNX(to path: String) throws {
        let source = self.path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source, isDirectory: &isDir), !isDir.boolValue else {
            throw AdvKitError.io(path: source, reason: "writing ONNX copies the graph from the .onnx file the model was read from, and there is no such file")
        }
        let changes = try initializerWriteBack()
        let data = try ONNXReaderFiles.map(source, path: source, what: "model")
        let directory = URL(fileURLWithPath: source).deletingLastPathComponent().path
        // The graph is copied from the file: it must still be the one this classifier was built from.
        guard try ONNXModel.parse(data, path: source, directory: directory) == model else {
            throw AdvKitError.invalidFile(path: source, reason: "the file has changed since the model was read from it; read it again before writing ONNX")
        }
        var writer = ONNXWriteBack(source: source, directory: directory, changes: changes)
        let bytes = try data.withUnsafeBytes { try writer.model($0) }
        try FileIO.writeAtomically(Data(bytes), to: path)
    }

    /// The values to write for each float initializer that the trained classifier reads differently from the file,
    /// by initializer name (see the extension's comment). Throws when two uses of one initializer ask for different
    /// values.
    func initializerWriteBack() throws -> [String: [Float]] {
        let originals = model.graph.initializers
        var writes: [String: (values: [Float], by: String)] = [:]
        func put(_ name: String, _ values: [Float], by: String) throws {
            guard let original = originals[name], case .float = original.values else {
                preconditionFailure("\(name) is not a float initializer")
            }
            precondition(values.count == original.count, "\(values.count) values for \(name) of \(original.count)")
            if let w = writes[name] {
                guard Self.sameBits(w.values, values) else {
                    throw AdvKitError.invalidData("cannot write the model as ONNX: the initializer \(name) is used by \(w.by) and by \(by), "
                                                  + "and training gave them different values (save it as safetensors instead)")
                }
                return
            }
            writes[name] = (values, by)
        }

        // Folded Conv + BatchNormalization pairs.
        var producer: [String: Int] = [:]
        for (i, n) in nodes.enumerated() { for o in n.outputs { producer[o] = i } }
        for c in rewritten.keys.sorted() {
            let r = rewritten[c]!, conv = nodes[c]
            guard let bn = nodes.first(where: { $0.opType == "BatchNormalization" && $0.inputs.first == conv.outputs[0] }) else {
                preconditionFailure("the BatchNormalization folded into \(conv.name) is not in the graph")
            }
            let wNow = floatParameters[r.weight]!.value.scalars, bNow = floatParameters[r.bias]!.value.scalars
            let hasBias = conv.inputs.count > 2 && !conv.inputs[2].isEmpty
            let biasName: String? = hasBias ? conv.inputs[2] : nil
            let names = (weight: conv.inputs[1], gamma: bn.inputs[1], beta: bn.inputs[2], mean: bn.inputs[3], variance: bn.inputs[4])
            func original(_ name: String) -> [Float] { originals[name]!.floats }
            var eps: Float = 1e-5
            if case let .float(e)? = bn.attributes["epsilon"] { eps = e }
            let folded = Self.fold(weight: original(names.weight), bias: biasName.map(original), gamma: original(names.gamma),
                                   beta: original(names.beta), mean: original(names.mean), variance: original(names.variance), epsilon: eps)
            let by = "the convolution \(conv.name) folded with \(bn.name)"
            if Self.sameBits(folded.weight, wNow) && Self.sameBits(folded.bias, bNow) {
                // Untouched: the file's own tensors compute it (and must not be changed by another use).
                for name in [names.weight, names.gamma, names.beta, names.mean, names.variance] + (biasName.map { [$0] } ?? []) {
                    try put(name, original(name), by: by)
                }
                continue
            }
            let oc = bNow.count
            guard let variance = Self.identityVariance(epsilon: eps) else {
                throw AdvKitError.invalidData("cannot write the model as ONNX: \(bn.name)'s epsilon \(eps) leaves no float32 variance v with v + epsilon = 1")
            }
            try put(names.weight, wNow, by: by)
            if let biasName {
                try put(biasName, bNow, by: by)
                try put(names.beta, [Float](repeating: 0, count: oc), by: by)
            } else {
                try put(names.beta, bNow, by: by)
            }
            try put(names.gamma, [Float](repeating: 1, count: oc), by: by)
            try put(names.mean, [Float](repeating: 0, count: oc), by: by)
            try put(names.variance, [Float](repeating: variance, count: oc), by: by)
        }

        // Initializers the tape reads as they are, or as their transposed copy.
        var initializerOf: [ObjectIdentifier: String] = [:]
        for (name, p) in floatParameters where originals[name] != nil { initializerOf[ObjectIdentifier(p)] = name }
        var transposedOf: [ObjectIdentifier: String] = [:]
        for (key, q) in transposed { if let name = initializerOf[key] { transposedOf[ObjectIdentifier(q)] = name } }
        for (tensorName, t) in namedTensors {
            let p = t.storage, id = ObjectIdentifier(p)
            if let name = initializerOf[id] {
                try put(name, p.value.scalars, by: "the tensor \(tensorName)")
            } else if let name = transposedOf[id] {
                let v = p.value.scalars, rows = p.value.shape[0], cols = p.value.shape[1]  // (OUT, IN) -> (IN, OUT)
                var back = [Float](repeating: 0, count: v.count)
                for o in 0..<rows { for i in 0..<cols { back[i * rows + o] = v[o * cols + i] } }
                try put(name, back, by: "the tensor \(tensorName)")
            }
        }
        var out: [String: [Float]] = [:]
        for (name, w) in writes where !Self.sameBits(w.values, originals[name]!.floats) { out[name] = w.values }
        return out
    }

    /// The BatchNormalization fold done at load (ONNXClassifier.prepare), on the file's tensors: per output
    /// channel s = γ/√(σ² + ε) in Double, W' = W·s, b' = (b − μ)·s + β.
    static func fold(weight: [Float], bias: [Float]?, gamma: [Float], beta: [Float], mean: [Float], variance: [Float],
                     epsilon: Float) -> (weight: [Float], bias: [Float]) {
        let oc = gamma.count, per = weight.count / max(oc, 1)
        var w = weight, b = [Float](repeating: 0, count: oc)
        for o in 0..<oc {
            let scale = Double(gamma[o]) / (Double(variance[o]) + Double(epsilon)).squareRoot()
            for j in 0..<per { w[o * per + j] = Float(Double(w[o * per + j]) * scale) }
            b[o] = Float((Double(bias?[o] ?? 0) - Double(mean[o])) * scale + Double(beta[o]))
        }
        return (w, b)
    }

    /// A float32 variance v with v + ε == 1 in float32 (onnxruntime's arithmetic) and |v + ε − 1| ≤ 2⁻²⁵ exactly
    /// (AdvKit's fold in Double), nearest to 1 − ε; nil when no float32 value does both.
    static func identityVariance(epsilon eps: Float) -> Float? {
        guard eps.isFinite else { return nil }
        let guess = Float(1 - Double(eps))
        let candidates = [guess, guess.nextDown, guess.nextUp, guess.nextDown.nextDown, guess.nextUp.nextUp]
        return candidates.filter { v in
            v.isFinite && v + eps == 1 && abs(Double(v) + Double(eps) - 1) <= 0x1p-25
        }.min { abs(Double($0) + Double(eps) - 1) < abs(Double($1) + Double(eps) - 1) }
    }

    static func sameBits(_ a: [Float], _ b: [Float]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
    }
}

/// One write: the source file's messages walked with ONNXProtoReader, copied field by field, the changed
/// initializers (and external-data tensors) re-encoded with ONNXProtoWriter.
struct ONNXWriteBack {
    let source: String
    let directory: String
    /// Initializer name -> the values to write, in the initializer's data type.
    let changes: [String: [Float]]
    /// External data files by location, mapped once each.
    private var external: [String: Data] = [:]

    init(source: String, directory: String, changes: [String: [Float]]) {
        self.source = source
        self.directory = directory
        self.changes = changes
    }

    func fail(_ why: String) -> AdvKitError { .invalidFile(path: source, reason: "cannot write it back as ONNX: \(why)") }

    /// The whole ModelProto: every field copied except the graph (7), rebuilt.
    mutating func model(_ raw: UnsafeRawBufferPointer) throws -> [UInt8] {
        var r = ONNXProtoReader(bytes: raw, range: 0..<raw.count, message: "ModelProto", path: source)
        return try rewrite(&r, capacity: raw.count) { field, r, this in
            guard field == 7 else { try r.skip(); return nil }
            var g = r.submessage(try r.submessageWindow(), "GraphProto")
            return try this.graph(&g).map { this.field(7, $0) }
        } ?? Array(raw)
    }

    /// GraphProto: initializers (5) that change or hold external data re-encoded, nodes (1) whose attribute tensors
    /// hold external data re-encoded; every other field copied. nil: nothing changed.
    mutating func graph(_ r: inout ONNXProtoReader) throws -> [UInt8]? {
        try rewrite(&r, capacity: r.end - r.position) { field, r, this in
            switch field {
            case 5:
                var t = r.submessage(try r.submessageWindow(), "TensorProto")
                return try this.tensor(&t, initializer: true).map { this.field(5, $0) }
            case 1:
                var n = r.submessage(try r.submessageWindow(), "NodeProto")
                return try this.node(&n).map { this.field(1, $0) }
            default:
                try r.skip()
                return nil
            }
        }
    }

    /// NodeProto: attributes (5) whose tensors (AttributeProto's t, 5, and tensors, 10) hold external data.
    mutating func node(_ r: inout ONNXProtoReader) throws -> [UInt8]? {
        try rewrite(&r, capacity: r.end - r.position) { field, r, this in
            guard field == 5 else { try r.skip(); return nil }
            var a = r.submessage(try r.submessageWindow(), "AttributeProto")
            return try this.rewrite(&a, capacity: a.end - a.position) { f, a, this in
                guard f == 5 || f == 10 else { try a.skip(); return nil }
                var t = a.submessage(try a.submessageWindow(), "TensorProto")
                return try this.tensor(&t, initializer: false).map { this.field(f, $0) }
            }.map { this.field(5, $0) }
        }
    }

    /// TensorProto: re-encoded when it is an initializer with new values or its data is external; its data fields
    /// (float_data 4, int32_data 5, int64_data 7, raw_data 9, double_data 10, uint64_data 11, external_data 13,
    /// data_location 14) replaced by one raw_data where the first of them was, every other field copied.
    mutating func tensor(_ r: inout ONNXProtoReader, initializer: Bool) throws -> [UInt8]? {
        let start = r
        var name = "", dataType = 0, location = 0
        var entries: [(String, String)] = []
        while let (field, _) = try r.nextField() {
            switch field {
            case 2: dataType = Int(try r.int32())
            case 8: name = try r.string()
            case 13:
                var e = r.submessage(try r.submessageWindow(), "StringStringEntryProto")
                var key = "", value = ""
                while let (f, _) = try e.nextField() {
                    switch f {
                    case 1: key = try e.string()
                    case 2: value = try e.string()
                    default: try e.skip()
                    }
                }
                entries.append((key, value))
            case 14: location = Int(try r.int32())
            default: try r.skip()
            }
        }
        let values = initializer ? changes[name] : nil
        guard values != nil || location == 1 else { return nil }
        guard let type = ONNXDataType(rawValue: dataType) else { throw fail("tensor \(name) has data type \(dataType)") }
        let raw = try values.map { try encode($0, as: type, name: name) } ?? externalBytes(entries, name: name)
        var again = start
        var placed = false
        var out = try rewrite(&again, capacity: raw.count + 64) { field, r, this in
            try r.skip()
            guard [4, 5, 7, 9, 10, 11, 13, 14].contains(field) else { return nil }
            if placed { return [] }
            placed = true
            return this.field(9, raw)
        } ?? []
        if !placed { out += field(9, raw) }
        return out
    }

    /// The bytes an external-data tensor names (location relative to the model's folder, offset, length), checked
    /// when the model was read.
    mutating func externalBytes(_ entries: [(String, String)], name: String) throws -> [UInt8] {
        var location = "", offset = 0, length: Int?
        for (k, v) in entries {
            switch k {
            case "location": location = v
            case "offset": offset = Int(v) ?? -1
            case "length": length = Int(v)
            default: break
            }
        }
        let key = location.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
        if external[key] == nil {
            external[key] = try ONNXReaderFiles.map((directory.isEmpty ? "." : directory) + "/" + key, path: source,
                                                    what: "external data file \(location) of tensor \(name)")
        }
        let data = external[key]!
        let n = length ?? (data.count - offset)
        guard offset >= 0, n >= 0, offset + n <= data.count else {
            throw fail("tensor \(name)'s external data (offset \(offset), length \(n)) lies outside \(location) (\(data.count) bytes)")
        }
        return [UInt8](data[data.startIndex + offset ..< data.startIndex + offset + n])
    }

    /// Float values as little-endian raw_data of `type`: float32 as they are, double exactly, float16 and bfloat16
    /// rounded to nearest even.
    func encode(_ values: [Float], as type: ONNXDataType, name: String) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(values.count * (type.byteWidth ?? 4))
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        switch type {
        case .float: for v in values { put(v.bitPattern) }
        case .double: for v in values { put(Double(v).bitPattern) }
        case .float16: for v in values { put(Float16(v).bitPattern) }
        case .bfloat16:
            for v in values {
                let b = v.bitPattern
                if v.isNaN { put(UInt16(truncatingIfNeeded: b >> 16) | 0x40) } else { put(UInt16(truncatingIfNeeded: (b &+ 0x7fff &+ ((b >> 16) & 1)) >> 16)) }
            }
        default: throw fail("tensor \(name) is \(type), not a floating-point tensor")
        }
        return out
    }

    /// A length-delimited field, key and length included.
    func field(_ number: Int, _ body: [UInt8]) -> [UInt8] {
        var w = ONNXProtoWriter(reservingCapacity: body.count + 16)
        w.lengthDelimited(number, body)
        return w.bytes
    }

    /// Copies the fields of the message `r` reads, replacing each field that `replace` returns bytes for (its whole
    /// new encoding, key included; empty drops it). `replace` consumes the field's value. nil: nothing was replaced
    /// (the caller copies the message as it is).
    mutating func rewrite(_ r: inout ONNXProtoReader, capacity: Int,
                          _ replace: (Int, inout ONNXProtoReader, inout ONNXWriteBack) throws -> [UInt8]?) throws -> [UInt8]? {
        var w = ONNXProtoWriter(reservingCapacity: capacity)
        var changed = false
        while true {
            let start = r.position
            guard let (field, _) = try r.nextField() else { break }
            if let new = try replace(field, &r, &self) {
                w.append(new)
                changed = true
            } else {
                w.append(UnsafeRawBufferPointer(rebasing: r.bytes[start..<r.position]))
            }
        }
        return changed ? w.bytes : nil
    }
}

extension ONNXProtoWriter {
    mutating func append(_ encoded: [UInt8]) {
        encoded.withUnsafeBytes { append($0) }
    }
}
