import CKernels
import Foundation

/// The only file that imports CKernels: thin, typed wrappers over the C kernels. Callers validate shapes
/// first (the C side trusts its arguments); these wrappers check them again with preconditions.
enum Kernels {
    // Forward kernels write into the output tensor's buffer as it is: the tape hands them buffers it owns
    // (pooled across passes), so they must not copy-on-write. In-place updates of caller-visible tensors
    // (attack steps, optimizers, noise) do make the tensor unique first.
    /// Runs once, before the first kernel: sets the thread count (which pins OpenBLAS to one thread).
    static let initialized: Bool = {
        ck_set_num_threads(Parallelism.defaultThreads)
        return true
    }()

    @inline(__always) static func ready() { _ = initialized }

    // MARK: GEMM

    /// C = alpha op(A) op(B) + beta C (row-major).
    static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
                      c: UnsafeMutablePointer<Float>, ldc: Int, naive: Bool = false) {
        ready()
        if naive {
            ck_sgemm_naive(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        } else {
            ck_sgemm(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        }
    }

    // MARK: convolution

    static func convShape(_ x: Shape, _ w: Shape, stride: Int, padding: Int) -> ck_conv2d_shape {
        let oh = (x[2] + 2 * padding - w[2]) / stride + 1, ow = (x[3] + 2 * padding - w[3]) / stride + 1
        return ck_conv2d_shape(N: x[0], C: x[1], H: x[2], W: x[3], OC: w[0], KH: w[2], KW: w[3],
                               stride: stride, pad: padding, OH: oh, OW: ow)
    }

    static func convWorkspaceFloats(_ s: ck_conv2d_shape) -> Int {
        ready()
        var s = s
        return ck_conv2d_workspace_floats(&s, ck_get_num_threads())
    }

    static func convForward(out: inout Tensor, workspace: UnsafeMutablePointer<Float>, input: Tensor,
                            weight: Tensor, bias: Tensor?, shape s: ck_conv2d_shape, activation: FusedActivation = .none) {
        ready()
        var s = s
        if let (packs, tiles) = WinogradFilterCache.shared.packs(weight: weight, shape: s, inputGradient: false) {
            withExtendedLifetime(packs) {
                switch tiles {
                case .six:
                    ck_conv2d_winograd6_forward_packed(out.storage.pointer, workspace, packs.pointer,
                                                       input.storage.pointer, bias?.storage.pointer, &s, activation.ck,
                                                       activation.bound)
                case .four:
                    ck_conv2d_winograd_forward_packed(out.storage.pointer, workspace, packs.pointer,
                                                      input.storage.pointer, bias?.storage.pointer, &s, activation.ck,
                                                      activation.bound)
                }
            }
            return
        }
        ck_conv2d_forward(out.storage.pointer, workspace, input.storage.pointer, weight.storage.pointer,
                          bias?.storage.pointer, &s, activation.ck, activation.bound)
    }

    /// `convForward` and a 2x2 stride-2 max-pool of its output (`maxPoolForward`): the same values and indices. Where
    /// the convolution runs image by image (no Winograd, no batching) each image is pooled while its output is still
    /// in cache (ck_conv2d_forward_maxpool2x2).
    static func convForwardMaxPool2x2(out: inout Tensor, pooled: inout Tensor, argmax: UnsafeMutablePointer<Int32>,
                                      workspace: UnsafeMutablePointer<Float>, input: Tensor, weight: Tensor,
                                      bias: Tensor?, shape s: ck_conv2d_shape, activation: FusedActivation) {
        ready()
        var s = s
        if ck_winograd6_applies(&s, 0) != 0 || ck_winograd_f2x3_applies(&s) != 0 {  // the filter cache's routes
            convForward(out: &out, workspace: workspace, input: input, weight: weight, bias: bias, shape: s,
                        activation: activation)
            maxPoolForward(out: &pooled, argmax: argmax, input: out,
                           shape: poolShape(out.shape, kernel: 2, stride: 2))
            return
        }
        ck_conv2d_forward_maxpool2x2(out.storage.pointer, pooled.storage.pointer, argmax, workspace,
                                     input.storage.pointer, weight.storage.pointer, bias?.storage.pointer, &s,
                                     activation.ck, activation.bound)
    }

    /// dst = dout masked by where the activation passed its input (out: the forward's output).
    static func activationMask(_ dst: UnsafeMutablePointer<Float>, dOut: Tensor, out: Tensor, activation: FusedActivation) {
        ck_activation_mask(dst, dOut.storage.pointer, out.storage.pointer, activation.ck, activation.bound, out.count)
    }

    /// g masked in place by where the activation passed its input (out: the forward's output).
    static func activationMaskInPlace(_ g: UnsafeMutablePointer<Float>, out: Tensor, activation: FusedActivation) {
        ck_activation_mask_inplace(g, out.storage.pointer, activation.ck, activation.bound, out.count)
    }

    static func convBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                             dBias: UnsafeMutablePointer<Float>?, workspace: UnsafeMutablePointer<Float>,
                             dOut: Tensor, input: Tensor, weight: Tensor, shape s: ck_conv2d_shape) {
        ready()
        var s = s
        if let dInput, dWeight == nil, dBias == nil,
           let (packs, tiles) = WinogradFilterCache.shared.packs(weight: weight, shape: s, inputGradient: true) {
            withExtendedLifetime(packs) {
                switch tiles {
                case .six:
                    ck_conv2d_winograd6_backward_input_packed(dInput, workspace, packs.pointer, dOut.storage.pointer, &s)
                case .four:
                    ck_conv2d_winograd_backward_input_packed(dInput, workspace, packs.pointer, dOut.storage.pointer, &s)
                }
            }
            return
        }
        ck_conv2d_backward(dInput, dWeight, dBias, workspace, dOut.storage.pointer, input.storage.pointer,
                           weight.storage.pointer, &s)
    }

    /// t = tanh(w), x = lo + span (t + 1) / 2 (C&W's change of variables), one vectorised pass.
    static func tanhBox(t: inout Tensor, x: inout Tensor, w: Tensor, lo: Float, span: Float) {
        precondition(t.count == w.count && x.count == w.count)
        ck_tanh_box(t.storage.pointer, x.storage.pointer, w.storage.pointer, lo, span, w.count)
    }

    // MARK: linear

    static func linearForward(out: inout Tensor, input: Tensor, weight: Tensor, bias: Tensor?,
                              activation: FusedActivation = .none) {
        ready()
        ck_linear_forward(out.storage.pointer, input.storage.pointer, weight.storage.pointer,
                          bias?.storage.pointer, input.shape[0], weight.shape[1], weight.shape[0], activation.ck,
                          activation.bound)
    }

    static func linearBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                               dBias: UnsafeMutablePointer<Float>?, dOut: Tensor, input: Tensor, weight: Tensor) {
        ready()
        ck_linear_backward(dInput, dWeight, dBias, dOut.storage.pointer, input.storage.pointer,
                           weight.storage.pointer, input.shape[0], weight.shape[1], weight.shape[0])
    }

    // MARK: pooling

    static func poolShape(_ x: Shape, kernel: Int, stride: Int) -> ck_pool_shape {
        ck_pool_shape(N: x[0], C: x[1], H: x[2], W: x[3], K: kernel, stride: stride,
                      OH: (x[2] - kernel) / stride + 1, OW: (x[3] - kernel) / stride + 1)
    }

    static func maxPoolForward(out: inout Tensor, argmax: UnsafeMutablePointer<Int32>, input: Tensor,
                               shape s: ck_pool_shape) {
        ready()
        var s = s
        ck_maxpool2d_forward(out.storage.pointer, argmax, input.storage.pointer, &s)
    }

    static func maxPoolBackward(dInput: UnsafeMutablePointer<Float>, dOut: Tensor, argmax: UnsafePointer<Int32>,
                                shape s: ck_pool_shape) {
        ready()
        var s = s
        ck_maxpool2d_backward(dInput, dOut.storage.pointer, argmax, &s)
    }

    /// `output`: the pool's forward output (the activation's value at each argmax, which the mask tests).
    static func maxPoolBackwardMasked(dInput: UnsafeMutablePointer<Float>, dOut: Tensor, argmax: UnsafePointer<Int32>,
                                      output: Tensor, activation: FusedActivation, shape s: ck_pool_shape) {
        ready()
        var s = s
        ck_maxpool2d_backward_masked(dInput, dOut.storage.pointer, argmax, output.storage.pointer, activation.ck,
                                     activation.bound, &s)
    }

    static func avgPoolForward(out: inout Tensor, input: Tensor, shape s: ck_pool_shape) {
        ready()
        var s = s
        ck_avgpool2d_forward(out.storage.pointer, input.storage.pointer, &s)
    }

    static func avgPoolBackward(dInput: UnsafeMutablePointer<Float>, dOut: Tensor, shape s: ck_pool_shape) {
        ready()
        var s = s
        ck_avgpool2d_backward(dInput, dOut.storage.pointer, &s)
    }

    // MARK: activations

    static func relu(out: inout Tensor, input: Tensor) {
        ck_relu_forward(out.storage.pointer, input.storage.pointer, input.count)
    }

    /// out = max(a + b, 0), one pass over the threads (residual.c).
    static func addReLU(out: inout Tensor, _ a: Tensor, _ b: Tensor) {
        ready()
        precondition(a.count == b.count && out.count == a.count)
        ck_add_relu_forward(out.storage.pointer, a.storage.pointer, b.storage.pointer, a.count)
    }

    /// da, db += dOut where out > 0 (nil: not wanted; the same pointer twice adds twice).
    static func addReLUBackward(_ da: UnsafeMutablePointer<Float>?, _ db: UnsafeMutablePointer<Float>?, dOut: Tensor, out: Tensor) {
        ready()
        precondition(dOut.count == out.count)
        ck_add_relu_backward(da, db, dOut.storage.pointer, out.storage.pointer, out.count)
    }

    /// g = g where out > 0 (in place); db = the same, written, unless nil.
    static func addReLUBackwardFirst(_ g: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>?, out: Tensor) {
        ready()
        ck_add_relu_backward_first(g, db, out.storage.pointer, out.count)
    }

    static func reluBackward(dInput: UnsafeMutablePointer<Float>, dOut: Tensor, out: Tensor) {
        ck_relu_backward(dInput, dOut.storage.pointer, out.storage.pointer, out.count)
    }

    static func boundedReLU(out: inout Tensor, input: Tensor, bound: Float) {
        ck_brelu_forward(out.storage.pointer, input.storage.pointer, bound, input.count)
    }

    static func boundedReLUBackward(dInput: UnsafeMutablePointer<Float>, dOut: Tensor, out: Tensor, bound: Float) {
        ck_brelu_backward(dInput, dOut.storage.pointer, out.storage.pointer, bound, out.count)
    }

    // MARK: batch norm

    static func batchNormTrain(out: inout Tensor, xhat: inout Tensor, mean: inout Tensor, invstd: inout Tensor,
                               input: Tensor, gamma: Tensor, beta: Tensor, eps: Float) {
        let s = input.shape
        ck_batchnorm2d_forward_train(out.storage.pointer, xhat.storage.pointer, mean.storage.pointer,
                                     invstd.storage.pointer, input.storage.pointer, gamma.storage.pointer,
                                     beta.storage.pointer, s[0], s[1], s.count(from: 2), eps)
    }

    static func batchNormEval(out: inout Tensor, input: Tensor, gamma: Tensor, beta: Tensor,
                              runningMean: Tensor, runningVar: Tensor, eps: Float) {
        let s = input.shape
        ck_batchnorm2d_forward_eval(out.storage.pointer, input.storage.pointer, gamma.storage.pointer,
                                    beta.storage.pointer, runningMean.storage.pointer, runningVar.storage.pointer,
                                    s[0], s[1], s.count(from: 2), eps)
    }

    static func batchNormBackward(dInput: UnsafeMutablePointer<Float>?, dGamma: UnsafeMutablePointer<Float>?,
                                  dBeta: UnsafeMutablePointer<Float>?, dOut: Tensor, xhat: Tensor, invstd: Tensor,
                                  gamma: Tensor) {
        let s = xhat.shape
        ck_batchnorm2d_backward(dInput, dGamma, dBeta, dOut.storage.pointer, xhat.storage.pointer,
                                invstd.storage.pointer, gamma.storage.pointer, s[0], s[1], s.count(from: 2))
    }

    // MARK: softmax cross-entropy

    static func softmaxCrossEntropy(losses: inout Tensor, probs: inout Tensor, logits: Tensor,
                                    labels: UnsafePointer<Int32>, smoothing: Float) {
        ck_softmax_xent_forward(losses.storage.pointer, probs.storage.pointer, logits.storage.pointer, labels,
                                smoothing, logits.shape[0], logits.shape[1])
    }

    static func softmaxCrossEntropyBackward(dLogits: UnsafeMutablePointer<Float>, probs: Tensor,
                                            labels: UnsafePointer<Int32>, scale: UnsafePointer<Float>?,
                                            smoothing: Float) {
        ck_softmax_xent_backward(dLogits, probs.storage.pointer, labels, scale, smoothing, probs.shape[0],
                                 probs.shape[1])
    }

    static func softCrossEntropy(losses: inout Tensor, probs: inout Tensor, logits: Tensor, target: Tensor) {
        ck_softmax_xent_soft_forward(losses.storage.pointer, probs.storage.pointer, logits.storage.pointer,
                                     target.storage.pointer, logits.shape[0], logits.shape[1])
    }

    static func softCrossEntropyBackward(dLogits: UnsafeMutablePointer<Float>, probs: Tensor, target: Tensor,
                                         scale: UnsafePointer<Float>?) {
        ck_softmax_xent_soft_backward(dLogits, probs.storage.pointer, target.storage.pointer, scale,
                                      probs.shape[0], probs.shape[1])
    }

    static func softmax(_ logits: Tensor) -> Tensor {
        let out = Tensor(uninitialized: logits.shape)
        ck_softmax(out.storage.pointer, logits.storage.pointer, logits.shape[0], logits.shape.itemCount)
        return out
    }

    static func logSoftmax(_ logits: Tensor) -> Tensor {
        let out = Tensor(uninitialized: logits.shape)
        ck_log_softmax(out.storage.pointer, logits.storage.pointer, logits.shape[0], logits.shape.itemCount)
        return out
    }

    // MARK: attack steps

    static func linfStep(_ x: inout Tensor, gradient g: Tensor, origin x0: Tensor, alpha: Float, epsilon: Float,
                         lo: Float, hi: Float) {
        x.makeUnique()
        ck_linf_step(x.storage.pointer, g.storage.pointer, x0.storage.pointer, alpha, epsilon, lo, hi, x.count)
    }

    static func projectLinf(_ x: inout Tensor, origin x0: Tensor, epsilon: Float, lo: Float, hi: Float) {
        x.makeUnique()
        ck_project_linf(x.storage.pointer, x0.storage.pointer, epsilon, lo, hi, x.count)
    }

    static func l2Step(_ x: inout Tensor, gradient g: Tensor, origin x0: Tensor, alpha: Float, epsilon: Float,
                       lo: Float, hi: Float) {
        x.makeUnique()
        ck_l2_step(x.storage.pointer, g.storage.pointer, x0.storage.pointer, alpha, epsilon, lo, hi, x.shape[0],
                   x.shape.itemCount)
    }

    static func projectL2(_ x: inout Tensor, origin x0: Tensor, epsilon: Float, lo: Float, hi: Float) {
        x.makeUnique()
        ck_project_l2(x.storage.pointer, x0.storage.pointer, epsilon, lo, hi, x.shape[0], x.shape.itemCount)
    }

    /// Doubles of scratch `fabStep` needs for images of `pixels` values.
    static func fabStepScratchCount(pixels d: Int) -> Int { ck_fab_step_workspace_doubles(d, ck_get_num_threads()) }

    /// FAB's projection and extrapolation step for every image (ck_fab_step, fab_step.c): out, x1, x0, w (N, D).
    static func fabStep(_ out: inout Tensor, scratch: UnsafeMutablePointer<Double>, point x1: Tensor, origin x0: Tensor,
                        normal w: Tensor, value f: [Float], norm: Norm, alphaMax: Float, eta: Float, lo: Float, hi: Float) {
        out.makeUnique()
        f.withUnsafeBufferPointer { fp in
            ck_fab_step(out.storage.pointer, scratch, x1.storage.pointer, x0.storage.pointer, w.storage.pointer,
                        fp.baseAddress, x1.shape[0], x1.shape.itemCount, norm == .l2 ? 1 : 0, alphaMax, eta, lo, hi)
        }
    }

    static func clip(_ x: inout Tensor, lo: Float, hi: Float) {
        x.makeUnique()
        ck_clip(x.storage.pointer, lo, hi, x.count)
    }

    /// Per-sample (L0, L2, Linf) norms of a - b; L0 counts differences above `tolerance`.
    static func diffNorms(_ a: Tensor, _ b: Tensor, tolerance: Float) -> (l0: [Float], l2: [Float], linf: [Float]) {
        let n = a.shape[0], d = a.shape.itemCount
        var l0 = [Float](repeating: 0, count: n), l2 = l0, linf = l0
        l0.withUnsafeMutableBufferPointer { p0 in
            l2.withUnsafeMutableBufferPointer { p2 in
                linf.withUnsafeMutableBufferPointer { pi in
                    ck_diff_norms(p0.baseAddress, p2.baseAddress, pi.baseAddress, a.storage.pointer,
                                  b.storage.pointer, tolerance, n, d)
                }
            }
        }
        return (l0, l2, linf)
    }

    // MARK: random numbers

    static func randomUniform(_ out: inout Tensor, seed: UInt64, stream: UInt64, offset: UInt64 = 0,
                              lo: Float, hi: Float) {
        out.makeUnique()
        ck_random_uniform(out.storage.pointer, seed, stream, offset, lo, hi, out.count)
    }

    static func randomNormal(_ out: inout Tensor, seed: UInt64, stream: UInt64, offset: UInt64 = 0, mean: Float,
                             std: Float) {
        out.makeUnique()
        ck_random_normal(out.storage.pointer, seed, stream, offset, mean, std, out.count)
    }

    static func addGaussianNoise(out: inout Tensor, input: Tensor, seed: UInt64, stream: UInt64, offset: UInt64 = 0,
                                 std: Float, lo: Float, hi: Float) {
        out.makeUnique()
        ck_add_gaussian_noise(out.storage.pointer, input.storage.pointer, seed, stream, offset, std, lo, hi,
                              input.count)
    }

    static func randomU64(seed: UInt64, stream: UInt64, counter: UInt64) -> UInt64 {
        ck_random_u64(seed, stream, counter)
    }

    // MARK: optimizers

    static func sgdStep(param: inout Tensor, velocity: inout Tensor, grad: Tensor, lr: Float, momentum: Float,
                        weightDecay: Float, first: Bool) {
        param.makeUnique(); velocity.makeUnique()
        ck_sgd_step(param.storage.pointer, velocity.storage.pointer, grad.storage.pointer, lr, momentum,
                    weightDecay, first ? 1 : 0, param.count)
    }

    static func adamStep(param: inout Tensor, m: inout Tensor, v: inout Tensor, grad: Tensor, lr: Float,
                         beta1: Float, beta2: Float, eps: Float, weightDecay: Float, step: Int) {
        param.makeUnique(); m.makeUnique(); v.makeUnique()
        ck_adam_step(param.storage.pointer, m.storage.pointer, v.storage.pointer, grad.storage.pointer, lr, beta1,
                     beta2, eps, weightDecay, step, param.count)
    }

    // MARK: threads

    static func setThreads(_ n: Int) { ready(); ck_set_num_threads(n) }
    static var threads: Int { ready(); return ck_get_num_threads() }
    static var cpuCount: Int { ck_cpu_count() }
    static var blasCoreName: String { ready(); return String(cString: ck_blas_corename()) }
}

