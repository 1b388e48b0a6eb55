/* pipeline/run/manifest.c — the run manifest: a hand-written parser for a TOML subset.
 *
 * Why hand-written: Debian 12 packages no C TOML library (tomlc99 and
 * toml-c are not in the archive), and slicepipe only depends on packaged
 * libraries. The manifest is small and flat, so a strict line-based parser for
 * the subset below is less code than vendoring a full TOML implementation,
 * and every rejection can name its line.
 *
 * Supported subset (anything else is an error naming the line):
 *   - UTF-8 text; LF or CRLF line ends; no NUL bytes; at most 1 MiB in all
 *   - blank lines; comments from '#' to the end of the line, also after a
 *     header or a value
 *   - table headers `[name]` with a bare name (no dotted names, no quoted
 *     names, no `[[array tables]]`)
 *   - `key = value` with a bare key ([A-Za-z0-9_-]+; no dotted or quoted keys)
 *   - values:
 *       basic strings  "..." with the escapes \" \\ \n \t \uXXXX (no NUL, no
 *                      surrogates); other escapes and raw control characters
 *                      are errors
 *       literal strings '...' (no escapes)
 *       integers       decimal, optional sign, '_' only between digits, no
 *                      leading zeros, within int64
 *       floats         decimal with a fraction and/or an exponent (1.5, 2e-3,
 *                      -1.0E+2), '_' only between digits; must be finite
 *       booleans       true, false
 *   - NOT supported (rejected): arrays, inline tables, dates and times,
 *     multi-line strings, hex/octal/binary integers, inf and nan, keys
 *     outside a table.
 *
 * Validation (see manifest.h for the schema): unknown table, unknown key in a
 * known table, wrong type (an integer is accepted where a float is expected),
 * out-of-range value, duplicate table or key, missing required key, and an
 * output path that resolves to the model path. All of these return
 * SP_EX_USAGE with "<manifest>:<line>: <reason>"; a missing required key names
 * the line of its table header, or line 0 when the table is absent.
 */
#include "manifest.h"

#include "backend.h"

#include "error.h"
#include "fileio.h"
#include "gguf.h"
#include "utf8.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MANIFEST_BYTES_MAX (1 << 20)

/* ---------------------------------------------------------------- values */

typedef enum val_type { VAL_STRING, VAL_INT, VAL_FLOAT, VAL_BOOL } val_type;

typedef struct val {
    val_type type;
    char *s;   /* VAL_STRING: malloc'd, NUL-terminated, no interior NUL */
    int64_t i; /* VAL_INT, VAL_BOOL */
    double f;  /* VAL_FLOAT */
} val;

static const char *val_type_name(val_type t) {
    switch (t) {
    case VAL_STRING: return "a string";
    case VAL_INT: return "an integer";
    case VAL_FLOAT: return "a float";
    case VAL_BOOL: return "a boolean";
    }
    return "?";
}

/* Where messages point: the manifest path and the line being parsed. */
typedef struct parser {
    const char *path; /* for messages */
    int line;         /* 1-based line being parsed */
} parser;

static int pfail(const parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int pfail(const parser *p, const char *fmt, ...) {
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return sp_fail(SP_EX_USAGE, "%s:%d: %s", p->path, p->line, reason);
}

static int is_bare(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static const char *skip_ws(const char *s, const char *e) {
    while (s < e && (*s == ' ' || *s == '\t')) s++;
    return s;
}

/* Only whitespace and an optional comment may follow. */
static int expect_eol(parser *p, const char *s, const char *e, const char *after) {
    s = skip_ws(s, e);
    if (s == e || *s == '#') return 0;
    return pfail(p, "unexpected text after %s", after);
}

/* Appends code point cp as UTF-8. */
static char *put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* Parses a basic ("...") or literal ('...') string starting at *sp. */
static int parse_string(parser *p, const char **sp, const char *e, val *v) {
    const char *s = *sp;
    char q = *s;
    if (e - s >= 3 && s[1] == q && s[2] == q) return pfail(p, "multi-line strings are not supported");
    s++;
    /* The decoded string is never longer than the source text. */
    char *out;
    SP_TRY(sp_alloc((void **)&out, e - s + 1, 1, "manifest string"));
    char *o = out;
    for (;;) {
        if (s == e) {
            free(out);
            return pfail(p, "unterminated string");
        }
        unsigned char c = (unsigned char)*s;
        if (c == (unsigned char)q) {
            s++;
            break;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7F) {
            free(out);
            return pfail(p, "control character 0x%02X in a string", c);
        }
        if (q == '"' && c == '\\') {
            if (s + 1 == e) {
                free(out);
                return pfail(p, "unterminated string");
            }
            char x = s[1];
            s += 2;
            switch (x) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case 'n': *o++ = '\n'; break;
            case 't': *o++ = '\t'; break;
            case 'u': {
                uint32_t cp = 0;
                for (int k = 0; k < 4; k++, s++) {
                    char h = s < e ? *s : 0;
                    int d = is_digit(h) ? h - '0'
                            : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                            : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                                     : -1;
                    if (d < 0) {
                        free(out);
                        return pfail(p, "\\u escape needs 4 hex digits");
                    }
                    cp = cp * 16 + (uint32_t)d;
                }
                if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
                    free(out);
                    return pfail(p, "\\u%04X is not allowed in a string", (unsigned)cp);
                }
                o = put_utf8(o, cp); /* at most 3 bytes for the 6 consumed */
                break;
            }
            default:
                free(out);
                return pfail(p, "unsupported escape '\\%c' in a string (only \\\" \\\\ \\n \\t \\uXXXX)",
                             (x >= 0x20 && x < 0x7F) ? x : '?');
            }
            continue;
        }
        *o++ = (char)c;
        s++;
    }
    *o = 0;
    v->type = VAL_STRING;
    v->s = out;
    *sp = s;
    return 0;
}

