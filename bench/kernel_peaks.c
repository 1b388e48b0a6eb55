/* bench/kernel_peaks.c — this machine's rate for each kernel the compute
 * stage spends its time in, at the shapes of a slicepipe job.
 *
 *   kernel_peaks D d FFN T THREADS [SECONDS]
 *
 * D the hidden width, d the kept width, FFN the MLP width, T the window
 * length, THREADS the BLAS threads (the job's [resources] threads). Each shape
 * is timed for about SECONDS (default 0.4) after one warm-up call; the figure
 * is the best of three such repetitions, so a shared machine's noise lowers it
 * less. Output, one line each, for bench/floor_bench.sh to parse:
 *
 *   shape  KERNEL  DESCRIPTION  GFLOPS           every shape measured
 *   peak   KERNEL  GFLOPS                        the best shape of the kernel
 *   time   dsyevd  SECONDS                       one dsyevd('V') of order D
 *
 * FLOP counts: gemm 2·m·n·k; syrk k·n·(n+1) (the triangle, multiply and add
 * counted). The shapes (rows, cols) are those of pipeline/model/layer.c and
 * linalg/cpu.c: the layer's x·Wᵀ products at T rows (attention) and 256 rows
 * (MLP chunks), the per-head attention products at a 128-row query block,
 * the basis application, dsyrk/ssyrk of a 256-row block of one window, and
 * the float64 rotations of 256-row/column blocks.
 *
 * Plain C11 against OpenBLAS (cblas) and LAPACKE, and linalg/blas_core.c:
 * like slicepipe, it first puts OpenBLAS on the best kernels this CPU runs
 * (re-executing itself when OpenBLAS picked weaker ones), so the peaks are
 * this machine's best; the config line names the kernels.
 *
 *   cc -O2 -Ilinalg bench/kernel_peaks.c linalg/blas_core.c $(pkg-config --cflags --libs openblas lapacke) -lm
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas_core.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double seconds_per_rep = 0.4;

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "kernel_peaks: out of memory (%zu bytes)\n", n);
        exit(70);
    }
    return p;
}

/* Deterministic fill in [-1, 1). */
static void fill_f(float *p, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}
static void fill_d(double *p, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0;
    }
}

typedef void (*kernel_fn)(void *ctx);

/* Best rate (GFLOP/s) of f over three repetitions of ~seconds_per_rep each. */
static double best_rate(kernel_fn f, void *ctx, double flops) {
    f(ctx); /* warm-up: packing buffers, thread start */
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        int64_t n = 0;
        double t0 = now_s(), t;
        do {
            f(ctx);
            n++;
            t = now_s() - t0;
        } while (t < seconds_per_rep);
        double r = flops * (double)n / t / 1e9;
        if (r > best) best = r;
    }
    return best;
}

typedef struct gemm_ctx {
    int ta, tb;
    int m, n, k;
    const void *A, *B;
    void *C;
} gemm_ctx;

static void run_sgemm(void *p) {
    gemm_ctx *g = p;
    int lda = g->ta ? g->m : g->k, ldb = g->tb ? g->k : g->n;
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, g->m, g->n, g->k,
                1.0f, g->A, lda, g->B, ldb, 0.0f, g->C, g->n);
}
static void run_dgemm(void *p) {
    gemm_ctx *g = p;
    int lda = g->ta ? g->m : g->k, ldb = g->tb ? g->k : g->n;
    cblas_dgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, g->m, g->n, g->k,
                1.0, g->A, lda, g->B, ldb, 0.0, g->C, g->n);
}
static void run_dsyrk(void *p) {
    gemm_ctx *g = p; /* C (n, n) upper += Aᵀ·A, A (k, n) */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, g->n, g->k, 1.0, g->A, g->n, 1.0, g->C, g->n);
}
static void run_ssyrk(void *p) {
    gemm_ctx *g = p;
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, g->n, g->k, 1.0f, g->A, g->n, 0.0f, g->C, g->n);
}

