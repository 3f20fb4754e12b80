import Foundation

/// What a node did, with exactly what its pullback needs. A closed set keeps recording free of closure
/// allocations; `custom` is the escape hatch for anything else.
enum Op {
    case leaf
    case conv2d(input: Int, weight: Int, bias: Int?, stride: Int, padding: Int, activation: FusedActivation)
    case linear(input: Int, weight: Int, bias: Int?, activation: FusedActivation)
    case relu(Int)
    case boundedReLU(Int, bound: Float)
    case maxPool(Int, argmax: Int32Buffer, kernel: Int, stride: Int)
    case avgPool(Int, kernel: Int, stride: Int)
    /// ONNX's Conv, MaxPool and AveragePool in their general forms (Geometry.swift); the plain cases record the
    /// ops above instead.
    case conv2dGeneral(input: Int, weight: Int, bias: Int?, geometry: Conv2DGeometry, activation: FusedActivation)
    case maxPoolGeneral(Int, argmax: Int32Buffer, geometry: Pool2DGeometry)
    case avgPoolGeneral(Int, geometry: Pool2DGeometry, countIncludePad: Bool)
    case reshape(Int)
    case add(Int, Int)
    case scale(Int, Float)
    case multiply(Int, by: Tensor)
    case batchNorm(input: Int, gamma: Int, beta: Int, xhat: Tensor, invstd: Tensor)
    case crossEntropy(logits: Int, probs: Tensor, labels: [Int32], smoothing: Float)
    case softCrossEntropy(logits: Int, probs: Tensor, target: Tensor)
    case squaredError(Int, target: Tensor)
    case sum(Int)
    case mean(Int)
    case custom(inputs: [Int], pullback: (Tensor) -> [Tensor?])

    /// The activation fused into this node's epilogue (conv2d and linear), nil for other ops.
    var fusedActivation: FusedActivation? {
        switch self {
        case let .conv2d(_, _, _, _, _, activation), let .linear(_, _, _, activation),
             let .conv2dGeneral(_, _, _, _, activation):
            return activation
        default: return nil
        }
    }

    func anyInput(where pred: (Int) -> Bool) -> Bool {
        switch self {
        case .leaf: return false
        case let .conv2d(x, w, b, _, _, _): return pred(x) || pred(w) || (b.map(pred) ?? false)
        case let .conv2dGeneral(x, w, b, _, _): return pred(x) || pred(w) || (b.map(pred) ?? false)
        case let .linear(x, w, b, _): return pred(x) || pred(w) || (b.map(pred) ?? false)
        case let .batchNorm(x, g, b, _, _): return pred(x) || pred(g) || pred(b)
        case let .add(a, b): return pred(a) || pred(b)
        case let .relu(x), let .boundedReLU(x, _), let .maxPool(x, _, _, _), let .avgPool(x, _, _),
             let .maxPoolGeneral(x, _, _), let .avgPoolGeneral(x, _, _),
             let .reshape(x), let .scale(x, _), let .multiply(x, _), let .squaredError(x, _), let .sum(x),
             let .mean(x):
            return pred(x)
        case let .crossEntropy(x, _, _, _), let .softCrossEntropy(x, _, _): return pred(x)
        case let .custom(inputs, _): return inputs.contains(where: pred)
        }
    }
}

// MARK: - Forward operations

extension Tape {
    private func check(_ v: Variable) {
        precondition(v.tape === self, "a variable from another tape was used")
    }

    /// 2-D convolution: input (N,C,H,W), weight (OC,C,KH,KW), bias (OC). Zero padding. `activation` is applied
    /// in the kernel's epilogue (one pass over the output instead of two).
    public func conv2d(_ x: Variable, weight: Variable, bias: Variable?, stride: Int = 1, padding: Int = 0,
                       activation: FusedActivation = .none) -> Variable {
        checkConv(x, weight: weight, bias: bias, stride: stride, padding: padding)
        let xs = x.shape, ws = weight.shape
        let s = Kernels.convShape(xs, ws, stride: stride, padding: padding)
        var out = newValue(Shape(xs[0], ws[0], s.OH, s.OW))
        let work = scratch(floats: Kernels.convWorkspaceFloats(s))
        Kernels.convForward(out: &out, workspace: work, input: x.value, weight: weight.value, bias: bias?.value, shape: s,
                            activation: activation)
        return append(out, .conv2d(input: x.index, weight: weight.index, bias: bias?.index, stride: stride,
                                   padding: padding, activation: activation))
    }

