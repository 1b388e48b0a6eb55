/* pipeline/run/slice.c — `slicepipe run`: the supervisor.
 *
 * It validates every input and the manifest's promises before any work,
 * plans the widths, the reads, the output layout and the memory (plan.c,
 * output.c), opens or resumes the job (resume.c), runs the three stage
 * processes (stages.c; the math is in compute.c), and finally writes
 * config.json, copies the tokenizer (output.c), evaluates (if [eval]) and
 * writes the report; with [output] gguf, the finished job is then exported
 * to <output>/model.gguf (export.c). Nothing is written before validation
 * has passed.
 */
#include "slice.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "blas_core.h"
#include "calib.h"
#include "error.h"
#include "eval.h"
#include "export.h"
#include "fileio.h"
#include "job.h"
#include "lock.h"
#include "report.h"
#include "sp_version.h"

/* The spill folder: [resources] spill_dir, or <output>/.slicepipe. The
 * spills are named after the job (a hash of the output folder's canonical
 * path), so two jobs sharing a spill folder never touch each other's files;
 * they are created exclusively (io/base/spill.h) under the job's lock. */
static int prepare_spill(job *j) {
    char dir[4096];
    if (j->mf->spill_dir) snprintf(dir, sizeof dir, "%s", j->mf->spill_dir);
    else snprintf(dir, sizeof dir, "%s/.slicepipe", j->mf->output_path);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the spill folder", dir);
    if (access(dir, W_OK | X_OK) != 0) return sp_fail_errno(SP_EX_CANTCREAT, "%s: spill folder is not writable", dir);
    char *rp = realpath(j->mf->output_path, NULL);
    if (!rp) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot resolve the output folder", j->mf->output_path);
    uint64_t tag = XXH3_64bits(rp, strlen(rp));
    free(rp);
    size_t n = strlen(dir) + 40;
    j->spill_a = malloc(n);
    j->spill_b = malloc(n);
    if (!j->spill_a || !j->spill_b) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    snprintf(j->spill_a, n, "%s/spill-%016llx-a.act", dir, (unsigned long long)tag);
    snprintf(j->spill_b, n, "%s/spill-%016llx-b.act", dir, (unsigned long long)tag);
    return 0;
}

/* [output] gguf needs an output llama.cpp runs: refused (64) before any
 * work. The policy and the family first; once the plan is made (j != NULL),
 * the export's own checks on what the output will be (its width, its head,
 * the tokenizer it carries). */
static int check_gguf(const sp_manifest *mf, const sp_model *m, const job *j) {
    if (mf->gguf_type < 0) return 0;
    const char *t = sp_gguf_ttype_name(mf->gguf_type);
    const sp_slice_policy *policy = sp_slice_policy_of(mf);
    if (!policy->stock)
        return sp_fail(SP_EX_USAGE, "%s: [output] gguf = \"%s\" needs a stock architecture, but [slicing] basis = \"%s\" "
                       "adds shortcut matrices llama.cpp cannot run; use [slicing] basis = \"global\"", mf->path, t,
                       policy->name);
    if (mf->gguf_weighting == SP_EXPORT_WEIGHT_CALIB && (!sp_gguf_ttype_is_block(mf->gguf_type) || !mf->calib_tokens))
        return sp_fail(SP_EX_USAGE, "%s: [output] gguf_weighting = \"calib\" needs a block type (gguf = \"q8_0\", \"q5_1\", \"q5_0\", "
                       "\"q4_1\" or \"q4_0\"; here \"%s\") and [calibration] tokens (a token file, not text)", mf->path, t);
    if (!m->arch->gguf.arch)
        return sp_fail(SP_EX_USAGE, "%s: [output] gguf = \"%s\": the model's family '%s' has no llama.cpp architecture; remove the "
                       "gguf key", mf->path, t, m->cfg.family->model_type);
    int rc = j ? sp_export_check(m, j->plan.width[SP_POS_IN][0], j->plan.tied_head) : 0;
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        return sp_fail(SP_EX_USAGE, "%s: [output] gguf = \"%s\": the sliced model could not be exported: %s; remove the gguf key",
                       mf->path, t, msg);
    }
    return 0;
}

/* [output] gguf: the finished output to <output>/model.gguf, journaled in
 * the job directory (gguf.journal, kept like the job's journal) under the
 * job's lock. A rerun resumes an interrupted export; on a complete job it
 * re-verifies the file by hash, or writes it again when missing or changed. */
