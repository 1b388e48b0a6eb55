/* tests/test_safetensors.c — unit tests for io/formats/safetensors.{c,h}, and a tiny
 * driver used by tests/test_st_corpus.py.
 *
 *   test_safetensors unit DIR        run the unit tests, writing files in DIR
 *   test_safetensors inspect PATH    open PATH (file or model dir), read every
 *                                    float tensor; on error print
 *                                    "test_safetensors: <message>" and exit with the status
 *   test_safetensors dump PATH NAME  print tensor NAME of PATH as float32, one per line
 */
#include "error.h"
#include "safetensors.h"
#include "utf8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

/* ---------------- driver ---------------- */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int read_all(const sp_st_file *f, int64_t *nread) {
    for (int i = 0; i < sp_st_count(f); i++) {
        const sp_st_tensor *t = sp_st_at(f, i);
        if (!sp_dtype_is_float(t->dtype) && t->dtype != SP_DTYPE_F64) continue;
        float *buf;
        SP_TRY(sp_alloc((void **)&buf, t->numel, sizeof(float), t->name));
        int rc = sp_st_read_f32(f, t, buf);
        free(buf);
        if (rc) return rc;
        (*nread)++;
    }
    return 0;
}

static int cmd_inspect(const char *path) {
    int64_t nread = 0;
    int rc;
    if (is_dir(path)) {
        sp_ckpt *c;
        if ((rc = sp_ckpt_open(path, &c))) return rc;
        for (int s = 0; s < sp_ckpt_shard_count(c) && !rc; s++) rc = read_all(sp_ckpt_shard(c, s), &nread);
        if (!rc) printf("%s: %d shards, %d tensors, %lld float tensors read\n", path, sp_ckpt_shard_count(c),
                        sp_ckpt_tensor_count(c), (long long)nread);
        sp_ckpt_free(c);
    } else {
        sp_st_file *f;
        if ((rc = sp_st_open(path, &f))) return rc;
        rc = read_all(f, &nread);
        if (!rc) printf("%s: %d tensors, %lld float tensors read\n", path, sp_st_count(f), (long long)nread);
        sp_st_free(f);
    }
    return rc;
}

static int cmd_dump(const char *path, const char *name) {
    sp_st_file *f;
    SP_TRY(sp_st_open(path, &f));
    const sp_st_tensor *t = sp_st_find(f, name);
    int rc = 0;
    if (!t) {
        rc = sp_fail(SP_EX_DATAERR, "%s: no tensor '%s'", path, name);
    } else {
        float *buf;
        rc = sp_alloc((void **)&buf, t->numel, sizeof(float), name);
        if (!rc) rc = sp_st_read_f32(f, t, buf);
        for (int64_t i = 0; !rc && i < t->numel; i++) printf("%.9g\n", buf[i]);
        free(buf);
    }
    sp_st_free(f);
    return rc;
}

/* ---------------- unit tests ---------------- */

static const char *g_dir;

static char *tpath(const char *name) {
    static char buf[4][4096];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

/* Writes 8-byte N, header padded with spaces to hdr_len (>= strlen), then data. */
static void write_st(const char *path, const char *hdr, size_t hdr_len, const void *data, size_t n) {
    size_t h = strlen(hdr);
    if (hdr_len < h) hdr_len = h;
    FILE *fp = fopen(path, "wb");
    SP_ASSERT(fp);
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)((uint64_t)hdr_len >> (8 * i));
    fwrite(le, 1, 8, fp);
    fwrite(hdr, 1, h, fp);
    for (size_t i = h; i < hdr_len; i++) fputc(' ', fp);
    if (n) fwrite(data, 1, n, fp);
    SP_ASSERT(fclose(fp) == 0);
}

static void put16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32f(unsigned char *p, float v) { memcpy(p, &v, 4); }
static void put64d(unsigned char *p, double v) { memcpy(p, &v, 8); }

/* Mixed dtypes at unaligned offsets: U8[3] then F16[5] (offset 3), BF16[4]
 * (offset 13), F32[4] (offset 21), F64[2] (offset 37), F32 scalar (53), an empty F32. */
