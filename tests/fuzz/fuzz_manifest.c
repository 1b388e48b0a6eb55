/* tests/fuzz/fuzz_manifest.c — libFuzzer target for the run manifest parser
 * (pipeline/run/manifest.c, sp_manifest_load).
 *
 * Each input is written as DIR/run.toml in a per-process scratch folder
 * (fuzz_tmp.h) and loaded. Bad input must only ever produce a documented status
 * (64, or 74 for a read error) with a message, and leave *m zeroed; a manifest
 * that loads must satisfy the schema of manifest.h. Any crash, sanitizer
 * report, leak or SP_ASSERT is a bug.
 *
 * Build and run: see tests/fuzz/README.md.
 */
#include "error.h"
#include "fuzz_tmp.h"
#include "manifest.h"

#include <stdint.h>
#include <string.h>

static int in_range(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_tmp_path("run.toml");
    fuzz_tmp_write(path, data, size);

    sp_manifest m;
    sp_err_clear();
    int rc = sp_manifest_load(path, &m);
    if (rc) {
        SP_ASSERT(rc == SP_EX_USAGE || rc == SP_EX_IOERR || rc == SP_EX_SOFTWARE);
        SP_ASSERT(sp_errmsg()[0] != 0);
        SP_ASSERT(!m.path && !m.model_path && !m.calib_tokens && !m.output_path && !m.spill_dir && !m.backend &&
                  !m.eval_tokens);
        sp_manifest_free(&m); /* a no-op on the zeroed struct */
        return 0;
    }
    /* required keys, resolved to absolute paths */
    SP_ASSERT(m.path && m.model_path && m.calib_tokens && m.output_path && m.backend);
    SP_ASSERT(m.model_path[0] == '/' && m.calib_tokens[0] == '/' && m.output_path[0] == '/');
    SP_ASSERT(strcmp(m.model_path, m.output_path) != 0);
    SP_ASSERT(!m.spill_dir || m.spill_dir[0] == '/');
    /* documented ranges */
    SP_ASSERT(in_range(m.calib_seqlen, 2, 1 << 20));
    SP_ASSERT(in_range(m.calib_nsamples, 1, 1 << 24));
    SP_ASSERT(m.sparsity >= 0 && m.sparsity < 1);
    SP_ASSERT(in_range(m.round_to, 1, 65536));
    SP_ASSERT(m.output_dtype == SP_DTYPE_INVALID || m.output_dtype == SP_DTYPE_F32 ||
              m.output_dtype == SP_DTYPE_F16 || m.output_dtype == SP_DTYPE_BF16);
    SP_ASSERT(m.shard_bytes >= 0 && m.memory_bytes >= 0);
    SP_ASSERT(in_range(m.threads, 0, 4096));
    SP_ASSERT(m.spill_dtype == SP_DTYPE_F32 || m.spill_dtype == SP_DTYPE_BF16);
    SP_ASSERT(strcmp(m.backend, "auto") == 0 || strcmp(m.backend, "cpu") == 0 || strcmp(m.backend, "cuda") == 0);
    if (m.has_eval) {
        SP_ASSERT(m.eval_tokens && m.eval_tokens[0] == '/');
        SP_ASSERT(in_range(m.eval_seqlen, 2, 1 << 20));
        SP_ASSERT(m.eval_windows >= 0);
    } else {
        SP_ASSERT(!m.eval_tokens);
    }
    sp_manifest_free(&m);
    SP_ASSERT(!m.path && !m.model_path); /* free zeroes */
    return 0;
}
