/* io/text/mctask.c — multiple-choice task files (see mctask.h). */
#include "mctask.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileio.h"
#include "json.h"
#include "utf8.h"

int sp_mctask_is_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/* The code point that ends at s[end-1] (valid UTF-8), its first byte in *start. */
static uint32_t last_cp(const char *s, int64_t end, int64_t *start) {
    int64_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    const unsigned char *u = (const unsigned char *)s + i;
    uint32_t cp;
    if (u[0] < 0x80) cp = u[0];
    else if (u[0] < 0xE0) cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    else if (u[0] < 0xF0) cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    else cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    *start = i;
    return cp;
}

/* The code point starting at s[i] (valid UTF-8) and its byte length. */
static uint32_t next_cp(const char *s, int64_t i, int *len) {
    const unsigned char *u = (const unsigned char *)s + i;
    if (u[0] < 0x80) { *len = 1; return u[0]; }
    if (u[0] < 0xE0) { *len = 2; return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F); }
    if (u[0] < 0xF0) { *len = 3; return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F); }
    *len = 4;
    return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
}

int64_t sp_mctask_rstrip_bytes(const char *s, int64_t n) {
    int64_t end = n;
    while (end > 0) {
        int64_t st;
        if (!sp_mctask_is_space(last_cp(s, end, &st))) break;
        end = st;
    }
    return n - end;
}

int64_t sp_mctask_chars(const char *s, int64_t n) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

void sp_mctask_hellaswag_pre(char *s) {
    int64_t n = (int64_t)strlen(s);
    /* strip */
    n -= sp_mctask_rstrip_bytes(s, n);
    s[n] = 0;
    int64_t b = 0;
    while (b < n) {
        int l;
        if (!sp_mctask_is_space(next_cp(s, b, &l))) break;
        b += l;
    }
    memmove(s, s + b, (size_t)(n - b + 1));
    n -= b;
    /* " [title]" -> ". " (never longer: 8 bytes become 2) */
    int64_t o = 0;
    for (int64_t i = 0; i < n;) {
        if (!strncmp(s + i, " [title]", 8)) {
            s[o++] = '.';
            s[o++] = ' ';
            i += 8;
        } else s[o++] = s[i++];
    }
    s[o] = 0;
    n = o;
    /* re.sub("\[.*?\]", "") : a '[' up to the nearest ']' after it (no newline inside a line) */
    o = 0;
    for (int64_t i = 0; i < n;) {
        if (s[i] == '[') {
            const char *close = memchr(s + i + 1, ']', (size_t)(n - i - 1));
            if (close) {
                i = close - s + 1;
                continue;
            }
        }
        s[o++] = s[i++];
    }
    s[o] = 0;
    n = o;
    /* "  " -> " ", left to right, not overlapping (str.replace) */
    o = 0;
    for (int64_t i = 0; i < n;) {
        if (s[i] == ' ' && i + 1 < n && s[i + 1] == ' ') {
            s[o++] = ' ';
            i += 2;
        } else s[o++] = s[i++];
    }
    s[o] = 0;
}

void sp_mctask_free(sp_mctask *t) {
    if (!t) return;
    for (int64_t i = 0; i < t->n_items; i++) {
        sp_mctask_item *it = &t->items[i];
        free(it->context);
        free(it->delim);
        for (int64_t c = 0; c < it->n_choices; c++) free(it->choice[c]);
        free(it->choice);
    }
    free(t->items);
    free(t->path);
    free(t);
}

static int dup_str(const char *s, int64_t n, char **out) {
    SP_TRY(sp_alloc((void **)out, n + 1, 1, "task text"));
    memcpy(*out, s, (size_t)n);
    (*out)[n] = 0;
    return 0;
}

static int push_item(sp_mctask *t, int64_t *cap) {
    if (t->n_items == *cap) {
        int64_t nc = *cap ? *cap * 2 : 256;
        sp_mctask_item *ni = realloc(t->items, (size_t)nc * sizeof *ni);
        if (!ni) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory for %lld items", t->path, (long long)nc);
        t->items = ni;
        *cap = nc;
    }
    memset(&t->items[t->n_items], 0, sizeof t->items[0]);
    t->n_items++;
    return 0;
}

