/* pipeline/model/zeroshot.h — zero-shot multiple-choice scoring as
 * lm-eval-harness scores it (docs/algorithm.md §13), streamed layer by layer
 * like perplexity eval (eval.h).
 *
 * Requests. Each choice c of an item is one request (context,
 * continuation = target_delimiter + choice), tokenized as lm-eval's
 * loglikelihood does for a causal LM (no BOS/EOS: add_special_tokens=False):
 *   - an empty context: context ids = [BOS] (else EOS), continuation ids =
 *     encode(continuation);
 *   - else the context's trailing whitespace (Python's rstrip) moves to the
 *     front of the continuation, then context ids = encode(context) and
 *     continuation ids = encode(context + continuation)[len(context ids):].
 * The model reads (context ids + continuation ids)[-(L+1):][:-1], L the
 * model's context (max_position_embeddings or the learned positions; 2048
 * when config.json has neither; --max-length overrides), and the request's
 * log-likelihood is the float64 sum of log-softmax over its continuation
 * ids at the positions that predict them.
 *
 * Groups: the choices of an item that need no truncation share their
 * context's forward pass. A group's rows are its prefix P (the context ids)
 * then, per choice, the rows of its continuation ids but the last (the
 * last is predicted, never read); P's last row predicts every choice's
 * first id. Each layer runs P once into a KV cache (sp_layer_block_kv) and
 * each choice's rows at positions |P|.. against it. A choice that must be
 * truncated is a group of its own, P = the tokens before its continuation
 * in the truncated input.
 *
 * Memory: token ids of every request (int32) and, per layer, one layer's
 * weights, the embedding or head, KV for one sequence, and chunks of whole
 * groups (two chunk buffers, --memory) streamed through two float32 spill
 * files like eval.
 */
#ifndef SP_ZEROSHOT_H
#define SP_ZEROSHOT_H

#include <stdint.h>

#include "mctask.h"
#include "model.h"
#include "tokenizer.h"

#define SP_ZS_MAX_LENGTH_DEFAULT 2048

typedef struct sp_zs_plan {
    int64_t L;              /* the context a sequence may have */
    int64_t n_req, n_groups;
    int64_t seq_max;        /* the longest sequence any group runs (rows of P + a choice) */
    int64_t group_rows_max; /* the most rows of one group */
    int64_t rows;           /* rows of all groups */
    int32_t *ids;           /* (n_ids) prefixes and continuations */
    int64_t n_ids, ids_cap;
    /* per group (n_groups) */
    int64_t *g_pre_off, *g_pre_n; /* its prefix in ids */
    int64_t *g_row_off;           /* its first row among all rows */
    int64_t *g_req0, *g_nreq;     /* its requests: req g_req0 .. g_req0+g_nreq-1 */
    /* per request (n_req), in group order */
    int64_t *r_out;     /* where its log-likelihood goes in the caller's array */
    int64_t *r_off;     /* its continuation in ids */
    int64_t *r_n;       /* continuation ids (>= 1) */
    int64_t *r_row;     /* its rows' offset inside its group (after P) */
    int64_t req_cap, group_cap;
} sp_zs_plan;

/* Tokenizes every item of tasks[0..n_tasks) with tok. Each choice's
 * log-likelihood has a slot, numbered over all tasks in order, items in file
 * order, choices in order (sp_zs_slots of them): r_out. max_length 0: the
 * model's. A choice
 * with no continuation id, a context that tokenizes to nothing, a
 * continuation longer than L, or an id past the model's vocabulary: 65
 * naming the task file, its line and the choice. */
int sp_zs_plan_build(const sp_model *m, sp_tok *tok, sp_mctask *const *tasks, int n_tasks, int64_t max_length,
                     sp_zs_plan *p);
void sp_zs_plan_free(sp_zs_plan *p);
/* Slots over all tasks: Σ items' choices. */
int64_t sp_zs_slots(sp_mctask *const *tasks, int n_tasks);

typedef struct sp_zs_opts {
    int progress;           /* per-layer progress on stderr */
    const char *spill_dir;  /* NULL: $TMPDIR or /tmp */
    int64_t chunk_bytes;    /* activation chunk budget; 0: SP_EVAL_CHUNK_BYTES_DEFAULT */
    const struct sp_bk *bk; /* host_shared (sp_bk_open_host) */
} sp_zs_opts;

/* Scores every request: loglik[r_out[r]] = its log-likelihood. 0, or 65
 * (a non-finite log-likelihood, a bad layer), 73/74 (spills). */
int sp_zs_score(const sp_model *m, const sp_zs_plan *p, const sp_zs_opts *o, double *loglik);

/* One task's figures from its items' log-likelihoods (slots in file order):
 * acc = mean [argmax_c ll_c == gold], acc_norm = mean [argmax_c ll_c /
 * chars(choice_c) == gold] (the first maximum wins, as numpy's argmax), each
 * with the standard error of the mean, sample standard deviation / sqrt(n)
 * (NaN for n = 1). pred/pred_norm (n_items) may be NULL. */
typedef struct sp_zs_metrics {
    int64_t count;
    double acc, acc_stderr, acc_norm, acc_norm_stderr;
} sp_zs_metrics;
void sp_zs_task_metrics(const sp_mctask *t, const double *loglik, sp_zs_metrics *out, int64_t *pred, int64_t *pred_norm);

#endif
