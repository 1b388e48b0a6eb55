/* pipeline/slice.c — `slicepipe run`: the supervisor.
 *
 * It validates every input and the manifest's promises before any work,
 * plans the widths, the memory and the output layout, then runs the three
 * stage processes (stages.c; the math is in compute.c), and finally writes
 * config.json, copies the tokenizer, evaluates (if [eval]) and writes the
 * report. Nothing is written before validation has passed.
 *
 * Resume protocol (RELIABILITY.md "Crash safety and resume"). The job
 * directory is <output>/.slicepipe: lock, journal, spills (by default) and two
 * basis files.
 *
 *   start ─► lock (75 if held) ─► journal open: identity checked (65 if the
 *   manifest's meaning, the input fingerprint or the tool version differ),
 *   torn tail dropped, mid-file corruption refused (65)
 *     ├─ DONE recorded ───────► verify every tensor by hash; nothing to do
 *     ├─ no LAYER record ─────► fresh run (PARAMS appended once)
 *     └─ last LAYER record l ─► every journaled tensor re-hashed from its shard,
 *                               the spill and the basis re-hashed; the writer
 *                               reopens its shard after the last durable tensor;
 *                               reader and compute start at layer l + 1
 *   stages succeed ─► config.json, tokenizer, eval, report ─► DONE appended
 *   ─► spills and basis files removed.
 *
 * The run identity covers everything that sets the output's bits: the
 * manifest's meaning (paths, calibration token values, sparsity, round_to,
 * dtypes, shard size, backend), the input fingerprint and the tool version.
 * The BLAS thread count is journaled by the first run and reused by every
 * resume. [resources] memory is not part of it: results do not depend on the
 * chunk size (tested).
 */
#include "slice.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <dirent.h>

#include "error.h"
#include "eval.h"
#include "faults.h"
#include "fileio.h"
#include "job.h"
#include "journal.h"
#include "lock.h"
#include "report.h"
#include "sp_version.h"
#include "verify.h"

#define SLOT_PAYLOAD_MAX ((int64_t)1 << 20) /* ring slots carry at most 1 MiB */
#define STAGE_BYTES_MAX ((int64_t)8 << 20)  /* reader staging buffer */
#define OB_ELEMS_MAX ((int64_t)1 << 20)     /* output conversion block */

int64_t sp_slice_width(int64_t D, double sparsity, int64_t round_to) {
    int64_t d = (int64_t)floor((1.0 - sparsity) * (double)D);
    d -= d % round_to;
    return d;
}

static int declare(job *j) {
    char nm[256];
    int64_t s[2];
    s[0] = j->V, s[1] = j->d_in[0];
    SP_TRY(sp_stw_add(j->w, "model.embed_tokens.weight", j->out_dtype, 2, s));
    for (int64_t l = 0; l < j->L; l++) {
        int64_t di = j->d_in[l], dm = j->d_mid[l], dout = j->d_out[l];
        struct {
            const char *suf;
            int64_t a, b;
        } t[] = {{"self_attn.q_proj.weight", j->hq, di}, {"self_attn.k_proj.weight", j->hkv, di},
                 {"self_attn.v_proj.weight", j->hkv, di}, {"self_attn.o_proj.weight", dm, j->hq},
                 {"attn_shortcut_Q", di, dm},            {"mlp.gate_proj.weight", j->F, dm},
                 {"mlp.up_proj.weight", j->F, dm},       {"mlp.down_proj.weight", dout, j->F},
                 {"mlp_shortcut_Q", dm, dout}};
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            s[0] = t[i].a, s[1] = t[i].b;
            SP_TRY(sp_stw_add(j->w, (char *)sp_layer_tensor_name(nm, l, t[i].suf), j->out_dtype, 2, s));
        }
    }
    s[0] = j->V, s[1] = j->d_out[j->L - 1];
    return sp_stw_add(j->w, "lm_head.weight", j->out_dtype, 2, s);
}

