import Foundation

/// FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted adversarial examples with a
/// fast adaptive boundary attack"): the smallest perturbation (L∞ or L2) that changes the class, found by
/// projecting onto the linearised decision boundary within the pixel box, with an extrapolation towards the
/// clean image x₀ that keeps the perturbation small.
///
/// At x_k, for the chosen class s (untargeted: the closest linearised boundary, s = argmin_{c≠y} |f_c| / ‖∇f_c‖_q
/// with f_c = z_c − z_y and q the dual norm, L1 for L∞ and L2 for L2; targeted: the target), the hyperplane is
/// π = {x : f_s(x_k) + ∇f_s(x_k)·(x − x_k) = 0}, and with P(p) the minimal-norm projection of p onto π ∩ [lo, hi]^d:
///
///     δ_k = P(x_k) − x_k,   δ_0 = P(x₀) − x₀,   α = min(‖δ_k‖ / (‖δ_k‖ + ‖δ_0‖), α_max)
///     x_{k+1} = clip((1 − α)(x_k + η·δ_k) + α(x₀ + η·δ_0), lo, hi)
///
/// and when x_{k+1} reaches the goal, it is kept if it is the smallest so far and the iterate steps back towards
/// x₀: x_{k+1} ← x₀ + β(x_{k+1} − x₀). Restarts after the first start from a random point at distance
/// min(best, r)/2 from x₀ (r the restart radius: ε when set). Defaults as the reference implementation
/// (fra31/auto-attack): 100 steps, 1 restart, α_max 0.1, η 1.05, β 0.9.
///
/// The projection P: minimise ‖d‖ subject to w·d = c and lo ≤ p + d ≤ hi (c = −(f + w·(p − x_k))). By the KKT
/// conditions every coordinate moves in the direction σ_j = sign(w_j·c), as far as a common level λ ≥ 0 allows:
///
///     L∞: d_j = σ_j · min(λ, room_j),          L2: d_j = σ_j · min(λ·|w_j|, room_j)
///
/// (room_j the distance to the bound in direction σ_j); the movement Σ|w_j||d_j| is nondecreasing in λ, and λ is
/// its exact root, found by a selection over the coordinates' breakpoints (expected O(d), no sort). When the box
/// cannot reach the hyperplane, every coordinate moves to its bound (the box point nearest the hyperplane's side).
///
/// FAB-T (`targeted`, as AutoAttack runs it): for each of the top `targetClasses` classes of the clean logits
/// after the first (9, capped at classes − 1), a run towards the hyperplane z_t − z_y = 0; any misclassification
/// counts, and each image keeps its smallest over targets and restarts. With a targeted goal the goal's target is
/// used instead (one run, its boundary against the strongest other class, with the goal's margin).
///
/// With `epsilon` set (AutoAttack's use): an image stops once it has an adversarial within ε, and one whose
/// smallest adversarial is larger than ε gets the clean image back. With `epsilon` nil (minimal-norm mode) every
/// image runs every step, target and restart, and the smallest adversarial found is returned (the clean image
/// where none was found).
///
/// Cost per step: one forward pass for the gradients and one to test the new point (skipped when no image
/// reached the goal: the test's forward pass is then the next step's); untargeted, one backward pass per class
/// (the tape replayed with one seed per class, as DeepFool), targeted one; and the two projections per image,
/// in C with the images split over the threads (ck_fab_step; `referenceStep` is the same in Swift). On the
/// reference CNN inside AutoAttack some image reaches the goal on nearly every step (about two thirds of the
/// image-steps), so a step costs two forward passes and one backward pass, as the reference implementation's.
/// - Parameters: epsilon (nil), norm (.linf), targeted (false), steps (100), restarts (1), alphaMax (0.1),
///   eta (1.05), beta (0.9), targetClasses (9), restartRadius (nil: ε, else 0.3 for L∞ and 1 for L2, the
///   reference's defaults).
public struct FAB: Attack {
    public var epsilon: Float?
    public var norm: Norm
    public var targeted: Bool
    public var steps: Int
    public var restarts: Int
    public var alphaMax: Float
    public var eta: Float
    public var beta: Float
    public var targetClasses: Int
    public var restartRadius: Float?

