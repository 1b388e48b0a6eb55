/* linalg/ridge.h — the stock policy's MLP-neuron selection and ridge refit
 * (docs/algorithm.md §12), in float64 on host memory whatever the backend:
 * they run once per layer on an (F, F) matrix, a small cost beside the
 * forward passes, and LAPACK's Cholesky is what they need.
 *
 * C is the intermediate's second moment ZᵀZ over the calibration tokens,
 * (F, F) row-major; Wd the down projection (rows, F) as read (HF layout,
 * y = z·Wdᵀ). λ = ridge · mean(diag C) (ridge itself when that is 0). */
#ifndef SP_RIDGE_H
#define SP_RIDGE_H

#include <stdint.h>

/* Host bytes the two calls below allocate, at most, for these sizes. */
int64_t sp_ridge_bytes(int64_t F, int64_t k, int64_t rows, int leverage);

/* S (k) = the k neurons with the largest scores, ascending; ties go to the
 * lower index. Scores: energy C_ii·‖Wd[:, i]‖², or (leverage) ridge leverage
 * diag(C(C + λI)⁻¹) = 1 − λ·diag((C + λI)⁻¹). C's upper triangle (i <= j) is
 * read; the lower one is made its mirror. 0, or 70 with a message. */
int sp_ridge_select(double *C, int64_t F, const float *Wd, int64_t rows, int leverage, double ridge, int64_t k, int64_t *S);

/* Wd (rows, F) ← Wd·C[:, S]·(C[S, S] + λI)⁻¹ as (rows, k), in place: the
 * least-squares fit, over the calibration tokens, of the whole MLP's output
 * z·Wdᵀ from the kept neurons z[:, S]. C symmetric (after sp_ridge_select);
 * C's memory is then the solve's (its contents are lost): the refit needs
 * little more than C itself (sp_ridge_bytes). 0, or 70 with a message. */
int sp_ridge_refit(double *C, int64_t F, const int64_t *S, int64_t k, double ridge, float *Wd, int64_t rows);

#endif
