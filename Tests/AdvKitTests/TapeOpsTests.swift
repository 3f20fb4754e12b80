@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// The ONNX-import ops on the tape (Broadcasting.swift, Elementwise.swift, ShapeOps.swift, MatMul.swift): values
/// against plain index-by-index references in Double, gradients against central finite differences.
final class TapeOpsTests: XCTestCase {
    // Tolerances, named for why they are what they are.
    /// One float32 operation per element (an add, a product, a quotient, a copy): a few ulps.
    let elementwise = (atol: 1e-6, rtol: 1e-6)
    /// float32 library functions (exp, tanh) against Double ones.
    let transcendental = (atol: 1e-6, rtol: 1e-5)
    /// float32 sums of up to a few hundred terms (reductions, matrix products through sgemm).
    let summed = (atol: 1e-5, rtol: 1e-5)

    // MARK: - Broadcasting

    /// The broadcasting patterns of imported CNNs: (name, a's shape, b's shape).
    let patterns: [(String, Shape, Shape)] = [
        ("equal shapes", [2, 3, 4, 5], [2, 3, 4, 5]),
        ("per-channel [1,C,1,1]", [2, 3, 4, 5], [1, 3, 1, 1]),
        ("per-channel as the first operand", [1, 3, 1, 1], [2, 3, 4, 5]),
        ("squeeze-excitation [N,C,1,1]", [2, 3, 4, 5], [2, 3, 1, 1]),
        ("NHWC + [C]", [2, 4, 5, 3], [3]),
        ("scalar []", [2, 3, 4], []),
        ("scalar [1] first", [1], [2, 3, 4]),
        ("both operands broadcast", [3, 1, 5], [4, 1]),
        ("row vector", [4, 5], [1, 5]),
        ("two scalars", [], []),
    ]

