/* pipeline/slice/plan.c — what a `slicepipe run` will do, decided before any work:
 * the widths, the read plan and the memory plan (job.h).
 *
 * The read plan lists, in the exact order compute consumes them, every input
 * tensor: the embedding twice (once to gather the calibration rows, once to
 * rotate it), each layer's tensors in the architecture table's order, the
 * final norm and the head (the embedding again when the head is tied). With
 * basis = "global", every layer is read once more between the two embedding
 * reads: the survey, a dense forward pass whose residual stream gives the
 * one basis (compute.c).
 *
 * The memory plan is the sum of what each module that allocates says it
 * will allocate (their *_bytes functions, which their inits use too): the
 * compute stage's buffers, the reader's staging buffer, the supervisor's
 * hashing buffer, each ring twice (its pages are resident in both processes
 * that map it), the stats page and a baseline per process. Spill chunks are
 * sized from what the budget leaves.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "job.h"

#define SLOT_PAYLOAD_MAX ((int64_t)1 << 20) /* ring slots carry at most 1 MiB */
#define STAGE_BYTES_MAX ((int64_t)8 << 20)  /* reader staging buffer */
#define OB_ELEMS_MAX ((int64_t)1 << 20)     /* output conversion block */
#define PROCESS_BASE_BYTES ((int64_t)6 << 20) /* code, libraries, stacks: measured 2–7 MiB a process */

int sp_plan_widths(job *j) {
    const sp_manifest *mf = j->mf;
    char what[4200];
    snprintf(what, sizeof what, "%s: [calibration] seqlen %lld", mf->path, (long long)j->shape.seqlen);
    SP_TRY(sp_model_check_positions(&j->m, j->shape.seqlen, what, "exceeds", what));
    return sp_slice_plan_make(mf, &j->m, &j->plan);
}

void sp_plan_layer_widths(const job *j, int64_t l, int64_t w[SP_POS_COUNT]) { sp_slice_plan_layer_widths(&j->plan, l, w); }

/* Appends one read; `commit` marks the reader's commit points (after the
 * embedding, after each layer, after the head). */
static int add_read(job *j, const char *name, int commit) {
    sp_read_item *it = &j->reads[j->n_reads];
    if (!(it->t = sp_ckpt_find(j->m.ckpt, name, &it->file)))
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is missing", j->mf->model_path, name);
    it->name = it->t->name;
    it->commit = commit;
    j->n_reads++;
    return 0;
}

int sp_plan_reads(job *j) {
    const sp_arch *a = j->m.arch;
    const int survey = j->plan.survey;
    const int n = 8 + a->n_layer * (int)j->shape.layers * (1 + survey);
    j->reads = calloc((size_t)n, sizeof *j->reads);
    j->layer_read0 = calloc((size_t)j->shape.layers + 1, sizeof *j->layer_read0);
    j->survey_read0 = calloc((size_t)j->shape.layers, sizeof *j->survey_read0);
    if (!j->reads || !j->layer_read0 || !j->survey_read0) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    j->n_reads = 0;
    /* The tables are read to be gathered, then again to be rotated; learned
     * positions (OPT) follow the embedding each time. */
    SP_TRY(add_read(j, a->embed, 0));
    if (a->pos_embed) SP_TRY(add_read(j, a->pos_embed, 0));
    char nm[256];
    for (int64_t l = 0; l < j->shape.layers && survey; l++) {
        j->survey_read0[l] = j->n_reads;
        for (int t = 0; t < a->n_layer; t++) /* a commit point per layer: kill tests reach into the survey */
            SP_TRY(add_read(j, sp_arch_layer_name(a, nm, l, a->layer[t].suffix), t == a->n_layer - 1));
    }
    j->embed_read2 = j->n_reads;
    SP_TRY(add_read(j, a->embed, !a->pos_embed));
    if (a->pos_embed) SP_TRY(add_read(j, a->pos_embed, 1));
    for (int64_t l = 0; l < j->shape.layers; l++) {
        j->layer_read0[l] = j->n_reads;
        for (int t = 0; t < a->n_layer; t++)
            SP_TRY(add_read(j, sp_arch_layer_name(a, nm, l, a->layer[t].suffix), t == a->n_layer - 1));
    }
    j->layer_read0[j->shape.layers] = j->n_reads;
    SP_TRY(add_read(j, a->final_norm, 0));
    if (a->final_norm_bias) SP_TRY(add_read(j, a->final_norm_bias, 0));
    if (j->m.has_head_bias) SP_TRY(add_read(j, a->head_bias, 0));
    SP_TRY(add_read(j, j->m.has_head ? a->head : a->embed, 1));
    SP_ASSERT(j->n_reads <= n);
    return 0;
}

