import Foundation

/// Reading ONNX files: onnx.proto's messages decoded from the protobuf wire format (ONNXProtoWire.swift) into
/// `ONNXModel`. Data only: nothing in the file is executed, every length and offset is checked before a byte is
/// read, and nothing is allocated that the bytes in hand do not pay for (docs/ARCHITECTURE.md, "Reading ONNX").
///
/// Field numbers are onnx.proto's (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto,
/// ValueInfoProto, TypeProto, TensorShapeProto). Fields AdvKit does not use (doc strings, metadata, value_info,
/// training info, functions) are skipped by length without being parsed. A scalar field given twice keeps its last
/// value (protobuf's rule); a second graph in a model is refused rather than merged.
extension ONNXModel {
    /// Reads a .onnx file, memory-mapped (a 100 MB model is not copied before its tensors are built). External
    /// data (TensorProto.data_location == EXTERNAL, with key/values "location", "offset", "length") is read,
    /// mapped too, from files relative to the model's folder.
    public static func read(_ path: String) throws -> ONNXModel {
        let data = try ONNXReaderFiles.map(path, path: path, what: "model")
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try parse(data, path: path, directory: directory)
    }

    /// Parses the bytes of a .onnx file. `path` names the file in errors; `directory` resolves external data
    /// (nil: a tensor with external data is an error).
    public static func parse(_ data: Data, path: String = "<data>", directory: String? = nil) throws -> ONNXModel {
        guard !data.isEmpty else { throw AdvKitError.invalidFile(path: path, reason: "not a valid ONNX file: the file is empty (0 bytes)") }
        let context = ONNXReaderContext(path: path, directory: directory)
        do {
            return try data.withUnsafeBytes { raw in
                var r = ONNXProtoReader(bytes: raw, range: 0..<raw.count, message: "ModelProto", path: path)
                return try context.model(&r)
            }
        } catch let AdvKitError.invalidFile(p, reason) where data.starts(with: [0x50, 0x4b, 0x03, 0x04]) {
            // "PK\3\4": a zip archive (a PyTorch .pt / .pth checkpoint, a Keras .keras file).
            throw AdvKitError.invalidFile(path: p, reason: reason + " (the file is a zip archive, e.g. a PyTorch checkpoint; export the model to ONNX first)")
        }
    }
}

/// Memory-mapped files with clear errors.
enum ONNXReaderFiles {
    /// The file mapped read-only. `what` says what it is in errors ("model", "external data file x.data of tensor w").
    static func map(_ file: String, path: String, what: String) throws -> Data {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &isDir) else {
            throw what == "model" ? AdvKitError.io(path: path, reason: "no such file")
                : AdvKitError.invalidFile(path: path, reason: "the \(what) is missing (looked for \(file))")
        }
        if isDir.boolValue {
            throw what == "model" ? AdvKitError.io(path: path, reason: "is a directory, not a file")
                : AdvKitError.invalidFile(path: path, reason: "the \(what) is a directory, not a file (\(file))")
        }
        do {
            return try Data(contentsOf: URL(fileURLWithPath: file), options: .alwaysMapped)
        } catch {
            throw AdvKitError.io(path: what == "model" ? path : file, reason: "cannot read the \(what): \(error.localizedDescription)")
        }
    }
}

/// One parse: the file's path and folder, and the external data files mapped so far.
final class ONNXReaderContext {
    let path: String
    let directory: String?
    /// External data files by location, mapped once each, with the bytes tensors have taken from them so far.
    private var external: [String: (data: Data, used: Int)] = [:]

    init(path: String, directory: String?) {
        self.path = path
        self.directory = directory
    }

