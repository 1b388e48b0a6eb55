/* tests/gpu/bench_cuda.c — timings of the CUDA backend's ops at 7B/70B widths,
 * through the backend table only (linalg/backend.h), for tests/gpu/device_check.sh.
 *
 *   bench_cuda [ops|copy]     (default ops)
 *
 * ops:  sgemm (a 7B MLP product), attention (T 2048, 32 heads of 128),
 *       cov_add (dsyrk) and eigh at D = 4096 and 8192, rot_rows at 7B shape;
 *       then a compute-only extrapolation of a 7B and a 70B slicing run with
 *       N = 128 × 2048 calibration tokens from the measured rates.
 * copy: to_dev / to_host rates of a 1 GiB pageable buffer (run it with
 *       SLICEPIPE_CUDA_STAGING=0 and =1 to compare the pinned staging).
 * Prints "key value" lines. Exit 0, 77 without a usable device, 1 on a failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"

static sp_bk *bk; /* the CUDA backend's instance */
static const double PEAK_FP32 = 67e12; /* H200 SXM datasheet: FP32 (no tensor cores) */
static const double PEAK_FP64 = 67e12; /* H200 SXM datasheet: FP64 tensor core */

static void die(const char *what, int rc) {
    fprintf(stderr, "bench_cuda: %s failed (%d): %s\n", what, rc, sp_errmsg());
    exit(1);
}

static void *dev(int64_t bytes, const char *what) {
    void *p = NULL;
    int rc = bk->alloc(bk, &p, bytes, what);
    if (rc) die(what, rc);
    return p;
}

static void *host(int64_t bytes) {
    void *p = malloc((size_t)bytes);
    if (!p) {
        fprintf(stderr, "bench_cuda: out of host memory (%lld bytes)\n", (long long)bytes);
        exit(1);
    }
    return p;
}

/* Uniform floats in [-1, 1) plus a per-column offset (uncentered, full rank). */
static float *rand_f32(int64_t n, int64_t cols, uint64_t seed) {
    float *x = host(n * 4);
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 40) / 8388608.0 - 1.0) + (cols > 0 ? 0.01f * (float)(i % cols) / (float)cols : 0.0f);
    }
    return x;
}

static float *upload(const float *h, int64_t n, const char *what) {
    float *d = dev(n * 4, what);
    bk->to_dev(bk, d, h, n * 4);
    return d;
}

/* Waits for the stream: a to_host of one float synchronizes. */
static void sync_dev(const void *p) {
    float x;
    bk->to_host(bk, &x, p, 4);
}

static double t_sgemm, r_sgemm, t_att, t_cov[2], t_eigh[2], r_dgemm;

