/* pipeline/arch/config.c — config.json of every family in the architecture table
 * (pipeline/arch/arch.h), parsed with cJSON. The common keys are read here, the
 * family's own key names come from its table, and its hook reads the rest.
 *
 * The file is untrusted: every field is type-checked (integers must be JSON
 * numbers with an integral value, not booleans or strings), range-checked
 * against fixed caps before anything is sized from it. The text is read by
 * the one strict JSON reader (io/base/json.h): one object, no trailing garbage,
 * no key twice at any level.
 * Optional fields that are JSON null take their default.
 * Every error is 65: "<dir>/config.json: field 'x': reason".
 */
#include "config.h"

#include "arch.h"
#include "error.h"
#include "fileio.h"
#include "json.h"
#include "modelfile.h"
#include "tokenizer.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_BYTES_MAX (16LL << 20)

#define HIDDEN_MAX 65536
#define HEADS_MAX 1024
#define HEAD_DIM_MAX 4096
#define INTERMEDIATE_MAX 1000000

/* Optional field: absent or null -> *out = NULL (keys are unique: io/base/json.h
 * refused duplicates). */
static int opt_field(const char *path, const char *what, const cJSON *obj, const char *name, const cJSON **out) {
    (void)path, (void)what;
    *out = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (*out && cJSON_IsNull(*out)) *out = NULL;
    return 0;
}

/* An integral JSON number in [lo, hi]. `prefix`+`name` is the field as named
 * in messages (prefix is "" or e.g. "slicepipe.layers[3]."). */
static int get_int(const char *path, const char *prefix, const cJSON *obj, const char *name, int required,
                   int64_t def, int64_t lo, int64_t hi, int64_t *out) {
    const cJSON *it;
    SP_TRY(opt_field(path, prefix, obj, name, &it));
    if (!it) {
        if (required) return sp_fail(SP_EX_DATAERR, "%s: field '%s%s': missing", path, prefix, name);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(it)) return sp_fail(SP_EX_DATAERR, "%s: field '%s%s': must be an integer", path, prefix, name);
    double v = it->valuedouble;
    if (!isfinite(v) || v != floor(v))
        return sp_fail(SP_EX_DATAERR, "%s: field '%s%s': must be an integer, got %g", path, prefix, name, v);
    if (v < (double)lo || v > (double)hi)
        return sp_fail(SP_EX_DATAERR, "%s: field '%s%s': %.17g is out of range [%lld, %lld]", path, prefix, name, v,
                       (long long)lo, (long long)hi);
    *out = (int64_t)v;
    return 0;
}

/* A finite JSON number in (lo, hi) if lo_open, else in [lo, hi). */
static int get_num(const char *path, const char *prefix, const cJSON *obj, const char *name, int required, double def,
                   double lo, int lo_open, double hi, double *out) {
    const cJSON *it;
    SP_TRY(opt_field(path, prefix, obj, name, &it));
    if (!it) {
        if (required) return sp_fail(SP_EX_DATAERR, "%s: field '%s%s': missing", path, prefix, name);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(it)) return sp_fail(SP_EX_DATAERR, "%s: field '%s%s': must be a number", path, prefix, name);
    double v = it->valuedouble;
    if (!isfinite(v) || (lo_open ? !(v > lo) : !(v >= lo)) || !(v < hi))
        return sp_fail(SP_EX_DATAERR, "%s: field '%s%s': %g is out of range %c%g, %g)", path, prefix, name, v,
                       lo_open ? '(' : '[', lo, hi);
    *out = v;
    return 0;
}

/* An optional JSON string; *out = NULL when absent or null. */
static int get_str(const char *path, const cJSON *obj, const char *name, const char **out) {
    const cJSON *it;
    *out = NULL;
    SP_TRY(opt_field(path, "", obj, name, &it));
    if (!it) return 0;
    if (!cJSON_IsString(it)) return sp_fail(SP_EX_DATAERR, "%s: field '%s': must be a string", path, name);
    *out = it->valuestring;
    return 0;
}

static sp_dtype dtype_from_hf(const char *s) {
    if (strcmp(s, "float32") == 0) return SP_DTYPE_F32;
    if (strcmp(s, "float16") == 0) return SP_DTYPE_F16;
    if (strcmp(s, "bfloat16") == 0) return SP_DTYPE_BF16;
    return SP_DTYPE_INVALID;
}

