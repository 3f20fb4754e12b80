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
    const __m512i one = _mm512_set1_epi32(1), odd = _mm512_add_epi32(even, one);
    const __m512i w0 = _mm512_set1_epi32((int32_t)W), w1 = _mm512_set1_epi32((int32_t)W + 1);
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
            const __m512i at[4] = {first, _mm512_add_epi32(first, one), _mm512_add_epi32(first, w0),
                                   _mm512_add_epi32(first, w1)};
            __m512 best = v[0];
            __m512i bi = first;
            // Without NaNs (one test for the 64 inputs) "take" is v > best; with one, the rule in full (rare).
            const int nan = (_mm512_cmp_ps_mask(v[0], v[1], _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v[2], v[3], _CMP_UNORD_Q)) != 0;
            for (int k = 1; k < 4; k++) {
                __mmask16 take = _mm512_cmp_ps_mask(v[k], best, _CMP_GT_OQ);
                if (nan)
                    take |= _mm512_cmp_ps_mask(v[k], v[k], _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q);
                best = _mm512_mask_mov_ps(best, take, v[k]);
                bi = _mm512_mask_mov_epi32(bi, take, at[k]);
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

void ck_maxpool2x2_planes(float *out, int32_t *argmax, const float *inp, size_t planes, size_t H, size_t W) {
    const size_t OH = H / 2, OW = W / 2;
#if defined(__x86_64__) && defined(__clang__)
    if (pool_avx512()) {
        for (size_t p = 0; p < planes; p++)
            maxpool2x2_plane_avx512(out + p * OH * OW, argmax + p * OH * OW, inp + p * H * W, W, OH, OW);
        return;
    }
#endif
    for (size_t p = 0; p < planes; p++)
        maxpool2x2_plane(out + p * OH * OW, argmax + p * OH * OW, inp + p * H * W, W, OH, OW);
}

// inp (N,C,H,W) -> out (N,C,OH,OW), argmax (N,C,OH,OW)
static void maxpool_fwd_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const pool_job *j = (const pool_job *)ctx;
    const ck_pool_shape *s = j->s;
    const size_t H = s->H, W = s->W, OH = s->OH, OW = s->OW, K = s->K, st = s->stride;
    if (K == 2 && st == 2) {
        ck_maxpool2x2_planes(j->out + begin * OH * OW, j->argmax_out + begin * OH * OW, j->inp + begin * H * W,
                             end - begin, H, W);
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
// layer with a fused ReLU/bounded ReLU): each plane of dinp is overwritten, each window's gradient going to its
// argmax where the activation passed the value there. One pass over a plane in cache instead of a memset of the
// whole gradient, a scatter, and a mask pass over all of it. The value at the argmax is the window's max, the
// forward's output, so the mask reads out (a quarter of the input's size for 2x2 windows) instead of gathering
// from the input: the reference CNN's 32x24x24 conv1 output is 73 KB an image, long out of cache by the time
// the backward pass reaches it, and those loads took most of this kernel's time (perf annotate).
typedef struct {
    float *dinp;
    const float *dout, *out;
    const int32_t *argmax;
    const ck_pool_shape *s;
    ck_activation act;
    float bound;
} masked_pool_job;

#if defined(__x86_64__) && defined(__clang__)
// The 2x2 stride-2 window on AVX-512, 16 outputs per step, every input of the plane written once (no memset of
// the plane, no scatter): each output's argmax is one of its window's four positions, so the gradient is placed
// by comparing the argmax with the four, and two interleaving permutes give the two input rows. The scalar loop
// below takes ~10 cycles an output (a gather, a branch and a scatter after a memset of the plane): perf put it at
// 11.6% of the command line's PGD-40 on the reference CNN. The values are the scalar loop's, bit for bit: 0 + g,
// as there, turns a -0 gradient into +0. Inputs outside every window (an odd last row or column) get zeros.
__attribute__((target("avx512f"))) static void maxpool2x2_bwd_masked_plane_avx512(
    float *dinp_p, const float *dout_p, const int32_t *arg_p, const float *out_p, size_t H, size_t W, size_t OH,
    size_t OW, ck_activation act, float bound) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i inter_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i inter_hi = _mm512_add_epi32(inter_lo, _mm512_set1_epi32(8));
    const __m512 zero = _mm512_setzero_ps(), vbound = _mm512_set1_ps(bound);
    const __m512i w1 = _mm512_set1_epi32((int32_t)W), one = _mm512_set1_epi32(1);
    if (H != 2 * OH || W != 2 * OW) memset(dinp_p, 0, H * W * sizeof(float));
    for (size_t oh = 0; oh < OH; oh++) {
        float *d0 = dinp_p + 2 * oh * W, *d1 = d0 + W;
        for (size_t ow0 = 0; ow0 < OW; ow0 += 16) {
            const size_t n = OW - ow0 < 16 ? OW - ow0 : 16, in = 2 * n;  // outputs, inputs per row
            const __mmask16 mo = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
            const __mmask16 m0 = (__mmask16)(in >= 16 ? 0xFFFF : (1u << in) - 1);
            const __mmask16 m1 = (__mmask16)(in >= 32 ? 0xFFFF : (in > 16 ? (1u << (in - 16)) - 1 : 0));
            const size_t o = oh * OW + ow0;
            // rel: the argmax relative to the window's first element: 0, 1, W or W + 1.
            const __m512i first = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * oh * W + 2 * ow0)), even);
            const __m512i rel = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(mo, arg_p + o), first);
            __mmask16 pass = mo;
            if (act != CK_ACT_NONE) {
                const __m512 v = _mm512_maskz_loadu_ps(mo, out_p + o);
                pass &= _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
                if (act == CK_ACT_BRELU) pass &= _mm512_cmp_ps_mask(v, vbound, _CMP_LT_OQ);
            }
            const __m512 g = _mm512_maskz_add_ps(pass, zero, _mm512_maskz_loadu_ps(mo, dout_p + o));
            const __m512 g0 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_setzero_si512()), g);
            const __m512 g1 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(rel, one), g);
            const __m512 g2 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(rel, w1), g);
            const __m512 g3 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_add_epi32(w1, one)), g);
            _mm512_mask_storeu_ps(d0 + 2 * ow0, m0, _mm512_permutex2var_ps(g0, inter_lo, g1));
            _mm512_mask_storeu_ps(d0 + 2 * ow0 + 16, m1, _mm512_permutex2var_ps(g0, inter_hi, g1));
            _mm512_mask_storeu_ps(d1 + 2 * ow0, m0, _mm512_permutex2var_ps(g2, inter_lo, g3));
            _mm512_mask_storeu_ps(d1 + 2 * ow0 + 16, m1, _mm512_permutex2var_ps(g2, inter_hi, g3));
        }
    }
}
#endif

