/* tests/test_st_writer.c — the sharded safetensors writer, read back with the
 * strict reader (io/formats/safetensors.h), its hashes recomputed independently, its
 * errors (73, 74, 70) and its crash-safety under injected write/fsync faults.
 *
 * Usage: test_st_writer [scratch_dir]   (default: a fresh mkdtemp under /tmp)
 *        test_st_writer --write-set DIR  (internal: one faulted child run) */
#include "error.h"
#include "fileio.h"
#include "safetensors.h"
#include "st_writer.h"
#include "strbuf.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "test_util.h"

/* ---- the tensor set: mixed dtypes, a scalar, empty tensors ---- */
typedef struct tdesc {
    const char *name;
    sp_dtype dtype;
    int ndim;
    int64_t shape[3];
    int64_t nbytes;
    int shard4; /* expected shard with shard_bytes_max = 128 */
} tdesc;

static const tdesc T[] = {
    {"model.embed_tokens.weight", SP_DTYPE_F32, 2, {7, 5}, 140, 0},            /* > max: alone */
    {"model.layers.0.attn_shortcut_Q", SP_DTYPE_BF16, 2, {5, 3}, 30, 1},
    {"model.layers.0.empty", SP_DTYPE_F16, 2, {0, 4}, 0, 1},
    {"model.layers.0.self_attn.q_proj.weight", SP_DTYPE_F16, 2, {9, 5}, 90, 1},
    {"model.layers.0.scalar", SP_DTYPE_F64, 0, {0}, 8, 1},                     /* 30+90+8 = 128: fits exactly */
    {"model.layers.0.mlp.down_proj.weight", SP_DTYPE_I32, 2, {4, 11}, 176, 2}, /* > max: alone */
    {"model.layers.1.u8", SP_DTYPE_U8, 1, {3}, 3, 3},
    {"model.layers.1.mask", SP_DTYPE_BOOL, 2, {2, 2}, 4, 3},
    {"lm_head.weight", SP_DTYPE_BF16, 2, {6, 7}, 84, 3},
    {"trailing.empty", SP_DTYPE_F32, 3, {3, 0, 2}, 0, 3},
};
#define NT ((int)(sizeof T / sizeof T[0]))
#define SHARD_MAX_SMALL 128

static uint8_t *g_data[NT];

static void make_data(void) {
    for (int i = 0; i < NT; i++) {
        g_data[i] = malloc(T[i].nbytes ? (size_t)T[i].nbytes : 1);
        for (int64_t j = 0; j < T[i].nbytes; j++)
            g_data[i][j] = T[i].dtype == SP_DTYPE_BOOL ? (uint8_t)((i + j) & 1) : (uint8_t)(i * 31 + j * 7 + (j >> 3) + 1);
    }
}

static void hex128(const void *p, int64_t n, char out[33]) {
    XXH128_hash_t h = XXH3_128bits(p, (size_t)n);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
}

static char *join(const char *dir, const char *name) {
    char *p;
    if (asprintf(&p, "%s/%s", dir, name) < 0) abort();
    return p;
}

static int exists(const char *dir, const char *name) {
    char *p = join(dir, name);
    struct stat st;
    int r = stat(p, &st) == 0;
    free(p);
    return r;
}

static char *fresh_dir(const char *root, const char *tag) {
    char *d = join(root, tag);
    if (mkdir(d, 0755) != 0 && errno != EEXIST) {
        perror(d);
        exit(1);
    }
    return d;
}

static int count_tmp(const char *dir) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '\\.tmp$'", dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f) {
        if (fscanf(f, "%d", &n) != 1) n = -1;
        pclose(f);
    }
    return n;
}

/* Declares and writes the whole set, in chunks of varying size (1, 7, 13, ...
 * bytes) with a zero-length call in between, an explicit 0-byte write for the
 * first empty tensor and none for the trailing one. Returns the first error. */
