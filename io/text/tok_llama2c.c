/* io/text/tok_llama2c.c — llama2.c's tokenizer.bin and its encoder.
 *
 * File format (llama2.c run.c build_tokenizer), little-endian:
 *   int32 max_token_length
 *   per token, to the end of the file: float32 score, int32 len, len bytes
 * Ids 0, 1, 2 are unk, BOS, EOS; when ids 3..258 are "<0x00>".."<0xFF>" they
 * are the byte fallbacks. The file does not store the vocabulary size: we
 * read tokens to the end of the file and, when config.json beside it has a
 * vocab_size, require the two to agree (a file truncated at a token boundary
 * would otherwise pass).
 *
 * Encoding is llama2.c's encode(), written from its definition:
 *   1. if the text is non-empty, a dummy prefix " " (the id of the piece " ");
 *   2. every UTF-8 code point is looked up as a piece; a code point that is
 *      not a piece becomes one token per byte, id = byte + 3. A vocabulary
 *      without the <0xNN> pieces (babyllama105's 105 characters) has no byte
 *      fallback: each such byte is unk (0), one per byte, which is what the
 *      shared reference token files hold (run.c's byte + 3 would name
 *      unrelated characters there);
 *   3. repeatedly merge the adjacent pair whose concatenation is a piece with
 *      the highest score (the leftmost on ties; scores <= -1e10 never merge),
 *      until no pair is a piece.
 * Step 3 is quadratic as run.c writes it; here a heap keyed by (score desc,
 * left position asc) holds the candidate pairs, and a popped entry is used
 * only if both of its symbols are still alive, adjacent and unchanged. That
 * picks the same pair at every step as the linear scan, in O(n log n).
 * BOS (1) is added by the add_special rule; EOS never (llama2.c's generate).
 */
#include "tokenizer.h"

#include "error.h"
#include "fileio.h"
#include "json.h"
#include "modelfile.h"

#include <cjson/cJSON.h>
#include <xxhash.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct l2c {
    int32_t n;        /* vocabulary size */
    char *pool;       /* all piece bytes */
    int64_t *off;     /* (n) offset of piece i in pool */
    int32_t *len;     /* (n) */
    float *score;     /* (n) */
    int32_t *slot;    /* (cap) hash slots: piece id + 1, 0 = empty */
    int64_t cap;      /* power of two */
    int byte_fallback; /* ids 3..258 are <0xNN> */
    /* scratch, reused between documents */
    int32_t *sym_id, *prev, *next; /* (sym_cap) */
    int64_t sym_cap;
    struct l2c_merge *heap;
    int64_t heap_n, heap_cap;
} l2c;

typedef struct l2c_merge {
    float score;
    int32_t pos, right, left_id, right_id, new_id;
} l2c_merge;

static uint64_t hash_bytes(const char *s, int64_t n) { return XXH3_64bits(s, (size_t)n); }

static int32_t lookup(const l2c *v, const char *s, int64_t n) {
    uint64_t h = hash_bytes(s, n);
    for (int64_t i = (int64_t)(h & (uint64_t)(v->cap - 1));; i = (i + 1) & (v->cap - 1)) {
        int32_t e = v->slot[i];
        if (!e) return -1;
        e--;
        if (v->len[e] == n && memcmp(v->pool + v->off[e], s, (size_t)n) == 0) return e;
    }
}

static void l2c_free(void *p) {
    l2c *v = p;
    if (!v) return;
    free(v->pool);
    free(v->off);
    free(v->len);
    free(v->score);
    free(v->slot);
    free(v->sym_id);
    free(v->prev);
    free(v->next);
    free(v->heap);
    free(v);
}

static int better(const l2c_merge *a, const l2c_merge *b) {
    return a->score > b->score || (a->score == b->score && a->pos < b->pos);
}

static int heap_push(l2c *v, l2c_merge m) {
    if (v->heap_n == v->heap_cap) {
        int64_t nc = v->heap_cap ? v->heap_cap * 2 : 1024;
        l2c_merge *h = realloc(v->heap, (size_t)nc * sizeof *h);
        if (!h) return sp_fail(SP_EX_SOFTWARE, "tokenizer.bin: out of memory");
        v->heap = h;
        v->heap_cap = nc;
    }
    int64_t i = v->heap_n++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!better(&m, &v->heap[p])) break;
        v->heap[i] = v->heap[p];
        i = p;
    }
    v->heap[i] = m;
    return 0;
}

static l2c_merge heap_pop(l2c *v) {
    l2c_merge top = v->heap[0], last = v->heap[--v->heap_n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= v->heap_n) break;
        if (c + 1 < v->heap_n && better(&v->heap[c + 1], &v->heap[c])) c++;
        if (!better(&v->heap[c], &last)) break;
        v->heap[i] = v->heap[c];
        i = c;
    }
    if (v->heap_n) v->heap[i] = last;
    return top;
}

