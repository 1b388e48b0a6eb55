/* linalg/forward.c — float32 forward pass of one Llama layer and of the head,
 * with OpenBLAS. Contract and conventions: forward.h, DESIGN.md §1.
 *
 * Every buffer is allocated once in sp_fwd_scratch_init; the three forward
 * functions only use the scratch. Shapes are row-major.
 *
 * Attention runs per query head and per block of SP_FWD_QBLOCK query rows:
 * a block of rows [r0, r1) only needs keys 0..r1-1 (causal), so the score
 * buffer is (QBLOCK, T) and the masked upper triangle is mostly never computed.
 * The MLP and the head are row-independent and run in row chunks, which bounds
 * the (rows, ffn) and (rows, vocab) buffers.
 */
#include "forward.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define SP_FWD_QBLOCK 128   /* query rows per attention block */
#define SP_FWD_MLP_ROWS 256 /* rows per MLP chunk */
#define SP_FWD_HEAD_ROWS 64 /* rows per head (logits) chunk */

struct sp_fwd_scratch {
    int64_t T_max, width_max;
    int64_t n_heads, n_kv_heads, head_dim, ffn, vocab;
    float *rope_cos;  /* (T_max, head_dim/2) cos(pos · inv_freq[i]) */
    float *rope_sin;  /* (T_max, head_dim/2) sin(pos · inv_freq[i]) */
    float *xn;        /* (T_max, width_max) normalized layer / head input */
    float *q;         /* (T_max, n_heads*head_dim) queries, then RoPE'd */
    float *k;         /* (T_max, n_kv_heads*head_dim) keys, then RoPE'd */
    float *v;         /* (T_max, n_kv_heads*head_dim) values */
    float *ctx;       /* (T_max, n_heads*head_dim) softmax(QKᵀ)·V per head */
    float *att;       /* (QBLOCK, T_max) scores / probabilities of one block */
    float *gate;      /* (MLP_ROWS, ffn) silu(x·Wgᵀ) ⊙ x·Wuᵀ */
    float *up;        /* (MLP_ROWS, ffn) x·Wuᵀ */
    float *logits;    /* (HEAD_ROWS, vocab) when the caller keeps no logits */
};

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

/* inv_freq[i] = theta^(-2i/hd), with HF's "llama3" rope_scaling
 * (_compute_llama3_parameters) applied when dims->rope_llama3. */
static double rope_inv_freq(const sp_dims *dims, int64_t i) {
    double hd = (double)dims->head_dim;
    double f = pow(dims->rope_theta, -(double)(2 * i) / hd);
    if (!dims->rope_llama3) return f;
    double factor = dims->rope_factor, lo = dims->rope_low_freq_factor, hi = dims->rope_high_freq_factor;
    double old_ctx = (double)dims->rope_original_max_pos;
    double low_freq_wavelen = old_ctx / lo, high_freq_wavelen = old_ctx / hi;
    double wavelen = 2.0 * M_PI / f;
    if (wavelen < high_freq_wavelen) return f;          /* high frequency: kept */
    if (wavelen > low_freq_wavelen) return f / factor;  /* low frequency: divided */
    double smooth = (old_ctx / wavelen - lo) / (hi - lo); /* medium: interpolated */
    return (1.0 - smooth) * f / factor + smooth * f;
}

void sp_fwd_scratch_free(sp_fwd_scratch *s) {
    if (!s) return;
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->xn);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->ctx);
    free(s->att);
    free(s->gate);
    free(s->up);
    free(s->logits);
    free(s);
}

static int alloc_f32(float **p, int64_t rows, int64_t cols, const char *what) {
    int64_t n;
    if (sp_mul_i64(rows, cols, &n)) return sp_fail(SP_EX_SOFTWARE, "forward scratch %s: size overflows", what);
    return sp_alloc((void **)p, n, (int64_t)sizeof(float), what);
}

