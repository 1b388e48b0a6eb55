#include "fileio.h"

#include "error.h"

#include <xxhash.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Fault injection: parsed once from the environment. */
static int g_fault_init;
static long g_fault_write_n, g_fault_fsync_n;
static int g_fault_write_errno, g_fault_fsync_errno;
static long g_write_calls, g_fsync_calls;
static int g_short_reads;

static void parse_fault(const char *var, long *n, int *err) {
    const char *s = getenv(var);
    *n = 0;
    *err = EIO;
    if (!s || !*s) return;
    *n = strtol(s, NULL, 10);
    const char *c = strchr(s, ':');
    if (c && strcmp(c + 1, "ENOSPC") == 0) *err = ENOSPC;
}

static void fault_init(void) {
    if (g_fault_init) return;
    g_fault_init = 1;
    parse_fault("SLICEPIPE_FAULT_WRITE", &g_fault_write_n, &g_fault_write_errno);
    parse_fault("SLICEPIPE_FAULT_FSYNC", &g_fault_fsync_n, &g_fault_fsync_errno);
    const char *s = getenv("SLICEPIPE_SHORT_READS");
    g_short_reads = s && *s && strcmp(s, "0") != 0;
}

const char *sp_io_kind(unsigned mode) {
    return S_ISREG(mode) ? "a regular file" : S_ISFIFO(mode) ? "a FIFO" : S_ISDIR(mode) ? "a directory"
           : S_ISCHR(mode) || S_ISBLK(mode) ? "a device" : S_ISSOCK(mode) ? "a socket"
           : S_ISLNK(mode) ? "a symbolic link" : "special";
}

/* The one open: O_NONBLOCK so that a FIFO or a device cannot block open()
 * itself, then fstat, refuse anything but a regular file, then clear the
 * flag. `flags` are the caller's (O_RDONLY, O_RDWR|O_CREAT|O_EXCL, ...). */
