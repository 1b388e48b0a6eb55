/* io/text/tok_spm.c — SentencePiece tokenizer.model (a serialized ModelProto), BPE
 * and unigram.
 *
 * Choice: libsentencepiece (Debian libsentencepiece-dev) behind a small C++
 * shim (io/text/tok_spm_shim.cc), not a hand-rolled protobuf reader. Parsing the
 * few ModelProto fields is easy; reproducing what SentencePiece does with
 * them is not: the normalizer is a precompiled Darts double-array of rewrite
 * rules (nmt_nfkc and user rules) with its own longest-match and whitespace
 * handling, unigram is a Viterbi lattice with user-defined and unused pieces,
 * and BPE merges by piece score with byte fallback. The reference for ids is
 * python3-sentencepiece, which is this same library, so using it gives
 * identical ids by construction; a reimplementation could only drift.
 * libprotobuf-c would parse the file but leave all of that to us.
 *
 * The file is read and hashed through io/base/fileio, then handed to the library
 * as bytes (LoadFromSerializedProto), so no path is opened twice. A file the
 * library refuses (truncated, not a ModelProto, inconsistent) is 65 with its
 * message.
 *
 * BOS/EOS rule: HF's LlamaTokenizer defaults (BOS yes, EOS no), overridden by
 * add_bos_token / add_eos_token in tokenizer_config.json beside the model; a
 * model without a BOS (bos_id = -1) adds none.
 */
#include "tokenizer.h"

#include "error.h"
#include "tok_spm_shim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct spm {
    void *h;
    const char *path;
    int64_t vocab;
} spm;

static int push_id(void *ctx, int32_t id) { return sp_tok_ids_push(ctx, id); }
static int append_text(void *ctx, const char *s, int64_t n) { return sp_tok_text_append(ctx, s, n); }

static int spm_encode(void *p, const char *text, int64_t len, int64_t text_max, sp_tok_ids *out) {
    spm *m = p;
    (void)text_max; /* SentencePiece's normalizer grows a text by a bounded factor */
    char err[512] = "";
    int rc = sp_spm_shim_encode(m->h, text, len, push_id, out, err, sizeof err);
    if (rc > 0) return SP_EX_SOFTWARE; /* push_id recorded the message */
    if (rc < 0) return sp_fail(SP_EX_DATAERR, "%s: sentencepiece encode failed: %s", m->path, err);
    return 0;
}

static int spm_decode(void *p, const int32_t *ids, int64_t n, int skip_special, sp_tok_text *out) {
    spm *m = p;
    char err[512] = "";
    int rc = sp_spm_shim_decode(m->h, ids, n, skip_special, append_text, out, err, sizeof err);
    if (rc > 0) return SP_EX_SOFTWARE;
    if (rc < 0) return sp_fail(SP_EX_DATAERR, "%s: sentencepiece decode failed: %s", m->path, err);
    return 0;
}

static void spm_free(void *p) {
    spm *m = p;
    if (!m) return;
    if (m->h) sp_spm_shim_free(m->h);
    free(m);
}

static const sp_tok_ops spm_ops = {spm_encode, spm_decode, spm_free};

int sp_tok_spm_open(sp_tok *t, const char *path, const char *dir, const char *buf, int64_t len) {
    if (len == 0) return sp_fail(SP_EX_DATAERR, "%s: empty tokenizer.model", path);
    sp_tok_spm_spec spec;
    SP_TRY(sp_tok_spm_spec_read(path, (const unsigned char *)buf, len, &spec)); /* a model_type the library knows */
    char err[512] = "";
    void *h = sp_spm_shim_load(buf, len, err, sizeof err);
    if (!h) return sp_fail(SP_EX_DATAERR, "%s: not a valid SentencePiece model (truncated or corrupt?): %s", path, err);
    spm *m = calloc(1, sizeof *m);
    if (!m) {
        sp_spm_shim_free(h);
        return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    m->h = h;
    m->path = t->path;
    int32_t bos, eos, unk;
    sp_spm_shim_info(h, &m->vocab, &bos, &eos, &unk);
    t->ops = &spm_ops;
    t->impl = m;
    if (m->vocab <= 0) return sp_fail(SP_EX_DATAERR, "%s: SentencePiece model has no pieces", path);
    t->vocab_size = m->vocab;
    t->bos_id = bos;
    t->eos_id = eos;
    int add_bos, add_eos;
    char bos_s[128], eos_s[128];
    SP_TRY(sp_tok_read_config(dir, &add_bos, &add_eos, bos_s, eos_s));
    if (add_bos < 0) add_bos = 1;
    if (add_eos < 0) add_eos = 0;
    t->n_prefix = t->n_suffix = 0;
    if (add_bos && bos >= 0) t->prefix[t->n_prefix++] = bos;
    if (add_eos && eos >= 0) t->suffix[t->n_suffix++] = eos;
    snprintf(t->kind_name, sizeof t->kind_name, "SentencePiece tokenizer.model (libsentencepiece)");
    return 0;
}