/* One JSONL line into item it. */
static int jsonl_item(const sp_mctask *t, const char *s, int64_t n, int64_t line, sp_mctask_item *it) {
    char what[48];
    snprintf(what, sizeof what, "line %lld", (long long)line);
    cJSON *j = NULL;
    SP_TRY(sp_json_parse(t->path, what, s, n, 0, &j));
    int rc = 0;
    const char *P = t->path;
    long long L = (long long)line;
    if (!cJSON_IsObject(j)) {
        rc = sp_fail(SP_EX_DATAERR, "%s:%lld: an item must be a JSON object {\"context\", \"choices\", \"gold\"}", P, L);
        goto out;
    }
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(j, "context");
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "choices");
    const cJSON *gold = cJSON_GetObjectItemCaseSensitive(j, "gold");
    const cJSON *del = cJSON_GetObjectItemCaseSensitive(j, "target_delimiter");
    if (!ctx || !cJSON_IsString(ctx)) {
        rc = sp_fail(SP_EX_DATAERR, "%s:%lld: \"context\" %s", P, L, ctx ? "must be a string" : "is missing");
        goto out;
    }
    if (!ch || !cJSON_IsArray(ch)) {
        rc = sp_fail(SP_EX_DATAERR, "%s:%lld: \"choices\" %s", P, L, ch ? "must be an array of strings" : "is missing");
        goto out;
    }
    int nc = cJSON_GetArraySize(ch);
    if (nc < 2 || nc > SP_MCTASK_CHOICES_MAX) {
        rc = sp_fail(SP_EX_DATAERR, "%s:%lld: \"choices\" has %d entries; an item needs 2 to %d", P, L, nc,
                     SP_MCTASK_CHOICES_MAX);
        goto out;
    }
    if (!gold || !cJSON_IsNumber(gold)) {
        rc = sp_fail(SP_EX_DATAERR, "%s:%lld: \"gold\" %s", P, L, gold ? "must be an integer index into \"choices\"" : "is missing");
        goto out;
    }
    double g = gold->valuedouble;
    if (!(g >= 0 && g < nc) || floor(g) != g) {
        rc = sp_fail(SP_EX_DATAERR, "%s:%lld: \"gold\" %.17g is not an index into the %d choices (0..%d)", P, L, g, nc,
                     nc - 1);
        goto out;
    }
    if (del && !cJSON_IsString(del)) {
        rc = sp_fail(SP_EX_DATAERR, "%s:%lld: \"target_delimiter\" must be a string", P, L);
        goto out;
    }
    it->line = line;
    it->gold = (int64_t)g;
    rc = dup_str(ctx->valuestring, (int64_t)strlen(ctx->valuestring), &it->context);
    if (!rc) rc = del ? dup_str(del->valuestring, (int64_t)strlen(del->valuestring), &it->delim) : dup_str(" ", 1, &it->delim);
    if (!rc) rc = sp_calloc((void **)&it->choice, nc, (int64_t)sizeof(char *), "task choices");
    if (rc) goto out;
    it->n_choices = nc;
    for (int c = 0; c < nc; c++) {
        const cJSON *e = cJSON_GetArrayItem(ch, c);
        if (!cJSON_IsString(e)) {
            rc = sp_fail(SP_EX_DATAERR, "%s:%lld: choice %d must be a string", P, L, c);
            goto out;
        }
        if (!e->valuestring[0]) {
            rc = sp_fail(SP_EX_DATAERR, "%s:%lld: choice %d is empty (acc_norm divides by its length)", P, L, c);
            goto out;
        }
        rc = dup_str(e->valuestring, (int64_t)strlen(e->valuestring), &it->choice[c]);
        if (rc) goto out;
    }
out:
    cJSON_Delete(j);
    return rc;
}

/* A copy of one text line (no line ending, no '\r'), checked for UTF-8 and NUL. */
static int text_line(const sp_mctask *t, const char *s, int64_t n, int64_t line, char **out) {
    if (memchr(s, 0, (size_t)n))
        return sp_fail(SP_EX_DATAERR, "%s:%lld: a NUL byte in a text line", t->path, (long long)line);
    int64_t bad = sp_utf8_invalid_at(s, n);
    if (bad >= 0)
        return sp_fail(SP_EX_DATAERR, "%s:%lld: invalid UTF-8 at byte %lld of the line", t->path, (long long)line,
                       (long long)bad);
    return dup_str(s, n, out);
}

static int hellaswag_gold(const sp_mctask *t, const char *s, int64_t line, int64_t *gold) {
    if (s[0] >= '0' && s[0] <= '3' && s[1] == 0) {
        *gold = s[0] - '0';
        return 0;
    }
    return sp_fail(SP_EX_DATAERR, "%s:%lld: the gold line of a HellaSwag task must be 0, 1, 2 or 3, got '%.40s'", t->path,
                   (long long)line, s);
}

