/* tests/test_journal.c — the job journal (io/base/journal.h) and commit-point
 * crash injection (io/base/faults.h), with real files and real processes.
 *
 * The record format is checked against an independent encoder written here
 * from the layout documented in io/base/journal.c, so a change to the bytes on
 * disk fails the test. Then: round trip, reopen + append, a torn tail cut at
 * every byte of the last record (and of the header), corruption at every
 * byte of a middle record, another run's identity (each part), sequence gaps,
 * injected write/fsync failures (74, via a re-exec since fileio reads the
 * environment once), and SIGKILL at the Nth commit point.
 *
 * Usage: test_journal [scratch_dir]        (default: a fresh mkdtemp under /tmp)
 *        test_journal --child-... ARGS     (internal: one child process) */
#include "error.h"
#include "faults.h"
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "test_util.h"

static char g_dir[2048];

static void path_in(char *out, const char *name) { snprintf(out, 4096, "%s/%s", g_dir, name); }

/* ---------------- raw file helpers (the test's own I/O) ---------------- */

static unsigned char *slurp(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        *n = -1;
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*n + 1);
    if (fread(b, 1, (size_t)*n, f) != (size_t)*n) *n = -1;
    fclose(f);
    return b;
}

static void spit(const char *path, const void *buf, long n) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(buf, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
}

/* ---------------- an independent encoder of the documented format ---------------- */

static void le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static sp_run_identity mkid(const char *m, const char *in, const char *v) {
    sp_run_identity id;
    memset(&id, 0, sizeof id);
    snprintf(id.manifest, sizeof id.manifest, "%s", m);
    snprintf(id.input, sizeof id.input, "%s", in);
    snprintf(id.version, sizeof id.version, "%s", v);
    return id;
}

static size_t id_payload(const sp_run_identity *id, unsigned char *out) {
    size_t o = 0;
    const char *s[3] = {id->manifest, id->input, id->version};
    for (int i = 0; i < 3; i++) {
        memcpy(out + o, s[i], strlen(s[i]) + 1);
        o += strlen(s[i]) + 1;
    }
    return o;
}

static void runid_of(const sp_run_identity *id, unsigned char out[16]) {
    unsigned char p[128];
    size_t n = id_payload(id, p);
    XXH128_hash_t h = XXH3_128bits(p, n);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(h.high64 >> (56 - 8 * i)); /* big-endian: high first */
    for (int i = 0; i < 8; i++) out[8 + i] = (unsigned char)(h.low64 >> (56 - 8 * i));
}

/* Appends one record to buf at *off. */
static void enc(unsigned char *buf, long *off, uint64_t seq, const unsigned char rid[16], uint32_t type, const void *pl,
                uint32_t len) {
    unsigned char *p = buf + *off;
    memcpy(p, "SPJ1", 4);
    le(p + 4, len, 4);
    le(p + 8, seq, 8);
    memcpy(p + 16, rid, 16);
    le(p + 32, type, 4);
    if (len) memcpy(p + 36, pl, len);
    le(p + 36 + len, XXH3_64bits(p, 36 + (size_t)len), 8);
    *off += 44 + (long)len;
}

static long enc_header(unsigned char *buf, const sp_run_identity *id) {
    unsigned char rid[16], pl[128];
    runid_of(id, rid);
    long off = 0;
    enc(buf, &off, 0, rid, 0, pl, (uint32_t)id_payload(id, pl));
    return off;
}

/* ---------------- the standard record set ---------------- */

#define NREC 5
static const uint32_t k_len[NREC] = {0, 1, 5000, 7, 100}; /* last one small: cut at every byte */
static unsigned char *g_pl[NREC];
static sp_run_identity g_id;

static void make_payloads(void) {
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int r = 0; r < NREC; r++) {
        g_pl[r] = malloc(k_len[r] + 1);
        for (uint32_t i = 0; i < k_len[r]; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            g_pl[r][i] = (unsigned char)(s >> 56);
        }
    }
    /* Put a fake magic inside a payload: replay must not be fooled by it. */
    memcpy(g_pl[2] + 100, "SPJ1", 4);
    g_id = mkid("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210", "0.1.0");
}

