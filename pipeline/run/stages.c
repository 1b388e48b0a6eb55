/* pipeline/run/stages.c — the reader and writer stages, and the supervisor that
 * forks the three stages and watches them.
 *
 * Process model (docs/pipeline.md §1):
 *
 *   supervisor ── fork ──► reader   (io_uring or pread → weights ring)
 *              ── fork ──► compute  (weights ring → math → output ring)
 *              ── fork ──► writer   (output ring → safetensors shards)
 *
 * - The rings and a stats page are MAP_SHARED mappings made before fork.
 * - Each stage sets PR_SET_PDEATHSIG(SIGKILL), so a killed supervisor takes
 *   its stages with it, and checks its parent is still the supervisor after
 *   setting it (the parent may have died before).
 * - The supervisor holds a pidfd per stage and polls them. A stage that exits
 *   non-zero or dies by a signal: the supervisor aborts both rings (peers'
 *   waits return at once), SIGKILLs the remaining stages, reaps them, and
 *   returns the failing stage's status and message (from the stats page).
 * - Stages report through the stats page only; they never print errors
 *   themselves, so the user sees exactly one message.
 *
 * The journal (io/base/journal.h) is appended to by the writer stage only, at each
 * layer boundary (compute.c), in the order docs/resume.md §4 states: the
 * tensors' bytes were written to their shard, the shard is fsynced (finished
 * shards were already renamed and their folder fsynced), then one TENSOR
 * record per tensor finished since the last boundary, then the LAYER record;
 * each append is fsynced. A crash anywhere leaves a journal that claims only
 * durable bytes. Commit points for fault injection (io/base/faults.h): reader after
 * each layer's tensors are sent, compute after each boundary is sent, writer
 * after each boundary is journaled.
 *
 * Input identity: the reader hashes every input tensor as it reads it (a
 * resume first re-reads and re-hashes what the journaled layers were computed
 * from) into a shared table, before the tensor's last chunk is sent, and
 * refuses one whose hash differs from the journaled one; the writer journals
 * the hashes of the tensors a boundary consumed (SP_REC_INPUT) before its
 * TENSOR and LAYER records.
 *
 * SIGINT/SIGTERM: stages ignore both; the supervisor's handler records the
 * signal, the watch loop stops the stages as for a failed one and returns 75.
 */
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>
#include <xxhash.h>

#include "error.h"
#include "faults.h"
#include "job.h"
#include "journal.h"
#include "uring_reader.h"

const char *const sp_stage_names[SP_STAGE_COUNT] = {"reader", "compute", "writer"};

static int64_t now_ns(void) { return (int64_t)(sp_now() * 1e9); }

volatile sig_atomic_t sp_stages_stop_signal, sp_stages_in_progress;

/* Compares the reader's hash of plan item i with the first run's. */
static int check_input(const job *j, int i, const unsigned char h[16]) {
    if (i >= j->resume.in_checked || memcmp(h, j->resume.in_expect[i], 16) == 0) return 0;
    const sp_read_item *it = &j->reads[i];
    char got[33], want[33];
    for (int k = 0; k < 16; k++) snprintf(got + 2 * k, 3, "%02x", h[k]), snprintf(want + 2 * k, 3, "%02x", j->resume.in_expect[i][k]);
    return sp_fail(SP_EX_DATAERR,
                   "%s: tensor '%s' changed since this job's first run (XXH3-128 %s, the journal has %s); resuming "
                   "would mix two versions of the checkpoint; run `slicepipe run %s --restart` to start again",
                   sp_st_path(it->file), it->name, got, want, j->mf->path);
}

