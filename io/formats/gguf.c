/* io/formats/gguf.c — the GGUF v3 writer (layout and protocol in gguf.h).
 *
 * Invariants:
 *   - before begin: kvs accumulate in `meta` (their serialized bytes, in
 *     call order), tensors in `t` with offsets assigned as they are
 *     declared (each at the running data size, rounded up to alignment);
 *   - after begin: `cur` is the tensor being written and `cur_rows` its rows
 *     so far; bytes go through `out` (a fixed buffer) to the fd, and every
 *     byte written is fed to the XXH3-128 state, so the hash is the file's;
 *   - file_bytes is always data_start + (bytes of finished tensors and
 *     their padding) + cur_rows · row_bytes(cur); the buffer's out_n bytes
 *     are the last of them, written (pwrite) at file_bytes − out_n;
 *   - `dry` (header_hash only): bytes are hashed and counted, never written;
 *   - a resumable writer has no fd before begin or resume, and never
 *     removes its tmp: the journal that describes it decides.
 */
#include "gguf.h"

#include "dtype.h"
#include "error.h"
#include "fileio.h"

#include <xxhash.h>

#include <errno.h>
#include <float.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OUT_BYTES (1 << 20)

typedef struct gtensor {
    char *name;
    int ndim;
    int64_t ne[SP_GGUF_MAX_DIMS];
    sp_gguf_ttype type;
    int64_t offset, row_bytes, n_rows;
} gtensor;

struct sp_gguf_w {
    char *path, *tmp;
    int fd;
    /* metadata */
    uint8_t *meta;
    int64_t meta_n, meta_cap, n_kv;
    char **keys;
    int64_t n_keys, keys_cap;
    int64_t arr_left; /* strings still owed to an open string array */
    uint32_t alignment;
    /* tensors */
    gtensor *t;
    int64_t n_t, t_cap, data_bytes;
    /* writing */
    int begun, finished, resumable, dry;
    int64_t cur, cur_rows, data_start, file_bytes;
    uint8_t *out;
    int64_t out_n;
    uint8_t *conv; /* one row's converted bytes */
    int64_t conv_cap;
    XXH3_state_t *xx;
};

/* The block types: ggml's blocks of 32 (ggml-common.h), little-endian:
 *   q4_0 18 B  fp16 d | 16 B qs        x = (q − 8)·d,   q ∈ 0..15
 *   q4_1 20 B  fp16 d, fp16 m | 16 B   x = q·d + m,     q ∈ 0..15
 *   q5_0 22 B  fp16 d | u32 qh | 16 B  x = (q − 16)·d,  q ∈ 0..31
 *   q5_1 24 B  fp16 d, fp16 m | u32 qh | 16 B   x = q·d + m, q ∈ 0..31
 *   q8_0 34 B  fp16 d | 32 int8 q      x = q·d
 * A nibble byte qs[j] holds element j (low 4 bits) and element j + 16 (high
 * 4 bits); q5's fifth bits are qh bit j for element j (j < 32). */
typedef struct qtype {
    sp_gguf_ttype t;
    const char *name;
    int bytes;     /* per block of 32 */
    int has_min;   /* _1: fp16 m after d */
    int bits;      /* 4, 5 or 8 */
    uint32_t ftype; /* llama.cpp's general.file_type (LLAMA_FTYPE_MOSTLY_*) */
} qtype;

static const qtype QTYPES[] = {
    {SP_GGUF_T_Q4_0, "q4_0", 18, 0, 4, 2}, {SP_GGUF_T_Q4_1, "q4_1", 20, 1, 4, 3},
    {SP_GGUF_T_Q5_0, "q5_0", 22, 0, 5, 8}, {SP_GGUF_T_Q5_1, "q5_1", 24, 1, 5, 9},
    {SP_GGUF_T_Q8_0, "q8_0", 34, 0, 8, 7},
};
#define N_QTYPES ((int)(sizeof QTYPES / sizeof QTYPES[0]))

static const qtype *qtype_of(sp_gguf_ttype t) {
    for (int i = 0; i < N_QTYPES; i++)
        if (QTYPES[i].t == t) return &QTYPES[i];
    return NULL;
}

int sp_gguf_ttype_parse(const char *s) {
    if (!strcmp(s, "f32")) return SP_GGUF_T_F32;
    if (!strcmp(s, "f16")) return SP_GGUF_T_F16;
    if (!strcmp(s, "bf16")) return SP_GGUF_T_BF16;
    for (int i = 0; i < N_QTYPES; i++)
        if (!strcmp(s, QTYPES[i].name)) return QTYPES[i].t;
    return -1;
}

const char *sp_gguf_ttype_name(sp_gguf_ttype t) {
    switch (t) {
    case SP_GGUF_T_F32: return "f32";
    case SP_GGUF_T_F16: return "f16";
    case SP_GGUF_T_BF16: return "bf16";
    default: break;
    }
    const qtype *q = qtype_of(t);
    return q ? q->name : "?";
}

int sp_gguf_ttype_is_block(sp_gguf_ttype t) { return qtype_of(t) != NULL; }

