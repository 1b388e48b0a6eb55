/* pipeline/slice.c — SliceGPT exactly as DESIGN.md §1, one layer at a time.
 *
 * Notation (DESIGN.md): N calibration tokens, D the original width, Q a D×D
 * orthogonal matrix whose COLUMNS are eigenvectors sorted by descending
 * eigenvalue (row-major storage: Q[i*D + j] = component i of vector j).
 *
 *   X₀ = Emb[tokens]; Q = PCA(X₀); Emb ← Emb·Q[:, :d]
 *   per layer, input basis Q, width d_in, inputs X (N×D, unrotated):
 *     W_{q,k,v} ← (W·diag γ_in)·Q[:, :d_in];  S_attn⁰ = Q[:, :d_in]ᵀ
 *     M  = Xr·S_attn⁰ + Attn(RMSN(Xr))·W_oᵀ      (Xr = X·Q[:, :d_in]; W_o unsliced)
 *     Qm = PCA(M)
 *     S_attn ← S_attn⁰·Qm[:, :d_mid];  W_o ← (Qmᵀ·W_o)[:d_mid, :]
 *     W_{gate,up} ← (W·diag γ_post)·Qm[:, :d_mid];  S_mlp⁰ = Qm[:, :d_mid]ᵀ
 *     Y  = Mr·S_mlp⁰ + MLP(RMSN(Mr))              (Mr = M·Qm[:, :d_mid])
 *     Qn = PCA(Y)
 *     S_mlp ← S_mlp⁰·Qn[:, :d_out];  W_down ← (Qnᵀ·W_down)[:d_out, :]
 *     X ← Y; Q ← Qn                               (d_out = D in the last layer)
 *   W_head ← (W_head·diag γ_final)·Q
 *
 * Rotations are computed in float64 from the float32 weights and stored in the
 * output dtype; the forward passes that produce the next signals use float32
 * copies of the same float64 results.
 *
 * The calibration activations never need to fit in RAM: they stream through
 * two spill files (io/spill.h) in chunks of whole windows. File A holds X; the
 * attention pass reads A and writes M to B; the MLP pass reads each chunk of B
 * and writes Y over it in place; then B is the next layer's X and A is free.
 * A is never modified while a layer runs, so a crash mid-layer can always
 * restart that layer from its intact input. Second moments are accumulated one
 * window at a time, so the bits of the result do not depend on the chunk size
 * (that is, on [resources] memory).
 */
#include "slice.h"

#include <cJSON.h>
#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "error.h"
#include "eval.h"
#include "fileio.h"
#include "model.h"
#include "pca.h"
#include "report.h"
#include "sp_version.h"
#include "spill.h"
#include "st_writer.h"
#include "tokens.h"

#define ROW_BLOCK 512 /* rows of a big matrix rotated at a time (embedding, head) */

int64_t sp_slice_width(int64_t D, double sparsity, int64_t round_to) {
    int64_t d = (int64_t)floor((1.0 - sparsity) * (double)D);
    d -= d % round_to;
    return d;
}

typedef struct job {
    const sp_manifest *mf;
    const sp_run_opts *o;
    sp_model m;
    sp_tokens calib;
    sp_dtype out_dtype;
    int64_t N, T, D, L, V, F, hq, hkv, d;
    int64_t *d_in, *d_mid, *d_out; /* (L) */
    sp_stw *w;
    /* working memory, sized once */
    int64_t chunk_w;   /* windows per spill chunk */
    sp_spill *sa, *sb; /* (N, D) spills: A holds X then Y; B holds M */
    char *spill_a, *spill_b;
    float *cin;        /* (chunk_w·T, D) a chunk read from a spill */
    float *cout;       /* (chunk_w·T, D) a chunk to write */
    float *tmp;        /* (T, D) a window rotated */
    double *Q, *Qm, *Qn; /* (D, D) each */
    float *Qf;         /* (D, D) float32 copy of the leading columns in use */
    double *evals;     /* ((1 + 2L), D) eigenvalues of every PCA, descending */
    double *dbuf;      /* (max(F, hq, D, ROW_BLOCK), D) float64 scratch */
    double *dout;      /* (max(F, hq, D, ROW_BLOCK), D) float64 results */
    void *obuf;        /* same count, in the output dtype */
    float *big;        /* (V, D) embedding or head, float32 */
    float *norm;       /* (D) */
    sp_layer_buf lb;   /* the layer as read */
    sp_layer_w lw;     /* the layer used for the forward passes */
    float *fq, *fk, *fv, *fo, *fg, *fu, *fd, *fsa, *fsm; /* float32 rotated weights */
    sp_cov cov;
    sp_fwd_scratch *scr;
    double t_start;
} job;

