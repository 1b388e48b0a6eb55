/* tests/test_text_windows.c — a thin driver for tests/test_text.py: cuts the
 * windows of pipeline/model/calib.c from a text file and writes them as one int32
 * .npy, so the Python test can compare them with its own reimplementation.
 *
 *   test_text_windows TEXT TOKDIR SEQLEN NSAMPLES first|random SEED VOCAB OUT.npy
 *   test_text_windows --prng SEED RANGE COUNT     (prints COUNT draws, one a line)
 *
 * NSAMPLES 0 = every full window (the eval rule). VOCAB 0 = unchecked. Exit
 * status: sp_calib_text_windows's (its message on stderr), or 0. */
#include "calib.h"
#include "error.h"
#include "npy.h"
#include "tokens.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t num(const char *s) {
    char *e;
    long long v = strtoll(s, &e, 10);
    if (!*s || *e) {
        fprintf(stderr, "test_text_windows: bad number '%s'\n", s);
        exit(SP_EX_USAGE);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "--prng") == 0) {
        uint64_t st = strtoull(argv[2], NULL, 10);
        uint64_t range = strtoull(argv[3], NULL, 10);
        for (int64_t k = 0, n = num(argv[4]); k < n; k++) printf("%" PRIu64 "\n", sp_calib_uniform(&st, range));
        return 0;
    }
    if (argc != 9) {
        fprintf(stderr, "usage: test_text_windows TEXT TOKDIR SEQLEN NSAMPLES first|random SEED VOCAB OUT.npy\n");
        return SP_EX_USAGE;
    }
    sp_calib_opts o = {.seqlen = num(argv[3]),
                       .nsamples = num(argv[4]),
                       .sampling = strcmp(argv[5], "random") == 0 ? SP_CALIB_SAMPLING_RANDOM : SP_CALIB_SAMPLING_FIRST,
                       .seed = strtoull(argv[6], NULL, 10),
                       .vocab = num(argv[7]),
                       .what = "[calibration] text",
                       .progress = 1};
    sp_tokens t;
    char hash[33];
    int rc = sp_calib_text_windows(argv[1], argv[2], &o, &t, hash);
    if (rc) {
        fprintf(stderr, "%s\n", sp_errmsg());
        return rc;
    }
    rc = sp_npy_write(argv[8], "<i4", t.ids, t.n, 0, SP_IO_OUT_REPLACE, NULL);
    if (rc) fprintf(stderr, "%s\n", sp_errmsg());
    else fprintf(stderr, "tokenizer xxh128 %s\n", hash);
    sp_tokens_free(&t);
    return rc;
}
