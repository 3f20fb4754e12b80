// 2-D convolution through im2col + sgemm (Caffe's scheme), NCHW, zero padding, one stride for both axes.
// Parallel over the images of the batch; each thread owns a slice of the caller's workspace.
#include "CKernels.h"
#include "internal.h"
#include <stdint.h>
#include <string.h>

// Images per GEMM: each thread packs `nb` images side by side in one im2col matrix (CKK, nb*P) so that a
// single sgemm covers about CK_GEMM_COLUMNS columns. Measured on 2 cores (advkit-bench, reference CNN, batch
// 128): forward and input gradient are the same from 1 to 512 columns and ~20% slower at 1024-2048 (the packed
// im2col of conv2 outgrows L2: 800 x 2048 floats is 6.5 MB); the training step gains ~10% at 256 (the weight
// gradient's GEMM gets K = nb*P instead of P).
#define CK_GEMM_COLUMNS 256

static size_t images_per_gemm(const ck_conv2d_shape *s) {
    size_t P = s->OH * s->OW;
    if (P >= CK_GEMM_COLUMNS) return 1;
    return (CK_GEMM_COLUMNS / P) > s->N ? (s->N ? s->N : 1) : (CK_GEMM_COLUMNS / P);
}

// The packed weights of ck_gemm_small: W (OC x CKK) for the forward, W^T (CKK x OC) for d(input).
static size_t pack_floats(const ck_conv2d_shape *s) {
    const size_t CKK = s->C * s->KH * s->KW;
    const size_t f = ck_gemm_small_pack_floats(s->OC, CKK), b = ck_gemm_small_pack_floats(CKK, s->OC);
    return f > b ? f : b;
}

static size_t per_thread_floats(const ck_conv2d_shape *s) {
    const size_t CKK = s->C * s->KH * s->KW, P = s->OH * s->OW, nb = images_per_gemm(s);
    return CKK * nb * P                // col: packed im2col of nb images
           + s->OC * nb * P            // out/dout packed (OC, nb*P)
           + s->OC * CKK               // this thread's dweight partial
           + s->OC                     // and dbias partial
           + pack_floats(s)            // the packed weights (ck_gemm_small)
           + s->OC * CKK               // the weights as (OC, KH, KW, C) for the sparse input gradient
           + s->C * s->H * s->W        // one image's input gradient as (H, W, C)
           + 2 * s->OC;                // one pixel's nonzero gradients and their channels (uint32)
}

// Where a thread's packed weights start in its slice of the workspace.
static float *pack_area(float *thread_work, const ck_conv2d_shape *s) {
    const size_t CKK = s->C * s->KH * s->KW, nbP = images_per_gemm(s) * s->OH * s->OW;
    return thread_work + CKK * nbP + s->OC * nbP + s->OC * CKK + s->OC;
}

// ---- The input gradient from a sparse output gradient ----
// Behind a max-pool, at most one output in each pooling window receives a gradient, and behind a ReLU only
// the active ones: in the reference CNN 75-90% of conv2's output gradient is exactly zero. The dense route
// (dcol = W^T dout, then col2im) multiplies all those zeros. The sparse route walks the nonzeros and adds
// g * W[oc, :, kh, kw] into the input gradient, held as (H, W, C) so that the C channels are contiguous and the
// update is a vector FMA; one transpose adds it into the NCHW result. Measured on conv2 (one thread, us per
// image, dense = W^T dout + col2im at 75 us whatever the density): sparse 18 at 5% nonzeros, 28 at 10%, 46 at
// 20%, 57 at 25%, 63 at 30%, 83 at 40%, 102 at 50%. The crossing is near 36%; the sparse route is taken below
// CK_SPARSE_DENSITY (behind a 2x2 max-pool the density is at most 25%).
#ifndef CK_SPARSE_DENSITY
#define CK_SPARSE_DENSITY 0.35
#endif

static float *sparse_weight_area(float *thread_work, const ck_conv2d_shape *s) {
    return pack_area(thread_work, s) + pack_floats(s);
}

