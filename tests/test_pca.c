/* tests/test_pca.c — the PCA of docs/algorithm.md §3 and the rotations, on the CPU
 * backend's ops (cov_add, eigh, rot_rows, rot_cols, basis_product):
 *
 *   - an exact end-to-end PCA: activations made of scaled Hadamard rows have
 *     H = Σ xᵀx = V·diag(λ)·Vᵀ exactly (integers), so eigh(H + δI) must give
 *     λ + 0.01·mean(λ) descending to 1e-12 relative (0.0101 is off by 1e-4),
 *     and the projectors of V's columns; uncentered (the all-ones direction
 *     keeps its energy);
 *   - the sign rule (largest-|.| component positive, the first on exact
 *     ties), H unchanged, zero mean diagonal → 65, NaN → 65 naming the token;
 *   - rot_rows / rot_cols / basis_product against float64 references, with
 *     the γ fusion and k < D, and the invariances SliceGPT relies on.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "test_util.h"

static sp_bk *bk; /* the CPU backend: host memory, pointers are used directly */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double urand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static void *xcalloc(int64_t n, int64_t sz) {
    void *p = calloc((size_t)(n > 0 ? n : 1), (size_t)sz);
    if (!p) exit(70);
    return p;
}

static int close_to(double got, double ref, double atol, double rtol) { return fabs(got - ref) <= atol + rtol * fabs(ref); }

/* Max |got − ref| over n values, for messages. */
static double max_err_f(const float *got, const double *ref, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)got[i] - ref[i]));
    return m;
}

static sp_bk_ws *ws_make(int64_t D, int64_t cov_rows, int64_t rot_block) {
    sp_bk_plan_in in = {.D = D, .cov_rows = cov_rows, .rot_block = rot_block, .T = 0, .n_heads = 0};
    sp_bk_ws *ws = NULL;
    if (bk->ws_init(bk, &in, &ws)) {
        fprintf(stderr, "ws_init: %s\n", sp_errmsg());
        exit(1);
    }
    return ws;
}

/* Sylvester Hadamard matrix of order D (a power of 2): entries ±1. */
static int hadamard(int64_t i, int64_t j) { return __builtin_popcountll((unsigned long long)(i & j)) % 2 ? -1 : 1; }

