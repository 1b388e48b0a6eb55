/* pipeline/slice/compute.c — the compute stage: SliceGPT exactly as
 * docs/algorithm.md §5.
 *
 * Notation (docs/algorithm.md §1): N calibration tokens, D the original
 * width, Q a D×D orthogonal matrix whose COLUMNS are eigenvectors sorted by
 * descending eigenvalue (row-major storage: Q[i*D + j] = component i of
 * vector j).
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
 * Weights arrive from the reader through the weights ring and are converted
 * to float32 chunk by chunk (NaN/Inf refused, naming the tensor). Rotations
 * are computed in float64, in blocks of columns or rows, and their float32
 * results replace the weights in place; those float32 values are what the
 * forward passes use and what is converted to the output dtype and sent to
 * the writer. The embedding and the head are never held whole: they stream
 * through in row blocks (the embedding twice: to gather the calibration rows,
 * then to rotate it).
 *
 * The calibration activations stream through two spill files in chunks of
 * whole windows. File A holds X; the attention pass reads A and writes M to
 * B; the MLP pass reads each chunk of B and writes Y over it in place; then B
 * is the next layer's X and A is free. A is never modified while a layer runs.
 * Second moments are accumulated one window at a time, so the result's bits do
 * not depend on the chunk size, that is on [resources] memory.
 *
 * Layer boundaries (crash safety, see stages.c for the journal side): after
 * the embedding and after every layer, compute makes its state durable — the
 * basis Q into one of two alternating basis files (the one the last journal
 * record names is never touched), the next layer's input spill fsynced — and
 * sends a BOUNDARY message with their hashes and the boundary's eigenvalues
 * down the output ring, behind the layer's tensors. A resumed run starts
 * after the last boundary the writer journaled.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "error.h"
#include "job.h"
#include "ridge.h"
#include "stage_link.h"
#include "stream.h"

#define COV_ROWS 256 /* rows widened to float64 per second-moment update */

typedef struct cstate {
    job *j;
    sp_stage_stat *st;
    sp_link io;       /* weights in, tensors and boundaries out (stage_link.h) */
    /* working memory, sized once */
    sp_layer_buf lb;  /* this layer's weights, then their rotations, float32 */
    sp_layer_w lw;    /* the layer as the current pass runs it (views into lb, fs) */
    const sp_bk *bk;  /* the backend: every numeric op */
    float *cin, *cout; /* (chunk_w·T, D) spill chunks */
    float *tmp;       /* (T, D) one window rotated */
    float *eb;        /* (rot_block, D) embedding/head rows */
    float *norm;      /* (D) final norm γ */
    float *norm_b;    /* (D) final norm β (LayerNorm families) */
    float *hb;        /* (V) the sliced head's bias */
    float *posb;      /* (T, D) learned positions 0..T-1, centred (OPT); else unused */
    float *fs;        /* (D, D) a shortcut, float32, host */
    /* Backend memory (linalg/backend.h). On a host-shared backend (the CPU)
     * the mirrors below alias their host buffers and nothing is copied. */
    float *Qf;        /* (D, D) float32 copy of Q[:, :k] */
    double *Q, *Qm, *Qn; /* (D, D) the bases */
    double *H;        /* (D, D) the second moment being accumulated */
    double *G;        /* (D, D) host, basis = "global": the sum over the residual positions */
    char survey_hash[33]; /* basis = "global": the spill the survey left, named by every boundary after it */
    int dense_pass;   /* the survey: windows go into the dense layer unrotated */
    double *evd;      /* (D) eigenvalues of one PCA */
    double *Qh;       /* (D, D) host copy of Q for the basis file */
    float *xw, *yw;   /* (T, D) one window in, one window out */
    float *ebd;       /* (rot_block, D) mirror of eb */
    float *fsd;       /* (D, D) mirror of fs */
    float *normd;     /* (D) mirror of norm */
    float *wd[SP_ARCH_LAYER_MAX]; /* mirrors of lb.t: the layer's tensors */
    int64_t h_rows;   /* tokens accumulated into H */
    int64_t *pos;     /* (N) calibration positions sorted by token id */
    int64_t *id_start; /* (V + 1) */
    sp_bk_ws *ws;     /* the backend's workspace: second moments, eigh, rotations */
    sp_layer_scratch *scr;
    sp_spill *sa, *sb;
    /* prune_ffn (docs/algorithm.md §12) */
    double *C;        /* (F, F) the MLP intermediate's second moment, backend memory */
    double *Ch;       /* (F, F) its host side */
    float *Z;         /* (T, F) one window's intermediate, backend memory */
    int64_t c_rows;   /* tokens accumulated into C */
    sp_bk_ws *wsf;    /* the backend's workspace for C (width F, no eigensolver) */
    int64_t *S;       /* (F) the kept neurons */
    double *zsum;     /* (F) a down projection with a bias: Zᵀ1, the intermediate's column sums, then its means */
    float *Zh;        /* (COV_ROWS, F) host side of Z for those sums (a backend with memory of its own) */
    float *raw;       /* (SP_ARCH_LAYER_MAX, D) identity: the layer's norm weights (γ, LayerNorm β) as read */
    /* refit (docs/algorithm.md §14): windows of 2T rows, the sliced stream's then the dense model's */
    float *xh;        /* (T, D) the sliced half mapped back to D, x·Q[:, :d]·Q[:, :d]ᵀ, backend memory */
    float *pm;        /* (D, D) Qm[:, :d_mid]·Qm[:, :d_mid]ᵀ: the attention shortcut in D coordinates, backend */
    float *K;         /* (rows, n + D) a writer's input rows joined with their targets, backend */
    double *G2;       /* (n + D)² their second moment, backend memory */
    double *G2h;      /* its host side */
    double *rfw;      /* the refit solve's work (sp_ridge_fit_bytes) */
    int64_t g_rows;   /* tokens accumulated into G2 */
    int64_t rf_din;   /* the layer's input width */
    sp_layer_w rw;    /* the dense view with the attention shortcut pm: the sliced attention, refit */
} cstate;


const char *const sp_prof_names[SP_PROF_COUNT] = {"forward", "second_moments", "eigh", "rotations", "spill_io", "waits"};

/* Adds the time since *t0 to phase p and restarts the clock. */
static void prof(cstate *c, enum sp_prof p, int64_t *t0) { sp_prof_add(c->st, p, t0); }


static void phase(cstate *c, int64_t layer, enum sp_phase p) {
    atomic_store(&c->st->layer, layer);
    atomic_store(&c->st->phase, (int32_t)p);
}

/* In place: W (rows, D) float32 ← (W·diag γ)·Q[:, :k] as (rows, k), in float64. */
static void rot_rows(cstate *c, float *W, int64_t rows, const float *gamma, const double *Q, int64_t k) {
    int64_t t0 = sp_now_ns();
    c->bk->rot_rows(c->bk, c->ws, W, rows, c->j->shape.hidden, gamma, Q, k);
    prof(c, SP_PROF_ROTATE, &t0);
}

/* In place: W (D, cols) float32 ← Q[:, :k]ᵀ·W as (k, cols), in float64. */
static void rot_cols(cstate *c, const double *Q, int64_t k, float *W, int64_t cols) {
    int64_t t0 = sp_now_ns();
    c->bk->rot_cols(c->bk, c->ws, Q, c->j->shape.hidden, k, W, cols);
    prof(c, SP_PROF_ROTATE, &t0);
}

/* fs (a, b) float32 = A[:, :a]ᵀ·B[:, :b], with scratch (a, b) float64. */
static void shortcut(cstate *c, const double *A, int64_t a, const double *B, int64_t b, double *scratch) {
    int64_t t0 = sp_now_ns();
    c->bk->basis_product(c->bk, A, a, B, b, c->j->shape.hidden, scratch, c->fsd);
    sp_bk_get(c->bk, c->fs, c->fsd, a * b * 4);
    prof(c, SP_PROF_ROTATE, &t0);
}

/* fs (k, D) = Q[:, :k]ᵀ in float32; Qf (D, k) = Q[:, :k] in float32. */
static void basis_f32(cstate *c, const double *Q, int64_t k) {
    int64_t t0 = sp_now_ns();
    c->bk->basis_f32(c->bk, Q, c->j->shape.hidden, k, c->Qf, c->fsd);
    prof(c, SP_PROF_ROTATE, &t0);
}

/* dst (rows, k) = src (rows, D) · Qf (D, k). */
static void apply_qf(cstate *c, const float *src, int64_t rows, int64_t k, float *dst) {
    const int64_t D = c->j->shape.hidden;
    c->bk->sgemm(c->bk, 0, 0, rows, k, D, 1.0f, src, D, c->Qf, k, 0.0f, dst, k);
}

static void cov_reset(cstate *c) {
    c->bk->zero(c->bk, c->H, c->j->shape.hidden * c->j->shape.hidden * 8);
    c->h_rows = 0;
}

/* H += Xᵀ·X for one window X (T, D). */
static int cov_add(cstate *c, const float *X) {
    const int64_t T = c->j->shape.seqlen, D = c->j->shape.hidden;
    int64_t t0 = sp_now_ns();
    int rc = c->bk->cov_add(c->bk, c->ws, c->H, D, X, T, D, c->h_rows);
    prof(c, SP_PROF_COV, &t0);
    SP_TRY(rc);
    c->h_rows += T;
    return 0;
}

static int pca(cstate *c, double *Q, int which, const char *what, int64_t layer) {
    int64_t t0 = sp_now_ns();
    const int64_t D = c->j->shape.hidden;
    double *ev = c->j->evals + (int64_t)which * D; /* host: the shared stats map */
    int rc = c->h_rows == 0 ? sp_fail(SP_EX_DATAERR, "PCA over zero calibration tokens")
                            : c->bk->eigh(c->bk, c->ws, c->H, D, 0.01, Q, sp_bk_out(c->bk, c->evd, ev));
    if (!rc) sp_bk_get(c->bk, ev, c->evd, D * 8);
    prof(c, SP_PROF_EIGH, &t0);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        if (layer >= 0) return sp_fail(rc, "layer %lld, %s PCA: %s", (long long)layer, what, msg);
        return sp_fail(rc, "%s PCA: %s", what, msg);
    }
    return 0;
}

