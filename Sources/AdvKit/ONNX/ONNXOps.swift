import Foundation

/// A value flowing through an imported graph: image-dependent floats on the tape, trainable initializers, float
/// constants, or the integer tensors of shape arithmetic (evaluated on the spot, never on the tape).
enum ONNXValue {
    case variable(Variable)
    case parameter(Parameter)
    case float(Tensor)
    case ints([Int64], dims: [Int])

    /// The dimensions of the value.
    var dims: [Int] {
        switch self {
        case let .variable(v): return v.shape.dims
        case let .parameter(p): return p.value.shape.dims
        case let .float(t): return t.shape.dims
        case let .ints(_, d): return d
        }
    }

    var isConstant: Bool { if case .variable = self { return false } else { return true } }
}

/// The tensors of one forward pass, by name.
struct ONNXEnvironment {
    let classifier: ONNXClassifier
    let tape: Tape
    var values: [String: ONNXValue] = [:]

    init(classifier: ONNXClassifier, tape: Tape) {
        self.classifier = classifier
        self.tape = tape
    }

    func value(_ name: String, for node: ONNXNode?) throws -> ONNXValue {
        if let v = values[name] { return v }
        if let p = classifier.floatParameters[name] { return .parameter(p) }
        if let c = classifier.intConstants[name] { return .ints(c.values, dims: c.dims) }
        throw AdvKitError.invalidData("\(node.map { "node '\($0.name)' reads" } ?? "the output is") '\(name)', which no node, input or initializer provides")
    }

    func variable(_ name: String, for node: ONNXNode?) throws -> Variable {
        try ONNXOps.variable(try value(name, for: node), tape)
    }
}

/// The ONNX operators AdvKit runs, one handler each: adding an operator is one entry here and its function.
/// Each handler reads its attributes, checks its inputs with a thrown error, and records tape ops (or evaluates
/// integer shape arithmetic directly). Semantics follow the ONNX operator documents (opsets 7-20).
enum ONNXOps {
    struct Context {
        let node: ONNXNode
        let index: Int
        let tape: Tape
        let classifier: ONNXClassifier

        func int(_ name: String, _ fallback: Int) -> Int {
            if case let .int(v)? = node.attributes[name] { return v }
            return fallback
        }
        func float(_ name: String, _ fallback: Float) -> Float {
            if case let .float(v)? = node.attributes[name] { return v }
            return fallback
        }
        func ints(_ name: String) -> [Int]? {
            if case let .ints(v)? = node.attributes[name] { return v }
            return nil
        }
        func string(_ name: String, _ fallback: String) -> String {
            if case let .string(v)? = node.attributes[name] { return v }
            return fallback
        }
        var opset: Int { classifier.model.opsetImports[""] ?? classifier.model.opsetImports["ai.onnx"] ?? 20 }
        var fused: FusedActivation { classifier.fused[index] ?? .none }

        func variable(_ v: ONNXValue?, _ what: String = "input") throws -> Variable {
            guard let v else { throw AdvKitError.invalidData("the \(what) is missing") }
            return try ONNXOps.variable(v, tape)
        }
        /// A constant integer list (shapes, axes, pads, indices).
        func constInts(_ v: ONNXValue?, _ what: String) throws -> [Int] {
            switch v {
            case let .ints(x, _)?: return x.map { Int(clamping: $0) }
            case let .float(t)?: return t.scalars.map { Int($0) }
            case let .parameter(p)?: return p.value.scalars.map { Int($0) }
            case .variable?: throw AdvKitError.invalidData("the \(what) depends on the image; AdvKit needs it constant")
            case nil: throw AdvKitError.invalidData("the \(what) is missing")
            }
        }
        /// A constant float scalar (Clip's bounds, Pad's value).
        func constFloat(_ v: ONNXValue?, _ what: String) throws -> Float? {
            switch v {
            case nil: return nil
            case let .ints(x, _)?: return x.first.map(Float.init)
            case let .float(t)?: return t.scalars.first
            case let .parameter(p)?: return p.value.scalars.first
            case .variable?: throw AdvKitError.invalidData("the \(what) depends on the image; AdvKit needs it constant")
            }
        }
    }

    typealias Handler = (Context, [ONNXValue?]) throws -> [ONNXValue]

    static func variable(_ v: ONNXValue, _ tape: Tape) throws -> Variable {
        switch v {
        case let .variable(x): return x
        case let .parameter(p): return tape.parameter(p)
        case let .float(t): return tape.input(t)
        case let .ints(x, dims):
            guard dims.count <= Shape.maxRank else { throw AdvKitError.invalidData("an integer tensor of rank \(dims.count) cannot be used as floats") }
            return tape.input(Tensor(x.map(Float.init), shape: Shape(dims)))
        }
    }

