/* tests/test_uring_reader.c — io/base/uring_reader.{c,h}: every path reads the same
 * bytes as a plain read() of the file.
 *
 *   test_uring_reader DIR    writes DIR/data.bin (8 MiB of seeded random bytes;
 *                            512 KiB when SLICEPIPE_SHORT_READS is set, since
 *                            the pread path then reads 7 bytes a call)
 *
 * One request list (odd sizes, unaligned offsets, zero-length, whole-file and
 * up-to-EOF requests, destinations at odd addresses with guard bytes between
 * them, shuffled) is read by: pread; io_uring with three queue depth / chunk
 * sizes; io_uring with forced short reads; with fake -EAGAIN; with both; AUTO
 * with SLICEPIPE_IO=pread; and AUTO in a child whose seccomp filter refuses
 * io_uring_setup (EPERM, then ENOSYS). The reader reads the environment at
 * sp_rd_init, so cases set it in-process. Then the error statuses: EOF inside
 * and beyond a request (65, naming the path and the failing request), a bad fd
 * and a write-only fd (74), a malformed request (70), and reuse after each.
 */
#include "error.h"
#include "fileio.h"
#include "uring_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "test_util.h"

static uint64_t g_seed = 0x5EED1234ABCDULL;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (g_seed += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static int64_t rnd_in(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1)); }

static char g_path[4096];
static int g_fd = -1;
static int64_t g_size;
static unsigned char *g_ref;      /* (g_size) the file, by plain read() */
static sp_rd_req *g_reqs;         /* (g_n) */
static int g_n;
static int64_t g_total;           /* sum of request lengths */
static unsigned char *g_arena;    /* (g_arena_len) destinations + guards */
static unsigned char *g_expected; /* (g_arena_len) what the arena must hold */
static int64_t g_arena_len;
#define GUARD 0xA5

static void die(const char *what) {
    fprintf(stderr, "test_uring_reader: %s: %s\n", what, sp_errmsg()[0] ? sp_errmsg() : strerror(errno));
    exit(1);
}

static void make_file(const char *dir) {
    mkdir_p(dir);
    snprintf(g_path, sizeof g_path, "%s/data.bin", dir);
    g_size = getenv("SLICEPIPE_SHORT_READS") ? (512 << 10) + 37 : (8 << 20) + 4099;
    unsigned char *buf = malloc((size_t)g_size);
    if (!buf) die("malloc");
    for (int64_t i = 0; i < g_size; i++) buf[i] = (unsigned char)(rnd() >> 56);
    int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) die(g_path);
    /* Also latches io/base/fileio.c's once-per-process environment before any case
     * sets SLICEPIPE_SHORT_READS for the io_uring path. */
    if (sp_io_write_full(fd, buf, g_size, g_path)) die("write");
    close(fd);
    free(buf);

    g_ref = malloc((size_t)g_size);
    if (!g_ref) die("malloc");
    fd = open(g_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(g_path);
    int64_t got = 0;
    while (got < g_size) {
        ssize_t r = read(fd, g_ref + got, (size_t)(g_size - got));
        if (r <= 0) die("read");
        got += r;
    }
    close(fd);
    g_fd = open(g_path, O_RDONLY | O_CLOEXEC);
    if (g_fd < 0) die(g_path);
}

static void add_req(int64_t off, int64_t len) {
    g_reqs[g_n] = (sp_rd_req){.fd = g_fd, .offset = off, .len = len, .tag = (uint64_t)g_n, .path = g_path};
    g_n++;
}
static void add_rand(int64_t lo, int64_t hi) {
    int64_t len = rnd_in(lo, hi);
    add_req(rnd_in(0, g_size - len), len);
}

