/* io/text/tok_hf.c — Hugging Face tokenizer.json: the BPE model and the pipeline
 * around it, with ids identical to HF's Rust `tokenizers`.
 *
 * The pipeline for one document, as HF's TokenizerImpl::encode_single_sequence:
 *   1. added tokens with normalized=false are matched on the raw text
 *      (leftmost-longest, HF's aho-corasick), honouring lstrip / rstrip /
 *      single_word; they become ids directly;
 *   2. each piece between them is normalized (the normalizer, per piece), and
 *      added tokens with normalized=true are matched in the result;
 *   3. each remaining piece goes through the pre-tokenizer (ByteLevel, Split,
 *      Metaspace, Sequence of them), which splits it into words;
 *   4. each word goes through the BPE model;
 *   5. the post-processor's TemplateProcessing gives the BOS/EOS ids, which
 *      io/text/tokenizer.c adds around the document.
 * Supported components:
 *   model          BPE (byte_fallback, fuse_unk, ignore_merges, unk_token,
 *                  continuing_subword_prefix, end_of_word_suffix); merges as
 *                  "a b" strings or ["a", "b"] pairs
 *   normalizer     NFC NFKC NFD NFKD (libutf8proc), Lowercase, Strip, Replace
 *                  (string or regex), Prepend, Sequence
 *   pre_tokenizer  ByteLevel (use_regex: the GPT-2 regex), Split (string or
 *                  regex; every behaviour; invert), Metaspace (prepend_scheme
 *                  always / first / never, split), Sequence
 *   post_processor TemplateProcessing, ByteLevel (no ids), Sequence of them
 *   decoder        ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
 *                  Sequence (an unknown decoder only makes decode fail)
 * Anything else (WordPiece, Unigram, WordLevel, Precompiled, BertNormalizer,
 * Whitespace, Digits, Punctuation, ...) is refused with 65 naming the file and
 * the component. BPE dropout is refused (it is random), so is truncation and
 * padding (HF would cut or pad every document).
 *
 * Regexes are PCRE2 (8-bit, UTF + UCP, JIT when available); HF uses
 * Oniguruma, whose \s (White_Space) includes U+0085 where PCRE2's does not, so
 * patterns are compiled with \s widened to include U+0085 (see fix_regex).
 *
 * Why the BPE merge loop is written here: no packaged C library implements
 * HF's BPE (its rank-ordered merges over a priority queue, byte fallback,
 * unk fusing and ignore_merges); libsentencepiece's BPE merges by piece score
 * and has no notion of a tokenizer.json. The loop below is HF's Word::merge_all:
 * a binary heap of (rank, position) candidate merges over a linked list of
 * symbols, stale entries skipped, so a long word costs O(n log n), not O(n^2).
 * Short words go through a direct-mapped cache.
 *
 * Lowercase uses utf8proc's simple mapping plus U+0130; Rust's final-sigma
 * rule is not applied.
 */
#include "tokenizer.h"

#include "error.h"
#include "json.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <utf8proc.h>
#include <xxhash.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small containers -------------------------------------------------- */

typedef struct sbuf {
    char *s;
    int64_t n, cap;
    int64_t max;       /* > 0: the most bytes it may hold (a document's text, growing in the pipeline) */
    const char *owner; /* with max: the tokenizer file, for the message */
} sbuf;

static int sbuf_reserve(sbuf *b, int64_t need) {
    if (need <= b->cap) return 0;
    if (b->max > 0 && need - 1 > b->max)
        return sp_fail(SP_EX_DATAERR, "%s: the document's text grows past %lld bytes in the tokenizer's normalizers or "
                       "pre-tokenizers (the limit on a document, tokenize --max-doc-bytes)", b->owner, (long long)b->max);
    int64_t nc = b->cap ? b->cap : 256;
    while (nc < need) {
        if (nc > INT64_MAX / 2) return sp_fail(SP_EX_SOFTWARE, "tokenizer.json: buffer size overflow");
        nc *= 2;
    }
    char *p = realloc(b->s, (size_t)nc);
    if (!p) return sp_fail(SP_EX_SOFTWARE, "tokenizer.json: out of memory (%lld bytes)", (long long)nc);
    b->s = p;
    b->cap = nc;
    return 0;
}