static int parse_dtype(const char *path, const cJSON *root, sp_config *cfg) {
    /* transformers >= 4.56 writes "dtype"; older versions "torch_dtype". */
    const char *td, *d;
    SP_TRY(get_str(path, root, "torch_dtype", &td));
    SP_TRY(get_str(path, root, "dtype", &d));
    const char *name = td ? "torch_dtype" : "dtype", *s = td ? td : d;
    if (td && d && strcmp(td, d) != 0)
        return sp_fail(SP_EX_DATAERR, "%s: field 'dtype': '%.32s' contradicts torch_dtype '%.32s'", path, d, td);
    cfg->torch_dtype = SP_DTYPE_F32;
    if (!s) return 0;
    cfg->torch_dtype = dtype_from_hf(s);
    if (cfg->torch_dtype == SP_DTYPE_INVALID)
        return sp_fail(SP_EX_DATAERR, "%s: field '%s': unsupported dtype '%.32s' (float32, float16 or bfloat16)", path,
                       name, s);
    return 0;
}

static int parse_rope_scaling(const char *path, const cJSON *root, sp_config *cfg) {
    const cJSON *rs;
    SP_TRY(opt_field(path, "", root, "rope_scaling", &rs));
    if (!rs) return 0;
    if (!cJSON_IsObject(rs)) return sp_fail(SP_EX_DATAERR, "%s: field 'rope_scaling': must be an object or null", path);
    const cJSON *rt, *t;
    SP_TRY(opt_field(path, "rope_scaling.", rs, "rope_type", &rt));
    SP_TRY(opt_field(path, "rope_scaling.", rs, "type", &t));
    const cJSON *ty = rt ? rt : t;
    const char *tname = rt ? "rope_scaling.rope_type" : "rope_scaling.type";
    if (!ty) return sp_fail(SP_EX_DATAERR, "%s: field 'rope_scaling.rope_type': missing", path);
    if (!cJSON_IsString(ty)) return sp_fail(SP_EX_DATAERR, "%s: field '%s': must be a string", path, tname);
    if (rt && t && (!cJSON_IsString(t) || strcmp(t->valuestring, rt->valuestring) != 0))
        return sp_fail(SP_EX_DATAERR, "%s: field 'rope_scaling.type': contradicts rope_type", path);
    const char *type = ty->valuestring;
    if (strcmp(type, "default") == 0) return 0; /* HF's spelling of "no scaling" */
    const char *px = "rope_scaling.";
    if (strcmp(type, "linear") == 0) /* positions divided by factor: inv_freq / factor */
        return get_num(path, px, rs, "factor", 1, 0, 0, 1, 1e6, &cfg->rope_linear);
    if (strcmp(type, "llama3") != 0)
        return sp_fail(SP_EX_DATAERR, "%s: field '%s': unsupported rope_scaling type '%.32s' (supported: 'linear', "
                                      "'llama3')", path, tname, type);
    SP_TRY(get_num(path, px, rs, "factor", 1, 0, 0, 1, 1e6, &cfg->rope_factor));
    SP_TRY(get_num(path, px, rs, "low_freq_factor", 1, 0, 0, 1, 1e6, &cfg->rope_low_freq_factor));
    SP_TRY(get_num(path, px, rs, "high_freq_factor", 1, 0, 0, 1, 1e6, &cfg->rope_high_freq_factor));
    SP_TRY(get_int(path, px, rs, "original_max_position_embeddings", 1, 0, 1, INT32_MAX, &cfg->rope_original_max_pos));
    /* The smoothing divides by (high - low). */
    if (!(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor))
        return sp_fail(SP_EX_DATAERR, "%s: field 'rope_scaling.high_freq_factor': %g must exceed low_freq_factor %g", path,
                       cfg->rope_high_freq_factor, cfg->rope_low_freq_factor);
    cfg->rope_llama3 = 1;
    return 0;
}

/* A per-layer sliced output's widths (model_type slicepipe_sliced). A stock
 * model_type with a slicepipe block (a basis = "global" output) is a dense
 * model: the block only records how it was made. */
