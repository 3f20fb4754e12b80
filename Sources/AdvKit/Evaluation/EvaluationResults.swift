import Foundation

/// Every number of an evaluation. Timings live apart (`timings`) so that two runs with the same seed give the
/// same `results` (tested).
public struct EvaluationResults: Codable, Equatable {
    /// The weights a defense's numbers come from, as cached in the output folder.
    public struct ModelRecord: Codable, Equatable {
        public var name: String
        /// The classifier's weights, relative to the output folder ("models/none-1a2b….safetensors"); the
        /// inference-time defenses wrap the undefended model, so they name its file.
        public var file: String
        /// SHA-256 of `file`, lowercase hex.
        public var sha256: String
        /// The detector network's weights and their SHA-256 (the `detector` defense only).
        public var detectorFile: String?
        public var detectorSHA256: String?
        public var cleanAccuracy: Double
        /// A fine-tuned copy of the user's model in their format (hardened/<defense>.onnx), and its SHA-256.
        public var hardenedFile: String?
        public var hardenedSHA256: String?
    }
    public struct Cell: Codable, Equatable {
        public var defense: String
        public var attack: String
        /// What was run: "white-box" (a model with nothing to adapt to), "adaptive: EOT (4 draws)",
        /// "adaptive: detector-aware PGD", "BPDA, squeezing detector not in the loss", "white-box (not adaptive)"
        /// (the attack ignores the defense's detector), or "transfer from X".
        public var form: String
        /// The attack's loss covers every part of the defense that decides the cell (model, squeeze, noise,
        /// detector). False: the number is an upper bound on robust accuracy, not a measure of the defense.
        public var adaptive: Bool
        public var robustAccuracy: Double
        public var medianL2: Double?
        public var medianLinf: Double?
        /// AutoAttack: how many images each component broke (those every earlier one left standing).
        public var brokenBy: [String: Int]?
        /// Query-based attacks: the median queries of the images they broke.
        public var medianQueries: Double?
    }
    public struct Curve: Codable, Equatable {
        public var defense: String
        public var attack: String
        /// As in `Cell`.
        public var form: String
        public var adaptive: Bool
        public var epsilons: [Float]
        public var robustAccuracy: [Double]

        public init(defense: String, attack: String, form: String, adaptive: Bool, epsilons: [Float], robustAccuracy: [Double]) {
            precondition(epsilons.count == robustAccuracy.count, "a curve needs one robust accuracy per epsilon")
            (self.defense, self.attack, self.form, self.adaptive) = (defense, attack, form, adaptive)
            (self.epsilons, self.robustAccuracy) = (epsilons, robustAccuracy)
        }

        /// The largest rise of robust accuracy with ε: a point above an earlier (smaller-ε) point by more than
        /// `margin`, with the two indices; nil when the curve never rises that much. A curve that rises is a sign
        /// of gradient masking or of an attack that does not see the whole defense (Carlini et al. 2019, §5.2).
        public func rise(moreThan margin: Double = 0.02) -> (from: Int, to: Int, amount: Double)? {
            var best: (from: Int, to: Int, amount: Double)?
            var low = 0
            for j in robustAccuracy.indices.dropFirst() {
                if robustAccuracy[j - 1] < robustAccuracy[low] { low = j - 1 }
                let amount = robustAccuracy[j] - robustAccuracy[low]
                if amount > margin + 1e-9 && amount > (best?.amount ?? 0) { best = (low, j, amount) }
            }
            return best
        }

        /// Robust accuracy should not rise with ε: this check warns when a point lies more than 2 points above one
        /// at a smaller ε (`rise`), naming the defense, the attack, its form and both ε.
        public func riseCheck() -> Check {
            let what = "\(attack.uppercased()) (\(form))"
            let check = "robust accuracy does not rise with epsilon (\(attack.uppercased()))"
            guard let r = rise() else {
                return .init(defense: defense, check: check, passed: true, detail: "\(what): no point more than 2 points above one at a smaller eps")
            }
            return .init(defense: defense, check: check, passed: false,
                         detail: String(format: "%@ on %@: %.1f%% at eps %g, %.1f%% at eps %g (up %.1f points)", what, defense,
                                        robustAccuracy[r.from] * 100, epsilons[r.from], robustAccuracy[r.to] * 100, epsilons[r.to],
                                        r.amount * 100))
        }
    }
    /// The images a gallery shows: successful attacks first, then failed ones, then images the model already
    /// got wrong (each group in test-set order).
    public struct Gallery: Codable, Equatable {
        public var attack: String
        /// Test-set indices of the rows, top to bottom.
        public var indices: [Int]
        /// Per row: "fooled", "failed" (still right after the attack) or "already wrong" (wrong on the clean image).
        public var outcomes: [String]
        public var fooled: Int { outcomes.filter { $0 == "fooled" }.count }
        public var failed: Int { outcomes.filter { $0 == "failed" }.count }
        public var alreadyWrong: Int { outcomes.filter { $0 == "already wrong" }.count }
    }
    public struct Needed: Codable, Equatable {
        public var defense: String
        /// Median minimal perturbation over the images the model got right (DeepFool L2 / L∞, C&W L2).
        public var deepfoolL2: Double?
        public var deepfoolLinf: Double?
        public var cwL2: Double?
    }
    /// Randomized smoothing's certificates on the clean test images (Cohen, Rosenfeld & Kolter 2019, CERTIFY):
    /// the smoothed classifier is right on an image and provably stays so within L2 radius R = σ·Φ⁻¹(p̲_A).
    public struct Certified: Codable, Equatable {
        public var defense: String
        public var sigma: Float
        /// CERTIFY's draws: n₀ choose the class, n bound its probability, at confidence 1 − α.
        public var selection: Int
        public var estimation: Int
        public var alpha: Double
        /// The L2 radii and, per radius r, the share of test images certified right with radius ≥ r (an
        /// abstention counts as wrong).
        public var radii: [Double]
        public var certifiedAccuracy: [Double]
        /// The share of test images CERTIFY abstains on (p̲_A ≤ 1/2).
        public var abstainRate: Double
        /// The smoothed classifier's clean accuracy by PREDICT (`votes` draws, abstain counting as wrong), and
        /// the share of clean images it abstains on: the classifier the attacks' cells score.
        public var votes: Int
        public var cleanAccuracy: Double
        public var predictAbstainRate: Double
        /// Median certified radius of the images certified right (nil when none is).
        public var medianRadius: Double?
        /// The table's L∞ ε as an L2 certificate: the L∞ ball of radius ε holds points ε·√d away in L2 (d pixels),
        /// so only a radius ≥ ε·√d covers it; the share certified right at that radius (usually 0 at these ε).
        public var linfEpsilon: Float
        public var l2RadiusForLinfEpsilon: Double
        public var certifiedAtLinfEpsilon: Double
    }
    public struct Check: Codable, Equatable {
        public var defense: String
        public var check: String
        public var passed: Bool
        public var detail: String
    }

