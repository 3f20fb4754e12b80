import Foundation

/// Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020): random search from scores alone, in the L∞ or
/// L2 ball. Each iteration changes one random square window of side s of the current best point and keeps the
/// candidate when its loss falls (or it reaches the goal):
///
///     L∞:  x_new = clip(Π_ε(x_best + 2ε·σ_c·1_window), lo, hi),   σ_c = ±1 per channel
///     L2:  the window gets a pseudo-Gaussian "meta" perturbation η(s)·σ_c plus its current content, rescaled so
///          that ‖δ‖₂ = ε after a second random window is emptied to pay for it; x_new = clip(x + ε·δ/‖δ‖₂, lo, hi)
///     s = round(√(p·H·W)) (≥ 1; L2: ≥ 3 and odd),   p = p_init / 2^j at the paper's checkpoints
///     loss: margin  log p_y − max_{j≠y} log p_j   (untargeted)
///           cross-entropy  −log p_t                (targeted; the reference implementation's choice)
///
/// Log-probabilities are taken from the oracle's scores (log-softmax of logits, or log of probabilities), which
/// leaves margins equal to the logits' margins. Starts: L∞, vertical stripes x + ε·σ per (channel, column);
/// L2, a 5×5 grid of windows of side H/5, each η(s) with a random sign per channel, rescaled to ‖δ‖₂ = ε.
///
/// The model is seen only through a `QueryCounter`. Queries per image: one clean check (an image already at the
/// goal is left clean), one for the start, one per iteration while the goal is not reached; `queries` bounds
/// them all (torchattacks does 1 + `queries` per image, without its clean check). An L∞ candidate that would
/// leave its window unchanged gets new signs first (as the paper's code; torchattacks and AutoAttack spend a
/// query on it). A candidate is kept when it lowers the loss by more than 1e-5·max(1, |loss|), above the model's
/// float32 noise, or reaches the goal. Each image keeps its lowest-loss point over restarts, or the first that
/// reached the goal.
///
/// Draws are keyed by (seed, restart, image index), one counter-based stream per image (so windows and signs
/// are drawn per image, as the paper's code, where torchattacks shares one window per batch): the same seed
/// gives the same images at any batch size. Window corners are uniform over every position, the last included.
/// - Parameters: epsilon (0.1), norm (.linf), queries (5,000 per image and restart, as AutoAttack), restarts (1),
///   pInit (0.8, the paper's and AutoAttack's for L∞ and L2).
public struct SquareAttack: QueryAttack {
    public var epsilon: Float
    public var norm: Norm
    public var queries: Int
    public var restarts: Int
    public var pInit: Float
    public var name: String { norm == .linf ? "square" : "square-l2" }
    public var settings: [String: SettingValue] {
        ["epsilon": .float(epsilon), "norm": .string(norm.rawValue), "queries": .int(queries), "restarts": .int(restarts),
         "p_init": .float(pInit), "loss": .string("margin (untargeted), cross-entropy (targeted)")]
    }
    public var queryBudget: Int { queries * restarts }

    public init(epsilon: Float = 0.1, norm: Norm = .linf, queries: Int = 5000, restarts: Int = 1, pInit: Float = 0.8) {
        self.epsilon = epsilon
        self.norm = norm
        self.queries = queries
        self.restarts = restarts
        self.pInit = pInit
    }

    public func validate() throws {
        try checkEpsilon(epsilon)
        guard queries >= 2 else { throw AdvKitError.invalidArgument("queries must be >= 2 (the clean check and the start), got \(queries)") }
        try checkSteps(restarts, "restarts")
        guard pInit > 0 && pInit <= 1 else { throw AdvKitError.invalidArgument("p_init must be in (0, 1], got \(pInit)") }
    }

    /// The fraction p of the pixels a window covers at `iteration` (0-based) of a `queries`-query run: the
    /// paper's schedule for 10,000 queries, rescaled to `queries` (AutoAttack's and torchattacks' default):
    /// p_init, halved after iterations 10, 50, 200, 500, 1,000, 2,000, 4,000, 6,000 and 8,000 of 10,000.
    public static func windowFraction(iteration: Int, queries: Int, pInit: Float) -> Float {
        let i = Int(Double(iteration) / Double(max(queries, 1)) * 10_000)
        let halvings: Int
        switch i {
        case ...10: halvings = 0
        case ...50: halvings = 1
        case ...200: halvings = 2
        case ...500: halvings = 3
        case ...1000: halvings = 4
        case ...2000: halvings = 5
        case ...4000: halvings = 6
        case ...6000: halvings = 7
        case ...8000: halvings = 8
        default: halvings = 9
        }
        return pInit / Float(1 << halvings)
    }

