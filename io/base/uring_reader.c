/* io/base/uring_reader.c — batched reads with io_uring, pread fallback.
 *
 * Protocol of the io_uring path (one batch):
 *
 *   free slot ──fill()──▶ in flight ──CQE──┬─ -EAGAIN/-EINTR ─▶ prep again (in flight)
 *       ▲                    ▲             ├─ 0 < res < left ─▶ advance, prep rest
 *       │                    └─────────────┘
 *       └──────────── released ◀───────────┴─ done / error / batch already failed
 *
 * Invariants:
 *   - a slot is either on the free stack or has exactly one SQE outstanding
 *     (prepared, submitted or completed-but-unreaped); so at most queue_depth
 *     SQEs are unconsumed and at most queue_depth CQEs are pending, and the SQ
 *     (queue_depth entries) and CQ (2x) never run out;
 *   - the SQE's user_data is the slot index; the slot holds the request index,
 *     the next file offset, the next destination byte and the bytes left in
 *     its chunk; completions are matched by user_data only, so their order
 *     does not matter;
 *   - after the first error no new chunk is started and nothing is
 *     resubmitted, but the batch returns only when inflight == 0, so the
 *     kernel never writes into a caller's buffer after we return.
 */
#include "uring_reader.h"

#include "error.h"
#include "fileio.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RD_AGAIN_MAX 100000     /* consecutive -EAGAIN/-EINTR on one chunk */
#define RD_SUBMIT_RETRY_MAX 5000 /* consecutive failed submits, 1 ms apart */
#define RD_SHORT_MAX 4093        /* SLICEPIPE_SHORT_READS: 1..4093 bytes a read */

typedef struct rd_slot {
    int64_t off;    /* file offset of the next byte */
    int64_t left;   /* bytes of this chunk not read yet */
    char *dst;      /* destination of the next byte */
    uint32_t asked; /* length of the read in flight */
    int req;        /* index of the request in the batch */
    int again;      /* consecutive -EAGAIN/-EINTR */
} rd_slot;

struct sp_rd {
    int mode; /* SP_RD_URING or SP_RD_PREAD */
    int queue_depth;
    int64_t chunk_bytes_max;
    int ring_live;   /* io_uring_queue_init succeeded and not exited */
    int ring_broken; /* a submit failed for good; the ring was torn down */
    struct io_uring ring;
    rd_slot *slots;  /* (queue_depth) */
    int *free_slots; /* (queue_depth) stack of free slot indices */
    int nfree;
    int short_reads;          /* SLICEPIPE_SHORT_READS */
    uint64_t rng;             /* xorshift64* state for short reads */
    int64_t fake_eagain_n;    /* SLICEPIPE_URING_FAKE_EAGAIN, 0 = off */
    int64_t completions;      /* CQEs seen, for fake EAGAIN */
    int failed_index;
    char reason[192];
    sp_rd_stats st;
};

typedef struct rd_batch {
    const sp_rd_req *reqs;
    int n;
    int next;     /* request the next chunk comes from */
    int64_t pos;  /* bytes of reqs[next] already handed to slots */
    int inflight; /* slots not on the free stack */
    int err;      /* first status, 0 while fine */
} rd_batch;

static const char *req_path(const sp_rd_req *q) { return q->path ? q->path : "(unnamed)"; }

