// ResNet's residual join, out = relu(a + b) (He et al. 2016: the block's last convolution a plus the shortcut b),
// as one pass instead of an add and a ReLU (each a full pass over the activation, and single-threaded as tape
// ops), and its backward as one pass: the mask out > 0 applied once, added into both gradients.
//
// The values are those of the two ops one after the other: a + b rounded once, then max with 0, and the
// gradient g where out > 0 (ReLU'(0) = 0, as ck_relu_backward). Elementwise, so any split over threads gives the
// same bits.
#include "CKernels.h"
#include "internal.h"

#define RES_CHUNK 16384  // floats per parallel item: 64 KB, big enough to amortise the fork

typedef struct {
    float *out, *da, *db;
    const float *a, *b, *dout, *y;
    size_t n;
} res_job;

CK_VECTOR static void add_relu(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float x = a[i] + b[i];
        out[i] = x > 0.0f ? x : 0.0f;
    }
}

// The same into a (out == a: the importer's joins that write into their convolution's output). Its own loop: with
// out == a the vectoriser's run-time overlap check would send add_relu to its scalar loop.
CK_VECTOR static void add_relu_into(float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float x = a[i] + b[i];
        a[i] = x > 0.0f ? x : 0.0f;
    }
}

CK_VECTOR static void add_relu_backward_both(float *da, float *db, const float *dout, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float g = y[i] > 0.0f ? dout[i] : 0.0f;
        da[i] += g;
        db[i] += g;
    }
}

CK_VECTOR static void add_relu_backward_one(float *d, const float *dout, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] += y[i] > 0.0f ? dout[i] : 0.0f;
}

CK_VECTOR static void add_relu_backward_first(float *g, float *db, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float v = y[i] > 0.0f ? g[i] : 0.0f;
        g[i] = v;
        db[i] = v;
    }
}

static void first_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const res_job *j = (const res_job *)ctx;
    const size_t lo = begin * RES_CHUNK, hi = ck_min(end * RES_CHUNK, j->n);
    if (j->db) {
        add_relu_backward_first(j->da + lo, j->db + lo, j->y + lo, hi - lo);
    } else {
        ck_activation_mask_inplace(j->da + lo, j->y + lo, CK_ACT_RELU, 0.0f, hi - lo);
    }
}

static void forward_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const res_job *j = (const res_job *)ctx;
    const size_t lo = begin * RES_CHUNK, hi = ck_min(end * RES_CHUNK, j->n);
    if (j->out == j->a) {
        add_relu_into(j->out + lo, j->b + lo, hi - lo);
    } else if (j->out == j->b) {
        add_relu_into(j->out + lo, j->a + lo, hi - lo);
    } else {
        add_relu(j->out + lo, j->a + lo, j->b + lo, hi - lo);
    }
}

static void backward_part(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const res_job *j = (const res_job *)ctx;
    const size_t lo = begin * RES_CHUNK, hi = ck_min(end * RES_CHUNK, j->n);
    if (j->da && j->db) {
        add_relu_backward_both(j->da + lo, j->db + lo, j->dout + lo, j->y + lo, hi - lo);
    } else {
        add_relu_backward_one((j->da ? j->da : j->db) + lo, j->dout + lo, j->y + lo, hi - lo);
    }
}

// Splits a job's n floats over the threads in RES_CHUNK pieces.
static void run(res_job j, void (*part)(void *, size_t, size_t, size_t)) {
    ck_parallel_for((j.n + RES_CHUNK - 1) / RES_CHUNK, part, &j);
}

void ck_add_relu_forward(float *out, const float *a, const float *b, size_t n) {
    // a (n), b (n) -> out (n) = max(a + b, 0)
    run((res_job){.out = out, .a = a, .b = b, .n = n}, forward_part);
}

void ck_add_relu_backward(float *da, float *db, const float *dout, const float *out, size_t n) {
    // dout (n), out (n) = the forward's output -> da (n), db (n) += dout where out > 0; NULL: not wanted
    if (!da && !db) return;
    run((res_job){.da = da, .db = db, .dout = dout, .y = out, .n = n}, backward_part);
}

void ck_add_relu_backward_first(float *g, float *db, const float *out, size_t n) {
    // g (n) the join's upstream gradient, out (n) = the forward's output -> g (n) = g where out > 0, in place (it
    // becomes the gradient of a); db (n) = the same, written (not added), unless NULL.
    run((res_job){.da = g, .db = db, .y = out, .n = n}, first_part);
}
