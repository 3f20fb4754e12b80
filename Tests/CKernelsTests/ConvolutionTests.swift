import AdvKitTestSupport
import CKernels
import XCTest

/// The C convolution against the Swift reference over a sweep of small shapes, at 1 and 2 threads.
final class ConvolutionTests: XCTestCase {
    override func tearDown() {
        ck_set_num_threads(1)
        ck_gemm_small_set_enabled(-1)
    }

    /// Runs `body` with the AVX-512 kernels and with OpenBLAS (the path of CPUs without AVX-512).
    private func bothPaths(_ body: (String) -> Void) {
        for own in [1, 0] {
            ck_gemm_small_set_enabled(Int32(own))
            body(own == 1 && ck_gemm_small_available() != 0 ? "own kernels" : "OpenBLAS")
        }
        ck_gemm_small_set_enabled(-1)
    }

    private func shape(_ g: Reference.ConvGeometry) -> ck_conv2d_shape {
        ck_conv2d_shape(N: g.n, C: g.c, H: g.h, W: g.w, OC: g.oc, KH: g.kh, KW: g.kw, stride: g.stride, pad: g.pad, OH: g.oh, OW: g.ow)
    }

    private var sweep: [Reference.ConvGeometry] {
        var out: [Reference.ConvGeometry] = []
        for n in [1, 3] { for stride in [1, 2] { for pad in [0, 1] { for k in [1, 3, 5] {
            out.append(.init(n: n, c: 2, h: 7, w: 9, oc: 3, kh: k, kw: k, stride: stride, pad: pad))
        } } } }
        // The reference CNN's two layers (several 64-column tiles and 6-row panels, with remainders).
        out.append(.init(n: 3, c: 1, h: 28, w: 28, oc: 32, kh: 5, kw: 5, stride: 1, pad: 0))
        out.append(.init(n: 3, c: 32, h: 12, w: 12, oc: 64, kh: 5, kw: 5, stride: 1, pad: 0))
        return out
    }

    func testForwardMatchesReferenceOverSweep() { bothPaths { path in
        for threads in [1, 2] {
            ck_set_num_threads(threads)
            for (i, g) in sweep.enumerated() {
                var s = shape(g)
                let x = randomArray(g.n * g.c * g.h * g.w, seed: UInt64(i))
                let w = randomArray(g.oc * g.c * g.kh * g.kw, seed: UInt64(i) + 100)
                let b = randomArray(g.oc, seed: UInt64(i) + 200)
                var out = [Float](repeating: .nan, count: g.n * g.oc * g.oh * g.ow)
                var work = [Float](repeating: 0, count: ck_conv2d_workspace_floats(&s, threads))
                // float32 sums of C*KH*KW <= 50 products of values in [-1, 1]; the reference CNN's second layer
                // (800 products, RMS 9.5) on winograd6.c's F(2x2, 5x5): worst error measured 9.5e-5 (its GEMM
                // route: 3.5e-5)
                let atol = ck_winograd6_applies(&s, 0) != 0 ? 4e-4 : 1e-5
                for bias in [true, false] {
                    ck_conv2d_forward(&out, &work, x, w, bias ? b : nil, &s, CK_ACT_NONE, 0)
                    assertClose(out, Reference.conv2d(x, w, bias ? b : nil, g), atol: atol, rtol: 1e-4,
                                "\(path) threads \(threads) \(g) bias \(bias)")
                }
            }
        }
    } }

