// CKernels: the performance-critical core of AdvKit.
//
// Conventions (every function below follows them):
//  - Row-major float32, NCHW. Sizes and indices are size_t.
//  - Arguments in the order: outputs, scratch, inputs, sizes.
//  - Forward kernels overwrite their outputs. Backward kernels ADD into their gradient outputs, and a NULL
//    gradient output means "not wanted" (an attack needs d(input) but not d(weight)).
//  - Nothing here allocates, prints or exits. Scratch memory belongs to the caller, who asks for its size.
//  - Validation happens in Swift before the call: these functions trust their arguments.
//  - Threading: every kernel splits its outermost loop over ck_get_num_threads() OpenMP threads
//    (parallel.c). OpenBLAS is always called single-threaded, from inside those threads, so there is one
//    thread pool and no oversubscription.
#ifndef CKERNELS_H
#define CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- Threads (parallel.c) -------------------------------------------------------------------------------
// Sets the number of OpenMP threads the kernels use (>= 1) and pins OpenBLAS to one thread.
void ck_set_num_threads(size_t n);
size_t ck_get_num_threads(void);
// The number of online CPUs.
size_t ck_cpu_count(void);
// OpenBLAS's name for the kernels it chose ("Haswell", "Cooperlake", ...). Never NULL.
const char *ck_blas_corename(void);

// C = alpha * op(A) @ op(B) + beta * C, row-major; op(X) = X or X^T. Split over the threads along M
// (or N when M is small); a single-threaded call when already inside a parallel region.
void ck_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
              const float *B, size_t ldb, float beta, float *C, size_t ldc);
// The same product by three plain loops with double accumulation (the tests' reference).
void ck_sgemm_naive(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A,
                    size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);

// ---- Fused activations ----------------------------------------------------------------------------------
// The activation a forward kernel applies in its epilogue, while the output is still in cache.
typedef enum { CK_ACT_NONE = 0, CK_ACT_RELU = 1, CK_ACT_BRELU = 2 } ck_activation;

// ---- Small-M GEMM (gemm_small.c) ------------------------------------------------------------------------
// 1 when the CPU has AVX-512 and ck_gemm_small runs its register-blocked kernel; 0 otherwise (callers then use
// ck_sgemm). ck_gemm_small is correct either way (a plain loop stands in), only slow.
int ck_gemm_small_available(void);
// Forces the choice for every later call (not while a kernel runs): 1 = own kernels where the CPU has AVX-512,
// 0 = OpenBLAS everywhere, -1 = back to the default (the CPU and ADVKIT_GEMM). The tests run both paths.
void ck_gemm_small_set_enabled(int enabled);
// Floats of the packed A of an M x K product.
size_t ck_gemm_small_pack_floats(size_t M, size_t K);
// Packs op(A) (M x K; A row-major with row stride lda, transposed when trans_a) into panels of 6 rows, k-major,
// rows past M zero.
void ck_gemm_small_pack(float *pack, int trans_a, size_t M, size_t K, const float *A, size_t lda);
// C (M x N, row stride ldc) = act(packed A @ B (K x N, row stride ldb) + bias[row] (+ C when accumulate)).
// bias may be NULL. Single-threaded: callers split the batch.
void ck_gemm_small(size_t M, size_t N, size_t K, const float *pack, const float *B, size_t ldb, float *C,
                   size_t ldc, const float *bias, ck_activation act, float bound, int accumulate);

// ---- Convolution (conv2d.c) -----------------------------------------------------------------------------
typedef struct {
    size_t N, C, H, W;     // input
    size_t OC, KH, KW;     // weight (OC, C, KH, KW)
    size_t stride, pad;    // same in both directions; zero padding
    size_t OH, OW;         // output: OH = (H + 2 pad - KH) / stride + 1
} ck_conv2d_shape;