static int parse_slicepipe(const char *path, const cJSON *root, sp_config *cfg) {
    const cJSON *sb;
    SP_TRY(opt_field(path, "", root, "slicepipe", &sb)); /* an object: parse_fields checked */
    const int64_t D = cfg->hidden_size, L = cfg->n_layers;
    cfg->sliced = 1;
    SP_TRY(get_num(path, "slicepipe.", sb, "sparsity", 1, 0, 0.0, 0, 1.0, &cfg->sparsity));
    SP_TRY(get_int(path, "slicepipe.", sb, "d_embed", 1, 0, 1, D, &cfg->d_embed));
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(sb, "layers");
    if (!layers) return sp_fail(SP_EX_DATAERR, "%s: field 'slicepipe.layers': missing", path);
    if (!cJSON_IsArray(layers)) return sp_fail(SP_EX_DATAERR, "%s: field 'slicepipe.layers': must be an array", path);
    int64_t n = 0;
    for (const cJSON *c = layers->child; c; c = c->next) n++;
    if (n != L)
        return sp_fail(SP_EX_DATAERR, "%s: field 'slicepipe.layers': has %lld entries, num_hidden_layers is %lld", path,
                       (long long)n, (long long)L);
    SP_TRY(sp_calloc((void **)&cfg->d_in, L, sizeof(int64_t), "config d_in"));
    SP_TRY(sp_calloc((void **)&cfg->d_mid, L, sizeof(int64_t), "config d_mid"));
    SP_TRY(sp_calloc((void **)&cfg->d_out, L, sizeof(int64_t), "config d_out"));
    int64_t l = 0;
    for (const cJSON *c = layers->child; c; c = c->next, l++) {
        char px[64];
        snprintf(px, sizeof px, "slicepipe.layers[%lld].", (long long)l);
        if (!cJSON_IsObject(c))
            return sp_fail(SP_EX_DATAERR, "%s: field 'slicepipe.layers[%lld]': must be an object", path, (long long)l);
        SP_TRY(get_int(path, px, c, "d_in", 1, 0, 1, D, &cfg->d_in[l]));
        SP_TRY(get_int(path, px, c, "d_mid", 1, 0, 1, D, &cfg->d_mid[l]));
        SP_TRY(get_int(path, px, c, "d_out", 1, 0, 1, D, &cfg->d_out[l]));
        int64_t expect = l == 0 ? cfg->d_embed : cfg->d_out[l - 1];
        if (cfg->d_in[l] != expect)
            return sp_fail(SP_EX_DATAERR, "%s: field '%sd_in': %lld does not match %s %lld", path, px,
                           (long long)cfg->d_in[l], l == 0 ? "d_embed" : "the previous layer's d_out", (long long)expect);
    }
    return 0;
}

/* Keys that mean a mixture of experts, which slicepipe does not slice. */
static int refuse_moe(const char *path, const cJSON *root) {
    static const char *keys[] = {"num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *it;
        SP_TRY(opt_field(path, "", root, keys[i], &it));
        if (it && !(cJSON_IsNumber(it) && it->valuedouble == 0))
            return sp_fail(SP_EX_DATAERR, "%s: field '%s': mixture-of-experts models are not supported (SliceGPT "
                                          "slices dense models)", path, keys[i]);
    }
    return 0;
}

static int parse_act(const char *path, const cJSON *root, const sp_arch *a, sp_config *cfg) {
    const char *v;
    SP_TRY(get_str(path, root, a->act_key, &v));
    if (!v) v = a->act_default;
    for (int i = 0; a->act_names[i]; i++)
        if (strcmp(a->act_names[i], v) == 0) {
            cfg->act = (int)a->acts[i];
            return 0;
        }
    char known[256] = "";
    size_t n = 0;
    for (int i = 0; a->act_names[i] && n < sizeof known; i++)
        n += (size_t)snprintf(known + n, sizeof known - n, "%s'%s'", i ? ", " : "", a->act_names[i]);
    return sp_fail(SP_EX_DATAERR, "%s: field '%s': '%.32s' is not supported for %s (supported: %s)", path, a->act_key, v,
                   a->model_type, known);
}

static int parse_window(const char *path, const cJSON *root, const sp_arch *a, sp_config *cfg) {
    const cJSON *use, *sw;
    SP_TRY(opt_field(path, "", root, "use_sliding_window", &use));
    SP_TRY(opt_field(path, "", root, "sliding_window", &sw));
    if (use && !cJSON_IsBool(use)) return sp_fail(SP_EX_DATAERR, "%s: field 'use_sliding_window': must be true or false", path);
    if (use && cJSON_IsFalse(use)) return 0; /* Qwen2: the window is off, whatever sliding_window says */
    if (!sw) return 0;
    if (!a->window_key)
        return sp_fail(SP_EX_DATAERR, "%s: field 'sliding_window': %s has no sliding-window attention in slicepipe",
                       path, a->model_type);
    if (use) /* use_sliding_window true: Qwen2's per-layer windows (max_window_layers) */
        return sp_fail(SP_EX_DATAERR, "%s: field 'use_sliding_window': true is not supported (per-layer windows)", path);
    return get_int(path, "", root, "sliding_window", 0, 0, 1, INT32_MAX, &cfg->sliding_window);
}

