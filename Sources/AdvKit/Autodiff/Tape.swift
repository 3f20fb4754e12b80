import Foundation

/// A trainable tensor with a name (PyTorch's parameter name within its layer, e.g. "weight").
/// A reference type: a layer and its optimizer see the same values.
public final class Parameter {
    public var value: Tensor
    public init(_ value: Tensor) { self.value = value }
}

/// A value recorded on a `Tape`.
public struct Variable {
    public let index: Int
    public unowned let tape: Tape

    /// The forward value.
    public var value: Tensor { tape.nodes[index].value }
    public var shape: Shape { tape.nodes[index].value.shape }
}

/// Whether layers behave as in training (batch statistics, dropout) or in inference.
public enum Mode: Sendable {
    case training, inference
}

/// A tape for reverse-mode automatic differentiation.
///
/// Operations on `Variable`s append a node holding the forward value and exactly what the pullback needs.
/// `gradients(of:seed:wrt:)` walks the nodes backwards and computes only the gradients that lead to the
/// requested values: asking for the input gradient skips every weight gradient (an attack needs no dW).
/// The recorded forward pass can be replayed with another upstream seed (DeepFool and JSMA take one gradient
/// per class from a single forward pass).
///
/// Buffers are reused: `reset()` forgets the nodes but keeps their storage, and the next forward pass of the
/// same graph writes into it, so an attack's inner loop does not allocate per step. A buffer that the caller
/// still holds (say, a returned gradient) is never reused: the tape makes a new one instead.
///
/// ```swift
/// let tape = Tape()
/// let x = tape.input(images)
/// let loss = tape.crossEntropy(model(x), labels: labels).mean()
/// let dx = tape.gradient(of: loss, wrt: x)
/// ```
public final class Tape {
    /// Layers read this to choose batch or running statistics (BatchNorm2D) and to apply dropout.
    public var mode: Mode

    struct Node {
        var value: Tensor
        var op: Op
    }

    var nodes: [Node] = []
    private var parameterNodes: [ObjectIdentifier: Int] = [:]
    private var valuePool: [TensorStorage] = []
    private var gradPool: [TensorStorage] = []
    private var indexPool: [Int: Int32Buffer] = [:]
    private var savedPool: [Int: TensorStorage] = [:]
    var grads: [Tensor?] = []
    var needs: [Bool] = []
    /// Node i's gradient is already masked by node i's fused activation (a max-pool wrote it alone, masked):
    /// its pullback then skips the mask. Cleared as soon as anything else adds to that gradient.
    var premasked: [Bool] = []
    /// The node `gradients` started from (its gradient is the caller's seed).
    var gradientOutput = -1
    private var scratch: TensorStorage = TensorStorage(capacity: 0)

    public init(mode: Mode = .inference) {
        self.mode = mode
    }

    /// Forgets the recorded nodes, keeping their buffers for the next forward pass.
    public func reset() {
        nodes.removeAll(keepingCapacity: true)
        parameterNodes.removeAll(keepingCapacity: true)
    }

    /// Number of recorded nodes.
    public var count: Int { nodes.count }

    /// The forward value of node `i` (diagnostics and tests).
    @_spi(Testing) public func nodeValue(_ i: Int) -> Tensor { nodes[i].value }

    /// Gradient buffers the last `gradients` call filled: only nodes on a path to a requested value get one.
    @_spi(Testing) public internal(set) var lastGradientBuffers = 0

    /// Buffers taken from a previous pass instead of allocated (diagnostics: an attack loop should reuse).
    @_spi(Testing) public private(set) var reusedBuffers = 0

    /// Buffers the tape has allocated (forward values, saved tensors, gradients, indices). Once a loop over the
    /// same graph is warm this stops growing: the loop allocates nothing per step (tested).
    @_spi(Testing) public private(set) var allocatedBuffers = 0

    // MARK: leaves

    /// Records a value the gradient may be taken with respect to (an image batch).
    public func input(_ value: Tensor) -> Variable {
        append(value, .leaf)
    }

