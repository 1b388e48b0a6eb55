#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char g_msg[2048];

static void vset(const char *fmt, va_list ap) { vsnprintf(g_msg, sizeof g_msg, fmt, ap); }

int sp_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vset(fmt, ap);
    va_end(ap);
    return code;
}

int sp_fail_errno(int code, const char *fmt, ...) {
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    vset(fmt, ap);
    va_end(ap);
    size_t n = strlen(g_msg);
    snprintf(g_msg + n, sizeof g_msg - n, ": %s", strerror(e));
    return code;
}

const char *sp_errmsg(void) { return g_msg; }
void sp_err_clear(void) { g_msg[0] = 0; }

void sp_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "slicepipe: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
    fflush(stderr);
    abort();
}

int sp_alloc(void **out, int64_t count, int64_t elem_bytes, const char *what) {
    int64_t n;
    *out = NULL;
    if (count < 0 || elem_bytes < 0 || sp_mul_i64(count, elem_bytes, &n))
        return sp_fail(SP_EX_SOFTWARE, "allocation for %s: size overflows", what);
    void *p = malloc(n ? (size_t)n : 1);
    if (!p) return sp_fail(SP_EX_SOFTWARE, "out of memory allocating %lld bytes for %s", (long long)n, what);
    *out = p;
    return 0;
}

int sp_calloc(void **out, int64_t count, int64_t elem_bytes, const char *what) {
    int64_t n;
    *out = NULL;
    if (count < 0 || elem_bytes < 0 || sp_mul_i64(count, elem_bytes, &n))
        return sp_fail(SP_EX_SOFTWARE, "allocation for %s: size overflows", what);
    void *p = calloc(n ? (size_t)n : 1, 1);
    if (!p) return sp_fail(SP_EX_SOFTWARE, "out of memory allocating %lld bytes for %s", (long long)n, what);
    *out = p;
    return 0;
}

double sp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t sp_mem_limit_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    int64_t lim = pages > 0 && page > 0 && pages < INT64_MAX / page ? (int64_t)pages * page : INT64_MAX;
    static const int which[] = {RLIMIT_AS, RLIMIT_DATA};
    for (size_t i = 0; i < sizeof which / sizeof which[0]; i++) {
        struct rlimit rl;
        if (getrlimit(which[i], &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (uint64_t)rl.rlim_cur < (uint64_t)lim)
            lim = (int64_t)rl.rlim_cur;
    }
    return lim;
}

int64_t sp_peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_maxrss * 1024;
}
