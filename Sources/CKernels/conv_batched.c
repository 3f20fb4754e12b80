// Plain convolutions (ck_conv2d_shape) as one GEMM over several images, blocked over K, for the shapes where
// conv2d.c's image-by-image use of ck_gemm_small wastes the AVX-512 kernel:
//  - few output pixels: ck_gemm_small runs 64-column tiles, so one image with P = OH*OW = 16 (ResNet-18's last
//    stage at 32x32) fills a quarter of each tile, P = 4 a sixteenth and P = 1 a sixty-fourth (MobileNetV2's
//    1x1 convolutions at 2x2 and 1x1). Here nb images sit side by side in one B (K, nb*P), ~CK_BATCH_COLUMNS
//    columns, and the product's (OC, nb*P) result is scattered back to the images.
//  - long inner products: with K = C*KH*KW up to 4,608 a 64-column panel of B is K*256 bytes (1.2 MB), more
//    than L2, and it is read once per 6-row panel of A. The product runs in K blocks of CK_KC (a 64 KB panel of
//    B), accumulating in C; bias and activation only after the last block.
// Only the forward pass and the input gradient alone (an attack's step) take this route; a backward call that
// wants dweight or dbias stays in conv2d.c.
//
// 3x3 convolutions with stride 1 and padding 1 go on to winograd.c (F(2x2, 3x3): 2.25x fewer multiply-adds) when
// conv2d.c has not sent them to winograd6.c first (F(4x4, 3x3), 4x, where it halves the multiply-adds).
//
// Determinism: an output element is the sum over K in a fixed order of fixed blocks (CK_KC), whatever the
// columns beside it, so the result does not depend on nb, the thread count or where a thread's images start.
#include "CKernels.h"
#include "internal.h"
#include <stdlib.h>
#include <string.h>

#define CK_BATCH_COLUMNS 256
#define CK_KC 256
#define CK_MR 6  // ck_gemm_small's panel height

// ADVKIT_CONV_ROUTE=old turns this route and depthwise2d.c's off (A/B measurements); -1 until read.
static int g_new_routes = -1;

int ck_conv_new_routes_enabled(void) {
    int on = __atomic_load_n(&g_new_routes, __ATOMIC_RELAXED);
    if (on < 0) {
        const char *route = getenv("ADVKIT_CONV_ROUTE");
        on = !(route && strcmp(route, "old") == 0);
        __atomic_store_n(&g_new_routes, on, __ATOMIC_RELAXED);
    }
    return on;
}

void ck_conv_new_routes_set_enabled(int enabled) {
    int on = enabled;
    if (enabled < 0) {
        const char *route = getenv("ADVKIT_CONV_ROUTE");
        on = !(route && strcmp(route, "old") == 0);
    }
    __atomic_store_n(&g_new_routes, on ? 1 : 0, __ATOMIC_RELAXED);
}

int ck_conv2d_batched_applies(const ck_conv2d_shape *s) {
    if (!ck_gemm_small_available() || !ck_conv_new_routes_enabled()) return 0;
    if (ck_winograd_f2x3_applies(s)) return 1;  // 3x3, stride 1, padding 1: winograd.c
    const size_t P = s->OH * s->OW, K = s->C * s->KH * s->KW;
    return P % 64 != 0 || K > 4 * CK_KC;
}

static size_t images_per_gemm(const ck_conv2d_shape *s) {
    const size_t P = s->OH * s->OW;
    size_t nb = P >= CK_BATCH_COLUMNS ? 1 : (CK_BATCH_COLUMNS + P - 1) / P;
    return nb > s->N ? (s->N ? s->N : 1) : nb;
}

static int is_pointwise(const ck_conv2d_shape *s) {
    return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0;
}

// Floats of op(A) (M x K) packed in K blocks: block b holds ck_gemm_small's panels of columns [b KC, b KC + kc).
static size_t pack_floats(size_t M, size_t K) { return (M + CK_MR - 1) / CK_MR * CK_MR * K; }

static size_t per_thread_floats(const ck_conv2d_shape *s) {
    const size_t K = s->C * s->KH * s->KW, cols = images_per_gemm(s) * s->OH * s->OW;
    const size_t fw = pack_floats(s->OC, K), bw = pack_floats(K, s->OC);
    return (fw > bw ? fw : bw)  // the packed weights
           + K * cols           // B: im2col of nb images (forward), or d(col) (input gradient)
           + s->OC * cols;      // the (OC, nb*P) output, or the gathered dout
}

size_t ck_conv2d_batched_workspace_floats(const ck_conv2d_shape *s, size_t threads) {
    if (ck_winograd_f2x3_applies(s)) return ck_winograd_f2x3_workspace_floats(s, threads);
    return (threads < 1 ? 1 : threads) * per_thread_floats(s);
}

