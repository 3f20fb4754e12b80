import AdvKitTestSupport
import CKernels
import XCTest

/// winograd.c's filter transform apart (ck_winograd_f2x3_filters) and the *_packed entry points that take its
/// result: bit for bit the results of ck_conv2d_winograd_forward / _backward_input, which transform the filters on
/// every call, at 1, 2 and 8 threads (the filter transform itself runs on the thread pool too).
final class WinogradPackedFilterTests: XCTestCase {
    private var savedThreads = 1
    override func setUp() {
        savedThreads = ck_get_num_threads()
        ck_conv_new_routes_set_enabled(1)
    }
    override func tearDown() {
        ck_set_num_threads(savedThreads)
        ck_conv_new_routes_set_enabled(-1)
    }

    /// The shapes of BatchedAndDepthwiseConvolutionTests' Winograd sweep: odd planes, 1x1 and 2x2 planes, 37
    /// images of one tile each, channel counts off the 6-row panels (17, 19, 33: the last panel's zero rows).
    private static let sweep: [(n: Int, c: Int, h: Int, w: Int, oc: Int)] =
        [(1, 16, 4, 4, 16), (3, 16, 5, 7, 17), (2, 20, 8, 8, 33), (37, 16, 2, 2, 16), (5, 17, 1, 1, 19), (2, 24, 9, 3, 16)]

    private struct Results: Equatable { var out: [Float], outRelu: [Float], dx: [Float] }

    /// Forward (with bias; without bias under a bounded ReLU) and the input gradient added into ones, either by the
    /// transforming entry points or by the packed ones with packs made beforehand.
    private func run(_ g: (n: Int, c: Int, h: Int, w: Int, oc: Int), seed: UInt64, packed: Bool) -> Results {
        var s = ck_conv2d_shape(N: g.n, C: g.c, H: g.h, W: g.w, OC: g.oc, KH: 3, KW: 3, stride: 1, pad: 1, OH: g.h, OW: g.w)
        let x = randomArray(g.n * g.c * g.h * g.w, seed: seed), w = randomArray(g.oc * g.c * 9, seed: seed + 1)
        let b = randomArray(g.oc, seed: seed + 2), dout = randomArray(g.n * g.oc * g.h * g.w, seed: seed + 3)
        var work = [Float](repeating: .nan, count: ck_winograd_f2x3_workspace_floats(&s, ck_get_num_threads()))
        var out = [Float](repeating: .nan, count: dout.count), outRelu = out
        var dx = [Float](repeating: 1, count: x.count)  // the kernel adds into it
        if packed {
            // NaN-filled: every float the run reads must have been written by the transform
            var forward = [Float](repeating: .nan, count: ck_winograd_f2x3_filter_floats(&s, 0))
            var backward = [Float](repeating: .nan, count: ck_winograd_f2x3_filter_floats(&s, 1))
            ck_winograd_f2x3_filters(&forward, w, &s, 0)
            ck_winograd_f2x3_filters(&backward, w, &s, 1)
            ck_conv2d_winograd_forward_packed(&out, &work, forward, x, b, &s, CK_ACT_NONE, 0)
            ck_conv2d_winograd_forward_packed(&outRelu, &work, forward, x, nil, &s, CK_ACT_BRELU, 0.5)
            ck_conv2d_winograd_backward_input_packed(&dx, &work, backward, dout, &s)
        } else {
            ck_conv2d_winograd_forward(&out, &work, x, w, b, &s, CK_ACT_NONE, 0)
            ck_conv2d_winograd_forward(&outRelu, &work, x, w, nil, &s, CK_ACT_BRELU, 0.5)
            ck_conv2d_winograd_backward_input(&dx, &work, dout, w, &s)
        }
        return Results(out: out, outRelu: outRelu, dx: dx)
    }

    func testPackedFiltersGiveTheSameBitsAtOneTwoAndEightThreads() throws {
        guard ck_gemm_small_available() == 1 else { throw XCTSkip("Winograd runs on the AVX-512 path only") }
        for (i, g) in Self.sweep.enumerated() {
            ck_set_num_threads(1)
            let want = run(g, seed: UInt64(i) * 5, packed: false)
            XCTAssertFalse(want.out.contains { $0.isNaN } || want.dx.contains { $0.isNaN }, "\(g)")
            for threads in [1, 2, 8] {
                ck_set_num_threads(threads)
                XCTAssertEqual(run(g, seed: UInt64(i) * 5, packed: true), want, "threads \(threads) \(g)")
            }
        }
    }

    /// The forward packs hold (OC rounded up to 6) x C floats per transform position, the input gradient's
    /// (C rounded up to 6) x OC: 16 positions of 4x4.
    func testFilterFloats() {
        var s = ck_conv2d_shape(N: 2, C: 17, H: 4, W: 4, OC: 19, KH: 3, KW: 3, stride: 1, pad: 1, OH: 4, OW: 4)
        XCTAssertEqual(ck_winograd_f2x3_filter_floats(&s, 0), 16 * 24 * 17)
        XCTAssertEqual(ck_winograd_f2x3_filter_floats(&s, 1), 16 * 18 * 19)
    }
}
