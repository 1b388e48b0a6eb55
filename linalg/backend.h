/* linalg/backend.h — the backend table: the one seam below the pipeline
 * (docs/pipeline.md §9, after ggml-backend's ggml_backend_i).
 *
 * Everything numeric that the pipeline does goes through one of these
 * functions. The table is op-level, not Llama-shaped: a layer's forward pass
 * is composed from these ops above the seam (pipeline/model/layer.c), driven by the
 * architecture table (pipeline/arch/arch.h). Nothing under pipeline/ includes
 * cblas, lapacke or a CUDA header.
 *
 * Memory. Every pointer an op takes is *backend memory*: allocated with
 * sp_bk->alloc and moved with to_dev / to_host. On the CPU backend backend
 * memory is host memory (host_shared = 1), alloc is malloc and the copies are
 * no-ops when source and destination are the same pointer. On a GPU backend
 * it is device memory. sp_bk_buf (below) pairs a host view with a backend
 * view so callers write the same code for both.
 *
 * Conventions (HF, docs/algorithm.md §1): row-major, a linear layer has W[out, in] and
 * computes y = x·Wᵀ; rows of X are tokens. Shapes are given in comments as
 * (rows, cols). Ops are synchronous from the caller's point of view: when an
 * op returns, its outputs may be read by the next op (a GPU backend orders
 * them on one stream; to_host waits for them).
 *
 * Bits. Every op is deterministic for fixed inputs, thread count and backend
 * settings. On the CPU backend the ops it parallelizes itself (norm, rope,
 * act, attention, nll, basis_f32, add, add_bias) give the same bits at any
 * thread count under every OpenBLAS kernel; the ops that run on OpenBLAS's
 * threads (sgemm, cov_add, eigh, rot_rows, rot_cols, basis_product) do not
 * under its Prescott, Haswell and Zen kernels, nor dsyevd under any
 * (measured: docs/determinism.md). So the thread count is part of a run's
 * identity: journaled by the first run and set again by every resume.
 * `identity` describes everything else about a backend instance that can
 * change the bits of a result (name, library, kernel); the run identity
 * hashes it, so a resume on another backend or another kernel is refused
 * instead of silently mixing results.
 *
 * Errors. Ops on our own invariants SP_ASSERT. Ops that can meet bad data
 * (non-finite activations, a failed eigensolver) return a sysexits status
 * with sp_fail's message.
 */
#ifndef SP_BACKEND_H
#define SP_BACKEND_H

#include <stdint.h>

/* Normalization over rows, always dividing by the ORIGINAL width D. */
enum sp_bk_norm {
    SP_BK_NORM_RMS,   /* x / sqrt(Σx²/D + eps) · γ                                */
    SP_BK_NORM_LAYER, /* (x − mean) / sqrt(Σ(x − mean)²/D + eps) · γ + β (d == D) */
};
/* Precision (CPU; a GPU backend matches it to rounding): the sums are float64,
 * inv = (float)(1/sqrt(ss/D + eps)), then in float32 RMS r·inv·γ and LayerNorm
 * (float)(r − mean)·inv·γ + β. β is NULL for RMS. */

/* Elementwise activations. The *_GLU kinds combine gate and up:
 * gate ← act(gate) ⊙ up. The plain kinds act on gate alone (up ignored). */
enum sp_bk_act {
    SP_BK_ACT_SILU_GLU,      /* silu(g)·u                          (Llama, Mistral, Qwen, Phi-3) */
    SP_BK_ACT_GELU_TANH_GLU, /* gelu_tanh(g)·u                     (Gemma) */
    SP_BK_ACT_GELU_GLU,      /* gelu_erf(g)·u */
    SP_BK_ACT_RELU,          /* max(g, 0)                          (OPT) */
    SP_BK_ACT_GELU_TANH,     /* gelu_tanh(g), "gelu_new"           (Phi-2) */
};

