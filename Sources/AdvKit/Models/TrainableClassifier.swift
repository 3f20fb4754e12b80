import Foundation

/// A classifier that can be trained: a `Classifier` that is also a `Layer`, so it names its parameters and buffers
/// (`namedTensors`, hence `parameters` and `stateDict`). `Trainer` (checkpoints and resume), the training defenses,
/// the detector network and safetensors `save`/`load` (by the state-dict names) take any of them:
///
/// - `Model`, one of the built-in architectures (`Model(.cnn)`),
/// - `Network`, any composition of AdvKit's layers (`Network(body, inputShape: [1, 28, 28], classes: 10)`),
/// - `ONNXClassifier`, an imported graph (its floating-point initializers are its parameters).
///
/// Behaviour that differs between training and inference (dropout, batch statistics) reads the tape's `mode`, which
/// `Trainer` sets to `.training` for the minibatch loss; prediction and attacks run in `.inference`.
public protocol TrainableClassifier: Classifier, Layer {
    /// Records the logits (N, classes) of the images `x` (N, C, H, W) on x's tape.
    func callAsFunction(_ x: Variable) -> Variable
}

extension Classifier {
    /// Predicted class and its softmax probability for each image, in inference mode, in batches of `batchSize`.
    public func predict(_ images: Tensor, batchSize: Int = 256) -> (classes: [Int], confidences: [Float]) {
        precondition(batchSize > 0, "batchSize must be > 0, got \(batchSize)")
        let probs = Kernels.softmax(logits(of: images, batchSize: batchSize))
        let classes = probs.argmaxRows()
        let k = classCount
        let confidences = classes.enumerated().map { probs.storage.pointer[$0.offset * k + $0.element] }
        return (classes, confidences)
    }

    /// Share of images whose predicted class equals the label.
    public func accuracy(_ images: Tensor, labels: [Int32], batchSize: Int = 256) -> Double {
        guard !labels.isEmpty else { return 0 }
        let p = predict(images, batchSize: batchSize).classes
        return Double(zip(p, labels).filter { $0 == Int($1) }.count) / Double(labels.count)
    }
}
