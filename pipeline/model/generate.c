/* pipeline/model/generate.c — incremental decoding with a KV cache over the layer
 * composition of pipeline/model/layer.c. Contract: generate.h.
 *
 * Every buffer is sized by gen_sizes, the one list that sp_gen_bytes sums
 * and sp_gen_init allocates; a feed only reads weights (streamed layers) and
 * runs backend ops. The embedding gather is eval's (the row, × the family's
 * scale, + the learned position row), so the two paths see the same inputs.
 */
#include "generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "error.h"

/* The state's buffers, float32, (rows, cols) each. */
enum { G_KV_K, G_KV_V, G_X, G_Y, G_H, G_EMB, G_POS, G_HEAD, G_HEAD_B, G_NORM, G_NORM_B, G_LOGITS, G_COUNT };

struct sp_gen {
    const sp_model *m;
    const sp_bk *bk;
    int64_t max_len, pos, kw;
    int resident;
    int64_t n_bufs;          /* n_layers (resident) or 1 (streamed) */
    sp_layer_buf *lb;        /* (n_bufs) */
    sp_layer_scratch *scr;   /* max_len rows */
    float *buf[G_COUNT];     /* see generate.h: kv (n_layers·max_len, kw) ×2, x/y/h (max_len, D), ... */
    sp_head head;
};

static void gen_shapes(const sp_model *m, int64_t max_len, int64_t rows[G_COUNT], int64_t cols[G_COUNT]) {
    const sp_config *c = &m->cfg;
    const int64_t kw = c->n_kv_heads * c->head_dim, D = c->hidden_size, V = c->vocab_size;
    const int64_t r[G_COUNT] = {c->n_layers * max_len, c->n_layers * max_len, max_len, max_len, max_len, V, m->n_pos,
                                V, 1, 1, 1, 1};
    const int64_t k[G_COUNT] = {kw, kw, D, D, D, m->d_embed, m->d_embed, m->d_final, V, D, D, V};
    memcpy(rows, r, sizeof r);
    memcpy(cols, k, sizeof k);
}

/* Sum of the state's own buffers in bytes, or INT64_MAX on overflow. */
static int64_t gen_own_bytes(const sp_model *m, int64_t max_len) {
    int64_t rows[G_COUNT], cols[G_COUNT], n = 0, e;
    gen_shapes(m, max_len, rows, cols);
    for (int i = 0; i < G_COUNT; i++)
        if (sp_mul_i64(rows[i], cols[i], &e) || sp_mul_i64(e, 4, &e) || sp_add_i64(n, e, &n)) return INT64_MAX;
    return n;
}

int64_t sp_gen_resident_layer_bytes(const sp_model *m) {
    int64_t n;
    if (sp_mul_i64(sp_layer_buf_bytes(m), m->cfg.n_layers, &n)) return INT64_MAX;
    return n;
}

int64_t sp_gen_bytes(const sp_model *m, const sp_bk *bk, int64_t max_len, int resident) {
    int64_t dev, n = gen_own_bytes(m, max_len), s;
    int64_t layers = resident ? sp_gen_resident_layer_bytes(m) : sp_layer_buf_bytes(m);
    s = sp_layer_scratch_bytes(bk, &m->dims, max_len, m->cfg.hidden_size, &dev);
    if (n == INT64_MAX || layers == INT64_MAX || s == INT64_MAX || sp_add_i64(n, layers, &n) || sp_add_i64(n, s, &n) ||
        sp_add_i64(n, dev, &n))
        return INT64_MAX;
    return n;
}

void sp_gen_free(sp_gen *g) {
    if (!g) return;
    for (int64_t i = 0; g->lb && i < g->n_bufs; i++) sp_layer_buf_free(&g->lb[i]);
    free(g->lb);
    sp_layer_scratch_free(g->scr);
    for (int i = 0; i < G_COUNT; i++) free(g->buf[i]);
    free(g);
}

