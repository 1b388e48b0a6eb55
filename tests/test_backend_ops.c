/* tests/test_backend_ops.c — every op of the backend table (linalg/backend.h)
 * against a plain float64 C reference written here from the published
 * definitions (docs/algorithm.md §1–§4, backend.h), as ggml's test-backend-ops.
 *
 *   test_backend_ops cpu | cuda
 *
 * Exits 0 when every check passes, 1 on a failure, 77 when the named backend
 * is not compiled in or has no usable device, 64 on a bad command line.
 * All op inputs live in backend memory (alloc, to_dev, to_host), so the same
 * code tests a host and a device backend. Tolerances are atol + rtol·|ref|.
 * Eigenvectors are compared as projectors and reconstructions, never raw;
 * descending order and the sign rule are checked explicitly.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h> /* openblas_get_num_threads: the CPU backend sets its count before a BLAS op */
#include <lapacke.h> /* dsyevd: one fixed eigensolver for test_cov_outliers */

#include "backend.h"
#include "error.h"
#include "test_util.h"

static sp_bk *bk;
static int is_cpu; /* the CPU backend: checks of its exact bits */

/* ---- random numbers (xorshift64*, fixed seed) ---- */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* [0, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static float frand(float s) { return (float)((2.0 * urand() - 1.0) * s); }

static void *xmalloc(int64_t bytes) {
    void *p = malloc(bytes > 0 ? (size_t)bytes : 1);
    if (!p) {
        fprintf(stderr, "test: out of memory\n");
        exit(70);
    }
    return p;
}
static float *frand_vec(int64_t n, float s) {
    float *p = xmalloc(n * 4);
    for (int64_t i = 0; i < n; i++) p[i] = frand(s);
    return p;
}

/* ---- backend memory ---- */
static void *dalloc(int64_t bytes) {
    void *p;
    if (bk->alloc(bk, &p, bytes > 0 ? bytes : 1, "test buffer")) {
        fprintf(stderr, "test: %s\n", sp_errmsg());
        exit(70);
    }
    return p;
}
static void *dfrom(const void *h, int64_t bytes) {
    void *p = dalloc(bytes);
    bk->to_dev(bk, p, h, bytes);
    return p;
}
static void hfrom(void *h, const void *d, int64_t bytes) { bk->to_host(bk, h, d, bytes); }

/* ---- comparisons ---- */
/* Counts elements outside atol + rtol·|ref| and reports the worst. */
static void cmp_f32(const char *what, const float *got, const double *ref, int64_t n, double atol, double rtol) {
    int64_t bad = 0, worst = -1;
    double worst_ex = 0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]), tol = atol + rtol * fabs(ref[i]);
        if (!(err <= tol)) {
            bad++;
            if (worst < 0 || err - tol > worst_ex) worst_ex = err - tol, worst = i;
        }
    }
    CHECK(bad == 0, "%s: %lld of %lld outside tolerance; worst [%lld] got %.9g ref %.9g", what, (long long)bad,
          (long long)n, (long long)worst, worst >= 0 ? (double)got[worst] : 0.0, worst >= 0 ? ref[worst] : 0.0);
}
static void cmp_f64(const char *what, const double *got, const double *ref, int64_t n, double atol, double rtol) {
    int64_t bad = 0, worst = -1;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs(got[i] - ref[i]), tol = atol + rtol * fabs(ref[i]);
        if (!(err <= tol) && bad++ == 0) worst = i;
    }
    CHECK(bad == 0, "%s: %lld of %lld outside tolerance; first [%lld] got %.17g ref %.17g", what, (long long)bad,
          (long long)n, (long long)worst, worst >= 0 ? got[worst] : 0.0, worst >= 0 ? ref[worst] : 0.0);
}

static sp_bk_ws *ws_make(int64_t D, int64_t cov_rows, int64_t rot_block, int64_t T, int64_t nh) {
    sp_bk_plan_in in = {.D = D, .cov_rows = cov_rows, .rot_block = rot_block, .T = T, .n_heads = nh};
    sp_bk_ws *ws = NULL;
    int rc = bk->ws_init(bk, &in, &ws);
    CHECK(rc == 0 && ws, "ws_init(D %lld, cov_rows %lld, rot_block %lld, T %lld): %d %s", (long long)D,
          (long long)cov_rows, (long long)rot_block, (long long)T, rc, sp_errmsg());
    if (!ws) exit(1);
    return ws;
}

/* ================= float32 ops ================= */

static void test_sgemm(void) {
    static const struct {
        int ta, tb;
        int64_t m, n, k;
        float alpha, beta;
        int64_t pad;
    } cs[] = {
        {0, 0, 1, 1, 1, 1.0f, 0.0f, 0},   {0, 1, 7, 5, 3, 1.0f, 0.0f, 0},   {1, 0, 13, 9, 17, 0.5f, 1.0f, 3},
        {1, 1, 33, 31, 29, -1.25f, 0.5f, 5}, {0, 1, 130, 67, 64, 0.125f, 0.0f, 2}, {0, 0, 64, 300, 45, 1.0f, 1.0f, 7},
        {1, 1, 5, 128, 257, 2.0f, 0.0f, 1},
    };
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int ta = cs[c].ta, tb = cs[c].tb;
        int64_t m = cs[c].m, n = cs[c].n, k = cs[c].k, pad = cs[c].pad;
        int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
        int64_t lda = ac + pad, ldb = bc + pad, ldc = n + pad;
        float *A = frand_vec(ar * lda, 1), *B = frand_vec(br * ldb, 1), *C = frand_vec(m * ldc, 1);
        if (cs[c].beta == 0.0f) /* beta 0 must overwrite without reading C */
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++) C[i * ldc + j] = NAN;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = n; j < ldc; j++) C[i * ldc + j] = 7.0f; /* padding: never written */
        double *ref = xmalloc(m * n * 8);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t l = 0; l < k; l++)
                    s += (double)(ta ? A[l * lda + i] : A[i * lda + l]) * (double)(tb ? B[j * ldb + l] : B[l * ldb + j]);
                ref[i * n + j] = cs[c].alpha * s + (cs[c].beta != 0.0f ? cs[c].beta * (double)C[i * ldc + j] : 0.0);
            }
        float *dA = dfrom(A, ar * lda * 4), *dB = dfrom(B, br * ldb * 4), *dC = dfrom(C, m * ldc * 4);
        bk->sgemm(bk, ta, tb, m, n, k, cs[c].alpha, dA, lda, dB, ldb, cs[c].beta, dC, ldc);
        float *got = xmalloc(m * ldc * 4), *packed = xmalloc(m * n * 4);
        hfrom(got, dC, m * ldc * 4);
        int pad_ok = 1;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < ldc; j++) {
                if (j < n) packed[i * n + j] = got[i * ldc + j];
                else if (got[i * ldc + j] != 7.0f) pad_ok = 0;
            }
        char what[96];
        snprintf(what, sizeof what, "sgemm ta %d tb %d (%lld, %lld, %lld) beta %g", ta, tb, (long long)m, (long long)n,
                 (long long)k, (double)cs[c].beta);
        cmp_f32(what, packed, ref, m * n, 1e-5 * sqrt((double)k), 1e-5);
        CHECK(pad_ok, "%s: wrote past n into the row padding", what);
        bk->free(bk, dA), bk->free(bk, dB), bk->free(bk, dC);
        free(A), free(B), free(C), free(ref), free(got), free(packed);
    }
}

static void test_add(void) {
    const int64_t rows = 7, n = 13;
    float *y = frand_vec(rows * n, 2), *x = frand_vec(rows * n, 2), *b = frand_vec(n, 2), *got = xmalloc(rows * n * 4);
    double *ref = xmalloc(rows * n * 8);
    float *dy = dfrom(y, rows * n * 4), *dx = dfrom(x, rows * n * 4), *db = dfrom(b, n * 4);
    bk->add(bk, dy, dx, rows, n);
    hfrom(got, dy, rows * n * 4);
    for (int64_t i = 0; i < rows * n; i++) ref[i] = (double)y[i] + (double)x[i];
    cmp_f32("add", got, ref, rows * n, 0, 1e-7);
    bk->add_bias(bk, dy, db, rows, n);
    hfrom(got, dy, rows * n * 4);
    for (int64_t i = 0; i < rows * n; i++) ref[i] += (double)b[i % n];
    cmp_f32("add_bias", got, ref, rows * n, 1e-6, 1e-6);
    bk->free(bk, dy), bk->free(bk, dx), bk->free(bk, db);
    free(y), free(x), free(b), free(got), free(ref);
}

/* geadd: strided copies (beta 0 must not read C: it holds NaN) and
 * differences, C's padding never written. */
static void test_geadd(void) {
    static const struct {
        int64_t rows, cols, lda, ldc;
        float alpha, beta;
    } cs[] = {{1, 1, 1, 1, 1.0f, 0.0f}, {7, 13, 13, 20, 1.0f, 0.0f}, {300, 5, 9, 5, -1.0f, 1.0f}, {33, 64, 70, 96, 0.5f, -2.0f}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        const int64_t r = cs[c].rows, n = cs[c].cols, lda = cs[c].lda, ldc = cs[c].ldc;
        float *A = frand_vec(r * lda, 3), *C = frand_vec(r * ldc, 4), *got = xmalloc(r * ldc * 4), *packed = xmalloc(r * n * 4);
        double *ref = xmalloc(r * n * 8);
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < ldc; j++)
                if (j >= n) C[i * ldc + j] = 7.0f;
                else if (cs[c].beta == 0.0f) C[i * ldc + j] = NAN;
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < n; j++)
                ref[i * n + j] = cs[c].alpha * (double)A[i * lda + j] + (cs[c].beta != 0.0f ? cs[c].beta * (double)C[i * ldc + j] : 0.0);
        float *dA = dfrom(A, r * lda * 4), *dC = dfrom(C, r * ldc * 4);
        bk->geadd(bk, r, n, cs[c].alpha, dA, lda, cs[c].beta, dC, ldc);
        hfrom(got, dC, r * ldc * 4);
        int pad_ok = 1;
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < ldc; j++)
                if (j < n) packed[i * n + j] = got[i * ldc + j];
                else if (got[i * ldc + j] != 7.0f) pad_ok = 0;
        char what[96];
        snprintf(what, sizeof what, "geadd (%lld, %lld) lda %lld ldc %lld alpha %g beta %g", (long long)r, (long long)n,
                 (long long)lda, (long long)ldc, (double)cs[c].alpha, (double)cs[c].beta);
        cmp_f32(what, packed, ref, r * n, 1e-6, 1e-6);
        CHECK(pad_ok, "%s: wrote past cols into the row padding", what);
        bk->free(bk, dA), bk->free(bk, dC);
        free(A), free(C), free(got), free(packed), free(ref);
    }
}