uint32_t sp_gguf_file_type(sp_gguf_ttype t) {
    switch (t) {
    case SP_GGUF_T_F32: return 0;
    case SP_GGUF_T_F16: return 1;
    case SP_GGUF_T_BF16: return 32;
    default: break;
    }
    const qtype *q = qtype_of(t);
    SP_ASSERT(q);
    return q->ftype;
}

int64_t sp_gguf_row_bytes(sp_gguf_ttype t, int64_t n) {
    int64_t r;
    if (n < 0) return -1;
    switch (t) {
    case SP_GGUF_T_F32: return sp_mul_i64(n, 4, &r) ? -1 : r;
    case SP_GGUF_T_F16:
    case SP_GGUF_T_BF16: return sp_mul_i64(n, 2, &r) ? -1 : r;
    default: break;
    }
    const qtype *q = qtype_of(t);
    if (!q || n % SP_GGUF_QK) return -1;
    return sp_mul_i64(n / SP_GGUF_QK, q->bytes, &r) ? -1 : r;
}

/* ---- block quantization -------------------------------------------------- */

/* One block's integer levels and its scale (and min) as float32, before
 * they are stored as fp16. */
typedef struct qblock {
    int q[SP_GGUF_QK];
    float d, m;
} qblock;

/* ggml's reference rounding (quantize_row_*_ref):
 *   _0 (4, 5 bits): max = the value of largest magnitude (the first, on a
 *     tie), d = max / −2^(b−1), q = min(2^b − 1, trunc(x·(1/d) + 2^(b−1) + ½));
 *   _1: d = (max − min)/(2^b − 1), m = min, q = min(2^b − 1, trunc((x − min)·(1/d) + ½));
 *   q8_0: d = max|x|/127, q = round(x·(1/d)) half away from zero.
 * The float d and m are used for rounding; the stored ones are their fp16. */
static void block_ref(const qtype *qt, const float *x, qblock *b) {
    const int top = (1 << qt->bits) - 1;
    if (qt->bits == 8) {
        float amax = 0.0f;
        for (int j = 0; j < SP_GGUF_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        b->d = amax / 127.0f, b->m = 0.0f;
        float id = b->d != 0.0f ? 1.0f / b->d : 0.0f;
        for (int j = 0; j < SP_GGUF_QK; j++) b->q[j] = (int)roundf(x[j] * id);
    } else if (!qt->has_min) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < SP_GGUF_QK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        const float half = (float)(1 << (qt->bits - 1));
        b->d = max / -half, b->m = 0.0f;
        float id = b->d != 0.0f ? 1.0f / b->d : 0.0f;
        for (int j = 0; j < SP_GGUF_QK; j++) {
            int v = (int)(x[j] * id + half + 0.5f); /* ≥ ½: truncation is floor */
            b->q[j] = v > top ? top : v < 0 ? 0 : v;
        }
    } else {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < SP_GGUF_QK; j++) min = fminf(min, x[j]), max = fmaxf(max, x[j]);
        b->d = (max - min) / (float)top, b->m = min;
        float id = b->d != 0.0f ? 1.0f / b->d : 0.0f;
        for (int j = 0; j < SP_GGUF_QK; j++) {
            int v = (int)((x[j] - min) * id + 0.5f);
            b->q[j] = v > top ? top : v < 0 ? 0 : v;
        }
    }
}

/* The value level q stands for, before scaling: q − 2^(b−1) for _0 types
 * (q8_0: q itself), q for _1. */
static int level(const qtype *qt, int q) { return qt->has_min || qt->bits == 8 ? q : q - (1 << (qt->bits - 1)); }

/* Σ h_j (x_j − x̂_j)² of block b as stored (d and m rounded to fp16). */
static double block_err(const qtype *qt, const float *x, const float *h, const qblock *b) {
    double d = sp_f16_to_f32(sp_f32_to_f16(b->d)), m = qt->has_min ? sp_f16_to_f32(sp_f32_to_f16(b->m)) : 0.0, e = 0.0;
    for (int j = 0; j < SP_GGUF_QK; j++) {
        double r = (double)x[j] - (d * level(qt, b->q[j]) + m);
        e += (double)h[j] * r * r;
    }
    return e;
}

/* Levels of x for scale d (and min m), nearest, clamped to the type's range. */
static void block_round(const qtype *qt, const float *x, double d, double m, qblock *b) {
    const int top = (1 << qt->bits) - 1;
    const int lo = qt->bits == 8 ? -127 : 0, hi = qt->bits == 8 ? 127 : top;
    const int off = qt->has_min || qt->bits == 8 ? 0 : 1 << (qt->bits - 1);
    for (int j = 0; j < SP_GGUF_QK; j++) {
        double v = nearbyint(((double)x[j] - m) / d) + off;
        b->q[j] = v > hi ? hi : v < lo ? lo : (int)v;
    }
    b->d = (float)d, b->m = (float)m;
}

/* The weighted least-squares scale (and min) for fixed levels:
 * argmin Σ h (x − d·l − m)²; 0 when degenerate (the candidate is skipped). */
