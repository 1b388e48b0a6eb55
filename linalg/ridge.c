/* linalg/ridge.c — neuron selection and ridge refit (ridge.h). */
#include "ridge.h"

#include <cblas.h>
#include <lapacke.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define NB 256 /* rows of C gathered at a time */

int64_t sp_ridge_bytes(int64_t F, int64_t k, int64_t rows, int leverage) {
    int64_t sel = F * 8 + F * 8 + (leverage ? F * F * 8 : 0);
    int64_t fit = rows * F * 8 + NB * F * 8 + rows * k * 8; /* C[S, S] + λI is made in C's own memory */
    return sel > fit ? sel : fit;
}

static double lambda_of(const double *C, int64_t F, double ridge) {
    double m = 0;
    for (int64_t i = 0; i < F; i++) m += C[i * F + i];
    m /= (double)F;
    return m > 0 ? ridge * m : ridge;
}

typedef struct scored {
    double s;
    int64_t i;
} scored;

static int by_score(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int by_index(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int sp_ridge_select(double *C, int64_t F, const float *Wd, int64_t rows, int leverage, double ridge, int64_t k, int64_t *S) {
    SP_ASSERT(F >= 1 && k >= 1 && k <= F && rows >= 1);
    for (int64_t i = 0; i < F; i++)
        for (int64_t j = i + 1; j < F; j++) C[j * F + i] = C[i * F + j];
    const double lam = lambda_of(C, F, ridge);
    scored *sc;
    SP_TRY(sp_alloc((void **)&sc, F, sizeof *sc, "neuron scores"));
    int rc = 0;
    if (leverage) {
        double *A;
        rc = sp_alloc((void **)&A, F * F, 8, "ridge leverage");
        if (!rc) {
            memcpy(A, C, (size_t)(F * F) * 8);
            for (int64_t i = 0; i < F; i++) A[i * F + i] += lam;
            lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)F, A, (lapack_int)F);
            if (!info) info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', (lapack_int)F, A, (lapack_int)F);
            if (info) rc = sp_fail(SP_EX_SOFTWARE, "ridge leverage: C + λI is not positive definite (LAPACK info %d)", (int)info);
            for (int64_t i = 0; i < F && !rc; i++) sc[i] = (scored){1.0 - lam * A[i * F + i], i};
            free(A);
        }
    } else {
        for (int64_t i = 0; i < F; i++) {
            double n2 = 0;
            for (int64_t r = 0; r < rows; r++) n2 += (double)Wd[r * F + i] * (double)Wd[r * F + i];
            sc[i] = (scored){C[i * F + i] * n2, i};
        }
    }
    if (!rc) {
        qsort(sc, (size_t)F, sizeof *sc, by_score);
        for (int64_t j = 0; j < k; j++) S[j] = sc[j].i;
        qsort(S, (size_t)k, sizeof *S, by_index);
    }
    free(sc);
    return rc;
}

int sp_ridge_refit(double *C, int64_t F, const int64_t *S, int64_t k, double ridge, const float *Wd, int64_t rows,
                   float *out) {
    SP_ASSERT(F >= 1 && k >= 1 && k <= F && rows >= 1);
    const double lam = lambda_of(C, F, ridge);
    double *W = NULL, *G = NULL, *B = NULL;
    int rc = sp_alloc((void **)&W, rows * F, 8, "ridge refit");
    if (!rc) rc = sp_alloc((void **)&G, NB * F, 8, "ridge refit");
    if (!rc) rc = sp_alloc((void **)&B, rows * k, 8, "ridge refit");
    if (rc) goto done;
    for (int64_t i = 0; i < rows * F; i++) W[i] = Wd[i];
    /* B (rows, k) = Wd·C[:, S] = Wd·C[S, :]ᵀ, NB kept neurons at a time. */
    for (int64_t j0 = 0; j0 < k; j0 += NB) {
        const int64_t nb = k - j0 < NB ? k - j0 : NB;
        for (int64_t j = 0; j < nb; j++) memcpy(G + j * F, C + S[j0 + j] * F, (size_t)F * 8);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)nb, (blasint)F, 1.0, W, (blasint)F, G,
                    (blasint)F, 0.0, B + j0, (blasint)k);
    }
    /* A = C[S, S] + λI, (k, k) packed into C's first k² entries: S ascending,
     * so entry (a, b) never lands on an entry (a', b') a later one reads. */
    double *A = C;
    for (int64_t a = 0; a < k; a++)
        for (int64_t b = 0; b < k; b++) A[a * k + b] = C[S[a] * F + S[b]] + (a == b ? lam : 0.0);
    /* out = B·A⁻¹: A symmetric, so A·outᵀ = Bᵀ, and B row-major (rows, k) is
     * Bᵀ column-major (k, rows). */
    lapack_int info = LAPACKE_dposv(LAPACK_COL_MAJOR, 'U', (lapack_int)k, (lapack_int)rows, A, (lapack_int)k, B, (lapack_int)k);
    if (info) {
        rc = sp_fail(SP_EX_SOFTWARE, "ridge refit: C[S, S] + λI is not positive definite (LAPACK info %d)", (int)info);
        goto done;
    }
    for (int64_t i = 0; i < rows * k; i++) out[i] = (float)B[i];
done:
    free(W);
    free(G);
    free(B);
    return rc;
}
