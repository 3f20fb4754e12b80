/// The geometry of a general 2-D convolution, as ONNX's Conv describes it: a stride per axis, zero padding on
/// each side, dilation and groups. Input (N,C,H,W), weight (OC, C/groups, KH, KW), output (N,OC,OH,OW) with
///
///     OH = ⌊(H + top + bottom − dilation.h·(KH − 1) − 1) / stride.h⌋ + 1   (and likewise OW)
///
/// Input channel block g (C/groups channels) meets only output channel block g (OC/groups filters)
/// (Krizhevsky et al. 2012 for groups, Chollet 2017 / Howard et al. 2017 for depthwise convolutions,
/// Yu & Koltun 2016 for dilation).
public struct Conv2DGeometry: Equatable, Sendable, CustomStringConvertible {
    public var strides: (h: Int, w: Int)
    public var pads: (top: Int, left: Int, bottom: Int, right: Int)
    public var dilations: (h: Int, w: Int)
    public var groups: Int

    public init(strides: (h: Int, w: Int) = (1, 1), pads: (top: Int, left: Int, bottom: Int, right: Int) = (0, 0, 0, 0),
                dilations: (h: Int, w: Int) = (1, 1), groups: Int = 1) {
        self.strides = strides
        self.pads = pads
        self.dilations = dilations
        self.groups = groups
    }

    public static func == (a: Conv2DGeometry, b: Conv2DGeometry) -> Bool {
        a.strides == b.strides && a.pads == b.pads && a.dilations == b.dilations && a.groups == b.groups
    }

    public var description: String {
        "strides \(strides.h)x\(strides.w), pads (t \(pads.top), l \(pads.left), b \(pads.bottom), r \(pads.right)), "
            + "dilations \(dilations.h)x\(dilations.w), groups \(groups)"
    }

    /// The stride and symmetric padding of AdvKit's plain convolution when this geometry is one (groups 1,
    /// dilation 1, one stride, the same padding on all four sides); nil otherwise.
    public var plain: (stride: Int, padding: Int)? {
        guard groups == 1, dilations == (1, 1), strides.h == strides.w, pads.top == pads.left,
              pads.top == pads.bottom, pads.top == pads.right else { return nil }
        return (strides.h, pads.top)
    }

    /// (OH, OW) for an input of H×W and a KH×KW kernel; assumes `validate` passed.
    public func outputSize(height h: Int, width w: Int, kernelHeight kh: Int, kernelWidth kw: Int) -> (h: Int, w: Int) {
        ((h + pads.top + pads.bottom - dilations.h * (kh - 1) - 1) / strides.h + 1,
         (w + pads.left + pads.right - dilations.w * (kw - 1) - 1) / strides.w + 1)
    }

    /// (N, OC, OH, OW) for input (N,C,H,W) and weight (OC, C/groups, KH, KW); assumes `validate` passed.
    public func outputShape(input x: Shape, weight w: Shape) -> Shape {
        let (oh, ow) = outputSize(height: x[2], width: x[3], kernelHeight: w[2], kernelWidth: w[3])
        return Shape(x[0], w[0], oh, ow)
    }

    /// Throws `AdvKitError.invalidData` naming the first mismatch between this geometry, the input shape
    /// (N,C,H,W), the weight shape (OC, C/groups, KH, KW) and the bias shape (OC) if given.
    public func validate(input x: Shape, weight w: Shape, bias b: Shape? = nil) throws {
        func fail(_ why: String) -> AdvKitError { .invalidData("Conv (\(description)): \(why)") }
        guard x.rank == 4 else { throw fail("the input must be (N,C,H,W), got \(x)") }
        guard w.rank == 4 else { throw fail("the weight must be (OC,C/groups,KH,KW), got \(w)") }
        guard strides.h >= 1, strides.w >= 1 else { throw fail("strides must be >= 1") }
        guard dilations.h >= 1, dilations.w >= 1 else { throw fail("dilations must be >= 1") }
        guard pads.top >= 0, pads.left >= 0, pads.bottom >= 0, pads.right >= 0 else { throw fail("pads must be >= 0") }
        guard groups >= 1 else { throw fail("groups must be >= 1") }
        guard x[1] >= 1, x[2] >= 1, x[3] >= 1 else { throw fail("the input \(x) has an empty dimension") }
        guard w[0] >= 1, w[1] >= 1, w[2] >= 1, w[3] >= 1 else { throw fail("the weight \(w) has an empty dimension") }
        guard x[1] % groups == 0 else { throw fail("the input's \(x[1]) channels are not divisible by \(groups) groups") }
        guard w[0] % groups == 0 else {
            throw fail("the weight's \(w[0]) output channels are not divisible by \(groups) groups")
        }
        guard w[1] == x[1] / groups else {
            throw fail("the weight \(w) has \(w[1]) input channels per group; the input \(x) with \(groups) groups needs \(x[1] / groups)")
        }
        let ekh = dilations.h * (w[2] - 1) + 1, ekw = dilations.w * (w[3] - 1) + 1
        guard ekh <= x[2] + pads.top + pads.bottom, ekw <= x[3] + pads.left + pads.right else {
            throw fail("the kernel (\(ekh)x\(ekw) with dilation) is larger than the padded input \(x)")
        }
        if let b, b != Shape(w[0]) { throw fail("the bias must be [\(w[0])], got \(b)") }
    }
}

