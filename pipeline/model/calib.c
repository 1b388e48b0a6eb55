/* pipeline/model/calib.c — calibration and evaluation windows from text (the rule
 * is in calib.h). One streaming reader, stream_docs(), feeds every document's
 * ids with their position in the concatenated stream to a sink; the sinks
 * count (random, pass 1), gather windows (random, pass 2) or copy a prefix
 * (first, eval). */
#include "calib.h"

#include "error.h"
#include "textdoc.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

uint64_t sp_calib_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t sp_calib_uniform(uint64_t *state, uint64_t range) {
    SP_ASSERT(range >= 1);
    uint64_t t = (0 - range) % range; /* 2^64 mod range */
    for (;;) {
        uint64_t x = sp_calib_splitmix64(state);
        if (x <= UINT64_MAX - t) return x % range; /* x < 2^64 - t */
    }
}

/* ---------------------------------------------------------------- stream */

/* Receives ids[0..n) at stream positions [pos, pos+n); sets *stop to end the
 * pass early. Returns 0 or an error code (with its message set). */
typedef int (*sink_fn)(void *ctx, const int32_t *ids, int64_t n, int64_t pos, int *stop);

typedef struct reader {
    const char *path;  /* the text file */
    sp_tok *tok;
    int64_t vocab;
    sp_tok_ids buf;    /* one document's ids, reused */
    int64_t docs;      /* documents read in the last pass */
} reader;

/* One pass over the file: *total receives the ids seen (all of them unless a
 * sink stopped the pass). */
static int stream_docs(reader *r, sink_fn sink, void *ctx, int64_t *total) {
    sp_textdoc *d;
    SP_TRY(sp_textdoc_open(r->path, 0, &d));
    int64_t pos = 0;
    int rc = 0, stop = 0;
    r->docs = 0;
    while (!rc && !stop) {
        const char *s;
        int64_t len;
        int done;
        rc = sp_textdoc_next(d, &s, &len, &done);
        if (rc || done) break;
        r->buf.n = 0;
        rc = sp_tok_encode(r->tok, s, len, 1, &r->buf);
        if (rc) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", sp_errmsg());
            rc = sp_fail(rc, "%s: document %lld (line %lld): %s", r->path, (long long)sp_textdoc_index(d),
                         (long long)sp_textdoc_line(d), msg);
            break;
        }
        r->docs++;
        for (int64_t i = 0; r->vocab > 0 && i < r->buf.n; i++)
            if (r->buf.ids[i] < 0 || r->buf.ids[i] >= r->vocab) {
                rc = sp_fail(SP_EX_DATAERR,
                             "%s: document %lld (line %lld): %s gives id %d, outside the model's vocabulary of %lld",
                             r->path, (long long)sp_textdoc_index(d), (long long)sp_textdoc_line(d), sp_tok_path(r->tok),
                             (int)r->buf.ids[i], (long long)r->vocab);
                break;
            }
        if (!rc && r->buf.n) rc = sink(ctx, r->buf.ids, r->buf.n, pos, &stop);
        pos += r->buf.n;
    }
    sp_textdoc_free(d);
    *total = pos;
    return rc;
}

/* ---------------------------------------------------------------- sinks */

/* Counts only (the stream length). */
static int sink_count(void *ctx, const int32_t *ids, int64_t n, int64_t pos, int *stop) {
    (void)ctx, (void)ids, (void)n, (void)pos, (void)stop;
    return 0;
}

/* The prefix S[0, cap) into dst; cap < 0: all of it, grown by doubling. */
typedef struct prefix_sink {
    int32_t *dst;
    int64_t n, cap, limit; /* limit: the tokens wanted (-1: all) */
    int64_t held_max;      /* > 0: the most tokens it may hold (the caller's budget) */
    const reader *r;       /* for the message */
    const sp_calib_opts *o;
} prefix_sink;

static int over_budget(const reader *r, const sp_calib_opts *o, int64_t tokens, const char *advice) {
    return sp_fail(SP_EX_USAGE, "%s: %s needs more than %lld tokens (%s), %lld bytes of ids, but %s allows %lld bytes; %s",
                   r->path, o->what ? o->what : "the text", (long long)tokens, sp_tok_path(r->tok), (long long)tokens * 4,
                   o->budget_what ? o->budget_what : "the memory budget", (long long)o->ids_bytes_max, advice);
}

