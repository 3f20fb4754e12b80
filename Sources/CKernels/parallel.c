// The one place that talks to the OpenMP runtime and to OpenBLAS's threading.
//
// Design (measured on 2 cores, see docs/PERFORMANCE.md):
//  - OpenMP without -fopenmp: SwiftPM forbids unsafeFlags in a package used as a dependency, and Swift's clang
//    ships no omp.h. The OpenMP runtime's GNU entry point GOMP_parallel(fn, data, nthreads, flags) runs fn on
//    a team of nthreads (the caller is thread 0) and omp_get_thread_num() names each member; both are plain
//    C symbols of libomp5.so (Debian's LLVM OpenMP runtime), so declaring them here is all it takes.
//  - One thread pool. Debian's OpenBLAS (pthread build) has its own pool; two pools spinning on two cores
//    oversubscribe. So OpenBLAS is pinned to one thread and every kernel splits its own outer loop (the batch,
//    or the rows of a GEMM) across the OpenMP team, calling single-threaded sgemm inside.
#include "CKernels.h"
#include "internal.h"
#include <cblas.h>
#include <unistd.h>

// Under the thread sanitizer (swift build --sanitize=thread) the team is made of plain pthreads instead: Debian's
// OpenMP runtime is not built for TSan, so TSan cannot see its fork/join and would report every parallel region.
// pthread_create/join are happens-before edges TSan knows, so what it reports in this build is a real race in a
// kernel's split of the work (scripts/tsan.sh; docs/ROBUSTNESS.md). The ordinary build never compiles this path.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CK_PTHREAD_TEAM 1
#endif
#endif
#ifdef CK_PTHREAD_TEAM
#include <pthread.h>
#endif

extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
extern int omp_get_thread_num(void);
extern int omp_in_parallel(void);

static size_t g_threads = 1;

size_t ck_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

void ck_set_num_threads(size_t n) {
    g_threads = n < 1 ? 1 : n;
    openblas_set_num_threads(1);
}

size_t ck_get_num_threads(void) { return g_threads; }

const char *ck_blas_corename(void) {
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

#ifdef CK_PTHREAD_TEAM
static __thread int ck_in_team;
static int ck_nested(void) { return ck_in_team; }
#else
static int ck_nested(void) { return omp_in_parallel(); }
#endif

size_t ck_threads_for(size_t n) {
    if (g_threads <= 1 || n < 2 || ck_nested()) return 1;
    return ck_min(g_threads, n);
}

typedef struct {
    ck_range_fn fn;
    void *ctx;
    size_t n, threads;
} ck_team_job;

#ifndef CK_PTHREAD_TEAM
static void ck_team_body(void *data) {
    const ck_team_job *job = (const ck_team_job *)data;
    size_t t = (size_t)omp_get_thread_num();
    if (t >= job->threads) return;
    size_t begin = job->n * t / job->threads, end = job->n * (t + 1) / job->threads;
    if (begin < end) job->fn(job->ctx, begin, end, t);
}
#endif

#ifdef CK_PTHREAD_TEAM
typedef struct {
    const ck_team_job *job;
    size_t t;
} ck_member;

static void *ck_member_body(void *data) {
    const ck_member *m = (const ck_member *)data;
    ck_in_team = 1;
    size_t begin = m->job->n * m->t / m->job->threads, end = m->job->n * (m->t + 1) / m->job->threads;
    if (begin < end) m->job->fn(m->job->ctx, begin, end, m->t);
    return NULL;
}
#endif

void ck_parallel_for(size_t n, ck_range_fn fn, void *ctx) {
    size_t threads = ck_threads_for(n);
    if (threads <= 1) {
        if (n > 0) fn(ctx, 0, n, 0);
        return;
    }
    ck_team_job job = {fn, ctx, n, threads};
#ifdef CK_PTHREAD_TEAM
    enum { max_team = 64 };
    if (threads > max_team) job.threads = threads = max_team;
    pthread_t ids[max_team];
    ck_member members[max_team];
    size_t started = 1;
    for (size_t t = 1; t < threads; t++) {
        members[t] = (ck_member){&job, t};
        if (pthread_create(&ids[t], NULL, ck_member_body, &members[t]) != 0) break;
        started++;
    }
    for (size_t t = started; t < threads; t++) ck_member_body(&(ck_member){&job, t});  // could not start: run here
    members[0] = (ck_member){&job, 0};
    ck_member_body(&members[0]);
    ck_in_team = 0;
    for (size_t t = 1; t < started; t++) pthread_join(ids[t], NULL);
#else
    GOMP_parallel(ck_team_body, &job, (unsigned)threads, 0);
#endif
}

// ---- sgemm split over the team ----
typedef struct {
    int ta, tb;
    size_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    size_t lda, ldb, ldc;
    int split_n;
} ck_gemm_job;

static void ck_gemm_part(void *ctx, size_t begin, size_t end, size_t thread) {
    (void)thread;
    const ck_gemm_job *j = (const ck_gemm_job *)ctx;
    if (!j->split_n) {  // rows [begin, end) of C and of op(A)
        const float *A = j->ta ? j->A + begin : j->A + begin * j->lda;
        cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans,
                    (int)(end - begin), (int)j->N, (int)j->K, j->alpha, A, (int)j->lda, j->B, (int)j->ldb,
                    j->beta, j->C + begin * j->ldc, (int)j->ldc);
    } else {            // columns [begin, end) of C and of op(B)
        const float *B = j->tb ? j->B + begin * j->ldb : j->B + begin;
        cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans,
                    (int)j->M, (int)(end - begin), (int)j->K, j->alpha, j->A, (int)j->lda, B, (int)j->ldb,
                    j->beta, j->C + begin, (int)j->ldc);
    }
}

void ck_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
              const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    if (M == 0 || N == 0) return;
    ck_gemm_job job = {trans_a, trans_b, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc, 0};
    // Split the larger of M and N, and only GEMMs of at least 1e7 FLOP: below that the team's fork/join and
    // OpenBLAS's per-call setup cost more than a second core saves (measured: one image's conv2 GEMM, 6.5 MFLOP,
    // split over 2 threads made a batch-1 input gradient 1.6x slower than on 1 thread; docs/PERFORMANCE.md).
    size_t split = M >= N ? M : N;
    job.split_n = N > M;
    if (2.0 * (double)M * (double)N * (double)K < 1e7 || split < 32) {
        ck_gemm_part(&job, 0, job.split_n ? N : M, 0);
        return;
    }
    ck_parallel_for(split, ck_gemm_part, &job);
}

void ck_sgemm_naive(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A,
                    size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double acc = 0;
            for (size_t k = 0; k < K; k++) {
                double a = trans_a ? A[k * lda + i] : A[i * lda + k];
                double b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                acc += a * b;
            }
            float prev = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * acc) + prev;
        }
    }
}
