/* io/text/textdoc.h — documents from a text file, streamed with bounded memory.
 *
 * Formats (by name, a trailing ".gz" ignored; gzip is detected by its magic
 * bytes, so a compressed file needs no .gz name):
 *   .jsonl  one JSON object per line with a string field "text", read by the
 *           one strict JSON reader (io/base/json.h: nothing after the object, keys
 *           compared unescaped and never twice; "\u0000" is a NUL byte of
 *           the text); blank lines are skipped; anything else is 65 naming
 *           the file and the line.
 *   other   plain text: documents are separated by one or more blank lines
 *           (lines that are empty or hold only spaces, tabs and '\r'). A
 *           document is its lines as they are in the file, the line endings
 *           between them kept, the last one dropped.
 * Memory: one read chunk, one inflate chunk and the current document; a
 * document longer than doc_bytes_max is 65 (naming where it starts).
 * All reads go through io/base/fileio (fault injection, short reads).
 */
#ifndef SP_TEXTDOC_H
#define SP_TEXTDOC_H

#include <stdint.h>

typedef struct sp_textdoc sp_textdoc; /* opaque */

#define SP_TEXTDOC_DOC_BYTES_MAX_DEFAULT ((int64_t)256 << 20)

/* Missing file: 66. Not a regular file: 65. doc_bytes_max <= 0: the default. */
int sp_textdoc_open(const char *path, int64_t doc_bytes_max, sp_textdoc **out);
/* The next document: *text (not NUL-terminated beyond len... it is, for
 * convenience) valid until the next call; *done = 1 at the end (then text is
 * NULL). A corrupt gzip stream or bad JSON line: 65 naming the file. */
int sp_textdoc_next(sp_textdoc *d, const char **text, int64_t *len, int *done);
/* 1-based number of the document last returned, and its first line. */
int64_t sp_textdoc_index(const sp_textdoc *d);
int64_t sp_textdoc_line(const sp_textdoc *d);
/* File bytes consumed so far and the file size (for progress). */
int64_t sp_textdoc_file_pos(const sp_textdoc *d);
int64_t sp_textdoc_file_size(const sp_textdoc *d);
int sp_textdoc_is_jsonl(const sp_textdoc *d);
int sp_textdoc_is_gzip(const sp_textdoc *d);
void sp_textdoc_free(sp_textdoc *d); /* accepts NULL */

#endif