/* Copies digits of [s,e) into buf without the underscores, checking each '_'
 * sits between two digits. Returns the length, or -1. */
static int strip_underscores(const char *s, const char *e, char *buf, size_t cap) {
    size_t n = 0;
    for (const char *c = s; c < e; c++) {
        if (*c == '_') {
            if (c == s || c + 1 == e || !is_digit(c[-1]) || !is_digit(c[1])) return -1;
            continue;
        }
        if (n + 1 >= cap) return -1;
        buf[n++] = *c;
    }
    buf[n] = 0;
    return (int)n;
}

/* Parses an integer, float, or rejects dates, inf/nan, hex... in [s,e). */
static int parse_number(parser *p, const char *s, const char *e, val *v) {
    const char *c = s;
    /* 1979-05-27..., 07:32:00 */
    int date = e - s >= 5 && is_digit(s[0]) && is_digit(s[1]) && is_digit(s[2]) && is_digit(s[3]) && s[4] == '-';
    if (date || memchr(s, ':', (size_t)(e - s))) return pfail(p, "dates and times are not supported");
    if (*c == '+' || *c == '-') c++;
    if (c == e) return pfail(p, "invalid value '%.*s'", (int)(e - s), s);
    if (e - c >= 3 && (memcmp(c, "inf", 3) == 0 || memcmp(c, "nan", 3) == 0))
        return pfail(p, "inf and nan are not supported");
    if (e - c >= 2 && c[0] == '0' && (c[1] == 'x' || c[1] == 'o' || c[1] == 'b'))
        return pfail(p, "hexadecimal, octal and binary integers are not supported");
    if (!is_digit(*c)) return pfail(p, "invalid value '%.*s' (strings must be quoted)", (int)(e - s > 60 ? 60 : e - s), s);
    /* integer part */
    const char *ip = c;
    while (c < e && (is_digit(*c) || *c == '_')) c++;
    const char *ip_end = c;
    int is_float = 0;
    if (c < e && *c == '.') {
        is_float = 1;
        c++;
        const char *fp = c;
        while (c < e && (is_digit(*c) || *c == '_')) c++;
        if (c == fp) return pfail(p, "a float needs digits after the '.'");
    }
    if (c < e && (*c == 'e' || *c == 'E')) {
        is_float = 1;
        c++;
        if (c < e && (*c == '+' || *c == '-')) c++;
        const char *xp = c;
        while (c < e && (is_digit(*c) || *c == '_')) c++;
        if (c == xp) return pfail(p, "a float needs digits in its exponent");
    }
    if (c != e) return pfail(p, "invalid number '%.*s'", (int)(e - s > 60 ? 60 : e - s), s);
    if (ip_end - ip > 1 && ip[0] == '0') return pfail(p, "leading zeros are not allowed in numbers");
    char buf[512];
    if (e - s >= (ptrdiff_t)sizeof buf) return pfail(p, "number is too long");
    if (strip_underscores(s, e, buf, sizeof buf) < 0)
        return pfail(p, "invalid number '%.*s' ('_' must sit between digits)", (int)(e - s > 60 ? 60 : e - s), s);
    errno = 0;
    char *end;
    if (is_float) {
        double f = strtod(buf, &end);
        if (*end || !isfinite(f)) return pfail(p, "float '%s' is out of range", buf);
        v->type = VAL_FLOAT;
        v->f = f;
    } else {
        long long i = strtoll(buf, &end, 10);
        if (*end || errno == ERANGE) return pfail(p, "integer '%s' is out of range", buf);
        v->type = VAL_INT;
        v->i = (int64_t)i;
    }
    return 0;
}

/* Parses the value at *sp (already past whitespace). */
static int parse_value(parser *p, const char **sp, const char *e, val *v) {
    const char *s = *sp;
    memset(v, 0, sizeof *v);
    if (s == e || *s == '#') return pfail(p, "missing value after '='");
    if (*s == '"' || *s == '\'') return parse_string(p, sp, e, v);
    if (*s == '[') return pfail(p, "arrays are not supported");
    if (*s == '{') return pfail(p, "inline tables are not supported");
    const char *t = s;
    while (t < e && *t != ' ' && *t != '\t' && *t != '#') t++;
    if ((t - s == 4 && memcmp(s, "true", 4) == 0) || (t - s == 5 && memcmp(s, "false", 5) == 0)) {
        v->type = VAL_BOOL;
        v->i = (t - s == 4);
    } else {
        SP_TRY(parse_number(p, s, t, v));
    }
    *sp = t;
    return 0;
}