static void test_norm(void) {
    static const struct {
        enum sp_bk_norm kind;
        int64_t d, D;
        int gamma, beta;
        float offset;
    } cs[] = {
        {SP_BK_NORM_RMS, 16, 16, 1, 0, 0},    {SP_BK_NORM_RMS, 37, 37, 0, 0, 0},   {SP_BK_NORM_RMS, 29, 40, 1, 0, 0.5f},
        {SP_BK_NORM_RMS, 1, 8, 0, 0, 0},      {SP_BK_NORM_LAYER, 33, 33, 1, 1, 3}, {SP_BK_NORM_LAYER, 64, 64, 0, 0, -2},
        {SP_BK_NORM_LAYER, 17, 17, 1, 0, 10}, {SP_BK_NORM_LAYER, 8, 8, 0, 1, 0},
    };
    const int64_t rows = 9;
    const double eps = 1e-5;
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int64_t d = cs[c].d, D = cs[c].D;
        float *x = frand_vec(rows * d, 2), *g = frand_vec(d, 1.5f), *b = frand_vec(d, 1), *got = xmalloc(rows * d * 4);
        for (int64_t i = 0; i < rows * d; i++) x[i] += cs[c].offset;
        double *ref = xmalloc(rows * d * 8);
        for (int64_t t = 0; t < rows; t++) {
            const float *r = x + t * d;
            double mean = 0, ss = 0;
            if (cs[c].kind == SP_BK_NORM_LAYER) {
                for (int64_t j = 0; j < d; j++) mean += r[j];
                mean /= (double)D;
            }
            for (int64_t j = 0; j < d; j++) ss += ((double)r[j] - mean) * ((double)r[j] - mean);
            double inv = 1.0 / sqrt(ss / (double)D + eps);
            for (int64_t j = 0; j < d; j++)
                ref[t * d + j] = ((double)r[j] - mean) * inv * (cs[c].gamma ? (double)g[j] : 1.0) +
                                 (cs[c].beta ? (double)b[j] : 0.0);
        }
        float *dx = dfrom(x, rows * d * 4), *dg = dfrom(g, d * 4), *db = dfrom(b, d * 4);
        bk->norm(bk, cs[c].kind, cs[c].gamma ? dg : NULL, cs[c].beta ? db : NULL, d, D, eps, dx, rows);
        hfrom(got, dx, rows * d * 4);
        char what[80];
        snprintf(what, sizeof what, "norm %s d %lld D %lld gamma %d beta %d", cs[c].kind == SP_BK_NORM_RMS ? "rms" : "layer",
                 (long long)d, (long long)D, cs[c].gamma, cs[c].beta);
        cmp_f32(what, got, ref, rows * d, 2e-6, 2e-6);
        bk->free(bk, dx), bk->free(bk, dg), bk->free(bk, db);
        free(x), free(g), free(b), free(got), free(ref);
    }
}

static void test_rope(void) {
    static const struct {
        enum sp_bk_rope kind;
        int64_t T, nh, hd, rot, pad;
    } cs[] = {
        {SP_BK_ROPE_HALF, 5, 3, 8, 8, 0},       {SP_BK_ROPE_HALF, 130, 4, 16, 16, 5}, {SP_BK_ROPE_HALF, 9, 2, 20, 8, 3},
        {SP_BK_ROPE_HALF, 7, 1, 10, 4, 0},      {SP_BK_ROPE_INTERLEAVE, 6, 3, 8, 8, 1},
        {SP_BK_ROPE_INTERLEAVE, 11, 2, 12, 6, 4}, {SP_BK_ROPE_HALF, 4, 2, 6, 0, 2},
    };
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int64_t T = cs[c].T, nh = cs[c].nh, hd = cs[c].hd, rot = cs[c].rot, half = rot / 2, ld = nh * hd + cs[c].pad;
        float *x = frand_vec(T * ld, 2), *ct = xmalloc((T * half + 1) * 4), *st = xmalloc((T * half + 1) * 4);
        for (int64_t i = 0; i < half; i++) {
            double f = pow(10000.0, -(double)(2 * i) / (double)rot);
            for (int64_t t = 0; t < T; t++) {
                ct[t * half + i] = (float)cos((double)t * f);
                st[t * half + i] = (float)sin((double)t * f);
            }
        }
        double *ref = xmalloc(T * ld * 8);
        for (int64_t i = 0; i < T * ld; i++) ref[i] = x[i];
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < nh; h++)
                for (int64_t i = 0; i < half; i++) {
                    int64_t ia = cs[c].kind == SP_BK_ROPE_HALF ? i : 2 * i, ib = cs[c].kind == SP_BK_ROPE_HALF ? i + half : 2 * i + 1;
                    double a = x[t * ld + h * hd + ia], b = x[t * ld + h * hd + ib];
                    double co = ct[t * half + i], si = st[t * half + i];
                    ref[t * ld + h * hd + ia] = a * co - b * si;
                    ref[t * ld + h * hd + ib] = b * co + a * si;
                }
        float *dx = dfrom(x, T * ld * 4), *dc = dfrom(ct, (T * half + 1) * 4), *ds = dfrom(st, (T * half + 1) * 4);
        float *got = xmalloc(T * ld * 4);
        bk->rope(bk, cs[c].kind, dx, T, ld, nh, hd, rot, dc, ds);
        hfrom(got, dx, T * ld * 4);
        char what[80];
        snprintf(what, sizeof what, "rope %s T %lld nh %lld hd %lld rot %lld ld %lld",
                 cs[c].kind == SP_BK_ROPE_HALF ? "half" : "interleave", (long long)T, (long long)nh, (long long)hd,
                 (long long)rot, (long long)ld);
        cmp_f32(what, got, ref, T * ld, 1e-6, 1e-6);
        /* dimensions past rot, and the row padding, are left exactly as they were */
        int64_t moved = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < ld; j++) {
                int64_t h = j / hd, jj = j % hd;
                if ((h >= nh || jj >= rot) && got[t * ld + j] != x[t * ld + j]) moved++;
            }
        CHECK(moved == 0, "%s: %lld unrotated values changed", what, (long long)moved);
        bk->free(bk, dx), bk->free(bk, dc), bk->free(bk, ds);
        free(x), free(ct), free(st), free(ref), free(got);
    }
}

/* float64 reference attention: ctx (T, nh·hd). */
static void ref_attention(const float *q, const float *k, const float *v, int64_t T, int64_t nh, int64_t nkv, int64_t hd,
                          double scale, int64_t window, double *ctx) {
    double *s = xmalloc(T * 8);
    for (int64_t h = 0; h < nh; h++) {
        int64_t g = h / (nh / nkv);
        for (int64_t i = 0; i < T; i++) {
            int64_t j0 = window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
            double m = -INFINITY, sum = 0;
            for (int64_t j = j0; j <= i; j++) {
                double dot = 0;
                for (int64_t e = 0; e < hd; e++) dot += (double)q[i * nh * hd + h * hd + e] * (double)k[j * nkv * hd + g * hd + e];
                s[j] = scale * dot;
                m = s[j] > m ? s[j] : m;
            }
            for (int64_t j = j0; j <= i; j++) sum += (s[j] = exp(s[j] - m));
            for (int64_t e = 0; e < hd; e++) {
                double acc = 0;
                for (int64_t j = j0; j <= i; j++) acc += s[j] / sum * (double)v[j * nkv * hd + g * hd + e];
                ctx[i * nh * hd + h * hd + e] = acc;
            }
        }
    }
    free(s);
}

/* The CPU backend's attention in float32 as one loop per row: query blocks
 * of 128 rows (linalg/cpu.c's CPU_QBLOCK), scores and context by one
 * single-threaded sgemm per head and block as the backend calls them, and
 * each row's softmax serially: its maximum, x − m, x < −87 ? 0 : expf(x),
 * the sum in key order from 0, 1/sum, the masked keys 0. The backend runs
 * the rows' sums side by side and the maximum in lanes, which must not
 * change a bit. */
static void row_loop_attention(const float *q, const float *k, const float *v, int64_t T, int64_t nh, int64_t nkv, int64_t hd,
                               float scale, int64_t window, float *ctx) {
    const int64_t qw = nh * hd, kw = nkv * hd, QB = 128;
    float *att = xmalloc(QB * T * 4);
    const int nt = openblas_get_num_threads();
    openblas_set_num_threads(1);
    for (int64_t r0 = 0; r0 < T; r0 += QB) {
        int64_t r1 = r0 + QB < T ? r0 + QB : T, nr = r1 - r0;
        int64_t k0 = window > 0 && r0 - window + 1 > 0 ? r0 - window + 1 : 0, nk = r1 - k0;
        for (int64_t h = 0; h < nh; h++) {
            int64_t g = h / (nh / nkv);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)nk, (int)hd, scale, q + r0 * qw + h * hd, (int)qw,
                        k + k0 * kw + g * hd, (int)kw, 0.0f, att, (int)nk);
            for (int64_t i = 0; i < nr; i++) {
                float *row = att + i * nk;
                int64_t last = r0 + i - k0, first = window > 0 && r0 + i - window + 1 > k0 ? r0 + i - window + 1 - k0 : 0;
                float m = row[first], sum = 0.0f;
                for (int64_t j = first + 1; j <= last; j++) m = row[j] > m ? row[j] : m;
                for (int64_t j = first; j <= last; j++) {
                    float x = row[j] - m;
                    row[j] = x < -87.0f ? 0.0f : expf(x);
                }
                for (int64_t j = first; j <= last; j++) sum += row[j];
                float inv = 1.0f / sum;
                for (int64_t j = 0; j < nk; j++) row[j] = j >= first && j <= last ? row[j] * inv : 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)hd, (int)nk, 1.0f, att, (int)nk,
                        v + k0 * kw + g * hd, (int)kw, 0.0f, ctx + r0 * qw + h * hd, (int)qw);
        }
    }
    openblas_set_num_threads(nt);
    free(att);
}

