/* pipeline/model/calib.h — calibration and evaluation token windows from text.
 *
 * [calibration] text = FILE, [eval] text = FILE and `slicepipe eval --text`
 * turn a text file into the token windows that `tokens = FILE.npy` would
 * give, with the model folder's own tokenizer (io/text/tokenizer.h: tokenizer.json
 * first, then tokenizer.model, then tokenizer.bin).
 *
 * THE WINDOW RULE (README "Text inputs"; tests/test_text.py reimplements it):
 *
 *   1. The stream. The documents of FILE (io/text/textdoc.h: .txt split at blank
 *      lines, .jsonl one "text" per line, either gzip-compressed), in file
 *      order, each encoded with the tokenizer's own BOS/EOS rule
 *      (sp_tok_encode, add_special = 1), concatenated: S[0..M).
 *   2. Windows of T = seqlen tokens; n = nsamples; N = n*T tokens are needed.
 *      M < N is refused (65, saying M and N), for both samplings.
 *      - "first":  window k = S[k*T, (k+1)*T), k = 0..n-1. Only the first N
 *                  tokens are read; the rest of the file is not.
 *      - "random": the whole file is read once to count M, then
 *                  R = M - T + 1 possible starts; for k = 0..n-1,
 *                  s_k = uniform(R) and window k = S[s_k, s_k + T). Windows
 *                  may overlap or repeat; they are kept in draw order.
 *                  uniform(R): x = splitmix64(), redrawn while
 *                  x >= 2^64 - (2^64 mod R); the result is x mod R.
 *                  splitmix64 (state: uint64, starts as seed):
 *                    state += 0x9E3779B97F4A7C15
 *                    z = state
 *                    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
 *                    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
 *                    return z ^ (z >> 31)          (all arithmetic mod 2^64)
 *                  A second pass re-reads the file and copies the windows.
 *   3. Evaluation (nsamples = 0 here means every full window): W = windows,
 *      or floor(M/T) when 0; the result is S[0, W*T), i.e. non-overlapping
 *      windows from the start. W = 0 (less than one window) is refused (65).
 *
 * Memory: the result (4 bytes per token: N, or W*T), one document's text and
 * ids (textdoc's bound), textdoc's read buffers, and for "random" 16 bytes per
 * window. The text is never held whole. The result is held to the caller's
 * budget (ids_bytes_max): N*4 past it is refused (64) before the file is
 * read; every window of a text (nsamples = 0) is refused (64) as soon as the
 * ids read pass it, so a small .gz cannot make the reader hold gigabytes.
 *
 * Every id is checked to be below the model's vocabulary. Errors name the
 * text file (and the document and line): 66 missing file or tokenizer,
 * 65 bad text / too few tokens / an id outside the vocabulary.
 */
#ifndef SP_CALIB_H
#define SP_CALIB_H

#include <stdint.h>

#include "manifest.h"
#include "tokens.h"

typedef struct sp_calib_opts {
    int64_t seqlen;             /* T >= 2 */
    int64_t nsamples;           /* n >= 1 windows; 0 = every full window (sampling first only) */
    sp_calib_sampling sampling;
    uint64_t seed;              /* for SP_CALIB_SAMPLING_RANDOM */
    int64_t vocab;              /* ids must be < vocab; <= 0: unchecked */
    const char *what;           /* for messages: "[calibration] text", "[eval] text", "--text" */
    int64_t ids_bytes_max;      /* > 0: the result's ids may take at most this many bytes (64 past it) */
    const char *budget_what;    /* with ids_bytes_max, its name for messages: "--memory", "[resources] memory" */
    int progress;               /* one summary line on stderr */
} sp_calib_opts;

/* The windows of text_path (see the rule above), tokenized with the
 * tokenizer of tok_dir (a model folder, or one tokenizer file). out->n is
 * n*T, or W*T; window k is out->ids[k*T, (k+1)*T). On failure *out is zeroed.
 * tok_hash (NULL, or 33 bytes) receives the tokenizer file's XXH3-128. */
int sp_calib_text_windows(const char *text_path, const char *tok_dir, const sp_calib_opts *o, sp_tokens *out,
                          char *tok_hash);

/* The manifest's [calibration] source: `tokens` through sp_tokens_load as
 * before (the whole stream; the caller takes the first nsamples*seqlen), or
 * `text` through sp_calib_text_windows with the model folder's tokenizer. */
int sp_calib_load(const sp_manifest *mf, int64_t vocab, int progress, sp_tokens *out);
/* The manifest's [eval] source likewise (has_eval must be set). */
int sp_calib_load_eval(const sp_manifest *mf, int64_t vocab, int progress, sp_tokens *out);

/* The PRNG of the rule, exposed for tests. */
uint64_t sp_calib_splitmix64(uint64_t *state);
uint64_t sp_calib_uniform(uint64_t *state, uint64_t range); /* range >= 1 */

#endif
