import AdvKitTestSupport
import CKernels
import XCTest

/// Attack steps, norms, the counter-based generator and the optimizer updates.
final class StepAndRandomTests: XCTestCase {
    func testLinfStepStaysInBallAndBounds() {
        let n = 1000
        let x0 = randomArray(n, seed: 1, lo: 0, hi: 1)
        var x = x0
        let g = randomArray(n, seed: 2)
        for _ in 0..<10 { ck_linf_step(&x, g, x0, 0.03, 0.1, 0, 1, n) }
        for i in 0..<n {
            XCTAssertLessThanOrEqual(abs(x[i] - x0[i]), 0.1 + 1e-6)
            XCTAssertTrue(x[i] >= 0 && x[i] <= 1)
        }
        // One step from x0: exactly clip(x0 + a sign(g)).
        var y = x0
        ck_linf_step(&y, g, x0, 0.05, 0.1, 0, 1, n)
        assertClose(y, (0..<n).map { min(max(x0[$0] + 0.05 * (g[$0] > 0 ? 1 : -1), 0), 1) }, atol: 1e-7, rtol: 0, "one step")
        // sign(0) = 0: a zero gradient leaves the pixel alone.
        var z: [Float] = [0.5]
        ck_linf_step(&z, [0], [0.5], 0.1, 0.1, 0, 1, 1)
        XCTAssertEqual(z, [0.5])
    }

    func testL2StepAndProjection() {
        let (rows, d) = (3, 50)
        let x0 = randomArray(rows * d, seed: 3, lo: 0.2, hi: 0.8)
        var x = x0
        let g = randomArray(rows * d, seed: 4)
        ck_l2_step(&x, g, x0, 10, 0.5, 0, 1, rows, d)
        var l2 = [Float](repeating: 0, count: rows)
        ck_diff_norms(nil, &l2, nil, x, x0, 0, rows, d)
        for v in l2 { XCTAssertLessThanOrEqual(v, 0.5 + 1e-5) }
        XCTAssertTrue(x.allSatisfy { $0 >= 0 && $0 <= 1 })
        // A small step without clipping moves by exactly alpha.
        var y = x0
        ck_l2_step(&y, g, x0, 0.01, -1, -10, 10, rows, d)
        ck_diff_norms(nil, &l2, nil, y, x0, 0, rows, d)
        for v in l2 { XCTAssertEqual(v, 0.01, accuracy: 1e-6) }
    }

    func testDiffNorms() {
        let a: [Float] = [0, 0.5, 1, 0, 0, 0], b: [Float] = [0, 0.2, 0.6, 0, 0, 0.1]
        var l0: [Float] = [0, 0], l2: [Float] = [0, 0], li: [Float] = [0, 0]
        ck_diff_norms(&l0, &l2, &li, a, b, 1e-6, 2, 3)
        XCTAssertEqual(l0, [2, 1])
        XCTAssertEqual(l2[0], 0.5, accuracy: 1e-6)
        XCTAssertEqual(li[0], 0.4, accuracy: 1e-6)
        XCTAssertEqual(li[1], 0.1, accuracy: 1e-6)
    }

    func testCounterBasedGeneratorIsSplitInvariantAndHasTheRightMoments() {
        let n = 100_000
        var whole = [Float](repeating: 0, count: n)
        ck_random_normal(&whole, 42, 7, 0, 0, 1, n)
        var parts = [Float](repeating: 0, count: n)
        parts.withUnsafeMutableBufferPointer { p in
            ck_random_normal(p.baseAddress!, 42, 7, 0, 0, 1, 30_000)
            ck_random_normal(p.baseAddress! + 30_000, 42, 7, 30_000, 0, 1, n - 30_000)
        }
        XCTAssertEqual(whole, parts, "element i depends only on (seed, stream, i)")
        let mean = whole.reduce(0.0) { $0 + Double($1) } / Double(n)
        let variance = whole.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(n) - mean * mean
        XCTAssertEqual(mean, 0, accuracy: 0.02)   // 4 sigma of the mean at n = 1e5 is 0.013
        XCTAssertEqual(variance, 1, accuracy: 0.02)
        var u = [Float](repeating: 0, count: n)
        ck_random_uniform(&u, 1, 0, 0, 0, 1, n)
        XCTAssertTrue(u.allSatisfy { $0 >= 0 && $0 < 1 })
        XCTAssertEqual(u.reduce(0.0) { $0 + Double($1) } / Double(n), 0.5, accuracy: 0.01)
        var other = [Float](repeating: 0, count: n)
        ck_random_normal(&other, 43, 7, 0, 0, 1, n)
        XCTAssertNotEqual(whole, other, "another seed, other numbers")
    }

    func testSgdAndAdamFollowPyTorchsFormulas() {
        var p: [Float] = [1, -2], v: [Float] = [0, 0]
        let g: [Float] = [0.5, -1]
        ck_sgd_step(&p, &v, g, 0.1, 0.9, 0.01, 1, 2)
        XCTAssertEqual(p[0], 1 - 0.1 * (0.5 + 0.01), accuracy: 1e-7)
        ck_sgd_step(&p, &v, g, 0.1, 0.9, 0, 0, 2)
        XCTAssertEqual(v[0], 0.9 * 0.51 + 0.5, accuracy: 1e-6)
        var q: [Float] = [1], m: [Float] = [0], s: [Float] = [0]
        ck_adam_step(&q, &m, &s, [0.5], 0.001, 0.9, 0.999, 1e-8, 0, 1, 1)
        // First Adam step moves by lr * sign(g) (bias-corrected m/sqrt(v) = g/|g|).
        XCTAssertEqual(q[0], 1 - 0.001, accuracy: 1e-6)
    }

    /// C&W's vectorised tanh against Swift's, over the range that matters and beyond, and its box transform.
    func testTanhBoxAgainstTanh() {
        var w: [Float] = stride(from: -12.0, through: 12.0, by: 0.001).map { Float($0) }
        w += [0, -0, 1e-30, -1e-30, 0.4999999, 0.5, 0.5000001, 8.999, 9, 9.001, 50, -50, .infinity, -.infinity]
        var t = [Float](repeating: .nan, count: w.count), x = [Float](repeating: .nan, count: w.count)
        ck_tanh_box(&t, &x, w, 0.25, 0.5, w.count)
        for i in 0..<w.count {
            XCTAssertEqual(Double(t[i]), Double(tanh(w[i])), accuracy: 2e-7, "tanh(\(w[i]))")
            XCTAssertEqual(Double(x[i]), 0.25 + 0.5 * (Double(t[i]) + 1) / 2, accuracy: 1e-7)
        }
        var nanOut: [Float] = [0], nanX: [Float] = [0]
        ck_tanh_box(&nanOut, &nanX, [.nan], 0, 1, 1)
        XCTAssertTrue(nanOut[0].isNaN, "NaN stays NaN")
    }
}
