import Foundation

/// The IDX format of MNIST and Fashion-MNIST (LeCun et al.): a big-endian header (two zero bytes, a type
/// code, the number of dimensions, then each dimension as UInt32) followed by the data, raw or gzip'd.
public enum IDX {
    /// The element types of IDX files.
    public enum ElementType: UInt8, Sendable {
        case uint8 = 0x08, int8 = 0x09, int16 = 0x0B, int32 = 0x0C, float32 = 0x0D, float64 = 0x0E

        var size: Int {
            switch self {
            case .uint8, .int8: return 1
            case .int16: return 2
            case .int32, .float32: return 4
            case .float64: return 8
            }
        }
    }

    /// A parsed IDX file: dimensions and elements converted to Float (bytes as they are, 0...255).
    public struct File {
        public var type: ElementType
        public var dims: [Int]
        public var values: [Float]
    }

    /// Reads and parses an IDX file (gzip'd or not). `first`: only the first records (along the first dimension)
    /// are decompressed and converted, and `dims[0]` says how many there are (at most `first`); the bytes after
    /// them are not read, so a file cut short past them is not noticed.
    public static func read(_ path: String, first: Int? = nil) throws -> File {
        var data = try FileIO.read(path)
        if Gzip.isGzip(data) {
            data = try Gzip.decompress(data, path: path, enough: first.map { n in { out in prefixBytes(out, records: n).map { out.count >= $0 } ?? false } })
        }
        return try parse(data, path: path, first: first)
    }

    /// The bytes of the header and the first `records` records of an IDX file that starts with `data`, or nil
    /// while its header is incomplete or invalid (parse then says what is wrong).
    private static func prefixBytes(_ data: Data, records: Int) -> Int? {
        guard data.count >= 4 else { return nil }
        let b = data.startIndex
        guard let type = ElementType(rawValue: data[b + 2]) else { return nil }
        let rank = Int(data[b + 3])
        guard rank >= 1 && rank <= 4, data.count >= 4 + 4 * rank else { return nil }
        var record = type.size
        for i in 1..<rank {
            let o = b + 4 + 4 * i
            let d = Int(UInt32(data[o]) << 24 | UInt32(data[o + 1]) << 16 | UInt32(data[o + 2]) << 8 | UInt32(data[o + 3]))
            let (m, overflow) = record.multipliedReportingOverflow(by: d)
            guard !overflow, m <= 1 << 33 else { return nil }
            record = m
        }
        let (m, overflow) = record.multipliedReportingOverflow(by: records)
        return overflow ? nil : 4 + 4 * rank + m
    }