    static let handlers: [String: Handler] = [
        "Conv": conv, "Gemm": gemm, "MatMul": matmul,
        "Relu": unary { t, x, _ in t.relu(x) },
        "LeakyRelu": unary { t, x, c in t.leakyReLU(x, alpha: c.float("alpha", 0.01)) },
        "Sigmoid": unary { t, x, _ in t.sigmoid(x) },
        "Tanh": unary { t, x, _ in t.hyperbolicTangent(x) },
        "HardSigmoid": unary { t, x, c in t.hardSigmoid(x, alpha: c.float("alpha", 0.2), beta: c.float("beta", 0.5)) },
        "HardSwish": unary { t, x, _ in t.hardSwish(x) },
        "Neg": unary { t, x, _ in t.negate(x) },
        "Clip": clip,
        "Add": add, "Sub": binary(-, { $0.subtract($1, $2) }),
        "Mul": binary(*, { $0.multiply($1, $2) }),
        "Div": binary({ $1 == 0 ? 0 : $0 / $1 }, { $0.divide($1, $2) }),
        "MaxPool": maxPool, "AveragePool": averagePool,
        "GlobalAveragePool": unary { t, x, _ in t.globalAvgPool2d(x) },
        "ReduceMean": reduceMean,
        "Reshape": reshape, "Flatten": flatten, "Transpose": transpose, "Concat": concat, "Pad": pad,
        "BatchNormalization": batchNorm,
        "Identity": { _, i in [i[0]!] }, "Dropout": { _, i in [i[0]!] },
        "Constant": constant, "Softmax": softmax, "LogSoftmax": softmax,
        "Shape": shape, "Gather": gather, "Cast": cast, "Slice": slice, "Unsqueeze": unsqueeze, "Squeeze": squeeze,
        "ConstantOfShape": constantOfShape, "Expand": expand,
    ]

    // MARK: helpers

    static func unary(_ f: @escaping (Tape, Variable, Context) throws -> Variable) -> Handler {
        { c, i in [.variable(try f(c.tape, try c.variable(i[0]), c))] }
    }

