/* pipeline/model/layer.c — a layer's forward pass and the head over the backend
 * table's ops. Contract: layer.h; conventions: docs/algorithm.md §1.
 *
 * Every buffer is allocated once in sp_layer_scratch_init (its sizes come
 * from one function, which sp_layer_scratch_bytes reports); the passes only
 * use the scratch. The MLP and the head are row-independent and run in row
 * chunks, which bounds the (rows, ffn) and (rows, vocab) buffers. Attention
 * runs in the backend, blocked by query rows (backend.h).
 *
 * A pass may take several windows at once (sp_layer_group): the linear
 * layers then run over all their rows in one GEMM each, and only RoPE and
 * attention go window by window. At the floor job's shapes OpenBLAS runs a
 * layer's GEMMs 10-17 % faster at 1024 rows a call than at 512 (256 in the
 * MLP): its operand packing and thread start are paid once per call
 * (bench/pass_rows.c).
 */
#include "layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MLP_ROWS_MIN 256                  /* rows per MLP chunk: at least, */
#define MLP_ROWS_MAX 1024                 /* at most, */
#define MLP_BYTES ((int64_t)32 << 20)     /* and the most while the gate and up chunks fit this */
#define GROUP_ROWS 1024                   /* rows a pass's group of windows aims at (sp_layer_group) */
#define GROUP_BYTES ((int64_t)32 << 20)   /* the most a group's rows may add to the scratch */
#define HEAD_ROWS 64 /* rows per head (logits) chunk */

struct sp_layer_scratch {
    const sp_bk *bk;
    const sp_arch *arch;
    sp_dims dims;
    int64_t T_max, width_max;
    int64_t rows_max; /* rows of a pass: windows of T_max rows each (sp_layer_scratch_init_n) */
    int64_t mlp_rows; /* rows per MLP chunk (sp_layer_mlp_rows) */
    sp_bk_ws *ws;     /* the backend's attention workspace */
    float *rope_cos;  /* (T_max, head_dim/2) cos(pos · inv_freq[i]) */
    float *rope_sin;  /* (T_max, head_dim/2) sin(pos · inv_freq[i]) */
    float *xn;        /* (rows_max, width_max) normalized layer / head input */
    float *q;         /* (rows_max, n_heads·head_dim) queries, then RoPE'd */
    float *k;         /* (rows_max, n_kv_heads·head_dim) keys, then RoPE'd */
    float *v;         /* (rows_max, n_kv_heads·head_dim) values */
    float *ctx;       /* (rows_max, n_heads·head_dim) softmax(QKᵀ)·V per head */
    float *gate;      /* (mlp_rows, ffn) act(x·Wgᵀ) ⊙ x·Wuᵀ */
    float *up;        /* (mlp_rows, ffn) x·Wuᵀ */
    float *logits;    /* (HEAD_ROWS, vocab) when the caller keeps no logits */
};

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Rows per MLP chunk, by the MLP's width alone (so the bits of a product do
 * not depend on anything else): MLP_ROWS_MAX, halved while the gate and up
 * chunks would take more than MLP_BYTES, down to MLP_ROWS_MIN; at most the
 * pass's rows. Larger
 * chunks run the gate, up and down GEMMs faster (the file's comment); the
 * cap keeps a wide MLP's chunks (a 7B's 11008, a 70B's 28672: 256 rows,
 * 22.5 and 58.7 MB) where they were, so its memory plan does not grow. */
int64_t sp_layer_mlp_rows(const sp_dims *d, int64_t rows) {
    int64_t r = MLP_ROWS_MAX;
    while (r > MLP_ROWS_MIN && 2 * r * d->ffn * 4 > MLP_BYTES) r /= 2;
    return min_i64(r, rows);
}

/* The bytes per row of the buffers that grow with a pass's rows. */
static int64_t pass_row_bytes(const sp_dims *d, int64_t width_max) {
    return (width_max + 2 * d->n_heads * d->head_dim + 2 * d->n_kv_heads * d->head_dim) * 4;
}

int64_t sp_layer_group(const sp_dims *d, int64_t T, int64_t width_max, int64_t W) {
    int64_t g = T >= 1 && T < GROUP_ROWS ? GROUP_ROWS / T : 1;
    while (g > 1 && (g - 1) * T * pass_row_bytes(d, width_max) > GROUP_BYTES) g /= 2;
    return W >= 1 && g > W ? W : g;
}

/* The scratch buffers, (rows, cols) float32 each: one list for the size and
 * the allocation. */
