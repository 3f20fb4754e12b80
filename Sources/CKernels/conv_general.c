// 2-D convolution in ONNX's general form: groups, dilation, a stride per axis, asymmetric zero padding.
// Two routes, chosen by the shape:
//  - im2col per group + sgemm (Caffe's scheme, as conv2d.c): group g's C/G input channels are unrolled into
//    col (C/G*KH*KW, OH*OW) and multiplied by its OC/G filters.
//  - depthwise (G == C: each group is one input channel, with OC/C filters): direct loops over the planes. A
//    GEMM with K = KH*KW and M = OC/C is all overhead; the loops below vectorise over the output columns when the
//    horizontal stride is 1. (MobileNet speed work comes later.)
// Threads split the batch (or the planes) as in conv2d.c; sgemm runs single-threaded inside the team.
//
// Determinism: every output element is computed by one thread in an order that does not depend on the thread
// count. The weight and bias gradients, which sum over the batch, do so in fixed slots of the batch (their number
// depends on N only) reduced in slot order, so 1, 2 or 8 threads give the same bits.
#include "CKernels.h"
#include "internal.h"
#include <string.h>

// Slots of the batch for the weight gradient of the im2col route: up to this many partial sums, each over a
// fixed run of images, then added in slot order. More slots than threads leaves no thread idle at up to 8
// threads; each slot costs one copy of the weight gradient in the workspace.
#define CK_WGRAD_SLOTS 8

int ck_conv2d_general_is_depthwise(const ck_conv2d_general_shape *s) { return s->G == s->C; }

static size_t slots(const ck_conv2d_general_shape *s) { return s->N < CK_WGRAD_SLOTS ? (s->N ? s->N : 1) : CK_WGRAD_SLOTS; }

// Rows of one group's col: (C/G)*KH*KW.
static size_t group_ckk(const ck_conv2d_general_shape *s) { return s->C / s->G * s->KH * s->KW; }

static int is_pointwise(const ck_conv2d_general_shape *s) {
    return s->KH == 1 && s->KW == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_t == 0 && s->pad_l == 0 &&
           s->pad_b == 0 && s->pad_r == 0;
}

size_t ck_conv2d_general_workspace_floats(const ck_conv2d_general_shape *s, size_t threads, int weight_grad) {
    if (ck_conv2d_general_is_depthwise(s)) return ck_depthwise2d_applies(s) ? ck_depthwise2d_workspace_floats(s, threads) : 0;
    const size_t CKK = group_ckk(s), P = s->OH * s->OW;
    size_t floats = (threads < 1 ? 1 : threads) * CKK * P;              // col, one per thread
    if (weight_grad) floats += slots(s) * (s->OC * CKK + s->OC);        // dweight and dbias partials per slot
    return floats;
}

