#include "dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    sp_dtype t;
    int size;
} k_dtypes[] = {
    {"F64", SP_DTYPE_F64, 8},  {"F32", SP_DTYPE_F32, 4}, {"F16", SP_DTYPE_F16, 2},
    {"BF16", SP_DTYPE_BF16, 2}, {"I64", SP_DTYPE_I64, 8}, {"I32", SP_DTYPE_I32, 4},
    {"I16", SP_DTYPE_I16, 2},  {"I8", SP_DTYPE_I8, 1},   {"U8", SP_DTYPE_U8, 1},
    {"BOOL", SP_DTYPE_BOOL, 1},
};

sp_dtype sp_dtype_from_st(const char *s) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (strcmp(s, k_dtypes[i].name) == 0) return k_dtypes[i].t;
    return SP_DTYPE_INVALID;
}

const char *sp_dtype_st_name(sp_dtype t) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (k_dtypes[i].t == t) return k_dtypes[i].name;
    return "INVALID";
}

int sp_dtype_size(sp_dtype t) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (k_dtypes[i].t == t) return k_dtypes[i].size;
    return 0;
}

int sp_dtype_is_float(sp_dtype t) { return t == SP_DTYPE_F32 || t == SP_DTYPE_F16 || t == SP_DTYPE_BF16; }

float sp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t sp_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow to inf (after rounding) */
    if (absx < 0x38800000u) { /* subnormal or zero in f16 */
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        int shift = 126 - (int)e; /* f16 subnormal unit is 2^-24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absx + 0xfff + ((absx >> 13) & 1); /* round to nearest even */
    r -= (uint32_t)(112) << 23;
    return (uint16_t)(sign | (r >> 13));
}

float sp_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t sp_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* The first i < n whose element has every exponent bit set (Inf or NaN:
 * `ones`, 0x7f800000 for F32, 0x7c00 for F16, 0x7f80 for BF16) in buf of
 * `size`-byte elements (any alignment), or -1. Blocks of SCAN elements are
 * flagged by an OR the compiler vectorizes; a flagged block is searched. */
#define SCAN 256
static int64_t first_ones(const unsigned char *buf, int size, uint32_t ones, int64_t n) {
    for (int64_t i0 = 0; i0 < n; i0 += SCAN) {
        const int64_t m = n - i0 < SCAN ? n - i0 : SCAN;
        const unsigned char *b = buf + i0 * size;
        uint32_t any = 0;
        if (size == 4) {
            for (int64_t i = 0; i < m; i++) {
                uint32_t u;
                memcpy(&u, b + 4 * i, 4);
                any |= (u & ones) == ones;
            }
        } else {
            for (int64_t i = 0; i < m; i++) {
                uint16_t h;
                memcpy(&h, b + 2 * i, 2);
                any |= (uint32_t)((h & ones) == ones);
            }
        }
        if (!any) continue;
        for (int64_t i = 0; i < m; i++) {
            uint32_t u = 0;
            memcpy(&u, b + size * i, (size_t)size);
            if ((u & ones) == ones) return i0 + i;
        }
    }
    return -1;
}

int64_t sp_convert_to_f32(sp_dtype t, const void *src, int64_t n, float *dst) {
    const unsigned char *s = src;
    switch (t) {
    case SP_DTYPE_F32: memcpy(dst, s, (size_t)n * 4); break;
    case SP_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    case SP_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = sp_f16_to_f32(h);
        }
        break;
    case SP_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = sp_bf16_to_f32(h);
        }
        break;
    default:
        for (int64_t i = 0; i < n; i++) dst[i] = NAN;
        break;
    }
    return first_ones((const unsigned char *)dst, 4, 0x7f800000u, n);
}

int64_t sp_dtype_first_nonfinite(sp_dtype t, const void *buf, int64_t n) {
    if (t == SP_DTYPE_F32) return first_ones(buf, 4, 0x7f800000u, n);
    return first_ones(buf, 2, t == SP_DTYPE_F16 ? 0x7c00u : 0x7f80u, n); /* all exponent bits set: Inf or NaN */
}

void sp_convert_from_f32(sp_dtype t, const float *src, int64_t n, void *dst) {
    unsigned char *d = dst;
    if (t == SP_DTYPE_F32) {
        memcpy(d, src, (size_t)n * 4);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        switch (t) {
        case SP_DTYPE_F16: {
            uint16_t h = sp_f32_to_f16(src[i]);
            memcpy(d + 2 * i, &h, 2);
            break;
        }
        case SP_DTYPE_BF16: {
            uint16_t h = sp_f32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, 2);
            break;
        }
        default: break;
        }
    }
}
