/* pipeline/run/split_auto.c — [slicing] split = "auto" for policy = "stock"
 * (docs/algorithm.md §12, "Choosing the split").
 *
 * Which share of the cut should come from the residual width depends on the
 * model: on some, pruning MLP neurons alone wins by a nat; on others the
 * global basis does. The split is chosen the way a user would choose it by
 * hand, on calibration data only:
 *
 *   1. the last split_holdout of the nsamples calibration windows are held
 *      back; each candidate split (sp_split_candidates) is run as an ordinary
 *      job calibrated on the first nsamples − split_holdout windows, in
 *      <output>/.slicepipe/split-auto/split-S/;
 *   2. each candidate's mean NLL on the held-back windows is measured (and
 *      the dense model's, for the report), recorded in split-S.json, and
 *      the candidate's folder is removed (disk stays at one extra model);
 *   3. the lowest NLL wins (ties to the lower split), and the final job runs
 *      with that split on all nsamples windows into <output>, recording the
 *      measurements in config.json's slicepipe block and in the report.
 *
 * Every step resumes: a candidate job is journaled like any job, and a
 * recorded score is reused only when its key (the manifest file's bytes, the
 * model's fingerprint, the calibration tokens, the backend's identity, the
 * version, the split and the hold-out) matches; otherwise it is measured
 * again. The choice is a deterministic function of those, so a killed run
 * resumed gives the output an uninterrupted one gives. --restart discards the
 * scores with the rest. */
#define _XOPEN_SOURCE 700
#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "backend.h"
#include "calib.h"
#include "error.h"
#include "eval.h"
#include "fileio.h"
#include "job.h"
#include "resume.h"
#include "slice.h"
#include "sp_version.h"

const double sp_split_candidates[SP_SPLIT_CANDIDATES] = {0.0, 0.5, 1.0};

cJSON *sp_split_choice_json(const sp_split_choice *ch) {
    cJSON *a = cJSON_CreateObject(), *cs = cJSON_CreateArray();
    int ok = a && cJSON_AddItemToObject(a, "candidates", cs) &&
             cJSON_AddNumberToObject(a, "holdout_windows", (double)ch->holdout) &&
             cJSON_AddNumberToObject(a, "nll_dense", ch->dense_nll) &&
             cJSON_AddNumberToObject(a, "chosen", sp_split_candidates[ch->chosen]);
    for (int i = 0; ok && i < SP_SPLIT_CANDIDATES; i++) {
        cJSON *c = cJSON_CreateObject();
        ok = c && cJSON_AddItemToArray(cs, c) && cJSON_AddNumberToObject(c, "split", sp_split_candidates[i]) &&
             (isfinite(ch->nll[i]) ? cJSON_AddNumberToObject(c, "nll", ch->nll[i]) != NULL
                                   : cJSON_AddNullToObject(c, "nll") != NULL) &&
             cJSON_AddNumberToObject(c, "params", (double)ch->params[i]);
    }
    if (!ok) {
        cJSON_Delete(a);
        if (!a) cJSON_Delete(cs);
        return NULL;
    }
    return a;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) == 0 || errno == ENOENT ? 0 : -1;
}

/* Removes a folder this file made (a candidate's output), links not followed. */
static int remove_tree(const char *dir) {
    struct stat st;
    if (lstat(dir, &st) != 0) return errno == ENOENT ? 0 : sp_fail_errno(SP_EX_IOERR, "%s", dir);
    if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) return sp_fail_errno(SP_EX_IOERR, "%s: cannot remove", dir);
    return 0;
}

static int make_dir(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create", dir);
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return sp_fail(SP_EX_CANTCREAT, "%s: is not a directory (a link or a file)", dir);
    return 0;
}

/* The candidate job: split s on the first nsamples − holdout windows, into
 * its own folder, no [eval], no GGUF. Shares mf's strings. */
static sp_manifest candidate(const sp_manifest *mf, double s, char *out) {
    sp_manifest c = *mf;
    c.split = s;
    c.split_auto = 0;
    c.split_choice = NULL;
    c.calib_nsamples = mf->calib_nsamples - mf->split_holdout;
    c.output_path = out;
    c.has_eval = 0;
    c.gguf_type = -1;
    return c;
}

typedef struct scorer {
    const sp_manifest *mf;
    sp_bk *bk;              /* host CPU backend for the evaluations */
    sp_tokens held;         /* a view: the held-back windows */
    XXH3_state_t *key;      /* hashed so far: everything but the split */
    char dir[4300];         /* <output>/.slicepipe/split-auto */
    int progress;
} scorer;

/* The score file's key for split s (s < 0: the dense model). */
static void score_key(const scorer *sc, double s, char hex[33]) {
    XXH3_state_t *st = XXH3_createState();
    SP_ASSERT(st);
    XXH3_copyState(st, sc->key);
    XXH3_128bits_update(st, &s, sizeof s);
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    sp_hex128(h.high64, h.low64, hex);
}

