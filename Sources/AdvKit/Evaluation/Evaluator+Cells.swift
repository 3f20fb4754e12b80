import Foundation

// The cells of the tables: one attack against one defense, and what the report needs of it.
extension Evaluator {
    /// One cell, with what the report needs of it besides the table.
    struct WhiteBoxUnit: Codable {
        var cell: EvaluationResults.Cell
        var flags: [Bool]
        var deepfoolLinf: Double?
        var gallery: Gallery?
    }

    /// The white-box attack `a` against `d` at radius `eps`, in the form `form(_:against:)` names (PGD with `steps`,
    /// default the settings').
    func attack(_ a: AttackSpec, eps: Float, against d: Defended, steps: Int? = nil) -> Attack {
        switch a {
        case .fgsm: return FGSM(epsilon: eps)
        case .pgd:
            let p = pgd(eps, steps: steps)
            if let det = d.detector, det.isDifferentiable {
                return DetectorAwarePGD(detector: det, epsilon: eps, alpha: p.alpha, steps: p.steps, lambda: d.lambda)
            }
            return p
        case let .deepfool(s): return DeepFool(steps: s)
        case let .cw(b, s): return CarliniWagnerL2(binarySearchSteps: b, steps: s)
        case let .autoattack(s, q):
            // A randomised defense gets AutoAttack's "rand" version (APGD-CE and APGD-DLR), as Croce & Hein prescribe;
            // the noisy classifier already averages its draws in every forward pass (EOT), so no further draws.
            if d.classifier is NoisyClassifier { return AutoAttack.rand(epsilon: eps, steps: s, eotDraws: 1) }
            return AutoAttack.standard(epsilon: eps, steps: s, squareQueries: q)
        case let .square(q): return SquareAttack(epsilon: eps, queries: q)
        case let .hopSkipJump(q): return HopSkipJump(norm: .linf, queries: q)
        }
    }

    func whiteBoxCell(_ a: AttackSpec, against d: Defended) throws -> WhiteBoxUnit {
        let made = attack(a, eps: settings.epsilon, against: d)
        var brokenBy: [String: Int]?
        let r: AttackResult
        if let aa = made as? AutoAttack {
            let report = try aa.runWithReport(d.classifier, images: test.images, labels: test.labels, seed: settings.seed)
            r = report.result
            brokenBy = Dictionary(uniqueKeysWithValues: zip(report.componentNames, report.brokenCounts))
        } else {
            r = try made.run(d.classifier, images: test.images, labels: test.labels, seed: settings.seed)
        }
        let flags = robust(d, adversarial: r.adversarial)
        let f = form(a, against: d)
        var unit = WhiteBoxUnit(cell: .init(defense: d.name, attack: a.name, form: f.form, adaptive: f.adaptive, robustAccuracy: share(flags),
                                            medianL2: r.medianL2, medianLinf: r.medianLinf, brokenBy: brokenBy), flags: flags)
        if case let .deepfool(steps) = a {
            unit.deepfoolLinf = try DeepFool(steps: steps, norm: .linf).run(d.classifier, images: test.images, labels: test.labels).medianLinf
        }
        if d.spec == .none {
            let (shown, kinds) = Gallery.pick(r.outcomes)
            unit.gallery = Gallery(indices: shown, outcomes: kinds, clean: test.images.gather(shown).record,
                                   adversarial: r.adversarial.gather(shown).record, labels: shown.map { test.labels[$0] },
                                   cleanPred: shown.map { r.outcomes[$0].cleanPrediction },
                                   advPred: shown.map { r.outcomes[$0].adversarialPrediction },
                                   advConf: shown.map { r.outcomes[$0].adversarialConfidence },
                                   cleanConf: shown.map { r.outcomes[$0].cleanConfidence })
        }
        return unit
    }

