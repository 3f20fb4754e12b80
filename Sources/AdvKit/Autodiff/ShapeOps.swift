import Foundation

// Shape operations on the tape (ONNX Transpose, Concat, Pad, Slice, ReduceSum, ReduceMean, Squeeze, Unsqueeze):
// values are copied through a strided `RowLoop`, and each pullback walks the same loop the other way, adding the
// upstream gradient into the input's. Every op has a static throwing shape function, so an importer can validate
// a graph before recording it; the recording methods treat a bad shape as a programmer error.
//
// Ranks are limited by `Shape.maxRank` (4): the code below is rank-generic and takes larger ranks once Shape does.

extension Tape {
    // MARK: Transpose

    /// The shape of `transpose(x, permutation:)`: dimension i of the result is dimension permutation[i] of x.
    /// A nil permutation reverses the dimensions (ONNX's default).
    public static func transposeShape(_ x: Shape, permutation: [Int]?) throws -> Shape {
        let perm = permutation ?? Array((0..<x.rank).reversed())
        guard perm.count == x.rank, perm.sorted() == Array(0..<x.rank) else {
            throw AdvKitError.invalidData("transpose: \(perm) is not a permutation of the \(x.rank) dimensions of \(x)")
        }
        return Shape(perm.map { x[$0] })
    }

    /// y[i₀, …] = x[i at the permuted positions]: out.dims[i] = x.dims[permutation[i]] (ONNX Transpose; nil reverses
    /// the dimensions). The pullback adds g transposed back.
    public func transpose(_ x: Variable, permutation: [Int]? = nil) -> Variable {
        let shape: Shape
        do { shape = try Tape.transposeShape(x.shape, permutation: permutation) } catch { preconditionFailure("\(error)") }
        let perm = permutation ?? Array((0..<x.shape.rank).reversed())
        let inStrides = contiguousStrides(x.shape.dims), dims = shape.dims
        // Operand 0 walks the output densely, operand 1 the input with its strides in the output's order.
        let loop = RowLoop(dims: dims, strides: contiguousStrides(dims), perm.map { inStrides[$0] })
        return copyThrough(loop, x, shape)
    }

    /// Records out ← x through `loop` (operand 0 the dense output, operand 1 the input) with pullback dx += g
    /// through the same loop.
    private func copyThrough(_ loop: RowLoop, _ x: Variable, _ shape: Shape) -> Variable {
        let out = newValue(shape)
        loop.gather(into: out.storage.pointer, from: x.value.storage.pointer, accumulate: false)
        let ix = x.index
        return custom([x], value: out) { [unowned self] g in
            if let dx = self.gradPointer(ix) { loop.scatterAdd(from: g.storage.pointer, into: dx) }
            return [nil]
        }
    }

    // MARK: Concat

    /// The shape of `concat(_:axis:)`: equal ranks, equal dimensions except along `axis` (negative counts from the end).
    public static func concatShape(_ shapes: [Shape], axis: Int) throws -> Shape {
        guard let first = shapes.first else { throw AdvKitError.invalidData("concat: no inputs") }
        let a = axis < 0 ? axis + first.rank : axis
        guard a >= 0 && a < first.rank else {
            throw AdvKitError.invalidData("concat: axis \(axis) out of range for shape \(first)")
        }
        var dims = first.dims
        for s in shapes.dropFirst() {
            guard s.rank == first.rank, (0..<s.rank).allSatisfy({ $0 == a || s[$0] == first[$0] }) else {
                throw AdvKitError.invalidData("concat: shape \(s) does not match \(first) outside axis \(a)")
            }
            dims[a] += s[a]
        }
        return Shape(dims)
    }

