/* io/formats/tokens.c — token streams from NumPy .npy files.
 *
 * Format (numpy.lib.format, versions 1.0, 2.0 and 3.0):
 *   6 bytes   "\x93NUMPY"
 *   2 bytes   major, minor version
 *   2 bytes   (v1) or 4 bytes (v2, v3) little-endian header length H
 *   H bytes   a Python dict literal, padded with spaces and ended by '\n':
 *             {'descr': '<i4', 'fortran_order': False, 'shape': (n,), }
 *   the data  n * itemsize bytes, to the end of the file exactly
 *
 * Accepted: descr '<i4', '<u2', '<u4', '<i8'; fortran_order False; shape a
 * 1-tuple (n,) with n >= 1. The dict is parsed strictly (exactly those three
 * keys, each once, in any order; either quote style; spaces and a trailing
 * comma allowed) and nothing in it is trusted: n·itemsize is checked for
 * overflow and against the file size. Every id must fit in int32 and be
 * >= 0, and < vocab when vocab > 0. All errors are 65 naming the file.
 */
#include "tokens.h"

#include "error.h"
#include "fileio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NPY_HEADER_MAX (1 << 20)
#define NPY_CHUNK_BYTES (1 << 20) /* data is validated in chunks of this size */

typedef enum npy_kind { NPY_I4, NPY_U2, NPY_U4, NPY_I8 } npy_kind;

typedef struct npy_header {
    int seen[3]; /* descr, fortran_order, shape */
    npy_kind kind;
    int itemsize;
    int64_t n;
} npy_header;

/* A cursor over the header text. */
typedef struct cur {
    const char *s, *e;
    const char *path;
} cur;

