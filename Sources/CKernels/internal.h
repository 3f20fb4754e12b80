// Private helpers shared by the kernels (not part of the public header).
#ifndef CKERNELS_INTERNAL_H
#define CKERNELS_INTERNAL_H
#include <stddef.h>

// fn(ctx, begin, end, thread) over [0, n) split into contiguous chunks, one per thread (thread 0 first).
// Runs inline when n < 2, when one thread is set, or when already inside a parallel region.
typedef void (*ck_range_fn)(void *ctx, size_t begin, size_t end, size_t thread);
void ck_parallel_for(size_t n, ck_range_fn fn, void *ctx);
// Threads that ck_parallel_for would use for n items (1 inside a parallel region).
size_t ck_threads_for(size_t n);

static inline size_t ck_min(size_t a, size_t b) { return a < b ? a : b; }
static inline float ck_clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }
static inline float ck_act(float x, ck_activation act, float bound) {
    if (act == CK_ACT_NONE) return x;
    x = x > 0.0f ? x : 0.0f;
    return (act == CK_ACT_BRELU && x > bound) ? bound : x;
}

// Whether the activation passed its input, judged from its output: the mask of its backward pass (ReLU'(0) = 0).
static inline int ck_act_passes(float out, ck_activation act, float bound) {
    return act == CK_ACT_NONE || (out > 0.0f && (act != CK_ACT_BRELU || out < bound));
}

// The vector code paths: SwiftPM compiles C without -march, so hot loops get AVX-512 and AVX2 clones and
// the loader picks one for the CPU it runs on (checked: the avx512f clone uses zmm registers).
// Not under the thread sanitizer: the clones' resolvers run while the loader relocates, before TSan's runtime is
// up, and TSan's instrumentation of them crashes the process at start.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CK_NO_CLONES 1
#endif
#endif
#if defined(__x86_64__) && defined(__clang__) && !defined(CK_NO_CLONES)
#define CK_VECTOR __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CK_VECTOR
#endif

// pool.c's 2x2 stride-2 max-pool of `planes` consecutive (H, W) planes, in the calling thread: out and argmax as
// ck_maxpool2d_forward (one (H/2, W/2) plane each). For kernels that pool their own output while it is in cache.
void ck_maxpool2x2_planes(float *out, int32_t *argmax, const float *inp, size_t planes, size_t H, size_t W);

#endif