/* XXH3-128 over every shard's name, size and header bytes: the input fingerprint. */
static int fingerprint(const sp_model *m, char hex[33]) {
    XXH3_state_t *st = XXH3_createState();
    if (!st) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    XXH3_128bits_reset(st);
    int rc = 0;
    char *hdr = NULL;
    for (int i = 0; i < sp_ckpt_shard_count(m->ckpt) && !rc; i++) {
        const sp_st_file *f = sp_ckpt_shard(m->ckpt, i);
        const char *p = strrchr(sp_st_path(f), '/');
        p = p ? p + 1 : sp_st_path(f);
        int64_t sz = sp_st_file_size(f), hl = sp_st_header_len(f) + 8;
        XXH3_128bits_update(st, p, strlen(p) + 1);
        XXH3_128bits_update(st, &sz, sizeof sz);
        rc = sp_alloc((void **)&hdr, hl, 1, "header");
        if (!rc) rc = sp_io_pread_full(sp_st_fd(f), hdr, hl, 0, sp_st_path(f));
        if (!rc) XXH3_128bits_update(st, hdr, (size_t)hl);
        free(hdr);
        hdr = NULL;
    }
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    snprintf(hex, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
    return rc;
}

static const char *dtype_torch(sp_dtype t) {
    return t == SP_DTYPE_BF16 ? "bfloat16" : t == SP_DTYPE_F16 ? "float16" : "float32";
}

static int write_config(job *j, const char *fp) {
    cJSON *c = cJSON_Parse(j->m.cfg.raw_json);
    if (!c) return sp_fail(SP_EX_SOFTWARE, "config.json re-parse failed");
    cJSON_DeleteItemFromObject(c, "tie_word_embeddings");
    cJSON_AddBoolToObject(c, "tie_word_embeddings", 0);
    cJSON_DeleteItemFromObject(c, "torch_dtype");
    cJSON_DeleteItemFromObject(c, "dtype"); /* newer transformers spelling; must not contradict */
    cJSON_AddStringToObject(c, "torch_dtype", dtype_torch(j->out_dtype));
    cJSON_DeleteItemFromObject(c, "slicepipe");
    cJSON *s = cJSON_AddObjectToObject(c, "slicepipe");
    cJSON_AddStringToObject(s, "version", SP_VERSION);
    cJSON_AddNumberToObject(s, "sparsity", j->mf->sparsity);
    cJSON_AddNumberToObject(s, "round_to", (double)j->mf->round_to);
    cJSON_AddNumberToObject(s, "d_embed", (double)j->d_in[0]);
    cJSON *ls = cJSON_AddArrayToObject(s, "layers");
    for (int64_t l = 0; l < j->L; l++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "d_in", (double)j->d_in[l]);
        cJSON_AddNumberToObject(o, "d_mid", (double)j->d_mid[l]);
        cJSON_AddNumberToObject(o, "d_out", (double)j->d_out[l]);
        cJSON_AddItemToArray(ls, o);
    }
    cJSON_AddStringToObject(s, "source_fingerprint", fp);
    char *txt = cJSON_Print(c);
    cJSON_Delete(c);
    if (!txt) return sp_fail(SP_EX_SOFTWARE, "out of memory printing config.json");
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", j->mf->output_path);
    int rc = sp_io_write_atomic(path, txt, (int64_t)strlen(txt));
    free(txt);
    return rc;
}

/* Copies the tokenizer and generation files that sit beside the checkpoint. */
static int copy_side_files(job *j) {
    static const char *files[] = {"tokenizer.bin",           "tokenizer.json",   "tokenizer.model",
                                  "tokenizer_config.json",   "special_tokens_map.json", "generation_config.json",
                                  "LICENSE"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", j->mf->model_path, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", j->mf->output_path, files[i]);
        if (access(src, F_OK) != 0) continue;
        char *buf;
        int64_t n;
        SP_TRY(sp_io_read_small(src, (int64_t)1 << 30, &buf, &n));
        int rc = sp_io_write_atomic(dst, buf, n);
        free(buf);
        SP_TRY(rc);
    }
    return 0;
}

/* mkdir -p: creates out and any missing parents. */
static int mkdirs(const char *out) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s", out) >= (int)sizeof p) return sp_fail(SP_EX_CANTCREAT, "%s: path too long", out);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the output directory (at %s)", out, p);
        *c = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the output directory", out);
    return 0;
}

