/* tests/test_spill.c — resident spills (io/base/spill.h) against spills on disk.
 *
 * usage: test_spill WORKDIR
 *
 * For float32 and bfloat16 spills, one spill on disk and one resident get the
 * same writes (full width, a narrower width, rows filled in place through
 * sp_spill_rows) and must give:
 * - the same rows on every read, copied or used in place (sp_spill_read_at);
 * - the same write hash;
 * - before a sync, nothing in the resident one's file; after it, the same
 *   file bytes as the spill on disk, and only the written rows counted;
 * - the same bytes again when the file is opened for a resume and made
 *   resident;
 * - the same non-finite message (exit 65, token and component).
 * Then sp_stream_windows through resident and disk pairs, A -> B, B -> B in
 * place and a function working in place in its buffer, gives the same rows;
 * and sp_stream_groups calls its function on whole groups at multiples of
 * the group, with the rows one call per window gives.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "spill.h"
#include "stream.h"
#include "test_util.h"

enum { ROWS = 96, D = 40, MAXR = 32, NARROW = 27 };

static unsigned char *slurp(const char *path, int64_t *n) {
    FILE *f = fopen(path, "rb");
    *n = -1;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(sz > 0 ? (size_t)sz : 1);
    *n = b && fread(b, 1, (size_t)sz, f) == (size_t)sz ? sz : -1;
    fclose(f);
    return b;
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static void fill(float *x, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((int32_t)seed) / 2147483648.0f * 3.0f;
    }
}

/* Both spills' rows [row0, row0+n) at `width` agree, copied and in place. */
static void same_rows(sp_spill *d, sp_spill *r, int64_t row0, int64_t n, int64_t width, int in_place_expected) {
    float *a = malloc((size_t)(n * D) * 4), *b = malloc((size_t)(n * D) * 4);
    const float *v = NULL;
    CHECK(sp_spill_read(d, row0, n, width, a) == 0, "%s", sp_errmsg());
    CHECK(sp_spill_read_at(r, row0, n, width, b, &v) == 0, "%s", sp_errmsg());
    CHECK((v != b) == in_place_expected, "rows %lld+%lld width %lld: used in place %d, expected %d", (long long)row0,
          (long long)n, (long long)width, v != b, in_place_expected);
    CHECK(memcmp(a, v, (size_t)(n * width) * 4) == 0, "rows %lld+%lld width %lld differ (in place)", (long long)row0,
          (long long)n, (long long)width);
    CHECK(sp_spill_read(r, row0, n, width, b) == 0 && memcmp(a, b, (size_t)(n * width) * 4) == 0,
          "rows %lld+%lld width %lld differ (copied)", (long long)row0, (long long)n, (long long)width);
    free(a);
    free(b);
}