// Output positions [lo, hi) (of n) whose tap at offset `off` (= k * dilation) lands inside [0, size):
// 0 <= o * stride + off - pad < size.
static void tap_range(size_t off, size_t pad, size_t stride, size_t size, size_t n, size_t *lo, size_t *hi) {
    size_t l = pad > off ? (pad - off + stride - 1) / stride : 0;
    size_t h = size + pad > off ? (size + pad - off + stride - 1) / stride : 0;
    if (l > n) l = n;
    if (h > n) h = n;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

// The input row of output row oh and kernel row kh, or -1 when it lies in the padding.
static inline long input_row(size_t oh, size_t kh, const ck_conv2d_general_shape *s) {
    const long ih = (long)(oh * s->stride_h + kh * s->dil_h) - (long)s->pad_t;
    return ih >= 0 && ih < (long)s->H ? ih : -1;
}

// img (C/G,H,W): one group's channels -> col (C/G*KH*KW, OH*OW).
CK_VECTOR static void im2col_general(float *col, const float *img, const ck_conv2d_general_shape *s) {
    const size_t Cg = s->C / s->G, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW;
    const size_t sw = s->stride_w, P = OH * OW;
    for (size_t c = 0; c < Cg; c++) {
        const float *img_c = img + c * H * W;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                float *col_row = col + ((c * KH + kh) * KW + kw) * P;
                const size_t off = kw * s->dil_w;
                size_t lo, hi;
                tap_range(off, s->pad_l, sw, W, OW, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    float *dst = col_row + oh * OW;
                    const long ih = input_row(oh, kh, s);
                    if (ih < 0) {
                        for (size_t ow = 0; ow < OW; ow++) dst[ow] = 0.0f;
                        continue;
                    }
                    for (size_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                    if (hi > lo) {
                        // src[(ow - lo) * sw] is the tap of output column ow, for ow in [lo, hi)
                        const float *src = img_c + (size_t)ih * W + (lo * sw + off - s->pad_l);
                        if (sw == 1) {
                            for (size_t ow = lo; ow < hi; ow++) dst[ow] = src[ow - lo];
                        } else {
                            for (size_t ow = lo; ow < hi; ow++) dst[ow] = src[(ow - lo) * sw];
                        }
                    }
                    for (size_t ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
                }
            }
        }
    }
}

// img (C/G,H,W) += col2im(col), col (C/G*KH*KW, OH*OW): the adjoint of im2col_general.
CK_VECTOR static void col2im_add_general(float *img, const float *col, const ck_conv2d_general_shape *s) {
    const size_t Cg = s->C / s->G, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW;
    const size_t sw = s->stride_w, P = OH * OW;
    for (size_t c = 0; c < Cg; c++) {
        float *img_c = img + c * H * W;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                const float *col_row = col + ((c * KH + kh) * KW + kw) * P;
                const size_t off = kw * s->dil_w;
                size_t lo, hi;
                tap_range(off, s->pad_l, sw, W, OW, &lo, &hi);
                if (hi == lo) continue;
                for (size_t oh = 0; oh < OH; oh++) {
                    const long ih = input_row(oh, kh, s);
                    if (ih < 0) continue;
                    const float *src = col_row + oh * OW;
                    float *dst = img_c + (size_t)ih * W + (lo * sw + off - s->pad_l);
                    if (sw == 1) {
                        for (size_t ow = lo; ow < hi; ow++) dst[ow - lo] += src[ow];
                    } else {
                        for (size_t ow = lo; ow < hi; ow++) dst[(ow - lo) * sw] += src[ow];
                    }
                }
            }
        }
    }
}

typedef struct {
    float *out, *dinp, *dweight, *dbias, *work, *partials;
    const float *inp, *weight, *bias, *dout;
    const ck_conv2d_general_shape *s;
    ck_activation act;
    float bound;
    size_t slots;
} general_job;

// ---- im2col route ----

// Images [begin, end): per group, col = im2col(group's channels), out_g (OC/G, P) = W_g (OC/G, CKK) @ col.
static void gemm_forward_part(void *ctx, size_t begin, size_t end, size_t t) {
    const general_job *j = (const general_job *)ctx;
    const ck_conv2d_general_shape *s = j->s;
    const size_t G = s->G, Cg = s->C / G, OCg = s->OC / G, CKK = group_ckk(s), P = s->OH * s->OW;
    const size_t HW = s->H * s->W;
    float *col = j->work + t * CKK * P;
    for (size_t n = begin; n < end; n++) {
        const float *inp_n = j->inp + n * s->C * HW;
        float *out_n = j->out + n * s->OC * P;
        for (size_t g = 0; g < G; g++) {
            const float *img = inp_n + g * Cg * HW, *b = img;  // a pointwise convolution's col is the image
            if (!is_pointwise(s)) {
                im2col_general(col, img, s);
                b = col;
            }
            ck_sgemm(0, 0, OCg, P, CKK, 1.0f, j->weight + g * OCg * CKK, CKK, b, P, 0.0f, out_n + g * OCg * P, P);
        }
        if (j->bias || j->act != CK_ACT_NONE) ck_bias_act_rows(out_n, j->bias, s->OC, P, j->act, j->bound);
    }
}

