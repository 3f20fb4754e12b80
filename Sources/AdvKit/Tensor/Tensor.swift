import Foundation

/// Heap storage of a tensor: a 64-byte aligned buffer of Float (aligned for AVX-512 loads).
@usableFromInline
final class TensorStorage {
    @usableFromInline let pointer: UnsafeMutablePointer<Float>
    @usableFromInline let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1) * MemoryLayout<Float>.stride,
                                                   alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(capacity, 1))
    }

    func copy() -> TensorStorage {
        let s = TensorStorage(capacity: capacity)
        s.pointer.update(from: pointer, count: capacity)
        return s
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}

/// A dense Float32 tensor in row-major (NCHW) order with value semantics: copies share storage until one of
/// them is written (copy-on-write).
///
/// ```swift
/// var x = Tensor(zeros: [2, 1, 28, 28])
/// x[0, 0, 3, 4] = 0.5
/// let y = x          // shares storage
/// x[0, 0, 0, 0] = 1  // x copies its storage here; y is unchanged
/// ```
public struct Tensor: @unchecked Sendable {
    @usableFromInline var storage: TensorStorage
    public private(set) var shape: Shape

    /// Number of elements.
    public var count: Int { shape.count }

    init(shape: Shape, storage: TensorStorage) {
        precondition(storage.capacity >= shape.count)
        self.shape = shape
        self.storage = storage
    }

    /// A tensor whose elements are not initialised: the caller writes every one.
    init(uninitialized shape: Shape) {
        self.init(shape: shape, storage: TensorStorage(capacity: shape.count))
    }

    public init(zeros shape: Shape) {
        self.init(repeating: 0, shape: shape)
    }

    public init(repeating value: Float, shape: Shape) {
        self.init(uninitialized: shape)
        storage.pointer.initialize(repeating: value, count: shape.count)
    }