static int block_refit(const qtype *qt, const float *x, const float *h, qblock *b) {
    double shl2 = 0, shlx = 0, shl = 0, sh = 0, shx = 0;
    for (int j = 0; j < SP_GGUF_QK; j++) {
        double l = level(qt, b->q[j]), hj = h[j];
        shl2 += hj * l * l, shlx += hj * l * x[j], shl += hj * l, sh += hj, shx += hj * x[j];
    }
    if (!qt->has_min) {
        if (shl2 <= 0) return 0;
        b->d = (float)(shlx / shl2);
        return 1;
    }
    double det = shl2 * sh - shl * shl;
    if (det <= 1e-12 * shl2 * sh) return 0;
    double d = (shlx * sh - shl * shx) / det, m = (shl2 * shx - shl * shlx) / det;
    if (!(d > 0)) return 0;
    b->d = (float)d, b->m = (float)m;
    return 1;
}

/* Calibration-aware rounding (--quant-weighting calib): the block's scale
 * (and min) minimizing Σ h_j (x_j − x̂_j)², h ≥ 0 the diagonal of the
 * reader's input second moment over this block's columns. Candidates: the
 * reference block, and for each of 21 scales around the reference one
 * (steps of 0.1 level over the block's range) the nearest levels, their
 * weighted least-squares (d, m), the levels again at that (d, m) and one more
 * refit; the smallest error with d and m as stored (fp16) wins. A block whose
 * weights are all zero keeps the reference. */
static void block_weighted(const qtype *qt, const float *x, const float *h, qblock *best) {
    block_ref(qt, x, best);
    double hs = 0;
    for (int j = 0; j < SP_GGUF_QK; j++) hs += h[j];
    if (!(hs > 0) || best->d == 0.0f) return;
    double best_e = block_err(qt, x, h, best);
    const int top = (1 << qt->bits) - 1;
    double lo = FLT_MAX, hi = -FLT_MAX, amax = 0, smax = 0;
    for (int j = 0; j < SP_GGUF_QK; j++) {
        lo = fmin(lo, x[j]), hi = fmax(hi, x[j]);
        if (fabs(x[j]) > amax) amax = fabs(x[j]), smax = x[j];
    }
    for (int is = -10; is <= 10; is++) {
        qblock c;
        double d, m = 0;
        if (qt->has_min) d = (hi - lo) / (top + 0.1 * is), m = lo;
        else if (qt->bits == 8) d = amax / (127 + 0.1 * is);
        else d = smax / -((1 << (qt->bits - 1)) + 0.1 * is);
        if (!(d != 0)) continue;
        block_round(qt, x, d, m, &c);
        for (int it = 0; it < 2; it++) {
            if (!block_refit(qt, x, h, &c)) break;
            double e = block_err(qt, x, h, &c);
            if (e < best_e && isfinite(c.d) && isfinite(c.m)) best_e = e, *best = c;
            if (c.d == 0.0f) break;
            block_round(qt, x, c.d, c.m, &c);
        }
    }
}

static void block_store(const qtype *qt, const qblock *b, uint8_t *blk) {
    uint16_t dh = sp_f32_to_f16(b->d);
    blk[0] = (uint8_t)(dh & 0xff), blk[1] = (uint8_t)(dh >> 8);
    int o = 2;
    if (qt->has_min) {
        uint16_t mh = sp_f32_to_f16(b->m);
        blk[2] = (uint8_t)(mh & 0xff), blk[3] = (uint8_t)(mh >> 8);
        o = 4;
    }
    if (qt->bits == 8) {
        for (int j = 0; j < SP_GGUF_QK; j++) blk[o + j] = (uint8_t)(int8_t)b->q[j];
        return;
    }
    if (qt->bits == 5) {
        uint32_t qh = 0;
        for (int j = 0; j < SP_GGUF_QK; j++) qh |= (uint32_t)((b->q[j] >> 4) & 1) << j;
        for (int k = 0; k < 4; k++) blk[o + k] = (uint8_t)(qh >> (8 * k));
        o += 4;
    }
    for (int j = 0; j < SP_GGUF_QK / 2; j++)
        blk[o + j] = (uint8_t)((b->q[j] & 0x0f) | ((b->q[j + SP_GGUF_QK / 2] & 0x0f) << 4));
}

void sp_gguf_quantize(sp_gguf_ttype t, const float *src, int64_t n, const float *weight, uint8_t *dst) {
    const qtype *qt = qtype_of(t);
    SP_ASSERT(qt && n % SP_GGUF_QK == 0);
    for (int64_t b = 0; b < n / SP_GGUF_QK; b++) {
        qblock blk;
        if (weight) block_weighted(qt, src + b * SP_GGUF_QK, weight + b * SP_GGUF_QK, &blk);
        else block_ref(qt, src + b * SP_GGUF_QK, &blk);
        block_store(qt, &blk, dst + b * qt->bytes);
    }
}

