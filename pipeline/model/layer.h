/* pipeline/model/layer.h — one transformer layer's forward pass and the head,
 * composed from the backend table's ops (linalg/backend.h) as the
 * architecture table says (arch.h: norm kind, activation, RoPE layout). The
 * same code runs dense and sliced layers, over one window of T tokens (RoPE
 * positions 0..T-1).
 *
 * A sliced layer (docs/algorithm.md §7):
 *     h = x·S_attn + Attn(N(x))          x: (T, d_in), h: (T, d_mid)
 *     y = h·S_mlp  + MLP(N(h))           y: (T, d_out)
 * A dense layer has S = NULL (identity, d_in == d_mid == d_out == D) and norm
 * weights γ. The norm N always divides by the ORIGINAL width D. All matrices
 * are row-major, HF layout W[out, in], y = x·Wᵀ. Every pointer is backend
 * memory (backend.h).
 */
#ifndef SP_LAYER_H
#define SP_LAYER_H

#include <stdint.h>

#include "arch.h"
#include "backend.h"

typedef struct sp_dims {
    int64_t D;         /* original hidden width: the norm's denominator */
    int64_t n_heads, n_kv_heads, head_dim;
    int64_t ffn;       /* intermediate size */
    int64_t vocab;
    double eps;
    double rope_theta;
    int rope_llama3;   /* Llama-3.1 frequency scaling, see sp_config */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_pos;
    double rope_linear;  /* "linear" rope_scaling factor; 0: none */
    int64_t rot_dim;     /* rotary dimensions per head (<= head_dim, even) */
    int64_t window;      /* sliding window; 0: none */
    enum sp_bk_act act;  /* what the MLP runs */
} sp_dims;

/* The weights of one layer as a pass runs it. */
typedef struct sp_layer_w {
    int64_t d_in, d_mid, d_out;       /* a parallel block has no d_mid (== d_out) */
    enum sp_bk_norm norm;             /* the family's (dense), or RMS (fused and sliced: weightless over D) */
    const float *slot[SP_SLOT_COUNT];    /* by arch slot, shapes as the table's at these widths;
                                          * a norm NULL: weightless (fused) */
    const float *shortcut[SP_POS_COUNT]; /* [MID] (d_in, d_mid), [OUT] (d_mid, d_out); NULL: identity */
    int64_t ffn;                      /* MLP neurons the slots hold; 0: dims.ffn (a pruned MLP has fewer) */
} sp_layer_w;

typedef struct sp_layer_scratch sp_layer_scratch; /* opaque; sized once, reused */

/* Bytes sp_layer_scratch_init allocates (host, and backend memory in
 * *device_bytes) for windows of up to T tokens and widths up to width_max
 * (>= D for the PCA passes, where d_mid == D). */
int64_t sp_layer_scratch_bytes(const sp_bk *bk, const sp_dims *dims, int64_t T, int64_t width_max, int64_t *device_bytes);
int sp_layer_scratch_init(const sp_bk *bk, const sp_arch *arch, const sp_dims *dims, int64_t T, int64_t width_max,
                          sp_layer_scratch **out);
void sp_layer_scratch_free(sp_layer_scratch *s);

/* Passes over several windows at once. A scratch made by
 * sp_layer_scratch_init_n takes passes of up to nwin windows of T rows each
 * (sp_layer_attn_n, sp_layer_parallel_n; sp_layer_mlp and
 * sp_layer_mlp_inner take up to nwin·T rows): the linear layers run over
 * all the rows in one GEMM each, RoPE and attention window by window.
 * sp_layer_group gives a job's windows per pass from its shapes alone
 * (never from the memory budget, so the bits of a product do not depend on
 * it): about 1024 rows, fewer where the group's extra scratch would exceed
 * 32 MiB, at most W (the job's windows); 1 from T >= 1024. */
int64_t sp_layer_group(const sp_dims *dims, int64_t T, int64_t width_max, int64_t W);
/* Rows per MLP chunk of a pass of up to `rows` rows: 1024, halved while the
 * gate and up chunks would exceed 32 MiB, at least 256 (by the MLP's width
 * alone), and at most `rows`. */
int64_t sp_layer_mlp_rows(const sp_dims *dims, int64_t rows);
int64_t sp_layer_scratch_bytes_n(const sp_bk *bk, const sp_dims *dims, int64_t T, int64_t nwin, int64_t width_max,
                                 int64_t *device_bytes);
int sp_layer_scratch_init_n(const sp_bk *bk, const sp_arch *arch, const sp_dims *dims, int64_t T, int64_t nwin,
                            int64_t width_max, sp_layer_scratch **out);