enum { B_COS, B_SIN, B_XN, B_Q, B_K, B_V, B_CTX, B_GATE, B_UP, B_LOGITS, B_COUNT };

static void buffer_shapes(const sp_dims *d, int64_t T, int64_t R, int64_t width_max, int64_t rows[B_COUNT], int64_t cols[B_COUNT]) {
    const int64_t qw = d->n_heads * d->head_dim, kw = d->n_kv_heads * d->head_dim, half = d->rot_dim / 2;
    const int64_t m = sp_layer_mlp_rows(d, R);
    const int64_t r[B_COUNT] = {T, T, R, R, R, R, R, m, m, min_i64(T, HEAD_ROWS)};
    const int64_t c[B_COUNT] = {half, half, width_max, qw, kw, kw, qw, d->ffn, d->ffn, d->vocab};
    memcpy(rows, r, sizeof r);
    memcpy(cols, c, sizeof c);
}

static sp_bk_plan_in ws_plan(const sp_dims *d, int64_t T) {
    return (sp_bk_plan_in){.D = 0, .cov_rows = 0, .rot_block = 0, .T = T, .n_heads = d->n_heads};
}

static int dims_ok(const sp_dims *d, int64_t T, int64_t width_max) {
    return T >= 1 && width_max >= 1 && d->D >= 1 && d->n_heads >= 1 && d->n_kv_heads >= 1 && d->head_dim >= 1 &&
           d->rot_dim >= 0 && d->rot_dim % 2 == 0 && d->rot_dim <= d->head_dim && d->n_heads % d->n_kv_heads == 0 &&
           d->ffn >= 1 && d->vocab >= 1;
}

int64_t sp_layer_scratch_bytes_n(const sp_bk *bk, const sp_dims *dims, int64_t T, int64_t nwin, int64_t width_max,
                                  int64_t *device_bytes) {
    int64_t rows[B_COUNT], cols[B_COUNT], n = 0, host = 0, dev = 0, e, R;
    *device_bytes = 0;
    if (!dims_ok(dims, T, width_max) || nwin < 1) return 0; /* init refuses it with a message */
    if (sp_mul_i64(T, nwin, &R)) return INT64_MAX;
    buffer_shapes(dims, T, R, width_max, rows, cols);
    for (int i = 0; i < B_COUNT; i++) {
        if (sp_mul_i64(rows[i], cols[i], &e) || sp_mul_i64(e, 4, &e) || sp_add_i64(n, e, &n)) return INT64_MAX;
    }
    sp_bk_plan_in in = ws_plan(dims, T);
    sp_bk_plan p = bk->plan_bytes(bk, &in);
    if (bk->host_shared) host = n;
    else dev = n;
    host += 2 * T * (dims->rot_dim / 2) * 4; /* the RoPE tables' host copies, during init */
    *device_bytes = dev + p.device_bytes;
    return host + p.host_bytes;
}

int64_t sp_layer_scratch_bytes(const sp_bk *bk, const sp_dims *dims, int64_t T, int64_t width_max, int64_t *device_bytes) {
    return sp_layer_scratch_bytes_n(bk, dims, T, 1, width_max, device_bytes);
}

void sp_layer_scratch_free(sp_layer_scratch *s) {
    if (!s) return;
    float *p[] = {s->rope_cos, s->rope_sin, s->xn, s->q, s->k, s->v, s->ctx, s->gate, s->up, s->logits};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) s->bk->free(s->bk, p[i]);
    if (s->ws) s->bk->ws_free(s->bk, s->ws);
    free(s);
}

/* inv_freq[i] = theta^(-2i/rot) over the rotary dimensions, with HF's
 * "linear" (÷ factor) or "llama3" rope_scaling (_compute_llama3_parameters). */
static double rope_inv_freq(const sp_dims *dims, int64_t i) {
    double rot = (double)dims->rot_dim;
    double f = pow(dims->rope_theta, -(double)(2 * i) / rot);
    if (dims->rope_linear > 0) return f / dims->rope_linear;
    if (!dims->rope_llama3) return f;
    double factor = dims->rope_factor, lo = dims->rope_low_freq_factor, hi = dims->rope_high_freq_factor;
    double old_ctx = (double)dims->rope_original_max_pos;
    double low_freq_wavelen = old_ctx / lo, high_freq_wavelen = old_ctx / hi;
    double wavelen = 2.0 * M_PI / f;
    if (wavelen < high_freq_wavelen) return f;          /* high frequency: kept */
    if (wavelen > low_freq_wavelen) return f / factor;  /* low frequency: divided */
    double smooth = (old_ctx / wavelen - lo) / (hi - lo); /* medium: interpolated */
    return (1.0 - smooth) * f / factor + smooth * f;
}

