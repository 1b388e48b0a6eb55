/* pipeline/model/stream.h — the one loop that streams calibration or evaluation
 * windows through spill files in chunks of whole windows (attention needs a
 * whole window), used by the compute stage and by eval.
 *
 * For each chunk of at most cw windows of [0, W): rows are read from `in`
 * (width w_in, packed) into bin, fn is called once per window of the chunk
 * with its index and its rows in bin and bout (T rows each), then the chunk
 * is written from bout to `out` (width w_out). in == NULL: nothing is read
 * (bin is passed as is); out == NULL: nothing is written; in == out: each
 * chunk is written back over itself. A resident spill (spill.h) is read and
 * written in place where it can be: fn may then get rows that are not in bin
 * or bout, so it must not rely on in == bin or out == bout unless bin ==
 * bout (in place: fn gets bin for both). Spill I/O time is added to *io_ns
 * when io_ns != NULL. Returns 0, or the first status of a read, write or fn.
 */
#ifndef SP_STREAM_H
#define SP_STREAM_H

#include <stdint.h>

#include "spill.h"

typedef int (*sp_stream_fn)(void *ctx, int64_t window, const float *in, float *out);

int sp_stream_windows(sp_spill *in, int64_t w_in, sp_spill *out, int64_t w_out, int64_t W, int64_t T, int64_t cw,
                      float *bin, float *bout, sp_stream_fn fn, void *ctx, int64_t *io_ns);

/* The same loop with fn called once per group of windows: windows
 * [w0, w0 + nwin) of a chunk, contiguous in its rows, nwin = group except a
 * chunk's (or the stream's) last, shorter group. Groups start at window
 * indices that are multiples of group, which needs cw to be a multiple of
 * group (or cw >= W): which windows share a call is then fixed by group
 * alone, never by the chunk size (the memory budget). */
typedef int (*sp_stream_group_fn)(void *ctx, int64_t w0, int64_t nwin, const float *in, float *out);

int sp_stream_groups(sp_spill *in, int64_t w_in, sp_spill *out, int64_t w_out, int64_t W, int64_t T, int64_t cw, int64_t group,
                     float *bin, float *bout, sp_stream_group_fn fn, void *ctx, int64_t *io_ns);

/* The two scratch spills of an evaluation (eval, eval --task): `rows` rows
 * of width w each, float32, in `dir` (NULL: $TMPDIR, else /tmp) under
 * unpredictable names slicepipe-TAG-<random>-{a,b}.act, created exclusively
 * (io/base/spill.h), so a link planted in a shared folder is never followed;
 * chunk_rows as sp_spill_open takes it. Free each with sp_spill_free(s, 1). */
int sp_stream_scratch_pair(const char *dir, const char *tag, int64_t rows, int64_t w, int64_t chunk_rows, sp_spill **a,
                           sp_spill **b);

#endif
