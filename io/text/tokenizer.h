/* io/text/tokenizer.h — text to token ids and back, for the three tokenizer
 * formats a model folder can carry. The reference is each format's own
 * implementation: Hugging Face's Rust `tokenizers` for tokenizer.json,
 * libsentencepiece for tokenizer.model, llama2.c's run.c for tokenizer.bin;
 * ids must be identical to theirs.
 *
 * One handle, one format module behind it (io/text/tok_hf.c, io/text/tok_spm.c,
 * io/text/tok_llama2c.c). A handle is not thread-safe (it keeps scratch buffers);
 * open one per thread.
 *
 * Text is UTF-8. Invalid UTF-8 is refused (65) by every module: HF's Rust
 * API takes &str, so no invalid byte ever reaches its tokenizer, and Python
 * refuses to decode such a file by default. Callers name the file and the
 * document in the message (sp_tok_encode names the byte offset).
 */
#ifndef SP_TOKENIZER_H
#define SP_TOKENIZER_H

#include <stdint.h>

typedef struct sp_tok sp_tok; /* opaque */

/* The largest vocabulary (ids 0..N-1) any input may have: config.json's
 * vocab_size, synth --vocab, and every id a tokenizer file holds (a larger
 * id is refused, 65, before any table is sized from it). */
#define SP_TOK_VOCAB_MAX 4000000

typedef enum sp_tok_kind {
    SP_TOK_KIND_HF_JSON = 0, /* tokenizer.json */
    SP_TOK_KIND_SPM = 1,     /* SentencePiece tokenizer.model */
    SP_TOK_KIND_LLAMA2C = 2, /* llama2.c tokenizer.bin */
} sp_tok_kind;

/* A caller-owned growable id buffer; sp_tok_encode appends to it. Zero it
 * before first use; reuse it across documents (n = 0) to avoid allocation. */
typedef struct sp_tok_ids {
    int32_t *ids; /* (cap), the first n are valid */
    int64_t n, cap;
} sp_tok_ids;

/* A caller-owned growable byte buffer (decode output, not NUL-terminated
 * unless sp_tok_decode says so). */
typedef struct sp_tok_text {
    char *s; /* (cap) */
    int64_t n, cap;
} sp_tok_text;

/* Finds the tokenizer in model_dir the way HF does: tokenizer.json first,
 * then tokenizer.model, then tokenizer.bin (llama2.c). None of them: 66.
 * A present but unreadable, truncated or corrupt file, or an unsupported
 * component (a WordPiece or Unigram tokenizer.json, an unknown normalizer or
 * pre-tokenizer): 65 naming the file and the component. */
int sp_tok_open(const char *model_dir, sp_tok **out);
/* Opens one file, the format chosen by its name (tokenizer.json, *.model,
 * *.bin; anything else by content: '{' is JSON). */
int sp_tok_open_file(const char *path, sp_tok **out);
void sp_tok_free(sp_tok *t); /* accepts NULL */

/* Encodes one document (len bytes of UTF-8; len < 0: NUL-terminated) and
 * appends its ids to out. With add_special != 0 the tokenizer's own rule adds
 * BOS/EOS around the document (HF: the post-processor; SentencePiece: BOS,
 * as HF's LlamaTokenizer does, or tokenizer_config.json's add_bos_token /
 * add_eos_token; llama2.c: BOS). Work memory is reused between calls and is
 * proportional to the document, never to the whole input. Invalid UTF-8: 65
 * with the byte offset in the document. */
int sp_tok_encode(sp_tok *t, const char *text, int64_t len, int add_special, sp_tok_ids *out);

/* The most bytes a document's text may grow to inside the tokenizer: after
 * each normalizer and pre-tokenizer of a tokenizer.json (a Replace normalizer
 * can make a 64 KiB document gigabytes long). Past it, sp_tok_encode is 65.
 * Default: SP_TEXTDOC_DOC_BYTES_MAX_DEFAULT, the limit on a document's raw
 * text (io/text/textdoc.h); tokenize --max-doc-bytes sets both. */
void sp_tok_set_text_max(sp_tok *t, int64_t bytes);

/* Decodes ids to UTF-8 text appended to out (then NUL-terminated, the NUL not
 * counted in n). skip_special drops special tokens (BOS, EOS, HF special
 * added tokens), as HF's decode(ids, skip_special_tokens=True). An id out of
 * range: 65. */
int sp_tok_decode(sp_tok *t, const int32_t *ids, int64_t n, int skip_special, sp_tok_text *out);

sp_tok_kind sp_tok_kind_of(const sp_tok *t);
const char *sp_tok_kind_name(const sp_tok *t); /* "tokenizer.json (BPE)" ... */
const char *sp_tok_path(const sp_tok *t);      /* the file that was opened */
int64_t sp_tok_vocab_size(const sp_tok *t);    /* max id + 1 */
int32_t sp_tok_bos_id(const sp_tok *t);        /* -1 if none */
int32_t sp_tok_eos_id(const sp_tok *t);        /* -1 if none */
int sp_tok_adds_bos(const sp_tok *t);          /* the add_special rule puts an id before */
int sp_tok_adds_eos(const sp_tok *t);          /* ... or after the document */
/* XXH3-128 of the tokenizer file's bytes, 32 hex digits (run identity). */
const char *sp_tok_hash(const sp_tok *t);

void sp_tok_ids_free(sp_tok_ids *b);
void sp_tok_text_free(sp_tok_text *b);
/* Appends; on allocation failure 70 with a message. */
int sp_tok_ids_push(sp_tok_ids *b, int32_t id);
/* Makes room for n ids in all (cap >= n), so pushes up to n never allocate. */
int sp_tok_ids_reserve(sp_tok_ids *b, int64_t n);
int sp_tok_text_append(sp_tok_text *b, const void *s, int64_t n);

