import Foundation

/// A detector of adversarial inputs: a score per image, higher meaning more likely adversarial, and a threshold
/// above which an image is flagged (and rejected). An evaluation counts a flagged adversarial image as robust, so
/// its cells are only as honest as the attack's view of the detector: `evasionLoss` gives a gradient attack the
/// detector's own loss (the adaptive attack of Carlini & Wagner 2017), and a detector without one is attacked
/// only through the model.
///
/// Adopted by `SqueezingDetector` (feature squeezing, Xu et al. 2018) and `DetectorNetwork` (Metzen et al. 2017);
/// `advkit evaluate` scores, calibrates and sanity-checks both through this protocol alone.
public protocol Detector {
    /// Per image: how adversarial it looks (higher: more).
    func scores(_ images: Tensor) -> [Float]
    /// An image is flagged when its score exceeds this.
    var threshold: Float { get set }
    /// Whether `evasionLoss` exists: an attack can descend it to make the detector call its images clean.
    var isDifferentiable: Bool { get }
    /// Per image, the loss an attacker descends to make the detector call `x` clean, recorded on `x`'s tape
    /// (the detector network: CE(D(x), clean)); nil when the detector is not differentiable.
    func evasionLoss(_ x: Variable) -> Variable?
}

extension Detector {
    public var isDifferentiable: Bool { false }
    public func evasionLoss(_ x: Variable) -> Variable? { nil }

    /// Per image: flagged as adversarial (score > threshold).
    public func detect(_ images: Tensor) -> [Bool] { scores(images).map { $0 > threshold } }

    /// Sets the threshold to the (1 − `falsePositiveRate`) quantile of the scores of `cleanImages`, so that at
    /// most that share of them is flagged (5% in both papers).
    public mutating func calibrate(cleanImages: Tensor, falsePositiveRate: Double) throws {
        guard falsePositiveRate > 0 && falsePositiveRate < 1 else {
            throw AdvKitError.invalidArgument("the false-positive rate must be in (0, 1), got \(falsePositiveRate)")
        }
        threshold = detectorQuantile(scores(cleanImages), 1 - falsePositiveRate)
    }

    /// Detection rate on `adversarial` and false-positive rate on `clean`.
    public func rates(clean: Tensor, adversarial: Tensor) -> (detection: Double, falsePositive: Double) {
        let d = detect(adversarial), f = detect(clean)
        return (Double(d.filter { $0 }.count) / Double(max(d.count, 1)), Double(f.filter { $0 }.count) / Double(max(f.count, 1)))
    }
}

/// The smallest value with at least fraction q of `xs` at or below it (0 for no values).
func detectorQuantile(_ xs: [Float], _ q: Double) -> Float {
    guard !xs.isEmpty else { return 0 }
    let s = xs.sorted()
    return s[min(s.count - 1, max(0, Int((q * Double(s.count)).rounded(.up)) - 1))]
}
