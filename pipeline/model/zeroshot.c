/* pipeline/model/zeroshot.c — lm-eval's multiple-choice log-likelihoods,
 * streamed layer by layer (see zeroshot.h). */
#include "zeroshot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "eval.h"
#include "fileio.h"
#include "backend.h"
#include "spill.h"
#include "stream.h"

/* ---- the plan ---- */

static int grow(void **a, int64_t cap, size_t elem, const char *what) {
    void *n = realloc(*a, (size_t)cap * elem);
    if (!n) return sp_fail(SP_EX_SOFTWARE, "out of memory for %s (%lld entries)", what, (long long)cap);
    *a = n;
    return 0;
}

static int need_ids(sp_zs_plan *p, int64_t more) {
    int64_t want;
    if (sp_add_i64(p->n_ids, more, &want)) return sp_fail(SP_EX_USAGE, "task token count overflows");
    if (want <= p->ids_cap) return 0;
    int64_t cap = p->ids_cap ? p->ids_cap : 4096;
    while (cap < want) cap *= 2;
    SP_TRY(grow((void **)&p->ids, cap, sizeof(int32_t), "task token ids"));
    p->ids_cap = cap;
    return 0;
}

static int need_req(sp_zs_plan *p) {
    if (p->n_req < p->req_cap) return 0;
    int64_t cap = p->req_cap ? p->req_cap * 2 : 1024;
    int64_t **arr[] = {&p->r_out, &p->r_off, &p->r_n, &p->r_row};
    for (size_t i = 0; i < sizeof arr / sizeof arr[0]; i++) SP_TRY(grow((void **)arr[i], cap, sizeof(int64_t), "task requests"));
    p->req_cap = cap;
    return 0;
}

static int need_group(sp_zs_plan *p) {
    if (p->n_groups < p->group_cap) return 0;
    int64_t cap = p->group_cap ? p->group_cap * 2 : 1024;
    int64_t **arr[] = {&p->g_pre_off, &p->g_pre_n, &p->g_row_off, &p->g_req0, &p->g_nreq};
    for (size_t i = 0; i < sizeof arr / sizeof arr[0]; i++) SP_TRY(grow((void **)arr[i], cap, sizeof(int64_t), "task groups"));
    p->group_cap = cap;
    return 0;
}

void sp_zs_plan_free(sp_zs_plan *p) {
    if (!p) return;
    free(p->ids);
    free(p->g_pre_off);
    free(p->g_pre_n);
    free(p->g_row_off);
    free(p->g_req0);
    free(p->g_nreq);
    free(p->r_out);
    free(p->r_off);
    free(p->r_n);
    free(p->r_row);
    memset(p, 0, sizeof *p);
}

int64_t sp_zs_slots(sp_mctask *const *tasks, int n_tasks) {
    int64_t n = 0;
    for (int t = 0; t < n_tasks; t++)
        for (int64_t i = 0; i < tasks[t]->n_items; i++) n += tasks[t]->items[i].n_choices;
    return n;
}

/* Opens a group whose prefix is pre[0..np) (copied into ids). */
static int group_begin(sp_zs_plan *p, const int32_t *pre, int64_t np) {
    SP_TRY(need_group(p));
    SP_TRY(need_ids(p, np));
    int64_t g = p->n_groups++;
    p->g_pre_off[g] = p->n_ids;
    p->g_pre_n[g] = np;
    memcpy(p->ids + p->n_ids, pre, (size_t)np * sizeof(int32_t));
    p->n_ids += np;
    p->g_row_off[g] = p->rows;
    p->g_req0[g] = p->n_req;
    p->g_nreq[g] = 0;
    p->rows += np;
    if (np > p->seq_max) p->seq_max = np;
    return 0;
}

/* Adds a request with continuation cont[0..n) to the open group. */
static int group_add(sp_zs_plan *p, const int32_t *cont, int64_t n, int64_t slot) {
    SP_TRY(need_req(p));
    SP_TRY(need_ids(p, n));
    int64_t g = p->n_groups - 1, r = p->n_req++, np = p->g_pre_n[g];
    p->r_out[r] = slot;
    p->r_off[r] = p->n_ids;
    p->r_n[r] = n;
    p->r_row[r] = p->rows - p->g_row_off[g] - np;
    memcpy(p->ids + p->n_ids, cont, (size_t)n * sizeof(int32_t));
    p->n_ids += n;
    p->g_nreq[g]++;
    p->rows += n - 1;
    if (np + n - 1 > p->seq_max) p->seq_max = np + n - 1;
    int64_t gr = p->rows - p->g_row_off[g];
    if (gr > p->group_rows_max) p->group_rows_max = gr;
    return 0;
}

