import CZlib
import Foundation

/// NumPy's `.npz`: a zip archive of `.npy` members, one per array (`np.savez` stores them, `np.savez_compressed`
/// deflates them). Read through the zip's central directory (PKWARE APPNOTE 6.3: end of central directory record,
/// its zip64 form, central and local headers), every offset and size checked against the file before use; members
/// are stored (method 0) or deflated (method 8, inflated raw by zlib) and checked against their CRC-32.
public enum NPZ {
    /// One member of the archive.
    public struct Member: Equatable {
        /// The member's file name in the zip ("x.npy").
        public var name: String
        /// The array's key: the name without ".npy" (as `np.load(...)[key]`).
        public var key: String { name.hasSuffix(".npy") ? String(name.dropLast(4)) : name }
        var method: Int
        var crc: UInt32
        var compressedSize: Int
        var size: Int
        var headerOffset: Int
    }

    /// A parsed archive: its members, and each array on demand (a file of training and test arrays need not
    /// decode the training ones).
    public struct Archive {
        public let path: String
        public let members: [Member]
        let data: Data
        let centralDirectory: Int

        /// Parses the central directory of `data`; `path` names the file in errors.
        public init(_ data: Data, path: String = "<npz>") throws {
            self.path = path
            self.data = data
            (members, centralDirectory) = try NPZ.directory(data, path: path)
        }

        /// Reads the archive at `path`.
        public init(contentsOf path: String) throws { try self.init(try FileIO.read(path), path: path) }

        /// The keys, in the archive's order.
        public var keys: [String] { members.map(\.key) }

        /// The array under `key` (a clear error listing the keys when there is none).
        public func array(_ key: String) throws -> NumPy.Array {
            guard let m = members.first(where: { $0.key == key }) else {
                throw AdvKitError.invalidFile(path: path, reason: "has no array '\(key)' (it has \(keys.map { "'\($0)'" }.joined(separator: ", ")))")
            }
            return try NumPy.parse(try NPZ.contents(of: m, in: data, centralDirectory: centralDirectory, path: path),
                                   path: "\(path) (member \(m.name))")
        }
    }

    public static func isZip(_ data: Data) -> Bool {
        data.count >= 4 && data.prefix(4).elementsEqual([0x50, 0x4B, 0x03, 0x04] as [UInt8])
    }

    /// Every array of the archive, in order.
    public static func parse(_ data: Data, path: String = "<npz>") throws -> [(key: String, array: NumPy.Array)] {
        let a = try Archive(data, path: path)
        return try a.members.map { ($0.key, try a.array($0.key)) }
    }

    // MARK: - Reading

    /// Deflate expands by at most 1032:1; a member claiming more is lying (or a bomb), and is refused before any
    /// memory is set aside for it.
    static let maxDeflateRatio = 1032
    static let maxMemberSize = 1 << 34

