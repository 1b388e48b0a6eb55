/* io/formats/gguf.h — a streaming writer of GGUF v3, llama.cpp's model format.
 *
 * File layout (ggml's docs/gguf.md), all little-endian:
 *   u32 magic "GGUF" | u32 version 3 | u64 tensor_count | u64 kv_count
 *   kv_count × { string key | u32 value_type | value }
 *   tensor_count × { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   zero padding to `alignment`
 *   tensor data: each tensor at data_start + offset, offset a multiple of
 *   `alignment`, zero padding between tensors (and after the last one).
 * A string is u64 byte length + bytes (no NUL). An array value is u32 element
 * type + u64 count + the elements. ne[0] is the innermost (contiguous)
 * dimension: an HF weight W[out, in] is ne = {in, out}, same bytes.
 * `general.alignment` (u32, a power of two), when set, is the alignment;
 * otherwise it is 32.
 *
 * Protocol (one writer, one pass, memory bounded by the metadata and one
 * chunk of rows, never a whole tensor):
 *
 *   sp_gguf_init ── kv_* / tensor (any order, declared once) ──▶ sp_gguf_begin
 *        │                                                         │ writes header, kvs, infos, padding
 *        ▼                                                         ▼
 *   sp_gguf_free (tmp removed)          sp_gguf_rows × n (tensors in declaration order,
 *                                        rows in order; each tensor's rows exactly its ne[1..])
 *                                                                  │
 *                                                                  ▼
 *                                        sp_gguf_finish: fsync, rename tmp → path, fsync dir
 *
 * The data is written to "<path>.tmp" in the destination folder, so a killed
 * export never leaves a file with the final name. The XXH3-128 of the whole
 * file is computed as it streams.
 *
 * Resumable writing (pipeline/publish/export.c journals it): a writer made by
 * sp_gguf_init_resume touches no file until begin or resume, and never
 * removes its tmp. sp_gguf_sync makes the bytes so far durable and returns a
 * checkpoint: the position (tensors done, rows of the next) and the XXH3-128
 * of the file's first `bytes` bytes. A later writer with the same
 * declarations calls sp_gguf_resume instead of begin with the checkpoints an
 * earlier one returned: it re-hashes the tmp up to the last of them, keeps
 * the longest prefix whose every checkpoint still matches, cuts what follows
 * (a torn or corrupt tail) and continues from there; or, when none matches
 * (no tmp, another header), starts afresh as begin does:
 *
 *   init_resume ── kv / tensor ──┬─ begin ───────────────┐
 *                                └─ resume(checkpoints) ─┴─▶ rows ... sync ... rows ─▶ finish
 *
 * The resumed file, and its hash, are those of one uninterrupted pass.
 *
 * Quantized types: ggml's blocks of 32 values along a row (ggml-common.h;
 * the byte layout and ggml's reference rounding are at the top of gguf.c):
 *   q4_0 (18 bytes: fp16 d, 16 nibble bytes), q4_1 (20: fp16 d, fp16 m,
 *   16), q5_0 (22: fp16 d, u32 qh of fifth bits, 16), q5_1 (24: d, m, qh,
 *   16), q8_0 (34: fp16 d, 32 int8).
 * A row's length must be a multiple of 32.
 *
 * sp_gguf_rows checks every row as encoded in its type and refuses (65,
 * naming the tensor, the row and the column) a value that is Inf there: an
 * f16 value past 65504, a bf16 value rounding past FLT_MAX, a block whose
 * fp16 scale d or min m (read back from the bytes written) is not finite.
 */
#ifndef SP_GGUF_H
#define SP_GGUF_H

#include <stdint.h>

