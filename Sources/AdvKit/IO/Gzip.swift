import CZlib
import Foundation

/// gzip compression and decompression through zlib.
@_spi(Support) public enum Gzip {
    public static func isGzip(_ data: Data) -> Bool { data.count >= 2 && data[data.startIndex] == 0x1f && data[data.startIndex + 1] == 0x8b }

    /// Inflates a gzip stream. Stops with an error past `limit` bytes of output (a decompression bomb) and
    /// when the stream ends early or is corrupt. `enough`, asked after each 1 MB of output, stops early with what
    /// is out so far (a reader that needs only a file's first records); the rest of the stream is then not checked.
    public static func decompress(_ data: Data, path: String, limit: Int = 1 << 32,
                                  enough: ((Data) -> Bool)? = nil) throws -> Data {
        var stream = z_stream()
        guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw AdvKitError.io(path: path, reason: "zlib could not start")
        }
        defer { inflateEnd(&stream) }
        var out = Data()
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var status: Int32 = Z_OK
        try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
            stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(input.count)
            repeat {
                try buffer.withUnsafeMutableBufferPointer { b in
                    stream.next_out = b.baseAddress
                    stream.avail_out = uInt(chunk)
                    status = inflate(&stream, Z_NO_FLUSH)
                    guard status == Z_OK || status == Z_STREAM_END else {
                        let msg = stream.msg.map { String(cString: $0) } ?? "code \(status)"
                        throw AdvKitError.invalidFile(path: path, reason: status == Z_BUF_ERROR
                            ? "the gzip stream ends early (truncated file)" : "corrupt gzip data (\(msg))")
                    }
                    out.append(b.baseAddress!, count: chunk - Int(stream.avail_out))
                }
                if out.count > limit {
                    throw AdvKitError.invalidFile(path: path, reason: "decompresses to more than \(limit) bytes")
                }
                if status != Z_STREAM_END, let enough, enough(out) { return }
                if status != Z_STREAM_END && stream.avail_in == 0 && stream.avail_out != 0 {
                    throw AdvKitError.invalidFile(path: path, reason: "the gzip stream ends early (truncated file)")
                }
            } while status != Z_STREAM_END
        }
        return out
    }

    /// Compresses `data` into a gzip stream (level 6).
    public static func compress(_ data: Data) -> Data {
        var stream = z_stream()
        precondition(deflateInit2_(&stream, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
                                   Int32(MemoryLayout<z_stream>.size)) == Z_OK, "zlib could not start")
        defer { deflateEnd(&stream) }
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var input = [UInt8](data)
        input.withUnsafeMutableBufferPointer { inp in
            stream.next_in = inp.baseAddress
            stream.avail_in = uInt(inp.count)
            var status: Int32 = Z_OK
            repeat {
                buffer.withUnsafeMutableBufferPointer { b in
                    stream.next_out = b.baseAddress
                    stream.avail_out = uInt(b.count)
                    status = deflate(&stream, Z_FINISH)
                    out.append(b.baseAddress!, count: b.count - Int(stream.avail_out))
                }
            } while status == Z_OK
        }
        return out
    }
}
