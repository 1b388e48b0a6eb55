/* pipeline/publish/export.c — a dense model folder to GGUF (see export.h).
 *
 * Everything particular to a family is its architecture table (arch.h): the
 * tensors, and `gguf`, llama.cpp's form of it (the architecture name, the
 * q/k permutation, fused tensors split, the head rules and the refusals).
 * This file iterates them and names no family.
 *
 * Tensor mapping, per slot of the architecture table (llama.cpp's names):
 *   attn_norm / ffn_norm (.weight, .bias), attn_q/k/v, attn_qkv (fused),
 *   attn_q_norm / attn_k_norm (per-head), attn_output, ffn_gate, ffn_up
 *   (a fused gate;up, or a non-gated MLP's fc1), ffn_down; token_embd,
 *   output_norm, output (absent when tied, unless gguf.head_always: the
 *   embedding is written again as output).
 * llama.cpp's tensors are ne = {in, out}, the bytes of HF's W[out, in].
 *
 * The q/k permutation (gguf.permute_qk: llama.cpp runs the architecture with
 * interleaved RoPE, GGML_ROPE_TYPE_NORM, rotating pairs (2i, 2i+1), while HF
 * rotates (i, i + hd/2)): within each head of hd rows, output row 2i + j is
 * input row j·hd/2 + i (i < hd/2, j ∈ {0, 1}). k uses the KV head count.
 * This is the inverse of the permutation HF's own conversion script applies
 * to Meta's checkpoints, so it restores Meta's original row order. The other
 * architectures run NEOX (rotate-half) RoPE in llama.cpp: rows unchanged.
 *
 * A (1 + w) norm (norm_plus_one) is stored as 1 + w: llama.cpp multiplies
 * norm outputs by what it reads.
 *
 * ======================================================================
 * THE EXPORT JOURNAL (resume; docs/resume.md §10)
 * ======================================================================
 *
 * Files: OUT.tmp (io/formats/gguf.c writes it), the journal (io/base/journal.c; default
 * OUT.journal, under the lock OUT.lock), and at the end OUT.
 *
 * Identity (the journal's header): "manifest" = XXH3-128 of the export's
 * meaning — the weight type and the XXH3-128 of the GGUF header this export
 * writes, so config.json, the tokenizer and every tensor's name, shape,
 * type and offset — and "input" = XXH3-128 of the shards' fingerprint
 * (names, sizes, headers: sp_resume_fingerprint) and of each shard's size,
 * mtime and ctime; plus the tool version. An existing journal with another
 * identity is refused (65), the file untouched, with the hint to restart:
 * resuming would splice two different exports.
 *
 * Records after the header: CHECKPOINT, an sp_gguf_ck (position and the
 * XXH3-128 of the file's bytes before it). Order of every step:
 *
 *   header written ─► tmp fsynced ─► CHECKPOINT(0 tensors) appended+fsynced ─► commit point
 *   each tensor, and every CHECKPOINT_BYTES within a long one:
 *       rows written ─► tmp fsynced ─► CHECKPOINT appended+fsynced ─► commit point
 *   last tensor ─► (its CHECKPOINT: the whole file's hash) ─► rename, dir fsynced
 *   ─► commit point ─► journal removed (a caller-given journal stays); the lock
 *   file is never removed (io/base/lock.h, docs/resume.md §9)
 *
 * Replay: the checkpoints, where one at or before an earlier one's position
 * supersedes it and all after it (a resume that redid them), leave an
 * increasing list. io/formats/gguf.c re-hashes the tmp through it and continues after
 * the last checkpoint that matches; a tail past it (torn, or corrupt) is cut
 * and redone. So the journal never claims a byte that was not durable, and
 * every byte kept is re-verified. A finished file whose journal outlived the
 * rename (a kill right after it; or the caller keeps the journal) is checked
 * against the last checkpoint's hash and kept when it matches.
 *
 * A failure other than I/O (74: rerun once the disk is fixed) discards the
 * tmp and the journal: a rerun would only fail the same way.
 */
#include "export.h"

#include "arch.h"
#include "faults.h"
#include "job.h"
#include "journal.h"
#include "lock.h"
#include "sp_version.h"
#include "config.h"
#include "backend.h"
#include "dtype.h"
#include "error.h"
#include "eval.h"
#include "fileio.h"
#include "model.h"
#include "modelfile.h"
#include "safetensors.h"
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define CHUNK_BYTES ((int64_t)4 << 20)
#define CHECKPOINT_BYTES ((int64_t)64 << 20) /* a checkpoint within a tensor after this many bytes */

enum { XREC_CHECKPOINT = 1 }; /* journal record: an sp_gguf_ck */

typedef struct xitem {
    char gname[96];   /* GGUF name */
    char src[256];    /* HF tensor; "" for a generated one (rope_freqs) */
    int ndim;         /* 1 or 2 */
    int64_t rows, cols; /* HF shape (1-D: rows = n, cols = 1) */
    int64_t perm_hd;  /* > 0: permute rows per head of this many rows */
    int64_t src_row0, src_rows; /* a part of a fused tensor: its rows [src_row0, + rows) of src_rows; 0, 0: whole */
    int plus_one;     /* a (1 + w) norm: store 1 + w */
    int rope_freqs;   /* llama3 rope factors, generated */
    sp_gguf_ttype type;
    int reader;       /* whose input statistics weight its rounding (R_*) */
    int64_t layer;
} xitem;

/* The input a 2-D weight reads (sp_reader_stats): R_NONE for the embedding. */
enum { R_NONE, R_ATTN_IN, R_CTX, R_MLP_IN, R_MLP_INNER, R_HEAD };

static int reader_of(enum sp_arch_slot s) {
    switch (s) {
    case SP_SLOT_Q:
    case SP_SLOT_K:
    case SP_SLOT_V:
    case SP_SLOT_QKV: return R_ATTN_IN;
    case SP_SLOT_O: return R_CTX;
    case SP_SLOT_GATE:
    case SP_SLOT_UP:
    case SP_SLOT_GATE_UP: return R_MLP_IN;
    case SP_SLOT_DOWN: return R_MLP_INNER;
    default: return R_NONE;
    }
}

typedef struct xctx {
    sp_model m;
    int model_open;
    const char *dir;
    const sp_arch_gguf *g; /* the form written: the family's, or its heads_ne_d */
    xitem *it;
    int64_t n_it, cap_it;
    float *fbuf, *pbuf; /* (chunk rows × cols) */
    void *raw;
    int64_t buf_floats;
    /* writing */
    const sp_export_opts *o;
    sp_gguf_w *w;
    sp_journal *jr;
    int64_t since_ck, ck_bytes; /* bytes since the last checkpoint; the interval within a tensor */
    int64_t written;            /* data bytes this run wrote */
    double t0;
    int last_tenth;
    /* weighting calib */
    sp_reader_stats rs;
    int has_rs;
    float *colw; /* one tensor's column weights (max cols) */
} xctx;

