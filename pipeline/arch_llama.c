/* pipeline/arch_llama.c — the Llama family (HF LlamaForCausalLM): pre-norm
 * RMSNorm blocks, rotate-half RoPE, grouped-query attention, SiLU-gated MLP,
 * an optionally tied head, and the optional biases of attention_bias and
 * mlp_bias. DESIGN.md §1 is written for it. Its layer table
 * (arch_llama_table.h) is shared with the families that differ from it only
 * above the tensors (arch_mistral.c, arch_gemma.c). */
#include "arch_llama_table.h"

static const sp_arch_tensor llama_layer[] = {SP_ARCH_LLAMA_LAYER(SP_INIT_NORM)};


static const char *const silu_names[] = {"silu", NULL};
const enum sp_bk_act sp_arch_silu_acts[] = {SP_BK_ACT_SILU_GLU};

const sp_arch sp_arch_llama = {
    .model_type = "llama",
    .hf_class = "LlamaForCausalLM",
    .layer_prefix = "model.layers.%lld.",
    .layer = llama_layer,
    .n_layer = (int)(sizeof llama_layer / sizeof llama_layer[0]),
    .embed = "model.embed_tokens.weight",
    .final_norm = "model.norm.weight",
    .head = "lm_head.weight",
    .shortcut = {[SP_POS_MID] = "attn_shortcut_Q", [SP_POS_OUT] = "mlp_shortcut_Q"},
    .norm = SP_BK_NORM_RMS,
    .rope = SP_BK_ROPE_HALF,
    .ffn_key = "intermediate_size",
    .eps_key = "rms_norm_eps",
    .eps_default = 1e-6,
    .act_key = "hidden_act",
    .act_names = silu_names,
    .acts = sp_arch_silu_acts,
    .act_default = "silu",
};