static int write_set(const char *dir, int64_t shard_max, sp_stw **out) {
    sp_stw *w;
    SP_TRY(sp_stw_init(&w, dir, shard_max));
    *out = w;
    for (int i = 0; i < NT; i++) SP_TRY(sp_stw_add(w, T[i].name, T[i].dtype, T[i].ndim, T[i].shape));
    SP_TRY(sp_stw_plan(w));
    static const int64_t chunks[] = {1, 7, 13, 64, 3};
    for (int i = 0; i < NT; i++) {
        if (T[i].nbytes == 0) {
            if (i == 2) SP_TRY(sp_stw_write(w, T[i].name, NULL, 0));
            continue;
        }
        int64_t off = 0;
        for (int c = 0; off < T[i].nbytes; c++) {
            int64_t n = chunks[(c + i) % 5];
            if (n > T[i].nbytes - off) n = T[i].nbytes - off;
            SP_TRY(sp_stw_write(w, T[i].name, g_data[i] + off, n));
            if (c == 1) SP_TRY(sp_stw_write(w, T[i].name, g_data[i] + off + n, 0));
            off += n;
        }
    }
    return sp_stw_finish(w);
}

/* Checks one shard file against the set with the strict reader; returns the
 * number of tensors it held, or -1 if it does not open. */
static int check_shard_file(const char *path, int64_t shard_max, int nshards) {
    sp_st_file *f;
    int rc = sp_st_open(path, &f);
    CHECK(rc == 0, "%s: sp_st_open: %d %s", path, rc, sp_errmsg());
    if (rc) return -1;
    CHECK(sp_st_meta(f, "format") && strcmp(sp_st_meta(f, "format"), "pt") == 0, "%s: __metadata__.format", path);
    CHECK(sp_st_header_len(f) % 8 == 0, "%s: header length %lld not a multiple of 8", path, (long long)sp_st_header_len(f));
    int64_t data = sp_st_file_size(f) - 8 - sp_st_header_len(f);
    int64_t nonempty = 0, largest = 0;
    for (int k = 0; k < sp_st_count(f); k++) {
        const sp_st_tensor *t = sp_st_at(f, k);
        if (t->nbytes) nonempty++;
        if (t->nbytes > largest) largest = t->nbytes;
        int i = 0;
        while (i < NT && strcmp(T[i].name, t->name) != 0) i++;
        CHECK(i < NT, "%s: unexpected tensor %s", path, t->name);
        if (i == NT) continue;
        CHECK(t->dtype == T[i].dtype && t->ndim == T[i].ndim && t->nbytes == T[i].nbytes, "%s: %s dtype/shape", path, t->name);
        for (int d = 0; d < t->ndim; d++) CHECK(t->shape[d] == T[i].shape[d], "%s: %s dim %d", path, t->name, d);
        uint8_t *buf = malloc(t->nbytes ? (size_t)t->nbytes : 1);
        rc = sp_st_read_raw(f, t, buf);
        CHECK(rc == 0 && memcmp(buf, g_data[i], (size_t)t->nbytes) == 0, "%s: %s bytes differ", path, t->name);
        free(buf);
        char key[256], want[33];
        snprintf(key, sizeof key, "xxh3_128:%s", t->name);
        hex128(g_data[i], T[i].nbytes, want);
        const char *got = sp_st_meta(f, key);
        CHECK(got && strcmp(got, want) == 0, "%s: %s hash %s, want %s", path, t->name, got ? got : "(none)", want);
        if (nshards > 1) {
            char nm[64];
            snprintf(nm, sizeof nm, "model-%05d-of-%05d.safetensors", T[i].shard4 + 1, nshards);
            CHECK(strstr(path, nm) != NULL, "%s: tensor %s belongs in %s", path, t->name, nm);
        }
    }
    CHECK(data <= shard_max || nonempty == 1, "%s: %lld data bytes > max %lld with %lld tensors", path, (long long)data,
          (long long)shard_max, (long long)nonempty);
    int n = sp_st_count(f);
    sp_st_free(f);
    return n;
}