// d(input) of image n, group g: dcol = W_g^T (CKK, OC/G) @ dout_g (OC/G, P), then col2im into the group's
// channels. col is free scratch here.
static void gemm_input_gradient(const general_job *j, float *col, size_t n, size_t g) {
    const ck_conv2d_general_shape *s = j->s;
    const size_t Cg = s->C / s->G, OCg = s->OC / s->G, CKK = group_ckk(s), P = s->OH * s->OW, HW = s->H * s->W;
    const float *dout_g = j->dout + n * s->OC * P + g * OCg * P;
    float *dinp_g = j->dinp + n * s->C * HW + g * Cg * HW;
    const float *w_g = j->weight + g * OCg * CKK;
    if (is_pointwise(s)) {
        ck_sgemm(1, 0, CKK, P, OCg, 1.0f, w_g, CKK, dout_g, P, 1.0f, dinp_g, P);
    } else {
        ck_sgemm(1, 0, CKK, P, OCg, 1.0f, w_g, CKK, dout_g, P, 0.0f, col, P);
        col2im_add_general(dinp_g, col, s);
    }
}

// The input gradient alone (an attack's step): images [begin, end).
static void gemm_input_part(void *ctx, size_t begin, size_t end, size_t t) {
    const general_job *j = (const general_job *)ctx;
    const ck_conv2d_general_shape *s = j->s;
    float *col = j->work + t * group_ckk(s) * s->OH * s->OW;
    for (size_t n = begin; n < end; n++)
        for (size_t g = 0; g < s->G; g++) gemm_input_gradient(j, col, n, g);
}

// Slots [begin, end): slot q covers images [N q / S, N (q+1) / S) and sums their weight and bias gradients into
// its own partial (written, not added: the reduction adds); the input gradient of each image is done on the way.
static void gemm_backward_slots(void *ctx, size_t begin, size_t end, size_t t) {
    const general_job *j = (const general_job *)ctx;
    const ck_conv2d_general_shape *s = j->s;
    const size_t G = s->G, Cg = s->C / G, OCg = s->OC / G, CKK = group_ckk(s), P = s->OH * s->OW;
    const size_t HW = s->H * s->W, S = j->slots, N = s->N;
    float *col = j->work + t * CKK * P;
    for (size_t q = begin; q < end; q++) {
        float *dw_part = j->partials + q * (s->OC * CKK + s->OC), *db_part = dw_part + s->OC * CKK;
        memset(dw_part, 0, (s->OC * CKK + s->OC) * sizeof(float));
        for (size_t n = N * q / S; n < N * (q + 1) / S; n++) {
            const float *dout_n = j->dout + n * s->OC * P, *inp_n = j->inp + n * s->C * HW;
            if (j->dbias) {
                for (size_t o = 0; o < s->OC; o++) {
                    const float *row = dout_n + o * P;
                    float acc = 0.0f;
                    for (size_t p = 0; p < P; p++) acc += row[p];
                    db_part[o] += acc;
                }
            }
            for (size_t g = 0; g < G; g++) {
                if (j->dweight) {
                    const float *img = inp_n + g * Cg * HW, *b = img;
                    if (!is_pointwise(s)) {
                        im2col_general(col, img, s);
                        b = col;
                    }
                    // dW_g (OC/G, CKK) += dout_g (OC/G, P) @ col^T (P, CKK)
                    ck_sgemm(0, 1, OCg, CKK, P, 1.0f, dout_n + g * OCg * P, P, b, P, 1.0f, dw_part + g * OCg * CKK, CKK);
                }
                if (j->dinp) gemm_input_gradient(j, col, n, g);
            }
        }
    }
}

// dweight (then dbias) elements [begin, end) += the slots' partials, in slot order.
static void reduce_slots(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const general_job *j = (const general_job *)ctx;
    const size_t WS = j->s->OC * group_ckk(j->s), stride = WS + j->s->OC;
    for (size_t e = begin; e < end; e++) {
        float *dst = e < WS ? (j->dweight ? j->dweight + e : NULL) : (j->dbias ? j->dbias + (e - WS) : NULL);
        if (!dst) continue;
        float acc = *dst;
        for (size_t q = 0; q < j->slots; q++) acc += j->partials[q * stride + e];
        *dst = acc;
    }
}

// ---- depthwise route (G == C; M = OC/C filters per channel: filter o reads channel o / M) ----