    /// conv2d's checks (programmer errors: the layers and the ONNX importer validate first).
    private func checkConv(_ x: Variable, weight: Variable, bias: Variable?, stride: Int, padding: Int) {
        check(x); check(weight)
        let xs = x.shape, ws = weight.shape
        precondition(xs.rank == 4 && ws.rank == 4 && xs[1] == ws[1],
                     "conv2d: input \(xs) does not match weight \(ws) (want (N,\(ws.rank == 4 ? ws[1] : 0),H,W))")
        precondition(stride >= 1 && padding >= 0, "conv2d: stride must be >= 1 and padding >= 0")
        precondition(xs[2] + 2 * padding >= ws[2] && xs[3] + 2 * padding >= ws[3],
                     "conv2d: input \(xs) is smaller than the kernel \(ws)")
        if let bias { precondition(bias.shape == [ws[0]], "conv2d: bias \(bias.shape) must be [\(ws[0])]") }
    }

    /// `maxPool2d(conv2d(x, ...), kernel: 2, stride: 2)` in one kernel call: the same two nodes on the tape (the
    /// convolution's output, then the pool's), the same values, indices and gradients; each image is pooled while
    /// its convolution output is still in cache where the convolution runs image by image. `Sequential` takes it
    /// for a Conv2D (with its fused activation) followed by a 2x2 stride-2 MaxPool2D.
    public func conv2dMaxPool2x2(_ x: Variable, weight: Variable, bias: Variable?, stride: Int = 1, padding: Int = 0,
                                 activation: FusedActivation = .none) -> Variable {
        checkConv(x, weight: weight, bias: bias, stride: stride, padding: padding)
        let xs = x.shape, ws = weight.shape
        let s = Kernels.convShape(xs, ws, stride: stride, padding: padding)
        guard s.OH >= 2 && s.OW >= 2 else {
            return maxPool2d(conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding,
                                    activation: activation), kernel: 2, stride: 2)
        }
        var out = newValue(Shape(xs[0], ws[0], s.OH, s.OW))
        var pooled = newValue(Shape(xs[0], ws[0], s.OH / 2, s.OW / 2), ahead: 1)  // the pool's node comes second
        let arg = newIndices(count: pooled.count, ahead: 1)
        let work = scratch(floats: Kernels.convWorkspaceFloats(s))
        Kernels.convForwardMaxPool2x2(out: &out, pooled: &pooled, argmax: arg.pointer, workspace: work,
                                      input: x.value, weight: weight.value, bias: bias?.value, shape: s,
                                      activation: activation)
        let conv = append(out, .conv2d(input: x.index, weight: weight.index, bias: bias?.index, stride: stride,
                                       padding: padding, activation: activation))
        return append(pooled, .maxPool(conv.index, argmax: arg, kernel: 2, stride: 2))
    }

    /// y = act(x Wᵀ + b): input (N,IN), weight (OUT,IN), bias (OUT); the activation is fused into the epilogue.
    public func linear(_ x: Variable, weight: Variable, bias: Variable?, activation: FusedActivation = .none) -> Variable {
        check(x); check(weight)
        let xs = x.shape, ws = weight.shape
        precondition(xs.rank == 2 && ws.rank == 2 && xs[1] == ws[1],
                     "linear: input \(xs) does not match weight \(ws) (want (N,\(ws.rank == 2 ? ws[1] : 0)))")
        if let bias { precondition(bias.shape == [ws[0]], "linear: bias \(bias.shape) must be [\(ws[0])]") }
        var out = newValue(Shape(xs[0], ws[0]))
        Kernels.linearForward(out: &out, input: x.value, weight: weight.value, bias: bias?.value, activation: activation)
        return append(out, .linear(input: x.index, weight: weight.index, bias: bias?.index, activation: activation))
    }

    /// max(x, 0)
    public func relu(_ x: Variable) -> Variable {
        check(x)
        var out = newValue(x.shape)
        Kernels.relu(out: &out, input: x.value)
        return append(out, .relu(x.index))
    }

    /// min(max(x, 0), t): the bounded ReLU of Zantedeschi et al. 2017.
    public func boundedReLU(_ x: Variable, bound t: Float) -> Variable {
        check(x)
        precondition(t > 0, "boundedReLU: the bound must be > 0, got \(t)")
        var out = newValue(x.shape)
        Kernels.boundedReLU(out: &out, input: x.value, bound: t)
        return append(out, .boundedReLU(x.index, bound: t))
    }

    /// Max pooling over k×k windows (no padding); stride defaults to k.
    public func maxPool2d(_ x: Variable, kernel k: Int, stride: Int? = nil) -> Variable {
        check(x)
        let st = stride ?? k
        precondition(x.shape.rank == 4 && k >= 1 && st >= 1 && x.shape[2] >= k && x.shape[3] >= k,
                     "maxPool2d: kernel \(k) stride \(st) does not fit input \(x.shape)")
        let s = Kernels.poolShape(x.shape, kernel: k, stride: st)
        var out = newValue(Shape(s.N, s.C, s.OH, s.OW))
        let arg = newIndices(count: out.count)
        Kernels.maxPoolForward(out: &out, argmax: arg.pointer, input: x.value, shape: s)
        return append(out, .maxPool(x.index, argmax: arg, kernel: k, stride: st))
    }

    /// Average pooling over k×k windows (no padding); stride defaults to k.
    public func avgPool2d(_ x: Variable, kernel k: Int, stride: Int? = nil) -> Variable {
        check(x)
        let st = stride ?? k
        precondition(x.shape.rank == 4 && k >= 1 && st >= 1 && x.shape[2] >= k && x.shape[3] >= k,
                     "avgPool2d: kernel \(k) stride \(st) does not fit input \(x.shape)")
        let s = Kernels.poolShape(x.shape, kernel: k, stride: st)
        var out = newValue(Shape(s.N, s.C, s.OH, s.OW))
        Kernels.avgPoolForward(out: &out, input: x.value, shape: s)
        return append(out, .avgPool(x.index, kernel: k, stride: st))
    }

    /// General 2-D convolution (ONNX's Conv): input (N,C,H,W), weight (OC, C/groups, KH, KW), bias (OC),
    ///
    ///     out[n,o,y,x] = act(b[o] + Σ_{c,i,j} w[o,c,i,j] · in[n, g·C/G + c, y·s_h + i·d_h − top, x·s_w + j·d_w − left])
    ///
    /// with g = o / (OC/G) the filter's group and zero padding. The plain geometry (groups 1, dilation 1, one stride,
    /// equal padding on all sides) records the fast `conv2d(_:weight:bias:stride:padding:)` node itself; groups == C
    /// takes direct depthwise loops (Howard et al. 2017, MobileNets). `geometry.validate` is the importer's check;
    /// here a mismatch is a programmer error.
    public func conv2d(_ x: Variable, weight: Variable, bias: Variable?, geometry g: Conv2DGeometry,
                       activation: FusedActivation = .none) -> Variable {
        check(x); check(weight)
        if let bias { check(bias) }
        let xs = x.shape, ws = weight.shape
        do { try g.validate(input: xs, weight: ws, bias: bias?.shape) } catch { preconditionFailure("conv2d: \(error)") }
        if let p = g.plain {
            return conv2d(x, weight: weight, bias: bias, stride: p.stride, padding: p.padding, activation: activation)
        }
        let s = Kernels.convGeneralShape(xs, ws, g)
        var out = newValue(Shape(xs[0], ws[0], s.OH, s.OW))
        let work = scratch(floats: Kernels.convGeneralWorkspaceFloats(s, weightGradient: false))
        Kernels.convGeneralForward(out: &out, workspace: work, input: x.value, weight: weight.value, bias: bias?.value,
                                   shape: s, activation: activation)
        return append(out, .conv2dGeneral(input: x.index, weight: weight.index, bias: bias?.index, geometry: g,
                                          activation: activation))
    }

    /// Max pooling (ONNX's MaxPool, PyTorch's MaxPool2d): out = the max of each window's taps inside the input
    /// (padding never wins); ties go to the first in row-major order. The plain geometry (square window, one
    /// stride, no padding or dilation, floor-sized output) records the existing `maxPool2d(_:kernel:stride:)` node.
    public func maxPool2d(_ x: Variable, geometry g: Pool2DGeometry) -> Variable {
        check(x)
        do { try g.validate(input: x.shape) } catch { preconditionFailure("maxPool2d: \(error)") }
        if let p = g.plain(input: x.shape) { return maxPool2d(x, kernel: p.kernel, stride: p.stride) }
        let s = Kernels.poolGeneralShape(x.shape, g)
        var out = newValue(Shape(s.N, s.C, s.OH, s.OW))
        let arg = newIndices(count: out.count)
        Kernels.maxPoolGeneralForward(out: &out, argmax: arg.pointer, input: x.value, shape: s)
        return append(out, .maxPoolGeneral(x.index, argmax: arg, geometry: g))
    }

    /// Average pooling (ONNX's AveragePool, PyTorch's AvgPool2d): out = (Σ of the window's taps inside the input) /
    /// count, where count is the number of those taps, or with `countIncludePad` of the taps inside input + padding
    /// (PyTorch's default count_include_pad=True exports as 1; in ceil mode a window running past the padded input
    /// counts only its part inside, as PyTorch does). The plain geometry records the existing `avgPool2d` node.
    public func avgPool2d(_ x: Variable, geometry g: Pool2DGeometry, countIncludePad: Bool) -> Variable {
        check(x)
        do { try g.validate(input: x.shape) } catch { preconditionFailure("avgPool2d: \(error)") }
        if let p = g.plain(input: x.shape) { return avgPool2d(x, kernel: p.kernel, stride: p.stride) }
        let s = Kernels.poolGeneralShape(x.shape, g)
        var out = newValue(Shape(s.N, s.C, s.OH, s.OW))
        Kernels.avgPoolGeneralForward(out: &out, input: x.value, shape: s, countIncludePad: countIncludePad)
        return append(out, .avgPoolGeneral(x.index, geometry: g, countIncludePad: countIncludePad))
    }

    /// (N,C,H,W) -> (N,C,1,1): the mean of each plane (ONNX's GlobalAveragePool).
    public func globalAvgPool2d(_ x: Variable) -> Variable {
        check(x)
        precondition(x.shape.rank == 4 && x.shape[2] >= 1 && x.shape[3] >= 1,
                     "globalAvgPool2d: the input must be (N,C,H,W), got \(x.shape)")
        return avgPool2d(x, geometry: Pool2DGeometry(kernel: (x.shape[2], x.shape[3]), strides: (1, 1)),
                         countIncludePad: false)
    }

    /// The same values under another shape (no copy).
    public func reshape(_ x: Variable, _ shape: Shape) -> Variable {
        check(x)
        return append(x.value.reshaped(shape), .reshape(x.index))
    }

    /// (N, ...) -> (N, rest)
    public func flatten(_ x: Variable) -> Variable {
        reshape(x, Shape(x.shape[0], x.shape.itemCount))
    }

    public func add(_ a: Variable, _ b: Variable) -> Variable {
        check(a); check(b)
        precondition(a.shape == b.shape, "add: shapes \(a.shape) and \(b.shape) differ")
        let out = newValue(a.shape)
        let p = out.storage.pointer, q = a.value.storage.pointer, r = b.value.storage.pointer
        for i in 0..<out.count { p[i] = q[i] + r[i] }
        return append(out, .add(a.index, b.index))
    }

    public func scale(_ x: Variable, by s: Float) -> Variable {
        check(x)
        let out = newValue(x.shape)
        let p = out.storage.pointer, q = x.value.storage.pointer
        for i in 0..<out.count { p[i] = q[i] * s }
        return append(out, .scale(x.index, s))
    }

    /// x ⊙ m for a constant tensor m (a dropout mask).
    public func multiply(_ x: Variable, by m: Tensor) -> Variable {
        check(x)
        precondition(x.shape == m.shape, "multiply: shapes \(x.shape) and \(m.shape) differ")
        let out = newValue(x.shape)
        let p = out.storage.pointer, q = x.value.storage.pointer, r = m.storage.pointer
        for i in 0..<out.count { p[i] = q[i] * r[i] }
        return append(out, .multiply(x.index, by: m))
    }

    /// Batch normalisation with batch statistics (training mode): input (N,C,H,W) or (N,C).
    /// Returns the output and the batch mean and biased variance (for the running statistics).
    func batchNormTraining(_ x: Variable, gamma: Variable, beta: Variable, eps: Float) -> (Variable, mean: Tensor, variance: Tensor) {
        check(x)
        let c = x.shape[1]
        var out = newValue(x.shape)
        var xhat = newSaved(x.shape, slot: 0)
        var mean = Tensor(uninitialized: [c]), invstd = Tensor(uninitialized: [c])
        Kernels.batchNormTrain(out: &out, xhat: &xhat, mean: &mean, invstd: &invstd, input: x.value,
                               gamma: gamma.value, beta: beta.value, eps: eps)
        let variance = invstd.map { 1 / ($0 * $0) - eps }
        let v = append(out, .batchNorm(input: x.index, gamma: gamma.index, beta: beta.index, xhat: xhat, invstd: invstd))
        return (v, mean, variance)
    }

    /// Per-sample softmax cross-entropy of logits (N,K) against integer labels: a (N) vector.
    /// With `labelSmoothing` a, the target is (1 - a)·onehot + a/K (PyTorch's convention).
    public func crossEntropy(_ logits: Variable, labels: [Int32], labelSmoothing: Float = 0) -> Variable {
        check(logits)
        let s = logits.shape
        precondition(s.rank == 2 && labels.count == s[0],
                     "crossEntropy: logits \(s) and \(labels.count) labels do not match")
        precondition(labels.allSatisfy { $0 >= 0 && Int($0) < s[1] }, "crossEntropy: a label is outside [0, \(s[1]))")
        precondition(labelSmoothing >= 0 && labelSmoothing < 1, "labelSmoothing must be in [0, 1), got \(labelSmoothing)")
        var losses = newValue(Shape(s[0]))
        var probs = newSaved(s, slot: 0)
        labels.withUnsafeBufferPointer {
            Kernels.softmaxCrossEntropy(losses: &losses, probs: &probs, logits: logits.value, labels: $0.baseAddress!,
                                        smoothing: labelSmoothing)
        }
        return append(losses, .crossEntropy(logits: logits.index, probs: probs, labels: labels, smoothing: labelSmoothing))
    }

    /// Per-sample cross-entropy against target distributions (N,K): -Σ t log softmax(z).
    public func crossEntropy(_ logits: Variable, targetDistribution t: Tensor) -> Variable {
        check(logits)
        precondition(t.shape == logits.shape, "crossEntropy: target \(t.shape) does not match logits \(logits.shape)")
        var losses = newValue(Shape(logits.shape[0]))
        var probs = newSaved(logits.shape, slot: 0)
        Kernels.softCrossEntropy(losses: &losses, probs: &probs, logits: logits.value, target: t)
        return append(losses, .softCrossEntropy(logits: logits.index, probs: probs, target: t))
    }

    /// Per-sample mean squared error against a constant target: (N) vector.
    public func meanSquaredError(_ x: Variable, target: Tensor) -> Variable {
        check(x)
        precondition(x.shape == target.shape, "meanSquaredError: shapes \(x.shape) and \(target.shape) differ")
        let n = x.shape[0], d = x.shape.itemCount
        let out = newValue(Shape(n))
        let p = x.value.storage.pointer, q = target.storage.pointer
        for i in 0..<n {
            var acc = 0.0
            for j in 0..<d {
                let e = Double(p[i * d + j] - q[i * d + j])
                acc += e * e
            }
            out.storage.pointer[i] = Float(acc / Double(d))
        }
        return append(out, .squaredError(x.index, target: target))
    }

    /// Sum of all elements: a scalar.
    public func sum(_ x: Variable) -> Variable {
        check(x)
        let out = newValue(.scalar)
        out.storage.pointer[0] = x.value.sum()
        return append(out, .sum(x.index))
    }

    /// Mean of all elements: a scalar.
    public func mean(_ x: Variable) -> Variable {
        check(x)
        let out = newValue(.scalar)
        out.storage.pointer[0] = x.value.mean()
        return append(out, .mean(x.index))
    }

    /// Any differentiable function: `value` is its output, `pullback` maps dL/d(output) to dL/d(each input)
    /// (nil for an input that needs none).
    public func custom(_ inputs: [Variable], value: Tensor, pullback: @escaping (Tensor) -> [Tensor?]) -> Variable {
        inputs.forEach(check)
        return append(value, .custom(inputs: inputs.map(\.index), pullback: pullback))
    }
}

