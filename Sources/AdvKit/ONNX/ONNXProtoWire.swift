import Foundation

/// The protobuf wire format, read with every length checked: a field is a varint key (field number << 3 | wire
/// type) followed by a varint (type 0), 8 bytes (type 1), a varint length and that many bytes (type 2), or 4 bytes
/// (type 5). Types 3 and 4 (groups, deprecated, unused by ONNX) and 6, 7 (undefined) are refused.
///
/// A reader is a window [position, end) over the bytes of the whole file; a submessage is read by a new reader over
/// its window, so nothing is copied. Unknown fields are skipped by their length without being parsed, so nesting in
/// the file costs no stack: only the decoders in ONNXReader.swift recurse, and only as deep as ONNX's schema goes.
struct ONNXProtoReader {
    enum WireType: Int {
        case varint = 0, fixed64 = 1, lengthDelimited = 2, fixed32 = 5
    }

    let bytes: UnsafeRawBufferPointer
    private(set) var position: Int
    let end: Int
    /// The message being read, for errors ("NodeProto").
    let message: String
    let path: String

    /// The current field's number and wire type (for errors).
    private(set) var field = 0
    private(set) var wire = WireType.varint

    init(bytes: UnsafeRawBufferPointer, range: Range<Int>, message: String, path: String) {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count, "window \(range) outside \(bytes.count) bytes")
        self.bytes = bytes
        position = range.lowerBound
        end = range.upperBound
        self.message = message
        self.path = path
    }

    /// A reader over a submessage found in this one.
    func submessage(_ range: Range<Int>, _ message: String) -> ONNXProtoReader {
        ONNXProtoReader(bytes: bytes, range: range, message: message, path: path)
    }

    func fail(_ why: String) -> AdvKitError {
        .invalidFile(path: path, reason: "not a valid ONNX file: \(why)")
    }

    /// "field 7 of NodeProto".
    var fieldName: String { "field \(field) of \(message)" }

    var isAtEnd: Bool { position >= end }

    /// The next field's key, or nil at the end of the message.
    mutating func nextField() throws -> (field: Int, wire: WireType)? {
        guard position < end else { return nil }
        let at = position
        let key = try varint(what: "a field key of \(message)")
        let number = key >> 3
        guard number >= 1, number <= 536_870_911 else {
            throw fail("field number \(number) of \(message) at offset \(at) is outside 1...536870911")
        }
        field = Int(number)
        switch key & 7 {
        case 0: wire = .varint
        case 1: wire = .fixed64
        case 2: wire = .lengthDelimited
        case 5: wire = .fixed32
        case 3, 4:
            throw fail("\(fieldName) at offset \(at) uses wire type \(key & 7) (a group), which ONNX files never use")
        default:
            throw fail("\(fieldName) at offset \(at) has wire type \(key & 7), which does not exist")
        }
        return (field, wire)
    }

    /// A base-128 varint of at most 10 bytes (bits past the 64th are dropped, as protobuf does).
    mutating func varint(what: String? = nil) throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        let start = position
        while true {
            guard position < end else {
                throw fail("\(what ?? "the varint in \(fieldName)") at offset \(start) runs past the end of \(message) (offset \(end))")
            }
            let b = bytes[position]
            position += 1
            if shift < 64 { result |= UInt64(b & 0x7f) << shift }
            if b & 0x80 == 0 { return result }
            shift += 7
            guard shift < 70 else {
                throw fail("\(what ?? "the varint in \(fieldName)") at offset \(start) is longer than 10 bytes")
            }
        }
    }

    mutating func fixed32() throws -> UInt32 {
        guard end - position >= 4 else { throw fail("\(fieldName) at offset \(position) needs 4 bytes, \(message) has \(end - position) left") }
        let v = bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self)
        position += 4
        return UInt32(littleEndian: v)
    }

    mutating func fixed64() throws -> UInt64 {
        guard end - position >= 8 else { throw fail("\(fieldName) at offset \(position) needs 8 bytes, \(message) has \(end - position) left") }
        let v = bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self)
        position += 8
        return UInt64(littleEndian: v)
    }

    /// The window of a length-delimited field, checked to lie inside this message before anything is read or
    /// allocated.
    mutating func lengthDelimited() throws -> Range<Int> {
        let at = position
        let length = try varint()
        guard length <= UInt64(end - position) else {
            throw fail("\(fieldName) runs past the end (offset \(at), length \(length), \(end - position) bytes left in \(message))")
        }
        let start = position
        position += Int(length)
        return start..<position
    }

    /// Skips the current field's value by its wire type.
    mutating func skip() throws {
        switch wire {
        case .varint: _ = try varint()
        case .fixed64: _ = try fixed64()
        case .fixed32: _ = try fixed32()
        case .lengthDelimited: _ = try lengthDelimited()
        }
    }

    /// Fails unless the current field has the wire type its schema gives.
    func expect(_ want: WireType) throws {
        guard wire == want else {
            throw fail("\(fieldName) has wire type \(wire.rawValue), its type needs \(want.rawValue)")
        }
    }

    // MARK: typed values

    mutating func int64() throws -> Int64 {
        try expect(.varint)
        return Int64(bitPattern: try varint())
    }

    mutating func int32() throws -> Int32 {
        try expect(.varint)
        return Int32(truncatingIfNeeded: try varint())
    }

    mutating func float() throws -> Float {
        try expect(.fixed32)
        return Float(bitPattern: try fixed32())
    }

    /// A string or bytes field as UTF-8 text (invalid sequences become U+FFFD).
    mutating func string() throws -> String {
        try expect(.lengthDelimited)
        let r = try lengthDelimited()
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[r]), as: UTF8.self)
    }

    /// A submessage's window.
    mutating func submessageWindow() throws -> Range<Int> {
        try expect(.lengthDelimited)
        return try lengthDelimited()
    }

    // MARK: repeated scalars, packed (one length-delimited run) or not (one field per element)

    /// Appends varint elements (int64, int32, uint64, bool): packed or one per field.
    mutating func appendVarints(to out: inout [UInt64]) throws {
        if wire == .lengthDelimited {
            let r = try lengthDelimited()
            var inner = submessage(r, message)
            inner.field = field
            inner.wire = .varint
            // Every varint takes at least one byte, so r.count bounds the count: reserving it is safe.
            out.reserveCapacity(out.count + min(r.count, 1 << 20))
            while !inner.isAtEnd { out.append(try inner.varint(what: "a packed varint in \(fieldName)")) }
        } else {
            try expect(.varint)
            out.append(try varint())
        }
    }

    /// Appends fixed32 elements (float): packed or one per field.
    mutating func appendFixed32s(to out: inout [UInt32]) throws {
        if wire == .lengthDelimited {
            let r = try lengthDelimited()
            guard r.count % 4 == 0 else {
                throw fail("\(fieldName) holds \(r.count) bytes of packed 4-byte values, not a multiple of 4")
            }
            appendRaw(r, to: &out)
        } else {
            try expect(.fixed32)
            out.append(try fixed32())
        }
    }

    /// Appends the little-endian elements in `r` (whose size the caller checked to be a multiple of the element
    /// size): one copy of the bytes, not a loop of loads (a 50 MB float_data tensor is a packed run).
    private func appendRaw<T: FixedWidthInteger>(_ r: Range<Int>, to out: inout [T]) {
        let n = r.count / MemoryLayout<T>.size
        let old = out.count
        out.append(contentsOf: repeatElement(0, count: n))
        out.withUnsafeMutableBytes { dst in
            if n > 0 { (dst.baseAddress! + old * MemoryLayout<T>.size).copyMemory(from: bytes.baseAddress! + r.lowerBound, byteCount: r.count) }
        }
        #if !_endian(little)
        for k in old..<out.count { out[k] = T(littleEndian: out[k]) }
        #endif
    }

    /// Appends fixed64 elements (double): packed or one per field.
    mutating func appendFixed64s(to out: inout [UInt64]) throws {
        if wire == .lengthDelimited {
            let r = try lengthDelimited()
            guard r.count % 8 == 0 else {
                throw fail("\(fieldName) holds \(r.count) bytes of packed 8-byte values, not a multiple of 8")
            }
            appendRaw(r, to: &out)
        } else {
            try expect(.fixed64)
            out.append(try fixed64())
        }
    }
}