int sp_stage_reader(job *j) {
    sp_stage_stat *st = &j->sh->st[SP_STAGE_READER];
    sp_ring_attach(j->wring, SP_RING_ROLE_PRODUCER);
    const char *io = getenv("SLICEPIPE_IO");
    int mode = j->o->io_pread || (io && !strcmp(io, "pread")) ? SP_RD_PREAD : SP_RD_AUTO;
    sp_rd *rd = NULL;
    unsigned char *buf = NULL;
    XXH3_state_t *xs = XXH3_createState();
    int rc = xs ? sp_rd_init(&rd, mode, 0, 0) : sp_fail(SP_EX_SOFTWARE, "out of memory");
    if (!rc) rc = sp_alloc((void **)&buf, j->stage_bytes, 1, "reader staging buffer");
    /* A resume first re-reads what the journaled layers were computed from:
     * the input must be the one the first run read (SP_REC_INPUT). Items
     * from read_start on are hashed as they stream. */
    for (int i = 0; i < j->n_reads && !rc; i++) {
        const sp_read_item *it = &j->reads[i];
        const int send = i >= j->resume.read_start;
        struct stat st0;
        if (fstat(sp_st_fd(it->file), &st0) != 0) {
            rc = sp_fail_errno(SP_EX_IOERR, "%s: fstat", sp_st_path(it->file));
            break;
        }
        XXH3_128bits_reset(xs);
        for (int64_t off = 0; off < it->t->nbytes && !rc; off += j->stage_bytes) {
            int64_t len = it->t->nbytes - off < j->stage_bytes ? it->t->nbytes - off : j->stage_bytes;
            sp_rd_req req = {.fd = sp_st_fd(it->file), .offset = it->t->file_offset + off, .len = len, .dst = buf,
                             .path = sp_st_path(it->file)};
            rc = sp_rd_read_batch(rd, &req, 1);
            if (rc) break;
            atomic_fetch_add(&st->bytes_read, len);
            XXH3_128bits_update(xs, buf, (size_t)len);
            if (off + len == it->t->nbytes) { /* before the last chunk is sent: compute, then the writer, see it */
                XXH128_canonical_t c;
                XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
                memcpy(j->in_hash[i], c.digest, 16);
                rc = check_input(j, i, c.digest);
                if (rc) break;
            }
            if (!send) continue;
            sp_ring_msg msg = {.type = SP_MSG_TENSOR, .id = (uint64_t)i, .total_bytes = len};
            int64_t t0 = now_ns();
            rc = sp_ring_push(j->wring, &msg, buf, len, 0);
            atomic_fetch_add(&st->wait_ns, now_ns() - t0);
        }
        if (!rc && it->t->nbytes == 0) {
            XXH128_canonical_t c;
            XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
            memcpy(j->in_hash[i], c.digest, 16);
        }
        /* A checkpoint that changes under us is refused, never mixed. */
        struct stat st1;
        if (!rc && (fstat(sp_st_fd(it->file), &st1) != 0 || st1.st_size != st0.st_size ||
                    st1.st_size != sp_st_file_size(it->file) || st1.st_mtim.tv_sec != st0.st_mtim.tv_sec ||
                    st1.st_mtim.tv_nsec != st0.st_mtim.tv_nsec || st1.st_ctim.tv_sec != st0.st_ctim.tv_sec ||
                    st1.st_ctim.tv_nsec != st0.st_ctim.tv_nsec))
            rc = sp_fail(SP_EX_DATAERR, "%s: the checkpoint file changed while it was being read (size, mtime or "
                                        "ctime); the run stops rather than mix versions", sp_st_path(it->file));
        if (!rc && send && it->commit) sp_fault_commit_point("reader");
    }
    if (!rc) sp_ring_close_write(j->wring);
    free(buf);
    sp_rd_free(rd);
    XXH3_freeState(xs);
    return rc;
}

/* Journals a boundary (see the top): the shard in progress fsynced, then the
 * TENSOR records, then the LAYER record with the eigenvalues. */
static int journal_boundary(job *j, unsigned char *msg, int64_t len) {
    sp_rec_layer rec;
    if (len < (int64_t)sizeof rec) return sp_fail(SP_EX_SOFTWARE, "output ring: short boundary message");
    memcpy(&rec, msg, sizeof rec);
    SP_TRY(sp_stw_sync(j->w));
    /* The input this boundary was computed from (the reader hashed it). */
    int upto = sp_plan_reads_after(j, rec.layer, rec.survey);
    if (upto > j->inputs_journaled) {
        sp_rec_input in = {.first = j->inputs_journaled, .count = upto - j->inputs_journaled};
        int64_t ilen = (int64_t)sizeof in + in.count * 16;
        unsigned char *ib;
        SP_TRY(sp_alloc((void **)&ib, ilen, 1, "input hash record"));
        memcpy(ib, &in, sizeof in);
        memcpy(ib + sizeof in, j->in_hash[in.first], (size_t)in.count * 16);
        int rc = sp_journal_append(j->jr, SP_REC_INPUT, ib, (uint32_t)ilen);
        free(ib);
        SP_TRY(rc);
        j->inputs_journaled = upto;
    }
    int n = j->tensors_journaled;
    while (n < sp_stw_tensor_count(j->w) && sp_stw_tensor_hash(j->w, n)) {
        sp_rec_tensor t = {.index = n,
                           .shard = sp_stw_tensor_shard(j->w, n),
                           .offset = sp_stw_tensor_file_offset(j->w, n),
                           .length = sp_stw_tensor_bytes(j->w, n)};
        memcpy(t.hash, sp_stw_tensor_hash(j->w, n), 33);
        SP_TRY(sp_journal_append(j->jr, SP_REC_TENSOR, &t, sizeof t));
        n++;
    }
    j->tensors_journaled = n;
    rec.n_tensors_done = n;
    memcpy(msg, &rec, sizeof rec);
    SP_TRY(sp_journal_append(j->jr, SP_REC_LAYER, msg, (uint32_t)len));
    atomic_store(rec.survey ? &j->sh->journaled_survey : &j->sh->journaled_layer, rec.layer);
    sp_fault_commit_point("writer");
    return 0;
}

