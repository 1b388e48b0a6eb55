/* io/base/strbuf.c — growable text buffer with a sticky out-of-memory state (see
 * strbuf.h). */
#include "strbuf.h"

#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sp_sb_put(sp_sb *b, const char *s, int64_t n) {
    if (b->oom || n < 0) return;
    int64_t need;
    if (sp_add_i64(b->len, n, &need) || sp_add_i64(need, 1, &need)) {
        b->oom = 1;
        return;
    }
    if (need > b->cap) {
        int64_t cap = b->cap ? b->cap : 4096;
        while (cap < need) {
            if (sp_mul_i64(cap, 2, &cap)) {
                b->oom = 1;
                return;
            }
        }
        char *p = realloc(b->p, (size_t)cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    b->p[b->len] = 0;
}

void sp_sb_str(sp_sb *b, const char *s) { sp_sb_put(b, s, (int64_t)strlen(s)); }

void sp_sb_printf(sp_sb *b, const char *fmt, ...) {
    if (b->oom) return;
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if (n < (int)sizeof tmp) {
        sp_sb_put(b, tmp, n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sp_sb_put(b, big, n);
    free(big);
}

int sp_sb_take(sp_sb *b, char **text_out, int64_t *len_out, const char *what) {
    *text_out = NULL;
    if (len_out) *len_out = 0;
    if (!b->p) sp_sb_put(b, "", 0);
    if (b->oom) {
        sp_sb_free(b);
        return sp_fail(SP_EX_SOFTWARE, "out of memory building %s", what);
    }
    *text_out = b->p;
    if (len_out) *len_out = b->len;
    *b = (sp_sb){0};
    return 0;
}

void sp_sb_free(sp_sb *b) {
    if (!b) return;
    free(b->p);
    *b = (sp_sb){0};
}