    public var name: String { (targeted ? "fab-t" : "fab") + (norm == .l2 ? "-l2" : "") }

    /// The radius of the random restarts: `restartRadius`, else ε, else the reference's 0.3 (L∞) or 1 (L2).
    public var effectiveRestartRadius: Float { restartRadius ?? epsilon ?? (norm == .linf ? 0.3 : 1) }

    public var settings: [String: SettingValue] {
        ["epsilon": epsilon.map { .float($0) } ?? .string("none"), "norm": .string(norm.rawValue),
         "targeted": .bool(targeted), "steps": .int(steps), "restarts": .int(restarts), "alpha_max": .float(alphaMax),
         "eta": .float(eta), "beta": .float(beta), "target_classes": .int(targetClasses),
         "restart_radius": .float(effectiveRestartRadius)]
    }

    public init(epsilon: Float? = nil, norm: Norm = .linf, targeted: Bool = false, steps: Int = 100, restarts: Int = 1,
                alphaMax: Float = 0.1, eta: Float = 1.05, beta: Float = 0.9, targetClasses: Int = 9,
                restartRadius: Float? = nil) {
        self.epsilon = epsilon
        self.norm = norm
        self.targeted = targeted
        self.steps = steps
        self.restarts = restarts
        self.alphaMax = alphaMax
        self.eta = eta
        self.beta = beta
        self.targetClasses = targetClasses
        self.restartRadius = restartRadius
    }

    public func validate() throws {
        if let epsilon { try checkEpsilon(epsilon) }
        try checkSteps(steps)
        try checkSteps(restarts, "restarts")
        try checkSteps(targetClasses, "target classes")
        guard alphaMax.isFinite && alphaMax >= 0 && alphaMax <= 1 else {
            throw AdvKitError.invalidArgument("alpha_max must be in [0, 1], got \(alphaMax)")
        }
        guard eta.isFinite && eta >= 1 else { throw AdvKitError.invalidArgument("eta must be >= 1, got \(eta)") }
        guard beta.isFinite && beta > 0 && beta <= 1 else { throw AdvKitError.invalidArgument("beta must be in (0, 1], got \(beta)") }
        if let restartRadius { try checkEpsilon(restartRadius, "restart radius") }
    }

    // MARK: the attack