static void maxpool_bwd_masked_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const masked_pool_job *j = (const masked_pool_job *)ctx;
    const ck_pool_shape *s = j->s;
    const size_t P = s->OH * s->OW, HW = s->H * s->W;
#if defined(__x86_64__) && defined(__clang__)
    if (s->K == 2 && s->stride == 2 && pool_avx512()) {
        for (size_t plane = begin; plane < end; plane++)
            maxpool2x2_bwd_masked_plane_avx512(j->dinp + plane * HW, j->dout + plane * P, j->argmax + plane * P,
                                               j->out + plane * P, s->H, s->W, s->OH, s->OW, j->act, j->bound);
        return;
    }
#endif
    for (size_t plane = begin; plane < end; plane++) {
        float *dinp_p = j->dinp + plane * HW;
        const float *dout_p = j->dout + plane * P, *out_p = j->out + plane * P;
        const int32_t *arg_p = j->argmax + plane * P;
        memset(dinp_p, 0, HW * sizeof(float));
        for (size_t i = 0; i < P; i++) {
            const float g = ck_act_passes(out_p[i], j->act, j->bound) ? dout_p[i] : 0.0f;
            dinp_p[arg_p[i]] += g;
        }
    }
}

void ck_maxpool2d_backward_masked(float *dinp, const float *dout, const int32_t *argmax, const float *out,
                                  ck_activation act, float bound, const ck_pool_shape *s) {
    masked_pool_job j = {dinp, dout, out, argmax, s, act, bound};
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