int sp_stage_writer(job *j) {
    sp_stage_stat *st = &j->sh->st[SP_STAGE_WRITER];
    sp_ring_attach(j->oring, SP_RING_ROLE_CONSUMER);
    int64_t bcap = (int64_t)sizeof(sp_rec_layer) + 2 * j->shape.hidden * 8;
    unsigned char *bmsg;
    int rc = sp_alloc((void **)&bmsg, bcap, 1, "boundary message");
    while (!rc) {
        sp_ring_chunk ch;
        int64_t t0 = now_ns();
        rc = sp_ring_acquire_read(j->oring, &ch, 0);
        atomic_fetch_add(&st->wait_ns, now_ns() - t0);
        if (rc == SP_RING_EOF) {
            rc = sp_stw_finish(j->w);
            break;
        }
        if (rc) break;
        if (ch.msg.type == SP_MSG_BOUNDARY) {
            if (ch.msg.total_bytes > bcap || ch.chunk_off + ch.len > ch.msg.total_bytes) {
                rc = sp_fail(SP_EX_SOFTWARE, "output ring: protocol error (boundary of %lld bytes)", (long long)ch.msg.total_bytes);
                break;
            }
            memcpy(bmsg + ch.chunk_off, ch.data, (size_t)ch.len);
            int last = ch.chunk_off + ch.len == ch.msg.total_bytes;
            int64_t total = ch.msg.total_bytes;
            sp_ring_release_read(j->oring);
            if (last) rc = journal_boundary(j, bmsg, total);
            continue;
        }
        if (ch.msg.id >= (uint64_t)sp_stw_tensor_count(j->w)) {
            rc = sp_fail(SP_EX_SOFTWARE, "output ring: protocol error (tensor %llu)", (unsigned long long)ch.msg.id);
            break;
        }
        rc = sp_stw_write(j->w, sp_stw_tensor_name(j->w, (int)ch.msg.id), ch.data, ch.len);
        atomic_fetch_add(&st->bytes_written, ch.len);
        sp_ring_release_read(j->oring);
        if (rc) break;
    }
    if (rc) sp_ring_close_read(j->oring);
    free(bmsg);
    return rc;
}

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

static const char *phase_name(int p) {
    static const char *n[] = {"start", "embed", "read", "attention", "PCA", "MLP", "write", "head", "done", "survey"};
    return p >= 0 && p <= SP_PHASE_SURVEY ? n[p] : "?";
}

static void progress(job *j, int force) {
    if (j->o->quiet) return;
    static int last_layer = -1, last_phase = -1;
    sp_stage_stat *c = &j->sh->st[SP_STAGE_COMPUTE];
    int layer = (int)atomic_load(&c->layer), ph = atomic_load(&c->phase);
    int tty = isatty(2);
    if (!force && layer == last_layer && ph == last_phase && !tty) return;
    if (!tty && !force && layer == last_layer) return; /* logs: one line per layer */
    last_layer = layer, last_phase = ph;
    double el = sp_now() - j->t_start;
    double frac = ((double)layer + (ph == SP_PHASE_HEAD || ph == SP_PHASE_DONE ? 1.0 : 0.0)) / (double)j->shape.layers;
    if (j->plan.survey) { /* the survey's forward passes are most of the work: call it 80% */
        static int surveyed;
        surveyed |= ph == SP_PHASE_WRITE || ph == SP_PHASE_HEAD || ph == SP_PHASE_DONE; /* the rotation pass */
        frac = ph == SP_PHASE_SURVEY || !surveyed ? 0.8 * frac : 0.8 + 0.2 * frac;
    }
    double eta = frac > 0 ? el * (1 - frac) / frac : 0;
    double tps = el > 0 ? (double)j->shape.tokens * 2.0 * (double)layer / el : 0; /* two passes per layer */
    fprintf(stderr, "%sslicepipe: layer %d/%lld %-9s | %.0f calib tok/s | read %.0f MB | elapsed %.1fs | ETA %.0fs   %s",
            tty ? "\r" : "", layer + 1, (long long)j->shape.layers, phase_name(ph), tps,
            (double)atomic_load(&j->sh->st[SP_STAGE_READER].bytes_read) / 1e6, el, eta, tty ? "" : "\n");
}

