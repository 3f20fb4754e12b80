

/// A seeded random number generator for initialisation and shuffling: the counter-based generator of the
/// C kernels, drawn in sequence. The same seed gives the same numbers on every machine and thread count.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public let seed: UInt64
    public let stream: UInt64
    private var counter: UInt64 = 0

    public init(seed: UInt64, stream: UInt64 = 0) {
        self.seed = seed
        self.stream = stream
    }

    public mutating func next() -> UInt64 {
        defer { counter &+= 1 }
        return Kernels.randomU64(seed: seed, stream: stream, counter: counter)
    }

    /// Uniform in [0, 1) with 24 random bits.
    public mutating func nextUniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }
}