static int sbuf_add(sbuf *b, const void *s, int64_t n) {
    SP_TRY(sbuf_reserve(b, b->n + n + 1));
    if (n) memcpy(b->s + b->n, s, (size_t)n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

static int vec_reserve(void **p, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return 0;
    int64_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    if ((uint64_t)nc > SIZE_MAX / elem) return sp_fail(SP_EX_SOFTWARE, "tokenizer.json: size overflow");
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return sp_fail(SP_EX_SOFTWARE, "tokenizer.json: out of memory");
    *p = q;
    *cap = nc;
    return 0;
}

/* string -> int32, open addressing; keys live in a pool */
typedef struct strmap {
    sbuf pool;
    int64_t *key_off; /* (n) */
    int32_t *key_len, *val;
    int64_t n, ecap;
    int32_t *slot; /* (cap) entry + 1; 0 empty */
    int64_t cap;
} strmap;

static uint64_t hbytes(const char *s, int64_t n) { return XXH3_64bits(s, (size_t)n); }

static int64_t strmap_find(const strmap *m, const char *s, int64_t n) {
    if (!m->cap) return -1;
    for (int64_t i = (int64_t)(hbytes(s, n) & (uint64_t)(m->cap - 1));; i = (i + 1) & (m->cap - 1)) {
        int32_t e = m->slot[i];
        if (!e) return -1;
        e--;
        if (m->key_len[e] == n && memcmp(m->pool.s + m->key_off[e], s, (size_t)n) == 0) return e;
    }
}

static int32_t strmap_get(const strmap *m, const char *s, int64_t n) {
    int64_t e = strmap_find(m, s, n);
    return e < 0 ? -1 : m->val[e];
}

static int strmap_rehash(strmap *m, int64_t cap) {
    int32_t *slot = calloc((size_t)cap, sizeof *slot);
    if (!slot) return sp_fail(SP_EX_SOFTWARE, "tokenizer.json: out of memory");
    for (int64_t e = 0; e < m->n; e++) {
        int64_t i = (int64_t)(hbytes(m->pool.s + m->key_off[e], m->key_len[e]) & (uint64_t)(cap - 1));
        while (slot[i]) i = (i + 1) & (cap - 1);
        slot[i] = (int32_t)e + 1;
    }
    free(m->slot);
    m->slot = slot;
    m->cap = cap;
    return 0;
}

/* Sets key -> val (a later set of the same key overwrites, as a HashMap). */
static int strmap_set(strmap *m, const char *s, int64_t n, int32_t val) {
    if (n > INT32_MAX) return sp_fail(SP_EX_DATAERR, "tokenizer.json: token too long");
    int64_t e = strmap_find(m, s, n);
    if (e >= 0) {
        m->val[e] = val;
        return 0;
    }
    if ((m->n + 1) * 2 > m->cap) SP_TRY(strmap_rehash(m, m->cap ? m->cap * 2 : 1024));
    if (m->n == m->ecap) { /* the three entry arrays share ecap */
        int64_t nc = m->ecap ? m->ecap * 2 : 1024;
        int64_t *ko = realloc(m->key_off, (size_t)nc * sizeof *ko);
        if (ko) m->key_off = ko;
        int32_t *kl = ko ? realloc(m->key_len, (size_t)nc * 4) : NULL;
        if (kl) m->key_len = kl;
        int32_t *kv = kl ? realloc(m->val, (size_t)nc * 4) : NULL;
        if (!kv) return sp_fail(SP_EX_SOFTWARE, "tokenizer.json: out of memory");
        m->val = kv;
        m->ecap = nc;
    }
    m->key_off[m->n] = m->pool.n;
    SP_TRY(sbuf_add(&m->pool, s, n));
    m->key_len[m->n] = (int32_t)n;
    m->val[m->n] = val;
    int64_t i = (int64_t)(hbytes(s, n) & (uint64_t)(m->cap - 1));
    while (m->slot[i]) i = (i + 1) & (m->cap - 1);
    m->slot[i] = (int32_t)m->n + 1;
    m->n++;
    return 0;
}

static void strmap_free(strmap *m) {
    free(m->pool.s);
    free(m->key_off);
    free(m->key_len);
    free(m->val);
    free(m->slot);
}

/* uint64 -> int64, open addressing; val -1 marks an empty slot */
typedef struct u64map {
    uint64_t *key;
    int64_t *val;
    int64_t n, cap;
} u64map;

static uint64_t hmix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static int64_t u64map_get(const u64map *m, uint64_t k) {
    if (!m->cap) return -1;
    for (int64_t i = (int64_t)(hmix(k) & (uint64_t)(m->cap - 1));; i = (i + 1) & (m->cap - 1)) {
        if (m->val[i] < 0) return -1;
        if (m->key[i] == k) return m->val[i];
    }
}

static int u64map_set(u64map *m, uint64_t k, int64_t v);

static int u64map_grow(u64map *m) {
    u64map g = {0};
    g.cap = m->cap ? m->cap * 2 : 1024;
    g.key = malloc((size_t)g.cap * sizeof *g.key);
    g.val = malloc((size_t)g.cap * sizeof *g.val);
    if (!g.key || !g.val) {
        free(g.key);
        free(g.val);
        return sp_fail(SP_EX_SOFTWARE, "tokenizer.json: out of memory");
    }
    for (int64_t i = 0; i < g.cap; i++) g.val[i] = -1;
    for (int64_t i = 0; i < m->cap; i++)
        if (m->val[i] >= 0) u64map_set(&g, m->key[i], m->val[i]);
    free(m->key);
    free(m->val);
    *m = g;
    return 0;
}

static int u64map_set(u64map *m, uint64_t k, int64_t v) {
    if ((m->n + 1) * 2 > m->cap) SP_TRY(u64map_grow(m));
    int64_t i = (int64_t)(hmix(k) & (uint64_t)(m->cap - 1));
    while (m->val[i] >= 0 && m->key[i] != k) i = (i + 1) & (m->cap - 1);
    if (m->val[i] < 0) m->n++;
    m->key[i] = k;
    m->val[i] = v;
    return 0;
}

static void u64map_free(u64map *m) {
    free(m->key);
    free(m->val);
}

/* ---- Unicode helpers ----------------------------------------------------- */

/* Decodes one code point of valid UTF-8 at s; returns its length. */
static int u8dec(const unsigned char *s, int32_t *cp) {
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xE0) {
        *cp = ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (s[0] < 0xF0) {
        *cp = ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

static int u8enc(int32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Rust's char::is_whitespace: the Unicode White_Space property. */
static int is_ws(int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static int is_alnum_cp(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* The code point that ends at s[n) (valid UTF-8, n > 0). */
static int32_t last_cp(const char *s, int64_t n) {
    int64_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    int32_t cp;
    u8dec((const unsigned char *)s + i, &cp);
    return cp;
}

/* Appends s[0..n) to o replacing invalid UTF-8 as Rust's from_utf8_lossy
 * does: one U+FFFD per maximal invalid subpart. */
static int lossy_utf8(sbuf *o, const char *str, int64_t n) {
    const unsigned char *s = (const unsigned char *)str;
    int64_t i = 0;
    while (i < n) {
        int64_t ok = sp_utf8_valid_prefix((const char *)s + i, n - i);
        if (ok) {
            SP_TRY(sbuf_add(o, s + i, ok));
            i += ok;
            continue;
        }
        /* s[i] starts an invalid sequence: skip its maximal valid prefix */
        unsigned c = s[i];
        int64_t skip = 1;
        int need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 1;
        unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        if (need > 1 && i + 1 < n && s[i + 1] >= lo && s[i + 1] <= hi) {
            skip = 2;
            while (skip < need && i + skip < n && (s[i + skip] & 0xC0) == 0x80) skip++;
        }
        SP_TRY(sbuf_add(o, "\xEF\xBF\xBD", 3));
        i += skip;
    }
    return 0;
}

/* ---- components ---------------------------------------------------------- */

typedef struct regex {
    pcre2_code *code;
    pcre2_match_data *md;
    pcre2_match_context *mc; /* a pattern from the file: its steps are metered (hf.meter); NULL: one of ours */
    const char *what;        /* the component, for messages */
} regex;

/* The regex work left for the document being encoded: every step of a
 * metered pattern (a PCRE2 auto-callout) costs one. */
typedef struct regex_meter {
    int64_t left, total;
} regex_meter;

/* A document's budget: REGEX_STEPS_BASE + REGEX_STEPS_PER_BYTE per byte of
 * it. Real pre-tokenizer regexes (GPT-2's, Llama-3's, Qwen2's, o200k's) take
 * 1 to 5 steps a byte on prose, code, CJK and whitespace runs; nested
 * quantifiers that backtrack take (word length)^2 or more a byte. */
#define REGEX_STEPS_BASE ((int64_t)1 << 20)
#define REGEX_STEPS_PER_BYTE 64

typedef enum norm_kind { NORM_UNICODE, NORM_LOWER, NORM_STRIP, NORM_REPLACE, NORM_PREPEND } norm_kind;

typedef struct norm_op {
    norm_kind kind;
    int uopts;             /* NORM_UNICODE: utf8proc options */
    int left, right;       /* NORM_STRIP */
    char *pat, *content;   /* NORM_REPLACE (pat NULL: regex), NORM_PREPEND (content) */
    regex re;              /* NORM_REPLACE with a regex */
} norm_op;

typedef enum split_behavior { SB_REMOVED, SB_ISOLATED, SB_MERGED_PREV, SB_MERGED_NEXT, SB_CONTIGUOUS } split_behavior;
typedef enum pre_kind { PRE_BYTELEVEL, PRE_SPLIT, PRE_METASPACE } pre_kind;
typedef enum prepend_scheme { PS_ALWAYS, PS_FIRST, PS_NEVER } prepend_scheme;

typedef struct pre_op {
    pre_kind kind;
    int add_prefix_space, use_regex; /* ByteLevel */
    regex re;                        /* ByteLevel with use_regex, Split with a regex */
    char *pat;                       /* Split with a string; Metaspace's replacement */
    split_behavior behavior;
    int invert;
    prepend_scheme scheme; /* Metaspace */
    int split;             /* Metaspace */
} pre_op;

typedef enum dec_kind { DEC_BYTELEVEL, DEC_METASPACE, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP } dec_kind;

typedef struct dec_op {
    dec_kind kind;
    char *pat, *content; /* Replace; Metaspace replacement in pat; Strip content in pat */
    int start, stop;     /* Strip */
    prepend_scheme scheme;
} dec_op;

typedef struct added_tok {
    int32_t id;
    int special, lstrip, rstrip, single_word, normalized;
    int64_t off, len; /* content in the added pool */
} added_tok;

/* one piece of text in a work buffer */
typedef struct piece {
    int64_t off, len;
    int32_t id;     /* >= 0: already an added token */
    int origin;     /* starts at original offset 0 (Metaspace prepend_scheme "first") */
} piece;

typedef struct pvec {
    piece *p;
    int64_t n, cap;
} pvec;

static int pvec_push(pvec *v, piece p) {
    if (v->n == v->cap) SP_TRY(vec_reserve((void **)&v->p, &v->cap, v->n + 1, sizeof(piece)));
    v->p[v->n++] = p;
    return 0;
}

/* a span of a piece: [b, e), m = a match of the pattern */
typedef struct span {
    int64_t b, e;
    int m;
} span;

/* BPE symbol */
typedef struct sym {
    int32_t id, prev, next, len;
} sym;

typedef struct merge_cand {
    int32_t rank, pos, new_id;
} merge_cand;

#define CACHE_SLOTS 16384
#define CACHE_WORD_MAX 48
#define CACHE_IDS_MAX 12

typedef struct cache_ent {
    uint8_t wlen, nids; /* wlen 0: empty */
    char word[CACHE_WORD_MAX];
    int32_t ids[CACHE_IDS_MAX];
} cache_ent;

typedef struct hf {
    const char *path;
    /* model */
    strmap vocab;       /* token -> id (model vocabulary) */
    u64map merges;      /* (a << 32 | b) -> (rank << 32 | new_id) */
    int32_t unk_id;     /* -1 none */
    int fuse_unk, byte_fallback, ignore_merges;
    char *cs_prefix, *eow_suffix; /* NULL: none */
    int32_t byte_id[256];         /* byte fallback ids, -1 missing */
    /* id -> string (decode) */
    int64_t n_ids;
    int64_t *id_off; /* (n_ids) into id_pool, -1 none */
    int32_t *id_len;
    uint8_t *id_special; /* (n_ids) */
    sbuf id_pool;
    /* added tokens */
    added_tok *added;
    int64_t n_added;
    sbuf added_pool;
    u64map trie; /* (node << 8 | byte) -> child node; nodes 0 and 1 are the roots */
    int32_t *trie_term; /* (trie_nodes) added index + 1 */
    int64_t trie_nodes, trie_cap;
    uint8_t first_byte[2][256];
    pcre2_match_context *mctx; /* the metered patterns' context: its callout counts steps against meter */
    regex_meter meter;
    int64_t text_max; /* of the document being encoded (sp_tok_set_text_max) */
    /* pipeline */
    norm_op *norm;
    int n_norm;
    pre_op *pre;
    int n_pre;
    dec_op *dec;
    int n_dec, dec_ok;
    char dec_bad[64];
    uint32_t byte_char[256][2]; /* ByteLevel: byte -> UTF-8 of its char (bytes, length) */
    int16_t char_byte[512];     /* code point < 512 -> byte, -1 */
    /* scratch, reused between documents */
    sbuf norm_buf[2], pre_buf[2], bl_buf, bpe_buf;
    pvec seg_pv, added_pv, pre_pv[2], bl_pv;
    span *spans;
    int64_t spans_cap;
    int32_t *u32;
    int64_t u32_cap;
    sym *syms;
    int64_t syms_cap;
    merge_cand *heap;
    int64_t heap_n, heap_cap;
    cache_ent *cache;
} hf;

/* ---- regex ----------------------------------------------------------------- */

/* Oniguruma's \s (HF's regex engine) matches the White_Space property, PCRE2's
 * \s under UCP does not include U+0085; widen every \s and \S. */
static int fix_regex(const char *in, sbuf *out) {
    out->n = 0;
    int in_class = 0;
    for (const char *p = in; *p; p++) {
        if (*p == '\\' && p[1]) {
            if (p[1] == 's') SP_TRY(sbuf_add(out, in_class ? "\\s\\x{85}" : "[\\s\\x{85}]", in_class ? 8 : 10));
            else if (p[1] == 'S' && !in_class) SP_TRY(sbuf_add(out, "[^\\s\\x{85}]", 11));
            else SP_TRY(sbuf_add(out, p, 2));
            p++;
            continue;
        }
        if (*p == '[' && !in_class) {
            in_class = 1;
            SP_TRY(sbuf_add(out, p, 1));
            if (p[1] == '^') SP_TRY(sbuf_add(out, ++p, 1));
            if (p[1] == ']') SP_TRY(sbuf_add(out, ++p, 1));
            continue;
        }
        if (*p == ']' && in_class) in_class = 0;
        SP_TRY(sbuf_add(out, p, 1));
    }
    return 0;
}

/* PCRE2 limits only the backtracking points of one call (match_limit), not
 * the character loops between them, and resets nothing per document: a
 * pattern like \p{L}{0,3000}?\p{L}{0,3000}?\d stays under every per-call
 * limit while a 3000-letter word costs seconds. A metered pattern is compiled
 * with an auto-callout before every item and without auto-possessification
 * (which would turn backtracking into uncounted loops), so each step of its
 * search reaches this callout, which charges it to the document's budget. */
static int regex_step(pcre2_callout_block *b, void *data) {
    (void)b;
    regex_meter *m = data;
    return --m->left < 0 ? PCRE2_ERROR_CALLOUT : 0;
}

/* Compiles pattern; mc != NULL meters it (a pattern from the file). */
static int regex_compile(regex *r, const char *pattern, const char *path, const char *what, pcre2_match_context *mc) {
    sbuf fixed = {0};
    int frc = fix_regex(pattern, &fixed);
    if (frc) {
        free(fixed.s);
        return frc;
    }
    int err;
    PCRE2_SIZE eoff;
    r->what = what;
    r->mc = mc;
    r->code = pcre2_compile((PCRE2_SPTR)fixed.s, (PCRE2_SIZE)fixed.n,
                            PCRE2_UTF | PCRE2_UCP | (mc ? PCRE2_AUTO_CALLOUT | PCRE2_NO_AUTO_POSSESS : 0), &err, &eoff, NULL);
    free(fixed.s);
    if (!r->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return sp_fail(SP_EX_DATAERR, "%s: %s: regex does not compile at offset %zu: %s", path, what, (size_t)eoff, (char *)msg);
    }
    pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is unavailable */
    r->md = pcre2_match_data_create_from_pattern(r->code, NULL);
    if (!r->md) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    return 0;
}

static void regex_free(regex *r) {
    if (r->md) pcre2_match_data_free(r->md);
    if (r->code) pcre2_code_free(r->code);
}

/* Next match in s[0..n) at or after *pos; returns 1 and the match, 0 if none,
 * or < 0 on a match error (reported). */
static int regex_next(const hf *h, regex *r, const char *s, int64_t n, int64_t from, int64_t *ms, int64_t *me) {
    while (from <= n) {
        int rc = pcre2_match(r->code, (PCRE2_SPTR)s, (PCRE2_SIZE)n, (PCRE2_SIZE)from, PCRE2_NO_UTF_CHECK, r->md, r->mc);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc == PCRE2_ERROR_CALLOUT && r->mc && h->meter.left < 0) {
            sp_fail(SP_EX_DATAERR, "%s: %s: the regex takes more than %lld steps on this document (%lld + %d per byte of it): "
                    "runaway backtracking, refused", h->path, r->what, (long long)h->meter.total, (long long)REGEX_STEPS_BASE,
                    REGEX_STEPS_PER_BYTE);
            return -1;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            sp_fail(SP_EX_DATAERR, "%s: %s: regex match failed: %s", h->path, r->what, (char *)msg);
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
        *ms = (int64_t)ov[0];
        *me = (int64_t)ov[1];
        if (*me > *ms) return 1;
        /* an empty match: skip a character, as onig's find_iter does */
        from = *me + 1;
        while (from < n && ((unsigned char)s[from] & 0xC0) == 0x80) from++;
    }
    return 0;
}

/* ---- JSON helpers ------------------------------------------------------------ */

static const cJSON *jget(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static int jbool(const cJSON *o, const char *k, int dflt) {
    const cJSON *v = jget(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = jget(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static char *dupstr(const char *s) {
    if (!s) return NULL;
    return strdup(s);
}

/* pattern: {"String": s} or {"Regex": r}; exactly one of *str / *re is set. */
static int parse_pattern(const cJSON *o, const char *path, const char *what, char **str, const char **re) {
    *str = NULL;
    *re = NULL;
    const cJSON *p = jget(o, "pattern");
    const char *s = jstr(p, "String");
    if (s) {
        *str = strdup(s);
        if (!*str) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
        return 0;
    }
    *re = jstr(p, "Regex");
    if (!*re) return sp_fail(SP_EX_DATAERR, "%s: %s: pattern is neither {\"String\"} nor {\"Regex\"}", path, what);
    return 0;
}

/* ---- loading -------------------------------------------------------------- */

static void norm_op_free(norm_op *op) {
    free(op->pat);
    free(op->content);
    regex_free(&op->re);
}

/* One normalizer of a type other than Sequence into op. On failure op may
 * hold allocations: the caller frees it (norm_op_free). */
static int norm_op_read(const cJSON *n, const char *type, const char *path, pcre2_match_context *mc, norm_op *op) {
    if (!strcmp(type, "NFC")) op->kind = NORM_UNICODE, op->uopts = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    else if (!strcmp(type, "NFKC")) op->kind = NORM_UNICODE, op->uopts = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    else if (!strcmp(type, "NFD")) op->kind = NORM_UNICODE, op->uopts = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    else if (!strcmp(type, "NFKD")) op->kind = NORM_UNICODE, op->uopts = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    else if (!strcmp(type, "Lowercase")) op->kind = NORM_LOWER;
    else if (!strcmp(type, "Strip")) {
        op->kind = NORM_STRIP;
        op->left = jbool(n, "strip_left", 1);
        op->right = jbool(n, "strip_right", 1);
    } else if (!strcmp(type, "Prepend")) {
        op->kind = NORM_PREPEND;
        const char *s = jstr(n, "prepend");
        if (!s) return sp_fail(SP_EX_DATAERR, "%s: normalizer Prepend without a prepend string", path);
        op->content = strdup(s);
    } else if (!strcmp(type, "Replace")) {
        op->kind = NORM_REPLACE;
        const char *re, *c = jstr(n, "content");
        if (!c) return sp_fail(SP_EX_DATAERR, "%s: normalizer Replace without content", path);
        SP_TRY(parse_pattern(n, path, "normalizer Replace", &op->pat, &re));
        op->content = strdup(c);
        if (re) SP_TRY(regex_compile(&op->re, re, path, "normalizer Replace", mc));
        if (op->pat && !*op->pat) return sp_fail(SP_EX_DATAERR, "%s: normalizer Replace with an empty pattern", path);
    } else return sp_fail(SP_EX_DATAERR, "%s: unsupported normalizer '%s' (supported: NFC, NFKC, NFD, NFKD, Lowercase, Strip, Replace, Prepend, Sequence)", path, type);
    if ((op->kind == NORM_PREPEND || op->kind == NORM_REPLACE) && !op->content) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    return 0;
}

static int parse_normalizer(hf *h, const cJSON *n, const char *path) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return sp_fail(SP_EX_DATAERR, "%s: normalizer has no type", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = jget(n, "normalizers"), *e;
        if (!cJSON_IsArray(arr)) return sp_fail(SP_EX_DATAERR, "%s: normalizer Sequence without a normalizers list", path);
        cJSON_ArrayForEach(e, arr) SP_TRY(parse_normalizer(h, e, path));
        return 0;
    }
    norm_op op = {0};
    int rc = norm_op_read(n, type, path, h->mctx, &op);
    norm_op *v = rc ? NULL : realloc(h->norm, (size_t)(h->n_norm + 1) * sizeof *v);
    if (!rc && !v) rc = sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    if (rc) { /* what the op already holds goes with it */
        norm_op_free(&op);
        return rc;
    }
    h->norm = v;
    h->norm[h->n_norm++] = op;
    return 0;
}

static const char GPT2_REGEX[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_scheme(const cJSON *o, const char *path, prepend_scheme *out) {
    const char *s = jstr(o, "prepend_scheme");
    if (s) {
        if (!strcmp(s, "always")) *out = PS_ALWAYS;
        else if (!strcmp(s, "first")) *out = PS_FIRST;
        else if (!strcmp(s, "never")) *out = PS_NEVER;
        else return sp_fail(SP_EX_DATAERR, "%s: Metaspace prepend_scheme '%s' is not always/first/never", path, s);
    } else *out = jbool(o, "add_prefix_space", 1) ? PS_ALWAYS : PS_NEVER; /* the older form */
    return 0;
}

static void pre_op_free(pre_op *op) {
    free(op->pat);
    regex_free(&op->re);
}

/* One pre-tokenizer of a type other than Sequence into op. On failure op may
 * hold allocations: the caller frees it (pre_op_free). */
static int pre_op_read(const cJSON *n, const char *type, const char *path, pcre2_match_context *mc, pre_op *op) {
    if (!strcmp(type, "ByteLevel")) {
        op->kind = PRE_BYTELEVEL;
        op->add_prefix_space = jbool(n, "add_prefix_space", 1);
        op->use_regex = jbool(n, "use_regex", 1);
        if (op->use_regex) SP_TRY(regex_compile(&op->re, GPT2_REGEX, path, "pre_tokenizer ByteLevel", NULL)); /* ours: linear */
    } else if (!strcmp(type, "Split")) {
        op->kind = PRE_SPLIT;
        const char *re, *b = jstr(n, "behavior");
        SP_TRY(parse_pattern(n, path, "pre_tokenizer Split", &op->pat, &re));
        if (re) SP_TRY(regex_compile(&op->re, re, path, "pre_tokenizer Split", mc));
        op->invert = jbool(n, "invert", 0);
        if (!b) return sp_fail(SP_EX_DATAERR, "%s: pre_tokenizer Split without a behavior", path);
        if (!strcmp(b, "Removed")) op->behavior = SB_REMOVED;
        else if (!strcmp(b, "Isolated")) op->behavior = SB_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious")) op->behavior = SB_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext")) op->behavior = SB_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous")) op->behavior = SB_CONTIGUOUS;
        else return sp_fail(SP_EX_DATAERR, "%s: pre_tokenizer Split: unknown behavior '%s'", path, b);
    } else if (!strcmp(type, "Metaspace")) {
        op->kind = PRE_METASPACE;
        const char *r = jstr(n, "replacement");
        if (!r || !*r) return sp_fail(SP_EX_DATAERR, "%s: pre_tokenizer Metaspace without a replacement", path);
        op->pat = strdup(r);
        SP_TRY(parse_scheme(n, path, &op->scheme));
        op->split = jbool(n, "split", 1);
    } else return sp_fail(SP_EX_DATAERR, "%s: unsupported pre_tokenizer '%s' (supported: ByteLevel, Split, Metaspace, Sequence)", path, type);
    if (op->kind == PRE_METASPACE && !op->pat) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    return 0;
}

static int parse_pretok(hf *h, const cJSON *n, const char *path) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return sp_fail(SP_EX_DATAERR, "%s: pre_tokenizer has no type", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = jget(n, "pretokenizers"), *e;
        if (!cJSON_IsArray(arr)) return sp_fail(SP_EX_DATAERR, "%s: pre_tokenizer Sequence without a pretokenizers list", path);
        cJSON_ArrayForEach(e, arr) SP_TRY(parse_pretok(h, e, path));
        return 0;
    }
    pre_op op = {0};
    int rc = pre_op_read(n, type, path, h->mctx, &op);
    pre_op *v = rc ? NULL : realloc(h->pre, (size_t)(h->n_pre + 1) * sizeof *v);
    if (!rc && !v) rc = sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    if (rc) {
        pre_op_free(&op);
        return rc;
    }
    h->pre = v;
    h->pre[h->n_pre++] = op;
    return 0;
}

static void dec_op_free(dec_op *op) {
    free(op->pat);
    free(op->content);
}

/* Unknown decoders do not stop encoding: decode reports them. */
static int parse_decoder(hf *h, const cJSON *n, const char *path) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) type = "(no type)";
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = jget(n, "decoders"), *e;
        cJSON_ArrayForEach(e, arr) SP_TRY(parse_decoder(h, e, path));
        return 0;
    }
    dec_op op = {0};
    if (!strcmp(type, "ByteLevel")) op.kind = DEC_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback")) op.kind = DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) op.kind = DEC_FUSE;
    else if (!strcmp(type, "Metaspace")) {
        op.kind = DEC_METASPACE;
        op.pat = dupstr(jstr(n, "replacement"));
        int rc = parse_scheme(n, path, &op.scheme);
        if (rc) {
            dec_op_free(&op);
            return rc;
        }
        if (!op.pat) goto bad;
    } else if (!strcmp(type, "Replace")) {
        op.kind = DEC_REPLACE;
        op.pat = dupstr(jstr(jget(n, "pattern"), "String"));
        op.content = dupstr(jstr(n, "content"));
        if (!op.pat || !op.content || !*op.pat) {
            dec_op_free(&op);
            goto bad;
        }
    } else if (!strcmp(type, "Strip")) {
        op.kind = DEC_STRIP;
        op.pat = dupstr(jstr(n, "content"));
        const cJSON *a = jget(n, "start"), *b = jget(n, "stop");
        op.start = cJSON_IsNumber(a) ? (int)a->valuedouble : 0;
        op.stop = cJSON_IsNumber(b) ? (int)b->valuedouble : 0;
        if (!op.pat || !*op.pat) {
            dec_op_free(&op);
            goto bad;
        }
    } else goto bad;
    dec_op *v = realloc(h->dec, (size_t)(h->n_dec + 1) * sizeof *v);
    if (!v) {
        dec_op_free(&op);
        return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    h->dec = v;
    h->dec[h->n_dec++] = op;
    return 0;
bad:
    h->dec_ok = 0;
    snprintf(h->dec_bad, sizeof h->dec_bad, "%s", type);
    return 0;
}

/* id -> its piece, for decode. One id, one piece: a second, different piece
 * for an id (two vocab entries, or an added token over another piece) would
 * make decoding lossy, and is refused (65) naming both. `what` names the
 * entry in messages. */
static int add_id_string(hf *h, int64_t id, const char *s, int64_t n, int special, const char *what) {
    if (id < 0 || id >= h->n_ids) return 0;
    if (h->id_off[id] >= 0) {
        if (h->id_len[id] == n && !memcmp(h->id_pool.s + h->id_off[id], s, (size_t)n)) { /* the same piece again */
            h->id_special[id] = (uint8_t)special; /* an added token's flag, as before */
            return 0;
        }
        return sp_fail(SP_EX_DATAERR, "%s: %s '%.*s' has id %lld, which is already the id of '%.*s'; one id with two pieces "
                       "cannot be decoded", h->path, what, (int)(n < 200 ? n : 200), s, (long long)id,
                       (int)(h->id_len[id] < 200 ? h->id_len[id] : 200), h->id_pool.s + h->id_off[id]);
    }
    h->id_off[id] = h->id_pool.n;
    h->id_len[id] = (int32_t)n;
    h->id_special[id] = (uint8_t)special;
    return sbuf_add(&h->id_pool, s, n);
}

static int trie_node(hf *h, int64_t *node) {
    if (h->trie_nodes == h->trie_cap) SP_TRY(vec_reserve((void **)&h->trie_term, &h->trie_cap, h->trie_nodes + 1, sizeof(int32_t)));
    h->trie_term[h->trie_nodes] = 0;
    *node = h->trie_nodes++;
    return 0;
}

static int trie_insert(hf *h, int root, const char *s, int64_t n, int64_t idx) {
    int64_t node = root;
    h->first_byte[root][(unsigned char)s[0]] = 1;
    for (int64_t i = 0; i < n; i++) {
        uint64_t k = ((uint64_t)node << 8) | (unsigned char)s[i];
        int64_t c = u64map_get(&h->trie, k);
        if (c < 0) {
            SP_TRY(trie_node(h, &c));
            SP_TRY(u64map_set(&h->trie, k, c));
        }
        node = c;
    }
    h->trie_term[node] = (int32_t)idx + 1; /* a later duplicate wins */
    return 0;
}

static void bytelevel_tables(hf *h) {
    /* GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest
     * to U+0100 onwards in byte order. */
    int next = 256;
    for (int i = 0; i < 512; i++) h->char_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = keep ? b : next++;
        char o[4];
        int l = u8enc(cp, o);
        h->byte_char[b][0] = 0;
        memcpy(&h->byte_char[b][0], o, (size_t)l);
        h->byte_char[b][1] = (uint32_t)l;
        h->char_byte[cp] = (int16_t)b;
    }
}

static int parse_model(hf *h, const cJSON *m, const char *path) {
    const char *type = jstr(m, "type");
    if (!type) {
        /* older files omit the type; a merges list means BPE */
        if (!jget(m, "merges")) return sp_fail(SP_EX_DATAERR, "%s: model has no type", path);
        type = "BPE";
    }
    if (strcmp(type, "BPE"))
        return sp_fail(SP_EX_DATAERR, "%s: unsupported model '%s' (only BPE tokenizer.json files are supported; use a tokenizer.model for Unigram)", path, type);
    const cJSON *d = jget(m, "dropout");
    if (cJSON_IsNumber(d) && d->valuedouble > 0 && d->valuedouble < 1) return sp_fail(SP_EX_DATAERR, "%s: BPE dropout is random and not supported", path);
    h->fuse_unk = jbool(m, "fuse_unk", 0);
    h->byte_fallback = jbool(m, "byte_fallback", 0);
    h->ignore_merges = jbool(m, "ignore_merges", 0);
    const char *p = jstr(m, "continuing_subword_prefix"), *s = jstr(m, "end_of_word_suffix");
    if (p && *p) h->cs_prefix = strdup(p);
    if (s && *s) h->eow_suffix = strdup(s);
    const cJSON *vocab = jget(m, "vocab"), *e;
    if (!cJSON_IsObject(vocab)) return sp_fail(SP_EX_DATAERR, "%s: model.vocab is not an object", path);
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= INT32_MAX || e->valuedouble != (double)(int32_t)e->valuedouble)
            return sp_fail(SP_EX_DATAERR, "%s: model.vocab['%s'] is not an id", path, e->string);
        if (e->valuedouble >= SP_TOK_VOCAB_MAX) /* the id tables are sized by the largest id */
            return sp_fail(SP_EX_DATAERR, "%s: model.vocab['%s'] is id %.0f, beyond the largest vocabulary slicepipe accepts (%d ids)",
                           path, e->string, e->valuedouble, SP_TOK_VOCAB_MAX);
        SP_TRY(strmap_set(&h->vocab, e->string, (int64_t)strlen(e->string), (int32_t)e->valuedouble));
        if ((int64_t)e->valuedouble + 1 > h->n_ids) h->n_ids = (int64_t)e->valuedouble + 1;
    }
    if (h->vocab.n == 0) return sp_fail(SP_EX_DATAERR, "%s: model.vocab is empty", path);
    const char *unk = jstr(m, "unk_token");
    h->unk_id = -1;
    if (unk) {
        h->unk_id = strmap_get(&h->vocab, unk, (int64_t)strlen(unk));
        if (h->unk_id < 0) return sp_fail(SP_EX_DATAERR, "%s: unk_token '%s' is not in the vocabulary", path, unk);
    }
    for (int b = 0; b < 256; b++) {
        char t[8];
        snprintf(t, sizeof t, "<0x%02X>", b);
        h->byte_id[b] = strmap_get(&h->vocab, t, 6);
    }
    const cJSON *merges = jget(m, "merges");
    if (merges && !cJSON_IsArray(merges)) return sp_fail(SP_EX_DATAERR, "%s: model.merges is not a list", path);
    int64_t rank = 0;
    sbuf cat = {0};
    int rc = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        int64_t la, lb;
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp) {
                rc = sp_fail(SP_EX_DATAERR, "%s: merge %lld '%s' is not 'a b'", path, (long long)rank, e->valuestring);
                break;
            }
            a = e->valuestring;
            la = sp - a;
            b = sp + 1;
            lb = (int64_t)strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            a = cJSON_GetArrayItem(e, 0)->valuestring;
            b = cJSON_GetArrayItem(e, 1)->valuestring;
            la = (int64_t)strlen(a);
            lb = (int64_t)strlen(b);
        } else {
            rc = sp_fail(SP_EX_DATAERR, "%s: merge %lld is neither 'a b' nor [a, b]", path, (long long)rank);
            break;
        }
        int32_t ia = strmap_get(&h->vocab, a, la), ib = strmap_get(&h->vocab, b, lb);
        if (ia < 0 || ib < 0) {
            rc = sp_fail(SP_EX_DATAERR, "%s: merge %lld uses a token that is not in the vocabulary", path, (long long)rank);
            break;
        }
        cat.n = 0;
        int64_t pl = h->cs_prefix ? (int64_t)strlen(h->cs_prefix) : 0;
        if (pl && lb >= pl && !memcmp(b, h->cs_prefix, (size_t)pl)) b += pl, lb -= pl;
        if ((rc = sbuf_add(&cat, a, la)) || (rc = sbuf_add(&cat, b, lb))) break;
        int32_t inew = strmap_get(&h->vocab, cat.s, cat.n);
        if (inew < 0) {
            rc = sp_fail(SP_EX_DATAERR, "%s: merge %lld gives a token that is not in the vocabulary", path, (long long)rank);
            break;
        }
        if ((rc = u64map_set(&h->merges, ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib, (rank << 32) | (uint32_t)inew))) break;
        rank++;
        if (rank >= INT32_MAX) {
            rc = sp_fail(SP_EX_DATAERR, "%s: too many merges", path);
            break;
        }
    }
    free(cat.s);
    return rc;
}