    func testBackwardMatchesReferenceAndAccumulates() { bothPaths { path in
        for threads in [1, 2] {
            ck_set_num_threads(threads)
            for (i, g) in sweep.enumerated() {
                var s = shape(g)
                let x = randomArray(g.n * g.c * g.h * g.w, seed: UInt64(i))
                let w = randomArray(g.oc * g.c * g.kh * g.kw, seed: UInt64(i) + 100)
                let dout = randomArray(g.n * g.oc * g.oh * g.ow, seed: UInt64(i) + 300)
                let want = Reference.conv2dBackward(dout, x, w, g)
                // Backward adds into its outputs: start from 1 and expect 1 + gradient.
                var dx = [Float](repeating: 1, count: x.count), dw = [Float](repeating: 1, count: w.count)
                var db = [Float](repeating: 1, count: g.oc)
                var work = [Float](repeating: 0, count: ck_conv2d_workspace_floats(&s, threads))
                ck_conv2d_backward(&dx, &dw, &db, &work, dout, x, w, &s)
                assertClose(dx, want.dx.map { $0 + 1 }, atol: 1e-5, rtol: 1e-4, "dx threads \(threads) \(g)")
                assertClose(dw, want.dw.map { $0 + 1 }, atol: 1e-4, rtol: 1e-4, "dw threads \(threads) \(g)")
                assertClose(db, want.db.map { $0 + 1 }, atol: 1e-4, rtol: 1e-4, "db threads \(threads) \(g)")
                // The input gradient alone (an attack's step) takes its own path.
                var dxOnly = [Float](repeating: 1, count: x.count)
                ck_conv2d_backward(&dxOnly, nil, nil, &work, dout, x, w, &s)
                assertClose(dxOnly, want.dx.map { $0 + 1 }, atol: 1e-5, rtol: 1e-4, "\(path) dx alone threads \(threads) \(g)")
            }
        }
    } }

    func testFusedActivationEpilogues() { bothPaths { path in
        let g = Reference.ConvGeometry(n: 2, c: 2, h: 7, w: 6, oc: 3, kh: 3, kw: 3, stride: 1, pad: 1)
        var s = shape(g)
        let x = randomArray(g.n * g.c * g.h * g.w, seed: 21), w = randomArray(g.oc * g.c * 9, seed: 22), b = randomArray(g.oc, seed: 23)
        let want = Reference.conv2d(x, w, b, g)
        var work = [Float](repeating: 0, count: ck_conv2d_workspace_floats(&s, 2))
        var out = [Float](repeating: .nan, count: want.count)
        ck_conv2d_forward(&out, &work, x, w, b, &s, CK_ACT_RELU, 0)
        assertClose(out, want.map { max($0, 0) }, atol: 1e-5, rtol: 1e-4, "conv + ReLU")
        ck_conv2d_forward(&out, &work, x, w, b, &s, CK_ACT_BRELU, 0.5)
        assertClose(out, want.map { min(max($0, 0), 0.5) }, atol: 1e-5, rtol: 1e-4, "conv + bounded ReLU")
        var lin = [Float](repeating: .nan, count: 3 * 4)
        let lx = randomArray(3 * 5, seed: 24), lw = randomArray(4 * 5, seed: 25), lb = randomArray(4, seed: 26)
        ck_linear_forward(&lin, lx, lw, lb, 3, 5, 4, CK_ACT_RELU, 0)
        assertClose(lin, Reference.linear(lx, lw, lb, n: 3, inF: 5, outF: 4).map { max($0, 0) }, atol: 1e-5, rtol: 1e-4, "linear + ReLU")
        var mask = [Float](repeating: .nan, count: 4)
        ck_activation_mask(&mask, [1, 2, 3, 4], [0, 0.2, 0.5, 0.7], CK_ACT_BRELU, 0.5, 4)
        XCTAssertEqual(mask, [0, 2, 0, 0], "passes only where 0 < out < bound")
        // In place, on more than a vector's worth (the vector loop and its tail), for each activation.
        let outs = (0..<37).map { Float($0 % 7) / 6 - 0.25 }, douts = (0..<37).map { Float($0) + 1 }
        for (act, bound) in [(CK_ACT_NONE, Float(0)), (CK_ACT_RELU, 0), (CK_ACT_BRELU, 0.5)] {
            var apart = [Float](repeating: .nan, count: 37), inPlace = douts
            ck_activation_mask(&apart, douts, outs, act, bound, 37)
            ck_activation_mask_inplace(&inPlace, outs, act, bound, 37)
            XCTAssertEqual(inPlace, apart, "in place as into another buffer, activation \(act.rawValue)")
        }
        _ = path
    } }

