/* bench/kernel_peaks.c — this machine's rate for each kernel the compute
 * stage spends its time in, at the shapes of a slicepipe job.
 *
 *   kernel_peaks D d FFN T THREADS [SECONDS]
 *
 * D the hidden width, d the kept width, FFN the MLP width, T the window
 * length, THREADS the BLAS threads (the job's [resources] threads). Each shape
 * is timed for about SECONDS (default 0.4) after one warm-up call; the figure
 * is the best of three such repetitions, so a shared machine's noise lowers it
 * less. Output, one line each, for bench/floor_bench.sh to parse:
 *
 *   shape  KERNEL  DESCRIPTION  GFLOPS           every shape measured
 *   peak   KERNEL  GFLOPS                        the best shape of the kernel
 *   time   dsyevd  SECONDS                       one dsyevd('V') of order D
 *
 * FLOP counts: gemm 2·m·n·k; syrk k·n·(n+1) (the triangle, multiply and add
 * counted). The shapes (rows, cols) are those of pipeline/model/layer.c and
 * linalg/cpu.c: the layer's x·Wᵀ products at ROWS rows (a layer pass: its
 * windows of T, `slicepipe run --dry-run` prints how many) and MLP_ROWS rows
 * (its MLP chunks, printed beside), the per-head attention products at a
 * 128-row query block of a window of T,
 * the basis application, dsyrk/ssyrk of a 256-row block of one window, and
 * the float64 rotations of sp_bk_rot_block(D)-row/column blocks
 * (linalg/backend.h).
 *
 * Plain C11 against OpenBLAS (cblas) and LAPACKE, and linalg/blas_core.c:
 * like slicepipe, it first puts OpenBLAS on the best kernels this CPU runs
 * (re-executing itself when OpenBLAS picked weaker ones), so the peaks are
 * this machine's best; the config line names the kernels.
 *
 *   cc -O2 -Ilinalg bench/kernel_peaks.c linalg/blas_core.c $(pkg-config --cflags --libs openblas lapacke) -lm
 *
 * With -DKP_ONEDNN (and -ldnnl -lgomp -pthread; bench/floor_bench.sh sets
 * them where <dnnl.h> and libdnnl are installed) it also measures oneDNN's
 * matmul, the onednn backend's sgemm, at the five dense layer shapes, in f32
 * (float32 A, B, C) and bf16 (bf16 A and B, float32 C):
 *
 *   shape  onednn_f32|onednn_bf16  DESCRIPTION  GFLOPS
 *   peak   onednn_f32|onednn_bf16  GFLOPS
 *   note   onednn_f32|onednn_bf16  TEXT          version, ISA, implementation;
 *                                                or why bf16 was not measured
 *
 * Where oneDNN makes no bf16 matmul (a CPU without AVX512-BF16 or AMX), the
 * bf16 lines are only a note. The rest of the output is the same with or
 * without the flag.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h" /* sp_bk_rot_block: the job's rotation blocks */
#include "blas_core.h"

#ifdef KP_ONEDNN
#include <dnnl.h>
#include <dnnl_debug.h>
#include <pthread.h>
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
void omp_set_num_threads(int n); /* libgomp's (libdnnl's runtime); no omp.h needed */
#endif
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double seconds_per_rep = 0.4;

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "kernel_peaks: out of memory (%zu bytes)\n", n);
        exit(70);
    }
    return p;
}

/* Deterministic fill in [-1, 1). */
static void fill_f(float *p, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}
static void fill_d(double *p, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0;
    }
}

typedef void (*kernel_fn)(void *ctx);

/* Best rate (GFLOP/s) of f over three repetitions of ~seconds_per_rep each. */
static double best_rate(kernel_fn f, void *ctx, double flops) {
    f(ctx); /* warm-up: packing buffers, thread start */
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        int64_t n = 0;
        double t0 = now_s(), t;
        do {
            f(ctx);
            n++;
            t = now_s() - t0;
        } while (t < seconds_per_rep);
        double r = flops * (double)n / t / 1e9;
        if (r > best) best = r;
    }
    return best;
}

typedef struct gemm_ctx {
    int ta, tb;
    int m, n, k;
    const void *A, *B;
    void *C;
} gemm_ctx;

