/* linalg/onednn.c — the oneDNN backend: the CPU backend (linalg/cpu.c) with
 * its sgemm on oneDNN's matmul primitive (contract: backend.h; its bits,
 * threads and measurements: docs/determinism.md, "The oneDNN backend").
 *
 * What it is. An instance of sp_bk_cpu_open whose table is copied into a
 * larger struct (onednn_bk: the sp_bk first, so that release frees both, and
 * the CPU's ops, which reach their state only through bk->ctx, run
 * unchanged), with sgemm, set_threads, identity and release replaced. Every
 * other op is the CPU backend's: norms, RoPE, the activations, attention
 * (its per-head products stay on single-threaded OpenBLAS calls in the
 * pool), the NLL, the second moments, eigh and the rotations. sgemm carries
 * the forward's linear layers and the shortcuts, and compute's projections
 * onto the basis.
 *
 * Precision ([resources] precision, enum sp_bk_prec).
 *   f32   A, B and C float32, oneDNN's strict math (no implicit down-conversion).
 *   bf16  op(A) and op(B) rounded to bfloat16 (to nearest, ties to even) into
 *         the instance's bf16 buffers, then a bf16 × bf16 matmul that
 *         accumulates and writes float32; alpha and beta as in f32. Opened
 *         only where the CPU has AVX512-BF16 or AMX-BF16 (cpuid), oneDNN
 *         dispatches to an ISA with them, and oneDNN creates a bf16 matmul
 *         (probed at open); otherwise 64 with the reason.
 *
 * Threads: one runtime, the CPU backend's pool. Debian's libdnnl runs its
 * parallel regions on OpenMP (libgomp), a second thread pool that would size
 * itself to every core and spin beside the pool and OpenBLAS; and libgomp is
 * not fork-safe (a stage forked after its parent ran an OpenMP team hangs in
 * its own first one). So oneDNN never starts an OpenMP team: every thread
 * that calls into oneDNN first sets its OpenMP thread count to 1
 * (omp_set_num_threads is per thread; one_omp_single), which oneDNN reads when
 * it creates and runs a primitive. The parallelism is the pool's, sized by
 * [resources] threads through set_threads: C is cut into fixed tiles of
 * ONE_MB × ONE_NB (the last row and column of tiles smaller), each computed
 * whole by one single-threaded primitive execution, and the pool's threads
 * take contiguous runs of tiles. Which thread computes a tile, and how many
 * threads there are, does not change a tile's arithmetic: the bits do not
 * depend on the thread count (tests/test_onednn.c checks 1, 2 and 3
 * threads), unlike OpenBLAS's threaded sgemm (docs/determinism.md). The
 * thread count stays journaled all the same, for the CPU ops.
 *
 * Primitives. Cached per tile shape, the key being (ta, tb, rows, cols, k,
 * lda, ldb, ldc, alpha, beta) at the instance's precision: a GEMM has at
 * most four (full tiles, the last row, the last column, the corner). ONE_CACHE
 * entries, the least recently used replaced. Each entry holds, for each
 * pool slot it has run on, memory objects for A, B, C and the scratchpad;
 * each slot has its own stream and its own scratchpad buffer (oneDNN's
 * scratchpad_mode_user), grown to the largest need of any primitive made.
 * Everything is created by the calling thread before the pool runs, so the
 * workers only set data handles and execute.
 *
 * Memory. plan_bytes is the CPU backend's. What this file adds is grown
 * when a larger need first appears and then kept: the scratchpads (slots ×
 * the largest primitive's: at most 257 KiB measured, docs/determinism.md)
 * and, at bf16, the bf16 copies of op(A) and op(B) of the largest GEMM (half
 * the float32 bytes of its operands). process_bytes gives the memory plan
 * the library, its code and caches and the scratchpads (ONE_PROCESS_BYTES);
 * those per-call bf16 copies are not in the plan yet.
 *
 * The hold (backend.h; bf16 only). Between hold(1) and hold(0) each B is
 * rounded to bf16 at its first product and kept, keyed by (address, rows,
 * cols, ld), in one buffer of the hold_bytes / 2 that plan_bytes adds and
 * ws_init sizes (the largest planned); a B that does not fit is rounded per
 * call. Kept or not, the rounding is the same, so the bits are too.
 *
 * Errors. A primitive oneDNN cannot create or run, or an allocation that
 * fails inside sgemm (which returns nothing), ends the process with 70 and a
 * message, as the CUDA backend does; what can be refused is refused at open.
 */
#include "backend.h"

#ifdef SLICEPIPE_HAVE_ONEDNN

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#if DNNL_VERSION_MAJOR != 2
#error "linalg/onednn.c is written against oneDNN 2.x's C API (Debian's libdnnl-dev 2.6)"
#endif
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
/* OpenMP's C API, from the libgomp that libdnnl loads (dn_load finds them
 * through libdnnl's handle); declared here, so no omp.h is needed. */
void omp_set_num_threads(int n);
int omp_get_max_threads(void);
#elif DNNL_CPU_RUNTIME != DNNL_RUNTIME_SEQ
#error "linalg/onednn.c needs oneDNN built with the OpenMP or the sequential CPU runtime (linalg/onednn.cmake checks it)"
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "cpu_impl.h"
#include "error.h"

