/* bench/cov_bench.c — the CPU backend's second moments (cov_add,
 * linalg/cpu_blas.c) timed at a job's shape, through the backend table as
 * the compute stage calls it.
 *
 *   cov_bench D ROWS T THREADS [REPS]
 *
 * ROWS rows of D activations (uniform in [-1, 1), float32) go into a zeroed
 * D×D float64 H in calls of T rows (one calibration window per call, as
 * pipeline/slice/compute.c feeds them), with the pipeline's 256-row blocks.
 * One warm-up pass, then the best of REPS (default 3) timed passes. Output,
 * one line:
 *
 *   cov_add D 1024 rows 16384 T 512 threads 2 seconds 0.1234 GFLOPs 139.4 kernels Cooperlake
 *
 * GFLOP/s counts the triangle, ROWS·D·(D+1), as bench/kernel_peaks.c counts
 * syrk. OpenBLAS's kernels are matched to the CPU first (linalg/blas_core.h),
 * as slicepipe does.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "blas_core.h"
#include "error.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    sp_blas_core_ensure(argv);
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: cov_bench D ROWS T THREADS [REPS]\n");
        return SP_EX_USAGE;
    }
    const int64_t D = atoll(argv[1]), rows = atoll(argv[2]), T = atoll(argv[3]), threads = atoll(argv[4]);
    const int reps = argc == 6 ? atoi(argv[5]) : 3;
    if (D < 1 || D > 65536 || rows < 1 || T < 1 || T > rows || threads < 1 || reps < 1) {
        fprintf(stderr, "cov_bench: bad arguments\n");
        return SP_EX_USAGE;
    }
    sp_bk *bk;
    if (sp_bk_cpu_open(&bk)) {
        fprintf(stderr, "cov_bench: %s\n", sp_errmsg());
        return SP_EX_SOFTWARE;
    }
    bk->set_threads(bk, threads, D);
    sp_bk_plan_in in = {.D = D, .cov_rows = 256, .no_eigh = 1};
    sp_bk_ws *ws = NULL;
    float *X = malloc((size_t)(rows * D) * 4);
    double *H = malloc((size_t)(D * D) * 8);
    if (!X || !H || bk->ws_init(bk, &in, &ws)) {
        fprintf(stderr, "cov_bench: out of memory (D %lld, rows %lld)\n", (long long)D, (long long)rows);
        return SP_EX_SOFTWARE;
    }
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < rows * D; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        X[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    double best = 1e300;
    for (int rep = 0; rep <= reps; rep++) { /* rep 0: the warm-up */
        memset(H, 0, (size_t)(D * D) * 8);
        double t0 = now_s();
        for (int64_t r0 = 0; r0 < rows; r0 += T) {
            int64_t n = rows - r0 < T ? rows - r0 : T;
            if (bk->cov_add(bk, ws, H, D, X + r0 * D, n, D, r0)) {
                fprintf(stderr, "cov_bench: %s\n", sp_errmsg());
                return SP_EX_SOFTWARE;
            }
        }
        double t = now_s() - t0;
        if (rep > 0 && t < best) best = t;
    }
    char core[64];
    sp_blas_core_name(core, sizeof core);
    printf("cov_add D %lld rows %lld T %lld threads %lld seconds %.4f GFLOPs %.1f kernels %s\n", (long long)D,
           (long long)rows, (long long)T, (long long)threads, best, (double)rows * (double)D * (double)(D + 1) / best / 1e9,
           core);
    bk->ws_free(bk, ws);
    sp_bk_close(bk);
    free(X);
    free(H);
    return 0;
}
