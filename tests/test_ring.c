/* tests/test_ring.c — the shared-memory SPSC ring (pipeline/run/ring.c) between
 * real processes (fork): ordering and byte integrity of 10,000 messages of
 * varied sizes (chunked ones included, copy and zero-copy paths on both
 * sides, XXH3 over the stream), a full ring that blocks the producer without
 * overwriting, a peer killed with SIGKILL on either side (and one that aborts,
 * or dies before attaching), EOF after draining, corrupt shared values
 * written through a separate mapping of the memfd, timeouts, and resuming a
 * push/pop after a timeout part-way through a message.
 *
 * Usage: test_ring */
#include "error.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "test_util.h"

/* In a child: report and exit non-zero. */
#define CHILD_CHECK(c, ...)                                                          \
    do {                                                                             \
        if (!(c)) {                                                                  \
            fprintf(stderr, "FAIL (child) %s:%d: %s: ", __FILE__, __LINE__, #c);     \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, " [%s]\n", sp_errmsg());                                 \
            _exit(3);                                                                \
        }                                                                            \
    } while (0)

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* The payload of message i: n bytes from a PRNG seeded with i. */
static void fill(unsigned char *buf, int64_t n, uint64_t i) {
    uint64_t s = i * 7919 + 17;
    for (int64_t k = 0; k < n; k += 8) {
        uint64_t v = splitmix(&s);
        int64_t m = n - k < 8 ? n - k : 8;
        memcpy(buf + k, &v, (size_t)m);
    }
}

/* First index where buf differs from fill(i), or -1. */
static int64_t mismatch(const unsigned char *buf, int64_t n, uint64_t i) {
    static unsigned char want[1 << 16];
    if (n > (int64_t)sizeof want) return 0;
    fill(want, n, i);
    for (int64_t k = 0; k < n; k++)
        if (buf[k] != want[k]) return k;
    return -1;
}

#define SLOT_BYTES 4096
#define PAYLOAD_MAX (SLOT_BYTES - 64)
#define N_MSGS 10000

/* Size of message i: empty, small, about a slot, or 1-6 slots (chunked). */
static int64_t msg_size(uint64_t i) {
    uint64_t s = i ^ UINT64_C(0x5151);
    uint64_t v = splitmix(&s);
    switch (v % 10) {
    case 0: return (int64_t)(v >> 32) % 3 == 0 ? 0 : (int64_t)((v >> 32) % 64);
    case 1:
    case 2: return PAYLOAD_MAX - 1 + (int64_t)((v >> 32) % 3); /* one slot boundary */
    case 3:
    case 4:
    case 5: return (int64_t)((v >> 32) % PAYLOAD_MAX);
    default: return 1 + (int64_t)((v >> 32) % (6 * PAYLOAD_MAX));
    }
}

static double now_s(void) { return sp_now(); }

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int wait_exit(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return -1;
}

/* ---- 1. 10,000 messages, every byte and the order ---- */

static void integrity_producer(sp_ring *inherited) {
    /* This child maps the ring from its fd rather than using the inherited handle. */
    sp_ring *r;
    CHILD_CHECK(sp_ring_init_from_fd(&r, sp_ring_fd(inherited)) == 0, "init_from_fd");
    sp_ring_attach(r, SP_RING_ROLE_PRODUCER);
    static unsigned char buf[8 * SLOT_BYTES];
    uint64_t hash = 0;
    for (uint64_t i = 0; i < N_MSGS; i++) {
        int64_t n = msg_size(i);
        fill(buf, n, i);
        hash = XXH3_64bits_withSeed(buf, (size_t)n, hash);
        sp_ring_msg m = {.type = (uint32_t)(i % 7), .id = i * 3 + 1, .total_bytes = n};
        if (i % 3 == 2) { /* zero-copy, in uneven chunks */
            int64_t off = 0;
            uint64_t s = i;
            do {
                void *data;
                int64_t cap;
                CHILD_CHECK(sp_ring_acquire_write(r, &data, &cap, 5000) == 0, "acquire_write %llu", (unsigned long long)i);
                CHILD_CHECK(cap == PAYLOAD_MAX, "cap %lld", (long long)cap);
                int64_t k = n - off < cap ? n - off : cap;
                if (k > 1 && splitmix(&s) % 2) k = 1 + (int64_t)(splitmix(&s) % (uint64_t)k);
                memcpy(data, buf + off, (size_t)k);
                sp_ring_commit_write(r, &m, k);
                off += k;
            } while (off < n);
        } else {
            CHILD_CHECK(sp_ring_push(r, &m, buf, n, 5000) == 0, "push %llu", (unsigned long long)i);
        }
    }
    sp_ring_msg fin = {.type = 99, .id = 0};
    CHILD_CHECK(sp_ring_push(r, &fin, &hash, sizeof hash, 5000) == 0, "push final");
    sp_ring_close_write(r);
    sp_ring_free(r);
    _exit(0);
}

static void test_integrity(void) {
    sp_ring *r;
    CHECK(sp_ring_init(&r, 8, SLOT_BYTES) == 0, "%s", sp_errmsg());
    pid_t pid = fork();
    if (pid == 0) integrity_producer(r);
    sp_ring_set_pid(r, SP_RING_ROLE_PRODUCER, pid);
    sp_ring_attach(r, SP_RING_ROLE_CONSUMER);
    static unsigned char buf[1 << 16];
    uint64_t hash = 0;
    int64_t chunked = 0, bytes = 0, bad = 0;
    double t0 = now_s();
    for (uint64_t i = 0; i < N_MSGS && !bad; i++) {
        int64_t n = msg_size(i);
        sp_ring_msg m = {0};
        int rc;
        if (i % 2 == 0) {
            rc = sp_ring_pop_into(r, buf, sizeof buf, &m, 5000);
        } else { /* zero-copy reassembly */
            sp_ring_chunk c;
            int64_t got = 0;
            uint32_t idx = 0;
            do {
                rc = sp_ring_acquire_read(r, &c, 5000);
                if (rc) break;
                if (c.chunk_index != idx || c.chunk_off != got || c.len > PAYLOAD_MAX) {
                    CHECK(0, "message %llu: chunk %u at %lld (want %u at %lld)", (unsigned long long)i, c.chunk_index,
                          (long long)c.chunk_off, idx, (long long)got);
                    bad = 1;
                    break;
                }
                memcpy(buf + got, c.data, (size_t)c.len);
                got += c.len;
                idx++;
                m = c.msg;
                sp_ring_release_read(r);
            } while (got < c.msg.total_bytes);
        }
        if (rc || bad) {
            CHECK(0, "message %llu: rc %d: %s", (unsigned long long)i, rc, sp_errmsg());
            bad = 1;
            break;
        }
        if (n > PAYLOAD_MAX) chunked++;
        bytes += n;
        int64_t at = mismatch(buf, n, i);
        if (m.type != i % 7 || m.id != i * 3 + 1 || m.total_bytes != n || at >= 0) {
            CHECK(0, "message %llu: type %u id %llu len %lld (want %u %llu %lld), first bad byte %lld",
                  (unsigned long long)i, m.type, (unsigned long long)m.id, (long long)m.total_bytes,
                  (unsigned)(i % 7), (unsigned long long)(i * 3 + 1), (long long)n, (long long)at);
            bad = 1;
        }
        hash = XXH3_64bits_withSeed(buf, (size_t)n, hash);
    }
    if (!bad) {
        sp_ring_msg m;
        uint64_t theirs = 0;
        int rc = sp_ring_pop_into(r, &theirs, sizeof theirs, &m, 5000);
        CHECK(rc == 0 && m.type == 99 && m.total_bytes == 8, "final: rc %d type %u: %s", rc, m.type, sp_errmsg());
        CHECK(theirs == hash, "XXH3 of the stream: producer %016llx consumer %016llx", (unsigned long long)theirs,
              (unsigned long long)hash);
        CHECK(sp_ring_pop_into(r, buf, sizeof buf, &m, 5000) == SP_RING_EOF, "EOF: %s", sp_errmsg());
    }
    CHECK(chunked > 1000, "only %lld chunked messages", (long long)chunked);
    if (bad) kill(pid, SIGKILL);
    CHECK(wait_exit(pid) == 0, "producer child failed");
    printf("integrity: %d messages, %lld chunked, %.1f MB in %.2f s\n", N_MSGS, (long long)chunked, bytes / 1e6,
           now_s() - t0);
    sp_ring_free(r);
}

/* ---- 2. a full ring blocks the producer and overwrites nothing ---- */

#define FULL_SLOTS 4
#define FULL_MSGS 40

static void test_full(void) {
    sp_ring *r;
    CHECK(sp_ring_init(&r, FULL_SLOTS, 256) == 0, "%s", sp_errmsg());
    pid_t pid = fork();
    if (pid == 0) { /* consumer: sleeps, then drains and checks every message */
        sp_ring_attach(r, SP_RING_ROLE_CONSUMER);
        sleep_ms(500);
        unsigned char buf[512];
        for (uint64_t i = 0; i < FULL_MSGS; i++) {
            sp_ring_msg m;
            CHILD_CHECK(sp_ring_pop_into(r, buf, sizeof buf, &m, 5000) == 0, "pop %llu", (unsigned long long)i);
            CHILD_CHECK(m.id == i && m.total_bytes == 150 && mismatch(buf, 150, i) < 0, "message %llu is id %llu",
                        (unsigned long long)i, (unsigned long long)m.id);
            if (i < 8) sleep_ms(20);
        }
        sp_ring_msg m;
        CHILD_CHECK(sp_ring_pop_into(r, buf, sizeof buf, &m, 5000) == SP_RING_EOF, "EOF");
        _exit(0);
    }
    sp_ring_set_pid(r, SP_RING_ROLE_CONSUMER, pid);
    sp_ring_attach(r, SP_RING_ROLE_PRODUCER);
    unsigned char buf[150];
    uint64_t i = 0;
    for (; i < FULL_SLOTS; i++) {
        fill(buf, 150, i);
        sp_ring_msg m = {.type = 1, .id = i};
        CHECK(sp_ring_push(r, &m, buf, 150, SP_RING_NOWAIT) == 0, "push %llu into a free slot: %s",
              (unsigned long long)i, sp_errmsg());
    }
    /* Full: a non-waiting push refuses, and nothing moved. */
    fill(buf, 150, i);
    sp_ring_msg m = {.type = 1, .id = i};
    uint64_t head, tail;
    int rc = sp_ring_push(r, &m, buf, 150, SP_RING_NOWAIT);
    sp_ring_counters(r, &head, &tail);
    CHECK(rc == SP_EX_TEMPFAIL, "push into a full ring: %d", rc);
    CHECK(head == FULL_SLOTS && tail == 0, "head %llu tail %llu", (unsigned long long)head, (unsigned long long)tail);
    /* The slots still hold messages 0..3 (seen through a separate mapping). */
    unsigned char *raw = mmap(NULL, (size_t)sp_ring_bytes(FULL_SLOTS, 256), PROT_READ, MAP_SHARED, sp_ring_fd(r), 0);
    CHECK(raw != MAP_FAILED, "mmap");
    for (int k = 0; raw != MAP_FAILED && k < FULL_SLOTS; k++) {
        const sp_ring_slot_hdr *h = (const sp_ring_slot_hdr *)(raw + SP_RING_HDR_BYTES + k * 256);
        CHECK(h->seq == (uint64_t)k && h->id == (uint64_t)k && mismatch(raw + SP_RING_HDR_BYTES + k * 256 + 64, 150, k) < 0,
              "slot %d overwritten: seq %llu id %llu", k, (unsigned long long)h->seq, (unsigned long long)h->id);
    }
    /* A waiting push blocks until the consumer wakes up and drains. */
    double t0 = now_s();
    rc = sp_ring_push(r, &m, buf, 150, 5000);
    double blocked = now_s() - t0;
    CHECK(rc == 0, "blocking push: %d: %s", rc, sp_errmsg());
    CHECK(blocked > 0.2 && blocked < 3.0, "the push into the full ring returned after %.3f s", blocked);
    for (i++; i < FULL_MSGS; i++) {
        fill(buf, 150, i);
        m.id = i;
        rc = sp_ring_push(r, &m, buf, 150, 5000);
        CHECK(rc == 0, "push %llu: %s", (unsigned long long)i, sp_errmsg());
        sp_ring_counters(r, &head, &tail);
        CHECK(head - tail <= FULL_SLOTS, "head %llu tail %llu", (unsigned long long)head, (unsigned long long)tail);
    }
    sp_ring_close_write(r);
    CHECK(wait_exit(pid) == 0, "consumer child saw a wrong message");
    printf("full ring: producer blocked %.3f s, consumer saw all %d messages in order\n", blocked, FULL_MSGS);
    if (raw != MAP_FAILED) munmap(raw, (size_t)sp_ring_bytes(FULL_SLOTS, 256));
    sp_ring_free(r);
}

/* ---- 2b. wakeups: a ping-pong over two rings ----
 * Every round trip sleeps on a futex on both sides. A lost wakeup costs a
 * whole liveness tick (100 ms), so 500 round trips would take far longer. */

#define PINGS 500

static void test_pingpong(void) {
    sp_ring *req, *rep;
    CHECK(sp_ring_init(&req, 2, 128) == 0 && sp_ring_init(&rep, 2, 128) == 0, "%s", sp_errmsg());
    pid_t pid = fork();
    if (pid == 0) { /* echo server */
        sp_ring_attach(req, SP_RING_ROLE_CONSUMER);
        sp_ring_attach(rep, SP_RING_ROLE_PRODUCER);
        for (;;) {
            uint64_t v;
            sp_ring_msg m;
            int rc = sp_ring_pop_into(req, &v, sizeof v, &m, 5000);
            if (rc == SP_RING_EOF) break;
            CHILD_CHECK(rc == 0, "echo pop");
            v += 1;
            CHILD_CHECK(sp_ring_push(rep, &m, &v, sizeof v, 5000) == 0, "echo push");
        }
        sp_ring_close_write(rep);
        _exit(0);
    }
    sp_ring_attach(req, SP_RING_ROLE_PRODUCER);
    sp_ring_attach(rep, SP_RING_ROLE_CONSUMER);
    double t0 = now_s();
    int ok = 1;
    for (uint64_t i = 0; i < PINGS && ok; i++) {
        sp_ring_msg m = {.type = 6, .id = i}, got;
        uint64_t v = i * 10, w = 0;
        ok = sp_ring_push(req, &m, &v, sizeof v, 5000) == 0 && sp_ring_pop_into(rep, &w, sizeof w, &got, 5000) == 0 &&
             got.id == i && w == v + 1;
        CHECK(ok, "round trip %llu: %s", (unsigned long long)i, sp_errmsg());
    }
    double dt = now_s() - t0;
    sp_ring_close_write(req);
    sp_ring_msg m;
    uint64_t w;
    CHECK(sp_ring_pop_into(rep, &w, sizeof w, &m, 5000) == SP_RING_EOF, "reply EOF: %s", sp_errmsg());
    CHECK(wait_exit(pid) == 0, "echo child");
    CHECK(dt < 3.0, "%d round trips took %.3f s: lost wakeups?", PINGS, dt);
    printf("ping-pong: %d round trips in %.3f s (%.1f us each)\n", PINGS, dt, 1e6 * dt / PINGS);
    sp_ring_free(req);
    sp_ring_free(rep);
}

/* ---- 3. a peer that dies ---- */

static void test_producer_killed(void) {
    sp_ring *r;
    CHECK(sp_ring_init(&r, 4, 1024) == 0, "%s", sp_errmsg());
    pid_t pid = fork();
    if (pid == 0) {
        sp_ring_attach(r, SP_RING_ROLE_PRODUCER);
        static unsigned char buf[3000];
        for (uint64_t i = 0;; i++) { /* messages of 3 chunks, forever */
            fill(buf, sizeof buf, i);
            sp_ring_msg m = {.type = 2, .id = i};
            CHILD_CHECK(sp_ring_push(r, &m, buf, sizeof buf, 0) == 0, "push");
        }
    }
    sp_ring_set_pid(r, SP_RING_ROLE_PRODUCER, pid);
    sp_ring_attach(r, SP_RING_ROLE_CONSUMER);
    static unsigned char buf[4096];
    for (uint64_t i = 0; i < 20; i++) {
        sp_ring_msg m;
        int rc = sp_ring_pop_into(r, buf, sizeof buf, &m, 5000);
        CHECK(rc == 0 && m.id == i && m.total_bytes == 3000 && mismatch(buf, 3000, i) < 0, "message %llu: rc %d: %s",
              (unsigned long long)i, rc, sp_errmsg());
    }
    kill(pid, SIGKILL); /* mid-stream; not reaped: a zombie while we wait */
    double t0 = now_s();
    int rc, n = 0;
    sp_ring_msg m;
    while ((rc = sp_ring_pop_into(r, buf, sizeof buf, &m, 5000)) == 0) n++; /* drains what was left */
    double dt = now_s() - t0;
    char want[64];
    snprintf(want, sizeof want, "ring: peer process %d died", (int)pid);
    CHECK(rc == SP_EX_SOFTWARE, "rc %d: %s", rc, sp_errmsg());
    CHECK(strstr(sp_errmsg(), want), "message '%s'", sp_errmsg());
    CHECK(dt < 3.0, "death noticed after %.3f s", dt);
    CHECK(n <= 4, "%d messages after the kill from a 4-slot ring", n);
    CHECK(wait_exit(pid) == 128 + SIGKILL, "child status");
    printf("producer SIGKILLed: consumer got 70 after %.3f s (%s)\n", dt, sp_errmsg());
    sp_ring_free(r);
}

static void test_consumer_killed(void) {
    sp_ring *r;
    CHECK(sp_ring_init(&r, 4, 256) == 0, "%s", sp_errmsg());
    pid_t pid = fork();
    if (pid == 0) {
        sp_ring_attach(r, SP_RING_ROLE_CONSUMER);
        unsigned char buf[256];
        sp_ring_msg m;
        for (int i = 0; i < 2; i++) CHILD_CHECK(sp_ring_pop_into(r, buf, sizeof buf, &m, 5000) == 0, "pop");
        sleep_ms(300);
        raise(SIGKILL);
        _exit(4);
    }
    sp_ring_set_pid(r, SP_RING_ROLE_CONSUMER, pid);
    sp_ring_attach(r, SP_RING_ROLE_PRODUCER);
    unsigned char buf[100] = {0};
    int rc = 0, pushed = 0;
    double t0 = 0, dt = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        sp_ring_msg m = {.type = 3, .id = i};
        t0 = now_s();
        rc = sp_ring_push(r, &m, buf, sizeof buf, 0);
        dt = now_s() - t0;
        if (rc) break;
        pushed++;
    }
    CHECK(rc == SP_EX_SOFTWARE, "rc %d: %s", rc, sp_errmsg());
    char want[64];
    snprintf(want, sizeof want, "ring: peer process %d died", (int)pid);
    CHECK(strstr(sp_errmsg(), want), "message '%s'", sp_errmsg());
    CHECK(pushed == 6, "pushed %d (2 popped + 4 slots)", pushed);
    CHECK(dt > 0.1 && dt < 3.0, "the blocked push returned after %.3f s", dt);
    CHECK(wait_exit(pid) == 128 + SIGKILL, "child status");
    printf("consumer SIGKILLed: blocked producer got 70 after %.3f s\n", dt);
    sp_ring_free(r);
}

