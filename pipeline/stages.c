/* pipeline/stages.c — the reader and writer stages, and the supervisor that
 * forks the three stages and watches them.
 *
 * Process model (DESIGN.md §2):
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
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "job.h"
#include "uring_reader.h"

const char *const sp_stage_names[SP_STAGE_COUNT] = {"reader", "compute", "writer"};

static int64_t now_ns(void) { return (int64_t)(sp_now() * 1e9); }

int sp_stage_reader(job *j) {
    sp_stage_stat *st = &j->sh->st[SP_STAGE_READER];
    sp_ring_attach(j->wring, SP_RING_ROLE_PRODUCER);
    const char *io = getenv("SLICEPIPE_IO");
    int mode = j->o->io_pread || (io && !strcmp(io, "pread")) ? SP_RD_PREAD : SP_RD_AUTO;
    sp_rd *rd = NULL;
    unsigned char *buf = NULL;
    int rc = sp_rd_init(&rd, mode, 0, 0);
    if (!rc) rc = sp_alloc((void **)&buf, j->stage_bytes, 1, "reader staging buffer");
    for (int i = 0; i < j->n_reads && !rc; i++) {
        const sp_read_item *it = &j->reads[i];
        for (int64_t off = 0; off < it->t->nbytes && !rc; off += j->stage_bytes) {
            int64_t len = it->t->nbytes - off < j->stage_bytes ? it->t->nbytes - off : j->stage_bytes;
            sp_rd_req req = {.fd = sp_st_fd(it->file), .offset = it->t->file_offset + off, .len = len, .dst = buf,
                             .path = sp_st_path(it->file)};
            rc = sp_rd_read_batch(rd, &req, 1);
            if (rc) break;
            atomic_fetch_add(&st->bytes_read, len);
            sp_ring_msg msg = {.type = SP_MSG_TENSOR, .id = (uint64_t)i, .total_bytes = len};
            int64_t t0 = now_ns();
            rc = sp_ring_push(j->wring, &msg, buf, len, 0);
            atomic_fetch_add(&st->wait_ns, now_ns() - t0);
        }
    }
    if (!rc) sp_ring_close_write(j->wring);
    free(buf);
    sp_rd_free(rd);
    return rc;
}

int sp_stage_writer(job *j) {
    sp_stage_stat *st = &j->sh->st[SP_STAGE_WRITER];
    sp_ring_attach(j->oring, SP_RING_ROLE_CONSUMER);
    int rc = 0;
    for (;;) {
        sp_ring_chunk ch;
        int64_t t0 = now_ns();
        rc = sp_ring_acquire_read(j->oring, &ch, 0);
        atomic_fetch_add(&st->wait_ns, now_ns() - t0);
        if (rc == SP_RING_EOF) {
            rc = sp_stw_finish(j->w);
            break;
        }
        if (rc) break;
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
    return rc;
}

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

static const char *phase_name(int p) {
    static const char *n[] = {"start", "embed", "read", "attention", "PCA", "MLP", "write", "head", "done"};
    return p >= 0 && p <= SP_PHASE_DONE ? n[p] : "?";
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
    double frac = ((double)layer + (ph >= SP_PHASE_HEAD ? 1.0 : 0.0)) / (double)j->L;
    double eta = frac > 0 ? el * (1 - frac) / frac : 0;
    double tps = el > 0 ? (double)j->N * 2.0 * (double)layer / el : 0; /* two passes per layer */
    fprintf(stderr, "%sslicepipe: layer %d/%lld %-9s | %.0f calib tok/s | read %.0f MB | elapsed %.1fs | ETA %.0fs   %s",
            tty ? "\r" : "", layer + 1, (long long)j->L, phase_name(ph), tps,
            (double)atomic_load(&j->sh->st[SP_STAGE_READER].bytes_read) / 1e6, el, eta, tty ? "" : "\n");
}

static void child_main(job *j, int stage, pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(SP_EX_SOFTWARE);
    signal(SIGINT, SIG_IGN); /* the supervisor decides */
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

int sp_stages_run(job *j) {
    pid_t parent = getpid(), pid[SP_STAGE_COUNT] = {0};
    int pfd[SP_STAGE_COUNT], alive = 0, rc = 0, failed = -1;
    for (int s = 0; s < SP_STAGE_COUNT; s++) pfd[s] = -1;
    fflush(NULL);
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

    while (alive > 0 && !rc) {
        struct pollfd p[SP_STAGE_COUNT];
        int np = 0, map[SP_STAGE_COUNT];
        for (int s = 0; s < SP_STAGE_COUNT; s++)
            if (pfd[s] >= 0) p[np] = (struct pollfd){.fd = pfd[s], .events = POLLIN}, map[np++] = s;
        int n = poll(p, (nfds_t)np, 250);
        progress(j, 0);
        if (n < 0 && errno != EINTR) {
            rc = sp_fail_errno(SP_EX_SOFTWARE, "poll on stage pidfds");
            break;
        }
        for (int i = 0; i < np && n > 0; i++) {
            if (!(p[i].revents & POLLIN)) continue;
            int s = map[i], status;
            if (waitpid(pid[s], &status, 0) < 0) continue;
            close(pfd[s]);
            pfd[s] = -1;
            pid[s] = 0;
            alive--;
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
            failed = s;
            sp_stage_stat *st = &j->sh->st[s];
            if (WIFEXITED(status))
                rc = st->err[0] ? sp_fail(WEXITSTATUS(status), "%s", st->err)
                                : sp_fail(WEXITSTATUS(status), "the %s stage failed (exit %d) without a message",
                                          sp_stage_names[s], WEXITSTATUS(status));
            else
                rc = sp_fail(SP_EX_SOFTWARE, "the %s stage was killed by signal %d (%s)", sp_stage_names[s],
                             WTERMSIG(status), strsignal(WTERMSIG(status)));
            break;
        }
    }
    if (rc) {
        /* Stop the others: abort the rings so blocked peers return, then kill. */
        sp_ring_abort(j->wring, SP_RING_ROLE_PRODUCER);
        sp_ring_abort(j->wring, SP_RING_ROLE_CONSUMER);
        sp_ring_abort(j->oring, SP_RING_ROLE_PRODUCER);
        sp_ring_abort(j->oring, SP_RING_ROLE_CONSUMER);
        for (int s = 0; s < SP_STAGE_COUNT; s++)
            if (pid[s] > 0) kill(pid[s], SIGKILL);
    }
    for (int s = 0; s < SP_STAGE_COUNT; s++) {
        if (pid[s] > 0) waitpid(pid[s], NULL, 0);
        if (pfd[s] >= 0) close(pfd[s]);
    }
    (void)failed;
    if (!rc) progress(j, 1);
    if (!j->o->quiet && isatty(2)) fputc('\n', stderr);
    return rc;
}
