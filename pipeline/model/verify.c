/* pipeline/model/verify.c — re-hash an output model against its recorded XXH3-128s
 * (contract in verify.h). */
#include "verify.h"

#include "error.h"
#include "fileio.h"
#include "safetensors.h"
#include "st_writer.h" /* SP_STW_HASH_HEX: the recorded form */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hex_ok(const char *s) {
    if (strlen(s) != SP_STW_HASH_HEX) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

static int verify_tensor(const sp_st_file *f, const sp_st_tensor *t) {
    const char *path = sp_st_path(f);
    size_t klen = strlen(t->name) + 10;
    char *key = malloc(klen);
    if (!key) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    snprintf(key, klen, "xxh3_128:%s", t->name);
    const char *want = sp_st_meta(f, key);
    free(key);
    if (!want)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': no hash recorded (no \"xxh3_128:%s\" in __metadata__)", path, t->name,
                       t->name);
    if (!hex_ok(want))
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': the recorded hash '%s' is not 32 lowercase hex digits", path,
                       t->name, want);
    char got[SP_STW_HASH_HEX + 1];
    SP_TRY(sp_io_xxh128_range(path, t->file_offset, t->nbytes, got)); /* the hex form st_writer records */
    if (strcmp(got, want) != 0)
        return sp_fail(SP_EX_DATAERR,
                       "%s: tensor '%s': XXH3-128 mismatch: recorded %s, the data hashes to %s (the file is damaged)",
                       path, t->name, want, got);
    return 0;
}

int sp_verify_model(const char *dir, sp_verify_result *out) {
    memset(out, 0, sizeof *out);
    sp_ckpt *c;
    SP_TRY(sp_ckpt_open(dir, &c));
    int rc = 0;
    double t0 = sp_now();
    for (int s = 0; s < sp_ckpt_shard_count(c) && !rc; s++) {
        const sp_st_file *f = sp_ckpt_shard(c, s);
        for (int i = 0; i < sp_st_count(f) && !rc; i++) {
            const sp_st_tensor *t = sp_st_at(f, i);
            rc = verify_tensor(f, t);
            out->tensors++;
            out->bytes += t->nbytes;
        }
        out->shards++;
    }
    out->seconds = sp_now() - t0;
    sp_ckpt_free(c);
    return rc;
}