typedef enum sp_gguf_vtype {
    SP_GGUF_V_U8 = 0,
    SP_GGUF_V_I8 = 1,
    SP_GGUF_V_U16 = 2,
    SP_GGUF_V_I16 = 3,
    SP_GGUF_V_U32 = 4,
    SP_GGUF_V_I32 = 5,
    SP_GGUF_V_F32 = 6,
    SP_GGUF_V_BOOL = 7,
    SP_GGUF_V_STRING = 8,
    SP_GGUF_V_ARRAY = 9,
    SP_GGUF_V_U64 = 10,
    SP_GGUF_V_I64 = 11,
    SP_GGUF_V_F64 = 12,
} sp_gguf_vtype;

/* ggml_type values of the tensor types this writer produces. */
typedef enum sp_gguf_ttype {
    SP_GGUF_T_F32 = 0,
    SP_GGUF_T_F16 = 1,
    SP_GGUF_T_Q4_0 = 2,
    SP_GGUF_T_Q4_1 = 3,
    SP_GGUF_T_Q5_0 = 6,
    SP_GGUF_T_Q5_1 = 7,
    SP_GGUF_T_Q8_0 = 8,
    SP_GGUF_T_BF16 = 30,
} sp_gguf_ttype;

#define SP_GGUF_QK 32 /* values per block of every quantized type */
#define SP_GGUF_MAX_DIMS 4
#define SP_GGUF_DEFAULT_ALIGNMENT 32

typedef struct sp_gguf_w sp_gguf_w; /* opaque */

/* "f32" | "f16" | "bf16" | "q4_0" | "q4_1" | "q5_0" | "q5_1" | "q8_0" → type;
 * -1 if unknown. */
int sp_gguf_ttype_parse(const char *s);
const char *sp_gguf_ttype_name(sp_gguf_ttype t);
/* 1 for the block (quantized) types. */
int sp_gguf_ttype_is_block(sp_gguf_ttype t);
/* llama.cpp's general.file_type for a file whose 2-D weights are mostly t
 * (LLAMA_FTYPE_MOSTLY_*: f32 0, f16 1, q4_0 2, q4_1 3, q8_0 7, q5_0 8,
 * q5_1 9, bf16 32). */
uint32_t sp_gguf_file_type(sp_gguf_ttype t);
/* Bytes of one row of n elements in type t; -1 when n is not a multiple of
 * the type's block (32) or overflows. */
int64_t sp_gguf_row_bytes(sp_gguf_ttype t, int64_t n);

/* A writer's position and the hash of the bytes before it. Also the
 * payload of export's journal records (native byte order, 64 bytes). */
typedef struct sp_gguf_ck {
    int64_t tensor;  /* tensors complete */
    int64_t rows;    /* rows of tensor `tensor` written; 0 at a tensor boundary */
    int64_t bytes;   /* file bytes: data start + that tensor's offset + rows · its row bytes */
    char xxh128[33]; /* XXH3-128 of the file's first `bytes` bytes, hex */
    char pad[7];
} sp_gguf_ck;

/* Opens "<path>.tmp" (truncating it). 73 if it cannot be created. */
int sp_gguf_init(const char *path, sp_gguf_w **out);
/* A resumable writer: no file is touched until sp_gguf_begin (which creates
 * the tmp afresh) or sp_gguf_resume, and sp_gguf_free keeps the tmp. */
int sp_gguf_init_resume(const char *path, sp_gguf_w **out);
/* Removes the tmp file unless sp_gguf_finish succeeded or the writer is
 * resumable. Accepts NULL. */
void sp_gguf_free(sp_gguf_w *w);
/* "<path>.tmp", the file being written. */
const char *sp_gguf_tmp_path(const sp_gguf_w *w);

/* Metadata. Keys must be unique (70 otherwise: our bug). Strings are bytes
 * with an explicit length (n < 0: NUL-terminated). */
