/// The shape of a tensor: up to four dimensions (NCHW), stored inline so that making a tensor does not
/// allocate an array for its shape (an attack's inner loop makes many).
public struct Shape: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
    public static let maxRank = 4
    private var d0 = 0, d1 = 0, d2 = 0, d3 = 0
    /// Number of dimensions (0 for a scalar).
    public private(set) var rank: Int

    public init(_ dims: [Int]) {
        precondition(dims.count <= Shape.maxRank, "Shape supports at most \(Shape.maxRank) dimensions, got \(dims)")
        precondition(dims.allSatisfy { $0 >= 0 }, "dimensions must be >= 0, got \(dims)")
        rank = dims.count
        for (i, d) in dims.enumerated() { self[i] = d }
    }

    public init(arrayLiteral elements: Int...) { self.init(elements) }

    // Fixed-arity initialisers: no array, so no heap allocation (hot paths make shapes every step).
    public init(_ d0: Int) { rank = 1; self.d0 = d0 }
    public init(_ d0: Int, _ d1: Int) { rank = 2; self.d0 = d0; self.d1 = d1 }
    public init(_ d0: Int, _ d1: Int, _ d2: Int) { rank = 3; self.d0 = d0; self.d1 = d1; self.d2 = d2 }
    public init(_ d0: Int, _ d1: Int, _ d2: Int, _ d3: Int) { rank = 4; self.d0 = d0; self.d1 = d1; self.d2 = d2; self.d3 = d3 }
    /// A scalar's shape.
    public static let scalar = Shape([])

    public subscript(i: Int) -> Int {
        get {
            precondition(i >= 0 && i < rank, "dimension \(i) out of range for rank \(rank)")
            switch i { case 0: return d0; case 1: return d1; case 2: return d2; default: return d3 }
        }
        set {
            switch i { case 0: d0 = newValue; case 1: d1 = newValue; case 2: d2 = newValue; default: d3 = newValue }
        }
    }

    public var dims: [Int] { (0..<rank).map { self[$0] } }

    /// Number of elements (1 for a scalar).
    public var count: Int {
        var c = 1
        for i in 0..<rank { c *= self[i] }
        return c
    }

    /// Elements per item of the first dimension (a sample's size for NCHW).
    public var itemCount: Int { rank == 0 ? 1 : (self[0] == 0 ? count(from: 1) : count / self[0]) }

    func count(from start: Int) -> Int {
        var c = 1
        for i in start..<rank { c *= self[i] }
        return c
    }

    /// This shape with its first dimension replaced.
    public func withBatch(_ n: Int) -> Shape {
        var s = self
        s[0] = n
        return s
    }

    public var description: String { "[" + dims.map(String.init).joined(separator: ", ") + "]" }
}
