/* io/base/lock.c — the job directory lock; semantics in lock.h.
 *
 * Protocol: open(O_RDWR|O_CREAT|O_NOFOLLOW, through sp_io_open_own: a planted
 * link or FIFO is refused) ──► F_OFD_SETLK(F_WRLCK, whole file)
 *   ├─ granted ──► ftruncate(0), pwrite("<pid>\n") ──► held
 *   └─ EAGAIN/EACCES ──► read the holder's PID (retrying briefly: the holder
 *      may sit between its lock and its write) ──► close ──► 75
 * The PID write needs no fsync: after a crash the lock is gone anyway, and a
 * stale PID is only ever used to word a message.
 *
 * sp_lock_probe (for `slicepipe status`) opens the file read-only and asks
 * F_OFD_GETLK: it never creates, locks or writes anything.
 */
#include "lock.h"

#include "error.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <unistd.h>

struct sp_lock {
    int fd;
};

static void dir_of(const char *path, char *out, size_t cap) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    snprintf(out, cap, "%s", dirname(tmp));
}

/* The PID in the lock file, or 0 if none can be read. */
static long holder_pid(int fd) {
    for (int tries = 0; tries < 20; tries++) {
        char buf[32] = {0};
        ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
        if (r > 0) {
            char *end;
            long pid = strtol(buf, &end, 10);
            if (end != buf && *end == '\n' && pid > 0) return pid;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

int sp_lock_acquire(const char *lock_path, sp_lock **out) {
    *out = NULL;
    char dir[4096];
    dir_of(lock_path, dir, sizeof dir);
    int fd;
    SP_TRY(sp_io_open_own(lock_path, O_RDWR | O_CREAT, &fd, NULL));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0, .l_pid = 0};
    /* A holder that is already gone (its PID no longer exists) is a job whose
     * processes are still being torn down after a crash — its forked children
     * share the lock's open file description until they have exited. Give them
     * up to 5 s before calling the job busy. */
    for (int tries = 0; fcntl(fd, F_OFD_SETLK, &fl) != 0; tries++) {
        int e = errno;
        long holder = (e == EAGAIN || e == EACCES) ? holder_pid(fd) : 0;
        if (holder > 0 && kill((pid_t)holder, 0) != 0 && errno == ESRCH && tries < 100) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (e == EAGAIN || e == EACCES) {
            long pid = holder;
            close(fd);
            if (pid)
                return sp_fail(SP_EX_TEMPFAIL, "job directory %s is in use by process %ld (lock %s)", dir, pid, lock_path);
            return sp_fail(SP_EX_TEMPFAIL, "job directory %s is in use by another process (lock %s)", dir, lock_path);
        }
        close(fd);
        errno = e;
        return sp_fail_errno(SP_EX_IOERR, "%s: cannot lock", lock_path);
    }
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    int rc = 0;
    if (ftruncate(fd, 0) != 0) rc = sp_fail_errno(SP_EX_IOERR, "%s: truncate", lock_path);
    if (!rc) rc = sp_io_pwrite_full(fd, line, n, 0, lock_path);
    sp_lock *l = rc ? NULL : malloc(sizeof *l);
    if (!rc && !l) rc = sp_fail(SP_EX_SOFTWARE, "%s: out of memory", lock_path);
    if (rc) {
        close(fd); /* releases the lock */
        return rc;
    }
    l->fd = fd;
    *out = l;
    return 0;
}

void sp_lock_free(sp_lock *l) {
    if (!l) return;
    close(l->fd);
    free(l);
}

int sp_lock_probe(const char *lock_path, long *holder) {
    *holder = 0;
    int fd;
    int rc = sp_io_open_own(lock_path, O_RDONLY, &fd, NULL);
    if (rc == SP_EX_NOINPUT) return 0; /* no lock file: nobody holds it */
    SP_TRY(rc);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0, .l_pid = 0};
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) {
        rc = sp_fail_errno(SP_EX_IOERR, "%s: cannot query the lock", lock_path);
        close(fd);
        return rc;
    }
    if (fl.l_type != F_UNLCK) {
        *holder = holder_pid(fd);
        rc = *holder ? sp_fail(SP_EX_TEMPFAIL, "held by process %ld", *holder) : sp_fail(SP_EX_TEMPFAIL, "held by another process");
    }
    close(fd);
    return rc;
}