/* ---- libdnnl, loaded when first needed ----
 *
 * libdnnl is not linked but dlopen'ed by the first call that needs it
 * (usable, open, and for_auto on a CPU whose cpuid qualifies): loading it
 * costs a process about 2.8 MiB of RSS (measured: `slicepipe --version`
 * 9.1 → 11.9 MiB), which every run on the cpu backend would otherwise pay
 * for nothing. So only a process that resolves to onednn (or asks
 * --version) maps it, and the stages forked from it inherit it; the memory
 * plan counts it through process_bytes. Its OpenMP calls come from the
 * libgomp it loads. The prototypes are the header's (__typeof__). */
#define DN_FUNCS(X) \
    X(dnnl_cpu_isa2str) \
    X(dnnl_engine_create) \
    X(dnnl_engine_destroy) \
    X(dnnl_get_effective_cpu_isa) \
    X(dnnl_matmul_desc_init) \
    X(dnnl_memory_create) \
    X(dnnl_memory_desc_get_size) \
    X(dnnl_memory_desc_init_by_strides) \
    X(dnnl_memory_destroy) \
    X(dnnl_memory_set_data_handle) \
    X(dnnl_post_ops_append_sum) \
    X(dnnl_post_ops_create) \
    X(dnnl_post_ops_destroy) \
    X(dnnl_primitive_attr_create) \
    X(dnnl_primitive_attr_destroy) \
    X(dnnl_primitive_attr_set_output_scales) \
    X(dnnl_primitive_attr_set_post_ops) \
    X(dnnl_primitive_attr_set_scratchpad_mode) \
    X(dnnl_primitive_create) \
    X(dnnl_primitive_desc_create) \
    X(dnnl_primitive_desc_destroy) \
    X(dnnl_primitive_desc_query) \
    X(dnnl_primitive_desc_query_md) \
    X(dnnl_primitive_destroy) \
    X(dnnl_primitive_execute) \
    X(dnnl_status2str) \
    X(dnnl_stream_create) \
    X(dnnl_stream_destroy) \
    X(dnnl_stream_wait) \
    X(dnnl_version)
#define DN_FIELD(f) __typeof__(&f) f;
static struct dn_api {
    DN_FUNCS(DN_FIELD)
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
    __typeof__(&omp_set_num_threads) omp_set_num_threads;
    __typeof__(&omp_get_max_threads) omp_get_max_threads;
#endif
} dn;
static int dn_state;      /* 0: not tried; 1: loaded; -1: failed, dn_why says why */
static char dn_why[256];

#define DN_STR2(x) #x
#define DN_STR(x) DN_STR2(x)
#define DN_SONAME "libdnnl.so." DN_STR(DNNL_VERSION_MAJOR)

/* 1 when libdnnl (and, with the OpenMP runtime, libgomp's calls) is loaded,
 * else 0 with the reason in why. Called by the thread that opens backends. */
