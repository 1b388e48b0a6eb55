/* linalg/cpu.c — the CPU backend: every op of linalg/backend.h on OpenBLAS
 * (cblas) and LAPACKE. Backend memory is host memory (host_shared = 1).
 * This file holds the instance (its thread pool), the workspace, the buffers,
 * the elementwise ops, attention and the NLL; cpu_blas.c holds the ops that
 * run on OpenBLAS's threads (sgemm, cov_add, eigh, the rotations), which
 * another CPU backend overrides in the table sp_bk_cpu_open returns.
 *
 * Bits. The pipeline was ported onto these ops from linalg/forward.c,
 * linalg/pca.c and the rotation helpers of pipeline/slice/compute.c: each op
 * performs the same floating-point operations, in the same order and through
 * the same BLAS/LAPACK calls, as the code it replaces (noted per op below;
 * cov_add is pca.c's widening of each cov_rows block to float64 and its
 * dsyrk, the widening split over the pool). The new cases (a window, partial
 * rotary, interleaved RoPE, LayerNorm, the GELU and ReLU activations) reduce
 * to the old code when they are off. The loops between
 * BLAS calls run on a small thread pool (below) without changing any
 * element's arithmetic.
 *
 * Workspace. One allocation, laid out by ws_layout_of, which plan_bytes also
 * uses, so the plan is exactly what ws_init allocates:
 *     struct sp_bk_ws
 *     stage   (cov_rows, D) float64: one block of cov_add's rows, widened
 *     work    (lwork) float64         dsyevd workspace (its own optimal size)
 *     iwork   (liwork) lapack_int
 *     w       (D) float64             ascending eigenvalues from dsyevd
 *     rot_in  (rot_block, D) float64  rotation block, widened
 *     rot_out (rot_block, D) float64  rotation block, rotated
 *     att     (att_heads, min(T, QBLOCK), T) float32  attention scores of one
 *             query block for a group of heads (att_heads_of: all heads, or
 *             as many as fit CPU_ATT_BYTES, at least one)
 * No op allocates.
 */
#include "backend.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_impl.h"
#include "error.h"

#define ACT_CHUNK 512   /* elements per expf batch in the activations (on the stack) */
#define CPU_QBLOCK 128 /* query rows per attention block (forward.c's SP_FWD_QBLOCK) */
#define CPU_ALIGN 64   /* bytes: each workspace region starts on a cache line */
#define CPU_ATT_BYTES ((int64_t)8 << 20) /* score buffer budget across a head group */
/* dsyevd's lwork = 1 + 6D + 2D² must fit a 32-bit lapack_int. */
#define CPU_D_MAX_LP32 32000

typedef struct ws_layout {
    int64_t off_stage, off_work, off_iwork, off_w, off_rot_in, off_rot_out, off_att;
    int64_t total; /* bytes, struct included */
    lapack_int lwork, liwork;
} ws_layout;


/* dsyevd's optimal workspace for order D, by the same query LAPACKE_dsyevd
 * makes (so the solver runs with the lwork it always ran with: dsytrd's
 * blocking depends on it). 0 or -1 when the query fails. */
int sp_cpu_dsyevd_sizes(int64_t D, lapack_int *lwork, lapack_int *liwork) {
    *lwork = *liwork = 0;
    if (D <= 0) return 0;
    double a = 0, w = 0, work_query = 0;
    lapack_int iwork_query = 0;
    lapack_int info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)D, &a, (lapack_int)D, &w, &work_query,
                                          -1, &iwork_query, -1);
    if (info != 0 || work_query < 1 || iwork_query < 1) return -1;
    *lwork = (lapack_int)work_query; /* LAPACKE_dsyevd's own conversion */
    *liwork = iwork_query;
    return 0;
}

/* Heads per attention group: the scores of every head of one query block if
 * they fit CPU_ATT_BYTES, else as many as do, at least one. */
static int64_t att_heads_of(const sp_bk_plan_in *in) {
    int64_t per = min_i64(in->T, CPU_QBLOCK) * in->T * 4, h = in->n_heads > 1 ? in->n_heads : 1;
    if (per > 0 && h * per > CPU_ATT_BYTES) h = CPU_ATT_BYTES / per > 1 ? CPU_ATT_BYTES / per : 1;
    return h;
}