/* Pushes the pair (a, b) if their concatenation is a piece that may merge. */
static int consider(l2c *v, int32_t a, int32_t b) {
    char buf[1024];
    int32_t ia = v->sym_id[a], ib = v->sym_id[b];
    int64_t n = (int64_t)v->len[ia] + v->len[ib];
    if (n > (int64_t)sizeof buf) return 0; /* longer than any piece we accept */
    memcpy(buf, v->pool + v->off[ia], (size_t)v->len[ia]);
    memcpy(buf + v->len[ia], v->pool + v->off[ib], (size_t)v->len[ib]);
    int32_t id = lookup(v, buf, n);
    if (id < 0 || !(v->score[id] > -1e10f)) return 0;
    return heap_push(v, (l2c_merge){v->score[id], a, b, ia, ib, id});
}

static int sym_reserve(l2c *v, int64_t need) {
    if (need <= v->sym_cap) return 0;
    int64_t nc = v->sym_cap ? v->sym_cap : 1024;
    while (nc < need) nc *= 2;
    int32_t *a = realloc(v->sym_id, (size_t)nc * 4);
    if (a) v->sym_id = a;
    int32_t *b = a ? realloc(v->prev, (size_t)nc * 4) : NULL;
    if (b) v->prev = b;
    int32_t *c = b ? realloc(v->next, (size_t)nc * 4) : NULL;
    if (c) v->next = c;
    if (!c) return sp_fail(SP_EX_SOFTWARE, "tokenizer.bin: out of memory for %lld symbols", (long long)need);
    v->sym_cap = nc;
    return 0;
}

static int l2c_encode(void *p, const char *text, int64_t len, int64_t text_max, sp_tok_ids *out) {
    (void)text_max; /* no normalizer: the work is the text itself */
    l2c *v = p;
    if (len == 0) return 0;
    if (len >= INT32_MAX - 2) return sp_fail(SP_EX_DATAERR, "document of %lld bytes is too long for tokenizer.bin", (long long)len);
    SP_TRY(sym_reserve(v, len + 1));
    int64_t n = 0;
    int32_t sp = lookup(v, " ", 1);
    if (sp >= 0) v->sym_id[n++] = sp;
    else v->sym_id[n++] = v->byte_fallback ? ' ' + 3 : 0;
    for (int64_t i = 0; i < len;) {
        unsigned char c = (unsigned char)text[i];
        int64_t cl = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; /* text is valid UTF-8 */
        int32_t id = lookup(v, text + i, cl);
        if (id >= 0) v->sym_id[n++] = id;
        else
            for (int64_t k = 0; k < cl; k++) {
                v->sym_id[n++] = v->byte_fallback ? (int32_t)(unsigned char)text[i + k] + 3 : 0;
            }
        i += cl;
    }
    for (int64_t i = 0; i < n; i++) {
        v->prev[i] = (int32_t)i - 1;
        v->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    v->heap_n = 0;
    for (int64_t i = 0; i + 1 < n; i++) SP_TRY(consider(v, (int32_t)i, (int32_t)i + 1));
    while (v->heap_n) {
        l2c_merge m = heap_pop(v);
        if (v->sym_id[m.pos] != m.left_id || v->next[m.pos] != m.right || v->sym_id[m.right] != m.right_id) continue;
        /* merge right into pos */
        v->sym_id[m.pos] = m.new_id;
        int32_t r = m.right, rn = v->next[r];
        v->sym_id[r] = -1;
        v->next[m.pos] = rn;
        if (rn >= 0) v->prev[rn] = m.pos;
        if (v->prev[m.pos] >= 0) SP_TRY(consider(v, v->prev[m.pos], m.pos));
        if (rn >= 0) SP_TRY(consider(v, m.pos, rn));
    }
    for (int32_t i = 0; i >= 0; i = v->next[i]) SP_TRY(sp_tok_ids_push(out, v->sym_id[i]));
    return 0;
}

static int l2c_decode(void *p, const int32_t *ids, int64_t n, int skip_special, sp_tok_text *out) {
    l2c *v = p;
    int32_t prev = -1;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        const char *s = v->pool + v->off[id];
        int64_t l = v->len[id];
        if (!(skip_special && (id == 1 || id == 2))) {
            if (prev == 1 && l > 0 && s[0] == ' ') s++, l--;
            unsigned b;
            char tail;
            if (l == 6 && sscanf(s, "<0x%02X%c", &b, &tail) == 2 && tail == '>') {
                char c = (char)b;
                SP_TRY(sp_tok_text_append(out, &c, 1));
            } else SP_TRY(sp_tok_text_append(out, s, l));
        }
        prev = id;
    }
    return 0;
}

static const sp_tok_ops l2c_ops = {l2c_encode, l2c_decode, l2c_free};