static int parse_added(hf *h, const cJSON *arr, const char *path) {
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr)) return sp_fail(SP_EX_DATAERR, "%s: added_tokens is not a list", path);
    int64_t n = cJSON_GetArraySize(arr);
    h->added = calloc((size_t)(n ? n : 1), sizeof *h->added);
    if (!h->added) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        const cJSON *id = jget(e, "id");
        const char *c = jstr(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= INT32_MAX || id->valuedouble != floor(id->valuedouble) || !c)
            return sp_fail(SP_EX_DATAERR, "%s: added_tokens[%lld] has no id or content", path, (long long)h->n_added);
        if (id->valuedouble >= SP_TOK_VOCAB_MAX) /* the id tables are sized by the largest id */
            return sp_fail(SP_EX_DATAERR, "%s: added_tokens[%lld] '%s' is id %.0f, beyond the largest vocabulary slicepipe accepts (%d ids)",
                           path, (long long)h->n_added, c, id->valuedouble, SP_TOK_VOCAB_MAX);
        added_tok *a = &h->added[h->n_added];
        a->id = (int32_t)id->valuedouble;
        a->special = jbool(e, "special", 0);
        a->lstrip = jbool(e, "lstrip", 0);
        a->rstrip = jbool(e, "rstrip", 0);
        a->single_word = jbool(e, "single_word", 0);
        a->normalized = jbool(e, "normalized", !a->special);
        a->off = h->added_pool.n;
        a->len = (int64_t)strlen(c);
        SP_TRY(sbuf_add(&h->added_pool, c, a->len));
        if (a->id + 1 > h->n_ids) h->n_ids = a->id + 1;
        h->n_added++;
    }
    return 0;
}