static void ws(cur *c) {
    while (c->s < c->e && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r')) c->s++;
}

static int bad(cur *c, const char *what) { return sp_fail(SP_EX_DATAERR, "%s: bad .npy header: %s", c->path, what); }

static int expect(cur *c, char ch, const char *what) {
    ws(c);
    if (c->s == c->e || *c->s != ch) return bad(c, what);
    c->s++;
    return 0;
}

/* A Python string literal in '...' or "..." without escapes; returns a
 * pointer into the header and its length. */
static int pystr(cur *c, const char **str, size_t *len) {
    ws(c);
    if (c->s == c->e || (*c->s != '\'' && *c->s != '"')) return bad(c, "expected a quoted string");
    char q = *c->s++;
    const char *b = c->s;
    while (c->s < c->e && *c->s != q) {
        if (*c->s == '\\') return bad(c, "escapes in strings are not supported");
        c->s++;
    }
    if (c->s == c->e) return bad(c, "unterminated string");
    *str = b;
    *len = (size_t)(c->s - b);
    c->s++;
    return 0;
}

static int word_is(const char *s, size_t n, const char *w) { return n == strlen(w) && memcmp(s, w, n) == 0; }

static int parse_descr(cur *c, npy_header *h) {
    const char *s;
    size_t n;
    SP_TRY(pystr(c, &s, &n));
    static const struct {
        const char *name;
        npy_kind kind;
        int size;
    } k_descr[] = {{"<i4", NPY_I4, 4}, {"<u2", NPY_U2, 2}, {"<u4", NPY_U4, 4}, {"<i8", NPY_I8, 8}};
    for (size_t i = 0; i < sizeof k_descr / sizeof k_descr[0]; i++) {
        if (word_is(s, n, k_descr[i].name)) {
            h->kind = k_descr[i].kind;
            h->itemsize = k_descr[i].size;
            return 0;
        }
    }
    return sp_fail(SP_EX_DATAERR, "%s: unsupported .npy dtype '%.*s' (token files must be '<i4', '<u2', '<u4' or '<i8')",
                   c->path, (int)(n > 32 ? 32 : n), s);
}

static int parse_fortran(cur *c) {
    ws(c);
    if (c->e - c->s >= 5 && memcmp(c->s, "False", 5) == 0) {
        c->s += 5;
        return 0;
    }
    if (c->e - c->s >= 4 && memcmp(c->s, "True", 4) == 0)
        return sp_fail(SP_EX_DATAERR, "%s: .npy fortran_order True is not supported (save a C-ordered array)", c->path);
    return bad(c, "fortran_order must be True or False");
}

/* (n,) — exactly one dimension. */
static int parse_shape(cur *c, npy_header *h) {
    SP_TRY(expect(c, '(', "shape must be a tuple"));
    int64_t dims = 0, n = 0;
    for (;;) {
        ws(c);
        if (c->s < c->e && *c->s == ')') break;
        if (c->s == c->e || *c->s < '0' || *c->s > '9') return bad(c, "shape entries must be non-negative integers");
        int64_t v = 0;
        while (c->s < c->e && *c->s >= '0' && *c->s <= '9') {
            if (sp_mul_i64(v, 10, &v) || sp_add_i64(v, *c->s - '0', &v)) return bad(c, "shape entry overflows");
            c->s++;
        }
        dims++;
        n = v;
        ws(c);
        if (c->s < c->e && *c->s == ',') {
            c->s++;
            continue;
        }
        if (c->s < c->e && *c->s == ')') {
            if (dims == 1) return bad(c, "a 1-D shape is written (n,), with a comma");
            break;
        }
        return bad(c, "malformed shape tuple");
    }
    c->s++; /* ')' */
    if (dims != 1)
        return sp_fail(SP_EX_DATAERR, "%s: .npy array is %lld-D; a token stream must be 1-D (n,)", c->path,
                       (long long)dims);
    if (n < 1) return sp_fail(SP_EX_DATAERR, "%s: .npy token stream is empty (shape (0,))", c->path);
    h->n = n;
    return 0;
}

static int parse_dict(cur *c, npy_header *h) {
    SP_TRY(expect(c, '{', "expected '{'"));
    for (;;) {
        ws(c);
        if (c->s < c->e && *c->s == '}') break;
        const char *k;
        size_t kn;
        SP_TRY(pystr(c, &k, &kn));
        SP_TRY(expect(c, ':', "expected ':' after a key"));
        static const char *const k_keys[3] = {"descr", "fortran_order", "shape"};
        int key = -1;
        for (int i = 0; i < 3; i++)
            if (word_is(k, kn, k_keys[i])) key = i;
        if (key < 0)
            return sp_fail(SP_EX_DATAERR, "%s: bad .npy header: unexpected key '%.*s'", c->path, (int)(kn > 32 ? 32 : kn), k);
        if (h->seen[key]) return sp_fail(SP_EX_DATAERR, "%s: bad .npy header: duplicate key '%s'", c->path, k_keys[key]);
        h->seen[key] = 1;
        SP_TRY(key == 0 ? parse_descr(c, h) : key == 1 ? parse_fortran(c) : parse_shape(c, h));
        ws(c);
        if (c->s < c->e && *c->s == ',') {
            c->s++;
            continue;
        }
        if (c->s < c->e && *c->s == '}') break;
        return bad(c, "expected ',' or '}' in the dict");
    }
    c->s++; /* '}' */
    ws(c);
    if (c->s != c->e) return bad(c, "trailing text after the dict");
    if (!h->seen[0] || !h->seen[1] || !h->seen[2])
        return bad(c, !h->seen[0] ? "missing 'descr'" : !h->seen[1] ? "missing 'fortran_order'" : "missing 'shape'");
    return 0;
}

static uint32_t rd_le(const unsigned char *p, int n) {
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Reads the preamble and the header dict; *data_off = where the data starts. */
static int read_header(int fd, int64_t fsize, const char *path, npy_header *h, int64_t *data_off) {
    unsigned char pre[12];
    if (fsize < 10) return sp_fail(SP_EX_DATAERR, "%s: not a .npy file (only %lld bytes)", path, (long long)fsize);
    SP_TRY(sp_io_pread_full(fd, pre, 10, 0, path));
    if (memcmp(pre, "\x93NUMPY", 6) != 0) return sp_fail(SP_EX_DATAERR, "%s: not a .npy file (bad magic)", path);
    int major = pre[6], minor = pre[7];
    if (minor != 0 || major < 1 || major > 3)
        return sp_fail(SP_EX_DATAERR, "%s: unsupported .npy version %d.%d (1.0, 2.0 or 3.0)", path, major, minor);
    int64_t pre_len = major == 1 ? 10 : 12;
    if (fsize < pre_len) return sp_fail(SP_EX_DATAERR, "%s: .npy file truncated in its preamble", path);
    if (major > 1) SP_TRY(sp_io_pread_full(fd, pre + 10, 2, 10, path));
    int64_t hlen = rd_le(pre + 8, major == 1 ? 2 : 4);
    if (hlen > NPY_HEADER_MAX)
        return sp_fail(SP_EX_DATAERR, "%s: .npy header length %lld is larger than %d", path, (long long)hlen, NPY_HEADER_MAX);
    if (pre_len + hlen > fsize) return sp_fail(SP_EX_DATAERR, "%s: .npy file truncated in its header", path);
    char *text;
    SP_TRY(sp_alloc((void **)&text, hlen, 1, path));
    int rc = sp_io_pread_full(fd, text, hlen, pre_len, path);
    if (!rc && (hlen == 0 || text[hlen - 1] != '\n'))
        rc = sp_fail(SP_EX_DATAERR, "%s: bad .npy header: does not end with a newline", path);
    if (!rc && memchr(text, 0, (size_t)hlen))
        rc = sp_fail(SP_EX_DATAERR, "%s: bad .npy header: NUL byte", path);
    if (!rc) {
        cur c = {text, text + hlen, path};
        memset(h, 0, sizeof *h);
        rc = parse_dict(&c, h);
    }
    free(text);
    *data_off = pre_len + hlen;
    return rc;
}

/* Decodes one id; returns 0 or 65 if it is negative, does not fit int32, or
 * is >= vocab (vocab > 0). */
static int check_id(const char *path, int64_t idx, int64_t v, int64_t vocab, int32_t *out) {
    if (v < 0 || v > INT32_MAX || (vocab > 0 && v >= vocab)) {
        if (vocab > 0)
            return sp_fail(SP_EX_DATAERR, "%s: token id %lld at index %lld is out of range [0, %lld)", path, (long long)v,
                           (long long)idx, (long long)vocab);
        return sp_fail(SP_EX_DATAERR, "%s: token id %lld at index %lld is negative or does not fit in int32", path,
                       (long long)v, (long long)idx);
    }
    *out = (int32_t)v;
    return 0;
}

static int64_t decode(npy_kind k, const unsigned char *p) {
    switch (k) {
    case NPY_I4: return (int32_t)rd_le(p, 4);
    case NPY_U2: return rd_le(p, 2);
    case NPY_U4: return rd_le(p, 4);
    case NPY_I8: return (int64_t)((uint64_t)rd_le(p + 4, 4) << 32 | rd_le(p, 4));
    }
    return -1;
}

static int load(int fd, int64_t fsize, const char *path, int64_t vocab, int64_t max_n, sp_tokens *out) {
    npy_header h;
    int64_t off = 0, data_bytes, end;
    SP_TRY(read_header(fd, fsize, path, &h, &off));
    if (sp_mul_i64(h.n, h.itemsize, &data_bytes) || sp_add_i64(off, data_bytes, &end))
        return sp_fail(SP_EX_DATAERR, "%s: .npy shape (%lld,) overflows", path, (long long)h.n);
    if (end > fsize)
        return sp_fail(SP_EX_DATAERR, "%s: .npy data truncated: shape (%lld,) needs %lld bytes, file has %lld", path,
                       (long long)h.n, (long long)end, (long long)fsize);
    if (end < fsize)
        return sp_fail(SP_EX_DATAERR, "%s: %lld trailing bytes after the .npy data", path, (long long)(fsize - end));
    int64_t keep = max_n > 0 && max_n < h.n ? max_n : h.n;
    unsigned char *chunk;
    SP_TRY(sp_alloc((void **)&out->ids, keep, sizeof(int32_t), path));
    SP_TRY(sp_alloc((void **)&chunk, NPY_CHUNK_BYTES, 1, path));
    const int64_t per_chunk = NPY_CHUNK_BYTES / h.itemsize;
    int rc = 0;
    for (int64_t i0 = 0; !rc && i0 < h.n; i0 += per_chunk) {
        int64_t cnt = h.n - i0 < per_chunk ? h.n - i0 : per_chunk;
        rc = sp_io_pread_full(fd, chunk, cnt * h.itemsize, off + i0 * h.itemsize, path);
        for (int64_t j = 0; !rc && j < cnt; j++) {
            int32_t id = 0;
            rc = check_id(path, i0 + j, decode(h.kind, chunk + j * h.itemsize), vocab, &id);
            if (!rc && i0 + j < keep) out->ids[i0 + j] = id;
        }
    }
    free(chunk);
    out->n = keep;
    return rc;
}

int sp_tokens_load(const char *path, int64_t vocab, int64_t max_n, sp_tokens *out) {
    memset(out, 0, sizeof *out);
    int fd;
    int64_t fsize;
    SP_TRY(sp_io_open_read(path, &fd, &fsize));
    int rc = load(fd, fsize, path, vocab, max_n, out);
    close(fd);
    if (rc) sp_tokens_free(out);
    return rc;
}

void sp_tokens_free(sp_tokens *t) {
    if (!t) return;
    free(t->ids);
    memset(t, 0, sizeof *t);
}