static void test_abort_and_unattached(void) {
    /* A live producer that aborts: the consumer gets 70 at once. */
    sp_ring *r;
    CHECK(sp_ring_init(&r, 4, 256) == 0, "%s", sp_errmsg());
    pid_t pid = fork();
    if (pid == 0) {
        sp_ring_attach(r, SP_RING_ROLE_PRODUCER);
        sp_ring_msg m = {.type = 1, .id = 7};
        CHILD_CHECK(sp_ring_push(r, &m, "abc", 3, 5000) == 0, "push");
        sp_ring_abort(r, SP_RING_ROLE_PRODUCER);
        sleep_ms(5000);
        _exit(0);
    }
    sp_ring_attach(r, SP_RING_ROLE_CONSUMER);
    char buf[16];
    sp_ring_msg m;
    CHECK(sp_ring_pop_into(r, buf, sizeof buf, &m, 5000) == 0 && m.id == 7 && memcmp(buf, "abc", 3) == 0, "%s",
          sp_errmsg());
    double t0 = now_s();
    int rc = sp_ring_pop_into(r, buf, sizeof buf, &m, 5000);
    double dt = now_s() - t0;
    CHECK(rc == SP_EX_SOFTWARE && strstr(sp_errmsg(), "aborted"), "rc %d: %s", rc, sp_errmsg());
    CHECK(dt < 1.0, "abort noticed after %.3f s", dt);
    kill(pid, SIGKILL);
    wait_exit(pid);
    sp_ring_free(r);

    /* A stage that dies before it attaches: the pid the supervisor recorded. */
    CHECK(sp_ring_init(&r, 4, 256) == 0, "%s", sp_errmsg());
    pid = fork();
    if (pid == 0) _exit(0);
    sp_ring_set_pid(r, SP_RING_ROLE_PRODUCER, pid);
    sp_ring_attach(r, SP_RING_ROLE_CONSUMER);
    t0 = now_s();
    rc = sp_ring_pop_into(r, buf, sizeof buf, &m, 5000);
    dt = now_s() - t0;
    CHECK(rc == SP_EX_SOFTWARE && strstr(sp_errmsg(), "died"), "rc %d: %s", rc, sp_errmsg());
    CHECK(dt < 1.0, "death noticed after %.3f s", dt);
    wait_exit(pid);
    sp_ring_free(r);
}