static void one_dtype(const char *dir, sp_dtype dt) {
    const char *tag = dt == SP_DTYPE_F32 ? "f32" : "bf16";
    char pd[4096], pr[4096];
    snprintf(pd, sizeof pd, "%s/disk-%s.act", dir, tag);
    snprintf(pr, sizeof pr, "%s/resident-%s.act", dir, tag);
    sp_spill *d = NULL, *r = NULL;
    CHECK(sp_spill_open(&d, pd, ROWS, D, dt, MAXR, 0) == 0, "%s", sp_errmsg());
    CHECK(sp_spill_open(&r, pr, ROWS, D, dt, MAXR, 0) == 0, "%s", sp_errmsg());
    CHECK(sp_spill_make_resident(r) == 0, "%s", sp_errmsg());
    if (!d || !r) return;
    float *x = malloc((size_t)(MAXR * D) * 4);
    const int full = dt == SP_DTYPE_F32; /* rows used in place: float32 at full width only */

    /* Hashed full-width writes covering the spill, in order. */
    sp_spill_hash_begin(d);
    sp_spill_hash_begin(r);
    for (int64_t r0 = 0; r0 < ROWS; r0 += MAXR) {
        fill(x, MAXR * D, (uint32_t)r0 + 1);
        CHECK(sp_spill_write(d, r0, MAXR, D, x) == 0, "%s", sp_errmsg());
        CHECK(sp_spill_write(r, r0, MAXR, D, x) == 0, "%s", sp_errmsg());
    }
    char hd[33], hr[33];
    sp_spill_hash_end(d, hd);
    sp_spill_hash_end(r, hr);
    CHECK(strcmp(hd, hr) == 0, "%s: write hashes %s and %s", tag, hd, hr);
    CHECK(file_size(pr) == 0 && sp_spill_bytes_written(r) == 0, "%s: a resident spill writes its file only at a sync "
          "(size %lld, counted %lld)", tag, (long long)file_size(pr), (long long)sp_spill_bytes_written(r));
    same_rows(d, r, 0, MAXR, D, full);
    same_rows(d, r, 40, 20, NARROW, 0);

    /* Narrower rows (the rest of their slots zeroed), then rows filled in place. */
    fill(x, 10 * NARROW, 77);
    CHECK(sp_spill_write(d, 50, 10, NARROW, x) == 0 && sp_spill_write(r, 50, 10, NARROW, x) == 0, "%s", sp_errmsg());
    float *in_place = sp_spill_rows(r, 70, 5, D);
    CHECK((in_place != NULL) == full, "%s: sp_spill_rows %p", tag, (void *)in_place);
    CHECK(sp_spill_rows(r, 70, 5, NARROW) == NULL && sp_spill_rows(d, 70, 5, D) == NULL, "%s: no rows in place "
          "below full width or on disk", tag);
    fill(x, 5 * D, 99);
    if (in_place) memcpy(in_place, x, 5 * D * 4);
    CHECK(sp_spill_write(d, 70, 5, D, x) == 0 && sp_spill_write(r, 70, 5, D, in_place ? in_place : x) == 0, "%s",
          sp_errmsg());
    same_rows(d, r, 48, 30, D, full);
    same_rows(d, r, 48, 30, NARROW, 0);

    /* A sync: the same file bytes; only the rows written since counted. */
    CHECK(sp_spill_sync(d) == 0 && sp_spill_sync(r) == 0, "%s", sp_errmsg());
    int64_t nd, nr;
    unsigned char *bd = slurp(pd, &nd), *br = slurp(pr, &nr);
    CHECK(nd == ROWS * D * sp_dtype_size(dt) && nd == nr && bd && br && memcmp(bd, br, (size_t)nd) == 0,
          "%s: files after a sync: %lld and %lld bytes, %s", tag, (long long)nd, (long long)nr,
          nd == nr && bd && br && memcmp(bd, br, (size_t)nd) == 0 ? "equal" : "different");
    CHECK(sp_spill_bytes_written(r) == nr, "%s: counted %lld bytes written, the file has %lld", tag,
          (long long)sp_spill_bytes_written(r), (long long)nr);
    fill(x, D, 5);
    CHECK(sp_spill_write(r, 90, 1, D, x) == 0 && sp_spill_write(d, 90, 1, D, x) == 0 && sp_spill_sync(r) == 0, "%s",
          sp_errmsg());
    CHECK(sp_spill_bytes_written(r) == nr + D * sp_dtype_size(dt), "%s: a second sync writes the one row written "
          "since (%lld bytes counted)", tag, (long long)sp_spill_bytes_written(r));
    free(bd);
    free(br);

    /* Kept for a resume, then made resident: the file's bytes come back. */
    sp_spill_free(r, 0);
    r = NULL;
    CHECK(sp_spill_open(&r, pr, ROWS, D, dt, MAXR, 1) == 0 && sp_spill_make_resident(r) == 0, "%s", sp_errmsg());
    if (r) {
        same_rows(d, r, 0, MAXR, D, full);
        same_rows(d, r, 64, MAXR, D, full);
        same_rows(d, r, 60, 31, NARROW, 0);
    }

    /* A non-finite activation: the same refusal. */
    fill(x, D, 3);
    x[7] = NAN;
    CHECK(sp_spill_write(d, 33, 1, D, x) == 0 && r && sp_spill_write(r, 33, 1, D, x) == 0, "%s", sp_errmsg());
    float *y = malloc((size_t)(MAXR * D) * 4);
    const float *v;
    int rc = sp_spill_read(d, 32, 4, D, y);
    char md[1024];
    snprintf(md, sizeof md, "%s", sp_errmsg());
    CHECK(rc == SP_EX_DATAERR && strstr(md, "token 33, component 7"), "%s: on disk: %d %s", tag, rc, md);
    rc = r ? sp_spill_read_at(r, 32, 4, D, y, &v) : -1;
    CHECK(rc == SP_EX_DATAERR && strstr(sp_errmsg(), "token 33, component 7"), "%s: resident: %d %s", tag, rc,
          sp_errmsg());
    free(x);
    free(y);
    sp_spill_free(d, 1);
    sp_spill_free(r, 1);
}

