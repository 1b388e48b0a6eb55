/* io/base/uring_reader.h — batched positional reads: io_uring where the kernel
 * allows it, pread (sp_io_pread_full, io/base/fileio.h) otherwise. Both paths give
 * byte-identical destinations and the same statuses.
 *
 * A batch is a list of requests {fd, offset, len, dst, tag, path}. Every
 * request is read completely into dst[0, len) or the batch fails:
 *   65  end of file came before offset+len ("<path>: truncated ...");
 *   74  an I/O error ("<path>: read at offset ...: <strerror>"), or io_uring
 *       itself failed;
 *   70  a malformed request (negative offset or length, offset+len overflows,
 *       NULL dst with len > 0): a bug in the caller, reported, not asserted.
 * The message (sp_errmsg) names the request's path (or "(unnamed)" when path
 * is NULL); sp_rd_failed_index() says which request. After a failure the
 * destinations of the batch hold unspecified bytes, but no read is left in
 * flight: the function returns only when the kernel is done with every buffer.
 * Zero-length requests are no-ops (fd and dst are not looked at).
 *
 * io_uring path (follows liburing's io_uring-cp.c): requests are split into
 * chunks of at most max_chunk_bytes; up to queue_depth chunks are in flight;
 * each in-flight chunk's state lives in a preallocated slot whose index is the
 * SQE's user_data (nothing is allocated per request or per batch). On each
 * completion, in whatever order they arrive:
 *   -EAGAIN, -EINTR   resubmit the same read (counted in resubmissions);
 *   other res < 0     74;
 *   res == 0 early    65 truncated;
 *   0 < res < left    advance and resubmit the rest (short_reads_resumed).
 *
 * Modes. SP_RD_AUTO tries io_uring and falls back to pread silently when
 * io_uring_queue_init is refused with EPERM, ENOSYS, ENOMEM, EINVAL or EACCES
 * (seccomp, io_uring_disabled, old kernels, locked-memory limits); the reason
 * is kept in sp_rd_fallback_reason(). Any other init error is 74. SP_RD_URING
 * refuses to fall back (sp_rd_init returns 74 naming the reason).
 * SP_RD_PREAD never touches io_uring.
 *
 * Environment, read once per sp_rd_init (tests set it between readers):
 *   SLICEPIPE_IO=pread            AUTO uses the pread path (reason
 *                                 "SLICEPIPE_IO=pread"); URING and PREAD
 *                                 modes ignore it.
 *   SLICEPIPE_SHORT_READS=1       each io_uring read asks for at most 1..4093
 *                                 bytes (deterministic PRNG), so every chunk
 *                                 goes through the short-read resume path.
 *                                 The pread path gets short reads from
 *                                 io/base/fileio.c, which reads this variable once
 *                                 per process.
 *   SLICEPIPE_URING_FAKE_EAGAIN=N every Nth io_uring completion of this reader
 *                                 is treated as -EAGAIN (its result ignored)
 *                                 and resubmitted. N < 2 is taken as 2, so
 *                                 reads always make progress.
 *
 * A reader is used by one thread at a time. Several readers may coexist.
 */
#ifndef SP_URING_READER_H
#define SP_URING_READER_H

#include <stdint.h>

enum sp_rd_mode {
    SP_RD_AUTO = 0,  /* io_uring, or pread where io_uring is refused */
    SP_RD_URING = 1, /* io_uring or an error */
    SP_RD_PREAD = 2, /* pread only */
};

#define SP_RD_QUEUE_DEPTH_DEFAULT 32
#define SP_RD_QUEUE_DEPTH_MAX 4096
#define SP_RD_CHUNK_BYTES_DEFAULT (1LL << 20)
#define SP_RD_CHUNK_BYTES_MAX (1LL << 30) /* io_uring read lengths are 32-bit */

typedef struct sp_rd_req {
    int fd;           /* open for reading; not owned */
    int64_t offset;   /* file offset, >= 0, need not be aligned */
    int64_t len;      /* bytes, >= 0 */
    void *dst;        /* len bytes, any alignment; not owned */
    uint64_t tag;     /* the caller's, untouched */
    const char *path; /* for messages; may be NULL */
} sp_rd_req;

typedef struct sp_rd_stats {
    int64_t bytes_read;          /* bytes delivered into destinations */
    int64_t requests;            /* requests in batches that succeeded */
    int64_t batches;             /* sp_rd_read_batch calls */
    double busy_seconds;         /* wall time inside sp_rd_read_batch */
    int64_t reads_submitted;     /* io_uring reads submitted (0 on pread) */
    int64_t short_reads_resumed; /* io_uring completions short of the chunk */
    int64_t resubmissions;       /* io_uring -EAGAIN/-EINTR (real or fake) */
} sp_rd_stats;

typedef struct sp_rd sp_rd; /* opaque; owns the ring and the slot array */

/* mode: enum sp_rd_mode. queue_depth <= 0 means SP_RD_QUEUE_DEPTH_DEFAULT,
 * larger than SP_RD_QUEUE_DEPTH_MAX is clamped. max_chunk_bytes <= 0 means
 * SP_RD_CHUNK_BYTES_DEFAULT, larger than SP_RD_CHUNK_BYTES_MAX is clamped.
 * Returns 0, 74 (io_uring refused in URING mode, or a failed init), 70 (bad
 * mode, out of memory). *r is NULL on failure. */
int sp_rd_init(sp_rd **r, int mode, int queue_depth, int64_t max_chunk_bytes);
void sp_rd_free(sp_rd *r); /* NULL is fine */

/* The path in use after fallback: SP_RD_URING or SP_RD_PREAD. */
int sp_rd_mode(const sp_rd *r);
/* Why AUTO fell back to pread ("" when it did not), e.g.
 * "io_uring_queue_init: Operation not permitted". */
const char *sp_rd_fallback_reason(const sp_rd *r);

/* Reads every request of reqs[0, n) (n >= 0). Returns 0, 65, 74 or 70 as
 * above. Requests may share an fd and may be in any order; destinations must
 * not overlap. */
int sp_rd_read_batch(sp_rd *r, const sp_rd_req *reqs, int n);

/* Index in the last batch of the request that failed, -1 when it succeeded. */
int sp_rd_failed_index(const sp_rd *r);
/* Totals since sp_rd_init. */
void sp_rd_get_stats(const sp_rd *r, sp_rd_stats *out);

#endif
