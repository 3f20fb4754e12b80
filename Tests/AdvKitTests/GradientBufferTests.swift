@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// How a backward pass holds its gradients (Tape.swift): a node's gradient buffer serves the next node that needs
/// one as soon as the node's pullback has run, a fused activation masks its dead gradient in place, and a residual
/// join may write into the convolution output it adds. None of it may change a number, and a gradient the caller
/// asked for (or its seed) is never reused or written.
final class GradientBufferTests: XCTestCase {
    /// conv(+ReLU) → 20 scalings → sum, recorded on `t`; returns the input, the conv's output and the loss. The
    /// chain passes a gradient to every element of h, also where the ReLU gave 0 (its mask then matters).
    private func chain(_ t: Tape, _ x: Tensor, _ w: Tensor) -> (Variable, Variable, Variable) {
        let vx = t.input(x)
        let h = t.conv2d(vx, weight: t.input(w), bias: nil, stride: 1, padding: 1, activation: .relu)
        return (vx, h, t.sum(scalings(t, h)))
    }

    private func scalings(_ t: Tape, _ h: Variable) -> Variable {
        var y = h
        for k in 0..<20 { y = t.scale(y, by: k % 2 == 0 ? 1.5 : -0.5) }
        return y
    }

    private let x = randomTensor([2, 3, 8, 8], seed: 1, lo: -1, hi: 1)
    private let w = randomTensor([4, 3, 3, 3], seed: 2, lo: -0.5, hi: 0.5)

    /// A chain of 21 nodes of one shape: its backward pass needs two gradient buffers live at a time (the node's
    /// and its input's), not one per node; the bits are those of the same gradient taken node by node from the
    /// pullback rules (a plain Swift reference, below).
    func testAChainReusesTwoGradientBuffers() {
        let t = Tape()
        let (vx, _, loss) = chain(t, x, w)
        let before = t.allocatedBuffers
        let g = t.gradient(of: loss, wrt: vx)
        // The seed of ones, two of the chain's shape (a node's and its input's), the input's, the conv's workspace.
        XCTAssertLessThanOrEqual(t.allocatedBuffers - before, 5, "buffers a fresh backward pass allocates (22 without reuse)")
        XCTAssertEqual(t.lastGradientBuffers, 22, "each node on the path still gets one (x, conv, 20 scalings)")
        // Reference: the same chain without reuse (one tape per prefix is overkill; finite differences are not
        // bitwise): recompute with a tape whose intermediate gradients are all requested, so none is reused.
        let r = Tape()
        let (rx, rh, rloss) = chain(r, x, w)
        let both = r.gradients(of: rloss, wrt: [rx, rh])
        XCTAssertTrue(g == both[0], "the input's gradient does not depend on buffer reuse")
        XCTAssertFalse(both[1].scalars.allSatisfy { $0 == 0 }, "the conv's gradient is there")
    }

    /// A requested intermediate gradient comes back as the pass left it: its node's fused ReLU masks a copy, not
    /// the buffer the caller gets, and no later node's gradient is written into it.
    func testARequestedIntermediateGradientIsNotMaskedOrReused() {
        let t = Tape()
        let (vx, h, loss) = chain(t, x, w)
        let gs = t.gradients(of: loss, wrt: [vx, h])
        // dL/dh from a tape on which h is the input: the chain after the conv, alone.
        let u = Tape()
        let vh = u.input(h.value)
        let want = u.gradient(of: u.sum(scalings(u, vh)), wrt: vh)
        XCTAssertTrue(gs[1] == want, "dL/dh unmasked, as the caller asked for it")
        XCTAssertTrue(h.value.scalars.contains { $0 == 0 } && want.scalars.allSatisfy { $0 != 0 },
                      "the test means something: the conv's ReLU masks part of what the chain passed")
        // And the input's gradient is the one the input-only pass gives.
        let v = Tape()
        let (vx2, _, loss2) = chain(v, x, w)
        XCTAssertTrue(gs[0] == v.gradient(of: loss2, wrt: vx2))
    }

    /// The same behind a max-pool, whose pullback writes its input's gradient already masked by the conv's ReLU
    /// when that input has none yet: not when the caller asked for the conv's output. In a window of four zeros
    /// the pool still passes its gradient to the argmax, which the ReLU's mask would zero.
    func testARequestedGradientBehindAMaxPoolIsNotMasked() {
        let t = Tape()
        let vx = t.input(x)
        let h = t.conv2d(vx, weight: t.input(w), bias: nil, stride: 1, padding: 1, activation: .relu)
        let gs = t.gradients(of: t.sum(t.maxPool2d(h, kernel: 2, stride: 2)), wrt: [vx, h])
        let u = Tape()
        let vh = u.input(h.value)
        let want = u.gradient(of: u.sum(u.maxPool2d(vh, kernel: 2, stride: 2)), wrt: vh)
        XCTAssertTrue(gs[1] == want, "dL/dh unmasked, as the caller asked for it")
        let zeroArgmax = zip(h.value.scalars, want.scalars).contains { $0 == 0 && $1 == 1 }
        XCTAssertTrue(zeroArgmax, "the test means something: some window's argmax is a ReLU zero")
        let v = Tape()
        let vx2 = v.input(x)
        let h2 = v.conv2d(vx2, weight: v.input(w), bias: nil, stride: 1, padding: 1, activation: .relu)
        XCTAssertTrue(gs[0] == v.gradient(of: v.sum(v.maxPool2d(h2, kernel: 2, stride: 2)), wrt: vx2),
                      "the input's gradient is the one the input-only pass gives")
    }

