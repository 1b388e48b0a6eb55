/* tests/fuzz/fuzz_config.c — libFuzzer target for the config.json parser
 * (pipeline/arch/config.c, sp_config_load).
 *
 * Each input is written as DIR/config.json in a per-process scratch folder
 * (fuzz_tmp.h) and DIR is loaded. Bad input must only ever produce a status
 * (65; 70 for an allocation failure) with a message and leave *cfg zeroed; a
 * config that loads must satisfy the rules of config.h. Any crash, sanitizer
 * report, leak or SP_ASSERT is a bug.
 *
 * Build and run: see tests/fuzz/README.md.
 */
#include "config.h"
#include "error.h"
#include "fuzz_tmp.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_tmp_write(fuzz_tmp_path("config.json"), data, size);

    sp_config cfg;
    sp_err_clear();
    int rc = sp_config_load(g_fuzz_dir, &cfg);
    if (rc) {
        SP_ASSERT(rc == SP_EX_DATAERR || rc == SP_EX_SOFTWARE);
        SP_ASSERT(strstr(sp_errmsg(), "config.json") != NULL);
        SP_ASSERT(!cfg.raw_json && !cfg.d_in && !cfg.d_mid && !cfg.d_out && cfg.n_layers == 0);
        sp_config_free(&cfg);
        return 0;
    }
    const int64_t D = cfg.hidden_size, L = cfg.n_layers;
    SP_ASSERT(D >= 1 && D <= 65536);
    SP_ASSERT(cfg.intermediate_size >= 1 && cfg.intermediate_size <= 1000000);
    SP_ASSERT(L >= 1 && L <= SP_MAX_LAYERS);
    SP_ASSERT(cfg.n_heads >= 1 && cfg.n_heads <= 1024);
    SP_ASSERT(cfg.n_kv_heads >= 1 && cfg.n_heads % cfg.n_kv_heads == 0);
    SP_ASSERT(cfg.head_dim >= 2 && cfg.head_dim % 2 == 0);
    SP_ASSERT(cfg.vocab_size >= 1 && cfg.vocab_size <= 4000000);
    SP_ASSERT(cfg.rms_norm_eps > 0 && cfg.rope_theta > 0);
    SP_ASSERT(cfg.torch_dtype == SP_DTYPE_F32 || cfg.torch_dtype == SP_DTYPE_F16 || cfg.torch_dtype == SP_DTYPE_BF16);
    if (cfg.rope_llama3) SP_ASSERT(cfg.rope_low_freq_factor < cfg.rope_high_freq_factor);
    SP_ASSERT(cfg.raw_json && strlen(cfg.raw_json) == size);
    if (cfg.sliced) {
        /* per-layer widths: chained, and within the original width */
        SP_ASSERT(cfg.d_in && cfg.d_mid && cfg.d_out);
        SP_ASSERT(cfg.d_embed >= 1 && cfg.d_embed <= D);
        for (int64_t l = 0; l < L; l++) {
            SP_ASSERT(cfg.d_in[l] == (l ? cfg.d_out[l - 1] : cfg.d_embed));
            SP_ASSERT(cfg.d_mid[l] >= 1 && cfg.d_mid[l] <= D && cfg.d_out[l] >= 1 && cfg.d_out[l] <= D);
        }
    } else {
        SP_ASSERT(!cfg.d_in && !cfg.d_mid && !cfg.d_out);
    }
    sp_config_free(&cfg);
    return 0;
}