// W (OC, C, KH, KW) -> wt (OC, KH, KW, C).
static inline void transpose_weight_khwc(float *wt, const float *w, const ck_conv2d_shape *s) {
    const size_t C = s->C, KK = s->KH * s->KW;
    for (size_t o = 0; o < s->OC; o++)
        for (size_t c = 0; c < C; c++)
            for (size_t q = 0; q < KK; q++) wt[(o * KK + q) * C + c] = w[(o * C + c) * KK + q];
}

// One image. For each output pixel, the channels with a nonzero gradient are gathered first; then, for each
// kernel row kh, the input-gradient row it touches, (kw, c) for the valid kw, is contiguous in (H, W, C) and in
// wt, so the sum over those channels of g * wt[oc, kh, kw.., :] is built in registers (up to 10 vectors at once,
// independent FMA chains) and added to memory once. Only called when ck_gemm_small_available() (AVX-512).
#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
#define SPARSE_VECTORS 10
__attribute__((target("avx512f"))) static void sparse_input_gradient(float *dinp_n, float *hwc, const float *dout_n,
                                                                   const float *wt, float *gvals, uint32_t *gchan,
                                                                   const ck_conv2d_shape *s) {
    const size_t C = s->C, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW, P = OH * OW;
    const size_t st = s->stride, pad = s->pad;
    memset(hwc, 0, H * W * C * sizeof(float));
    for (size_t p = 0; p < P; p++) {
        size_t nz = 0;
        for (size_t o = 0; o < s->OC; o++) {
            const float g = dout_n[o * P + p];
            if (g != 0.0f) {
                gvals[nz] = g;
                gchan[nz++] = (uint32_t)o;
            }
        }
        if (nz == 0) continue;
        const size_t oh = p / OW, ow = p % OW;
        // valid kw: 0 <= ow*st - pad + kw < W
        const size_t kw_lo = ow * st >= pad ? 0 : pad - ow * st;
        if (W + pad <= ow * st) continue;  // (only with padding wider than the kernel)
        const size_t kw_hi = ck_min(KW, W + pad - ow * st);
        if (kw_hi <= kw_lo) continue;
        const size_t iw0 = ow * st + kw_lo - pad, run = (kw_hi - kw_lo) * C;
        for (size_t kh = 0; kh < KH; kh++) {
            const size_t ih = oh * st + kh;
            if (ih < pad || ih - pad >= H) continue;
            float *d = hwc + ((ih - pad) * W + iw0) * C;
            const size_t woff = (kh * KW + kw_lo) * C;
            for (size_t c0 = 0; c0 < run; c0 += 16 * SPARSE_VECTORS) {
                __mmask16 m[SPARSE_VECTORS];
                __m512 acc[SPARSE_VECTORS];
#pragma clang loop unroll(full)
                for (int v = 0; v < SPARSE_VECTORS; v++) {
                    const size_t at = c0 + 16 * (size_t)v;
                    m[v] = at >= run ? 0 : (run - at >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (run - at)) - 1));
                    acc[v] = _mm512_setzero_ps();
                }
                for (size_t t = 0; t < nz; t++) {
                    const __m512 g = _mm512_set1_ps(gvals[t]);
                    const float *w = wt + gchan[t] * KH * KW * C + woff + c0;
#pragma clang loop unroll(full)
                    for (int v = 0; v < SPARSE_VECTORS; v++)
                        acc[v] = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m[v], w + 16 * v), acc[v]);
                }
#pragma clang loop unroll(full)
                for (int v = 0; v < SPARSE_VECTORS; v++) {
                    float *q = d + c0 + 16 * v;
                    _mm512_mask_storeu_ps(q, m[v], _mm512_add_ps(_mm512_maskz_loadu_ps(m[v], q), acc[v]));
                }
            }
        }
    }
    for (size_t c = 0; c < C; c++) {
        float *dst = dinp_n + c * H * W;
        for (size_t i = 0; i < H * W; i++) dst[i] += hwc[i * C + c];
    }
}
#define CK_HAVE_SPARSE 1
#endif