int sp_mctask_load(const char *path, int64_t limit, sp_mctask **out) {
    *out = NULL;
    sp_mctask *t = NULL;
    char *buf = NULL;
    char *hs[6] = {0}; /* the HellaSwag task being read */
    int64_t len = 0, cap = 0;
    SP_TRY(sp_calloc((void **)&t, 1, (int64_t)sizeof *t, "task"));
    int rc = dup_str(path, (int64_t)strlen(path), &t->path);
    if (!rc) rc = sp_io_read_small(path, SP_MCTASK_FILE_BYTES_MAX, &buf, &len);
    if (rc) goto fail;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(t->name, sizeof t->name, "%s", base);
    char *dot = strrchr(t->name, '.');
    if (dot && dot != t->name) *dot = 0;
    size_t pl = strlen(path);
    if (pl >= 6 && !strcmp(path + pl - 6, ".jsonl")) t->format = SP_MCTASK_FORMAT_JSONL;
    else if (pl >= 4 && !strcmp(path + pl - 4, ".txt")) t->format = SP_MCTASK_FORMAT_HELLASWAG;
    else {
        int64_t i = 0;
        while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n')) i++;
        t->format = i < len && buf[i] == '{' ? SP_MCTASK_FORMAT_JSONL : SP_MCTASK_FORMAT_HELLASWAG;
    }

    int nhs = 0;
    int64_t hs_line = 0, line = 0;
    for (int64_t p = 0; p < len && (limit <= 0 || t->n_items < limit);) {
        const char *nl = memchr(buf + p, '\n', (size_t)(len - p));
        int64_t e = nl ? nl - buf : len, n = e - p;
        const char *s = buf + p;
        p = e + 1;
        line++;
        if (n > 0 && s[n - 1] == '\r') n--;
        if (t->format == SP_MCTASK_FORMAT_JSONL) {
            int blank = 1;
            for (int64_t i = 0; i < n && blank; i++) blank = s[i] == ' ' || s[i] == '\t';
            if (blank) continue;
            rc = push_item(t, &cap);
            if (!rc) rc = jsonl_item(t, s, n, line, &t->items[t->n_items - 1]);
            if (rc) goto fail;
            continue;
        }
        if (nhs == 0) hs_line = line;
        rc = text_line(t, s, n, line, &hs[nhs]);
        if (rc) goto fail;
        nhs++;
        if (nhs < 6) continue;
        nhs = 0;
        int64_t gold = 0;
        rc = hellaswag_gold(t, hs[1], hs_line + 1, &gold);
        if (!rc) rc = push_item(t, &cap);
        if (rc) goto fail;
        sp_mctask_item *it = &t->items[t->n_items - 1];
        it->line = hs_line;
        it->gold = gold;
        rc = dup_str(" ", 1, &it->delim);
        if (!rc) rc = sp_calloc((void **)&it->choice, 4, (int64_t)sizeof(char *), "task choices");
        if (rc) goto fail;
        it->context = hs[0];
        free(hs[1]);
        hs[0] = hs[1] = NULL;
        sp_mctask_hellaswag_pre(it->context);
        it->n_choices = 4;
        for (int c = 0; c < 4; c++) {
            it->choice[c] = hs[2 + c];
            hs[2 + c] = NULL;
            sp_mctask_hellaswag_pre(it->choice[c]);
            if (!it->choice[c][0]) {
                rc = sp_fail(SP_EX_DATAERR, "%s:%lld: ending %d is empty after HellaSwag's preprocessing", path,
                             (long long)(hs_line + 2 + c), c);
                goto fail;
            }
        }
    }
    if (nhs > 0) {
        rc = sp_fail(SP_EX_DATAERR, "%s:%lld: a HellaSwag task is cut off after %d of its 6 lines (context, gold, 4 endings)",
                     path, (long long)hs_line, nhs);
        goto fail;
    }
    if (t->n_items == 0) {
        rc = sp_fail(SP_EX_DATAERR, "%s: no items (%s format)", path,
                     t->format == SP_MCTASK_FORMAT_JSONL ? "JSONL" : "HellaSwag text");
        goto fail;
    }
    free(buf);
    *out = t;
    return 0;
fail:
    for (int i = 0; i < 6; i++) free(hs[i]);
    free(buf);
    sp_mctask_free(t);
    return rc;
}