static void check_output(const char *dir, int64_t shard_max, int want_shards, sp_stw *w) {
    CHECK(sp_stw_shard_count(w) == want_shards, "shard count %d, want %d", sp_stw_shard_count(w), want_shards);
    CHECK(count_tmp(dir) == 0, "%s: %d .tmp files left", dir, count_tmp(dir));
    CHECK(exists(dir, "model.safetensors.index.json") == (want_shards > 1), "%s: index presence", dir);
    CHECK(exists(dir, "model.safetensors") == (want_shards == 1), "%s: model.safetensors presence", dir);

    /* Writer's own hashes equal independently computed ones. */
    for (int i = 0; i < NT; i++) {
        char want[33];
        hex128(g_data[i], T[i].nbytes, want);
        int k = sp_stw_find(w, T[i].name);
        CHECK(k == i, "find %s", T[i].name);
        const char *got = sp_stw_tensor_hash(w, i);
        CHECK(got && strcmp(got, want) == 0, "writer hash of %s", T[i].name);
        if (want_shards > 1) CHECK(sp_stw_tensor_shard(w, i) == T[i].shard4, "%s in shard %d", T[i].name, sp_stw_tensor_shard(w, i));
    }
    int seen = 0;
    for (int k = 0; k < sp_stw_shard_count(w); k++) {
        CHECK(sp_stw_shard_durable(w, k), "shard %d durable", k);
        char *p = join(dir, sp_stw_shard_name(w, k));
        int n = check_shard_file(p, shard_max, want_shards);
        if (n > 0) seen += n;
        free(p);
    }
    CHECK(seen == NT, "%d tensors over all shards, want %d", seen, NT);

    /* The index, parsed on its own. */
    if (want_shards > 1) {
        char *p = join(dir, "model.safetensors.index.json");
        FILE *f = fopen(p, "rb");
        char buf[65536];
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        buf[n] = 0;
        cJSON *j = cJSON_Parse(buf);
        CHECK(j != NULL, "index does not parse");
        int64_t total = 0;
        for (int i = 0; i < NT; i++) total += T[i].nbytes;
        cJSON *ts = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "metadata"), "total_size");
        CHECK(cJSON_IsNumber(ts) && (int64_t)ts->valuedouble == total, "index total_size");
        cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
        CHECK(cJSON_GetArraySize(map) == NT, "weight_map has %d entries", cJSON_GetArraySize(map));
        for (int i = 0; i < NT; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "model-%05d-of-%05d.safetensors", T[i].shard4 + 1, want_shards);
            cJSON *e = cJSON_GetObjectItemCaseSensitive(map, T[i].name);
            CHECK(cJSON_IsString(e) && strcmp(e->valuestring, nm) == 0, "weight_map[%s] = %s, want %s", T[i].name,
                  cJSON_IsString(e) ? e->valuestring : "?", nm);
        }
        cJSON_Delete(j);
        free(p);
    }

    /* The whole directory through the checkpoint reader. */
    sp_ckpt *c;
    int rc = sp_ckpt_open(dir, &c);
    CHECK(rc == 0, "sp_ckpt_open(%s): %d %s", dir, rc, sp_errmsg());
    if (rc) return;
    CHECK(sp_ckpt_shard_count(c) == want_shards, "ckpt shards %d", sp_ckpt_shard_count(c));
    CHECK(sp_ckpt_tensor_count(c) == NT, "ckpt tensors %d", sp_ckpt_tensor_count(c));
    for (int i = 0; i < NT; i++) {
        const sp_st_file *sf;
        const sp_st_tensor *t = sp_ckpt_find(c, T[i].name, &sf);
        CHECK(t != NULL, "ckpt lacks %s", T[i].name);
        if (!t) continue;
        uint8_t *buf = malloc(t->nbytes ? (size_t)t->nbytes : 1);
        CHECK(sp_st_read_raw(sf, t, buf) == 0 && t->nbytes == T[i].nbytes && memcmp(buf, g_data[i], (size_t)t->nbytes) == 0,
              "ckpt bytes of %s", T[i].name);
        free(buf);
    }
    sp_ckpt_free(c);
}

static void test_roundtrip(const char *root) {
    char *d1 = fresh_dir(root, "one");
    sp_stw *w = NULL;
    int rc = write_set(d1, 1 << 20, &w);
    CHECK(rc == 0, "one shard: %d %s", rc, sp_errmsg());
    if (!rc) check_output(d1, 1 << 20, 1, w);
    sp_stw_free(w);

    char *d4 = fresh_dir(root, "four");
    w = NULL;
    rc = write_set(d4, SHARD_MAX_SMALL, &w);
    CHECK(rc == 0, "four shards: %d %s", rc, sp_errmsg());
    if (!rc) check_output(d4, SHARD_MAX_SMALL, 4, w);
    sp_stw_free(w);

    /* Re-writing a single-shard output over the four-shard one removes the stale index. */
    w = NULL;
    rc = write_set(d4, 1 << 20, &w);
    CHECK(rc == 0 && !exists(d4, "model.safetensors.index.json"), "stale index removed: %d %s", rc, sp_errmsg());
    sp_stw_free(w);
    free(d1);
    free(d4);
}

