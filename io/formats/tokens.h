/* io/formats/tokens.h — token streams from .npy files (1-D int32, uint16, uint32 or
 * int64, little-endian, C order). Every id is checked to be in [0, vocab).
 * The writer is io/formats/npy.h. */
#ifndef SP_TOKENS_H
#define SP_TOKENS_H

#include <stdint.h>

typedef struct sp_tokens {
    int32_t *ids; /* (n) */
    int64_t n;
} sp_tokens;

/* Loads the stream; if max_n > 0 only the first max_n ids are kept (the file
 * is still validated whole). vocab <= 0 skips the id range check (ids must
 * still be >= 0 and fit int32). Missing file: 66. Bad header, dtype, shape,
 * size or id: 65 naming the file (and the index and value of a bad id).
 * On failure *out is zeroed. */
int sp_tokens_load(const char *path, int64_t vocab, int64_t max_n, sp_tokens *out);
void sp_tokens_free(sp_tokens *t);

#endif