static void make_requests(void) {
    g_reqs = calloc(1000, sizeof *g_reqs);
    if (!g_reqs) die("calloc");
    add_req(0, g_size);                              /* the whole file */
    add_req(g_size - 1234567 % g_size, 1234567 % g_size); /* up to EOF exactly */
    add_req(g_size - 1, 1);                          /* the last byte */
    add_req(0, 1);
    add_req(0, 0);
    add_req(g_size, 0); /* zero-length at EOF */
    add_req(g_size + 1000, 0);
    for (int i = 0; i < 20; i++) add_req(rnd_in(0, g_size - 1), 1);
    for (int i = 0; i < 400; i++) add_rand(2, 5000);
    for (int i = 0; i < 60; i++) add_rand(5001, g_size / 32);
    for (int i = 0; i < 4; i++) add_rand(g_size / 16, g_size / 4);
    g_reqs[g_n++] = (sp_rd_req){.fd = -1, .offset = -5, .len = 0, .path = g_path}; /* no-op, not validated */
    for (int i = g_n - 1; i > 0; i--) { /* shuffle */
        int j = (int)rnd_in(0, i);
        sp_rd_req t = g_reqs[i];
        g_reqs[i] = g_reqs[j];
        g_reqs[j] = t;
    }
    /* Destinations: odd addresses, 1..16 guard bytes between them. */
    g_total = 0;
    g_arena_len = 64;
    for (int i = 0; i < g_n; i++) g_arena_len += g_reqs[i].len + 32, g_total += g_reqs[i].len;
    g_arena = malloc((size_t)g_arena_len);
    g_expected = malloc((size_t)g_arena_len);
    if (!g_arena || !g_expected) die("malloc");
    memset(g_expected, GUARD, (size_t)g_arena_len);
    int64_t cur = 0;
    int odd = 0, with_len = 0;
    for (int i = 0; i < g_n; i++) {
        sp_rd_req *q = &g_reqs[i];
        cur += rnd_in(1, 16);
        if (((uintptr_t)(g_arena + cur) & 1) == 0) cur++;
        if (q->len == 0 && i % 2) {
            q->dst = NULL;
            continue;
        }
        q->dst = g_arena + cur;
        memcpy(g_expected + cur, g_ref + q->offset, (size_t)q->len);
        cur += q->len;
        odd += ((uintptr_t)q->dst & 1) != 0;
        with_len += q->len > 0;
        if (cur + 32 > g_arena_len) die("arena too small");
    }
    SP_ASSERT(odd > g_n / 2 && with_len > 480);
}

/* Reads every request and compares the whole arena (data and guards). */
static int read_and_compare(sp_rd *r, const char *name) {
    memset(g_arena, GUARD, (size_t)g_arena_len);
    int rc = sp_rd_read_batch(r, g_reqs, g_n);
    if (rc) {
        fprintf(stderr, "%s: read_batch -> %d: %s\n", name, rc, sp_errmsg());
        g_fail++;
        return -1;
    }
    if (memcmp(g_arena, g_expected, (size_t)g_arena_len) != 0) {
        int64_t i = 0;
        while (g_arena[i] == g_expected[i]) i++;
        fprintf(stderr, "%s: arena differs from read() first at byte %lld\n", name, (long long)i);
        g_fail++;
        return -1;
    }
    return 0;
}

static void set_env(const char *k, const char *v) {
    if (v) setenv(k, v, 1);
    else unsetenv(k);
}

/* Runs the batch twice with a fresh reader and checks the stats. env_* are
 * set only around sp_rd_init. Returns the stats of the run. */
