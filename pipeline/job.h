/* pipeline/job.h — internal: the state of one `slicepipe run`, shared by the
 * supervisor (slice.c) and, through fork(), by the three stage processes
 * (stages.c: reader and writer; compute.c: the SliceGPT math).
 *
 *   reader ──weights ring──► compute ──output ring──► writer
 *
 * The read plan (plan.c) lists, in the exact order compute consumes them,
 * every input tensor: the embedding twice, each layer's tensors in the
 * architecture table's order, the final norm and the head. The reader streams
 * them as messages whose id is the plan index; compute checks every id.
 *
 * Files: slice.c (the supervisor's run), plan.c (widths, reads, memory),
 * output.c (output folder, declaration, config.json, side files), resume.c
 * (identity, journal replay, status), stages.c (reader, writer, watching),
 * compute.c (the SliceGPT math).
 */
#ifndef SP_JOB_H
#define SP_JOB_H

#include <stdatomic.h>
#include <stdint.h>

#include "manifest.h"
#include "model.h"
#include "ring.h"
#include "slice.h"
#include "spill.h"
#include "st_writer.h"
#include "journal.h"
#include "tokens.h"
#include "backend.h"
#include "arch.h"
#include "slice_plan.h"
#include <stdio.h>

enum { SP_STAGE_READER, SP_STAGE_COMPUTE, SP_STAGE_WRITER, SP_STAGE_COUNT };
extern const char *const sp_stage_names[SP_STAGE_COUNT];

enum { SP_MSG_TENSOR = 1, SP_MSG_BOUNDARY = 2 };

/* Journal record types (io/journal.h payloads). A run appends PARAMS and
 * STAT once, then at each layer boundary (the embedding is boundary -1) one
 * INPUT for the input tensors consumed since the last boundary, one TENSOR
 * per output tensor finished since then and a LAYER record, and DONE at the
 * very end. Payloads are these structs, native byte order. */
enum { SP_REC_PARAMS = 1, SP_REC_TENSOR = 2, SP_REC_LAYER = 3, SP_REC_DONE = 4, SP_REC_INPUT = 5, SP_REC_STAT = 6 };

/* INPUT: the XXH3-128 (canonical bytes) of read-plan items [first, first +
 * count), as the reader read them; followed by count × 16 bytes. A resume
 * re-hashes every item it relies on (already consumed, or read again) and
 * refuses (65) one that differs: the output never mixes two versions. */
typedef struct sp_rec_input {
    int64_t first, count;
} sp_rec_input;

/* STAT: one per input file (the shards, in checkpoint order), as the first
 * run saw them; a resume refuses (65) a file whose size, inode or change
 * time (ctime: any write or utime sets it) differs, also for the tensors it
 * has not read yet. */
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

/* Where the compute stage's time goes (run summary, slicing.json, bench/). */
enum sp_prof { SP_PROF_FORWARD, SP_PROF_COV, SP_PROF_EIGH, SP_PROF_ROTATE, SP_PROF_SPILL, SP_PROF_WAIT, SP_PROF_COUNT };
extern const char *const sp_prof_names[SP_PROF_COUNT];

/* One stage's counters, in a MAP_SHARED page written by the stage and read by
 * the supervisor. */
typedef struct sp_stage_stat {
    _Atomic int64_t busy_ns, wait_ns;     /* time working / blocked on a ring */
    _Atomic int64_t bytes_read, bytes_written; /* file traffic (incl. spill) */
    _Atomic int64_t peak_rss;             /* bytes, at exit */
    _Atomic int64_t layer;                /* compute: the layer in progress */
    _Atomic int32_t phase;                /* compute: enum sp_phase */
    _Atomic int32_t done;                 /* 1 once the stage finished */
    _Atomic int64_t prof_ns[SP_PROF_COUNT]; /* compute: time per phase (wait: rings and the journal) */
    int32_t rc;                           /* exit status */
    char err[1024];                       /* the message when rc != 0 */
} sp_stage_stat;