    /// The inputs joined along `axis` (ONNX Concat, any number of inputs); each input's gradient is its block of g.
    public func concat(_ xs: [Variable], axis: Int) -> Variable {
        let shape: Shape
        do { shape = try Tape.concatShape(xs.map(\.shape), axis: axis) } catch { preconditionFailure("\(error)") }
        let a = axis < 0 ? axis + shape.rank : axis
        let outStrides = contiguousStrides(shape.dims)
        // One loop per input: operand 0 the input's block of the output, operand 1 the (dense) input.
        var loops: [RowLoop] = []
        var offset = 0
        for x in xs {
            let dims = x.shape.dims
            loops.append(RowLoop(dims: dims, strides: outStrides, contiguousStrides(dims), bases: (offset * outStrides[a], 0, 0)))
            offset += dims[a]
        }
        let out = newValue(shape)
        for (x, loop) in zip(xs, loops) {
            loop.gather(into: out.storage.pointer, from: x.value.storage.pointer, accumulate: false)
        }
        let indices = xs.map(\.index)
        return custom(xs, value: out) { [unowned self] g in
            for (ix, loop) in zip(indices, loops) {
                guard let dx = self.gradPointer(ix) else { continue }
                // dx += g's block: operand 0 (the block of g) is the source, operand 1 (dx) the destination.
                loop.scatterAdd(from: g.storage.pointer, into: dx)
            }
            return [Tensor?](repeating: nil, count: indices.count)
        }
    }

    // MARK: Pad

    /// The shape of `pad(_:begins:ends:value:)`: dimension i grows by begins[i] + ends[i] (negative values crop).
    public static func padShape(_ x: Shape, begins: [Int], ends: [Int]) throws -> Shape {
        guard begins.count == x.rank, ends.count == x.rank else {
            throw AdvKitError.invalidData("pad: \(begins.count) begins and \(ends.count) ends for the \(x.rank) dimensions of \(x)")
        }
        let dims = (0..<x.rank).map { x[$0] + begins[$0] + ends[$0] }
        guard dims.allSatisfy({ $0 >= 0 }) else {
            throw AdvKitError.invalidData("pad: begins \(begins) and ends \(ends) crop \(x) below zero size")
        }
        return Shape(dims)
    }

    /// Constant padding (ONNX Pad, mode "constant"): `begins[i]` values before and `ends[i]` after dimension i,
    /// each set to `value`; a negative count crops that many elements instead (ONNX allows it). The pullback adds
    /// the part of g that lies over x.
    public func pad(_ x: Variable, begins: [Int], ends: [Int], value: Float = 0) -> Variable {
        let shape: Shape
        do { shape = try Tape.padShape(x.shape, begins: begins, ends: ends) } catch { preconditionFailure("\(error)") }
        let inDims = x.shape.dims, outStrides = contiguousStrides(shape.dims), inStrides = contiguousStrides(inDims)
        // The part of x that survives: input indices lo..<hi along each dimension, at lo + begins in the output.
        var box: [Int] = [], outBase = 0, inBase = 0
        for i in 0..<inDims.count {
            let lo = Swift.max(0, -begins[i]), hi = Swift.min(inDims[i], inDims[i] + ends[i])
            box.append(Swift.max(0, hi - lo))
            outBase += (lo + begins[i]) * outStrides[i]
            inBase += lo * inStrides[i]
        }
        let loop = RowLoop(dims: box, strides: outStrides, inStrides, bases: (outBase, inBase, 0))
        let out = newValue(shape)
        out.storage.pointer.update(repeating: value, count: shape.count)
        loop.gather(into: out.storage.pointer, from: x.value.storage.pointer, accumulate: false)
        let ix = x.index
        return custom([x], value: out) { [unowned self] g in
            if let dx = self.gradPointer(ix) { loop.scatterAdd(from: g.storage.pointer, into: dx) }
            return [nil]
        }
    }

    // MARK: Slice

    /// Per dimension of x: the first index taken, the step, and how many are taken.
    struct SlicePlan {
        var starts: [Int], steps: [Int], counts: [Int]
    }

