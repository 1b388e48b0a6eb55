/* linalg/cpu_blas.c — the CPU backend's ops that run on OpenBLAS's and
 * LAPACK's threads: sgemm, the second moments (dsyrk), the eigensolver
 * (dsyevd) and the float64 rotations (dgemm). They are the ops another CPU
 * backend (oneDNN on AMX, say) overrides in the table that sp_bk_cpu_open
 * returns, keeping everything in cpu.c: the thread pool, the workspace, the
 * elementwise ops and attention. Their bits depend on OpenBLAS's thread
 * count (docs/determinism.md): each sets its instance's count first. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "cpu_impl.h"
#include "error.h"

#define EIGH_TB 32 /* the eigenvectors' transpose, in blocks of EIGH_TB × EIGH_TB */

/* ---- float32 ---- */

void sp_cpu_blas_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    SP_ASSERT(fits_int(m) && fits_int(n) && fits_int(k) && fits_int(lda) && fits_int(ldb) && fits_int(ldc));
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n,
                (blasint)k, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void sp_cpu_sgemm(const sp_bk *bk, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    sp_cpu_blas_threads(bk);
    sp_cpu_blas_sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* OpenBLAS's cblas_sgeadd (an extension of its CBLAS) runs C = alpha·A +
 * beta·C column by column of its column-major view: row-major (rows, cols)
 * with stride ld is column-major (cols, rows). beta 0 must not read C (its
 * memory may hold anything): OpenBLAS scales by beta through its axpby
 * kernel, which multiplies a NaN by 0, so C is zeroed first. */
void sp_cpu_geadd(const sp_bk *bk, int64_t rows, int64_t cols, float alpha, const float *A, int64_t lda, float beta, float *C,
                  int64_t ldc) {
    SP_ASSERT(rows >= 0 && cols >= 0 && lda >= cols && ldc >= cols);
    if (rows == 0 || cols == 0) return;
    sp_cpu_blas_threads(bk);
    if (beta == 0.0f)
        for (int64_t r = 0; r < rows; r++) memset(C + r * ldc, 0, (size_t)cols * sizeof(float));
    cblas_sgeadd(CblasRowMajor, (blasint)rows, (blasint)cols, alpha, (float *)A, (blasint)lda, beta == 0.0f ? 1.0f : beta, C,
                 (blasint)ldc);
}

/* ---- float64: second moments, eigh, rotations ---- */

/* Blocks of cov_rows rows: each block widened to float64 (exact), then
 * H (upper) += blockᵀ·block by dsyrk. Every fp32×fp32 product is exact in
 * float64 and every sum is a float64 sum, so H is within a few float64
 * roundings of the exact second moment: at most (n + 1)·2⁻⁵³·(Σ|xᵢxⱼ| + |H₀|)
 * per entry after n rows (backend.h). The float32 block sums this replaced
 * (ssyrk per block, error up to (cov_rows + 1)·2⁻²⁴·Σ|xᵢxⱼ|) swamp the small
 * eigenvalues next to outlier channels (docs/algorithm.md §3). The pipeline
 * calls it once per window with a constant cov_rows, so the bits do not
 * depend on the activation chunk size ([resources] memory).
 * One pool pass per block widens the rows and checks them for NaN/Inf before
 * anything of the block is added; when it finds one, a serial scan names the
 * first bad element in row order, and H is unchanged from the block on. */
typedef struct cov_ctx {
    const float *X;
    double *Xd; /* (nr, D) float64: the widened block */
    int64_t D, ld;
    atomic_int bad; /* a part saw a non-finite value */
} cov_ctx;

static void widen_check_range(void *p, int64_t i0, int64_t i1) {
    cov_ctx *c = p;
    int bad = 0;
    for (int64_t i = i0; i < i1; i++) {
        const float *src = c->X + i * c->ld;
        double *dst = c->Xd + i * c->D;
        for (int64_t j = 0; j < c->D; j++) {
            bad |= !isfinite(src[j]);
            dst[j] = (double)src[j];
        }
    }
    if (bad) atomic_store_explicit(&c->bad, 1, memory_order_relaxed);
}

int sp_cpu_cov_add(const sp_bk *bk, sp_bk_ws *ws, double *H, int64_t D, const float *X, int64_t rows, int64_t ld, int64_t row0) {
    sp_cpu_blas_threads(bk);
    SP_ASSERT(D >= 1 && D <= ws->D && ws->cov_rows >= 1 && ld >= D && rows >= 0);
    SP_ASSERT(fits_int(D) && fits_int(ld) && fits_int(ws->cov_rows));
    for (int64_t r0 = 0; r0 < rows; r0 += ws->cov_rows) {
        int64_t nr = min_i64(rows - r0, ws->cov_rows);
        cov_ctx c = {.X = X + r0 * ld, .Xd = ws->stage, .D = D, .ld = ld};
        sp_cpu_par_for(bk, nr, PAR_GRAIN / D + 1, widen_check_range, &c);
        if (atomic_load(&c.bad)) /* the message names the first non-finite element in row order */
            for (int64_t i = 0; i < nr; i++) {
                const float *src = X + (r0 + i) * ld;
                for (int64_t j = 0; j < D; j++)
                    if (!isfinite(src[j]))
                        return sp_fail(SP_EX_DATAERR, "non-finite activation (NaN or Inf) at token %lld, component %lld",
                                       (long long)(row0 + r0 + i), (long long)j);
            }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)D, (blasint)nr, 1.0, ws->stage, (blasint)D, 1.0, H,
                    (blasint)D);
    }
    return 0;
}