static int sink_prefix(void *ctx, const int32_t *ids, int64_t n, int64_t pos, int *stop) {
    prefix_sink *p = ctx;
    (void)pos;
    int64_t take = n;
    if (p->limit >= 0 && take > p->limit - p->n) take = p->limit - p->n;
    if (p->held_max > 0 && take > p->held_max - p->n) /* every window of a text: refused as soon as it passes */
        return over_budget(p->r, p->o, p->held_max, "evaluate its first windows only (--windows N, [eval] windows), or "
                                                    "raise the budget");
    if (p->n + take > p->cap) {
        int64_t cap = p->cap ? p->cap : 1 << 16;
        while (cap < p->n + take)
            if (sp_mul_i64(cap, 2, &cap)) return sp_fail(SP_EX_SOFTWARE, "token stream too long");
        int64_t bytes;
        if (sp_mul_i64(cap, (int64_t)sizeof(int32_t), &bytes) || (uint64_t)bytes > SIZE_MAX)
            return sp_fail(SP_EX_SOFTWARE, "token stream too long");
        int32_t *d = realloc(p->dst, (size_t)bytes);
        if (!d) return sp_fail(SP_EX_SOFTWARE, "out of memory for %lld tokens", (long long)cap);
        p->dst = d, p->cap = cap;
    }
    memcpy(p->dst + p->n, ids, (size_t)take * sizeof(int32_t));
    p->n += take;
    if (p->limit >= 0 && p->n >= p->limit) *stop = 1;
    return 0;
}

/* Random windows: start[k] for window k; order[] sorts the windows by start,
 * so the windows touching a document are a contiguous run of order[]. */
typedef struct gather_sink {
    int32_t *dst;          /* (n*T) */
    const int64_t *start;  /* (n) */
    const int64_t *order;  /* (n) window indices by ascending start */
    int64_t n, T;
    int64_t lo;            /* first window in order[] not yet complete */
} gather_sink;

static int sink_gather(void *ctx, const int32_t *ids, int64_t n, int64_t pos, int *stop) {
    gather_sink *g = ctx;
    int64_t end = pos + n;
    for (int64_t q = g->lo; q < g->n; q++) {
        int64_t k = g->order[q], s = g->start[k];
        if (s >= end) break;
        int64_t a = s > pos ? s : pos, b = s + g->T < end ? s + g->T : end;
        if (a < b) memcpy(g->dst + k * g->T + (a - s), ids + (a - pos), (size_t)(b - a) * sizeof(int32_t));
    }
    while (g->lo < g->n && g->start[g->order[g->lo]] + g->T <= end) g->lo++;
    if (g->lo == g->n) *stop = 1;
    return 0;
}

static const int64_t *g_sort_start; /* qsort has no context argument */
static int by_start(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    int64_t sx = g_sort_start[x], sy = g_sort_start[y];
    return sx < sy ? -1 : sx > sy ? 1 : (x > y) - (x < y);
}

/* ---------------------------------------------------------------- load */

static int too_few(const reader *r, const sp_calib_opts *o, int64_t have, int64_t windows, int64_t need) {
    return sp_fail(SP_EX_DATAERR,
                   "%s: %s has %lld tokens (%lld documents, %s), but %lld windows x %lld tokens need %lld; give "
                   "more text or lower the window count or length",
                   r->path, o->what ? o->what : "the text", (long long)have, (long long)r->docs, sp_tok_path(r->tok),
                   (long long)windows, (long long)o->seqlen, (long long)need);
}

static int load_random(reader *r, const sp_calib_opts *o, int64_t need, int32_t *dst, int64_t *total) {
    int64_t M, n = o->nsamples, T = o->seqlen;
    SP_TRY(stream_docs(r, sink_count, NULL, &M));
    *total = M;
    if (M < need) return too_few(r, o, M, n, need);
    int64_t *start, *order;
    SP_TRY(sp_alloc((void **)&start, n, sizeof(int64_t), "calibration window starts"));
    int rc = sp_alloc((void **)&order, n, sizeof(int64_t), "calibration window order");
    if (rc) {
        free(start);
        return rc;
    }
    uint64_t state = o->seed;
    for (int64_t k = 0; k < n; k++) {
        start[k] = (int64_t)sp_calib_uniform(&state, (uint64_t)(M - T + 1));
        order[k] = k;
    }
    g_sort_start = start;
    qsort(order, (size_t)n, sizeof(int64_t), by_start);
    g_sort_start = NULL;
    gather_sink g = {.dst = dst, .start = start, .order = order, .n = n, .T = T};
    int64_t M2;
    rc = stream_docs(r, sink_gather, &g, &M2);
    if (!rc && g.lo < n)
        rc = sp_fail(SP_EX_DATAERR, "%s: the text changed while it was read (%lld tokens, then fewer)", r->path,
                     (long long)M);
    free(start);
    free(order);
    return rc;
}

