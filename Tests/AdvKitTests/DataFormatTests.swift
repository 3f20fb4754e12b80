@_spi(Support) import AdvKit
import AdvKitTestSupport
import XCTest

/// Bring your own data: NumPy .npy/.npz, PNG and JPEG folders (libpng, libjpeg-turbo), the 8-bit grid. The
/// fixtures in Tests/Fixtures/data were written by NumPy and Pillow (scripts/data/make_fixtures.py): the first 64
/// Fashion-MNIST test images in several forms, image kinds with the pixels Pillow decodes, and hostile files.
final class DataFormatTests: XCTestCase {
    private let fixtures = RepositoryPaths.root + "/Tests/Fixtures/data"

    private func assertThrows(_ expression: @autoclosure () throws -> Any, containing texts: String...,
                              file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try expression()
            XCTFail("no error; wanted one containing \(texts)", file: file, line: line)
        } catch {
            for text in texts {
                XCTAssertTrue("\(error)".contains(text), "error \"\(error)\" does not contain \"\(text)\"", file: file, line: line)
            }
        }
    }

    /// The 64 reference images, 0...255, (64, 28, 28).
    private func reference() throws -> NumPy.Array { try NumPy.read(fixtures + "/uint8_nhw.npy") }

    private func referenceLabels() throws -> [Int32] { try NumPy.read(fixtures + "/labels.npy").values.map { Int32($0) } }

    private func data(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    // MARK: - .npy

    func testNumPyReadsEveryDtypeAndOrderNumPyWrote() throws {
        let u8 = try reference()
        XCTAssertEqual(u8.type, .uint8)
        XCTAssertEqual(u8.shape, [64, 28, 28])
        let want = u8.values.map { $0 / 255 }  // NumPy's float32(x) / 255 is the same correctly rounded division
        let f32 = try NumPy.read(fixtures + "/float32_nhwc.npy")
        XCTAssertEqual(f32.shape, [64, 28, 28, 1])
        XCTAssertEqual(f32.values, want)
        let first8 = Array(want.prefix(8 * 784))
        let f64 = try NumPy.read(fixtures + "/float64_nchw8.npy")
        XCTAssertEqual(f64.type, .float64)
        XCTAssertEqual(f64.shape, [8, 1, 28, 28])
        XCTAssertEqual(f64.values, first8, "float64 of a float32 value converts back exactly")
        XCTAssertEqual(try NumPy.read(fixtures + "/fortran_nhw8.npy").values, first8, "Fortran order is put in C order")
        XCTAssertEqual(try NumPy.read(fixtures + "/bigendian_nhw8.npy").values, first8, "big-endian bytes are swapped")
        // float16 keeps 11 significant bits: |x - half(x)| <= 2^-12 for x in [0, 1].
        assertClose(try NumPy.read(fixtures + "/float16_nhw8.npy").values, first8, atol: 0x1p-12, rtol: 0, "float16")
        XCTAssertEqual(try NumPy.read(fixtures + "/labels.npy").type, .int64)
    }

    func testNumPyEncodesAsNumPyDoesAndRoundTripsEveryType() throws {
        // Byte for byte what np.save wrote (version 1.0 header padded to 64 bytes).
        let u8 = try reference()
        XCTAssertEqual(NumPy.encode(u8), try data(fixtures + "/uint8_nhw.npy"))
        let f32 = try NumPy.read(fixtures + "/float32_nhwc.npy")
        XCTAssertEqual(NumPy.encode(f32), try data(fixtures + "/float32_nhwc.npy"))
        for type in NumPy.ElementType.allCases {
            var values: [Float] = [0, 1, 2, 100, 3, 7]
            if type.isFloatingPoint { values += [0.5, 0.25] } else { values += [5, 6] }
            if type == .bool { values = values.map { $0 == 0 ? 0 : 1 } }
            if [.int8, .int16, .int32, .int64].contains(type) || type.isFloatingPoint { values[5] = -7 }
            let a = NumPy.Array(type: type, shape: [2, 4], values: values)
            let bytes = NumPy.encode(a)
            XCTAssertEqual((10 + Int(bytes[8]) + Int(bytes[9]) << 8) % 64, 0, "\(type): the data starts on a 64-byte boundary")
            XCTAssertEqual(try NumPy.parse(bytes), a, "\(type)")
        }
        let scalar = NumPy.Array(type: .float32, shape: [], values: [0.5])
        XCTAssertEqual(try NumPy.parse(NumPy.encode(scalar)), scalar)
        XCTAssertEqual(NumPy.halfToFloat(NumPy.halfBits(65504)), 65504)
        XCTAssertTrue(NumPy.halfToFloat(NumPy.halfBits(.nan)).isNaN)
        XCTAssertEqual(NumPy.halfToFloat(0x0001), 0x1p-24, "the smallest subnormal")
    }

    /// A .npy with `header` as its dict literal and `body` as data.
    private func npy(_ header: String, _ body: [UInt8] = [], major: UInt8 = 1) -> Data {
        var d = Data([0x93] + Array("NUMPY".utf8) + [major, 0])
        let h = Array(header.utf8)
        if major == 1 { d.append(contentsOf: [UInt8(h.count & 0xFF), UInt8(h.count >> 8)]) } else {
            d.append(contentsOf: [UInt8(h.count & 0xFF), UInt8(h.count >> 8), 0, 0])
        }
        return d + h + body
    }

    func testHostileNumPyFilesGiveClearErrors() throws {
        let bad = fixtures + "/hostile"
        assertThrows(try NumPy.read(bad + "/pickled.npy"), containing: "pickled.npy", "dtype '|O' holds Python objects", "never unpickles")
        assertThrows(try NumPy.read(bad + "/lying_header.npy"), containing: "lying_header.npy",
                     "truncated: shape (64, 28, 28) of uint8 needs 50176 bytes of data, the file has 784")
        assertThrows(try NumPy.parse(Data([0x93, 0x4E]), path: "a.npy"), containing: "a.npy", "shorter than the 10-byte preamble")
        assertThrows(try NumPy.parse(Data(Array("PK\u{3}\u{4}-not-numpy".utf8))), containing: "zip archive")
        assertThrows(try NumPy.parse(npy("{}", major: 9)), containing: "format version 9.0")
        var long = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", [0, 0, 128, 63])
        long[8] = 0xFF; long[9] = 0x00
        assertThrows(try NumPy.parse(long), containing: "header length 255 runs past the end of the file")
        assertThrows(try NumPy.parse(npy("{}", major: 2).prefix(10) + Data([0xFF, 0xFF, 0xFF, 0x7F])), containing: "exceeds numpy's limit")
        let cases: [(String, [UInt8], String)] = [
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", [0, 0, 128, 63, 1], "1 bytes of trailing data"),
            ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", [], "a structured array"),
            ("{'descr': '<U5', 'fortran_order': False, 'shape': (1,), }", [], "dtype '<U5' (strings)"),
            ("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", [], "complex numbers"),
            ("{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (1,), }", [], "dates or times"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", [], "not a non-negative integer"),
            ("{'descr': '<f4', 'shape': (1,), }", [], "want exactly descr, fortran_order and shape"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", [], "want exactly descr"),
            ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", [], "names 'descr' twice"),
            ("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }", [], "fortran_order is not True or False"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", [], "holds too many elements"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } trailing", [], "unexpected text after"),
            ("{'descr': '<f4 ", [], "ends inside a string"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", [], "ends inside a literal"),
            ("{'descr': '<f\\4', 'fortran_order': False, 'shape': (1,), }", [], "backslash"),
            ("[1, 2]", [], "not a dict literal"),
            ("{'shape': " + String(repeating: "(", count: 5000), [], "nests literals more than 16 deep"),
        ]
        for (header, body, message) in cases {
            assertThrows(try NumPy.parse(npy(header, body), path: "h.npy"), containing: "h.npy: not a valid .npy file", message)
        }
        // Every prefix of a valid file is an error, never a crash or a wrong array.
        let whole = NumPy.encode(NumPy.Array(type: .float32, shape: [2, 3], values: [0, 0.1, 0.2, 0.3, 0.4, 0.5]))
        for n in 0..<whole.count { XCTAssertThrowsError(try NumPy.parse(whole.prefix(n)), "prefix \(n)") }
        // Any changed byte: an array or an error.
        for i in 0..<whole.count { for v: UInt8 in [0, 0x28, 0x7F, 0xFF] {
            var d = whole
            d[i] = v
            if let a = try? NumPy.parse(d) { XCTAssertEqual(a.values.count, a.shape.reduce(1, *)) }
        } }
    }

    func testImagesFromArraysAreCheckedAndLaidOut() throws {
        let dir = temporaryDirectory()
        func write(_ a: NumPy.Array) throws -> String {
            let p = dir + "/a\(UInt32.random(in: 0...UInt32.max)).npy"
            try NumPy.write(a, to: p)
            return p
        }
        // (N, H, W, C) and (N, C, H, W) give the same images.
        let chw: [Float] = (0..<(2 * 3 * 4 * 5)).map { Float($0 % 256) }
        var hwc = [Float](repeating: 0, count: chw.count)
        for n in 0..<2 { for c in 0..<3 { for y in 0..<4 { for x in 0..<5 {
            hwc[((n * 4 + y) * 5 + x) * 3 + c] = chw[((n * 3 + c) * 4 + y) * 5 + x]
        } } } }
        let a = try Dataset.load(images: try write(NumPy.Array(type: .uint8, shape: [2, 3, 4, 5], values: chw)))
        let b = try Dataset.load(images: try write(NumPy.Array(type: .uint8, shape: [2, 4, 5, 3], values: hwc)))
        XCTAssertEqual(a.source.layout, .nchw)
        XCTAssertEqual(b.source.layout, .nhwc)
        XCTAssertEqual(a.images.shape, [2, 3, 4, 5])
        XCTAssertEqual(a.images, b.images)
        XCTAssertNil(a.labels, "no labels: none invented")
        // Both places could hold the channels: the model's shape decides, else a clear error.
        let both = try write(NumPy.Array(type: .uint8, shape: [1, 3, 2, 3], values: [Float](repeating: 7, count: 18)))
        assertThrows(try Dataset.load(images: both), containing: "(1, 3, 2, 3) could be N,C,H,W or N,H,W,C", "--data-layout")
        XCTAssertEqual(try Dataset.load(images: both, options: ImageLoadOptions(imageShape: [3, 3, 2])).source.layout, .nhwc)
        XCTAssertEqual(try Dataset.load(images: both, options: ImageLoadOptions(layout: .nchw)).images.shape, [1, 3, 2, 3])
        // Flat rows when the model's shape says what they hold; channels converted to the model's.
        let flat = try write(NumPy.Array(type: .float32, shape: [2, 12], values: (0..<24).map { Float($0) / 24 }))
        XCTAssertEqual(try Dataset.load(images: flat, options: ImageLoadOptions(imageShape: [3, 2, 2])).images.shape, [2, 3, 2, 2])
        assertThrows(try Dataset.load(images: flat), containing: "a 2-dimensional array (2, 12)")
        let gray = try Dataset.load(images: try write(NumPy.Array(type: .uint8, shape: [1, 2, 2], values: [0, 51, 102, 255])),
                                    options: ImageLoadOptions(imageShape: [3, 2, 2]))
        XCTAssertEqual(gray.images.scalars, [0, 0.2, 0.4, 1, 0, 0.2, 0.4, 1, 0, 0.2, 0.4, 1], "gray repeated into R, G, B")
        // Values: NaN, infinities, floats outside [0, 1] (with a hint for 0-255 floats), integers past 255, bools.
        assertThrows(try Dataset.load(images: try write(NumPy.Array(type: .float32, shape: [2, 1, 2], values: [0, 0.5, .nan, 0]))),
                     containing: "image 1 has a pixel that is NaN")
        assertThrows(try Dataset.load(images: try write(NumPy.Array(type: .float64, shape: [1, 1, 2], values: [0, .infinity]))),
                     containing: "a pixel that is infinite")
        assertThrows(try Dataset.load(images: try write(NumPy.Array(type: .float32, shape: [1, 1, 2], values: [0, 200]))),
                     containing: "pixel that is 200.0: float images must lie in [0, 1] (0-255 values? divide by 255, or save as uint8)")
        assertThrows(try Dataset.load(images: try write(NumPy.Array(type: .int16, shape: [1, 1, 2], values: [0, 300]))),
                     containing: "the pixel value 300: integer images must lie in 0...255")
        assertThrows(try Dataset.load(images: try write(NumPy.Array(type: .bool, shape: [1, 1, 2], values: [0, 1]))), containing: "a bool array")
        assertThrows(try Dataset.load(images: try write(NumPy.Array(type: .uint8, shape: [1, 1, 1, 1, 1], values: [0]))),
                     containing: "a 5-dimensional array")
        assertThrows(try Dataset.load(images: try write(NumPy.Array(type: .uint8, shape: [1, 4, 4, 4], values: [Float](repeating: 0, count: 64)))),
                     containing: "no channel axis of 1 or 3")
    }

    func testLabelsFromArraysAndTheirErrors() throws {
        let dir = temporaryDirectory()
        let want = try referenceLabels()
        let u8 = fixtures + "/uint8_nhw.npy"
        XCTAssertEqual(try Dataset.load(images: u8, labels: fixtures + "/labels.npy").labels, want)
        XCTAssertEqual(try Dataset.load(images: u8, labels: fixtures + "/onehot.npy").labels, want, "one-hot rows")
        try NumPy.write(NumPy.Array(type: .float32, shape: [64, 1], values: want.map(Float.init)), to: dir + "/col.npy")
        XCTAssertEqual(try Dataset.load(images: u8, labels: dir + "/col.npy").labels, want, "(N, 1) floats")
        try IDX.writeLabels(want, to: dir + "/y.idx")
        XCTAssertEqual(try Dataset.load(images: u8, labels: dir + "/y.idx").labels, want, "IDX labels")
        XCTAssertEqual(try Dataset.load(images: u8, labels: dir + "/y.idx", options: ImageLoadOptions(limit: 5)).labels, Array(want.prefix(5)))
        try NumPy.write(NumPy.Array(type: .int64, shape: [3], values: [0, 1, 2]), to: dir + "/short.npy")
        assertThrows(try Dataset.load(images: u8, labels: dir + "/short.npy"), containing: "short.npy has 3 labels for the 64 images")
        try NumPy.write(NumPy.Array(type: .float32, shape: [2], values: [0, 1.5]), to: dir + "/frac.npy")
        assertThrows(try Dataset.load(images: u8, labels: dir + "/frac.npy"), containing: "frac.npy: label 1 is 1.5, not a class index")
        try NumPy.write(NumPy.Array(type: .float32, shape: [2, 2], values: [0.5, 0.5, 1, 0]), to: dir + "/soft.npy")
        assertThrows(try Dataset.load(images: u8, labels: dir + "/soft.npy"), containing: "row 0 is not one-hot")
        let loaded = try Dataset.load(images: u8, labels: fixtures + "/labels.npy")
        let d = try loaded.dataset(defaultClassNames: Dataset.fashionMNISTClasses)
        XCTAssertEqual(d.classNames, Dataset.fashionMNISTClasses)
        XCTAssertEqual(d.source?.format, .npy)
        assertThrows(try Dataset.load(images: u8).dataset(defaultClassNames: []), containing: "has no labels")
    }

    // MARK: - .npz

    func testNPZStoredAndDeflatedMembers() throws {
        let u8 = try reference(), labels = try referenceLabels()
        let stored = try NPZ.Archive(contentsOf: fixtures + "/stored.npz")
        XCTAssertEqual(stored.keys, ["x", "y"])
        XCTAssertEqual(try stored.array("x"), u8)
        XCTAssertEqual(try stored.array("y").values.map { Int32($0) }, labels)
        let deflated = try Dataset.load(images: fixtures + "/deflated.npz")
        XCTAssertEqual(deflated.images.scalars, u8.values.map { $0 / 255 }, "x_test, deflated")
        XCTAssertEqual(deflated.labels, labels, "y_test from the same file")
        XCTAssertEqual(deflated.source.labels, fixtures + "/deflated.npz ['y_test']")
        assertThrows(try Dataset.load(images: fixtures + "/deflated.npz", options: ImageLoadOptions(imagesKey: "x")),
                     containing: "has no array 'x' for the images (it has 'x_test', 'y_test')")
        let dir = temporaryDirectory()
        try NPZ.write([("foo", u8)], to: dir + "/foo.npz")
        assertThrows(try Dataset.load(images: dir + "/foo.npz"), containing: "foo.npz: has none of the usual images keys (x, images, x_test",
                     "it has 'foo': name the images array (--npz-images KEY)")
        XCTAssertEqual(try Dataset.load(images: dir + "/foo.npz", options: ImageLoadOptions(imagesKey: "foo")).images.shape, [64, 1, 28, 28])
        // AdvKit's own writer, both ways, read back.
        let arrays: [(key: String, array: NumPy.Array)] = [("images", NumPy.Array(type: .uint8, shape: [2, 2, 2], values: [0, 1, 2, 3, 4, 5, 6, 255])),
                                                           ("labels", NumPy.Array(type: .int64, shape: [2], values: [1, 0]))]
        for compressed in [false, true] {
            let back = try NPZ.parse(NPZ.encode(arrays, compressed: compressed))
            XCTAssertEqual(back.map(\.key), ["images", "labels"])
            XCTAssertEqual(back.map(\.array), arrays.map(\.array))
        }
    }

    func testHostileNPZFilesGiveClearErrors() throws {
        let arrays: [(key: String, array: NumPy.Array)] = [("x", NumPy.Array(type: .float32, shape: [4], values: [0, 0.25, 0.5, 1]))]
        let stored = NPZ.encode(arrays), deflated = NPZ.encode(arrays, compressed: true)
        func archive(_ d: Data) throws -> [(key: String, array: NumPy.Array)] { try NPZ.parse(d, path: "z.npz") }
        // A damaged byte of member data: the CRC says so.
        var flipped = stored
        flipped[30 + 5 + 130] ^= 0x01
        assertThrows(try archive(flipped), containing: "z.npz", "member x.npy: CRC-32 mismatch")
        // Every prefix is an error (no end record, or offsets past it), never a crash.
        for d in [stored, deflated] { for n in 0..<d.count { XCTAssertThrowsError(try archive(d.prefix(n)), "prefix \(n)") } }
        assertThrows(try archive(stored.prefix(stored.count - 1)), containing: "no end of central directory record")
        // Offsets and sizes that lie. Central directory entry at cd; fields at fixed places (APPNOTE 4.3.12).
        let cd = stored.count - 22 - (46 + 5)
        func patched(_ d: Data, _ offset: Int, _ value: UInt32) -> Data {
            var d = d
            for k in 0..<4 { d[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
            return d
        }
        assertThrows(try archive(patched(stored, cd + 42, 5)), containing: "no local header at offset 5")
        assertThrows(try archive(patched(stored, cd + 42, 1_000_000)), containing: "local header offset 1000000 is outside")
        assertThrows(try archive(patched(patched(stored, cd + 20, 999), cd + 24, 999)), containing: "run into the central directory")
        assertThrows(try archive(patched(stored, cd + 20, 7)), containing: "is stored but its sizes differ")
        let dcd = deflated.count - 22 - (46 + 5)
        assertThrows(try archive(patched(deflated, dcd + 24, 0x7FFF_FFFF)), containing: "more than deflate can produce")
        assertThrows(try archive(patched(deflated, dcd + 24, 140)), containing: "inflates to more than the 140 bytes")
        var method = stored
        method[cd + 10] = 12
        assertThrows(try archive(method), containing: "compression method 12")
        var encrypted = stored
        encrypted[cd + 8] = 1
        assertThrows(try archive(encrypted), containing: "is encrypted")
        assertThrows(try archive(patched(stored, stored.count - 22 + 16, 2)), containing: "central directory entry 0 at offset 2 is missing or damaged")
        // Any changed byte: arrays or an error.
        for d in [stored, deflated] { for i in 0..<d.count { for v: UInt8 in [0, 0x7F, 0xFF] {
            var m = d
            m[i] = v
            _ = try? archive(m)
        } } }
    }

    // MARK: - PNG and JPEG

    private func pillowPixels() throws -> [String: [Int]] {
        try JSONSerialization.jsonObject(with: try data(fixtures + "/kinds/pixels.json")) as! [String: [Int]]
    }

    func testLibpngAndLibjpegDecodeAsPillowDoes() throws {
        let want = try pillowPixels()
        let kinds = fixtures + "/kinds/"
        for (name, channels) in [("rgb.png", 3), ("palette.png", 3), ("rgba.png", 3), ("gray.png", 1), ("rgb.jpg", 3),
                                 ("progressive.jpg", 3), ("gray.jpg", 1)] {
            let img = try ImageDecoding.read(kinds + name)
            XCTAssertEqual(img.channels, channels, name)
            XCTAssertEqual(img.depth, 8, name)
            // PNG is lossless; JPEG decoding is exact too, Pillow and Debian both using libjpeg-turbo's default
            // (islow) inverse DCT and fancy upsampling.
            XCTAssertEqual(img.samples.map(Int.init), want[name], name)
        }
        let g16 = try ImageDecoding.read(kinds + "gray16.png")
        XCTAssertEqual(g16.depth, 16)
        XCTAssertEqual(g16.samples.map(Int.init), want["gray16.png"], "16-bit gray, byte order handled")
        // RGB to gray as Pillow's convert("L"), exactly.
        let l = ImageConversion.planes(try ImageDecoding.read(kinds + "rgb.png"), channels: 1)
        XCTAssertEqual(l.map { Int(($0 * 255).rounded()) }, want["rgb.png L"])
        // Resizing: Pillow's BILINEAR (the same filter and support), within 1.5 8-bit steps: Pillow rounds its
        // horizontal pass to 8 bits before the vertical one, and its result again; AdvKit keeps floats.
        let rgb = ImageConversion.planes(try ImageDecoding.read(kinds + "rgb.png"), channels: 3)
        for (h, w) in [(12, 16), (40, 52)] {
            let r = ImageConversion.resize(rgb, channels: 3, height: 24, width: 32, toHeight: h, toWidth: w)
            var hwc = [Double](repeating: 0, count: r.count)
            for c in 0..<3 { for i in 0..<(h * w) { hwc[i * 3 + c] = Double(r[c * h * w + i]) * 255 } }
            assertClose(hwc.map(Float.init), want["rgb.png resized \(h)x\(w)"]!.map(Double.init), atol: 1.5, rtol: 0,
                        "resize to \(h)x\(w)")  // two roundings to 8 bits in Pillow
        }
    }

    func testCorruptImagesAreThrownErrorsNeverAborts() throws {
        let bad = fixtures + "/hostile/"
        assertThrows(try ImageDecoding.read(bad + "truncated.png"), containing: "truncated.png: not a valid PNG", "truncated")
        assertThrows(try ImageDecoding.read(bad + "truncated.jpg"), containing: "truncated.jpg: not a valid JPEG", "Premature end of JPEG file")
        assertThrows(try ImageDecoding.read(fixtures + "/kinds/cmyk.jpg"), containing: "cmyk.jpg", "a CMYK JPEG")
        assertThrows(try ImageDecoding.decode(Data("hello".utf8), path: "x.png"), containing: "x.png: not a PNG or JPEG file (it starts 68 65 6c 6c 6f)")
        assertThrows(try ImageDecoding.decode(Data(), path: "e.png"), containing: "it starts empty")
        // A bad CRC on the image data chunk.
        let png = PNG.encode(PNG.Image(width: 5, height: 4, channels: 3, pixels: (0..<60).map { UInt8($0 * 4) }))
        var crc = png
        crc[png.count - 12 - 1] ^= 0x10
        assertThrows(try ImageDecoding.decode(crc, path: "c.png"), containing: "c.png: not a valid PNG: IDAT: CRC error")
        // A header claiming a huge picture is refused before decoding.
        assertThrows(try ImageDecoding.decode(png, path: "p.png", maxPixels: 10), containing: "the image is 5x4, more than the 10 pixels allowed")
        // Every prefix of a PNG and a JPEG, and every byte changed: an image or an error, never an abort.
        let jpg = try data(fixtures + "/kinds/rgb.jpg")
        for file in [png, jpg] {
            for n in 0..<file.count { XCTAssertThrowsError(try ImageDecoding.decode(file.prefix(n)), "prefix \(n)") }
            for i in 0..<file.count { for v: UInt8 in [0, 0xFF] {
                var d = file
                d[i] = v
                if let img = try? ImageDecoding.decode(d) { XCTAssertEqual(img.samples.count, img.width * img.height * img.channels) }
            } }
        }
        XCTAssertEqual(try ImageDecoding.decode(png).samples.map { UInt8($0) }, (0..<60).map { UInt8($0 * 4) }, "the intact file decodes")
    }

    // MARK: - Image folders

    func testImageFolderIsTorchvisionsLayout() throws {
        let u8 = try reference(), labels = try referenceLabels()
        let png = fixtures + "/png"
        let loaded = try Dataset.load(images: png)
        let folders = ["0_T-shirt-top", "1_Trouser", "2_Pullover", "3_Dress", "4_Coat", "5_Sandal", "6_Shirt", "7_Sneaker", "8_Bag", "9_Ankle-boot"]
        XCTAssertEqual(loaded.classNames, folders)
        XCTAssertEqual(loaded.source.classFolders, folders)
        XCTAssertEqual(loaded.source.format, .imageFolder)
        XCTAssertEqual(loaded.source.layout, .nhw)
        XCTAssertEqual(loaded.images.shape, [64, 1, 28, 28])
        let names = try XCTUnwrap(loaded.imageNames)
        XCTAssertEqual(names.count, 64)
        XCTAssertEqual(names, names.sorted { ($0.split(separator: "/")[0], $0) < ($1.split(separator: "/")[0], $1) }, "class by class, sorted")
        // Each file is image i of the set (its name), with its label and its pixels.
        let x = loaded.images.scalars
        for (j, name) in names.enumerated() {
            let i = Int(name.split(separator: "/")[1].prefix(5))!
            XCTAssertEqual(loaded.labels?[j], labels[i], name)
            XCTAssertEqual(Array(x[(j * 784)..<((j + 1) * 784)]), u8.values[(i * 784)..<((i + 1) * 784)].map { $0 / 255 }, name)
        }
        // Class names given: the folders take their places in that list.
        let reversed = Array(folders.reversed())
        let byName = try Dataset.load(images: png, options: ImageLoadOptions(classNames: reversed))
        XCTAssertEqual(byName.labels, loaded.labels?.map { 9 - $0 })
        assertThrows(try Dataset.load(images: png, options: ImageLoadOptions(classNames: ["a", "b"])),
                     containing: "the class folder '0_T-shirt-top' is not one of the 2 class names given")
        XCTAssertEqual(try Dataset.load(images: png, options: ImageLoadOptions(limit: 3)).imageNames, Array(names.prefix(3)))
    }

    func testFlatFoldersChannelsSizesAndFolderErrors() throws {
        let dir = temporaryDirectory()
        func put(_ path: String, _ img: PNG.Image) throws {
            try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
            try PNG.encode(img).write(to: URL(fileURLWithPath: path))
        }
        let gray = PNG.Image(width: 4, height: 3, channels: 1, pixels: (0..<12).map { UInt8($0 * 20) })
        let rgb = PNG.Image(width: 4, height: 3, channels: 3, pixels: (0..<36).map { UInt8($0 * 7) })
        try put(dir + "/flat/b.png", rgb)
        try put(dir + "/flat/a.png", gray)
        try "not an image".write(toFile: dir + "/flat/notes.txt", atomically: true, encoding: .utf8)
        try put(dir + "/flat/.hidden.png", gray)
        let flat = try Dataset.load(images: dir + "/flat")
        XCTAssertEqual(flat.imageNames, ["a.png", "b.png"], "sorted; hidden and non-image files skipped")
        // Channel counts other than 1 and 3: a thrown error when asked for, the files' own channels when a model
        // has 4 (its shape check then names the mismatch), never a trap.
        XCTAssertThrowsError(try Dataset.load(images: dir + "/flat", options: ImageLoadOptions(channels: 4))) {
            XCTAssertTrue("\($0)".contains("1 (grayscale) or 3 (RGB) channels, not 4"), "\($0)")
        }
        XCTAssertEqual(try Dataset.load(images: dir + "/flat", options: ImageLoadOptions(imageShape: [4, 3, 4])).images.shape[1], 3)
        XCTAssertNil(flat.labels)
        XCTAssertNil(flat.source.classFolders)
        XCTAssertEqual(flat.images.shape, [2, 3, 3, 4], "one RGB file: RGB, the gray one repeated")
        XCTAssertEqual(Array(flat.images.scalars[0..<12]), Array(flat.images.scalars[12..<24]))
        XCTAssertEqual(flat.source.layout, .nhwc)
        XCTAssertEqual(try Dataset.load(images: dir + "/flat", options: ImageLoadOptions(channels: 1)).images.shape, [2, 1, 3, 4])
        // Labels for a flat folder come in the sorted order of its files.
        try NumPy.write(NumPy.Array(type: .int64, shape: [2], values: [1, 0]), to: dir + "/y.npy")
        XCTAssertEqual(try Dataset.load(images: dir + "/flat", labels: dir + "/y.npy").labels, [1, 0])
        // Mixed sizes: the odd file named; --resize makes one size.
        try put(dir + "/mixed/cat/a.png", gray)
        try put(dir + "/mixed/dog/b.png", PNG.Image(width: 5, height: 3, channels: 1, pixels: [UInt8](repeating: 9, count: 15)))
        assertThrows(try Dataset.load(images: dir + "/mixed"), containing: "mixed/dog/b.png: is 5x3 (width x height) but cat/a.png, the first image of the folder, is 4x3")
        assertThrows(try Dataset.load(images: fixtures + "/hostile/mixed_sizes"), containing: "mixed_sizes/b.png: is 32x30")
        let resized = try Dataset.load(images: dir + "/mixed", options: ImageLoadOptions(resize: (height: 6, width: 8)))
        XCTAssertEqual(resized.images.shape, [2, 1, 6, 8])
        XCTAssertEqual(resized.labels, [0, 1])
        XCTAssertEqual(resized.classNames, ["cat", "dog"])
        // A corrupt file among good ones: the error names it.
        try FileManager.default.copyItem(atPath: fixtures + "/hostile/truncated.png", toPath: dir + "/mixed/cat/z.png")
        assertThrows(try Dataset.load(images: dir + "/mixed"), containing: "mixed/cat/z.png: not a valid PNG")
        // Images beside class folders, empty folders, missing folders.
        try put(dir + "/stray/a.png", gray)
        try put(dir + "/stray/cls/b.png", gray)
        assertThrows(try Dataset.load(images: dir + "/stray"), containing: "has image files (a.png) beside class subfolders (cls)")
        try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: true)
        assertThrows(try Dataset.load(images: dir + "/empty"), containing: "has no PNG or JPEG files")
        assertThrows(try Dataset.load(images: dir + "/nothing-here"), containing: "no such file or folder")
        // Class folders keep their place even when one is empty (so the labels keep their meaning).
        try FileManager.default.createDirectory(atPath: dir + "/mixed/bird", withIntermediateDirectories: true)
        try FileManager.default.removeItem(atPath: dir + "/mixed/cat/z.png")
        let withEmpty = try Dataset.load(images: dir + "/mixed", options: ImageLoadOptions(resize: (height: 3, width: 4)))
        XCTAssertEqual(withEmpty.classNames, ["bird", "cat", "dog"])
        XCTAssertEqual(withEmpty.labels, [1, 2])
    }

    func testJPEGFolderAndWrittenPNGsReadBackExactly() throws {
        let dir = temporaryDirectory()
        for name in ["rgb.jpg", "progressive.jpg"] {
            try FileManager.default.createDirectory(atPath: dir + "/in/c", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: fixtures + "/kinds/" + name, toPath: dir + "/in/c/" + name)
        }
        let loaded = try Dataset.load(images: dir + "/in")
        XCTAssertEqual(loaded.images.shape, [2, 3, 24, 32])
        try ImageFolder.write(loaded.images, names: loaded.imageNames!, to: dir + "/out", emptyFolders: ["empty"])
        let back = try Dataset.load(images: dir + "/out")
        XCTAssertEqual(back.imageNames, ["c/progressive.png", "c/rgb.png"])
        XCTAssertEqual(back.classNames, ["c", "empty"])
        XCTAssertEqual(back.images, loaded.images, "8-bit images written as PNG read back bit for bit")
        assertThrows(try ImageFolder.write(loaded.images, names: ["../x.png", "y.png"], to: dir + "/out2"), containing: "not a plain relative path")
    }

    // MARK: - The 8-bit grid

    func testEightBitRoundingStaysOnTheGridInTheBallAndTheBounds() throws {
        var rng = SeededGenerator(seed: 3, stream: 1)
        let n = 6, d = 50
        let clean = Tensor((0..<(n * d)).map { _ in Float(Int(rng.nextUniform() * 256) % 256) / 255 }, shape: [n, d])
        for eps: Float in [0.1, 8 / 255, 0.5 / 255, 0] {
            let adv = Tensor(clean.scalars.map { c in Swift.min(Swift.max(c + eps * (2 * rng.nextUniform() - 1), 0), 1) }, shape: [n, d])
            for away in [false, true] {
                let r = EightBit.round(adv, clean: clean, ball: EightBit.Ball(norm: .linf, epsilon: eps), away: away).scalars
                for i in 0..<r.count {
                    let k = r[i] * 255
                    XCTAssertEqual(k, k.rounded(), "on the grid")
                    XCTAssertEqual(r[i], Float(Int(k.rounded())) / 255, "exactly k/255 as a reader computes it")
                    XCTAssertLessThanOrEqual(abs(r[i] - clean.scalars[i]), eps + 1e-6, "inside the L-inf ball (eps \(eps))")
                    XCTAssertTrue(r[i] >= 0 && r[i] <= 1)
                    // The nearer grid value is kept whenever it is inside the ball.
                    let nearest = (adv.scalars[i] * 255).rounded() / 255
                    if !away, abs(nearest - clean.scalars[i]) <= eps { XCTAssertEqual(abs(r[i] - adv.scalars[i]), abs(nearest - adv.scalars[i]), accuracy: 1e-7) }
                }
            }
        }
        // L2: a perturbation on the ball's surface stays inside after rounding.
        let eps: Float = 0.3
        var noise = (0..<(n * d)).map { _ in 2 * rng.nextUniform() - 1 }
        for i in 0..<n {
            let norm = sqrt(noise[(i * d)..<((i + 1) * d)].reduce(0) { $0 + $1 * $1 })
            for j in 0..<d { noise[i * d + j] *= eps / norm }
        }
        let adv = Tensor(zip(clean.scalars, noise).map { Swift.min(Swift.max($0 + $1, 0), 1) }, shape: [n, d])
        for away in [false, true] {
            let r = EightBit.round(adv, clean: clean, ball: EightBit.Ball(norm: .l2, epsilon: eps), away: away).scalars
            for i in 0..<n {
                let l2 = sqrt((0..<d).reduce(0.0) { s, j in let e = Double(r[i * d + j] - clean.scalars[i * d + j]); return s + e * e })
                XCTAssertLessThanOrEqual(l2, Double(eps) + 1e-6, "inside the L2 ball")
            }
            XCTAssertTrue(r.allSatisfy { ($0 * 255).rounded() == $0 * 255 })
        }
    }

    /// FGSM on the in-test trained CNN, written as PNGs: the images read back are the ones measured, and they fool
    /// the model exactly as reported.
    func testEightBitResultIsWhatTheWrittenPNGsGive() throws {
        let (model, test) = try trainedReferenceCNN()
        let data = test.prefix(128)
        let result = try FGSM(epsilon: 0.1).run(model, images: data.images, labels: data.labels)
        let rounded = result.onEightBitGrid(model: model, clean: data.images, ball: EightBit.Ball(norm: .linf, epsilon: 0.1))
        let dir = temporaryDirectory()
        try ImageFolder.write(rounded.adversarial, names: AdvKitTestNames.numbered(data.count), to: dir)
        let back = try Dataset.load(images: dir)
        XCTAssertEqual(back.images, rounded.adversarial, "the PNGs hold exactly the measured images")
        let predictions = model.logits(of: back.images).argmaxRows()
        XCTAssertEqual(predictions, rounded.outcomes.map(\.adversarialPrediction))
        let robust = Double(zip(predictions, data.labels).filter { $0 == Int($1) }.count) / Double(data.count)
        XCTAssertEqual(robust, rounded.robustAccuracy, accuracy: 1e-12)
        XCTAssertLessThanOrEqual(rounded.outcomes.map(\.linf).max() ?? 0, 0.1 + 1e-6, "still inside the ball")
        // Rounding costs FGSM little: the robust accuracy moves by a few images at most.
        XCTAssertEqual(rounded.robustAccuracy, result.robustAccuracy, accuracy: 0.05)
    }
}

enum AdvKitTestNames {
    static func numbered(_ n: Int) -> [String] { (0..<n).map { String(format: "%05d.png", $0) } }
}