static int check_ids(const sp_model *m, const sp_mctask *t, const sp_mctask_item *it, const int32_t *ids, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return sp_fail(SP_EX_DATAERR, "%s:%lld: the tokenizer gave id %d, past the model's vocabulary (%lld)", t->path,
                           (long long)it->line, (int)ids[i], (long long)m->cfg.vocab_size);
    return 0;
}

int sp_zs_plan_build(const sp_model *m, sp_tok *tok, sp_mctask *const *tasks, int n_tasks, int64_t max_length,
                     sp_zs_plan *p) {
    memset(p, 0, sizeof *p);
    int64_t L = max_length > 0 ? max_length : sp_model_positions(m);
    if (L <= 0) L = SP_ZS_MAX_LENGTH_DEFAULT;
    p->L = L;
    int32_t prefix_id = sp_tok_bos_id(tok) >= 0 ? sp_tok_bos_id(tok) : sp_tok_eos_id(tok);
    sp_tok_ids ctx = {0}, whole = {0}, conts = {0};
    int64_t *c_off = NULL, *c_n = NULL, c_cap = 0;
    char *str = NULL;
    int64_t str_cap = 0, slot = 0;
    int rc = 0;
    for (int ti = 0; ti < n_tasks && !rc; ti++) {
        const sp_mctask *t = tasks[ti];
        for (int64_t ii = 0; ii < t->n_items && !rc; ii++) {
            const sp_mctask_item *it = &t->items[ii];
            int64_t cl = (int64_t)strlen(it->context), dl = (int64_t)strlen(it->delim);
            int empty = cl == 0;
            ctx.n = 0;
            if (empty) {
                if (prefix_id < 0) {
                    rc = sp_fail(SP_EX_DATAERR, "%s:%lld: an empty context is scored after the BOS (or EOS) token, and %s has neither",
                                 t->path, (long long)it->line, sp_tok_path(tok));
                    break;
                }
                rc = sp_tok_ids_push(&ctx, prefix_id);
            } else {
                /* lm-eval's _encode_pair: trailing whitespace moves to the continuation */
                int64_t keep = cl - sp_mctask_rstrip_bytes(it->context, cl);
                rc = sp_tok_encode(tok, it->context, keep, 0, &ctx);
                if (!rc && ctx.n == 0)
                    rc = sp_fail(SP_EX_DATAERR, "%s:%lld: the context tokenizes to no tokens (it is only whitespace)", t->path,
                                 (long long)it->line);
            }
            if (!rc) rc = check_ids(m, t, it, ctx.ids, ctx.n);
            if (rc) break;
            if (it->n_choices > c_cap) {
                c_cap = it->n_choices;
                rc = grow((void **)&c_off, c_cap, sizeof(int64_t), "choices");
                if (!rc) rc = grow((void **)&c_n, c_cap, sizeof(int64_t), "choices");
                if (rc) break;
            }
            /* every choice's continuation ids, into conts */
            conts.n = 0;
            for (int64_t c = 0; c < it->n_choices && !rc; c++) {
                int64_t chl = (int64_t)strlen(it->choice[c]), need = cl + dl + chl + 1;
                if (need > str_cap) {
                    str_cap = need * 2;
                    rc = grow((void **)&str, str_cap, 1, "task text");
                    if (rc) break;
                }
                /* empty context: encode(delim + choice); else encode(context + delim + choice) past the context's ids */
                memcpy(str, it->context, (size_t)cl);
                memcpy(str + cl, it->delim, (size_t)dl);
                memcpy(str + cl + dl, it->choice[c], (size_t)chl);
                whole.n = 0;
                rc = sp_tok_encode(tok, str, cl + dl + chl, 0, &whole);
                if (rc) break;
                int64_t skip = empty ? 0 : ctx.n;
                c_off[c] = conts.n;
                c_n[c] = whole.n - skip;
                if (c_n[c] <= 0) {
                    rc = sp_fail(SP_EX_DATAERR, "%s:%lld: choice %lld adds no token after the context's %lld (lm-eval's split)",
                                 t->path, (long long)it->line, (long long)c, (long long)ctx.n);
                    break;
                }
                if (c_n[c] > L) {
                    rc = sp_fail(SP_EX_DATAERR, "%s:%lld: choice %lld is %lld tokens, longer than the model's context of %lld "
                                 "(lm-eval refuses it too; --max-length raises the context)",
                                 t->path, (long long)it->line, (long long)c, (long long)c_n[c], (long long)L);
                    break;
                }
                rc = check_ids(m, t, it, whole.ids + skip, c_n[c]);
                for (int64_t k = 0; !rc && k < c_n[c]; k++) rc = sp_tok_ids_push(&conts, whole.ids[skip + k]);
            }
            if (rc) break;
            /* the choices that fit share one group; each truncated one has its own */
            int shared = 0;
            for (int64_t c = 0; c < it->n_choices && !rc; c++) {
                if (ctx.n + c_n[c] - 1 > L) continue;
                if (!shared) rc = group_begin(p, ctx.ids, ctx.n);
                shared = 1;
                if (!rc) rc = group_add(p, conts.ids + c_off[c], c_n[c], slot + c);
            }
            for (int64_t c = 0; c < it->n_choices && !rc; c++) {
                if (ctx.n + c_n[c] - 1 <= L) continue;
                int64_t np = L + 1 - c_n[c]; /* (ctx + cont)[-(L+1):] minus the continuation */
                rc = group_begin(p, ctx.ids + ctx.n - np, np);
                if (!rc) rc = group_add(p, conts.ids + c_off[c], c_n[c], slot + c);
            }
            slot += it->n_choices;
        }
    }
    sp_tok_ids_free(&ctx);
    sp_tok_ids_free(&whole);
    sp_tok_ids_free(&conts);
    free(c_off);
    free(c_n);
    free(str);
    if (rc) sp_zs_plan_free(p);
    return rc;
}

