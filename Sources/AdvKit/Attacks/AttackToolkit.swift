import Foundation

// The pieces every gradient attack is made of, public so that an attack written outside AdvKit needs nothing
// more: the loss and its input gradient (`AttackLoss`), the ascent direction (`AttackBatch.ascentSign`), the
// goal test (`AttackBatch.reached`, the same test the outcomes use), steps and projections in a norm's ball
// (`Norm.step`, `Norm.project`, `Norm.randomStart`), per-image norms (`perImageNorms`), and the per-image worst
// case over restarts or iterations (`WorstCase`).
//
// A new attack is a struct conforming to `Attack` whose `perturb` uses these; `run` does the rest.

/// An effective setting of an attack, as recorded in JSON (every setting that shaped the result, defaults
/// included).
public enum SettingValue: Sendable, Equatable, Encodable, CustomStringConvertible {
    case int(Int), float(Float), bool(Bool), string(String)

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case let .int(v): try c.encode(v)
        // Float32 settings written as the decimal a person typed (0.1, not 0.10000000149011612).
        case let .float(v): try c.encode(Double(String(describing: v)) ?? Double(v))
        case let .bool(v): try c.encode(v)
        case let .string(v): try c.encode(v)
        }
    }

    public var description: String {
        switch self {
        case let .int(v): return String(v)
        case let .float(v): return String(describing: v)
        case let .bool(v): return String(v)
        case let .string(v): return v
        }
    }

    /// The value as JSONSerialization takes it.
    public var jsonObject: Any {
        switch self {
        case let .int(v): return v
        case let .float(v): return Double(String(describing: v)) ?? Double(v)
        case let .bool(v): return v
        case let .string(v): return v
        }
    }
}

extension Goal {
    /// Whether one image's logits `z` (K values) reach the goal: the target wins by at least `margin` when
    /// `target` is given, else any class but `label` wins. Ties go to the first class, as argmax does.
    public static func isReached(_ z: UnsafePointer<Float>, classes k: Int, label: Int, target: Int?, margin: Float) -> Bool {
        var best = 0
        for j in 1..<k where z[j] > z[best] { best = j }
        guard let t = target else { return best != label }
        var other = -Float.infinity
        for j in 0..<k where j != t { other = max(other, z[j]) }
        return best == t && z[t] - other >= margin
    }
}

extension AttackBatch {
    /// +1 when the attack ascends the cross-entropy of the true class (untargeted), −1 when it descends the
    /// target's (targeted): multiply a loss by it to get "higher is better for the attacker".
    public var ascentSign: Float { targets == nil ? 1 : -1 }

    /// Per-image losses turned so that higher is better for the attacker.
    public func ascending(_ losses: Tensor) -> [Float] {
        let s = ascentSign
        return losses.scalars.map { $0 * s }
    }

    /// Per image: has `logits` (n, K) reached the goal (a wrong class, or the target with the margin)?
    public func reached(_ logits: Tensor) -> [Bool] {
        let k = logits.shape[1]
        let p = logits.storage.pointer
        return (0..<count).map { i in
            Goal.isReached(p + i * k, classes: k, label: Int(labels[i]), target: targets.map { Int($0[i]) }, margin: goal.margin)
        }
    }
}

extension Norm {
    /// One step and its projection: x ← clip(Π_ε(x + α·s(g)), lo, hi) with s(g) = sign(g) (L∞) or g/‖g‖₂ per
    /// image (L2; no step where ‖g‖ = 0). `epsilon` nil: no ball, only the pixel bounds.
    public func step(_ x: inout Tensor, gradient g: Tensor, origin: Tensor, alpha: Float, epsilon: Float?, bounds: PixelBounds) {
        switch self {
        case .linf:
            Kernels.linfStep(&x, gradient: g, origin: origin, alpha: alpha, epsilon: epsilon ?? -1, lo: bounds.lo, hi: bounds.hi)
        case .l2:
            Kernels.l2Step(&x, gradient: g, origin: origin, alpha: alpha, epsilon: epsilon ?? -1, lo: bounds.lo, hi: bounds.hi)
        }
    }