/// An activation fused into the epilogue of a convolution or a linear layer.
public enum FusedActivation: Equatable, Sendable {
    case none, relu
    /// min(max(x, 0), t)
    case boundedReLU(Float)

    var ck: ck_activation {
        switch self {
        case .none: return CK_ACT_NONE
        case .relu: return CK_ACT_RELU
        case .boundedReLU: return CK_ACT_BRELU
        }
    }

    var bound: Float {
        if case let .boundedReLU(t) = self { return t }
        return 0
    }
}

/// How many threads AdvKit's kernels use.
public enum Parallelism {
    /// The default: `ADVKIT_THREADS` if set, else `OMP_NUM_THREADS`, else the number of online CPUs.
    public static var defaultThreads: Int {
        let env = ProcessInfo.processInfo.environment
        for key in ["ADVKIT_THREADS", "OMP_NUM_THREADS"] {
            if let v = env[key], let n = Int(v), n > 0 { return n }
        }
        return Int(ck_cpu_count())
    }

    /// Threads used by every kernel from now on (>= 1). OpenBLAS is kept at one thread: the kernels split
    /// their own work across OpenMP threads, so two thread pools never compete for the cores.
    public static var threads: Int {
        get { Kernels.threads }
        set {
            precondition(newValue >= 1, "threads must be >= 1, got \(newValue)")
            Kernels.setThreads(newValue)
        }
    }

