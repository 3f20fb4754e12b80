import Foundation

// Element-wise activations on the tape (the ONNX operators of imported classifiers), each forward beside its
// pullback. At kinks the gradient follows PyTorch's autograd, so a model exported from PyTorch and imported here
// gives the attack the gradient PyTorch would.
//
// Math functions that Foundation also defines (exp, tanh, sqrt) have spelled-out names here: a `Tape.exp` method
// would shadow Foundation's `exp` inside every `extension Tape` (KL.swift uses it).

extension Tape {
    /// y = f(x) element-wise into a pooled output buffer.
    @inline(__always)
    private func mapValue(_ x: Variable, _ f: (Float) -> Float) -> Tensor {
        let out = newValue(x.shape)
        let p = out.storage.pointer, q = x.value.storage.pointer
        for i in 0..<out.count { p[i] = f(q[i]) }
        return out
    }

    /// Records y with a pullback dx += d(g, x, y) element-wise (x the input's value, y the output).
    @inline(__always)
    private func recordUnary(_ x: Variable, _ y: Tensor,
                             _ d: @escaping (_ g: Float, _ x: Float, _ y: Float) -> Float) -> Variable {
        let ix = x.index
        return custom([x], value: y) { [unowned self] g in
            guard let dx = self.gradPointer(ix) else { return [nil] }
            let pg = g.storage.pointer, px = self.nodes[ix].value.storage.pointer, py = y.storage.pointer
            for i in 0..<g.count { dx[i] += d(pg[i], px[i], py[i]) }
            return [nil]
        }
    }

    /// y = 1 / (1 + e^(−x)) (ONNX Sigmoid); dy/dx = y(1 − y).
    public func sigmoid(_ x: Variable) -> Variable {
        let y = mapValue(x) { v in
            // Stable on both sides: e^(−|x|) never overflows.
            let e = Foundation.exp(-Swift.abs(v))
            return v >= 0 ? 1 / (1 + e) : e / (1 + e)
        }
        return recordUnary(x, y) { g, _, y in g * y * (1 - y) }
    }

    /// y = tanh(x) (ONNX Tanh); dy/dx = 1 − y².
    public func hyperbolicTangent(_ x: Variable) -> Variable {
        let y = mapValue(x) { Foundation.tanh($0) }
        return recordUnary(x, y) { g, _, y in g * (1 - y * y) }
    }

    /// y = x for x ≥ 0, α·x otherwise (ONNX LeakyRelu, default α = 0.01). dy/dx = 1 for x > 0 and α for x ≤ 0
    /// (PyTorch's leaky_relu_backward: α at 0).
    public func leakyReLU(_ x: Variable, alpha: Float = 0.01) -> Variable {
        let y = mapValue(x) { $0 >= 0 ? $0 : alpha * $0 }
        return recordUnary(x, y) { g, x, _ in x > 0 ? g : alpha * g }
    }

    /// y = max(0, min(1, α·x + β)) (ONNX HardSigmoid, default α = 0.2, β = 0.5; PyTorch's hardsigmoid exports with
    /// α = 1/6). dy/dx = α strictly inside (0 < α·x + β < 1) and 0 elsewhere, bounds included, as PyTorch's
    /// hardsigmoid_backward (gradient only for −3 < x < 3).
    public func hardSigmoid(_ x: Variable, alpha: Float = 0.2, beta: Float = 0.5) -> Variable {
        let y = mapValue(x) { Swift.max(0, Swift.min(1, alpha * $0 + beta)) }
        return recordUnary(x, y) { g, _, y in y > 0 && y < 1 ? alpha * g : 0 }
    }

    /// y = x · max(0, min(1, x/6 + 1/2)) (ONNX HardSwish; Howard et al. 2019, MobileNetV3).
    /// dy/dx = 0 for x ≤ −3, x/3 + 1/2 for −3 < x < 3, 1 for x ≥ 3: PyTorch's hardswish_backward, whose current
    /// kernels take the outer piece's slope at both kinks (older CPU kernels gave −1/2 at −3 and 3/2 at 3).
    public func hardSwish(_ x: Variable) -> Variable {
        let y = mapValue(x) { $0 * Swift.max(0, Swift.min(1, $0 / 6 + 0.5)) }
        return recordUnary(x, y) { g, x, _ in
            x <= -3 ? 0 : (x < 3 ? g * (x / 3 + 0.5) : g)
        }
    }

    /// y = min(max(x, lo), hi) (ONNX Clip; ReLU6 is clip 0…6), either bound optional; with lo > hi every element
    /// is hi, as ONNX specifies. dy/dx = 1 where lo ≤ x ≤ hi, bounds included, as PyTorch's clamp_backward; note that
    /// torch.nn.ReLU6 (hardtanh) passes no gradient at exactly 0 or 6, while its ONNX export (Clip) does here.
    public func clip(_ x: Variable, min lo: Float? = nil, max hi: Float? = nil) -> Variable {
        let l = lo ?? -.infinity, h = hi ?? .infinity
        let y = mapValue(x) { Swift.min(Swift.max($0, l), h) }
        return recordUnary(x, y) { g, x, _ in x >= l && x <= h ? g : 0 }
    }

