/* linalg/cpu_impl.h — private to the CPU backend (cpu.c, cpu_blas.c) and to
 * a CPU backend that extends it: the workspace, the thread pool's loop and
 * the OpenBLAS ops the table is built from (contract: backend.h). */
#ifndef SP_CPU_IMPL_H
#define SP_CPU_IMPL_H

#include <lapacke.h>
#include <stdint.h>

#include "backend.h"

struct sp_bk_ws {
    int64_t D, cov_rows, rot_block, T;
    double *stage;            /* (cov_rows, D): one block of cov_add's rows, widened to float64 */
    double *work;             /* (lwork) */
    lapack_int *iwork;        /* (liwork) */
    double *w;                /* (D) */
    double *rot_in, *rot_out; /* (rot_block, D) each */
    float *att;               /* (att_heads, min(T, QBLOCK), T) */
    int64_t att_heads;        /* heads whose scores att holds at once */
    lapack_int lwork, liwork; /* capacities of work and iwork */
};

static inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int fits_int(int64_t v) { return v >= 0 && v <= 0x7fffffff; }

/* Items per part at least: below this a loop runs on the caller alone. */
#define PAR_GRAIN 16384

/* fn over [0, n) in parts of at least `grain` items, on bk's pool (cpu.c:
 * contiguous parts, the bits independent of the thread count). */
typedef void (*sp_cpu_par_fn)(void *ctx, int64_t i0, int64_t i1);
void sp_cpu_par_for(const sp_bk *bk, int64_t n, int64_t grain, sp_cpu_par_fn fn, void *ctx);
/* OpenBLAS's (per-process) thread count set to bk's before a BLAS call. */
void sp_cpu_blas_threads(const sp_bk *bk);
/* The same, at most `most` threads (the eigensolver's rule, cpu_blas.c). */
void sp_cpu_blas_threads_most(const sp_bk *bk, int most);
/* dsyevd's optimal workspace for order D (0, or -1 when the query fails). */
int sp_cpu_dsyevd_sizes(int64_t D, lapack_int *lwork, lapack_int *liwork);

/* cpu_exp.c: x[i] ← x[i] < lo ? 0 : expf(x[i]) for i < n, each value
 * bit-identical to glibc's expf (its FMA variant, the one it runs where
 * AVX2 and FMA are), vectorized with AVX-512F or AVX2+FMA where the CPU has
 * them. lo = -INFINITY cuts nothing. sp_cpu_expf_kind: what this CPU runs,
 * 2 AVX-512F, 1 AVX2+FMA, 0 scalar expf; sp_cpu_expf_n_as runs a kind up to
 * it (tests/test_cpu_exp.c checks each). */
void sp_cpu_expf_n(float *x, int64_t n, float lo);
int sp_cpu_expf_kind(void);
void sp_cpu_expf_n_as(int kind, float *x, int64_t n, float lo);

/* cpu_blas.c: the table's BLAS ops, and sgemm at whatever count OpenBLAS has
 * (the pool's single-threaded calls). */
void sp_cpu_blas_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* C = alpha·A + beta·C on OpenBLAS's geadd (backend.h). */
void sp_cpu_geadd(const sp_bk *bk, int64_t rows, int64_t cols, float alpha, const float *A, int64_t lda, float beta, float *C,
                  int64_t ldc);
void sp_cpu_sgemm(const sp_bk *bk, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
int sp_cpu_cov_add(const sp_bk *bk, sp_bk_ws *ws, double *H, int64_t D, const float *X, int64_t rows, int64_t ld,
                   int64_t row0);
int sp_cpu_eigh(const sp_bk *bk, sp_bk_ws *ws, const double *H, int64_t D, double damp, double *Q, double *evals);
void sp_cpu_rot_rows(const sp_bk *bk, sp_bk_ws *ws, float *W, int64_t rows, int64_t D, const float *gamma,
                     const double *Q, int64_t k);
void sp_cpu_rot_cols(const sp_bk *bk, sp_bk_ws *ws, const double *Q, int64_t D, int64_t k, float *W, int64_t cols);
void sp_cpu_basis_product(const sp_bk *bk, const double *A, int64_t a, const double *B, int64_t b, int64_t D,
                          double *scratch, float *C);

#endif