static void test_attention(void) {
    static const struct {
        int64_t T, nh, nkv, hd, window;
        float qs;
    } cs[] = {
        {1, 2, 2, 8, 0, 1},    {7, 4, 4, 8, 0, 1},     {128, 4, 2, 16, 0, 1},  {130, 4, 2, 16, 0, 2},
        {300, 3, 1, 8, 0, 1},  {300, 4, 2, 8, 1, 1},   {300, 4, 4, 8, 5, 3},   {260, 6, 2, 12, 129, 1},
        {200, 2, 1, 16, 128, 1}, {131, 4, 1, 8, 1000, 1}, {64, 2, 2, 5, 16, 6}, {257, 8, 2, 4, 200, 1},
    };
    const int64_t Tmax = 300;
    sp_bk_ws *ws = ws_make(8, 4, 4, Tmax, 8);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int64_t T = cs[c].T, nh = cs[c].nh, nkv = cs[c].nkv, hd = cs[c].hd, qw = nh * hd, kw = nkv * hd;
        float *q = frand_vec(T * qw, cs[c].qs), *k = frand_vec(T * kw, cs[c].qs), *v = frand_vec(T * kw, 1);
        double *ref = xmalloc(T * qw * 8);
        float scale = (float)(1.0 / sqrt((double)hd)), *got = xmalloc(T * qw * 4);
        ref_attention(q, k, v, T, nh, nkv, hd, (double)scale, cs[c].window, ref);
        float *dq = dfrom(q, T * qw * 4), *dk = dfrom(k, T * kw * 4), *dv = dfrom(v, T * kw * 4), *dctx = dalloc(T * qw * 4);
        bk->attention(bk, ws, dq, dk, dv, T, nh, nkv, hd, scale, cs[c].window, dctx);
        hfrom(got, dctx, T * qw * 4);
        char what[96];
        snprintf(what, sizeof what, "attention T %lld heads %lld/%lld hd %lld window %lld", (long long)T, (long long)nh,
                 (long long)nkv, (long long)hd, (long long)cs[c].window);
        cmp_f32(what, got, ref, T * qw, 2e-6, 2e-5);
        if (is_cpu) {
            float *loop = xmalloc(T * qw * 4);
            row_loop_attention(q, k, v, T, nh, nkv, hd, scale, cs[c].window, loop);
            CHECK(memcmp(loop, got, (size_t)(T * qw) * 4) == 0, "%s: not the bits of the float32 row loop", what);
            free(loop);
        }
        if (cs[c].window >= T && is_cpu) { /* a window covering every key is the plain causal op, bit for bit */
            float *plain = xmalloc(T * qw * 4);
            bk->attention(bk, ws, dq, dk, dv, T, nh, nkv, hd, scale, 0, dctx);
            hfrom(plain, dctx, T * qw * 4);
            CHECK(memcmp(plain, got, (size_t)(T * qw) * 4) == 0, "%s: differs from window 0", what);
            free(plain);
        }
        bk->free(bk, dq), bk->free(bk, dk), bk->free(bk, dv), bk->free(bk, dctx);
        free(q), free(k), free(v), free(ref), free(got);
    }
    bk->ws_free(bk, ws);
}

/* float64 reference of attention_cached: query i of Tq is position
 * p = Tk − Tq + i and sees keys j with max(0, p − window + 1) <= j <= p. */
static void ref_attention_cached(const float *q, int64_t Tq, const float *k, const float *v, int64_t Tk, int64_t nh,
                                 int64_t nkv, int64_t hd, double scale, int64_t window, double *ctx) {
    double *s = xmalloc(Tk * 8);
    for (int64_t h = 0; h < nh; h++) {
        int64_t g = h / (nh / nkv);
        for (int64_t i = 0; i < Tq; i++) {
            int64_t p = Tk - Tq + i, j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
            double m = -INFINITY, sum = 0;
            for (int64_t j = j0; j <= p; j++) {
                double dot = 0;
                for (int64_t e = 0; e < hd; e++) dot += (double)q[i * nh * hd + h * hd + e] * (double)k[j * nkv * hd + g * hd + e];
                s[j] = scale * dot;
                m = s[j] > m ? s[j] : m;
            }
            for (int64_t j = j0; j <= p; j++) sum += (s[j] = exp(s[j] - m));
            for (int64_t e = 0; e < hd; e++) {
                double acc = 0;
                for (int64_t j = j0; j <= p; j++) acc += s[j] / sum * (double)v[j * nkv * hd + g * hd + e];
                ctx[i * nh * hd + h * hd + e] = acc;
            }
        }
    }
    free(s);
}

/* attention_cached (KV-cache decoding): Tq new query rows, the last Tq
 * positions of Tk, against every cached key. Against the float64 reference;
 * Tq == Tk is the full op bit for bit (CPU); the last rows of a full window
 * agree with the full op within float32 rounding. */
static void test_attention_cached(void) {
    static const struct {
        int64_t Tq, Tk, nh, nkv, hd, window;
    } cs[] = {
        {1, 1, 2, 2, 8, 0},    {1, 7, 4, 4, 8, 0},     {1, 300, 4, 2, 16, 0},  {1, 300, 4, 2, 8, 5},
        {1, 300, 4, 4, 8, 1},  {3, 260, 6, 2, 12, 129}, {130, 300, 4, 2, 16, 0}, {129, 131, 4, 1, 8, 1000},
        {1, 257, 8, 2, 4, 200}, {17, 17, 3, 1, 8, 0},  {200, 200, 2, 1, 16, 128}, {2, 129, 2, 2, 5, 128},
    };
    const int64_t Tmax = 300;
    sp_bk_ws *ws = ws_make(8, 4, 4, Tmax, 8);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int64_t Tq = cs[c].Tq, Tk = cs[c].Tk, nh = cs[c].nh, nkv = cs[c].nkv, hd = cs[c].hd, qw = nh * hd, kw = nkv * hd;
        int64_t w = cs[c].window;
        float *qf = frand_vec(Tk * qw, 1), *k = frand_vec(Tk * kw, 1), *v = frand_vec(Tk * kw, 1);
        const float *q = qf + (Tk - Tq) * qw; /* the last Tq rows of a full window's queries */
        double *ref = xmalloc(Tq * qw * 8);
        float scale = (float)(1.0 / sqrt((double)hd)), *got = xmalloc(Tq * qw * 4), *full = xmalloc(Tk * qw * 4);
        ref_attention_cached(q, Tq, k, v, Tk, nh, nkv, hd, (double)scale, w, ref);
        float *dq = dfrom(q, Tq * qw * 4), *dqf = dfrom(qf, Tk * qw * 4), *dk = dfrom(k, Tk * kw * 4),
              *dv = dfrom(v, Tk * kw * 4), *dctx = dalloc(Tk * qw * 4);
        bk->attention_cached(bk, ws, dq, Tq, dk, dv, Tk, nh, nkv, hd, scale, w, dctx);
        hfrom(got, dctx, Tq * qw * 4);
        char what[128];
        snprintf(what, sizeof what, "attention_cached Tq %lld Tk %lld heads %lld/%lld hd %lld window %lld", (long long)Tq,
                 (long long)Tk, (long long)nh, (long long)nkv, (long long)hd, (long long)w);
        cmp_f32(what, got, ref, Tq * qw, 2e-6, 2e-5);
        bk->attention(bk, ws, dqf, dk, dv, Tk, nh, nkv, hd, scale, w, dctx); /* the full window */
        hfrom(full, dctx, Tk * qw * 4);
        if (Tq == Tk && is_cpu)
            CHECK(memcmp(full, got, (size_t)(Tq * qw) * 4) == 0, "%s: differs from attention (Tq == Tk)", what);
        double *lastf = xmalloc(Tq * qw * 8);
        for (int64_t i = 0; i < Tq * qw; i++) lastf[i] = full[(Tk - Tq) * qw + i];
        snprintf(what + strlen(what), sizeof what - strlen(what), " vs attention's last rows");
        cmp_f32(what, got, lastf, Tq * qw, 1e-6, 1e-5);
        bk->free(bk, dq), bk->free(bk, dqf), bk->free(bk, dk), bk->free(bk, dv), bk->free(bk, dctx);
        free(qf), free(k), free(v), free(ref), free(got), free(full), free(lastf);
    }
    bk->ws_free(bk, ws);
}

static double gelu_tanh_ref(double g) { return 0.5 * g * (1.0 + tanh(sqrt(2.0 / M_PI) * (g + 0.044715 * g * g * g))); }

static void test_act(void) {
    const int64_t n = 1003;
    float *g = frand_vec(n, 10), *u = frand_vec(n, 3), *got = xmalloc(n * 4);
    static const float extremes[] = {0.0f, -0.0f, -100.0f, -85.0f, -80.5f, -79.5f, 85.0f, 100.0f, 1e-6f, -1e-6f, 30.0f, -30.0f};
    for (size_t i = 0; i < sizeof extremes / sizeof extremes[0]; i++) g[i] = extremes[i];
    double *ref = xmalloc(n * 8);
    static const enum sp_bk_act kinds[] = {SP_BK_ACT_SILU_GLU, SP_BK_ACT_GELU_TANH_GLU, SP_BK_ACT_GELU_GLU, SP_BK_ACT_RELU,
                                           SP_BK_ACT_GELU_TANH};
    static const char *names[] = {"silu_glu", "gelu_tanh_glu", "gelu_glu", "relu", "gelu_tanh"};
    for (int kk = 0; kk < 5; kk++) {
        for (int64_t i = 0; i < n; i++) {
            double x = g[i], y = u[i];
            switch (kinds[kk]) {
            case SP_BK_ACT_SILU_GLU: ref[i] = x / (1.0 + exp(-x)) * y; break;
            case SP_BK_ACT_GELU_TANH_GLU: ref[i] = gelu_tanh_ref(x) * y; break;
            case SP_BK_ACT_GELU_GLU: ref[i] = 0.5 * x * (1.0 + erf(x / sqrt(2.0))) * y; break;
            case SP_BK_ACT_RELU: ref[i] = x > 0 ? x : 0; break;
            case SP_BK_ACT_GELU_TANH: ref[i] = gelu_tanh_ref(x); break;
            }
        }
        float *dg = dfrom(g, n * 4), *du = dfrom(u, n * 4);
        bk->act(bk, kinds[kk], dg, du, n);
        hfrom(got, dg, n * 4);
        char what[64];
        snprintf(what, sizeof what, "act %s", names[kk]);
        cmp_f32(what, got, ref, n, 1e-6, 2e-6);
        bk->free(bk, dg), bk->free(bk, du);
    }
    free(g), free(u), free(got), free(ref);
}

