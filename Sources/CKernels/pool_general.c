// Max and average pooling in ONNX's general form: KH x KW windows, a stride per axis, asymmetric padding,
// dilation, and output sizes from floor or ceil mode (the caller's). Parallel over the N*C planes; every
// element is computed by one thread, so any thread count gives the same bits.
#include "CKernels.h"
#include "internal.h"
#include <math.h>

typedef struct {
    float *out, *dinp;
    int32_t *argmax_out;
    const int32_t *argmax;
    const float *inp, *dout;
    const ck_pool2d_general_shape *s;
    int count_include_pad;
} pool_general_job;

// The first tap of output row oh (or column) in input coordinates; may be negative (inside the left padding).
static inline long window_start(size_t o, size_t stride, size_t pad) { return (long)(o * stride) - (long)pad; }

// Inp (N,C,H,W) -> out (N,C,OH,OW), argmax (N,C,OH,OW).
static void maxpool_general_fwd_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const pool_general_job *j = (const pool_general_job *)ctx;
    const ck_pool2d_general_shape *s = j->s;
    const long H = (long)s->H, W = (long)s->W;
    const size_t OH = s->OH, OW = s->OW;
    for (size_t plane = begin; plane < end; plane++) {
        const float *inp_p = j->inp + plane * s->H * s->W;
        float *out_p = j->out + plane * OH * OW;
        int32_t *arg_p = j->argmax_out + plane * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            const long h0 = window_start(oh, s->stride_h, s->pad_t);
            for (size_t ow = 0; ow < OW; ow++) {
                const long w0 = window_start(ow, s->stride_w, s->pad_l);
                float best = -INFINITY;
                long bi = -1;
                // Taps in row-major order: '>' keeps the first maximum; a NaN is taken and kept (as PyTorch).
                for (size_t kh = 0; kh < s->KH; kh++) {
                    const long ih = h0 + (long)(kh * s->dil_h);
                    if (ih < 0 || ih >= H) continue;
                    const float *row = inp_p + ih * W;
                    for (size_t kw = 0; kw < s->KW; kw++) {
                        const long iw = w0 + (long)(kw * s->dil_w);
                        if (iw < 0 || iw >= W) continue;
                        const float v = row[iw];
                        if (bi < 0 || v > best || (v != v && best == best)) {
                            best = v;
                            bi = ih * W + iw;
                        }
                    }
                }
                out_p[oh * OW + ow] = best;
                arg_p[oh * OW + ow] = (int32_t)bi;
            }
        }
    }
}

void ck_maxpool2d_general_forward(float *out, int32_t *argmax, const float *inp, const ck_pool2d_general_shape *s) {
    pool_general_job j = {0};
    j.out = out;
    j.argmax_out = argmax;
    j.inp = inp;
    j.s = s;
    ck_parallel_for(s->N * s->C, maxpool_general_fwd_part, &j);
}

static void maxpool_general_bwd_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const pool_general_job *j = (const pool_general_job *)ctx;
    const ck_pool2d_general_shape *s = j->s;
    const size_t P = s->OH * s->OW, HW = s->H * s->W;
    for (size_t plane = begin; plane < end; plane++) {
        float *dinp_p = j->dinp + plane * HW;
        const float *dout_p = j->dout + plane * P;
        const int32_t *arg_p = j->argmax + plane * P;
        for (size_t i = 0; i < P; i++)
            if (arg_p[i] >= 0) dinp_p[arg_p[i]] += dout_p[i];
    }
}

void ck_maxpool2d_general_backward(float *dinp, const float *dout, const int32_t *argmax,
                                   const ck_pool2d_general_shape *s) {
    pool_general_job j = {0};
    j.dinp = dinp;
    j.dout = dout;
    j.argmax = argmax;
    j.s = s;
    ck_parallel_for(s->N * s->C, maxpool_general_bwd_part, &j);
}

