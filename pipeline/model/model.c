#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "modelfile.h"

void sp_model_widths(const sp_model *m, int64_t l, int64_t *d_in, int64_t *d_mid, int64_t *d_out) {
    if (m->cfg.sliced) {
        *d_in = m->cfg.d_in[l];
        *d_mid = m->cfg.d_mid[l];
        *d_out = m->cfg.d_out[l];
    } else {
        *d_in = *d_mid = *d_out = m->cfg.hidden_size;
    }
}

/* The tensors validate() found, to tell the ones nothing consumes. */
typedef struct consumed {
    const sp_st_tensor **t; /* (cap) the tensors found, to refuse the others */
    int64_t n, cap;
    int64_t params;         /* their elements */
} consumed;

/* Checks that tensor `name` exists with the given shape and a float dtype that
 * agrees with config.json. */
static int expect(const sp_model *m, const char *name, int ndim, int64_t s0, int64_t s1, consumed *c) {
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
    SP_ASSERT(c->n < c->cap); /* each tensor is expected once */
    c->t[c->n++] = t;
    c->params += t->numel;
    return 0;
}

/* The widths of layer l's positions. */
static void widths_at(const sp_model *m, int64_t l, int64_t w[SP_POS_COUNT]) {
    sp_model_widths(m, l, &w[SP_POS_IN], &w[SP_POS_MID], &w[SP_POS_OUT]);
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (const void *const *)a, y = (uintptr_t) * (const void *const *)b;
    return x < y ? -1 : x > y;
}

/* Buffers HF keeps in some checkpoints that are derived from config.json and
 * recomputed: never weights. */
static int derived_buffer(const char *name) {
    size_t n = strlen(name), k = strlen("rotary_emb.inv_freq");
    return n >= k && strcmp(name + n - k, "rotary_emb.inv_freq") == 0;
}

/* Every tensor of the checkpoint is one the architecture table consumes: a
 * tensor slicepipe would drop (an unknown projection, a bias the config does
 * not announce) is refused, never ignored. */
static int refuse_unconsumed(const sp_model *m, consumed *c) {
    qsort(c->t, (size_t)c->n, sizeof *c->t, cmp_ptr);
    for (int i = 0; i < sp_ckpt_shard_count(m->ckpt); i++) {
        const sp_st_file *f = sp_ckpt_shard(m->ckpt, i);
        for (int k = 0; k < sp_st_count(f); k++) {
            const sp_st_tensor *t = sp_st_at(f, k);
            if (bsearch(&t, c->t, (size_t)c->n, sizeof *c->t, cmp_ptr) || derived_buffer(t->name)) continue;
            return sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is not part of a %s model as config.json describes it "
                                          "(the architecture table does not consume it; refusing rather than "
                                          "dropping it)", sp_st_path(f), t->name, m->arch->model_type);
        }
    }
    return 0;
}

static int validate_all(sp_model *m, consumed *cs);

static int validate(sp_model *m) {
    consumed c = {0};
    c.cap = sp_ckpt_tensor_count(m->ckpt);
    int rc = sp_alloc((void **)&c.t, c.cap > 0 ? c.cap : 1, (int64_t)sizeof *c.t, "tensor list");
    if (rc) return rc;
    rc = validate_all(m, &c);
    if (!rc) rc = refuse_unconsumed(m, &c);
    if (!rc) m->n_params = c.params;
    free(c.t);
    return rc;
}