static void test_nll(void) {
    static const struct {
        int64_t T, V;
    } cs[] = {{1, 7}, {2, 1}, {2, 5}, {65, 333}, {130, 97}, {64, 2}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int64_t T = cs[c].T, V = cs[c].V;
        float *lg = frand_vec(T * V, 8);
        int32_t *tok = xmalloc(T * 4);
        for (int64_t t = 0; t < T; t++) tok[t] = (int32_t)(urand() * (double)V);
        double ref = 0;
        for (int64_t t = 0; t + 1 < T; t++) {
            double m = -INFINITY, se = 0;
            for (int64_t j = 0; j < V; j++) m = lg[t * V + j] > m ? lg[t * V + j] : m;
            for (int64_t j = 0; j < V; j++) se += exp((double)lg[t * V + j] - m);
            ref += m + log(se) - (double)lg[t * V + tok[t + 1]];
        }
        /* the last row is never read: poison it */
        for (int64_t j = 0; j < V; j++) lg[(T - 1) * V + j] = NAN;
        float *dl = dfrom(lg, T * V * 4);
        double got = bk->nll(bk, dl, T, V, tok, 0.0), got_acc = bk->nll(bk, dl, T, V, tok, 3.5);
        char what[64];
        snprintf(what, sizeof what, "nll T %lld V %lld", (long long)T, (long long)V);
        cmp_f64(what, &got, &ref, 1, 1e-9 * (double)T, 1e-9);
        double ref_acc = ref + 3.5;
        cmp_f64("nll with acc", &got_acc, &ref_acc, 1, 1e-9 * (double)T, 1e-9);
        /* chunked scoring with the running sum gives the same bits */
        for (int64_t nr = 1; nr <= 64; nr *= 4) {
            double acc = 0.0;
            for (int64_t r0 = 0; r0 < T; r0 += nr) {
                int64_t rows = T - r0 < nr ? T - r0 : nr, p = rows < T - 1 - r0 ? rows : T - 1 - r0;
                acc = bk->nll(bk, dl + r0 * V, p + 1, V, tok + r0, acc);
            }
            CHECK(memcmp(&acc, &got, 8) == 0, "%s: chunks of %lld give %.17g, one call %.17g", what, (long long)nr, acc,
                  got);
        }
        bk->free(bk, dl);
        free(lg), free(tok);
    }
}

/* ================= float64 ops ================= */

/* The float64 accumulation bound (backend.h, cov_add): after n rows added
 * to H₀, each entry within (n + 1)·2⁻⁵³·(Σ|xᵢxⱼ| + |H₀|) of the exact sum.
 * The plain double loops of the references below make at most that error
 * again, so got and ref may differ by twice it. */
static double cov_f64_tol(int64_t n, double mag, double h0) { return 2.0 * (double)(n + 1) * ldexp(1.0, -53) * (mag + fabs(h0)); }

/* cov_add on a workspace without the eigensolver's part (the stock policy's
 * MLP moments, F wide): the same float64 bound. */
static void test_cov_wide(void) {
    const int64_t D = 300, rows = 517, cov_rows = 256;
    sp_bk_plan_in in = {.D = D, .cov_rows = cov_rows, .no_eigh = 1};
    sp_bk_ws *ws = NULL;
    CHECK(bk->ws_init(bk, &in, &ws) == 0 && ws, "ws_init(no_eigh, D %lld): %s", (long long)D, sp_errmsg());
    if (!ws) return;
    double *ref = xmalloc(D * D * 8), *mag = xmalloc(D * D * 8), *got = xmalloc(D * D * 8);
    float *X = frand_vec(rows * D, 3);
    for (int64_t i = 0; i < D * D; i++) ref[i] = mag[i] = 0;
    for (int64_t t = 0; t < rows; t++)
        for (int64_t i = 0; i < D; i++)
            for (int64_t j = i; j < D; j++) {
                double pr = (double)X[t * D + i] * (double)X[t * D + j];
                ref[i * D + j] += pr;
                mag[i * D + j] += fabs(pr);
            }
    double *dH = dalloc(D * D * 8);
    bk->zero(bk, dH, D * D * 8);
    float *dX = dfrom(X, rows * D * 4);
    CHECK(bk->cov_add(bk, ws, dH, D, dX, rows, D, 0) == 0, "cov_add (no_eigh): %s", sp_errmsg());
    hfrom(got, dH, D * D * 8);
    int64_t bad = 0, worst = -1;
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = i; j < D; j++)
            if (!(fabs(got[i * D + j] - ref[i * D + j]) <= 1e-300 + cov_f64_tol(rows, mag[i * D + j], 0)) && bad++ == 0)
                worst = i * D + j;
    CHECK(bad == 0, "cov_add (no_eigh, %s): %lld entries outside the float64 bound; first got %.17g ref %.17g", bk->name,
          (long long)bad, worst >= 0 ? got[worst] : 0.0, worst >= 0 ? ref[worst] : 0.0);
    bk->free(bk, dH), bk->free(bk, dX), bk->ws_free(bk, ws);
    free(ref), free(mag), free(got), free(X);
}

static void random_orthogonal(double *V, int64_t D); /* below, with eigh's tests */

/* A standard normal deviate (Box–Muller on urand). */
static double nrand(void) {
    double u = urand(), v = urand();
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* Eigenvalues (descending) and the top-d projector P = U_d·U_dᵀ (D, D) of
 * H + δI, δ = damp·mean(diag H), by LAPACKE dsyevd laid out as the CPU
 * backend's eigh lays it out (the row-major upper triangle as the
 * column-major lower one). One fixed float64 eigensolver for every H this
 * test compares, so what differs is only what cov_add summed. */
static void spectrum_of(const double *H, int64_t D, int64_t d, double damp, double *ev, double *P) {
    double *A = xmalloc(D * D * 8), *w = xmalloc(D * 8), tr = 0;
    for (int64_t i = 0; i < D; i++) tr += H[i * D + i];
    double delta = damp * (tr / (double)D);
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = 0; j < D; j++) A[i * D + j] = j >= i ? H[i * D + j] + (i == j ? delta : 0.0) : 0.0;
    lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)D, A, (lapack_int)D, w);
    CHECK(info == 0, "dsyevd (the test's own eigensolver): info %d", (int)info);
    for (int64_t p = 0; p < D; p++) ev[p] = w[D - 1 - p] - delta; /* the spectrum of H itself */
    /* column-major eigenvectors: vector p is A[p·D .. p·D + D), ascending */
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = 0; j < D; j++) {
            double s = 0;
            for (int64_t p = D - d; p < D; p++) s += A[p * D + i] * A[p * D + j];
            P[i * D + j] = s;
        }
    free(A), free(w);
}

/* Outlier channels: the activations of large models have a few channels
 * around 1e3 next to the rest around 1e-2, uncentered. A float32 sum rounds
 * every partial sum at 2⁻²⁴ of its size, and here the sizes are set by the
 * outliers and the means, not by the small eigenvalues a slice cuts.
 * X (4096, 256): channels 0-3 are ±1e3·(1 + 0.1·g); the other 252 are
 * 1e-2·(m_j + Σ_r s_r·g_r·V_jr) with means m_j in [2, 6), V a random
 * orthogonal basis and s = 1 for 188 directions and 0.5 for the rest, so the
 * top-192 subspace (the outliers and 188 directions: slicing at 0.25) is
 * well separated (gap about 0.1). The outliers are the first channels:
 * dsyevd then resolves the small eigenvalues of this graded matrix to high
 * relative accuracy; with them elsewhere its own rounding, about
 * 2⁻⁵³·λ_max = 2e-6 over a gap of 0.1, blurs the projector whatever summed
 * H (docs/algorithm.md §3).
 *
 * cov_add's H (one 512-row window per call, 256-row blocks, as the pipeline
 * feeds it) is compared with plain double loops over the rows:
 *   - H: every entry within cov_f64_tol, the float64 rounding bound;
 *   - the eigenvalues of H: relative error at most 2e-6;
 *   - the top-192 projector P = U_d·U_dᵀ: ‖P − P_ref‖_F at most 5e-6;
 * both spectra by the same dsyevd (spectrum_of, undamped), so that only
 * what cov_add summed differs. Measured under OpenBLAS's Prescott, Nehalem,
 * Sandybridge, Haswell, Zen, SkylakeX and Cooperlake kernels: float64
 * accumulation at most 4.3e-7 and 1.0e-7 (the eigensolver's own rounding:
 * 4.3e-7 is the one eigenvalue left of the small channels' mean after the
 * outliers, a 350-fold cancellation; the others are within 1e-8). A plain
 * float32 accumulation per 256-row block into the float64 H, the scheme
 * cov_add used before, gives 1.8e-5 and 2.4e-4 and every entry of H outside
 * its bound: the test computes it too and checks that it fails all three, so
 * the test can catch it. */