/* The first block of an encoded row whose fp16 d (or m) is not finite; −1 if none. */
static int64_t first_bad_block(const qtype *qt, const uint8_t *row, int64_t n_blocks, int *which) {
    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = row + b * qt->bytes;
        for (int k = 0; k < 1 + qt->has_min; k++) {
            uint16_t h = (uint16_t)(blk[2 * k] | (blk[2 * k + 1] << 8));
            if (!isfinite(sp_f16_to_f32(h))) {
                *which = k;
                return b;
            }
        }
    }
    return -1;
}

/* ---- metadata buffer ---------------------------------------------------- */

static int meta_put(sp_gguf_w *w, const void *p, int64_t n) {
    if (w->meta_n + n > w->meta_cap) {
        int64_t cap = w->meta_cap ? w->meta_cap : 4096;
        while (cap < w->meta_n + n) {
            if (sp_mul_i64(cap, 2, &cap)) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF metadata too large", w->path);
        }
        uint8_t *m = realloc(w->meta, (size_t)cap);
        if (!m) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory for GGUF metadata (%lld bytes)", w->path, (long long)cap);
        w->meta = m;
        w->meta_cap = cap;
    }
    memcpy(w->meta + w->meta_n, p, (size_t)n);
    w->meta_n += n;
    return 0;
}

static int put_u32(sp_gguf_w *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return meta_put(w, b, 4);
}

static int put_u64(sp_gguf_w *w, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    return meta_put(w, b, 8);
}

static int put_str(sp_gguf_w *w, const char *s, int64_t n) {
    if (n < 0) n = (int64_t)strlen(s);
    SP_TRY(put_u64(w, (uint64_t)n));
    return meta_put(w, s, n);
}

static int key_begin(sp_gguf_w *w, const char *key, sp_gguf_vtype vt) {
    if (w->begun) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF key '%s' added after the header was written", w->path, key);
    if (w->arr_left) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF key '%s' added inside an unfinished string array", w->path, key);
    for (int64_t i = 0; i < w->n_keys; i++)
        if (!strcmp(w->keys[i], key)) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF key '%s' set twice", w->path, key);
    if (w->n_keys == w->keys_cap) {
        int64_t cap = w->keys_cap ? 2 * w->keys_cap : 32;
        char **k = realloc(w->keys, (size_t)cap * sizeof *k);
        if (!k) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", w->path);
        w->keys = k;
        w->keys_cap = cap;
    }
    w->keys[w->n_keys] = strdup(key);
    if (!w->keys[w->n_keys]) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", w->path);
    w->n_keys++;
    w->n_kv++;
    SP_TRY(put_str(w, key, -1));
    return put_u32(w, (uint32_t)vt);
}

int sp_gguf_kv_u32(sp_gguf_w *w, const char *key, uint32_t v) {
    SP_TRY(key_begin(w, key, SP_GGUF_V_U32));
    if (!strcmp(key, "general.alignment")) {
        if (v == 0 || (v & (v - 1)))
            return sp_fail(SP_EX_SOFTWARE, "%s: general.alignment %u is not a power of two", w->path, v);
        if (w->n_t) return sp_fail(SP_EX_SOFTWARE, "%s: general.alignment set after tensors were declared", w->path);
        w->alignment = v;
    }
    return put_u32(w, v);
}

int sp_gguf_kv_i32(sp_gguf_w *w, const char *key, int32_t v) {
    SP_TRY(key_begin(w, key, SP_GGUF_V_I32));
    return put_u32(w, (uint32_t)v);
}

int sp_gguf_kv_u64(sp_gguf_w *w, const char *key, uint64_t v) {
    SP_TRY(key_begin(w, key, SP_GGUF_V_U64));
    return put_u64(w, v);
}

int sp_gguf_kv_f32(sp_gguf_w *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    SP_TRY(key_begin(w, key, SP_GGUF_V_F32));
    return put_u32(w, u);
}

int sp_gguf_kv_f64(sp_gguf_w *w, const char *key, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    SP_TRY(key_begin(w, key, SP_GGUF_V_F64));
    return put_u64(w, u);
}

int sp_gguf_kv_bool(sp_gguf_w *w, const char *key, int v) {
    uint8_t b = v ? 1 : 0;
    SP_TRY(key_begin(w, key, SP_GGUF_V_BOOL));
    return meta_put(w, &b, 1);
}

int sp_gguf_kv_str(sp_gguf_w *w, const char *key, const char *s, int64_t n) {
    SP_TRY(key_begin(w, key, SP_GGUF_V_STRING));
    return put_str(w, s, n);
}

static int vtype_size(sp_gguf_vtype t) {
    switch (t) {
    case SP_GGUF_V_U8:
    case SP_GGUF_V_I8:
    case SP_GGUF_V_BOOL: return 1;
    case SP_GGUF_V_U16:
    case SP_GGUF_V_I16: return 2;
    case SP_GGUF_V_U32:
    case SP_GGUF_V_I32:
    case SP_GGUF_V_F32: return 4;
    case SP_GGUF_V_U64:
    case SP_GGUF_V_I64:
    case SP_GGUF_V_F64: return 8;
    default: return 0;
    }
}