// Taps of one window along one axis: [lo, hi) are those inside the input (tap k at start + k*dil), and
// *counted the divisor's share: the taps inside the input, or (count_include_pad) inside input + padding.
static void window_taps(long start, size_t K, size_t dil, long size, size_t pad_end, int include_pad, size_t *lo,
                        size_t *hi, size_t *counted) {
    size_t l = K, h = 0, padded = 0;
    for (size_t k = 0; k < K; k++) {
        const long i = start + (long)(k * dil);
        if (i >= 0 && i < size) {
            if (l == K) l = k;
            h = k + 1;
        }
        if (i < size + (long)pad_end) padded++;  // i >= -pad_begin always: the window starts there at the earliest
    }
    if (l == K) l = h = 0;
    *lo = l;
    *hi = h;
    // Inside the input, the taps form one run (they are increasing), so hi - lo counts them.
    *counted = include_pad ? padded : h - l;
}

static void avgpool_general_fwd_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const pool_general_job *j = (const pool_general_job *)ctx;
    const ck_pool2d_general_shape *s = j->s;
    const size_t H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    for (size_t plane = begin; plane < end; plane++) {
        const float *inp_p = j->inp + plane * H * W;
        float *out_p = j->out + plane * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            const long h0 = window_start(oh, s->stride_h, s->pad_t);
            size_t khl, khh, ch;
            window_taps(h0, s->KH, s->dil_h, (long)H, s->pad_b, j->count_include_pad, &khl, &khh, &ch);
            for (size_t ow = 0; ow < OW; ow++) {
                const long w0 = window_start(ow, s->stride_w, s->pad_l);
                size_t kwl, kwh, cw;
                window_taps(w0, s->KW, s->dil_w, (long)W, s->pad_r, j->count_include_pad, &kwl, &kwh, &cw);
                float acc = 0.0f;
                for (size_t kh = khl; kh < khh; kh++) {
                    const float *row = inp_p + (size_t)(h0 + (long)(kh * s->dil_h)) * W;
                    for (size_t kw = kwl; kw < kwh; kw++) acc += row[w0 + (long)(kw * s->dil_w)];
                }
                const size_t count = ch * cw;
                out_p[oh * OW + ow] = count ? acc / (float)count : 0.0f;
            }
        }
    }
}

void ck_avgpool2d_general_forward(float *out, const float *inp, const ck_pool2d_general_shape *s,
                                  int count_include_pad) {
    pool_general_job j = {0};
    j.out = out;
    j.inp = inp;
    j.s = s;
    j.count_include_pad = count_include_pad;
    ck_parallel_for(s->N * s->C, avgpool_general_fwd_part, &j);
}

static void avgpool_general_bwd_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const pool_general_job *j = (const pool_general_job *)ctx;
    const ck_pool2d_general_shape *s = j->s;
    const size_t H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    for (size_t plane = begin; plane < end; plane++) {
        float *dinp_p = j->dinp + plane * H * W;
        const float *dout_p = j->dout + plane * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            const long h0 = window_start(oh, s->stride_h, s->pad_t);
            size_t khl, khh, ch;
            window_taps(h0, s->KH, s->dil_h, (long)H, s->pad_b, j->count_include_pad, &khl, &khh, &ch);
            for (size_t ow = 0; ow < OW; ow++) {
                const long w0 = window_start(ow, s->stride_w, s->pad_l);
                size_t kwl, kwh, cw;
                window_taps(w0, s->KW, s->dil_w, (long)W, s->pad_r, j->count_include_pad, &kwl, &kwh, &cw);
                const size_t count = ch * cw;
                if (!count) continue;
                const float g = dout_p[oh * OW + ow] / (float)count;
                for (size_t kh = khl; kh < khh; kh++) {
                    float *row = dinp_p + (size_t)(h0 + (long)(kh * s->dil_h)) * W;
                    for (size_t kw = kwl; kw < kwh; kw++) row[w0 + (long)(kw * s->dil_w)] += g;
                }
            }
        }
    }
}

void ck_avgpool2d_general_backward(float *dinp, const float *dout, const ck_pool2d_general_shape *s,
                                   int count_include_pad) {
    pool_general_job j = {0};
    j.dinp = dinp;
    j.dout = dout;
    j.s = s;
    j.count_include_pad = count_include_pad;
    ck_parallel_for(s->N * s->C, avgpool_general_bwd_part, &j);
}
