/* pipeline/run/resume.c — the job directory, the journal and resume: the run
 * identity, opening (or resuming) a job, finishing it, --restart, and
 * `slicepipe status`.
 *
 * The job directory is <output>/.slicepipe (a real directory, never a link):
 * lock, journal, spills (by default; elsewhere with spill_dir, named after
 * the job: spill-<XXH3-64 of the output's canonical path>-{a,b}.act) and two
 * basis files. Resume protocol (docs/resume.md §7):
 *
 *   start ─► lock (75 if held) ─► no journal but the output holds slicepipe's
 *   files: 65 before any work, the output re-verified and the message saying
 *   whether it is whole (a finished job whose journal was deleted) ─► journal
 *   open: identity checked (65 if the manifest's meaning, config.json, the
 *   input fingerprint, the backend or the tool version differ), torn tail
 *   dropped, mid-file corruption refused (65) ─► the last STAT: an input file
 *   whose size differs is refused (65); one whose inode, mtime or ctime
 *   differs (written, touched, or deleted and put back) has every tensor the
 *   job reads from it re-hashed against CONTENT: one that differs is refused
 *   (65) naming file and tensor, even if not read yet; all equal, a new STAT
 *   is appended and the run goes on
 *     ├─ DONE recorded ───────► every journaled tensor re-hashed in its final
 *     │                         shard (a missing shard: 65), the index
 *     │                         rewritten, config.json and side files restored
 *     │                         if missing or different, slicing.json and
 *     │                         report.html present (65 if not); nothing to do
 *     ├─ no LAYER record ─────► fresh run (CONTENT: every input tensor hashed
 *     │                         before any work; PARAMS and STAT appended once)
 *     └─ last LAYER record l ─► every journaled tensor re-hashed from its shard,
 *                               the spill and the basis re-hashed; the writer
 *                               reopens its shard after the last durable tensor;
 *                               the reader first re-reads and re-hashes the
 *                               input tensors layers ≤ l were computed from
 *                               (every tensor it reads is checked against
 *                               CONTENT: 65 on a mismatch),
 *                               then reader and compute start at layer l + 1
 *                               (a survey boundary, basis = "global": the
 *                               spill and the running sum G re-hashed, the
 *                               survey goes on at layer l + 1)
 *   stages succeed ─► config.json, tokenizer, eval, report ─► DONE appended
 *   ─► spills and basis files removed ─► with [output] gguf, model.gguf
 *   exported under its own journal (gguf.journal; export.c), which a rerun of
 *   the complete job resumes, re-verifies or redoes.
 *
 * States of a job directory, as a rerun sees them:
 *
 *   (none) ──run──► STARTED (CONTENT, PARAMS, STAT) ──boundary──► AT LAYER l ──...──► AT HEAD
 *                   (each boundary: INPUT, TENSOR..., LAYER)                                │
 *                   basis = "global": SURVEYED l (INPUT, LAYER with survey
 *                   = 1) for each layer first, then the embedding boundary
 *   COMPLETE (DONE) ◄──────────── config, side files, report ───────────────────────────────┘
 *   Any state ──SIGINT/SIGTERM──► the stages stopped, exit 75: as it was at
 *   its last boundary (resumable).
 *   Any state, its journal deleted, output files there ──rerun──► 65 before
 *   any work (the output re-verified; --restart makes it again).
 *   Any state ──--restart──► (none): journal, gguf.journal, basis files, this
 *   job's spills and the writer's own names in the output (shards, index,
 *   model.gguf, their .tmp) removed; no other file is touched.
 *
 * The run identity covers everything that sets the output's bits: the
 * manifest's meaning (paths, calibration token values, sparsity, round_to,
 * dtypes, shard size, config.json's bytes), the resolved backend and every setting of it that can
 * change bits (sp_bk.identity), the input fingerprint and the tool version.
 * The BLAS thread count is journaled by the first run and reused by every
 * resume. [resources] memory is not part of it: results do not depend on the
 * chunk size (tested).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "error.h"
#include "export.h"
#include "faults.h"
#include "fileio.h"
#include "gguf.h"
#include "job.h"
#include "journal.h"
#include "lock.h"
#include "verify.h"

/* XXH3-128 over every shard's name, size and header bytes: the input fingerprint. */
int sp_resume_fingerprint(const sp_model *m, char hex[33]) {
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
    sp_hex128(h.high64, h.low64, hex);
    return rc;
}

char *sp_job_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}


/* The manifest's meaning: every setting that changes the output's bits, and
 * the calibration token values themselves. */