static int parse_post(sp_tok *t, hf *h, const cJSON *p, const char *path) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = jstr(p, "type");
    if (!type) return sp_fail(SP_EX_DATAERR, "%s: post_processor has no type", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = jget(p, "processors"), *e;
        cJSON_ArrayForEach(e, arr) SP_TRY(parse_post(t, h, e, path));
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) return 0; /* offsets only */
    if (strcmp(type, "TemplateProcessing"))
        return sp_fail(SP_EX_DATAERR, "%s: unsupported post_processor '%s' (supported: TemplateProcessing, ByteLevel, Sequence)", path, type);
    const cJSON *single = jget(p, "single"), *special = jget(p, "special_tokens"), *e;
    if (!cJSON_IsArray(single)) return sp_fail(SP_EX_DATAERR, "%s: TemplateProcessing without a 'single' template", path);
    int seen_a = 0;
    t->n_prefix = t->n_suffix = 0;
    cJSON_ArrayForEach(e, single) {
        const cJSON *st = jget(e, "SpecialToken");
        if (jget(e, "Sequence")) {
            seen_a = 1;
            continue;
        }
        const char *name = jstr(st, "id");
        if (!name) return sp_fail(SP_EX_DATAERR, "%s: TemplateProcessing: a template piece is neither Sequence nor SpecialToken", path);
        const cJSON *ids = jget(jget(special, name), "ids"), *x;
        if (!cJSON_IsArray(ids)) return sp_fail(SP_EX_DATAERR, "%s: TemplateProcessing: special token '%s' has no ids", path, name);
        cJSON_ArrayForEach(x, ids) {
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= (double)h->n_ids)
                return sp_fail(SP_EX_DATAERR, "%s: TemplateProcessing: special token '%s' has an id outside the vocabulary", path, name);
            int *cnt = seen_a ? &t->n_suffix : &t->n_prefix;
            int32_t *dst = seen_a ? t->suffix : t->prefix;
            if (*cnt == SP_TOK_AFFIX_MAX) return sp_fail(SP_EX_DATAERR, "%s: TemplateProcessing adds more than %d ids", path, SP_TOK_AFFIX_MAX);
            dst[(*cnt)++] = (int32_t)x->valuedouble;
        }
    }
    return 0;
}

