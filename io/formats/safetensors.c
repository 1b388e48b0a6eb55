/* io/formats/safetensors.c — strict safetensors reader and model-directory (shard index)
 * reader. Every rule below is one of the bad-input rules of docs/pipeline.md §11.
 *
 * Opening a file (sp_st_open) runs these checks, in order; the first failure is
 * reported (65 unless noted) and nothing is kept:
 *   1. open (missing: 66); size >= 8;
 *   2. N = u64le(bytes 0..8): N <= SP_ST_HEADER_MAX and 8 + N <= size;
 *   3. header bytes (read with pread, never mmap): begins with '{'; valid UTF-8
 *      (no overlongs, surrogates or code points > U+10FFFF); trailing ' ' padding
 *      stripped; the rest is exactly one strict RFC 8259 JSON value with
 *      nothing after it; no "\u0000" and no lone surrogate escapes;
 *   4. keys are unique at every level (3 and 4: io/base/json.h, the one strict
 *      JSON reader);
 *   5. "__metadata__": an object of strings; every other key is a tensor:
 *      {dtype, shape, data_offsets} and nothing else; dtype known; shape is at
 *      most SP_ST_MAX_DIMS integers in [0, 2^53) whose product (and product of
 *      the non-zero dims, and times the dtype size) fits in int64;
 *      data_offsets is [begin, end], integers in [0, 2^53), begin <= end,
 *      end - begin == nbytes;
 *   6. sorted by begin, the tensors tile [0, last end) with no gap or overlap,
 *      starting at 0; 8 + N + last end == file size (else "truncated" or
 *      "trailing bytes").
 *
 * Numbers are checked by value: 2.0 is the integer 2, 2.5 is fractional.
 */
#include "safetensors.h"

#include "error.h"
#include "fileio.h"
#include "json.h"
#include "modelfile.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SP_ST_INT_LIMIT 9007199254740992.0 /* 2^53: larger doubles are not exact integers */
#define SP_INDEX_MAX_BYTES SP_ST_HEADER_MAX
#define SP_ST_CHUNK_BYTES 65536 /* stack buffer for converting F16/BF16/F64 */

struct sp_st_file {
    char *path;
    int fd;
    int64_t size;
    int64_t header_len;   /* N */
    int count;
    sp_st_tensor *tensors; /* (count) sorted by data offset */
    int *by_name;          /* (count) indices into tensors, sorted by name */
    int meta_count;
    char **meta_keys;      /* (meta_count) sorted */
    char **meta_vals;      /* (meta_count) */
};

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A JSON number that is an integer in [0, 2^53). */
static int json_uint(const cJSON *j, int64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0) || d >= SP_ST_INT_LIMIT || floor(d) != d) return -1;
    *out = (int64_t)d;
    return 0;
}

/* Describes why a value is not an integer in [0, 2^53). */
static const char *json_uint_why(const cJSON *j) {
    if (!cJSON_IsNumber(j)) return "not a number";
    double d = j->valuedouble;
    if (d < 0) return "negative";
    if (d >= SP_ST_INT_LIMIT) return "too big (>= 2^53)";
    if (floor(d) != d) return "fractional";
    return "invalid";
}

static void json_num_text(const cJSON *j, char *buf, size_t n) {
    if (cJSON_IsNumber(j)) snprintf(buf, n, "%.17g", j->valuedouble);
    else if (cJSON_IsString(j)) snprintf(buf, n, "\"%.40s\"", j->valuestring);
    else snprintf(buf, n, "a non-number");
}

/* ------------------------------------------------------------------ */
/* one safetensors file                                                */
/* ------------------------------------------------------------------ */