static void test_mixed_unaligned(void) {
    unsigned char d[57];
    memset(d, 0xAB, sizeof d);
    d[0] = 1, d[1] = 2, d[2] = 3;
    const uint16_t h[5] = {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x3555}; /* 1, -2.5, 65504, 2^-24, 0.333251953125 */
    const float hv[5] = {1.0f, -2.5f, 65504.0f, 5.9604644775390625e-8f, 0.333251953125f};
    for (int i = 0; i < 5; i++) put16(d + 3 + 2 * i, h[i]);
    const uint16_t b[4] = {0x3F80, 0xC049, 0x7F7F, 0x0001}; /* 1, -3.140625, max bf16, min subnormal */
    for (int i = 0; i < 4; i++) put16(d + 13 + 2 * i, b[i]);
    const float fv[4] = {1.5f, -0.0f, 3.4028234663852886e38f, 1.4e-45f};
    for (int i = 0; i < 4; i++) put32f(d + 21 + 4 * i, fv[i]);
    put64d(d + 37, 0.1);
    put64d(d + 45, -1e30);
    put32f(d + 53, 42.25f);
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\",\"z\":\"\\u00e9\"},"
        "\"f\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[21,37]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[13,21]},"
        "\"empty\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[57,57]},"
        "\"pad\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
        "\"h\":{\"dtype\":\"F16\",\"shape\":[5,1],\"data_offsets\":[3,13]},"
        "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[37,53]},"
        "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[53,57]}}";
    const char *p = tpath("mixed.safetensors");
    size_t hlen = strlen(hdr) + 5; /* 8+N odd: every tensor is misaligned */
    if ((8 + hlen) % 2 == 0) hlen++;
    write_st(p, hdr, hlen, d, sizeof d);

    sp_st_file *f;
    int rc = sp_st_open(p, &f);
    CHECK(rc == 0);
    if (rc) {
        fprintf(stderr, "  %s\n", sp_errmsg());
        return;
    }
    CHECK(sp_st_header_len(f) == (int64_t)hlen);
    CHECK(sp_st_file_size(f) == (int64_t)(8 + hlen + sizeof d));
    CHECK(sp_st_count(f) == 7);
    CHECK(strcmp(sp_st_path(f), p) == 0);
    CHECK(sp_st_fd(f) >= 0);
    /* data-offset order; the empty tensor sits at the very end (57) */
    const char *order[] = {"pad", "h", "b", "f", "d", "s", "empty"};
    for (int i = 0; i < 7 && i < sp_st_count(f); i++) CHECK(strcmp(sp_st_at(f, i)->name, order[i]) == 0);
    CHECK(sp_st_meta(f, "format") && strcmp(sp_st_meta(f, "format"), "pt") == 0);
    CHECK(sp_st_meta(f, "z") && strcmp(sp_st_meta(f, "z"), "\xc3\xa9") == 0);
    CHECK(sp_st_meta(f, "missing") == NULL);
    CHECK(sp_st_find(f, "nope") == NULL);
    CHECK(sp_st_find(f, "") == NULL);

    const sp_st_tensor *t = sp_st_find(f, "h");
    CHECK(t && t->dtype == SP_DTYPE_F16 && t->ndim == 2 && t->shape[0] == 5 && t->shape[1] == 1 && t->numel == 5 &&
          t->nbytes == 10 && t->file_offset == (int64_t)(8 + hlen + 3));
    float out[5];
    if (t) {
        CHECK(sp_st_read_f32(f, t, out) == 0);
        for (int i = 0; i < 5; i++) CHECK(out[i] == hv[i]);
    }
    t = sp_st_find(f, "b");
    CHECK(t && t->dtype == SP_DTYPE_BF16 && t->file_offset == (int64_t)(8 + hlen + 13));
    if (t) {
        CHECK(sp_st_read_f32(f, t, out) == 0);
        CHECK(out[0] == 1.0f && out[1] == -3.140625f && out[2] == 3.3895313892515355e38f &&
              out[3] == 9.183549615799121e-41f);
    }
    t = sp_st_find(f, "f");
    if (t) {
        CHECK(sp_st_read_f32(f, t, out) == 0);
        for (int i = 0; i < 4; i++) CHECK(memcmp(&out[i], &fv[i], 4) == 0); /* -0.0 keeps its sign */
    }
    CHECK(t != NULL);
    t = sp_st_find(f, "d");
    if (t) {
        CHECK(sp_st_read_f32(f, t, out) == 0);
        CHECK(out[0] == 0.1f && out[1] == -1e30f);
    }
    CHECK(t != NULL);
    t = sp_st_find(f, "s");
    CHECK(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
    if (t) {
        out[0] = 0;
        CHECK(sp_st_read_f32(f, t, out) == 0 && out[0] == 42.25f);
    }
    t = sp_st_find(f, "empty");
    CHECK(t && t->ndim == 2 && t->numel == 0 && t->nbytes == 0);
    if (t) CHECK(sp_st_read_f32(f, t, out) == 0);
    t = sp_st_find(f, "pad");
    if (t) {
        unsigned char raw[3] = {0};
        CHECK(sp_st_read_raw(f, t, raw) == 0 && raw[0] == 1 && raw[1] == 2 && raw[2] == 3);
        CHECK(sp_st_read_f32(f, t, out) == SP_EX_DATAERR);
        CHECK_MSG("'pad'");
        CHECK_MSG("U8");
    }
    CHECK(t != NULL);
    sp_st_free(f);
    sp_st_free(NULL);
}

/* A BF16 tensor bigger than the conversion chunk, with a NaN far into it, and
 * an F16 Inf: the element index must be global, not chunk-relative. */
static void test_nonfinite_index(void) {
    enum { N = 100003 };
    unsigned char *d = malloc(2 * N + 1);
    SP_ASSERT(d);
    d[0] = 7;
    for (int i = 0; i < N; i++) put16(d + 1 + 2 * i, sp_f32_to_bf16((float)(i % 256) * 0.5f - 64.0f));
    char hdr[256];
    snprintf(hdr, sizeof hdr,
             "{\"pad\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
             "\"w\":{\"dtype\":\"BF16\",\"shape\":[%d],\"data_offsets\":[1,%d]}}",
             N, 1 + 2 * N);
    const char *p = tpath("big.safetensors");
    write_st(p, hdr, 0, d, 2 * N + 1);
    float *out = malloc(sizeof(float) * N);
    SP_ASSERT(out);
    sp_st_file *f;
    CHECK(sp_st_open(p, &f) == 0);
    const sp_st_tensor *t = f ? sp_st_find(f, "w") : NULL;
    if (t) {
        CHECK(sp_st_read_f32(f, t, out) == 0);
        int ok = 1;
        for (int i = 0; i < N; i++) ok &= out[i] == (float)(i % 256) * 0.5f - 64.0f;
        CHECK(ok);
    }
    sp_st_free(f);
    put16(d + 1 + 2 * 77777, 0x7FC0); /* NaN */
    put16(d + 1 + 2 * 90000, 0x7F80); /* Inf, after the first bad one */
    write_st(p, hdr, 0, d, 2 * N + 1);
    CHECK(sp_st_open(p, &f) == 0);
    t = f ? sp_st_find(f, "w") : NULL;
    if (t) {
        CHECK(sp_st_read_f32(f, t, out) == SP_EX_DATAERR);
        CHECK_MSG("tensor 'w': non-finite value (NaN or Inf) at element 77777");
        CHECK_MSG(p);
    }
    sp_st_free(f);

    /* F16 +Inf at element 2; F64 finite but beyond float32 */
    unsigned char e[6 + 16];
    put16(e, 0x3C00), put16(e + 2, 0x3C00), put16(e + 4, 0x7C00);
    put64d(e + 6, 1.0), put64d(e + 14, 1e300);
    write_st(p,
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},"
             "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[6,22]}}",
             0, e, sizeof e);
    CHECK(sp_st_open(p, &f) == 0);
    if (f) {
        CHECK(sp_st_read_f32(f, sp_st_find(f, "h"), out) == SP_EX_DATAERR);
        CHECK_MSG("tensor 'h': non-finite value (NaN or Inf) at element 2");
        CHECK(sp_st_read_f32(f, sp_st_find(f, "d"), out) == SP_EX_DATAERR);
        CHECK_MSG("tensor 'd'");
        CHECK_MSG("element 1");
        CHECK_MSG("out of float32 range");
    }
    sp_st_free(f);
    free(out);
    free(d);
}