/* The expected bytes of a journal holding the header + records [0, n). */
static long golden(unsigned char *buf, int n) {
    unsigned char rid[16];
    runid_of(&g_id, rid);
    long off = enc_header(buf, &g_id);
    for (int r = 0; r < n; r++) enc(buf, &off, (uint64_t)r + 1, rid, (uint32_t)r + 1, g_pl[r], k_len[r]);
    return off;
}

static int recs_match(const sp_journal *j, int n) {
    if (sp_journal_count(j) != n) return 0;
    for (int r = 0; r < n; r++) {
        const sp_jrec *x = sp_journal_at(j, r);
        if (x->seq != (uint64_t)r + 1 || x->type != (uint32_t)r + 1 || x->len != k_len[r] ||
            (x->len && memcmp(x->payload, g_pl[r], x->len) != 0))
            return 0;
    }
    return 1;
}

static unsigned char *g_gold;

/* ---------------- tests ---------------- */

static void test_round_trip(void) {
    char p[4096];
    path_in(p, "rt.journal");
    unlink(p);
    sp_journal *j;
    int64_t dropped = -1;
    int rc = sp_journal_open(p, &g_id, &j, &dropped);
    CHECK(rc == 0 && dropped == 0 && sp_journal_count(j) == 0, "create: rc %d dropped %lld: %s", rc, (long long)dropped,
          sp_errmsg());
    if (rc) return;
    for (int r = 0; r < 3; r++) CHECK(sp_journal_append(j, (uint32_t)r + 1, g_pl[r], k_len[r]) == 0, "append %d", r);
    CHECK(recs_match(j, 3), "records in memory after append");
    sp_journal_free(j);

    long n;
    unsigned char *b = slurp(p, &n);
    long gn = golden(g_gold, 3);
    CHECK(n == gn && memcmp(b, g_gold, (size_t)gn) == 0, "file bytes equal the documented format (%ld vs %ld)", n, gn);
    free(b);

    /* Reopen and append. */
    rc = sp_journal_open(p, &g_id, &j, &dropped);
    CHECK(rc == 0 && dropped == 0 && recs_match(j, 3), "reopen: rc %d, %d records", rc, rc ? -1 : sp_journal_count(j));
    if (rc) return;
    for (int r = 3; r < NREC; r++) CHECK(sp_journal_append(j, (uint32_t)r + 1, g_pl[r], k_len[r]) == 0, "append %d", r);
    CHECK(sp_journal_size_bytes(j) == golden(g_gold, NREC), "size_bytes");
    sp_journal_free(j);
    rc = sp_journal_open(p, &g_id, &j, &dropped);
    CHECK(rc == 0 && dropped == 0 && recs_match(j, NREC), "reopen after more appends");
    sp_journal_free(j);
    b = slurp(p, &n);
    gn = golden(g_gold, NREC);
    CHECK(n == gn && memcmp(b, g_gold, (size_t)gn) == 0, "file bytes after reopen + append");
    free(b);

    sp_run_identity got;
    rc = sp_run_identity_read(p, &got);
    CHECK(rc == 0 && memcmp(&got, &g_id, sizeof got) == 0, "sp_run_identity_read: %d %s", rc, sp_errmsg());
    char q[4096];
    path_in(q, "none.journal");
    CHECK(sp_run_identity_read(q, &got) == 66, "identity of a missing journal: 66");
    spit(q, "", 0);
    CHECK(sp_run_identity_read(q, &got) == 66, "identity of an empty journal: 66");
    spit(q, g_gold, 30);
    CHECK(sp_run_identity_read(q, &got) == 65, "identity of a torn header: 65");
    unlink(q);

    /* An empty existing file gets a header. */
    spit(p, "", 0);
    rc = sp_journal_open(p, &g_id, &j, &dropped);
    CHECK(rc == 0 && sp_journal_count(j) == 0 && dropped == 0, "empty file: header written");
    sp_journal_free(j);
    b = slurp(p, &n);
    gn = golden(g_gold, 0);
    CHECK(n == gn && memcmp(b, g_gold, (size_t)gn) == 0, "header bytes");
    free(b);

    /* Misuse. */
    rc = sp_journal_open(p, &g_id, &j, NULL);
    if (!rc) {
        CHECK(sp_journal_append(j, 0, "x", 1) == 70, "append of type 0 (reserved): 70");
        CHECK(sp_journal_append(j, 1, NULL, 3) == 70, "append of NULL payload: 70");
        CHECK(sp_journal_count(j) == 0, "misuse appended nothing");
        sp_journal_free(j);
    }
}