static void score_path(const scorer *sc, double s, char *buf, size_t n) {
    if (s < 0) snprintf(buf, n, "%s/dense.json", sc->dir);
    else snprintf(buf, n, "%s/split-%g.json", sc->dir, s);
}

/* A recorded score with the right key: 1 (nll, params set); 0 otherwise
 * (missing, stale or unreadable: measured again). */
static int score_read(const scorer *sc, double s, double *nll, int64_t *params) {
    char path[4400], want[33];
    score_path(sc, s, path, sizeof path);
    score_key(sc, s, want);
    char *txt = NULL;
    int64_t len = 0;
    if (sp_io_read_small(path, 1 << 16, &txt, &len) != 0) return 0; /* missing or unreadable: measured again */
    cJSON *o = cJSON_Parse(txt);
    free(txt);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "key"), *v = cJSON_GetObjectItemCaseSensitive(o, "nll");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "params");
    int ok = cJSON_IsString(k) && strcmp(k->valuestring, want) == 0 && cJSON_IsNumber(p);
    if (ok) {
        *nll = cJSON_IsNumber(v) ? v->valuedouble : NAN; /* null: the split cannot meet the target */
        *params = (int64_t)p->valuedouble;
    }
    cJSON_Delete(o);
    return ok;
}

static int score_write(const scorer *sc, double s, double nll, int64_t params) {
    char path[4400], key[33];
    score_path(sc, s, path, sizeof path);
    score_key(sc, s, key);
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddStringToObject(o, "key", key) && (s < 0 || cJSON_AddNumberToObject(o, "split", s)) &&
             cJSON_AddNumberToObject(o, "windows", (double)sc->mf->split_holdout) &&
             (isfinite(nll) ? cJSON_AddNumberToObject(o, "nll", nll) != NULL : cJSON_AddNullToObject(o, "nll") != NULL) &&
             cJSON_AddNumberToObject(o, "params", (double)params);
    char *txt = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!txt) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    int rc = sp_io_write_atomic(path, txt, (int64_t)strlen(txt));
    free(txt);
    return rc;
}

/* Mean NLL of model m on the held-back windows, and its stored parameters. */
static int held_nll(const scorer *sc, const sp_model *m, double *nll, int64_t *params) {
    sp_eval_opts eo = {.seqlen = sc->mf->calib_seqlen, .windows = sc->mf->split_holdout, .bk = sc->bk};
    sp_eval_result r;
    SP_TRY(sp_eval(m, &sc->held, &eo, &r));
    *nll = r.nll;
    *params = m->n_params;
    return 0;
}

/* held_nll of the model in folder dir (a candidate's output). */
static int held_nll_of(const scorer *sc, const char *dir, double *nll, int64_t *params) {
    sp_model m;
    SP_TRY(sp_model_open(dir, &m));
    int rc = held_nll(sc, &m, nll, params);
    sp_model_close(&m);
    return rc;
}

/* The candidates' plans checked before anything is written: a split whose
 * widths cannot meet the target is left out (its score is NaN); anything
 * else refused is refused for the whole run. */
static int check_candidates(const sp_manifest *mf, const sp_run_opts *o, int feasible[SP_SPLIT_CANDIDATES]) {
    sp_run_opts q = *o;
    q.dry_run = 1, q.quiet = 1, q.nested = 1;
    int any = 0, first_rc = 0;
    char first[1024] = "";
    for (int i = 0; i < SP_SPLIT_CANDIDATES; i++) {
        sp_manifest c = candidate(mf, sp_split_candidates[i], mf->output_path);
        int rc = sp_slice_run(&c, &q);
        feasible[i] = rc == 0;
        any |= feasible[i];
        if (rc && !first_rc) {
            first_rc = rc;
            snprintf(first, sizeof first, "%s", sp_errmsg());
        }
        if (rc && rc != SP_EX_USAGE) return rc; /* a bad input: every candidate would hit it */
        if (rc && !o->quiet) fprintf(stderr, "slicepipe: split auto: split %g left out: %s\n", sp_split_candidates[i], sp_errmsg());
    }
    if (!any) return sp_fail(first_rc, "%s (split = \"auto\": no candidate split meets the plan)", first);
    return 0;
}