static void run_sgemm(void *p) {
    gemm_ctx *g = p;
    int lda = g->ta ? g->m : g->k, ldb = g->tb ? g->k : g->n;
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, g->m, g->n, g->k,
                1.0f, g->A, lda, g->B, ldb, 0.0f, g->C, g->n);
}
static void run_dgemm(void *p) {
    gemm_ctx *g = p;
    int lda = g->ta ? g->m : g->k, ldb = g->tb ? g->k : g->n;
    cblas_dgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, g->m, g->n, g->k,
                1.0, g->A, lda, g->B, ldb, 0.0, g->C, g->n);
}
static void run_dsyrk(void *p) {
    gemm_ctx *g = p; /* C (n, n) upper += Aᵀ·A, A (k, n) */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, g->n, g->k, 1.0, g->A, g->n, 1.0, g->C, g->n);
}
static void run_ssyrk(void *p) {
    gemm_ctx *g = p;
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, g->n, g->k, 1.0f, g->A, g->n, 0.0f, g->C, g->n);
}

#ifdef KP_ONEDNN
/* ---- oneDNN's matmul, driven as linalg/onednn.c drives it ----
 *
 * What is emulated: C (m, n) is cut into tiles of 256 × 256 (the last row
 * and column of tiles smaller), each computed whole by one execution of a
 * matmul primitive made for one thread (OpenMP at one thread in every
 * calling thread, so oneDNN never starts a team); a GEMM has up to four
 * primitives (full tiles, last row, last column, corner), made before the
 * clock starts. min(threads, tiles) parts take contiguous runs of tiles in
 * row-major order, part s on thread s with its own stream, memory objects and
 * scratchpad (user mode). The pool is persistent threads released and joined
 * by two barriers, the caller doing part 0, as linalg/cpu.c's pool does with
 * a condition variable. Not emulated: the primitive cache lookups, and at
 * bf16 the rounding of A and B to bf16 that onednn.c does on every call (an
 * elementwise pass, not the kernel: here the operands are rounded once). */
#define DN_TILE 256      /* linalg/onednn.c's ONE_MB and ONE_NB */
#define DN_SLOTS_MAX 64  /* its ONE_SLOTS_MAX */

typedef struct dn_gemm {
    int64_t tb, m, n, k, lda, ldb, ldc, esz; /* op(A) (m, k) row-major; esz: bytes of an A or B element */
    const char *A, *B;
    float *C;
    int64_t tm, tn, ntiles, nparts;
    dnnl_primitive_t prim[2][2];               /* [last tile row][last tile column] */
    int64_t scratch_bytes[2][2];
    dnnl_memory_t mem[DN_SLOTS_MAX][2][2][4];  /* per part and primitive: A, B, C, scratchpad */
    void *scratch[DN_SLOTS_MAX];
    char impl[64];                             /* the full tile's implementation, e.g. "brg:avx512_core" */
} dn_gemm;

static struct dn_pool {
    int threads;
    dnnl_engine_t eng;
    dnnl_stream_t stream[DN_SLOTS_MAX];
    pthread_t th[DN_SLOTS_MAX];
    pthread_barrier_t go, done;
    dn_gemm *job; /* NULL at go: the workers return */
} pool;

static void dn_omp_single(void) {
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
    omp_set_num_threads(1);
#endif
}

static void dn_check(const char *what, dnnl_status_t st) {
    if (st != dnnl_success) {
        fprintf(stderr, "kernel_peaks: %s failed: %s\n", what, dnnl_status2str(st));
        exit(70);
    }
}

/* Part s of g: its tiles, one primitive execution each. */
static void dn_part(dn_gemm *g, int s) {
    if (s >= g->nparts) return;
    for (int64_t t = g->ntiles * s / g->nparts; t < g->ntiles * (s + 1) / g->nparts; t++) {
        const int64_t ti = t / g->tn, tj = t % g->tn, i0 = ti * DN_TILE, j0 = tj * DN_TILE;
        const int er = ti == g->tm - 1, ec = tj == g->tn - 1;
        dnnl_memory_t *mem = g->mem[s][er][ec];
        dn_check("dnnl_memory_set_data_handle", dnnl_memory_set_data_handle(mem[0], (void *)(g->A + i0 * g->lda * g->esz)));
        dn_check("dnnl_memory_set_data_handle",
                 dnnl_memory_set_data_handle(mem[1], (void *)(g->B + (g->tb ? j0 * g->ldb : j0) * g->esz)));
        dn_check("dnnl_memory_set_data_handle", dnnl_memory_set_data_handle(mem[2], g->C + i0 * g->ldc + j0));
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]},
                                   {DNNL_ARG_SCRATCHPAD, mem[3]}};
        dn_check("dnnl_primitive_execute", dnnl_primitive_execute(g->prim[er][ec], pool.stream[s],
                                                                  g->scratch_bytes[er][ec] > 0 ? 4 : 3, args));
        dn_check("dnnl_stream_wait", dnnl_stream_wait(pool.stream[s]));
    }
}