/* ---- the PCA, end to end, with an exactly known spectrum ---- */
static void test_pca_exact(void) {
    const int64_t D = 16, ld = D + 3;
    /* token p·16 + r (r < 2·(p+1)) is s_p·h_p with s_p = p + 1: H = Σ_p 2(p+1)·s_p²·h_p·h_pᵀ,
     * eigenvalue of h_p/4 is λ_p = 2(p+1)·(p+1)²·16 = 32(p+1)³ — all distinct. Rows are fed
     * in a shuffled order over several calls; the sums are integers, exact in float64. */
    int64_t n = 0;
    for (int64_t p = 0; p < D; p++) n += 2 * (p + 1);
    float *X = xcalloc(n * ld, 4);
    int64_t *perm = xcalloc(n, 8), t = 0;
    for (int64_t p = 0; p < D; p++)
        for (int64_t r = 0; r < 2 * (p + 1); r++) perm[t++] = p;
    for (int64_t i = n - 1; i > 0; i--) { /* shuffle */
        int64_t j = (int64_t)(urand() * (double)(i + 1)), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < D; c++) X[i * ld + c] = (float)((perm[i] + 1) * hadamard(perm[i], c));
    for (int64_t i = 0; i < n; i++) X[i * ld + D] = NAN; /* the row padding is never read */

    sp_bk_ws *ws = ws_make(D, 7, 4);
    double *H = xcalloc(D * D, 8);
    int64_t done = 0;
    static const int64_t calls[] = {1, 50, 13, 0, 1000};
    for (size_t c = 0; c < sizeof calls / sizeof calls[0] && done < n; c++) {
        int64_t rows = calls[c] < n - done ? calls[c] : n - done;
        int rc = bk->cov_add(bk, ws, H, D, X + done * ld, rows, ld, done);
        CHECK(rc == 0, "cov_add: %d %s", rc, sp_errmsg());
        done += rows;
    }
    CHECK(done == n, "fed every token");
    /* the second moment itself: uncentered, exact */
    int64_t wrong = 0;
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = i; j < D; j++) {
            double ref = 0;
            for (int64_t p = 0; p < D; p++) ref += 2.0 * (p + 1) * (double)((p + 1) * (p + 1)) * hadamard(p, i) * hadamard(p, j);
            wrong += H[i * D + j] != ref;
        }
    CHECK(wrong == 0, "H = Σ xᵀx exactly, uncentered: %lld entries differ", (long long)wrong);

    double *Hc = xcalloc(D * D, 8), *Q = xcalloc(D * D, 8), *ev = xcalloc(D, 8);
    memcpy(Hc, H, (size_t)(D * D) * 8);
    int rc = bk->eigh(bk, ws, H, D, 0.01, Q, ev);
    CHECK(rc == 0, "eigh: %d %s", rc, sp_errmsg());
    CHECK(memcmp(H, Hc, (size_t)(D * D) * 8) == 0, "eigh left H unchanged");
    double mean = 0;
    for (int64_t p = 0; p < D; p++) mean += 32.0 * pow((double)(p + 1), 3);
    mean /= (double)D;
    double delta = 0.01 * mean;
    for (int64_t j = 0; j < D; j++) {
        int64_t p = D - 1 - j; /* descending: the largest s first */
        double lam = 32.0 * pow((double)(p + 1), 3);
        CHECK(close_to(ev[j], lam + delta, 0, 1e-12), "eigenvalue %lld: %.17g, expected λ + 0.01·mean = %.17g (λ %.17g)",
              (long long)j, ev[j], lam + delta, lam);
        if (j + 1 < D) CHECK(ev[j] > ev[j + 1], "eigenvalues descend at %lld", (long long)j);
        /* eigenvector j spans h_p: its projector is h_p·h_pᵀ/D */
        double perr = 0;
        for (int64_t a = 0; a < D; a++)
            for (int64_t b = 0; b < D; b++)
                perr = fmax(perr, fabs(Q[a * D + j] * Q[b * D + j] - hadamard(p, a) * hadamard(p, b) / (double)D));
        CHECK(perr < 1e-12, "projector of eigenvector %lld off by %.3g", (long long)j, perr);
    }
    int64_t bad_sign = 0;
    for (int64_t j = 0; j < D; j++) {
        int64_t arg = 0;
        for (int64_t i = 1; i < D; i++)
            if (fabs(Q[i * D + j]) > fabs(Q[arg * D + j])) arg = i;
        bad_sign += !(Q[arg * D + j] > 0);
    }
    CHECK(bad_sign == 0, "%lld eigenvectors break the sign rule", (long long)bad_sign);
    /* with damping 0 the spectrum is λ itself: δ is exactly damp·mean(diag H) */
    rc = bk->eigh(bk, ws, H, D, 0.0, Q, ev);
    CHECK(rc == 0 && close_to(ev[0], 32.0 * pow((double)D, 3), 0, 1e-12) &&
              close_to(ev[D - 1], 32.0, 0, 1e-12),
          "undamped extremes %.17g %.17g", ev[0], ev[D - 1]);
    bk->ws_free(bk, ws);
    free(X), free(perm), free(H), free(Hc), free(Q), free(ev);
}

/* ---- damping on a random spectrum; sign rule ---- */
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
            for (int64_t i = 0; i < D; i++) V[i * D + j] /= sqrt(nrm);
        }
}