// Planes [begin, end) of out (N*OC planes): bias, then each tap's weighted input row added in (kh, kw) order.
CK_VECTOR static void depthwise_forward_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const general_job *j = (const general_job *)ctx;
    const ck_conv2d_general_shape *s = j->s;
    const size_t C = s->C, OC = s->OC, M = OC / C, H = s->H, W = s->W, KH = s->KH, KW = s->KW;
    const size_t OH = s->OH, OW = s->OW, P = OH * OW, sw = s->stride_w;
    for (size_t plane = begin; plane < end; plane++) {
        const size_t n = plane / OC, o = plane % OC, c = o / M;
        const float *inp_p = j->inp + (n * C + c) * H * W, *w = j->weight + o * KH * KW;
        float *out_p = j->out + plane * P;
        const float b = j->bias ? j->bias[o] : 0.0f;
        for (size_t p = 0; p < P; p++) out_p[p] = b;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                const float wv = w[kh * KW + kw];
                const size_t off = kw * s->dil_w;
                size_t lo, hi;
                tap_range(off, s->pad_l, sw, W, OW, &lo, &hi);
                if (hi == lo) continue;
                for (size_t oh = 0; oh < OH; oh++) {
                    const long ih = input_row(oh, kh, s);
                    if (ih < 0) continue;
                    const float *src = inp_p + (size_t)ih * W + (lo * sw + off - s->pad_l);
                    float *dst = out_p + oh * OW + lo;
                    const size_t run = hi - lo;
                    if (sw == 1) {
                        for (size_t i = 0; i < run; i++) dst[i] += wv * src[i];
                    } else {
                        for (size_t i = 0; i < run; i++) dst[i] += wv * src[i * sw];
                    }
                }
            }
        }
        if (j->act != CK_ACT_NONE)
            for (size_t p = 0; p < P; p++) out_p[p] = ck_act(out_p[p], j->act, j->bound);
    }
}

// Planes [begin, end) of dinp (N*C planes): each of the channel's M filters scatters its taps.
CK_VECTOR static void depthwise_input_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const general_job *j = (const general_job *)ctx;
    const ck_conv2d_general_shape *s = j->s;
    const size_t C = s->C, OC = s->OC, M = OC / C, H = s->H, W = s->W, KH = s->KH, KW = s->KW;
    const size_t OH = s->OH, OW = s->OW, P = OH * OW, sw = s->stride_w;
    for (size_t plane = begin; plane < end; plane++) {
        const size_t n = plane / C, c = plane % C;
        float *dinp_p = j->dinp + plane * H * W;
        for (size_t m = 0; m < M; m++) {
            const size_t o = c * M + m;
            const float *dout_p = j->dout + (n * OC + o) * P, *w = j->weight + o * KH * KW;
            for (size_t kh = 0; kh < KH; kh++) {
                for (size_t kw = 0; kw < KW; kw++) {
                    const float wv = w[kh * KW + kw];
                    const size_t off = kw * s->dil_w;
                    size_t lo, hi;
                    tap_range(off, s->pad_l, sw, W, OW, &lo, &hi);
                    if (hi == lo) continue;
                    for (size_t oh = 0; oh < OH; oh++) {
                        const long ih = input_row(oh, kh, s);
                        if (ih < 0) continue;
                        float *dst = dinp_p + (size_t)ih * W + (lo * sw + off - s->pad_l);
                        const float *src = dout_p + oh * OW + lo;
                        const size_t run = hi - lo;
                        if (sw == 1) {
                            for (size_t i = 0; i < run; i++) dst[i] += wv * src[i];
                        } else {
                            for (size_t i = 0; i < run; i++) dst[i * sw] += wv * src[i];
                        }
                    }
                }
            }
        }
    }
}

// Σ_i g[i] * src[i * sw] over one output row: 8 float lanes (vectorised when sw == 1) then their sum, in an order
// fixed by `run` alone.
CK_VECTOR static float row_dot(const float *g, const float *src, size_t sw, size_t run) {
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    if (sw == 1) {
        for (; i + 8 <= run; i += 8)
            for (size_t l = 0; l < 8; l++) lanes[l] += g[i + l] * src[i + l];
    } else {
        for (; i + 8 <= run; i += 8)
            for (size_t l = 0; l < 8; l++) lanes[l] += g[i + l] * src[(i + l) * sw];
    }
    float acc = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (; i < run; i++) acc += g[i] * src[i * sw];
    return acc;
}

