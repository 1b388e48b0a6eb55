#include "spill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"

#include <sys/stat.h>
#include <xxhash.h>

struct sp_spill {
    char *path;
    int fd;
    int64_t rows, D, max_rows;
    sp_dtype dtype;
    int esize;
    void *buf; /* (max_rows, D) in dtype */
    int64_t written, read;
    XXH3_state_t *xs;   /* non-NULL while hashing */
    unsigned char *img; /* resident: the file's bytes, (rows, D) in dtype; NULL on disk */
    int64_t dirty0, dirty1; /* resident: rows [dirty0, dirty1) written since the last sync */
};

void sp_spill_hash_begin(sp_spill *s) {
    if (!s->xs) s->xs = XXH3_createState();
    SP_ASSERT(s->xs);
    XXH3_128bits_reset(s->xs);
}

void sp_spill_hash_end(sp_spill *s, char hex[33]) {
    SP_ASSERT(s->xs);
    XXH128_hash_t h = XXH3_128bits_digest(s->xs);
    sp_hex128(h.high64, h.low64, hex);
    XXH3_freeState(s->xs);
    s->xs = NULL;
}

/* Bytes [a, b) of the image to the file, the 4 KiB-aligned middle with
 * O_DIRECT where the file system takes it (set on the open descriptor for
 * this write only), the rest through the page cache. Direct writes go from
 * the image to the device with no copy and leave no dirty pages for the
 * fsync to write back: on the floor bench's disk a 128 MiB boundary took
 * 0.12-0.13 s so, against 0.11 s buffered into warm pages plus the fsync and
 * 0.4-0.5 s into a new file's pages. The image holds the file's bytes
 * around [a, b) too, so widening the range to 4 KiB writes what is there. */
#define DIO_ALIGN ((int64_t)4096)
static int write_back(sp_spill *s, int64_t a, int64_t b) {
    int64_t da = a / DIO_ALIGN * DIO_ALIGN, db = b / DIO_ALIGN * DIO_ALIGN;
    int fl = fcntl(s->fd, F_GETFL);
    int direct = db > da && ((uintptr_t)s->img % (uintptr_t)DIO_ALIGN) == 0 && fl >= 0 &&
                 fcntl(s->fd, F_SETFL, fl | O_DIRECT) == 0;
    if (direct) {
        int rc = sp_io_pwrite_full(s->fd, s->img + da, db - da, da, s->path);
        (void)fcntl(s->fd, F_SETFL, fl);
        if (rc == 0) {
            a = db; /* the tail through the page cache */
        } else if (errno != EINVAL) {
            return rc;
        } /* EINVAL: the file system took the flag but not the write; all of it buffered */
    }
    return b > a ? sp_io_pwrite_full(s->fd, s->img + a, b - a, a, s->path) : 0;
}

int sp_spill_sync(sp_spill *s) {
    if (s->img && s->dirty1 > s->dirty0) { /* the rows written since the last sync, then the fsync */
        int64_t row = s->D * s->esize;
        SP_TRY(write_back(s, s->dirty0 * row, s->dirty1 * row));
        s->written += (s->dirty1 - s->dirty0) * row;
        s->dirty0 = s->dirty1 = 0;
    }
    return sp_io_fsync(s->fd, s->path);
}

int sp_spill_make_resident(sp_spill *s) {
    if (s->img) return 0;
    const int64_t want = s->rows * s->D * s->esize;
    struct stat st;
    if (fstat(s->fd, &st) != 0) return sp_fail_errno(SP_EX_IOERR, "%s: fstat", s->path);
    /* Zeroed, as the file's holes read: a row never written reads as zeros
     * in both. */
    void *p;
    SP_TRY(sp_calloc(&p, want, 1, "resident activations"));
    int64_t have = st.st_size < want ? (int64_t)st.st_size : want;
    int rc = have > 0 ? sp_io_pread_full(s->fd, p, have, 0, s->path) : 0;
    if (rc) {
        free(p);
        return rc;
    }
    s->img = p;
    s->dirty0 = s->dirty1 = 0;
    return 0;
}