// Scratch floats that ck_conv2d_forward / ck_conv2d_backward need for `threads` threads.
size_t ck_conv2d_workspace_floats(const ck_conv2d_shape *s, size_t threads);
// col (C*KH*KW, OH*OW) from one image (C,H,W).
void ck_im2col(float *col, const float *img, const ck_conv2d_shape *s);
// img (C,H,W) += col2im(col).
void ck_col2im_add(float *img, const float *col, const ck_conv2d_shape *s);
// inp (N,C,H,W), weight (OC,C,KH,KW), bias (OC) or NULL, out (N,OC,OH,OW) = act(conv(inp) + bias), with
// act = none, ReLU, or the bounded ReLU min(max(x,0),bound).
void ck_conv2d_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                       const ck_conv2d_shape *s, ck_activation act, float bound);
// ck_conv2d_forward, then a 2x2 stride-2 max-pool of its output: out (N,OC,OH,OW) as ck_conv2d_forward, pooled and
// argmax (N,OC,OH/2,OW/2) as ck_maxpool2d_forward of out (same values and indices); OH, OW >= 2, the same workspace.
// On the image-by-image route (ck_gemm_small, no Winograd or batching) each image is pooled while its output is in
// cache: the reference CNN's first layer writes 73 KB an image, out of cache by the time a separate pool reads it.
void ck_conv2d_forward_maxpool2x2(float *out, float *pooled, int32_t *argmax, float *work, const float *inp,
                                  const float *weight, const float *bias, const ck_conv2d_shape *s,
                                  ck_activation act, float bound);
// dout (N,OC,OH,OW) -> dinp (N,C,H,W), dweight (OC,C,KH,KW), dbias (OC); each may be NULL.
void ck_conv2d_backward(float *dinp, float *dweight, float *dbias, float *work, const float *dout,
                        const float *inp, const float *weight, const ck_conv2d_shape *s);

// ---- Linear (linear.c) ----------------------------------------------------------------------------------
// inp (N,IN), weight (OUT,IN) (PyTorch's layout), bias (OUT) or NULL, out (N,OUT) = act(inp Wᵀ + bias).
void ck_linear_forward(float *out, const float *inp, const float *weight, const float *bias, size_t N,
                       size_t IN, size_t OUT, ck_activation act, float bound);
// dout (N,OUT) -> dinp (N,IN), dweight (OUT,IN), dbias (OUT); each may be NULL.
void ck_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, size_t N, size_t IN, size_t OUT);

// ---- Pooling (pool.c) -----------------------------------------------------------------------------------
typedef struct {
    size_t N, C, H, W;
    size_t K, stride;      // square window, no padding
    size_t OH, OW;         // OH = (H - K) / stride + 1
} ck_pool_shape;

// inp (N,C,H,W) -> out (N,C,OH,OW) and argmax (N,C,OH,OW): the index within the (H,W) plane of each max.
// Ties go to the first element in row-major order (PyTorch does the same).
void ck_maxpool2d_forward(float *out, int32_t *argmax, const float *inp, const ck_pool_shape *s);
void ck_maxpool2d_backward(float *dinp, const float *dout, const int32_t *argmax, const ck_pool_shape *s);
// dinp (N,C,H,W) = mask(maxpool backward of dout (N,C,OH,OW)): dinp is overwritten (not added to); a window's
// gradient reaches its argmax only where `act` passed the value there. That value is the window's max, so it is
// read from the forward's output out (N,C,OH,OW) (the pool's input at the argmax, the activation's output):
// out > 0 (and < bound for CK_ACT_BRELU), as ck_activation_mask decides.
void ck_maxpool2d_backward_masked(float *dinp, const float *dout, const int32_t *argmax, const float *out,
                                  ck_activation act, float bound, const ck_pool_shape *s);
void ck_avgpool2d_forward(float *out, const float *inp, const ck_pool_shape *s);
void ck_avgpool2d_backward(float *dinp, const float *dout, const ck_pool_shape *s);

