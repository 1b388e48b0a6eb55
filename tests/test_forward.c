/* tests/test_forward.c — unit tests of the layer forward (pipeline/model/layer.c
 * over the CPU backend).
 *
 * Hand-computed spot checks pin each convention (RMSN over the original D,
 * rotate-half RoPE and its frequencies, 1/sqrt(head_dim), the causal mask, the
 * GQA head mapping, SwiGLU, shortcuts, the head's NLL). A naive float64
 * reference of the whole layer, written as plain loops, then checks random
 * sliced GQA layers over windows that cross the code's row-block boundaries.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "backend.h"
#include "layer.h"

static int g_fail, g_checks;
static sp_bk *cpu; /* the CPU backend's instance */

#define CHECK_NEAR(got, want, tol, what)                                                                         \
    do {                                                                                                         \
        double g_ = (got), w_ = (want);                                                                          \
        g_checks++;                                                                                              \
        if (!(fabs(g_ - w_) <= (tol))) {                                                                         \
            fprintf(stderr, "FAIL %s:%d %s: got %.9g want %.9g (tol %g)\n", __FILE__, __LINE__, what, g_, w_,    \
                    (double)(tol));                                                                              \
            g_fail++;                                                                                            \
        }                                                                                                        \
    } while (0)

static sp_dims dims_make(int64_t D, int64_t nh, int64_t nkv, int64_t hd, int64_t ffn, int64_t vocab, double eps) {
    sp_dims d;
    memset(&d, 0, sizeof d);
    d.D = D;
    d.n_heads = nh;
    d.n_kv_heads = nkv;
    d.head_dim = hd;
    d.ffn = ffn;
    d.vocab = vocab;
    d.eps = eps;
    d.rope_theta = 10000.0;
    d.rot_dim = hd;
    d.act = SP_BK_ACT_SILU_GLU;
    return d;
}

static const sp_arch *llama(void) {
    const sp_arch *a = NULL;
    if (sp_arch_find("llama", "test", &a)) exit(1);
    return a;
}

static sp_layer_scratch *scratch(const sp_dims *d, int64_t T, int64_t w) {
    sp_layer_scratch *s = NULL;
    if (sp_layer_scratch_init(cpu, llama(), d, T, w, &s)) {
        fprintf(stderr, "scratch init: %s\n", sp_errmsg());
        exit(1);
    }
    return s;
}

/* ---------------------------------------------------------------- RMSN */
static void test_rmsn(void) {
    /* d = 2 < D = 8: divide by sum(x²)/8 = 25/8, not by 25/2. */
    float x[4] = {3, 4, 0, 2};
    float g[2] = {2.0f, 0.5f};
    cpu->norm(cpu, SP_BK_NORM_RMS, g, NULL, 2, 8, 0.0, x, 2);
    double r0 = sqrt(25.0 / 8.0), r1 = sqrt(4.0 / 8.0);
    CHECK_NEAR(x[0], 3 / r0 * 2.0, 1e-6, "rmsn row0[0] over D");
    CHECK_NEAR(x[1], 4 / r0 * 0.5, 1e-6, "rmsn row0[1] over D");
    CHECK_NEAR(x[2], 0.0, 0, "rmsn row1[0]");
    CHECK_NEAR(x[3], 2 / r1 * 0.5, 1e-6, "rmsn row1[1] (per-row scale)");
    float y[3] = {1, 1, 1};
    cpu->norm(cpu, SP_BK_NORM_RMS, NULL, NULL, 3, 3, 1.0, y, 1); /* eps inside the sqrt: 1/sqrt(1+1) */
    CHECK_NEAR(y[0], 1 / sqrt(2.0), 1e-6, "rmsn eps");
}

/* ---------------------------------------------------------------- attention, by hand
 * D = head_dim = 4, one head, Wq = Wk = Wv = Wo = I, no norm γ, eps 0.
 * Row 0 = e_a, row 1 = e_b; RMSN scales a unit row by 2 (rms over 4 = 1/2).
 * q1 = RoPE(2 e_b, pos 1), k0 = 2 e_a, k1 = RoPE(2 e_b, 1); scores /sqrt(4).
 * h1 = x1 + p0·(2 e_a) + p1·(2 e_b), so h1[a] = 2 p0. */
