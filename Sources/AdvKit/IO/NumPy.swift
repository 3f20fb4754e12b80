import Foundation

/// NumPy's `.npy` format (NEP 1, versions 1.0 to 3.0): the magic `\x93NUMPY`, a major and minor version byte, the
/// header's length (2 bytes little-endian in version 1, 4 bytes in versions 2 and 3), the header itself, an ASCII
/// Python dict literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (64, 28, 28), }`, then the
/// elements, raw.
///
/// The header is parsed as the literal it is (strings, integers, booleans, tuples), never evaluated; a dtype of
/// `object` (`|O`), whose data is a pickle, is refused: unpickling runs code chosen by whoever wrote the file.
public enum NumPy {
    /// The numeric element types AdvKit reads (booleans, integers of 1 to 8 bytes, floats of 2, 4 and 8 bytes),
    /// in either byte order.
    public enum ElementType: String, Sendable, CaseIterable {
        case bool, int8, uint8, int16, uint16, int32, uint32, int64, uint64, float16, float32, float64

        public var size: Int {
            switch self {
            case .bool, .int8, .uint8: return 1
            case .int16, .uint16, .float16: return 2
            case .int32, .uint32, .float32: return 4
            case .int64, .uint64, .float64: return 8
            }
        }

        public var isFloatingPoint: Bool { self == .float16 || self == .float32 || self == .float64 }

        /// The type code in a descr ("f4", "u1", "b1").
        var code: String {
            switch self {
            case .bool: return "b1"
            case .int8: return "i1"
            case .uint8: return "u1"
            case .int16: return "i2"
            case .uint16: return "u2"
            case .int32: return "i4"
            case .uint32: return "u4"
            case .int64: return "i8"
            case .uint64: return "u8"
            case .float16: return "f2"
            case .float32: return "f4"
            case .float64: return "f8"
            }
        }

        init?(code: String) {
            guard let t = ElementType.allCases.first(where: { $0.code == code }) else { return nil }
            self = t
        }
    }

    /// An array: its element type, shape and elements in C (row-major) order, converted to Float (integers up to
    /// 2^24 exactly: pixels and labels).
    public struct Array: Equatable {
        public var type: ElementType
        public var shape: [Int]
        public var values: [Float]

        public init(type: ElementType, shape: [Int], values: [Float]) {
            precondition(shape.allSatisfy { $0 >= 0 } && shape.reduce(1, *) == values.count,
                         "\(values.count) values do not fill the shape \(shape)")
            self.type = type
            self.shape = shape
            self.values = values
        }

        public var count: Int { values.count }
    }

    /// numpy refuses headers longer than this (its `max_header_size`, against headers made to be slow to parse).
    public static let maxHeaderLength = 10_000
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY

    public static func isNumPy(_ data: Data) -> Bool { data.count >= 6 && data.prefix(6).elementsEqual(magic) }

    /// Reads and parses a `.npy` file.
    public static func read(_ path: String) throws -> Array { try parse(try FileIO.read(path), path: path) }