    /// Parses IDX bytes; `path` names the source in errors. `first`: as in `read`; the bytes may then end after
    /// those records.
    public static func parse(_ data: Data, path: String = "<data>", first: Int? = nil) throws -> File {
        let bytes = [UInt8](data)
        func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: "not a valid IDX file: \(why)") }
        guard bytes.count >= 4 else { throw fail("\(bytes.count) bytes, shorter than the 4-byte magic number") }
        guard bytes[0] == 0, bytes[1] == 0 else {
            throw fail(String(format: "wrong magic number (starts 0x%02x%02x, want 0x0000)", bytes[0], bytes[1]))
        }
        guard let type = ElementType(rawValue: bytes[2]) else { throw fail(String(format: "unknown type code 0x%02x", bytes[2])) }
        let rank = Int(bytes[3])
        guard rank >= 1 && rank <= 4 else { throw fail("\(rank) dimensions (want 1 to 4)") }
        let headerSize = 4 + 4 * rank
        guard bytes.count >= headerSize else { throw fail("the header is truncated (\(bytes.count) bytes)") }
        var dims: [Int] = []
        var total = 1
        var readsPart = false  // `first` leaves records out: the bytes may end after the ones read
        for i in 0..<rank {
            let o = 4 + 4 * i
            var d = Int(UInt32(bytes[o]) << 24 | UInt32(bytes[o + 1]) << 16 | UInt32(bytes[o + 2]) << 8 | UInt32(bytes[o + 3]))
            if i == 0, let first, first < d {
                d = Swift.max(first, 0)
                readsPart = true
            }
            dims.append(d)
            let (m, overflow) = total.multipliedReportingOverflow(by: d)
            guard !overflow, m <= 1 << 33 else { throw fail("dimensions \(dims) hold too many elements") }
            total = m
        }
        let need = total * type.size
        let have = bytes.count - headerSize
        guard have >= need else {
            throw fail("truncated: dimensions \(dims) need \(need) bytes of \(type) data, the file has \(have)")
        }
        guard have == need || readsPart else {
            throw fail("\(have - need) bytes of trailing data after \(dims) \(type) elements")
        }
        var values = [Float](repeating: 0, count: total)
        bytes.withUnsafeBufferPointer { b in
            let p = b.baseAddress! + headerSize
            switch type {
            case .uint8: for i in 0..<total { values[i] = Float(p[i]) }
            case .int8: for i in 0..<total { values[i] = Float(Int8(bitPattern: p[i])) }
            case .int16: for i in 0..<total { values[i] = Float(Int16(bitPattern: UInt16(p[2 * i]) << 8 | UInt16(p[2 * i + 1]))) }
            case .int32: for i in 0..<total { values[i] = Float(Int32(bitPattern: be32(p + 4 * i))) }
            case .float32: for i in 0..<total { values[i] = Float(bitPattern: be32(p + 4 * i)) }
            case .float64:
                for i in 0..<total {
                    let hi = UInt64(be32(p + 8 * i)), lo = UInt64(be32(p + 8 * i + 4))
                    values[i] = Float(Double(bitPattern: hi << 32 | lo))
                }
            }
        }
        return File(type: type, dims: dims, values: values)
    }

    private static func be32(_ p: UnsafePointer<UInt8>) -> UInt32 {
        UInt32(p[0]) << 24 | UInt32(p[1]) << 16 | UInt32(p[2]) << 8 | UInt32(p[3])
    }

    /// IDX bytes for a tensor: float32 (type 0x0D) keeps every bit of an adversarial perturbation;
    /// uint8 (0x08) rounds x·255 (for [0,1] images).
    public static func encode(_ t: Tensor, as type: ElementType = .float32) -> Data {
        precondition(type == .float32 || type == .uint8, "IDX.encode writes float32 or uint8")
        var out = Data([0, 0, type.rawValue, UInt8(t.shape.rank)])
        for d in t.shape.dims { out.append(contentsOf: withUnsafeBytes(of: UInt32(d).bigEndian, Array.init)) }
        if type == .uint8 {
            out.append(contentsOf: t.bytes)
        } else {
            var be = [UInt32](repeating: 0, count: t.count)
            t.withUnsafeBufferPointer { p in for i in 0..<p.count { be[i] = p[i].bitPattern.bigEndian } }
            be.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        return out
    }

    /// Labels as a uint8 IDX vector.
    public static func encodeLabels(_ labels: [Int32]) -> Data {
        var out = Data([0, 0, 0x08, 1])
        out.append(contentsOf: withUnsafeBytes(of: UInt32(labels.count).bigEndian, Array.init))
        out.append(contentsOf: labels.map { UInt8(clamping: $0) })
        return out
    }

    /// Writes a tensor as IDX, atomically.
    public static func write(_ t: Tensor, to path: String, as type: ElementType = .float32) throws {
        try FileIO.writeAtomically(encode(t, as: type), to: path)
    }

    public static func writeLabels(_ labels: [Int32], to path: String) throws {
        try FileIO.writeAtomically(encodeLabels(labels), to: path)
    }

    /// Images from an IDX file as (N, 1, H, W) in [0, 1]: uint8 data is divided by 255, float data is taken
    /// as it is and must already lie in [0, 1]. Accepts (N, H, W) and (N, C, H, W) files.
    /// `first`: only the first images (see `read`).
    public static func readImages(_ path: String, first: Int? = nil) throws -> Tensor {
        let f = try read(path, first: first)
        let shape: Shape
        switch f.dims.count {
        case 3: shape = [f.dims[0], 1, f.dims[1], f.dims[2]]
        case 4: shape = Shape(f.dims)
        default: throw AdvKitError.invalidFile(path: path, reason: "images need 3 or 4 dimensions (N,H,W or N,C,H,W), the file has \(f.dims)")
        }
        var values = f.values
        if f.type == .uint8 {
            for i in 0..<values.count { values[i] /= 255 }
        } else if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw AdvKitError.invalidFile(path: path, reason: "pixel \(bad) is \(values[bad]) (NaN or infinite)")
        }
        return Tensor(values, shape: shape)
    }

    /// Labels from a 1-dimensional IDX file.
    /// `first`: only the first labels (see `read`).
    public static func readLabels(_ path: String, first: Int? = nil) throws -> [Int32] {
        let f = try read(path, first: first)
        guard f.dims.count == 1 else {
            throw AdvKitError.invalidFile(path: path, reason: "labels need 1 dimension, the file has \(f.dims)")
        }
        return try f.values.enumerated().map { i, v in
            guard v >= 0, v < 65_536, v == v.rounded() else {
                throw AdvKitError.invalidFile(path: path, reason: "label \(i) is \(v), not a class index")
            }
            return Int32(v)
        }
    }
}