/// The geometry of ONNX's MaxPool / AveragePool (and PyTorch's MaxPool2d / AvgPool2d): a KH×KW window, a
/// stride per axis, padding on each side, dilation, and floor or ceil rounding of the output size:
///
///     OH = ⌊(H + top + bottom − dilation.h·(KH − 1) − 1 [+ stride.h − 1 in ceil mode]) / stride.h⌋ + 1
///
/// and in ceil mode the last window must start inside the input or the top padding: when
/// (OH − 1)·stride.h ≥ H + top, OH is one less. That is PyTorch's rule, which ONNX's shape inference adopted
/// (onnx/onnx#5741). onnxruntime is not uniform here: the ComputeOutputSize of its pool_attributes.h (the
/// stored version read for this) rounds up without the rule, and its AveragePool before opset 19 divides
/// ceil-mode edge windows by the whole kernel (pytorch/pytorch#183528); opset 19 follows PyTorch
/// (microsoft/onnxruntime#16752). AdvKit follows PyTorch. Padding never wins a max and, for the average, counts
/// towards the divisor only with count_include_pad.
public struct Pool2DGeometry: Equatable, Sendable, CustomStringConvertible {
    public var kernel: (h: Int, w: Int)
    public var strides: (h: Int, w: Int)
    public var pads: (top: Int, left: Int, bottom: Int, right: Int)
    public var ceilMode: Bool
    public var dilations: (h: Int, w: Int)

    public init(kernel: (h: Int, w: Int), strides: (h: Int, w: Int),
                pads: (top: Int, left: Int, bottom: Int, right: Int) = (0, 0, 0, 0), ceilMode: Bool = false,
                dilations: (h: Int, w: Int) = (1, 1)) {
        self.kernel = kernel
        self.strides = strides
        self.pads = pads
        self.ceilMode = ceilMode
        self.dilations = dilations
    }

    public static func == (a: Pool2DGeometry, b: Pool2DGeometry) -> Bool {
        a.kernel == b.kernel && a.strides == b.strides && a.pads == b.pads && a.ceilMode == b.ceilMode
            && a.dilations == b.dilations
    }

    public var description: String {
        "kernel \(kernel.h)x\(kernel.w), strides \(strides.h)x\(strides.w), pads (t \(pads.top), l \(pads.left), "
            + "b \(pads.bottom), r \(pads.right)), dilations \(dilations.h)x\(dilations.w), ceil \(ceilMode)"
    }

    /// One axis: input size, kernel, stride, padding before and after, dilation.
    static func outputLength(_ n: Int, _ k: Int, _ s: Int, _ p0: Int, _ p1: Int, _ d: Int, ceil: Bool) -> Int {
        let span = n + p0 + p1 - d * (k - 1) - 1
        var out = (ceil ? span + s - 1 : span) / s + 1
        if ceil && (out - 1) * s >= n + p0 { out -= 1 }
        return out
    }

    /// (OH, OW) for an H×W input; assumes `validate` passed.
    public func outputSize(height h: Int, width w: Int) -> (h: Int, w: Int) {
        (Self.outputLength(h, kernel.h, strides.h, pads.top, pads.bottom, dilations.h, ceil: ceilMode),
         Self.outputLength(w, kernel.w, strides.w, pads.left, pads.right, dilations.w, ceil: ceilMode))
    }

    /// (N, C, OH, OW) for input (N,C,H,W); assumes `validate` passed.
    public func outputShape(input x: Shape) -> Shape {
        let (oh, ow) = outputSize(height: x[2], width: x[3])
        return Shape(x[0], x[1], oh, ow)
    }

    /// The kernel and stride of AdvKit's plain pools when this geometry is one (square window, one stride, no
    /// padding or dilation, and the floor output size even in ceil mode); nil otherwise.
    public func plain(input x: Shape) -> (kernel: Int, stride: Int)? {
        guard kernel.h == kernel.w, strides.h == strides.w, dilations == (1, 1), pads == (0, 0, 0, 0) else { return nil }
        if ceilMode {
            var floor = self
            floor.ceilMode = false
            guard floor.outputSize(height: x[2], width: x[3]) == outputSize(height: x[2], width: x[3]) else { return nil }
        }
        return (kernel.h, strides.h)
    }

    /// Throws `AdvKitError.invalidData` naming the first problem with this geometry for input (N,C,H,W).
    /// Each padding must be smaller than the kernel along its axis (onnxruntime's rule; PyTorch's is stricter,
    /// at most half the kernel), so that every window holds at least one input element.
    public func validate(input x: Shape) throws {
        func fail(_ why: String) -> AdvKitError { .invalidData("Pool (\(description)): \(why)") }
        guard x.rank == 4 else { throw fail("the input must be (N,C,H,W), got \(x)") }
        guard kernel.h >= 1, kernel.w >= 1 else { throw fail("the kernel must be at least 1x1") }
        guard strides.h >= 1, strides.w >= 1 else { throw fail("strides must be >= 1") }
        guard dilations.h >= 1, dilations.w >= 1 else { throw fail("dilations must be >= 1") }
        guard pads.top >= 0, pads.left >= 0, pads.bottom >= 0, pads.right >= 0 else { throw fail("pads must be >= 0") }
        guard pads.top < kernel.h, pads.bottom < kernel.h, pads.left < kernel.w, pads.right < kernel.w else {
            throw fail("each padding must be smaller than the kernel")
        }
        guard x[1] >= 1, x[2] >= 1, x[3] >= 1 else { throw fail("the input \(x) has an empty dimension") }
        let ekh = dilations.h * (kernel.h - 1) + 1, ekw = dilations.w * (kernel.w - 1) + 1
        guard ekh <= x[2] + pads.top + pads.bottom, ekw <= x[3] + pads.left + pads.right else {
            throw fail("the window (\(ekh)x\(ekw) with dilation) is larger than the padded input \(x)")
        }
    }
}
