import CImageIO
import Foundation

/// PNG and JPEG files decoded by libpng and libjpeg-turbo (through the CImageIO shim, which turns the libraries'
/// longjmp errors into return codes): a damaged file is a thrown `AdvKitError` naming it, never an abort.
public enum ImageDecoding {
    /// A decoded image: rows top to bottom, channels interleaved.
    public struct Image: Equatable {
        public var width: Int, height: Int
        /// 1 (gray) or 3 (RGB). Alpha is dropped and palettes expanded, as Pillow's convert("RGB") does.
        public var channels: Int
        /// 8, or 16 for 16-bit PNGs.
        public var depth: Int
        /// height × width × channels samples in 0...(2^depth − 1).
        public var samples: [UInt16]

        /// The largest sample value: 255 or 65535.
        public var maxValue: Float { depth == 16 ? 65535 : 255 }
    }

    public enum Format: String { case png = "PNG", jpeg = "JPEG" }

    /// Pictures larger than this many pixels are refused before any memory is set aside for them.
    public static let defaultMaxPixels = 1 << 26

    /// The format from the first bytes, nil when neither.
    public static func sniff(_ data: Data) -> Format? {
        let f = data.withUnsafeBytes { cio_sniff($0.bindMemory(to: UInt8.self).baseAddress, $0.count) }
        return f == Int32(CIO_FORMAT_PNG) ? .png : (f == Int32(CIO_FORMAT_JPEG) ? .jpeg : nil)
    }

    /// Decodes a PNG or JPEG file.
    public static func read(_ path: String, maxPixels: Int = defaultMaxPixels) throws -> Image {
        try decode(try FileIO.read(path, limit: 1 << 30), path: path, maxPixels: maxPixels)
    }

    /// Decodes PNG or JPEG bytes; `path` names the source in errors.
    public static func decode(_ data: Data, path: String = "<image>", maxPixels: Int = defaultMaxPixels) throws -> Image {
        guard let format = sniff(data) else {
            let head = data.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")
            throw AdvKitError.invalidFile(path: path, reason: "not a PNG or JPEG file (it starts \(head.isEmpty ? "empty" : head))")
        }
        var err = [CChar](repeating: 0, count: 256)
        func fail() -> AdvKitError {
            let msg = err.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            return .invalidFile(path: path, reason: "not a valid \(format.rawValue): \(msg.isEmpty ? "the decoder failed" : msg)")
        }
        return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let p = raw.bindMemory(to: UInt8.self).baseAddress, n = raw.count
            var info = cio_info()
            guard cio_read_info(&info, &err, err.count, p, n, maxPixels) == 0 else { throw fail() }
            let (w, h, c, depth) = (Int(info.width), Int(info.height), Int(info.channels), Int(info.depth))
            let count = w * h * c, bytes = count * depth / 8
            var buffer = [UInt8](repeating: 0, count: bytes)
            let status = buffer.withUnsafeMutableBufferPointer { out in
                cio_decode(out.baseAddress, bytes, &err, err.count, p, n, maxPixels)
            }
            guard status == 0 else { throw fail() }
            var samples = [UInt16](repeating: 0, count: count)
            if depth == 8 {
                for i in 0..<count { samples[i] = UInt16(buffer[i]) }
            } else {
                buffer.withUnsafeBytes { b in for i in 0..<count { samples[i] = b.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self) } }
            }
            return Image(width: w, height: h, channels: c, depth: depth, samples: samples)
        }
    }
}