/* Length of the valid UTF-8 prefix of s[0..n) (== n when all valid; the
 * rules are RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). */
int64_t sp_utf8_valid_prefix(const char *s, int64_t n);

/* ---- for the format modules only ---------------------------------------
 * Each module fills in a handle from the file's bytes (buf, len; owned by the
 * caller, valid during open only). path names the file in messages; dir is
 * its folder (for tokenizer_config.json). */
typedef struct sp_tok_ops {
    /* Appends the ids of text (valid UTF-8), no BOS/EOS; the text it works
     * on may grow to at most text_max bytes (sp_tok_set_text_max). */
    int (*encode)(void *impl, const char *text, int64_t len, int64_t text_max, sp_tok_ids *out);
    int (*decode)(void *impl, const int32_t *ids, int64_t n, int skip_special, sp_tok_text *out);
    void (*free)(void *impl);
} sp_tok_ops;

#define SP_TOK_AFFIX_MAX 8
struct sp_tok {
    const sp_tok_ops *ops;
    void *impl;
    sp_tok_kind kind;
    char kind_name[64];
    char *path;
    char hash[33];
    int64_t vocab_size, text_max;
    int32_t bos_id, eos_id;
    int32_t prefix[SP_TOK_AFFIX_MAX], suffix[SP_TOK_AFFIX_MAX]; /* ids added by add_special */
    int n_prefix, n_suffix;
};

int sp_tok_hf_open(sp_tok *t, const char *path, const char *dir, const char *buf, int64_t len);
int sp_tok_spm_open(sp_tok *t, const char *path, const char *dir, const char *buf, int64_t len);
int sp_tok_llama2c_open(sp_tok *t, const char *path, const char *dir, const char *buf, int64_t len);

/* What io/text/tok_spm.c and the vocabulary reader need of a tokenizer.model's
 * ModelProto, read with the protobuf wire format: the piece count, the
 * trainer_spec's model_type (1 unigram, 2 BPE, 3 word, 4 char; anything else
 * is 65: libsentencepiece would silently read it as unigram) and special
 * ids, and normalizer_spec.add_dummy_prefix. Absent fields take the proto's
 * defaults. */
typedef struct sp_tok_spm_spec {
    int64_t n_pieces, model_type;
    int32_t unk_id, bos_id, eos_id, pad_id;
    int add_dummy_prefix;
} sp_tok_spm_spec;
int sp_tok_spm_spec_read(const char *path, const unsigned char *buf, int64_t len, sp_tok_spm_spec *out);

/* tokenizer_config.json beside a tokenizer: add_bos_token / add_eos_token if
 * present (each -1 when absent), and the content of bos_token / eos_token
 * (a string or {"content": ...}) copied into bos/eos (empty when absent).
 * A missing file is not an error; a corrupt one is 65. */
int sp_tok_read_config(const char *dir, int *add_bos, int *add_eos, char bos[128], char eos[128]);


/* ---- the vocabulary, for exporters (GGUF) ---------------------------------
 * Every id's piece, score and type, the merges and the special ids, read
 * again from the tokenizer's file (sp_tok_path) so the format modules stay
 * untouched. Piece types are GGUF's (llama.cpp's llama_token_type). */
typedef enum sp_tok_piece_type {
    SP_TOK_PIECE_NORMAL = 1,
    SP_TOK_PIECE_UNKNOWN = 2,
    SP_TOK_PIECE_CONTROL = 3,
    SP_TOK_PIECE_USER_DEFINED = 4,
    SP_TOK_PIECE_UNUSED = 5,
    SP_TOK_PIECE_BYTE = 6,
} sp_tok_piece_type;

typedef enum sp_tok_style {
    SP_TOK_STYLE_SPM = 0, /* SentencePiece-style: U+2581 for spaces, score-ordered merges, <0xNN> bytes */
    SP_TOK_STYLE_BPE = 1, /* GPT-2 byte-level BPE: pieces in GPT-2's byte alphabet, ranked merges */
} sp_tok_style;

typedef struct sp_tok_vocab {
    sp_tok_style style;
    int64_t n;           /* ids 0..n-1 */
    char **piece;        /* (n) UTF-8 bytes, NUL-terminated; an id with no piece gets "[PADn]" */
    float *score;        /* (n) */
    int32_t *type;       /* (n) sp_tok_piece_type */
    int64_t n_merges;
    char **merges;       /* (n_merges) "left right", BPE style only */
    int32_t unk_id, bos_id, eos_id, pad_id; /* -1: none */
    int add_bos, add_eos;
    int add_space_prefix; /* SPM style: a U+2581 is put before the text */
    char pre[32];         /* BPE style: the pre-tokenizer regex family: "gpt2", "llama-bpe", "qwen2" */
} sp_tok_vocab;

/* Fills v (zeroed first). tokenizer.bin: spaces become U+2581, ids 0/1/2
 * unk/control, <0xNN> bytes. tokenizer.model: the ModelProto's pieces, types
 * and trainer ids (unigram models: 65). tokenizer.json BPE: byte-level
 * (ByteLevel pre-tokenizer or decoder) is BPE style with its merges; else SPM
 * style with score -rank of the merge that makes the piece. 65 naming the
 * file for anything it cannot express. */
int sp_tok_vocab_load(const sp_tok *t, sp_tok_vocab *v);
void sp_tok_vocab_free(sp_tok_vocab *v);

#endif