int sp_gen_check(const sp_model *m, const sp_bk *bk, int64_t max_len, int64_t extra_bytes) {
    const int64_t have = sp_mem_limit_bytes();
    int64_t need = sp_gen_bytes(m, bk, max_len, 0);
    if (need == INT64_MAX || extra_bytes < 0 || sp_add_i64(need, extra_bytes, &need))
        return sp_fail(SP_EX_USAGE, "generate: the state for %lld tokens overflows", (long long)max_len);
    if (need > have) {
        const sp_config *c = &m->cfg;
        double kv = 2.0 * (double)c->n_layers * (double)max_len * (double)(c->n_kv_heads * c->head_dim) * 4;
        return sp_fail(SP_EX_USAGE, "generate: %lld tokens need %.1f MiB (the KV cache %.1f MiB), more than the %.1f MiB this "
                       "process may hold (physical memory, or ulimit -v)", (long long)max_len, need / 1048576.0,
                       kv / 1048576.0, have / 1048576.0);
    }
    return 0;
}

int sp_gen_init(const sp_model *m, const sp_bk *bk, int64_t max_len, int64_t weights_budget, sp_gen **out) {
    *out = NULL;
    const sp_config *c = &m->cfg;
    if (!bk->host_shared) return sp_fail(SP_EX_USAGE, "generation runs on a backend whose memory is host memory (cpu)");
    if (max_len < 1) return sp_fail(SP_EX_USAGE, "generate: a sequence needs at least one token");
    char seq[64];
    snprintf(seq, sizeof seq, "generate: %lld tokens", (long long)max_len);
    SP_TRY(sp_model_check_positions(m, max_len, seq, "exceed", NULL));
    int64_t resident_bytes = sp_gen_resident_layer_bytes(m);
    int resident = weights_budget <= 0 || resident_bytes <= weights_budget;
    if (gen_own_bytes(m, max_len) == INT64_MAX || sp_gen_bytes(m, bk, max_len, resident) == INT64_MAX)
        return sp_fail(SP_EX_USAGE, "generate: the state for %lld tokens overflows", (long long)max_len);
    SP_TRY(sp_gen_check(m, bk, max_len, 0));
    sp_gen *g;
    SP_TRY(sp_calloc((void **)&g, 1, (int64_t)sizeof *g, "generation state"));
    g->m = m;
    g->bk = bk;
    g->max_len = max_len;
    g->kw = c->n_kv_heads * c->head_dim;
    g->resident = resident;
    g->n_bufs = resident ? c->n_layers : 1;
    int64_t rows[G_COUNT], cols[G_COUNT];
    gen_shapes(m, max_len, rows, cols);
    static const char *what[G_COUNT] = {"KV cache (keys)", "KV cache (values)", "activations", "activations",
                                        "attention block output", "embedding", "position table", "head",
                                        "head bias", "final norm", "final norm", "logits"};
    int rc = sp_calloc((void **)&g->lb, g->n_bufs, (int64_t)sizeof *g->lb, "layer buffers");
    for (int i = 0; i < G_COUNT && !rc; i++)
        if (rows[i] * cols[i] > 0) rc = sp_alloc((void **)&g->buf[i], rows[i] * cols[i], 4, what[i]);
    for (int64_t i = 0; i < g->n_bufs && !rc; i++) rc = sp_layer_buf_init(m, &g->lb[i]);
    if (!rc) rc = sp_layer_scratch_init(bk, m->arch, &m->dims, max_len, c->hidden_size, &g->scr);
    if (!rc) rc = sp_model_load_embed(m, g->buf[G_EMB], g->buf[G_POS]);
    if (!rc) {
        g->head = (sp_head){.w = g->buf[G_HEAD], .b = g->buf[G_HEAD_B], .norm = g->buf[G_NORM], .norm_b = g->buf[G_NORM_B]};
        rc = sp_model_load_head(m, &g->head);
    }
    for (int64_t l = 0; resident && l < c->n_layers && !rc; l++) rc = sp_model_load_layer(m, l, &g->lb[l]);
    if (rc) {
        sp_gen_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

int sp_gen_resident(const sp_gen *g) { return g->resident; }
int64_t sp_gen_pos(const sp_gen *g) { return g->pos; }
int64_t sp_gen_max_len(const sp_gen *g) { return g->max_len; }
void sp_gen_reset(sp_gen *g) { g->pos = 0; }

int sp_gen_feed(sp_gen *g, const int32_t *ids, int64_t n, const float **logits) {
    const sp_model *m = g->m;
    const sp_config *c = &m->cfg;
    SP_ASSERT(n >= 1 && g->pos + n <= g->max_len);
    *logits = NULL;
    /* The embedding rows of the new tokens, as eval gathers them. */
    int64_t width = m->d_embed;
    float *x = g->buf[G_X], *y = g->buf[G_Y];
    const float *emb = g->buf[G_EMB], *pos = g->buf[G_POS];
    for (int64_t i = 0; i < n; i++) SP_ASSERT(ids[i] >= 0 && ids[i] < c->vocab_size);
    sp_model_embed_rows(m, emb, pos, ids, n, g->pos, x);
    for (int64_t l = 0; l < c->n_layers; l++) {
        sp_layer_buf *b = &g->lb[g->resident ? l : 0];
        if (!g->resident) SP_TRY(sp_model_load_layer(m, l, b));
        const sp_layer_w *w = &b->w;
        SP_ASSERT(w->d_in == width);
        sp_layer_kv kv = {.k = g->buf[G_KV_K] + l * g->max_len * g->kw, .v = g->buf[G_KV_V] + l * g->max_len * g->kw};
        sp_layer_block_kv(g->scr, w, x, n, g->pos, &kv, g->buf[G_H], y);
        float *t = x;
        x = y;
        y = t;
        width = w->d_out;
    }
    /* The head on the last row only (one row: no token is scored). */
    const sp_head *hd = &g->head;
    const int32_t none = 0;
    float *lg = g->buf[G_LOGITS];
    (void)sp_layer_head_nll(g->scr, hd->kind, hd->has_norm ? hd->norm : NULL, hd->has_norm_b ? hd->norm_b : NULL, hd->w,
                            hd->has_b ? hd->b : NULL, width, x + (n - 1) * width, &none, 1, lg);
    for (int64_t j = 0; j < c->vocab_size; j++)
        if (!isfinite(lg[j]))
            return sp_fail(SP_EX_DATAERR, "%s: the logits at position %lld are not finite (token %lld)", m->dir,
                           (long long)(g->pos + n - 1), (long long)j);
    g->pos += n;
    *logits = lg;
    return 0;
}

/* ---- sampling ---- */

typedef struct cand {
    float l;
    int32_t id;
} cand;

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->l != y->l) return x->l > y->l ? -1 : 1; /* descending logit */
    return (x->id > y->id) - (x->id < y->id);      /* then ascending id */
}