/* 0, 64 (D too large for the solver) or 70 (overflow), without a message. */
static int ws_layout_of(const sp_bk_plan_in *in, ws_layout *L) {
    memset(L, 0, sizeof *L);
    SP_ASSERT(in->D >= 0 && in->cov_rows >= 0 && in->rot_block >= 0 && in->T >= 0 && in->n_heads >= 0);
    if (!in->no_eigh && sizeof(lapack_int) < 8 && in->D > CPU_D_MAX_LP32) return SP_EX_USAGE;
    if (!in->no_eigh && sp_cpu_dsyevd_sizes(in->D, &L->lwork, &L->liwork)) return SP_EX_SOFTWARE;
    const struct {
        int64_t *off;
        int64_t a, b, elem;
    } r[] = {
        {&L->off_stage, in->cov_rows, in->D, 8},
        {&L->off_work, L->lwork, 1, 8},
        {&L->off_iwork, L->liwork, 1, (int64_t)sizeof(lapack_int)},
        {&L->off_w, in->D, 1, 8},
        {&L->off_rot_in, in->rot_block, in->D, 8},
        {&L->off_rot_out, in->rot_block, in->D, 8},
        {&L->off_att, att_heads_of(in) * min_i64(in->T, CPU_QBLOCK), in->T, 4},
    };
    int64_t pos = ((int64_t)sizeof(struct sp_bk_ws) + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        int64_t n, end;
        if (sp_mul_i64(r[i].a, r[i].b, &n) || sp_mul_i64(n, r[i].elem, &n) || sp_add_i64(pos, n, &end) ||
            sp_add_i64(end, CPU_ALIGN - 1, &end))
            return SP_EX_SOFTWARE;
        *r[i].off = pos;
        pos = end / CPU_ALIGN * CPU_ALIGN;
    }
    L->total = pos;
    return 0;
}

static sp_bk_plan cpu_plan_bytes(const sp_bk *bk, const sp_bk_plan_in *in) {
    ws_layout L;
    sp_bk_plan p = {.host_bytes = 0, .device_bytes = 0};
    p.host_bytes = ws_layout_of(in, &L) ? INT64_MAX : L.total;
    /* cov_add's dsyrk packs its widened block (cov_rows, D) again, into
     * OpenBLAS's own buffer, whose touched pages the process keeps: measured
     * 3.2, 8.7, 17.2 and 33.2 MiB for 256 rows at D 1024, 3840, 8192 and
     * 16384 (cov_rows·D·8 + about 1 MiB, which the process baseline holds). */
    if (p.host_bytes != INT64_MAX) p.host_bytes += in->cov_rows * in->D * 8;
    return p;
}

static int cpu_ws_init(const sp_bk *bk, const sp_bk_plan_in *in, sp_bk_ws **out) {
    *out = NULL;
    ws_layout L;
    int rc = ws_layout_of(in, &L);
    if (rc == SP_EX_USAGE)
        return sp_fail(rc, "cpu backend: hidden width %lld is too large for the eigensolver's 32-bit workspace "
                       "(at most %d)", (long long)in->D, CPU_D_MAX_LP32);
    if (rc) return sp_fail(rc, "cpu backend: workspace size overflows (D %lld, cov_rows %lld, rot_block %lld, T %lld)",
                           (long long)in->D, (long long)in->cov_rows, (long long)in->rot_block, (long long)in->T);
    char *base;
    SP_TRY(sp_alloc((void **)&base, L.total, 1, "cpu backend workspace"));
    sp_bk_ws *ws = (sp_bk_ws *)base;
    memset(ws, 0, sizeof *ws);
    ws->D = in->D;
    ws->cov_rows = in->cov_rows;
    ws->rot_block = in->rot_block;
    ws->T = in->T;
    ws->stage = (double *)(base + L.off_stage);
    ws->work = (double *)(base + L.off_work);
    ws->iwork = (lapack_int *)(base + L.off_iwork);
    ws->w = (double *)(base + L.off_w);
    ws->rot_in = (double *)(base + L.off_rot_in);
    ws->rot_out = (double *)(base + L.off_rot_out);
    ws->att = (float *)(base + L.off_att);
    ws->att_heads = att_heads_of(in);
    ws->lwork = L.lwork;
    ws->liwork = L.liwork;
    *out = ws;
    return 0;
}

static void cpu_ws_free(const sp_bk *bk, sp_bk_ws *ws) { free(ws); /* the struct heads its one allocation */ }

/* ---- the elementwise thread pool ----
 *
 * Large BLAS calls run on OpenBLAS's own threads; the loops between them
 * (norms, RoPE, softmax, activations, conversions) and attention's many small
 * GEMMs run on this pool, with the same thread count (set_threads). A loop
 * over n independent items (rows, elements or heads) is cut into nt
 * contiguous parts [n·t/nt, n·(t+1)/nt); the caller runs part 0 and worker t
 * part t. Every item is computed by the same code, in the same order inside
 * the item, whichever part it falls in: the bits do not depend on the thread
 * count. Reductions across items (nll, the first non-finite element) are not
 * split.
 *
 * A BLAS call made from a pool loop (par_for_blas) runs with OpenBLAS at one
 * thread: OpenBLAS's threaded GEMM partitions the product by its thread count
 * and, under its Prescott, Haswell and Zen kernels, the partition changes the
 * bits (docs/determinism.md). A single-threaded call on the same operands
 * gives the bits of a 1-thread run, whichever worker makes it.
 *
 * Workers sleep on a condition variable between loops (no spinning, so they
 * never compete with OpenBLAS's threads for a core). They are started on
 * first use, in the process that uses them: the stages are forked, and a
 * forked child, which has none of its parent's threads, re-initializes the
 * pool (pid check) before using it. Calls come from one thread per process.
 */