    /// A query-based black-box cell: Square (scores) or HopSkipJump (labels) against what the defense answers — the
    /// squeezed or noisy model's outputs, never a gradient. Robust: still right, flagged by the defense's detector
    /// (which the query attacks do not see, hence not adaptive there), or (HopSkipJump, which has no ball) the
    /// adversarial image it found lies outside the table's L∞ ε.
    func queryCell(_ a: AttackSpec, against d: Defended) throws -> WhiteBoxUnit {
        guard let made = attack(a, eps: settings.epsilon, against: d) as? QueryAttack else {
            throw AdvKitError.invalidArgument("\(a.name) is not a query-based attack")
        }
        let q = try made.runCountingQueries(d.classifier, images: test.images, labels: test.labels, seed: settings.seed)
        var flags = robust(d, adversarial: q.result.adversarial)
        let eps = settings.epsilon * (1 + 1e-5)
        for (i, o) in q.result.outcomes.enumerated() where o.linf > eps { flags[i] = true }
        let kind: String
        if case .square = a { kind = "scores" } else { kind = "labels" }
        let seen = d.detector == nil
        let form = "query-based: \(kind), \(made.queryBudget) queries" + (seen ? "" : " (the detector not seen)")
        let cell = EvaluationResults.Cell(defense: d.name, attack: a.name, form: form, adaptive: seen, robustAccuracy: share(flags),
                                          medianL2: q.result.medianL2, medianLinf: q.result.medianLinf,
                                          medianQueries: q.medianQueriesOfSuccesses)
        return WhiteBoxUnit(cell: cell, flags: flags)
    }

    /// Per image: the defense's classifier is right on the clean image (the smoothed classifier's vote, for
    /// randomized smoothing).
    func robustClean(_ d: Defended) -> [Bool] {
        let pred = predictions(d, test.images)
        return (0..<test.count).map { pred[$0] == Int(test.labels[$0]) }
    }

    /// Per image: robust under this defense (right, or flagged by its detector; an abstaining smoothed classifier
    /// is not right).
    func robust(_ d: Defended, adversarial: Tensor) -> [Bool] {
        let pred = predictions(d, adversarial)
        let flagged = d.detector?.detect(adversarial) ?? [Bool](repeating: false, count: pred.count)
        return (0..<pred.count).map { pred[$0] == Int(test.labels[$0]) || flagged[$0] }
    }

    /// What the defense answers for each image: its classifier's top class, or the smoothed classifier's PREDICT
    /// (nil: abstains). The vote's draws are keyed by (seed, image index, draw), so clean and attacked images, and a
    /// resumed run, see the same noise.
    func predictions(_ d: Defended, _ images: Tensor) -> [Int?] {
        if let s = d.smoothing {
            // The spec was validated: votes >= 1 and alpha in (0, 1), which is all PREDICT checks.
            return (try? s.classifier.predict(images, samples: s.votes, alpha: s.alpha, seed: settings.seed))
                ?? [Int?](repeating: nil, count: images.shape[0])
        }
        return d.classifier.logits(of: images).argmaxRows()
    }

    /// Randomized smoothing's certificates on the clean test images (CERTIFY), the smoothed classifier's clean
    /// accuracy and abstentions (PREDICT), and what the certificate says at the table's L∞ ε.
    func certifiedUnit(_ d: Defended) throws -> EvaluationResults.Certified {
        guard let s = d.smoothing, case let .smoothing(sigma, _, selection, estimation, alpha, radii, votes, _) = d.spec else {
            throw AdvKitError.invalidArgument("\(d.name) is not randomized smoothing")
        }
        let certificates = try s.classifier.certify(test.images, selection: selection, estimation: estimation, alpha: alpha, seed: settings.seed)
        let accuracy = RandomizedSmoothing.certifiedAccuracy(certificates, labels: test.labels, radii: radii)
        let voted = predictions(d, test.images)
        let right = (0..<test.count).filter { certificates[$0].prediction == Int(test.labels[$0]) }.map { certificates[$0].radius }.sorted()
        let l2 = Double(settings.epsilon) * Double(imageShape.count).squareRoot()
        return .init(defense: d.name, sigma: sigma, selection: selection, estimation: estimation, alpha: alpha, radii: radii,
                     certifiedAccuracy: accuracy, abstainRate: share(certificates.map { $0.prediction == nil }), votes: votes,
                     cleanAccuracy: share((0..<test.count).map { voted[$0] == Int(test.labels[$0]) }),
                     predictAbstainRate: share(voted.map { $0 == nil }),
                     medianRadius: right.isEmpty ? nil : (right.count % 2 == 1 ? right[right.count / 2] : (right[right.count / 2 - 1] + right[right.count / 2]) / 2),
                     linfEpsilon: settings.epsilon, l2RadiusForLinfEpsilon: l2,
                     certifiedAtLinfEpsilon: RandomizedSmoothing.certifiedAccuracy(certificates, labels: test.labels, radii: [l2])[0])
    }

    func share(_ flags: [Bool]) -> Double { Double(flags.filter { $0 }.count) / Double(max(flags.count, 1)) }
}