static inline size_t count_nonzero(const float *x, size_t n) {
    size_t nz = 0;
    for (size_t i = 0; i < n; i++) nz += x[i] != 0.0f;
    return nz;
}

static int is_pointwise(const ck_conv2d_shape *s) {
    return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0;
}

size_t ck_conv2d_workspace_floats(const ck_conv2d_shape *s, size_t threads) {
    size_t own = (threads < 1 ? 1 : threads) * per_thread_floats(s);
    if (ck_conv2d_batched_applies(s)) {
        const size_t batched = ck_conv2d_batched_workspace_floats(s, threads);  // conv_batched.c's route
        if (batched > own) own = batched;
    }
    if (ck_winograd6_applies(s, 0) || ck_winograd6_applies(s, 1)) {  // winograd6.c's route
        const size_t w6 = ck_winograd6_workspace_floats(s, threads);
        if (w6 > own) own = w6;
    }
    return own;
}

// Valid output columns [lo, hi) for kernel column kw: 0 <= ow*stride - pad + kw < W.
static void valid_range(size_t kw, size_t pad, size_t stride, size_t W, size_t OW, size_t *lo, size_t *hi) {
    // ow*stride >= pad - kw  and  ow*stride < W + pad - kw
    size_t l = 0;
    if (pad > kw) l = (pad - kw + stride - 1) / stride;
    size_t h = 0;
    if (W + pad > kw) h = (W + pad - kw + stride - 1) / stride;
    if (l > OW) l = OW;
    if (h > OW) h = OW;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

#if defined(__x86_64__) && defined(__clang__)
// Stride 1, no padding (both layers of the reference CNN): every output row is OW consecutive input floats,
// copied by masked AVX-512 moves, 16 at a time. The generic loop below spent ~13% of an input gradient here:
// with OW = 8 its vectorised copy never left its prologue and aliasing checks.
__attribute__((target("avx512f"))) static void im2col_s1p0_avx512(float *restrict col, size_t ld,
                                                                 const float *restrict img, const ck_conv2d_shape *s) {
    const size_t C = s->C, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW;
    const __mmask16 tail = (OW % 16) ? (__mmask16)((1u << (OW % 16)) - 1) : (__mmask16)0xFFFF;
    for (size_t c = 0; c < C; c++) {
        const float *img_c = img + c * H * W;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                float *col_row = col + ((c * KH + kh) * KW + kw) * ld;
                for (size_t oh = 0; oh < OH; oh++) {
                    const float *src = img_c + (oh + kh) * W + kw;
                    float *dst = col_row + oh * OW;
                    size_t ow = 0;
                    for (; ow + 16 <= OW; ow += 16) _mm512_storeu_ps(dst + ow, _mm512_loadu_ps(src + ow));
                    if (ow < OW) _mm512_mask_storeu_ps(dst + ow, tail, _mm512_maskz_loadu_ps(tail, src + ow));
                }
            }
        }
    }
}
#define CK_HAVE_IM2COL_AVX512 1
#endif

// img (C,H,W) -> col (C*KH*KW rows, OH*OW columns, row stride ld). Rows are short (OW = 8 and 24 in the
// reference CNN): plain loops, not memcpy, whose call costs more than the copy (perf: 8% of an input gradient).
CK_VECTOR static void im2col_ld(float *col, size_t ld, const float *img, const ck_conv2d_shape *s) {
    const size_t C = s->C, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW;
    const size_t st = s->stride, pad = s->pad;
#ifdef CK_HAVE_IM2COL_AVX512
    if (st == 1 && pad == 0 && ck_gemm_small_available()) {
        im2col_s1p0_avx512(col, ld, img, s);
        return;
    }
#endif
    for (size_t c = 0; c < C; c++) {
        const float *img_c = img + c * H * W;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                float *col_row = col + ((c * KH + kh) * KW + kw) * ld;
                size_t lo, hi;
                valid_range(kw, pad, st, W, OW, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    float *dst = col_row + oh * OW;
                    long ih = (long)(oh * st + kh) - (long)pad;
                    if (ih < 0 || ih >= (long)H) {
                        for (size_t ow = 0; ow < OW; ow++) dst[ow] = 0.0f;
                        continue;
                    }
                    const float *src = img_c + (size_t)ih * W;
                    for (size_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                    if (st == 1) {
                        const float *s1 = src + kw - pad;  // s1[ow] for ow in [lo, hi) stays inside the row
                        for (size_t ow = lo; ow < hi; ow++) dst[ow] = s1[ow];
                    } else {
                        for (size_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * st + kw - pad];
                    }
                    for (size_t ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
                }
            }
        }
    }
}