static int add_item(xctx *x, const xitem *in);

/* Adds HF tensor src as GGUF tensor gname: 1-D (rows) in F32, or 2-D (rows, cols) of type t. */
static int add_named(xctx *x, const char *gname, const char *src, int ndim, int64_t rows, int64_t cols,
                     sp_gguf_ttype t, int plus_one) {
    xitem e;
    memset(&e, 0, sizeof e);
    snprintf(e.gname, sizeof e.gname, "%s", gname);
    snprintf(e.src, sizeof e.src, "%s", src);
    e.ndim = ndim, e.rows = rows, e.cols = ndim == 1 ? 1 : cols, e.plus_one = plus_one;
    e.type = ndim == 1 ? SP_GGUF_T_F32 : t;
    return add_item(x, &e);
}

static int add_item(xctx *x, const xitem *in) {
    if (x->n_it == x->cap_it) {
        int64_t cap = x->cap_it ? 2 * x->cap_it : 64;
        xitem *p = realloc(x->it, (size_t)cap * sizeof *p);
        if (!p) return sp_fail(SP_EX_SOFTWARE, "out of memory");
        x->it = p;
        x->cap_it = cap;
    }
    x->it[x->n_it++] = *in;
    return 0;
}

/* The GGUF name of a layer slot, or NULL when llama.cpp has no place for it. */
static const char *slot_name(const sp_arch *a, enum sp_arch_slot s) {
    int gated = sp_arch_slot_index(a, SP_SLOT_UP) >= 0 || sp_arch_slot_index(a, SP_SLOT_GATE_UP) >= 0;
    switch (s) {
    case SP_SLOT_ATTN_NORM: return "attn_norm.weight";
    case SP_SLOT_ATTN_NORM_B: return "attn_norm.bias";
    case SP_SLOT_Q: return "attn_q.weight";
    case SP_SLOT_K: return "attn_k.weight";
    case SP_SLOT_V: return "attn_v.weight";
    case SP_SLOT_QKV: return "attn_qkv.weight";
    case SP_SLOT_Q_B: return "attn_q.bias";
    case SP_SLOT_K_B: return "attn_k.bias";
    case SP_SLOT_V_B: return "attn_v.bias";
    case SP_SLOT_Q_NORM: return "attn_q_norm.weight";
    case SP_SLOT_K_NORM: return "attn_k_norm.weight";
    case SP_SLOT_O: return "attn_output.weight";
    case SP_SLOT_O_B: return "attn_output.bias";
    case SP_SLOT_MLP_NORM: return "ffn_norm.weight";
    case SP_SLOT_MLP_NORM_B: return "ffn_norm.bias";
    case SP_SLOT_GATE: return gated ? "ffn_gate.weight" : "ffn_up.weight";
    case SP_SLOT_UP: return "ffn_up.weight";
    case SP_SLOT_GATE_UP: return "ffn_up.weight";
    case SP_SLOT_GATE_B: return gated ? "ffn_gate.bias" : "ffn_up.bias";
    case SP_SLOT_UP_B: return "ffn_up.bias";
    case SP_SLOT_DOWN: return "ffn_down.weight";
    case SP_SLOT_DOWN_B: return "ffn_down.bias";
    case SP_SLOT_NONE: case SP_SLOT_COUNT: break;
    }
    return NULL;
}

/* The type of a tensor: 1-D always F32; 2-D the export's type, except
 * that the token embedding and the output head (`edge`) of a 4- or 5-bit
 * export stay Q8_0, as llama.cpp's own quantization keeps them at a higher
 * precision; a block type whose rows are not a multiple of 32 falls back to
 * F16 (counted). */
static sp_gguf_ttype type_for(const sp_export_opts *o, int ndim, int64_t cols, int edge, int64_t *fallback) {
    if (ndim == 1) return SP_GGUF_T_F32;
    sp_gguf_ttype t = o->type;
    if (edge && sp_gguf_ttype_is_block(t)) t = SP_GGUF_T_Q8_0;
    if (sp_gguf_ttype_is_block(t) && cols % SP_GGUF_QK) {
        (*fallback)++;
        return SP_GGUF_T_F16;
    }
    return t;
}

/* A fused tensor written apart (gguf.split_fused): qkv as attn_q, attn_k,
 * attn_v (q and k permuted when gguf.permute_qk), gate;up as ffn_gate, ffn_up. */
static int add_parts(xctx *x, const xitem *whole, int qkv, int64_t l) {
    const sp_config *c = &x->m.cfg;
    const int64_t q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim, F = c->intermediate_size;
    static const char *const qkv_names[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight"};
    static const char *const mlp_names[] = {"ffn_gate.weight", "ffn_up.weight"};
    const int64_t rows3[] = {q, kv, kv}, rows2[] = {F, F};
    const int n = qkv ? 3 : 2;
    int64_t r0 = 0;
    for (int k = 0; k < n; k++) {
        xitem e = *whole;
        snprintf(e.gname, sizeof e.gname, "blk.%lld.%s", (long long)l, qkv ? qkv_names[k] : mlp_names[k]);
        e.rows = qkv ? rows3[k] : rows2[k];
        e.src_row0 = r0, e.src_rows = whole->rows;
        e.perm_hd = x->g->permute_qk && qkv && k < 2 ? c->head_dim : 0;
        r0 += e.rows;
        SP_TRY(add_item(x, &e));
    }
    if (r0 != whole->rows)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': %lld rows, not the %lld its parts need", x->dir, whole->src,
                       (long long)whole->rows, (long long)r0);
    return 0;
}