static int parse_fields(const char *path, const cJSON *root, sp_config *cfg) {
    const char *mt;
    SP_TRY(get_str(path, root, "model_type", &mt));
    const int sliced = mt && strcmp(mt, SP_SLICED_MODEL_TYPE) == 0;
    if (sliced) { /* a per-layer sliced output: its family is in the slicepipe block */
        const cJSON *sb;
        SP_TRY(opt_field(path, "", root, "slicepipe", &sb));
        if (!sb || !cJSON_IsObject(sb))
            return sp_fail(SP_EX_DATAERR, "%s: field 'model_type': '%s' without a slicepipe block", path, mt);
        SP_TRY(get_str(path, sb, "base_model_type", &mt));
        if (!mt) return sp_fail(SP_EX_DATAERR, "%s: field 'slicepipe.base_model_type': missing", path);
    }
    SP_TRY(sp_arch_find(mt, path, &cfg->family)); /* the architecture table decides which families exist */
    const sp_arch *a = cfg->family;
    SP_TRY(refuse_moe(path, root));
    SP_TRY(get_int(path, "", root, "hidden_size", 1, 0, 1, HIDDEN_MAX, &cfg->hidden_size));
    SP_TRY(get_int(path, "", root, a->ffn_key, 1, 0, 1, INTERMEDIATE_MAX, &cfg->intermediate_size));
    SP_TRY(get_int(path, "", root, "num_hidden_layers", 1, 0, 1, SP_MAX_LAYERS, &cfg->n_layers));
    SP_TRY(get_int(path, "", root, "num_attention_heads", 1, 0, 1, HEADS_MAX, &cfg->n_heads));
    SP_TRY(get_int(path, "", root, "num_key_value_heads", 0, cfg->n_heads, 1, HEADS_MAX, &cfg->n_kv_heads));
    if (cfg->n_heads % cfg->n_kv_heads != 0)
        return sp_fail(SP_EX_DATAERR, "%s: field 'num_key_value_heads': %lld does not divide num_attention_heads %lld",
                       path, (long long)cfg->n_kv_heads, (long long)cfg->n_heads);
    const cJSON *hd;
    SP_TRY(opt_field(path, "", root, "head_dim", &hd));
    if (!hd && cfg->hidden_size % cfg->n_heads != 0)
        return sp_fail(SP_EX_DATAERR,
                       "%s: field 'head_dim': absent, and num_attention_heads %lld does not divide hidden_size %lld",
                       path, (long long)cfg->n_heads, (long long)cfg->hidden_size);
    SP_TRY(get_int(path, "", root, "head_dim", 0, cfg->hidden_size / cfg->n_heads, 1, HEAD_DIM_MAX, &cfg->head_dim));
    if (cfg->head_dim % 2 != 0 && !a->pos_embed)
        return sp_fail(SP_EX_DATAERR, "%s: field 'head_dim': %lld must be even (RoPE rotates halves)", path,
                       (long long)cfg->head_dim);
    SP_TRY(get_int(path, "", root, "vocab_size", 1, 0, 1, SP_TOK_VOCAB_MAX, &cfg->vocab_size));
    if (a->eps_key) SP_TRY(get_num(path, "", root, a->eps_key, 0, a->eps_default, 0.0, 1, 1.0, &cfg->rms_norm_eps));
    else cfg->rms_norm_eps = a->eps_default;
    SP_TRY(get_num(path, "", root, "rope_theta", 0, 10000.0, 0.0, 1, 1e12, &cfg->rope_theta));
    SP_TRY(get_int(path, "", root, "max_position_embeddings", 0, 0, 1, INT32_MAX, &cfg->max_pos));
    const cJSON *tie;
    SP_TRY(opt_field(path, "", root, "tie_word_embeddings", &tie));
    if (tie && !cJSON_IsBool(tie))
        return sp_fail(SP_EX_DATAERR, "%s: field 'tie_word_embeddings': must be true or false", path);
    cfg->tie_word_embeddings = tie ? cJSON_IsTrue(tie) : a->tie_default;
    SP_TRY(sp_cfg_bool(path, root, "attention_bias", 0, &cfg->attention_bias));
    SP_TRY(sp_cfg_bool(path, root, "mlp_bias", 0, &cfg->mlp_bias));
    SP_TRY(parse_act(path, root, a, cfg));
    SP_TRY(parse_window(path, root, a, cfg));
    cfg->rot_dim = cfg->head_dim;
    if (a->partial_rotary) {
        double f;
        SP_TRY(get_num(path, "", root, "partial_rotary_factor", 0, 1.0, 0.0, 1, nextafter(1.0, 2.0), &f)); /* (0, 1] */
        cfg->rot_dim = (int64_t)((double)cfg->head_dim * f); /* HF: int(head_dim * partial_rotary_factor) */
        if (cfg->rot_dim < 2 || cfg->rot_dim % 2)
            return sp_fail(SP_EX_DATAERR, "%s: field 'partial_rotary_factor': %g gives %lld rotary dimensions of head_dim "
                                          "%lld (must be even and at least 2)", path, f, (long long)cfg->rot_dim,
                           (long long)cfg->head_dim);
    } else {
        const cJSON *prf;
        SP_TRY(opt_field(path, "", root, "partial_rotary_factor", &prf));
        if (prf && !(cJSON_IsNumber(prf) && prf->valuedouble == 1.0))
            return sp_fail(SP_EX_DATAERR, "%s: field 'partial_rotary_factor': %s rotates whole heads in slicepipe", path,
                           a->model_type);
    }
    SP_TRY(parse_dtype(path, root, cfg));
    SP_TRY(parse_rope_scaling(path, root, cfg));
    if (a->config) SP_TRY(a->config(path, root, cfg));
    if (sliced) SP_TRY(parse_slicepipe(path, root, cfg));
    return sp_arch_instance(a, cfg, &cfg->arch);
}