static void hf_free(void *p) {
    hf *h = p;
    if (!h) return;
    strmap_free(&h->vocab);
    u64map_free(&h->merges);
    free(h->cs_prefix);
    free(h->eow_suffix);
    free(h->id_off);
    free(h->id_len);
    free(h->id_special);
    free(h->id_pool.s);
    free(h->added);
    free(h->added_pool.s);
    u64map_free(&h->trie);
    if (h->mctx) pcre2_match_context_free(h->mctx);
    free(h->trie_term);
    for (int i = 0; i < h->n_norm; i++) norm_op_free(&h->norm[i]);
    free(h->norm);
    for (int i = 0; i < h->n_pre; i++) pre_op_free(&h->pre[i]);
    free(h->pre);
    for (int i = 0; i < h->n_dec; i++) dec_op_free(&h->dec[i]);
    free(h->dec);
    for (int i = 0; i < 2; i++) {
        free(h->norm_buf[i].s);
        free(h->pre_buf[i].s);
        free(h->pre_pv[i].p);
    }
    free(h->bl_buf.s);
    free(h->bpe_buf.s);
    free(h->seg_pv.p);
    free(h->added_pv.p);
    free(h->bl_pv.p);
    free(h->spans);
    free(h->u32);
    free(h->syms);
    free(h->heap);
    free(h->cache);
    free(h);
}

/* ---- encoding: normalizers ------------------------------------------------ */

static int norm_unicode(hf *h, int opts, const char *s, int64_t n, sbuf *o) {
    /* decompose into code points, then compose and re-encode in place */
    int64_t need = n + 1;
    for (;;) {
        if (need - 1 > h->text_max) /* every code point is at least a byte of the output */
            return sp_fail(SP_EX_DATAERR, "%s: the document's text grows past %lld bytes in the tokenizer's normalizers (the "
                           "limit on a document, tokenize --max-doc-bytes)", h->path, (long long)h->text_max);
        SP_TRY(vec_reserve((void **)&h->u32, &h->u32_cap, need, sizeof(int32_t)));
        utf8proc_ssize_t r = utf8proc_decompose((const utf8proc_uint8_t *)s, n, h->u32, h->u32_cap - 1, (utf8proc_option_t)opts);
        if (r < 0) return sp_fail(SP_EX_DATAERR, "tokenizer.json normalizer: %s", utf8proc_errmsg(r));
        if (r <= h->u32_cap - 1) {
            utf8proc_ssize_t b = utf8proc_reencode(h->u32, r, (utf8proc_option_t)opts);
            if (b < 0) return sp_fail(SP_EX_DATAERR, "tokenizer.json normalizer: %s", utf8proc_errmsg(b));
            return sbuf_add(o, h->u32, b);
        }
        need = r + 1;
    }
}

static int norm_apply(hf *h, const norm_op *op, const char *s, int64_t n, sbuf *o) {
    o->n = 0;
    SP_TRY(sbuf_reserve(o, n + 1));
    o->s[0] = 0;
    switch (op->kind) {
    case NORM_UNICODE: return norm_unicode(h, op->uopts, s, n, o);
    case NORM_LOWER:
        for (int64_t i = 0; i < n;) {
            int32_t cp;
            i += u8dec((const unsigned char *)s + i, &cp);
            char e[8];
            if (cp == 0x130) SP_TRY(sbuf_add(o, "i\xCC\x87", 3));
            else SP_TRY(sbuf_add(o, e, u8enc(utf8proc_tolower(cp), e)));
        }
        return 0;
    case NORM_STRIP: {
        int64_t b = 0, e = n;
        while (op->left && b < e) {
            int32_t cp;
            int l = u8dec((const unsigned char *)s + b, &cp);
            if (!is_ws(cp)) break;
            b += l;
        }
        while (op->right && e > b) {
            int32_t cp = last_cp(s + b, e - b);
            if (!is_ws(cp)) break;
            char tmp[4];
            e -= u8enc(cp, tmp);
        }
        return sbuf_add(o, s + b, e - b);
    }
    case NORM_PREPEND:
        if (n) SP_TRY(sbuf_add(o, op->content, (int64_t)strlen(op->content)));
        return sbuf_add(o, s, n);
    case NORM_REPLACE: {
        int64_t cl = (int64_t)strlen(op->content), at = 0;
        if (op->pat) {
            int64_t pl = (int64_t)strlen(op->pat);
            for (int64_t i = 0; i + pl <= n;) {
                if (!memcmp(s + i, op->pat, (size_t)pl)) {
                    SP_TRY(sbuf_add(o, s + at, i - at));
                    SP_TRY(sbuf_add(o, op->content, cl));
                    i += pl;
                    at = i;
                } else i++;
            }
        } else {
            int64_t ms, me;
            regex *re = (regex *)&op->re;
            int r;
            while ((r = regex_next(h, re, s, n, at, &ms, &me)) == 1) {
                SP_TRY(sbuf_add(o, s + at, ms - at));
                SP_TRY(sbuf_add(o, op->content, cl));
                at = me;
            }
            if (r < 0) return SP_EX_DATAERR;
        }
        return sbuf_add(o, s + at, n - at);
    }
    }
    return 0;
}

/* ---- encoding: added tokens ---------------------------------------------- */

/* Longest added token of the trie at s[i..n); returns its index or -1. */
static int64_t trie_match(const hf *h, int root, const char *s, int64_t n, int64_t i, int64_t *mlen) {
    int64_t node = root, best = -1;
    for (int64_t j = i; j < n; j++) {
        node = u64map_get(&h->trie, ((uint64_t)node << 8) | (unsigned char)s[j]);
        if (node < 0) break;
        if (h->trie_term[node]) {
            best = h->trie_term[node] - 1;
            *mlen = j + 1 - i;
        }
    }
    return best;
}

/* HF AddedVocabulary::find_matches: splits s[0..n) into pieces, added tokens
 * becoming pieces with their id. Appends to out (offsets relative to base). */
