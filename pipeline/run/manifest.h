/* pipeline/run/manifest.h — the run manifest (TOML subset).
 *
 * Schema (README "Manifest"):
 *   [model]        path = "..."                      (required) HF model dir
 *   [calibration]  tokens = "..."                    .npy token stream, or
 *                  text = "..."                      .txt/.jsonl(.gz) documents (pipeline/model/calib.h);
 *                                                    exactly one of tokens and text
 *                  seqlen = 2048                     int in [2, 2^20]
 *                  nsamples = 128                    int in [1, 2^24]
 *                  sampling = "first"                "first"|"random" (random needs text)
 *                  seed = 0                          int in [0, 2^63-1]; for "random"
 *   [slicing]      sparsity = 0.25                   float in [0,1)
 *                  round_to = 8                      int in [1, 65536]
 *                  basis = "per-layer"               "per-layer" (SliceGPT) | "global" (one basis: a stock model)
 *                  global_weighting = "trace"        "trace" | "raw": how basis = "global" weighs the positions
 *                  policy = "slicegpt"               "slicegpt" | "stock" (FFN pruning + refit, stock output)
 *                  params = 0.8                      float in (0,1]: parameters kept, instead of sparsity
 *                  split = 0                         stock: float in [0,1] (share of the cut from the residual width) or "auto"
 *                  split_holdout = N                 stock, split = "auto": calibration windows held back to choose
 *                  ffn_score = "energy"              stock: "energy" | "leverage"
 *                  ffn_ridge = 1e-4                  stock: float in (0,1]
 *                  refit = false                     slicegpt, per-layer: refit o_proj, down_proj to the dense model
 *                  refit_ridge = 1e-4                with refit: float in (0,1]
 *   [output]       path = "..."                      (required) != model path
 *                  dtype = "bf16"                    "f32"|"f16"|"bf16"; default: the model's
 *                  shard_bytes = "4GB"               size string or int; default 4GB
 *                  gguf = "none"                     "none"|"f32"|"f16"|"bf16"|"q8_0"|"q5_1"|"q5_0"|"q4_1"|"q4_0":
 *                                                    also write model.gguf
 *                  gguf_weighting = "plain"          "plain"|"calib" (pipeline/publish/export.h)
 *   [resources]    memory = "16GB"                   size string or int; default 16GB
 *                  threads = 0                       int in [0, 4096]; 0 = all cores
 *                  spill_dir = "..."                 optional; default <output>/.slicepipe
 *                  spill_dtype = "f32"               "f32"|"bf16"
 *                  backend = "auto"                  "auto"|"cpu"|"cuda"|"onednn"
 *                  precision = "f32"                 "f32"|"bf16": what the GEMMs compute in (bf16: the
 *                                                    onednn backend on AVX512-BF16/AMX; linalg/backend.h)
 *                  activations = "auto"              "auto"|"memory"|"disk": where the calibration activations
 *                                                    live between passes (auto: in memory when the plan fits
 *                                                    [resources] memory with them; the spill files are
 *                                                    written at every layer boundary either way)
 *   [eval]         tokens = "..."                    optional table; if present, exactly one
 *                  text = "..."                      of tokens and text
 *                  seqlen = 2048                     int in [2, 2^20]; default: calibration seqlen
 *                  windows = 0                       int >= 0; 0 = all
 * Relative paths are resolved against the manifest's own folder.
 * Any error (syntax, unknown table or key, wrong type, out of range, missing
 * required key, duplicate key, tokens and text both given, sampling =
 * "random" with tokens, output path == model path) returns SP_EX_USAGE
 * (64) with a message "<manifest>:<line>: <reason>".
 */
#ifndef SP_MANIFEST_H
#define SP_MANIFEST_H

#include <stdint.h>

#include "dtype.h"

/* How calibration windows are cut from [calibration] text (pipeline/model/calib.h). */
typedef enum sp_calib_sampling {
    SP_CALIB_SAMPLING_FIRST = 0,  /* the first nsamples non-overlapping windows */
    SP_CALIB_SAMPLING_RANDOM = 1, /* nsamples window starts drawn from seed */
} sp_calib_sampling;

/* [slicing] basis: SliceGPT's basis per residual position, or one basis for
 * the whole residual stream (every shortcut the identity: a stock model at
 * width d, docs/algorithm.md §10). */
typedef enum sp_basis { SP_BASIS_PER_LAYER = 0, SP_BASIS_GLOBAL = 1 } sp_basis;
/* How basis = "global" sums the positions' second moments: each divided by
 * its trace (every position counts alike), or raw sums. */
typedef enum sp_global_weighting { SP_WEIGHT_TRACE = 0, SP_WEIGHT_RAW = 1 } sp_global_weighting;

/* [slicing] policy: SliceGPT (exact, basis per-layer or global), or the
 * stock-architecture policy (FFN neurons pruned with a least-squares refit,
 * and a global basis when split > 0; docs/algorithm.md §12). */
typedef enum sp_policy_kind { SP_POLICY_SLICEGPT = 0, SP_POLICY_STOCK = 1 } sp_policy_kind;
/* How the stock policy ranks FFN neurons (docs/algorithm.md §12). */
typedef enum sp_ffn_score { SP_SCORE_ENERGY = 0, SP_SCORE_LEVERAGE = 1 } sp_ffn_score;