    func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: "not a valid ONNX file: \(why)") }

    // MARK: ModelProto

    func model(_ r: inout ONNXProtoReader) throws -> ONNXModel {
        var irVersion = 0
        var producerName = "", producerVersion = ""
        var opsets: [String: Int] = [:]
        var graph: ONNXGraph?
        while let (field, _) = try r.nextField() {
            switch field {
            case 1: irVersion = Int(try r.int64())
            case 2: producerName = try r.string()
            case 3: producerVersion = try r.string()
            case 7:
                guard graph == nil else { throw fail("the model holds two graphs (field 7 of ModelProto given twice)") }
                var g = r.submessage(try r.submessageWindow(), "GraphProto")
                graph = try self.graph(&g)
            case 8:
                var o = r.submessage(try r.submessageWindow(), "OperatorSetIdProto")
                var domain = "", version = 0
                while let (f, _) = try o.nextField() {
                    switch f {
                    case 1: domain = try o.string()
                    case 2: version = Int(try o.int64())
                    default: try o.skip()
                    }
                }
                opsets[domain == "ai.onnx" ? "" : domain] = version
            default: try r.skip()
            }
        }
        guard let graph else { throw fail("the model has no graph (field 7 of ModelProto is missing)") }
        return ONNXModel(irVersion: irVersion, producerName: producerName, producerVersion: producerVersion,
                         opsetImports: opsets, graph: graph)
    }

    // MARK: GraphProto

    func graph(_ r: inout ONNXProtoReader) throws -> ONNXGraph {
        var name = ""
        var nodes: [ONNXNode] = []
        var initializers: [String: ONNXTensor] = [:]
        var inputs: [ONNXValueInfo] = [], outputs: [ONNXValueInfo] = []
        while let (field, _) = try r.nextField() {
            switch field {
            case 1:
                var n = r.submessage(try r.submessageWindow(), "NodeProto")
                nodes.append(try node(&n, index: nodes.count))
            case 2: name = try r.string()
            case 5:
                var t = r.submessage(try r.submessageWindow(), "TensorProto")
                let tensor = try self.tensor(&t, role: "initializer \(initializers.count)")
                guard !tensor.name.isEmpty else { throw fail("initializer \(initializers.count) has no name") }
                guard initializers[tensor.name] == nil else { throw fail("two initializers are named \(tensor.name)") }
                initializers[tensor.name] = tensor
            case 15:
                throw fail("the graph has a sparse_initializer (field 15 of GraphProto); AdvKit reads dense tensors only: "
                           + "store the weights densely (onnx's sparse-to-dense conversion, or re-export)")
            case 11:
                var v = r.submessage(try r.submessageWindow(), "ValueInfoProto")
                inputs.append(try valueInfo(&v))
            case 12:
                var v = r.submessage(try r.submessageWindow(), "ValueInfoProto")
                outputs.append(try valueInfo(&v))
            default: try r.skip()  // doc_string, value_info, quantization_annotation, metadata_props
            }
        }
        return ONNXGraph(name: name, nodes: nodes, initializers: initializers, inputs: inputs, outputs: outputs)
    }

    // MARK: NodeProto

    func node(_ r: inout ONNXProtoReader, index: Int) throws -> ONNXNode {
        var inputs: [String] = [], outputs: [String] = []
        var name = "", opType = "", domain = ""
        var attributeWindows: [Range<Int>] = []
        while let (field, _) = try r.nextField() {
            switch field {
            case 1: inputs.append(try r.string())
            case 2: outputs.append(try r.string())
            case 3: name = try r.string()
            case 4: opType = try r.string()
            case 5: attributeWindows.append(try r.submessageWindow())
            case 7: domain = try r.string()
            default: try r.skip()
            }
        }
        let label = name.isEmpty ? "node \(index) (\(opType.isEmpty ? "no op_type" : opType))" : "node \(name)"
        guard !opType.isEmpty else { throw fail("\(label) has no op_type") }
        var attributes: [String: ONNXAttribute] = [:]
        for w in attributeWindows {
            var a = r.submessage(w, "AttributeProto")
            let (attributeName, value) = try attribute(&a, node: label)
            guard !attributeName.isEmpty else { throw fail("\(label) has an attribute with no name") }
            guard attributes[attributeName] == nil else { throw fail("\(label) has two attributes named \(attributeName)") }
            attributes[attributeName] = value
        }
        return ONNXNode(name: name, opType: opType, domain: domain == "ai.onnx" ? "" : domain, inputs: inputs,
                        outputs: outputs, attributes: attributes)
    }

    // MARK: AttributeProto

    func attribute(_ r: inout ONNXProtoReader, node: String) throws -> (String, ONNXAttribute) {
        var name = ""
        var type: Int?
        var f: Float?, i: Int64?, s: String?, t: Range<Int>?
        var floats: [UInt32] = [], ints: [UInt64] = [], strings: [String] = []
        var others: [Int] = []  // type codes of values AdvKit keeps as .unsupported, by the field that holds them
        while let (field, _) = try r.nextField() {
            switch field {
            case 1: name = try r.string()
            case 20: type = Int(try r.int32())
            case 2: f = try r.float()
            case 3: i = try r.int64()
            case 4: s = try r.string()
            case 5: t = try r.submessageWindow()
            case 7: try r.appendFixed32s(to: &floats)
            case 8: try r.appendVarints(to: &ints)
            case 9: strings.append(try r.string())
            // g, tensors, graphs, tp, type_protos, sparse_tensor, sparse_tensors: skipped, never parsed.
            case 6: others.append(5); try r.skip()
            case 10: others.append(9); try r.skip()
            case 11: others.append(10); try r.skip()
            case 14: others.append(13); try r.skip()
            case 15: others.append(14); try r.skip()
            case 22: others.append(11); try r.skip()
            case 23: others.append(12); try r.skip()
            default: try r.skip()  // doc_string, ref_attr_name
            }
        }
        // IR version 1 files have no type field: infer it from the value that is set.
        let kind = type ?? {
            if f != nil { return 1 }
            if i != nil { return 2 }
            if s != nil { return 3 }
            if t != nil { return 4 }
            if !floats.isEmpty { return 6 }
            if !ints.isEmpty { return 7 }
            if !strings.isEmpty { return 8 }
            return others.first ?? 0
        }()
        let label = "attribute \(name.isEmpty ? "(unnamed)" : name) of \(node)"
        switch kind {
        case 1: return (name, .float(f ?? 0))
        case 2: return (name, .int(Int(i ?? 0)))
        case 3: return (name, .string(s ?? ""))
        case 4:
            guard let t else { throw fail("\(label) has type TENSOR but no tensor") }
            var sub = r.submessage(t, "TensorProto")
            return (name, .tensor(try tensor(&sub, role: label)))
        case 6: return (name, .floats(floats.map(Float.init(bitPattern:))))
        case 7: return (name, .ints(ints.map { Int(Int64(bitPattern: $0)) }))
        case 8: return (name, .strings(strings))
        default: return (name, .unsupported(type: kind))
        }
    }

    // MARK: ValueInfoProto, TypeProto

    func valueInfo(_ r: inout ONNXProtoReader) throws -> ONNXValueInfo {
        var info = ONNXValueInfo(name: "", elementType: nil, dims: nil)
        while let (field, _) = try r.nextField() {
            switch field {
            case 1: info.name = try r.string()
            case 2:
                // TypeProto: only tensor_type (1) is read; sequence, map, optional and sparse types leave
                // elementType and dims nil.
                var type = r.submessage(try r.submessageWindow(), "TypeProto")
                while let (f, _) = try type.nextField() {
                    guard f == 1 else { try type.skip(); continue }
                    var tensorType = type.submessage(try type.submessageWindow(), "TypeProto.Tensor")
                    while let (g, _) = try tensorType.nextField() {
                        switch g {
                        case 1: info.elementType = ONNXDataType(rawValue: Int(try tensorType.int32()))
                        case 2:
                            var shape = tensorType.submessage(try tensorType.submessageWindow(), "TensorShapeProto")
                            var dims: [ONNXValueInfo.Dim] = []
                            while let (h, _) = try shape.nextField() {
                                guard h == 1 else { try shape.skip(); continue }
                                var dim = shape.submessage(try shape.submessageWindow(), "TensorShapeProto.Dimension")
                                var d = ONNXValueInfo.Dim.unknown
                                while let (k, _) = try dim.nextField() {
                                    switch k {
                                    case 1:
                                        let v = try dim.int64()
                                        d = v >= 0 ? .fixed(Int(v)) : .unknown
                                    case 2: d = .symbolic(try dim.string())
                                    default: try dim.skip()
                                    }
                                }
                                dims.append(d)
                            }
                            info.dims = dims
                        default: try tensorType.skip()
                        }
                    }
                }
            default: try r.skip()
            }
        }
        return info
    }

    // MARK: TensorProto

    /// TensorProto's fields as found, before conversion.
    private struct TensorFields {
        var name = ""
        var dims: [UInt64] = []
        var dataType = 0
        var raw: Range<Int>?
        var floatData: [UInt32] = []
        var int32Data: [UInt64] = []
        var int64Data: [UInt64] = []
        var doubleData: [UInt64] = []
        var uint64Data: [UInt64] = []
        var hasStringData = false
        var hasSegment = false
        var external: [(key: String, value: String)] = []
        var location = 0
    }

    /// `role` says where the tensor sits, for errors before its name is known ("initializer 3").
    func tensor(_ r: inout ONNXProtoReader, role: String) throws -> ONNXTensor {
        var t = TensorFields()
        while let (field, _) = try r.nextField() {
            switch field {
            case 1: try r.appendVarints(to: &t.dims)
            case 2: t.dataType = Int(try r.int32())
            case 3: t.hasSegment = true; try r.skip()
            case 4: try r.appendFixed32s(to: &t.floatData)
            case 5: try r.appendVarints(to: &t.int32Data)
            case 6: t.hasStringData = true; try r.skip()
            case 7: try r.appendVarints(to: &t.int64Data)
            case 8: t.name = try r.string()
            case 9: t.raw = try r.submessageWindow()
            case 10: try r.appendFixed64s(to: &t.doubleData)
            case 11: try r.appendVarints(to: &t.uint64Data)
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
                t.external.append((key, value))
            case 14: t.location = Int(try r.int32())
            default: try r.skip()  // doc_string, metadata_props
            }
        }
        let label = t.name.isEmpty ? role : "tensor \(t.name)"

        guard let type = ONNXDataType(rawValue: t.dataType) else {
            throw fail("\(label) has data type \(t.dataType) (\(Self.typeName(t.dataType))), which AdvKit does not read")
        }
        guard let width = type.byteWidth else {
            throw fail("\(label) holds strings, which AdvKit does not read")
        }
        guard !t.hasSegment else { throw fail("\(label) is one segment of a split tensor, which AdvKit does not read") }

        // dims: each >= 0, and a product that fits (also in bytes).
        var dims: [Int] = []
        dims.reserveCapacity(t.dims.count)
        var count = 1
        for d in t.dims {
            let v = Int64(bitPattern: d)
            guard v >= 0 else { throw fail("\(label) has a negative dimension \(v) (dims \(t.dims.map { Int64(bitPattern: $0) }))") }
            let (m, o) = count.multipliedReportingOverflow(by: Int(v))
            guard !o, !m.multipliedReportingOverflow(by: 8).overflow else {
                throw fail("\(label) has dims \(t.dims.map { Int64(bitPattern: $0) }), whose product overflows")
            }
            count = m
            dims.append(Int(v))
        }
        let byteCount = count * width
        let described = "\(label) (\(type), dims \(dims), \(count) elements)"

        if t.location == 1 {
            guard t.raw == nil else { throw fail("\(described) has both raw_data and external data") }
            return try externalTensor(t.name, type: type, dims: dims, count: count, byteCount: byteCount,
                                      entries: t.external, described: described)
        }
        guard t.location == 0 else { throw fail("\(label) has data_location \(t.location) (0 default, 1 external)") }

        // Which typed field the type stores its elements in (onnx.proto's comments on each field).
        let present: [(String, Int)] = [("float_data", t.floatData.count), ("int32_data", t.int32Data.count),
                                        ("int64_data", t.int64Data.count), ("double_data", t.doubleData.count),
                                        ("uint64_data", t.uint64Data.count)].filter { $0.1 > 0 }
        if let raw = t.raw {
            if let other = present.first { throw fail("\(described) has both raw_data and \(other.0)") }
            guard raw.count == byteCount else {
                throw fail("\(described) needs \(byteCount) bytes of raw_data, the file has \(raw.count)")
            }
            return try finish(ONNXTensor(name: t.name, dataType: type, dims: dims,
                                         values: Self.convertRaw(UnsafeRawBufferPointer(rebasing: r.bytes[raw]), type: type,
                                                                 count: count, dims: dims)), described: described)
        }
        let fieldName: String
        switch type {
        case .float: fieldName = "float_data"
        case .double: fieldName = "double_data"
        case .int64: fieldName = "int64_data"
        case .uint32, .uint64: fieldName = "uint64_data"
        default: fieldName = "int32_data"
        }
        if let other = present.first(where: { $0.0 != fieldName }) {
            throw fail("\(described) has \(other.0), which onnx.proto does not allow for \(type) (want \(fieldName) or raw_data)")
        }
        let have = present.first?.1 ?? 0
        guard have == count else {
            if have == 0 { throw fail("\(described) has no data") }
            throw fail("\(described) has \(have) values in \(fieldName)")
        }
        let values: ONNXTensor.Values
        switch type {
        case .float:
            values = .float(Self.floatTensor(dims: dims, count: count) { p in
                t.floatData.withUnsafeBytes { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress!, byteCount: 4 * count) }
            })
        case .double:
            values = .float(Self.floatTensor(dims: dims, count: count) { p in
                for k in 0..<count { p[k] = Float(Double(bitPattern: t.doubleData[k])) }
            })
        case .float16:
            values = .float(Self.floatTensor(dims: dims, count: count) { p in
                for k in 0..<count { p[k] = Float(Float16(bitPattern: UInt16(truncatingIfNeeded: t.int32Data[k]))) }
            })
        case .bfloat16:
            values = .float(Self.floatTensor(dims: dims, count: count) { p in
                for k in 0..<count { p[k] = Float(bitPattern: UInt32(UInt16(truncatingIfNeeded: t.int32Data[k])) << 16) }
            })
        case .int64: values = .int(t.int64Data.map { Int64(bitPattern: $0) })
        case .uint32: values = .int(t.uint64Data.map { Int64(UInt32(truncatingIfNeeded: $0)) })
        case .uint64: values = .int(t.uint64Data.map { Int64(bitPattern: $0) })
        default:
            values = .int(t.int32Data.map { Self.narrow(UInt64(UInt32(truncatingIfNeeded: $0)), type) })
        }
        return try finish(ONNXTensor(name: t.name, dataType: type, dims: dims, values: values), described: described)
    }

    /// The last check: a uint64 value must fit Int64 (read by bit pattern, so it shows as negative).
    private func finish(_ tensor: ONNXTensor, described: String) throws -> ONNXTensor {
        if tensor.dataType == .uint64, case let .int(v) = tensor.values, let big = v.first(where: { $0 < 0 }) {
            throw fail("\(described) holds the uint64 value \(UInt64(bitPattern: big)), which does not fit Int64")
        }
        return tensor
    }

    /// Reads a tensor's bytes from the external file its entries name: location (relative, inside the model's
    /// folder), offset and length (decimal; by default 0 and the rest of the file).
    private func externalTensor(_ name: String, type: ONNXDataType, dims: [Int], count: Int, byteCount: Int,
                                entries: [(key: String, value: String)], described: String) throws -> ONNXTensor {
        var location: String?, offsetText: String?, lengthText: String?
        for (k, v) in entries {
            switch k {
            case "location": location = v
            case "offset": offsetText = v
            case "length": lengthText = v
            default: break  // checksum, basepath (ignored)
            }
        }
        guard let location, !location.isEmpty else { throw fail("\(described) has external data with no location") }
        guard let directory else {
            throw fail("\(described) keeps its data in the external file \(location), but the model was given as bytes "
                       + "with no folder to look in (read the .onnx file by its path)")
        }
        guard !location.hasPrefix("/") else {
            throw fail("\(described) names the external data file \(location) by an absolute path; "
                       + "ONNX external data must be relative to the model's folder")
        }
        guard !location.split(separator: "/", omittingEmptySubsequences: false).contains("..") else {
            throw fail("\(described) names the external data file \(location), which leaves the model's folder (\"..\")")
        }
        guard !location.contains("\0") else { throw fail("\(described) names an external data file with a NUL byte") }
        func number(_ text: String?, _ key: String) throws -> Int? {
            guard let text else { return nil }
            guard let v = Int(text), v >= 0 else {
                throw fail("\(described) has external data \(key) \"\(text)\", not a non-negative integer")
            }
            return v
        }
        let offset = try number(offsetText, "offset") ?? 0
        let wantLength = try number(lengthText, "length")
        // One key per file however the location spells it ("a.data", "./a.data", "x//../a.data" is refused above),
        // so the byte budget below cannot be multiplied by aliases.
        let key = location.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
        let file = (directory.isEmpty ? "." : directory) + "/" + key
        if external[key] == nil {
            external[key] = (try ONNXReaderFiles.map(file, path: path, what: "external data file \(location) of \(described)"), 0)
        }
        let (data, used) = external[key]!
        guard offset <= data.count else {
            throw fail("\(described) has external data offset \(offset), past the end of \(location) (\(data.count) bytes)")
        }
        let length = wantLength ?? (data.count - offset)
        guard length <= data.count - offset else {
            throw fail("\(described) has external data offset \(offset) and length \(length), past the end of "
                       + "\(location) (\(data.count) bytes)")
        }
        guard length == byteCount else {
            throw fail("\(described) needs \(byteCount) bytes, its external data in \(location) has length \(length)")
        }
        // Every byte pays for at most one tensor: a file naming the same bytes many times cannot make us allocate
        // far more than the files on disk hold.
        guard used + length <= data.count else {
            throw fail("the tensors take more bytes from \(location) than its \(data.count) (the same bytes named twice?)")
        }
        external[key]!.used = used + length
        let values = data.withUnsafeBytes { raw in
            Self.convertRaw(UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + length)]), type: type, count: count, dims: dims)
        }
        return try finish(ONNXTensor(name: name, dataType: type, dims: dims, values: values), described: described)
    }

    // MARK: element conversion

    /// A Float tensor of shape `dims` (flat when the rank exceeds what `Shape` holds), filled by `fill`.
    private static func floatTensor(dims: [Int], count: Int, _ fill: (UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        var t = Tensor(uninitialized: dims.count <= Shape.maxRank ? Shape(dims) : Shape(count))
        t.withUnsafeMutableBufferPointer { p in if count > 0 { fill(p.baseAddress!) } }
        return t
    }

    /// An integer element widened to Int64 as its type reads it (bool: 0 or 1).
    private static func narrow(_ v: UInt64, _ type: ONNXDataType) -> Int64 {
        switch type {
        case .uint8: return Int64(UInt8(truncatingIfNeeded: v))
        case .int8: return Int64(Int8(truncatingIfNeeded: v))
        case .uint16: return Int64(UInt16(truncatingIfNeeded: v))
        case .int16: return Int64(Int16(truncatingIfNeeded: v))
        case .int32: return Int64(Int32(truncatingIfNeeded: v))
        case .uint32: return Int64(UInt32(truncatingIfNeeded: v))
        case .bool: return v & 0xff == 0 ? 0 : 1
        default: return Int64(bitPattern: v)
        }
    }

    /// Little-endian fixed-width elements (raw_data or external data); `src.count == count * byteWidth` (checked
    /// by the caller).
    static func convertRaw(_ src: UnsafeRawBufferPointer, type: ONNXDataType, count: Int, dims: [Int]) -> ONNXTensor.Values {
        precondition(src.count == count * (type.byteWidth ?? 0), "raw data of \(src.count) bytes for \(count) \(type)")
        func u16(_ k: Int) -> UInt16 { UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * k, as: UInt16.self)) }
        func u32(_ k: Int) -> UInt32 { UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self)) }
        func u64(_ k: Int) -> UInt64 { UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * k, as: UInt64.self)) }
        switch type {
        case .float:
            return .float(floatTensor(dims: dims, count: count) { p in
                #if _endian(little)
                UnsafeMutableRawPointer(p).copyMemory(from: src.baseAddress!, byteCount: 4 * count)
                #else
                for k in 0..<count { p[k] = Float(bitPattern: u32(k)) }
                #endif
            })
        case .double: return .float(floatTensor(dims: dims, count: count) { p in for k in 0..<count { p[k] = Float(Double(bitPattern: u64(k))) } })
        case .float16: return .float(floatTensor(dims: dims, count: count) { p in for k in 0..<count { p[k] = Float(Float16(bitPattern: u16(k))) } })
        case .bfloat16: return .float(floatTensor(dims: dims, count: count) { p in for k in 0..<count { p[k] = Float(bitPattern: UInt32(u16(k)) << 16) } })
        case .uint8, .int8, .bool: return .int((0..<count).map { narrow(UInt64(src[$0]), type) })
        case .uint16, .int16: return .int((0..<count).map { narrow(UInt64(u16($0)), type) })
        case .int32, .uint32: return .int((0..<count).map { narrow(UInt64(u32($0)), type) })
        case .int64, .uint64: return .int((0..<count).map { Int64(bitPattern: u64($0)) })
        case .string: preconditionFailure("string tensors have no raw form")
        }
    }

    /// onnx.proto's name of a data type code, for errors.
    static func typeName(_ code: Int) -> String {
        if let t = ONNXDataType(rawValue: code) { return t.description }
        let others = [0: "undefined", 14: "complex64", 15: "complex128", 17: "float8e4m3fn", 18: "float8e4m3fnuz",
                      19: "float8e5m2", 20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1", 24: "float8e8m0",
                      25: "uint2", 26: "int2"]
        return others[code] ?? "unknown"
    }
}
