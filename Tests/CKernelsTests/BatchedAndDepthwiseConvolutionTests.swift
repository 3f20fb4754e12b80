import AdvKitTestSupport
import CKernels
import XCTest

/// conv_batched.c (plain convolutions, several images per GEMM, K in blocks) and depthwise2d.c (depthwise,
/// channels innermost) against the Swift references, against the routes they replace, and the same bits at 1, 2
/// and 8 threads. Small shapes only: the thread-sanitizer pass runs this file too.
final class BatchedAndDepthwiseConvolutionTests: XCTestCase {
    private var savedThreads = 1
    override func setUp() {
        savedThreads = ck_get_num_threads()
        ck_conv_new_routes_set_enabled(1)
    }
    override func tearDown() {
        ck_set_num_threads(savedThreads)
        ck_conv_new_routes_set_enabled(-1)
        ck_gemm_small_set_enabled(-1)
        ck_winograd6_set_enabled(-1)
    }

    // MARK: conv_batched.c

    private static func plainShape(_ g: Reference.ConvGeometry) -> ck_conv2d_shape {
        ck_conv2d_shape(N: g.n, C: g.c, H: g.h, W: g.w, OC: g.oc, KH: g.kh, KW: g.kw, stride: g.stride, pad: g.pad,
                        OH: g.oh, OW: g.ow)
    }

    /// Small planes (P = 1, 4, 9, 15: many images per GEMM, runs that end mid-batch), a long K (C = 120 with a
    /// 3x3 kernel: K = 1,080, five blocks of 256 with a short last one), kernels 1, 3 and 5, strides 1 and 2,
    /// padding 0 and 1, batch 1, 3 and 37.
    private static var plainSweep: [Reference.ConvGeometry] {
        var out: [Reference.ConvGeometry] = []
        for n in [1, 3, 37] {
            for (c, h, w, oc) in [(5, 3, 5, 7), (3, 1, 1, 13), (8, 4, 4, 6)] {
                for (k, stride, pad) in [(1, 1, 0), (1, 2, 0), (3, 1, 1), (3, 2, 1), (5, 1, 2)] where h + 2 * pad >= k && w + 2 * pad >= k {
                    out.append(.init(n: n, c: c, h: h, w: w, oc: oc, kh: k, kw: k, stride: stride, pad: pad))
                }
            }
        }
        out.append(.init(n: 3, c: 120, h: 4, w: 4, oc: 10, kh: 3, kw: 3, stride: 1, pad: 1))  // K = 1,080
        out.append(.init(n: 2, c: 7, h: 5, w: 3, oc: 130, kh: 3, kw: 3, stride: 2, pad: 1))   // OC > K block in W^T
        return out
    }

    private struct PlainResults: Equatable { var out: [Float], outRelu: [Float], dx: [Float] }

    private func runPlain(_ g: Reference.ConvGeometry, seed: UInt64) -> PlainResults {
        var s = Self.plainShape(g)
        let x = randomArray(g.n * g.c * g.h * g.w, seed: seed), w = randomArray(g.oc * g.c * g.kh * g.kw, seed: seed + 1)
        let b = randomArray(g.oc, seed: seed + 2), dout = randomArray(g.n * g.oc * g.oh * g.ow, seed: seed + 3)
        var work = [Float](repeating: .nan, count: max(1, ck_conv2d_workspace_floats(&s, ck_get_num_threads())))
        var out = [Float](repeating: .nan, count: dout.count), outRelu = out
        ck_conv2d_forward(&out, &work, x, w, b, &s, CK_ACT_NONE, 0)
        ck_conv2d_forward(&outRelu, &work, x, w, nil, &s, CK_ACT_BRELU, 0.5)
        var dx = [Float](repeating: 1, count: x.count)  // the kernel adds into it
        ck_conv2d_backward(&dx, nil, nil, &work, dout, x, w, &s)
        return PlainResults(out: out, outRelu: outRelu, dx: dx)
    }

