/* pipeline/arch_llama.c — the Llama family (HF LlamaForCausalLM): pre-norm
 * RMSNorm blocks, rotate-half RoPE, grouped-query attention, SiLU-gated MLP,
 * an optionally tied head. DESIGN.md §1 is written for it. */
#include "arch.h"

static const sp_arch_tensor llama_layer[] = {
    /* suffix                            slot               role            pos         of  rows        cols       init */
    {"input_layernorm.weight",           SP_SLOT_ATTN_NORM, SP_ROLE_NORM,   SP_POS_IN,  -1, SP_DIM_D,  SP_DIM_NONE, SP_INIT_NORM},
    {"self_attn.q_proj.weight",          SP_SLOT_Q,         SP_ROLE_READER, SP_POS_IN,  -1, SP_DIM_Q,  SP_DIM_D,    SP_INIT_FANIN},
    {"self_attn.k_proj.weight",          SP_SLOT_K,         SP_ROLE_READER, SP_POS_IN,  -1, SP_DIM_KV, SP_DIM_D,    SP_INIT_FANIN},
    {"self_attn.v_proj.weight",          SP_SLOT_V,         SP_ROLE_READER, SP_POS_IN,  -1, SP_DIM_KV, SP_DIM_D,    SP_INIT_FANIN},
    {"self_attn.o_proj.weight",          SP_SLOT_O,         SP_ROLE_WRITER, SP_POS_MID, -1, SP_DIM_D,  SP_DIM_Q,    SP_INIT_FANIN},
    {"post_attention_layernorm.weight",  SP_SLOT_MLP_NORM,  SP_ROLE_NORM,   SP_POS_MID, -1, SP_DIM_D,  SP_DIM_NONE, SP_INIT_NORM},
    {"mlp.gate_proj.weight",             SP_SLOT_GATE,      SP_ROLE_READER, SP_POS_MID, -1, SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN},
    {"mlp.up_proj.weight",               SP_SLOT_UP,        SP_ROLE_READER, SP_POS_MID, -1, SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN},
    {"mlp.down_proj.weight",             SP_SLOT_DOWN,      SP_ROLE_WRITER, SP_POS_OUT, -1, SP_DIM_D,  SP_DIM_F,    SP_INIT_FANIN},
};

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
    .parallel = 0,
    .norm = SP_BK_NORM_RMS,
    .act = SP_BK_ACT_SILU_GLU,
    .rope = SP_BK_ROPE_HALF,
};