/* basis = "global": G += H / tr(H) (trace weighting: every residual
 * position counts alike) or G += H (raw sums), in float64 on the host. */
static void global_fold(cstate *c) {
    const int64_t D = c->j->shape.hidden;
    const double *h = sp_bk_fetch(c->bk, c->Qh, c->H, D * D * 8);
    double tr = 0, w = 1.0;
    for (int64_t i = 0; i < D; i++) tr += h[i * D + i];
    if (c->j->plan.survey_trace) w = tr > 0 ? 1.0 / tr : 0.0;
    for (int64_t i = 0; i < D * D; i++) c->G[i] += w * h[i];
}

/* One pass over the calibration windows: in (spill) → f → out (spill) with
 * the second moment of the outputs, f taking nwin windows (job.group) at a
 * time. `in_place` writes back into the input. */
typedef void (*window_fn)(cstate *c, int64_t nwin, const float *x, float *y);

typedef struct pass_ctx {
    cstate *c;
    window_fn f;
    int64_t layer;
    const char *what;
} pass_ctx;

static int pass_window(void *ctx, int64_t w0, int64_t nwin, const float *x, float *y) {
    pass_ctx *p = ctx;
    cstate *c = p->c;
    const int64_t n = c->j->shape.seqlen * c->j->shape.hidden; /* one window's floats */
    SP_ASSERT(nwin >= 1 && nwin <= c->j->group);
    int64_t t0 = sp_now_ns();
    float *yd = sp_bk_out(c->bk, c->yw, y);
    p->f(c, nwin, sp_bk_put(c->bk, c->xw, x, nwin * n * 4), yd);
    prof(c, SP_PROF_FORWARD, &t0);
    int rc = 0;
    int64_t k = 0;
    for (; k < nwin && !rc; k++) rc = cov_add(c, yd + k * n); /* window by window, in order */
    sp_bk_get(c->bk, y, yd, nwin * n * 4);
    if (rc) { /* NaN/Inf: this layer is not committed; the message says where */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        return sp_fail(rc, "%s: layer %lld, %s output, calibration window %lld: %s; the layer was not committed",
                       c->j->mf->model_path, (long long)p->layer, p->what, (long long)(w0 + k - 1), msg);
    }
    return 0;
}

/* A layer pass: every window of `in` (`rows` rows of D each) through fn into
 * `out` (stream.h), the layer's weights held (backend.h): during a pass
 * nothing sgemm reads as B changes (the layer's weights, the shortcuts fsd
 * and pm, the basis Qf; ws_plan's hold_bytes). Its spill time goes to the
 * profile. */
static int stream_layer(cstate *c, sp_spill *in, sp_spill *out, int64_t rows, int64_t group, sp_stream_group_fn fn,
                        void *ctx) {
    const job *j = c->j;
    int64_t io = 0;
    if (c->bk->hold) c->bk->hold(c->bk, 1);
    int rc = sp_stream_groups(in, j->shape.hidden, out, j->shape.hidden, j->shape.tokens / j->shape.seqlen, rows,
                              j->chunk_w, group, c->cin, c->cout, fn, ctx, &io);
    if (c->bk->hold) c->bk->hold(c->bk, 0);
    atomic_fetch_add(&c->st->prof_ns[SP_PROF_SPILL], io);
    return rc;
}

static int pass(cstate *c, sp_spill *in, sp_spill *out, window_fn f, int64_t layer, const char *what) {
    pass_ctx p = {c, f, layer, what};
    cov_reset(c);
    return stream_layer(c, in, out, c->j->shape.seqlen, c->j->group, pass_window, &p);
}

/* nwin windows as the layer reads them: rotated into its input basis (Qf),
 * or as they are in the survey's dense passes. */
static const float *layer_in(cstate *c, const float *x, int64_t nwin) {
    if (c->dense_pass) return x;
    apply_qf(c, x, nwin * c->j->shape.seqlen, c->lw.d_in, c->tmp);
    return c->tmp;
}

static void attn_window(cstate *c, int64_t nwin, const float *x, float *y) {
    sp_layer_attn_n(c->scr, &c->lw, layer_in(c, x, nwin), nwin, c->j->shape.seqlen, y);
}
static void mlp_window(cstate *c, int64_t nwin, const float *x, float *y) {
    sp_layer_mlp(c->scr, &c->lw, layer_in(c, x, nwin), nwin * c->j->shape.seqlen, y);
}
static void block_window(cstate *c, int64_t nwin, const float *x, float *y) { /* a parallel block */
    sp_layer_parallel_n(c->scr, &c->lw, layer_in(c, x, nwin), nwin, c->j->shape.seqlen, y);
}

/* Whether a layer's boundary (and the embedding's before it) is sent from
 * behind (sp_link_boundary): with the spills resident, where slice_layer
 * runs the layers, which settles a boundary before any basis changes. */
static int boundaries_behind(const job *j) { return j->spill_resident && !j->plan.prune_ffn && !j->plan.refit; }

/* Boundary `layer` (stage_link.h): the basis in host memory (Q, or after a
 * survey layer the running sum G) and the next input (spill A); `behind`:
 * sent from behind (sp_link_boundary). */
static int commit(cstate *c, int64_t layer, int survey, const char spill_hash[33], int behind) {
    const int64_t D = c->j->shape.hidden;
    const double *qh = survey ? c->G : sp_bk_fetch(c->bk, c->Qh, c->Q, D * D * 8);
    return sp_link_boundary(&c->io, layer, survey, qh, c->sa, spill_hash, behind);
}

/* The end of a layer that wrote its output to spill B: B becomes the next
 * layer's input A, and boundary l is committed with B's hash (from behind:
 * see slice_layer). */
static int next_layer(cstate *c, int64_t l, const char spill_hash[33], int behind) {
    sp_spill *s = c->sa;
    c->sa = c->sb;
    c->sb = s;
    return commit(c, l, 0, spill_hash, behind);
}

/* Each row of X (rows, n) minus its mean (LayerNorm families: an embedding
 * table's rows, docs/algorithm.md §4), in float64. */
static void centre_rows(float *X, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++) {
        float *x = X + r * n;
        double m = 0;
        for (int64_t i = 0; i < n; i++) m += x[i];
        m /= (double)n;
        for (int64_t i = 0; i < n; i++) x[i] = (float)((double)x[i] - m);
    }
}

/* b (rows) += W (rows, n) · β (n), in float64: a LayerNorm's β through a reader. */
static void fold_beta(const float *W, int64_t rows, int64_t n, const float *beta, float *b) {
    for (int64_t r = 0; r < rows; r++) {
        double acc = 0;
        for (int64_t i = 0; i < n; i++) acc += (double)W[r * n + i] * (double)beta[i];
        b[r] = (float)((double)b[r] + acc);
    }
}

/* LayerNorm folded into the weights (docs/algorithm.md §4): every run of a
 * LayerNorm family but a stock one without a basis (plan.identity), whose
 * layers run with their own LayerNorm and go out as read (§12). */
static int ln_fused(const job *j) { return j->m.arch->norm == SP_BK_NORM_LAYER && !j->plan.identity; }

/* The fusion that precedes the rotations of a layer (docs/algorithm.md §4),
 * in place on its tensors as read: (1 + w) norms become γ; where LayerNorm is
 * fused (ln_fused) each reader's bias takes W·β of its norm, and each writer's
 * output is centred (its columns' means over the output rows subtracted, and
 * mean(b) from b), so that LayerNorm becomes RMSN over D. */
static void prepare_layer(cstate *c) {
    const job *j = c->j;
    const sp_arch *a = j->m.arch;
    const sp_config *cfg = &j->m.cfg;
    float *const *t = c->lb.t;
    for (int i = 0; i < a->n_layer; i++) {
        int64_t shape[2];
        int nd;
        sp_arch_in_shape(a, cfg, i, shape, &nd);
        const int64_t rows = shape[0], cols = nd == 1 ? 1 : shape[1];
        const sp_arch_tensor *x = &a->layer[i];
        if (x->role == SP_ROLE_NORM) sp_model_norm_weight(&j->m, t[i], rows);
        if (!ln_fused(j)) continue;
        int b = sp_arch_bias_of(a, i);
        if (x->role == SP_ROLE_READER) {
            int beta = sp_arch_norm_bias_of(a, x->pos);
            SP_ASSERT(b >= 0 || beta < 0); /* the tables give every LayerNorm reader a bias */
            if (beta >= 0) fold_beta(t[i], rows, cols, t[beta], t[b]);
        } else if (x->role == SP_ROLE_WRITER) {
            for (int64_t col = 0; col < cols; col++) {
                double m = 0;
                for (int64_t r = 0; r < rows; r++) m += t[i][r * cols + col];
                m /= (double)rows;
                for (int64_t r = 0; r < rows; r++) t[i][r * cols + col] = (float)((double)t[i][r * cols + col] - m);
            }
            if (b >= 0) centre_rows(t[b], 1, rows);
        }
    }
}

/* An embedding table's rows as the residual stream receives them: × Gemma's
 * sqrt(D), centred where LayerNorm is fused (ln_fused). */
static void embed_rows(cstate *c, float *X, int64_t rows) {
    const job *j = c->j;
    const float s = sp_model_embed_scale(&j->m);
    if (s != 1.0f)
        for (int64_t i = 0; i < rows * j->shape.hidden; i++) X[i] *= s;
    if (ln_fused(j)) centre_rows(X, rows, j->shape.hidden);
}

/* A stock norm's weight at width d for the global basis
 * (docs/algorithm.md §10):
 * x/sqrt(|x|²/D + eps) = sqrt(D/d) · x/sqrt(|x|²/d + eps·D/d), so the weight
 * is sqrt(D/d) (stored as sqrt(D/d) − 1 where the family reads 1 + w). */
static int emit_norm(cstate *c, int64_t d) {
    double g = sqrt((double)c->j->shape.hidden / (double)d) - (c->j->m.arch->norm_plus_one ? 1.0 : 0.0);
    for (int64_t i = 0; i < d; i++) c->fs[i] = (float)g;
    return sp_link_emit_all(&c->io, c->fs, d);
}

/* The layer's bases and widths by residual position: IN is Q (d_in), MID
 * Qm (d_mid), OUT Qn (d_out). */