    /// Parses `.npy` bytes; `path` names the source in errors.
    public static func parse(_ data: Data, path: String = "<npy>") throws -> Array {
        let bytes = [UInt8](data)
        func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: "not a valid .npy file: \(why)") }
        guard bytes.count >= 10 else { throw fail("\(bytes.count) bytes, shorter than the 10-byte preamble") }
        guard bytes[0..<6].elementsEqual(magic) else {
            if bytes[0] == 0x50, bytes[1] == 0x4B { throw fail("the file is a zip archive (an .npz? name it .npz)") }
            throw fail("wrong magic (want \\x93NUMPY)")
        }
        let major = bytes[6]
        let headerLength: Int, start: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            start = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("\(bytes.count) bytes, shorter than the 12-byte preamble of version \(major)") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            start = 12
        default:
            throw fail("format version \(major).\(bytes[7]) (AdvKit reads versions 1, 2 and 3)")
        }
        guard headerLength <= maxHeaderLength else {
            throw fail("the header length \(headerLength) exceeds numpy's limit of \(maxHeaderLength) bytes")
        }
        guard start + headerLength <= bytes.count else {
            throw fail("the header length \(headerLength) runs past the end of the file (\(bytes.count) bytes)")
        }
        let header = try Header.parse(Swift.Array(bytes[start..<(start + headerLength)]), fail: fail)
        let dataStart = start + headerLength
        var count = 1
        for d in header.shape {
            let (m, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, m <= 1 << 33 else { throw fail("the shape \(tuple(header.shape)) holds too many elements") }
            count = m
        }
        let need = count * header.type.size, have = bytes.count - dataStart
        guard have >= need else {
            throw fail("truncated: shape \(tuple(header.shape)) of \(header.type) needs \(need) bytes of data, the file has \(have)")
        }
        guard have == need else {
            throw fail("\(have - need) bytes of trailing data after the \(count) elements of shape \(tuple(header.shape))")
        }
        var values = bytes.withUnsafeBufferPointer { b in
            convert(UnsafeRawPointer(b.baseAddress! + dataStart), count: count, type: header.type, bigEndian: header.bigEndian)
        }
        if header.fortranOrder && header.shape.count > 1 { values = fortranToC(values, shape: header.shape) }
        return Array(type: header.type, shape: header.shape, values: values)
    }

    /// `.npy` bytes (version 1.0, little-endian, C order) of `array`, its values written as `array.type`
    /// (integer types take the values rounded toward zero and clamped to their range).
    public static func encode(_ array: Array) -> Data {
        let shape = array.shape.count == 1 ? "(\(array.shape[0]),)" : "(" + array.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(array.type == .bool || array.type.size == 1 ? "|" : "<")\(array.type.code)', 'fortran_order': False, 'shape': \(shape), }"
        // Pad with spaces so that the data starts at a multiple of 64 bytes, the header ending in a newline.
        let total = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
        var out = Data(magic + [1, 0])
        let n = header.utf8.count
        out.append(contentsOf: [UInt8(n & 0xFF), UInt8(n >> 8)])
        out.append(contentsOf: Swift.Array(header.utf8))
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func int<T: FixedWidthInteger>(_ v: Float, _: T.Type) -> T {
            v.isNaN ? 0 : (v >= Float(T.max) ? T.max : (v <= Float(T.min) ? T.min : T(v)))
        }
        out.reserveCapacity(out.count + array.count * array.type.size)
        for v in array.values {
            switch array.type {
            case .bool: out.append(v != 0 ? 1 : 0)
            case .int8: put(int(v, Int8.self))
            case .uint8: put(int(v, UInt8.self))
            case .int16: put(int(v, Int16.self))
            case .uint16: put(int(v, UInt16.self))
            case .int32: put(int(v, Int32.self))
            case .uint32: put(int(v, UInt32.self))
            case .int64: put(int(v, Int64.self))
            case .uint64: put(int(v, UInt64.self))
            case .float16: put(halfBits(v))
            case .float32: put(v.bitPattern)
            case .float64: put(Double(v).bitPattern)
            }
        }
        return out
    }

    /// Writes `array` as `.npy`, atomically.
    public static func write(_ array: Array, to path: String) throws { try FileIO.writeAtomically(encode(array), to: path) }

    static func tuple(_ shape: [Int]) -> String {
        shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    }

    // MARK: - Elements

    private static func convert(_ p: UnsafeRawPointer, count: Int, type: ElementType, bigEndian: Bool) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        func load<T: FixedWidthInteger>(_: T.Type, _ i: Int) -> T {
            let v = p.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)
            return bigEndian ? T(bigEndian: v) : T(littleEndian: v)
        }
        switch type {
        case .bool, .uint8: for i in 0..<count { out[i] = Float(p.load(fromByteOffset: i, as: UInt8.self)) }
        case .int8: for i in 0..<count { out[i] = Float(p.load(fromByteOffset: i, as: Int8.self)) }
        case .int16: for i in 0..<count { out[i] = Float(load(Int16.self, i)) }
        case .uint16: for i in 0..<count { out[i] = Float(load(UInt16.self, i)) }
        case .int32: for i in 0..<count { out[i] = Float(load(Int32.self, i)) }
        case .uint32: for i in 0..<count { out[i] = Float(load(UInt32.self, i)) }
        case .int64: for i in 0..<count { out[i] = Float(load(Int64.self, i)) }
        case .uint64: for i in 0..<count { out[i] = Float(load(UInt64.self, i)) }
        case .float16: for i in 0..<count { out[i] = halfToFloat(load(UInt16.self, i)) }
        case .float32: for i in 0..<count { out[i] = Float(bitPattern: load(UInt32.self, i)) }
        case .float64: for i in 0..<count { out[i] = Float(Double(bitPattern: load(UInt64.self, i))) }
        }
        return out
    }

    /// Column-major (Fortran) elements of `shape` in row-major order.
    static func fortranToC(_ values: [Float], shape: [Int]) -> [Float] {
        let rank = shape.count
        var fStride = [Int](repeating: 1, count: rank)
        for k in 1..<rank { fStride[k] = fStride[k - 1] * shape[k - 1] }
        var out = [Float](repeating: 0, count: values.count)
        var index = [Int](repeating: 0, count: rank), source = 0
        for i in 0..<values.count {
            out[i] = values[source]
            // Advance the row-major index (last axis fastest), keeping the column-major offset in step.
            var k = rank - 1
            while k >= 0 {
                index[k] += 1
                source += fStride[k]
                if index[k] < shape[k] { break }
                source -= fStride[k] * shape[k]
                index[k] = 0
                k -= 1
            }
        }
        return out
    }

    /// IEEE 754 binary16 to Float, subnormals, infinities and NaN included.
    @_spi(Support) public static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16, exp = Int(h >> 10) & 0x1F, mant = UInt32(h & 0x3FF)
        if exp == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | mant << 13) }
        if exp == 0 { return (sign != 0 ? -1 : 1) * Float(mant) * 0x1p-24 }
        return Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | mant << 13)
    }

    /// Float to binary16, rounding to nearest even (as numpy's astype(float16)).
    @_spi(Support) public static func halfBits(_ f: Float) -> UInt16 {
        let bits = f.bitPattern, sign = UInt16((bits >> 16) & 0x8000)
        if f.isNaN { return sign | 0x7E00 }
        let a = abs(f)
        if a >= 65520 { return sign | 0x7C00 }  // rounds to infinity
        if a < 0x1p-14 {  // subnormal half: a multiple of 2^-24
            return sign | UInt16((a * 0x1p24).rounded(.toNearestOrEven))
        }
        let e = Int((a.bitPattern >> 23) & 0xFF) - 127, m = a.bitPattern & 0x7F_FFFF
        var half = UInt32(e + 15) << 10 | m >> 13
        let rest = m & 0x1FFF
        if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) { half += 1 }  // a carry into the exponent is right
        return sign | UInt16(half)
    }

    // MARK: - Header

    struct Header {
        var type: ElementType
        var bigEndian: Bool
        var fortranOrder: Bool
        var shape: [Int]

        static func parse(_ bytes: [UInt8], fail: @escaping (String) -> AdvKitError) throws -> Header {
            var parser = LiteralParser(bytes: bytes, fail: fail)
            let value = try parser.parseTop()
            guard case let .dict(entries) = value else { throw fail("the header is not a dict literal") }
            var seen: [String: Literal] = [:]
            for (k, v) in entries {
                guard seen[k] == nil else { throw fail("the header names '\(k)' twice") }
                seen[k] = v
            }
            let keys = Set(seen.keys)
            guard keys == ["descr", "fortran_order", "shape"] else {
                throw fail("the header has the keys \(keys.sorted()), want exactly descr, fortran_order and shape")
            }
            guard case let .bool(fortran) = seen["fortran_order"]! else { throw fail("fortran_order is not True or False") }
            guard case let .tuple(items) = seen["shape"]! else { throw fail("shape is not a tuple") }
            let shape: [Int] = try items.map {
                guard case let .int(d) = $0, d >= 0 else { throw fail("shape \(Literal.tuple(items)) has an entry that is not a non-negative integer") }
                return d
            }
            let descr: String
            switch seen["descr"]! {
            case let .string(s): descr = s
            case .list: throw fail("a structured array (descr is a list of fields); AdvKit reads plain numeric arrays")
            default: throw fail("descr is not a string")
            }
            let (type, big) = try dtype(descr, fail: fail)
            return Header(type: type, bigEndian: big, fortranOrder: fortran, shape: shape)
        }

        static func dtype(_ descr: String, fail: (String) -> AdvKitError) throws -> (ElementType, Bool) {
            var code = Substring(descr), big = false
            if let first = code.first, "<>|=".contains(first) {
                big = first == ">"
                code = code.dropFirst()
            }
            if code.hasPrefix("O") {
                throw fail("dtype '\(descr)' holds Python objects: reading it means unpickling, which runs code from the file, and AdvKit never unpickles. Save a numeric array instead, e.g. np.save(path, np.asarray(x, dtype=np.float32))")
            }
            guard let t = ElementType(code: String(code)) else {
                let kind: String
                switch code.first {
                case "U", "S", "a": kind = "strings"
                case "c": kind = "complex numbers"
                case "M", "m": kind = "dates or times"
                case "V": kind = "raw bytes (void)"
                default: kind = "an unknown type"
                }
                throw fail("dtype '\(descr)' (\(kind)); AdvKit reads bool, integer and float arrays")
            }
            return (t, big && t.size > 1)
        }
    }

    /// The Python literals a `.npy` header uses.
    indirect enum Literal: CustomStringConvertible {
        case string(String), int(Int), bool(Bool), none, tuple([Literal]), list([Literal]), dict([(String, Literal)])

        var description: String {
            switch self {
            case let .string(s): return "'\(s)'"
            case let .int(i): return String(i)
            case let .bool(b): return b ? "True" : "False"
            case .none: return "None"
            case let .tuple(t): return t.count == 1 ? "(\(t[0]),)" : "(" + t.map(\.description).joined(separator: ", ") + ")"
            case let .list(l): return "[" + l.map(\.description).joined(separator: ", ") + "]"
            case let .dict(d): return "{" + d.map { "'\($0.0)': \($0.1)" }.joined(separator: ", ") + "}"
            }
        }
    }

    /// A recursive-descent parser of Python literals, nesting at most `maxDepth` deep (a header of 5,000 `(`
    /// would otherwise cost 5,000 stack frames).
    struct LiteralParser {
        let bytes: [UInt8]
        let fail: (String) -> AdvKitError
        var pos = 0
        static let maxDepth = 16

        init(bytes: [UInt8], fail: @escaping (String) -> AdvKitError) {
            self.bytes = bytes
            self.fail = fail
        }

        mutating func parseTop() throws -> Literal {
            let v = try parse(depth: 0)
            skipSpace()
            guard pos == bytes.count else { throw fail("unexpected text after the header's dict at byte \(pos)") }
            return v
        }

        mutating func skipSpace() {
            while pos < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[pos]) { pos += 1 }
        }

        mutating func expect(_ c: UInt8) throws {
            skipSpace()
            guard pos < bytes.count, bytes[pos] == c else {
                throw fail("the header is not a valid dict literal: expected '\(Character(Unicode.Scalar(c)))' at byte \(pos)")
            }
            pos += 1
        }

        /// Items up to `close`, separated by commas, a trailing comma allowed; `tuple` notes a comma seen.
        mutating func items(close: UInt8, depth: Int, item: (inout LiteralParser) throws -> Void) throws -> Bool {
            var sawComma = false
            while true {
                skipSpace()
                guard pos < bytes.count else { throw fail("the header ends inside a literal") }
                if bytes[pos] == close { pos += 1; return sawComma }
                try item(&self)
                skipSpace()
                guard pos < bytes.count else { throw fail("the header ends inside a literal") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; sawComma = true; continue }
                guard bytes[pos] == close else {
                    throw fail("the header is not a valid dict literal: unexpected '\(Character(Unicode.Scalar(bytes[pos])))' at byte \(pos)")
                }
                pos += 1
                return sawComma
            }
        }

        mutating func parse(depth: Int) throws -> Literal {
            guard depth < LiteralParser.maxDepth else { throw fail("the header nests literals more than \(LiteralParser.maxDepth) deep") }
            skipSpace()
            guard pos < bytes.count else { throw fail("the header ends where a value should be") }
            let c = bytes[pos]
            switch c {
            case UInt8(ascii: "{"):
                pos += 1
                var entries: [(String, Literal)] = []
                _ = try items(close: UInt8(ascii: "}"), depth: depth) { p in
                    guard case let .string(key) = try p.parse(depth: depth + 1) else { throw p.fail("a key of the header's dict is not a string") }
                    try p.expect(UInt8(ascii: ":"))
                    entries.append((key, try p.parse(depth: depth + 1)))
                }
                return .dict(entries)
            case UInt8(ascii: "("), UInt8(ascii: "["):
                pos += 1
                var values: [Literal] = []
                let close = c == UInt8(ascii: "(") ? UInt8(ascii: ")") : UInt8(ascii: "]")
                let comma = try items(close: close, depth: depth) { p in values.append(try p.parse(depth: depth + 1)) }
                if c == UInt8(ascii: "[") { return .list(values) }
                // (x) without a comma is x in parentheses, not a tuple.
                return values.count == 1 && !comma ? values[0] : .tuple(values)
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                pos += 1
                let begin = pos
                while pos < bytes.count, bytes[pos] != c {
                    guard bytes[pos] != UInt8(ascii: "\\") else { throw fail("the header has a string with a backslash escape") }
                    pos += 1
                }
                guard pos < bytes.count else { throw fail("the header ends inside a string") }
                let s = String(decoding: bytes[begin..<pos], as: UTF8.self)
                pos += 1
                return .string(s)
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"):
                let begin = pos
                pos += 1
                while pos < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[pos]) { pos += 1 }
                if pos < bytes.count, bytes[pos] == UInt8(ascii: "L") { pos += 1 }  // Python 2's long
                let text = String(decoding: bytes[begin..<pos], as: UTF8.self).replacingOccurrences(of: "L", with: "")
                guard let v = Int(text) else { throw fail("the header has the number \(text), which is not an integer AdvKit can hold") }
                return .int(v)
            default:
                for (word, value) in [("True", Literal.bool(true)), ("False", .bool(false)), ("None", .none)]
                where bytes[pos...].starts(with: Swift.Array(word.utf8)) {
                    pos += word.utf8.count
                    return value
                }
                throw fail("the header is not a valid dict literal: unexpected '\(Character(Unicode.Scalar(c)))' at byte \(pos)")
            }
        }
    }
}