/* sp_layer_attn and sp_layer_parallel over nwin windows x (nwin·T, d_in),
 * each its own sequence at positions 0..T-1. */
void sp_layer_attn_n(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t nwin, int64_t T, float *h);
void sp_layer_parallel_n(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t nwin, int64_t T, float *y);

/* h (T, d_mid) = x·S_attn + Attn(N(x))·Woᵀ + b_o, x (T, d_in). h must not alias x.
 * Attention: q, k, v (fused or not, with their biases), per-head q/k norms,
 * RoPE on the first rot_dim dimensions of each head (none with learned
 * positions), causal GQA with the optional window. */
void sp_layer_attn(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t T, float *h);
/* y (T, d_out) = h·S_mlp + MLP(N(h)): gated (act(x·Wgᵀ + b_g) ⊙ (x·Wuᵀ + b_u),
 * gate;up fused or not) or plain (act(x·W1ᵀ + b_1)), then ·Wdᵀ + b_d. y must
 * not alias h. */
void sp_layer_mlp(sp_layer_scratch *s, const sp_layer_w *w, const float *h, int64_t T, float *y);
/* z (T, ffn) = the MLP's intermediate act(N(h)·Wgᵀ + b_g) ⊙ (N(h)·Wuᵀ + b_u)
 * (plain MLPs: act(N(h)·W1ᵀ + b_1)): what sp_layer_mlp multiplies by Wdᵀ.
 * A parallel block's MLP reads its input x (T, d_in) through the block's one
 * norm: h is then x. */
void sp_layer_mlp_inner(sp_layer_scratch *s, const sp_layer_w *w, const float *h, int64_t T, float *z);
/* A parallel block (Phi-2): y (T, d_out) = x·S + Attn(N(x)) + MLP(N(x)), both
 * on the same normalized input; the shortcut is shortcut[OUT] (d_in, d_out). */
void sp_layer_parallel(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t T, float *y);
/* After sp_layer_attn, sp_layer_mlp_inner or sp_layer_head_nll, on a
 * host-shared backend: the pass's normalized input, the input of q/k/v,
 * gate/up or the head, (T, width); and after sp_layer_attn its attention
 * context, the input of o, (T, n_heads·head_dim). Valid until the next pass
 * (reader statistics: pipeline/model/eval.h). */
const float *sp_layer_scratch_xn(const sp_layer_scratch *s);
const float *sp_layer_scratch_ctx(const sp_layer_scratch *s);
/* The whole block for this family: attention then MLP through h (T, d_mid),
 * or the parallel block. */
void sp_layer_block(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t T, float *h, float *y);

/* ---- incremental decoding (pipeline/model/generate.c) ----
 * One layer's KV cache: k and v (T_max, n_kv_heads·head_dim) backend
 * memory; row p holds the key (after the k-norm and RoPE) and the value of
 * position p. */
typedef struct sp_layer_kv {
    float *k, *v;
} sp_layer_kv;

/* sp_layer_block for T new rows x (T, d_in) at positions pos0..pos0+T-1 of a
 * sequence whose earlier positions' keys and values are rows 0..pos0-1 of
 * kv: RoPE at the rows' positions (tables up to the scratch's T), the new
 * keys and values written into rows pos0..pos0+T-1 of kv, then the T queries
 * attend to rows 0..pos0+T-1 (causal by position, the optional window
 * counted in positions) through the backend's attention_cached. Requires
 * pos0 >= 0 and pos0 + T <= the scratch's T. The full-window functions above
 * are unchanged by it; with pos0 = 0 it computes what sp_layer_block
 * computes, up to the rounding of the attention's blocking. */
void sp_layer_block_kv(sp_layer_scratch *s, const sp_layer_w *w, const float *x, int64_t T, int64_t pos0,
                       const sp_layer_kv *kv, float *h, float *y);

/* N(x)·γ (+ β) then logits = ·W_headᵀ (+ b_head); returns the SUM (float64) of the
 * NLL of tokens[1..T-1] predicted at positions 0..T-2 (log-softmax). x (T, d),
 * norm (d) or NULL, w_head (vocab, d), tokens host memory. If logits_out !=
 * NULL (backend memory), writes all T rows of logits (T, vocab) there.
 * norm_b, b_head may be NULL. */
double sp_layer_head_nll(sp_layer_scratch *s, enum sp_bk_norm kind, const float *norm, const float *norm_b,
                         const float *w_head, const float *b_head, int64_t d, const float *x, const int32_t *tokens, int64_t T,
                         float *logits_out);

#endif