static void test_empty_plan(const char *root) {
    char *d = fresh_dir(root, "none");
    sp_stw *w;
    CHECK(sp_stw_init(&w, d, 10) == 0, "init");
    CHECK(sp_stw_plan(w) == 0, "plan of no tensors: %s", sp_errmsg());
    CHECK(sp_stw_finish(w) == 0, "finish of no tensors: %s", sp_errmsg());
    char *p = join(d, "model.safetensors");
    sp_st_file *f;
    CHECK(sp_st_open(p, &f) == 0 && sp_st_count(f) == 0, "empty model.safetensors: %s", sp_errmsg());
    sp_st_free(f);
    free(p);
    sp_stw_free(w);
    free(d);
}

static void test_misuse(const char *root) {
    char *d = fresh_dir(root, "misuse");
    sp_stw *w;
    int64_t s2[2] = {2, 2}, bad[2] = {INT64_MAX / 2, 4}, neg[1] = {-1};
    uint8_t buf[64] = {0};
    CHECK(sp_stw_init(&w, d, 1000) == 0, "init");
    CHECK(sp_stw_add(w, "a", SP_DTYPE_F32, 2, s2) == 0, "add a");
    CHECK(sp_stw_add(w, "a", SP_DTYPE_F32, 2, s2) == SP_EX_SOFTWARE && strstr(sp_errmsg(), "twice"), "duplicate: %s", sp_errmsg());
    CHECK(sp_stw_add(w, "big", SP_DTYPE_F32, 2, bad) == SP_EX_SOFTWARE && strstr(sp_errmsg(), "overflow"), "overflow: %s",
          sp_errmsg());
    CHECK(sp_stw_add(w, "neg", SP_DTYPE_F32, 1, neg) == SP_EX_SOFTWARE, "negative dim");
    CHECK(sp_stw_add(w, "q\"uote", SP_DTYPE_F32, 2, s2) == SP_EX_SOFTWARE, "quote in name");
    CHECK(sp_stw_add(w, "__metadata__", SP_DTYPE_F32, 2, s2) == SP_EX_SOFTWARE, "reserved name");
    CHECK(sp_stw_add(w, "b", SP_DTYPE_I8, 2, s2) == 0, "add b");
    CHECK(sp_stw_write(w, "a", buf, 4) == SP_EX_SOFTWARE, "write before plan");
    CHECK(sp_stw_plan(w) == 0, "plan: %s", sp_errmsg());
    CHECK(sp_stw_add(w, "c", SP_DTYPE_I8, 2, s2) == SP_EX_SOFTWARE, "add after plan");
    CHECK(sp_stw_write(w, "b", buf, 4) == SP_EX_SOFTWARE && strstr(sp_errmsg(), "order") && strstr(sp_errmsg(), "'a'"),
          "out of order: %s", sp_errmsg());
    CHECK(sp_stw_write(w, "zz", buf, 4) == SP_EX_SOFTWARE && strstr(sp_errmsg(), "never declared"), "undeclared: %s", sp_errmsg());
    CHECK(sp_stw_write(w, "a", buf, 17) == SP_EX_SOFTWARE, "more bytes than declared");
    CHECK(sp_stw_write(w, "a", buf, 10) == 0, "partial a");
    CHECK(sp_stw_finish(w) == SP_EX_SOFTWARE && strstr(sp_errmsg(), "'a'") && strstr(sp_errmsg(), "10 of 16"),
          "finish incomplete: %s", sp_errmsg());
    CHECK(sp_stw_write(w, "a", buf, 6) == 0, "rest of a");
    CHECK(sp_stw_write(w, "a", buf, 1) == SP_EX_SOFTWARE && strstr(sp_errmsg(), "already complete"), "a again: %s", sp_errmsg());
    CHECK(sp_stw_write(w, "b", buf, 4) == 0, "b");
    CHECK(sp_stw_finish(w) == 0, "finish: %s", sp_errmsg());
    CHECK(sp_stw_finish(w) == SP_EX_SOFTWARE, "finish twice");
    sp_stw_free(w);
    CHECK(sp_stw_init(&w, d, 0) == SP_EX_SOFTWARE && w == NULL, "shard max 0");
    sp_stw_free(NULL);
    free(d);
}

static int plan_into(const char *dir) {
    sp_stw *w;
    int64_t s[1] = {4};
    int rc = sp_stw_init(&w, dir, 100);
    if (!rc) rc = sp_stw_add(w, "x", SP_DTYPE_F32, 1, s);
    if (!rc) rc = sp_stw_plan(w);
    sp_stw_free(w);
    return rc;
}

