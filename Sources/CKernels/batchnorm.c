// Batch normalisation over (N, H, W) per channel, as PyTorch's BatchNorm2d.
#include "CKernels.h"
#include "internal.h"
#include <math.h>

void ck_batchnorm2d_forward_train(float *out, float *xhat, float *mean, float *invstd, const float *inp,
                                  const float *gamma, const float *beta, size_t N, size_t C, size_t HW,
                                  float eps) {
    const double count = (double)(N * HW);
    for (size_t c = 0; c < C; c++) {
        double sum = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *p = inp + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) sum += p[i];
        }
        const double mu = sum / count;
        double sq = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *p = inp + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) {
                double d = p[i] - mu;
                sq += d * d;
            }
        }
        const double var = sq / count;
        const float is = (float)(1.0 / sqrt(var + eps));
        mean[c] = (float)mu;
        invstd[c] = is;
        const float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
        for (size_t n = 0; n < N; n++) {
            const float *p = inp + (n * C + c) * HW;
            float *xh = xhat + (n * C + c) * HW, *o = out + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) {
                xh[i] = (p[i] - (float)mu) * is;
                o[i] = xh[i] * g + b;
            }
        }
    }
}

void ck_batchnorm2d_forward_eval(float *out, const float *inp, const float *gamma, const float *beta,
                                 const float *running_mean, const float *running_var, size_t N, size_t C,
                                 size_t HW, float eps) {
    for (size_t c = 0; c < C; c++) {
        const float is = 1.0f / sqrtf(running_var[c] + eps);
        const float g = (gamma ? gamma[c] : 1.0f) * is;
        const float b = (beta ? beta[c] : 0.0f) - running_mean[c] * g;
        for (size_t n = 0; n < N; n++) {
            const float *p = inp + (n * C + c) * HW;
            float *o = out + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) o[i] = p[i] * g + b;
        }
    }
}

// dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat)), M = N*HW
void ck_batchnorm2d_backward(float *dinp, float *dgamma, float *dbeta, const float *dout, const float *xhat,
                             const float *invstd, const float *gamma, size_t N, size_t C, size_t HW) {
    const float M = (float)(N * HW);
    for (size_t c = 0; c < C; c++) {
        double sum_dy = 0.0, sum_dy_xh = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *dy = dout + (n * C + c) * HW, *xh = xhat + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) {
                sum_dy += dy[i];
                sum_dy_xh += (double)dy[i] * xh[i];
            }
        }
        if (dgamma) dgamma[c] += (float)sum_dy_xh;
        if (dbeta) dbeta[c] += (float)sum_dy;
        if (!dinp) continue;
        const float k = (gamma ? gamma[c] : 1.0f) * invstd[c] / M;
        const float a = (float)sum_dy, b = (float)sum_dy_xh;
        for (size_t n = 0; n < N; n++) {
            const float *dy = dout + (n * C + c) * HW, *xh = xhat + (n * C + c) * HW;
            float *dx = dinp + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) dx[i] += k * (M * dy[i] - a - xh[i] * b);
        }
    }
}