/* The read-plan index a boundary's inputs end at: where a resume after it
 * starts reading, and how far its INPUT record reaches. After survey layer
 * l (basis = "global") the next is survey layer l + 1, then the embedding's
 * second read; after boundary `layer` (-1 the embedding, L the head) the
 * next layer or the end. */
int sp_plan_reads_after(const job *j, int64_t layer, int survey) {
    if (survey) return layer + 1 < j->shape.layers ? j->survey_read0[layer + 1] : j->embed_read2;
    return layer < j->shape.layers ? j->layer_read0[layer + 1] : j->n_reads;
}

/* The largest layer's bytes as stored: what one layer of prefetch needs. */
static int64_t layer_raw_bytes(const job *j) {
    int64_t best = 0;
    for (int64_t l = 0; l < j->shape.layers; l++) {
        int64_t b = 0;
        for (int i = j->layer_read0[l]; i < j->layer_read0[l + 1]; i++) b += j->reads[i].t->nbytes;
        if (b > best) best = b;
    }
    return best;
}

int64_t sp_plan_process_base_bytes(void) { return (SP_STAGE_COUNT + 1) * PROCESS_BASE_BYTES; }

/* The supervisor hashes before it forks the stages (resume.c): every input
 * tensor on the first run (and on a resume whose input files were touched);
 * on a resume the journaled outputs, the spill and the basis. It reads them
 * in chunks of the reader's staging size, into one buffer its peak RSS holds
 * on top of its baseline. */
int64_t sp_plan_hash_bytes(const job *j) { return j->stage_bytes; }

int64_t sp_plan_total(const job *j) {
    return sp_compute_plan_bytes(j) + 2 * sp_ring_bytes(j->ring_slots, j->ring_slot_bytes) +
           2 * sp_ring_bytes(j->out_slots, j->ring_slot_bytes) + j->stage_bytes + sp_plan_hash_bytes(j) +
           2 * j->shared_bytes + sp_plan_process_base_bytes() +
           2 * j->bk->process_bytes; /* the backend in the supervisor and compute */
}

