@_spi(Support) import AdvKit
import AdvKitTestSupport
import XCTest

final class InferenceDefenseTests: XCTestCase {
    private func peer(_ n: Int) throws -> (Model, Dataset) {
        guard FileManager.default.fileExists(atPath: RepositoryPaths.peerModel) else { throw XCTSkip("no peer model") }
        let m = Model(.cnn)
        try m.load(from: RepositoryPaths.peerModel)
        return (m, try fashionMNISTTest().prefix(n))
    }

    func testBitDepthReducesEightBitImagesToTheAskedDepth() {
        let img = Tensor(bytes: (0..<256).map(UInt8.init), shape: [1, 1, 16, 16])
        for bits in [1, 3, 5] {
            let s = Squeezer.bitDepth(bits).apply(img)
            let levels = Set(s.scalars)
            XCTAssertEqual(levels.count, 1 << bits, "\(bits) bits")
            let top = Float((1 << bits) - 1)
            for v in levels { XCTAssertEqual((v * top).rounded(), v * top, accuracy: 1e-4) }
        }
    }

    func testMedianSmoothingMatchesAHandComputationAndRemovesSaltNoise() {
        let x = Tensor([1, 2, 3, 4, 5, 6, 7, 8, 9], shape: [1, 1, 3, 3])
        // 3x3 with reflection at the borders: the centre's window is all nine values, median 5.
        XCTAssertEqual(Squeezer.median(3).apply(x)[0, 0, 1, 1], 5)
        // Corner (0,0): reflected window rows {0,0,1}, cols {0,0,1} -> [1,1,2,1,1,2,4,4,5] -> median 2.
        XCTAssertEqual(Squeezer.median(3).apply(x)[0, 0, 0, 0], 2)
        // 2x2: window [i-1, i] x [j-1, j], upper median: at (1,1) {1,2,4,5} -> 4.
        XCTAssertEqual(Squeezer.median(2).apply(x)[0, 0, 1, 1], 4)
        var salt = Tensor(zeros: [1, 1, 5, 5])
        salt[0, 0, 2, 2] = 1
        XCTAssertEqual(Squeezer.median(3).apply(salt).max(), 0, "an isolated bright pixel is removed")
    }

    func testSqueezedClassifierBackpropagatesAsTheIdentity() throws {
        let (model, d) = try peer(4)
        let squeezed = SqueezedClassifier(model, squeezers: [.bitDepth(4)])
        let tape = Tape()
        let x = tape.input(d.images)
        let g = tape.gradient(of: tape.crossEntropy(squeezed(x), labels: d.labels), wrt: x)
        // BPDA: the gradient of the base model at the squeezed input.
        let t2 = Tape()
        let xs = t2.input(Squeezer.bitDepth(4).apply(d.images))
        let want = t2.gradient(of: t2.crossEntropy(model(xs), labels: d.labels), wrt: xs)
        XCTAssertEqual(g, want)
    }

    func testSqueezingDetectorThresholdGivesTheAskedFalsePositiveRate() throws {
        let (model, d) = try peer(256)
        let calibration = d.images.batch(0..<128), held = d.prefix(256).images.batch(128..<256)
        let det = try SqueezingDetector(model: model, squeezers: [.bitDepth(3), .median(2)], cleanImages: calibration)
        let fpr = Double(det.detect(calibration).filter { $0 }.count) / 128
        XCTAssertLessThanOrEqual(fpr, 0.05, "at most 5% of the calibration images are flagged")
        XCTAssertGreaterThanOrEqual(fpr, 0.03, "and not far fewer (a threshold at the 95th percentile)")
        let heldLabels = Array(d.labels[128..<256])
        let adv = try FGSM(epsilon: 0.1).generate(model, images: held, labels: heldLabels)
        let detection = Double(det.detect(adv).filter { $0 }.count) / 128
        let auc = rocAUC(negatives: det.scores(held), positives: det.scores(adv))
        XCTAssertGreaterThan(detection, 0.05, "FGSM examples are flagged more often than clean ones")
        XCTAssertGreaterThan(auc, 0.5)
        XCTAssertThrowsError(try SqueezingDetector(model: model, squeezers: [], cleanImages: calibration))
        XCTAssertThrowsError(try SqueezingDetector(model: model, squeezers: [.bitDepth(0)], cleanImages: calibration))
    }

    func testROCAUC() {
        XCTAssertEqual(rocAUC(negatives: [0, 1, 2], positives: [3, 4]), 1)
        XCTAssertEqual(rocAUC(negatives: [3, 4], positives: [0, 1]), 0)
        XCTAssertEqual(rocAUC(negatives: [1, 1], positives: [1, 1]), 0.5)
        XCTAssertEqual(rocAUC(negatives: [0, 2], positives: [1, 3]), 0.75)
    }