typedef struct layer_ctx {
    double *basis[SP_POS_COUNT];
    int64_t width[SP_POS_COUNT];
    double *scratch; /* (D, D) float64 backend memory for a shortcut's product; NULL: the third position's basis,
                      * free when each phase is emitted right after its PCA */
} layer_ctx;

/* A layer's outputs of phase `ph` (arch.h: 0 once the input basis is known,
 * 1 + k after the layer's PCA k; -1: every phase) from host memory, in the
 * declared order, at the layer's kept MLP width: as read (identity), or as
 * rotate_phase left them; shortcuts computed from the layer's bases; norms
 * as read (identity), or the stock weight at their width. */
static int emit_kept(cstate *c, const layer_ctx *x, int64_t l, int ph) {
    job *j = c->j;
    const sp_arch *a = j->m.arch;
    sp_config cfg = j->m.cfg;
    cfg.intermediate_size = j->plan.ffn[l];
    int64_t w[SP_POS_COUNT], shape[2];
    char nm[256];
    int nd;
    sp_plan_layer_widths(j, l, w);
    for (int k = 0; k < j->n_outs; k++) {
        const sp_arch_out *o = &j->outs[k];
        if (ph >= 0 && o->phase != ph) continue;
        if (o->kind == SP_OUT_SHORTCUT) {
            /* scratch: the basis of the third position, free at this point */
            enum sp_arch_pos third = SP_POS_IN + SP_POS_MID + SP_POS_OUT - o->from - o->pos;
            shortcut(c, x->basis[o->from], x->width[o->from], x->basis[o->pos], x->width[o->pos],
                     x->scratch ? x->scratch : x->basis[third]);
            SP_TRY(sp_link_emit_all(&c->io, c->fs, x->width[o->from] * x->width[o->pos]));
            continue;
        }
        if (o->kind == SP_OUT_NORM && !j->plan.identity) {
            SP_ASSERT(a->layer[o->t].role == SP_ROLE_NORM); /* a β only goes out as read (LayerNorm: identity only) */
            SP_TRY(emit_norm(c, w[o->pos]));
            continue;
        }
        sp_arch_out_tensor(a, &cfg, o, l, w, nm, shape, &nd);
        const float *src = o->kind == SP_OUT_NORM ? c->raw + o->t * j->shape.hidden : c->lb.t[o->t];
        SP_TRY(sp_link_emit_all(&c->io, src, shape[0] * (nd == 1 ? 1 : shape[1])));
    }
    return 0;
}

/* Rotates phase `ph`'s readers and writers in place by the layer's one basis
 * (backend memory, then host), without emitting them; shapes from cfg (the
 * MLP's width before or after its cut). */
static void rotate_phase(cstate *c, const layer_ctx *x, int ph, const sp_config *cfg) {
    job *j = c->j;
    const sp_arch *a = j->m.arch;
    for (int k = 0; k < j->n_outs; k++) {
        const sp_arch_out *o = &j->outs[k];
        const int reader = o->kind == SP_OUT_READER, writer = o->kind == SP_OUT_WRITER || o->kind == SP_OUT_BIAS_ROT;
        if (o->phase != ph || !(reader || writer)) continue; /* copies and norms are not rotated; a shortcut has no tensor */
        int64_t shape[2];
        int nd;
        sp_arch_in_shape(a, cfg, o->t, shape, &nd);
        const int64_t rows = shape[0], cols = nd == 1 ? 1 : shape[1], kp = x->width[o->pos];
        float *W = c->lb.t[o->t], *Wd = c->wd[o->t];
        if (reader) {
            int norm = sp_arch_norm_of(a, o->pos);
            rot_rows(c, Wd, rows, norm >= 0 ? c->wd[norm] : NULL, x->basis[o->pos], kp);
            sp_bk_get(c->bk, W, Wd, rows * kp * 4);
        } else {
            rot_cols(c, x->basis[o->pos], kp, Wd, cols);
            sp_bk_get(c->bk, W, Wd, kp * cols * 4);
        }
    }
}

/* Emits the outputs of phase `ph`, each rotated in place by its basis. */
static int emit_phase(cstate *c, const layer_ctx *x, int64_t l, int ph) {
    rotate_phase(c, x, ph, &c->j->m.cfg);
    return emit_kept(c, x, l, ph);
}

/* Pulls a layer's tensors (from plan index read0 on), fuses them
 * (prepare_layer) and puts them in backend memory. */
static int load_layer(cstate *c, int64_t l, int read0, enum sp_phase ph) {
    job *j = c->j;
    const sp_arch *a = j->m.arch;
    sp_layer_buf *b = &c->lb;
    phase(c, l, ph);
    for (int t = 0; t < a->n_layer; t++) SP_TRY(sp_link_pull_whole(&c->io, read0 + t, b->t[t]));
    for (int t = 0; t < a->n_layer && j->plan.identity; t++) /* written out as read (γ, and LayerNorm's β) */
        if (a->layer[t].role == SP_ROLE_NORM || a->layer[t].role == SP_ROLE_NORM_BIAS)
            memcpy(c->raw + t * j->shape.hidden, b->t[t], (size_t)j->shape.hidden * 4);
    prepare_layer(c);
    for (int t = 0; t < a->n_layer; t++) { /* the layer's tensors into backend memory */
        int64_t shape[2];
        int nd;
        sp_arch_in_shape(a, &j->m.cfg, t, shape, &nd);
        sp_bk_put(c->bk, c->wd[t], b->t[t], shape[0] * (nd == 1 ? 1 : shape[1]) * 4);
    }
    return 0;
}

/* ---- prune_ffn: MLP neurons and the ridge refit (docs/algorithm.md §12) ---- */

/* The down projection has a bias: it goes into the refit as a constant
 * column (docs/algorithm.md §12). */
static int down_bias(const job *j) { return j->plan.prune_ffn && sp_arch_slot_index(j->m.arch, SP_SLOT_DOWN_B) >= 0; }

/* One window of the MLP's input (a parallel block's: the layer's input): its
 * intermediate Z into C, and with a down bias its column sums into zsum
 * (float64, row by row in order: the bits do not depend on the chunking). */
static int inner_window(void *ctx, int64_t w, int64_t nwin, const float *in, float *out) { /* one window: group 1 */
    SP_ASSERT(nwin == 1);
    pass_ctx *p = ctx;
    cstate *c = p->c;
    const job *j = c->j;
    const int64_t T = j->shape.seqlen, F = j->shape.ffn;
    (void)out;
    int64_t t0 = sp_now_ns();
    const float *x = layer_in(c, sp_bk_put(c->bk, c->xw, in, T * j->shape.hidden * 4), 1);
    const int64_t width = j->m.arch->parallel ? c->lw.d_in : c->lw.d_mid;
    const int sums = down_bias(j);
    int rc = 0;
    for (int64_t r0 = 0; r0 < T && !rc; r0 += COV_ROWS) { /* the MLP is per token: Z a block of rows at a time */
        const int64_t nr = T - r0 < COV_ROWS ? T - r0 : COV_ROWS;
        sp_layer_mlp_inner(c->scr, &c->lw, x + r0 * width, nr, c->Z);
        prof(c, SP_PROF_FORWARD, &t0);
        rc = c->bk->cov_add(c->bk, c->wsf, c->C, F, c->Z, nr, F, c->c_rows + r0);
        if (!rc && sums) { /* finite: cov_add checked every value */
            const float *z = sp_bk_fetch(c->bk, c->Zh, c->Z, nr * F * 4);
            for (int64_t r = 0; r < nr; r++)
                for (int64_t i = 0; i < F; i++) c->zsum[i] += (double)z[r * F + i];
        }
        prof(c, SP_PROF_COV, &t0);
    }
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        return sp_fail(rc, "%s: layer %lld, MLP intermediate, calibration window %lld: %s; the layer was not committed",
                       j->mf->model_path, (long long)p->layer, (long long)w, msg);
    }
    c->c_rows += T;
    return 0;
}

/* Rows S (ascending) of a (n, cols) block packed to its first k rows, in place. */
static void keep_rows(float *W, int64_t cols, const int64_t *S, int64_t k) {
    for (int64_t r = 0; r < k; r++)
        if (S[r] != r) memmove(W + r * cols, W + S[r] * cols, (size_t)cols * 4);
}

/* C (and with a down bias zsum) from the MLP inputs in spill `in` (the
 * layer's current view, c->lw), the kept neurons S, the down projection (and
 * its bias) refit; the layer's readers of the MLP (rows of `width` columns,
 * their biases) and the down projection (columns, not yet rotated) cut to k
 * in host and backend memory. */