void sp_resume_manifest_identity(const job *j, char hex[33]) {
    const sp_manifest *mf = j->mf;
    char txt[16384];
    snprintf(txt, sizeof txt,
             "slicepipe-manifest-2\nmodel=%s\ncalib=%s\nseqlen=%lld\nnsamples=%lld\nsparsity=%.17g\nround_to=%lld\n"
             "dtype=%s\nshard_bytes=%lld\nspill_dtype=%s\nbackend=%s\n",
             mf->model_path, mf->calib_tokens ? mf->calib_tokens : "", (long long)mf->calib_seqlen,
             (long long)mf->calib_nsamples, mf->sparsity,
             (long long)mf->round_to, sp_dtype_st_name(j->out_dtype), (long long)mf->shard_bytes,
             sp_dtype_st_name(mf->spill_dtype), j->bk_identity);
    if (mf->calib_text) /* the text's windows: its ids are hashed below, which covers the text and the tokenizer */
        snprintf(txt + strlen(txt), sizeof txt - strlen(txt), "calib_text=%s\nsampling=%s\nseed=%lld\n", mf->calib_text,
                 mf->calib_sampling == SP_CALIB_SAMPLING_RANDOM ? "random" : "first", (long long)mf->calib_seed);
    if (mf->has_params) /* absent from jobs made without it, whose identity stays as it was */
        snprintf(txt + strlen(txt), sizeof txt - strlen(txt), "params=%.17g\n", mf->params);
    j->plan.policy->identity(mf, txt, sizeof txt);
    if (mf->gguf_type >= 0)
        snprintf(txt + strlen(txt), sizeof txt - strlen(txt), "gguf=%s\n%s", sp_gguf_ttype_name(mf->gguf_type),
                 mf->gguf_weighting == SP_EXPORT_WEIGHT_CALIB ? "gguf_weighting=calib\n" : "");
    XXH3_state_t *st = XXH3_createState();
    SP_ASSERT(st);
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, txt, strlen(txt));
    XXH3_128bits_update(st, j->calib.ids, (size_t)j->shape.tokens * sizeof(int32_t));
    /* config.json sets the math too (eps, rope, activation): its bytes. */
    const char *cfg = j->m.cfg.raw_json ? j->m.cfg.raw_json : "";
    XXH3_128bits_update(st, cfg, strlen(cfg) + 1);
    XXH128_hash_t h = XXH3_128bits_digest(st);
    sp_hex128(h.high64, h.low64, hex);
    XXH3_freeState(st);
}

static int damaged(const job *j, const char *what) {
    return sp_fail(SP_EX_DATAERR, "%s: cannot resume: %s does not match the journal (the job directory is damaged); "
                                  "run `slicepipe run %s --restart` to start fresh",
                   j->job_dir, what, j->mf->path);
}

/* --restart: forget the job — journal, basis files, the GGUF export's
 * journal, this job's spills, and in the output folder only the names
 * slicepipe's writer makes (shards, the index, model.gguf and their .tmp):
 * a file slicepipe never writes is never removed. */
static void remove_job(job *j) {
    const char *names[] = {"journal", "basis-0.f64", "basis-1.f64", "gguf.journal"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = sp_job_join(j->job_dir, names[i]);
        if (p) unlink(p);
        free(p);
    }
    unlink(j->spill_a);
    unlink(j->spill_b);
    DIR *d = opendir(j->mf->output_path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!sp_output_is_ours(e->d_name)) continue;
        char *p = sp_job_join(j->mf->output_path, e->d_name);
        if (p) unlink(p);
        free(p);
    }
    closedir(d);
}

/* The input files as this run sees them (SP_REC_STAT). */
static int input_stats(const job *j, sp_rec_stat_file **out, int *n_out) {
    int n = sp_ckpt_shard_count(j->m.ckpt);
    sp_rec_stat_file *a;
    SP_TRY(sp_calloc((void **)&a, n, sizeof *a, "input file state"));
    for (int i = 0; i < n; i++) {
        const sp_st_file *f = sp_ckpt_shard(j->m.ckpt, i);
        struct stat st;
        if (fstat(sp_st_fd(f), &st) != 0) {
            free(a);
            return sp_fail_errno(SP_EX_IOERR, "%s: fstat", sp_st_path(f));
        }
        a[i] = (sp_rec_stat_file){.size = (int64_t)st.st_size, .dev = (int64_t)st.st_dev, .ino = (int64_t)st.st_ino,
                                  .ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec,
                                  .mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec};
    }
    *out = a;
    *n_out = n;
    return 0;
}

static int input_changed(const job *j, const char *path, const char *what) {
    return sp_fail(SP_EX_DATAERR,
                   "%s: the input changed since this job's first run (%s); resuming would mix two versions of the "
                   "checkpoint; run `slicepipe run %s --restart` to start again",
                   path, what, j->mf->path);
}

/* The XXH3-128 (canonical) of every read-plan item's bytes, read through the
 * descriptor the checkpoint was validated on; an item whose tensor an earlier
 * item names (the embedding, read twice; the survey's layers) reuses its
 * hash. Items of a file whose flag in `only` is 0 are skipped (only == NULL:
 * every file); *bytes_out counts the bytes read. */
