/* bench/onednn_layouts.c — two oneDNN options for linalg/onednn.c, measured
 * before building them (issue 26: "each layer's weights reordered once to
 * oneDNN's blocked layout", "the attention's small products batched").
 *
 *   onednn_layouts [SECONDS]
 *
 * One thread throughout (linalg/onednn.c runs one-thread primitives on the
 * pool's threads). Each figure is the best of three runs of about SECONDS
 * (default 0.5). Output, one line each:
 *
 *   weights  f32|bf16  MxNxK  plain GFLOPS  blocked GFLOPS  reorder MS
 *       x·Wᵀ with W (N, K) as stored (plain strides, what onednn.c passes)
 *       against W reordered once into the layout the primitive picks
 *       (format_tag_any), and what that reorder costs;
 *   attention  NK  batched GFLOPS  per-head GFLOPS
 *       a 128-row query block's scores and context for 8 heads of 64, keys
 *       0..NK-1: one 3-D (batched over heads) oneDNN matmul each, against
 *       one OpenBLAS sgemm per head and product (linalg/cpu.c's attention).
 *
 *   cc -O2 bench/onednn_layouts.c $(pkg-config --cflags --libs openblas) -ldnnl -lgomp -lm
 *
 * Run it with OPENBLAS_CORETYPE unset only where OpenBLAS picks this CPU's
 * best kernels by itself (bench/kernel_peaks names them); a bench, not a test.
 */
#include <cblas.h>
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void omp_set_num_threads(int n);

static double secs = 0.5;
static dnnl_engine_t eng;
static dnnl_stream_t strm;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void check(const char *what, dnnl_status_t st) {
    if (st != dnnl_success) {
        fprintf(stderr, "onednn_layouts: %s failed: %d\n", what, (int)st);
        exit(70);
    }
}

static void *xalloc(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "onednn_layouts: out of memory\n");
        exit(70);
    }
    return p;
}

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static void fill(void *p, int64_t n, int bf16, float scale) {
    for (int64_t i = 0; i < n; i++) {
        float f = scale * sinf((float)i * 0.37f);
        if (bf16) ((uint16_t *)p)[i] = bf16_of(f);
        else ((float *)p)[i] = f;
    }
}

typedef void (*run_fn)(void *ctx);

/* GFLOP/s of fn: best of three runs of about secs each, after one warm-up. */
static double rate(run_fn fn, void *ctx, double flop) {
    fn(ctx);
    double best = 0;
    for (int r = 0; r < 3; r++) {
        int64_t it = 0;
        double t0 = now(), t;
        do {
            fn(ctx);
            it++;
            t = now() - t0;
        } while (t < secs);
        double g = flop * (double)it / t * 1e-9;
        best = g > best ? g : best;
    }
    return best;
}

typedef struct prim_run {
    dnnl_primitive_t p;
    dnnl_exec_arg_t args[3];
} prim_run;

static void run_prim(void *ctx) {
    prim_run *r = ctx;
    check("execute", dnnl_primitive_execute(r->p, strm, 3, r->args));
    check("wait", dnnl_stream_wait(strm));
}

/* A matmul src (M, K) × weights (K, N) → dst (M, N) float32, weights either
 * with strides wstr or format_tag_any (wstr NULL); its weights md in *wmd. */
static dnnl_primitive_t matmul(int bf16, int nd, const dnnl_dims_t ad, const dnnl_dims_t astr, const dnnl_dims_t bd,
                               const dnnl_dims_t *bstr, const dnnl_dims_t cd, const dnnl_dims_t cstr,
                               dnnl_memory_desc_t md[3]) {
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    check("src md", dnnl_memory_desc_init_by_strides(&md[0], nd, ad, dt, astr));
    if (bstr) check("weights md", dnnl_memory_desc_init_by_strides(&md[1], nd, bd, dt, *bstr));
    else check("weights md", dnnl_memory_desc_init_by_tag(&md[1], nd, bd, dt, dnnl_format_tag_any));
    check("dst md", dnnl_memory_desc_init_by_strides(&md[2], nd, cd, dnnl_f32, cstr));
    dnnl_matmul_desc_t desc;
    check("matmul desc", dnnl_matmul_desc_init(&desc, &md[0], &md[1], NULL, &md[2]));
    dnnl_primitive_desc_t pd;
    check("primitive desc", dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL));
    md[1] = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_t p;
    check("primitive", dnnl_primitive_create(&p, pd));
    dnnl_primitive_desc_destroy(pd);
    return p;
}