/* A spill of 4.6 MiB, whose image is 2 MiB-aligned: its syncs write the
 * 4 KiB-aligned middle of the dirty rows with O_DIRECT where the file system
 * takes it, the ends through the page cache; the file's bytes are those of
 * a spill on disk after each sync. */
static void big(const char *dir) {
    enum { BR = 1200, BD = 1000, BC = 400 };
    char pd[4096], pr[4096];
    snprintf(pd, sizeof pd, "%s/big-disk.act", dir);
    snprintf(pr, sizeof pr, "%s/big-resident.act", dir);
    sp_spill *d = NULL, *r = NULL;
    CHECK(sp_spill_open(&d, pd, BR, BD, SP_DTYPE_F32, BC, 0) == 0 && sp_spill_open(&r, pr, BR, BD, SP_DTYPE_F32, BC, 0) == 0 &&
              sp_spill_make_resident(r) == 0, "%s", sp_errmsg());
    if (!d || !r) return;
    float *x = malloc((size_t)(BC * BD) * 4);
    for (int64_t r0 = 0; r0 < BR; r0 += BC) {
        fill(x, BC * BD, (uint32_t)r0 + 7);
        CHECK(sp_spill_write(d, r0, BC, BD, x) == 0 && sp_spill_write(r, r0, BC, BD, x) == 0, "%s", sp_errmsg());
    }
    const int64_t from[2] = {0, 333}, n[2] = {0, 111}, width[2] = {BD, 555};
    for (int k = 0; k < 2; k++) { /* the whole file, then rows 333..443 at a narrower width (unaligned ends) */
        if (n[k]) {
            fill(x, n[k] * width[k], 11);
            CHECK(sp_spill_write(d, from[k], n[k], width[k], x) == 0 && sp_spill_write(r, from[k], n[k], width[k], x) == 0,
                  "%s", sp_errmsg());
        }
        CHECK(sp_spill_sync(d) == 0 && sp_spill_sync(r) == 0, "%s", sp_errmsg());
        int64_t nd, nr;
        unsigned char *bd = slurp(pd, &nd), *br = slurp(pr, &nr);
        CHECK(nd == BR * BD * 4 && nd == nr && bd && br && memcmp(bd, br, (size_t)nd) == 0,
              "big spill, sync %d: files of %lld and %lld bytes, %s", k, (long long)nd, (long long)nr,
              nd == nr && bd && br && memcmp(bd, br, (size_t)nd) == 0 ? "equal" : "different");
        free(bd);
        free(br);
    }
    free(x);
    sp_spill_free(d, 1);
    sp_spill_free(r, 1);
}

/* Stream functions: out = 2·in + window (reads in only), and in place. */
static int twice(void *ctx, int64_t w, const float *in, float *out) {
    (void)ctx;
    for (int64_t i = 0; i < 8 * D; i++) out[i] = 2.0f * in[i] + (float)w;
    return 0;
}
static int bump(void *ctx, int64_t w, const float *in, float *out) {
    (void)ctx, (void)in;
    for (int64_t i = 0; i < 8 * D; i++) out[i] += (float)w + 0.5f;
    return 0;
}

static void streams(const char *dir) {
    enum { T = 8, W = ROWS / T, CW = 3 };
    sp_spill *s[2][2] = {{0}};
    const char *tags[2] = {"disk", "resident"};
    float *bin = malloc((size_t)(CW * T * D) * 4), *bout = malloc((size_t)(CW * T * D) * 4), *x = malloc((size_t)(T * D) * 4);
    for (int m = 0; m < 2; m++) {
        char tag[32];
        snprintf(tag, sizeof tag, "stream-%s", tags[m]);
        CHECK(sp_stream_scratch_pair(dir, tag, ROWS, D, CW * T, &s[m][0], &s[m][1]) == 0, "%s", sp_errmsg());
        if (!s[m][0] || !s[m][1]) return;
        if (m) CHECK(sp_spill_make_resident(s[m][0]) == 0 && sp_spill_make_resident(s[m][1]) == 0, "%s", sp_errmsg());
        for (int64_t w = 0; w < W; w++) {
            fill(x, T * D, (uint32_t)(1000 + w));
            CHECK(sp_spill_write(s[m][0], w * T, T, D, x) == 0, "%s", sp_errmsg());
        }
        CHECK(sp_stream_windows(s[m][0], D, s[m][1], D, W, T, CW, bin, bout, twice, NULL, NULL) == 0, "%s", sp_errmsg());
        CHECK(sp_stream_windows(s[m][1], D, s[m][1], D, W, T, CW, bin, bout, twice, NULL, NULL) == 0, "%s", sp_errmsg());
        CHECK(sp_stream_windows(s[m][1], D, s[m][1], D, W, T, CW, bin, bin, bump, NULL, NULL) == 0, "%s", sp_errmsg());
    }
    same_rows(s[0][1], s[1][1], 0, CW * T, D, 1);
    same_rows(s[0][1], s[1][1], 72, CW * T, D, 1);
    same_rows(s[0][0], s[1][0], 30, CW * T, D, 1); /* A untouched */
    for (int m = 0; m < 2; m++) sp_spill_free(s[m][0], 1), sp_spill_free(s[m][1], 1);
    free(bin);
    free(bout);
    free(x);
}