int sp_gguf_kv_arr(sp_gguf_w *w, const char *key, sp_gguf_vtype et, const void *elems, int64_t n) {
    int64_t bytes;
    int es = vtype_size(et);
    if (!es) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF key '%s': array of type %d needs its own call", w->path, key, (int)et);
    if (n < 0 || sp_mul_i64(n, es, &bytes)) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF key '%s': bad array length", w->path, key);
    SP_TRY(key_begin(w, key, SP_GGUF_V_ARRAY));
    SP_TRY(put_u32(w, (uint32_t)et));
    SP_TRY(put_u64(w, (uint64_t)n));
    return meta_put(w, elems, bytes);
}

int sp_gguf_kv_arr_str_begin(sp_gguf_w *w, const char *key, int64_t n) {
    if (n < 0) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF key '%s': bad array length", w->path, key);
    SP_TRY(key_begin(w, key, SP_GGUF_V_ARRAY));
    SP_TRY(put_u32(w, SP_GGUF_V_STRING));
    SP_TRY(put_u64(w, (uint64_t)n));
    w->arr_left = n;
    return 0;
}

int sp_gguf_kv_arr_str(sp_gguf_w *w, const char *s, int64_t n) {
    if (w->arr_left <= 0) return sp_fail(SP_EX_SOFTWARE, "%s: more strings than the GGUF array declared", w->path);
    w->arr_left--;
    return put_str(w, s, n);
}

/* ---- tensors ------------------------------------------------------------ */

static int64_t align_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

int sp_gguf_tensor(sp_gguf_w *w, const char *name, int ndim, const int64_t *ne, sp_gguf_ttype type) {
    if (w->begun) return sp_fail(SP_EX_SOFTWARE, "%s: tensor '%s' declared after the header was written", w->path, name);
    if (ndim < 1 || ndim > SP_GGUF_MAX_DIMS) return sp_fail(SP_EX_SOFTWARE, "%s: tensor '%s': %d dims", w->path, name, ndim);
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return sp_fail(SP_EX_SOFTWARE, "%s: tensor '%s' declared twice", w->path, name);
    int64_t rows = 1, rb = sp_gguf_row_bytes(type, ne[0]), bytes;
    for (int d = 1; d < ndim; d++)
        if (ne[d] < 1 || sp_mul_i64(rows, ne[d], &rows)) return sp_fail(SP_EX_SOFTWARE, "%s: tensor '%s': bad shape", w->path, name);
    if (ne[0] < 1 || rb < 0 || sp_mul_i64(rb, rows, &bytes))
        return sp_fail(SP_EX_SOFTWARE, "%s: tensor '%s': %lld columns cannot be stored as %s", w->path, name, (long long)ne[0],
                       sp_gguf_ttype_name(type));
    if (w->n_t == w->t_cap) {
        int64_t cap = w->t_cap ? 2 * w->t_cap : 64;
        gtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", w->path);
        w->t = t;
        w->t_cap = cap;
    }
    gtensor *g = &w->t[w->n_t];
    memset(g, 0, sizeof *g);
    g->name = strdup(name);
    if (!g->name) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", w->path);
    g->ndim = ndim;
    for (int d = 0; d < ndim; d++) g->ne[d] = ne[d];
    g->type = type;
    g->offset = align_up(w->data_bytes, w->alignment);
    g->row_bytes = rb;
    g->n_rows = rows;
    if (sp_add_i64(g->offset, bytes, &w->data_bytes)) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF too large", w->path);
    if (rb > w->conv_cap) w->conv_cap = rb;
    w->n_t++;
    return 0;
}

/* ---- output ------------------------------------------------------------- */

static int out_flush(sp_gguf_w *w) {
    if (!w->out_n) return 0;
    if (!w->dry) SP_TRY(sp_io_pwrite_full(w->fd, w->out, w->out_n, w->file_bytes - w->out_n, w->tmp));
    w->out_n = 0;
    return 0;
}

static int out_put(sp_gguf_w *w, const void *p, int64_t n) {
    const uint8_t *s = p;
    if (XXH3_128bits_update(w->xx, p, (size_t)n) != XXH_OK) return sp_fail(SP_EX_SOFTWARE, "%s: XXH3 update failed", w->tmp);
    while (n > 0) {
        int64_t k = OUT_BYTES - w->out_n;
        if (k > n) k = n;
        memcpy(w->out + w->out_n, s, (size_t)k);
        w->out_n += k;
        w->file_bytes += k; /* the buffer's bytes end at file_bytes (out_flush) */
        s += k;
        n -= k;
        if (w->out_n == OUT_BYTES) SP_TRY(out_flush(w));
    }
    return 0;
}

static int out_zeros(sp_gguf_w *w, int64_t n) {
    static const uint8_t z[64];
    while (n > 0) {
        int64_t k = n < 64 ? n : 64;
        SP_TRY(out_put(w, z, k));
        n -= k;
    }
    return 0;
}