    /// x ← clip(Π_ε(x), lo, hi): onto the ball of radius ε around `origin`, then into the pixel bounds.
    public func project(_ x: inout Tensor, origin: Tensor, epsilon: Float, bounds: PixelBounds) {
        switch self {
        case .linf: Kernels.projectLinf(&x, origin: origin, epsilon: epsilon, lo: bounds.lo, hi: bounds.hi)
        case .l2: Kernels.projectL2(&x, origin: origin, epsilon: epsilon, lo: bounds.lo, hi: bounds.hi)
        }
    }

    /// A random point of the ball around the batch's images, projected into the pixel bounds: L∞, each pixel
    /// uniform in [−ε, ε] (torchattacks, ART and foolbox do the same); L2, a Gaussian direction scaled to a
    /// radius uniform in [0, ε]. Draws are keyed by (seed, stream, image index), so the same seed gives the same
    /// point at any batch size and thread count.
    public func randomStart(_ batch: AttackBatch, epsilon: Float, stream: UInt64) -> Tensor {
        var x = batch.images
        guard epsilon > 0 else { return x }
        let d = x.shape.itemCount
        var noise = Tensor(uninitialized: x.shape)
        let offset = UInt64(batch.offset * d)
        switch self {
        case .linf:
            Kernels.randomUniform(&noise, seed: batch.seed, stream: stream, offset: offset, lo: -epsilon, hi: epsilon)
        case .l2:
            Kernels.randomNormal(&noise, seed: batch.seed, stream: stream, offset: offset, mean: 0, std: 1)
            var radius = Tensor(uninitialized: [batch.count])
            Kernels.randomUniform(&radius, seed: batch.seed, stream: stream &+ 0x0002_0000, offset: UInt64(batch.offset), lo: 0, hi: epsilon)
            let l2 = perImageNorms(noise).l2
            let p = noise.storage.pointer
            for i in 0..<batch.count {
                let f = radius.storage.pointer[i] / max(l2[i], 1e-12)
                for j in 0..<d { p[i * d + j] *= f }
            }
        }
        x = x + noise
        project(&x, origin: batch.images, epsilon: epsilon, bounds: batch.bounds)
        return x
    }
}

/// Per-image L1, L2 and L∞ norms of a batch (n, ...) (Double accumulation).
public func perImageNorms(_ t: Tensor) -> (l1: [Float], l2: [Float], linf: [Float]) {
    let n = t.shape[0], d = n == 0 ? 0 : t.count / n
    var l1 = [Float](repeating: 0, count: n), l2 = l1, linf = l1
    let p = t.storage.pointer
    for i in 0..<n {
        var a = 0.0, s = 0.0
        var m: Float = 0
        for j in 0..<d {
            let v = p[i * d + j]
            a += Double(abs(v))
            s += Double(v) * Double(v)
            m = max(m, abs(v))
        }
        l1[i] = Float(a)
        l2[i] = Float(s.squareRoot())
        linf[i] = m
    }
    return (l1, l2, linf)
}

/// Each image's worst case so far over restarts or iterations: the first candidate that reached the goal, else
/// the one with the highest (attacker-ascending) loss.
public struct WorstCase {
    public private(set) var images: Tensor
    public private(set) var losses: [Float]
    public private(set) var reached: [Bool]

    /// Starts from `images` with no candidate yet (loss −∞).
    public init(_ images: Tensor) {
        self.images = images
        losses = [Float](repeating: -.infinity, count: images.shape[0])
        reached = [Bool](repeating: false, count: images.shape[0])
    }

    /// Offers candidates `x` with their ascending losses and goal tests; keeps each image's better one.
    public mutating func offer(_ x: Tensor, losses l: [Float], reached r: [Bool]) {
        let d = x.shape.itemCount
        var copied = false
        for i in 0..<l.count where !reached[i] && (r[i] || l[i] > losses[i]) {
            if !copied { images.makeUnique(); copied = true }
            (images.storage.pointer + i * d).update(from: x.storage.pointer + i * d, count: d)
            losses[i] = l[i]
            reached[i] = r[i]
        }
    }
}
