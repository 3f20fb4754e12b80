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


CK_VECTOR void ck_bias_act_rows(float *rows, const float *bias, size_t R, size_t L, ck_activation act, float bound) {
    for (size_t r = 0; r < R; r++) {
        float *p = rows + r * L;
        const float b = bias ? bias[r] : 0.0f;
        switch (act) {
        case CK_ACT_NONE: for (size_t i = 0; i < L; i++) p[i] += b; break;
        case CK_ACT_RELU: for (size_t i = 0; i < L; i++) { float x = p[i] + b; p[i] = x > 0.0f ? x : 0.0f; } break;
        case CK_ACT_BRELU:
            for (size_t i = 0; i < L; i++) { float x = p[i] + b; x = x > 0.0f ? x : 0.0f; p[i] = x < bound ? x : bound; }
            break;
        }
    }
}

CK_VECTOR void ck_bias_act_cols(float *rows, const float *bias, size_t R, size_t L, ck_activation act, float bound) {
    for (size_t r = 0; r < R; r++) {
        float *p = rows + r * L;
        for (size_t i = 0; i < L; i++) p[i] = ck_act(p[i] + (bias ? bias[i] : 0.0f), act, bound);
    }
}

CK_VECTOR void ck_activation_mask(float *dst, const float *dout, const float *out, ck_activation act, float bound, size_t n) {
    switch (act) {
    case CK_ACT_NONE: for (size_t i = 0; i < n; i++) dst[i] = dout[i]; break;
    case CK_ACT_RELU: for (size_t i = 0; i < n; i++) dst[i] = ck_act_passes(out[i], CK_ACT_RELU, bound) ? dout[i] : 0.0f; break;
    case CK_ACT_BRELU:
        for (size_t i = 0; i < n; i++) dst[i] = ck_act_passes(out[i], CK_ACT_BRELU, bound) ? dout[i] : 0.0f;
        break;
    }
}

// The same in place. Not ck_activation_mask(g, g, ...): its vectorised loop checks at run time that dst and dout do
// not overlap, and takes the scalar loop when they do (MobileNetV2's PGD-10 with the masks in place through it:
// this function's samples 4.8% -> 22% of the run, 2.4 s -> 4.2 s).
CK_VECTOR void ck_activation_mask_inplace(float *g, const float *out, ck_activation act, float bound, size_t n) {
    switch (act) {
    case CK_ACT_NONE: break;
    case CK_ACT_RELU: for (size_t i = 0; i < n; i++) g[i] = ck_act_passes(out[i], CK_ACT_RELU, bound) ? g[i] : 0.0f; break;
    case CK_ACT_BRELU:
        for (size_t i = 0; i < n; i++) g[i] = ck_act_passes(out[i], CK_ACT_BRELU, bound) ? g[i] : 0.0f;
        break;
    }
}
