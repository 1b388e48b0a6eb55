/* tests/fuzz/fuzz_journal.c — libFuzzer target for the journal replay
 * (io/base/journal.c: sp_journal_open, sp_run_identity_read).
 *
 * Each input is used twice as the journal file DIR/journal in a per-process
 * scratch folder (fuzz_tmp.h), for the fixed run identity fuzz_journal_id():
 *   1. the bytes as they are;
 *   2. the bytes with every well-framed record's checksum recomputed (and its
 *      run id set to this run's unless its first run-id byte is 0xAA), so that
 *      mutations reach the sequence, header and run-id rules behind the
 *      checksum. Skipped when it changes nothing.
 * For each: sp_run_identity_read (reads only), then sp_journal_open, which may
 * truncate a torn tail or write a fresh header (the file is a scratch copy).
 * Bad input must only ever produce a documented status with a message and
 * *out == NULL. An opened journal must hold exactly the file's records (J1,
 * J2: sequence, type, payload bytes, size), accept one append, and replay
 * again with one more record and nothing dropped. Any crash, sanitizer report,
 * leak or SP_ASSERT is a bug.
 *
 * Seeds: gen_fuzz_seeds DIR writes valid journals for the same identity.
 * Build and run: see tests/fuzz/README.md.
 */
#include "error.h"
#include "fuzz_journal_id.h"
#include "fuzz_tmp.h"
#include "journal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#define REC_HEAD (SP_JOURNAL_REC_OVERHEAD - 8) /* magic, len, seq, run id, type */

static uint32_t get_u32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static int64_t file_size(const char *path) {
    struct stat st;
    SP_ASSERT(stat(path, &st) == 0);
    return (int64_t)st.st_size;
}

static void check_one(const char *path, const uint8_t *data, size_t size) {
    const sp_run_identity *id = fuzz_journal_id();
    const int64_t hdr_bytes = SP_JOURNAL_REC_OVERHEAD + (int64_t)(strlen(id->manifest) + strlen(id->input) +
                                                                   strlen(id->version) + 3);
    fuzz_tmp_write(path, data, size);

    sp_run_identity have;
    sp_err_clear();
    int id_rc = sp_run_identity_read(path, &have);
    SP_ASSERT(id_rc == 0 || id_rc == SP_EX_DATAERR || (id_rc == SP_EX_NOINPUT && size == 0));
    if (id_rc) SP_ASSERT(sp_errmsg()[0] != 0);
    SP_ASSERT(file_size(path) == (int64_t)size); /* reads only */

    sp_journal *j = (sp_journal *)1;
    int64_t dropped = -1;
    sp_err_clear();
    int rc = sp_journal_open(path, id, &j, &dropped);
    if (rc) {
        SP_ASSERT(rc == SP_EX_DATAERR || rc == SP_EX_SOFTWARE || rc == SP_EX_IOERR);
        SP_ASSERT(strstr(sp_errmsg(), path) != NULL);
        SP_ASSERT(j == NULL);
        SP_ASSERT(file_size(path) == (int64_t)size); /* R5: a refusal leaves the file untouched */
        return;
    }
    SP_ASSERT(j != NULL && dropped >= 0 && dropped <= (int64_t)size);
    if (id_rc == 0 && dropped < (int64_t)size) /* the header was kept: it is this run's */
        SP_ASSERT(strcmp(have.manifest, id->manifest) == 0 && strcmp(have.input, id->input) == 0 &&
                  strcmp(have.version, id->version) == 0);

    /* J1, J2: the file is exactly the header and the records, which are the input's bytes */
    const int n = sp_journal_count(j);
    const int64_t kept = (int64_t)size - dropped;
    SP_ASSERT(sp_journal_size_bytes(j) == (kept ? kept : hdr_bytes));
    SP_ASSERT(file_size(path) == sp_journal_size_bytes(j));
    SP_ASSERT(n == 0 || kept > 0);
    int64_t off = hdr_bytes;
    for (int i = 0; i < n; i++) {
        const sp_jrec *r = sp_journal_at(j, i);
        SP_ASSERT(r->seq == (uint64_t)i + 1 && r->type >= SP_JREC_USER_MIN);
        SP_ASSERT(off + SP_JOURNAL_REC_OVERHEAD + (int64_t)r->len <= kept);
        SP_ASSERT(get_u32(data + off + 4) == r->len);
        SP_ASSERT(r->len == 0 || memcmp(r->payload, data + off + REC_HEAD, r->len) == 0);
        off += SP_JOURNAL_REC_OVERHEAD + (int64_t)r->len;
    }
    SP_ASSERT(off == sp_journal_size_bytes(j));

    /* one more record, then a second replay sees it and drops nothing */
    static const char payload[] = "fuzz";
    SP_ASSERT(sp_journal_append(j, SP_JREC_USER_MIN + 6, payload, sizeof payload) == 0);
    SP_ASSERT(sp_journal_count(j) == n + 1);
    const int64_t end = sp_journal_size_bytes(j);
    SP_ASSERT(end == off + SP_JOURNAL_REC_OVERHEAD + (int64_t)sizeof payload && file_size(path) == end);
    sp_journal_free(j);

    rc = sp_journal_open(path, id, &j, &dropped);
    SP_ASSERT(rc == 0 && dropped == 0);
    SP_ASSERT(sp_journal_count(j) == n + 1 && sp_journal_size_bytes(j) == end);
    const sp_jrec *last = sp_journal_at(j, n);
    SP_ASSERT(last->seq == (uint64_t)n + 1 && last->type == SP_JREC_USER_MIN + 6 && last->len == sizeof payload &&
              memcmp(last->payload, payload, sizeof payload) == 0);
    sp_journal_free(j);
}

/* Variant 2: recompute the checksum (and run id) of each well-framed record.
 * Returns 1 if anything changed. */
static int fix_records(uint8_t *p, size_t size) {
    unsigned char run_id[16];
    SP_ASSERT(sp_run_identity_id(fuzz_journal_id(), run_id) == 0);
    int changed = 0;
    size_t off = 0;
    while (size - off >= SP_JOURNAL_REC_OVERHEAD && memcmp(p + off, "SPJ1", 4) == 0) {
        uint32_t len = get_u32(p + off + 4);
        if (len > size - off - SP_JOURNAL_REC_OVERHEAD) break;
        uint8_t *r = p + off;
        uint8_t old[24];
        memcpy(old, r + 16, 16);
        memcpy(old + 16, r + REC_HEAD + len, 8);
        if (r[16] != 0xAA) memcpy(r + 16, run_id, 16);
        put_u64(r + REC_HEAD + len, XXH3_64bits(r, (size_t)REC_HEAD + len));
        changed |= memcmp(old, r + 16, 16) != 0 || memcmp(old + 16, r + REC_HEAD + len, 8) != 0;
        off += SP_JOURNAL_REC_OVERHEAD + (size_t)len;
    }
    return changed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_tmp_path("journal");
    check_one(path, data, size);

    uint8_t *copy = malloc(size ? size : 1);
    SP_ASSERT(copy != NULL);
    if (size) memcpy(copy, data, size);
    if (fix_records(copy, size)) check_one(path, copy, size);
    free(copy);
    return 0;
}
