/* tests/test_gguf.c — io/formats/gguf.c against a byte layout built here by hand
 * from ggml's docs/gguf.md, plus its refusals. Writes ARGV[1] (a GGUF with
 * every value type and all four tensor types, alignment 64) for
 * tests/test_gguf.py to parse independently (tests/gguf_read.py). */
#include "dtype.h"
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

/* One block of type t back to 32 floats, from ggml's definitions (not
 * through gguf.c): the test's own decoder. */
static void decode_block(sp_gguf_ttype t, const uint8_t *b, float *x) {
    float d = sp_f16_to_f32((uint16_t)(b[0] | b[1] << 8)), m = 0;
    int o = 2;
    if (t == SP_GGUF_T_Q4_1 || t == SP_GGUF_T_Q5_1) m = sp_f16_to_f32((uint16_t)(b[2] | b[3] << 8)), o = 4;
    if (t == SP_GGUF_T_Q8_0) {
        for (int j = 0; j < 32; j++) x[j] = d * (float)(int8_t)b[o + j];
        return;
    }
    uint32_t qh = 0;
    int five = t == SP_GGUF_T_Q5_0 || t == SP_GGUF_T_Q5_1;
    if (five) qh = (uint32_t)b[o] | (uint32_t)b[o + 1] << 8 | (uint32_t)b[o + 2] << 16 | (uint32_t)b[o + 3] << 24, o += 4;
    for (int j = 0; j < 32; j++) {
        int q = j < 16 ? b[o + j] & 15 : b[o + j - 16] >> 4;
        if (five) q |= (int)((qh >> j) & 1) << 4;
        int off = t == SP_GGUF_T_Q4_0 ? 8 : t == SP_GGUF_T_Q5_0 ? 16 : 0;
        x[j] = d * (float)(q - off) + m;
    }
}

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

    /* the 4- and 5-bit blocks, by hand from ggml's definitions: x = -8, 4,
     * 1.4, -0.3 in values 0..3, 7 in value 16, zeros elsewhere.
     *   q4_0: d = max/-8 = 1, q = trunc(x/d + 8.5) = 0, 12, 9, 8 | 15, zeros 8
     *   q4_1: d = (7 - -8)/15 = 1, m = -8: the same levels
     *   q5_0: d = max/-16 = 0.5, q = trunc(x/d + 16.5) = 0, 24, 19, 15 | 30, zeros 16:
     *         low nibbles 0, 8, 3, 15 | 14, zeros 0; qh: every value >= 16, all bits but 0 and 3 */
    float xb[32] = {-8, 4, 1.4f, -0.3f};
    xb[16] = 7;
    static const uint8_t nib4[16] = {0xf0, 0x8c, 0x89, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88};
    static const uint8_t nib5[16] = {0xe0, 0x08, 0x03, 0x0f};
    uint8_t blk[64], want[64];
    sp_gguf_quantize(SP_GGUF_T_Q4_0, xb, 32, NULL, blk);
    memcpy(want, "\x00\x3c", 2), memcpy(want + 2, nib4, 16);
    CHECK(!memcmp(blk, want, 18), "q4_0 block differs from ggml's layout");
    sp_gguf_quantize(SP_GGUF_T_Q4_1, xb, 32, NULL, blk);
    memcpy(want, "\x00\x3c\x00\xc8", 4), memcpy(want + 4, nib4, 16); /* d 1, m -8 */
    CHECK(!memcmp(blk, want, 20), "q4_1 block differs from ggml's layout");
    sp_gguf_quantize(SP_GGUF_T_Q5_0, xb, 32, NULL, blk);
    memcpy(want, "\x00\x38\xf6\xff\xff\xff", 6), memcpy(want + 6, nib5, 16); /* d 0.5, qh 0xfffffff6 */
    CHECK(!memcmp(blk, want, 22), "q5_0 block differs from ggml's layout");
    CHECK(sp_gguf_row_bytes(SP_GGUF_T_Q5_1, 64) == 48 && sp_gguf_row_bytes(SP_GGUF_T_Q4_0, 48) == -1);

    /* calibration-aware rounding: on random blocks with random weights h, the
     * weighted error Σ h (x - x̂)² (x̂ decoded from the bytes) is never above the
     * reference rounding's, and below it on most blocks */
    static const sp_gguf_ttype qt[5] = {SP_GGUF_T_Q4_0, SP_GGUF_T_Q4_1, SP_GGUF_T_Q5_0, SP_GGUF_T_Q5_1, SP_GGUF_T_Q8_0};
    uint32_t seed = 12345;
    for (int t = 0; t < 5; t++) {
        int better = 0, worse = 0;
        for (int it = 0; it < 400; it++) {
            float xr[32], h[32], dq[2][32];
            for (int j = 0; j < 32; j++) {
                seed = seed * 1664525u + 1013904223u;
                xr[j] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * (j % 7 == 0 ? 6.0f : 1.0f);
                seed = seed * 1664525u + 1013904223u;
                h[j] = (float)(seed >> 8) / 16777216.0f * (j % 5 == 0 ? 20.0f : 1.0f);
            }
            double e[2] = {0, 0};
            for (int k = 0; k < 2; k++) {
                sp_gguf_quantize(qt[t], xr, 32, k ? h : NULL, blk);
                decode_block(qt[t], blk, dq[k]);
                for (int j = 0; j < 32; j++) e[k] += (double)h[j] * ((double)xr[j] - dq[k][j]) * ((double)xr[j] - dq[k][j]);
            }
            better += e[1] < e[0] * (1 - 1e-6);
            worse += e[1] > e[0] * (1 + 1e-9);
        }
        CHECK(worse == 0 && better > 300, "%s: weighted rounding better on %d and worse on %d of 400 blocks", sp_gguf_ttype_name(qt[t]),
              better, worse);
    }

    /* a block whose fp16 scale or min is Inf: 65 naming the tensor, the row and the columns */
    float hugebl[32] = {0};
    hugebl[5] = 6e5f; /* q4_0: d = 6e5/8 = 75000 > 65504 */
    float lowmin[32];
    for (int j = 0; j < 32; j++) lowmin[j] = -70000.0f; /* q4_1: m = -70000 */
    lowmin[3] = -69990.0f;
    int64_t ne_blk[2] = {32, 1};
    for (int k = 0; k < 2; k++) {
        CHECK(sp_gguf_init(p2, &w) == 0);
        CHECK(sp_gguf_tensor(w, "blk", 2, ne_blk, k ? SP_GGUF_T_Q4_1 : SP_GGUF_T_Q4_0) == 0);
        CHECK(sp_gguf_begin(w) == 0);
        CHECK(sp_gguf_rows(w, k ? lowmin : hugebl, 1) == SP_EX_DATAERR);
        CHECK_MSG(k ? "'blk': row 0, columns 0..31: the q4_1 block's min m is Inf" : "'blk': row 0, columns 0..31: the q4_0 block's scale");
        sp_gguf_free(w);
        CHECK(access(p2, F_OK) != 0);
    }

    if (g_fail) fprintf(stderr, "%d check(s) failed\n", g_fail);
    else printf("gguf writer: %zu bytes identical to the hand-built layout; refusals ok\n", exn);
    return g_fail ? 1 : 0;
}