    /// The OpenBLAS kernel family in use (e.g. "Haswell" when OPENBLAS_CORETYPE=Haswell is set).
    public static var blasCoreName: String { Kernels.blasCoreName }
}

import Foundation

// MARK: - General convolution and pooling (conv_general.c, pool_general.c)

extension Kernels {
    static func convGeneralShape(_ x: Shape, _ w: Shape, _ g: Conv2DGeometry) -> ck_conv2d_general_shape {
        let (oh, ow) = g.outputSize(height: x[2], width: x[3], kernelHeight: w[2], kernelWidth: w[3])
        return ck_conv2d_general_shape(N: x[0], C: x[1], H: x[2], W: x[3], OC: w[0], KH: w[2], KW: w[3], G: g.groups,
                                       stride_h: g.strides.h, stride_w: g.strides.w, pad_t: g.pads.top,
                                       pad_l: g.pads.left, pad_b: g.pads.bottom, pad_r: g.pads.right,
                                       dil_h: g.dilations.h, dil_w: g.dilations.w, OH: oh, OW: ow)
    }

    /// Scratch floats for the general convolution at the current thread count; `weightGradient` when the backward
    /// call asks for d(weight) or d(bias).
    static func convGeneralWorkspaceFloats(_ s: ck_conv2d_general_shape, weightGradient: Bool) -> Int {
        ready()
        var s = s
        return ck_conv2d_general_workspace_floats(&s, ck_get_num_threads(), weightGradient ? 1 : 0)
    }