static int dn_load(char *why, int64_t n) {
    if (dn_state == 0) {
        dn_state = -1;
        void *h = dlopen(DN_SONAME, RTLD_NOW | RTLD_LOCAL);
        const char *missing = NULL;
        if (!h) {
            snprintf(dn_why, sizeof dn_why, "cannot load %s (%s)", DN_SONAME, dlerror());
        } else {
#define DN_SYM(f) \
    if (!missing && !(dn.f = (__typeof__(&f))dlsym(h, #f))) missing = #f;
            DN_FUNCS(DN_SYM)
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
            DN_SYM(omp_set_num_threads)
            DN_SYM(omp_get_max_threads)
#endif
#undef DN_SYM
            if (missing) snprintf(dn_why, sizeof dn_why, "%s lacks %s", DN_SONAME, missing);
            else if (dn.dnnl_version()->major != DNNL_VERSION_MAJOR)
                snprintf(dn_why, sizeof dn_why, "%s is oneDNN %d.%d, not the %d.x slicepipe was built with", DN_SONAME,
                         dn.dnnl_version()->major, dn.dnnl_version()->minor, DNNL_VERSION_MAJOR);
            else dn_state = 1;
        }
    }
    if (dn_state == 1) return 1;
    snprintf(why, (size_t)n, "%s", dn_why);
    return 0;
}

#define ONE_MB 256        /* rows of C per tile */
#define ONE_NB 256        /* columns of C per tile */
#define ONE_CACHE 32      /* primitives kept */
#define ONE_SLOTS_MAX 64  /* pool threads served (cpu.c's pool has at most 64) */
#define ONE_ALIGN 64
#define ONE_HELD_MAX 64   /* B operands one hold keeps (a layer's weights, shortcut and basis: 10 at most) */
/* What running it adds to a process, for the memory plan (sp_bk.process_bytes):
 * measured on stories260k against the cpu backend, +2.9 MiB in the
 * supervisor (the library) and in the compute stage (the library, its
 * generated kernels, primitives and buffers) +4.4 MiB at avx512_core_bf16
 * and +7.6 MiB at oneDNN's AVX2 kernels (gemm:jit packs into its own
 * buffers), at 1 and 2 threads alike within 0.4 MiB; plus a scratchpad a
 * pool thread, at most 257 KiB measured (docs/determinism.md), counted for
 * the machine's cores. */
#define ONE_PROCESS_BYTES ((int64_t)8 << 20)
#define ONE_SCRATCH_BYTES ((int64_t)256 << 10)

/* One cached primitive: a tile shape. */
typedef struct one_key {
    int64_t ta, tb, m, n, k, lda, ldb, ldc; /* m × n: the tile's rows and columns of C */
    float alpha, beta;
} one_key;

typedef struct one_prim {
    one_key key;
    uint64_t last;                /* tick of the last use; 0: the entry is empty */
    dnnl_primitive_t prim;
    dnnl_memory_desc_t md[4];     /* A, B, C, scratchpad */
    int64_t scratch_bytes;
    int nslots;                   /* slots whose memory objects exist */
    dnnl_memory_t (*mem)[4];      /* (nslots, 4): A, B, C, scratchpad */
    char impl[48];                /* oneDNN's implementation name, e.g. "gemm:jit", "brg:avx512_core" */
} one_prim;

typedef struct one_ctx {
    dnnl_engine_t eng;
    int bf16;                        /* SP_BK_PREC_BF16 */
    int slots;                       /* the pool's thread count (set_threads), at most ONE_SLOTS_MAX */
    int nstreams;                    /* streams created: slots 0..nstreams-1 */
    dnnl_stream_t stream[ONE_SLOTS_MAX];
    void *scratch[ONE_SLOTS_MAX];    /* each scratch_cap bytes (slots 0..nscratch-1) */
    int nscratch;
    int64_t scratch_cap;
    uint16_t *bfa, *bfb;             /* bf16 copies of op(A), op(B) (bf16 only) */
    int64_t bfa_cap, bfb_cap;        /* elements */
    /* the hold (bf16 only): B operands rounded once, packed one after another in held */
    int holding;
    uint16_t *held;                  /* hold_cap elements, allocated at the first hold that needs it */
    int64_t hold_cap, hold_used;     /* elements: planned (ws_init's hold_bytes / 4), in use */
    int nheld;
    struct one_held {
        const float *src;
        int64_t rows, cols, ld;
        int64_t off;                 /* in held */
    } heldv[ONE_HELD_MAX];
    sp_bk_plan (*cpu_plan_bytes)(const sp_bk *bk, const sp_bk_plan_in *in);
    int (*cpu_ws_init)(const sp_bk *bk, const sp_bk_plan_in *in, sp_bk_ws **out);
    uint64_t tick;
    one_prim cache[ONE_CACHE];
    /* the CPU instance's own entries, which these wrap */
    void (*cpu_release)(sp_bk *bk);
    void (*cpu_identity)(const sp_bk *bk, char *buf, int64_t n);
    int (*cpu_set_threads)(const sp_bk *bk, int64_t n, int64_t D);
} one_ctx;

typedef struct onednn_bk {
    sp_bk bk; /* first: sp_bk_close(&bk) frees the struct */
    one_ctx *one;
} onednn_bk;

static one_ctx *one_of(const sp_bk *bk) { return ((const onednn_bk *)bk)->one; }

__attribute__((noreturn)) static void one_fatal(const char *what, dnnl_status_t st) {
    sp_fail(SP_EX_SOFTWARE, "onednn backend: %s failed: %s", what, dn.dnnl_status2str(st));
    fprintf(stderr, "slicepipe: internal error: %s\n", sp_errmsg());
    fflush(stderr);
    _exit(SP_EX_SOFTWARE);
}
#define ONE_DIE(what, call)                          \
    do {                                             \
        dnnl_status_t st_ = (call);                  \
        if (st_ != dnnl_success) one_fatal(what, st_); \
    } while (0)

/* oneDNN in this thread runs without an OpenMP team (the header says why). */
static void one_omp_single(void) {
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
    if (dn.omp_get_max_threads() != 1) dn.omp_set_num_threads(1);
#endif
}

/* ---- the CPU's features ---- */

typedef struct one_cpu {
    int avx2, avx512_bf16, amx_bf16; /* cpuid */
    dnnl_cpu_isa_t isa;              /* what oneDNN dispatches to (cpuid, the OS, ONEDNN_MAX_CPU_ISA), once loaded */
} one_cpu;

/* cpuid alone: no library loaded. */
static one_cpu cpu_features(void) {
    one_cpu c = {0};
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, cx, d;
    if (__get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
        c.avx2 = (b >> 5) & 1;
        c.amx_bf16 = (d >> 22) & 1;
        if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &cx, &d)) c.avx512_bf16 = (a >> 5) & 1;
    }
#endif
    c.isa = dnnl_cpu_isa_all;
    return c;
}

static int isa_has(dnnl_cpu_isa_t isa, dnnl_cpu_isa_t want) { return ((unsigned)isa & (unsigned)want) == (unsigned)want; }

/* "avx512_core_bf16" for dnnl_cpu_isa_avx512_core_bf16 (libdnnl loaded). */
static const char *isa_name(dnnl_cpu_isa_t isa) {
    const char *s = dn.dnnl_cpu_isa2str(isa);
    return strncmp(s, "cpu_isa_", 8) == 0 ? s + 8 : s;
}

int sp_bk_onednn_usable(char *why, int64_t n) {
    one_cpu c = cpu_features();
    if (!c.avx2) {
        snprintf(why, (size_t)n, "the onednn backend needs AVX2, which this CPU lacks (cpuid)");
        return 0;
    }
    if (!dn_load(why, n)) return 0;
    c.isa = dn.dnnl_get_effective_cpu_isa();
    if (!isa_has(c.isa, dnnl_cpu_isa_avx2)) {
        snprintf(why, (size_t)n, "the onednn backend needs AVX2; oneDNN dispatches to %s here (ONEDNN_MAX_CPU_ISA?)",
                 isa_name(c.isa));
        return 0;
    }
    if (n > 0) why[0] = 0;
    return 1;
}

/* bf16 where the CPU has the instructions and oneDNN dispatches to them. */
static int bf16_isa(const one_cpu *c) {
    return (c->amx_bf16 && isa_has(c->isa, dnnl_cpu_isa_avx512_core_amx)) ||
           (c->avx512_bf16 && isa_has(c->isa, dnnl_cpu_isa_avx512_core_bf16));
}

/* "auto" takes onednn on an AMX-BF16 CPU, at any precision, and on an
 * AVX512-BF16 one only at bf16 (which the CPU backend cannot compute): at f32
 * the CPU backend stays auto's choice there, so that outputs of a machine
 * like the one this was written on (AMD EPYC with AVX512-BF16, no AMX) do
 * not change under "auto". cpuid decides first, so that a CPU without them
 * never loads libdnnl for auto. */
int sp_bk_onednn_for_auto(enum sp_bk_prec p, char *why, int64_t n) {
    one_cpu c = cpu_features();
    const char *has = c.amx_bf16      ? "AMX-BF16"
                      : c.avx512_bf16 ? "AVX512-BF16 but no AMX"
                                      : "neither AMX-BF16 nor AVX512-BF16";
    const char *rule = p == SP_BK_PREC_BF16 ? " or AVX512-BF16" : " (or AVX512-BF16 at precision = \"bf16\")";
    if (!c.amx_bf16 && !(p == SP_BK_PREC_BF16 && c.avx512_bf16)) {
        snprintf(why, (size_t)n, "auto takes onednn on CPUs with AMX-BF16%s; this one has %s (cpuid)", rule, has);
        return 0;
    }
    if (!dn_load(why, n)) return 0;
    c.isa = dn.dnnl_get_effective_cpu_isa();
    if (c.amx_bf16 && isa_has(c.isa, dnnl_cpu_isa_avx512_core_amx)) return 1;
    if (p == SP_BK_PREC_BF16 && bf16_isa(&c)) return 1;
    snprintf(why, (size_t)n, "auto takes onednn on CPUs with AMX-BF16%s; this one has %s, but oneDNN dispatches to %s "
                             "(ONEDNN_MAX_CPU_ISA?)", rule, has, isa_name(c.isa));
    return 0;
}

/* ---- primitives ---- */

/* The matmul for one tile shape at the instance's precision, with its memory
 * descriptors, into p (empty). Returns oneDNN's status. */
static dnnl_status_t prim_make(one_ctx *o, const one_key *k, one_prim *p) {
    memset(p, 0, sizeof *p);
    const dnnl_data_type_t dt = o->bf16 ? dnnl_bf16 : dnnl_f32;
    const dnnl_dims_t a_dims = {k->m, k->k}, b_dims = {k->k, k->n}, c_dims = {k->m, k->n};
    const dnnl_dims_t a_str = {k->ta ? 1 : k->lda, k->ta ? k->lda : 1}; /* op(A)[i][p]: A[p·lda + i] when ta */
    const dnnl_dims_t b_str = {k->tb ? 1 : k->ldb, k->tb ? k->ldb : 1}; /* op(B)[p][j]: B[j·ldb + p] when tb */
    const dnnl_dims_t c_str = {k->ldc, 1};
    dnnl_status_t st;
    if ((st = dn.dnnl_memory_desc_init_by_strides(&p->md[0], 2, a_dims, dt, a_str)) != dnnl_success) return st;
    if ((st = dn.dnnl_memory_desc_init_by_strides(&p->md[1], 2, b_dims, dt, b_str)) != dnnl_success) return st;
    if ((st = dn.dnnl_memory_desc_init_by_strides(&p->md[2], 2, c_dims, dnnl_f32, c_str)) != dnnl_success) return st;
    dnnl_matmul_desc_t desc;
    if ((st = dn.dnnl_matmul_desc_init(&desc, &p->md[0], &p->md[1], NULL, &p->md[2])) != dnnl_success) return st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    st = dn.dnnl_primitive_attr_create(&attr);
    if (st == dnnl_success) st = dn.dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success && k->alpha != 1.0f) st = dn.dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha);
    if (st == dnnl_success && k->beta != 0.0f) { /* C = alpha·op(A)·op(B) + beta·C: a sum post-op */
        st = dn.dnnl_post_ops_create(&po);
        if (st == dnnl_success) st = dn.dnnl_post_ops_append_sum(po, k->beta);
        if (st == dnnl_success) st = dn.dnnl_primitive_attr_set_post_ops(attr, po);
    }
    one_omp_single(); /* the primitive is made for one thread */
    if (st == dnnl_success) st = dn.dnnl_primitive_desc_create(&pd, &desc, attr, o->eng, NULL);
    if (st == dnnl_success) {
        const char *impl = NULL;
        if (dn.dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
            snprintf(p->impl, sizeof p->impl, "%s", impl);
        const dnnl_memory_desc_t *smd = dn.dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        if (smd) p->md[3] = *smd;
        p->scratch_bytes = smd ? (int64_t)dn.dnnl_memory_desc_get_size(smd) : 0;
        st = dn.dnnl_primitive_create(&p->prim, pd);
    }
    if (pd) dn.dnnl_primitive_desc_destroy(pd);
    if (po) dn.dnnl_post_ops_destroy(po);
    if (attr) dn.dnnl_primitive_attr_destroy(attr);
    if (st == dnnl_success) p->key = *k;
    else p->prim = NULL;
    return st;
}