static int prepare_output(const char *out) {
    struct stat st;
    if (stat(out, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return sp_fail(SP_EX_CANTCREAT, "%s: output path exists and is not a directory", out);
    } else {
        SP_TRY(mkdirs(out));
    }
    if (access(out, W_OK | X_OK) != 0) return sp_fail_errno(SP_EX_CANTCREAT, "%s: output directory is not writable", out);
    return 0;
}

/* The spill folder: [resources] spill_dir, or <output>/.slicepipe. */
/* The spill folder: [resources] spill_dir, or <output>/.slicepipe. */
static int prepare_spill(job *j) {
    char dir[4096];
    if (j->mf->spill_dir) snprintf(dir, sizeof dir, "%s", j->mf->spill_dir);
    else snprintf(dir, sizeof dir, "%s/.slicepipe", j->mf->output_path);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the spill folder", dir);
    if (access(dir, W_OK | X_OK) != 0) return sp_fail_errno(SP_EX_CANTCREAT, "%s: spill folder is not writable", dir);
    size_t n = strlen(dir) + 32;
    j->spill_a = malloc(n);
    j->spill_b = malloc(n);
    if (!j->spill_a || !j->spill_b) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    snprintf(j->spill_a, n, "%s/spill-a.act", dir);
    snprintf(j->spill_b, n, "%s/spill-b.act", dir);
    return 0;
}

/* The read plan, in the order compute consumes it (job.h). */
static int plan_reads(job *j) {
    static const char *sufs[9] = {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                  "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                                  "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
    j->n_reads = 4 + 9 * (int)j->L;
    j->reads = calloc((size_t)j->n_reads, sizeof *j->reads);
    char **names = calloc((size_t)j->n_reads, sizeof *names);
    if (!j->reads || !names) {
        free(names);
        return sp_fail(SP_EX_SOFTWARE, "out of memory");
    }
    int k = 0;
    names[k++] = strdup("model.embed_tokens.weight");
    names[k++] = strdup("model.embed_tokens.weight");
    char nm[256];
    for (int64_t l = 0; l < j->L; l++)
        for (int i = 0; i < 9; i++) names[k++] = strdup(sp_layer_tensor_name(nm, l, sufs[i]));
    names[k++] = strdup("model.norm.weight");
    names[k++] = strdup(j->m.has_lm_head ? "lm_head.weight" : "model.embed_tokens.weight");
    int rc = 0;
    for (int i = 0; i < j->n_reads && !rc; i++) {
        if (!names[i]) rc = sp_fail(SP_EX_SOFTWARE, "out of memory");
        else if (!(j->reads[i].t = sp_ckpt_find(j->m.ckpt, names[i], &j->reads[i].file)))
            rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is missing", j->mf->model_path, names[i]);
        else j->reads[i].name = j->reads[i].t->name;
    }
    for (int i = 0; i < j->n_reads; i++) free(names[i]);
    free(names);
    return rc;
}

/* The largest layer's bytes as stored: what one layer of prefetch needs. */
static int64_t layer_raw_bytes(const job *j) {
    int64_t best = 0;
    for (int64_t l = 0; l < j->L; l++) {
        int64_t b = 0;
        for (int i = 0; i < 9; i++) b += j->reads[2 + 9 * l + i].t->nbytes;
        if (b > best) best = b;
    }
    return best;
}

#define PROCESS_BASE_BYTES ((int64_t)6 << 20) /* code, libraries, stacks: measured 2–7 MiB a process */

/* What the summed peak RSS of the four processes will be: the compute stage's
 * buffers, the reader's staging buffer, each ring twice (its pages are
 * resident in both processes that map it), the stats page and a baseline per
 * process. */
static int64_t plan_total(const job *j) {
    return sp_compute_plan_bytes(j) + 2 * sp_ring_bytes(j->ring_slots, j->ring_slot_bytes) +
           2 * sp_ring_bytes(j->out_slots, j->ring_slot_bytes) + j->stage_bytes + 2 * j->shared_bytes +
           (SP_STAGE_COUNT + 1) * PROCESS_BASE_BYTES;
}

static int run_eval(const job *j, const sp_model *m, sp_eval_result *r) {
    sp_eval_opts eo = {.seqlen = j->mf->eval_seqlen, .windows = j->mf->eval_windows, .progress = !j->o->quiet};
    return sp_eval(m, &j->eval_toks, &eo, r);
}

static void free_job(job *j) {
    sp_ring_free(j->wring);
    sp_ring_free(j->oring);
    if (j->sh) munmap(j->sh, (size_t)j->shared_bytes);
    sp_journal_free(j->jr);
    sp_lock_free(j->lock);
    free(j->job_dir);
    free(j->basis_path[0]);
    free(j->basis_path[1]);
    free(j->resume_spill);
    free(j->spill_a);
    free(j->spill_b);
    free(j->reads);
    free(j->d_in);
    free(j->d_mid);
    free(j->d_out);
    sp_stw_free(j->w);
    sp_tokens_free(&j->calib);
    sp_tokens_free(&j->eval_toks);
    sp_model_close(&j->m);
}

/* Adds the per-stage accounting to slicing.json (written by the report). */
static int add_stage_stats(const job *j, int64_t supervisor_rss, double wall_pipeline) {
    char path[4096];
    snprintf(path, sizeof path, "%s/slicing.json", j->mf->output_path);
    char *txt;
    SP_TRY(sp_io_read_small(path, (int64_t)1 << 30, &txt, NULL));
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    if (!root) return sp_fail(SP_EX_SOFTWARE, "%s: cannot re-read", path);
    cJSON *stages = cJSON_AddObjectToObject(root, "stages");
    int64_t sum = supervisor_rss;
    for (int s = 0; s < SP_STAGE_COUNT; s++) {
        const sp_stage_stat *st = &j->sh->st[s];
        cJSON *o = cJSON_AddObjectToObject(stages, sp_stage_names[s]);
        double busy = (double)st->busy_ns / 1e9;
        cJSON_AddNumberToObject(o, "busy_seconds", busy);
        cJSON_AddNumberToObject(o, "wait_seconds", (double)st->wait_ns / 1e9);
        cJSON_AddNumberToObject(o, "bytes_read", (double)st->bytes_read);
        cJSON_AddNumberToObject(o, "bytes_written", (double)st->bytes_written);
        cJSON_AddNumberToObject(o, "gb_per_s_busy", busy > 0 ? (double)(st->bytes_read + st->bytes_written) / busy / 1e9 : 0);
        cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)st->peak_rss);
        sum += st->peak_rss;
    }
    cJSON *sup = cJSON_AddObjectToObject(stages, "supervisor");
    cJSON_AddNumberToObject(sup, "peak_rss_bytes", (double)supervisor_rss);
    cJSON_AddNumberToObject(stages, "peak_rss_sum_bytes", (double)sum);
    cJSON_AddNumberToObject(stages, "wall_seconds", wall_pipeline);
    cJSON_AddNumberToObject(stages, "memory_plan_bytes", (double)plan_total(j));
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    if (!out) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    int rc = sp_io_write_atomic(path, out, (int64_t)strlen(out));
    free(out);
    return rc;
}

/* ---- the job directory, the journal, resume ---- */

static char *joinp(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}


/* The manifest's meaning: every setting that changes the output's bits, and
 * the calibration token values themselves. */
