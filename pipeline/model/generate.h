/* pipeline/model/generate.h — incremental decoding with a KV cache, for
 * `slicepipe generate`: the same layer composition (pipeline/model/layer.c) and
 * backend ops as the full forward of eval, run on a block of new tokens at a
 * position offset against the cached keys and values of the earlier ones.
 * Works for every family of the architecture table, dense or sliced.
 *
 * State, sized once in sp_gen_init (sp_gen_bytes is the same sum):
 *     kv_k, kv_v  (n_layers, max_len, n_kv_heads·head_dim) float32 each: the
 *                 keys (after k-norm and RoPE) and values of positions
 *                 0..pos-1, layer by layer
 *     x, y, h     (max_len, D) float32: a block's residual stream
 *     emb         (vocab, d_embed)   the embedding (× the family's scale)
 *     pos_tab     (n_pos, d_embed)   learned positions (OPT), else none
 *     head        (vocab, d_final) + bias (vocab) + final norm γ, β (d_final)
 *     logits      (vocab)            the last position's logits
 *     layers      every layer's weights (resident), or one layer buffer that
 *                 is re-read from the checkpoint for each layer of each step
 *                 (streamed) when the resident weights would exceed the budget
 *     scratch     sp_layer_scratch for max_len rows (RoPE tables for
 *                 positions 0..max_len-1)
 * Nothing is allocated per step.
 *
 * Positions. A call feeds n tokens at positions pos..pos+n-1 (RoPE at those
 * positions, the learned position rows pos + offset, sliding windows by
 * position) and advances pos. The first call is the prompt ("prefill", one
 * block); later calls are usually one token each. The result equals the
 * full forward of the whole sequence up to float32 rounding (the attention
 * is blocked differently): tests/test_generate.py checks greedy tokens
 * against `slicepipe eval --dump-logits`.
 *
 * Sampling (sp_sampler_next). temperature 0: greedy, the lowest id among
 * the maximal logits. temperature T > 0: the candidates are every id in
 * ascending order, or with top_k = K > 0 the K ids of largest logit, ordered
 * by descending logit then ascending id (ties: the lower id first). Their weights are
 * w_i = exp((l_i − l_max)/T) in float64 (l_max the largest logit of all),
 * summed in that order into
 * cumulative sums c_i; one draw u = (splitmix64(state) >> 11) · 2^-53 in
 * [0, 1) (splitmix64 as in pipeline/model/calib.h, state starting at the seed and
 * advancing once per sampled token) picks the first candidate with
 * c_i > u · c_last. The same seed, model and prompt give the same tokens.
 */
#ifndef SP_GENERATE_H
#define SP_GENERATE_H

#include <stdint.h>

#include "backend.h"
#include "model.h"

typedef struct sp_gen sp_gen; /* opaque */

/* Bytes sp_gen_init allocates for sequences of up to max_len tokens, with
 * every layer resident (resident = 1) or one streamed layer buffer. */
int64_t sp_gen_bytes(const sp_model *m, const sp_bk *bk, int64_t max_len, int resident);

/* The plan of a generation, before anything is allocated: the state for
 * max_len tokens with streamed layers (the least it can be), plus
 * extra_bytes the caller holds beside it (ids, a logits dump), must fit the
 * memory this process may hold (sp_mem_limit_bytes), else 64 saying both. A
 * model without max_position_embeddings has no other bound on max_len. */
int sp_gen_check(const sp_model *m, const sp_bk *bk, int64_t max_len, int64_t extra_bytes);

/* The bytes of every layer's weights held at once (the resident choice). */
int64_t sp_gen_resident_layer_bytes(const sp_model *m);

/* Allocates the state for sequences of up to max_len tokens and loads the
 * embedding, the head and (when resident) every layer. bk must be a
 * host_shared backend (cpu). weights_budget: the resident layers must fit
 * it, else the layers are streamed (0: always resident). max_len beyond
 * the learned position table (OPT) is refused (64). */
int sp_gen_init(const sp_model *m, const sp_bk *bk, int64_t max_len, int64_t weights_budget, sp_gen **out);
void sp_gen_free(sp_gen *g); /* accepts NULL */

/* 1 when every layer is resident, 0 when streamed. */
int sp_gen_resident(const sp_gen *g);
/* Tokens fed so far (the next position). */
int64_t sp_gen_pos(const sp_gen *g);
int64_t sp_gen_max_len(const sp_gen *g);

/* Feeds ids[0..n) at positions pos..pos+n-1 (pos + n <= max_len, every id
 * < vocab: the caller validates them) and returns the logits (vocab) of the
 * last one in *logits (host memory, valid until the next call). 0, or a
 * status from reading a streamed layer (65/74), or 65 when the logits are
 * not finite. */
int sp_gen_feed(sp_gen *g, const int32_t *ids, int64_t n, const float **logits);

/* Forgets the sequence: the next feed starts at position 0. */
void sp_gen_reset(sp_gen *g);

/* ---- sampling (see the top) ---- */
typedef struct sp_sampler {
    double temperature; /* 0: greedy */
    int64_t top_k;      /* 0: every id */
    uint64_t state;     /* splitmix64 state; starts as the seed */
    int64_t V;
    void *cand;         /* (V) candidates: (logit, id) pairs */
    double *cum;        /* (V) cumulative weights */
} sp_sampler;

/* temperature >= 0 and finite, top_k >= 0 (else 64). */
int sp_sampler_init(sp_sampler *s, int64_t V, double temperature, int64_t top_k, uint64_t seed);
void sp_sampler_free(sp_sampler *s);
int32_t sp_sampler_next(sp_sampler *s, const float *logits);

#endif
