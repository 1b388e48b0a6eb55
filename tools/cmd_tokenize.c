/* tools/cmd_tokenize.c — `slicepipe tokenize MODEL_DIR FILE -o OUT.npy`:
 * text documents to a 1-D int32 .npy token stream, each document encoded
 * with the tokenizer's own BOS/EOS rule. Streams: one document and one
 * chunk of ids in memory. OUT.npy (io/formats/npy.h) and --decoded are single-file
 * outputs (io/base/fileio.h sp_io_out_begin): never over an input, written to a
 * temporary of their own and renamed only when complete. */
#include "error.h"
#include "fileio.h"
#include "npy.h"
#include "textdoc.h"
#include "tokenizer.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FLUSH_IDS (1 << 20)      /* ids buffered before a write */
#define FLUSH_TEXT_BYTES (1 << 20) /* decoded text buffered before a write */

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
            "  --max-doc-bytes N      refuse documents longer than N bytes, as read and as the\n"
            "                         tokenizer's normalizers make them (default 256MiB)\n"
            "  --decoded F.jsonl      also write each document's ids decoded back to text, one\n"
            "                         {\"text\": ...} per line (special tokens skipped, but\n"
            "                         kept with --no-special)\n"
            "  --force                replace an existing OUT.npy or F.jsonl (without it an\n"
            "                         existing file there is refused: slicepipe never replaces\n"
            "                         a file it did not write)\n"
            "  --quiet                no progress line\n");
}

/* One {"text": ...} line appended to b; escaped here (not with cJSON) so that
 * a NUL in the decoded text survives. */
static int decoded_line(sp_tok_text *b, const char *s, int64_t n) {
    SP_TRY(sp_tok_text_append(b, "{\"text\": \"", 10));
    int64_t plain = 0; /* s[plain, i) needs no escape */
    for (int64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        int k = c == '"' || c == '\\' ? snprintf(e, sizeof e, "\\%c", c)
                : c == '\n'             ? snprintf(e, sizeof e, "\\n")
                : c < 0x20 || c == 0x7f ? snprintf(e, sizeof e, "\\u%04x", c)
                                        : 0;
        if (!k) continue;
        SP_TRY(sp_tok_text_append(b, s + plain, i - plain));
        SP_TRY(sp_tok_text_append(b, e, k));
        plain = i + 1;
    }
    SP_TRY(sp_tok_text_append(b, s + plain, n - plain));
    return sp_tok_text_append(b, "\"}\n", 3);
}

static void progress(const sp_textdoc *d, int64_t tokens, double t0, int final) {
    double dt = sp_now() - t0;
    int64_t pos = sp_textdoc_file_pos(d), size = sp_textdoc_file_size(d);
    fprintf(stderr, "\rtokenize: %.1f / %.1f MiB (%3.0f%%), %lld documents, %lld tokens, %.0f tokens/s%s",
            (double)pos / (1 << 20), (double)size / (1 << 20), size ? 100.0 * (double)pos / (double)size : 100.0,
            (long long)sp_textdoc_index(d), (long long)tokens, dt > 0 ? (double)tokens / dt : 0.0, final ? "\n" : "");
    fflush(stderr);
}

static int run(sp_tok *tok, const char *in, const char *out, const char *decoded, int special, int quiet, int64_t max_doc,
               int out_flags) {
    sp_textdoc *d;
    SP_TRY(sp_textdoc_open(in, max_doc, &d));
    /* Both outputs are begun before any work: never over the tokenizer, the
     * input or each other. */
    sp_io_paths *taken = NULL;
    sp_npy_out *npy = NULL;
    int dfd = -1;
    char *dtmp = NULL;
    int rc = sp_io_paths_add(&taken, sp_tok_path(tok), 0);
    if (!rc) rc = sp_io_paths_add(&taken, in, 0);
    if (!rc) rc = sp_npy_out_begin(out, "<i4", 0, out_flags, &taken, &npy);
    if (!rc && decoded) rc = sp_io_out_begin(decoded, out_flags, &taken, &dfd, &dtmp);
    sp_io_paths_free(taken);
    sp_tok_ids buf = {0};
    sp_tok_text txt = {0}, lines = {0};
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
        if (dtmp) {
            txt.n = 0;
            rc = sp_tok_decode(tok, buf.ids + before, buf.n - before, special, &txt);
            if (!rc) rc = decoded_line(&lines, txt.s ? txt.s : "", txt.n);
            if (!rc && lines.n >= FLUSH_TEXT_BYTES) {
                rc = sp_io_write_full(dfd, lines.s, lines.n, dtmp);
                lines.n = 0;
            }
        }
        if (!rc && buf.n >= FLUSH_IDS) {
            rc = sp_npy_out_write(npy, buf.ids, buf.n);
            buf.n = 0;
        }
        if (!quiet && sp_now() - last > 0.5) {
            last = sp_now();
            progress(d, total, t0, 0);
        }
    }
    if (!rc) rc = sp_npy_out_write(npy, buf.ids, buf.n);
    if (!rc && dtmp) rc = sp_io_write_full(dfd, lines.s, lines.n, dtmp);
    int rc_npy = sp_npy_out_end(npy, rc == 0);
    if (!rc) rc = rc_npy;
    if (dtmp) {
        int rc_dec = sp_io_atomic_commit(dfd, dtmp, decoded, rc == 0);
        if (!rc) rc = rc_dec;
    }
    double dt = sp_now() - t0;
    if (!rc && !quiet) {
        progress(d, total, t0, 1);
        fprintf(stderr, "tokenize: %lld documents, %lld tokens from %.2f MB of text in %.2f s: %.0f tokens/s, %.2f MB/s -> %s\n",
                (long long)sp_textdoc_index(d), (long long)total, (double)bytes_in / 1e6, dt, dt > 0 ? (double)total / dt : 0.0,
                dt > 0 ? (double)bytes_in / 1e6 / dt : 0.0, out);
    }
    sp_tok_ids_free(&buf);
    sp_tok_text_free(&txt);
    sp_tok_text_free(&lines);
    sp_textdoc_free(d);
    return rc;
}

int sp_cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},   {"no-special", no_argument, 0, 'n'},
                                         {"quiet", no_argument, 0, 'q'},          {"decoded", required_argument, 0, 'D'},
                                         {"max-doc-bytes", required_argument, 0, 'M'}, {"help", no_argument, 0, 'h'},
                                         {"force", no_argument, 0, 'F'},          {0, 0, 0, 0}};
    const char *out = NULL, *decoded = NULL;
    int special = 1, quiet = 0, out_flags = 0;
    int64_t max_doc = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': out = optarg; break;
        case 'n': special = 0; break;
        case 'q': quiet = 1; break;
        case 'D': decoded = optarg; break;
        case 'F': out_flags = SP_IO_OUT_REPLACE; break;
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
    sp_tok_set_text_max(tok, max_doc); /* the raw text and what the normalizers make of it */
    if (!quiet)
        fprintf(stderr, "tokenize: %s: %s, vocab %lld, BOS %s, EOS %s, xxh128 %s\n", sp_tok_path(tok), sp_tok_kind_name(tok),
                (long long)sp_tok_vocab_size(tok), special && sp_tok_adds_bos(tok) ? "added" : "not added",
                special && sp_tok_adds_eos(tok) ? "added" : "not added", sp_tok_hash(tok));
    int rc = run(tok, in, out, decoded, special, quiet, max_doc, out_flags);
    sp_tok_free(tok);
    return rc;
}