/* Header-level strictness that is easier to pin down in C than in the corpus. */
static void expect_header(const char *hdr, int want_rc, const char *needle, int line) {
    char full[1024];
    /* wrap a single 4-byte F32 tensor "w" after the custom part */
    snprintf(full, sizeof full, "%s", hdr);
    const char *p = tpath("h.safetensors");
    unsigned char data[4] = {0, 0, 128, 63}; /* 1.0f */
    size_t dn = strstr(hdr, "[0,4]") ? 4 : 0;
    write_st(p, full, 0, data, dn);
    sp_st_file *f = NULL;
    int rc = sp_st_open(p, &f);
    if (rc != want_rc || (needle && !strstr(sp_errmsg(), needle)) || (rc && !strstr(sp_errmsg(), p))) {
        fprintf(stderr, "%s:%d: header %s: rc %d (want %d), message '%s' (want '%s')\n", __FILE__, line, hdr, rc,
                want_rc, sp_errmsg(), needle ? needle : "");
        g_fail++;
    }
    CHECK(rc == 0 ? f != NULL : f == NULL);
    sp_st_free(f);
}
#define W(shape_off) "{\"w\":{\"dtype\":\"F32\",\"shape\":" shape_off "}}"
#define GOOD(h) expect_header(h, 0, NULL, __LINE__)
#define BAD(h, needle) expect_header(h, SP_EX_DATAERR, needle, __LINE__)