    public var settings: EvaluationSettings
    public var models: [ModelRecord] = []
    public var cleanAccuracy: [String: Double] = [:]
    public var whiteBox: [Cell] = []
    public var blackBox: [Cell] = []
    public var curves: [Curve] = []
    public var perturbationNeeded: [Needed] = []
    public var worstCase: [String: Double] = [:]
    public var sanity: [Check] = []
    /// The galleries of the undefended model, one per attack.
    public var galleries: [Gallery] = []
    /// Randomized smoothing's certificates, one per smoothing defense (nil: none ran; results.json written before
    /// the smoothing defense existed has no such key).
    public var certified: [Certified]?
}

extension EvaluationResults {
    /// Entries in the settings' order of defenses (then attacks, then forms), so that a run and the merge of
    /// its shards compare equal.
    func canonical() -> EvaluationResults {
        var r = self
        let di = Dictionary(uniqueKeysWithValues: settings.defenses.enumerated().map { ($0.element.name, $0.offset) })
        let ai = Dictionary(uniqueKeysWithValues: (settings.attacks + settings.queryAttacks).enumerated().map { ($0.element.name, $0.offset) })
        func cellOrder(_ a: Cell, _ b: Cell) -> Bool {
            (di[a.defense] ?? 0, ai[a.attack] ?? 0, a.form) < (di[b.defense] ?? 0, ai[b.attack] ?? 0, b.form)
        }
        r.whiteBox.sort(by: cellOrder)
        r.blackBox.sort(by: cellOrder)
        r.curves.sort { (di[$0.defense] ?? 0, ai[$0.attack] ?? 0) < (di[$1.defense] ?? 0, ai[$1.attack] ?? 0) }
        r.perturbationNeeded.sort { (di[$0.defense] ?? 0) < (di[$1.defense] ?? 0) }
        r.models.sort { (di[$0.name] ?? 0) < (di[$1.name] ?? 0) }
        r.galleries.sort { (ai[$0.attack] ?? 0) < (ai[$1.attack] ?? 0) }
        r.certified = r.certified?.sorted { (di[$0.defense] ?? 0) < (di[$1.defense] ?? 0) }
        // Stable: a defense's checks keep the order they were made in.
        r.sanity = r.sanity.enumerated().sorted { (di[$0.element.defense] ?? 0, $0.offset) < (di[$1.element.defense] ?? 0, $1.offset) }.map(\.element)
        return r
    }

    /// Joins the results of shards of one evaluation (same settings) into the results of the whole.
    public static func merge(_ parts: [EvaluationResults]) throws -> EvaluationResults {
        guard let first = parts.first else { throw AdvKitError.invalidArgument("merge needs at least one shard's results") }
        for p in parts.dropFirst() where p.settings != first.settings {
            throw AdvKitError.invalidData("the shards were run with different settings: cannot merge them")
        }
        var seen = Set<String>()
        var r = EvaluationResults(settings: first.settings)
        for p in parts {
            let names = Set(p.models.map(\.name))
            let twice = names.intersection(seen)
            guard twice.isEmpty else { throw AdvKitError.invalidData("defense \(twice.sorted().joined(separator: ", ")) appears in two shards") }
            seen.formUnion(names)
            r.models += p.models
            r.cleanAccuracy.merge(p.cleanAccuracy) { a, _ in a }
            r.whiteBox += p.whiteBox
            r.blackBox += p.blackBox
            r.curves += p.curves
            r.perturbationNeeded += p.perturbationNeeded
            r.worstCase.merge(p.worstCase) { a, _ in a }
            r.sanity += p.sanity
            r.galleries += p.galleries
            if let c = p.certified { r.certified = (r.certified ?? []) + c }
        }
        let missing = first.settings.defenses.map(\.name).filter { !seen.contains($0) }
        guard missing.isEmpty else { throw AdvKitError.invalidData("no shard covered \(missing.joined(separator: ", ")): merge every shard") }
        return r.canonical()
    }
}
