/* pipeline/model/synth.c — synthetic checkpoints of every family (see synth.h for the
 * tensors, scales, token stream and memory bound). */
#include "synth.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch.h"
#include "error.h"
#include "fileio.h"
#include "npy.h"
#include "st_writer.h"
#include "tokenizer.h"

#define HIDDEN_MAX 65536
#define LAYERS_MAX 1024
#define FFN_MAX 1000000
#define HEADS_MAX 1024
#define HEAD_DIM_MAX 4096
#define SHARDS_MAX 99999
#define TOKENS_MAX (INT64_C(1) << 40)
#define CHUNK_ELEMS_DEFAULT (INT64_C(1) << 20)
#define CHUNK_ELEMS_MAX (INT64_C(1) << 26)

#define GOLDEN UINT64_C(0x9e3779b97f4a7c15)
#define STREAM_TOKENS UINT64_C(0x746f6b656e73) /* "tokens": the token stream's key */

/* ---- counter-based randomness ---- */

/* splitmix64's output function: a bijective 64-bit mixer. */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t stream_key(uint64_t seed, uint64_t stream) { return mix64(mix64(seed + GOLDEN) ^ mix64(stream * GOLDEN + 1)); }

/* Two independent N(0,1) for pair j of the stream `key` (Marsaglia polar:
 * rejected attempts re-mix the previous draw, so pair j needs no other pair). */
static void gauss_pair(uint64_t key, uint64_t j, double *z0, double *z1) {
    uint64_t x = mix64(key + (j + 1) * GOLDEN);
    for (;;) {
        double u = (double)(int32_t)(uint32_t)(x >> 32) * (1.0 / 2147483648.0);
        double v = (double)(int32_t)(uint32_t)x * (1.0 / 2147483648.0);
        double s = u * u + v * v;
        if (s > 0 && s < 1) {
            double f = sqrt(-2.0 * log(s) / s);
            *z0 = u * f;
            *z1 = v * f;
            return;
        }
        x = mix64(x + GOLDEN);
    }
}

/* dst[k] = offset + scale·z(start + k), k in [0, n): element i of the
 * stream is the (i & 1) half of pair i >> 1. */
static void gauss_fill(uint64_t key, int64_t start, int64_t n, double scale, double offset, float *dst) {
    int64_t k = 0;
    double z0, z1;
    if (n > 0 && (start & 1)) {
        gauss_pair(key, (uint64_t)start >> 1, &z0, &z1);
        dst[k++] = (float)(offset + scale * z1);
    }
    for (; k + 1 < n; k += 2) {
        gauss_pair(key, (uint64_t)(start + k) >> 1, &z0, &z1);
        dst[k] = (float)(offset + scale * z0);
        dst[k + 1] = (float)(offset + scale * z1);
    }
    if (k < n) {
        gauss_pair(key, (uint64_t)(start + k) >> 1, &z0, &z1);
        dst[k] = (float)(offset + scale * z0);
    }
}

/* ---- options ---- */

void sp_synth_defaults(sp_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->hidden = 256;
    o->layers = 4;
    o->ffn = 704;
    o->heads = 8;
    o->kv_heads = 8;
    o->vocab = 1024;
    o->max_pos = 4096;
    o->rotary = 1.0;
    o->dtype = SP_DTYPE_BF16;
    o->shards = 1;
    o->tokens = 64 * SP_SYNTH_BOS_EVERY;
    o->progress = 1;
}

static int in_range(const char *opt, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
        return sp_fail(SP_EX_USAGE, "%s %lld is out of range: expected [%lld, %lld]", opt, (long long)v, (long long)lo,
                       (long long)hi);
    return 0;
}

/* The tensor table: names, shapes, scales. */
typedef struct tensor_spec {
    char name[96];
    int ndim;
    int64_t shape[2];
    double scale, offset; /* value = offset + scale·N(0,1) */
} tensor_spec;

/* The sizes the table's dimensions stand for, and the switches its tensors'
 * conditions read (synth writes no optional biases). */