    func testBatchedRouteMatchesReference() throws {
        guard ck_gemm_small_available() == 1 else { throw XCTSkip("the batched route runs on the AVX-512 path only") }
        ck_set_num_threads(1)
        for (i, g) in Self.plainSweep.enumerated() {
            var s = Self.plainShape(g)
            XCTAssertEqual(ck_conv2d_batched_applies(&s), 1, "P = \(g.oh * g.ow) is not a multiple of 64 or K > 1024")
            let seed = UInt64(i) * 11
            let r = runPlain(g, seed: seed)
            let x = randomArray(g.n * g.c * g.h * g.w, seed: seed), w = randomArray(g.oc * g.c * g.kh * g.kw, seed: seed + 1)
            let b = randomArray(g.oc, seed: seed + 2), dout = randomArray(g.n * g.oc * g.oh * g.ow, seed: seed + 3)
            let want = Reference.conv2d(x, w, b, g), wantNoBias = Reference.conv2d(x, w, nil, g)
            // float32 sums of up to C*KH*KW = 1,080 products of values in [-1, 1], in K blocks
            let tol = 2e-6 * Double(g.c * g.kh * g.kw)
            assertClose(r.out, want, atol: tol, rtol: 1e-4, "forward \(g)")
            assertClose(r.outRelu, wantNoBias.map { min(max($0, 0), 0.5) }, atol: tol, rtol: 1e-4, "bounded ReLU \(g)")
            // d(input): up to OC*KH*KW = 1,170 products per element
            let dxTol = 2e-6 * Double(g.oc * g.kh * g.kw)
            assertClose(r.dx, Reference.conv2dBackward(dout, x, w, g).dx.map { $0 + 1 }, atol: dxTol, rtol: 1e-4, "dinp \(g)")
        }
    }

    func testBatchedRouteSameBitsAtOneTwoAndEightThreads() {
        for (i, g) in Self.plainSweep.enumerated() where i % 4 == 0 || g.n == 37 || g.c == 120 {
            ck_set_num_threads(1)
            let one = runPlain(g, seed: UInt64(i))
            for threads in [2, 8] {
                ck_set_num_threads(threads)
                XCTAssertEqual(runPlain(g, seed: UInt64(i)), one, "threads \(threads) \(g)")
            }
        }
    }

    /// The reference CNN's two layers (P = 576 and 64, K = 25 and 800) keep conv2d.c's own route, and nothing
    /// takes the batched route without AVX-512's kernel or with ADVKIT_CONV_ROUTE=old.
    func testBatchedRouteChoice() {
        var conv1 = ck_conv2d_shape(N: 128, C: 1, H: 28, W: 28, OC: 32, KH: 5, KW: 5, stride: 1, pad: 0, OH: 24, OW: 24)
        var conv2 = ck_conv2d_shape(N: 128, C: 32, H: 12, W: 12, OC: 64, KH: 5, KW: 5, stride: 1, pad: 0, OH: 8, OW: 8)
        XCTAssertEqual(ck_conv2d_batched_applies(&conv1), 0)
        XCTAssertEqual(ck_conv2d_batched_applies(&conv2), 0)
        var layer4 = ck_conv2d_shape(N: 128, C: 512, H: 4, W: 4, OC: 512, KH: 3, KW: 3, stride: 1, pad: 1, OH: 4, OW: 4)
        XCTAssertEqual(ck_conv2d_batched_applies(&layer4), ck_gemm_small_available())
        ck_conv_new_routes_set_enabled(0)
        XCTAssertEqual(ck_conv2d_batched_applies(&layer4), 0)
        ck_conv_new_routes_set_enabled(1)
        ck_gemm_small_set_enabled(0)
        XCTAssertEqual(ck_conv2d_batched_applies(&layer4), 0)
    }

    // MARK: winograd.c

    /// 3x3, stride 1, padding 1, C and OC >= 16: odd and even planes (partial last tiles), 1x1 and 2x2 planes,
    /// runs of many images per GEMM (37 images of 2x2: one tile each), channel counts off the 6-row panels.
    private static var winogradSweep: [Reference.ConvGeometry] {
        [(1, 16, 4, 4, 16), (3, 16, 5, 7, 17), (2, 20, 8, 8, 33), (37, 16, 2, 2, 16), (5, 17, 1, 1, 19), (2, 24, 9, 3, 16)]
            .map { .init(n: $0.0, c: $0.1, h: $0.2, w: $0.3, oc: $0.4, kh: 3, kw: 3, stride: 1, pad: 1) }
    }

