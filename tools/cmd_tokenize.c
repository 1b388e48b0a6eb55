/* tools/cmd_tokenize.c — `slicepipe tokenize MODEL_DIR FILE -o OUT.npy`:
 * text documents to a 1-D int32 .npy token stream, each document encoded
 * with the tokenizer's own BOS/EOS rule. Streams: one document and one
 * chunk of ids in memory. The output is written to OUT.npy.tmp, fsynced and
 * renamed, so a partial file is never left under the final name. */
#include "error.h"
#include "fileio.h"
#include "textdoc.h"
#include "tokenizer.h"
#include "tokens.h"


#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FLUSH_IDS (1 << 20) /* ids buffered before a write */
#define NPY_HEAD_BYTES 128  /* sp_npy_header's length for any 1-D int64 count */

int sp_cmd_tokenize(int argc, char **argv); /* called by tools/slicepipe.c */

static void usage_tokenize(FILE *f) {
    fprintf(f,
            "usage: slicepipe tokenize MODEL_DIR FILE -o OUT.npy [options]\n"
            "\n"
            "Tokenizes the documents of FILE into a 1-D int32 .npy token stream, each\n"
            "document with the tokenizer's own BOS/EOS rule. MODEL_DIR is a model folder\n"
            "(its tokenizer.json, else tokenizer.model, else llama2.c tokenizer.bin) or\n"
            "one tokenizer file.\n"
            "\n"
            "FILE: .jsonl (a \"text\" field per line) or plain text (documents separated\n"
            "by blank lines); either may be gzip-compressed.\n"
            "\n"
            "  -o, --output OUT.npy   the token file (written atomically)\n"
            "  --no-special           no BOS/EOS around documents\n"
            "  --max-doc-bytes N      refuse documents longer than N bytes (default 256MiB)\n"
            "  --decoded F.jsonl      also write each document's ids decoded back to text, one\n"
            "                         {\"text\": ...} per line (special tokens skipped, but\n"
            "                         kept with --no-special)\n"
            "  --quiet                no progress line\n");
}

static int write_ids(int fd, const sp_tok_ids *b, const char *path) {
    return sp_io_write_full(fd, b->ids, b->n * (int64_t)sizeof(int32_t), path);
}

/* One {"text": ...} line; escaped here (not with cJSON) so that a NUL in the
 * decoded text survives. */
static int write_decoded(FILE *f, const char *path, const char *s, int64_t n) {
    int bad = fputs("{\"text\": \"", f) < 0;
    for (int64_t i = 0; i < n && !bad; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') bad = fprintf(f, "\\%c", c) < 0;
        else if (c == '\n') bad = fputs("\\n", f) < 0;
        else if (c < 0x20 || c == 0x7f) bad = fprintf(f, "\\u%04x", c) < 0;
        else bad = fputc(c, f) < 0;
    }
    if (!bad) bad = fputs("\"}\n", f) < 0;
    if (bad) return sp_fail_errno(SP_EX_IOERR, "%s: write", path);
    return 0;
}

static void progress(const sp_textdoc *d, int64_t tokens, double t0, int final) {
    double dt = sp_now() - t0;
    int64_t pos = sp_textdoc_file_pos(d), size = sp_textdoc_file_size(d);
    fprintf(stderr, "\rtokenize: %.1f / %.1f MiB (%3.0f%%), %lld documents, %lld tokens, %.0f tokens/s%s",
            (double)pos / (1 << 20), (double)size / (1 << 20), size ? 100.0 * (double)pos / (double)size : 100.0,
            (long long)sp_textdoc_index(d), (long long)tokens, dt > 0 ? (double)tokens / dt : 0.0, final ? "\n" : "");
    fflush(stderr);
}