static sp_config synth_dims(const sp_synth_opts *o) {
    return (sp_config){.hidden_size = o->hidden, .intermediate_size = o->ffn, .n_layers = o->layers, .n_heads = o->heads,
                       .n_kv_heads = o->kv_heads, .head_dim = o->head_dim, .vocab_size = o->vocab, .max_pos = o->max_pos};
}

/* The model's table: the family's, instanced for synth's config. */
typedef struct synth_arch {
    sp_arch *a;
    sp_config dims;
    int64_t n_pos;  /* rows of the learned position table, or 0 */
    int head_bias;  /* the family's head has its own bias tensor */
} synth_arch;

static int synth_arch_init(const sp_synth_opts *o, synth_arch *x) {
    memset(x, 0, sizeof *x);
    const sp_arch *fam;
    char known[512];
    int rc = sp_arch_find(o->arch, "--arch", &fam); /* NULL: llama */
    if (rc)
        return sp_fail(SP_EX_USAGE, "--arch '%s' is not a supported family (supported: %s)", o->arch,
                       sp_arch_names(known, sizeof known, NULL, "", ", ", ", "));
    x->dims = synth_dims(o);
    SP_TRY(sp_arch_instance(fam, &x->dims, &x->a));
    x->n_pos = fam->pos_embed ? o->max_pos + fam->pos_offset : 0;
    x->head_bias = fam->dense_head_bias;
    return 0;
}

/* The checkpoint's tensors in declaration order: the embedding, [the
 * positions], each layer's tensors in the table's order, the final norm
 * [and its β], [the head], [the head's bias]. */
static int64_t spec_count(const sp_synth_opts *o, const synth_arch *x) {
    return 1 + (x->n_pos > 0) + x->a->n_layer * o->layers + 1 + (x->a->final_norm_bias != NULL) + (o->tied ? 0 : 1) +
           x->head_bias;
}

static void spec_fill(tensor_spec *t, const char *name, int ndim, int64_t rows, int64_t cols, enum sp_arch_init init) {
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = rows;
    t->shape[1] = ndim == 1 ? 0 : cols;
    switch (init) {
    case SP_INIT_NORM: t->scale = 0.05, t->offset = 1.0; break;
    case SP_INIT_NORM0: t->scale = 0.05, t->offset = 0.0; break;
    case SP_INIT_BIAS: t->scale = 0.02, t->offset = 0.0; break;
    case SP_INIT_FANIN: t->scale = 1.0 / sqrt((double)(ndim == 1 ? rows : cols)), t->offset = 0.0; break;
    }
}

/* Fills spec i (declaration order, see spec_count). */
static void spec_at(const sp_synth_opts *o, const synth_arch *x, int64_t i, tensor_spec *t) {
    const sp_arch *a = x->a;
    const int64_t D = o->hidden, V = o->vocab, first = 1 + (x->n_pos > 0), last = first + a->n_layer * o->layers;
    const enum sp_arch_init norm_init = a->norm_plus_one ? SP_INIT_NORM0 : SP_INIT_NORM;
    memset(t, 0, sizeof *t);
    if (i == 0) {
        spec_fill(t, a->embed, 2, V, D, SP_INIT_FANIN);
    } else if (i < first) {
        spec_fill(t, a->pos_embed, 2, x->n_pos, D, SP_INIT_FANIN);
    } else if (i < last) {
        int64_t l = (i - first) / a->n_layer, k = (i - first) % a->n_layer, shape[2];
        int nd;
        char nm[256];
        sp_arch_in_shape(a, &x->dims, (int)k, shape, &nd);
        spec_fill(t, sp_arch_layer_name(a, nm, l, a->layer[k].suffix), nd, shape[0], shape[1], a->layer[k].init);
    } else {
        const char *tail[4];
        int nt = 0;
        tail[nt++] = a->final_norm;
        if (a->final_norm_bias) tail[nt++] = a->final_norm_bias;
        if (!o->tied) tail[nt++] = a->head;
        if (x->head_bias) tail[nt++] = a->head_bias;
        const char *name = tail[i - last];
        if (name == a->final_norm) spec_fill(t, name, 1, D, 0, norm_init);
        else if (name == a->final_norm_bias) spec_fill(t, name, 1, D, 0, SP_INIT_BIAS);
        else if (name == a->head) spec_fill(t, name, 2, V, D, SP_INIT_FANIN);
        else spec_fill(t, name, 1, V, 0, SP_INIT_BIAS);
    }
}

