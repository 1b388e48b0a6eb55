/* pipeline/slice/policy_per_layer.c — SliceGPT's own policy, [slicing] basis =
 * "per-layer" (docs/algorithm.md §5): every residual position gets the PCA
 * basis of its own signal on the already-sliced model, sliced to one uniform
 * width d; shortcut matrices map each basis to the next; the head is not
 * sliced (the last layer writes at the full width D). */
#include <stdio.h>
#include <string.h>

#include <cJSON.h>
#include "error.h"
#include "slice_plan.h"

/* refit = true (docs/algorithm.md §14) serves sequential RMSNorm blocks
 * whose o_proj and down_proj have no bias: the refit's passes run the dense
 * layer on the sliced stream mapped back to D, which LayerNorm's centring
 * and a parallel block's shared norm do not allow as they are, and a bias
 * would need its own constant column. */
static int refit_refused(const sp_manifest *mf, const sp_model *m) {
    const sp_arch *a = m->arch;
    const char *why = a->norm == SP_BK_NORM_LAYER ? "its LayerNorm"
                      : a->parallel                ? "its parallel block"
                      : sp_arch_slot_index(a, SP_SLOT_O_B) >= 0 ? "the bias of its attention output projection"
                      : sp_arch_slot_index(a, SP_SLOT_DOWN_B) >= 0 ? "the bias of its down projection"
                                                                   : NULL;
    if (!why) return 0;
    return sp_fail(SP_EX_USAGE, "%s: [slicing] refit = true is not supported for %s (model_type %s): %s; it serves "
                                "the RMSNorm families with a sequential block and no output biases (llama, mistral, "
                                "qwen2, qwen3, phi3, gemma); remove refit", mf->path, mf->model_path, a->model_type, why);
}

static int per_layer_make(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p) {
    SP_TRY(sp_slice_plan_uniform(mf, p));
    p->width[SP_POS_OUT][p->L - 1] = p->D;
    enum sp_arch_pos pos[2];
    p->shortcuts = 1;
    p->layer_pcas = sp_arch_pca_positions(m->arch, pos);
    if (!mf->refit) return 0;
    SP_TRY(refit_refused(mf, m));
    p->refit = 1;
    p->title = "SliceGPT with refit writers (refit = true)";
    p->about = "basis per-layer (SliceGPT) with o_proj and down_proj refit to the dense model's signals (refit = "
               "true): shortcut matrices, read by slicepipe eval/generate; the spills twice as large";
    return 0;
}

static void per_layer_identity(const sp_manifest *mf, char *txt, size_t n) {
    if (!mf->refit) return; /* nothing beyond the common keys */
    size_t len = strlen(txt);
    snprintf(txt + len, n - len, "refit=1\nrefit_ridge=%.17g\n", mf->refit_ridge);
}

static void per_layer_config(const sp_manifest *mf, cJSON *block) {
    if (!mf->refit) return;
    cJSON_AddBoolToObject(block, "refit", 1);
    cJSON_AddNumberToObject(block, "refit_ridge", mf->refit_ridge);
}

const sp_slice_policy sp_policy_per_layer = {
    .name = "per-layer",
    .title = "SliceGPT",
    .about = "basis per-layer (SliceGPT): shortcut matrices, read by slicepipe eval/generate",
    .make = per_layer_make,
    .identity = per_layer_identity,
    .config = per_layer_config,
};
