/* io/base/json.c — the one strict JSON reader (rules in json.h).
 *
 * Two passes over the text: a validator (jv_*) that walks the RFC 8259
 * grammar and refuses what cJSON would accept, then cJSON for the tree, then
 * a walk of the tree for duplicate keys. With SP_JSON_NUL_OK the validator
 * also records every string value's decoded length, in document order, and
 * the tree walk (the same order: cJSON keeps members in document order)
 * stores it in the node's valueint, which cJSON leaves 0 for strings.
 */
#include "json.h"

#include "error.h"
#include "utf8.h"

#include <cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jv {
    const unsigned char *p, *beg, *end;
    const char *err; /* reason for the first error */
    int nul_ok;
    int64_t *lens; /* (n_lens) decoded lengths of string values, with nul_ok */
    int64_t n_lens, cap_lens;
    int oom;
} jv;

static int jv_fail(jv *v, const char *why) {
    v->err = why;
    return -1;
}

static void jv_ws(jv *v) {
    while (v->p < v->end && (*v->p == ' ' || *v->p == '\t' || *v->p == '\n' || *v->p == '\r')) v->p++;
}

static int jv_lit(jv *v, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(v->end - v->p) < n || memcmp(v->p, lit, n) != 0) return jv_fail(v, "unexpected token");
    v->p += n;
    return 0;
}

static int jv_hex4(jv *v, unsigned *out) {
    if (v->end - v->p < 4) return jv_fail(v, "truncated \\u escape");
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = v->p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return jv_fail(v, "bad hex digit in \\u escape");
        x = x * 16 + d;
    }
    v->p += 4;
    *out = x;
    return 0;
}

static int jv_record(jv *v, int64_t n) {
    if (v->n_lens == v->cap_lens) {
        int64_t cap = v->cap_lens ? 2 * v->cap_lens : 64;
        int64_t *p = realloc(v->lens, (size_t)cap * sizeof *p);
        if (!p) {
            v->oom = 1;
            return jv_fail(v, "out of memory");
        }
        v->lens = p;
        v->cap_lens = cap;
    }
    v->lens[v->n_lens++] = n;
    return 0;
}

/* A string at v->p (its opening quote). Values' decoded lengths are recorded
 * with nul_ok. */
static int jv_string(jv *v, int is_key) {
    int64_t n = 0; /* decoded bytes */
    v->p++;        /* opening quote */
    for (;;) {
        if (v->p >= v->end) return jv_fail(v, "unterminated string");
        unsigned c = *v->p;
        if (c == '"') {
            v->p++;
            return is_key || !v->nul_ok ? 0 : jv_record(v, n);
        }
        if (c < 0x20) return jv_fail(v, "control character in string");
        if (c != '\\') {
            v->p++;
            n++;
            continue;
        }
        v->p++;
        if (v->p >= v->end) return jv_fail(v, "unterminated string");
        c = *v->p++;
        if (c && strchr("\"\\/bfnrt", (int)c)) {
            n++;
            continue;
        }
        if (c != 'u') return jv_fail(v, "bad escape in string");
        unsigned u;
        if (jv_hex4(v, &u)) return -1;
        if (u == 0 && (is_key || !v->nul_ok)) return jv_fail(v, is_key ? "\\u0000 in a key" : "\\u0000 in string");
        if (u >= 0xDC00 && u <= 0xDFFF) return jv_fail(v, "lone low surrogate escape in string");
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (v->end - v->p < 2 || v->p[0] != '\\' || v->p[1] != 'u')
                return jv_fail(v, "lone high surrogate escape in string");
            v->p += 2;
            if (jv_hex4(v, &u)) return -1;
            if (u < 0xDC00 || u > 0xDFFF) return jv_fail(v, "lone high surrogate escape in string");
            n += 4;
        } else {
            n += u < 0x80 ? 1 : u < 0x800 ? 2 : 3;
        }
    }
}