static int plan_items(xctx *x, const sp_export_opts *o, sp_export_stats *st) {
    const sp_model *m = &x->m;
    const sp_config *c = &m->cfg;
    const sp_arch *a = m->arch;
    xitem e;
    int64_t V = c->vocab_size, D = c->hidden_size;

    SP_TRY(add_named(x, "token_embd.weight", a->embed, 2, V, D, type_for(o, 2, D, 1, &st->n_fallback_f16), 0));
    if (c->rope_llama3) {
        memset(&e, 0, sizeof e);
        snprintf(e.gname, sizeof e.gname, "rope_freqs.weight");
        e.ndim = 1, e.rows = c->rot_dim / 2, e.cols = 1, e.rope_freqs = 1, e.type = SP_GGUF_T_F32;
        SP_TRY(add_item(x, &e));
    }
    for (int64_t l = 0; l < c->n_layers; l++) {
        for (int t = 0; t < a->n_layer; t++) {
            const sp_arch_tensor *at = &a->layer[t];
            const char *g = slot_name(a, at->slot);
            if (!g) return sp_fail(SP_EX_SOFTWARE, "%s: tensor slot %d has no GGUF name", x->dir, (int)at->slot);
            memset(&e, 0, sizeof e);
            snprintf(e.gname, sizeof e.gname, "blk.%lld.%s", (long long)l, g);
            char nb[256];
            snprintf(e.src, sizeof e.src, "%s", sp_arch_layer_name(a, nb, l, at->suffix));
            int64_t shape[2];
            sp_arch_in_shape(a, c, t, shape, &e.ndim);
            e.rows = shape[0];
            e.cols = e.ndim == 2 ? shape[1] : 1;
            if (x->g->permute_qk && (at->slot == SP_SLOT_Q || at->slot == SP_SLOT_K || at->slot == SP_SLOT_Q_B || at->slot == SP_SLOT_K_B))
                e.perm_hd = c->head_dim;
            if (a->norm_plus_one && at->role == SP_ROLE_NORM) e.plus_one = 1;
            e.reader = e.ndim == 2 ? reader_of(at->slot) : R_NONE;
            e.layer = l;
            e.type = type_for(o, e.ndim, e.cols, 0, &st->n_fallback_f16);
            if (x->g->split_fused && (at->slot == SP_SLOT_QKV || at->slot == SP_SLOT_GATE_UP)) {
                SP_TRY(add_parts(x, &e, at->slot == SP_SLOT_QKV, l));
                continue;
            }
            SP_TRY(add_item(x, &e));
        }
    }
    SP_TRY(add_named(x, "output_norm.weight", a->final_norm, 1, D, 1, SP_GGUF_T_F32, a->norm_plus_one));
    if (a->final_norm_bias) SP_TRY(add_named(x, "output_norm.bias", a->final_norm_bias, 1, D, 1, SP_GGUF_T_F32, 0));
    /* gguf.head_tied: tied in llama.cpp, whatever the file holds (HF ties it too) */
    int head = m->has_head && !(x->g->head_tied && c->tie_word_embeddings);
    if (head || x->g->head_always) {
        SP_TRY(add_named(x, "output.weight", head ? a->head : a->embed, 2, V, D, type_for(o, 2, D, 1, &st->n_fallback_f16), 0));
        x->it[x->n_it - 1].reader = R_HEAD;
    }
    if (m->has_head_bias) SP_TRY(add_named(x, "output.bias", a->head_bias, 1, V, 1, SP_GGUF_T_F32, 0));
    else if (x->g->head_bias_required)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is missing: llama.cpp's %s requires output.bias", x->dir, a->head_bias,
                       x->g->arch);
    return 0;
}

/* ---- metadata ------------------------------------------------------------ */

static int kv_arch(sp_gguf_w *w, xctx *x, const char *key, char buf[128]) {
    (void)w;
    snprintf(buf, 128, "%s.%s", x->g->arch, key);
    return 0;
}

#define K(name) (kv_arch(w, x, name, kb), kb)

static int write_hparams(sp_gguf_w *w, xctx *x, const sp_export_opts *o) {
    const sp_config *c = &x->m.cfg;
    char kb[128];
    char name[256];
    sp_modelfile_name(x->dir, name, sizeof name);
    uint32_t file_type = sp_gguf_file_type(o->type);
    SP_TRY(sp_gguf_kv_str(w, "general.architecture", x->g->arch, -1));
    SP_TRY(sp_gguf_kv_str(w, "general.name", name, -1));
    SP_TRY(sp_gguf_kv_u32(w, "general.alignment", SP_GGUF_DEFAULT_ALIGNMENT));
    SP_TRY(sp_gguf_kv_u32(w, "general.file_type", file_type));
    if (sp_gguf_ttype_is_block(o->type)) SP_TRY(sp_gguf_kv_u32(w, "general.quantization_version", 2));
    SP_TRY(sp_gguf_kv_u32(w, K("context_length"), (uint32_t)(c->max_pos > 0 ? c->max_pos : 2048)));
    SP_TRY(sp_gguf_kv_u32(w, K("embedding_length"), (uint32_t)c->hidden_size));
    SP_TRY(sp_gguf_kv_u32(w, K("block_count"), (uint32_t)c->n_layers));
    SP_TRY(sp_gguf_kv_u32(w, K("feed_forward_length"), (uint32_t)c->intermediate_size));
    SP_TRY(sp_gguf_kv_u32(w, K("attention.head_count"), (uint32_t)c->n_heads));
    SP_TRY(sp_gguf_kv_u32(w, K("attention.head_count_kv"), (uint32_t)c->n_kv_heads));
    SP_TRY(sp_gguf_kv_u32(w, K("attention.key_length"), (uint32_t)c->head_dim));
    SP_TRY(sp_gguf_kv_u32(w, K("attention.value_length"), (uint32_t)c->head_dim));
    SP_TRY(sp_gguf_kv_u32(w, K("rope.dimension_count"), (uint32_t)c->rot_dim));
    SP_TRY(sp_gguf_kv_f32(w, K("rope.freq_base"), (float)c->rope_theta));
    if (c->rope_linear > 0) {
        SP_TRY(sp_gguf_kv_str(w, K("rope.scaling.type"), "linear", -1));
        SP_TRY(sp_gguf_kv_f32(w, K("rope.scaling.factor"), (float)c->rope_linear));
    }
    if (x->m.arch->norm == SP_BK_NORM_LAYER) SP_TRY(sp_gguf_kv_f32(w, K("attention.layer_norm_epsilon"), (float)c->rms_norm_eps));
    else SP_TRY(sp_gguf_kv_f32(w, K("attention.layer_norm_rms_epsilon"), (float)c->rms_norm_eps));
    if (c->sliding_window > 0) {
        if (x->g->window_key) SP_TRY(sp_gguf_kv_u32(w, K("attention.sliding_window"), (uint32_t)c->sliding_window));
        fprintf(stderr,
                "slicepipe export: warning: %s/config.json: sliding_window %lld: llama.cpp's %s runs full causal attention, so "
                "contexts longer than %lld tokens will differ from HF\n",
                x->dir, (long long)c->sliding_window, x->g->arch, (long long)c->sliding_window);
    }
    return 0;
}

/* The tokenizer of dir as a GGUF vocabulary of at most V ids: *tok and *v
 * filled (the caller frees both), or *minimal = 1 when dir has no tokenizer
 * (a placeholder vocabulary is written). 65 for one that cannot convert. */