    /// y = −x (ONNX Neg); dy/dx = −1.
    public func negate(_ x: Variable) -> Variable {
        let y = mapValue(x) { -$0 }
        return recordUnary(x, y) { g, _, _ in -g }
    }

    /// y = eˣ (ONNX Exp); dy/dx = y.
    public func exponential(_ x: Variable) -> Variable {
        let y = mapValue(x) { Foundation.exp($0) }
        return recordUnary(x, y) { g, _, y in g * y }
    }

    /// y = √x (ONNX Sqrt; NaN for x < 0); dy/dx = 1/(2y), infinite at 0 as in PyTorch.
    public func squareRoot(_ x: Variable) -> Variable {
        let y = mapValue(x) { $0.squareRoot() }
        return recordUnary(x, y) { g, _, y in g / (2 * y) }
    }

    // MARK: softmax

    /// (outer, length, inner) of `shape` around `axis` (negative counts from the end).
    static func axisSplit(_ shape: Shape, axis: Int, _ op: String) -> (outer: Int, length: Int, inner: Int) {
        let a = axis < 0 ? axis + shape.rank : axis
        precondition(a >= 0 && a < shape.rank, "\(op): axis \(axis) out of range for shape \(shape)")
        var outer = 1, inner = 1
        for i in 0..<a { outer *= shape[i] }
        for i in (a + 1)..<shape.rank { inner *= shape[i] }
        return (outer, shape[a], inner)
    }

    /// yᵢ = e^(xᵢ − max x) / Σⱼ e^(xⱼ − max x) along `axis` (ONNX Softmax, opset 13: one axis, default −1).
    /// ∂L/∂xᵢ = yᵢ (gᵢ − Σⱼ gⱼ yⱼ).
    public func softmax(_ x: Variable, axis: Int = -1) -> Variable {
        let (outer, len, inner) = Tape.axisSplit(x.shape, axis: axis, "softmax")
        let out = newValue(x.shape)
        Tape.softmaxRows(out.storage.pointer, x.value.storage.pointer, outer, len, inner, log: false)
        let ix = x.index
        return custom([x], value: out) { [unowned self] g in
            guard let dx = self.gradPointer(ix) else { return [nil] }
            let pg = g.storage.pointer, py = out.storage.pointer
            for o in 0..<outer {
                for i in 0..<inner {
                    let base = o * len * inner + i
                    var dot = 0.0
                    for k in 0..<len { dot += Double(pg[base + k * inner]) * Double(py[base + k * inner]) }
                    let d = Float(dot)
                    for k in 0..<len {
                        let j = base + k * inner
                        dx[j] += py[j] * (pg[j] - d)
                    }
                }
            }
            return [nil]
        }
    }

    /// yᵢ = xᵢ − max x − log Σⱼ e^(xⱼ − max x) along `axis` (ONNX LogSoftmax, opset 13). ∂L/∂xᵢ = gᵢ − e^(yᵢ) Σⱼ gⱼ.
    public func logSoftmax(_ x: Variable, axis: Int = -1) -> Variable {
        let (outer, len, inner) = Tape.axisSplit(x.shape, axis: axis, "logSoftmax")
        let out = newValue(x.shape)
        Tape.softmaxRows(out.storage.pointer, x.value.storage.pointer, outer, len, inner, log: true)
        let ix = x.index
        return custom([x], value: out) { [unowned self] g in
            guard let dx = self.gradPointer(ix) else { return [nil] }
            let pg = g.storage.pointer, py = out.storage.pointer
            for o in 0..<outer {
                for i in 0..<inner {
                    let base = o * len * inner + i
                    var sum = 0.0
                    for k in 0..<len { sum += Double(pg[base + k * inner]) }
                    let s = Float(sum)
                    for k in 0..<len {
                        let j = base + k * inner
                        dx[j] += pg[j] - Foundation.exp(py[j]) * s
                    }
                }
            }
            return [nil]
        }
    }

    /// Softmax or log-softmax of every (outer, ·, inner) fibre of length `len`, sums in Double.
    private static func softmaxRows(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ outer: Int,
                                    _ len: Int, _ inner: Int, log: Bool) {
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * len * inner + i
                var m = -Float.infinity
                for k in 0..<len { m = Swift.max(m, x[base + k * inner]) }
                var sum = 0.0
                for k in 0..<len { sum += Double(Foundation.exp(x[base + k * inner] - m)) }
                if log {
                    let lse = m + Float(Foundation.log(sum))
                    for k in 0..<len { out[base + k * inner] = x[base + k * inner] - lse }
                } else {
                    let r = 1 / sum
                    for k in 0..<len { out[base + k * inner] = Float(Double(Foundation.exp(x[base + k * inner] - m)) * r) }
                }
            }
        }
    }
}
