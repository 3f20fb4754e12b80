// ReLU, bounded ReLU and the fused bias+ReLU epilogue. The backward passes take the forward's output as
// their mask, so nothing but the output needs to be kept.
#include "CKernels.h"
#include "internal.h"

CK_VECTOR void ck_relu_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

CK_VECTOR void ck_relu_backward(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

CK_VECTOR void ck_brelu_forward(float *out, const float *inp, float t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i] > 0.0f ? inp[i] : 0.0f;
        out[i] = x < t ? x : t;
    }
}

CK_VECTOR void ck_brelu_backward(float *dinp, const float *dout, const float *out, float t, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] += (out[i] > 0.0f && out[i] < t) ? dout[i] : 0.0f;
}

CK_VECTOR void ck_bias_relu_nchw(float *out, const float *bias, size_t N, size_t C, size_t HW, int relu) {
    for (size_t n = 0; n < N; n++) {
        for (size_t c = 0; c < C; c++) {
            float *p = out + (n * C + c) * HW;
            const float b = bias ? bias[c] : 0.0f;
            if (relu) {
                for (size_t i = 0; i < HW; i++) {
                    float x = p[i] + b;
                    p[i] = x > 0.0f ? x : 0.0f;
                }
            } else {
                for (size_t i = 0; i < HW; i++) p[i] += b;
            }
        }
    }
}
