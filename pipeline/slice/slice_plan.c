/* pipeline/slice/slice_plan.c — the slice plan (slice_plan.h): the policy table,
 * the arrays every policy fills, the parameter counts and target, and what
 * the pipeline cannot serve yet. */
#include "slice_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Indexed by the manifest's [slicing] basis (policy = "slicegpt"). */
static const sp_slice_policy *const policies[] = {
    [SP_BASIS_PER_LAYER] = &sp_policy_per_layer,
    [SP_BASIS_GLOBAL] = &sp_policy_global,
};

const char *const sp_param_part_names[SP_PARAM_COUNT] = {"embeddings", "head", "attention", "MLP", "shortcuts", "norms"};

int64_t sp_slice_width(int64_t D, double sparsity, int64_t round_to) {
    int64_t d = (int64_t)floor((1.0 - sparsity) * (double)D);
    d -= d % round_to;
    return d;
}

const sp_slice_policy *sp_slice_policy_of(const sp_manifest *mf) {
    if (mf->policy == SP_POLICY_STOCK) return &sp_policy_stock;
    SP_ASSERT((size_t)mf->basis < sizeof policies / sizeof policies[0] && policies[mf->basis]);
    return policies[mf->basis];
}

/* A layer tensor's component, by its slot. */
static enum sp_param_part part_of(const sp_arch_tensor *x) {
    switch (x->slot) {
    case SP_SLOT_ATTN_NORM: case SP_SLOT_ATTN_NORM_B: case SP_SLOT_MLP_NORM: case SP_SLOT_MLP_NORM_B: return SP_PARAM_NORM;
    case SP_SLOT_GATE: case SP_SLOT_UP: case SP_SLOT_GATE_UP: case SP_SLOT_GATE_B: case SP_SLOT_UP_B: case SP_SLOT_DOWN:
    case SP_SLOT_DOWN_B: return SP_PARAM_MLP;
    default: return SP_PARAM_ATTN; /* q, k, v, o, their biases, per-head q/k norms */
    }
}

static void sum_parts(sp_params *o) {
    o->total = 0;
    for (int i = 0; i < SP_PARAM_COUNT; i++) o->total += o->n[i];
}

void sp_params_dense(const sp_model *m, sp_params *o) {
    const sp_arch *a = m->arch;
    const sp_config *c = &m->cfg;
    const int64_t D = c->hidden_size, V = c->vocab_size;
    memset(o, 0, sizeof *o);
    o->n[SP_PARAM_EMBED] = V * D + m->n_pos * D;
    for (int t = 0; t < a->n_layer; t++) {
        int64_t s[2];
        int nd;
        sp_arch_in_shape(a, c, t, s, &nd);
        o->n[part_of(&a->layer[t])] += c->n_layers * s[0] * (nd == 1 ? 1 : s[1]);
    }
    o->n[SP_PARAM_NORM] += D * (1 + (a->final_norm_bias != NULL));
    o->n[SP_PARAM_HEAD] = (m->has_head ? V * D : 0) + (m->has_head_bias ? V : 0);
    sum_parts(o);
}

void sp_params_plan(const sp_model *m, const sp_slice_plan *p, sp_params *o) {
    const sp_arch *a = m->arch;
    const int64_t V = m->cfg.vocab_size, d0 = p->width[SP_POS_IN][0], dl = p->width[SP_POS_OUT][p->L - 1];
    sp_config c = m->cfg;
    sp_arch_out outs[SP_ARCH_LAYER_MAX];
    const int n_out = sp_arch_layer_outputs(a, p->shortcuts, p->stock, outs);
    memset(o, 0, sizeof *o);
    o->n[SP_PARAM_EMBED] = V * d0 + m->n_pos * d0;
    for (int64_t l = 0; l < p->L; l++) {
        int64_t w[SP_POS_COUNT], s[2];
        char nm[256];
        int nd;
        sp_slice_plan_layer_widths(p, l, w);
        c.intermediate_size = p->ffn[l];
        for (int k = 0; k < n_out; k++) {
            sp_arch_out_tensor(a, &c, &outs[k], l, w, nm, s, &nd);
            enum sp_param_part part = outs[k].kind == SP_OUT_SHORTCUT ? SP_PARAM_SHORTCUT : part_of(&a->layer[outs[k].t]);
            o->n[part] += s[0] * (nd == 1 ? 1 : s[1]);
        }
    }
    if (p->stock) o->n[SP_PARAM_NORM] += dl * (1 + (a->final_norm_bias != NULL)); /* the final norm's γ [and β] */
    /* The head: its own tensor unless kept tied; a bias when the input has
     * one or, in slicepipe's format, a final LayerNorm's β goes through the
     * head (output.c). */
    o->n[SP_PARAM_HEAD] = (p->tied_head ? 0 : V * dl) + (m->has_head_bias || (a->final_norm_bias && !p->stock) ? V : 0);
    sum_parts(o);
}