    static func convGeneralForward(out: inout Tensor, workspace: UnsafeMutablePointer<Float>, input: Tensor,
                                   weight: Tensor, bias: Tensor?, shape s: ck_conv2d_general_shape,
                                   activation: FusedActivation) {
        ready()
        precondition(out.count == s.N * s.OC * s.OH * s.OW && input.count == s.N * s.C * s.H * s.W
                     && weight.count == s.OC * (s.C / s.G) * s.KH * s.KW && (bias?.count ?? s.OC) == s.OC)
        var s = s
        ck_conv2d_general_forward(out.storage.pointer, workspace, input.storage.pointer, weight.storage.pointer,
                                  bias?.storage.pointer, &s, activation.ck, activation.bound)
    }

    static func convGeneralBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                                    dBias: UnsafeMutablePointer<Float>?, workspace: UnsafeMutablePointer<Float>,
                                    dOut: Tensor, input: Tensor, weight: Tensor, shape s: ck_conv2d_general_shape) {
        ready()
        precondition(dOut.count == s.N * s.OC * s.OH * s.OW && input.count == s.N * s.C * s.H * s.W)
        var s = s
        ck_conv2d_general_backward(dInput, dWeight, dBias, workspace, dOut.storage.pointer, input.storage.pointer,
                                   weight.storage.pointer, &s)
    }

    static func poolGeneralShape(_ x: Shape, _ g: Pool2DGeometry) -> ck_pool2d_general_shape {
        let (oh, ow) = g.outputSize(height: x[2], width: x[3])
        return ck_pool2d_general_shape(N: x[0], C: x[1], H: x[2], W: x[3], KH: g.kernel.h, KW: g.kernel.w,
                                       stride_h: g.strides.h, stride_w: g.strides.w, pad_t: g.pads.top,
                                       pad_l: g.pads.left, pad_b: g.pads.bottom, pad_r: g.pads.right,
                                       dil_h: g.dilations.h, dil_w: g.dilations.w, OH: oh, OW: ow)
    }

    static func maxPoolGeneralForward(out: inout Tensor, argmax: UnsafeMutablePointer<Int32>, input: Tensor,
                                      shape s: ck_pool2d_general_shape) {
        ready()
        precondition(out.count == s.N * s.C * s.OH * s.OW && input.count == s.N * s.C * s.H * s.W)
        var s = s
        ck_maxpool2d_general_forward(out.storage.pointer, argmax, input.storage.pointer, &s)
    }

    static func maxPoolGeneralBackward(dInput: UnsafeMutablePointer<Float>, dOut: Tensor, argmax: UnsafePointer<Int32>,
                                       shape s: ck_pool2d_general_shape) {
        ready()
        var s = s
        ck_maxpool2d_general_backward(dInput, dOut.storage.pointer, argmax, &s)
    }

    static func avgPoolGeneralForward(out: inout Tensor, input: Tensor, shape s: ck_pool2d_general_shape,
                                      countIncludePad: Bool) {
        ready()
        precondition(out.count == s.N * s.C * s.OH * s.OW && input.count == s.N * s.C * s.H * s.W)
        var s = s
        ck_avgpool2d_general_forward(out.storage.pointer, input.storage.pointer, &s, countIncludePad ? 1 : 0)
    }

    static func avgPoolGeneralBackward(dInput: UnsafeMutablePointer<Float>, dOut: Tensor,
                                       shape s: ck_pool2d_general_shape, countIncludePad: Bool) {
        ready()
        var s = s
        ck_avgpool2d_general_backward(dInput, dOut.storage.pointer, &s, countIncludePad ? 1 : 0)
    }
}

