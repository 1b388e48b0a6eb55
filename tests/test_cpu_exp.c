/* tests/test_cpu_exp.c — the CPU backend's vector expf (linalg/cpu_exp.c)
 * against glibc's expf itself, bit for bit:
 *   - every float x with |x| <= 87 (the table path: every input the softmax
 *     and the activations give it), in batches, for each implementation this
 *     CPU runs (AVX-512F, AVX2+FMA); under ASan every 13th;
 *   - the special values (NaN, ±inf, ±0, subnormals, the overflow and
 *     underflow edges), which go to expf;
 *   - the cut (x < lo gives +0, whatever x is), every length 0..40 (the
 *     scalar tails) and unaligned starts.
 * Exit 0 when every value matches, 1 with the first mismatches, 77 when the
 * CPU runs the scalar expf only (nothing vectorized to check) or glibc's expf
 * is not the FMA variant these lanes reproduce (a CPU without FMA).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_impl.h"

#define BATCH 65536
/* Every float in the release build; under ASan (tests run there too, about
 * 15 times slower) every STEP-th, the special values and edges all the same. */
#if defined(__SANITIZE_ADDRESS__)
#define STEP 13
#define STEP_NAME "every 13th float"
#else
#define STEP 1
#define STEP_NAME "every float"
#endif

static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t u_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static int bad;

static void expect(int kind, const float *got, const float *in, int64_t n, float lo, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        float want = in[i] < lo ? 0.0f : expf(in[i]);
        if (u_of(got[i]) != u_of(want) && !(isnan(got[i]) && isnan(want))) {
            if (bad++ < 10)
                fprintf(stderr, "kind %d, %s: expf(%a) = %a, expected %a\n", kind, what, (double)in[i], (double)got[i],
                        (double)want);
        }
    }
}

int main(void) {
    const int top = sp_cpu_expf_kind();
    if (top == 0) {
        printf("SKIP: this CPU has neither AVX-512F nor AVX2+FMA; sp_cpu_expf_n calls expf\n");
        return 77;
    }
    float *in = malloc(BATCH * 4 + 64), *out = malloc(BATCH * 4 + 64);
    if (!in || !out) return 70;
    for (int kind = 1; kind <= top; kind++) {
        int64_t n_all = 0;
        /* every |x| <= 87: bit patterns 0 .. bits(87), both signs */
        const uint32_t hi = u_of(87.0f);
        for (int sign = 0; sign < 2; sign++)
            for (uint64_t u0 = 0; u0 <= hi; u0 += (uint64_t)BATCH * STEP) {
                const uint64_t left = (hi - u0) / STEP + 1;
                int64_t n = (int64_t)(left < BATCH ? left : BATCH);
                for (int64_t i = 0; i < n; i++)
                    in[i] = f_of((uint32_t)(u0 + (uint64_t)i * STEP) | (sign ? 0x80000000u : 0));
                memcpy(out, in, (size_t)n * 4);
                sp_cpu_expf_n_as(kind, out, n, -INFINITY);
                expect(kind, out, in, n, -INFINITY, "|x| <= 87");
                n_all += n;
                if (bad) break;
            }
        /* special values, alone and among table-path lanes */
        const float sp[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, f_of(1), f_of(0x807fffff), 87.0f,
                            f_of(u_of(87.0f) + 1), 88.5f, 88.72283f, 88.72284f, 89.0f, 1e30f, -87.0f,
                            -f_of(u_of(87.0f) + 1), -100.0f, -103.97207f, -103.97208f, -104.0f, -1e30f, 3.0f, -3.0f};
        const int nsp = (int)(sizeof sp / sizeof sp[0]);
        for (int off = 0; off < 8; off++)
            for (int k = 0; k < nsp; k++) {
                for (int i = 0; i < 24; i++) in[i] = (float)(i - 12) * 0.37f;
                in[off + (k % 16)] = sp[k];
                memcpy(out, in, 24 * 4);
                sp_cpu_expf_n_as(kind, out, 24, -INFINITY);
                expect(kind, out, in, 24, -INFINITY, "special values");
            }
        /* the cut, lengths 0..40, unaligned starts */
        for (int len = 0; len <= 40; len++)
            for (int start = 0; start < 3; start++) {
                float *a = in + start, *b = out + start;
                for (int i = 0; i < len; i++) a[i] = (float)((i * 37) % 200 - 150) + 0.25f * (float)start;
                if (len > 5) a[5] = NAN;
                memcpy(b, a, (size_t)len * 4);
                sp_cpu_expf_n_as(kind, b, len, -87.0f);
                expect(kind, b, a, len, -87.0f, "cut at -87");
            }
        printf("kind %d (%s): %lld table-path values (%s) and the special values equal glibc's expf%s\n", kind,
               kind == 2 ? "AVX-512F" : "AVX2+FMA", (long long)n_all, STEP_NAME, bad ? ": NO" : "");
    }
    free(in);
    free(out);
    if (bad) {
        fprintf(stderr, "FAIL: %d values differ from expf\n", bad);
        return 1;
    }
    return 0;
}