/* ---- 4. EOF ---- */

static void test_eof(void) {
    sp_ring *r;
    CHECK(sp_ring_init(&r, 8, 256) == 0, "%s", sp_errmsg());
    pid_t pid = fork();
    if (pid == 0) {
        sp_ring_attach(r, SP_RING_ROLE_PRODUCER);
        static unsigned char buf[600];
        for (uint64_t i = 0; i < 5; i++) {
            int64_t n = i == 2 ? 600 : (int64_t)i * 10; /* message 2: 4 chunks; message 0: empty */
            fill(buf, n, i);
            sp_ring_msg m = {.type = 5, .id = i};
            CHILD_CHECK(sp_ring_push(r, &m, buf, n, 5000) == 0, "push");
        }
        sp_ring_close_write(r);
        _exit(0);
    }
    sp_ring_set_pid(r, SP_RING_ROLE_PRODUCER, pid);
    sp_ring_attach(r, SP_RING_ROLE_CONSUMER);
    sleep_ms(200); /* the producer has exited (a zombie): closed + dead must still drain, then EOF */
    unsigned char buf[1024];
    sp_ring_msg m;
    for (uint64_t i = 0; i < 5; i++) {
        int64_t n = i == 2 ? 600 : (int64_t)i * 10;
        int rc = sp_ring_pop_into(r, buf, sizeof buf, &m, 5000);
        CHECK(rc == 0 && m.id == i && m.total_bytes == n && mismatch(buf, n, i) < 0, "message %llu: rc %d: %s",
              (unsigned long long)i, rc, sp_errmsg());
    }
    CHECK(sp_ring_pop_into(r, buf, sizeof buf, &m, 5000) == SP_RING_EOF, "EOF: %s", sp_errmsg());
    sp_ring_chunk c;
    CHECK(sp_ring_acquire_read(r, &c, SP_RING_NOWAIT) == SP_RING_EOF, "EOF again: %s", sp_errmsg());
    CHECK(wait_exit(pid) == 0, "producer child");
    sp_ring_free(r);
}