/* ---------------------------------------------------------------- schema */

typedef enum key_kind {
    KIND_PATH,    /* non-empty string, resolved against the manifest folder */
    KIND_INT,     /* integer in [lo, hi] */
    KIND_FRAC,    /* float (or integer) in [0, 1) */
    KIND_FRAC1,   /* float (or integer) in (0, 1] */
    KIND_SPLIT,   /* float (or integer) in [0, 1], or "auto" (sets split_auto) */
    KIND_SIZE,    /* size string or positive integer, bytes */
    KIND_DTYPE,   /* "f32" | "f16" | "bf16" */
    KIND_BACKEND, /* "auto" | "cpu" | "cuda" */
    KIND_SPILL_DTYPE, /* "f32" | "bf16" */
    KIND_ENUM,        /* one of the key's names (key_def.names); the field is an int (or an enum), its index */
    KIND_GGUF,        /* "none" (-1) or a GGUF weight type as `slicepipe export --type` takes it (io/formats/gguf.h) */
    KIND_BOOL,        /* true | false; the field is an int, 1 or 0 */
} key_kind;

typedef enum table_id { T_MODEL, T_CALIB, T_SLICING, T_OUTPUT, T_RESOURCES, T_EVAL, T_COUNT } table_id;
static const char *const k_tables[T_COUNT] = {"model", "calibration", "slicing", "output", "resources", "eval"};

typedef struct key_def {
    table_id table;
    const char *key;
    key_kind kind;
    int64_t lo, hi; /* KIND_INT */
    int required;   /* when its table is present (model, calibration, output are always required) */
    size_t field;   /* offset in sp_manifest */
    const char *const *names; /* KIND_ENUM: the accepted strings, NULL-terminated, in enum order */
} key_def;

static const char *const k_sampling_names[] = {"first", "random", NULL}; /* sp_calib_sampling */
_Static_assert(sizeof(sp_calib_sampling) == sizeof(int) && sizeof(sp_basis) == sizeof(int) &&
                   sizeof(sp_global_weighting) == sizeof(int) && sizeof(sp_policy_kind) == sizeof(int) &&
                   sizeof(sp_ffn_score) == sizeof(int), "KIND_ENUM fields are written as int");
static const char *const k_policy_names[] = {"slicegpt", "stock", NULL};
static const char *const k_score_names[] = {"energy", "leverage", NULL};
static const char *const k_basis_names[] = {"per-layer", "global", NULL};
static const char *const k_weighting_names[] = {"trace", "raw", NULL};
static const char *const k_gguf_weighting_names[] = {"plain", "calib", NULL}; /* sp_export_weighting */
static const char *const k_precision_names[] = {"f32", "bf16", NULL};          /* enum sp_bk_prec */
static const char *const k_activations_names[] = {"auto", "memory", "disk", NULL}; /* enum sp_activations */

#define F(x) offsetof(sp_manifest, x)
static const key_def k_keys[] = {
    {T_MODEL, "path", KIND_PATH, 0, 0, 1, F(model_path), NULL},
    /* tokens / text: exactly one of the two, checked by check_source */
    {T_CALIB, "tokens", KIND_PATH, 0, 0, 0, F(calib_tokens), NULL},
    {T_CALIB, "text", KIND_PATH, 0, 0, 0, F(calib_text), NULL},
    {T_CALIB, "seqlen", KIND_INT, 2, 1 << 20, 0, F(calib_seqlen), NULL},
    {T_CALIB, "nsamples", KIND_INT, 1, 1 << 24, 0, F(calib_nsamples), NULL},
    {T_CALIB, "sampling", KIND_ENUM, 0, 0, 0, F(calib_sampling), k_sampling_names},
    {T_CALIB, "seed", KIND_INT, 0, INT64_MAX, 0, F(calib_seed), NULL},
    {T_SLICING, "sparsity", KIND_FRAC, 0, 0, 0, F(sparsity), NULL},
    {T_SLICING, "round_to", KIND_INT, 1, 65536, 0, F(round_to), NULL},
    {T_SLICING, "basis", KIND_ENUM, 0, 0, 0, F(basis), k_basis_names},
    {T_SLICING, "global_weighting", KIND_ENUM, 0, 0, 0, F(global_weighting), k_weighting_names},
    {T_SLICING, "policy", KIND_ENUM, 0, 0, 0, F(policy), k_policy_names},
    {T_SLICING, "params", KIND_FRAC1, 0, 0, 0, F(params), NULL},
    {T_SLICING, "split", KIND_SPLIT, 0, 0, 0, F(split), NULL},
    {T_SLICING, "split_holdout", KIND_INT, 1, 1 << 24, 0, F(split_holdout), NULL},
    {T_SLICING, "ffn_score", KIND_ENUM, 0, 0, 0, F(ffn_score), k_score_names},
    {T_SLICING, "ffn_ridge", KIND_FRAC1, 0, 0, 0, F(ffn_ridge), NULL},
    {T_SLICING, "refit", KIND_BOOL, 0, 0, 0, F(refit), NULL},
    {T_SLICING, "refit_ridge", KIND_FRAC1, 0, 0, 0, F(refit_ridge), NULL},
    {T_OUTPUT, "path", KIND_PATH, 0, 0, 1, F(output_path), NULL},
    {T_OUTPUT, "dtype", KIND_DTYPE, 0, 0, 0, F(output_dtype), NULL},
    {T_OUTPUT, "shard_bytes", KIND_SIZE, 0, 0, 0, F(shard_bytes), NULL},
    {T_OUTPUT, "gguf", KIND_GGUF, 0, 0, 0, F(gguf_type), NULL},
    {T_OUTPUT, "gguf_weighting", KIND_ENUM, 0, 0, 0, F(gguf_weighting), k_gguf_weighting_names},
    {T_RESOURCES, "memory", KIND_SIZE, 0, 0, 0, F(memory_bytes), NULL},
    {T_RESOURCES, "threads", KIND_INT, 0, 4096, 0, F(threads), NULL},
    {T_RESOURCES, "spill_dir", KIND_PATH, 0, 0, 0, F(spill_dir), NULL},
    {T_RESOURCES, "backend", KIND_BACKEND, 0, 0, 0, F(backend), NULL},
    {T_RESOURCES, "spill_dtype", KIND_SPILL_DTYPE, 0, 0, 0, F(spill_dtype), NULL},
    {T_RESOURCES, "precision", KIND_ENUM, 0, 0, 0, F(precision), k_precision_names},
    {T_RESOURCES, "activations", KIND_ENUM, 0, 0, 0, F(activations), k_activations_names},
    {T_EVAL, "tokens", KIND_PATH, 0, 0, 0, F(eval_tokens), NULL},
    {T_EVAL, "text", KIND_PATH, 0, 0, 0, F(eval_text), NULL},
    {T_EVAL, "seqlen", KIND_INT, 2, 1 << 20, 0, F(eval_seqlen), NULL},
    {T_EVAL, "windows", KIND_INT, 0, INT64_MAX, 0, F(eval_windows), NULL},
};
#undef F
#define N_KEYS (sizeof k_keys / sizeof k_keys[0])

