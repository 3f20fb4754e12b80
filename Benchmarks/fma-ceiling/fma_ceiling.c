// The FP32 FMA ceiling of one core: 24 independent accumulators, register operands only, for zmm (AVX-512)
// and ymm (AVX2) registers. No GEMM can beat these figures on the same core; docs/PERFORMANCE.md quotes the
// kernels' GFLOP/s against them.
//   cc -O2 Benchmarks/fma-ceiling/fma_ceiling.c -o /tmp/fma_ceiling && /tmp/fma_ceiling
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 24
static volatile float init[CHAINS + 2];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx512f"), noinline)) static float zmm(long iters) {
    __m512 a[CHAINS];
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_set1_ps(init[i]);
    const __m512 b = _mm512_set1_ps(init[CHAINS]), c = _mm512_set1_ps(init[CHAINS + 1]);
    for (long it = 0; it < iters; it++) {
#pragma clang loop unroll(full)
        for (int i = 0; i < CHAINS; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
    }
    __m512 s = a[0];
    for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"), noinline)) static float ymm(long iters) {
    __m256 a[CHAINS];
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_set1_ps(init[i]);
    const __m256 b = _mm256_set1_ps(init[CHAINS]), c = _mm256_set1_ps(init[CHAINS + 1]);
    for (long it = 0; it < iters; it++) {
#pragma clang loop unroll(full)
        for (int i = 0; i < CHAINS; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    }
    __m256 s = a[0];
    for (int i = 1; i < CHAINS; i++) s = _mm256_add_ps(s, a[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}

int main(void) {
    for (int i = 0; i < CHAINS; i++) init[i] = 0.01f * (float)(i + 1);
    init[CHAINS] = 0.999999f;
    init[CHAINS + 1] = 1e-7f;
    const long iters = 50000000;
    __builtin_cpu_init();
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        float y = ymm(iters);
        double t1 = now();
        printf("ymm (AVX2):    %6.1f GFLOP/s  (%g)\n", 2.0 * 8 * CHAINS * iters / (t1 - t0) * 1e-9, y);
        if (__builtin_cpu_supports("avx512f")) {
            double t2 = now();
            float z = zmm(iters);
            double t3 = now();
            printf("zmm (AVX-512): %6.1f GFLOP/s  (%g)\n", 2.0 * 16 * CHAINS * iters / (t3 - t2) * 1e-9, z);
        }
    }
    return 0;
}