    /// Spatial pads (top, left, bottom, right) from `pads` or `auto_pad`, for input size (h, w), kernel extents
    /// (dilated) and strides.
    static func pads(_ c: Context, input: (h: Int, w: Int), kernel: (h: Int, w: Int), strides: (h: Int, w: Int)) throws -> (Int, Int, Int, Int) {
        let auto = c.string("auto_pad", "NOTSET")
        switch auto {
        case "NOTSET":
            let p = c.ints("pads") ?? [0, 0, 0, 0]
            guard p.count == 4 else { throw AdvKitError.invalidData("pads has \(p.count) values; a 2-D op takes 4 (top, left, bottom, right)") }
            guard p.allSatisfy({ $0 >= 0 }) else { throw AdvKitError.invalidData("negative pads \(p)") }
            return (p[0], p[1], p[2], p[3])
        case "VALID":
            return (0, 0, 0, 0)
        case "SAME_UPPER", "SAME_LOWER":
            func split(_ n: Int, _ k: Int, _ s: Int) -> (Int, Int) {
                let out = (n + s - 1) / s
                let total = max((out - 1) * s + k - n, 0)
                return auto == "SAME_UPPER" ? (total / 2, total - total / 2) : (total - total / 2, total / 2)
            }
            let (t, b) = split(input.h, kernel.h, strides.h), (l, r) = split(input.w, kernel.w, strides.w)
            return (t, l, b, r)
        default:
            throw AdvKitError.invalidData("auto_pad '\(auto)' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
        }
    }

    static func pair(_ v: [Int]?, _ fallback: Int, _ what: String) throws -> (h: Int, w: Int) {
        guard let v else { return (fallback, fallback) }
        guard v.count == 2 else { throw AdvKitError.invalidData("\(what) has \(v.count) values; AdvKit runs 2-D ops (2 values)") }
        return (v[0], v[1])
    }

    static func normalizedAxis(_ a: Int, rank: Int) throws -> Int {
        let r = a < 0 ? a + rank : a
        guard r >= 0 && r < max(rank, 1) else { throw AdvKitError.invalidData("axis \(a) is outside a rank-\(rank) tensor") }
        return r
    }

    // MARK: convolution and dense layers

    static func conv(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let x = try c.variable(i[0]), w = try c.variable(i[1], "weight")
        guard x.shape.rank == 4, w.shape.rank == 4 else {
            throw AdvKitError.invalidData("AdvKit runs 2-D convolutions (input (N,C,H,W), weight (OC,C/group,KH,KW)); got input \(x.shape), weight \(w.shape)")
        }
        let b = i.count > 2 ? try i[2].map { try c.variable($0, "bias") } : nil
        let strides = try pair(c.ints("strides"), 1, "strides"), dil = try pair(c.ints("dilations"), 1, "dilations")
        let kernel = (h: (w.shape[2] - 1) * dil.h + 1, w: (w.shape[3] - 1) * dil.w + 1)
        let p = try pads(c, input: (x.shape[2], x.shape[3]), kernel: kernel, strides: strides)
        let g = Conv2DGeometry(strides: strides, pads: p, dilations: dil, groups: c.int("group", 1))
        try g.validate(input: x.shape, weight: w.shape, bias: b?.shape)
        return [.variable(c.tape.conv2d(x, weight: w, bias: b, geometry: g, activation: c.fused))]
    }

    /// A (OUT, IN) copy of an (IN, OUT) initializer, made once per classifier, for Linear's layout.
    static func transposedParameter(_ c: Context, _ p: Parameter) -> Parameter {
        let key = ObjectIdentifier(p)
        if let t = c.classifier.transposed[key] { return t }
        let v = p.value, r = v.shape[0], k = v.shape[1]
        let t = Tensor(zeros: [k, r])
        for a in 0..<r { for b in 0..<k { t.storage.pointer[b * r + a] = v.storage.pointer[a * k + b] } }
        let q = Parameter(t)
        c.classifier.transposed[key] = q
        return q
    }

    static func gemm(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let transA = c.int("transA", 0) != 0, transB = c.int("transB", 0) != 0
        let alpha = c.float("alpha", 1), beta = c.float("beta", 1)
        let a = try c.variable(i[0])
        let cv = i.count > 2 ? i[2] : nil
        // Linear's fast path: y = x Wᵀ + b with W (OUT, IN) as PyTorch keeps it.
        if !transA, alpha == 1, beta == 1 || cv == nil, a.shape.rank == 2, case let .parameter(bp)? = i[1], bp.value.shape.rank == 2 {
            let weight = transB ? bp : transposedParameter(c, bp)
            let out = weight.value.shape[0]
            guard weight.value.shape[1] == a.shape[1] else {
                throw AdvKitError.invalidData("input \(a.shape) does not match the weight \(bp.value.shape) (transB \(transB ? 1 : 0))")
            }
            var bias: Variable?
            if let cv {
                guard case let .parameter(biasP) = cv, biasP.value.count == out, cv.dims.count <= 2 else { return try gemmGeneral(c, i, a) }
                bias = c.tape.parameter(biasP)
                if biasP.value.shape.rank != 1 { bias = c.tape.reshape(bias!, [out]) }
            }
            return [.variable(c.tape.linear(a, weight: c.tape.parameter(weight), bias: bias, activation: c.fused))]
        }
        return try gemmGeneral(c, i, a)
    }

    static func gemmGeneral(_ c: Context, _ i: [ONNXValue?], _ a: Variable) throws -> [ONNXValue] {
        let b = try c.variable(i[1], "B")
        let cc = i.count > 2 ? try i[2].map { try c.variable($0, "C") } : nil
        let transA = c.int("transA", 0) != 0, transB = c.int("transB", 0) != 0
        _ = try Tape.gemmShape(a.shape, b.shape, c: cc?.shape, transA: transA, transB: transB)
        var y = c.tape.gemm(a, b, c: cc, transA: transA, transB: transB, alpha: c.float("alpha", 1), beta: c.float("beta", 1))
        if c.fused == .relu { y = c.tape.relu(y) }
        return [.variable(y)]
    }

    static func matmul(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let a = try c.variable(i[0])
        if a.shape.rank == 2, case let .parameter(bp)? = i[1], bp.value.shape.rank == 2, bp.value.shape[0] == a.shape[1] {
            return [.variable(c.tape.linear(a, weight: c.tape.parameter(transposedParameter(c, bp)), bias: nil))]
        }
        let b = try c.variable(i[1], "B")
        _ = try Tape.matmulShape(a.shape, b.shape)
        return [.variable(c.tape.matmul(a, b))]
    }

    // MARK: elementwise

    static func clip(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let x = try c.variable(i[0])
        var lo: Float?, hi: Float?
        if c.opset >= 11 {
            lo = try c.constFloat(i.count > 1 ? i[1] : nil, "min")
            hi = try c.constFloat(i.count > 2 ? i[2] : nil, "max")
        } else {
            if case let .float(v)? = c.node.attributes["min"] { lo = v }
            if case let .float(v)? = c.node.attributes["max"] { hi = v }
        }
        if lo == 0 && hi == nil { return [.variable(c.tape.relu(x))] }
        return [.variable(c.tape.clip(x, min: lo, max: hi))]
    }

    /// Add/Sub/Mul/Div: integers evaluated directly (shape arithmetic), floats on the tape with broadcasting.
    static func binary(_ f: @escaping (Int64, Int64) -> Int64, _ g: @escaping (Tape, Variable, Variable) -> Variable) -> Handler {
        { c, i in
            if case let .ints(a, da)? = i[0], case let .ints(b, db)? = i[1] {
                let (n, dims) = a.count >= b.count ? (a.count, da) : (b.count, db)
                guard a.count == b.count || a.count == 1 || b.count == 1 else {
                    throw AdvKitError.invalidData("integer operands of \(a.count) and \(b.count) values do not broadcast")
                }
                return [.ints((0..<n).map { f(a[a.count == 1 ? 0 : $0], b[b.count == 1 ? 0 : $0]) }, dims: dims)]
            }
            let a = try c.variable(i[0]), b = try c.variable(i[1])
            _ = try Tape.broadcastShape(a.shape, b.shape)
            return [.variable(g(c.tape, a, b))]
        }
    }

    static let plainAdd = binary(+, { $0.broadcastAdd($1, $2) })

    /// Add, and Add + Relu when the importer fused them (`ONNXClassifier.addReLU`): two image-dependent operands
    /// of one shape take the one-pass residual join, anything else the broadcasting add and then a ReLU.
    static func add(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard c.classifier.addReLU.contains(c.index) else { return try plainAdd(c, i) }
        if case .variable(let a)? = i[0], case .variable(let b)? = i[1], a.shape == b.shape {
            let overwrite = c.classifier.joinOverwrites[c.index].map { $0 == 0 ? a : b }
            return [.variable(c.tape.addReLU(a, b, overwriting: overwrite))]
        }
        guard case .variable(let sum)? = try plainAdd(c, i).first else {
            throw AdvKitError.invalidData("a Relu after an Add of integer constants")
        }
        return [.variable(c.tape.relu(sum))]
    }

    static func softmax(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let x = try c.variable(i[0])
        let axis = try normalizedAxis(c.int("axis", c.opset >= 13 ? -1 : 1), rank: x.shape.rank)
        guard c.opset >= 13 || axis == x.shape.rank - 1 else {
            throw AdvKitError.invalidData("a Softmax over flattened axes \(axis)... (opset < 13) inside the graph is not supported")
        }
        return [.variable(c.node.opType == "Softmax" ? c.tape.softmax(x, axis: axis) : c.tape.logSoftmax(x, axis: axis))]
    }

    // MARK: pooling and reductions

    static func poolGeometry(_ c: Context, _ x: Variable) throws -> Pool2DGeometry {
        guard x.shape.rank == 4 else { throw AdvKitError.invalidData("AdvKit runs 2-D pooling on (N,C,H,W), got \(x.shape)") }
        guard let k = c.ints("kernel_shape") else { throw AdvKitError.invalidData("kernel_shape is missing") }
        let kernel = try pair(k, 1, "kernel_shape"), strides = try pair(c.ints("strides"), 1, "strides")
        let dil = try pair(c.ints("dilations"), 1, "dilations")
        let p = try pads(c, input: (x.shape[2], x.shape[3]), kernel: ((kernel.h - 1) * dil.h + 1, (kernel.w - 1) * dil.w + 1), strides: strides)
        let g = Pool2DGeometry(kernel: kernel, strides: strides, pads: p, ceilMode: c.int("ceil_mode", 0) != 0, dilations: dil)
        try g.validate(input: x.shape)
        return g
    }

    static func maxPool(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        if c.node.outputs.count > 1 && !c.node.outputs[1].isEmpty {
            throw AdvKitError.invalidData("MaxPool's Indices output is not supported")
        }
        let x = try c.variable(i[0])
        return [.variable(c.tape.maxPool2d(x, geometry: try poolGeometry(c, x)))]
    }

    static func averagePool(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let x = try c.variable(i[0])
        return [.variable(c.tape.avgPool2d(x, geometry: try poolGeometry(c, x), countIncludePad: c.int("count_include_pad", 0) != 0))]
    }

    static func reduceMean(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let x = try c.variable(i[0])
        let keep = c.int("keepdims", 1) != 0
        var axes: [Int]? = c.ints("axes")
        if c.opset >= 18, i.count > 1, let a = i[1] { axes = try c.constInts(a, "axes") }
        if axes == nil || axes!.isEmpty {
            if c.int("noop_with_empty_axes", 0) != 0 { return [.variable(x)] }
            axes = nil
        }
        let r = x.shape.rank
        let normalized = try axes.map { try $0.map { try normalizedAxis($0, rank: r) }.sorted() }
        if r == 4, normalized == [2, 3] {
            let y = c.tape.globalAvgPool2d(x)
            return [.variable(keep ? y : c.tape.reshape(y, [x.shape[0], x.shape[1]]))]
        }
        _ = try Tape.reduceShape(x.shape, axes: normalized, keepDims: keep)
        return [.variable(c.tape.reduceMean(x, axes: normalized, keepDims: keep))]
    }

    static func batchNorm(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard c.int("training_mode", 0) == 0, c.node.outputs.count == 1 || c.node.outputs.dropFirst().allSatisfy(\.isEmpty) else {
            throw AdvKitError.invalidData("BatchNormalization in training mode is not supported (export the model in eval mode)")
        }
        let x = try c.variable(i[0])
        guard x.shape.rank >= 2 else { throw AdvKitError.invalidData("input \(x.shape) has no channel axis") }
        let ch = x.shape[1]
        func const(_ v: ONNXValue?, _ what: String) throws -> [Float] {
            let f: [Float]
            switch v {
            case let .parameter(p)?: f = p.value.scalars
            case let .float(t)?: f = t.scalars
            default: throw AdvKitError.invalidData("the \(what) must be a constant")
            }
            guard f.count == ch else { throw AdvKitError.invalidData("the \(what) has \(f.count) values for \(ch) channels") }
            return f
        }
        let mean = try const(i[3], "mean"), variance = try const(i[4], "variance")
        let eps = c.float("epsilon", 1e-5)
        let bshape = Shape([1, ch] + [Int](repeating: 1, count: x.shape.rank - 2))
        let t = c.tape
        // y = (x − mean)·(γ/√(var+ε)) + β, with γ and β on the tape (trainable).
        let invstd = Tensor(variance.map { 1 / ($0 + eps).squareRoot() }, shape: bshape)
        let centred = t.subtract(x, t.input(Tensor(mean, shape: bshape)))
        let gamma = t.reshape(try c.variable(i[1], "scale"), bshape), beta = t.reshape(try c.variable(i[2], "bias"), bshape)
        return [.variable(t.broadcastAdd(t.multiply(centred, t.multiply(gamma, t.input(invstd))), beta))]
    }

    // MARK: shapes

    /// The target shape of Reshape: 0 copies the input's dimension (unless allowzero), −1 is inferred. A model
    /// exported with its batch fixed at 1 reshapes the actual batch where the target starts with that 1.
    static func reshapeTarget(_ c: Context, input dims: [Int], _ target: [Int]) throws -> [Int] {
        let allowZero = c.int("allowzero", 0) != 0
        var t = target
        for k in t.indices where t[k] == 0 && !allowZero {
            guard k < dims.count else { throw AdvKitError.invalidData("target \(target): a 0 at position \(k) copies a dimension the input \(dims) lacks") }
            t[k] = dims[k]
        }
        if c.classifier.declaredBatch == 1, let n = dims.first, n != 1, t.first == 1, !t.isEmpty {
            t[0] = n
        }
        let known = t.filter { $0 != -1 }.reduce(1, *), count = dims.reduce(1, *)
        let unknown = t.filter { $0 == -1 }.count
        guard unknown <= 1, t.allSatisfy({ $0 >= -1 }) else { throw AdvKitError.invalidData("target shape \(target) is not valid") }
        if unknown == 1 {
            guard known > 0, count % known == 0 else { throw AdvKitError.invalidData("cannot reshape \(dims) into \(target)") }
            t[t.firstIndex(of: -1)!] = count / known
        }
        guard t.reduce(1, *) == count else { throw AdvKitError.invalidData("cannot reshape \(dims) (\(count) values) into \(target)") }
        return t
    }

    static func reshaped(_ c: Context, _ v: ONNXValue, _ dims: [Int]) throws -> ONNXValue {
        if case let .ints(x, _) = v { return .ints(x, dims: dims) }
        guard dims.count <= Shape.maxRank else { throw AdvKitError.invalidData("a float tensor of rank \(dims.count) (AdvKit keeps at most \(Shape.maxRank))") }
        return .variable(c.tape.reshape(try c.variable(v), Shape(dims)))
    }

    static func reshape(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard let v = i[0] else { throw AdvKitError.invalidData("the data input is missing") }
        let target = try reshapeTarget(c, input: v.dims, try c.constInts(i[1], "shape"))
        return [try reshaped(c, v, target)]
    }

    static func flatten(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard let v = i[0] else { throw AdvKitError.invalidData("the input is missing") }
        let d = v.dims
        let axis = c.int("axis", 1)
        let a = axis < 0 ? axis + d.count : axis
        guard a >= 0 && a <= d.count else { throw AdvKitError.invalidData("axis \(axis) is outside a rank-\(d.count) tensor") }
        return [try reshaped(c, v, [d[..<a].reduce(1, *), d[a...].reduce(1, *)])]
    }

    static func transpose(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        if case let .ints(x, dims)? = i[0] {
            let r = dims.count
            let perm = c.ints("perm") ?? Array((0..<r).reversed())
            guard perm.sorted() == Array(0..<r) else { throw AdvKitError.invalidData("perm \(perm) is not a permutation of 0..<\(r)") }
            let outDims = perm.map { dims[$0] }
            let inStrides = strides(dims)
            var out = [Int64](repeating: 0, count: x.count)
            for (k, idx) in indices(outDims).enumerated() {
                var src = 0
                for (a, p) in perm.enumerated() { src += idx[a] * inStrides[p] }
                out[k] = x[src]
            }
            return [.ints(out, dims: outDims)]
        }
        let x = try c.variable(i[0])
        let perm = c.ints("perm")
        _ = try Tape.transposeShape(x.shape, permutation: perm)
        return [.variable(c.tape.transpose(x, permutation: perm))]
    }

    static func concat(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let parts = i.compactMap { $0 }
        guard !parts.isEmpty else { throw AdvKitError.invalidData("no inputs") }
        if parts.allSatisfy({ if case .ints = $0 { return true } else { return false } }) {
            guard parts.allSatisfy({ $0.dims.count <= 1 }) else { throw AdvKitError.invalidData("integer Concat of tensors of rank > 1") }
            var all: [Int64] = []
            for case let .ints(x, _) in parts { all += x }
            return [.ints(all, dims: [all.count])]
        }
        let xs = try parts.map { try c.variable($0) }
        guard let axisAttr = c.ints("axis").map({ $0.first ?? 0 }) ?? { if case let .int(v)? = c.node.attributes["axis"] { return v } else { return nil } }() else {
            throw AdvKitError.invalidData("the axis attribute is missing")
        }
        let axis = try normalizedAxis(axisAttr, rank: xs[0].shape.rank)
        _ = try Tape.concatShape(xs.map(\.shape), axis: axis)
        return [.variable(c.tape.concat(xs, axis: axis))]
    }

    static func pad(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let mode = c.string("mode", "constant")
        guard mode == "constant" else { throw AdvKitError.invalidData("mode '\(mode)' (AdvKit pads with a constant)") }
        let x = try c.variable(i[0])
        let r = x.shape.rank
        var p: [Int]
        var value: Float = 0
        if c.opset >= 11 {
            p = try c.constInts(i.count > 1 ? i[1] : nil, "pads")
            value = try c.constFloat(i.count > 2 ? i[2] : nil, "constant value") ?? 0
        } else {
            p = c.ints("pads") ?? []
            value = c.float("value", 0)
        }
        var axes = Array(0..<r)
        if c.opset >= 18, i.count > 3, let a = i[3] { axes = try c.constInts(a, "axes").map { try normalizedAxis($0, rank: r) } }
        guard p.count == 2 * axes.count else { throw AdvKitError.invalidData("\(p.count) pads for \(axes.count) axes") }
        var begins = [Int](repeating: 0, count: r), ends = begins
        for (k, a) in axes.enumerated() { begins[a] = p[k]; ends[a] = p[k + axes.count] }
        _ = try Tape.padShape(x.shape, begins: begins, ends: ends)
        return [.variable(c.tape.pad(x, begins: begins, ends: ends, value: value))]
    }

    static func expand(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let x = try c.variable(i[0])
        let s = try c.constInts(i[1], "shape")
        guard s.count <= Shape.maxRank else { throw AdvKitError.invalidData("a target of rank \(s.count)") }
        let target = try Tape.expandShape(x.shape, to: Shape(s))
        return [.variable(c.tape.expand(x, to: target))]
    }

    // MARK: constants and shape arithmetic

    static func tensorValue(_ t: ONNXTensor) throws -> ONNXValue {
        switch t.values {
        case let .float(v):
            guard t.dims.count <= Shape.maxRank else { throw AdvKitError.invalidData("a float constant of rank \(t.dims.count)") }
            return .float(v)
        case let .int(v): return .ints(v, dims: t.dims)
        }
    }

    static func constant(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        switch c.node.attributes["value"] ?? c.node.attributes["value_float"] ?? c.node.attributes["value_int"]
            ?? c.node.attributes["value_floats"] ?? c.node.attributes["value_ints"] {
        case let .tensor(t)?: return [try tensorValue(t)]
        case let .float(v)?: return [.float(Tensor(scalar: v))]
        case let .int(v)?: return [.ints([Int64(v)], dims: [])]
        case let .floats(v)?: return [.float(Tensor(v))]
        case let .ints(v)?: return [.ints(v.map(Int64.init), dims: [v.count])]
        default: throw AdvKitError.invalidData("a Constant without a supported value attribute")
        }
    }

    static func shape(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard let v = i[0] else { throw AdvKitError.invalidData("the input is missing") }
        let d = v.dims.map(Int64.init)
        func clampIndex(_ k: Int) -> Int { max(0, min(d.count, k < 0 ? k + d.count : k)) }
        let s = clampIndex(c.int("start", 0)), e = clampIndex(c.int("end", d.count))
        let part = s < e ? Array(d[s..<e]) : []
        return [.ints(part, dims: [part.count])]
    }

    static func gather(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard case let .ints(data, dims)? = i[0] else {
            throw AdvKitError.invalidData("Gather on floating-point data is not supported (only on shapes and integer constants)")
        }
        let idx = try c.constInts(i[1], "indices")
        let axis = try normalizedAxis(c.int("axis", 0), rank: dims.count)
        guard axis == 0, dims.count <= 1 else { throw AdvKitError.invalidData("Gather on integer tensors of rank > 1") }
        let n = data.count
        let picked = try idx.map { k -> Int64 in
            let j = k < 0 ? k + n : k
            guard j >= 0 && j < n else { throw AdvKitError.invalidData("index \(k) is outside [\(-n), \(n))") }
            return data[j]
        }
        return [.ints(picked, dims: i[1]!.dims)]
    }

    static func cast(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard let v = i[0] else { throw AdvKitError.invalidData("the input is missing") }
        guard let to = ONNXDataType(rawValue: c.int("to", 1)) else { throw AdvKitError.invalidData("unknown target type \(c.int("to", 1))") }
        if to.isFloatingPoint {
            if case let .ints(x, d) = v {
                guard d.count <= Shape.maxRank else { throw AdvKitError.invalidData("a rank-\(d.count) cast to float") }
                return [.float(Tensor(x.map(Float.init), shape: Shape(d)))]
            }
            return [v]
        }
        switch v {
        case .ints: return [v]
        case let .float(t): return [.ints(t.scalars.map { Int64($0) }, dims: t.shape.dims)]
        case let .parameter(p): return [.ints(p.value.scalars.map { Int64($0) }, dims: p.value.shape.dims)]
        case .variable: throw AdvKitError.invalidData("a cast of image-dependent values to \(to) has no gradient")
        }
    }

    static func slice(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard let v = i[0] else { throw AdvKitError.invalidData("the data input is missing") }
        let starts: [Int], ends: [Int]
        var axes: [Int]?, steps: [Int]?
        if c.opset >= 10 {
            starts = try c.constInts(i.count > 1 ? i[1] : nil, "starts")
            ends = try c.constInts(i.count > 2 ? i[2] : nil, "ends")
            if i.count > 3, let a = i[3] { axes = try c.constInts(a, "axes") }
            if i.count > 4, let s = i[4] { steps = try c.constInts(s, "steps") }
        } else {
            starts = c.ints("starts") ?? []
            ends = c.ints("ends") ?? []
            axes = c.ints("axes")
        }
        if case let .ints(x, dims) = v { return [try intSlice(x, dims, starts: starts, ends: ends, axes: axes, steps: steps)] }
        let xv = try c.variable(v)
        _ = try Tape.sliceShape(xv.shape, starts: starts, ends: ends, axes: axes, steps: steps)
        return [.variable(c.tape.slice(xv, starts: starts, ends: ends, axes: axes, steps: steps))]
    }

    /// Row-major strides of `dims`.
    static func strides(_ dims: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: dims.count)
        var acc = 1
        for a in dims.indices.reversed() { s[a] = acc; acc *= dims[a] }
        return s
    }

