import AdvKitTestSupport
import CKernels
import XCTest

/// winograd6.c (F(4x4, 3x3) and F(2x2, 5x5) on 6x6 tiles) against the Double reference, the packed entry points
/// against the transforming ones bit for bit, the same bits at 1, 2 and 8 threads, and the route choice.
/// Small shapes only: the thread-sanitizer pass runs this file too.
final class Winograd6Tests: XCTestCase {
    private var savedThreads = 1
    override func setUp() {
        savedThreads = ck_get_num_threads()
        ck_conv_new_routes_set_enabled(1)
        ck_winograd6_set_enabled(1)
    }
    override func tearDown() {
        ck_set_num_threads(savedThreads)
        ck_conv_new_routes_set_enabled(-1)
        ck_winograd6_set_enabled(-1)
    }

    private static func shape(_ g: Reference.ConvGeometry) -> ck_conv2d_shape {
        ck_conv2d_shape(N: g.n, C: g.c, H: g.h, W: g.w, OC: g.oc, KH: g.kh, KW: g.kw, stride: g.stride, pad: g.pad,
                        OH: g.oh, OW: g.ow)
    }

    /// Both filter sizes at every padding they allow (0 .. r-1, which also covers their input gradients' r-1-p),
    /// planes that end mid-tile (5x7, 9x3, 13x11), channel counts off the 6-row panels (17, 19, 33), the reference
    /// CNN's second convolution (32 -> 64, 12x12, 5x5), and batches that take both transform paths: 37 and 50
    /// images are 2 and 3 groups of 16 (one-tile planes: several groups per GEMM) and a rest of 5 and 2.
    private static var sweep: [Reference.ConvGeometry] {
        var out: [Reference.ConvGeometry] = []
        for (n, c, h, w, oc) in [(1, 16, 4, 4, 16), (3, 16, 5, 7, 17), (2, 20, 8, 8, 33), (37, 16, 2, 3, 16),
                                 (2, 17, 9, 3, 19), (50, 16, 4, 4, 16)] {
            for pad in 0..<3 where h + 2 * pad >= 3 && w + 2 * pad >= 3 {
                out.append(.init(n: n, c: c, h: h, w: w, oc: oc, kh: 3, kw: 3, stride: 1, pad: pad))
            }
        }
        for (n, c, h, w, oc) in [(1, 16, 6, 6, 16), (3, 17, 13, 11, 16), (37, 16, 5, 5, 19), (2, 32, 12, 12, 64)] {
            for pad in 0..<5 where h + 2 * pad >= 5 && w + 2 * pad >= 5 {
                out.append(.init(n: n, c: c, h: h, w: w, oc: oc, kh: 5, kw: 5, stride: 1, pad: pad))
            }
        }
        return out
    }

    private struct Results: Equatable { var out: [Float], outRelu: [Float], dx: [Float] }

    /// Forward with bias, forward under a bounded ReLU without bias, and the input gradient added into ones, through
    /// the transforming entry points or the packed ones (packs made beforehand, NaN-filled first: every float the
    /// run reads must have been written by the transform).
    private func run(_ g: Reference.ConvGeometry, seed: UInt64, packed: Bool) -> Results {
        var s = Self.shape(g)
        let x = randomArray(g.n * g.c * g.h * g.w, seed: seed), w = randomArray(g.oc * g.c * g.kh * g.kw, seed: seed + 1)
        let b = randomArray(g.oc, seed: seed + 2), dout = randomArray(g.n * g.oc * g.oh * g.ow, seed: seed + 3)
        var work = [Float](repeating: .nan, count: ck_winograd6_workspace_floats(&s, ck_get_num_threads()))
        var out = [Float](repeating: .nan, count: dout.count), outRelu = out
        var dx = [Float](repeating: 1, count: x.count)
        if packed {
            var forward = [Float](repeating: .nan, count: ck_winograd6_filter_floats(&s, 0))
            var backward = [Float](repeating: .nan, count: ck_winograd6_filter_floats(&s, 1))
            ck_winograd6_filters(&forward, w, &s, 0)
            ck_winograd6_filters(&backward, w, &s, 1)
            ck_conv2d_winograd6_forward_packed(&out, &work, forward, x, b, &s, CK_ACT_NONE, 0)
            ck_conv2d_winograd6_forward_packed(&outRelu, &work, forward, x, nil, &s, CK_ACT_BRELU, 0.5)
            ck_conv2d_winograd6_backward_input_packed(&dx, &work, backward, dout, &s)
        } else {
            ck_conv2d_winograd6_forward(&out, &work, x, w, b, &s, CK_ACT_NONE, 0)
            ck_conv2d_winograd6_forward(&outRelu, &work, x, w, nil, &s, CK_ACT_BRELU, 0.5)
            ck_conv2d_winograd6_backward_input(&dx, &work, dout, w, &s)
        }
        return Results(out: out, outRelu: outRelu, dx: dx)
    }

