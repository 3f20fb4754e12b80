@_spi(Support) import AdvKit
import AdvKitTestSupport
import XCTest

/// `NoisyClassifier`'s draws are keyed per image: (seed, restart stream, the image's pixels, how many draws that
/// image had since the restart), never by the batch an image sits in or by the calls made for other images.
final class NoiseKeyingTests: XCTestCase {
    /// "Logits" that are the input itself, flattened: what the base sees, so the noise can be read off exactly.
    private final class Probe: Classifier {
        let inputShape: Shape
        var classCount: Int { inputShape.count }
        init(_ shape: Shape) { inputShape = shape }
        func callAsFunction(_ x: Variable) -> Variable { x.tape.flatten(x) }
    }

    private let images = squaresDataset(count: 64, size: 12, seed: 31).images

    /// The noise the classifier added to each image (what the probe saw minus the image), as rows of scalars.
    private func noise(_ c: NoisyClassifier, _ x: Tensor) -> [[Float]] {
        let seen = c.logits(of: x).scalars, clean = x.scalars, d = x.shape.itemCount
        return (0..<x.shape[0]).map { i in (0..<d).map { seen[i * d + $0] - clean[i * d + $0] } }
    }

    func testAnImageDrawsTheSameNoiseAloneOrInsideABatchOf64() {
        let noisy = NoisyClassifier(Probe([1, 12, 12]), sigma: 0.2, draws: 1, seed: 7)
        noisy.restart(stream: 5)
        let inBatch = noise(noisy, images)
        for i in [0, 17, 63] {
            noisy.restart(stream: 5)
            // Other images first: their draws do not move this image's.
            _ = noisy.logits(of: images.batch(((i + 1) % 64)..<((i + 1) % 64 + 1)))
            let alone = noise(noisy, images.batch(i..<(i + 1)))[0]
            XCTAssertEqual(alone, inBatch[i], "image \(i): the same noise alone and in the batch (bit for bit)")
        }
        // Batches split differently (logits(of:batchSize:) runs 64 as 5 + 5 + ... ) draw the same noise.
        noisy.restart(stream: 5)
        let seen = noisy.logits(of: images, batchSize: 5).scalars, clean = images.scalars
        XCTAssertEqual(zip(seen, clean).map { $0 - $1 }, inBatch.flatMap { $0 })
        XCTAssertNotEqual(inBatch[0], inBatch[1], "two images get different noise")
    }

    func testRestartGivesTheSameDrawsAndARepeatedCallFreshOnes() {
        let noisy = NoisyClassifier(Probe([1, 12, 12]), sigma: 0.2, draws: 1, seed: 7)
        noisy.restart(stream: 5)
        let first = noise(noisy, images), second = noise(noisy, images)
        XCTAssertNotEqual(first, second, "the next call on the same images (the next EOT step) draws fresh noise")
        noisy.restart(stream: 5)
        XCTAssertEqual(noise(noisy, images), first, "restart(stream:) replays the draws")
        XCTAssertEqual(noise(noisy, images), second)
        // Another instance with the same seed, restarted the same way, draws the same; another stream does not.
        let other = NoisyClassifier(Probe([1, 12, 12]), sigma: 0.2, draws: 1, seed: 7)
        _ = other.logits(of: images)
        other.restart(stream: 5)
        XCTAssertEqual(noise(other, images), first)
        other.restart(stream: 6)
        XCTAssertNotEqual(noise(other, images), first)
    }

    func testDrawsAreCountedPerImageSoOneCallOfFourDrawsIsFourCallsOfOne() {
        let four = NoisyClassifier(Probe([1, 12, 12]), sigma: 0.2, draws: 4, seed: 3)
        let one = NoisyClassifier(Probe([1, 12, 12]), sigma: 0.2, draws: 1, seed: 3)
        let x = images.batch(0..<8)
        var average = [Float](repeating: 0, count: x.count)
        for _ in 0..<4 { for (j, v) in noise(one, x).joined().enumerated() { average[j] += v / 4 } }
        assertClose(noise(four, x).flatMap { $0 }, average, atol: 1e-6, rtol: 1e-5, "float32 mean of 4 draws in two orders")
    }

    func testTheNoiseIsGaussianWithSigmaAndClippedWhenAsked() {
        let noisy = NoisyClassifier(Probe([1, 12, 12]), sigma: 0.2, draws: 1, seed: 11)
        let all = noise(noisy, images).flatMap { $0 }.map(Double.init)
        let mean = all.reduce(0, +) / Double(all.count)
        let sd = (all.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(all.count)).squareRoot()
        // 9,216 draws: the mean's standard error is 0.2/96 ≈ 0.002, the sd's ≈ 0.0015; 4 standard errors.
        XCTAssertEqual(mean, 0, accuracy: 0.0084)
        XCTAssertEqual(sd, 0.2, accuracy: 0.006)
        let clipped = NoisyClassifier(Probe([1, 12, 12]), sigma: 0.5, draws: 1, seed: 11, bounds: .unit)
        let seen = clipped.logits(of: images).scalars
        XCTAssertTrue(seen.allSatisfy { $0 >= 0 && $0 <= 1 })
        XCTAssertTrue(seen.contains(0) && seen.contains(1), "sigma 0.5 pushes some pixels past both bounds")
    }
}
