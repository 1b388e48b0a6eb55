#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* Blocks of BIG_BYTES and more are aligned to 2 MiB and advised to the
 * kernel as transparent huge pages (where THP is "madvise" or "always"): one
 * first-touch fault per 2 MiB instead of per 4 KiB. First touches of 4 KiB
 * pages cost 14 µs each on a virtual machine we measured (512 MiB took 1.8 s
 * against 0.05 s in huge pages); the big blocks here (activation chunks and
 * spills, weights, second moments) are touched whole anyway. free() frees
 * them as any block. */
#define BIG_BYTES ((int64_t)4 << 20)
#define HUGE_BYTES ((size_t)2 << 20)

static void *alloc_bytes(int64_t n) {
    if (n < BIG_BYTES) return malloc(n ? (size_t)n : 1);
    void *p = NULL;
    if (posix_memalign(&p, HUGE_BYTES, (size_t)n) != 0) return NULL;
    (void)madvise(p, (size_t)n / HUGE_BYTES * HUGE_BYTES, MADV_HUGEPAGE); /* advice only: without THP, 4 KiB pages */
    return p;
}

int sp_alloc(void **out, int64_t count, int64_t elem_bytes, const char *what) {
    int64_t n;
    *out = NULL;
    if (count < 0 || elem_bytes < 0 || sp_mul_i64(count, elem_bytes, &n))
        return sp_fail(SP_EX_SOFTWARE, "allocation for %s: size overflows", what);
    void *p = alloc_bytes(n);
    if (!p) return sp_fail(SP_EX_SOFTWARE, "out of memory allocating %lld bytes for %s", (long long)n, what);
    *out = p;
    return 0;
}

int sp_calloc(void **out, int64_t count, int64_t elem_bytes, const char *what) {
    int64_t n;
    *out = NULL;
    if (count < 0 || elem_bytes < 0 || sp_mul_i64(count, elem_bytes, &n))
        return sp_fail(SP_EX_SOFTWARE, "allocation for %s: size overflows", what);
    void *p = n < BIG_BYTES ? calloc(n ? (size_t)n : 1, 1) : alloc_bytes(n);
    if (p && n >= BIG_BYTES) memset(p, 0, (size_t)n);
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

/* The first integer after `key` in the small file at path; -1 when absent
 * (or "max"). */
static int64_t read_field(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    long long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0) {
            if (sscanf(line + strlen(key), " %lld", &v) != 1) v = -1;
            break;
        }
    fclose(f);
    return v;
}

/* Bytes left below the memory limit of the cgroup at `dir` (v2:
 * memory.max and memory.current; v1: memory.limit_in_bytes and
 * memory.usage_in_bytes); -1 without one. */
static int64_t cgroup_left(const char *dir, int v2) {
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", dir, v2 ? "memory.max" : "memory.limit_in_bytes");
    int64_t max = read_field(path, "");
    snprintf(path, sizeof path, "%s/%s", dir, v2 ? "memory.current" : "memory.usage_in_bytes");
    int64_t cur = read_field(path, "");
    return max > 0 && cur >= 0 ? (max > cur ? max - cur : 0) : -1;
}

int64_t sp_mem_available_bytes(void) {
    int64_t best = sp_mem_limit_bytes(), kb = read_field("/proc/meminfo", "MemAvailable:");
    if (kb >= 0 && kb < INT64_MAX / 1024 && kb * 1024 < best) best = kb * 1024;
    FILE *f = fopen("/proc/self/cgroup", "r"); /* v2 "0::/path"; v1 "N:memory:/path" */
    if (!f) return best;
    char line[512], dir[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        const char *v1 = strstr(line, ":memory:"), *path = NULL;
        int v2 = strncmp(line, "0::", 3) == 0;
        if (v2) path = line + 3;
        else if (v1) path = v1 + 8;
        if (!path || path[0] != '/') continue;
        snprintf(dir, sizeof dir, "/sys/fs/cgroup%s%s", v2 ? "" : "/memory", path);
        int64_t left = cgroup_left(dir, v2);
        if (left >= 0 && left < best) best = left;
    }
    fclose(f);
    return best;
}

int64_t sp_peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_maxrss * 1024;
}
