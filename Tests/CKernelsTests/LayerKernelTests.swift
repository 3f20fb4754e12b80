import AdvKitTestSupport
import CKernels
import XCTest

/// Linear, pooling, activations, batch norm and softmax cross-entropy against their references.
final class LayerKernelTests: XCTestCase {
    override func tearDown() { ck_set_num_threads(1) }

    func testLinearForwardAndBackward() {
        for (n, inF, outF) in [(1, 1, 1), (3, 7, 5), (64, 100, 33)] {
            let x = randomArray(n * inF, seed: 1), w = randomArray(outF * inF, seed: 2), b = randomArray(outF, seed: 3)
            var out = [Float](repeating: .nan, count: n * outF)
            ck_linear_forward(&out, x, w, b, n, inF, outF, CK_ACT_NONE, 0)
            assertClose(out, Reference.linear(x, w, b, n: n, inF: inF, outF: outF), atol: 1e-5, rtol: 1e-4, "forward \(n) \(inF) \(outF)")
            let dout = randomArray(n * outF, seed: 4)
            var dx = [Float](repeating: 0, count: x.count), dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: outF)
            ck_linear_backward(&dx, &dw, &db, dout, x, w, n, inF, outF)
            var wantDx = [Double](repeating: 0, count: x.count), wantDw = [Double](repeating: 0, count: w.count)
            var wantDb = [Double](repeating: 0, count: outF)
            for r in 0..<n { for o in 0..<outF {
                let d = Double(dout[r * outF + o])
                wantDb[o] += d
                for i in 0..<inF {
                    wantDx[r * inF + i] += d * Double(w[o * inF + i])
                    wantDw[o * inF + i] += d * Double(x[r * inF + i])
                }
            } }
            assertClose(dx, wantDx, atol: 1e-5, rtol: 1e-4, "dx")
            assertClose(dw, wantDw, atol: 1e-4, rtol: 1e-4, "dw")
            assertClose(db, wantDb, atol: 1e-4, rtol: 1e-4, "db")
        }
    }

    func testMaxPoolForwardBackwardAndTies() {
        for threads in [1, 2] {
            ck_set_num_threads(threads)
            for (k, st, h, w) in [(2, 2, 6, 8), (3, 2, 7, 7), (2, 1, 5, 4), (3, 3, 9, 6), (2, 2, 7, 9)] {
                let n = 3, c = 2
                var s = ck_pool_shape(N: n, C: c, H: h, W: w, K: k, stride: st, OH: (h - k) / st + 1, OW: (w - k) / st + 1)
                let x = randomArray(n * c * h * w, seed: UInt64(k * 10 + st))
                var out = [Float](repeating: .nan, count: n * c * s.OH * s.OW), arg = [Int32](repeating: -1, count: out.count)
                ck_maxpool2d_forward(&out, &arg, x, &s)
                let want = Reference.maxPool(x, n: n, c: c, h: h, w: w, k: k, s: st)
                assertClose(out, want.out, atol: 0, rtol: 0, "maxpool k \(k) s \(st)")
                XCTAssertEqual(arg.map(Int.init), want.arg)
                let dout = randomArray(out.count, seed: 9)
                var dx = [Float](repeating: 0, count: x.count)
                ck_maxpool2d_backward(&dx, dout, arg, &s)
                var wantDx = [Double](repeating: 0, count: x.count)
                for p in 0..<(n * c) { for o in 0..<(s.OH * s.OW) { wantDx[p * h * w + want.arg[p * s.OH * s.OW + o]] += Double(dout[p * s.OH * s.OW + o]) } }
                assertClose(dx, wantDx, atol: 1e-6, rtol: 0, "maxpool backward")
                // Fused with the mask of the activation that made x: overwrites, passes where x > 0 (and < bound).
                for (act, bound) in [(CK_ACT_NONE, Float(0)), (CK_ACT_RELU, 0), (CK_ACT_BRELU, 0.4)] {
                    var masked = [Float](repeating: .nan, count: x.count)
                    ck_maxpool2d_backward_masked(&masked, dout, arg, out, act, bound, &s)
                    let wantMasked = (0..<x.count).map { i -> Double in
                        let pass = act == CK_ACT_NONE || (x[i] > 0 && (act != CK_ACT_BRELU || x[i] < bound))
                        return pass ? wantDx[i] : 0
                    }
                    assertClose(masked, wantMasked, atol: 1e-6, rtol: 0, "masked maxpool backward k \(k) s \(st) \(act)")
                }
            }
        }
        // Ties: the first maximum in row-major order wins (as PyTorch).
        var s = ck_pool_shape(N: 1, C: 1, H: 2, W: 2, K: 2, stride: 2, OH: 1, OW: 1)
        var out: [Float] = [0], arg: [Int32] = [0]
        ck_maxpool2d_forward(&out, &arg, [0.5, 0.5, 0.5, 0.5], &s)
        XCTAssertEqual(arg, [0])
    }

    /// The 2x2 stride-2 window (pool.c's AVX-512 plane, 16 outputs per step): rows of 4, 12, 16, 20 and 33 outputs
    /// (one step, a partial step, two steps), odd widths and heights (the last column or row unused), NaNs and
    /// ties, against the rule written out: the window's elements in row-major order, a later one taken when it is
    /// larger, or NaN while the best so far is not.
    func testMaxPool2x2AgainstTheRuleWithNaNAndTies() {
        for (h, w) in [(8, 8), (24, 24), (4, 32), (5, 41), (3, 67)] {
            let n = 2, c = 3, oh = h / 2, ow = w / 2
            var x = randomArray(n * c * h * w, seed: UInt64(h * 100 + w))
            for i in stride(from: 0, to: x.count, by: 7) { x[i] = x[i + 1 < x.count ? i + 1 : i] }  // ties
            for i in stride(from: 3, to: x.count, by: 29) { x[i] = .nan }
            var s = ck_pool_shape(N: n, C: c, H: h, W: w, K: 2, stride: 2, OH: oh, OW: ow)
            var out = [Float](repeating: -7, count: n * c * oh * ow), arg = [Int32](repeating: -1, count: out.count)
            ck_maxpool2d_forward(&out, &arg, x, &s)
            for p in 0..<(n * c) { for y in 0..<oh { for xx in 0..<ow {
                var bi = 2 * y * w + 2 * xx
                var best = x[p * h * w + bi]
                for idx in [2 * y * w + 2 * xx + 1, (2 * y + 1) * w + 2 * xx, (2 * y + 1) * w + 2 * xx + 1] {
                    let v = x[p * h * w + idx]
                    if v > best || (v.isNaN && !best.isNaN) { best = v; bi = idx }
                }
                let o = (p * oh + y) * ow + xx
                XCTAssertTrue(out[o] == best || (out[o].isNaN && best.isNaN), "h \(h) w \(w) plane \(p) (\(y), \(xx))")
                XCTAssertEqual(Int(arg[o]), bi, "h \(h) w \(w) plane \(p) (\(y), \(xx))")
            } } }
            // The masked backward on the same windows (pool.c's AVX-512 plane writes every input once): the
            // gradient goes to the argmax where the activation passed the value there, zeros everywhere else (the
            // unused last row or column too), bit for bit. dout has NaNs and a -0, which becomes +0 (0 + g).
            var dout = randomArray(out.count, seed: UInt64(h * w))
            dout[0] = -0.0
            for i in stride(from: 5, to: dout.count, by: 31) { dout[i] = .nan }
            for (act, bound) in [(CK_ACT_NONE, Float(0)), (CK_ACT_RELU, 0), (CK_ACT_BRELU, 0.4)] {
                var dx = [Float](repeating: 7, count: x.count)
                ck_maxpool2d_backward_masked(&dx, dout, arg, out, act, bound, &s)
                var want = [Float](repeating: 0, count: x.count)
                for p in 0..<(n * c) { for o in 0..<(oh * ow) {
                    let at = p * h * w + Int(arg[p * oh * ow + o]), v = x[at]
                    let pass = act == CK_ACT_NONE || (v > 0 && (act != CK_ACT_BRELU || v < bound))
                    want[at] = 0 + (pass ? dout[p * oh * ow + o] : 0)
                } }
                XCTAssertEqual(dx.map(\.bitPattern), want.map(\.bitPattern), "masked backward h \(h) w \(w) \(act)")
            }
        }
    }

    func testAvgPoolForwardAndBackward() {
        let (n, c, h, w, k, st) = (2, 3, 6, 7, 2, 2)
        var s = ck_pool_shape(N: n, C: c, H: h, W: w, K: k, stride: st, OH: (h - k) / st + 1, OW: (w - k) / st + 1)
        let x = randomArray(n * c * h * w, seed: 10)
        var out = [Float](repeating: .nan, count: n * c * s.OH * s.OW)
        ck_avgpool2d_forward(&out, x, &s)
        assertClose(out, Reference.avgPool(x, n: n, c: c, h: h, w: w, k: k, s: st), atol: 1e-6, rtol: 1e-5, "avgpool")
        // Adjoint check: <avgpool(x), d> == <x, avgpool_backward(d)>
        let d = randomArray(out.count, seed: 11)
        var dx = [Float](repeating: 0, count: x.count)
        ck_avgpool2d_backward(&dx, d, &s)
        let lhs = zip(out, d).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let rhs = zip(x, dx).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        XCTAssertEqual(lhs, rhs, accuracy: 1e-4)
    }

    func testReluAndBoundedReluWithMasks() {
        let x: [Float] = [-2, -0.5, 0, 0.3, 0.99, 1, 1.5, 7]
        var out = [Float](repeating: .nan, count: x.count)
        ck_relu_forward(&out, x, x.count)
        XCTAssertEqual(out, x.map { max($0, 0) })
        var dx = [Float](repeating: 0, count: x.count)
        ck_relu_backward(&dx, [Float](repeating: 2, count: x.count), out, x.count)
        XCTAssertEqual(dx, x.map { $0 > 0 ? 2 : 0 })
        ck_brelu_forward(&out, x, 1, x.count)
        XCTAssertEqual(out, x.map { min(max($0, 0), 1) })
        XCTAssertLessThanOrEqual(out.max()!, 1, "saturates at t")
        dx = [Float](repeating: 0, count: x.count)
        ck_brelu_backward(&dx, [Float](repeating: 2, count: x.count), out, 1, x.count)
        XCTAssertEqual(dx, x.map { $0 > 0 && $0 < 1 ? 2 : 0 })
    }

    func testSoftmaxCrossEntropyWithSmoothingAndHugeLogits() {
        let (n, k) = (4, 5)
        for smoothing: Float in [0, 0.1] {
            var z = randomArray(n * k, seed: 12, lo: -5, hi: 5)
            z[3] = 1e4  // stable: log-sum-exp subtracts the row maximum
            z[4] = -1e4
            let labels: [Int32] = [3, 0, 4, 2]
            var loss = [Float](repeating: .nan, count: n), probs = [Float](repeating: .nan, count: n * k)
            ck_softmax_xent_forward(&loss, &probs, z, labels, smoothing, n, k)
            let want = Reference.crossEntropy(z, labels: labels.map(Int.init), k: k, smoothing: Double(smoothing))
            assertClose(loss, want.loss, atol: 1e-4, rtol: 1e-5, "loss smoothing \(smoothing)")
            var dz = [Float](repeating: 0, count: z.count)
            ck_softmax_xent_backward(&dz, probs, labels, nil, smoothing, n, k)
            assertClose(dz, want.grad, atol: 1e-6, rtol: 1e-5, "gradient smoothing \(smoothing)")
            XCTAssertTrue(loss.allSatisfy(\.isFinite))
        }
    }

    func testBatchNormTrainingForwardAndBackward() {
        let (n, c, hw) = (3, 2, 5)
        let x = randomArray(n * c * hw, seed: 13, lo: -2, hi: 3)
        let gamma: [Float] = [1.5, 0.5], beta: [Float] = [0.1, -0.2]
        var out = [Float](repeating: .nan, count: x.count), xhat = out
        var mean: [Float] = [0, 0], invstd: [Float] = [0, 0]
        ck_batchnorm2d_forward_train(&out, &xhat, &mean, &invstd, x, gamma, beta, n, c, hw, 1e-5)
        for ch in 0..<c {
            let vals = (0..<n).flatMap { i in (0..<hw).map { Double(x[(i * c + ch) * hw + $0]) } }
            let mu = vals.reduce(0, +) / Double(vals.count)
            let v = vals.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(vals.count)
            XCTAssertEqual(Double(mean[ch]), mu, accuracy: 1e-5)
            let got = (0..<n).flatMap { i in (0..<hw).map { out[(i * c + ch) * hw + $0] } }
            assertClose(got, vals.map { Double(gamma[ch]) * ($0 - mu) / (v + 1e-5).squareRoot() + Double(beta[ch]) }, atol: 1e-5, rtol: 1e-4, "bn channel \(ch)")
        }
        // The backward's input gradient is orthogonal to constants and to xhat per channel (it removes both).
        let dout = randomArray(x.count, seed: 14)
        var dx = [Float](repeating: 0, count: x.count), dg: [Float] = [0, 0], db: [Float] = [0, 0]
        ck_batchnorm2d_backward(&dx, &dg, &db, dout, xhat, invstd, gamma, n, c, hw)
        for ch in 0..<c {
            let idx = (0..<n).flatMap { i in (0..<hw).map { (i * c + ch) * hw + $0 } }
            XCTAssertEqual(idx.reduce(0.0) { $0 + Double(dx[$1]) }, 0, accuracy: 1e-5)
            XCTAssertEqual(idx.reduce(0.0) { $0 + Double(dx[$1]) * Double(xhat[$1]) }, 0, accuracy: 1e-4)
            XCTAssertEqual(Double(db[ch]), idx.reduce(0.0) { $0 + Double(dout[$1]) }, accuracy: 1e-5)
        }
    }
}
