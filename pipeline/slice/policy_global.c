/* pipeline/slice/policy_global.c — one basis, [slicing] basis = "global"
 * (docs/algorithm.md §10): a survey (a dense pass over the
 * calibration windows) sums the residual stream's second moments at every
 * position into one matrix, whose PCA rotates every tensor; one width d for
 * the whole stream, head included, no shortcut matrices; the output is the
 * family's stock architecture at hidden size d. RMSNorm families only. */
#include <stdio.h>
#include <string.h>

#include <cJSON.h>

#include "error.h"
#include "slice_plan.h"

static int global_make(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p) {
    if (m->arch->norm == SP_BK_NORM_LAYER)
        return sp_fail(SP_EX_USAGE, "%s: [slicing] basis = \"global\" needs an RMSNorm family, and %s uses LayerNorm: "
                                    "its mean over the d kept coordinates of a rotated stream is not the mean over D, so no "
                                    "stock %s at width d computes the sliced model; use basis = \"per-layer\"",
                       mf->path, m->arch->model_type, m->arch->model_type);
    SP_TRY(sp_slice_plan_uniform(mf, p));
    p->survey = 1;
    p->survey_trace = mf->global_weighting == SP_WEIGHT_TRACE;
    p->stock = 1;
    return 0;
}

static void global_identity(const sp_manifest *mf, char *txt, size_t n) {
    size_t len = strlen(txt);
    snprintf(txt + len, n - len, "basis=global\nweighting=%s\n", mf->global_weighting == SP_WEIGHT_RAW ? "raw" : "trace");
}

static void global_config(const sp_manifest *mf, cJSON *block) {
    cJSON_AddStringToObject(block, "global_weighting", mf->global_weighting == SP_WEIGHT_RAW ? "raw" : "trace");
}

const sp_slice_policy sp_policy_global = {
    .name = "global",
    .stock = 1,
    .title = "SliceGPT, one basis",
    .about = "basis global: a survey pass (dense forward, every layer read once more) gives one basis; the output is "
             "the stock architecture at width d",
    .make = global_make,
    .identity = global_identity,
    .config = global_config,
};