int sp_layer_scratch_init(const sp_bk *bk, const sp_arch *arch, const sp_dims *dims, int64_t T, int64_t width_max,
                          sp_layer_scratch **out) {
    return sp_layer_scratch_init_n(bk, arch, dims, T, 1, width_max, out);
}

int sp_layer_scratch_init_n(const sp_bk *bk, const sp_arch *arch, const sp_dims *dims, int64_t T, int64_t nwin,
                            int64_t width_max, sp_layer_scratch **out) {
    *out = NULL;
    if (!dims_ok(dims, T, width_max) || nwin < 1)
        return sp_fail(SP_EX_DATAERR,
                       "forward: unusable dimensions (T %lld, width %lld, D %lld, heads %lld/%lld, head_dim %lld, "
                       "ffn %lld, vocab %lld)",
                       (long long)T, (long long)width_max, (long long)dims->D, (long long)dims->n_heads,
                       (long long)dims->n_kv_heads, (long long)dims->head_dim, (long long)dims->ffn,
                       (long long)dims->vocab);
    if (dims->rope_llama3 && (!(dims->rope_factor > 0) || !(dims->rope_high_freq_factor > dims->rope_low_freq_factor) ||
                              !(dims->rope_low_freq_factor > 0) || dims->rope_original_max_pos < 1))
        return sp_fail(SP_EX_DATAERR, "forward: unusable llama3 rope_scaling parameters");
    int64_t dev;
    if (sp_layer_scratch_bytes_n(bk, dims, T, nwin, width_max, &dev) == INT64_MAX)
        return sp_fail(SP_EX_SOFTWARE, "forward scratch: size overflows");
    sp_layer_scratch *s;
    SP_TRY(sp_calloc((void **)&s, 1, (int64_t)sizeof *s, "forward scratch"));
    s->bk = bk;
    s->arch = arch;
    s->dims = *dims;
    s->T_max = T;
    s->width_max = width_max;
    s->rows_max = T * nwin; /* sp_layer_scratch_bytes_n checked the product */
    s->mlp_rows = sp_layer_mlp_rows(dims, s->rows_max);
    int64_t rows[B_COUNT], cols[B_COUNT];
    buffer_shapes(dims, T, s->rows_max, width_max, rows, cols);
    float **p[B_COUNT] = {&s->rope_cos, &s->rope_sin, &s->xn, &s->q, &s->k, &s->v, &s->ctx, &s->gate, &s->up, &s->logits};
    static const char *what[B_COUNT] = {"RoPE cos table", "RoPE sin table", "normalized activations", "queries", "keys",
                                        "values", "attention context", "MLP gate", "MLP up", "logits"};
    sp_bk_plan_in in = ws_plan(dims, T);
    int rc = bk->ws_init(bk, &in, &s->ws);
    for (int i = 0; i < B_COUNT && !rc; i++) rc = bk->alloc(bk, (void **)p[i], rows[i] * cols[i] * 4, what[i]);
    /* The RoPE tables, computed on the host and uploaded once. */
    const int64_t half = dims->rot_dim / 2;
    float *tc = NULL, *ts = NULL;
    if (!rc) rc = sp_alloc((void **)&tc, T * half, 4, "RoPE tables");
    if (!rc) rc = sp_alloc((void **)&ts, T * half, 4, "RoPE tables");
    if (!rc) {
        for (int64_t i = 0; i < half; i++) {
            double f = rope_inv_freq(dims, i);
            for (int64_t t = 0; t < T; t++) {
                double a = (double)t * f;
                tc[t * half + i] = (float)cos(a);
                ts[t * half + i] = (float)sin(a);
            }
        }
        bk->to_dev(bk, s->rope_cos, tc, T * half * 4);
        bk->to_dev(bk, s->rope_sin, ts, T * half * 4);
    }
    free(tc);
    free(ts);
    if (rc) {
        sp_layer_scratch_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* y (rows, n) = x (rows, k) · Wᵀ, W (n, k); beta 0 overwrites, 1 accumulates. */
static void linear(const sp_bk *bk, const float *x, int64_t rows, int64_t k, const float *w, int64_t n, float beta, float *y) {
    bk->sgemm(bk, 0, 1, rows, n, k, 1.0f, x, k, w, k, beta, y, n);
}

/* y (rows, n) += x (rows, k) · S (k, n), or y += x when S is NULL (k == n). */
static void add_shortcut(const sp_bk *bk, const float *x, int64_t rows, int64_t k, const float *S, int64_t n, float *y) {
    if (S) {
        bk->sgemm(bk, 0, 0, rows, n, k, 1.0f, x, k, S, n, 1.0f, y, n);
    } else {
        SP_ASSERT(k == n);
        bk->add(bk, y, x, rows, n);
    }
}

/* xn (T, d) = N(x)·γ (+ β) over the original width. */
static void normed(sp_layer_scratch *s, enum sp_bk_norm kind, const float *gamma, const float *beta, const float *x, int64_t T,
                   int64_t d) {
    s->bk->copy(s->bk, s->xn, x, T * d * 4);
    s->bk->norm(s->bk, kind, gamma, beta, d, s->dims.D, s->dims.eps, s->xn, T);
}

/* y (rows, n) = x·Wᵀ (+ b). */
static void linear_b(const sp_bk *bk, const float *x, int64_t rows, int64_t k, const float *w, const float *b, int64_t n,
                     float *y) {
    linear(bk, x, rows, k, w, n, 0.0f, y);
    if (b) bk->add_bias(bk, y, b, rows, n);
}

/* ctx (nwin·T, nh·hd): the attention of xn (nwin·T, d_in), before the
 * output projection. kv NULL: nwin windows of T rows, each at positions
 * 0..T-1, keys and values in the scratch. Else (nwin 1) the rows are
 * positions pos0..pos0+T-1: their keys and values go into rows pos0.. of the
 * cache and the queries attend to its rows 0..pos0+T-1. */
static void attention_ctx(sp_layer_scratch *s, const sp_layer_w *w, int64_t nwin, int64_t T, int64_t d_in, int64_t pos0,
                          const sp_layer_kv *kv) {
    const sp_bk *bk = s->bk;
    const sp_dims *dims = &s->dims;
    int64_t nh = dims->n_heads, nkv = dims->n_kv_heads, hd = dims->head_dim, qw = nh * hd, kw = nkv * hd;
    const float *wq = w->slot[SP_SLOT_Q], *wk = w->slot[SP_SLOT_K], *wv = w->slot[SP_SLOT_V];
    if (w->slot[SP_SLOT_QKV]) { /* fused rows q; k; v */
        wq = w->slot[SP_SLOT_QKV];
        wk = wq + qw * d_in;
        wv = wk + kw * d_in;
    }
    SP_ASSERT(nwin >= 1 && (!kv || nwin == 1));
    float *k = kv ? kv->k + pos0 * kw : s->k, *v = kv ? kv->v + pos0 * kw : s->v; /* (nwin·T, nkv·hd) each */
    const int64_t half = dims->rot_dim / 2, R = nwin * T;
    linear_b(bk, s->xn, R, d_in, wq, w->slot[SP_SLOT_Q_B], qw, s->q); /* (R, nh·hd) */
    linear_b(bk, s->xn, R, d_in, wk, w->slot[SP_SLOT_K_B], kw, k);    /* (R, nkv·hd) */
    linear_b(bk, s->xn, R, d_in, wv, w->slot[SP_SLOT_V_B], kw, v);    /* (R, nkv·hd) */
    if (w->slot[SP_SLOT_Q_NORM]) /* per-head RMSNorm: rows of head_dim */
        bk->norm(bk, SP_BK_NORM_RMS, w->slot[SP_SLOT_Q_NORM], NULL, hd, hd, dims->eps, s->q, R * nh);
    if (w->slot[SP_SLOT_K_NORM]) bk->norm(bk, SP_BK_NORM_RMS, w->slot[SP_SLOT_K_NORM], NULL, hd, hd, dims->eps, k, R * nkv);
    const float scale = (float)(1.0 / sqrt((double)hd));
    /* The RoPE tables' rows pos0.. are positions pos0.. */
    const float *cs = s->rope_cos + pos0 * half, *sn = s->rope_sin + pos0 * half;
    for (int64_t i = 0; i < nwin; i++) { /* window i: rows i·T.., positions pos0.. */
        float *qi = s->q + i * T * qw, *ki = k + i * T * kw, *vi = v + i * T * kw, *ci = s->ctx + i * T * qw;
        if (!s->arch->pos_embed) {
            bk->rope(bk, s->arch->rope, qi, T, qw, nh, hd, dims->rot_dim, cs, sn);
            bk->rope(bk, s->arch->rope, ki, T, kw, nkv, hd, dims->rot_dim, cs, sn);
        }
        if (kv)
            bk->attention_cached(bk, s->ws, qi, T, kv->k, kv->v, pos0 + T, nh, nkv, hd, scale, dims->window, ci);
        else
            bk->attention(bk, s->ws, qi, ki, vi, T, nh, nkv, hd, scale, dims->window, ci);
    }
}

static void attn_at(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t nwin, int64_t T, int64_t pos0,
                    const sp_layer_kv *kv, float *h) {
    const sp_bk *bk = s->bk;
    int64_t d_in = w->d_in, d_mid = w->d_mid, qw = s->dims.n_heads * s->dims.head_dim, R = nwin * T;
    SP_ASSERT(T >= 1 && T <= s->T_max && nwin >= 1 && R <= s->rows_max && d_in >= 1 && d_in <= s->width_max && d_mid >= 1);
    SP_ASSERT(w->shortcut[SP_POS_MID] || d_in == d_mid);
    SP_ASSERT((const float *)h != x);

    normed(s, w->norm, w->slot[SP_SLOT_ATTN_NORM], w->slot[SP_SLOT_ATTN_NORM_B], x, R, d_in);
    attention_ctx(s, w, nwin, T, d_in, pos0, kv);
    linear_b(bk, s->ctx, R, qw, w->slot[SP_SLOT_O], w->slot[SP_SLOT_O_B], d_mid, h); /* (R, d_mid) */
    add_shortcut(bk, x, R, d_in, w->shortcut[SP_POS_MID], d_mid, h);
}

void sp_layer_attn(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t T, float *h) {
    attn_at(s, w, x, 1, T, 0, NULL, h);
}

void sp_layer_attn_n(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t nwin, int64_t T, float *h) {
    attn_at(s, w, x, nwin, T, 0, NULL, h);
}

/* y (T, d_out) (+)= MLP(xn), xn (T, d) already normalized; beta 1 accumulates.
 * With z != NULL, the intermediate (T, ffn) goes into z and y is untouched. */
static void mlp_xn(sp_layer_scratch *s, const sp_layer_w *w, int64_t T, int64_t d, int64_t d_out, float beta, float *y,
                   float *z) {
    const sp_bk *bk = s->bk;
    const int64_t ffn = w->ffn ? w->ffn : s->dims.ffn;
    SP_ASSERT(ffn >= 1 && ffn <= s->dims.ffn);
    const float *wg = w->slot[SP_SLOT_GATE], *wu = w->slot[SP_SLOT_UP];
    if (w->slot[SP_SLOT_GATE_UP]) { /* fused rows gate; up */
        wg = w->slot[SP_SLOT_GATE_UP];
        wu = wg + ffn * d;
    }
    for (int64_t r0 = 0; r0 < T; r0 += s->mlp_rows) {
        int64_t nr = min_i64(T - r0, s->mlp_rows);
        float *g = z ? z + r0 * ffn : s->gate;
        linear_b(bk, s->xn + r0 * d, nr, d, wg, w->slot[SP_SLOT_GATE_B], ffn, g);
        if (wu) linear_b(bk, s->xn + r0 * d, nr, d, wu, w->slot[SP_SLOT_UP_B], ffn, s->up);
        bk->act(bk, s->dims.act, g, wu ? s->up : NULL, nr * ffn);
        if (!z) linear(bk, g, nr, ffn, w->slot[SP_SLOT_DOWN], d_out, beta, y + r0 * d_out); /* (nr, d_out) */
    }
    if (!z && w->slot[SP_SLOT_DOWN_B]) bk->add_bias(bk, y, w->slot[SP_SLOT_DOWN_B], T, d_out);
}

void sp_layer_mlp_inner(sp_layer_scratch *s, const sp_layer_w *w, const float *h, int64_t T, float *z) {
    const int par = s->arch->parallel; /* the MLP reads the block's input through its one norm */
    const int64_t d = par ? w->d_in : w->d_mid;
    SP_ASSERT(T >= 1 && T <= s->rows_max && d >= 1 && d <= s->width_max);
    normed(s, w->norm, w->slot[par ? SP_SLOT_ATTN_NORM : SP_SLOT_MLP_NORM], w->slot[par ? SP_SLOT_ATTN_NORM_B : SP_SLOT_MLP_NORM_B],
           h, T, d);
    mlp_xn(s, w, T, d, w->d_out, 0.0f, NULL, z);
}

void sp_layer_mlp(sp_layer_scratch *s, const sp_layer_w *w, const float *h, int64_t T, float *y) {
    int64_t d_mid = w->d_mid, d_out = w->d_out;
    SP_ASSERT(T >= 1 && T <= s->rows_max && d_mid >= 1 && d_mid <= s->width_max && d_out >= 1);
    SP_ASSERT(w->shortcut[SP_POS_OUT] || d_mid == d_out);
    SP_ASSERT((const float *)y != h);

    normed(s, w->norm, w->slot[SP_SLOT_MLP_NORM], w->slot[SP_SLOT_MLP_NORM_B], h, T, d_mid);
    mlp_xn(s, w, T, d_mid, d_out, 0.0f, y, NULL);
    add_shortcut(s->bk, h, T, d_mid, w->shortcut[SP_POS_OUT], d_out, y);
}

static void parallel_at(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t nwin, int64_t T, int64_t pos0,
                        const sp_layer_kv *kv, float *y) {
    const sp_bk *bk = s->bk;
    int64_t d_in = w->d_in, d_out = w->d_out, qw = s->dims.n_heads * s->dims.head_dim, R = nwin * T;
    SP_ASSERT(T >= 1 && T <= s->T_max && nwin >= 1 && R <= s->rows_max && d_in >= 1 && d_in <= s->width_max && d_out >= 1);
    SP_ASSERT(w->shortcut[SP_POS_OUT] || d_in == d_out);
    SP_ASSERT((const float *)y != x);

    normed(s, w->norm, w->slot[SP_SLOT_ATTN_NORM], w->slot[SP_SLOT_ATTN_NORM_B], x, R, d_in);
    attention_ctx(s, w, nwin, T, d_in, pos0, kv);
    linear_b(bk, s->ctx, R, qw, w->slot[SP_SLOT_O], w->slot[SP_SLOT_O_B], d_out, y); /* (R, d_out) */
    mlp_xn(s, w, R, d_in, d_out, 1.0f, y, NULL);
    add_shortcut(bk, x, R, d_in, w->shortcut[SP_POS_OUT], d_out, y);
}

void sp_layer_parallel(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t T, float *y) {
    parallel_at(s, w, x, 1, T, 0, NULL, y);
}

void sp_layer_parallel_n(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t nwin, int64_t T, float *y) {
    parallel_at(s, w, x, nwin, T, 0, NULL, y);
}

const float *sp_layer_scratch_xn(const sp_layer_scratch *s) { return s->xn; }

const float *sp_layer_scratch_ctx(const sp_layer_scratch *s) { return s->ctx; }

void sp_layer_block(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t T, float *h, float *y) {
    if (s->arch->parallel) {
        sp_layer_parallel(s, w, x, T, y);
        return;
    }
    sp_layer_attn(s, w, x, T, h);
    sp_layer_mlp(s, w, h, T, y);
}

void sp_layer_block_kv(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t T, int64_t pos0,
                       const sp_layer_kv *kv, float *h, float *y) {
    SP_ASSERT(kv && kv->k && kv->v && pos0 >= 0 && T >= 1 && pos0 + T <= s->T_max);
    if (s->arch->parallel) {
        parallel_at(s, w, x, 1, T, pos0, kv, y);
        return;
    }
    attn_at(s, w, x, 1, T, pos0, kv, h);
    sp_layer_mlp(s, w, h, T, y);
}

double sp_layer_head_nll(sp_layer_scratch *s, enum sp_bk_norm kind, const float *norm, const float *norm_b,
                         const float *w_head, const float *b_head, int64_t d, const float *x, const int32_t *tokens, int64_t T,
                         float *logits_out) {
    const sp_bk *bk = s->bk;
    const int64_t V = s->dims.vocab;
    SP_ASSERT(T >= 1 && T <= s->T_max && d >= 1 && d <= s->width_max);
    normed(s, kind, norm, norm_b, x, T, d);
    double nll = 0.0;
    for (int64_t r0 = 0; r0 < T; r0 += HEAD_ROWS) {
        int64_t nr = min_i64(T - r0, HEAD_ROWS), p = min_i64(nr, T - 1 - r0); /* rows that predict a token */
        float *lg = logits_out ? logits_out + r0 * V : s->logits;       /* (nr, V) */
        linear_b(bk, s->xn + r0 * d, nr, d, w_head, b_head, V, lg);
        if (p > 0) nll = bk->nll(bk, lg, p + 1, V, tokens + r0, nll);
    }
    return nll;
}