/* Index of a key in k_keys, or -1. */
static int find_key(int table, const char *k, size_t klen) {
    for (size_t q = 0; q < N_KEYS; q++)
        if ((int)k_keys[q].table == table && strlen(k_keys[q].key) == klen && memcmp(k_keys[q].key, k, klen) == 0)
            return (int)q;
    return -1;
}

/* Index of a key the code itself names: it must exist. */
static int key_index(table_id table, const char *k) {
    int q = find_key((int)table, k, strlen(k));
    SP_ASSERT(q >= 0);
    return q;
}

/* ---------------------------------------------------------------- paths */

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Canonical absolute form of an absolute path that may not exist yet:
 * realpath where it exists, else the canonical parent + the last component
 * (a missing component cannot be a symlink, so "." and ".." after it are
 * resolved lexically). Trailing slashes are ignored. NULL on OOM or when a
 * component exists but cannot be resolved (EACCES, ELOOP, ...). */
static char *canon_path(const char *abs) {
    char *r = realpath(abs, NULL);
    if (r || (errno != ENOENT && errno != ENOTDIR)) return r;
    char *parent = str_dup(abs);
    if (!parent) return NULL;
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;
    char *slash = strrchr(parent, '/');
    if (!slash || n <= 1) { /* not absolute, or "/" (which always resolves) */
        free(parent);
        return NULL;
    }
    char *base = str_dup(slash + 1);
    slash[slash == parent ? 1 : 0] = 0; /* the parent of "/x" is "/" */
    char *cparent = canon_path(parent);
    free(parent);
    char *out = NULL;
    if (cparent && base) {
        if (strcmp(base, ".") == 0) {
            out = cparent, cparent = NULL;
        } else if (strcmp(base, "..") == 0) {
            char *ls = strrchr(cparent, '/');
            ls[ls == cparent ? 1 : 0] = 0;
            out = cparent, cparent = NULL;
        } else {
            sp_path_join(cparent, base, &out); /* out stays NULL on failure */
        }
    }
    free(cparent);
    free(base);
    return out;
}

/* ---------------------------------------------------------------- sizes */