    func testWinogradMatchesReference() throws {
        guard ck_gemm_small_available() == 1 else { throw XCTSkip("Winograd runs on the AVX-512 path only") }
        ck_set_num_threads(1)
        ck_winograd6_set_enabled(0)  // 3x3 on winograd.c's F(2x2, 3x3), not winograd6.c's F(4x4, 3x3)
        for (i, g) in Self.winogradSweep.enumerated() {
            var s = Self.plainShape(g)
            XCTAssertEqual(ck_winograd_f2x3_applies(&s), 1, "\(g)")
            let seed = UInt64(i) * 17
            let r = runPlain(g, seed: seed)
            let x = randomArray(g.n * g.c * g.h * g.w, seed: seed), w = randomArray(g.oc * g.c * 9, seed: seed + 1)
            let b = randomArray(g.oc, seed: seed + 2), dout = randomArray(g.n * g.oc * g.oh * g.ow, seed: seed + 3)
            // float32: each of the 16 transformed products sums C terms of transformed values (sums of up to 9
            // inputs times sums of up to 9 weights, halved), then the output transform adds 9 of those sums
            assertClose(r.out, Reference.conv2d(x, w, b, g), atol: 2e-5 * Double(g.c), rtol: 1e-4, "forward \(g)")
            assertClose(r.outRelu, Reference.conv2d(x, w, nil, g).map { min(max($0, 0), 0.5) }, atol: 2e-5 * Double(g.c),
                        rtol: 1e-4, "bounded ReLU \(g)")
            assertClose(r.dx, Reference.conv2dBackward(dout, x, w, g).dx.map { $0 + 1 }, atol: 2e-5 * Double(g.oc),
                        rtol: 1e-4, "dinp \(g)")  // the same sums with OC terms
        }
    }

    func testWinogradSameBitsAtOneTwoAndEightThreads() {
        ck_winograd6_set_enabled(0)
        for (i, g) in Self.winogradSweep.enumerated() {
            ck_set_num_threads(1)
            let one = runPlain(g, seed: UInt64(i))
            for threads in [2, 8] {
                ck_set_num_threads(threads)
                XCTAssertEqual(runPlain(g, seed: UInt64(i)), one, "threads \(threads) \(g)")
            }
        }
    }

    /// Fewer than 16 channels (an RGB stem), stride 2, padding 0 or a 5x5 kernel: not Winograd.
    func testWinogradRouteChoice() {
        for (c, oc, k, stride, pad) in [(3, 64, 3, 1, 1), (16, 8, 3, 1, 1), (16, 16, 3, 2, 1), (16, 16, 3, 1, 0), (16, 16, 5, 1, 2)] {
            var s = Self.plainShape(.init(n: 2, c: c, h: 8, w: 8, oc: oc, kh: k, kw: k, stride: stride, pad: pad))
            XCTAssertEqual(ck_winograd_f2x3_applies(&s), 0, "c \(c) oc \(oc) k \(k) stride \(stride) pad \(pad)")
        }
    }

    // MARK: depthwise2d.c

    private static func generalShape(_ g: Reference.GeneralConvGeometry) -> ck_conv2d_general_shape {
        ck_conv2d_general_shape(N: g.n, C: g.c, H: g.h, W: g.w, OC: g.oc, KH: g.kh, KW: g.kw, G: g.groups,
                                stride_h: g.strideH, stride_w: g.strideW, pad_t: g.padT, pad_l: g.padL, pad_b: g.padB,
                                pad_r: g.padR, dil_h: g.dilH, dil_w: g.dilW, OH: g.oh, OW: g.ow)
    }

