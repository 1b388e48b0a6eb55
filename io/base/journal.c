/* io/base/journal.c — the job journal: an append-only file of checksummed records.
 *
 * ======================================================================
 * PROTOCOL
 * ======================================================================
 *
 * Record layout (all integers little-endian, no padding, no alignment):
 *
 *   offset  size  field
 *        0     4  magic    "SPJ1" (bytes 53 50 4A 31; SP_JOURNAL_MAGIC as LE u32)
 *        4     4  len      payload length, <= SP_JOURNAL_PAYLOAD_MAX (64 MiB)
 *        8     8  seq      0 for the header, then 1, 2, 3, ... with no gap
 *       16    16  run id   XXH3-128 (canonical, big-endian) of the header payload
 *       32     4  type     0 = HEADER; caller types >= 1 (opaque here)
 *       36   len  payload
 *   36+len     8  check    XXH3-64 (seed 0) of bytes [0, 36+len) of this record
 *
 *   So a record is SP_JOURNAL_REC_OVERHEAD (44) + len bytes. Records follow
 *   each other with nothing in between; the file ends at the end of the last
 *   record.
 *
 *   HEADER payload: manifest "\0" input "\0" version "\0" — the three strings
 *   of sp_run_identity, each printable ASCII within its array's bound (32, 32,
 *   31 characters). The run id is the XXH3-128 of exactly these bytes, so a
 *   mismatch can be explained part by part, not just detected.
 *
 * Invariants (of a journal object that sp_journal_open returned):
 *   J1  The file is exactly the records rec[-1 (header)], rec[0..n) that the
 *       object holds, back to back; j->size_bytes is its length.
 *   J2  Record k (k = 0 header, then 1..n) has seq == k, the run id of this
 *       run, and a valid checksum; only record 0 has type 0.
 *   J3  Every record in the file has been fsynced before sp_journal_append
 *       returned 0 (and the header, plus the directory entry, before
 *       sp_journal_open returned 0).
 *   J4  After a failed write or fsync the object is dead: it never writes
 *       again (an fsync failure is not retried: the page cache may have
 *       dropped the dirty pages and a second fsync would falsely succeed).
 *
 * State diagram (of the file):
 *
 *            open: file missing or 0 bytes
 *   EMPTY ─────────────────────────────────────► HEADER written (seq 0)
 *     ▲         write header, fsync, fsync dir          │
 *     │                                                 │ append (write, fsync)
 *     │ torn header dropped                             ▼
 *     │ (truncate to 0)                          RECORDS 1..n ──append──► ...
 *     │                                                 │
 *     └──── a crash can leave a torn tail anywhere ─────┤ caller's final record
 *           (dropped by the next open)                  ▼
 *                                                   COMPLETE
 *
 *   COMPLETE is a caller-defined record type (the run's final record); the
 *   journal treats it like any other. A dead object (J4) is not a file state:
 *   the file is some prefix of what was appended plus perhaps a torn tail.
 *
 * Write order rule (docs/resume.md §4): a record may only claim
 * what is already durable. Callers write the data to a tmp file, fsync it,
 * rename it, fsync the directory, and only then sp_journal_append the record
 * that names it. So after any crash, every record in the journal describes
 * data that exists — and resume still re-verifies it by hash.
 *
 * Replay rules (sp_journal_open on a non-empty file). Records are validated
 * in order from offset 0; a record is VALID when its magic matches, len is
 * sane (<= 64 MiB), the whole record lies inside the file, and its checksum
 * matches. Then:
 *   R1  A valid record whose seq is not the expected one: 65 (a gap or a
 *       duplicate: records are missing or the file was spliced).
 *   R2  A valid record 0 that is not a well-formed HEADER: 65. A HEADER whose
 *       identity differs from this run's: 65 naming each differing part, with
 *       the hint to rerun with --restart. A later valid record with another
 *       run id, or of type HEADER: 65.
 *   R3  The first invalid record: scan every later occurrence of the magic
 *       and try to validate a record there. If one is valid, the invalid
 *       record is corruption in the middle, not a torn write: 65 ("record
 *       <seq> is corrupt but later records are valid"). Otherwise it is a
 *       torn tail: ftruncate the file to the end of the last valid record,
 *       fsync, and report the dropped bytes. A torn tail at offset 0 (the
 *       header itself) leaves an empty file: a fresh header is written.
 *   R4  Guard against truncating a file that is not ours: if record 0 is
 *       invalid and the file's first bytes are neither a prefix of the magic
 *       nor zeros (what a torn write of a new file leaves), refuse: 65.
 *   R5  Every 65 leaves the file untouched: the decision to truncate is taken
 *       only after the whole file was read and judged.
 *   Why a torn write can only be a tail: records are only ever appended by
 *   one process (the job lock), each with a single write() followed by
 *   fsync, so an interrupted append damages the last record only.
 */
