/* linalg/cpu_exp.c — expf over arrays, vectorized, with glibc's bits
 * (sp_cpu_expf_n in cpu_impl.h; docs/determinism.md, "Vector expf").
 *
 * Why by hand. The attention's softmax and the gated activations call expf
 * once per element; one scalar call per element was the largest cost of the
 * forward outside its GEMMs (perf: the softmax's loop with expf, ~7 % of the
 * floor job's samples). glibc's vector expf (libmvec) is faster but rounds
 * differently from its scalar expf, so every result of the CPU backend, and
 * every byte-identity and reference test built on them, would move; no
 * packaged library offers a vector expf with the scalar one's bits. This
 * file computes glibc's own algorithm (the one its x86-64 FMA variant,
 * __expf_fma, runs: ARM's optimized-routines expf, a 32-entry table of
 * 2^(i/32) and a degree-3 polynomial in double) in AVX-512F or AVX2+FMA
 * lanes, with the same operations, the same fused multiply-adds and the same
 * roundings, so each lane equals glibc's expf bit for bit.
 * tests/test_cpu_exp.c checks that against expf itself on every float in
 * [-87, 87] and on the special values. On a CPU without AVX2 and FMA, glibc
 * runs another variant and this file calls expf.
 *
 * The algorithm, for |x| <= 87 (all other inputs, NaN included, go to expf):
 *   xd = (double)x; z = fma(N/ln2, xd, S), S = 1.5·2⁵² (rounds N·x/ln2 to an
 *   integer k in the low bits of z); kd = z − S; r = fma(N/ln2, xd, −kd);
 *   s = asdouble(T[k mod 32] + (k << 47)) = 2^(k/32);
 *   y = fma(fma(C0, r, C1), r·r, fma(C2, r, 1))·s; return (float)y.
 * N = 32. T[i] = bits(2^(i/32)) − (i << 47), the doubles nearest 2^(i/32).
 */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "cpu_impl.h"
#include "error.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EXP_X86 1
#endif

/* bits(2^(i/32)) − (i << 47), i = 0..31. */
static const uint64_t exp_tab[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};
#define EXP_INVLN2N 0x1.71547652b82fep+5 /* 32/ln 2 */
#define EXP_SHIFT 0x1.8p+52
#define EXP_C0 (0x1.c6af84b912394p-5 / 32 / 32 / 32)
#define EXP_C1 (0x1.ebfce50fac4f3p-3 / 32 / 32)
#define EXP_C2 (0x1.62e42ff0c52d6p-1 / 32)
#define EXP_MAX 87.0f /* |x| up to here takes the table path in glibc too */

/* x[i] ← lo-cut expf, scalar: the reference every lane must equal. */
static inline float cut_expf(float x, float lo) { return x < lo ? 0.0f : expf(x); }

static void expf_scalar(float *x, int64_t n, float lo) {
    for (int64_t i = 0; i < n; i++) x[i] = cut_expf(x[i], lo);
}

#ifdef EXP_X86
__attribute__((target("avx512f"))) static void expf_avx512(float *x, int64_t n, float lo) {
    const __m512d invln2n = _mm512_set1_pd(EXP_INVLN2N), shift = _mm512_set1_pd(EXP_SHIFT), one = _mm512_set1_pd(1.0);
    const __m512d c0 = _mm512_set1_pd(EXP_C0), c1 = _mm512_set1_pd(EXP_C1), c2 = _mm512_set1_pd(EXP_C2);
    const __m512i mask31 = _mm512_set1_epi64(31);
    const __m256 vlo = _mm256_set1_ps(lo), vmax = _mm256_set1_ps(EXP_MAX), vabs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 cut = _mm256_cmp_ps(v, vlo, _CMP_LT_OQ);                                   /* → 0 */
        __m256 ok = _mm256_cmp_ps(_mm256_and_ps(v, vabs), vmax, _CMP_LE_OQ);              /* table path (NaN: no) */
        if (_mm256_movemask_ps(_mm256_or_ps(cut, ok)) != 0xff) { /* a lane for glibc's special cases */
            expf_scalar(x + i, 8, lo);
            continue;
        }
        __m512d xd = _mm512_cvtps_pd(v);
        __m512d z = _mm512_fmadd_pd(invln2n, xd, shift);
        __m512i ki = _mm512_castpd_si512(z);
        __m512d kd = _mm512_sub_pd(z, shift);
        __m512d r = _mm512_fmsub_pd(invln2n, xd, kd);
        __m512i t = _mm512_i64gather_epi64(_mm512_and_si512(ki, mask31), (const void *)exp_tab, 8);
        __m512d s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64(ki, 47)));
        __m512d p = _mm512_fmadd_pd(c0, r, c1);
        __m512d r2 = _mm512_mul_pd(r, r);
        __m512d y = _mm512_fmadd_pd(c2, r, one);
        y = _mm512_mul_pd(_mm512_fmadd_pd(p, r2, y), s);
        _mm256_storeu_ps(x + i, _mm256_andnot_ps(cut, _mm512_cvtpd_ps(y)));
    }
    expf_scalar(x + i, n - i, lo);
}

