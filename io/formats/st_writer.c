/* io/formats/st_writer.c — sharded safetensors writer; the protocol, the on-disk
 * layout and the durability order are documented in st_writer.h.
 *
 * State of one shard:
 *
 *   planned ──(first byte, or an empty tensor reached)──► open (.tmp, header
 *   with '0' placeholders written, data appended in order)
 *       ──(its last tensor completes)──► patched (header rewritten with the
 *       real hashes) ──► fsynced ──► renamed ──► dir fsynced = durable
 *
 * Invariants: at most one shard is open (w->fd >= 0, w->open_shard); shards
 * become durable strictly in order; w->cur is the first incomplete tensor and
 * every tensor before it is complete; the open shard's file position is
 * 8 + N + (bytes of its complete tensors) + t[cur].done.
 */
#include "st_writer.h"

#include "error.h"
#include "fileio.h"
#include "safetensors.h" /* SP_ST_MAX_DIMS, SP_ST_HEADER_MAX: what readers accept */
#include "strbuf.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

typedef struct stw_tensor {
    char *name;
    sp_dtype dtype;
    int ndim;
    int64_t shape[SP_ST_MAX_DIMS];
    int64_t nbytes;      /* dtype size * prod(shape) */
    int shard;
    int64_t begin;       /* offset in the shard's data region */
    int64_t hash_off;    /* offset of its 32-digit placeholder in the shard's header buffer */
    int64_t done;        /* bytes written so far */
    int complete;
    char hash[SP_STW_HASH_HEX + 1];
} stw_tensor;

typedef struct stw_shard {
    char *name;          /* file name */
    char *path;          /* out_dir/name */
    char *tmp_path;      /* path + ".tmp" */
    int first, last;     /* tensors [first, last) */
    int64_t data_bytes;
    char *header;        /* 8-byte LE N, then N bytes of JSON; freed once durable */
    int64_t header_n;    /* N, a multiple of 8 */
    int durable;
} stw_shard;

struct sp_stw {
    char *out_dir;
    int64_t shard_bytes_max;
    stw_tensor *t;       /* (nt) in declaration order */
    int nt, cap;
    stw_shard *s;        /* (ns) */
    int ns;
    int planned, finished;
    int failed;          /* sticky status after an error */
    char *failmsg;
    int cur;             /* first incomplete tensor */
    int fd;              /* open shard's .tmp, or -1 */
    int open_shard;      /* -1 if none */
    int64_t total_bytes;
    XXH3_state_t *xs;
};

/* ---------------- helpers ---------------- */

static int stw_fail(sp_stw *w, int rc) {
    /* Makes the writer dead with the current message. */
    if (!w->failed) {
        w->failed = rc;
        free(w->failmsg);
        w->failmsg = strdup(sp_errmsg());
    }
    return rc;
}

static int stw_check_alive(sp_stw *w) {
    if (w->failed)
        return sp_fail(w->failed, "%s", w->failmsg ? w->failmsg : "safetensors writer stopped after an earlier error");
    return 0;
}

static int name_ok(const char *name) {
    if (!name || !*name || strcmp(name, "__metadata__") == 0) return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\') return 0;
    return 1;
}

/* ---------------- lifecycle ---------------- */

int sp_stw_init(sp_stw **out, const char *out_dir, int64_t shard_bytes_max) {
    *out = NULL;
    if (!out_dir || !*out_dir) return sp_fail(SP_EX_SOFTWARE, "safetensors writer: empty output directory");
    if (shard_bytes_max < 1)
        return sp_fail(SP_EX_SOFTWARE, "safetensors writer: shard_bytes_max %lld must be >= 1", (long long)shard_bytes_max);
    sp_stw *w = calloc(1, sizeof *w);
    if (!w) return sp_fail(SP_EX_SOFTWARE, "out of memory (safetensors writer)");
    w->out_dir = strdup(out_dir);
    w->xs = XXH3_createState();
    if (!w->out_dir || !w->xs) {
        sp_stw_free(w);
        return sp_fail(SP_EX_SOFTWARE, "out of memory (safetensors writer)");
    }
    w->shard_bytes_max = shard_bytes_max;
    w->fd = -1;
    w->open_shard = -1;
    *out = w;
    return 0;
}