static int run(sp_tok *tok, const char *in, const char *out, const char *decoded, int special, int quiet, int64_t max_doc) {
    sp_textdoc *d;
    SP_TRY(sp_textdoc_open(in, max_doc, &d));
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", out) >= (int)sizeof tmp) {
        sp_textdoc_free(d);
        return sp_fail(SP_EX_CANTCREAT, "%s: path too long", out);
    }
    int fd;
    int crc = sp_io_create(tmp, 0644, &fd); /* never through a planted link */
    if (crc) {
        sp_textdoc_free(d);
        return crc;
    }
    FILE *df = NULL;
    if (decoded && !(df = fopen(decoded, "w"))) {
        close(fd);
        unlink(tmp);
        sp_textdoc_free(d);
        return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create", decoded);
    }
    char head[256];
    int hl = sp_npy_header(head, "<i4", 0, -1);
    SP_ASSERT(hl == NPY_HEAD_BYTES);
    int rc = sp_io_write_full(fd, head, hl, tmp);
    sp_tok_ids buf = {0};
    sp_tok_text txt = {0};
    int64_t total = 0, bytes_in = 0;
    double t0 = sp_now(), last = t0;
    while (!rc) {
        const char *s;
        int64_t n;
        int done;
        rc = sp_textdoc_next(d, &s, &n, &done);
        if (rc || done) break;
        int64_t before = buf.n;
        rc = sp_tok_encode(tok, s, n, special, &buf);
        if (rc) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", sp_errmsg());
            rc = sp_fail(rc, "%s: document %lld (line %lld): %s", in, (long long)sp_textdoc_index(d), (long long)sp_textdoc_line(d), msg);
            break;
        }
        bytes_in += n;
        total += buf.n - before;
        if (df) {
            txt.n = 0;
            rc = sp_tok_decode(tok, buf.ids + before, buf.n - before, special, &txt);
            if (!rc) rc = write_decoded(df, decoded, txt.s ? txt.s : "", txt.n);
        }
        if (!rc && buf.n >= FLUSH_IDS) {
            rc = write_ids(fd, &buf, tmp);
            buf.n = 0;
        }
        if (!quiet && sp_now() - last > 0.5) {
            last = sp_now();
            progress(d, total, t0, 0);
        }
    }
    if (!rc) rc = write_ids(fd, &buf, tmp);
    if (!rc) {
        hl = sp_npy_header(head, "<i4", total, -1);
        SP_ASSERT(hl == NPY_HEAD_BYTES);
        rc = sp_io_pwrite_full(fd, head, hl, 0, tmp);
    }
    if (!rc) rc = sp_io_fsync(fd, tmp);
    close(fd);
    if (df && fclose(df) != 0 && !rc) rc = sp_fail_errno(SP_EX_IOERR, "%s: write", decoded);
    if (!rc && rename(tmp, out) != 0) rc = sp_fail_errno(SP_EX_CANTCREAT, "%s: rename", out);
    if (!rc) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", out);
        rc = sp_io_fsync_dir(dirname(dir));
    }
    if (rc) unlink(tmp);
    double dt = sp_now() - t0;
    if (!rc && !quiet) {
        progress(d, total, t0, 1);
        fprintf(stderr, "tokenize: %lld documents, %lld tokens from %.2f MB of text in %.2f s: %.0f tokens/s, %.2f MB/s -> %s\n",
                (long long)sp_textdoc_index(d), (long long)total, (double)bytes_in / 1e6, dt, dt > 0 ? (double)total / dt : 0.0,
                dt > 0 ? (double)bytes_in / 1e6 / dt : 0.0, out);
    }
    sp_tok_ids_free(&buf);
    sp_tok_text_free(&txt);
    sp_textdoc_free(d);
    return rc;
}

int sp_cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},   {"no-special", no_argument, 0, 'n'},
                                         {"quiet", no_argument, 0, 'q'},          {"decoded", required_argument, 0, 'D'},
                                         {"max-doc-bytes", required_argument, 0, 'M'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *decoded = NULL;
    int special = 1, quiet = 0;
    int64_t max_doc = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': out = optarg; break;
        case 'n': special = 0; break;
        case 'q': quiet = 1; break;
        case 'D': decoded = optarg; break;
        case 'M': {
            char *end;
            long long v = strtoll(optarg, &end, 10);
            if (!*optarg || *end || v <= 0) return sp_fail(SP_EX_USAGE, "--max-doc-bytes: expected a positive integer, got '%s'", optarg);
            max_doc = v;
            break;
        }
        case 'h': usage_tokenize(stdout); return 0;
        default: usage_tokenize(stderr); return SP_EX_USAGE;
        }
    }
    if (optind != argc - 2 || !out) {
        usage_tokenize(stderr);
        return sp_fail(SP_EX_USAGE, "tokenize needs MODEL_DIR, FILE and -o OUT.npy");
    }
    const char *model = argv[optind], *in = argv[optind + 1];
    struct stat st;
    if (stat(model, &st) != 0) return sp_fail(SP_EX_NOINPUT, "%s: no such file or directory", model);
    sp_tok *tok;
    SP_TRY(S_ISDIR(st.st_mode) ? sp_tok_open(model, &tok) : sp_tok_open_file(model, &tok));
    if (!quiet)
        fprintf(stderr, "tokenize: %s: %s, vocab %lld, BOS %s, EOS %s, xxh128 %s\n", sp_tok_path(tok), sp_tok_kind_name(tok),
                (long long)sp_tok_vocab_size(tok), special && sp_tok_adds_bos(tok) ? "added" : "not added",
                special && sp_tok_adds_eos(tok) ? "added" : "not added", sp_tok_hash(tok));
    int rc = run(tok, in, out, decoded, special, quiet, max_doc);
    sp_tok_free(tok);
    return rc;
}