static void *dn_worker(void *arg) {
    const int s = (int)(intptr_t)arg;
    dn_omp_single();
    for (;;) {
        pthread_barrier_wait(&pool.go);
        if (!pool.job) return NULL;
        dn_part(pool.job, s);
        pthread_barrier_wait(&pool.done);
    }
}

static void run_onednn(void *p) {
    pool.job = p;
    pthread_barrier_wait(&pool.go);
    dn_part(p, 0);
    pthread_barrier_wait(&pool.done);
}

static void dn_pool_start(int threads) {
    pool.threads = threads < DN_SLOTS_MAX ? threads : DN_SLOTS_MAX;
    dn_omp_single();
    dn_check("dnnl_engine_create", dnnl_engine_create(&pool.eng, dnnl_cpu, 0));
    for (int s = 0; s < pool.threads; s++)
        dn_check("dnnl_stream_create", dnnl_stream_create(&pool.stream[s], pool.eng, dnnl_stream_default_flags));
    pthread_barrier_init(&pool.go, NULL, (unsigned)pool.threads);
    pthread_barrier_init(&pool.done, NULL, (unsigned)pool.threads);
    for (int s = 1; s < pool.threads; s++)
        if (pthread_create(&pool.th[s], NULL, dn_worker, (void *)(intptr_t)s) != 0) {
            fprintf(stderr, "kernel_peaks: pthread_create failed\n");
            exit(70);
        }
}

static void dn_pool_stop(void) {
    pool.job = NULL;
    pthread_barrier_wait(&pool.go);
    for (int s = 1; s < pool.threads; s++) pthread_join(pool.th[s], NULL);
    pthread_barrier_destroy(&pool.go);
    pthread_barrier_destroy(&pool.done);
    for (int s = 0; s < pool.threads; s++) dnnl_stream_destroy(pool.stream[s]);
    dnnl_engine_destroy(pool.eng);
}

/* The matmul of one tile shape (rows × cols of C), as onednn.c's prim_make
 * (alpha 1, beta 0), into g->prim[er][ec]. Returns oneDNN's status. */