static void prim_free(one_prim *p) {
    for (int s = 0; s < p->nslots; s++)
        for (int i = 0; i < 4; i++)
            if (p->mem[s][i]) dn.dnnl_memory_destroy(p->mem[s][i]);
    free(p->mem);
    if (p->prim) dn.dnnl_primitive_destroy(p->prim);
    memset(p, 0, sizeof *p);
}

static void *one_alloc(int64_t bytes, const char *what) {
    void *q = NULL;
    size_t sz = (size_t)((bytes + ONE_ALIGN - 1) / ONE_ALIGN * ONE_ALIGN);
    if (posix_memalign(&q, ONE_ALIGN, sz ? sz : ONE_ALIGN) != 0) {
        sp_fail(SP_EX_SOFTWARE, "onednn backend: out of memory for %s (%lld bytes)", what, (long long)bytes);
        fprintf(stderr, "slicepipe: %s\n", sp_errmsg());
        fflush(stderr);
        _exit(SP_EX_SOFTWARE);
    }
    return q;
}

/* Slots 0..nslots-1 ready for p: a stream, a scratchpad buffer of p's size at
 * least, p's memory objects. Called by the thread that runs the pool. */
static void slots_ready(one_ctx *o, one_prim *p, int nslots) {
    SP_ASSERT(nslots >= 1 && nslots <= ONE_SLOTS_MAX);
    for (; o->nstreams < nslots; o->nstreams++)
        ONE_DIE("dnnl_stream_create", dn.dnnl_stream_create(&o->stream[o->nstreams], o->eng, dnnl_stream_default_flags));
    if (p->scratch_bytes > o->scratch_cap) { /* every slot's buffer grows */
        for (int s = 0; s < o->nscratch; s++) free(o->scratch[s]);
        o->nscratch = 0;
        o->scratch_cap = p->scratch_bytes;
    }
    for (; o->nscratch < nslots; o->nscratch++) o->scratch[o->nscratch] = one_alloc(o->scratch_cap, "a scratchpad");
    if (p->nslots < nslots) {
        dnnl_memory_t(*mem)[4] = realloc(p->mem, (size_t)nslots * sizeof *mem);
        if (!mem) one_fatal("allocating memory objects", dnnl_out_of_memory);
        p->mem = mem;
        for (; p->nslots < nslots; p->nslots++)
            for (int i = 0; i < 4; i++) {
                mem[p->nslots][i] = NULL;
                if (i < 3 || p->scratch_bytes > 0)
                    ONE_DIE("dnnl_memory_create",
                            dn.dnnl_memory_create(&mem[p->nslots][i], &p->md[i], o->eng, DNNL_MEMORY_NONE));
            }
    }
}

