import Foundation

// The report's pictures: galleries and saliency maps, as data (`ReportPictures`) for `ReportWriter`.
extension Evaluator {
    /// Images of an attack on the undefended model, for the report's pictures: successful attacks first, then
    /// failed ones, then images the model already got wrong (`EvaluationResults.Gallery`). Kept in the journal
    /// with the white-box cell it comes from.
    struct Gallery: Codable {
        static let size = 6
        var indices: [Int]
        var outcomes: [String]
        var clean: Tensor.Record
        var adversarial: Tensor.Record
        var labels: [Int32]
        var cleanPred: [Int]
        var advPred: [Int]
        var advConf: [Float]
        /// The confidence of `cleanPred` on the clean image. Optional so that a journal unit written before it
        /// existed still decodes (as nil); the pictures then compute it from the undefended model.
        var cleanConf: [Float]?

        /// The rows to show of an attack's outcomes: up to `size`, fooled images first (each group in test order).
        static func pick(_ outcomes: [AttackOutcome]) -> (indices: [Int], outcomes: [String]) {
            func kind(_ o: AttackOutcome) -> String {
                o.cleanPrediction != o.label ? "already wrong" : (o.success ? "fooled" : "failed")
            }
            let order = ["fooled", "failed", "already wrong"]
            let rows = outcomes.indices.map { ($0, kind(outcomes[$0])) }
                .sorted { (order.firstIndex(of: $0.1)!, $0.0) < (order.firstIndex(of: $1.1)!, $1.0) }.prefix(size)
            return (rows.map(\.0), rows.map(\.1))
        }
    }

    /// The pictures of this run: a gallery per attack that ran on the undefended model, and saliency maps of the
    /// first six test images (when the undefended model is among this run's defenses).
    public func reportPictures() -> ReportPictures {
        var out = ReportPictures()
        for a in settings.attacks {
            guard let g = galleries[a.name] else { continue }
            let clean = Tensor(g.clean), adversarial = Tensor(g.adversarial)
            let n = min(Gallery.size, g.labels.count)
            let cleanConf = g.cleanConf ?? confidences(clean, of: g.cleanPred)
            let rows = (0..<n).map { i in
                ReportPictures.GalleryRow(index: g.indices[i], outcome: g.outcomes[i], label: Int(g.labels[i]), cleanPrediction: g.cleanPred[i],
                                          cleanConfidence: cleanConf[i], adversarialPrediction: g.advPred[i], adversarialConfidence: g.advConf[i],
                                          clean: clean.batch(i..<(i + 1)), adversarial: adversarial.batch(i..<(i + 1)))
            }
            out.galleries.append(.init(attack: a.name, epsilon: a.isMinimalPerturbation ? nil : settings.epsilon, rows: rows))
        }
        let mine = settings.defenses.enumerated().filter { shard == nil || $0.offset % shard!.count == shard!.index }.map(\.element)
        if mine.contains(.none), undefended != nil { out.saliency = saliencyRows() }
        return out
    }

    /// Softmax probability of each image's `classes` entry under the undefended model.
    func confidences(_ images: Tensor, of classes: [Int]) -> [Float] {
        let p = Kernels.softmax(undefended.logits(of: images))
        let k = p.shape[1]
        return p.withUnsafeBufferPointer { b in classes.enumerated().map { b[$0.offset * k + $0.element] } }
    }

    func saliencyRows() -> [ReportPictures.SaliencyRow] {
        let n = min(6, test.count)
        let images = test.images.batch(0..<n), labels = test.labels.prefix(n).map(Int.init)
        let maps = Saliency.gradient(undefended, images: images, classes: labels)
        let pred = undefended.logits(of: images).argmaxRows()
        let conf = confidences(images, of: pred)
        return (0..<n).map { i in
            let m = maps.batch(i..<(i + 1))
            let top = max(m.max(), 1e-12)
            return .init(index: i, label: labels[i], prediction: pred[i], confidence: conf[i], image: .init(images, index: i),
                         map: .init(m.map { $0 / top }, index: 0))
        }
    }
}

extension ReportWriter {
    /// Writes an evaluator's finished run: its pictures (`Evaluator.reportPictures()`), timings and shard, in its
    /// output folder. The same as `write(_:pictures:to:classNames:timings:shard:)` with those.
    @discardableResult
    public static func write(_ r: EvaluationResults, evaluator: Evaluator, classNames: [String]) throws -> [String] {
        try write(r, pictures: evaluator.reportPictures(), to: evaluator.outputDirectory, classNames: classNames,
                  timings: evaluator.timings, shard: evaluator.shard.map { "\($0.index)/\($0.count)" })
    }
}
