/* io/formats/st_writer.h — sharded safetensors writer with a layout planned up front.
 *
 * Protocol (one writer object, one thread):
 *
 *   init ──► add* ──► plan ──► write* ──► finish ──► free
 *                 (layout fixed)   (tensors in declaration order,
 *                                   each in one or more chunks)
 *
 *   sp_stw_init   an empty plan for out_dir and a per-shard data budget.
 *   sp_stw_add    declares every output tensor, in the order its data will be
 *                 written (layer order). Shapes are overflow-checked.
 *   sp_stw_plan   checks out_dir can take new files (73 otherwise), assigns
 *                 tensors to shards greedily in declaration order so that each
 *                 shard's data region is <= shard_bytes_max (a single tensor
 *                 larger than that gets a shard of its own), names them
 *                 model-0000K-of-0000N.safetensors (model.safetensors when
 *                 N == 1; then no index file), and builds every header.
 *   sp_stw_write  appends bytes (already in the declared dtype) to the current
 *                 tensor. A tensor may arrive in any number of chunks; the
 *                 next tensor starts only when the current one is complete.
 *                 Naming any other tensor is a caller bug: SP_EX_SOFTWARE.
 *                 Zero-byte tensors need no call (they complete as soon as the
 *                 writer reaches them); a call with nbytes == 0 is accepted.
 *   sp_stw_finish checks that every tensor was fully written and writes
 *                 model.safetensors.index.json (N > 1) atomically.
 *
 * On-disk layout of one shard (standard safetensors):
 *   u64 LE N | N bytes of JSON header, right-padded with spaces so N % 8 == 0 |
 *   data: the shard's tensors back to back in declaration order.
 * Header keys: "__metadata__" first, then the tensors in declaration order,
 * each {"dtype","shape","data_offsets":[begin,end]}. __metadata__ holds
 * "format":"pt" and, per tensor, "xxh3_128:<tensor name>": 32 lowercase hex
 * digits, the XXH3-128 of the tensor's bytes (canonical big-endian form:
 * high 64 bits first). Empty tensors hash the empty string.
 *
 * Reserved hash space: hashes are only known after the data is written, but
 * the header precedes the data. So each header is written first with 32 '0'
 * placeholders per tensor; the data follows sequentially (XXH3 streaming
 * state per tensor); when the shard's last tensor completes, the header bytes
 * [8, 8+N) are rewritten in place with the real hashes. The placeholders have
 * exactly the final width, so N and every data offset never change.
 *
 * Durability (docs/resume.md §4): a shard is written to
 * "<out_dir>/<shard name>.tmp"; after the header patch it is fsynced, renamed
 * to its final name, and out_dir is fsynced. Only then does
 * sp_stw_shard_durable() report it, and only then may the caller journal its
 * tensors. A failure or crash leaves at most a ".tmp" file for the shard in
 * progress, never a final name with partial content. After any error the
 * writer is dead: later calls return the same code.
 *
 * Errors: out_dir missing, not a directory or not writable, or a file that
 * cannot be created: 73 (SP_EX_CANTCREAT) naming the path. write, fsync,
 * rename: 74 (SP_EX_IOERR). API misuse (order, sizes, duplicates): 70.
 * All file I/O goes through io/base/fileio.h (fault injection applies).
 *
 * Memory: the plan (names, shapes, headers: O(#tensors)); no data is buffered.
 */
#ifndef SP_ST_WRITER_H
#define SP_ST_WRITER_H

#include <stdint.h>

#include "dtype.h"

#define SP_STW_HASH_HEX 32 /* hex digits of one XXH3-128 */

typedef struct sp_stw sp_stw; /* opaque */

/* out_dir is copied. shard_bytes_max >= 1. Returns 0 or 70 (bad argument/OOM). */
int sp_stw_init(sp_stw **out, const char *out_dir, int64_t shard_bytes_max);
void sp_stw_free(sp_stw *w); /* accepts NULL; closes any open .tmp (left in place) */

/* Declares one tensor: dtype, ndim in [0, 8], shape[0..ndim) >= 0 (a scalar
 * has ndim 0). Names are unique, non-empty, not "__metadata__", and contain
 * no '"', '\\' or control characters. Only before sp_stw_plan. Returns 0 or 70. */
int sp_stw_add(sp_stw *w, const char *name, sp_dtype dtype, int ndim, const int64_t *shape);

/* Fixes the layout (see above). Returns 0, 73 (out_dir unusable), 70. */
int sp_stw_plan(sp_stw *w);

/* Appends nbytes of `data` to tensor `name`, which must be the current tensor
 * (the first one in declaration order not yet complete). Returns 0, 73, 74, 70. */
int sp_stw_write(sp_stw *w, const char *name, const void *data, int64_t nbytes);

/* Completes trailing empty tensors, checks every tensor is complete, writes
 * the index (N > 1; a stale index in out_dir is removed when N == 1).
 * Returns 0, 73, 74, 70. */
int sp_stw_finish(sp_stw *w);

/* ---- resume (docs/resume.md §4, §7; used with the journal) ---- */

/* fsync of the shard in progress (its .tmp), if one is open: makes every
 * byte written so far durable before the caller journals it. 0 or 74. */
int sp_stw_sync(sp_stw *w);

/* After sp_stw_plan, before any write: tensors [0, n_done) are already on
 * disk with the given hashes (32 hex digits each), as a journal says and the
 * caller has verified. Shards all of whose tensors are done are finalized if
 * they are still ".tmp" (header patched, fsync, rename) or taken as durable if
 * their final file exists; the shard in progress is reopened and truncated
 * just after tensor n_done - 1, so writing continues at tensor n_done.
 * Returns 0, 66 (a .tmp it needs is missing), 74, 70. */
int sp_stw_resume(sp_stw *w, int n_done, const char *const *hashes);

/* Absolute offset of tensor i's bytes in its shard file, and the path where
 * they are now: the final name once the shard is durable, else its .tmp. */
int64_t sp_stw_tensor_file_offset(const sp_stw *w, int i);
const char *sp_stw_tensor_path_now(const sp_stw *w, int i);
int64_t sp_stw_tensor_bytes(const sp_stw *w, int i);

/* ---- queries (valid after sp_stw_plan) ---- */
int sp_stw_shard_count(const sp_stw *w);
const char *sp_stw_shard_name(const sp_stw *w, int shard); /* file name, no dir */
int sp_stw_shard_durable(const sp_stw *w, int shard); /* renamed + dir fsynced */
int sp_stw_tensor_count(const sp_stw *w);
const char *sp_stw_tensor_name(const sp_stw *w, int i); /* declaration order */
int sp_stw_find(const sp_stw *w, const char *name);     /* index, or -1 */
int sp_stw_tensor_shard(const sp_stw *w, int i);
/* XXH3-128 hex (32 digits + NUL) of tensor i once all its bytes were written;
 * NULL before that. */
const char *sp_stw_tensor_hash(const sp_stw *w, int i);

#endif
