/* tests/test_util.h — what the C tests share: CHECK(cond[, fmt, ...]) reports
 * a failed check with its file, line, expression and optional message and
 * counts it in g_fail (a test exits non-zero when g_fail > 0); CHECK_MSG
 * checks the last error message (sp_errmsg) contains a needle; mkdir_p. */
#ifndef SP_TEST_UTIL_H
#define SP_TEST_UTIL_H

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int g_fail;
#define CHECK(c, ...)                                                   \
    do {                                                                \
        if (!(c)) {                                                     \
            g_fail++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c); \
            fprintf(stderr, " " __VA_ARGS__);                           \
            fprintf(stderr, "\n");                                      \
        }                                                               \
    } while (0)


/* Requires error.h (sp_errmsg). */
#define CHECK_MSG(needle)                                                                                  \
    do {                                                                                                   \
        if (!strstr(sp_errmsg(), (needle))) {                                                              \
            fprintf(stderr, "FAIL %s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__, sp_errmsg(), (needle)); \
            g_fail++;                                                                                      \
        }                                                                                                  \
    } while (0)

static inline void mkdir_p(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *q = tmp + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            mkdir(tmp, 0755);
            *q = '/';
        }
    mkdir(tmp, 0755);
}

#endif
