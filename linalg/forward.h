/* linalg/forward.h — the float32 CPU forward pass of one Llama layer, over one
 * window of T tokens (RoPE positions 0..T-1), with OpenBLAS.
 *
 * The same code runs dense and sliced layers. A sliced layer (DESIGN.md §1):
 *     h = x·S_attn + Attn(RMSN(x))          x: (T, d_in), h: (T, d_mid)
 *     y = h·S_mlp  + MLP(RMSN(h))           y: (T, d_out)
 * A dense layer has S = NULL (identity, d_in == d_mid == d_out == D) and
 * norm weights γ. RMSN always divides by the ORIGINAL width D:
 *     RMSN(x) = x / sqrt(sum(x²)/D + eps)   (then · γ when γ != NULL)
 * All matrices are row-major, HF layout W[out, in], y = x·Wᵀ.
 */
#ifndef SP_FORWARD_H
#define SP_FORWARD_H

#include <stdint.h>

typedef struct sp_dims {
    int64_t D;         /* original hidden width: the RMSN denominator */
    int64_t n_heads, n_kv_heads, head_dim;
    int64_t ffn;       /* intermediate size */
    int64_t vocab;
    double eps;
    double rope_theta;
    int rope_llama3;   /* Llama-3.1 frequency scaling, see sp_config */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_pos;
} sp_dims;

typedef struct sp_layer_w {
    int64_t d_in, d_mid, d_out;
    const float *attn_norm;     /* (d_in) γ, or NULL: weightless (fused) */
    const float *wq;            /* (n_heads*head_dim, d_in) */
    const float *wk;            /* (n_kv_heads*head_dim, d_in) */
    const float *wv;            /* (n_kv_heads*head_dim, d_in) */
    const float *wo;            /* (d_mid, n_heads*head_dim) */
    const float *attn_shortcut; /* (d_in, d_mid), or NULL: identity (d_in == d_mid) */
    const float *mlp_norm;      /* (d_mid) γ, or NULL */
    const float *w_gate;        /* (ffn, d_mid) */
    const float *w_up;          /* (ffn, d_mid) */
    const float *w_down;        /* (d_out, ffn) */
    const float *mlp_shortcut;  /* (d_mid, d_out), or NULL: identity */
} sp_layer_w;

typedef struct sp_fwd_scratch sp_fwd_scratch; /* opaque; sized once, reused */

/* Scratch for windows of up to T tokens, layer widths up to width_max (>= D
 * for the PCA pass where d_mid == D), and vocab for the head.
 * Returns 0 or an allocation status. */
int sp_fwd_scratch_init(const sp_dims *dims, int64_t T, int64_t width_max, sp_fwd_scratch **out);
void sp_fwd_scratch_free(sp_fwd_scratch *s);

/* h (T, d_mid) = x·S_attn + Attn(RMSN(x))·Woᵀ, x (T, d_in). h must not alias x. */
void sp_fwd_attn(const sp_dims *dims, const sp_layer_w *w, const float *x, int64_t T, float *h, sp_fwd_scratch *s);
/* y (T, d_out) = h·S_mlp + MLP(RMSN(h)), MLP(u) = (silu(u·Wgᵀ) ⊙ u·Wuᵀ)·Wdᵀ.
 * y must not alias h. */
void sp_fwd_mlp(const sp_dims *dims, const sp_layer_w *w, const float *h, int64_t T, float *y, sp_fwd_scratch *s);

/* RMSN(x)·γ then logits = ·W_headᵀ; returns the SUM (float64) of the NLL of
 * tokens[1..T-1] predicted at positions 0..T-2 (log-softmax). x (T, d),
 * norm (d) or NULL, w_head (vocab, d). If logits_out != NULL, writes all T rows
 * of logits (T, vocab). */
double sp_fwd_head_nll(const sp_dims *dims, const float *norm, const float *w_head, int64_t d, const float *x,
                       const int32_t *tokens, int64_t T, float *logits_out, sp_fwd_scratch *s);

/* In-place RMSN over rows: x (T, d) /= sqrt(sum(x²)/D + eps), then ·γ if γ. */
void sp_rmsn(const float *gamma, int64_t d, int64_t D, double eps, float *x, int64_t T);

#endif
