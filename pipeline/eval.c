#include "eval.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"

int sp_npy_write_f32(const char *path, const float *data, int64_t rows, int64_t cols) {
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     (long long)rows, (long long)cols);
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    char head[256];
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    uint16_t hl = (uint16_t)(n + pad + 1);
    head[8] = (char)(hl & 0xff);
    head[9] = (char)(hl >> 8);
    memcpy(head + 10, hdr, (size_t)n);
    memset(head + 10 + n, ' ', (size_t)pad);
    head[10 + n + pad] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create", path);
    int rc = sp_io_write_full(fd, head, 10 + n + pad + 1, path);
    if (!rc) rc = sp_io_write_full(fd, data, rows * cols * 4, path);
    close(fd);
    return rc;
}

int sp_eval(const sp_model *m, const sp_tokens *toks, const sp_eval_opts *o, sp_eval_result *r) {
    memset(r, 0, sizeof *r);
    const sp_config *c = &m->cfg;
    const sp_dims *dims = &m->dims;
    int64_t T = o->seqlen;
    if (T < 2) return sp_fail(SP_EX_USAGE, "--seqlen must be at least 2 (got %lld)", (long long)T);
    int64_t W = toks->n / T;
    if (o->windows > 0) {
        if (o->windows > W)
            return sp_fail(SP_EX_USAGE, "asked for %lld windows of %lld tokens but the token file has only %lld",
                           (long long)o->windows, (long long)T, (long long)W);
        W = o->windows;
    }
    if (W < 1)
        return sp_fail(SP_EX_DATAERR, "the token stream (%lld tokens) is shorter than one window of %lld",
                       (long long)toks->n, (long long)T);
    int64_t N = W * T, D = c->hidden_size, V = c->vocab_size;
    double t0 = sp_now();

    /* Activations of every window (N, D), twice: layer input and output. */
    float *x = NULL, *y = NULL, *big = NULL, *norm = NULL, *logits = NULL;
    sp_fwd_scratch *scr = NULL;
    sp_layer_buf lb = {0};
    int rc = sp_alloc((void **)&x, N, D * 4, "activations");
    if (!rc) rc = sp_alloc((void **)&y, N, D * 4, "activations");
    /* Embedding or head (V, D) — whichever is loaded; one at a time. */
    if (!rc) rc = sp_alloc((void **)&big, V, D * 4, "embedding/head");
    if (!rc) rc = sp_alloc((void **)&norm, D, 4, "final norm");
    if (!rc && o->dump_logits) rc = sp_alloc((void **)&logits, N, V * 4, "logits dump");
    if (!rc) rc = sp_fwd_scratch_init(dims, T, D, &scr);
    if (!rc) rc = sp_layer_buf_init(m, &lb);
    if (rc) goto out;

    /* Embedding: gather rows. */
    rc = sp_model_load_embed(m, big);
    if (rc) goto out;
    int64_t width = m->d_embed;
    /* Each window has a fixed slot of T·D floats: widths change between layers
     * (a sliced layer can be wider out than in), so rows are packed per window
     * at the current width but windows never overlap. */
    for (int64_t i = 0; i < N; i++)
        memcpy(x + (i / T) * T * D + (i % T) * width, big + (int64_t)toks->ids[i] * width, (size_t)width * 4);

    for (int64_t l = 0; l < c->n_layers; l++) {
        double tl = sp_now();
        rc = sp_model_load_layer(m, l, &lb);
        if (rc) goto out;
        const sp_layer_w *w = &lb.w;
        SP_ASSERT(w->d_in == width);
        for (int64_t k = 0; k < W; k++) {
            sp_fwd_attn(dims, w, x + k * T * D, T, y + k * T * D, scr);
            sp_fwd_mlp(dims, w, y + k * T * D, T, x + k * T * D, scr);
        }
        width = w->d_out;
        if (o->progress)
            fprintf(stderr, "eval: layer %lld/%lld done (%.2fs, %.0f tok/s)\n", (long long)l + 1, (long long)c->n_layers,
                    sp_now() - tl, (double)N / (sp_now() - tl + 1e-9));
    }

    int has_norm;
    rc = sp_model_load_head(m, big, norm, &has_norm);
    if (rc) goto out;
    double sum = 0;
    for (int64_t k = 0; k < W; k++)
        sum += sp_fwd_head_nll(dims, has_norm ? norm : NULL, big, width, x + k * T * D, toks->ids + k * T, T,
                               logits ? logits + k * T * V : NULL, scr);
    if (o->dump_logits) {
        rc = sp_npy_write_f32(o->dump_logits, logits, N, V);
        if (rc) goto out;
    }
    r->windows = W;
    r->tokens = W * (T - 1);
    r->nll = sum / (double)r->tokens;
    r->ppl = exp(r->nll);
    r->seconds = sp_now() - t0;
    r->tokens_per_s = (double)N / (r->seconds > 0 ? r->seconds : 1e-9);
    r->peak_rss_bytes = sp_peak_rss_bytes();
    if (!isfinite(r->nll)) rc = sp_fail(SP_EX_DATAERR, "%s: evaluation produced a non-finite NLL", m->dir);
out:
    sp_layer_buf_free(&lb);
    sp_fwd_scratch_free(scr);
    free(x);
    free(y);
    free(big);
    free(norm);
    free(logits);
    return rc;
}
