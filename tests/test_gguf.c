/* tests/test_gguf.c — io/formats/gguf.c against a byte layout built here by hand
 * from ggml's docs/gguf.md, plus its refusals. Writes ARGV[1] (a GGUF with
 * every value type and all four tensor types, alignment 64) for
 * tests/test_gguf.py to parse independently (tests/gguf_read.py). */
#include "error.h"
#include "gguf.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint8_t ex[1 << 16];
static size_t exn;
static void e_bytes(const void *p, size_t n) { memcpy(ex + exn, p, n), exn += n; }
static void e_u32(uint32_t v) { for (int i = 0; i < 4; i++) ex[exn++] = (uint8_t)(v >> (8 * i)); }
static void e_u64(uint64_t v) { for (int i = 0; i < 8; i++) ex[exn++] = (uint8_t)(v >> (8 * i)); }
static void e_str(const char *s) { e_u64(strlen(s)), e_bytes(s, strlen(s)); }
static void e_pad(size_t a) { while (exn % a) ex[exn++] = 0; }
static void e_f32(float f) { uint32_t u; memcpy(&u, &f, 4), e_u32(u); }

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "test_gguf.gguf";
    sp_gguf_w *w;
    char hex[33];

    /* tensors: a (2 x 3) f32, b (2 x 2) f16, c (1 x 2) bf16, q (1 x 32) q8_0 */
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    float b[4] = {1, 0.5f, -65504, 3.140625f};
    float c[2] = {1.00390625f, -2}; /* bf16: 1.00390625 is a tie between 1 and 1.0078125 → even: 1 */
    float q[32];
    for (int j = 0; j < 32; j++) q[j] = 0;
    q[0] = 127, q[1] = 2.5f, q[2] = -2.5f, q[3] = 0.49f, q[4] = -126.5f; /* d = 1: half away from zero */

    CHECK(sp_gguf_init(path, &w) == 0, "%s", sp_errmsg());
    CHECK(sp_gguf_kv_u32(w, "general.alignment", 64) == 0);
    CHECK(sp_gguf_kv_str(w, "general.architecture", "llama", -1) == 0);
    CHECK(sp_gguf_kv_i32(w, "t.i32", -5) == 0);
    CHECK(sp_gguf_kv_u64(w, "t.u64", 0x0102030405060708ULL) == 0);
    CHECK(sp_gguf_kv_f32(w, "t.f32", 0.25f) == 0);
    CHECK(sp_gguf_kv_f64(w, "t.f64", -1.5) == 0);
    CHECK(sp_gguf_kv_bool(w, "t.bool", 1) == 0);
    int32_t ia[3] = {1, -1, 7};
    CHECK(sp_gguf_kv_arr(w, "t.arr_i32", SP_GGUF_V_I32, ia, 3) == 0);
    CHECK(sp_gguf_kv_arr_str_begin(w, "t.arr_str", 2) == 0);
    CHECK(sp_gguf_kv_arr_str(w, "x y", -1) == 0);
    CHECK(sp_gguf_kv_arr_str(w, "\xe2\x96\x81z", -1) == 0);
    CHECK(sp_gguf_kv_u32(w, "t.i32", 1) == SP_EX_SOFTWARE); /* duplicate */
    CHECK_MSG("set twice");
    int64_t ne_a[2] = {3, 2}, ne_b[2] = {2, 2}, ne_c[1] = {2}, ne_q[2] = {32, 1}, ne_bad[2] = {33, 1};
    CHECK(sp_gguf_tensor(w, "a", 2, ne_a, SP_GGUF_T_F32) == 0);
    CHECK(sp_gguf_tensor(w, "b", 2, ne_b, SP_GGUF_T_F16) == 0);
    CHECK(sp_gguf_tensor(w, "c", 1, ne_c, SP_GGUF_T_BF16) == 0);
    CHECK(sp_gguf_tensor(w, "q", 2, ne_q, SP_GGUF_T_Q8_0) == 0);
    CHECK(sp_gguf_tensor(w, "bad", 2, ne_bad, SP_GGUF_T_Q8_0) == SP_EX_SOFTWARE);
    CHECK_MSG("cannot be stored as q8_0");
    CHECK(sp_gguf_begin(w) == 0);
    CHECK(sp_gguf_kv_u32(w, "late", 1) == SP_EX_SOFTWARE);
    CHECK(sp_gguf_rows(w, a, 1) == 0);
    CHECK(sp_gguf_rows(w, a + 3, 1) == 0);
    CHECK(sp_gguf_rows(w, b, 2) == 0);
    CHECK(sp_gguf_rows(w, c, 1) == 0);
    CHECK(sp_gguf_rows(w, q, 1) == 0);
    CHECK(sp_gguf_rows(w, q, 1) == SP_EX_SOFTWARE); /* no tensor left */
    CHECK(sp_gguf_finish(w, hex) == 0, "%s", sp_errmsg());
    sp_gguf_free(w);

    /* the expected bytes, by hand */
    e_bytes("GGUF", 4), e_u32(3), e_u64(4), e_u64(9);
    e_str("general.alignment"), e_u32(4), e_u32(64);
    e_str("general.architecture"), e_u32(8), e_str("llama");
    e_str("t.i32"), e_u32(5), e_u32((uint32_t)-5);
    e_str("t.u64"), e_u32(10), e_u64(0x0102030405060708ULL);
    e_str("t.f32"), e_u32(6), e_f32(0.25f);
    e_str("t.f64"), e_u32(12), e_bytes("\0\0\0\0\0\0\xf8\xbf", 8);
    e_str("t.bool"), e_u32(7), e_bytes("\1", 1);
    e_str("t.arr_i32"), e_u32(9), e_u32(5), e_u64(3), e_u32(1), e_u32((uint32_t)-1), e_u32(7);
    e_str("t.arr_str"), e_u32(9), e_u32(8), e_u64(2), e_str("x y"), e_str("\xe2\x96\x81z");
    e_str("a"), e_u32(2), e_u64(3), e_u64(2), e_u32(0), e_u64(0);
    e_str("b"), e_u32(2), e_u64(2), e_u64(2), e_u32(1), e_u64(64);
    e_str("c"), e_u32(1), e_u64(2), e_u32(30), e_u64(128);
    e_str("q"), e_u32(2), e_u64(32), e_u64(1), e_u32(8), e_u64(192);
    e_pad(64);
    size_t d0 = exn;
    for (int i = 0; i < 6; i++) e_f32(a[i]);
    e_pad(64);
    static const uint8_t f16[8] = {0x00, 0x3c, 0x00, 0x38, 0xff, 0xfb, 0x48, 0x42}; /* 1, 0.5, -65504, 3.140625 */
    e_bytes(f16, 8), e_pad(64);
    static const uint8_t bf[4] = {0x80, 0x3f, 0x00, 0xc0}; /* 1 (tie to even), -2 */
    e_bytes(bf, 4), e_pad(64);
    static const uint8_t qd[2] = {0x00, 0x3c}; /* d = 1.0 in fp16 */
    e_bytes(qd, 2);
    int8_t qs[32] = {127, 3, -3, 0, -127};
    e_bytes(qs, 32), e_pad(64);
    CHECK(d0 % 64 == 0);

    FILE *f = fopen(path, "rb");
    static uint8_t got[1 << 16];
    size_t gn = f ? fread(got, 1, sizeof got, f) : 0;
    if (f) fclose(f);
    CHECK(gn == exn, "file %zu bytes, expected %zu", gn, exn);
    for (size_t i = 0; i < gn && i < exn; i++)
        if (got[i] != ex[i]) {
            CHECK(got[i] == ex[i], "first difference at byte %zu: %02x vs %02x", i, got[i], ex[i]);
            break;
        }
    char tmp[8192];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "tmp left behind");

    /* refusals: non-finite data (65, naming the tensor); unfinished output
     * leaves nothing under either name */
    char p2[4096];
    snprintf(p2, sizeof p2, "%s.bad.gguf", path);
    CHECK(sp_gguf_init(p2, &w) == 0);
    CHECK(sp_gguf_tensor(w, "nan_here", 2, ne_a, SP_GGUF_T_F32) == 0);
    CHECK(sp_gguf_begin(w) == 0);
    float nan3[3] = {0, NAN, 1};
    CHECK(sp_gguf_rows(w, nan3, 1) == SP_EX_DATAERR);
    CHECK_MSG("nan_here");
    float big[3] = {0, 70000.0f, 1};
    (void)big;
    sp_gguf_free(w);
    snprintf(tmp, sizeof tmp, "%s.tmp", p2);
    CHECK(access(tmp, F_OK) != 0 && access(p2, F_OK) != 0, "a failed export left a file");
    CHECK(sp_gguf_init(p2, &w) == 0);
    CHECK(sp_gguf_tensor(w, "h", 2, ne_a, SP_GGUF_T_F16) == 0);
    CHECK(sp_gguf_begin(w) == 0);
    CHECK(sp_gguf_rows(w, big, 1) == SP_EX_DATAERR); /* overflows f16 */
    CHECK(sp_gguf_finish(w, hex) == SP_EX_SOFTWARE); /* incomplete tensor */
    sp_gguf_free(w);
    CHECK(access(p2, F_OK) != 0);
    CHECK(sp_gguf_init("/nonexistent-dir/x.gguf", &w) == SP_EX_CANTCREAT);

    if (g_fail) fprintf(stderr, "%d check(s) failed\n", g_fail);
    else printf("gguf writer: %zu bytes identical to the hand-built layout; refusals ok\n", exn);
    return g_fail ? 1 : 0;
}