static int open_regular(const char *path, int flags, int mode, int *fd_out, int64_t *size_out) {
    *fd_out = -1;
    int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT && !(flags & O_CREAT)) return sp_fail(SP_EX_NOINPUT, "%s: no such file", path);
        if (e == ELOOP && (flags & O_NOFOLLOW))
            return sp_fail(SP_EX_CANTCREAT, "%s: is a symbolic link; refused (slicepipe never writes through a link)", path);
        if (e == EEXIST) return sp_fail(SP_EX_CANTCREAT, "%s: exists and could not be replaced (another user's file?)", path);
        errno = e;
        if (flags & (O_CREAT | O_WRONLY | O_RDWR)) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot open for writing", path);
        return sp_fail_errno(SP_EX_NOINPUT, "%s: cannot open", path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = sp_fail_errno(SP_EX_IOERR, "%s: fstat", path);
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sp_fail(SP_EX_DATAERR, "%s: not a regular file (%s)", path, sp_io_kind(st.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int rc = sp_fail_errno(SP_EX_IOERR, "%s: fcntl", path);
        close(fd);
        return rc;
    }
    *fd_out = fd;
    if (size_out) *size_out = (int64_t)st.st_size;
    return 0;
}

int sp_io_open_read(const char *path, int *fd_out, int64_t *size_out) {
    return open_regular(path, O_RDONLY, 0, fd_out, size_out);
}

int sp_io_open_own(const char *path, int flags, int *fd_out, int64_t *size_out) {
    return open_regular(path, flags | O_NOFOLLOW, 0644, fd_out, size_out);
}

int sp_io_create(const char *path, int mode, int *fd_out) {
    *fd_out = -1;
    /* A stale file of ours, or a planted link: the name goes, never its target. */
    if (unlink(path) != 0 && errno != ENOENT && errno != EPERM && errno != EACCES && errno != EISDIR)
        return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot remove the stale file", path);
    return open_regular(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode, fd_out, NULL);
}

void sp_io_random_hex(char *out, int n_hex) {
    unsigned char b[32];
    int nb = (n_hex + 1) / 2;
    SP_ASSERT(nb <= (int)sizeof b);
    ssize_t got = getrandom(b, (size_t)nb, 0);
    if (got != nb) { /* no entropy source: time and PID still make names unlikely to be guessed in advance */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = XXH3_64bits_withSeed(&ts, sizeof ts, (uint64_t)getpid());
        for (int i = 0; i < nb; i++) b[i] = (unsigned char)(x >> (8 * (i % 8))) ^ (unsigned char)i;
    }
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < n_hex; i++) out[i] = hx[(b[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[n_hex] = 0;
}

int sp_io_pread_full(int fd, void *buf, int64_t n, int64_t off, const char *path) {
    fault_init();
    char *p = buf;
    while (n > 0) {
        size_t want = (size_t)n;
        if (g_short_reads && want > 7) want = 7;
        ssize_t r = pread(fd, p, want, (off_t)off);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return sp_fail_errno(SP_EX_IOERR, "%s: read at offset %lld", path, (long long)off);
        }
        if (r == 0) return sp_fail(SP_EX_DATAERR, "%s: truncated (unexpected end of file at offset %lld)", path, (long long)off);
        p += r;
        n -= r;
        off += r;
    }
    return 0;
}

/* Writes exactly n bytes, at off (off >= 0, pwrite) or at the file position
 * (off < 0, write). Every call counts for SLICEPIPE_FAULT_WRITE. */
static int write_all(int fd, const void *buf, int64_t n, int64_t off, const char *path) {
    fault_init();
    g_write_calls++;
    if (g_fault_write_n && g_write_calls == g_fault_write_n) {
        errno = g_fault_write_errno;
        return sp_fail_errno(SP_EX_IOERR, "%s: write (injected fault)", path);
    }
    const char *p = buf;
    while (n > 0) {
        ssize_t w = off < 0 ? write(fd, p, (size_t)n) : pwrite(fd, p, (size_t)n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return sp_fail_errno(SP_EX_IOERR, "%s: write", path);
        }
        p += w;
        n -= w;
        if (off >= 0) off += w;
    }
    return 0;
}

int sp_io_write_full(int fd, const void *buf, int64_t n, const char *path) { return write_all(fd, buf, n, -1, path); }

int sp_io_pwrite_full(int fd, const void *buf, int64_t n, int64_t off, const char *path) {
    return write_all(fd, buf, n, off, path);
}

int sp_io_truncate(int fd, int64_t len, const char *path) {
    if (ftruncate(fd, (off_t)len) != 0) return sp_fail_errno(SP_EX_IOERR, "%s: truncate to %lld bytes", path, (long long)len);
    return 0;
}

int sp_io_fsync(int fd, const char *path) {
    fault_init();
    g_fsync_calls++;
    if (g_fault_fsync_n && g_fsync_calls == g_fault_fsync_n) {
        errno = g_fault_fsync_errno;
        return sp_fail_errno(SP_EX_IOERR, "%s: fsync (injected fault)", path);
    }
    if (fsync(fd) != 0) return sp_fail_errno(SP_EX_IOERR, "%s: fsync", path);
    return 0;
}

int sp_io_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return sp_fail_errno(SP_EX_IOERR, "%s: open directory for fsync", dir);
    int rc = sp_io_fsync(fd, dir);
    close(fd);
    return rc;
}

int sp_io_read_small(const char *path, int64_t max_bytes, char **buf_out, int64_t *len_out) {
    int fd;
    int64_t size = 0;
    *buf_out = NULL;
    SP_TRY(sp_io_open_read(path, &fd, &size));
    if (size > max_bytes) {
        close(fd);
        return sp_fail(SP_EX_DATAERR, "%s: file is %lld bytes, larger than the %lld allowed", path, (long long)size,
                       (long long)max_bytes);
    }
    char *buf;
    int rc = sp_alloc((void **)&buf, size + 1, 1, path);
    if (!rc) rc = sp_io_pread_full(fd, buf, size, 0, path);
    close(fd);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[size] = 0;
    *buf_out = buf;
    if (len_out) *len_out = size;
    return 0;
}

int sp_io_atomic_begin(const char *path, int unique, int *fd_out, char **tmp_out) {
    *fd_out = -1;
    *tmp_out = NULL;
    char suffix[40] = ".tmp";
    if (unique) {
        char hex[17];
        sp_io_random_hex(hex, 16);
        snprintf(suffix, sizeof suffix, ".%s.tmp", hex);
    }
    char *tmp = NULL;
    SP_TRY(sp_path_join("", path, &tmp));
    size_t n = strlen(tmp) + strlen(suffix) + 1;
    char *t2 = realloc(tmp, n);
    if (!t2) {
        free(tmp);
        return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    strcat(t2, suffix);
    int rc = unique ? open_regular(t2, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0644, fd_out, NULL)
                    : sp_io_create(t2, 0644, fd_out);
    if (rc) {
        free(t2);
        return rc;
    }
    *tmp_out = t2;
    return 0;
}

int sp_io_atomic_commit(int fd, char *tmp, const char *path, int ok) {
    int rc = ok ? sp_io_fsync(fd, tmp) : SP_EX_IOERR;
    if (close(fd) != 0 && !rc) rc = sp_fail_errno(SP_EX_IOERR, "%s: close", tmp);
    if (!rc && rename(tmp, path) != 0) rc = sp_fail_errno(SP_EX_IOERR, "%s: rename to %s", tmp, path);
    if (rc) unlink(tmp);
    free(tmp);
    if (rc) return rc;
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return sp_fail(SP_EX_CANTCREAT, "%s: path too long", path);
    return sp_io_fsync_dir(dirname(dir));
}

int sp_io_write_atomic(const char *path, const void *buf, int64_t n) {
    int fd;
    char *tmp;
    SP_TRY(sp_io_atomic_begin(path, 0, &fd, &tmp));
    int rc = sp_io_write_full(fd, buf, n, tmp);
    int rc2 = sp_io_atomic_commit(fd, tmp, path, rc == 0);
    return rc ? rc : rc2;
}

/* ---- single-file outputs ---- */

typedef struct path_id {
    char *path;
    size_t base;             /* offset of the last name in path */
    int is_output, exists, has_dir;
    dev_t dev, ddev;         /* the file's and its folder's device */
    ino_t ino, dino;
} path_id;

struct sp_io_paths {
    path_id *p; /* (n) */
    int n, cap;
};

/* Fills id for path (id->path: a copy, the caller frees it). */
static int path_identify(const char *path, int is_output, path_id *id) {
    memset(id, 0, sizeof *id);
    id->is_output = is_output;
    size_t n = strlen(path);
    id->path = malloc(n + 1);
    if (!id->path) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    memcpy(id->path, path, n + 1);
    struct stat st;
    if (stat(path, &st) == 0) {
        id->exists = 1;
        id->dev = st.st_dev;
        id->ino = st.st_ino;
    }
    char *sl = strrchr(id->path, '/');
    id->base = sl ? (size_t)(sl - id->path) + 1 : 0;
    if (!id->path[id->base]) return 0; /* "dir/": no last name */
    char *dir = malloc(n + 2);
    if (!dir) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    if (!sl) snprintf(dir, n + 2, ".");
    else if (sl == id->path) snprintf(dir, n + 2, "/");
    else snprintf(dir, n + 2, "%.*s", (int)(sl - id->path), id->path);
    if (stat(dir, &st) == 0) {
        id->has_dir = 1;
        id->ddev = st.st_dev;
        id->dino = st.st_ino;
    }
    free(dir);
    return 0;
}

/* 1 if a and b are one file, or one name in one folder. */
static int path_same(const path_id *a, const path_id *b) {
    return (a->exists && b->exists && a->dev == b->dev && a->ino == b->ino) ||
           (a->has_dir && b->has_dir && a->ddev == b->ddev && a->dino == b->dino &&
            strcmp(a->path + a->base, b->path + b->base) == 0);
}

int sp_io_paths_add(sp_io_paths **taken, const char *path, int is_output) {
    if (!*taken && !(*taken = calloc(1, sizeof **taken))) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    sp_io_paths *t = *taken;
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 16;
        path_id *q = realloc(t->p, (size_t)cap * sizeof *q);
        if (!q) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
        t->p = q;
        t->cap = cap;
    }
    int rc = path_identify(path, is_output, &t->p[t->n]);
    if (rc) {
        free(t->p[t->n].path);
        return rc;
    }
    t->n++;
    return 0;
}

void sp_io_paths_free(sp_io_paths *taken) {
    if (!taken) return;
    for (int i = 0; i < taken->n; i++) free(taken->p[i].path);
    free(taken->p);
    free(taken);
}

int sp_io_out_check(const char *path, sp_io_paths **taken, int flags) {
    size_t n = strlen(path);
    if (n == 0 || path[n - 1] == '/')
        return sp_fail(SP_EX_CANTCREAT, "'%s': names a folder, not a file; refused as an output", path);
    if (taken && *taken) {
        path_id me;
        int rc = path_identify(path, 1, &me);
        for (int i = 0; !rc && i < (*taken)->n; i++) {
            const path_id *t = &(*taken)->p[i];
            if (!path_same(&me, t)) continue;
            rc = t->is_output ? sp_fail(SP_EX_USAGE, "%s: is also the output %s; refused: one command's outputs must differ",
                                        path, t->path)
                              : sp_fail(SP_EX_USAGE,
                                        "%s: is the input %s (the same file by device and inode, or the same name in "
                                        "the same folder); refused: an output never replaces an input",
                                        path, t->path);
        }
        free(me.path);
        SP_TRY(rc);
    }
    struct stat st;
    if (lstat(path, &st) != 0) return 0;
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
        return sp_fail(SP_EX_CANTCREAT,
                       "%s: is %s; refused as an output without opening it (slicepipe replaces only a regular file or "
                       "a link)",
                       path, sp_io_kind(st.st_mode));
    if (!(flags & SP_IO_OUT_REPLACE))
        return sp_fail(SP_EX_CANTCREAT,
                       "%s: exists (%s); refused: slicepipe never replaces a file it did not write; remove it, or pass "
                       "--force to replace it",
                       path, sp_io_kind(st.st_mode));
    return 0;
}

int sp_io_out_begin(const char *path, int flags, sp_io_paths **taken, int *fd_out, char **tmp_out) {
    *fd_out = -1;
    *tmp_out = NULL;
    SP_TRY(sp_io_out_check(path, taken, flags));
    SP_TRY(sp_io_atomic_begin(path, 1, fd_out, tmp_out));
    int rc = taken ? sp_io_paths_add(taken, path, 1) : 0;
    if (rc) {
        close(*fd_out);
        unlink(*tmp_out);
        free(*tmp_out);
        *fd_out = -1;
        *tmp_out = NULL;
    }
    return rc;
}

int sp_path_join(const char *dir, const char *name, char **out) {
    *out = NULL;
    size_t na = strlen(dir), nb = strlen(name);
    size_t sep = na > 0 && dir[na - 1] != '/';
    size_t n;
    if (__builtin_add_overflow(na, sep, &n) || __builtin_add_overflow(n, nb, &n) || __builtin_add_overflow(n, 1, &n))
        return sp_fail(SP_EX_SOFTWARE, "joining the path '%.200s' + '%.200s': the length overflows", dir, name);
    char *r = malloc(n);
    if (!r) return sp_fail(SP_EX_SOFTWARE, "out of memory joining the path '%.200s' + '%.200s'", dir, name);
    memcpy(r, dir, na);
    if (sep) r[na] = '/';
    memcpy(r + na + sep, name, nb + 1);
    *out = r;
    return 0;
}

void sp_hex128(uint64_t high64, uint64_t low64, char hex[33]) {
    snprintf(hex, 33, "%016llx%016llx", (unsigned long long)high64, (unsigned long long)low64);
}

int sp_io_xxh128_range(const char *path, int64_t off, int64_t len, char hex[33]) {
    return sp_io_xxh128_range_chunk(path, off, len, (int64_t)4 << 20, hex);
}

int sp_io_xxh128_range_chunk(const char *path, int64_t off, int64_t len, int64_t chunk, char hex[33]) {
    int fd;
    int64_t size;
    SP_TRY(sp_io_open_read(path, &fd, &size));
    if (len < 0) len = size - off;
    const int64_t CH = chunk > 0 ? chunk : 1;
    char *buf = malloc((size_t)CH);
    XXH3_state_t *xs = XXH3_createState();
    int rc = buf && xs ? 0 : sp_fail(SP_EX_SOFTWARE, "out of memory");
    if (!rc && (off < 0 || len < 0 || off + len > size))
        rc = sp_fail(SP_EX_DATAERR, "%s: %lld bytes, shorter than the %lld expected", path, (long long)size, (long long)(off + len));
    if (!rc) XXH3_128bits_reset(xs);
    for (int64_t p = 0; p < len && !rc; p += CH) {
        int64_t n = len - p < CH ? len - p : CH;
        rc = sp_io_pread_full(fd, buf, n, off + p, path);
        if (!rc) XXH3_128bits_update(xs, buf, (size_t)n);
    }
    if (!rc) {
        XXH128_hash_t h = XXH3_128bits_digest(xs);
        sp_hex128(h.high64, h.low64, hex);
    }
    XXH3_freeState(xs);
    free(buf);
    close(fd);
    return rc;
}
