/* pipeline/arch/arch.h — the architecture table: the one seam above the pipeline
 * (docs/pipeline.md §9, after llama.cpp's per-architecture tensor tables).
 *
 * A family is one `sp_arch` (pipeline/arch/arch_<family>.c). It lists every tensor
 * of a layer with its HF name, its shape in config.json's terms and its role
 * in SliceGPT, and it says where the PCAs fall, the norm kind, the positional
 * kind, the activation and the embedding and head rules. Everything that
 * names a tensor or counts tensors per layer iterates this table: the read
 * plan, the output declaration, model loading and validation, synth, the
 * commit points, resume and the memory plan. No other file names a tensor.
 *
 * Residual positions of a layer (docs/algorithm.md §1): IN is the layer's input
 * (basis Q, width d_in), MID the stream after the attention block (Qm, d_mid),
 * OUT the layer's output (Qn, d_out). A parallel block (Phi-2) has no MID:
 * attention and MLP both read IN and write OUT, and there is one PCA a layer.
 *
 * Roles:
 *   NORM    γ of the norm in front of position `pos`'s readers; fused into
 *           their columns, absent from a sliced model.
 *   NORM_BIAS  β of that norm (LayerNorm): fused into the readers' biases
 *           (b += W·β), absent from a sliced model.
 *   READER  reads position `pos` (after its norm): columns rotated by that
 *           position's basis and sliced to its width.
 *   WRITER  writes into position `pos`: rows rotated by its basis (Qᵀ·W) and
 *           sliced.
 *   BIAS    bias of the tensor in its weight's slot (sp_arch_slot_weight: a
 *           bias slot names its weight, so no row index is kept by hand): a
 *           reader's bias is untouched, a writer's rotates with it.
 *   HEAD    lives in head space (per-head norms): untouched.
 *
 * Output tensors of a sliced layer follow one order (sp_arch_layer_outputs),
 * which is also the order the compute stage emits them:
 *   readers of IN (their biases after each);
 *   then for MID, then OUT (or only OUT for a parallel block): the writers into
 *   it (with biases), the shortcut into it, the readers of it (with biases);
 *   head-space tensors last.
 */
#ifndef SP_ARCH_H
#define SP_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"

struct cJSON;

enum sp_arch_pos { SP_POS_IN, SP_POS_MID, SP_POS_OUT, SP_POS_COUNT };

enum sp_arch_role { SP_ROLE_NORM, SP_ROLE_NORM_BIAS, SP_ROLE_READER, SP_ROLE_WRITER, SP_ROLE_BIAS, SP_ROLE_HEAD };

/* A size in config.json's terms. */
enum sp_arch_dim {
    SP_DIM_NONE, /* a 1-D tensor's missing second dimension */
    SP_DIM_D,    /* hidden_size (a residual width: sliced to the position's width) */
    SP_DIM_Q,    /* n_heads · head_dim */
    SP_DIM_KV,   /* n_kv_heads · head_dim */
    SP_DIM_F,    /* intermediate_size */
    SP_DIM_HD,   /* head_dim */
    SP_DIM_QKV,  /* (n_heads + 2·n_kv_heads) · head_dim: a fused q;k;v */
    SP_DIM_F2,   /* 2 · intermediate_size: a fused gate;up */
};

/* Where the layer forward (pipeline/model/layer.c) finds a tensor. A projection's
 * `_B` slot is its bias (sp_arch_slot_weight); a norm's `_B` is its β. */
enum sp_arch_slot {
    SP_SLOT_NONE = -1, /* sp_arch_slot_weight of a slot that is no bias */
    SP_SLOT_ATTN_NORM, SP_SLOT_ATTN_NORM_B,
    SP_SLOT_Q, SP_SLOT_K, SP_SLOT_V, SP_SLOT_QKV, SP_SLOT_Q_B, SP_SLOT_K_B, SP_SLOT_V_B,
    SP_SLOT_Q_NORM, SP_SLOT_K_NORM,  /* per-head RMSNorm γ (head_dim) */
    SP_SLOT_O, SP_SLOT_O_B,
    SP_SLOT_MLP_NORM, SP_SLOT_MLP_NORM_B,
    SP_SLOT_GATE, SP_SLOT_UP, SP_SLOT_GATE_UP, SP_SLOT_GATE_B, SP_SLOT_UP_B, /* non-gated MLPs: fc1 is GATE */
    SP_SLOT_DOWN, SP_SLOT_DOWN_B,
    SP_SLOT_COUNT
};

/* When a table tensor exists (config.json decides). */
enum sp_arch_cond {
    SP_COND_ALWAYS,
    SP_COND_ATTN_BIAS, /* attention_bias: true (Llama, Mistral) */
    SP_COND_MLP_BIAS,  /* mlp_bias: true (Llama) */
};