static int64_t spec_numel(const tensor_spec *t) { return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1]; }

int sp_synth_check(sp_synth_opts *o) {
    SP_TRY(in_range("--hidden", o->hidden, 1, HIDDEN_MAX));
    SP_TRY(in_range("--layers", o->layers, 1, LAYERS_MAX));
    SP_TRY(in_range("--ffn", o->ffn, 1, FFN_MAX));
    SP_TRY(in_range("--heads", o->heads, 1, HEADS_MAX));
    SP_TRY(in_range("--kv-heads", o->kv_heads, 1, o->heads));
    if (o->heads % o->kv_heads)
        return sp_fail(SP_EX_USAGE, "--kv-heads %lld does not divide --heads %lld", (long long)o->kv_heads,
                       (long long)o->heads);
    if (o->head_dim == 0) {
        if (o->hidden % o->heads)
            return sp_fail(SP_EX_USAGE, "--heads %lld does not divide --hidden %lld; give --head-dim", (long long)o->heads,
                           (long long)o->hidden);
        o->head_dim = o->hidden / o->heads;
    }
    SP_TRY(in_range("--head-dim", o->head_dim, 2, HEAD_DIM_MAX));
    if (o->head_dim % 2)
        return sp_fail(SP_EX_USAGE, "--head-dim %lld must be even (RoPE rotates halves)", (long long)o->head_dim);
    SP_TRY(in_range("--vocab", o->vocab, 3, SP_TOK_VOCAB_MAX));
    SP_TRY(in_range("--max-pos", o->max_pos, 1, INT32_MAX));
    SP_TRY(in_range("--shards", o->shards, 1, SHARDS_MAX));
    SP_TRY(in_range("--tokens", o->tokens, 1, TOKENS_MAX));
    if (o->dtype != SP_DTYPE_F32 && o->dtype != SP_DTYPE_F16 && o->dtype != SP_DTYPE_BF16)
        return sp_fail(SP_EX_USAGE, "--dtype must be f32, f16 or bf16");
    if (o->chunk_elems == 0) o->chunk_elems = CHUNK_ELEMS_DEFAULT;
    SP_TRY(in_range("chunk_elems", o->chunk_elems, 2, CHUNK_ELEMS_MAX));
    /* Every size fits int64 with the bounds above except the total, which
     * the bounds keep below 2^62 too; check it anyway. */
    int64_t total = 0, n;
    tensor_spec t;
    synth_arch x;
    SP_TRY(synth_arch_init(o, &x));
    int rc = 0;
    if (x.a->partial_rotary && (o->rotary <= 0 || o->rotary > 1 || (int64_t)((double)o->head_dim * o->rotary) % 2 ||
                                (int64_t)((double)o->head_dim * o->rotary) < 2))
        rc = sp_fail(SP_EX_USAGE, "--partial-rotary %g must give an even number (>= 2) of the %lld head dimensions",
                     o->rotary, (long long)o->head_dim);
    for (int64_t i = 0; i < spec_count(o, &x) && !rc; i++) {
        spec_at(o, &x, i, &t);
        if (sp_mul_i64(t.shape[0], t.ndim == 1 ? 1 : t.shape[1], &n) || sp_mul_i64(n, sp_dtype_size(o->dtype), &n) ||
            sp_add_i64(total, n, &total))
            rc = sp_fail(SP_EX_USAGE, "the model's size overflows 64 bits (tensor %s)", t.name);
    }
    sp_arch_free(x.a);
    return rc;
}

/* ---- output ---- */

static const char *torch_dtype(sp_dtype t) {
    return t == SP_DTYPE_BF16 ? "bfloat16" : t == SP_DTYPE_F16 ? "float16" : "float32";
}

