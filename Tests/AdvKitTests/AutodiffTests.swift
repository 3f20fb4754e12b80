@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// Every differentiable primitive and layer against central finite differences.
final class AutodiffTests: XCTestCase {
    func testConv2dGradients() {
        for (stride, padding) in [(1, 0), (2, 1)] {
            let x = randomTensor([2, 2, 6, 5], seed: 1), w = randomTensor([3, 2, 3, 3], seed: 2), b = randomTensor([3], seed: 3)
            checkGradients([x, w, b]) { t, v in t.conv2d(v[0], weight: v[1], bias: v[2], stride: stride, padding: padding) }
        }
    }

    func testFusedActivationGradients() {
        let x = randomTensor([2, 2, 6, 5], seed: 31), w = randomTensor([3, 2, 3, 3], seed: 32), b = randomTensor([3], seed: 33)
        checkGradients([x, w, b]) { t, v in t.conv2d(v[0], weight: v[1], bias: v[2], padding: 1, activation: .relu) }
        checkGradients([x, w, b]) { t, v in t.conv2d(v[0], weight: v[1], bias: v[2], activation: .boundedReLU(0.5)) }
        checkGradients([randomTensor([3, 7], seed: 34), randomTensor([5, 7], seed: 35), randomTensor([5], seed: 36)]) { t, v in
            t.linear(v[0], weight: v[1], bias: v[2], activation: .boundedReLU(0.8))
        }
    }

    /// Also the conv + activation + 2x2 max-pool in one kernel call (Tape.conv2dMaxPool2x2); at 28x28 the first
    /// layer takes the image-by-image route, where each image is pooled right after its GEMM.
    func testFusedSequentialEqualsLayerByLayer() {
        for (activation, side) in [(Activation.relu, 16), (.boundedReLU(1), 16), (.relu, 28)] {
            let model = Model(.cnn, inputShape: [1, side, side], classes: 4, activation: activation, seed: 9)
            let images = randomTensor([3, 1, side, side], seed: 10, lo: 0, hi: 1)
            let fused = Tape(), plain = Tape()
            let fx = fused.input(images), px = plain.input(images)
            let fz = model(fx)
            var h = px
            for child in model.network.children { h = child.layer(h) }  // one node per layer, no fusion
            XCTAssertLessThan(fused.count, plain.count, "fusion records fewer nodes")
            assertClose(fz.value.scalars, h.value.scalars, atol: 0, rtol: 0, "same logits")
            let labels: [Int32] = [0, 1, 3]
            let fg = fused.gradients(of: fused.crossEntropy(fz, labels: labels).sum(), wrt: [fx] + model.parameters.map { fused.variable(for: $0)! })
            let pg = plain.gradients(of: plain.crossEntropy(h, labels: labels).sum(), wrt: [px] + model.parameters.map { plain.variable(for: $0)! })
            for (a, b) in zip(fg, pg) { assertClose(a.scalars, b.scalars, atol: 0, rtol: 0, "same gradients") }
        }
    }

    /// A max-pool writes the gradient of a fused conv+activation already masked, and that conv then skips its mask
    /// pass; when the conv's output has another consumer too, the mask must apply to the sum (tested against the
    /// same network with a separate activation node), in either order of the consumers.
    func testPremaskedPoolGradientWithASecondConsumer() {
        let x = randomTensor([2, 2, 8, 8], seed: 31, lo: -1, hi: 1), w = randomTensor([3, 2, 3, 3], seed: 32, lo: -1, hi: 1)
        let b = randomTensor([3], seed: 33, lo: -0.2, hi: 0.2)
        for act in [FusedActivation.relu, .boundedReLU(0.5)] {
            for poolFirst in [true, false] {
                func grads(fused: Bool) -> [Tensor] {
                    let t = Tape()
                    let xv = t.input(x), wv = t.input(w), bv = t.input(b)
                    var y = t.conv2d(xv, weight: wv, bias: bv, activation: fused ? act : .none)
                    if !fused {
                        if case let .boundedReLU(bound) = act { y = t.boundedReLU(y, bound: bound) } else { y = t.relu(y) }
                    }
                    let pooled = { t.maxPool2d(y, kernel: 2).sum() }, other = { t.scale(y, by: 0.3).sum() }
                    // The later-recorded consumer's pullback runs first.
                    let loss = poolFirst ? t.add(pooled(), other()) : t.add(other(), pooled())
                    return t.gradients(of: loss, wrt: [xv, wv, bv])
                }
                for (f, p) in zip(grads(fused: true), grads(fused: false)) {
                    assertClose(f.scalars, p.scalars, atol: 1e-6, rtol: 1e-6, "\(act) pool first \(poolFirst)")
                }
            }
        }
    }

    func testLinearGradients() {
        checkGradients([randomTensor([3, 7], seed: 4), randomTensor([5, 7], seed: 5), randomTensor([5], seed: 6)]) { t, v in
            t.linear(v[0], weight: v[1], bias: v[2])
        }
    }

