/* tests/test_config_tokens.c — config.json (pipeline/arch/config.c) and .npy token
 * streams (io/formats/tokens.c).
 *
 * Config: a hand-written valid Llama config with every field checked, the
 * defaults, each invalid field (65 naming the field), rope_scaling llama3
 * accepted and 'yarn' refused, the slicepipe block; the shared stories260k
 * config when ../shared is there.
 * Tokens: .npy files of each dtype and version written byte by byte here,
 * and independently by numpy (when python3 with numpy is available), read
 * back and checked; hand-made corrupt files for every rule.
 *
 * Usage: test_config_tokens [python3] [shared_dir]
 *   python3     interpreter with numpy; "" or absent skips the numpy part
 *   shared_dir  ../shared; absent or missing skips the shared-file part */
#include "config.h"
#include "arch.h"
#include "error.h"
#include "tokens.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

static char g_dir[PATH_MAX];

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
}

static char *scratch(const char *name) {
    static char buf[4][PATH_MAX + 64];
    static int k;
    char *r = buf[k++ % 4];
    snprintf(r, sizeof buf[0], "%s/%s", g_dir, name);
    return r;
}

/* ================================================================ config */

static const char *k_base =
    "{\n"
    "  \"architectures\": [\"LlamaForCausalLM\"],\n"
    "  \"model_type\": \"llama\",\n"
    "  \"hidden_size\": 64,\n"
    "  \"intermediate_size\": 172,\n"
    "  \"num_hidden_layers\": 2,\n"
    "  \"num_attention_heads\": 8,\n"
    "  \"num_key_value_heads\": 4,\n"
    "  \"head_dim\": 8,\n"
    "  \"vocab_size\": 512,\n"
    "  \"max_position_embeddings\": 512,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_theta\": 500000.0,\n"
    "  \"tie_word_embeddings\": true,\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"rope_scaling\": null\n"
    "}\n";

/* Writes DIR/cfg/config.json: `text`. Returns the model dir. */
static const char *put_config_text(const char *text, size_t n) {
    const char *dir = scratch("cfg");
    mkdir(dir, 0755);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_bytes(path, text, n);
    return dir;
}

/* `base` with `key` set to the JSON `value` (NULL: removed), as malloc'd
 * text. `key` may be "slicepipe.x" to edit inside that object. */
static char *edit(const char *base, const char *key, const char *value) {
    cJSON *root = cJSON_Parse(base);
    if (!root) {
        fprintf(stderr, "test bug: base JSON\n");
        exit(2);
    }
    cJSON *obj = root;
    char k[128];
    snprintf(k, sizeof k, "%s", key);
    char *dot = strchr(k, '.');
    if (dot) {
        *dot = 0;
        obj = cJSON_GetObjectItemCaseSensitive(root, k);
        memmove(k, dot + 1, strlen(dot + 1) + 1);
    }
    if (!obj) {
        fprintf(stderr, "test bug: no object for %s\n", key);
        exit(2);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, k);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        if (!v) {
            fprintf(stderr, "test bug: value %s\n", value);
            exit(2);
        }
        cJSON_AddItemToObject(obj, k, v);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

/* Writes edit(base, key, value) as the config; returns the model dir. */
static const char *put_config(const char *base, const char *key, const char *value) {
    char *text = edit(base, key, value);
    const char *dir = put_config_text(text, strlen(text));
    free(text);
    return dir;
}

static void expect_config_error(const char *dir, const char *keyword, const char *what) {
    sp_config c;
    int rc = sp_config_load(dir, &c);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof want, "%s/config.json: ", dir);
    const char *msg = sp_errmsg();
    CHECK(rc == SP_EX_DATAERR, "%s: rc %d '%s'", what, rc, msg);
    CHECK(strncmp(msg, want, strlen(want)) == 0, "%s: message '%s' does not name the file", what, msg);
    CHECK(strstr(msg, keyword) != NULL, "%s: message '%s' lacks '%s'", what, msg, keyword);
    CHECK(c.raw_json == NULL && c.d_in == NULL, "%s: config not cleared", what);
    sp_config_free(&c);
}