// Filters [begin, end): dweight[o] and dbias[o] summed over the batch in image order (rows in float, their sum in
// double: it runs over N*OH rows).
static void depthwise_weight_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const general_job *j = (const general_job *)ctx;
    const ck_conv2d_general_shape *s = j->s;
    const size_t C = s->C, OC = s->OC, M = OC / C, H = s->H, W = s->W, KH = s->KH, KW = s->KW;
    const size_t OH = s->OH, OW = s->OW, P = OH * OW, sw = s->stride_w;
    for (size_t o = begin; o < end; o++) {
        const size_t c = o / M;
        if (j->dbias) {
            double acc = 0.0;
            for (size_t n = 0; n < s->N; n++) {
                const float *dout_p = j->dout + (n * OC + o) * P;
                for (size_t p = 0; p < P; p++) acc += dout_p[p];
            }
            j->dbias[o] += (float)acc;
        }
        if (!j->dweight) continue;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                const size_t off = kw * s->dil_w;
                size_t lo, hi;
                tap_range(off, s->pad_l, sw, W, OW, &lo, &hi);
                double acc = 0.0;
                for (size_t n = 0; n < s->N && hi > lo; n++) {
                    const float *inp_p = j->inp + (n * C + c) * H * W, *dout_p = j->dout + (n * OC + o) * P;
                    for (size_t oh = 0; oh < OH; oh++) {
                        const long ih = input_row(oh, kh, s);
                        if (ih < 0) continue;
                        const float *src = inp_p + (size_t)ih * W + (lo * sw + off - s->pad_l);
                        acc += (double)row_dot(dout_p + oh * OW + lo, src, sw, hi - lo);
                    }
                }
                j->dweight[o * KH * KW + kh * KW + kw] += (float)acc;
            }
        }
    }
}

// ---- entry points ----

void ck_conv2d_general_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                               const ck_conv2d_general_shape *s, ck_activation act, float bound) {
    general_job j = {0};
    j.out = out;
    j.work = work;
    j.inp = inp;
    j.weight = weight;
    j.bias = bias;
    j.s = s;
    j.act = act;
    j.bound = bound;
    if (ck_depthwise2d_applies(s)) {  // one filter per channel: depthwise2d.c, channels innermost
        ck_depthwise2d_forward(out, work, inp, weight, bias, s, act, bound);
    } else if (ck_conv2d_general_is_depthwise(s)) {
        ck_parallel_for(s->N * s->OC, depthwise_forward_part, &j);
    } else {
        ck_parallel_for(s->N, gemm_forward_part, &j);
    }
}

void ck_conv2d_general_backward(float *dinp, float *dweight, float *dbias, float *work, const float *dout,
                                const float *inp, const float *weight, const ck_conv2d_general_shape *s) {
    general_job j = {0};
    j.dinp = dinp;
    j.dweight = dweight;
    j.dbias = dbias;
    j.work = work;
    j.dout = dout;
    j.inp = inp;
    j.weight = weight;
    j.s = s;
    if (ck_conv2d_general_is_depthwise(s)) {
        if (dinp && ck_depthwise2d_applies(s)) {
            ck_depthwise2d_backward_input(dinp, work, dout, weight, s);
        } else if (dinp) {
            ck_parallel_for(s->N * s->C, depthwise_input_part, &j);
        }
        if (dweight || dbias) ck_parallel_for(s->OC, depthwise_weight_part, &j);
        return;
    }
    if (!dweight && !dbias) {
        if (dinp) ck_parallel_for(s->N, gemm_input_part, &j);
        return;
    }
    // The per-thread cols first (as many as the workspace was sized for), then the slots' partials.
    const size_t CKK = group_ckk(s), P = s->OH * s->OW;
    j.slots = slots(s);
    j.partials = work + ck_threads_for(j.slots) * CKK * P;
    ck_parallel_for(j.slots, gemm_backward_slots, &j);
    ck_parallel_for(s->OC * CKK + s->OC, reduce_slots, &j);
}
