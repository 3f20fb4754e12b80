// The attacks' inner steps, each fused into one pass over memory where it can be.
#include "CKernels.h"
#include "internal.h"
#include <stdint.h>
#include <string.h>
#include <math.h>

static inline float signf_(float g) { return g > 0.0f ? 1.0f : (g < 0.0f ? -1.0f : 0.0f); }

CK_VECTOR void ck_linf_step(float *x, const float *g, const float *x0, float alpha, float eps, float lo, float hi,
                            size_t n) {
    if (eps < 0.0f) {
        for (size_t i = 0; i < n; i++) x[i] = ck_clampf(x[i] + alpha * signf_(g[i]), lo, hi);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float v = x[i] + alpha * signf_(g[i]);
        v = ck_clampf(v, x0[i] - eps, x0[i] + eps);
        x[i] = ck_clampf(v, lo, hi);
    }
}

CK_VECTOR void ck_project_linf(float *x, const float *x0, float eps, float lo, float hi, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = ck_clampf(ck_clampf(x[i], x0[i] - eps, x0[i] + eps), lo, hi);
}

CK_VECTOR void ck_clip(float *x, float lo, float hi, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = ck_clampf(x[i], lo, hi);
}

static double sq_norm(const float *a, size_t D) {
    double s = 0.0;
    for (size_t i = 0; i < D; i++) s += (double)a[i] * a[i];
    return s;
}

void ck_project_l2(float *x, const float *x0, float eps, float lo, float hi, size_t N, size_t D) {
    for (size_t n = 0; n < N; n++) {
        float *xn = x + n * D;
        const float *x0n = x0 + n * D;
        double s = 0.0;
        for (size_t i = 0; i < D; i++) {
            double d = (double)xn[i] - x0n[i];
            s += d * d;
        }
        const double norm = sqrt(s);
        const float f = (eps >= 0.0f && norm > eps) ? (float)(eps / norm) : 1.0f;
        for (size_t i = 0; i < D; i++) xn[i] = ck_clampf(x0n[i] + (xn[i] - x0n[i]) * f, lo, hi);
    }
}

void ck_l2_step(float *x, const float *g, const float *x0, float alpha, float eps, float lo, float hi, size_t N,
                size_t D) {
    for (size_t n = 0; n < N; n++) {
        float *xn = x + n * D;
        const float *gn = g + n * D;
        const double gnorm = sqrt(sq_norm(gn, D));
        if (gnorm > 0.0) {
            const float f = (float)(alpha / gnorm);
            for (size_t i = 0; i < D; i++) xn[i] += f * gn[i];
        }
    }
    ck_project_l2(x, x0, eps, lo, hi, N, D);
}

void ck_diff_norms(float *l0, float *l2, float *linf, const float *a, const float *b, float tol, size_t N,
                   size_t D) {
    for (size_t n = 0; n < N; n++) {
        const float *an = a + n * D, *bn = b + n * D;
        double s = 0.0;
        float m = 0.0f;
        size_t c = 0;
        for (size_t i = 0; i < D; i++) {
            float d = fabsf(an[i] - bn[i]);
            s += (double)d * d;
            if (d > m) m = d;
            if (d > tol) c++;
        }
        if (l0) l0[n] = (float)c;
        if (l2) l2[n] = (float)sqrt(s);
        if (linf) linf[n] = m;
    }
}

// tanh without libm, so that the loop vectorises (C&W spent 6% of its time in scalar tanhf/expm1f): an odd
// polynomial (Taylor to a^15) below |a| = 0.5, else 1 - 2 / (e^(2|a|) + 1) with e^y by range reduction
// (y = n ln2 + r, |r| <= ln2/2) and a degree-7 polynomial; both are computed and one is selected, branch-free.
// |a| >= 9 gives +-1 (tanh(9) rounds to 1 in float); NaN gives NaN. Absolute error below 2e-7 (tested against
// Swift's tanh).
static inline float tanh_fast(float a) {
    const float s = a < 0.0f ? -1.0f : 1.0f;
    float y = fabsf(a);
    y = y < 9.0f ? y : 9.0f;
    // small |a|
    const float a2 = y * y;
    const float c15 = -929569.0f / 638512875.0f, c13 = 21844.0f / 6081075.0f, c11 = -1382.0f / 155925.0f;
    const float c9 = 62.0f / 2835.0f, c7 = -17.0f / 315.0f, c5 = 2.0f / 15.0f, c3 = -1.0f / 3.0f;
    float q = c15;
    q = q * a2 + c13;
    q = q * a2 + c11;
    q = q * a2 + c9;
    q = q * a2 + c7;
    q = q * a2 + c5;
    q = q * a2 + c3;
    const float small = y + y * a2 * q;
    // large |a|: e^(2y)
    const float z = 2.0f * y;
    const float n = floorf(z * 1.44269504088896341f + 0.5f);
    const float r = (z - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
    float e = 1.0f / 5040.0f;
    e = e * r + 1.0f / 720.0f;
    e = e * r + 1.0f / 120.0f;
    e = e * r + 1.0f / 24.0f;
    e = e * r + 1.0f / 6.0f;
    e = e * r + 0.5f;
    e = e * r + 1.0f;
    e = e * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    const float large = 1.0f - 2.0f / (e * scale + 1.0f);
    return a != a ? a : s * (y < 0.5f ? small : large);  // NaN stays NaN (y was clamped to 9 for it above)
}

CK_VECTOR void ck_tanh_box(float *t, float *x, const float *w, float lo, float span, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float v = tanh_fast(w[i]);
        t[i] = v;
        x[i] = lo + span * (v + 1.0f) * 0.5f;
    }
}