    func testActivationGradientsAwayFromKinks() {
        let x = randomTensor([4, 50], seed: 7, lo: -2, hi: 2)
        checkGradients([x]) { t, v in t.relu(v[0]) }
        checkGradients([x]) { t, v in t.boundedReLU(v[0], bound: 1) }
    }

    func testPoolingGradients() {
        let x = randomTensor([2, 2, 6, 6], seed: 8)
        checkGradients([x]) { t, v in t.maxPool2d(v[0], kernel: 2) }
        checkGradients([x]) { t, v in t.maxPool2d(v[0], kernel: 3, stride: 2) }
        checkGradients([x]) { t, v in t.avgPool2d(v[0], kernel: 2) }
    }

    func testLossGradients() {
        let z = randomTensor([4, 6], seed: 9, lo: -3, hi: 3)
        checkGradients([z]) { t, v in t.crossEntropy(v[0], labels: [0, 5, 2, 2]) }
        checkGradients([z]) { t, v in t.crossEntropy(v[0], labels: [1, 1, 3, 0], labelSmoothing: 0.2) }
        let target = Tensor((0..<24).map { Float($0 % 6 == 1 ? 0.7 : 0.06) }, shape: [4, 6])
        checkGradients([z]) { t, v in t.crossEntropy(v[0], targetDistribution: target) }
        checkGradients([z]) { t, v in t.meanSquaredError(v[0], target: target) }
        checkGradients([z]) { t, v in t.crossEntropy(v[0], labels: [0, 1, 2, 3]).mean() }
    }

    func testBatchNormGradientsInBothModes() {
        let bn = BatchNorm2D(features: 3)
        bn.weight.value = Tensor([1.5, 0.7, -1])
        bn.bias.value = Tensor([0.1, 0, 0.3])
        bn.runningMean.value = Tensor([0.1, -0.2, 0])
        bn.runningVar.value = Tensor([0.5, 2, 1])
        let x = randomTensor([3, 3, 4, 4], seed: 10)
        // Training mode: batch statistics (the mean and variance depend on the input too).
        checkGradients([x], mode: .training) { t, v in BatchNormProbe(bn)(v[0]) }
        checkGradients([x], mode: .inference) { t, v in bn(v[0]) }
    }

    func testCompositeNetworkGradientWrtInputAndParameters() {
        var rng = TorchGenerator(seed: 11)
        let model = Model(.cnn, inputShape: [1, 16, 16], classes: 4, rng: &rng)
        let x = randomTensor([2, 1, 16, 16], seed: 12, lo: 0, hi: 1)
        // Deep piecewise-linear nets cross kinks often: a smaller eps, and only the coordinates on one linear piece.
        checkGradients([x], eps: 2e-3, maxCoordinates: 120, maxSkippedFraction: 0.8, minChecked: 20) { t, v in
            t.crossEntropy(model(v[0]), labels: [1, 3])
        }
        let resnet = Model(.resnet, inputShape: [1, 12, 12], classes: 3, rng: &rng)
        checkGradients([randomTensor([4, 1, 12, 12], seed: 13, lo: 0, hi: 1)], eps: 2e-3, maxCoordinates: 60,
                       maxSkippedFraction: 0.8, minChecked: 10, mode: .inference) { t, v in
            t.crossEntropy(resnet(v[0]), labels: [0, 2, 1, 1])
        }
    }

    func testBatchStatisticsCompositionGradients() {
        // conv -> batch norm (batch statistics) -> ReLU -> conv -> batch norm: the training-mode path of the
        // ResNet. A batch of 4 keeps the batch statistics smooth enough for finite differences at eps 1e-2.
        var rng = TorchGenerator(seed: 16)
        let net = Sequential([
            Conv2D(inputChannels: 1, outputChannels: 3, kernelSize: 3, padding: 1, bias: false, rng: &rng),
            BatchNormProbe(BatchNorm2D(features: 3)), ReLU(),
            Conv2D(inputChannels: 3, outputChannels: 2, kernelSize: 3, stride: 2, padding: 1, bias: false, rng: &rng),
            BatchNormProbe(BatchNorm2D(features: 2)),
        ])
        checkGradients([randomTensor([4, 1, 6, 6], seed: 17, lo: 0, hi: 1)], eps: 2e-3, maxSkippedFraction: 0.5, mode: .training) { t, v in
            net(v[0])
        }
    }

    func testParameterGradientsMatchFiniteDifferences() {
        var rng = TorchGenerator(seed: 14)
        let model = Model(.mlp, inputShape: [1, 4, 4], classes: 3, rng: &rng)
        let x = randomTensor([5, 1, 4, 4], seed: 15, lo: 0, hi: 1)
        let labels: [Int32] = [0, 1, 2, 1, 0]
        let tape = Tape()
        let loss = tape.crossEntropy(model(tape.input(x)), labels: labels).mean()
        let grads = tape.gradients(of: loss, wrt: model.parameters)
        let p = model.parameters[0]  // fc1.weight
        for i in [0, 7, 100, 2000, 4095] {
            let saved = p.value
            func lossAt(_ delta: Float) -> Double {
                var v = saved
                v.withUnsafeMutableBufferPointer { $0[i] += delta }
                p.value = v
                let t = Tape()
                return Double(t.crossEntropy(model(t.input(x)), labels: labels).mean().value.scalar)
            }
            let numeric = (lossAt(1e-2) - lossAt(-1e-2)) / 2e-2
            p.value = saved
            XCTAssertEqual(Double(grads[0].scalars[i]), numeric, accuracy: 2e-3 + 2e-2 * abs(numeric), "fc1.weight[\(i)]")
        }
    }