static int split_added(hf *h, int root, const char *s, int64_t n, int64_t base, int origin, pvec *out) {
    int64_t start_off = 0;
    int first = 1;
    if (h->n_added) {
        for (int64_t i = 0; i < n;) {
            int64_t mlen = 0, a = -1;
            /* leftmost-longest: the first position with a match wins */
            for (; i < n; i++) {
                if (!h->first_byte[root][(unsigned char)s[i]]) continue;
                a = trie_match(h, root, s, n, i, &mlen);
                if (a >= 0) break;
            }
            if (a < 0) break;
            const added_tok *t = &h->added[a];
            int64_t ms = i, me = i + mlen;
            i = me; /* the next search starts after this match, as aho-corasick's find_iter */
            if (t->single_word) {
                int ok_start = ms == 0 || !is_alnum_cp(last_cp(s, ms));
                int32_t nc = 0;
                if (me < n) u8dec((const unsigned char *)s + me, &nc);
                int ok_stop = me == n || !is_alnum_cp(nc);
                if (!ok_start || !ok_stop) continue;
            }
            if (t->lstrip) {
                int64_t ns = ms;
                while (ns > 0) {
                    int32_t cp = last_cp(s, ns);
                    if (!is_ws(cp)) break;
                    char tmp[4];
                    ns -= u8enc(cp, tmp);
                }
                ms = ns > start_off ? ns : start_off;
            }
            if (t->rstrip) {
                while (me < n) {
                    int32_t cp;
                    int l = u8dec((const unsigned char *)s + me, &cp);
                    if (!is_ws(cp)) break;
                    me += l;
                }
            }
            if (ms > start_off) {
                SP_TRY(pvec_push(out, (piece){base + start_off, ms - start_off, -1, origin && first}));
                first = 0;
            }
            SP_TRY(pvec_push(out, (piece){base + ms, me - ms, t->id, 0}));
            first = 0;
            start_off = me;
            if (i < me) i = me;
        }
    }
    if (start_off < n) SP_TRY(pvec_push(out, (piece){base + start_off, n - start_off, -1, origin && first}));
    return 0;
}

/* ---- encoding: pre-tokenizers ----------------------------------------------- */

/* Matches of op in s[0..n) as (start, end, is_match) triples covering it. */

static int find_spans(hf *h, const pre_op *op, const char *s, int64_t n, span **sp, int64_t *ns, int64_t *cap) {
    *ns = 0;
    int64_t prev = 0;
#define PUSH(B, E, M)                                                                  \
    do {                                                                               \
        if (*ns == *cap) SP_TRY(vec_reserve((void **)sp, cap, *ns + 1, sizeof(span))); \
        (*sp)[(*ns)++] = (span){(B), (E), (M)};                                        \
    } while (0)
    if (op->re.code) {
        int64_t ms, me;
        int r;
        while ((r = regex_next(h, (regex *)&op->re, s, n, prev, &ms, &me)) == 1) {
            if (ms > prev) PUSH(prev, ms, 0);
            PUSH(ms, me, 1);
            prev = me;
        }
        if (r < 0) return SP_EX_DATAERR;
    } else {
        int64_t pl = (int64_t)strlen(op->pat);
        for (int64_t i = 0; pl && i + pl <= n;) {
            if (!memcmp(s + i, op->pat, (size_t)pl)) {
                if (i > prev) PUSH(prev, i, 0);
                PUSH(i, i + pl, 1);
                i += pl;
                prev = i;
            } else i++;
        }
    }
    if (prev < n) PUSH(prev, n, 0);
#undef PUSH
    (void)h;
    return 0;
}

/* HF NormalizedString::split with a behaviour: appends the kept pieces. */
static int split_pieces(hf *h, const pre_op *op, split_behavior bh, int invert, const piece *in, const char *buf, pvec *out) {
    int64_t ns;
    SP_TRY(find_spans(h, op, buf + in->off, in->len, &h->spans, &ns, &h->spans_cap));
    span *spans = h->spans;
    int rc = 0;
    if (invert)
        for (int64_t i = 0; i < ns; i++) spans[i].m = !spans[i].m;
    /* merge according to the behaviour, in place: w = kept spans */
    int64_t w = 0;
    switch (bh) {
    case SB_ISOLATED:
        w = ns;
        for (int64_t i = 0; i < ns; i++) spans[i].m = 0;
        break;
    case SB_REMOVED: w = ns; break; /* m = 1 spans are dropped below */
    case SB_CONTIGUOUS: {
        int prevm = 0;
        for (int64_t i = 0; i < ns; i++) {
            int m = spans[i].m;
            if (m == prevm && w > 0) spans[w - 1].e = spans[i].e;
            else spans[w++] = (span){spans[i].b, spans[i].e, 0};
            prevm = m;
        }
        break;
    }
    case SB_MERGED_PREV: {
        int prevm = 0;
        for (int64_t i = 0; i < ns; i++) {
            int m = spans[i].m;
            if (m && !prevm && w > 0) spans[w - 1].e = spans[i].e;
            else spans[w++] = (span){spans[i].b, spans[i].e, 0};
            prevm = m;
        }
        break;
    }
    case SB_MERGED_NEXT: {
        /* from the right: a match joins the piece after it */
        int prevm = 0;
        int64_t r = ns; /* kept spans are built at the end of the array */
        for (int64_t i = ns - 1; i >= 0; i--) {
            int m = spans[i].m;
            if (m && !prevm && r < ns) spans[r].b = spans[i].b;
            else spans[--r] = (span){spans[i].b, spans[i].e, 0};
            prevm = m;
        }
        memmove(spans, spans + r, (size_t)(ns - r) * sizeof *spans);
        w = ns - r;
        break;
    }
    }
    int first = 1;
    for (int64_t i = 0; i < w && !rc; i++) {
        if (spans[i].m || spans[i].e <= spans[i].b) continue;
        rc = pvec_push(out, (piece){in->off + spans[i].b, spans[i].e - spans[i].b, -1, in->origin && first && spans[i].b == 0});
        first = 0;
    }
    return rc;
}

/* Runs one pre-tokenizer over pieces `in` (text in ib) into `out` (text in ob). */
static int pre_apply(hf *h, const pre_op *op, const pvec *in, const sbuf *ib, pvec *out, sbuf *ob) {
    out->n = 0;
    ob->n = 0;
    for (int64_t k = 0; k < in->n; k++) {
        const piece *p = &in->p[k];
        const char *s = ib->s + p->off;
        if (op->kind == PRE_SPLIT) {
            /* same text, new piece boundaries: copy the text, then split */
            piece q = {ob->n, p->len, -1, p->origin};
            SP_TRY(sbuf_add(ob, s, p->len));
            SP_TRY(split_pieces(h, op, op->behavior, op->invert, &q, ob->s, out));
        } else if (op->kind == PRE_BYTELEVEL) {
            /* prefix space, regex split, then bytes to chars */
            sbuf *tmp = &h->bl_buf;
            tmp->n = 0;
            if (op->add_prefix_space && (p->len == 0 || s[0] != ' ')) SP_TRY(sbuf_add(tmp, " ", 1));
            SP_TRY(sbuf_add(tmp, s, p->len));
            pvec *words = &h->bl_pv;
            words->n = 0;
            piece whole = {0, tmp->n, -1, p->origin};
            if (op->use_regex) SP_TRY(split_pieces(h, op, SB_ISOLATED, 0, &whole, tmp->s, words));
            else SP_TRY(pvec_push(words, whole));
            for (int64_t w = 0; w < words->n; w++) {
                piece q = {ob->n, 0, -1, words->p[w].origin};
                for (int64_t i = 0; i < words->p[w].len; i++) {
                    unsigned char b = (unsigned char)tmp->s[words->p[w].off + i];
                    SP_TRY(sbuf_add(ob, &h->byte_char[b][0], h->byte_char[b][1]));
                }
                q.len = ob->n - q.off;
                SP_TRY(pvec_push(out, q));
            }
        } else { /* PRE_METASPACE */
            int64_t rl = (int64_t)strlen(op->pat);
            piece q = {ob->n, 0, -1, p->origin};
            int starts = p->len >= rl && !memcmp(s, op->pat, (size_t)rl);
            /* HF replaces ' ' first, then checks for a leading replacement */
            if (!starts && p->len > 0 && s[0] == ' ') starts = 1;
            if (!starts && (op->scheme == PS_ALWAYS || (op->scheme == PS_FIRST && p->origin))) SP_TRY(sbuf_add(ob, op->pat, rl));
            for (int64_t i = 0; i < p->len; i++) {
                if (s[i] == ' ') SP_TRY(sbuf_add(ob, op->pat, rl));
                else SP_TRY(sbuf_add(ob, s + i, 1));
            }
            q.len = ob->n - q.off;
            if (op->split) {
                pre_op sp = {0};
                sp.kind = PRE_SPLIT;
                sp.pat = op->pat;
                SP_TRY(split_pieces(h, &sp, SB_MERGED_NEXT, 0, &q, ob->s, out));
            } else if (q.len) SP_TRY(pvec_push(out, q));
        }
    }
    return 0;
}

/* ---- encoding: BPE ------------------------------------------------------------- */

static int cand_better(const merge_cand *a, const merge_cand *b) { return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos); }

static int heap_push(hf *h, merge_cand m) {
    if (h->heap_n == h->heap_cap) SP_TRY(vec_reserve((void **)&h->heap, &h->heap_cap, h->heap_n + 1, sizeof(merge_cand)));
    int64_t i = h->heap_n++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!cand_better(&m, &h->heap[p])) break;
        h->heap[i] = h->heap[p];
        i = p;
    }
    h->heap[i] = m;
    return 0;
}

static merge_cand heap_pop(hf *h) {
    merge_cand top = h->heap[0], last = h->heap[--h->heap_n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= h->heap_n) break;
        if (c + 1 < h->heap_n && cand_better(&h->heap[c + 1], &h->heap[c])) c++;
        if (!cand_better(&h->heap[c], &last)) break;
        h->heap[i] = h->heap[c];
        i = c;
    }
    if (h->heap_n) h->heap[i] = last;
    return top;
}

static int push_pair(hf *h, int32_t pos) {
    int32_t nx = h->syms[pos].next;
    if (nx < 0) return 0;
    int64_t v = u64map_get(&h->merges, ((uint64_t)(uint32_t)h->syms[pos].id << 32) | (uint32_t)h->syms[nx].id);
    if (v < 0) return 0;
    return heap_push(h, (merge_cand){(int32_t)(v >> 32), pos, (int32_t)(v & 0xffffffff)});
}