static int prune_mlp(cstate *c, sp_spill *in, int64_t l, int64_t k, int64_t width) {
    job *j = c->j;
    const sp_arch *a = j->m.arch;
    const sp_config *cfg = &j->m.cfg;
    const int64_t D = j->shape.hidden, F = j->shape.ffn;
    if (k == F) return 0; /* nothing to cut: the MLP stays as it is */
    phase(c, l, SP_PHASE_MLP);
    pass_ctx p = {c, NULL, l, "MLP intermediate"};
    c->bk->zero(c->bk, c->C, F * F * 8);
    c->c_rows = 0;
    const int bias = sp_arch_slot_index(a, SP_SLOT_DOWN_B);
    if (bias >= 0) memset(c->zsum, 0, (size_t)F * 8);
    SP_TRY(stream_layer(c, in, NULL, j->shape.seqlen, 1, inner_window, &p));
    phase(c, l, SP_PHASE_PCA);
    int64_t t0 = sp_now_ns();
    double *Ch = (double *)sp_bk_fetch(c->bk, c->Ch, c->C, F * F * 8); /* ours: select mirrors its triangle */
    const int down = sp_arch_slot_index(a, SP_SLOT_DOWN);
    SP_ASSERT(down >= 0);
    float *Wd = c->lb.t[down];
    const double lam = sp_ridge_lambda(Ch, F, j->mf->ffn_ridge); /* of ZᵀZ, bias column or not */
    int rc = sp_ridge_select(Ch, F, Wd, D, j->mf->ffn_score == SP_SCORE_LEVERAGE, lam, k, c->S); /* scores on ZᵀZ */
    if (!rc && bias >= 0) { /* the constant column: the refit on the scatter about the mean */
        sp_ridge_center(Ch, F, c->zsum, c->c_rows);
        for (int64_t i = 0; i < F; i++) c->zsum[i] /= (double)c->c_rows;
    }
    if (!rc) /* Wd becomes (D, k) */
        rc = sp_ridge_refit(Ch, F, c->S, k, lam, Wd, D, bias >= 0 ? c->zsum : NULL, bias >= 0 ? c->lb.t[bias] : NULL);
    prof(c, SP_PROF_EIGH, &t0);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        return sp_fail(rc, "%s: layer %lld: %s", j->mf->model_path, (long long)l, msg);
    }
    for (int t = 0; t < a->n_layer; t++) {
        const enum sp_arch_slot sl = a->layer[t].slot;
        int64_t shape[2];
        int nd;
        sp_arch_in_shape(a, cfg, t, shape, &nd);
        const int64_t cols = nd == 1 ? 1 : width; /* the readers' columns: rotated to the kept width */
        if (sl == SP_SLOT_GATE || sl == SP_SLOT_UP || sl == SP_SLOT_GATE_B || sl == SP_SLOT_UP_B) {
            keep_rows(c->lb.t[t], cols, c->S, k);
        } else if (sl == SP_SLOT_GATE_UP) { /* gate rows S, then up rows F + S */
            keep_rows(c->lb.t[t], cols, c->S, k);
            for (int64_t r = 0; r < k; r++) memmove(c->lb.t[t] + (k + r) * cols, c->lb.t[t] + (F + c->S[r]) * cols, (size_t)cols * 4);
        } else if (sl != SP_SLOT_DOWN && sl != SP_SLOT_DOWN_B) {
            continue;
        }
        sp_bk_put(c->bk, c->wd[t], c->lb.t[t], (sl == SP_SLOT_DOWN ? D * k : shape[0] * cols) * 4);
    }
    c->lw.ffn = k;
    return 0;
}

/* policy stock: the layer's MLP cut to k neurons, W_down refit, on the
 * compressed model's signals (docs/algorithm.md §12). Without a basis
 * (plan.identity) the layer runs as read (its norms with γ, and β for
 * LayerNorm) and goes out as read; a parallel block (Phi-2, identity only)
 * takes C over its input A, then runs A → B whole with the cut MLP. With the
 * global basis its passes run as SliceGPT's do, in the one basis Q at width d
 * without a PCA: readers of the input rotated and written, attention A → B
 * (W_o whole, shortcut Q[:, :d]ᵀ), W_o and the MLP's readers rotated, then C
 * over B and the cut, the cut MLP B → B (W_down refit before its rotation),
 * W_down rotated and written. */
static int stock_layer(cstate *c, int64_t l) {
    job *j = c->j;
    const int64_t D = j->shape.hidden;
    const int id = j->plan.identity;
    char spill_hash[33];
    if (j->m.arch->parallel) {
        SP_ASSERT(id); /* the policy refuses split > 0 on a parallel block */
        layer_ctx x = {.basis = {c->Q, c->Q, c->Q}};
        sp_plan_layer_widths(j, l, x.width);
        SP_TRY(load_layer(c, l, j->layer_read0[l], SP_PHASE_READ));
        c->dense_pass = 1;
        c->lw = sp_layer_view(&j->m, c->wd, NULL, D, D, D, 1); /* as read: its LayerNorm with γ and β */
        SP_TRY(prune_mlp(c, c->sa, l, j->plan.ffn[l], D)); /* reads A only */
        SP_TRY(sp_link_wait_journaled(&c->io, l - 1, 0)); /* B is the file boundary l - 2 named */
        phase(c, l, SP_PHASE_ATTN);
        sp_spill_hash_begin(c->sb);
        SP_TRY(pass(c, c->sa, c->sb, block_window, l, "block"));
        sp_spill_hash_end(c->sb, spill_hash);
        phase(c, l, SP_PHASE_WRITE);
        SP_TRY(emit_kept(c, &x, l, -1));
        return next_layer(c, l, spill_hash, 0);
    }
    layer_ctx x = {.basis = {c->Q, c->Q, c->Q}};
    sp_plan_layer_widths(j, l, x.width);
    const int64_t d = x.width[SP_POS_IN];
    sp_config cut = j->m.cfg;
    cut.intermediate_size = j->plan.ffn[l];
    SP_TRY(load_layer(c, l, j->layer_read0[l], SP_PHASE_READ));
    if (!id) {
        phase(c, l, SP_PHASE_WRITE);
        SP_TRY(emit_phase(c, &x, l, 0));
    }
    SP_TRY(sp_link_wait_journaled(&c->io, l - 1, 0)); /* B is the file boundary l - 2 named */
    phase(c, l, SP_PHASE_ATTN);
    c->dense_pass = id;
    if (id) {
        c->lw = sp_layer_view(&j->m, c->wd, NULL, D, D, D, 1); /* as read: norms with γ */
    } else {
        basis_f32(c, c->Q, d); /* Qf = Q[:, :d], fs = its transpose */
        c->lw = sp_layer_view(&j->m, c->wd, NULL, d, D, D, 0);
        c->lw.shortcut[SP_POS_MID] = c->fsd;
    }
    SP_TRY(pass(c, c->sa, c->sb, attn_window, l, "attention-block"));
    if (!id) {
        rotate_phase(c, &x, 1, &j->m.cfg);
        c->lw = sp_layer_view(&j->m, c->wd, NULL, d, d, D, 0);
        c->lw.shortcut[SP_POS_OUT] = c->fsd;
    }
    SP_TRY(prune_mlp(c, c->sb, l, j->plan.ffn[l], d));
    phase(c, l, SP_PHASE_MLP);
    sp_spill_hash_begin(c->sb);
    SP_TRY(pass(c, c->sb, c->sb, mlp_window, l, "MLP-block"));
    sp_spill_hash_end(c->sb, spill_hash);
    phase(c, l, SP_PHASE_WRITE);
    if (id) {
        SP_TRY(emit_kept(c, &x, l, -1));
    } else {
        SP_TRY(emit_kept(c, &x, l, 1));
        rotate_phase(c, &x, 2, &cut);
        SP_TRY(emit_kept(c, &x, l, 2));
    }
    return next_layer(c, l, spill_hash, 0);
}

static int slice_layer(cstate *c, int64_t l) {
    job *j = c->j;
    const sp_arch *a = j->m.arch;
    const int64_t D = j->shape.hidden;
    const int one = !j->plan.shortcuts; /* one basis for every position */
    layer_ctx x = {.basis = {c->Q, one ? c->Q : c->Qm, one ? c->Q : c->Qn}};
    sp_plan_layer_widths(j, l, x.width);
    SP_TRY(load_layer(c, l, j->layer_read0[l], SP_PHASE_READ));

    /* 2.1 readers of the layer input: fuse γ, rotate by Q[:, :d_in]. With
     * the spills resident, boundary l − 1 may still be in flight
     * (sp_link_boundary's behind): these go out after the first pass, whose
     * writes to B stay in memory, so that its files are written meanwhile. */
    phase(c, l, SP_PHASE_WRITE);
    rotate_phase(c, &x, 0, &j->m.cfg);
    enum sp_arch_pos pcas[2];
    const int np = sp_arch_pca_positions(a, pcas);
    if (!j->plan.layer_pcas) { /* one basis (the survey's): nothing to measure, every position is Q */
        SP_TRY(emit_kept(c, &x, l, 0));
        for (int k = 0; k < np; k++) SP_TRY(emit_phase(c, &x, l, 1 + k));
        SP_TRY(sp_link_wait_journaled(&c->io, l - 1, 0)); /* the basis file boundary l - 2 named */
        return commit(c, l, 0, c->survey_hash, 0);
    }

    /* B is the file boundary l - 2 named: boundary l - 1 must be journaled
     * before B's file is written. On disk that is the first pass; resident,
     * B's sync at boundary l, whose thread waits for it. */
    const int behind = boundaries_behind(j);
    if (!behind) SP_TRY(sp_link_wait_journaled(&c->io, l - 1, 0));
    enum sp_arch_pos from = SP_POS_IN;
    char spill_hash[33];
    for (int k = 0; k < np; k++) {
        const enum sp_arch_pos to = pcas[k];
        const int last = k == np - 1, attn = to == SP_POS_MID, par = a->parallel;
        /* 2.2 M = Xr·S_attn⁰ + Attn(RMSN(Xr))·W_oᵀ: A → B, W_o unsliced; or
         * 2.4 Y = Mr·S_mlp⁰ + MLP(RMSN(Mr)), Mr = M·Qm[:, :d_mid]: B → B in place. */
        phase(c, l, attn || par ? SP_PHASE_ATTN : SP_PHASE_MLP);
        basis_f32(c, x.basis[from], x.width[from]); /* Qf = Q_from[:, :d_from], fs = S⁰ = its transpose */
        c->lw = sp_layer_view(&j->m, c->wd, NULL, x.width[from], attn ? D : x.width[from], D, 0); /* backend memory */
        c->lw.shortcut[to] = c->fsd;
        if (last) sp_spill_hash_begin(c->sb); /* the last pass writes all of B, in order */
        SP_TRY(pass(c, k == 0 ? c->sa : c->sb, c->sb, par ? block_window : attn ? attn_window : mlp_window, l,
                    par ? "block" : attn ? "attention-block" : "MLP-block"));
        if (last) sp_spill_hash_end(c->sb, spill_hash);
        if (k == 0) { /* 2.1's tensors; boundary l − 1 settles first, before any basis changes */
            phase(c, l, SP_PHASE_WRITE);
            SP_TRY(emit_kept(c, &x, l, 0));
        }
        phase(c, l, SP_PHASE_PCA);
        SP_TRY(pca(c, x.basis[to], 1 + np * (int)l + k, par ? "block-output" : attn ? "attention-output" : "MLP-output", l));
        /* 2.3 / 2.5 the writers into `to`, the shortcut into it, its readers. */
        phase(c, l, SP_PHASE_WRITE);
        SP_TRY(emit_phase(c, &x, l, 1 + k));
        from = to;
    }
    /* The next layer's basis is Qn, its input B. */
    double *t = c->Q;
    c->Q = c->Qn;
    c->Qn = t;
    return next_layer(c, l, spill_hash, behind);
}