// MARK: - Pullbacks

extension Tape {
    /// The upstream gradient of a node with a fused activation, masked by where the activation passed its input
    /// (into the tape's mask scratch; valid until the next call). Without an activation, `g` itself.
    func masked(_ g: Tensor, node i: Int, _ activation: FusedActivation) -> Tensor {
        guard activation != .none, !premasked[i] else { return g }
        // Node i's own gradient buffer is dead once its pullback has run: mask it in place (no scratch to fault
        // in, one buffer less traffic) unless the caller sees it (a requested gradient, the seed).
        if g.storage === grads[i]?.storage && gradientIsDisposable(i) {
            Kernels.activationMaskInPlace(g.storage.pointer, out: nodes[i].value, activation: activation)
            return g
        }
        let m = maskScratch(g.shape)
        Kernels.activationMask(m.storage.pointer, dOut: g, out: nodes[i].value, activation: activation)
        return m
    }

    /// Propagates node i's gradient `g` into its inputs' gradients (adding).
    func backward(node i: Int, upstream g: Tensor) {
        switch nodes[i].op {
        case .leaf:
            break
        case let .conv2d(x, w, b, stride, padding, activation):
            let xv = nodes[x].value, wv = nodes[w].value
            let s = Kernels.convShape(xv.shape, wv.shape, stride: stride, padding: padding)
            let dx = gradPointer(x), dw = gradPointer(w), db = b.flatMap { gradPointer($0) }
            if dx == nil && dw == nil && db == nil { return }
            let dOut = masked(g, node: i, activation)
            let work = scratch(floats: Kernels.convWorkspaceFloats(s))
            Kernels.convBackward(dInput: dx, dWeight: dw, dBias: db, workspace: work, dOut: dOut, input: xv,
                                 weight: wv, shape: s)
        case let .linear(x, w, b, activation):
            let dx = gradPointer(x), dw = gradPointer(w), db = b.flatMap { gradPointer($0) }
            if dx == nil && dw == nil && db == nil { return }
            Kernels.linearBackward(dInput: dx, dWeight: dw, dBias: db, dOut: masked(g, node: i, activation),
                                   input: nodes[x].value, weight: nodes[w].value)
        case let .relu(x):
            guard let dx = gradPointer(x) else { return }
            Kernels.reluBackward(dInput: dx, dOut: g, out: nodes[i].value)
        case let .boundedReLU(x, t):
            guard let dx = gradPointer(x) else { return }
            Kernels.boundedReLUBackward(dInput: dx, dOut: g, out: nodes[i].value, bound: t)
        case let .maxPool(x, arg, k, st):
            let shape = Kernels.poolShape(nodes[x].value.shape, kernel: k, stride: st)
            // The first gradient into the output of a conv/linear layer with a fused activation: write it masked,
            // in one pass (no zeroing of the whole buffer, no mask pass in that layer's pullback). Not when the
            // caller asked for that output's gradient: it gets it unmasked.
            if !isTarget[x], let act = nodes[x].op.fusedActivation, act != .none, let dx = writableGradient(x) {
                Kernels.maxPoolBackwardMasked(dInput: dx, dOut: g, argmax: arg.pointer,
                                              output: nodes[i].value, activation: act, shape: shape)
                premasked[x] = true
                return
            }
            guard let dx = gradPointer(x) else { return }
            Kernels.maxPoolBackward(dInput: dx, dOut: g, argmax: arg.pointer, shape: shape)
        case let .avgPool(x, k, st):
            guard let dx = gradPointer(x) else { return }
            Kernels.avgPoolBackward(dInput: dx, dOut: g,
                                    shape: Kernels.poolShape(nodes[x].value.shape, kernel: k, stride: st))
        case let .conv2dGeneral(x, w, b, geometry, activation):
            let xv = nodes[x].value, wv = nodes[w].value
            let s = Kernels.convGeneralShape(xv.shape, wv.shape, geometry)
            let dx = gradPointer(x), dw = gradPointer(w), db = b.flatMap { gradPointer($0) }
            if dx == nil && dw == nil && db == nil { return }
            let dOut = masked(g, node: i, activation)
            let work = scratch(floats: Kernels.convGeneralWorkspaceFloats(s, weightGradient: dw != nil || db != nil))
            Kernels.convGeneralBackward(dInput: dx, dWeight: dw, dBias: db, workspace: work, dOut: dOut, input: xv,
                                        weight: wv, shape: s)
        case let .maxPoolGeneral(x, arg, geometry):
            guard let dx = gradPointer(x) else { return }
            Kernels.maxPoolGeneralBackward(dInput: dx, dOut: g, argmax: arg.pointer,
                                           shape: Kernels.poolGeneralShape(nodes[x].value.shape, geometry))
        case let .avgPoolGeneral(x, geometry, countIncludePad):
            guard let dx = gradPointer(x) else { return }
            Kernels.avgPoolGeneralBackward(dInput: dx, dOut: g, shape: Kernels.poolGeneralShape(nodes[x].value.shape, geometry),
                                           countIncludePad: countIncludePad)
        case let .reshape(x):
            // The input's gradient is the same numbers under another shape: take the buffer instead of copying it
            // when nothing else has written there yet (never the caller's seed: that is node `last`'s; never a
            // requested gradient, which the caller gets back and accumulating into x would change).
            if needs[x], grads[x] == nil, i != gradientOutput, !isTarget[i] {
                grads[x] = g.reshaped(nodes[x].value.shape)
            } else {
                accumulate(x, g)
            }
        case let .add(a, b):
            accumulate(a, g)
            accumulate(b, g)
        case let .scale(x, s):
            guard let dx = gradPointer(x) else { return }
            let q = g.storage.pointer
            for k in 0..<g.count { dx[k] += s * q[k] }
        case let .multiply(x, m):
            guard let dx = gradPointer(x) else { return }
            let q = g.storage.pointer, r = m.storage.pointer
            for k in 0..<g.count { dx[k] += r[k] * q[k] }
        case let .batchNorm(x, gamma, beta, xhat, invstd):
            Kernels.batchNormBackward(dInput: gradPointer(x), dGamma: gradPointer(gamma), dBeta: gradPointer(beta),
                                      dOut: g, xhat: xhat, invstd: invstd, gamma: nodes[gamma].value)
        case let .crossEntropy(z, probs, labels, smoothing):
            guard let dz = gradPointer(z) else { return }
            labels.withUnsafeBufferPointer {
                Kernels.softmaxCrossEntropyBackward(dLogits: dz, probs: probs, labels: $0.baseAddress!,
                                                    scale: g.storage.pointer, smoothing: smoothing)
            }
        case let .softCrossEntropy(z, probs, target):
            guard let dz = gradPointer(z) else { return }
            Kernels.softCrossEntropyBackward(dLogits: dz, probs: probs, target: target, scale: g.storage.pointer)
        case let .squaredError(x, target):
            guard let dx = gradPointer(x) else { return }
            let xv = nodes[x].value
            let n = xv.shape[0], d = xv.shape.itemCount
            let p = xv.storage.pointer, q = target.storage.pointer, u = g.storage.pointer
            for r in 0..<n {
                let f = 2 * u[r] / Float(d)
                for j in 0..<d { dx[r * d + j] += f * (p[r * d + j] - q[r * d + j]) }
            }
        case let .sum(x):
            guard let dx = gradPointer(x) else { return }
            let s = g.storage.pointer[0]
            for k in 0..<nodes[x].value.count { dx[k] += s }
        case let .mean(x):
            guard let dx = gradPointer(x) else { return }
            let n = nodes[x].value.count
            let s = g.storage.pointer[0] / Float(Swift.max(n, 1))
            for k in 0..<n { dx[k] += s }
        case let .custom(inputs, pullback):
            let gs = pullback(g)
            precondition(gs.count == inputs.count, "custom pullback returned \(gs.count) gradients for \(inputs.count) inputs")
            for (x, gx) in zip(inputs, gs) {
                if let gx {
                    precondition(gx.shape == nodes[x].value.shape, "custom pullback: gradient shape \(gx.shape) for input \(nodes[x].value.shape)")
                    accumulate(x, gx)
                }
            }
        }
    }
}