static int64_t max3(int64_t a, int64_t b, int64_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

/* Writes `n` float64 values to tensor `name` in the output dtype. */
static int emit(job *j, const char *name, const double *v, int64_t n) {
    sp_convert_from_f64(j->out_dtype, v, n, j->obuf);
    return sp_stw_write(j->w, name, j->obuf, n * sp_dtype_size(j->out_dtype));
}

static void to_f32(const double *v, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = (float)v[i];
}

/* out (rows, k) = (W·diag γ)·Q[:, :k], W (rows, D) float32, γ (D) or NULL.
 * rows <= the scratch capacity. */
static void rot_right(job *j, const float *W, int64_t rows, const float *gamma, const double *Q, int64_t k, double *out) {
    const int64_t D = j->D;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < D; c++) j->dbuf[r * D + c] = (double)W[r * D + c] * (gamma ? (double)gamma[c] : 1.0);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)k, (int)D, 1.0, j->dbuf, (int)D, Q, (int)D, 0.0,
                out, (int)k);
}

/* out (k, cols) = Q[:, :k]ᵀ·W, W (D, cols) float32. */
static void rot_left(job *j, const double *Q, int64_t k, const float *W, int64_t cols, double *out) {
    const int64_t D = j->D;
    for (int64_t i = 0; i < D * cols; i++) j->dbuf[i] = (double)W[i];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)cols, (int)D, 1.0, Q, (int)D, j->dbuf, (int)cols, 0.0,
                out, (int)cols);
}

/* Rotates a big (rows, D) float32 matrix block by block and streams it out. */
static int rot_right_emit(job *j, const char *name, const float *W, int64_t rows, const float *gamma, const double *Q,
                          int64_t k) {
    for (int64_t r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
        int64_t nr = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
        rot_right(j, W + r0 * j->D, nr, gamma, Q, k, j->dout);
        SP_TRY(emit(j, name, j->dout, nr * k));
    }
    return 0;
}

/* Qf (D, k) = float32 of Q[:, :k]. */
static void q_f32(job *j, const double *Q, int64_t k) {
    for (int64_t r = 0; r < j->D; r++)
        for (int64_t c = 0; c < k; c++) j->Qf[r * k + c] = (float)Q[r * j->D + c];
}

/* dst (rows, k) = src (rows, D) · Qf (D, k). */
static void apply_qf(job *j, const float *src, int64_t rows, int64_t k, float *dst) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)k, (int)j->D, 1.0f, src, (int)j->D, j->Qf, (int)k,
                0.0f, dst, (int)k);
}

static int pca(job *j, double *Q, int which, const char *what, int64_t layer) {
    int rc = sp_pca(&j->cov, Q, j->evals + (int64_t)which * j->D);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        if (layer >= 0) return sp_fail(rc, "layer %lld, %s PCA: %s", (long long)layer, what, msg);
        return sp_fail(rc, "%s PCA: %s", what, msg);
    }
    return 0;
}

/* Progress on stderr: on a terminal one line rewritten per phase; otherwise
 * (logs, CI) one line per finished layer. */