/* The cached primitive for key k, made if absent (the least recently used
 * entry replaced), with nslots slots ready. */
static one_prim *prim_get(one_ctx *o, const one_key *k, int nslots) {
    one_prim *victim = &o->cache[0];
    for (int i = 0; i < ONE_CACHE; i++) {
        one_prim *p = &o->cache[i];
        if (p->last && memcmp(&p->key, k, sizeof *k) == 0) {
            p->last = ++o->tick;
            slots_ready(o, p, nslots);
            return p;
        }
        if (p->last < victim->last) victim = p;
    }
    prim_free(victim);
    dnnl_status_t st = prim_make(o, k, victim);
    if (st != dnnl_success) {
        char what[200];
        snprintf(what, sizeof what, "a %s matmul primitive for a %lld x %lld x %lld tile (ta %d, tb %d)",
                 o->bf16 ? "bf16" : "f32", (long long)k->m, (long long)k->n, (long long)k->k, (int)k->ta, (int)k->tb);
        one_fatal(what, st);
    }
    victim->last = ++o->tick;
    slots_ready(o, victim, nslots);
    return victim;
}

/* ---- sgemm ---- */

/* dst (rows, cols) packed bf16 = src (rows, cols), row stride ld: rounded to
 * nearest, ties to even; NaN stays NaN. */
typedef struct bf_job {
    uint16_t *dst;
    const float *src;
    int64_t cols, ld;
} bf_job;

