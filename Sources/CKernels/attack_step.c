// The attacks' inner steps, each fused into one pass over memory where it can be.
#include "CKernels.h"
#include "internal.h"
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