    /// The window side for fraction `p` of an H×W image: round(√(p·H·W)), at least 1 (L∞) or at least 3 and odd
    /// (L2), and never more than min(H, W).
    public static func windowSide(fraction p: Float, height h: Int, width w: Int, norm: Norm) -> Int {
        var s = Int((Double(p) * Double(h * w)).squareRoot().rounded())
        switch norm {
        case .linf: s = max(s, 1)
        case .l2:
            s = max(s, 3)
            if s % 2 == 0 { s += 1 }
        }
        return min(s, h, w)
    }

    /// The paper's pseudo-Gaussian window η(s) (s×s, unit L2 norm, row-major): the upper ⌊s/2⌋ rows are
    /// Σ_k 1/(k+1)² over growing centred rectangles, the lower rows the same with a minus sign.
    public static func metaPerturbation(side s: Int) -> [Float] {
        func rectangles(_ a: Int, _ b: Int) -> [Double] {
            var r = [Double](repeating: 0, count: a * b)
            guard a > 0 && b > 0 else { return r }
            var top = a / 2, left = b / 2
            for k in 0..<max(a / 2 + 1, b / 2 + 1) {
                for i in max(top, 0)..<min(top + 2 * k + 1, a) {
                    for j in max(left, 0)..<min(left + 2 * k + 1, b) { r[i * b + j] += 1 / Double((k + 1) * (k + 1)) }
                }
                top -= 1
                left -= 1
            }
            let norm = r.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return norm > 0 ? r.map { $0 / norm } : r
        }
        let upper = rectangles(s / 2, s), lower = rectangles(s - s / 2, s)
        var eta = upper + lower.map { -$0 }
        let norm = eta.reduce(0) { $0 + $1 * $1 }.squareRoot()
        if norm > 0 { eta = eta.map { $0 / norm } }
        return eta.map(Float.init)
    }

    public func attack(_ oracle: QueryCounter, _ batch: AttackBatch) -> Tensor {
        let n = batch.count, d = batch.images.shape.itemCount
        var best = batch.images
        guard n > 0 else { return best }
        // The clean check: an image already at the goal is left as it is.
        var done = batch.reached(oracle.logProbabilities(batch.images, for: Array(0..<n)))
        var bestLoss = [Float](repeating: .infinity, count: n)
        for restart in 0..<restarts {
            let rows = (0..<n).filter { !done[$0] }
            if rows.isEmpty { break }
            var run = SquareRun(attack: self, oracle: oracle, batch: batch, rows: rows, restart: restart)
            let (x, reached, loss) = run.search(iterations: queries - 1 - (restart == 0 ? 1 : 0))
            best.makeUnique()
            for (j, i) in rows.enumerated() where reached[j] || loss[j] < bestLoss[i] {
                (best.storage.pointer + i * d).update(from: x.storage.pointer + j * d, count: d)
                bestLoss[i] = loss[j]
                done[i] = reached[j]
            }
        }
        return best
    }
}

/// One restart of Square on some rows of a batch (the ones not yet at the goal).
private struct SquareRun {
    let attack: SquareAttack
    let oracle: QueryCounter
    let batch: AttackBatch
    /// The batch rows attacked, and their clean images (m, C, H, W).
    let rows: [Int]
    let clean: Tensor
    let classes: [Int]
    let c: Int, h: Int, w: Int, d: Int
    var generators: [SeededGenerator]

    init(attack: SquareAttack, oracle: QueryCounter, batch: AttackBatch, rows: [Int], restart: Int) {
        self.attack = attack
        self.oracle = oracle
        self.batch = batch
        self.rows = rows
        clean = batch.images.gather(rows)
        let lossClasses = batch.lossClasses
        classes = rows.map { Int(lossClasses[$0]) }
        (c, h, w) = (batch.images.shape[1], batch.images.shape[2], batch.images.shape[3])
        d = c * h * w
        // One stream per (restart, image): "SQ" in the top bits, the restart, the image's index in the whole set.
        generators = rows.map {
            SeededGenerator(seed: batch.seed, stream: 0x5351_0000_0000_0000 &+ (UInt64(restart) << 40) &+ UInt64(batch.offset + $0))
        }
    }

