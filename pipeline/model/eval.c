#include "eval.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "backend.h"
#include "spill.h"
#include "stream.h"

/* Windows of T tokens against the model's positions (sp_model_check_positions),
 * warning past a RoPE model's max_position_embeddings when `warn`. */
static int positions(const sp_model *m, int64_t T, int warn) {
    char what[64], warn_what[64];
    snprintf(what, sizeof what, "--seqlen %lld", (long long)T);
    snprintf(warn_what, sizeof warn_what, "seqlen %lld", (long long)T);
    return sp_model_check_positions(m, T, what, "exceeds", warn ? warn_what : NULL);
}

/* The windows an evaluation takes, every size checked for overflow. */
static int eval_shape(const sp_model *m, int64_t n_tokens, const sp_eval_opts *o, int64_t *W_out, int64_t *N_out) {
    int64_t T = o->seqlen;
    if (T < 2) return sp_fail(SP_EX_USAGE, "--seqlen must be at least 2 (got %lld)", (long long)T);
    int64_t W = n_tokens / T;
    if (o->windows > 0) {
        if (o->windows > W)
            return sp_fail(SP_EX_USAGE, "asked for %lld windows of %lld tokens but the token file has only %lld",
                           (long long)o->windows, (long long)T, (long long)W);
        W = o->windows;
    }
    if (W < 1)
        return sp_fail(SP_EX_DATAERR, "the token stream (%lld tokens) is shorter than one window of %lld",
                       (long long)n_tokens, (long long)T);
    SP_TRY(positions(m, T, 0));
    int64_t N, x;
    const int64_t D = m->cfg.hidden_size, V = m->cfg.vocab_size;
    if (sp_mul_i64(W, T, &N) || sp_mul_i64(T, D, &x) || sp_mul_i64(x, 16, &x) || sp_mul_i64(N, D, &x) ||
        sp_mul_i64(x, 4, &x) || (o->dump_logits && (sp_mul_i64(N, V, &x) || sp_mul_i64(x, 4, &x))))
        return sp_fail(SP_EX_USAGE, "%lld windows x seqlen %lld (hidden %lld, vocab %lld) overflows: lower the seqlen or "
                                    "the windows", (long long)W, (long long)T, (long long)D, (long long)V);
    *W_out = W;
    *N_out = N;
    return 0;
}

int64_t sp_eval_fixed_bytes(const sp_bk *bk, const sp_model *m, int64_t T, int64_t N, int dump) {
    const sp_config *c = &m->cfg;
    const int64_t D = c->hidden_size, V = c->vocab_size;
    int64_t dev;
    return T * D * 4 + V * D * 4 + 2 * D * 4 + V * 4 + m->n_pos * D * 4 + (dump ? N * V * 4 : 0) +
           sp_layer_scratch_bytes(bk, &m->dims, T, D, &dev) + sp_layer_buf_bytes(m);
}

int64_t sp_eval_window_bytes(const sp_model *m, int64_t T) { return T * m->cfg.hidden_size * 4 * 4; }

int sp_eval_check(const sp_model *m, int64_t n_tokens, const sp_eval_opts *o) {
    int64_t W = 0, N = 0;
    SP_TRY(eval_shape(m, n_tokens, o, &W, &N));
    return positions(m, o->seqlen, o->progress >= 0);
}

/* One window of the embedding's output (sp_stream_fn; nothing is read). */
typedef struct embed_ctx {
    const sp_model *m;
    const float *emb, *pos;
    const int32_t *ids;
    int64_t T;
} embed_ctx;

static int embed_window(void *ctx, int64_t k, const float *x, float *y) {
    embed_ctx *c = ctx;
    (void)x;
    sp_model_embed_rows(c->m, c->emb, c->pos, c->ids + k * c->T, c->T, 0, y);
    return 0;
}

int sp_reader_stats_init(const sp_model *m, sp_reader_stats *s) {
    memset(s, 0, sizeof *s);
    if (m->arch->parallel)
        return sp_fail(SP_EX_DATAERR, "reader statistics: %s's parallel block is not supported", m->arch->model_type);
    const int64_t L = m->cfg.n_layers, qw = m->cfg.n_heads * m->cfg.head_dim;
    s->n_layers = L;
    int rc = sp_alloc((void **)&s->attn_in, L, sizeof(double *), "reader statistics");
    if (!rc) rc = sp_alloc((void **)&s->attn_ctx, L, sizeof(double *), "reader statistics");
    if (!rc) rc = sp_alloc((void **)&s->mlp_in, L, sizeof(double *), "reader statistics");
    if (!rc) rc = sp_alloc((void **)&s->mlp_inner, L, sizeof(double *), "reader statistics");
    for (int64_t l = 0; !rc && l < L; l++) {
        int64_t d_in, d_mid, d_out;
        sp_model_widths(m, l, &d_in, &d_mid, &d_out);
        s->attn_in[l] = calloc((size_t)d_in, sizeof(double));
        s->attn_ctx[l] = calloc((size_t)qw, sizeof(double));
        s->mlp_in[l] = calloc((size_t)d_mid, sizeof(double));
        s->mlp_inner[l] = calloc((size_t)m->cfg.intermediate_size, sizeof(double));
        if (!s->attn_in[l] || !s->attn_ctx[l] || !s->mlp_in[l] || !s->mlp_inner[l])
            rc = sp_fail(SP_EX_SOFTWARE, "out of memory for reader statistics");
    }
    if (!rc) {
        s->head_in = calloc((size_t)m->cfg.hidden_size, sizeof(double));
        if (!s->head_in) rc = sp_fail(SP_EX_SOFTWARE, "out of memory for reader statistics");
    }
    if (rc) sp_reader_stats_free(s);
    return rc;
}

