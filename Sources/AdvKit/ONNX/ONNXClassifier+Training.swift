import Foundation

/// An imported graph is trainable: `Trainer` fine-tunes it (checkpoints and resume included), the training defenses
/// and the detector take it, and `save`/`load` keep its tensors in safetensors files.
///
/// Its tensors are the ones the tape reads when the graph runs, so the gradient reaches every one it trains:
///
/// - a floating-point initializer read as it is, under its initializer name ("fc1.bias");
/// - a convolution whose BatchNormalization was folded in at load: its folded weight and bias, named
///   "<weight>+<BatchNormalization node>" and "<bias>+<BatchNormalization node>" (the batch norm's own initializers
///   are no longer read and are not trained: the folded model has inference statistics only, in either mode);
/// - an (IN, OUT) Gemm/MatMul weight that runs as Linear's (OUT, IN): its transposed copy, "<name>+Transpose".
///
/// Initializers read only as constants (shapes, Clip bounds) are not on the tape and are left out. Training changes
/// what this classifier computes and what `save` writes; `model` (the imported ONNX graph) keeps the initializers it
/// was read with. `writeONNX(to:)` (ONNXWriter.swift) writes the trained tensors back into an ONNX file (the batch
/// norms kept as the identity plus the trained bias, transposed copies transposed back).
extension ONNXClassifier: TrainableClassifier {
    /// The tensors the tape reads, found by running the graph once on one zero image (names above), in graph order.
    /// Each access runs that forward pass.
    public var namedTensors: [(name: String, tensor: NamedTensor)] {
        let tape = Tape(mode: .inference)
        do {
            _ = try forward(tape.input(Tensor(zeros: Shape([1] + inputShape.dims))))
        } catch {
            // The graph ran at load on batches of 1 and 2.
            preconditionFailure("\(path): \(error)")
        }
        // Every float tensor the graph may read, in graph order first, then by name; each with its transposed copy.
        var candidates: [(String, Parameter)] = parameters.map { ($0.name, $0.parameter) }
        let listed = Set(candidates.map { ObjectIdentifier($0.1) })
        candidates += floatParameters.filter { !listed.contains(ObjectIdentifier($0.value)) }
            .sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        var out: [(name: String, tensor: NamedTensor)] = []
        var seen = Set<ObjectIdentifier>()
        for (name, p) in candidates {
            for (n, q) in [(name, p)] + (transposed[ObjectIdentifier(p)].map { [(name + "+Transpose", $0)] } ?? [])
            where tape.variable(for: q) != nil && seen.insert(ObjectIdentifier(q)).inserted {
                out.append((n, .parameter(q)))
            }
        }
        return out
    }
}
