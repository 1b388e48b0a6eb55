/* io/config.h — config.json of the HF Llama family (and of slicepipe's own
 * sliced outputs, which add a "slicepipe" block). */
#ifndef SP_CONFIG_H
#define SP_CONFIG_H

#include <stdint.h>

#include "dtype.h"

#define SP_MAX_LAYERS 1024

struct sp_arch;

typedef struct sp_config {
    const struct sp_arch *arch; /* the family's table (pipeline/arch.h), from model_type */
    int64_t hidden_size;        /* D, the original width */
    int64_t intermediate_size;
    int64_t n_layers;
    int64_t n_heads, n_kv_heads, head_dim;
    int64_t vocab_size;
    double rms_norm_eps;
    double rope_theta;
    int tie_word_embeddings;
    sp_dtype torch_dtype;       /* F32, F16 or BF16 */
    /* rope_scaling "llama3" (Llama-3.1); rope_llama3 == 0 means none */
    int rope_llama3;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_pos;
    /* Present in slicepipe outputs: the model is sliced, norms are weightless
     * (fused) and divide by hidden_size; per-layer widths. */
    int sliced;
    int64_t d_embed;            /* width of the embedding output */
    int64_t *d_in, *d_mid, *d_out; /* (n_layers) each, or NULL when !sliced */
    double sparsity;
    char *raw_json;             /* the file's text, for copying into outputs */
} sp_config;

/* Parses DIR/config.json (missing: 66). Required: hidden_size (<= 65536),
 * intermediate_size (<= 1e6), num_hidden_layers (<= SP_MAX_LAYERS),
 * num_attention_heads (<= 1024), vocab_size (<= 4e6). Defaults:
 * num_key_value_heads = n_heads (must divide it), head_dim = hidden_size /
 * n_heads (must divide when absent; always even), rms_norm_eps 1e-6,
 * rope_theta 10000, tie_word_embeddings false, torch_dtype (or "dtype")
 * float32; null counts as absent. model_type (absent: llama) must name a
 * family of the architecture table (pipeline/arch.h);
 * rope_scaling must be null, "default" or "llama3" (with factor,
 * low_freq_factor < high_freq_factor, original_max_position_embeddings).
 * Duplicate keys, wrong types, non-integral or out-of-range values, an
 * inconsistent "slicepipe" block: 65 "<dir>/config.json: field 'x': reason".
 * On failure *cfg is zeroed. */
int sp_config_load(const char *dir, sp_config *cfg);
void sp_config_free(sp_config *cfg);

#endif