static int write_gguf(const job *j, sp_export_stats *gs) {
    char hint[4200];
    snprintf(hint, sizeof hint, "run `slicepipe run %s --restart`", j->mf->path);
    char *out = sp_job_join(j->mf->output_path, "model.gguf"), *jp = sp_job_join(j->job_dir, "gguf.journal");
    sp_export_opts eo = {.type = j->mf->gguf_type, .quiet = j->o->quiet, .journal_path = jp, .restart_hint = hint,
                         .label = "slicepipe: gguf", .weighting = j->mf->gguf_weighting};
    if (eo.weighting == SP_EXPORT_WEIGHT_CALIB) { /* check_gguf: a block type and a token file */
        eo.calib_tokens = j->mf->calib_tokens;
        eo.calib_seqlen = j->mf->calib_seqlen;
        eo.calib_windows = j->mf->calib_nsamples;
        eo.threads = (int)j->mf->threads;
    }
    int rc = out && jp ? sp_export_gguf(j->mf->output_path, out, &eo, gs) : sp_fail(SP_EX_SOFTWARE, "out of memory");
    free(out);
    free(jp);
    return rc;
}

/* The summary's line for model.gguf. */
static void print_gguf(FILE *f, const char *prefix, const sp_manifest *mf, const sp_export_stats *gs, const char *how) {
    char b[4096];
    fprintf(f, "%s%s/model.gguf %s(%s, %lld bytes, xxh3-128 %s)\n", prefix,
            sp_path_shown(mf->output_path, b), how, sp_gguf_ttype_name(mf->gguf_type), (long long)gs->file_bytes, gs->xxh128);
}

static void on_stop_signal(int sig) {
    if (sp_stages_in_progress) {
        sp_stages_stop_signal = sig;
        return;
    }
    static const char m1[] = "slicepipe: stopped by SIGINT; nothing durable is lost: rerun the same command to resume\n";
    static const char m2[] = "slicepipe: stopped by SIGTERM; nothing durable is lost: rerun the same command to resume\n";
    ssize_t w = sig == SIGINT ? write(2, m1, sizeof m1 - 1) : write(2, m2, sizeof m2 - 1);
    (void)w;
    _exit(SP_EX_TEMPFAIL);
}

static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* The [eval] step runs in the supervisor after the stages have exited: its
 * memory (the evaluation's buffers, the supervisor's baseline and token
 * streams) must fit [resources] memory too. The activation chunk is sized
 * to fit (results do not depend on it); no chunk fitting is refused (64). */
static int plan_eval(job *j) {
    const sp_manifest *mf = j->mf;
    if (!mf->has_eval) return 0;
    if (j->bk->host_shared) j->eval_bk = j->bk;
    else SP_TRY(sp_bk_cpu_open(&j->eval_bk));
    const int64_t T = mf->eval_seqlen, D = j->shape.hidden;
    const int64_t W = mf->eval_windows > 0 ? mf->eval_windows : j->eval_toks.n / T;
    int64_t fixed = sp_eval_fixed_bytes(j->eval_bk, &j->m, T, W * T, 0) + 2 * D * D * 4 /* the sliced layer's shortcuts */ +
                    sp_plan_process_base_bytes() / (SP_STAGE_COUNT + 1) + j->eval_bk->process_bytes +
                    (j->calib.n + j->eval_toks.n) * 4;
    int64_t per = sp_eval_window_bytes(&j->m, T);
    int64_t cw = (mf->memory_bytes - fixed) / per, cw_default = SP_EVAL_CHUNK_BYTES_DEFAULT / (T * D * 12);
    if (cw < 1)
        return sp_fail(SP_EX_USAGE,
                       "%s: the [eval] step needs %.1f MiB (one window of %lld tokens) but [resources] memory allows "
                       "%.1f MiB; raise memory to at least %.0f MiB, or lower [eval] seqlen",
                       mf->path, (fixed + per) / 1048576.0, (long long)T, mf->memory_bytes / 1048576.0,
                       (fixed + per) / 1048576.0 + 1);
    if (cw > cw_default) cw = cw_default;
    if (cw < 1) cw = 1;
    j->eval_chunk_bytes = cw * T * D * 12;
    return 0;
}

