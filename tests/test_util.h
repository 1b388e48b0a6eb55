/* tests/test_util.h — the check macro the C tests share: a failed check is
 * reported with its file, line, expression and message, and counted in
 * g_fail; a test exits non-zero when g_fail > 0. */
#ifndef SP_TEST_UTIL_H
#define SP_TEST_UTIL_H

#include <stdio.h>

static int g_fail;
#define CHECK(c, ...)                                                   \
    do {                                                                \
        if (!(c)) {                                                     \
            g_fail++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c); \
            fprintf(stderr, __VA_ARGS__);                               \
            fprintf(stderr, "\n");                                      \
        }                                                               \
    } while (0)

#endif
