import CZlib
import Foundation

/// PNG files (8-bit grayscale or RGB), deflated by zlib, with zlib's CRC-32 on every chunk.
@_spi(Support) public enum PNG {
    public struct Image: Equatable {
        public var width: Int, height: Int
        /// 1 (gray) or 3 (RGB).
        public var channels: Int
        /// Row-major, interleaved channels.
        public var pixels: [UInt8]

        public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
            precondition(channels == 1 || channels == 3, "PNG images have 1 or 3 channels here")
            precondition(pixels.count == width * height * channels, "pixels do not fill \(width)x\(height)x\(channels)")
            self.width = width
            self.height = height
            self.channels = channels
            self.pixels = pixels
        }

        /// A blank (white) canvas.
        public init(width: Int, height: Int, channels: Int = 3, fill: UInt8 = 255) {
            self.init(width: width, height: height, channels: channels, pixels: [UInt8](repeating: fill, count: width * height * channels))
        }

        public mutating func set(_ x: Int, _ y: Int, _ rgb: (UInt8, UInt8, UInt8)) {
            guard x >= 0, y >= 0, x < width, y < height else { return }
            let i = (y * width + x) * channels
            if channels == 1 { pixels[i] = UInt8((Int(rgb.0) + Int(rgb.1) + Int(rgb.2)) / 3); return }
            pixels[i] = rgb.0; pixels[i + 1] = rgb.1; pixels[i + 2] = rgb.2
        }