static void test_cov_outliers(void) {
    enum { D = 256, N = 4096, K = 4, DK = 192, W = 512, BLK = 256 };
    double *V = xmalloc((D - K) * (D - K) * 8), *m = xmalloc((D - K) * 8), *z = xmalloc((D - K) * 8);
    random_orthogonal(V, D - K);
    for (int64_t j = 0; j < D - K; j++) m[j] = 2.0 + 4.0 * urand();
    float *X = xmalloc((int64_t)N * D * 4);
    for (int64_t t = 0; t < N; t++) {
        for (int64_t c = 0; c < K; c++) X[t * D + c] = (float)((c % 2 ? -1e3 : 1e3) * (1.0 + 0.1 * nrand()));
        for (int64_t r = 0; r < D - K; r++) z[r] = nrand() * (r < DK - K ? 1.0 : 0.5);
        for (int64_t j = 0; j < D - K; j++) {
            double s = m[j];
            for (int64_t r = 0; r < D - K; r++) s += V[j * (D - K) + r] * z[r];
            X[t * D + K + j] = (float)(1e-2 * s);
        }
    }
    /* the float64 reference and Σ|xᵢxⱼ|, row after row; the float32 blocks */
    double *ref = xmalloc(D * D * 8), *mag = xmalloc(D * D * 8), *f32 = xmalloc(D * D * 8), *got = xmalloc(D * D * 8);
    float *acc = xmalloc(D * D * 4);
    for (int64_t i = 0; i < D * D; i++) ref[i] = mag[i] = f32[i] = 0;
    for (int64_t r0 = 0; r0 < N; r0 += BLK) {
        for (int64_t i = 0; i < D * D; i++) acc[i] = 0.0f;
        for (int64_t t = r0; t < r0 + BLK; t++) {
            const float *x = X + t * D;
            for (int64_t i = 0; i < D; i++)
                for (int64_t j = i; j < D; j++) {
                    double pr = (double)x[i] * (double)x[j];
                    ref[i * D + j] += pr;
                    mag[i * D + j] += fabs(pr);
                    acc[i * D + j] += x[i] * x[j]; /* float32 product and sum, as ssyrk */
                }
        }
        for (int64_t i = 0; i < D * D; i++) f32[i] += (double)acc[i];
    }
    sp_bk_ws *ws = ws_make(D, BLK, 1, 0, 0);
    double *dH = dalloc(D * D * 8);
    bk->zero(bk, dH, D * D * 8);
    float *dX = dfrom(X, (int64_t)N * D * 4);
    for (int64_t r0 = 0; r0 < N; r0 += W)
        CHECK(bk->cov_add(bk, ws, dH, D, dX + r0 * D, W, D, r0) == 0, "cov_add (outliers): %s", sp_errmsg());
    hfrom(got, dH, D * D * 8);

    double *ev_ref = xmalloc(D * 8), *ev = xmalloc(D * 8), *P_ref = xmalloc(D * D * 8), *P = xmalloc(D * D * 8);
    spectrum_of(ref, D, DK, 0.0, ev_ref, P_ref);
    CHECK(ev_ref[DK - 1] - ev_ref[DK] > 0.05 && ev_ref[D - 1] > 0,
          "outlier input: the top-%d gap %.3g (want > 0.05), smallest eigenvalue %.3g", DK, ev_ref[DK - 1] - ev_ref[DK],
          ev_ref[D - 1]);
    const double EV_RTOL = 2e-6, P_TOL = 5e-6;
    const double *cand[2] = {got, f32};
    for (int c = 0; c < 2; c++) {
        const double *H = cand[c];
        int64_t bad_h = 0;
        double ev_err = 0, p_err = 0;
        for (int64_t i = 0; i < D; i++)
            for (int64_t j = i; j < D; j++)
                bad_h += !(fabs(H[i * D + j] - ref[i * D + j]) <= cov_f64_tol(N, mag[i * D + j], 0));
        spectrum_of(H, D, DK, 0.0, ev, P);
        for (int64_t p = 0; p < D; p++) ev_err = fmax(ev_err, fabs(ev[p] - ev_ref[p]) / fabs(ev_ref[p]));
        for (int64_t i = 0; i < D * D; i++) p_err += (P[i] - P_ref[i]) * (P[i] - P_ref[i]);
        p_err = sqrt(p_err);
        printf("cov_add with outlier channels, %s: %lld of %d entries of H outside the float64 bound, eigenvalues "
               "%.2g relative (bound %g), top-%d projector %.2g (bound %g)\n",
               c == 0 ? bk->name : "float32 blocks (the test's own)", (long long)bad_h, D * (D + 1) / 2, ev_err,
               EV_RTOL, DK, p_err, P_TOL);
        if (c == 0) {
            CHECK(bad_h == 0, "cov_add (outliers, %s): %lld entries of H outside the float64 bound", bk->name, (long long)bad_h);
            CHECK(ev_err <= EV_RTOL, "cov_add (outliers, %s): eigenvalues off by %.3g relative (bound %g)", bk->name, ev_err,
                  EV_RTOL);
            CHECK(p_err <= P_TOL, "cov_add (outliers, %s): top-%d projector off by %.3g (Frobenius; bound %g)", bk->name, DK,
                  p_err, P_TOL);
        } else {
            CHECK(bad_h > 0 && ev_err > EV_RTOL && p_err > P_TOL,
                  "float32 accumulation passes the bounds it must fail (%lld entries of H outside, eigenvalues %.3g, "
                  "projector %.3g): the test cannot catch it", (long long)bad_h, ev_err, p_err);
        }
    }
    bk->free(bk, dH), bk->free(bk, dX), bk->ws_free(bk, ws);
    free(V), free(m), free(z), free(X), free(ref), free(mag), free(f32), free(got), free(acc), free(ev_ref), free(ev),
        free(P_ref), free(P);
}

static void test_cov(void) {
    static const struct {
        int64_t D, cov_rows, pad;
        int64_t rows[3];
    } cs[] = {{1, 1, 0, {3, 0, 1}}, {5, 4, 3, {10, 1, 7}}, {37, 256, 1, {300, 13, 256}}, {64, 7, 0, {50, 49, 0}}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int64_t D = cs[c].D, ld = D + cs[c].pad;
        sp_bk_ws *ws = ws_make(D, cs[c].cov_rows, 1, 0, 0);
        double *H0 = xmalloc(D * D * 8), *ref = xmalloc(D * D * 8), *got = xmalloc(D * D * 8), *mag = xmalloc(D * D * 8);
        for (int64_t i = 0; i < D * D; i++) H0[i] = ref[i] = 2.0 * urand() - 1.0; /* += onto existing values */
        for (int64_t i = 0; i < D * D; i++) mag[i] = 0; /* Σ|xᵢxⱼ|: the scale of a float32 block's rounding */
        double *dH = dfrom(H0, D * D * 8);
        int64_t row0 = 0;
        for (int call = 0; call < 3; call++) {
            int64_t rows = cs[c].rows[call];
            float *X = frand_vec(rows * ld + 1, 2);
            for (int64_t t = 0; t < rows; t++) X[t * ld] += 1.5f; /* uncentered: a mean survives */
            for (int64_t i = 0; i < D; i++)
                for (int64_t j = i; j < D; j++)
                    for (int64_t t = 0; t < rows; t++) {
                        double pr = (double)X[t * ld + i] * (double)X[t * ld + j];
                        ref[i * D + j] += pr;
                        mag[i * D + j] += fabs(pr);
                    }
            float *dX = dfrom(X, (rows * ld + 1) * 4);
            int rc = bk->cov_add(bk, ws, dH, D, dX, rows, ld, row0);
            CHECK(rc == 0, "cov_add D %lld: %d %s", (long long)D, rc, sp_errmsg());
            row0 += rows;
            bk->free(bk, dX);
            free(X);
        }
        hfrom(got, dH, D * D * 8);
        /* The precision rule (backend.h): float64 throughout, within
         * cov_f64_tol of the exact sum (H₀ included). */
        int64_t bad = 0, worst = -1;
        for (int64_t i = 0; i < D; i++)
            for (int64_t j = i; j < D; j++) {
                double err = fabs(got[i * D + j] - ref[i * D + j]);
                if (!(err <= cov_f64_tol(row0, mag[i * D + j], H0[i * D + j])) && bad++ == 0) worst = i * D + j;
            }
        CHECK(bad == 0, "cov_add D %lld cov_rows %lld (upper): %lld entries outside the float64 bound; first [%lld] "
              "got %.17g ref %.17g", (long long)D, (long long)cs[c].cov_rows, (long long)bad, (long long)worst,
              worst >= 0 ? got[worst] : 0.0, worst >= 0 ? ref[worst] : 0.0);
        bk->free(bk, dH), bk->ws_free(bk, ws);
        free(H0), free(ref), free(got), free(mag);
    }
    /* The accumulator is float64: 1e8 + 0.5 is not a float32, and 300 rows of
     * ones in blocks of 4 (each block's sum exact in float32) land on it
     * exactly; a float32 H (spacing 8 at 1e8) or a float32 total cannot. */
    {
        const int64_t D = 3, rows = 300;
        sp_bk_ws *ws = ws_make(D, 4, 1, 0, 0);
        double H0[9] = {0};
        for (int i = 0; i < 3; i++) H0[i * 3 + i] = 1e8 + 0.5;
        double *dH = dfrom(H0, sizeof H0);
        float *X = xmalloc(rows * D * 4);
        for (int64_t i = 0; i < rows * D; i++) X[i] = 1.0f;
        float *dX = dfrom(X, rows * D * 4);
        CHECK(bk->cov_add(bk, ws, dH, D, dX, rows, D, 0) == 0, "cov_add of ones");
        double got[9];
        hfrom(got, dH, sizeof got);
        CHECK(got[0] == 1e8 + 300.5 && got[4] == 1e8 + 300.5 && got[1] == 300.0 && got[5] == 300.0,
              "float64 accumulation: H[0][0] %.17g (want 100000300.5), H[0][1] %.17g (want 300)", got[0], got[1]);
        bk->free(bk, dH), bk->free(bk, dX), bk->ws_free(bk, ws);
        free(X);
    }
    /* a non-finite activation: 65, naming row0 + row and the component */
    const int64_t D = 6, rows = 20;
    sp_bk_ws *ws = ws_make(D, 8, 1, 0, 0);
    float bad[] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++) {
        float *X = frand_vec(rows * D, 1);
        X[13 * D + 4] = bad[b];
        double *dH = dalloc(D * D * 8);
        bk->zero(bk, dH, D * D * 8);
        float *dX = dfrom(X, rows * D * 4);
        sp_err_clear();
        int rc = bk->cov_add(bk, ws, dH, D, dX, rows, D, 1000);
        CHECK(rc == 65, "cov_add with %g: rc %d", (double)bad[b], rc);
        CHECK_MSG("token 1013");
        CHECK_MSG("component 4");
        bk->free(bk, dH), bk->free(bk, dX);
        free(X);
    }
    bk->ws_free(bk, ws);
}

/* V (D, D) orthogonal: Gram–Schmidt (twice) of a random matrix, columns. */
static void random_orthogonal(double *V, int64_t D) {
    for (int64_t i = 0; i < D * D; i++) V[i] = 2.0 * urand() - 1.0;
    for (int64_t j = 0; j < D; j++)
        for (int pass = 0; pass < 2; pass++) {
            for (int64_t p = 0; p < j; p++) {
                double dot = 0;
                for (int64_t i = 0; i < D; i++) dot += V[i * D + j] * V[i * D + p];
                for (int64_t i = 0; i < D; i++) V[i * D + j] -= dot * V[i * D + p];
            }
            double nrm = 0;
            for (int64_t i = 0; i < D; i++) nrm += V[i * D + j] * V[i * D + j];
            nrm = sqrt(nrm);
            for (int64_t i = 0; i < D; i++) V[i * D + j] /= nrm;
        }
}

/* Checks the sign rule on every column of Q: its largest-|.| component, the
 * first one on exact ties, is positive. Returns the number of exact ties. */
static int64_t check_signs(const char *what, const double *Q, int64_t D) {
    int64_t bad = 0, ties = 0;
    for (int64_t j = 0; j < D; j++) {
        int64_t arg = 0;
        for (int64_t i = 1; i < D; i++)
            if (fabs(Q[i * D + j]) > fabs(Q[arg * D + j])) arg = i;
        for (int64_t i = arg + 1; i < D; i++)
            if (fabs(Q[i * D + j]) == fabs(Q[arg * D + j])) ties++;
        if (!(Q[arg * D + j] > 0)) bad++;
    }
    CHECK(bad == 0, "%s: %lld columns break the sign rule", what, (long long)bad);
    return ties;
}

/* H = V·diag(lam)·Vᵀ; eigh must return lam + δ descending, δ = damp·mean(lam),
 * an orthogonal Q reconstructing H + δI, and (distinct lam) the projectors of V. */