static int validate_all(sp_model *m, consumed *cs) {
    const sp_config *c = &m->cfg;
    const sp_arch *a = m->arch;
    char nm[256];
    int64_t shape[2], w[SP_POS_COUNT];
    int nd;
    sp_arch_out outs[SP_ARCH_LAYER_MAX];
    const int n_out = sp_arch_layer_outputs(a, 1, 0, outs);
    SP_TRY(expect(m, a->embed, 2, c->vocab_size, m->d_embed, cs));
    for (int64_t l = 0; l < c->n_layers; l++) {
        if (!c->sliced) {
            for (int t = 0; t < a->n_layer; t++) {
                sp_arch_in_shape(a, c, t, shape, &nd);
                SP_TRY(expect(m, sp_arch_layer_name(a, nm, l, a->layer[t].suffix), nd, shape[0], shape[1], cs));
            }
            continue;
        }
        widths_at(m, l, w);
        for (int k = 0; k < n_out; k++) {
            sp_arch_out_tensor(a, c, &outs[k], l, w, nm, shape, &nd);
            SP_TRY(expect(m, nm, nd, shape[0], shape[1], cs));
        }
    }
    if (a->pos_embed) SP_TRY(expect(m, a->pos_embed, 2, m->n_pos, m->d_embed, cs));
    if (!c->sliced) SP_TRY(expect(m, a->final_norm, 1, c->hidden_size, 0, cs));
    if (!c->sliced && a->final_norm_bias) SP_TRY(expect(m, a->final_norm_bias, 1, c->hidden_size, 0, cs));
    if (m->has_head) SP_TRY(expect(m, a->head, 2, c->vocab_size, m->d_final, cs));
    if (m->has_head_bias) SP_TRY(expect(m, a->head_bias, 1, c->vocab_size, 0, cs));
    return 0;
}

const char *const sp_model_side_files[SP_MODEL_N_SIDE] = {
    "tokenizer.bin",           "tokenizer.json",         "tokenizer.model", "tokenizer_config.json",
    "special_tokens_map.json", "generation_config.json", "LICENSE"};

/* Every side file by the model folder's link rule, and small enough to copy. */
static int check_side_files(const char *dir) {
    for (int i = 0; i < SP_MODEL_N_SIDE; i++) {
        char *p;
        int present;
        struct stat st;
        SP_TRY(sp_path_join(dir, sp_model_side_files[i], &p));
        int rc = sp_modelfile_check(dir, p, &present);
        if (!rc && present && stat(p, &st) == 0 && (int64_t)st.st_size > SP_MODEL_SIDE_BYTES_MAX)
            rc = sp_fail(SP_EX_DATAERR, "%s: %lld bytes, larger than the %lld allowed for a file beside the model", p,
                         (long long)st.st_size, (long long)SP_MODEL_SIDE_BYTES_MAX);
        free(p);
        SP_TRY(rc);
    }
    return 0;
}