int sp_parse_size(const char *s, int64_t *out) {
    if (!s || !is_digit(*s)) return -1;
    int64_t v = 0;
    for (; is_digit(*s); s++) {
        if (sp_mul_i64(v, 10, &v) || sp_add_i64(v, *s - '0', &v)) return -1;
    }
    const char *u = s;
    while (*u == ' ') u++; /* "10 MB": spaces only before a unit */
    if (u != s && !*u) return -1;
    s = u;
    int64_t unit = 1;
    if (*s) {
        static const char prefixes[] = "kmgt";
        char c = (char)(*s | 0x20);
        const char *pp = strchr(prefixes, c);
        if (c == 'b' && s[1] == 0) {
            unit = 1;
        } else if (pp) {
            int exp = (int)(pp - prefixes) + 1;
            int binary;
            if ((s[1] | 0x20) == 'b' && s[2] == 0) binary = 0;
            else if ((s[1] | 0x20) == 'i' && (s[2] | 0x20) == 'b' && s[3] == 0) binary = 1;
            else return -1;
            for (int k = 0; k < exp; k++) unit *= binary ? 1024 : 1000;
        } else {
            return -1;
        }
    }
    if (sp_mul_i64(v, unit, &v)) return -1;
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------- load */

typedef struct load_state {
    parser p;
    sp_manifest *m;
    char *dir;                 /* canonical absolute folder of the manifest */
    int table_line[T_COUNT];   /* line of each header, 0 = absent */
    int key_line[N_KEYS];      /* line where each key was set, 0 = unset */
    int cur_table;             /* -1 before any header */
} load_state;

static int apply_key(load_state *st, const key_def *kd, val *v) {
    parser *p = &st->p;
    void *field = (char *)st->m + kd->field;
    const char *tname = k_tables[kd->table];
    switch (kd->kind) {
    case KIND_PATH: {
        if (v->type != VAL_STRING)
            return pfail(p, "[%s] %s: expected a string (a path), got %s", tname, kd->key, val_type_name(v->type));
        if (!v->s[0]) return pfail(p, "[%s] %s: the path is empty", tname, kd->key);
        char *r = NULL;
        if (v->s[0] != '/') SP_TRY(sp_path_join(st->dir, v->s, &r));
        else if (!(r = str_dup(v->s))) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", p->path);
        *(char **)field = r;
        return 0;
    }
    case KIND_INT:
        if (v->type != VAL_INT)
            return pfail(p, "[%s] %s: expected an integer, got %s", tname, kd->key, val_type_name(v->type));
        if (v->i < kd->lo || v->i > kd->hi) {
            if (kd->hi == INT64_MAX)
                return pfail(p, "[%s] %s = %lld is out of range (must be >= %lld)", tname, kd->key, (long long)v->i,
                             (long long)kd->lo);
            return pfail(p, "[%s] %s = %lld is out of range [%lld, %lld]", tname, kd->key, (long long)v->i,
                         (long long)kd->lo, (long long)kd->hi);
        }
        *(int64_t *)field = v->i;
        return 0;
    case KIND_FRAC: {
        double f;
        if (v->type == VAL_FLOAT) f = v->f;
        else if (v->type == VAL_INT) f = (double)v->i;
        else return pfail(p, "[%s] %s: expected a number, got %s", tname, kd->key, val_type_name(v->type));
        if (!(f >= 0.0 && f < 1.0)) return pfail(p, "[%s] %s = %g is out of range [0, 1)", tname, kd->key, f);
        *(double *)field = f;
        return 0;
    }
    case KIND_FRAC1: {
        double f;
        if (v->type == VAL_FLOAT) f = v->f;
        else if (v->type == VAL_INT) f = (double)v->i;
        else return pfail(p, "[%s] %s: expected a number, got %s", tname, kd->key, val_type_name(v->type));
        if (!(f > 0.0 && f <= 1.0)) return pfail(p, "[%s] %s = %g is out of range (0, 1]", tname, kd->key, f);
        *(double *)field = f;
        return 0;
    }
    case KIND_SPLIT: {
        if (v->type == VAL_STRING && strcmp(v->s, "auto") == 0) {
            st->m->split_auto = 1;
            return 0;
        }
        double f;
        if (v->type == VAL_FLOAT) f = v->f;
        else if (v->type == VAL_INT) f = (double)v->i;
        else if (v->type == VAL_STRING) return pfail(p, "[%s] %s: expected a number in [0, 1] or \"auto\", got '%.32s'", tname, kd->key, v->s);
        else return pfail(p, "[%s] %s: expected a number or \"auto\", got %s", tname, kd->key, val_type_name(v->type));
        if (!(f >= 0.0 && f <= 1.0)) return pfail(p, "[%s] %s = %g is out of range [0, 1]", tname, kd->key, f);
        *(double *)field = f;
        return 0;
    }
    case KIND_SIZE: {
        int64_t b;
        if (v->type == VAL_INT) {
            b = v->i;
        } else if (v->type == VAL_STRING) {
            if (sp_parse_size(v->s, &b) != 0)
                return pfail(p, "[%s] %s: bad size '%.64s' (e.g. \"4GB\", \"768MiB\", \"1000\")", tname, kd->key, v->s);
        } else {
            return pfail(p, "[%s] %s: expected a size string or an integer, got %s", tname, kd->key,
                         val_type_name(v->type));
        }
        if (b <= 0) return pfail(p, "[%s] %s: size must be positive", tname, kd->key);
        *(int64_t *)field = b;
        return 0;
    }
    case KIND_DTYPE: {
        if (v->type != VAL_STRING)
            return pfail(p, "[%s] %s: expected a string, got %s", tname, kd->key, val_type_name(v->type));
        sp_dtype t = strcmp(v->s, "f32") == 0    ? SP_DTYPE_F32
                     : strcmp(v->s, "f16") == 0  ? SP_DTYPE_F16
                     : strcmp(v->s, "bf16") == 0 ? SP_DTYPE_BF16
                                                 : SP_DTYPE_INVALID;
        if (t == SP_DTYPE_INVALID)
            return pfail(p, "[%s] %s: unknown dtype '%.32s' (f32, f16 or bf16)", tname, kd->key, v->s);
        *(sp_dtype *)field = t;
        return 0;
    }
    case KIND_SPILL_DTYPE: {
        if (v->type != VAL_STRING)
            return pfail(p, "[%s] %s: expected a string, got %s", tname, kd->key, val_type_name(v->type));
        sp_dtype t = strcmp(v->s, "f32") == 0 ? SP_DTYPE_F32 : strcmp(v->s, "bf16") == 0 ? SP_DTYPE_BF16 : SP_DTYPE_INVALID;
        if (t == SP_DTYPE_INVALID)
            return pfail(p, "[%s] %s: unknown spill dtype '%.32s' (f32 or bf16)", tname, kd->key, v->s);
        *(sp_dtype *)field = t;
        return 0;
    }
    case KIND_ENUM: {
        if (v->type != VAL_STRING)
            return pfail(p, "[%s] %s: expected a string, got %s", tname, kd->key, val_type_name(v->type));
        char known[256] = "";
        for (int i = 0; kd->names[i]; i++) {
            if (strcmp(v->s, kd->names[i]) == 0) {
                *(int *)field = i;
                return 0;
            }
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", !i ? "" : kd->names[i + 1] ? ", " : " or ",
                     kd->names[i]);
        }
        return pfail(p, "[%s] %s: unknown %s '%.32s' (%s)", tname, kd->key, kd->key, v->s, known);
    }
    case KIND_BOOL:
        if (v->type != VAL_BOOL)
            return pfail(p, "[%s] %s: expected true or false, got %s", tname, kd->key, val_type_name(v->type));
        *(int *)field = v->i != 0;
        return 0;
    case KIND_GGUF: {
        if (v->type != VAL_STRING)
            return pfail(p, "[%s] %s: expected a string, got %s", tname, kd->key, val_type_name(v->type));
        int t = strcmp(v->s, "none") == 0 ? -1 : sp_gguf_ttype_parse(v->s);
        if (t < 0 && strcmp(v->s, "none"))
            return pfail(p, "[%s] %s: unknown GGUF type '%.32s' (none, f32, f16, bf16, q8_0, q5_1, q5_0, q4_1 or q4_0)", tname, kd->key, v->s);
        *(int *)field = t;
        return 0;
    }
    case KIND_BACKEND: {
        if (v->type != VAL_STRING)
            return pfail(p, "[%s] %s: expected a string, got %s", tname, kd->key, val_type_name(v->type));
        if (!sp_bk_name_known(v->s))
            return pfail(p, "[%s] %s: unknown backend '%.32s' (%s)", tname, kd->key, v->s, sp_bk_reg_names());
        char *d = str_dup(v->s);
        if (!d) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", p->path);
        free(*(char **)field);
        *(char **)field = d;
        return 0;
    }
    }
    SP_ASSERT(0);
    return SP_EX_SOFTWARE;
}