static sp_rd_stats run_case(const char *name, int mode, int want_mode, int qd, int64_t chunk, const char *env_io,
                            const char *env_short, const char *env_eagain) {
    sp_rd_stats st = {0};
    char *old_short = getenv("SLICEPIPE_SHORT_READS") ? strdup(getenv("SLICEPIPE_SHORT_READS")) : NULL;
    set_env("SLICEPIPE_IO", env_io);
    if (env_short) set_env("SLICEPIPE_SHORT_READS", env_short);
    set_env("SLICEPIPE_URING_FAKE_EAGAIN", env_eagain);
    sp_rd *r = NULL;
    int rc = sp_rd_init(&r, mode, qd, chunk);
    set_env("SLICEPIPE_IO", NULL);
    set_env("SLICEPIPE_SHORT_READS", old_short);
    set_env("SLICEPIPE_URING_FAKE_EAGAIN", NULL);
    free(old_short);
    if (rc) {
        fprintf(stderr, "%s: sp_rd_init -> %d: %s\n", name, rc, sp_errmsg());
        g_fail++;
        return st;
    }
    CHECK(sp_rd_mode(r) == want_mode);
    int bad = read_and_compare(r, name) || read_and_compare(r, name);
    sp_rd_get_stats(r, &st);
    CHECK(st.bytes_read == 2 * g_total);
    CHECK(st.requests == 2 * g_n);
    CHECK(st.batches == 2);
    CHECK(sp_rd_failed_index(r) == -1);
    if (want_mode == SP_RD_PREAD) CHECK(st.reads_submitted == 0);
    printf("%-28s %s  %.3fs  reads %lld  short-resumed %lld  resubmitted %lld%s\n", name,
           sp_rd_mode(r) == SP_RD_URING ? "uring" : "pread", st.busy_seconds, (long long)st.reads_submitted,
           (long long)st.short_reads_resumed, (long long)st.resubmissions, bad ? "  FAILED" : "");
    sp_rd_free(r);
    return st;
}

/* Minimum number of io_uring reads for one pass with chunks of `chunk`. */
static int64_t min_reads(int64_t chunk) {
    int64_t k = 0;
    for (int i = 0; i < g_n; i++) k += (g_reqs[i].len + chunk - 1) / chunk;
    return k;
}

/* ---- io_uring refused by a seccomp filter, in a child ---- */

#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

static int deny_io_uring_setup(int err) {
#if defined(TEST_AUDIT_ARCH) && defined(__NR_io_uring_setup)
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TEST_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
#else
    (void)err;
    return -1;
#endif
}

