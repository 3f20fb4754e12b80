import Foundation

// NumPy broadcasting on the tape (ONNX Add, Sub, Mul, Div, Expand), and the strided loop that every op in
// Broadcasting.swift, ShapeOps.swift and MatMul.swift walks its operands with.

// MARK: - Strided loops

/// The strides of a dense row-major array with these dimensions.
func contiguousStrides(_ dims: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: dims.count)
    var s = 1
    for i in stride(from: dims.count - 1, through: 0, by: -1) {
        strides[i] = s
        s *= dims[i]
    }
    return strides
}

/// The strides that read a dense array of dimensions `dims` as if it had dimensions `out` (NumPy broadcasting:
/// right-aligned, missing leading dimensions and dimensions of size 1 get stride 0). The caller has checked that
/// `dims` broadcasts to `out`.
func broadcastStrides(_ dims: [Int], to out: [Int]) -> [Int] {
    let own = contiguousStrides(dims)
    let lead = out.count - dims.count
    return (0..<out.count).map { i in
        i < lead || dims[i - lead] == 1 ? 0 : own[i - lead]
    }
}

/// Σₖ term(k) for k in 0..<n: eight independent float partial sums (so the adds pipeline instead of waiting on
/// one another), combined in Double.
@inline(__always)
func rowSum(_ n: Int, _ term: (Int) -> Float) -> Float {
    var lanes = SIMD8<Float>()
    var k = 0
    while k + 8 <= n {
        var v = SIMD8<Float>()
        for j in 0..<8 { v[j] = term(k + j) }
        lanes += v
        k += 8
    }
    var s = 0.0
    for j in 0..<8 { s += Double(lanes[j]) }
    while k < n {
        s += Double(term(k))
        k += 1
    }
    return Float(s)
}

/// A loop nest over up to three strided operands (strides and offsets in elements). The innermost dimension is
/// left to the caller as a row: `forEachRow` calls its body once per row with the three row-start offsets, and the
/// body runs a tight loop of `rowLength` elements with the strides `inner0`, `inner1`, `inner2`.
///
/// Dimensions of size 1 are dropped and adjacent dimensions merged wherever every operand steps through them as
/// one, so an equal-shape operation is a single row, [N,C,H,W] ⊕ [1,C,1,1] is N·C rows of H·W, and
/// NHWC [N,H,W,C] ⊕ [C] is N·H·W rows of C: no index arithmetic per element.
struct RowLoop {
    private(set) var dims: [Int]
    private(set) var strides0: [Int], strides1: [Int], strides2: [Int]
    let base0: Int, base1: Int, base2: Int

    init(dims: [Int], strides s0: [Int], _ s1: [Int], _ s2: [Int]? = nil, bases: (Int, Int, Int) = (0, 0, 0)) {
        let s2 = s2 ?? [Int](repeating: 0, count: dims.count)
        precondition(s0.count == dims.count && s1.count == dims.count && s2.count == dims.count,
                     "RowLoop: \(dims.count) dimensions but strides of \(s0.count), \(s1.count), \(s2.count)")
        var d: [Int] = [], a: [Int] = [], b: [Int] = [], c: [Int] = []
        for i in 0..<dims.count where dims[i] != 1 {
            let n = dims[i]
            if let last = d.last, a[a.count - 1] == s0[i] * n, b[b.count - 1] == s1[i] * n, c[c.count - 1] == s2[i] * n {
                // The outer dimension steps exactly over this one in every operand: one dimension of last·n.
                d[d.count - 1] = last * n
                a[a.count - 1] = s0[i]
                b[b.count - 1] = s1[i]
                c[c.count - 1] = s2[i]
            } else {
                d.append(n)
                a.append(s0[i])
                b.append(s1[i])
                c.append(s2[i])
            }
        }
        if d.isEmpty { (d, a, b, c) = ([1], [1], [1], [1]) }
        (self.dims, strides0, strides1, strides2) = (d, a, b, c)
        (base0, base1, base2) = bases
    }

    /// Elements in the innermost (merged) dimension.
    var rowLength: Int { dims[dims.count - 1] }
    var inner0: Int { strides0[strides0.count - 1] }
    var inner1: Int { strides1[strides1.count - 1] }
    var inner2: Int { strides2[strides2.count - 1] }

    /// Calls `body(offset0, offset1, offset2)` at the start of every row, outer dimensions in row-major order.
    @inline(__always)
    func forEachRow(_ body: (Int, Int, Int) -> Void) {
        forEachPrefix(dims.count - 1, body)
    }