static int env_flag(const char *name) {
    const char *s = getenv(name);
    return s && *s && strcmp(s, "0") != 0;
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int refused_errno(int e) { return e == EPERM || e == ENOSYS || e == ENOMEM || e == EINVAL || e == EACCES; }

int sp_rd_init(sp_rd **out, int mode, int queue_depth, int64_t max_chunk_bytes) {
    *out = NULL;
    if (mode != SP_RD_AUTO && mode != SP_RD_URING && mode != SP_RD_PREAD)
        return sp_fail(SP_EX_SOFTWARE, "reader: unknown mode %d", mode);
    sp_rd *r;
    SP_TRY(sp_calloc((void **)&r, 1, sizeof *r, "reader"));
    r->queue_depth = queue_depth <= 0 ? SP_RD_QUEUE_DEPTH_DEFAULT
                     : queue_depth > SP_RD_QUEUE_DEPTH_MAX ? SP_RD_QUEUE_DEPTH_MAX
                                                           : queue_depth;
    r->chunk_bytes_max = max_chunk_bytes <= 0 ? SP_RD_CHUNK_BYTES_DEFAULT
                         : max_chunk_bytes > SP_RD_CHUNK_BYTES_MAX ? SP_RD_CHUNK_BYTES_MAX
                                                                   : max_chunk_bytes;
    r->failed_index = -1;
    r->short_reads = env_flag("SLICEPIPE_SHORT_READS");
    r->rng = 0x9E3779B97F4A7C15ULL;
    const char *fe = getenv("SLICEPIPE_URING_FAKE_EAGAIN");
    if (fe && *fe) {
        long long v = strtoll(fe, NULL, 10);
        r->fake_eagain_n = v <= 0 ? 0 : v < 2 ? 2 : v;
    }

    r->mode = mode == SP_RD_PREAD ? SP_RD_PREAD : SP_RD_URING;
    const char *io = getenv("SLICEPIPE_IO");
    if (mode == SP_RD_AUTO && io && strcmp(io, "pread") == 0) {
        r->mode = SP_RD_PREAD;
        snprintf(r->reason, sizeof r->reason, "SLICEPIPE_IO=pread");
    }
    if (r->mode == SP_RD_URING) {
        int ret = io_uring_queue_init((unsigned)r->queue_depth, &r->ring, 0);
        if (ret < 0) {
            if (mode == SP_RD_AUTO && refused_errno(-ret)) {
                r->mode = SP_RD_PREAD;
                snprintf(r->reason, sizeof r->reason, "io_uring_queue_init: %s", strerror(-ret));
            } else {
                int rc = sp_fail(SP_EX_IOERR, "io_uring unavailable: io_uring_queue_init(%d): %s", r->queue_depth,
                                 strerror(-ret));
                free(r);
                return rc;
            }
        } else {
            r->ring_live = 1;
            int rc = sp_alloc((void **)&r->slots, r->queue_depth, sizeof *r->slots, "reader slots");
            if (!rc) rc = sp_alloc((void **)&r->free_slots, r->queue_depth, sizeof *r->free_slots, "reader slots");
            if (rc) {
                sp_rd_free(r);
                return rc;
            }
            for (int i = 0; i < r->queue_depth; i++) r->free_slots[i] = r->queue_depth - 1 - i;
            r->nfree = r->queue_depth;
        }
    }
    *out = r;
    return 0;
}

void sp_rd_free(sp_rd *r) {
    if (!r) return;
    if (r->ring_live) io_uring_queue_exit(&r->ring);
    free(r->slots);
    free(r->free_slots);
    free(r);
}

int sp_rd_mode(const sp_rd *r) { return r->mode; }
const char *sp_rd_fallback_reason(const sp_rd *r) { return r->reason; }
int sp_rd_failed_index(const sp_rd *r) { return r->failed_index; }
void sp_rd_get_stats(const sp_rd *r, sp_rd_stats *out) { *out = r->st; }

/* ---------------- io_uring path ---------------- */

/* Queues the next read of slot s. Cannot fail: see the invariants above. */
static void prep_read(sp_rd *r, rd_batch *b, int s) {
    rd_slot *sl = &r->slots[s];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    SP_ASSERT(sqe != NULL);
    SP_ASSERT(sl->left > 0 && sl->left <= SP_RD_CHUNK_BYTES_MAX);
    int64_t ask = sl->left;
    if (r->short_reads) {
        int64_t cap = 1 + (int64_t)(rng_next(&r->rng) % RD_SHORT_MAX);
        if (ask > cap) ask = cap;
    }
    sl->asked = (uint32_t)ask;
    io_uring_prep_read(sqe, b->reqs[sl->req].fd, sl->dst, sl->asked, (uint64_t)sl->off);
    io_uring_sqe_set_data64(sqe, (uint64_t)s);
    r->st.reads_submitted++;
}

static void release(sp_rd *r, rd_batch *b, int s) {
    SP_ASSERT(r->nfree < r->queue_depth);
    r->free_slots[r->nfree++] = s;
    b->inflight--;
}

/* Hands chunks of the remaining requests to free slots. */
static void fill(sp_rd *r, rd_batch *b) {
    while (!b->err && r->nfree > 0) {
        while (b->next < b->n && b->pos >= b->reqs[b->next].len) {
            b->next++;
            b->pos = 0;
        }
        if (b->next >= b->n) return;
        const sp_rd_req *q = &b->reqs[b->next];
        int64_t len = q->len - b->pos;
        if (len > r->chunk_bytes_max) len = r->chunk_bytes_max;
        int s = r->free_slots[--r->nfree];
        rd_slot *sl = &r->slots[s];
        sl->off = q->offset + b->pos;
        sl->dst = (char *)q->dst + b->pos;
        sl->left = len;
        sl->req = b->next;
        sl->again = 0;
        b->pos += len;
        b->inflight++;
        prep_read(r, b, s);
    }
}

static void fail_slot(sp_rd *r, rd_batch *b, int s, int rc) {
    if (!b->err) {
        b->err = rc;
        r->failed_index = r->slots[s].req;
    }
    release(r, b, s);
}

/* One completion: user_data s, result res. */
static void complete(sp_rd *r, rd_batch *b, uint64_t user_data, int res) {
    SP_ASSERT(user_data < (uint64_t)r->queue_depth);
    int s = (int)user_data;
    rd_slot *sl = &r->slots[s];
    r->completions++;
    if (r->fake_eagain_n && r->completions % r->fake_eagain_n == 0) res = -EAGAIN;
    if (b->err) { /* the batch failed already: just collect */
        release(r, b, s);
        return;
    }
    const sp_rd_req *q = &b->reqs[sl->req];
    if (res == -EAGAIN || res == -EINTR) {
        if (++sl->again > RD_AGAIN_MAX) {
            fail_slot(r, b, s,
                      sp_fail(SP_EX_IOERR, "%s: read at offset %lld: %s %d times in a row", req_path(q),
                              (long long)sl->off, strerror(-res), sl->again));
            return;
        }
        r->st.resubmissions++;
        prep_read(r, b, s);
        return;
    }
    if (res < 0) {
        fail_slot(r, b, s,
                  sp_fail(SP_EX_IOERR, "%s: read at offset %lld: %s", req_path(q), (long long)sl->off, strerror(-res)));
        return;
    }
    if (res == 0) {
        fail_slot(r, b, s,
                  sp_fail(SP_EX_DATAERR, "%s: truncated (unexpected end of file at offset %lld)", req_path(q),
                          (long long)sl->off));
        return;
    }
    if ((uint32_t)res > sl->asked) {
        fail_slot(r, b, s,
                  sp_fail(SP_EX_SOFTWARE, "%s: io_uring read returned %d bytes, %u asked", req_path(q), res,
                          sl->asked));
        return;
    }
    sl->again = 0;
    sl->off += res;
    sl->dst += res;
    sl->left -= res;
    r->st.bytes_read += res;
    if (sl->left > 0) {
        r->st.short_reads_resumed++;
        prep_read(r, b, s);
        return;
    }
    release(r, b, s);
}

static int reap(sp_rd *r, rd_batch *b) {
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&r->ring, head, cqe) {
        complete(r, b, io_uring_cqe_get_data64(cqe), cqe->res);
        seen++;
    }
    io_uring_cq_advance(&r->ring, seen);
    return (int)seen;
}

