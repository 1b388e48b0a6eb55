/* pipeline/resume.c — the job directory, the journal and resume: the run
 * identity, opening (or resuming) a job, finishing it, --restart, and
 * `slicepipe status`.
 *
 * The job directory is <output>/.slicepipe: lock, journal, spills (by
 * default) and two basis files. Resume protocol (RELIABILITY.md "Crash safety
 * and resume"):
 *
 *   start ─► lock (75 if held) ─► journal open: identity checked (65 if the
 *   manifest's meaning, the input fingerprint, the backend or the tool
 *   version differ), torn tail dropped, mid-file corruption refused (65)
 *     ├─ DONE recorded ───────► verify every tensor by hash; nothing to do
 *     ├─ no LAYER record ─────► fresh run (PARAMS appended once)
 *     └─ last LAYER record l ─► every journaled tensor re-hashed from its shard,
 *                               the spill and the basis re-hashed; the writer
 *                               reopens its shard after the last durable tensor;
 *                               reader and compute start at layer l + 1
 *   stages succeed ─► config.json, tokenizer, eval, report ─► DONE appended
 *   ─► spills and basis files removed.
 *
 * States of a job directory, as a rerun sees them:
 *
 *   (none) ──run──► STARTED (PARAMS) ──boundary──► AT LAYER l ──...──► AT HEAD
 *                                                                        │
 *   COMPLETE (DONE) ◄──────────── config, side files, report ────────────┘
 *   Any state ──--restart──► (none): journal, basis files, spills and
 *   partial shards removed.
 *
 * The run identity covers everything that sets the output's bits: the
 * manifest's meaning (paths, calibration token values, sparsity, round_to,
 * dtypes, shard size), the resolved backend and every setting of it that can
 * change bits (sp_bk.identity), the input fingerprint and the tool version.
 * The BLAS thread count is journaled by the first run and reused by every
 * resume. [resources] memory is not part of it: results do not depend on the
 * chunk size (tested).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "error.h"
#include "faults.h"
#include "fileio.h"
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
    snprintf(hex, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
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
             "slicepipe-manifest-1\nmodel=%s\ncalib=%s\nseqlen=%lld\nnsamples=%lld\nsparsity=%.17g\nround_to=%lld\n"
             "dtype=%s\nshard_bytes=%lld\nspill_dtype=%s\nbackend=%s\n",
             mf->model_path, mf->calib_tokens ? mf->calib_tokens : "", (long long)mf->calib_seqlen,
             (long long)mf->calib_nsamples, mf->sparsity,
             (long long)mf->round_to, sp_dtype_st_name(j->out_dtype), (long long)mf->shard_bytes,
             sp_dtype_st_name(mf->spill_dtype), j->bk_identity);
    if (mf->calib_text) /* the text's windows: its ids are hashed below, which covers the text and the tokenizer */
        snprintf(txt + strlen(txt), sizeof txt - strlen(txt), "calib_text=%s\nsampling=%s\nseed=%lld\n", mf->calib_text,
                 mf->calib_sampling == SP_CALIB_SAMPLING_RANDOM ? "random" : "first", (long long)mf->calib_seed);
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
        size_t n = strlen(e->d_name);
        if ((n > 4 && !strcmp(e->d_name + n - 4, ".tmp")) || (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) ||
            !strcmp(e->d_name, "model.safetensors.index.json")) {
            char *p = sp_job_join(j->mf->output_path, e->d_name);
            if (p) unlink(p);
            free(p);
        }
    }
    closedir(d);
}

/* Opens the job: lock, journal, replay, verification. *complete is set when
 * the journal says the job is done (and it verified). */
int sp_resume_open(job *j, int *complete) {
    const sp_manifest *mf = j->mf;
    *complete = 0;
    j->resume_layer = -2;
    if (mkdir(j->job_dir, 0755) != 0 && errno != EEXIST)
        return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the job directory", j->job_dir);
    char *lp = sp_job_join(j->job_dir, "lock"), *jp = sp_job_join(j->job_dir, "journal");
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
            if (l.layer < -1 || l.layer > j->L || l.n_eval_rows < 0 || l.n_eval_rows > j->n_pca ||
                r->len != sizeof l + (uint32_t)(l.n_eval_rows * j->D * 8) || l.n_tensors_done > n_tensor_recs)
                rc = damaged(j, "a layer record");
            else {
                int64_t first = l.layer < 0 ? 0 : 1 + j->n_pca * l.layer;
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
        int expect = l.layer >= j->L ? nt : j->layer_out0[l.layer + 1];
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
            j->read_start = l.layer < j->L ? j->layer_read0[l.layer + 1] : j->n_reads;
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

/* `slicepipe status OUT_DIR`: how far a job got. Reads a copy of the journal,
 * so it never truncates a tail that a running writer is appending to. */
int sp_job_status(const char *out_dir) {
    char *jd = sp_job_join(out_dir, ".slicepipe"), *jp = jd ? sp_job_join(jd, "journal") : NULL, *lp = jd ? sp_job_join(jd, "lock") : NULL;
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