int sp_fwd_scratch_init(const sp_dims *dims, int64_t T, int64_t width_max, sp_fwd_scratch **out) {
    *out = NULL;
    if (T < 1 || width_max < 1 || dims->D < 1 || dims->n_heads < 1 || dims->n_kv_heads < 1 || dims->head_dim < 2 ||
        dims->head_dim % 2 != 0 || dims->n_heads % dims->n_kv_heads != 0 || dims->ffn < 1 || dims->vocab < 1)
        return sp_fail(SP_EX_DATAERR,
                       "forward: unusable dimensions (T %lld, width %lld, D %lld, heads %lld/%lld, head_dim %lld, "
                       "ffn %lld, vocab %lld)",
                       (long long)T, (long long)width_max, (long long)dims->D, (long long)dims->n_heads,
                       (long long)dims->n_kv_heads, (long long)dims->head_dim, (long long)dims->ffn,
                       (long long)dims->vocab);
    if (dims->rope_llama3 && (!(dims->rope_factor > 0) || !(dims->rope_high_freq_factor > dims->rope_low_freq_factor) ||
                              !(dims->rope_low_freq_factor > 0) || dims->rope_original_max_pos < 1))
        return sp_fail(SP_EX_DATAERR, "forward: unusable llama3 rope_scaling parameters");

    sp_fwd_scratch *s;
    SP_TRY(sp_calloc((void **)&s, 1, (int64_t)sizeof *s, "forward scratch"));
    s->T_max = T;
    s->width_max = width_max;
    s->n_heads = dims->n_heads;
    s->n_kv_heads = dims->n_kv_heads;
    s->head_dim = dims->head_dim;
    s->ffn = dims->ffn;
    s->vocab = dims->vocab;

    int64_t half = dims->head_dim / 2, qw = 0, kw = 0;
    int rc = 0;
    if (sp_mul_i64(dims->n_heads, dims->head_dim, &qw) || sp_mul_i64(dims->n_kv_heads, dims->head_dim, &kw))
        rc = sp_fail(SP_EX_SOFTWARE, "forward scratch: head widths overflow");
    if (!rc) rc = alloc_f32(&s->rope_cos, T, half, "RoPE cos table");
    if (!rc) rc = alloc_f32(&s->rope_sin, T, half, "RoPE sin table");
    if (!rc) rc = alloc_f32(&s->xn, T, width_max, "normalized activations");
    if (!rc) rc = alloc_f32(&s->q, T, qw, "queries");
    if (!rc) rc = alloc_f32(&s->k, T, kw, "keys");
    if (!rc) rc = alloc_f32(&s->v, T, kw, "values");
    if (!rc) rc = alloc_f32(&s->ctx, T, qw, "attention context");
    if (!rc) rc = alloc_f32(&s->att, min_i64(T, SP_FWD_QBLOCK), T, "attention scores");
    if (!rc) rc = alloc_f32(&s->gate, min_i64(T, SP_FWD_MLP_ROWS), dims->ffn, "MLP gate");
    if (!rc) rc = alloc_f32(&s->up, min_i64(T, SP_FWD_MLP_ROWS), dims->ffn, "MLP up");
    if (!rc) rc = alloc_f32(&s->logits, min_i64(T, SP_FWD_HEAD_ROWS), dims->vocab, "logits");
    if (rc) {
        sp_fwd_scratch_free(s);
        return rc;
    }
    for (int64_t i = 0; i < half; i++) {
        double f = rope_inv_freq(dims, i);
        for (int64_t t = 0; t < T; t++) {
            double a = (double)t * f;
            s->rope_cos[t * half + i] = (float)cos(a);
            s->rope_sin[t * half + i] = (float)sin(a);
        }
    }
    *out = s;
    return 0;
}

void sp_rmsn(const float *gamma, int64_t d, int64_t D, double eps, float *x, int64_t T) {
    SP_ASSERT(d >= 1 && D >= 1);
    for (int64_t t = 0; t < T; t++) {
        float *r = x + t * d;
        double ss = 0.0;
        for (int64_t j = 0; j < d; j++) ss += (double)r[j] * (double)r[j];
        float inv = (float)(1.0 / sqrt(ss / (double)D + eps));
        if (gamma)
            for (int64_t j = 0; j < d; j++) r[j] = r[j] * inv * gamma[j];
        else
            for (int64_t j = 0; j < d; j++) r[j] *= inv;
    }
}

/* y (rows, n) = x (rows, k) · Wᵀ, W (n, k); beta 0 overwrites, 1 accumulates. */
static void linear(const float *x, int64_t rows, int64_t k, const float *w, int64_t n, float beta, float *y) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)n, (blasint)k, 1.0f, x, (blasint)k, w,
                (blasint)k, beta, y, (blasint)n);
}

