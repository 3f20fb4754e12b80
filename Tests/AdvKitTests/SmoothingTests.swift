@_spi(Support) import AdvKit
import AdvKitTestSupport
import XCTest

/// Randomized smoothing's pieces: the certificate's radius, certified accuracy, PREDICT's test, the keying of the
/// draws, and the spec's errors.
final class SmoothingTests: XCTestCase {
    /// Always answers `label` (logits: 1 there, 0 elsewhere), whatever the noise.
    private final class Constant: Classifier {
        let label: Int
        let inputShape: Shape = [1, 4, 4]
        let classCount = 3
        init(_ label: Int) { self.label = label }
        func callAsFunction(_ x: Variable) -> Variable {
            var t = Tensor(zeros: [x.shape[0], classCount])
            for i in 0..<x.shape[0] { t[i, label] = 1 }
            return x.tape.input(t)
        }
    }

    func testTheRadiusOfACertificateMatchesAHandComputation() throws {
        // A base that never changes its answer: all n estimation draws vote for it, and the one-sided
        // Clopper-Pearson bound at 1 − α of n successes in n is α^(1/n). n = 2, α = 0.81: p̲_A = 0.9, so
        // R = σ·Φ⁻¹(0.9) = 0.5 × 1.2815515655446004 (the normal table). n = 4, α = 0.99⁴: p̲_A = 0.99, Φ⁻¹ = 2.3263478740408408.
        let x = Tensor(repeating: 0.5, shape: [3, 1, 4, 4])
        let smoothing = RandomizedSmoothing(Constant(2), sigma: 0.5)
        let a = try smoothing.certify(x, selection: 3, estimation: 2, alpha: 0.81)
        for c in a {
            XCTAssertEqual(c.prediction, 2)
            XCTAssertEqual(c.lowerBound, 0.9, accuracy: 1e-9)
            XCTAssertEqual(c.radius, 0.5 * 1.2815515655446004, accuracy: 1e-8)  // bisection to 1e-12 on p, Φ⁻¹' ≈ 5.7 there
        }
        let b = try smoothing.certify(x, selection: 3, estimation: 4, alpha: 0.96059601)
        XCTAssertEqual(b[0].radius, 0.5 * 2.3263478740408408, accuracy: 1e-8)
        XCTAssertEqual(RandomizedSmoothing.radius(sigma: 0.25, lowerBound: 0.975), 0.25 * 1.959963984540054, accuracy: 1e-9)
        XCTAssertEqual(RandomizedSmoothing.radius(sigma: 0.25, lowerBound: 0.5), 0, "p̲_A ≤ 1/2 certifies nothing")
    }

    func testCertifiedAccuracyCountsRightCertificatesAtEachRadius() {
        typealias C = RandomizedSmoothing.Certificate
        let certs = [C(prediction: 0, radius: 0.2, lowerBound: 0.7), C(prediction: 1, radius: 0.9, lowerBound: 0.99),
                     C(prediction: nil, radius: 0, lowerBound: 0.4), C(prediction: 2, radius: 0.5, lowerBound: 0.9)]
        let labels: [Int32] = [0, 1, 1, 0]  // the last one is certified, but wrong
        // r = 0: images 0 and 1 (2 of 4); r = 0.2: both (radius ≥ r); r = 0.5: image 1; r = 1: none.
        XCTAssertEqual(RandomizedSmoothing.certifiedAccuracy(certs, labels: labels, radii: [0, 0.2, 0.5, 1]), [0.5, 0.5, 0.25, 0])
    }

    func testCertifiedAccuracyOfATrainedModelFallsWithTheRadius() throws {
        let train = squaresDataset(count: 512, seed: 21), test = squaresDataset(count: 24, seed: 22)
        let model = Model(.mlp, inputShape: [1, 12, 12], classes: 4, seed: 0)
        try Trainer(model: model, configuration: testTrainingConfiguration(epochs: 3)).fit(try train.gaussianAugmented(sigma: 0.25, copies: 1, seed: 0))
        let certs = try RandomizedSmoothing(model, sigma: 0.25, bounds: .unit).certify(test.images, selection: 20, estimation: 200, alpha: 0.01)
        let radii = stride(from: 0.0, through: 1.5, by: 0.05).map { $0 }
        let acc = RandomizedSmoothing.certifiedAccuracy(certs, labels: test.labels, radii: radii)
        for j in 1..<acc.count { XCTAssertLessThanOrEqual(acc[j], acc[j - 1], "radius \(radii[j])") }
        XCTAssertGreaterThan(acc[0], 0.5, "the GDA-trained model is certified right on most clean images at radius 0")
        XCTAssertLessThan(acc.last!, acc[0], "and on fewer at a large radius")
    }