static void progress(job *j, int64_t l, const char *phase) {
    if (j->o->quiet) return;
    int tty = isatty(2);
    if (!tty && strcmp(phase, "done") != 0) return;
    double el = sp_now() - j->t_start;
    int done = strcmp(phase, "done") == 0;
    double frac = (double)(l + done) / (double)j->L;
    double eta = frac > 0 ? el * (1 - frac) / frac : 0;
    double tps = el > 0 && l + done > 0 ? (double)j->N * (double)(l + done) / el : 0;
    fprintf(stderr, "%sslicepipe: layer %lld/%lld %-9s | %.0f calib tok/s | elapsed %.1fs | ETA %.1fs   %s", tty ? "\r" : "",
            (long long)l + 1, (long long)j->L, phase, tps, el, eta, tty ? "" : "\n");
}

static char *names(char *buf, int64_t l, const char *suffix) { return (char *)sp_layer_tensor_name(buf, l, suffix); }

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
            SP_TRY(sp_stw_add(j->w, names(nm, l, t[i].suf), j->out_dtype, 2, s));
        }
    }
    s[0] = j->V, s[1] = j->d_out[j->L - 1];
    return sp_stw_add(j->w, "lm_head.weight", j->out_dtype, 2, s);
}

static int slice_layer(job *j, int64_t l) {
    char nm[256];
    const int64_t D = j->D, T = j->T, N = j->N, W = N / T;
    const int64_t di = j->d_in[l], dm = j->d_mid[l], dout = j->d_out[l];
    progress(j, l, "read");
    SP_TRY(sp_model_load_layer(&j->m, l, &j->lb));
    const sp_layer_w *in = &j->lb.w;

    /* 2.1 readers of the attention block: fuse γ_in, rotate by Q[:, :d_in]. */
    rot_right(j, in->wq, j->hq, in->attn_norm, j->Q, di, j->dout);
    SP_TRY(emit(j, names(nm, l, "self_attn.q_proj.weight"), j->dout, j->hq * di));
    to_f32(j->dout, j->hq * di, j->fq);
    rot_right(j, in->wk, j->hkv, in->attn_norm, j->Q, di, j->dout);
    SP_TRY(emit(j, names(nm, l, "self_attn.k_proj.weight"), j->dout, j->hkv * di));
    to_f32(j->dout, j->hkv * di, j->fk);
    rot_right(j, in->wv, j->hkv, in->attn_norm, j->Q, di, j->dout);
    SP_TRY(emit(j, names(nm, l, "self_attn.v_proj.weight"), j->dout, j->hkv * di));
    to_f32(j->dout, j->hkv * di, j->fv);
    /* S_attn⁰ = Q[:, :d_in]ᵀ (d_in, D) */
    for (int64_t r = 0; r < di; r++)
        for (int64_t c = 0; c < D; c++) j->fsa[r * D + c] = (float)j->Q[c * D + r];

    /* 2.2 M = Xr·S_attn⁰ + Attn(RMSN(Xr))·W_oᵀ over every window; H_M. */
    progress(j, l, "attention");
    j->lw = (sp_layer_w){.d_in = di, .d_mid = D, .d_out = D, .wq = j->fq, .wk = j->fk, .wv = j->fv, .wo = in->wo,
                         .attn_shortcut = j->fsa};
    q_f32(j, j->Q, di);
    sp_cov_reset(&j->cov);
    for (int64_t k0 = 0; k0 < W; k0 += j->chunk_w) {
        int64_t nw = W - k0 < j->chunk_w ? W - k0 : j->chunk_w;
        SP_TRY(sp_spill_read(j->sa, k0 * T, nw * T, D, j->cin));
        for (int64_t k = 0; k < nw; k++) {
            apply_qf(j, j->cin + k * T * D, T, di, j->tmp);
            sp_fwd_attn(&j->m.dims, &j->lw, j->tmp, T, j->cout + k * T * D, j->scr);
            SP_TRY(sp_cov_add(&j->cov, j->cout + k * T * D, T, D));
        }
        SP_TRY(sp_spill_write(j->sb, k0 * T, nw * T, D, j->cout));
    }
    progress(j, l, "PCA");
    SP_TRY(pca(j, j->Qm, 1 + 2 * (int)l, "attention-output", l));

    /* 2.3 o_proj, the attention shortcut, gate and up. */
    progress(j, l, "write");
    rot_left(j, j->Qm, dm, in->wo, j->hq, j->dout);
    SP_TRY(emit(j, names(nm, l, "self_attn.o_proj.weight"), j->dout, dm * j->hq));
    /* S_attn = Q[:, :d_in]ᵀ·Qm[:, :d_mid] (d_in, d_mid) */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)di, (int)dm, (int)D, 1.0, j->Q, (int)D, j->Qm, (int)D, 0.0,
                j->dout, (int)dm);
    SP_TRY(emit(j, names(nm, l, "attn_shortcut_Q"), j->dout, di * dm));
    rot_right(j, in->w_gate, j->F, in->mlp_norm, j->Qm, dm, j->dout);
    SP_TRY(emit(j, names(nm, l, "mlp.gate_proj.weight"), j->dout, j->F * dm));
    to_f32(j->dout, j->F * dm, j->fg);
    rot_right(j, in->w_up, j->F, in->mlp_norm, j->Qm, dm, j->dout);
    SP_TRY(emit(j, names(nm, l, "mlp.up_proj.weight"), j->dout, j->F * dm));
    to_f32(j->dout, j->F * dm, j->fu);
    /* S_mlp⁰ = Qm[:, :d_mid]ᵀ (d_mid, D) */
    for (int64_t r = 0; r < dm; r++)
        for (int64_t c = 0; c < D; c++) j->fsm[r * D + c] = (float)j->Qm[c * D + r];

    /* 2.4 Y = Mr·S_mlp⁰ + MLP(RMSN(Mr)), Mr = M·Qm[:, :d_mid]; Y replaces X. */
    progress(j, l, "MLP");
    j->lw = (sp_layer_w){.d_in = dm, .d_mid = dm, .d_out = D, .w_gate = j->fg, .w_up = j->fu, .w_down = in->w_down,
                         .mlp_shortcut = j->fsm};
    q_f32(j, j->Qm, dm);
    sp_cov_reset(&j->cov);
    for (int64_t k0 = 0; k0 < W; k0 += j->chunk_w) {
        int64_t nw = W - k0 < j->chunk_w ? W - k0 : j->chunk_w;
        SP_TRY(sp_spill_read(j->sb, k0 * T, nw * T, D, j->cin));
        for (int64_t k = 0; k < nw; k++) {
            apply_qf(j, j->cin + k * T * D, T, dm, j->tmp);
            sp_fwd_mlp(&j->m.dims, &j->lw, j->tmp, T, j->cout + k * T * D, j->scr);
            SP_TRY(sp_cov_add(&j->cov, j->cout + k * T * D, T, D));
        }
        SP_TRY(sp_spill_write(j->sb, k0 * T, nw * T, D, j->cout)); /* Y over M, in place */
    }
    sp_spill *sw = j->sa; /* B now holds the next layer's input */
    j->sa = j->sb;
    j->sb = sw;
    progress(j, l, "PCA");
    SP_TRY(pca(j, j->Qn, 2 + 2 * (int)l, "MLP-output", l));

    /* 2.5 down_proj and the MLP shortcut; the next layer's basis is Qn. */
    progress(j, l, "write");
    rot_left(j, j->Qn, dout, in->w_down, j->F, j->dout);
    SP_TRY(emit(j, names(nm, l, "mlp.down_proj.weight"), j->dout, dout * j->F));
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)dm, (int)dout, (int)D, 1.0, j->Qm, (int)D, j->Qn, (int)D, 0.0,
                j->dout, (int)dout);
    SP_TRY(emit(j, names(nm, l, "mlp_shortcut_Q"), j->dout, dm * dout));
    double *t = j->Q;
    j->Q = j->Qn;
    j->Qn = t;
    progress(j, l, "done");
    return 0;
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

