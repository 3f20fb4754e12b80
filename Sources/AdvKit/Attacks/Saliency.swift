/// Saliency maps (Simonyan, Vedaldi & Zisserman 2013): which pixels move a class score most.
public enum Saliency {
    /// |∂Z_c/∂x|, the maximum over channels: (N, 1, H, W). `classes` per image (e.g. the labels or the
    /// predictions); Z are the logits.
    public static func gradient(_ model: Classifier, images: Tensor, classes: [Int]) -> Tensor {
        let g = classGradient(model, images, classes)
        let (n, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
        var out = Tensor(zeros: [n, 1, h, w])
        out.withUnsafeMutableBufferPointer { o in
            g.withUnsafeBufferPointer { p in
                for i in 0..<n { for ch in 0..<c { for j in 0..<(h * w) {
                    o[i * h * w + j] = max(o[i * h * w + j], abs(p[(i * c + ch) * h * w + j]))
                } } }
            }
        }
        return out
    }

    /// ∂Z_c/∂x ⊙ x (Shrikumar et al. 2016): (N, C, H, W), signed.
    public static func gradientTimesInput(_ model: Classifier, images: Tensor, classes: [Int]) -> Tensor {
        classGradient(model, images, classes) * images
    }

    static func classGradient(_ model: Classifier, _ images: Tensor, _ classes: [Int]) -> Tensor {
        precondition(classes.count == images.shape[0], "\(classes.count) classes for \(images.shape[0]) images")
        let tape = Tape(mode: .inference)
        let v = tape.input(images)
        let z = model(v)
        var seed = Tensor(zeros: z.shape)
        for (i, c) in classes.enumerated() {
            precondition(c >= 0 && c < model.classCount, "class \(c) is outside [0, \(model.classCount))")
            seed[i, c] = 1
        }
        return tape.gradient(of: z, seed: seed, wrt: v)
    }
}