void sp_reader_stats_free(sp_reader_stats *s) {
    for (int64_t l = 0; l < s->n_layers; l++) {
        if (s->attn_in) free(s->attn_in[l]);
        if (s->attn_ctx) free(s->attn_ctx[l]);
        if (s->mlp_in) free(s->mlp_in[l]);
        if (s->mlp_inner) free(s->mlp_inner[l]);
    }
    free(s->attn_in), free(s->attn_ctx), free(s->mlp_in), free(s->mlp_inner), free(s->head_in);
    memset(s, 0, sizeof *s);
}

/* acc[j] += Σ_t x[t, j]² over rows x (T, n). */
static void sq_add(double *acc, const float *x, int64_t T, int64_t n) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j++) acc[j] += (double)x[t * n + j] * (double)x[t * n + j];
}

/* One window through a layer (sp_stream_fn). */
typedef struct layer_ctx {
    sp_layer_scratch *scr;
    const sp_layer_w *w;
    float *h; /* (T, d_mid) */
    int64_t T;
    sp_reader_stats *st; /* NULL: no statistics */
    int64_t l, qw, ffn; /* ffn: the model's; a layer's w->ffn 0 means it */
    float *z; /* (T, ffn) with st */
} layer_ctx;

static int layer_window(void *ctx, int64_t k, const float *x, float *y) {
    layer_ctx *c = ctx;
    (void)k;
    if (!c->st) {
        sp_layer_block(c->scr, c->w, x, c->T, c->h, y);
        return 0;
    }
    const sp_layer_w *w = c->w;
    const int64_t ffn = w->ffn ? w->ffn : c->ffn, T = c->T, l = c->l;
    sp_layer_attn(c->scr, w, x, T, c->h);
    sq_add(c->st->attn_in[l], sp_layer_scratch_xn(c->scr), T, w->d_in);
    sq_add(c->st->attn_ctx[l], sp_layer_scratch_ctx(c->scr), T, c->qw);
    sp_layer_mlp_inner(c->scr, w, c->h, T, c->z);
    sq_add(c->st->mlp_in[l], sp_layer_scratch_xn(c->scr), T, w->d_mid);
    sq_add(c->st->mlp_inner[l], c->z, T, ffn);
    sp_layer_mlp(c->scr, w, c->h, T, y);
    return 0;
}

/* One window through the head: its NLL summed in window order. */
typedef struct head_ctx {
    sp_layer_scratch *scr;
    const sp_head *hd;
    int64_t width, T, V;
    const int32_t *ids;
    float *logits; /* (W·T, V) or NULL */
    double sum;
    sp_reader_stats *st; /* NULL: no statistics */
} head_ctx;

static int head_window(void *ctx, int64_t k, const float *x, float *y) {
    head_ctx *c = ctx;
    const sp_head *hd = c->hd;
    (void)y;
    c->sum += sp_layer_head_nll(c->scr, hd->kind, hd->has_norm ? hd->norm : NULL, hd->has_norm_b ? hd->norm_b : NULL, hd->w,
                                hd->has_b ? hd->b : NULL, c->width, x, c->ids + k * c->T, c->T,
                                c->logits ? c->logits + k * c->T * c->V : NULL);
    if (c->st) {
        sq_add(c->st->head_in, sp_layer_scratch_xn(c->scr), c->T, c->width);
        c->st->tokens += c->T;
    }
    return 0;
}