/* io_uring_submit itself failed for good. Collects what the kernel took,
 * then tears the ring down: SQEs it never consumed cannot be withdrawn. */
static int ring_failed(sp_rd *r, rd_batch *b, int ret) {
    int rc = sp_fail(SP_EX_IOERR, "%s: io_uring_submit: %s", req_path(&b->reqs[b->next < b->n ? b->next : b->n - 1]),
                     strerror(-ret));
    if (!b->err) {
        b->err = rc;
        r->failed_index = b->next < b->n ? b->next : b->n - 1;
    }
    int in_kernel = b->inflight - (int)io_uring_sq_ready(&r->ring);
    while (in_kernel > 0) {
        struct io_uring_cqe *cqe;
        int w = io_uring_wait_cqe(&r->ring, &cqe);
        if (w == -EINTR || w == -EAGAIN) continue;
        if (w < 0) break; /* the ring is unusable; nothing more can be collected */
        io_uring_cqe_seen(&r->ring, cqe);
        in_kernel--;
    }
    io_uring_queue_exit(&r->ring);
    r->ring_live = 0;
    r->ring_broken = 1;
    return b->err;
}

static int batch_uring(sp_rd *r, const sp_rd_req *reqs, int n) {
    if (r->ring_broken) return sp_fail(SP_EX_IOERR, "io_uring: the ring failed in an earlier batch");
    rd_batch b = {.reqs = reqs, .n = n};
    int stalls = 0;
    for (;;) {
        fill(r, &b);
        if (b.inflight == 0) break;
        int ret = io_uring_submit_and_wait(&r->ring, 1);
        int seen = reap(r, &b);
        if (ret < 0 && ret != -EINTR) {
            if (ret != -EAGAIN && ret != -EBUSY) return ring_failed(r, &b, ret);
            if (seen) {
                stalls = 0;
            } else if (++stalls > RD_SUBMIT_RETRY_MAX) {
                return ring_failed(r, &b, ret);
            } else {
                struct timespec ms = {0, 1000000};
                nanosleep(&ms, NULL);
            }
        } else {
            stalls = 0;
        }
    }
    SP_ASSERT(r->nfree == r->queue_depth);
    return b.err;
}

