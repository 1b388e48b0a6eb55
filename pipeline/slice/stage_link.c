/* pipeline/slice/stage_link.c — the compute stage's link: the weights ring in, the
 * output ring out, and each boundary's durability (contract: stage_link.h). */
#include "stage_link.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "faults.h"
#include "fileio.h"

static int64_t boundary_bytes(const job *j) { return (int64_t)sizeof(sp_rec_layer) + j->n_pca * j->shape.hidden * 8; }

int64_t sp_link_bytes(const job *j) { return boundary_bytes(j) + j->ob_elems * 4; }

int sp_link_init(sp_link *k, job *j) {
    memset(k, 0, sizeof *k);
    k->j = j;
    k->st = &j->sh->st[SP_STAGE_COMPUTE];
    k->next_read = j->resume.read_start;
    k->out_idx = j->resume.out_start;
    sp_ring_attach(j->wring, SP_RING_ROLE_CONSUMER);
    sp_ring_attach(j->oring, SP_RING_ROLE_PRODUCER);
    SP_TRY(sp_alloc((void **)&k->msg, boundary_bytes(j), 1, "boundary message"));
    return sp_alloc(&k->obuf, j->ob_elems, 4, "output conversion");
}

int sp_link_finish(sp_link *k) {
    SP_TRY(sp_link_settle(k));
    sp_ring_close_write(k->j->oring);
    sp_ring_close_read(k->j->wring);
    return 0;
}

void sp_link_free(sp_link *k) {
    if (k->bg.on) pthread_join(k->bg.th, NULL); /* an error stopped the math: its status no longer matters */
    k->bg.on = 0;
    free(k->msg);
    free(k->obuf);
    k->msg = NULL;
    k->obuf = NULL;
}

/* Consumes the next n elements of plan item idx into dst (float32). */
int sp_link_pull(sp_link *k, int idx, float *dst, int64_t n) {
    job *j = k->j;
    SP_ASSERT(idx == k->next_read && idx < j->n_reads);
    const sp_read_item *it = &j->reads[idx];
    const int es = sp_dtype_size(it->t->dtype);
    while (n > 0) {
        if (!k->have) {
            int64_t t0 = sp_now_ns();
            int rc = sp_ring_acquire_read(j->wring, &k->ch, 0);
            sp_prof_add(k->st, SP_PROF_WAIT, &t0);
            if (rc == SP_RING_EOF) return sp_fail(SP_EX_SOFTWARE, "weights ring: the reader ended before '%s'", it->name);
            if (rc) return rc;
            if (k->ch.msg.id != (uint64_t)idx || k->ch.len % es != 0)
                return sp_fail(SP_EX_SOFTWARE, "weights ring: protocol error (message %llu of %lld bytes, expected '%s')",
                               (unsigned long long)k->ch.msg.id, (long long)k->ch.len, it->name);
            k->have = 1;
            k->ch_pos = 0;
        }
        int64_t take = (k->ch.len - k->ch_pos) / es;
        if (take > n) take = n;
        int64_t bad = sp_convert_to_f32(it->t->dtype, (const unsigned char *)k->ch.data + k->ch_pos, take, dst);
        if (bad >= 0)
            return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': non-finite value (NaN or Inf) at element %lld",
                           sp_st_path(it->file), it->name, (long long)(k->cur_done / es + bad));
        dst += take;
        n -= take;
        k->ch_pos += take * es;
        k->cur_done += take * es;
        if (k->ch_pos == k->ch.len) {
            sp_ring_release_read(j->wring);
            k->have = 0;
        }
    }
    if (k->cur_done == it->t->nbytes) {
        k->next_read++;
        k->cur_done = 0;
    }
    return 0;
}

int sp_link_pull_whole(sp_link *k, int idx, float *dst) { return sp_link_pull(k, idx, dst, k->j->reads[idx].t->numel); }

/* Sends n float32 of the current output tensor, converted to the output
 * dtype. Every converted chunk is checked: a value that is not finite in the
 * output dtype (F16 overflows past 65504; NaN/Inf from the math) is refused
 * (65) naming the tensor, never written. */