static void weights(int bf16, int64_t M, int64_t N, int64_t K) {
    const size_t esz = bf16 ? 2 : 4;
    void *A = xalloc((size_t)(M * K) * esz), *W = xalloc((size_t)(N * K) * esz), *C = xalloc((size_t)(M * N) * 4);
    fill(A, M * K, bf16, 1.0f);
    fill(W, N * K, bf16, 0.05f);
    const dnnl_dims_t ad = {M, K}, as = {K, 1}, bd = {K, N}, bs = {1, K}, cd = {M, N}, cs = {N, 1};
    double g[2], reorder_ms = 0;
    for (int blocked = 0; blocked < 2; blocked++) {
        dnnl_memory_desc_t md[3], plain;
        prim_run r;
        r.p = matmul(bf16, 2, ad, as, bd, blocked ? NULL : &bs, cd, cs, md);
        check("plain md", dnnl_memory_desc_init_by_strides(&plain, 2, bd, bf16 ? dnnl_bf16 : dnnl_f32, bs));
        dnnl_memory_t ma, mw, mc, mp;
        void *Wb = blocked ? xalloc(dnnl_memory_desc_get_size(&md[1])) : W;
        check("memory", dnnl_memory_create(&ma, &md[0], eng, A));
        check("memory", dnnl_memory_create(&mw, &md[1], eng, Wb));
        check("memory", dnnl_memory_create(&mc, &md[2], eng, C));
        if (blocked) { /* once, timed: what a layer pays per weight matrix */
            check("memory", dnnl_memory_create(&mp, &plain, eng, W));
            dnnl_primitive_desc_t rpd;
            check("reorder desc", dnnl_reorder_primitive_desc_create(&rpd, &plain, eng, &md[1], eng, NULL));
            dnnl_primitive_t ro;
            check("reorder", dnnl_primitive_create(&ro, rpd));
            dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, mp}, {DNNL_ARG_TO, mw}};
            double t0 = now();
            check("reorder run", dnnl_primitive_execute(ro, strm, 2, ra));
            check("wait", dnnl_stream_wait(strm));
            reorder_ms = (now() - t0) * 1e3;
            dnnl_primitive_destroy(ro);
            dnnl_primitive_desc_destroy(rpd);
            dnnl_memory_destroy(mp);
        }
        r.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, ma};
        r.args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mw};
        r.args[2] = (dnnl_exec_arg_t){DNNL_ARG_DST, mc};
        g[blocked] = rate(run_prim, &r, 2.0 * (double)M * (double)N * (double)K);
        dnnl_memory_destroy(ma);
        dnnl_memory_destroy(mw);
        dnnl_memory_destroy(mc);
        dnnl_primitive_destroy(r.p);
        if (blocked) free(Wb);
    }
    printf("weights %s %lldx%lldx%lld plain %.1f blocked %.1f reorder %.2f\n", bf16 ? "bf16" : "f32", (long long)M,
           (long long)N, (long long)K, g[0], g[1], reorder_ms);
    free(A);
    free(W);
    free(C);
}

enum { NH = 8, NR = 128, HD = 64, QW = 1024, TMAX = 512 };

typedef struct att_run {
    prim_run s, c;
    const float *q, *k, *v;
    float *S, *C;
    int64_t nk;
} att_run;

static void run_batched(void *ctx) {
    att_run *a = ctx;
    check("execute", dnnl_primitive_execute(a->s.p, strm, 3, a->s.args));
    check("execute", dnnl_primitive_execute(a->c.p, strm, 3, a->c.args));
    check("wait", dnnl_stream_wait(strm));
}

static void run_heads(void *ctx) {
    att_run *a = ctx;
    for (int64_t h = 0; h < NH; h++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, NR, (int)a->nk, HD, 1.0f, a->q + h * HD, QW, a->k + h * HD,
                    QW, 0.0f, a->S + h * NR * a->nk, (int)a->nk);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, NR, HD, (int)a->nk, 1.0f, a->S + h * NR * a->nk,
                    (int)a->nk, a->v + h * HD, QW, 0.0f, a->C + h * HD, QW);
    }
}