// MARK: - Kinks

extension Tape {
    /// A hash of every piecewise choice the recorded forward pass made: which ReLU inputs were positive,
    /// which bounded-ReLU inputs lay inside (0, t), which element each max-pool window took. Two passes with
    /// the same signature lie on the same linear piece, so finite differences between them are valid
    /// (the gradient checker skips points where a perturbation changes it).
    @_spi(Testing) public func kinkSignature() -> Int {
        var h = Hasher()
        for node in nodes {
            switch node.op {
            case .relu:
                node.value.withUnsafeBufferPointer { p in for v in p { h.combine(v > 0) } }
            case let .boundedReLU(_, t):
                node.value.withUnsafeBufferPointer { p in for v in p { h.combine(v > 0 && v < t) } }
            case let .maxPool(_, arg, _, _), let .maxPoolGeneral(_, arg, _):
                for i in 0..<arg.count { h.combine(arg.pointer[i]) }
            case let .conv2d(_, _, _, _, _, act), let .linear(_, _, _, act), let .conv2dGeneral(_, _, _, _, act):
                if act == .none { break }
                node.value.withUnsafeBufferPointer { p in for v in p { h.combine(v > 0 && (act == .relu || v < act.bound)) } }
            default:
                break
            }
        }
        return h.finalize()
    }
}

