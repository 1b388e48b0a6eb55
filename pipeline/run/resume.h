/* pipeline/run/resume.h — resume owns the job folder and its journal: the record
 * formats the writer appends and replays (docs/formats.md §5), the state a
 * run starts from, and the API (resume.c; the protocol: docs/resume.md). */
#ifndef SP_RESUME_H
#define SP_RESUME_H

#include <stdint.h>

struct job;
struct sp_model;

/* Journal record types (io/base/journal.h payloads). A run appends PARAMS,
 * BACKEND, CONTENT and STAT once (a resume appends STAT again after it re-verified
 * inputs whose files were replaced or touched), then at each layer boundary (the embedding is boundary -1) one
 * INPUT for the input tensors consumed since the last boundary, one TENSOR
 * per output tensor finished since then and a LAYER record, and DONE at the
 * very end. Payloads are these structs, native byte order. */
enum {
    SP_REC_PARAMS = 1, SP_REC_TENSOR = 2, SP_REC_LAYER = 3, SP_REC_DONE = 4, SP_REC_INPUT = 5, SP_REC_STAT = 6,
    SP_REC_CONTENT = 7, SP_REC_BACKEND = 8
};
/* BACKEND: the resolved backend's identity (sp_bk.identity, NUL-terminated,
 * at most 256 bytes with the NUL). A resume whose backend resolves to
 * another identity is refused (65) naming both. */

/* INPUT: the XXH3-128 (canonical bytes) of read-plan items [first, first +
 * count), as the reader read them; followed by count × 16 bytes. A resume
 * re-hashes every item it relies on (already consumed, or read again) and
 * refuses (65) one that differs: the output never mixes two versions. */
typedef struct sp_rec_input {
    int64_t first, count;
} sp_rec_input;

/* CONTENT: an sp_rec_input with first = 0 and count = every read-plan item,
 * the XXH3-128 of each item's bytes hashed by the first run before any work
 * (docs/resume.md §7): what tells a model folder restored byte for byte
 * from one that changed, for the tensors not read yet too. The reader
 * checks every tensor it reads against it.
 *
 * STAT: one per input file (the shards, in checkpoint order), as the run
 * that appended it saw them; the last STAT record is the one that counts.
 * A file whose device, inode, mtime and ctime are all as recorded was not
 * touched. Otherwise (a write, a utime, a copy put back: ctime moves) a
 * resume re-hashes every read-plan item of that file and refuses (65) one
 * that differs from CONTENT, naming the file and the tensor, also for a
 * tensor it has not read yet; when all match it goes on and appends a new
 * STAT. A size that differs is refused at once. */
typedef struct sp_rec_stat_file {
    int64_t size, dev, ino, ctime_ns, mtime_ns;
} sp_rec_stat_file;

typedef struct sp_rec_params {
    int64_t threads;   /* BLAS threads of the first run: reused on resume */
    int64_t n_layers, n_tensors, hidden;
} sp_rec_params;

typedef struct sp_rec_tensor {
    int64_t index;     /* declaration order */
    int64_t shard;
    int64_t offset;    /* absolute, in the shard file */
    int64_t length;
    char hash[33];     /* XXH3-128, hex */
    char pad[7];
} sp_rec_tensor;

/* Also the payload of SP_MSG_BOUNDARY (compute → writer), followed by
 * n_eval_rows × hidden float64 eigenvalues (the PCAs of this boundary).
 * basis = "global" journals a survey boundary after each layer of the
 * survey (survey = 1): layer is the survey's layer, the basis file holds
 * the running sum G of the second moments instead of Q, no tensor is
 * durable yet and there are no eigenvalues. */
typedef struct sp_rec_layer {
    int64_t layer;         /* -1: the embedding */
    int64_t n_tensors_done; /* output tensors durable at this boundary (writer fills it) */
    int64_t basis_idx;     /* which basis file holds Q (a survey boundary: G) after this boundary */
    int64_t n_eval_rows;
    char spill[32];        /* file name (in the spill folder) of the next layer's input */
    char spill_hash[33];
    char basis_hash[33];
    char survey;           /* 1: a survey boundary */
    char pad[5];
} sp_rec_layer;

/* Where a run starts, from the journal's replay (sp_resume_open). */
typedef struct sp_resume_state {
    int64_t layer;          /* last durable boundary, -2 if none */
    int64_t survey;         /* last durable survey boundary (a survey basis), -1 if none */
    int basis;              /* the basis file that boundary named */
    char *spill;            /* the spill holding its next input */
    char spill_hash[33];    /* as the boundary recorded it */
    int read_start, out_start; /* plan / output indices to start from */
    unsigned char (*in_expect)[16]; /* (n_reads) the journaled hashes of the first run */
    int in_known;           /* items [0, in_known) are covered by INPUT records */
    int in_checked;         /* the reader checks items [0, in_checked) against in_expect (CONTENT: all) */
} sp_resume_state;

/* resume.c */
char *sp_job_join(const char *a, const char *b); /* "a/b", malloc'd, or NULL */
int sp_resume_fingerprint(const struct sp_model *m, char hex[33]);
void sp_resume_manifest_identity(const struct job *j, char hex[33]);
int sp_resume_open(struct job *j, int *complete); /* lock, journal, replay, verification */
int sp_resume_done(struct job *j);                /* DONE appended */
void sp_resume_clean(struct job *j);              /* the finished job's scratch removed */

/* The job folder (<output>/.slicepipe) and its basis file names: created
 * here only, refused when a link or a file stands there (73). */
int sp_resume_job_dir(struct job *j);

#endif