static void child_main(job *j, int stage, pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(SP_EX_SOFTWARE);
    signal(SIGINT, SIG_IGN); /* the supervisor decides (a terminal's ^C reaches the whole group) */
    signal(SIGTERM, SIG_IGN);
    sp_stage_stat *st = &j->sh->st[stage];
    int64_t t0 = now_ns();
    int rc = stage == SP_STAGE_READER ? sp_stage_reader(j) : stage == SP_STAGE_COMPUTE ? sp_stage_compute(j)
                                                                                       : sp_stage_writer(j);
    atomic_store(&st->busy_ns, now_ns() - t0 - atomic_load(&st->wait_ns));
    atomic_store(&st->peak_rss, sp_peak_rss_bytes());
    st->rc = rc;
    if (rc) snprintf(st->err, sizeof st->err, "%s", sp_errmsg());
    atomic_store(&st->done, 1);
    fflush(NULL);
    _exit(rc == 0 ? 0 : rc > 0 && rc < 256 ? rc : SP_EX_SOFTWARE);
}

/* How much a stage's end says about what went wrong, for naming the root
 * cause: 3 it failed on its own, 2 it was killed, 1 it only saw a peer die
 * (SP_EX_SOFTWARE), 0 it ended well or was not collected. */
static int stage_blame(int reaped, int status) {
    if (!reaped) return 0;
    if (WIFSIGNALED(status)) return 2;
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 0) return 0;
    return WEXITSTATUS(status) == SP_EX_SOFTWARE ? 1 : 3;
}

