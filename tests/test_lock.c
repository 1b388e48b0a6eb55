/* tests/test_lock.c — the job directory lock (io/base/lock.h) with real processes:
 * a child holds it and the parent gets 75 naming the child's PID; after the
 * child is SIGKILLed the parent acquires it. Also: two opens in one process
 * conflict (OFD semantics), a forked child keeps the lock its parent took,
 * and a missing job directory is 73.
 *
 * Usage: test_lock [scratch_dir]   (default: a fresh mkdtemp under /tmp) */
#include "error.h"
#include "lock.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

static int mentions_pid(const char *msg, const char *dir, long pid) {
    char want[64];
    snprintf(want, sizeof want, "in use by process %ld ", pid);
    return strstr(msg, want) && strstr(msg, dir);
}

static long file_pid(const char *path) {
    FILE *f = fopen(path, "r");
    long pid = -1;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1) pid = -1;
        fclose(f);
    }
    return pid;
}

/* Forks a child that takes the lock itself (its own open description), tells
 * us through a pipe, and waits to be killed. */
static pid_t child_holding(const char *lock_path) {
    int fds[2];
    if (pipe(fds) != 0) abort();
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        sp_lock *l;
        char c = sp_lock_acquire(lock_path, &l) == 0 ? 'r' : 'e';
        if (write(fds[1], &c, 1) != 1) _exit(1);
        for (;;) pause();
    }
    close(fds[1]);
    char c = 0;
    if (read(fds[0], &c, 1) != 1) c = 0;
    close(fds[0]);
    CHECK(c == 'r', "child acquired the lock (%c)", c ? c : '?');
    return pid;
}

static void kill_wait(pid_t pid) {
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child %ld killed by SIGKILL", (long)pid);
}

int main(int argc, char **argv) {
    char dir[4096], lockp[4200];
    if (argc >= 2) {
        snprintf(dir, sizeof dir, "%s", argv[1]);
        mkdir_p(dir);
    } else {
        snprintf(dir, sizeof dir, "/tmp/test_lock.XXXXXX");
        if (!mkdtemp(dir)) return 1;
    }
    snprintf(lockp, sizeof lockp, "%s/lock", dir);
    unlink(lockp);

    /* Same process: acquire, PID written; a second open conflicts (OFD). */
    sp_lock *a = NULL, *b = NULL;
    int rc = sp_lock_acquire(lockp, &a);
    CHECK(rc == 0 && file_pid(lockp) == (long)getpid(), "acquire: rc %d, pid in file %ld", rc, file_pid(lockp));
    rc = sp_lock_acquire(lockp, &b);
    CHECK(rc == 75 && mentions_pid(sp_errmsg(), dir, (long)getpid()), "second acquire in one process: 75: %s", sp_errmsg());
    CHECK(file_pid(lockp) == (long)getpid(), "a refused acquire leaves the holder's PID in the file");
    sp_lock_free(a);
    rc = sp_lock_acquire(lockp, &a);
    CHECK(rc == 0, "acquire after free: %s", sp_errmsg());
    sp_lock_free(a);
    sp_lock_free(NULL);

    /* A child holds it: 75 naming the child's PID; after SIGKILL it is ours. */
    pid_t c = child_holding(lockp);
    rc = sp_lock_acquire(lockp, &a);
    CHECK(rc == 75 && mentions_pid(sp_errmsg(), dir, (long)c), "held by child %ld: 75: %s", (long)c, sp_errmsg());
    kill_wait(c);
    rc = sp_lock_acquire(lockp, &a);
    CHECK(rc == 0 && file_pid(lockp) == (long)getpid(), "acquire after the holder was SIGKILLed: %d %s", rc, sp_errmsg());

    /* A forked child inherits the parent's lock: freeing the parent's handle
     * does not release it while the child lives. */
    pid_t k = fork();
    if (k == 0)
        for (;;) pause();
    sp_lock_free(a);
    rc = sp_lock_acquire(lockp, &b);
    CHECK(rc == 75 && mentions_pid(sp_errmsg(), dir, (long)getpid()), "lock inherited by a forked child: 75: %s",
          sp_errmsg());
    kill_wait(k);
    rc = sp_lock_acquire(lockp, &b);
    CHECK(rc == 0, "acquire after the inheriting child died: %s", sp_errmsg());
    sp_lock_free(b);

    char bad[4300];
    snprintf(bad, sizeof bad, "%s/missing/lock", dir);
    rc = sp_lock_acquire(bad, &a);
    CHECK(rc == 73, "lock in a missing directory: 73 (%d)", rc);

    if (g_fail) {
        fprintf(stderr, "%d checks failed\n", g_fail);
        return 1;
    }
    printf("lock: all checks passed\n");
    return 0;
}