static int vocab_open(const char *dir, int64_t V, sp_tok **tok, sp_tok_vocab *v, int *minimal) {
    memset(v, 0, sizeof *v);
    *tok = NULL;
    int rc = sp_tok_open(dir, tok);
    *minimal = rc == SP_EX_NOINPUT;
    if (*minimal) {
        sp_err_clear();
        return 0;
    }
    if (!rc) rc = sp_tok_vocab_load(*tok, v);
    if (!rc && v->n > V)
        rc = sp_fail(SP_EX_DATAERR, "%s: %lld tokens, more than config.json's vocab_size %lld", sp_tok_path(*tok), (long long)v->n,
                     (long long)V);
    return rc;
}

static int write_vocab(sp_gguf_w *w, xctx *x, sp_export_stats *st) {
    const sp_config *c = &x->m.cfg;
    int64_t V = c->vocab_size;
    sp_tok *tok = NULL;
    sp_tok_vocab v;
    int minimal;
    int rc = vocab_open(x->dir, V, &tok, &v, &minimal);
    if (rc) goto out;
    if (!minimal) {
        snprintf(st->tokenizer, sizeof st->tokenizer, "%s (%s)", sp_tok_kind_name(tok),
                 v.style == SP_TOK_STYLE_BPE ? "gpt2" : "llama");
    } else {
        /* llama.cpp loads no model without a vocabulary: one of placeholder
         * pieces, with <unk> <s> </s> <0x0A> at 0 1 2 3 */
        snprintf(st->tokenizer, sizeof st->tokenizer, "none (placeholder t5 vocabulary)");
        v.style = SP_TOK_STYLE_SPM;
        v.unk_id = 0, v.bos_id = V > 1 ? 1 : -1, v.eos_id = V > 2 ? 2 : -1, v.pad_id = -1;
        v.add_space_prefix = 1;
    }
    /* the minimal vocabulary is a unigram (T5-style) one: llama.cpp maps any
     * text it cannot match to <unk> there, where its SPM and BPE vocabularies
     * abort on a byte with no piece (node-llama-cpp tokenizes at load) */
    int has_bytes = 0;
    for (int64_t i = 0; i < v.n; i++) has_bytes |= v.type[i] == SP_TOK_PIECE_BYTE;
    if (!minimal && v.style == SP_TOK_STYLE_SPM && !has_bytes) {
        /* the same abort for an SPM vocabulary without <0xNN> pieces: written
         * as unigram, which maps an unknown character to <unk> */
        minimal = 2;
        snprintf(st->tokenizer + strlen(st->tokenizer), sizeof st->tokenizer - strlen(st->tokenizer), " as t5: no byte pieces");
    }
    SP_TRY(sp_gguf_kv_str(w, "tokenizer.ggml.model", minimal ? "t5" : v.style == SP_TOK_STYLE_BPE ? "gpt2" : "llama", -1));
    SP_TRY(sp_gguf_kv_str(w, "tokenizer.ggml.pre", v.style == SP_TOK_STYLE_BPE ? v.pre : "default", -1));
    if ((rc = sp_gguf_kv_arr_str_begin(w, "tokenizer.ggml.tokens", V))) goto out;
    for (int64_t i = 0; i < V; i++) {
        char b[40];
        if (i < v.n) {
            rc = sp_gguf_kv_arr_str(w, v.piece[i], -1);
        } else {
            /* llama.cpp's phi3 vocabulary looks these up by name */
            static const char *const fixed[] = {"<unk>", "<s>", "</s>", "<0x0A>", "<|end|>", "<|endoftext|>", "<|user|>",
                                                "<|assistant|>", "<|system|>"};
            int n = minimal == 1 && i < 9 ? snprintf(b, sizeof b, "%s", fixed[i])
                    : minimal == 1   ? snprintf(b, sizeof b, "[T%lld]", (long long)i)
                                     : snprintf(b, sizeof b, "[PAD%lld]", (long long)i);
            rc = sp_gguf_kv_arr_str(w, b, n);
        }
        if (rc) goto out;
    }
    float *scores = NULL;
    int32_t *types = NULL;
    if ((rc = sp_calloc((void **)&scores, V, sizeof *scores, "token scores")) ||
        (rc = sp_calloc((void **)&types, V, sizeof *types, "token types"))) {
        free(scores);
        goto out;
    }
    for (int64_t i = 0; i < V; i++) {
        scores[i] = i < v.n ? v.score[i] : 0.0f;
        types[i] = i < v.n     ? v.type[i]
                   : minimal != 1 ? SP_TOK_PIECE_UNUSED
                   : i == 0    ? SP_TOK_PIECE_UNKNOWN
                   : i < 3     ? SP_TOK_PIECE_CONTROL
                   : i == 3    ? SP_TOK_PIECE_BYTE /* llama.cpp's SPM vocabulary looks up the newline byte */
                               : SP_TOK_PIECE_NORMAL;
    }
    rc = sp_gguf_kv_arr(w, "tokenizer.ggml.scores", SP_GGUF_V_F32, scores, V);
    if (!rc) rc = sp_gguf_kv_arr(w, "tokenizer.ggml.token_type", SP_GGUF_V_I32, types, V);
    free(scores);
    free(types);
    if (rc) goto out;
    if (v.style == SP_TOK_STYLE_BPE) {
        if ((rc = sp_gguf_kv_arr_str_begin(w, "tokenizer.ggml.merges", v.n_merges))) goto out;
        for (int64_t i = 0; i < v.n_merges; i++)
            if ((rc = sp_gguf_kv_arr_str(w, v.merges[i], -1))) goto out;
    }
    if (v.bos_id >= 0 && (rc = sp_gguf_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v.bos_id))) goto out;
    if (v.eos_id >= 0 && (rc = sp_gguf_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v.eos_id))) goto out;
    if (v.unk_id >= 0 && (rc = sp_gguf_kv_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v.unk_id))) goto out;
    if (v.pad_id >= 0 && (rc = sp_gguf_kv_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v.pad_id))) goto out;
    if ((rc = sp_gguf_kv_bool(w, "tokenizer.ggml.add_bos_token", v.add_bos))) goto out;
    if ((rc = sp_gguf_kv_bool(w, "tokenizer.ggml.add_eos_token", v.add_eos))) goto out;
    if (v.style == SP_TOK_STYLE_SPM && minimal != 1 && (rc = sp_gguf_kv_bool(w, "tokenizer.ggml.add_space_prefix", v.add_space_prefix)))
        goto out;
out:
    sp_tok_vocab_free(&v);
    sp_tok_free(tok);
    return rc;
}

/* ---- tensor data ---------------------------------------------------------- */