__attribute__((target("avx2,fma"))) static void expf_avx2(float *x, int64_t n, float lo) {
    const __m256d invln2n = _mm256_set1_pd(EXP_INVLN2N), shift = _mm256_set1_pd(EXP_SHIFT), one = _mm256_set1_pd(1.0);
    const __m256d c0 = _mm256_set1_pd(EXP_C0), c1 = _mm256_set1_pd(EXP_C1), c2 = _mm256_set1_pd(EXP_C2);
    const __m256i mask31 = _mm256_set1_epi64x(31);
    const __m128 vlo = _mm_set1_ps(lo), vmax = _mm_set1_ps(EXP_MAX), vabs = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128 v = _mm_loadu_ps(x + i);
        __m128 cut = _mm_cmp_ps(v, vlo, _CMP_LT_OQ);
        __m128 ok = _mm_cmp_ps(_mm_and_ps(v, vabs), vmax, _CMP_LE_OQ);
        if (_mm_movemask_ps(_mm_or_ps(cut, ok)) != 0xf) {
            expf_scalar(x + i, 4, lo);
            continue;
        }
        __m256d xd = _mm256_cvtps_pd(v);
        __m256d z = _mm256_fmadd_pd(invln2n, xd, shift);
        __m256i ki = _mm256_castpd_si256(z);
        __m256d kd = _mm256_sub_pd(z, shift);
        __m256d r = _mm256_fmsub_pd(invln2n, xd, kd);
        __m256i t = _mm256_i64gather_epi64((const long long *)exp_tab, _mm256_and_si256(ki, mask31), 8);
        __m256d s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64(ki, 47)));
        __m256d p = _mm256_fmadd_pd(c0, r, c1);
        __m256d r2 = _mm256_mul_pd(r, r);
        __m256d y = _mm256_fmadd_pd(c2, r, one);
        y = _mm256_mul_pd(_mm256_fmadd_pd(p, r2, y), s);
        _mm_storeu_ps(x + i, _mm_andnot_ps(cut, _mm256_cvtpd_ps(y)));
    }
    expf_scalar(x + i, n - i, lo);
}
#endif

/* Which implementation this CPU runs: decided at the first call, from any
 * pool thread (atomic: two threads deciding at once store the same value). */
static atomic_int exp_kind = -1; /* 0 scalar, 1 AVX2+FMA, 2 AVX-512F */

int sp_cpu_expf_kind(void) {
    int k = atomic_load_explicit(&exp_kind, memory_order_relaxed);
    if (k < 0) {
        k = 0;
#ifdef EXP_X86
        if (__builtin_cpu_supports("avx512f")) k = 2;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) k = 1;
#endif
        atomic_store_explicit(&exp_kind, k, memory_order_relaxed);
    }
    return k;
}

void sp_cpu_expf_n_as(int kind, float *x, int64_t n, float lo) {
    SP_ASSERT(n >= 0 && kind >= 0 && kind <= sp_cpu_expf_kind());
#ifdef EXP_X86
    switch (kind) {
    case 2: expf_avx512(x, n, lo); return;
    case 1: expf_avx2(x, n, lo); return;
    default: break;
    }
#endif
    expf_scalar(x, n, lo);
}

void sp_cpu_expf_n(float *x, int64_t n, float lo) { sp_cpu_expf_n_as(sp_cpu_expf_kind(), x, n, lo); }