    /// Calls `body(offset0, offset1, offset2)` for every index of the first `levels` dimensions (row-major).
    @inline(__always)
    func forEachPrefix(_ levels: Int, _ body: (Int, Int, Int) -> Void) {
        if dims.contains(0) { return }
        var count = 1
        for i in 0..<levels { count *= dims[i] }
        var index = [Int](repeating: 0, count: levels)
        var o0 = base0, o1 = base1, o2 = base2
        for _ in 0..<count {
            body(o0, o1, o2)
            var d = levels - 1
            while d >= 0 {
                index[d] += 1
                o0 += strides0[d]
                o1 += strides1[d]
                o2 += strides2[d]
                if index[d] < dims[d] { break }
                o0 -= strides0[d] * dims[d]
                o1 -= strides1[d] * dims[d]
                o2 -= strides2[d] * dims[d]
                index[d] = 0
                d -= 1
            }
        }
    }

    /// True when operand 1 runs along the last dimension with a large stride but is contiguous along the one before
    /// (a transpose of the last two dimensions, NCHW ↔ NHWC): row by row, every element would be a cache miss.
    private var transposedTail: Bool {
        let c = dims.count
        return c >= 2 && inner1 != 0 && inner1 != 1 && strides1[c - 2] == 1
    }

    /// Calls `body(offset0, offset1, count0, count1)` on 32×32 tiles of the last two dimensions: offsets of the
    /// tile's first element, its extent along the second-to-last and the last dimension.
    @inline(__always)
    private func forEachTile(_ body: (Int, Int, Int, Int) -> Void) {
        let c = dims.count, rows = dims[c - 2], n = dims[c - 1], tile = 32
        let r0 = strides0[c - 2], r1 = strides1[c - 2], s0 = inner0, s1 = inner1
        forEachPrefix(c - 2) { o0, o1, _ in
            for rb in stride(from: 0, to: rows, by: tile) {
                for kb in stride(from: 0, to: n, by: tile) {
                    body(o0 + rb * r0 + kb * s0, o1 + rb * r1 + kb * s1, Swift.min(tile, rows - rb), Swift.min(tile, n - kb))
                }
            }
        }
    }

    /// Calls `body(offset0, offset1, offset2)` for every element (for loops over matrices, not floats).
    func forEachElement(_ body: (Int, Int, Int) -> Void) {
        let n = rowLength, s0 = inner0, s1 = inner1, s2 = inner2
        forEachRow { o0, o1, o2 in
            for k in 0..<n { body(o0 + k * s0, o1 + k * s1, o2 + k * s2) }
        }
    }

    /// p0 ← scale·p1, or p0 += scale·p1 when `accumulate`, over every element. Operand 1 may have any stride, 0
    /// broadcasting one value over the row; operand 0 is dense in every use but a block of a larger output (concat).
    func gather(into p0: UnsafeMutablePointer<Float>, from p1: UnsafePointer<Float>, scale: Float = 1, accumulate: Bool) {
        let n = rowLength, s0 = inner0, s1 = inner1
        if transposedTail {
            let r0 = strides0[dims.count - 2]
            forEachTile { o0, o1, rows, cols in
                for r in 0..<rows {
                    let dst = p0 + o0 + r * r0, src = p1 + o1 + r
                    for k in 0..<cols { dst[k * s0] = (accumulate ? dst[k * s0] : 0) + scale * src[k * s1] }
                }
            }
            return
        }
        forEachRow { o0, o1, _ in
            let dst = p0 + o0, src = p1 + o1
            guard s0 == 1 else {
                for k in 0..<n { dst[k * s0] = (accumulate ? dst[k * s0] : 0) + scale * src[k * s1] }
                return
            }
            switch (s1, accumulate) {
            case (1, false):
                if scale == 1 { dst.update(from: src, count: n) } else { for k in 0..<n { dst[k] = scale * src[k] } }
            case (1, true): for k in 0..<n { dst[k] += scale * src[k] }
            case (0, false): dst.update(repeating: scale * src[0], count: n)
            case (0, true):
                let v = scale * src[0]
                for k in 0..<n { dst[k] += v }
            case (_, false): for k in 0..<n { dst[k] = scale * src[k * s1] }
            case (_, true): for k in 0..<n { dst[k] += scale * src[k * s1] }
            }
        }
    }