    /// Which boundary the runs aim at.
    private enum Aim {
        /// The closest boundary between the label and any other class.
        case closest
        /// z_t − z_y per image (FAB-T); any misclassification counts.
        case target([Int])
        /// The goal's target against the strongest other class, with the goal's margin.
        case goalTarget([Int])
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let n = batch.count, k = model.classCount
        let tape = Tape(mode: .inference)
        tape.reset()
        let clean = model(tape.input(batch.images)).value
        let cleanReached = batch.reached(clean)
        tape.reset()
        var state = BestSoFar(batch.images)
        // Images the goal is already reached on are not attacked (they return clean, as the reference does).
        let attackable = (0..<n).filter { !cleanReached[$0] }
        var aims: [Aim] = []
        if let t = batch.targets {
            aims = [.goalTarget(t.map(Int.init))]
        } else if targeted {
            // The (j+2)-th highest clean logit for j = 0..<targetClasses (the highest is the label: images the
            // model gets wrong are not attacked).
            let order = (0..<n).map { i -> [Int] in
                let row = clean.storage.pointer + i * k
                return (0..<k).sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }
            }
            for j in 0..<min(targetClasses, k - 1) { aims.append(.target(order.map { $0[j + 1] })) }
        } else {
            aims = [.closest]
        }
        for (a, aim) in aims.enumerated() {
            for restart in 0..<restarts {
                let ids = attackable.filter { epsilon == nil || !(state.norms[$0] <= epsilon!) }
                if ids.isEmpty { break }
                let start = restart == 0 ? nil : randomStarts(batch, ids: ids, best: state.norms, stream: UInt64(a * 1024 + restart))
                run(model, batch, aim: aim, ids: ids, start: start, tape: tape, state: &state)
            }
        }
        var out = batch.images
        out.makeUnique()
        let d = batch.images.shape.itemCount
        for i in 0..<n where state.norms[i] < .infinity && (epsilon == nil || state.norms[i] <= epsilon!) {
            (out.storage.pointer + i * d).update(from: state.images.storage.pointer + i * d, count: d)
        }
        return out
    }

    /// Each image's smallest adversarial so far and its norm (∞: none yet).
    private struct BestSoFar {
        var images: Tensor
        var norms: [Float]
        init(_ clean: Tensor) {
            images = clean
            images.makeUnique()
            norms = [Float](repeating: .infinity, count: clean.shape[0])
        }
    }

    /// Random restarts: x₀ + r·u/‖u‖ with r = min(best, restart radius)/2, u uniform in [−1, 1]^d (L∞) or
    /// Gaussian (L2), clipped to the bounds; draws keyed by (seed, stream, image index) as `Norm.randomStart`.
    private func randomStarts(_ batch: AttackBatch, ids: [Int], best: [Float], stream: UInt64) -> Tensor {
        let d = batch.images.shape.itemCount
        var noise = Tensor(uninitialized: batch.images.shape)
        let s = 0x4641_4200_0000 &+ stream
        if norm == .linf {
            Kernels.randomUniform(&noise, seed: batch.seed, stream: s, offset: UInt64(batch.offset * d), lo: -1, hi: 1)
        } else {
            Kernels.randomNormal(&noise, seed: batch.seed, stream: s, offset: UInt64(batch.offset * d), mean: 0, std: 1)
        }
        var x = batch.images.gather(ids)
        x.makeUnique()
        let np = perImageNorms(noise)
        let xp = x.storage.pointer, up = noise.storage.pointer
        for (row, i) in ids.enumerated() {
            let r = min(best[i], effectiveRestartRadius) / 2
            let size = norm == .linf ? np.linf[i] : np.l2[i]
            let f = size > 0 ? r / size : 0
            for j in 0..<d { xp[row * d + j] = min(max(xp[row * d + j] + f * up[i * d + j], batch.bounds.lo), batch.bounds.hi) }
        }
        return x
    }

    /// One run of `steps` FAB steps on the images `ids`, from `start` (nil: the clean images), recording each
    /// image's smallest adversarial in `state`.
    private func run(_ model: Classifier, _ batch: AttackBatch, aim: Aim, ids initial: [Int], start: Tensor?,
                     tape: Tape, state: inout BestSoFar) {
        let k = model.classCount, d = batch.images.shape.itemCount
        let lo = batch.bounds.lo, hi = batch.bounds.hi
        var ids = initial
        var x0 = batch.images.gather(ids)
        var x1 = start ?? x0
        x1.makeUnique()
        var next = Tensor(uninitialized: x1.shape)
        var w = Tensor(uninitialized: x1.shape)  // the chosen hyperplane's normal ∇f_s, per image
        var f = [Float](repeating: 0, count: ids.count)  // and its value f_s(x_k)
        var dist = [Float](repeating: 0, count: ids.count)
        var scratch = [Double](repeating: 0, count: Kernels.fabStepScratchCount(pixels: d))
        var seeds: [Tensor] = []
        var labels: [Int] = [], targets: [Int] = [], goalTargets: [Int]? = nil
        func rebuild() {
            labels = ids.map { Int(batch.labels[$0]) }
            switch aim {
            case .closest:
                // Seed c: e_c − e_y per image (zero where c = y), so one backward pass gives ∇(z_c − z_y).
                seeds = (0..<k).map { c in
                    var s = Tensor(zeros: [ids.count, k])
                    for (i, y) in labels.enumerated() where y != c { s[i, c] = 1; s[i, y] = -1 }
                    return s
                }
            case let .target(t):
                targets = ids.map { t[$0] }
                var s = Tensor(zeros: [ids.count, k])
                for i in 0..<ids.count { s[i, targets[i]] = 1; s[i, labels[i]] = -1 }
                seeds = [s]
            case let .goalTarget(t):
                targets = ids.map { t[$0] }
                goalTargets = targets
                seeds = [Tensor(zeros: [ids.count, k])]  // rewritten every step: the strongest other class moves
            }
        }
        rebuild()
        var v = tape.input(x1), z = v
        var haveForward = false
        for _ in 0..<steps {
            let m = ids.count
            if !haveForward {
                tape.reset()
                v = tape.input(x1)
                z = model(v)
            }
            let zp = z.value.storage.pointer
            let wp = w.storage.pointer
            // The hyperplane: its normal w and value f at x_k, per image.
            switch aim {
            case .closest:
                for i in 0..<m { dist[i] = .infinity }
                for c in 0..<k where labels.contains(where: { $0 != c }) {
                    let g = tape.gradient(of: z, seed: seeds[c], wrt: v)
                    let gp = g.storage.pointer
                    for i in 0..<m where labels[i] != c {
                        let row = gp + i * d
                        var size: Float = 0
                        if norm == .linf {
                            for j in 0..<d { size += abs(row[j]) }
                        } else {
                            for j in 0..<d { size += row[j] * row[j] }
                            size = size.squareRoot()
                        }
                        let fc = zp[i * k + c] - zp[i * k + labels[i]]
                        let r = abs(fc) / (size + 1e-12)
                        if r < dist[i] {
                            dist[i] = r
                            f[i] = fc
                            (wp + i * d).update(from: row, count: d)
                        }
                    }
                }
            case .target:
                let g = tape.gradient(of: z, seed: seeds[0], wrt: v)
                wp.update(from: g.storage.pointer, count: m * d)
                for i in 0..<m { f[i] = zp[i * k + targets[i]] - zp[i * k + labels[i]] }
            case .goalTarget:
                let sp = seeds[0].storage.pointer
                sp.update(repeating: 0, count: m * k)
                for i in 0..<m {
                    let t = targets[i]
                    var other = t == 0 ? 1 : 0
                    for c in 0..<k where c != t && zp[i * k + c] > zp[i * k + other] { other = c }
                    sp[i * k + t] = 1
                    sp[i * k + other] = -1
                    f[i] = zp[i * k + t] - zp[i * k + other] - batch.goal.margin
                }
                let g = tape.gradient(of: z, seed: seeds[0], wrt: v)
                wp.update(from: g.storage.pointer, count: m * d)
            }
            // The step: project x_k and x₀ onto the hyperplane ∩ box, extrapolate, clip (the images split over
            // the threads in C; `referenceStep` is the same in Swift).
            let x0p = x0.storage.pointer
            scratch.withUnsafeMutableBufferPointer { sp in
                Kernels.fabStep(&next, scratch: sp.baseAddress!, point: x1, origin: x0, normal: w, value: f, norm: norm,
                                alphaMax: alphaMax, eta: eta, lo: lo, hi: hi)
            }
            swap(&x1, &next)
            // Test the new point; its forward pass is the next step's unless some image steps back.
            tape.reset()
            v = tape.input(x1)
            z = model(v)
            haveForward = true
            let zq = z.value.storage.pointer
            var done: [Int] = []
            let x1q = x1.storage.pointer
            for i in 0..<m {
                let target = goalTargets.map { $0[i] }
                guard Goal.isReached(zq + i * k, classes: k, label: labels[i], target: target, margin: batch.goal.margin) else { continue }
                haveForward = false
                let id = ids[i]
                let xi = x1q + i * d, oi = x0p + i * d
                var size: Float = 0
                if norm == .linf {
                    for j in 0..<d { size = max(size, abs(xi[j] - oi[j])) }
                } else {
                    var s = 0.0
                    for j in 0..<d { let e = Double(xi[j] - oi[j]); s += e * e }
                    size = Float(s.squareRoot())
                }
                if size < state.norms[id] {
                    state.norms[id] = size
                    (state.images.storage.pointer + id * d).update(from: xi, count: d)
                }
                if let epsilon, state.norms[id] <= epsilon { done.append(i) }
                for j in 0..<d { xi[j] = oi[j] + beta * (xi[j] - oi[j]) }
            }
            if !done.isEmpty {
                // ε mode: images with an adversarial within ε stop; the rest continue as a smaller batch.
                let keep = (0..<m).filter { !done.contains($0) }
                if keep.isEmpty { return }
                ids = keep.map { ids[$0] }
                x0 = x0.gather(keep)
                x1 = x1.gather(keep)
                next = Tensor(uninitialized: x1.shape)
                w = Tensor(uninitialized: x1.shape)
                f = [Float](repeating: 0, count: keep.count)
                dist = f
                rebuild()
            }
        }
    }

    // MARK: the projection

    /// FAB's step for `count` images of `d` values in plain Swift (the reference for ck_fab_step, which `run`
    /// calls): per image, δ_k and δ_0 onto {x : f + w·(x − x_k) = 0} ∩ [lo, hi]^d, α = min(‖δ_k‖/(‖δ_k‖ + ‖δ_0‖),
    /// α_max), out = clip((1 − α)(x_k + η·δ_k) + α(x₀ + η·δ_0), lo, hi).
    @_spi(Testing) public static func referenceStep(point x1: [Float], origin x0: [Float], normal w: [Float], value f: [Float],
                                                    count: Int, norm: Norm, alphaMax: Float, eta: Float,
                                                    bounds: PixelBounds = .unit) -> [Float] {
        let d = count > 0 ? x1.count / count : 0
        precondition(x1.count == count * d && x0.count == x1.count && w.count == x1.count && f.count == count,
                     "referenceStep: \(count) images need equal-length point, origin and normal and one value each")
        let lo = bounds.lo, hi = bounds.hi
        var out = [Float](repeating: 0, count: x1.count)
        var d1 = [Float](repeating: 0, count: d), d2 = d1
        let scratch = ProjectionScratch(count: d)
        x1.withUnsafeBufferPointer { x1b in x0.withUnsafeBufferPointer { x0b in w.withUnsafeBufferPointer { wb in
            for i in 0..<count {
                let xi = x1b.baseAddress! + i * d, oi = x0b.baseAddress! + i * d, wi = wb.baseAddress! + i * d
                var shift = 0.0  // w·(x₀ − x_k)
                for j in 0..<d { shift += Double(wi[j]) * Double(oi[j] - xi[j]) }
                let a1 = max(boundaryStep(&d1, point: xi, normal: wi, change: -Double(f[i]), count: d, norm: norm,
                                          lo: lo, hi: hi, scratch: scratch), 1e-8)
                let a2 = max(boundaryStep(&d2, point: oi, normal: wi, change: -Double(f[i]) - shift, count: d,
                                          norm: norm, lo: lo, hi: hi, scratch: scratch), 1e-8)
                let alpha = min(max(a1 / (a1 + a2), 0), alphaMax)
                for j in 0..<d {
                    let p = (1 - alpha) * (xi[j] + eta * d1[j]) + alpha * (oi[j] + eta * d2[j])
                    out[i * d + j] = min(max(p, lo), hi)
                }
            }
        }}}
        return out
    }

    /// `referenceStep` through the C kernel `run` uses (ck_fab_step, the images split over the threads). For tests.
    @_spi(Testing) public static func kernelStep(point x1: [Float], origin x0: [Float], normal w: [Float], value f: [Float],
                                                 count: Int, norm: Norm, alphaMax: Float, eta: Float,
                                                 bounds: PixelBounds = .unit) -> [Float] {
        let d = count > 0 ? x1.count / count : 0
        precondition(x1.count == count * d && x0.count == x1.count && w.count == x1.count && f.count == count,
                     "kernelStep: \(count) images need equal-length point, origin and normal and one value each")
        guard count > 0 && d > 0 else { return [] }
        var out = Tensor(zeros: [count, d])
        var scratch = [Double](repeating: 0, count: Kernels.fabStepScratchCount(pixels: d))
        scratch.withUnsafeMutableBufferPointer { sp in
            Kernels.fabStep(&out, scratch: sp.baseAddress!, point: Tensor(x1, shape: [count, d]),
                            origin: Tensor(x0, shape: [count, d]), normal: Tensor(w, shape: [count, d]), value: f,
                            norm: norm, alphaMax: alphaMax, eta: eta, lo: bounds.lo, hi: bounds.hi)
        }
        return out.scalars
    }

    /// Scratch for `boundaryStep`, one image's worth, reused across images and steps.
    final class ProjectionScratch {
        var breakpoint: [Double], full: [Double], slope: [Double], working: [Int32]
        init(count d: Int) {
            breakpoint = [Double](repeating: 0, count: d)
            full = breakpoint
            slope = breakpoint
            working = [Int32](repeating: 0, count: d)
        }
    }

    /// The minimal-norm step d with w·d = c and lo ≤ p + d ≤ hi, written to `out`; returns ‖d‖ (L∞ or L2).
    /// Unreachable hyperplane: every coordinate with w_j ≠ 0 moves to the bound in the direction of sign(w_j·c).
    ///
    /// d_j = σ_j·min(λ·t_j, room_j) with t_j = 1 (L∞) or |w_j| (L2). The movement w·d = Σ|w_j|·min(λ·t_j, room_j)
    /// is piecewise linear in λ with breakpoints b_j = room_j / t_j; the selection keeps the coordinates whose
    /// breakpoint lies in the current bracket (lo_λ, hi_λ), tests a pivot breakpoint, and drops the half it
    /// decides: saturated coordinates add their full movement |w_j|·room_j, free ones their slope |w_j|·t_j.
    static func boundaryStep(_ out: inout [Float], point p: UnsafePointer<Float>, normal w: UnsafePointer<Float>,
                             change c: Double, count d: Int, norm: Norm, lo: Float, hi: Float,
                             scratch s: ProjectionScratch) -> Float {
        out.withUnsafeMutableBufferPointer { o in
            o.update(repeating: 0)
            guard c != 0 && c.isFinite else { return 0 }
            let up = c > 0  // move w·x up
            let need = abs(c)
            var total = 0.0, count = 0
            s.breakpoint.withUnsafeMutableBufferPointer { bp in
            s.full.withUnsafeMutableBufferPointer { fp in
            s.slope.withUnsafeMutableBufferPointer { sp in
            s.working.withUnsafeMutableBufferPointer { wk in
                for j in 0..<d where w[j] != 0 {
                    let a = Double(abs(w[j]))
                    let room = max(0, (w[j] > 0) == up ? Double(hi) - Double(p[j]) : Double(p[j]) - Double(lo))
                    let t = norm == .linf ? 1 : a
                    bp[j] = room / t
                    fp[j] = a * room
                    sp[j] = a * t
                    total += fp[j]
                    wk[count] = Int32(j)
                    count += 1
                }
            }}}}
            var lambda = Double.infinity
            if total > need {
                lambda = s.breakpoint.withUnsafeBufferPointer { bp in
                    s.full.withUnsafeBufferPointer { fp in
                        s.slope.withUnsafeBufferPointer { sp in
                            s.working.withUnsafeMutableBufferPointer { wk in
                                level(need: need, breakpoint: bp, full: fp, slope: sp, working: wk, count: count)
                            }
                        }
                    }
                }
            }
            var size = 0.0
            for j in 0..<d where w[j] != 0 {
                let positive = (w[j] > 0) == up
                let room = max(0, positive ? Double(hi) - Double(p[j]) : Double(p[j]) - Double(lo))
                let t = norm == .linf ? 1 : Double(abs(w[j]))
                let move = min(lambda * t, room)
                o[j] = Float(positive ? move : -move)
                size = norm == .linf ? max(size, move) : size + move * move
            }
            return Float(norm == .linf ? size : size.squareRoot())
        }
    }

    /// The smallest λ ≥ 0 with Σ_j min(λ·slope_j, full_j) = need, given Σ_j full_j > need. Breakpoints are
    /// full_j / slope_j. Expected O(count): each round tests one breakpoint and drops the coordinates it decides.
    private static func level(need: Double, breakpoint bp: UnsafeBufferPointer<Double>, full fp: UnsafeBufferPointer<Double>,
                              slope sp: UnsafeBufferPointer<Double>, working wk: UnsafeMutableBufferPointer<Int32>,
                              count initial: Int) -> Double {
        var count = initial
        var saturated = 0.0  // Σ full_j over breakpoints ≤ the bracket's low end
        var free = 0.0       // Σ slope_j over breakpoints ≥ the bracket's high end
        var rng: UInt64 = 0x9E37_79B9_7F4A_7C15
        while count > 0 {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            let pivot = bp[Int(wk[Int((rng >> 33) % UInt64(count))])]
            var g = saturated + pivot * free
            for q in 0..<count {
                let j = Int(wk[q])
                g += bp[j] <= pivot ? fp[j] : pivot * sp[j]
            }
            var kept = 0
            if g >= need {
                // λ ≤ pivot: coordinates with breakpoints ≥ pivot are free at λ.
                for q in 0..<count {
                    let j = Int(wk[q])
                    if bp[j] >= pivot { free += sp[j] } else { wk[kept] = wk[q]; kept += 1 }
                }
            } else {
                // λ > pivot: coordinates with breakpoints ≤ pivot are saturated.
                for q in 0..<count {
                    let j = Int(wk[q])
                    if bp[j] <= pivot { saturated += fp[j] } else { wk[kept] = wk[q]; kept += 1 }
                }
            }
            count = kept
        }
        // No breakpoint is left inside the bracket: the movement is saturated + λ·free there.
        return free > 0 ? max(0, (need - saturated) / free) : .infinity
    }

    /// The projection of `point` onto {x : w·x = b} ∩ [lo, hi]^d in `norm` (the nearest box point on the
    /// hyperplane), or, when the box does not reach the hyperplane, the box corner nearest to it. For tests.
    @_spi(Testing) public static func projection(of point: [Float], ontoHyperplane w: [Float], offset b: Float,
                                                 norm: Norm, bounds: PixelBounds = .unit) -> [Float] {
        precondition(point.count == w.count, "point and normal need the same length")
        let d = point.count
        var step = [Float](repeating: 0, count: d)
        var c = Double(b)
        for j in 0..<d { c -= Double(w[j]) * Double(point[j]) }
        point.withUnsafeBufferPointer { p in
            w.withUnsafeBufferPointer { wp in
                _ = boundaryStep(&step, point: p.baseAddress!, normal: wp.baseAddress!, change: c, count: d, norm: norm,
                                 lo: bounds.lo, hi: bounds.hi, scratch: ProjectionScratch(count: d))
            }
        }
        return (0..<d).map { min(max(point[$0] + step[$0], bounds.lo), bounds.hi) }
    }
}
