/* pipeline/arch/arch_llama.c — the Llama family (HF LlamaForCausalLM): pre-norm
 * RMSNorm blocks, rotate-half RoPE, grouped-query attention, SiLU-gated MLP,
 * an optionally tied head, and the optional biases of attention_bias and
 * mlp_bias. docs/algorithm.md §5 is written for it. Its layer table
 * (arch_llama_table.h) is shared with the families that differ from it only
 * above the tensors (arch_mistral.c, arch_gemma.c). */
#include "arch_llama_table.h"

static const sp_arch_tensor llama_layer[] = {SP_ARCH_LLAMA_LAYER(SP_INIT_NORM)};

const char *const sp_arch_silu_names[] = {"silu", NULL};
const enum sp_bk_act sp_arch_silu_acts[] = {SP_BK_ACT_SILU_GLU};
const sp_arch_gguf sp_arch_gguf_llama = SP_ARCH_GGUF_LLAMA;

const sp_arch sp_arch_llama = {
    .model_type = "llama",
    .hf_class = "LlamaForCausalLM",
    .layer = llama_layer,
    .n_layer = (int)(sizeof llama_layer / sizeof llama_layer[0]),
    SP_ARCH_LLAMA_NAMES,
    SP_ARCH_SILU,
    .eps_default = 1e-6,
    .gguf = SP_ARCH_GGUF_LLAMA,
};
