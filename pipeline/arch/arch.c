/* pipeline/arch/arch.c — what every family's table shares: lookup, shapes, names
 * and the order of a sliced layer's outputs (arch.h). Names no tensor. */
#include "arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* The one list of families, in the registry's order: adding one is its
 * pipeline/arch/arch_<family>.c, defining sp_arch_<family>, and its name here
 * (docs/pipeline.md §9). */
#define SP_FAMILIES(X) X(llama) X(mistral) X(qwen2) X(qwen3) X(phi3) X(gemma) X(opt) X(phi)

#define SP_FAMILY_DECLARE(f) extern const sp_arch sp_arch_##f;
SP_FAMILIES(SP_FAMILY_DECLARE)
#define SP_FAMILY_ENTRY(f) &sp_arch_##f,
static const sp_arch *const families[] = {SP_FAMILIES(SP_FAMILY_ENTRY)};

int sp_arch_count(void) { return (int)(sizeof families / sizeof families[0]); }

const sp_arch *sp_arch_at(int i) {
    SP_ASSERT(i >= 0 && i < sp_arch_count());
    return families[i];
}

const char *sp_arch_names(char *buf, size_t n, int (*keep)(const sp_arch *a), const char *quote, const char *sep,
                          const char *last) {
    int total = 0, k = 0;
    for (int i = 0; i < sp_arch_count(); i++) total += !keep || keep(families[i]);
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < sp_arch_count() && len < n; i++)
        if (!keep || keep(families[i])) {
            len += (size_t)snprintf(buf + len, n - len, "%s%s%s%s", k ? (k + 1 == total ? last : sep) : "", quote,
                                    families[i]->model_type, quote);
            k++;
        }
    return buf;
}

int sp_arch_find(const char *model_type, const char *config_path, const sp_arch **out) {
    const char *mt = model_type ? model_type : "llama";
    for (int i = 0; i < sp_arch_count(); i++)
        if (strcmp(families[i]->model_type, mt) == 0) {
            *out = families[i];
            return 0;
        }
    char known[512];
    *out = NULL;
    return sp_fail(SP_EX_DATAERR, "%s: field 'model_type': '%.32s' is not supported (supported: %s)", config_path, mt,
                   sp_arch_names(known, sizeof known, NULL, "'", ", ", ", "));
}

/* The instance: the family struct, then its filtered table, in one block. */
typedef struct arch_inst {
    sp_arch a;
    sp_arch_tensor t[SP_ARCH_LAYER_MAX];
} arch_inst;

static int cond_met(const sp_arch_tensor *t, const sp_config *cfg) {
    switch (t->cond) {
    case SP_COND_ALWAYS: return 1;
    case SP_COND_ATTN_BIAS: return cfg->attention_bias;
    case SP_COND_MLP_BIAS: return cfg->mlp_bias;
    }
    return 0;
}

int sp_arch_instance(const sp_arch *family, const sp_config *cfg, sp_arch **out) {
    *out = NULL;
    arch_inst *x = calloc(1, sizeof *x);
    if (!x) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    x->a = *family;
    int n = 0;
    SP_ASSERT(family->n_layer <= SP_ARCH_LAYER_MAX);
    for (int i = 0; i < family->n_layer; i++)
        if (cond_met(&family->layer[i], cfg)) x->t[n++] = family->layer[i];
    x->a.layer = x->t;
    x->a.n_layer = n;
    for (int i = 0; i < n; i++) { /* a bias is never present without its weight */
        enum sp_arch_slot w = sp_arch_slot_weight(x->t[i].slot);
        SP_ASSERT((x->t[i].role == SP_ROLE_BIAS) == (w != SP_SLOT_NONE));
        SP_ASSERT(w == SP_SLOT_NONE || sp_arch_slot_index(&x->a, w) >= 0);
    }
    *out = &x->a;
    return 0;
}

void sp_arch_free(sp_arch *a) { free(a); /* the instance heads its block */ }