int main(int argc, char **argv) {
    sp_blas_core_ensure(argv); /* before any BLAS call */
    if (argc < 6 || argc > 7) {
        fprintf(stderr, "usage: kernel_peaks D d FFN T THREADS [SECONDS]\n");
        return 64;
    }
    const int D = atoi(argv[1]), d = atoi(argv[2]), F = atoi(argv[3]), T = atoi(argv[4]), threads = atoi(argv[5]);
    if (argc == 7) seconds_per_rep = atof(argv[6]);
    if (D < 8 || d < 1 || d > D || F < 1 || T < 1 || threads < 1 || !(seconds_per_rep > 0)) {
        fprintf(stderr, "kernel_peaks: bad arguments\n");
        return 64;
    }
    openblas_set_num_threads(threads);
    char kernels[256];
    sp_blas_core_describe(kernels, sizeof kernels);
    printf("config openblas=%s core=%s threads=%d kernels: %s\n", openblas_get_config(), openblas_get_corename(), threads,
           kernels);

    const int QB = T < 128 ? T : 128, MR = T < 256 ? T : 256, hd = 64;
    int64_t big = (int64_t)F * D; /* the largest operand, elements */
    if ((int64_t)T * F > big) big = (int64_t)T * F;
    if ((int64_t)T * D > big) big = (int64_t)T * D;
    float *fa = xmalloc((size_t)big * 4), *fb = xmalloc((size_t)big * 4), *fc = xmalloc((size_t)big * 4);
    /* float64 operands: D×D, or 256×D for the rotation blocks when D < 256 */
    const int64_t dn = (int64_t)(D > 256 ? D : 256) * D;
    double *da = xmalloc((size_t)dn * 8), *db = xmalloc((size_t)dn * 8), *dc = xmalloc((size_t)dn * 8);
    fill_f(fa, big, 1);
    fill_f(fb, big, 2);
    fill_d(da, dn, 3);
    fill_d(db, dn, 4);
    memset(dc, 0, (size_t)dn * 8);

    /* sgemm: the forward's shapes (m, n, k, ta, tb). */
    struct {
        const char *what;
        int m, n, k, ta, tb;
    } sg[] = {
        {"x(T,d)*Wqkv^T(D,d)", T, D, d, 0, 1},
        {"x(T,D)*Q(D,d)", T, d, D, 0, 0},
        {"ctx(T,D)*Wo^T(D,D)", T, D, D, 0, 1},
        {"x(256,d)*Wgate^T(F,d)", MR, F, d, 0, 1},
        {"g(256,F)*Wdown^T(D,F)", MR, D, F, 0, 1},
        {"q(128,hd)*k^T(T,hd)", QB, T, hd, 0, 1},
        {"att(128,T)*v(T,hd)", QB, hd, T, 0, 0},
    };
    double speak = 0;
    for (size_t i = 0; i < sizeof sg / sizeof sg[0]; i++) {
        gemm_ctx g = {sg[i].ta, sg[i].tb, sg[i].m, sg[i].n, sg[i].k, fa, fb, fc};
        double r = best_rate(run_sgemm, &g, 2.0 * sg[i].m * sg[i].n * sg[i].k);
        printf("shape sgemm %s %.1f\n", sg[i].what, r);
        if (i < 5 && r > speak) speak = r; /* the peak: the dense layer products */
    }
    printf("peak sgemm %.1f\n", speak);

    /* dsyrk / ssyrk: one 256-row block of a window into the D×D second moment. */
    int kr = T < 256 ? T : 256;
    gemm_ctx gs = {0, 0, 0, D, kr, da, NULL, dc};
    double *stage = xmalloc((size_t)kr * D * 8);
    fill_d(stage, (int64_t)kr * D, 5);
    gs.A = stage;
    double r = best_rate(run_dsyrk, &gs, (double)kr * D * (D + 1.0));
    printf("shape dsyrk C(D,D)+=X^T*X,X(256,D) %.1f\n", r);
    printf("peak dsyrk %.1f\n", r);
    gemm_ctx gs32 = {0, 0, 0, D, kr, fa, NULL, fc};
    r = best_rate(run_ssyrk, &gs32, (double)kr * D * (D + 1.0));
    printf("shape ssyrk C(D,D)=X^T*X,X(256,D) %.1f\n", r);
    printf("peak ssyrk %.1f\n", r);

    /* dgemm: the float64 rotations. */
    struct {
        const char *what;
        int m, n, k, ta, tb;
    } dg[] = {
        {"W(256,D)*Q(D,d)", 256, d, D, 0, 0},
        {"Q^T(d,D)*W(D,256)", d, 256, D, 1, 0},
        {"W(256,D)*Q(D,D)", 256, D, D, 0, 0},
    };
    double dpeak = 0;
    for (size_t i = 0; i < sizeof dg / sizeof dg[0]; i++) {
        gemm_ctx g = {dg[i].ta, dg[i].tb, dg[i].m, dg[i].n, dg[i].k, da, db, dc};
        r = best_rate(run_dgemm, &g, 2.0 * dg[i].m * dg[i].n * dg[i].k);
        printf("shape dgemm %s %.1f\n", dg[i].what, r);
        if (r > dpeak) dpeak = r;
    }
    printf("peak dgemm %.1f\n", dpeak);

    /* dsyevd at D: a damped second moment of random data, timed directly
     * (best of 5 calls after a warm-up). */
    double *H = xmalloc((size_t)D * D * 8), *A = xmalloc((size_t)D * D * 8), *w = xmalloc((size_t)D * 8);
    memset(H, 0, (size_t)D * D * 8);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, D, kr, 1.0, stage, D, 0.0, H, D);
    for (int i = 0; i < D; i++) H[(int64_t)i * D + i] += 0.01 * kr;
    double best = INFINITY;
    for (int rep = 0; rep < 6; rep++) {
        memcpy(A, H, (size_t)D * D * 8);
        double t0 = now_s();
        lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', D, A, D, w);
        double t = now_s() - t0;
        if (info != 0) {
            fprintf(stderr, "kernel_peaks: dsyevd info=%d\n", (int)info);
            return 70;
        }
        if (rep > 0 && t < best) best = t; /* rep 0 is the warm-up */
    }
    printf("time dsyevd %.4f\n", best);
    free(fa), free(fb), free(fc), free(da), free(db), free(dc), free(stage), free(H), free(A), free(w);
    return 0;
}