void sp_stw_free(sp_stw *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd); /* the .tmp stays; it is never mistaken for output */
    for (int i = 0; i < w->nt; i++) free(w->t[i].name);
    for (int i = 0; i < w->ns; i++) {
        free(w->s[i].name);
        free(w->s[i].path);
        free(w->s[i].tmp_path);
        free(w->s[i].header);
    }
    free(w->t);
    free(w->s);
    free(w->out_dir);
    free(w->failmsg);
    if (w->xs) XXH3_freeState(w->xs);
    free(w);
}

int sp_stw_add(sp_stw *w, const char *name, sp_dtype dtype, int ndim, const int64_t *shape) {
    SP_TRY(stw_check_alive(w));
    if (w->planned) return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s' declared after the plan", name ? name : "");
    if (!name_ok(name))
        return sp_fail(SP_EX_SOFTWARE,
                       "safetensors writer: tensor name '%s' is not allowed (printable ASCII without '\"' or '\\', "
                       "not __metadata__)",
                       name ? name : "");
    int esize = sp_dtype_size(dtype);
    if (esize <= 0) return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > SP_ST_MAX_DIMS)
        return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s': ndim %d outside [0, %d]", name, ndim, SP_ST_MAX_DIMS);
    int64_t nbytes = esize;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s': negative dimension %lld", name, (long long)shape[d]);
        if (sp_mul_i64(nbytes, shape[d], &nbytes))
            return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s': size overflows", name);
    }
    int64_t total;
    if (sp_add_i64(w->total_bytes, nbytes, &total))
        return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s': total size overflows", name);
    for (int i = 0; i < w->nt; i++)
        if (strcmp(w->t[i].name, name) == 0) return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s' declared twice", name);
    if (w->nt == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        stw_tensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return sp_fail(SP_EX_SOFTWARE, "out of memory (safetensors writer, %d tensors)", cap);
        w->t = t;
        w->cap = cap;
    }
    stw_tensor *t = &w->t[w->nt];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return sp_fail(SP_EX_SOFTWARE, "out of memory (safetensors writer)");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->nbytes = nbytes;
    w->total_bytes = total;
    w->nt++;
    return 0;
}

/* ---------------- plan ---------------- */

static int build_header(sp_stw *w, stw_shard *s) {
    sp_sb b = {0};
    sp_sb_put(&b, "\0\0\0\0\0\0\0\0", 8);
    sp_sb_str(&b, "{\"__metadata__\":{\"format\":\"pt\"");
    for (int i = s->first; i < s->last; i++) {
        stw_tensor *t = &w->t[i];
        sp_sb_printf(&b, ",\"xxh3_128:%s\":\"", t->name);
        t->hash_off = b.len;
        sp_sb_str(&b, "00000000000000000000000000000000\"");
    }
    sp_sb_str(&b, "}");
    for (int i = s->first; i < s->last; i++) {
        stw_tensor *t = &w->t[i];
        sp_sb_printf(&b, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, sp_dtype_st_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) sp_sb_printf(&b, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        sp_sb_printf(&b, "],\"data_offsets\":[%lld,%lld]}", (long long)t->begin, (long long)(t->begin + t->nbytes));
    }
    sp_sb_str(&b, "}");
    while (!b.oom && (b.len - 8) % 8 != 0) sp_sb_str(&b, " ");
    char *hdr;
    int64_t len;
    SP_TRY(sp_sb_take(&b, &hdr, &len, "a safetensors header"));
    s->header_n = len - 8;
    if (s->header_n > SP_ST_HEADER_MAX) {
        free(hdr);
        return sp_fail(SP_EX_SOFTWARE, "%s: header would be %lld bytes, over the %lld that safetensors readers accept", s->name,
                       (long long)s->header_n, (long long)SP_ST_HEADER_MAX);
    }
    uint64_t n = (uint64_t)s->header_n;
    for (int k = 0; k < 8; k++) hdr[k] = (char)(unsigned char)(n >> (8 * k));
    s->header = hdr;
    return 0;
}

static int check_out_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) return sp_fail_errno(SP_EX_CANTCREAT, "%s: output directory", dir);
    if (!S_ISDIR(st.st_mode)) return sp_fail(SP_EX_CANTCREAT, "%s: output path is not a directory", dir);
    if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) != 0)
        return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create files in the output directory", dir);
    return 0;
}