/* y (rows, n) += x (rows, k) · S (k, n), or y += x when S is NULL (k == n). */
static void add_shortcut(const float *x, int64_t rows, int64_t k, const float *S, int64_t n, float *y) {
    if (S) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)rows, (blasint)n, (blasint)k, 1.0f, x,
                    (blasint)k, S, (blasint)n, 1.0f, y, (blasint)n);
    } else {
        SP_ASSERT(k == n);
        for (int64_t i = 0; i < rows * n; i++) y[i] += x[i];
    }
}

/* Rotate-half RoPE in place on every head of x (T, nh*hd), position = row. */
static void rope_apply(const sp_fwd_scratch *s, float *x, int64_t T, int64_t nh) {
    int64_t hd = s->head_dim, half = hd / 2;
    for (int64_t t = 0; t < T; t++) {
        const float *c = s->rope_cos + t * half, *sn = s->rope_sin + t * half;
        for (int64_t h = 0; h < nh; h++) {
            float *p = x + (t * nh + h) * hd;
            for (int64_t i = 0; i < half; i++) {
                float a = p[i], b = p[i + half];
                p[i] = a * c[i] - b * sn[i];        /* q1·cos − q2·sin */
                p[i + half] = b * c[i] + a * sn[i]; /* q2·cos + q1·sin */
            }
        }
    }
}

void sp_fwd_attn(const sp_dims *dims, const sp_layer_w *w, const float *x, int64_t T, float *h, sp_fwd_scratch *s) {
    int64_t d_in = w->d_in, d_mid = w->d_mid;
    int64_t nh = dims->n_heads, nkv = dims->n_kv_heads, hd = dims->head_dim;
    int64_t qw = nh * hd, kw = nkv * hd, group = nh / nkv;
    SP_ASSERT(T >= 1 && T <= s->T_max && d_in >= 1 && d_in <= s->width_max && d_mid >= 1);
    SP_ASSERT(nh == s->n_heads && nkv == s->n_kv_heads && hd == s->head_dim);
    SP_ASSERT(w->attn_shortcut || d_in == d_mid);
    SP_ASSERT((const float *)h != x);

    float *xn = s->xn; /* (T, d_in) */
    memcpy(xn, x, (size_t)(T * d_in) * sizeof(float));
    sp_rmsn(w->attn_norm, d_in, dims->D, dims->eps, xn, T);

    linear(xn, T, d_in, w->wq, qw, 0.0f, s->q); /* (T, nh*hd) */
    linear(xn, T, d_in, w->wk, kw, 0.0f, s->k); /* (T, nkv*hd) */
    linear(xn, T, d_in, w->wv, kw, 0.0f, s->v); /* (T, nkv*hd) */
    rope_apply(s, s->q, T, nh);
    rope_apply(s, s->k, T, nkv);

    float scale = (float)(1.0 / sqrt((double)hd));
    for (int64_t hq = 0; hq < nh; hq++) {
        int64_t g = hq / group; /* GQA: query head hq reads kv head hq / (nh/nkv) */
        const float *qh = s->q + hq * hd, *kh = s->k + g * hd, *vh = s->v + g * hd;
        for (int64_t r0 = 0; r0 < T; r0 += SP_FWD_QBLOCK) {
            int64_t r1 = min_i64(T, r0 + SP_FWD_QBLOCK), nr = r1 - r0, nk = r1; /* keys 0..r1-1 */
            float *att = s->att;                                               /* (nr, nk), ld nk */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nr, (blasint)nk, (blasint)hd, scale,
                        qh + r0 * qw, (blasint)qw, kh, (blasint)kw, 0.0f, att, (blasint)nk);
            for (int64_t i = 0; i < nr; i++) {
                float *row = att + i * nk;
                int64_t last = r0 + i; /* causal: keys 0..last */
                float m = row[0];
                for (int64_t j = 1; j <= last; j++) m = row[j] > m ? row[j] : m;
                float sum = 0.0f;
                for (int64_t j = 0; j <= last; j++) {
                    /* below -87, expf underflows (slow errno path in glibc) to
                     * under FLT_MIN: a zero weight is exact to float precision */
                    float z = row[j] - m;
                    row[j] = z < -87.0f ? 0.0f : expf(z);
                    sum += row[j];
                }
                float inv = 1.0f / sum;
                for (int64_t j = 0; j <= last; j++) row[j] *= inv;
                for (int64_t j = last + 1; j < nk; j++) row[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)nr, (blasint)hd, (blasint)nk, 1.0f, att,
                        (blasint)nk, vh, (blasint)kw, 0.0f, s->ctx + r0 * qw + hq * hd, (blasint)qw);
        }
    }
    linear(s->ctx, T, qw, w->wo, d_mid, 0.0f, h); /* (T, d_mid) */
    add_shortcut(x, T, d_in, w->attn_shortcut, d_mid, h);
}

