/* pipeline/model/stream.c — windows through spill files in chunks (stream.h). */
#include "stream.h"

#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "fileio.h"

static int64_t now_ns(void) { return (int64_t)(sp_now() * 1e9); }

int sp_stream_groups(sp_spill *in, int64_t w_in, sp_spill *out, int64_t w_out, int64_t W, int64_t T, int64_t cw, int64_t group,
                     float *bin, float *bout, sp_stream_group_fn fn, void *ctx, int64_t *io_ns) {
    SP_ASSERT(cw >= 1 && T >= 1 && W >= 0 && group >= 1);
    SP_ASSERT(cw % group == 0 || cw >= W); /* groups start at multiples of group, whatever cw is */
    int64_t io = 0;
    int rc = 0;
    for (int64_t k0 = 0; k0 < W && !rc; k0 += cw) {
        const int64_t nw = W - k0 < cw ? W - k0 : cw;
        int64_t t0 = now_ns();
        /* Resident spills are used in place (spill.h) where nothing aliases:
         * not when fn works in place (bin == bout), nor a chunk written over
         * the rows it reads (in == out). */
        const float *x = bin;
        float *y = bout;
        if (in) rc = sp_spill_read_at(in, k0 * T, nw * T, w_in, bin, bin != bout ? &x : NULL);
        if (out && out != in && bin != bout) {
            float *r = sp_spill_rows(out, k0 * T, nw * T, w_out);
            if (r) y = r;
        }
        io += now_ns() - t0;
        for (int64_t k = 0; k < nw && !rc; k += group) {
            const int64_t g = nw - k < group ? nw - k : group;
            rc = fn(ctx, k0 + k, g, x + k * T * w_in, y + k * T * w_out);
        }
        t0 = now_ns();
        if (!rc && out) rc = sp_spill_write(out, k0 * T, nw * T, w_out, y);
        io += now_ns() - t0;
    }
    if (io_ns) *io_ns += io;
    return rc;
}

/* sp_stream_windows' fn, called by sp_stream_groups one window at a time. */
typedef struct one_window {
    sp_stream_fn fn;
    void *ctx;
} one_window;

static int each_window(void *ctx, int64_t w0, int64_t nwin, const float *in, float *out) {
    const one_window *o = ctx;
    SP_ASSERT(nwin == 1);
    return o->fn(o->ctx, w0, in, out);
}

int sp_stream_windows(sp_spill *in, int64_t w_in, sp_spill *out, int64_t w_out, int64_t W, int64_t T, int64_t cw,
                      float *bin, float *bout, sp_stream_fn fn, void *ctx, int64_t *io_ns) {
    one_window o = {fn, ctx};
    return sp_stream_groups(in, w_in, out, w_out, W, T, cw, 1, bin, bout, each_window, &o, io_ns);
}

int sp_stream_scratch_pair(const char *dir, const char *tag, int64_t rows, int64_t w, int64_t chunk_rows, sp_spill **a,
                           sp_spill **b) {
    char pa[4096], pb[4096], rnd[17];
    if (!dir) dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    sp_io_random_hex(rnd, 16);
    snprintf(pa, sizeof pa, "%s/slicepipe-%s-%s-a.act", dir, tag, rnd);
    snprintf(pb, sizeof pb, "%s/slicepipe-%s-%s-b.act", dir, tag, rnd);
    SP_TRY(sp_spill_open(a, pa, rows, w, SP_DTYPE_F32, chunk_rows, 0));
    return sp_spill_open(b, pb, rows, w, SP_DTYPE_F32, chunk_rows, 0);
}