static inline uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN: quiet, sign kept */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* One row. Integer operations only, so every width the compiler clones it
 * for (an ifunc picks the CPU's widest at load) gives the same bits. On the
 * floor bench's bf16 run the baseline's SSE2 loop took 2.4 % of the samples,
 * the AVX-512F clone (256-bit vectors, GCC's preference) 1.4 %. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void bf_row(uint16_t *d, const float *s, int64_t n) {
    for (int64_t j = 0; j < n; j++) d[j] = bf16_of(s[j]);
}

static void bf_rows(void *ctx, int64_t r0, int64_t r1) {
    const bf_job *b = ctx;
    for (int64_t r = r0; r < r1; r++) bf_row(b->dst + r * b->cols, b->src + r * b->ld, b->cols);
}

/* *buf (capacity *cap elements, grown if needed) ← src (rows, cols) in bf16. */
static void to_bf16(const sp_bk *bk, uint16_t **buf, int64_t *cap, const float *src, int64_t rows, int64_t cols,
                    int64_t ld) {
    int64_t need, bytes;
    SP_ASSERT(!sp_mul_i64(rows, cols, &need) && !sp_mul_i64(need, 2, &bytes));
    if (need > *cap) {
        free(*buf);
        *buf = one_alloc(bytes, "bf16 operands");
        *cap = need;
    }
    bf_job b = {.dst = *buf, .src = src, .cols = cols, .ld = ld};
    sp_cpu_par_for(bk, rows, PAR_GRAIN / (cols > 0 ? cols : 1) + 1, bf_rows, &b);
}

/* B (rows, cols), row stride ld, rounded to bf16 once per hold: the held
 * copy, made now if absent and it fits the planned hold_cap; NULL when it
 * does not (the caller rounds it per call, as without a hold). The same
 * rounding as to_bf16, so the bits do not depend on the hold. */
static const uint16_t *held_b(const sp_bk *bk, const float *B, int64_t rows, int64_t cols, int64_t ld) {
    one_ctx *o = one_of(bk);
    for (int i = 0; i < o->nheld; i++) {
        const struct one_held *h = &o->heldv[i];
        if (h->src == B && h->rows == rows && h->cols == cols && h->ld == ld) return o->held + h->off;
    }
    const int64_t need = rows * cols;
    if (o->nheld == ONE_HELD_MAX || need > o->hold_cap - o->hold_used) return NULL;
    if (!o->held) o->held = one_alloc(o->hold_cap * 2, "held bf16 weights");
    struct one_held *h = &o->heldv[o->nheld++];
    *h = (struct one_held){.src = B, .rows = rows, .cols = cols, .ld = ld, .off = o->hold_used};
    o->hold_used += need;
    bf_job b = {.dst = o->held + h->off, .src = B, .cols = cols, .ld = ld};
    sp_cpu_par_for(bk, rows, PAR_GRAIN / (cols > 0 ? cols : 1) + 1, bf_rows, &b);
    return o->held + h->off;
}

static void one_hold(const sp_bk *bk, int on) {
    one_ctx *o = one_of(bk);
    o->holding = on && o->bf16;
    o->nheld = 0;
    o->hold_used = 0;
}

typedef struct tile_job {
    one_ctx *o;
    one_prim *p[2][2];  /* [last tile row][last tile column] */
    const char *A, *B;  /* op(A), op(B) storage (float32, or the bf16 copies) */
    float *C;
    int64_t ta, tb, m, n, lda, ldb, ldc, esz; /* esz: bytes per element of A and B */
    int64_t tm, tn, ntiles, nparts;
} tile_job;

/* Parts (slots) [s0, s1): part s computes tiles [ntiles·s/nparts,
 * ntiles·(s+1)/nparts) in row-major tile order, each by one execution of its
 * shape's primitive with slot s's memory objects, stream and scratchpad. */
static void tile_parts(void *ctx, int64_t s0, int64_t s1) {
    const tile_job *j = ctx;
    one_omp_single();
    for (int64_t s = s0; s < s1; s++) {
        for (int64_t t = j->ntiles * s / j->nparts; t < j->ntiles * (s + 1) / j->nparts; t++) {
            const int64_t ti = t / j->tn, tj = t % j->tn, i0 = ti * ONE_MB, j0 = tj * ONE_NB;
            one_prim *p = j->p[ti == j->tm - 1][tj == j->tn - 1];
            dnnl_memory_t *mem = p->mem[s];
            const char *a = j->A + (j->ta ? i0 : i0 * j->lda) * j->esz;
            const char *b = j->B + (j->tb ? j0 * j->ldb : j0) * j->esz;
            ONE_DIE("dnnl_memory_set_data_handle", dn.dnnl_memory_set_data_handle(mem[0], (void *)a));
            ONE_DIE("dnnl_memory_set_data_handle", dn.dnnl_memory_set_data_handle(mem[1], (void *)b));
            ONE_DIE("dnnl_memory_set_data_handle", dn.dnnl_memory_set_data_handle(mem[2], j->C + i0 * j->ldc + j0));
            dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]},
                                       {DNNL_ARG_SCRATCHPAD, mem[3]}};
            int nargs = 3;
            if (p->scratch_bytes > 0) {
                ONE_DIE("dnnl_memory_set_data_handle", dn.dnnl_memory_set_data_handle(mem[3], j->o->scratch[s]));
                nargs = 4;
            }
            ONE_DIE("dnnl_primitive_execute", dn.dnnl_primitive_execute(p->prim, j->o->stream[s], nargs, args));
            ONE_DIE("dnnl_stream_wait", dn.dnnl_stream_wait(j->o->stream[s]));
        }
    }
}

