/* pipeline/slice/stage_link.h — the compute stage's link to the rest of the run:
 * weights in from the reader, output tensors and layer boundaries out to the
 * writer, and the durability each boundary needs (docs/pipeline.md §1,
 * docs/resume.md §4–§5). The SliceGPT math (compute.c) calls only these; it
 * makes no ring, journal or file call of its own.
 *
 *   pull      the next elements of a read-plan item, converted to float32
 *             (NaN/Inf refused, naming the tensor)
 *   emit      elements of the current output tensor, converted to the output
 *             dtype (a value it cannot hold refused, naming the tensor)
 *   boundary  the basis (or the survey's running sum) into its alternating
 *             basis file, fsynced; the next input spill fsynced; a BOUNDARY
 *             message (the record, then the boundary's eigenvalues) behind the
 *             layer's tensors; a commit point
 *   wait      until the writer has journaled a boundary
 */
#ifndef SP_STAGE_LINK_H
#define SP_STAGE_LINK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "error.h"
#include "job.h"

/* Adds the time since *t0 to phase p of st (waits also to its wait time) and
 * restarts the clock. */
static inline int64_t sp_now_ns(void) { return (int64_t)(sp_now() * 1e9); }
static inline void sp_prof_add(sp_stage_stat *st, enum sp_prof p, int64_t *t0) {
    int64_t t = sp_now_ns();
    atomic_fetch_add(&st->prof_ns[p], t - *t0);
    if (p == SP_PROF_WAIT) atomic_fetch_add(&st->wait_ns, t - *t0);
    *t0 = t;
}

/* A boundary sent from behind (sp_link_boundary with behind != 0): its files
 * and its message go out on a thread of their own while the math goes on. */
typedef struct sp_link_behind {
    pthread_t th;
    int on;              /* a thread runs it, not yet joined */
    int rc;              /* its status, once joined */
    int64_t layer;
    int bi;              /* the basis file it writes */
    const double *basis; /* (D, D), untouched until it settles */
    sp_spill *spill;
    int64_t len;         /* its message's bytes, in sp_link.msg */
    char err[1024];      /* its message when rc != 0 (sp_fail's is per thread) */
} sp_link_behind;

typedef struct sp_link {
    job *j;
    sp_stage_stat *st;
    /* the weights ring's cursor */
    int have;
    sp_ring_chunk ch;
    int64_t ch_pos;   /* bytes of the current chunk consumed */
    int next_read;    /* plan index expected next */
    int64_t cur_done; /* bytes of that plan item consumed */
    int out_idx;      /* output tensor being emitted (declaration order) */
    void *obuf;       /* (ob_elems) the output dtype */
    unsigned char *msg; /* (sp_link_boundary_bytes) a BOUNDARY message */
    sp_link_behind bg;  /* the boundary in flight, if any */
} sp_link;

/* Bytes sp_link_init allocates (the memory plan counts them). */
int64_t sp_link_bytes(const job *j);
/* Attaches to the rings, at the run's (or the resume's) read and output positions. */
int sp_link_init(sp_link *k, job *j);
/* The stage's end: the boundary in flight settled, the output ring closed
 * for writing, the weights ring for reading. */
int sp_link_finish(sp_link *k);
/* Joins a boundary still in flight (an error path), then frees. */
void sp_link_free(sp_link *k);

int sp_link_pull(sp_link *k, int idx, float *dst, int64_t n);
int sp_link_pull_whole(sp_link *k, int idx, float *dst);
int sp_link_emit(sp_link *k, const float *src, int64_t n);
void sp_link_emit_end(sp_link *k);
int sp_link_emit_all(sp_link *k, const float *src, int64_t n);

/* Boundary `layer` (−1: the embedding; L: the head; survey: a survey
 * boundary after survey layer `layer`): basis (D, D) float64 in host memory
 * (Q, or the survey's running sum G) made durable, `spill` (the next input)
 * fsynced, and the record sent with the boundary's eigenvalues.
 *
 * A layer boundary's files are written only once boundary layer − 1 is
 * journaled (at once where the caller waited before its pass).
 *
 * behind != 0 (a layer's or the embedding's boundary, the spills resident,
 * docs/pipeline.md §5): the caller goes on at once; a thread does that wait,
 * then writes the files and sends the message. Until it settles
 * the caller must not change `basis` or write `spill`, and must overwrite no
 * file the boundary before it names (a resident spill's writes stay in
 * memory until its sync, which this thread makes). Every other call of this
 * link settles it first (the message goes out before anything after it), so
 * an error of the thread is reported by the next call. */
int sp_link_boundary(sp_link *k, int64_t layer, int survey, const double *basis, sp_spill *spill,
                     const char spill_hash[33], int behind);
/* Joins the boundary in flight, if any: 0, or its error. */
int sp_link_settle(sp_link *k);
/* Waits until the writer has journaled boundary `layer` (survey: that survey
 * boundary): before the math overwrites a spill or basis file the boundary
 * before it names. */
int sp_link_wait_journaled(sp_link *k, int64_t layer, int survey);
/* A resume: the basis file the last journaled boundary names, into basis
 * (D, D) float64, host memory. */
int sp_link_resume_basis(sp_link *k, double *basis);

#endif