int sp_model_open(const char *dir, sp_model *m) {
    memset(m, 0, sizeof *m);
    m->dir = strdup(dir);
    if (!m->dir) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    int rc = sp_config_load(dir, &m->cfg);
    if (!rc) rc = check_side_files(dir);
    if (rc) {
        sp_model_close(m);
        return rc;
    }
    const sp_config *c = &m->cfg;
    m->arch = c->arch;
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
        .rope_linear = c->rope_linear,
        .rot_dim = c->rot_dim,
        .window = c->sliding_window,
        .act = (enum sp_bk_act)c->act,
    };
    m->d_embed = c->sliced ? c->d_embed : c->hidden_size;
    m->d_final = c->sliced ? c->d_out[c->n_layers - 1] : c->hidden_size;
    m->has_head = sp_ckpt_find(m->ckpt, m->arch->head, NULL) != NULL;
    m->has_head_bias = m->arch->head_bias && sp_ckpt_find(m->ckpt, m->arch->head_bias, NULL) != NULL;
    m->n_pos = m->arch->pos_embed ? c->max_pos + m->arch->pos_offset : 0;
    if (c->sliced && !m->has_head) {
        rc = sp_fail(SP_EX_DATAERR, "%s: sliced model has no %s (its head is never tied)", dir, m->arch->head);
        sp_model_close(m);
        return rc;
    }
    /* tied with a head tensor too: allowed by HF; the separate tensor wins, as in transformers. */
    if (!c->sliced && !c->tie_word_embeddings && !m->has_head) {
        rc = sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is missing and tie_word_embeddings is false", dir, m->arch->head);
        sp_model_close(m);
        return rc;
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

int sp_model_add_inputs(const sp_model *m, sp_io_paths **taken) {
    static const char *const meta[] = {"config.json", "model.safetensors.index.json"};
    for (int i = 0; i < 2 + SP_MODEL_N_SIDE; i++) {
        char *p;
        struct stat st;
        SP_TRY(sp_path_join(m->dir, i < 2 ? meta[i] : sp_model_side_files[i - 2], &p));
        int rc = stat(p, &st) == 0 ? sp_io_paths_add(taken, p, 0) : 0;
        free(p);
        SP_TRY(rc);
    }
    for (int i = 0; i < sp_ckpt_shard_count(m->ckpt); i++) SP_TRY(sp_io_paths_add(taken, sp_st_path(sp_ckpt_shard(m->ckpt, i)), 0));
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
    const sp_arch *a = m->arch;
    int64_t D = m->cfg.hidden_size, n = m->cfg.sliced ? 2 * D * D : 0; /* shortcuts: sliced models only */
    for (int t = 0; t < a->n_layer; t++) {
        int64_t shape[2];
        int nd;
        sp_arch_in_shape(a, &m->cfg, t, shape, &nd);
        n += nd == 1 ? shape[0] : shape[0] * shape[1];
    }
    return 4 * n;
}

void sp_layer_buf_free(sp_layer_buf *b) {
    if (!b) return;
    for (int i = 0; i < SP_ARCH_LAYER_MAX; i++) free(b->t[i]);
    for (int i = 0; i < SP_POS_COUNT; i++) free(b->sc[i]);
    memset(b, 0, sizeof *b);
}

int sp_layer_buf_init(const sp_model *m, sp_layer_buf *b) {
    memset(b, 0, sizeof *b);
    const sp_arch *a = m->arch;
    const int64_t D = m->cfg.hidden_size;
    int rc = 0;
    for (int t = 0; t < a->n_layer && !rc; t++) {
        int64_t shape[2];
        int nd;
        sp_arch_in_shape(a, &m->cfg, t, shape, &nd);
        rc = sp_alloc((void **)&b->t[t], shape[0], (nd == 1 ? 1 : shape[1]) * (int64_t)sizeof(float), "layer weights");
    }
    if (m->cfg.sliced)
        for (int p = SP_POS_MID; p < SP_POS_COUNT && !rc; p++)
            if (a->shortcut[p]) rc = sp_alloc((void **)&b->sc[p], D * D, sizeof(float), "shortcut");
    if (rc) sp_layer_buf_free(b);
    return rc;
}

sp_layer_w sp_layer_view(const sp_model *m, float *const t[], float *const sc[], int64_t d_in, int64_t d_mid, int64_t d_out,
                         int norms) {
    const sp_arch *a = m->arch;
    sp_layer_w w = {.d_in = d_in, .d_mid = d_mid, .d_out = d_out, .norm = norms ? a->norm : SP_BK_NORM_RMS};
    for (int i = 0; i < a->n_layer; i++)
        if ((a->layer[i].role != SP_ROLE_NORM && a->layer[i].role != SP_ROLE_NORM_BIAS) || norms)
            w.slot[a->layer[i].slot] = t[i];
    for (int p = 0; p < SP_POS_COUNT && sc; p++) w.shortcut[p] = sc[p];
    return w;
}

static int rd(const sp_model *m, const char *name, int ndim, int64_t s0, int64_t s1, float *dst) {
    int64_t shape[2] = {s0, s1};
    return sp_ckpt_read_f32(m->ckpt, name, ndim, shape, dst);
}

int sp_model_load_layer(const sp_model *m, int64_t l, sp_layer_buf *b) {
    const sp_config *c = &m->cfg;
    const sp_arch *a = m->arch;
    char nm[256];
    int64_t w[SP_POS_COUNT], shape[2];
    int nd;
    widths_at(m, l, w);
    if (c->sliced) {
        sp_arch_out outs[SP_ARCH_LAYER_MAX];
        const int n_out = sp_arch_layer_outputs(a, 1, 0, outs);
        for (int k = 0; k < n_out; k++) {
            sp_arch_out_tensor(a, c, &outs[k], l, w, nm, shape, &nd);
            SP_TRY(rd(m, nm, nd, shape[0], shape[1], outs[k].kind == SP_OUT_SHORTCUT ? b->sc[outs[k].pos] : b->t[outs[k].t]));
        }
    } else {
        for (int t = 0; t < a->n_layer; t++) {
            sp_arch_in_shape(a, c, t, shape, &nd);
            SP_TRY(rd(m, sp_arch_layer_name(a, nm, l, a->layer[t].suffix), nd, shape[0], shape[1], b->t[t]));
            if (a->layer[t].role == SP_ROLE_NORM) sp_model_norm_weight(m, b->t[t], shape[0]);
        }
    }
    b->w = sp_layer_view(m, b->t, c->sliced ? b->sc : NULL, w[SP_POS_IN], w[SP_POS_MID], w[SP_POS_OUT], !c->sliced);
    return 0;
}

void sp_model_norm_weight(const sp_model *m, float *g, int64_t n) {
    if (!m->arch->norm_plus_one) return;
    for (int64_t i = 0; i < n; i++) g[i] = 1.0f + g[i];
}

float sp_embed_scale(int64_t width, sp_dtype dt) {
    /* HF: torch.tensor(hidden_size ** 0.5, dtype=the model dtype) */
    float s = (float)sqrt((double)width), r;
    unsigned char buf[4];
    if (dt == SP_DTYPE_F32) return s;
    sp_convert_from_f32(dt, &s, 1, buf);
    sp_convert_to_f32(dt, buf, 1, &r);
    return r;
}

float sp_model_embed_scale(const sp_model *m) {
    if (!m->arch->embed_scale_sqrt_d) return 1.0f;
    return sp_embed_scale(m->cfg.hidden_size, m->cfg.torch_dtype);
}

void sp_model_embed_rows(const sp_model *m, const float *emb, const float *pos, const int32_t *ids, int64_t n, int64_t p0,
                         float *dst) {
    const int64_t width = m->d_embed;
    const float scale = m->cfg.sliced ? 1.0f : sp_model_embed_scale(m); /* a sliced model has it baked in */
    for (int64_t i = 0; i < n; i++, dst += width) {
        memcpy(dst, emb + (int64_t)ids[i] * width, (size_t)width * 4);
        if (scale != 1.0f)
            for (int64_t e = 0; e < width; e++) dst[e] *= scale;
        if (m->n_pos) {
            const float *p = pos + (p0 + i + m->arch->pos_offset) * width;
            for (int64_t e = 0; e < width; e++) dst[e] += p[e];
        }
    }
}

int64_t sp_model_positions(const sp_model *m) { return m->n_pos ? m->n_pos - m->arch->pos_offset : m->cfg.max_pos; }

int sp_model_check_positions(const sp_model *m, int64_t n, const char *subject, const char *verb, const char *warn_subject) {
    const int64_t p = sp_model_positions(m);
    if (m->n_pos && n > p)
        return sp_fail(SP_EX_USAGE, "%s %s the model's %lld learned positions (max_position_embeddings)", subject, verb,
                       (long long)p);
    if (!m->n_pos && p > 0 && n > p && warn_subject)
        fprintf(stderr, "slicepipe: warning: %s is longer than the model's max_position_embeddings %lld; RoPE positions past it "
                        "were never trained\n", warn_subject, (long long)p);
    return 0;
}

int sp_model_load_embed(const sp_model *m, float *emb, float *pos) {
    SP_TRY(rd(m, m->arch->embed, 2, m->cfg.vocab_size, m->d_embed, emb));
    if (m->arch->pos_embed) SP_TRY(rd(m, m->arch->pos_embed, 2, m->n_pos, m->d_embed, pos));
    return 0;
}

int sp_model_load_head(const sp_model *m, sp_head *h) {
    const sp_arch *a = m->arch;
    const char *hn = m->has_head ? a->head : a->embed;
    SP_TRY(rd(m, hn, 2, m->cfg.vocab_size, m->d_final, h->w));
    h->kind = m->cfg.sliced ? SP_BK_NORM_RMS : a->norm;
    h->has_norm = !m->cfg.sliced;
    h->has_norm_b = !m->cfg.sliced && a->final_norm_bias;
    h->has_b = m->has_head_bias;
    if (h->has_norm) {
        SP_TRY(rd(m, a->final_norm, 1, m->d_final, 0, h->norm));
        sp_model_norm_weight(m, h->norm, m->d_final);
    }
    if (h->has_norm_b) SP_TRY(rd(m, a->final_norm_bias, 1, m->d_final, 0, h->norm_b));
    if (h->has_b) SP_TRY(rd(m, a->head_bias, 1, m->cfg.vocab_size, 0, h->b));
    return 0;
}