    /// ck_conv2d_forward_maxpool2x2 (each image pooled right after its GEMM on the image-by-image route) gives the
    /// bits of ck_conv2d_forward then ck_maxpool2d_forward: the reference CNN's first layer (that route), an odd
    /// output (the last row and column outside every window), its second layer (the Winograd route: two calls),
    /// at 1, 2 and 8 threads.
    func testConvolutionThenMaxPoolInOneCall() { bothPaths { path in
        let geometries: [Reference.ConvGeometry] = [
            .init(n: 5, c: 1, h: 28, w: 28, oc: 32, kh: 5, kw: 5, stride: 1, pad: 0),
            .init(n: 3, c: 2, h: 9, w: 7, oc: 4, kh: 3, kw: 3, stride: 1, pad: 0),
            .init(n: 3, c: 32, h: 12, w: 12, oc: 64, kh: 5, kw: 5, stride: 1, pad: 0),
        ]
        for g in geometries {
            for threads in [1, 2, 8] {
                ck_set_num_threads(threads)
                var s = shape(g)
                var ps = ck_pool_shape(N: g.n, C: g.oc, H: g.oh, W: g.ow, K: 2, stride: 2, OH: g.oh / 2, OW: g.ow / 2)
                let x = randomArray(g.n * g.c * g.h * g.w, seed: 41), w = randomArray(g.oc * g.c * g.kh * g.kw, seed: 42)
                let b = randomArray(g.oc, seed: 43)
                var work = [Float](repeating: 0, count: ck_conv2d_workspace_floats(&s, 8))
                var out = [Float](repeating: .nan, count: g.n * g.oc * g.oh * g.ow), pooled = [Float](repeating: .nan, count: g.n * g.oc * ps.OH * ps.OW)
                var arg = [Int32](repeating: -1, count: pooled.count)
                ck_conv2d_forward(&out, &work, x, w, b, &s, CK_ACT_RELU, 0)
                ck_maxpool2d_forward(&pooled, &arg, out, &ps)
                var out2 = [Float](repeating: .nan, count: out.count), pooled2 = [Float](repeating: .nan, count: pooled.count)
                var arg2 = [Int32](repeating: -1, count: arg.count)
                ck_conv2d_forward_maxpool2x2(&out2, &pooled2, &arg2, &work, x, w, b, &s, CK_ACT_RELU, 0)
                let what = "\(path), \(g.c)->\(g.oc) \(g.h)x\(g.w), \(threads) threads"
                XCTAssertEqual(out2.map(\.bitPattern), out.map(\.bitPattern), "convolution, " + what)
                XCTAssertEqual(pooled2.map(\.bitPattern), pooled.map(\.bitPattern), "pooled, " + what)
                XCTAssertEqual(arg2, arg, "argmax, " + what)
            }
        }
    } }

    func testNullGradientOutputsAreSkipped() {
        let g = Reference.ConvGeometry(n: 2, c: 2, h: 6, w: 6, oc: 3, kh: 3, kw: 3, stride: 1, pad: 1)
        var s = shape(g)
        let x = randomArray(g.n * g.c * g.h * g.w, seed: 1), w = randomArray(g.oc * g.c * 9, seed: 2)
        let dout = randomArray(g.n * g.oc * g.oh * g.ow, seed: 3)
        var dx = [Float](repeating: 0, count: x.count)
        var work = [Float](repeating: 0, count: ck_conv2d_workspace_floats(&s, 1))
        ck_conv2d_backward(&dx, nil, nil, &work, dout, x, w, &s)  // input gradient only, as an attack asks
        assertClose(dx, Reference.conv2dBackward(dout, x, w, g).dx, atol: 1e-5, rtol: 1e-4, "dx alone")
    }

