/* pipeline/publish/export.h — a dense model folder (HF layout, any family of the
 * architecture table llama.cpp also has) to one GGUF file for llama.cpp.
 *
 * Family → llama.cpp architecture: the family's `gguf` entry in the
 * architecture table (arch.h) says which, whether q/k rows are permuted from
 * HF's rotate-half order back to llama.cpp's interleaved pairs (as llama.cpp's
 * convert_hf_to_gguf.py does), and what llama.cpp cannot run (65 with the
 * reason). A family with no llama.cpp architecture (OPT): 65. A per-layer
 * sliced output (shortcut matrices) is no stock architecture either: 65,
 * with the hint to slice with one global basis.
 *
 * Streaming: tensors are read from the safetensors shards a chunk of rows
 * at a time (about 4 MiB, at least one attention head's rows) and written
 * through io/formats/gguf.c, so memory never holds a whole tensor. The file is
 * written as OUT.tmp, fsynced and renamed; its XXH3-128 is reported.
 *
 * Resume: the tmp is journaled (after every tensor, and every 64 MiB within
 * one), so a killed export, rerun, continues where it was and gives the same
 * bytes. The journal's protocol is at the top of export.c.
 */
#ifndef SP_EXPORT_H
#define SP_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "model.h"

/* How a block type's scales are chosen (--quant-weighting). */
typedef enum sp_export_weighting {
    SP_EXPORT_WEIGHT_PLAIN = 0, /* ggml's reference rounding, bit for bit */
    SP_EXPORT_WEIGHT_CALIB = 1, /* each block's d (and m) minimizing Σ diag(H)_j (w_j − ŵ_j)², H the second
                                   moment of the tensor's input over calibration tokens (sp_eval's reader
                                   statistics, computed by the export on the model it writes) */
} sp_export_weighting;

typedef struct sp_export_opts {
    sp_gguf_ttype type; /* 2-D weights; 1-D tensors (norms, biases) are always F32.
                           A 4- or 5-bit type keeps token_embd and output at Q8_0;
                           a block type falls back to F16 for rows not a multiple of 32 */
    int quiet;
    int restart;              /* discard an earlier export's journal and tmp first */
    int force;                /* replace an existing OUT (io/base/fileio.h: without it an existing file there is
                                 refused, 73, unless this export's journal shows it finished it) */
    const char *journal_path; /* NULL: "<out>.journal", removed after the rename, under the lock
                                 "<out>.lock" (its file stays: io/base/lock.h); else this file, under
                                 a lock the caller holds, kept (a rerun checks the file against it) */
    const char *restart_hint; /* how to discard a refused journal; NULL: "rerun with --restart" */
    const char *label;        /* prefix of progress lines; NULL: "slicepipe export" */
    sp_export_weighting weighting; /* CALIB needs a block type and calib_tokens */
    const char *calib_tokens;      /* a token .npy (slicepipe tokenize) */
    int64_t calib_seqlen;          /* window length; 0: 256 */
    int64_t calib_windows;         /* windows used; 0: 64 (or all there are, if fewer) */
    int threads;                   /* the statistics pass's threads; 0: the backend's default */
} sp_export_opts;

typedef struct sp_export_stats {
    char arch[32];         /* llama.cpp architecture written */
    char tokenizer[64];    /* "tokenizer.bin (llama)", "none (minimal)" ... */
    int64_t n_tensors;
    int64_t n_fallback_f16; /* Q8_0 tensors stored as F16 (row length) */
    int64_t file_bytes;
    int64_t peak_chunk_bytes; /* the row buffer */
    char xxh128[33];
    double seconds;
    int64_t resumed_bytes; /* bytes of an interrupted export's tmp verified and kept */
    int reused;            /* the finished file was there and matched its journal: nothing written */
    int64_t calib_tokens;  /* tokens the reader statistics were summed over (weighting calib) */
    double calib_seconds;  /* their pass */
} sp_export_stats;

/* Exports model_dir to out_path, resuming an interrupted export of the same
 * model and options. 0, or 64/65/66/73/74 (75: another export holds the
 * lock) with one message naming the file, the tensor and the reason. A
 * journal of another export (model, options or tool version changed): 65,
 * nothing touched. out_path is checked before any work as a single-file
 * output (io/base/fileio.h sp_io_out_check): not a folder, FIFO or device, not
 * the model's own files, and not an existing file without opts->force. */
int sp_export_gguf(const char *model_dir, const char *out_path, const sp_export_opts *opts, sp_export_stats *st);

/* The families with a llama.cpp architecture, from the registry: "llama,
 * mistral, ... and phi" into buf (n bytes). Returns buf. */
const char *sp_export_families(char *buf, size_t n);

/* Everything the export of a sliced output of m would refuse, checked on m
 * before the slicing ([output] gguf): the output is m's family at hidden
 * size `hidden`, its head tied when tied_head (the plan's: no head tensor
 * written) and untied otherwise (as output.c writes a stock output), with
 * m's tokenizer. 0, or 65 with the export's own message (a Gemma head
 * llama.cpp would tie, a partial rotary llama.cpp's llama cannot run, a
 * tokenizer with no GGUF vocabulary). */
int sp_export_check(const sp_model *m, int64_t hidden, int tied_head);

#endif
