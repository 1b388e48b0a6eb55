/* pipeline/slice/slice_plan.h — the slice plan: what a run keeps and how, decided
 * once per run from the manifest and the model (docs/pipeline.md §9).
 *
 * A policy (one file each: policy_per_layer.c, policy_global.c,
 * policy_stock.c) fills the
 * plan; everything after reads the plan: the read plan and the memory plan
 * (plan.c), the compute stage, the output declaration and config.json
 * (output.c), resume and the run identity (resume.c), progress (stages.c)
 * and the report. No code outside the plan module and the policy files asks
 * which policy runs.
 *
 * Adding a policy: a new policy_<name>.c with its sp_slice_policy, its entry
 * in slice_plan.c's table and its manifest value; the flags below say to the
 * pipeline what it needs, and a combination the pipeline does not serve yet
 * (say, fewer heads, or a different MLP width per layer) is refused by
 * sp_slice_plan_make.
 */
#ifndef SP_SLICE_PLAN_H
#define SP_SLICE_PLAN_H

#include <stdint.h>

#include "arch.h"
#include "manifest.h"
#include "model.h"

struct cJSON;

typedef struct sp_slice_plan {
    const struct sp_slice_policy *policy;
    const char *title, *about; /* what the report and --dry-run call this plan: the policy's, or a variant its make
                                * names (per-layer with refit) */
    int64_t L, D;
    /* The kept residual width at each position of each layer: width[pos][l]
     * (IN: the layer's input, MID: after attention, OUT: its output). The
     * embedding is written at width[IN][0], the head reads width[OUT][L−1]. */
    int64_t *width[SP_POS_COUNT];
    int64_t *ffn;      /* (L) MLP neurons kept (policy stock prunes them: prune_ffn) */
    int64_t *heads;    /* (L) query heads kept: every one */
    /* Where the bases come from. */
    int shortcuts;     /* a basis per position, each the PCA of its own signal, joined by shortcut matrices */
    int survey;        /* one basis for the whole stream, from a dense pass over the calibration windows first */
    int survey_trace;  /* the survey weighs each position's second moment by 1/trace (else raw sums) */
    int layer_pcas;    /* PCAs each layer makes (0 with a survey): at the family's PCA positions */
    /* What the output is. */
    int stock;         /* the family's own architecture at width[IN][0]: norm weights written, hidden_size, the
                        * embedding's sqrt(d) scale; else slicepipe's per-layer format (model_type
                        * slicepipe_sliced) */
    int identity;      /* no basis at all (width D everywhere): tensors go out as read, norms with their own γ */
    int tied_head;     /* the output keeps the head tied to the embedding (identity only: no head tensor written) */
    int prune_ffn;     /* the MLP's neurons are cut to ffn[l], the down projection refit (docs/algorithm.md §12) */
    int refit;         /* per-layer SliceGPT with o_proj and down_proj refit to the dense model's signals
                        * (docs/algorithm.md §14): the spills carry the dense stream beside the sliced one */
    double params_target; /* [slicing] params, or 0 */
    int64_t d_try;     /* with [slicing] params: the uniform width being tried (sp_slice_plan_uniform) */
} sp_slice_plan;

/* Stored parameters by component, every tensor counted (docs/algorithm.md §12). */
enum sp_param_part { SP_PARAM_EMBED, SP_PARAM_HEAD, SP_PARAM_ATTN, SP_PARAM_MLP, SP_PARAM_SHORTCUT, SP_PARAM_NORM, SP_PARAM_COUNT };
typedef struct sp_params {
    int64_t n[SP_PARAM_COUNT];
    int64_t total;
} sp_params;
extern const char *const sp_param_part_names[SP_PARAM_COUNT];
/* The dense model's stored tensors, from its configuration and family table. */
void sp_params_dense(const sp_model *m, sp_params *out);
/* The output a plan writes. */
void sp_params_plan(const sp_model *m, const sp_slice_plan *p, sp_params *out);

typedef struct sp_slice_policy {
    const char *name;  /* its [slicing] basis value */
    const char *about; /* one line for the printed plan */
    const char *title; /* a few words for the report: "SliceGPT", ... */
    int stock;         /* its plans' `stock`: known before the plan, for refusals made before any work */
    int fits_params;   /* make meets [slicing] params itself (else the plan module searches the uniform width) */
    /* Refuses (64, naming the manifest) a model this policy cannot serve;
     * then fills the plan's widths and flags (the arrays are allocated). */
    int (*make)(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p);
    /* Appends what it reads of the manifest beyond the common keys to the
     * run identity's text (resume.c): a changed value is refused on resume. */
    void (*identity)(const sp_manifest *mf, char *txt, size_t n);
    /* Adds its own keys to config.json's "slicepipe" block, after "basis"
     * (NULL: none). */
    void (*config)(const sp_manifest *mf, struct cJSON *block);
} sp_slice_policy;

extern const sp_slice_policy sp_policy_per_layer, sp_policy_global, sp_policy_stock;

/* The manifest's policy. */
const sp_slice_policy *sp_slice_policy_of(const sp_manifest *mf);

/* The plan of this run: the manifest's policy's. 0 or a sysexits status with
 * a message; free it with sp_slice_plan_free (also after a failure). */
int sp_slice_plan_make(const sp_manifest *mf, const sp_model *m, sp_slice_plan *p);
void sp_slice_plan_free(sp_slice_plan *p);

/* Every residual width set to the manifest's uniform d (sp_slice_width, or
 * with [slicing] params the d the plan module is trying), for a policy to
 * start from; 64 naming the manifest when d < 1. */
int sp_slice_plan_uniform(const sp_manifest *mf, sp_slice_plan *p);

/* width[pos][l] for the three positions of layer l. */
void sp_slice_plan_layer_widths(const sp_slice_plan *p, int64_t l, int64_t w[SP_POS_COUNT]);

/* The uniform kept width both policies start from: d = floor((1 − s)·D),
 * then d −= d mod round_to. */
int64_t sp_slice_width(int64_t D, double sparsity, int64_t round_to);

#endif