#include "journal.h"

#include "error.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define REC_HEAD 36          /* magic, len, seq, run id, type */
#define HDR_PAYLOAD_MAX (32 + 1 + 32 + 1 + 31 + 1)

struct sp_journal {
    char *path;
    int fd;
    unsigned char run_id[16];
    unsigned char *image;    /* the replayed file, (image_bytes); payloads point into it */
    int64_t size_bytes;      /* the file's length (J1) */
    uint64_t next_seq;
    sp_jrec *rec;            /* (n) records after the header */
    unsigned char **owned;   /* (n) the buffer an appended record lives in, or NULL */
    int n, cap;
    int dead;                /* J4: sticky status after a failed write or fsync */
};

/* ---------------- encoding ---------------- */

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static const unsigned char k_magic[4] = {'S', 'P', 'J', '1'};

/* Encodes one whole record into buf (REC_HEAD + len + 8 bytes). */
static void rec_encode(unsigned char *buf, uint64_t seq, const unsigned char run_id[16], uint32_t type, const void *payload,
                       uint32_t len) {
    put_u32(buf, SP_JOURNAL_MAGIC);
    put_u32(buf + 4, len);
    put_u64(buf + 8, seq);
    memcpy(buf + 16, run_id, 16);
    put_u32(buf + 32, type);
    if (len) memcpy(buf + REC_HEAD, payload, len);
    put_u64(buf + REC_HEAD + len, XXH3_64bits(buf, (size_t)REC_HEAD + len));
}

enum rec_state { REC_VALID, REC_SHORT, REC_BAD };

/* Judges the bytes at p (avail of them left in the file) as one record. */
static enum rec_state rec_check(const unsigned char *p, int64_t avail) {
    int64_t k = avail < 4 ? avail : 4;
    if (memcmp(p, k_magic, (size_t)k) != 0) return REC_BAD;
    if (avail < REC_HEAD) return REC_SHORT;
    uint32_t len = get_u32(p + 4);
    if (len > SP_JOURNAL_PAYLOAD_MAX) return REC_BAD;
    if (avail < (int64_t)SP_JOURNAL_REC_OVERHEAD + len) return REC_SHORT;
    if (XXH3_64bits(p, (size_t)REC_HEAD + len) != get_u64(p + REC_HEAD + len)) return REC_BAD;
    return REC_VALID;
}

/* R3: is there a valid record starting anywhere in [from, size)? */
static int valid_record_after(const unsigned char *img, int64_t from, int64_t size) {
    while (from + 4 <= size) {
        const unsigned char *m = memmem(img + from, (size_t)(size - from), k_magic, 4);
        if (!m) return 0;
        int64_t at = m - img;
        if (rec_check(m, size - at) == REC_VALID) return 1;
        from = at + 1;
    }
    return 0;
}

/* ---------------- identity ---------------- */

static int id_strings_ok(const sp_run_identity *id) {
    return memchr(id->manifest, 0, sizeof id->manifest) && memchr(id->input, 0, sizeof id->input) &&
           memchr(id->version, 0, sizeof id->version);
}

