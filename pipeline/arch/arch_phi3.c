/* pipeline/arch/arch_phi3.c — Phi-3 (HF Phi3ForCausalLM): fused qkv_proj (rows
 * q; k; v) and gate_up_proj (rows gate; up), kept fused in the output: a fused
 * reader is one reader, its columns rotated. Partial rotary
 * (partial_rotary_factor), sliding-window attention, and a tied head with no
 * lm_head tensor. Phi-3's "longrope"/"su" scalings are refused by the
 * rope_scaling check. */
#include "arch_llama_table.h"

static const sp_arch_tensor phi3_layer[] = {
    {"input_layernorm.weight",          SP_SLOT_ATTN_NORM, SP_ROLE_NORM,   SP_POS_IN,  SP_DIM_D,   SP_DIM_NONE, SP_INIT_NORM,  SP_COND_ALWAYS},
    {"self_attn.qkv_proj.weight",       SP_SLOT_QKV,       SP_ROLE_READER, SP_POS_IN,  SP_DIM_QKV, SP_DIM_D,    SP_INIT_FANIN, SP_COND_ALWAYS},
    {"self_attn.o_proj.weight",         SP_SLOT_O,         SP_ROLE_WRITER, SP_POS_MID, SP_DIM_D,   SP_DIM_Q,    SP_INIT_FANIN, SP_COND_ALWAYS},
    {"post_attention_layernorm.weight", SP_SLOT_MLP_NORM,  SP_ROLE_NORM,   SP_POS_MID, SP_DIM_D,   SP_DIM_NONE, SP_INIT_NORM,  SP_COND_ALWAYS},
    {"mlp.gate_up_proj.weight",         SP_SLOT_GATE_UP,   SP_ROLE_READER, SP_POS_MID, SP_DIM_F2,  SP_DIM_D,    SP_INIT_FANIN, SP_COND_ALWAYS},
    {"mlp.down_proj.weight",            SP_SLOT_DOWN,      SP_ROLE_WRITER, SP_POS_OUT, SP_DIM_D,   SP_DIM_F,    SP_INIT_FANIN, SP_COND_ALWAYS},
};

const sp_arch sp_arch_phi3 = {
    .model_type = "phi3",
    .hf_class = "Phi3ForCausalLM",
    .layer = phi3_layer,
    .n_layer = (int)(sizeof phi3_layer / sizeof phi3_layer[0]),
    SP_ARCH_LLAMA_NAMES,
    SP_ARCH_SILU,
    .eps_default = 1e-5,
    .window_key = 1,
    .partial_rotary = 1,
    /* llama.cpp's phi3 sizes attn_qkv by n_embd; HF's Phi-3 is HF's Llama
     * with q;k;v and gate;up fused, so the llama form (parts written apart)
     * computes the same model */
    .gguf = {.arch = "phi3", .window_key = 1, .heads_ne_d = &sp_arch_gguf_llama},
};