int sp_stw_plan(sp_stw *w) {
    SP_TRY(stw_check_alive(w));
    if (w->planned) return sp_fail(SP_EX_SOFTWARE, "safetensors writer: planned twice");
    int rc = check_out_dir(w->out_dir);
    if (rc) return stw_fail(w, rc);

    /* Greedy assignment. A new shard starts only for a tensor with data that
     * would push a non-empty shard over the budget, so empty tensors stay
     * with their predecessor and no shard is data-less unless all are. */
    int ns = 1;
    int64_t cur_bytes = 0;
    for (int i = 0; i < w->nt; i++) {
        stw_tensor *t = &w->t[i];
        int64_t sum;
        int over = sp_add_i64(cur_bytes, t->nbytes, &sum) || sum > w->shard_bytes_max;
        if (t->nbytes > 0 && cur_bytes > 0 && over) {
            ns++;
            cur_bytes = 0;
        }
        t->shard = ns - 1;
        t->begin = cur_bytes;
        cur_bytes += t->nbytes; /* <= total_bytes, checked in add */
    }
    w->s = calloc((size_t)ns, sizeof *w->s);
    if (!w->s) return stw_fail(w, sp_fail(SP_EX_SOFTWARE, "out of memory (safetensors writer, %d shards)", ns));
    w->ns = ns;
    for (int k = 0; k < ns; k++) w->s[k].first = w->s[k].last = w->nt;
    for (int i = w->nt - 1; i >= 0; i--) w->s[w->t[i].shard].first = i;
    for (int k = 0; k < ns; k++) {
        stw_shard *s = &w->s[k];
        if (k + 1 < ns) s->last = w->s[k + 1].first;
        if (ns == 1) {
            s->first = 0;
            s->last = w->nt;
        }
        for (int i = s->first; i < s->last; i++) s->data_bytes += w->t[i].nbytes;
        char nm[64], tmp[72];
        if (ns == 1)
            snprintf(nm, sizeof nm, "model.safetensors");
        else
            snprintf(nm, sizeof nm, "model-%05d-of-%05d.safetensors", k + 1, ns);
        snprintf(tmp, sizeof tmp, "%s.tmp", nm);
        s->name = strdup(nm);
        if (!s->name) return stw_fail(w, sp_fail(SP_EX_SOFTWARE, "out of memory (safetensors writer)"));
        rc = sp_path_join(w->out_dir, nm, &s->path);
        if (!rc) rc = sp_path_join(w->out_dir, tmp, &s->tmp_path);
        if (!rc) rc = build_header(w, s);
        if (rc) return stw_fail(w, rc);
    }
    w->planned = 1;
    return 0;
}

/* ---------------- writing ---------------- */

static int open_shard(sp_stw *w, int k) {
    SP_ASSERT(w->fd < 0 && k >= 0 && k < w->ns && !w->s[k].durable);
    stw_shard *s = &w->s[k];
    int fd;
    SP_TRY(sp_io_create(s->tmp_path, 0644, &fd)); /* exclusive: a planted link is removed, never followed */
    w->fd = fd;
    w->open_shard = k;
    /* Header with placeholder hashes; N and the data offsets are final. */
    return sp_io_write_full(fd, s->header, 8 + s->header_n, s->tmp_path);
}

static void hash_hex(XXH3_state_t *xs, char out[SP_STW_HASH_HEX + 1]) {
    XXH128_hash_t h = XXH3_128bits_digest(xs);
    sp_hex128(h.high64, h.low64, out);
}