static int write_config(const char *dir, const sp_synth_opts *o, const synth_arch *x) {
    const sp_arch *a = x->a;
    char path[4096], txt[4096], eps[64] = "", extra[512] = "";
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return sp_fail(SP_EX_USAGE, "%s: output path too long", dir);
    if (a->eps_key) snprintf(eps, sizeof eps, "  \"%s\": 1e-05,\n", a->eps_key);
    int e = 0;
    if (a->window_key && o->window > 0)
        e += snprintf(extra + e, sizeof extra - (size_t)e, "  \"sliding_window\": %lld,\n", (long long)o->window);
    if (a->partial_rotary) e += snprintf(extra + e, sizeof extra - (size_t)e, "  \"partial_rotary_factor\": %.17g,\n", o->rotary);
    if (a->pos_embed) /* OPT: the keys of a pre-LayerNorm model without project_in/out */
        e += snprintf(extra + e, sizeof extra - (size_t)e,
                      "  \"word_embed_proj_dim\": %lld,\n  \"do_layer_norm_before\": true,\n  \"enable_bias\": true,\n",
                      (long long)o->hidden);
    SP_ASSERT(e >= 0 && e < (int)sizeof extra);
    int n = snprintf(txt, sizeof txt,
                     "{\n"
                     "  \"architectures\": [\n    \"%s\"\n  ],\n"
                     "  \"model_type\": \"%s\",\n"
                     "  \"hidden_size\": %lld,\n"
                     "  \"%s\": %lld,\n"
                     "  \"num_hidden_layers\": %lld,\n"
                     "  \"num_attention_heads\": %lld,\n"
                     "  \"num_key_value_heads\": %lld,\n"
                     "  \"head_dim\": %lld,\n"
                     "  \"vocab_size\": %lld,\n"
                     "  \"max_position_embeddings\": %lld,\n"
                     "%s"
                     "  \"rope_theta\": 10000.0,\n"
                     "  \"tie_word_embeddings\": %s,\n"
                     "  \"%s\": \"%s\",\n"
                     "%s"
                     "  \"bos_token_id\": 1,\n"
                     "  \"eos_token_id\": 2,\n"
                     "  \"torch_dtype\": \"%s\"\n"
                     "}\n",
                     a->hf_class, a->model_type, (long long)o->hidden, a->ffn_key, (long long)o->ffn, (long long)o->layers,
                     (long long)o->heads, (long long)o->kv_heads, (long long)o->head_dim, (long long)o->vocab,
                     (long long)o->max_pos, eps, o->tied ? "true" : "false", a->act_key, a->act_default, extra,
                     torch_dtype(o->dtype));
    SP_ASSERT(n > 0 && n < (int)sizeof txt);
    return sp_io_write_atomic(path, txt, n);
}

/* 1 if name is a file synth writes, or its temporary: "<name>.tmp", or
 * "calib.npy.<16 hex>.tmp" (a single-file output's, io/base/fileio.h). */
static int synth_name(const char *name) {
    size_t n = strlen(name);
    if (n > 4 && !strcmp(name + n - 4, ".tmp")) n -= 4;
    if (n > 17 && name[n - 17] == '.' && strspn(name + n - 16, "0123456789abcdef") >= 16) n -= 17;
    if ((n == 11 && !strncmp(name, "config.json", n)) || (n == 9 && !strncmp(name, "calib.npy", n)) ||
        (n == 17 && !strncmp(name, "model.safetensors", n)) || (n == 28 && !strncmp(name, "model.safetensors.index.json", n)))
        return 1;
    return n == 32 && !strncmp(name, "model-", 6) && !strncmp(name + 11, "-of-", 4) && !strncmp(name + 20, ".safetensors", 12);
}

/* An existing folder is written into only when it is empty or an earlier
 * synth output (only synth's names, calib.npy among them): a real model is
 * never replaced (73). */
static int check_existing(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot list the output directory", dir);
    struct dirent *e;
    int n = 0, calib = 0;
    char foreign[256] = "";
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        if (!strcmp(e->d_name, "calib.npy")) calib = 1;
        if (!synth_name(e->d_name) && !foreign[0]) snprintf(foreign, sizeof foreign, "%s", e->d_name);
    }
    closedir(d);
    if (n == 0 || (calib && !foreign[0])) return 0;
    return sp_fail(SP_EX_CANTCREAT, "%s: exists, is not empty and is not an earlier `slicepipe synth` output (it holds '%s'); "
                                    "refusing to replace it: choose an empty or new folder",
                   dir, foreign[0] ? foreign : "config.json and weights but no calib.npy");
}