static void test_damping_and_signs(void) {
    const int64_t D = 40;
    sp_bk_ws *ws = ws_make(D, 1, 1);
    double *V = xcalloc(D * D, 8), *H = xcalloc(D * D, 8), *Q = xcalloc(D * D, 8), *ev = xcalloc(D, 8), lam[40];
    random_orthogonal(V, D);
    double mean = 0;
    for (int64_t p = 0; p < D; p++) mean += (lam[p] = 0.001 + (double)((p * 17) % D) * 0.25); /* distinct, one tiny */
    mean /= (double)D;
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = i; j < D; j++) {
            double s = 0;
            for (int64_t p = 0; p < D; p++) s += V[i * D + p] * lam[p] * V[j * D + p];
            H[i * D + j] = s; /* the lower triangle stays 0: only the upper one is read */
        }
    int rc = bk->eigh(bk, ws, H, D, 0.01, Q, ev);
    CHECK(rc == 0, "eigh: %d", rc);
    /* ascending λ are (p·17 mod D)·0.25 + 0.001 for p, i.e. every k·0.25 + 0.001 */
    for (int64_t j = 0; j < D; j++) {
        double want = 0.001 + (double)(D - 1 - j) * 0.25 + 0.01 * mean;
        CHECK(close_to(ev[j], want, 1e-12, 1e-12), "eigenvalue %lld: %.17g, expected %.17g (0.0101 would give %.17g)",
              (long long)j, ev[j], want, want + 0.0001 * mean);
    }
    /* sign rule on every column; a wrong rule fails about half of them */
    int64_t bad = 0;
    for (int64_t j = 0; j < D; j++) {
        int64_t arg = 0;
        for (int64_t i = 1; i < D; i++)
            if (fabs(Q[i * D + j]) > fabs(Q[arg * D + j])) arg = i;
        bad += !(Q[arg * D + j] > 0);
    }
    CHECK(bad == 0, "%lld columns have a negative largest component", (long long)bad);
    /* exact ties: [[2, 1], [1, 2]] has eigenvectors (1, ±1)/√2; the first component is made positive */
    double H2[4] = {2, 1, 1, 2}, Q2[4], e2[2];
    rc = bk->eigh(bk, ws, H2, 2, 0.0, Q2, e2);
    CHECK(rc == 0 && close_to(e2[0], 3, 0, 1e-14) && close_to(e2[1], 1, 0, 1e-14), "2x2 spectrum %g %g", e2[0], e2[1]);
    CHECK(fabs(Q2[0]) == fabs(Q2[2]) && fabs(Q2[1]) == fabs(Q2[3]), "2x2: the components tie exactly");
    CHECK(Q2[0] > 0 && Q2[1] > 0, "2x2: on a tie the FIRST component is positive (%g, %g)", Q2[0], Q2[1]);
    CHECK(Q2[2] > 0, "2x2: eigenvector of 3 is (1, 1)/√2, got (%g, %g)", Q2[0], Q2[2]);
    CHECK(Q2[3] < 0, "2x2: eigenvector of 1 is (1, -1)/√2, got (%g, %g)", Q2[1], Q2[3]);
    bk->ws_free(bk, ws);
    free(V), free(H), free(Q), free(ev);
}

