/// Jacobian-based Saliency Map Attack (Papernot et al. 2016), the pairwise variant with increasing features.
///
/// At each iteration, with Z the logits, t the target and Γ the pixels still free to move:
///
///     α_p = ∂Z_t/∂x_p,   β_p = Σ_{j≠t} ∂Z_j/∂x_p
///     (p*, q*) = argmax_{p,q ∈ Γ, α_p+α_q > 0, β_p+β_q < 0} (α_p + α_q)·|β_p + β_q|
///     x_{p*}, x_{q*} ← clip(x + θ)  (both leave Γ once they reach the bound)
///
/// until the model predicts t or a fraction γ of the pixels has been changed. Untargeted goals aim at the
/// class the model finds second most likely on the clean image. Two gradients per iteration, from one
/// forward pass (the tape is replayed).
/// - Parameters: theta θ (1.0: set pixels to the maximum), gamma γ (0.1: at most 10% of the pixels).
public struct JSMA: Attack {
    public var theta: Float
    public var gamma: Float
    public var name: String { "jsma" }
    public var settings: [String: SettingValue] { ["theta": .float(theta), "gamma": .float(gamma)] }

    public init(theta: Float = 1, gamma: Float = 0.1) {
        self.theta = theta
        self.gamma = gamma
    }

    public func validate() throws {
        guard theta.isFinite && theta > 0 else { throw AdvKitError.invalidArgument("theta must be > 0, got \(theta)") }
        guard gamma > 0 && gamma <= 1 else { throw AdvKitError.invalidArgument("gamma must be in (0, 1], got \(gamma)") }
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let n = batch.count, d = batch.images.shape.itemCount, k = model.classCount
        let lo = batch.bounds.lo, hi = batch.bounds.hi
        // Targets: the goal's, or for untargeted the second most likely clean class.
        let targets: [Int] = batch.targets.map { $0.map(Int.init) } ?? {
            let z = model.logits(of: batch.images)
            return (0..<n).map { i in
                let row = z.row(i)
                let order = row.indices.sorted { row[$0] > row[$1] }
                return order[0] == Int(batch.labels[i]) ? order[1] : order[0]
            }
        }()
        var goalBatch = batch
        goalBatch.targets = targets.map(Int32.init)
        let maxChanged = Int(gamma * Float(d))
        var x = batch.images
        var free = [[Bool]](repeating: [Bool](repeating: true, count: d), count: n)
        for i in 0..<n { for j in 0..<d where x.storage.pointer[i * d + j] >= hi { free[i][j] = false } }
        var changed = [Int](repeating: 0, count: n)
        var active = [Bool](repeating: true, count: n)
        let tape = Tape(mode: .inference)
        var targetSeed = Tensor(zeros: [n, k])
        for i in 0..<n { targetSeed[i, targets[i]] = 1 }
        let allSeed = Tensor(repeating: 1, shape: [n, k])
        var alpha = [Float](repeating: 0, count: d), beta = [Float](repeating: 0, count: d)
        while true {
            tape.reset()
            let v = tape.input(x)
            let z = model(v)
            let reached = goalBatch.reached(z.value)
            for i in 0..<n where reached[i] || changed[i] + 2 > maxChanged { active[i] = false }
            if !active.contains(true) { break }
            let gt = tape.gradient(of: z, seed: targetSeed, wrt: v)
            let gall = tape.gradient(of: z, seed: allSeed, wrt: v)
            x.makeUnique()
            let xp = x.storage.pointer
            for i in 0..<n where active[i] {
                let a = gt.storage.pointer + i * d, s = gall.storage.pointer + i * d
                for j in 0..<d { alpha[j] = a[j]; beta[j] = s[j] - a[j] }
                let domain = (0..<d).filter { free[i][$0] }
                var best: Float = 0, bp = -1, bq = -1
                for u in 0..<domain.count {
                    let p = domain[u]
                    let ap = alpha[p], bpv = beta[p]
                    for w in (u + 1)..<max(domain.count, u + 1) {
                        let q = domain[w]
                        let aa = ap + alpha[q], bb = bpv + beta[q]
                        if aa > 0 && bb < 0 {
                            let score = aa * -bb
                            if score > best { best = score; bp = p; bq = q }
                        }
                    }
                }
                guard bp >= 0 else { active[i] = false; continue }  // no admissible pair: give up on this image
                for p in [bp, bq] {
                    xp[i * d + p] = min(max(xp[i * d + p] + theta, lo), hi)
                    if xp[i * d + p] >= hi || theta >= hi - lo { free[i][p] = false }
                }
                changed[i] += 2
            }
        }
        return x
    }
}
