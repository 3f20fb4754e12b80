// Max and average pooling, square windows, no padding; parallel over the N*C planes.
#include "CKernels.h"
#include "internal.h"
#include <float.h>
#include <string.h>

typedef struct {
    float *out, *dinp;
    int32_t *argmax_out;
    const int32_t *argmax;
    const float *inp, *dout;
    const ck_pool_shape *s;
} pool_job;

// The common 2x2, stride 2 window, branch-free so that it vectorises over the output columns: a NaN is taken
// (and kept) like a larger value, and ties keep the first element, as the general loop below.
CK_VECTOR static void maxpool2x2_plane(float *out_p, int32_t *arg_p, const float *inp_p, size_t W, size_t OH,
                                       size_t OW) {
    for (size_t oh = 0; oh < OH; oh++) {
        const float *r0 = inp_p + 2 * oh * W, *r1 = r0 + W;
        float *o = out_p + oh * OW;
        int32_t *a = arg_p + oh * OW;
        const int32_t base = (int32_t)(2 * oh * W);
        for (size_t ow = 0; ow < OW; ow++) {
            float best = r0[2 * ow];
            int32_t bi = base + (int32_t)(2 * ow);
            float v = r0[2 * ow + 1];
            int take = (v > best) | ((v != v) & (best == best));
            best = take ? v : best;
            bi = take ? base + (int32_t)(2 * ow + 1) : bi;
            v = r1[2 * ow];
            take = (v > best) | ((v != v) & (best == best));
            best = take ? v : best;
            bi = take ? base + (int32_t)(W + 2 * ow) : bi;
            v = r1[2 * ow + 1];
            take = (v > best) | ((v != v) & (best == best));
            best = take ? v : best;
            bi = take ? base + (int32_t)(W + 2 * ow + 1) : bi;
            o[ow] = best;
            a[ow] = bi;
        }
    }
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
// The same window on AVX-512, 16 outputs per step: two loads cover a row's 32 inputs, and one permute each picks
// their even and odd columns. The loop above vectorises over ow with strided loads, and its planes are short (the
// reference CNN's 12 and 4 outputs per row): perf put it at 11-13% of a forward pass once the convolutions had
// Winograd. Same comparisons in the same order, so the same values and indices, NaN and ties included.
__attribute__((target("avx512f"))) static void maxpool2x2_plane_avx512(float *out_p, int32_t *arg_p,
                                                                      const float *inp_p, size_t W, size_t OH,
                                                                      size_t OW) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (size_t oh = 0; oh < OH; oh++) {
        const float *r0 = inp_p + 2 * oh * W, *r1 = r0 + W;
        for (size_t ow0 = 0; ow0 < OW; ow0 += 16) {
            const size_t n = OW - ow0 < 16 ? OW - ow0 : 16, in = 2 * n;  // outputs, inputs per row
            const __mmask16 mo = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
            const __mmask16 m0 = (__mmask16)(in >= 16 ? 0xFFFF : (1u << in) - 1);
            const __mmask16 m1 = (__mmask16)(in >= 32 ? 0xFFFF : (in > 16 ? (1u << (in - 16)) - 1 : 0));
            const float *a0 = r0 + 2 * ow0, *a1 = r1 + 2 * ow0;
            const __m512 lo0 = _mm512_maskz_loadu_ps(m0, a0), hi0 = _mm512_maskz_loadu_ps(m1, a0 + 16);
            const __m512 lo1 = _mm512_maskz_loadu_ps(m0, a1), hi1 = _mm512_maskz_loadu_ps(m1, a1 + 16);
            const __m512 v[4] = {_mm512_permutex2var_ps(lo0, even, hi0), _mm512_permutex2var_ps(lo0, odd, hi0),
                                 _mm512_permutex2var_ps(lo1, even, hi1), _mm512_permutex2var_ps(lo1, odd, hi1)};
            const __m512i first = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * oh * W + 2 * ow0)), even);  // 2 * lane
            const int32_t offset[4] = {0, 1, (int32_t)W, (int32_t)W + 1};
            __m512 best = v[0];
            __m512i bi = first;
            for (int k = 1; k < 4; k++) {
                const __mmask16 take = _mm512_cmp_ps_mask(v[k], best, _CMP_GT_OQ) |
                                       (_mm512_cmp_ps_mask(v[k], v[k], _CMP_UNORD_Q) &
                                        _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
                best = _mm512_mask_mov_ps(best, take, v[k]);
                bi = _mm512_mask_mov_epi32(bi, take, _mm512_add_epi32(first, _mm512_set1_epi32(offset[k])));
            }
            _mm512_mask_storeu_ps(out_p + oh * OW + ow0, mo, best);
            _mm512_mask_storeu_epi32(arg_p + oh * OW + ow0, mo, bi);
        }
    }
}