int sp_gguf_kv_u32(sp_gguf_w *w, const char *key, uint32_t v);
int sp_gguf_kv_i32(sp_gguf_w *w, const char *key, int32_t v);
int sp_gguf_kv_u64(sp_gguf_w *w, const char *key, uint64_t v);
int sp_gguf_kv_f32(sp_gguf_w *w, const char *key, float v);
int sp_gguf_kv_f64(sp_gguf_w *w, const char *key, double v);
int sp_gguf_kv_bool(sp_gguf_w *w, const char *key, int v);
int sp_gguf_kv_str(sp_gguf_w *w, const char *key, const char *s, int64_t n);
/* An array of n fixed-size elements of type et (not STRING or ARRAY), given
 * as their little-endian bytes (n · size(et)). */
int sp_gguf_kv_arr(sp_gguf_w *w, const char *key, sp_gguf_vtype et, const void *elems, int64_t n);
/* An array of strings, built element by element: begin, then exactly n
 * str calls. */
int sp_gguf_kv_arr_str_begin(sp_gguf_w *w, const char *key, int64_t n);
int sp_gguf_kv_arr_str(sp_gguf_w *w, const char *s, int64_t n);

/* Declares a tensor: ne[0] innermost, ndim 1..4. Its data comes later
 * through sp_gguf_rows, in declaration order. */
int sp_gguf_tensor(sp_gguf_w *w, const char *name, int ndim, const int64_t *ne, sp_gguf_ttype type);

/* Writes the header, metadata and tensor infos. No kv or tensor after it. */
int sp_gguf_begin(sp_gguf_w *w);
/* After the declarations, before begin or resume: the XXH3-128 of the
 * header begin writes (everything before the tensor data), computed without
 * writing. */
int sp_gguf_header_hash(sp_gguf_w *w, char hex[33]);
/* Instead of begin, on a resumable writer: ck[0..n_ck) are checkpoints an
 * earlier writer with the same declarations returned, in increasing order.
 * *n_good gets how many of them the tmp still matches (a prefix of the list);
 * the writer continues after ck[*n_good - 1], the tmp cut there (*dropped_bytes
 * gets what was cut), or, with *n_good 0, afresh as begin. A checkpoint whose
 * position is not one this writer's layout has: 65. I/O: 74. */
int sp_gguf_resume(sp_gguf_w *w, const sp_gguf_ck *ck, int n_ck, int *n_good, int64_t *dropped_bytes);
/* Flushes and fsyncs what was written so far and describes it in *ck. */
int sp_gguf_sync(sp_gguf_w *w, sp_gguf_ck *ck);
/* Appends n_rows rows (each ne[0] float32 values) of the current tensor,
 * converted to its type. Non-finite values: 65 naming the tensor. */
int sp_gguf_rows(sp_gguf_w *w, const float *rows, int64_t n_rows);
/* As sp_gguf_rows; for a block type with col_weight (ne[0] values ≥ 0, the
 * diagonal of the second moment of the tensor's input) each block is
 * rounded by sp_gguf_quantize's weighted search. NULL: sp_gguf_rows. */
int sp_gguf_rows_weighted(sp_gguf_w *w, const float *rows, int64_t n_rows, const float *col_weight);
/* Checks every tensor was fully written, pads, fsyncs, renames, fsyncs the
 * folder; hex gets the XXH3-128 of the file (32 hex digits + NUL). */
int sp_gguf_finish(sp_gguf_w *w, char hex[33]);
/* Bytes of the finished file (valid after begin). */
int64_t sp_gguf_file_bytes(const sp_gguf_w *w);

/* Quantizes n float32 (a multiple of 32) to blocks of block type t in dst
 * (sp_gguf_row_bytes(t, n) bytes). weight NULL: ggml's reference rounding
 * (quantize_row_<t>_ref), bit for bit. weight (n values ≥ 0): each block's
 * scale d (and min m) is chosen to minimize Σ weight_j (x_j − x̂_j)², with
 * d and m as stored (fp16); never worse than the reference by that measure. */
void sp_gguf_quantize(sp_gguf_ttype t, const float *src, int64_t n, const float *weight, uint8_t *dst);

#endif