static double attn_p0(int a, int b, const sp_dims *dm) {
    static const float I4[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    sp_layer_w w;
    memset(&w, 0, sizeof w);
    w.d_in = w.d_mid = w.d_out = 4;
    w.slot[SP_SLOT_Q] = w.slot[SP_SLOT_K] = w.slot[SP_SLOT_V] = w.slot[SP_SLOT_O] = I4;
    float x[8] = {0}, h[8];
    x[a] = 1;
    x[4 + b] = 1;
    sp_layer_scratch *s = scratch(dm, 2, 4);
    sp_layer_attn(s, &w, x, 2, h);
    sp_layer_scratch_free(s);
    CHECK_NEAR(h[a], 3.0, 1e-6, "row 0 attends only to itself"); /* x0 + 2 e_a */
    return h[4 + a] / 2.0;
}

static double expect_p0(double s10, double s11) { return 1.0 / (1.0 + exp(s11 - s10)); }

static void test_rope_by_hand(void) {
    sp_dims dm = dims_make(4, 1, 1, 4, 1, 1, 0.0);
    /* pair (0, 2), inv_freq[0] = 1: q1 = [-2 sin 1, 0, 2 cos 1, 0] -> s10 = -4 sin(1)/2 */
    CHECK_NEAR(attn_p0(0, 2, &dm), expect_p0(-2 * sin(1.0), 2.0), 1e-6, "rope pair (0,2) at pos 1");
    /* pair (1, 3), inv_freq[1] = 10000^(-2/4) = 0.01 */
    CHECK_NEAR(attn_p0(1, 3, &dm), expect_p0(-2 * sin(0.01), 2.0), 1e-6, "rope pair (1,3) at pos 1");
    /* the second half rotates the other way: e_2 at pos 1 -> [.., 2cos1] and k0 = e_0 gets +sin */
    CHECK_NEAR(attn_p0(2, 0, &dm), expect_p0(2 * sin(1.0), 2.0), 1e-6, "rope second half sign");
    /* llama3 scaling, old ctx 1000, lo 1, hi 4, factor 8: i=0 (wavelen 2π < 250) kept,
     * i=1 (wavelen 200π, medium) interpolated. */
    dm.rope_llama3 = 1;
    dm.rope_factor = 8;
    dm.rope_low_freq_factor = 1;
    dm.rope_high_freq_factor = 4;
    dm.rope_original_max_pos = 1000;
    double wl = 2 * M_PI / 0.01, sm = (1000.0 / wl - 1.0) / 3.0, f1 = (1 - sm) * 0.01 / 8 + sm * 0.01;
    CHECK_NEAR(attn_p0(0, 2, &dm), expect_p0(-2 * sin(1.0), 2.0), 1e-6, "llama3 high freq kept");
    CHECK_NEAR(attn_p0(1, 3, &dm), expect_p0(-2 * sin(f1), 2.0), 1e-6, "llama3 medium freq smoothed");
    dm.rope_original_max_pos = 100; /* now 200π > 100: low frequency, divided by factor */
    CHECK_NEAR(attn_p0(1, 3, &dm), expect_p0(-2 * sin(0.01 / 8), 2.0), 1e-6, "llama3 low freq / factor");
}

/* GQA with T = 1: softmax is 1, so the context of query head h is v of its kv
 * head. 4 query heads, 2 kv heads, head_dim 2: heads 0,1 -> kv 0; 2,3 -> kv 1.
 * Wq = Wk = 0, Wv = I (4x4), Wo = I (8x8 rows over the 8 context columns) with
 * d_mid = 8 via a shortcut S (4x8) = 0. */
static void test_gqa(void) {
    sp_dims dm = dims_make(4, 4, 2, 2, 1, 1, 0.0);
    float zq[8 * 4] = {0}, zk[4 * 4] = {0}, I4[16] = {0}, I8[64] = {0}, S[4 * 8] = {0};
    for (int i = 0; i < 4; i++) I4[i * 4 + i] = 1;
    for (int i = 0; i < 8; i++) I8[i * 8 + i] = 1;
    sp_layer_w w;
    memset(&w, 0, sizeof w);
    w.d_in = 4;
    w.d_mid = w.d_out = 8;
    w.slot[SP_SLOT_Q] = zq;
    w.slot[SP_SLOT_K] = zk;
    w.slot[SP_SLOT_V] = I4;
    w.slot[SP_SLOT_O] = I8;
    w.shortcut[SP_POS_MID] = S;
    float x[4] = {1, 2, 3, 4}, h[8];
    sp_layer_scratch *s = scratch(&dm, 1, 8);
    sp_layer_attn(s, &w, x, 1, h);
    sp_layer_scratch_free(s);
    double r = 1 / sqrt(30.0 / 4.0); /* RMSN over D = 4 */
    double want[8] = {1, 2, 1, 2, 3, 4, 3, 4};  /* kv head h / 2; a wrong h % 2 gives 1 2 3 4 1 2 3 4 */
    for (int i = 0; i < 8; i++) CHECK_NEAR(h[i], want[i] * r, 1e-6, "gqa head mapping");
}

/* ---------------------------------------------------------------- MLP, by hand */
static void test_mlp(void) {
    /* d_mid 2, ffn 2, d_out 3, D 4 (RMSN over 4), γ, shortcut S (2x3). */
    sp_dims dm = dims_make(4, 1, 1, 2, 2, 1, 0.0);
    float g[2] = {1.5f, 0.5f}, wg[4] = {1, 0, 0, -1}, wu[4] = {2, 1, 0, 1}, wd[6] = {1, 0, 0, 1, 1, 1};
    float S[6] = {1, 0, 2, 0, 1, -1};
    sp_layer_w w;
    memset(&w, 0, sizeof w);
    w.d_mid = 2;
    w.d_out = 3;
    w.slot[SP_SLOT_MLP_NORM] = g;
    w.slot[SP_SLOT_GATE] = wg;
    w.slot[SP_SLOT_UP] = wu;
    w.slot[SP_SLOT_DOWN] = wd;
    w.shortcut[SP_POS_OUT] = S;
    float h[2] = {1, 2}, y[3];
    sp_layer_scratch *s = scratch(&dm, 1, 4);
    sp_layer_mlp(s, &w, h, 1, y);
    sp_layer_scratch_free(s);
    double r = 1 / sqrt(5.0 / 4.0), n0 = 1 * r * 1.5, n1 = 2 * r * 0.5;
    double a0 = n0, a1 = -n1, u0 = 2 * n0 + n1, u1 = n1;
    double m0 = a0 / (1 + exp(-a0)) * u0, m1 = a1 / (1 + exp(-a1)) * u1;
    CHECK_NEAR(y[0], 1 + m0, 1e-6, "mlp out 0");
    CHECK_NEAR(y[1], 2 + m1, 1e-6, "mlp out 1");
    CHECK_NEAR(y[2], 2 - 2 + m0 + m1, 1e-6, "mlp out 2 (shortcut column)");
}

/* ---------------------------------------------------------------- head, by hand */
static void test_head(void) {
    sp_dims dm = dims_make(2, 1, 1, 2, 1, 3, 0.0);
    float W[6] = {1, 0, 0, 1, 1, 1}, x[6] = {1, 1, 2, 0, -1, 3}, lg[9];
    int32_t tok[3] = {0, 2, 1};
    sp_layer_scratch *s = scratch(&dm, 3, 2);
    double nll = sp_layer_head_nll(s, SP_BK_NORM_RMS, NULL, NULL, W, NULL, 2, x, tok, 3, lg);
    double nll2 = sp_layer_head_nll(s, SP_BK_NORM_RMS, NULL, NULL, W, NULL, 2, x, tok, 3, NULL);
    sp_layer_scratch_free(s);
    /* row 0: xn = [1,1], logits [1,1,2], target 2; row 1: xn = [sqrt2, 0], logits [√2,0,√2], target 1. */
    double r2 = sqrt(2.0);
    double want = (log(2 * exp(1.0) + exp(2.0)) - 2) + (log(2 * exp(r2) + 1) - 0);
    CHECK_NEAR(nll, want, 1e-6, "head nll (last position excluded)");
    CHECK_NEAR(nll2, nll, 1e-12, "head nll without logits_out");
    double xr = 1 / sqrt(10.0 / 2.0);
    CHECK_NEAR(lg[6], -1 * xr, 1e-6, "logits row 2 (written although not scored)");
    CHECK_NEAR(lg[8], 2 * xr, 1e-6, "logits row 2 col 2");
}

/* ---------------------------------------------------------------- naive reference */
static uint64_t g_rng = 88172645463325252ull;
static double urand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1;
}
static float *rnd(int64_t n, double scale) {
    float *p = malloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(urand() * scale);
    return p;
}