static int init_writer(const char *path, int resumable, sp_gguf_w **out) {
    *out = NULL;
    sp_gguf_w *w = calloc(1, sizeof *w);
    if (!w) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    w->fd = -1;
    w->alignment = SP_GGUF_DEFAULT_ALIGNMENT;
    w->path = strdup(path);
    size_t n = strlen(path) + 5;
    w->tmp = malloc(n);
    w->out = malloc(OUT_BYTES);
    w->xx = XXH3_createState();
    if (!w->path || !w->tmp || !w->out || !w->xx) {
        sp_gguf_free(w);
        return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    snprintf(w->tmp, n, "%s.tmp", path);
    XXH3_128bits_reset(w->xx);
    w->resumable = resumable;
    if (resumable) {
        *out = w;
        return 0;
    }
    int crc = sp_io_create(w->tmp, 0644, &w->fd); /* never through a planted link */
    if (crc) {
        int rc = crc;
        free(w->tmp);
        w->tmp = NULL; /* nothing to remove */
        sp_gguf_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int sp_gguf_init(const char *path, sp_gguf_w **out) { return init_writer(path, 0, out); }

int sp_gguf_init_resume(const char *path, sp_gguf_w **out) { return init_writer(path, 1, out); }

const char *sp_gguf_tmp_path(const sp_gguf_w *w) { return w->tmp; }

void sp_gguf_free(sp_gguf_w *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->tmp && !w->finished && !w->resumable) unlink(w->tmp);
    for (int64_t i = 0; i < w->n_keys; i++) free(w->keys[i]);
    free(w->keys);
    for (int64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    free(w->meta);
    free(w->out);
    free(w->conv);
    if (w->xx) XXH3_freeState(w->xx);
    free(w->path);
    free(w->tmp);
    free(w);
}

static int out_u32(sp_gguf_w *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return out_put(w, b, 4);
}

static int out_u64(sp_gguf_w *w, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    return out_put(w, b, 8);
}

static int declared(const sp_gguf_w *w) {
    if (w->begun) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF header written twice", w->path);
    if (w->arr_left) return sp_fail(SP_EX_SOFTWARE, "%s: unfinished GGUF string array", w->path);
    return 0;
}

/* No declaration after this: the row buffer is sized. */
static int start_rows(sp_gguf_w *w) {
    w->begun = 1;
    w->conv = malloc((size_t)(w->conv_cap ? w->conv_cap : 1));
    if (!w->conv) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", w->path);
    return 0;
}

/* The header, metadata, tensor infos and padding; sets data_start. */
static int emit_header(sp_gguf_w *w) {
    SP_TRY(out_put(w, "GGUF", 4));
    SP_TRY(out_u32(w, 3));
    SP_TRY(out_u64(w, (uint64_t)w->n_t));
    SP_TRY(out_u64(w, (uint64_t)w->n_kv));
    SP_TRY(out_put(w, w->meta, w->meta_n));
    for (int64_t i = 0; i < w->n_t; i++) {
        const gtensor *g = &w->t[i];
        int64_t n = (int64_t)strlen(g->name);
        SP_TRY(out_u64(w, (uint64_t)n));
        SP_TRY(out_put(w, g->name, n));
        SP_TRY(out_u32(w, (uint32_t)g->ndim));
        for (int d = 0; d < g->ndim; d++) SP_TRY(out_u64(w, (uint64_t)g->ne[d]));
        SP_TRY(out_u32(w, (uint32_t)g->type));
        SP_TRY(out_u64(w, (uint64_t)g->offset));
    }
    w->data_start = align_up(w->file_bytes, w->alignment);
    SP_TRY(out_zeros(w, w->data_start - w->file_bytes));
    w->cur = 0;
    w->cur_rows = 0;
    if (w->n_t) SP_TRY(out_zeros(w, w->t[0].offset)); /* 0 */
    return 0;
}

int sp_gguf_begin(sp_gguf_w *w) {
    SP_TRY(declared(w));
    if (w->fd < 0) SP_TRY(sp_io_create(w->tmp, 0644, &w->fd)); /* a resumable writer starting afresh */
    SP_TRY(start_rows(w));
    return emit_header(w);
}

int sp_gguf_header_hash(sp_gguf_w *w, char hex[33]) {
    SP_TRY(declared(w));
    w->dry = 1;
    XXH3_128bits_reset(w->xx);
    w->file_bytes = w->out_n = 0;
    int rc = emit_header(w);
    if (!rc) rc = out_flush(w);
    XXH128_hash_t h = XXH3_128bits_digest(w->xx);
    w->dry = 0;
    XXH3_128bits_reset(w->xx);
    w->file_bytes = w->out_n = 0;
    SP_TRY(rc);
    sp_hex128(h.high64, h.low64, hex);
    return 0;
}

/* 1 if ck is a position of this writer's layout (data_start known). */
static int ck_in_layout(const sp_gguf_w *w, const sp_gguf_ck *ck) {
    if (ck->tensor < 0 || ck->tensor > w->n_t || ck->rows < 0 || !memchr(ck->xxh128, 0, sizeof ck->xxh128)) return 0;
    if (ck->tensor == w->n_t) return ck->rows == 0 && ck->bytes == sp_gguf_file_bytes(w);
    const gtensor *g = &w->t[ck->tensor];
    return ck->rows < g->n_rows && ck->bytes == w->data_start + g->offset + ck->rows * g->row_bytes;
}

/* Hashes the tmp from its start through the checkpoints while they match;
 * *n_good of them did, and `good` holds the hash state after the last. */
static int rehash_prefix(sp_gguf_w *w, int64_t size, const sp_gguf_ck *ck, int n_ck, XXH3_state_t *good, int *n_good) {
    int64_t pos = 0;
    XXH3_128bits_reset(w->xx);
    for (*n_good = 0; *n_good < n_ck && ck[*n_good].bytes <= size; ++*n_good) {
        for (int64_t n; pos < ck[*n_good].bytes; pos += n) {
            n = ck[*n_good].bytes - pos < OUT_BYTES ? ck[*n_good].bytes - pos : OUT_BYTES;
            SP_TRY(sp_io_pread_full(w->fd, w->out, n, pos, w->tmp));
            XXH3_128bits_update(w->xx, w->out, (size_t)n);
        }
        char hex[33];
        XXH128_hash_t h = XXH3_128bits_digest(w->xx);
        sp_hex128(h.high64, h.low64, hex);
        if (strcmp(hex, ck[*n_good].xxh128)) break;
        XXH3_copyState(good, w->xx);
    }
    return 0;
}

int sp_gguf_resume(sp_gguf_w *w, const sp_gguf_ck *ck, int n_ck, int *n_good, int64_t *dropped_bytes) {
    *n_good = 0;
    *dropped_bytes = 0;
    if (!w->resumable || w->fd >= 0) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF resume of a writer that is not resumable", w->path);
    char hdr[33];
    SP_TRY(sp_gguf_header_hash(w, hdr)); /* also sets data_start */
    for (int i = 0; i < n_ck; i++)
        if (!ck_in_layout(w, &ck[i]) || (i && ck[i].bytes <= ck[i - 1].bytes))
            return sp_fail(SP_EX_DATAERR, "%s: checkpoint %d (tensor %lld, row %lld, byte %lld) is not a position of this file's layout",
                           w->tmp, i, (long long)ck[i].tensor, (long long)ck[i].rows, (long long)ck[i].bytes);
    int64_t size = 0;
    int rc = SP_EX_NOINPUT;
    if (n_ck && ck[0].bytes == w->data_start && !strcmp(ck[0].xxh128, hdr)) rc = sp_io_open_own(w->tmp, O_RDWR, &w->fd, &size);
    if (rc == SP_EX_NOINPUT) {
        sp_err_clear();
        return sp_gguf_begin(w); /* nothing to continue: afresh */
    }
    SP_TRY(rc);
    XXH3_state_t *good = XXH3_createState();
    if (!good) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", w->path);
    rc = rehash_prefix(w, size, ck, n_ck, good, n_good);
    if (!rc && *n_good) {
        const sp_gguf_ck *at = &ck[*n_good - 1];
        XXH3_copyState(w->xx, good);
        if (size > at->bytes) {
            *dropped_bytes = size - at->bytes;
            rc = sp_io_truncate(w->fd, at->bytes, w->tmp);
            if (!rc) rc = sp_io_fsync(w->fd, w->tmp);
        }
        if (!rc) rc = start_rows(w);
        w->file_bytes = at->bytes;
        w->cur = at->tensor;
        w->cur_rows = at->rows;
    }
    XXH3_freeState(good);
    SP_TRY(rc);
    if (*n_good) return 0;
    close(w->fd); /* not even the header matches: afresh */
    w->fd = -1;
    XXH3_128bits_reset(w->xx);
    return sp_gguf_begin(w);
}

int sp_gguf_sync(sp_gguf_w *w, sp_gguf_ck *ck) {
    if (!w->begun) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF sync before the header was written", w->path);
    SP_TRY(out_flush(w));
    SP_TRY(sp_io_fsync(w->fd, w->tmp));
    memset(ck, 0, sizeof *ck);
    ck->tensor = w->cur;
    ck->rows = w->cur_rows;
    ck->bytes = w->file_bytes;
    XXH128_hash_t h = XXH3_128bits_digest(w->xx);
    sp_hex128(h.high64, h.low64, ck->xxh128);
    return 0;
}

int64_t sp_gguf_file_bytes(const sp_gguf_w *w) { return w->data_start + align_up(w->data_bytes, w->alignment); }

int sp_gguf_rows(sp_gguf_w *w, const float *rows, int64_t n_rows) { return sp_gguf_rows_weighted(w, rows, n_rows, NULL); }

int sp_gguf_rows_weighted(sp_gguf_w *w, const float *rows, int64_t n_rows, const float *col_weight) {
    if (!w->begun || w->cur >= w->n_t) return sp_fail(SP_EX_SOFTWARE, "%s: GGUF rows with no tensor to receive them", w->path);
    const gtensor *g = &w->t[w->cur];
    if (w->cur_rows + n_rows > g->n_rows)
        return sp_fail(SP_EX_SOFTWARE, "%s: tensor '%s': %lld rows written, it has %lld", w->path, g->name,
                       (long long)(w->cur_rows + n_rows), (long long)g->n_rows);
    int64_t cols = g->ne[0];
    for (int64_t r = 0; r < n_rows; r++) {
        const float *x = rows + r * cols;
        for (int64_t j = 0; j < cols; j++)
            if (!isfinite(x[j]))
                return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': non-finite value at row %lld, column %lld", w->path, g->name,
                               (long long)(w->cur_rows + r), (long long)j);
        /* Every type's encoded row is checked: a finite float32 can still
         * round to Inf in it (an f16 value past 65504, a block whose fp16
         * scale d or min m overflows, a bf16 value next to FLT_MAX). The
         * blocks are checked as written: their fp16 fields read back. */
        int64_t bad = -1;
        switch (g->type) {
        case SP_GGUF_T_F32:
        case SP_GGUF_T_F16:
        case SP_GGUF_T_BF16: {
            sp_dtype dt = g->type == SP_GGUF_T_F32 ? SP_DTYPE_F32 : g->type == SP_GGUF_T_F16 ? SP_DTYPE_F16 : SP_DTYPE_BF16;
            sp_convert_from_f32(dt, x, cols, w->conv);
            bad = sp_dtype_first_nonfinite(dt, w->conv, cols);
            if (bad >= 0)
                return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': value %g at row %lld, column %lld is Inf as %s; export it as "
                               "f32%s", w->path, g->name, (double)x[bad], (long long)(w->cur_rows + r), (long long)bad,
                               sp_gguf_ttype_name(g->type), g->type == SP_GGUF_T_F16 ? " or bf16 (the range of f32)" : "");
            break;
        }
        default: {
            const qtype *qt = qtype_of(g->type);
            SP_ASSERT(qt);
            sp_gguf_quantize(g->type, x, cols, col_weight, w->conv);
            int which = 0;
            bad = first_bad_block(qt, w->conv, cols / SP_GGUF_QK, &which);
            if (bad >= 0) {
                const float *xb = x + bad * SP_GGUF_QK;
                float amax = 0.0f, min = FLT_MAX, max = -FLT_MAX;
                for (int j = 0; j < SP_GGUF_QK; j++) amax = fmaxf(amax, fabsf(xb[j])), min = fminf(min, xb[j]), max = fmaxf(max, xb[j]);
                return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': row %lld, columns %lld..%lld: the %s block's %s is Inf as fp16 "
                               "(values %g..%g, max|x| %g); export it as bf16 or f32",
                               w->path, g->name, (long long)(w->cur_rows + r), (long long)(bad * SP_GGUF_QK),
                               (long long)(bad * SP_GGUF_QK + SP_GGUF_QK - 1), qt->name,
                               which ? "min m" : qt->has_min ? "scale d = (max − min)/(2^b − 1)"
                                               : qt->bits == 8 ? "scale d = max|x|/127" : "scale d = max/−2^(b−1)",
                               (double)min, (double)max, (double)amax);
            }
            break;
        }
        }
        SP_TRY(out_put(w, w->conv, g->row_bytes));
    }
    w->cur_rows += n_rows;
    if (w->cur_rows == g->n_rows) {
        int64_t end = g->offset + g->row_bytes * g->n_rows;
        int64_t next = w->cur + 1 < w->n_t ? w->t[w->cur + 1].offset : align_up(w->data_bytes, w->alignment);
        SP_TRY(out_zeros(w, next - end));
        w->cur++;
        w->cur_rows = 0;
    }
    return 0;
}