/* The header payload (<= HDR_PAYLOAD_MAX bytes); returns its length. */
static uint32_t id_encode(const sp_run_identity *id, unsigned char *buf) {
    size_t a = strlen(id->manifest) + 1, b = strlen(id->input) + 1, c = strlen(id->version) + 1;
    memcpy(buf, id->manifest, a);
    memcpy(buf + a, id->input, b);
    memcpy(buf + a + b, id->version, c);
    return (uint32_t)(a + b + c);
}

static void id_hash(const unsigned char *payload, uint32_t len, unsigned char out[16]) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(payload, len));
    memcpy(out, c.digest, 16);
}

int sp_run_identity_id(const sp_run_identity *id, unsigned char out[16]) {
    if (!id_strings_ok(id)) return sp_fail(SP_EX_SOFTWARE, "run identity: a string is not NUL-terminated");
    unsigned char buf[HDR_PAYLOAD_MAX];
    id_hash(buf, id_encode(id, buf), out);
    return 0;
}

/* Copies one NUL-terminated printable string from p[0..avail) into dst
 * (cap bytes with the NUL); returns the bytes consumed or -1. */
static int64_t take_str(const unsigned char *p, int64_t avail, char *dst, size_t cap) {
    for (int64_t i = 0; i < avail && i < (int64_t)cap; i++) {
        if (p[i] == 0) {
            memcpy(dst, p, (size_t)i + 1);
            return i + 1;
        }
        if (p[i] < 0x20 || p[i] > 0x7e) return -1;
    }
    return -1;
}

/* Parses a VALID record 0 (rec points at it) as a HEADER (R2). */
static int header_parse(const char *path, const unsigned char *rec, sp_run_identity *id, unsigned char run_id[16]) {
    uint32_t len = get_u32(rec + 4), type = get_u32(rec + 32);
    if (type != SP_JREC_HEADER)
        return sp_fail(SP_EX_DATAERR, "journal %s: record 0 is not a header (type %u); the job directory is damaged", path,
                       type);
    const unsigned char *p = rec + REC_HEAD;
    memset(id, 0, sizeof *id);
    int64_t a = take_str(p, len, id->manifest, sizeof id->manifest);
    int64_t b = a < 0 ? -1 : take_str(p + a, len - a, id->input, sizeof id->input);
    int64_t c = b < 0 ? -1 : take_str(p + a + b, len - a - b, id->version, sizeof id->version);
    if (c < 0 || a + b + c != len)
        return sp_fail(SP_EX_DATAERR, "journal %s: the header's run identity is malformed; the job directory is damaged",
                       path);
    id_hash(p, len, run_id);
    if (memcmp(run_id, rec + 16, 16) != 0)
        return sp_fail(SP_EX_DATAERR, "journal %s: the header's run id does not match its identity; the job directory is damaged",
                       path);
    return 0;
}

static int identity_compare(const char *path, const sp_run_identity *have, const sp_run_identity *want) {
    char why[512] = "";
    size_t o = 0;
    const char *sep = "";
    if (strcmp(have->manifest, want->manifest) != 0) {
        o += (size_t)snprintf(why + o, sizeof why - o, "%sthe manifest changed (a setting, or the backend's library or "
                              "kernels)", sep);
        sep = "; ";
    }
    if (strcmp(have->input, want->input) != 0) {
        o += (size_t)snprintf(why + o, sizeof why - o, "%sthe input checkpoint changed (shards' sizes or headers)", sep);
        sep = "; ";
    }
    if (strcmp(have->version, want->version) != 0)
        o += (size_t)snprintf(why + o, sizeof why - o, "%stool version %s (journal) vs %s (this slicepipe)", sep,
                              have->version, want->version);
    if (!o) return 0;
    return sp_fail(SP_EX_DATAERR,
                   "journal %s belongs to another run: %s. Run `slicepipe run MANIFEST --restart` to discard the job and "
                   "start fresh",
                   path, why);
}

