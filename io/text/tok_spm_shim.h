/* io/text/tok_spm_shim.h — the C ABI of io/text/tok_spm_shim.cc (libsentencepiece).
 * For io/text/tok_spm.c only. Errors: a NULL / non-zero return with a message in
 * err (errn bytes). Callbacks return non-zero to stop (their own error). */
#ifndef SP_TOK_SPM_SHIM_H
#define SP_TOK_SPM_SHIM_H

#include <stddef.h>
#include <stdint.h>

void *sp_spm_shim_load(const char *buf, int64_t len, char *err, size_t errn);
void sp_spm_shim_free(void *h);
/* 0 ok, 1 push failed, -1 sentencepiece error */
int sp_spm_shim_encode(void *h, const char *s, int64_t n, int (*push)(void *, int32_t), void *ctx, char *err, size_t errn);
int sp_spm_shim_decode(void *h, const int32_t *ids, int64_t n, int skip_control, int (*append)(void *, const char *, int64_t),
                       void *ctx, char *err, size_t errn);
void sp_spm_shim_info(void *h, int64_t *vocab, int32_t *bos, int32_t *eos, int32_t *unk);
int32_t sp_spm_shim_piece_id(void *h, const char *piece); /* -1 if absent */

#endif