static void manifest_identity(const job *j, char hex[33]) {
    const sp_manifest *mf = j->mf;
    char txt[16384];
    snprintf(txt, sizeof txt,
             "slicepipe-manifest-1\nmodel=%s\ncalib=%s\nseqlen=%lld\nnsamples=%lld\nsparsity=%.17g\nround_to=%lld\n"
             "dtype=%s\nshard_bytes=%lld\nspill_dtype=%s\nbackend=%s\n",
             mf->model_path, mf->calib_tokens, (long long)mf->calib_seqlen, (long long)mf->calib_nsamples, mf->sparsity,
             (long long)mf->round_to, sp_dtype_st_name(j->out_dtype), (long long)mf->shard_bytes,
             sp_dtype_st_name(mf->spill_dtype), mf->backend);
    XXH3_state_t *st = XXH3_createState();
    SP_ASSERT(st);
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, txt, strlen(txt));
    XXH3_128bits_update(st, j->calib.ids, (size_t)j->N * sizeof(int32_t));
    XXH128_hash_t h = XXH3_128bits_digest(st);
    sp_hex128(h.high64, h.low64, hex);
    XXH3_freeState(st);
}

static int damaged(const job *j, const char *what) {
    return sp_fail(SP_EX_DATAERR, "%s: cannot resume: %s does not match the journal (the job directory is damaged); "
                                  "run `slicepipe run %s --restart` to start fresh",
                   j->job_dir, what, j->mf->path);
}

/* --restart: forget the job — journal, basis files, spills, partial shards. */
static void remove_job(job *j) {
    const char *names[] = {"journal", "basis-0.f64", "basis-1.f64"};
    for (size_t i = 0; i < 3; i++) {
        char *p = joinp(j->job_dir, names[i]);
        if (p) unlink(p);
        free(p);
    }
    unlink(j->spill_a);
    unlink(j->spill_b);
    DIR *d = opendir(j->mf->output_path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if ((n > 4 && !strcmp(e->d_name + n - 4, ".tmp")) || (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) ||
            !strcmp(e->d_name, "model.safetensors.index.json")) {
            char *p = joinp(j->mf->output_path, e->d_name);
            if (p) unlink(p);
            free(p);
        }
    }
    closedir(d);
}

/* Opens the job: lock, journal, replay, verification. *complete is set when
 * the journal says the job is done (and it verified). */
static int open_job(job *j, int *complete) {
    const sp_manifest *mf = j->mf;
    *complete = 0;
    j->resume_layer = -2;
    if (mkdir(j->job_dir, 0755) != 0 && errno != EEXIST)
        return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the job directory", j->job_dir);
    char *lp = joinp(j->job_dir, "lock"), *jp = joinp(j->job_dir, "journal");
    int rc = lp && jp ? sp_lock_acquire(lp, &j->lock) : sp_fail(SP_EX_SOFTWARE, "out of memory");
    free(lp);
    if (rc) {
        free(jp);
        return rc;
    }
    if (j->o->restart) remove_job(j);
    int64_t dropped = 0;
    rc = sp_journal_open(jp, &j->id, &j->jr, &dropped);
    free(jp);
    SP_TRY(rc);
    if (dropped > 0 && !j->o->quiet)
        fprintf(stderr, "slicepipe: dropped a torn journal tail of %lld bytes (an interrupted write)\n", (long long)dropped);

    const int nt = sp_stw_tensor_count(j->w);
    char(*hashes)[33] = calloc((size_t)nt, 33);
    const char **hp = calloc((size_t)nt, sizeof *hp);
    if (!hashes || !hp) {
        free(hashes);
        free(hp);
        return sp_fail(SP_EX_SOFTWARE, "out of memory");
    }
    int have_params = 0, last = -1, done = 0, n_tensor_recs = 0;
    for (int i = 0; i < sp_journal_count(j->jr) && !rc; i++) {
        const sp_jrec *r = sp_journal_at(j->jr, i);
        if (r->type == SP_REC_PARAMS && r->len == sizeof(sp_rec_params)) {
            sp_rec_params p;
            memcpy(&p, r->payload, sizeof p);
            have_params = 1;
            j->threads = p.threads;
        } else if (r->type == SP_REC_TENSOR && r->len == sizeof(sp_rec_tensor)) {
            sp_rec_tensor t;
            memcpy(&t, r->payload, sizeof t);
            if (t.index != n_tensor_recs || t.index >= nt || t.offset != sp_stw_tensor_file_offset(j->w, (int)t.index) ||
                t.length != sp_stw_tensor_bytes(j->w, (int)t.index) || t.hash[32] != 0)
                rc = damaged(j, "a tensor record");
            else memcpy(hashes[n_tensor_recs++], t.hash, 33);
        } else if (r->type == SP_REC_LAYER && r->len >= sizeof(sp_rec_layer)) {
            sp_rec_layer l;
            memcpy(&l, r->payload, sizeof l);
            if (l.layer < -1 || l.layer > j->L || l.n_eval_rows < 0 || l.n_eval_rows > 2 ||
                r->len != sizeof l + (uint32_t)(l.n_eval_rows * j->D * 8) || l.n_tensors_done > n_tensor_recs)
                rc = damaged(j, "a layer record");
            else {
                int64_t first = l.layer < 0 ? 0 : 1 + 2 * l.layer;
                if (l.n_eval_rows) memcpy(j->evals + first * j->D, r->payload + sizeof l, (size_t)(l.n_eval_rows * j->D * 8));
                last = i;
            }
        } else if (r->type == SP_REC_DONE) {
            done = 1;
        } else {
            rc = damaged(j, "a record of unknown type or size");
        }
    }
    if (!rc && done) {
        sp_verify_result vr;
        rc = sp_verify_model(mf->output_path, &vr);
        if (!rc) {
            *complete = 1;
            if (!j->o->quiet)
                fprintf(stderr, "slicepipe: %s is already complete; %lld tensors verified by hash (use --restart to redo it)\n",
                        mf->output_path, (long long)vr.tensors);
        }
    } else if (!rc && last >= 0) {
        sp_rec_layer l;
        memcpy(&l, sp_journal_at(j->jr, last)->payload, sizeof l);
        int n_done = (int)l.n_tensors_done;
        int expect = l.layer >= j->L ? nt : 1 + 9 * (int)(l.layer + 1);
        if (n_done != expect) rc = damaged(j, "the tensor count of the last layer record");
        for (int i = 0; i < n_done && !rc; i++) {
            char hex[33];
            rc = sp_io_xxh128_range(sp_stw_tensor_path_now(j->w, i), sp_stw_tensor_file_offset(j->w, i), sp_stw_tensor_bytes(j->w, i),
                            hex);
            if (!rc && strcmp(hex, hashes[i]) != 0) {
                char what[512];
                snprintf(what, sizeof what, "tensor '%s' in %s", sp_stw_tensor_name(j->w, i), sp_stw_tensor_path_now(j->w, i));
                rc = damaged(j, what);
            }
            hp[i] = hashes[i];
        }
        if (!rc && l.layer < j->L) {
            char hex[33];
            l.spill[sizeof l.spill - 1] = 0;
            if (strchr(l.spill, '/') || (strcmp(l.spill, "spill-a.act") && strcmp(l.spill, "spill-b.act")))
                rc = damaged(j, "the spill name");
            if (!rc) {
                j->resume_spill = strcmp(l.spill, "spill-a.act") ? strdup(j->spill_b) : strdup(j->spill_a);
                rc = j->resume_spill ? sp_spill_hash_file(j->resume_spill, hex) : sp_fail(SP_EX_SOFTWARE, "out of memory");
                if (rc == SP_EX_NOINPUT || (!rc && strcmp(hex, l.spill_hash))) rc = damaged(j, j->resume_spill);
            }
            if (!rc) {
                const char *bp = j->basis_path[l.basis_idx & 1];
                struct stat st;
                rc = stat(bp, &st) == 0 && st.st_size == j->D * j->D * 8 ? sp_io_xxh128_range(bp, 0, j->D * j->D * 8, hex)
                                                                         : damaged(j, bp);
                if (!rc && strcmp(hex, l.basis_hash)) rc = damaged(j, bp);
            }
        }
        if (!rc) rc = sp_stw_resume(j->w, n_done, hp);
        if (!rc) {
            j->resume_layer = l.layer;
            atomic_store(&j->sh->journaled_layer, l.layer);
            j->read_start = 2 + 9 * (int)(l.layer + 1);
            j->out_start = n_done;
            j->tensors_journaled = n_done;
            if (!j->o->quiet)
                fprintf(stderr, "slicepipe: resuming after %s: %d tensors, the spill and the basis verified by hash\n",
                        l.layer < 0 ? "the embedding" : l.layer >= j->L ? "the head" : "a layer", n_done);
            if (!j->o->quiet && l.layer >= 0 && l.layer < j->L)
                fprintf(stderr, "slicepipe: layers 1-%lld of %lld are done\n", (long long)l.layer + 1, (long long)j->L);
        }
    }
    if (!rc && !have_params) {
        sp_rec_params p = {.threads = j->threads, .n_layers = j->L, .n_tensors = nt, .hidden = j->D};
        rc = sp_journal_append(j->jr, SP_REC_PARAMS, &p, sizeof p);
    }
    free(hashes);
    free(hp);
    return rc;
}