/* ---------------- open / replay ---------------- */

static int grow(sp_journal *j) {
    if (j->n < j->cap) return 0;
    if (j->cap > INT_MAX / 2) return sp_fail(SP_EX_SOFTWARE, "journal %s: too many records", j->path);
    int cap = j->cap ? 2 * j->cap : 64;
    sp_jrec *r = realloc(j->rec, (size_t)cap * sizeof *r);
    if (!r) return sp_fail(SP_EX_SOFTWARE, "journal %s: out of memory", j->path);
    j->rec = r;
    unsigned char **o = realloc(j->owned, (size_t)cap * sizeof *o);
    if (!o) return sp_fail(SP_EX_SOFTWARE, "journal %s: out of memory", j->path);
    j->owned = o;
    j->cap = cap;
    return 0;
}

/* Judges the whole image (R1-R5) without touching the file. On success
 * *good_end is the end of the last valid record and the records after the
 * header are in j->rec. */
static int replay(sp_journal *j, const sp_run_identity *want, int64_t *good_end) {
    const unsigned char *img = j->image;
    const int64_t size = j->size_bytes;
    int64_t off = 0;
    uint64_t seq = 0;
    while (off < size) {
        const unsigned char *p = img + off;
        enum rec_state st = rec_check(p, size - off);
        if (st != REC_VALID) {
            if (valid_record_after(img, off + 1, size))
                return sp_fail(SP_EX_DATAERR,
                               "journal %s: record %llu (at offset %lld) is corrupt but later records are valid; the "
                               "job directory is damaged",
                               j->path, (unsigned long long)seq, (long long)off);
            if (off == 0) { /* R4 */
                int64_t k = size < 4 ? size : 4;
                int zeros = 1;
                for (int64_t i = 0; i < k; i++) zeros &= img[i] == 0;
                if (!zeros && memcmp(img, k_magic, (size_t)k) != 0)
                    return sp_fail(SP_EX_DATAERR, "journal %s: not a slicepipe journal (it does not begin with \"SPJ1\")",
                                   j->path);
            }
            break; /* R3: a torn tail */
        }
        uint32_t len = get_u32(p + 4), type = get_u32(p + 32);
        uint64_t rseq = get_u64(p + 8);
        if (rseq != seq) /* R1 */
            return sp_fail(SP_EX_DATAERR,
                           "journal %s: the record at offset %lld has sequence %llu, expected %llu (a sequence gap: "
                           "records are missing); the job directory is damaged",
                           j->path, (long long)off, (unsigned long long)rseq, (unsigned long long)seq);
        if (seq == 0) {
            sp_run_identity have;
            SP_TRY(header_parse(j->path, p, &have, j->run_id));
            SP_TRY(identity_compare(j->path, &have, want));
        } else {
            if (memcmp(p + 16, j->run_id, 16) != 0)
                return sp_fail(SP_EX_DATAERR, "journal %s: record %llu belongs to another run (its run id differs from the "
                                              "header's); the job directory is damaged",
                               j->path, (unsigned long long)seq);
            if (type == SP_JREC_HEADER)
                return sp_fail(SP_EX_DATAERR, "journal %s: record %llu is a second header; the job directory is damaged",
                               j->path, (unsigned long long)seq);
            SP_TRY(grow(j));
            j->rec[j->n] = (sp_jrec){.type = type, .seq = seq, .len = len, .payload = p + REC_HEAD};
            j->owned[j->n] = NULL;
            j->n++;
        }
        off += SP_JOURNAL_REC_OVERHEAD + (int64_t)len;
        seq++;
    }
    *good_end = off;
    j->next_seq = seq;
    return 0;
}

