/* pipeline/arch/arch_qwen.c — Qwen2 / Qwen2.5 (HF Qwen2ForCausalLM: q/k/v biases
 * always, often a tied head) and Qwen3 (Qwen3ForCausalLM: per-head RMSNorm
 * q_norm/k_norm on queries and keys before RoPE, biases only with
 * attention_bias). A reader's bias is untouched by a rotation of its input;
 * the per-head norms live in head space and are untouched too. */
#include "arch_llama_table.h"

#define R SP_ROLE_READER
#define W SP_ROLE_WRITER
#define B SP_ROLE_BIAS
#define N SP_ROLE_NORM
#define H SP_ROLE_HEAD
#define A SP_COND_ALWAYS

static const sp_arch_tensor qwen2_layer[] = {
    {"input_layernorm.weight",          SP_SLOT_ATTN_NORM, N, SP_POS_IN,  SP_DIM_D,  SP_DIM_NONE, SP_INIT_NORM,  A},
    SP_ARCH_QKV(A)
    {"self_attn.o_proj.weight",         SP_SLOT_O,         W, SP_POS_MID, SP_DIM_D,  SP_DIM_Q,    SP_INIT_FANIN, A},
    {"post_attention_layernorm.weight", SP_SLOT_MLP_NORM,  N, SP_POS_MID, SP_DIM_D,  SP_DIM_NONE, SP_INIT_NORM,  A},
    {"mlp.gate_proj.weight",            SP_SLOT_GATE,      R, SP_POS_MID, SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN, A},
    {"mlp.up_proj.weight",              SP_SLOT_UP,        R, SP_POS_MID, SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN, A},
    {"mlp.down_proj.weight",            SP_SLOT_DOWN,      W, SP_POS_OUT, SP_DIM_D,  SP_DIM_F,    SP_INIT_FANIN, A},
};

static const sp_arch_tensor qwen3_layer[] = {
    {"input_layernorm.weight",          SP_SLOT_ATTN_NORM, N, SP_POS_IN,  SP_DIM_D,  SP_DIM_NONE, SP_INIT_NORM,  A},
    SP_ARCH_QKV(SP_COND_ATTN_BIAS)
    {"self_attn.q_norm.weight",         SP_SLOT_Q_NORM,    H, SP_POS_IN,  SP_DIM_HD, SP_DIM_NONE, SP_INIT_NORM,  A},
    {"self_attn.k_norm.weight",         SP_SLOT_K_NORM,    H, SP_POS_IN,  SP_DIM_HD, SP_DIM_NONE, SP_INIT_NORM,  A},
    {"self_attn.o_proj.weight",         SP_SLOT_O,         W, SP_POS_MID, SP_DIM_D,  SP_DIM_Q,    SP_INIT_FANIN, A},
    {"post_attention_layernorm.weight", SP_SLOT_MLP_NORM,  N, SP_POS_MID, SP_DIM_D,  SP_DIM_NONE, SP_INIT_NORM,  A},
    {"mlp.gate_proj.weight",            SP_SLOT_GATE,      R, SP_POS_MID, SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN, A},
    {"mlp.up_proj.weight",              SP_SLOT_UP,        R, SP_POS_MID, SP_DIM_F,  SP_DIM_D,    SP_INIT_FANIN, A},
    {"mlp.down_proj.weight",            SP_SLOT_DOWN,      W, SP_POS_OUT, SP_DIM_D,  SP_DIM_F,    SP_INIT_FANIN, A},
};

#define QWEN_COMMON SP_ARCH_LLAMA_NAMES, SP_ARCH_SILU, .eps_default = 1e-6, .window_key = 1

const sp_arch sp_arch_qwen2 = {
    .model_type = "qwen2",
    .hf_class = "Qwen2ForCausalLM",
    .layer = qwen2_layer,
    .n_layer = (int)(sizeof qwen2_layer / sizeof qwen2_layer[0]),
    QWEN_COMMON,
    /* llama.cpp's qwen2 sizes attn_q as n_embd × n_embd; HF's Qwen2 is HF's
     * Llama plus q/k/v biases, so the llama form computes the same model */
    .gguf = {.arch = "qwen2", .heads_ne_d = &sp_arch_gguf_llama},
};

const sp_arch sp_arch_qwen3 = {
    .model_type = "qwen3",
    .hf_class = "Qwen3ForCausalLM",
    .layer = qwen3_layer,
    .n_layer = (int)(sizeof qwen3_layer / sizeof qwen3_layer[0]),
    QWEN_COMMON,
    .gguf = {.arch = "qwen3"},
};