    /// p1 += scale·p0 over every element; where operand 1's inner stride is 0 a whole row of p0 is summed
    /// (`rowSum`) into one element of p1 (the pullback of a broadcast, the forward of a reduction).
    func scatterAdd(from p0: UnsafePointer<Float>, into p1: UnsafeMutablePointer<Float>, scale: Float = 1) {
        let n = rowLength, s0 = inner0, s1 = inner1
        if transposedTail {
            let r0 = strides0[dims.count - 2]
            forEachTile { o0, o1, rows, cols in
                for r in 0..<rows {
                    let src = p0 + o0 + r * r0, dst = p1 + o1 + r
                    for k in 0..<cols { dst[k * s1] += scale * src[k * s0] }
                }
            }
            return
        }
        forEachRow { o0, o1, _ in
            let src = p0 + o0, dst = p1 + o1
            switch (s0, s1) {
            case (1, 1): for k in 0..<n { dst[k] += scale * src[k] }
            case (1, 0): dst[0] += scale * rowSum(n) { src[$0] }
            case (_, 0): dst[0] += scale * rowSum(n) { src[$0 * s0] }
            case (1, _): for k in 0..<n { dst[k * s1] += scale * src[k] }
            default: for k in 0..<n { dst[k * s1] += scale * src[k * s0] }
            }
        }
    }
}

// MARK: - Broadcasting binary operations

