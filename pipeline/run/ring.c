/* pipeline/run/ring.c — shared-memory SPSC ring between stage processes.
 *
 * PROTOCOL
 * ========
 * The shared header (struct sp_ring_shared, ring.h) holds the shape, written
 * once by sp_ring_init before any peer exists (each process validates it once
 * and keeps local copies; it is never re-read), and two sides, each on its own
 * cache line:
 *     prod: head (counter), seq, waiting, state, pid
 *     cons: tail (counter), seq, waiting, state, pid
 * head and tail are free-running uint64 counters (2^64 slots never wrap in
 * practice); the message slot numbered c lives in slot c mod n_slots.
 *
 * Invariants
 *   I1  0 <= head - tail <= n_slots (unsigned difference).
 *   I2  Only the producer writes head, prod.{waiting,pid} and the slot
 *       head mod n while head - tail < n. Only the consumer writes tail and
 *       cons.{waiting,pid}. A side's state is written by that side, or set to
 *       ABORTED by anyone (sp_ring_abort: the supervisor reaping a stage), who
 *       then bumps both seq words: they are only wakeup hints.
 *   I3  Slots c in [tail, head) are READY: fully written, read-only, owned by
 *       the consumer. Slots c in [head, tail + n) are owned by the producer.
 *   I4  Publication: the producer writes slot c (header + payload), then
 *       store-release head = c + 1; the consumer load-acquires head before it
 *       reads slot c. Freeing: the consumer finishes with slot c, then
 *       store-release tail = c + 1; the producer load-acquires tail before it
 *       reuses the slot. No slot is ever read and written at once.
 *   I5  A side's state only moves OPEN -> CLOSED, or OPEN|CLOSED -> ABORTED,
 *       and is stored (release) after that side's last counter store. The
 *       consumer load-acquires prod.state BEFORE head: seeing CLOSED and then
 *       head == tail means every message was seen, so EOF never loses data,
 *       even when the producer has already exited.
 *   I6  Each process keeps its own counter locally (authoritative) and reads
 *       only the peer's from shared memory. Everything read from shared memory
 *       — the peer's counter, states, pids, slot headers — is untrusted input:
 *       it is copied once, bounds-checked, and a violation returns
 *       SP_EX_DATAERR. SP_ASSERT only guards this API's use by our own code
 *       (wrong role, commit without acquire, chunks out of order).
 *   I7  The memfd is sealed against resizing, so a peer cannot truncate the
 *       mapping under us (SIGBUS); init_from_fd refuses an unsealed fd.
 *
 * Slot headers carry offsets relative to the slot, never pointers. seq is the
 * counter the slot was written at (catches a stale or misplaced slot). The
 * chunks of one message must continue each other: same id, type and total,
 * chunk_index + 1, chunk_off == end of the previous chunk, FIRST/LAST flags
 * consistent with the offsets, and a new message starts only after LAST.
 *
 * State of the slot holding counter value c:
 *
 *     FREE ---acquire_write (c == head, head - tail < n)---> WRITING
 *       ^                                                       |
 *       | release_read:                          commit_write:  |
 *       | store-release tail = c + 1     store-release head = c + 1
 *       |                                                       v
 *     READING <---acquire_read (c == tail, tail < head)------ READY
 *
 * State of each side of the ring:
 *
 *            close_write                  consumer drains
 *     OPEN ---------------> CLOSED --------------------------> SP_RING_EOF
 *       |  (producer done)
 *       |  close_read: the producer's pushes return 70
 *       |
 *       +-- sp_ring_abort, sp_ring_free while OPEN, close_write inside a
 *       |   message --------> ABORTED --> the peer's calls return 70
 *       +-- the process dies (pid gone or zombie) ---> the peer's waits return 70
 *
 * Wakeups. Each side has a futex word `seq`, bumped after each of its counter
 * or state changes. A waiter (consumer waiting for data, producer for space):
 *     w = load(peer.seq); store(me.waiting, 1); fence(seq_cst);
 *     re-check; if still not ready: FUTEX_WAIT(&peer.seq, w, <= one tick)
 * The waker:
 *     store-release counter; seq += 1; fence(seq_cst);
 *     if load(peer.waiting): FUTEX_WAKE(&me.seq)
 * The fences order (store waiting; load counter) against (store counter; load
 * waiting): either the waiter sees the new counter, or the waker sees waiting
 * and wakes it; FUTEX_WAIT returns at once if seq moved after w was read. The
 * futexes are shared, not FUTEX_PRIVATE_FLAG: the words live in a MAP_SHARED
 * memfd that two processes map.
 *
 * Liveness. A wait sleeps at most RING_TICK_MS at a time and, at most once a
 * tick, checks the peer: its pid (recorded by attach, or earlier by the
 * supervisor with set_pid) gone (kill(pid, 0) == ESRCH) or a zombie
 * (/proc/<pid>/stat state Z/X: its parent may not have reaped it yet). The
 * first time the peer is seen dead the wait re-checks its condition once (the
 * peer may have published or closed between the last look and its exit; dead,
 * it changes nothing more); if the condition still does not hold, the wait
 * returns 70 "ring: peer process <pid> died". A pid of 0 (peer not
 * attached yet) cannot be checked; the supervisor calls sp_ring_abort then.
 */