/// The protobuf wire format, written: the few encodings `writeONNX` needs to re-encode a message whose fields it
/// otherwise copies verbatim (ONNXWriter.swift). A length-delimited field's length is written before its bytes,
/// so a message is built bottom-up: the changed submessage first, then its key and length into the enclosing one.
struct ONNXProtoWriter {
    private(set) var bytes: [UInt8] = []

    init(reservingCapacity n: Int = 0) { bytes.reserveCapacity(n) }

    /// A base-128 varint: 7 bits per byte, low bits first, the high bit set on every byte but the last.
    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// A field's key: field number << 3 | wire type.
    mutating func key(_ field: Int, _ wire: ONNXProtoReader.WireType) {
        precondition(field >= 1 && field <= 536_870_911, "field number \(field) outside 1...536870911")
        varint(UInt64(field) << 3 | UInt64(wire.rawValue))
    }

    /// A length-delimited field (a submessage, a string, bytes): key, length, then the bytes.
    mutating func lengthDelimited(_ field: Int, _ body: UnsafeRawBufferPointer) {
        key(field, .lengthDelimited)
        varint(UInt64(body.count))
        append(body)
    }

    mutating func lengthDelimited(_ field: Int, _ body: [UInt8]) {
        body.withUnsafeBytes { lengthDelimited(field, $0) }
    }

    /// Bytes copied as they are (a field taken verbatim from the source, key included).
    mutating func append(_ raw: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: raw)
    }
}