static void ref_rmsn(const double *x, const float *g, int64_t d, int64_t D, double eps, double *y) {
    double ss = 0;
    for (int64_t j = 0; j < d; j++) ss += x[j] * x[j];
    double r = 1 / sqrt(ss / D + eps);
    for (int64_t j = 0; j < d; j++) y[j] = x[j] * r * (g ? g[j] : 1.0);
}

/* x (T, d_in) -> h (T, d_mid) -> y (T, d_out), all in double. */
static void ref_layer(const sp_dims *dm, const sp_layer_w *w, const float *xf, int64_t T, double *h, double *y) {
    int64_t di = w->d_in, dmid = w->d_mid, dout = w->d_out, nh = dm->n_heads, nkv = dm->n_kv_heads,
            hd = dm->head_dim, F = dm->ffn;
    double *x = calloc((size_t)(T * di), 8), *xn = calloc((size_t)(T * di), 8), *q = calloc((size_t)(T * nh * hd), 8),
           *k = calloc((size_t)(T * nkv * hd), 8), *v = calloc((size_t)(T * nkv * hd), 8),
           *ctx = calloc((size_t)(T * nh * hd), 8), *p = calloc((size_t)T, 8), *hn = calloc((size_t)dmid, 8),
           *a = calloc((size_t)F, 8);
    for (int64_t i = 0; i < T * di; i++) x[i] = xf[i];
    for (int64_t t = 0; t < T; t++) ref_rmsn(x + t * di, w->slot[SP_SLOT_ATTN_NORM], di, dm->D, dm->eps, xn + t * di);
    for (int64_t t = 0; t < T; t++) {
        for (int64_t o = 0; o < nh * hd; o++) {
            double sq = 0;
            for (int64_t j = 0; j < di; j++) sq += xn[t * di + j] * w->slot[SP_SLOT_Q][o * di + j];
            q[t * nh * hd + o] = sq;
        }
        for (int64_t o = 0; o < nkv * hd; o++) {
            double sk = 0, sv = 0;
            for (int64_t j = 0; j < di; j++) {
                sk += xn[t * di + j] * w->slot[SP_SLOT_K][o * di + j];
                sv += xn[t * di + j] * w->slot[SP_SLOT_V][o * di + j];
            }
            k[t * nkv * hd + o] = sk;
            v[t * nkv * hd + o] = sv;
        }
    }
    /* rotate-half with inv_freq = theta^(-2i/hd) (no scaling in these tests) */
    for (int64_t t = 0; t < T; t++)
        for (int pass = 0; pass < 2; pass++) {
            int64_t n = pass ? nkv : nh;
            double *base = pass ? k + t * nkv * hd : q + t * nh * hd;
            for (int64_t hh = 0; hh < n; hh++)
                for (int64_t i = 0; i < hd / 2; i++) {
                    double ang = t * pow(dm->rope_theta, -2.0 * i / hd), c = cos(ang), sn = sin(ang);
                    double *e = base + hh * hd, a1 = e[i], a2 = e[i + hd / 2];
                    e[i] = a1 * c - a2 * sn;
                    e[i + hd / 2] = a2 * c + a1 * sn;
                }
        }
    for (int64_t hh = 0; hh < nh; hh++) {
        int64_t g = hh / (nh / nkv);
        for (int64_t t = 0; t < T; t++) {
            double m = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= t; j++) {
                double sc = 0;
                for (int64_t i = 0; i < hd; i++) sc += q[(t * nh + hh) * hd + i] * k[(j * nkv + g) * hd + i];
                p[j] = sc / sqrt((double)hd);
                if (p[j] > m) m = p[j];
            }
            for (int64_t j = 0; j <= t; j++) sum += (p[j] = exp(p[j] - m));
            for (int64_t i = 0; i < hd; i++) {
                double acc = 0;
                for (int64_t j = 0; j <= t; j++) acc += p[j] / sum * v[(j * nkv + g) * hd + i];
                ctx[(t * nh + hh) * hd + i] = acc;
            }
        }
    }
    for (int64_t t = 0; t < T; t++) {
        for (int64_t o = 0; o < dmid; o++) {
            double acc = 0;
            for (int64_t j = 0; j < nh * hd; j++) acc += ctx[t * nh * hd + j] * w->slot[SP_SLOT_O][o * nh * hd + j];
            if (w->shortcut[SP_POS_MID])
                for (int64_t j = 0; j < di; j++) acc += x[t * di + j] * w->shortcut[SP_POS_MID][j * dmid + o];
            else
                acc += x[t * di + o];
            h[t * dmid + o] = acc;
        }
        ref_rmsn(h + t * dmid, w->slot[SP_SLOT_MLP_NORM], dmid, dm->D, dm->eps, hn);
        for (int64_t f = 0; f < F; f++) {
            double g = 0, u = 0;
            for (int64_t j = 0; j < dmid; j++) {
                g += hn[j] * w->slot[SP_SLOT_GATE][f * dmid + j];
                u += hn[j] * w->slot[SP_SLOT_UP][f * dmid + j];
            }
            a[f] = g / (1 + exp(-g)) * u;
        }
        for (int64_t o = 0; o < dout; o++) {
            double acc = 0;
            for (int64_t f = 0; f < F; f++) acc += a[f] * w->slot[SP_SLOT_DOWN][o * F + f];
            if (w->shortcut[SP_POS_OUT])
                for (int64_t j = 0; j < dmid; j++) acc += h[t * dmid + j] * w->shortcut[SP_POS_OUT][j * dout + o];
            else
                acc += h[t * dmid + o];
            y[t * dout + o] = acc;
        }
    }
    free(x), free(xn), free(q), free(k), free(v), free(ctx), free(p), free(hn), free(a);
}

