import Foundation

/// How the images AdvKit holds ([0,1] pixels, NCHW) become the input an imported model expects. Applied inside the
/// differentiable graph, so ε stays in [0,1] pixel units and gradients are with respect to those pixels.
public struct ONNXInputOptions: Sendable, Equatable {
    /// x ← x · inputScale first (255 for a model trained on 0-255 pixels).
    public var inputScale: Float
    /// Then x ← (x − mean[c]) / std[c] per channel (one value: every channel), for a normalisation that is not
    /// inside the model's graph.
    public var mean: [Float]?
    public var std: [Float]?
    /// The model's image layout; nil: read from its declared input shape (a last dimension of 1 or 3 with a
    /// second that is neither means NHWC, as Keras exports are).
    public var layout: ImageLayout?
    /// (C, H, W) for a model whose input has symbolic height/width, or is flat (N, C·H·W).
    public var imageShape: Shape?

    public init(inputScale: Float = 1, mean: [Float]? = nil, std: [Float]? = nil, layout: ImageLayout? = nil,
                imageShape: Shape? = nil) {
        self.inputScale = inputScale
        self.mean = mean
        self.std = std
        self.layout = layout
        self.imageShape = imageShape
    }

    /// Throws a clear error for a scale, mean or std that cannot be applied.
    public func validate(channels: Int? = nil) throws {
        guard inputScale.isFinite, inputScale > 0 else { throw AdvKitError.invalidArgument("the input scale must be > 0, got \(inputScale)") }
        if let mean {
            guard mean.allSatisfy(\.isFinite) else { throw AdvKitError.invalidArgument("--mean has a value that is not a finite number") }
            if let c = channels, mean.count != 1 && mean.count != c {
                throw AdvKitError.invalidArgument("--mean has \(mean.count) values; the model's images have \(c) channel(s): give 1 or \(c)")
            }
        }
        if let std {
            guard std.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw AdvKitError.invalidArgument("--std values must be > 0") }
            if let c = channels, std.count != 1 && std.count != c {
                throw AdvKitError.invalidArgument("--std has \(std.count) values; the model's images have \(c) channel(s): give 1 or \(c)")
            }
        }
    }

    var isIdentity: Bool { inputScale == 1 && mean == nil && std == nil }
}

/// Where the channels are in a model's input.
public enum ImageLayout: String, Sendable, Equatable, CaseIterable {
    case nchw, nhwc
}

/// An image classifier imported from an ONNX file and run on AdvKit's tape: exact gradients with respect to the
/// input (attacks) and to every floating-point initializer (fine-tuning).
///
/// At load, the graph is checked (every op supported, one image input, shapes that fit), simplified where the
/// result is the same function (BatchNormalization after a convolution folded into its weights, Conv/Gemm + Relu
/// fused, Identity and inference Dropout dropped, a final Softmax/LogSoftmax removed so attacks see the logits), and
/// run once on a batch of 1 and of 2 to find the class count and surface any error before the first attack.
/// Integer shape arithmetic (Shape, Gather, Cast, Slice, Concat, Unsqueeze, Squeeze, ConstantOfShape, ...) is
/// evaluated as constants on every pass, once the input's shape is known, and never reaches the tape.
///
/// A model exported with a fixed batch of 1 still takes batches: a Reshape whose constant target starts with
/// the declared batch 1 reshapes the actual batch instead (PyTorch's and tf2onnx's flatten before the classifier
/// head); a graph that bakes the batch in anywhere else runs one image at a time.
public final class ONNXClassifier: Classifier {
    public let model: ONNXModel
    public let path: String
    /// (C, H, W) of one image, as AdvKit holds it (NCHW, [0,1]).
    public let inputShape: Shape
    public private(set) var classCount = 0
    public let layout: ImageLayout
    public let options: ONNXInputOptions
    /// The trainable tensors, one per floating-point initializer the graph uses (after folding), by name.
    public private(set) var parameters: [(name: String, parameter: Parameter)] = []
    /// What load-time simplification did, for the record ("folded 20 BatchNormalization into Conv", ...).
    public private(set) var notes: [String] = []
    /// The op removed from the end of the graph so attacks see logits ("Softmax"), or nil.
    public private(set) var droppedOutputOp: String?

