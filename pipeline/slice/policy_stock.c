/* pipeline/slice/policy_stock.c — [slicing] policy = "stock"
 * (docs/algorithm.md §12): the family's own architecture, smaller. Every
 * layer's MLP keeps its k highest-scoring neurons, and its down projection
 * is refit by ridge least squares to the unpruned MLP's output on the
 * already-compressed model's signals; with split > 0 the residual stream is
 * also cut to width d in the global basis (policy_global.c's survey). The
 * plan meets [slicing] params: d takes `split` of the parameters to remove,
 * the FFN width k the rest. LayerNorm families (OPT, Phi-2's parallel block)
 * take the MLP cut alone: split 0, their tensors otherwise as read. */
#include <stdio.h>
#include <string.h>

#include <cJSON.h>

#include "error.h"
#include "slice_plan.h"

/* Fills widths d and FFN width k, and the flags that go with d; stock
 * before the first count, so that sp_params_plan counts the norm weights a
 * stock output writes. */
static void set_widths(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p, int64_t d, int64_t k) {
    p->stock = 1;
    for (int64_t l = 0; l < p->L; l++) {
        p->width[SP_POS_IN][l] = p->width[SP_POS_MID][l] = p->width[SP_POS_OUT][l] = d;
        p->ffn[l] = k;
    }
    p->identity = d == p->D;
    p->survey = !p->identity;
    p->survey_trace = mf->global_weighting == SP_WEIGHT_TRACE;
    /* Tied when config.json ties it, whether or not the checkpoint also stores
     * the tied copy (HF saves lm_head.weight for a tied Gemma); a rotated
     * head carries the final γ: no longer the embedding. */
    p->tied_head = p->identity && (!m->has_head || m->cfg.tie_word_embeddings);
    p->prune_ffn = 1;
}

static int64_t count(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p, int64_t d, int64_t k) {
    sp_params o;
    set_widths(mf, m, p, d, k);
    sp_params_plan(m, p, &o);
    return o.total;
}

static int stock_make(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p) {
    const sp_arch *a = m->arch;
    /* A stock LayerNorm at width d < D would take its mean over the kept
     * coordinates of a rotated stream (docs/algorithm.md §10, §12). */
    if ((a->norm == SP_BK_NORM_LAYER || a->parallel) && mf->split > 0)
        return sp_fail(SP_EX_USAGE, "%s: [slicing] split = %g: policy = \"stock\" on %s (a LayerNorm family) cuts the MLP "
                                    "alone, since a stock LayerNorm at a smaller hidden_size would average over the "
                                    "kept coordinates of a rotated stream, not the model's; set split = 0",
                       mf->path, mf->split, a->model_type);
    if (!mf->has_params)
        return sp_fail(SP_EX_USAGE, "%s: [slicing] policy = \"stock\" needs params = FRACTION, the share of the dense "
                                    "model's stored parameters to keep (for example 0.8)", mf->path);
    const int64_t F = m->cfg.intermediate_size, r = mf->round_to;
    sp_params dense;
    sp_params_dense(m, &dense);
    const double target = mf->params * (double)dense.total;
    /* d: the widest multiple of round_to (or D) whose model, MLPs whole,
     * removes at most split of what the target removes. */
    int64_t d = p->D;
    if (mf->split > 0) {
        const double budget = (double)dense.total - mf->split * ((double)dense.total - target);
        for (d = p->D - p->D % r; d >= r && (double)count(mf, m, p, d, F) > budget; d -= r) {}
        if (d < r) d = r;
        if ((double)count(mf, m, p, p->D, F) <= budget) d = p->D;
    }
    /* k: the widest multiple of round_to (or F) that meets the target. */
    int64_t k = F;
    if ((double)count(mf, m, p, d, F) > target) {
        for (k = F - F % r; k >= r && (double)count(mf, m, p, d, k) > target; k -= r) {}
        if (k < r) {
            const int64_t least = count(mf, m, p, d, r < F ? r : F);
            return sp_fail(SP_EX_USAGE, "%s: [slicing] params = %g asks for at most %.0f of the dense model's %lld "
                                        "parameters; at hidden width %lld the fewest this policy keeps is %lld (%lld "
                                        "neurons a layer); raise params%s", mf->path, mf->params, target,
                           (long long)dense.total, (long long)d, (long long)least, (long long)(r < F ? r : F),
                           d == p->D ? " or set split > 0 to cut the residual width too" : " or split");
        }
    }
    set_widths(mf, m, p, d, k);
    return 0;
}

static const char *score_name(const sp_manifest *mf) { return mf->ffn_score == SP_SCORE_LEVERAGE ? "leverage" : "energy"; }

static void stock_identity(const sp_manifest *mf, char *txt, size_t n) {
    size_t len = strlen(txt);
    snprintf(txt + len, n - len, "policy=stock\nsplit=%.17g\nffn_score=%s\nffn_ridge=%.17g\nweighting=%s\n",
             mf->split, score_name(mf), mf->ffn_ridge, mf->global_weighting == SP_WEIGHT_RAW ? "raw" : "trace");
    if (mf->split_choice) { /* chosen by split = "auto": its own job, not the fixed split's */
        len = strlen(txt);
        snprintf(txt + len, n - len, "split_auto=1\nsplit_holdout=%lld\n", (long long)mf->split_choice->holdout);
    }
}

static void stock_config(const sp_manifest *mf, cJSON *block) {
    cJSON_AddStringToObject(block, "policy", "stock");
    cJSON_AddNumberToObject(block, "split", mf->split);
    cJSON_AddStringToObject(block, "ffn_score", score_name(mf));
    cJSON_AddNumberToObject(block, "ffn_ridge", mf->ffn_ridge);
    if (mf->split_choice) cJSON_AddItemToObject(block, "split_auto", sp_split_choice_json(mf->split_choice));
}

const sp_slice_policy sp_policy_stock = {
    .name = "stock",
    .stock = 1,
    .fits_params = 1,
    .title = "stock policy (MLP neurons cut, down projection refit)",
    .about = "policy stock: MLP neurons pruned with a least-squares refit of the down projection (and, with split > 0, "
             "the global basis); the output is the stock architecture",
    .make = stock_make,
    .identity = stock_identity,
    .config = stock_config,
};
