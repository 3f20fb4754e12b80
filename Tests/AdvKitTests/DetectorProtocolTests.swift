@_spi(Support) import AdvKit
import AdvKitTestSupport
import XCTest

/// One `Detector` protocol for feature squeezing's detector and the detector network: calibration, flags and the
/// adaptive attack's loss, the same code for both.
final class DetectorProtocolTests: XCTestCase {
    private let data = squaresDataset(count: 96, seed: 41)

    private func detectors() throws -> [any Detector] {
        let model = Model(.mlp, inputShape: [1, 12, 12], classes: 4, seed: 0)
        try Trainer(model: model, configuration: testTrainingConfiguration(epochs: 1)).fit(squaresDataset(count: 256, seed: 40))
        let squeezing = try SqueezingDetector(model: model, squeezers: [.bitDepth(2)], threshold: 0)
        let network = DetectorNetwork(network: Model(.mlp, inputShape: [1, 12, 12], classes: 2, seed: 1))
        return [squeezing, network]
    }

    func testBothDetectorsCalibrateAndFlagThroughTheProtocol() throws {
        for var detector in try detectors() {
            let what = "\(type(of: detector))"
            try detector.calibrate(cleanImages: data.images, falsePositiveRate: 0.25)
            // The threshold is the 0.75 quantile of the clean scores: the 72nd smallest of 96 (ceil(0.75·96)).
            let scores = detector.scores(data.images)
            XCTAssertEqual(detector.threshold, scores.sorted()[71], what)
            let flags = detector.detect(data.images)
            XCTAssertEqual(flags, scores.map { $0 > detector.threshold }, what)
            XCTAssertLessThanOrEqual(flags.filter { $0 }.count, 24, "\(what): at most 25% of the clean images flagged")
            let rates = detector.rates(clean: data.images, adversarial: data.images)
            XCTAssertEqual(rates.falsePositive, Double(flags.filter { $0 }.count) / 96, accuracy: 1e-12, what)
            XCTAssertThrowsError(try detector.calibrate(cleanImages: data.images, falsePositiveRate: 1), what)
        }
    }

    func testTheDetectorNetworkIsDifferentiableAndTheSqueezingDetectorIsNot() throws {
        let ds = try detectors()
        let squeezing = try XCTUnwrap(ds[0] as? SqueezingDetector), network = try XCTUnwrap(ds[1] as? DetectorNetwork)
        let tape = Tape(mode: .inference)
        let x = tape.input(data.images.batch(0..<8))
        XCTAssertFalse(squeezing.isDifferentiable)
        XCTAssertNil(squeezing.evasionLoss(x))
        XCTAssertTrue(network.isDifferentiable)
        // The network's evasion loss is CE(D(x), clean) = −log softmax(D(x))₀ per image (Double reference).
        let loss = try XCTUnwrap(network.evasionLoss(x)).value.scalars
        let logits = network.network.logits(of: data.images.batch(0..<8))
        for i in 0..<8 {
            let z0 = Double(logits[i, 0]), z1 = Double(logits[i, 1]), m = max(z0, z1)
            let want = -(z0 - m - log(exp(z0 - m) + exp(z1 - m)))
            XCTAssertEqual(Double(loss[i]), want, accuracy: 1e-5 + 1e-4 * want, "image \(i): float32 log-softmax")
        }
        // The detector-aware attack needs a differentiable detector: over the squeezing detector it is an error.
        XCTAssertThrowsError(try DetectorAwarePGD(detector: squeezing, epsilon: 0.1).validate())
        XCTAssertNoThrow(try DetectorAwarePGD(detector: network, epsilon: 0.1).validate())
    }
}