// ---- Activations (activation.c) -------------------------------------------------------------------------
// out = max(x, 0); in place allowed (out == inp).
void ck_relu_forward(float *out, const float *inp, size_t n);
// dinp += dout where out > 0 (out: the forward's output, which is the mask).
void ck_relu_backward(float *dinp, const float *dout, const float *out, size_t n);
// Bounded ReLU: out = min(max(x, 0), t) (Zantedeschi et al. 2017).
void ck_brelu_forward(float *out, const float *inp, float t, size_t n);
// dinp += dout where 0 < out < t.
void ck_brelu_backward(float *dinp, const float *dout, const float *out, float t, size_t n);
// rows (R, L): row r += bias[r] (bias may be NULL), then the activation. The conv epilogue (R = OC, L = OH*OW).
void ck_bias_act_rows(float *rows, const float *bias, size_t R, size_t L, ck_activation act, float bound);
// rows (R, L): element (r, l) += bias[l], then the activation. The linear epilogue (R = N, L = OUT).
void ck_bias_act_cols(float *rows, const float *bias, size_t R, size_t L, ck_activation act, float bound);
// dst = dout where the activation passed its input (out: the forward's output), else 0. Writes, not adds.
void ck_activation_mask(float *dst, const float *dout, const float *out, ck_activation act, float bound, size_t n);
// g = g where the activation passed its input, else 0: ck_activation_mask in place (at full vector speed).
void ck_activation_mask_inplace(float *g, const float *out, ck_activation act, float bound, size_t n);

// ---- Batch normalisation (batchnorm.c) ------------------------------------------------------------------
// Training mode: per-channel batch statistics over (N,H,W). Writes out, the normalised input xhat (kept for
// backward), the batch mean and 1/sqrt(var + eps) (biased variance, as PyTorch normalises).
void ck_batchnorm2d_forward_train(float *out, float *xhat, float *mean, float *invstd, const float *inp,
                                  const float *gamma, const float *beta, size_t N, size_t C, size_t HW,
                                  float eps);
// Evaluation mode: running statistics.
void ck_batchnorm2d_forward_eval(float *out, const float *inp, const float *gamma, const float *beta,
                                 const float *running_mean, const float *running_var, size_t N, size_t C,
                                 size_t HW, float eps);
// Backward of the training-mode forward. dinp, dgamma, dbeta may each be NULL.
void ck_batchnorm2d_backward(float *dinp, float *dgamma, float *dbeta, const float *dout, const float *xhat,
                             const float *invstd, const float *gamma, size_t N, size_t C, size_t HW);

// ---- Softmax cross-entropy (softmax_xent.c) -------------------------------------------------------------
// logits (N,K), labels (N) in [0,K). Per-sample loss into losses (N); softmax probabilities into probs (N,K).
// With smoothing a in [0,1): the target is (1 - a) one-hot + a/K (PyTorch's label_smoothing).
// Log-sum-exp is taken after subtracting the row maximum.
void ck_softmax_xent_forward(float *losses, float *probs, const float *logits, const int32_t *labels,
                             float smoothing, size_t N, size_t K);
// dlogits (N,K) += scale[n] * (probs - target) with the same target; scale (N) or NULL for 1.
void ck_softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels, const float *scale,
                              float smoothing, size_t N, size_t K);
// Cross-entropy against a full target distribution (N,K) (soft labels, KL for VAT/TRADES).
void ck_softmax_xent_soft_forward(float *losses, float *probs, const float *logits, const float *target,
                                  size_t N, size_t K);
void ck_softmax_xent_soft_backward(float *dlogits, const float *probs, const float *target, const float *scale,
                                   size_t N, size_t K);
// Row-wise log-softmax and softmax (reporting confidences).
void ck_log_softmax(float *out, const float *logits, size_t N, size_t K);
void ck_softmax(float *out, const float *logits, size_t N, size_t K);

// ---- FAB's step (fab_step.c) -----------------------------------------------------------------------------
// x1, x0, w, out (N, D); f (N). Per image n: the minimal-norm steps d1 from x1 and d2 from x0 onto the hyperplane
// {x : f_n + w_n.(x - x1_n) = 0} within [lo, hi]^D (L-inf, or L2 when l2), alpha = min(|d1| / (|d1| + |d2|),
// alpha_max) (each norm floored at 1e-8), out = clip((1 - alpha)(x1 + eta d1) + alpha(x0 + eta d2), lo, hi).
// Croce & Hein 2020. Images split over the threads; bit-identical to FAB.referenceStep in Swift.
size_t ck_fab_step_workspace_doubles(size_t D, size_t threads);
void ck_fab_step(float *out, double *scratch, const float *x1, const float *x0, const float *w, const float *f,
                 size_t N, size_t D, int l2, float alpha_max, float eta, float lo, float hi);

