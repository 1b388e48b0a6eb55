/* pipeline/verify.c — re-hash an output model against its recorded XXH3-128s
 * (contract in verify.h). */
#include "verify.h"

#include "error.h"
#include "fileio.h"
#include "safetensors.h"
#include "st_writer.h" /* SP_STW_HASH_HEX: the recorded form */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* The same text st_writer records: canonical big-endian, lowercase hex. */
static void hash_hex(XXH128_hash_t h, char out[SP_STW_HASH_HEX + 1]) {
    static const char hex[] = "0123456789abcdef";
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[c.digest[i] >> 4];
        out[2 * i + 1] = hex[c.digest[i] & 15];
    }
    out[SP_STW_HASH_HEX] = 0;
}

static int hex_ok(const char *s) {
    if (strlen(s) != SP_STW_HASH_HEX) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

static int verify_tensor(const sp_st_file *f, const sp_st_tensor *t, XXH3_state_t *xs, unsigned char *buf) {
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
    XXH3_128bits_reset(xs);
    for (int64_t done = 0; done < t->nbytes;) {
        int64_t n = t->nbytes - done < SP_VERIFY_CHUNK_BYTES ? t->nbytes - done : SP_VERIFY_CHUNK_BYTES;
        SP_TRY(sp_io_pread_full(sp_st_fd(f), buf, n, t->file_offset + done, path));
        XXH3_128bits_update(xs, buf, (size_t)n);
        done += n;
    }
    char got[SP_STW_HASH_HEX + 1];
    hash_hex(XXH3_128bits_digest(xs), got);
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
    unsigned char *buf = NULL;
    XXH3_state_t *xs = XXH3_createState();
    int rc = xs ? sp_alloc((void **)&buf, SP_VERIFY_CHUNK_BYTES, 1, "verify buffer")
                : sp_fail(SP_EX_SOFTWARE, "%s: out of memory", dir);
    double t0 = sp_now();
    for (int s = 0; s < sp_ckpt_shard_count(c) && !rc; s++) {
        const sp_st_file *f = sp_ckpt_shard(c, s);
        for (int i = 0; i < sp_st_count(f) && !rc; i++) {
            const sp_st_tensor *t = sp_st_at(f, i);
            rc = verify_tensor(f, t, xs, buf);
            out->tensors++;
            out->bytes += t->nbytes;
        }
        out->shards++;
    }
    out->seconds = sp_now() - t0;
    XXH3_freeState(xs);
    free(buf);
    sp_ckpt_free(c);
    return rc;
}
