/* io/formats/safetensors.h — strict reader for one safetensors file, and for a model
 * directory (single model.safetensors, or shards listed by
 * model.safetensors.index.json).
 *
 * File format: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON (begins
 * with '{', may be right-padded with spaces), then the data region. Each entry
 * is name -> {dtype, shape, data_offsets:[begin,end]} relative to the data
 * region; "__metadata__" is an optional string->string map.
 *
 * Validation follows docs/pipeline.md §11 ("Bad input") to the letter; every
 * rejection is SP_EX_DATAERR (65) with a message naming the file, the tensor
 * and the reason. Data is never assumed to be aligned: tensor bytes are read
 * with pread into caller buffers. Beyond the letter: the JSON must be strict
 * RFC 8259 (no leading zeros, raw control characters, "\u0000" or lone
 * surrogate escapes); an entry has exactly the three fields; keys are unique
 * at every level; shape and offset numbers are integers in [0, 2^53), judged
 * by value (2.0 is 2); at most SP_ST_MAX_DIMS dims. The full rule list is at
 * the top of safetensors.c.
 */
#ifndef SP_SAFETENSORS_H
#define SP_SAFETENSORS_H

#include <stdint.h>

#include "dtype.h"

#define SP_ST_MAX_DIMS 8
#define SP_ST_HEADER_MAX 100000000LL

typedef struct sp_st_tensor {
    char *name;
    sp_dtype dtype;
    int ndim;                       /* 0 for a scalar */
    int64_t shape[SP_ST_MAX_DIMS];
    int64_t numel;                  /* product of shape (1 for a scalar) */
    int64_t nbytes;                 /* numel * dtype size */
    int64_t file_offset;            /* absolute offset in the file: 8 + N + begin */
} sp_st_tensor;

typedef struct sp_st_file sp_st_file; /* opaque; owns an fd */

/* Opens and validates one file. Returns 0, 65 (bad), 66 (missing), 74. */
int sp_st_open(const char *path, sp_st_file **out);
void sp_st_free(sp_st_file *f);

const char *sp_st_path(const sp_st_file *f);
int64_t sp_st_file_size(const sp_st_file *f);
int64_t sp_st_header_len(const sp_st_file *f);    /* N */
int sp_st_count(const sp_st_file *f);
const sp_st_tensor *sp_st_at(const sp_st_file *f, int i); /* in data-offset order */
const sp_st_tensor *sp_st_find(const sp_st_file *f, const char *name); /* NULL if absent */
/* __metadata__ value for key, or NULL. */
const char *sp_st_meta(const sp_st_file *f, const char *key);
int sp_st_fd(const sp_st_file *f);

/* Reads the tensor's raw bytes into dst (t->nbytes). */
int sp_st_read_raw(const sp_st_file *f, const sp_st_tensor *t, void *dst);
/* Reads and converts to float32 (F32/F16/BF16/F64 only; other dtypes: 65).
 * dst holds t->numel floats. A NaN or Inf is refused with 65 naming the
 * tensor and the element index (an F64 value outside float32 range too).
 * Allocates nothing; safe to call from several threads on one file. */
int sp_st_read_f32(const sp_st_file *f, const sp_st_tensor *t, float *dst);

/* ---- a model directory: one file or an index of shards ---- */
typedef struct sp_ckpt sp_ckpt; /* opaque */

/* Opens DIR/model.safetensors.index.json if present, else DIR/model.safetensors.
 * Index rules (docs/pipeline.md §11): missing shards -> 66 listing them all;
 * a tensor in the index but not in its shard, or present in two shards -> 65;
 * a weight_map path with "..", absolute, or breaking the model folder's link
 * rule (modelfile.h: a link out of DIR, other than one from a Hugging Face
 * cache snapshot into its own blobs/) -> refused (65) without opening it.
 * The index and model.safetensors follow the same rule. Every shard is
 * opened and validated up front. */
int sp_ckpt_open(const char *dir, sp_ckpt **out);
void sp_ckpt_free(sp_ckpt *c);

int sp_ckpt_shard_count(const sp_ckpt *c);
const sp_st_file *sp_ckpt_shard(const sp_ckpt *c, int i);
int sp_ckpt_tensor_count(const sp_ckpt *c);
/* Finds a tensor by name; sets *file to its shard. NULL if absent. */
const sp_st_tensor *sp_ckpt_find(const sp_ckpt *c, const char *name, const sp_st_file **file);
/* Reads a named tensor as float32 after checking its shape equals
 * shape[0..ndim) — a mismatch is 65 naming the file, the tensor, both shapes. */
int sp_ckpt_read_f32(const sp_ckpt *c, const char *name, int ndim, const int64_t *shape, float *dst);

#endif
