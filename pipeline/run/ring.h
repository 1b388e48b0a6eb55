/* pipeline/run/ring.h — shared-memory single-producer single-consumer ring buffer
 * between stage PROCESSES (docs/pipeline.md §3).
 *
 * The ring lives in a sealed memfd (a header page, then n_slots fixed-size
 * slots) mapped MAP_SHARED. A handle made by sp_ring_init before fork() is
 * inherited with its mapping; another process can map the fd with
 * sp_ring_init_from_fd. Each process that uses the ring calls sp_ring_attach
 * with its role (exactly one producer and one consumer at a time).
 *
 * Messages: (type, id, payload of total_bytes). A payload larger than a slot
 * streams through consecutive slots as chunks; the consumer reassembles them
 * (sp_ring_pop_into) or reads them chunk by chunk in place
 * (sp_ring_acquire_read / sp_ring_release_read). A producer can fill a slot in
 * place (sp_ring_acquire_write / sp_ring_commit_write), e.g. for io_uring.
 *
 * Status of every waiting call (sysexits, message via sp_errmsg()):
 *   0                ok
 *   SP_RING_EOF (1)  consumer: the producer closed the stream and the ring is
 *                    drained (returned again on every later call)
 *   SP_EX_TEMPFAIL   timeout_ms elapsed (or nothing ready with SP_RING_NOWAIT)
 *   SP_EX_SOFTWARE   the peer process died ("ring: peer process <pid> died"),
 *                    aborted, or (producer) the consumer has gone
 *   SP_EX_DATAERR    a value in shared memory is out of bounds (corrupt peer)
 * timeout_ms: 0 waits forever (a dead peer is still noticed within ~0.2 s),
 * > 0 is an overall limit for the call, SP_RING_NOWAIT (-1) never sleeps.
 *
 * The protocol, its invariants and state diagrams are at the top of ring.c.
 * Nothing here allocates after sp_ring_init / sp_ring_init_from_fd.
 */
#ifndef SP_RING_H
#define SP_RING_H

#include <stdint.h>
#include <sys/types.h>

enum sp_ring_role {
    SP_RING_ROLE_NONE = 0,
    SP_RING_ROLE_PRODUCER = 1,
    SP_RING_ROLE_CONSUMER = 2,
};

enum {
    SP_RING_EOF = 1,     /* status: closed and drained */
    SP_RING_NOWAIT = -1, /* timeout_ms: do not sleep */
};

typedef struct sp_ring sp_ring; /* opaque, one per process */

/* A whole message. */
typedef struct sp_ring_msg {
    uint32_t type;       /* caller-defined message type */
    uint64_t id;         /* tensor / message id */
    int64_t total_bytes; /* payload length of the whole message */
} sp_ring_msg;

/* One chunk of a message: the payload bytes [chunk_off, chunk_off + len). */
typedef struct sp_ring_chunk {
    sp_ring_msg msg;
    uint32_t chunk_index; /* 0, 1, ... within the message */
    int64_t chunk_off;    /* offset of these bytes in the message */
    int64_t len;          /* payload bytes in this slot */
    const void *data;     /* acquire_read: into the slot, valid until release_read */
} sp_ring_chunk;

/* Bytes of shared memory a ring of this shape needs (for the memory plan);
 * -1 if the shape is invalid or overflows. slot_bytes is the whole slot,
 * its 64-byte header included: a multiple of 64, at least 128. */
int64_t sp_ring_bytes(int64_t n_slots, int64_t slot_bytes);

/* Creates the memfd (sealed against resizing), sizes and maps it.
 * n_slots in [1, 2^30]. Bad shape: 64; syscall failure: 70. */
int sp_ring_init(sp_ring **r_out, int64_t n_slots, int64_t slot_bytes);
/* Maps a ring created elsewhere (fd is dup'ed; the caller keeps its own).
 * The header is validated as untrusted: 65 if it is not a sealed ring of a
 * consistent shape. */
int sp_ring_init_from_fd(sp_ring **r_out, int fd);
/* Unmaps and closes. If this process attached a role and has not closed it,
 * marks that side aborted so the peer does not wait forever. NULL is ok. */
void sp_ring_free(sp_ring *r);

/* The memfd (owned by the ring; e.g. to pass to another process). */
int sp_ring_fd(const sp_ring *r);
/* Snapshot of the shared counters (for progress reports and tests). */
void sp_ring_counters(const sp_ring *r, uint64_t *head, uint64_t *tail);

/* Takes a role in this process: records getpid() as that side's pid. */
void sp_ring_attach(sp_ring *r, enum sp_ring_role role);
/* Records the pid of a side in advance (the supervisor, right after fork),
 * so that a stage that dies before attaching is still noticed. */
void sp_ring_set_pid(sp_ring *r, enum sp_ring_role role, pid_t pid);
/* Marks a side aborted and wakes both; the peer's waits return 70. Used by a
 * stage that fails, or by the supervisor when it reaps a stage. */