static int run_eval(const job *j, const sp_model *m, sp_eval_result *r) {
    /* What this process already holds (its peak so far) is not available to
     * the chunks: sized again now, never above the plan's, at least one window. */
    const int64_t T = j->mf->eval_seqlen, W = j->mf->eval_windows > 0 ? j->mf->eval_windows : j->eval_toks.n / T;
    int64_t per = sp_eval_window_bytes(m, T);
    int64_t avail = j->mf->memory_bytes - j->mf->memory_bytes / 16 /* margin */ - sp_peak_rss_bytes() -
                    sp_eval_fixed_bytes(j->eval_bk, m, T, W * T, 0);
    int64_t cw = avail / per;
    int64_t cw_plan = j->eval_chunk_bytes / (T * j->shape.hidden * 12);
    if (cw > cw_plan) cw = cw_plan;
    if (cw < 1) cw = 1;
    sp_eval_opts eo = {.seqlen = j->mf->eval_seqlen, .windows = j->mf->eval_windows, .progress = !j->o->quiet,
                       .chunk_bytes = cw * T * j->shape.hidden * 12, .bk = j->eval_bk};
    return sp_eval(m, &j->eval_toks, &eo, r);
}

static void free_job(job *j) {
    if (j->eval_bk != j->bk) sp_bk_close(j->eval_bk);
    sp_bk_close(j->bk);
    sp_ring_free(j->wring);
    sp_ring_free(j->oring);
    if (j->sh) munmap(j->sh, (size_t)j->shared_bytes);
    if (j->in_hash) munmap(j->in_hash, (size_t)j->n_reads * 16);
    free(j->resume.in_expect);
    sp_journal_free(j->jr);
    sp_lock_free(j->lock);
    free(j->job_dir);
    free(j->basis_path[0]);
    free(j->basis_path[1]);
    free(j->resume.spill);
    free(j->spill_a);
    free(j->spill_b);
    free(j->reads);
    free(j->layer_read0);
    free(j->survey_read0);
    free(j->layer_out0);
    sp_slice_plan_free(&j->plan);
    sp_stw_free(j->w);
    sp_tokens_free(&j->calib);
    sp_tokens_free(&j->eval_toks);
    sp_model_close(&j->m);
}

/* Writes slicing.json and report.html, with the stages' statistics and the
 * compute stage's phases. */
static int write_report(const job *j, const sp_eval_result *dense, const sp_eval_result *sliced, double t_slice,
                        int64_t params_after, int64_t bytes_after, int64_t sup_rss) {
    sp_report_stage st[SP_STAGE_COUNT];
    sp_report_timing ph[SP_PROF_COUNT];
    int64_t rss = sup_rss;
    for (int s = 0; s < SP_STAGE_COUNT; s++) {
        const sp_stage_stat *x = &j->sh->st[s];
        st[s] = (sp_report_stage){sp_stage_names[s], (double)x->busy_ns / 1e9, (double)x->wait_ns / 1e9, x->bytes_read,
                                  x->bytes_written, x->peak_rss};
        rss += x->peak_rss;
    }
    for (int p = 0; p < SP_PROF_COUNT; p++)
        ph[p] = (sp_report_timing){sp_prof_names[p], (double)j->sh->st[SP_STAGE_COMPUTE].prof_ns[p] / 1e9};
    sp_report pipe = {.stages = st, .n_stages = SP_STAGE_COUNT, .supervisor_rss_bytes = sup_rss, .pipeline_seconds = t_slice,
                      .memory_plan_bytes = sp_plan_total(j), .phases = ph, .n_phases = SP_PROF_COUNT,
                      .behind_seconds = (double)j->sh->st[SP_STAGE_COMPUTE].behind_ns / 1e9};
    return sp_report_write_run(j->mf, &j->m, &j->plan, j->evals, dense, sliced, t_slice, params_after,
                               bytes_after, rss, &pipe, j->n_pca);
}