/* ---- bad second moments and activations ---- */
static void test_bad(void) {
    const int64_t D = 8;
    sp_bk_ws *ws = ws_make(D, 4, 1);
    double *H = xcalloc(D * D, 8), *Q = xcalloc(D * D, 8), *ev = xcalloc(D, 8);
    /* zero activations: zero mean diagonal → 65 */
    float *X = xcalloc(10 * D, 4);
    CHECK(bk->cov_add(bk, ws, H, D, X, 10, D, 0) == 0, "cov_add of zeros");
    sp_err_clear();
    CHECK(bk->eigh(bk, ws, H, D, 0.01, Q, ev) == 65, "zero mean diagonal is 65");
    CHECK_MSG("zero mean diagonal");
    /* a NaN activation: 65, naming the token (row0 + row) and component */
    for (int64_t i = 0; i < 10 * D; i++) X[i] = (float)(i % 5) - 2.0f;
    X[6 * D + 5] = NAN;
    sp_err_clear();
    CHECK(bk->cov_add(bk, ws, H, D, X, 10, D, 4096) == 65, "NaN activation is 65");
    CHECK_MSG("token 4102");
    CHECK_MSG("component 5");
    X[6 * D + 5] = -INFINITY;
    sp_err_clear();
    CHECK(bk->cov_add(bk, ws, H, D, X, 10, D, 0) == 65, "-Inf activation is 65");
    CHECK_MSG("token 6,");
    /* a NaN in H: 65 */
    memset(H, 0, (size_t)(D * D) * 8);
    for (int64_t i = 0; i < D; i++) H[i * D + i] = 1;
    H[2 * D + 6] = NAN;
    sp_err_clear();
    CHECK(bk->eigh(bk, ws, H, D, 0.01, Q, ev) == 65, "NaN in H is 65");
    CHECK_MSG("non-finite");
    bk->ws_free(bk, ws);
    free(H), free(Q), free(ev), free(X);
}