// img (C,H,W) += col2im(col), col with row stride ld
CK_VECTOR static void col2im_add_ld(float *img, const float *col, size_t ld, const ck_conv2d_shape *s) {
    const size_t C = s->C, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW;
    const size_t st = s->stride, pad = s->pad;
    for (size_t c = 0; c < C; c++) {
        float *img_c = img + c * H * W;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                const float *col_row = col + ((c * KH + kh) * KW + kw) * ld;
                size_t lo, hi;
                valid_range(kw, pad, st, W, OW, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    long ih = (long)(oh * st + kh) - (long)pad;
                    if (ih < 0 || ih >= (long)H) continue;
                    const float *src = col_row + oh * OW;
                    float *dst = img_c + (size_t)ih * W;
                    if (st == 1) {
                        float *d = dst + kw - pad;  // d[ow] for ow in [lo, hi) stays inside the row
                        for (size_t ow = lo; ow < hi; ow++) d[ow] += src[ow];
                    } else {
                        for (size_t ow = lo; ow < hi; ow++) dst[ow * st + kw - pad] += src[ow];
                    }
                }
            }
        }
    }
}

void ck_im2col(float *col, const float *img, const ck_conv2d_shape *s) { im2col_ld(col, s->OH * s->OW, img, s); }

void ck_col2im_add(float *img, const float *col, const ck_conv2d_shape *s) {
    col2im_add_ld(img, col, s->OH * s->OW, s);
}

// col (CKK, nb*P), row stride ld: images n0 ... n0+nb-1 of inp side by side (a 1x1 stride-1 convolution's
// "im2col" is the image itself).
static void pack_images(float *col, size_t ld, const float *inp, size_t n0, size_t nb, const ck_conv2d_shape *s) {
    const size_t CKK = s->C * s->KH * s->KW, P = s->OH * s->OW, CHW = s->C * s->H * s->W;
    for (size_t i = 0; i < nb; i++) {
        const float *img = inp + (n0 + i) * CHW;
        if (is_pointwise(s)) {
            for (size_t c = 0; c < CKK; c++) memcpy(col + c * ld + i * P, img + c * P, P * sizeof(float));
        } else {
            im2col_ld(col + i * P, ld, img, s);
        }
    }
}

typedef struct {
    float *out, *dinp, *dweight, *dbias, *work;
    const float *inp, *weight, *bias, *dout;
    const ck_conv2d_shape *s;
    size_t per_thread;
    ck_activation act;
    float bound;
    float *pooled;  // ck_conv2d_forward_maxpool2x2: each image's output max-pooled right after its GEMM
    int32_t *argmax;
} conv_job;

