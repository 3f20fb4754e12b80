import Foundation

// One white-box cell and what the report needs of it.
extension Evaluator {
    /// One white-box cell, with what the report needs of it besides the table.
    struct WhiteBoxUnit: Codable {
        var cell: EvaluationResults.Cell
        var flags: [Bool]
        var deepfoolLinf: Double?
        var gallery: Gallery?
    }


    func whiteBoxCell(_ a: String, against d: Defended) throws -> WhiteBoxUnit {
        let r = try attack(a, eps: settings.epsilon, against: d).run(d.classifier, images: test.images, labels: test.labels,
                                                                     seed: settings.seed)
        let flags = robust(d, adversarial: r.adversarial)
        let f = form(a, against: d)
        var unit = WhiteBoxUnit(cell: .init(defense: d.name, attack: a, form: f.form, adaptive: f.adaptive, robustAccuracy: share(flags),
                                            medianL2: r.medianL2, medianLinf: r.medianLinf), flags: flags)
        if a == "deepfool" {
            unit.deepfoolLinf = try DeepFool(steps: 50, norm: .linf).run(d.classifier, images: test.images, labels: test.labels).medianLinf
        }
        if d.name == "none" {
            let (shown, kinds) = Gallery.pick(r.outcomes)
            unit.gallery = Gallery(indices: shown, outcomes: kinds, clean: test.images.gather(shown).record,
                                   adversarial: r.adversarial.gather(shown).record, labels: shown.map { test.labels[$0] },
                                   cleanPred: shown.map { r.outcomes[$0].cleanPrediction },
                                   advPred: shown.map { r.outcomes[$0].adversarialPrediction },
                                   advConf: shown.map { r.outcomes[$0].adversarialConfidence })
        }
        return unit
    }

    /// Per image: the defense's classifier is right on the clean image.
    func robustClean(_ d: Defended) -> [Bool] {
        let pred = d.classifier.logits(of: test.images).argmaxRows()
        return (0..<test.count).map { pred[$0] == Int(test.labels[$0]) }
    }

}