void sp_st_free(sp_st_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    free(f);
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const sp_st_tensor *x = a, *y = b;
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_by_name(const void *a, const void *b, void *ctx) {
    const sp_st_tensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* Parses one tensor entry into t (name already set). */
static int parse_entry(const char *path, const cJSON *e, int64_t data_start, sp_st_tensor *t) {
    const char *name = t->name;
    if (!cJSON_IsObject(e)) return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': entry is not a JSON object", path, name);
    const cJSON *jd = NULL, *js = NULL, *jo = NULL;
    for (const cJSON *c = e->child; c; c = c->next) {
        if (strcmp(c->string, "dtype") == 0) jd = c;
        else if (strcmp(c->string, "shape") == 0) js = c;
        else if (strcmp(c->string, "data_offsets") == 0) jo = c;
        else return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': unknown field '%s'", path, name, c->string);
    }
    if (!jd || !js || !jo)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': missing field '%s'", path, name,
                       !jd ? "dtype" : !js ? "shape" : "data_offsets");

    /* dtype */
    if (!cJSON_IsString(jd)) return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': dtype is not a string", path, name);
    t->dtype = sp_dtype_from_st(jd->valuestring);
    if (t->dtype == SP_DTYPE_INVALID)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': unknown dtype '%s'", path, name, jd->valuestring);

    /* shape */
    if (!cJSON_IsArray(js)) return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': shape is not an array", path, name);
    int nd = cJSON_GetArraySize(js);
    if (nd > SP_ST_MAX_DIMS)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': shape has %d dims, more than the %d supported", path, name, nd,
                       SP_ST_MAX_DIMS);
    t->ndim = nd;
    int64_t numel = 1, nonzero = 1;
    int i = 0;
    for (const cJSON *d = js->child; d; d = d->next, i++) {
        int64_t v;
        if (json_uint(d, &v)) {
            char txt[64];
            json_num_text(d, txt, sizeof txt);
            return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': shape[%d] is %s: %s, not a dimension", path, name, i, txt,
                           json_uint_why(d));
        }
        t->shape[i] = v;
        if (sp_mul_i64(numel, v, &numel) || (v && sp_mul_i64(nonzero, v, &nonzero)))
            return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': shape product overflows int64 (overflow at shape[%d])", path,
                           name, i);
    }
    int64_t nbytes;
    if (sp_mul_i64(numel, sp_dtype_size(t->dtype), &nbytes) || sp_mul_i64(nonzero, sp_dtype_size(t->dtype), &nonzero))
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': byte size of the shape overflows int64", path, name);
    t->numel = numel;
    t->nbytes = nbytes;

    /* data_offsets */
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': data_offsets is not an array of 2 integers", path, name);
    int64_t off[2];
    for (i = 0; i < 2; i++) {
        const cJSON *o = cJSON_GetArrayItem(jo, i);
        if (json_uint(o, &off[i])) {
            char txt[64];
            json_num_text(o, txt, sizeof txt);
            return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': data_offsets[%d] is %s: %s, not an offset", path, name, i,
                           txt, json_uint_why(o));
        }
    }
    if (off[0] > off[1])
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': data_offsets [%lld, %lld] are reversed (begin > end)", path,
                       name, (long long)off[0], (long long)off[1]);
    if (off[1] - off[0] != nbytes)
        return sp_fail(SP_EX_DATAERR,
                       "%s: tensor '%s': data_offsets [%lld, %lld] span %lld bytes but dtype %s and its shape need "
                       "%lld bytes (size mismatch)",
                       path, name, (long long)off[0], (long long)off[1], (long long)(off[1] - off[0]),
                       sp_dtype_st_name(t->dtype), (long long)nbytes);
    t->file_offset = data_start + off[0]; /* < 8 + 1e8 + 2^53: no overflow */
    return 0;
}

static int parse_metadata(sp_st_file *f, const cJSON *m) {
    const char *path = f->path;
    if (!cJSON_IsObject(m)) return sp_fail(SP_EX_DATAERR, "%s: __metadata__ is not a JSON object", path);
    int n = cJSON_GetArraySize(m);
    SP_TRY(sp_calloc((void **)&f->meta_keys, n, sizeof(char *), "metadata"));
    SP_TRY(sp_calloc((void **)&f->meta_vals, n, sizeof(char *), "metadata"));
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return sp_fail(SP_EX_DATAERR, "%s: __metadata__: value of '%s' is not a string", path, c->string);
        int i = f->meta_count;
        f->meta_keys[i] = xstrdup(c->string);
        f->meta_vals[i] = xstrdup(c->valuestring);
        f->meta_count++;
        if (!f->meta_keys[i] || !f->meta_vals[i]) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    /* sort key/value pairs by key (small: insertion sort) */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(f->meta_keys[j - 1], f->meta_keys[j]) > 0; j--) {
            char *k = f->meta_keys[j], *v = f->meta_vals[j];
            f->meta_keys[j] = f->meta_keys[j - 1];
            f->meta_vals[j] = f->meta_vals[j - 1];
            f->meta_keys[j - 1] = k;
            f->meta_vals[j - 1] = v;
        }
    return 0;
}

