@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// The Winograd filter cache (Kernels.swift): an attack's steps reuse the transformed filters, the results are bit
/// for bit those of the uncached path, and a weight that changes (an optimizer step, an in-place write) is never
/// served a stale transform.
final class WinogradFilterCacheTests: XCTestCase {
    override func setUp() {
        WinogradFilterCacheControl.enabled = true
        WinogradFilterCacheControl.removeAll()
    }
    override func tearDown() {
        WinogradFilterCacheControl.enabled = true
        WinogradFilterCacheControl.removeAll()
    }

    /// Two 3x3 stride-1 padding-1 layers of 16 and 20 channels (both Winograd), ReLU between: logits-like output
    /// (N, 20, 5, 4), loss = Σ (out + 1)², its gradient with respect to the input alone (an attack's step).
    private func inputGradient(_ x: Tensor, _ w1: Parameter, _ w2: Parameter, _ b2: Parameter) -> (Tensor, Tensor) {
        let t = Tape(mode: .inference)
        let v = t.input(x)
        let h = t.conv2d(v, weight: t.parameter(w1), bias: nil, stride: 1, padding: 1, activation: .relu)
        let out = t.conv2d(h, weight: t.parameter(w2), bias: t.parameter(b2), stride: 1, padding: 1)
        let shifted = t.broadcastAdd(out, t.input(Tensor(repeating: 1, shape: [1])))
        let loss = t.sum(t.multiply(shifted, shifted))
        return (out.value, t.gradient(of: loss, wrt: v))
    }

    private func uncached<R>(_ body: () -> R) -> R {
        WinogradFilterCacheControl.enabled = false
        defer { WinogradFilterCacheControl.enabled = true }
        return body()
    }

    func testStepsReuseTheFiltersWithTheSameBits() throws {
        guard WinogradFilterCacheControl.winogradApplies(inputChannels: 16, outputChannels: 20) else {
            throw XCTSkip("Winograd runs on the AVX-512 path only")
        }
        let x = randomTensor([3, 16, 5, 4], seed: 1)
        let w1 = Parameter(randomTensor([16, 16, 3, 3], seed: 2)), w2 = Parameter(randomTensor([20, 16, 3, 3], seed: 3))
        let b2 = Parameter(randomTensor([20], seed: 4))
        let want = uncached { inputGradient(x, w1, w2, b2) }
        XCTAssertEqual(WinogradFilterCacheControl.statistics.misses, 0, "off: nothing cached")
        let first = inputGradient(x, w1, w2, b2)
        // two layers forward, the second layer's input gradient (the first's input is the target, not its weight)
        let afterFirst = WinogradFilterCacheControl.statistics
        XCTAssertEqual(afterFirst.misses, 4, "forward packs of both layers, input-gradient packs of both")
        XCTAssertEqual(afterFirst.hits, 0)
        for _ in 0..<3 { XCTAssertTrue(inputGradient(x, w1, w2, b2) == first) }
        XCTAssertEqual(WinogradFilterCacheControl.statistics.hits, 12, "every later step served from the cache")
        XCTAssertEqual(WinogradFilterCacheControl.statistics.misses, 4)
        XCTAssertTrue(first.0 == want.0, "forward: same bits as the uncached path")
        XCTAssertTrue(first.1 == want.1, "input gradient: same bits as the uncached path")
    }

