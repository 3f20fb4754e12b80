import Foundation

/// Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ²I),
/// with a certified L2 radius R = σ·Φ⁻¹(p̲_A) (their Theorem 1 with p̲_B = 1 − p̲_A), where p̲_A is a one-sided
/// Clopper-Pearson lower bound on the top class's probability at confidence 1 − α. Abstains when p̲_A ≤ 1/2.
/// With `bounds`, the base classifier is f∘clip (the noisy copy clipped to the pixel range, as
/// `Dataset.gaussianAugmented` trains): the theorem holds for any base classifier, so the certificate is the same.
///
/// Draw k of image i is element-wise N(0, σ²) from (seed, stream·1,000,003 + i, counter k·d + j), d the pixels per
/// image: the numbers depend only on (seed, stream, image index, draw), not on how the draws are batched.
public struct RandomizedSmoothing {
    public let base: Classifier
    public let sigma: Float
    /// Rows per forward pass of the base classifier (draws of several images share a batch).
    public var batchSize = 256
    /// Where the noisy copies are clipped before the base sees them (nil: not clipped, as Cohen et al.).
    public var bounds: PixelBounds?

    public struct Certificate: Codable, Equatable {
        /// The smoothed prediction, or nil when it abstains.
        public var prediction: Int?
        /// The certified L2 radius (0 when abstaining).
        public var radius: Double
        public var lowerBound: Double

        public init(prediction: Int?, radius: Double, lowerBound: Double) {
            (self.prediction, self.radius, self.lowerBound) = (prediction, radius, lowerBound)
        }
    }

    public init(_ base: Classifier, sigma: Float, bounds: PixelBounds? = nil) {
        precondition(sigma > 0, "randomized smoothing needs sigma > 0")
        self.base = base
        self.sigma = sigma
        self.bounds = bounds
    }

    /// The certified L2 radius of a top-class probability bound: σ·Φ⁻¹(p̲_A) when p̲_A > 1/2, else 0 (abstain).
    public static func radius(sigma: Double, lowerBound p: Double) -> Double {
        p > 0.5 && p < 1 ? sigma * Statistics.normalQuantile(p) : 0
    }

    /// Certified accuracy at each radius r (Cohen et al.'s curve): the share of images whose certificate names
    /// their label with a radius ≥ r (abstentions count as wrong).
    public static func certifiedAccuracy(_ certificates: [Certificate], labels: [Int32], radii: [Double]) -> [Double] {
        precondition(certificates.count == labels.count, "one label per certificate")
        return radii.map { r in
            let hits = zip(certificates, labels).filter { $0.0.prediction == Int($0.1) && $0.0.radius >= r }.count
            return Double(hits) / Double(max(labels.count, 1))
        }
    }

    /// Class counts of f(x + ε) over `samples` draws, per image.
    public func counts(_ images: Tensor, samples: Int, seed: UInt64, stream: UInt64) -> [[Int]] {
        precondition(samples >= 1, "counts needs at least one sample")
        let n = images.shape[0], d = images.shape.itemCount
        let item = Array(images.shape.dims.dropFirst())
        var result = [[Int]](repeating: [Int](repeating: 0, count: base.classCount), count: n)
        // Runs of draws (image, first draw, count) gathered until a batch is full.
        var pending: [(image: Int, first: Int, count: Int)] = []
        var rows = 0
        func flush() {
            guard rows > 0 else { return }
            var noisy = Tensor(uninitialized: Shape([rows] + item))
            noisy.withUnsafeMutableBufferPointer { dst in
                images.withUnsafeBufferPointer { src in
                    var r0 = 0
                    for run in pending {
                        var eps = Tensor(uninitialized: Shape([run.count] + item))
                        Kernels.randomNormal(&eps, seed: seed, stream: stream &* 1_000_003 &+ UInt64(run.image),
                                             offset: UInt64(run.first * d), mean: 0, std: sigma)
                        let x = src.baseAddress! + run.image * d
                        eps.withUnsafeBufferPointer { e in
                            for r in 0..<run.count {
                                let out = dst.baseAddress! + (r0 + r) * d, noise = e.baseAddress! + r * d
                                if let b = bounds {
                                    for j in 0..<d { out[j] = min(max(x[j] + noise[j], b.lo), b.hi) }
                                } else {
                                    for j in 0..<d { out[j] = x[j] + noise[j] }
                                }
                            }
                        }
                        r0 += run.count
                    }
                }
            }
            let predictions = base.logits(of: noisy, batchSize: batchSize).argmaxRows()
            var r = 0
            for run in pending {
                for _ in 0..<run.count { result[run.image][predictions[r]] += 1; r += 1 }
            }
            pending.removeAll(keepingCapacity: true)
            rows = 0
        }
        for i in 0..<n {
            var done = 0
            while done < samples {
                let m = min(batchSize - rows, samples - done)
                pending.append((i, done, m))
                rows += m
                done += m
                if rows == batchSize { flush() }
            }
        }
        flush()
        return result
    }

