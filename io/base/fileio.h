/* io/base/fileio.h — the one small layer all slicepipe file I/O goes through.
 *
 * Every function returns 0 or a sysexits status with a message naming the
 * path. Tests can make the Nth write or fsync fail, or force short reads,
 * through the environment (see README "Fault injection"):
 *   SLICEPIPE_FAULT_WRITE=N[:ENOSPC|EIO]   the Nth sp_io_write_full fails
 *   SLICEPIPE_FAULT_FSYNC=N[:ENOSPC|EIO]   the Nth sp_io_fsync fails
 *   SLICEPIPE_SHORT_READS=1                preads return at most 7 bytes a call
 */
#ifndef SP_FILEIO_H
#define SP_FILEIO_H

#include <stdint.h>

/* What a file of st_mode `mode` is, for messages: "a FIFO", "a directory",
 * "a device", "a socket", "a symbolic link", "a regular file" or "special". */
const char *sp_io_kind(unsigned mode);

/* Every open of this layer uses O_NONBLOCK (a FIFO or device can never block
 * open itself), fstats, refuses anything but a regular file (65, saying what
 * it is), then clears O_NONBLOCK; every fd is O_CLOEXEC.
 *
 * Opens for reading (links followed: a model folder may be made of them).
 * Missing file: 66. Not a regular file: 65. */
int sp_io_open_read(const char *path, int *fd_out, int64_t *size_out);
/* Opens a file slicepipe owns (the journal, the lock, a spill or a .tmp being
 * resumed) with `flags` (O_RDWR, O_APPEND, O_CREAT...) plus O_NOFOLLOW: a
 * symbolic link there is refused (73), never written through. Missing: 66. */
int sp_io_open_own(const char *path, int flags, int *fd_out, int64_t *size_out);
/* Creates path afresh for writing (O_RDWR): a stale file or planted link of
 * that name is unlinked first (the name, never its target), then the file is
 * made with O_CREAT|O_EXCL|O_NOFOLLOW. A name that cannot be removed (another
 * user's file in a sticky folder): 73. */
int sp_io_create(const char *path, int mode, int *fd_out);
/* n_hex lowercase hex digits from getrandom (n_hex <= 64), + NUL. */
void sp_io_random_hex(char *out, int n_hex);
/* A whole file made atomically: begin creates the temporary beside path
 * ("<path>.tmp" through sp_io_create, or with unique != 0 an unpredictable
 * "<path>.<16 hex>.tmp" made with O_EXCL|O_NOFOLLOW, for folders slicepipe
 * does not own); the caller writes to *fd_out; commit (ok != 0) fsyncs,
 * closes, renames onto path and fsyncs the folder, or (ok == 0, or on any
 * failure) removes the temporary. commit frees tmp and closes fd. */
int sp_io_atomic_begin(const char *path, int unique, int *fd_out, char **tmp_out);
int sp_io_atomic_commit(int fd, char *tmp, const char *path, int ok);
/* ---- single-file outputs ----
 * tokenize -o and --decoded, eval and generate --dump-logits, generate
 * --out-ids and synth's calib.npy are one file each at a path the user names.
 * `taken` is the set of files the command reads (its inputs) and the single
 * files it already writes (its outputs); NULL is the empty set. */
typedef struct sp_io_paths sp_io_paths; /* opaque */
/* Adds path to *taken (made on the first add): its identity (device and
 * inode, links followed) when it exists, and its entry (its folder's device
 * and inode, and its last name). A path that does not exist is still an
 * entry. Out of memory: 70. */
int sp_io_paths_add(sp_io_paths **taken, const char *path, int is_output);
void sp_io_paths_free(sp_io_paths *taken);
/* The one rule for an existing file at an output path: slicepipe never
 * replaces a file it did not write. A single file carries no mark of who
 * wrote it, so an existing file or link there (even a dangling link) is
 * refused (73) unless the caller passes SP_IO_OUT_REPLACE: the user's --force,
 * or a file the command knows as its own (synth's calib.npy in a folder it
 * recognized as its own output). */