    /// An optimizer step writes the weight in place (copy-on-write: the cache holds the old buffer, so the step
    /// copies first); an in-place write through the tensor's API does the same. The next pass must see the new
    /// weights: equal to the uncached path with them.
    func testChangedWeightsAreNeverServedStale() throws {
        guard WinogradFilterCacheControl.winogradApplies(inputChannels: 16, outputChannels: 20) else {
            throw XCTSkip("Winograd runs on the AVX-512 path only")
        }
        let x = randomTensor([2, 16, 5, 4], seed: 5)
        let w1 = Parameter(randomTensor([16, 16, 3, 3], seed: 6)), w2 = Parameter(randomTensor([20, 16, 3, 3], seed: 7))
        let b2 = Parameter(randomTensor([20], seed: 8))
        let before = inputGradient(x, w1, w2, b2)
        // a training step on the weights (SGD through Kernels.sgdStep, in place)
        let t = Tape(mode: .training)
        let h = t.conv2d(t.input(x), weight: t.parameter(w1), bias: nil, stride: 1, padding: 1, activation: .relu)
        let out = t.conv2d(h, weight: t.parameter(w2), bias: t.parameter(b2), stride: 1, padding: 1)
        let loss = t.sum(t.multiply(out, out))
        let params = [w1, w2, b2]
        SGD(learningRate: 0.05).step(params, gradients: t.gradients(of: loss, wrt: params))
        let afterStep = inputGradient(x, w1, w2, b2)
        let wantAfterStep = uncached { inputGradient(x, w1, w2, b2) }
        XCTAssertTrue(afterStep.0 == wantAfterStep.0 && afterStep.1 == wantAfterStep.1, "after an optimizer step")
        XCTAssertFalse(afterStep.0 == before.0, "the step changed the output")
        // an in-place write of one weight through the tensor's API
        w1.value.withUnsafeMutableBufferPointer { $0[7] += 0.25 }
        w2.value[3, 5, 1, 2] = -0.5
        let afterWrite = inputGradient(x, w1, w2, b2)
        let wantAfterWrite = uncached { inputGradient(x, w1, w2, b2) }
        XCTAssertTrue(afterWrite.0 == wantAfterWrite.0 && afterWrite.1 == wantAfterWrite.1, "after in-place writes")
        XCTAssertFalse(afterWrite.1 == afterStep.1)
    }

    /// Entries of weights nobody holds any more are dropped at the next miss; the capacity bounds the rest.
    func testDeadWeightsAndCapacity() throws {
        guard WinogradFilterCacheControl.winogradApplies(inputChannels: 16, outputChannels: 20) else {
            throw XCTSkip("Winograd runs on the AVX-512 path only")
        }
        let x = randomTensor([1, 16, 4, 4], seed: 9)
        do {
            let w1 = Parameter(randomTensor([16, 16, 3, 3], seed: 10)), w2 = Parameter(randomTensor([20, 16, 3, 3], seed: 11))
            _ = inputGradient(x, w1, w2, Parameter(Tensor(zeros: [20])))
            XCTAssertEqual(WinogradFilterCacheControl.statistics.entries, 2, "one entry per weight, both directions in it")
        }
        let w1 = Parameter(randomTensor([16, 16, 3, 3], seed: 12)), w2 = Parameter(randomTensor([20, 16, 3, 3], seed: 13))
        _ = inputGradient(x, w1, w2, Parameter(Tensor(zeros: [20])))
        XCTAssertEqual(WinogradFilterCacheControl.statistics.entries, 2, "the first weights' entries were dropped")
        let both = WinogradFilterCacheControl.statistics.floats
        // F(4x4, 3x3) on the 4x4 planes: 36 positions of 6x6, each 6-row panels of (OC, C) or (C, OC)
        XCTAssertEqual(both, 36 * (18 * 16 + 18 * 16 + 24 * 16 + 18 * 20), "the packs' floats")
        WinogradFilterCacheControl.capacityFloats = both / 2
        defer { WinogradFilterCacheControl.capacityFloats = 128 << 20 }
        XCTAssertLessThanOrEqual(WinogradFilterCacheControl.statistics.floats, both / 2)
        XCTAssertEqual(WinogradFilterCacheControl.statistics.entries, 1, "the least recently used weight went")
        let want = uncached { inputGradient(x, w1, w2, Parameter(Tensor(zeros: [20]))) }
        let got = inputGradient(x, w1, w2, Parameter(Tensor(zeros: [20])))
        XCTAssertTrue(got.0 == want.0 && got.1 == want.1, "a bounded cache gives the same bits")
        XCTAssertLessThanOrEqual(WinogradFilterCacheControl.statistics.floats, both / 2)
    }
}
