#include "pca.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

int sp_cov_init(sp_cov *c, int64_t D, int64_t chunk_rows) {
    memset(c, 0, sizeof *c);
    c->D = D;
    c->chunk_rows = chunk_rows;
    int64_t dd;
    if (sp_mul_i64(D, D, &dd)) return sp_fail(SP_EX_SOFTWARE, "second moment: D*D overflows");
    int rc = sp_calloc((void **)&c->H, dd, sizeof(double), "second-moment accumulator");
    if (!rc) rc = sp_alloc((void **)&c->xd, chunk_rows, D * (int64_t)sizeof(double), "second-moment staging");
    if (rc) sp_cov_free(c);
    return rc;
}

void sp_cov_free(sp_cov *c) {
    if (!c) return;
    free(c->H);
    free(c->xd);
    c->H = c->xd = NULL;
}

void sp_cov_reset(sp_cov *c) {
    memset(c->H, 0, (size_t)(c->D * c->D) * sizeof(double));
    c->n_rows = 0;
}

int sp_cov_add(sp_cov *c, const float *X, int64_t rows, int64_t ld) {
    const int64_t D = c->D;
    for (int64_t r0 = 0; r0 < rows; r0 += c->chunk_rows) {
        int64_t nr = rows - r0 < c->chunk_rows ? rows - r0 : c->chunk_rows;
        for (int64_t i = 0; i < nr; i++) {
            const float *src = X + (r0 + i) * ld;
            double *dst = c->xd + i * D;
            for (int64_t j = 0; j < D; j++) {
                if (!isfinite(src[j]))
                    return sp_fail(SP_EX_DATAERR, "non-finite activation (NaN or Inf) at token %lld, component %lld",
                                   (long long)(c->n_rows + r0 + i), (long long)j);
                dst[j] = (double)src[j];
            }
        }
        /* H (upper) += xdᵀ·xd */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)D, (int)nr, 1.0, c->xd, (int)D, 1.0, c->H, (int)D);
    }
    c->n_rows += rows;
    return 0;
}

int sp_eigh_desc(const double *H, int64_t D, double damp_frac, double *Q, double *evals) {
    /* Q <- upper triangle of H (+ δ on the diagonal); dsyevd overwrites it with eigenvectors. */
    double tr = 0;
    for (int64_t i = 0; i < D; i++) tr += H[i * D + i];
    double mean_diag = tr / (double)D;
    if (!isfinite(mean_diag)) return sp_fail(SP_EX_DATAERR, "second moment holds a non-finite value");
    if (mean_diag == 0) return sp_fail(SP_EX_DATAERR, "second moment has a zero mean diagonal (all activations are zero)");
    double delta = damp_frac * mean_diag;
    for (int64_t i = 0; i < D; i++) {
        for (int64_t j = 0; j < D; j++) Q[i * D + j] = j >= i ? H[i * D + j] : 0.0;
        Q[i * D + i] += delta;
    }
    double *w;
    SP_TRY(sp_alloc((void **)&w, D, sizeof(double), "eigenvalues"));
    /* The row-major upper triangle is the column-major lower triangle of the
     * same memory: calling dsyevd column-major avoids the D×D transposed copy
     * LAPACKE makes for row-major input (512 MiB at D = 8192). The eigenvectors
     * come back as column-major columns, that is as rows here. */
    lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)D, Q, (lapack_int)D, w);
    if (info != 0) {
        free(w);
        return sp_fail(SP_EX_DATAERR, "eigendecomposition failed (LAPACKE_dsyevd info=%d)", (int)info);
    }
    /* Rows → columns (in-place transpose), then ascending → descending by
     * reversing the column order, row by row. */
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = i + 1; j < D; j++) {
            double t = Q[i * D + j];
            Q[i * D + j] = Q[j * D + i];
            Q[j * D + i] = t;
        }
    for (int64_t i = 0; i < D; i++) {
        double *row = Q + i * D;
        for (int64_t a = 0, b = D - 1; a < b; a++, b--) {
            double t = row[a];
            row[a] = row[b];
            row[b] = t;
        }
    }
    for (int64_t j = 0; j < D; j++) evals[j] = w[D - 1 - j];
    free(w);
    /* Canonical sign: the largest-magnitude component of each column is positive. */
    for (int64_t j = 0; j < D; j++) {
        int64_t arg = 0;
        double best = -1;
        for (int64_t i = 0; i < D; i++) {
            double a = fabs(Q[i * D + j]);
            if (a > best) {
                best = a;
                arg = i;
            }
        }
        if (Q[arg * D + j] < 0)
            for (int64_t i = 0; i < D; i++) Q[i * D + j] = -Q[i * D + j];
    }
    return 0;
}

int sp_pca(const sp_cov *c, double *Q, double *evals) {
    if (c->n_rows == 0) return sp_fail(SP_EX_DATAERR, "PCA over zero calibration tokens");
    return sp_eigh_desc(c->H, c->D, 0.01, Q, evals);
}