// Images [begin, end) in groups of nb: pack, one GEMM, unpack with the epilogue.
static void conv_forward_part(void *ctx, size_t begin, size_t end, size_t t) {
    const conv_job *j = (const conv_job *)ctx;
    const ck_conv2d_shape *s = j->s;
    const size_t CKK = s->C * s->KH * s->KW, P = s->OH * s->OW, CHW = s->C * s->H * s->W;
    const size_t nb_max = images_per_gemm(s);
    float *col = j->work + t * j->per_thread;
    float *packed = col + CKK * nb_max * P;
    if (ck_gemm_small_available()) {
        // One image at a time: im2col, then our kernel writes the output with bias and activation applied.
        float *pack = pack_area(col, s);
        ck_gemm_small_pack(pack, 0, s->OC, CKK, j->weight, CKK);
        for (size_t n = begin; n < end; n++) {
            const float *b = j->inp + n * CHW;
            if (!is_pointwise(s)) {
                im2col_ld(col, P, b, s);
                b = col;
            }
            ck_gemm_small(s->OC, P, CKK, pack, b, P, j->out + n * s->OC * P, P, j->bias, j->act, j->bound, 0);
            if (j->pooled) {
                const size_t PP = (s->OH / 2) * (s->OW / 2);
                ck_maxpool2x2_planes(j->pooled + n * s->OC * PP, j->argmax + n * s->OC * PP, j->out + n * s->OC * P,
                                     s->OC, s->OH, s->OW);
            }
        }
        return;
    }
    for (size_t n0 = begin; n0 < end; n0 += nb_max) {
        const size_t nb = ck_min(nb_max, end - n0), ld = nb * P;
        if (nb == 1) {  // one image: GEMM straight into the output
            const float *b = j->inp + n0 * CHW;
            if (!is_pointwise(s)) {
                im2col_ld(col, P, b, s);
                b = col;
            }
            float *out_n = j->out + n0 * s->OC * P;
            ck_sgemm(0, 0, s->OC, P, CKK, 1.0f, j->weight, CKK, b, P, 0.0f, out_n, P);
            if (j->bias || j->act != CK_ACT_NONE) ck_bias_act_rows(out_n, j->bias, s->OC, P, j->act, j->bound);
            continue;
        }
        pack_images(col, ld, j->inp, n0, nb, s);
        // packed (OC, nb*P) = weight (OC, CKK) @ col (CKK, nb*P)
        ck_sgemm(0, 0, s->OC, ld, CKK, 1.0f, j->weight, CKK, col, ld, 0.0f, packed, ld);
        for (size_t i = 0; i < nb; i++) {
            float *out_n = j->out + (n0 + i) * s->OC * P;
            for (size_t o = 0; o < s->OC; o++) memcpy(out_n + o * P, packed + o * ld + i * P, P * sizeof(float));
            if (j->bias || j->act != CK_ACT_NONE) ck_bias_act_rows(out_n, j->bias, s->OC, P, j->act, j->bound);
        }
    }
}

// The image-by-image forward route's job (conv_forward_part).
static conv_job forward_job(float *out, float *work, const float *inp, const float *weight, const float *bias,
                            const ck_conv2d_shape *s, ck_activation act, float bound) {
    conv_job j = {0};
    j.act = act;
    j.bound = bound;
    j.out = out;
    j.work = work;
    j.inp = inp;
    j.weight = weight;
    j.bias = bias;
    j.s = s;
    j.per_thread = per_thread_floats(s);
    return j;
}

void ck_conv2d_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                       const ck_conv2d_shape *s, ck_activation act, float bound) {
    if (ck_winograd6_applies(s, 0)) {  // 3x3 or 5x5, stride 1: Winograd on 6x6 tiles
        ck_conv2d_winograd6_forward(out, work, inp, weight, bias, s, act, bound);
        return;
    }
    if (ck_conv2d_batched_applies(s)) {  // small planes or long K on AVX-512: several images per GEMM
        ck_conv2d_batched_forward(out, work, inp, weight, bias, s, act, bound);
        return;
    }
    conv_job j = forward_job(out, work, inp, weight, bias, s, act, bound);
    ck_parallel_for(s->N, conv_forward_part, &j);
}

// The pool reads each image's output from L2 right after the GEMM wrote it (73 KB an image for the reference
// CNN's first layer) instead of from memory after the whole batch: see CKernels.h. Only the image-by-image route
// below fuses; the others run the two kernels one after the other (the same values either way).
void ck_conv2d_forward_maxpool2x2(float *out, float *pooled, int32_t *argmax, float *work, const float *inp,
                                  const float *weight, const float *bias, const ck_conv2d_shape *s,
                                  ck_activation act, float bound) {
    if (ck_winograd6_applies(s, 0) || ck_conv2d_batched_applies(s) || !ck_gemm_small_available()) {
        ck_conv2d_forward(out, work, inp, weight, bias, s, act, bound);
        const ck_pool_shape ps = {s->N, s->OC, s->OH, s->OW, 2, 2, s->OH / 2, s->OW / 2};
        ck_maxpool2d_forward(pooled, argmax, out, &ps);
        return;
    }
    conv_job j = forward_job(out, work, inp, weight, bias, s, act, bound);
    j.pooled = pooled;
    j.argmax = argmax;
    ck_parallel_for(s->N, conv_forward_part, &j);
}