static void eigh_case(sp_bk_ws *ws, int64_t D, const double *lam, const double *V, double damp, int poison_lower) {
    double *H = xmalloc(D * D * 8), *Hc = xmalloc(D * D * 8);
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = 0; j < D; j++) {
            double s = 0;
            for (int64_t p = 0; p < D; p++) s += V[i * D + p] * lam[p] * V[j * D + p];
            H[i * D + j] = j < i && poison_lower ? NAN : s; /* only the upper triangle is read */
        }
    memcpy(Hc, H, (size_t)(D * D) * 8);
    double mean = 0, lmax = 0;
    for (int64_t p = 0; p < D; p++) mean += lam[p], lmax = fmax(lmax, fabs(lam[p]));
    mean /= (double)D;
    double delta = damp * mean;
    int64_t *ord = xmalloc(D * 8); /* indices of lam, descending */
    for (int64_t p = 0; p < D; p++) ord[p] = p;
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = a + 1; b < D; b++)
            if (lam[ord[b]] > lam[ord[a]]) {
                int64_t t = ord[a];
                ord[a] = ord[b], ord[b] = t;
            }
    double *ev_ref = xmalloc(D * 8), *Q = xmalloc(D * D * 8), *ev = xmalloc(D * 8), *Hafter = xmalloc(D * D * 8);
    for (int64_t p = 0; p < D; p++) ev_ref[p] = lam[ord[p]] + delta;
    double *dH = dfrom(H, D * D * 8), *dQ = dalloc(D * D * 8), *dev = dalloc(D * 8);
    int rc = bk->eigh(bk, ws, dH, D, damp, dQ, dev);
    char what[96];
    snprintf(what, sizeof what, "eigh D %lld damp %g%s", (long long)D, damp, poison_lower ? " (NaN below the diagonal)" : "");
    CHECK(rc == 0, "%s: rc %d %s", what, rc, sp_errmsg());
    hfrom(Q, dQ, D * D * 8);
    hfrom(ev, dev, D * 8);
    hfrom(Hafter, dH, D * D * 8);
    CHECK(memcmp(Hafter, Hc, (size_t)(D * D) * 8) == 0, "%s: H was modified", what);
    double atol = 1e-11 * lmax * (double)D;
    cmp_f64(what, ev, ev_ref, D, atol, 1e-12);
    for (int64_t p = 0; p + 1 < D; p++) CHECK(ev[p] >= ev[p + 1], "%s: eigenvalues not descending at %lld", what, (long long)p);
    /* orthogonality QᵀQ = I, reconstruction Q·diag(ev)·Qᵀ = H + δI */
    double *G = xmalloc(D * D * 8), *R = xmalloc(D * D * 8), *Gr = xmalloc(D * D * 8), *Rr = xmalloc(D * D * 8);
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = 0; j < D; j++) {
            double g = 0, r = 0;
            for (int64_t p = 0; p < D; p++) {
                g += Q[p * D + i] * Q[p * D + j];
                r += Q[i * D + p] * ev[p] * Q[j * D + p];
            }
            G[i * D + j] = g, Gr[i * D + j] = i == j;
            R[i * D + j] = r;
            Rr[i * D + j] = (j >= i ? Hc[i * D + j] : Hc[j * D + i]) + (i == j ? delta : 0);
        }
    cmp_f64("eigh: QᵀQ = I", G, Gr, D * D, 1e-12 * (double)D, 0);
    cmp_f64("eigh: Q·diag(evals)·Qᵀ = H + δI", R, Rr, D * D, atol, 1e-12);
    /* projectors of each eigenvector against the known basis (distinct spectrum) */
    double *P = xmalloc(D * D * 8), *Pr = xmalloc(D * D * 8);
    for (int64_t p = 0; p < D; p++) {
        for (int64_t i = 0; i < D; i++)
            for (int64_t j = 0; j < D; j++) {
                P[i * D + j] = Q[i * D + p] * Q[j * D + p];
                Pr[i * D + j] = V[i * D + ord[p]] * V[j * D + ord[p]];
            }
        char pw[160];
        snprintf(pw, sizeof pw, "%s: projector of eigenvector %lld", what, (long long)p);
        cmp_f64(pw, P, Pr, D * D, 1e-9, 0);
    }
    check_signs(what, Q, D);
    bk->free(bk, dH), bk->free(bk, dQ), bk->free(bk, dev);
    free(H), free(Hc), free(ord), free(ev_ref), free(Q), free(ev), free(Hafter), free(G), free(R), free(Gr), free(Rr), free(P),
        free(Pr);
}

static void test_eigh(void) {
    const int64_t Dmax = 100;
    sp_bk_ws *ws = ws_make(Dmax, 1, 1, 0, 0);
    static const int64_t Ds[] = {1, 2, 6, 33, 100};
    for (size_t c = 0; c < sizeof Ds / sizeof Ds[0]; c++) {
        int64_t D = Ds[c];
        double *V = xmalloc(D * D * 8), *lam = xmalloc(D * 8);
        random_orthogonal(V, D);
        for (int64_t p = 0; p < D; p++) lam[p] = 0.5 + 0.75 * (double)((p * 7) % D) + (p == 0 ? 40.0 : 0.0); /* distinct */
        eigh_case(ws, D, lam, V, 0.01, c % 2 == 1);
        if (D == 33) eigh_case(ws, D, lam, V, 0.0, 0);
        free(V), free(lam);
    }
    /* a diagonal H: Q is a permutation matrix, and every 1 is +1 by the sign rule */
    {
        const int64_t D = 5;
        double H[25] = {0}, Q[25], ev[5];
        double diag[5] = {3, -0.5, 7, 1, 2}; /* descending: 7 3 2 1 -0.5 */
        int64_t where[5] = {2, 0, 4, 3, 1};
        for (int64_t i = 0; i < D; i++) H[i * D + i] = diag[i];
        double *dH = dfrom(H, sizeof H), *dQ = dalloc(sizeof Q), *dev = dalloc(sizeof ev);
        int rc = bk->eigh(bk, ws, dH, D, 0.0, dQ, dev);
        hfrom(Q, dQ, sizeof Q), hfrom(ev, dev, sizeof ev);
        CHECK(rc == 0, "eigh diagonal: rc %d", rc);
        double Qr[25] = {0};
        for (int64_t j = 0; j < D; j++) Qr[where[j] * D + j] = 1.0;
        cmp_f64("eigh diagonal: Q is the signed permutation", Q, Qr, 25, 1e-14, 0);
        bk->free(bk, dH), bk->free(bk, dQ), bk->free(bk, dev);
    }
    /* exact ties of |component|: the first one is made positive */
    {
        static const double Hs[2][4] = {{2, 1, 1, 2}, {3, -1, -1, 3}};
        for (int c = 0; c < 2; c++) {
            double Q[4], ev[2];
            double *dH = dfrom(Hs[c], 32), *dQ = dalloc(32), *dev = dalloc(16);
            int rc = bk->eigh(bk, ws, dH, 2, 0.0, dQ, dev);
            hfrom(Q, dQ, 32), hfrom(ev, dev, 16);
            CHECK(rc == 0, "eigh 2x2: rc %d", rc);
            int64_t ties = check_signs("eigh 2x2 ties", Q, 2);
            if (is_cpu) CHECK(ties == 2, "eigh 2x2 case %d: expected exact ties (got %lld)", c, (long long)ties);
            for (int j = 0; j < 2; j++) CHECK(Q[j] > 0, "eigh 2x2 case %d: column %d starts negative on a tie", c, j);
            bk->free(bk, dH), bk->free(bk, dQ), bk->free(bk, dev);
        }
    }
    /* bad second moments: 65 */
    {
        const int64_t D = 4;
        double H[16] = {0}, Q[16], ev[4];
        static const struct {
            int64_t i, j;
            double v;
            const char *needle;
        } bad[] = {{0, 0, 0.0, "zero mean diagonal"}, {1, 1, NAN, "non-finite"}, {0, 3, INFINITY, "non-finite"},
                   {2, 3, NAN, "non-finite"}};
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            memset(H, 0, sizeof H);
            if (b > 0)
                for (int64_t i = 0; i < D; i++) H[i * D + i] = 1.0;
            H[bad[b].i * D + bad[b].j] = bad[b].v;
            double *dH = dfrom(H, sizeof H), *dQ = dalloc(sizeof Q), *dev = dalloc(sizeof ev);
            sp_err_clear();
            int rc = bk->eigh(bk, ws, dH, D, 0.01, dQ, dev);
            CHECK(rc == 65, "eigh bad case %zu: rc %d", b, rc);
            CHECK_MSG(bad[b].needle);
            bk->free(bk, dH), bk->free(bk, dQ), bk->free(bk, dev);
        }
    }
    bk->ws_free(bk, ws);
}

static void test_rot(void) {
    static const struct {
        int64_t D, rows, k, blk;
        int gamma;
    } cs[] = {{5, 1, 5, 1, 1}, {5, 10, 3, 4, 0}, {37, 23, 37, 256, 1}, {37, 23, 30, 4, 1}, {64, 300, 1, 256, 0},
              {16, 9, 16, 2, 0}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int64_t D = cs[c].D, rows = cs[c].rows, k = cs[c].k;
        sp_bk_ws *ws = ws_make(D, 1, cs[c].blk, 0, 0);
        double *Q = xmalloc(D * D * 8);
        for (int64_t i = 0; i < D * D; i++) Q[i] = 2.0 * urand() - 1.0; /* any matrix: the ops do not assume orthogonality */
        float *g = frand_vec(D, 2), *W = frand_vec(rows * D, 1), *got = xmalloc(rows * D * 4);
        double *ref = xmalloc(rows * D * 8);
        double *dQ = dfrom(Q, D * D * 8);
        float *dg = dfrom(g, D * 4), *dW = dfrom(W, rows * D * 4);
        /* rot_rows: (W·diag γ)·Q[:, :k] as (rows, k) packed */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < k; j++) {
                double s = 0;
                for (int64_t i = 0; i < D; i++) s += (double)W[r * D + i] * (cs[c].gamma ? (double)g[i] : 1.0) * Q[i * D + j];
                ref[r * k + j] = s;
            }
        bk->rot_rows(bk, ws, dW, rows, D, cs[c].gamma ? dg : NULL, dQ, k);
        hfrom(got, dW, rows * k * 4);
        char what[96];
        snprintf(what, sizeof what, "rot_rows D %lld rows %lld k %lld block %lld gamma %d", (long long)D, (long long)rows,
                 (long long)k, (long long)cs[c].blk, cs[c].gamma);
        cmp_f32(what, got, ref, rows * k, 1e-6 * sqrt((double)D), 1e-6);
        /* rot_cols: W (D, cols) ← Q[:, :k]ᵀ·W as (k, cols), row stride cols */
        int64_t cols = rows;
        float *Wc = frand_vec(D * cols, 1), *gotc = xmalloc(D * cols * 4);
        double *refc = xmalloc(k * cols * 8);
        for (int64_t r = 0; r < k; r++)
            for (int64_t j = 0; j < cols; j++) {
                double s = 0;
                for (int64_t i = 0; i < D; i++) s += Q[i * D + r] * (double)Wc[i * cols + j];
                refc[r * cols + j] = s;
            }
        float *dWc = dfrom(Wc, D * cols * 4);
        bk->rot_cols(bk, ws, dQ, D, k, dWc, cols);
        hfrom(gotc, dWc, D * cols * 4);
        snprintf(what, sizeof what, "rot_cols D %lld cols %lld k %lld block %lld", (long long)D, (long long)cols, (long long)k,
                 (long long)cs[c].blk);
        cmp_f32(what, gotc, refc, k * cols, 1e-6 * sqrt((double)D), 1e-6);
        bk->free(bk, dQ), bk->free(bk, dg), bk->free(bk, dW), bk->free(bk, dWc), bk->ws_free(bk, ws);
        free(Q), free(g), free(W), free(got), free(ref), free(Wc), free(gotc), free(refc);
    }
}

