/* io/text/textdoc.c — streaming documents out of .txt / .jsonl, optionally gzip.
 * See textdoc.h for the formats. State: a raw chunk read with pread at
 * file_pos, inflated (gzip, concatenated members allowed) or copied into the
 * line window `win`; lines are cut from `win`, documents built in `doc`. */
#include "textdoc.h"

#include "error.h"
#include "fileio.h"
#include "json.h"

#include <cjson/cJSON.h>
#include <zlib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RAW_CHUNK (1 << 20)

struct sp_textdoc {
    char *path;
    int fd;
    int64_t size, file_pos, doc_max;
    int jsonl, gzip, eof_raw, z_end;
    z_stream z;
    unsigned char *raw; /* (RAW_CHUNK) */
    /* decoded bytes not yet consumed: win[win_off .. win_n) */
    char *win;
    int64_t win_off, win_n, win_cap;
    char *doc;
    int64_t doc_n, doc_cap;
    int64_t index, line, doc_line;
};

static int reserve(char **p, int64_t *cap, int64_t need, const char *path) {
    if (need <= *cap) return 0;
    int64_t nc = *cap ? *cap : 1 << 16;
    while (nc < need) nc *= 2;
    char *q = realloc(*p, (size_t)nc);
    if (!q) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory (%lld bytes)", path, (long long)nc);
    *p = q;
    *cap = nc;
    return 0;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

int sp_textdoc_open(const char *path, int64_t doc_bytes_max, sp_textdoc **out) {
    *out = NULL;
    sp_textdoc *d = calloc(1, sizeof *d);
    if (!d) return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    d->fd = -1;
    d->doc_max = doc_bytes_max > 0 ? doc_bytes_max : SP_TEXTDOC_DOC_BYTES_MAX_DEFAULT;
    d->path = strdup(path);
    d->raw = malloc(RAW_CHUNK);
    if (!d->path || !d->raw) {
        sp_textdoc_free(d);
        return sp_fail(SP_EX_SOFTWARE, "%s: out of memory", path);
    }
    int rc = sp_io_open_read(path, &d->fd, &d->size);
    if (rc) {
        sp_textdoc_free(d);
        return rc;
    }
    char name[4096];
    snprintf(name, sizeof name, "%s", path);
    if (ends_with(name, ".gz")) name[strlen(name) - 3] = 0;
    d->jsonl = ends_with(name, ".jsonl");
    unsigned char magic[2] = {0, 0};
    if (d->size >= 2) rc = sp_io_pread_full(d->fd, magic, 2, 0, path);
    if (!rc && magic[0] == 0x1f && magic[1] == 0x8b) {
        d->gzip = 1;
        if (inflateInit2(&d->z, 15 + 16) != Z_OK) rc = sp_fail(SP_EX_SOFTWARE, "%s: zlib inflateInit failed", path);
    }
    if (rc) {
        sp_textdoc_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

void sp_textdoc_free(sp_textdoc *d) {
    if (!d) return;
    if (d->gzip) inflateEnd(&d->z);
    if (d->fd >= 0) close(d->fd);
    free(d->path);
    free(d->raw);
    free(d->win);
    free(d->doc);
    free(d);
}

/* Adds more decoded bytes to the window; sets *got = 0 at the end of input. */
static int fill(sp_textdoc *d, int *got) {
    *got = 0;
    /* compact the window */
    if (d->win_off) {
        memmove(d->win, d->win + d->win_off, (size_t)(d->win_n - d->win_off));
        d->win_n -= d->win_off;
        d->win_off = 0;
    }
    if (!d->gzip) {
        int64_t n = d->size - d->file_pos;
        if (n <= 0) return 0;
        if (n > RAW_CHUNK) n = RAW_CHUNK;
        SP_TRY(reserve(&d->win, &d->win_cap, d->win_n + n, d->path));
        SP_TRY(sp_io_pread_full(d->fd, d->win + d->win_n, n, d->file_pos, d->path));
        d->file_pos += n;
        d->win_n += n;
        *got = 1;
        return 0;
    }
    for (;;) {
        if (d->z.avail_in == 0) {
            int64_t n = d->size - d->file_pos;
            if (n <= 0) {
                if (!d->z_end) return sp_fail(SP_EX_DATAERR, "%s: truncated gzip stream", d->path);
                return 0;
            }
            if (n > RAW_CHUNK) n = RAW_CHUNK;
            SP_TRY(sp_io_pread_full(d->fd, d->raw, n, d->file_pos, d->path));
            d->file_pos += n;
            d->z.next_in = d->raw;
            d->z.avail_in = (uInt)n;
        }
        if (d->z_end) { /* another gzip member follows */
            if (inflateReset(&d->z) != Z_OK) return sp_fail(SP_EX_SOFTWARE, "%s: zlib inflateReset failed", d->path);
            d->z_end = 0;
        }
        SP_TRY(reserve(&d->win, &d->win_cap, d->win_n + RAW_CHUNK, d->path));
        d->z.next_out = (Bytef *)d->win + d->win_n;
        d->z.avail_out = RAW_CHUNK;
        int zr = inflate(&d->z, Z_NO_FLUSH);
        int64_t made = RAW_CHUNK - (int64_t)d->z.avail_out;
        d->win_n += made;
        if (zr == Z_STREAM_END) d->z_end = 1;
        else if (zr != Z_OK && zr != Z_BUF_ERROR)
            return sp_fail(SP_EX_DATAERR, "%s: corrupt gzip stream near compressed byte %lld: %s", d->path, (long long)d->file_pos,
                           d->z.msg ? d->z.msg : "inflate error");
        if (made) {
            *got = 1;
            return 0;
        }
    }
}

/* The next line (without its '\n'; a '\r' before it is kept) in *s, *n;
 * *term is the terminator length (0 at the end of the file without one).
 * Returns 0 and *s = NULL at the end. Valid until the next call. */
static int next_line(sp_textdoc *d, const char **s, int64_t *n, int *term) {
    for (;;) {
        char *b = d->win + d->win_off;
        int64_t avail = d->win_n - d->win_off;
        char *nl = avail ? memchr(b, '\n', (size_t)avail) : NULL;
        if (nl) {
            *s = b;
            *n = nl - b;
            *term = 1;
            d->win_off += *n + 1;
            d->line++;
            return 0;
        }
        if (avail > d->doc_max)
            return sp_fail(SP_EX_DATAERR, "%s: line %lld is longer than %lld bytes", d->path, (long long)d->line + 1, (long long)d->doc_max);
        int got;
        SP_TRY(fill(d, &got));
        if (!got) {
            b = d->win + d->win_off;
            avail = d->win_n - d->win_off;
            if (!avail) {
                *s = NULL;
                return 0;
            }
            *s = b;
            *n = avail;
            *term = 0;
            d->win_off += avail;
            d->line++;
            return 0;
        }
    }
}

static int blank(const char *s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

static int doc_add(sp_textdoc *d, const char *s, int64_t n) {
    if (d->doc_n + n > d->doc_max)
        return sp_fail(SP_EX_DATAERR, "%s: document %lld (from line %lld) is longer than %lld bytes", d->path, (long long)d->index + 1,
                       (long long)d->doc_line, (long long)d->doc_max);
    SP_TRY(reserve(&d->doc, &d->doc_cap, d->doc_n + n + 1, d->path));
    memcpy(d->doc + d->doc_n, s, (size_t)n);
    d->doc_n += n;
    d->doc[d->doc_n] = 0;
    return 0;
}

static int next_jsonl(sp_textdoc *d, const char **text, int64_t *len, int *done) {
    for (;;) {
        const char *s;
        int64_t n;
        int term;
        SP_TRY(next_line(d, &s, &n, &term));
        if (!s) {
            *done = 1;
            return 0;
        }
        if (blank(s, n)) continue;
        /* the one strict reader: one object per line, keys unescaped and unique, "\u0000" kept */
        char what[48];
        snprintf(what, sizeof what, "line %lld", (long long)d->line);
        cJSON *j;
        SP_TRY(sp_json_parse(d->path, what, s, n, SP_JSON_NUL_OK, &j));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        int rc = cJSON_IsObject(j) && cJSON_IsString(t)
                     ? 0
                     : sp_fail(SP_EX_DATAERR, "%s: line %lld: %s", d->path, (long long)d->line,
                               cJSON_IsObject(j) ? "no string field \"text\"" : "not a JSON object");
        d->doc_n = 0;
        d->doc_line = d->line;
        if (!rc) rc = doc_add(d, t->valuestring, sp_json_strlen(t));
        cJSON_Delete(j);
        SP_TRY(rc);
        d->index++;
        *text = d->doc;
        *len = d->doc_n;
        return 0;
    }
}

static int next_txt(sp_textdoc *d, const char **text, int64_t *len, int *done) {
    d->doc_n = 0;
    int have = 0, pending_term = 0;
    char term_buf[2];
    for (;;) {
        const char *s;
        int64_t n;
        int term;
        SP_TRY(next_line(d, &s, &n, &term));
        if (!s) break;
        if (blank(s, n)) {
            if (have) break;
            continue;
        }
        if (!have) d->doc_line = d->line;
        if (have) SP_TRY(doc_add(d, term_buf, pending_term));
        /* the line's own '\r' before '\n' belongs to its terminator */
        int64_t body = n;
        int cr = term && body > 0 && s[body - 1] == '\r';
        if (cr) body--;
        SP_TRY(doc_add(d, s, body));
        pending_term = 0;
        if (cr) term_buf[pending_term++] = '\r';
        term_buf[pending_term++] = '\n';
        have = 1;
    }
    if (!have) {
        *done = 1;
        return 0;
    }
    d->index++;
    *text = d->doc;
    *len = d->doc_n;
    return 0;
}

int sp_textdoc_next(sp_textdoc *d, const char **text, int64_t *len, int *done) {
    *text = NULL;
    *len = 0;
    *done = 0;
    return d->jsonl ? next_jsonl(d, text, len, done) : next_txt(d, text, len, done);
}

int64_t sp_textdoc_index(const sp_textdoc *d) { return d->index; }
int64_t sp_textdoc_line(const sp_textdoc *d) { return d->doc_line; }
int64_t sp_textdoc_file_pos(const sp_textdoc *d) { return d->file_pos; }
int64_t sp_textdoc_file_size(const sp_textdoc *d) { return d->size; }
int sp_textdoc_is_jsonl(const sp_textdoc *d) { return d->jsonl; }
int sp_textdoc_is_gzip(const sp_textdoc *d) { return d->gzip; }