/* How synth fills a tensor: value = offset + scale·N(0,1). */
enum sp_arch_init {
    SP_INIT_NORM,  /* 1 + 0.05·N(0,1) */
    SP_INIT_FANIN, /* N(0,1)/sqrt(cols) */
    SP_INIT_BIAS,  /* 0.02·N(0,1) */
    SP_INIT_NORM0, /* 0.05·N(0,1): a (1 + w) norm's w (Gemma) */
};

typedef struct sp_arch_tensor {
    const char *suffix;      /* HF name after the layer prefix, e.g. "self_attn.q_proj.weight" */
    enum sp_arch_slot slot;
    enum sp_arch_role role;
    enum sp_arch_pos pos;    /* NORM/READER: position read; WRITER: position written */
    enum sp_arch_dim rows, cols; /* 1-D: cols == SP_DIM_NONE */
    enum sp_arch_init init;
    enum sp_arch_cond cond;
} sp_arch_tensor;

#define SP_ARCH_LAYER_MAX 24 /* tensors of one layer, inputs or outputs */

/* How llama.cpp runs the family: what the GGUF export (pipeline/publish/export.c)
 * needs beyond the tensors, which it writes by slot under llama.cpp's names. */
typedef struct sp_arch_gguf {
    const char *arch;          /* llama.cpp's architecture ("llama", "phi2"); NULL: none, export refuses (65) */
    int permute_qk;            /* interleaved RoPE there: q/k rows (and biases) permuted per head from HF's
                                  rotate-half order */
    int whole_head_rotary;     /* it rotates whole heads: partial rotary is refused */
    int split_fused;           /* it has no fused q;k;v or gate;up: they are written apart */
    int window_key;            /* writes <arch>.attention.sliding_window */
    int head_tied;             /* it always reads the head from the embedding: an untied model is refused, a
                                  tied model's head tensor is not written */
    int head_always;           /* it has no tied form: output.weight is written (the embedding when tied) */
    int head_bias_required;    /* it needs output.bias: a model without the head's bias is refused */
    const struct sp_arch_gguf *heads_ne_d; /* it sizes attention by n_embd: when n_heads·head_dim ≠
                                  hidden_size (a basis = "global" output), this form is written instead */
} sp_arch_gguf;

typedef struct sp_arch {
    const char *model_type;      /* config.json "model_type" */
    const char *hf_class;        /* "LlamaForCausalLM" */
    const char *layer_prefix;    /* printf pattern of one %lld: "model.layers.%lld." */
    const sp_arch_tensor *layer; /* (n_layer) every input tensor of a layer, in read order */
    int n_layer;
    const char *embed;           /* token embedding (V, D) */
    const char *final_norm;      /* γ of the norm before the head (D) */
    const char *head;            /* (V, D); when absent and tied, the embedding is read */
    const char *shortcut[SP_POS_COUNT]; /* output-only suffix of the shortcut into MID / OUT */
    const char *final_norm_bias; /* β of the final LayerNorm, or NULL */
    const char *head_bias;       /* the name of the head's bias (Phi-2's own; a sliced LayerNorm model's), or NULL */
    int dense_head_bias;         /* the dense checkpoint's head has that bias (Phi-2; not OPT) */
    const char *pos_embed;       /* learned positions (OPT), or NULL */
    int pos_offset;              /* row of position 0 in pos_embed (OPT: 2) */
    int parallel;                /* 1: one PCA a layer (no MID) */
    enum sp_bk_norm norm;
    int norm_plus_one;           /* the norm scales by (1 + w) (Gemma) */
    int embed_scale_sqrt_d;      /* embeddings × sqrt(hidden_size), rounded to the model dtype (Gemma) */
    enum sp_bk_rope rope;
    /* config.json keys */
    const char *ffn_key;         /* "intermediate_size" (OPT: "ffn_dim") */
    const char *eps_key;         /* "rms_norm_eps", "layer_norm_eps", or NULL (eps_default) */
    double eps_default;
    const char *act_key;         /* "hidden_act" (OPT: "activation_function") */
    const char *const *act_names;/* accepted values of act_key, NULL-terminated; acts[i] is what each runs */
    const enum sp_bk_act *acts;
    const char *act_default;
    int tie_default;             /* tie_word_embeddings when config.json omits it (HF's class default) */
    int window_key;              /* reads "sliding_window" (and "use_sliding_window") */
    int partial_rotary;          /* reads "partial_rotary_factor" */
    /* Family-specific keys and refusals, after the common ones; NULL: none. */
    int (*config)(const char *path, const struct cJSON *root, struct sp_config *cfg);
    sp_arch_gguf gguf;           /* llama.cpp's form of the family (GGUF export) */
} sp_arch;

/* The registry: every family, in one order (the one list, in arch.c). Help
 * texts, messages and `slicepipe --version` iterate it. */