/* Rows [r0, r0 + n) of it (HF view rows × cols) as float32 into dst. */
static int read_rows(xctx *x, const xitem *it, int64_t r0, int64_t n, float *dst) {
    const sp_st_file *f;
    const sp_st_tensor *t = sp_ckpt_find(x->m.ckpt, it->src, &f);
    if (!t) return sp_fail(SP_EX_DATAERR, "%s: tensor '%s' is missing", x->dir, it->src);
    const int64_t src_rows = it->src_rows ? it->src_rows : it->rows;
    if (t->numel != src_rows * it->cols)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': %lld elements, expected %lld", sp_st_path(f), it->src, (long long)t->numel,
                       (long long)(src_rows * it->cols));
    int es = sp_dtype_size(t->dtype);
    int64_t cnt = n * it->cols;
    SP_TRY(sp_io_pread_full(sp_st_fd(f), x->raw, cnt * es, t->file_offset + (it->src_row0 + r0) * it->cols * es, sp_st_path(f)));
    int64_t bad = sp_convert_to_f32(t->dtype, x->raw, cnt, dst);
    if (bad >= 0)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': non-finite value at element %lld", sp_st_path(f), it->src,
                       (long long)(r0 * it->cols + bad));
    return 0;
}

/* Within each head of hd rows: out row 2i + j = in row j·hd/2 + i. */
static void permute_heads(const float *in, float *out, int64_t rows, int64_t cols, int64_t hd) {
    int64_t half = hd / 2;
    for (int64_t h = 0; h < rows / hd; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(out + (h * hd + 2 * i + j) * cols, in + (h * hd + j * half + i) * cols, (size_t)cols * sizeof(float));
}

static void llama3_factors(const sp_config *c, float *f, int64_t n) {
    double lo_wl = c->rope_original_max_pos / c->rope_low_freq_factor;
    double hi_wl = c->rope_original_max_pos / c->rope_high_freq_factor;
    for (int64_t i = 0; i < n; i++) {
        double freq = 1.0 / pow(c->rope_theta, (double)(2 * i) / (double)c->rot_dim);
        double wl = 2.0 * M_PI / freq;
        if (wl < hi_wl) f[i] = 1.0f;
        else if (wl > lo_wl) f[i] = (float)c->rope_factor;
        else {
            double s = (c->rope_original_max_pos / wl - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
            f[i] = (float)(1.0 / ((1.0 - s) / c->rope_factor + s));
        }
    }
}

static int64_t chunk_rows(const xitem *it) {
    if (it->ndim == 1) return it->rows;
    int64_t unit = it->perm_hd > 0 ? it->perm_hd : 1;
    int64_t k = CHUNK_BYTES / ((int64_t)sizeof(float) * it->cols) / unit * unit;
    if (k < unit) k = unit;
    if (k > it->rows) k = it->rows;
    return k;
}

/* Makes what was written durable, journals it, and is a commit point. */
static int checkpoint(xctx *x) {
    sp_gguf_ck ck;
    SP_TRY(sp_gguf_sync(x->w, &ck));
    SP_TRY(sp_journal_append(x->jr, XREC_CHECKPOINT, &ck, sizeof ck));
    x->since_ck = 0;
    sp_fault_commit_point("export");
    return 0;
}

/* The column weights of item it under weighting calib: its reader's Σ x²
 * per input column over the calibration tokens, divided by their count; NULL
 * (the reference rounding) for plain weighting, a type that is no block
 * type, and the embedding. */
static const float *column_weights(xctx *x, const xitem *it) {
    if (!x->has_rs || it->ndim != 2 || !sp_gguf_ttype_is_block(it->type) || it->reader == R_NONE) return NULL;
    const sp_reader_stats *rs = &x->rs;
    const double *v = it->reader == R_ATTN_IN ? rs->attn_in[it->layer]
                      : it->reader == R_CTX   ? rs->attn_ctx[it->layer]
                      : it->reader == R_MLP_IN ? rs->mlp_in[it->layer]
                      : it->reader == R_MLP_INNER ? rs->mlp_inner[it->layer]
                                                  : rs->head_in;
    SP_ASSERT(rs->tokens > 0);
    for (int64_t j = 0; j < it->cols; j++) x->colw[j] = (float)(v[j] / (double)rs->tokens);
    return x->colw;
}

/* The reader statistics of the model being exported, over the calibration
 * tokens (sp_eval's forward pass, float32, on the CPU). */
static int reader_stats(xctx *x, const sp_export_opts *o, sp_export_stats *st) {
    if (!sp_gguf_ttype_is_block(o->type))
        return sp_fail(SP_EX_USAGE, "--quant-weighting calib: --type %s is no block type (q8_0, q5_1, q5_0, q4_1, q4_0)",
                       sp_gguf_ttype_name(o->type));
    if (!o->calib_tokens) return sp_fail(SP_EX_USAGE, "--quant-weighting calib needs --calib TOKENS.npy");
    double t0 = sp_now();
    sp_tokens tk = {0};
    sp_bk *bk = NULL;
    int64_t T = o->calib_seqlen > 0 ? o->calib_seqlen : 256;
    int rc = sp_tokens_load(o->calib_tokens, x->m.cfg.vocab_size, 0, &tk);
    if (!rc && tk.n < T)
        rc = sp_fail(SP_EX_DATAERR, "%s: %lld tokens, fewer than one window of %lld", o->calib_tokens, (long long)tk.n, (long long)T);
    if (!rc) rc = sp_reader_stats_init(&x->m, &x->rs);
    if (!rc) x->has_rs = 1;
    if (!rc) rc = sp_bk_open_host("cpu", "export", &bk);
    if (!rc) bk->set_threads(bk, o->threads, x->m.cfg.hidden_size); /* the count in effect; 0: the default */
    if (!rc) {
        int64_t avail = tk.n / T, W = o->calib_windows > 0 ? o->calib_windows : 64;
        sp_eval_opts eo = {.seqlen = T, .windows = W < avail ? W : avail, .bk = bk, .stats = &x->rs};
        sp_eval_result r;
        rc = sp_eval_check(&x->m, tk.n, &eo);
        if (!rc) rc = sp_eval(&x->m, &tk, &eo, &r);
    }
    sp_bk_close(bk);
    sp_tokens_free(&tk);
    st->calib_tokens = x->rs.tokens;
    st->calib_seconds = sp_now() - t0;
    return rc;
}

/* Rows [r0, rows) of it (r0 > 0: resumed within it, after a checkpoint). */
static int write_item(sp_gguf_w *w, xctx *x, const xitem *it, int64_t r0) {
    if (it->rope_freqs) {
        llama3_factors(&x->m.cfg, x->fbuf, it->rows);
        return sp_gguf_rows(w, x->fbuf, 1);
    }
    int64_t k = chunk_rows(it);
    if (r0 % (it->perm_hd > 0 ? it->perm_hd : 1))
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': the journal resumes it at row %lld, inside a head", sp_gguf_tmp_path(w),
                       it->gname, (long long)r0);
    int64_t row_bytes = it->ndim == 1 ? 0 : sp_gguf_row_bytes(it->type, it->cols);
    const float *colw = column_weights(x, it);
    for (int64_t r = r0; r < it->rows; r += k) {
        int64_t n = it->rows - r < k ? it->rows - r : k;
        float *src = x->fbuf;
        SP_TRY(read_rows(x, it, r, n, src));
        if (it->perm_hd > 0) {
            if (n % it->perm_hd)
                return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': %lld rows are not whole heads of %lld", x->dir, it->src, (long long)it->rows,
                               (long long)it->perm_hd);
            permute_heads(src, x->pbuf, n, it->cols, it->perm_hd);
            src = x->pbuf;
        }
        if (it->plus_one)
            for (int64_t i = 0; i < n * it->cols; i++) src[i] += 1.0f;
        /* 1-D: one GGUF row of n values */
        SP_TRY(sp_gguf_rows_weighted(w, src, it->ndim == 1 ? 1 : n, colw));
        x->since_ck += n * row_bytes;
        x->written += n * row_bytes;
        if (r + n < it->rows && x->since_ck >= x->ck_bytes) SP_TRY(checkpoint(x));
    }
    return 0;
}

