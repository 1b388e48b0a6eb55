/* io/base/lock.h — one slicepipe process per job directory.
 *
 * sp_lock_acquire takes an OFD ("open file description") write lock —
 * fcntl(F_OFD_SETLK, F_WRLCK) on the whole file — on a lock file in the job
 * directory (created if missing), then writes our PID into it ("<pid>\n") so
 * that a second run can say who holds the job. Nothing is ever read from the
 * lock file except that PID, and only to word the message.
 *
 * Lifetime: the lock belongs to the open file description, not to a process.
 *   - It is released by sp_lock_free, or by the kernel when the last file
 *     descriptor referring to the description is closed — in particular when
 *     the holder dies, even by SIGKILL. There is no stale-lock cleanup.
 *   - Children created by fork() inherit the descriptor, hence the SAME lock:
 *     that is intended (stage processes run under the supervisor's lock), and
 *     the job stays locked until the supervisor and all its children have
 *     exited or closed it. The descriptor is O_CLOEXEC: exec'd programs do not
 *     inherit it.
 *   - Unlike classic POSIX record locks, OFD locks conflict between two opens
 *     in the same process, and closing an unrelated descriptor of the same
 *     file does not drop the lock.
 *
 * The lock file is never unlinked, by its holder or anyone: a process that
 * opened it before an unlink would lock the unlinked file once the holder is
 * gone, while another creates and locks a new file of that name, and both
 * would believe they hold the lock (docs/resume.md §9).
 *
 * Errors: held by another open description: 75 (SP_EX_TEMPFAIL) "job
 * directory <dir> is in use by process <pid>" (the PID from the file; "by
 * another process" if it was not written yet). The lock file cannot be
 * created, or is a symbolic link: 73. Not a regular file (a FIFO): 65.
 * fcntl/write failures: 74.
 */
#ifndef SP_LOCK_H
#define SP_LOCK_H

typedef struct sp_lock sp_lock; /* opaque; owns an fd */

int sp_lock_acquire(const char *lock_path, sp_lock **out);
void sp_lock_free(sp_lock *l);
/* Read-only: 0 if nobody holds the lock (or there is no lock file), 75 with
 * *holder = the PID from the file (0 if unreadable) if someone does. Never
 * creates, locks or writes. */
int sp_lock_probe(const char *lock_path, long *holder); /* releases the lock (for this process's descriptor); accepts NULL */

#endif
