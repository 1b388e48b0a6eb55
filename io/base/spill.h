/* io/base/spill.h — activation spill files (docs/pipeline.md §5).
 *
 * A spill holds `rows` calibration (or evaluation) token activations, one row
 * per token, each in a fixed slot of D elements (a sliced width d <= D uses the
 * first d), stored as float32 or bfloat16. Reads and writes move whole windows,
 * since attention needs a whole window. The file is created afresh by
 * sp_spill_open (sp_io_create: a stale file or link of that name is unlinked,
 * then O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600) and removed by
 * sp_spill_free(..., remove = 1). Names are the caller's: a run names its
 * spills after its job (pipeline/run/slice.c), eval after random bytes, so two
 * jobs sharing a spill folder never share a file.
 *
 * Memory: one conversion buffer of max_rows × D elements, allocated at open
 * (sp_spill_mem_bytes).
 *
 * Resident (sp_spill_make_resident): the whole file's bytes are also held in
 * memory (rows × D elements). Writes then go to memory only and reads
 * come from it; sp_spill_sync writes the rows written since the last sync to
 * the file, then fsyncs, so at every sync the file holds the bytes a spill on
 * disk would. The hash, the conversions and the non-finite checks are the
 * same as on disk. A float32 spill read or written at full width can then be
 * used in place (sp_spill_read_at, sp_spill_rows): no copy at all.
 */
#ifndef SP_SPILL_H
#define SP_SPILL_H

#include <stdint.h>

#include "dtype.h"

typedef struct sp_spill sp_spill;

/* dtype: SP_DTYPE_F32 or SP_DTYPE_BF16. keep != 0 opens an existing spill
 * without truncating it (resume); it must then be exactly full-sized (65
 * otherwise). Returns 0, 73 (cannot create), 66, 65, 70. */
int sp_spill_open(sp_spill **out, const char *path, int64_t rows, int64_t D, sp_dtype dtype, int64_t max_rows, int keep);

/* Hashing: between begin and end, every write feeds XXH3-128 with the file
 * bytes it writes, in call order; a caller whose writes cover the file once,
 * in order, gets the hash of the file. end writes 32 hex digits + NUL. */
void sp_spill_hash_begin(sp_spill *s);
void sp_spill_hash_end(sp_spill *s, char hex[33]);
/* XXH3-128 of a whole spill file, read in bounded chunks. */
int sp_spill_hash_file(const char *path, char hex[33]);
/* XXH3-128 of the whole spill as its file holds it after the next sync:
 * hashed in memory when resident, else sp_spill_hash_file after a sync. */
int sp_spill_hash_all(sp_spill *s, char hex[33]);
int sp_spill_sync(sp_spill *s);
const char *sp_spill_path(const sp_spill *s);
void sp_spill_free(sp_spill *s, int remove_file);

/* Rows [row0, row0+n) of width `width` (<= D) from/to src/dst, packed (row
 * stride `width` floats). n <= max_rows. Returns 0, 74 (I/O), 65 (truncated). */
int sp_spill_write(sp_spill *s, int64_t row0, int64_t n, int64_t width, const float *src);
int sp_spill_read(sp_spill *s, int64_t row0, int64_t n, int64_t width, float *dst);

/* sp_spill_read, except that with `rows` non-NULL a resident float32 spill
 * read at full width is not copied: *rows points at the rows in memory (valid
 * until those rows are written). Otherwise the rows go to dst and *rows =
 * dst. The non-finite check runs either way. */
int sp_spill_read_at(sp_spill *s, int64_t row0, int64_t n, int64_t width, float *dst, const float **rows);
/* Rows [row0, row0+n) of a resident float32 spill at full width, for a
 * caller to fill and then pass to sp_spill_write (which then copies
 * nothing); NULL when the spill is not resident or not float32, or width < D. */
float *sp_spill_rows(sp_spill *s, int64_t row0, int64_t n, int64_t width);

/* Holds the spill in memory from now on (see the top): the file's present
 * bytes are read in first (a resume's kept spill). Returns 0, 70 (out of
 * memory), 74. */
int sp_spill_make_resident(sp_spill *s);

/* Bytes sp_spill_open allocates: one conversion buffer of max_rows × D. */
int64_t sp_spill_mem_bytes(int64_t D, int64_t max_rows, sp_dtype dtype);
int64_t sp_spill_bytes_written(const sp_spill *s);   /* traffic counters: file bytes only */
int64_t sp_spill_bytes_read(const sp_spill *s);

#endif