static void test_cantcreat(const char *root) {
    /* A directory that does not exist, and a regular file used as one. */
    char *missing = join(root, "does/not/exist");
    CHECK(plan_into(missing) == SP_EX_CANTCREAT && strstr(sp_errmsg(), missing), "missing dir: %s", sp_errmsg());
    char *file = join(root, "a_file");
    FILE *f = fopen(file, "w");
    fclose(f);
    CHECK(plan_into(file) == SP_EX_CANTCREAT && strstr(sp_errmsg(), file), "file as dir: %s", sp_errmsg());

    /* A read-only directory, checked as an unprivileged user (root writes anywhere). */
    char *ro = fresh_dir(root, "readonly");
    chmod(ro, 0555);
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(99);
        int rc = plan_into(ro);
        if (rc == SP_EX_CANTCREAT && !strstr(sp_errmsg(), ro)) rc = 98;
        _exit(rc);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == SP_EX_CANTCREAT, "read-only dir: status %d", WEXITSTATUS(st));
    chmod(ro, 0755);

    /* Directory removed after the plan: creating the shard fails with 73 naming it. */
    char *gone = fresh_dir(root, "gone");
    sp_stw *w;
    int64_t s[1] = {4};
    uint8_t buf[16] = {0};
    CHECK(sp_stw_init(&w, gone, 100) == 0 && sp_stw_add(w, "x", SP_DTYPE_F32, 1, s) == 0 && sp_stw_plan(w) == 0, "plan gone");
    rmdir(gone);
    CHECK(sp_stw_write(w, "x", buf, 16) == SP_EX_CANTCREAT && strstr(sp_errmsg(), "model.safetensors.tmp"), "create: %s",
          sp_errmsg());
    CHECK(sp_stw_write(w, "x", buf, 16) == SP_EX_CANTCREAT, "writer stays failed");
    CHECK(sp_stw_finish(w) == SP_EX_CANTCREAT, "finish after failure");
    sp_stw_free(w);
    free(missing);
    free(file);
    free(ro);
    free(gone);
}

/* Runs the four-shard write in a child with the Nth write (or fsync) failing
 * (fileio reads the variable once per process). After every failure: exit 74,
 * no index, and the final shard names that exist are exactly the shards
 * completed before the fault, each complete and valid. */
static void test_faults(const char *root, const char *var) {
    int faults = 0, n;
    for (n = 1; n < 400; n++) {
        char tag[64];
        snprintf(tag, sizeof tag, "fault_%s_%d", var + 16, n);
        char *d = fresh_dir(root, tag);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            /* fileio reads the variable once per process, and this one has
             * already done I/O: start a fresh image of this test. */
            char v[16];
            snprintf(v, sizeof v, "%d", n);
            setenv(var, v, 1);
            execl("/proc/self/exe", "test_st_writer", "--write-set", d, (char *)NULL);
            _exit(96);
        }
        int st;
        waitpid(pid, &st, 0);
        int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (rc == 0) {
            free(d);
            break;
        }
        faults++;
        CHECK(rc == SP_EX_IOERR, "%s=%d: exit %d, want 74", var, n, rc);
        int finals = 0, gap = 0;
        for (int k = 0; k < 4; k++) {
            char nm[64];
            snprintf(nm, sizeof nm, "model-%05d-of-00004.safetensors", k + 1);
            if (!exists(d, nm)) {
                gap = 1;
                continue;
            }
            CHECK(!gap, "%s=%d: %s exists after a missing shard", var, n, nm);
            char *p = join(d, nm);
            CHECK(check_shard_file(p, SHARD_MAX_SMALL, 4) > 0, "%s=%d: %s invalid", var, n, nm);
            free(p);
            finals++;
        }
        CHECK(finals < 4 || count_tmp(d) == 0, "%s=%d: all shards final yet tmp left", var, n);
        /* The index appears last (only a failed fsync of the directory after its
         * rename leaves it), and never names a shard that is not final. */
        CHECK(!exists(d, "model.safetensors.index.json") || finals == 4, "%s=%d: index exists with %d final shards", var, n,
              finals);
        free(d);
    }
    /* 4 headers + data chunks + 4 patches + index (writes); 4 shard + 4 dir + 2 index (fsyncs). */
    CHECK(faults >= 10 && n < 400, "%s: %d injected faults, ended at %d", var, faults, n);
    printf("%s: %d fault points, each exit 74 with only complete shards under final names\n", var, faults);
}