static int parse_line(load_state *st, const char *s, const char *e) {
    parser *p = &st->p;
    s = skip_ws(s, e);
    if (s == e || *s == '#') return 0;
    if (*s == '[') {
        if (e - s >= 2 && s[1] == '[') return pfail(p, "array tables [[...]] are not supported");
        const char *n = skip_ws(s + 1, e), *ne = n;
        while (ne < e && is_bare(*ne)) ne++;
        const char *c = skip_ws(ne, e);
        if (c < e && *c == '.') return pfail(p, "dotted table names are not supported");
        if (ne == n || c == e || *c != ']') return pfail(p, "malformed table header (expected [name])");
        SP_TRY(expect_eol(p, c + 1, e, "the table header"));
        int t = -1;
        for (int k = 0; k < T_COUNT; k++)
            if ((size_t)(ne - n) == strlen(k_tables[k]) && memcmp(n, k_tables[k], (size_t)(ne - n)) == 0) t = k;
        if (t < 0)
            return pfail(p, "unknown table [%.*s] (known: model, calibration, slicing, output, resources, eval)",
                         (int)(ne - n > 64 ? 64 : ne - n), n);
        if (st->table_line[t]) return pfail(p, "duplicate table [%s] (first at line %d)", k_tables[t], st->table_line[t]);
        st->table_line[t] = p->line;
        st->cur_table = t;
        return 0;
    }
    /* key = value */
    const char *k = s, *ke = s;
    while (ke < e && is_bare(*ke)) ke++;
    if (ke == k) {
        if (*k == '"' || *k == '\'') return pfail(p, "quoted keys are not supported");
        return pfail(p, "expected a key, a [table] header or a comment");
    }
    const char *c = skip_ws(ke, e);
    if (c < e && *c == '.') return pfail(p, "dotted keys are not supported");
    if (c == e || *c != '=') return pfail(p, "expected '=' after key '%.*s'", (int)(ke - k > 64 ? 64 : ke - k), k);
    size_t klen = (size_t)(ke - k);
    if (st->cur_table < 0)
        return pfail(p, "key '%.*s' outside any table (put it under a [table] header)", (int)(klen > 64 ? 64 : klen), k);
    int ki = find_key(st->cur_table, k, klen);
    if (ki < 0)
        return pfail(p, "unknown key '%.*s' in [%s]", (int)(klen > 64 ? 64 : klen), k, k_tables[st->cur_table]);
    if (st->key_line[ki])
        return pfail(p, "duplicate key '%s' in [%s] (first at line %d)", k_keys[ki].key, k_tables[st->cur_table],
                     st->key_line[ki]);
    st->key_line[ki] = p->line;
    val v;
    const char *vs = skip_ws(c + 1, e);
    int rc = parse_value(p, &vs, e, &v);
    if (!rc) rc = expect_eol(p, vs, e, "the value");
    if (!rc) rc = apply_key(st, &k_keys[ki], &v);
    free(v.s);
    return rc;
}