static int dry_run(const sp_manifest *mf, const sp_run_opts *o) {
    printf("split = \"auto\": %d candidate splits, each calibrated on %lld of the %lld windows and scored on the last "
           "%lld; the chosen one then runs on all %lld\n",
           SP_SPLIT_CANDIDATES, (long long)(mf->calib_nsamples - mf->split_holdout), (long long)mf->calib_nsamples,
           (long long)mf->split_holdout, (long long)mf->calib_nsamples);
    for (int i = 0; i < SP_SPLIT_CANDIDATES; i++) {
        sp_manifest c = *mf;
        c.split = sp_split_candidates[i];
        c.split_auto = 0;
        printf("\n== candidate split %g ==\n", c.split);
        fflush(stdout);
        int rc = sp_slice_run(&c, o);
        if (rc) {
            printf("(refused: %s)\n", sp_errmsg());
            if (rc != SP_EX_USAGE) return rc;
        }
    }
    return 0;
}

/* The dense model's held-back NLL, recorded or measured. */
static int score_dense(scorer *sc, const sp_model *dense, sp_split_choice *ch) {
    int64_t p;
    if (score_read(sc, -1, &ch->dense_nll, &p)) return 0;
    if (sc->progress) fprintf(stderr, "slicepipe: split auto: the dense model on the %lld held-back windows\n",
                              (long long)sc->mf->split_holdout);
    SP_TRY(held_nll(sc, dense, &ch->dense_nll, &p));
    return score_write(sc, -1, ch->dense_nll, p);
}

static int score_all(scorer *sc, const sp_run_opts *o, const int feasible[SP_SPLIT_CANDIDATES], sp_split_choice *ch) {
    const sp_manifest *mf = sc->mf;
    for (int i = 0; i < SP_SPLIT_CANDIDATES; i++) {
        const double s = sp_split_candidates[i];
        char out[4400];
        snprintf(out, sizeof out, "%s/split-%g", sc->dir, s);
        if (score_read(sc, s, &ch->nll[i], &ch->params[i])) {
            SP_TRY(remove_tree(out)); /* a run killed after the score was recorded */
            if (sc->progress)
                fprintf(stderr, "slicepipe: split auto: candidate %d/%d (split %g): held-back NLL %.6f, recorded\n", i + 1,
                        SP_SPLIT_CANDIDATES, s, ch->nll[i]);
            continue;
        }
        if (!feasible[i]) {
            ch->nll[i] = NAN, ch->params[i] = 0;
            SP_TRY(score_write(sc, s, NAN, 0));
            continue;
        }
        if (sc->progress)
            fprintf(stderr, "slicepipe: split auto: candidate %d/%d (split %g) on %lld of %lld calibration windows\n", i + 1,
                    SP_SPLIT_CANDIDATES, s, (long long)(mf->calib_nsamples - mf->split_holdout),
                    (long long)mf->calib_nsamples);
        sp_manifest c = candidate(mf, s, out);
        sp_run_opts q = *o;
        q.nested = 1, q.restart = 0;
        int rc = sp_slice_run(&c, &q);
        if (rc) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", sp_errmsg());
            return sp_fail(rc, "split = \"auto\", candidate split %g (its job is in %s): %s", s, out, msg);
        }
        SP_TRY(held_nll_of(sc, out, &ch->nll[i], &ch->params[i]));
        SP_TRY(score_write(sc, s, ch->nll[i], ch->params[i]));
        SP_TRY(remove_tree(out));
        if (sc->progress)
            fprintf(stderr, "slicepipe: split auto: candidate %d/%d (split %g): held-back NLL %.6f (dense %.6f)\n", i + 1,
                    SP_SPLIT_CANDIDATES, s, ch->nll[i], ch->dense_nll);
    }
    ch->chosen = -1;
    for (int i = 0; i < SP_SPLIT_CANDIDATES; i++)
        if (isfinite(ch->nll[i]) && (ch->chosen < 0 || ch->nll[i] < ch->nll[ch->chosen])) ch->chosen = i;
    if (ch->chosen < 0) return sp_fail(SP_EX_DATAERR, "%s: split = \"auto\": no candidate gave a finite held-back NLL", mf->path);
    return 0;
}

/* Everything a score depends on but the split, hashed into sc->key. */
static int key_init(scorer *sc, const sp_model *m, const sp_tokens *calib) {
    const sp_manifest *mf = sc->mf;
    char *txt = NULL, fp[33], bkid[256];
    int64_t len = 0;
    SP_TRY(sp_io_read_small(mf->path, 1 << 24, &txt, &len));
    int rc = sp_resume_fingerprint(m, fp);
    if (rc) {
        free(txt);
        return rc;
    }
    sc->bk->identity(sc->bk, bkid, sizeof bkid);
    sc->key = XXH3_createState();
    if (!sc->key) {
        free(txt);
        return sp_fail(SP_EX_SOFTWARE, "out of memory");
    }
    XXH3_128bits_reset(sc->key);
    XXH3_128bits_update(sc->key, txt, (size_t)len + 1);
    XXH3_128bits_update(sc->key, fp, sizeof fp);
    XXH3_128bits_update(sc->key, calib->ids, (size_t)calib->n * sizeof *calib->ids);
    XXH3_128bits_update(sc->key, bkid, strlen(bkid) + 1);
    XXH3_128bits_update(sc->key, SP_VERSION, sizeof SP_VERSION);
    XXH3_128bits_update(sc->key, &mf->split_holdout, sizeof mf->split_holdout);
    free(txt);
    return 0;
}