static int has_gguf(const sp_arch *a) { return a->gguf.arch != NULL; }

const char *sp_export_families(char *buf, size_t n) { return sp_arch_names(buf, n, has_gguf, "", ", ", " and "); }

/* The form written for a model of family m and config c (with a head tensor
 * of its own when has_head): the family's gguf entry, or its heads_ne_d form,
 * in *out; 65 naming dir for what llama.cpp cannot run. */
static int map_family(const sp_model *m, const sp_config *c, int has_head, const char *dir, const sp_arch_gguf **out) {
    const sp_arch *a = m->arch;
    const char *path = dir;
    const sp_arch_gguf *g = &a->gguf;
    char known[512];
    if (!g->arch)
        return sp_fail(SP_EX_DATAERR, "%s/config.json: model_type '%s' has no llama.cpp architecture; GGUF export supports %s", path,
                       a->model_type, sp_export_families(known, sizeof known));
    if (g->head_tied && has_head && !c->tie_word_embeddings)
        return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': llama.cpp's %s always ties the head to the embedding", path, a->head, g->arch);
    if (g->heads_ne_d && c->n_heads * c->head_dim != c->hidden_size) g = g->heads_ne_d; /* the summary names the one written */
    if (g->whole_head_rotary && c->rot_dim != c->head_dim)
        return sp_fail(SP_EX_DATAERR, "%s/config.json: partial rotary on a %s-family model is not supported by llama.cpp's %s", path,
                       g->arch, g->arch);
    *out = g;
    return 0;
}

int sp_export_check(const sp_model *m, int64_t hidden, int tied_head) {
    sp_config c = m->cfg; /* the output's: width hidden, its head tied only as the plan keeps it (output.c) */
    c.hidden_size = hidden;
    c.tie_word_embeddings = tied_head;
    const sp_arch_gguf *g;
    SP_TRY(map_family(m, &c, !tied_head, m->dir, &g));
    sp_tok *tok;
    sp_tok_vocab v;
    int minimal;
    int rc = vocab_open(m->dir, c.vocab_size, &tok, &v, &minimal); /* the output carries this tokenizer */
    sp_tok_vocab_free(&v);
    sp_tok_free(tok);
    return rc;
}

/* ---- the journal ---------------------------------------------------------- */

static int64_t checkpoint_interval(void) {
    const char *s = getenv("SLICEPIPE_EXPORT_CHECKPOINT_BYTES"); /* tests: checkpoints within small tensors */
    char *end = NULL;
    long long v = s && *s ? strtoll(s, &end, 10) : 0;
    return v > 0 && end && !*end ? (int64_t)v : CHECKPOINT_BYTES;
}

/* The input: the shards' fingerprint (names, sizes, headers) and each
 * shard's size, mtime and ctime (an edit in place changes them). */