/* split = "auto": the candidates, and what their held-back windows measured. */
#define SP_SPLIT_CANDIDATES 3
extern const double sp_split_candidates[SP_SPLIT_CANDIDATES]; /* 0, 0.5, 1 */
typedef struct sp_split_choice {
    int64_t holdout;                       /* windows scored, each of [calibration] seqlen tokens */
    double dense_nll;                      /* the dense model on them */
    double nll[SP_SPLIT_CANDIDATES];       /* each candidate on them (mean nats per predicted token) */
    int64_t params[SP_SPLIT_CANDIDATES];   /* each candidate's stored parameters */
    int chosen;                            /* the lowest nll; ties to the lower split */
} sp_split_choice;
/* The record config.json's slicepipe block and slicing.json both carry, as a
 * new cJSON object (NULL out of memory): {"holdout_windows", "nll_dense",
 * "chosen", "candidates": [{"split", "nll" (null: cannot meet the target),
 * "params"}]} (pipeline/run/split_auto.c). */
struct cJSON *sp_split_choice_json(const sp_split_choice *ch);

typedef struct sp_manifest {
    char *path;             /* the manifest file itself */
    char *model_path;       /* absolute or manifest-relative, resolved */
    char *calib_tokens;     /* exactly one of calib_tokens and calib_text is set */
    char *calib_text;
    sp_calib_sampling calib_sampling; /* default FIRST */
    int64_t calib_seed;     /* default 0 */
    int64_t calib_seqlen;   /* default 2048 */
    int64_t calib_nsamples; /* default 128 */
    double sparsity;        /* default 0.25 */
    int64_t round_to;       /* default 8 */
    sp_basis basis;         /* default SP_BASIS_PER_LAYER */
    sp_global_weighting global_weighting; /* default SP_WEIGHT_TRACE */
    sp_policy_kind policy;  /* default SP_POLICY_SLICEGPT */
    int has_params;         /* [slicing] params given (then sparsity is not) */
    double params;          /* (0, 1]: the fraction of the dense model's stored parameters to keep */
    double split;           /* stock: [0, 1] the share of the removed parameters taken from the residual width */
    int split_auto;         /* stock: split = "auto": chosen among SP_SPLIT_CANDIDATES on held-back calibration windows
                               (pipeline/run/split_auto.c; docs/algorithm.md §12) */
    int64_t split_holdout;  /* with split_auto: the last split_holdout of the nsamples calibration windows, held back
                               from the candidates' PCA and scored; default nsamples / 4, at least 1 */
    const struct sp_split_choice *split_choice; /* the final job of an auto split: what was measured (else NULL) */
    sp_ffn_score ffn_score; /* stock: default SP_SCORE_ENERGY */
    double ffn_ridge;       /* stock: (0, 1], default 1e-4: λ = ffn_ridge · mean(diag C) */
    int refit;              /* slicegpt, per-layer basis: o_proj and down_proj refit by least squares to the dense
                               model's signals (docs/algorithm.md §14); default 0 */
    double refit_ridge;     /* with refit: (0, 1], default 1e-4: λ = refit_ridge · mean(diag of the inputs' moment) */
    char *output_path;
    sp_dtype output_dtype;  /* SP_DTYPE_INVALID = the model's dtype */
    int64_t shard_bytes;    /* default 4e9 */
    int gguf_type;          /* [output] gguf: -1 none (default), else the sp_gguf_ttype of the GGUF's 2-D weights */
    int gguf_weighting;     /* [output] gguf_weighting: sp_export_weighting, "plain" (default) or "calib" (a
                               block type and [calibration] tokens: the first nsamples windows of seqlen) */
    int64_t memory_bytes;   /* default 16e9 */
    int64_t threads;        /* default 0 */
    char *spill_dir;        /* NULL = default: <output>/.slicepipe */
    sp_dtype spill_dtype;   /* F32 (default) or BF16 */
    char *backend;          /* "auto" default */
    int precision;          /* enum sp_bk_prec (linalg/backend.h): SP_BK_PREC_F32 (default, 0) or SP_BK_PREC_BF16 */
    int activations;        /* enum sp_activations: SP_ACT_AUTO (default, 0), SP_ACT_MEMORY or SP_ACT_DISK */
    int has_eval;
    char *eval_tokens;      /* with has_eval, exactly one of eval_tokens and eval_text */
    char *eval_text;
    int64_t eval_seqlen;    /* default calib_seqlen */
    int64_t eval_windows;   /* 0 = all */
} sp_manifest;

/* [resources] activations (docs/pipeline.md §5): the spills held in memory
 * (io/base/spill.h, resident) or streamed from disk. */
enum sp_activations { SP_ACT_AUTO = 0, SP_ACT_MEMORY = 1, SP_ACT_DISK = 2 };

/* Parses and validates. Returns 0 or SP_EX_USAGE (64) / SP_EX_NOINPUT (66,
 * manifest file missing) / SP_EX_IOERR (74, read error). On failure *m is
 * zeroed (sp_manifest_free on it is a no-op). Relative paths become absolute:
 * the manifest's canonical folder + "/" + the path as written. The TOML
 * subset accepted is listed at the top of manifest.c. */
int sp_manifest_load(const char *path, sp_manifest *m);
void sp_manifest_free(sp_manifest *m);

/* "16GB", "768MB", "4GiB", "1000" -> bytes. Decimal units (KB, MB, GB, TB =
 * 1e3..1e12), binary units (KiB..TiB), or B; unit letters are case-insensitive
 * and may follow spaces ("10 MB"). The number is a non-negative integer (no
 * sign, no fraction); "0" gives 0. Returns 0 or -1 if malformed or the result
 * overflows int64. */
int sp_parse_size(const char *s, int64_t *out);

#endif