    /// Cohen et al.'s CERTIFY: `selection` draws choose the class, `estimation` draws bound its probability.
    public func certify(_ images: Tensor, selection: Int = 100, estimation: Int = 1000, alpha: Double = 0.001,
                        seed: UInt64 = 0) throws -> [Certificate] {
        try Self.check(samples: selection, "selection"); try Self.check(samples: estimation, "estimation"); try Self.check(alpha: alpha)
        let guess = counts(images, samples: selection, seed: seed, stream: 1).map { c in c.indices.max { c[$0] < c[$1] }! }
        let est = counts(images, samples: estimation, seed: seed, stream: 2)
        return (0..<guess.count).map { i in
            let nA = est[i][guess[i]]
            let lower = Statistics.clopperPearsonLower(successes: nA, trials: estimation, alpha: alpha)
            if lower <= 0.5 { return Certificate(prediction: nil, radius: 0, lowerBound: lower) }
            return Certificate(prediction: guess[i], radius: Self.radius(sigma: Double(sigma), lowerBound: lower), lowerBound: lower)
        }
    }

    /// Cohen et al.'s PREDICT: the top class of `samples` draws, or nil (abstain) when the two-sided binomial test
    /// of its count n_A against the runner-up's n_B (n_A of n_A + n_B at p = 1/2) has a p-value above α. The
    /// prediction is wrong with probability at most α (their Theorem 2).
    public func predict(_ images: Tensor, samples: Int, alpha: Double, seed: UInt64, stream: UInt64 = 3) throws -> [Int?] {
        try Self.check(samples: samples, "votes"); try Self.check(alpha: alpha)
        return counts(images, samples: samples, seed: seed, stream: stream).map { c in
            let order = c.indices.sorted { (c[$0], -$0) > (c[$1], -$1) }
            let nA = c[order[0]], nB = order.count > 1 ? c[order[1]] : 0
            return Statistics.binomialTestPValue(successes: nA, trials: nA + nB) <= alpha ? order[0] : nil
        }
    }

    static func check(samples: Int, _ what: String) throws {
        guard samples >= 1 else { throw AdvKitError.invalidArgument("smoothing needs at least one \(what) sample, got \(samples)") }
    }

    static func check(alpha: Double) throws {
        guard alpha > 0 && alpha < 1 else { throw AdvKitError.invalidArgument("alpha must be in (0, 1), got \(alpha)") }
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

    /// The two-sided binomial test of k successes in n trials against p = 1/2 (scipy's binomtest): the probability,
    /// under Binomial(n, 1/2), of an outcome at least as far from n/2 as k, i.e. min(1, 2·P(X ≥ max(k, n − k))),
    /// with P(X ≥ m) = I_{1/2}(m, n − m + 1). 1 when n = 0.
    public static func binomialTestPValue(successes k: Int, trials n: Int) -> Double {
        precondition(k >= 0 && k <= n, "binomialTestPValue needs 0 <= k <= n, got k \(k), n \(n)")
        let m = max(k, n - k)
        guard n > 0, 2 * m > n else { return 1 }
        return min(1, 2 * regularizedBeta(0.5, Double(m), Double(n - m + 1)))
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