static int jv_digits(jv *v) {
    if (v->p >= v->end || *v->p < '0' || *v->p > '9') return jv_fail(v, "malformed number");
    while (v->p < v->end && *v->p >= '0' && *v->p <= '9') v->p++;
    return 0;
}

static int jv_number(jv *v) {
    if (*v->p == '-') v->p++;
    if (v->p >= v->end) return jv_fail(v, "malformed number");
    if (*v->p == '0') {
        v->p++;
        if (v->p < v->end && *v->p >= '0' && *v->p <= '9') return jv_fail(v, "number with a leading zero");
    } else if (jv_digits(v)) {
        return -1;
    }
    if (v->p < v->end && *v->p == '.') {
        v->p++;
        if (jv_digits(v)) return -1;
    }
    if (v->p < v->end && (*v->p == 'e' || *v->p == 'E')) {
        v->p++;
        if (v->p < v->end && (*v->p == '+' || *v->p == '-')) v->p++;
        if (jv_digits(v)) return -1;
    }
    return 0;
}

static int jv_value(jv *v, int depth) {
    jv_ws(v);
    if (v->p >= v->end) return jv_fail(v, "unexpected end");
    unsigned c = *v->p;
    if (c == '"') return jv_string(v, 0);
    if (c == '-' || (c >= '0' && c <= '9')) return jv_number(v);
    if (c == 't') return jv_lit(v, "true");
    if (c == 'f') return jv_lit(v, "false");
    if (c == 'n') return jv_lit(v, "null");
    if (c != '{' && c != '[') return jv_fail(v, "unexpected character");
    if (depth >= SP_JSON_DEPTH_MAX) return jv_fail(v, "nested too deeply");
    unsigned close = c == '{' ? '}' : ']';
    v->p++;
    jv_ws(v);
    if (v->p < v->end && *v->p == close) {
        v->p++;
        return 0;
    }
    for (;;) {
        if (c == '{') {
            jv_ws(v);
            if (v->p >= v->end || *v->p != '"') return jv_fail(v, "expected a string key");
            if (jv_string(v, 1)) return -1;
            jv_ws(v);
            if (v->p >= v->end || *v->p != ':') return jv_fail(v, "expected ':'");
            v->p++;
        }
        if (jv_value(v, depth + 1)) return -1;
        jv_ws(v);
        if (v->p >= v->end) return jv_fail(v, "unexpected end");
        if (*v->p == ',') {
            v->p++;
            continue;
        }
        if (*v->p == close) {
            v->p++;
            return 0;
        }
        return jv_fail(v, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

/* ---- the tree ---------------------------------------------------------- */

typedef struct walk {
    const char *path, *what;
    const char **keys; /* scratch for one object's keys */
    int64_t cap;
    const int64_t *lens; /* with nul_ok: the validator's string lengths, in order */
    int64_t n_lens, at;
    char where[256];     /* the object being checked: "'a' > 'b'" */
} walk;

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int walk_fail(walk *w, const char *fmt, const char *arg) {
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    return sp_fail(SP_EX_DATAERR, "%s: %s%s%s %s", w->path, w->what ? w->what : "", w->what ? ": " : "", msg,
                   w->where[0] ? w->where : "at the top level");
}

/* Pre-order over node: duplicate keys, and string lengths with nul_ok. */
static int walk_node(walk *w, cJSON *node) {
    if (cJSON_IsString(node) && w->lens) {
        if (w->at >= w->n_lens) return sp_fail(SP_EX_SOFTWARE, "%s: JSON string count disagrees with the validator", w->path);
        int64_t n = w->lens[w->at++];
        if (n > INT_MAX) return walk_fail(w, "a string of more than %s bytes", "2^31 - 1");
        node->valueint = (int)n;
    }
    if (cJSON_IsObject(node) && node->child && node->child->next) {
        int64_t n = 0;
        for (const cJSON *c = node->child; c; c = c->next) n++;
        if (n > w->cap) {
            const char **k = realloc(w->keys, (size_t)n * sizeof *k);
            if (!k) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory checking JSON keys", w->path);
            w->keys = k;
            w->cap = n;
        }
        int64_t i = 0;
        for (const cJSON *c = node->child; c; c = c->next) w->keys[i++] = c->string;
        qsort(w->keys, (size_t)n, sizeof *w->keys, cmp_strp);
        for (i = 1; i < n; i++)
            if (!strcmp(w->keys[i - 1], w->keys[i])) return walk_fail(w, "duplicate key '%.200s'", w->keys[i]);
    }
    size_t mark = strlen(w->where);
    int64_t i = 0;
    for (cJSON *c = node->child; c; c = c->next, i++) {
        size_t left = sizeof w->where - mark;
        if (cJSON_IsObject(node)) snprintf(w->where + mark, left, "%s'%.60s'", mark ? " > " : "in ", c->string);
        else snprintf(w->where + mark, left, "%s[%lld]", mark ? "" : "in ", (long long)i);
        SP_TRY(walk_node(w, c));
        w->where[mark] = 0;
    }
    return 0;
}

int sp_json_parse(const char *path, const char *what, const char *buf, int64_t len, int flags, cJSON **out) {
    *out = NULL;
    const char *sep = what ? ": " : "", *wh = what ? what : "";
    int64_t bad = sp_utf8_invalid_at(buf, len);
    if (bad >= 0)
        return sp_fail(SP_EX_DATAERR, "%s: %s%snot valid UTF-8 (bad byte 0x%02x at byte %lld)", path, wh, what ? " is " : "",
                       (unsigned char)buf[bad], (long long)bad);
    jv v = {(const unsigned char *)buf, (const unsigned char *)buf, (const unsigned char *)buf + len, NULL,
            (flags & SP_JSON_NUL_OK) != 0, NULL, 0, 0, 0};
    int rc = 0;
    if (!(flags & SP_JSON_BARE)) jv_ws(&v);
    if ((flags & SP_JSON_BARE) && v.p < v.end && (*v.p == ' ' || *v.p == '\t' || *v.p == '\n' || *v.p == '\r'))
        rc = jv_fail(&v, "whitespace before the value");
    if (!rc) rc = jv_value(&v, 0);
    if (rc) {
        rc = v.oom ? sp_fail(SP_EX_SOFTWARE, "%s: out of memory reading JSON", path)
                   : sp_fail(SP_EX_DATAERR, "%s: %s%snot valid JSON (%s at byte %lld)", path, wh, what ? " is " : "", v.err,
                             (long long)(v.p - v.beg));
        free(v.lens);
        return rc;
    }
    if (!(flags & SP_JSON_BARE)) jv_ws(&v);
    if (v.p != v.end) {
        free(v.lens);
        return sp_fail(SP_EX_DATAERR, "%s: %s%shas trailing garbage after the JSON value (at byte %lld)", path, wh,
                       what ? " " : "", (long long)(v.p - v.beg));
    }
    cJSON *root = cJSON_ParseWithLengthOpts(buf, (size_t)len, NULL, 0);
    if (!root) {
        free(v.lens);
        return sp_fail(SP_EX_DATAERR, "%s%s%s: not valid JSON (the parser failed: out of memory?)", path, sep, wh);
    }
    walk w = {.path = path, .what = what, .lens = v.lens, .n_lens = v.n_lens};
    rc = walk_node(&w, root);
    if (!rc && w.lens && w.at != w.n_lens)
        rc = sp_fail(SP_EX_SOFTWARE, "%s: JSON string count disagrees with the validator", path);
    free(w.keys);
    free(v.lens);
    if (rc) {
        cJSON_Delete(root);
        return rc;
    }
    *out = root;
    return 0;
}

int64_t sp_json_strlen(const cJSON *v) {
    int64_t n = (int64_t)strlen(v->valuestring);
    return v->valueint > n ? v->valueint : n;
}
