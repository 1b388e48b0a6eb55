/* tests/fuzz/fuzz_mctask.c — libFuzzer target for the multiple-choice task
 * file parser (io/text/mctask.c, sp_mctask_load).
 *
 * Each input is written as DIR/task.in (fuzz_tmp.h): no .jsonl or .txt name, so
 * the parser picks the format by content ('{' first: JSONL, else the
 * HellaSwag text format), and both are fuzzed; the input's size mod 4 is
 * the --limit.
 * Bad input must only ever produce a status (65; 70 for an allocation
 * failure) with a message naming the file; a file that loads must satisfy
 * mctask.h's rules: items, >= 2 non-empty choices each, gold in range, valid
 * UTF-8 text. Any crash, sanitizer report, leak or SP_ASSERT is a bug.
 *
 * Build and run: see tests/fuzz/README.md.
 */
#include "error.h"
#include "fuzz_tmp.h"
#include "mctask.h"
#include "utf8.h"

#include <stdint.h>
#include <string.h>

static void check_text(const char *s) { SP_ASSERT(s && sp_utf8_invalid_at(s, (int64_t)strlen(s)) < 0); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_tmp_path("task.in");
    fuzz_tmp_write(path, data, size);

    sp_mctask *t = NULL;
    sp_err_clear();
    int rc = sp_mctask_load(path, (int64_t)(size % 4), &t);
    if (rc) {
        SP_ASSERT(rc == SP_EX_DATAERR || rc == SP_EX_SOFTWARE);
        SP_ASSERT(strstr(sp_errmsg(), "task.in") != NULL);
        SP_ASSERT(t == NULL);
        return 0;
    }
    SP_ASSERT(t && t->n_items >= 1);
    for (int64_t i = 0; i < t->n_items; i++) {
        const sp_mctask_item *it = &t->items[i];
        SP_ASSERT(it->n_choices >= 2 && it->gold >= 0 && it->gold < it->n_choices && it->line >= 1);
        check_text(it->context);
        check_text(it->delim);
        for (int64_t c = 0; c < it->n_choices; c++) {
            check_text(it->choice[c]);
            SP_ASSERT(it->choice[c][0] != 0);
        }
    }
    sp_mctask_free(t);
    return 0;
}