    /// Every multi-index of `dims` in row-major order.
    static func indices(_ dims: [Int]) -> [[Int]] {
        let n = dims.reduce(1, *)
        guard n > 0 else { return [] }
        var out: [[Int]] = []
        out.reserveCapacity(n)
        var idx = [Int](repeating: 0, count: dims.count)
        for _ in 0..<n {
            out.append(idx)
            var a = dims.count - 1
            while a >= 0 { idx[a] += 1; if idx[a] < dims[a] { break }; idx[a] = 0; a -= 1 }
        }
        return out
    }

    /// ONNX Slice on an integer tensor of any rank (negative indices, clamping, negative steps).
    static func intSlice(_ x: [Int64], _ dims: [Int], starts: [Int], ends: [Int], axes: [Int]?, steps: [Int]?) throws -> ONNXValue {
        let r = dims.count
        let ax = try (axes ?? Array(0..<starts.count)).map { try normalizedAxis($0, rank: r) }
        let st = steps ?? [Int](repeating: 1, count: starts.count)
        guard starts.count == ends.count, ax.count == starts.count, st.count == starts.count else {
            throw AdvKitError.invalidData("starts, ends, axes and steps differ in length")
        }
        var picks = dims.map { Array(0..<$0) }
        for (k, a) in ax.enumerated() {
            let n = dims[a], step = st[k]
            guard step != 0 else { throw AdvKitError.invalidData("a step of 0") }
            var b = starts[k] < 0 ? starts[k] + n : starts[k], e = ends[k] < 0 ? ends[k] + n : ends[k]
            if step > 0 {
                b = max(0, min(n, b)); e = max(0, min(n, e))
                picks[a] = b < e ? Array(stride(from: b, to: e, by: step)) : []
            } else {
                b = max(-1, min(n - 1, b)); e = max(-1, min(n - 1, e))
                picks[a] = b > e ? Array(stride(from: b, to: e, by: step)) : []
            }
        }
        let outDims = picks.map(\.count)
        let s = strides(dims)
        let out = indices(outDims).map { idx in x[idx.enumerated().reduce(0) { $0 + picks[$1.offset][$1.element] * s[$1.offset] }] }
        return .ints(out, dims: outDims)
    }