/* Parses and validates the header JSON (hdr[0..hlen), NUL-terminated). */
static int parse_header(sp_st_file *f, char *hdr, int64_t hlen) {
    const char *path = f->path;
    if (hlen == 0 || hdr[0] != '{')
        return sp_fail(SP_EX_DATAERR, "%s: header does not begin with '{' (it must be a JSON object)", path);
    int64_t n = hlen;
    while (n > 0 && hdr[n - 1] == ' ') n--; /* right-padding with spaces */
    cJSON *root;
    SP_TRY(sp_json_parse(path, "header", hdr, n, SP_JSON_BARE, &root)); /* keys unique at every level */
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = sp_fail(SP_EX_DATAERR, "%s: header is not a JSON object", path);
        goto out;
    }
    int total = cJSON_GetArraySize(root);
    if ((rc = sp_calloc((void **)&f->tensors, total, sizeof *f->tensors, "tensor table"))) goto out;
    int64_t data_start = 8 + f->header_len;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if ((rc = parse_metadata(f, e))) goto out;
            continue;
        }
        sp_st_tensor *t = &f->tensors[f->count];
        t->name = xstrdup(e->string);
        if (!t->name) {
            rc = sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
            goto out;
        }
        f->count++;
        if ((rc = parse_entry(path, e, data_start, t))) goto out;
    }

    /* contiguity: sorted by begin, the tensors tile the data region from 0 */
    qsort(f->tensors, (size_t)f->count, sizeof *f->tensors, cmp_tensor_offset);
    int64_t pos = data_start;
    const char *prev = NULL;
    for (int i = 0; i < f->count; i++) {
        const sp_st_tensor *t = &f->tensors[i];
        long long b = (long long)(t->file_offset - data_start), want = (long long)(pos - data_start);
        if (t->file_offset < pos) {
            rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s': data_offsets begin %lld overlaps tensor '%s' (which ends at %lld)",
                         path, t->name, b, prev, want);
            goto out;
        }
        if (t->file_offset > pos) {
            if (prev)
                rc = sp_fail(SP_EX_DATAERR,
                             "%s: tensor '%s': data_offsets begin %lld leaves a gap after tensor '%s' (which ends at %lld)",
                             path, t->name, b, prev, want);
            else
                rc = sp_fail(SP_EX_DATAERR,
                             "%s: tensor '%s': the first tensor's data_offsets begin at %lld, not 0 (gap at the start)",
                             path, t->name, b);
            goto out;
        }
        pos = t->file_offset + t->nbytes;
        prev = t->name;
    }
    if (pos > f->size) {
        rc = sp_fail(SP_EX_DATAERR, "%s: truncated: the header describes %lld bytes of data ending at byte %lld, but the file "
                                    "has only %lld bytes",
                     path, (long long)(pos - data_start), (long long)pos, (long long)f->size);
        goto out;
    }
    if (pos < f->size) {
        rc = sp_fail(SP_EX_DATAERR, "%s: %lld trailing bytes after the data region (data ends at byte %lld, file size %lld)",
                     path, (long long)(f->size - pos), (long long)pos, (long long)f->size);
        goto out;
    }

    if ((rc = sp_alloc((void **)&f->by_name, f->count, sizeof *f->by_name, "tensor name index"))) goto out;
    for (int i = 0; i < f->count; i++) f->by_name[i] = i;
    qsort_r(f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_by_name, f->tensors);
out:
    cJSON_Delete(root);
    return rc;
}

