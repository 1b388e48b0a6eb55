/* pipeline/arch/arch_llama_table.h — the Llama layer's tensors, shared by the
 * families that differ from Llama only above the tensors (Llama, Mistral,
 * Gemma), and the rows and members that families named after HF's Llama
 * share (q/k/v projections, names, SiLU, llama.cpp's llama). Included by
 * their arch_*.c; one copy of the table per family. */
#ifndef SP_ARCH_LLAMA_TABLE_H
#define SP_ARCH_LLAMA_TABLE_H

#include "arch.h"

/* HF's q/k/v projections and their biases, named alike by Llama, Qwen, OPT
 * and Phi; BIAS_COND: when the biases exist. */
#define SP_ARCH_QKV(BIAS_COND) \
    {"self_attn.q_proj.weight", SP_SLOT_Q,   SP_ROLE_READER, SP_POS_IN, SP_DIM_Q,  SP_DIM_D,    SP_INIT_FANIN, SP_COND_ALWAYS}, \
    {"self_attn.q_proj.bias",   SP_SLOT_Q_B, SP_ROLE_BIAS,   SP_POS_IN, SP_DIM_Q,  SP_DIM_NONE, SP_INIT_BIAS,  BIAS_COND},      \
    {"self_attn.k_proj.weight", SP_SLOT_K,   SP_ROLE_READER, SP_POS_IN, SP_DIM_KV, SP_DIM_D,    SP_INIT_FANIN, SP_COND_ALWAYS}, \
    {"self_attn.k_proj.bias",   SP_SLOT_K_B, SP_ROLE_BIAS,   SP_POS_IN, SP_DIM_KV, SP_DIM_NONE, SP_INIT_BIAS,  BIAS_COND},      \
    {"self_attn.v_proj.weight", SP_SLOT_V,   SP_ROLE_READER, SP_POS_IN, SP_DIM_KV, SP_DIM_D,    SP_INIT_FANIN, SP_COND_ALWAYS}, \
    {"self_attn.v_proj.bias",   SP_SLOT_V_B, SP_ROLE_BIAS,   SP_POS_IN, SP_DIM_KV, SP_DIM_NONE, SP_INIT_BIAS,  BIAS_COND},

/* NORM_INIT: how synth fills the norms (Gemma stores w of 1 + w). */
#define SP_ARCH_LLAMA_LAYER(NORM_INIT) \
    /* suffix                           slot               role            pos         rows       cols         init           cond             */ \
    {"input_layernorm.weight",          SP_SLOT_ATTN_NORM, SP_ROLE_NORM,   SP_POS_IN,  SP_DIM_D,  SP_DIM_NONE, NORM_INIT,     SP_COND_ALWAYS},    \
    SP_ARCH_QKV(SP_COND_ATTN_BIAS)                                                                                                                \
    {"self_attn.o_proj.weight",         SP_SLOT_O,         SP_ROLE_WRITER, SP_POS_MID, SP_DIM_D,  SP_DIM_Q,    SP_INIT_FANIN, SP_COND_ALWAYS},    \
    {"self_attn.o_proj.bias",           SP_SLOT_O_B,       SP_ROLE_BIAS,   SP_POS_MID, SP_DIM_D,  SP_DIM_NONE, SP_INIT_BIAS,  SP_COND_ATTN_BIAS}, \
    {"post_attention_layernorm.weight", SP_SLOT_MLP_NORM,  SP_ROLE_NORM,   SP_POS_MID, SP_DIM_D,  SP_DIM_NONE, NORM_INIT,     SP_COND_ALWAYS},    \
    {"mlp.gate_proj.weight",            SP_SLOT_GATE,      SP_ROLE_READER, SP_POS_MID, SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN, SP_COND_ALWAYS},    \
    {"mlp.gate_proj.bias",              SP_SLOT_GATE_B,    SP_ROLE_BIAS,   SP_POS_MID, SP_DIM_F,  SP_DIM_NONE, SP_INIT_BIAS,  SP_COND_MLP_BIAS},  \
    {"mlp.up_proj.weight",              SP_SLOT_UP,        SP_ROLE_READER, SP_POS_MID, SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN, SP_COND_ALWAYS},    \
    {"mlp.up_proj.bias",                SP_SLOT_UP_B,      SP_ROLE_BIAS,   SP_POS_MID, SP_DIM_F,  SP_DIM_NONE, SP_INIT_BIAS,  SP_COND_MLP_BIAS},  \
    {"mlp.down_proj.weight",            SP_SLOT_DOWN,      SP_ROLE_WRITER, SP_POS_OUT, SP_DIM_D,  SP_DIM_F,    SP_INIT_FANIN, SP_COND_ALWAYS},    \
    {"mlp.down_proj.bias",              SP_SLOT_DOWN_B,    SP_ROLE_BIAS,   SP_POS_OUT, SP_DIM_D,  SP_DIM_NONE, SP_INIT_BIAS,  SP_COND_MLP_BIAS},

/* The members of an sp_arch that Llama-named RMSNorm families share. */
#define SP_ARCH_LLAMA_NAMES                                                                            \
    .layer_prefix = "model.layers.%lld.", .embed = "model.embed_tokens.weight",                       \
    .final_norm = "model.norm.weight", .head = "lm_head.weight",                                      \
    .shortcut = {[SP_POS_MID] = "attn_shortcut_Q", [SP_POS_OUT] = "mlp_shortcut_Q"},                  \
    .norm = SP_BK_NORM_RMS, .rope = SP_BK_ROPE_HALF, .ffn_key = "intermediate_size",                  \
    .eps_key = "rms_norm_eps", .act_key = "hidden_act"

/* llama.cpp's llama (GGUF export): interleaved RoPE (q/k permuted), whole
 * heads rotated, no fused tensors. Llama and Mistral are written so, and
 * Qwen2 and Phi-3 whose attention is not hidden_size wide (heads_ne_d). */
#define SP_ARCH_GGUF_LLAMA {.arch = "llama", .permute_qk = 1, .whole_head_rotary = 1, .split_fused = 1}
extern const sp_arch_gguf sp_arch_gguf_llama;

/* SiLU-gated MLPs (Llama, Mistral, Qwen, Phi-3). */
extern const char *const sp_arch_silu_names[];
extern const enum sp_bk_act sp_arch_silu_acts[];
#define SP_ARCH_SILU .act_names = sp_arch_silu_names, .acts = sp_arch_silu_acts, .act_default = "silu"

#endif