/* A random layer of the family's shapes: D 40, 6 query and 2 kv heads of 8,
 * MLP 56; sliced: widths 32 → 24 → 40 with shortcuts and weightless norms. */
#define RL_D 40
#define RL_NH 6
#define RL_NKV 2
#define RL_HD 8
#define RL_F 56

static sp_layer_w random_layer_w(int sliced) {
    const int64_t D = RL_D, nh = RL_NH, nkv = RL_NKV, hd = RL_HD, F = RL_F;
    int64_t di = sliced ? 32 : D, dmid = sliced ? 24 : D, dout = sliced ? 40 : D;
    sp_layer_w w;
    memset(&w, 0, sizeof w);
    w.d_in = di, w.d_mid = dmid, w.d_out = dout;
    w.slot[SP_SLOT_ATTN_NORM] = sliced ? NULL : rnd(di, 1);
    w.slot[SP_SLOT_Q] = rnd(nh * hd * di, 0.5);
    w.slot[SP_SLOT_K] = rnd(nkv * hd * di, 0.5);
    w.slot[SP_SLOT_V] = rnd(nkv * hd * di, 0.5);
    w.slot[SP_SLOT_O] = rnd(dmid * nh * hd, 0.3);
    w.shortcut[SP_POS_MID] = sliced ? rnd(di * dmid, 0.3) : NULL;
    w.slot[SP_SLOT_MLP_NORM] = sliced ? NULL : rnd(dmid, 1);
    w.slot[SP_SLOT_GATE] = rnd(F * dmid, 0.4);
    w.slot[SP_SLOT_UP] = rnd(F * dmid, 0.4);
    w.slot[SP_SLOT_DOWN] = rnd(dout * F, 0.3);
    w.shortcut[SP_POS_OUT] = sliced ? rnd(dmid * dout, 0.3) : NULL;
    return w;
}