/* io/base/utf8: the offset is that of the first bad sequence's lead byte (the
 * manifest turns it into a line number, safetensors into a byte offset). */
static void test_utf8_offsets(void) {
    static const struct {
        const char *s;
        int64_t bad;
    } cases[] = {
        {"", -1},
        {"plain ascii", -1},
        {"\xc2\x80 \xdf\xbf \xe0\xa0\x80 \xed\x9f\xbf \xee\x80\x80 \xf0\x90\x80\x80 \xf4\x8f\xbf\xbf", -1}, /* edges */
        {"ab\x80", 2},                 /* lone continuation */
        {"a\xc0\xaf", 1},              /* overlong 2-byte lead */
        {"a\xc1\xbf", 1},
        {"xy\xe0\x9f\xbf", 2},         /* 3-byte overlong */
        {"\xed\xa0\x80", 0},           /* surrogate U+D800 */
        {"ok\xed\xbf\xbf", 2},         /* surrogate U+DFFF */
        {"\xf0\x8f\xbf\xbf", 0},       /* 4-byte overlong */
        {"z\xf4\x90\x80\x80", 1},      /* U+110000 */
        {"\xf5\x80\x80\x80", 0},
        {"\xff", 0},
        {"\xc3\xa9\xe2\x82", 2},       /* valid é, then a truncated 3-byte sequence */
        {"\xe2\x82\x41", 0},           /* bad third byte: the lead's offset */
        {"\xf0\x9f\x98\x80\xf0\x9f\x98", 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int64_t got = sp_utf8_invalid_at(cases[i].s, (int64_t)strlen(cases[i].s));
        CHECK(got == cases[i].bad, "case %zu: got %lld, want %lld", i, (long long)got, (long long)cases[i].bad);
    }
    /* NUL is valid UTF-8; n, not the terminator, bounds the scan. */
    CHECK(sp_utf8_invalid_at("a\0b", 3) == -1);
    CHECK(sp_utf8_invalid_at("ab\xc3\xa9", 3) == 2);
    CHECK(sp_utf8_invalid_at(NULL, 0) == -1);
}

static void test_header_strictness(void) {
    GOOD("{}");
    GOOD(W("[1],\"data_offsets\":[0,4]"));
    GOOD(W("[1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]"));
    GOOD(W("[1.0],\"data_offsets\":[0,4]"));  /* numbers are checked by value */
    GOOD(W("[1e0],\"data_offsets\":[0,4]"));
    GOOD("{\"\xf0\x9f\x98\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"); /* 4-byte UTF-8 */
    GOOD("{\"\\ud83d\\ude00\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");    /* escaped pair */
    GOOD("{ \"w\" :\t{\"shape\":[1],\n\"dtype\":\"F32\",\r\"data_offsets\":[0,4]} }");

    BAD("{\"\xc0\xaf\":1}", "UTF-8");            /* overlong '/' */
    BAD("{\"\xe0\x80\xaf\":1}", "UTF-8");        /* 3-byte overlong */
    BAD("{\"\xed\xa0\x80\":1}", "UTF-8");        /* encoded surrogate */
    BAD("{\"\xf4\x90\x80\x80\":1}", "UTF-8");    /* > U+10FFFF */
    BAD("{\"\xe2\x82\":1}", "UTF-8");            /* truncated sequence */
    BAD("{\"\\ud800\":1}", "surrogate");         /* lone escaped high surrogate */
    BAD("{\"\\udc00x\":1}", "surrogate");
    BAD("{\"a\\u0000b\":1}", "\\u0000");
    BAD("{\"a\tb\":1}", "control character");
    BAD("{\"a\\x\":1}", "bad escape");
    BAD(W("[01],\"data_offsets\":[0,4]"), "leading zero");
    BAD(W("[1.],\"data_offsets\":[0,4]"), "not valid JSON");
    BAD(W("[-.5],\"data_offsets\":[0,4]"), "not valid JSON");
    BAD(W("[+1],\"data_offsets\":[0,4]"), "not valid JSON");
    BAD(W("[1,],\"data_offsets\":[0,4]"), "not valid JSON");
    BAD("{\"w\":1,}", "not valid JSON");
    BAD("{\"w\":tru}", "not valid JSON");
    BAD("{}\n", "trailing garbage");
    BAD("{}}", "trailing garbage");
    BAD(" {}", "does not begin with '{'");
    BAD("", "does not begin with '{'");
    BAD("[]", "does not begin with '{'");
    BAD("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
        "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
        "nested too deeply");
    BAD(W("[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]"), "9 dims");
    BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", "unknown field 'extra'");
    BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "duplicate key 'dtype'");
    BAD("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "missing field 'shape'");
    BAD("{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", "dtype is not a string");
    BAD("{\"w\":[1]}", "not a JSON object");
    BAD(W("[4503599627370496,4503599627370496,0],\"data_offsets\":[0,0]"), "overflow"); /* 2^52*2^52*0 */
    BAD(W("[0,4503599627370496,4503599627370496],\"data_offsets\":[0,0]"), "overflow"); /* order-independent */
    BAD(W("[9007199254740991,1024],\"data_offsets\":[0,0]"), "overflow");
    BAD(W("[1],\"data_offsets\":[0,4.5]"), "fractional");
    BAD(W("[1],\"data_offsets\":[0,null]"), "not a number");
    BAD(W("[1],\"data_offsets\":{}"), "not an array of 2");
    BAD("{\"__metadata__\":{\"a\":\"x\",\"a\":\"y\"}}", "duplicate key 'a'");
    BAD("{\"__metadata__\":[]}", "__metadata__ is not a JSON object");
}

/* A two-shard checkpoint: lookups, shard attribution, shape check. */
static void test_ckpt(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/ck", g_dir);
    mkdir(dir, 0755);
    unsigned char a[24], b[8];
    for (int i = 0; i < 6; i++) put32f(a + 4 * i, (float)i + 0.25f);
    put32f(b, -1.0f), put32f(b + 4, 2.0f);
    char p[4200];
    snprintf(p, sizeof p, "%s/s1.safetensors", dir);
    write_st(p, "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 0, a, 24);
    snprintf(p, sizeof p, "%s/s2.safetensors", dir);
    write_st(p, "{\"y.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, b, 8);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    FILE *fp = fopen(p, "w");
    SP_ASSERT(fp);
    fputs("{\"metadata\":{\"total_size\":32},\"weight_map\":{\"y.bias\":\"s2.safetensors\",\n"
          "  \"x.weight\":\"./s1.safetensors\"}}\n",
          fp);
    fclose(fp);

    sp_ckpt *c;
    int rc = sp_ckpt_open(dir, &c);
    CHECK(rc == 0);
    if (rc) {
        fprintf(stderr, "  %s\n", sp_errmsg());
        return;
    }
    CHECK(sp_ckpt_shard_count(c) == 2);
    CHECK(sp_ckpt_tensor_count(c) == 2);
    const sp_st_file *f = NULL;
    const sp_st_tensor *t = sp_ckpt_find(c, "y.bias", &f);
    CHECK(t && f && strstr(sp_st_path(f), "s2.safetensors") && t->shape[0] == 2);
    t = sp_ckpt_find(c, "x.weight", &f);
    CHECK(t && f && strstr(sp_st_path(f), "s1.safetensors") && t->numel == 6);
    CHECK(sp_ckpt_find(c, "z", &f) == NULL && f == NULL);
    float out[6] = {0};
    const int64_t good[2] = {2, 3}, bad[2] = {3, 2};
    CHECK(sp_ckpt_read_f32(c, "x.weight", 2, good, out) == 0);
    for (int i = 0; i < 6; i++) CHECK(out[i] == (float)i + 0.25f);
    CHECK(sp_ckpt_read_f32(c, "x.weight", 2, bad, out) == SP_EX_DATAERR);
    CHECK_MSG("s1.safetensors: tensor 'x.weight': shape [2, 3] but config implies [3, 2]");
    CHECK(sp_ckpt_read_f32(c, "x.weight", 1, good, out) == SP_EX_DATAERR);
    CHECK_MSG("shape [2, 3] but config implies [2]");
    CHECK(sp_ckpt_read_f32(c, "y.bias", 1, good, out) == 0 && out[0] == -1.0f && out[1] == 2.0f);
    CHECK(sp_ckpt_read_f32(c, "nope", 1, good, out) == SP_EX_DATAERR);
    CHECK_MSG("'nope'");
    sp_ckpt_free(c);
    sp_ckpt_free(NULL);

    /* not a directory, and a missing directory: 66 */
    CHECK(sp_ckpt_open(p, &c) == SP_EX_NOINPUT && c == NULL);
    snprintf(p, sizeof p, "%s/does-not-exist", g_dir);
    CHECK(sp_ckpt_open(p, &c) == SP_EX_NOINPUT && c == NULL);
    CHECK(sp_st_open(p, (sp_st_file **)&f) == SP_EX_NOINPUT);
    CHECK_MSG(p);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "inspect") == 0) {
        int rc = cmd_inspect(argv[2]);
        if (rc) fprintf(stderr, "test_safetensors: %s\n", sp_errmsg());
        return rc;
    }
    if (argc == 4 && strcmp(argv[1], "dump") == 0) {
        int rc = cmd_dump(argv[2], argv[3]);
        if (rc) fprintf(stderr, "test_safetensors: %s\n", sp_errmsg());
        return rc;
    }
    if (argc != 3 || strcmp(argv[1], "unit") != 0) {
        fprintf(stderr, "usage: %s unit DIR | inspect PATH | dump PATH NAME\n", argv[0]);
        return SP_EX_USAGE;
    }
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/st_unit_XXXXXX", argv[2]);
    g_dir = mkdtemp(tmpl);
    if (!g_dir) {
        perror("mkdtemp");
        return 1;
    }
    test_utf8_offsets();
    test_mixed_unaligned();
    test_nonfinite_index();
    test_header_strictness();
    test_ckpt();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_dir);
    if (g_fail) {
        fprintf(stderr, "%d check(s) failed\n", g_fail);
        return 1;
    }
    printf("safetensors unit tests passed\n");
    return 0;
}
