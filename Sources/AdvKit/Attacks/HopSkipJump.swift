import Foundation

/// HopSkipJumpAttack (Chen, Jordan & Wainwright 2020): a minimal-perturbation attack from top-1 labels alone,
/// in L2 or L∞. From a point x_t on the decision boundary, each iteration t = 1, 2, … does
///
///     ∇̂ = Σ_b φ(x_t + δ_t·u_b)·u_b / ‖·‖    u_b ~ N(0, I) (L2) or U[−1, 1]^d (L∞), normalised; B_t = B₀·√t
///                                           draws; φ = ±1 (adversarial or not) minus its mean (baseline)
///     x̃ = clip(x_t + ξ_t·v, lo, hi),        v = ∇̂ (L2) or sign(∇̂) (L∞); ξ_t = ‖x_t − x‖/√t, halved
///                                           until x̃ is adversarial (geometric step-size search)
///     x_{t+1} = the boundary point between x and x̃ (binary search to precision θ)
///
/// with θ = γ/d^{3/2} (L2) or γ/d² (L∞), δ₁ = 0.1·(hi − lo) and δ_t = √d·θ·‖x̃_{t−1} − x‖₂ (L2) or
/// d·θ·‖x̃_{t−1} − x‖∞ (L∞). The binary search blends (1 − α)·x + α·x̃ (L2) or clips x̃ to the L∞ ball of
/// radius α around x (L∞).
///
/// Start: uniform noise in [lo, hi] until it is adversarial (untargeted: any wrong class; targeted: a point
/// the model gives the target class, for simplicity, where the paper starts from an image of the target class),
/// then a binary search on the blend (1 − α)·x + α·noise to precision 0.001, then the boundary search above.
/// An image the model already gets wrong (or already calls the target) is left clean.
///
/// The model is seen only through the labels of a `QueryCounter`: the targeted goal's margin cannot be seen and
/// is not pursued (success still requires it). Queries per image: one clean check, the start, then iterations
/// until `iterations` are done or the budget cannot pay for another gradient estimate (at least 10 draws) plus
/// its searches; every search stops when the budget is spent, so `queries` is never exceeded and each image
/// returns the closest adversarial point it found (the clean image when the start failed), moved 0.1% further
/// from the clean image when the oracle confirms it (a point within θ of the boundary is closer to it than
/// the model's float32 noise across batch sizes, so its label could flip when measured again). With the defaults
/// (5,000 queries, 28×28 images) the budget, not the paper's 40 iterations, ends the search, after about 12.
///
/// There is no ball: like C&W and DeepFool, HopSkipJump reports how small a perturbation suffices. Draws are
/// keyed by (seed, image index): the same seed gives the same images at any batch size.
/// - Parameters: norm (.l2), queries (5,000), iterations (40, the reference implementation's), initialEvaluations
///   B₀ (100), maxEvaluations (10,000), gamma γ (1).
public struct HopSkipJump: QueryAttack {
    public var norm: Norm
    public var queries: Int
    public var iterations: Int
    public var initialEvaluations: Int
    public var maxEvaluations: Int
    public var gamma: Float
    public var name: String { norm == .l2 ? "hsja" : "hsja-linf" }
    public var settings: [String: SettingValue] {
        ["norm": .string(norm.rawValue), "queries": .int(queries), "iterations": .int(iterations),
         "initial_evaluations": .int(initialEvaluations), "max_evaluations": .int(maxEvaluations), "gamma": .float(gamma),
         "step_size_search": .string("geometric"), "start": .string("uniform noise, then binary search")]
    }
    public var queryBudget: Int { queries }

    public init(norm: Norm = .l2, queries: Int = 5000, iterations: Int = 40, initialEvaluations: Int = 100,
                maxEvaluations: Int = 10_000, gamma: Float = 1) {
        self.norm = norm
        self.queries = queries
        self.iterations = iterations
        self.initialEvaluations = initialEvaluations
        self.maxEvaluations = maxEvaluations
        self.gamma = gamma
    }

    public func validate() throws {
        guard queries >= 2 else { throw AdvKitError.invalidArgument("queries must be >= 2 (the clean check and a start), got \(queries)") }
        try checkSteps(iterations, "iterations")
        try checkSteps(initialEvaluations, "initial evaluations")
        guard maxEvaluations >= initialEvaluations else {
            throw AdvKitError.invalidArgument("max evaluations (\(maxEvaluations)) must be >= initial evaluations (\(initialEvaluations))")
        }
        guard gamma.isFinite && gamma > 0 else { throw AdvKitError.invalidArgument("gamma must be > 0, got \(gamma)") }
    }