#define CPU_POOL_MAX 64

typedef struct cpu_pool cpu_pool;
typedef struct pool_worker {
    cpu_pool *pool;
    int t;
    pthread_t th;
} pool_worker;

struct cpu_pool {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    pid_t pid;               /* process the workers belong to (0: none started) */
    int want;                /* threads to use, the caller included (set_threads) */
    int blas;                /* OpenBLAS's thread count for this instance's BLAS calls (set_threads) */
    int started;             /* workers running: parts 1..started */
    int quit;                /* set by close: workers return */
    uint64_t gen;            /* dispatch counter: a worker runs each new value once */
    uint64_t seen0[CPU_POOL_MAX];
    pool_worker w[CPU_POOL_MAX];
    int busy;                /* workers of the current dispatch not yet finished */
    int nparts;
    sp_cpu_par_fn fn;
    void *ctx;
    int64_t n;
};

/* An instance's state: its pool (sp_bk.ctx). */
typedef struct cpu_ctx {
    cpu_pool pool;
} cpu_ctx;

static cpu_pool *pool_of(const sp_bk *bk) { return &((cpu_ctx *)bk->ctx)->pool; }

/* OpenBLAS's thread count is one per process: each BLAS-threaded op sets its
 * instance's count before it runs (a no-op when it already is). */
static int g_blas_now;
static void blas_threads(int t) {
    if (g_blas_now != t) {
        openblas_set_num_threads(t);
        g_blas_now = t;
    }
}

void sp_cpu_blas_threads(const sp_bk *bk) { blas_threads(pool_of(bk)->blas); }
void sp_cpu_blas_threads_most(const sp_bk *bk, int most) {
    int t = pool_of(bk)->blas;
    blas_threads(most >= 1 && most < t ? most : t);
}

static void *pool_main(void *arg) {
    const pool_worker *me = arg;
    cpu_pool *pl = me->pool;
    const int t = me->t;
    pthread_mutex_lock(&pl->mu);
    uint64_t seen = pl->seen0[t];
    for (;;) {
        while (pl->gen == seen && !pl->quit) pthread_cond_wait(&pl->go, &pl->mu);
        if (pl->quit) break;
        seen = pl->gen;
        if (t >= pl->nparts) continue;
        sp_cpu_par_fn fn = pl->fn;
        void *ctx = pl->ctx;
        int64_t n = pl->n, np = pl->nparts;
        pthread_mutex_unlock(&pl->mu);
        fn(ctx, n * t / np, n * (t + 1) / np);
        pthread_mutex_lock(&pl->mu);
        if (--pl->busy == 0) pthread_cond_signal(&pl->done);
    }
    pthread_mutex_unlock(&pl->mu);
    return NULL;
}

/* fn over [0, n) in parts of at least `grain` items, on bk's pool. */
void sp_cpu_par_for(const sp_bk *bk, int64_t n, int64_t grain, sp_cpu_par_fn fn, void *ctx) {
    cpu_pool *pl = pool_of(bk);
    int64_t nt = pl->want;
    if (grain < 1) grain = 1;
    if (n / grain < nt) nt = n / grain;
    if (nt <= 1) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    if (pl->pid != getpid()) { /* first use in this process (or a forked child, which has no workers) */
        pthread_mutex_init(&pl->mu, NULL);
        pthread_cond_init(&pl->go, NULL);
        pthread_cond_init(&pl->done, NULL);
        pl->pid = getpid();
        pl->started = 0;
        pl->quit = 0;
    }
    pthread_mutex_lock(&pl->mu);
    while (pl->started < nt - 1) {
        int t = pl->started + 1;
        pl->seen0[t] = pl->gen;
        pl->w[t] = (pool_worker){.pool = pl, .t = t};
        if (pthread_create(&pl->w[t].th, NULL, pool_main, &pl->w[t])) break; /* fewer threads: same bits */
        pl->started = t;
    }
    if (nt > pl->started + 1) nt = pl->started + 1;
    pl->fn = fn;
    pl->ctx = ctx;
    pl->n = n;
    pl->nparts = (int)nt;
    pl->busy = (int)nt - 1;
    pl->gen++;
    if (nt > 1) pthread_cond_broadcast(&pl->go);
    pthread_mutex_unlock(&pl->mu);
    fn(ctx, 0, n / nt);
    pthread_mutex_lock(&pl->mu);
    while (pl->busy > 0) pthread_cond_wait(&pl->done, &pl->mu);
    pthread_mutex_unlock(&pl->mu);
}