static int alloc_arrays(const sp_model *m, sp_slice_plan *p) {
    for (int k = 0; k < SP_POS_COUNT; k++)
        if (!p->width[k]) SP_TRY(sp_calloc((void **)&p->width[k], p->L, 8, "slice plan widths"));
    if (!p->ffn) SP_TRY(sp_calloc((void **)&p->ffn, p->L, 8, "slice plan"));
    if (!p->heads) SP_TRY(sp_calloc((void **)&p->heads, p->L, 8, "slice plan"));
    for (int64_t l = 0; l < p->L; l++) {
        p->ffn[l] = m->cfg.intermediate_size;
        p->heads[l] = m->cfg.n_heads;
    }
    return 0;
}

/* A SliceGPT policy under [slicing] params: the widest uniform d (a
 * multiple of round_to) whose output keeps at most the target. */
static int fit_params(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p) {
    sp_params dense, out;
    sp_params_dense(m, &dense);
    const double target = mf->params * (double)dense.total;
    for (int64_t d = p->D - p->D % mf->round_to; d >= 1; d -= mf->round_to) {
        p->d_try = d;
        SP_TRY(p->policy->make(mf, m, p));
        sp_params_plan(m, p, &out);
        if ((double)out.total <= target) return 0;
        SP_TRY(alloc_arrays(m, p)); /* the next try starts clean */
    }
    p->d_try = mf->round_to <= p->D ? mf->round_to : 1;
    SP_TRY(p->policy->make(mf, m, p));
    sp_params_plan(m, p, &out);
    return sp_fail(SP_EX_USAGE, "%s: [slicing] params = %g asks for at most %.0f of the dense model's %lld parameters, and "
                                "the narrowest width this policy can write (d = %lld) still keeps %lld; raise params",
                   mf->path, mf->params, target, (long long)dense.total, (long long)p->d_try, (long long)out.total);
}

int sp_slice_plan_make(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p) {
    memset(p, 0, sizeof *p);
    p->policy = sp_slice_policy_of(mf);
    p->title = p->policy->title;
    p->about = p->policy->about;
    p->L = m->cfg.n_layers;
    p->D = m->cfg.hidden_size;
    p->params_target = mf->has_params ? mf->params : 0;
    SP_TRY(alloc_arrays(m, p));
    if (mf->has_params && !p->policy->fits_params) SP_TRY(fit_params(mf, m, p));
    else SP_TRY(p->policy->make(mf, m, p));
    /* What the pipeline serves: residual widths, and pruned MLPs under prune_ffn. */
    for (int64_t l = 0; l < p->L; l++) {
        SP_ASSERT(p->heads[l] == m->cfg.n_heads && p->ffn[l] >= 1 && p->ffn[l] <= m->cfg.intermediate_size);
        SP_ASSERT(p->prune_ffn || p->ffn[l] == m->cfg.intermediate_size);
        SP_ASSERT(p->ffn[l] == p->ffn[0]); /* config.json has one intermediate_size */
        for (int k = 0; k < SP_POS_COUNT; k++) SP_ASSERT(p->width[k][l] >= 1 && p->width[k][l] <= p->D);
    }
    SP_ASSERT((p->identity ? !p->shortcuts && !p->survey && !p->layer_pcas
                           : p->shortcuts != p->survey && (p->survey ? p->layer_pcas == 0 : p->layer_pcas > 0)) &&
              p->stock == p->policy->stock && (!p->tied_head || p->identity));
    return 0;
}

void sp_slice_plan_free(sp_slice_plan *p) {
    for (int k = 0; k < SP_POS_COUNT; k++) free(p->width[k]);
    free(p->ffn);
    free(p->heads);
    memset(p, 0, sizeof *p);
}

int sp_slice_plan_uniform(const sp_manifest *mf, sp_slice_plan *p) {
    const int64_t d = p->d_try ? p->d_try : sp_slice_width(p->D, mf->sparsity, mf->round_to);
    if (d < 1)
        return sp_fail(SP_EX_USAGE, "%s: sparsity %g with round_to %lld leaves no width of D=%lld", mf->path,
                       mf->sparsity, (long long)mf->round_to, (long long)p->D);
    for (int64_t l = 0; l < p->L; l++) p->width[SP_POS_IN][l] = p->width[SP_POS_MID][l] = p->width[SP_POS_OUT][l] = d;
    return 0;
}

void sp_slice_plan_layer_widths(const sp_slice_plan *p, int64_t l, int64_t w[SP_POS_COUNT]) {
    for (int k = 0; k < SP_POS_COUNT; k++) w[k] = p->width[k][l];
}