int sp_stages_run(job *j) {
    pid_t parent = getpid(), pid[SP_STAGE_COUNT] = {0};
    int pfd[SP_STAGE_COUNT], alive = 0, rc = 0, failed = -1;
    for (int s = 0; s < SP_STAGE_COUNT; s++) pfd[s] = -1;
    fflush(NULL);
    /* A stage starts with every page the supervisor's heap holds at the
     * fork in its RSS, freed blocks that malloc keeps included: a resume's
     * hashing buffers (resume.c) land on the heap once glibc's dynamic mmap
     * threshold has grown past their size, and free keeps them, so each
     * stage counted them again, beyond the plan (docs/pipeline.md §6). Freed
     * heap pages go back to the kernel first; the stages then inherit only
     * what the supervisor still uses. */
    malloc_trim(0);
    for (int s = 0; s < SP_STAGE_COUNT; s++) {
        pid[s] = fork();
        if (pid[s] < 0) {
            rc = sp_fail_errno(SP_EX_SOFTWARE, "fork of the %s stage", sp_stage_names[s]);
            break;
        }
        if (pid[s] == 0) child_main(j, s, parent);
        pfd[s] = pidfd_open_(pid[s]);
        if (pfd[s] < 0) {
            rc = sp_fail_errno(SP_EX_SOFTWARE, "pidfd_open of the %s stage", sp_stage_names[s]);
            break;
        }
        alive++;
    }
    sp_ring_set_pid(j->wring, SP_RING_ROLE_PRODUCER, pid[SP_STAGE_READER]);
    sp_ring_set_pid(j->wring, SP_RING_ROLE_CONSUMER, pid[SP_STAGE_COMPUTE]);
    sp_ring_set_pid(j->oring, SP_RING_ROLE_PRODUCER, pid[SP_STAGE_COMPUTE]);
    sp_ring_set_pid(j->oring, SP_RING_ROLE_CONSUMER, pid[SP_STAGE_WRITER]);

    int status[SP_STAGE_COUNT] = {0}, reaped[SP_STAGE_COUNT] = {0};
    while (alive > 0 && !rc) {
        struct pollfd p[SP_STAGE_COUNT];
        int np = 0, map[SP_STAGE_COUNT];
        for (int s = 0; s < SP_STAGE_COUNT; s++)
            if (pfd[s] >= 0) p[np] = (struct pollfd){.fd = pfd[s], .events = POLLIN}, map[np++] = s;
        int n = poll(p, (nfds_t)np, 250);
        if (sp_stages_stop_signal) {
            int sig = sp_stages_stop_signal;
            rc = sp_fail(SP_EX_TEMPFAIL,
                         "stopped by %s; the stages were stopped and every journaled layer is durable: rerun "
                         "`slicepipe run %s` to resume",
                         sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal", j->mf->path);
            break;
        }
        progress(j, 0);
        if (n < 0 && errno != EINTR) {
            rc = sp_fail_errno(SP_EX_SOFTWARE, "poll on stage pidfds");
            break;
        }
        for (int i = 0; i < np && n > 0; i++) {
            if (!(p[i].revents & POLLIN)) continue;
            int s = map[i];
            if (waitpid(pid[s], &status[s], 0) < 0) continue;
            reaped[s] = 1;
            close(pfd[s]);
            pfd[s] = -1;
            pid[s] = 0;
            alive--;
            if (!(WIFEXITED(status[s]) && WEXITSTATUS(status[s]) == 0)) failed = s;
        }
        if (failed >= 0) rc = SP_EX_SOFTWARE;
    }
    if (rc) {
        /* Stop the others: abort the rings so blocked peers return, and give
         * them a moment to exit on their own, so the root cause's status is
         * collected (a stage's pidfd becomes readable only once its whole
         * thread group is gone, a little after its peers may see it dead);
         * then kill what is left. */
        sp_ring_abort(j->wring, SP_RING_ROLE_PRODUCER);
        sp_ring_abort(j->wring, SP_RING_ROLE_CONSUMER);
        sp_ring_abort(j->oring, SP_RING_ROLE_PRODUCER);
        sp_ring_abort(j->oring, SP_RING_ROLE_CONSUMER);
        double t_end = sp_now() + 2.0;
        while (alive > 0 && sp_now() < t_end) {
            struct pollfd p[SP_STAGE_COUNT];
            int np = 0, map[SP_STAGE_COUNT];
            for (int s = 0; s < SP_STAGE_COUNT; s++)
                if (pfd[s] >= 0) p[np] = (struct pollfd){.fd = pfd[s], .events = POLLIN}, map[np++] = s;
            if (poll(p, (nfds_t)np, 100) <= 0) continue;
            for (int i = 0; i < np; i++) {
                int s = map[i];
                if (!(p[i].revents & POLLIN) || waitpid(pid[s], &status[s], 0) < 0) continue;
                reaped[s] = 1;
                close(pfd[s]);
                pfd[s] = -1;
                pid[s] = 0;
                alive--;
            }
        }
        for (int s = 0; s < SP_STAGE_COUNT; s++)
            if (pid[s] > 0) kill(pid[s], SIGKILL);
    }
    for (int s = 0; s < SP_STAGE_COUNT; s++) {
        if (pid[s] > 0) waitpid(pid[s], NULL, 0);
        if (pfd[s] >= 0) close(pfd[s]);
    }
    if (rc && failed >= 0) {
        /* The root cause: a stage that failed on its own (bad data, I/O) wins
         * over one that was killed, which wins over one that only saw its
         * peer die (70). The order the pidfds became readable in says
         * nothing: a peer can see a killed stage dead, and exit, before the
         * killed stage's own pidfd is ready. */
        for (int s = 0; s < SP_STAGE_COUNT; s++)
            if (stage_blame(reaped[s], status[s]) > stage_blame(reaped[failed], status[failed])) failed = s;
        sp_stage_stat *st = &j->sh->st[failed];
        if (WIFEXITED(status[failed]))
            rc = st->err[0] ? sp_fail(WEXITSTATUS(status[failed]), "%s", st->err)
                            : sp_fail(WEXITSTATUS(status[failed]), "the %s stage failed (exit %d) without a message",
                                      sp_stage_names[failed], WEXITSTATUS(status[failed]));
        else
            rc = sp_fail(SP_EX_SOFTWARE, "the %s stage was killed by signal %d (%s)", sp_stage_names[failed],
                         WTERMSIG(status[failed]), strsignal(WTERMSIG(status[failed])));
    }
    if (!rc) progress(j, 1);
    if (!j->o->quiet && isatty(2)) fputc('\n', stderr);
    return rc;
}
