/* linalg/ridge.c — neuron selection and ridge refit (ridge.h). */
#include "ridge.h"

#include <cblas.h>
#include <lapacke.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define NB 256 /* rows of C gathered at a time */

typedef struct scored {
    double s;
    int64_t i;
} scored;

/* B (rows, k) lives in C's memory behind C[S, :] when it fits there. */
static int b_in_c(int64_t F, int64_t k, int64_t rows) { return (F - k) * F >= rows * k; }

int64_t sp_ridge_bytes(int64_t F, int64_t k, int64_t rows, int leverage, int bias) {
    int64_t sel = F * (int64_t)sizeof(scored) + (leverage ? F * F * 8 : 0);
    int64_t fit = NB * F * 8 + (b_in_c(F, k, rows) ? 0 : rows * k * 8) + (bias ? rows * 8 : 0);
    return sel > fit ? sel : fit;
}

double sp_ridge_lambda(const double *C, int64_t F, double ridge) {
    double m = 0;
    for (int64_t i = 0; i < F; i++) m += C[i * F + i];
    m /= (double)F;
    return m > 0 ? ridge * m : ridge;
}

void sp_ridge_center(double *C, int64_t F, const double *s, int64_t n) {
    SP_ASSERT(F >= 1 && n >= 1);
    const double inv = 1.0 / (double)n;
    for (int64_t i = 0; i < F; i++) /* s_i·s_j: the same bits at (i, j) and (j, i), C stays symmetric */
        for (int64_t j = 0; j < F; j++) C[i * F + j] -= s[i] * s[j] * inv;
}