/* RoPE layout of the rotated dimensions inside a head. */
enum sp_bk_rope {
    SP_BK_ROPE_HALF,       /* HF rotate-half: pairs (i, i + rot/2) */
    SP_BK_ROPE_INTERLEAVE, /* pairs (2i, 2i + 1) (GGUF / Meta order) */
};

/* Rows or columns per float64 rotation block, and embedding/head rows
 * streamed at a time (the pipeline's, and bench/kernel_peaks'): 2^20 / D
 * within [256, 1024], so a block is at most 8 MiB up to D = 4096 and 16 MiB
 * at D = 8192 (256 rows from D = 4096 on). dgemm runs faster on more rows:
 * on the floor bench's machine Q[:, :d]ᵀ·W (D 1024) took 124 GFLOP/s at
 * 256 columns and 147.5 at 1024. Every row and column is computed alone,
 * so the block changes no bit. A run takes it where the extra bytes are at
 * most 1/32 of its budget, else 256 rows (pipeline/slice/plan.c). */
static inline int64_t sp_bk_rot_block(int64_t D) {
    int64_t b = ((int64_t)1 << 20) / (D > 0 ? D : 1);
    return b < 256 ? 256 : b > 1024 ? 1024 : b;
}

/* What plan_bytes is asked about: the backend's own workspaces for a job of
 * these sizes. The caller's buffers (activations, weights) are not included:
 * they are sized by their own modules and allocated with alloc. */
typedef struct sp_bk_plan_in {
    int64_t D;          /* width of the second moments and the eigensolver */
    int64_t cov_rows;   /* rows staged per second-moment update */
    int64_t rot_block;  /* rows or columns per float64 rotation block */
    int64_t T;          /* window length (attention) */
    int64_t n_heads;    /* query heads (attention score workspace) */
    int no_eigh;        /* no eigensolver workspace: second moments of width D only (an MLP's, F wide) */
    int64_t hold_bytes; /* float32 bytes of the B operands sgemm reads within one hold (below); 0: no hold */
} sp_bk_plan_in;

typedef struct sp_bk_plan {
    int64_t host_bytes;   /* host memory the backend allocates for itself */
    int64_t device_bytes; /* device memory (0 on the CPU backend) */
} sp_bk_plan;

typedef struct sp_bk_ws sp_bk_ws; /* a backend's workspace: opaque, sized once from sp_bk_plan_in */

