// 2-D convolution through im2col + sgemm (Caffe's scheme), NCHW, zero padding, one stride for both axes.
// Parallel over the images of the batch; each thread owns a slice of the caller's workspace.
#include "CKernels.h"
#include "internal.h"
#include <string.h>

static size_t col_floats(const ck_conv2d_shape *s) { return s->C * s->KH * s->KW * s->OH * s->OW; }

static int is_pointwise(const ck_conv2d_shape *s) {
    return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0;
}

size_t ck_conv2d_workspace_floats(const ck_conv2d_shape *s, size_t threads) {
    size_t per_thread = col_floats(s) + s->OC * s->C * s->KH * s->KW + s->OC;
    return (threads < 1 ? 1 : threads) * per_thread;
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

// img (C,H,W) -> col (C*KH*KW, OH*OW)
void ck_im2col(float *col, const float *img, const ck_conv2d_shape *s) {
    const size_t C = s->C, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW;
    const size_t st = s->stride, pad = s->pad;
    for (size_t c = 0; c < C; c++) {
        const float *img_c = img + c * H * W;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                float *col_row = col + ((c * KH + kh) * KW + kw) * OH * OW;
                size_t lo, hi;
                valid_range(kw, pad, st, W, OW, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    float *dst = col_row + oh * OW;
                    long ih = (long)(oh * st + kh) - (long)pad;
                    if (ih < 0 || ih >= (long)H) {
                        memset(dst, 0, OW * sizeof(float));
                        continue;
                    }
                    const float *src = img_c + (size_t)ih * W;
                    for (size_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                    if (st == 1) {
                        if (hi > lo) memcpy(dst + lo, src + lo + kw - pad, (hi - lo) * sizeof(float));
                    } else {
                        for (size_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * st + kw - pad];
                    }
                    for (size_t ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
                }
            }
        }
    }
}

// img (C,H,W) += col2im(col)
void ck_col2im_add(float *img, const float *col, const ck_conv2d_shape *s) {
    const size_t C = s->C, H = s->H, W = s->W, KH = s->KH, KW = s->KW, OH = s->OH, OW = s->OW;
    const size_t st = s->stride, pad = s->pad;
    for (size_t c = 0; c < C; c++) {
        float *img_c = img + c * H * W;
        for (size_t kh = 0; kh < KH; kh++) {
            for (size_t kw = 0; kw < KW; kw++) {
                const float *col_row = col + ((c * KH + kh) * KW + kw) * OH * OW;
                size_t lo, hi;
                valid_range(kw, pad, st, W, OW, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    long ih = (long)(oh * st + kh) - (long)pad;
                    if (ih < 0 || ih >= (long)H) continue;
                    const float *src = col_row + oh * OW;
                    float *dst = img_c + (size_t)ih * W;
                    for (size_t ow = lo; ow < hi; ow++) dst[ow * st + kw - pad] += src[ow];
                }
            }
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
} conv_job;

static void conv_forward_part(void *ctx, size_t begin, size_t end, size_t t) {
    const conv_job *j = (const conv_job *)ctx;
    const ck_conv2d_shape *s = j->s;
    const size_t CKK = s->C * s->KH * s->KW, P = s->OH * s->OW;
    float *col = j->work + t * j->per_thread;
    for (size_t n = begin; n < end; n++) {
        const float *inp_n = j->inp + n * s->C * s->H * s->W;
        float *out_n = j->out + n * s->OC * P;
        const float *b = inp_n;
        if (!is_pointwise(s)) {
            ck_im2col(col, inp_n, s);
            b = col;
        }
        // out_n (OC, P) = weight (OC, CKK) @ col (CKK, P), then bias and activation while it is in cache
        ck_sgemm(0, 0, s->OC, P, CKK, 1.0f, j->weight, CKK, b, P, 0.0f, out_n, P);
        if (j->bias || j->act != CK_ACT_NONE) ck_bias_act_rows(out_n, j->bias, s->OC, P, j->act, j->bound);
    }
}

void ck_conv2d_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
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
    j.per_thread = col_floats(s) + s->OC * s->C * s->KH * s->KW + s->OC;
    ck_parallel_for(s->N, conv_forward_part, &j);
}

static void conv_backward_part(void *ctx, size_t begin, size_t end, size_t t) {
    const conv_job *j = (const conv_job *)ctx;
    const ck_conv2d_shape *s = j->s;
    const size_t CKK = s->C * s->KH * s->KW, P = s->OH * s->OW;
    float *col = j->work + t * j->per_thread;
    float *dw_part = col + col_floats(s);    // this thread's share of dweight (OC, CKK)
    float *db_part = dw_part + s->OC * CKK;  // and of dbias (OC)
    if (j->dweight) memset(dw_part, 0, s->OC * CKK * sizeof(float));
    if (j->dbias) memset(db_part, 0, s->OC * sizeof(float));
    for (size_t n = begin; n < end; n++) {
        const float *dout_n = j->dout + n * s->OC * P;
        if (j->dweight) {
            const float *inp_n = j->inp + n * s->C * s->H * s->W;
            const float *b = inp_n;
            if (!is_pointwise(s)) {
                ck_im2col(col, inp_n, s);
                b = col;
            }
            // dW (OC, CKK) += dout_n (OC, P) @ col^T (P, CKK)
            ck_sgemm(0, 1, s->OC, CKK, P, 1.0f, dout_n, P, b, P, 1.0f, dw_part, CKK);
        }
        if (j->dbias) {
            for (size_t o = 0; o < s->OC; o++) {
                const float *row = dout_n + o * P;
                float acc = 0.0f;
                for (size_t p = 0; p < P; p++) acc += row[p];
                db_part[o] += acc;
            }
        }
        if (j->dinp) {
            float *dinp_n = j->dinp + n * s->C * s->H * s->W;
            if (is_pointwise(s)) {
                // dinp_n (C, P) += W^T (C, OC) @ dout_n (OC, P)
                ck_sgemm(1, 0, CKK, P, s->OC, 1.0f, j->weight, CKK, dout_n, P, 1.0f, dinp_n, P);
            } else {
                // dcol (CKK, P) = W^T (CKK, OC) @ dout_n (OC, P), then scatter-add into the image
                ck_sgemm(1, 0, CKK, P, s->OC, 1.0f, j->weight, CKK, dout_n, P, 0.0f, col, P);
                ck_col2im_add(dinp_n, col, s);
            }
        }
    }
}

void ck_conv2d_backward(float *dinp, float *dweight, float *dbias, float *work, const float *dout,
                        const float *inp, const float *weight, const ck_conv2d_shape *s) {
    conv_job j = {0};
    j.dinp = dinp;
    j.dweight = dweight;
    j.dbias = dbias;
    j.work = work;
    j.dout = dout;
    j.inp = inp;
    j.weight = weight;
    j.s = s;
    j.per_thread = col_floats(s) + s->OC * s->C * s->KH * s->KW + s->OC;
    size_t threads = ck_threads_for(s->N);
    // A thread that gets no images leaves its partial sums untouched: zero them all first.
    const size_t CKK = s->C * s->KH * s->KW;
    for (size_t t = 0; t < threads; t++) {
        float *dw_part = work + t * j.per_thread + col_floats(s);
        if (dweight) memset(dw_part, 0, s->OC * CKK * sizeof(float));
        if (dbias) memset(dw_part + s->OC * CKK, 0, s->OC * sizeof(float));
    }
    ck_parallel_for(s->N, conv_backward_part, &j);
    // Reduce the partial sums in thread order: the same thread count gives the same bits.
    for (size_t t = 0; t < threads; t++) {
        const float *dw_part = work + t * j.per_thread + col_floats(s);
        if (dweight)
            for (size_t i = 0; i < s->OC * CKK; i++) dweight[i] += dw_part[i];
        if (dbias)
            for (size_t o = 0; o < s->OC; o++) dbias[o] += dw_part[s->OC * CKK + o];
    }
}