// ---- Attack steps (attack_step.c) -----------------------------------------------------------------------
// x = clip(clip(x + alpha * sign(g), x0 - eps, x0 + eps), lo, hi): one Linf PGD step, one pass over memory.
// sign(0) = 0. eps < 0 means no projection.
void ck_linf_step(float *x, const float *g, const float *x0, float alpha, float eps, float lo, float hi, size_t n);
// x = clip(x, x0 - eps, x0 + eps) then clip(., lo, hi).
void ck_project_linf(float *x, const float *x0, float eps, float lo, float hi, size_t n);
// Per sample (N rows of D): x += alpha * g / ||g||_2 (no step where ||g|| == 0), then project onto the L2 ball
// of radius eps around x0 (eps < 0: no projection), then clip to [lo, hi].
void ck_l2_step(float *x, const float *g, const float *x0, float alpha, float eps, float lo, float hi, size_t N,
                size_t D);
// Per sample: scale x - x0 onto the L2 ball of radius eps if it lies outside, then clip to [lo, hi].
void ck_project_l2(float *x, const float *x0, float eps, float lo, float hi, size_t N, size_t D);
// x = clip(x, lo, hi).
void ck_clip(float *x, float lo, float hi, size_t n);
// C&W's change of variables: t = tanh(w) (absolute error < 2e-7, vectorised), x = lo + span * (t + 1) / 2.
void ck_tanh_box(float *t, float *x, const float *w, float lo, float span, size_t n);
// Per-sample norms of a - b (N rows of D). l0 counts |a - b| > tol. Any output may be NULL.
void ck_diff_norms(float *l0, float *l2, float *linf, const float *a, const float *b, float tol, size_t N,
                   size_t D);

// ---- Random numbers (random.c) --------------------------------------------------------------------------
// Counter-based: element i depends only on (seed, stream, offset + i), never on the thread that computes it,
// so the same seed gives the same numbers at any thread count.
void ck_random_uniform(float *out, uint64_t seed, uint64_t stream, uint64_t offset, float lo, float hi, size_t n);
void ck_random_normal(float *out, uint64_t seed, uint64_t stream, uint64_t offset, float mean, float std, size_t n);
// out = x + std * N(0,1), then clip to [lo, hi] when lo < hi.
void ck_add_gaussian_noise(float *out, const float *x, uint64_t seed, uint64_t stream, uint64_t offset, float std,
                           float lo, float hi, size_t n);
// 64-bit random number for (seed, stream, counter): the generator itself (for shuffles, integer draws).
uint64_t ck_random_u64(uint64_t seed, uint64_t stream, uint64_t counter);

// ---- Optimizers (optim.c) -------------------------------------------------------------------------------
// PyTorch's SGD: g = grad + wd*p; v = momentum*v + g (v = g at the first step, first != 0); p -= lr*v.
// velocity may be NULL when momentum == 0.
void ck_sgd_step(float *param, float *velocity, const float *grad, float lr, float momentum, float weight_decay,
                 int first, size_t n);
// PyTorch's Adam (no amsgrad): step t >= 1; weight decay added to the gradient (L2, not AdamW).
void ck_adam_step(float *param, float *m, float *v, const float *grad, float lr, float beta1, float beta2,
                  float eps, float weight_decay, size_t t, size_t n);

// ---- General convolution (conv_general.c) ----------------------------------------------------------------
// ONNX's Conv: groups, dilation, a stride per axis, asymmetric zero padding. Input channel block g
// (C/G channels) meets output channel block g (OC/G filters) only.
typedef struct {
    size_t N, C, H, W;                    // input (N,C,H,W)
    size_t OC, KH, KW;                    // weight (OC, C/G, KH, KW)
    size_t G;                             // groups: G divides C and OC
    size_t stride_h, stride_w;            // >= 1
    size_t pad_t, pad_l, pad_b, pad_r;    // zero padding: top, left, bottom, right
    size_t dil_h, dil_w;                  // dilation >= 1: kernel taps dil apart
    size_t OH, OW;                        // OH = (H + pad_t + pad_b - dil_h (KH - 1) - 1) / stride_h + 1
} ck_conv2d_general_shape;

