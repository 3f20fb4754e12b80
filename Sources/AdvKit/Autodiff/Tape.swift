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
/// Large buffers also outlive the tape: when a tape is released (an attack's batch is done), its buffers of
/// 32 MiB and more that nobody else holds go to a process-wide pool, by size, and the next tape draws from it, so
/// the next batch of the same attack and model writes into memory that is already mapped instead of faulting
/// fresh pages in (`recycledBytesLimit`; the pool is emptied after two idle seconds).
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
    /// Gradient buffers free for the next node that needs one, by float count. A node's gradient goes back here
    /// as soon as its pullback has run (nothing reads it after that), so a backward pass holds only the
    /// gradients still live, not one per node (ResNet-18's cold input gradient at batch 128: 228k page faults ->
    /// 164k). Sizes a pass did not ask for are released at its end (a tape that changed batch size).
    private var gradFree: [Int: [TensorStorage]] = [:]
    /// The buffer sizes the current backward pass asked for.
    private var gradSizesUsed = Set<Int>()
    /// Gradient buffers handed to callers (requested gradients); back to `gradFree` once the caller lets go.
    private var gradLent: [TensorStorage] = []
    /// The nodes whose gradients the current backward pass returns (never recycled during the pass).
    var isTarget: [Bool] = []
    /// Whether the current backward pass started from the caller's seed (node `gradientOutput`'s gradient).
    private var seeded = false
    private var indexPool: [Int: Int32Buffer] = [:]
    private var savedPool: [Int: TensorStorage] = [:]
    var grads: [Tensor?] = []
    var needs: [Bool] = []
    /// Node i's gradient is already masked by node i's fused activation (a max-pool wrote it alone, masked):
    /// its pullback then skips the mask. Cleared as soon as anything else adds to that gradient.
    var premasked: [Bool] = []
    /// The node `gradients` started from (its gradient is the caller's seed).
    var gradientOutput = -1
    private var scratch: TensorStorage = TensorStorage.empty

    public init(mode: Mode = .inference) {
        self.mode = mode
    }

    /// Hands the buffers nobody else holds to the process-wide pool for the next tape.
    deinit {
        nodes.removeAll()
        grads.removeAll()
        var released: [TensorStorage] = []
        // Take each buffer out of its pool before asking whether anyone else holds it (a binding would count).
        func release(_ s: inout TensorStorage) {
            if s.capacity > 0 && isKnownUniquelyReferenced(&s) { released.append(s) }
        }
        while var s = valuePool.popLast() { release(&s) }
        for key in Array(gradFree.keys) {
            while var s = gradFree[key]?.popLast() { release(&s) }
        }
        while var s = gradLent.popLast() { release(&s) }
        for key in Array(savedPool.keys) {
            if var s = savedPool.removeValue(forKey: key) { release(&s) }
        }
        var s = TensorStorage.empty
        swap(&s, &scratch)
        release(&s)
        s = TensorStorage.empty
        swap(&s, &maskStorage)
        release(&s)
        BufferRecycler.shared.give(released)
    }

    /// Bytes of released tape buffers the process keeps for later tapes (the next batch of an attack); 0 turns
    /// the pool off and empties it. Default: the smaller of 2 GiB and a quarter of physical memory.
    ///
    /// The pool keeps buffers of 32 MiB and more (glibc maps and unmaps those on every allocation; it recycles
    /// smaller ones itself) that nobody else references. A tape that mostly does not find its sizes there frees
    /// pooled bytes as it allocates, so a change of shapes (a smaller last batch, another model) does not add the
    /// pool to the process's peak memory. Results do not depend on it (tested bit for bit).
    public static var recycledBytesLimit: Int {
        get { BufferRecycler.shared.limit }
        set { BufferRecycler.shared.setLimit(newValue) }
    }

    /// Frees every buffer in the process-wide pool now (it is also emptied after two idle seconds).
    public static func dropRecycledBuffers() { BufferRecycler.shared.drop() }

    /// The smallest buffer the pool keeps, in bytes: 32 MiB, glibc's largest mmap threshold on 64-bit. Smaller
    /// buffers come back from malloc's free lists without new page faults; larger ones glibc always maps and
    /// unmaps. Tests lower it to run the pool on small models. Setting it empties the pool.
    @_spi(Testing) public static var recycledMinimumBytes: Int {
        get { BufferRecycler.shared.minimum }
        set { BufferRecycler.shared.minimum = newValue }
    }

    /// The pool's counters since the process started (diagnostics and tests): buffers handed to a new tape,
    /// requests it could not serve, buffers and bytes it holds now.
    @_spi(Testing) public static var recyclerStatistics: (hits: Int, misses: Int, buffers: Int, bytes: Int) {
        BufferRecycler.shared.statistics
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

    /// Gradient buffers the tape holds for the next backward pass (diagnostics and tests).
    @_spi(Testing) public var freeGradientBuffers: Int { gradFree.values.reduce(0) { $0 + $1.count } }

    /// Buffers taken from a previous pass instead of allocated (diagnostics: an attack loop should reuse).
    @_spi(Testing) public private(set) var reusedBuffers = 0

    /// Buffers the tape has allocated (forward values, saved tensors, gradients, indices). Once a loop over the
    /// same graph is warm this stops growing: the loop allocates nothing per step (tested).
    @_spi(Testing) public private(set) var allocatedBuffers = 0

    /// Buffers this tape took from the process-wide pool (a released tape's) instead of allocating.
    @_spi(Testing) public private(set) var recycledBuffers = 0
    /// Buffers of a size the pool keeps that it could not supply.
    private var recycleMisses = 0

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
    /// `ahead`: for a kernel that makes the values of several nodes in one call, the buffer of the node that many
    /// places after the next one (each node keeps its own pooled buffer).
    func newValue(_ shape: Shape, ahead: Int = 0) -> Tensor {
        Tensor(shape: shape, storage: pooled(&valuePool, at: nodes.count + ahead, count: shape.count))
    }

    /// An extra buffer that the node about to be appended keeps for its pullback (probabilities, a mask):
    /// pooled like the forward values, under (node, slot).
    func newSaved(_ shape: Shape, slot: Int) -> Tensor {
        let key = nodes.count &* 4 &+ slot
        if var s = savedPool.removeValue(forKey: key) {
            let unique = isKnownUniquelyReferenced(&s)
            if s.capacity == shape.count && unique {
                savedPool[key] = s
                return Tensor(shape: shape, storage: s)
            }
            if unique && s.capacity > 0 { BufferRecycler.shared.give([s]) }
        }
        let s = fresh(shape.count)
        savedPool[key] = s
        return Tensor(shape: shape, storage: s)
    }

    private func pooled(_ pool: inout [TensorStorage], at i: Int, count: Int) -> TensorStorage {
        while pool.count <= i { pool.append(TensorStorage.empty) }
        if pool[i].capacity == count && isKnownUniquelyReferenced(&pool[i]) {
            reusedBuffers += 1
            return pool[i]
        }
        var old = fresh(count)
        swap(&old, &pool[i])
        // A buffer of another size that nobody holds goes to the process-wide pool (a tape switching between
        // batch sizes); one of this size is not unique, so the caller holds it and it is the caller's.
        if old.capacity > 0 && old.capacity != count && isKnownUniquelyReferenced(&old) { BufferRecycler.shared.give([old]) }
        return pool[i]
    }

    /// A buffer of exactly `count` floats that nobody else holds: a released tape's if the pool has one, else new.
    private func fresh(_ count: Int) -> TensorStorage {
        // A tape that misses more than twice as often as it hits (from its second miss on) runs other shapes than
        // the tapes before it: it frees pooled bytes as it allocates (a forward pass at another batch size has only
        // a handful of buffers this large). A tape of the same shapes misses an odd size (a buffer its caller kept)
        // without emptying the pool it is about to draw from.
        let recycler = BufferRecycler.shared
        if recycler.keeps(count) {
            let strayed = recycleMisses >= 1 && recycleMisses > 2 * recycledBuffers
            if let s = recycler.take(count, evictOnMiss: strayed) {
                recycledBuffers += 1
                return s
            }
            recycleMisses += 1
        }
        allocatedBuffers += 1
        return TensorStorage(capacity: count)
    }

    /// Replaces a growing scratch buffer, handing the outgrown one to the pool (the next tape grows through the
    /// same sizes, and finds them there).
    private func grow(_ buffer: inout TensorStorage, to count: Int) {
        var old = fresh(count)
        swap(&old, &buffer)
        if old.capacity > 0 && isKnownUniquelyReferenced(&old) { BufferRecycler.shared.give([old]) }
    }

    /// Argmax indices for the max-pool node about to be appended.
    func newIndices(count: Int, ahead: Int = 0) -> Int32Buffer {
        let i = nodes.count + ahead
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

    private var maskStorage = TensorStorage.empty

    /// A buffer for a masked upstream gradient (fused activations); valid until the next call.
    func maskScratch(_ shape: Shape) -> Tensor {
        if maskStorage.capacity < shape.count { grow(&maskStorage, to: shape.count) }
        return Tensor(shape: shape, storage: maskStorage)
    }

    /// Scratch memory for one kernel call (convolution's im2col); valid until the next call.
    func scratch(floats: Int) -> UnsafeMutablePointer<Float> {
        if scratch.capacity < floats { grow(&scratch, to: floats) }
        return scratch.pointer
    }

    // MARK: gradients

    /// The gradient of `output` with respect to `target`.
    ///
    /// `seed` is the upstream gradient (dL/d output); by default all ones, which for a vector of per-sample
    /// losses gives each sample the gradient of its own loss.
    public func gradient(of output: Variable, seed: Tensor? = nil, wrt target: Variable) -> Tensor {
        backward(from: output, seed: seed, targets: [target.index])
        let g = takeGradient(target)
        lend(g)
        grads.removeAll(keepingCapacity: true)
        return g
    }

    /// Gradients of `output` with respect to each of `targets`, in order. A target that `output` does not
    /// depend on gets zeros. Only the gradients on a path to a target are computed.
    public func gradients(of output: Variable, seed: Tensor? = nil, wrt targets: [Variable]) -> [Tensor] {
        backward(from: output, seed: seed, targets: targets.map(\.index))
        let gs = targets.map(takeGradient)
        gs.forEach(lend)
        grads.removeAll(keepingCapacity: true)
        return gs
    }

    /// The gradient left for `target` by the last backward pass (zeros when `output` does not depend on it).
    private func takeGradient(_ target: Variable) -> Tensor {
        if target.index < grads.count, let g = grads[target.index] { return g }
        return Tensor(zeros: nodes[target.index].value.shape)
    }

    /// Remembers a gradient buffer given to the caller, to take it back once the caller has let go of it.
    private func lend(_ g: Tensor) {
        if g.storage.capacity > 0 && !gradLent.contains(where: { $0 === g.storage }) { gradLent.append(g.storage) }
    }

    /// Runs the pullbacks from `output` back to the `targets`, leaving their gradients in `grads`.
    private func backward(from output: Variable, seed: Tensor?, targets: [Int]) {
        precondition(output.tape === self, "the output was recorded on another tape")
        let last = output.index
        gradientOutput = last
        seeded = seed != nil
        if let seed {
            precondition(seed.shape == output.shape,
                         "seed shape \(seed.shape) does not match the output's shape \(output.shape)")
        }
        // Which nodes lead to a target: a node needs its gradient if a target is among its ancestors.
        needs.removeAll(keepingCapacity: true)
        needs.append(contentsOf: repeatElement(false, count: last + 1))
        isTarget.removeAll(keepingCapacity: true)
        isTarget.append(contentsOf: repeatElement(false, count: last + 1))
        for t in targets where t <= last { needs[t] = true; isTarget[t] = true }
        reclaimLentGradients()
        gradSizesUsed.removeAll(keepingCapacity: true)
        defer { releaseUnusedGradientSizes() }
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
            if needs[i], grads[i] != nil {
                runPullback(i)
                // Nothing reads node i's gradient after its pullback: its buffer serves the next node that needs
                // one. Not a requested gradient, and not the caller's seed.
                if gradientIsDisposable(i) { recycleGradient(i) }
            }
            if i == 0 { break }
            i -= 1
        }
    }

    /// Node i's pullback, in a function of its own so that no binding of the upstream gradient outlives it (one
    /// would make the buffer look shared to `recycleGradient`).
    @inline(never)
    private func runPullback(_ i: Int) {
        backward(node: i, upstream: grads[i]!)
    }

    /// Whether node i's gradient is the tape's alone to reuse once node i's pullback has run: not a requested
    /// gradient and not the caller's seed.
    func gradientIsDisposable(_ i: Int) -> Bool {
        !isTarget[i] && !(i == gradientOutput && seeded)
    }

    /// Moves node i's gradient buffer to `gradFree` if nothing else holds it (a reshape's input may share it:
    /// then it goes when that node's does).
    private func recycleGradient(_ i: Int) {
        guard var s = grads[i]?.storage else { return }
        grads[i] = nil
        if s.capacity > 0 && isKnownUniquelyReferenced(&s) { gradFree[s.capacity, default: []].append(s) }
    }

    /// Hands the free gradient buffers of sizes this pass did not use to the process-wide pool (or frees them).
    private func releaseUnusedGradientSizes() {
        var released: [TensorStorage] = []
        for key in Array(gradFree.keys) where !gradSizesUsed.contains(key) {
            released += gradFree.removeValue(forKey: key) ?? []
        }
        BufferRecycler.shared.give(released)
    }

    /// Takes back the gradient buffers earlier passes returned and their callers have since dropped.
    private func reclaimLentGradients() {
        var k = 0
        while k < gradLent.count {
            if isKnownUniquelyReferenced(&gradLent[k]) {
                let s = gradLent.remove(at: k)
                gradFree[s.capacity, default: []].append(s)
            } else {
                k += 1
            }
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

    /// A gradient buffer for node i, its contents left as they are: one a finished pullback or an earlier pass
    /// freed (`gradFree`) when one of this size is there, else a new one.
    func gradBuffer(_ i: Int, _ shape: Shape) -> Tensor {
        let count = shape.count
        gradSizesUsed.insert(count)
        if let s = gradFree[count]?.popLast() {
            reusedBuffers += 1
            return Tensor(shape: shape, storage: s)
        }
        return Tensor(shape: shape, storage: fresh(count))
    }

    /// A pointer to node i's gradient accumulator, creating it zeroed; nil when node i needs no gradient.
    func gradPointer(_ i: Int) -> UnsafeMutablePointer<Float>? {
        guard needs[i] else { return nil }
        premasked[i] = false  // whatever the caller adds is not masked
        if let p = writableGradient(i) {
            p.initialize(repeating: 0, count: nodes[i].value.shape.count)
            return p
        }
        // Only the output node can hold the caller's seed, and nothing accumulates into the output.
        return grads[i]!.storage.pointer
    }

    /// Gives node i's gradient buffer to node x as its gradient (same shape), when node x needs one and has none
    /// yet and node i's is the tape's to reuse (`gradientIsDisposable`): the caller is node i's pullback, which then
    /// writes x's gradient over it (nothing reads node i's after its pullback). False: nothing was done.
    func handOverGradient(of i: Int, to x: Int) -> Bool {
        guard x < needs.count, needs[x], grads[x] == nil, gradientIsDisposable(i), let g = grads[i],
              g.shape == nodes[x].value.shape else { return false }
        grads[x] = g
        premasked[x] = false
        return true
    }

    /// A pointer to node i's gradient for a pullback that writes every element of it (not adds): a buffer with
    /// undefined contents when node i has none yet; nil when node i needs no gradient or already has one (then the
    /// caller adds instead: use `gradPointer`).
    func writableGradient(_ i: Int) -> UnsafeMutablePointer<Float>? {
        guard needs[i], grads[i] == nil else { return nil }
        let g = gradBuffer(i, nodes[i].value.shape)
        grads[i] = g
        premasked[i] = false
        lastGradientBuffers += 1
        return g.storage.pointer
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

extension TensorStorage {
    /// The placeholder of an empty pool slot: shared, so never uniquely referenced and never written.
    static let empty = TensorStorage(capacity: 0)
}

/// Released tape buffers, by size, for the next tape: the process-wide pool behind `Tape.recycledBytesLimit`.
///
/// Why: an attack builds a new tape per batch, and without the pool every forward value, gradient and saved
/// buffer of the batch's first step is a new allocation. glibc maps allocations at or above its mmap threshold and
/// unmaps them on free. The threshold rises with what is freed, so buffers under 32 MiB soon come from the heap
/// and are reused, but it never passes 32 MiB on 64-bit, and ResNet-18's first-stage activations at batch 128 are
/// 32 MiB: each batch and each pass faulted those in again, page by page (issue #18: a PGD-10 pass on 128 images
/// after the first took ~190k page faults, ~17k with the pool). Hence the 32 MiB minimum.
///
/// Only uniquely referenced buffers enter (a tape's deinit and outgrown slots check), and a taken buffer leaves the
/// pool, so a buffer is in one place at a time and copy-on-write holds. Contents are left as they were: tapes
/// write every element of a new value and zero gradients before accumulating, as they do when reusing their own
/// buffers between steps. Thread-safe: tapes on different threads share it under a lock.
final class BufferRecycler: @unchecked Sendable {
    static let shared = BufferRecycler()

    /// Seconds without a take or a give after which the pool frees everything.
    static let idleSeconds = 2.0

    private let lock = NSLock()
    private var free: [Int: [TensorStorage]] = [:]
    private var bytes = 0
    private var buffers = 0
    private var hits = 0
    private var misses = 0
    private var limitBytes: Int
    private var lastUse = DispatchTime.now()
    private var dropScheduled = false
    /// Buffers below this size are left to malloc.
    private var minimumBytes = 32 << 20

    init() {
        let quarter = Int(clamping: ProcessInfo.processInfo.physicalMemory / 4)
        limitBytes = min(2 << 30, quarter)
    }

    var limit: Int { lock.lock(); defer { lock.unlock() }; return limitBytes }

    var statistics: (hits: Int, misses: Int, buffers: Int, bytes: Int) {
        lock.lock(); defer { lock.unlock() }
        return (hits, misses, buffers, bytes)
    }

    func setLimit(_ newLimit: Int) {
        precondition(newLimit >= 0, "the recycled bytes limit must be >= 0, got \(newLimit)")
        var evicted: [TensorStorage] = []
        lock.lock()
        limitBytes = newLimit
        evict(downTo: newLimit, into: &evicted)
        lock.unlock()
        withExtendedLifetime(evicted) {}  // freed outside the lock
    }

    /// A pooled buffer of exactly `count` floats, or nil. With `evictOnMiss`, a miss frees at least as many pooled
    /// bytes as the caller is about to allocate, so shapes that changed do not hold the pool on top of new buffers.
    func take(_ count: Int, evictOnMiss: Bool) -> TensorStorage? {
        var evicted: [TensorStorage] = []
        lock.lock()
        guard limitBytes > 0 else { lock.unlock(); return nil }
        lastUse = DispatchTime.now()
        if let s = free[count]?.popLast() {
            if free[count]!.isEmpty { free[count] = nil }
            bytes -= Self.byteCount(s)
            buffers -= 1
            hits += 1
            lock.unlock()
            return s
        }
        misses += 1
        if evictOnMiss && bytes > 0 { evict(downTo: max(0, bytes - Self.byteCount(count)), into: &evicted) }
        lock.unlock()
        withExtendedLifetime(evicted) {}  // freed outside the lock
        return nil
    }

    /// Takes buffers that nobody else references (the caller checked). Keeps them within the limit.
    func give(_ storages: [TensorStorage]) {
        guard !storages.isEmpty else { return }
        var evicted: [TensorStorage] = []
        var schedule = false
        lock.lock()
        if limitBytes > 0 {
            for s in storages where Self.byteCount(s) >= minimumBytes && Self.byteCount(s) <= limitBytes {
                free[s.capacity, default: []].append(s)
                bytes += Self.byteCount(s)
                buffers += 1
            }
            evict(downTo: limitBytes, into: &evicted)
            lastUse = DispatchTime.now()
            if buffers > 0 && !dropScheduled { dropScheduled = true; schedule = true }
        }
        lock.unlock()
        withExtendedLifetime(evicted) {}
        if schedule { scheduleIdleCheck(after: Self.idleSeconds) }
    }

    /// Frees every pooled buffer.
    func drop() {
        var all: [Int: [TensorStorage]] = [:]
        lock.lock()
        swap(&all, &free)
        bytes = 0
        buffers = 0
        lock.unlock()
        withExtendedLifetime(all) {}
    }

    /// Removes the largest buffers until the pool holds at most `target` bytes (caller holds the lock; the buffers
    /// are freed when the caller lets go of `evicted`, after unlocking).
    private func evict(downTo target: Int, into evicted: inout [TensorStorage]) {
        while bytes > target, let size = free.keys.max() {
            var list = free[size]!
            let s = list.removeLast()
            free[size] = list.isEmpty ? nil : list
            bytes -= Self.byteCount(s)
            buffers -= 1
            evicted.append(s)
        }
    }

    private func scheduleIdleCheck(after seconds: Double) {
        DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + seconds) { [self] in
            var all: [Int: [TensorStorage]] = [:]
            var again: Double? = nil
            lock.lock()
            let idle = Double(DispatchTime.now().uptimeNanoseconds - lastUse.uptimeNanoseconds) / 1e9
            if idle >= Self.idleSeconds || buffers == 0 {
                swap(&all, &free)
                bytes = 0
                buffers = 0
                dropScheduled = false
            } else {
                again = Self.idleSeconds - idle
            }
            lock.unlock()
            withExtendedLifetime(all) {}
            if let again { scheduleIdleCheck(after: again) }
        }
    }

    /// Whether buffers of `count` floats go to the pool: only those glibc would map and unmap itself (see the
    /// type's comment); smaller ones come back from malloc's own free lists without new page faults.
    func keeps(_ count: Int) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return Self.byteCount(count) >= minimumBytes
    }

    var minimum: Int {
        get { lock.lock(); defer { lock.unlock() }; return minimumBytes }
        set {
            precondition(newValue >= 0, "the recycled buffers' minimum size must be >= 0, got \(newValue)")
            lock.lock(); minimumBytes = newValue; lock.unlock()
            drop()
        }
    }

    private static func byteCount(_ s: TensorStorage) -> Int { byteCount(s.capacity) }
    private static func byteCount(_ count: Int) -> Int { max(count, 1) * MemoryLayout<Float>.stride }
}