#include "ring.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(sp_ring_slot_hdr) == SP_RING_SLOT_HDR_BYTES, "slot header is 64 bytes");
_Static_assert(sizeof(sp_ring_shared) <= SP_RING_HDR_BYTES, "shared header fits its page");
_Static_assert(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
               "atomics shared between processes must be lock-free");
_Static_assert(sizeof(_Atomic uint32_t) == sizeof(uint32_t), "futex words are plain 32-bit words");
_Static_assert(sizeof(uint64_t) == sizeof(unsigned long), "uint64_t atomics are ATOMIC_LONG");

#define RING_TICK_MS 100
#define RING_SLOTS_MAX (INT64_C(1) << 30)
#define RING_SLOT_BYTES_MAX (INT64_C(1) << 36)

/* Where a reader or writer is inside a multi-chunk message. */
typedef struct ring_stream {
    int in_msg;           /* 1 after a chunk that was not LAST */
    uint32_t type;
    uint64_t id;
    int64_t total_bytes;
    int64_t next_off;     /* chunk_off of the next chunk */
    uint32_t next_index;  /* chunk_index of the next chunk */
} ring_stream;

struct sp_ring {
    int fd;
    unsigned char *map;          /* (map_bytes) MAP_SHARED */
    int64_t map_bytes;
    sp_ring_shared *sh;          /* map */
    unsigned char *slots;        /* map + SP_RING_HDR_BYTES: (n_slots, slot_bytes) */
    int64_t n_slots, slot_bytes; /* validated local copies: never re-read */
    enum sp_ring_role role;
    pid_t role_pid;              /* the process that attached (a forked child inherits no role) */
    uint64_t head;               /* producer: next counter to write (authoritative) */
    uint64_t tail;               /* consumer: next counter to read (authoritative) */
    int slot_held;               /* between acquire and commit/release */
    ring_stream wr;              /* producer: the message being written */
    ring_stream rd;              /* consumer: the message being read */
    sp_ring_chunk held;          /* consumer: the validated chunk in the held slot */
    const void *push_payload;    /* producer: sp_ring_push in progress (resume after 75) */
    void *pop_buf;               /* consumer: sp_ring_pop_into in progress */
    int timeout_ms;              /* of the current call, for messages */
    double next_live_check;      /* sp_now() of the next liveness check */
    int peer_dead_seen;          /* the peer was found dead once: the condition is re-checked before failing */
};

/* ---- small helpers ---- */

static const char *role_name(enum sp_ring_role role) {
    return role == SP_RING_ROLE_PRODUCER ? "producer" : role == SP_RING_ROLE_CONSUMER ? "consumer" : "none";
}

static sp_ring_side *side_of(sp_ring *r, enum sp_ring_role role) {
    SP_ASSERT(role == SP_RING_ROLE_PRODUCER || role == SP_RING_ROLE_CONSUMER);
    return role == SP_RING_ROLE_PRODUCER ? &r->sh->prod : &r->sh->cons;
}

static void futex_wait(_Atomic uint32_t *word, uint32_t expected, double seconds) {
    if (seconds < 0) seconds = 0;
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec > 999999999L) ts.tv_nsec = 999999999L;
    long rc = syscall(SYS_futex, (void *)word, FUTEX_WAIT, expected, &ts, NULL, 0);
    if (rc != 0 && errno != EAGAIN && errno != EINTR && errno != ETIMEDOUT) {
        /* No futex (seccomp?): sleep a little rather than spin. */
        struct timespec ms = {0, 1000000L};
        nanosleep(&ms, NULL);
    }
}

