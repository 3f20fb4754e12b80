// A register-blocked AVX-512 GEMM for the convolutions' shapes: few rows (the output channels, M = 32 or 64 in
// the reference CNN) or few inner products (K = OC in the input gradient), and columns that are one image's
// output pixels.
//
// Why our own: OpenBLAS reaches ~88% of the FMA peak on square matrices but 45-65% on these shapes (its
// kernels pack B, the im2col matrix, on every call, and block for large M; ../shared/peers/results/summary.md and
// docs/PERFORMANCE.md). Here A (the weights, a few hundred KB) is packed once per call into panels of 6 rows,
// k-major, and B is read in place, 64 columns (4 zmm) at a time: per k, 4 vector loads and 6 broadcasts feed
// 24 FMAs into 24 accumulators, so the loop is bound by the FMA ports, not by loads. The 64-column tiles follow
// the output's layout, so the kernel writes the convolution's output directly, with the bias and activation
// applied in registers (no separate unpack or epilogue pass over memory).
//
// Built without compiler flags (SwiftPM forbids unsafeFlags in a dependency): the kernel carries
// __attribute__((target("avx512f"))) and callers take it only when the CPU has AVX-512 (ck_gemm_small_available)
// and ADVKIT_GEMM is not "openblas"; otherwise they call OpenBLAS as before. OPENBLAS_CORETYPE does not apply here: it selects OpenBLAS's kernels.
#include "CKernels.h"
#include "internal.h"
#include <stdlib.h>
#include <string.h>

#define MR 6
#define NR 64

// -1: not decided yet; 0 or 1. Read and written atomically: the first call may come from several threads.
static int g_small_mode = -1;

static int small_default_cpu(void) {
#if defined(__x86_64__) && defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}

static int small_default(void) {
    // ADVKIT_GEMM=openblas sends every convolution GEMM to OpenBLAS (for A/B measurements, or to rule us out).
    const char *choice = getenv("ADVKIT_GEMM");
    return (small_default_cpu() && !(choice && strcmp(choice, "openblas") == 0)) ? 1 : 0;
}

int ck_gemm_small_available(void) {
    int mode = __atomic_load_n(&g_small_mode, __ATOMIC_RELAXED);
    if (mode < 0) {
        mode = small_default();
        __atomic_store_n(&g_small_mode, mode, __ATOMIC_RELAXED);
    }
    return mode;
}

void ck_gemm_small_set_enabled(int enabled) {
    const int mode = enabled < 0 ? small_default() : (enabled && small_default_cpu());
    __atomic_store_n(&g_small_mode, mode, __ATOMIC_RELAXED);
}

size_t ck_gemm_small_pack_floats(size_t M, size_t K) { return (M + MR - 1) / MR * MR * K; }

void ck_gemm_small_pack(float *pack, int trans_a, size_t M, size_t K, const float *A, size_t lda) {
    const size_t panels = (M + MR - 1) / MR;
    for (size_t p = 0; p < panels; p++) {
        float *dst = pack + p * K * MR;
        for (size_t k = 0; k < K; k++) {
            for (size_t i = 0; i < MR; i++) {
                const size_t r = p * MR + i;
                dst[k * MR + i] = r >= M ? 0.0f : (trans_a ? A[k * lda + r] : A[r * lda + k]);
            }
        }
    }
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

static inline __mmask16 lane_mask(size_t cols, size_t v) {
    if (cols >= 16 * (v + 1)) return (__mmask16)0xFFFF;
    if (cols <= 16 * v) return 0;
    return (__mmask16)((1u << (cols - 16 * v)) - 1);
}

// C[0..rows)[0..cols) = epilogue(Ap (K x 6, k-major) . B (K x cols, row stride ldb)); rows <= 6, cols <= 64.
__attribute__((target("avx512f"))) static void micro_6x64(size_t K, const float *Ap, const float *B, size_t ldb,
                                                          float *C, size_t ldc, size_t rows, size_t cols,
                                                          const float *bias, ck_activation act, float bound,
                                                          int accumulate) {
    const __mmask16 m0 = lane_mask(cols, 0), m1 = lane_mask(cols, 1), m2 = lane_mask(cols, 2), m3 = lane_mask(cols, 3);
    __m512 c[MR][4];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < 4; v++) c[i][v] = _mm512_setzero_ps();
    for (size_t k = 0; k < K; k++) {
        const float *b = B + k * ldb;
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
        const __m512 b2 = _mm512_maskz_loadu_ps(m2, b + 32), b3 = _mm512_maskz_loadu_ps(m3, b + 48);
        const float *a = Ap + k * MR;
        for (int i = 0; i < MR; i++) {
            const __m512 ai = _mm512_set1_ps(a[i]);
            c[i][0] = _mm512_fmadd_ps(ai, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(ai, b1, c[i][1]);
            c[i][2] = _mm512_fmadd_ps(ai, b2, c[i][2]);
            c[i][3] = _mm512_fmadd_ps(ai, b3, c[i][3]);
        }
    }
    const __mmask16 m[4] = {m0, m1, m2, m3};
    const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(bound);
    // Rows past `rows` were computed from zero padding and are dropped; the loop over i is unrolled (MR is a
    // constant), which keeps the accumulators in registers.
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) {
        if ((size_t)i >= rows) break;
        const __m512 bi = _mm512_set1_ps(bias ? bias[i] : 0.0f);
#pragma clang loop unroll(full)
        for (int v = 0; v < 4; v++) {
            float *p = C + (size_t)i * ldc + 16 * v;
            __m512 x = c[i][v];
            if (accumulate) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m[v], p));
            x = _mm512_add_ps(x, bi);
            if (act != CK_ACT_NONE) x = _mm512_max_ps(x, zero);
            if (act == CK_ACT_BRELU) x = _mm512_min_ps(x, top);
            _mm512_mask_storeu_ps(p, m[v], x);
        }
    }
}

