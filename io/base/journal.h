/* io/base/journal.h — the job directory's append-only, checksummed journal.
 *
 * The protocol (record layout, invariants, state diagram, write order and
 * replay rules) is at the top of io/base/journal.c; read it before adding a caller.
 *
 * In short: record 0 is a HEADER holding the run identity; every later record
 * is (type, payload) chosen by the caller and opaque to the journal. Each
 * record carries a magic, its length, a consecutive sequence number, the run
 * id and its own XXH3-64. sp_journal_open replays an existing file: a torn
 * tail is dropped (truncated + fsynced), a corrupt record followed by valid
 * ones, a sequence gap or another run's journal is refused (65) without
 * touching the file.
 *
 * Write order (docs/resume.md §4): a caller makes the data a
 * record claims durable (tmp file, fsync, rename, fsync dir) BEFORE appending
 * that record. sp_journal_append returns only once the record is fsynced.
 *
 * One journal object, one thread; the caller holds the job lock (io/base/lock.h)
 * so that no other process appends to the same file.
 * All file I/O goes through io/base/fileio.h (fault injection applies).
 */
#ifndef SP_JOURNAL_H
#define SP_JOURNAL_H

#include <stdint.h>

#define SP_JOURNAL_MAGIC 0x314A5053u            /* bytes 'S' 'P' 'J' '1' read as a LE u32 */
#define SP_JOURNAL_PAYLOAD_MAX (64LL << 20)     /* larger lengths are corrupt */
#define SP_JOURNAL_FILE_MAX (1LL << 30)         /* a journal larger than this is refused (65) */
#define SP_JOURNAL_REC_OVERHEAD 44              /* 36-byte record head + 8-byte checksum */

enum sp_jrec_type {
    SP_JREC_HEADER = 0,   /* record 0 only; written by sp_journal_open */
    SP_JREC_USER_MIN = 1, /* caller types are >= this; their payloads are opaque */
};

/* What a journal is bound to. NUL-terminated strings: hex hashes of the
 * manifest's meaning and of the input fingerprint, and the tool version. */
typedef struct sp_run_identity {
    char manifest[33];
    char input[33];
    char version[32];
} sp_run_identity;

/* One record after the header. seq is 1, 2, ... (the header is seq 0). */
typedef struct sp_jrec {
    uint32_t type;
    uint64_t seq;
    uint32_t len;
    const unsigned char *payload; /* (len) bytes; valid until sp_journal_free */
} sp_jrec;

typedef struct sp_journal sp_journal; /* opaque; owns an fd */

/* Opens the journal at path for this run, creating it (header written and
 * fsynced, directory fsynced) if it is missing or empty; otherwise replays it.
 * *dropped_bytes (may be NULL) gets the size of a dropped torn tail, else 0.
 * Returns 0; 65 (corrupt, sequence gap, another run: the message says which
 * identity parts differ and how to restart); 73 (cannot create); 74 (I/O);
 * 70 (a bad identity from the caller). On error nothing is modified. */
int sp_journal_open(const char *path, const sp_run_identity *id, sp_journal **out, int64_t *dropped_bytes);
/* The same replay, read-only (for `slicepipe status`): nothing is created,
 * truncated or written; a torn tail is reported in *dropped_bytes and left in
 * place. Missing or empty: 66. Appending to the object is refused (70). */
int sp_journal_open_ro(const char *path, const sp_run_identity *id, sp_journal **out, int64_t *dropped_bytes);

/* Appends one record (type >= SP_JREC_USER_MIN, len <= SP_JOURNAL_PAYLOAD_MAX)
 * with one write and an fsync. Returns 0 once it is durable. A failed write or
 * fsync is 74 and never retried: the journal is then dead and every later
 * append returns 74 (reopen to replay what reached the disk). Misuse: 70. */
int sp_journal_append(sp_journal *j, uint32_t type, const void *payload, uint32_t len);

/* Records after the header, in sequence order. The sp_jrec pointer is valid
 * until the next append; its payload until sp_journal_free. */
int sp_journal_count(const sp_journal *j);
const sp_jrec *sp_journal_at(const sp_journal *j, int i); /* 0 <= i < count */
int64_t sp_journal_size_bytes(const sp_journal *j); /* the file's length */

void sp_journal_free(sp_journal *j); /* accepts NULL; closes the fd */

/* The header of an existing journal, for `slicepipe status`. Missing or empty
 * file: 66. A corrupt or torn header: 65. Reads only. */
int sp_run_identity_read(const char *path, sp_run_identity *id_out);

/* The 16-byte run id (XXH3-128, canonical big-endian) stored in every record:
 * the hash of manifest "\0" input "\0" version "\0" (the header payload).
 * Returns 0, or 70 if a string is not NUL-terminated within its array. */
int sp_run_identity_id(const sp_run_identity *id, unsigned char out[16]);

#endif
