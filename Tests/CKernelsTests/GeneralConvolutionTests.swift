import AdvKitTestSupport
import CKernels
import XCTest

private func shape(_ g: Reference.GeneralConvGeometry) -> ck_conv2d_general_shape {
    ck_conv2d_general_shape(N: g.n, C: g.c, H: g.h, W: g.w, OC: g.oc, KH: g.kh, KW: g.kw, G: g.groups,
                            stride_h: g.strideH, stride_w: g.strideW, pad_t: g.padT, pad_l: g.padL, pad_b: g.padB,
                            pad_r: g.padR, dil_h: g.dilH, dil_w: g.dilW, OH: g.oh, OW: g.ow)
}

private func shape(_ g: Reference.GeneralPoolGeometry) -> ck_pool2d_general_shape {
    ck_pool2d_general_shape(N: g.n, C: g.c, H: g.h, W: g.w, KH: g.kh, KW: g.kw, stride_h: g.strideH,
                            stride_w: g.strideW, pad_t: g.padT, pad_l: g.padL, pad_b: g.padB, pad_r: g.padR,
                            dil_h: g.dilH, dil_w: g.dilW, OH: g.oh, OW: g.ow)
}

/// The general convolution (groups, dilation, a stride per axis, asymmetric padding) against the Swift reference
/// over a sweep of small shapes, and the same bits at 1, 2 and 8 threads.
final class GeneralConvolutionTests: XCTestCase {
    private var savedThreads = 1
    override func setUp() { savedThreads = ck_get_num_threads() }
    override func tearDown() { ck_set_num_threads(savedThreads) }

    /// (C, OC, groups): plain, two groups, depthwise (one filter per channel), depthwise with two filters per channel.
    private static let channelings = [(4, 6, 1), (4, 6, 2), (4, 4, 4), (3, 6, 3)]