static int by_score(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int by_index(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int sp_ridge_select(double *C, int64_t F, const float *Wd, int64_t rows, int leverage, double lam, int64_t k, int64_t *S) {
    SP_ASSERT(F >= 1 && k >= 1 && k <= F && rows >= 1);
    for (int64_t i = 0; i < F; i++)
        for (int64_t j = i + 1; j < F; j++) C[j * F + i] = C[i * F + j];
    scored *sc;
    SP_TRY(sp_alloc((void **)&sc, F, sizeof *sc, "neuron scores"));
    int rc = 0;
    if (leverage) {
        double *A;
        rc = sp_alloc((void **)&A, F * F, 8, "ridge leverage");
        if (!rc) {
            memcpy(A, C, (size_t)(F * F) * 8);
            for (int64_t i = 0; i < F; i++) A[i * F + i] += lam;
            /* Column-major lower is row-major upper: LAPACK works in place
             * (LAPACKE's row-major interface would copy A, F² float64 more). */
            lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)F, A, (lapack_int)F);
            if (!info) info = LAPACKE_dpotri(LAPACK_COL_MAJOR, 'L', (lapack_int)F, A, (lapack_int)F);
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

int sp_ridge_refit(double *C, int64_t F, const int64_t *S, int64_t k, double lam, float *Wd, int64_t rows,
                   const double *mu, float *bias) {
    SP_ASSERT(F >= 1 && k >= 1 && k <= F && rows >= 1 && !mu == !bias);
    /* C[S, :] packed into C's first k rows (S ascending: a row never lands
     * on one still to be read). */
    for (int64_t a = 0; a < k; a++)
        if (S[a] != a) memmove(C + a * F, C + S[a] * F, (size_t)F * 8);
    double *W = NULL, *B = b_in_c(F, k, rows) ? C + k * F : NULL, *u = NULL;
    int rc = sp_alloc((void **)&W, NB * F, 8, "ridge refit");
    if (!rc && !B) rc = sp_alloc((void **)&B, rows * k, 8, "ridge refit");
    if (!rc && mu) rc = sp_alloc((void **)&u, rows, 8, "ridge refit");
    if (rc) goto done;
    /* B (rows, k) = Wd·C[:, S] = Wd·C[S, :]ᵀ, NB rows of Wd widened at a time;
     * with a bias, u (rows) = Wd·mu, the whole MLP's mean less its bias. */
    for (int64_t r0 = 0; r0 < rows; r0 += NB) {
        const int64_t nr = rows - r0 < NB ? rows - r0 : NB;
        for (int64_t i = 0; i < nr * F; i++) W[i] = Wd[r0 * F + i];
        for (int64_t r = 0; r < nr && mu; r++) {
            double acc = 0;
            for (int64_t i = 0; i < F; i++) acc += W[r * F + i] * mu[i];
            u[r0 + r] = acc;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nr, (blasint)k, (blasint)F, 1.0, W, (blasint)F, C,
                    (blasint)F, 0.0, B + r0 * k, (blasint)k);
    }
    /* A = C[S, S] + λI, (k, k) packed into C's first k² entries: entry
     * (a, b) is read from a·F + S[b] >= a·k + b, and every later read lies
     * further on, so no write lands on a value still to be read (nor on B,
     * which starts at k·F). */
    double *A = C;
    for (int64_t a = 0; a < k; a++)
        for (int64_t b = 0; b < k; b++) A[a * k + b] = C[a * F + S[b]] + (a == b ? lam : 0.0);
    /* Wd' = B·A⁻¹: A symmetric, so A·Wd'ᵀ = Bᵀ, and B row-major (rows, k) is
     * Bᵀ column-major (k, rows). */
    lapack_int info = LAPACKE_dposv(LAPACK_COL_MAJOR, 'U', (lapack_int)k, (lapack_int)rows, A, (lapack_int)k, B, (lapack_int)k);
    if (info) {
        rc = sp_fail(SP_EX_SOFTWARE, "ridge refit: C[S, S] + λI is not positive definite (LAPACK info %d)", (int)info);
        goto done;
    }
    for (int64_t i = 0; i < rows * k; i++) Wd[i] = (float)B[i];
    /* The intercept: the mean of the whole MLP's output less the kept
     * neurons' mean through the weights as stored. */
    for (int64_t r = 0; r < rows && mu; r++) {
        double acc = (double)bias[r] + u[r];
        for (int64_t a = 0; a < k; a++) acc -= (double)Wd[r * k + a] * mu[S[a]];
        bias[r] = (float)acc;
    }
done:
    free(W);
    free(u);
    if (B && B != C + k * F) free(B);
    return rc;
}

int64_t sp_ridge_fit_bytes(int64_t m, int64_t k) { return NB * (k + m) * 8; }

int sp_ridge_fit(double *G, int64_t n, int64_t m, double ridge, const double *P, int64_t k, float *W, double *work) {
    const int64_t g = n + m;
    /* Bᵀ = (XᵀT)ᵀ (m, n): B's entries (rows i < n, columns >= n) all lie
     * before n·g, and Bᵀ goes to G's last n·m entries, from g² − n·m = n·g +
     * m² on. Then A = XᵀX's upper triangle is packed (n, n) at G's start:
     * entry (i, j) is read from i·g + j >= i·n + j, and every later read
     * lies further on. Row-major upper is column-major lower, and Bᵀ
     * row-major is B column-major, so LAPACK solves in place, without the
     * transposed copies LAPACKE's row-major interface would make. */
    double *Bt = G + g * g - n * m, *A = G;
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < m; c++) Bt[c * n + i] = G[i * g + n + c];
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) A[i * n + j] = G[i * g + j];
    const double lam = sp_ridge_lambda(A, n, ridge);
    for (int64_t i = 0; i < n; i++) A[i * n + i] += lam;
    lapack_int info = LAPACKE_dposv(LAPACK_COL_MAJOR, 'L', (lapack_int)n, (lapack_int)m, A, (lapack_int)n, Bt, (lapack_int)n);
    if (info)
        return sp_fail(SP_EX_SOFTWARE, "refit: the inputs' second moment + λI is not positive definite (LAPACK info %d)",
                       (int)info);
    /* Bt = ((A + λI)⁻¹·B)ᵀ (m, n); W = P_k·(P_kᵀ·Bt), NB columns at a time. */
    double *Y = work, *Wb = work + NB * k;
    for (int64_t c0 = 0; c0 < n; c0 += NB) {
        const int64_t nc = n - c0 < NB ? n - c0 : NB;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)k, (blasint)nc, (blasint)m, 1.0, P, (blasint)m,
                    Bt + c0, (blasint)n, 0.0, Y, (blasint)nc);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)nc, (blasint)k, 1.0, P, (blasint)m, Y,
                    (blasint)nc, 0.0, Wb, (blasint)nc);
        for (int64_t r = 0; r < m; r++)
            for (int64_t c = 0; c < nc; c++) W[r * n + c0 + c] = (float)Wb[r * nc + c];
    }
    return 0;
}
