/* pipeline/arch/arch_gemma.c — Gemma (HF GemmaForCausalLM): Llama's tensors, with
 * RMSNorm scaling by (1 + w) (fused as γ = 1 + w), embeddings multiplied by
 * sqrt(hidden_size) rounded to the model dtype as HF does (baked into the
 * embedding rows when slicing), a tanh-GELU GeGLU even where config.json says
 * "gelu" (HF runs gelu_pytorch_tanh for Gemma 1), head_dim independent of
 * hidden/heads, and a tied head. Gemma-2/3 (post-block norms, soft-capping)
 * have model_type gemma2/gemma3 and are refused by the table lookup. */
#include <string.h>

#include "arch_llama_table.h"
#include "error.h"

static const sp_arch_tensor gemma_layer[] = {SP_ARCH_LLAMA_LAYER(SP_INIT_NORM0)};

static const char *const gelu_names[] = {"gelu", "gelu_pytorch_tanh", NULL};
static const enum sp_bk_act gelu_acts[] = {SP_BK_ACT_GELU_TANH_GLU, SP_BK_ACT_GELU_TANH_GLU};

/* hidden_activation, when present, is what HF runs; either spelling means the
 * tanh approximation. */
static int gemma_config(const char *path, const struct cJSON *root, sp_config *cfg) {
    const char *v;
    SP_TRY(sp_cfg_str(path, root, "hidden_activation", &v));
    if (v && strcmp(v, "gelu_pytorch_tanh") != 0 && strcmp(v, "gelu") != 0)
        return sp_fail(SP_EX_DATAERR, "%s: field 'hidden_activation': '%.32s' is not supported for gemma "
                                      "(supported: 'gelu_pytorch_tanh', 'gelu')", path, v);
    (void)cfg;
    return 0;
}

const sp_arch sp_arch_gemma = {
    .model_type = "gemma",
    .hf_class = "GemmaForCausalLM",
    .layer = gemma_layer,
    .n_layer = (int)(sizeof gemma_layer / sizeof gemma_layer[0]),
    SP_ARCH_LLAMA_NAMES,
    .norm_plus_one = 1,
    .embed_scale_sqrt_d = 1,
    .eps_default = 1e-6,
    .act_names = gelu_names,
    .acts = gelu_acts,
    .act_default = "gelu",
    .tie_default = 1,
    .config = gemma_config,
    /* llama.cpp's gemma scales the embeddings by sqrt(n_embd) itself, and
     * multiplies by the norm weight it reads, so export writes 1 + w */
    .gguf = {.arch = "gemma", .head_tied = 1},
};
