/* pipeline/arch/arch_phi.c — Phi-2 (HF PhiForCausalLM): one LayerNorm feeds
 * attention and the MLP in parallel, y = x + Attn(LN(x)) + MLP(LN(x)); partial
 * rotary (partial_rotary_factor), gelu_new, biases everywhere including
 * lm_head.bias, `dense` as the output projection, an untied head. Parallel
 * blocks get one PCA a layer, on the block output, and one shortcut
 * (docs/algorithm.md §6): the readers (q, k, v, fc1) take the input basis, the
 * writers (dense, fc2) and the shortcut the new one. Refused: qk_layernorm. */
#include "arch_llama_table.h"
#include "error.h"

#define R SP_ROLE_READER
#define W SP_ROLE_WRITER
#define B SP_ROLE_BIAS
#define N SP_ROLE_NORM
#define NB SP_ROLE_NORM_BIAS
#define A SP_COND_ALWAYS

static const sp_arch_tensor phi_layer[] = {
    {"input_layernorm.weight",  SP_SLOT_ATTN_NORM,   N,  SP_POS_IN,  SP_DIM_D,  SP_DIM_NONE, SP_INIT_NORM,  A},
    {"input_layernorm.bias",    SP_SLOT_ATTN_NORM_B, NB, SP_POS_IN,  SP_DIM_D,  SP_DIM_NONE, SP_INIT_BIAS,  A},
    SP_ARCH_QKV(A)
    {"self_attn.dense.weight",  SP_SLOT_O,           W,  SP_POS_OUT, SP_DIM_D,  SP_DIM_Q,    SP_INIT_FANIN, A},
    {"self_attn.dense.bias",    SP_SLOT_O_B,         B,  SP_POS_OUT, SP_DIM_D,  SP_DIM_NONE, SP_INIT_BIAS,  A},
    {"mlp.fc1.weight",          SP_SLOT_GATE,        R,  SP_POS_IN,  SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN, A},
    {"mlp.fc1.bias",            SP_SLOT_GATE_B,      B,  SP_POS_IN,  SP_DIM_F,  SP_DIM_NONE, SP_INIT_BIAS,  A},
    {"mlp.fc2.weight",          SP_SLOT_DOWN,        W,  SP_POS_OUT, SP_DIM_D,  SP_DIM_F,    SP_INIT_FANIN, A},
    {"mlp.fc2.bias",            SP_SLOT_DOWN_B,      B,  SP_POS_OUT, SP_DIM_D,  SP_DIM_NONE, SP_INIT_BIAS,  A},
};

static const char *const gelu_new_names[] = {"gelu_new", NULL};
static const enum sp_bk_act gelu_new_acts[] = {SP_BK_ACT_GELU_TANH};

static int phi_config(const char *path, const struct cJSON *root, sp_config *cfg) {
    int qkln;
    SP_TRY(sp_cfg_bool(path, root, "qk_layernorm", 0, &qkln));
    if (qkln) return sp_fail(SP_EX_DATAERR, "%s: field 'qk_layernorm': true is not supported", path);
    (void)cfg;
    return 0;
}

const sp_arch sp_arch_phi = {
    .model_type = "phi",
    .hf_class = "PhiForCausalLM",
    .layer_prefix = "model.layers.%lld.",
    .layer = phi_layer,
    .n_layer = (int)(sizeof phi_layer / sizeof phi_layer[0]),
    .embed = "model.embed_tokens.weight",
    .final_norm = "model.final_layernorm.weight",
    .final_norm_bias = "model.final_layernorm.bias",
    .head = "lm_head.weight",
    .head_bias = "lm_head.bias",
    .dense_head_bias = 1,
    .shortcut = {[SP_POS_OUT] = "shortcut_Q"},
    .parallel = 1,
    .norm = SP_BK_NORM_LAYER,
    .rope = SP_BK_ROPE_HALF,
    .ffn_key = "intermediate_size",
    .eps_key = "layer_norm_eps",
    .eps_default = 1e-5,
    .act_key = "hidden_act",
    .act_names = gelu_new_names,
    .acts = gelu_new_acts,
    .act_default = "gelu_new",
    .partial_rotary = 1,
    .config = phi_config,
    .gguf = {.arch = "phi2", .head_always = 1, .head_bias_required = 1},
};
