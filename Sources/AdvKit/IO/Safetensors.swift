import Foundation

/// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header mapping each
/// tensor's name to its dtype, shape and byte range, then the raw little-endian data. Data only: nothing in
/// the file is executed, and every offset is checked before a byte is read.
public enum Safetensors {
    /// Header larger than this is refused (the format's own reference implementation uses 100 MB).
    public static let maxHeaderBytes = 100_000_000

    /// Reads every tensor of a file, converted to Float32. F32, F16, BF16 and F64 are read; integer tensors
    /// (e.g. BatchNorm's num_batches_tracked) are skipped and listed in `skipped`.
    public static func read(_ path: String) throws -> (tensors: [String: Tensor], metadata: [String: String], skipped: [String]) {
        try parse(try FileIO.read(path), path: path)
    }

    public static func parse(_ data: Data, path: String = "<data>") throws -> (tensors: [String: Tensor], metadata: [String: String], skipped: [String]) {
        func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: "not a valid safetensors file: \(why)") }
        let bytes = [UInt8](data)
        guard bytes.count >= 8 else { throw fail("\(bytes.count) bytes, shorter than the 8-byte header length") }
        var headerLen: UInt64 = 0
        for i in 0..<8 { headerLen |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard headerLen <= UInt64(maxHeaderBytes) else { throw fail("header length \(headerLen) exceeds \(maxHeaderBytes) bytes") }
        guard headerLen <= UInt64(bytes.count - 8) else {
            throw fail("header length \(headerLen) runs past the end of the file (\(bytes.count) bytes)")
        }
        let dataStart = 8 + Int(headerLen)
        let dataSize = bytes.count - dataStart
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(bytes[8..<dataStart]))
        } catch {
            throw fail("the header is not valid JSON")
        }
        guard let header = json as? [String: Any] else { throw fail("the header is not a JSON object") }
        var tensors: [String: Tensor] = [:]
        var metadata: [String: String] = [:]
        var skipped: [String] = []
        var ranges: [(Int, Int, String)] = []
        for (name, entry) in header {
            if name == "__metadata__" {
                guard let m = entry as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw fail("__metadata__ value for \(k) is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let e = entry as? [String: Any] else { throw fail("entry \(name) is not an object") }
            guard let dtype = e["dtype"] as? String else { throw fail("tensor \(name) has no dtype") }
            guard let shapeAny = e["shape"] as? [Any], let offAny = e["data_offsets"] as? [Any], offAny.count == 2 else {
                throw fail("tensor \(name) needs a shape and two data_offsets")
            }
            let shape = try shapeAny.map { v -> Int in
                guard let n = v as? NSNumber, let i = Int(exactly: n.doubleValue), i >= 0, n.doubleValue == n.doubleValue.rounded() else {
                    throw fail("tensor \(name) has a shape entry that is not a non-negative integer")
                }
                return i
            }
            let offs = try offAny.map { v -> Int in
                guard let n = v as? NSNumber, let i = Int(exactly: n.doubleValue), i >= 0 else {
                    throw fail("tensor \(name) has a data offset that is not a non-negative integer")
                }
                return i
            }
            let (begin, end) = (offs[0], offs[1])
            guard begin <= end, end <= dataSize else {
                throw fail("tensor \(name) has data_offsets [\(begin), \(end)] outside the \(dataSize) bytes of data")
            }
            var count = 1
            for d in shape {
                let (m, o) = count.multipliedReportingOverflow(by: d)
                guard !o, m <= 1 << 40 else { throw fail("tensor \(name) has shape \(shape), too many elements") }
                count = m
            }
            let elementSize: Int
            switch dtype {
            case "F32", "I32", "U32": elementSize = 4
            case "F16", "BF16", "I16", "U16": elementSize = 2
            case "F64", "I64", "U64": elementSize = 8
            case "I8", "U8", "BOOL": elementSize = 1
            default: throw fail("tensor \(name) has unknown dtype \(dtype)")
            }
            guard count * elementSize == end - begin else {
                throw fail("tensor \(name): shape \(shape) of \(dtype) needs \(count * elementSize) bytes, data_offsets give \(end - begin)")
            }
            ranges.append((begin, end, name))
            guard ["F32", "F16", "BF16", "F64"].contains(dtype) else {
                skipped.append(name)
                continue
            }
            guard shape.count <= Shape.maxRank else { throw fail("tensor \(name) has \(shape.count) dimensions (at most \(Shape.maxRank))") }
            let values: [Float] = bytes.withUnsafeBufferPointer { b in
                let p = b.baseAddress! + dataStart + begin
                return (0..<count).map { i in
                    switch dtype {
                    case "F32": return Float(bitPattern: le32(p + 4 * i))
                    case "F64": return Float(Double(bitPattern: UInt64(le32(p + 8 * i)) | UInt64(le32(p + 8 * i + 4)) << 32))
                    case "BF16": return Float(bitPattern: UInt32(le16(p + 2 * i)) << 16)
                    default: return Float(Float16(bitPattern: le16(p + 2 * i)))
                    }
                }
            }
            tensors[name] = Tensor(values, shape: Shape(shape))
        }
        ranges.sort { $0.0 < $1.0 }
        for k in ranges.indices.dropFirst() where ranges[k].0 < ranges[k - 1].1 {
            throw fail("tensors \(ranges[k - 1].2) and \(ranges[k].2) overlap")
        }
        return (tensors, metadata, skipped.sorted())
    }

    private static func le32(_ p: UnsafePointer<UInt8>) -> UInt32 {
        UInt32(p[0]) | UInt32(p[1]) << 8 | UInt32(p[2]) << 16 | UInt32(p[3]) << 24
    }

    private static func le16(_ p: UnsafePointer<UInt8>) -> UInt16 { UInt16(p[0]) | UInt16(p[1]) << 8 }

    /// Safetensors bytes for named Float32 tensors, in name order, with an optional `__metadata__`.
    public static func encode(_ tensors: [(String, Tensor)], metadata: [String: String] = [:]) -> Data {
        let sorted = tensors.sorted { $0.0 < $1.0 }
        var header: [String: Any] = [:]
        var offset = 0
        for (name, t) in sorted {
            header[name] = ["dtype": "F32", "shape": t.shape.dims, "data_offsets": [offset, offset + 4 * t.count]]
            offset += 4 * t.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = (try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])) ?? Data("{}".utf8)
        while (8 + json.count) % 8 != 0 { json.append(0x20) }  // pad with spaces so the data is 8-byte aligned
        var out = Data()
        out.append(contentsOf: withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init))
        out.append(json)
        for (_, t) in sorted {
            t.withUnsafeBufferPointer { p in
                var le = [UInt32](repeating: 0, count: p.count)
                for i in 0..<p.count { le[i] = p[i].bitPattern.littleEndian }
                le.withUnsafeBytes { out.append(contentsOf: $0) }
            }
        }
        return out
    }

    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String] = [:], to path: String) throws {
        try FileIO.writeAtomically(encode(tensors, metadata: metadata), to: path)
    }
}