    func testBroadcastShapeFollowsNumPyAndNamesBothShapesWhenItFails() throws {
        let cases: [(Shape, Shape, Shape)] = [
            ([2, 3, 4, 5], [1, 3, 1, 1], [2, 3, 4, 5]), ([2, 4, 5, 3], [3], [2, 4, 5, 3]), ([3, 1, 5], [4, 1], [3, 4, 5]),
            ([], [2, 3], [2, 3]), ([1], [], [1]), ([0, 3], [1, 3], [0, 3]), ([2, 1], [1, 0], [2, 0]),
        ]
        for (a, b, want) in cases {
            XCTAssertEqual(try Tape.broadcastShape(a, b), want, "\(a) with \(b)")
            XCTAssertEqual(try Tape.broadcastShape(b, a), want, "\(b) with \(a)")
        }
        XCTAssertThrowsError(try Tape.broadcastShape([2, 3], [4, 3])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("[2, 3]") && text.contains("[4, 3]"), text)
            XCTAssertEqual(error as? AdvKitError, .invalidData(text))
        }
    }

    func testBroadcastBinaryOpsMatchTheReference() {
        for (name, sa, sb) in patterns {
            let a = randomTensor(sa, seed: 1), b = divisor(sb, seed: 2)
            let ops: [(String, (Tape, Variable, Variable) -> Variable, (Double, Double) -> Double)] = [
                ("add", { $0.broadcastAdd($1, $2) }, +), ("subtract", { $0.subtract($1, $2) }, -),
                ("multiply", { $0.multiply($1, $2) }, *), ("divide", { $0.divide($1, $2) }, /),
            ]
            for (opName, op, f) in ops {
                let tape = Tape()
                let y = op(tape, tape.input(a), tape.input(b))
                let (shape, want) = referenceBroadcast(a, b, f)
                XCTAssertEqual(y.shape, shape, "\(opName) \(name)")
                assertClose(y.value.scalars, want, atol: elementwise.atol, rtol: elementwise.rtol, "\(opName) \(name)")
            }
        }
    }

    func testBroadcastBinaryOpGradientsForEveryPattern() {
        for (name, sa, sb) in patterns {
            let a = randomTensor(sa, seed: 3), b = divisor(sb, seed: 4)
            checkGradients([a, b]) { t, v in t.broadcastAdd(v[0], v[1]) }
            checkGradients([a, b]) { t, v in t.subtract(v[0], v[1]) }
            checkGradients([a, b]) { t, v in t.multiply(v[0], v[1]) }
            checkGradients([a, b]) { t, v in t.divide(v[0], v[1]) }
            _ = name
        }
    }

    func testTheSameVariableOnBothSides() {
        // x·x and x/x: both gradients land in one accumulator.
        let x = divisor([3, 4], seed: 5)
        checkGradients([x]) { t, v in t.multiply(v[0], v[0]) }
        checkGradients([x]) { t, v in t.divide(t.broadcastAdd(v[0], v[0]), v[0]) }
    }

    func testExpandBroadcastsBothWaysAndSumsItsGradient() throws {
        XCTAssertEqual(try Tape.expandShape([3, 1], to: [2, 1, 4]), [2, 3, 4])
        XCTAssertEqual(try Tape.expandShape([2, 3], to: [1, 3]), [2, 3], "a 1 in the target keeps x's dimension")
        XCTAssertThrowsError(try Tape.expandShape([2, 3], to: [4, 3]))
        for (sx, target) in [(Shape(3, 1), Shape(2, 1, 4)), ([1, 3, 1, 1], [2, 3, 2, 2]), ([2, 3], [1, 3]), ([], [2, 2])] {
            let x = randomTensor(sx, seed: 6)
            let tape = Tape()
            let y = tape.expand(tape.input(x), to: target)
            let (shape, want) = referenceBroadcast(x, Tensor(zeros: target)) { u, _ in u }
            XCTAssertEqual(y.shape, shape)
            assertClose(y.value.scalars, want, atol: 0, rtol: 0, "expand \(sx) to \(target)")
            checkGradients([x]) { t, v in t.expand(v[0], to: target) }
        }
    }

    // MARK: - Element-wise

    func testUnaryOpsMatchTheReference() {
        let x = randomTensor([4, 50], seed: 7, lo: -5, hi: 5)
        let positive = randomTensor([4, 50], seed: 8, lo: 0.1, hi: 4)
        let cases: [(String, Tensor, (Tape, Variable) -> Variable, (Double) -> Double)] = [
            ("sigmoid", x, { $0.sigmoid($1) }, { 1 / (1 + Foundation.exp(-$0)) }),
            ("tanh", x, { $0.hyperbolicTangent($1) }, { Foundation.tanh($0) }),
            ("leakyReLU", x, { $0.leakyReLU($1, alpha: 0.1) }, { $0 >= 0 ? $0 : 0.1 * $0 }),
            ("hardSigmoid default", x, { $0.hardSigmoid($1) }, { Swift.max(0, Swift.min(1, 0.2 * $0 + 0.5)) }),
            ("hardSigmoid PyTorch", x, { $0.hardSigmoid($1, alpha: 1 / 6) }, { Swift.max(0, Swift.min(1, $0 / 6 + 0.5)) }),
            ("hardSwish", x, { $0.hardSwish($1) }, { $0 * Swift.max(0, Swift.min(1, $0 / 6 + 0.5)) }),
            ("ReLU6 as clip", x, { $0.clip($1, min: 0, max: 6) }, { Swift.min(Swift.max($0, 0), 6) }),
            ("clip min only", x, { $0.clip($1, min: -1) }, { Swift.max($0, -1) }),
            ("clip max only", x, { $0.clip($1, max: 0.5) }, { Swift.min($0, 0.5) }),
            ("clip min > max", x, { $0.clip($1, min: 1, max: -1) }, { _ in -1 }),
            ("negate", x, { $0.negate($1) }, { -$0 }),
            ("exp", x, { $0.exponential($1) }, { Foundation.exp($0) }),
            ("sqrt", positive, { $0.squareRoot($1) }, { $0.squareRoot() }),
        ]
        for (name, input, op, f) in cases {
            let tape = Tape()
            let y = op(tape, tape.input(input))
            XCTAssertEqual(y.shape, input.shape, name)
            assertClose(y.value.scalars, input.scalars.map { f(Double($0)) }, atol: transcendental.atol,
                        rtol: transcendental.rtol, name)
        }
    }

    func testUnaryOpGradientsAwayFromKinks() {
        // Inputs at least 0.1 from every kink (finite differences use eps 0.01 and know nothing of these ops' kinks).
        let x = awayFrom([-3, -2.5, 0, 2.5, 3, 6, -1, 0.5], randomTensor([4, 50], seed: 9, lo: -7, hi: 7))
        checkGradients([randomTensor([4, 50], seed: 10, lo: -4, hi: 4)]) { t, v in t.sigmoid(v[0]) }
        checkGradients([randomTensor([4, 50], seed: 11, lo: -2, hi: 2)]) { t, v in t.hyperbolicTangent(v[0]) }
        checkGradients([x]) { t, v in t.leakyReLU(v[0], alpha: 0.1) }
        checkGradients([x]) { t, v in t.hardSigmoid(v[0]) }
        checkGradients([x]) { t, v in t.hardSigmoid(v[0], alpha: 1 / 6) }
        checkGradients([x]) { t, v in t.hardSwish(v[0]) }
        checkGradients([x]) { t, v in t.clip(v[0], min: 0, max: 6) }
        checkGradients([x]) { t, v in t.clip(v[0], min: -1) }
        checkGradients([x]) { t, v in t.clip(v[0], max: 0.5) }
        checkGradients([x]) { t, v in t.negate(v[0]) }
        checkGradients([randomTensor([4, 50], seed: 12, lo: -2, hi: 2)]) { t, v in t.exponential(v[0]) }
        checkGradients([randomTensor([4, 50], seed: 13, lo: 0.5, hi: 4)]) { t, v in t.squareRoot(v[0]) }
    }

    func testGradientsAtKinksFollowPyTorch() {
        func grad(_ values: [Float], _ op: (Tape, Variable) -> Variable) -> [Float] {
            let tape = Tape()
            let x = tape.input(Tensor(values))
            return tape.gradient(of: op(tape, x), wrt: x).scalars
        }
        XCTAssertEqual(grad([0, -1, 1]) { $0.leakyReLU($1, alpha: 0.1) }, [0.1, 0.1, 1], "leaky_relu_backward: α at 0")
        XCTAssertEqual(grad([-3, 3, -4, 4]) { $0.hardSwish($1) }, [0, 1, 0, 1], "hardswish_backward: 0 at −3, 1 at 3")
        XCTAssertEqual(grad([0, 6, -0.5, 6.5, 3]) { $0.clip($1, min: 0, max: 6) }, [1, 1, 0, 0, 1],
                       "clamp_backward: the bounds pass the gradient")
        XCTAssertEqual(grad([-3, 3, 0]) { $0.hardSigmoid($1, alpha: 1 / 6) }, [0, 0, 1 / 6],
                       "hardsigmoid_backward: no gradient at ±3")
        XCTAssertEqual(grad([-2.5, 2.5]) { $0.hardSigmoid($1) }, [0, 0], "no gradient where αx + β is exactly 0 or 1")
    }

    func testSoftmaxAndLogSoftmaxAlongAnAxis() {
        let x = randomTensor([2, 3, 4], seed: 14, lo: -3, hi: 3)
        for axis in [-1, 1, 0] {
            let tape = Tape()
            let v = tape.input(x)
            let p = tape.softmax(v, axis: axis), lp = tape.logSoftmax(v, axis: axis)
            let want = referenceSoftmax(x, axis: axis)
            assertClose(p.value.scalars, want, atol: transcendental.atol, rtol: transcendental.rtol, "softmax axis \(axis)")
            assertClose(lp.value.scalars, want.map { Foundation.log($0) }, atol: transcendental.atol,
                        rtol: transcendental.rtol, "logSoftmax axis \(axis)")
            checkGradients([x]) { t, v in t.softmax(v[0], axis: axis) }
            checkGradients([x]) { t, v in t.logSoftmax(v[0], axis: axis) }
        }
    }

    // MARK: - Shape operations

    func testTransposeAnyPermutation() throws {
        let cases: [(Shape, [Int]?)] = [
            ([3, 4], [1, 0]), ([2, 3, 4], [2, 0, 1]), ([2, 3, 4, 5], [0, 2, 3, 1]), ([2, 3, 4, 5], [0, 3, 1, 2]),
            ([2, 3, 4, 5], nil), ([2, 3, 4, 5], [0, 1, 2, 3]), ([2, 1, 3, 1], [3, 2, 0, 1]), ([5], [0]),
        ]
        for (shape, perm) in cases {
            let x = randomTensor(shape, seed: 15)
            let p = perm ?? Array((0..<shape.rank).reversed())
            let tape = Tape()
            let y = tape.transpose(tape.input(x), permutation: perm)
            XCTAssertEqual(y.shape, Shape(p.map { shape[$0] }), "\(shape) \(p)")
            let want = (0..<x.count).map { flat -> Double in
                let outIndex = unravel(flat, y.shape.dims)
                var inIndex = [Int](repeating: 0, count: shape.rank)
                for i in 0..<p.count { inIndex[p[i]] = outIndex[i] }
                return Double(x.scalars[ravel(inIndex, shape.dims)])
            }
            assertClose(y.value.scalars, want, atol: 0, rtol: 0, "transpose \(shape) \(p)")
            checkGradients([x]) { t, v in t.transpose(v[0], permutation: perm) }
        }
        XCTAssertThrowsError(try Tape.transposeShape([2, 3], permutation: [0, 0]))
        XCTAssertThrowsError(try Tape.transposeShape([2, 3], permutation: [0, 1, 2]))
    }

    func testConcatAnyNumberOfInputsAlongAnyAxis() throws {
        let cases: [([Shape], Int)] = [
            ([[2, 1, 3], [2, 4, 3], [2, 2, 3]], 1), ([[2, 3, 1], [2, 3, 2]], -1), ([[1, 3], [2, 3], [1, 3], [3, 3]], 0),
            ([[2, 3, 2, 2]], 1), ([[2, 2, 2, 2], [2, 3, 2, 2]], 1),
        ]
        for (shapes, axis) in cases {
            let xs = shapes.enumerated().map { randomTensor($1, seed: 16 + UInt64($0)) }
            let tape = Tape()
            let y = tape.concat(xs.map { tape.input($0) }, axis: axis)
            let a = axis < 0 ? axis + shapes[0].rank : axis
            var dims = shapes[0].dims
            dims[a] = shapes.reduce(0) { $0 + $1[a] }
            XCTAssertEqual(y.shape, Shape(dims))
            let want = (0..<y.shape.count).map { flat -> Double in
                var index = unravel(flat, dims)
                var k = 0
                while index[a] >= shapes[k][a] {
                    index[a] -= shapes[k][a]
                    k += 1
                }
                return Double(xs[k].scalars[ravel(index, shapes[k].dims)])
            }
            assertClose(y.value.scalars, want, atol: 0, rtol: 0, "concat \(shapes) axis \(axis)")
            checkGradients(xs) { t, v in t.concat(v, axis: axis) }
        }
        XCTAssertThrowsError(try Tape.concatShape([[2, 3], [3, 3]], axis: 1))
        XCTAssertThrowsError(try Tape.concatShape([[2, 3], [2, 3, 1]], axis: 0))
        XCTAssertThrowsError(try Tape.concatShape([], axis: 0))
    }

    func testPadWithConstantAndCropWithNegativePads() throws {
        let cases: [(Shape, [Int], [Int])] = [
            ([2, 3, 4], [0, 1, 2], [1, 0, 1]), ([2, 3, 4], [0, 1, -1], [1, -1, 2]), ([1, 2, 3, 3], [0, 0, 1, 1], [0, 0, 1, 1]),
            ([2, 3], [-2, 0], [1, -3]), ([2, 3], [0, 4], [0, -5]),
        ]
        for (shape, begins, ends) in cases {
            let x = randomTensor(shape, seed: 20)
            let tape = Tape()
            let y = tape.pad(tape.input(x), begins: begins, ends: ends, value: 0.25)
            let dims = (0..<shape.rank).map { shape[$0] + begins[$0] + ends[$0] }
            XCTAssertEqual(y.shape, Shape(dims))
            let want = (0..<y.shape.count).map { flat -> Double in
                let index = zip(unravel(flat, dims), begins).map { $0 - $1 }
                let inside = (0..<shape.rank).allSatisfy { index[$0] >= 0 && index[$0] < shape[$0] }
                return inside ? Double(x.scalars[ravel(index, shape.dims)]) : 0.25
            }
            assertClose(y.value.scalars, want, atol: 0, rtol: 0, "pad \(shape) \(begins) \(ends)")
            checkGradients([x], minChecked: 0) { t, v in t.pad(v[0], begins: begins, ends: ends, value: 0.25) }
        }
        XCTAssertThrowsError(try Tape.padShape([2, 3], begins: [0, -2], ends: [0, -2]))
        XCTAssertThrowsError(try Tape.padShape([2, 3], begins: [0], ends: [0, 0]))
    }

    func testSliceFollowsONNXIndexRules() throws {
        let shape: Shape = [3, 5, 6]
        let x = randomTensor(shape, seed: 21)
        let all = [Array(0..<3), Array(0..<5), Array(0..<6)]
        // (starts, ends, axes, steps, the indices taken along each axis, worked out by hand)
        let cases: [([Int], [Int], [Int]?, [Int]?, [[Int]])] = [
            ([1], [Int.max], [1], nil, [all[0], [1, 2, 3, 4], all[2]]),
            ([-4, 0], [-1, 100], [2, 0], nil, [all[0], all[1], [2, 3, 4]]),
            ([0, 1, 2], [2, 3, 4], nil, nil, [[0, 1], [1, 2], [2, 3]]),
            ([0], [6], [-1], [2], [all[0], all[1], [0, 2, 4]]),
            ([1], [6], [2], [3], [all[0], all[1], [1, 4]]),
            ([-1], [Int.min], [1], [-1], [all[0], [4, 3, 2, 1, 0], all[2]]),
            ([5], [0], [2], [-2], [all[0], all[1], [5, 3, 1]]),
            ([100], [-100], [0], [-1], [[2, 1, 0], all[1], all[2]]),
            ([3], [1], [1], nil, [all[0], [], all[2]]),
            ([10], [20], [1], nil, [all[0], [], all[2]]),
            ([-100], [2], [0], nil, [[0, 1], all[1], all[2]]),
        ]
        for (starts, ends, axes, steps, taken) in cases {
            let tape = Tape()
            let y = tape.slice(tape.input(x), starts: starts, ends: ends, axes: axes, steps: steps)
            let dims = taken.map(\.count)
            XCTAssertEqual(y.shape, Shape(dims), "slice \(starts) \(ends) \(axes ?? []) \(steps ?? [])")
            XCTAssertEqual(try Tape.sliceShape(shape, starts: starts, ends: ends, axes: axes, steps: steps), Shape(dims))
            let want = (0..<y.shape.count).map { flat -> Double in
                let index = unravel(flat, dims).enumerated().map { taken[$0][$1] }
                return Double(x.scalars[ravel(index, shape.dims)])
            }
            assertClose(y.value.scalars, want, atol: 0, rtol: 0, "slice \(starts) \(ends) \(axes ?? []) \(steps ?? [])")
            if y.shape.count > 0 {
                checkGradients([x], minChecked: 0) { t, v in t.slice(v[0], starts: starts, ends: ends, axes: axes, steps: steps) }
            }
        }
        XCTAssertThrowsError(try Tape.sliceShape(shape, starts: [0], ends: [2], axes: [1], steps: [0]), "step 0")
        XCTAssertThrowsError(try Tape.sliceShape(shape, starts: [0, 0], ends: [2, 2], axes: [1, -2]), "axis 1 twice")
        XCTAssertThrowsError(try Tape.sliceShape(shape, starts: [0], ends: [2], axes: [3]), "axis out of range")
        XCTAssertThrowsError(try Tape.sliceShape(shape, starts: [0], ends: [2, 3]), "counts differ")
    }

    func testReduceSumAndMeanOverAnyAxes() throws {
        let shape: Shape = [2, 3, 4, 5]
        let x = randomTensor(shape, seed: 22)
        let cases: [([Int]?, Bool, Shape)] = [
            ([2, 3], true, [2, 3, 1, 1]), ([1], false, [2, 4, 5]), ([-1, 0], true, [1, 3, 4, 1]), (nil, true, [1, 1, 1, 1]),
            (nil, false, []), ([0, 2], false, [3, 5]), ([], true, [1, 1, 1, 1]),
        ]
        for (axes, keep, want) in cases {
            XCTAssertEqual(try Tape.reduceShape(shape, axes: axes, keepDims: keep), want)
            let reduced = Set((axes ?? []).map { $0 < 0 ? $0 + 4 : $0 }).union((axes ?? []).isEmpty ? [0, 1, 2, 3] : [])
            var sums = [Double](repeating: 0, count: want.count), counts = [Int](repeating: 0, count: want.count)
            let keptDims = (0..<4).map { reduced.contains($0) ? 1 : shape[$0] }
            for flat in 0..<x.count {
                let index = unravel(flat, shape.dims).enumerated().map { reduced.contains($0) ? 0 : $1 }
                let o = ravel(index, keptDims)
                sums[o] += Double(x.scalars[flat])
                counts[o] += 1
            }
            let tape = Tape()
            let v = tape.input(x)
            let s = tape.reduceSum(v, axes: axes, keepDims: keep), m = tape.reduceMean(v, axes: axes, keepDims: keep)
            XCTAssertEqual(s.shape, want)
            XCTAssertEqual(m.shape, want)
            assertClose(s.value.scalars, sums, atol: summed.atol, rtol: summed.rtol, "reduceSum \(axes ?? [])")
            assertClose(m.value.scalars, zip(sums, counts).map { $0 / Double($1) }, atol: summed.atol, rtol: summed.rtol,
                        "reduceMean \(axes ?? [])")
            checkGradients([x]) { t, v in t.reduceSum(v[0], axes: axes, keepDims: keep) }
            checkGradients([x]) { t, v in t.reduceMean(v[0], axes: axes, keepDims: keep) }
        }
        XCTAssertThrowsError(try Tape.reduceShape(shape, axes: [4], keepDims: true))
        XCTAssertThrowsError(try Tape.reduceShape(shape, axes: [1, -3], keepDims: true))
    }

    func testSqueezeAndUnsqueezeAreReshapes() throws {
        XCTAssertEqual(try Tape.squeezeShape([2, 1, 3, 1], axes: nil), [2, 3])
        XCTAssertEqual(try Tape.squeezeShape([2, 1, 3, 1], axes: [-1]), [2, 1, 3])
        XCTAssertThrowsError(try Tape.squeezeShape([2, 1, 3], axes: [0]), "dimension 0 is 2")
        XCTAssertEqual(try Tape.unsqueezeShape([2, 3], axes: [0, 3]), [1, 2, 3, 1])
        XCTAssertEqual(try Tape.unsqueezeShape([2, 3], axes: [-1]), [2, 3, 1])
        XCTAssertEqual(try Tape.unsqueezeShape([], axes: [0]), [1])
        XCTAssertThrowsError(try Tape.unsqueezeShape([2, 3, 4], axes: [0, 1]), "rank 5")
        XCTAssertThrowsError(try Tape.unsqueezeShape([2, 3], axes: [1, 1]), "axis twice")
        let x = randomTensor([2, 1, 3, 1], seed: 23)
        let tape = Tape()
        let y = tape.unsqueeze(tape.squeeze(tape.input(x)), axes: [1])
        XCTAssertEqual(y.shape, [2, 1, 3])
        XCTAssertEqual(y.value.scalars, x.scalars)
        checkGradients([x]) { t, v in t.multiply(t.unsqueeze(t.squeeze(v[0], axes: [1]), axes: [0]), v[0]) }
    }

    // MARK: - Matrix products

    func testMatMulWithNumPySemantics() throws {
        let cases: [(Shape, Shape, Shape)] = [
            ([3, 4], [4, 5], [3, 5]), ([2, 3, 4], [4, 5], [2, 3, 5]), ([2, 2, 3, 4], [2, 2, 4, 5], [2, 2, 3, 5]),
            ([2, 1, 3, 4], [3, 4, 2], [2, 3, 3, 2]), ([1, 3, 4], [2, 4, 5], [2, 3, 5]), ([3, 4], [2, 4, 5], [2, 3, 5]),
            ([4], [4, 5], [5]), ([3, 4], [4], [3]), ([4], [4], []), ([2, 3, 4], [4], [2, 3]), ([4], [2, 4, 5], [2, 5]),
            ([2, 3, 4], [1, 4, 5], [2, 3, 5]),
        ]
        for (sa, sb, want) in cases {
            XCTAssertEqual(try Tape.matmulShape(sa, sb), want, "\(sa) · \(sb)")
            let a = randomTensor(sa, seed: 24), b = randomTensor(sb, seed: 25)
            let tape = Tape()
            let y = tape.matmul(tape.input(a), tape.input(b))
            XCTAssertEqual(y.shape, want)
            assertClose(y.value.scalars, referenceMatMul(a, b), atol: summed.atol, rtol: summed.rtol, "\(sa) · \(sb)")
            checkGradients([a, b]) { t, v in t.matmul(v[0], v[1]) }
        }
        XCTAssertThrowsError(try Tape.matmulShape([3, 4], [5, 6]), "inner dimensions")
        XCTAssertThrowsError(try Tape.matmulShape([2, 3, 4], [3, 4, 5]), "batch 2 against 3")
        XCTAssertThrowsError(try Tape.matmulShape([], [3]), "scalar")
    }

    func testGemmEveryTransposeAndBiasShape() throws {
        let (m, k, n) = (3, 4, 5)
        let biases: [Shape?] = [nil, [n], [m, n], [m, 1], [1, n], []]
        for transA in [false, true] {
            for transB in [false, true] {
                for cShape in biases {
                    let a = randomTensor(transA ? [k, m] : [m, k], seed: 26), b = randomTensor(transB ? [n, k] : [k, n], seed: 27)
                    let c = cShape.map { randomTensor($0, seed: 28) }
                    let (alpha, beta): (Float, Float) = (0.7, 1.3)
                    let label = "transA \(transA) transB \(transB) C \(cShape.map(\.description) ?? "none")"
                    XCTAssertEqual(try Tape.gemmShape(a.shape, b.shape, c: cShape, transA: transA, transB: transB), [m, n])
                    let tape = Tape()
                    let y = tape.gemm(tape.input(a), tape.input(b), c: c.map { tape.input($0) }, transA: transA,
                                      transB: transB, alpha: alpha, beta: beta)
                    var want = [Double](repeating: 0, count: m * n)
                    for i in 0..<m {
                        for j in 0..<n {
                            var acc = 0.0
                            for p in 0..<k {
                                let av = transA ? a[p, i] : a[i, p], bv = transB ? b[j, p] : b[p, j]
                                acc += Double(av) * Double(bv)
                            }
                            want[i * n + j] = Double(alpha) * acc
                            if let c {
                                let (ci, cj) = (c.shape.rank == 2 && c.shape[0] > 1 ? i : 0, c.shape.rank >= 1 && c.shape[c.shape.rank - 1] > 1 ? j : 0)
                                let cv = c.shape.rank == 2 ? c[ci, cj] : (c.shape.rank == 1 ? c[cj] : c.scalar)
                                want[i * n + j] += Double(beta) * Double(cv)
                            }
                        }
                    }
                    assertClose(y.value.scalars, want, atol: summed.atol, rtol: summed.rtol, label)
                    checkGradients([a, b] + (c.map { [$0] } ?? [])) { t, v in
                        t.gemm(v[0], v[1], c: v.count > 2 ? v[2] : nil, transA: transA, transB: transB, alpha: alpha, beta: beta)
                    }
                }
            }
        }
        XCTAssertThrowsError(try Tape.gemmShape([3, 4], [4, 5], c: [4]), "C [4] does not broadcast to [3, 5]")
        XCTAssertThrowsError(try Tape.gemmShape([3, 4], [4, 5], c: [2, 3, 5]), "C of rank 3")
        XCTAssertThrowsError(try Tape.gemmShape([3, 4], [5, 4], c: nil), "inner dimensions")
    }

    // MARK: - Composition and buffers

    func testPullbacksCompose() {
        // hardSwish(transpose(a) ⊙ b) + c, then a mean over the spatial axes: NHWC to NCHW, a per-channel scale,
        // an activation, a bias in the last dimension. |transpose(a) ⊙ b| < 3 keeps it off hardSwish's kinks.
        let a = randomTensor([2, 4, 5, 3], seed: 29, lo: -2.5, hi: 2.5), b = randomTensor([1, 3, 1, 1], seed: 30, lo: 0.5, hi: 1.1)
        let c = randomTensor([5], seed: 31)
        func net(_ t: Tape, _ v: [Variable]) -> Variable {
            let h = t.hardSwish(t.multiply(t.transpose(v[0], permutation: [0, 3, 1, 2]), v[1]))
            return t.reduceMean(t.broadcastAdd(h, v[2]), axes: [1, 2], keepDims: false)
        }
        let tape = Tape()
        let y = net(tape, [a, b, c].map { tape.input($0) })
        XCTAssertEqual(y.shape, [2, 5])
        var want = [Double](repeating: 0, count: 10)
        for nn in 0..<2 {
            for w in 0..<5 {
                var s = 0.0
                for ch in 0..<3 {
                    for hh in 0..<4 {
                        let z = Double(a[nn, hh, w, ch]) * Double(b[0, ch, 0, 0])
                        s += z * Swift.max(0, Swift.min(1, z / 6 + 0.5)) + Double(c[w])
                    }
                }
                want[nn * 5 + w] = s / 12
            }
        }
        assertClose(y.value.scalars, want, atol: summed.atol, rtol: summed.rtol, "chain")
        checkGradients([a, b, c], net)
    }

    func testAWarmLoopTakesEveryOutputFromThePool() {
        let x0 = randomTensor([2, 3, 4, 4], seed: 32), scale = randomTensor([1, 3, 1, 1], seed: 33, lo: 0.5, hi: 1.5)
        let w = randomTensor([8, 5], seed: 34), bias = randomTensor([5], seed: 35)
        let tape = Tape()
        var afterFirst = 0, reusedAfterFirst = 0
        for pass in 0..<4 {
            tape.reset()
            let x = tape.input(x0)
            var h = tape.hardSwish(tape.multiply(x, tape.input(scale)))
            h = tape.divide(tape.subtract(h, tape.input(scale)), tape.input(scale))
            h = tape.transpose(h, permutation: [0, 2, 3, 1])                          // (2, 4, 4, 3)
            h = tape.pad(tape.slice(h, starts: [1], ends: [Int.max], axes: [1]), begins: [0, 0, 1, 0], ends: [0, 0, 0, 0])
            h = tape.concat([h, tape.clip(h, min: 0, max: 6)], axis: 3)               // (2, 3, 5, 6)
            h = tape.reduceMean(h, axes: [1], keepDims: false)                         // (2, 5, 6)
            h = tape.expand(tape.sigmoid(h), to: [2, 5, 6])
            let flat = tape.reshape(tape.slice(h, starts: [0], ends: [8], axes: [2]), [10, 6])
            let z = tape.matmul(tape.leakyReLU(flat), tape.input(Tensor(zeros: [6, 8]) + 0.1))
            let logits = tape.gemm(z, tape.input(w), c: tape.input(bias), alpha: 0.5, beta: 2)
            let loss = tape.reduceSum(tape.logSoftmax(tape.broadcastAdd(logits, tape.negate(tape.softmax(logits)))))
            let g = tape.gradient(of: loss, wrt: x)
            XCTAssertEqual(g.shape, x0.shape)
            if pass == 0 {
                afterFirst = tape.allocatedBuffers
                reusedAfterFirst = tape.reusedBuffers
            }
        }
        XCTAssertEqual(tape.allocatedBuffers, afterFirst, "passes after the first allocate no tape buffers")
        XCTAssertGreaterThan(tape.reusedBuffers, reusedAfterFirst, "later passes reuse the first pass's buffers")
    }

    // MARK: - References and test data

    /// Values in ±[0.5, 1.5]: safe divisors.
    func divisor(_ shape: Shape, seed: UInt64) -> Tensor {
        let magnitudes = randomArray(shape.count, seed: seed, lo: 0.5, hi: 1.5)
        return Tensor(magnitudes.enumerated().map { $0.offset % 3 == 1 ? -$0.element : $0.element }, shape: shape)
    }

    /// `x` with every element within 0.1 of a kink moved 0.2 away from it.
    func awayFrom(_ kinks: [Float], _ x: Tensor) -> Tensor {
        x.map { v in
            var v = v
            for k in kinks where abs(v - k) < 0.1 { v = k + (v >= k ? 0.2 : -0.2) }
            return v
        }
    }

    func unravel(_ flat: Int, _ dims: [Int]) -> [Int] {
        var rest = flat
        var index = [Int](repeating: 0, count: dims.count)
        for i in stride(from: dims.count - 1, through: 0, by: -1) {
            index[i] = rest % dims[i]
            rest /= dims[i]
        }
        return index
    }

    func ravel(_ index: [Int], _ dims: [Int]) -> Int {
        zip(index, dims).reduce(0) { $0 * $1.1 + $1.0 }
    }

    /// f(a, b) element by element with NumPy broadcasting, index by index.
    func referenceBroadcast(_ a: Tensor, _ b: Tensor, _ f: (Double, Double) -> Double) -> (Shape, [Double]) {
        let r = Swift.max(a.shape.rank, b.shape.rank)
        let ad = [Int](repeating: 1, count: r - a.shape.rank) + a.shape.dims
        let bd = [Int](repeating: 1, count: r - b.shape.rank) + b.shape.dims
        let dims = zip(ad, bd).map { $0 == 1 ? $1 : $0 }
        let count = dims.reduce(1, *)
        let values = (0..<count).map { flat -> Double in
            let index = unravel(flat, dims)
            let ia = ravel(zip(index, ad).map { $1 == 1 ? 0 : $0 }, ad), ib = ravel(zip(index, bd).map { $1 == 1 ? 0 : $0 }, bd)
            return f(Double(a.scalars[ia]), Double(b.scalars[ib]))
        }
        return (Shape(dims), values)
    }

    func referenceSoftmax(_ x: Tensor, axis: Int) -> [Double] {
        let dims = x.shape.dims, a = axis < 0 ? axis + dims.count : axis
        return (0..<x.count).map { flat in
            var index = unravel(flat, dims)
            var denominator = 0.0
            for k in 0..<dims[a] {
                index[a] = k
                denominator += Foundation.exp(Double(x.scalars[ravel(index, dims)]))
            }
            return Foundation.exp(Double(x.scalars[flat])) / denominator
        }
    }

    /// NumPy matmul: rank-1 operands promoted, batch dimensions broadcast, Double sums.
    func referenceMatMul(_ a: Tensor, _ b: Tensor) -> [Double] {
        let ad = a.shape.rank == 1 ? [1, a.shape[0]] : a.shape.dims, bd = b.shape.rank == 1 ? [b.shape[0], 1] : b.shape.dims
        let (m, k, n) = (ad[ad.count - 2], ad[ad.count - 1], bd[bd.count - 1])
        let ba = Array(ad.dropLast(2)), bb = Array(bd.dropLast(2))
        let r = Swift.max(ba.count, bb.count)
        let pa = [Int](repeating: 1, count: r - ba.count) + ba, pb = [Int](repeating: 1, count: r - bb.count) + bb
        let batch = zip(pa, pb).map { Swift.max($0, $1) }
        var out: [Double] = []
        for flat in 0..<batch.reduce(1, *) {
            let index = unravel(flat, batch)
            let ia = ravel(zip(index, pa).map { $1 == 1 ? 0 : $0 }, pa), ib = ravel(zip(index, pb).map { $1 == 1 ? 0 : $0 }, pb)
            for i in 0..<m {
                for j in 0..<n {
                    var acc = 0.0
                    for p in 0..<k { acc += Double(a.scalars[ia * m * k + i * k + p]) * Double(b.scalars[ib * k * n + p * n + j]) }
                    out.append(acc)
                }
            }
        }
        return out
    }
}
