import Foundation

// Element-wise arithmetic and reductions. These are plain loops over contiguous memory, which the Swift
// optimiser vectorises; the heavy kernels live in CKernels.
extension Tensor {
    @inline(__always)
    func zipMap(_ other: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
        precondition(shape == other.shape, "shapes \(shape) and \(other.shape) differ")
        let out = Tensor(uninitialized: shape)
        let a = storage.pointer, b = other.storage.pointer, o = out.storage.pointer
        for i in 0..<count { o[i] = f(a[i], b[i]) }
        return out
    }

    /// The tensor with `f` applied to every element.
    public func map(_ f: (Float) -> Float) -> Tensor {
        let out = Tensor(uninitialized: shape)
        let a = storage.pointer, o = out.storage.pointer
        for i in 0..<count { o[i] = f(a[i]) }
        return out
    }

    public static func + (a: Tensor, b: Tensor) -> Tensor { a.zipMap(b, +) }
    public static func - (a: Tensor, b: Tensor) -> Tensor { a.zipMap(b, -) }
    public static func * (a: Tensor, b: Tensor) -> Tensor { a.zipMap(b, *) }
    public static func * (a: Tensor, s: Float) -> Tensor { a.map { $0 * s } }
    public static func * (s: Float, a: Tensor) -> Tensor { a.map { $0 * s } }
    public static func + (a: Tensor, s: Float) -> Tensor { a.map { $0 + s } }
    public static prefix func - (a: Tensor) -> Tensor { a.map { -$0 } }

    /// self += other, in place.
    public static func += (a: inout Tensor, b: Tensor) {
        precondition(a.shape == b.shape, "shapes \(a.shape) and \(b.shape) differ")
        a.makeUnique()
        let p = a.storage.pointer, q = b.storage.pointer
        for i in 0..<a.count { p[i] += q[i] }
    }

    /// self += s * other, in place.
    public mutating func add(_ other: Tensor, scaledBy s: Float) {
        precondition(shape == other.shape, "shapes \(shape) and \(other.shape) differ")
        makeUnique()
        let p = storage.pointer, q = other.storage.pointer
        for i in 0..<count { p[i] += s * q[i] }
    }

    /// Every element clamped to [lo, hi].
    public func clamped(to lo: Float, _ hi: Float) -> Tensor { map { Swift.min(Swift.max($0, lo), hi) } }

    /// Sum of all elements, accumulated in Double.
    public func sum() -> Float {
        withUnsafeBufferPointer { p in Float(p.reduce(0.0) { $0 + Double($1) }) }
    }

    public func mean() -> Float { count == 0 ? 0 : sum() / Float(count) }
    public func max() -> Float { withUnsafeBufferPointer { $0.max() ?? -.infinity } }
    public func min() -> Float { withUnsafeBufferPointer { $0.min() ?? .infinity } }

    /// Largest absolute value.
    public func maxAbs() -> Float { withUnsafeBufferPointer { $0.reduce(0) { Swift.max($0, abs($1)) } } }

    /// True when no element is NaN or infinite.
    public var isFinite: Bool { withUnsafeBufferPointer { !$0.contains { !$0.isFinite } } }

    /// For each row of a (N, K) tensor (or each item of the first dimension), the index of the largest element
    /// (the first one on ties).
    public func argmaxRows() -> [Int] {
        let n = shape.rank == 0 ? 1 : shape[0], k = shape.itemCount
        let p = storage.pointer
        var out = [Int](repeating: 0, count: n)
        for i in 0..<n {
            var best = 0
            var bestValue = p[i * k]
            for j in 1..<Swift.max(k, 1) where p[i * k + j] > bestValue {
                best = j
                bestValue = p[i * k + j]
            }
            out[i] = best
        }
        return out
    }

    /// Row `i` of a (N, K) tensor as an array.
    public func row(_ i: Int) -> [Float] {
        let k = shape.itemCount
        precondition(i >= 0 && i < shape[0], "row \(i) out of range for shape \(shape)")
        return Array(UnsafeBufferPointer(start: storage.pointer + i * k, count: k))
    }
}