extension Tape {
    /// The shape NumPy broadcasting gives two shapes: right-aligned, each dimension equal or 1 (ONNX's
    /// multidirectional broadcasting). Throws `AdvKitError.invalidData` naming both shapes when they do not broadcast.
    public static func broadcastShape(_ a: Shape, _ b: Shape) throws -> Shape {
        let r = Swift.max(a.rank, b.rank)
        var dims = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.rank ? 1 : a[i - (r - a.rank)]
            let db = i < r - b.rank ? 1 : b[i - (r - b.rank)]
            if da == db || db == 1 {
                dims[i] = da
            } else if da == 1 {
                dims[i] = db
            } else {
                throw AdvKitError.invalidData("shapes \(a) and \(b) do not broadcast: dimension \(i) of the result would be both \(da) and \(db)")
            }
        }
        return Shape(dims)
    }

    /// a + b with NumPy broadcasting (ONNX Add). ∂/∂a = g and ∂/∂b = g, each summed over the dimensions that
    /// operand was broadcast along. `add(_:_:)` is the equal-shape op the built-in layers use.
    public func broadcastAdd(_ a: Variable, _ b: Variable) -> Variable { broadcastBinary(a, b, .add) }

    /// a − b with NumPy broadcasting (ONNX Sub). ∂/∂a = g, ∂/∂b = −g, summed over broadcast dimensions.
    public func subtract(_ a: Variable, _ b: Variable) -> Variable { broadcastBinary(a, b, .subtract) }

    /// a ⊙ b with NumPy broadcasting (ONNX Mul; squeeze-and-excitation's [N,C,H,W]·[N,C,1,1]).
    /// ∂/∂a = g·b, ∂/∂b = g·a, summed over broadcast dimensions.
    public func multiply(_ a: Variable, _ b: Variable) -> Variable { broadcastBinary(a, b, .multiply) }

    /// a / b with NumPy broadcasting (ONNX Div). ∂/∂a = g/b, ∂/∂b = −g·a/b², summed over broadcast dimensions.
    public func divide(_ a: Variable, _ b: Variable) -> Variable { broadcastBinary(a, b, .divide) }

    enum BinaryOp: String { case add, subtract, multiply, divide }

    private func broadcastBinary(_ a: Variable, _ b: Variable, _ op: BinaryOp) -> Variable {
        let shape: Shape
        do { shape = try Tape.broadcastShape(a.shape, b.shape) } catch { preconditionFailure("\(op.rawValue): \(error)") }
        let dims = shape.dims
        // Operand 0 is the output (and its gradient), 1 is a, 2 is b.
        let loop = RowLoop(dims: dims, strides: contiguousStrides(dims), broadcastStrides(a.shape.dims, to: dims),
                           broadcastStrides(b.shape.dims, to: dims))
        let out = newValue(shape)
        let po = out.storage.pointer, pa = a.value.storage.pointer, pb = b.value.storage.pointer
        switch op {
        case .add: Tape.binaryRows(loop, po, pa, pb, +)
        case .subtract: Tape.binaryRows(loop, po, pa, pb, -)
        case .multiply: Tape.binaryRows(loop, po, pa, pb, *)
        case .divide: Tape.binaryRows(loop, po, pa, pb, /)
        }
        let ia = a.index, ib = b.index
        return custom([a, b], value: out) { [unowned self] g in
            let pg = g.storage.pointer
            let pa = self.nodes[ia].value.storage.pointer, pb = self.nodes[ib].value.storage.pointer
            if let da = self.gradPointer(ia) {
                switch op {
                case .add, .subtract: Tape.reduceRows(loop, into: da, operand: 1, g: pg, pa, pb) { g, _, _ in g }
                case .multiply: Tape.reduceRows(loop, into: da, operand: 1, g: pg, pa, pb) { g, _, y in g * y }
                case .divide: Tape.reduceRows(loop, into: da, operand: 1, g: pg, pa, pb) { g, _, y in g / y }
                }
            }
            if let db = self.gradPointer(ib) {
                switch op {
                case .add: Tape.reduceRows(loop, into: db, operand: 2, g: pg, pa, pb) { g, _, _ in g }
                case .subtract: Tape.reduceRows(loop, into: db, operand: 2, g: pg, pa, pb) { g, _, _ in -g }
                case .multiply: Tape.reduceRows(loop, into: db, operand: 2, g: pg, pa, pb) { g, x, _ in g * x }
                case .divide: Tape.reduceRows(loop, into: db, operand: 2, g: pg, pa, pb) { g, x, y in -g * x / (y * y) }
                }
            }
            return [nil, nil]
        }
    }

    /// out = f(a, b) row by row; each operand's inner stride is 1 or 0 (broadcast), so each case is a plain loop.
    @inline(__always)
    static func binaryRows(_ loop: RowLoop, _ po: UnsafeMutablePointer<Float>, _ pa: UnsafePointer<Float>,
                           _ pb: UnsafePointer<Float>, _ f: (Float, Float) -> Float) {
        let n = loop.rowLength, sa = loop.inner1, sb = loop.inner2
        loop.forEachRow { o, ia, ib in
            let out = po + o, x = pa + ia, y = pb + ib
            switch (sa != 0, sb != 0) {
            case (true, true): for k in 0..<n { out[k] = f(x[k], y[k]) }
            case (true, false):
                let v = y[0]
                for k in 0..<n { out[k] = f(x[k], v) }
            case (false, true):
                let u = x[0]
                for k in 0..<n { out[k] = f(u, y[k]) }
            case (false, false): out.update(repeating: f(x[0], y[0]), count: n)
            }
        }
    }

    /// The gradient of operand 1 (a) or 2 (b): d += f(g, a, b), summed (`rowSum`) over a row where d is broadcast.
    @inline(__always)
    static func reduceRows(_ loop: RowLoop, into d: UnsafeMutablePointer<Float>, operand: Int, g: UnsafePointer<Float>,
                           _ pa: UnsafePointer<Float>, _ pb: UnsafePointer<Float>, _ f: (Float, Float, Float) -> Float) {
        let n = loop.rowLength, sa = loop.inner1, sb = loop.inner2
        let dense = (operand == 1 ? sa : sb) != 0
        loop.forEachRow { o, ia, ib in
            let gg = g + o, x = pa + ia, y = pb + ib, dst = d + (operand == 1 ? ia : ib)
            switch (dense, sa != 0, sb != 0) {
            case (true, true, true): for k in 0..<n { dst[k] += f(gg[k], x[k], y[k]) }
            case (true, true, false):
                let v = y[0]
                for k in 0..<n { dst[k] += f(gg[k], x[k], v) }
            case (true, false, _):
                let u = x[0]
                for k in 0..<n { dst[k] += f(gg[k], u, y[k]) }
            case (false, true, true): dst[0] += rowSum(n) { f(gg[$0], x[$0], y[$0]) }
            case (false, true, false):
                let v = y[0]
                dst[0] += rowSum(n) { f(gg[$0], x[$0], v) }
            case (false, false, true):
                let u = x[0]
                dst[0] += rowSum(n) { f(gg[$0], u, y[$0]) }
            case (false, false, false):
                let u = x[0], v = y[0]
                dst[0] += rowSum(n) { f(gg[$0], u, v) }
            }
        }
    }

    // MARK: Expand

    /// The output shape of ONNX Expand: `x` broadcast with `shape` (both ways, as NumPy), so a 1 in `shape` keeps
    /// x's dimension. Throws `AdvKitError.invalidData` when they do not broadcast.
    public static func expandShape(_ x: Shape, to shape: Shape) throws -> Shape {
        try broadcastShape(x, shape)
    }

    /// x broadcast to `broadcastShape(x.shape, shape)`, copied (ONNX Expand). The pullback sums g over the
    /// dimensions x was broadcast along.
    public func expand(_ x: Variable, to shape: Shape) -> Variable {
        let outShape: Shape
        do { outShape = try Tape.expandShape(x.shape, to: shape) } catch { preconditionFailure("expand: \(error)") }
        let dims = outShape.dims
        let loop = RowLoop(dims: dims, strides: contiguousStrides(dims), broadcastStrides(x.shape.dims, to: dims))
        let out = newValue(outShape)
        loop.gather(into: out.storage.pointer, from: x.value.storage.pointer, accumulate: false)
        let ix = x.index
        return custom([x], value: out) { [unowned self] g in
            if let dx = self.gradPointer(ix) { loop.scatterAdd(from: g.storage.pointer, into: dx) }
            return [nil]
        }
    }
}
