/* pipeline/arch_mistral.c — Mistral (HF MistralForCausalLM): Llama's tensors
 * and math, with sliding-window attention: query i sees key j only when
 * 0 <= i - j < sliding_window (config.json; null or absent: no window). A
 * calibration seqlen above the window is fine: the mask does the work. */
#include "arch_llama_table.h"

static const sp_arch_tensor mistral_layer[] = {SP_ARCH_LLAMA_LAYER(SP_INIT_NORM)};
extern const enum sp_bk_act sp_arch_silu_acts[];
static const char *const silu_names[] = {"silu", NULL};

const sp_arch sp_arch_mistral = {
    .model_type = "mistral",
    .hf_class = "MistralForCausalLM",
    .layer_prefix = "model.layers.%lld.",
    .layer = mistral_layer,
    .n_layer = (int)(sizeof mistral_layer / sizeof mistral_layer[0]),
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
    .window_key = 1,
};