static int hash_inputs(const job *j, const char *only, unsigned char (*out)[16], int64_t *bytes_out) {
    const int nf = sp_ckpt_shard_count(j->m.ckpt);
    unsigned char *buf = NULL;
    XXH3_state_t *xs = XXH3_createState();
    int rc = xs ? sp_alloc((void **)&buf, j->stage_bytes, 1, "input hashing buffer") : sp_fail(SP_EX_SOFTWARE, "out of memory");
    int64_t bytes = 0;
    for (int i = 0; i < j->n_reads && !rc; i++) {
        const sp_read_item *it = &j->reads[i];
        int f = 0;
        while (f < nf && sp_ckpt_shard(j->m.ckpt, f) != it->file) f++;
        SP_ASSERT(f < nf);
        if (only && !only[f]) continue;
        int k = 0;
        while (k < i && j->reads[k].t != it->t) k++;
        if (k < i) {
            memcpy(out[i], out[k], 16);
            continue;
        }
        XXH3_128bits_reset(xs);
        for (int64_t off = 0; off < it->t->nbytes && !rc; off += j->stage_bytes) {
            int64_t len = it->t->nbytes - off < j->stage_bytes ? it->t->nbytes - off : j->stage_bytes;
            rc = sp_io_pread_full(sp_st_fd(it->file), buf, len, it->t->file_offset + off, sp_st_path(it->file));
            if (!rc) XXH3_128bits_update(xs, buf, (size_t)len);
            bytes += len;
        }
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
        memcpy(out[i], c.digest, 16);
    }
    free(buf);
    XXH3_freeState(xs);
    *bytes_out = bytes;
    return rc;
}

/* The input files against the last STAT record (docs/resume.md §7): a file
 * whose device, inode, mtime and ctime are as recorded was not touched; any
 * other (written, touched, deleted and copied back) has every read-plan item
 * re-hashed against CONTENT, and one that differs is refused (65) whether
 * its layer is journaled already or not read yet. *restat is set when files
 * were re-verified, so that a new STAT record spares the next resume the
 * work. `consumed`: the read-plan items the journaled boundaries used. */
static int check_inputs(job *j, const sp_rec_stat_file *was, const sp_rec_stat_file *now, int n_files,
                        unsigned char (*content)[16], int consumed, int *restat) {
    SP_ASSERT(content); /* the caller refuses a STAT record without CONTENT */
    *restat = 0;
    char *touched = calloc((size_t)n_files, 1);
    if (!touched) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    int n_touched = 0, rc = 0;
    for (int f = 0; f < n_files && !rc; f++) {
        const char *fp = sp_st_path(sp_ckpt_shard(j->m.ckpt, f));
        if (was[f].size != now[f].size) rc = input_changed(j, fp, "its size differs");
        else if (was[f].dev != now[f].dev || was[f].ino != now[f].ino || was[f].mtime_ns != now[f].mtime_ns ||
                 was[f].ctime_ns != now[f].ctime_ns)
            touched[f] = 1, n_touched++;
    }
    unsigned char(*got)[16] = NULL;
    int64_t bytes = 0;
    const double t0 = sp_now();
    if (!rc && n_touched) rc = sp_calloc((void **)&got, j->n_reads, 16, "input hashes");
    if (!rc && n_touched) rc = hash_inputs(j, touched, got, &bytes);
    for (int i = 0; i < j->n_reads && !rc && n_touched; i++) {
        const sp_read_item *it = &j->reads[i];
        int f = 0;
        while (sp_ckpt_shard(j->m.ckpt, f) != it->file) f++;
        if (!touched[f] || memcmp(got[i], content[i], 16) == 0) continue;
        char h1[33], h2[33];
        for (int k = 0; k < 16; k++) snprintf(h1 + 2 * k, 3, "%02x", got[i][k]), snprintf(h2 + 2 * k, 3, "%02x", content[i][k]);
        rc = sp_fail(SP_EX_DATAERR,
                     "%s: tensor '%s' changed since this job's first run (XXH3-128 %s, the journal has %s; %s); the "
                     "file was written or replaced since (its inode, mtime or ctime differ) and resuming would mix "
                     "two versions of the checkpoint; put back the original file, or run `slicepipe run %s --restart` "
                     "to start again",
                     sp_st_path(it->file), it->name, h1, h2,
                     i < consumed ? "the journaled layers were computed from it" : "not read yet", j->mf->path);
    }
    if (!rc && n_touched && !j->o->quiet) {
        const double dt = sp_now() - t0;
        fprintf(stderr, "slicepipe: %d input file%s replaced or touched since the last run (inode, mtime or ctime "
                        "differ); every tensor this job reads from %s re-hashed (%.1f MiB in %.1f s) and has the bytes "
                        "the journal records: going on\n",
                n_touched, n_touched > 1 ? "s were" : " was", n_touched > 1 ? "them" : "it", bytes / 1048576.0, dt);
    }
    if (!rc) *restat = n_touched > 0;
    free(got);
    free(touched);
    return rc;
}

/* A finished job rerun: every tensor the journal lists re-hashed in its final
 * shard, the index rewritten, config.json and the side files restored if
 * missing or different; a missing shard or report is refused. */