// op(A) (M x K) -> K blocks of panels (see pack_floats).
static void pack_blocked(float *pack, int trans_a, size_t M, size_t K, const float *A, size_t lda) {
    const size_t Mp = (M + CK_MR - 1) / CK_MR * CK_MR;
    for (size_t k0 = 0; k0 < K; k0 += CK_KC) {
        const size_t kc = ck_min(CK_KC, K - k0);
        ck_gemm_small_pack(pack + Mp * k0, trans_a, M, kc, trans_a ? A + k0 * lda : A + k0, lda);
    }
}

// C (M x N, ldc) = act(A @ B (K x N, ldb) + bias (+ C when accumulate)), A packed by pack_blocked.
static void gemm_blocked(size_t M, size_t N, size_t K, const float *pack, const float *B, size_t ldb, float *C,
                         size_t ldc, const float *bias, ck_activation act, float bound, int accumulate) {
    const size_t Mp = (M + CK_MR - 1) / CK_MR * CK_MR;
    for (size_t k0 = 0; k0 < K; k0 += CK_KC) {
        const size_t kc = ck_min(CK_KC, K - k0);
        const int last = k0 + kc >= K;
        ck_gemm_small(M, N, kc, pack + Mp * k0, B + k0 * ldb, ldb, C, ldc, last ? bias : NULL,
                      last ? act : CK_ACT_NONE, bound, accumulate || k0 > 0);
    }
}

// Output columns [lo, hi) whose tap kw lands inside the row: 0 <= ow*stride + kw - pad < W.
static void tap_range(size_t kw, size_t pad, size_t stride, size_t W, size_t OW, size_t *lo, size_t *hi) {
    size_t l = pad > kw ? (pad - kw + stride - 1) / stride : 0;
    size_t h = W + pad > kw ? (W + pad - kw + stride - 1) / stride : 0;
    if (l > OW) l = OW;
    if (h > OW) h = OW;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

// img (C,H,W) -> col (C*KH*KW rows, OH*OW columns, row stride ld).
CK_VECTOR static void im2col_ld(float *col, size_t ld, const float *img, const ck_conv2d_shape *s) {
    const size_t C = s->C, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW;
    const size_t st = s->stride, pad = s->pad;
    for (size_t c = 0; c < C; c++) {
        const float *img_c = img + c * H * W;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                float *col_row = col + ((c * KH + kh) * KW + kw) * ld;
                size_t lo, hi;
                tap_range(kw, pad, st, W, OW, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    float *dst = col_row + oh * OW;
                    const long ih = (long)(oh * st + kh) - (long)pad;
                    if (ih < 0 || ih >= (long)H || hi == lo) {
                        for (size_t ow = 0; ow < OW; ow++) dst[ow] = 0.0f;
                        continue;
                    }
                    const float *src = img_c + (size_t)ih * W + (lo * st + kw - pad);  // output column lo's tap
                    for (size_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                    if (st == 1) {
                        for (size_t ow = lo; ow < hi; ow++) dst[ow] = src[ow - lo];
                    } else {
                        for (size_t ow = lo; ow < hi; ow++) dst[ow] = src[(ow - lo) * st];
                    }
                    for (size_t ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
                }
            }
        }
    }
}

// img (C,H,W) += col2im(col), col with row stride ld: the adjoint of im2col_ld.
CK_VECTOR static void col2im_add_ld(float *img, const float *col, size_t ld, const ck_conv2d_shape *s) {
    const size_t C = s->C, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW;
    const size_t st = s->stride, pad = s->pad;
    for (size_t c = 0; c < C; c++) {
        float *img_c = img + c * H * W;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                const float *col_row = col + ((c * KH + kh) * KW + kw) * ld;
                size_t lo, hi;
                tap_range(kw, pad, st, W, OW, &lo, &hi);
                if (hi == lo) continue;
                for (size_t oh = 0; oh < OH; oh++) {
                    const long ih = (long)(oh * st + kh) - (long)pad;
                    if (ih < 0 || ih >= (long)H) continue;
                    const float *src = col_row + oh * OW;
                    float *dst = img_c + (size_t)ih * W + (lo * st + kw - pad);
                    if (st == 1) {
                        for (size_t ow = lo; ow < hi; ow++) dst[ow - lo] += src[ow];
                    } else {
                        for (size_t ow = lo; ow < hi; ow++) dst[(ow - lo) * st] += src[ow];
                    }
                }
            }
        }
    }
}

typedef struct {
    float *out, *dinp, *work;
    const float *inp, *weight, *bias, *dout;
    const ck_conv2d_shape *s;
    ck_activation act;
    float bound;
} batched_job;

