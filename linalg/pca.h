/* linalg/pca.h — the uncentered second moment and its eigenbasis (DESIGN.md §1 PCA).
 *
 *   H = Σ xᵀx over every calibration token, accumulated in float64 by BLAS
 *       rank-k updates (dsyrk) of float32 rows widened to float64 in chunks;
 *       NOT centered: the mean direction carries real energy.
 *   δ = 0.01 · mean(diag H), added to the diagonal;
 *   eigh(H + δI) with LAPACKE dsyevd, sorted by descending eigenvalue;
 *   each eigenvector's sign canonicalized so its largest-|.| component is
 *   positive (the first such component on ties).
 */
#ifndef SP_PCA_H
#define SP_PCA_H

#include <stdint.h>

typedef struct sp_cov {
    int64_t D;
    int64_t chunk_rows;
    double *H;      /* (D, D) row-major, upper triangle accumulated */
    double *xd;     /* (chunk_rows, D) float64 staging */
    int64_t n_rows; /* tokens accumulated */
} sp_cov;

int sp_cov_init(sp_cov *c, int64_t D, int64_t chunk_rows);
void sp_cov_free(sp_cov *c);
void sp_cov_reset(sp_cov *c);
/* H += Xᵀ·X for X (rows, D) float32 with row stride ld (>= D). Returns 0, or
 * 65 if X holds a NaN/Inf. */
int sp_cov_add(sp_cov *c, const float *X, int64_t rows, int64_t ld);

/* Eigen-decomposition of the damped H. Q (D, D) row-major receives the
 * eigenvectors as COLUMNS (Q[i*D + j] = component i of eigenvector j), sorted
 * by descending eigenvalue; evals (D) receives the eigenvalues of H + δI.
 * H is left unchanged. Returns 0, 65 (non-finite or zero mean diagonal), 70. */
int sp_pca(const sp_cov *c, double *Q, double *evals);

/* Same, on a given symmetric matrix (upper triangle used); work is (D, D). */
int sp_eigh_desc(const double *H, int64_t D, double damp_frac, double *Q, double *evals);

#endif