int sp_eval(const sp_model *m, const sp_tokens *toks, const sp_eval_opts *o, sp_eval_result *r) {
    memset(r, 0, sizeof *r);
    const sp_config *c = &m->cfg;
    const sp_dims *dims = &m->dims;
    const sp_bk *bk = o->bk;
    SP_ASSERT(bk && bk->host_shared); /* sp_bk_open_host */
    int64_t T = o->seqlen, W = 0, N = 0;
    SP_TRY(eval_shape(m, toks->n, o, &W, &N));
    const int64_t D = c->hidden_size, V = c->vocab_size;
    int64_t budget = o->chunk_bytes > 0 ? o->chunk_bytes : SP_EVAL_CHUNK_BYTES_DEFAULT;
    int64_t cw = budget / (T * D * 4 * 3); /* chunk in, chunk out, spill buffer */
    if (cw < 1) cw = 1;
    if (cw > W) cw = W;
    double t0 = sp_now();

    /* Chunks hold nw windows of T rows packed at the current width; h holds
     * one window's attention-block output (T, d_mid). */
    float *cin = NULL, *cout = NULL, *h = NULL, *big = NULL, *norm = NULL, *norm_b = NULL, *hb = NULL, *pos = NULL,
          *logits = NULL, *z = NULL;
    sp_spill *sa = NULL, *sb = NULL;
    sp_layer_scratch *scr = NULL;
    sp_layer_buf lb = {0};
    int rc = sp_alloc((void **)&cin, cw * T, D * 4, "activation chunk");
    if (!rc) rc = sp_alloc((void **)&cout, cw * T, D * 4, "activation chunk");
    if (!rc) rc = sp_alloc((void **)&h, T, D * 4, "window buffer");
    /* Embedding or head (V, d) — whichever is loaded; one at a time. */
    if (!rc) rc = sp_alloc((void **)&big, V, D * 4, "embedding/head");
    if (!rc) rc = sp_alloc((void **)&norm, D, 4, "final norm");
    if (!rc) rc = sp_alloc((void **)&norm_b, D, 4, "final norm");
    if (!rc) rc = sp_alloc((void **)&hb, V, 4, "head bias");
    if (!rc && m->n_pos) rc = sp_alloc((void **)&pos, m->n_pos, D * 4, "position table");
    if (!rc && o->dump_logits) rc = sp_alloc((void **)&logits, N, V * 4, "logits dump");
    if (!rc && o->stats) rc = sp_alloc((void **)&z, T, c->intermediate_size * 4, "MLP intermediate");
    if (!rc) rc = sp_layer_scratch_init(bk, m->arch, dims, T, D, &scr);
    if (!rc) rc = sp_layer_buf_init(m, &lb);
    if (!rc) rc = sp_stream_scratch_pair(o->spill_dir, "eval", N, D, cw * T, &sa, &sb);
    if (rc) goto out;

    /* Embedding: gather rows into spill A (× the family's scale, + learned positions). */
    rc = sp_model_load_embed(m, big, pos);
    if (rc) goto out;
    int64_t width = m->d_embed;
    embed_ctx ec = {m, big, pos, toks->ids, T};
    rc = sp_stream_windows(NULL, width, sa, width, W, T, cw, cin, cout, embed_window, &ec, NULL);
    if (rc) goto out;

    for (int64_t l = 0; l < c->n_layers; l++) {
        double tl = sp_now();
        rc = sp_model_load_layer(m, l, &lb);
        if (rc) goto out;
        const sp_layer_w *w = &lb.w;
        SP_ASSERT(w->d_in == width);
        layer_ctx lc = {scr, w, h, T, o->stats, l, c->n_heads * c->head_dim, c->intermediate_size, z};
        if (o->stats) SP_ASSERT(w->ffn >= 0 && w->ffn <= c->intermediate_size && w->d_in <= D && w->d_mid <= D);
        rc = sp_stream_windows(sa, width, sb, w->d_out, W, T, cw, cin, cout, layer_window, &lc, NULL);
        if (rc) goto out;
        sp_spill *t = sa;
        sa = sb;
        sb = t;
        width = w->d_out;
        if (o->progress)
            fprintf(stderr, "eval: layer %lld/%lld done (%.2fs, %.0f tok/s)\n", (long long)l + 1, (long long)c->n_layers,
                    sp_now() - tl, (double)N / (sp_now() - tl + 1e-9));
    }

    sp_head hd = {.w = big, .b = hb, .norm = norm, .norm_b = norm_b};
    rc = sp_model_load_head(m, &hd);
    if (rc) goto out;
    head_ctx hc = {scr, &hd, width, T, V, toks->ids, logits, 0.0, o->stats};
    rc = sp_stream_windows(sa, width, NULL, width, W, T, cw, cin, cout, head_window, &hc, NULL);
    double sum = hc.sum;
    if (rc) goto out;
    if (o->dump_logits) {
        rc = sp_npy_out_write(o->dump_logits, logits, N * V);
        if (rc) goto out;
    }
    r->windows = W;
    r->tokens = W * (T - 1);
    r->nll = sum / (double)r->tokens;
    r->ppl = exp(r->nll);
    r->seconds = sp_now() - t0;
    r->tokens_per_s = (double)N / (r->seconds > 0 ? r->seconds : 1e-9);
    r->peak_rss_bytes = sp_peak_rss_bytes();
    if (!isfinite(r->nll)) rc = sp_fail(SP_EX_DATAERR, "%s: evaluation produced a non-finite NLL", m->dir);
out:
    sp_spill_free(sa, 1);
    sp_spill_free(sb, 1);
    sp_layer_buf_free(&lb);
    sp_layer_scratch_free(scr);
    free(cin);
    free(cout);
    free(h);
    free(big);
    free(norm);
    free(norm_b);
    free(hb);
    free(pos);
    free(logits);
    free(z);
    return rc;
}