static void test_basis(void) {
    const int64_t D = 23;
    double *A = xmalloc(D * D * 8), *B = xmalloc(D * D * 8);
    for (int64_t i = 0; i < D * D; i++) A[i] = 2.0 * urand() - 1.0, B[i] = 2.0 * urand() - 1.0;
    double *dA = dfrom(A, D * D * 8), *dB = dfrom(B, D * D * 8), *dS = dalloc(D * D * 8);
    float *dC = dalloc(D * D * 4), *C = xmalloc(D * D * 4);
    double *ref = xmalloc(D * D * 8);
    static const int64_t ab[][2] = {{23, 23}, {20, 17}, {1, 23}, {23, 1}};
    for (size_t c = 0; c < 4; c++) {
        int64_t a = ab[c][0], b = ab[c][1];
        for (int64_t i = 0; i < a; i++)
            for (int64_t j = 0; j < b; j++) {
                double s = 0;
                for (int64_t p = 0; p < D; p++) s += A[p * D + i] * B[p * D + j];
                ref[i * b + j] = s;
            }
        bk->basis_product(bk, dA, a, dB, b, D, dS, dC);
        hfrom(C, dC, a * b * 4);
        char what[64];
        snprintf(what, sizeof what, "basis_product a %lld b %lld", (long long)a, (long long)b);
        cmp_f32(what, C, ref, a * b, 1e-6, 1e-6);
    }
    /* basis_f32: exact float32 roundings of Q[:, :k] and its transpose */
    for (int64_t k = 1; k <= D; k += 11) {
        float *dQf = dalloc(D * k * 4), *dQt = dalloc(k * D * 4), *Qf = xmalloc(D * k * 4), *Qt = xmalloc(k * D * 4);
        bk->basis_f32(bk, dA, D, k, dQf, dQt);
        hfrom(Qf, dQf, D * k * 4), hfrom(Qt, dQt, k * D * 4);
        int64_t bad = 0;
        for (int64_t r = 0; r < D; r++)
            for (int64_t i = 0; i < k; i++) bad += Qf[r * k + i] != (float)A[r * D + i] || Qt[i * D + r] != (float)A[r * D + i];
        CHECK(bad == 0, "basis_f32 k %lld: %lld values differ", (long long)k, (long long)bad);
        bk->basis_f32(bk, dA, D, k, NULL, dQt); /* either output may be NULL */
        bk->basis_f32(bk, dA, D, k, dQf, NULL);
        hfrom(Qf, dQf, D * k * 4);
        CHECK(Qf[D * k - 1] == (float)A[(D - 1) * D + k - 1], "basis_f32 with Qt NULL");
        bk->free(bk, dQf), bk->free(bk, dQt);
        free(Qf), free(Qt);
    }
    bk->free(bk, dA), bk->free(bk, dB), bk->free(bk, dS), bk->free(bk, dC);
    free(A), free(B), free(C), free(ref);
}

/* ================= buffers, threads, identity, plan, resolve ================= */

static void test_misc(void) {
    /* alloc, copies, zero */
    const int64_t n = 1000;
    unsigned char *h = xmalloc(n), *back = xmalloc(n);
    for (int64_t i = 0; i < n; i++) h[i] = (unsigned char)(i * 7 + 3);
    void *d = dfrom(h, n);
    hfrom(back, d, n);
    CHECK(memcmp(h, back, (size_t)n) == 0, "to_dev/to_host round trip");
    bk->zero(bk, (char *)d + 100, 50);
    hfrom(back, d, n);
    int zero_ok = 1;
    for (int64_t i = 0; i < n; i++) zero_ok &= back[i] == (i >= 100 && i < 150 ? 0 : h[i]);
    CHECK(zero_ok, "zero cleared exactly its range");
    bk->free(bk, d);
    bk->free(bk, NULL);
    /* sp_bk_buf */
    sp_bk_buf b;
    int64_t dev_bytes = -1, host_bytes = sp_bk_buf_bytes(bk, n, &dev_bytes);
    CHECK(host_bytes == n && dev_bytes == (bk->host_shared ? 0 : n), "buf_bytes %lld/%lld", (long long)host_bytes,
          (long long)dev_bytes);
    CHECK(sp_bk_buf_init(bk, &b, n, "test buf") == 0 && b.bytes == n, "buf_init");
    CHECK(!bk->host_shared || b.dev == b.host, "a shared backend's buffer has one view");
    memcpy(b.host, h, (size_t)n);
    sp_bk_buf_to_dev(bk, &b, 0, n);
    memset(b.host, 0, (size_t)n);
    if (!bk->host_shared) {
        sp_bk_buf_to_host(bk, &b, 10, 20); /* a partial copy back */
        CHECK(memcmp((char *)b.host + 10, h + 10, 20) == 0 && ((char *)b.host)[9] == 0 && ((char *)b.host)[30] == 0,
              "buf_to_host copies exactly [off, off + n)");
    }
    sp_bk_buf_free(bk, &b);
    CHECK(b.host == NULL && b.dev == NULL, "buf_free clears the views");
    sp_bk_buf_free(bk, &b); /* twice is harmless */
    free(h), free(back);

    /* threads and identity */
    char id[512];
    CHECK(bk->set_threads(bk, 3, 64) == 3, "set_threads(3)");
    bk->identity(bk, id, sizeof id);
    CHECK(strncmp(id, bk->name, strlen(bk->name)) == 0 && !strstr(id, "threads="), "identity '%s' (the thread count is journaled, not in it)", id);
    char id1[512];
    CHECK(bk->set_threads(bk, 1, 64) == 1, "set_threads(1)");
    bk->identity(bk, id1, sizeof id1);
    CHECK(strcmp(id, id1) == 0, "identity does not depend on the thread count ('%s' vs '%s')", id, id1);
    char small[8];
    bk->identity(bk, small, sizeof small);
    CHECK(strlen(small) < sizeof small, "identity truncates to its buffer");
    if (is_cpu) {
        CHECK(bk->set_threads(bk, 0, 256) == 1, "cpu default below D 512 is 1 thread");
        CHECK(bk->set_threads(bk, 0, 4096) >= 1, "cpu default at D 4096");
        CHECK(strstr(id, "openblas") && strstr(id, "kernel="), "cpu identity '%s'", id);
    }
    bk->set_threads(bk, 2, 0);

    /* plan_bytes: at least the documented buffers, growing with D; absurd sizes refused */
    sp_bk_plan_in in = {.D = 64, .cov_rows = 256, .rot_block = 256, .T = 300, .n_heads = 8};
    sp_bk_plan p = bk->plan_bytes(bk, &in);
    int64_t need = 64 * 64 * 4 + (2 * 64 * 64 + 2 * 256 * 64) * 8 + 128 * 300 * 4; /* block moment, eigh, rotations, scores */
    CHECK(p.host_bytes + p.device_bytes >= need && p.host_bytes >= 0 && p.device_bytes >= 0, "plan %lld+%lld < %lld",
          (long long)p.host_bytes, (long long)p.device_bytes, (long long)need);
    sp_bk_plan_in in2 = in;
    in2.D = 128;
    sp_bk_plan p2 = bk->plan_bytes(bk, &in2);
    CHECK(p2.host_bytes + p2.device_bytes > p.host_bytes + p.device_bytes, "plan grows with D");
    sp_bk_plan_in huge = {.D = (int64_t)1 << 40, .cov_rows = 256, .rot_block = 256, .T = 2048, .n_heads = 32};
    sp_bk_plan ph = bk->plan_bytes(bk, &huge);
    CHECK(ph.host_bytes == INT64_MAX || ph.device_bytes == INT64_MAX, "absurd plan %lld/%lld", (long long)ph.host_bytes,
          (long long)ph.device_bytes);
    sp_bk_ws *ws = NULL;
    CHECK(bk->ws_init(bk, &huge, &ws) != 0 && ws == NULL, "ws_init refuses absurd sizes");
    sp_bk_plan_in zero = {0};
    CHECK(bk->ws_init(bk, &zero, &ws) == 0 && ws, "ws_init of an empty plan");
    bk->ws_free(bk, ws);
    bk->ws_free(bk, NULL);

    /* the registry and instances */
    CHECK(sp_bk_reg_count() >= 1 && sp_bk_reg_find("cpu") && !sp_bk_reg_find("gpu"), "registry");
    for (int i = 0; i < sp_bk_reg_count(); i++) {
        const sp_bk_reg *e = sp_bk_reg_at(i);
        CHECK(sp_bk_reg_find(e->name) == e && sp_bk_name_known(e->name), "registry entry %s", e->name);
    }
    sp_bk *r = NULL;
    CHECK(sp_bk_open("cpu", &r) == 0 && r && r != bk && strcmp(r->name, "cpu") == 0 && r->host_shared, "open cpu");
    if (r) r->identity(r, id, sizeof id);
    CHECK(r && strstr(id, "precision=fp32"), "the identity names the precision: %s", r ? id : "");
    sp_bk_close(r);
    CHECK(sp_bk_open(NULL, &r) == 0 && r, "open NULL");
    sp_bk_close(r);
    CHECK(sp_bk_open("gpu", &r) == 64 && r == NULL, "open gpu");
    CHECK_MSG("unknown backend 'gpu' (auto, cpu, cuda or onednn)");
    CHECK(sp_bk_open_host("auto", "eval", &r) == 0 && r && r->host_shared, "open_host auto");
    sp_bk_close(r);
    sp_bk_close(NULL);
#ifdef SLICEPIPE_HAVE_CUDA
    char why[256];
    int usable = sp_bk_cuda_usable(why, sizeof why);
    int rc = sp_bk_open("cuda", &r);
    CHECK(usable ? rc == 0 && r && strcmp(r->name, "cuda") == 0 : rc == 64 && !r, "open cuda (usable %d): %d", usable,
          rc);
    sp_bk_close(r);
    CHECK(sp_bk_open("auto", &r) == 0 && r && strcmp(r->name, usable ? "cuda" : "cpu") == 0, "auto prefers a usable cuda");
    sp_bk_close(r);
    CHECK(sp_bk_open_host("cuda", "eval", &r) == 64 && !r, "open_host refuses cuda");
#else
    CHECK(sp_bk_open("cuda", &r) == 64 && r == NULL, "open cuda without the CUDA backend");
    CHECK_MSG("built without it");
    CHECK(sp_bk_open("auto", &r) == 0 && r && strcmp(r->name, "cpu") == 0, "auto is cpu without the CUDA backend");
    sp_bk_close(r);
#endif
}