static void random_layer_free(sp_layer_w *w) {
    for (int i = 0; i < SP_SLOT_COUNT; i++) free((void *)w->slot[i]);
    for (int i = 0; i < SP_POS_COUNT; i++) free((void *)w->shortcut[i]);
}

/* Largest error of got against the reference, relative to 1 + |ref|. */
static double rel_err(const float *got, const double *ref, int64_t n) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs(got[i] - ref[i]) / (1 + fabs(ref[i])));
    return e;
}

static void test_random_layer(int64_t T, int sliced) {
    sp_dims dm = dims_make(RL_D, RL_NH, RL_NKV, RL_HD, RL_F, 1, 1e-5);
    sp_layer_w w = random_layer_w(sliced);
    const int64_t di = w.d_in, dmid = w.d_mid, dout = w.d_out;
    float *x = rnd(T * di, 1.0), *h = malloc((size_t)(T * dmid) * 4), *y = malloc((size_t)(T * dout) * 4);
    double *hr = malloc((size_t)(T * dmid) * 8), *yr = malloc((size_t)(T * dout) * 8);
    sp_layer_scratch *s = scratch(&dm, T, RL_D);
    sp_layer_attn(s, &w, x, T, h);
    sp_layer_mlp(s, &w, h, T, y);
    ref_layer(&dm, &w, x, T, hr, yr);
    char what[96];
    snprintf(what, sizeof what, "attn vs naive reference (T %lld, sliced %d)", (long long)T, sliced);
    CHECK_NEAR(rel_err(h, hr, T * dmid), 0, 2e-5, what);
    snprintf(what, sizeof what, "mlp vs naive reference (T %lld, sliced %d)", (long long)T, sliced);
    CHECK_NEAR(rel_err(y, yr, T * dout), 0, 2e-5, what);

    /* causal: changing the last token's input changes only the last row */
    float *h2 = malloc((size_t)(T * dmid) * 4);
    for (int64_t j = 0; j < di; j++) x[(T - 1) * di + j] += 0.5f;
    sp_layer_attn(s, &w, x, T, h2);
    double before = 0, last = 0;
    for (int64_t i = 0; i < (T - 1) * dmid; i++) before = fmax(before, fabs(h2[i] - h[i]));
    for (int64_t i = (T - 1) * dmid; i < T * dmid; i++) last = fmax(last, fabs(h2[i] - h[i]));
    CHECK_NEAR(before, 0, 1e-6, "causal: earlier rows unchanged");
    g_checks++;
    if (!(last > 1e-3)) {
        fprintf(stderr, "FAIL causal: last row did not change (%g)\n", last);
        g_fail++;
    }
    sp_layer_scratch_free(s);
    random_layer_free(&w);
    free(x), free(h), free(h2), free(y), free(hr), free(yr);
}

