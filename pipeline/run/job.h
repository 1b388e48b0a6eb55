/* pipeline/run/job.h — internal: the state of one `slicepipe run`, shared by the
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
 * Files: slice.c (the supervisor's run), slice_plan.c and policy_*.c (what
 * is kept: slice_plan.h), plan.c (the read plan and the memory plan),
 * output.c (output folder, declaration, config.json, side files), resume.c
 * (the job folder, identity, journal replay, status; its record formats and
 * state: resume.h), stages.c (reader, writer, watching), stage_link.c (the
 * compute stage's rings and boundaries), compute.c (the SliceGPT math only).
 *
 * A job is the run's sizes (shape), its slice plan, its read and memory plan
 * (fixed before the stages fork), the resume state it starts from, and the
 * run state the stages share (rings, the stats map, the journal, the lock).
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
#include "resume.h"
#include "tokens.h"
#include "backend.h"
#include "arch.h"
#include "slice_plan.h"
#include <stdio.h>

enum { SP_STAGE_READER, SP_STAGE_COMPUTE, SP_STAGE_WRITER, SP_STAGE_COUNT };
extern const char *const sp_stage_names[SP_STAGE_COUNT];

enum { SP_MSG_TENSOR = 1, SP_MSG_BOUNDARY = 2 };

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
    _Atomic int64_t behind_ns;            /* compute: boundaries sent from behind, on their own thread (not in prof_ns) */
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

/* The run's sizes: fixed once the model and the manifest are read. */
typedef struct sp_run_shape {
    int64_t tokens;  /* calibration tokens: windows × seqlen */
    int64_t seqlen;  /* calibration window length */
    int64_t hidden;  /* the dense residual width D */
    int64_t layers;  /* L */
    int64_t vocab;   /* V */
    int64_t ffn;     /* intermediate_size */
    int64_t q_width, kv_width; /* heads × head_dim, kv heads × head_dim */
} sp_run_shape;

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
    sp_run_shape shape;            /* the sizes, named (fixed once the model and manifest are read) */
    sp_slice_plan plan;            /* what is kept, and how (slice_plan.h) */
    int64_t chunk_w;               /* windows per spill chunk: a multiple of group, or all of them */
    int64_t group;                 /* windows per call of a layer pass (sp_plan_memory: sp_layer_group) */
    int64_t rot_block;             /* rows or columns per float64 rotation block (sp_plan_memory) */
    int spill_resident;            /* the two spills held in memory (sp_plan_memory; [resources] activations) */
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
    sp_resume_state resume;        /* where this run starts: the journal's last durable boundary (resume.h) */
    int tensors_journaled;         /* writer: TENSOR records so far */
    /* input identity (see SP_REC_INPUT) */
    unsigned char (*in_hash)[16];  /* (n_reads) shared map: the reader's hash of each item */
    int inputs_journaled;          /* writer: items covered by INPUT records so far */
    int64_t eval_chunk_bytes;      /* [eval]: the activation chunk budget that fits [resources] memory */
} job;

/* Rows of one calibration window in the spill files: seqlen, or with
 * [slicing] refit 2·seqlen, the sliced stream's rows then the dense
 * model's (docs/algorithm.md §14). */
static inline int64_t sp_job_window_rows(const job *j) { return j->plan.refit ? 2 * j->shape.seqlen : j->shape.seqlen; }

/* Rows of each spill file: every calibration window's. */
static inline int64_t sp_job_spill_rows(const job *j) { return j->shape.tokens / j->shape.seqlen * sp_job_window_rows(j); }

/* Bytes of the two spill files, on disk or, resident, in memory. */
static inline int64_t sp_job_spills_bytes(const job *j) {
    return 2 * sp_job_spill_rows(j) * j->shape.hidden * sp_dtype_size(j->mf->spill_dtype);
}

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
int64_t sp_plan_hash_bytes(const job *j); /* the supervisor's hashing buffer, before the fork */
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

/* Forks the three stages, watches them (pidfd), prints progress, stops the
 * others when one fails. Returns 0 or the failing stage's status. */
int sp_stages_run(job *j);

#endif