/* par_for for loops whose items call BLAS: OpenBLAS runs one thread for the
 * duration (see above). */
static void par_for_blas(const sp_bk *bk, int64_t n, int64_t grain, sp_cpu_par_fn fn, void *ctx) {
    blas_threads(1);
    sp_cpu_par_for(bk, n, grain, fn, ctx);
}

/* ---- lifecycle, threads, identity ---- */

/* sp_model_set_threads' rule: n if > 0, else 1 below D 512, else all cores. */
static int cpu_set_threads(const sp_bk *bk, int64_t n, int64_t D) {
    int t = n > 0 ? (int)min_i64(n, 1 << 20) : D < 512 ? 1 : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (t < 1) t = 1;
    cpu_pool *pl = pool_of(bk);
    blas_threads(t);
    pl->blas = t;
    pl->want = t < CPU_POOL_MAX ? t : CPU_POOL_MAX;
    return t;
}

/* Stops and joins the pool's workers (those of this process: a forked child
 * has none), then frees the instance. */
static void cpu_release(sp_bk *bk) {
    cpu_pool *pl = pool_of(bk);
    if (pl->pid == getpid() && pl->started > 0) {
        pthread_mutex_lock(&pl->mu);
        pl->quit = 1;
        pthread_cond_broadcast(&pl->go);
        pthread_mutex_unlock(&pl->mu);
        for (int t = 1; t <= pl->started; t++) pthread_join(pl->w[t].th, NULL);
    }
    if (pl->pid == getpid()) {
        pthread_mutex_destroy(&pl->mu);
        pthread_cond_destroy(&pl->go);
        pthread_cond_destroy(&pl->done);
    }
    free(bk->ctx);
    free(bk);
}

static void cpu_identity(const sp_bk *bk, char *buf, int64_t n) {
    if (n <= 0) return;
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s", openblas_get_config());
    for (size_t len = strlen(cfg); len > 0 && cfg[len - 1] == ' '; len--) cfg[len - 1] = 0;
    snprintf(buf, (size_t)n, "cpu openblas %s kernel=%s precision=%s", cfg, openblas_get_corename(), bk->precision);
}

/* ---- buffers: host memory ---- */

static int cpu_alloc(const sp_bk *bk, void **p, int64_t bytes, const char *what) { return sp_alloc(p, bytes, 1, what); }
static void cpu_free(const sp_bk *bk, void *p) { free(p); }
static void cpu_copy(const sp_bk *bk, void *dst, const void *src, int64_t bytes) {
    SP_ASSERT(bytes >= 0);
    if (dst != src && bytes > 0) memcpy(dst, src, (size_t)bytes);
}
static void cpu_zero(const sp_bk *bk, void *p, int64_t bytes) {
    SP_ASSERT(bytes >= 0);
    if (bytes > 0) memset(p, 0, (size_t)bytes);
}

/* ---- float32 ---- */


typedef struct ew_ctx { /* the arguments of one elementwise op */
    float *y;
    const float *x, *b, *gamma, *beta, *cos_t, *sin_t;
    int64_t n, d, D, ld, nh, hd, rot;
    double eps;
    int kind;
} ew_ctx;

static void add_range(void *p, int64_t i0, int64_t i1) {
    ew_ctx *c = p;
    for (int64_t i = i0; i < i1; i++) c->y[i] += c->x[i];
}

/* forward.c's add_shortcut without S. */
static void cpu_add(const sp_bk *bk, float *y, const float *x, int64_t rows, int64_t n) {
    ew_ctx c = {.y = y, .x = x};
    sp_cpu_par_for(bk, rows * n, PAR_GRAIN, add_range, &c);
}

static void add_bias_range(void *p, int64_t t0, int64_t t1) {
    ew_ctx *c = p;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t j = 0; j < c->n; j++) c->y[t * c->n + j] += c->b[j];
}

static void cpu_add_bias(const sp_bk *bk, float *y, const float *b, int64_t rows, int64_t n) {
    ew_ctx c = {.y = y, .b = b, .n = n};
    sp_cpu_par_for(bk, rows, PAR_GRAIN / (n > 0 ? n : 1), add_bias_range, &c);
}