int sp_arch_count(void);
const sp_arch *sp_arch_at(int i);

/* The model_types of the families `keep` accepts (NULL: every one), in the
 * registry's order, each between `quote`s, joined by `sep` and the last by
 * `last` ("'llama', 'mistral'", "llama, qwen2 and phi"). Into buf (n bytes;
 * a list too long is cut). Returns buf. */
const char *sp_arch_names(char *buf, size_t n, int (*keep)(const sp_arch *a), const char *quote, const char *sep,
                          const char *last);

/* The family's table for config.json's model_type (absent: llama), or 65
 * naming the file and the type. */
int sp_arch_find(const char *model_type, const char *config_path, const sp_arch **out);

/* The table one model uses: the family's, less the tensors whose condition
 * cfg does not meet (e.g. attention_bias false). Asserts that every BIAS row
 * sits in a bias slot whose weight is in the table, and that no other row
 * does. Allocated; freed with sp_arch_free. */
int sp_arch_instance(const sp_arch *family, const sp_config *cfg, sp_arch **out);
void sp_arch_free(sp_arch *a);

/* Index of the tensor in `slot`, or -1. */
int sp_arch_slot_index(const sp_arch *a, enum sp_arch_slot slot);

/* The weight a bias slot belongs to (SP_SLOT_Q for SP_SLOT_Q_B), or
 * SP_SLOT_NONE for a slot that is no BIAS (a norm's β is NORM_BIAS). */
enum sp_arch_slot sp_arch_slot_weight(enum sp_arch_slot slot);

/* The size `dim` stands for in cfg (D for SP_DIM_D: callers slice it). */
int64_t sp_arch_dim(const sp_config *cfg, enum sp_arch_dim dim);

/* "model.layers.<l>.<suffix>" into buf (256 bytes). */
const char *sp_arch_layer_name(const sp_arch *a, char buf[256], int64_t l, const char *suffix);

/* Index of the NORM (or NORM_BIAS) tensor in front of position pos, or -1. */
int sp_arch_norm_of(const sp_arch *a, enum sp_arch_pos pos);
int sp_arch_norm_bias_of(const sp_arch *a, enum sp_arch_pos pos);
/* Index of the BIAS of tensor t, or -1. */
int sp_arch_bias_of(const sp_arch *a, int t);

/* The positions a layer's PCAs fall on, in order: {MID, OUT}, or {OUT} for a
 * parallel block. Returns the count. */
int sp_arch_pca_positions(const sp_arch *a, enum sp_arch_pos pos[2]);

/* One output tensor of a sliced layer. */
enum sp_arch_out_kind {
    SP_OUT_READER,   /* (W·diag γ)·Q_pos[:, :d_pos] */
    SP_OUT_WRITER,   /* (Q_posᵀ·W)[:d_pos, :] */
    SP_OUT_COPY,     /* unchanged (a reader's bias, a head-space tensor) */
    SP_OUT_BIAS_ROT, /* (Q_posᵀ·b)[:d_pos] (a writer's bias) */
    SP_OUT_SHORTCUT, /* Q_prev[:, :d_prev]ᵀ·Q_pos[:, :d_pos] */
    SP_OUT_NORM,     /* a stock output's norm γ (or LayerNorm β): as read, or with the global basis the stock
                        weight at width d, sqrt(D/d) (docs/algorithm.md §10; LayerNorm families have no basis) */
};

typedef struct sp_arch_out {
    enum sp_arch_out_kind kind;
    int t;                 /* input tensor index (-1 for a shortcut) */
    enum sp_arch_pos pos;  /* the basis it is rotated by */
    enum sp_arch_pos from; /* SHORTCUT: the position it maps from */
    int phase;             /* 0: after the input basis is known; 1 + k: after PCA k of the layer */
} sp_arch_out;

/* The output tensors of one sliced layer, in emission order (see the top):
 * with `shortcuts`, the shortcut into each PCA position; with `norms` (a
 * stock model), each norm's weight before the readers it feeds. The slice
 * plan says which (slice_plan.h). Returns the count (<= SP_ARCH_LAYER_MAX). */
int sp_arch_layer_outputs(const sp_arch *a, int shortcuts, int norms, sp_arch_out out[SP_ARCH_LAYER_MAX]);

/* Name and shape (rows, cols; cols 0 for 1-D) of output o of layer l, with
 * the layer's widths. */
void sp_arch_out_tensor(const sp_arch *a, const sp_config *cfg, const sp_arch_out *o, int64_t l, const int64_t width[SP_POS_COUNT],
                        char name[256], int64_t shape[2], int *ndim);

/* Shape of input tensor t of a dense layer (every position at width D). */
void sp_arch_in_shape(const sp_arch *a, const sp_config *cfg, int t, int64_t shape[2], int *ndim);

#endif