/* ---- refit = true (docs/algorithm.md §14) ----
 * SliceGPT's per-layer bases and widths, with o_proj and down_proj refit by
 * ridge least squares to the dense model's signals. Every window of the
 * spills holds 2T rows: the sliced stream (unrotated, D wide, as §5 stores
 * it) then the dense model's stream. The passes run the layer's weights as
 * read (norms with γ) on the sliced rows mapped back to D, x·Q[:, :d]·Q[:, :d]ᵀ,
 * which computes what the sliced layer computes; nothing is rotated before
 * the layer's four passes are done:
 *   1. A → B: M = x̂ + Attn(x̂) (W_o as read) into the PCA; the attention
 *      context C and the target Md − x̂ into G2; the dense M into B beside
 *      the sliced input, kept for pass 2.
 *   2. Qm = PCA(M); W_o ← Qm_d·Qm_dᵀ·(the refit); B → B: the sliced M'
 *      with the refit W_o and the shortcut Qm_d·Qm_dᵀ, the dense Y.
 *   3. B → nothing: the MLP's intermediate Z of M' and the target Yd − M'
 *      into G2, Y = M' + Z·W_downᵀ (as read) into the PCA.
 *   4. Qn = PCA(Y); W_down ← Qn_d·Qn_dᵀ·(the refit); B → B: Y' = M' +
 *      MLP(M') with it, the dense Y kept; then every phase is rotated and
 *      emitted as slice_layer does, the writers by their bases giving the
 *      refit writers exactly. */

static int refit_fail(cstate *c, const pass_ctx *p, int64_t w, int rc) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", sp_errmsg());
    return sp_fail(rc, "%s: layer %lld, %s, calibration window %lld: %s; the layer was not committed", c->j->mf->model_path,
                   (long long)p->layer, p->what, (long long)w, msg);
}

static void refit_reset(cstate *c, int64_t g) {
    c->bk->zero(c->bk, c->G2, g * g * 8);
    c->g_rows = 0;
}

/* xh (T, D) = x·Q[:, :d]·Q[:, :d]ᵀ through tmp (T, d), Qf and fs as basis_f32(Q, d) left them. */
static void refit_in(cstate *c, const float *x) {
    const int64_t T = c->j->shape.seqlen, D = c->j->shape.hidden, d = c->rf_din;
    apply_qf(c, x, T, d, c->tmp);
    c->bk->sgemm(c->bk, 0, 0, T, D, d, 1.0f, c->tmp, d, c->fsd, D, 0.0f, c->xh, D);
}

/* K[:, n:] = a − b for rows (rows, D), then G2 += Kᵀ·K over K (rows, n + D), K[:, :n] already in place. */
static int refit_join(cstate *c, int64_t n, const float *a, const float *b, int64_t rows, int64_t row0) {
    const int64_t D = c->j->shape.hidden, g = n + D;
    c->bk->geadd(c->bk, rows, D, 1.0f, a, D, 0.0f, c->K + n, g);
    c->bk->geadd(c->bk, rows, D, -1.0f, b, D, 1.0f, c->K + n, g);
    return c->bk->cov_add(c->bk, c->wsf, c->G2, g, c->K, rows, g, row0);
}

/* Pass 1: [x | xd] → [x | Md]. */
static int refit_attn_window(void *ctx, int64_t w, int64_t nwin, const float *in, float *out) { /* one window: group 1 */
    SP_ASSERT(nwin == 1);
    pass_ctx *p = ctx;
    cstate *c = p->c;
    const int64_t T = c->j->shape.seqlen, D = c->j->shape.hidden, n = T * D, Dh = c->j->shape.q_width;
    int64_t t0 = sp_now_ns();
    const float *x = sp_bk_put(c->bk, c->xw, in, 2 * n * 4);
    float *y = sp_bk_out(c->bk, c->yw, out);
    refit_in(c, x);
    sp_layer_attn(c->scr, &c->lw, c->xh, T, y); /* M, W_o as read */
    c->bk->geadd(c->bk, T, Dh, 1.0f, sp_layer_scratch_ctx(c->scr), Dh, 0.0f, c->K, Dh + D);
    sp_layer_attn(c->scr, &c->lw, x + n, T, y + n); /* the dense model's M */
    prof(c, SP_PROF_FORWARD, &t0);
    int rc = refit_join(c, Dh, y + n, c->xh, T, c->g_rows);
    if (!rc) rc = cov_add(c, y);
    prof(c, SP_PROF_COV, &t0);
    if (rc) return refit_fail(c, p, w, rc);
    c->g_rows += T;
    c->bk->copy(c->bk, y, x, n * 4); /* pass 2 runs the attention again on the sliced input */
    sp_bk_get(c->bk, out, y, 2 * n * 4);
    return 0;
}

/* Pass 2: [x | Md] → [M' | Yd]. */
static void refit_mid(cstate *c, int64_t nwin, const float *x, float *y) {
    SP_ASSERT(nwin == 1);
    const int64_t T = c->j->shape.seqlen, n = T * c->j->shape.hidden;
    refit_in(c, x);
    sp_layer_attn(c->scr, &c->rw, c->xh, T, y);
    sp_layer_mlp(c->scr, &c->lw, x + n, T, y + n);
}

/* Pass 4: [M' | Yd] → [Y' | Yd]. */
static void refit_out(cstate *c, int64_t nwin, const float *x, float *y) {
    SP_ASSERT(nwin == 1);
    const int64_t T = c->j->shape.seqlen, n = T * c->j->shape.hidden;
    sp_layer_mlp(c->scr, &c->lw, x, T, y);
    c->bk->copy(c->bk, y + n, x + n, n * 4);
}

/* Passes 2 and 4: a window of 2T rows through p->f (refit_mid, refit_out). */
static int refit_fwd_window(void *ctx, int64_t w, int64_t nwin, const float *in, float *out) { /* one window: group 1 */
    SP_ASSERT(nwin == 1);
    pass_ctx *p = ctx;
    cstate *c = p->c;
    const int64_t n = c->j->shape.seqlen * c->j->shape.hidden;
    (void)w;
    int64_t t0 = sp_now_ns();
    const float *x = sp_bk_put(c->bk, c->xw, in, 2 * n * 4);
    float *y = sp_bk_out(c->bk, c->yw, out);
    p->f(c, 1, x, y);
    prof(c, SP_PROF_FORWARD, &t0);
    sp_bk_get(c->bk, out, y, 2 * n * 4);
    return 0;
}

/* Pass 3: [M' | Yd] read; Z and Yd − M' into G2, Y = M' + Z·W_downᵀ into H. */
static int refit_mlp_window(void *ctx, int64_t w, int64_t nwin, const float *in, float *out) { /* one window: group 1 */
    SP_ASSERT(nwin == 1);
    pass_ctx *p = ctx;
    cstate *c = p->c;
    const job *j = c->j;
    const int64_t T = j->shape.seqlen, D = j->shape.hidden, n = T * D, F = j->shape.ffn;
    const float *Wd = c->wd[sp_arch_slot_index(j->m.arch, SP_SLOT_DOWN)];
    (void)out;
    int64_t t0 = sp_now_ns();
    const float *x = sp_bk_put(c->bk, c->xw, in, 2 * n * 4);
    int rc = 0;
    for (int64_t r0 = 0; r0 < T && !rc; r0 += COV_ROWS) {
        const int64_t nr = T - r0 < COV_ROWS ? T - r0 : COV_ROWS;
        sp_layer_mlp_inner(c->scr, &c->lw, x + r0 * D, nr, c->Z);
        c->bk->geadd(c->bk, nr, D, 1.0f, x + r0 * D, D, 0.0f, c->xh + r0 * D, D);
        c->bk->sgemm(c->bk, 0, 1, nr, D, F, 1.0f, c->Z, F, Wd, F, 1.0f, c->xh + r0 * D, D);
        prof(c, SP_PROF_FORWARD, &t0);
        c->bk->geadd(c->bk, nr, F, 1.0f, c->Z, F, 0.0f, c->K, F + D);
        rc = refit_join(c, F, x + n + r0 * D, x + r0 * D, nr, c->g_rows + r0);
        prof(c, SP_PROF_COV, &t0);
    }
    if (!rc) rc = cov_add(c, c->xh);
    prof(c, SP_PROF_COV, &t0);
    if (rc) return refit_fail(c, p, w, rc);
    c->g_rows += T;
    return 0;
}


/* The writer in tensor slot `slot` (D, n) ← its refit from G2 in the basis Qb
 * (its first k columns), host and backend memory. */
static int refit_solve(cstate *c, int64_t l, int64_t n, const double *Qb, int64_t k, int slot, const char *what) {
    const job *j = c->j;
    const int64_t D = j->shape.hidden, g = n + D;
    int64_t t0 = sp_now_ns();
    double *G = (double *)sp_bk_fetch(c->bk, c->G2h, c->G2, g * g * 8); /* ours: the solve works in it */
    const double *P = sp_bk_fetch(c->bk, c->Qh, Qb, D * D * 8);
    int rc = sp_ridge_fit(G, n, D, j->mf->refit_ridge, P, k, c->lb.t[slot], c->rfw);
    prof(c, SP_PROF_EIGH, &t0);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        return sp_fail(rc, "%s: layer %lld, %s refit: %s", j->mf->model_path, (long long)l, what, msg);
    }
    sp_bk_put(c->bk, c->wd[slot], c->lb.t[slot], D * n * 4);
    return 0;
}