/* nwin windows in one pass (sp_layer_attn_n, then sp_layer_mlp over all
 * their rows, the MLP in chunks of several windows' rows): each window is
 * its own sequence at positions 0..T-1, as the naive reference computes it
 * window by window. A window that attended to another's keys, or RoPE that
 * went on counting positions, would miss by far more than the tolerance. */
static void test_windows(int64_t T, int64_t nwin, int sliced) {
    sp_dims dm = dims_make(RL_D, RL_NH, RL_NKV, RL_HD, RL_F, 1, 1e-5);
    sp_layer_w w = random_layer_w(sliced);
    const int64_t di = w.d_in, dmid = w.d_mid, dout = w.d_out, R = nwin * T;
    float *x = rnd(R * di, 1.0), *h = malloc((size_t)(R * dmid) * 4), *y = malloc((size_t)(R * dout) * 4);
    double *hr = malloc((size_t)(T * dmid) * 8), *yr = malloc((size_t)(T * dout) * 8);
    sp_layer_scratch *s = NULL;
    if (sp_layer_scratch_init_n(cpu, llama(), &dm, T, nwin, RL_D, &s)) {
        fprintf(stderr, "scratch init: %s\n", sp_errmsg());
        exit(1);
    }
    sp_layer_attn_n(s, &w, x, nwin, T, h);
    sp_layer_mlp(s, &w, h, R, y);
    double eh = 0, ey = 0;
    for (int64_t k = 0; k < nwin; k++) {
        ref_layer(&dm, &w, x + k * T * di, T, hr, yr);
        eh = fmax(eh, rel_err(h + k * T * dmid, hr, T * dmid));
        ey = fmax(ey, rel_err(y + k * T * dout, yr, T * dout));
    }
    char what[96];
    snprintf(what, sizeof what, "attn of %lld windows of %lld vs naive reference (sliced %d)", (long long)nwin, (long long)T,
             sliced);
    CHECK_NEAR(eh, 0, 2e-5, what);
    snprintf(what, sizeof what, "mlp of %lld windows of %lld vs naive reference (sliced %d)", (long long)nwin, (long long)T,
             sliced);
    CHECK_NEAR(ey, 0, 2e-5, what);
    sp_layer_scratch_free(s);
    random_layer_free(&w);
    free(x), free(h), free(y), free(hr), free(yr);
}