    let nodes: [ONNXNode]
    let inputName: String
    let outputName: String
    let declaredBatch: Int?
    var floatParameters: [String: Parameter] = [:]
    var intConstants: [String: (values: [Int64], dims: [Int])] = [:]
    /// Node index -> the activation fused into it (a Relu that followed it, now an alias).
    var fused: [Int: FusedActivation] = [:]
    /// Add nodes whose Relu (now an alias) runs with them as one node: ResNet's residual join.
    var addReLU = Set<Int>()
    /// Joins (in `addReLU`) that write their result into operand 0 or 1: a Conv's output that nothing else reads.
    var joinOverwrites: [Int: Int] = [:]
    /// (OUT, IN) copies of (IN, OUT) initializers that a Gemm/MatMul reads as Linear's weight.
    var transposed: [ObjectIdentifier: Parameter] = [:]
    /// Tensor renames from removed nodes (their output -> the tensor it equals).
    var alias: [String: String] = [:]
    private(set) var perImage = false

    /// Reads and prepares `path` (.onnx; external data beside it).
    public convenience init(contentsOf path: String, options: ONNXInputOptions = ONNXInputOptions()) throws {
        try self.init(try ONNXModel.read(path), path: path, options: options)
    }

    public init(_ model: ONNXModel, path: String = "<onnx>", options: ONNXInputOptions = ONNXInputOptions()) throws {
        self.model = model
        self.path = path
        self.options = options
        func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: why) }
        let g = model.graph
        if let d = model.opsetImports[""] ?? model.opsetImports["ai.onnx"], d < 7 {
            throw fail("opset \(d) is older than AdvKit reads (7 and later; PyTorch and tf2onnx export 13-20)")
        }
        let inputs = g.dataInputs
        guard inputs.count == 1 else {
            throw fail("the graph has \(inputs.count) data inputs (\(inputs.map(\.name).joined(separator: ", "))); an image classifier has one")
        }
        guard let out = g.outputs.first else { throw fail("the graph has no output") }
        if g.outputs.count > 1 {
            notes.append("the graph has \(g.outputs.count) outputs; the first, \(out.name), is taken as the logits")
        }
        inputName = inputs[0].name
        // Unsupported ops: one error naming them all, with the nodes and what is supported.
        let unsupported = g.nodes.filter { ONNXOps.handlers[$0.opType] == nil || !($0.domain.isEmpty || $0.domain == "ai.onnx") }
        if let first = unsupported.first {
            let kinds = Array(Set(unsupported.map { $0.domain.isEmpty ? $0.opType : "\($0.domain).\($0.opType)" })).sorted()
            throw fail("unsupported op\(kinds.count > 1 ? "s" : "") \(kinds.joined(separator: ", ")) (first at node '\(first.name)'); AdvKit supports \(ONNXOps.handlers.keys.sorted().joined(separator: ", "))")
        }
        (inputShape, layout, declaredBatch) = try ONNXClassifier.imageInput(inputs[0], options: options, fail: fail)
        nodes = g.nodes
        outputName = out.name
        try options.validate(channels: inputShape[0])
        try prepare()
        classCount = try probe()
    }

    /// (C, H, W), the layout and the fixed batch (nil: symbolic) of the declared image input.
    private static func imageInput(_ input: ONNXValueInfo, options: ONNXInputOptions,
                                   fail: (String) -> AdvKitError) throws -> (Shape, ImageLayout, Int?) {
        guard let dims = input.dims else {
            guard let s = options.imageShape else { throw fail("the input \(input.name) declares no shape: pass the image shape (C,H,W)") }
            return (s, options.layout ?? .nchw, nil)
        }
        func fixed(_ d: ONNXValueInfo.Dim) -> Int? { if case let .fixed(v) = d { return v } else { return nil } }
        let batch = dims.first.flatMap(fixed)
        switch dims.count {
        case 4:
            let d = dims.map(fixed)
            let lay: ImageLayout
            if let l = options.layout {
                lay = l
            } else if let last = d[3], [1, 3].contains(last), !(d[1].map { [1, 3].contains($0) } ?? false) {
                lay = .nhwc
            } else {
                lay = .nchw
            }
            let (c, h, w) = lay == .nchw ? (d[1], d[2], d[3]) : (d[3], d[1], d[2])
            if let c, let h, let w {
                let s = Shape(c, h, w)
                if let given = options.imageShape, given != s {
                    throw fail("the model takes images of shape \(s) (C,H,W), not the \(given) given")
                }
                return (s, lay, batch)
            }
            guard let s = options.imageShape else {
                throw fail("the input \(input.name) has symbolic dimensions \(input.typeDescription): pass the image shape (C,H,W)")
            }
            return (s, lay, batch)
        case 2:
            guard let s = options.imageShape else {
                throw fail("the input \(input.name) is flat \(input.typeDescription): pass the image shape (C,H,W) it flattens")
            }
            if let f = fixed(dims[1]), f != s.count { throw fail("the input \(input.name) takes \(f) values per image, the image shape \(s) has \(s.count)") }
            return (s, .nchw, batch)
        default:
            throw fail("the input \(input.name) has rank \(dims.count) \(input.typeDescription); AdvKit takes images (N,C,H,W), (N,H,W,C) or flat (N,D)")
        }
    }

    // MARK: load-time preparation

    /// Initializers into parameters and constants; BatchNormalization folded into the Conv before it; Relu fused
    /// into the Conv/Gemm before it; Identity, Dropout and a final Softmax/LogSoftmax turned into aliases.
    private func prepare() throws {
        let g = model.graph
        for (name, t) in g.initializers {
            switch t.values {
            case let .float(v): floatParameters[name] = Parameter(t.dims.count > 4 ? v : v)
            case let .int(v): intConstants[name] = (v, t.dims)
            }
        }
        // Consumers of each tensor (graph outputs count as a consumer).
        var consumers: [String: [Int]] = [:]
        for (i, n) in nodes.enumerated() { for x in n.inputs where !x.isEmpty { consumers[x, default: []].append(i) } }
        let outputs = Set(g.outputs.map(\.name))
        func onlyConsumer(_ t: String) -> Int? {
            guard !outputs.contains(t), let c = consumers[t], c.count == 1 else { return nil }
            return c[0]
        }
        var removed = Set<Int>()
        // A final Softmax / LogSoftmax: attack the logits before it.
        var outName = outputName
        var producer: [String: Int] = [:]
        for (i, n) in nodes.enumerated() { for o in n.outputs { producer[o] = i } }
        while let p = producer[outName], ["Identity", "Softmax", "LogSoftmax"].contains(nodes[p].opType) {
            if nodes[p].opType != "Identity" { droppedOutputOp = nodes[p].opType }
            removed.insert(p)
            outName = nodes[p].inputs[0]
        }
        if let d = droppedOutputOp { notes.append("the final \(d) is left out: attacks see the logits before it") }
        resolvedOutput = outName
        // BatchNormalization folded into the convolution before it (inference statistics).
        var folded = 0
        for (i, n) in nodes.enumerated() where n.opType == "BatchNormalization" && !removed.contains(i) {
            guard n.inputs.count >= 5, let c = producer[n.inputs[0]], nodes[c].opType == "Conv", onlyConsumer(n.inputs[0]) == i,
                  let w = floatParameters[nodes[c].inputs[1]], w.value.shape.rank == 4,
                  let gamma = floatParameters[n.inputs[1]], let beta = floatParameters[n.inputs[2]],
                  let mean = floatParameters[n.inputs[3]], let variance = floatParameters[n.inputs[4]] else { continue }
            let oc = w.value.shape[0]
            guard [gamma, beta, mean, variance].allSatisfy({ $0.value.count == oc }) else { continue }
            let bias = nodes[c].inputs.count > 2 && !nodes[c].inputs[2].isEmpty ? floatParameters[nodes[c].inputs[2]] : nil
            if nodes[c].inputs.count > 2 && !nodes[c].inputs[2].isEmpty && bias == nil { continue }
            var eps: Float = 1e-5
            if case let .float(e)? = n.attributes["epsilon"] { eps = e }
            var wv = w.value, bv = Tensor(zeros: [oc])
            wv.makeUnique()
            let per = wv.count / oc
            for o in 0..<oc {
                let scale = Double(gamma.value.scalars[o]) / (Double(variance.value.scalars[o]) + Double(eps)).squareRoot()
                for j in 0..<per { wv.storage.pointer[o * per + j] = Float(Double(wv.storage.pointer[o * per + j]) * scale) }
                let b0 = Double(bias?.value.scalars[o] ?? 0)
                bv.storage.pointer[o] = Float((b0 - Double(mean.value.scalars[o])) * scale + Double(beta.value.scalars[o]))
            }
            let wName = nodes[c].inputs[1] + "+" + n.name, bName = (bias == nil ? nodes[c].name + ".bias" : nodes[c].inputs[2]) + "+" + n.name
            floatParameters[wName] = Parameter(wv)
            floatParameters[bName] = Parameter(bv)
            rewritten[c] = (weight: wName, bias: bName)
            alias[n.outputs[0]] = nodes[c].outputs[0]
            removed.insert(i)
            folded += 1
        }
        if folded > 0 { notes.append("folded \(folded) BatchNormalization into the convolution before it") }
        // Identity and Dropout (inference) are aliases.
        for (i, n) in nodes.enumerated() where (n.opType == "Identity" || n.opType == "Dropout") && !removed.contains(i) {
            alias[n.outputs[0]] = n.inputs[0]
            removed.insert(i)
        }
        // Relu fused into the Conv / Gemm before it.
        var fusedCount = 0
        // Readers of each tensor after the aliases above (a Conv → BatchNorm → Relu chain reads the Conv's output).
        var readers: [String: Int] = [:]
        for (i, n) in nodes.enumerated() where !removed.contains(i) {
            for x in n.inputs where !x.isEmpty { readers[resolve(x), default: 0] += 1 }
        }
        for (i, n) in nodes.enumerated() where n.opType == "Relu" && !removed.contains(i) {
            let src = resolve(n.inputs[0])
            guard let p = producer[src], ["Conv", "Gemm"].contains(nodes[p].opType), fused[p] == nil,
                  readers[src] == 1, !outputs.contains(src), resolve(resolvedOutput) != src else { continue }
            fused[p] = .relu
            alias[n.outputs[0]] = src
            removed.insert(i)
            fusedCount += 1
        }
        if fusedCount > 0 { notes.append("fused \(fusedCount) Relu into the Conv/Gemm before it") }
        let clips = fuseClipsIntoConvolutions(producer: producer, graphOutputs: outputs, removed: &removed)
        if clips > 0 { notes.append("fused \(clips) Clip(0, t) into the Conv before it (bounded ReLU)") }
        // Relu after an Add that only it reads (ResNet's residual join): one node, one pass each way.
        var joins = 0
        for (i, n) in nodes.enumerated() where n.opType == "Relu" && !removed.contains(i) {
            let src = resolve(n.inputs[0])
            guard let p = producer[src], nodes[p].opType == "Add", !removed.contains(p), !addReLU.contains(p),
                  readers[src] == 1, !outputs.contains(src), resolve(resolvedOutput) != src else { continue }
            addReLU.insert(p)
            alias[n.outputs[0]] = src
            removed.insert(i)
            joins += 1
        }
        if joins > 0 { notes.append("fused \(joins) Relu into the Add before it (residual join)") }
        // A join may write into an operand that only it reads when that operand is a Conv's output with no fused
        // activation (the block's last convolution, or the downsampling one): one activation buffer fewer.
        for p in addReLU {
            for (k, x) in nodes[p].inputs.prefix(2).enumerated() {
                let src = resolve(x)
                // Not the logits either: a dropped final Softmax is no reader, and an alias (a folded BN, an
                // Identity) gives the graph output another name.
                guard let q = producer[src], nodes[q].opType == "Conv", !removed.contains(q), fused[q] == nil,
                      readers[src] == 1, !outputs.contains(src), resolve(resolvedOutput) != src else { continue }
                joinOverwrites[p] = k
                break
            }
        }
        if !joinOverwrites.isEmpty {
            notes.append("\(joinOverwrites.count) of the joins write into the Conv output they add (no buffer of their own)")
        }
        order = nodes.indices.filter { !removed.contains($0) }
        // The parameters the remaining graph reads, in graph order.
        var seen = Set<String>()
        for i in order {
            let n = nodes[i]
            var names = n.inputs
            if let r = rewritten[i] { names[1] = r.weight; if names.count > 2 { names[2] = r.bias } else { names.append(r.bias) } }
            for x in names where !x.isEmpty && !seen.contains(x) {
                if let p = floatParameters[x] { parameters.append((x, p)); seen.insert(x) }
            }
        }
    }

    var resolvedOutput = ""
    var order: [Int] = []
    /// Conv nodes whose weight and bias were replaced by BatchNormalization-folded ones.
    var rewritten: [Int: (weight: String, bias: String)] = [:]

    func resolve(_ name: String) -> String {
        var n = name
        while let a = alias[n] { n = a }
        return n
    }

    /// Runs the graph on batches of 1 and 2 zero images: any error surfaces at load, and the logits' width is the
    /// class count.
    private func probe() throws -> Int {
        var k = 0
        for n in [1, 2] {
            let tape = Tape(mode: .inference)
            let x = tape.input(Tensor(zeros: Shape([n] + inputShape.dims)))
            let z: Variable
            do {
                z = try forward(x)
            } catch let e as AdvKitError where n == 2 && declaredBatch == 1 {
                // The batch is baked in beyond the Reshape rule: one image at a time.
                perImage = true
                notes.append("the graph fixes its batch at 1 (\(e)); images run one at a time")
                z = try forward(x)
            }
            guard z.shape.rank == 2, z.shape[0] == n, z.shape[1] >= 2 else {
                throw AdvKitError.invalidFile(path: path, reason: "the output \(outputName) has shape \(z.shape) for \(n) image(s); a classifier's logits are (N, classes >= 2)")
            }
            k = z.shape[1]
        }
        return k
    }

    // MARK: running

    public func callAsFunction(_ x: Variable) -> Variable {
        do {
            return try forward(x)
        } catch {
            // The graph ran at load on batches of 1 and 2; shapes are checked before any attack (checkImages).
            preconditionFailure("\(path): \(error)")
        }
    }

    /// The logits (N, classes) of `x` (N, C, H, W) in [0,1] pixels, recorded on x's tape.
    public func forward(_ x: Variable) throws -> Variable {
        let t = x.tape
        guard x.shape.rank == 4, Shape(Array(x.shape.dims.dropFirst())) == inputShape else {
            throw AdvKitError.invalidData("the model takes images of shape \(inputShape) (C, H, W), got \(x.shape)")
        }
        if perImage && x.shape[0] > 1 {
            let rows = try (0..<x.shape[0]).map { i in try run(t.slice(x, starts: [i], ends: [i + 1], axes: [0])) }
            return t.concat(rows, axis: 0)
        }
        return try run(x)
    }

    private func run(_ x: Variable) throws -> Variable {
        let t = x.tape
        var h = x
        if !options.isIdentity {
            if options.inputScale != 1 { h = t.scale(h, by: options.inputScale) }
            let c = inputShape[0]
            if let mean = options.mean {
                let m = Tensor(mean.count == 1 ? [Float](repeating: mean[0], count: c) : mean, shape: [1, c, 1, 1])
                h = t.subtract(h, t.input(m))
            }
            if let std = options.std {
                let s = Tensor(std.count == 1 ? [Float](repeating: std[0], count: c) : std, shape: [1, c, 1, 1])
                h = t.divide(h, t.input(s))
            }
        }
        switch layout {
        case .nchw: break
        case .nhwc: h = t.transpose(h, permutation: [0, 2, 3, 1])
        }
        if model.graph.dataInputs[0].dims?.count == 2 { h = t.flatten(h) }
        var env = ONNXEnvironment(classifier: self, tape: t)
        env.values[inputName] = .variable(h)
        for i in order {
            let n = nodes[i]
            var names = n.inputs
            if let r = rewritten[i] { names[1] = r.weight; if names.count > 2 { names[2] = r.bias } else { names.append(r.bias) } }
            let ins = try names.map { name -> ONNXValue? in name.isEmpty ? nil : try env.value(resolve(name), for: n) }
            let outs: [ONNXValue]
            do {
                outs = try ONNXOps.handlers[n.opType]!(ONNXOps.Context(node: n, index: i, tape: t, classifier: self), ins)
            } catch let e as AdvKitError {
                throw AdvKitError.invalidFile(path: path, reason: "node '\(n.name)' (\(n.opType)): \(e.reasonText)")
            }
            for (name, v) in zip(n.outputs, outs) where !name.isEmpty { env.values[name] = v }
        }
        var z = try env.variable(resolve(resolvedOutput), for: nil)
        if z.shape.rank > 2 && z.shape.count(from: 2) == 1 { z = t.reshape(z, Shape(z.shape[0], z.shape[1])) }
        return z
    }

    /// Predicted class and softmax confidence of each image.
    public func predict(_ images: Tensor, batchSize: Int = 256) -> (classes: [Int], confidences: [Float]) {
        let z = logits(of: images, batchSize: batchSize)
        let probs = Kernels.softmax(z)
        let classes = z.argmaxRows()
        return (classes, classes.enumerated().map { probs.storage.pointer[$0.offset * classCount + $0.element] })
    }

    /// A one-paragraph description: producer, opsets, input, classes, what load-time simplification did.
    public var summary: String {
        var s = "\(URL(fileURLWithPath: path).lastPathComponent): \(model.producerName.isEmpty ? "unknown producer" : model.producerName)"
        s += " \(model.producerVersion), opset \(model.opsetImports[""] ?? model.opsetImports["ai.onnx"] ?? 0), \(model.graph.nodes.count) nodes"
        s += "; input \(inputName) \(layout.rawValue), images \(inputShape), \(classCount) classes"
        if !notes.isEmpty { s += "; " + notes.joined(separator: "; ") }
        return s
    }
}

extension AdvKitError {
    /// The message without a path prefix, to be wrapped in another's.
    var reasonText: String {
        switch self {
        case let .io(_, reason), let .invalidFile(_, reason): return reason
        case let .invalidData(r), let .invalidArgument(r): return r
        }
    }
}