/* A resident write's rows: [row0, row0 + n) joins the rows the next sync writes. */
static void mark_dirty(sp_spill *s, int64_t row0, int64_t n) {
    if (n <= 0) return;
    if (s->dirty1 <= s->dirty0) s->dirty0 = row0, s->dirty1 = row0 + n;
    if (row0 < s->dirty0) s->dirty0 = row0;
    if (row0 + n > s->dirty1) s->dirty1 = row0 + n;
}

float *sp_spill_rows(sp_spill *s, int64_t row0, int64_t n, int64_t width) {
    SP_ASSERT(row0 >= 0 && n >= 0 && row0 + n <= s->rows && width <= s->D);
    if (!s->img || s->dtype != SP_DTYPE_F32 || width != s->D) return NULL;
    return (float *)(void *)(s->img + row0 * s->D * 4);
}
const char *sp_spill_path(const sp_spill *s) { return s->path; }

int sp_spill_hash_file(const char *path, char hex[33]) { return sp_io_xxh128_range(path, 0, -1, hex); }

int sp_spill_hash_all(sp_spill *s, char hex[33]) {
    if (!s->img) {
        SP_TRY(sp_spill_sync(s));
        return sp_spill_hash_file(s->path, hex);
    }
    XXH128_hash_t h = XXH3_128bits(s->img, (size_t)(s->rows * s->D * s->esize));
    sp_hex128(h.high64, h.low64, hex);
    return 0;
}

int sp_spill_open(sp_spill **out, const char *path, int64_t rows, int64_t D, sp_dtype dtype, int64_t max_rows, int keep) {
    *out = NULL;
    SP_ASSERT(dtype == SP_DTYPE_F32 || dtype == SP_DTYPE_BF16);
    sp_spill *s = calloc(1, sizeof *s);
    if (!s) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    s->fd = -1;
    s->rows = rows, s->D = D, s->max_rows = max_rows, s->dtype = dtype, s->esize = sp_dtype_size(dtype);
    s->path = strdup(path);
    int rc = s->path ? 0 : sp_fail(SP_EX_SOFTWARE, "out of memory");
    if (!rc) rc = sp_alloc(&s->buf, sp_spill_mem_bytes(D, max_rows, dtype), 1, "spill buffer");
    int64_t want = 0;
    if (!rc && (sp_mul_i64(rows, D, &want) || sp_mul_i64(want, s->esize, &want)))
        rc = sp_fail(SP_EX_USAGE, "%s: a spill of %lld rows x %lld overflows", path, (long long)rows, (long long)D);
    if (!rc && keep) {
        int64_t size = 0;
        rc = sp_io_open_own(path, O_RDWR, &s->fd, &size);
        if (!rc && size != want) rc = sp_fail(SP_EX_DATAERR, "%s: spill file has the wrong size for a resume", path);
    } else if (!rc) {
        rc = sp_io_create(path, 0600, &s->fd); /* exclusive, never through a link */
    }
    if (rc) {
        sp_spill_free(s, 0);
        return rc;
    }
    *out = s;
    return 0;
}

void sp_spill_free(sp_spill *s, int remove_file) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    if (remove_file && s->path) unlink(s->path);
    free(s->path);
    free(s->buf);
    free(s->img);
    if (s->xs) XXH3_freeState(s->xs);
    free(s);
}

/* Rows of width `width` (packed) into dst as the file stores them: in dtype,
 * each in a slot of D elements, the rest of the slot zero. */
static void pack_rows(const sp_spill *s, const float *src, int64_t n, int64_t width, unsigned char *dst) {
    for (int64_t r = 0; r < n; r++) {
        sp_convert_from_f32(s->dtype, src + r * width, width, dst + r * s->D * s->esize);
        if (width < s->D) memset(dst + (r * s->D + width) * s->esize, 0, (size_t)((s->D - width) * s->esize));
    }
}

