/* pipeline/slice.c — `slicepipe run`: the supervisor.
 *
 * It validates every input and the manifest's promises before any work,
 * plans the widths, the memory and the output layout, then runs the three
 * stage processes (stages.c; the math is in compute.c), and finally writes
 * config.json, copies the tokenizer, evaluates (if [eval]) and writes the
 * report. Nothing is written before validation has passed.
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

#include "error.h"
#include "eval.h"
#include "fileio.h"
#include "job.h"
#include "report.h"
#include "sp_version.h"

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

static int prepare_output(const char *out) {
    struct stat st;
    if (stat(out, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return sp_fail(SP_EX_CANTCREAT, "%s: output path exists and is not a directory", out);
    } else if (mkdir(out, 0755) != 0) {
        return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the output directory", out);
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

static int run_eval(const char *dir, const sp_manifest *mf, int quiet, sp_eval_result *r) {
    sp_model m;
    SP_TRY(sp_model_open(dir, &m));
    sp_tokens tk;
    int rc = sp_tokens_load(mf->eval_tokens, m.cfg.vocab_size, 0, &tk);
    if (!rc) {
        sp_eval_opts eo = {.seqlen = mf->eval_seqlen, .windows = mf->eval_windows, .progress = !quiet};
        rc = sp_eval(&m, &tk, &eo, r);
        sp_tokens_free(&tk);
    }
    sp_model_close(&m);
    return rc;
}

static void free_job(job *j) {
    sp_ring_free(j->wring);
    sp_ring_free(j->oring);
    if (j->sh) munmap(j->sh, (size_t)j->shared_bytes);
    if (j->spill_a && !j->mf->spill_dir) { /* the default spill folder goes when empty */
        unlink(j->spill_a);
        unlink(j->spill_b);
        char *slash = strrchr(j->spill_a, '/');
        if (slash) {
            *slash = 0;
            rmdir(j->spill_a);
        }
    }
    free(j->spill_a);
    free(j->spill_b);
    free(j->reads);
    free(j->d_in);
    free(j->d_mid);
    free(j->d_out);
    sp_stw_free(j->w);
    sp_tokens_free(&j->calib);
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
        sp_tokens et;
        rc = sp_tokens_load(mf->eval_tokens, j->V, 0, &et);
        if (rc) goto out;
        int64_t need = mf->eval_seqlen * (mf->eval_windows > 0 ? mf->eval_windows : 1);
        if (et.n < need)
            rc = sp_fail(SP_EX_DATAERR, "%s: %lld tokens, fewer than the %lld [eval] needs", mf->eval_tokens,
                         (long long)et.n, (long long)need);
        sp_tokens_free(&et);
        if (rc) goto out;
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
    /* One layer of prefetch, at most 1/16 of the budget: compute dominates, so
     * a deeper ring buys nothing, and its pages count in two processes' RSS. */
    j->ring_slots = layer_raw_bytes(j) / payload + 2;
    if (j->ring_slots * j->ring_slot_bytes > mf->memory_bytes / 16)
        j->ring_slots = mf->memory_bytes / 16 / j->ring_slot_bytes;
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
        fprintf(f,
                "plan: %s -> %s\n  D %lld -> d %lld (sparsity %g, round_to %lld), %lld layers, output %s\n"
                "  calibration %lld windows x %lld tokens = %lld tokens\n"
                "  memory plan %.1f MiB (limit %.1f MiB): compute %.1f MiB with activation chunks of %lld windows,\n"
                "    rings %.1f MiB (weights %lld slots, output %lld, of %.0f KiB; counted twice: both ends map\n"
                "    them), reader staging %.1f MiB, 4 processes' baseline %.0f MiB\n"
                "  disk: spill %.1f MiB (%s), output ~%.1f MiB\n",
                mf->model_path, mf->output_path, (long long)j->D, (long long)j->d, mf->sparsity, (long long)mf->round_to,
                (long long)j->L, sp_dtype_st_name(j->out_dtype), (long long)mf->calib_nsamples, (long long)j->T,
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
    if (!rc) rc = prepare_spill(j);
    if (rc) goto out;

    /* Shared state for the stages. */
    j->sh = mmap(NULL, (size_t)j->shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (j->sh == MAP_FAILED) {
        j->sh = NULL;
        rc = sp_fail_errno(SP_EX_SOFTWARE, "mmap of the stage statistics");
        goto out;
    }
    j->evals = (double *)(j->sh + 1);
    rc = sp_ring_init(&j->wring, j->ring_slots, j->ring_slot_bytes);
    if (!rc) rc = sp_ring_init(&j->oring, j->out_slots, j->ring_slot_bytes);
    if (!rc) rc = sp_stw_init(&j->w, mf->output_path, mf->shard_bytes);
    if (!rc) rc = declare(j);
    if (!rc) rc = sp_stw_plan(j->w);
    if (rc) goto out;

    rc = sp_stages_run(j);
    if (rc) goto out;

    char fp[33];
    rc = fingerprint(&j->m, fp);
    if (!rc) rc = write_config(j, fp);
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

    sp_eval_result dense = {.nll = NAN, .ppl = NAN}, sliced = {.nll = NAN, .ppl = NAN};
    if (mf->has_eval) {
        rc = run_eval(mf->model_path, mf, o->quiet, &dense);
        if (!rc) rc = run_eval(mf->output_path, mf, o->quiet, &sliced);
        if (rc) goto out;
    }
    sp_model outm;
    rc = sp_model_open(mf->output_path, &outm);
    if (rc) goto out;
    int64_t params_after = outm.n_params, bytes_after = outm.n_bytes;
    sp_model_close(&outm);
    int64_t rss = sup_rss;
    for (int s = 0; s < SP_STAGE_COUNT; s++) rss += j->sh->st[s].peak_rss;
    rc = sp_report_write_run(j->mf, &j->m, j->d_in, j->d_mid, j->d_out, j->evals, &dense, &sliced, t_slice, params_after,
                             bytes_after, rss);
    if (!rc) rc = add_stage_stats(j, sup_rss, t_slice);
    if (rc) goto out;
    printf("sliced %s -> %s\n", mf->model_path, mf->output_path);
    printf("  width       %lld -> %lld (sparsity %g)\n", (long long)j->D, (long long)j->d, mf->sparsity);
    printf("  parameters  %lld -> %lld (%.1f%%)\n", (long long)j->m.n_params, (long long)params_after,
           100.0 * (double)params_after / (double)j->m.n_params);
    printf("  bytes       %lld -> %lld\n", (long long)j->m.n_bytes, (long long)bytes_after);
    printf("  time        %.2f s; peak RSS of the pipeline, all processes: %.1f MiB\n", t_slice, rss / 1048576.0);
    if (mf->has_eval)
        printf("  perplexity  dense %.4f (nll %.6f) -> sliced %.4f (nll %.6f)\n", dense.ppl, dense.nll, sliced.ppl,
               sliced.nll);
    printf("  report      %s/report.html\n", mf->output_path);
out:
    free_job(j);
    return rc;
}