/* C (m, n) = alpha·op(A)·op(B) + beta·C (backend.h), in tiles on the pool. */
static void one_sgemm(const sp_bk *bk, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    SP_ASSERT(m >= 0 && n >= 0 && k >= 0 && ldc >= n && lda >= (ta ? m : k) && ldb >= (tb ? k : n));
    if (m == 0 || n == 0) return;
    one_ctx *o = one_of(bk);
    if (k == 0) { /* no products: C = beta·C (beta 0 overwrites, as BLAS) */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    one_omp_single();
    tile_job job = {.o = o, .A = (const char *)A, .B = (const char *)B, .C = C, .ta = ta, .tb = tb, .m = m, .n = n,
                    .lda = lda, .ldb = ldb, .ldc = ldc, .esz = 4};
    if (o->bf16) { /* packed bf16 copies of the stored A and B */
        job.lda = ta ? m : k;
        job.ldb = tb ? k : n;
        to_bf16(bk, &o->bfa, &o->bfa_cap, A, ta ? k : m, job.lda, lda);
        const uint16_t *hb = o->holding ? held_b(bk, B, tb ? n : k, job.ldb, ldb) : NULL;
        if (!hb) {
            to_bf16(bk, &o->bfb, &o->bfb_cap, B, tb ? n : k, job.ldb, ldb);
            hb = o->bfb;
        }
        job.A = (const char *)o->bfa;
        job.B = (const char *)hb;
        job.esz = 2;
    }
    job.tm = (m + ONE_MB - 1) / ONE_MB;
    job.tn = (n + ONE_NB - 1) / ONE_NB;
    job.ntiles = job.tm * job.tn;
    job.nparts = o->slots < job.ntiles ? o->slots : job.ntiles;
    for (int er = 0; er < 2; er++)
        for (int ec = 0; ec < 2; ec++) {
            one_key key;
            memset(&key, 0, sizeof key); /* compared with memcmp */
            key.ta = ta;
            key.tb = tb;
            key.m = er ? m - (job.tm - 1) * ONE_MB : (m < ONE_MB ? m : ONE_MB);
            key.n = ec ? n - (job.tn - 1) * ONE_NB : (n < ONE_NB ? n : ONE_NB);
            key.k = k;
            key.lda = job.lda;
            key.ldb = job.ldb;
            key.ldc = ldc;
            key.alpha = alpha;
            key.beta = beta;
            job.p[er][ec] = prim_get(o, &key, (int)job.nparts);
        }
    sp_cpu_par_for(bk, job.nparts, 1, tile_parts, &job);
}

/* ---- the plan: the CPU's workspace, and at bf16 the held copies ---- */

static int64_t held_elems(const one_ctx *o, const sp_bk_plan_in *in) { return o->bf16 ? in->hold_bytes / 4 : 0; }

static sp_bk_plan one_plan_bytes(const sp_bk *bk, const sp_bk_plan_in *in) {
    const one_ctx *o = one_of(bk);
    sp_bk_plan p = o->cpu_plan_bytes(bk, in);
    const int64_t held = held_elems(o, in) * 2;
    if (p.host_bytes > INT64_MAX - held) p.host_bytes = INT64_MAX;
    else p.host_bytes += held;
    return p;
}

/* The CPU's workspace; the hold's capacity grows to the largest planned
 * (its buffer is allocated at the first hold that needs it). */
static int one_ws_init(const sp_bk *bk, const sp_bk_plan_in *in, sp_bk_ws **out) {
    one_ctx *o = one_of(bk);
    const int64_t e = held_elems(o, in);
    if (e > o->hold_cap) {
        SP_ASSERT(!o->holding);
        free(o->held);
        o->held = NULL;
        o->hold_cap = e;
    }
    return o->cpu_ws_init(bk, in, out);
}

/* ---- lifecycle, threads, identity ---- */

static int one_set_threads(const sp_bk *bk, int64_t n, int64_t D) {
    one_ctx *o = one_of(bk);
    int t = o->cpu_set_threads(bk, n, D);
    o->slots = t < ONE_SLOTS_MAX ? t : ONE_SLOTS_MAX;
    one_omp_single();
    return t;
}

static void one_identity(const sp_bk *bk, char *buf, int64_t n) {
    if (n <= 0) return;
    one_ctx *o = one_of(bk);
    const dnnl_version_t *v = dn.dnnl_version();
    sp_bk cpu = *bk; /* the CPU ops it keeps compute in fp32 */
    cpu.precision = "fp32";
    char inner[200];
    o->cpu_identity(&cpu, inner, sizeof inner);
    snprintf(buf, (size_t)n, "onednn %d.%d.%d isa=%s precision=%s tile=%dx%d; %s", v->major, v->minor, v->patch,
             isa_name(dn.dnnl_get_effective_cpu_isa()), bk->precision, ONE_MB, ONE_NB, inner);
}

static void one_release(sp_bk *bk) {
    one_ctx *o = one_of(bk);
    void (*cpu_release)(sp_bk *) = o->cpu_release;
    for (int i = 0; i < ONE_CACHE; i++) prim_free(&o->cache[i]);
    for (int s = 0; s < o->nstreams; s++) dn.dnnl_stream_destroy(o->stream[s]);
    for (int s = 0; s < o->nscratch; s++) free(o->scratch[s]);
    free(o->bfa);
    free(o->bfb);
    free(o->held);
    if (o->eng) dn.dnnl_engine_destroy(o->eng);
    free(o);
    cpu_release(bk); /* the pool, bk->ctx and the struct itself */
}

static int open_at(int bf16, sp_bk **out) {
    *out = NULL;
    char why[256];
    if (!sp_bk_onednn_usable(why, sizeof why)) return sp_fail(SP_EX_USAGE, "onednn: %s", why); /* loads libdnnl */
    sp_bk *cpu;
    SP_TRY(sp_bk_cpu_open(&cpu));
    onednn_bk *b = NULL;
    one_ctx *o = NULL;
    int rc = sp_calloc((void **)&b, 1, (int64_t)sizeof *b, "onednn backend");
    if (!rc) rc = sp_calloc((void **)&o, 1, (int64_t)sizeof *o, "onednn backend");
    dnnl_status_t st = dnnl_success;
    if (!rc && (st = dn.dnnl_engine_create(&o->eng, dnnl_cpu, 0)) != dnnl_success)
        rc = sp_fail(SP_EX_SOFTWARE, "onednn backend: dnnl_engine_create failed: %s", dn.dnnl_status2str(st));
    if (rc) {
        free(b);
        free(o);
        sp_bk_close(cpu);
        return rc;
    }
    b->bk = *cpu;
    free(cpu); /* its table now lives in b; its ctx (the pool) is b->bk.ctx */
    b->one = o;
    sp_bk *bk = &b->bk;
    o->bf16 = bf16;
    o->slots = 1;
    o->cpu_release = bk->release;
    o->cpu_identity = bk->identity;
    o->cpu_set_threads = bk->set_threads;
    o->cpu_plan_bytes = bk->plan_bytes;
    o->cpu_ws_init = bk->ws_init;
    bk->name = "onednn";
    bk->precision = bf16 ? "bf16" : "fp32";
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    bk->process_bytes = ONE_PROCESS_BYTES + (ncpu < 1 ? 1 : ncpu < ONE_SLOTS_MAX ? ncpu : ONE_SLOTS_MAX) * ONE_SCRATCH_BYTES;
    bk->release = one_release;
    bk->identity = one_identity;
    bk->set_threads = one_set_threads;
    bk->sgemm = one_sgemm;
    bk->hold = one_hold;
    bk->plan_bytes = one_plan_bytes;
    bk->ws_init = one_ws_init;
    one_omp_single();
    *out = bk;
    return 0;
}

int sp_bk_onednn_open(sp_bk **out) { return open_at(0, out); }

int sp_bk_onednn_open_bf16(sp_bk **out) {
    *out = NULL;
    one_cpu c = cpu_features();
    char why[256];
    if (!c.avx512_bf16 && !c.amx_bf16)
        return sp_fail(SP_EX_USAGE, "onednn: this CPU has neither AVX512-BF16 nor AMX-BF16 (cpuid), so no bf16 matmul "
                                    "runs here at speed");
    if (!dn_load(why, sizeof why)) return sp_fail(SP_EX_USAGE, "onednn: %s", why);
    c.isa = dn.dnnl_get_effective_cpu_isa();
    if (!bf16_isa(&c))
        return sp_fail(SP_EX_USAGE, "onednn: this CPU has %s, but oneDNN dispatches to %s here, which lacks it "
                                    "(ONEDNN_MAX_CPU_ISA set?)", c.amx_bf16 ? "AMX-BF16" : "AVX512-BF16",
                       isa_name(c.isa));
    SP_TRY(open_at(1, out));
    /* Probe: oneDNN must make a bf16 matmul here (it reports unimplemented where it cannot). */
    one_prim probe;
    one_key k;
    memset(&k, 0, sizeof k);
    k.tb = 1;
    k.m = k.n = k.k = k.lda = k.ldb = k.ldc = 64;
    k.alpha = 1.0f;
    dnnl_status_t st = prim_make(one_of(*out), &k, &probe);
    if (st != dnnl_success) {
        sp_bk_close(*out);
        *out = NULL;
        return sp_fail(SP_EX_USAGE, "onednn: oneDNN %d.%d.%d has no bf16 matmul for %s here (%s)", dn.dnnl_version()->major,
                       dn.dnnl_version()->minor, dn.dnnl_version()->patch, isa_name(c.isa), dn.dnnl_status2str(st));
    }
    prim_free(&probe);
    return 0;
}

#endif /* SLICEPIPE_HAVE_ONEDNN */