int sp_st_open(const char *path, sp_st_file **out) {
    *out = NULL;
    sp_st_file *f = calloc(1, sizeof *f);
    if (!f) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    f->fd = -1;
    f->path = xstrdup(path);
    if (!f->path) {
        free(f);
        return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    int rc = sp_io_open_read(path, &f->fd, &f->size);
    if (rc) goto fail;
    if (f->size < 8) {
        rc = sp_fail(SP_EX_DATAERR, "%s: file is %lld bytes, shorter than the 8-byte header length", path,
                     (long long)f->size);
        goto fail;
    }
    unsigned char le[8];
    if ((rc = sp_io_pread_full(f->fd, le, 8, 0, path))) goto fail;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | le[i];
    if (n > (uint64_t)SP_ST_HEADER_MAX) {
        rc = sp_fail(SP_EX_DATAERR, "%s: header length %llu exceeds the %lld-byte limit", path, (unsigned long long)n,
                     SP_ST_HEADER_MAX);
        goto fail;
    }
    if ((int64_t)n > f->size - 8) {
        rc = sp_fail(SP_EX_DATAERR, "%s: header length %llu goes beyond the end of the file (%lld bytes): truncated", path,
                     (unsigned long long)n, (long long)f->size);
        goto fail;
    }
    f->header_len = (int64_t)n;
    char *hdr;
    if ((rc = sp_alloc((void **)&hdr, f->header_len + 1, 1, "safetensors header"))) goto fail;
    rc = sp_io_pread_full(f->fd, hdr, f->header_len, 8, path);
    if (!rc) {
        hdr[f->header_len] = 0;
        rc = parse_header(f, hdr, f->header_len);
    }
    free(hdr);
    if (rc) goto fail;
    *out = f;
    return 0;
fail:
    sp_st_free(f);
    return rc;
}

const char *sp_st_path(const sp_st_file *f) { return f->path; }
int64_t sp_st_file_size(const sp_st_file *f) { return f->size; }
int64_t sp_st_header_len(const sp_st_file *f) { return f->header_len; }
int sp_st_count(const sp_st_file *f) { return f->count; }
int sp_st_fd(const sp_st_file *f) { return f->fd; }

const sp_st_tensor *sp_st_at(const sp_st_file *f, int i) {
    SP_ASSERT(i >= 0 && i < f->count);
    return &f->tensors[i];
}

const sp_st_tensor *sp_st_find(const sp_st_file *f, const char *name) {
    int lo = 0, hi = f->count;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const sp_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *sp_st_meta(const sp_st_file *f, const char *key) {
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

static void check_owned(const sp_st_file *f, const sp_st_tensor *t) {
    /* Our invariant: t comes from f's validated table. */
    SP_ASSERT(t >= f->tensors && t < f->tensors + f->count);
}

int sp_st_read_raw(const sp_st_file *f, const sp_st_tensor *t, void *dst) {
    check_owned(f, t);
    return sp_io_pread_full(f->fd, dst, t->nbytes, t->file_offset, f->path);
}

static int non_finite(const sp_st_file *f, const sp_st_tensor *t, int64_t i, const unsigned char *raw_elem) {
    if (t->dtype == SP_DTYPE_F64) {
        double d;
        memcpy(&d, raw_elem, 8);
        if (isfinite(d))
            return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': F64 value %g at element %lld is out of float32 range", f->path,
                           t->name, d, (long long)i);
    }
    return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': non-finite value (NaN or Inf) at element %lld", f->path, t->name,
                   (long long)i);
}

int sp_st_read_f32(const sp_st_file *f, const sp_st_tensor *t, float *dst) {
    check_owned(f, t);
    int es = sp_dtype_size(t->dtype);
    if (t->dtype != SP_DTYPE_F32 && t->dtype != SP_DTYPE_F16 && t->dtype != SP_DTYPE_BF16 && t->dtype != SP_DTYPE_F64)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': dtype %s cannot be read as float32", f->path, t->name,
                       sp_dtype_st_name(t->dtype));
    if (t->dtype == SP_DTYPE_F32) {
        /* straight into dst, then scan in place (conversion of F32 is a copy) */
        SP_TRY(sp_io_pread_full(f->fd, dst, t->nbytes, t->file_offset, f->path));
        int64_t bad = sp_convert_to_f32(SP_DTYPE_F32, dst, t->numel, dst);
        if (bad >= 0) return non_finite(f, t, bad, NULL);
        return 0;
    }
    /* F16/BF16/F64: convert through a fixed stack buffer, no allocation */
    unsigned char buf[SP_ST_CHUNK_BYTES];
    int64_t per = SP_ST_CHUNK_BYTES / es;
    for (int64_t i = 0; i < t->numel; i += per) {
        int64_t k = t->numel - i < per ? t->numel - i : per;
        SP_TRY(sp_io_pread_full(f->fd, buf, k * es, t->file_offset + i * es, f->path));
        int64_t bad = sp_convert_to_f32(t->dtype, buf, k, dst + i);
        if (bad >= 0) return non_finite(f, t, i + bad, buf + bad * es);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* model directory                                                     */
/* ------------------------------------------------------------------ */

typedef struct ckpt_entry {
    const char *name;         /* owned by the shard's tensor */
    int shard;
    const sp_st_tensor *t;
} ckpt_entry;

struct sp_ckpt {
    char *dir;
    int nshards;
    sp_st_file **shards;  /* (nshards) */
    int ntensors;
    ckpt_entry *entries;  /* (ntensors) sorted by name */
};

void sp_ckpt_free(sp_ckpt *c) {
    if (!c) return;
    for (int i = 0; i < c->nshards; i++) sp_st_free(c->shards[i]);
    free(c->shards);
    free(c->entries);
    free(c->dir);
    free(c);
}

static int cmp_entry(const void *a, const void *b) {
    const ckpt_entry *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    if (r) return r;
    return x->shard - y->shard;
}

static const ckpt_entry *find_entry(const ckpt_entry *e, int n, const char *name) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, e[mid].name);
        if (c == 0) return &e[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

/* Non-zero if the relative path has a ".." component. */
static int has_dotdot(const char *s) {
    const char *p = s;
    for (;;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return 1;
        if (!q) return 0;
        p = q + 1;
    }
}

typedef struct wm_item {
    const char *name;  /* tensor (owned by the cJSON tree) */
    const char *shard; /* file name (owned by the cJSON tree) */
    int shard_idx;
} wm_item;

static int cmp_wm_name(const void *a, const void *b) { return strcmp(((const wm_item *)a)->name, ((const wm_item *)b)->name); }

/* Builds c->entries from the opened shards and reports a tensor found in two of them. */
static int build_entries(sp_ckpt *c, const char *const *shard_names) {
    int64_t total = 0;
    for (int i = 0; i < c->nshards; i++) total += sp_st_count(c->shards[i]);
    if (total > INT_MAX) return sp_fail(SP_EX_DATAERR, "%s: too many tensors (%lld)", c->dir, (long long)total);
    SP_TRY(sp_alloc((void **)&c->entries, total, sizeof *c->entries, "checkpoint tensor table"));
    int k = 0;
    for (int i = 0; i < c->nshards; i++)
        for (int j = 0; j < sp_st_count(c->shards[i]); j++) {
            const sp_st_tensor *t = sp_st_at(c->shards[i], j);
            c->entries[k++] = (ckpt_entry){t->name, i, t};
        }
    c->ntensors = k;
    qsort(c->entries, (size_t)k, sizeof *c->entries, cmp_entry);
    for (int i = 1; i < k; i++)
        if (strcmp(c->entries[i - 1].name, c->entries[i].name) == 0)
            return sp_fail(SP_EX_DATAERR, "%s: tensor '%s' appears in both %s and %s", c->dir, c->entries[i].name,
                           shard_names[c->entries[i - 1].shard], shard_names[c->entries[i].shard]);
    return 0;
}

static int open_indexed(sp_ckpt *c, const char *index_path) {
    const char *dir = c->dir;
    char *text = NULL;
    int64_t len = 0;
    SP_TRY(sp_io_read_small(index_path, SP_INDEX_MAX_BYTES, &text, &len));
    cJSON *root = NULL;
    int rc = sp_json_parse(index_path, "index", text, len, 0, &root); /* keys unique at every level */
    wm_item *items = NULL;
    const char **names = NULL; /* distinct shard names, sorted (owned by the tree) */
    int nnames = 0;
    const char **missing = NULL;
    if (rc) goto out;
    if (!cJSON_IsObject(root)) {
        rc = sp_fail(SP_EX_DATAERR, "%s: index is not a JSON object", index_path);
        goto out;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!wm) {
        rc = sp_fail(SP_EX_DATAERR, "%s: index has no \"weight_map\"", index_path);
        goto out;
    }
    if (!cJSON_IsObject(wm)) {
        rc = sp_fail(SP_EX_DATAERR, "%s: \"weight_map\" is not a JSON object", index_path);
        goto out;
    }
    int n = cJSON_GetArraySize(wm);
    if ((rc = sp_alloc((void **)&items, n, sizeof *items, "weight_map"))) goto out;
    if ((rc = sp_alloc((void **)&names, n, sizeof *names, "weight_map"))) goto out;

    /* path safety first, before touching any shard */
    int i = 0;
    for (const cJSON *e = wm->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e)) {
            rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s': weight_map value is not a string", index_path, e->string);
            goto out;
        }
        const char *s = e->valuestring;
        if (!*s) {
            rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s': weight_map path is empty", index_path, e->string);
            goto out;
        }
        if (s[0] == '/') {
            rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s': weight_map path '%s' is absolute; refused", index_path,
                         e->string, s);
            goto out;
        }
        if (has_dotdot(s)) {
            rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s': weight_map path '%s' contains '..'; refused", index_path,
                         e->string, s);
            goto out;
        }
        items[i] = (wm_item){e->string, s, -1};
        names[i] = e->valuestring;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_strp);
    for (i = 0; i < n; i++)
        if (nnames == 0 || strcmp(names[nnames - 1], names[i]) != 0) names[nnames++] = names[i];

    /* the model folder's link rule (modelfile.h) and missing shards */
    if ((rc = sp_calloc((void **)&missing, nnames, sizeof *missing, "missing shard list"))) goto out;
    int nmissing = 0;
    for (int s = 0; s < nnames; s++) {
        /* the first tensor that names this shard, for the message */
        const char *tname = "";
        for (i = 0; i < n; i++)
            if (strcmp(items[i].shard, names[s]) == 0) {
                tname = items[i].name;
                break;
            }
        char *p;
        int present;
        if ((rc = sp_path_join(dir, names[s], &p))) goto out;
        rc = sp_modelfile_check(dir, p, &present);
        free(p);
        if (rc) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", sp_errmsg());
            rc = sp_fail(rc, "%s: tensor '%s': weight_map path '%s': %s", index_path, tname, names[s], msg);
            goto out;
        }
        if (!present) missing[nmissing++] = names[s];
    }
    if (nmissing) {
        char list[1536];
        size_t used = 0;
        list[0] = 0;
        for (int s = 0; s < nmissing; s++) {
            int w = snprintf(list + used, sizeof list - used, "%s%s", s ? ", " : "", missing[s]);
            if (w < 0 || (size_t)w >= sizeof list - used) {
                snprintf(list + (sizeof list - 5), 5, "...");
                break;
            }
            used += (size_t)w;
        }
        rc = sp_fail(SP_EX_NOINPUT, "%s: %d missing shard file%s in %s: %s", index_path, nmissing,
                     nmissing == 1 ? "" : "s", dir, list);
        goto out;
    }

    /* open every distinct shard once */
    if ((rc = sp_calloc((void **)&c->shards, nnames, sizeof *c->shards, "shards"))) goto out;
    for (int s = 0; s < nnames; s++) {
        char *p;
        if ((rc = sp_path_join(dir, names[s], &p))) goto out;
        rc = sp_st_open(p, &c->shards[s]);
        free(p);
        if (rc) goto out;
        c->nshards++;
    }
    if ((rc = build_entries(c, names))) goto out;

    /* every indexed tensor is in its shard; every shard tensor is indexed */
    for (i = 0; i < n; i++) {
        const ckpt_entry *e = find_entry(c->entries, c->ntensors, items[i].name);
        if (!e || strcmp(names[e->shard], items[i].shard) != 0) {
            if (e)
                rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is not in its shard %s (the index says so, but it is in %s)",
                             index_path, items[i].name, items[i].shard, names[e->shard]);
            else
                rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is not in its shard %s (listed in the index, missing from the shard)",
                             index_path, items[i].name, items[i].shard);
            goto out;
        }
    }
    qsort(items, (size_t)n, sizeof *items, cmp_wm_name);
    for (i = 0; i < c->ntensors; i++) {
        wm_item key = {c->entries[i].name, NULL, 0};
        if (!bsearch(&key, items, (size_t)n, sizeof *items, cmp_wm_name)) {
            rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s' in shard %s is not listed in the index", index_path,
                         c->entries[i].name, names[c->entries[i].shard]);
            goto out;
        }
    }