static void test_torn_tail(void) {
    char p[4096];
    path_in(p, "torn.journal");
    long full = golden(g_gold, NREC);
    long last = full - (44 + (long)k_len[NREC - 1]);
    long hdr = golden(g_gold, 0);
    golden(g_gold, NREC);
    int bad = 0;
    /* Every cut inside the last record (cut == last: the record is simply absent). */
    for (long cut = last; cut < full; cut++) {
        spit(p, g_gold, cut);
        sp_journal *j;
        int64_t dropped = -1;
        int rc = sp_journal_open(p, &g_id, &j, &dropped);
        if (rc || dropped != cut - last || !recs_match(j, NREC - 1)) {
            if (bad++ < 5) CHECK(0, "cut at %ld: rc %d dropped %lld: %s", cut, rc, (long long)dropped, sp_errmsg());
            sp_journal_free(j);
            continue;
        }
        struct stat st;
        stat(p, &st);
        CHECK(st.st_size == last, "cut at %ld: file truncated to %ld (is %lld)", cut, last, (long long)st.st_size);
        CHECK(sp_journal_append(j, NREC, g_pl[NREC - 1], k_len[NREC - 1]) == 0, "re-append after cut %ld", cut);
        sp_journal_free(j);
        long n;
        unsigned char *b = slurp(p, &n);
        if (n != full || memcmp(b, g_gold, (size_t)full) != 0) CHECK(0, "cut at %ld: re-appended file differs", cut);
        free(b);
    }
    CHECK(bad == 0, "%d cuts inside the last record misbehaved", bad);

    /* Every cut inside the header: the header is rewritten. */
    for (long cut = 1; cut < hdr; cut++) {
        spit(p, g_gold, cut);
        sp_journal *j;
        int64_t dropped = -1;
        int rc = sp_journal_open(p, &g_id, &j, &dropped);
        CHECK(rc == 0 && dropped == cut && sp_journal_count(j) == 0, "header cut at %ld: rc %d dropped %lld", cut, rc,
              (long long)dropped);
        sp_journal_free(j);
        long n;
        unsigned char *b = slurp(p, &n);
        CHECK(n == hdr && memcmp(b, g_gold, (size_t)hdr) == 0, "header cut at %ld: fresh header", cut);
        free(b);
    }

    /* A tail of zeros (size extended, data never written) and a garbled last record. */
    unsigned char *z = calloc(1, (size_t)full + 300);
    memcpy(z, g_gold, (size_t)full);
    spit(p, z, full + 300);
    sp_journal *j;
    int64_t dropped = -1;
    int rc = sp_journal_open(p, &g_id, &j, &dropped);
    CHECK(rc == 0 && dropped == 300 && recs_match(j, NREC), "zero tail dropped: rc %d dropped %lld", rc, (long long)dropped);
    sp_journal_free(j);
    memcpy(z, g_gold, (size_t)full);
    z[last + 50] ^= 0x40; /* bit rot in the last record looks like a torn write: dropped, redone by resume */
    spit(p, z, full);
    rc = sp_journal_open(p, &g_id, &j, &dropped);
    CHECK(rc == 0 && dropped == full - last && recs_match(j, NREC - 1), "garbled last record dropped: rc %d", rc);
    sp_journal_free(j);
    free(z);

    /* Not a journal at all: refused, untouched. */
    spit(p, "hello, world\n", 13);
    rc = sp_journal_open(p, &g_id, &j, &dropped);
    CHECK(rc == 65 && strstr(sp_errmsg(), "not a slicepipe journal"), "a foreign file: 65 (%d: %s)", rc, sp_errmsg());
    struct stat st;
    stat(p, &st);
    CHECK(st.st_size == 13, "a foreign file is left untouched");
}