int sp_sampler_init(sp_sampler *s, int64_t V, double temperature, int64_t top_k, uint64_t seed) {
    memset(s, 0, sizeof *s);
    if (!(temperature >= 0.0) || !isfinite(temperature))
        return sp_fail(SP_EX_USAGE, "--temperature must be a finite number >= 0 (got %g)", temperature);
    if (top_k < 0) return sp_fail(SP_EX_USAGE, "--top-k must be >= 0 (got %lld)", (long long)top_k);
    SP_ASSERT(V >= 1);
    s->temperature = temperature;
    s->top_k = top_k > V ? V : top_k;
    s->state = seed;
    s->V = V;
    int rc = sp_alloc(&s->cand, V, (int64_t)sizeof(cand), "sampler candidates");
    if (!rc) rc = sp_alloc((void **)&s->cum, V, 8, "sampler weights");
    if (rc) sp_sampler_free(s);
    return rc;
}

void sp_sampler_free(sp_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->cum);
    memset(s, 0, sizeof *s);
}

int32_t sp_sampler_next(sp_sampler *s, const float *logits) {
    const int64_t V = s->V;
    int64_t best = 0;
    for (int64_t j = 1; j < V; j++)
        if (logits[j] > logits[best]) best = j; /* the lowest id among the maximal logits */
    if (s->temperature == 0.0) return (int32_t)best;
    /* The candidates (see generate.h): every id ascending, or the top K. */
    cand *cd = s->cand;
    int64_t n = V;
    for (int64_t j = 0; j < V; j++) cd[j] = (cand){.l = logits[j], .id = (int32_t)j};
    if (s->top_k > 0) {
        qsort(cd, (size_t)V, sizeof *cd, cand_cmp);
        n = s->top_k;
    }
    const double lmax = (double)logits[best], T = s->temperature;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) {
        acc += exp(((double)cd[i].l - lmax) / T);
        s->cum[i] = acc;
    }
    double u = (double)(sp_calib_splitmix64(&s->state) >> 11) * 0x1.0p-53; /* [0, 1) */
    double target = u * acc;
    for (int64_t i = 0; i < n; i++)
        if (s->cum[i] > target) return cd[i].id;
    return cd[n - 1].id; /* unreachable: cum[n-1] = acc > target */
}
