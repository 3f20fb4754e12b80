// Optimizer updates with PyTorch's semantics (torch.optim.SGD and torch.optim.Adam, default flags).
#include "CKernels.h"
#include "internal.h"
#include <math.h>

CK_VECTOR void ck_sgd_step(float *param, float *velocity, const float *grad, float lr, float momentum,
                           float weight_decay, int first, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + weight_decay * param[i];
        if (momentum != 0.0f) {
            float v = first ? g : momentum * velocity[i] + g;
            velocity[i] = v;
            g = v;
        }
        param[i] -= lr * g;
    }
}

void ck_adam_step(float *param, float *m, float *v, const float *grad, float lr, float beta1, float beta2,
                  float eps, float weight_decay, size_t t, size_t n) {
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + weight_decay * param[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        param[i] -= step_size * m[i] / denom;
    }
}