/* sp_eigh_desc exactly, with dsyevd's workspace from ws (LAPACKE_dsyevd
 * queries the same sizes and calls the same _work function). */
/* dsyevd runs on one thread up to this order. Its tridiagonal reduction
 * makes one dsymv call per column, and OpenBLAS's workers, which slicepipe
 * lets sleep at once between calls (blas_core.h), are woken for each: on
 * the floor bench's machine (2 threads) an order-1024 dsyevd took 0.119 s
 * on one thread and 0.141 s on two, order 512 0.022 and 0.033 s, order 2048
 * 0.867 and 0.726 s (its matrix products then pay for the wake-ups). */
#define EIGH_ONE_THREAD_D 1024

int sp_cpu_eigh(const sp_bk *bk, sp_bk_ws *ws, const double *H, int64_t D, double damp, double *Q, double *evals) {
    sp_cpu_blas_threads_most(bk, D <= EIGH_ONE_THREAD_D ? 1 : 0);
    SP_ASSERT(D >= 1 && D <= ws->D);
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = i; j < D; j++)
            if (!isfinite(H[i * D + j]))
                return sp_fail(SP_EX_DATAERR, "second moment holds a non-finite value (at %lld, %lld)", (long long)i,
                               (long long)j);
    double tr = 0;
    for (int64_t i = 0; i < D; i++) tr += H[i * D + i];
    double mean_diag = tr / (double)D;
    if (!isfinite(mean_diag)) return sp_fail(SP_EX_DATAERR, "second moment holds a non-finite value");
    if (mean_diag == 0) return sp_fail(SP_EX_DATAERR, "second moment has a zero mean diagonal (all activations are zero)");
    double delta = damp * mean_diag;
    /* Q <- upper triangle of H (+ δ on the diagonal); dsyevd overwrites it with eigenvectors. */
    for (int64_t i = 0; i < D; i++) {
        for (int64_t j = 0; j < D; j++) Q[i * D + j] = j >= i ? H[i * D + j] : 0.0;
        Q[i * D + i] += delta;
    }
    lapack_int lwork, liwork;
    if (sp_cpu_dsyevd_sizes(D, &lwork, &liwork))
        return sp_fail(SP_EX_SOFTWARE, "eigendecomposition: dsyevd workspace query failed (D %lld)", (long long)D);
    SP_ASSERT(lwork <= ws->lwork && liwork <= ws->liwork);
    /* The row-major upper triangle is the column-major lower triangle of the
     * same memory: column-major dsyevd needs no D×D transposed copy. The
     * eigenvectors come back as column-major columns, that is as rows here. */
    lapack_int info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)D, Q, (lapack_int)D, ws->w, ws->work,
                                          lwork, ws->iwork, liwork);
    if (info != 0)
        return sp_fail(SP_EX_DATAERR, "eigendecomposition failed (LAPACKE_dsyevd info=%d)", (int)info);
    /* Eigenvector v (ascending) is row v of Q. Its canonical sign: the
     * largest-magnitude component (the first on ties) positive, found along
     * the contiguous row. Then Q ← columns in descending order, Q[i][j] =
     * ±row D−1−j's component i, transposed in TB×TB blocks through dsyevd's
     * work array (at least D² doubles: lwork = 1 + 6D + 2D²); every value is
     * moved or negated, never rounded. */
    for (int64_t v = 0; v < D; v++) {
        double *row = Q + v * D, best = -1;
        int64_t arg = 0;
        for (int64_t i = 0; i < D; i++) {
            double a = fabs(row[i]);
            if (a > best) {
                best = a;
                arg = i;
            }
        }
        if (row[arg] < 0)
            for (int64_t i = 0; i < D; i++) row[i] = -row[i];
    }
    SP_ASSERT((int64_t)ws->lwork >= D * D);
    double *t = ws->work;
    for (int64_t i0 = 0; i0 < D; i0 += EIGH_TB)
        for (int64_t j0 = 0; j0 < D; j0 += EIGH_TB)
            for (int64_t i = i0; i < i0 + EIGH_TB && i < D; i++)
                for (int64_t j = j0; j < j0 + EIGH_TB && j < D; j++) t[i * D + j] = Q[(D - 1 - j) * D + i];
    memcpy(Q, t, (size_t)(D * D) * sizeof *Q);
    for (int64_t j = 0; j < D; j++) evals[j] = ws->w[D - 1 - j];
    return 0;
}

