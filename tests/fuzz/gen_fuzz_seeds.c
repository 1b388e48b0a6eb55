/* tests/fuzz/gen_fuzz_seeds.c — writes the binary seed inputs of the fuzz
 * targets into DIR/journal and DIR/tokens (made if missing). The text seeds
 * (manifest, config.json) are checked in under tests/fuzz/corpus/.
 *
 *   journal/header       a header alone (identity: fuzz_journal_id.h)
 *   journal/records      the header and four records (payloads of 0, 1, 40, 300 bytes)
 *   journal/torn_tail    `records` with its last record cut short by 5 bytes
 *   journal/torn_header  the first 20 bytes of a header
 *   tokens/i4.npy, u2.npy, u4.npy, i8.npy   short 1-D streams of each accepted dtype
 *   tokens/v2_i4.npy     a version 2.0 header, double-quoted dict, keys reordered
 *
 * Usage: gen_fuzz_seeds DIR
 */
#include "error.h"
#include "fuzz_journal_id.h"
#include "journal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void subdir(char *out, size_t cap, const char *dir, const char *name) {
    SP_ASSERT(snprintf(out, cap, "%s/%s", dir, name) < (int)cap);
    SP_ASSERT(mkdir(out, 0755) == 0 || errno == EEXIST);
}

static void journal_seed(const char *dir, const char *name, int nrec, int64_t keep) {
    char path[4096];
    SP_ASSERT(snprintf(path, sizeof path, "%s/%s", dir, name) < (int)sizeof path);
    unlink(path);
    sp_journal *j;
    if (sp_journal_open(path, fuzz_journal_id(), &j, NULL) != 0) {
        fprintf(stderr, "gen_fuzz_seeds: %s\n", sp_errmsg());
        _exit(1);
    }
    static const uint32_t lens[] = {0, 1, 40, 300};
    unsigned char payload[300];
    for (int i = 0; i < nrec; i++) {
        for (uint32_t k = 0; k < lens[i % 4]; k++) payload[k] = (unsigned char)(i * 31 + k);
        SP_ASSERT(sp_journal_append(j, SP_JREC_USER_MIN + (uint32_t)i, payload, lens[i % 4]) == 0);
    }
    int64_t size = sp_journal_size_bytes(j);
    sp_journal_free(j);
    if (keep <= 0) keep += size; /* 0: the whole file; negative: cut that many bytes off the end */
    if (keep != size) SP_ASSERT(truncate(path, (off_t)keep) == 0);
}

/* A .npy file: magic, version, header length (2 bytes for v1, 4 for v2), the
 * dict padded with spaces to a multiple of 64 and ended by '\n', then n ids
 * of itemsize bytes, little-endian. */
static void npy_seed(const char *dir, const char *name, int major, const char *dict, int itemsize, int n) {
    char path[4096];
    SP_ASSERT(snprintf(path, sizeof path, "%s/%s", dir, name) < (int)sizeof path);
    FILE *f = fopen(path, "wb");
    SP_ASSERT(f != NULL);
    const int lenbytes = major == 1 ? 2 : 4, dlen = (int)strlen(dict);
    const int pad = (64 - (8 + lenbytes + dlen + 1) % 64) % 64, hlen = dlen + pad + 1;
    unsigned char pre[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
    for (int i = 0; i < lenbytes; i++) pre[8 + i] = (unsigned char)(hlen >> (8 * i));
    SP_ASSERT(fwrite(pre, 1, (size_t)(8 + lenbytes), f) == (size_t)(8 + lenbytes));
    SP_ASSERT(fwrite(dict, 1, (size_t)dlen, f) == (size_t)dlen);
    for (int i = 0; i < pad; i++) SP_ASSERT(fputc(' ', f) != EOF);
    SP_ASSERT(fputc('\n', f) != EOF);
    for (int i = 0; i < n; i++) {
        uint64_t id = (uint64_t)(i * 37 % 512);
        for (int b = 0; b < itemsize; b++) SP_ASSERT(fputc((int)(id >> (8 * b)) & 0xff, f) != EOF);
    }
    SP_ASSERT(fclose(f) == 0);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_fuzz_seeds DIR\n");
        return 64;
    }
    SP_ASSERT(mkdir(argv[1], 0755) == 0 || errno == EEXIST);
    char dir[4096];
    subdir(dir, sizeof dir, argv[1], "journal");
    journal_seed(dir, "header", 0, 0);
    journal_seed(dir, "records", 4, 0);
    journal_seed(dir, "torn_tail", 4, -5);
    journal_seed(dir, "torn_header", 0, 20);

    subdir(dir, sizeof dir, argv[1], "tokens");
    npy_seed(dir, "i4.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (9,), }", 4, 9);
    npy_seed(dir, "u2.npy", 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (5,), }", 2, 5);
    npy_seed(dir, "u4.npy", 1, "{'descr': '<u4', 'fortran_order': False, 'shape': (3,), }", 4, 3);
    npy_seed(dir, "i8.npy", 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (12,), }", 8, 12);
    npy_seed(dir, "v2_i4.npy", 2, "{\"shape\": (4,), \"fortran_order\": False, \"descr\": \"<i4\"}", 4, 4);
    return 0;
}