    /// (margin, loss, reached) of each row of log-probabilities `lp` for attacked rows `js`: the margin is ≤ 0
    /// once the goal is reached, the loss falls as the attacker gains.
    func evaluate(_ lp: Tensor, _ js: [Int]) -> (loss: [Float], reached: [Bool]) {
        let k = lp.shape[1]
        let p = lp.storage.pointer
        var loss = [Float](repeating: 0, count: js.count), reached = [Bool](repeating: false, count: js.count)
        for (r, j) in js.enumerated() {
            let z = p + r * k, y = classes[j]
            var other = -Float.infinity
            for q in 0..<k where q != y { other = max(other, z[q]) }
            let target = batch.targets.map { Int($0[rows[j]]) }
            loss[r] = target == nil ? z[y] - other : -z[y]
            reached[r] = Goal.isReached(z, classes: k, label: Int(batch.labels[rows[j]]), target: target, margin: batch.goal.margin)
        }
        return (loss, reached)
    }

    mutating func randomInt(_ j: Int, through upper: Int) -> Int {
        upper <= 0 ? 0 : Int(generators[j].next() % UInt64(upper + 1))
    }

    mutating func randomSign(_ j: Int) -> Float { generators[j].next() & 1 == 0 ? -1 : 1 }

    /// The start of each row (m, C, H, W).
    mutating func start() -> Tensor {
        let m = rows.count, eps = attack.epsilon, lo = batch.bounds.lo, hi = batch.bounds.hi
        var x = clean
        x.makeUnique()
        let xp = x.storage.pointer
        switch attack.norm {
        case .linf:
            // Vertical stripes: ±ε per (channel, column).
            for j in 0..<m {
                for ch in 0..<c {
                    for col in 0..<w {
                        let v = eps * randomSign(j)
                        for row in 0..<h {
                            let q = j * d + ch * h * w + row * w + col
                            xp[q] = min(max(xp[q] + v, lo), hi)
                        }
                    }
                }
            }
        case .l2:
            // A grid of windows of side H/5, each η(s) with a random sign per channel (and a random transpose).
            let s = max(h / 5, 1)
            let eta = SquareAttack.metaPerturbation(side: s)
            let top = (h - s * (h / s)) / 2, left = (w - s * (w / s)) / 2
            var delta = [Float](repeating: 0, count: d)
            for j in 0..<m {
                for q in 0..<d { delta[q] = 0 }
                for bi in 0..<(h / s) {
                    for bj in 0..<(w / s) {
                        let transpose = randomSign(j) > 0
                        for ch in 0..<c {
                            let sign = randomSign(j)
                            for a in 0..<s {
                                for b in 0..<s {
                                    delta[ch * h * w + (top + bi * s + a) * w + left + bj * s + b] += sign * (transpose ? eta[b * s + a] : eta[a * s + b])
                                }
                            }
                        }
                    }
                }
                let scale = eps / (euclideanNorm(delta) + 1e-12)
                for q in 0..<d { xp[j * d + q] = min(max(xp[j * d + q] + scale * delta[q], lo), hi) }
            }
        }
        return x
    }

    /// Runs the start and up to `iterations` iterations; returns each row's best point, whether it reached the
    /// goal, and its loss.
    mutating func search(iterations: Int) -> (Tensor, [Bool], [Float]) {
        let m = rows.count
        var best = start()
        var (lossMin, reached) = evaluate(oracle.logProbabilities(best, for: rows), Array(0..<m))
        for it in 0..<max(iterations, 0) {
            let active = (0..<m).filter { !reached[$0] }
            if active.isEmpty { break }
            let p = SquareAttack.windowFraction(iteration: it, queries: attack.queries, pInit: attack.pInit)
            let s = SquareAttack.windowSide(fraction: p, height: h, width: w, norm: attack.norm)
            let candidates = attack.norm == .linf ? linfCandidates(best, active, side: s) : l2Candidates(best, active, side: s)
            let (loss, hit) = evaluate(oracle.logProbabilities(candidates, for: active.map { rows[$0] }), active)
            best.makeUnique()
            for (r, j) in active.enumerated() {
                // A candidate must lower the loss by more than the model's float32 noise: its outputs move by
                // ~1e-6 with the batch's composition, and without this margin an equal candidate would be kept
                // or not depending on the batch size.
                let improved = loss[r] < lossMin[j] - 1e-5 * max(1, abs(lossMin[j]))
                if improved { lossMin[j] = loss[r] }
                if improved || hit[r] {
                    (best.storage.pointer + j * d).update(from: candidates.storage.pointer + r * d, count: d)
                    reached[j] = hit[r]
                }
            }
        }
        return (best, reached, lossMin)
    }