static void test_group(void) {
    sp_dims small = dims_make(64, 4, 4, 16, 172, 32, 1e-5), big = dims_make(4096, 32, 32, 128, 11008, 32000, 1e-5);
    CHECK_NEAR(sp_layer_group(&small, 512, 64, 64), 2, 0, "group: 1024 rows of 512-token windows");
    CHECK_NEAR(sp_layer_group(&small, 256, 64, 3), 3, 0, "group: at most the job's windows");
    CHECK_NEAR(sp_layer_group(&small, 2048, 64, 64), 1, 0, "group: one window from 1024 tokens");
    CHECK_NEAR(sp_layer_group(&big, 512, 4096, 64), 1, 0, "group: one window where a second adds over 32 MiB");
    CHECK_NEAR(sp_layer_group(&big, 128, 4096, 64), 4, 0, "group: halved until the extra rows fit 32 MiB");
    sp_dims mid = dims_make(2048, 16, 16, 128, 8192, 32000, 1e-5);
    CHECK_NEAR(sp_layer_mlp_rows(&small, 2048), 1024, 0, "MLP chunks: 1024 rows");
    CHECK_NEAR(sp_layer_mlp_rows(&small, 300), 300, 0, "MLP chunks: at most the pass's rows");
    CHECK_NEAR(sp_layer_mlp_rows(&mid, 2048), 512, 0, "MLP chunks: 512 rows at 8192 neurons (gate and up 32 MiB)");
    CHECK_NEAR(sp_layer_mlp_rows(&big, 2048), 256, 0, "MLP chunks: 256 rows at 11008 neurons");
}

/* head over T = 150 rows (crosses the row chunks) vs a naive log-softmax */
static void test_random_head(void) {
    int64_t T = 150, d = 24, D = 32, V = 37;
    sp_dims dm = dims_make(D, 1, 1, 2, 1, V, 1e-5);
    float *W = rnd(V * d, 1), *x = rnd(T * d, 1), *g = rnd(d, 1), *lg = malloc((size_t)(T * V) * 4);
    int32_t *tok = malloc((size_t)T * 4);
    for (int64_t t = 0; t < T; t++) tok[t] = (int32_t)((t * 7 + 3) % V);
    sp_layer_scratch *s = scratch(&dm, T, D);
    double nll = sp_layer_head_nll(s, SP_BK_NORM_RMS, g, NULL, W, NULL, d, x, tok, T, lg);
    sp_layer_scratch_free(s);
    double want = 0, elog = 0, z[64], xn[64], xd[64];
    for (int64_t t = 0; t < T; t++) {
        for (int64_t j = 0; j < d; j++) xd[j] = x[t * d + j];
        ref_rmsn(xd, g, d, D, 1e-5, xn);
        double m = -INFINITY, se = 0;
        for (int64_t o = 0; o < V; o++) {
            z[o] = 0;
            for (int64_t j = 0; j < d; j++) z[o] += xn[j] * W[o * d + j];
            m = fmax(m, z[o]);
            elog = fmax(elog, fabs(lg[t * V + o] - z[o]));
        }
        for (int64_t o = 0; o < V; o++) se += exp(z[o] - m);
        if (t < T - 1) want += m + log(se) - z[tok[t + 1]];
    }
    CHECK_NEAR(nll, want, 1e-6 * (T - 1), "head nll vs naive (T 150)");
    CHECK_NEAR(elog, 0, 1e-4, "head logits vs naive (T 150)");
    free(W), free(x), free(g), free(lg), free(tok);
}

static void test_bad_dims(void) {
    sp_dims dm = dims_make(8, 3, 2, 4, 4, 4, 1e-5); /* 3 heads over 2 kv heads */
    sp_layer_scratch *s = NULL;
    int rc = sp_layer_scratch_init(cpu, llama(), &dm, 4, 8, &s);
    CHECK_NEAR(rc, SP_EX_DATAERR, 0, "scratch refuses n_heads % n_kv_heads != 0");
    CHECK_NEAR(s == NULL, 1, 0, "no scratch on failure");
    dm = dims_make(8, 2, 2, 4, 4, 4, 1e-5);
    rc = sp_layer_scratch_init(cpu, llama(), &dm, INT64_MAX / 2, 8, &s);
    CHECK_NEAR(rc != 0, 1, 0, "scratch refuses an overflowing T");
}

int main(void) {
    if (sp_bk_cpu_open(&cpu)) {
        fprintf(stderr, "test_forward: %s\n", sp_errmsg());
        return 70;
    }
    test_rmsn();
    test_rope_by_hand();
    test_gqa();
    test_mlp();
    test_head();
    test_random_layer(7, 0);
    test_random_layer(300, 1);
    test_random_layer(257, 0);
    test_windows(7, 3, 0);
    test_windows(300, 2, 1);
    test_group();
    test_random_head();
    test_bad_dims();
    printf("test_forward: %d checks, %d failures\n", g_checks, g_fail);
    sp_bk_close(cpu);
    return g_fail ? 1 : 0;
}