static int write_header(sp_journal *j, const sp_run_identity *id) {
    unsigned char payload[HDR_PAYLOAD_MAX], buf[SP_JOURNAL_REC_OVERHEAD + HDR_PAYLOAD_MAX];
    uint32_t len = id_encode(id, payload);
    rec_encode(buf, 0, j->run_id, SP_JREC_HEADER, payload, len);
    int64_t n = SP_JOURNAL_REC_OVERHEAD + (int64_t)len;
    SP_TRY(sp_io_write_full(j->fd, buf, n, j->path));
    SP_TRY(sp_io_fsync(j->fd, j->path));
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", j->path) >= (int)sizeof dir) return sp_fail(SP_EX_CANTCREAT, "%s: path too long", j->path);
    SP_TRY(sp_io_fsync_dir(dirname(dir)));
    j->size_bytes = n;
    j->next_seq = 1;
    return 0;
}

static int journal_open(const char *path, const sp_run_identity *id, sp_journal *j, int64_t *dropped, int ro) {
    j->fd = -1;
    j->path = strdup(path);
    if (!j->path) return sp_fail(SP_EX_SOFTWARE, "journal %s: out of memory", path);
    if (!id_strings_ok(id)) return sp_fail(SP_EX_SOFTWARE, "journal %s: run identity string not NUL-terminated", path);
    /* O_APPEND: every write lands at the end, also after a truncation. Never
     * through a link, never blocking on a FIFO (sp_io_open_own). */
    int64_t size = 0;
    SP_TRY(sp_io_open_own(path, ro ? O_RDONLY : O_RDWR | O_CREAT | O_APPEND, &j->fd, &size));
    if (size > SP_JOURNAL_FILE_MAX)
        return sp_fail(SP_EX_DATAERR, "journal %s: %lld bytes, more than the %lld a journal may hold", path,
                       (long long)size, (long long)SP_JOURNAL_FILE_MAX);
    j->size_bytes = size;
    if (ro && j->size_bytes == 0) return sp_fail(SP_EX_NOINPUT, "journal %s: empty (no header yet)", path);
    if (j->size_bytes == 0) {
        SP_TRY(sp_run_identity_id(id, j->run_id));
        return write_header(j, id);
    }
    SP_TRY(sp_alloc((void **)&j->image, j->size_bytes, 1, path));
    SP_TRY(sp_io_pread_full(j->fd, j->image, j->size_bytes, 0, path));
    int64_t good_end = 0;
    SP_TRY(replay(j, id, &good_end));
    if (good_end < j->size_bytes && ro) { /* read-only: report the torn tail, leave it */
        if (dropped) *dropped = j->size_bytes - good_end;
        j->dead = SP_EX_SOFTWARE;
        return 0;
    }
    if (good_end < j->size_bytes) { /* R3: drop the torn tail */
        SP_TRY(sp_io_truncate(j->fd, good_end, path));
        SP_TRY(sp_io_fsync(j->fd, path));
        if (dropped) *dropped = j->size_bytes - good_end;
        j->size_bytes = good_end;
    }
    if (j->size_bytes == 0) { /* the header itself was torn */
        SP_TRY(sp_run_identity_id(id, j->run_id));
        return write_header(j, id);
    }
    return 0;
}

int sp_journal_open(const char *path, const sp_run_identity *id, sp_journal **out, int64_t *dropped_bytes) {
    *out = NULL;
    if (dropped_bytes) *dropped_bytes = 0;
    sp_journal *j = calloc(1, sizeof *j);
    if (!j) return sp_fail(SP_EX_SOFTWARE, "journal %s: out of memory", path);
    int rc = journal_open(path, id, j, dropped_bytes, 0);
    if (rc) {
        sp_journal_free(j);
        return rc;
    }
    *out = j;
    return 0;
}

int sp_journal_open_ro(const char *path, const sp_run_identity *id, sp_journal **out, int64_t *dropped_bytes) {
    *out = NULL;
    if (dropped_bytes) *dropped_bytes = 0;
    sp_journal *j = calloc(1, sizeof *j);
    if (!j) return sp_fail(SP_EX_SOFTWARE, "journal %s: out of memory", path);
    int rc = journal_open(path, id, j, dropped_bytes, 1);
    if (rc) {
        sp_journal_free(j);
        return rc;
    }
    if (!j->dead) j->dead = SP_EX_SOFTWARE; /* never appended to */
    *out = j;
    return 0;
}