int sp_arch_slot_index(const sp_arch *a, enum sp_arch_slot slot) {
    for (int i = 0; i < a->n_layer; i++)
        if (a->layer[i].slot == slot) return i;
    return -1;
}

int sp_arch_norm_bias_of(const sp_arch *a, enum sp_arch_pos pos) {
    for (int i = 0; i < a->n_layer; i++)
        if (a->layer[i].role == SP_ROLE_NORM_BIAS && a->layer[i].pos == pos) return i;
    return -1;
}

enum sp_arch_slot sp_arch_slot_weight(enum sp_arch_slot slot) {
    switch (slot) {
    case SP_SLOT_Q_B: return SP_SLOT_Q;
    case SP_SLOT_K_B: return SP_SLOT_K;
    case SP_SLOT_V_B: return SP_SLOT_V;
    case SP_SLOT_O_B: return SP_SLOT_O;
    case SP_SLOT_GATE_B: return SP_SLOT_GATE;
    case SP_SLOT_UP_B: return SP_SLOT_UP;
    case SP_SLOT_DOWN_B: return SP_SLOT_DOWN;
    default: return SP_SLOT_NONE; /* a new bias slot missing here trips sp_arch_instance's assert */
    }
}

int sp_arch_bias_of(const sp_arch *a, int t) {
    for (int i = 0; i < a->n_layer; i++)
        if (a->layer[i].role == SP_ROLE_BIAS && sp_arch_slot_weight(a->layer[i].slot) == a->layer[t].slot) return i;
    return -1;
}

int64_t sp_arch_dim(const sp_config *cfg, enum sp_arch_dim dim) {
    switch (dim) {
    case SP_DIM_NONE: return 0;
    case SP_DIM_D: return cfg->hidden_size;
    case SP_DIM_Q: return cfg->n_heads * cfg->head_dim;
    case SP_DIM_KV: return cfg->n_kv_heads * cfg->head_dim;
    case SP_DIM_F: return cfg->intermediate_size;
    case SP_DIM_HD: return cfg->head_dim;
    case SP_DIM_QKV: return (cfg->n_heads + 2 * cfg->n_kv_heads) * cfg->head_dim;
    case SP_DIM_F2: return 2 * cfg->intermediate_size;
    }
    SP_ASSERT(0);
    return 0;
}

const char *sp_arch_layer_name(const sp_arch *a, char buf[256], int64_t l, const char *suffix) {
    int n = snprintf(buf, 256, a->layer_prefix, (long long)l);
    SP_ASSERT(n > 0 && n < 256);
    snprintf(buf + n, (size_t)(256 - n), "%s", suffix);
    return buf;
}

int sp_arch_norm_of(const sp_arch *a, enum sp_arch_pos pos) {
    for (int i = 0; i < a->n_layer; i++)
        if (a->layer[i].role == SP_ROLE_NORM && a->layer[i].pos == pos) return i;
    return -1;
}

int sp_arch_pca_positions(const sp_arch *a, enum sp_arch_pos pos[2]) {
    if (a->parallel) {
        pos[0] = SP_POS_OUT;
        return 1;
    }
    pos[0] = SP_POS_MID;
    pos[1] = SP_POS_OUT;
    return 2;
}

/* Appends tensors of `role` at `pos`, each followed by its bias. */
static int add_role(const sp_arch *a, enum sp_arch_role role, enum sp_arch_pos pos, int phase, sp_arch_out *out, int n) {
    for (int i = 0; i < a->n_layer; i++) {
        if (a->layer[i].role != role || a->layer[i].pos != pos) continue;
        SP_ASSERT(n < SP_ARCH_LAYER_MAX);
        out[n++] = (sp_arch_out){.kind = role == SP_ROLE_READER ? SP_OUT_READER : SP_OUT_WRITER, .t = i, .pos = pos,
                                 .phase = phase};
        int b = sp_arch_bias_of(a, i);
        if (b >= 0) {
            SP_ASSERT(n < SP_ARCH_LAYER_MAX);
            out[n++] = (sp_arch_out){.kind = role == SP_ROLE_READER ? SP_OUT_COPY : SP_OUT_BIAS_ROT, .t = b, .pos = pos,
                                     .phase = phase};
        }
    }
    return n;
}