static int add_sym(hf *h, int64_t *n, int32_t id, int32_t len) {
    if (*n >= INT32_MAX - 1) return sp_fail(SP_EX_DATAERR, "tokenizer.json: word too long");
    SP_TRY(vec_reserve((void **)&h->syms, &h->syms_cap, *n + 1, sizeof(sym)));
    h->syms[*n] = (sym){id, (int32_t)*n - 1, (int32_t)*n + 1, len};
    (*n)++;
    return 0;
}

/* HF BPE::merge_word + Word::merge_all on one word; appends ids. */
static int bpe_word(hf *h, const char *w, int64_t n, sp_tok_ids *out) {
    if (n == 0) return 0;
    if (h->ignore_merges) {
        int32_t id = strmap_get(&h->vocab, w, n);
        if (id >= 0) return sp_tok_ids_push(out, id);
    }
    cache_ent *ce = NULL;
    if (n <= CACHE_WORD_MAX && h->cache) {
        ce = &h->cache[hbytes(w, n) & (CACHE_SLOTS - 1)];
        if (ce->wlen == n && !memcmp(ce->word, w, (size_t)n)) {
            for (int i = 0; i < ce->nids; i++) SP_TRY(sp_tok_ids_push(out, ce->ids[i]));
            return 0;
        }
    }
    int64_t ns = 0;
    int32_t unk_id = -1, unk_len = 0;
    sbuf *tmp = &h->bpe_buf;
    int64_t pl = h->cs_prefix ? (int64_t)strlen(h->cs_prefix) : 0, sl = h->eow_suffix ? (int64_t)strlen(h->eow_suffix) : 0;
    for (int64_t i = 0; i < n;) {
        int32_t cp;
        int cl = u8dec((const unsigned char *)w + i, &cp);
        const char *s = w + i;
        int64_t slen = cl;
        if ((pl && i > 0) || (sl && i + cl == n)) {
            tmp->n = 0;
            if (pl && i > 0) SP_TRY(sbuf_add(tmp, h->cs_prefix, pl));
            SP_TRY(sbuf_add(tmp, w + i, cl));
            if (sl && i + cl == n) SP_TRY(sbuf_add(tmp, h->eow_suffix, sl));
            s = tmp->s;
            slen = tmp->n;
        }
        int32_t id = strmap_get(&h->vocab, s, slen);
        if (id >= 0) {
            if (unk_id >= 0) {
                SP_TRY(add_sym(h, &ns, unk_id, unk_len));
                unk_id = -1;
            }
            SP_TRY(add_sym(h, &ns, id, cl));
        } else {
            int done = 0;
            if (h->byte_fallback) {
                int all = 1;
                for (int64_t k = 0; k < slen; k++)
                    if (h->byte_id[(unsigned char)s[k]] < 0) all = 0;
                if (all) {
                    for (int64_t k = 0; k < slen; k++) SP_TRY(add_sym(h, &ns, h->byte_id[(unsigned char)s[k]], 1));
                    done = 1;
                }
            }
            if (!done && h->unk_id >= 0) {
                if (unk_id >= 0 && h->fuse_unk) unk_len += cl;
                else {
                    if (unk_id >= 0) SP_TRY(add_sym(h, &ns, unk_id, unk_len));
                    unk_id = h->unk_id;
                    unk_len = cl;
                }
            }
        }
        i += cl;
    }
    if (unk_id >= 0) SP_TRY(add_sym(h, &ns, unk_id, unk_len));
    if (ns == 0) return 0;
    h->syms[ns - 1].next = -1;
    h->heap_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++) SP_TRY(push_pair(h, i));
    while (h->heap_n) {
        merge_cand m = heap_pop(h);
        sym *a = &h->syms[m.pos];
        if (a->len == 0 || a->next < 0) continue;
        sym *b = &h->syms[a->next];
        int64_t v = u64map_get(&h->merges, ((uint64_t)(uint32_t)a->id << 32) | (uint32_t)b->id);
        if (v < 0 || (int32_t)(v & 0xffffffff) != m.new_id) continue;
        a->id = m.new_id;
        a->len += b->len;
        a->next = b->next;
        b->len = 0;
        if (a->next >= 0) h->syms[a->next].prev = m.pos;
        if (a->prev >= 0) SP_TRY(push_pair(h, a->prev));
        SP_TRY(push_pair(h, m.pos));
    }
    int nids = 0;
    for (int32_t i = 0; i >= 0; i = h->syms[i].next) {
        SP_TRY(sp_tok_ids_push(out, h->syms[i].id));
        if (ce && nids < CACHE_IDS_MAX) ce->ids[nids] = h->syms[i].id;
        nids++;
    }
    if (ce && nids <= CACHE_IDS_MAX) {
        ce->wlen = (uint8_t)n;
        ce->nids = (uint8_t)nids;
        memcpy(ce->word, w, (size_t)n);
    } else if (ce) ce->wlen = 0;
    return 0;
}

/* ---- encoding: the pipeline -------------------------------------------- */

/* Normalizes, pre-tokenizes and BPE-encodes one piece of raw text. */
static int encode_segment(hf *h, const char *s, int64_t n, int origin, sp_tok_ids *out) {
    const char *ns = s;
    int64_t nn = n;
    int cur = 0;
    for (int i = 0; i < h->n_norm; i++) {
        SP_TRY(norm_apply(h, &h->norm[i], ns, nn, &h->norm_buf[cur]));
        ns = h->norm_buf[cur].s;
        nn = h->norm_buf[cur].n;
        cur ^= 1;
    }
    /* added tokens with normalized=true, matched in the normalized text */
    pvec *pa = &h->added_pv;
    pa->n = 0;
    SP_TRY(split_added(h, 1, ns, nn, 0, origin, pa));
    for (int64_t k = 0; k < pa->n; k++) {
        piece p = pa->p[k];
        if (p.id >= 0) {
            SP_TRY(sp_tok_ids_push(out, p.id));
            continue;
        }
        if (p.len == 0) continue;
        /* the pre-tokenizers, ping-ponging between two (pieces, text) pairs */
        pvec one = {&p, 1, 1};
        const pvec *in = &one;
        const char *inb = ns;
        for (int i = 0; i < h->n_pre; i++) {
            int w = i & 1;
            sbuf wrap = {.s = (char *)inb};
            SP_TRY(pre_apply(h, &h->pre[i], in, &wrap, &h->pre_pv[w], &h->pre_buf[w]));
            in = &h->pre_pv[w];
            inb = h->pre_buf[w].s;
        }
        for (int64_t w = 0; w < in->n; w++) SP_TRY(bpe_word(h, inb + in->p[w].off, in->p[w].len, out));
    }
    return 0;
}

static int hf_encode(void *p, const char *text, int64_t len, int64_t text_max, sp_tok_ids *out) {
    hf *h = p;
    /* the buffers a document's text grows in: each normalizer's and each
     * pre-tokenizer's output, and ByteLevel's */
    sbuf *grown[] = {&h->norm_buf[0], &h->norm_buf[1], &h->pre_buf[0], &h->pre_buf[1], &h->bl_buf};
    for (size_t i = 0; i < sizeof grown / sizeof grown[0]; i++) grown[i]->max = text_max, grown[i]->owner = h->path;
    h->text_max = text_max;
    h->meter.left = h->meter.total = len < (INT64_MAX - REGEX_STEPS_BASE) / REGEX_STEPS_PER_BYTE
                                         ? REGEX_STEPS_BASE + REGEX_STEPS_PER_BYTE * len : INT64_MAX;
    pvec *segs = &h->seg_pv;
    segs->n = 0;
    SP_TRY(split_added(h, 0, text, len, 0, 1, segs));
    /* encode_segment does not touch seg_pv */
    for (int64_t k = 0; k < segs->n; k++) {
        piece s = segs->p[k];
        if (s.id >= 0) SP_TRY(sp_tok_ids_push(out, s.id));
        else SP_TRY(encode_segment(h, text + s.off, s.len, s.origin, out));
    }
    return 0;
}
/* ---- decoding ------------------------------------------------------------------ */

/* A list of strings: text in b, piece k is b.s[v.p[k].off .. +len). */
typedef struct slist {
    sbuf b;
    pvec v;
} slist;

static int sl_add(slist *l, const char *s, int64_t n) {
    SP_TRY(pvec_push(&l->v, (piece){l->b.n, n, -1, 0}));
    return sbuf_add(&l->b, s, n);
}