    /// A tensor from elements in row-major order.
    public init(_ values: [Float], shape: Shape) {
        precondition(values.count == shape.count, "\(values.count) values do not fill shape \(shape)")
        self.init(uninitialized: shape)
        values.withUnsafeBufferPointer { storage.pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    /// A rank-1 tensor.
    public init(_ values: [Float]) { self.init(values, shape: [values.count]) }

    /// A scalar (rank 0).
    public init(scalar: Float) { self.init([scalar], shape: Shape([])) }

    /// 8-bit images scaled to [0, 1] (x / 255), as the IDX and CIFAR-10 loaders and torchvision do.
    public init(bytes: [UInt8], shape: Shape) {
        precondition(bytes.count == shape.count, "\(bytes.count) bytes do not fill shape \(shape)")
        self.init(uninitialized: shape)
        let p = storage.pointer
        for i in 0..<bytes.count { p[i] = Float(bytes[i]) / 255 }
    }

    /// The elements in row-major order.
    public var scalars: [Float] { withUnsafeBufferPointer { Array($0) } }

    /// The single element of a one-element tensor.
    public var scalar: Float {
        precondition(count == 1, "scalar of a tensor with shape \(shape)")
        return storage.pointer[0]
    }

    /// Images as bytes: round(clamp(x, 0, 1) * 255).
    public var bytes: [UInt8] {
        withUnsafeBufferPointer { p in p.map { UInt8((Swift.min(Swift.max($0, 0), 1) * 255).rounded()) } }
    }

    // MARK: storage access

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer, count: count))
    }

    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        makeUnique()
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    @inline(__always) mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) { makeUniqueSlow() }
    }

    @inline(never) mutating func makeUniqueSlow() { storage = storage.copy() }

    /// True when this tensor and `other` share one buffer (copy-on-write has not split them).
    public func sharesStorage(with other: Tensor) -> Bool { storage === other.storage }

    // MARK: shape

    /// The same elements under another shape with the same count.
    public func reshaped(_ newShape: Shape) -> Tensor {
        precondition(newShape.count == count, "cannot reshape \(shape) (\(count) elements) to \(newShape)")
        return Tensor(shape: newShape, storage: storage)
    }

    /// Items [range] of the first dimension (a slice of the batch), copied.
    public func batch(_ range: Range<Int>) -> Tensor {
        precondition(shape.rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "batch \(range) out of range for shape \(shape)")
        let per = shape.itemCount
        let out = Tensor(uninitialized: shape.withBatch(range.count))
        out.storage.pointer.update(from: storage.pointer + range.lowerBound * per, count: range.count * per)
        return out
    }

    /// Items at `indices` of the first dimension, in that order (a shuffled minibatch).
    public func gather(_ indices: [Int]) -> Tensor {
        let per = shape.itemCount
        let out = Tensor(uninitialized: shape.withBatch(indices.count))
        for (j, i) in indices.enumerated() {
            precondition(i >= 0 && i < shape[0], "index \(i) out of range for shape \(shape)")
            (out.storage.pointer + j * per).update(from: storage.pointer + i * per, count: per)
        }
        return out
    }

    /// Tensors joined along the first dimension.
    public static func concatenate(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty, "concatenate needs at least one tensor")
        let first = parts[0].shape
        var n = 0
        for p in parts {
            precondition(p.shape.rank == first.rank && p.shape.itemCount == first.itemCount,
                         "concatenate: shape \(p.shape) does not match \(first)")
            n += p.shape[0]
        }
        let out = Tensor(uninitialized: first.withBatch(n))
        var offset = 0
        for p in parts {
            (out.storage.pointer + offset).update(from: p.storage.pointer, count: p.count)
            offset += p.count
        }
        return out
    }

    // MARK: elements

    func flatIndex(_ idx: [Int]) -> Int {
        precondition(idx.count == shape.rank, "index \(idx) has the wrong rank for shape \(shape)")
        var flat = 0
        for (axis, i) in idx.enumerated() {
            precondition(i >= 0 && i < shape[axis], "index \(idx) out of range for shape \(shape)")
            flat = flat * shape[axis] + i
        }
        return flat
    }

    public subscript(_ idx: Int...) -> Float {
        get { storage.pointer[flatIndex(idx)] }
        set {
            makeUnique()
            storage.pointer[flatIndex(idx)] = newValue
        }
    }
}

extension Tensor: Equatable {
    /// Same shape and the same elements (NaN never equals NaN).
    public static func == (a: Tensor, b: Tensor) -> Bool {
        guard a.shape == b.shape else { return false }
        if a.storage === b.storage { return !a.withUnsafeBufferPointer { $0.contains { $0.isNaN } } }
        return a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in pa.elementsEqual(pb) } }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let shown = withUnsafeBufferPointer { $0.prefix(8).map { String(format: "%.4g", $0) } }
        return "Tensor(\(shape): \(shown.joined(separator: ", "))\(count > 8 ? ", ..." : ""))"
    }
}

extension Tensor {
    /// A tensor as plain Codable data (shape and values), for small results kept as JSON.
    public struct Record: Codable, Equatable, Sendable {
        public var shape: [Int]
        public var values: [Float]

        public init(shape: [Int], values: [Float]) {
            self.shape = shape
            self.values = values
        }

        /// Decoding checks that the values fill the shape, so a damaged file fails here rather than later.
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            shape = try c.decode([Int].self, forKey: .shape)
            values = try c.decode([Float].self, forKey: .values)
            guard (1...4).contains(shape.count), shape.allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }),
                  shape.reduce(1, { $0 &* $1 }) == values.count else {
                throw DecodingError.dataCorruptedError(forKey: .values, in: c,
                                                       debugDescription: "\(values.count) values do not fill the shape \(shape)")
            }
        }
    }

    public var record: Record { Record(shape: shape.dims, values: scalars) }

    /// The tensor a record holds (a decoded record always fills its shape).
    public init(_ record: Record) {
        self.init(record.values, shape: Shape(record.shape))
    }
}
