/* pipeline/model/synth.h — deterministic synthetic checkpoints of any family and size:
 * `slicepipe synth OUT_DIR`. For benchmarks and tests of the pipeline on
 * shapes we have no real weights for (a 7B-shaped model on a small machine).
 *
 * Output (OUT_DIR is created if missing; its parent must exist):
 *   config.json           HF LlamaForCausalLM fields (as the shared
 *                         stories260k config), torch_dtype and
 *                         tie_word_embeddings as asked; written atomically.
 *   model*.safetensors    through io/formats/st_writer.h, shard_bytes_max =
 *                         ceil(total tensor bytes / shards), so about
 *                         `shards` files (+ index when more than one).
 *   calib.npy             1-D int32 token stream, `tokens` ids in [0, vocab).
 *
 * Tensors, in declaration (= write) order, with the family's HF names and
 * shapes from the architecture table (arch.h): the embedding (V, D), each
 * layer's tensors in the table's order, the final norm (D), and the head
 * (V, D; absent when tied). Values: norms 1 + 0.05·N(0,1) (SP_INIT_NORM),
 * every matrix N(0,1)/sqrt(cols) (SP_INIT_FANIN), the embedding and head
 * N(0,1)/sqrt(D).
 * Every projection has std 1/sqrt(fan_in), so a unit-RMS input gives unit-RMS
 * outputs; the embedding shares the head's scale so that tying changes
 * nothing about the logits' scale (std ~1).
 *
 * Randomness is counter based: element i of the tensor with declaration
 * index t is a pure function of (seed, t, i) (splitmix64 mixing + the
 * Marsaglia polar method on the pair i/2), so the bytes do not depend on the
 * chunk size, and tensor t is the same whether or not the head is tied.
 *
 * Tokens (a pure function of seed and position): BOS = 1 at every multiple of
 * 512; otherwise, per position, 1/2 a Zipf-like draw (P(rank r) ~ 1/(r+1.5),
 * ranks permuted over ids [2, V)), 1/4 a fixed successor of the previous id
 * (a bigram rule), 1/4 a copy of a token 1..32 positions back in the same
 * 512-window. The skewed unigram and the repeats give the activations a
 * decaying PCA spectrum.
 *
 * Memory: one chunk (chunk_elems floats + their encoding), allocated once
 * before anything is written, plus the writer's O(#tensors) plan. Nothing
 * else scales with the model.
 */
#ifndef SP_SYNTH_H
#define SP_SYNTH_H

#include <stdint.h>

#include "dtype.h"

#define SP_SYNTH_BOS_EVERY 512

typedef struct sp_synth_opts {
    int64_t hidden;      /* D, [1, 65536] */
    int64_t layers;      /* L, [1, 1024] */
    int64_t ffn;         /* F, [1, 1000000] */
    int64_t heads;       /* H, [1, 1024] */
    int64_t kv_heads;    /* K, [1, H], divides H */
    int64_t head_dim;    /* hd, even, [2, 4096]; 0 = D/H (then H must divide D) */
    int64_t vocab;       /* V, [3, 4000000] */
    int64_t max_pos;     /* max_position_embeddings, [1, 2^31-1] */
    sp_dtype dtype;      /* F32, F16 or BF16 */
    int64_t shards;      /* about this many shards, [1, 99999] */
    uint64_t seed;
    int64_t tokens;      /* calibration tokens, [1, 2^40] */
    int tied;            /* tie_word_embeddings: no lm_head tensor */
    int64_t chunk_elems; /* elements per generated chunk; 0 = 1 Mi (4 MiB of f32) */
    int progress;        /* bytes written and MB/s on stderr, about once a second */
    const char *arch;    /* the family's model_type (arch.h); NULL: llama */
    int64_t window;      /* sliding_window written for families that have one; 0: none */
    double rotary;       /* partial_rotary_factor for families that have one; default 1 */
} sp_synth_opts;

/* Fills the defaults: D 256, L 4, F 704, H 8, K 8, hd 0, V 1024, max_pos
 * 4096, BF16, 1 shard, seed 0, 64·512 tokens, untied, progress on. */
void sp_synth_defaults(sp_synth_opts *o);

/* Checks every field (ranges above, divisibility, byte counts that overflow)
 * and resolves head_dim 0. Returns 0 or 64 with a message naming the option
 * ("--kv-heads 3 does not divide --heads 8"). */
int sp_synth_check(sp_synth_opts *o);

typedef struct sp_synth_result {
    int64_t params;         /* elements of every tensor written */
    int64_t tensor_bytes;   /* data bytes over all shards */
    int shards;
    int64_t tokens;
    double seconds;
    double mb_per_s;        /* tensor data MB (1e6) per second */
    int64_t peak_rss_bytes;
} sp_synth_result;

/* Checks *o (as sp_synth_check) and writes the checkpoint and calib.npy into
 * out_dir. Returns 0, 64 (options), 73 (out_dir cannot be created or written),
 * 74 (write/fsync), 70. r may be NULL. */
int sp_synth_write(const char *out_dir, const sp_synth_opts *o, sp_synth_result *r);

#endif