int sp_link_emit(sp_link *k, const float *src, int64_t n) {
    SP_TRY(sp_link_settle(k)); /* a boundary in flight goes out before the tensors after it */
    job *j = k->j;
    const int es = sp_dtype_size(j->out_dtype);
    for (int64_t done = 0; n > 0;) {
        int64_t m = n < j->ob_elems ? n : j->ob_elems;
        sp_convert_from_f32(j->out_dtype, src, m, k->obuf);
        int64_t i = sp_dtype_first_nonfinite(j->out_dtype, k->obuf, m);
        if (i >= 0) {
            const char *nm = sp_stw_tensor_name(j->w, k->out_idx);
            if (__builtin_isfinite(src[i]))
                return sp_fail(SP_EX_DATAERR,
                               "output tensor '%s': element %lld is %g, which %s cannot hold (it becomes Inf); choose "
                               "[output] dtype = \"%s\" in %s",
                               nm, (long long)(done + i), (double)src[i], sp_dtype_st_name(j->out_dtype),
                               j->out_dtype == SP_DTYPE_F16 ? "bf16\" (same range as f32) or \"f32" : "f32", j->mf->path);
            return sp_fail(SP_EX_DATAERR,
                           "output tensor '%s': element %lld is not finite (%g) before conversion to %s; the input or "
                           "its calibration activations overflow float32: no output dtype can hold it",
                           nm, (long long)(done + i), (double)src[i], sp_dtype_st_name(j->out_dtype));
        }
        sp_ring_msg msg = {.type = SP_MSG_TENSOR, .id = (uint64_t)k->out_idx, .total_bytes = m * es};
        int64_t t0 = sp_now_ns();
        int rc = sp_ring_push(j->oring, &msg, k->obuf, m * es, 0);
        sp_prof_add(k->st, SP_PROF_WAIT, &t0);
        if (rc) return rc;
        src += m;
        n -= m;
        done += m;
    }
    return 0;
}

void sp_link_emit_end(sp_link *k) { k->out_idx++; }

int sp_link_emit_all(sp_link *k, const float *src, int64_t n) {
    SP_TRY(sp_link_emit(k, src, n));
    sp_link_emit_end(k);
    return 0;
}

