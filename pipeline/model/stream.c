/* pipeline/model/stream.c — windows through spill files in chunks (stream.h). */
#include "stream.h"

#include "error.h"

static int64_t now_ns(void) { return (int64_t)(sp_now() * 1e9); }

int sp_stream_windows(sp_spill *in, int64_t w_in, sp_spill *out, int64_t w_out, int64_t W, int64_t T, int64_t cw,
                      float *bin, float *bout, sp_stream_fn fn, void *ctx, int64_t *io_ns) {
    SP_ASSERT(cw >= 1 && T >= 1 && W >= 0);
    int64_t io = 0;
    int rc = 0;
    for (int64_t k0 = 0; k0 < W && !rc; k0 += cw) {
        const int64_t nw = W - k0 < cw ? W - k0 : cw;
        int64_t t0 = now_ns();
        if (in) rc = sp_spill_read(in, k0 * T, nw * T, w_in, bin);
        io += now_ns() - t0;
        for (int64_t k = 0; k < nw && !rc; k++) rc = fn(ctx, k0 + k, bin + k * T * w_in, bout + k * T * w_out);
        t0 = now_ns();
        if (!rc && out) rc = sp_spill_write(out, k0 * T, nw * T, w_out, bout);
        io += now_ns() - t0;
    }
    if (io_ns) *io_ns += io;
    return rc;
}
