import Foundation

/// Adversarial images on the 8-bit grid: an 8-bit PNG holds k/255, and rounding to it can move a pixel out of the
/// threat model's ball or erase a perturbation smaller than 1/255. So an attack whose output is 8-bit ends here:
/// each pixel goes to a neighbouring grid value chosen to stay inside the ball and the bounds, and the model is
/// measured again on exactly the images that are written (a saved adversarial example must still fool it).
public enum EightBit {
    /// The threat model's ball around each clean image.
    public struct Ball: Sendable, Equatable {
        public var norm: Norm
        public var epsilon: Float
        public init(norm: Norm, epsilon: Float) {
            self.norm = norm
            self.epsilon = epsilon
        }
    }

    /// Slack on the ball's edge for float rounding: the attacks clip in Float, and |k/255 − x| is computed in Float.
    static let edgeTolerance: Float = 1e-6

    /// The value of grid point k, exactly as a reader of the 8-bit file computes it.
    @inline(__always) static func grid(_ k: Float) -> Float { k / 255 }

    /// `adversarial` rounded to multiples of 1/255 inside `ball` around `clean` and inside `bounds`.
    ///
    /// Each pixel goes to one of the two grid values around it: the nearer one (`away` false) or the one farther
    /// from the clean pixel (`away` true: keeps as much of the perturbation as the ball allows, for images the
    /// nearer rounding no longer fools). L∞: a pixel whose choice would leave the ball takes the other, which lies
    /// between it and the clean pixel (always inside when the clean image is itself 8-bit). L2: pixels are moved to
    /// the value toward the clean pixel, those that cost the norm most first, until the image is inside the ball
    /// (every pixel toward the clean one never lengthens the perturbation when the clean image is 8-bit).
    public static func round(_ adversarial: Tensor, clean: Tensor, ball: Ball?, bounds: PixelBounds = .unit, away: Bool = false) -> Tensor {
        precondition(adversarial.shape == clean.shape && adversarial.shape.rank >= 1, "adversarial \(adversarial.shape) and clean \(clean.shape) images differ in shape")
        let n = adversarial.shape[0], d = n == 0 ? 0 : adversarial.count / n
        let lo = (bounds.lo * 255).rounded(.up), hi = (bounds.hi * 255).rounded(.down)
        var out = Tensor(uninitialized: adversarial.shape)
        adversarial.withUnsafeBufferPointer { a in
            clean.withUnsafeBufferPointer { c in
                out.withUnsafeMutableBufferPointer { o in
                    for img in 0..<n {
                        let base = img * d
                        // Per pixel: the grid value toward the clean pixel (t) and the other neighbour (u).
                        var toward = [Float](repeating: 0, count: d), other = [Float](repeating: 0, count: d)
                        for i in 0..<d {
                            let x = a[base + i], x0 = c[base + i]
                            let down = Swift.min(Swift.max((x * 255).rounded(.down), lo), hi), up = Swift.min(Swift.max((x * 255).rounded(.up), lo), hi)
                            let (t, u) = x >= x0 ? (down, up) : (up, down)
                            toward[i] = grid(t)
                            other[i] = grid(u)
                            if x == x0 {  // an untouched pixel: the nearest grid value (itself, for an 8-bit image)
                                o[base + i] = grid(Swift.min(Swift.max((x * 255).rounded(), lo), hi))
                            } else if away {
                                o[base + i] = grid(u)
                            } else {  // the nearer neighbour; a tie goes toward the clean pixel
                                o[base + i] = abs(grid(t) - x) <= abs(grid(u) - x) ? grid(t) : grid(u)
                            }
                        }
                        guard let ball else { continue }
                        switch ball.norm {
                        case .linf:
                            for i in 0..<d where abs(o[base + i] - c[base + i]) > ball.epsilon + edgeTolerance {
                                // The other neighbour lies between the pixel and the clean one; if even it is
                                // outside (a clean image off the grid, a ball under 1/255), the one nearer the clean.
                                let alt = o[base + i] == toward[i] ? other[i] : toward[i]
                                o[base + i] = abs(alt - c[base + i]) <= abs(o[base + i] - c[base + i]) ? alt : o[base + i]
                            }
                        case .l2:
                            var sq: Double = 0
                            for i in 0..<d { let e = Double(o[base + i] - c[base + i]); sq += e * e }
                            let limit = Double(ball.epsilon + edgeTolerance) * Double(ball.epsilon + edgeTolerance)
                            guard sq > limit else { continue }
                            // Saving per pixel from moving it to the value toward the clean pixel, largest first.
                            var savings: [(Double, Int)] = []
                            for i in 0..<d where o[base + i] != toward[i] {
                                let now = Double(o[base + i] - c[base + i]), then = Double(toward[i] - c[base + i])
                                if now * now > then * then { savings.append((now * now - then * then, i)) }
                            }
                            savings.sort { $0.0 > $1.0 }
                            for (s, i) in savings where sq > limit {
                                o[base + i] = toward[i]
                                sq -= s
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

extension AttackResult {
    /// This result with its adversarial images on the 8-bit grid, measured again on `model`: the nearest grid
    /// values inside the ball, and for images that thereby stop reaching the goal, the grid values that keep the
    /// most perturbation inside the ball (`EightBit.round`, `away`), taken where they reach it. The outcomes,
    /// accuracies and norms are those of the returned images.
    public func onEightBitGrid(model: Classifier, clean: Tensor, ball: EightBit.Ball?, bounds: PixelBounds = .unit) -> AttackResult {
        let labels = outcomes.map { Int32($0.label) }
        let targets: [Int32]? = goal.isTargeted ? outcomes.map { Int32($0.target ?? $0.label) } : nil
        let cleanLogits = model.logits(of: clean)
        var rounded = EightBit.round(adversarial, clean: clean, ball: ball, bounds: bounds)
        var measured = AttackOutcomes.evaluate(model, clean: clean, cleanLogits: cleanLogits, adversarial: rounded, labels: labels,
                                               targets: targets, margin: goal.margin)
        let lost = (0..<outcomes.count).filter { outcomes[$0].success && !measured[$0].success }
        if !lost.isEmpty {
            let away = EightBit.round(adversarial.gather(lost), clean: clean.gather(lost), ball: ball, bounds: bounds, away: true)
            let retry = AttackOutcomes.evaluate(model, clean: clean.gather(lost), cleanLogits: cleanLogits.gather(lost), adversarial: away,
                                                labels: lost.map { labels[$0] }, targets: targets.map { t in lost.map { t[$0] } }, margin: goal.margin)
            let d = adversarial.count / Swift.max(outcomes.count, 1)
            away.withUnsafeBufferPointer { a in
                rounded.withUnsafeMutableBufferPointer { r in
                    for (j, i) in lost.enumerated() where retry[j].success {
                        for p in 0..<d { r[i * d + p] = a[j * d + p] }
                        measured[i] = retry[j]
                    }
                }
            }
        }
        var r = self
        r.adversarial = rounded
        r.outcomes = measured
        return r
    }
}
