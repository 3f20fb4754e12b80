// Fully connected layer, PyTorch's layout: weight (OUT, IN).
#include "CKernels.h"
#include "internal.h"

// inp (N,IN), weight (OUT,IN), bias (OUT), out (N,OUT)
void ck_linear_forward(float *out, const float *inp, const float *weight, const float *bias, size_t N,
                       size_t IN, size_t OUT, ck_activation act, float bound) {
    ck_sgemm(0, 1, N, OUT, IN, 1.0f, inp, IN, weight, IN, 0.0f, out, OUT);
    if (bias || act != CK_ACT_NONE) ck_bias_act_cols(out, bias, N, OUT, act, bound);
}

// dout (N,OUT) -> dinp (N,IN), dweight (OUT,IN), dbias (OUT)
void ck_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, size_t N, size_t IN, size_t OUT) {
    if (dinp) ck_sgemm(0, 0, N, IN, OUT, 1.0f, dout, OUT, weight, IN, 1.0f, dinp, IN);
    if (dweight) ck_sgemm(1, 0, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dweight, IN);
    if (dbias) {
        for (size_t n = 0; n < N; n++) {
            const float *dout_n = dout + n * OUT;
            for (size_t o = 0; o < OUT; o++) dbias[o] += dout_n[o];
        }
    }
}