/* After the stages: the journal handle the writer used is stale in this
 * process; reopen it to append DONE. */
static int journal_done(job *j) {
    sp_journal_free(j->jr);
    j->jr = NULL;
    char *jp = joinp(j->job_dir, "journal");
    if (!jp) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    int64_t dropped;
    int rc = sp_journal_open(jp, &j->id, &j->jr, &dropped);
    free(jp);
    if (!rc) rc = sp_journal_append(j->jr, SP_REC_DONE, "done", 4);
    if (!rc) sp_fault_commit_point("supervisor");
    return rc;
}

/* The job is done: its scratch goes (the journal and the lock stay, for
 * `slicepipe status` and to answer a rerun at once). */
static void clean_job(job *j) {
    unlink(j->spill_a);
    unlink(j->spill_b);
    unlink(j->basis_path[0]);
    unlink(j->basis_path[1]);
}

/* A path for display: canonical when it exists, as given otherwise. */
static const char *shown(const char *path, char buf[4096]) {
    char *r = realpath(path, NULL);
    snprintf(buf, 4096, "%s", r ? r : path);
    free(r);
    return buf;
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
}

int sp_slice_run(const sp_manifest *mf, const sp_run_opts *o) {
    job jb = {.mf = mf, .o = o}, *j = &jb;
    int rc;
    j->t_start = sp_now();
    if (mf->backend && strcmp(mf->backend, "cuda") == 0)
        return sp_fail(SP_EX_USAGE, "%s: [resources] backend = \"cuda\": this slicepipe has no CUDA backend yet (see "
                                    "gpu/README.md); use \"auto\" or \"cpu\"", mf->path);
    rc = sp_model_open(mf->model_path, &j->m);
    if (rc) return rc;
    const sp_config *c = &j->m.cfg;
    if (c->sliced) {
        rc = sp_fail(SP_EX_DATAERR, "%s: this model was already sliced by slicepipe; slice the original instead",
                     mf->model_path);
        goto out;
    }
    j->D = c->hidden_size, j->L = c->n_layers, j->V = c->vocab_size, j->F = c->intermediate_size;
    j->hq = c->n_heads * c->head_dim, j->hkv = c->n_kv_heads * c->head_dim;
    j->T = mf->calib_seqlen;
    if (sp_mul_i64(mf->calib_nsamples, mf->calib_seqlen, &j->N)) {
        rc = sp_fail(SP_EX_USAGE, "%s: nsamples * seqlen overflows", mf->path);
        goto out;
    }
    j->out_dtype = mf->output_dtype != SP_DTYPE_INVALID ? mf->output_dtype : c->torch_dtype;
    j->d = sp_slice_width(j->D, mf->sparsity, mf->round_to);
    if (j->d < 1) {
        rc = sp_fail(SP_EX_USAGE, "%s: sparsity %g with round_to %lld leaves no width of D=%lld", mf->path, mf->sparsity,
                     (long long)mf->round_to, (long long)j->D);
        goto out;
    }
    rc = sp_alloc((void **)&j->d_in, j->L, 8, "widths");
    if (!rc) rc = sp_alloc((void **)&j->d_mid, j->L, 8, "widths");
    if (!rc) rc = sp_alloc((void **)&j->d_out, j->L, 8, "widths");
    if (rc) goto out;
    for (int64_t l = 0; l < j->L; l++) j->d_in[l] = j->d_mid[l] = j->d_out[l] = j->d;
    j->d_out[j->L - 1] = j->D; /* the head is not sliced */

    /* Validate every input before any work. */
    rc = sp_tokens_load(mf->calib_tokens, j->V, 0, &j->calib);
    if (rc) goto out;
    if (j->calib.n < j->N) {
        rc = sp_fail(SP_EX_DATAERR, "%s: %lld tokens, but nsamples %lld x seqlen %lld needs %lld", mf->calib_tokens,
                     (long long)j->calib.n, (long long)mf->calib_nsamples, (long long)j->T, (long long)j->N);
        goto out;
    }
    if (mf->has_eval) {
        rc = sp_tokens_load(mf->eval_tokens, j->V, 0, &j->eval_toks);
        if (rc) goto out;
        int64_t need = mf->eval_seqlen * (mf->eval_windows > 0 ? mf->eval_windows : 1);
        if (j->eval_toks.n < need) {
            rc = sp_fail(SP_EX_DATAERR, "%s: %lld tokens, fewer than the %lld [eval] needs", mf->eval_tokens,
                         (long long)j->eval_toks.n, (long long)need);
            goto out;
        }
    }
    rc = plan_reads(j);
    if (rc) goto out;

    /* The memory plan: rings (one layer of prefetch, at most 1/8 of the
     * budget), the compute stage's buffers, and spill chunks sized from what
     * is left. */
    j->shared_bytes = (int64_t)sizeof(sp_shared) + (1 + 2 * j->L) * j->D * 8;
    /* Buffers no larger than the largest tensor needs, up to their caps. */
    int64_t tmax = 0;
    for (int i = 0; i < j->n_reads; i++)
        if (j->reads[i].t->nbytes > tmax) tmax = j->reads[i].t->nbytes;
    int64_t payload = (tmax + 63) / 64 * 64;
    if (payload > SLOT_PAYLOAD_MAX) payload = SLOT_PAYLOAD_MAX;
    if (payload < 4096) payload = 4096;
    j->ring_slot_bytes = payload + 64;
    j->stage_bytes = (tmax + 7) / 8 * 8 < STAGE_BYTES_MAX ? (tmax + 7) / 8 * 8 : STAGE_BYTES_MAX;
    j->ob_elems = j->V * j->D < OB_ELEMS_MAX ? j->V * j->D : OB_ELEMS_MAX;
    /* One layer of prefetch, at most 1/32 of the budget: compute dominates, so
     * a deeper ring buys nothing, and its pages count in two processes' RSS. */
    j->ring_slots = layer_raw_bytes(j) / payload + 2;
    if (j->ring_slots * j->ring_slot_bytes > mf->memory_bytes / 32)
        j->ring_slots = mf->memory_bytes / 32 / j->ring_slot_bytes;
    if (j->stage_bytes > mf->memory_bytes / 64) j->stage_bytes = (mf->memory_bytes / 64 + 7) / 8 * 8;
    if (j->stage_bytes < 4096) j->stage_bytes = 4096;
    if (j->ring_slots < 4) j->ring_slots = 4;
    j->out_slots = 4;
    const int64_t W = j->N / j->T;
    const int64_t per_window = j->T * j->D * 2 * (4 + (int64_t)sp_dtype_size(mf->spill_dtype));
    j->chunk_w = 0;
    int64_t avail = (mf->memory_bytes - plan_total(j)) / 2;
    if (avail > ((int64_t)256 << 20)) avail = (int64_t)256 << 20;
    j->chunk_w = avail / per_window;
    if (j->chunk_w > W) j->chunk_w = W;
    if (j->chunk_w < 1) j->chunk_w = 1;
    int64_t plan = plan_total(j);
    int64_t spill_bytes = 2 * j->N * j->D * sp_dtype_size(mf->spill_dtype);
    int64_t out_bytes = j->V * j->d + j->V * j->D;
    for (int64_t l = 0; l < j->L; l++)
        out_bytes += (j->hq + 2 * j->hkv) * j->d_in[l] + j->d_mid[l] * j->hq + j->d_in[l] * j->d_mid[l] +
                     2 * j->F * j->d_mid[l] + j->d_out[l] * j->F + j->d_mid[l] * j->d_out[l];
    out_bytes *= sp_dtype_size(j->out_dtype);
    if (o->dry_run || !o->quiet) {
        FILE *f = o->dry_run ? stdout : stderr;
        char b1[4096];
        fprintf(f,
                "plan: %s -> %s\n  D %lld -> d %lld (sparsity %g, round_to %lld), %lld layers, output %s\n"
                "  calibration %lld windows x %lld tokens = %lld tokens\n"
                "  memory plan %.1f MiB (limit %.1f MiB): compute %.1f MiB with activation chunks of %lld windows,\n"
                "    rings %.1f MiB (weights %lld slots, output %lld, of %.0f KiB; counted twice: both ends map\n"
                "    them), reader staging %.1f MiB, 4 processes' baseline %.0f MiB\n"
                "  disk: spill %.1f MiB (%s), output ~%.1f MiB\n",
                shown(mf->model_path, b1), mf->output_path, (long long)j->D, (long long)j->d, mf->sparsity,
                (long long)mf->round_to, (long long)j->L, sp_dtype_st_name(j->out_dtype), (long long)mf->calib_nsamples, (long long)j->T,
                (long long)j->N, plan / 1048576.0, mf->memory_bytes / 1048576.0, sp_compute_plan_bytes(j) / 1048576.0,
                (long long)j->chunk_w,
                (sp_ring_bytes(j->ring_slots, j->ring_slot_bytes) + sp_ring_bytes(j->out_slots, j->ring_slot_bytes)) /
                    1048576.0,
                (long long)j->ring_slots, (long long)j->out_slots, j->ring_slot_bytes / 1024.0, j->stage_bytes / 1048576.0,
                (SP_STAGE_COUNT + 1) * PROCESS_BASE_BYTES / 1048576.0,
                spill_bytes / 1048576.0,
                mf->spill_dtype == SP_DTYPE_BF16 ? "bf16" : "f32", out_bytes / 1048576.0);
    }
    if (plan > mf->memory_bytes) {
        rc = sp_fail(SP_EX_USAGE,
                     "%s: the memory plan needs %.1f MiB but [resources] memory allows %.1f MiB; raise memory to at least "
                     "%.0f MiB, or lower [calibration] seqlen",
                     mf->path, plan / 1048576.0, mf->memory_bytes / 1048576.0, plan / 1048576.0 + 1);
        goto out;
    }
    if (o->dry_run) goto out;
    rc = prepare_output(mf->output_path);
    if (rc) goto out;
    j->job_dir = joinp(mf->output_path, ".slicepipe");
    if (!j->job_dir) {
        rc = sp_fail(SP_EX_SOFTWARE, "out of memory");
        goto out;
    }
    j->basis_path[0] = joinp(j->job_dir, "basis-0.f64");
    j->basis_path[1] = joinp(j->job_dir, "basis-1.f64");
    if (mkdir(j->job_dir, 0755) != 0 && errno != EEXIST) {
        rc = sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the job directory", j->job_dir);
        goto out;
    }
    rc = prepare_spill(j);
    if (rc) goto out;
    j->threads = sp_model_set_threads(&j->m, mf->threads); /* a resume reuses the journaled value */

    /* Shared state for the stages. */
    j->sh = mmap(NULL, (size_t)j->shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (j->sh == MAP_FAILED) {
        j->sh = NULL;
        rc = sp_fail_errno(SP_EX_SOFTWARE, "mmap of the stage statistics");
        goto out;
    }
    j->evals = (double *)(j->sh + 1);
    atomic_store(&j->sh->journaled_layer, -2);
    rc = sp_ring_init(&j->wring, j->ring_slots, j->ring_slot_bytes);
    if (!rc) rc = sp_ring_init(&j->oring, j->out_slots, j->ring_slot_bytes);
    if (!rc) rc = sp_stw_init(&j->w, mf->output_path, mf->shard_bytes);
    if (!rc) rc = declare(j);
    if (!rc) rc = sp_stw_plan(j->w);
    if (rc) goto out;
    manifest_identity(j, j->id.manifest);
    rc = fingerprint(&j->m, j->id.input);
    snprintf(j->id.version, sizeof j->id.version, "%s", SP_VERSION);
    if (rc) goto out;
    int complete;
    rc = open_job(j, &complete);
    if (rc || complete) goto out;

    if (j->resume_layer < j->L) rc = sp_stages_run(j);
    else rc = sp_stw_finish(j->w); /* everything is journaled: only the index may be missing */
    if (rc) goto out;

    rc = write_config(j, j->id.input);
    if (!rc) rc = copy_side_files(j);
    if (rc) goto out;
    double t_slice = sp_now() - j->t_start;
    int64_t sup_rss = sp_peak_rss_bytes(); /* before the evaluation, which is not part of the pipeline */
    if (!o->quiet) {
        print_stages(j, stderr);
        fprintf(stderr, "  supervisor peak RSS %.1f MiB; all processes %.1f MiB of the %.1f MiB plan\n", sup_rss / 1048576.0,
                (sup_rss + j->sh->st[0].peak_rss + j->sh->st[1].peak_rss + j->sh->st[2].peak_rss) / 1048576.0,
                plan_total(j) / 1048576.0);
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
    int64_t rss = sup_rss;
    for (int s = 0; s < SP_STAGE_COUNT; s++) rss += j->sh->st[s].peak_rss;
    rc = sp_report_write_run(j->mf, &j->m, j->d_in, j->d_mid, j->d_out, j->evals, &dense, &sliced, t_slice, params_after,
                             bytes_after, rss);
    if (!rc) rc = add_stage_stats(j, sup_rss, t_slice);
    if (!rc) rc = journal_done(j);
    if (rc) goto out;
    clean_job(j);
    char b1[4096], b2[4096];
    printf("sliced %s -> %s\n", shown(mf->model_path, b1), shown(mf->output_path, b2));
    printf("  width       %lld -> %lld (sparsity %g)\n", (long long)j->D, (long long)j->d, mf->sparsity);
    printf("  parameters  %lld -> %lld (%.1f%%)\n", (long long)j->m.n_params, (long long)params_after,
           100.0 * (double)params_after / (double)j->m.n_params);
    printf("  bytes       %lld -> %lld\n", (long long)j->m.n_bytes, (long long)bytes_after);
    printf("  time        %.2f s; peak RSS of the pipeline, all processes: %.1f MiB\n", t_slice, rss / 1048576.0);
    if (mf->has_eval)
        printf("  perplexity  dense %.4f (nll %.6f) -> sliced %.4f (nll %.6f)\n", dense.ppl, dense.nll, sliced.ppl,
               sliced.nll);
    printf("  report      %s/report.html\n", shown(mf->output_path, b2));
out:
    free_job(j);
    return rc;
}

/* `slicepipe status OUT_DIR`: how far a job got. Reads a copy of the journal,
 * so it never truncates a tail that a running writer is appending to. */
int sp_job_status(const char *out_dir) {
    char *jd = joinp(out_dir, ".slicepipe"), *jp = jd ? joinp(jd, "journal") : NULL, *lp = jd ? joinp(jd, "lock") : NULL;
    int rc = jd && jp && lp ? 0 : sp_fail(SP_EX_SOFTWARE, "out of memory");
    sp_run_identity id;
    if (!rc) rc = sp_run_identity_read(jp, &id);
    if (rc == SP_EX_NOINPUT) rc = sp_fail(SP_EX_NOINPUT, "%s: no slicepipe job here (no %s)", out_dir, jp);
    char *buf = NULL;
    int64_t n = 0;
    if (!rc) rc = sp_io_read_small(jp, (int64_t)1 << 30, &buf, &n);
    char tmp[4096];
    const char *td = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/slicepipe-status-XXXXXX", td && *td ? td : "/tmp");
    int fd = rc ? -1 : mkstemp(tmp);
    if (!rc && fd < 0) rc = sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create", tmp);
    if (!rc) rc = sp_io_write_full(fd, buf, n, tmp);
    if (fd >= 0) close(fd);
    free(buf);
    sp_journal *jr = NULL;
    int64_t dropped = 0;
    if (!rc) rc = sp_journal_open(tmp, &id, &jr, &dropped);
    if (fd >= 0) unlink(tmp);
    if (!rc) {
        sp_rec_params p = {0};
        int64_t last_layer = -2, tensors = 0;
        int done = 0;
        for (int i = 0; i < sp_journal_count(jr); i++) {
            const sp_jrec *r = sp_journal_at(jr, i);
            if (r->type == SP_REC_PARAMS && r->len == sizeof p) memcpy(&p, r->payload, sizeof p);
            if (r->type == SP_REC_TENSOR) tensors++;
            if (r->type == SP_REC_LAYER && r->len >= sizeof(sp_rec_layer)) {
                sp_rec_layer l;
                memcpy(&l, r->payload, sizeof l);
                last_layer = l.layer;
            }
            if (r->type == SP_REC_DONE) done = 1;
        }
        sp_lock *lk = NULL;
        int busy = sp_lock_acquire(lp, &lk);
        char holder[1024];
        snprintf(holder, sizeof holder, "%s", busy ? sp_errmsg() : "");
        sp_lock_free(lk);
        printf("job:         %s\n", out_dir);
        printf("state:       %s\n", done ? "complete" : busy == SP_EX_TEMPFAIL ? "running" : "interrupted: rerun the same "
                                                                                              "`slicepipe run` to resume");
        if (busy == SP_EX_TEMPFAIL) printf("             %s\n", holder);
        if (p.n_layers > 0)
            printf("layers:      %lld of %lld done%s\n", (long long)(last_layer < 0 ? 0 : last_layer >= p.n_layers ? p.n_layers : last_layer + 1),
                   (long long)p.n_layers, last_layer >= p.n_layers ? ", head done" : last_layer == -1 ? " (embedding done)" : "");
        printf("tensors:     %lld of %lld durable\n", (long long)tensors, (long long)p.n_tensors);
        printf("journal:     %d records, %lld bytes%s\n", sp_journal_count(jr), (long long)sp_journal_size_bytes(jr),
               dropped ? " (a torn tail would be dropped on resume)" : "");
        printf("identity:    manifest %s, input %s, slicepipe %s\n", id.manifest, id.input, id.version);
        printf("BLAS threads %lld (reused on resume)\n", (long long)p.threads);
    }
    sp_journal_free(jr);
    free(jd);
    free(jp);
    free(lp);
    return rc;
}