/* ---- in-process pairs for the corruption, timeout and resume tests ---- */

typedef struct pair {
    sp_ring *p, *c; /* producer handle, consumer handle (from the fd) */
    unsigned char *raw; /* a third, independent mapping of the memfd */
    int64_t bytes, slot_bytes;
} pair;

static void pair_init(pair *x, int64_t n_slots, int64_t slot_bytes) {
    memset(x, 0, sizeof *x);
    if (sp_ring_init(&x->p, n_slots, slot_bytes) || sp_ring_init_from_fd(&x->c, sp_ring_fd(x->p))) {
        fprintf(stderr, "pair_init: %s\n", sp_errmsg());
        exit(2);
    }
    sp_ring_attach(x->p, SP_RING_ROLE_PRODUCER);
    sp_ring_attach(x->c, SP_RING_ROLE_CONSUMER);
    x->bytes = sp_ring_bytes(n_slots, slot_bytes);
    x->slot_bytes = slot_bytes;
    x->raw = mmap(NULL, (size_t)x->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, sp_ring_fd(x->p), 0);
    if (x->raw == MAP_FAILED) exit(2);
}

static void pair_free(pair *x) {
    munmap(x->raw, (size_t)x->bytes);
    sp_ring_free(x->p);
    sp_ring_free(x->c);
}

