/* tests/fuzz/fuzz_journal_id.h — the fixed run identity that fuzz_journal
 * opens journals for, and gen_fuzz_seeds writes its seeds with. */
#ifndef SP_FUZZ_JOURNAL_ID_H
#define SP_FUZZ_JOURNAL_ID_H

#include "journal.h"

static const sp_run_identity *fuzz_journal_id(void) {
    static const sp_run_identity id = {
        .manifest = "0123456789abcdef0123456789abcdef",
        .input = "fedcba9876543210fedcba9876543210",
        .version = "0.1.0-fuzz",
    };
    return &id;
}

#endif
