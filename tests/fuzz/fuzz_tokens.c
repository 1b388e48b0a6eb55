/* tests/fuzz/fuzz_tokens.c — libFuzzer target for the .npy token-stream reader
 * (io/formats/tokens.c, sp_tokens_load).
 *
 * Each input is written as DIR/tokens.npy in a per-process scratch folder
 * (fuzz_tmp.h) and loaded twice: whole with no vocab check (vocab 0, max_n 0),
 * then the first FUZZ_MAX_N ids against a vocab of FUZZ_VOCAB. Bad input must
 * only ever produce a status (65; 70 for an allocation failure) with a message
 * and leave *out zeroed. A stream that loads has n >= 1 ids in [0, vocab); the
 * second load succeeds exactly when the first did and every id is < FUZZ_VOCAB,
 * and then returns the first load's prefix. Any crash, sanitizer report, leak
 * or SP_ASSERT is a bug.
 *
 * Build and run: see tests/fuzz/README.md.
 */
#include "error.h"
#include "fuzz_tmp.h"
#include "tokens.h"

#include <stdint.h>
#include <string.h>

#define FUZZ_VOCAB 512
#define FUZZ_MAX_N 7

static void check_failed(int rc, const sp_tokens *t, const char *path) {
    SP_ASSERT(rc == SP_EX_DATAERR || rc == SP_EX_SOFTWARE);
    SP_ASSERT(strstr(sp_errmsg(), path) != NULL);
    SP_ASSERT(t->ids == NULL && t->n == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_tmp_path("tokens.npy");
    fuzz_tmp_write(path, data, size);

    sp_tokens all, few;
    sp_err_clear();
    int rc = sp_tokens_load(path, 0, 0, &all);
    if (rc) {
        check_failed(rc, &all, path);
        sp_err_clear();
        rc = sp_tokens_load(path, FUZZ_VOCAB, FUZZ_MAX_N, &few); /* the file is validated whole either way */
        SP_ASSERT(rc != 0);
        check_failed(rc, &few, path);
        return 0;
    }
    SP_ASSERT(all.n >= 1 && all.ids != NULL);
    int in_vocab = 1;
    for (int64_t i = 0; i < all.n; i++) {
        SP_ASSERT(all.ids[i] >= 0);
        if (all.ids[i] >= FUZZ_VOCAB) in_vocab = 0;
    }
    sp_err_clear();
    rc = sp_tokens_load(path, FUZZ_VOCAB, FUZZ_MAX_N, &few);
    if (rc) {
        SP_ASSERT(!in_vocab);
        check_failed(rc, &few, path);
    } else {
        SP_ASSERT(in_vocab);
        SP_ASSERT(few.n == (all.n < FUZZ_MAX_N ? all.n : FUZZ_MAX_N));
        SP_ASSERT(memcmp(few.ids, all.ids, (size_t)few.n * sizeof(int32_t)) == 0);
        sp_tokens_free(&few);
    }
    sp_tokens_free(&all);
    return 0;
}