static void test_corrupt_middle(void) {
    char p[4096];
    path_in(p, "mid.journal");
    long full = golden(g_gold, NREC);
    /* Record seq 2 of 5 spans [r2, r3). */
    long r2 = golden(g_gold, 1), r3 = golden(g_gold, 2);
    golden(g_gold, NREC);
    unsigned char *z = malloc((size_t)full);
    int bad = 0;
    for (long at = r2; at < r3; at += (at < r2 + 64 || at > r3 - 64) ? 1 : 97) {
        memcpy(z, g_gold, (size_t)full);
        z[at] ^= 0x01;
        spit(p, z, full);
        sp_journal *j;
        int rc = sp_journal_open(p, &g_id, &j, NULL);
        long n;
        unsigned char *b = slurp(p, &n);
        int same = n == full && memcmp(b, z, (size_t)full) == 0;
        free(b);
        if (rc != 65 || !strstr(sp_errmsg(), "record 2 ") || !strstr(sp_errmsg(), "corrupt") || !same) {
            if (bad++ < 5) CHECK(0, "flip at %ld: rc %d, unchanged %d: %s", at, rc, same, sp_errmsg());
            sp_journal_free(j);
        }
    }
    CHECK(bad == 0, "%d flips in record 2 of 5 misbehaved", bad);
    /* A corrupt header followed by valid records. */
    memcpy(z, g_gold, (size_t)full);
    z[20] ^= 0x80;
    spit(p, z, full);
    sp_journal *j;
    int rc = sp_journal_open(p, &g_id, &j, NULL);
    CHECK(rc == 65 && strstr(sp_errmsg(), "record 0 ") && strstr(sp_errmsg(), "later records are valid"),
          "corrupt header: 65 (%d: %s)", rc, sp_errmsg());
    free(z);
}

