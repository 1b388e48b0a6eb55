/* linalg/ridge.h — the stock policy's MLP-neuron selection and ridge refit
 * (docs/algorithm.md §12), in float64 on host memory whatever the backend:
 * they run once per layer on an (F, F) matrix, a small cost beside the
 * forward passes, and LAPACK's Cholesky is what they need.
 *
 * C is the intermediate's second moment ZᵀZ over the calibration tokens,
 * (F, F) row-major; Wd the down projection (rows, F) as read (HF layout,
 * y = z·Wdᵀ [+ b]). λ (sp_ridge_lambda) is the caller's. */
#ifndef SP_RIDGE_H
#define SP_RIDGE_H

#include <stdint.h>

/* Host bytes the calls below allocate, at most, for these sizes (`bias`: the
 * refit also moves a bias, sp_ridge_refit's mu). */
int64_t sp_ridge_bytes(int64_t F, int64_t k, int64_t rows, int leverage, int bias);

/* λ = ridge · mean(diag C) (ridge itself when that is 0), from C = ZᵀZ as
 * accumulated: a bias column leaves the neuron block's λ as it is. */
double sp_ridge_lambda(const double *C, int64_t F, double ridge);

/* A down projection with a bias b fits [Wd' | b'] on the moments of z
 * augmented with a constant 1, [ZᵀZ, Zᵀ1; 1ᵀZ, n], with λ on the neuron
 * block only. Eliminating the unregularised bias leaves the neuron block's
 * Schur complement, the scatter about the mean: C ← C − s·sᵀ/n, s = Zᵀ1 (F)
 * the column sums over n >= 1 tokens, C symmetric (after sp_ridge_select:
 * the scores are taken on ZᵀZ, docs/algorithm.md §12). sp_ridge_refit then
 * runs on it, with mu = s/n. */
void sp_ridge_center(double *C, int64_t F, const double *s, int64_t n);

/* S (k) = the k neurons with the largest scores, ascending; ties go to the
 * lower index. Scores: energy C_ii·‖Wd[:, i]‖², or (leverage) ridge leverage
 * diag(C(C + λI)⁻¹) = 1 − λ·diag((C + λI)⁻¹). C's upper triangle (i <= j) is
 * read; the lower one is made its mirror. 0, or 70 with a message. */
int sp_ridge_select(double *C, int64_t F, const float *Wd, int64_t rows, int leverage, double lam, int64_t k, int64_t *S);

/* Wd (rows, F) ← Wd·C[:, S]·(C[S, S] + λI)⁻¹ as (rows, k), in place: the
 * least-squares fit, over the calibration tokens, of the whole MLP's output
 * z·Wdᵀ from the kept neurons z[:, S]. C symmetric (after sp_ridge_select);
 * C's memory is then the solve's (its contents are lost): the refit needs
 * little more than C itself (sp_ridge_bytes). With a bias (C centred by
 * sp_ridge_center, mu (F) the means, bias (rows)): bias ← bias + Wd·mu −
 * Wd'·mu[S], with Wd' as stored (float32), the intercept that makes the fit's
 * mean the MLP's; mu NULL: no bias. 0, or 70 with a message. */
int sp_ridge_refit(double *C, int64_t F, const int64_t *S, int64_t k, double lam, float *Wd, int64_t rows,
                   const double *mu, float *bias);

/* The refit of SliceGPT's writers to the dense model's signals
 * (docs/algorithm.md §14). G (n + m, n + m) row-major, its upper triangle
 * the float64 second moment of joined rows [x | t] over the calibration
 * tokens (x: a writer's input, n wide; t: its target, m wide): A = XᵀX is
 * its (n, n) block, B = XᵀT its (n, m) block. P (m, m) a basis, its first k
 * columns the kept ones. W (m, n) float32 ← P_k·P_kᵀ·Bᵀ·(A + λI)⁻¹, λ =
 * ridge·mean(diag A): the ridge least-squares map from x to t·P_k, written
 * back in t's coordinates (a writer (m, n) whose outputs lie in the span of
 * P_k, so rotating it by P keeps exactly the fit). G's memory is then the
 * solve's (its contents are lost); beyond it, `work` holds
 * sp_ridge_fit_bytes (the caller's: a job allocates it once). 0, or 70
 * with a message. */
int64_t sp_ridge_fit_bytes(int64_t m, int64_t k);
int sp_ridge_fit(double *G, int64_t n, int64_t m, double ridge, const double *P, int64_t k, float *W, double *work);

#endif
