import Foundation

/// The Difference of Logits Ratio loss (Croce & Hein 2020), the loss of APGD-DLR and APGD-T. With π the classes
/// sorted by logit, highest first:
///
///     DLR(z, y)    = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)
///     DLR_t(z, y)  = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)          (targeted, target t)
///
/// Both are invariant to shifting and (positively) rescaling the logits, so they do not saturate the way the
/// cross-entropy does on over-confident or logit-scaled models. Higher is better for the attacker: DLR > 0 means
/// a wrong class wins, DLR_t > 0 means the target beats the true class.
///
/// Gradients with respect to the logits, with N the numerator's difference and D the denominator (ties in the
/// ranking go to the lower class index, as argmax does; where ranks coincide the contributions add):
///
///     DLR:   ∂/∂z_y = −1/D,  ∂/∂z_m = +1/D (m = argmax_{i≠y}),  ∂/∂z_π1 += N/D²,  ∂/∂z_π3 −= N/D²
///     DLR_t: ∂/∂z_y = −1/D,  ∂/∂z_t = +1/D,  ∂/∂z_π1 += N/D²,  ∂/∂z_π3, ∂/∂z_π4 −= N/(2D²)
///
/// Deviation: the ratio needs 3 classes (4 when targeted); with fewer the denominator is 1 (the plain logit
/// margin −N), where the paper's definition is undefined.
public enum DLR {
    /// The denominator's guard, as in the paper.
    public static let guardTerm = 1e-12

    /// Per-image DLR(z, y) of `logits` (n, K) and its gradient dL/dz (n, K).
    public static func loss(logits: Tensor, labels: [Int32]) -> (values: [Float], gradient: Tensor) {
        evaluate(logits, labels: labels, targets: nil)
    }

    /// Per-image targeted DLR_t(z, y) of `logits` (n, K) towards `targets` and its gradient dL/dz (n, K).
    public static func targetedLoss(logits: Tensor, labels: [Int32], targets: [Int32]) -> (values: [Float], gradient: Tensor) {
        precondition(targets.count == labels.count, "DLR: \(targets.count) targets for \(labels.count) labels")
        return evaluate(logits, labels: labels, targets: targets)
    }

    private static func evaluate(_ logits: Tensor, labels: [Int32], targets: [Int32]?) -> (values: [Float], gradient: Tensor) {
        precondition(logits.shape.rank == 2 && logits.shape[0] == labels.count,
                     "DLR: logits of shape \(logits.shape) for \(labels.count) labels")
        let n = labels.count, k = logits.shape[1]
        var values = [Float](repeating: 0, count: n)
        let gradient = Tensor(zeros: [n, k])
        let zp = logits.storage.pointer, gp = gradient.storage.pointer
        var order = [Int](repeating: 0, count: k)
        for i in 0..<n {
            let z = zp + i * k, g = gp + i * k
            let y = Int(labels[i])
            // Classes by logit, highest first; ties to the lower index (a stable sort).
            for j in 0..<k { order[j] = j }
            order.sort { z[$0] > z[$1] || (z[$0] == z[$1] && $0 < $1) }
            let other: Int
            if let targets { other = Int(targets[i]) } else { other = order[0] == y ? order[1] : order[0] }
            let numerator = Double(z[y]) - Double(z[other])
            var denominator = 1.0
            if targets == nil, k >= 3 {
                denominator = Double(z[order[0]]) - Double(z[order[2]]) + guardTerm
            } else if targets != nil, k >= 4 {
                denominator = Double(z[order[0]]) - (Double(z[order[2]]) + Double(z[order[3]])) / 2 + guardTerm
            }
            values[i] = Float(-numerator / denominator)
            g[y] += Float(-1 / denominator)
            g[other] += Float(1 / denominator)
            if targets == nil, k >= 3 {
                let q = numerator / (denominator * denominator)
                g[order[0]] += Float(q)
                g[order[2]] -= Float(q)
            } else if targets != nil, k >= 4 {
                let q = numerator / (denominator * denominator)
                g[order[0]] += Float(q)
                g[order[2]] -= Float(q / 2)
                g[order[3]] -= Float(q / 2)
            }
        }
        return (values, gradient)
    }
}

/// A per-image loss computed on the logits in Swift, with its input gradient from the tape:
/// dL/dx = (dL/dz)ᵀ · ∂z/∂x, one backward pass seeded with dL/dz (`Tape.gradient(of: logits, seed:wrt:)`).
/// One reusable tape, reset after each evaluation, as `AttackLoss`.
///
///     let loss = LogitLoss()
///     let e = loss.evaluate(model, x) { z in DLR.loss(logits: z, labels: labels) }
public final class LogitLoss {
    let tape = Tape(mode: .inference)

    public init() {}

    /// The loss `of` the logits at `x`, per image, and its input gradient (each image's own). `of` returns the
    /// per-image values and dL/dz, the logits' shape.
    public func evaluate(_ model: Classifier, _ x: Tensor,
                         of loss: (Tensor) -> (values: [Float], gradient: Tensor)) -> AttackLoss.Evaluation {
        tape.reset()
        let v = tape.input(x)
        let logits = model(v)
        let (values, seed) = loss(logits.value)
        precondition(seed.shape == logits.shape, "the loss's gradient has shape \(seed.shape), the logits \(logits.shape)")
        let g = tape.gradient(of: logits, seed: seed, wrt: v)
        let e = AttackLoss.Evaluation(gradient: g, logits: logits.value, losses: Tensor(values, shape: [values.count]))
        tape.reset()
        return e
    }
}