// Images [begin, end) in runs of nb: B = the images' im2col side by side, one blocked GEMM, scatter.
static void forward_part(void *ctx, size_t begin, size_t end, size_t t) {
    const batched_job *j = (const batched_job *)ctx;
    const ck_conv2d_shape *s = j->s;
    const size_t K = s->C * s->KH * s->KW, P = s->OH * s->OW, CHW = s->C * s->H * s->W, OC = s->OC;
    const size_t nb_max = images_per_gemm(s);
    float *pack = j->work + t * per_thread_floats(s);
    const size_t fw = pack_floats(OC, K), bw = pack_floats(K, OC);
    float *col = pack + (fw > bw ? fw : bw), *outp = col + K * nb_max * P;
    pack_blocked(pack, 0, OC, K, j->weight, K);
    for (size_t n0 = begin; n0 < end; n0 += nb_max) {
        const size_t nb = ck_min(nb_max, end - n0), ld = nb * P;
        for (size_t i = 0; i < nb; i++) {
            const float *img = j->inp + (n0 + i) * CHW;
            if (is_pointwise(s)) {
                for (size_t c = 0; c < K; c++) memcpy(col + c * ld + i * P, img + c * P, P * sizeof(float));
            } else {
                im2col_ld(col + i * P, ld, img, s);
            }
        }
        if (nb == 1) {
            gemm_blocked(OC, P, K, pack, col, ld, j->out + n0 * OC * P, P, j->bias, j->act, j->bound, 0);
            continue;
        }
        gemm_blocked(OC, ld, K, pack, col, ld, outp, ld, j->bias, j->act, j->bound, 0);
        for (size_t i = 0; i < nb; i++) {
            float *out_n = j->out + (n0 + i) * OC * P;
            for (size_t o = 0; o < OC; o++) memcpy(out_n + o * P, outp + o * ld + i * P, P * sizeof(float));
        }
    }
}

// Images [begin, end) in runs of nb: B = the images' dout side by side, d(col) = W^T B, then col2im per image.
static void input_part(void *ctx, size_t begin, size_t end, size_t t) {
    const batched_job *j = (const batched_job *)ctx;
    const ck_conv2d_shape *s = j->s;
    const size_t K = s->C * s->KH * s->KW, P = s->OH * s->OW, CHW = s->C * s->H * s->W, OC = s->OC;
    const size_t nb_max = images_per_gemm(s);
    float *pack = j->work + t * per_thread_floats(s);
    const size_t fw = pack_floats(OC, K), bw = pack_floats(K, OC);
    float *dcol = pack + (fw > bw ? fw : bw), *doutp = dcol + K * nb_max * P;
    pack_blocked(pack, 1, K, OC, j->weight, K);  // W^T (K x OC)
    for (size_t n0 = begin; n0 < end; n0 += nb_max) {
        const size_t nb = ck_min(nb_max, end - n0), ld = nb * P;
        const float *b = j->dout + n0 * OC * P;
        if (nb > 1) {
            for (size_t i = 0; i < nb; i++) {
                const float *dout_n = j->dout + (n0 + i) * OC * P;
                for (size_t o = 0; o < OC; o++) memcpy(doutp + o * ld + i * P, dout_n + o * P, P * sizeof(float));
            }
            b = doutp;
        }
        if (nb == 1 && is_pointwise(s)) {  // straight into the input gradient
            gemm_blocked(K, P, OC, pack, b, ld, j->dinp + n0 * CHW, P, NULL, CK_ACT_NONE, 0.0f, 1);
            continue;
        }
        gemm_blocked(K, ld, OC, pack, b, ld, dcol, ld, NULL, CK_ACT_NONE, 0.0f, 0);
        for (size_t i = 0; i < nb; i++) {
            float *dinp_n = j->dinp + (n0 + i) * CHW;
            if (is_pointwise(s)) {
                for (size_t c = 0; c < K; c++) {
                    float *d = dinp_n + c * P;
                    const float *src = dcol + c * ld + i * P;
                    for (size_t p = 0; p < P; p++) d[p] += src[p];
                }
            } else {
                col2im_add_ld(dinp_n, dcol + i * P, ld, s);
            }
        }
    }
}

void ck_conv2d_batched_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                               const ck_conv2d_shape *s, ck_activation act, float bound) {
    // inp (N,C,H,W), weight (OC,C,KH,KW), bias (OC) or NULL, out (N,OC,OH,OW)
    if (ck_winograd_f2x3_applies(s)) {
        ck_conv2d_winograd_forward(out, work, inp, weight, bias, s, act, bound);
        return;
    }
    batched_job j = {0};
    j.out = out;
    j.work = work;
    j.inp = inp;
    j.weight = weight;
    j.bias = bias;
    j.s = s;
    j.act = act;
    j.bound = bound;
    ck_parallel_for(s->N, forward_part, &j);
}

void ck_conv2d_batched_backward_input(float *dinp, float *work, const float *dout, const float *weight,
                                      const ck_conv2d_shape *s) {
    // dout (N,OC,OH,OW), weight (OC,C,KH,KW) -> dinp (N,C,H,W) (added into)
    if (ck_winograd_f2x3_applies(s)) {
        ck_conv2d_winograd_backward_input(dinp, work, dout, weight, s);
        return;
    }
    batched_job j = {0};
    j.dinp = dinp;
    j.work = work;
    j.dout = dout;
    j.weight = weight;
    j.s = s;
    ck_parallel_for(s->N, input_part, &j);
}
