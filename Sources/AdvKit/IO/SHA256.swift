import Foundation

/// SHA-256 (FIPS 180-4), in plain Swift: CryptoKit is not on Linux. Used to fingerprint model files in an
/// evaluation's results.json and by the command line.
///
/// 512-bit blocks; per block the message schedule W[0..<64] (W[t] = σ1(W[t−2]) + W[t−7] + σ0(W[t−15]) + W[t−16]),
/// then 64 rounds over (a, …, h) with T1 = h + Σ1(e) + Ch(e, f, g) + K[t] + W[t], T2 = Σ0(a) + Maj(a, b, c).
/// The message is padded with 0x80, zeros, and its length in bits as a big-endian 64-bit number.
public enum SHA256 {
    /// The lowercase hex digest of `data`.
    public static func hex(of data: Data) -> String {
        var h = Hasher()
        h.update(data)
        return h.finalizeHex()
    }

    /// The lowercase hex digest of the file at `path`, read in 1 MiB chunks (a model file is not loaded whole).
    public static func hex(ofFile path: String) throws -> String { try hex(ofFile: path, chunkSize: 1 << 20) }

    /// `hex(ofFile:)` with another chunk size (tests use odd sizes, so blocks straddle the chunks).
    @_spi(Testing) public static func hex(ofFile path: String, chunkSize: Int) throws -> String {
        precondition(chunkSize >= 1, "chunkSize must be >= 1, got \(chunkSize)")
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw AdvKitError.io(path: path, reason: "no such file")
        }
        if isDir.boolValue { throw AdvKitError.io(path: path, reason: "is a directory, not a file") }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw AdvKitError.io(path: path, reason: "cannot open for reading (permissions?)")
        }
        defer { try? handle.close() }
        var h = Hasher()
        do {
            while let chunk = try handle.read(upToCount: chunkSize), !chunk.isEmpty { h.update(chunk) }
        } catch {
            throw AdvKitError.io(path: path, reason: "read failed: \(error.localizedDescription)")
        }
        return h.finalizeHex()
    }

    /// The incremental state: feed bytes with `update`, then `finalizeHex` once.
    struct Hasher {
        private var state: [UInt32] = [0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a,
                                       0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19]
        /// Bytes not yet forming a whole 64-byte block.
        private var pending: [UInt8] = []
        private var length: UInt64 = 0
        private var w = [UInt32](repeating: 0, count: 64)

        mutating func update(_ data: Data) {
            data.withUnsafeBytes { update(UnsafeRawBufferPointer($0)) }
        }

        mutating func update(_ bytes: UnsafeRawBufferPointer) {
            length &+= UInt64(bytes.count)
            var i = 0
            if !pending.isEmpty {
                let take = min(64 - pending.count, bytes.count)
                pending.append(contentsOf: bytes[0..<take])
                i = take
                if pending.count == 64 {
                    let block = pending
                    block.withUnsafeBytes { compress($0) }
                    pending.removeAll(keepingCapacity: true)
                }
            }
            while i + 64 <= bytes.count {
                compress(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + 64)]))
                i += 64
            }
            if i < bytes.count { pending.append(contentsOf: bytes[i...]) }
        }

        mutating func finalizeHex() -> String {
            let bits = length &* 8
            var tail = pending
            tail.append(0x80)
            while tail.count % 64 != 56 { tail.append(0) }
            for shift in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
            tail.withUnsafeBytes { p in
                for start in stride(from: 0, to: p.count, by: 64) { compress(UnsafeRawBufferPointer(rebasing: p[start..<(start + 64)])) }
            }
            pending.removeAll()
            return state.map { word in
                let s = String(word, radix: 16)
                return String(repeating: "0", count: 8 - s.count) + s
            }.joined()
        }

        private static let k: [UInt32] = [
            0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
            0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
            0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
            0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
            0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
            0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
            0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
            0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
        ]

        @inline(__always) private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

        /// One 64-byte block into the state.
        private mutating func compress(_ block: UnsafeRawBufferPointer) {
            for t in 0..<16 {
                let b = 4 * t
                w[t] = UInt32(block[b]) << 24 | UInt32(block[b + 1]) << 16 | UInt32(block[b + 2]) << 8 | UInt32(block[b + 3])
            }
            for t in 16..<64 {
                let s0 = Hasher.rotr(w[t - 15], 7) ^ Hasher.rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
                let s1 = Hasher.rotr(w[t - 2], 17) ^ Hasher.rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
                w[t] = s1 &+ w[t - 7] &+ s0 &+ w[t - 16]
            }
            var (a, b, c, d, e, f, g, h) = (state[0], state[1], state[2], state[3], state[4], state[5], state[6], state[7])
            for t in 0..<64 {
                let sum1 = Hasher.rotr(e, 6) ^ Hasher.rotr(e, 11) ^ Hasher.rotr(e, 25)
                let ch = (e & f) ^ (~e & g)
                let t1 = h &+ sum1 &+ ch &+ Hasher.k[t] &+ w[t]
                let sum0 = Hasher.rotr(a, 2) ^ Hasher.rotr(a, 13) ^ Hasher.rotr(a, 22)
                let maj = (a & b) ^ (a & c) ^ (b & c)
                let t2 = sum0 &+ maj
                (h, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
            }
            state[0] &+= a; state[1] &+= b; state[2] &+= c; state[3] &+= d
            state[4] &+= e; state[5] &+= f; state[6] &+= g; state[7] &+= h
        }
    }
}