static int prepare_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return sp_fail(SP_EX_CANTCREAT, "%s: exists and is not a directory", dir);
        SP_TRY(check_existing(dir));
    } else if (mkdir(dir, 0755) != 0) {
        return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the output directory", dir);
    }
    if (access(dir, W_OK | X_OK) != 0) return sp_fail_errno(SP_EX_CANTCREAT, "%s: output directory is not writable", dir);
    return 0;
}

typedef struct progress_state {
    int on, tty;
    double t0, last;
    int64_t total;
} progress_state;

static void progress(progress_state *p, int64_t done, int final) {
    if (!p->on) return;
    double now = sp_now();
    if (!final && now - p->last < 1.0) return;
    p->last = now;
    double el = now - p->t0;
    fprintf(stderr, "%sslicepipe synth: %.1f / %.1f MB (%3.0f%%) | %.1f MB/s | elapsed %.1fs%s", p->tty ? "\r" : "",
            (double)done / 1e6, (double)p->total / 1e6, p->total ? 100.0 * (double)done / (double)p->total : 100.0,
            el > 0 ? (double)done / 1e6 / el : 0.0, el, p->tty && !final ? "   " : "\n");
}

/* Streams every tensor to the writer, one chunk at a time. */
static int write_tensors(sp_stw *w, const sp_synth_opts *o, const synth_arch *x, float *fbuf, void *obuf,
                         progress_state *ps) {
    const int esz = sp_dtype_size(o->dtype);
    int64_t done = 0;
    tensor_spec t;
    for (int64_t i = 0; i < spec_count(o, x); i++) {
        spec_at(o, x, i, &t);
        uint64_t key = stream_key(o->seed, (uint64_t)i);
        int64_t n = spec_numel(&t);
        for (int64_t s = 0; s < n; s += o->chunk_elems) {
            int64_t m = n - s < o->chunk_elems ? n - s : o->chunk_elems;
            gauss_fill(key, s, m, t.scale, t.offset, fbuf);
            sp_convert_from_f32(o->dtype, fbuf, m, obuf);
            SP_TRY(sp_stw_write(w, t.name, obuf, m * esz));
            done += m * esz;
            progress(ps, done, 0);
        }
    }
    return 0;
}

/* The token stream (synth.h): a pure function of the seed and the position
 * given the previous 32 ids of the window, which ring[] holds. */
typedef struct token_gen {
    uint64_t key;
    int64_t R;      /* ids [2, 2+R) */
    int64_t mult;   /* coprime to R: rank -> id permutation */
    double log_r1;  /* ln(R + 1) */
    int32_t ring[32];
} token_gen;

static int64_t gcd_i64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

static void token_gen_init(token_gen *g, uint64_t seed, int64_t vocab) {
    memset(g, 0, sizeof *g);
    g->key = stream_key(seed, STREAM_TOKENS);
    g->R = vocab - 2;
    g->mult = (int64_t)((double)g->R * 0.6180339887498949) | 1;
    while (gcd_i64(g->mult, g->R) != 1) g->mult++;
    g->log_r1 = log((double)g->R + 1.0);
}

