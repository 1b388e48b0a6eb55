/* pipeline/arch/config.h — config.json of the HF Llama family (and of slicepipe's own
 * sliced outputs, which add a "slicepipe" block). */
#ifndef SP_CONFIG_H
#define SP_CONFIG_H

#include <stdint.h>

#include "dtype.h"

#define SP_MAX_LAYERS 1024

/* model_type of slicepipe's per-layer sliced outputs; the family is in
 * slicepipe.base_model_type. */
#define SP_SLICED_MODEL_TYPE "slicepipe_sliced"

struct sp_arch;
struct cJSON;

typedef struct sp_config {
    const struct sp_arch *family; /* the family's table (pipeline/arch/arch.h), from model_type */
    struct sp_arch *arch;         /* this model's instance of it (optional tensors resolved); owned */
    int64_t hidden_size;        /* D, the original width */
    int64_t intermediate_size;
    int64_t n_layers;
    int64_t n_heads, n_kv_heads, head_dim;
    int64_t vocab_size;
    double rms_norm_eps;        /* the norm's eps (rms_norm_eps, layer_norm_eps or the family's default) */
    int act;                    /* enum sp_bk_act the MLP runs (from hidden_act or its family's key) */
    int64_t sliding_window;     /* 0: none; else query i sees key j iff 0 <= i - j < window */
    int64_t rot_dim;            /* RoPE dimensions per head (partial_rotary_factor · head_dim; else head_dim) */
    int attention_bias, mlp_bias; /* the Llama-style bias switches */
    int64_t max_pos;            /* max_position_embeddings (0: absent) */
    double rope_linear;         /* rope_scaling "linear": positions divided by this factor; 0: none */
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
 * family of the architecture table (pipeline/arch/arch.h);
 * rope_scaling must be null, "default" or "llama3" (with factor,
 * low_freq_factor < high_freq_factor, original_max_position_embeddings).
 * Duplicate keys, wrong types, non-integral or out-of-range values, an
 * inconsistent "slicepipe" block: 65 "<dir>/config.json: field 'x': reason".
 * config.json follows the model folder's link rule (modelfile.h): 65.
 * On failure *cfg is zeroed. */
int sp_config_load(const char *dir, sp_config *cfg);
void sp_config_free(sp_config *cfg);

/* For the families' own keys (pipeline/arch/arch_*.c): as config.c reads every
 * field. get_int: an integral number in [lo, hi] (def when absent and not
 * required); get_num: finite, in [lo, hi] (lo excluded when lo_open);
 * get_bool: true/false (def when absent or null); get_str: NULL when absent. */
int sp_cfg_int(const char *path, const struct cJSON *obj, const char *name, int required, int64_t def, int64_t lo, int64_t hi,
               int64_t *out);
int sp_cfg_num(const char *path, const struct cJSON *obj, const char *name, int required, double def, double lo, int lo_open,
               double hi, double *out);
int sp_cfg_bool(const char *path, const struct cJSON *obj, const char *name, int def, int *out);
int sp_cfg_str(const char *path, const struct cJSON *obj, const char *name, const char **out);

#endif