    public func attack(_ oracle: QueryCounter, _ batch: AttackBatch) -> Tensor {
        let n = batch.count, d = batch.images.shape.itemCount
        var out = batch.images
        out.makeUnique()
        for i in 0..<n {
            // The search sees labels and the budget left, nothing else.
            var search = BoundarySearch(attack: self, oracle: oracle, remaining: { oracle.remaining(i) }, batch: batch, row: i)
            let x = search.run()
            (out.storage.pointer + i * d).update(from: x, count: d)
        }
        return out
    }
}

/// HopSkipJump on one image.
private struct BoundarySearch {
    let attack: HopSkipJump
    let oracle: LabelOracle
    let remaining: () -> Int
    let row: Int
    let shape: Shape
    let d: Int
    let clean: [Float]
    let label: Int, target: Int?
    let lo: Float, hi: Float
    let theta: Double
    let seed: UInt64, stream: UInt64
    /// Draws taken so far from this image's streams.
    var noiseDraws: UInt64 = 0, directionDraws: UInt64 = 0

    init(attack: HopSkipJump, oracle: LabelOracle, remaining: @escaping () -> Int, batch: AttackBatch, row: Int) {
        self.attack = attack
        self.oracle = oracle
        self.remaining = remaining
        self.row = row
        shape = batch.images.shape
        d = shape.itemCount
        clean = Array(UnsafeBufferPointer(start: batch.images.storage.pointer + row * d, count: d))
        label = Int(batch.labels[row])
        target = batch.targets.map { Int($0[row]) }
        (lo, hi) = (batch.bounds.lo, batch.bounds.hi)
        let dd = Double(d)
        theta = Double(attack.gamma) / (attack.norm == .l2 ? dd * dd.squareRoot() : dd * dd)
        seed = batch.seed
        // "HS" in the top bits, the image's index in the whole set below.
        stream = 0x4853_0000_0000_0000 &+ UInt64(batch.offset + row)
    }

    /// Whether each of `points` (m·d values) reaches the goal by its label; charges m queries.
    func adversarial(_ points: [Float]) -> [Bool] {
        let m = points.count / d
        let labels = oracle.labels(Tensor(points, shape: shape.withBatch(m)), for: [Int](repeating: row, count: m))
        return labels.map { predicted in target.map { predicted == $0 } ?? (predicted != label) }
    }

    func adversarial(one point: [Float]) -> Bool { adversarial(point)[0] }

    func distance(_ a: [Float]) -> Double {
        switch attack.norm {
        case .l2:
            var s = 0.0
            for q in 0..<d { let v = Double(a[q] - clean[q]); s += v * v }
            return s.squareRoot()
        case .linf:
            var m: Float = 0
            for q in 0..<d { m = max(m, abs(a[q] - clean[q])) }
            return Double(m)
        }
    }

    /// The point at α between the clean image and `p`: the blend (1 − α)·x + α·p (L2, and always for the start),
    /// or p clipped to the L∞ ball of radius α around x (L∞).
    func project(_ p: [Float], _ alpha: Double, blend: Bool) -> [Float] {
        var out = p
        let a = Float(alpha)
        if blend || attack.norm == .l2 {
            for q in 0..<d { out[q] = (1 - a) * clean[q] + a * p[q] }
        } else {
            for q in 0..<d { out[q] = min(max(p[q], clean[q] - a), clean[q] + a) }
        }
        return out
    }

    /// Queries a boundary search of precision θ needs (with one to spare).
    var boundarySearchQueries: Int { Int(Foundation.log2(1 / theta).rounded(.up)) + 1 }

    mutating func run() -> [Float] {
        guard remaining() >= 1, !adversarial(one: clean) else { return clean }
        guard var p = start() else { return clean }
        let first = boundary(p)
        p = first.0
        var postDistance = first.1
        var dist = distance(p)
        var best = p, bestDistance = dist
        for t in 1...attack.iterations {
            let delta = t == 1 ? 0.1 * Double(hi - lo)
                : (attack.norm == .l2 ? Double(d).squareRoot() : Double(d)) * theta * postDistance
            let wanted = min(Int(Double(attack.initialEvaluations) * Double(t).squareRoot()), attack.maxEvaluations)
            let draws = min(wanted, remaining() - boundarySearchQueries - 4)
            guard draws >= 10 else { break }
            guard var v = direction(at: p, delta: delta, draws: draws) else { break }
            if attack.norm == .linf { v = v.map { $0 > 0 ? 1 : ($0 < 0 ? -1 : 0) } }
            // Geometric step-size search: ξ = dist/√t, halved until the step lands on the adversarial side.
            var xi = dist / Double(t).squareRoot()
            var stepped: [Float]?
            for _ in 0..<30 where remaining() > 1 {
                var candidate = p
                for q in 0..<d { candidate[q] = min(max(p[q] + Float(xi) * v[q], lo), hi) }
                if adversarial(one: candidate) { stepped = candidate; break }
                xi /= 2
            }
            guard let s = stepped else { break }
            (p, postDistance) = boundary(s)
            dist = distance(p)
            if dist < bestDistance { (best, bestDistance) = (p, dist) }
        }
        // The boundary point lies within θ of the decision boundary, closer than the model's float32 noise across
        // batch sizes (~1e-6 in the logits) can resolve: step 0.1% further from the clean image, and keep that
        // when the oracle agrees (the query was held back for it).
        var deeper = best
        for q in 0..<d { deeper[q] = min(max(clean[q] + 1.001 * (best[q] - clean[q]), lo), hi) }
        return remaining() >= 1 && adversarial(one: deeper) ? deeper : best
    }