static int refit_layer(cstate *c, int64_t l) {
    job *j = c->j;
    const sp_arch *a = j->m.arch;
    const int64_t D = j->shape.hidden, F = j->shape.ffn, Dh = j->shape.q_width, wr = sp_job_window_rows(j);
    const int o = sp_arch_slot_index(a, SP_SLOT_O), down = sp_arch_slot_index(a, SP_SLOT_DOWN);
    SP_ASSERT(o >= 0 && down >= 0 && !a->parallel);
    layer_ctx x = {.basis = {c->Q, c->Qm, c->Qn}, .scratch = c->G2}; /* every basis is taken when the phases go out */
    sp_plan_layer_widths(j, l, x.width);
    SP_TRY(load_layer(c, l, j->layer_read0[l], SP_PHASE_READ));
    SP_TRY(sp_link_wait_journaled(&c->io, l - 1, 0)); /* B is the file boundary l - 2 named */
    c->lw = sp_layer_view(&j->m, c->wd, NULL, D, D, D, 1); /* as read: norms with γ */
    c->rf_din = x.width[SP_POS_IN];
    char spill_hash[33];
    pass_ctx p = {c, NULL, l, "attention-block"};

    phase(c, l, SP_PHASE_ATTN); /* 1 */
    basis_f32(c, c->Q, c->rf_din);
    cov_reset(c);
    refit_reset(c, Dh + D);
    SP_TRY(stream_layer(c, c->sa, c->sb, wr, 1, refit_attn_window, &p));
    phase(c, l, SP_PHASE_PCA);
    SP_TRY(pca(c, c->Qm, 1 + 2 * (int)l, "attention-output", l));
    SP_TRY(refit_solve(c, l, Dh, c->Qm, x.width[SP_POS_MID], o, "o_proj"));

    phase(c, l, SP_PHASE_ATTN); /* 2 */
    basis_f32(c, c->Qm, x.width[SP_POS_MID]); /* pm = Qm_d·Qm_dᵀ, then Qf and fs back to Q */
    c->bk->sgemm(c->bk, 0, 0, D, D, x.width[SP_POS_MID], 1.0f, c->Qf, x.width[SP_POS_MID], c->fsd, D, 0.0f, c->pm, D);
    basis_f32(c, c->Q, c->rf_din);
    c->rw = c->lw;
    c->rw.shortcut[SP_POS_MID] = c->pm;
    p.f = refit_mid;
    SP_TRY(stream_layer(c, c->sb, c->sb, wr, 1, refit_fwd_window, &p));

    phase(c, l, SP_PHASE_MLP); /* 3 */
    p.what = "MLP-block";
    cov_reset(c);
    refit_reset(c, F + D);
    SP_TRY(stream_layer(c, c->sb, NULL, wr, 1, refit_mlp_window, &p));
    phase(c, l, SP_PHASE_PCA);
    SP_TRY(pca(c, c->Qn, 2 + 2 * (int)l, "MLP-output", l));
    SP_TRY(refit_solve(c, l, F, c->Qn, x.width[SP_POS_OUT], down, "down_proj"));

    phase(c, l, SP_PHASE_MLP); /* 4 */
    sp_spill_hash_begin(c->sb);
    p.f = refit_out;
    SP_TRY(stream_layer(c, c->sb, c->sb, wr, 1, refit_fwd_window, &p));
    sp_spill_hash_end(c->sb, spill_hash);

    phase(c, l, SP_PHASE_WRITE);
    for (int ph = 0; ph < 1 + j->n_pca; ph++) SP_TRY(emit_phase(c, &x, l, ph));
    double *t = c->Q;
    c->Q = c->Qn;
    c->Qn = t;
    return next_layer(c, l, spill_hash, 0);
}

/* basis = "global" (docs/algorithm.md §10), between the gather of X₀ (spill
 * A, its second moment already in G) and the rotation of the embedding: the
 * dense model's forward pass over the calibration windows, layer by layer
 * through the spills as slice_layer runs them, each residual position's
 * second moment folded into G (global_fold); then Q = PCA(G). Nothing is
 * emitted; each layer ends at a survey boundary (the spill and G durable), so
 * a resume goes on at layer `from`. */
static int survey(cstate *c, int64_t from) {
    job *j = c->j;
    const sp_arch *a = j->m.arch;
    const int64_t D = j->shape.hidden;
    enum sp_arch_pos pcas[2];
    const int np = sp_arch_pca_positions(a, pcas);
    c->dense_pass = 1;
    for (int64_t l = from; l < j->shape.layers; l++) {
        SP_TRY(load_layer(c, l, j->survey_read0[l], SP_PHASE_SURVEY));
        c->lw = sp_layer_view(&j->m, c->wd, NULL, D, D, D, 1); /* dense: identity shortcuts, norms with γ */
        /* B and the basis file are the ones survey boundary l - 2 named. */
        SP_TRY(sp_link_wait_journaled(&c->io, l - 1, 1));
        for (int k = 0; k < np; k++) {
            const int attn = pcas[k] == SP_POS_MID, par = a->parallel, last = k == np - 1;
            if (last) sp_spill_hash_begin(c->sb); /* the last pass writes all of B, in order */
            SP_TRY(pass(c, k == 0 ? c->sa : c->sb, c->sb, par ? block_window : attn ? attn_window : mlp_window, l,
                        par ? "survey block" : attn ? "survey attention-block" : "survey MLP-block"));
            if (last) sp_spill_hash_end(c->sb, c->survey_hash); /* the last layer's: named by every boundary after */
            global_fold(c);
        }
        sp_spill *t = c->sa;
        c->sa = c->sb;
        c->sb = t;
        SP_TRY(commit(c, l, 1, c->survey_hash, 0));
    }
    c->dense_pass = 0;
    phase(c, j->shape.layers - 1, SP_PHASE_SURVEY);
    c->bk->to_dev(c->bk, c->H, c->G, D * D * 8); /* backend memory from host memory (a copy when shared) */
    c->h_rows = j->shape.tokens;
    SP_TRY(pca(c, c->Q, 0, "global", -1));
    /* The embedding boundary's basis file (0) is the one survey boundary
     * L - 2 named. */
    return sp_link_wait_journaled(&c->io, j->shape.layers - 1, 1);
}

/* One window of X₀ (T, D), in place: + the learned positions, then into H. */
static int embed_window(void *ctx, int64_t w, const float *in, float *x) {
    cstate *c = ctx;
    (void)w, (void)in;
    const int64_t n = c->j->shape.seqlen * c->j->shape.hidden, wn = sp_job_window_rows(c->j) * c->j->shape.hidden;
    if (c->j->m.n_pos)
        for (int64_t i = 0; i < wn; i++) x[i] += c->posb[i % n];
    return cov_add(c, sp_bk_put(c->bk, c->xw, x, n * 4)); /* the sliced stream's rows (refit: the dense ones follow) */
}

/* 1. X₀ = Emb[tokens] (+ Pos[p + offset]) into spill A, its second moment
 * in H (basis = "global": folded into G); the tables' rows as the residual
 * stream receives them (embed_rows: Gemma's scale, LayerNorm centring). */
static int gather_embed(cstate *c) {
    job *j = c->j;
    const int64_t D = j->shape.hidden, V = j->shape.vocab, T = j->shape.seqlen, W = j->shape.tokens / T, P = j->m.n_pos;
    const int64_t ebr = j->rot_block; /* embedding/head rows at a time */
    const int64_t wr = sp_job_window_rows(j); /* refit: each window's rows twice, the sliced and the dense stream */
    phase(c, 0, SP_PHASE_EMBED);
    /* Counting sort of calibration positions by token id. */
    memset(c->id_start, 0, (size_t)(V + 1) * sizeof(int64_t));
    for (int64_t i = 0; i < j->shape.tokens; i++) c->id_start[j->calib.ids[i] + 1]++;
    for (int64_t v = 0; v < V; v++) c->id_start[v + 1] += c->id_start[v];
    for (int64_t i = 0; i < j->shape.tokens; i++) c->pos[c->id_start[j->calib.ids[i]]++] = i;
    for (int64_t v = V; v > 0; v--) c->id_start[v] = c->id_start[v - 1];
    c->id_start[0] = 0;
    for (int64_t r0 = 0; r0 < V; r0 += ebr) {
        int64_t nr = V - r0 < ebr ? V - r0 : ebr;
        SP_TRY(sp_link_pull(&c->io, 0, c->eb, nr * D));
        embed_rows(c, c->eb, nr);
        int64_t t0 = sp_now_ns();
        for (int64_t v = r0; v < r0 + nr; v++)
            for (int64_t p = c->id_start[v]; p < c->id_start[v + 1]; p++)
                for (int64_t h = 0; h < wr; h += T) /* token i is row i % T of window i / T, in each stream */
                    SP_TRY(sp_spill_write(c->sa, c->pos[p] / T * wr + h + c->pos[p] % T, 1, D, c->eb + (v - r0) * D));
        prof(c, SP_PROF_SPILL, &t0);
    }
    if (P) { /* the rows of positions 0..T-1, then added to every window */
        const int64_t off = j->m.arch->pos_offset;
        for (int64_t r0 = 0; r0 < P; r0 += ebr) {
            int64_t nr = P - r0 < ebr ? P - r0 : ebr;
            SP_TRY(sp_link_pull(&c->io, 1, c->eb, nr * D));
            embed_rows(c, c->eb, nr);
            for (int64_t r = r0; r < r0 + nr; r++)
                if (r >= off && r < off + T) memcpy(c->posb + (r - off) * D, c->eb + (r - r0) * D, (size_t)D * 4);
        }
    }
    cov_reset(c);
    int64_t io = 0;
    SP_TRY(sp_stream_windows(c->sa, D, P ? c->sa : NULL, D, W, wr, j->chunk_w, c->cin, c->cin, embed_window, c, &io));
    atomic_fetch_add(&c->st->prof_ns[SP_PROF_SPILL], io);
    if (j->plan.survey) {
        memset(c->G, 0, (size_t)(D * D * 8)); /* the sum starts at X₀ */
        global_fold(c);
    }
    return 0;
}

/* Then Q = PCA(X₀) (basis = "global": the survey from layer `survey_from`
 * on, and PCA(G)), Emb ← Emb·Q[:, :d] (and Pos ← Pos·Q[:, :d]). */