/* ---- the writer's building blocks: io/base/strbuf.h and sp_path_join ---- */
static void test_strbuf(void) {
    sp_sb b = {0};
    char *text = NULL;
    int64_t len = -1;
    CHECK(sp_sb_take(&b, &text, &len, "nothing") == 0 && text && len == 0 && text[0] == 0);
    free(text);
    /* Crosses the first capacity many times; bytes and NULs kept exactly. */
    char want[20000];
    int64_t n = 0;
    for (int i = 0; i < 1000; i++) {
        sp_sb_printf(&b, "%d,", i);
        n += snprintf(want + n, sizeof want - (size_t)n, "%d,", i);
    }
    sp_sb_put(&b, "x\0y", 3);
    memcpy(want + n, "x\0y", 3);
    n += 3;
    char big[3000]; /* longer than sp_sb_printf's stack buffer */
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = 0;
    sp_sb_printf(&b, "<%s>", big);
    n += snprintf(want + n, sizeof want - (size_t)n, "<%s>", big);
    sp_sb_str(&b, "end");
    n += snprintf(want + n, sizeof want - (size_t)n, "end");
    CHECK(b.len == n && !b.oom, "len %lld, want %lld", (long long)b.len, (long long)n);
    CHECK(sp_sb_take(&b, &text, &len, "text") == 0 && len == n && memcmp(text, want, (size_t)n) == 0 && text[n] == 0);
    free(text);
    CHECK(b.p == NULL && b.len == 0, "take leaves the buffer empty");
    /* A failed append is sticky: later appends are dropped, take reports it. */
    sp_sb_str(&b, "kept");
    sp_sb_put(&b, "z", INT64_MAX); /* the length overflows; nothing is read */
    CHECK(b.oom);
    sp_sb_str(&b, "dropped");
    CHECK(b.len == 4);
    text = (char *)"untouched";
    CHECK(sp_sb_take(&b, &text, &len, "a test header") == SP_EX_SOFTWARE && text == NULL);
    CHECK_MSG("out of memory building a test header");
    CHECK(b.p == NULL && !b.oom, "take frees a failed buffer");
    sp_sb_str(&b, "again");
    sp_sb_free(&b);
    CHECK(b.p == NULL && b.len == 0);
    sp_sb_free(NULL);
}

static void test_path_join(void) {
    static const char *const cases[][3] = {
        {"a", "b", "a/b"},       {"a/", "b", "a/b"},         {"/", "x", "/x"},
        {"", "x", "x"},          {"/d/e", "sub/f", "/d/e/sub/f"}, {"d", ".tmp", "d/.tmp"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *p = (char *)"unset";
        CHECK(sp_path_join(cases[i][0], cases[i][1], &p) == 0 && p && strcmp(p, cases[i][2]) == 0, "case %zu: '%s'", i,
              p ? p : "(null)");
        free(p);
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-set") == 0) {
        /* Child of test_faults: the four-shard write under injected faults. */
        make_data();
        sp_stw *w = NULL;
        int rc = write_set(argv[2], SHARD_MAX_SMALL, &w);
        if (rc && rc != SP_EX_IOERR) fprintf(stderr, "child: %d %s\n", rc, sp_errmsg());
        if (rc == SP_EX_IOERR && !strstr(sp_errmsg(), "injected")) {
            fprintf(stderr, "child: 74 without an injected fault: %s\n", sp_errmsg());
            rc = 97;
        }
        sp_stw_free(w);
        for (int i = 0; i < NT; i++) free(g_data[i]);
        return rc;
    }
    char tmpl[] = "/tmp/test_st_writer.XXXXXX";
    const char *root = argc > 1 ? argv[1] : mkdtemp(tmpl);
    if (!root) {
        perror("mkdtemp");
        return 1;
    }
    chmod(root, 0755);
    make_data();
    test_strbuf();
    test_path_join();
    test_roundtrip(root);
    test_empty_plan(root);
    test_misuse(root);
    test_cantcreat(root);
    test_faults(root, "SLICEPIPE_FAULT_WRITE");
    test_faults(root, "SLICEPIPE_FAULT_FSYNC");
    for (int i = 0; i < NT; i++) free(g_data[i]);
    if (g_fail) {
        fprintf(stderr, "%d check(s) failed (scratch: %s)\n", g_fail, root);
        return 1;
    }
    if (argc <= 1) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    }
    printf("test_st_writer: OK\n");
    return 0;
}