/// Winograd-transformed filters kept across calls with the same weights (Lavin & Gray 2016's U = G g Gᵀ, see
/// winograd.c): during an attack the weights do not change, and transforming them again on every step cost a
/// pass over every 3x3 layer's filters per direction (ResNet-18: ~17M floats written per direction and pass).
///
/// Keyed by the weight's buffer, which the cache holds (a strong reference): while it does, the buffer is shared,
/// so every write through `Tensor`'s API (an optimizer step, `withUnsafeMutableBufferPointer`, a subscript) copies
/// it first (copy-on-write) and the weight then lives in another buffer, which misses. A cached buffer's contents
/// therefore never change, and training never reads a stale transform; the tape's pools check the same
/// uniqueness before they write a buffer again. Entries whose weight nobody else holds any more are dropped on the
/// next miss, and the least recently used ones beyond `capacityFloats`.
///
/// Results are bit for bit those of the uncached path (the same packs, the same run). `ADVKIT_WINOGRAD_CACHE=off`
/// turns it off (A/B measurements).
final class WinogradFilterCache: @unchecked Sendable {
    static let shared = WinogradFilterCache()

    /// One weight buffer's transformed filters, for either direction (one entry, so that the cache holds the
    /// weight once and "only the cache holds it" is a unique reference).
    private final class Entry {
        var weight: TensorStorage
        var packs: [TensorStorage?] = [nil, nil]  // forward, input gradient
        var lastUse: UInt64
        init(weight: TensorStorage, lastUse: UInt64) {
            self.weight = weight
            self.lastUse = lastUse
        }
        var floats: Int { packs.reduce(0) { $0 + ($1?.capacity ?? 0) } }
        /// Nobody but this entry holds the weight any more: it can never be used again.
        func weightIsDead() -> Bool { isKnownUniquelyReferenced(&weight) }
    }