static void test_config_valid(void) {
    sp_config c;
    const char *dir = put_config_text(k_base, strlen(k_base));
    int rc = sp_config_load(dir, &c);
    CHECK(rc == 0, "base config: rc %d '%s'", rc, sp_errmsg());
    if (rc) return;
    CHECK(c.hidden_size == 64 && c.intermediate_size == 172 && c.n_layers == 2, "sizes %lld %lld %lld",
          (long long)c.hidden_size, (long long)c.intermediate_size, (long long)c.n_layers);
    CHECK(c.n_heads == 8 && c.n_kv_heads == 4 && c.head_dim == 8, "heads %lld %lld %lld", (long long)c.n_heads,
          (long long)c.n_kv_heads, (long long)c.head_dim);
    CHECK(c.vocab_size == 512, "vocab %lld", (long long)c.vocab_size);
    CHECK(c.rms_norm_eps == 1e-5 && c.rope_theta == 500000.0, "eps %g theta %g", c.rms_norm_eps, c.rope_theta);
    CHECK(c.tie_word_embeddings == 1 && c.torch_dtype == SP_DTYPE_F16, "tie %d dtype %d", c.tie_word_embeddings,
          (int)c.torch_dtype);
    CHECK(c.rope_llama3 == 0 && c.sliced == 0 && c.d_in == NULL && c.d_mid == NULL && c.d_out == NULL, "no extras");
    CHECK(c.raw_json && strcmp(c.raw_json, k_base) == 0, "raw_json is the file's text");
    sp_config_free(&c);
    CHECK(c.raw_json == NULL, "free clears");
    sp_config_free(&c);
    sp_config_free(NULL);

    /* defaults: only the required fields */
    const char *minimal = "{\"hidden_size\": 96, \"intermediate_size\": 256, \"num_hidden_layers\": 3,"
                          " \"num_attention_heads\": 6, \"vocab_size\": 100}";
    dir = put_config_text(minimal, strlen(minimal));
    rc = sp_config_load(dir, &c);
    CHECK(rc == 0, "minimal config: rc %d '%s'", rc, sp_errmsg());
    if (!rc) {
        CHECK(c.n_kv_heads == 6, "kv default = heads: %lld", (long long)c.n_kv_heads);
        CHECK(c.head_dim == 16, "head_dim default = 96/6: %lld", (long long)c.head_dim);
        CHECK(c.rms_norm_eps == 1e-6, "eps default %g", c.rms_norm_eps);
        CHECK(c.rope_theta == 10000.0, "theta default %g", c.rope_theta);
        CHECK(c.tie_word_embeddings == 0 && c.torch_dtype == SP_DTYPE_F32, "tie/dtype defaults");
        sp_config_free(&c);
    }

    /* integral floats, nulls for optional fields, bfloat16, new "dtype" key */
    dir = put_config(k_base, "hidden_size", "64.0");
    rc = sp_config_load(dir, &c);
    CHECK(rc == 0 && c.hidden_size == 64, "64.0 is an integer: rc %d '%s'", rc, sp_errmsg());
    sp_config_free(&c);
    dir = put_config(k_base, "num_key_value_heads", "null");
    rc = sp_config_load(dir, &c);
    CHECK(rc == 0 && c.n_kv_heads == 8, "null kv heads -> default: rc %d", rc);
    sp_config_free(&c);
    dir = put_config(k_base, "torch_dtype", "\"bfloat16\"");
    rc = sp_config_load(dir, &c);
    CHECK(rc == 0 && c.torch_dtype == SP_DTYPE_BF16, "bfloat16: rc %d", rc);
    sp_config_free(&c);
    char *no_td = edit(k_base, "torch_dtype", NULL);
    dir = put_config(no_td, "dtype", "\"bfloat16\"");
    free(no_td);
    rc = sp_config_load(dir, &c);
    CHECK(rc == 0 && c.torch_dtype == SP_DTYPE_BF16, "\"dtype\" alone: rc %d '%s'", rc, sp_errmsg());
    sp_config_free(&c);
    dir = put_config(k_base, "dtype", "\"float32\"");
    expect_config_error(dir, "field 'dtype'", "dtype contradicts torch_dtype");
}