static int verify_complete(job *j, char (*hashes)[33], const char **hp, int n_recs) {
    const int nt = sp_stw_tensor_count(j->w);
    if (n_recs != nt) return damaged(j, "the number of tensor records of a finished job");
    for (int i = 0; i < nt; i++) {
        char *p = sp_job_join(j->mf->output_path, sp_stw_shard_name(j->w, sp_stw_tensor_shard(j->w, i)));
        if (!p) return sp_fail(SP_EX_SOFTWARE, "out of memory");
        char hex[33];
        int rc = sp_io_xxh128_range_chunk(p, sp_stw_tensor_file_offset(j->w, i), sp_stw_tensor_bytes(j->w, i), j->stage_bytes, hex);
        if (rc == SP_EX_NOINPUT)
            rc = sp_fail(SP_EX_DATAERR, "%s: the job is recorded as complete but its shard %s is missing; run "
                                        "`slicepipe run %s --restart` to redo it", j->mf->output_path, p, j->mf->path);
        else if (!rc && strcmp(hex, hashes[i])) {
            char what[512];
            snprintf(what, sizeof what, "tensor '%s' in %s", sp_stw_tensor_name(j->w, i), p);
            rc = damaged(j, what);
        }
        free(p);
        SP_TRY(rc);
        hp[i] = hashes[i];
    }
    SP_TRY(sp_stw_resume(j->w, nt, hp));
    SP_TRY(sp_stw_finish(j->w)); /* the index, rewritten identically (or restored) */
    static const char *reports[] = {"slicing.json", "report.html"};
    for (int i = 0; i < 2; i++) {
        char *p = sp_job_join(j->mf->output_path, reports[i]);
        int missing = p && access(p, F_OK) != 0;
        free(p);
        if (missing)
            return sp_fail(SP_EX_DATAERR, "%s: the job is recorded as complete but %s is missing; run `slicepipe run %s "
                                          "--restart` to redo it", j->mf->output_path, reports[i], j->mf->path);
    }
    int restored = 0;
    SP_TRY(sp_output_restore(j, &restored));
    sp_verify_result vr;
    SP_TRY(sp_verify_model(j->mf->output_path, &vr));
    sp_resume_clean(j); /* a run killed after DONE left its scratch */
    if (!j->o->quiet)
        fprintf(stderr, "slicepipe: %s is already complete; %lld tensors verified by hash%s (use --restart to redo it)\n",
                j->mf->output_path, (long long)vr.tensors,
                restored ? ", config.json or side files restored" : "");
    return 0;
}