    /// Channel counts around the 16-float vector (1, 5, 17, 33), planes from 1x1 to 9x7, kernels 1, 3, 5x3,
    /// strides, symmetric and asymmetric padding, dilation.
    private static var depthwiseSweep: [Reference.GeneralConvGeometry] {
        var out: [Reference.GeneralConvGeometry] = []
        for n in [1, 3] { for c in [1, 5, 17] { for (h, w) in [(9, 7), (2, 2), (1, 1)] {
            for strides in [(1, 1), (2, 2), (2, 1)] { for pads in [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 2, 1)] {
                for (kh, kw) in [(1, 1), (3, 3), (5, 3)] { for dil in [1, 2] {
                    let g = Reference.GeneralConvGeometry(n: n, c: c, h: h, w: w, oc: c, kh: kh, kw: kw, groups: c,
                                                          strides: strides, pads: pads, dilations: (dil, dil))
                    if g.h + g.padT + g.padB >= g.dilH * (kh - 1) + 1 && g.w + g.padL + g.padR >= g.dilW * (kw - 1) + 1 {
                        out.append(g)
                    }
                } }
            } }
        } } }
        out.append(.init(n: 5, c: 33, h: 4, w: 4, oc: 33, kh: 3, kw: 3, groups: 33, strides: (1, 1), pads: (1, 1, 1, 1)))
        return out
    }

    private struct DepthwiseResults: Equatable { var out: [Float], outClip: [Float], dx: [Float] }

    private func runDepthwise(_ g: Reference.GeneralConvGeometry, seed: UInt64) -> DepthwiseResults {
        var s = Self.generalShape(g)
        let x = randomArray(g.inputCount, seed: seed), w = randomArray(g.weightCount, seed: seed + 1)
        let b = randomArray(g.oc, seed: seed + 2), dout = randomArray(g.outputCount, seed: seed + 3)
        var work = [Float](repeating: .nan, count: max(1, ck_conv2d_general_workspace_floats(&s, ck_get_num_threads(), 0)))
        var out = [Float](repeating: .nan, count: g.outputCount), outClip = out
        ck_conv2d_general_forward(&out, &work, x, w, b, &s, CK_ACT_NONE, 0)
        ck_conv2d_general_forward(&outClip, &work, x, w, nil, &s, CK_ACT_BRELU, 0.5)
        var dx = [Float](repeating: 1, count: x.count)
        ck_conv2d_general_backward(&dx, nil, nil, &work, dout, x, w, &s)
        return DepthwiseResults(out: out, outClip: outClip, dx: dx)
    }

    func testDepthwiseRouteMatchesReference() {
        ck_set_num_threads(1)
        for (i, g) in Self.depthwiseSweep.enumerated() {
            var s = Self.generalShape(g)
            XCTAssertEqual(ck_depthwise2d_applies(&s), 1, "\(g)")
            let seed = UInt64(i) * 13
            let r = runDepthwise(g, seed: seed)
            let x = randomArray(g.inputCount, seed: seed), w = randomArray(g.weightCount, seed: seed + 1)
            let b = randomArray(g.oc, seed: seed + 2), dout = randomArray(g.outputCount, seed: seed + 3)
            // float32 sums of at most KH*KW = 15 products of values in [-1, 1], plus the bias
            assertClose(r.out, Reference.conv2dGeneral(x, w, b, g), atol: 1e-5, rtol: 1e-4, "forward \(g)")
            assertClose(r.outClip, Reference.conv2dGeneral(x, w, nil, g).map { min(max($0, 0), 0.5) },
                        atol: 1e-5, rtol: 1e-4, "clip \(g)")
            // d(input): at most KH*KW = 15 products per element
            assertClose(r.dx, Reference.conv2dGeneralBackward(dout, x, w, g).dx.map { $0 + 1 }, atol: 1e-5, rtol: 1e-4,
                        "dinp \(g)")
        }
    }

    /// The forward pass adds the same terms in the same order as conv_general.c's depthwise loops.
    func testDepthwiseForwardEqualsTheLoopsItReplaces() {
        ck_set_num_threads(1)
        for (i, g) in Self.depthwiseSweep.enumerated() where i % 3 == 0 {
            let new = runDepthwise(g, seed: UInt64(i))
            ck_conv_new_routes_set_enabled(0)
            let old = runDepthwise(g, seed: UInt64(i))
            ck_conv_new_routes_set_enabled(1)
            XCTAssertEqual(new.out, old.out, "\(g)")
            XCTAssertEqual(new.outClip, old.outClip, "\(g)")
        }
    }

    func testDepthwiseRouteSameBitsAtOneTwoAndEightThreads() {
        for (i, g) in Self.depthwiseSweep.enumerated() where i % 7 == 0 || g.n == 5 {
            ck_set_num_threads(1)
            let one = runDepthwise(g, seed: UInt64(i))
            for threads in [2, 8] {
                ck_set_num_threads(threads)
                XCTAssertEqual(runDepthwise(g, seed: UInt64(i)), one, "threads \(threads) \(g)")
            }
        }
    }

    /// Two filters per channel (OC = 2C) stay in conv_general.c's loops.
    func testDepthwiseRouteChoice() {
        var one = Self.generalShape(.init(n: 1, c: 4, h: 5, w: 5, oc: 4, kh: 3, kw: 3, groups: 4))
        var two = Self.generalShape(.init(n: 1, c: 4, h: 5, w: 5, oc: 8, kh: 3, kw: 3, groups: 4))
        XCTAssertEqual(ck_depthwise2d_applies(&one), 1)
        XCTAssertEqual(ck_depthwise2d_applies(&two), 0)
        XCTAssertEqual(ck_depthwise2d_workspace_floats(&one, 2), 2 * (25 * 4 + 9 * 4 + 9 * 4))  // (H,W,C), (OH,OW,C), (KH,KW,C)
        ck_conv_new_routes_set_enabled(0)
        XCTAssertEqual(ck_depthwise2d_applies(&one), 0)
    }
}