static void print_stages(const job *j, FILE *f) {
    double wall = sp_now() - j->t_start;
    for (int s = 0; s < SP_STAGE_COUNT; s++) {
        const sp_stage_stat *st = &j->sh->st[s];
        double busy = (double)st->busy_ns / 1e9, wait = (double)st->wait_ns / 1e9;
        double io = (double)(st->bytes_read + st->bytes_written);
        fprintf(f, "  %-8s busy %6.2fs (%3.0f%%) wait %6.2fs | read %8.1f MB written %8.1f MB | %.2f GB/s busy | peak RSS %.1f MiB\n",
                sp_stage_names[s], busy, 100.0 * busy / (wall > 0 ? wall : 1), wait, (double)st->bytes_read / 1e6,
                (double)st->bytes_written / 1e6, busy > 0 ? io / busy / 1e9 : 0.0, (double)st->peak_rss / 1048576.0);
    }
    const sp_stage_stat *c = &j->sh->st[SP_STAGE_COMPUTE];
    double total = 0;
    for (int p = 0; p < SP_PROF_COUNT; p++) total += (double)c->prof_ns[p] / 1e9;
    fprintf(f, "  compute phases:");
    for (int p = 0; p < SP_PROF_COUNT; p++)
        fprintf(f, " %s %.2fs (%.0f%%)%s", sp_prof_names[p], (double)c->prof_ns[p] / 1e9,
                total > 0 ? 100.0 * (double)c->prof_ns[p] / 1e9 / total : 0.0, p + 1 < SP_PROF_COUNT ? "," : "\n");
    if (c->behind_ns > 0) /* not a phase: the math ran meanwhile; what it waited for them is spill_io */
        fprintf(f, "  boundaries written behind the math: %.2f s, on their own thread\n", (double)c->behind_ns / 1e9);
}

