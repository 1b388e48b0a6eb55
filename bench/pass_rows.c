/* bench/pass_rows.c — one layer's forward GEMMs of the floor job at a chosen
 * row count per call: what a layer pass's windows per call and the MLP's row
 * chunks (pipeline/model/layer.c, sp_layer_group and sp_layer_mlp_rows) buy.
 *
 *   cc -O2 -o pass_rows bench/pass_rows.c $(pkg-config --cflags --libs openblas)
 *   env -u OPENBLAS_CORETYPE OPENBLAS_THREAD_TIMEOUT=4 ./pass_rows WINDOWS MLP_ROWS [THREADS]
 *
 * The job's shapes (bench/floor_bench.sh: D 1024, sliced width 768, FFN
 * 2816, windows of 512, 64 windows): per group of WINDOWS windows the
 * attention pass's products (the basis, q, k and v, W_o, the shortcut; not
 * the per-head attention) and the MLP pass's (the basis, then gate, up and
 * down in chunks of MLP_ROWS rows, the shortcut), in the order
 * pipeline/slice/compute.c calls them, twice over. Prints seconds per layer
 * and GFLOP/s. Run the settings alternately: the machines are shared.
 * OPENBLAS_THREAD_TIMEOUT=4 is what slicepipe runs with (linalg/blas_core.c).
 */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *filled(int64_t n) {
    float *p = malloc((size_t)n * 4);
    if (!p) {
        fprintf(stderr, "pass_rows: out of memory\n");
        exit(70);
    }
    for (int64_t i = 0; i < n; i++) p[i] = (float)(i % 13) * 0.01f;
    return p;
}

/* C (m, n) = A (m, k) · op(B) + beta·C, row-major; tb: B is (n, k). */
static void gemm(int tb, int64_t m, int64_t n, int64_t k, const float *A, const float *B, float beta, float *C) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, A, (int)k, B,
                (int)(tb ? k : n), beta, C, (int)n);
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: pass_rows WINDOWS MLP_ROWS [THREADS]\n");
        return 64;
    }
    const int64_t G = atoll(argv[1]), MR = atoll(argv[2]), T = 512, W = 64, D = 1024, d = 768, qw = 1024, F = 2816;
    const int64_t R = G * T;
    if (G < 1 || W % G != 0 || MR < 1 || R % MR != 0) {
        fprintf(stderr, "pass_rows: WINDOWS must divide 64 and MLP_ROWS divide WINDOWS x 512\n");
        return 64;
    }
    openblas_set_num_threads(argc == 4 ? atoi(argv[3]) : 2);
    float *X = filled(W * T * D), *Y = filled(W * T * D), *Qf = filled(D * d), *xi = filled(R * d), *q = filled(R * qw);
    float *k = filled(R * qw), *v = filled(R * qw), *ctx = filled(R * qw), *h = filled(R * D), *S = filled(d * D);
    float *wq = filled(qw * d), *wk = filled(qw * d), *wv = filled(qw * d), *wo = filled(D * qw);
    float *wg = filled(F * d), *wu = filled(F * d), *wd = filled(D * F), *g = filled(MR * F), *u = filled(MR * F);
    const int reps = 2;
    double t0 = now_s();
    for (int rep = 0; rep < reps; rep++)
        for (int64_t w0 = 0; w0 < W; w0 += G) {
            const float *x = X + w0 * T * D;
            float *y = Y + w0 * T * D;
            gemm(0, R, d, D, x, Qf, 0.0f, xi); /* the attention pass */
            gemm(1, R, qw, d, xi, wq, 0.0f, q);
            gemm(1, R, qw, d, xi, wk, 0.0f, k);
            gemm(1, R, qw, d, xi, wv, 0.0f, v);
            gemm(1, R, D, qw, ctx, wo, 0.0f, h);
            gemm(0, R, D, d, xi, S, 1.0f, h);
            gemm(0, R, d, D, h, Qf, 0.0f, xi); /* the MLP pass */
            for (int64_t r0 = 0; r0 < R; r0 += MR) {
                gemm(1, MR, F, d, xi + r0 * d, wg, 0.0f, g);
                gemm(1, MR, F, d, xi + r0 * d, wu, 0.0f, u);
                gemm(1, MR, D, F, g, wd, 0.0f, y + r0 * D);
            }
            gemm(0, R, D, d, xi, S, 1.0f, y);
        }
    const double t = (now_s() - t0) / reps;
    const double flop = 2.0 * (double)(W * T) * (4.0 * D * d + 3.0 * qw * d + (double)D * qw + 2.0 * F * d + (double)F * D);
    printf("windows %lld (%lld rows a pass), MLP chunks of %lld rows: %.3f s per layer, %.1f GFLOP/s\n", (long long)G,
           (long long)R, (long long)MR, t, flop / t / 1e9);
    return 0;
}