    func testInputGradientSkipsWeightGradients() {
        let model = Model(.cnn, inputShape: [1, 16, 16], classes: 4, seed: 1)
        let tape = Tape()
        let x = tape.input(randomTensor([2, 1, 16, 16], seed: 2, lo: 0, hi: 1))
        let loss = tape.crossEntropy(model(x), labels: [0, 1]).sum()
        _ = tape.gradient(of: loss, wrt: x)
        let inputOnly = tape.lastGradientBuffers
        _ = tape.gradients(of: loss, wrt: model.parameters)
        let withWeights = tape.lastGradientBuffers
        // Input only: no buffer for any of the 8 parameters.
        XCTAssertEqual(withWeights - inputOnly, 8 - 1, "the parameter run adds 8 parameter buffers and drops the input's")
    }

    func testReplayWithAnotherSeedGivesPerClassGradients() {
        let model = Model(.cnn, inputShape: [1, 16, 16], classes: 4, seed: 3)
        let images = randomTensor([3, 1, 16, 16], seed: 4, lo: 0, hi: 1)
        let tape = Tape()
        let x = tape.input(images)
        let z = model(x)
        for k in 0..<4 {
            var seed = Tensor(zeros: [3, 4])
            for n in 0..<3 { seed[n, k] = 1 }
            let replayed = tape.gradient(of: z, seed: seed, wrt: x)
            // The same gradient from a fresh forward pass of Σ_n z[n, k].
            let fresh = Tape()
            let fx = fresh.input(images)
            let fz = model(fx)
            let direct = fresh.gradient(of: fz, seed: seed, wrt: fx)
            assertClose(replayed.scalars, direct.scalars, atol: 0, rtol: 0, "class \(k)")
        }
    }

    func testAWarmAttackLoopAllocatesNoBuffers() {
        // The shape of PGD's inner loop: forward, input gradient, step in place. After the first pass every
        // buffer comes from the tape's pools (Benchmarks/allocations.sh counts mallocs: 0 per step).
        let model = Model(.cnn, seed: 7)
        var x = randomTensor([8, 1, 28, 28], seed: 8, lo: 0, hi: 1)
        let x0 = x
        let labels: [Int32] = [0, 1, 2, 3, 4, 5, 6, 7]
        let tape = Tape()
        var afterFirst = 0
        for step in 0..<4 {
            tape.reset()
            let v = tape.input(x)
            let loss = tape.crossEntropy(model(v), labels: labels)
            let g = tape.gradient(of: loss, seed: Tensor(repeating: 1, shape: [8]), wrt: v)
            tape.reset()
            x.add(g.map { $0 > 0 ? 0.01 : -0.01 }, scaledBy: 1)
            if step == 0 { afterFirst = tape.allocatedBuffers }
        }
        XCTAssertEqual(tape.allocatedBuffers, afterFirst, "steps after the first allocate no tape buffers")
        XCTAssertNotEqual(x, x0)
    }

    func testBuffersAreReusedButNeverUnderAHolder() {
        let model = Model(.cnn, inputShape: [1, 16, 16], classes: 4, seed: 5)
        let images = randomTensor([2, 1, 16, 16], seed: 6, lo: 0, hi: 1)
        let tape = Tape()
        var kept: Tensor?
        var firstLogits: [Float] = []
        for pass in 0..<3 {
            tape.reset()
            let x = tape.input(images)
            let loss = tape.crossEntropy(model(x), labels: [0, 1]).sum()
            let g = tape.gradient(of: loss, wrt: x)
            if pass == 0 {
                kept = g  // held by the caller across later passes
                firstLogits = tape.nodeValue(tape.count - 2).scalars
            } else {
                XCTAssertFalse(g.sharesStorage(with: kept!), "a held gradient is never written again")
                XCTAssertEqual(tape.nodeValue(tape.count - 2).scalars, firstLogits, "same inputs, same logits")
            }
        }
        XCTAssertGreaterThan(tape.reusedBuffers, 0, "later passes reuse the first pass's buffers")
    }
}

/// Runs a BatchNorm2D layer without updating its running statistics (finite differences call it many times).
private final class BatchNormProbe: Layer {
    let bn: BatchNorm2D
    init(_ bn: BatchNorm2D) { self.bn = bn }
    func callAsFunction(_ x: Variable) -> Variable {
        let (m, v) = (bn.runningMean.value, bn.runningVar.value)
        defer { bn.runningMean.value = m; bn.runningVar.value = v }
        return bn(x)
    }
}
