import Foundation

/// Gaussian noise on the input at prediction time: logits averaged over `draws` noisy copies x + N(0, σ²I).
/// Differentiable: the gradient is the average of the draws' gradients, so a gradient attack on this
/// classifier is EOT (Athalye et al. 2018), the adaptive attack on a randomised defense. Each call draws new
/// noise (a counter advances), from `seed`.
public final class NoisyClassifier: Classifier {
    public let base: Classifier
    public let sigma: Float
    public let draws: Int
    public let seed: UInt64
    private var calls: UInt64 = 0
    public var classCount: Int { base.classCount }
    public var inputShape: Shape { base.inputShape }

    public init(_ base: Classifier, sigma: Float, draws: Int = 1, seed: UInt64 = 0) {
        precondition(sigma >= 0 && draws >= 1, "noise: sigma must be >= 0 and draws >= 1")
        self.base = base
        self.sigma = sigma
        self.draws = draws
        self.seed = seed
    }

    /// Keys the next draws by `stream` instead of by the forward passes made so far: after `restart(stream: k)` the
    /// classifier draws what any other instance with the same seed draws after the same restart, whatever either
    /// computed before (an evaluation keys each unit's draws by its name, so a resumed run draws what an
    /// uninterrupted one draws).
    public func restart(stream: UInt64) {
        calls = stream
    }

    public func callAsFunction(_ x: Variable) -> Variable {
        let tape = x.tape
        var sum: Variable?
        for _ in 0..<draws {
            var noise = Tensor(uninitialized: x.shape)
            Kernels.randomNormal(&noise, seed: seed, stream: 0x4E4F_0000 &+ calls, mean: 0, std: sigma)
            calls &+= 1
            let z = base(tape.add(x, tape.input(noise)))
            sum = sum.map { tape.add($0, z) } ?? z
        }
        return draws == 1 ? sum! : tape.scale(sum!, by: 1 / Float(draws))
    }
}

/// Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ²I),
/// with a certified L2 radius σ·Φ⁻¹(p̲_A), where p̲_A is a one-sided Clopper-Pearson lower bound on the top
/// class's probability at confidence 1 − α. Abstains when p̲_A ≤ 1/2.
public struct RandomizedSmoothing {
    public let base: Classifier
    public let sigma: Float
    public var batchSize = 256

    public struct Certificate: Codable, Equatable {
        /// The smoothed prediction, or nil when it abstains.
        public var prediction: Int?
        /// The certified L2 radius (0 when abstaining).
        public var radius: Double
        public var lowerBound: Double
    }

    public init(_ base: Classifier, sigma: Float) {
        precondition(sigma > 0, "randomized smoothing needs sigma > 0")
        self.base = base
        self.sigma = sigma
    }

    /// Class counts of f(x + ε) over `samples` draws, per image.
    public func counts(_ images: Tensor, samples: Int, seed: UInt64, stream: UInt64) -> [[Int]] {
        let n = images.shape[0], d = images.shape.itemCount
        var result = [[Int]](repeating: [Int](repeating: 0, count: base.classCount), count: n)
        for i in 0..<n {
            let one = images.batch(i..<(i + 1))
            var done = 0
            while done < samples {
                let m = min(batchSize, samples - done)
                var noisy = Tensor(uninitialized: [m, images.shape[1], images.shape[2], images.shape[3]])
                let src = one.storage.pointer
                noisy.withUnsafeMutableBufferPointer { p in for r in 0..<m { for j in 0..<d { p[r * d + j] = src[j] } } }
                var eps = Tensor(uninitialized: noisy.shape)
                Kernels.randomNormal(&eps, seed: seed, stream: stream &* 1_000_003 &+ UInt64(i),
                                     offset: UInt64(done * d), mean: 0, std: sigma)
                for c in base.logits(of: noisy + eps, batchSize: batchSize).argmaxRows() { result[i][c] += 1 }
                done += m
            }
        }
        return result
    }

    /// Cohen et al.'s CERTIFY: `selection` draws choose the class, `estimation` draws bound its probability.
    public func certify(_ images: Tensor, selection: Int = 100, estimation: Int = 1000, alpha: Double = 0.001,
                        seed: UInt64 = 0) throws -> [Certificate] {
        guard selection >= 1 && estimation >= 1 else { throw AdvKitError.invalidArgument("smoothing needs at least one sample") }
        guard alpha > 0 && alpha < 1 else { throw AdvKitError.invalidArgument("alpha must be in (0, 1), got \(alpha)") }
        let guess = counts(images, samples: selection, seed: seed, stream: 1).map { c in c.indices.max { c[$0] < c[$1] }! }
        let est = counts(images, samples: estimation, seed: seed, stream: 2)
        return (0..<guess.count).map { i in
            let nA = est[i][guess[i]]
            let lower = Statistics.clopperPearsonLower(successes: nA, trials: estimation, alpha: alpha)
            if lower <= 0.5 { return Certificate(prediction: nil, radius: 0, lowerBound: lower) }
            return Certificate(prediction: guess[i], radius: Double(sigma) * Statistics.normalQuantile(lower), lowerBound: lower)
        }
    }
}

/// The few distributions randomized smoothing needs.
@_spi(Support) public enum Statistics {
    /// Φ⁻¹(p) by bisection on Φ(x) = erfc(−x/√2)/2 (to 1e-12).
    public static func normalQuantile(_ p: Double) -> Double {
        precondition(p > 0 && p < 1, "normalQuantile needs p in (0, 1)")
        var lo = -40.0, hi = 40.0
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if erfc(-mid / 2.0.squareRoot()) / 2 < p { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }

    /// One-sided lower confidence bound on a binomial proportion at level 1 − α: the α quantile of
    /// Beta(k, n − k + 1) (0 when k = 0).
    public static func clopperPearsonLower(successes k: Int, trials n: Int, alpha: Double) -> Double {
        guard k > 0 else { return 0 }
        var lo = 0.0, hi = 1.0
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if regularizedBeta(mid, Double(k), Double(n - k + 1)) < alpha { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }

    /// I_x(a, b), the regularised incomplete beta function (continued fraction, Numerical Recipes' betacf).
    public static func regularizedBeta(_ x: Double, _ a: Double, _ b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let lnGammas: Double = lgamma(a + b) - lgamma(a) - lgamma(b)
        let lnPowers: Double = a * log(x) + b * log(1 - x)
        let lnFront = lnGammas + lnPowers
        if x < (a + 1) / (a + b + 2) { return exp(lnFront) * betaFraction(x, a, b) / a }
        return 1 - exp(lnFront) * betaFraction(1 - x, b, a) / b
    }

    private static func betaFraction(_ x: Double, _ a: Double, _ b: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0, d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...10_000 {
            let m2 = Double(2 * m), md = Double(m)
            var aa = md * (b - md) * x / ((a + m2 - 1) * (a + m2))
            d = 1 + aa * d; if abs(d) < tiny { d = tiny }
            c = 1 + aa / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            h *= d * c
            aa = -(a + md) * (a + b + md) * x / ((a + m2) * (a + m2 + 1))
            d = 1 + aa * d; if abs(d) < tiny { d = tiny }
            c = 1 + aa / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            let delta = d * c
            h *= delta
            if abs(delta - 1) < 1e-15 { break }
        }
        return h
    }
}