static int pool_avx512(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") ? 1 : 0;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

// inp (N,C,H,W) -> out (N,C,OH,OW), argmax (N,C,OH,OW)
static void maxpool_fwd_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const pool_job *j = (const pool_job *)ctx;
    const ck_pool_shape *s = j->s;
    const size_t H = s->H, W = s->W, OH = s->OH, OW = s->OW, K = s->K, st = s->stride;
    if (K == 2 && st == 2) {
#if defined(__x86_64__) && defined(__clang__)
        if (pool_avx512()) {
            for (size_t plane = begin; plane < end; plane++)
                maxpool2x2_plane_avx512(j->out + plane * OH * OW, j->argmax_out + plane * OH * OW,
                                        j->inp + plane * H * W, W, OH, OW);
            return;
        }
#endif
        for (size_t plane = begin; plane < end; plane++)
            maxpool2x2_plane(j->out + plane * OH * OW, j->argmax_out + plane * OH * OW, j->inp + plane * H * W, W, OH, OW);
        return;
    }
    for (size_t plane = begin; plane < end; plane++) {
        const float *inp_p = j->inp + plane * H * W;
        float *out_p = j->out + plane * OH * OW;
        int32_t *arg_p = j->argmax_out + plane * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                size_t best_i = oh * st * W + ow * st;
                float best = inp_p[best_i];
                for (size_t kh = 0; kh < K; kh++) {
                    const float *row = inp_p + (oh * st + kh) * W + ow * st;
                    for (size_t kw = 0; kw < K; kw++) {
                        // '>' keeps the first maximum; a NaN is taken so that it propagates (as PyTorch).
                        if (row[kw] > best || (row[kw] != row[kw] && best == best)) {
                            best = row[kw];
                            best_i = (oh * st + kh) * W + ow * st + kw;
                        }
                    }
                }
                out_p[oh * OW + ow] = best;
                arg_p[oh * OW + ow] = (int32_t)best_i;
            }
        }
    }
}

void ck_maxpool2d_forward(float *out, int32_t *argmax, const float *inp, const ck_pool_shape *s) {
    pool_job j = {0};
    j.out = out;
    j.argmax_out = argmax;
    j.inp = inp;
    j.s = s;
    ck_parallel_for(s->N * s->C, maxpool_fwd_part, &j);
}

static void maxpool_bwd_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const pool_job *j = (const pool_job *)ctx;
    const ck_pool_shape *s = j->s;
    const size_t P = s->OH * s->OW, HW = s->H * s->W;
    for (size_t plane = begin; plane < end; plane++) {
        float *dinp_p = j->dinp + plane * HW;
        const float *dout_p = j->dout + plane * P;
        const int32_t *arg_p = j->argmax + plane * P;
        for (size_t i = 0; i < P; i++) dinp_p[arg_p[i]] += dout_p[i];
    }
}

void ck_maxpool2d_backward(float *dinp, const float *dout, const int32_t *argmax, const ck_pool_shape *s) {
    pool_job j = {0};
    j.dinp = dinp;
    j.dout = dout;
    j.argmax = argmax;
    j.s = s;
    ck_parallel_for(s->N * s->C, maxpool_bwd_part, &j);
}