    func testIm2colRoundTripIsTheAdjoint() {
        // <im2col(x), c> == <x, col2im(c)> for any x, c: col2im is im2col's transpose.
        let g = Reference.ConvGeometry(n: 1, c: 2, h: 7, w: 6, oc: 1, kh: 3, kw: 2, stride: 2, pad: 1)
        var s = shape(g)
        let x = randomArray(g.c * g.h * g.w, seed: 4)
        let c = randomArray(g.c * g.kh * g.kw * g.oh * g.ow, seed: 5)
        var col = [Float](repeating: 0, count: c.count)
        ck_im2col(&col, x, &s)
        var back = [Float](repeating: 0, count: x.count)
        ck_col2im_add(&back, c, &s)
        let lhs = zip(col, c).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let rhs = zip(x, back).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        XCTAssertEqual(lhs, rhs, accuracy: 1e-4)
    }

    func testSgemmAllTranspositionsMatchNaive() {
        for threads in [1, 2] {
            ck_set_num_threads(threads)
            for (m, n, k) in [(1, 1, 1), (3, 5, 7), (70, 33, 19), (40, 300, 64)] {
                for ta in [0, 1] { for tb in [0, 1] {
                    let a = randomArray(m * k, seed: 6), b = randomArray(k * n, seed: 7)
                    var c1 = randomArray(m * n, seed: 8), c2 = c1
                    let lda = ta == 1 ? m : k, ldb = tb == 1 ? k : n
                    ck_sgemm(Int32(ta), Int32(tb), m, n, k, 0.5, a, lda, b, ldb, 2, &c1, n)
                    ck_sgemm_naive(Int32(ta), Int32(tb), m, n, k, 0.5, a, lda, b, ldb, 2, &c2, n)
                    assertClose(c1, c2, atol: 1e-5, rtol: 1e-4, "sgemm \(m)x\(n)x\(k) ta \(ta) tb \(tb) threads \(threads)")
                } }
            }
        }
    }
    /// The input gradient through the sparse route (taken when most of the output gradient is zero, as behind a
    /// max-pool): the same as the reference, image by image whichever route each takes.
    func testInputGradientFromASparseOutputGradient() { bothPaths { path in
        var geometries: [Reference.ConvGeometry] = []
        for (stride, pad, k) in [(1, 0, 5), (1, 1, 3), (2, 1, 3), (2, 2, 5), (1, 0, 1), (1, 2, 1), (2, 3, 2)] {
            geometries.append(.init(n: 4, c: 16, h: 9, w: 10, oc: 5, kh: k, kw: k, stride: stride, pad: pad))
        }
        // conv2, with more images than one thread packs per GEMM (the weight gradient adds over several packs)
        geometries.append(.init(n: 9, c: 32, h: 12, w: 12, oc: 64, kh: 5, kw: 5, stride: 1, pad: 0))
        geometries.append(.init(n: 2, c: 24, h: 6, w: 6, oc: 3, kh: 3, kw: 3, stride: 1, pad: 1))     // C not a multiple of 16
        for threads in [1, 2] {
            ck_set_num_threads(threads)
            for (i, g) in geometries.enumerated() {
                var s = shape(g)
                let x = randomArray(g.n * g.c * g.h * g.w, seed: UInt64(i) + 40)
                let w = randomArray(g.oc * g.c * g.kh * g.kw, seed: UInt64(i) + 50)
                var dout = randomArray(g.n * g.oc * g.oh * g.ow, seed: UInt64(i) + 60)
                // Even images: 85% zeros (sparse route); odd ones stay dense.
                let per = g.oc * g.oh * g.ow
                for img in stride(from: 0, to: g.n, by: 2) { for q in 0..<per where (q * 7919) % 100 < 85 { dout[img * per + q] = 0 } }
                let want = Reference.conv2dBackward(dout, x, w, g)
                var dx = [Float](repeating: 1, count: x.count)
                var work = [Float](repeating: .nan, count: ck_conv2d_workspace_floats(&s, threads))
                ck_conv2d_backward(&dx, nil, nil, &work, dout, x, w, &s)
                assertClose(dx, want.dx.map { $0 + 1 }, atol: 1e-5, rtol: 1e-4, "sparse dx threads \(threads) \(g)")
                // With the weight and bias gradients too (a training step).
                var dx2 = [Float](repeating: 0, count: x.count), dw = [Float](repeating: 0, count: w.count)
                var db = [Float](repeating: 0, count: g.oc)
                ck_conv2d_backward(&dx2, &dw, &db, &work, dout, x, w, &s)
                assertClose(dx2, want.dx, atol: 1e-5, rtol: 1e-4, "sparse dx with dw threads \(threads) \(g)")
                assertClose(dw, want.dw, atol: 1e-4, rtol: 1e-4, "dw threads \(threads) \(g)")
                assertClose(db, want.db, atol: 1e-4, rtol: 1e-4, "\(path) db threads \(threads) \(g)")
            }
        }
    } }