static void attention(int64_t nk) {
    float *q = xalloc(TMAX * QW * 4), *k = xalloc(TMAX * QW * 4), *v = xalloc(TMAX * QW * 4);
    float *S = xalloc(NH * NR * TMAX * 4), *C = xalloc(TMAX * QW * 4);
    fill(q, TMAX * QW, 0, 1.0f);
    fill(k, TMAX * QW, 0, 1.0f);
    fill(v, TMAX * QW, 0, 1.0f);
    att_run a = {.q = q, .k = k, .v = v, .S = S, .C = C, .nk = nk};
    dnnl_memory_desc_t md[3];
    /* scores S[h] (NR, nk) = q_h (NR, HD) · k_hᵀ; context C_h (NR, HD) = S[h] · v_h */
    const dnnl_dims_t sa = {NH, NR, HD}, sas = {HD, QW, 1}, sb = {NH, HD, nk}, sbs = {HD, 1, QW}, sc = {NH, NR, nk},
                      scs = {NR * nk, nk, 1};
    a.s.p = matmul(0, 3, sa, sas, sb, &sbs, sc, scs, md);
    dnnl_memory_t m[6];
    check("memory", dnnl_memory_create(&m[0], &md[0], eng, q));
    check("memory", dnnl_memory_create(&m[1], &md[1], eng, k));
    check("memory", dnnl_memory_create(&m[2], &md[2], eng, S));
    const dnnl_dims_t ca = {NH, NR, nk}, cas = {NR * nk, nk, 1}, cb = {NH, nk, HD}, cbs = {HD, QW, 1}, cc = {NH, NR, HD},
                      ccs = {HD, QW, 1};
    a.c.p = matmul(0, 3, ca, cas, cb, &cbs, cc, ccs, md);
    check("memory", dnnl_memory_create(&m[3], &md[0], eng, S));
    check("memory", dnnl_memory_create(&m[4], &md[1], eng, v));
    check("memory", dnnl_memory_create(&m[5], &md[2], eng, C));
    for (int i = 0; i < 3; i++) {
        a.s.args[i] = (dnnl_exec_arg_t){i == 0 ? DNNL_ARG_SRC : i == 1 ? DNNL_ARG_WEIGHTS : DNNL_ARG_DST, m[i]};
        a.c.args[i] = (dnnl_exec_arg_t){i == 0 ? DNNL_ARG_SRC : i == 1 ? DNNL_ARG_WEIGHTS : DNNL_ARG_DST, m[3 + i]};
    }
    const double flop = 2.0 * 2.0 * NH * NR * (double)nk * HD;
    double gb = rate(run_batched, &a, flop), gh = rate(run_heads, &a, flop);
    printf("attention %lld batched %.1f per-head %.1f\n", (long long)nk, gb, gh);
    for (int i = 0; i < 6; i++) dnnl_memory_destroy(m[i]);
    dnnl_primitive_destroy(a.s.p);
    dnnl_primitive_destroy(a.c.p);
    free(q);
    free(k);
    free(v);
    free(S);
    free(C);
}

int main(int argc, char **argv) {
    if (argc > 1) secs = atof(argv[1]);
    if (!(secs > 0)) {
        fprintf(stderr, "usage: onednn_layouts [SECONDS]\n");
        return 64;
    }
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    check("engine", dnnl_engine_create(&eng, dnnl_cpu, 0));
    check("stream", dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
    printf("config oneDNN %d.%d.%d isa %s, 1 thread\n", dnnl_version()->major, dnnl_version()->minor,
           dnnl_version()->patch, dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa()));
    /* the floor job's (bench/floor_bench.sh) tile and layer shapes */
    const int64_t shapes[][3] = {{256, 256, 1024}, {512, 256, 1024}, {256, 2816, 1024}, {512, 1024, 1024}, {256, 1024, 2816}};
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) weights(bf16, shapes[i][0], shapes[i][1], shapes[i][2]);
    for (int64_t nk = 128; nk <= TMAX; nk += 128) attention(nk);
    dnnl_stream_destroy(strm);
    dnnl_engine_destroy(eng);
    return 0;
}