static int dec_apply(hf *h, const dec_op *op, const slist *in, slist *out) {
    out->b.n = 0;
    out->v.n = 0;
    switch (op->kind) {
    case DEC_BYTELEVEL: {
        sbuf raw = {0};
        int rc = 0;
        for (int64_t k = 0; k < in->v.n && !rc; k++) {
            const char *s = in->b.s + in->v.p[k].off;
            int64_t n = in->v.p[k].len, mark = raw.n, i;
            for (i = 0; i < n && !rc;) {
                int32_t cp;
                i += u8dec((const unsigned char *)s + i, &cp);
                if (cp >= 512 || h->char_byte[cp] < 0) break;
                char b = (char)h->char_byte[cp];
                rc = sbuf_add(&raw, &b, 1);
            }
            if (!rc && i < n) { /* a char outside the byte map: the token's own bytes */
                raw.n = mark;
                rc = sbuf_add(&raw, s, n);
            }
        }
        sbuf fixed = {0};
        if (!rc) rc = lossy_utf8(&fixed, raw.s ? raw.s : "", raw.n);
        if (!rc) rc = sl_add(out, fixed.s ? fixed.s : "", fixed.n);
        free(raw.s);
        free(fixed.s);
        return rc;
    }
    case DEC_METASPACE: {
        int64_t rl = (int64_t)strlen(op->pat);
        for (int64_t k = 0; k < in->v.n; k++) {
            const char *s = in->b.s + in->v.p[k].off;
            int64_t n = in->v.p[k].len;
            SP_TRY(pvec_push(&out->v, (piece){out->b.n, 0, -1, 0}));
            for (int64_t i = 0; i < n;) {
                if (i + rl <= n && !memcmp(s + i, op->pat, (size_t)rl)) {
                    if (!(k == 0 && op->scheme != PS_NEVER)) SP_TRY(sbuf_add(&out->b, " ", 1));
                    i += rl;
                } else SP_TRY(sbuf_add(&out->b, s + i++, 1));
            }
            out->v.p[out->v.n - 1].len = out->b.n - out->v.p[out->v.n - 1].off;
        }
        return 0;
    }
    case DEC_REPLACE: {
        int64_t pl = (int64_t)strlen(op->pat), cl = (int64_t)strlen(op->content);
        for (int64_t k = 0; k < in->v.n; k++) {
            const char *s = in->b.s + in->v.p[k].off;
            int64_t n = in->v.p[k].len;
            SP_TRY(pvec_push(&out->v, (piece){out->b.n, 0, -1, 0}));
            for (int64_t i = 0; i < n;) {
                if (i + pl <= n && !memcmp(s + i, op->pat, (size_t)pl)) {
                    SP_TRY(sbuf_add(&out->b, op->content, cl));
                    i += pl;
                } else SP_TRY(sbuf_add(&out->b, s + i++, 1));
            }
            out->v.p[out->v.n - 1].len = out->b.n - out->v.p[out->v.n - 1].off;
        }
        return 0;
    }
    case DEC_BYTEFALLBACK: {
        char bytes[4096];
        int64_t nb = 0;
        for (int64_t k = 0; k <= in->v.n; k++) {
            const char *s = k < in->v.n ? in->b.s + in->v.p[k].off : "";
            int64_t n = k < in->v.n ? in->v.p[k].len : 0;
            unsigned v;
            char tail;
            int is_byte = k < in->v.n && n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && sscanf(s + 3, "%2x%c", &v, &tail) == 2 && tail == '>';
            if (is_byte && nb < (int64_t)sizeof bytes) {
                bytes[nb++] = (char)v;
                continue;
            }
            if (nb) {
                if (sp_utf8_valid_prefix(bytes, nb) == nb) SP_TRY(sl_add(out, bytes, nb));
                else
                    for (int64_t i = 0; i < nb; i++) SP_TRY(sl_add(out, "\xEF\xBF\xBD", 3));
                nb = 0;
            }
            if (is_byte) bytes[nb++] = (char)v;
            else if (k < in->v.n) SP_TRY(sl_add(out, s, n));
        }
        return 0;
    }
    case DEC_FUSE: {
        SP_TRY(sl_add(out, "", 0));
        for (int64_t k = 0; k < in->v.n; k++) SP_TRY(sbuf_add(&out->b, in->b.s + in->v.p[k].off, in->v.p[k].len));
        out->v.p[0].len = out->b.n;
        return 0;
    }
    case DEC_STRIP: {
        int32_t c;
        u8dec((const unsigned char *)op->pat, &c);
        int cl = (int)strlen(op->pat);
        for (int64_t k = 0; k < in->v.n; k++) {
            const char *s = in->b.s + in->v.p[k].off;
            int64_t n = in->v.p[k].len, b = 0, e = n;
            for (int i = 0; i < op->start && b + cl <= e && !memcmp(s + b, op->pat, (size_t)cl); i++) b += cl;
            for (int i = 0; i < op->stop && e - cl >= b && !memcmp(s + e - cl, op->pat, (size_t)cl); i++) e -= cl;
            SP_TRY(sl_add(out, s + b, e - b));
        }
        (void)c;
        return 0;
    }
    }
    return 0;
}

static int hf_decode(void *p, const int32_t *ids, int64_t n, int skip_special, sp_tok_text *out) {
    hf *h = p;
    if (!h->dec_ok) return sp_fail(SP_EX_DATAERR, "%s: decoder '%s' is not supported (decode only; encoding works)", h->path, h->dec_bad);
    slist l[2] = {0};
    int rc = 0, cur = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        if (h->id_off[id] < 0) continue; /* a hole in the vocabulary: HF skips it */
        if (skip_special && h->id_special[id]) continue;
        rc = sl_add(&l[0], h->id_pool.s + h->id_off[id], h->id_len[id]);
    }
    for (int i = 0; i < h->n_dec && !rc; i++) {
        rc = dec_apply(h, &h->dec[i], &l[cur], &l[cur ^ 1]);
        cur ^= 1;
    }
    for (int64_t k = 0; k < l[cur].v.n && !rc; k++) {
        if (k && h->n_dec == 0) rc = sp_tok_text_append(out, " ", 1); /* no decoder: HF joins with spaces */
        if (!rc) rc = sp_tok_text_append(out, l[cur].b.s + l[cur].v.p[k].off, l[cur].v.p[k].len);
    }
    for (int i = 0; i < 2; i++) {
        free(l[i].b.s);
        free(l[i].v.p);
    }
    return rc;
}

static const sp_tok_ops hf_ops = {hf_encode, hf_decode, hf_free};

/* ---- open ------------------------------------------------------------------------- */

static int32_t find_token(const hf *h, const char *s) {
    if (!s || !*s) return -1;
    int64_t n = (int64_t)strlen(s);
    for (int64_t i = h->n_added - 1; i >= 0; i--)
        if (h->added[i].len == n && !memcmp(h->added_pool.s + h->added[i].off, s, (size_t)n)) return h->added[i].id;
    return strmap_get(&h->vocab, s, n);
}

static int hf_build(sp_tok *t, hf *h, const cJSON *j, const char *path, const char *dir) {
    if (!cJSON_IsObject(j)) return sp_fail(SP_EX_DATAERR, "%s: not a JSON object (truncated or corrupt tokenizer.json?)", path);
    const cJSON *m = jget(j, "model");
    if (!cJSON_IsObject(m)) return sp_fail(SP_EX_DATAERR, "%s: no 'model' object", path);
    const cJSON *tr = jget(j, "truncation"), *pd = jget(j, "padding");
    if (tr && !cJSON_IsNull(tr)) return sp_fail(SP_EX_DATAERR, "%s: 'truncation' is set; slicepipe tokenizes whole documents (set it to null)", path);
    if (pd && !cJSON_IsNull(pd)) return sp_fail(SP_EX_DATAERR, "%s: 'padding' is set; slicepipe tokenizes whole documents (set it to null)", path);
    SP_TRY(parse_model(h, m, path));
    SP_TRY(parse_added(h, jget(j, "added_tokens"), path));
    SP_TRY(parse_normalizer(h, jget(j, "normalizer"), path));
    SP_TRY(parse_pretok(h, jget(j, "pre_tokenizer"), path));
    h->dec_ok = 1;
    SP_TRY(parse_decoder(h, jget(j, "decoder"), path));
    bytelevel_tables(h);
    /* id -> string */
    h->id_off = malloc((size_t)h->n_ids * sizeof *h->id_off);
    h->id_len = calloc((size_t)h->n_ids, sizeof *h->id_len);
    h->id_special = calloc((size_t)h->n_ids, 1);
    if (!h->id_off || !h->id_len || !h->id_special) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    for (int64_t i = 0; i < h->n_ids; i++) h->id_off[i] = -1;
    for (int64_t e = 0; e < h->vocab.n; e++)
        SP_TRY(add_id_string(h, h->vocab.val[e], h->vocab.pool.s + h->vocab.key_off[e], h->vocab.key_len[e], 0, "model.vocab entry"));
    /* the tries (roots 0: matched on raw text, 1: on normalized text) */
    int64_t root;
    SP_TRY(trie_node(h, &root));
    SP_TRY(trie_node(h, &root));
    for (int64_t i = 0; i < h->n_added; i++) {
        added_tok *a = &h->added[i];
        char what[64];
        snprintf(what, sizeof what, "added_tokens[%lld]", (long long)i);
        SP_TRY(add_id_string(h, a->id, h->added_pool.s + a->off, a->len, a->special, what));
        if (a->len == 0) continue;
        SP_TRY(trie_insert(h, a->normalized && h->n_norm ? 1 : 0, h->added_pool.s + a->off, a->len, i));
    }
    SP_TRY(parse_post(t, h, jget(j, "post_processor"), path));
    h->cache = calloc(CACHE_SLOTS, sizeof *h->cache);
    if (!h->cache) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    /* BOS / EOS for callers: the template's, else tokenizer_config.json's,
     * else the usual names */
    int cfg_bos, cfg_eos;
    char bos[128], eos[128];
    SP_TRY(sp_tok_read_config(dir, &cfg_bos, &cfg_eos, bos, eos));
    t->bos_id = t->n_prefix ? t->prefix[0] : find_token(h, bos);
    t->eos_id = t->n_suffix ? t->suffix[t->n_suffix - 1] : find_token(h, eos);
    static const char *eos_names[] = {"</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>"};
    for (size_t i = 0; i < sizeof eos_names / sizeof eos_names[0] && t->eos_id < 0; i++) t->eos_id = find_token(h, eos_names[i]);
    t->vocab_size = h->n_ids;
    snprintf(t->kind_name, sizeof t->kind_name, "tokenizer.json (BPE%s%s)", h->byte_fallback ? ", byte fallback" : "",
             h->n_pre && h->pre[h->n_pre - 1].kind == PRE_BYTELEVEL ? ", byte-level" : "");
    return 0;
}

int sp_tok_hf_open(sp_tok *t, const char *path, const char *dir, const char *buf, int64_t len) {
    hf *h = calloc(1, sizeof *h);
    if (!h) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    h->path = t->path;
    h->mctx = pcre2_match_context_create(NULL);
    if (!h->mctx) {
        free(h);
        return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    pcre2_set_callout(h->mctx, regex_step, &h->meter);
    pcre2_set_heap_limit(h->mctx, 64 << 10); /* KiB: the interpreter's backtracking frames (JIT uses its own stack) */
    cJSON *j;
    int rc = sp_json_parse(path, NULL, buf, len, 0, &j); /* the one strict reader: no key twice, at any level */
    if (!rc) rc = hf_build(t, h, j, path, dir);
    cJSON_Delete(j);
    if (rc) {
        hf_free(h);
        return rc;
    }
    t->ops = &hf_ops;
    t->impl = h;
    return 0;
}
