import Foundation

// The report's section on randomized smoothing's certificates (results.certified).
extension ReportWriter {
    /// A Markdown section: certified accuracy by L2 radius for each smoothing defense, with the formula, the paper,
    /// the draws, and what the certificate says at the table's L∞ ε. Empty when no smoothing defense ran.
    static func certifiedSection(_ r: EvaluationResults) -> String {
        guard let all = r.certified, !all.isEmpty else { return "" }
        func percent(_ x: Double) -> String { String(format: "%.1f%%", x * 100) }
        func number(_ x: Double) -> String { String(format: "%.3g", x) }
        var out = "## Randomized smoothing: certified accuracy (Cohen, Rosenfeld & Kolter 2019)\n\n"
        var radii: [Double] = []
        for c in all { for x in c.radii where !radii.contains(x) { radii.append(x) } }
        out += "| defense | σ | smoothed clean (vote) | abstains (vote) | " + radii.map { "L2 r ≥ \(number($0))" }.joined(separator: " | ")
            + " | abstains (certify) | median radius | at L∞ ε |\n"
        out += "|---|---|---|---|" + String(repeating: "---|", count: radii.count) + "---|---|---|\n"
        for c in all {
            let cells = radii.map { x in c.radii.firstIndex(of: x).map { percent(c.certifiedAccuracy[$0]) } ?? "–" }
            out += "| \(c.defense) | \(number(Double(c.sigma))) | \(percent(c.cleanAccuracy)) | \(percent(c.predictAbstainRate)) | "
                + cells.joined(separator: " | ") + " | \(percent(c.abstainRate)) | \(c.medianRadius.map(number) ?? "–") | "
                + "\(percent(c.certifiedAtLinfEpsilon)) (L2 \(number(c.l2RadiusForLinfEpsilon))) |\n"
        }
        out += "\nThe smoothed classifier g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), f the GDA model trained at the same σ"
        out += " (noisy copies clipped to [0, 1], as it was trained). CERTIFY draws n₀ samples to choose the class A and n more to"
        out += " bound its probability from below (one-sided Clopper-Pearson at confidence 1 − α); g is then certified constant"
        out += " within L2 radius R = σ·Φ⁻¹(p̲_A), or abstains when p̲_A ≤ 1/2. Certified accuracy at r: the share of test"
        out += " images certified right with R ≥ r (an abstention counts as wrong); it can only fall as r grows. "
        out += all.map { c in
            "\(c.defense): n₀ = \(c.selection), n = \(c.estimation), α = \(c.alpha); the vote (PREDICT, which scores the attack cells) uses \(c.votes) draws"
        }.joined(separator: "; ")
        out += ".\n\nAn L2 certificate covers an L∞ ball only when R ≥ ε·√d (the ball's corners lie ε·√d away, d pixels per"
        out += " image): at the tables' ε that radius is far beyond what σ allows, so the \"at L∞ ε\" column is usually 0 and"
        out += " the attack cells above, not the certificate, measure this defense against the L∞ threat.\n\n"
        return out
    }
}