        /// Pastes `other` (any channel count) with its top-left corner at (x, y), scaled by an integer factor.
        public mutating func paste(_ other: Image, at x: Int, _ y: Int, scale: Int = 1) {
            for oy in 0..<(other.height * scale) { for ox in 0..<(other.width * scale) {
                let i = ((oy / scale) * other.width + ox / scale) * other.channels
                let c = other.channels == 1 ? (other.pixels[i], other.pixels[i], other.pixels[i])
                                            : (other.pixels[i], other.pixels[i + 1], other.pixels[i + 2])
                set(x + ox, y + oy, c)
            } }
        }
    }

    /// An image from a (C, H, W) tensor slice with C = 1 or 3, values in [0, 1] (clamped).
    public static func image(_ t: Tensor, index: Int) -> Image {
        let (c, h, w) = (t.shape[1], t.shape[2], t.shape[3])
        precondition(c == 1 || c == 3, "images with \(c) channels cannot be drawn")
        let d = c * h * w
        var px = [UInt8](repeating: 0, count: d)
        t.withUnsafeBufferPointer { p in
            for ch in 0..<c { for y in 0..<h { for x in 0..<w {
                let v = p[index * d + (ch * h + y) * w + x]
                px[(y * w + x) * c + ch] = UInt8((min(max(v, 0), 1) * 255).rounded())
            } } }
        }
        return Image(width: w, height: h, channels: c, pixels: px)
    }

    public static func encode(_ img: Image) -> Data {
        var out = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var ihdr = Data()
        ihdr.append(be32(UInt32(img.width)))
        ihdr.append(be32(UInt32(img.height)))
        ihdr.append(contentsOf: [8, img.channels == 1 ? 0 : 2, 0, 0, 0])  // depth 8, gray/RGB, deflate, filter 0, no interlace
        chunk("IHDR", ihdr, into: &out)
        let rowBytes = img.width * img.channels
        var raw = [UInt8]()
        raw.reserveCapacity((rowBytes + 1) * img.height)
        for y in 0..<img.height {
            raw.append(0)  // filter type None
            raw.append(contentsOf: img.pixels[(y * rowBytes)..<((y + 1) * rowBytes)])
        }
        chunk("IDAT", zlibCompress(raw), into: &out)
        chunk("IEND", Data(), into: &out)
        return out
    }

    public static func write(_ img: Image, to path: String) throws {
        try FileIO.writeAtomically(encode(img), to: path)
    }

    /// Decodes PNGs of the kind `encode` writes (8-bit gray or RGB, any of the five filters, no interlace),
    /// checking every chunk's CRC.
    public static func decode(_ data: Data, path: String = "<png>") throws -> Image {
        func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: "not a PNG this reader takes: \(why)") }
        let b = [UInt8](data)
        guard b.count >= 8, b[0..<8] == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else { throw fail("no PNG signature") }
        var pos = 8, width = 0, height = 0, channels = 0
        var idat = Data()
        while pos + 12 <= b.count {
            let len = Int(UInt32(b[pos]) << 24 | UInt32(b[pos + 1]) << 16 | UInt32(b[pos + 2]) << 8 | UInt32(b[pos + 3]))
            guard pos + 12 + len <= b.count else { throw fail("a chunk runs past the end") }
            let type = String(decoding: b[(pos + 4)..<(pos + 8)], as: UTF8.self)
            let body = Array(b[(pos + 8)..<(pos + 8 + len)])
            let crcStored = UInt32(b[pos + 8 + len]) << 24 | UInt32(b[pos + 9 + len]) << 16 | UInt32(b[pos + 10 + len]) << 8 | UInt32(b[pos + 11 + len])
            guard crc(Array(b[(pos + 4)..<(pos + 8 + len)])) == crcStored else { throw fail("bad CRC in \(type)") }
            switch type {
            case "IHDR":
                guard len == 13 else { throw fail("IHDR of \(len) bytes") }
                width = Int(UInt32(body[0]) << 24 | UInt32(body[1]) << 16 | UInt32(body[2]) << 8 | UInt32(body[3]))
                height = Int(UInt32(body[4]) << 24 | UInt32(body[5]) << 16 | UInt32(body[6]) << 8 | UInt32(body[7]))
                guard body[8] == 8, body[9] == 0 || body[9] == 2, body[12] == 0 else { throw fail("only 8-bit gray/RGB, not interlaced") }
                channels = body[9] == 0 ? 1 : 3
            case "IDAT": idat.append(contentsOf: body)
            case "IEND": pos = b.count; continue
            default: break
            }
            pos += 12 + len
        }
        guard width > 0, height > 0, width * height <= 1 << 26 else { throw fail("bad size \(width)x\(height)") }
        let raw = [UInt8](try zlibDecompress(idat, path: path, expected: (width * channels + 1) * height))
        let rowBytes = width * channels, bpp = channels
        guard raw.count == (rowBytes + 1) * height else { throw fail("image data of \(raw.count) bytes") }
        var px = [UInt8](repeating: 0, count: rowBytes * height)
        for y in 0..<height {
            let f = raw[y * (rowBytes + 1)]
            for x in 0..<rowBytes {
                let v = raw[y * (rowBytes + 1) + 1 + x]
                let a = x >= bpp ? Int(px[y * rowBytes + x - bpp]) : 0
                let up = y > 0 ? Int(px[(y - 1) * rowBytes + x]) : 0
                let c = (x >= bpp && y > 0) ? Int(px[(y - 1) * rowBytes + x - bpp]) : 0
                let pred: Int
                switch f {
                case 0: pred = 0
                case 1: pred = a
                case 2: pred = up
                case 3: pred = (a + up) / 2
                case 4:
                    let p = a + up - c, pa = abs(p - a), pb = abs(p - up), pc = abs(p - c)
                    pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? up : c)
                default: throw fail("unknown filter \(f)")
                }
                px[y * rowBytes + x] = UInt8((Int(v) + pred) & 0xFF)
            }
        }
        return Image(width: width, height: height, channels: channels, pixels: px)
    }

    // MARK: zlib

    static func crc(_ bytes: [UInt8]) -> UInt32 {
        UInt32(bytes.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) })
    }

    private static func be32(_ v: UInt32) -> Data { withUnsafeBytes(of: v.bigEndian) { Data($0) } }

    private static func chunk(_ type: String, _ body: Data, into out: inout Data) {
        out.append(be32(UInt32(body.count)))
        let typed = Array(type.utf8) + [UInt8](body)
        out.append(contentsOf: typed)
        out.append(be32(crc(typed)))
    }

    static func zlibCompress(_ raw: [UInt8]) -> Data {
        var size = compressBound(uLong(raw.count))
        var out = [UInt8](repeating: 0, count: Int(size))
        let status = out.withUnsafeMutableBufferPointer { o in
            raw.withUnsafeBufferPointer { i in compress2(o.baseAddress, &size, i.baseAddress, uLong(raw.count), 9) }
        }
        precondition(status == Z_OK, "zlib compress2 failed (\(status))")
        return Data(out.prefix(Int(size)))
    }

    static func zlibDecompress(_ data: Data, path: String, expected: Int) throws -> Data {
        var size = uLong(expected)
        var out = [UInt8](repeating: 0, count: max(expected, 1))
        let input = [UInt8](data)
        let status = out.withUnsafeMutableBufferPointer { o in
            input.withUnsafeBufferPointer { i in uncompress(o.baseAddress, &size, i.baseAddress, uLong(input.count)) }
        }
        guard status == Z_OK else { throw AdvKitError.invalidFile(path: path, reason: "corrupt PNG image data (zlib \(status))") }
        return Data(out.prefix(Int(size)))
    }
}