static int input_identity(const sp_model *m, char hex[33]) {
    char fp[33];
    SP_TRY(sp_resume_fingerprint(m, fp));
    XXH3_state_t *xs = XXH3_createState();
    if (!xs) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    XXH3_128bits_reset(xs);
    XXH3_128bits_update(xs, fp, 32);
    int rc = 0;
    for (int i = 0; i < sp_ckpt_shard_count(m->ckpt) && !rc; i++) {
        const sp_st_file *f = sp_ckpt_shard(m->ckpt, i);
        struct stat sb;
        if (fstat(sp_st_fd(f), &sb) != 0) rc = sp_fail_errno(SP_EX_IOERR, "%s: fstat", sp_st_path(f));
        int64_t v[3] = {(int64_t)sb.st_size, (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec,
                        (int64_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec};
        XXH3_128bits_update(xs, v, sizeof v);
    }
    XXH128_hash_t h = XXH3_128bits_digest(xs);
    XXH3_freeState(xs);
    sp_hex128(h.high64, h.low64, hex);
    return rc;
}

/* path + suffix, malloc'd, or NULL. */
static char *with_suffix(const char *path, const char *suffix) {
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", path, suffix);
    return p;
}

/* After every declaration: what the journal is bound to (see the top). */
static int export_identity(xctx *x, sp_run_identity *id) {
    char hdr[33], txt[256], rs[33] = "";
    memset(id, 0, sizeof *id);
    SP_TRY(sp_gguf_header_hash(x->w, hdr));
    if (x->has_rs) { /* weighting calib: the statistics themselves */
        XXH3_state_t *xs = XXH3_createState();
        if (!xs) return sp_fail(SP_EX_SOFTWARE, "out of memory");
        XXH3_128bits_reset(xs);
        for (int64_t i = 0; i < x->n_it; i++) {
            const float *w = column_weights(x, &x->it[i]);
            if (w) XXH3_128bits_update(xs, w, (size_t)x->it[i].cols * sizeof *w);
        }
        XXH128_hash_t h = XXH3_128bits_digest(xs);
        XXH3_freeState(xs);
        sp_hex128(h.high64, h.low64, rs);
    }
    int n = snprintf(txt, sizeof txt, "slicepipe-export-1\ntype=%s\nheader=%s\n%s%s%s", sp_gguf_ttype_name(x->o->type), hdr,
                     x->has_rs ? "weighting=calib\nstats=" : "", rs, x->has_rs ? "\n" : "");
    XXH128_hash_t h = XXH3_128bits(txt, (size_t)n);
    sp_hex128(h.high64, h.low64, id->manifest);
    snprintf(id->version, sizeof id->version, "%s", SP_VERSION);
    return input_identity(&x->m, id->input);
}

/* An existing journal of another export is refused, untouched. A torn or
 * foreign header is left to sp_journal_open to judge. */
static int check_identity(const char *jp, const sp_run_identity *want, const char *out, const sp_export_opts *o) {
    sp_run_identity have;
    int rc = sp_run_identity_read(jp, &have);
    if (rc == SP_EX_NOINPUT || rc == SP_EX_DATAERR) {
        sp_err_clear();
        return 0;
    }
    SP_TRY(rc);
    char why[512] = "";
    size_t k = 0;
    if (strcmp(have.manifest, want->manifest))
        k += (size_t)snprintf(why + k, sizeof why - k, "%sthe export changed (--type, config.json, the tokenizer or the tensors)", k ? "; " : "");
    if (strcmp(have.input, want->input))
        k += (size_t)snprintf(why + k, sizeof why - k, "%sthe model's shards changed (names, sizes, headers, mtimes or ctimes)", k ? "; " : "");
    if (strcmp(have.version, want->version))
        k += (size_t)snprintf(why + k, sizeof why - k, "%sit was written by slicepipe %s, this is %s", k ? "; " : "", have.version,
                              want->version);
    if (!k) return 0;
    return sp_fail(SP_EX_DATAERR, "%s: the journal %s of an unfinished export does not match this one: %s; refused (resuming would "
                   "splice two exports); %s to discard it and start afresh",
                   out, jp, why, o->restart_hint ? o->restart_hint : "rerun with --restart");
}

/* The journal's checkpoints as an increasing list: one at or before an
 * earlier one's position supersedes it and everything after it. */
static int replay(const sp_journal *jr, const char *jp, sp_gguf_ck **out, int *n_out) {
    int n = sp_journal_count(jr), k = 0;
    sp_gguf_ck *ck;
    *out = NULL;
    *n_out = 0;
    SP_TRY(sp_calloc((void **)&ck, n > 0 ? n : 1, sizeof *ck, "export checkpoints"));
    for (int i = 0; i < n; i++) {
        const sp_jrec *r = sp_journal_at(jr, i);
        if (r->type != XREC_CHECKPOINT || r->len != sizeof *ck) {
            free(ck);
            return sp_fail(SP_EX_DATAERR, "journal %s: record %llu is not an export checkpoint (not an export's journal, or damaged)", jp,
                           (unsigned long long)r->seq);
        }
        sp_gguf_ck c;
        memcpy(&c, r->payload, sizeof c);
        while (k > 0 && (ck[k - 1].tensor > c.tensor || (ck[k - 1].tensor == c.tensor && ck[k - 1].rows >= c.rows))) k--;
        ck[k++] = c;
    }
    *out = ck;
    *n_out = k;
    return 0;
}

/* A finished file the journal outlived: kept when it is what the last
 * checkpoint (the whole file) says. */
static int finished_already(const char *out, const char *tmp, const sp_gguf_ck *last, int64_t n_tensors) {
    struct stat sb;
    if (last->tensor != n_tensors || lstat(tmp, &sb) == 0) return 0;
    if (lstat(out, &sb) != 0 || !S_ISREG(sb.st_mode) || (int64_t)sb.st_size != last->bytes) return 0;
    char hex[33];
    if (sp_io_xxh128_range(out, 0, last->bytes, hex)) {
        sp_err_clear();
        return 0;
    }
    return !strcmp(hex, last->xxh128);
}

static void progress(xctx *x, int64_t done) {
    if (x->o->quiet) return;
    int tty = isatty(2), tenth = (int)(10 * done / (x->n_it ? x->n_it : 1));
    if (!tty && tenth == x->last_tenth) return; /* logs: a line per tenth */
    x->last_tenth = tenth;
    fprintf(stderr, "%s%s: %lld/%lld tensors | written %.1f MB | elapsed %.1fs%s", tty ? "\r" : "",
            x->o->label ? x->o->label : "slicepipe export", (long long)done, (long long)x->n_it, (double)x->written / 1e6,
            sp_now() - x->t0, !tty || done == x->n_it ? "\n" : "");
}

/* The journal opened (or created) and replayed; the writer positioned. */
static int open_journal(xctx *x, const char *out_path, const char *jp, sp_gguf_ck **ck, int *n_ck) {
    sp_run_identity id;
    SP_TRY(export_identity(x, &id));
    SP_TRY(check_identity(jp, &id, out_path, x->o));
    int64_t dropped = 0;
    SP_TRY(sp_journal_open(jp, &id, &x->jr, &dropped));
    if (dropped && !x->o->quiet) fprintf(stderr, "%s: dropped a torn journal tail of %lld bytes\n", x->o->label ? x->o->label : "slicepipe export",
                                         (long long)dropped);
    return replay(x->jr, jp, ck, n_ck);
}

/* Continues the tmp after its last good checkpoint, or starts it. *t0, *r0:
 * where the rows resume. */
static int start_writing(xctx *x, const sp_gguf_ck *ck, int n_ck, int64_t *t0, int64_t *r0, sp_export_stats *st) {
    const char *label = x->o->label ? x->o->label : "slicepipe export", *tmp = sp_gguf_tmp_path(x->w);
    struct stat sb;
    int had_tmp = lstat(tmp, &sb) == 0, n_good = 0;
    int64_t dropped = 0;
    SP_TRY(sp_gguf_resume(x->w, ck, n_ck, &n_good, &dropped));
    *t0 = *r0 = 0;
    if (!n_good) {
        if (!x->o->quiet && had_tmp)
            fprintf(stderr, "%s: %s %s; starting afresh\n", label, tmp, n_ck ? "does not match its journal" : "has no journal");
        return checkpoint(x); /* the header */
    }
    const sp_gguf_ck *at = &ck[n_good - 1];
    *t0 = at->tensor, *r0 = at->rows;
    st->resumed_bytes = at->bytes;
    if (!x->o->quiet) {
        char more[128] = "";
        if (n_good < n_ck) snprintf(more, sizeof more, "; the bytes after them differ from the journal and are redone");
        else if (dropped) snprintf(more, sizeof more, "; a torn tail of %lld bytes dropped", (long long)dropped);
        char rows[160] = "";
        if (at->rows) snprintf(rows, sizeof rows, " and %lld rows of '%s'", (long long)at->rows, x->it[at->tensor].gname);
        fprintf(stderr, "%s: resuming %s after %lld of %lld tensors%s: %lld bytes verified by hash%s\n", label, tmp, (long long)at->tensor,
                (long long)x->n_it, rows, (long long)at->bytes, more);
    }
    return 0;
}

int sp_export_gguf(const char *model_dir, const char *out_path, const sp_export_opts *opts, sp_export_stats *st) {
    xctx x;
    sp_lock *lock = NULL;
    char *jp = NULL, *lp = NULL;
    sp_gguf_ck *ck = NULL;
    int n_ck = 0, writing = 0;
    int rc;
    memset(&x, 0, sizeof x);
    memset(st, 0, sizeof *st);
    x.dir = model_dir;
    x.o = opts;
    x.t0 = sp_now();
    x.ck_bytes = checkpoint_interval();
    x.last_tenth = -1;
    if ((rc = sp_model_open(model_dir, &x.m))) return rc;
    x.model_open = 1;
    /* The output path before any work (io/base/fileio.h's rule): not a folder or
     * FIFO, not one of the model's files, and an existing file only with
     * --force, or when this export's own journal (a run killed after the
     * rename) shows it finished it: finished_already checks that below. A
     * caller-given journal is [output] gguf's, in the job's own folder. */
    sp_io_paths *taken = NULL;
    rc = sp_model_add_inputs(&x.m, &taken);
    if (!rc) rc = sp_io_out_check(out_path, &taken, SP_IO_OUT_REPLACE);
    sp_io_paths_free(taken);
    if (rc) goto out;
    struct stat sb;
    const int exists = !opts->force && !opts->journal_path && lstat(out_path, &sb) == 0;
    if (exists) { /* without a journal of ours (or with --restart, which discards it): refused now */
        char *j0 = with_suffix(out_path, ".journal");
        rc = !j0 ? sp_fail(SP_EX_SOFTWARE, "out of memory")
             : opts->restart || lstat(j0, &sb) != 0 ? sp_io_out_check(out_path, NULL, 0) : 0;
        free(j0);
        if (rc) goto out;
    }
    if (x.m.cfg.sliced) {
        rc = sp_fail(SP_EX_DATAERR, "%s: a per-layer sliced model (shortcut matrices) is no stock architecture, and llama.cpp cannot "
                     "run it; slice with [slicing] basis = \"global\" for a GGUF-exportable model", model_dir);
        goto out;
    }
    if ((rc = map_family(&x.m, &x.m.cfg, x.m.has_head, model_dir, &x.g))) goto out;
    snprintf(st->arch, sizeof st->arch, "%s", x.g->arch);
    if ((rc = plan_items(&x, opts, st))) goto out;

    int64_t need = 1;
    for (int64_t i = 0; i < x.n_it; i++) {
        int64_t f = chunk_rows(&x.it[i]) * x.it[i].cols;
        if (f > need) need = f;
    }
    x.buf_floats = need;
    if (opts->weighting == SP_EXPORT_WEIGHT_CALIB) {
        int64_t cmax = 1;
        for (int64_t i = 0; i < x.n_it; i++) cmax = x.it[i].cols > cmax ? x.it[i].cols : cmax;
        if ((rc = sp_alloc((void **)&x.colw, cmax, sizeof(float), "column weights"))) goto out;
        if ((rc = reader_stats(&x, opts, st))) goto out;
    }
    if ((rc = sp_alloc((void **)&x.fbuf, need, sizeof(float), "export row buffer"))) goto out;
    if ((rc = sp_alloc((void **)&x.pbuf, need, sizeof(float), "export row buffer"))) goto out;
    if ((rc = sp_alloc(&x.raw, need, sizeof(float), "export read buffer"))) goto out;
    st->peak_chunk_bytes = 3 * need * (int64_t)sizeof(float);

    if ((rc = sp_gguf_init_resume(out_path, &x.w))) goto out;
    if ((rc = write_hparams(x.w, &x, opts))) goto out;
    if ((rc = write_vocab(x.w, &x, st))) goto out;
    for (int64_t i = 0; i < x.n_it; i++) {
        const xitem *it = &x.it[i];
        int64_t ne[2] = {it->ndim == 2 ? it->cols : it->rows, it->rows};
        if ((rc = sp_gguf_tensor(x.w, it->gname, it->ndim, ne, it->type))) goto out;
    }
    st->n_tensors = x.n_it;

    /* the journal, under a lock (the caller's, with its own journal path) */
    jp = opts->journal_path ? strdup(opts->journal_path) : with_suffix(out_path, ".journal");
    lp = opts->journal_path ? NULL : with_suffix(out_path, ".lock");
    if (!jp || (!opts->journal_path && !lp)) rc = sp_fail(SP_EX_SOFTWARE, "out of memory");
    if (!rc && lp) rc = sp_lock_acquire(lp, &lock);
    if (rc) goto out;
    if (opts->restart) {
        unlink(jp);
        unlink(sp_gguf_tmp_path(x.w));
    }
    if ((rc = open_journal(&x, out_path, jp, &ck, &n_ck))) goto out;
    st->file_bytes = sp_gguf_file_bytes(x.w); /* the header's size is known now */
    if (n_ck && finished_already(out_path, sp_gguf_tmp_path(x.w), &ck[n_ck - 1], x.n_it)) {
        snprintf(st->xxh128, sizeof st->xxh128, "%s", ck[n_ck - 1].xxh128);
        st->reused = 1;
        if (!opts->journal_path) unlink(jp);
        goto out;
    }
    if (exists && (rc = sp_io_out_check(out_path, NULL, 0))) goto out; /* a journal, but not of this file */
    int64_t t0, r0;
    writing = 1;
    if ((rc = start_writing(&x, ck, n_ck, &t0, &r0, st))) goto out;
    for (int64_t i = t0; i < x.n_it; i++) {
        if ((rc = write_item(x.w, &x, &x.it[i], i == t0 ? r0 : 0))) goto out;
        if ((rc = checkpoint(&x))) goto out;
        progress(&x, i + 1);
    }
    if ((rc = sp_gguf_finish(x.w, st->xxh128))) goto out;
    sp_fault_commit_point("export");
    if (!opts->journal_path) unlink(jp); /* a leftover one is checked against the file (finished_already) */
out:
    st->seconds = sp_now() - x.t0;
    if (rc && writing && rc != SP_EX_IOERR) { /* bad data or our bug: a rerun would fail alike */
        unlink(sp_gguf_tmp_path(x.w));
        unlink(jp);
    }
    sp_journal_free(x.jr);
    sp_gguf_free(x.w);
    sp_lock_free(lock); /* the lock file stays (io/base/lock.h): unlinking it while held lets a second export lock a new one */
    free(jp);
    free(lp);
    free(ck);
    free(x.fbuf);
    free(x.pbuf);
    free(x.raw);
    free(x.it);
    free(x.colw);
    sp_reader_stats_free(&x.rs);
    if (x.model_open) sp_model_close(&x.m);
    return rc;
}
