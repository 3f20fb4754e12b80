@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// The residual join relu(a + b) as one node (residual.c; the ONNX importer fuses ResNet's Add + Relu into it):
/// the same bits as the two ops it replaces, values and gradients, at any thread count, and finite differences.
final class ResidualJoinTests: XCTestCase {
    /// Values and gradients of a and b under loss = Σ out ⊙ r, fused or as broadcastAdd then relu.
    private func run(_ a: Tensor, _ b: Tensor, fused: Bool) -> (Tensor, Tensor, Tensor) {
        let t = Tape(mode: .inference)
        let va = t.input(a), vb = t.input(b)
        let out = fused ? t.addReLU(va, vb) : t.relu(t.broadcastAdd(va, vb))
        let r = randomTensor(out.shape, seed: 77, lo: -1, hi: 1)
        let g = t.gradients(of: out, seed: r, wrt: [va, vb])
        return (out.value, g[0], g[1])
    }

    /// A tensor larger than one parallel chunk (16,384 floats), with exact zeros and sums that cancel to 0
    /// (ReLU'(0) = 0 on both paths).
    private func operands(_ shape: Shape, seed: UInt64) -> (Tensor, Tensor) {
        var a = randomTensor(shape, seed: seed, lo: -1, hi: 1), b = randomTensor(shape, seed: seed + 1, lo: -1, hi: 1)
        a.withUnsafeMutableBufferPointer { p in b.withUnsafeMutableBufferPointer { q in
            for i in Swift.stride(from: 0, to: p.count, by: 7) { q[i] = -p[i] }   // a + b == 0 exactly
            for i in Swift.stride(from: 3, to: p.count, by: 11) { p[i] = 0; q[i] = 0 }
        } }
        return (a, b)
    }

    func testSameBitsAsAddThenReLUAtOneTwoAndEightThreads() {
        let saved = Parallelism.threads
        defer { Parallelism.threads = saved }
        for (i, shape) in [Shape(3, 5, 4, 4), Shape(4, 64, 16, 16), Shape(1, 7, 3, 3)].enumerated() {
            let (a, b) = operands(shape, seed: UInt64(10 * i))
            Parallelism.threads = 1
            let want = run(a, b, fused: false)
            for threads in [1, 2, 8] {
                Parallelism.threads = threads
                let got = run(a, b, fused: true)
                XCTAssertTrue(got.0 == want.0, "values, \(threads) threads, \(shape)")
                XCTAssertTrue(got.1 == want.1 && got.2 == want.2, "gradients, \(threads) threads, \(shape)")
            }
        }
    }

    /// A join inside the graph (its gradient is the tape's, not the caller's seed) hands that buffer to a, masked
    /// in place, and writes b's from it: the same bits as relu(broadcastAdd) when b has no gradient yet, when a
    /// later reader of b gave it one already, and when b needs none; at 1, 2 and 8 threads.
    func testAJoinInsideTheGraphHandsItsGradientOn() {
        let saved = Parallelism.threads
        defer { Parallelism.threads = saved }
        let (a, b) = operands(Shape(2, 8, 32, 32), seed: 40)
        let r = randomTensor(Shape(2, 8, 32, 32), seed: 41, lo: -1, hi: 1)
        func run(fused: Bool, bReadLater: Bool, bWanted: Bool) -> [Tensor] {
            let t = Tape(mode: .inference)
            let va = t.input(a), vb = t.input(b)
            let pa = t.scale(va, by: 1.5), pb = t.scale(vb, by: 0.5)
            let out = fused ? t.addReLU(pa, pb) : t.relu(t.broadcastAdd(pa, pb))
            var loss = t.sum(t.multiply(out, by: r))
            if bReadLater { loss = t.add(loss, t.sum(t.scale(pb, by: 3))) }
            return t.gradients(of: loss, wrt: bWanted ? [va, vb] : [va])
        }
        for threads in [1, 2, 8] {
            Parallelism.threads = threads
            for (later, wanted) in [(false, true), (true, true), (false, false)] {
                let want = run(fused: false, bReadLater: later, bWanted: wanted)
                let got = run(fused: true, bReadLater: later, bWanted: wanted)
                XCTAssertTrue(zip(got, want).allSatisfy { $0 == $1 },
                              "\(threads) threads, b read later \(later), b's gradient wanted \(wanted)")
            }
        }
    }

    /// x + x: the gradient reaches x twice.
    func testTheSameOperandTwice() {
        let x = randomTensor([2, 3, 4, 4], seed: 5, lo: -1, hi: 1)
        let t = Tape(mode: .inference)
        let v = t.input(x)
        let out = t.addReLU(v, v)
        let g = t.gradient(of: out, wrt: v)
        XCTAssertTrue(out.value == x.map { max(2 * $0, 0) })
        XCTAssertTrue(g == x.map { 2 * $0 > 0 ? 2 : 0 })
    }

    /// Central differences; the outer relu (the identity on the join's output) only lets the checker see the
    /// join's kinks and skip the points where a perturbation crosses one.
    func testFiniteDifferences() {
        let a = randomTensor([2, 4, 5, 3], seed: 8, lo: -1, hi: 1), b = randomTensor([2, 4, 5, 3], seed: 9, lo: -1, hi: 1)
        checkGradients([a, b], eps: 1e-3, atol: 2e-3) { t, v in t.relu(t.addReLU(v[0], v[1])) }
    }

    /// The importer fuses the residual joins of a torchvision ResNet (its logits and gradient against the
    /// references are ONNXImportTests' check).
    func testImporterFusesTheResidualJoins() throws {
        let m = try ONNXClassifier(contentsOf: RepositoryPaths.root + "/Tests/Fixtures/onnx/torchvision_resnet.onnx")
        XCTAssertTrue(m.notes.contains { $0.contains("Relu into the Add before it (residual join)") }, "\(m.notes)")
        // Each block's second convolution (BN folded, no activation) is read by its join alone.
        XCTAssertTrue(m.notes.contains { $0.contains("of the joins write into the Conv output they add") }, "\(m.notes)")
    }
}
