/* io/text/tokenizer.c — the common tokenizer interface: finding the file, hashing
 * it, the BOS/EOS rule, and buffers. The formats live in io/text/tok_*.c. */
#include "tokenizer.h"

#include "error.h"
#include "utf8.h"
#include "fileio.h"
#include "json.h"
#include "modelfile.h"
#include "textdoc.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOK_FILE_MAX ((int64_t)1 << 30) /* 1 GiB: no real tokenizer is near it */

void sp_tok_ids_free(sp_tok_ids *b) {
    if (!b) return;
    free(b->ids);
    memset(b, 0, sizeof *b);
}

void sp_tok_text_free(sp_tok_text *b) {
    if (!b) return;
    free(b->s);
    memset(b, 0, sizeof *b);
}

static int grow(void **p, int64_t *cap, int64_t need, int64_t elem, const char *what) {
    if (need <= *cap) return 0;
    int64_t nc = *cap ? *cap : 256;
    while (nc < need) {
        if (sp_mul_i64(nc, 2, &nc)) return sp_fail(SP_EX_SOFTWARE, "%s: size overflow", what);
    }
    int64_t bytes;
    if (sp_mul_i64(nc, elem, &bytes)) return sp_fail(SP_EX_SOFTWARE, "%s: size overflow", what);
    void *q = realloc(*p, (size_t)bytes);
    if (!q) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory (%lld bytes)", what, (long long)bytes);
    *p = q;
    *cap = nc;
    return 0;
}

int sp_tok_ids_push(sp_tok_ids *b, int32_t id) {
    if (b->n == b->cap) SP_TRY(grow((void **)&b->ids, &b->cap, b->n + 1, 4, "token ids"));
    b->ids[b->n++] = id;
    return 0;
}

int sp_tok_ids_reserve(sp_tok_ids *b, int64_t n) { return grow((void **)&b->ids, &b->cap, n, 4, "token ids"); }