// Max-pool backward fused with the mask of the activation that produced the pool's input (a conv or linear
// layer with a fused ReLU/bounded ReLU): each plane of dinp is overwritten with zeros, then each window's
// gradient goes to its argmax where the activation passed its input. One pass over a plane in cache instead of
// a memset of the whole gradient, a scatter, and a mask pass over all of it.
typedef struct {
    float *dinp;
    const float *dout, *inp;
    const int32_t *argmax;
    const ck_pool_shape *s;
    ck_activation act;
    float bound;
} masked_pool_job;

static void maxpool_bwd_masked_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const masked_pool_job *j = (const masked_pool_job *)ctx;
    const ck_pool_shape *s = j->s;
    const size_t P = s->OH * s->OW, HW = s->H * s->W;
    for (size_t plane = begin; plane < end; plane++) {
        float *dinp_p = j->dinp + plane * HW;
        const float *dout_p = j->dout + plane * P, *inp_p = j->inp + plane * HW;
        const int32_t *arg_p = j->argmax + plane * P;
        memset(dinp_p, 0, HW * sizeof(float));
        for (size_t i = 0; i < P; i++) {
            const float g = ck_act_passes(inp_p[arg_p[i]], j->act, j->bound) ? dout_p[i] : 0.0f;
            dinp_p[arg_p[i]] += g;
        }
    }
}

void ck_maxpool2d_backward_masked(float *dinp, const float *dout, const int32_t *argmax, const float *inp,
                                  ck_activation act, float bound, const ck_pool_shape *s) {
    masked_pool_job j = {dinp, dout, inp, argmax, s, act, bound};
    ck_parallel_for(s->N * s->C, maxpool_bwd_masked_part, &j);
}

static void avgpool_fwd_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const pool_job *j = (const pool_job *)ctx;
    const ck_pool_shape *s = j->s;
    const size_t H = s->H, W = s->W, OH = s->OH, OW = s->OW, K = s->K, st = s->stride;
    const float scale = 1.0f / (float)(K * K);
    for (size_t plane = begin; plane < end; plane++) {
        const float *inp_p = j->inp + plane * H * W;
        float *out_p = j->out + plane * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                float acc = 0.0f;
                for (size_t kh = 0; kh < K; kh++) {
                    const float *row = inp_p + (oh * st + kh) * W + ow * st;
                    for (size_t kw = 0; kw < K; kw++) acc += row[kw];
                }
                out_p[oh * OW + ow] = acc * scale;
            }
        }
    }
}

void ck_avgpool2d_forward(float *out, const float *inp, const ck_pool_shape *s) {
    pool_job j = {0};
    j.out = out;
    j.inp = inp;
    j.s = s;
    ck_parallel_for(s->N * s->C, avgpool_fwd_part, &j);
}

static void avgpool_bwd_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const pool_job *j = (const pool_job *)ctx;
    const ck_pool_shape *s = j->s;
    const size_t H = s->H, W = s->W, OH = s->OH, OW = s->OW, K = s->K, st = s->stride;
    const float scale = 1.0f / (float)(K * K);
    for (size_t plane = begin; plane < end; plane++) {
        float *dinp_p = j->dinp + plane * H * W;
        const float *dout_p = j->dout + plane * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                const float g = dout_p[oh * OW + ow] * scale;
                for (size_t kh = 0; kh < K; kh++) {
                    float *row = dinp_p + (oh * st + kh) * W + ow * st;
                    for (size_t kw = 0; kw < K; kw++) row[kw] += g;
                }
            }
        }
    }
}

void ck_avgpool2d_backward(float *dinp, const float *dout, const ck_pool_shape *s) {
    pool_job j = {0};
    j.dinp = dinp;
    j.dout = dout;
    j.s = s;
    ck_parallel_for(s->N * s->C, avgpool_bwd_part, &j);
}