    private var sweep: [Reference.GeneralConvGeometry] {
        var out: [Reference.GeneralConvGeometry] = []
        for n in [1, 3] { for (c, oc, groups) in Self.channelings { for dil in [1, 2] {
            for strides in [(1, 1), (2, 1), (2, 2)] { for pads in [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 2, 1)] {
                for (kh, kw) in [(1, 1), (3, 3), (5, 3)] {
                    out.append(.init(n: n, c: c, h: 9, w: 7, oc: oc, kh: kh, kw: kw, groups: groups, strides: strides,
                                     pads: pads, dilations: (dil, dil)))
                }
            } }
        } } }
        // More images than the weight gradient's 8 slots (uneven runs of images per slot).
        out.append(.init(n: 11, c: 4, h: 7, w: 9, oc: 6, kh: 3, kw: 3, groups: 2, strides: (2, 1), pads: (1, 0, 2, 1),
                         dilations: (2, 1)))
        out.append(.init(n: 11, c: 3, h: 7, w: 9, oc: 6, kh: 3, kw: 3, groups: 3, strides: (1, 2), pads: (0, 1, 1, 2)))
        return out
    }

    private struct Results: Equatable {
        var out: [Float], outNoBias: [Float], dx: [Float], dw: [Float], db: [Float], dxAlone: [Float], dwAlone: [Float]
    }

    /// Every kernel entry point on one geometry at the current thread count. Backward outputs start at 1: the
    /// kernels add into them.
    private func run(_ g: Reference.GeneralConvGeometry, seed: UInt64) -> Results {
        var s = shape(g)
        let x = randomArray(g.inputCount, seed: seed), w = randomArray(g.weightCount, seed: seed + 100)
        let b = randomArray(g.oc, seed: seed + 200), dout = randomArray(g.outputCount, seed: seed + 300)
        let threads = ck_get_num_threads()
        var work = [Float](repeating: .nan, count: max(1, ck_conv2d_general_workspace_floats(&s, threads, 1)))
        var out = [Float](repeating: .nan, count: g.outputCount), outNoBias = out
        ck_conv2d_general_forward(&out, &work, x, w, b, &s, CK_ACT_NONE, 0)
        ck_conv2d_general_forward(&outNoBias, &work, x, w, nil, &s, CK_ACT_NONE, 0)
        var dx = [Float](repeating: 1, count: x.count), dw = [Float](repeating: 1, count: w.count)
        var db = [Float](repeating: 1, count: g.oc)
        ck_conv2d_general_backward(&dx, &dw, &db, &work, dout, x, w, &s)
        // The input gradient alone (an attack's step), with the smaller workspace.
        var small = [Float](repeating: .nan, count: max(1, ck_conv2d_general_workspace_floats(&s, threads, 0)))
        var dxAlone = [Float](repeating: 1, count: x.count)
        ck_conv2d_general_backward(&dxAlone, nil, nil, &small, dout, x, w, &s)
        var dwAlone = [Float](repeating: 1, count: w.count)
        ck_conv2d_general_backward(nil, &dwAlone, nil, &work, dout, x, w, &s)
        return Results(out: out, outNoBias: outNoBias, dx: dx, dw: dw, db: db, dxAlone: dxAlone, dwAlone: dwAlone)
    }

    func testMatchesReferenceOverSweep() {
        ck_set_num_threads(1)
        for (i, g) in sweep.enumerated() {
            let seed = UInt64(i) * 7
            let r = run(g, seed: seed)
            let x = randomArray(g.inputCount, seed: seed), w = randomArray(g.weightCount, seed: seed + 100)
            let b = randomArray(g.oc, seed: seed + 200), dout = randomArray(g.outputCount, seed: seed + 300)
            // float32 sums of at most C/G*KH*KW = 30 products of values in [-1, 1], plus the bias
            assertClose(r.out, Reference.conv2dGeneral(x, w, b, g), atol: 1e-5, rtol: 1e-4, "forward \(g)")
            assertClose(r.outNoBias, Reference.conv2dGeneral(x, w, nil, g), atol: 1e-5, rtol: 1e-4, "forward no bias \(g)")
            let want = Reference.conv2dGeneralBackward(dout, x, w, g)
            // d(input): at most OC/G*KH*KW = 45 products per element
            assertClose(r.dx, want.dx.map { $0 + 1 }, atol: 1e-5, rtol: 1e-4, "dinp \(g)")
            assertClose(r.dxAlone, want.dx.map { $0 + 1 }, atol: 1e-5, rtol: 1e-4, "dinp alone \(g)")
            // d(weight), d(bias): sums over N*OH*OW <= 11*63 products in [-1, 1]
            assertClose(r.dw, want.dw.map { $0 + 1 }, atol: 2e-4, rtol: 1e-4, "dweight \(g)")
            assertClose(r.dwAlone, want.dw.map { $0 + 1 }, atol: 2e-4, rtol: 1e-4, "dweight alone \(g)")
            assertClose(r.db, want.db.map { $0 + 1 }, atol: 2e-4, rtol: 1e-4, "dbias \(g)")
        }
    }

    func testSameBitsAtOneTwoAndEightThreads() {
        for (i, g) in sweep.enumerated() where i % 3 == 0 || g.n == 11 {
            ck_set_num_threads(1)
            let one = run(g, seed: UInt64(i))
            for threads in [2, 8] {
                ck_set_num_threads(threads)
                XCTAssertEqual(run(g, seed: UInt64(i)), one, "threads \(threads) \(g)")
            }
        }
    }

    func testDepthwiseRouteIsChosenForGroupsEqualToChannels() {
        for (c, oc, groups) in Self.channelings {
            var s = shape(.init(n: 1, c: c, h: 5, w: 5, oc: oc, kh: 3, kw: 3, groups: groups))
            XCTAssertEqual(ck_conv2d_general_is_depthwise(&s), groups == c ? 1 : 0, "c \(c) oc \(oc) groups \(groups)")
            if groups == c && ck_depthwise2d_applies(&s) == 0 { XCTAssertEqual(ck_conv2d_general_workspace_floats(&s, 8, 1), 0, "the direct loops need no scratch") }
        }
    }

    func testFusedActivationEpilogue() {
        for (c, oc, groups) in [(4, 6, 2), (4, 4, 4)] {
            let g = Reference.GeneralConvGeometry(n: 2, c: c, h: 7, w: 6, oc: oc, kh: 3, kw: 3, groups: groups,
                                                  strides: (2, 1), pads: (1, 0, 1, 2), dilations: (1, 2))
            var s = shape(g)
            let x = randomArray(g.inputCount, seed: 1), w = randomArray(g.weightCount, seed: 2), b = randomArray(oc, seed: 3)
            let want = Reference.conv2dGeneral(x, w, b, g)
            var work = [Float](repeating: 0, count: max(1, ck_conv2d_general_workspace_floats(&s, ck_get_num_threads(), 0)))
            var out = [Float](repeating: .nan, count: want.count)
            ck_conv2d_general_forward(&out, &work, x, w, b, &s, CK_ACT_RELU, 0)
            assertClose(out, want.map { max($0, 0) }, atol: 1e-5, rtol: 1e-4, "ReLU groups \(groups)")  // as above
            ck_conv2d_general_forward(&out, &work, x, w, b, &s, CK_ACT_BRELU, 0.5)
            assertClose(out, want.map { min(max($0, 0), 0.5) }, atol: 1e-5, rtol: 1e-4, "bounded ReLU groups \(groups)")
        }
    }
}

