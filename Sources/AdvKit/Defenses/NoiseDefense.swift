import Foundation

/// Gaussian noise on the input at prediction time: logits averaged over `draws` noisy copies x + N(0, σ²I)
/// (clipped to `bounds` when given). Differentiable: the gradient is the average of the draws' gradients, so a
/// gradient attack on this classifier is EOT (Athalye et al. 2018), the adaptive attack on a randomised defense.
///
/// The draws are keyed per image, never by the batch an image sits in: draw t of an image is element-wise
/// N(0, σ²) from (`seed`, a key of (the restart stream, the image's pixels), counter t·d + j), d the pixels per
/// image. t counts the draws made for that image (the same pixels) since the last `restart(stream:)`, so a second
/// call on the same image draws fresh noise (the next EOT step, the next AutoAttack iterate), while an image
/// evaluated alone, inside a batch of 64, or after other images gets the same noise. The classifier is never told
/// an image's index (attacks pass batches, AutoAttack only the images still standing), hence the pixels as its key.
/// The counts are kept until the next restart: one entry (16 bytes) per distinct image seen.
public final class NoisyClassifier: Classifier {
    public let base: Classifier
    public let sigma: Float
    public let draws: Int
    public let seed: UInt64
    /// Where the noisy copies are clipped before the base sees them (nil: not clipped). A model trained on
    /// clipped Gaussian augmentation (`Dataset.gaussianAugmented`) is served the same clipped noise.
    public let bounds: PixelBounds?
    private var stream: UInt64 = 0
    /// Per image key: the draws made for it since the last restart.
    private var drawsMade: [UInt64: UInt64] = [:]
    public var classCount: Int { base.classCount }
    public var inputShape: Shape { base.inputShape }

    public init(_ base: Classifier, sigma: Float, draws: Int = 1, seed: UInt64 = 0, bounds: PixelBounds? = nil) {
        precondition(sigma >= 0 && draws >= 1, "noise: sigma must be >= 0 and draws >= 1")
        self.base = base
        self.sigma = sigma
        self.draws = draws
        self.seed = seed
        self.bounds = bounds
    }

    /// Keys the next draws by `stream` and forgets the draws counted so far: after `restart(stream: k)` the
    /// classifier draws for an image what any other instance with the same seed draws for it after the same
    /// restart, whatever either computed before (an evaluation keys each unit's draws by its name, so a resumed
    /// run draws what an uninterrupted one draws).
    public func restart(stream: UInt64) {
        self.stream = stream
        drawsMade.removeAll(keepingCapacity: true)
    }

    /// The key of one image's draws: 64-bit FNV-1a over the restart stream and the pixels' bit patterns, finished
    /// with a multiply-xorshift so that nearby images get unrelated keys.
    static func imageKey(stream: UInt64, pixels: UnsafePointer<Float>, count d: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ stream
        for j in 0..<d { h = (h ^ UInt64(pixels[j].bitPattern)) &* 0x0000_0100_0000_01B3 }
        h = (h ^ (h >> 33)) &* 0xff51_afd7_ed55_8ccd
        return h ^ (h >> 33)
    }

    /// The noise of `draws` draws for each image of `x` (N, C, H, W): one tensor per draw, each image's rows keyed
    /// by the image (see the type's comment), and the images' draw counts advanced.
    func noise(for x: Tensor) -> [Tensor] {
        let n = x.shape[0], d = x.shape.itemCount
        guard n > 0 else { return [Tensor](repeating: x, count: draws) }
        var keys = [UInt64](repeating: 0, count: n), first = [UInt64](repeating: 0, count: n)
        x.withUnsafeBufferPointer { p in
            for i in 0..<n {
                keys[i] = NoisyClassifier.imageKey(stream: stream, pixels: p.baseAddress! + i * d, count: d)
                first[i] = drawsMade[keys[i], default: 0]
                drawsMade[keys[i]] = first[i] &+ UInt64(draws)
            }
        }
        var one = Tensor(uninitialized: Shape([1] + Array(x.shape.dims.dropFirst())))
        return (0..<draws).map { k in
            var out = Tensor(uninitialized: x.shape)
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<n {
                    Kernels.randomNormal(&one, seed: seed, stream: keys[i], offset: (first[i] &+ UInt64(k)) &* UInt64(d), mean: 0, std: sigma)
                    one.withUnsafeBufferPointer { src in (dst.baseAddress! + i * d).update(from: src.baseAddress!, count: d) }
                }
            }
            return out
        }
    }

    public func callAsFunction(_ x: Variable) -> Variable {
        let tape = x.tape
        var sum: Variable?
        for noise in noise(for: x.value) {
            var noisy = tape.add(x, tape.input(noise))
            if let bounds { noisy = tape.clip(noisy, min: bounds.lo, max: bounds.hi) }
            let z = base(noisy)
            sum = sum.map { tape.add($0, z) } ?? z
        }
        return draws == 1 ? sum! : tape.scale(sum!, by: 1 / Float(draws))
    }
}