    /// The AVX-512 small-M GEMM the convolutions use, against plain loops in Double: every remainder of the
    /// 6-row panels and 64-column tiles, both packings, bias, activations, and accumulation into C.
    func testSmallGemmAgainstReference() {
        guard ck_gemm_small_available() != 0 else {
            // No AVX-512 here: the convolutions take OpenBLAS (tested above); the plain loop is still checked.
            return checkSmallGemm(shapes: [(7, 9, 5)])
        }
        checkSmallGemm(shapes: [(1, 1, 1), (6, 64, 3), (7, 65, 25), (13, 130, 8), (32, 576, 25), (64, 64, 800),
                                (800, 64, 64), (25, 100, 32), (5, 17, 1)])
    }

    private func checkSmallGemm(shapes: [(Int, Int, Int)]) {
        for (m, n, k) in shapes {
            for trans in [0, 1] {
                let a = randomArray(m * k, seed: UInt64(m * 31 + k)), b = randomArray(k * n, seed: UInt64(n * 7 + k))
                let bias = randomArray(m, seed: 9), old = randomArray(m * n, seed: 10)
                let lda = trans == 1 ? m : k  // op(A) is m x k either way
                var pack = [Float](repeating: .nan, count: ck_gemm_small_pack_floats(m, k))
                ck_gemm_small_pack(&pack, Int32(trans), m, k, a, lda)
                var want = [Double](repeating: 0, count: m * n)
                for r in 0..<m { for c in 0..<n {
                    var acc = 0.0
                    for q in 0..<k { acc += Double(trans == 1 ? a[q * lda + r] : a[r * lda + q]) * Double(b[q * n + c]) }
                    want[r * n + c] = acc
                } }
                for (act, bound) in [(CK_ACT_NONE, Float(0)), (CK_ACT_RELU, 0), (CK_ACT_BRELU, 0.3)] {
                    var c = [Float](repeating: .nan, count: m * n)
                    ck_gemm_small(m, n, k, pack, b, n, &c, n, bias, act, bound, 0)
                    let expected = (0..<(m * n)).map { i -> Double in
                        let x = want[i] + Double(bias[i / n])
                        switch act {
                        case CK_ACT_RELU: return max(x, 0)
                        case CK_ACT_BRELU: return min(max(x, 0), Double(bound))
                        default: return x
                        }
                    }
                    assertClose(c, expected, atol: 1e-4, rtol: 1e-4, "m \(m) n \(n) k \(k) trans \(trans) act \(act)")
                }
                var acc = old
                ck_gemm_small(m, n, k, pack, b, n, &acc, n, nil, CK_ACT_NONE, 0, 1)
                assertClose(acc, (0..<(m * n)).map { want[$0] + Double(old[$0]) }, atol: 1e-4, rtol: 1e-4, "accumulate m \(m) n \(n) k \(k)")
            }
        }
    }
}