static void test_identity(void) {
    char p[4096];
    path_in(p, "id.journal");
    long full = golden(g_gold, 2);
    struct {
        sp_run_identity id;
        const char *want[3];
        const char *not_want;
    } cases[] = {
        {mkid("1123456789abcdef0123456789abcdef", g_id.input, g_id.version), {"the manifest changed", "--restart", NULL}, "input"},
        {mkid(g_id.manifest, "0edcba9876543210fedcba9876543210", g_id.version),
         {"the input checkpoint changed (shards' sizes or headers)", "--restart", NULL}, "manifest"},
        {mkid(g_id.manifest, g_id.input, "0.2.0"), {"tool version 0.1.0 (journal) vs 0.2.0", "--restart", NULL}, "manifest"},
        {mkid("x", "y", "z"), {"the manifest changed", "the input checkpoint changed", "tool version 0.1.0"}, NULL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        spit(p, g_gold, full);
        sp_journal *j;
        int rc = sp_journal_open(p, &cases[c].id, &j, NULL);
        const char *m = sp_errmsg();
        int ok = rc == 65 && strstr(m, p) && (!cases[c].not_want || !strstr(m, cases[c].not_want));
        for (int k = 0; k < 3; k++) ok = ok && (!cases[c].want[k] || strstr(m, cases[c].want[k]));
        CHECK(ok, "identity case %zu: rc %d: %s", c, rc, m);
        if (!rc) sp_journal_free(j);
        long n;
        unsigned char *b = slurp(p, &n);
        CHECK(n == full && memcmp(b, g_gold, (size_t)full) == 0, "identity case %zu: file untouched", c);
        free(b);
    }
    /* And a torn tail behind a foreign header is not truncated either. */
    spit(p, g_gold, full - 3);
    sp_journal *j;
    int rc = sp_journal_open(p, &cases[0].id, &j, NULL);
    struct stat st;
    stat(p, &st);
    CHECK(rc == 65 && st.st_size == full - 3, "foreign journal with a torn tail: 65, not truncated");
}

static void test_sequence(void) {
    char p[4096];
    path_in(p, "seq.journal");
    unsigned char rid[16], other[16];
    runid_of(&g_id, rid);
    sp_run_identity o = mkid("a", "b", "c");
    runid_of(&o, other);
    struct {
        uint64_t seq[4];
        const unsigned char *rid4;
        uint32_t type4;
        const char *want;
    } cases[] = {
        {{1, 2, 4, 5}, rid, 1, "has sequence 4, expected 3"},
        {{1, 2, 2, 3}, rid, 1, "has sequence 2, expected 3"},
        {{2, 3, 4, 5}, rid, 1, "has sequence 2, expected 1"},
        {{1, 2, 3, 4}, other, 1, "record 4 belongs to another run"},
        {{1, 2, 3, 4}, rid, 0, "record 4 is a second header"},
    };
    unsigned char buf[4096];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        long off = enc_header(buf, &g_id);
        for (int r = 0; r < 4; r++)
            enc(buf, &off, cases[c].seq[r], r == 3 ? cases[c].rid4 : rid, r == 3 ? cases[c].type4 : 7, "abc", 3);
        spit(p, buf, off);
        sp_journal *j;
        int rc = sp_journal_open(p, &g_id, &j, NULL);
        CHECK(rc == 65 && strstr(sp_errmsg(), cases[c].want), "sequence case %zu: rc %d: %s", c, rc, sp_errmsg());
        if (!rc) sp_journal_free(j);
        struct stat st;
        stat(p, &st);
        CHECK(st.st_size == off, "sequence case %zu: file untouched", c);
    }
    /* Sanity: the same hand-made file with consecutive seqs is accepted. */
    long off = enc_header(buf, &g_id);
    for (int r = 0; r < 4; r++) enc(buf, &off, (uint64_t)r + 1, rid, 7, "abc", 3);
    spit(p, buf, off);
    sp_journal *j;
    int rc = sp_journal_open(p, &g_id, &j, NULL);
    CHECK(rc == 0 && sp_journal_count(j) == 4 && sp_journal_at(j, 3)->seq == 4, "hand-made journal accepted: %s", sp_errmsg());
    sp_journal_free(j);
}

/* ---------------- children (re-exec of this binary) ---------------- */

/* Runs this binary with args and extra env "K=V" strings; captures stdout +
 * stderr into out. Returns the wait status. */
static int run_child(const char *const *args, const char *const *env, char *out, size_t cap) {
    int fds[2];
    if (pipe(fds) != 0) abort();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        for (int i = 0; env && env[i]; i++) putenv((char *)env[i]);
        char *argv[16] = {"test_journal"};
        int n = 1;
        for (int i = 0; args[i]; i++) argv[n++] = (char *)args[i];
        argv[n] = NULL;
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(fds[1]);
    size_t o = 0;
    ssize_t r;
    while ((r = read(fds[0], out + o, cap - 1 - o)) > 0) o += (size_t)r;
    out[o] = 0;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return status;
}