int sp_spill_write(sp_spill *s, int64_t row0, int64_t n, int64_t width, const float *src) {
    SP_ASSERT(row0 >= 0 && n >= 0 && n <= s->max_rows && row0 + n <= s->rows && width <= s->D);
    const int64_t bytes = n * s->D * s->esize;
    /* Resident: into memory, as the file would get them (the file at the next
     * sync). On disk: full-width float32 rows as they are, others through
     * the conversion buffer. */
    unsigned char *d = s->img ? s->img + row0 * s->D * s->esize : s->buf;
    const void *bytes_at = d;
    if (s->dtype != SP_DTYPE_F32 || width < s->D) pack_rows(s, src, n, width, d);
    else if (!s->img) bytes_at = src;
    else if ((const void *)src != (void *)d) memcpy(d, src, (size_t)bytes); /* else filled in place (sp_spill_rows) */
    if (s->img) {
        mark_dirty(s, row0, n);
    } else {
        SP_TRY(sp_io_pwrite_full(s->fd, bytes_at, bytes, row0 * s->D * s->esize, s->path));
        s->written += bytes;
    }
    if (s->xs) XXH3_128bits_update(s->xs, bytes_at, (size_t)bytes);
    return 0;
}

static int nonfinite_at(const sp_spill *s, int64_t row0, int64_t bad) {
    return sp_fail(SP_EX_DATAERR, "%s: non-finite activation (NaN or Inf) at token %lld, component %lld", s->path,
                   (long long)(row0 + bad / s->D), (long long)(bad % s->D));
}

int sp_spill_read(sp_spill *s, int64_t row0, int64_t n, int64_t width, float *dst) {
    return sp_spill_read_at(s, row0, n, width, dst, NULL);
}

int sp_spill_read_at(sp_spill *s, int64_t row0, int64_t n, int64_t width, float *dst, const float **rows) {
    SP_ASSERT(row0 >= 0 && n >= 0 && n <= s->max_rows && row0 + n <= s->rows && width <= s->D);
    int64_t bytes = n * s->D * s->esize;
    if (rows) *rows = dst;
    if (s->dtype == SP_DTYPE_F32 && width == s->D) { /* straight into dst (or used in place), then checked there */
        const float *at = dst;
        if (s->img && rows) {
            at = *rows = (const float *)(const void *)(s->img + row0 * s->D * 4);
        } else if (s->img) {
            memcpy(dst, s->img + row0 * s->D * 4, (size_t)bytes);
        } else {
            SP_TRY(sp_io_pread_full(s->fd, dst, bytes, row0 * s->D * 4, s->path));
            s->read += bytes;
        }
        int64_t bad = sp_dtype_first_nonfinite(SP_DTYPE_F32, at, n * s->D);
        return bad >= 0 ? nonfinite_at(s, row0, bad) : 0;
    }
    const unsigned char *b = s->buf;
    if (s->img) {
        b = s->img + row0 * s->D * s->esize;
    } else {
        SP_TRY(sp_io_pread_full(s->fd, s->buf, bytes, row0 * s->D * s->esize, s->path));
        s->read += bytes;
    }
    for (int64_t r = 0; r < n; r++) {
        int64_t bad = sp_convert_to_f32(s->dtype, b + r * s->D * s->esize, width, dst + r * width);
        if (bad >= 0) return nonfinite_at(s, row0 + r, bad);
    }
    return 0;
}

int64_t sp_spill_mem_bytes(int64_t D, int64_t max_rows, sp_dtype dtype) { return max_rows * D * sp_dtype_size(dtype); }
int64_t sp_spill_bytes_written(const sp_spill *s) { return s->written; }
int64_t sp_spill_bytes_read(const sp_spill *s) { return s->read; }
