#include "model.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

const char *sp_layer_tensor_name(char *buf, int64_t l, const char *suffix) {
    snprintf(buf, 256, "model.layers.%lld.%s", (long long)l, suffix);
    return buf;
}

void sp_model_widths(const sp_model *m, int64_t l, int64_t *d_in, int64_t *d_mid, int64_t *d_out) {
    if (m->cfg.sliced) {
        *d_in = m->cfg.d_in[l];
        *d_mid = m->cfg.d_mid[l];
        *d_out = m->cfg.d_out[l];
    } else {
        *d_in = *d_mid = *d_out = m->cfg.hidden_size;
    }
}

/* Checks that tensor `name` exists with the given shape and a float dtype that
 * agrees with config.json. */
static int expect(const sp_model *m, const char *name, int ndim, int64_t s0, int64_t s1, int64_t *params) {
    const sp_st_file *f;
    const sp_st_tensor *t = sp_ckpt_find(m->ckpt, name, &f);
    if (!t) return sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is missing (config.json implies it)", m->dir, name);
    int64_t want[2] = {s0, s1};
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[128] = "", exp[64];
        int n = 0;
        for (int i = 0; i < t->ndim && n < 100; i++)
            n += snprintf(got + n, sizeof got - n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (ndim == 1) snprintf(exp, sizeof exp, "%lld", (long long)s0);
        else snprintf(exp, sizeof exp, "%lld, %lld", (long long)s0, (long long)s1);
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': shape [%s] contradicts config.json, which implies [%s]",
                       sp_st_path(f), name, got, exp);
    }
    if (!sp_dtype_is_float(t->dtype))
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': dtype %s is not a float type (F32, F16, BF16)", sp_st_path(f),
                       name, sp_dtype_st_name(t->dtype));
    if (t->dtype != m->cfg.torch_dtype && !m->cfg.sliced)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': dtype %s contradicts config.json torch_dtype (%s)",
                       sp_st_path(f), name, sp_dtype_st_name(t->dtype), sp_dtype_st_name(m->cfg.torch_dtype));
    *params += t->numel;
    return 0;
}

static int validate(sp_model *m) {
    const sp_config *c = &m->cfg;
    char nm[256];
    int64_t params = 0, D = c->hidden_size, hq = c->n_heads * c->head_dim, hkv = c->n_kv_heads * c->head_dim;
    SP_TRY(expect(m, "model.embed_tokens.weight", 2, c->vocab_size, m->d_embed, &params));
    for (int64_t l = 0; l < c->n_layers; l++) {
        int64_t di, dm, dout;
        sp_model_widths(m, l, &di, &dm, &dout);
        if (!c->sliced) {
            SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "input_layernorm.weight"), 1, D, 0, &params));
            SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "post_attention_layernorm.weight"), 1, D, 0, &params));
        } else {
            SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "attn_shortcut_Q"), 2, di, dm, &params));
            SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "mlp_shortcut_Q"), 2, dm, dout, &params));
        }
        SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "self_attn.q_proj.weight"), 2, hq, di, &params));
        SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "self_attn.k_proj.weight"), 2, hkv, di, &params));
        SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "self_attn.v_proj.weight"), 2, hkv, di, &params));
        SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "self_attn.o_proj.weight"), 2, dm, hq, &params));
        SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "mlp.gate_proj.weight"), 2, c->intermediate_size, dm, &params));
        SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "mlp.up_proj.weight"), 2, c->intermediate_size, dm, &params));
        SP_TRY(expect(m, sp_layer_tensor_name(nm, l, "mlp.down_proj.weight"), 2, dout, c->intermediate_size, &params));
    }
    if (!c->sliced) SP_TRY(expect(m, "model.norm.weight", 1, D, 0, &params));
    if (m->has_lm_head) SP_TRY(expect(m, "lm_head.weight", 2, c->vocab_size, m->d_final, &params));
    m->n_params = params;
    return 0;
}