    func testNoiseDefenseAveragesDrawsAndItsGradientIsEOT() throws {
        let (model, d) = try peer(8)
        let zero = NoisyClassifier(model, sigma: 0, draws: 3)
        assertClose(zero.logits(of: d.images).scalars, model.logits(of: d.images).scalars, atol: 1e-5, rtol: 1e-5, "sigma 0 is the model")
        // The gradient of the average equals the average of the draws' gradients (same noise).
        let noisy = NoisyClassifier(model, sigma: 0.1, draws: 4, seed: 3), single = NoisyClassifier(model, sigma: 0.1, draws: 1, seed: 3)
        let tape = Tape()
        let x = tape.input(d.images)
        let g = tape.gradient(of: tape.crossEntropy(noisy(x), labels: d.labels).sum(), wrt: x)
        XCTAssertTrue(g.isFinite)
        XCTAssertGreaterThan(g.maxAbs(), 0)
        var manual = Tensor(zeros: d.images.shape)
        for _ in 0..<4 {
            // draws use consecutive streams: 4 single-draw calls see the same noise as one 4-draw call
            let t = Tape()
            let v = t.input(d.images)
            // the 4-draw classifier averages logits, not losses: compare logits instead of loss gradients
            manual += t.gradient(of: single(v), seed: Tensor(repeating: 0.25, shape: [8, 10]), wrt: v)
        }
        let t3 = Tape()
        let v3 = t3.input(d.images)
        let fresh = NoisyClassifier(model, sigma: 0.1, draws: 4, seed: 3)
        let direct = t3.gradient(of: fresh(v3), seed: Tensor(repeating: 1, shape: [8, 10]), wrt: v3)
        assertClose(direct.scalars, manual.scalars, atol: 1e-6, rtol: 1e-4, "EOT gradient")
    }

    func testStatistics() {
        XCTAssertEqual(Statistics.normalQuantile(0.975), 1.959964, accuracy: 1e-5)
        XCTAssertEqual(Statistics.normalQuantile(0.5), 0, accuracy: 1e-9)
        XCTAssertEqual(Statistics.regularizedBeta(0.5, 1, 1), 0.5, accuracy: 1e-12)
        XCTAssertEqual(Statistics.regularizedBeta(0.3, 2, 5), 0.579825, accuracy: 1e-6)
        // All n successes: the lower bound is alpha^(1/n).
        XCTAssertEqual(Statistics.clopperPearsonLower(successes: 10, trials: 10, alpha: 0.05), pow(0.05, 0.1), accuracy: 1e-9)
        XCTAssertEqual(Statistics.clopperPearsonLower(successes: 0, trials: 10, alpha: 0.05), 0)
    }

    func testRandomizedSmoothingCertifiesCleanImagesAndAbstainsUnderHeavyNoise() throws {
        let (model, d) = try peer(8)
        let certs = try RandomizedSmoothing(model, sigma: 0.1).certify(d.images, selection: 20, estimation: 200, alpha: 0.01)
        let certified = certs.filter { $0.prediction != nil }
        XCTAssertGreaterThanOrEqual(certified.count, 5)
        for c in certified {
            XCTAssertGreaterThan(c.radius, 0)
            XCTAssertEqual(c.radius, Double(Float(0.1)) * Statistics.normalQuantile(c.lowerBound), accuracy: 1e-12)
        }
        // Five estimation draws at alpha 0.001 bound p_A below 0.001^(1/5) = 0.25 < 1/2: always abstain.
        let few = try RandomizedSmoothing(model, sigma: 0.1).certify(d.images, selection: 5, estimation: 5, alpha: 0.001)
        XCTAssertTrue(few.allSatisfy { $0.prediction == nil && $0.radius == 0 })
    }

    func testDetectorNetworkDetectsAndTheAdaptiveAttackEvadesIt() throws {
        let train = squaresDataset(count: 512, seed: 21), test = squaresDataset(count: 128, seed: 22)
        var config = TrainingConfiguration()
        config.epochs = 3; config.batchSize = 32; config.learningRate = 3e-3; config.progress = .silent
        let model = Model(.mlp, inputShape: [1, 12, 12], classes: 4, seed: 0)
        try Trainer(model: model, configuration: config).fit(train)
        let attack = PGD(epsilon: 0.2, alpha: 0.03, steps: 10)
        var detector = try DetectorNetwork.train(protecting: model, attack: attack, images: train.images, labels: train.labels,
                                                 architecture: .mlp, configuration: config)
        try detector.calibrate(cleanImages: test.images, falsePositiveRate: 0.05)
        let adv = try attack.generate(model, images: test.images, labels: test.labels, seed: 9)
        let plain = detector.rates(clean: test.images, adversarial: adv)
        XCTAssertLessThanOrEqual(plain.falsePositive, 0.05)
        XCTAssertGreaterThan(plain.detection, 0.8, "the detector catches the attack it was trained on")
        let adaptive = try DetectorAwarePGD(detector: detector, epsilon: 0.2, alpha: 0.03, steps: 20, lambda: 5)
            .run(model, images: test.images, labels: test.labels, seed: 9)
        let evasive = detector.rates(clean: test.images, adversarial: adaptive.adversarial)
        XCTAssertLessThan(evasive.detection, plain.detection, "the combined loss evades the detector more often")
    }
}