// 1 when the direct depthwise loops run (G == C: one input channel per group, OC/C filters on each),
// 0 when im2col per group + sgemm does. ck_conv2d_general_* choose by this themselves.
int ck_conv2d_general_is_depthwise(const ck_conv2d_general_shape *s);
// Scratch floats for `threads` threads; weight_grad != 0 when the backward call asks for dweight or dbias
// (the weight gradient keeps fixed per-slot partial sums so that any thread count gives the same bits).
size_t ck_conv2d_general_workspace_floats(const ck_conv2d_general_shape *s, size_t threads, int weight_grad);
// inp (N,C,H,W), weight (OC,C/G,KH,KW), bias (OC) or NULL -> out (N,OC,OH,OW) = act(conv(inp) + bias).
void ck_conv2d_general_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                               const ck_conv2d_general_shape *s, ck_activation act, float bound);
// dout (N,OC,OH,OW) -> dinp (N,C,H,W), dweight (OC,C/G,KH,KW), dbias (OC): each added into, each may be NULL.
// Bitwise the same results at any thread count.
void ck_conv2d_general_backward(float *dinp, float *dweight, float *dbias, float *work, const float *dout,
                                const float *inp, const float *weight, const ck_conv2d_general_shape *s);

// ---- General pooling (pool_general.c) -------------------------------------------------------------------
// ONNX's MaxPool / AveragePool: a KH x KW window, a stride per axis, asymmetric padding, dilation. OH and OW are
// the caller's (floor or ceil mode: AdvKit's Pool2DGeometry computes them). A window may run past the padded
// input in ceil mode; taps there are ignored.
typedef struct {
    size_t N, C, H, W;                    // input (N,C,H,W)
    size_t KH, KW;                        // window
    size_t stride_h, stride_w;
    size_t pad_t, pad_l, pad_b, pad_r;
    size_t dil_h, dil_w;
    size_t OH, OW;                        // output (N,C,OH,OW)
} ck_pool2d_general_shape;

// inp (N,C,H,W) -> out (N,C,OH,OW), argmax (N,C,OH,OW): the index within the (H,W) plane of each max. Padding
// is -inf (never selected); ties go to the first element in row-major order; a NaN is taken and kept. A window
// with no tap inside the input gives -inf and argmax -1.
void ck_maxpool2d_general_forward(float *out, int32_t *argmax, const float *inp, const ck_pool2d_general_shape *s);
// dinp (N,C,H,W) += dout scattered to the argmax of each window (argmax -1: nowhere).
void ck_maxpool2d_general_backward(float *dinp, const float *dout, const int32_t *argmax,
                                   const ck_pool2d_general_shape *s);
// out = (sum of the window's taps inside the input) / count. count_include_pad 0: the taps inside the input;
// 1: the taps inside input + padding (PyTorch's count_include_pad=True: in ceil mode a window running past the
// padded input counts only its part inside). A count of 0 gives 0.
void ck_avgpool2d_general_forward(float *out, const float *inp, const ck_pool2d_general_shape *s,
                                  int count_include_pad);
// dinp (N,C,H,W) += the adjoint: each tap inside the input gets dout / count.
void ck_avgpool2d_general_backward(float *dinp, const float *dout, const ck_pool2d_general_shape *s,
                                   int count_include_pad);