static void test_config_invalid(void) {
    static const struct {
        const char *key, *value, *keyword;
    } cases[] = {
        {"hidden_size", NULL, "field 'hidden_size': missing"},
        {"hidden_size", "\"64\"", "field 'hidden_size': must be an integer"},
        {"hidden_size", "64.5", "field 'hidden_size': must be an integer"},
        {"hidden_size", "true", "field 'hidden_size': must be an integer"},
        {"hidden_size", "0", "field 'hidden_size'"},
        {"hidden_size", "-64", "field 'hidden_size'"},
        {"hidden_size", "65537", "field 'hidden_size'"},
        {"hidden_size", "1e300", "field 'hidden_size'"},
        {"intermediate_size", "1000001", "field 'intermediate_size'"},
        {"intermediate_size", NULL, "field 'intermediate_size': missing"},
        {"num_hidden_layers", "1025", "field 'num_hidden_layers'"},
        {"num_hidden_layers", "0", "field 'num_hidden_layers'"},
        {"num_attention_heads", "1025", "field 'num_attention_heads'"},
        {"num_attention_heads", NULL, "field 'num_attention_heads': missing"},
        {"num_key_value_heads", "3", "field 'num_key_value_heads': 3 does not divide"},
        {"num_key_value_heads", "0", "field 'num_key_value_heads'"},
        {"head_dim", "7", "field 'head_dim': 7 must be even"},
        {"head_dim", "0", "field 'head_dim'"},
        {"head_dim", "8192", "field 'head_dim'"},
        {"vocab_size", "4000001", "field 'vocab_size'"},
        {"vocab_size", "0", "field 'vocab_size'"},
        {"rms_norm_eps", "0", "field 'rms_norm_eps'"},
        {"rms_norm_eps", "-1e-5", "field 'rms_norm_eps'"},
        {"rms_norm_eps", "\"1e-5\"", "field 'rms_norm_eps': must be a number"},
        {"rope_theta", "0", "field 'rope_theta'"},
        {"tie_word_embeddings", "1", "field 'tie_word_embeddings': must be true or false"},
        {"torch_dtype", "\"int8\"", "field 'torch_dtype': unsupported dtype 'int8'"},
        {"torch_dtype", "16", "field 'torch_dtype': must be a string"},
        {"model_type", "\"gemma2\"", "field 'model_type': 'gemma2' is not supported"},
        {"model_type", "\"mixtral\"", "field 'model_type': 'mixtral' is not supported"},
        {"hidden_act", "\"gelu\"", "field 'hidden_act': 'gelu' is not supported for llama (supported: 'silu')"},
        {"num_local_experts", "8", "field 'num_local_experts': mixture-of-experts models are not supported"},
        {"attention_bias", "1", "field 'attention_bias': must be true or false"},
        {"sliding_window", "4096", "field 'sliding_window': llama has no sliding-window attention"},
        {"partial_rotary_factor", "0.5", "field 'partial_rotary_factor': llama rotates whole heads"},
        {"rope_scaling", "\"llama3\"", "field 'rope_scaling': must be an object"},
        {"rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}",
         "field 'rope_scaling.rope_type': unsupported rope_scaling type 'yarn' (supported: 'linear', 'llama3')"},
        {"rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}", "unsupported rope_scaling type 'dynamic'"},
        {"rope_scaling", "{\"type\": \"linear\"}", "field 'rope_scaling.factor': missing"},
        {"rope_scaling", "{\"factor\": 2.0}", "field 'rope_scaling.rope_type': missing"},
        {"rope_scaling",
         "{\"rope_type\": \"llama3\", \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
         " \"original_max_position_embeddings\": 8192}",
         "field 'rope_scaling.factor': missing"},
        {"rope_scaling",
         "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 4.0, \"high_freq_factor\": 4.0,"
         " \"original_max_position_embeddings\": 8192}",
         "field 'rope_scaling.high_freq_factor'"},
        {"rope_scaling",
         "{\"rope_type\": \"llama3\", \"factor\": -8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
         " \"original_max_position_embeddings\": 8192}",
         "field 'rope_scaling.factor'"},
        {"rope_scaling",
         "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
         " \"original_max_position_embeddings\": 0}",
         "field 'rope_scaling.original_max_position_embeddings'"},
        {"rope_scaling", "{\"rope_type\": \"llama3\", \"type\": \"yarn\"}", "field 'rope_scaling.type': contradicts"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[160];
        snprintf(what, sizeof what, "%s = %s", cases[i].key, cases[i].value ? cases[i].value : "(absent)");
        expect_config_error(put_config(k_base, cases[i].key, cases[i].value), cases[i].keyword, what);
    }
    /* head_dim absent and heads do not divide hidden_size */
    char *t1 = edit(k_base, "head_dim", NULL), *t2 = edit(t1, "num_attention_heads", "6");
    expect_config_error(put_config(t2, "num_key_value_heads", "3"), "field 'head_dim': absent", "64 %% 6, no head_dim");
    free(t1);
    free(t2);

    /* whole-file problems */
    static const struct {
        const char *text, *keyword;
    } files[] = {
        {"{\"hidden_size\": 64, \"hidden_size\": 128}", "duplicate key 'hidden_size'"},
        {"{\"rope_scaling\": {\"type\": \"linear\", \"ty\\u0070e\": \"llama3\"}}", "duplicate key 'type' in 'rope_scaling'"},
        {"{\"hidden_size\": 64,", "not valid JSON"},
        {"{} {}", "trailing garbage"},
        {"[1, 2]", "must be a JSON object"},
        {"", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        expect_config_error(put_config_text(files[i].text, strlen(files[i].text)), files[i].keyword, files[i].text);
    static const char nul[] = "{\"hidden_size\": 64}\0 ";
    expect_config_error(put_config_text(nul, sizeof nul - 1), "trailing garbage", "NUL byte");

    sp_config c;
    const char *missing = scratch("no-such-model");
    int rc = sp_config_load(missing, &c);
    CHECK(rc == SP_EX_NOINPUT && strstr(sp_errmsg(), "no-such-model/config.json"), "missing config: rc %d '%s'", rc,
          sp_errmsg());
}

static void test_config_rope(void) {
    sp_config c;
    const char *dir = put_config(k_base, "rope_scaling",
                                 "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
                                 " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}");
    int rc = sp_config_load(dir, &c);
    CHECK(rc == 0, "llama3: rc %d '%s'", rc, sp_errmsg());
    if (!rc) {
        CHECK(c.rope_llama3 == 1 && c.rope_factor == 8.0 && c.rope_low_freq_factor == 1.0 &&
                  c.rope_high_freq_factor == 4.0 && c.rope_original_max_pos == 8192,
              "llama3 values %d %g %g %g %lld", c.rope_llama3, c.rope_factor, c.rope_low_freq_factor,
              c.rope_high_freq_factor, (long long)c.rope_original_max_pos);
        sp_config_free(&c);
    }
    /* the older "type" spelling, and "default" meaning none */
    dir = put_config(k_base, "rope_scaling",
                     "{\"type\": \"llama3\", \"factor\": 32, \"low_freq_factor\": 1, \"high_freq_factor\": 4,"
                     " \"original_max_position_embeddings\": 8192}");
    rc = sp_config_load(dir, &c);
    CHECK(rc == 0 && c.rope_llama3 == 1 && c.rope_factor == 32.0, "\"type\": llama3: rc %d '%s'", rc, sp_errmsg());
    sp_config_free(&c);
    dir = put_config(k_base, "rope_scaling", "{\"rope_type\": \"default\"}");
    rc = sp_config_load(dir, &c);
    CHECK(rc == 0 && c.rope_llama3 == 0, "default: rc %d", rc);
    sp_config_free(&c);
}

static const char *k_sliced_block =
    "{\"base_model_type\": \"llama\", \"sparsity\": 0.25, \"d_embed\": 56, \"layers\": [{\"d_in\": 56, \"d_mid\": 48, \"d_out\": 40},"
    " {\"d_in\": 40, \"d_mid\": 64, \"d_out\": 32}]}";

/* A per-layer output's config: model_type slicepipe_sliced, the family and widths in the block. */
static char *sliced_base(void) {
    char *with_block = edit(k_base, "slicepipe", k_sliced_block);
    char *b = edit(with_block, "model_type", "\"slicepipe_sliced\"");
    free(with_block);
    return b;
}

static void test_config_sliced(void) {
    sp_config c;
    char *base = sliced_base();
    const char *dir = put_config(base, "architectures", "[\"SlicepipeSlicedForCausalLM\"]");
    int rc = sp_config_load(dir, &c);
    CHECK(rc == 0, "sliced: rc %d '%s'", rc, sp_errmsg());
    if (!rc) {
        CHECK(c.sliced == 1 && c.sparsity == 0.25 && c.d_embed == 56, "sliced %d %g %lld", c.sliced, c.sparsity,
              (long long)c.d_embed);
        CHECK(c.d_in && c.d_in[0] == 56 && c.d_mid[0] == 48 && c.d_out[0] == 40, "layer 0");
        CHECK(c.d_in && c.d_in[1] == 40 && c.d_mid[1] == 64 && c.d_out[1] == 32, "layer 1");
        CHECK(c.hidden_size == 64, "hidden_size stays the original width");
        const sp_arch *llama = NULL;
        CHECK(sp_arch_find("llama", dir, &llama) == 0 && c.family == llama, "the family from slicepipe.base_model_type");
        sp_config_free(&c);
    }
    /* a stock model_type with a slicepipe block (a basis = "global" output) is a dense model */
    dir = put_config(k_base, "slicepipe", k_sliced_block);
    rc = sp_config_load(dir, &c);
    CHECK(rc == 0 && c.sliced == 0 && c.d_in == NULL && c.hidden_size == 64, "stock + block: rc %d sliced %d '%s'", rc, c.sliced,
          sp_errmsg());
    sp_config_free(&c);
    static const struct {
        const char *key, *value, *keyword;
    } cases[] = {
        {"slicepipe", "[]", "field 'model_type': 'slicepipe_sliced' without a slicepipe block"},
        {"slicepipe.base_model_type", NULL, "field 'slicepipe.base_model_type': missing"},
        {"slicepipe.d_embed", "48", "field 'slicepipe.layers[0].d_in': 56 does not match d_embed 48"},
        {"slicepipe.d_embed", "0", "field 'slicepipe.d_embed'"},
        {"slicepipe.d_embed", "65", "field 'slicepipe.d_embed'"},
        {"slicepipe.sparsity", "1.0", "field 'slicepipe.sparsity'"},
        {"slicepipe.sparsity", "-0.5", "field 'slicepipe.sparsity'"},
        {"slicepipe.sparsity", NULL, "field 'slicepipe.sparsity': missing"},
        {"slicepipe.layers", NULL, "field 'slicepipe.layers': missing"},
        {"slicepipe.layers", "{}", "field 'slicepipe.layers': must be an array"},
        {"slicepipe.layers", "[{\"d_in\": 56, \"d_mid\": 48, \"d_out\": 40}]",
         "field 'slicepipe.layers': has 1 entries, num_hidden_layers is 2"},
        {"slicepipe.layers", "[{\"d_in\": 56, \"d_mid\": 48, \"d_out\": 40}, {\"d_in\": 48, \"d_mid\": 48, \"d_out\": 40}]",
         "field 'slicepipe.layers[1].d_in': 48 does not match the previous layer's d_out 40"},
        {"slicepipe.layers", "[{\"d_in\": 56, \"d_mid\": 0, \"d_out\": 40}, {\"d_in\": 40, \"d_mid\": 48, \"d_out\": 40}]",
         "field 'slicepipe.layers[0].d_mid'"},
        {"slicepipe.layers", "[{\"d_in\": 56, \"d_mid\": 48, \"d_out\": 40}, {\"d_in\": 40, \"d_mid\": 65, \"d_out\": 40}]",
         "field 'slicepipe.layers[1].d_mid'"},
        {"slicepipe.layers", "[{\"d_in\": 56, \"d_mid\": 48}, {\"d_in\": 40, \"d_mid\": 48, \"d_out\": 40}]",
         "field 'slicepipe.layers[0].d_out': missing"},
        {"slicepipe.layers", "[{\"d_in\": 56, \"d_mid\": 48, \"d_out\": 40.5}, {}]", "field 'slicepipe.layers[0].d_out'"},
        {"slicepipe.layers", "[[56, 48, 40], {\"d_in\": 40, \"d_mid\": 48, \"d_out\": 40}]",
         "field 'slicepipe.layers[0]': must be an object"},
    };
    /* a base with the block in place, then each edit inside it */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[200];
        snprintf(what, sizeof what, "%s = %s", cases[i].key, cases[i].value ? cases[i].value : "(absent)");
        expect_config_error(put_config(base, cases[i].key, cases[i].value), cases[i].keyword, what);
    }
    free(base);
}

static void test_config_shared(const char *shared) {
    char dir[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/models/stories260k", shared ? shared : "");
    struct stat st;
    if (!shared || stat(dir, &st) != 0) {
        printf("SKIP: shared stories260k config (no %s)\n", dir);
        return;
    }
    sp_config c;
    int rc = sp_config_load(dir, &c);
    CHECK(rc == 0, "stories260k: rc %d '%s'", rc, sp_errmsg());
    if (rc) return;
    /* values as published in the model's config.json and ../shared/data/REFERENCE.md */
    CHECK(c.hidden_size == 64 && c.intermediate_size == 172 && c.n_layers == 5 && c.n_heads == 8 &&
              c.n_kv_heads == 4 && c.head_dim == 8 && c.vocab_size == 512,
          "stories260k shape");
    CHECK(c.rms_norm_eps == 1e-5 && c.rope_theta == 10000.0 && c.tie_word_embeddings == 1 &&
              c.torch_dtype == SP_DTYPE_F32 && !c.rope_llama3 && !c.sliced,
          "stories260k scalars");
    sp_config_free(&c);
}

/* ================================================================ tokens */

/* Writes a .npy: preamble for `major`.0, the dict padded with spaces to a
 * multiple of 64 and ended by '\n', then `data`. */
static const char *put_npy_v(const char *name, int major, const char *dict, const void *data, size_t n) {
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t hlen = ((pre + dl + 1 + 63) / 64) * 64 - pre;
    unsigned char *buf = calloc(1, pre + hlen + n);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major, buf[7] = 0;
    for (size_t i = 0; i < (major == 1 ? 2u : 4u); i++) buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memset(buf + pre, ' ', hlen);
    memcpy(buf + pre, dict, dl);
    buf[pre + hlen - 1] = '\n';
    if (n) memcpy(buf + pre + hlen, data, n);
    const char *path = scratch(name);
    write_bytes(path, buf, pre + hlen + n);
    free(buf);
    return path;
}

static const char *put_npy(const char *name, const char *dict, const void *data, size_t n) {
    return put_npy_v(name, 1, dict, data, n);
}

static void le_put(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static const int64_t k_ids[] = {0, 1, 511, 7, 300, 2, 256};
#define N_IDS ((int)(sizeof k_ids / sizeof k_ids[0]))

static void test_tokens_each_dtype(void) {
    static const struct {
        const char *descr;
        int size;
    } dt[] = {{"<i4", 4}, {"<u2", 2}, {"<u4", 4}, {"<i8", 8}};
    for (int d = 0; d < 4; d++) {
        for (int major = 1; major <= 3; major++) {
            unsigned char data[N_IDS * 8];
            for (int i = 0; i < N_IDS; i++) le_put(data + i * dt[d].size, (uint64_t)k_ids[i], dt[d].size);
            char dict[128], name[32];
            snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%d,), }", dt[d].descr, N_IDS);
            snprintf(name, sizeof name, "ok_%d_v%d.npy", d, major);
            const char *path = put_npy_v(name, major, dict, data, (size_t)N_IDS * dt[d].size);
            sp_tokens t;
            int rc = sp_tokens_load(path, 512, 0, &t);
            CHECK(rc == 0 && t.n == N_IDS, "%s v%d: rc %d n %lld '%s'", dt[d].descr, major, rc, (long long)t.n,
                  sp_errmsg());
            for (int i = 0; !rc && i < N_IDS; i++)
                CHECK(t.ids[i] == k_ids[i], "%s v%d: ids[%d] = %d, want %lld", dt[d].descr, major, i, t.ids[i],
                      (long long)k_ids[i]);
            sp_tokens_free(&t);
        }
    }
    /* header variants: key order, double quotes, no trailing comma, spaces */
    static const char *const dicts[] = {
        "{'shape': (7,), 'fortran_order': False, 'descr': '<i4'}",
        "{\"descr\": \"<i4\", \"fortran_order\": False, \"shape\": (7,)}",
        "{ 'descr' : '<i4' , 'fortran_order' : False , 'shape' : ( 7 , ) , }",
    };
    unsigned char data[N_IDS * 4];
    for (int i = 0; i < N_IDS; i++) le_put(data + i * 4, (uint64_t)k_ids[i], 4);
    for (size_t k = 0; k < sizeof dicts / sizeof dicts[0]; k++) {
        sp_tokens t;
        int rc = sp_tokens_load(put_npy("variant.npy", dicts[k], data, sizeof data), 512, 0, &t);
        CHECK(rc == 0 && t.n == N_IDS && t.ids[6] == 256, "dict variant %zu: rc %d '%s'", k, rc, sp_errmsg());
        sp_tokens_free(&t);
    }
    /* max_n keeps a prefix; vocab <= 0 skips the range check */
    const char *p = put_npy("maxn.npy", "{'descr': '<i4', 'fortran_order': False, 'shape': (7,), }", data, sizeof data);
    sp_tokens t;
    int rc = sp_tokens_load(p, 512, 3, &t);
    CHECK(rc == 0 && t.n == 3 && t.ids[0] == 0 && t.ids[1] == 1 && t.ids[2] == 511, "max_n 3: rc %d n %lld", rc,
          (long long)t.n);
    sp_tokens_free(&t);
    rc = sp_tokens_load(p, 512, 100, &t);
    CHECK(rc == 0 && t.n == 7, "max_n > n keeps all: n %lld", (long long)t.n);
    sp_tokens_free(&t);
    rc = sp_tokens_load(p, 0, 0, &t);
    CHECK(rc == 0 && t.n == 7, "vocab 0: rc %d", rc);
    sp_tokens_free(&t);
    rc = sp_tokens_load(p, 300, 3, &t); /* id 511 at index 2 and beyond the kept prefix: still checked */
    CHECK(rc == SP_EX_DATAERR && strstr(sp_errmsg(), "token id 511 at index 2"), "vocab 300: rc %d '%s'", rc,
          sp_errmsg());
    rc = sp_tokens_load(p, 301, 1, &t); /* 511 at index 2 lies past max_n = 1 */
    CHECK(rc == SP_EX_DATAERR && strstr(sp_errmsg(), "index 2"), "validated whole past max_n: rc %d '%s'", rc,
          sp_errmsg());
    CHECK(t.ids == NULL && t.n == 0, "cleared on error");
    sp_tokens_free(NULL);

    /* more ids than one read chunk (1 MiB): the chunk boundary is exercised */
    int64_t big = (1 << 20) / 2 + 1000;
    unsigned char *bd = malloc((size_t)big * 2);
    for (int64_t i = 0; i < big; i++) le_put(bd + i * 2, (uint64_t)(i % 509), 2);
    char dict[128];
    snprintf(dict, sizeof dict, "{'descr': '<u2', 'fortran_order': False, 'shape': (%lld,), }", (long long)big);
    p = put_npy("big.npy", dict, bd, (size_t)big * 2);
    rc = sp_tokens_load(p, 509, 0, &t);
    int ok = rc == 0 && t.n == big;
    for (int64_t i = 0; ok && i < big; i++) ok = t.ids[i] == (int32_t)(i % 509);
    CHECK(ok, "big u2 stream: rc %d n %lld '%s'", rc, (long long)t.n, sp_errmsg());
    sp_tokens_free(&t);
    le_put(bd + (big - 1) * 2, 509, 2); /* the last id, in the second chunk */
    p = put_npy("big.npy", dict, bd, (size_t)big * 2);
    rc = sp_tokens_load(p, 509, 0, &t);
    char want[64];
    snprintf(want, sizeof want, "token id 509 at index %lld", (long long)(big - 1));
    CHECK(rc == SP_EX_DATAERR && strstr(sp_errmsg(), want), "bad id in the last chunk: '%s'", sp_errmsg());
    free(bd);
}

static void expect_tokens_error(const char *path, int64_t vocab, const char *keyword, const char *what) {
    sp_tokens t;
    int rc = sp_tokens_load(path, vocab, 0, &t);
    const char *msg = sp_errmsg();
    CHECK(rc == SP_EX_DATAERR, "%s: rc %d '%s'", what, rc, msg);
    CHECK(strncmp(msg, path, strlen(path)) == 0, "%s: message '%s' does not name the file", what, msg);
    CHECK(strstr(msg, keyword) != NULL, "%s: message '%s' lacks '%s'", what, msg, keyword);
    CHECK(t.ids == NULL, "%s: ids not freed", what);
}

static void test_tokens_bad(void) {
    unsigned char d4[N_IDS * 4];
    for (int i = 0; i < N_IDS; i++) le_put(d4 + i * 4, (uint64_t)k_ids[i], 4);
    static const struct {
        const char *dict, *keyword;
    } dicts[] = {
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }", "unsupported .npy dtype '<f4'"},
        {"{'descr': '>i4', 'fortran_order': False, 'shape': (7,), }", "unsupported .npy dtype '>i4'"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (28,), }", "unsupported .npy dtype '|u1'"},
        {"{'descr': '<i4', 'fortran_order': True, 'shape': (7,), }", "fortran_order True"},
        {"{'descr': '<i4', 'fortran_order': 0, 'shape': (7,), }", "fortran_order must be"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (7, 1), }", "2-D"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (1, 7), }", "2-D"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (), }", "0-D"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (7), }", "with a comma"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (0,), }", "empty"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (-7,), }", "non-negative integers"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': 7, }", "shape must be a tuple"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "overflows"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (4611686018427387904,), }", "overflows"},
        {"{'descr': '<i4', 'fortran_order': False, }", "missing 'shape'"},
        {"{'fortran_order': False, 'shape': (7,), }", "missing 'descr'"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (7,), 'extra': 1}", "unexpected key 'extra'"},
        {"{'descr': '<i4', 'descr': '<i4', 'fortran_order': False, 'shape': (7,)}", "duplicate key 'descr'"},
        {"{'descr': '<i4' 'fortran_order': False, 'shape': (7,)}", "expected ',' or '}'"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (7,)} x", "trailing text"},
        {"{'descr': '<\\x69\x34', 'fortran_order': False, 'shape': (7,)}", "escapes"},
        {"['descr', '<i4']", "expected '{'"},
        {"{'descr: '<i4', 'fortran_order': False, 'shape': (7,)}", "expected ':'"},
    };
    for (size_t i = 0; i < sizeof dicts / sizeof dicts[0]; i++)
        expect_tokens_error(put_npy("bad.npy", dicts[i].dict, d4, sizeof d4), 512, dicts[i].keyword, dicts[i].dict);

    const char *good = "{'descr': '<i4', 'fortran_order': False, 'shape': (7,), }";
    expect_tokens_error(put_npy("trunc.npy", good, d4, sizeof d4 - 1), 512, "truncated", "truncated by 1 byte");
    unsigned char d4x[sizeof d4 + 3];
    memcpy(d4x, d4, sizeof d4);
    expect_tokens_error(put_npy("trail.npy", good, d4x, sizeof d4x), 512, "3 trailing bytes", "trailing bytes");

    /* ids: >= vocab, negative, too large for int32 */
    unsigned char e[N_IDS * 4];
    memcpy(e, d4, sizeof e);
    le_put(e + 3 * 4, 512, 4);
    expect_tokens_error(put_npy("vocab.npy", good, e, sizeof e), 512, "token id 512 at index 3 is out of range [0, 512)",
                        "id == vocab");
    le_put(e + 3 * 4, 7, 4);
    le_put(e + 5 * 4, (uint32_t)-1, 4);
    expect_tokens_error(put_npy("neg.npy", good, e, sizeof e), 512, "token id -1 at index 5", "negative id");
    expect_tokens_error(put_npy("neg.npy", good, e, sizeof e), 0, "token id -1 at index 5 is negative", "negative, no vocab");
    unsigned char u4[4];
    le_put(u4, 3000000000u, 4);
    expect_tokens_error(put_npy("u4.npy", "{'descr': '<u4', 'fortran_order': False, 'shape': (1,), }", u4, 4), 0,
                        "token id 3000000000 at index 0", "u4 beyond int32");
    unsigned char i8[16];
    le_put(i8, 5, 8);
    le_put(i8 + 8, (uint64_t)-2, 8);
    expect_tokens_error(put_npy("i8.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", i8, 16), 512,
                        "token id -2 at index 1", "negative i8");
    le_put(i8 + 8, 1ull << 40, 8);
    expect_tokens_error(put_npy("i8.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", i8, 16), 0,
                        "token id 1099511627776 at index 1", "i8 beyond int32");

    /* preamble damage, written by hand */
    const char *p = put_npy("magic.npy", good, d4, sizeof d4);
    {
        FILE *f = fopen(p, "r+b");
        fputc('X', f), fclose(f);
    }
    expect_tokens_error(p, 512, "bad magic", "bad magic");
    p = put_npy_v("ver.npy", 4, good, d4, sizeof d4);
    expect_tokens_error(p, 512, "unsupported .npy version 4.0", "version 4");
    p = scratch("short.npy");
    write_bytes(p, "\x93NUMPY\x01", 7);
    expect_tokens_error(p, 512, "not a .npy file", "7-byte file");
    unsigned char hl[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0xFF, 0x7F};
    write_bytes(p, hl, sizeof hl);
    expect_tokens_error(p, 512, "truncated in its header", "header length past the end");
    unsigned char hl2[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0, 0, 0, 0x40};
    write_bytes(p, hl2, sizeof hl2);
    expect_tokens_error(p, 512, "header length", "huge v2 header length");
    /* header not ended by a newline */
    p = put_npy("nonl.npy", good, d4, sizeof d4);
    {
        FILE *f = fopen(p, "r+b");
        unsigned char len[2];
        if (fseek(f, 8, SEEK_SET) != 0 || fread(len, 1, 2, f) != 2) CHECK(0, "read back %s", p);
        fseek(f, 10 + (len[0] | len[1] << 8) - 1, SEEK_SET), fputc(' ', f), fclose(f);
    }
    expect_tokens_error(p, 512, "newline", "no newline");

    sp_tokens t;
    int rc = sp_tokens_load(scratch("absent.npy"), 512, 0, &t);
    CHECK(rc == SP_EX_NOINPUT, "missing .npy: rc %d", rc);
}