static int slice_embed(cstate *c, int64_t survey_from) {
    job *j = c->j;
    const int64_t D = j->shape.hidden, V = j->shape.vocab, d0 = j->plan.width[SP_POS_IN][0], P = j->m.n_pos;
    const int64_t ebr = j->rot_block; /* embedding/head rows at a time */
    const int survey_basis = j->plan.survey;
    /* reads: embedding, [positions], [the survey's layers], embedding, [positions] (plan.c) */
    if (survey_from == 0) SP_TRY(gather_embed(c));
    if (survey_basis) {
        SP_TRY(survey(c, survey_from));
        phase(c, 0, SP_PHASE_EMBED);
    } else if (!j->plan.identity) {
        SP_TRY(pca(c, c->Q, 0, "embedding", -1));
    }
    /* A stock model at width d scales its embeddings by its own sqrt(d)
     * (Gemma): the table carries sqrt(D) / that. */
    const float unscale = j->plan.stock && j->m.arch->embed_scale_sqrt_d ? 1.0f / sp_embed_scale(d0, j->out_dtype) : 1.0f;
    for (int64_t r0 = 0; r0 < V; r0 += ebr) {
        int64_t nr = V - r0 < ebr ? V - r0 : ebr;
        SP_TRY(sp_link_pull(&c->io, j->embed_read2, c->eb, nr * D));
        if (j->plan.identity) { /* the table as read */
            SP_TRY(sp_link_emit(&c->io, c->eb, nr * D));
            continue;
        }
        embed_rows(c, c->eb, nr);
        if (unscale != 1.0f)
            for (int64_t i = 0; i < nr * D; i++) c->eb[i] = (float)((double)c->eb[i] * unscale);
        float *e = (float *)sp_bk_put(c->bk, c->ebd, c->eb, nr * D * 4);
        rot_rows(c, e, nr, NULL, c->Q, d0);
        sp_bk_get(c->bk, c->eb, e, nr * d0 * 4);
        SP_TRY(sp_link_emit(&c->io, c->eb, nr * d0));
    }
    sp_link_emit_end(&c->io);
    for (int64_t r0 = 0; r0 < P; r0 += ebr) {
        int64_t nr = P - r0 < ebr ? P - r0 : ebr;
        SP_TRY(sp_link_pull(&c->io, j->embed_read2 + 1, c->eb, nr * D));
        if (j->plan.identity) { /* the table as read */
            SP_TRY(sp_link_emit(&c->io, c->eb, nr * D));
            continue;
        }
        embed_rows(c, c->eb, nr);
        float *e = (float *)sp_bk_put(c->bk, c->ebd, c->eb, nr * D * 4);
        rot_rows(c, e, nr, NULL, c->Q, d0);
        sp_bk_get(c->bk, c->eb, e, nr * d0 * 4);
        SP_TRY(sp_link_emit(&c->io, c->eb, nr * d0));
    }
    if (P) sp_link_emit_end(&c->io);
    if (survey_basis) return commit(c, -1, 0, c->survey_hash, 0);
    char spill_hash[33];
    int64_t t0 = sp_now_ns();
    SP_TRY(sp_spill_hash_all(c->sa, spill_hash)); /* the gather wrote A out of order */
    prof(c, SP_PROF_SPILL, &t0);
    return commit(c, -1, 0, spill_hash, boundaries_behind(j));
}

/* 3. W_head ← (W_head·diag γ_final)·Q, and its bias: the head's own plus
 * W_head·β_final for LayerNorm families. */
static int slice_head(cstate *c) {
    job *j = c->j;
    const sp_arch *a = j->m.arch;
    const int64_t D = j->shape.hidden, V = j->shape.vocab, dl = j->plan.width[SP_POS_OUT][j->shape.layers - 1];
    const int64_t ebr = j->rot_block; /* embedding/head rows at a time */
    int r = j->layer_read0[j->shape.layers]; /* the final norm [β] [the head's bias], then the head */
    phase(c, j->shape.layers - 1, SP_PHASE_HEAD);
    SP_TRY(sp_link_pull_whole(&c->io, r++, c->norm));
    if (j->plan.identity) SP_TRY(sp_link_emit_all(&c->io, c->norm, D)); /* the final norm as read */
    sp_model_norm_weight(&j->m, c->norm, D);
    const float *gamma = sp_bk_put(c->bk, c->normd, c->norm, D * 4);
    if (a->final_norm_bias) SP_TRY(sp_link_pull_whole(&c->io, r++, c->norm_b));
    if (a->final_norm_bias && j->plan.identity) SP_TRY(sp_link_emit_all(&c->io, c->norm_b, D)); /* its β as read */
    memset(c->hb, 0, (size_t)V * 4);
    if (j->m.has_head_bias) SP_TRY(sp_link_pull_whole(&c->io, r++, c->hb));
    if (j->plan.stock && !j->plan.identity) SP_TRY(emit_norm(c, dl)); /* the stock final norm */
    for (int64_t r0 = 0; r0 < V; r0 += ebr) {
        int64_t nr = V - r0 < ebr ? V - r0 : ebr;
        SP_TRY(sp_link_pull(&c->io, r, c->eb, nr * D));
        if (j->plan.identity) { /* the head as read; none when it stays tied */
            if (!j->plan.tied_head) SP_TRY(sp_link_emit(&c->io, c->eb, nr * D));
            continue;
        }
        if (a->final_norm_bias) fold_beta(c->eb, nr, D, c->norm_b, c->hb + r0);
        float *e = (float *)sp_bk_put(c->bk, c->ebd, c->eb, nr * D * 4);
        rot_rows(c, e, nr, gamma, c->Q, dl);
        sp_bk_get(c->bk, c->eb, e, nr * dl * 4);
        SP_TRY(sp_link_emit(&c->io, c->eb, nr * dl));
    }
    if (!j->plan.tied_head) sp_link_emit_end(&c->io);
    if (sp_output_head_bias(j)) SP_TRY(sp_link_emit_all(&c->io, c->hb, V));
    SP_TRY(sp_link_wait_journaled(&c->io, j->shape.layers - 1, 0)); /* its basis file is the one boundary L - 2 named */
    static const char no_spill[33] = {0};
    return commit(c, j->shape.layers, 0, no_spill, 0); /* the head is journaled too */
}

/* hold_bytes: what a layer pass's sgemms read as B while stream_layer holds
 * them: the layer's weights, the shortcut fsd and the basis Qf (refit: and
 * the attention shortcut pm). */
static sp_bk_plan_in ws_plan(const job *j) {
    const int64_t D = j->shape.hidden;
    return (sp_bk_plan_in){.D = D, .cov_rows = COV_ROWS, .rot_block = j->rot_block, .T = 0, .n_heads = 0,
                           .hold_bytes = sp_layer_buf_bytes(&j->m) + (j->plan.refit ? 3 : 2) * D * D * 4};
}

/* refit: the widest joined rows [input | target], the MLP's or the attention's. */
static int64_t refit_width(const job *j) {
    return (j->shape.ffn > j->shape.q_width ? j->shape.ffn : j->shape.q_width) + j->shape.hidden;
}

/* prune_ffn: the workspace of C's updates, F wide; refit: of G2's, refit_width wide. */
static sp_bk_plan_in ws_plan_ffn(const job *j) {
    return (sp_bk_plan_in){.D = j->plan.refit ? refit_width(j) : j->shape.ffn, .cov_rows = COV_ROWS, .no_eigh = 1};
}

/* prune_ffn and refit: their own bytes beyond buf_specs' (host; device: the workspace). */
static int64_t ffn_bytes(const job *j, int device) {
    if (!j->plan.prune_ffn && !j->plan.refit) return 0;
    sp_bk_plan_in in = ws_plan_ffn(j);
    sp_bk_plan p = j->bk->plan_bytes(j->bk, &in);
    if (device) return p.device_bytes;
    if (j->plan.refit) return p.host_bytes; /* the solves' work is in buf_specs (rfw) */
    return p.host_bytes +
           sp_ridge_bytes(j->shape.ffn, j->plan.ffn[0], j->shape.hidden, j->mf->ffn_score == SP_SCORE_LEVERAGE, down_bias(j));
}

/* The compute stage's own buffers: one list for the plan and the allocation. */
typedef struct buf_spec {
    size_t off;   /* of the pointer in cstate */
    int64_t n, sz;
    const char *what;
    int kind;     /* BUF_HOST, BUF_BK (backend memory), BUF_MIRROR (backend memory unless host-shared),
                   * BUF_HOST_MIRROR (host memory for a backend buffer's host side, unless host-shared) */
} buf_spec;

enum { BUF_HOST, BUF_BK, BUF_MIRROR, BUF_HOST_MIRROR };

#define BUF(field, count, size, what) {offsetof(cstate, field), (count), (size), (what), BUF_HOST}
#define BK(field, count, size, what) {offsetof(cstate, field), (count), (size), (what), BUF_BK}
#define MIRROR(field, count, size, what) {offsetof(cstate, field), (count), (size), (what), BUF_MIRROR}
#define HOST_MIRROR(field, count, size, what) {offsetof(cstate, field), (count), (size), (what), BUF_HOST_MIRROR}

#define N_BUFS 37

static int buf_specs(const job *j, buf_spec out[N_BUFS]) {
    const int64_t D = j->shape.hidden, T = j->shape.seqlen, wr = sp_job_window_rows(j), cwT = j->chunk_w * wr, F = j->shape.ffn;
    const int64_t gr = j->group * wr; /* a layer pass's rows (refit: group 1) */
    const int pf = j->plan.prune_ffn, rf = j->plan.refit;
    const int64_t g = rf ? refit_width(j) : 1, Dh = j->shape.q_width;
    const int64_t k_rows = T * (Dh + D) > COV_ROWS * (F + D) ? T * (Dh + D) : COV_ROWS * (F + D);
    const buf_spec b[] = {
        BUF(cin, cwT * D, 4, "activation chunk"),   BUF(cout, cwT * D, 4, "activation chunk"),
        BK(tmp, j->group * T * D, 4, "window buffer"),         BUF(eb, j->rot_block * D, 4, "embedding rows"),
        BUF(norm, D, 4, "norm"),                    BUF(fs, D * D, 4, "shortcut"),
        BK(Qf, D * D, 4, "basis"),                  BK(Q, D * D, 8, "basis"),
        /* Qm, Qn: per-layer bases only; one basis (global, stock) never touches them */
        BK(Qm, j->plan.shortcuts ? D * D : 1, 8, "basis"), BK(Qn, j->plan.shortcuts ? D * D : 1, 8, "basis"),
        BK(H, D * D, 8, "second moment"),           BUF(pos, j->shape.tokens, 8, "token positions"),
        BUF(id_start, j->shape.vocab + 1, 8, "token positions"),
        BUF(norm_b, D, 4, "norm"),                  BUF(hb, j->shape.vocab, 4, "head bias"),
        BUF(posb, j->m.n_pos ? T * D : 1, 4, "learned positions"),
        MIRROR(evd, D, 8, "eigenvalues"),           HOST_MIRROR(Qh, D * D, 8, "basis"),
        MIRROR(xw, gr * D, 4, "window buffer"),     MIRROR(yw, gr * D, 4, "window buffer"),
        MIRROR(ebd, j->rot_block * D, 4, "embedding rows"),   MIRROR(fsd, D * D, 4, "shortcut"),
        MIRROR(normd, D, 4, "norm"),
        BUF(G, j->plan.survey ? D * D : 1, 8, "global second moment"),
        BK(C, pf ? F * F : 1, 8, "MLP second moment"), HOST_MIRROR(Ch, pf ? F * F : 1, 8, "MLP second moment"),
        BK(Z, pf || rf ? COV_ROWS * F : 1, 4, "MLP intermediate"),  BUF(S, pf ? F : 1, 8, "kept neurons"),
        BUF(raw, j->plan.identity ? SP_ARCH_LAYER_MAX * D : 1, 4, "norm weights"),
        BUF(zsum, down_bias(j) ? F : 1, 8, "MLP intermediate means"),
        HOST_MIRROR(Zh, down_bias(j) ? COV_ROWS * F : 1, 4, "MLP intermediate"),
        BK(xh, rf ? T * D : 1, 4, "window buffer"),  BK(pm, rf ? D * D : 1, 4, "shortcut"),
        BK(K, rf ? k_rows : 1, 4, "refit rows"),     BK(G2, g * g, 8, "refit second moment"),
        HOST_MIRROR(G2h, g * g, 8, "refit second moment"),
        BUF(rfw, rf ? sp_ridge_fit_bytes(D, D) / 8 : 1, 8, "refit solve"),
    };
    _Static_assert(sizeof b / sizeof b[0] == N_BUFS, "N_BUFS");
    memcpy(out, b, sizeof b);
    return N_BUFS;
}