    /// Records a parameter once per tape; using it again returns the same node.
    public func parameter(_ p: Parameter) -> Variable {
        let id = ObjectIdentifier(p)
        if let i = parameterNodes[id] { return Variable(index: i, tape: self) }
        let v = append(p.value, .leaf)
        parameterNodes[id] = v.index
        return v
    }

    /// The node of a parameter recorded on this tape, if it was used.
    public func variable(for p: Parameter) -> Variable? {
        parameterNodes[ObjectIdentifier(p)].map { Variable(index: $0, tape: self) }
    }

    @discardableResult
    func append(_ value: Tensor, _ op: Op) -> Variable {
        nodes.append(Node(value: value, op: op))
        return Variable(index: nodes.count - 1, tape: self)
    }

    // MARK: buffers

    /// An output buffer for the node about to be appended: reused from the previous pass when its size
    /// matches and nobody else holds it. Its contents are undefined; the caller writes every element.
    func newValue(_ shape: Shape) -> Tensor {
        Tensor(shape: shape, storage: pooled(&valuePool, at: nodes.count, count: shape.count))
    }

    /// An extra buffer that the node about to be appended keeps for its pullback (probabilities, a mask):
    /// pooled like the forward values, under (node, slot).
    func newSaved(_ shape: Shape, slot: Int) -> Tensor {
        let key = nodes.count &* 4 &+ slot
        if var s = savedPool.removeValue(forKey: key) {
            if s.capacity == shape.count && isKnownUniquelyReferenced(&s) {
                savedPool[key] = s
                return Tensor(shape: shape, storage: s)
            }
        }
        let s = TensorStorage(capacity: shape.count)
        allocatedBuffers += 1
        savedPool[key] = s
        return Tensor(shape: shape, storage: s)
    }

    private func pooled(_ pool: inout [TensorStorage], at i: Int, count: Int) -> TensorStorage {
        while pool.count <= i { pool.append(TensorStorage(capacity: 0)) }
        if pool[i].capacity == count && isKnownUniquelyReferenced(&pool[i]) {
            reusedBuffers += 1
            return pool[i]
        }
        let s = TensorStorage(capacity: count)
        allocatedBuffers += 1
        pool[i] = s
        return s
    }

    /// Argmax indices for the max-pool node about to be appended.
    func newIndices(count: Int) -> Int32Buffer {
        let i = nodes.count
        // Take the buffer out of the pool before asking whether anyone else holds it (a binding would count).
        if var b = indexPool.removeValue(forKey: i) {
            if b.count == count && isKnownUniquelyReferenced(&b) {
                indexPool[i] = b
                reusedBuffers += 1
                return b
            }
        }
        let b = Int32Buffer(count: count)
        allocatedBuffers += 1
        indexPool[i] = b
        return b
    }

    private var maskStorage = TensorStorage(capacity: 0)

    /// A buffer for a masked upstream gradient (fused activations); valid until the next call.
    func maskScratch(_ shape: Shape) -> Tensor {
        if maskStorage.capacity < shape.count { maskStorage = TensorStorage(capacity: shape.count) }
        return Tensor(shape: shape, storage: maskStorage)
    }

    /// Scratch memory for one kernel call (convolution's im2col); valid until the next call.
    func scratch(floats: Int) -> UnsafeMutablePointer<Float> {
        if scratch.capacity < floats { scratch = TensorStorage(capacity: floats) }
        return scratch.pointer
    }

    // MARK: gradients

    /// The gradient of `output` with respect to `target`.
    ///
    /// `seed` is the upstream gradient (dL/d output); by default all ones, which for a vector of per-sample
    /// losses gives each sample the gradient of its own loss.
    public func gradient(of output: Variable, seed: Tensor? = nil, wrt target: Variable) -> Tensor {
        backward(from: output, seed: seed) { needs in
            if target.index < needs.count { needs[target.index] = true }
        }
        let g = takeGradient(target)
        grads.removeAll(keepingCapacity: true)
        return g
    }