/* A stock output: the norm tensors at `pos` (γ, then a LayerNorm's β), before its readers. */
static int add_norms(const sp_arch *a, enum sp_arch_pos pos, int phase, sp_arch_out *out, int n) {
    for (int i = 0; i < a->n_layer; i++)
        if ((a->layer[i].role == SP_ROLE_NORM || a->layer[i].role == SP_ROLE_NORM_BIAS) && a->layer[i].pos == pos) {
            SP_ASSERT(n < SP_ARCH_LAYER_MAX);
            out[n++] = (sp_arch_out){.kind = SP_OUT_NORM, .t = i, .pos = pos, .phase = phase};
        }
    return n;
}

int sp_arch_layer_outputs(const sp_arch *a, int shortcuts, int norms, sp_arch_out out[SP_ARCH_LAYER_MAX]) {
    enum sp_arch_pos p[2];
    int np = sp_arch_pca_positions(a, p), n = norms ? add_norms(a, SP_POS_IN, 0, out, 0) : 0;
    n = add_role(a, SP_ROLE_READER, SP_POS_IN, 0, out, n);
    enum sp_arch_pos prev = SP_POS_IN;
    for (int k = 0; k < np; k++) {
        n = add_role(a, SP_ROLE_WRITER, p[k], 1 + k, out, n);
        SP_ASSERT(n < SP_ARCH_LAYER_MAX && a->shortcut[p[k]]);
        if (shortcuts) out[n++] = (sp_arch_out){.kind = SP_OUT_SHORTCUT, .t = -1, .pos = p[k], .from = prev, .phase = 1 + k};
        if (norms) n = add_norms(a, p[k], 1 + k, out, n);
        n = add_role(a, SP_ROLE_READER, p[k], 1 + k, out, n);
        prev = p[k];
    }
    for (int i = 0; i < a->n_layer; i++)
        if (a->layer[i].role == SP_ROLE_HEAD) {
            SP_ASSERT(n < SP_ARCH_LAYER_MAX);
            out[n++] = (sp_arch_out){.kind = SP_OUT_COPY, .t = i, .pos = SP_POS_IN, .phase = np};
        }
    return n;
}

static int64_t dim_at(const sp_config *cfg, enum sp_arch_dim d, int64_t width) {
    return d == SP_DIM_D ? width : sp_arch_dim(cfg, d);
}

void sp_arch_in_shape(const sp_arch *a, const sp_config *cfg, int t, int64_t shape[2], int *ndim) {
    const sp_arch_tensor *x = &a->layer[t];
    shape[0] = sp_arch_dim(cfg, x->rows);
    shape[1] = sp_arch_dim(cfg, x->cols);
    *ndim = x->cols == SP_DIM_NONE ? 1 : 2;
}

void sp_arch_out_tensor(const sp_arch *a, const sp_config *cfg, const sp_arch_out *o, int64_t l, const int64_t width[SP_POS_COUNT],
                        char name[256], int64_t shape[2], int *ndim) {
    if (o->kind == SP_OUT_SHORTCUT) {
        sp_arch_layer_name(a, name, l, a->shortcut[o->pos]);
        shape[0] = width[o->from];
        shape[1] = width[o->pos];
        *ndim = 2;
        return;
    }
    const sp_arch_tensor *x = &a->layer[o->t];
    sp_arch_layer_name(a, name, l, x->suffix);
    int64_t w = o->kind == SP_OUT_COPY ? cfg->hidden_size : width[o->pos];
    shape[0] = dim_at(cfg, x->rows, w);
    shape[1] = dim_at(cfg, x->cols, w);
    *ndim = x->cols == SP_DIM_NONE ? 1 : 2;
}
