/* io/formats/npy.h — the one .npy writer.
 *
 * Every .npy file slicepipe writes (tokenize -o, eval and generate
 * --dump-logits, generate --out-ids, synth's calib.npy) is a NumPy v1.0 file
 * of a C-order little-endian array of 4-byte elements ('<i4' or '<f4'), 1-D
 * (n,) or 2-D (rows, cols):
 *   8 bytes  "\x93NUMPY\x01\x00"
 *   2 bytes  header length H (little-endian), 10 + H = 128 for every shape
 *   H bytes  {'descr': '<i4', 'fortran_order': False, 'shape': (n,), }
 *            padded with spaces and ended by '\n'
 *   the data
 * It goes through a single-file output (fileio.h sp_io_out_begin): refused
 * over an input, never written through a link or into a FIFO, made in an
 * unpredictable temporary that gets the final name only when complete. The
 * header goes in last, so the row count need not be known at the start.
 * The reader is io/formats/tokens.h.
 */
#ifndef SP_NPY_H
#define SP_NPY_H

#include <stdint.h>

#include "fileio.h"

typedef struct sp_npy_out sp_npy_out; /* opaque: the temporary's fd, its name, the count so far */

/* Begins path for an array of descr ("<i4" or "<f4") with cols columns, or
 * 1-D when cols == 0; flags and taken as for sp_io_out_begin (taken NULL: no
 * check against inputs; an existing file needs SP_IO_OUT_REPLACE). */
int sp_npy_out_begin(const char *path, const char *descr, int64_t cols, int flags, sp_io_paths **taken, sp_npy_out **out);
/* Appends n elements (4·n bytes). A failed write: 74. */
int sp_npy_out_write(sp_npy_out *o, const void *elems, int64_t n);
/* ok != 0: writes the header (rows = elements / cols; a 2-D array must hold
 * whole rows), fsyncs, renames over path and fsyncs the folder. ok == 0, or
 * any failure: removes the temporary. Frees o; NULL returns 0. */
int sp_npy_out_end(sp_npy_out *o, int ok);
/* The whole array at once (rows·cols elements, or rows when cols == 0). */
int sp_npy_write(const char *path, const char *descr, const void *elems, int64_t rows, int64_t cols, int flags,
                 sp_io_paths **taken);

#endif