int sp_model_open(const char *dir, sp_model *m) {
    memset(m, 0, sizeof *m);
    m->dir = strdup(dir);
    if (!m->dir) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    int rc = sp_config_load(dir, &m->cfg);
    if (rc) {
        sp_model_close(m);
        return rc;
    }
    const sp_config *c = &m->cfg;
    rc = sp_ckpt_open(dir, &m->ckpt);
    if (rc) {
        sp_model_close(m);
        return rc;
    }
    m->dims = (sp_dims){
        .D = c->hidden_size,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .ffn = c->intermediate_size,
        .vocab = c->vocab_size,
        .eps = c->rms_norm_eps,
        .rope_theta = c->rope_theta,
        .rope_llama3 = c->rope_llama3,
        .rope_factor = c->rope_factor,
        .rope_low_freq_factor = c->rope_low_freq_factor,
        .rope_high_freq_factor = c->rope_high_freq_factor,
        .rope_original_max_pos = c->rope_original_max_pos,
    };
    m->d_embed = c->sliced ? c->d_embed : c->hidden_size;
    m->d_final = c->sliced ? c->d_out[c->n_layers - 1] : c->hidden_size;
    m->has_lm_head = sp_ckpt_find(m->ckpt, "lm_head.weight", NULL) != NULL;
    if (c->sliced && !m->has_lm_head) {
        sp_model_close(m);
        return sp_fail(SP_EX_DATAERR, "%s: sliced model has no lm_head.weight (its head is never tied)", dir);
    }
    if (!c->sliced && c->tie_word_embeddings && m->has_lm_head) {
        /* Allowed by HF; the separate tensor wins, as in transformers. */
    }
    if (!c->sliced && !c->tie_word_embeddings && !m->has_lm_head) {
        sp_model_close(m);
        return sp_fail(SP_EX_DATAERR, "%s: tensor 'lm_head.weight' is missing and tie_word_embeddings is false", dir);
    }
    rc = validate(m);
    if (rc) {
        sp_model_close(m);
        return rc;
    }
    for (int i = 0; i < sp_ckpt_shard_count(m->ckpt); i++) {
        const sp_st_file *f = sp_ckpt_shard(m->ckpt, i);
        for (int j = 0; j < sp_st_count(f); j++) m->n_bytes += sp_st_at(f, j)->nbytes;
    }
    return 0;
}

void sp_model_close(sp_model *m) {
    if (!m) return;
    sp_ckpt_free(m->ckpt);
    sp_config_free(&m->cfg);
    free(m->dir);
    memset(m, 0, sizeof *m);
}

int64_t sp_layer_buf_bytes(const sp_model *m) {
    const sp_dims *d = &m->dims;
    int64_t hq = d->n_heads * d->head_dim, hkv = d->n_kv_heads * d->head_dim;
    int64_t sc = m->cfg.sliced ? 2 * d->D * d->D : 0; /* shortcuts: sliced models only */
    return 4 * (2 * d->D + hq * d->D + 2 * hkv * d->D + d->D * hq + sc + 3 * d->ffn * d->D);
}

void sp_layer_buf_free(sp_layer_buf *b) {
    if (!b) return;
    float **p[] = {&b->attn_norm, &b->wq, &b->wk, &b->wv, &b->wo, &b->attn_sc,
                   &b->mlp_norm, &b->w_gate, &b->w_up, &b->w_down, &b->mlp_sc};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        free(*p[i]);
        *p[i] = NULL;
    }
}