    private struct Key: Hashable {
        let weight: ObjectIdentifier
        let c: Int, oc: Int
        let tiles: Tiles
    }

    /// Which transform the packs are for: winograd6.c's 6x6 tiles (F(4x4, 3x3), F(2x2, 5x5)) or winograd.c's 4x4
    /// (F(2x2, 3x3)). Part of the key: the choice can change at run time (`ck_winograd6_set_enabled`, `ADVKIT_WINOGRAD`).
    enum Tiles: Hashable { case six, four }

    private let lock = NSLock()
    private var entries: [Key: Entry] = [:]
    private var clock: UInt64 = 0
    private var floats = 0
    private var enabledValue = ProcessInfo.processInfo.environment["ADVKIT_WINOGRAD_CACHE"] != "off"
    private var capacity = 128 << 20
    private var hitCount = 0, missCount = 0

    /// Whether calls use the cache (off: every call transforms its filters, as before).
    var enabled: Bool {
        get { lock.lock(); defer { lock.unlock() }; return enabledValue }
        set { lock.lock(); defer { lock.unlock() }; enabledValue = newValue; if !newValue { removeAllLocked() } }
    }

    /// The most floats of transformed filters kept (128M floats, 512 MB): ResNet-18's both directions take 33.9M
    /// with F(2x2, 3x3)'s 4x4 transforms and ~2.25x that with F(4x4, 3x3)'s 6x6 ones (winograd6.c).
    var capacityFloats: Int {
        get { lock.lock(); defer { lock.unlock() }; return capacity }
        set { lock.lock(); defer { lock.unlock() }; capacity = newValue; evictLocked(needing: 0) }
    }