/* Rows [t0, t1) of cpu_norm. */
static void norm_range(void *p, int64_t t0, int64_t t1) {
    const ew_ctx *c = p;
    const int64_t d = c->d, D = c->D;
    const float *gamma = c->gamma, *beta = c->beta;
    if (c->kind == SP_BK_NORM_RMS) {
        for (int64_t t = t0; t < t1; t++) {
            float *r = c->y + t * d;
            double ss = 0.0;
            for (int64_t j = 0; j < d; j++) ss += (double)r[j] * (double)r[j];
            float inv = (float)(1.0 / sqrt(ss / (double)D + c->eps));
            if (gamma)
                for (int64_t j = 0; j < d; j++) r[j] = r[j] * inv * gamma[j];
            else
                for (int64_t j = 0; j < d; j++) r[j] *= inv;
        }
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        float *r = c->y + t * d;
        double s = 0.0;
        for (int64_t j = 0; j < d; j++) s += (double)r[j];
        double mean = s / (double)D, ss = 0.0;
        for (int64_t j = 0; j < d; j++) {
            double e = (double)r[j] - mean;
            ss += e * e;
        }
        float inv = (float)(1.0 / sqrt(ss / (double)D + c->eps));
        for (int64_t j = 0; j < d; j++) {
            float y = (float)((double)r[j] - mean) * inv;
            if (gamma) y = y * gamma[j];
            if (beta) y = y + beta[j];
            r[j] = y;
        }
    }
}

/* RMS: sp_rmsn's loop exactly, rows split over the pool. */
static void cpu_norm(const sp_bk *bk, enum sp_bk_norm kind, const float *gamma, const float *beta, int64_t d, int64_t D, double eps,
                     float *x, int64_t rows) {
    SP_ASSERT(d >= 1 && D >= 1 && d <= D);
    if (kind == SP_BK_NORM_RMS) SP_ASSERT(!beta);
    else SP_ASSERT(kind == SP_BK_NORM_LAYER && d == D);
    ew_ctx c = {.y = x, .gamma = gamma, .beta = beta, .d = d, .D = D, .eps = eps, .kind = (int)kind};
    sp_cpu_par_for(bk, rows, PAR_GRAIN / d + 1, norm_range, &c);
}

static void rope_range(void *p, int64_t t0, int64_t t1) {
    const ew_ctx *c = p;
    const int64_t half = c->rot / 2;
    for (int64_t t = t0; t < t1; t++) {
        const float *cs = c->cos_t + t * half, *sn = c->sin_t + t * half;
        for (int64_t h = 0; h < c->nh; h++) {
            float *q = c->y + t * c->ld + h * c->hd;
            if (c->kind == SP_BK_ROPE_HALF) {
                for (int64_t i = 0; i < half; i++) {
                    float a = q[i], b = q[i + half];
                    q[i] = a * cs[i] - b * sn[i];        /* q1·cos − q2·sin */
                    q[i + half] = b * cs[i] + a * sn[i]; /* q2·cos + q1·sin */
                }
            } else {
                for (int64_t i = 0; i < half; i++) {
                    float a = q[2 * i], b = q[2 * i + 1];
                    q[2 * i] = a * cs[i] - b * sn[i];
                    q[2 * i + 1] = b * cs[i] + a * sn[i];
                }
            }
        }
    }
}

/* HALF with rot == hd and ld == nh·hd is forward.c's rope_apply exactly;
 * rows (positions) split over the pool. */
static void cpu_rope(const sp_bk *bk, enum sp_bk_rope kind, float *x, int64_t T, int64_t ld, int64_t nh, int64_t hd, int64_t rot,
                     const float *cos_t, const float *sin_t) {
    SP_ASSERT(T >= 0 && nh >= 0 && hd >= 1 && rot >= 0 && rot % 2 == 0 && rot <= hd && nh * hd <= ld);
    SP_ASSERT(kind == SP_BK_ROPE_HALF || kind == SP_BK_ROPE_INTERLEAVE);
    ew_ctx c = {.y = x, .cos_t = cos_t, .sin_t = sin_t, .ld = ld, .nh = nh, .hd = hd, .rot = rot, .kind = (int)kind};
    sp_cpu_par_for(bk, T, PAR_GRAIN / (nh * rot + 1) + 1, rope_range, &c);
}

/* One attention block: query rows [r0, r0 + nr) of the window (positions
 * a0 .. a0 + nr − 1) for every head of a group [h0, h1), whose scores are at
 * att + (h − h0)·nr·nk (nr, nk), nk keys from position k0. */
typedef struct att_ctx {
    const float *q, *k, *v;
    float *att, *ctx;
    int64_t r0, a0, nr, k0, nk, window, h0, hd, qw, kw, group;
    float scale;
} att_ctx;

/* max(x[0..n)) as the loop m = x[0]; m = x[j] > m ? x[j] : m gives it, but
 * in MAX_LANES independent lanes reduced at the end, where the loop is one
 * dependency chain. The maximum is exact, so only which of +0 and -0 comes
 * back can differ, and x − m, then exp (the softmax, the NLL), gives the
 * same bits for either. A NaN is never taken, as in the loop; only a NaN
 * x[0] comes back. */