    /// L∞ candidates: one window of side s per row moved by ±2ε per channel, back into the ball and the bounds.
    mutating func linfCandidates(_ best: Tensor, _ active: [Int], side s: Int) -> Tensor {
        let x = best.gather(active)
        let eps = attack.epsilon, lo = batch.bounds.lo, hi = batch.bounds.hi
        let xp = x.storage.pointer, x0 = clean.storage.pointer
        var signs = [Float](repeating: 0, count: c)
        for (r, j) in active.enumerated() {
            let top = randomInt(j, through: h - s), left = randomInt(j, through: w - s)
            func moved(_ ch: Int, _ a: Int, _ b: Int) -> (index: Int, value: Float) {
                let offset = ch * h * w + (top + a) * w + left + b
                let origin = x0[j * d + offset]
                return (r * d + offset, min(max(min(max(xp[r * d + offset] + 2 * eps * signs[ch], origin - eps), origin + eps), lo), hi))
            }
            // Signs that would leave the window as it is are drawn again (the paper's code does the same): such a
            // candidate would cost a query and teach nothing.
            for _ in 0..<16 {
                for ch in 0..<c { signs[ch] = randomSign(j) }
                var changes = false
                scan: for ch in 0..<c {
                    for a in 0..<s {
                        for b in 0..<s {
                            let m = moved(ch, a, b)
                            if abs(m.value - xp[m.index]) > 1e-7 { changes = true; break scan }
                        }
                    }
                }
                if changes { break }
            }
            for ch in 0..<c {
                for a in 0..<s {
                    for b in 0..<s {
                        let m = moved(ch, a, b)
                        xp[m.index] = m.value
                    }
                }
            }
        }
        return x
    }

    /// L2 candidates: window 1 gets η(s)·σ_c plus its own normalised content, rescaled per channel to carry the
    /// budget left in the ball plus what windows 1 and 2 held; window 2 is emptied; then δ is rescaled to ε.
    mutating func l2Candidates(_ best: Tensor, _ active: [Int], side s: Int) -> Tensor {
        let eps = attack.epsilon, lo = batch.bounds.lo, hi = batch.bounds.hi
        let eta = SquareAttack.metaPerturbation(side: s)
        let x = Tensor(uninitialized: clean.shape.withBatch(active.count))
        let xp = x.storage.pointer, x0 = clean.storage.pointer, bp = best.storage.pointer
        var delta = [Float](repeating: 0, count: d)
        var window = [Bool](repeating: false, count: d)
        for (r, j) in active.enumerated() {
            let top1 = randomInt(j, through: h - s), left1 = randomInt(j, through: w - s)
            let top2 = randomInt(j, through: h - s), left2 = randomInt(j, through: w - s)
            let transpose = randomSign(j) > 0
            for q in 0..<d { delta[q] = bp[j * d + q] - x0[j * d + q]; window[q] = false }
            func index(_ ch: Int, _ top: Int, _ left: Int, _ a: Int, _ b: Int) -> Int { ch * h * w + (top + a) * w + left + b }
            for ch in 0..<c { for a in 0..<s { for b in 0..<s { window[index(ch, top1, left1, a, b)] = true; window[index(ch, top2, left2, a, b)] = true } } }
            var inWindows = 0.0, image = 0.0
            for q in 0..<d {
                let v = Double(delta[q])
                image += v * v
                if window[q] { inWindows += v * v }
            }
            let room = max(Double(eps) * Double(eps) - image, 0) / Double(c) + inWindows
            var fresh = [Float](repeating: 0, count: c * s * s)
            for ch in 0..<c {
                let sign = randomSign(j)
                var old = 0.0
                for a in 0..<s { for b in 0..<s { let v = Double(delta[index(ch, top1, left1, a, b)]); old += v * v } }
                let oldNorm = Float(old.squareRoot()) + 1e-12
                var size = 0.0
                for a in 0..<s {
                    for b in 0..<s {
                        let v = sign * (transpose ? eta[b * s + a] : eta[a * s + b]) + delta[index(ch, top1, left1, a, b)] / oldNorm
                        fresh[ch * s * s + a * s + b] = v
                        size += Double(v) * Double(v)
                    }
                }
                let scale = Float(room.squareRoot() / (size.squareRoot() + 1e-12))
                for q in 0..<(s * s) { fresh[ch * s * s + q] *= scale }
            }
            for ch in 0..<c { for a in 0..<s { for b in 0..<s { delta[index(ch, top2, left2, a, b)] = 0 } } }
            for ch in 0..<c { for a in 0..<s { for b in 0..<s { delta[index(ch, top1, left1, a, b)] = fresh[ch * s * s + a * s + b] } } }
            let scale = eps / (euclideanNorm(delta) + 1e-12)
            for q in 0..<d { xp[r * d + q] = min(max(x0[j * d + q] + scale * delta[q], lo), hi) }
        }
        return x
    }
}

/// The Euclidean norm of `v`, accumulated in Double.
func euclideanNorm<S: Sequence>(_ v: S) -> Float where S.Element == Float {
    Float(v.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot())
}