int sp_tok_text_append(sp_tok_text *b, const void *s, int64_t n) {
    int64_t need;
    if (sp_add_i64(b->n, n + 1, &need)) return sp_fail(SP_EX_SOFTWARE, "decoded text: size overflow");
    SP_TRY(grow((void **)&b->s, &b->cap, need, 1, "decoded text"));
    if (n) memcpy(b->s + b->n, s, (size_t)n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

int64_t sp_utf8_valid_prefix(const char *str, int64_t n) {
    int64_t bad = sp_utf8_invalid_at(str, n); /* the one validator (io/base/utf8.h) */
    return bad < 0 ? n : bad;
}

static int open_as(const char *path, const char *dir, sp_tok_kind kind, sp_tok **out) {
    *out = NULL;
    char *buf = NULL;
    int64_t len = 0;
    SP_TRY(sp_io_read_small(path, TOK_FILE_MAX, &buf, &len));
    sp_tok *t = calloc(1, sizeof *t);
    if (!t) {
        free(buf);
        return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    t->path = strdup(path);
    t->bos_id = t->eos_id = -1;
    t->text_max = SP_TEXTDOC_DOC_BYTES_MAX_DEFAULT;
    t->kind = kind;
    int rc = t->path ? 0 : sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    if (!rc) rc = sp_io_xxh128_range(path, 0, -1, t->hash);
    if (!rc) {
        switch (kind) {
        case SP_TOK_KIND_HF_JSON: rc = sp_tok_hf_open(t, path, dir, buf, len); break;
        case SP_TOK_KIND_SPM: rc = sp_tok_spm_open(t, path, dir, buf, len); break;
        case SP_TOK_KIND_LLAMA2C: rc = sp_tok_llama2c_open(t, path, dir, buf, len); break;
        }
    }
    free(buf);
    if (rc) {
        sp_tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int sp_tok_open(const char *model_dir, sp_tok **out) {
    static const struct {
        const char *name;
        sp_tok_kind kind;
    } order[] = {
        {"tokenizer.json", SP_TOK_KIND_HF_JSON},
        {"tokenizer.model", SP_TOK_KIND_SPM},
        {"tokenizer.bin", SP_TOK_KIND_LLAMA2C},
    };
    *out = NULL;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", model_dir, order[i].name) >= (int)sizeof p)
            return sp_fail(SP_EX_USAGE, "%s: path too long", model_dir);
        int present;
        SP_TRY(sp_modelfile_check(model_dir, p, &present)); /* the model folder's link rule */
        if (present) return open_as(p, model_dir, order[i].kind, out);
    }
    return sp_fail(SP_EX_NOINPUT, "%s: no tokenizer (looked for tokenizer.json, tokenizer.model, tokenizer.bin)", model_dir);
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

int sp_tok_open_file(const char *path, sp_tok **out) {
    *out = NULL;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    sp_tok_kind kind;
    if (ends_with(path, ".json")) kind = SP_TOK_KIND_HF_JSON;
    else if (ends_with(path, ".model")) kind = SP_TOK_KIND_SPM;
    else if (ends_with(path, ".bin")) kind = SP_TOK_KIND_LLAMA2C;
    else {
        int fd;
        int64_t size;
        SP_TRY(sp_io_open_read(path, &fd, &size));
        char c = 0;
        int rc = size > 0 ? sp_io_pread_full(fd, &c, 1, 0, path) : 0;
        close(fd);
        SP_TRY(rc);
        kind = c == '{' ? SP_TOK_KIND_HF_JSON : SP_TOK_KIND_SPM;
    }
    return open_as(path, dir, kind, out);
}

void sp_tok_free(sp_tok *t) {
    if (!t) return;
    if (t->ops && t->impl) t->ops->free(t->impl);
    free(t->path);
    free(t);
}

int sp_tok_encode(sp_tok *t, const char *text, int64_t len, int add_special, sp_tok_ids *out) {
    if (len < 0) len = (int64_t)strlen(text);
    int64_t ok = sp_utf8_valid_prefix(text, len);
    if (ok != len) return sp_fail(SP_EX_DATAERR, "invalid UTF-8 at byte %lld of the document", (long long)ok);
    if (add_special)
        for (int i = 0; i < t->n_prefix; i++) SP_TRY(sp_tok_ids_push(out, t->prefix[i]));
    SP_TRY(t->ops->encode(t->impl, text, len, t->text_max, out));
    if (add_special)
        for (int i = 0; i < t->n_suffix; i++) SP_TRY(sp_tok_ids_push(out, t->suffix[i]));
    return 0;
}

int sp_tok_decode(sp_tok *t, const int32_t *ids, int64_t n, int skip_special, sp_tok_text *out) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->vocab_size)
            return sp_fail(SP_EX_DATAERR, "%s: token id %d at index %lld is outside the vocabulary (%lld)", t->path, ids[i],
                           (long long)i, (long long)t->vocab_size);
    SP_TRY(sp_tok_text_append(out, "", 0));
    return t->ops->decode(t->impl, ids, n, skip_special, out);
}

void sp_tok_set_text_max(sp_tok *t, int64_t bytes) { t->text_max = bytes > 0 ? bytes : SP_TEXTDOC_DOC_BYTES_MAX_DEFAULT; }

sp_tok_kind sp_tok_kind_of(const sp_tok *t) { return t->kind; }
const char *sp_tok_kind_name(const sp_tok *t) { return t->kind_name; }
const char *sp_tok_path(const sp_tok *t) { return t->path; }
int64_t sp_tok_vocab_size(const sp_tok *t) { return t->vocab_size; }
int32_t sp_tok_bos_id(const sp_tok *t) { return t->bos_id; }
int32_t sp_tok_eos_id(const sp_tok *t) { return t->eos_id; }
int sp_tok_adds_bos(const sp_tok *t) { return t->n_prefix > 0; }
int sp_tok_adds_eos(const sp_tok *t) { return t->n_suffix > 0; }
const char *sp_tok_hash(const sp_tok *t) { return t->hash; }

static void token_content(const cJSON *v, char dst[128]) {
    dst[0] = 0;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (cJSON_IsString(v)) snprintf(dst, 128, "%s", v->valuestring);
}

int sp_tok_read_config(const char *dir, int *add_bos, int *add_eos, char bos[128], char eos[128]) {
    *add_bos = *add_eos = -1;
    bos[0] = eos[0] = 0;
    char p[4096];
    if (snprintf(p, sizeof p, "%s/tokenizer_config.json", dir) >= (int)sizeof p) return 0;
    int present;
    SP_TRY(sp_modelfile_check(dir, p, &present));
    if (!present) return 0;
    char *buf;
    int64_t len;
    SP_TRY(sp_io_read_small(p, 64 << 20, &buf, &len));
    cJSON *j;
    int rc = sp_json_parse(p, NULL, buf, len, 0, &j); /* the one strict reader */
    free(buf);
    SP_TRY(rc);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return sp_fail(SP_EX_DATAERR, "%s: not a JSON object", p);
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "add_bos_token");
    if (cJSON_IsBool(v)) *add_bos = cJSON_IsTrue(v);
    v = cJSON_GetObjectItemCaseSensitive(j, "add_eos_token");
    if (cJSON_IsBool(v)) *add_eos = cJSON_IsTrue(v);
    token_content(cJSON_GetObjectItemCaseSensitive(j, "bos_token"), bos);
    token_content(cJSON_GetObjectItemCaseSensitive(j, "eos_token"), eos);
    cJSON_Delete(j);
    return 0;
}

/* ---- the vocabulary, for exporters (tokenizer.h) ---------------------------
 * Read again from the file, independently of the format modules' encoders:
 *   tokenizer.bin   int32 max_len, then per id: f32 score, i32 len, bytes;
 *   tokenizer.model the SentencePiece ModelProto (protobuf): field 1 pieces
 *                   {1 piece, 2 score (fixed32), 3 type}, field 2 trainer_spec
 *                   {3 model_type, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id},
 *                   field 3 normalizer_spec {3 add_dummy_prefix};
 *   tokenizer.json  model.vocab / model.merges / added_tokens. */

void sp_tok_vocab_free(sp_tok_vocab *v) {
    if (!v) return;
    for (int64_t i = 0; i < v->n; i++)
        if (v->piece) free(v->piece[i]);
    for (int64_t i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->piece);
    free(v->score);
    free(v->type);
    free(v->merges);
    memset(v, 0, sizeof *v);
}

static int voc_alloc(sp_tok_vocab *v, int64_t n, const char *path) {
    if (n <= 0 || n > SP_TOK_VOCAB_MAX) return sp_fail(SP_EX_DATAERR, "%s: vocabulary of %lld tokens", path, (long long)n);
    v->piece = calloc((size_t)n, sizeof *v->piece);
    v->score = calloc((size_t)n, sizeof *v->score);
    v->type = calloc((size_t)n, sizeof *v->type);
    if (!v->piece || !v->score || !v->type) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory for %lld tokens", path, (long long)n);
    v->n = n;
    for (int64_t i = 0; i < n; i++) v->type[i] = SP_TOK_PIECE_NORMAL;
    return 0;
}

static int voc_set(sp_tok_vocab *v, int64_t id, const char *s, int64_t n, int spaces_to_u2581) {
    int64_t k = 0, extra = 0;
    if (spaces_to_u2581)
        for (int64_t i = 0; i < n; i++) extra += s[i] == ' ' ? 2 : 0;
    char *p = malloc((size_t)(n + extra + 1));
    if (!p) return sp_fail(SP_EX_SOFTWARE, "out of memory for a token piece");
    for (int64_t i = 0; i < n; i++) {
        if (spaces_to_u2581 && s[i] == ' ') {
            p[k++] = (char)0xe2;
            p[k++] = (char)0x96;
            p[k++] = (char)0x81;
        } else {
            p[k++] = s[i];
        }
    }
    p[k] = 0;
    free(v->piece[id]);
    v->piece[id] = p;
    return 0;
}

static int voc_fill_missing(sp_tok_vocab *v) {
    for (int64_t i = 0; i < v->n; i++)
        if (!v->piece[i]) {
            char b[40];
            int n = snprintf(b, sizeof b, "[PAD%lld]", (long long)i);
            SP_TRY(voc_set(v, i, b, n, 0));
            v->type[i] = SP_TOK_PIECE_UNUSED;
        }
    return 0;
}

static int is_byte_piece(const char *s, int64_t n) {
    return n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>';
}

static int vocab_llama2c(const sp_tok *t, const char *path, const unsigned char *b, int64_t len, sp_tok_vocab *v) {
    int64_t n = 0;
    for (int64_t off = 4; off < len; n++) {
        int32_t l;
        if (off + 8 > len) return sp_fail(SP_EX_DATAERR, "%s: truncated at token %lld", path, (long long)n);
        memcpy(&l, b + off + 4, 4);
        if (l < 0 || l > len - off - 8) return sp_fail(SP_EX_DATAERR, "%s: token %lld: bad length %d", path, (long long)n, l);
        off += 8 + l;
    }
    SP_TRY(voc_alloc(v, n, path));
    int64_t off = 4;
    for (int64_t i = 0; i < n; i++) {
        int32_t l;
        memcpy(&v->score[i], b + off, 4);
        memcpy(&l, b + off + 4, 4);
        const char *s = (const char *)b + off + 8;
        SP_TRY(voc_set(v, i, s, l, 1));
        if (i == 0) v->type[i] = SP_TOK_PIECE_UNKNOWN;
        else if (i <= 2) v->type[i] = SP_TOK_PIECE_CONTROL;
        else if (is_byte_piece(s, l)) v->type[i] = SP_TOK_PIECE_BYTE;
        off += 8 + l;
    }
    v->style = SP_TOK_STYLE_SPM;
    v->unk_id = 0;
    v->bos_id = n > 1 ? 1 : -1;
    v->eos_id = n > 2 ? 2 : -1;
    v->pad_id = -1;
    v->add_bos = sp_tok_adds_bos(t);
    v->add_eos = sp_tok_adds_eos(t);
    v->add_space_prefix = 1;
    return 0;
}

/* protobuf wire format: varints, fixed32/64 and length-delimited fields */
typedef struct pb {
    const unsigned char *p, *end;
} pb;

static int pb_varint(pb *r, uint64_t *out) {
    uint64_t x = 0;
    for (int sh = 0; sh < 64; sh += 7) {
        if (r->p >= r->end) return -1;
        unsigned char c = *r->p++;
        x |= (uint64_t)(c & 0x7f) << sh;
        if (!(c & 0x80)) {
            *out = x;
            return 0;
        }
    }
    return -1;
}

/* Next field: number, wire type, and for type 2 the payload; others skipped
 * into *val. Returns 1 on a field, 0 at the end, -1 when malformed. */
static int pb_next(pb *r, uint32_t *field, int *wt, pb *sub, uint64_t *val) {
    uint64_t key, n;
    if (r->p >= r->end) return 0;
    if (pb_varint(r, &key)) return -1;
    *field = (uint32_t)(key >> 3);
    *wt = (int)(key & 7);
    switch (*wt) {
    case 0: return pb_varint(r, val) ? -1 : 1;
    case 1:
        if (r->end - r->p < 8) return -1;
        memcpy(val, r->p, 8);
        r->p += 8;
        return 1;
    case 5: {
        uint32_t u;
        if (r->end - r->p < 4) return -1;
        memcpy(&u, r->p, 4);
        *val = u;
        r->p += 4;
        return 1;
    }
    case 2:
        if (pb_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return -1;
        sub->p = r->p;
        sub->end = r->p + n;
        r->p += n;
        return 1;
    default: return -1;
    }
}

int sp_tok_spm_spec_read(const char *path, const unsigned char *b, int64_t len, sp_tok_spm_spec *sp) {
    pb r = {b, b + len}, sub;
    uint32_t f;
    int wt, rc;
    uint64_t val;
    *sp = (sp_tok_spm_spec){.model_type = 1, .unk_id = 0, .bos_id = 1, .eos_id = 2, .pad_id = -1, .add_dummy_prefix = 1};
    while ((rc = pb_next(&r, &f, &wt, &sub, &val)) == 1) {
        if (f == 1 && wt == 2) sp->n_pieces++;
        if (f == 2 && wt == 2) {
            pb s = sub, x;
            uint32_t g;
            int w2, rc2;
            while ((rc2 = pb_next(&s, &g, &w2, &x, &val)) == 1) {
                if (w2 != 0) continue;
                if (g == 3) sp->model_type = (int64_t)val;
                if (g == 40) sp->unk_id = (int32_t)val;
                if (g == 41) sp->bos_id = (int32_t)val;
                if (g == 42) sp->eos_id = (int32_t)val;
                if (g == 43) sp->pad_id = (int32_t)val;
            }
            if (rc2 < 0) return sp_fail(SP_EX_DATAERR, "%s: corrupt trainer_spec", path);
        }
        if (f == 3 && wt == 2) {
            pb s = sub, x;
            uint32_t g;
            int w2, rc2;
            while ((rc2 = pb_next(&s, &g, &w2, &x, &val)) == 1)
                if (g == 3 && w2 == 0) sp->add_dummy_prefix = val != 0;
            if (rc2 < 0) return sp_fail(SP_EX_DATAERR, "%s: corrupt normalizer_spec", path);
        }
    }
    if (rc < 0) return sp_fail(SP_EX_DATAERR, "%s: corrupt SentencePiece model", path);
    /* libsentencepiece's protobuf-lite reads an unknown enum value as the
     * default, UNIGRAM: a model_type it does not know would be tokenized as a
     * unigram model without a word */
    if (sp->model_type < 1 || sp->model_type > 4)
        return sp_fail(SP_EX_DATAERR, "%s: trainer_spec.model_type %lld is none SentencePiece knows (1 unigram, 2 BPE, 3 word, "
                       "4 char)", path, (long long)sp->model_type);
    return 0;
}

static int vocab_spm(const sp_tok *t, const char *path, const unsigned char *b, int64_t len, sp_tok_vocab *v) {
    pb r = {b, b + len}, sub;
    uint32_t f;
    int wt, rc;
    uint64_t val;
    sp_tok_spm_spec spec;
    SP_TRY(sp_tok_spm_spec_read(path, b, len, &spec));
    const int64_t n = spec.n_pieces;
    if (spec.model_type != 2)
        return sp_fail(SP_EX_DATAERR, "%s: SentencePiece model_type %lld: only BPE (2) can be exported to llama.cpp's SPM vocabulary", path,
                       (long long)spec.model_type);
    SP_TRY(voc_alloc(v, n, path));
    int64_t i = 0;
    while ((rc = pb_next(&r, &f, &wt, &sub, &val)) == 1) {
        if (!(f == 1 && wt == 2)) continue;
        pb s = sub, x;
        uint32_t g;
        int w2, rc2, have = 0;
        while ((rc2 = pb_next(&s, &g, &w2, &x, &val)) == 1) {
            if (g == 1 && w2 == 2) {
                SP_TRY(voc_set(v, i, (const char *)x.p, x.end - x.p, 0));
                have = 1;
            } else if (g == 2 && w2 == 5) {
                uint32_t u = (uint32_t)val;
                memcpy(&v->score[i], &u, 4);
            } else if (g == 3 && w2 == 0) {
                if (val < 1 || val > 6) return sp_fail(SP_EX_DATAERR, "%s: piece %lld: type %llu", path, (long long)i, (unsigned long long)val);
                v->type[i] = (int32_t)val;
            }
        }
        if (rc2 < 0 || !have) return sp_fail(SP_EX_DATAERR, "%s: piece %lld is corrupt", path, (long long)i);
        i++;
    }
    v->style = SP_TOK_STYLE_SPM;
    v->unk_id = spec.unk_id >= 0 && spec.unk_id < n ? spec.unk_id : -1;
    v->bos_id = spec.bos_id >= 0 && spec.bos_id < n ? spec.bos_id : -1;
    v->eos_id = spec.eos_id >= 0 && spec.eos_id < n ? spec.eos_id : -1;
    v->pad_id = spec.pad_id >= 0 && spec.pad_id < n ? spec.pad_id : -1;
    v->add_bos = sp_tok_adds_bos(t);
    v->add_eos = sp_tok_adds_eos(t);
    v->add_space_prefix = spec.add_dummy_prefix;
    return 0;
}

/* The pre-tokenizer JSON holds a ByteLevel step (GPT-2 byte alphabet). */
static int json_has_type(const cJSON *n, const char *type) {
    if (!n) return 0;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (cJSON_IsString(ty) && !strcmp(ty->valuestring, type)) return 1;
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(n, "pretokenizers");
    if (!seq) seq = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
    if (!seq) seq = cJSON_GetObjectItemCaseSensitive(n, "decoders");
    const cJSON *e;
    cJSON_ArrayForEach(e, seq) if (json_has_type(e, type)) return 1;
    return 0;
}

static const char *json_split_regex(const cJSON *n) {
    if (!n) return NULL;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (cJSON_IsString(ty) && !strcmp(ty->valuestring, "Split")) {
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(n, "pattern"), "Regex");
        return cJSON_IsString(re) ? re->valuestring : NULL;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(n, "pretokenizers")) {
        const char *r = json_split_regex(e);
        if (r) return r;
    }
    return NULL;
}

static int vocab_hf(const sp_tok *t, const char *path, const char *buf, int64_t len, sp_tok_vocab *v) {
    cJSON *j;
    int rc = sp_json_parse(path, NULL, buf, len, 0, &j); /* the one strict reader */
    if (rc) return rc;
    rc = SP_EX_DATAERR;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer");
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(j, "decoder");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(j, "normalizer");
    const cJSON *e;
    if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "BPE") || !cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        sp_fail(SP_EX_DATAERR, "%s: only a BPE model with vocab and merges can be exported", path);
        goto out;
    }
    int64_t n = sp_tok_vocab_size(t);
    if ((rc = voc_alloc(v, n, path))) goto out;
    v->style = json_has_type(pre, "ByteLevel") || json_has_type(dec, "ByteLevel") ? SP_TOK_STYLE_BPE : SP_TOK_STYLE_SPM;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (double)n) {
            rc = sp_fail(SP_EX_DATAERR, "%s: vocab entry '%s': bad id", path, e->string);
            goto out;
        }
        int64_t id = (int64_t)e->valuedouble;
        if ((rc = voc_set(v, id, e->string, (int64_t)strlen(e->string), 0))) goto out;
        if (v->style == SP_TOK_STYLE_SPM && is_byte_piece(e->string, (int64_t)strlen(e->string))) v->type[id] = SP_TOK_PIECE_BYTE;
    }
    /* merges: "a b" strings or ["a", "b"] pairs */
    int64_t nm = cJSON_GetArraySize(merges), mi = 0;
    if (v->style == SP_TOK_STYLE_BPE) {
        v->merges = calloc((size_t)(nm ? nm : 1), sizeof *v->merges);
        if (!v->merges) {
            rc = sp_fail(SP_EX_SOFTWARE, "%s: out of memory for merges", path);
            goto out;
        }
    }
    cJSON_ArrayForEach(e, merges) {
        char *m = NULL;
        if (cJSON_IsString(e)) {
            m = strdup(e->valuestring);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            const char *a = cJSON_GetArrayItem(e, 0)->valuestring, *b2 = cJSON_GetArrayItem(e, 1)->valuestring;
            size_t l = strlen(a) + strlen(b2) + 2;
            m = malloc(l);
            if (m) snprintf(m, l, "%s %s", a, b2);
        } else {
            rc = sp_fail(SP_EX_DATAERR, "%s: merge %lld is neither \"a b\" nor [a, b]", path, (long long)mi);
            goto out;
        }
        if (!m) {
            rc = sp_fail(SP_EX_SOFTWARE, "%s: out of memory for merges", path);
            goto out;
        }
        if (v->style == SP_TOK_STYLE_BPE) {
            v->merges[v->n_merges++] = m;
        } else {
            /* SPM style: the merged piece scores -rank, so llama.cpp's
             * highest-score-first merging follows the merge order */
            char *sp = strchr(m, ' ');
            if (sp) {
                memmove(sp, sp + 1, strlen(sp));
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(vocab, m);
                if (cJSON_IsNumber(id) && v->score[(int64_t)id->valuedouble] == 0.0f)
                    v->score[(int64_t)id->valuedouble] = -(float)(mi + 1);
            }
            free(m);
        }
        mi++;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        const cJSON *special = cJSON_GetObjectItemCaseSensitive(e, "special");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (double)n || !cJSON_IsString(content)) {
            rc = sp_fail(SP_EX_DATAERR, "%s: added_tokens: bad entry", path);
            goto out;
        }
        int64_t k = (int64_t)id->valuedouble;
        if ((rc = voc_set(v, k, content->valuestring, (int64_t)strlen(content->valuestring), 0))) goto out;
        v->type[k] = cJSON_IsTrue(special) ? SP_TOK_PIECE_CONTROL : SP_TOK_PIECE_USER_DEFINED;
    }
    if ((rc = voc_fill_missing(v))) goto out;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    const cJSON *uid = cJSON_IsString(unk) ? cJSON_GetObjectItemCaseSensitive(vocab, unk->valuestring) : NULL;
    v->unk_id = cJSON_IsNumber(uid) ? (int32_t)uid->valuedouble : -1;
    if (v->unk_id >= 0 && v->style == SP_TOK_STYLE_SPM) v->type[v->unk_id] = SP_TOK_PIECE_UNKNOWN;
    v->bos_id = sp_tok_bos_id(t);
    v->eos_id = sp_tok_eos_id(t);
    v->pad_id = -1;
    v->add_bos = sp_tok_adds_bos(t);
    v->add_eos = sp_tok_adds_eos(t);
    v->add_space_prefix = json_has_type(pre, "Metaspace") || json_has_type(norm, "Prepend");
    if (v->style == SP_TOK_STYLE_BPE) {
        const char *re = json_split_regex(pre);
        if (!re) snprintf(v->pre, sizeof v->pre, "gpt2");
        else if (strstr(re, "\\p{N}{1,3}")) snprintf(v->pre, sizeof v->pre, "llama-bpe");
        else if (strstr(re, "\\p{N}|")) snprintf(v->pre, sizeof v->pre, "qwen2");
        else {
            rc = sp_fail(SP_EX_DATAERR, "%s: pre-tokenizer regex '%s' matches none llama.cpp knows (gpt2, llama-bpe, qwen2)", path, re);
            goto out;
        }
    }
    rc = 0;
out:
    cJSON_Delete(j);
    return rc;
}

int sp_tok_vocab_load(const sp_tok *t, sp_tok_vocab *v) {
    char *buf = NULL;
    int64_t len = 0;
    memset(v, 0, sizeof *v);
    SP_TRY(sp_io_read_small(t->path, (int64_t)1 << 31, &buf, &len));
    int rc;
    switch (t->kind) {
    case SP_TOK_KIND_LLAMA2C: rc = vocab_llama2c(t, t->path, (const unsigned char *)buf, len, v); break;
    case SP_TOK_KIND_SPM: rc = vocab_spm(t, t->path, (const unsigned char *)buf, len, v); break;
    default: rc = vocab_hf(t, t->path, buf, len, v); break;
    }
    free(buf);
    if (!rc) rc = voc_fill_missing(v);
    if (rc) sp_tok_vocab_free(v);
    return rc;
}