void sp_fwd_mlp(const sp_dims *dims, const sp_layer_w *w, const float *h, int64_t T, float *y, sp_fwd_scratch *s) {
    int64_t d_mid = w->d_mid, d_out = w->d_out, ffn = dims->ffn;
    SP_ASSERT(T >= 1 && T <= s->T_max && d_mid >= 1 && d_mid <= s->width_max && d_out >= 1);
    SP_ASSERT(ffn == s->ffn);
    SP_ASSERT(w->mlp_shortcut || d_mid == d_out);
    SP_ASSERT((const float *)y != h);

    float *xn = s->xn; /* (T, d_mid) */
    memcpy(xn, h, (size_t)(T * d_mid) * sizeof(float));
    sp_rmsn(w->mlp_norm, d_mid, dims->D, dims->eps, xn, T);
    for (int64_t r0 = 0; r0 < T; r0 += SP_FWD_MLP_ROWS) {
        int64_t nr = min_i64(T - r0, SP_FWD_MLP_ROWS);
        float *gate = s->gate, *up = s->up; /* (nr, ffn) each */
        linear(xn + r0 * d_mid, nr, d_mid, w->w_gate, ffn, 0.0f, gate);
        linear(xn + r0 * d_mid, nr, d_mid, w->w_up, ffn, 0.0f, up);
        for (int64_t i = 0; i < nr * ffn; i++) {
            /* silu(g) · u; for g < -80 silu(g) is below 1e-33 and expf(-g)
             * would overflow through glibc's slow errno path: clamp it */
            float g = gate[i];
            gate[i] = g / (1.0f + expf(g < -80.0f ? 80.0f : -g)) * up[i];
        }
        linear(gate, nr, ffn, w->w_down, d_out, 0.0f, y + r0 * d_out); /* (nr, d_out) */
    }
    add_shortcut(h, T, d_mid, w->mlp_shortcut, d_out, y);
}

double sp_fwd_head_nll(const sp_dims *dims, const float *norm, const float *w_head, int64_t d, const float *x,
                       const int32_t *tokens, int64_t T, float *logits_out, sp_fwd_scratch *s) {
    int64_t V = dims->vocab;
    SP_ASSERT(T >= 1 && T <= s->T_max && d >= 1 && d <= s->width_max && V == s->vocab);

    float *xn = s->xn; /* (T, d) */
    memcpy(xn, x, (size_t)(T * d) * sizeof(float));
    sp_rmsn(norm, d, dims->D, dims->eps, xn, T);
    double nll = 0.0;
    for (int64_t r0 = 0; r0 < T; r0 += SP_FWD_HEAD_ROWS) {
        int64_t nr = min_i64(T - r0, SP_FWD_HEAD_ROWS);
        float *lg = logits_out ? logits_out + r0 * V : s->logits; /* (nr, V) */
        linear(xn + r0 * d, nr, d, w_head, V, 0.0f, lg);
        for (int64_t i = 0; i < nr; i++) {
            int64_t t = r0 + i;
            if (t >= T - 1) break; /* the last position predicts nothing */
            const float *row = lg + i * V;
            int32_t target = tokens[t + 1];
            SP_ASSERT(target >= 0 && target < V); /* callers validate token ids on load */
            float m = row[0];
            for (int64_t j = 1; j < V; j++) m = row[j] > m ? row[j] : m;
            double se = 0.0;
            for (int64_t j = 0; j < V; j++) se += exp((double)row[j] - (double)m);
            nll += (double)m + log(se) - (double)row[target];
        }
    }
    return nll;
}