/* ---- scoring ---- */

/* The groups [g0, *g1) of one chunk: whole groups, at most max_rows rows
 * (at least one group; max_rows >= group_rows_max). */
static int64_t chunk_end(const sp_zs_plan *p, int64_t g0, int64_t max_rows) {
    int64_t g1 = g0 + 1, r0 = p->g_row_off[g0];
    while (g1 < p->n_groups) {
        int64_t end = g1 + 1 < p->n_groups ? p->g_row_off[g1 + 1] : p->rows;
        if (end - r0 > max_rows) break;
        g1++;
    }
    return g1;
}

static int64_t group_rows(const sp_zs_plan *p, int64_t g) {
    return (g + 1 < p->n_groups ? p->g_row_off[g + 1] : p->rows) - p->g_row_off[g];
}

int sp_zs_score(const sp_model *m, const sp_zs_plan *p, const sp_zs_opts *o, double *loglik) {
    const sp_config *c = &m->cfg;
    const sp_bk *bk = o->bk;
    SP_ASSERT(bk && bk->host_shared);
    SP_ASSERT(p->n_groups > 0 && p->group_rows_max >= 1);
    const int64_t D = c->hidden_size, V = c->vocab_size, KW = m->dims.n_kv_heads * m->dims.head_dim;
    const int64_t S = p->seq_max + 1; /* a choice's head rows: P's last, its rows, one pad */
    char what[64];
    snprintf(what, sizeof what, "a task sequence of %lld tokens", (long long)p->seq_max);
    SP_TRY(sp_model_check_positions(m, p->seq_max, what, "exceeds", o->progress ? what : NULL));
    int64_t budget = o->chunk_bytes > 0 ? o->chunk_bytes : SP_EVAL_CHUNK_BYTES_DEFAULT;
    int64_t cr = budget / (D * 4 * 4); /* chunk in, chunk out, two spill buffers */
    if (cr < p->group_rows_max) cr = p->group_rows_max;
    if (cr > p->rows) cr = p->rows;

    float *cin = NULL, *cout = NULL, *h = NULL, *hx = NULL, *big = NULL, *norm = NULL, *norm_b = NULL, *hb = NULL,
          *pos = NULL, *kk = NULL, *kv_v = NULL;
    int32_t *tk = NULL;
    sp_spill *sa = NULL, *sb = NULL;
    sp_layer_scratch *scr = NULL;
    sp_layer_buf lb = {0};
    int rc = sp_alloc((void **)&cin, cr, D * 4, "activation chunk");
    if (!rc) rc = sp_alloc((void **)&cout, cr, D * 4, "activation chunk");
    if (!rc) rc = sp_alloc((void **)&h, S, D * 4, "sequence buffer");
    if (!rc) rc = sp_alloc((void **)&hx, S, D * 4, "head rows");
    if (!rc) rc = sp_alloc((void **)&tk, S, 4, "head tokens");
    if (!rc) rc = sp_alloc((void **)&kk, S, KW * 4, "KV cache");
    if (!rc) rc = sp_alloc((void **)&kv_v, S, KW * 4, "KV cache");
    if (!rc) rc = sp_alloc((void **)&big, V, D * 4, "embedding/head");
    if (!rc) rc = sp_alloc((void **)&norm, D, 4, "final norm");
    if (!rc) rc = sp_alloc((void **)&norm_b, D, 4, "final norm");
    if (!rc) rc = sp_alloc((void **)&hb, V, 4, "head bias");
    if (!rc && m->n_pos) rc = sp_alloc((void **)&pos, m->n_pos, D * 4, "position table");
    if (!rc) rc = sp_layer_scratch_init(bk, m->arch, &m->dims, S, D, &scr);
    if (!rc) rc = sp_layer_buf_init(m, &lb);
    if (!rc) rc = sp_stream_scratch_pair(o->spill_dir, "tasks", p->rows, D, cr, &sa, &sb);
    if (rc) goto out;
    sp_layer_kv kv = {.k = kk, .v = kv_v};

    /* Embedding: each group's prefix at positions 0.., each choice's rows after it. */
    rc = sp_model_load_embed(m, big, pos);
    if (rc) goto out;
    int64_t width = m->d_embed;
    for (int64_t g0 = 0, g1; g0 < p->n_groups && !rc; g0 = g1) {
        g1 = chunk_end(p, g0, cr);
        int64_t r0 = p->g_row_off[g0], nr = 0;
        for (int64_t g = g0; g < g1; g++) {
            float *y = cout + (p->g_row_off[g] - r0) * width;
            int64_t np = p->g_pre_n[g];
            sp_model_embed_rows(m, big, pos, p->ids + p->g_pre_off[g], np, 0, y);
            for (int64_t r = p->g_req0[g]; r < p->g_req0[g] + p->g_nreq[g]; r++)
                if (p->r_n[r] > 1) sp_model_embed_rows(m, big, pos, p->ids + p->r_off[r], p->r_n[r] - 1, np,
                                                       y + (np + p->r_row[r]) * width);
            nr += group_rows(p, g);
        }
        rc = sp_spill_write(sa, r0, nr, width, cout);
    }
    if (rc) goto out;

    for (int64_t l = 0; l < c->n_layers; l++) {
        double tl = sp_now();
        rc = sp_model_load_layer(m, l, &lb);
        if (rc) goto out;
        const sp_layer_w *w = &lb.w;
        SP_ASSERT(w->d_in == width);
        for (int64_t g0 = 0, g1; g0 < p->n_groups && !rc; g0 = g1) {
            g1 = chunk_end(p, g0, cr);
            int64_t r0 = p->g_row_off[g0], nr = (g1 < p->n_groups ? p->g_row_off[g1] : p->rows) - r0;
            rc = sp_spill_read(sa, r0, nr, width, cin);
            if (rc) break;
            for (int64_t g = g0; g < g1; g++) {
                const float *x = cin + (p->g_row_off[g] - r0) * width;
                float *y = cout + (p->g_row_off[g] - r0) * w->d_out;
                int64_t np = p->g_pre_n[g];
                sp_layer_block_kv(scr, w, x, np, 0, &kv, h, y);
                for (int64_t r = p->g_req0[g]; r < p->g_req0[g] + p->g_nreq[g]; r++) {
                    int64_t off = np + p->r_row[r];
                    if (p->r_n[r] > 1)
                        sp_layer_block_kv(scr, w, x + off * width, p->r_n[r] - 1, np, &kv, h, y + off * w->d_out);
                }
            }
            rc = sp_spill_write(sb, r0, nr, w->d_out, cout);
        }
        if (rc) goto out;
        sp_spill *t = sa;
        sa = sb;
        sb = t;
        width = w->d_out;
        if (o->progress)
            fprintf(stderr, "eval: layer %lld/%lld done (%.2fs, %.0f tok/s)\n", (long long)l + 1, (long long)c->n_layers,
                    sp_now() - tl, (double)p->rows / (sp_now() - tl + 1e-9));
    }

    sp_head hd = {.w = big, .b = hb, .norm = norm, .norm_b = norm_b};
    rc = sp_model_load_head(m, &hd);
    if (rc) goto out;
    for (int64_t g0 = 0, g1; g0 < p->n_groups && !rc; g0 = g1) {
        g1 = chunk_end(p, g0, cr);
        int64_t r0 = p->g_row_off[g0], nr = (g1 < p->n_groups ? p->g_row_off[g1] : p->rows) - r0;
        rc = sp_spill_read(sa, r0, nr, width, cin);
        if (rc) break;
        for (int64_t g = g0; g < g1 && !rc; g++) {
            const float *x = cin + (p->g_row_off[g] - r0) * width;
            int64_t np = p->g_pre_n[g];
            for (int64_t r = p->g_req0[g]; r < p->g_req0[g] + p->g_nreq[g]; r++) {
                int64_t n = p->r_n[r], off = np + p->r_row[r];
                /* rows: P's last, then the choice's n-1, then a pad (its logits unused) */
                memcpy(hx, x + (np - 1) * width, (size_t)width * 4);
                if (n > 1) memcpy(hx + width, x + off * width, (size_t)((n - 1) * width) * 4);
                memcpy(hx + n * width, hx + (n - 1) * width, (size_t)width * 4);
                tk[0] = p->ids[p->g_pre_off[g] + np - 1];
                memcpy(tk + 1, p->ids + p->r_off[r], (size_t)n * 4);
                double nll = sp_layer_head_nll(scr, hd.kind, hd.has_norm ? hd.norm : NULL, hd.has_norm_b ? hd.norm_b : NULL,
                                               hd.w, hd.has_b ? hd.b : NULL, width, hx, tk, n + 1, NULL);
                if (!isfinite(nll)) {
                    rc = sp_fail(SP_EX_DATAERR, "%s: a choice's log-likelihood is not finite", m->dir);
                    break;
                }
                loglik[p->r_out[r]] = -nll;
            }
        }
    }
out:
    sp_spill_free(sa, 1);
    sp_spill_free(sb, 1);
    sp_layer_buf_free(&lb);
    sp_layer_scratch_free(scr);
    free(cin);
    free(cout);
    free(h);
    free(hx);
    free(tk);
    free(kk);
    free(kv_v);
    free(big);
    free(norm);
    free(norm_b);
    free(hb);
    free(pos);
    return rc;
}