static int child_main(int argc, char **argv) {
    const char *mode = argv[1];
    if (!strcmp(mode, "--child-append") || !strcmp(mode, "--child-create")) {
        sp_journal *j;
        int rc = sp_journal_open(argv[2], &g_id, &j, NULL);
        if (rc) {
            printf("open: %d: %s\n", rc, sp_errmsg());
            return rc;
        }
        rc = sp_journal_append(j, 9, "payload", 7);
        printf("append: %d: %s\n", rc, sp_errmsg());
        int rc2 = sp_journal_append(j, 9, "payload", 7);
        printf("append again: %d: %s\n", rc2, sp_errmsg());
        sp_journal_free(j);
        return rc;
    }
    if (!strcmp(mode, "--child-commits")) {
        char line[64];
        for (int i = 1; i <= 5; i++) {
            int n = snprintf(line, sizeof line, "commit %d\n", i);
            if (write(1, line, (size_t)n) != n) return 1;
            sp_fault_commit_point("test");
            sp_fault_commit_point("other-stage");
        }
        printf("count %d %d %d\n", sp_fault_commit_count("test"), sp_fault_commit_count("other-stage"),
               sp_fault_commit_count("never"));
        return 0;
    }
    if (!strcmp(mode, "--child-fork")) {
        sp_fault_commit_point("test");
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            char line[64];
            for (int i = 1; i <= 2; i++) {
                int n = snprintf(line, sizeof line, "g %d\n", i);
                if (write(1, line, (size_t)n) != n) _exit(1);
                sp_fault_commit_point("test");
                n = snprintf(line, sizeof line, "after %d\n", i);
                if (write(1, line, (size_t)n) != n) _exit(1);
            }
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        printf("grandchild %s %d; parent count %d\n", WIFSIGNALED(status) ? "killed by" : "exit",
               WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), sp_fault_commit_count("test"));
        return 0;
    }
    if (!strcmp(mode, "--child-journal")) {
        sp_journal *j;
        int rc = sp_journal_open(argv[2], &g_id, &j, NULL);
        for (int r = 0; r < NREC && !rc; r++) {
            rc = sp_journal_append(j, (uint32_t)r + 1, g_pl[r], k_len[r]);
            sp_fault_commit_point("journal");
        }
        sp_journal_free(j);
        return rc;
    }
    (void)argc;
    fprintf(stderr, "unknown child mode %s\n", mode);
    return 2;
}

static void test_io_faults(void) {
    char p[4096], out[8192];
    path_in(p, "fault.journal");
    spit(p, g_gold, golden(g_gold, 2));
    int st = run_child((const char *[]){"--child-append", p, NULL}, (const char *[]){"SLICEPIPE_FAULT_FSYNC=1", NULL}, out,
                       sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 74 && strstr(out, "append: 74") && strstr(out, "fsync") &&
              strstr(out, "append again: 74") && strstr(out, "earlier I/O error"),
          "fsync failure on append: 74, and the journal is dead: %s", out);
    /* The record reached the page cache; a reopen sees it (resume re-verifies what it claims). */
    sp_journal *j;
    int rc = sp_journal_open(p, &g_id, &j, NULL);
    CHECK(rc == 0 && sp_journal_count(j) <= 3, "reopen after fsync failure: %d %s", rc, sp_errmsg());
    sp_journal_free(j);

    spit(p, g_gold, golden(g_gold, 2));
    st = run_child((const char *[]){"--child-append", p, NULL}, (const char *[]){"SLICEPIPE_FAULT_WRITE=1:ENOSPC", NULL}, out,
                   sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 74 && strstr(out, "No space left"), "ENOSPC on append: 74: %s", out);
    rc = sp_journal_open(p, &g_id, &j, NULL);
    CHECK(rc == 0 && recs_match(j, 2), "after a failed write the journal still holds its 2 records");
    sp_journal_free(j);

    for (int n = 1; n <= 2; n++) { /* the header's fsync, then the directory's */
        unlink(p);
        char env[64];
        snprintf(env, sizeof env, "SLICEPIPE_FAULT_FSYNC=%d", n);
        st = run_child((const char *[]){"--child-create", p, NULL}, (const char *[]){env, NULL}, out, sizeof out);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 74 && strstr(out, "open: 74"), "fsync %d failing on create: 74: %s", n, out);
    }
    char q[4096];
    path_in(q, "no/such/dir/j");
    rc = sp_journal_open(q, &g_id, &j, NULL);
    CHECK(rc == 73, "journal in a missing directory: 73 (%d)", rc);
}