__attribute__((target("avx512f"))) static void gemm_avx512(size_t M, size_t N, size_t K, const float *pack,
                                                           const float *B, size_t ldb, float *C, size_t ldc,
                                                           const float *bias, ck_activation act, float bound,
                                                           int accumulate) {
    const size_t panels = (M + MR - 1) / MR;
    for (size_t n = 0; n < N; n += NR) {
        const size_t cols = ck_min(NR, N - n);
        for (size_t p = 0; p < panels; p++) {
            const size_t rows = ck_min(MR, M - p * MR);
            micro_6x64(K, pack + p * K * MR, B + n, ldb, C + p * MR * ldc + n, ldc, rows, cols,
                       bias ? bias + p * MR : NULL, act, bound, accumulate);
        }
    }
}
#endif

// The same product by plain loops: what ck_gemm_small does on a CPU without AVX-512 (the convolutions take
// OpenBLAS there instead; this keeps the function safe to call anywhere).
static void gemm_plain(size_t M, size_t N, size_t K, const float *pack, const float *B, size_t ldb, float *C,
                       size_t ldc, const float *bias, ck_activation act, float bound, int accumulate) {
    for (size_t r = 0; r < M; r++) {
        const float *a = pack + (r / MR) * K * MR + r % MR;
        for (size_t j = 0; j < N; j++) {
            float acc = 0.0f;
            for (size_t k = 0; k < K; k++) acc += a[k * MR] * B[k * ldb + j];
            const float x = (accumulate ? C[r * ldc + j] : 0.0f) + acc + (bias ? bias[r] : 0.0f);
            C[r * ldc + j] = ck_act(x, act, bound);
        }
    }
}

void ck_gemm_small(size_t M, size_t N, size_t K, const float *pack, const float *B, size_t ldb, float *C,
                   size_t ldc, const float *bias, ck_activation act, float bound, int accumulate) {
#if defined(__x86_64__) && defined(__clang__)
    if (ck_gemm_small_available()) {
        gemm_avx512(M, N, K, pack, B, ldb, C, ldc, bias, act, bound, accumulate);
        return;
    }
#endif
    gemm_plain(M, N, K, pack, B, ldb, C, ldc, bias, act, bound, accumulate);
}