    /// The caller's seed is neither masked nor reused: it reads the same after the pass, and a second pass with it
    /// gives the same gradient.
    func testTheSeedIsLeftAlone() {
        let t = Tape()
        let vx = t.input(x)
        let h = t.conv2d(vx, weight: t.input(w), bias: nil, stride: 1, padding: 1, activation: .relu)
        let seed = randomTensor(h.shape, seed: 3, lo: -1, hi: 1)
        let copy = Tensor(seed.scalars, shape: seed.shape)
        let g1 = t.gradient(of: h, seed: seed, wrt: vx)
        XCTAssertTrue(seed.scalars.map(\.bitPattern) == copy.scalars.map(\.bitPattern), "the seed is unchanged")
        let g2 = t.gradient(of: h, seed: seed, wrt: vx)
        XCTAssertTrue(g1 == g2)
    }

    /// A reshape passes its gradient buffer on to its input instead of copying it, but not when the caller asked
    /// for the reshape's own gradient: accumulating into the input must not change the one returned.
    func testAReshapeDoesNotLendARequestedGradient() {
        let t = Tape()
        let a = t.input(randomTensor([2, 6], seed: 4, lo: -1, hi: 1))
        // a's other reader is recorded first, so its pullback runs after r's and adds into a's gradient.
        let other = t.reshape(t.scale(a, by: 3), Shape(3, 4))
        let r = t.reshape(a, Shape(3, 4))
        let loss = t.sum(t.add(t.scale(r, by: 2), other))
        let gs = t.gradients(of: loss, wrt: [a, r])
        XCTAssertTrue(gs[1] == Tensor(repeating: 2, shape: [3, 4]), "dL/dr = 2, untouched by a's other path")
        XCTAssertTrue(gs[0] == Tensor(repeating: 5, shape: [2, 6]), "dL/da = 2 + 3")
    }

    /// Gradients a caller let go of return to the tape: a loop of passes stops allocating after the first.
    func testReturnedGradientsComeBackOnceDropped() {
        let t = Tape()
        var allocated: [Int] = []
        for _ in 0..<3 {
            t.reset()
            let (vx, _, loss) = chain(t, x, w)
            _ = t.gradient(of: loss, wrt: vx)
            allocated.append(t.allocatedBuffers)
        }
        XCTAssertEqual(allocated[2], allocated[1], "no buffer allocated once warm: \(allocated)")
    }

    /// A tape that changes batch size keeps the free gradient buffers of the sizes it still uses only.
    func testAnotherBatchSizeReleasesTheOldSizes() {
        func pass(_ t: Tape, batch: Int) {
            t.reset()
            let xb = randomTensor(Shape(batch, 3, 8, 8), seed: 9, lo: -1, hi: 1)
            let (vx, _, loss) = chain(t, xb, w)
            _ = t.gradient(of: loss, wrt: vx)
        }
        let fresh = Tape()
        pass(fresh, batch: 3)
        let t = Tape()
        pass(t, batch: 2)
        XCTAssertGreaterThan(t.freeGradientBuffers, 0)
        pass(t, batch: 3)
        XCTAssertEqual(t.freeGradientBuffers, fresh.freeGradientBuffers, "no batch-2 buffer left after a batch-3 pass")
    }

    /// The join relu(conv(x) + s) written into the conv's buffer: the same values and gradients (input, weight,
    /// the skip operand) as with a buffer of its own, one value buffer fewer, at 1 and 2 threads. A conv with a
    /// fused ReLU (whose pullback reads its output) is not overwritten.
    func testAJoinOverwritingTheConvolutionOutput() {
        let saved = Parallelism.threads
        defer { Parallelism.threads = saved }
        let s = randomTensor([2, 4, 8, 8], seed: 5, lo: -1, hi: 1)
        func run(_ overwrite: Bool, _ act: FusedActivation) -> (Tensor, [Tensor], Int, Tensor) {
            let t = Tape()
            let vx = t.input(x), vw = t.input(w), vs = t.input(s)
            let c = t.conv2d(vx, weight: vw, bias: nil, stride: 1, padding: 1, activation: act)
            let before = t.allocatedBuffers
            let out = t.addReLU(c, vs, overwriting: overwrite ? c : nil)
            let fresh = t.allocatedBuffers - before
            let seed = randomTensor(out.shape, seed: 6, lo: -1, hi: 1)
            return (out.value, t.gradients(of: out, seed: seed, wrt: [vx, vw, vs]), fresh, c.value)
        }
        for threads in [1, 2] {
            Parallelism.threads = threads
            let apart = run(false, .none), into = run(true, .none)
            XCTAssertTrue(into.0 == apart.0, "values, \(threads) threads")
            XCTAssertTrue(zip(into.1, apart.1).allSatisfy { $0 == $1 }, "gradients, \(threads) threads")
            XCTAssertEqual(apart.2, 1, "its own buffer")
            XCTAssertEqual(into.2, 0, "the conv's buffer")
            XCTAssertTrue(into.3 == into.0, "the conv's node now holds the join's values")
            let relu = run(true, .relu), reluApart = run(false, .relu)
            XCTAssertEqual(relu.2, 1, "a conv with a fused ReLU keeps its output")
            XCTAssertTrue(relu.0 == reluApart.0 && zip(relu.1, reluApart.1).allSatisfy { $0 == $1 })
        }
    }
}
