/* io/formats/npy.c — the one .npy writer (npy.h). */
#include "npy.h"

#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NPY_HEAD_BYTES 128 /* the header of any 1-D or 2-D int64 shape, padded */

struct sp_npy_out {
    int fd;
    char *tmp, *path;
    char descr[4];
    int64_t cols, count; /* count: elements written */
};

/* The NPY_HEAD_BYTES header for shape (d0,) when d1 == 0, else (d0, d1). */
static void npy_header(char head[NPY_HEAD_BYTES], const char *descr, int64_t d0, int64_t d1) {
    char dict[NPY_HEAD_BYTES];
    int n = d1 == 0 ? snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld,), }", descr,
                               (long long)d0)
                    : snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }",
                               descr, (long long)d0, (long long)d1);
    SP_ASSERT(n > 0 && 10 + n + 1 <= NPY_HEAD_BYTES);
    const int hl = NPY_HEAD_BYTES - 10;
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)(hl & 0xff);
    head[9] = (char)(hl >> 8);
    memcpy(head + 10, dict, (size_t)n);
    memset(head + 10 + n, ' ', (size_t)(hl - n - 1));
    head[NPY_HEAD_BYTES - 1] = '\n';
}

int sp_npy_out_begin(const char *path, const char *descr, int64_t cols, int flags, sp_io_paths **taken, sp_npy_out **out) {
    *out = NULL;
    SP_ASSERT(strlen(descr) == 3 && descr[2] == '4' && cols >= 0);
    sp_npy_out *o = calloc(1, sizeof *o);
    if (!o) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    o->fd = -1;
    memcpy(o->descr, descr, 4);
    o->cols = cols;
    int rc = sp_path_join("", path, &o->path);
    if (!rc) rc = sp_io_out_begin(path, flags, taken, &o->fd, &o->tmp);
    if (!rc) {
        char head[NPY_HEAD_BYTES];
        npy_header(head, descr, 0, cols);
        rc = sp_io_write_full(o->fd, head, NPY_HEAD_BYTES, o->tmp); /* room for the final header */
        if (rc) {
            sp_io_atomic_commit(o->fd, o->tmp, path, 0);
            o->tmp = NULL;
        }
    }
    if (rc) {
        free(o->path);
        free(o);
        return rc;
    }
    *out = o;
    return 0;
}

int sp_npy_out_write(sp_npy_out *o, const void *elems, int64_t n) {
    int64_t bytes, count;
    if (n < 0 || sp_mul_i64(n, 4, &bytes) || sp_add_i64(o->count, n, &count))
        return sp_fail(SP_EX_SOFTWARE, "%s: %lld more elements overflow the array", o->path, (long long)n);
    SP_TRY(sp_io_write_full(o->fd, elems, bytes, o->tmp));
    o->count = count;
    return 0;
}

int sp_npy_out_end(sp_npy_out *o, int ok) {
    if (!o) return 0;
    int rc = 0;
    if (ok) {
        SP_ASSERT(o->cols == 0 || o->count % o->cols == 0);
        char head[NPY_HEAD_BYTES];
        npy_header(head, o->descr, o->cols ? o->count / o->cols : o->count, o->cols);
        rc = sp_io_pwrite_full(o->fd, head, NPY_HEAD_BYTES, 0, o->tmp);
    }
    int rc2 = sp_io_atomic_commit(o->fd, o->tmp, o->path, ok && !rc);
    free(o->path);
    free(o);
    return rc ? rc : ok ? rc2 : 0;
}

int sp_npy_write(const char *path, const char *descr, const void *elems, int64_t rows, int64_t cols, int flags,
                 sp_io_paths **taken) {
    int64_t n;
    if (sp_mul_i64(rows, cols ? cols : 1, &n))
        return sp_fail(SP_EX_USAGE, "%s: %lld x %lld elements overflow", path, (long long)rows, (long long)cols);
    sp_npy_out *o;
    SP_TRY(sp_npy_out_begin(path, descr, cols, flags, taken, &o));
    int rc = sp_npy_out_write(o, elems, n);
    int rc2 = sp_npy_out_end(o, rc == 0);
    return rc ? rc : rc2;
}
