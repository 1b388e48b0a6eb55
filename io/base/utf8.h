/* io/base/utf8.h — strict UTF-8 validation for text read from files (safetensors
 * headers, index.json, the manifest).
 *
 * Strict means RFC 3629 / Unicode well-formed: no overlong forms, no
 * surrogates (U+D800..DFFF), nothing above U+10FFFF, no truncated sequence at
 * the end. NUL bytes are valid UTF-8; callers that refuse them check
 * separately.
 */
#ifndef SP_UTF8_H
#define SP_UTF8_H

#include <stdint.h>

/* Offset of the first byte of s[0..n) that does not begin a well-formed
 * sequence (the lead byte of the first bad sequence), or -1 if all of it is
 * valid. n >= 0; s may be NULL when n == 0. */
int64_t sp_utf8_invalid_at(const char *s, int64_t n);

#endif
