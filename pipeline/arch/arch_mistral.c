/* pipeline/arch/arch_mistral.c — Mistral (HF MistralForCausalLM): Llama's tensors
 * and math, with sliding-window attention: query i sees key j only when
 * 0 <= i - j < sliding_window (config.json; null or absent: no window). A
 * calibration seqlen above the window is fine: the mask does the work.
 * llama.cpp runs it as its llama. */
#include "arch_llama_table.h"

static const sp_arch_tensor mistral_layer[] = {SP_ARCH_LLAMA_LAYER(SP_INIT_NORM)};

const sp_arch sp_arch_mistral = {
    .model_type = "mistral",
    .hf_class = "MistralForCausalLM",
    .layer = mistral_layer,
    .n_layer = (int)(sizeof mistral_layer / sizeof mistral_layer[0]),
    SP_ARCH_LLAMA_NAMES,
    SP_ARCH_SILU,
    .eps_default = 1e-6,
    .window_key = 1,
    .gguf = SP_ARCH_GGUF_LLAMA, /* its window is not written: llama.cpp's llama runs full causal attention */
};