static void futex_wake(_Atomic uint32_t *word, int n) {
    syscall(SYS_futex, (void *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* After a counter or state store by side `me`: bump its seq and wake the
 * peer if it sleeps (always, with force: state changes are rare). */
static void side_notify(sp_ring_side *me, const sp_ring_side *peer, int force) {
    atomic_fetch_add_explicit(&me->seq, 1, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (force || atomic_load_explicit(&peer->waiting, memory_order_relaxed))
        futex_wake(&me->seq, force ? 0x7fffffff : 1);
}

/* 1 if pid has exited (gone, or a zombie not yet reaped), 0 if it seems
 * alive or cannot be told. */
static int pid_dead(pid_t pid) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return 1;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0; /* reaped just now (kill says ESRCH next tick), or no /proc */
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* "pid (comm) S ...", comm may hold ')' */
    if (!p || p[1] != ' ') return 0;
    return p[2] == 'Z' || p[2] == 'X';
}

/* timeout_ms -> absolute sp_now() deadline: 0 forever, < 0 already passed. */
static double deadline_of(int timeout_ms) {
    if (timeout_ms == 0) return HUGE_VAL;
    if (timeout_ms < 0) return -HUGE_VAL;
    return sp_now() + 1e-3 * timeout_ms;
}

/* Checks the side states that end a wait. peer_role is the side we wait on. */
static int check_states(sp_ring *r, uint32_t my_state, uint32_t peer_state, enum sp_ring_role peer_role) {
    if (my_state > SP_RING_SIDE_ABORTED || peer_state > SP_RING_SIDE_ABORTED)
        return sp_fail(SP_EX_DATAERR, "ring: corrupt side state (%s %u, %s %u)", role_name(r->role), my_state,
                       role_name(peer_role), peer_state);
    if (my_state == SP_RING_SIDE_ABORTED)
        return sp_fail(SP_EX_SOFTWARE, "ring: the %s side of this ring was aborted", role_name(r->role));
    if (peer_state == SP_RING_SIDE_ABORTED) {
        int pid = atomic_load_explicit(&side_of(r, peer_role)->pid, memory_order_relaxed);
        return sp_fail(SP_EX_SOFTWARE, "ring: peer process %d (%s) aborted", pid, role_name(peer_role));
    }
    return 0;
}

/* One step of a wait on the peer's futex word: liveness check when due, the
 * deadline, then sleep at most one tick. 0: re-check the condition. */
static int wait_step(sp_ring *r, _Atomic uint32_t *word, uint32_t w, double deadline, enum sp_ring_role peer_role,
                     const char *what) {
    double now = sp_now();
    if (now >= r->next_live_check) {
        r->next_live_check = now + 1e-3 * RING_TICK_MS;
        int pid = atomic_load_explicit(&side_of(r, peer_role)->pid, memory_order_relaxed);
        if (pid > 0 && pid_dead((pid_t)pid)) {
            /* The peer may have published its last data or closed its side
             * after the caller last looked and before it exited: a dead peer
             * changes nothing more, so one more look at the condition decides
             * (without it a clean exit races with a false "died"). */
            if (!r->peer_dead_seen) {
                r->peer_dead_seen = 1;
                r->next_live_check = 0;
                return 0;
            }
            return sp_fail(SP_EX_SOFTWARE, "ring: peer process %d died (%s side, while waiting for %s)", pid,
                           role_name(peer_role), what);
        }
    }
    if (now >= deadline) {
        if (r->timeout_ms < 0) return sp_fail(SP_EX_TEMPFAIL, "ring: no %s ready", what);
        return sp_fail(SP_EX_TEMPFAIL, "ring: timed out after %d ms waiting for %s", r->timeout_ms, what);
    }
    double until = r->next_live_check < deadline ? r->next_live_check : deadline;
    futex_wait(word, w, until - now);
    return 0;
}

/* ---- shape, creation, mapping ---- */

int64_t sp_ring_bytes(int64_t n_slots, int64_t slot_bytes) {
    int64_t slots_bytes, total;
    if (n_slots < 1 || n_slots > RING_SLOTS_MAX) return -1;
    if (slot_bytes < 2 * SP_RING_SLOT_HDR_BYTES || slot_bytes > RING_SLOT_BYTES_MAX || slot_bytes % 64 != 0)
        return -1;
    if (sp_mul_i64(n_slots, slot_bytes, &slots_bytes) || sp_add_i64(slots_bytes, SP_RING_HDR_BYTES, &total))
        return -1;
    return total;
}

/* Wraps a validated mapping into a handle; takes fd and map. */
static int ring_wrap(sp_ring **r_out, int fd, unsigned char *map, int64_t map_bytes, int64_t n_slots,
                     int64_t slot_bytes) {
    sp_ring *r;
    int rc = sp_calloc((void **)&r, 1, sizeof *r, "ring handle");
    if (rc) {
        munmap(map, (size_t)map_bytes);
        close(fd);
        return rc;
    }
    r->fd = fd;
    r->map = map;
    r->map_bytes = map_bytes;
    r->sh = (sp_ring_shared *)map;
    r->slots = map + SP_RING_HDR_BYTES;
    r->n_slots = n_slots;
    r->slot_bytes = slot_bytes;
    *r_out = r;
    return 0;
}

int sp_ring_init(sp_ring **r_out, int64_t n_slots, int64_t slot_bytes) {
    *r_out = NULL;
    int64_t total = sp_ring_bytes(n_slots, slot_bytes);
    if (total < 0)
        return sp_fail(SP_EX_USAGE,
                       "ring: invalid shape %lld slots x %lld bytes (slots in [1, 2^30], slot bytes a multiple "
                       "of 64 in [128, 2^36])",
                       (long long)n_slots, (long long)slot_bytes);
    int fd = memfd_create("slicepipe-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return sp_fail_errno(SP_EX_SOFTWARE, "ring: memfd_create");
    if (ftruncate(fd, (off_t)total) != 0) {
        int rc = sp_fail_errno(SP_EX_SOFTWARE, "ring: sizing the memfd to %lld bytes", (long long)total);
        close(fd);
        return rc;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int rc = sp_fail_errno(SP_EX_SOFTWARE, "ring: sealing the memfd");
        close(fd);
        return rc;
    }
    void *map = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        int rc = sp_fail_errno(SP_EX_SOFTWARE, "ring: mapping %lld bytes", (long long)total);
        close(fd);
        return rc;
    }
    sp_ring_shared *sh = map; /* a fresh memfd reads as zeros: counters 0, states OPEN, pids 0 */
    sh->magic = SP_RING_MAGIC;
    sh->version = SP_RING_VERSION;
    sh->hdr_bytes = SP_RING_HDR_BYTES;
    sh->n_slots = n_slots;
    sh->slot_bytes = slot_bytes;
    atomic_thread_fence(memory_order_release);
    return ring_wrap(r_out, fd, map, total, n_slots, slot_bytes);
}

int sp_ring_init_from_fd(sp_ring **r_out, int fd_in) {
    *r_out = NULL;
    struct stat st;
    if (fstat(fd_in, &st) != 0) return sp_fail_errno(SP_EX_SOFTWARE, "ring: fd %d", fd_in);
    int seals = fcntl(fd_in, F_GET_SEALS);
    if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
        return sp_fail(SP_EX_DATAERR, "ring: fd %d is not a memfd sealed against resizing", fd_in);
    if (st.st_size < SP_RING_HDR_BYTES + 2 * SP_RING_SLOT_HDR_BYTES)
        return sp_fail(SP_EX_DATAERR, "ring: fd %d holds %lld bytes, too small for a ring", fd_in,
                       (long long)st.st_size);
    int fd = fcntl(fd_in, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return sp_fail_errno(SP_EX_SOFTWARE, "ring: dup of fd %d", fd_in);
    int64_t size = (int64_t)st.st_size;
    void *map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        int rc = sp_fail_errno(SP_EX_SOFTWARE, "ring: mapping %lld bytes of fd %d", (long long)size, fd_in);
        close(fd);
        return rc;
    }
    const volatile sp_ring_shared *vsh = map;
    uint64_t magic = vsh->magic;
    uint32_t version = vsh->version, hdr_bytes = vsh->hdr_bytes;
    int64_t n_slots = vsh->n_slots, slot_bytes = vsh->slot_bytes;
    int rc = 0;
    if (magic != SP_RING_MAGIC)
        rc = sp_fail(SP_EX_DATAERR, "ring: fd %d: bad magic 0x%016llx", fd_in, (unsigned long long)magic);
    else if (version != SP_RING_VERSION || hdr_bytes != SP_RING_HDR_BYTES)
        rc = sp_fail(SP_EX_DATAERR, "ring: fd %d: unsupported version %u (header %u bytes)", fd_in, version,
                     hdr_bytes);
    else if (sp_ring_bytes(n_slots, slot_bytes) != size)
        rc = sp_fail(SP_EX_DATAERR, "ring: fd %d: shape %lld slots x %lld bytes does not match its %lld bytes",
                     fd_in, (long long)n_slots, (long long)slot_bytes, (long long)size);
    if (rc) {
        munmap(map, (size_t)size);
        close(fd);
        return rc;
    }
    atomic_thread_fence(memory_order_acquire);
    return ring_wrap(r_out, fd, map, size, n_slots, slot_bytes);
}

void sp_ring_free(sp_ring *r) {
    if (!r) return;
    if (r->role != SP_RING_ROLE_NONE && r->role_pid == getpid()) {
        sp_ring_side *me = side_of(r, r->role);
        if (atomic_load_explicit(&me->state, memory_order_relaxed) == SP_RING_SIDE_OPEN) sp_ring_abort(r, r->role);
    }
    munmap(r->map, (size_t)r->map_bytes);
    close(r->fd);
    free(r);
}

int sp_ring_fd(const sp_ring *r) { return r->fd; }

void sp_ring_counters(const sp_ring *r, uint64_t *head, uint64_t *tail) {
    *head = atomic_load_explicit(&r->sh->prod.counter, memory_order_acquire);
    *tail = atomic_load_explicit(&r->sh->cons.counter, memory_order_acquire);
}

void sp_ring_attach(sp_ring *r, enum sp_ring_role role) {
    sp_ring_side *me = side_of(r, role);
    r->role = role;
    r->role_pid = getpid();
    r->slot_held = 0;
    memset(&r->wr, 0, sizeof r->wr);
    memset(&r->rd, 0, sizeof r->rd);
    r->push_payload = NULL;
    r->pop_buf = NULL;
    r->next_live_check = 0;
    /* Our own counter is trusted from here on; the peer checks it against I1. */
    if (role == SP_RING_ROLE_PRODUCER) r->head = atomic_load_explicit(&me->counter, memory_order_acquire);
    else r->tail = atomic_load_explicit(&me->counter, memory_order_acquire);
    atomic_store_explicit(&me->pid, (int32_t)r->role_pid, memory_order_release);
}

void sp_ring_set_pid(sp_ring *r, enum sp_ring_role role, pid_t pid) {
    atomic_store_explicit(&side_of(r, role)->pid, (int32_t)pid, memory_order_release);
}

/* Stores a side state (I5: after that side's counter stores) and wakes both. */
/* The waiter's half of the sleep protocol (see the top of the file), one
 * step: first announce (me->waiting = 1, fence) and return 0 so the caller
 * re-checks its condition; once announced, wait_step. On an error the
 * announcement is withdrawn. 0: re-check the condition. */
static int announce_or_wait(sp_ring *r, sp_ring_side *me, _Atomic uint32_t *word, uint32_t w, double deadline,
                            enum sp_ring_role peer_role, const char *what) {
    if (!atomic_load_explicit(&me->waiting, memory_order_relaxed)) {
        atomic_store_explicit(&me->waiting, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        return 0;
    }
    int rc = wait_step(r, word, w, deadline, peer_role, what);
    if (rc) atomic_store_explicit(&me->waiting, 0, memory_order_relaxed);
    return rc;
}

static void set_state(sp_ring *r, enum sp_ring_role role, uint32_t state) {
    sp_ring_side *s = side_of(r, role);
    sp_ring_side *o = side_of(r, role == SP_RING_ROLE_PRODUCER ? SP_RING_ROLE_CONSUMER : SP_RING_ROLE_PRODUCER);
    atomic_store_explicit(&s->state, state, memory_order_release);
    side_notify(s, o, 1);
    side_notify(o, s, 1);
}

void sp_ring_abort(sp_ring *r, enum sp_ring_role role) { set_state(r, role, SP_RING_SIDE_ABORTED); }

/* ---- producer ---- */

/* Waits until slot `head` is free (I1: head - tail < n). */
static int prod_wait(sp_ring *r, double deadline) {
    sp_ring_side *p = &r->sh->prod, *c = &r->sh->cons;
    uint64_t n = (uint64_t)r->n_slots;
    for (;;) {
        uint32_t w = atomic_load_explicit(&c->seq, memory_order_acquire);
        uint32_t cstate = atomic_load_explicit(&c->state, memory_order_acquire);
        uint32_t pstate = atomic_load_explicit(&p->state, memory_order_relaxed);
        int rc = check_states(r, pstate, cstate, SP_RING_ROLE_CONSUMER);
        if (!rc && pstate == SP_RING_SIDE_CLOSED)
            rc = sp_fail(SP_EX_SOFTWARE, "ring: write after the producer closed the ring");
        if (!rc && cstate == SP_RING_SIDE_CLOSED)
            rc = sp_fail(SP_EX_SOFTWARE, "ring: the consumer (pid %d) closed the ring",
                         (int)atomic_load_explicit(&c->pid, memory_order_relaxed));
        if (rc) {
            atomic_store_explicit(&p->waiting, 0, memory_order_relaxed);
            return rc;
        }
        uint64_t tail = atomic_load_explicit(&c->counter, memory_order_acquire);
        uint64_t used = r->head - tail;
        if (used > n) {
            atomic_store_explicit(&p->waiting, 0, memory_order_relaxed);
            return sp_fail(SP_EX_DATAERR, "ring: corrupt tail %llu for head %llu (%lld slots)",
                           (unsigned long long)tail, (unsigned long long)r->head, (long long)r->n_slots);
        }
        if (used < n) {
            atomic_store_explicit(&p->waiting, 0, memory_order_relaxed);
            return 0;
        }
        /* Full. Announce that we sleep, then re-check before sleeping. */
        SP_TRY(announce_or_wait(r, p, &c->seq, w, deadline, SP_RING_ROLE_CONSUMER, "a free slot"));
    }
}

static int acquire_write_until(sp_ring *r, void **data, int64_t *cap, double deadline) {
    SP_ASSERT(r->role == SP_RING_ROLE_PRODUCER);
    if (!r->slot_held) {
        SP_TRY(prod_wait(r, deadline));
        r->slot_held = 1;
    }
    unsigned char *slot = r->slots + (size_t)(r->head % (uint64_t)r->n_slots) * (size_t)r->slot_bytes;
    *data = slot + SP_RING_SLOT_HDR_BYTES;
    *cap = r->slot_bytes - SP_RING_SLOT_HDR_BYTES;
    return 0;
}

int sp_ring_acquire_write(sp_ring *r, void **data, int64_t *cap, int timeout_ms) {
    r->timeout_ms = timeout_ms;
    return acquire_write_until(r, data, cap, deadline_of(timeout_ms));
}

void sp_ring_commit_write(sp_ring *r, const sp_ring_msg *msg, int64_t len) {
    SP_ASSERT(r->role == SP_RING_ROLE_PRODUCER && r->slot_held);
    ring_stream *s = &r->wr;
    if (s->in_msg) {
        SP_ASSERT(msg->id == s->id && msg->type == s->type && msg->total_bytes == s->total_bytes);
    } else {
        SP_ASSERT(msg->total_bytes >= 0);
        s->type = msg->type;
        s->id = msg->id;
        s->total_bytes = msg->total_bytes;
        s->next_off = 0;
        s->next_index = 0;
    }
    SP_ASSERT(len >= 0 && len <= r->slot_bytes - SP_RING_SLOT_HDR_BYTES && len <= s->total_bytes - s->next_off);
    SP_ASSERT(len > 0 || s->total_bytes == 0);
    sp_ring_slot_hdr *h =
        (sp_ring_slot_hdr *)(r->slots + (size_t)(r->head % (uint64_t)r->n_slots) * (size_t)r->slot_bytes);
    h->magic = SP_RING_SLOT_MAGIC;
    h->type = s->type;
    h->id = s->id;
    h->seq = r->head;
    h->chunk_index = s->next_index;
    h->flags = (s->next_off == 0 ? SP_RING_SLOT_FIRST : 0u) |
               (s->next_off + len == s->total_bytes ? SP_RING_SLOT_LAST : 0u);
    h->total_bytes = s->total_bytes;
    h->chunk_off = s->next_off;
    h->payload_off = SP_RING_SLOT_HDR_BYTES;
    h->payload_bytes = len;
    s->next_off += len;
    s->next_index++;
    s->in_msg = s->next_off < s->total_bytes;
    r->slot_held = 0;
    r->head++;
    atomic_store_explicit(&r->sh->prod.counter, r->head, memory_order_release); /* I4 */
    side_notify(&r->sh->prod, &r->sh->cons, 0);
}

int sp_ring_push(sp_ring *r, const sp_ring_msg *msg, const void *payload, int64_t len, int timeout_ms) {
    SP_ASSERT(r->role == SP_RING_ROLE_PRODUCER && len >= 0 && (payload || len == 0));
    sp_ring_msg m = *msg;
    m.total_bytes = len;
    if (r->wr.in_msg) /* resuming after 75: the same message */
        SP_ASSERT(r->push_payload == payload && r->wr.id == m.id && r->wr.type == m.type &&
                  r->wr.total_bytes == len);
    r->push_payload = payload;
    r->timeout_ms = timeout_ms;
    double deadline = deadline_of(timeout_ms);
    do {
        void *data;
        int64_t cap;
        SP_TRY(acquire_write_until(r, &data, &cap, deadline));
        int64_t off = r->wr.in_msg ? r->wr.next_off : 0;
        int64_t n = len - off < cap ? len - off : cap;
        if (n > 0) memcpy(data, (const unsigned char *)payload + off, (size_t)n);
        sp_ring_commit_write(r, &m, n);
    } while (r->wr.in_msg);
    r->push_payload = NULL;
    return 0;
}

void sp_ring_close_write(sp_ring *r) {
    SP_ASSERT(r->role == SP_RING_ROLE_PRODUCER);
    /* A message cut short is not a clean end of stream. */
    set_state(r, SP_RING_ROLE_PRODUCER, r->wr.in_msg ? SP_RING_SIDE_ABORTED : SP_RING_SIDE_CLOSED);
}

/* ---- consumer ---- */

/* Waits until slot `tail` is READY (tail < head), or EOF. */
static int cons_wait(sp_ring *r, double deadline) {
    sp_ring_side *p = &r->sh->prod, *c = &r->sh->cons;
    uint64_t n = (uint64_t)r->n_slots;
    for (;;) {
        uint32_t w = atomic_load_explicit(&p->seq, memory_order_acquire);
        uint32_t pstate = atomic_load_explicit(&p->state, memory_order_acquire); /* I5: before head */
        uint32_t cstate = atomic_load_explicit(&c->state, memory_order_relaxed);
        uint64_t head = atomic_load_explicit(&p->counter, memory_order_acquire);
        uint64_t avail = head - r->tail;
        int rc = 0;
        if (avail > n)
            rc = sp_fail(SP_EX_DATAERR, "ring: corrupt head %llu for tail %llu (%lld slots)",
                         (unsigned long long)head, (unsigned long long)r->tail, (long long)r->n_slots);
        else if (avail > 0)
            rc = -1; /* ready */
        else if ((rc = check_states(r, cstate, pstate, SP_RING_ROLE_PRODUCER)) == 0 &&
                 pstate == SP_RING_SIDE_CLOSED)
            rc = SP_RING_EOF;
        if (rc) {
            atomic_store_explicit(&c->waiting, 0, memory_order_relaxed);
            return rc < 0 ? 0 : rc;
        }
        SP_TRY(announce_or_wait(r, c, &p->seq, w, deadline, SP_RING_ROLE_PRODUCER, "data"));
    }
}

/* Copies and validates the header of slot `tail` (I6) into r->held. */
static int read_slot(sp_ring *r) {
    int64_t idx = (int64_t)(r->tail % (uint64_t)r->n_slots);
    const unsigned char *slot = r->slots + (size_t)idx * (size_t)r->slot_bytes;
    sp_ring_slot_hdr h = *(const volatile sp_ring_slot_hdr *)slot; /* one copy: the peer may change it */
    const ring_stream *s = &r->rd;
    int64_t sb = r->slot_bytes;
    const char *bad = NULL;
    if (h.magic != SP_RING_SLOT_MAGIC) bad = "bad slot magic";
    else if (h.seq != r->tail) bad = "slot sequence number is not the tail";
    else if (h.payload_off < SP_RING_SLOT_HDR_BYTES || h.payload_off > sb) bad = "payload offset outside the slot";
    else if (h.payload_bytes < 0 || h.payload_bytes > sb - h.payload_off) bad = "payload length exceeds the slot";
    else if (h.total_bytes < 0 || h.chunk_off < 0 || h.chunk_off > h.total_bytes ||
             h.payload_bytes > h.total_bytes - h.chunk_off)
        bad = "chunk outside its message";
    else if (h.payload_bytes == 0 && h.total_bytes != 0) bad = "empty chunk";
    else if ((h.flags & ~(SP_RING_SLOT_FIRST | SP_RING_SLOT_LAST)) != 0 ||
             !(h.flags & SP_RING_SLOT_FIRST) != (h.chunk_off != 0) ||
             !(h.flags & SP_RING_SLOT_LAST) != (h.chunk_off + h.payload_bytes != h.total_bytes))
        bad = "chunk flags disagree with its offsets";
    else if (!s->in_msg && (h.chunk_off != 0 || h.chunk_index != 0)) bad = "message does not start at chunk 0";
    else if (s->in_msg && (h.id != s->id || h.type != s->type || h.total_bytes != s->total_bytes ||
                           h.chunk_index != s->next_index || h.chunk_off != s->next_off))
        bad = "chunk does not continue its message";
    if (bad)
        return sp_fail(SP_EX_DATAERR,
                       "ring: slot %lld (seq %llu): %s (magic 0x%08x seq %llu id %llu chunk %u off %lld of %lld, "
                       "payload at %lld + %lld in a %lld-byte slot)",
                       (long long)idx, (unsigned long long)r->tail, bad, h.magic, (unsigned long long)h.seq,
                       (unsigned long long)h.id, h.chunk_index, (long long)h.chunk_off, (long long)h.total_bytes,
                       (long long)h.payload_off, (long long)h.payload_bytes, (long long)sb);
    sp_ring_chunk *c = &r->held;
    c->msg.type = h.type;
    c->msg.id = h.id;
    c->msg.total_bytes = h.total_bytes;
    c->chunk_index = h.chunk_index;
    c->chunk_off = h.chunk_off;
    c->len = h.payload_bytes;
    c->data = slot + h.payload_off;
    return 0;
}

static int acquire_read_until(sp_ring *r, sp_ring_chunk *c, double deadline) {
    SP_ASSERT(r->role == SP_RING_ROLE_CONSUMER);
    if (!r->slot_held) {
        int rc = cons_wait(r, deadline);
        if (rc == SP_RING_EOF && r->rd.in_msg)
            return sp_fail(SP_EX_DATAERR, "ring: stream ended inside message id %llu (%lld of %lld bytes)",
                           (unsigned long long)r->rd.id, (long long)r->rd.next_off, (long long)r->rd.total_bytes);
        if (rc) return rc;
    }
    SP_TRY(read_slot(r)); /* again when re-acquiring a held slot: it may have been changed */
    r->slot_held = 1;
    *c = r->held;
    return 0;
}

int sp_ring_acquire_read(sp_ring *r, sp_ring_chunk *c, int timeout_ms) {
    r->timeout_ms = timeout_ms;
    return acquire_read_until(r, c, deadline_of(timeout_ms));
}

void sp_ring_release_read(sp_ring *r) {
    SP_ASSERT(r->role == SP_RING_ROLE_CONSUMER && r->slot_held);
    const sp_ring_chunk *c = &r->held;
    ring_stream *s = &r->rd;
    s->type = c->msg.type;
    s->id = c->msg.id;
    s->total_bytes = c->msg.total_bytes;
    s->next_off = c->chunk_off + c->len;
    s->next_index = c->chunk_index + 1;
    s->in_msg = s->next_off < s->total_bytes;
    r->slot_held = 0;
    r->tail++;
    atomic_store_explicit(&r->sh->cons.counter, r->tail, memory_order_release); /* I4 */
    side_notify(&r->sh->cons, &r->sh->prod, 0);
}

int sp_ring_pop_into(sp_ring *r, void *buf, int64_t cap, sp_ring_msg *msg, int timeout_ms) {
    SP_ASSERT(r->role == SP_RING_ROLE_CONSUMER && cap >= 0 && (buf || cap == 0));
    if (r->rd.in_msg) SP_ASSERT(r->pop_buf == buf); /* resuming after 75: the same buffer */
    r->timeout_ms = timeout_ms;
    double deadline = deadline_of(timeout_ms);
    for (;;) {
        sp_ring_chunk c;
        SP_TRY(acquire_read_until(r, &c, deadline));
        if (c.msg.total_bytes > cap) {
            *msg = c.msg;
            return sp_fail(SP_EX_SOFTWARE, "ring: message id %llu of %lld bytes does not fit a %lld-byte buffer",
                           (unsigned long long)c.msg.id, (long long)c.msg.total_bytes, (long long)cap);
        }
        /* read_slot checked chunk_off + len <= total_bytes <= cap */
        if (c.len > 0) memcpy((unsigned char *)buf + c.chunk_off, c.data, (size_t)c.len);
        r->pop_buf = buf;
        sp_ring_release_read(r);
        if (!r->rd.in_msg) {
            *msg = c.msg;
            return 0;
        }
    }
}

void sp_ring_close_read(sp_ring *r) {
    SP_ASSERT(r->role == SP_RING_ROLE_CONSUMER);
    set_state(r, SP_RING_ROLE_CONSUMER, SP_RING_SIDE_CLOSED);
}
