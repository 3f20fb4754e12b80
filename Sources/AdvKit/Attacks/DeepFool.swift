/// DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016): the smallest step to the nearest linearised
/// decision boundary, repeated until the class changes.
///
/// At x_i, for each class k ≠ y (or only the target when targeted): w_k = ∇f_k − ∇f_y, f'_k = f_k − f_y.
///
///     L2:  l̂ = argmin_k |f'_k| / ‖w_k‖₂,   r_i = (|f'_l̂| + 1e-4) / ‖w_l̂‖₂² · w_l̂
///     L∞:  l̂ = argmin_k |f'_k| / ‖w_k‖₁,   r_i = (|f'_l̂| + 1e-4) / ‖w_l̂‖₁ · sign(w_l̂)
///     x_{i+1} = clip(x₀ + (1 + overshoot) · Σ r_i, lo, hi)
///
/// The overshoot applies to the total perturbation (as in the paper and foolbox), not to each step: a
/// per-step overshoot with clipping (torchattacks) stalls on images whose pixels sit at the bounds.
/// With `refine` (default on), each successful perturbation is then scaled down by bisection to the
/// smallest factor that still changes the class, so the reported size is the boundary's distance, not an
/// overshoot of it. One forward pass per iteration gives every class's gradient (the tape is replayed with
/// one seed per class).
/// - Parameters: steps (50), overshoot (0.02), norm (.l2), refine (true), refineSteps (10).
public struct DeepFool: Attack {
    public var steps: Int
    public var overshoot: Float
    public var norm: Norm
    public var refine: Bool
    public var refineSteps: Int
    public var name: String { norm == .l2 ? "deepfool" : "deepfool-linf" }
    public var settings: [String: SettingValue] {
        ["steps": .int(steps), "overshoot": .float(overshoot), "norm": .string(norm.rawValue), "refine": .bool(refine),
         "refine_steps": .int(refineSteps)]
    }

    public init(steps: Int = 50, overshoot: Float = 0.02, norm: Norm = .l2, refine: Bool = true, refineSteps: Int = 10) {
        self.steps = steps
        self.overshoot = overshoot
        self.norm = norm
        self.refine = refine
        self.refineSteps = refineSteps
    }

    public func validate() throws {
        try checkSteps(steps)
        try checkEpsilon(overshoot, "overshoot")
        guard refineSteps >= 0 else { throw AdvKitError.invalidArgument("refine steps must be >= 0, got \(refineSteps)") }
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let n = batch.count, d = batch.images.shape.itemCount, k = model.classCount
        let tape = Tape(mode: .inference)
        var total = Tensor(zeros: batch.images.shape)  // Σ r_i, unclipped
        var x = batch.images
        var done = [Bool](repeating: false, count: n)
        var seeds = (0..<k).map { _ in Tensor(zeros: [n, k]) }
        for c in 0..<k { for i in 0..<n { seeds[c][i, c] = 1 } }
        for _ in 0..<steps {
            tape.reset()
            let v = tape.input(x)
            let z = model(v)
            let reached = batch.reached(z.value)
            for i in 0..<n where reached[i] { done[i] = true }
            if done.allSatisfy({ $0 }) { break }
            let logits = z.value.storage.pointer
            // ∇f_c for every class c, from the same forward pass.
            let grads = (0..<k).map { c in tape.gradient(of: z, seed: seeds[c], wrt: v) }
            total.makeUnique()
            let tp = total.storage.pointer
            for i in 0..<n where !done[i] {
                let y = Int(batch.labels[i])
                let candidates = batch.targets.map { [Int($0[i])] } ?? (0..<k).filter { $0 != y }
                let gy = grads[y].storage.pointer + i * d
                var bestRatio = Float.infinity, bestC = -1, bestF: Float = 0, bestNorm: Float = 0
                for c in candidates {
                    let gc = grads[c].storage.pointer + i * d
                    var nrm: Float = 0
                    if norm == .l2 {
                        for j in 0..<d { let w = gc[j] - gy[j]; nrm += w * w }
                        nrm = nrm.squareRoot()
                    } else {
                        for j in 0..<d { nrm += abs(gc[j] - gy[j]) }
                    }
                    let f = abs(logits[i * k + c] - logits[i * k + y])
                    let ratio = f / max(nrm, 1e-12)
                    if ratio < bestRatio { bestRatio = ratio; bestC = c; bestF = f; bestNorm = nrm }
                }
                guard bestC >= 0, bestNorm > 0 else { continue }
                let gc = grads[bestC].storage.pointer + i * d
                let r = tp + i * d
                if norm == .l2 {
                    let s = (bestF + 1e-4) / (bestNorm * bestNorm)
                    for j in 0..<d { r[j] += s * (gc[j] - gy[j]) }
                } else {
                    let s = (bestF + 1e-4) / bestNorm
                    for j in 0..<d { let w = gc[j] - gy[j]; r[j] += w > 0 ? s : (w < 0 ? -s : 0) }
                }
            }
            x = batch.images + total * (1 + overshoot)
            Kernels.clip(&x, lo: batch.bounds.lo, hi: batch.bounds.hi)
        }
        guard refine && refineSteps > 0 else { return x }
        return Bisection.shrink(model, batch, adversarial: x, steps: refineSteps)
    }
}

/// Shrinks perturbations towards the clean image while they keep reaching the goal.
enum Bisection {
    /// For each image whose `adversarial` reaches the goal, the smallest s in [0, 1] (to `steps` halvings)
    /// with clip(x₀ + s·(x' − x₀)) still reaching it. Others are returned as they are. One forward pass a step.
    static func shrink(_ model: Classifier, _ batch: AttackBatch, adversarial: Tensor, steps: Int) -> Tensor {
        let n = batch.count, d = batch.images.shape.itemCount
        let reached = batch.reached(model.logits(of: adversarial))
        var lo = [Float](repeating: 0, count: n), hi = [Float](repeating: 1, count: n)
        let delta = adversarial - batch.images
        func at(_ s: [Float]) -> Tensor {
            var x = batch.images
            x.makeUnique()
            let p = x.storage.pointer, q = delta.storage.pointer
            for i in 0..<n { for j in 0..<d { p[i * d + j] += s[i] * q[i * d + j] } }
            Kernels.clip(&x, lo: batch.bounds.lo, hi: batch.bounds.hi)
            return x
        }
        for _ in 0..<steps {
            let mid = (0..<n).map { (lo[$0] + hi[$0]) / 2 }
            let ok = batch.reached(model.logits(of: at(mid)))
            for i in 0..<n where reached[i] {
                if ok[i] { hi[i] = mid[i] } else { lo[i] = mid[i] }
            }
        }
        let scale = (0..<n).map { reached[$0] ? hi[$0] : 1 }
        return at(scale)
    }
}