/* sp_stream_groups: out = 2·in + window, a group of windows per call; the
 * calls it made. */
typedef struct calls {
    int n;
    int64_t w0[16], nwin[16];
} calls;

static int twice_group(void *ctx, int64_t w0, int64_t nwin, const float *in, float *out) {
    calls *c = ctx;
    if (c->n < 16) c->w0[c->n] = w0, c->nwin[c->n] = nwin;
    c->n++;
    for (int64_t k = 0; k < nwin; k++) twice(NULL, w0 + k, in + k * 8 * D, out + k * 8 * D);
    return 0;
}

/* Groups of 3 over 11 windows in chunks of 6: calls at windows 0, 3, 6, 9
 * of 3, 3, 3 and 2 windows (a chunk's last group never spills into the
 * next chunk), and the same rows as one call per window. */
static void grouped(const char *dir) {
    enum { T = 8, W = 11, CW = 6, G = 3 };
    sp_spill *a[2] = {0}, *b[2] = {0};
    float *bin = malloc((size_t)(CW * T * D) * 4), *bout = malloc((size_t)(CW * T * D) * 4), *x = malloc((size_t)(T * D) * 4);
    for (int m = 0; m < 2; m++) {
        CHECK(sp_stream_scratch_pair(dir, m ? "group-windows" : "group-groups", ROWS, D, CW * T, &a[m], &b[m]) == 0, "%s",
              sp_errmsg());
        if (!a[m] || !b[m]) return;
        for (int64_t w = 0; w < W; w++) {
            fill(x, T * D, (uint32_t)(2000 + w));
            CHECK(sp_spill_write(a[m], w * T, T, D, x) == 0, "%s", sp_errmsg());
        }
    }
    calls c = {0};
    CHECK(sp_stream_groups(a[0], D, b[0], D, W, T, CW, G, bin, bout, twice_group, &c, NULL) == 0, "%s", sp_errmsg());
    CHECK(sp_stream_windows(a[1], D, b[1], D, W, T, CW, bin, bout, twice, NULL, NULL) == 0, "%s", sp_errmsg());
    const int64_t want_w0[4] = {0, 3, 6, 9}, want_n[4] = {3, 3, 3, 2};
    CHECK(c.n == 4, "groups: %d calls, want 4", c.n);
    for (int i = 0; i < 4 && i < c.n; i++)
        CHECK(c.w0[i] == want_w0[i] && c.nwin[i] == want_n[i], "group %d: windows %lld + %lld, want %lld + %lld", i,
              (long long)c.w0[i], (long long)c.nwin[i], (long long)want_w0[i], (long long)want_n[i]);
    float *r0 = malloc((size_t)(T * D) * 4), *r1 = malloc((size_t)(T * D) * 4);
    for (int64_t w = 0; w < W; w++) /* window by window: a read takes at most a chunk */
        CHECK(sp_spill_read(b[0], w * T, T, D, r0) == 0 && sp_spill_read(b[1], w * T, T, D, r1) == 0 &&
                  memcmp(r0, r1, (size_t)(T * D) * 4) == 0,
              "groups: window %lld differs from one call per window", (long long)w);
    free(r0);
    free(r1);
    for (int m = 0; m < 2; m++) sp_spill_free(a[m], 1), sp_spill_free(b[m], 1);
    free(bin);
    free(bout);
    free(x);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_spill WORKDIR\n");
        return 64;
    }
    mkdir_p(argv[1]);
    one_dtype(argv[1], SP_DTYPE_F32);
    one_dtype(argv[1], SP_DTYPE_BF16);
    streams(argv[1]);
    grouped(argv[1]);
    big(argv[1]);
    if (g_fail) fprintf(stderr, "test_spill: %d failures\n", g_fail);
    else printf("test_spill: ok\n");
    return g_fail ? 1 : 0;
}