static int finalize_shard(sp_stw *w, int k) {
    stw_shard *s = &w->s[k];
    if (w->fd < 0) SP_TRY(open_shard(w, k));
    SP_ASSERT(w->open_shard == k);
    for (int i = s->first; i < s->last; i++) {
        SP_ASSERT(w->t[i].complete);
        memcpy(s->header + w->t[i].hash_off, w->t[i].hash, SP_STW_HASH_HEX);
    }
    /* Patch the header in place: same length, so the data is untouched. */
    if (lseek(w->fd, 8, SEEK_SET) != 8) return sp_fail_errno(SP_EX_IOERR, "%s: seek to the header", s->tmp_path);
    SP_TRY(sp_io_write_full(w->fd, s->header + 8, s->header_n, s->tmp_path));
    struct stat st;
    if (fstat(w->fd, &st) != 0) return sp_fail_errno(SP_EX_IOERR, "%s: fstat", s->tmp_path);
    int64_t want = 8 + s->header_n + s->data_bytes;
    if ((int64_t)st.st_size != want)
        return sp_fail(SP_EX_IOERR, "%s: file is %lld bytes after writing, expected %lld", s->tmp_path, (long long)st.st_size,
                       (long long)want);
    SP_TRY(sp_io_fsync(w->fd, s->tmp_path));
    int fd = w->fd;
    w->fd = -1;
    w->open_shard = -1;
    if (close(fd) != 0) return sp_fail_errno(SP_EX_IOERR, "%s: close", s->tmp_path);
    if (rename(s->tmp_path, s->path) != 0) return sp_fail_errno(SP_EX_IOERR, "%s: rename to %s", s->tmp_path, s->path);
    SP_TRY(sp_io_fsync_dir(w->out_dir));
    s->durable = 1;
    free(s->header);
    s->header = NULL;
    return 0;
}

static int complete_current(sp_stw *w) {
    stw_tensor *t = &w->t[w->cur];
    if (t->nbytes == 0) XXH3_128bits_reset(w->xs);
    hash_hex(w->xs, t->hash);
    t->complete = 1;
    w->cur++;
    if (w->cur == w->s[t->shard].last) SP_TRY(finalize_shard(w, t->shard));
    return 0;
}

/* Completes zero-byte tensors at the cursor (finalizing shards they end). */
static int skip_empty(sp_stw *w) {
    while (w->cur < w->nt && w->t[w->cur].nbytes == 0) SP_TRY(complete_current(w));
    return 0;
}

int sp_stw_write(sp_stw *w, const char *name, const void *data, int64_t nbytes) {
    SP_TRY(stw_check_alive(w));
    if (!w->planned || w->finished)
        return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s' written %s", name, w->finished ? "after finish" : "before the plan");
    if (nbytes < 0) return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s': negative chunk size", name);
    int rc = skip_empty(w);
    if (rc) return stw_fail(w, rc);
    if (w->cur == w->nt || strcmp(w->t[w->cur].name, name) != 0) {
        int i = sp_stw_find(w, name);
        if (nbytes == 0 && i >= 0 && w->t[i].complete) return 0; /* e.g. an empty tensor, already complete */
        if (i < 0) return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s' was never declared", name);
        if (w->cur == w->nt)
            return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s' written again after all tensors were complete", name);
        return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s' written out of declaration order (expected '%s', %s)",
                       name, w->t[w->cur].name, w->t[i].complete ? "it is already complete" : "it comes later");
    }
    stw_tensor *t = &w->t[w->cur];
    if (nbytes > t->nbytes - t->done)
        return sp_fail(SP_EX_SOFTWARE, "safetensors writer: tensor '%s': %lld more bytes after %lld, but it has %lld", name,
                       (long long)nbytes, (long long)t->done, (long long)t->nbytes);
    if (nbytes == 0) return 0;
    if (w->open_shard != t->shard) {
        SP_ASSERT(w->fd < 0);
        rc = open_shard(w, t->shard);
        if (rc) return stw_fail(w, rc);
    }
    if (t->done == 0) XXH3_128bits_reset(w->xs);
    rc = sp_io_write_full(w->fd, data, nbytes, w->s[t->shard].tmp_path);
    if (rc) return stw_fail(w, rc);
    XXH3_128bits_update(w->xs, data, (size_t)nbytes);
    t->done += nbytes;
    if (t->done == t->nbytes) {
        rc = complete_current(w);
        if (!rc) rc = skip_empty(w);
        if (rc) return stw_fail(w, rc);
    }
    return 0;
}