int64_t sp_compute_plan_bytes(const job *j) {
    buf_spec b[N_BUFS];
    int n = buf_specs(j, b);
    int64_t total = 0, dev;
    for (int i = 0; i < n; i++)
        if (j->bk->host_shared ? b[i].kind == BUF_HOST || b[i].kind == BUF_BK
                               : b[i].kind == BUF_HOST || b[i].kind == BUF_HOST_MIRROR)
            total += b[i].n * b[i].sz;
    sp_bk_plan_in in = ws_plan(j);
    return total + sp_link_bytes(j) + sp_layer_buf_bytes(&j->m)          /* the link; one layer, float32 */
           + 2 * sp_spill_mem_bytes(j->shape.hidden, j->chunk_w * sp_job_window_rows(j), j->mf->spill_dtype) /* the spills' conversion buffers */
           + (j->spill_resident ? sp_job_spills_bytes(j) : 0) /* the spills held in memory ([resources] activations) */
           + j->bk->plan_bytes(j->bk, &in).host_bytes                            /* second moments, eigh, rotations */
           + sp_layer_scratch_bytes_n(j->bk, &j->m.dims, j->shape.seqlen, j->group, j->shape.hidden, &dev) /* the forward pass */
           + ffn_bytes(j, 0);
}

int64_t sp_compute_plan_device_bytes(const job *j) {
    if (j->bk->host_shared) return 0;
    buf_spec b[N_BUFS];
    int n = buf_specs(j, b);
    int64_t total = 0, dev = 0;
    for (int i = 0; i < n; i++)
        if (b[i].kind == BUF_BK || b[i].kind == BUF_MIRROR) total += b[i].n * b[i].sz;
    sp_bk_plan_in in = ws_plan(j);
    sp_layer_scratch_bytes_n(j->bk, &j->m.dims, j->shape.seqlen, j->group, j->shape.hidden, &dev);
    return total + sp_layer_buf_bytes(&j->m) /* the layer's mirrors */ + j->bk->plan_bytes(j->bk, &in).device_bytes + dev +
           ffn_bytes(j, 1);
}

static int alloc_state(cstate *c) {
    job *j = c->j;
    const int64_t D = j->shape.hidden, T = j->shape.seqlen, wr = sp_job_window_rows(j);
    const int64_t rows = sp_job_spill_rows(j); /* refit keeps the dense stream beside */
    buf_spec a[N_BUFS];
    const int n = buf_specs(j, a);
    const int shared = c->bk->host_shared;
    for (int i = 0; i < n; i++) {
        void **p = (void **)((char *)c + a[i].off);
        if (a[i].kind == BUF_HOST || (a[i].kind == BUF_HOST_MIRROR && !shared))
            SP_TRY(sp_alloc(p, a[i].n, a[i].sz, a[i].what));
        else if (a[i].kind == BUF_BK || (a[i].kind == BUF_MIRROR && !shared))
            SP_TRY(c->bk->alloc(c->bk, p, a[i].n * a[i].sz, a[i].what));
    }
    SP_TRY(sp_layer_buf_init(&j->m, &c->lb));
    if (shared) { /* the mirrors are their host buffers */
        c->ebd = c->eb, c->fsd = c->fs, c->normd = c->norm;
        for (int t = 0; t < SP_ARCH_LAYER_MAX; t++) c->wd[t] = c->lb.t[t];
    } else {
        for (int t = 0; t < j->m.arch->n_layer; t++) {
            int64_t shape[2];
            int nd;
            sp_arch_in_shape(j->m.arch, &j->m.cfg, t, shape, &nd);
            SP_TRY(c->bk->alloc(c->bk, (void **)&c->wd[t], shape[0] * (nd == 1 ? 1 : shape[1]) * 4, "layer weights"));
        }
    }
    sp_bk_plan_in in = ws_plan(j);
    SP_TRY(c->bk->ws_init(c->bk, &in, &c->ws));
    if (j->plan.prune_ffn || j->plan.refit) {
        sp_bk_plan_in inf = ws_plan_ffn(j);
        SP_TRY(c->bk->ws_init(c->bk, &inf, &c->wsf));
    }
    /* A resume: the input of the next layer is kept, the other is scratch;
     * the basis file holds Q, or after a survey boundary G. */
    const int after_survey = j->resume.layer < -1 && j->resume.survey >= 0;
    if (j->resume.layer >= -1 || after_survey) {
        const char *other = strcmp(j->resume.spill, j->spill_a) == 0 ? j->spill_b : j->spill_a;
        SP_TRY(sp_spill_open(&c->sa, j->resume.spill, rows, D, j->mf->spill_dtype, j->chunk_w * wr, 1));
        SP_TRY(sp_spill_open(&c->sb, other, rows, D, j->mf->spill_dtype, j->chunk_w * wr, 0));
        memcpy(c->survey_hash, j->resume.spill_hash, 33); /* a survey's last spill */
        if (after_survey) {
            SP_TRY(sp_link_resume_basis(&c->io, c->G));
        } else { /* Q through its host side */
            double *qh = c->bk->host_shared ? c->Q : c->Qh;
            SP_TRY(sp_link_resume_basis(&c->io, qh));
            sp_bk_put(c->bk, c->Q, qh, D * D * 8);
        }
    } else {
        SP_TRY(sp_spill_open(&c->sa, j->spill_a, rows, D, j->mf->spill_dtype, j->chunk_w * wr, 0));
        SP_TRY(sp_spill_open(&c->sb, j->spill_b, rows, D, j->mf->spill_dtype, j->chunk_w * wr, 0));
    }
    if (j->spill_resident) { /* a kept spill's bytes are read in */
        SP_TRY(sp_spill_make_resident(c->sa));
        SP_TRY(sp_spill_make_resident(c->sb));
    }
    return sp_layer_scratch_init_n(c->bk, j->m.arch, &j->m.dims, T, j->group, D, &c->scr);
}

static void free_state(cstate *c) {
    buf_spec a[N_BUFS];
    const int n = buf_specs(c->j, a);
    const int shared = c->bk->host_shared;
    for (int i = 0; i < n; i++) {
        void *p = *(void **)((char *)c + a[i].off);
        if (a[i].kind == BUF_HOST || a[i].kind == BUF_HOST_MIRROR) free(p);
        else if (a[i].kind == BUF_BK || !shared) c->bk->free(c->bk, p);
    }
    for (int t = 0; t < SP_ARCH_LAYER_MAX && !shared; t++) c->bk->free(c->bk, c->wd[t]);
    sp_layer_buf_free(&c->lb);
    if (c->ws) c->bk->ws_free(c->bk, c->ws);
    if (c->wsf) c->bk->ws_free(c->bk, c->wsf);
    sp_layer_scratch_free(c->scr);
    if (c->sa) c->j->sh->st[SP_STAGE_COMPUTE].bytes_written += sp_spill_bytes_written(c->sa);
    if (c->sb) c->j->sh->st[SP_STAGE_COMPUTE].bytes_written += sp_spill_bytes_written(c->sb);
    if (c->sa) c->j->sh->st[SP_STAGE_COMPUTE].bytes_read += sp_spill_bytes_read(c->sa);
    if (c->sb) c->j->sh->st[SP_STAGE_COMPUTE].bytes_read += sp_spill_bytes_read(c->sb);
    sp_spill_free(c->sa, 0); /* kept for a resume; the supervisor removes them when done */
    sp_spill_free(c->sb, 0);
}

int sp_stage_compute(job *j) {
    cstate cs = {.j = j, .st = &j->sh->st[SP_STAGE_COMPUTE], .bk = j->bk}, *c = &cs;
    int rc = sp_link_init(&c->io, j);
    j->bk->set_threads(j->bk, j->threads, j->shape.hidden);
    if (!rc) rc = alloc_state(c);
    if (!rc && j->resume.layer < -1) rc = slice_embed(c, j->resume.survey + 1);
    for (int64_t l = j->resume.layer < -1 ? 0 : j->resume.layer + 1; l < j->shape.layers && !rc; l++)
        rc = j->plan.prune_ffn ? stock_layer(c, l) : j->plan.refit ? refit_layer(c, l) : slice_layer(c, l);
    if (!rc) rc = slice_head(c);
    if (!rc) {
        phase(c, j->shape.layers - 1, SP_PHASE_DONE);
        rc = sp_link_finish(&c->io);
    }
    sp_link_free(&c->io); /* first: a boundary still in flight uses a spill */
    free_state(c);
    return rc;
}