    static func axesInput(_ c: Context, _ i: [ONNXValue?]) throws -> [Int]? {
        if c.opset >= 13 { return i.count > 1 && i[1] != nil ? try c.constInts(i[1], "axes") : nil }
        return c.ints("axes")
    }

    static func unsqueeze(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard let v = i[0] else { throw AdvKitError.invalidData("the input is missing") }
        guard let axes = try axesInput(c, i) else { throw AdvKitError.invalidData("the axes are missing") }
        let outRank = v.dims.count + axes.count
        let norm = Set(try axes.map { try normalizedAxis($0, rank: outRank) })
        var dims: [Int] = [], k = 0
        for a in 0..<outRank {
            if norm.contains(a) { dims.append(1) } else { dims.append(v.dims[k]); k += 1 }
        }
        return [try reshaped(c, v, dims)]
    }

    static func squeeze(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        guard let v = i[0] else { throw AdvKitError.invalidData("the input is missing") }
        let d = v.dims
        let axes = try axesInput(c, i).map { try $0.map { try normalizedAxis($0, rank: d.count) } }
        if let axes, let bad = axes.first(where: { d[$0] != 1 }) {
            throw AdvKitError.invalidData("axis \(bad) of \(d) is not 1")
        }
        let keep = d.indices.filter { axes.map { !$0.contains($0) } ?? (d[$0] != 1) }
        return [try reshaped(c, v, keep.map { d[$0] })]
    }