// MARK: - Diagnostics

extension Tape {
    /// Whether node i's pullback works without node i's own forward value (a convolution or linear layer with no
    /// fused activation: the mask is the only reason those read it). Such a value may be overwritten by its only
    /// reader (`addReLU(_:_:overwriting:)`).
    func valueUnreadByItsPullback(_ i: Int) -> Bool {
        switch nodes[i].op {
        case let .conv2d(_, _, _, _, _, act), let .linear(_, _, _, act), let .conv2dGeneral(_, _, _, _, act):
            return act == .none
        default:
            return false
        }
    }
}

extension Tape {
    /// The name of node i's operation ("conv2d", "conv2dGeneral", "maxPool", ...): tests check which node a
    /// general-geometry call recorded.
    @_spi(Testing) public func nodeOperation(_ i: Int) -> String {
        switch nodes[i].op {
        case .leaf: return "leaf"
        case .conv2d: return "conv2d"
        case .linear: return "linear"
        case .relu: return "relu"
        case .boundedReLU: return "boundedReLU"
        case .maxPool: return "maxPool"
        case .avgPool: return "avgPool"
        case .conv2dGeneral: return "conv2dGeneral"
        case .maxPoolGeneral: return "maxPoolGeneral"
        case .avgPoolGeneral: return "avgPoolGeneral"
        case .reshape: return "reshape"
        case .add: return "add"
        case .scale: return "scale"
        case .multiply: return "multiply"
        case .batchNorm: return "batchNorm"
        case .crossEntropy: return "crossEntropy"
        case .softCrossEntropy: return "softCrossEntropy"
        case .squaredError: return "squaredError"
        case .sum: return "sum"
        case .mean: return "mean"
        case .custom: return "custom"
        }
    }
}

// MARK: - Conveniences on Variable

extension Variable {
    public func relu() -> Variable { tape.relu(self) }
    public func boundedReLU(_ t: Float) -> Variable { tape.boundedReLU(self, bound: t) }
    public func flattened() -> Variable { tape.flatten(self) }
    public func sum() -> Variable { tape.sum(self) }
    public func mean() -> Variable { tape.mean(self) }
    public static func + (a: Variable, b: Variable) -> Variable { a.tape.add(a, b) }
    public static func * (a: Variable, s: Float) -> Variable { a.tape.scale(a, by: s) }
}