static int alloc_job(job *j) {
    const int64_t D = j->D, cap = max3(j->F, j->hq, D) > ROW_BLOCK ? max3(j->F, j->hq, D) : ROW_BLOCK;
    struct {
        void **p;
        int64_t n, sz;
        const char *what;
    } a[] = {
        {(void **)&j->cin, j->chunk_w * j->T * D, 4, "activation chunk"},
        {(void **)&j->cout, j->chunk_w * j->T * D, 4, "activation chunk"},
        {(void **)&j->tmp, j->T * D, 4, "window buffer"},
        {(void **)&j->Q, D * D, 8, "Q"},
        {(void **)&j->Qm, D * D, 8, "Q"},
        {(void **)&j->Qn, D * D, 8, "Q"},
        {(void **)&j->Qf, D * D, 4, "Q"},
        {(void **)&j->evals, (1 + 2 * j->L) * D, 8, "eigenvalues"},
        {(void **)&j->dbuf, cap * D, 8, "rotation scratch"},
        {(void **)&j->dout, cap * D, 8, "rotation scratch"},
        {(void **)&j->obuf, cap * D, 8, "output buffer"},
        {(void **)&j->big, j->V * D, 4, "embedding/head"},
        {(void **)&j->norm, D, 4, "norm"},
        {(void **)&j->fq, j->hq * D, 4, "rotated weights"},
        {(void **)&j->fk, j->hkv * D, 4, "rotated weights"},
        {(void **)&j->fv, j->hkv * D, 4, "rotated weights"},
        {(void **)&j->fg, j->F * D, 4, "rotated weights"},
        {(void **)&j->fu, j->F * D, 4, "rotated weights"},
        {(void **)&j->fsa, D * D, 4, "shortcut"},
        {(void **)&j->fsm, D * D, 4, "shortcut"},
    };
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) SP_TRY(sp_alloc(a[i].p, a[i].n, a[i].sz, a[i].what));
    SP_TRY(sp_layer_buf_init(&j->m, &j->lb));
    SP_TRY(sp_cov_init(&j->cov, D, 256));
    SP_TRY(sp_spill_open(&j->sa, j->spill_a, j->N, D, j->mf->spill_dtype, j->chunk_w * j->T));
    SP_TRY(sp_spill_open(&j->sb, j->spill_b, j->N, D, j->mf->spill_dtype, j->chunk_w * j->T));
    return sp_fwd_scratch_init(&j->m.dims, j->T, D, &j->scr);
}