enum { SP_IO_OUT_REPLACE = 1 };
/* Checks path as a single-file output, creating nothing:
 *  - empty, or ending in '/': 73;
 *  - a file of *taken (the same device and inode, or the same name in the
 *    same folder): 64 naming both;
 *  - a directory, FIFO, device or socket: 73, without opening it;
 *  - an existing file or link without SP_IO_OUT_REPLACE in flags: 73.
 * The GGUF export, whose temporary is its own (resumable), checks its path
 * with this too. */
int sp_io_out_check(const char *path, sp_io_paths **taken, int flags);
/* Begins a single-file output at path, without opening path itself:
 * sp_io_out_check(path, taken, flags), then the unpredictable temporary of
 * sp_io_atomic_begin(path, 1, ...) is made beside it, and path joins *taken
 * as an output.
 * The caller writes to *fd_out and ends with sp_io_atomic_commit: fsync,
 * rename over path (a link planted there is replaced, never written
 * through), fsync of the folder; any failure, or ok == 0, removes the
 * temporary. Two runs writing one path each write their own temporary: the
 * last rename wins, and path is always one complete file. */
int sp_io_out_begin(const char *path, int flags, sp_io_paths **taken, int *fd_out, char **tmp_out);

/* Reads exactly n bytes at off (resuming short reads). Hitting EOF early: 65
 * ("truncated"). Other errors: 74. */
int sp_io_pread_full(int fd, void *buf, int64_t n, int64_t off, const char *path);
/* Writes exactly n bytes at the current position. Errors: 74. */
int sp_io_write_full(int fd, const void *buf, int64_t n, const char *path);
/* Writes exactly n bytes at offset off (counts as a write for fault injection). */
int sp_io_pwrite_full(int fd, const void *buf, int64_t n, int64_t off, const char *path);
/* Cuts the file to len bytes (a torn tail dropped on resume); the caller
 * fsyncs. Errors: 74. */
int sp_io_truncate(int fd, int64_t len, const char *path);
/* fsync; a failure is final (never retried): 74. */
int sp_io_fsync(int fd, const char *path);
/* fsync of the directory containing path (or path itself if a directory). */
int sp_io_fsync_dir(const char *dir);
/* Reads a whole small file into a NUL-terminated malloc'd buffer. Larger than
 * max_bytes: 65. */
int sp_io_read_small(const char *path, int64_t max_bytes, char **buf_out, int64_t *len_out);
/* Writes a whole file atomically (sp_io_atomic_begin/commit with "<path>.tmp"). */
int sp_io_write_atomic(const char *path, const void *buf, int64_t n);

/* *out = dir + "/" + name, malloc'd (the caller frees it). No '/' is added
 * when dir is empty or already ends in one, so "/" + "x" is "/x". name may
 * hold further components ("sub/file"). Returns 0, or 70 (SP_EX_SOFTWARE:
 * the length overflows, or out of memory) with a message naming dir and name;
 * *out is NULL then. */
int sp_path_join(const char *dir, const char *name, char **out);

/* XXH3-128 of len bytes at off in path (len < 0: to the end of the file),
 * read in chunks of 4 MiB (sp_io_xxh128_range) or of `chunk` bytes, the size
 * of its one buffer (a run's supervisor hashes in chunks its memory plan
 * counts); 32 lowercase hex digits, high half first (the canonical form),
 * + NUL. A file shorter than off + len: 65. */
int sp_io_xxh128_range(const char *path, int64_t off, int64_t len, char hex[33]);
int sp_io_xxh128_range_chunk(const char *path, int64_t off, int64_t len, int64_t chunk, char hex[33]);
/* The canonical hex form of an XXH3-128 given as its two halves. */
void sp_hex128(uint64_t high64, uint64_t low64, char hex[33]);

#endif
