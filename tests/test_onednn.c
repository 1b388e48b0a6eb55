/* tests/test_onednn.c — the oneDNN backend (linalg/onednn.c) op by op:
 *
 *   (a) sgemm against a float64 reference and against the cpu backend's
 *       sgemm, on shapes across the tile edges (256 × 256), all four
 *       transposes, padded leading dimensions, alpha != 1 and beta != 0:
 *       relative Frobenius error at most 1e-5 (f32); C's padding columns
 *       untouched, and beta = 0 overwriting a C full of NaN;
 *   (b) bits: the same products at 1, 2 and 3 threads, and from operands at
 *       other addresses, are identical; oneDNN starts no OpenMP thread of its
 *       own (the thread count of the process grows by the pool's workers only);
 *   (c) the registry: "onednn" is known, "auto" takes it exactly where its
 *       for_auto says so, precision "bf16" is refused by cpu (64), and by
 *       onednn where the CPU has no bf16 (64, the reason named); the identity
 *       names the library version, the ISA and the precision;
 *   (d) where bf16 runs (AVX512-BF16 or AMX): its sgemm within 1e-5 of the
 *       float64 product of the bf16-rounded operands, visibly not float32
 *       (more than 1e-4 from the unrounded product, at most 1e-2), and its
 *       bits independent of the thread count too;
 *   (e) at bf16, the hold (backend.h): kept copies give the bits of
 *       per-call rounding, are what the product reads, are forgotten by the
 *       next hold, and a B beyond the planned bytes is rounded per call.
 *
 * Exit 0 when every check passes, 1 on a failure, 77 (skip, with a message)
 * when this build has no oneDNN backend or this CPU cannot run it.
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "test_util.h"

#ifdef SLICEPIPE_HAVE_ONEDNN
#define TOL_F32 1e-5 /* relative Frobenius error, f32 */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double urand(void) { /* [0, 1), xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test_onednn: out of memory\n");
        exit(70);
    }
    return p;
}

/* bf16 rounding to nearest, ties to even (what the bf16 path must do). */
static float bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct gemm_case {
    int ta, tb;
    int64_t m, n, k, pad; /* pad: extra elements of every leading dimension */
    float alpha, beta;
} gemm_case;

/* One product's operands, C before, and its float64 reference. */
typedef struct gemm_data {
    gemm_case g;
    int64_t lda, ldb, ldc, a_n, b_n, c_n;
    float *A, *B, *C0;
    double *ref;      /* (m, n) */
    double *ref_bf16; /* (m, n), from bf16-rounded A and B */
} gemm_data;

static double ref_dot(const gemm_data *d, int64_t i, int64_t j, int bf16) {
    double s = 0.0;
    for (int64_t p = 0; p < d->g.k; p++) {
        float a = d->g.ta ? d->A[p * d->lda + i] : d->A[i * d->lda + p];
        float b = d->g.tb ? d->B[j * d->ldb + p] : d->B[p * d->ldb + j];
        if (bf16) {
            a = bf16_round(a);
            b = bf16_round(b);
        }
        s += (double)a * (double)b;
    }
    return s;
}

static void data_init(gemm_data *d, const gemm_case *g) {
    memset(d, 0, sizeof *d);
    d->g = *g;
    d->lda = (g->ta ? g->m : g->k) + g->pad;
    d->ldb = (g->tb ? g->k : g->n) + g->pad;
    d->ldc = g->n + g->pad;
    d->a_n = (g->ta ? g->k : g->m) * d->lda;
    d->b_n = (g->tb ? g->n : g->k) * d->ldb;
    d->c_n = g->m * d->ldc;
    d->A = xmalloc((size_t)d->a_n * 4);
    d->B = xmalloc((size_t)d->b_n * 4);
    d->C0 = xmalloc((size_t)d->c_n * 4);
    for (int64_t i = 0; i < d->a_n; i++) d->A[i] = (float)(2.0 * urand() - 1.0);
    for (int64_t i = 0; i < d->b_n; i++) d->B[i] = (float)(2.0 * urand() - 1.0);
    for (int64_t i = 0; i < d->c_n; i++) d->C0[i] = g->beta == 0.0f ? NAN : (float)(2.0 * urand() - 1.0);
    for (int64_t i = 0; i < g->m; i++) /* padding columns of C hold a sentinel */
        for (int64_t j = g->n; j < d->ldc; j++) d->C0[i * d->ldc + j] = 12345.0f;
    d->ref = xmalloc((size_t)(g->m * g->n) * 8);
    d->ref_bf16 = xmalloc((size_t)(g->m * g->n) * 8);
    for (int64_t i = 0; i < g->m; i++)
        for (int64_t j = 0; j < g->n; j++) {
            double c0 = g->beta == 0.0f ? 0.0 : (double)g->beta * d->C0[i * d->ldc + j];
            d->ref[i * g->n + j] = (double)g->alpha * ref_dot(d, i, j, 0) + c0;
            d->ref_bf16[i * g->n + j] = (double)g->alpha * ref_dot(d, i, j, 1) + c0;
        }
}

static void data_free(gemm_data *d) {
    free(d->A);
    free(d->B);
    free(d->C0);
    free(d->ref);
    free(d->ref_bf16);
}

/* C (a fresh copy of C0, into `out`, c_n floats) by bk's sgemm. Operands at
 * an offset of `shift` floats from their usual place (other alignment). */
static void run_gemm(const sp_bk *bk, const gemm_data *d, int shift, float *out) {
    float *A = xmalloc((size_t)(d->a_n + shift) * 4), *B = xmalloc((size_t)(d->b_n + shift) * 4);
    float *C = xmalloc((size_t)(d->c_n + shift) * 4);
    memcpy(A + shift, d->A, (size_t)d->a_n * 4);
    memcpy(B + shift, d->B, (size_t)d->b_n * 4);
    memcpy(C + shift, d->C0, (size_t)d->c_n * 4);
    bk->sgemm(bk, d->g.ta, d->g.tb, d->g.m, d->g.n, d->g.k, d->g.alpha, A + shift, d->lda, B + shift, d->ldb, d->g.beta,
              C + shift, d->ldc);
    memcpy(out, C + shift, (size_t)d->c_n * 4);
    free(A);
    free(B);
    free(C);
}

/* ‖C − ref‖_F / ‖ref‖_F over the (m, n) block; -1 if C's padding changed or
 * an element is not finite. */
static double rel_err(const gemm_data *d, const float *C, const double *ref) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < d->g.m; i++) {
        for (int64_t j = 0; j < d->g.n; j++) {
            double c = C[i * d->ldc + j], r = ref[i * d->g.n + j];
            if (!isfinite(c)) return -1.0;
            num += (c - r) * (c - r);
            den += r * r;
        }
        for (int64_t j = d->g.n; j < d->ldc; j++)
            if (C[i * d->ldc + j] != 12345.0f) return -1.0;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ‖C1 − C2‖_F / ‖C2‖_F over the (m, n) block. */
static double rel_diff(const gemm_data *d, const float *C1, const float *C2) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < d->g.m; i++)
        for (int64_t j = 0; j < d->g.n; j++) {
            double a = C1[i * d->ldc + j], b = C2[i * d->ldc + j];
            num += (a - b) * (a - b);
            den += b * b;
        }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static const gemm_case cases[] = {
    {0, 1, 300, 520, 70, 0, 1.0f, 0.0f},  /* the forward's linear: x·Wᵀ, tiles 2 × 3 with edges */
    {0, 0, 300, 520, 70, 0, 1.0f, 1.0f},  /* a shortcut: y += x·S */
    {1, 0, 257, 255, 33, 3, 0.5f, 0.75f}, /* Aᵀ, padded leading dimensions */
    {1, 1, 64, 700, 129, 5, -2.0f, 0.0f}, /* Aᵀ·Bᵀ */
    {0, 1, 1, 1, 1, 0, 1.0f, 0.0f},
    {0, 0, 3, 5, 7, 2, 1.0f, -1.0f},
    {0, 1, 512, 256, 512, 0, 1.0f, 0.0f}, /* exact multiples of the tile */
    {0, 0, 700, 600, 300, 1, 1.0f, 0.0f}, /* nine tiles */
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

/* Threads of this process (/proc/self/task entries). */
static int task_count(void) {
    DIR *dir = opendir("/proc/self/task");
    if (!dir) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)))
        if (e->d_name[0] != '.') n++;
    closedir(dir);
    return n;
}