static void free_job(job *j) {
    sp_spill_free(j->sa, 1);
    sp_spill_free(j->sb, 1);
    if (j->spill_a && !j->mf->spill_dir) { /* the default folder goes when empty */
        char *slash = strrchr(j->spill_a, '/');
        if (slash) {
            *slash = 0;
            rmdir(j->spill_a);
        }
    }
    void *p[] = {j->cin, j->cout, j->spill_a, j->spill_b, j->tmp, j->Q,  j->Qm, j->Qn, j->Qf, j->evals, j->dbuf, j->dout, j->obuf, j->big,
                 j->norm, j->fq, j->fk,  j->fv, j->fo, j->fg, j->fu, j->fd,    j->fsa,  j->fsm,  j->d_in, j->d_mid,
                 j->d_out};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    sp_layer_buf_free(&j->lb);
    sp_cov_free(&j->cov);
    sp_fwd_scratch_free(j->scr);
    sp_stw_free(j->w);
    sp_tokens_free(&j->calib);
    sp_model_close(&j->m);
}

static int64_t plan_bytes(const job *j) {
    const int64_t D = j->D, cap = max3(j->F, j->hq, D) > ROW_BLOCK ? max3(j->F, j->hq, D) : ROW_BLOCK;
    return 2 * j->chunk_w * j->T * D * 4 + 2 * j->chunk_w * j->T * D * sp_dtype_size(j->mf->spill_dtype) + j->T * D * 4 + 3 * D * D * 8 + 3 * D * D * 4 + 3 * cap * D * 8 + j->V * D * 4 +
           (j->hq + 2 * j->hkv + 2 * j->F) * D * 4 + sp_layer_buf_bytes(&j->m) + D * D * 8 + 256 * D * 8 +
           j->T * j->T * 4 * 2 + j->T * (j->hq + 2 * j->hkv + 2 * j->F + D) * 4;
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

int sp_slice_run(const sp_manifest *mf, const sp_run_opts *o) {
    job jb = {.mf = mf, .o = o}, *j = &jb;
    int rc;
    j->t_start = sp_now();
    rc = sp_model_open(mf->model_path, &j->m);
    if (rc) return rc;
    sp_model_set_threads(&j->m, mf->threads);
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
    /* Chunks of whole windows: as many as half the memory left after the fixed
     * buffers allows, at most 256 MiB of chunk buffers, at least one window. */
    const int64_t W = j->N / j->T;
    const int64_t per_window = j->T * j->D * (2 * 4 + 2 * (int64_t)sp_dtype_size(mf->spill_dtype));
    j->chunk_w = 0;
    int64_t avail = (mf->memory_bytes - plan_bytes(j)) / 2;
    if (avail > ((int64_t)256 << 20)) avail = (int64_t)256 << 20;
    j->chunk_w = avail / per_window;
    if (j->chunk_w > W) j->chunk_w = W;
    if (j->chunk_w < 1) j->chunk_w = 1;
    int64_t plan = plan_bytes(j);
    int64_t spill_bytes = 2 * j->N * j->D * sp_dtype_size(mf->spill_dtype);
    int64_t out_bytes = j->V * j->d + j->V * j->D;
    for (int64_t l = 0; l < j->L; l++)
        out_bytes += (j->hq + 2 * j->hkv) * j->d_in[l] + j->d_mid[l] * j->hq + j->d_in[l] * j->d_mid[l] +
                     2 * j->F * j->d_mid[l] + j->d_out[l] * j->F + j->d_mid[l] * j->d_out[l];
    out_bytes *= sp_dtype_size(j->out_dtype);
    if (o->dry_run || !o->quiet) {
        fprintf(o->dry_run ? stdout : stderr,
                "plan: %s -> %s\n  D %lld -> d %lld (sparsity %g, round_to %lld), %lld layers, output %s\n"
                "  calibration %lld windows x %lld tokens = %lld tokens\n"
                "  memory plan %.1f MiB (limit %.1f MiB): activation chunks of %lld windows\n"
                "  disk: spill %.1f MiB (%s), output ~%.1f MiB\n",
                mf->model_path, mf->output_path, (long long)j->D, (long long)j->d, mf->sparsity, (long long)mf->round_to,
                (long long)j->L, sp_dtype_st_name(j->out_dtype), (long long)mf->calib_nsamples, (long long)j->T,
                (long long)j->N, plan / 1048576.0, mf->memory_bytes / 1048576.0, (long long)j->chunk_w,
                spill_bytes / 1048576.0, mf->spill_dtype == SP_DTYPE_BF16 ? "bf16" : "f32", out_bytes / 1048576.0);
    }
    if (plan > mf->memory_bytes) {
        rc = sp_fail(SP_EX_USAGE,
                     "%s: the memory plan needs %.1f MiB but [resources] memory allows %.1f MiB; raise memory, or lower "
                     "[calibration] nsamples or seqlen",
                     mf->path, plan / 1048576.0, mf->memory_bytes / 1048576.0);
        goto out;
    }
    if (o->dry_run) goto out;
    rc = prepare_output(mf->output_path);
    if (!rc) rc = prepare_spill(j);
    if (rc) goto out;

    rc = alloc_job(j);
    if (rc) goto out;
    rc = sp_stw_init(&j->w, mf->output_path, mf->shard_bytes);
    if (!rc) rc = declare(j);
    if (!rc) rc = sp_stw_plan(j->w);
    if (rc) goto out;

    /* 1. X₀ = Emb[tokens]; Q = PCA(X₀); Emb ← Emb·Q[:, :d]. */
    progress(j, 0, "embed");
    rc = sp_model_load_embed(&j->m, j->big);
    if (rc) goto out;
    sp_cov_reset(&j->cov);
    for (int64_t k0 = 0; k0 < j->N / j->T && !rc; k0 += j->chunk_w) {
        int64_t nw = j->N / j->T - k0 < j->chunk_w ? j->N / j->T - k0 : j->chunk_w;
        for (int64_t i = 0; i < nw * j->T; i++)
            memcpy(j->cout + i * j->D, j->big + (int64_t)j->calib.ids[k0 * j->T + i] * j->D, (size_t)j->D * 4);
        for (int64_t k = 0; k < nw && !rc; k++) rc = sp_cov_add(&j->cov, j->cout + k * j->T * j->D, j->T, j->D);
        if (!rc) rc = sp_spill_write(j->sa, k0 * j->T, nw * j->T, j->D, j->cout);
    }
    if (!rc) rc = pca(j, j->Q, 0, "embedding", -1);
    if (!rc) rc = rot_right_emit(j, "model.embed_tokens.weight", j->big, j->V, NULL, j->Q, j->d_in[0]);
    if (rc) goto out;

    /* 2. Layer by layer. */
    for (int64_t l = 0; l < j->L && !rc; l++) rc = slice_layer(j, l);
    if (rc) goto out;

    /* 3. W_head ← (W_head·diag γ_final)·Q. */
    progress(j, j->L - 1, "head");
    int has_norm;
    rc = sp_model_load_head(&j->m, j->big, j->norm, &has_norm);
    if (!rc) rc = rot_right_emit(j, "lm_head.weight", j->big, j->V, has_norm ? j->norm : NULL, j->Q, j->d_out[j->L - 1]);
    if (!rc) rc = sp_stw_finish(j->w);
    if (rc) goto out;
    if (!o->quiet && isatty(2)) fputc('\n', stderr);

    char fp[33];
    rc = fingerprint(&j->m, fp);
    if (!rc) rc = write_config(j, fp);
    if (!rc) rc = copy_side_files(j);
    if (rc) goto out;
    double t_slice = sp_now() - j->t_start;

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

    rc = sp_report_write_run(j->mf, &j->m, j->d_in, j->d_mid, j->d_out, j->evals, &dense, &sliced, t_slice, params_after,
                             bytes_after, sp_peak_rss_bytes());
    if (rc) goto out;
    printf("sliced %s -> %s\n", mf->model_path, mf->output_path);
    printf("  width       %lld -> %lld (sparsity %g)\n", (long long)j->D, (long long)j->d, mf->sparsity);
    printf("  parameters  %lld -> %lld (%.1f%%)\n", (long long)j->m.n_params, (long long)params_after,
           100.0 * (double)params_after / (double)j->m.n_params);
    printf("  bytes       %lld -> %lld\n", (long long)j->m.n_bytes, (long long)bytes_after);
    printf("  time        %.2f s, peak RSS %.1f MiB\n", t_slice, sp_peak_rss_bytes() / 1048576.0);
    if (mf->has_eval)
        printf("  perplexity  dense %.4f (nll %.6f) -> sliced %.4f (nll %.6f)\n", dense.ppl, dense.nll, sliced.ppl,
               sliced.nll);
    printf("  report      %s/report.html\n", mf->output_path);
out:
    free_job(j);
    return rc;
}