    /// Uniform noise in [lo, hi] until it is adversarial, then the closest adversarial blend with the clean image
    /// (to 0.001); nil when the budget ran out first.
    mutating func start() -> [Float]? {
        var noise = Tensor(uninitialized: shape.withBatch(1))
        var found: [Float]?
        // Keep enough budget for the blend search and one boundary search.
        while found == nil && remaining() > 10 + boundarySearchQueries {
            Kernels.randomUniform(&noise, seed: seed, stream: stream, offset: noiseDraws, lo: lo, hi: hi)
            noiseDraws &+= UInt64(d)
            let candidate = noise.scalars
            if adversarial(one: candidate) { found = candidate }
        }
        guard let far = found else { return nil }
        var low = 0.0, high = 1.0
        while high - low > 0.001 && remaining() > 1 {
            let mid = (low + high) / 2
            if adversarial(one: project(far, mid, blend: true)) { high = mid } else { low = mid }
        }
        return project(far, high, blend: true)
    }

    /// The boundary point between the clean image and adversarial `p`, to precision θ (L2: on the blend
    /// coefficient; L∞: on the radius, relative to ‖p − x‖∞ and at most θ), and ‖p − x‖ before the search.
    func boundary(_ p: [Float]) -> ([Float], Double) {
        let before = distance(p)
        var low = 0.0, high = attack.norm == .l2 ? 1.0 : before
        let threshold = attack.norm == .l2 ? theta : min(before * theta, theta)
        while high - low > threshold && remaining() > 1 {
            let mid = (low + high) / 2
            if adversarial(one: project(p, mid, blend: false)) { high = mid } else { low = mid }
        }
        return (project(p, high, blend: false), before)
    }

    /// The estimated gradient direction of the boundary at `p` (unit L2 norm) from `draws` labelled probes at
    /// distance `delta`; nil when it vanishes.
    mutating func direction(at p: [Float], delta: Double, draws: Int) -> [Float]? {
        var u = Tensor(uninitialized: shape.withBatch(draws))
        switch attack.norm {
        case .l2: Kernels.randomNormal(&u, seed: seed, stream: stream &+ 0x0001_0000_0000, offset: directionDraws, mean: 0, std: 1)
        case .linf: Kernels.randomUniform(&u, seed: seed, stream: stream &+ 0x0001_0000_0000, offset: directionDraws, lo: -1, hi: 1)
        }
        directionDraws &+= UInt64(draws * d)
        let up = u.storage.pointer
        var probes = [Float](repeating: 0, count: draws * d)
        let dl = Float(delta)
        for b in 0..<draws {
            let row = up + b * d
            let size = euclideanNorm(UnsafeBufferPointer(start: row, count: d))
            for q in 0..<d {
                let probe = min(max(p[q] + dl * row[q] / max(size, 1e-12), lo), hi)
                probes[b * d + q] = probe
                row[q] = (probe - p[q]) / dl  // the direction actually taken, after clipping
            }
        }
        let decisions = adversarial(probes)
        let signs = decisions.map { $0 ? 1.0 : -1.0 }
        let mean = signs.reduce(0, +) / Double(draws)
        // Baseline: subtract the mean sign unless every probe agreed (then the mean direction, signed).
        let weights = abs(mean) == 1 ? signs : signs.map { $0 - mean }
        var g = [Double](repeating: 0, count: d)
        for b in 0..<draws {
            let wgt = weights[b] / Double(draws)
            let row = up + b * d
            for q in 0..<d { g[q] += wgt * Double(row[q]) }
        }
        let size = g.reduce(0) { $0 + $1 * $1 }.squareRoot()
        guard size > 0, size.isFinite else { return nil }
        return g.map { Float($0 / size) }
    }
}