    static func constantOfShape(_ c: Context, _ i: [ONNXValue?]) throws -> [ONNXValue] {
        let dims = try c.constInts(i[0], "shape")
        guard dims.allSatisfy({ $0 >= 0 }) else { throw AdvKitError.invalidData("negative dimension in \(dims)") }
        let n = dims.reduce(1, *)
        guard n <= 1 << 26 else { throw AdvKitError.invalidData("a constant of \(n) values") }
        if case let .tensor(t)? = c.node.attributes["value"], case let .int(v) = t.values {
            return [.ints([Int64](repeating: v.first ?? 0, count: n), dims: dims)]
        }
        var fill: Float = 0
        if case let .tensor(t)? = c.node.attributes["value"] { fill = t.floats.first ?? 0 }
        guard dims.count <= Shape.maxRank else { throw AdvKitError.invalidData("a float constant of rank \(dims.count)") }
        return [.float(Tensor(repeating: fill, shape: Shape(dims)))]
    }
}

// MARK: load-time fusion of Clip

extension ONNXClassifier {
    /// Clip(0, t) after a Conv (ReLU6: torchvision's MobileNetV2 exports 35 of them) runs in the convolution's
    /// epilogue as a bounded ReLU, min(max(x, 0), t), instead of as a node of its own (a pass over the activations
    /// forward and one backward; 8% of a MobileNetV2 input gradient). Values are the same; the gradient passes where
    /// 0 < y < t (PyTorch's hardtanh/ReLU6 backward) where the unfused Clip also passed it at exactly 0 and t.
    /// Clip(0) without a maximum becomes a fused ReLU. Taken when the bounds are constants (attributes before opset
    /// 11; initializers or Constant nodes after) and the Conv's output has no other reader. Returns the count fused.
    func fuseClipsIntoConvolutions(producer: [String: Int], graphOutputs: Set<String>, removed: inout Set<Int>) -> Int {
        let opset = model.opsetImports[""] ?? model.opsetImports["ai.onnx"] ?? 20
        // Readers of each tensor after the aliases made so far (a folded BatchNormalization reads through to its Conv).
        var readers: [String: Int] = [:]
        for (i, n) in nodes.enumerated() where !removed.contains(i) {
            for x in n.inputs where !x.isEmpty { readers[resolve(x), default: 0] += 1 }
        }
        /// A scalar float constant: an initializer or a Constant node's value; nil when absent or not constant.
        func scalar(_ name: String) -> Float?? {
            if name.isEmpty { return .some(nil) }
            if let p = floatParameters[name] { return p.value.count == 1 ? .some(p.value.scalars[0]) : nil }
            if let c = intConstants[name] { return c.values.count == 1 ? .some(Float(c.values[0])) : nil }
            if let k = producer[name], nodes[k].opType == "Constant" {
                switch nodes[k].attributes["value"] ?? nodes[k].attributes["value_float"] {
                case let .tensor(t)?: return t.floats.count == 1 ? .some(t.floats[0]) : nil
                case let .float(v)?: return .some(v)
                default: return nil
                }
            }
            return nil
        }
        var count = 0
        for (i, n) in nodes.enumerated() where n.opType == "Clip" && !removed.contains(i) && !n.inputs.isEmpty {
            let lo: Float?, hi: Float?
            if opset >= 11 {
                guard let l = scalar(n.inputs.count > 1 ? n.inputs[1] : ""), let h = scalar(n.inputs.count > 2 ? n.inputs[2] : "") else { continue }
                (lo, hi) = (l, h)
            } else {
                if case let .float(v)? = n.attributes["min"] { lo = v } else { lo = nil }
                if case let .float(v)? = n.attributes["max"] { hi = v } else { hi = nil }
            }
            let activation: FusedActivation
            switch (lo, hi) {
            case (0?, nil): activation = .relu
            case let (0?, t?) where t > 0 && t.isFinite: activation = .boundedReLU(t)
            default: continue
            }
            let src = resolve(n.inputs[0])
            guard let p = producer[src], nodes[p].opType == "Conv", !removed.contains(p), fused[p] == nil, readers[src] == 1,
                  !graphOutputs.contains(src), resolve(resolvedOutput) != src, n.outputs.count == 1 else { continue }
            fused[p] = activation
            alias[n.outputs[0]] = src
            removed.insert(i)
            count += 1
        }
        return count
    }
}