// ---- Convolutions batched over images, blocked over K (conv_batched.c) ---------------------------------
// 1 when the two routes below are on (the default); ADVKIT_CONV_ROUTE=old in the environment turns them off.
int ck_conv_new_routes_enabled(void);
// Forces the choice for every later call (not while a kernel runs): 1 on, 0 off, -1 back to the environment's.
void ck_conv_new_routes_set_enabled(int enabled);
// Plain convolutions whose output planes are small (OH*OW not a multiple of 64) or whose inner product is long
// (C*KH*KW > 1024), on the AVX-512 path: nb images side by side in one GEMM, K in blocks. conv2d.c routes its
// forward pass and its input-gradient-only backward pass here when ck_conv2d_batched_applies (0 without AVX-512).
int ck_conv2d_batched_applies(const ck_conv2d_shape *s);
size_t ck_conv2d_batched_workspace_floats(const ck_conv2d_shape *s, size_t threads);
// inp (N,C,H,W), weight (OC,C,KH,KW), bias (OC) or NULL -> out (N,OC,OH,OW) = act(conv(inp) + bias).
void ck_conv2d_batched_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                               const ck_conv2d_shape *s, ck_activation act, float bound);
// dout (N,OC,OH,OW), weight (OC,C,KH,KW) -> dinp (N,C,H,W), added into.
void ck_conv2d_batched_backward_input(float *dinp, float *work, const float *dout, const float *weight,
                                      const ck_conv2d_shape *s);

// ---- Winograd F(2x2, 3x3) (winograd.c) -----------------------------------------------------------------
// 3x3 convolutions with stride 1 and padding 1, C and OC >= 16, on the AVX-512 path (conv_batched.c's entry points
// send them here): Lavin & Gray 2016's minimal filtering, 16 GEMMs of (OC, C) @ (C, tiles) per run of images.
int ck_winograd_f2x3_applies(const ck_conv2d_shape *s);
// Scratch for either direction: the 16 transformed filters, shared, and per thread the transformed tiles.
size_t ck_winograd_f2x3_workspace_floats(const ck_conv2d_shape *s, size_t threads);
// inp (N,C,H,W), weight (OC,C,3,3), bias (OC) or NULL -> out (N,OC,H,W) = act(conv(inp) + bias).
void ck_conv2d_winograd_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                                const ck_conv2d_shape *s, ck_activation act, float bound);
// dout (N,OC,H,W), weight (OC,C,3,3) -> dinp (N,C,H,W), added into.
void ck_conv2d_winograd_backward_input(float *dinp, float *work, const float *dout, const float *weight,
                                       const ck_conv2d_shape *s);
// The filter transform apart (a caller keeps it while the weights do not change, e.g. over an attack's steps):
// packs (ck_winograd_f2x3_filter_floats(s, input_gradient) floats) = the 16 transformed filters of weight
// (OC,C,3,3) for the forward pass (input_gradient 0) or the input gradient (1). The *_packed entry points then
// give bit for bit the results of the two above; their work is ck_winograd_f2x3_workspace_floats(s, threads).
size_t ck_winograd_f2x3_filter_floats(const ck_conv2d_shape *s, int input_gradient);
void ck_winograd_f2x3_filters(float *packs, const float *weight, const ck_conv2d_shape *s, int input_gradient);
// inp (N,C,H,W), packs (forward), bias (OC) or NULL -> out (N,OC,H,W) = act(conv(inp) + bias).
void ck_conv2d_winograd_forward_packed(float *out, float *work, const float *packs, const float *inp, const float *bias,
                                       const ck_conv2d_shape *s, ck_activation act, float bound);
// dout (N,OC,H,W), packs (input gradient) -> dinp (N,C,H,W), added into.
void ck_conv2d_winograd_backward_input_packed(float *dinp, float *work, const float *packs, const float *dout,
                                              const ck_conv2d_shape *s);

