@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

final class SHA256Tests: XCTestCase {
    /// FIPS 180-4's examples (NIST CSRC "SHA256.pdf", "SHA256-2B.pdf") and the empty message.
    func testStandardVectors() {
        XCTAssertEqual(SHA256.hex(of: Data("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex(of: Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // 56 bytes: the padding spills into a second block.
        XCTAssertEqual(SHA256.hex(of: Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256.hex(of: Data(repeating: UInt8(ascii: "a"), count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// The file, read in 1 MiB chunks, hashes to what the whole bytes hash to (a size that is no multiple of
    /// 64 or of the chunk), and the lengths around a block's padding boundary agree with the one-shot path.
    func testAFileHashesLikeItsBytes() throws {
        var rng = SeededGenerator(seed: 7)
        let bytes = Data((0..<(3 << 20) + 17).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        let path = temporaryDirectory() + "/blob.bin"
        try bytes.write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(try SHA256.hex(ofFile: path), SHA256.hex(of: bytes))
        XCTAssertEqual(try SHA256.hex(ofFile: path, chunkSize: 100_003), SHA256.hex(of: bytes))
        let small = bytes.prefix(10_007), smallPath = path + ".small"
        try small.write(to: URL(fileURLWithPath: smallPath))
        for chunk in [1, 63, 65, 200] {
            XCTAssertEqual(try SHA256.hex(ofFile: smallPath, chunkSize: chunk), SHA256.hex(of: small), "chunks of \(chunk) bytes")
        }
        XCTAssertEqual(SHA256.hex(of: bytes).count, 64)
        XCTAssertNotEqual(SHA256.hex(of: bytes.prefix(55)), SHA256.hex(of: bytes.prefix(56)))
        XCTAssertThrowsError(try SHA256.hex(ofFile: path + ".missing")) {
            XCTAssertEqual($0 as? AdvKitError, .io(path: path + ".missing", reason: "no such file"))
        }
    }
}