int sp_layer_buf_init(const sp_model *m, sp_layer_buf *b) {
    memset(b, 0, sizeof *b);
    const sp_dims *d = &m->dims;
    int64_t D = d->D, hq = d->n_heads * d->head_dim, hkv = d->n_kv_heads * d->head_dim;
    int64_t sc = m->cfg.sliced ? D * D : 0; /* shortcuts: sliced models only */
    struct {
        float **p;
        int64_t n;
    } a[] = {{&b->attn_norm, D},  {&b->wq, hq * D},         {&b->wk, hkv * D},        {&b->wv, hkv * D},
             {&b->wo, D * hq},    {&b->attn_sc, sc},     {&b->mlp_norm, D},        {&b->w_gate, d->ffn * D},
             {&b->w_up, d->ffn * D}, {&b->w_down, D * d->ffn}, {&b->mlp_sc, sc}};
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
        int rc = sp_alloc((void **)a[i].p, a[i].n, sizeof(float), "layer weights");
        if (rc) {
            sp_layer_buf_free(b);
            return rc;
        }
    }
    return 0;
}

static int rd(const sp_model *m, const char *name, int ndim, int64_t s0, int64_t s1, float *dst) {
    int64_t shape[2] = {s0, s1};
    return sp_ckpt_read_f32(m->ckpt, name, ndim, shape, dst);
}

int sp_model_load_layer(const sp_model *m, int64_t l, sp_layer_buf *b) {
    const sp_config *c = &m->cfg;
    char nm[256];
    int64_t di, dm, dout, hq = c->n_heads * c->head_dim, hkv = c->n_kv_heads * c->head_dim, F = c->intermediate_size;
    sp_model_widths(m, l, &di, &dm, &dout);
    sp_layer_w *w = &b->w;
    memset(w, 0, sizeof *w);
    w->d_in = di;
    w->d_mid = dm;
    w->d_out = dout;
    if (c->sliced) {
        SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "attn_shortcut_Q"), 2, di, dm, b->attn_sc));
        SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "mlp_shortcut_Q"), 2, dm, dout, b->mlp_sc));
        w->attn_shortcut = b->attn_sc;
        w->mlp_shortcut = b->mlp_sc;
    } else {
        SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "input_layernorm.weight"), 1, di, 0, b->attn_norm));
        SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "post_attention_layernorm.weight"), 1, dm, 0, b->mlp_norm));
        w->attn_norm = b->attn_norm;
        w->mlp_norm = b->mlp_norm;
    }
    SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "self_attn.q_proj.weight"), 2, hq, di, b->wq));
    SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "self_attn.k_proj.weight"), 2, hkv, di, b->wk));
    SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "self_attn.v_proj.weight"), 2, hkv, di, b->wv));
    SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "self_attn.o_proj.weight"), 2, dm, hq, b->wo));
    SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "mlp.gate_proj.weight"), 2, F, dm, b->w_gate));
    SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "mlp.up_proj.weight"), 2, F, dm, b->w_up));
    SP_TRY(rd(m, sp_layer_tensor_name(nm, l, "mlp.down_proj.weight"), 2, dout, F, b->w_down));
    w->wq = b->wq;
    w->wk = b->wk;
    w->wv = b->wv;
    w->wo = b->wo;
    w->w_gate = b->w_gate;
    w->w_up = b->w_up;
    w->w_down = b->w_down;
    return 0;
}

int sp_model_load_embed(const sp_model *m, float *emb) {
    return rd(m, "model.embed_tokens.weight", 2, m->cfg.vocab_size, m->d_embed, emb);
}

int sp_model_load_head(const sp_model *m, float *w_head, float *norm, int *has_norm) {
    const char *hn = m->has_lm_head ? "lm_head.weight" : "model.embed_tokens.weight";
    SP_TRY(rd(m, hn, 2, m->cfg.vocab_size, m->d_final, w_head));
    *has_norm = !m->cfg.sliced;
    if (*has_norm) SP_TRY(rd(m, "model.norm.weight", 1, m->d_final, 0, norm));
    return 0;
}

int sp_model_set_threads(const sp_model *m, int64_t requested) {
    int n = requested > 0 ? (int)requested : m->cfg.hidden_size < 512 ? 1 : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    openblas_set_num_threads(n);
    return n;
}