static void test_commit_kill(void) {
    char out[8192];
    int st = run_child((const char *[]){"--child-commits", NULL}, (const char *[]){"SLICEPIPE_KILL_AT=test:3", NULL}, out,
                       sizeof out);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && strcmp(out, "commit 1\ncommit 2\ncommit 3\n") == 0,
          "KILL_AT=test:3 kills at the 3rd commit point (signaled %d, output '%s')", WIFSIGNALED(st), out);
    st = run_child((const char *[]){"--child-commits", NULL}, (const char *[]){"SLICEPIPE_KILL_AT=other-stage:5", NULL}, out,
                   sizeof out);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && strstr(out, "commit 5\n") && !strstr(out, "count"),
          "KILL_AT=other-stage:5 kills at its 5th point: '%s'", out);
    st = run_child((const char *[]){"--child-commits", NULL},
                   (const char *[]){"SLICEPIPE_KILL_AT=test:6", "SLICEPIPE_COUNT_COMMITS=1", NULL}, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(out, "count 5 5 0\n") && strstr(out, "commit-points test 5\n") &&
              strstr(out, "commit-points other-stage 5\n"),
          "no kill past the last point; counts printed at exit: '%s'", out);
    st = run_child((const char *[]){"--child-commits", NULL}, (const char *[]){"SLICEPIPE_KILL_AT=test", NULL}, out,
                   sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 64 && strstr(out, "malformed"), "malformed KILL_AT: exit 64: '%s'", out);
    /* Per-process counts: the forked grandchild counts from zero. */
    st = run_child((const char *[]){"--child-fork", NULL}, (const char *[]){"SLICEPIPE_KILL_AT=test:2", NULL}, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(out, "g 1\nafter 1\ng 2\n") && !strstr(out, "after 2") &&
              strstr(out, "grandchild killed by 9; parent count 1"),
          "a forked child counts its own commit points: '%s'", out);

    /* kill -9 right after the 3rd journal append: exactly 3 records survive, and resume appends the rest. */
    char p[4096];
    path_in(p, "kill.journal");
    unlink(p);
    st = run_child((const char *[]){"--child-journal", p, NULL}, (const char *[]){"SLICEPIPE_KILL_AT=journal:3", NULL}, out,
                   sizeof out);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "journal child killed");
    sp_journal *j;
    int64_t dropped = -1;
    int rc = sp_journal_open(p, &g_id, &j, &dropped);
    CHECK(rc == 0 && dropped == 0 && recs_match(j, 3), "after kill at the 3rd commit: 3 records (%d)",
          rc ? -1 : sp_journal_count(j));
    if (!rc) {
        for (int r = 3; r < NREC; r++) sp_journal_append(j, (uint32_t)r + 1, g_pl[r], k_len[r]);
        sp_journal_free(j);
        long n;
        unsigned char *b = slurp(p, &n);
        long gn = golden(g_gold, NREC);
        CHECK(n == gn && memcmp(b, g_gold, (size_t)gn) == 0, "resumed journal equals an uninterrupted one");
        free(b);
    }
}

int main(int argc, char **argv) {
    make_payloads();
    g_gold = malloc(1 << 16);
    if (argc >= 2 && !strncmp(argv[1], "--child-", 8)) {
        int rc = child_main(argc, argv);
        for (int r = 0; r < NREC; r++) free(g_pl[r]);
        free(g_gold);
        fflush(NULL);
        return rc;
    }
    if (argc >= 2) {
        snprintf(g_dir, sizeof g_dir, "%s", argv[1]);
        mkdir_p(g_dir);
    } else {
        snprintf(g_dir, sizeof g_dir, "/tmp/test_journal.XXXXXX");
        if (!mkdtemp(g_dir)) return 1;
    }
    test_round_trip();
    test_torn_tail();
    test_corrupt_middle();
    test_identity();
    test_sequence();
    test_io_faults();
    test_commit_kill();
    for (int r = 0; r < NREC; r++) free(g_pl[r]);
    free(g_gold);
    if (g_fail) {
        fprintf(stderr, "%d checks failed\n", g_fail);
        return 1;
    }
    printf("journal: all checks passed\n");
    return 0;
}