enum sp_phase { SP_PHASE_START, SP_PHASE_EMBED, SP_PHASE_READ, SP_PHASE_ATTN, SP_PHASE_PCA, SP_PHASE_MLP,
                SP_PHASE_WRITE, SP_PHASE_HEAD, SP_PHASE_DONE,
                SP_PHASE_SURVEY /* basis = "global": the dense pass that measures the one basis */ };

typedef struct sp_shared {
    sp_stage_stat st[SP_STAGE_COUNT];
    _Atomic int64_t journaled_layer; /* the last boundary the writer journaled (-1: embedding; -2: none) */
    _Atomic int64_t journaled_survey; /* the last survey boundary journaled (-1: none) */
    /* ((1 + n_pca·L), D) eigenvalues follow, written by compute */
} sp_shared;

typedef struct sp_read_item {
    const char *name;
    const sp_st_file *file;
    const sp_st_tensor *t;
    int commit; /* the reader's commit point follows this item (embedding, each layer, head) */
} sp_read_item;

typedef struct job {
    const sp_manifest *mf;
    const sp_run_opts *o;
    sp_model m;
    sp_bk *bk;                     /* the resolved backend's instance (owned) */
    sp_bk *eval_bk;                /* [eval]'s: bk when its memory is host memory, else a CPU instance */
    char bk_identity[256];         /* everything about it that can change bits (run identity) */
    sp_arch_out outs[SP_ARCH_LAYER_MAX]; /* (n_outs) one layer's output tensors, in emission order */
    int n_outs;
    int n_pca;                     /* PCAs per layer: 2, or 1 for a parallel block */
    sp_tokens calib;
    sp_tokens eval_toks;           /* [eval] tokens, loaded once (n == 0 without [eval]) */
    sp_dtype out_dtype;
    int64_t N, T, D, L, V, F, hq, hkv;
    sp_slice_plan plan;            /* what is kept, and how (slice_plan.h) */
    int64_t chunk_w;               /* windows per spill chunk */
    char *spill_a, *spill_b;       /* spill file paths */
    /* the plan */
    sp_read_item *reads;           /* (n_reads) in consumption order */
    int n_reads;
    int *layer_read0;              /* (L + 1) plan index of layer l's first tensor; [L]: the final norm */
    int *survey_read0;             /* (L) basis = "global": plan index of layer l's first tensor in the survey */
    int embed_read2;               /* plan index of the embedding's second read (to be rotated) */
    int *layer_out0;               /* (L + 1) output index of layer l's first tensor; [L]: the head */
    int64_t ring_slots, ring_slot_bytes, out_slots;
    int64_t stage_bytes;           /* reader staging buffer */
    int64_t ob_elems;              /* compute's output-dtype conversion block */
    sp_stw *w;                     /* planned before fork; used by the writer */
    sp_ring *wring, *oring;        /* weights ring, output ring */
    sp_shared *sh;                 /* MAP_SHARED stats */
    double *evals;                 /* ((1 + n_pca·L), D) in the shared map */
    int64_t shared_bytes;
    double t_start;
    int64_t threads;               /* resolved BLAS threads (journaled, reused) */
    /* crash safety */
    char *job_dir;                 /* <output>/.slicepipe */
    char *basis_path[2];           /* alternating basis files */
    struct sp_journal *jr;         /* used by the writer stage after fork */
    struct sp_lock *lock;          /* held for the whole run */
    sp_run_identity id;            /* computed once: manifest meaning, input fingerprint, version */
    int64_t resume_layer;          /* last durable boundary, -2 if none */
    int64_t resume_survey;         /* last durable survey boundary (basis = "global"), -1 if none */
    int resume_basis;              /* the basis file that boundary named */
    char *resume_spill;            /* the spill holding its next input */
    char resume_spill_hash[33];    /* as the boundary recorded it */
    int read_start, out_start;     /* plan / output indices to start from */
    int tensors_journaled;         /* writer: TENSOR records so far */
    /* input identity (see SP_REC_INPUT) */
    unsigned char (*in_hash)[16];  /* (n_reads) shared map: the reader's hash of each item */
    unsigned char (*in_expect)[16]; /* (n_reads) the journaled hashes of the first run */
    int in_known;                  /* items [0, in_known) of in_expect are journaled */
    int inputs_journaled;          /* writer: items covered by INPUT records so far */
    int64_t eval_chunk_bytes;      /* [eval]: the activation chunk budget that fits [resources] memory */
} job;

