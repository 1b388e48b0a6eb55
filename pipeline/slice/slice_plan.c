/* pipeline/slice/slice_plan.c — the slice plan (slice_plan.h): the policy table,
 * the arrays every policy fills, and what the pipeline cannot serve yet. */
#include "slice_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Indexed by the manifest's [slicing] basis. */
static const sp_slice_policy *const policies[] = {
    [SP_BASIS_PER_LAYER] = &sp_policy_per_layer,
    [SP_BASIS_GLOBAL] = &sp_policy_global,
};

int64_t sp_slice_width(int64_t D, double sparsity, int64_t round_to) {
    int64_t d = (int64_t)floor((1.0 - sparsity) * (double)D);
    d -= d % round_to;
    return d;
}

const sp_slice_policy *sp_slice_policy_of(const sp_manifest *mf) {
    SP_ASSERT((size_t)mf->basis < sizeof policies / sizeof policies[0] && policies[mf->basis]);
    return policies[mf->basis];
}

int sp_slice_plan_make(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p) {
    memset(p, 0, sizeof *p);
    p->policy = sp_slice_policy_of(mf);
    p->L = m->cfg.n_layers;
    p->D = m->cfg.hidden_size;
    for (int k = 0; k < SP_POS_COUNT; k++) SP_TRY(sp_calloc((void **)&p->width[k], p->L, 8, "slice plan widths"));
    SP_TRY(sp_calloc((void **)&p->ffn, p->L, 8, "slice plan"));
    SP_TRY(sp_calloc((void **)&p->heads, p->L, 8, "slice plan"));
    for (int64_t l = 0; l < p->L; l++) {
        p->ffn[l] = m->cfg.intermediate_size;
        p->heads[l] = m->cfg.n_heads;
    }
    SP_TRY(p->policy->make(mf, m, p));
    /* What the pipeline serves today: residual widths only. */
    for (int64_t l = 0; l < p->L; l++) {
        SP_ASSERT(p->ffn[l] == m->cfg.intermediate_size && p->heads[l] == m->cfg.n_heads);
        for (int k = 0; k < SP_POS_COUNT; k++) SP_ASSERT(p->width[k][l] >= 1 && p->width[k][l] <= p->D);
    }
    SP_ASSERT(p->shortcuts != p->survey && (p->survey ? p->layer_pcas == 0 : p->layer_pcas > 0) &&
              p->stock == p->policy->stock);
    return 0;
}

void sp_slice_plan_free(sp_slice_plan *p) {
    for (int k = 0; k < SP_POS_COUNT; k++) free(p->width[k]);
    free(p->ffn);
    free(p->heads);
    memset(p, 0, sizeof *p);
}

int sp_slice_plan_uniform(const sp_manifest *mf, sp_slice_plan *p) {
    const int64_t d = sp_slice_width(p->D, mf->sparsity, mf->round_to);
    if (d < 1)
        return sp_fail(SP_EX_USAGE, "%s: sparsity %g with round_to %lld leaves no width of D=%lld", mf->path,
                       mf->sparsity, (long long)mf->round_to, (long long)p->D);
    for (int64_t l = 0; l < p->L; l++) p->width[SP_POS_IN][l] = p->width[SP_POS_MID][l] = p->width[SP_POS_OUT][l] = d;
    return 0;
}

void sp_slice_plan_layer_widths(const sp_slice_plan *p, int64_t l, int64_t w[SP_POS_COUNT]) {
    for (int k = 0; k < SP_POS_COUNT; k++) w[k] = p->width[k][l];
}
