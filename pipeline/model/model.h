/* pipeline/model/model.h — a model directory (dense HF, or a slicepipe sliced
 * output) of any family in the architecture table, opened and validated up
 * front, then read one layer at a time.
 *
 * Tensor names and shapes come from the family's table (arch.h): a dense
 * model has the table's tensors; a sliced one has the outputs of
 * sp_arch_layer_outputs (shortcuts added, no norm weights: the norms are
 * fused and weightless) and an untied head (vocab, d_out of the last layer).
 */
#ifndef SP_MODEL_H
#define SP_MODEL_H

#include <stdint.h>

#include "arch.h"
#include "config.h"
#include "fileio.h"
#include "layer.h"
#include "safetensors.h"

typedef struct sp_model {
    char *dir;
    sp_config cfg;
    const sp_arch *arch; /* cfg.arch: the family's tensor table */
    sp_ckpt *ckpt;
    sp_dims dims;
    int64_t d_embed;   /* embedding width: D, or the sliced width */
    int64_t d_final;   /* width entering the head */
    int has_head;      /* the family's head tensor is present (untied) */
    int has_head_bias; /* the head has its own bias tensor (Phi-2; sliced LayerNorm models) */
    int64_t n_pos;     /* rows of the learned position table (OPT: max_pos + 2), or 0 */
    int64_t n_params;  /* elements over all tensors */
    int64_t n_bytes;   /* bytes of tensor data over all shards */
} sp_model;

/* The files beside the weights that a sliced output gets a copy of. */
#define SP_MODEL_N_SIDE 7
extern const char *const sp_model_side_files[SP_MODEL_N_SIDE];
#define SP_MODEL_SIDE_BYTES_MAX ((int64_t)1 << 30)

/* Opens DIR: config.json + checkpoint, and checks every expected tensor's
 * presence, shape and dtype against the config before anything is allocated.
 * Every file of the folder slicepipe knows (config.json, the index, the
 * shards and the side files above) must follow the model folder's link rule
 * (io/base/modelfile.h), and a side file be at most SP_MODEL_SIDE_BYTES_MAX: so
 * every command accepts or refuses a folder alike, before any work.
 * Returns 0 / 65 / 66 / 74 with a message naming file, tensor and reason. */
int sp_model_open(const char *dir, sp_model *m);
/* Adds the files the model was opened from (config.json, the index, every
 * shard, the side files present) to *taken as inputs, so that no
 * single-file output replaces one (io/base/fileio.h sp_io_out_begin). */
int sp_model_add_inputs(const sp_model *m, sp_io_paths **taken);
void sp_model_close(sp_model *m);

/* Layer l's widths. */
void sp_model_widths(const sp_model *m, int64_t l, int64_t *d_in, int64_t *d_mid, int64_t *d_out);

/* float32 buffers for one layer at the model's full width D, one per tensor
 * of the architecture table, and (sliced models) one per shortcut; `w` views
 * them as the forward pass runs the layer. */
typedef struct sp_layer_buf {
    float *t[SP_ARCH_LAYER_MAX];  /* table tensor i: its dense shape (rows, cols) at width D */
    float *sc[SP_POS_COUNT];      /* shortcut into MID / OUT: (D, D); sliced models only */
    sp_layer_w w;
} sp_layer_buf;

int sp_layer_buf_init(const sp_model *m, sp_layer_buf *b);
void sp_layer_buf_free(sp_layer_buf *b);
int64_t sp_layer_buf_bytes(const sp_model *m);

/* A layer of widths d_in/d_mid/d_out over tensors t (one per table entry,
 * wherever they live: b->t, or backend mirrors): slots from the table; norms
 * only when `norms` (dense: the family's norm kind; else weightless RMS);
 * shortcuts sc[MID]/sc[OUT] when sc != NULL. */
sp_layer_w sp_layer_view(const sp_model *m, float *const t[], float *const sc[], int64_t d_in, int64_t d_mid, int64_t d_out,
                         int norms);

/* Reads layer l into b (converted to float32; NaN/Inf refused with 65). */
int sp_model_load_layer(const sp_model *m, int64_t l, sp_layer_buf *b);

/* The positions the model has: the learned table's rows from pos_offset on
 * (OPT), or a RoPE model's max_position_embeddings, the context it was
 * trained on (0: config.json has none). */
int64_t sp_model_positions(const sp_model *m);

/* The one check of a sequence of n tokens (positions 0..n-1) against them,
 * for every command:
 *   past learned positions, refused (64): "<subject> <verb> the model's P
 *   learned positions (max_position_embeddings)";
 *   past a RoPE model's max_position_embeddings, allowed (RoPE extends), but
 *   with warn_subject a warning on stderr: "slicepipe: warning:
 *   <warn_subject> is longer than the model's max_position_embeddings M; RoPE
 *   positions past it were never trained"; NULL: silent.
 * subject and warn_subject name the length with its value ("--seqlen 40",
 * "m.toml: [calibration] seqlen 40", "generate: 40 tokens"); verb agrees with
 * subject ("exceeds", "exceed"). */
int sp_model_check_positions(const sp_model *m, int64_t n, const char *subject, const char *verb, const char *warn_subject);

/* Reads the embedding (vocab, d_embed) into emb, and the learned positions
 * (n_pos, d_embed) into pos when the family has them. Rows are as stored:
 * the caller applies sp_model_embed_scale (dense Gemma). */
int sp_model_load_embed(const sp_model *m, float *emb, float *pos);

/* What a dense model multiplies its embeddings by: sqrt(hidden_size) rounded
 * to the model dtype for Gemma (HF's normalizer), else 1. A sliced model has
 * it baked into its embedding rows: callers use 1 for it. */
float sp_model_embed_scale(const sp_model *m);
/* The embedding scale a family with embed_scale_sqrt_d applies at `width`:
 * sqrt(width) rounded to dtype dt, as HF computes it. */
float sp_embed_scale(int64_t width, sp_dtype dt);

/* dst (n, d_embed) = the residual stream's rows for tokens ids[0..n) at
 * positions p0..p0+n-1: the embedding rows (× sp_model_embed_scale for a dense
 * model) plus the learned positions when the family has them. emb and pos as
 * sp_model_load_embed filled them; ids already validated. */
void sp_model_embed_rows(const sp_model *m, const float *emb, const float *pos, const int32_t *ids, int64_t n, int64_t p0,
                         float *dst);

/* A norm weight as the forward uses it: 1 + w for the (1 + w) families
 * (Gemma), w otherwise. In place, n values. */
void sp_model_norm_weight(const sp_model *m, float *g, int64_t n);

/* The head: w (vocab, d_final) — its own tensor or the tied embedding — and,
 * when present, its bias (vocab) and the final norm's γ and β (d_final);
 * sliced models have a weightless final RMSN. The caller sizes the buffers. */
typedef struct sp_head {
    float *w, *b, *norm, *norm_b;
    int has_b, has_norm, has_norm_b;
    enum sp_bk_norm kind;
} sp_head;
int sp_model_load_head(const sp_model *m, sp_head *h);

#endif