    /// Diagnostics (tests): calls served from the cache, calls that transformed, weights and floats held.
    var statistics: (hits: Int, misses: Int, entries: Int, floats: Int) {
        lock.lock(); defer { lock.unlock() }
        return (hitCount, missCount, entries.count, floats)
    }

    /// Forgets every entry and zeroes the counters.
    func removeAll() { lock.lock(); defer { lock.unlock() }; removeAllLocked() }

    private func removeAllLocked() {
        entries.removeAll()
        floats = 0
        hitCount = 0
        missCount = 0
    }

    /// The transformed filters of `weight` for a convolution of shape `s` in one direction, or nil when the
    /// Winograd route does not take it (or the cache is off): the caller then runs the ordinary entry point.
    func packs(weight: Tensor, shape s: ck_conv2d_shape, inputGradient: Bool) -> (TensorStorage, Tiles)? {
        var s = s
        let direction: Int32 = inputGradient ? 1 : 0
        let tiles: Tiles
        if ck_winograd6_applies(&s, direction) != 0 {
            tiles = .six
        } else if ck_winograd_f2x3_applies(&s) != 0 {
            tiles = .four
        } else {
            return nil
        }
        precondition(weight.count == s.OC * s.C * s.KH * s.KW,
                     "Winograd filters: weight \(weight.shape) for shape C \(s.C) OC \(s.OC)")
        lock.lock(); defer { lock.unlock() }
        guard enabledValue else { return nil }
        clock += 1
        let key = Key(weight: ObjectIdentifier(weight.storage), c: s.C, oc: s.OC, tiles: tiles)
        let slot = inputGradient ? 1 : 0
        if let e = entries[key], e.weight === weight.storage, let p = e.packs[slot] {
            e.lastUse = clock
            hitCount += 1
            return (p, tiles)
        }
        missCount += 1
        let n: Int
        let packs: TensorStorage
        switch tiles {
        case .six:
            n = ck_winograd6_filter_floats(&s, direction)
            packs = TensorStorage(capacity: n)
            ck_winograd6_filters(packs.pointer, weight.storage.pointer, &s, direction)
        case .four:
            n = ck_winograd_f2x3_filter_floats(&s, direction)
            packs = TensorStorage(capacity: n)
            ck_winograd_f2x3_filters(packs.pointer, weight.storage.pointer, &s, direction)
        }
        evictLocked(needing: n)
        if floats + n <= capacity {
            let e = entries[key] ?? Entry(weight: weight.storage, lastUse: clock)
            e.packs[slot] = packs
            e.lastUse = clock
            entries[key] = e
            floats += n
        }
        return (packs, tiles)
    }