static void test_refused(int err) {
    char name[64];
    snprintf(name, sizeof name, "auto, io_uring %s", err == EPERM ? "EPERM" : "ENOSYS");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        if (deny_io_uring_setup(err) != 0) {
            printf("SKIP %s: cannot install a seccomp filter here\n", name);
            fflush(stdout);
            _exit(0);
        }
        sp_rd *r;
        int rc = sp_rd_init(&r, SP_RD_URING, 8, 65536);
        CHECK(rc == SP_EX_IOERR);
        CHECK(r == NULL);
        CHECK_MSG("io_uring");
        CHECK_MSG(strerror(err));
        CHECK(sp_rd_init(&r, SP_RD_AUTO, 8, 65536) == 0);
        if (r) {
            CHECK(sp_rd_mode(r) == SP_RD_PREAD);
            CHECK(strstr(sp_rd_fallback_reason(r), strerror(err)) != NULL);
            sp_rd_free(r);
        }
        run_case(name, SP_RD_AUTO, SP_RD_PREAD, 8, 65536, NULL, NULL, NULL);
        fflush(stdout);
        fflush(stderr);
        _exit(g_fail ? 1 : 0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) die("waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- error statuses ---- */

static void test_errors(int mode, const char *env_short) {
    const char *mname = mode == SP_RD_URING ? "uring" : "pread";
    char *old_short = getenv("SLICEPIPE_SHORT_READS") ? strdup(getenv("SLICEPIPE_SHORT_READS")) : NULL;
    if (env_short) setenv("SLICEPIPE_SHORT_READS", env_short, 1);
    sp_rd *r;
    int rc = sp_rd_init(&r, mode, 4, 4096);
    set_env("SLICEPIPE_SHORT_READS", old_short);
    free(old_short);
    if (rc) {
        fprintf(stderr, "errors/%s: init -> %d: %s\n", mname, rc, sp_errmsg());
        g_fail++;
        return;
    }
    enum { N = 40, BAD = 25 };
    sp_rd_req q[N];
    static unsigned char dst[N][20000];
    for (int i = 0; i < N; i++)
        q[i] = (sp_rd_req){.fd = g_fd, .offset = 1000 * i + 3, .len = 19999 - i, .dst = dst[i], .path = g_path};

    /* EOF inside the request: the first 10 bytes exist. */
    q[BAD].offset = g_size - 10;
    q[BAD].len = 20;
    sp_err_clear();
    CHECK(sp_rd_read_batch(r, q, N) == SP_EX_DATAERR);
    CHECK_MSG(g_path);
    CHECK_MSG("truncated");
    CHECK(sp_rd_failed_index(r) == BAD);

    /* Wholly beyond EOF, larger than a chunk. */
    q[BAD].offset = g_size + 100;
    q[BAD].len = 10000;
    sp_err_clear();
    CHECK(sp_rd_read_batch(r, q, N) == SP_EX_DATAERR);
    CHECK_MSG("truncated");
    CHECK_MSG(g_path);
    CHECK(sp_rd_failed_index(r) == BAD);

    /* A bad fd, and a write-only fd. */
    q[BAD].offset = 0;
    q[BAD].len = 5000;
    q[BAD].fd = -1;
    q[BAD].path = "bad-fd.bin";
    sp_err_clear();
    CHECK(sp_rd_read_batch(r, q, N) == SP_EX_IOERR);
    CHECK_MSG("bad-fd.bin");
    CHECK_MSG(strerror(EBADF));
    CHECK(sp_rd_failed_index(r) == BAD);
    int wfd = open(g_path, O_WRONLY | O_CLOEXEC);
    CHECK(wfd >= 0);
    q[BAD].fd = wfd;
    q[BAD].path = g_path;
    sp_err_clear();
    CHECK(sp_rd_read_batch(r, q, N) == SP_EX_IOERR);
    CHECK_MSG(g_path);
    CHECK_MSG(strerror(EBADF));
    close(wfd);

    /* A malformed request: caught before any I/O. */
    q[BAD].fd = g_fd;
    q[BAD].len = -1;
    CHECK(sp_rd_read_batch(r, q, N) == SP_EX_SOFTWARE);
    CHECK(sp_rd_failed_index(r) == BAD);
    q[BAD].len = 100;
    q[BAD].offset = INT64_MAX - 50;
    CHECK(sp_rd_read_batch(r, q, N) == SP_EX_SOFTWARE);
    q[BAD].offset = 7;
    q[BAD].dst = NULL;
    CHECK(sp_rd_read_batch(r, q, N) == SP_EX_SOFTWARE);
    q[BAD].dst = dst[BAD];

    /* The reader still works after every failure, and an empty batch is fine. */
    CHECK(sp_rd_read_batch(r, q, 0) == 0);
    memset(dst, 0, sizeof dst);
    CHECK(sp_rd_read_batch(r, q, N) == 0);
    CHECK(sp_rd_failed_index(r) == -1);
    for (int i = 0; i < N; i++) CHECK(memcmp(dst[i], g_ref + q[i].offset, (size_t)q[i].len) == 0);
    sp_rd_free(r);
    printf("errors/%s%s: done\n", mname, env_short ? "+short" : "");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_uring_reader DIR\n");
        return 64;
    }
    /* The run must not depend on the caller's environment, except for
     * SLICEPIPE_SHORT_READS (a second ctest entry sets it). */
    unsetenv("SLICEPIPE_IO");
    unsetenv("SLICEPIPE_URING_FAKE_EAGAIN");
    alarm(100); /* a resume loop that never ends fails here, not at ctest's timeout */
    make_file(argv[1]);
    make_requests();
    printf("file %lld bytes, %d requests, %lld bytes a pass\n", (long long)g_size, g_n, (long long)g_total);

    /* (a) pread */
    run_case("pread", SP_RD_PREAD, SP_RD_PREAD, 8, 65536, NULL, NULL, NULL);

    /* Is io_uring allowed here? */
    sp_rd *probe;
    int uring_ok = sp_rd_init(&probe, SP_RD_URING, 4, 0) == 0;
    if (!uring_ok) printf("SKIP io_uring cases: %s\n", sp_errmsg());
    sp_rd_free(probe);
    CHECK(sp_rd_init(&probe, SP_RD_AUTO, 4, 0) == 0);
    if (probe) {
        CHECK(sp_rd_mode(probe) == (uring_ok ? SP_RD_URING : SP_RD_PREAD));
        CHECK(uring_ok ? sp_rd_fallback_reason(probe)[0] == 0 : sp_rd_fallback_reason(probe)[0] != 0);
        sp_rd_free(probe);
    }

    if (uring_ok) {
        /* (b) io_uring: chunks, depths */
        sp_rd_stats st = run_case("uring qd8 chunk64K", SP_RD_URING, SP_RD_URING, 8, 65536, NULL, NULL, NULL);
        CHECK(st.reads_submitted >= 2 * min_reads(65536));
        /* every read is an initial chunk, a resumed short read or a resubmission */
        CHECK(st.reads_submitted - st.short_reads_resumed - st.resubmissions == 2 * min_reads(65536));
        st = run_case("uring qd1 chunk4099", SP_RD_URING, SP_RD_URING, 1, 4099, NULL, NULL, NULL);
        CHECK(st.reads_submitted >= 2 * min_reads(4099));
        st = run_case("uring qd64 default chunk", SP_RD_AUTO, SP_RD_URING, 64, 0, NULL, NULL, NULL);
        CHECK(st.reads_submitted >= 2 * min_reads(SP_RD_CHUNK_BYTES_DEFAULT));

        /* (c) short reads: every read asks for at most 4093 bytes */
        st = run_case("uring short reads", SP_RD_URING, SP_RD_URING, 16, 65536, NULL, "1", NULL);
        CHECK(st.short_reads_resumed > 0);
        CHECK(st.reads_submitted >= 2 * g_total / 4093);
        CHECK(st.reads_submitted - st.short_reads_resumed == 2 * min_reads(65536) + st.resubmissions);

        /* (d) every 3rd completion turned into -EAGAIN */
        st = run_case("uring fake EAGAIN/3", SP_RD_URING, SP_RD_URING, 8, 65536, NULL, NULL, "3");
        CHECK(st.resubmissions > 0);
        CHECK(st.resubmissions >= st.reads_submitted / 3 - 1);

        /* (c)+(d) together, and N=1 (taken as 2) must still finish */
        st = run_case("uring short + EAGAIN/1", SP_RD_URING, SP_RD_URING, 4, 30000, NULL, "1", "1");
        CHECK(st.resubmissions >= st.reads_submitted / 2 - 1);
        CHECK(st.short_reads_resumed > 0);

        /* SLICEPIPE_IO=pread does not override an explicit URING mode */
        run_case("uring, SLICEPIPE_IO=pread", SP_RD_URING, SP_RD_URING, 8, 65536, "pread", NULL, NULL);
    }

    /* (e) AUTO with SLICEPIPE_IO=pread */
    setenv("SLICEPIPE_IO", "pread", 1);
    sp_rd *r;
    CHECK(sp_rd_init(&r, SP_RD_AUTO, 8, 0) == 0);
    unsetenv("SLICEPIPE_IO");
    if (r) {
        CHECK(sp_rd_mode(r) == SP_RD_PREAD);
        CHECK(strstr(sp_rd_fallback_reason(r), "SLICEPIPE_IO") != NULL);
        sp_rd_free(r);
    }
    run_case("auto, SLICEPIPE_IO=pread", SP_RD_AUTO, SP_RD_PREAD, 8, 0, "pread", NULL, NULL);

    /* (f) io_uring refused by the kernel */
    test_refused(EPERM);
    test_refused(ENOSYS);

    /* Errors */
    test_errors(SP_RD_PREAD, NULL);
    if (uring_ok) {
        test_errors(SP_RD_URING, NULL);
        test_errors(SP_RD_URING, "1");
    }
    CHECK(sp_rd_init(&r, 99, 8, 0) == SP_EX_SOFTWARE);

    close(g_fd);
    unlink(g_path);
    free(g_ref);
    free(g_reqs);
    free(g_arena);
    free(g_expected);
    if (g_fail) {
        fprintf(stderr, "test_uring_reader: %d failures\n", g_fail);
        return 1;
    }
    printf("test_uring_reader: all passed\n");
    return 0;
}
