import AdvKitTestSupport
import CKernels
import XCTest

/// The C convolution against the Swift reference over a sweep of small shapes, at 1 and 2 threads.
final class ConvolutionTests: XCTestCase {
    override func tearDown() { ck_set_num_threads(1) }

    private func shape(_ g: Reference.ConvGeometry) -> ck_conv2d_shape {
        ck_conv2d_shape(N: g.n, C: g.c, H: g.h, W: g.w, OC: g.oc, KH: g.kh, KW: g.kw, stride: g.stride, pad: g.pad, OH: g.oh, OW: g.ow)
    }

    private var sweep: [Reference.ConvGeometry] {
        var out: [Reference.ConvGeometry] = []
        for n in [1, 3] { for stride in [1, 2] { for pad in [0, 1] { for k in [1, 3, 5] {
            out.append(.init(n: n, c: 2, h: 7, w: 9, oc: 3, kh: k, kw: k, stride: stride, pad: pad))
        } } } }
        return out
    }

    func testForwardMatchesReferenceOverSweep() {
        for threads in [1, 2] {
            ck_set_num_threads(threads)
            for (i, g) in sweep.enumerated() {
                var s = shape(g)
                let x = randomArray(g.n * g.c * g.h * g.w, seed: UInt64(i))
                let w = randomArray(g.oc * g.c * g.kh * g.kw, seed: UInt64(i) + 100)
                let b = randomArray(g.oc, seed: UInt64(i) + 200)
                var out = [Float](repeating: .nan, count: g.n * g.oc * g.oh * g.ow)
                var work = [Float](repeating: 0, count: ck_conv2d_workspace_floats(&s, threads))
                for bias in [true, false] {
                    ck_conv2d_forward(&out, &work, x, w, bias ? b : nil, &s, CK_ACT_NONE, 0)
                    // float32 sums of C*KH*KW <= 50 products of values in [-1, 1]
                    assertClose(out, Reference.conv2d(x, w, bias ? b : nil, g), atol: 1e-5, rtol: 1e-4,
                                "threads \(threads) \(g) bias \(bias)")
                }
            }
        }
    }

    func testBackwardMatchesReferenceAndAccumulates() {
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
            }
        }
    }

    func testFusedActivationEpilogues() {
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
    }

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
}