int sp_stw_sync(sp_stw *w) {
    SP_TRY(stw_check_alive(w));
    if (w->fd < 0) return 0;
    int rc = sp_io_fsync(w->fd, w->s[w->open_shard].tmp_path);
    return rc ? stw_fail(w, rc) : 0;
}

int64_t sp_stw_tensor_file_offset(const sp_stw *w, int i) {
    SP_ASSERT(w->planned && i >= 0 && i < w->nt);
    return 8 + w->s[w->t[i].shard].header_n + w->t[i].begin;
}

const char *sp_stw_tensor_path_now(const sp_stw *w, int i) {
    SP_ASSERT(w->planned && i >= 0 && i < w->nt);
    const stw_shard *s = &w->s[w->t[i].shard];
    return s->durable || access(s->path, F_OK) == 0 ? s->path : s->tmp_path;
}

int64_t sp_stw_tensor_bytes(const sp_stw *w, int i) {
    SP_ASSERT(i >= 0 && i < w->nt);
    return w->t[i].nbytes;
}

/* Reopens shard k's .tmp for writing (no truncation) as the open shard. */
static int reopen_tmp(sp_stw *w, int k) {
    stw_shard *s = &w->s[k];
    /* A shard renamed after the last journaled boundary holds tensors the
     * journal does not vouch for: it goes back to being a .tmp. */
    if (access(s->tmp_path, F_OK) != 0 && access(s->path, F_OK) == 0) {
        if (rename(s->path, s->tmp_path) != 0) return sp_fail_errno(SP_EX_IOERR, "%s: rename back to .tmp", s->path);
        SP_TRY(sp_io_fsync_dir(w->out_dir));
    }
    int fd;
    int rc = sp_io_open_own(s->tmp_path, O_WRONLY, &fd, NULL);
    if (rc == SP_EX_NOINPUT)
        return sp_fail(SP_EX_NOINPUT, "%s: missing, but the journal says it holds finished tensors", s->tmp_path);
    SP_TRY(rc);
    w->fd = fd;
    w->open_shard = k;
    return 0;
}

int sp_stw_resume(sp_stw *w, int n_done, const char *const *hashes) {
    SP_TRY(stw_check_alive(w));
    if (!w->planned || w->cur != 0 || w->fd >= 0 || n_done < 0 || n_done > w->nt)
        return sp_fail(SP_EX_SOFTWARE, "safetensors writer: resume at %d of %d in the wrong state", n_done, w->nt);
    for (int i = 0; i < n_done; i++) {
        stw_tensor *t = &w->t[i];
        t->done = t->nbytes;
        t->complete = 1;
        memcpy(t->hash, hashes[i], SP_STW_HASH_HEX);
        t->hash[SP_STW_HASH_HEX] = 0;
    }
    w->cur = n_done;
    int rc = 0;
    for (int k = 0; k < w->ns && !rc; k++) {
        stw_shard *s = &w->s[k];
        if (s->last <= n_done && s->last > s->first) {
            if (access(s->path, F_OK) == 0 && access(s->tmp_path, F_OK) != 0) {
                s->durable = 1;
                free(s->header);
                s->header = NULL;
            } else {
                rc = reopen_tmp(w, k);
                if (!rc) rc = finalize_shard(w, k);
            }
        } else if (s->first < n_done && n_done < s->last) {
            rc = reopen_tmp(w, k);
            off_t end = (off_t)(8 + s->header_n + w->t[n_done].begin);
            if (!rc && ftruncate(w->fd, end) != 0) rc = sp_fail_errno(SP_EX_IOERR, "%s: truncate", s->tmp_path);
            if (!rc && lseek(w->fd, end, SEEK_SET) != end) rc = sp_fail_errno(SP_EX_IOERR, "%s: seek", s->tmp_path);
        }
    }
    if (!rc) rc = skip_empty(w);
    return rc ? stw_fail(w, rc) : 0;
}