/* ---------------- pread path ---------------- */

static int batch_pread(sp_rd *r, const sp_rd_req *reqs, int n) {
    for (int i = 0; i < n; i++) {
        const sp_rd_req *q = &reqs[i];
        if (q->len == 0) continue;
        int rc = sp_io_pread_full(q->fd, q->dst, q->len, q->offset, req_path(q));
        if (rc) {
            r->failed_index = i;
            return rc;
        }
        r->st.bytes_read += q->len;
    }
    return 0;
}

int sp_rd_read_batch(sp_rd *r, const sp_rd_req *reqs, int n) {
    r->failed_index = -1;
    r->st.batches++;
    if (n < 0 || (n > 0 && !reqs)) return sp_fail(SP_EX_SOFTWARE, "reader: bad batch (%d requests)", n);
    for (int i = 0; i < n; i++) {
        const sp_rd_req *q = &reqs[i];
        int64_t end;
        if (q->len < 0 || (q->len > 0 && (q->offset < 0 || !q->dst || sp_add_i64(q->offset, q->len, &end)))) {
            r->failed_index = i;
            return sp_fail(SP_EX_SOFTWARE, "%s: bad read request %d (offset %lld, length %lld)", req_path(q), i,
                           (long long)q->offset, (long long)q->len);
        }
    }
    double t0 = sp_now();
    int rc = r->mode == SP_RD_URING ? batch_uring(r, reqs, n) : batch_pread(r, reqs, n);
    r->st.busy_seconds += sp_now() - t0;
    if (!rc) r->st.requests += n;
    return rc;
}