/* The float32 ↔ float64 copies around the rotations' dgemm calls, split
 * over the pool by rows (or elements); each value is converted alone. */
typedef struct cvt_ctx {
    const float *src;
    const double *dsrc;
    float *dst;
    double *ddst;
    const float *gamma;
    int64_t n, sld, dld; /* columns per row; source and destination row strides */
} cvt_ctx;

/* ddst[r·dld + i] = src[r·sld + i]·γᵢ (γ NULL: ·1.0), i < n. */
static void widen_range(void *p, int64_t r0, int64_t r1) {
    const cvt_ctx *c = p;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t i = 0; i < c->n; i++)
            c->ddst[r * c->dld + i] = (double)c->src[r * c->sld + i] * (c->gamma ? (double)c->gamma[i] : 1.0);
}

/* dst[r·dld + i] = (float)dsrc[r·sld + i], i < n. */
static void narrow_range(void *p, int64_t r0, int64_t r1) {
    const cvt_ctx *c = p;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t i = 0; i < c->n; i++) c->dst[r * c->dld + i] = (float)c->dsrc[r * c->sld + i];
}

static void widen(const sp_bk *bk, double *dst, int64_t dld, const float *src, int64_t sld, const float *gamma, int64_t rows, int64_t n) {
    cvt_ctx c = {.src = src, .ddst = dst, .gamma = gamma, .n = n, .sld = sld, .dld = dld};
    sp_cpu_par_for(bk, rows, PAR_GRAIN / (n + 1) + 1, widen_range, &c);
}

static void narrow(const sp_bk *bk, float *dst, int64_t dld, const double *src, int64_t sld, int64_t rows, int64_t n) {
    cvt_ctx c = {.dsrc = src, .dst = dst, .n = n, .sld = sld, .dld = dld};
    sp_cpu_par_for(bk, rows, PAR_GRAIN / (n + 1) + 1, narrow_range, &c);
}

/* compute.c's rot_rows exactly (BLK = rot_block). Row block r0 is read
 * before its results are stored at [r0·k, r1·k), which never reaches an
 * unread row. */
void sp_cpu_rot_rows(const sp_bk *bk, sp_bk_ws *ws, float *W, int64_t rows, int64_t D, const float *gamma, const double *Q,
                         int64_t k) {
    sp_cpu_blas_threads(bk);
    SP_ASSERT(D >= 1 && D <= ws->D && k >= 1 && k <= D && rows >= 0 && ws->rot_block >= 1);
    const int64_t BLK = ws->rot_block;
    double *dbuf = ws->rot_in, *dout = ws->rot_out; /* (nr, D), (nr, k) */
    for (int64_t r0 = 0; r0 < rows; r0 += BLK) {
        int64_t nr = rows - r0 < BLK ? rows - r0 : BLK;
        widen(bk, dbuf, D, W + r0 * D, D, gamma, nr, D);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)k, (int)D, 1.0, dbuf, (int)D, Q, (int)D,
                    0.0, dout, (int)k);
        narrow(bk, W + r0 * k, k, dout, k, nr, k);
    }
}

/* compute.c's rot_cols exactly: a column block is read whole before its
 * results are stored into the same columns. */
void sp_cpu_rot_cols(const sp_bk *bk, sp_bk_ws *ws, const double *Q, int64_t D, int64_t k, float *W, int64_t cols) {
    sp_cpu_blas_threads(bk);
    SP_ASSERT(D >= 1 && D <= ws->D && k >= 1 && k <= D && cols >= 0 && ws->rot_block >= 1);
    const int64_t BLK = ws->rot_block;
    double *dbuf = ws->rot_in, *dout = ws->rot_out; /* (D, nc), (k, nc) */
    for (int64_t c0 = 0; c0 < cols; c0 += BLK) {
        int64_t nc = cols - c0 < BLK ? cols - c0 : BLK;
        widen(bk, dbuf, nc, W + c0, cols, NULL, D, nc);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)nc, (int)D, 1.0, Q, (int)D, dbuf, (int)nc, 0.0,
                    dout, (int)nc);
        narrow(bk, W + c0, cols, dout, nc, k, nc);
    }
}

/* compute.c's shortcut exactly. */
void sp_cpu_basis_product(const sp_bk *bk, const double *A, int64_t a, const double *B, int64_t b, int64_t D, double *scratch,
                              float *C) {
    sp_cpu_blas_threads(bk);
    SP_ASSERT(a >= 1 && a <= D && b >= 1 && b <= D);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)a, (int)b, (int)D, 1.0, A, (int)D, B, (int)D, 0.0, scratch,
                (int)b);
    narrow(bk, C, b, scratch, b, a, b);
}

