// Softmax cross-entropy: fused, numerically stable forward (log-sum-exp after subtracting the row maximum)
// and its gradient with respect to the logits, softmax(z) - target.
#include "CKernels.h"
#include "internal.h"
#include <math.h>

// probs_n = softmax(z_n); returns log-sum-exp of z_n.
static double softmax_row(float *probs_n, const float *z, size_t K) {
    float zmax = z[0];
    for (size_t k = 1; k < K; k++)
        if (z[k] > zmax) zmax = z[k];
    double sum = 0.0;
    for (size_t k = 0; k < K; k++) {
        float e = expf(z[k] - zmax);
        if (probs_n) probs_n[k] = e;
        sum += e;
    }
    if (probs_n) {
        const float inv = (float)(1.0 / sum);
        for (size_t k = 0; k < K; k++) probs_n[k] *= inv;
    }
    return (double)zmax + log(sum);
}

static inline float smoothed_target(size_t k, int32_t label, float smoothing, size_t K) {
    return (k == (size_t)label ? 1.0f - smoothing : 0.0f) + smoothing / (float)K;
}

void ck_softmax_xent_forward(float *losses, float *probs, const float *logits, const int32_t *labels,
                             float smoothing, size_t N, size_t K) {
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * K;
        const double lse = softmax_row(probs ? probs + n * K : 0, z, K);
        double loss;
        if (smoothing == 0.0f) {
            loss = lse - z[labels[n]];
        } else {
            double dot = 0.0;
            for (size_t k = 0; k < K; k++) dot += smoothed_target(k, labels[n], smoothing, K) * (double)z[k];
            loss = lse - dot;  // sum_k t_k (lse - z_k), with sum_k t_k = 1
        }
        losses[n] = (float)loss;
    }
}

void ck_softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels, const float *scale,
                              float smoothing, size_t N, size_t K) {
    for (size_t n = 0; n < N; n++) {
        const float s = scale ? scale[n] : 1.0f;
        const float *p = probs + n * K;
        float *d = dlogits + n * K;
        for (size_t k = 0; k < K; k++) d[k] += s * (p[k] - smoothed_target(k, labels[n], smoothing, K));
    }
}

void ck_softmax_xent_soft_forward(float *losses, float *probs, const float *logits, const float *target,
                                  size_t N, size_t K) {
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * K, *t = target + n * K;
        const double lse = softmax_row(probs ? probs + n * K : 0, z, K);
        double loss = 0.0, tsum = 0.0;
        for (size_t k = 0; k < K; k++) {
            loss -= (double)t[k] * z[k];
            tsum += t[k];
        }
        losses[n] = (float)(loss + tsum * lse);
    }
}

void ck_softmax_xent_soft_backward(float *dlogits, const float *probs, const float *target, const float *scale,
                                   size_t N, size_t K) {
    for (size_t n = 0; n < N; n++) {
        const float s = scale ? scale[n] : 1.0f;
        const float *p = probs + n * K, *t = target + n * K;
        float tsum = 0.0f;
        for (size_t k = 0; k < K; k++) tsum += t[k];
        float *d = dlogits + n * K;
        for (size_t k = 0; k < K; k++) d[k] += s * (tsum * p[k] - t[k]);
    }
}

void ck_log_softmax(float *out, const float *logits, size_t N, size_t K) {
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * K;
        const double lse = softmax_row(0, z, K);
        for (size_t k = 0; k < K; k++) out[n * K + k] = (float)((double)z[k] - lse);
    }
}

void ck_softmax(float *out, const float *logits, size_t N, size_t K) {
    for (size_t n = 0; n < N; n++) softmax_row(out + n * K, logits + n * K, K);
}