static int line_of(const char *buf, int64_t off) {
    int line = 1;
    for (int64_t i = 0; i < off; i++) line += buf[i] == '\n';
    return line;
}

static int check_required(load_state *st) {
    sp_manifest *m = st->m;
    for (size_t q = 0; q < N_KEYS; q++) {
        const key_def *kd = &k_keys[q];
        int always = kd->table == T_MODEL || kd->table == T_CALIB || kd->table == T_OUTPUT;
        if (!kd->required || st->key_line[q]) continue;
        if (!always && !st->table_line[kd->table]) continue;
        return sp_fail(SP_EX_USAGE, "%s:%d: missing required key [%s] %s", m->path, st->table_line[kd->table],
                       k_tables[kd->table], kd->key);
    }
    return 0;
}

/* [calibration] (always) and [eval] (when present) take their windows from
 * exactly one of `tokens` and `text`; random sampling needs text. */
static int check_source(load_state *st, table_id t) {
    sp_manifest *m = st->m;
    int lt = st->key_line[key_index(t, "tokens")], lx = st->key_line[key_index(t, "text")];
    if (!lt && !lx)
        return sp_fail(SP_EX_USAGE, "%s:%d: missing required key [%s] tokens or text (a .npy token file, or a "
                                    ".txt/.jsonl text file)",
                       m->path, st->table_line[t], k_tables[t]);
    if (lt && lx)
        return sp_fail(SP_EX_USAGE, "%s:%d: [%s] tokens (line %d) and text (line %d) are mutually exclusive; give one",
                       m->path, lt > lx ? lt : lx, k_tables[t], lt, lx);
    if (t == T_CALIB && lt && m->calib_sampling == SP_CALIB_SAMPLING_RANDOM)
        return sp_fail(SP_EX_USAGE, "%s:%d: [calibration] sampling = \"random\" needs text = FILE (a token file is "
                                    "read from its start)",
                       m->path, st->key_line[key_index(T_CALIB, "sampling")]);
    return 0;
}

/* [slicing]: sparsity or params (not both); the keys of one policy not
 * given to the other. */
static int check_slicing(load_state *st) {
    sp_manifest *m = st->m;
    const int *kl = st->key_line;
    const int sp = kl[key_index(T_SLICING, "sparsity")], pa = kl[key_index(T_SLICING, "params")];
    if (sp && pa)
        return sp_fail(SP_EX_USAGE, "%s:%d: [slicing] gives both sparsity and params; give one: params is the fraction of the "
                                    "dense model's stored parameters to keep, sparsity the fraction of the width to cut",
                       m->path, pa);
    m->has_params = pa != 0;
    static const char *const slicegpt_only[] = {"basis", "global_weighting", "refit", "refit_ridge"};
    static const char *const stock_only[] = {"split", "ffn_score", "ffn_ridge", "split_holdout"};
    const int stock = m->policy == SP_POLICY_STOCK;
    const char *const *keys = stock ? slicegpt_only : stock_only;
    const size_t n_keys = stock ? sizeof slicegpt_only / sizeof *slicegpt_only : sizeof stock_only / sizeof *stock_only;
    for (size_t i = 0; i < n_keys; i++) {
        int line = kl[key_index(T_SLICING, keys[i])];
        if (line)
            return sp_fail(SP_EX_USAGE, "%s:%d: [slicing] %s belongs to policy = \"%s\", and this manifest's policy is \"%s\"",
                           m->path, line, keys[i], stock ? "slicegpt" : "stock", stock ? "stock" : "slicegpt");
    }
    const int rr = kl[key_index(T_SLICING, "refit_ridge")];
    if (rr && !m->refit)
        return sp_fail(SP_EX_USAGE, "%s:%d: [slicing] refit_ridge is the ridge of refit = true (docs/algorithm.md §14); "
                                    "remove it or set refit = true", m->path, rr);
    if (m->refit && m->basis == SP_BASIS_GLOBAL)
        return sp_fail(SP_EX_USAGE, "%s:%d: [slicing] refit = true refits each layer's o_proj and down_proj in its own "
                                    "bases: it takes basis = \"per-layer\", and this manifest gives basis = \"global\"",
                       m->path, kl[key_index(T_SLICING, "refit")]);
    const int ho = kl[key_index(T_SLICING, "split_holdout")];
    if (ho && !m->split_auto)
        return sp_fail(SP_EX_USAGE, "%s:%d: [slicing] split_holdout is for split = \"auto\" (the calibration windows held back "
                                    "to choose the split); remove it or set split = \"auto\"", m->path, ho);
    if (m->split_auto) {
        if (!m->split_holdout) m->split_holdout = m->calib_nsamples / 4 > 0 ? m->calib_nsamples / 4 : 1;
        if (m->split_holdout >= m->calib_nsamples)
            return sp_fail(SP_EX_USAGE, "%s:%d: [slicing] split = \"auto\" holds back %lld of the %lld calibration windows to "
                                        "choose the split, and the PCA needs at least one; raise [calibration] nsamples%s",
                           m->path, ho ? ho : kl[key_index(T_SLICING, "split")], (long long)m->split_holdout,
                           (long long)m->calib_nsamples, ho ? " or lower split_holdout" : "");
    }
    return 0;
}

