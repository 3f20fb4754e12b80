import Foundation

/// The report's pictures as data: each gallery row's images (8-bit PNGs) with the classes and confidences drawn
/// beside them, and the saliency maps. `Evaluator.reportPictures()` makes them; `ReportWriter` draws them as SVG
/// figures and keeps them in the output folder (pictures.json), so that `ReportWriter.merge` draws a merged
/// report's figures again from its shards.
public struct ReportPictures: Codable, Equatable, Sendable {
    /// One image, as an 8-bit gray or RGB PNG.
    public struct Image: Codable, Equatable, Sendable {
        public var width: Int
        public var height: Int
        public var png: Data

        public init(width: Int, height: Int, png: Data) {
            (self.width, self.height, self.png) = (width, height, png)
        }

        /// Image `index` of a (N, C, H, W) batch with C = 1 or 3, values in [0, 1] (clamped), as 8-bit.
        public init(_ images: Tensor, index: Int) {
            let img = PNG.image(images, index: index)
            self.init(width: img.width, height: img.height, png: PNG.encode(img))
        }
    }

    /// One row of the paper's figure: x (class, confidence) + δ = x′ (class, confidence)
    /// (Goodfellow, Shlens & Szegedy 2015, figure 1).
    public struct GalleryRow: Codable, Equatable, Sendable {
        /// Test-set index of the image.
        public var index: Int
        /// "fooled", "failed" (still right after the attack) or "already wrong" (wrong on the clean image).
        public var outcome: String
        public var label: Int
        public var cleanPrediction: Int
        /// Softmax probability of `cleanPrediction` on the clean image.
        public var cleanConfidence: Float
        public var adversarialPrediction: Int
        public var adversarialConfidence: Float
        public var clean: Image
        /// δ = x′ − x drawn as 0.5 + amplification·δ (mid-gray is 0), the channels as the image's.
        public var perturbation: Image
        public var amplification: Double
        /// ‖δ‖∞ of the row.
        public var linf: Double
        public var adversarial: Image

        public init(index: Int, outcome: String, label: Int, cleanPrediction: Int, cleanConfidence: Float, adversarialPrediction: Int,
                    adversarialConfidence: Float, clean: Image, perturbation: Image, amplification: Double, linf: Double, adversarial: Image) {
            (self.index, self.outcome, self.label) = (index, outcome, label)
            (self.cleanPrediction, self.cleanConfidence) = (cleanPrediction, cleanConfidence)
            (self.adversarialPrediction, self.adversarialConfidence) = (adversarialPrediction, adversarialConfidence)
            (self.clean, self.perturbation, self.amplification, self.linf, self.adversarial) = (clean, perturbation, amplification, linf, adversarial)
        }

        /// A row from a clean and an adversarial image (each (1, C, H, W)): the perturbation is amplified so that
        /// its largest entry reaches the end of the range, k = 0.5 / ‖δ‖∞.
        public init(index: Int, outcome: String, label: Int, cleanPrediction: Int, cleanConfidence: Float, adversarialPrediction: Int,
                    adversarialConfidence: Float, clean: Tensor, adversarial: Tensor) {
            let delta = adversarial - clean
            let linf = Double(delta.maxAbs())
            let k = 0.5 / max(linf, 1e-6)
            self.init(index: index, outcome: outcome, label: label, cleanPrediction: cleanPrediction, cleanConfidence: cleanConfidence,
                      adversarialPrediction: adversarialPrediction, adversarialConfidence: adversarialConfidence,
                      clean: Image(clean, index: 0), perturbation: Image(delta.map { 0.5 + Float(k) * $0 }, index: 0),
                      amplification: k, linf: linf, adversarial: Image(adversarial, index: 0))
        }
    }

    /// An attack's gallery on the undefended model: successful attacks first, then failed ones, then images the
    /// model already got wrong.
    public struct Gallery: Codable, Equatable, Sendable {
        public var attack: String
        /// The L∞ radius the attack had (nil for the minimal-perturbation attacks, DeepFool and C&W).
        public var epsilon: Float?
        public var rows: [GalleryRow]

        public init(attack: String, epsilon: Float?, rows: [GalleryRow]) {
            (self.attack, self.epsilon, self.rows) = (attack, epsilon, rows)
        }
    }

    /// An image and |∂logit(true class)/∂x| (Simonyan, Vedaldi & Zisserman 2013), scaled to its maximum.
    public struct SaliencyRow: Codable, Equatable, Sendable {
        public var index: Int
        public var label: Int
        public var prediction: Int
        public var confidence: Float
        public var image: Image
        public var map: Image

        public init(index: Int, label: Int, prediction: Int, confidence: Float, image: Image, map: Image) {
            (self.index, self.label, self.prediction, self.confidence, self.image, self.map) = (index, label, prediction, confidence, image, map)
        }
    }

    public var galleries: [Gallery]
    public var saliency: [SaliencyRow]

    public init(galleries: [Gallery] = [], saliency: [SaliencyRow] = []) {
        (self.galleries, self.saliency) = (galleries, saliency)
    }

    /// No pictures at all (a shard without the undefended model).
    public var isEmpty: Bool { galleries.isEmpty && saliency.isEmpty }

    /// The pictures of several shards as one: each attack's gallery and the saliency maps from the first shard
    /// that has them.
    public static func merge(_ parts: [ReportPictures]) -> ReportPictures {
        var out = ReportPictures()
        for p in parts {
            for g in p.galleries where !out.galleries.contains(where: { $0.attack == g.attack }) { out.galleries.append(g) }
            if out.saliency.isEmpty { out.saliency = p.saliency }
        }
        return out
    }
}
