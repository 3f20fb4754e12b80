// Depthwise convolution (groups == C == OC: one filter per channel; MobileNet's 3x3 layers) computed with the
// channels innermost. conv_general.c's depthwise loops run per plane, per tap, per output row; at 32x32 inputs
// MobileNetV2's planes are 16x16 down to 1x1, so those loops spend their time in bounds and loop set-up around
// rows of 1-16 floats. Here each image is transposed to (H, W, C) in the thread's workspace, and every output
// pixel's taps are whole rows of C floats (32 to 960 channels: vectors of 16 with no tails to speak of); the
// result is transposed back. The transposes cost two passes over the image; the taps were KH*KW.
//
// Forward: out = act(bias + sum of the taps in (kh, kw) order, padding skipped) -- the same terms in the same
// order as conv_general.c's loops. Input gradient: d(input) pixel by pixel over the output pixels in row-major
// order, then each tap in (kh, kw) order; summed in the workspace, then added into dinp. Both split the batch
// over the threads, and every element's order is fixed by the shape: any thread count gives the same bits.
// The weight and bias gradients stay in conv_general.c.
#include "CKernels.h"
#include "internal.h"
#include <string.h>

int ck_depthwise2d_applies(const ck_conv2d_general_shape *s) {
    return ck_conv_new_routes_enabled() && s->G == s->C && s->OC == s->C;
}

static size_t per_thread_floats(const ck_conv2d_general_shape *s) {
    return s->H * s->W * s->C          // the image (or its input gradient) as (H, W, C)
           + s->OH * s->OW * s->C      // the output (or its gradient) as (OH, OW, C)
           + s->KH * s->KW * s->C;     // the weights as (KH, KW, C)
}

size_t ck_depthwise2d_workspace_floats(const ck_conv2d_general_shape *s, size_t threads) {
    return (threads < 1 ? 1 : threads) * per_thread_floats(s);
}

// src (R, L) -> dst (L, R).
CK_VECTOR static void transpose(float *restrict dst, const float *restrict src, size_t R, size_t L) {
    if (L == 1 || R == 1) {
        memcpy(dst, src, R * L * sizeof(float));
        return;
    }
    for (size_t r0 = 0; r0 < R; r0 += 16) {
        const size_t r1 = ck_min(R, r0 + 16);
        for (size_t l = 0; l < L; l++)
            for (size_t r = r0; r < r1; r++) dst[l * R + r] = src[r * L + l];
    }
}

// The input pixel of output (oh, ow) under tap (kh, kw), or -1 when it lies in the padding.
static inline long tap_pixel(size_t oh, size_t ow, size_t kh, size_t kw, const ck_conv2d_general_shape *s) {
    const long ih = (long)(oh * s->stride_h + kh * s->dil_h) - (long)s->pad_t;
    const long iw = (long)(ow * s->stride_w + kw * s->dil_w) - (long)s->pad_l;
    if (ih < 0 || ih >= (long)s->H || iw < 0 || iw >= (long)s->W) return -1;
    return ih * (long)s->W + iw;
}

// acc[c] += w[c] * x[c]
CK_VECTOR static void fma_row(float *restrict acc, const float *restrict w, const float *restrict x, size_t C) {
    for (size_t c = 0; c < C; c++) acc[c] += w[c] * x[c];
}

typedef struct {
    float *out, *dinp, *work;
    const float *inp, *weight, *bias, *dout;
    const ck_conv2d_general_shape *s;
    ck_activation act;
    float bound;
} dw_job;

CK_VECTOR static void forward_part(void *ctx, size_t begin, size_t end, size_t t) {
    const dw_job *j = (const dw_job *)ctx;
    const ck_conv2d_general_shape *s = j->s;
    const size_t C = s->C, HW = s->H * s->W, P = s->OH * s->OW, KK = s->KH * s->KW;
    float *x = j->work + t * per_thread_floats(s), *y = x + HW * C, *wt = y + P * C;
    transpose(wt, j->weight, C, KK);
    for (size_t n = begin; n < end; n++) {
        transpose(x, j->inp + n * C * HW, C, HW);
        for (size_t oh = 0; oh < s->OH; oh++) {
            for (size_t ow = 0; ow < s->OW; ow++) {
                float *acc = y + (oh * s->OW + ow) * C;
                if (j->bias) {
                    memcpy(acc, j->bias, C * sizeof(float));
                } else {
                    memset(acc, 0, C * sizeof(float));
                }
                for (size_t kh = 0; kh < s->KH; kh++) {
                    for (size_t kw = 0; kw < s->KW; kw++) {
                        const long q = tap_pixel(oh, ow, kh, kw, s);
                        if (q >= 0) fma_row(acc, wt + (kh * s->KW + kw) * C, x + (size_t)q * C, C);
                    }
                }
            }
        }
        float *out_n = j->out + n * C * P;
        transpose(out_n, y, P, C);
        if (j->act != CK_ACT_NONE)
            for (size_t i = 0; i < C * P; i++) out_n[i] = ck_act(out_n[i], j->act, j->bound);
    }
}

CK_VECTOR static void input_part(void *ctx, size_t begin, size_t end, size_t t) {
    const dw_job *j = (const dw_job *)ctx;
    const ck_conv2d_general_shape *s = j->s;
    const size_t C = s->C, HW = s->H * s->W, P = s->OH * s->OW, KK = s->KH * s->KW;
    float *dx = j->work + t * per_thread_floats(s), *g = dx + HW * C, *wt = g + P * C;
    transpose(wt, j->weight, C, KK);
    for (size_t n = begin; n < end; n++) {
        transpose(g, j->dout + n * C * P, C, P);
        memset(dx, 0, HW * C * sizeof(float));
        for (size_t oh = 0; oh < s->OH; oh++) {
            for (size_t ow = 0; ow < s->OW; ow++) {
                const float *g_p = g + (oh * s->OW + ow) * C;
                for (size_t kh = 0; kh < s->KH; kh++) {
                    for (size_t kw = 0; kw < s->KW; kw++) {
                        const long q = tap_pixel(oh, ow, kh, kw, s);
                        if (q >= 0) fma_row(dx + (size_t)q * C, wt + (kh * s->KW + kw) * C, g_p, C);
                    }
                }
            }
        }
        float *dinp_n = j->dinp + n * C * HW;
        for (size_t c0 = 0; c0 < C; c0 += 16) {  // dinp (C, HW) += dx^T, 16 channels at a time
            const size_t c1 = ck_min(C, c0 + 16);
            for (size_t q = 0; q < HW; q++)
                for (size_t c = c0; c < c1; c++) dinp_n[c * HW + q] += dx[q * C + c];
        }
    }
}

void ck_depthwise2d_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                            const ck_conv2d_general_shape *s, ck_activation act, float bound) {
    // inp (N,C,H,W), weight (C,1,KH,KW), bias (C) or NULL -> out (N,C,OH,OW)
    dw_job j = {0};
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

void ck_depthwise2d_backward_input(float *dinp, float *work, const float *dout, const float *weight,
                                   const ck_conv2d_general_shape *s) {
    // dout (N,C,OH,OW), weight (C,1,KH,KW) -> dinp (N,C,H,W) (added into)
    dw_job j = {0};
    j.dinp = dinp;
    j.work = work;
    j.dout = dout;
    j.weight = weight;
    j.s = s;
    ck_parallel_for(s->N, input_part, &j);
}