/* ---- metrics ---- */

static double sem(double mean, int64_t n) {
    if (n < 2) return NAN;
    /* values are 0/1: Σ(x - mean)² = n·mean·(1 - mean) */
    double ss = (double)n * mean * (1.0 - mean);
    return sqrt(ss / (double)(n - 1)) / sqrt((double)n);
}

void sp_zs_task_metrics(const sp_mctask *t, const double *loglik, sp_zs_metrics *out, int64_t *pred, int64_t *pred_norm) {
    int64_t hit = 0, hit_norm = 0, s = 0;
    for (int64_t i = 0; i < t->n_items; i++) {
        const sp_mctask_item *it = &t->items[i];
        int64_t best = 0, best_n = 0;
        double bv = -INFINITY, bn = -INFINITY;
        for (int64_t c = 0; c < it->n_choices; c++) {
            double ll = loglik[s + c];
            double nl = ll / (double)sp_mctask_chars(it->choice[c], (int64_t)strlen(it->choice[c]));
            if (c == 0 || ll > bv) { /* the first maximum wins, as numpy's argmax */
                best = c;
                bv = ll;
            }
            if (c == 0 || nl > bn) {
                best_n = c;
                bn = nl;
            }
        }
        hit += best == it->gold;
        hit_norm += best_n == it->gold;
        if (pred) pred[i] = best;
        if (pred_norm) pred_norm[i] = best_n;
        s += it->n_choices;
    }
    out->count = t->n_items;
    out->acc = (double)hit / (double)t->n_items;
    out->acc_norm = (double)hit_norm / (double)t->n_items;
    out->acc_stderr = sem(out->acc, t->n_items);
    out->acc_norm_stderr = sem(out->acc_norm, t->n_items);
}
