/* pipeline/slice/policy_per_layer.c — SliceGPT's own policy, [slicing] basis =
 * "per-layer" (docs/algorithm.md §5): every residual position gets the PCA
 * basis of its own signal on the already-sliced model, sliced to one uniform
 * width d; shortcut matrices map each basis to the next; the head is not
 * sliced (the last layer writes at the full width D). */
#include <stdio.h>

#include "error.h"
#include "slice_plan.h"

static int per_layer_make(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p) {
    SP_TRY(sp_slice_plan_uniform(mf, p));
    p->width[SP_POS_OUT][p->L - 1] = p->D;
    enum sp_arch_pos pos[2];
    p->shortcuts = 1;
    p->layer_pcas = sp_arch_pca_positions(m->arch, pos);
    return 0;
}

static void per_layer_identity(const sp_manifest *mf, char *txt, size_t n) {
    (void)mf, (void)txt, (void)n; /* nothing beyond the common keys */
}

const sp_slice_policy sp_policy_per_layer = {
    .name = "per-layer",
    .title = "SliceGPT",
    .about = "basis per-layer (SliceGPT): shortcut matrices, read by slicepipe eval/generate",
    .make = per_layer_make,
    .identity = per_layer_identity,
};