// ---- Winograd on 6x6 tiles: F(4x4, 3x3) and F(2x2, 5x5) (winograd6.c) -----------------------------------
// Stride-1 convolutions with square 3x3 or 5x5 filters and padding p <= r - 1, C and OC >= 16, on the AVX-512
// path: 36 GEMMs of (CO, CI) @ (CI, tiles) per run of images. ck_conv2d_forward and ck_conv2d_backward (input
// gradient alone) come here first when ck_winograd6_applies for their direction (it pays: at least 2x fewer
// multiply-adds than the direct sum); otherwise 3x3 ones go on to winograd.c's F(2x2, 3x3) where it applies.
int ck_winograd6_applies(const ck_conv2d_shape *s, int input_gradient);
// 1 unless ADVKIT_WINOGRAD=4x4 or ck_winograd6_set_enabled(0) (A/B measurements); set -1: the environment's.
int ck_winograd6_enabled(void);
void ck_winograd6_set_enabled(int enabled);
// Scratch for either direction, the transformed filters at its front included.
size_t ck_winograd6_workspace_floats(const ck_conv2d_shape *s, size_t threads);
// inp (N,C,H,W), weight (OC,C,r,r), bias (OC) or NULL -> out (N,OC,OH,OW) = act(conv(inp) + bias).
void ck_conv2d_winograd6_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                                 const ck_conv2d_shape *s, ck_activation act, float bound);
// dout (N,OC,OH,OW), weight (OC,C,r,r) -> dinp (N,C,H,W), added into.
void ck_conv2d_winograd6_backward_input(float *dinp, float *work, const float *dout, const float *weight,
                                        const ck_conv2d_shape *s);
// The filter transform apart (kept while the weights do not change): packs (ck_winograd6_filter_floats(s,
// input_gradient) floats) = the 36 transformed filters of weight (OC,C,r,r) for the forward pass (0) or the input
// gradient (1). The *_packed entry points then give bit for bit the results of the two above.
size_t ck_winograd6_filter_floats(const ck_conv2d_shape *s, int input_gradient);
void ck_winograd6_filters(float *packs, const float *weight, const ck_conv2d_shape *s, int input_gradient);
// inp (N,C,H,W), packs (forward), bias (OC) or NULL -> out (N,OC,OH,OW) = act(conv(inp) + bias).
void ck_conv2d_winograd6_forward_packed(float *out, float *work, const float *packs, const float *inp,
                                        const float *bias, const ck_conv2d_shape *s, ck_activation act, float bound);
// dout (N,OC,OH,OW), packs (input gradient) -> dinp (N,C,H,W), added into.
void ck_conv2d_winograd6_backward_input_packed(float *dinp, float *work, const float *packs, const float *dout,
                                               const ck_conv2d_shape *s);

// ---- Residual join (residual.c) ---------------------------------------------------------------------------
// out = max(a + b, 0) in one pass (ResNet's block output); elementwise, split over the threads.
// a (n), b (n) -> out (n); out may be a or b (in place, at full vector speed).
void ck_add_relu_forward(float *out, const float *a, const float *b, size_t n);
// dout (n), out (n) the forward's output -> da (n), db (n) += dout where out > 0 (NULL: not wanted).
void ck_add_relu_backward(float *da, float *db, const float *dout, const float *out, size_t n);
// The same when neither gradient holds anything yet and the upstream gradient g (n) is free to overwrite: g is masked
// in place (it becomes a's gradient) and db (n) is written with it (not added to; NULL: b wants none). Half the
// memory traffic of zeroing both and adding.
void ck_add_relu_backward_first(float *g, float *db, const float *out, size_t n);

// ---- Depthwise convolution, channels innermost (depthwise2d.c) -----------------------------------------
// G == C == OC (one filter per channel), any stride, padding and dilation. conv_general.c routes the forward
// pass and the input gradient here when ck_depthwise2d_applies; the weight and bias gradients stay there.
int ck_depthwise2d_applies(const ck_conv2d_general_shape *s);
size_t ck_depthwise2d_workspace_floats(const ck_conv2d_general_shape *s, size_t threads);
// inp (N,C,H,W), weight (C,1,KH,KW), bias (C) or NULL -> out (N,C,OH,OW) = act(conv(inp) + bias).
void ck_depthwise2d_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                            const ck_conv2d_general_shape *s, ck_activation act, float bound);
// dout (N,C,OH,OW), weight (C,1,KH,KW) -> dinp (N,C,H,W), added into.
void ck_depthwise2d_backward_input(float *dinp, float *work, const float *dout, const float *weight,
                                   const ck_conv2d_general_shape *s);

#ifdef __cplusplus
}
#endif
#endif
