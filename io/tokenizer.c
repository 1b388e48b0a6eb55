/* io/tokenizer.c — the common tokenizer interface: finding the file, hashing
 * it, the BOS/EOS rule, and buffers. The formats live in io/tok_*.c. */
#include "tokenizer.h"

#include "error.h"
#include "fileio.h"

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
    const unsigned char *s = (const unsigned char *)str;
    int64_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else return i;
        if (n - i < len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (int k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return n;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
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
        if (file_exists(p)) return open_as(p, model_dir, order[i].kind, out);
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
    SP_TRY(t->ops->encode(t->impl, text, len, out));
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
    if (!file_exists(p)) return 0;
    char *buf;
    int64_t len;
    SP_TRY(sp_io_read_small(p, 64 << 20, &buf, &len));
    cJSON *j = cJSON_ParseWithLength(buf, (size_t)len);
    free(buf);
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