static int write_index(sp_stw *w) {
    char *path;
    SP_TRY(sp_path_join(w->out_dir, "model.safetensors.index.json", &path));
    int rc = 0;
    if (w->ns == 1) {
        /* A stale index from an earlier multi-shard output would shadow
         * model.safetensors for every reader. */
        if (unlink(path) == 0)
            rc = sp_io_fsync_dir(w->out_dir);
        else if (errno != ENOENT)
            rc = sp_fail_errno(SP_EX_IOERR, "%s: cannot remove stale index", path);
        free(path);
        return rc;
    }
    char total[32];
    snprintf(total, sizeof total, "%lld", (long long)w->total_bytes);
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    int ok = root && meta && map && cJSON_AddRawToObject(meta, "total_size", total);
    for (int i = 0; ok && i < w->nt; i++) ok = cJSON_AddStringToObject(map, w->t[i].name, w->s[w->t[i].shard].name) != NULL;
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        free(path);
        return sp_fail(SP_EX_SOFTWARE, "out of memory building %s/model.safetensors.index.json", w->out_dir);
    }
    size_t n = strlen(text);
    char *buf = realloc(text, n + 2);
    if (!buf) {
        free(text);
        free(path);
        return sp_fail(SP_EX_SOFTWARE, "out of memory (safetensors writer)");
    }
    buf[n] = '\n';
    buf[n + 1] = 0;
    rc = sp_io_write_atomic(path, buf, (int64_t)n + 1);
    free(buf);
    free(path);
    return rc;
}

int sp_stw_finish(sp_stw *w) {
    SP_TRY(stw_check_alive(w));
    if (!w->planned || w->finished)
        return sp_fail(SP_EX_SOFTWARE, "safetensors writer: finish %s", w->finished ? "called twice" : "before the plan");
    int rc = skip_empty(w);
    if (rc) return stw_fail(w, rc);
    if (w->cur < w->nt) {
        stw_tensor *t = &w->t[w->cur];
        int missing = w->nt - w->cur;
        return sp_fail(SP_EX_SOFTWARE, "safetensors writer: finish with %d tensor(s) incomplete, first '%s' (%lld of %lld bytes)",
                       missing, t->name, (long long)t->done, (long long)t->nbytes);
    }
    for (int k = 0; k < w->ns; k++) {
        if (w->s[k].durable) continue;
        rc = finalize_shard(w, k); /* only a shard without tensors gets here */
        if (rc) return stw_fail(w, rc);
    }
    rc = write_index(w);
    if (rc) return stw_fail(w, rc);
    w->finished = 1;
    return 0;
}

/* ---------------- queries ---------------- */

int sp_stw_shard_count(const sp_stw *w) { return w->ns; }

const char *sp_stw_shard_name(const sp_stw *w, int shard) {
    SP_ASSERT(shard >= 0 && shard < w->ns);
    return w->s[shard].name;
}

int sp_stw_shard_durable(const sp_stw *w, int shard) {
    SP_ASSERT(shard >= 0 && shard < w->ns);
    return w->s[shard].durable;
}

int sp_stw_tensor_count(const sp_stw *w) { return w->nt; }

const char *sp_stw_tensor_name(const sp_stw *w, int i) {
    SP_ASSERT(i >= 0 && i < w->nt);
    return w->t[i].name;
}

int sp_stw_find(const sp_stw *w, const char *name) {
    /* Writes name the current tensor; start there. */
    if (w->nt == 0) return -1;
    for (int k = 0; k < w->nt; k++) {
        int i = (w->cur + k) % w->nt;
        if (strcmp(w->t[i].name, name) == 0) return i;
    }
    return -1;
}

int sp_stw_tensor_shard(const sp_stw *w, int i) {
    SP_ASSERT(w->planned && i >= 0 && i < w->nt);
    return w->t[i].shard;
}

const char *sp_stw_tensor_hash(const sp_stw *w, int i) {
    SP_ASSERT(i >= 0 && i < w->nt);
    return w->t[i].complete ? w->t[i].hash : NULL;
}
