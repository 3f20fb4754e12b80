// Counter-based random numbers: element i is a hash of (seed, stream, offset + i), so the numbers do not
// depend on how the work is split across threads (Salmon et al. 2011 call this family "counter-based";
// the mixer is SplitMix64's finaliser applied twice, which passes BigCrush as a hash of a counter).
#include "CKernels.h"
#include "internal.h"
#include <math.h>

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t ck_random_u64(uint64_t seed, uint64_t stream, uint64_t counter) {
    uint64_t key = mix64(seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL) ^ mix64(stream + 0x8cb92ba72f3d8dd7ULL);
    return mix64(key + counter * 0x9e3779b97f4a7c15ULL);
}

// Uniform in [0, 1) with 24 random bits (every float in the grid k / 2^24 is reachable).
static inline float u01(uint64_t r) { return (float)(r >> 40) * (1.0f / 16777216.0f); }

void ck_random_uniform(float *out, uint64_t seed, uint64_t stream, uint64_t offset, float lo, float hi, size_t n) {
    const float w = hi - lo;
    for (size_t i = 0; i < n; i++) out[i] = lo + w * u01(ck_random_u64(seed, stream, offset + i));
}

// Box-Muller on one 64-bit draw split into two 32-bit uniforms; u1 in (0, 1] so log never sees 0.
static inline float normal_at(uint64_t seed, uint64_t stream, uint64_t counter) {
    uint64_t r = ck_random_u64(seed, stream, counter);
    double u1 = ((double)(r >> 32) + 1.0) * (1.0 / 4294967296.0);
    double u2 = (double)(r & 0xffffffffULL) * (1.0 / 4294967296.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void ck_random_normal(float *out, uint64_t seed, uint64_t stream, uint64_t offset, float mean, float std, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = mean + std * normal_at(seed, stream, offset + i);
}

void ck_add_gaussian_noise(float *out, const float *x, uint64_t seed, uint64_t stream, uint64_t offset, float std,
                           float lo, float hi, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i] + std * normal_at(seed, stream, offset + i);
        out[i] = lo < hi ? ck_clampf(v, lo, hi) : v;
    }
}