/* The CPU backend's bits and its thread count (docs/determinism.md).
 *
 * The ops whose parallelism is the backend's own pool (norm, rope, act,
 * attention with its per-head sgemms, basis_f32, nll) give the same bits with 1, 2
 * or 3 threads (parts of different sizes), and attention the same bits
 * whatever its head grouping (a workspace planned for 1 head or for all).
 * Sizes are large enough that every op is split.
 *
 * The ops that run on OpenBLAS's threads (sgemm, cov_add, rot_rows, rot_cols,
 * eigh) may not: OpenBLAS partitions a product by its thread count, and under
 * its Prescott, Haswell and Zen kernels that changes the bits (and dsyevd's
 * under every kernel). For these the thread count is part of a run's identity;
 * here they must give the same bits twice at the same count, and run at the
 * instance's count after a pool loop that called OpenBLAS single-threaded.
 * tests/test_kernels.py runs this under each OpenBLAS kernel the CPU can run. */
static void test_threads_bits(void) {
    if (!is_cpu) return;
    const int64_t T = 300, d = 384, D = 512, nh = 8, hd = 64, qw = nh * hd, F = 1000, half = hd / 2, k = 96;
    float *x0 = frand_vec(T * d, 2), *g = frand_vec(d, 1), *qk0 = frand_vec(T * qw, 1), *cs = frand_vec(T * half, 1),
          *sn = frand_vec(T * half, 1), *gate0 = frand_vec(T * F, 4), *up = frand_vec(T * F, 1),
          *kk = frand_vec(T * qw, 1), *v = frand_vec(T * qw, 1), *W0 = frand_vec(F * D, 1), *X = frand_vec(T * D, 1);
    double *Q = xmalloc(D * D * 8), *Hs = xmalloc(D * D * 8);
    for (int64_t i = 0; i < D * D; i++) Q[i] = 2.0 * urand() - 1.0;
    for (int64_t i = 0; i < D; i++)
        for (int64_t j2 = i; j2 < D; j2++) Hs[i * D + j2] = (i == j2 ? 4.0 : 0.0) + 0.01 * (2.0 * urand() - 1.0);
    int32_t *tok = xmalloc(T * 4);
    for (int64_t t = 0; t < T; t++) tok[t] = (int32_t)(urand() * (double)F);
    enum { POOL = 7, BLAS = 6, OUTS = POOL + BLAS };
    void *out[4][OUTS]; /* [run][op]: runs at 1, 2, 3 threads, and 3 again */
    const int64_t bytes[OUTS] = {T * d * 4,  T * qw * 4, T * F * 4, T * qw * 4, T * qw * 4, D * k * 4, 8,
                                 T * F * 4,  D * D * 8,  F * d * 4, D * 96 * 4, D * D * 8,  D * 8};
    static const int threads[4] = {1, 2, 3, 3};
    for (int r = 0; r < 4; r++) {
        bk->set_threads(bk, threads[r], 0);
        for (int o = 0; o < OUTS; o++) out[r][o] = xmalloc(bytes[o]);
        float *x = out[r][0], *qk = out[r][1], *gate = out[r][2];
        memcpy(x, x0, (size_t)bytes[0]);
        bk->norm(bk, SP_BK_NORM_RMS, g, NULL, d, D, 1e-5, x, T);
        memcpy(qk, qk0, (size_t)bytes[1]);
        bk->rope(bk, SP_BK_ROPE_HALF, qk, T, qw, nh, hd, hd, cs, sn);
        memcpy(gate, gate0, (size_t)bytes[2]);
        bk->act(bk, SP_BK_ACT_SILU_GLU, gate, up, T * F);
        sp_bk_ws *ws_all = ws_make(D, 64, 64, T, nh), *ws_one = ws_make(D, 64, 64, T, 1);
        bk->attention(bk, ws_all, qk, kk, v, T, nh, nh / 2, hd, 0.125f, 0, out[r][3]);
        bk->attention(bk, ws_one, qk, kk, v, T, nh, nh / 2, hd, 0.125f, 0, out[r][4]);
        bk->basis_f32(bk, Q, D, k, out[r][5], NULL);
        *(double *)out[r][6] = bk->nll(bk, gate0, T, F, tok, 0.0); /* logits (T, F): rows over the pool */
        /* OpenBLAS-threaded */
        bk->sgemm(bk, 0, 1, T, F, D, 1.0f, X, D, W0, D, 0.0f, out[r][7], F);
        CHECK(openblas_get_num_threads() == threads[r], "OpenBLAS threads in sgemm after attention: %d, set %d",
              openblas_get_num_threads(), threads[r]);
        double *H = out[r][8];
        memset(H, 0, (size_t)bytes[8]);
        CHECK(bk->cov_add(bk, ws_all, H, D, X, T, D, 0) == 0, "cov_add");
        float *W = xmalloc(F * D * 4);
        memcpy(W, W0, (size_t)(F * D * 4));
        bk->rot_rows(bk, ws_all, W, F, D, NULL, Q, d);
        memcpy(out[r][9], W, (size_t)bytes[9]);
        memcpy(W, W0, (size_t)(D * 96 * 4));
        bk->rot_cols(bk, ws_all, Q, D, D, W, 96);
        memcpy(out[r][10], W, (size_t)bytes[10]);
        CHECK(bk->eigh(bk, ws_all, Hs, D, 0.01, out[r][11], out[r][12]) == 0, "eigh");
        free(W);
        bk->ws_free(bk, ws_all), bk->ws_free(bk, ws_one);
    }
    static const char *names[OUTS] = {"norm",      "rope", "act",     "attention", "attention (1 head per group)",
                                      "basis_f32", "nll",  "sgemm",   "cov_add",   "rot_rows",
                                      "rot_cols",  "eigh (vectors)", "eigh (values)"};
    for (int o = 0; o < POOL; o++)
        for (int r = 1; r < 3; r++)
            CHECK(memcmp(out[0][o], out[r][o], (size_t)bytes[o]) == 0, "%s: %d threads differ from 1 thread", names[o],
                  threads[r]);
    for (int o = POOL; o < OUTS; o++)
        CHECK(memcmp(out[2][o], out[3][o], (size_t)bytes[o]) == 0, "%s: two runs at 3 threads differ", names[o]);
    CHECK(memcmp(out[0][3], out[0][4], (size_t)bytes[3]) == 0, "attention: head grouping changes the bits");
    /* Instances are independent: another one at 1 thread between two calls
     * leaves this one's 3-thread sgemm bits as they were (OpenBLAS's count is
     * per process; each instance sets its own before it runs). */
    sp_bk *other;
    CHECK(sp_bk_cpu_open(&other) == 0, "a second cpu instance");
    other->set_threads(other, 1, 0);
    bk->set_threads(bk, 3, 0);
    other->sgemm(other, 0, 1, T, F, D, 1.0f, X, D, W0, D, 0.0f, out[0][7], F);
    float *again = xmalloc(bytes[7]);
    bk->sgemm(bk, 0, 1, T, F, D, 1.0f, X, D, W0, D, 0.0f, again, F);
    CHECK(memcmp(again, out[3][7], (size_t)bytes[7]) == 0, "sgemm at 3 threads after another instance ran at 1");
    free(again);
    sp_bk_close(other);
    for (int r = 0; r < 4; r++)
        for (int o = 0; o < OUTS; o++) free(out[r][o]);
    free(x0), free(g), free(qk0), free(cs), free(sn), free(gate0), free(up), free(kk), free(v), free(W0), free(X),
        free(Q), free(Hs), free(tok);
    bk->set_threads(bk, 2, 0);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_backend_ops cpu|cuda\n");
        return 64;
    }
    if (strcmp(argv[1], "cpu") == 0) {
        if (sp_bk_cpu_open(&bk)) {
            fprintf(stderr, "test_backend_ops: %s\n", sp_errmsg());
            return 70;
        }
        is_cpu = 1;
    } else if (strcmp(argv[1], "cuda") == 0) {
#ifdef SLICEPIPE_HAVE_CUDA
        char why[256] = "";
        if (!sp_bk_cuda_usable(why, sizeof why)) {
            fprintf(stderr, "test_backend_ops: SKIP: no usable CUDA device (%s)\n", why);
            return 77;
        }
        if (sp_bk_cuda_open(&bk)) {
            fprintf(stderr, "test_backend_ops: %s\n", sp_errmsg());
            return 70;
        }
#else
        fprintf(stderr, "test_backend_ops: SKIP: this build has no CUDA backend\n");
        return 77;
#endif
    } else {
        fprintf(stderr, "test_backend_ops: unknown backend '%s' (cpu or cuda)\n", argv[1]);
        return 64;
    }
    bk->set_threads(bk, 2, 0);
    test_sgemm();
    test_add();
    test_geadd();
    test_norm();
    test_rope();
    test_attention();
    test_attention_cached();
    test_act();
    test_nll();
    test_cov();
    test_cov_wide();
    test_cov_outliers();
    test_eigh();
    test_rot();
    test_basis();
    test_misc();
    test_threads_bits();
    char id[512];
    bk->identity(bk, id, sizeof id);
    const char *name = argv[1];
    sp_bk_close(bk);
    if (g_fail) {
        fprintf(stderr, "test_backend_ops %s: %d check(s) failed [%s]\n", name, g_fail, id);
        return 1;
    }
    printf("test_backend_ops %s: all ops match the float64 references [%s]\n", name, id);
    return 0;
}