    func testMatchesReference() throws {
        guard ck_gemm_small_available() == 1 else { throw XCTSkip("Winograd runs on the AVX-512 path only") }
        ck_set_num_threads(1)
        for (i, g) in Self.sweep.enumerated() {
            let seed = UInt64(i) * 13
            let r = run(g, seed: seed, packed: false)
            let x = randomArray(g.n * g.c * g.h * g.w, seed: seed), w = randomArray(g.oc * g.c * g.kh * g.kw, seed: seed + 1)
            let b = randomArray(g.oc, seed: seed + 2), dout = randomArray(g.n * g.oc * g.oh * g.ow, seed: seed + 3)
            // float32 with values in [-1, 1]: Bᵀ d B sums up to 36 inputs with weights up to 25, G g Gᵀ weighs up to
            // r*r weights, each transformed product is summed over the C (or OC) channels, and Aᵀ m A adds 36 of
            // those sums with weights up to 8*8. Worst errors measured on larger shapes, relative to the outputs'
            // RMS: F(4x4, 3x3) 3.7e-5 and 5.0e-5 (64 and 256 channels), F(2x2, 5x5) 1.0e-5 (the reference CNN's
            // layer) and 2.2e-5 (64 channels, padding 2); the direct sums 0.9-3.6e-6. Tolerance: 2e-4 of the RMS.
            func rms(_ v: [Double]) -> Double { (v.reduce(0) { $0 + $1 * $1 } / Double(max(1, v.count))).squareRoot() }
            let want = Reference.conv2d(x, w, b, g), wantRelu = Reference.conv2d(x, w, nil, g).map { min(max($0, 0), 0.5) }
            let wantDx = Reference.conv2dBackward(dout, x, w, g).dx
            assertClose(r.out, want, atol: 2e-4 * rms(want), rtol: 0, "forward \(g)")
            assertClose(r.outRelu, wantRelu, atol: 2e-4 * rms(Reference.conv2d(x, w, nil, g)), rtol: 0, "bounded ReLU \(g)")
            assertClose(r.dx, wantDx.map { $0 + 1 }, atol: 2e-4 * rms(wantDx), rtol: 0,
                        "dinp \(g)")
        }
    }

    func testPackedAndThreadsGiveTheSameBits() throws {
        guard ck_gemm_small_available() == 1 else { throw XCTSkip("Winograd runs on the AVX-512 path only") }
        for (i, g) in Self.sweep.enumerated() {
            ck_set_num_threads(1)
            let want = run(g, seed: UInt64(i), packed: false)
            XCTAssertFalse(want.out.contains { $0.isNaN } || want.dx.contains { $0.isNaN }, "\(g)")
            for threads in [2, 8] {
                ck_set_num_threads(threads)
                XCTAssertEqual(run(g, seed: UInt64(i), packed: false), want, "threads \(threads) \(g)")
            }
            for threads in [1, 2] {
                ck_set_num_threads(threads)
                XCTAssertEqual(run(g, seed: UInt64(i), packed: true), want, "packed, threads \(threads) \(g)")
            }
        }
    }