    /// ONNX Slice's index arithmetic (opset 13): negative starts and ends count from the end of their dimension, then
    /// are clamped to [0, dim] for a positive step and to [0, dim − 1] (start) and [−1, dim − 1] (end) for a negative
    /// one, so INT64_MAX / INT64_MIN ends mean "to the end" / "to the beginning". Axes default to 0..<starts.count,
    /// steps to 1; a step of 0 or a repeated axis throws.
    static func slicePlan(_ x: Shape, starts: [Int], ends: [Int], axes: [Int]?, steps: [Int]?) throws -> SlicePlan {
        let axes = axes ?? Array(0..<starts.count), steps = steps ?? [Int](repeating: 1, count: starts.count)
        guard ends.count == starts.count, axes.count == starts.count, steps.count == starts.count else {
            throw AdvKitError.invalidData("slice: \(starts.count) starts, \(ends.count) ends, \(axes.count) axes and \(steps.count) steps differ in number")
        }
        var plan = SlicePlan(starts: [Int](repeating: 0, count: x.rank), steps: [Int](repeating: 1, count: x.rank), counts: x.dims)
        var seen = Set<Int>()
        for k in 0..<starts.count {
            let axis = axes[k] < 0 ? axes[k] + x.rank : axes[k]
            guard axis >= 0 && axis < x.rank else {
                throw AdvKitError.invalidData("slice: axis \(axes[k]) out of range for shape \(x)")
            }
            guard seen.insert(axis).inserted else { throw AdvKitError.invalidData("slice: axis \(axis) given twice in \(axes)") }
            let step = steps[k], dim = x[axis]
            guard step != 0 else { throw AdvKitError.invalidData("slice: step 0 along axis \(axis)") }
            var start = starts[k], end = ends[k]
            if start < 0 { start += dim }
            if end < 0 { end += dim }
            let count: Int
            if step > 0 {
                start = Swift.min(Swift.max(start, 0), dim)
                end = Swift.min(Swift.max(end, 0), dim)
                count = end > start ? (end - start + step - 1) / step : 0
            } else {
                start = Swift.min(Swift.max(start, 0), dim - 1)
                end = Swift.min(Swift.max(end, -1), dim - 1)
                count = dim > 0 && start > end ? (start - end - step - 1) / -step : 0
            }
            plan.starts[axis] = count > 0 ? start : 0
            plan.steps[axis] = step
            plan.counts[axis] = count
        }
        return plan
    }

    /// The shape of `slice(_:starts:ends:axes:steps:)` (see `slicePlan` for ONNX's rules).
    public static func sliceShape(_ x: Shape, starts: [Int], ends: [Int], axes: [Int]? = nil, steps: [Int]? = nil) throws -> Shape {
        Shape(try slicePlan(x, starts: starts, ends: ends, axes: axes, steps: steps).counts)
    }

    /// y = x[start:end:step] along the given axes (ONNX Slice, opset 13: negative indices, clamping, INT64_MAX ends,
    /// negative steps). The pullback adds g into the sliced positions of x's gradient.
    public func slice(_ x: Variable, starts: [Int], ends: [Int], axes: [Int]? = nil, steps: [Int]? = nil) -> Variable {
        let plan: SlicePlan
        do { plan = try Tape.slicePlan(x.shape, starts: starts, ends: ends, axes: axes, steps: steps) } catch {
            preconditionFailure("\(error)")
        }
        let inStrides = contiguousStrides(x.shape.dims)
        var base = 0
        for i in 0..<inStrides.count { base += plan.starts[i] * inStrides[i] }
        let loop = RowLoop(dims: plan.counts, strides: contiguousStrides(plan.counts),
                           (0..<inStrides.count).map { plan.steps[$0] * inStrides[$0] }, bases: (0, base, 0))
        return copyThrough(loop, x, Shape(plan.counts))
    }

    // MARK: Reductions

    /// The reduced axes (sorted, non-negative) and the output shape of a reduction over `axes` (nil or empty: all,
    /// ONNX's default with noop_with_empty_axes = 0), keeping reduced dimensions as 1 when `keepDims` (ONNX's default).
    static func reducePlan(_ x: Shape, axes: [Int]?, keepDims: Bool) throws -> (axes: [Int], shape: Shape) {
        var reduced = Set<Int>()
        for a in axes ?? [] {
            let b = a < 0 ? a + x.rank : a
            guard b >= 0 && b < x.rank else { throw AdvKitError.invalidData("reduce: axis \(a) out of range for shape \(x)") }
            guard reduced.insert(b).inserted else { throw AdvKitError.invalidData("reduce: axis \(b) given twice in \(axes ?? [])") }
        }
        if reduced.isEmpty { reduced = Set(0..<x.rank) }
        var dims: [Int] = []
        for i in 0..<x.rank {
            if !reduced.contains(i) { dims.append(x[i]) } else if keepDims { dims.append(1) }
        }
        return (reduced.sorted(), Shape(dims))
    }

    /// The shape of `reduceSum`/`reduceMean` over `axes`.
    public static func reduceShape(_ x: Shape, axes: [Int]?, keepDims: Bool = true) throws -> Shape {
        try reducePlan(x, axes: axes, keepDims: keepDims).shape
    }