static dnnl_status_t dn_prim(dn_gemm *g, int bf16, int er, int ec, int64_t rows, int64_t cols) {
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    const dnnl_dims_t a_dims = {rows, g->k}, b_dims = {g->k, cols}, c_dims = {rows, cols};
    const dnnl_dims_t a_str = {g->lda, 1}, b_str = {g->tb ? 1 : g->ldb, g->tb ? g->ldb : 1}, c_str = {g->ldc, 1};
    dnnl_memory_desc_t md[4];
    dnnl_status_t st;
    if ((st = dnnl_memory_desc_init_by_strides(&md[0], 2, a_dims, dt, a_str)) != dnnl_success) return st;
    if ((st = dnnl_memory_desc_init_by_strides(&md[1], 2, b_dims, dt, b_str)) != dnnl_success) return st;
    if ((st = dnnl_memory_desc_init_by_strides(&md[2], 2, c_dims, dnnl_f32, c_str)) != dnnl_success) return st;
    dnnl_matmul_desc_t desc;
    if ((st = dnnl_matmul_desc_init(&desc, &md[0], &md[1], NULL, &md[2])) != dnnl_success) return st;
    dnnl_primitive_attr_t attr;
    if ((st = dnnl_primitive_attr_create(&attr)) != dnnl_success) return st;
    dnnl_primitive_desc_t pd = NULL;
    st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, pool.eng, NULL);
    if (st == dnnl_success) {
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        md[3] = smd ? *smd : md[2];
        g->scratch_bytes[er][ec] = smd ? (int64_t)dnnl_memory_desc_get_size(smd) : 0;
        const char *impl = NULL;
        if (er == 0 && ec == 0 && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
            snprintf(g->impl, sizeof g->impl, "%s", impl);
        st = dnnl_primitive_create(&g->prim[er][ec], pd);
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return st;
    for (int s = 0; s < g->nparts; s++)
        for (int i = 0; i < 4; i++)
            if (i < 3 || g->scratch_bytes[er][ec] > 0)
                dn_check("dnnl_memory_create", dnnl_memory_create(&g->mem[s][er][ec][i], &md[i], pool.eng, DNNL_MEMORY_NONE));
    return dnnl_success;
}

static void dn_gemm_free(dn_gemm *g) {
    for (int s = 0; s < g->nparts; s++) {
        for (int e = 0; e < 4; e++)
            for (int i = 0; i < 4; i++)
                if (g->mem[s][e / 2][e % 2][i]) dnnl_memory_destroy(g->mem[s][e / 2][e % 2][i]);
        free(g->scratch[s]);
    }
    for (int e = 0; e < 4; e++)
        if (g->prim[e / 2][e % 2]) dnnl_primitive_destroy(g->prim[e / 2][e % 2]);
    memset(g, 0, sizeof *g);
}

/* g ready to run C (m, n) = A (m, k) · op(B), A and B packed (lda k; ldb k
 * when tb, else n), as onednn.c's one_sgemm cuts it. Returns oneDNN's status
 * (g freed on failure). */
static dnnl_status_t dn_gemm_init(dn_gemm *g, int bf16, int m, int n, int k, int tb, const void *A, const void *B,
                                  float *C) {
    *g = (dn_gemm){.tb = tb, .m = m, .n = n, .k = k, .lda = k, .ldb = tb ? k : n, .ldc = n, .esz = bf16 ? 2 : 4,
                   .A = A, .B = B, .C = C};
    g->tm = (m + DN_TILE - 1) / DN_TILE;
    g->tn = (n + DN_TILE - 1) / DN_TILE;
    g->ntiles = g->tm * g->tn;
    g->nparts = pool.threads < g->ntiles ? pool.threads : g->ntiles;
    dn_omp_single(); /* the primitives are made for one thread */
    int64_t scratch = 0;
    for (int er = 0; er < 2; er++)
        for (int ec = 0; ec < 2; ec++) {
            int64_t rows = er ? m - (g->tm - 1) * DN_TILE : (m < DN_TILE ? m : DN_TILE);
            int64_t cols = ec ? n - (g->tn - 1) * DN_TILE : (n < DN_TILE ? n : DN_TILE);
            dnnl_status_t st = dn_prim(g, bf16, er, ec, rows, cols);
            if (st != dnnl_success) {
                dn_gemm_free(g);
                return st;
            }
            if (g->scratch_bytes[er][ec] > scratch) scratch = g->scratch_bytes[er][ec];
        }
    for (int s = 0; s < g->nparts; s++) g->scratch[s] = xmalloc((size_t)scratch + 64);
    for (int s = 0; s < g->nparts; s++)
        for (int e = 0; e < 4; e++)
            if (g->mem[s][e / 2][e % 2][3])
                dn_check("dnnl_memory_set_data_handle", dnnl_memory_set_data_handle(g->mem[s][e / 2][e % 2][3], g->scratch[s]));
    return dnnl_success;
}

/* Round to nearest, ties to even (onednn.c's bf16_of; the fills have no NaN). */
static void to_bf16(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        dst[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}
#endif /* KP_ONEDNN */

int main(int argc, char **argv) {
    sp_blas_core_ensure(argv); /* before any BLAS call */
    if (argc < 8 || argc > 9) {
        fprintf(stderr, "usage: kernel_peaks D d FFN T ROWS MLP_ROWS THREADS [SECONDS]\n");
        return 64;
    }
    const int D = atoi(argv[1]), d = atoi(argv[2]), F = atoi(argv[3]), T = atoi(argv[4]), R = atoi(argv[5]),
              MR = atoi(argv[6]), threads = atoi(argv[7]);
    if (argc == 9) seconds_per_rep = atof(argv[8]);
    if (D < 8 || d < 1 || d > D || F < 1 || T < 1 || R < T || MR < 1 || MR > R || threads < 1 || !(seconds_per_rep > 0)) {
        fprintf(stderr, "kernel_peaks: bad arguments\n");
        return 64;
    }
    openblas_set_num_threads(threads);
    char kernels[256];
    sp_blas_core_describe(kernels, sizeof kernels);
    printf("config openblas=%s core=%s threads=%d kernels: %s\n", openblas_get_config(), openblas_get_corename(), threads,
           kernels);

    const int QB = T < 128 ? T : 128, hd = 64;
    const int RB = (int)sp_bk_rot_block(D);
    printf("config blocks: rotation blocks of %d rows or columns (linalg/backend.h)\n", RB);
    int64_t big = (int64_t)F * D; /* the largest operand, elements */
    if ((int64_t)MR * F > big) big = (int64_t)MR * F;
    if ((int64_t)R * D > big) big = (int64_t)R * D;
    float *fa = xmalloc((size_t)big * 4), *fb = xmalloc((size_t)big * 4), *fc = xmalloc((size_t)big * 4);
    /* float64 operands: D×D, or RB×D for the rotation blocks when D < RB */
    const int64_t dn = (int64_t)(D > RB ? D : RB) * D;
    double *da = xmalloc((size_t)dn * 8), *db = xmalloc((size_t)dn * 8), *dc = xmalloc((size_t)dn * 8);
    fill_f(fa, big, 1);
    fill_f(fb, big, 2);
    fill_d(da, dn, 3);
    fill_d(db, dn, 4);
    memset(dc, 0, (size_t)dn * 8);

    /* sgemm: the forward's shapes (m, n, k, ta, tb). */
    struct {
        const char *what;
        int m, n, k, ta, tb;
    } sg[] = {
        {"x(R,d)*Wqkv^T(D,d)", R, D, d, 0, 1},
        {"x(R,D)*Q(D,d)", R, d, D, 0, 0},
        {"ctx(R,D)*Wo^T(D,D)", R, D, D, 0, 1},
        {"x(MR,d)*Wgate^T(F,d)", MR, F, d, 0, 1},
        {"g(MR,F)*Wdown^T(D,F)", MR, D, F, 0, 1},
        {"q(128,hd)*k^T(T,hd)", QB, T, hd, 0, 1},
        {"att(128,T)*v(T,hd)", QB, hd, T, 0, 0},
    };
    double speak = 0;
    for (size_t i = 0; i < sizeof sg / sizeof sg[0]; i++) {
        gemm_ctx g = {sg[i].ta, sg[i].tb, sg[i].m, sg[i].n, sg[i].k, fa, fb, fc};
        double r = best_rate(run_sgemm, &g, 2.0 * sg[i].m * sg[i].n * sg[i].k);
        printf("shape sgemm %s %.1f\n", sg[i].what, r);
        if (i < 5 && r > speak) speak = r; /* the peak: the dense layer products */
    }
    printf("peak sgemm %.1f\n", speak);

    /* dsyrk / ssyrk: one 256-row block of a window into the D×D second moment. */
    int kr = T < 256 ? T : 256;
    gemm_ctx gs = {0, 0, 0, D, kr, da, NULL, dc};
    double *stage = xmalloc((size_t)kr * D * 8);
    fill_d(stage, (int64_t)kr * D, 5);
    gs.A = stage;
    double r = best_rate(run_dsyrk, &gs, (double)kr * D * (D + 1.0));
    printf("shape dsyrk C(D,D)+=X^T*X,X(256,D) %.1f\n", r);
    printf("peak dsyrk %.1f\n", r);
    gemm_ctx gs32 = {0, 0, 0, D, kr, fa, NULL, fc};
    r = best_rate(run_ssyrk, &gs32, (double)kr * D * (D + 1.0));
    printf("shape ssyrk C(D,D)=X^T*X,X(256,D) %.1f\n", r);
    printf("peak ssyrk %.1f\n", r);

    /* dgemm: the float64 rotations. */
    struct {
        const char *what;
        int m, n, k, ta, tb;
    } dg[] = {
        {"W(RB,D)*Q(D,d)", RB, d, D, 0, 0},
        {"Q^T(d,D)*W(D,RB)", d, RB, D, 1, 0},
        {"W(RB,D)*Q(D,D)", RB, D, D, 0, 0},
    };
    double dpeak = 0;
    for (size_t i = 0; i < sizeof dg / sizeof dg[0]; i++) {
        gemm_ctx g = {dg[i].ta, dg[i].tb, dg[i].m, dg[i].n, dg[i].k, da, db, dc};
        r = best_rate(run_dgemm, &g, 2.0 * dg[i].m * dg[i].n * dg[i].k);
        printf("shape dgemm %s %.1f\n", dg[i].what, r);
        if (r > dpeak) dpeak = r;
    }
    printf("peak dgemm %.1f\n", dpeak);

    /* dsyevd at D: a damped second moment of 4·D random rows, full rank as
     * a job's (N tokens >> D) is, timed directly (best of 5 calls after a
     * warm-up). One block of kr rows alone had rank kr: dsyevd deflated
     * the D − kr eigenvalues equal to the damping and ran faster than on
     * any job's moment (D 1024: 0.095 s on one thread). Each block is the
     * staged one refilled with other numbers. */
    double *H = xmalloc((size_t)D * D * 8), *A = xmalloc((size_t)D * D * 8), *w = xmalloc((size_t)D * 8);
    memset(H, 0, (size_t)D * D * 8);
    const int nblk = (4 * D + kr - 1) / kr;
    for (int b = 0; b < nblk; b++) {
        fill_d(stage, (int64_t)kr * D, 6 + b);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, D, kr, 1.0, stage, D, 1.0, H, D);
    }
    for (int i = 0; i < D; i++) H[(int64_t)i * D + i] += 0.01 * (double)nblk * kr;
    /* On one thread and on the job's: the better is the floor (slicepipe
     * runs dsyevd on one thread up to order 1024, linalg/cpu_blas.c). */
    double best = INFINITY;
    for (int nt = 1; nt <= threads; nt += threads > 1 ? threads - 1 : 1) {
        openblas_set_num_threads(nt);
        double at = INFINITY;
        for (int rep = 0; rep < 6; rep++) {
            memcpy(A, H, (size_t)D * D * 8);
            double t0 = now_s();
            lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', D, A, D, w);
            double t = now_s() - t0;
            if (info != 0) {
                fprintf(stderr, "kernel_peaks: dsyevd info=%d\n", (int)info);
                return 70;
            }
            if (rep > 0 && t < at) at = t; /* rep 0 is the warm-up */
        }
        printf("config dsyevd(%d) on %d thread(s): %.4f s\n", D, nt, at);
        if (at < best) best = at;
    }
    openblas_set_num_threads(threads);
    printf("time dsyevd %.4f\n", best);

#ifdef KP_ONEDNN
    /* oneDNN's matmul at the dense layer shapes (sg[0..4]), f32 then bf16;
     * a precision's lines are printed only once all its shapes ran. */
    dn_pool_start(threads);
    const dnnl_version_t *v = dnnl_version();
    const char *isa = dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
    if (strncmp(isa, "cpu_isa_", 8) == 0) isa += 8;
    uint16_t *ha = xmalloc((size_t)big * 2), *hb = xmalloc((size_t)big * 2);
    to_bf16(ha, fa, big);
    to_bf16(hb, fb, big);
    static dn_gemm g; /* ~8 KiB of handles */
    for (int bf16 = 0; bf16 < 2; bf16++) {
        const char *kern = bf16 ? "onednn_bf16" : "onednn_f32";
        char lines[5][200], impl[64] = "";
        double peak = 0;
        int ok = 1;
        for (int i = 0; i < 5 && ok; i++) {
            dnnl_status_t st = dn_gemm_init(&g, bf16, sg[i].m, sg[i].n, sg[i].k, sg[i].tb, bf16 ? (void *)ha : fa,
                                            bf16 ? (void *)hb : fb, fc);
            if (st != dnnl_success && !bf16) dn_check("an f32 matmul primitive", st);
            if (st != dnnl_success) {
                printf("note %s not measured: oneDNN %d.%d.%d (isa %s) makes no bf16 matmul here: %s\n", kern, v->major,
                       v->minor, v->patch, isa, dnnl_status2str(st));
                ok = 0;
                break;
            }
            if (i == 0) snprintf(impl, sizeof impl, "%s", g.impl);
            r = best_rate(run_onednn, &g, 2.0 * sg[i].m * sg[i].n * sg[i].k);
            snprintf(lines[i], sizeof lines[i], "shape %s %s %.1f", kern, sg[i].what, r);
            if (r > peak) peak = r;
            dn_gemm_free(&g);
        }
        if (!ok) continue;
        for (int i = 0; i < 5; i++) printf("%s\n", lines[i]);
        printf("peak %s %.1f\n", kern, peak);
        printf("note %s oneDNN %d.%d.%d isa=%s impl=%s, %dx%d tiles of C on %d threads, 1-thread primitives\n", kern,
               v->major, v->minor, v->patch, isa, impl, DN_TILE, DN_TILE, pool.threads);
    }
    dn_pool_stop();
    free(ha), free(hb);
#endif
    free(fa), free(fb), free(fc), free(da), free(db), free(dc), free(stage), free(H), free(A), free(w);
    return 0;
}