/* (a) and (b) for instance bk at its precision. */
static void test_sgemm(sp_bk *bk, sp_bk *cpu, int bf16) {
    const char *tag = bf16 ? "bf16" : "f32";
    for (int c = 0; c < N_CASES; c++) {
        gemm_data d;
        data_init(&d, &cases[c]);
        const gemm_case *g = &cases[c];
        float *C1 = xmalloc((size_t)d.c_n * 4), *C2 = xmalloc((size_t)d.c_n * 4), *C3 = xmalloc((size_t)d.c_n * 4),
              *Cs = xmalloc((size_t)d.c_n * 4), *Ccpu = xmalloc((size_t)d.c_n * 4);
        bk->set_threads(bk, 2, 0);
        run_gemm(bk, &d, 0, C2);
        bk->set_threads(bk, 1, 0);
        run_gemm(bk, &d, 0, C1);
        bk->set_threads(bk, 3, 0);
        run_gemm(bk, &d, 0, C3);
        bk->set_threads(bk, 2, 0);
        run_gemm(bk, &d, 3, Cs);
        run_gemm(cpu, &d, 0, Ccpu);
        char shape[96];
        snprintf(shape, sizeof shape, "%s %s%s %lldx%lldx%lld pad %lld alpha %g beta %g", tag, g->ta ? "T" : "N",
                 g->tb ? "T" : "N", (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->pad, g->alpha,
                 g->beta);
        double e_ref = rel_err(&d, C2, d.ref);
        if (!bf16) {
            double e_cpu = rel_diff(&d, C2, Ccpu);
            CHECK(e_ref >= 0 && e_ref <= TOL_F32, "%s: vs float64: %.2e (<= %.0e; -1: padding or NaN)", shape, e_ref,
                  TOL_F32);
            CHECK(e_cpu <= TOL_F32, "%s: vs the cpu backend: %.2e (<= %.0e)", shape, e_cpu, TOL_F32);
            printf("  %-52s vs float64 %.1e, vs cpu %.1e\n", shape, e_ref, e_cpu);
        } else {
            double e_bf = rel_err(&d, C2, d.ref_bf16);
            CHECK(e_bf >= 0 && e_bf <= TOL_F32, "%s: vs float64 of the bf16-rounded operands: %.2e (<= %.0e)", shape, e_bf,
                  TOL_F32);
            /* k = 1: one product, alpha·a·b of two rounded values, may land within 1e-4 */
            CHECK(e_ref <= 1e-2 && (g->k < 8 || e_ref > 1e-4), "%s: vs unrounded float64: %.2e (in (1e-4, 1e-2]: bf16)",
                  shape, e_ref);
            printf("  %-52s vs float64 of bf16 operands %.1e, vs float64 %.1e\n", shape, e_bf, e_ref);
        }
        CHECK(memcmp(C1, C2, (size_t)d.c_n * 4) == 0 && memcmp(C3, C2, (size_t)d.c_n * 4) == 0,
              "%s: the same bits at 1, 2 and 3 threads", shape);
        CHECK(memcmp(Cs, C2, (size_t)d.c_n * 4) == 0, "%s: the same bits from operands at other addresses", shape);
        free(C1);
        free(C2);
        free(C3);
        free(Cs);
        free(Ccpu);
        data_free(&d);
    }
}

/* (e) the hold at bf16 (backend.h): inside a hold each B is rounded once and
 * kept, so products reading it give the bits they give without a hold; a
 * B written inside a hold (against the contract) still gives the copy made
 * at its first use, which shows the copy is used; a new hold forgets it; a
 * B beyond the planned hold_bytes is rounded per call, with the same bits. */
static void test_hold(sp_bk *bk) {
    const gemm_case g = {0, 1, 300, 520, 70, 0, 1.0f, 0.0f}; /* x·Wᵀ, tiles with edges */
    gemm_data d;
    data_init(&d, &g);
    float *B2 = xmalloc((size_t)d.b_n * 4), *Bx = xmalloc((size_t)d.b_n * 4);
    for (int64_t i = 0; i < d.b_n; i++) B2[i] = (float)(2.0 * urand() - 1.0);
    memcpy(Bx, d.B, (size_t)d.b_n * 4);
    float *want = xmalloc((size_t)d.c_n * 4), *want2 = xmalloc((size_t)d.c_n * 4), *C = xmalloc((size_t)d.c_n * 4);
#define GEMM(Bp, out) bk->sgemm(bk, g.ta, g.tb, g.m, g.n, g.k, g.alpha, d.A, d.lda, (Bp), d.ldb, 0.0f, (out), d.ldc)
    GEMM(Bx, want);
    GEMM(B2, want2);
    /* room for one B only: the second is rounded per call */
    sp_bk_plan_in in = {.D = 8, .hold_bytes = d.b_n * 4};
    sp_bk_ws *ws = NULL;
    CHECK(bk->hold && bk->ws_init(bk, &in, &ws) == 0, "onednn has a hold and a workspace planned for it");
    if (!bk->hold || !ws) return;
    bk->hold(bk, 1);
    GEMM(Bx, C);
    CHECK(memcmp(C, want, (size_t)d.c_n * 4) == 0, "hold: a B's first product has the bits of no hold");
    GEMM(Bx, C);
    CHECK(memcmp(C, want, (size_t)d.c_n * 4) == 0, "hold: its second product (the kept copy) too");
    GEMM(B2, C);
    CHECK(memcmp(C, want2, (size_t)d.c_n * 4) == 0, "hold: a B beyond hold_bytes (rounded per call) too");
    memcpy(Bx, B2, (size_t)d.b_n * 4); /* written inside the hold: the kept copy is still the old B */
    GEMM(Bx, C);
    CHECK(memcmp(C, want, (size_t)d.c_n * 4) == 0, "hold: the kept copy is what the product reads");
    bk->hold(bk, 0);
    GEMM(Bx, C);
    CHECK(memcmp(C, want2, (size_t)d.c_n * 4) == 0, "after the hold: B as it is now");
    bk->hold(bk, 1);
    GEMM(Bx, C);
    CHECK(memcmp(C, want2, (size_t)d.c_n * 4) == 0, "a new hold forgets the old copy");
    bk->hold(bk, 0);
#undef GEMM
    printf("  hold: kept copies give the bits of per-call rounding; a new hold forgets them\n");
    bk->ws_free(bk, ws);
    free(B2);
    free(Bx);
    free(want);
    free(want2);
    free(C);
    data_free(&d);
}

/* (b): oneDNN runs no OpenMP team: a many-tile product adds the pool's
 * workers to the process and nothing else. */
static void test_no_omp_threads(sp_bk *bk) {
    gemm_data d;
    gemm_case g = {0, 1, 1024, 1024, 256, 0, 1.0f, 0.0f};
    data_init(&d, &g);
    float *C = xmalloc((size_t)d.c_n * 4);
    bk->set_threads(bk, 1, 0);
    int n0 = task_count();
    run_gemm(bk, &d, 0, C);
    int n1 = task_count();
    bk->set_threads(bk, 2, 0);
    int n2a = task_count();
    run_gemm(bk, &d, 0, C);
    int n2 = task_count();
    CHECK(n0 > 0 && n1 == n0, "1 thread: no thread started (%d before, %d after)", n0, n1);
    CHECK(n2 <= n2a + 1, "2 threads: at most the pool's one worker started (%d before, %d after)", n2a, n2);
    printf("  threads of the process: %d at 1 thread, %d at 2 (pool worker included)\n", n1, n2);
    free(C);
    data_free(&d);
}

#endif /* SLICEPIPE_HAVE_ONEDNN */

int main(void) {
    sp_bk *r = NULL;
    CHECK(sp_bk_name_known("onednn") && strstr(sp_bk_reg_names(), "onednn"), "onednn is a known backend name (%s)",
          sp_bk_reg_names());
#ifndef SLICEPIPE_HAVE_ONEDNN
    CHECK(sp_bk_open("onednn", &r) == 64 && !r && strstr(sp_errmsg(), "built without it") &&
              strstr(sp_errmsg(), "libdnnl-dev"), "open onednn in a build without it: 64 naming libdnnl-dev (%s)",
          sp_errmsg());
    CHECK(sp_bk_open_prec("auto", SP_BK_PREC_BF16, &r) == 64 && !r && strstr(sp_errmsg(), "bf16"),
          "auto at bf16 without oneDNN: 64 (%s)", sp_errmsg());
    if (g_fail) return 1;
    fprintf(stderr, "test_onednn: SKIP: this build has no oneDNN backend (install libdnnl-dev, tools/install-deps.sh, "
                    "and configure with -DSLICEPIPE_ONEDNN=AUTO or ON)\n");
    return 77;
#else
    char why[256] = "";
    CHECK(sp_bk_reg_find("onednn") != NULL, "the registry lists onednn");
    if (!sp_bk_onednn_usable(why, sizeof why)) {
        fprintf(stderr, "test_onednn: SKIP: the onednn backend cannot run here: %s\n", why);
        return g_fail ? 1 : 77;
    }
    sp_bk *bk = NULL, *cpu = NULL;
    if (sp_bk_open("onednn", &bk) || sp_bk_cpu_open(&cpu)) {
        fprintf(stderr, "test_onednn: %s\n", sp_errmsg());
        return 70;
    }
    cpu->set_threads(cpu, 1, 0);
    char id[512];
    bk->identity(bk, id, sizeof id);
    printf("onednn identity: %s\n", id);
    CHECK(strncmp(id, "onednn 2.", 9) == 0 && strstr(id, " isa=") && strstr(id, "precision=fp32") &&
              strstr(id, "cpu openblas"), "the identity names oneDNN's version, its ISA, the precision and the cpu part");
    CHECK(strcmp(bk->name, "onednn") == 0 && bk->host_shared == 1, "an onednn instance is host memory");
    CHECK(bk->process_bytes >= ((int64_t)5 << 20), "the memory plan gets oneDNN's code and caches (%lld bytes)",
          (long long)bk->process_bytes);
    CHECK(strlen(id) < 256, "the identity fits the job's 256 bytes (%zu)", strlen(id));

    /* (b) first, before any other instance has started threads */
    test_no_omp_threads(bk);
    printf("f32 products (1, 2 and 3 threads, shifted operands, the cpu backend):\n");
    test_sgemm(bk, cpu, 0);

    /* (c) the registry: what auto takes, bf16 where it runs and where it does not */
    int auto_f32 = sp_bk_onednn_for_auto(SP_BK_PREC_F32, why, sizeof why);
    printf("auto at f32 takes onednn here: %s%s%s\n", auto_f32 ? "yes" : "no (", auto_f32 ? "" : why, auto_f32 ? "" : ")");
    CHECK(sp_bk_open("auto", &r) == 0 && r, "open auto");
    if (r) {
        const char *want = auto_f32 ? "onednn" : "cpu";
#ifdef SLICEPIPE_HAVE_CUDA
        char cwhy[256];
        if (sp_bk_cuda_usable(cwhy, sizeof cwhy)) want = "cuda";
#endif
        CHECK(strcmp(r->name, want) == 0, "auto resolves to %s here (got %s)", want, r->name);
    }
    sp_bk_close(r);
    CHECK(sp_bk_open_prec("cpu", SP_BK_PREC_BF16, &r) == 64 && !r && strstr(sp_errmsg(), "float32 only"),
          "cpu at bf16: 64 (%s)", sp_errmsg());
    int bf16_here = sp_bk_onednn_for_auto(SP_BK_PREC_BF16, why, sizeof why);
    int rc = sp_bk_open_prec("onednn", SP_BK_PREC_BF16, &r);
    printf("bf16 here: %s (%s)\n", rc == 0 ? "yes" : "no", rc == 0 ? "AVX512-BF16 or AMX-BF16" : sp_errmsg());
    if (!bf16_here) { /* (d) on a CPU without bf16: refused with the reason */
        CHECK(rc == 64 && !r && strstr(sp_errmsg(), "bf16"), "onednn at bf16 without bf16 here: 64 (%s)", sp_errmsg());
        rc = sp_bk_open_prec("auto", SP_BK_PREC_BF16, &r);
        CHECK(rc == 64 && !r, "auto at bf16 without bf16 here: 64 (%s)", sp_errmsg());
    } else {
        CHECK(rc == 0 && r, "onednn opens at bf16 where the CPU has it (%s)", rc ? sp_errmsg() : "");
        if (r) {
            r->identity(r, id, sizeof id);
            printf("onednn bf16 identity: %s\n", id);
            CHECK(strstr(id, "precision=bf16") && strstr(id, "precision=fp32"),
                  "the bf16 identity names bf16 (and the cpu part's fp32): %s", id);
            printf("bf16 products:\n");
            test_sgemm(r, cpu, 1);
            test_hold(r);
        }
        sp_bk_close(r);
        r = NULL;
        CHECK(sp_bk_open_prec("auto", SP_BK_PREC_BF16, &r) == 0 && r && strcmp(r->name, "onednn") == 0,
              "auto at bf16 takes onednn where bf16 runs");
        sp_bk_close(r);
    }
    sp_bk_close(bk);
    sp_bk_close(cpu);
    if (g_fail) {
        fprintf(stderr, "test_onednn: %d check(s) failed\n", g_fail);
        return 1;
    }
    printf("test_onednn: all checks passed\n");
    return 0;
#endif
}
