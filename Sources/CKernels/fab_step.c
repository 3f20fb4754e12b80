// FAB's step (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
// attack"): the two minimal-norm projections onto the linearised boundary within the pixel box, and the
// extrapolation between them. The Swift reference is FAB.boundaryStep / FAB.referenceStep (FAB.swift); this is
// the same arithmetic in the same order (double sums, the same pivot sequence), so the two agree bit for bit,
// and the images are split over the threads.
#include "CKernels.h"
#include "internal.h"
#include <math.h>
#include <stdint.h>

// Swift does not contract a*b+c into an FMA; neither may this file, or the two would part in the last bit.
#pragma STDC FP_CONTRACT OFF

size_t ck_fab_step_workspace_doubles(size_t D, size_t threads) { return threads * 5 * D; }

// The smallest lambda >= 0 with sum_j min(lambda*slope_j, full_j) = need, given sum_j full_j > need; breakpoints
// bp_j = full_j / slope_j. Each round tests one breakpoint and drops the coordinates it decides.
static double fab_level(double need, const double *bp, const double *fp, const double *sp, uint32_t *wk,
                        size_t count) {
    double saturated = 0.0, free_ = 0.0;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    while (count > 0) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        double pivot = bp[wk[(size_t)((rng >> 33) % (uint64_t)count)]];
        double g = saturated + pivot * free_;
        for (size_t q = 0; q < count; q++) {
            size_t j = wk[q];
            g += bp[j] <= pivot ? fp[j] : pivot * sp[j];
        }
        size_t kept = 0;
        if (g >= need) {
            for (size_t q = 0; q < count; q++) {
                size_t j = wk[q];
                if (bp[j] >= pivot) free_ += sp[j]; else wk[kept++] = wk[q];
            }
        } else {
            for (size_t q = 0; q < count; q++) {
                size_t j = wk[q];
                if (bp[j] <= pivot) saturated += fp[j]; else wk[kept++] = wk[q];
            }
        }
        count = kept;
    }
    if (free_ > 0.0) {
        double l = (need - saturated) / free_;
        return l > 0.0 ? l : 0.0;
    }
    return INFINITY;
}

// out (D): the minimal-norm d with w.d = c and lo <= p + d <= hi; returns ||d|| (L-inf or L2).
// p, w (D); scratch: 3*D doubles and D uint32.
static float fab_boundary_step(float *out, double *bp, double *fp, double *sp, uint32_t *wk, const float *p,
                               const float *w, double c, size_t D, int l2, float lo, float hi) {
    for (size_t j = 0; j < D; j++) out[j] = 0.0f;
    if (c == 0.0 || !isfinite(c)) return 0.0f;
    int up = c > 0.0;
    double need = fabs(c), total = 0.0;
    size_t count = 0;
    for (size_t j = 0; j < D; j++) {
        if (w[j] == 0.0f) continue;
        double a = (double)fabsf(w[j]);
        double room = ((w[j] > 0.0f) == up) ? (double)hi - (double)p[j] : (double)p[j] - (double)lo;
        if (!(room > 0.0)) room = 0.0;
        double t = l2 ? a : 1.0;
        bp[j] = room / t;
        fp[j] = a * room;
        sp[j] = a * t;
        total += fp[j];
        wk[count++] = (uint32_t)j;
    }
    double lambda = INFINITY;
    if (total > need) lambda = fab_level(need, bp, fp, sp, wk, count);
    double size = 0.0;
    for (size_t j = 0; j < D; j++) {
        if (w[j] == 0.0f) continue;
        int positive = (w[j] > 0.0f) == up;
        double room = positive ? (double)hi - (double)p[j] : (double)p[j] - (double)lo;
        if (!(room > 0.0)) room = 0.0;
        double t = l2 ? (double)fabsf(w[j]) : 1.0;
        double lt = lambda * t;
        double move = lt < room ? lt : room;
        out[j] = (float)(positive ? move : -move);
        if (l2) size = size + move * move; else size = move > size ? move : size;
    }
    return (float)(l2 ? sqrt(size) : size);
}

typedef struct {
    float *out;
    double *scratch;
    const float *x1, *x0, *w, *f;
    size_t D;
    int l2;
    float alpha_max, eta, lo, hi;
} fab_job;

static void fab_part(void *ctx, size_t begin, size_t end, size_t thread) {
    const fab_job *job = (const fab_job *)ctx;
    const size_t D = job->D;
    double *bp = job->scratch + thread * 5 * D, *fp = bp + D, *sp = fp + D;
    float *d1 = (float *)(sp + D), *d2 = d1 + D;
    uint32_t *wk = (uint32_t *)(sp + 2 * D);
    for (size_t n = begin; n < end; n++) {
        const float *x1_n = job->x1 + n * D, *x0_n = job->x0 + n * D, *w_n = job->w + n * D;
        float *out_n = job->out + n * D;
        double shift = 0.0;  // w.(x0 - x1)
        for (size_t j = 0; j < D; j++) shift += (double)w_n[j] * (double)(x0_n[j] - x1_n[j]);
        double f = (double)job->f[n];
        float a1 = fab_boundary_step(d1, bp, fp, sp, wk, x1_n, w_n, -f, D, job->l2, job->lo, job->hi);
        float a2 = fab_boundary_step(d2, bp, fp, sp, wk, x0_n, w_n, -f - shift, D, job->l2, job->lo, job->hi);
        if (!(a1 >= 1e-8f)) a1 = 1e-8f;
        if (!(a2 >= 1e-8f)) a2 = 1e-8f;
        float alpha = a1 / (a1 + a2);
        alpha = alpha > 0.0f ? alpha : 0.0f;
        alpha = alpha < job->alpha_max ? alpha : job->alpha_max;
        const float eta = job->eta;
        for (size_t j = 0; j < D; j++) {
            float p = (1.0f - alpha) * (x1_n[j] + eta * d1[j]) + alpha * (x0_n[j] + eta * d2[j]);
            out_n[j] = ck_clampf(p, job->lo, job->hi);
        }
    }
}

// out, x1, x0, w (N, D); f (N). scratch: ck_fab_step_workspace_doubles(D, ck_get_num_threads()) doubles.
void ck_fab_step(float *out, double *scratch, const float *x1, const float *x0, const float *w, const float *f,
                 size_t N, size_t D, int l2, float alpha_max, float eta, float lo, float hi) {
    fab_job job = {out, scratch, x1, x0, w, f, D, l2, alpha_max, eta, lo, hi};
    ck_parallel_for(N, fab_part, &job);
}
