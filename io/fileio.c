#include "fileio.h"

#include "error.h"

#include <xxhash.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

int sp_io_open_read(const char *path, int *fd_out, int64_t *size_out) {
    *fd_out = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return sp_fail(SP_EX_NOINPUT, "%s: no such file", path);
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
        return sp_fail(SP_EX_DATAERR, "%s: not a regular file", path);
    }
    *fd_out = fd;
    if (size_out) *size_out = (int64_t)st.st_size;
    return 0;
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

int sp_io_write_atomic(const char *path, const void *buf, int64_t n) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return sp_fail(SP_EX_CANTCREAT, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create", tmp);
    int rc = sp_io_write_full(fd, buf, n, tmp);
    if (!rc) rc = sp_io_fsync(fd, tmp);
    close(fd);
    if (!rc && rename(tmp, path) != 0) rc = sp_fail_errno(SP_EX_IOERR, "%s: rename", path);
    if (rc) {
        unlink(tmp);
        return rc;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    return sp_io_fsync_dir(dirname(dir));
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
    int fd;
    int64_t size;
    SP_TRY(sp_io_open_read(path, &fd, &size));
    if (len < 0) len = size - off;
    enum { CH = 4 << 20 };
    char *buf = malloc(CH);
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
