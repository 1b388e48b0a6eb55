/* io/base/error.h — slicepipe's two error channels.
 *
 * 1. Anything that comes from outside (files, the manifest, syscalls) is reported
 *    by *status*: a function returns 0 on success or one of the sysexits codes
 *    below, after recording one human-readable message with sp_fail(). The
 *    message names the file, the tensor and the reason. The command-line front
 *    end prints it once and exits with the code.
 * 2. SP_ASSERT is for our own invariants only. It is always on, also in
 *    release builds. Never SP_ASSERT a value read from a file.
 */
#ifndef SP_ERROR_H
#define SP_ERROR_H

#include <stdint.h>
#include <stddef.h>

enum sp_status {
    SP_OK = 0,
    SP_EX_USAGE = 64,     /* bad command line or manifest */
    SP_EX_DATAERR = 65,   /* bad input data */
    SP_EX_NOINPUT = 66,   /* missing input */
    SP_EX_SOFTWARE = 70,  /* internal error */
    SP_EX_CANTCREAT = 73, /* cannot create output */
    SP_EX_IOERR = 74,     /* I/O error */
    SP_EX_TEMPFAIL = 75,  /* locked, or try again */
};

/* Records the message (printf-style) and returns `code`, so callers write
 * `return sp_fail(SP_EX_DATAERR, "%s: tensor '%s': ...", path, name);`.
 * A later sp_fail overwrites the message. */
int sp_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like sp_fail, and appends ": strerror(errno)". */
int sp_fail_errno(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message recorded, "" if none. */
const char *sp_errmsg(void);
void sp_err_clear(void);

void sp_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define SP_ASSERT(c) ((c) ? (void)0 : sp_assert_fail(#c, __FILE__, __LINE__))

/* Propagate a non-zero status. */
#define SP_TRY(expr)              \
    do {                          \
        int sp_rc_ = (expr);      \
        if (sp_rc_) return sp_rc_; \
    } while (0)

/* Overflow-checked size arithmetic: return 0 on success, non-zero on overflow. */
static inline int sp_mul_i64(int64_t a, int64_t b, int64_t *out) { return __builtin_mul_overflow(a, b, out); }
static inline int sp_add_i64(int64_t a, int64_t b, int64_t *out) { return __builtin_add_overflow(a, b, out); }

/* Allocation that aborts on OOM is wrong for sizes from files: use these, which
 * return a status (SP_EX_SOFTWARE with a message naming `what`). Sizes are
 * element counts times element size, checked for overflow. */
int sp_alloc(void **out, int64_t count, int64_t elem_bytes, const char *what);
int sp_calloc(void **out, int64_t count, int64_t elem_bytes, const char *what);

/* Monotonic seconds, and the peak RSS of this process in bytes. */
double sp_now(void);
int64_t sp_peak_rss_bytes(void);
/* The most memory this process may hold: the machine's physical memory, or
 * less when an address-space or data limit (ulimit -v, -d) is set. For plans
 * that have no budget of their own to refuse against. */
int64_t sp_mem_limit_bytes(void);
/* Memory this process could take now without pushing anything out:
 * MemAvailable (/proc/meminfo), or less when its memory cgroup has less left
 * below its limit (v2 memory.max, v1 memory.limit_in_bytes), or
 * sp_mem_limit_bytes is lower. INT64_MAX when none of
 * them can be read. For optional uses of memory that only speed things up. */
int64_t sp_mem_available_bytes(void);

#endif
