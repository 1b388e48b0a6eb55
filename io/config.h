/* io/config.h — config.json of the HF Llama family (and of slicepipe's own
 * sliced outputs, which add a "slicepipe" block). */
#ifndef SP_CONFIG_H
#define SP_CONFIG_H

#include <stdint.h>

#include "dtype.h"

#define SP_MAX_LAYERS 1024

typedef struct sp_config {
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

/* Parses DIR/config.json. Unknown rope_scaling type, missing or absurd fields,
 * head_dim * n_heads inconsistent, etc.: 65 naming the file and the field. */
int sp_config_load(const char *dir, sp_config *cfg);
void sp_config_free(sp_config *cfg);

#endif