static int check_output_not_model(load_state *st) {
    sp_manifest *m = st->m;
    int line = st->key_line[key_index(T_OUTPUT, "path")];
    char *a = canon_path(m->model_path), *b = canon_path(m->output_path);
    int same = a && b && strcmp(a, b) == 0;
    int rc = 0;
    if (!a || !b)
        rc = sp_fail_errno(SP_EX_USAGE, "%s:%d: cannot resolve the [output] path '%s' or the [model] path '%s'",
                           m->path, line, m->output_path, m->model_path);
    else if (same)
        rc = sp_fail(SP_EX_USAGE, "%s:%d: [output] path '%s' is the model path '%s' (would overwrite the input)", m->path,
                     line, m->output_path, m->model_path);
    free(a);
    free(b);
    return rc;
}

static int load(load_state *st, const char *path) {
    sp_manifest *m = st->m;
    m->path = str_dup(path);
    m->backend = str_dup("auto");
    if (!m->path || !m->backend) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    m->calib_seqlen = 2048;
    m->calib_nsamples = 128;
    m->sparsity = 0.25;
    m->round_to = 8;
    m->ffn_ridge = 1e-4;
    m->refit_ridge = 1e-4;
    m->output_dtype = SP_DTYPE_INVALID;
    m->gguf_type = -1;
    m->spill_dtype = SP_DTYPE_F32;
    m->shard_bytes = 4000000000LL;
    m->memory_bytes = 16000000000LL;

    char *buf;
    int64_t len;
    int rc = sp_io_read_small(path, MANIFEST_BYTES_MAX, &buf, &len);
    if (rc == SP_EX_DATAERR) return sp_fail(SP_EX_USAGE, "%s:0: not a regular file, or larger than 1 MiB", path);
    if (rc) return rc;

    /* The folder paths are resolved against, made absolute and canonical. */
    char *dcopy = str_dup(path);
    if (!dcopy) rc = sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    if (!rc) {
        char *slash = strrchr(dcopy, '/');
        const char *d = slash ? (slash == dcopy ? "/" : (*slash = 0, dcopy)) : ".";
        st->dir = realpath(d, NULL);
        if (!st->dir) rc = sp_fail_errno(SP_EX_NOINPUT, "%s: cannot resolve the manifest's folder", path);
    }
    free(dcopy);

    if (!rc) {
        int64_t bad = sp_utf8_invalid_at(buf, len);
        const char *nul = memchr(buf, 0, (size_t)len);
        if (nul && (bad < 0 || nul - buf < bad)) bad = nul - buf;
        if (bad >= 0) {
            st->p.line = line_of(buf, bad);
            rc = pfail(&st->p, nul && nul - buf == bad ? "NUL byte in the manifest" : "invalid UTF-8");
        }
    }
    const char *s = buf, *end = buf + len;
    while (!rc && s < end) {
        st->p.line++;
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        const char *ce = (le > s && le[-1] == '\r') ? le - 1 : le;
        rc = parse_line(st, s, ce);
        s = nl ? nl + 1 : end;
    }
    free(buf);
    if (rc) return rc;

    SP_TRY(check_required(st));
    SP_TRY(check_source(st, T_CALIB));
    SP_TRY(check_slicing(st));
    m->has_eval = st->table_line[T_EVAL] != 0;
    if (m->has_eval) SP_TRY(check_source(st, T_EVAL));
    if (m->has_eval && !st->key_line[key_index(T_EVAL, "seqlen")]) m->eval_seqlen = m->calib_seqlen;
    return check_output_not_model(st);
}

int sp_manifest_load(const char *path, sp_manifest *m) {
    memset(m, 0, sizeof *m);
    load_state st;
    memset(&st, 0, sizeof st);
    st.p.path = path;
    st.m = m;
    st.cur_table = -1;
    int rc = load(&st, path);
    free(st.dir);
    if (rc) sp_manifest_free(m);
    return rc;
}

void sp_manifest_free(sp_manifest *m) {
    if (!m) return;
    free(m->path);
    free(m->model_path);
    free(m->calib_tokens);
    free(m->calib_text);
    free(m->output_path);
    free(m->spill_dir);
    free(m->backend);
    free(m->eval_tokens);
    free(m->eval_text);
    memset(m, 0, sizeof *m);
}