    func testBinomialTestAndPredict() throws {
        // Two-sided test against 1/2: 10 of 10 → 2·2⁻¹⁰; 7 of 10 → 2·(120 + 45 + 10 + 1)/1024; 5 of 10 → 1.
        XCTAssertEqual(Statistics.binomialTestPValue(successes: 10, trials: 10), 2.0 / 1024, accuracy: 1e-12)
        XCTAssertEqual(Statistics.binomialTestPValue(successes: 7, trials: 10), 352.0 / 1024, accuracy: 1e-12)
        XCTAssertEqual(Statistics.binomialTestPValue(successes: 3, trials: 10), 352.0 / 1024, accuracy: 1e-12)
        XCTAssertEqual(Statistics.binomialTestPValue(successes: 5, trials: 10), 1)
        let x = Tensor(repeating: 0.5, shape: [2, 1, 4, 4])
        let smoothing = RandomizedSmoothing(Constant(1), sigma: 0.5)
        XCTAssertEqual(try smoothing.predict(x, samples: 10, alpha: 0.01, seed: 0), [1, 1], "p-value 0.00195 ≤ 0.01")
        XCTAssertEqual(try smoothing.predict(x, samples: 5, alpha: 0.01, seed: 0), [nil, nil], "5 of 5: p-value 0.0625 > 0.01, abstain")
        XCTAssertThrowsError(try smoothing.predict(x, samples: 0, alpha: 0.01, seed: 0))
        XCTAssertThrowsError(try smoothing.predict(x, samples: 10, alpha: 1, seed: 0))
    }

    func testTheDrawsDependOnTheImageIndexNotOnTheBatching() throws {
        let train = squaresDataset(count: 256, seed: 21), test = squaresDataset(count: 9, seed: 23)
        let model = Model(.mlp, inputShape: [1, 12, 12], classes: 4, seed: 0)
        try Trainer(model: model, configuration: testTrainingConfiguration(epochs: 1)).fit(train)
        var smoothing = RandomizedSmoothing(model, sigma: 0.5)
        let wide = smoothing.counts(test.images, samples: 50, seed: 4, stream: 9)
        smoothing.batchSize = 7  // draws of one image split across batches, several images in one
        XCTAssertEqual(smoothing.counts(test.images, samples: 50, seed: 4, stream: 9), wide)
        XCTAssertTrue(wide.allSatisfy { $0.reduce(0, +) == 50 })
        XCTAssertNotEqual(smoothing.counts(test.images, samples: 50, seed: 5, stream: 9), wide, "another seed, other draws")
    }

    func testBadSmoothingSettingsAreOneLineErrors() {
        func message(_ spec: DefenseSpec) -> String {
            do { try spec.validate(); return "" } catch { return "\(error)" }
        }
        let good = DefenseSpec.smoothing(sigma: 0.3, copies: 2, selection: 100, estimation: 1000, alpha: 0.001, radii: [0, 0.5], votes: 100, draws: 8)
        XCTAssertEqual(message(good), "")
        XCTAssertTrue(message(.smoothing(sigma: 0, copies: 2, selection: 100, estimation: 1000, alpha: 0.001, radii: [0], votes: 100, draws: 8))
            .contains("smoothing: sigma must be > 0, got 0.0"))
        XCTAssertTrue(message(.smoothing(sigma: 0.3, copies: 2, selection: 100, estimation: 1000, alpha: 1, radii: [0], votes: 100, draws: 8))
            .contains("smoothing: alpha must be in (0, 1), got 1.0"))
        XCTAssertTrue(message(.smoothing(sigma: 0.3, copies: 2, selection: 100, estimation: 0, alpha: 0.001, radii: [0], votes: 100, draws: 8))
            .contains("smoothing: estimation (n) must be >= 1, got 0"))
        XCTAssertTrue(message(.smoothing(sigma: 0.3, copies: 2, selection: 0, estimation: 10, alpha: 0.001, radii: [0], votes: 100, draws: 8))
            .contains("smoothing: selection (n0) must be >= 1, got 0"))
        XCTAssertTrue(message(.smoothing(sigma: 0.3, copies: 2, selection: 1, estimation: 10, alpha: 0.001, radii: [-1], votes: 100, draws: 8))
            .contains("radii"))
        XCTAssertTrue(message(.smoothing(sigma: 0.3, copies: 2, selection: 1, estimation: 10, alpha: 0.001, radii: [0], votes: 0, draws: 8))
            .contains("votes must be >= 1"))
        // The registry: σ is GDA's (its model is the base), Cohen et al.'s n₀ and α.
        guard case let .smoothing(sigma, copies, n0, _, alpha, _, _, _)? = try? DefenseSpec.named("smoothing", epsilon: 0.1, quick: true),
              case let .gda(gdaSigma, gdaCopies)? = try? DefenseSpec.named("gda", epsilon: 0.1, quick: true) else {
            return XCTFail("smoothing and gda are in the registry")
        }
        XCTAssertEqual(sigma, gdaSigma)
        XCTAssertEqual(copies, gdaCopies)
        XCTAssertEqual(n0, 100)
        XCTAssertEqual(alpha, 0.001)
    }
}