int sp_plan_memory(job *j) {
    const sp_manifest *mf = j->mf;
    j->shared_bytes = (int64_t)sizeof(sp_shared) + (1 + j->n_pca * j->shape.layers) * j->shape.hidden * 8;
    const int64_t W = j->shape.tokens / j->shape.seqlen;
    /* Windows per layer pass: by the shapes alone (the bits of the forward's
     * GEMMs may depend on their rows); refit's passes take one at a time. */
    j->group = j->plan.refit ? 1 : sp_layer_group(&j->m.dims, j->shape.seqlen, j->shape.hidden, W);
    /* Buffers no larger than the largest tensor needs, up to their caps. */
    int64_t tmax = 0;
    for (int i = 0; i < j->n_reads; i++)
        if (j->reads[i].t->nbytes > tmax) tmax = j->reads[i].t->nbytes;
    int64_t payload = (tmax + 63) / 64 * 64;
    if (payload > SLOT_PAYLOAD_MAX) payload = SLOT_PAYLOAD_MAX;
    if (payload < 4096) payload = 4096;
    j->ring_slot_bytes = payload + 64;
    j->stage_bytes = (tmax + 7) / 8 * 8 < STAGE_BYTES_MAX ? (tmax + 7) / 8 * 8 : STAGE_BYTES_MAX;
    j->ob_elems = j->shape.vocab * j->shape.hidden < OB_ELEMS_MAX ? j->shape.vocab * j->shape.hidden : OB_ELEMS_MAX;
    /* One layer of prefetch, at most 1/32 of the budget: compute dominates, so
     * a deeper ring buys nothing, and its pages count in two processes' RSS. */
    j->ring_slots = layer_raw_bytes(j) / payload + 2;
    if (j->ring_slots * j->ring_slot_bytes > mf->memory_bytes / 32) j->ring_slots = mf->memory_bytes / 32 / j->ring_slot_bytes;
    if (j->stage_bytes > mf->memory_bytes / 64) j->stage_bytes = (mf->memory_bytes / 64 + 7) / 8 * 8;
    if (j->stage_bytes < 4096) j->stage_bytes = 4096;
    if (j->ring_slots < 4) j->ring_slots = 4;
    j->out_slots = 4;
    /* Rotation blocks: sp_bk_rot_block's where the extra bytes are at most
     * 1/32 of the budget (faster dgemm, the same bits), else 256 rows. */
    j->rot_block = 256;
    const int64_t small = sp_plan_total(j);
    j->rot_block = sp_bk_rot_block(j->shape.hidden);
    if (sp_plan_total(j) - small > mf->memory_bytes / 32) j->rot_block = 256;
    const int64_t per_window = sp_job_window_rows(j) * j->shape.hidden * 2 * (4 + (int64_t)sp_dtype_size(mf->spill_dtype));
    j->chunk_w = 0;
    int64_t avail = (mf->memory_bytes - sp_plan_total(j)) / 2;
    if (avail > ((int64_t)256 << 20)) avail = (int64_t)256 << 20;
    j->chunk_w = avail / per_window;
    if (j->chunk_w > W) j->chunk_w = W;
    /* Whole groups (sp_stream_groups): a chunk is a multiple of the group,
     * at least one, or all the windows. */
    if (j->chunk_w < W) j->chunk_w -= j->chunk_w % j->group;
    if (j->chunk_w < j->group) j->chunk_w = j->group;
    /* [resources] activations: the two spills held in memory (spill.h,
     * resident) where the whole plan fits the budget with them ("auto"), so
     * the passes between boundaries touch no file; the files still get every
     * boundary's rows, so a resume is the same either way. */
    j->spill_resident = 0;
    if (mf->activations != SP_ACT_DISK) {
        const int64_t res = sp_job_spills_bytes(j), with = sp_plan_total(j) + res, over = with - mf->memory_bytes;
        /* auto also leaves a quarter of what the machine (or the cgroup)
         * has free now: the budget may be larger than the machine. */
        const int64_t now = sp_mem_available_bytes();
        int room = now == INT64_MAX || with <= now / 4 * 3;
        if (over <= 0 && (room || mf->activations == SP_ACT_MEMORY)) j->spill_resident = 1;
        else if (mf->activations == SP_ACT_MEMORY)
            return sp_fail(SP_EX_USAGE, "%s: [resources] activations = \"memory\" holds %.1f MiB of activations, %.1f MiB "
                                        "more than [resources] memory (%.1f MiB) leaves; raise memory, or use \"auto\" or \"disk\"",
                           mf->path, res / 1048576.0, over / 1048576.0, mf->memory_bytes / 1048576.0);
    }
    /* A backend with device memory: the device part must fit what is free. */
    int64_t free_dev = j->bk->device_bytes_free ? j->bk->device_bytes_free(j->bk) : -1;
    int64_t need = sp_compute_plan_device_bytes(j);
    if (free_dev >= 0 && need > free_dev)
        return sp_fail(SP_EX_USAGE, "%s: the device memory plan needs %.1f MiB but the %s device has %.1f MiB free; lower "
                                    "[calibration] seqlen or use backend = \"cpu\"", mf->path, need / 1048576.0,
                       j->bk->name, free_dev / 1048576.0);
    return 0;
}