static int config_vocab(const char *dir, int64_t *vocab) {
    *vocab = -1;
    char p[4096];
    if (snprintf(p, sizeof p, "%s/config.json", dir) >= (int)sizeof p) return 0;
    char *buf;
    int64_t len;
    int present;
    SP_TRY(sp_modelfile_check(dir, p, &present)); /* the model folder's link rule */
    if (!present) return 0;                       /* no config.json: nothing to check */
    SP_TRY(sp_io_read_small(p, 16 << 20, &buf, &len));
    cJSON *j;
    int rc = sp_json_parse(p, NULL, buf, len, 0, &j); /* the one strict reader */
    free(buf);
    SP_TRY(rc);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "vocab_size");
    if (cJSON_IsNumber(v)) *vocab = (int64_t)v->valuedouble;
    cJSON_Delete(j);
    return 0;
}

int sp_tok_llama2c_open(sp_tok *t, const char *path, const char *dir, const char *buf, int64_t len) {
    if (len < 4) return sp_fail(SP_EX_DATAERR, "%s: truncated tokenizer.bin (%lld bytes, no header)", path, (long long)len);
    int32_t maxlen;
    memcpy(&maxlen, buf, 4);
    if (maxlen <= 0 || maxlen > 512)
        return sp_fail(SP_EX_DATAERR, "%s: bad tokenizer.bin: max_token_length %d is not in [1, 512]", path, maxlen);
    /* First pass: count and validate. */
    int64_t n = 0, pool = 0;
    for (int64_t o = 4; o < len; n++) {
        int32_t l;
        if (len - o < 8) return sp_fail(SP_EX_DATAERR, "%s: truncated tokenizer.bin: token %lld header cut at byte %lld", path, (long long)n, (long long)o);
        memcpy(&l, buf + o + 4, 4);
        float sc;
        memcpy(&sc, buf + o, 4);
        if (sc != sc) return sp_fail(SP_EX_DATAERR, "%s: bad tokenizer.bin: token %lld has a NaN score", path, (long long)n);
        if (l < 0 || l > maxlen)
            return sp_fail(SP_EX_DATAERR, "%s: bad tokenizer.bin: token %lld has length %d (max_token_length %d)", path, (long long)n, l, maxlen);
        if (len - o - 8 < l) return sp_fail(SP_EX_DATAERR, "%s: truncated tokenizer.bin: token %lld bytes cut at byte %lld", path, (long long)n, (long long)len);
        o += 8 + l;
        pool += l;
        if (n >= INT32_MAX - 1) return sp_fail(SP_EX_DATAERR, "%s: bad tokenizer.bin: too many tokens", path);
    }
    if (n < 3) return sp_fail(SP_EX_DATAERR, "%s: bad tokenizer.bin: %lld tokens (unk, BOS and EOS at least)", path, (long long)n);
    int64_t cfg_vocab;
    SP_TRY(config_vocab(dir, &cfg_vocab));
    if (cfg_vocab >= 0 && cfg_vocab != n)
        return sp_fail(SP_EX_DATAERR, "%s: holds %lld tokens but config.json says vocab_size %lld (truncated or foreign tokenizer.bin?)", path,
                       (long long)n, (long long)cfg_vocab);
    l2c *v = calloc(1, sizeof *v);
    if (!v) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    v->n = (int32_t)n;
    v->cap = 16;
    while (v->cap < 2 * n) v->cap *= 2;
    v->pool = malloc((size_t)pool + 1);
    v->off = malloc((size_t)n * sizeof *v->off);
    v->len = malloc((size_t)n * sizeof *v->len);
    v->score = malloc((size_t)n * sizeof *v->score);
    v->slot = calloc((size_t)v->cap, sizeof *v->slot);
    if (!v->pool || !v->off || !v->len || !v->score || !v->slot) {
        l2c_free(v);
        return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    int64_t po = 0;
    int64_t o = 4;
    for (int64_t i = 0; i < n; i++) {
        int32_t l;
        memcpy(&v->score[i], buf + o, 4);
        memcpy(&l, buf + o + 4, 4);
        memcpy(v->pool + po, buf + o + 8, (size_t)l);
        v->off[i] = po;
        v->len[i] = l;
        po += l;
        o += 8 + l;
        /* the first occurrence of a duplicate piece wins */
        if (lookup(v, v->pool + v->off[i], l) >= 0) continue;
        uint64_t h = hash_bytes(v->pool + v->off[i], l);
        int64_t s = (int64_t)(h & (uint64_t)(v->cap - 1));
        while (v->slot[s]) s = (s + 1) & (v->cap - 1);
        v->slot[s] = (int32_t)i + 1;
    }
    v->byte_fallback = n >= 259;
    for (int b = 0; b < 256 && v->byte_fallback; b++) {
        char want[8];
        snprintf(want, sizeof want, "<0x%02X>", b);
        if (v->len[3 + b] != 6 || memcmp(v->pool + v->off[3 + b], want, 6) != 0) v->byte_fallback = 0;
    }
    t->ops = &l2c_ops;
    t->impl = v;
    t->vocab_size = n;
    t->bos_id = 1;
    t->eos_id = 2;
    t->prefix[0] = 1;
    t->n_prefix = 1;
    snprintf(t->kind_name, sizeof t->kind_name, "llama2.c tokenizer.bin (%s)", v->byte_fallback ? "byte fallback" : "no byte fallback");
    return 0;
}