int sp_slice_run(const sp_manifest *mf, const sp_run_opts *o) {
    if (mf->split_auto) return sp_split_auto_run(mf, o);
    job jb = {.mf = mf, .o = o}, *j = &jb;
    int rc;
    j->t_start = sp_now();
    if (!o->dry_run) install_stop_handlers();
    rc = sp_bk_open_prec(mf->backend, (enum sp_bk_prec)mf->precision, &j->bk);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        if (mf->precision != SP_BK_PREC_F32)
            return sp_fail(rc, "%s: [resources] backend = \"%s\", %s", mf->path, mf->backend, msg);
        return sp_fail(rc, "%s: [resources] backend: %s", mf->path, msg);
    }
    rc = sp_model_open(mf->model_path, &j->m);
    if (rc) {
        sp_bk_close(j->bk);
        return rc;
    }
    const sp_config *c = &j->m.cfg;
    if (c->sliced) {
        rc = sp_fail(SP_EX_DATAERR, "%s: this model was already sliced by slicepipe; slice the original instead",
                     mf->model_path);
        goto out;
    }
    rc = check_gguf(mf, &j->m, NULL);
    if (rc) goto out;
    j->shape.hidden = c->hidden_size, j->shape.layers = c->n_layers, j->shape.vocab = c->vocab_size, j->shape.ffn = c->intermediate_size;
    j->shape.q_width = c->n_heads * c->head_dim, j->shape.kv_width = c->n_kv_heads * c->head_dim;
    j->shape.seqlen = mf->calib_seqlen;
    enum sp_arch_pos pcas[2];
    j->n_pca = sp_arch_pca_positions(j->m.arch, pcas);
    if (sp_mul_i64(mf->calib_nsamples, mf->calib_seqlen, &j->shape.tokens)) {
        rc = sp_fail(SP_EX_USAGE, "%s: nsamples * seqlen overflows", mf->path);
        goto out;
    }
    j->out_dtype = mf->output_dtype != SP_DTYPE_INVALID ? mf->output_dtype : c->torch_dtype;
    rc = sp_plan_widths(j); /* the slice plan */
    if (!rc) rc = check_gguf(mf, &j->m, j); /* the export's refusals on the output, before any work */
    if (rc) goto out;
    j->n_outs = sp_arch_layer_outputs(j->m.arch, j->plan.shortcuts, j->plan.stock, j->outs);

    /* Validate every input before any work. */
    rc = sp_calib_load(mf, j->shape.vocab, !o->quiet, &j->calib); /* tokens, or text (pipeline/model/calib.h) */
    if (rc) goto out;
    if (j->calib.n < j->shape.tokens) {
        rc = sp_fail(SP_EX_DATAERR, "%s: %lld tokens, but nsamples %lld x seqlen %lld needs %lld", mf->calib_tokens,
                     (long long)j->calib.n, (long long)mf->calib_nsamples, (long long)j->shape.seqlen, (long long)j->shape.tokens);
        goto out;
    }
    if (mf->has_eval) {
        rc = sp_calib_load_eval(mf, j->shape.vocab, !o->quiet, &j->eval_toks);
        if (rc) goto out;
        int64_t need = 0;
        if (sp_mul_i64(mf->eval_seqlen, mf->eval_windows > 0 ? mf->eval_windows : 1, &need)) {
            rc = sp_fail(SP_EX_USAGE, "%s: [eval] windows %lld x seqlen %lld overflows", mf->path,
                         (long long)mf->eval_windows, (long long)mf->eval_seqlen);
            goto out;
        }
        if (j->eval_toks.n < need) {
            rc = sp_fail(SP_EX_DATAERR, "%s: %lld tokens, fewer than the %lld [eval] needs", mf->eval_tokens,
                         (long long)j->eval_toks.n, (long long)need);
            goto out;
        }
    }
    if (mf->has_eval) { /* everything the [eval] step refuses, refused now, not after the slicing */
        sp_eval_opts eo = {.seqlen = mf->eval_seqlen, .windows = mf->eval_windows};
        rc = sp_eval_check(&j->m, j->eval_toks.n, &eo);
        if (rc) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", sp_errmsg());
            rc = sp_fail(rc, "%s: [eval]: %s", mf->path, msg);
            goto out;
        }
    }
    rc = sp_output_check(j);
    if (!rc) rc = sp_plan_reads(j);
    if (!rc) rc = sp_stw_init(&j->w, mf->output_path, mf->shard_bytes);
    if (!rc) rc = sp_output_declare(j);
    if (!rc) rc = sp_plan_memory(j);
    if (rc) goto out;
    int64_t plan = sp_plan_total(j);
    if ((o->dry_run && !o->nested) || !o->quiet) sp_plan_print(j, o->dry_run ? stdout : stderr);
    if (plan > mf->memory_bytes) {
        rc = sp_fail(SP_EX_USAGE,
                     "%s: the memory plan needs %.1f MiB but [resources] memory allows %.1f MiB; raise memory to at least "
                     "%.0f MiB, or lower [calibration] seqlen",
                     mf->path, plan / 1048576.0, mf->memory_bytes / 1048576.0, plan / 1048576.0 + 1);
        goto out;
    }
    rc = plan_eval(j);
    if (rc) goto out;
    if (o->dry_run) goto out;
    rc = sp_output_prepare(mf->output_path);
    if (rc) goto out;
    rc = sp_resume_job_dir(j);
    if (rc) goto out;
    rc = prepare_spill(j);
    if (rc) goto out;
    j->threads = j->bk->set_threads(j->bk, mf->threads, j->shape.hidden); /* a resume reuses the journaled value */
    if (j->eval_bk && j->eval_bk != j->bk) j->eval_bk->set_threads(j->eval_bk, mf->threads, j->shape.hidden);
    j->bk->identity(j->bk, j->bk_identity, sizeof j->bk_identity);

    /* Shared state for the stages. */
    j->sh = mmap(NULL, (size_t)j->shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (j->sh == MAP_FAILED) {
        j->sh = NULL;
        rc = sp_fail_errno(SP_EX_SOFTWARE, "mmap of the stage statistics");
        goto out;
    }
    j->evals = (double *)(j->sh + 1);
    j->in_hash = mmap(NULL, (size_t)j->n_reads * 16, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (j->in_hash == MAP_FAILED) {
        j->in_hash = NULL;
        rc = sp_fail_errno(SP_EX_SOFTWARE, "mmap of the input hashes");
        goto out;
    }
    atomic_store(&j->sh->journaled_layer, -2);
    atomic_store(&j->sh->journaled_survey, -1);
    rc = sp_ring_init(&j->wring, j->ring_slots, j->ring_slot_bytes);
    if (!rc) rc = sp_ring_init(&j->oring, j->out_slots, j->ring_slot_bytes);
    if (!rc) rc = sp_stw_plan(j->w);
    if (rc) goto out;
    sp_resume_manifest_identity(j, j->id.manifest);
    rc = sp_resume_fingerprint(&j->m, j->id.input);
    snprintf(j->id.version, sizeof j->id.version, "%s", SP_VERSION);
    if (rc) goto out;
    int complete;
    sp_export_stats gs;
    char b1[4096], b2[4096];
    rc = sp_resume_open(j, &complete);
    if (!rc && complete && mf->gguf_type >= 0) {
        rc = write_gguf(j, &gs);
        if (!rc && !o->quiet)
            print_gguf(stderr, "slicepipe: ", mf, &gs, gs.reused ? "verified by hash " : gs.resumed_bytes ? "finished " : "written ");
    }
    if (rc || complete) goto out;

    if (j->resume.layer < j->shape.layers) {
        sp_stages_in_progress = 1;
        rc = sp_stages_run(j);
        sp_stages_in_progress = 0;
        if (!rc && sp_stages_stop_signal) on_stop_signal(sp_stages_stop_signal); /* the stages had just finished */
    }
    else rc = sp_stw_finish(j->w); /* everything is journaled: only the index may be missing */
    if (rc) goto out;

    rc = sp_output_config(j, j->id.input);
    if (!rc) rc = sp_output_side_files(j);
    if (rc) goto out;
    double t_slice = sp_now() - j->t_start;
    int64_t sup_rss = sp_peak_rss_bytes(); /* before the evaluation, which is not part of the pipeline */
    if (!o->quiet) {
        print_stages(j, stderr);
        fprintf(stderr, "  supervisor peak RSS %.1f MiB; all processes %.1f MiB of the %.1f MiB plan\n", sup_rss / 1048576.0,
                (sup_rss + j->sh->st[0].peak_rss + j->sh->st[1].peak_rss + j->sh->st[2].peak_rss) / 1048576.0,
                sp_plan_total(j) / 1048576.0);
    }

    /* The output is opened (and validated) once: for its counts and its evaluation. */
    sp_eval_result dense = {.nll = NAN, .ppl = NAN}, sliced = {.nll = NAN, .ppl = NAN};
    sp_model outm;
    rc = sp_model_open(mf->output_path, &outm);
    if (rc) goto out;
    int64_t params_after = outm.n_params, bytes_after = outm.n_bytes;
    if (mf->has_eval) {
        rc = run_eval(j, &j->m, &dense);
        if (!rc) rc = run_eval(j, &outm, &sliced);
    }
    sp_model_close(&outm);
    if (rc) goto out;
    rc = write_report(j, &dense, &sliced, t_slice, params_after, bytes_after, sup_rss);
    if (!rc) rc = sp_resume_done(j);
    int64_t rss = sup_rss;
    for (int s = 0; s < SP_STAGE_COUNT; s++) rss += j->sh->st[s].peak_rss;
    if (rc) goto out;
    sp_resume_clean(j);
    if (mf->gguf_type >= 0) {
        rc = write_gguf(j, &gs);
        if (rc) goto out;
    }
    if (o->nested) goto out;
    printf("sliced %s -> %s\n", sp_path_shown(mf->model_path, b1), sp_path_shown(mf->output_path, b2));
    printf("  width       %lld -> %lld (%s %g)\n", (long long)j->shape.hidden, (long long)j->plan.width[SP_POS_IN][0],
           mf->has_params ? "params" : "sparsity", mf->has_params ? mf->params : mf->sparsity);
    if (mf->split_choice) {
        const sp_split_choice *ch = mf->split_choice;
        printf("  split       auto: %g, the lowest held-back NLL (%lld calibration windows; dense %.6f):", mf->split,
               (long long)ch->holdout, ch->dense_nll);
        for (int i = 0; i < SP_SPLIT_CANDIDATES; i++) printf(" %g %.6f%s", sp_split_candidates[i], ch->nll[i], i + 1 < SP_SPLIT_CANDIDATES ? "," : "\n");
    }
    if (j->plan.prune_ffn) printf("  MLP         %lld -> %lld neurons a layer\n", (long long)j->shape.ffn, (long long)j->plan.ffn[0]);
    printf("  parameters  %lld -> %lld (%.1f%%)\n", (long long)j->m.n_params, (long long)params_after,
           100.0 * (double)params_after / (double)j->m.n_params);
    printf("  bytes       %lld -> %lld\n", (long long)j->m.n_bytes, (long long)bytes_after);
    printf("  time        %.2f s; peak RSS of the pipeline, all processes: %.1f MiB\n", t_slice, rss / 1048576.0);
    printf("  backend     %s, %lld thread%s\n", j->bk_identity, (long long)j->threads, j->threads == 1 ? "" : "s"); /* in the run identity */
    if (strncmp(j->bk->name, "cpu", 3) == 0) { /* which OpenBLAS kernels, and what they were chosen over (blas_core.h) */
        char kernels[256];
        sp_blas_core_describe(kernels, sizeof kernels);
        printf("  kernels     %s\n", kernels);
    }
    if (mf->has_eval)
        printf("  perplexity  dense %.4f (nll %.6f) -> sliced %.4f (nll %.6f)\n", dense.ppl, dense.nll, sliced.ppl,
               sliced.nll);
    printf("  report      %s/report.html\n", sp_path_shown(mf->output_path, b2));
    if (mf->gguf_type >= 0) print_gguf(stdout, "  gguf        ", mf, &gs, "");
out:
    free_job(j);
    return rc;
}