#define MAX_LANES 16
static float row_max(const float *x, int64_t n) {
    float lane[MAX_LANES];
    for (int l = 0; l < MAX_LANES; l++) lane[l] = x[0];
    int64_t j = 1;
    for (; j + MAX_LANES <= n; j += MAX_LANES)
        for (int l = 0; l < MAX_LANES; l++) lane[l] = x[j + l] > lane[l] ? x[j + l] : lane[l];
    float m = lane[0];
    for (int l = 1; l < MAX_LANES; l++) m = lane[l] > m ? lane[l] : m;
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* Softmax of score rows [a, b) of the group (row h·nr + i is head h0 + h,
 * query position a0 + i), masked to keys [first, last]: sp_fwd_attn's row
 * loop, SUM_ROWS rows at a time. Each row's sum is its own chain in key
 * order, as the row loop's sum = 0; sum += row[j] for j = first..last, but
 * the rows' chains run side by side, one key at a time across the rows: a
 * single chain is bound by the add's latency, SUM_ROWS chains by its
 * throughput. The keys a row masks are zeroed before the sums, and a row's
 * chain adds them too: adding +0 to a sum of non-negative terms gives that
 * sum back (0 + 0 = +0), so every sum has the row loop's bits. */
#define SUM_ROWS 16
static void softmax_rows(const att_ctx *c, int64_t a, int64_t b) {
    const int64_t a0 = c->a0, k0 = c->k0, nk = c->nk, window = c->window;
    for (int64_t x0 = a; x0 < b; x0 += SUM_ROWS) {
        const int64_t n = min_i64(SUM_ROWS, b - x0);
        float *row[SUM_ROWS]; /* rows n.. repeat row 0: their sums are never used */
        int64_t first[SUM_ROWS], last[SUM_ROWS], hi = 0;
        for (int64_t r = 0; r < n; r++) {
            int64_t i = (x0 + r) % c->nr;
            float *w = row[r] = c->att + (x0 + r) * nk;
            int64_t l = last[r] = a0 + i - k0; /* causal: keys k0 + first .. k0 + last */
            int64_t f = first[r] = window > 0 && a0 + i - window + 1 > k0 ? a0 + i - window + 1 - k0 : 0;
            float m = row_max(w + f, l - f + 1);
            /* below -87, expf underflows (slow errno path in glibc) to under
             * FLT_MIN: a zero weight is exact to float precision. expf's
             * bits, vectorized (cpu_exp.c). */
            for (int64_t j = f; j <= l; j++) w[j] -= m;
            sp_cpu_expf_n(w + f, l - f + 1, -87.0f);
            for (int64_t j = 0; j < f; j++) w[j] = 0.0f;
            for (int64_t j = l + 1; j < nk; j++) w[j] = 0.0f;
            hi = l + 1 > hi ? l + 1 : hi;
        }
        for (int64_t r = n; r < SUM_ROWS; r++) row[r] = row[0];
        float sum[SUM_ROWS] = {0};
        for (int64_t j = 0; j < hi; j++)
            for (int r = 0; r < SUM_ROWS; r++) sum[r] += row[r][j];
        for (int64_t r = 0; r < n; r++) {
            float inv = 1.0f / sum[r], *w = row[r];
            for (int64_t j = first[r]; j <= last[r]; j++) w[j] *= inv;
        }
    }
}

/* Heads [h0 + a, h0 + b) of the block, each whole: its scores by one sgemm,
 * the masked softmax of its rows, its context by one sgemm (a pool loop:
 * the sgemms run single-threaded, par_for_blas). */
static void attention_heads(void *p, int64_t a, int64_t b) {
    const att_ctx *c = p;
    const int64_t nr = c->nr, nk = c->nk, hd = c->hd, qw = c->qw, kw = c->kw;
    for (int64_t h = a; h < b; h++) {
        int64_t hq = c->h0 + h, g = hq / c->group; /* GQA: query head hq reads kv head hq / (nh/nkv) */
        float *att = c->att + h * nr * nk;
        sp_cpu_blas_sgemm(0, 1, nr, nk, hd, c->scale, c->q + hq * hd + c->r0 * qw, qw, c->k + g * hd + c->k0 * kw, kw, 0.0f,
                  att, nk);
        softmax_rows(c, h * nr, (h + 1) * nr);
        sp_cpu_blas_sgemm(0, 0, nr, hd, nk, 1.0f, att, nk, c->v + g * hd + c->k0 * kw, kw, 0.0f, c->ctx + c->r0 * qw + hq * hd,
                  qw);
    }
}

/* sp_fwd_attn's attention, the same operations per query head and block of
 * CPU_QBLOCK query rows [r0, r1): scores by one sgemm, the masked softmax of
 * each row, the context by one sgemm. Query rows are positions p0 + r (p0 0
 * for a window, the cached length for attention_cached); a block of
 * positions [a0, a1) needs keys k0 = max(0, a0 − window + 1) .. a1 − 1 only;
 * row i sees [first, last]. The loop runs blocks outside and heads inside,
 * ws->att_heads heads at a time; the heads of a group are split over the
 * pool, each computed whole by one thread with single-threaded sgemms, so
 * the bits are those of one thread at any thread count and any grouping.
 * With p0 = 0 these are forward.c's operations. */
static void attention_at(const sp_bk *bk, sp_bk_ws *ws, const float *q, int64_t nq, int64_t p0, const float *k, const float *v,
                         int64_t nh, int64_t nkv, int64_t hd, float scale, int64_t window, float *ctx) {
    SP_ASSERT(nq >= 1 && p0 >= 0 && p0 + nq <= ws->T && nh >= 1 && nkv >= 1 && nh % nkv == 0 && hd >= 1 &&
              ws->att_heads >= 1);
    att_ctx c = {.q = q, .k = k, .v = v, .att = ws->att, .ctx = ctx, .window = window, .hd = hd, .qw = nh * hd,
                 .kw = nkv * hd, .group = nh / nkv, .scale = scale};
    for (int64_t r0 = 0; r0 < nq; r0 += CPU_QBLOCK) {
        int64_t r1 = min_i64(nq, r0 + CPU_QBLOCK), a0 = p0 + r0, a1 = p0 + r1;
        c.r0 = r0;
        c.a0 = a0;
        c.nr = r1 - r0;
        c.k0 = window > 0 && a0 - window + 1 > 0 ? a0 - window + 1 : 0;
        c.nk = a1 - c.k0;
        for (int64_t h0 = 0; h0 < nh; h0 += ws->att_heads) {
            c.h0 = h0;
            par_for_blas(bk, min_i64(nh, h0 + ws->att_heads) - h0, 1, attention_heads, &c);
        }
    }
}

static void cpu_attention(const sp_bk *bk, sp_bk_ws *ws, const float *q, const float *k, const float *v, int64_t T, int64_t nh,
                          int64_t nkv, int64_t hd, float scale, int64_t window, float *ctx) {
    attention_at(bk, ws, q, T, 0, k, v, nh, nkv, hd, scale, window, ctx);
}

/* The Tq query rows are positions Tk − Tq .. Tk − 1 (backend.h). */
static void cpu_attention_cached(const sp_bk *bk, sp_bk_ws *ws, const float *q, int64_t Tq, const float *k, const float *v, int64_t Tk,
                                 int64_t nh, int64_t nkv, int64_t hd, float scale, int64_t window, float *ctx) {
    SP_ASSERT(Tq >= 1 && Tq <= Tk);
    attention_at(bk, ws, q, Tq, Tk - Tq, k, v, nh, nkv, hd, scale, window, ctx);
}

typedef struct act_ctx {
    float *gate;
    const float *up;
    int kind;
} act_ctx;

static void act_range(void *p, int64_t i0, int64_t i1) {
    const act_ctx *c = p;
    float *gate = c->gate;
    const float *up = c->up;
    switch (c->kind) {
    case SP_BK_ACT_SILU_GLU:
        /* silu(g) · u; for g < -80 silu(g) is below 1e-33 and expf(-g)
         * would overflow through glibc's slow errno path: clamp it. expf's
         * bits, vectorized (cpu_exp.c), ACT_CHUNK elements at a time. */
        for (int64_t c0 = i0; c0 < i1; c0 += ACT_CHUNK) {
            const int64_t n = min_i64(ACT_CHUNK, i1 - c0);
            float e[ACT_CHUNK];
            for (int64_t k = 0; k < n; k++) e[k] = gate[c0 + k] < -80.0f ? 80.0f : -gate[c0 + k];
            sp_cpu_expf_n(e, n, -INFINITY);
            for (int64_t k = 0; k < n; k++) gate[c0 + k] = gate[c0 + k] / (1.0f + e[k]) * up[c0 + k];
        }
        return;
    case SP_BK_ACT_GELU_TANH_GLU:
    case SP_BK_ACT_GELU_TANH:
        for (int64_t i = i0; i < i1; i++) {
            /* 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))) */
            float g = gate[i];
            float y = 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
            gate[i] = c->kind == SP_BK_ACT_GELU_TANH_GLU ? y * up[i] : y;
        }
        return;
    case SP_BK_ACT_GELU_GLU:
        for (int64_t i = i0; i < i1; i++) {
            float g = gate[i]; /* 0.5·g·(1 + erf(g/√2)) */
            gate[i] = 0.5f * g * (1.0f + erff(g * 0.70710678118654752f)) * up[i];
        }
        return;
    case SP_BK_ACT_RELU:
        for (int64_t i = i0; i < i1; i++) gate[i] = gate[i] > 0.0f ? gate[i] : 0.0f;
        return;
    }
}

/* SILU_GLU: sp_fwd_mlp's loop exactly; elements split over the pool. */
static void cpu_act(const sp_bk *bk, enum sp_bk_act kind, float *gate, const float *up, int64_t n) {
    SP_ASSERT(kind == SP_BK_ACT_SILU_GLU || kind == SP_BK_ACT_GELU_TANH_GLU || kind == SP_BK_ACT_GELU_GLU ||
              kind == SP_BK_ACT_RELU || kind == SP_BK_ACT_GELU_TANH);
    act_ctx c = {.gate = gate, .up = up, .kind = (int)kind};
    sp_cpu_par_for(bk, n, PAR_GRAIN, act_range, &c);
}

/* sp_fwd_head_nll's per-row loop exactly, its rows' maxima and log-sums
 * computed over the pool (each row whole by one thread, as the loop did), in
 * groups of NLL_GROUP rows; the sum then runs in row order with the same
 * operations, so the bits do not depend on the thread count. */
#define NLL_GROUP 64

typedef struct nll_ctx {
    const float *logits;
    int64_t V, t0;
    float m[NLL_GROUP];
    double ls[NLL_GROUP];
} nll_ctx;

static void nll_rows(void *p, int64_t a, int64_t b) {
    nll_ctx *c = p;
    for (int64_t i = a; i < b; i++) {
        const float *row = c->logits + (c->t0 + i) * c->V;
        float m = row_max(row, c->V);
        double se = 0.0;
        for (int64_t j = 0; j < c->V; j++) se += exp((double)row[j] - (double)m);
        c->m[i] = m;
        c->ls[i] = log(se);
    }
}

static double cpu_nll(const sp_bk *bk, const float *logits, int64_t T, int64_t V, const int32_t *targets, double acc) {
    SP_ASSERT(V >= 1);
    double nll = acc;
    nll_ctx c = {.logits = logits, .V = V};
    for (c.t0 = 0; c.t0 < T - 1; c.t0 += NLL_GROUP) {
        const int64_t n = min_i64(NLL_GROUP, T - 1 - c.t0);
        sp_cpu_par_for(bk, n, PAR_GRAIN / V + 1, nll_rows, &c);
        for (int64_t i = 0; i < n; i++) {
            const int64_t t = c.t0 + i;
            int32_t target = targets[t + 1];
            SP_ASSERT(target >= 0 && target < V); /* callers validate token ids on load */
            nll += (double)c.m[i] + c.ls[i] - (double)logits[t * V + target];
        }
    }
    return nll;
}

typedef struct bf_ctx {
    const double *Q;
    float *Qf, *Qt;
    int64_t D, k;
} bf_ctx;

static void basis_f32_range(void *p, int64_t r0, int64_t r1) {
    const bf_ctx *c = p;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t i = 0; i < c->k; i++) {
            if (c->Qf) c->Qf[r * c->k + i] = (float)c->Q[r * c->D + i];
            if (c->Qt) c->Qt[i * c->D + r] = (float)c->Q[r * c->D + i];
        }
}