static void bench_ops(void) {
    const int64_t D7 = 4096, F7 = 11008, T = 2048, NH = 32, HD = 128;
    sp_bk_plan_in in = {.D = 8192, .cov_rows = 2048, .rot_block = 2048, .T = T, .n_heads = NH};
    sp_bk_plan plan = bk->plan_bytes(bk, &in);
    printf("plan_device_bytes %lld\nplan_host_bytes %lld\n", (long long)plan.device_bytes, (long long)plan.host_bytes);
    sp_bk_ws *ws = NULL;
    int rc = bk->ws_init(bk, &in, &ws);
    if (rc) die("ws_init", rc);

    /* sgemm: (4096 tokens, 4096) · W(11008, 4096)ᵀ, as a gate/up projection */
    {
        const int64_t m = 4096, n = F7, k = D7;
        float *hx = rand_f32(m * k, 0, 1), *hw = rand_f32(n * k, 0, 2);
        float *x = upload(hx, m * k, "x"), *w = upload(hw, n * k, "w"), *y = dev(m * n * 4, "y");
        for (int i = 0; i < 2; i++) bk->sgemm(bk, 0, 1, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
        sync_dev(y);
        const int reps = 5;
        double t0 = sp_now();
        for (int i = 0; i < reps; i++) bk->sgemm(bk, 0, 1, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
        sync_dev(y);
        t_sgemm = (sp_now() - t0) / reps;
        r_sgemm = 2.0 * (double)m * (double)n * (double)k / t_sgemm;
        printf("sgemm_4096x11008x4096_s %.6f\nsgemm_tflops %.2f\nsgemm_of_fp32_peak %.3f\n", t_sgemm, r_sgemm / 1e12,
               r_sgemm / PEAK_FP32);
        bk->free(bk, x), bk->free(bk, w), bk->free(bk, y);
        free(hx), free(hw);
    }
    /* attention: one 2048-token window, 32 heads of 128 (Llama-2-7B) */
    {
        const int64_t qw = NH * HD;
        float *hq = rand_f32(T * qw, 0, 3);
        float *q = upload(hq, T * qw, "q"), *k = upload(hq, T * qw, "k"), *v = upload(hq, T * qw, "v");
        float *ctx = dev(T * qw * 4, "ctx");
        float scale = (float)(1.0 / sqrt((double)HD));
        bk->attention(bk, ws, q, k, v, T, NH, NH, HD, scale, 0, ctx);
        sync_dev(ctx);
        const int reps = 3;
        double t0 = sp_now();
        for (int i = 0; i < reps; i++) bk->attention(bk, ws, q, k, v, T, NH, NH, HD, scale, 0, ctx);
        sync_dev(ctx);
        t_att = (sp_now() - t0) / reps;
        double fl = 4.0 * (double)T * (double)T * (double)qw; /* full T×T products, as computed */
        printf("attention_T2048_h32_s %.6f\nattention_tflops %.2f\n", t_att, fl / t_att / 1e12);
        bk->free(bk, q), bk->free(bk, k), bk->free(bk, v), bk->free(bk, ctx);
        free(hq);
    }
    /* second moments (dsyrk) and eigh at D = 4096 and 8192 */
    for (int c = 0; c < 2; c++) {
        const int64_t D = c == 0 ? 4096 : 8192, rows = 2 * D;
        float *hx = rand_f32(rows * D, D, 10 + (uint64_t)c);
        float *x = upload(hx, rows * D, "X");
        double *H = dev(D * D * 8, "H"), *Q = dev(D * D * 8, "Q"), *ev = dev(D * 8, "evals");
        bk->zero(bk, H, D * D * 8);
        rc = bk->cov_add(bk, ws, H, D, x, rows, D, 0); /* warm-up */
        if (rc) die("cov_add", rc);
        bk->zero(bk, H, D * D * 8);
        sync_dev(H);
        double t0 = sp_now();
        rc = bk->cov_add(bk, ws, H, D, x, rows, D, 0);
        if (rc) die("cov_add", rc);
        sync_dev(H);
        double tc = sp_now() - t0;
        t_cov[c] = tc / (double)rows; /* seconds per token row */
        double fl = (double)rows * (double)D * (double)(D + 1); /* multiply-adds of the triangle, ×2 / 2 */
        printf("cov_add_D%lld_rows%lld_s %.6f\ncov_add_D%lld_tflops %.2f\ncov_add_D%lld_of_fp64_peak %.3f\n", (long long)D,
               (long long)rows, tc, (long long)D, fl / tc / 1e12, (long long)D, fl / tc / PEAK_FP64);
        t0 = sp_now();
        rc = bk->eigh(bk, ws, H, D, 0.01, Q, ev);
        if (rc) die("eigh", rc);
        sync_dev(Q);
        t_eigh[c] = sp_now() - t0;
        /* sanity: eigenvalues descending and positive (H + δI is positive definite) */
        double *hev = host(D * 8);
        bk->to_host(bk, hev, ev, D * 8);
        int ok = hev[D - 1] > 0;
        for (int64_t i = 1; i < D; i++) ok &= hev[i] <= hev[i - 1];
        printf("eigh_D%lld_s %.3f\neigh_D%lld_evals_ok %d\n", (long long)D, t_eigh[c], (long long)D, ok);
        if (!ok) {
            fprintf(stderr, "bench_cuda: eigh D %lld: eigenvalues not descending and positive\n", (long long)D);
            exit(1);
        }
        free(hev);
        bk->free(bk, x), bk->free(bk, H), bk->free(bk, Q), bk->free(bk, ev);
        free(hx);
    }
    /* rot_rows at 7B shape: W (11008, 4096) · Q[:, :3072], float64 */
    {
        const int64_t D = D7, rows = F7, k = 3072;
        float *hw = rand_f32(rows * D, 0, 20);
        double *hq = host(D * D * 8);
        for (int64_t i = 0; i < D * D; i++) hq[i] = (double)((i * 2654435761u) % 1000) / 1000.0 - 0.5;
        float *w = upload(hw, rows * D, "W");
        double *q = dev(D * D * 8, "Q");
        bk->to_dev(bk, q, hq, D * D * 8);
        double t0 = sp_now();
        bk->rot_rows(bk, ws, w, rows, D, NULL, q, k);
        sync_dev(w);
        double tr = sp_now() - t0;
        r_dgemm = 2.0 * (double)rows * (double)D * (double)k / tr;
        printf("rot_rows_11008x4096_k3072_s %.6f\nrot_rows_fp64_tflops %.2f\n", tr, r_dgemm / 1e12);
        bk->free(bk, w), bk->free(bk, q);
        free(hw), free(hq);
    }
    bk->ws_free(bk, ws);

    /* Compute-only extrapolation, N = 128 × 2048 (I/O and host work excluded). */
    const double N = 128.0 * 2048.0;
    struct {
        const char *name;
        double D, L, F, nkv_hd, nh;
        int c;
    } m[2] = {{"7b", 4096, 32, 11008, 4096, 32, 0}, {"70b", 8192, 80, 28672, 1024, 64, 1}};
    for (int i = 0; i < 2; i++) {
        double D = m[i].D, Pl = 2 * D * D + 2 * D * m[i].nkv_hd + 3 * D * m[i].F;
        double fwd = 2.0 * N * Pl / r_sgemm;
        double att = t_att * (N / (double)T) * (m[i].nh / (double)NH);
        double cov = 2.0 * N * t_cov[m[i].c];
        double eig = 2.0 * t_eigh[m[i].c];
        double rot = 2.0 * Pl * D / r_dgemm;
        double per = fwd + att + cov + eig + rot;
        printf("extrap_%s_layer_fwd_s %.2f\nextrap_%s_layer_attention_s %.2f\nextrap_%s_layer_cov_s %.2f\n"
               "extrap_%s_layer_eigh_s %.2f\nextrap_%s_layer_rot_s %.2f\nextrap_%s_total_s %.0f\n",
               m[i].name, fwd, m[i].name, att, m[i].name, cov, m[i].name, eig, m[i].name, rot, m[i].name, per * m[i].L);
    }
}

static void bench_copy(void) {
    const int64_t n = (int64_t)1 << 30;
    sp_bk_plan_in in = {0};
    sp_bk_ws *ws = NULL; /* installs the pinned staging */
    int rc = bk->ws_init(bk, &in, &ws);
    if (rc) die("ws_init", rc);
    unsigned char *h = host(n), *back = host(n);
    for (int64_t i = 0; i < n; i++) h[i] = (unsigned char)(i * 131 + 7);
    void *d = dev(n, "copy buffer");
    bk->to_dev(bk, d, h, n); /* warm-up: touches the pages */
    bk->to_host(bk, back, d, n);
    double t0 = sp_now();
    bk->to_dev(bk, d, h, n);
    double tu = sp_now() - t0;
    memset(back, 0, (size_t)n);
    t0 = sp_now();
    bk->to_host(bk, back, d, n);
    double td = sp_now() - t0;
    int same = memcmp(h, back, (size_t)n) == 0;
    const char *st = getenv("SLICEPIPE_CUDA_STAGING");
    printf("copy_staging %s\nto_dev_GBps %.2f\nto_host_GBps %.2f\ncopy_roundtrip_ok %d\n", st && !strcmp(st, "0") ? "off" : "on",
           (double)n / tu / 1e9, (double)n / td / 1e9, same);
    bk->free(bk, d);
    bk->ws_free(bk, ws);
    free(h), free(back);
    if (!same) exit(1);
}

int main(int argc, char **argv) {
    char why[512];
    if (!sp_bk_cuda_usable(why, sizeof why)) {
        fprintf(stderr, "bench_cuda: SKIP: no usable CUDA device (%s)\n", why);
        return 77;
    }
    if (sp_bk_cuda_open(&bk)) {
        fprintf(stderr, "bench_cuda: %s\n", sp_errmsg());
        return 70;
    }
    char id[512];
    bk->identity(bk, id, sizeof id);
    printf("identity %s\n", id);
    const char *mode = argc > 1 ? argv[1] : "ops";
    if (!strcmp(mode, "copy"))
        bench_copy();
    else if (!strcmp(mode, "ops"))
        bench_ops();
    else {
        fprintf(stderr, "usage: bench_cuda [ops|copy]\n");
        return 64;
    }
    fflush(stdout);
    return 0;
}
