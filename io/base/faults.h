/* io/base/faults.h — compiled-in crash injection at commit points, for the
 * kill -9 resume tests (docs/resume.md §4, §13).
 *
 * A COMMIT POINT is a place right after a step became durable (a shard
 * renamed and its directory fsynced, a journal record appended, a spill
 * checkpoint written). Code marks it with
 *
 *     sp_fault_commit_point("journal");
 *
 * which counts the calls per stage name in this process and, when the
 * environment asks for it, kills the process there:
 *
 *   SLICEPIPE_KILL_AT=<stage>:<N>   the Nth call (1-based) for <stage> raises
 *                                   SIGKILL on the process itself: a real
 *                                   kill -9, no atexit, no flush, no cleanup.
 *                                   Malformed: the process exits 64 at the
 *                                   first commit point, saying so.
 *   SLICEPIPE_COUNT_COMMITS=1       at normal exit (atexit) each process that
 *                                   reached a commit point prints one line per
 *                                   stage to stderr: "commit-points <stage> <count>\n"
 *                                   — tests use it to learn how many points a
 *                                   run has, then kill at each one.
 *
 * Counts are per process: the environment is parsed on a process's first
 * commit point, and a forked child starts again from zero (the table notices
 * the PID changed and resets itself), re-reading the environment — so a
 * stage process killed at "<stage>:1" dies at its own first commit, whatever
 * its parent counted. Processes ending with _exit() print no counts.
 * Thread-safe (a mutex); at most 64 distinct stage names, each < 64 bytes.
 * With neither variable set a commit point costs a lock and a string compare.
 */
#ifndef SP_FAULTS_H
#define SP_FAULTS_H

void sp_fault_commit_point(const char *stage);

/* Calls of sp_fault_commit_point(stage) so far in this process. */
int sp_fault_commit_count(const char *stage);

#endif