    private static func u16(_ b: UnsafeRawBufferPointer, _ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
    private static func u32(_ b: UnsafeRawBufferPointer, _ o: Int) -> Int { u16(b, o) | u16(b, o + 2) << 16 }
    private static func u64(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt64 { UInt64(u32(b, o)) | UInt64(u32(b, o + 4)) << 32 }

    static func directory(_ data: Data, path: String) throws -> ([Member], Int) {
        func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: "not a valid .npz (zip) file: \(why)") }
        return try data.withUnsafeBytes { (b: UnsafeRawBufferPointer) in
            let n = b.count
            guard n >= 22 else { throw fail("\(n) bytes, shorter than the 22-byte end of central directory record") }
            // The end record sits in the last 22 + 65,535 bytes (its comment is at most 65,535 bytes).
            var eocd = -1
            var p = n - 22
            while p >= Swift.max(0, n - 22 - 65_535) {
                if b[p] == 0x50, b[p + 1] == 0x4B, b[p + 2] == 0x05, b[p + 3] == 0x06, p + 22 + u16(b, p + 20) <= n { eocd = p; break }
                p -= 1
            }
            guard eocd >= 0 else { throw fail("no end of central directory record (truncated, or not a zip)") }
            guard u16(b, eocd + 4) == 0, u16(b, eocd + 6) == 0 else { throw fail("a multi-disk (spanned) archive") }
            var count = u16(b, eocd + 10), cdSize = u32(b, eocd + 12), cdOffset = u32(b, eocd + 16)
            var cdEnd = eocd
            if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
                // zip64: a locator just before the end record points to the zip64 end record.
                let loc = eocd - 20
                guard loc >= 0, u32(b, loc) == 0x0706_4B50 else { throw fail("zip64 sizes without a zip64 end of central directory locator") }
                let rec64 = u64(b, loc + 8)
                guard loc >= 56, rec64 <= UInt64(loc - 56) else {
                    throw fail("the zip64 end of central directory record at \(rec64) lies outside the file")
                }
                let r = Int(rec64)
                guard u32(b, r) == 0x0606_4B50 else { throw fail("no zip64 end of central directory record at offset \(r)") }
                let c64 = u64(b, r + 32), size64 = u64(b, r + 40), off64 = u64(b, r + 48)
                guard c64 <= UInt64(n), size64 <= UInt64(n), off64 <= UInt64(n) else {
                    throw fail("the zip64 central directory (\(c64) entries, \(size64) bytes at \(off64)) does not fit the \(n)-byte file")
                }
                (count, cdSize, cdOffset, cdEnd) = (Int(c64), Int(size64), Int(off64), r)
            }
            guard cdOffset <= cdEnd, cdSize <= cdEnd - cdOffset else {
                throw fail("the central directory (\(cdSize) bytes at offset \(cdOffset)) runs past its end record at \(cdEnd)")
            }
            guard count <= cdSize / 46 else { throw fail("\(count) entries cannot fit a \(cdSize)-byte central directory") }
            var members: [Member] = []
            var o = cdOffset
            let end = cdOffset + cdSize
            for i in 0..<count {
                guard end - o >= 46, u32(b, o) == 0x0201_4B50 else { throw fail("central directory entry \(i) at offset \(o) is missing or damaged") }
                let flags = u16(b, o + 8), method = u16(b, o + 10), crc = UInt32(u32(b, o + 16))
                var csize = u32(b, o + 20), usize = u32(b, o + 24), offset = u32(b, o + 42)
                let nameLen = u16(b, o + 28), extraLen = u16(b, o + 30), commentLen = u16(b, o + 32)
                guard 46 + nameLen + extraLen + commentLen <= end - o else { throw fail("central directory entry \(i) runs past the directory's end") }
                let name = String(decoding: UnsafeRawBufferPointer(rebasing: b[(o + 46)..<(o + 46 + nameLen)]), as: UTF8.self)
                if usize == 0xFFFF_FFFF || csize == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
                    // The zip64 extra field (id 1) holds, in this order, only the fields that overflowed.
                    var e = o + 46 + nameLen
                    let eEnd = e + extraLen
                    var found = false
                    while eEnd - e >= 4 {
                        let id = u16(b, e), len = u16(b, e + 2)
                        guard len <= eEnd - e - 4 else { break }
                        if id == 1 {
                            var f = e + 4
                            func next() throws -> Int {
                                guard f + 8 <= e + 4 + len else { throw fail("member \(name): its zip64 extra field is too short") }
                                let v = u64(b, f)
                                f += 8
                                guard v <= UInt64(maxMemberSize) else { throw fail("member \(name): a zip64 size or offset of \(v)") }
                                return Int(v)
                            }
                            if usize == 0xFFFF_FFFF { usize = try next() }
                            if csize == 0xFFFF_FFFF { csize = try next() }
                            if offset == 0xFFFF_FFFF { offset = try next() }
                            found = true
                            break
                        }
                        e += 4 + len
                    }
                    guard found else { throw fail("member \(name): zip64 sizes without a zip64 extra field") }
                }
                guard flags & 1 == 0 else { throw fail("member \(name) is encrypted") }
                guard method == 0 || method == 8 else {
                    throw fail("member \(name) uses compression method \(method); AdvKit reads stored (0) and deflated (8) members, as numpy writes")
                }
                if method == 0, csize != usize { throw fail("member \(name) is stored but its sizes differ (\(csize) and \(usize) bytes)") }
                if method == 8, usize > csize * maxDeflateRatio + 1024 {
                    throw fail("member \(name) claims \(usize) bytes from \(csize) deflated bytes, more than deflate can produce")
                }
                if members.contains(where: { $0.name == name }) { throw fail("two members are named \(name)") }
                members.append(Member(name: name, method: method, crc: crc, compressedSize: csize, size: usize, headerOffset: offset))
                o += 46 + nameLen + extraLen + commentLen
            }
            return (members, cdOffset)
        }
    }

    /// The uncompressed bytes of member `m`, its local header and data checked to lie before the central
    /// directory and its CRC-32 checked.
    static func contents(of m: Member, in data: Data, centralDirectory: Int, path: String) throws -> Data {
        func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: "not a valid .npz (zip) file: member \(m.name): \(why)") }
        let raw: Data = try data.withUnsafeBytes { (b: UnsafeRawBufferPointer) in
            let o = m.headerOffset
            guard o <= centralDirectory, centralDirectory - o >= 30 else {
                throw fail("its local header offset \(o) is outside the data before the central directory (at \(centralDirectory))")
            }
            guard u32(b, o) == 0x0403_4B50 else { throw fail("no local header at offset \(o)") }
            let nameLen = u16(b, o + 26), extraLen = u16(b, o + 28)
            let start = o + 30 + nameLen + extraLen
            guard start <= centralDirectory, m.compressedSize <= centralDirectory - start else {
                throw fail("its \(m.compressedSize) bytes of data at offset \(start) run into the central directory at \(centralDirectory)")
            }
            let local = String(decoding: UnsafeRawBufferPointer(rebasing: b[(o + 30)..<(o + 30 + nameLen)]), as: UTF8.self)
            guard local == m.name else { throw fail("its local header names \(local)") }
            return Data(b[start..<(start + m.compressedSize)])
        }
        let bytes = m.method == 0 ? raw : try inflateRaw(raw, size: m.size, fail: fail)
        let crc = bytes.withUnsafeBytes { p in UInt32(crc32(0, p.bindMemory(to: Bytef.self).baseAddress, uInt(p.count))) }
        guard crc == m.crc else { throw fail(String(format: "CRC-32 mismatch (the data gives %08x, the directory says %08x): the file is damaged", crc, m.crc)) }
        return bytes
    }

    /// Inflates a raw deflate stream that must produce exactly `size` bytes.
    static func inflateRaw(_ input: Data, size: Int, fail: (String) -> AdvKitError) throws -> Data {
        var stream = z_stream()
        guard inflateInit2_(&stream, -MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw fail("zlib could not start")
        }
        defer { inflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: size + 1)  // one spare byte: output past `size` is caught, not lost
        var inp = [UInt8](input)
        var status: Int32 = Z_OK
        inp.withUnsafeMutableBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o in
                stream.next_in = i.baseAddress
                stream.avail_in = uInt(i.count)
                stream.next_out = o.baseAddress
                stream.avail_out = uInt(o.count)
                status = inflate(&stream, Z_FINISH)
            }
        }
        let produced = size + 1 - Int(stream.avail_out)
        switch status {
        case Z_STREAM_END:
            guard produced == size else { throw fail("it inflates to \(produced) bytes, the directory says \(size)") }
        case Z_BUF_ERROR where produced > size:
            throw fail("it inflates to more than the \(size) bytes the directory says")
        case Z_BUF_ERROR:
            throw fail("the deflate stream ends early (truncated) after \(produced) of \(size) bytes")
        default:
            throw fail("corrupt deflate data (\(stream.msg.map { String(cString: $0) } ?? "code \(status)"))")
        }
        return Data(out.prefix(size))
    }

    // MARK: - Writing

    /// An `.npz` of `arrays` under their keys (`np.savez`, or `np.savez_compressed` when `compressed`).
    public static func encode(_ arrays: [(key: String, array: NumPy.Array)], compressed: Bool = false) -> Data {
        var out = Data(), central = Data()
        func le(_ v: Int, _ bytes: Int, into d: inout Data) { for k in 0..<bytes { d.append(UInt8(truncatingIfNeeded: v >> (8 * k))) } }
        for (key, array) in arrays {
            let name = Array((key + ".npy").utf8)
            let body = NumPy.encode(array)
            let crc = body.withUnsafeBytes { p in Int(crc32(0, p.bindMemory(to: Bytef.self).baseAddress, uInt(p.count))) }
            let stored = compressed ? deflateRaw(body) : body
            let offset = out.count
            // Local header: signature, version 20, flags 0, method, time, date (1980-01-01), CRC, sizes, name, no extra.
            le(0x0403_4B50, 4, into: &out); le(20, 2, into: &out); le(0, 2, into: &out); le(compressed ? 8 : 0, 2, into: &out)
            le(0, 2, into: &out); le(0x21, 2, into: &out); le(crc, 4, into: &out); le(stored.count, 4, into: &out)
            le(body.count, 4, into: &out); le(name.count, 2, into: &out); le(0, 2, into: &out)
            out.append(contentsOf: name)
            out.append(stored)
            le(0x0201_4B50, 4, into: &central); le(20, 2, into: &central); le(20, 2, into: &central); le(0, 2, into: &central)
            le(compressed ? 8 : 0, 2, into: &central); le(0, 2, into: &central); le(0x21, 2, into: &central); le(crc, 4, into: &central)
            le(stored.count, 4, into: &central); le(body.count, 4, into: &central); le(name.count, 2, into: &central)
            le(0, 2, into: &central); le(0, 2, into: &central); le(0, 2, into: &central); le(0, 2, into: &central)
            le(0o100644 << 16, 4, into: &central); le(offset, 4, into: &central)
            central.append(contentsOf: name)
        }
        let cdOffset = out.count
        out.append(central)
        le(0x0605_4B50, 4, into: &out); le(0, 2, into: &out); le(0, 2, into: &out); le(arrays.count, 2, into: &out)
        le(arrays.count, 2, into: &out); le(central.count, 4, into: &out); le(cdOffset, 4, into: &out); le(0, 2, into: &out)
        return out
    }

    /// Writes an `.npz`, atomically.
    public static func write(_ arrays: [(key: String, array: NumPy.Array)], to path: String, compressed: Bool = false) throws {
        try FileIO.writeAtomically(encode(arrays, compressed: compressed), to: path)
    }

    static func deflateRaw(_ data: Data) -> Data {
        var stream = z_stream()
        precondition(deflateInit2_(&stream, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
                                   Int32(MemoryLayout<z_stream>.size)) == Z_OK, "zlib could not start")
        defer { deflateEnd(&stream) }
        var input = [UInt8](data)
        var buffer = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 16)
        var produced = 0
        input.withUnsafeMutableBufferPointer { i in
            buffer.withUnsafeMutableBufferPointer { o in
                stream.next_in = i.baseAddress
                stream.avail_in = uInt(i.count)
                stream.next_out = o.baseAddress
                stream.avail_out = uInt(o.count)
                let status = deflate(&stream, Z_FINISH)
                precondition(status == Z_STREAM_END, "deflate into a deflateBound buffer finishes in one call")
                produced = o.count - Int(stream.avail_out)
            }
        }
        return Data(buffer.prefix(produced))
    }
}
