@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// Each defense does what it says, on small models trained in the test.
final class DefenseTests: XCTestCase {
    func testKLDivergenceValueAndGradients() {
        let p = randomTensor([3, 5], seed: 1, lo: -2, hi: 2), q = randomTensor([3, 5], seed: 2, lo: -2, hi: 2)
        let tape = Tape()
        let kl = tape.klDivergence(tape.input(p), tape.input(q))
        let lp = p.scalars, lq = q.scalars
        for i in 0..<3 {
            let a = (0..<5).map { Double(lp[i * 5 + $0]) }, b = (0..<5).map { Double(lq[i * 5 + $0]) }
            let la = a.map { $0 - log(a.map(exp).reduce(0, +)) }, lb = b.map { $0 - log(b.map(exp).reduce(0, +)) }
            let want = zip(la, lb).map { exp($0) * ($0 - $1) }.reduce(0, +)
            XCTAssertEqual(Double(kl.value.scalars[i]), want, accuracy: 1e-5)
        }
        checkGradients([p, q]) { t, v in t.klDivergence(v[0], v[1]) }
    }

    func testGaussianAugmentationHoldsTheNoisyCopiesWithTheAskedSigma() throws {
        let gray = try Dataset(images: Tensor(repeating: 0.5, shape: [20, 1, 10, 10]), labels: [Int32](repeating: 1, count: 20),
                               classNames: ["a", "b"])
        let aug = try gray.gaussianAugmented(sigma: 0.1, copies: 3, seed: 4)
        XCTAssertEqual(aug.count, 80)
        XCTAssertEqual(aug.labels, [Int32](repeating: 1, count: 80))
        XCTAssertEqual(aug.images.batch(0..<20), gray.images, "the originals come first, unchanged")
        let noise = aug.images.batch(20..<80).scalars.map { Double($0) - 0.5 }
        let mean = noise.reduce(0, +) / Double(noise.count)
        let std = (noise.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(noise.count)).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 0.005)   // 6000 draws: 4 sigma of the mean is 0.005
        XCTAssertEqual(std, 0.1, accuracy: 0.005)  // at 0.5 ± 0.1, clipping at 0 and 1 is 5 sigma away
        XCTAssertGreaterThanOrEqual(aug.images.min(), 0)
        XCTAssertLessThanOrEqual(aug.images.max(), 1)
        let clipped = try gray.gaussianAugmented(sigma: 2, copies: 1, seed: 4)
        XCTAssertGreaterThanOrEqual(clipped.images.min(), 0, "clipped to [0, 1]")
        XCTAssertLessThanOrEqual(clipped.images.max(), 1)
        XCTAssertThrowsError(try gray.gaussianAugmented(sigma: -1, copies: 1, seed: 0))
    }

    func testBoundedReLUSaturatesAtItsBound() {
        let model = Model(.cnn, inputShape: [1, 16, 16], classes: 4, activation: .boundedReLU(0.5), seed: 3)
        let tape = Tape()
        _ = model(tape.input(randomTensor([4, 1, 16, 16], seed: 5, lo: 0, hi: 1) * 4))
        // Every hidden activation (fused conv/fc outputs, the pools after them) lies in [0, t], and some reach t.
        // Node 0 is the input (scaled to [0, 4]); the last node is the logits; weights take negative values.
        let t: Float = 0.5
        let activations = (1..<(tape.count - 1)).map { tape.nodeValue($0) }.filter { $0.shape.rank >= 2 && $0.min() >= 0 }
        XCTAssertGreaterThanOrEqual(activations.count, 3)
        for v in activations { XCTAssertLessThanOrEqual(v.max(), t) }
        XCTAssertTrue(activations.contains { $0.max() == t }, "some activations saturate at t")
    }

    func testLabelSmoothingChangesTheTarget() {
        let z = Tensor([2, 0, -1], shape: [1, 3])
        let tape = Tape()
        let plain = tape.crossEntropy(tape.input(z), labels: [0]).value.scalar
        let smooth = tape.crossEntropy(tape.input(z), labels: [0], labelSmoothing: 0.3).value.scalar
        let want = Reference.crossEntropy(z.scalars, labels: [0], k: 3, smoothing: 0.3).loss[0]
        XCTAssertEqual(Double(smooth), want, accuracy: 1e-6)
        XCTAssertGreaterThan(smooth, plain, "a confident right answer costs more with smoothing")
    }

    func testPGDAdversarialTrainingMakesTheModelMoreRobust() throws {
        let train = squaresDataset(count: 384, seed: 11), test = squaresDataset(count: 96, seed: 12)
        let eps: Float = 0.25
        func trained(_ defense: TrainingDefense?) throws -> Model {
            let m = Model(.mlp, inputShape: [1, 12, 12], classes: 4, seed: 0)
            let t = Trainer(model: m, configuration: testTrainingConfiguration(epochs: 4))
            if let defense { t.batchLoss = defense.batchLoss(seed: 0) }
            try t.fit(train)
            return m
        }
        let plain = try trained(nil), defended = try trained(.pgd(epsilon: eps, steps: 5, alpha: eps / 3))
        let attack = PGD(epsilon: eps, alpha: eps / 8, steps: 20)
        let rPlain = try attack.run(plain, images: test.images, labels: test.labels)
        let rDefended = try attack.run(defended, images: test.images, labels: test.labels)
        XCTAssertGreaterThan(rDefended.cleanAccuracy, 0.9)
        XCTAssertGreaterThan(rDefended.robustAccuracy, rPlain.robustAccuracy + 0.2,
                             "PGD training: robust \(rDefended.robustAccuracy) vs undefended \(rPlain.robustAccuracy)")
    }

    func testFGSMTradesAndVATTrainAndStayDeterministic() throws {
        let train = squaresDataset(count: 256, seed: 13), test = squaresDataset(count: 64, seed: 14)
        for defense in [TrainingDefense.fgsm(epsilon: 0.1), .trades(epsilon: 0.1, steps: 3, alpha: 0.04, beta: 6),
                        .vat(xi: 1e-6, epsilon: 1, iterations: 1, weight: 1)] {
            try defense.validate()
            func run() throws -> Model {
                let m = Model(.mlp, inputShape: [1, 12, 12], classes: 4, seed: 1)
                let t = Trainer(model: m, configuration: testTrainingConfiguration(epochs: 3))
                t.batchLoss = defense.batchLoss(seed: 7)
                try t.fit(train)
                return m
            }
            let a = try run(), b = try run()
            XCTAssertEqual(a.stateDict[0].tensor.value, b.stateDict[0].tensor.value, "\(defense): same seed, same weights")
            XCTAssertGreaterThan(a.accuracy(test.images, labels: test.labels), 0.8, "\(defense) still learns")
        }
        XCTAssertThrowsError(try TrainingDefense.pgd(epsilon: -1).validate())
        XCTAssertThrowsError(try TrainingDefense.fgsm(ratio: 1.5).validate())
    }
}