/* numpy writes the files (an independent writer); we read them back. */
static const char *k_py =
    "import sys, numpy as np\n"
    "from numpy.lib import format as F\n"
    "d = sys.argv[1]\n"
    "a = (np.arange(5000) * 7919) % 509\n"
    "for t in ('<i4', '<u2', '<u4', '<i8'):\n"
    "    np.save(f'{d}/np_{t[1:]}.npy', a.astype(t))\n"
    "for v in ((2, 0), (3, 0)):\n"
    "    with open(f'{d}/np_v{v[0]}.npy', 'wb') as f:\n"
    "        F.write_array(f, a.astype('<i4'), version=v)\n"
    "np.save(f'{d}/np_f4.npy', a.astype('<f4'))\n"
    "np.save(f'{d}/np_2d.npy', a.astype('<i4').reshape(50, 100))\n"
    "np.save(f'{d}/np_fortran.npy', np.asfortranarray(a.astype('<i4').reshape(50, 100)))\n"
    "np.save(f'{d}/np_big.npy', a.astype('>i4'))\n";

static void test_tokens_numpy(const char *python, const char *shared) {
    if (!python || !*python) {
        printf("SKIP: numpy-written files (no python3 given)\n");
        return;
    }
    const char *script = scratch("gen.py");
    write_bytes(script, k_py, strlen(k_py));
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s'", python, script, g_dir);
    if (system(cmd) != 0) {
        printf("SKIP: numpy-written files (%s failed: no numpy?)\n", cmd);
        return;
    }
    static const char *const ok[] = {"np_i4.npy", "np_u2.npy", "np_u4.npy", "np_i8.npy", "np_v2.npy", "np_v3.npy"};
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        sp_tokens t;
        int rc = sp_tokens_load(scratch(ok[k]), 509, 0, &t);
        int good = rc == 0 && t.n == 5000;
        for (int64_t i = 0; good && i < 5000; i++) good = t.ids[i] == (int32_t)((i * 7919) % 509);
        CHECK(good, "%s: rc %d n %lld '%s'", ok[k], rc, (long long)t.n, sp_errmsg());
        sp_tokens_free(&t);
        rc = sp_tokens_load(scratch(ok[k]), 508, 0, &t); /* 508 occurs in the stream */
        CHECK(rc == SP_EX_DATAERR && strstr(sp_errmsg(), "token id 508 at index"), "%s vocab 508: '%s'", ok[k],
              sp_errmsg());
    }
    expect_tokens_error(scratch("np_f4.npy"), 509, "'<f4'", "numpy float32");
    expect_tokens_error(scratch("np_2d.npy"), 509, "2-D", "numpy 2-D");
    expect_tokens_error(scratch("np_fortran.npy"), 509, "fortran_order True", "numpy fortran");
    expect_tokens_error(scratch("np_big.npy"), 509, "'>i4'", "numpy big-endian");

    /* the shared calibration stream, against numpy's own reading of it */
    char calib[PATH_MAX + 64];
    snprintf(calib, sizeof calib, "%s/data/tinystories/calib.tok512.npy", shared ? shared : "");
    struct stat st;
    if (!shared || stat(calib, &st) != 0) {
        printf("SKIP: shared calib.tok512.npy (no %s)\n", calib);
        return;
    }
    const char *out = scratch("calib_ref.txt");
    snprintf(cmd, sizeof cmd,
             "'%s' -c 'import sys, numpy as np; a = np.load(sys.argv[1]).astype(np.int64); "
             "print(a.size, int(a.sum()), int(a.max()), *a[:3].tolist(), int(a[-1]))' '%s' > '%s'",
             python, calib, out);
    long long n, sum, mx, a0, a1, a2, last;
    FILE *f = system(cmd) == 0 ? fopen(out, "r") : NULL;
    int got = f && fscanf(f, "%lld %lld %lld %lld %lld %lld %lld", &n, &sum, &mx, &a0, &a1, &a2, &last) == 7;
    if (f) fclose(f);
    CHECK(got, "numpy reference for %s", calib);
    if (!got) return;
    sp_tokens t;
    int rc = sp_tokens_load(calib, 512, 0, &t);
    CHECK(rc == 0 && t.n == n, "calib.tok512: rc %d n %lld want %lld '%s'", rc, (long long)t.n, n, sp_errmsg());
    if (rc) return;
    long long s = 0, m = 0;
    for (int64_t i = 0; i < t.n; i++) s += t.ids[i], m = t.ids[i] > m ? t.ids[i] : m;
    CHECK(s == sum && m == mx && t.ids[0] == a0 && t.ids[1] == a1 && t.ids[2] == a2 && t.ids[t.n - 1] == last,
          "calib.tok512 content: sum %lld/%lld max %lld/%lld", s, sum, m, mx);
    sp_tokens_free(&t);
    if (mx > 0) {
        rc = sp_tokens_load(calib, mx, 0, &t);
        CHECK(rc == SP_EX_DATAERR && strstr(sp_errmsg(), "out of range [0,"), "calib.tok512 with vocab = max: '%s'",
              sp_errmsg());
    }
}

int main(int argc, char **argv) {
    const char *python = argc > 1 ? argv[1] : NULL;
    const char *shared = argc > 2 ? argv[2] : NULL;
    char tmpl[] = "/tmp/sp_cfgtok_XXXXXX";
    if (!mkdtemp(tmpl) || !realpath(tmpl, g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_config_valid();
    test_config_invalid();
    test_config_rope();
    test_config_sliced();
    test_config_shared(shared);
    test_tokens_each_dtype();
    test_tokens_bad();
    test_tokens_numpy(python, shared);

    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (!g_fail && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    if (g_fail) fprintf(stderr, "%d check(s) failed; scratch kept in %s\n", g_fail, g_dir);
    else printf("test_config_tokens: all passed\n");
    return g_fail ? 1 : 0;
}
