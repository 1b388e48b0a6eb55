/* pipeline/arch/arch_opt.c — OPT (HF OPTForCausalLM, pre-LayerNorm variants):
 * LayerNorm with β before each block, learned positions (row p + 2 for
 * position p) added to the token embedding, biases everywhere, ReLU fc1/fc2,
 * a tied head. The LayerNorm recipe (docs/algorithm.md §4): γ into the readers'
 * columns, β into their biases, both embedding tables and every writer's
 * output centred, then LayerNorm ≡ RMSN over the original width.
 * Refused: opt-350m's project_in/project_out (word_embed_proj_dim ≠
 * hidden_size) and post-LayerNorm (do_layer_norm_before false). */
#include "arch_llama_table.h"
#include "error.h"

#define R SP_ROLE_READER
#define W SP_ROLE_WRITER
#define B SP_ROLE_BIAS
#define N SP_ROLE_NORM
#define NB SP_ROLE_NORM_BIAS
#define A SP_COND_ALWAYS

static const sp_arch_tensor opt_layer[] = {
    {"self_attn_layer_norm.weight", SP_SLOT_ATTN_NORM,   N,  SP_POS_IN,  SP_DIM_D,  SP_DIM_NONE, SP_INIT_NORM,  A},
    {"self_attn_layer_norm.bias",   SP_SLOT_ATTN_NORM_B, NB, SP_POS_IN,  SP_DIM_D,  SP_DIM_NONE, SP_INIT_BIAS,  A},
    SP_ARCH_QKV(A)
    {"self_attn.out_proj.weight",   SP_SLOT_O,           W,  SP_POS_MID, SP_DIM_D,  SP_DIM_Q,    SP_INIT_FANIN, A},
    {"self_attn.out_proj.bias",     SP_SLOT_O_B,         B,  SP_POS_MID, SP_DIM_D,  SP_DIM_NONE, SP_INIT_BIAS,  A},
    {"final_layer_norm.weight",     SP_SLOT_MLP_NORM,    N,  SP_POS_MID, SP_DIM_D,  SP_DIM_NONE, SP_INIT_NORM,  A},
    {"final_layer_norm.bias",       SP_SLOT_MLP_NORM_B,  NB, SP_POS_MID, SP_DIM_D,  SP_DIM_NONE, SP_INIT_BIAS,  A},
    {"fc1.weight",                  SP_SLOT_GATE,        R,  SP_POS_MID, SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN, A},
    {"fc1.bias",                    SP_SLOT_GATE_B,      B,  SP_POS_MID, SP_DIM_F,  SP_DIM_NONE, SP_INIT_BIAS,  A},
    {"fc2.weight",                  SP_SLOT_DOWN,        W,  SP_POS_OUT, SP_DIM_D,  SP_DIM_F,    SP_INIT_FANIN, A},
    {"fc2.bias",                    SP_SLOT_DOWN_B,      B,  SP_POS_OUT, SP_DIM_D,  SP_DIM_NONE, SP_INIT_BIAS,  A},
};

static const char *const relu_names[] = {"relu", NULL};
static const enum sp_bk_act relu_acts[] = {SP_BK_ACT_RELU};

/* The variants slicepipe cannot slice exactly are refused, naming the key. */
static int opt_config(const char *path, const struct cJSON *root, sp_config *cfg) {
    int64_t wd;
    int before, remove_final, affine, bias;
    SP_TRY(sp_cfg_int(path, root, "word_embed_proj_dim", 0, cfg->hidden_size, 1, 1 << 20, &wd));
    if (wd != cfg->hidden_size)
        return sp_fail(SP_EX_DATAERR, "%s: field 'word_embed_proj_dim': %lld differs from hidden_size %lld: OPT with "
                                      "project_in/project_out (opt-350m) is not supported", path, (long long)wd,
                       (long long)cfg->hidden_size);
    SP_TRY(sp_cfg_bool(path, root, "do_layer_norm_before", 1, &before));
    if (!before)
        return sp_fail(SP_EX_DATAERR, "%s: field 'do_layer_norm_before': false (post-LayerNorm, opt-350m) is not "
                                      "supported: SliceGPT needs the norm before each block", path);
    SP_TRY(sp_cfg_bool(path, root, "_remove_final_layer_norm", 0, &remove_final));
    if (remove_final) return sp_fail(SP_EX_DATAERR, "%s: field '_remove_final_layer_norm': true is not supported", path);
    SP_TRY(sp_cfg_bool(path, root, "layer_norm_elementwise_affine", 1, &affine));
    SP_TRY(sp_cfg_bool(path, root, "enable_bias", 1, &bias));
    if (!affine || !bias)
        return sp_fail(SP_EX_DATAERR, "%s: field '%s': false is not supported", path,
                       !affine ? "layer_norm_elementwise_affine" : "enable_bias");
    if (cfg->max_pos < 1) return sp_fail(SP_EX_DATAERR, "%s: field 'max_position_embeddings': missing", path);
    return 0;
}

const sp_arch sp_arch_opt = {
    .model_type = "opt",
    .hf_class = "OPTForCausalLM",
    .layer_prefix = "model.decoder.layers.%lld.",
    .layer = opt_layer,
    .n_layer = (int)(sizeof opt_layer / sizeof opt_layer[0]),
    .embed = "model.decoder.embed_tokens.weight",
    .final_norm = "model.decoder.final_layer_norm.weight",
    .final_norm_bias = "model.decoder.final_layer_norm.bias",
    .head = "lm_head.weight",
    .head_bias = "lm_head.bias", /* absent from OPT; the sliced head carries the final LayerNorm's β */
    .pos_embed = "model.decoder.embed_positions.weight",
    .pos_offset = 2,
    .shortcut = {[SP_POS_MID] = "attn_shortcut_Q", [SP_POS_OUT] = "mlp_shortcut_Q"},
    .norm = SP_BK_NORM_LAYER,
    .rope = SP_BK_ROPE_HALF, /* unused: learned positions */
    .ffn_key = "ffn_dim",
    .eps_key = NULL,
    .eps_default = 1e-5, /* HF's OPT LayerNorm eps, not in config.json */
    .act_key = "activation_function",
    .act_names = relu_names,
    .acts = relu_acts,
    .act_default = "relu",
    .tie_default = 1,
    .config = opt_config,
    .gguf = {.arch = NULL}, /* llama.cpp has no OPT */
};