/* ---------------- append ---------------- */

int sp_journal_append(sp_journal *j, uint32_t type, const void *payload, uint32_t len) {
    if (j->dead)
        return sp_fail(j->dead, "journal %s: not written after an earlier I/O error (reopen it to resume)", j->path);
    if (type < SP_JREC_USER_MIN) return sp_fail(SP_EX_SOFTWARE, "journal %s: append of reserved record type %u", j->path, type);
    if (len > SP_JOURNAL_PAYLOAD_MAX || (len && !payload))
        return sp_fail(SP_EX_SOFTWARE, "journal %s: append of a bad payload (%u bytes)", j->path, len);
    SP_TRY(grow(j)); /* before writing: a durable record is never unknown to the object */
    int64_t n = SP_JOURNAL_REC_OVERHEAD + (int64_t)len;
    unsigned char *buf;
    SP_TRY(sp_alloc((void **)&buf, n, 1, j->path));
    rec_encode(buf, j->next_seq, j->run_id, type, payload, len);
    int rc = sp_io_write_full(j->fd, buf, n, j->path);
    if (!rc) rc = sp_io_fsync(j->fd, j->path);
    if (rc) { /* J4: never retried */
        j->dead = SP_EX_IOERR;
        free(buf);
        return SP_EX_IOERR;
    }
    j->rec[j->n] = (sp_jrec){.type = type, .seq = j->next_seq, .len = len, .payload = buf + REC_HEAD};
    j->owned[j->n] = buf;
    j->n++;
    j->next_seq++;
    j->size_bytes += n;
    return 0;
}

/* ---------------- queries ---------------- */

int sp_journal_count(const sp_journal *j) { return j->n; }

const sp_jrec *sp_journal_at(const sp_journal *j, int i) {
    SP_ASSERT(i >= 0 && i < j->n);
    return &j->rec[i];
}

int64_t sp_journal_size_bytes(const sp_journal *j) { return j->size_bytes; }

void sp_journal_free(sp_journal *j) {
    if (!j) return;
    if (j->fd >= 0) close(j->fd);
    for (int i = 0; i < j->n; i++) free(j->owned[i]);
    free(j->owned);
    free(j->rec);
    free(j->image);
    free(j->path);
    free(j);
}

int sp_run_identity_read(const char *path, sp_run_identity *id_out) {
    memset(id_out, 0, sizeof *id_out);
    int fd;
    int64_t size = 0;
    SP_TRY(sp_io_open_read(path, &fd, &size));
    if (size == 0) {
        close(fd);
        return sp_fail(SP_EX_NOINPUT, "journal %s: empty (no header yet)", path);
    }
    unsigned char buf[SP_JOURNAL_REC_OVERHEAD + HDR_PAYLOAD_MAX];
    int64_t n = size < (int64_t)sizeof buf ? size : (int64_t)sizeof buf;
    int rc = sp_io_pread_full(fd, buf, n, 0, path);
    close(fd);
    SP_TRY(rc);
    if (n >= REC_HEAD && memcmp(buf, k_magic, 4) == 0 && get_u32(buf + 4) > HDR_PAYLOAD_MAX)
        return sp_fail(SP_EX_DATAERR, "journal %s: the header record is too long (%u bytes); the job directory is damaged",
                       path, get_u32(buf + 4));
    if (rec_check(buf, n) != REC_VALID)
        return sp_fail(SP_EX_DATAERR, "journal %s: the header record is torn or corrupt", path);
    if (get_u64(buf + 8) != 0)
        return sp_fail(SP_EX_DATAERR, "journal %s: the first record has sequence %llu, not 0", path,
                       (unsigned long long)get_u64(buf + 8));
    unsigned char run_id[16];
    return header_parse(path, buf, id_out, run_id);
}