static sp_ring_slot_hdr *slot_hdr(pair *x, int k) {
    return (sp_ring_slot_hdr *)(x->raw + SP_RING_HDR_BYTES + k * x->slot_bytes);
}

static sp_ring_shared *shared(pair *x) { return (sp_ring_shared *)x->raw; }

enum { F_OFF, F_LEN, F_NEG_LEN, F_NEG_OFF, F_MAGIC, F_SEQ, F_FLAGS, F_TOTAL, F_HEAD_AHEAD, F_HEAD_BEHIND, F_STATE, F_N };
static const char *k_field_name[] = {"payload_off", "payload_bytes", "negative payload_bytes", "negative payload_off",
                                     "magic", "seq", "flags", "total < chunk", "head > tail + n",
                                     "head < tail", "producer state"};

static void test_corrupt(void) {
    unsigned char msg[100];
    fill(msg, sizeof msg, 1);
    for (int f = 0; f < F_N; f++) {
        pair x;
        pair_init(&x, 4, 256);
        sp_ring_msg m = {.type = 1, .id = 42};
        CHECK(sp_ring_push(x.p, &m, msg, sizeof msg, 1000) == 0, "%s", sp_errmsg());
        sp_ring_slot_hdr *h = slot_hdr(&x, 0);
        switch (f) {
        case F_OFF: h->payload_off = 100000; break;
        case F_LEN: h->payload_bytes = 1000; break;
        case F_NEG_LEN: h->payload_bytes = -5; break;
        case F_NEG_OFF: h->payload_off = -64; break;
        case F_MAGIC: h->magic = 0xdeadbeef; break;
        case F_SEQ: h->seq = 3; break;
        case F_FLAGS: h->flags = 0; break;
        case F_TOTAL: h->total_bytes = 50; break;
        case F_HEAD_AHEAD: atomic_store(&shared(&x)->prod.counter, 6); break;
        case F_HEAD_BEHIND: atomic_store(&shared(&x)->prod.counter, UINT64_MAX); break;
        case F_STATE:
            atomic_store(&shared(&x)->prod.counter, 0);
            atomic_store(&shared(&x)->prod.state, 77);
            break;
        }
        unsigned char buf[512];
        sp_ring_msg got;
        sp_err_clear();
        int rc = sp_ring_pop_into(x.c, buf, sizeof buf, &got, 1000);
        CHECK(rc == SP_EX_DATAERR && strncmp(sp_errmsg(), "ring: ", 6) == 0, "corrupt %s: rc %d: %s",
              k_field_name[f], rc, sp_errmsg());
        sp_ring_chunk c;
        CHECK(sp_ring_acquire_read(x.c, &c, SP_RING_NOWAIT) == SP_EX_DATAERR, "corrupt %s again", k_field_name[f]);
        pair_free(&x);
    }

    /* The consumer's tail, corrupted: the producer refuses. */
    {
        pair x;
        pair_init(&x, 4, 256);
        sp_ring_msg m = {.type = 1, .id = 1};
        atomic_store(&shared(&x)->cons.counter, 5);
        int rc = sp_ring_push(x.p, &m, msg, sizeof msg, 1000);
        CHECK(rc == SP_EX_DATAERR && strstr(sp_errmsg(), "corrupt tail"), "rc %d: %s", rc, sp_errmsg());
        pair_free(&x);
    }

    /* The second chunk of a message does not continue the first. */
    {
        pair x;
        pair_init(&x, 4, 256);
        static unsigned char big[400];
        fill(big, sizeof big, 9);
        sp_ring_msg m = {.type = 1, .id = 9};
        CHECK(sp_ring_push(x.p, &m, big, sizeof big, 1000) == 0, "%s", sp_errmsg());
        slot_hdr(&x, 1)->chunk_off = 100;
        unsigned char buf[512];
        sp_ring_msg got;
        int rc = sp_ring_pop_into(x.c, buf, sizeof buf, &got, 1000);
        CHECK(rc == SP_EX_DATAERR && strstr(sp_errmsg(), "continue"), "rc %d: %s", rc, sp_errmsg());
        pair_free(&x);
    }

    /* A huge total_bytes in a well-formed first chunk: "does not fit", no copy. */
    {
        pair x;
        pair_init(&x, 4, 256);
        sp_ring_msg m = {.type = 1, .id = 2};
        CHECK(sp_ring_push(x.p, &m, msg, sizeof msg, 1000) == 0, "%s", sp_errmsg());
        slot_hdr(&x, 0)->total_bytes = INT64_C(1) << 60;
        slot_hdr(&x, 0)->flags = SP_RING_SLOT_FIRST;
        unsigned char buf[512];
        sp_ring_msg got;
        int rc = sp_ring_pop_into(x.c, buf, sizeof buf, &got, 1000);
        CHECK(rc == SP_EX_SOFTWARE && got.total_bytes == INT64_C(1) << 60 && strstr(sp_errmsg(), "does not fit"),
              "rc %d: %s", rc, sp_errmsg());
        pair_free(&x);
    }

    /* Random garbage in every field but magic and seq, 3000 times: 0 with an
     * in-bounds chunk, or 65; repaired headers read normally again. */
    {
        pair x;
        pair_init(&x, 2, 256);
        uint64_t s = 12345;
        int n_ok = 0, n_bad = 0;
        for (int it = 0; it < 3000; it++) {
            sp_ring_msg m = {.type = 4, .id = (uint64_t)it};
            if (sp_ring_push(x.p, &m, msg, sizeof msg, 1000) != 0) {
                CHECK(0, "push %d: %s", it, sp_errmsg());
                break;
            }
            uint64_t head, tail;
            sp_ring_counters(x.p, &head, &tail);
            int k = (int)((head - 1) % 2); /* the slot just written */
            sp_ring_slot_hdr *h = slot_hdr(&x, k), saved = *h;
            /* One to three fields: a value near the bounds, or any 64 bits. */
            for (int nf = 1 + (int)(splitmix(&s) % 3); nf > 0; nf--) {
                uint64_t v = splitmix(&s);
                int64_t near = (int64_t)(splitmix(&s) % 320) - 16;
                int64_t val = v % 4 == 0 ? (int64_t)splitmix(&s) : near;
                switch (v % 23 % 8) {
                case 0: h->payload_off = val; break;
                case 1: h->payload_bytes = val; break;
                case 2: h->total_bytes = val; break;
                case 3: h->chunk_off = val; break;
                case 4: h->flags = (uint32_t)val & (v % 2 ? 3u : ~0u); break;
                case 5: h->chunk_index = (uint32_t)(val & 3); break;
                case 6: h->type = (uint32_t)val; break;
                default: h->id = (uint64_t)val; break;
                }
            }
            sp_ring_chunk c;
            int rc = sp_ring_acquire_read(x.c, &c, SP_RING_NOWAIT);
            if (rc == 0) {
                n_ok++;
                /* c.data points into the consumer's own mapping: check it against the slot's offsets. */
                CHECK(c.len >= 0 && c.len <= 256 - 64 && c.chunk_off >= 0 && c.chunk_off + c.len <= c.msg.total_bytes,
                      "accepted chunk out of bounds: off %lld len %lld total %lld", (long long)c.chunk_off,
                      (long long)c.len, (long long)c.msg.total_bytes);
                CHECK(h->payload_off >= 64 && h->payload_off + c.len <= 256, "accepted payload_off %lld len %lld",
                      (long long)h->payload_off, (long long)c.len);
                if (c.chunk_off + c.len < c.msg.total_bytes) { /* consumed as a partial message: start over */
                    *h = saved;
                    pair_free(&x);
                    pair_init(&x, 2, 256);
                    continue;
                }
                sp_ring_release_read(x.c);
            } else {
                n_bad++;
                CHECK(rc == SP_EX_DATAERR, "garbage %d: rc %d: %s", it, rc, sp_errmsg());
                *h = saved;
                rc = sp_ring_acquire_read(x.c, &c, SP_RING_NOWAIT);
                CHECK(rc == 0 && c.len == 100 && c.msg.id == (uint64_t)it, "repaired %d: rc %d: %s", it, rc,
                      sp_errmsg());
                if (rc == 0) sp_ring_release_read(x.c);
            }
        }
        CHECK(n_bad > 1000 && n_ok > 100, "garbage: %d accepted, %d refused", n_ok, n_bad);
        printf("corrupt headers: %d refused with 65, %d harmless and accepted in bounds\n", n_bad, n_ok);
        pair_free(&x);
    }

    /* init_from_fd on fds that are not rings. */
    {
        int fd = memfd_create("not-sealed", MFD_CLOEXEC);
        CHECK(fd >= 0 && ftruncate(fd, 8192) == 0, "memfd");
        sp_ring *r = NULL;
        CHECK(sp_ring_init_from_fd(&r, fd) == SP_EX_DATAERR && !r && strstr(sp_errmsg(), "sealed"), "%s",
              sp_errmsg());
        close(fd);
        sp_ring_shared sh = {.magic = SP_RING_MAGIC, .version = SP_RING_VERSION, .hdr_bytes = SP_RING_HDR_BYTES,
                             .n_slots = 1000, .slot_bytes = 256};
        for (int k = 0; k < 3; k++) {
            fd = memfd_create("bad-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
            sp_ring_shared bad = sh;
            if (k == 1) bad.magic ^= 1;
            if (k == 2) bad.n_slots = INT64_MAX / 2;
            CHECK(fd >= 0 && ftruncate(fd, 8192) == 0 && pwrite(fd, &bad, sizeof bad, 0) == (ssize_t)sizeof bad &&
                      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0,
                  "memfd");
            int rc = sp_ring_init_from_fd(&r, fd);
            CHECK(rc == SP_EX_DATAERR && !r, "bad ring %d: rc %d", k, rc);
            close(fd);
        }
    }
    sp_ring *r = NULL;
    CHECK(sp_ring_init(&r, 0, 256) == SP_EX_USAGE && !r, "0 slots");
    CHECK(sp_ring_init(&r, 4, 100) == SP_EX_USAGE && !r, "slot not a multiple of 64");
    CHECK(sp_ring_bytes(INT64_C(1) << 30, INT64_C(1) << 36) == -1, "overflow");
    CHECK(sp_ring_bytes(4, 256) == 4096 + 1024, "bytes");
    sp_ring_free(NULL);
}

/* ---- 6. timeouts ---- */

static void test_timeouts(void) {
    sp_ring *r;
    CHECK(sp_ring_init(&r, 4, 256) == 0, "%s", sp_errmsg());
    pid_t pid = fork();
    if (pid == 0) { /* a live, idle producer */
        sp_ring_attach(r, SP_RING_ROLE_PRODUCER);
        sleep_ms(10000);
        _exit(0);
    }
    sp_ring_set_pid(r, SP_RING_ROLE_PRODUCER, pid);
    sp_ring_attach(r, SP_RING_ROLE_CONSUMER);
    char buf[64];
    sp_ring_msg m;
    double t0 = now_s();
    int rc = sp_ring_pop_into(r, buf, sizeof buf, &m, 300);
    double dt = now_s() - t0;
    CHECK(rc == SP_EX_TEMPFAIL && strstr(sp_errmsg(), "timed out after 300 ms"), "rc %d: %s", rc, sp_errmsg());
    CHECK(dt >= 0.29 && dt < 1.0, "300 ms timeout took %.3f s", dt);
    t0 = now_s();
    rc = sp_ring_pop_into(r, buf, sizeof buf, &m, SP_RING_NOWAIT);
    dt = now_s() - t0;
    CHECK(rc == SP_EX_TEMPFAIL && dt < 0.05, "NOWAIT: rc %d after %.3f s", rc, dt);
    kill(pid, SIGKILL);
    wait_exit(pid);
    sp_ring_free(r);
    printf("timeouts: pop 300 ms -> 75\n");

    /* The producer side: a full ring, a live consumer that does not read. */
    pair x;
    pair_init(&x, 2, 128);
    for (uint64_t i = 0; i < 2; i++) {
        m = (sp_ring_msg){.type = 1, .id = i};
        CHECK(sp_ring_push(x.p, &m, "x", 1, 100) == 0, "%s", sp_errmsg());
    }
    t0 = now_s();
    rc = sp_ring_push(x.p, &m, "x", 1, 200);
    dt = now_s() - t0;
    CHECK(rc == SP_EX_TEMPFAIL && dt >= 0.19 && dt < 1.0, "push 200 ms: rc %d after %.3f s", rc, dt);
    pair_free(&x);
}

/* ---- 7. a message larger than the ring, resumed after timeouts ---- */

static void test_resume(void) {
    pair x;
    pair_init(&x, 3, 256); /* 192 payload bytes a slot */
    static unsigned char src[2000], dst[2000];
    for (uint64_t k = 0; k < 2; k++) {
        fill(src, sizeof src, 100 + k);
        memset(dst, 0, sizeof dst);
        sp_ring_msg m = {.type = 8, .id = 100 + k}, got = {0};
        int prc = -1, crc = -1, rounds = 0, p75 = 0, c75 = 0;
        while ((prc != 0 || crc != 0) && rounds < 100) {
            if (prc != 0) {
                prc = sp_ring_push(x.p, &m, src, sizeof src, SP_RING_NOWAIT);
                p75 += prc == SP_EX_TEMPFAIL;
                CHECK(prc == 0 || prc == SP_EX_TEMPFAIL, "push: %d: %s", prc, sp_errmsg());
            }
            if (crc != 0) {
                crc = sp_ring_pop_into(x.c, dst, sizeof dst, &got, SP_RING_NOWAIT);
                c75 += crc == SP_EX_TEMPFAIL;
                CHECK(crc == 0 || crc == SP_EX_TEMPFAIL, "pop: %d: %s", crc, sp_errmsg());
            }
            rounds++;
        }
        CHECK(prc == 0 && crc == 0 && got.id == 100 + k && got.total_bytes == 2000 && memcmp(src, dst, 2000) == 0,
              "resumed message %llu: push %d pop %d", (unsigned long long)k, prc, crc);
        CHECK(p75 >= 3 && c75 >= 3, "push returned 75 %d times, pop %d times", p75, c75);
    }
    /* A buffer too small: 70, nothing consumed; a big enough one then works. */
    sp_ring_msg m = {.type = 8, .id = 7}, got;
    CHECK(sp_ring_push(x.p, &m, src, 300, 100) == 0, "%s", sp_errmsg());
    CHECK(sp_ring_pop_into(x.c, dst, 100, &got, 100) == SP_EX_SOFTWARE && got.total_bytes == 300, "small buffer");
    CHECK(sp_ring_pop_into(x.c, dst, sizeof dst, &got, 100) == 0 && got.id == 7 && memcmp(src, dst, 300) == 0,
          "after a small buffer: %s", sp_errmsg());
    /* close_write inside a message is an abort, not EOF. */
    CHECK(sp_ring_push(x.p, &m, src, sizeof src, SP_RING_NOWAIT) == SP_EX_TEMPFAIL, "partial push");
    sp_ring_close_write(x.p);
    int rc;
    while ((rc = sp_ring_pop_into(x.c, dst, sizeof dst, &got, 1000)) == SP_EX_TEMPFAIL) {
    }
    CHECK(rc == SP_EX_SOFTWARE && strstr(sp_errmsg(), "aborted"), "rc %d: %s", rc, sp_errmsg());
    pair_free(&x);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    alarm(30); /* a wait that never returns fails the test instead of hanging it */
    double t0 = now_s();
    test_integrity();
    test_full();
    test_pingpong();
    test_producer_killed();
    test_consumer_killed();
    test_abort_and_unattached();
    test_eof();
    test_corrupt();
    test_timeouts();
    test_resume();
    printf("%s (%.2f s)\n", g_fail ? "FAILED" : "all ring tests passed", now_s() - t0);
    return g_fail ? 1 : 0;
}