// One thread's state for input gradients image by image (ck_gemm_small available).
typedef struct {
    const conv_job *j;
    float *col, *pack;  // scratch (CKK, P); W^T packed for ck_gemm_small
    float *wt;          // W as (OC, KH, KW, C) for the sparse route, then (H, W, C) scratch, values, channels
    int wt_ready;
} input_grad_state;

// d(input) of image n += the convolution's adjoint applied to dout[n]: sparse when most of dout[n] is zero
// (channels in whole vectors only: conv1's single channel stays dense), else W^T dout[n] and col2im.
static void input_gradient_one(input_grad_state *st, size_t n) {
    const conv_job *j = st->j;
    const ck_conv2d_shape *s = j->s;
    const size_t CKK = s->C * s->KH * s->KW, P = s->OH * s->OW, CHW = s->C * s->H * s->W;
    const float *dout_n = j->dout + n * s->OC * P;
    float *dinp_n = j->dinp + n * CHW;
#ifdef CK_HAVE_SPARSE
    if (s->C >= 16 && !is_pointwise(s) &&
        (double)count_nonzero(dout_n, s->OC * P) < CK_SPARSE_DENSITY * (double)(s->OC * P)) {
        if (!st->wt_ready) {
            transpose_weight_khwc(st->wt, j->weight, s);
            st->wt_ready = 1;
        }
        float *hwc = st->wt + s->OC * CKK, *gvals = hwc + CHW;
        uint32_t *gchan = (uint32_t *)(gvals + s->OC);  // uint32 and float have one size
        sparse_input_gradient(dinp_n, hwc, dout_n, st->wt, gvals, gchan, s);
        return;
    }
#endif
    if (is_pointwise(s)) {
        ck_gemm_small(CKK, P, s->OC, st->pack, dout_n, P, dinp_n, P, NULL, CK_ACT_NONE, 0.0f, 1);
    } else {
        ck_gemm_small(CKK, P, s->OC, st->pack, dout_n, P, st->col, P, NULL, CK_ACT_NONE, 0.0f, 0);
        col2im_add_ld(dinp_n, st->col, P, s);
    }
}