static int wait_journaled(sp_link *k, int64_t layer, int survey) {
    _Atomic int64_t *at = survey ? &k->j->sh->journaled_survey : &k->j->sh->journaled_layer;
    while (atomic_load(at) < layer) {
        if (getppid() == 1) return sp_fail(SP_EX_SOFTWARE, "the supervisor is gone");
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Waits until the writer has journaled boundary `layer`. Compute calls it
 * before it overwrites a spill or basis file that the boundary before that
 * one names: from then on the journal no longer points at it. (The files
 * alternate, so without this wait a writer two boundaries behind would leave
 * the last journaled boundary naming a file compute is rewriting.) */
int sp_link_wait_journaled(sp_link *k, int64_t layer, int survey) {
    SP_TRY(sp_link_settle(k)); /* a boundary in flight is sent before it can be journaled */
    int64_t t0 = sp_now_ns();
    SP_TRY(wait_journaled(k, layer, survey));
    sp_prof_add(k->st, SP_PROF_WAIT, &t0);
    return 0;
}

/* Before a layer boundary writes its files: the boundary before it
 * journaled, so that no journaled boundary names them any more. The caller
 * of a boundary sent in place has waited already (it wrote B's file in its
 * pass), so there this returns at once; a survey boundary's caller waits on
 * the survey's own count. */
static int wait_previous(sp_link *k, int64_t layer, int survey) { return survey ? 0 : wait_journaled(k, layer - 1, 0); }

/* The boundary's durability: the basis into basis file bi, fsynced, then
 * the spill's sync. */
static int boundary_files(sp_link *k, int bi, const double *basis, sp_spill *spill) {
    const job *j = k->j;
    const int64_t D = j->shape.hidden;
    const char *bp = j->basis_path[bi];
    int fd;
    SP_TRY(sp_io_create(bp, 0600, &fd)); /* never through a planted link */
    int rc = sp_io_write_full(fd, basis, D * D * 8, bp);
    if (!rc) rc = sp_io_fsync(fd, bp);
    close(fd);
    SP_TRY(rc);
    return sp_spill_sync(spill);
}

static int boundary_send(sp_link *k, int64_t layer, int64_t len) {
    sp_ring_msg msg = {.type = SP_MSG_BOUNDARY, .id = (uint64_t)(layer + 1), .total_bytes = len};
    SP_TRY(sp_ring_push(k->j->oring, &msg, k->msg, len, 0));
    sp_fault_commit_point("compute");
    return 0;
}

/* A boundary sent from behind: the wait for the boundary before it, the
 * files, the message. Its time is behind_ns, not a phase: the math runs
 * meanwhile; what the caller waits for it is spill_io (sp_link_settle). */
static void *behind_main(void *arg) {
    sp_link *k = arg;
    sp_link_behind *b = &k->bg;
    int64_t t0 = sp_now_ns();
    int rc = wait_previous(k, b->layer, 0);
    if (!rc) rc = boundary_files(k, b->bi, b->basis, b->spill);
    if (!rc) rc = boundary_send(k, b->layer, b->len);
    if (rc) snprintf(b->err, sizeof b->err, "%s", sp_errmsg());
    b->rc = rc;
    atomic_fetch_add(&k->st->behind_ns, sp_now_ns() - t0);
    return NULL;
}

int sp_link_settle(sp_link *k) {
    sp_link_behind *b = &k->bg;
    if (!b->on) return 0;
    int64_t t0 = sp_now_ns();
    pthread_join(b->th, NULL);
    b->on = 0;
    sp_prof_add(k->st, SP_PROF_SPILL, &t0); /* the math waited for the boundary's durability */
    return b->rc ? sp_fail(b->rc, "%s", b->err) : 0;
}

/* Makes the state after `layer` durable and tells the writer (see the top).
 * A survey boundary (basis = "global", after survey layer `layer`) keeps
 * the running sum G where the others keep Q, in the basis file the
 * previous survey boundary did not name; the last survey boundary's (1)
 * is never the embedding boundary's (0). */
int sp_link_boundary(sp_link *k, int64_t layer, int survey, const double *basis, sp_spill *spill,
                     const char spill_hash[33], int behind) {
    SP_TRY(sp_link_settle(k));
    job *j = k->j;
    const int64_t D = j->shape.hidden;
    int bi = survey ? (int)((j->shape.layers - layer) & 1) : (int)((layer + 1) & 1);
    /* -1: the embedding (one PCA); 0..L-1: a layer (two); L: the head (none). */
    int64_t rows = survey ? 0 : layer < 0 ? 1 : layer < j->shape.layers ? j->plan.layer_pcas : 0,
            first = layer < 0 ? 0 : 1 + j->n_pca * layer;
    sp_rec_layer rec = {.layer = layer, .basis_idx = bi, .n_eval_rows = rows, .survey = (char)survey};
    const char *sp = strrchr(sp_spill_path(spill), '/');
    snprintf(rec.spill, sizeof rec.spill, "%s", sp ? sp + 1 : sp_spill_path(spill));
    memcpy(rec.spill_hash, spill_hash, 33);
    XXH128_hash_t bh = XXH3_128bits(basis, (size_t)(D * D * 8));
    sp_hex128(bh.high64, bh.low64, rec.basis_hash);
    /* The message: the record, then the eigenvalues. */
    int64_t len = (int64_t)sizeof rec + rows * D * 8;
    SP_ASSERT(len <= boundary_bytes(j));
    memcpy(k->msg, &rec, sizeof rec);
    if (rows) memcpy(k->msg + sizeof rec, j->evals + first * D, (size_t)(rows * D * 8));
    SP_ASSERT(!behind || (!survey && layer < j->shape.layers)); /* a layer's or the embedding's */
    if (behind) {
        k->bg = (sp_link_behind){.layer = layer, .bi = bi, .basis = basis, .spill = spill, .len = len};
        if (pthread_create(&k->bg.th, NULL, behind_main, k) == 0) {
            k->bg.on = 1;
            return 0;
        } /* no thread: the boundary is sent here, its wait included */
    }
    int64_t t0 = sp_now_ns();
    SP_TRY(wait_previous(k, layer, survey));
    sp_prof_add(k->st, SP_PROF_WAIT, &t0);
    SP_TRY(boundary_files(k, bi, basis, spill));
    sp_prof_add(k->st, SP_PROF_SPILL, &t0); /* the boundary's durability: basis and spill fsynced */
    int rc = boundary_send(k, layer, len);
    sp_prof_add(k->st, SP_PROF_WAIT, &t0);
    return rc;
}

int sp_link_resume_basis(sp_link *k, double *basis) {
    const job *j = k->j;
    const int64_t D = j->shape.hidden;
    const char *bp = j->basis_path[j->resume.basis];
    int fd;
    int64_t size;
    SP_TRY(sp_io_open_read(bp, &fd, &size));
    int rc = size == D * D * 8 ? sp_io_pread_full(fd, basis, D * D * 8, 0, bp)
                               : sp_fail(SP_EX_DATAERR, "%s: wrong size for a basis file", bp);
    close(fd);
    return rc;
}