typedef struct sp_bk {
    const char *name;      /* the registry's name: "cpu", "cuda" (or a test variant) */
    const char *precision; /* what the float32 ops compute in, named in identity: "fp32", "tf32" */
    int host_shared;       /* 1: backend memory is host memory (to_dev/to_host may alias) */
    int64_t process_bytes; /* resident bytes running it adds to a process beyond plan_bytes and alloc (its
                            * libraries, generated code, caches): the memory plan counts them for the
                            * supervisor and the compute stage. 0 for cpu */
    void *ctx;             /* the instance's own state (the CPU's thread pool; CUDA's context) */

    /* ---- lifecycle, threads, identity ---- */
    /* Frees the instance (sp_bk_close calls it): its ctx and the table. */
    void (*release)(struct sp_bk *bk);
    /* Sets the thread count: n if > 0, else the backend's default for width D
     * (CPU: all cores, 1 for D < 512). Returns the count in effect. */
    int (*set_threads)(const struct sp_bk *bk, int64_t n, int64_t D);
    /* Writes a NUL-terminated description of every setting that can change
     * bits (e.g. "cpu openblas 0.3.21 ... kernel=Haswell") into buf. The
     * thread count is not in it: the pipeline journals the count of the
     * first run and sets it again on every resume. */
    void (*identity)(const struct sp_bk *bk, char *buf, int64_t n);
    /* Workspace sized once for plan `in` (estimate-then-init: plan_bytes of
     * the same `in` is exactly what ws_init allocates). A field may be 0 when
     * its ops are not used (e.g. cov_rows for evaluation only). Sizes that
     * overflow, or that the backend cannot serve, plan INT64_MAX host bytes
     * (so the memory plan refuses them) and make ws_init fail with a message.
     * Ops then accept any D <= in->D, T <= in->T. */
    sp_bk_plan (*plan_bytes)(const struct sp_bk *bk, const sp_bk_plan_in *in);
    /* Device memory free now, for the memory plan. NULL (or -1) when the
     * backend's memory is host memory: the host plan covers it. */
    int64_t (*device_bytes_free)(const struct sp_bk *bk);
    int (*ws_init)(const struct sp_bk *bk, const sp_bk_plan_in *in, sp_bk_ws **out);
    void (*ws_free)(const struct sp_bk *bk, sp_bk_ws *ws);

    /* ---- buffers ---- */
    int (*alloc)(const struct sp_bk *bk, void **p, int64_t bytes, const char *what); /* 0 or 70 with a message */
    void (*free)(const struct sp_bk *bk, void *p);                                   /* accepts NULL */
    void (*to_dev)(const struct sp_bk *bk, void *dst, const void *src_host, int64_t bytes);
    void (*to_host)(const struct sp_bk *bk, void *dst_host, const void *src, int64_t bytes);
    void (*copy)(const struct sp_bk *bk, void *dst, const void *src, int64_t bytes); /* backend memory to backend memory */
    void (*zero)(const struct sp_bk *bk, void *p, int64_t bytes);

    /* Weights held: hold(bk, 1) promises that, until hold(bk, 0), no memory
     * that sgemm reads as its B operand is written. A backend may then keep
     * what it derives from each B (the onednn backend at bf16: the operand
     * rounded to bf16 once per hold instead of once per call), keyed by the
     * address and shape, within the hold_bytes its workspace was planned
     * for; hold(bk, 0) forgets it. The bits are the same with or without a
     * hold. NULL where a backend derives nothing. */
    void (*hold)(const struct sp_bk *bk, int on);

    /* ---- float32 ---- */
    /* C (m, n) = alpha·op(A)·op(B) + beta·C. op(A) is (m, k): A is (m, k) with
     * row stride lda, or (k, m) transposed when ta. Likewise B (k, n) / tb. */
    void (*sgemm)(const struct sp_bk *bk, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
    /* y (rows, n) += x (rows, n), both packed. */
    void (*add)(const struct sp_bk *bk, float *y, const float *x, int64_t rows, int64_t n);
    /* C (rows, cols) = alpha·A + beta·C, row strides lda and ldc: a strided
     * copy (alpha 1, beta 0: C is then not read) or difference (alpha −1,
     * beta 1). The refit's moments join blocks of columns with it. */
    void (*geadd)(const struct sp_bk *bk, int64_t rows, int64_t cols, float alpha, const float *A, int64_t lda, float beta,
                  float *C, int64_t ldc);
    /* y (rows, n) += b (n) on every row. */
    void (*add_bias)(const struct sp_bk *bk, float *y, const float *b, int64_t rows, int64_t n);
    /* In place over rows of x (rows, d), d <= D, dividing by D: see sp_bk_norm.
     * gamma (d) or NULL (weightless), beta (d) or NULL. */
    void (*norm)(const struct sp_bk *bk, enum sp_bk_norm kind, const float *gamma, const float *beta, int64_t d, int64_t D, double eps, float *x,
                 int64_t rows);
    /* RoPE in place on x (T, ld), heads of hd at columns h·hd, h < nh: the
     * first `rot` (even, <= hd) dimensions of each head rotate by position
     * t (row t); cos/sin (T, rot/2) are the tables for positions 0..T-1. */
    void (*rope)(const struct sp_bk *bk, enum sp_bk_rope kind, float *x, int64_t T, int64_t ld, int64_t nh, int64_t hd, int64_t rot,
                 const float *cos_t, const float *sin_t);
    /* Causal GQA attention: ctx (T, nh·hd) = softmax(scale·q·kᵀ + mask)·v per
     * query head h, reading kv head h / (nh/nkv). q (T, nh·hd), k and v
     * (T, nkv·hd). Query i sees key j iff 0 <= i − j < window (window <= 0:
     * no window, all j <= i). Uses the workspace's score buffer. */
    void (*attention)(const struct sp_bk *bk, sp_bk_ws *ws, const float *q, const float *k, const float *v, int64_t T, int64_t nh, int64_t nkv,
                      int64_t hd, float scale, int64_t window, float *ctx);
    /* The same attention for Tq new query rows against a KV cache: the rows
     * of q (Tq, nh·hd) are the LAST Tq positions, Tk − Tq .. Tk − 1, of a
     * sequence whose keys and values are k and v (Tk, nkv·hd), rows 0..Tk−1.
     * Query i (position p = Tk − Tq + i) sees key j iff 0 <= p − j < window
     * (window <= 0: all j <= p). ctx (Tq, nh·hd). 1 <= Tq <= Tk <= the
     * workspace's T. With Tq == Tk it is `attention` (the same operations:
     * the same bits on the CPU). */
    void (*attention_cached)(const struct sp_bk *bk, sp_bk_ws *ws, const float *q, int64_t Tq, const float *k, const float *v, int64_t Tk,
                             int64_t nh, int64_t nkv, int64_t hd, float scale, int64_t window, float *ctx);
    /* gate (n) ← act(gate) [⊙ up]; see sp_bk_act. */
    void (*act)(const struct sp_bk *bk, enum sp_bk_act kind, float *gate, const float *up, int64_t n);
    /* acc + Σ over rows t < T − 1 of −log softmax(logits[t])[targets[t + 1]],
     * added to acc in float64 one row at a time, in row order; logits (T, V),
     * whose row T − 1 is never read. targets are host memory, already
     * validated. Scoring a window of Tw tokens in row chunks gives the same
     * bits as one call when each call gets the previous result as acc: chunk
     * [r0, r0 + nr) is nll(lg, p + 1, V, tokens + r0, acc) with
     * p = min(nr, Tw − 1 − r0) predicting rows. */
    double (*nll)(const struct sp_bk *bk, const float *logits, int64_t T, int64_t V, const int32_t *targets, double acc);

    /* ---- float64: second moments, eigh, rotations ---- */
    /* H (D, D) float64, upper triangle: H += Xᵀ·X for X (rows, D) float32 with
     * row stride ld, in blocks of cov_rows rows. Precision: float64 throughout
     * (each block widened to float64, then dsyrk): every fp32×fp32 product is
     * exact in float64 and every sum is float64, so each entry is within
     * (n + 1)·2⁻⁵³·(Σ|xᵢxⱼ| + |H₀ᵢⱼ|) of the exact value after n rows added
     * to H₀ (docs/algorithm.md §3; a float32 block sum is not: outlier channels
     * swamp the small eigenvalues). The workspace stages cov_rows·D float64.
     * The bits depend on how rows are grouped into calls (blocks restart at
     * each call): callers feed whole windows. Returns 0, or 65 if X holds a
     * NaN/Inf (the message names the first in row order, row0 added to its
     * row; H is then unchanged from the failing block on). */
    int (*cov_add)(const struct sp_bk *bk, sp_bk_ws *ws, double *H, int64_t D, const float *X, int64_t rows, int64_t ld, int64_t row0);
    /* Q (D, D): eigenvectors of H + δI as COLUMNS (Q[i·D + j] = component i of
     * vector j), δ = damp·mean(diag H), sorted by descending eigenvalue, each
     * vector's sign set so its largest-|·| component (the first on ties) is
     * positive; evals (D) descending. H (upper triangle) is left unchanged.
     * Returns 0, 65 (non-finite H, zero mean diagonal, solver failure). */
    int (*eigh)(const struct sp_bk *bk, sp_bk_ws *ws, const double *H, int64_t D, double damp, double *Q, double *evals);
    /* Row rotation, in place: W (rows, D) float32 ← (W·diag γ)·Q[:, :k] as
     * (rows, k) packed float32, computed in float64 rot_block rows at a time.
     * Q (D, D) float64 row-major; gamma (D) or NULL. */
    void (*rot_rows)(const struct sp_bk *bk, sp_bk_ws *ws, float *W, int64_t rows, int64_t D, const float *gamma, const double *Q, int64_t k);
    /* Column rotation, in place: W (D, cols) float32 ← Q[:, :k]ᵀ·W as (k, cols)
     * float32 with row stride cols, in float64 rot_block columns at a time. */
    void (*rot_cols)(const struct sp_bk *bk, sp_bk_ws *ws, const double *Q, int64_t D, int64_t k, float *W, int64_t cols);
    /* C (a, b) float32 = (A[:, :a]ᵀ·B[:, :b]) computed in float64, A and B
     * (D, D) float64; scratch (a, b) float64. */
    void (*basis_product)(const struct sp_bk *bk, const double *A, int64_t a, const double *B, int64_t b, int64_t D, double *scratch, float *C);
    /* Qf (D, k) float32 = Q[:, :k]; Qt (k, D) float32 = Q[:, :k]ᵀ (either may be NULL). */
    void (*basis_f32)(const struct sp_bk *bk, const double *Q, int64_t D, int64_t k, float *Qf, float *Qt);
} sp_bk;

/* ---- the registry and instances (after ggml-backend's registry) ----
 *
 * Every compiled backend has one entry. Whatever needs a backend (manifest
 * parsing, --version, resolution, the tests) iterates this table: a new
 * backend is one entry here and its own file. `open` makes an instance: the
 * op table with its own ctx (the CPU's thread pool and thread count; the CUDA
 * backend's device context, which the CUDA runtime keeps per process), freed
 * by sp_bk_close. A process may hold several instances; OpenBLAS's thread
 * count is per process, so CPU instances set it as each op runs. */
/* [resources] precision: what a backend's GEMMs (sgemm) compute in. F32 is
 * every backend's; BF16 (bfloat16 operands, float32 accumulation and
 * output) only a backend with an open_bf16 entry. The other ops (norms,
 * softmax, residual adds, second moments, rotations) stay float32/float64. */
enum sp_bk_prec {
    SP_BK_PREC_F32 = 0,
    SP_BK_PREC_BF16 = 1,
};
const char *sp_bk_prec_name(enum sp_bk_prec p); /* "f32", "bf16", as the manifest names them */

typedef struct sp_bk_reg {
    const char *name;  /* as [resources] backend and --backend name it */
    const char *about; /* one line for --version */
    /* 1 when this machine can run it, else 0 with the reason in why. */
    int (*usable)(char *why, int64_t n);
    /* A new instance (0), or a sysexits status with sp_fail's message. */
    int (*open)(sp_bk **out);
    /* 1 when "auto" may take it here at precision p, else 0 with the reason
     * in why; auto asks it before usable (both must hold), so it should
     * decide cheaply where it can. NULL: whenever it is usable. */
    int (*for_auto)(enum sp_bk_prec p, char *why, int64_t n);
    /* A new instance computing its GEMMs in bf16 (0), or 64 with the reason
     * this machine cannot (sp_fail's message). NULL: float32 only. */
    int (*open_bf16)(sp_bk **out);
} sp_bk_reg;

int sp_bk_reg_count(void);
const sp_bk_reg *sp_bk_reg_at(int i);
const sp_bk_reg *sp_bk_reg_find(const char *name); /* NULL when none has that name */
/* Every name a user may give ("auto" and every backend slicepipe has, compiled
 * in or not: one this build lacks is refused when resolved, saying so), as
 * "auto, cpu, cuda or onednn" for messages; sp_bk_name_known tests one. */
const char *sp_bk_reg_names(void);
int sp_bk_name_known(const char *name);

/* The CPU backend's instance (linalg/cpu.c). Another CPU backend opens one
 * and overrides the ops it does better (sgemm, cov_add, the rotations),
 * keeping the thread pool and everything else. */
int sp_bk_cpu_open(sp_bk **out);
#ifdef SLICEPIPE_HAVE_CUDA
int sp_bk_cuda_open(sp_bk **out);
int sp_bk_cuda_usable(char *why, int64_t n);
#endif
#ifdef SLICEPIPE_HAVE_ONEDNN
/* The oneDNN backend (linalg/onednn.c): the CPU instance with sgemm on
 * oneDNN's matmul primitive. usable: an x86-64 CPU with AVX2 that oneDNN
 * dispatches to at least AVX2; for_auto: AMX-BF16 (any precision), or
 * AVX512-BF16 when bf16 is asked for (docs/determinism.md, "oneDNN"). */
int sp_bk_onednn_open(sp_bk **out);
int sp_bk_onednn_open_bf16(sp_bk **out);
int sp_bk_onednn_usable(char *why, int64_t n);
int sp_bk_onednn_for_auto(enum sp_bk_prec p, char *why, int64_t n);
#endif

/* Resolves a [resources] backend or --backend string and opens it: "auto"
 * (or NULL) → the first usable entry of the registry in preference order
 * that for_auto accepts (a CUDA device if one is usable, then onednn on an
 * AMX CPU, else cpu); a registry name (64 when not usable, with the reason).
 * Anything else: 64 naming the choices.
 * SLICEPIPE_STAGED_BACKEND=1 turns cpu into cpu-staged (below).
 * Returns 0 or a status with a message. */
int sp_bk_open(const char *requested, sp_bk **out);
/* sp_bk_open at a precision. F32 is sp_bk_open. BF16: "auto" takes the
 * first usable entry that for_auto accepts at bf16 and that opens at bf16;
 * a named backend must have open_bf16 and open at it. Otherwise 64 with the
 * reason (no bf16 GEMMs in that backend, or this CPU cannot run them). */
int sp_bk_open_prec(const char *requested, enum sp_bk_prec prec, sp_bk **out);
void sp_bk_close(sp_bk *bk); /* accepts NULL */
/* sp_bk_open for a command whose buffers are host memory (`who`: "eval",
 * "generate"): "auto" takes the first usable backend whose memory is host
 * memory (the CPU); a named backend that keeps its memory on a device is
 * refused (64, saying so). */
int sp_bk_open_host(const char *requested, const char *who, sp_bk **out);

/* A host view paired with a backend view of the same bytes. On a
 * host_shared backend dev == host. */
typedef struct sp_bk_buf {
    void *host;
    void *dev;
    int64_t bytes;
} sp_bk_buf;

/* Bytes sp_bk_buf_init allocates (host plus, unless host_shared, device). */
int64_t sp_bk_buf_bytes(const sp_bk *bk, int64_t bytes, int64_t *device_bytes);
int sp_bk_buf_init(const sp_bk *bk, sp_bk_buf *b, int64_t bytes, const char *what);
void sp_bk_buf_free(const sp_bk *bk, sp_bk_buf *b);
/* Copies [off, off + n) bytes host → backend / backend → host (no-ops when shared). */
void sp_bk_buf_to_dev(const sp_bk *bk, sp_bk_buf *b, int64_t off, int64_t n);
void sp_bk_buf_to_host(const sp_bk *bk, sp_bk_buf *b, int64_t off, int64_t n);
/* Mirrors: host memory and its backend-memory mirror `dev` (on a
 * host_shared backend the host memory itself, and nothing is copied). Every
 * host/device copy of the pipeline goes through these and sp_bk_buf:
 *   put  the bytes at src as backend memory: src itself when shared, else
 *        copied into dev; returns the backend pointer;
 *   out  where an op writes bytes the host needs: host when shared, else dev;
 *   get  the bytes an op wrote at out(dev, host) back at host (a no-op when
 *        shared). */
const void *sp_bk_put(const sp_bk *bk, void *dev, const void *src, int64_t bytes);
void *sp_bk_out(const sp_bk *bk, void *dev, void *host);
void sp_bk_get(const sp_bk *bk, void *host, const void *dev, int64_t bytes);
/* fetch: backend memory dev readable on the host: dev itself when shared,
 * else copied into host; returns the host pointer. */
const void *sp_bk_fetch(const sp_bk *bk, void *host, const void *dev, int64_t bytes);

#endif