/// General max and average pooling (padding, ceil mode, dilation, count_include_pad) against the Swift reference.
final class GeneralPoolingTests: XCTestCase {
    private var savedThreads = 1
    override func setUp() { savedThreads = ck_get_num_threads() }
    override func tearDown() { ck_set_num_threads(savedThreads) }

    private var sweep: [Reference.GeneralPoolGeometry] {
        var out: [Reference.GeneralPoolGeometry] = []
        for n in [1, 3] { for kernel in [(2, 2), (3, 3), (3, 2)] { for strides in [(1, 1), (2, 2), (2, 1)] {
            for pads in [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 1, 1)] { for ceil in [false, true] { for dil in [1, 2] {
                out.append(.init(n: n, c: 2, h: 7, w: 8, kernel: kernel, strides: strides, pads: pads,
                                 dilations: (dil, dil), ceil: ceil))
            } } }
        } } }
        return out
    }

    func testMaxPoolMatchesReference() {
        for threads in [1, 2, 8] {
            ck_set_num_threads(threads)
            for (i, g) in sweep.enumerated() {
                var s = shape(g)
                let x = randomArray(g.inputCount, seed: UInt64(i)), dout = randomArray(g.outputCount, seed: UInt64(i) + 50)
                var out = [Float](repeating: .nan, count: g.outputCount), arg = [Int32](repeating: -7, count: g.outputCount)
                ck_maxpool2d_general_forward(&out, &arg, x, &s)
                let want = Reference.maxPoolGeneral(x, g)
                assertClose(out, want.out, atol: 0, rtol: 0, "max threads \(threads) \(g)")  // a max picks one input exactly
                XCTAssertEqual(arg.map(Int.init), want.arg, "argmax threads \(threads) \(g)")
                var dx = [Float](repeating: 1, count: x.count)
                ck_maxpool2d_general_backward(&dx, dout, arg, &s)
                // float32 sums of the few windows (<= 9) that share a maximum
                assertClose(dx, Reference.maxPoolGeneralBackward(dout, x, g).map { $0 + 1 }, atol: 1e-6, rtol: 1e-6,
                            "max backward threads \(threads) \(g)")
            }
        }
    }

    func testAvgPoolMatchesReference() {
        for threads in [1, 2, 8] {
            ck_set_num_threads(threads)
            for (i, g) in sweep.enumerated() { for include in [false, true] {
                var s = shape(g)
                let x = randomArray(g.inputCount, seed: UInt64(i)), dout = randomArray(g.outputCount, seed: UInt64(i) + 50)
                var out = [Float](repeating: .nan, count: g.outputCount)
                ck_avgpool2d_general_forward(&out, x, &s, include ? 1 : 0)
                // a float32 sum of <= 9 values in [-1, 1], then one division
                assertClose(out, Reference.avgPoolGeneral(x, g, countIncludePad: include), atol: 1e-6, rtol: 1e-5,
                            "avg include \(include) threads \(threads) \(g)")
                var dx = [Float](repeating: 1, count: x.count)
                ck_avgpool2d_general_backward(&dx, dout, &s, include ? 1 : 0)
                assertClose(dx, Reference.avgPoolGeneralBackward(dout, g, countIncludePad: include).map { $0 + 1 },
                            atol: 1e-6, rtol: 1e-5, "avg backward include \(include) threads \(threads) \(g)")
            } }
        }
    }

    func testSameBitsAtOneTwoAndEightThreads() {
        for (i, g) in sweep.enumerated() where i % 5 == 0 {
            var s = shape(g)
            let x = randomArray(g.inputCount, seed: UInt64(i)), dout = randomArray(g.outputCount, seed: UInt64(i) + 50)
            func all() -> [Float] {
                var mx = [Float](repeating: 0, count: g.outputCount), av = mx, arg = [Int32](repeating: 0, count: g.outputCount)
                var dmx = [Float](repeating: 0, count: x.count), dav = dmx
                ck_maxpool2d_general_forward(&mx, &arg, x, &s)
                ck_maxpool2d_general_backward(&dmx, dout, arg, &s)
                ck_avgpool2d_general_forward(&av, x, &s, 1)
                ck_avgpool2d_general_backward(&dav, dout, &s, 1)
                return mx + av + dmx + dav + arg.map { Float($0) }
            }
            ck_set_num_threads(1)
            let one = all()
            for threads in [2, 8] {
                ck_set_num_threads(threads)
                XCTAssertEqual(all(), one, "threads \(threads) \(g)")
            }
        }
    }

    /// Ties go to the first tap in row-major order, padding never wins a max (even over negative inputs), and a
    /// NaN propagates.
    func testMaxPoolTiesPaddingAndNaN() {
        let g = Reference.GeneralPoolGeometry(n: 1, c: 1, h: 3, w: 3, kernel: (2, 2), strides: (2, 2), pads: (1, 1, 1, 1))
        var s = shape(g)
        var out = [Float](repeating: 0, count: 4), arg = [Int32](repeating: 0, count: 4)
        ck_maxpool2d_general_forward(&out, &arg, [Float](repeating: -2, count: 9), &s)
        XCTAssertEqual(out, [-2, -2, -2, -2], "padding is -inf, not 0")
        XCTAssertEqual(arg, [0, 1, 3, 4], "the first of equal values, row-major")
        var x = [Float](repeating: 0, count: 9)
        x[4] = .nan
        ck_maxpool2d_general_forward(&out, &arg, x, &s)
        XCTAssertTrue(out[3].isNaN, "a NaN is taken")
        XCTAssertEqual(arg[3], 4)
    }

    /// Values PyTorch printed, quoted in the public issues that discuss them (anchors for the reference's rules).
    func testKnownPyTorchValues() {
        let x = (1...16).map(Float.init)  // 4x4
        // F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=True) (pytorch/pytorch#183528):
        // the last row and column of windows run past the padded input and count only their part inside.
        let g1 = Reference.GeneralPoolGeometry(n: 1, c: 1, h: 4, w: 4, kernel: (3, 3), strides: (2, 2),
                                               pads: (1, 1, 1, 1), ceil: true)
        var s1 = shape(g1)
        var out1 = [Float](repeating: .nan, count: 9)
        ck_avgpool2d_general_forward(&out1, x, &s1, 1)
        assertClose(out1, [1.5555556, 3.3333333, 2.0, 6.3333335, 11.0, 6.0, 4.5, 7.5, 4.0], atol: 1e-6, rtol: 1e-6,
                    "PyTorch ceil + count_include_pad")
        // kernel 3, stride 2, no padding, ceil mode, count_include_pad 0 (the ONNX spec's answer quoted in
        // microsoft/onnxscript#754): [[6, 7.5], [12, 13.5]].
        let g2 = Reference.GeneralPoolGeometry(n: 1, c: 1, h: 4, w: 4, kernel: (3, 3), strides: (2, 2), ceil: true)
        var s2 = shape(g2)
        var out2 = [Float](repeating: .nan, count: 4)
        ck_avgpool2d_general_forward(&out2, x, &s2, 0)
        XCTAssertEqual(out2, [6, 7.5, 12, 13.5])
    }
}