/* Bytes of the output's tensors, from its declaration. */
static int64_t output_bytes(const job *j) {
    int64_t n = 0;
    for (int i = 0; i < sp_stw_tensor_count(j->w); i++) n += sp_stw_tensor_bytes(j->w, i);
    return n;
}

void sp_plan_print(const job *j, FILE *f) {
    const sp_manifest *mf = j->mf;
    char b1[4096];
    int64_t plan = sp_plan_total(j), spill_bytes = sp_job_spills_bytes(j);
    char backend_note[96] = "";
    if (j->bk->process_bytes > 0)
        snprintf(backend_note, sizeof backend_note, ", backend %s's code and caches %.0f MiB", j->bk->name,
                 2 * j->bk->process_bytes / 1048576.0);
    fprintf(f,
            "plan: %s -> %s\n  %s, D %lld -> d %lld (%s %g, round_to %lld), %lld layers, output %s\n  %s\n"
            "  calibration %lld windows x %lld tokens = %lld tokens; backend %s (device plan %.1f MiB)\n"
            "  memory plan %.1f MiB (limit %.1f MiB): compute %.1f MiB with activation chunks of %lld windows\n"
            "    (layer passes of %lld at a time, MLP chunks of %lld rows),\n"
            "    rings %.1f MiB (weights %lld slots, output %lld, of %.0f KiB; counted twice: both ends map\n"
            "    them), reader staging %.1f MiB, the supervisor's hashing buffer %.1f MiB,\n"
            "    4 processes' baseline %.0f MiB%s\n"
            "  disk: spill %.1f MiB (%s%s), output %.1f MiB\n",
            sp_path_shown(mf->model_path, b1), mf->output_path, j->m.arch->model_type, (long long)j->shape.hidden, (long long)j->plan.width[SP_POS_IN][0],
            mf->has_params ? "params" : "sparsity", mf->has_params ? mf->params : mf->sparsity, (long long)mf->round_to, (long long)j->shape.layers, sp_dtype_st_name(j->out_dtype),
            j->plan.about,
            (long long)mf->calib_nsamples, (long long)j->shape.seqlen, (long long)j->shape.tokens, j->bk->name,
            sp_compute_plan_device_bytes(j) / 1048576.0, plan / 1048576.0,
            mf->memory_bytes / 1048576.0, sp_compute_plan_bytes(j) / 1048576.0, (long long)j->chunk_w, (long long)j->group,
            (long long)sp_layer_mlp_rows(&j->m.dims, j->group * j->shape.seqlen),
            (sp_ring_bytes(j->ring_slots, j->ring_slot_bytes) + sp_ring_bytes(j->out_slots, j->ring_slot_bytes)) / 1048576.0,
            (long long)j->ring_slots, (long long)j->out_slots, j->ring_slot_bytes / 1024.0, j->stage_bytes / 1048576.0,
            sp_plan_hash_bytes(j) / 1048576.0, sp_plan_process_base_bytes() / 1048576.0, backend_note, spill_bytes / 1048576.0,
            mf->spill_dtype == SP_DTYPE_BF16 ? "bf16" : "f32",
            j->spill_resident ? "; held in memory too, in the compute plan, and written at each layer boundary" : "; streamed",
            output_bytes(j) / 1048576.0);
    sp_params pd, po;
    sp_params_dense(&j->m, &pd);
    sp_params_plan(&j->m, &j->plan, &po);
    fprintf(f, "  parameters: %lld -> %lld (%.4f of dense", (long long)pd.total, (long long)po.total,
            (double)po.total / (double)pd.total);
    if (mf->has_params) fprintf(f, "; target %.4g", mf->params);
    fprintf(f, ")");
    if (j->plan.prune_ffn) fprintf(f, ", MLP %lld -> %lld neurons a layer", (long long)j->shape.ffn, (long long)j->plan.ffn[0]);
    fprintf(f, "%s\n", j->plan.tied_head ? ", head kept tied" : "");
    for (int i = 0; i < SP_PARAM_COUNT; i++)
        fprintf(f, "    %-10s %12lld -> %12lld\n", sp_param_part_names[i], (long long)pd.n[i], (long long)po.n[i]);
}