/* ---- rotations ---- */
static void test_rotations(void) {
    const int64_t D = 24, rows = 11, cols = 9;
    sp_bk_ws *ws = ws_make(D, 1, 4); /* blocks of 4: 11 rows and 9 columns leave partial blocks */
    double *Q = xcalloc(D * D, 8);
    random_orthogonal(Q, D);
    float *g = xcalloc(D, 4), *W0 = xcalloc(rows * D, 4), *W = xcalloc(rows * D, 4);
    for (int64_t i = 0; i < D; i++) g[i] = (float)(0.5 + urand());
    for (int64_t i = 0; i < rows * D; i++) W0[i] = (float)(2.0 * urand() - 1.0);
    double *ref = xcalloc(rows * D, 8);
    static const int64_t ks[] = {24, 17, 1};
    for (size_t c = 0; c < 3; c++) {
        int64_t k = ks[c];
        for (int gm = 0; gm < 2; gm++) {
            /* rot_rows: (W·diag γ)·Q[:, :k], packed (rows, k) */
            memcpy(W, W0, (size_t)(rows * D) * 4);
            bk->rot_rows(bk, ws, W, rows, D, gm ? g : NULL, Q, k);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < k; j++) {
                    double s = 0;
                    for (int64_t i = 0; i < D; i++) s += (double)W0[r * D + i] * (gm ? (double)g[i] : 1.0) * Q[i * D + j];
                    ref[r * k + j] = s;
                }
            double e = max_err_f(W, ref, rows * k);
            CHECK(e < 1e-6, "rot_rows k %lld gamma %d: max error %.3g", (long long)k, gm, e);
        }
    }
    /* invariance: a reader rotated with k = D reads the rotated input: (x⊙γ)·Wᵀ = (x·Q)·(rot W)ᵀ */
    memcpy(W, W0, (size_t)(rows * D) * 4);
    bk->rot_rows(bk, ws, W, rows, D, g, Q, D);
    double worst = 0;
    for (int trial = 0; trial < 3; trial++) {
        double x[24], xq[24];
        for (int64_t i = 0; i < D; i++) x[i] = 2.0 * urand() - 1.0;
        for (int64_t j = 0; j < D; j++) {
            xq[j] = 0;
            for (int64_t i = 0; i < D; i++) xq[j] += x[i] * Q[i * D + j];
        }
        for (int64_t r = 0; r < rows; r++) {
            double y = 0, yr = 0;
            for (int64_t i = 0; i < D; i++) y += x[i] * (double)g[i] * (double)W0[r * D + i], yr += xq[i] * (double)W[r * D + i];
            worst = fmax(worst, fabs(y - yr));
        }
    }
    CHECK(worst < 1e-5, "γ fusion and rotation keep a reader's output: error %.3g", worst);

    /* rot_cols: Q[:, :k]ᵀ·W as (k, cols), row stride cols */
    float *C0 = xcalloc(D * cols, 4), *C = xcalloc(D * cols, 4);
    for (int64_t i = 0; i < D * cols; i++) C0[i] = (float)(2.0 * urand() - 1.0);
    for (size_t c = 0; c < 3; c++) {
        int64_t k = ks[c];
        memcpy(C, C0, (size_t)(D * cols) * 4);
        bk->rot_cols(bk, ws, Q, D, k, C, cols);
        for (int64_t r = 0; r < k; r++)
            for (int64_t j = 0; j < cols; j++) {
                double s = 0;
                for (int64_t i = 0; i < D; i++) s += Q[i * D + r] * (double)C0[i * cols + j];
                ref[r * cols + j] = s;
            }
        double e = max_err_f(C, ref, k * cols);
        CHECK(e < 1e-6, "rot_cols k %lld: max error %.3g", (long long)k, e);
    }
    /* a writer rotated with k = D and rotated back is unchanged: Q·(QᵀW) = W */
    memcpy(C, C0, (size_t)(D * cols) * 4);
    bk->rot_cols(bk, ws, Q, D, D, C, cols);
    worst = 0;
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = 0; j < cols; j++) {
            double s = 0;
            for (int64_t r = 0; r < D; r++) s += Q[i * D + r] * (double)C[r * cols + j];
            worst = fmax(worst, fabs(s - (double)C0[i * cols + j]));
        }
    CHECK(worst < 1e-5, "Q·rot_cols(W) = W: error %.3g", worst);

    /* basis_product: A[:, :a]ᵀ·B[:, :b]; with A = B orthogonal it is the identity's corner */
    double *B = xcalloc(D * D, 8), *scratch = xcalloc(D * D, 8);
    random_orthogonal(B, D);
    float *S = xcalloc(D * D, 4);
    static const int64_t ab[][2] = {{24, 24}, {17, 20}, {20, 17}, {1, 5}};
    for (size_t c = 0; c < 4; c++) {
        int64_t a = ab[c][0], b = ab[c][1];
        bk->basis_product(bk, Q, a, B, b, D, scratch, S);
        double e = 0, ei = 0;
        for (int64_t i = 0; i < a; i++)
            for (int64_t j = 0; j < b; j++) {
                double s = 0;
                for (int64_t p = 0; p < D; p++) s += Q[p * D + i] * B[p * D + j];
                e = fmax(e, fabs((double)S[i * b + j] - s));
            }
        CHECK(e < 1e-6, "basis_product a %lld b %lld: max error %.3g", (long long)a, (long long)b, e);
        bk->basis_product(bk, Q, a, Q, b, D, scratch, S);
        for (int64_t i = 0; i < a; i++)
            for (int64_t j = 0; j < b; j++) ei = fmax(ei, fabs((double)S[i * b + j] - (i == j)));
        CHECK(ei < 1e-6, "basis_product(Q, Q) is I's (%lld, %lld) corner: error %.3g", (long long)a, (long long)b, ei);
    }
    bk->ws_free(bk, ws);
    free(Q), free(g), free(W0), free(W), free(ref), free(C0), free(C), free(B), free(scratch), free(S);
}

int main(void) {
    if (sp_bk_cpu_open(&bk)) {
        fprintf(stderr, "test_pca: %s\n", sp_errmsg());
        return 70;
    }
    bk->set_threads(bk, 1, 0);
    test_pca_exact();
    test_damping_and_signs();
    test_bad();
    test_rotations();
    sp_bk_close(bk);
    if (g_fail) {
        fprintf(stderr, "test_pca: %d check(s) failed\n", g_fail);
        return 1;
    }
    printf("test_pca: PCA and rotations OK\n");
    return 0;
}