extension Tape {
    /// max(a + b, 0) for two tensors of one shape, as one node (ResNet's residual join: He et al. 2016,
    /// y = relu(F(x) + x)): the same values as `relu(broadcastAdd(a, b))`, in one pass each way instead of two
    /// (each single-threaded). Pullback: ∂/∂a = ∂/∂b = g where the output is > 0.
    ///
    /// `overwriting`: a or b, when nothing else reads it: the join writes its result into that operand's buffer
    /// instead of a new one. Taken only when that operand's own pullback does not read its value (a convolution or
    /// linear layer without a fused activation: ResNet's second convolution of a block, and the downsampling one);
    /// otherwise ignored. The tape then holds one activation fewer per block (ResNet-18 at batch 128: 148 MB fewer
    /// to fault in on a batch's first pass). The caller guarantees no other reader (the importer counts them).
    @_spi(Testing) public func addReLU(_ a: Variable, _ b: Variable, overwriting: Variable? = nil) -> Variable {
        precondition(a.tape === self && b.tape === self, "a variable from another tape was used")
        precondition(a.shape == b.shape, "addReLU: shapes \(a.shape) and \(b.shape) differ")
        var out: Tensor
        if let t = overwriting, t.index == a.index || t.index == b.index, a.index != b.index,
           valueUnreadByItsPullback(t.index) {
            out = nodes[t.index].value  // the same storage: written through its pointer below, not copied
        } else {
            out = newValue(a.shape)
        }
        Kernels.addReLU(out: &out, a.value, b.value)
        let ia = a.index, ib = b.index, io = nodes.count
        return custom([a, b], value: out) { [unowned self] g in
            // The usual case in a backward pass (ResNet's blocks): neither operand has a gradient yet and the join's
            // own is the tape's to reuse. It becomes a's gradient, masked in place, and b's is written from it:
            // no zeroing, no adding, no buffer for a.
            if ia != ib, self.handOverGradient(of: io, to: ia) {
                if let db = self.writableGradient(ib) {
                    Kernels.addReLUBackwardFirst(g.storage.pointer, db, out: self.nodes[io].value)
                } else {
                    Kernels.addReLUBackwardFirst(g.storage.pointer, nil, out: self.nodes[io].value)
                    self.accumulate(ib, g)  // b already has a gradient (or needs none: then this does nothing)
                }
                return [nil, nil]
            }
            let da = self.gradPointer(ia), db = ia == ib ? nil : self.gradPointer(ib)
            if ia == ib, let da {  // x + x: the gradient twice
                Kernels.addReLUBackward(da, da, dOut: g, out: self.nodes[io].value)
            } else {
                Kernels.addReLUBackward(da, db, dOut: g, out: self.nodes[io].value)
            }
            return [nil, nil]
        }
    }
}