int sp_split_auto_run(const sp_manifest *mf, const sp_run_opts *o) {
    SP_ASSERT(mf->split_auto && mf->split_holdout >= 1 && mf->split_holdout < mf->calib_nsamples);
    if (o->dry_run) return dry_run(mf, o);
    int feasible[SP_SPLIT_CANDIDATES];
    SP_TRY(check_candidates(mf, o, feasible)); /* every input validated before anything is written */

    scorer sc = {.mf = mf, .progress = !o->quiet};
    sp_tokens calib = {0};
    sp_model m; /* the dense model: its fingerprint, its held-back NLL */
    SP_TRY(sp_model_open(mf->model_path, &m));
    int rc = sp_calib_load(mf, m.cfg.vocab_size, 0, &calib);
    const int64_t T = mf->calib_seqlen, kept = mf->calib_nsamples - mf->split_holdout;
    if (!rc) sc.held = (sp_tokens){.ids = calib.ids + kept * T, .n = mf->split_holdout * T};
    /* The scoring runs where a job's [eval] runs (slice.c plan_eval): on the
     * job's backend when its memory is host memory, else on the CPU. */
    if (!rc) rc = sp_bk_open_prec(mf->backend, (enum sp_bk_prec)mf->precision, &sc.bk);
    if (!rc && !sc.bk->host_shared) {
        sp_bk_close(sc.bk);
        sc.bk = NULL;
        rc = sp_bk_cpu_open(&sc.bk);
    }
    if (!rc) sc.bk->set_threads(sc.bk, mf->threads, m.cfg.hidden_size);
    if (!rc) rc = key_init(&sc, &m, &calib);

    char job_dir[4200];
    if (!rc && (size_t)snprintf(job_dir, sizeof job_dir, "%s/.slicepipe", mf->output_path) >= sizeof job_dir)
        rc = sp_fail(SP_EX_CANTCREAT, "%s: the output path is too long", mf->output_path);
    if (!rc) snprintf(sc.dir, sizeof sc.dir, "%s/split-auto", job_dir);
    if (!rc) rc = sp_output_prepare(mf->output_path);
    if (!rc) rc = make_dir(job_dir);
    if (!rc && o->restart) rc = remove_tree(sc.dir);
    if (!rc) rc = make_dir(sc.dir);

    sp_split_choice ch = {.holdout = mf->split_holdout};
    if (!rc) rc = score_dense(&sc, &m, &ch);
    sp_model_close(&m); /* not held while the candidate jobs run */
    if (!rc) rc = score_all(&sc, o, feasible, &ch);
    if (!rc && !o->quiet) {
        fprintf(stderr, "slicepipe: split auto: held-back NLL on %lld windows of %lld tokens (dense %.6f):", (long long)ch.holdout,
                (long long)T, ch.dense_nll);
        for (int i = 0; i < SP_SPLIT_CANDIDATES; i++)
            fprintf(stderr, " split %g %.6f%s", sp_split_candidates[i], ch.nll[i], i == ch.chosen ? " (chosen)" : "");
        fprintf(stderr, "\n");
    }
    if (sc.key) XXH3_freeState(sc.key);
    if (sc.bk) sp_bk_close(sc.bk);
    sp_tokens_free(&calib);
    if (rc) return rc;

    sp_manifest f = *mf;
    f.split = sp_split_candidates[ch.chosen];
    f.split_auto = 0;
    f.split_choice = &ch;
    return sp_slice_run(&f, o);
}

int sp_split_auto_status(const char *out_dir, char *cand, size_t n) {
    char dir[4400];
    cand[0] = 0;
    snprintf(dir, sizeof dir, "%s/.slicepipe/split-auto", out_dir);
    DIR *d = opendir(dir);
    if (!d) return 0;
    printf("split:       \"auto\" (%s)\n", dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4700];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) {
            char *txt = NULL;
            int64_t tl = 0;
            cJSON *o = sp_io_read_small(path, 1 << 16, &txt, &tl) == 0 ? cJSON_Parse(txt) : NULL;
            free(txt);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "nll");
            printf("             %.*s: held-back NLL %s", (int)(len - 5), e->d_name, cJSON_IsNumber(v) ? "" : "none (cannot meet the target)");
            if (cJSON_IsNumber(v)) printf("%.6f", v->valuedouble);
            printf(" (recorded)\n");
            cJSON_Delete(o);
        } else {
            printf("             %s: candidate job in progress or interrupted\n", e->d_name);
            snprintf(cand, n, "%s", path);
        }
    }
    closedir(d);
    return 1;
}