int sp_resume_job_dir(job *j) {
    j->job_dir = sp_job_join(j->mf->output_path, ".slicepipe");
    j->basis_path[0] = j->job_dir ? sp_job_join(j->job_dir, "basis-0.f64") : NULL;
    j->basis_path[1] = j->job_dir ? sp_job_join(j->job_dir, "basis-1.f64") : NULL;
    if (!j->job_dir || !j->basis_path[0] || !j->basis_path[1]) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    struct stat st;
    if (mkdir(j->job_dir, 0755) != 0 && errno != EEXIST)
        return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the job directory", j->job_dir);
    if (lstat(j->job_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return sp_fail(SP_EX_CANTCREAT, "%s: is not a directory (a link or a file); refused as the job directory",
                       j->job_dir);
    return 0;
}

/* A job folder whose journal is gone but whose output folder holds what the
 * writer or the last step makes (shards, index, model.gguf, slicing.json,
 * report.html; a .tmp alone does not count: nothing can resume it without
 * the journal, and it is made afresh): a finished job whose journal was
 * deleted, or a damaged one.
 * Without the journal nothing tells which run made those files or how far it
 * got, and a run would silently redo hours of work over them, so it is
 * refused (65) before any work. The output is re-verified against the hashes
 * its shards record, and the message says whether it is whole and what to do
 * (docs/resume.md §8). */
static int orphan_output(job *j, const char *jp) {
    struct stat st;
    if (lstat(jp, &st) == 0 || errno != ENOENT) return 0; /* a journal (or something there sp_journal_open words) */
    DIR *d = opendir(j->mf->output_path);
    if (!d) return 0;
    char first[256] = "";
    struct dirent *e;
    while (!first[0] && (e = readdir(d))) { /* a .tmp alone holds nothing a run without the journal could reuse */
        const size_t n = strlen(e->d_name);
        const int tmp = n > 4 && !strcmp(e->d_name + n - 4, ".tmp");
        if ((!tmp && sp_output_is_ours(e->d_name)) || !strcmp(e->d_name, "slicing.json") || !strcmp(e->d_name, "report.html"))
            snprintf(first, sizeof first, "%s", e->d_name);
    }
    closedir(d);
    if (!first[0]) return 0;
    sp_verify_result vr = {0};
    char why[1024] = "";
    if (sp_verify_model(j->mf->output_path, &vr)) {
        snprintf(why, sizeof why, "%s", sp_errmsg());
        sp_err_clear();
    }
    char report[PATH_MAX + 32];
    snprintf(report, sizeof report, "%s/report.html", j->mf->output_path);
    const int whole = !why[0] && access(report, F_OK) == 0;
    char verdict[1400];
    if (whole)
        snprintf(verdict, sizeof verdict, "Its %lld tensors in %d shards verify against the hashes the shards record, "
                                          "so it is a whole output, usable as it is (`slicepipe verify` checks it again)",
                 (long long)vr.tensors, vr.shards);
    else
        snprintf(verdict, sizeof verdict, "It is not a whole output: %s", why[0] ? why : "report.html is missing");
    return sp_fail(SP_EX_DATAERR,
                   "%s: the output folder holds files of a slicepipe run ('%s') but the job's journal %s is missing, "
                   "so nothing tells which run made them or how far it got; refused rather than redo the job over "
                   "them. %s. To make it again, run `slicepipe run %s --restart` (it removes only the files "
                   "slicepipe writes)",
                   j->mf->output_path, first, jp, verdict, j->mf->path);
}

/* The BACKEND record of the journal at jp, into was ("" when the journal is
 * missing, unreadable or has none: the identity check that follows deals
 * with those). */
static void journaled_backend(const char *jp, char *was, size_t n) {
    was[0] = 0;
    sp_run_identity id;
    sp_journal *jr = NULL;
    if (sp_run_identity_read(jp, &id) || sp_journal_open_ro(jp, &id, &jr, NULL)) {
        sp_err_clear();
        return;
    }
    for (int i = 0; i < sp_journal_count(jr); i++) {
        const sp_jrec *r = sp_journal_at(jr, i);
        if (r->type == SP_REC_BACKEND && r->len >= 1 && r->len <= n && r->payload[r->len - 1] == 0) {
            memcpy(was, r->payload, r->len);
            break;
        }
    }
    sp_journal_free(jr);
}

/* A job started on another backend, or at another precision, is refused
 * (65) naming both, before the run identity (which hashes the backend's
 * identity with the manifest) would refuse it as "the manifest changed". */
static int same_backend(const job *j, const char *jp) {
    char was[sizeof j->bk_identity];
    journaled_backend(jp, was, sizeof was);
    if (!was[0] || strcmp(was, j->bk_identity) == 0) return 0;
    return sp_fail(SP_EX_DATAERR,
                   "journal %s: cannot resume: this job was started on backend \"%s\", but [resources] backend = "
                   "\"%s\", precision = \"%s\" resolves to \"%s\" here; its results would mix two backends' bits. "
                   "Set [resources] backend and precision as the job was started, or run `slicepipe run %s --restart` "
                   "to start fresh",
                   jp, was, j->mf->backend, sp_bk_prec_name((enum sp_bk_prec)j->mf->precision), j->bk_identity,
                   j->mf->path);
}

/* Opens the job: lock, journal, replay, verification. *complete is set when
 * the journal says the job is done (and it verified). */
int sp_resume_open(job *j, int *complete) {
    *complete = 0;
    j->resume.layer = -2;
    j->resume.survey = -1;
    j->resume.basis = 0;
    char *lp = sp_job_join(j->job_dir, "lock"), *jp = sp_job_join(j->job_dir, "journal");
    int rc = lp && jp ? sp_lock_acquire(lp, &j->lock) : sp_fail(SP_EX_SOFTWARE, "out of memory");
    free(lp);
    if (rc) {
        free(jp);
        return rc;
    }
    if (j->o->restart) remove_job(j);
    else rc = orphan_output(j, jp);
    if (!rc) rc = same_backend(j, jp);
    if (rc) {
        free(jp);
        return rc;
    }
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
    int have_params = 0, have_backend = 0, have_stat = 0, last = -1, done = 0, n_tensor_recs = 0;
    if (!rc) rc = sp_calloc((void **)&j->resume.in_expect, j->n_reads, 16, "input hashes");
    sp_rec_stat_file *now = NULL, *was = NULL;
    unsigned char(*content)[16] = NULL;
    int n_files = 0, restat = 0;
    if (!rc) rc = input_stats(j, &now, &n_files);
    if (!rc) rc = sp_calloc((void **)&was, n_files, sizeof *was, "input file state");
    for (int i = 0; i < sp_journal_count(j->jr) && !rc; i++) {
        const sp_jrec *r = sp_journal_at(j->jr, i);
        if (r->type == SP_REC_PARAMS && r->len == sizeof(sp_rec_params)) {
            sp_rec_params p;
            memcpy(&p, r->payload, sizeof p);
            have_params = 1;
            if (j->mf->threads > 0 && j->mf->threads != p.threads && !j->o->quiet)
                fprintf(stderr, "slicepipe: [resources] threads = %lld, but this job was started with %lld: it goes on "
                        "with %lld (the BLAS thread count is part of the run identity; --restart to change it)\n",
                        (long long)j->mf->threads, (long long)p.threads, (long long)p.threads);
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
            const int bad_survey = l.survey && (l.survey != 1 || !j->plan.survey || l.layer < 0 ||
                                                l.layer >= j->shape.layers || l.n_eval_rows || l.n_tensors_done);
            if (l.layer < -1 || l.layer > j->shape.layers || l.n_eval_rows < 0 || l.n_eval_rows > j->n_pca ||
                r->len != sizeof l + (uint32_t)(l.n_eval_rows * j->shape.hidden * 8) || l.n_tensors_done > n_tensor_recs || bad_survey)
                rc = damaged(j, "a layer record");
            else {
                int64_t first = l.layer < 0 ? 0 : 1 + j->n_pca * l.layer;
                if (l.n_eval_rows) memcpy(j->evals + first * j->shape.hidden, r->payload + sizeof l, (size_t)(l.n_eval_rows * j->shape.hidden * 8));
                last = i;
            }
        } else if (r->type == SP_REC_BACKEND && r->len >= 1 && r->len <= sizeof j->bk_identity &&
                   r->payload[r->len - 1] == 0) {
            have_backend = 1; /* same_backend compared it */
        } else if (r->type == SP_REC_DONE) {
            done = 1;
        } else if (r->type == SP_REC_INPUT && r->len >= sizeof(sp_rec_input)) {
            sp_rec_input in;
            memcpy(&in, r->payload, sizeof in);
            if (in.first != j->resume.in_known || in.count < 1 || in.count > j->n_reads - in.first ||
                r->len != sizeof in + (uint64_t)in.count * 16)
                rc = damaged(j, "an input hash record");
            else {
                memcpy(j->resume.in_expect[in.first], r->payload + sizeof in, (size_t)in.count * 16);
                j->resume.in_known = (int)(in.first + in.count);
                j->inputs_journaled = j->resume.in_known;
            }
        } else if (r->type == SP_REC_STAT && r->len == (uint64_t)n_files * sizeof(sp_rec_stat_file)) {
            have_stat = 1; /* the last one counts: a resume that re-verified the inputs appends another */
            memcpy(was, r->payload, r->len);
        } else if (r->type == SP_REC_CONTENT && r->len == sizeof(sp_rec_input) + (uint64_t)j->n_reads * 16 && !content) {
            sp_rec_input in;
            memcpy(&in, r->payload, sizeof in);
            if (in.first != 0 || in.count != j->n_reads) rc = damaged(j, "the input content record");
            else rc = sp_calloc((void **)&content, j->n_reads, 16, "input hashes");
            if (!rc) memcpy(content, r->payload + sizeof in, (size_t)j->n_reads * 16);
        } else {
            rc = damaged(j, "a record of unknown type or size");
        }
    }
    /* The input: the STAT record against the files now, CONTENT against the
     * bytes of any file that was touched; the INPUT records must agree with
     * CONTENT (the first run's reader checked them against it). */
    if (!rc && (have_stat || last >= 0 || done) && !content) rc = damaged(j, "the input records (no CONTENT record)");
    for (int i = 0; i < j->resume.in_known && !rc && content; i++)
        if (memcmp(j->resume.in_expect[i], content[i], 16)) rc = damaged(j, "an input hash record");
    if (!rc && have_stat) {
        int consumed = 0;
        if (done) consumed = j->n_reads;
        else if (last >= 0) {
            sp_rec_layer l;
            memcpy(&l, sp_journal_at(j->jr, last)->payload, sizeof l);
            consumed = sp_plan_reads_after(j, l.layer, l.survey);
        }
        rc = check_inputs(j, was, now, n_files, content, consumed, &restat);
    }
    if (!rc && !content && !done) { /* a new job: the first run hashes its input before any work */
        const double t0 = sp_now();
        int64_t bytes = 0;
        rc = sp_calloc((void **)&content, j->n_reads, 16, "input hashes");
        if (!rc) rc = hash_inputs(j, NULL, content, &bytes);
        int64_t clen = (int64_t)sizeof(sp_rec_input) + (int64_t)j->n_reads * 16;
        unsigned char *cb = NULL;
        if (!rc) rc = sp_alloc((void **)&cb, clen, 1, "input content record");
        if (!rc) {
            sp_rec_input in = {.first = 0, .count = j->n_reads};
            memcpy(cb, &in, sizeof in);
            memcpy(cb + sizeof in, content, (size_t)j->n_reads * 16);
            rc = sp_journal_append(j->jr, SP_REC_CONTENT, cb, (uint32_t)clen);
        }
        free(cb);
        if (!rc && !j->o->quiet)
            fprintf(stderr, "slicepipe: input hashed for resume: %d tensors, %.1f MiB in %.2f s\n", j->n_reads,
                    bytes / 1048576.0, sp_now() - t0);
    }
    if (!rc && content) { /* the reader checks every tensor it reads against the first run's bytes */
        memcpy(j->resume.in_expect, content, (size_t)j->n_reads * 16);
        j->resume.in_checked = j->n_reads;
    } else j->resume.in_checked = j->resume.in_known;
    if (!rc && done) {
        rc = verify_complete(j, hashes, hp, n_tensor_recs);
        if (!rc) *complete = 1;
    } else if (!rc && last >= 0) {
        sp_rec_layer l;
        memcpy(&l, sp_journal_at(j->jr, last)->payload, sizeof l);
        int n_done = (int)l.n_tensors_done;
        int expect = l.survey ? 0 : l.layer >= j->shape.layers ? nt : j->layer_out0[l.layer + 1];
        if (n_done != expect) rc = damaged(j, "the tensor count of the last layer record");
        for (int i = 0; i < n_done && !rc; i++) {
            char hex[33];
            rc = sp_io_xxh128_range_chunk(sp_stw_tensor_path_now(j->w, i), sp_stw_tensor_file_offset(j->w, i),
                                          sp_stw_tensor_bytes(j->w, i), j->stage_bytes, hex);
            if (!rc && strcmp(hex, hashes[i]) != 0) {
                char what[512];
                snprintf(what, sizeof what, "tensor '%s' in %s", sp_stw_tensor_name(j->w, i), sp_stw_tensor_path_now(j->w, i));
                rc = damaged(j, what);
            }
            hp[i] = hashes[i];
        }
        if (!rc && l.layer < j->shape.layers) {
            char hex[33];
            l.spill[sizeof l.spill - 1] = 0;
            const char *na = strrchr(j->spill_a, '/'), *nb = strrchr(j->spill_b, '/');
            na = na ? na + 1 : j->spill_a, nb = nb ? nb + 1 : j->spill_b;
            if (strcmp(l.spill, na) && strcmp(l.spill, nb)) rc = damaged(j, "the spill name");
            if (!rc && j->resume.in_known < sp_plan_reads_after(j, l.layer, l.survey))
                rc = damaged(j, "the input hashes of the journaled layers");
            if (!rc) {
                j->resume.spill = strcmp(l.spill, na) ? strdup(j->spill_b) : strdup(j->spill_a);
                rc = j->resume.spill ? sp_io_xxh128_range_chunk(j->resume.spill, 0, -1, j->stage_bytes, hex)
                                     : sp_fail(SP_EX_SOFTWARE, "out of memory");
                if (rc == SP_EX_NOINPUT || (!rc && strcmp(hex, l.spill_hash))) rc = damaged(j, j->resume.spill);
            }
            if (!rc) {
                const char *bp = j->basis_path[l.basis_idx & 1];
                struct stat st;
                rc = stat(bp, &st) == 0 && st.st_size == j->shape.hidden * j->shape.hidden * 8 ? sp_io_xxh128_range_chunk(bp, 0, j->shape.hidden * j->shape.hidden * 8, j->stage_bytes, hex)
                                                                         : damaged(j, bp);
                if (!rc && strcmp(hex, l.basis_hash)) rc = damaged(j, bp);
            }
        }
        if (!rc) rc = sp_stw_resume(j->w, n_done, hp);
        if (!rc) {
            /* After a survey boundary the embedding is still to come; after
             * any other boundary the survey (basis = "global") is done. */
            j->resume.layer = l.survey ? -2 : l.layer;
            j->resume.survey = l.survey ? l.layer : j->plan.survey ? j->shape.layers - 1 : -1;
            j->resume.basis = (int)(l.basis_idx & 1);
            memcpy(j->resume.spill_hash, l.spill_hash, 33);
            atomic_store(&j->sh->journaled_layer, j->resume.layer);
            atomic_store(&j->sh->journaled_survey, j->resume.survey);
            j->resume.read_start = sp_plan_reads_after(j, l.layer, l.survey);
            j->resume.out_start = n_done;
            j->tensors_journaled = n_done;
            if (!j->o->quiet && l.survey)
                fprintf(stderr, "slicepipe: resuming after a survey layer: the spill and the running sum of the "
                                "second moments verified by hash\n"
                                "slicepipe: the survey is done for layers 1-%lld of %lld\n",
                        (long long)l.layer + 1, (long long)j->shape.layers);
            else if (!j->o->quiet)
                fprintf(stderr, "slicepipe: resuming after %s: %d tensors, the spill and the basis verified by hash\n",
                        l.layer < 0 ? "the embedding" : l.layer >= j->shape.layers ? "the head" : "a layer", n_done);
            if (!j->o->quiet && !l.survey && l.layer >= 0 && l.layer < j->shape.layers)
                fprintf(stderr, "slicepipe: layers 1-%lld of %lld are done\n", (long long)l.layer + 1, (long long)j->shape.layers);
        }
    }
    if (!rc && !have_params) {
        sp_rec_params p = {.threads = j->threads, .n_layers = j->shape.layers, .n_tensors = nt, .hidden = j->shape.hidden};
        rc = sp_journal_append(j->jr, SP_REC_PARAMS, &p, sizeof p);
    }
    if (!rc && !have_backend) /* once, as PARAMS (a journal from before this record gets it on its next resume) */
        rc = sp_journal_append(j->jr, SP_REC_BACKEND, j->bk_identity, (uint32_t)strlen(j->bk_identity) + 1);
    if (!rc && ((!have_stat && !done) || restat))
        rc = sp_journal_append(j->jr, SP_REC_STAT, now, (uint32_t)(n_files * sizeof *now));
    free(now);
    free(was);
    free(content);
    free(hashes);
    free(hp);
    return rc;
}

/* After the stages: the journal handle the writer used is stale in this
 * process; reopen it to append DONE. */
int sp_resume_done(job *j) {
    sp_journal_free(j->jr);
    j->jr = NULL;
    char *jp = sp_job_join(j->job_dir, "journal");
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
void sp_resume_clean(job *j) {
    unlink(j->spill_a);
    unlink(j->spill_b);
    unlink(j->basis_path[0]);
    unlink(j->basis_path[1]);
}

/* `slicepipe status OUT_DIR`: how far a job got. Read-only: the journal is
 * replayed without being touched (a torn tail a running writer may be
 * appending to is reported, never truncated) and the lock is only probed
 * (F_OFD_GETLK), so a resume started meanwhile is never refused. */
int sp_job_status(const char *out_dir) {
    char *jd = sp_job_join(out_dir, ".slicepipe"), *jp = jd ? sp_job_join(jd, "journal") : NULL, *lp = jd ? sp_job_join(jd, "lock") : NULL;
    int rc = jd && jp && lp ? 0 : sp_fail(SP_EX_SOFTWARE, "out of memory");
    sp_run_identity id;
    char cand[4400] = "";
    const int split_auto = !rc && sp_split_auto_status(out_dir, cand, sizeof cand);
    if (!rc) rc = sp_run_identity_read(jp, &id);
    if (rc == SP_EX_NOINPUT && split_auto) { /* the final job has not started: the candidate's, if one is there */
        free(jd);
        free(jp);
        free(lp);
        if (!cand[0]) return sp_fail(SP_EX_NOINPUT, "%s: split = \"auto\": no candidate job and no final job yet", out_dir);
        printf("candidate ");
        return sp_job_status(cand);
    }
    if (rc == SP_EX_NOINPUT) rc = sp_fail(SP_EX_NOINPUT, "%s: no slicepipe job here (no %s)", out_dir, jp);
    sp_journal *jr = NULL;
    int64_t dropped = 0;
    if (!rc) rc = sp_journal_open_ro(jp, &id, &jr, &dropped);
    if (!rc) {
        sp_rec_params p = {0};
        char backend[256] = "";
        int64_t last_layer = -2, last_survey = -1, tensors = 0;
        int done = 0;
        for (int i = 0; i < sp_journal_count(jr); i++) {
            const sp_jrec *r = sp_journal_at(jr, i);
            if (r->type == SP_REC_PARAMS && r->len == sizeof p) memcpy(&p, r->payload, sizeof p);
            if (r->type == SP_REC_TENSOR) tensors++;
            if (r->type == SP_REC_LAYER && r->len >= sizeof(sp_rec_layer)) {
                sp_rec_layer l;
                memcpy(&l, r->payload, sizeof l);
                if (l.survey) last_survey = l.layer;
                else last_layer = l.layer;
            }
            if (r->type == SP_REC_DONE) done = 1;
            if (r->type == SP_REC_BACKEND && r->len >= 1 && r->len <= sizeof backend && r->payload[r->len - 1] == 0)
                memcpy(backend, r->payload, r->len);
        }
        long pid = 0;
        int busy = sp_lock_probe(lp, &pid);
        char holder[1024];
        snprintf(holder, sizeof holder, "%s", busy ? sp_errmsg() : "");
        printf("job:         %s\n", out_dir);
        printf("state:       %s\n", done ? "complete" : busy == SP_EX_TEMPFAIL ? "running" : "interrupted: rerun the same "
                                                                                              "`slicepipe run` to resume");
        if (busy == SP_EX_TEMPFAIL) printf("             %s\n", holder);
        if (p.n_layers > 0)
            printf("layers:      %lld of %lld done%s\n", (long long)(last_layer < 0 ? 0 : last_layer >= p.n_layers ? p.n_layers : last_layer + 1),
                   (long long)p.n_layers, last_layer >= p.n_layers ? ", head done" : last_layer == -1 ? " (embedding done)" : "");
        if (last_survey >= 0 && last_layer == -2 && p.n_layers > 0)
            printf("survey:      %lld of %lld layers (basis = \"global\": the dense pass before the rotation)\n",
                   (long long)last_survey + 1, (long long)p.n_layers);
        printf("tensors:     %lld of %lld durable\n", (long long)tensors, (long long)p.n_tensors);
        printf("journal:     %d records, %lld bytes%s\n", sp_journal_count(jr), (long long)sp_journal_size_bytes(jr),
               dropped ? " (a torn tail would be dropped on resume)" : "");
        printf("identity:    manifest %s, input %s, slicepipe %s\n", id.manifest, id.input, id.version);
        if (backend[0]) printf("backend:     %s\n", backend);
        printf("BLAS threads %lld (reused on resume)\n", (long long)p.threads);
    }
    sp_journal_free(jr);
    free(jd);
    free(jp);
    free(lp);
    return rc;
}
