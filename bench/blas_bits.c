/* bench/blas_bits.c — does OpenBLAS give the same bits at another thread
 * count, or when one product is cut into pieces? (docs/determinism.md)
 *
 *   blas_bits            (run it under each OPENBLAS_CORETYPE: blas_bits.sh)
 *
 * For the kernel OpenBLAS runs, one line per case:
 *
 *   KERNEL  OP  SHAPE  t2=same|DIFF  t3=same|DIFF  tiles=same|DIFF|-
 *
 * t2, t3: the result at 2 and 3 threads against 1 thread, bit for bit.
 * tiles: at 1 thread, the product computed as fixed pieces (96 output
 * columns, or a 64-column split of the triangle for ssyrk: diagonal blocks
 * by ssyrk, the rest by sgemm) against one call. The shapes are those of a
 * slicepipe job: attention's per-head products at a 128-row query block,
 * the layer's x·Wᵀ, one second-moment block, dsyevd of the PCA's order.
 *
 * Plain C11 against OpenBLAS (cblas) and LAPACKE; no slicepipe code.
 */
#include <cblas.h>
#include <lapacke.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t state = 0x243F6A8885A308D3ull;
static double urand(void) {
    state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
    return (double)((state * 2685821657736338717ull) >> 11) / 9007199254740992.0 - 0.5;
}
static void *xcalloc(size_t n, size_t s) {
    void *p = calloc(n, s);
    if (!p) {
        fprintf(stderr, "blas_bits: out of memory\n");
        exit(70);
    }
    return p;
}
static float *frand(size_t n) {
    float *p = xcalloc(n, 4);
    for (size_t i = 0; i < n; i++) p[i] = (float)urand();
    return p;
}
static const char *same(const void *a, const void *b, size_t n) { return memcmp(a, b, n) ? "DIFF" : "same"; }

/* C (m, n) = op(A)·op(B), row-major, at t threads (0: in 96-column pieces at 1 thread). */
static void gemm(int t, int ta, int tb, int m, int n, int k, const float *A, const float *B, float *C) {
    int lda = ta ? m : k, ldb = tb ? k : n;
    openblas_set_num_threads(t ? t : 1);
    for (int j0 = 0; j0 < n; j0 += t ? n : 96) {
        int nj = t || n - j0 < 96 ? n - j0 : 96;
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, nj, k, 1.0f, A,
                    lda, tb ? B + (size_t)j0 * ldb : B + j0, ldb, 0.0f, C + j0, n);
    }
}

/* C (D, D) upper = XᵀX, X (r, D), at t threads (0: 64-column split at 1 thread). */
static void syrk(int t, int r, int D, const float *X, float *C) {
    openblas_set_num_threads(t ? t : 1);
    if (t) {
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, D, r, 1.0f, X, D, 0.0f, C, D);
        return;
    }
    for (int j0 = 0; j0 < D; j0 += 64) {
        int nj = D - j0 < 64 ? D - j0 : 64;
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, nj, r, 1.0f, X + j0, D, 0.0f, C + (size_t)j0 * D + j0, D);
        if (j0) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j0, nj, r, 1.0f, X, D, X + j0, D, 0.0f, C + j0, D);
    }
}

static void upper_only(float *C, int D) { /* the strict lower triangle is not part of a syrk result */
    for (int i = 0; i < D; i++)
        for (int j = 0; j < i; j++) C[(size_t)i * D + j] = 0.0f;
}

int main(void) {
    const char *core = openblas_get_corename();
    static const int g[][5] = {
        /* m, n, k, ta, tb */
        {128, 300, 64, 0, 1},   /* attention scores: one head, a 128-row query block */
        {128, 64, 300, 0, 0},   /* attention context */
        {512, 1024, 1024, 0, 1}, /* x·Wᵀ, D 1024 */
        {512, 2816, 1024, 0, 1}, /* up/gate, FFN 2816 */
        {512, 1024, 2816, 0, 1}, /* down */
    };
    for (size_t s = 0; s < sizeof g / sizeof g[0]; s++) {
        int m = g[s][0], n = g[s][1], k = g[s][2];
        float *A = frand((size_t)m * k), *B = frand((size_t)k * n), *C[4];
        for (int t = 0; t < 4; t++) {
            C[t] = xcalloc((size_t)m * n, 4);
            gemm(t, g[s][3], g[s][4], m, n, k, A, B, C[t]);
        }
        size_t bytes = (size_t)m * n * 4;
        printf("%-9s sgemm   %4dx%4dx%4d  t2=%s t3=%s tiles=%s\n", core, m, n, k, same(C[1], C[2], bytes),
               same(C[1], C[3], bytes), same(C[1], C[0], bytes));
        for (int t = 0; t < 4; t++) free(C[t]);
        free(A), free(B);
    }
    {
        const int r = 256, D = 1024; /* one second-moment block */
        float *X = frand((size_t)r * D), *C[4];
        for (int t = 0; t < 4; t++) {
            C[t] = xcalloc((size_t)D * D, 4);
            syrk(t, r, D, X, C[t]);
            upper_only(C[t], D);
        }
        size_t bytes = (size_t)D * D * 4;
        printf("%-9s ssyrk   %4dx%4d       t2=%s t3=%s tiles=%s\n", core, D, r, same(C[1], C[2], bytes),
               same(C[1], C[3], bytes), same(C[1], C[0], bytes));
        for (int t = 0; t < 4; t++) free(C[t]);
        free(X);
    }
    for (int D = 256; D <= 1024; D *= 2) { /* the PCA's eigensolver */
        double *H = xcalloc((size_t)D * D, 8), *w = xcalloc((size_t)D, 8), *Q[4];
        for (int i = 0; i < D; i++)
            for (int j = i; j < D; j++) H[(size_t)i * D + j] = (i == j ? 1.0 : 0.0) + 0.05 * urand();
        for (int t = 1; t < 4; t++) {
            Q[t] = xcalloc((size_t)D * D, 8);
            memcpy(Q[t], H, (size_t)D * D * 8);
            openblas_set_num_threads(t);
            if (LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', D, Q[t], D, w)) {
                fprintf(stderr, "blas_bits: dsyevd failed\n");
                return 70;
            }
        }
        size_t bytes = (size_t)D * D * 8;
        printf("%-9s dsyevd  %4d            t2=%s t3=%s tiles=-\n", core, D, same(Q[1], Q[2], bytes),
               same(Q[1], Q[3], bytes));
        for (int t = 1; t < 4; t++) free(Q[t]);
        free(H), free(w);
    }
    return 0;
}