/* compute.c's basis_f32 (Qt is its fs); rows of Q split over the pool. */
static void cpu_basis_f32(const sp_bk *bk, const double *Q, int64_t D, int64_t k, float *Qf, float *Qt) {
    SP_ASSERT(k >= 0 && k <= D);
    bf_ctx c = {.Q = Q, .Qf = Qf, .Qt = Qt, .D = D, .k = k};
    sp_cpu_par_for(bk, D, PAR_GRAIN / (k + 1) + 1, basis_f32_range, &c);
}

static const sp_bk cpu_table = {
    .name = "cpu",
    .precision = "fp32",
    .host_shared = 1,
    .release = cpu_release,
    .set_threads = cpu_set_threads,
    .identity = cpu_identity,
    .plan_bytes = cpu_plan_bytes,
    .ws_init = cpu_ws_init,
    .ws_free = cpu_ws_free,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_dev = cpu_copy,
    .to_host = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sgemm = sp_cpu_sgemm,
    .add = cpu_add,
    .geadd = sp_cpu_geadd,
    .add_bias = cpu_add_bias,
    .norm = cpu_norm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .attention_cached = cpu_attention_cached,
    .act = cpu_act,
    .nll = cpu_nll,
    .cov_add = sp_cpu_cov_add,
    .eigh = sp_cpu_eigh,
    .rot_rows = sp_cpu_rot_rows,
    .rot_cols = sp_cpu_rot_cols,
    .basis_product = sp_cpu_basis_product,
    .basis_f32 = cpu_basis_f32,
};

int sp_bk_cpu_open(sp_bk **out) {
    *out = NULL;
    sp_bk *bk;
    cpu_ctx *c;
    SP_TRY(sp_alloc((void **)&bk, (int64_t)sizeof *bk, 1, "cpu backend"));
    int rc = sp_calloc((void **)&c, 1, (int64_t)sizeof *c, "cpu backend");
    if (rc) {
        free(bk);
        return rc;
    }
    *bk = cpu_table;
    c->pool.want = c->pool.blas = 1;
    bk->ctx = c;
    *out = bk;
    return 0;
}