static void conv_backward_part(void *ctx, size_t begin, size_t end, size_t t) {
    const conv_job *j = (const conv_job *)ctx;
    const ck_conv2d_shape *s = j->s;
    const size_t CKK = s->C * s->KH * s->KW, P = s->OH * s->OW, CHW = s->C * s->H * s->W;
    const size_t nb_max = images_per_gemm(s);
    float *col = j->work + t * j->per_thread;
    float *packed = col + CKK * nb_max * P;
    float *dw_part = packed + s->OC * nb_max * P;  // this thread's share of dweight (OC, CKK)
    float *db_part = dw_part + s->OC * CKK;        // and of dbias (OC)
    const int small = j->dinp && ck_gemm_small_available();
    float *pack = pack_area(col, s);
    if (small) ck_gemm_small_pack(pack, 1, CKK, s->OC, j->weight, CKK);  // W^T (CKK x OC)
    input_grad_state ig = {j, col, pack, sparse_weight_area(col, s), 0};
    if (small && !j->dweight && !j->dbias) {
        // The input gradient alone (an attack's step): one image at a time, dout read in place.
        for (size_t n = begin; n < end; n++) input_gradient_one(&ig, n);
        return;
    }
    for (size_t n0 = begin; n0 < end; n0 += nb_max) {
        const size_t nb = ck_min(nb_max, end - n0), ld = nb * P;
        // packed (OC, nb*P) <- dout of the nb images
        for (size_t i = 0; i < nb; i++) {
            const float *dout_n = j->dout + (n0 + i) * s->OC * P;
            for (size_t o = 0; o < s->OC; o++) memcpy(packed + o * ld + i * P, dout_n + o * P, P * sizeof(float));
        }
        if (j->dbias) {
            for (size_t o = 0; o < s->OC; o++) {
                const float *row = packed + o * ld;
                float acc = 0.0f;
                for (size_t p = 0; p < ld; p++) acc += row[p];
                db_part[o] += acc;
            }
        }
        if (j->dweight) {
            pack_images(col, ld, j->inp, n0, nb, s);
            // dW (OC, CKK) += packed (OC, nb*P) @ col^T (nb*P, CKK)
            ck_sgemm(0, 1, s->OC, CKK, ld, 1.0f, packed, ld, col, ld, 1.0f, dw_part, CKK);
        }
        if (small) {
            // Image by image, like an attack's step (col is free again: the weight gradient is done with it).
            for (size_t i = 0; i < nb; i++) input_gradient_one(&ig, n0 + i);
        } else if (j->dinp) {
            // dcol (CKK, nb*P) = W^T (CKK, OC) @ packed (OC, nb*P), then scatter-add into each image
            ck_sgemm(1, 0, CKK, ld, s->OC, 1.0f, j->weight, CKK, packed, ld, 0.0f, col, ld);
            for (size_t i = 0; i < nb; i++) {
                float *dinp_n = j->dinp + (n0 + i) * CHW;
                if (is_pointwise(s)) {
                    for (size_t c = 0; c < CKK; c++) {
                        float *d = dinp_n + c * P;
                        const float *src = col + c * ld + i * P;
                        for (size_t p = 0; p < P; p++) d[p] += src[p];
                    }
                } else {
                    col2im_add_ld(dinp_n, col + i * P, ld, s);
                }
            }
        }
    }
}

void ck_conv2d_backward(float *dinp, float *dweight, float *dbias, float *work, const float *dout,
                        const float *inp, const float *weight, const ck_conv2d_shape *s) {
    if (dinp && !dweight && !dbias && ck_winograd6_applies(s, 1)) {  // an attack's step: see the forward
        ck_conv2d_winograd6_backward_input(dinp, work, dout, weight, s);
        return;
    }
    if (dinp && !dweight && !dbias && ck_conv2d_batched_applies(s)) {
        ck_conv2d_batched_backward_input(dinp, work, dout, weight, s);
        return;
    }
    conv_job j = {0};
    j.dinp = dinp;
    j.dweight = dweight;
    j.dbias = dbias;
    j.work = work;
    j.dout = dout;
    j.inp = inp;
    j.weight = weight;
    j.s = s;
    j.per_thread = per_thread_floats(s);
    const size_t threads = ck_threads_for(s->N);
    const size_t CKK = s->C * s->KH * s->KW, nbP = images_per_gemm(s) * s->OH * s->OW;
    // Zero every thread's partial sums first (a thread that gets no images leaves its share untouched).
    for (size_t t = 0; t < threads; t++) {
        float *dw_part = work + t * j.per_thread + CKK * nbP + s->OC * nbP;
        if (dweight) memset(dw_part, 0, s->OC * CKK * sizeof(float));
        if (dbias) memset(dw_part + s->OC * CKK, 0, s->OC * sizeof(float));
    }
    ck_parallel_for(s->N, conv_backward_part, &j);
    // Reduce the partial sums in thread order: the same thread count gives the same bits.
    for (size_t t = 0; t < threads; t++) {
        const float *dw_part = work + t * j.per_thread + CKK * nbP + s->OC * nbP;
        if (dweight)
            for (size_t i = 0; i < s->OC * CKK; i++) dweight[i] += dw_part[i];
        if (dbias)
            for (size_t o = 0; o < s->OC; o++) dbias[o] += dw_part[s->OC * CKK + o];
    }
}
