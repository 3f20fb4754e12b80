import Foundation

/// An input transform of feature squeezing (Xu, Evans & Qi 2018).
public enum Squeezer: Codable, Hashable, Sendable, CustomStringConvertible {
    /// Reduce each pixel in [0, 1] to `bits` bits: round(x·(2^b − 1)) / (2^b − 1).
    case bitDepth(Int)
    /// Median over a k×k window per channel (k = 2 or 3), reflecting at the borders; for even k the window
    /// covers [i − k/2, i + k/2 − 1] and the upper median is taken (scipy.ndimage.median_filter's convention).
    case median(Int)

    public var description: String {
        switch self {
        case let .bitDepth(b): return "bit-depth-\(b)"
        case let .median(k): return "median-\(k)x\(k)"
        }
    }

    public func validate() throws {
        switch self {
        case let .bitDepth(b): guard (1...16).contains(b) else { throw AdvKitError.invalidArgument("bit depth must be 1...16, got \(b)") }
        case let .median(k): guard (2...5).contains(k) else { throw AdvKitError.invalidArgument("median window must be 2...5, got \(k)") }
        }
    }

    /// The squeezed images (N, C, H, W).
    public func apply(_ x: Tensor) -> Tensor {
        switch self {
        case let .bitDepth(b):
            let levels = Float((1 << b) - 1)
            return x.map { ($0 * levels).rounded() / levels }
        case let .median(k):
            let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            var out = Tensor(zeros: x.shape)
            let lo = -(k / 2), hi = k - 1 - k / 2, rank = (k * k) / 2
            func reflect(_ i: Int, _ size: Int) -> Int { i < 0 ? -i - 1 : (i >= size ? 2 * size - i - 1 : i) }
            var window = [Float](repeating: 0, count: k * k)
            x.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for plane in 0..<(n * c) {
                        let base = plane * h * w
                        for i in 0..<h { for j in 0..<w {
                            var m = 0
                            for di in lo...hi { for dj in lo...hi {
                                window[m] = src[base + reflect(i + di, h) * w + reflect(j + dj, w)]
                                m += 1
                            } }
                            window.sort()
                            dst[base + i * w + j] = window[rank]
                        } }
                    }
                }
            }
            return out
        }
    }
}

/// A model that sees squeezed inputs. The squeeze is recorded with the identity as its backward pass, so any
/// gradient attack on this classifier is BPDA (Athalye, Carlini & Wagner 2018): the adaptive attack that
/// feature squeezing has to withstand.
public final class SqueezedClassifier: Classifier {
    public let base: Classifier
    public let squeezers: [Squeezer]
    public var classCount: Int { base.classCount }
    public var inputShape: Shape { base.inputShape }

    public init(_ base: Classifier, squeezers: [Squeezer]) {
        self.base = base
        self.squeezers = squeezers
    }

    public func callAsFunction(_ x: Variable) -> Variable {
        var squeezed = x.value
        for s in squeezers { squeezed = s.apply(squeezed) }
        let v = x.tape.custom([x], value: squeezed) { g in [g] }  // BPDA: backward as the identity
        return base(v)
    }
}

/// Feature squeezing's detector: an input is flagged when the L1 distance between the model's softmax on
/// it and on a squeezed copy, maximised over the squeezers, exceeds a threshold chosen on clean data for a
/// target false-positive rate. Not differentiable here (no attack puts its score in the loss).
public struct SqueezingDetector: Detector {
    public let model: Classifier
    public let squeezers: [Squeezer]
    public var threshold: Float

    /// A detector with the given threshold (`calibrate` sets one for a false-positive rate).
    public init(model: Classifier, squeezers: [Squeezer], threshold: Float) throws {
        for s in squeezers { try s.validate() }
        guard !squeezers.isEmpty else { throw AdvKitError.invalidArgument("feature squeezing needs at least one squeezer") }
        self.model = model
        self.squeezers = squeezers
        self.threshold = threshold
    }

    /// A detector whose threshold flags `falsePositiveRate` of `cleanImages` (5% in the paper).
    public init(model: Classifier, squeezers: [Squeezer], cleanImages: Tensor, falsePositiveRate: Double = 0.05) throws {
        try self.init(model: model, squeezers: squeezers, threshold: 0)
        try calibrate(cleanImages: cleanImages, falsePositiveRate: falsePositiveRate)
    }

    /// max over squeezers of ‖softmax(f(x)) − softmax(f(squeeze(x)))‖₁, per image.
    public func scores(_ images: Tensor) -> [Float] {
        let p = Kernels.softmax(model.logits(of: images))
        var best = [Float](repeating: 0, count: images.shape[0])
        let k = model.classCount
        for s in squeezers {
            let q = Kernels.softmax(model.logits(of: s.apply(images)))
            for i in 0..<best.count {
                var d: Float = 0
                for j in 0..<k { d += abs(p.storage.pointer[i * k + j] - q.storage.pointer[i * k + j]) }
                best[i] = max(best[i], d)
            }
        }
        return best
    }
}

/// Area under the ROC curve of a score that should be higher on `positives` than on `negatives`
/// (the Mann-Whitney statistic, ties counting one half).
public func rocAUC(negatives: [Float], positives: [Float]) -> Double {
    guard !negatives.isEmpty && !positives.isEmpty else { return .nan }
    let all = negatives.map { ($0, false) } + positives.map { ($0, true) }
    let sorted = all.sorted { $0.0 < $1.0 }
    var rankSum = 0.0, i = 0
    while i < sorted.count {
        var j = i
        while j + 1 < sorted.count && sorted[j + 1].0 == sorted[i].0 { j += 1 }
        let rank = Double(i + j) / 2 + 1  // average rank of the tie group (1-based)
        for t in i...j where sorted[t].1 { rankSum += rank }
        i = j + 1
    }
    let np = Double(positives.count), nn = Double(negatives.count)
    return (rankSum - np * (np + 1) / 2) / (np * nn)
}