    /// Drops the entries whose weight only the cache still holds, then the least recently used ones until `n`
    /// more floats fit.
    private func evictLocked(needing n: Int) {
        let dead = entries.compactMap { $0.value.weightIsDead() ? $0.key : nil }
        for k in dead {
            floats -= entries[k]!.floats
            entries[k] = nil
        }
        while floats + n > capacity, let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            entries[oldest.key] = nil
            floats -= oldest.value.floats
        }
    }
}

/// The Winograd filter cache's switch and counters, for tests and A/B measurements (see `WinogradFilterCache`).
@_spi(Testing) public enum WinogradFilterCacheControl {
    /// Off: every Winograd convolution transforms its filters on each call, as before the cache.
    public static var enabled: Bool {
        get { WinogradFilterCache.shared.enabled }
        set { WinogradFilterCache.shared.enabled = newValue }
    }
    /// Calls served from the cache, calls that transformed, entries and floats held.
    public static var statistics: (hits: Int, misses: Int, entries: Int, floats: Int) { WinogradFilterCache.shared.statistics }
    public static func removeAll() { WinogradFilterCache.shared.removeAll() }
    public static var capacityFloats: Int {
        get { WinogradFilterCache.shared.capacityFloats }
        set { WinogradFilterCache.shared.capacityFloats = newValue }
    }
    /// Whether 3x3 and 5x5 convolutions may take winograd6.c's 6x6 tiles (F(4x4, 3x3), F(2x2, 5x5)); off, 3x3
    /// ones take winograd.c's F(2x2, 3x3) and 5x5 ones the GEMM route (`ADVKIT_WINOGRAD=4x4` at start).
    public static var sixBySixTiles: Bool {
        get { Kernels.ready(); return ck_winograd6_enabled() != 0 }
        set { ck_winograd6_set_enabled(newValue ? 1 : 0) }
    }
    /// Back to what the environment says.
    public static func resetSixBySixTiles() { ck_winograd6_set_enabled(-1) }
    /// Whether a 3x3 convolution of this many channels, stride 1 and padding 1, takes the Winograd route here.
    public static func winogradApplies(inputChannels c: Int, outputChannels oc: Int) -> Bool {
        Kernels.ready()
        var s = ck_conv2d_shape(N: 1, C: c, H: 4, W: 4, OC: oc, KH: 3, KW: 3, stride: 1, pad: 1, OH: 4, OW: 4)
        return ck_winograd6_applies(&s, 0) != 0 || ck_winograd_f2x3_applies(&s) != 0
    }
}
