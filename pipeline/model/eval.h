/* pipeline/model/eval.h — perplexity over non-overlapping windows, layer by layer:
 * every window passes through layer l before layer l+1's weights are read, so
 * one layer's weights are in memory at a time. (docs/algorithm.md §11.)
 * The activations stream through two float32 spill files in chunks of whole
 * windows, so memory does not grow with the number of windows. */
#ifndef SP_EVAL_H
#define SP_EVAL_H

#include <stdint.h>

#include "model.h"
#include "npy.h"
#include "tokens.h"

#define SP_EVAL_CHUNK_BYTES_DEFAULT ((int64_t)64 << 20)

/* Reader statistics: per linear layer, Σ over the evaluated tokens of each
 * input column squared, the diagonal of its input's second moment (float64;
 * what --quant-weighting calib weights a block's rounding error by). Layer l's
 * arrays are indexed by input column. Not for parallel blocks (Phi-2). */
typedef struct sp_reader_stats {
    int64_t n_layers;
    double **attn_in;   /* [l] (d_in)  q, k, v: the normalized layer input */
    double **attn_ctx;  /* [l] (n_heads·head_dim)  o: the attention context */
    double **mlp_in;    /* [l] (d_mid)  gate, up: the normalized attention-block output */
    double **mlp_inner; /* [l] (ffn)  down: act(gate) ⊙ up */
    double *head_in;    /* (width)  the head: the final norm's output */
    int64_t tokens;     /* rows summed */
} sp_reader_stats;

/* Sized from m's widths; zeroed. 65 for a parallel block; 70 out of memory. */
int sp_reader_stats_init(const sp_model *m, sp_reader_stats *s);
void sp_reader_stats_free(sp_reader_stats *s); /* accepts a zeroed one */

typedef struct sp_eval_opts {
    int64_t seqlen;          /* T >= 2 */
    int64_t windows;         /* 0 = all full windows in the stream */
    sp_npy_out *dump_logits; /* NULL, or a '<f4' .npy begun with vocab columns (io/formats/npy.h):
                              * sp_eval appends the (windows*T, vocab) logits, the caller ends it */
    int progress;            /* per-layer progress on stderr */
    const char *spill_dir;   /* NULL: $TMPDIR or /tmp */
    int64_t chunk_bytes;     /* activation chunk budget; 0: SP_EVAL_CHUNK_BYTES_DEFAULT */
    const struct sp_bk *bk;  /* the backend, host_shared (sp_bk_open_host) */
    sp_reader_stats *stats;  /* NULL, or filled with every reader's input statistics
                              * (sp_reader_stats_init; the layers then run attention and
                              * MLP apart, the same arithmetic) */
} sp_eval_opts;

typedef struct sp_eval_result {
    double nll;              /* mean NLL in nats per predicted token */
    double ppl;              /* exp(nll) */
    int64_t tokens;          /* predicted tokens: windows * (T - 1) */
    int64_t windows;
    double seconds;
    double tokens_per_s;     /* windows*T / seconds */
    int64_t peak_rss_bytes;
} sp_eval_result;

int sp_eval(const sp_model *m, const sp_tokens *toks, const sp_eval_opts *o, sp_eval_result *r);

/* Everything sp_eval refuses before work (windows, seqlen against learned
 * positions, sizes that overflow), checked up front (a run checks its [eval]
 * before slicing); warns when a RoPE model's seqlen exceeds
 * max_position_embeddings (o->progress < 0: silent). */
int sp_eval_check(const sp_model *m, int64_t n_tokens, const sp_eval_opts *o);
/* The evaluation's memory: fixed buffers (one layer, the embedding or head,
 * scratch, logits if dumped) plus window_bytes per window of a chunk (the
 * chunk_bytes budget buys chunk_bytes / (T·D·12) windows). */
int64_t sp_eval_fixed_bytes(const struct sp_bk *bk, const sp_model *m, int64_t T, int64_t N, int dump);
int64_t sp_eval_window_bytes(const sp_model *m, int64_t T);

#endif
