/* io/base/strbuf.h — a growable, NUL-terminated text buffer for building files in
 * memory (safetensors headers, slicing.json, report.html).
 *
 * Appends never fail at the call site: a failed allocation (or a size that
 * would overflow int64_t) makes the buffer sticky-failed, later appends do
 * nothing, and the one check is sp_sb_take at the end:
 *
 *   sp_sb b = {0};
 *   sp_sb_str(&b, "{");
 *   sp_sb_printf(&b, "\"n\":%d", n);
 *   SP_TRY(sp_sb_take(&b, &text, &len, "config.json"));   // 0, or 70 "out of memory building config.json"
 *
 * Ownership: the buffer owns p until sp_sb_take hands it to the caller (who
 * frees it) or sp_sb_free releases it. Fields are read-only for callers; len
 * is the number of bytes appended so far (the offset of the next one).
 */
#ifndef SP_STRBUF_H
#define SP_STRBUF_H

#include <stdint.h>

typedef struct sp_sb {
    char *p;          /* (cap) bytes, p[len] == 0; NULL until the first append */
    int64_t len, cap;
    int oom;          /* an append failed; everything after it was dropped */
} sp_sb;

/* Appends n bytes of s (which may hold NULs). n < 0 is ignored. */
void sp_sb_put(sp_sb *b, const char *s, int64_t n);
/* Appends the NUL-terminated string s. */
void sp_sb_str(sp_sb *b, const char *s);
/* Appends printf-formatted text (any length). An encoding error counts as a
 * failed append. */
void sp_sb_printf(sp_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The one check: on success hands the text (NUL-terminated, an empty string
 * if nothing was appended) to *text_out, its length to *len_out (may be
 * NULL), and returns 0; the buffer is then empty again. If any append failed,
 * frees the text and returns 70 (SP_EX_SOFTWARE): "out of memory building
 * <what>". */
int sp_sb_take(sp_sb *b, char **text_out, int64_t *len_out, const char *what);
/* Releases the text without handing it over (b may be NULL); the buffer is
 * empty again. */
void sp_sb_free(sp_sb *b);

#endif
