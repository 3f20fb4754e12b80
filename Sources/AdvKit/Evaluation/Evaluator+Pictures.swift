import Foundation

// The report's pictures: galleries and saliency maps.
extension Evaluator {
    /// Images of an attack on the undefended model, for the report's pictures: successful attacks first, then
    /// failed ones, then images the model already got wrong (`EvaluationResults.Gallery`).
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

    /// Pictures for the report: a gallery per attack on the undefended model and saliency maps.
    func gallery(_ attack: String) -> (png: PNG.Image, rows: [(label: Int, clean: Int, adv: Int, conf: Float, outcome: String)])? {
        guard let g = galleries[attack] else { return nil }
        let clean = Tensor(g.clean), adversarial = Tensor(g.adversarial)
        let n = min(Gallery.size, g.labels.count), (h, w) = (imageShape[1], imageShape[2]), scale = 3, pad = 6
        var img = PNG.Image(width: 3 * (w * scale + pad) + pad, height: n * (h * scale + pad) + pad)
        var rows: [(Int, Int, Int, Float, String)] = []
        for i in 0..<n {
            let y = pad + i * (h * scale + pad)
            img.paste(PNG.image(clean, index: i), at: pad, y, scale: scale)
            let delta = adversarial.batch(i..<(i + 1)) - clean.batch(i..<(i + 1))
            let m = max(delta.maxAbs(), 1e-6)
            img.paste(PNG.image(delta.map { 0.5 + $0 / (2 * m) }, index: 0), at: pad + (w * scale + pad), y, scale: scale)
            img.paste(PNG.image(adversarial, index: i), at: pad + 2 * (w * scale + pad), y, scale: scale)
            rows.append((Int(g.labels[i]), g.cleanPred[i], g.advPred[i], g.advConf[i], g.outcomes[i]))
        }
        return (img, rows)
    }

    func saliencyPicture() -> PNG.Image {
        let n = min(6, test.count), (h, w) = (imageShape[1], imageShape[2]), scale = 3, pad = 6
        let images = test.images.batch(0..<n)
        let maps = Saliency.gradient(undefended, images: images, classes: test.labels.prefix(n).map(Int.init))
        var img = PNG.Image(width: 2 * (w * scale + pad) + pad, height: n * (h * scale + pad) + pad)
        for i in 0..<n {
            let y = pad + i * (h * scale + pad)
            img.paste(PNG.image(images, index: i), at: pad, y, scale: scale)
            let m = maps.batch(i..<(i + 1))
            let top = max(m.max(), 1e-12)
            img.paste(PNG.image(m.map { $0 / top }, index: 0), at: pad + w * scale + pad, y, scale: scale)
        }
        return img
    }
}