/* The supervisor's SIGINT/SIGTERM (slice.c installs the handler): while the
 * stages run (sp_stages_in_progress), the handler only records the signal and
 * sp_stages_run stops the stages and returns 75 (the job is resumable);
 * elsewhere it prints one line and exits 75 at once (every step before and
 * after the stages is crash-safe). */
#include <signal.h>
extern volatile sig_atomic_t sp_stages_stop_signal, sp_stages_in_progress;

/* Stage entry points; each returns a status (0 or sysexits) with sp_errmsg. */
int sp_stage_reader(job *j);
int sp_stage_compute(job *j);
int sp_stage_writer(job *j);

/* Bytes of memory the compute stage allocates for this job: host, and (for
 * a backend whose memory is not host memory) device. */
int64_t sp_compute_plan_bytes(const job *j);
int64_t sp_compute_plan_device_bytes(const job *j);

/* plan.c */
int sp_plan_widths(job *j);
void sp_plan_layer_widths(const job *j, int64_t l, int64_t w[SP_POS_COUNT]);
int sp_plan_reads(job *j);
int sp_plan_reads_after(const job *j, int64_t layer, int survey); /* plan index after a boundary's inputs */
int sp_plan_memory(job *j);           /* rings, staging, chunk size: after reads and the declaration */
int64_t sp_plan_total(const job *j);  /* what the summed peak RSS of the four processes will be */
int64_t sp_plan_process_base_bytes(void);
void sp_plan_print(const job *j, FILE *f);

/* output.c */
int sp_output_prepare(const char *out); /* mkdir -p and writable, or 73 */
int sp_output_declare(job *j);          /* every output tensor, into j->w */
int sp_output_head_bias(const job *j);  /* the sliced head has a bias tensor */
int sp_output_config(job *j, const char *fingerprint);
int sp_output_side_files(job *j);
/* Before any work: the output is not, does not contain and is not inside
 * the folder of any input file (by device and inode: links and bind mounts
 * included), 64; an existing non-empty output that is not a slicepipe job,
 * 73; config.json and the side files lie inside the model folder, are
 * regular files and small enough (65). */
int sp_output_check(job *j);
/* A finished job rerun: config.json and the side files rewritten if missing
 * or different; *restored counts them. */
int sp_output_restore(job *j, int *restored);
/* 1 if name is one slicepipe's writer makes in an output folder (a shard,
 * the index, or one of them + ".tmp"): the only files --restart removes. */
int sp_output_is_ours(const char *name);
const char *sp_path_shown(const char *path, char buf[4096]); /* canonical when it exists */

/* resume.c */
char *sp_job_join(const char *a, const char *b); /* "a/b", malloc'd, or NULL */
int sp_resume_fingerprint(const sp_model *m, char hex[33]);
void sp_resume_manifest_identity(const job *j, char hex[33]);
int sp_resume_open(job *j, int *complete); /* lock, journal, replay, verification */
int sp_resume_done(job *j);                /* DONE appended */
void sp_resume_clean(job *j);              /* the finished job's scratch removed */

/* Forks the three stages, watches them (pidfd), prints progress, stops the
 * others when one fails. Returns 0 or the failing stage's status. */
int sp_stages_run(job *j);

#endif