    /// ck_conv2d_forward / ck_conv2d_backward (input gradient alone) take this route when it applies, with the
    /// same bits as calling it directly.
    func testConvolutionEntryPointsRouteHere() throws {
        guard ck_gemm_small_available() == 1 else { throw XCTSkip("Winograd runs on the AVX-512 path only") }
        ck_set_num_threads(2)
        let g = Reference.ConvGeometry(n: 3, c: 16, h: 8, w: 8, oc: 16, kh: 3, kw: 3, stride: 1, pad: 1)
        var s = Self.shape(g)
        XCTAssertEqual(ck_winograd6_applies(&s, 0), 1)
        XCTAssertEqual(ck_winograd6_applies(&s, 1), 1)
        let want = run(g, seed: 5, packed: false)
        let x = randomArray(g.n * g.c * g.h * g.w, seed: 5), w = randomArray(g.oc * g.c * 9, seed: 6)
        let b = randomArray(g.oc, seed: 7), dout = randomArray(g.n * g.oc * g.oh * g.ow, seed: 8)
        var work = [Float](repeating: .nan, count: ck_conv2d_workspace_floats(&s, ck_get_num_threads()))
        var out = [Float](repeating: .nan, count: dout.count), dx = [Float](repeating: 1, count: x.count)
        ck_conv2d_forward(&out, &work, x, w, b, &s, CK_ACT_NONE, 0)
        ck_conv2d_backward(&dx, nil, nil, &work, dout, x, w, &s)
        XCTAssertEqual(out, want.out)
        XCTAssertEqual(dx, want.dx)
    }

    /// Where the route pays (at least 2x fewer multiply-adds than the direct sum) and where it does not.
    func testRouteChoice() {
        guard ck_gemm_small_available() == 1 else { return }
        func applies(_ c: Int, _ h: Int, _ oc: Int, _ k: Int, stride: Int = 1, pad: Int) -> (Int32, Int32) {
            var s = Self.shape(.init(n: 2, c: c, h: h, w: h, oc: oc, kh: k, kw: k, stride: stride, pad: pad))
            return (ck_winograd6_applies(&s, 0), ck_winograd6_applies(&s, 1))
        }
        // the reference CNN's second convolution: forward 16 tiles x 36 against 64 x 25 (0.36); its input gradient
        // needs 36 tiles for the 12x12 input (0.81 of the direct sum), which stays on the GEMM route
        XCTAssertTrue(applies(32, 12, 64, 5, pad: 0) == (1, 0))
        XCTAssertTrue(applies(64, 32, 64, 3, pad: 1) == (1, 1))    // ResNet's first stage
        XCTAssertTrue(applies(512, 4, 512, 3, pad: 1) == (1, 1))   // its last: one tile, 36 against 144
        XCTAssertTrue(applies(512, 2, 512, 3, pad: 1) == (0, 0))   // one tile for 4 outputs: 36 against 36
        XCTAssertTrue(applies(3, 32, 64, 3, pad: 1) == (0, 0))     // an RGB stem
        XCTAssertTrue(applies(16, 8, 8, 3, pad: 1) == (0, 0))      // OC < 16
        XCTAssertTrue(applies(16, 8, 16, 3, stride: 2, pad: 1) == (0, 0))
        XCTAssertTrue(applies(16, 8, 16, 1, pad: 0) == (0, 0))
        XCTAssertTrue(applies(16, 8, 16, 7, pad: 3) == (0, 0))
        XCTAssertTrue(applies(16, 8, 16, 3, pad: 3) == (0, 0))     // padding past r - 1
        ck_winograd6_set_enabled(0)
        XCTAssertTrue(applies(64, 32, 64, 3, pad: 1) == (0, 0), "ADVKIT_WINOGRAD=4x4: 3x3 goes to winograd.c")
        XCTAssertTrue(applies(32, 12, 64, 5, pad: 0) == (0, 0), "and 5x5 to the GEMM route")
    }

    /// 36 positions of (OC rounded up to 6) x C floats forward, (C rounded up to 6) x OC for the input gradient.
    func testFilterFloats() {
        var s = ck_conv2d_shape(N: 2, C: 17, H: 8, W: 8, OC: 19, KH: 3, KW: 3, stride: 1, pad: 1, OH: 8, OW: 8)
        XCTAssertEqual(ck_winograd6_filter_floats(&s, 0), 36 * 24 * 17)
        XCTAssertEqual(ck_winograd6_filter_floats(&s, 1), 36 * 18 * 19)
    }
}