out:
    free(missing);
    free(names);
    free(items);
    cJSON_Delete(root);
    free(text);
    return rc;
}

int sp_ckpt_open(const char *dir, sp_ckpt **out) {
    *out = NULL;
    sp_ckpt *c = calloc(1, sizeof *c);
    if (!c) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", dir);
    c->dir = xstrdup(dir);
    char *index_path = NULL, *single = NULL;
    int rc = c->dir ? 0 : sp_fail(SP_EX_SOFTWARE, "%s: out of memory", dir);
    if (!rc) rc = sp_path_join(dir, "model.safetensors.index.json", &index_path);
    if (!rc) rc = sp_path_join(dir, "model.safetensors", &single);
    if (rc) goto out;
    struct stat st;
    if (stat(dir, &st) != 0) {
        rc = sp_fail_errno(SP_EX_NOINPUT, "%s: cannot open model directory", dir);
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = sp_fail(SP_EX_NOINPUT, "%s: not a directory", dir);
        goto out;
    }
    const char *path = index_path;
    int present = 0;
    rc = sp_modelfile_check(dir, index_path, &present);
    if (!rc && !present) {
        path = single;
        rc = sp_modelfile_check(dir, single, &present);
    }
    if (rc) goto out;
    if (!present) {
        rc = sp_fail(SP_EX_NOINPUT, "%s: no such file (and no model.safetensors.index.json in %s)", single, dir);
    } else if (path == index_path) {
        rc = open_indexed(c, index_path);
    } else {
        if ((rc = sp_calloc((void **)&c->shards, 1, sizeof *c->shards, "shards"))) goto out;
        if ((rc = sp_st_open(single, &c->shards[0]))) goto out;
        c->nshards = 1;
        const char *nm = "model.safetensors";
        rc = build_entries(c, &nm);
    }
out:
    free(index_path);
    free(single);
    if (rc) {
        sp_ckpt_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int sp_ckpt_shard_count(const sp_ckpt *c) { return c->nshards; }

const sp_st_file *sp_ckpt_shard(const sp_ckpt *c, int i) {
    SP_ASSERT(i >= 0 && i < c->nshards);
    return c->shards[i];
}

int sp_ckpt_tensor_count(const sp_ckpt *c) { return c->ntensors; }

const sp_st_tensor *sp_ckpt_find(const sp_ckpt *c, const char *name, const sp_st_file **file) {
    const ckpt_entry *e = find_entry(c->entries, c->ntensors, name);
    if (file) *file = e ? c->shards[e->shard] : NULL;
    return e ? e->t : NULL;
}

static void fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t u = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && u < n; i++)
        u += (size_t)snprintf(buf + u, n - u, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (u < n) snprintf(buf + u, n - u, "]");
}

int sp_ckpt_read_f32(const sp_ckpt *c, const char *name, int ndim, const int64_t *shape, float *dst) {
    const sp_st_file *f;
    const sp_st_tensor *t = sp_ckpt_find(c, name, &f);
    if (!t) return sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is not in the checkpoint", c->dir, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char a[256], b[256];
        fmt_shape(a, sizeof a, t->ndim, t->shape);
        fmt_shape(b, sizeof b, ndim, shape);
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': shape %s but config implies %s", f->path, name, a, b);
    }
    return sp_st_read_f32(f, t, dst);
}