int sp_gguf_finish(sp_gguf_w *w, char hex[33]) {
    if (!w->begun) SP_TRY(sp_gguf_begin(w));
    if (w->cur != w->n_t)
        return sp_fail(SP_EX_SOFTWARE, "%s: tensor '%s' incomplete (%lld of %lld rows)", w->path, w->t[w->cur].name,
                       (long long)w->cur_rows, (long long)w->t[w->cur].n_rows);
    SP_TRY(out_flush(w));
    SP_ASSERT(w->file_bytes == sp_gguf_file_bytes(w));
    SP_TRY(sp_io_fsync(w->fd, w->tmp));
    if (close(w->fd)) {
        w->fd = -1;
        return sp_fail_errno(SP_EX_IOERR, "%s: close", w->tmp);
    }
    w->fd = -1;
    if (rename(w->tmp, w->path)) return sp_fail_errno(SP_EX_IOERR, "%s: rename to %s", w->tmp, w->path);
    w->finished = 1;
    char *dir = strdup(w->path);
    if (!dir) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", w->path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, strlen(dir) + 1, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    int rc = sp_io_fsync_dir(dir);
    free(dir);
    SP_TRY(rc);
    XXH128_hash_t h = XXH3_128bits_digest(w->xx);
    sp_hex128(h.high64, h.low64, hex);
    return 0;
}