int sp_cfg_int(const char *path, const cJSON *obj, const char *name, int required, int64_t def, int64_t lo, int64_t hi,
               int64_t *out) {
    return get_int(path, "", obj, name, required, def, lo, hi, out);
}

int sp_cfg_num(const char *path, const cJSON *obj, const char *name, int required, double def, double lo, int lo_open,
               double hi, double *out) {
    return get_num(path, "", obj, name, required, def, lo, lo_open, hi, out);
}

int sp_cfg_bool(const char *path, const cJSON *obj, const char *name, int def, int *out) {
    const cJSON *it;
    SP_TRY(opt_field(path, "", obj, name, &it));
    if (!it) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(it)) return sp_fail(SP_EX_DATAERR, "%s: field '%s': must be true or false", path, name);
    *out = cJSON_IsTrue(it);
    return 0;
}

int sp_cfg_str(const char *path, const cJSON *obj, const char *name, const char **out) { return get_str(path, obj, name, out); }

static int parse(const char *path, const char *text, int64_t len, sp_config *cfg) {
    cJSON *root;
    SP_TRY(sp_json_parse(path, NULL, text, len, 0, &root)); /* the one strict reader: keys unique */
    int rc;
    if (!cJSON_IsObject(root))
        rc = sp_fail(SP_EX_DATAERR, "%s: the top level must be a JSON object", path);
    else
        rc = parse_fields(path, root, cfg);
    cJSON_Delete(root);
    return rc;
}

int sp_config_load(const char *dir, sp_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    size_t n = strlen(dir) + sizeof "/config.json";
    char *path = malloc(n);
    if (!path) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", dir);
    snprintf(path, n, "%s/config.json", dir);
    int64_t len;
    int present;
    int rc = sp_modelfile_check(dir, path, &present); /* the model folder's link rule */
    if (!rc && !present) rc = sp_fail(SP_EX_NOINPUT, "%s: no such file", path);
    if (!rc) rc = sp_io_read_small(path, CONFIG_BYTES_MAX, &cfg->raw_json, &len);
    if (!rc) rc = parse(path, cfg->raw_json, len, cfg);
    free(path);
    if (rc) sp_config_free(cfg);
    return rc;
}

void sp_config_free(sp_config *cfg) {
    if (!cfg) return;
    free(cfg->d_in);
    free(cfg->d_mid);
    free(cfg->d_out);
    free(cfg->raw_json);
    sp_arch_free(cfg->arch);
    memset(cfg, 0, sizeof *cfg);
}
