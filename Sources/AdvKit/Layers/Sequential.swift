/// Layers applied in order, each with a name that prefixes its parameters' names, as in PyTorch:
/// a child named "conv1" owns "conv1.weight" and "conv1.bias". Unnamed children are numbered ("0", "1").
public final class Sequential: Layer {
    public private(set) var children: [(name: String, layer: Layer)]

    public init(_ named: [(String, Layer)]) {
        children = named.map { (name: $0.0, layer: $0.1) }
    }

    public init(_ layers: [Layer]) {
        children = layers.enumerated().map { (name: String($0.offset), layer: $0.element) }
    }

    /// Applies the children in order. A Conv2D or Linear followed directly by ReLU or BoundedReLU runs as one
    /// fused node (the activation in the kernel's epilogue): the same values and gradients, one pass less. A
    /// 2x2 stride-2 MaxPool2D right after such a Conv2D runs in the same kernel call (`Tape.conv2dMaxPool2x2`).
    public func callAsFunction(_ x: Variable) -> Variable {
        var h = x
        var i = 0
        while i < children.count {
            let layer = children[i].layer
            let next = i + 1 < children.count ? children[i + 1].layer : nil
            if let act = Sequential.fusable(next) {
                if let conv = layer as? Conv2D {
                    if i + 2 < children.count, let pool = children[i + 2].layer as? MaxPool2D,
                       pool.kernelSize == 2, pool.stride == 2 {
                        h = conv.maxPooled2x2(h, activation: act)
                        i += 3
                        continue
                    }
                    h = conv(h, activation: act)
                    i += 2
                    continue
                }
                if let fc = layer as? Linear {
                    h = fc(h, activation: act)
                    i += 2
                    continue
                }
            }
            h = layer(h)
            i += 1
        }
        return h
    }

    static func fusable(_ layer: Layer?) -> FusedActivation? {
        if let r = layer as? ReLU { return r.fused }
        if let b = layer as? BoundedReLU { return b.fused }
        return nil
    }

    public var namedTensors: [(name: String, tensor: NamedTensor)] {
        children.flatMap { child in child.layer.namedTensors.map { (name: child.name + "." + $0.name, tensor: $0.tensor) } }
    }

    /// The child layer named `name`.
    public subscript(name: String) -> Layer? { children.first { $0.name == name }?.layer }
}

/// y = f(x) + shortcut(x): a residual block (He et al. 2016). `shortcut` is the identity unless given
/// (a 1×1 convolution when the shape changes).
public final class Residual: Layer {
    public let body: Sequential
    public let shortcut: Sequential?
    public let activation: Layer?

    public init(body: Sequential, shortcut: Sequential? = nil, activation: Layer? = ReLU()) {
        self.body = body
        self.shortcut = shortcut
        self.activation = activation
    }

    public func callAsFunction(_ x: Variable) -> Variable {
        let y = body(x) + (shortcut.map { $0(x) } ?? x)
        return activation.map { $0(y) } ?? y
    }

    public var namedTensors: [(name: String, tensor: NamedTensor)] {
        let b = body.namedTensors
        let s = shortcut.map { sc in sc.namedTensors.map { (name: "downsample." + $0.name, tensor: $0.tensor) } } ?? []
        return b + s
    }
}
