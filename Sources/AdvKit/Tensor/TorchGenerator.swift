/// PyTorch's CPU random number generator (`torch.manual_seed(seed)` / `torch.Generator().manual_seed(seed)`):
/// the 32-bit Mersenne Twister (mt19937) with its standard seeding, drawn the way PyTorch draws it.
///
/// AdvKit initialises layers and shuffles training data with it, so `seed` means what it means in PyTorch: a
/// model built with seed 0 starts from the very weights `torch.manual_seed(0); Net()` gives (bit for bit, tested
/// against PyTorch 2.15), and `Trainer` visits the examples in the order of `torch.randperm(n, generator=g)`, epoch
/// after epoch. A training recipe written for PyTorch therefore starts from the same point here; the runs then part
/// only by floating-point summation order.
///
/// It is a serial generator (one draw after another): it serves initialisation and shuffling. Noise inside
/// attacks and defenses comes from the counter-based generator of the C kernels, which any thread count draws
/// identically (`Kernels.randomUniform`, `SeededGenerator`).
public struct TorchGenerator: RandomNumberGenerator, Sendable {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    /// The generator after `torch.manual_seed(seed)`. Like PyTorch, mt19937 keeps the seed's low 32 bits.
    public init(seed: UInt64) {
        state[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 {
            let p = state[i - 1]
            state[i] = 1_812_433_253 &* (p ^ (p >> 30)) &+ UInt32(i)
        }
    }

    /// The next 32-bit output (PyTorch's `CPUGeneratorImpl::random()`).
    public mutating func nextUInt32() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// 64 bits from two draws, as PyTorch's `random64()` forms them (the first draw is the high half).
    public mutating func next() -> UInt64 {
        let hi = UInt64(nextUInt32()), lo = UInt64(nextUInt32())
        return (hi << 32) | lo
    }

    /// One value of `tensor.uniform_(from, to)` on a float32 CPU tensor: 24 random bits of one draw scaled to
    /// [0, 1), then `x * (to - from) + from` with `from`, `to` and their difference in float and the rest in
    /// double, as PyTorch computes it.
    public mutating func uniform(from: Double, to: Double) -> Float {
        let lo = Float(from), hi = Float(to)
        let x = Float(nextUInt32() & 0xFF_FFFF) * (1 / Float(1 << 24))
        return Float(Double(x) * Double(hi - lo) + Double(lo))
    }

    /// `torch.randperm(n, generator=g)` on the CPU: a forward Fisher-Yates shuffle, one 32-bit draw per swap.
    public mutating func permutation(_ n: Int) -> [Int] {
        precondition(n >= 0 && n < Int(UInt32.max / 20), "permutation: n must be in 0..<\(UInt32.max / 20) (PyTorch draws 64 bits beyond)")
        var p = Array(0..<n)
        if n > 1 {
            for i in 0..<(n - 1) {
                let z = Int(nextUInt32() % UInt32(n - i))
                p.swapAt(i, i + z)
            }
        }
        return p
    }

    private mutating func twist() {
        for k in 0..<624 {
            let y = (state[k] & 0x8000_0000) | (state[(k + 1) % 624] & 0x7FFF_FFFF)
            state[k] = state[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1) != 0 ? 0x9908_B0DF : 0)
        }
        index = 0
    }
}