void sp_ring_abort(sp_ring *r, enum sp_ring_role role);

/* ---- producer ---- */

/* Copies one message (len bytes, len >= 0) into the ring, in as many chunks as
 * it needs. On 75 after part of the message went out, calling again with the
 * same arguments continues where it stopped. */
int sp_ring_push(sp_ring *r, const sp_ring_msg *msg, const void *payload, int64_t len, int timeout_ms);
/* Zero-copy: waits for a free slot and returns its payload area (cap bytes). */
int sp_ring_acquire_write(sp_ring *r, void **data, int64_t *cap, int timeout_ms);
/* Publishes the acquired slot holding the next len bytes (len <= cap) of the
 * message msg (msg->total_bytes is the whole length). A message's chunks are
 * committed in order; the ring tracks chunk_index and chunk_off itself. len
 * is > 0 unless msg->total_bytes == 0. */
void sp_ring_commit_write(sp_ring *r, const sp_ring_msg *msg, int64_t len);
/* End of stream: the consumer gets SP_RING_EOF once it has drained the ring.
 * Called with a message cut short (a push that returned 75 or 70 part-way),
 * it aborts the producer side instead: the consumer gets 70, never EOF. */
void sp_ring_close_write(sp_ring *r);

/* ---- consumer ---- */

/* Reassembles the next whole message into buf (cap bytes) and fills *msg.
 * A message larger than cap: 70 with *msg filled in and nothing consumed.
 * On 75 part-way, call again with the same buf to continue. */
int sp_ring_pop_into(sp_ring *r, void *buf, int64_t cap, sp_ring_msg *msg, int timeout_ms);
/* Zero-copy: the next chunk, validated, in place. */
int sp_ring_acquire_read(sp_ring *r, sp_ring_chunk *c, int timeout_ms);
/* Frees the slot of the chunk from acquire_read. */
void sp_ring_release_read(sp_ring *r);
/* The consumer will read no more: the producer's next push returns 70. */
void sp_ring_close_read(sp_ring *r);

/* ---- shared layout (wire format; tests and debugging tools read it) ----
 * offset 0: struct sp_ring_shared, padded to SP_RING_HDR_BYTES.
 * offset SP_RING_HDR_BYTES + i * slot_bytes: slot i = struct sp_ring_slot_hdr
 * followed by its payload area. Every field is untrusted on read. */
enum {
    SP_RING_HDR_BYTES = 4096,
    SP_RING_SLOT_HDR_BYTES = 64,
};
#define SP_RING_MAGIC UINT64_C(0x31474e4952505300) /* "\0SPRING1" */
#define SP_RING_SLOT_MAGIC UINT32_C(0x4c535053)     /* "SPSL" */
#define SP_RING_VERSION 1u

enum sp_ring_side_state {
    SP_RING_SIDE_OPEN = 0,
    SP_RING_SIDE_CLOSED = 1,  /* producer: end of stream; consumer: reads no more */
    SP_RING_SIDE_ABORTED = 2, /* failed or freed without closing */
};

enum sp_ring_slot_flags {
    SP_RING_SLOT_FIRST = 1u, /* chunk_off == 0 */
    SP_RING_SLOT_LAST = 2u,  /* chunk_off + payload_bytes == total_bytes */
};

typedef struct sp_ring_slot_hdr {
    uint32_t magic;         /* SP_RING_SLOT_MAGIC */
    uint32_t type;          /* message type */
    uint64_t id;            /* message id */
    uint64_t seq;           /* the head counter value this slot was written at */
    uint32_t chunk_index;   /* within the message */
    uint32_t flags;         /* sp_ring_slot_flags */
    int64_t total_bytes;    /* whole message */
    int64_t chunk_off;      /* this chunk's offset in the message */
    int64_t payload_off;    /* from the start of the SLOT, >= 64 */
    int64_t payload_bytes;  /* <= slot_bytes - payload_off */
} sp_ring_slot_hdr;         /* (64 bytes) */

/* One side's words, on its own cache line. */
typedef struct sp_ring_side {
    _Alignas(64) _Atomic uint64_t counter; /* producer: head; consumer: tail (free-running) */
    _Atomic uint32_t seq;                  /* futex word: bumped on every counter/state change */
    _Atomic uint32_t waiting;              /* 1 while this side sleeps on the PEER's seq */
    _Atomic uint32_t state;                /* sp_ring_side_state */
    _Atomic int32_t pid;                   /* 0 until known */
} sp_ring_side;

typedef struct sp_ring_shared {
    uint64_t magic;      /* SP_RING_MAGIC */
    uint32_t version;    /* SP_RING_VERSION */
    uint32_t hdr_bytes;  /* SP_RING_HDR_BYTES */
    int64_t n_slots;     /* [1, 2^30] */
    int64_t slot_bytes;  /* multiple of 64, >= 128 */
    sp_ring_side prod;
    sp_ring_side cons;
} sp_ring_shared;

#endif