int sp_calib_text_windows(const char *text_path, const char *tok_dir, const sp_calib_opts *o, sp_tokens *out,
                          char *tok_hash) {
    memset(out, 0, sizeof *out);
    SP_ASSERT(o->seqlen >= 2 && o->nsamples >= 0);
    SP_ASSERT(o->nsamples > 0 || o->sampling == SP_CALIB_SAMPLING_FIRST);
    struct stat sb;
    if (stat(tok_dir, &sb) != 0) return sp_fail_errno(SP_EX_NOINPUT, "%s: cannot open the tokenizer folder", tok_dir);
    reader r = {.path = text_path, .vocab = o->vocab};
    int rc = S_ISDIR(sb.st_mode) ? sp_tok_open(tok_dir, &r.tok) : sp_tok_open_file(tok_dir, &r.tok);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        return sp_fail(rc, "%s: %s needs the model's tokenizer: %s", text_path, o->what ? o->what : "the text", msg);
    }
    if (tok_hash) memcpy(tok_hash, sp_tok_hash(r.tok), 33);
    double t0 = sp_now();
    int64_t need = 0, total = 0, windows = o->nsamples;
    const int64_t held_max = o->ids_bytes_max > 0 ? o->ids_bytes_max / (int64_t)sizeof(int32_t) : 0;
    if (windows > 0 && sp_mul_i64(windows, o->seqlen, &need)) {
        rc = sp_fail(SP_EX_USAGE, "%s: %lld windows x %lld tokens overflows", text_path, (long long)windows,
                     (long long)o->seqlen);
    } else if (held_max > 0 && need > held_max) {
        rc = over_budget(&r, o, need, "ask for fewer or shorter windows, or raise the budget");
    } else if (o->sampling == SP_CALIB_SAMPLING_RANDOM) {
        rc = sp_alloc((void **)&out->ids, need, sizeof(int32_t), "calibration tokens");
        if (!rc) rc = load_random(&r, o, need, out->ids, &total);
        if (!rc) out->n = need;
    } else {
        prefix_sink p = {.limit = windows > 0 ? need : -1, .held_max = held_max, .r = &r, .o = o};
        if (windows > 0) {
            rc = sp_alloc((void **)&p.dst, need, sizeof(int32_t), "calibration tokens");
            p.cap = need;
        }
        if (!rc) rc = stream_docs(&r, sink_prefix, &p, &total);
        out->ids = p.dst;
        if (!rc && windows == 0) {
            windows = total / o->seqlen;
            need = windows * o->seqlen;
            if (windows == 0) rc = too_few(&r, o, total, 1, o->seqlen);
        } else if (!rc && p.n < need) {
            rc = too_few(&r, o, total, windows, need);
        }
        if (!rc) out->n = need;
    }
    if (!rc && o->progress)
        fprintf(stderr, "%s %s: %lld windows x %lld tokens (%s) from %lld documents, %lld tokens read; %s (%s); %.2f s\n",
                o->what ? o->what : "text", text_path, (long long)windows, (long long)o->seqlen,
                o->sampling == SP_CALIB_SAMPLING_RANDOM ? "random" : "first", (long long)r.docs, (long long)total,
                sp_tok_path(r.tok), sp_tok_kind_name(r.tok), sp_now() - t0);
    sp_tok_ids_free(&r.buf);
    sp_tok_free(r.tok);
    if (rc) {
        free(out->ids);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

int sp_calib_load(const sp_manifest *mf, int64_t vocab, int progress, sp_tokens *out) {
    if (!mf->calib_text) return sp_tokens_load(mf->calib_tokens, vocab, 0, out);
    sp_calib_opts o = {.seqlen = mf->calib_seqlen,
                       .nsamples = mf->calib_nsamples,
                       .sampling = mf->calib_sampling,
                       .seed = (uint64_t)mf->calib_seed,
                       .vocab = vocab,
                       .what = "[calibration] text",
                       .ids_bytes_max = mf->memory_bytes,
                       .budget_what = "[resources] memory",
                       .progress = progress};
    return sp_calib_text_windows(mf->calib_text, mf->model_path, &o, out, NULL);
}

int sp_calib_load_eval(const sp_manifest *mf, int64_t vocab, int progress, sp_tokens *out) {
    SP_ASSERT(mf->has_eval);
    if (!mf->eval_text) return sp_tokens_load(mf->eval_tokens, vocab, 0, out);
    sp_calib_opts o = {.seqlen = mf->eval_seqlen,
                       .nsamples = mf->eval_windows,
                       .sampling = SP_CALIB_SAMPLING_FIRST,
                       .vocab = vocab,
                       .what = "[eval] text",
                       .ids_bytes_max = mf->memory_bytes,
                       .budget_what = "[resources] memory",
                       .progress = progress};
    return sp_calib_text_windows(mf->eval_text, mf->model_path, &o, out, NULL);
}