    /// y = Σ x over `axes` (ONNX ReduceSum; nil or empty axes reduce everything). ∂L/∂x = g broadcast back.
    public func reduceSum(_ x: Variable, axes: [Int]? = nil, keepDims: Bool = true) -> Variable {
        reduce(x, axes: axes, keepDims: keepDims, mean: false)
    }

    /// y = (1/n) Σ x over `axes`, n the number of elements reduced into each output (ONNX ReduceMean;
    /// global average pooling is axes [2, 3]). ∂L/∂x = g/n broadcast back.
    public func reduceMean(_ x: Variable, axes: [Int]? = nil, keepDims: Bool = true) -> Variable {
        reduce(x, axes: axes, keepDims: keepDims, mean: true)
    }

    private func reduce(_ x: Variable, axes: [Int]?, keepDims: Bool, mean: Bool) -> Variable {
        let plan: (axes: [Int], shape: Shape)
        do { plan = try Tape.reducePlan(x.shape, axes: axes, keepDims: keepDims) } catch { preconditionFailure("\(error)") }
        let dims = x.shape.dims
        var kept = dims, n = 1
        for a in plan.axes {
            kept[a] = 1
            n *= dims[a]
        }
        let scale: Float = mean ? 1 / Float(Swift.max(n, 1)) : 1
        // Operand 0 walks x densely, operand 1 the output with stride 0 along the reduced axes.
        let loop = RowLoop(dims: dims, strides: contiguousStrides(dims), broadcastStrides(kept, to: dims))
        let out = newValue(plan.shape)
        out.storage.pointer.update(repeating: 0, count: out.count)
        loop.scatterAdd(from: x.value.storage.pointer, into: out.storage.pointer, scale: scale)
        let ix = x.index
        return custom([x], value: out) { [unowned self] g in
            if let dx = self.gradPointer(ix) {
                loop.gather(into: dx, from: g.storage.pointer, scale: scale, accumulate: true)
            }
            return [nil]
        }
    }

    // MARK: Squeeze, unsqueeze

    /// The shape of `squeeze(_:axes:)`: the listed dimensions (each of size 1) removed; nil removes every 1.
    public static func squeezeShape(_ x: Shape, axes: [Int]?) throws -> Shape {
        guard let axes else { return Shape(x.dims.filter { $0 != 1 }) }
        var drop = Set<Int>()
        for a in axes {
            let b = a < 0 ? a + x.rank : a
            guard b >= 0 && b < x.rank, x[b] == 1 else {
                throw AdvKitError.invalidData("squeeze: axis \(a) of \(x) is not a dimension of size 1")
            }
            drop.insert(b)
        }
        return Shape((0..<x.rank).filter { !drop.contains($0) }.map { x[$0] })
    }

    /// The shape of `unsqueeze(_:axes:)`: a 1 inserted at each of `axes`, which index the output (ONNX Unsqueeze-13).
    public static func unsqueezeShape(_ x: Shape, axes: [Int]) throws -> Shape {
        let rank = x.rank + axes.count
        guard rank <= Shape.maxRank else {
            throw AdvKitError.invalidData("unsqueeze: \(x) with axes \(axes) would have rank \(rank); AdvKit supports up to \(Shape.maxRank)")
        }
        var ones = Set<Int>()
        for a in axes {
            let b = a < 0 ? a + rank : a
            guard b >= 0 && b < rank, ones.insert(b).inserted else {
                throw AdvKitError.invalidData("unsqueeze: axis \(a) out of range or repeated for output rank \(rank)")
            }
        }
        var dims: [Int] = [], next = 0
        for i in 0..<rank {
            if ones.contains(i) { dims.append(1) } else { dims.append(x[next]); next += 1 }
        }
        return Shape(dims)
    }

    /// x without the listed size-1 dimensions (ONNX Squeeze): a reshape, no copy.
    public func squeeze(_ x: Variable, axes: [Int]? = nil) -> Variable {
        do { return reshape(x, try Tape.squeezeShape(x.shape, axes: axes)) } catch { preconditionFailure("\(error)") }
    }

    /// x with size-1 dimensions inserted at `axes` (ONNX Unsqueeze): a reshape, no copy.
    public func unsqueeze(_ x: Variable, axes: [Int]) -> Variable {
        do { return reshape(x, try Tape.unsqueezeShape(x.shape, axes: axes)) } catch { preconditionFailure("\(error)") }
    }
}