    /// Gradients of `output` with respect to each of `targets`, in order. A target that `output` does not
    /// depend on gets zeros. Only the gradients on a path to a target are computed.
    public func gradients(of output: Variable, seed: Tensor? = nil, wrt targets: [Variable]) -> [Tensor] {
        backward(from: output, seed: seed) { needs in
            for t in targets where t.index < needs.count { needs[t.index] = true }
        }
        let gs = targets.map(takeGradient)
        grads.removeAll(keepingCapacity: true)
        return gs
    }

    /// The gradient left for `target` by the last backward pass (zeros when `output` does not depend on it).
    private func takeGradient(_ target: Variable) -> Tensor {
        if target.index < grads.count, let g = grads[target.index] { return g }
        return Tensor(zeros: nodes[target.index].value.shape)
    }

    /// Runs the pullbacks from `output` back to the nodes that `markTargets` flags, leaving gradients in `grads`.
    private func backward(from output: Variable, seed: Tensor?, markTargets: (inout [Bool]) -> Void) {
        precondition(output.tape === self, "the output was recorded on another tape")
        let last = output.index
        gradientOutput = last
        if let seed {
            precondition(seed.shape == output.shape,
                         "seed shape \(seed.shape) does not match the output's shape \(output.shape)")
        }
        // Which nodes lead to a target: a node needs its gradient if a target is among its ancestors.
        needs.removeAll(keepingCapacity: true)
        needs.append(contentsOf: repeatElement(false, count: last + 1))
        markTargets(&needs)
        for i in 0...last where !needs[i] {
            if nodes[i].op.anyInput(where: { needs[$0] }) { needs[i] = true }
        }
        grads.removeAll(keepingCapacity: true)
        grads.append(contentsOf: repeatElement(nil, count: last + 1))
        premasked.removeAll(keepingCapacity: true)
        premasked.append(contentsOf: repeatElement(false, count: last + 1))
        lastGradientBuffers = 0
        if needs[last] {
            if let seed {
                grads[last] = seed
            } else {
                let g = gradBuffer(last, nodes[last].value.shape)
                g.storage.pointer.initialize(repeating: 1, count: g.count)
                grads[last] = g
            }
        }
        var i = last
        while i >= 0 {
            if needs[i], let g = grads[i] { backward(node: i, upstream: g) }
            if i == 0 { break }
            i -= 1
        }
    }

    /// Gradients with respect to parameters (a training step). A parameter not used on this tape gets zeros.
    public func gradients(of output: Variable, wrt parameters: [Parameter]) -> [Tensor] {
        var vars: [Variable] = []
        var missing: [Int] = []
        for (k, p) in parameters.enumerated() {
            if let v = variable(for: p) { vars.append(v) } else { missing.append(k) }
        }
        var gs = gradients(of: output, wrt: vars)
        for k in missing { gs.insert(Tensor(zeros: parameters[k].value.shape), at: k) }
        return gs
    }

    /// A gradient buffer for node i (pooled like the forward values), its contents left as they are.
    func gradBuffer(_ i: Int, _ shape: Shape) -> Tensor {
        Tensor(shape: shape, storage: pooled(&gradPool, at: i, count: shape.count))
    }

    /// A pointer to node i's gradient accumulator, creating it zeroed; nil when node i needs no gradient.
    func gradPointer(_ i: Int) -> UnsafeMutablePointer<Float>? {
        guard needs[i] else { return nil }
        premasked[i] = false  // whatever the caller adds is not masked
        if grads[i] == nil {
            let g = gradBuffer(i, nodes[i].value.shape)
            g.storage.pointer.initialize(repeating: 0, count: g.count)
            grads[i] = g
            lastGradientBuffers += 1
        }
        // Only the output node can hold the caller's seed, and nothing accumulates into the output.
        return grads[i]!.storage.pointer
    }

    /// Adds `g` into node i's gradient.
    func accumulate(_ i: Int, _ g: Tensor) {
        guard let p = gradPointer(i) else { return }
        let q = g.storage.pointer
        for k in 0..<g.count { p[k] += q[k] }
    }
}

/// Int32 storage for max-pool argmax indices.
final class Int32Buffer {
    let pointer: UnsafeMutablePointer<Int32>
    let count: Int
    init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: Swift.max(count, 1))
    }
    deinit { pointer.deallocate() }
}