/// Saving and loading by state-dict name, for any layer and so for every `TrainableClassifier` (a `Model`, a `Network`
/// of layers, an imported `ONNXClassifier`): the file holds `stateDict`, one tensor per name.
extension Layer {
    /// Saves every parameter and buffer under its PyTorch name, atomically.
    public func save(to path: String, metadata: [String: String] = [:]) throws {
        try Safetensors.write(stateDict.map { ($0.name, $0.tensor.value) }, metadata: metadata, to: path)
    }

    /// Loads parameters and buffers by PyTorch name. Every tensor the layer has must be in the file with the same
    /// shape, and the file may hold nothing else (integer counters such as num_batches_tracked excepted).
    public func load(from path: String) throws {
        let file = try Safetensors.read(path)
        try load(file.tensors, path: path)
    }

    public func load(_ tensors: [String: Tensor], path: String = "<tensors>") throws {
        let state = stateDict
        let names = Set(state.map(\.name))
        let missing = state.map(\.name).filter { tensors[$0] == nil }
        let extra = tensors.keys.filter { !names.contains($0) }.sorted()
        if !missing.isEmpty || !extra.isEmpty {
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing \(missing.joined(separator: ", "))") }
            if !extra.isEmpty { parts.append("unexpected \(extra.joined(separator: ", "))") }
            throw AdvKitError.invalidFile(path: path, reason: "the tensors do not match the model: " + parts.joined(separator: "; ") + " (wrong --arch?)")
        }
        for (name, p) in state {
            let t = tensors[name]!
            guard t.shape == p.value.shape else {
                throw AdvKitError.invalidFile(path: path, reason: "\(name) has shape \(t.shape), the model needs \(p.value.shape) (wrong --arch or dataset?)")
            }
            guard t.isFinite else { throw AdvKitError.invalidFile(path: path, reason: "\(name) holds NaN or infinite values") }
        }
        for (name, p) in state { p.value = tensors[name]! }
    }
}