static int32_t token_at(token_gen *g, int64_t p) {
    int64_t q = p % SP_SYNTH_BOS_EVERY; /* position in the window */
    int32_t id;
    if (q == 0) {
        id = 1;
    } else {
        uint64_t h = mix64(g->key + ((uint64_t)p + 1) * GOLDEN);
        int kind = (int)(h & 3);
        int64_t back = 1 + (int64_t)((h >> 2) & 31);
        int32_t prev = g->ring[(p - 1) & 31];
        if (kind == 2 && prev >= 2) {
            id = (int32_t)(2 + ((prev - 2) * 7919 + 13) % g->R);
        } else if (kind == 3 && back < q && g->ring[(p - back) & 31] >= 2) {
            id = g->ring[(p - back) & 31];
        } else {
            double u = (double)(h >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
            int64_t rank = (int64_t)floor(exp(u * g->log_r1)) - 1;
            if (rank < 0) rank = 0;
            if (rank >= g->R) rank = g->R - 1;
            id = (int32_t)(2 + rank * g->mult % g->R);
        }
    }
    g->ring[p & 31] = id;
    return id;
}

static int write_tokens(const char *dir, const sp_synth_opts *o, int32_t *buf) {
    char *path;
    SP_TRY(sp_path_join(dir, "calib.npy", &path));
    sp_npy_out *npy;
    int rc = sp_npy_out_begin(path, "<i4", 0, SP_IO_OUT_REPLACE, NULL, &npy); /* its own folder, checked before */
    free(path);
    SP_TRY(rc);
    token_gen g;
    token_gen_init(&g, o->seed, o->vocab);
    for (int64_t s = 0; s < o->tokens && !rc; s += o->chunk_elems) {
        int64_t m = o->tokens - s < o->chunk_elems ? o->tokens - s : o->chunk_elems;
        for (int64_t k = 0; k < m; k++) buf[k] = token_at(&g, s + k);
        rc = sp_npy_out_write(npy, buf, m);
    }
    int rc2 = sp_npy_out_end(npy, rc == 0);
    return rc ? rc : rc2;
}

int sp_synth_write(const char *out_dir, const sp_synth_opts *opts, sp_synth_result *r) {
    sp_synth_opts o = *opts;
    SP_TRY(sp_synth_check(&o));
    double t0 = sp_now();
    const int esz = sp_dtype_size(o.dtype);

    /* The whole memory plan: one chunk of floats and its encoding (the token
     * buffer reuses the floats). */
    float *fbuf = NULL;
    void *obuf = NULL;
    sp_stw *w = NULL;
    synth_arch x;
    SP_TRY(synth_arch_init(&o, &x));
    int rc = sp_alloc((void **)&fbuf, o.chunk_elems, 4, "synth chunk");
    if (!rc) rc = sp_alloc(&obuf, o.chunk_elems, esz, "synth chunk");
    if (!rc) rc = prepare_dir(out_dir);
    if (!rc) rc = write_config(out_dir, &o, &x);

    int64_t total = 0, params = 0;
    tensor_spec t;
    for (int64_t i = 0; i < spec_count(&o, &x); i++) {
        spec_at(&o, &x, i, &t);
        params += spec_numel(&t);
    }
    total = params * esz; /* no overflow: sp_synth_check */
    int64_t shard_max = (total + o.shards - 1) / o.shards;
    if (!rc) rc = sp_stw_init(&w, out_dir, shard_max > 0 ? shard_max : 1);
    for (int64_t i = 0; i < spec_count(&o, &x) && !rc; i++) {
        spec_at(&o, &x, i, &t);
        rc = sp_stw_add(w, t.name, o.dtype, t.ndim, t.shape);
    }
    if (!rc) rc = sp_stw_plan(w);
    progress_state ps = {.on = o.progress, .tty = isatty(2), .t0 = t0, .last = t0, .total = total};
    if (!rc) rc = write_tensors(w, &o, &x, fbuf, obuf, &ps);
    if (!rc) rc = sp_stw_finish(w);
    if (!rc && ps.on && sp_now() - t0 >= 1.0) progress(&ps, total, 1);
    if (!rc) rc = write_tokens(out_dir, &o, (int32_t *)fbuf);
    if (!rc && r) {
        memset(r, 0, sizeof *r);
        r->params = params;
        r->tensor_bytes = total;
        r->shards = sp_stw_shard_count(w);
        r->tokens = o.tokens;
        r->seconds = sp_now() - t0;
        r->mb_per_s = (double)total / 1e6 / (r->seconds > 0 ? r->seconds : 1e-9);
        r->peak_rss_bytes = sp_peak_rss_bytes();
    }
    sp_stw_free(w);
    sp_arch_free(x.a);
    free(fbuf);
    free(obuf);
    return rc;
}
