/* tools/cmd_export.c — `slicepipe export MODEL_DIR --gguf OUT.gguf [--type T]`:
 * a dense model folder (or a global-basis sliced one, which is a stock
 * model) to one GGUF file llama.cpp loads (pipeline/publish/export.h). */
#include "error.h"
#include "export.h"
#include "gguf.h"

#include <getopt.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

int sp_cmd_export(int argc, char **argv); /* called by tools/slicepipe.c */

static void usage_export(FILE *f) {
    char families[512];
    fprintf(f,
            "usage: slicepipe export MODEL_DIR --gguf OUT.gguf [--type T]\n"
            "                        [--quant-weighting plain|calib --calib TOKENS.npy [--calib-seqlen T]\n"
            "                        [--calib-windows N] [--threads N]] [--restart] [--force] [--quiet]\n"
            "\n"
            "Writes MODEL_DIR (config.json + safetensors, of a family llama.cpp has) as\n"
            "one GGUF v3 file for llama.cpp, with its tokenizer (tokenizer.json,\n"
            "tokenizer.model or tokenizer.bin) when the folder has one. Streams a chunk of\n"
            "rows at a time; the file is written to OUT.gguf.tmp, fsynced and renamed, and\n"
            "its XXH3-128 is printed.\n"
            "Families llama.cpp has: %s.\n"
            "\n"
            "OUT.gguf is checked before any work: a folder, a FIFO or the model's own files\n"
            "are refused, and so is an existing file unless --force is given (slicepipe\n"
            "never replaces a file it did not write).\n"
            "\n"
            "The tmp is journaled in OUT.gguf.journal (under the lock OUT.gguf.lock): a\n"
            "killed export, rerun with the same command, resumes after the last tensor\n"
            "that is durable, re-verified by hash, and gives the same bytes. A journal of\n"
            "another export (changed model, options or slicepipe) is refused (65).\n"
            "\n"
            "  --gguf OUT.gguf   the output file\n"
            "  --type T          2-D weights as f32 (default), f16, bf16, or ggml's blocks\n"
            "                    q8_0, q5_1, q5_0, q4_1, q4_0; norms and biases stay f32;\n"
            "                    with q4_*/q5_* the token embedding and output head are\n"
            "                    q8_0; block-type rows not a multiple of 32 are f16\n"
            "  --quant-weighting plain (default): ggml's reference rounding of each block;\n"
            "                    calib: each block's scale (and min) minimizing the error\n"
            "                    weighted by diag(H), H the second moment of the tensor's\n"
            "                    input over --calib's tokens (a forward pass of MODEL_DIR\n"
            "                    on the CPU first; the embedding keeps plain rounding)\n"
            "  --calib F         calibration tokens (.npy from slicepipe tokenize)\n"
            "  --calib-seqlen T  window length (default 256)\n"
            "  --calib-windows N windows used (default 64, or all the file has if fewer)\n"
            "  --threads N       threads of that pass\n"
            "  --restart         discard an interrupted export's journal and tmp first\n"
            "  --force           replace an existing OUT.gguf\n"
            "  --quiet           no progress line\n",
            sp_export_families(families, sizeof families));
}

int sp_cmd_export(int argc, char **argv) {
    static const struct option lo[] = {
        {"gguf", required_argument, 0, 'g'}, {"type", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},      {"restart", no_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},       {"force", no_argument, 0, 'F'},
        {"quant-weighting", required_argument, 0, 'w'}, {"calib", required_argument, 0, 'c'},
        {"calib-seqlen", required_argument, 0, 's'},    {"calib-windows", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 'j'},
        {0, 0, 0, 0},
    };
    const char *out = NULL;
    sp_export_opts o = {.type = SP_GGUF_T_F32};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'g': out = optarg; break;
        case 't': {
            int t = sp_gguf_ttype_parse(optarg);
            if (t < 0) return sp_fail(SP_EX_USAGE, "export: --type '%s': expected f32, f16, bf16, q8_0, q5_1, q5_0, q4_1 or q4_0", optarg);
            o.type = (sp_gguf_ttype)t;
            break;
        }
        case 'w':
            if (!strcmp(optarg, "plain")) o.weighting = SP_EXPORT_WEIGHT_PLAIN;
            else if (!strcmp(optarg, "calib")) o.weighting = SP_EXPORT_WEIGHT_CALIB;
            else return sp_fail(SP_EX_USAGE, "export: --quant-weighting '%s': expected plain or calib", optarg);
            break;
        case 'c': o.calib_tokens = optarg; break;
        case 's':
        case 'n':
        case 'j': {
            char *end;
            long long v = strtoll(optarg, &end, 10);
            if (*end || v < 1 || v > (c == 's' ? 1 << 20 : 1 << 30))
                return sp_fail(SP_EX_USAGE, "export: --%s '%s': expected a positive integer",
                               c == 's' ? "calib-seqlen" : c == 'n' ? "calib-windows" : "threads", optarg);
            if (c == 's') o.calib_seqlen = v;
            else if (c == 'n') o.calib_windows = v;
            else o.threads = (int)v;
            break;
        }
        case 'q': o.quiet = 1; break;
        case 'r': o.restart = 1; break;
        case 'F': o.force = 1; break;
        case 'h': usage_export(stdout); return 0;
        default: usage_export(stderr); return sp_fail(SP_EX_USAGE, "export: bad option");
        }
    }
    if (o.weighting == SP_EXPORT_WEIGHT_CALIB && (!o.calib_tokens || !sp_gguf_ttype_is_block(o.type)))
        return sp_fail(SP_EX_USAGE, "export: --quant-weighting calib needs --calib TOKENS.npy and a block --type (q8_0, q5_1, q5_0, "
                       "q4_1, q4_0)");
    if (o.weighting != SP_EXPORT_WEIGHT_CALIB && o.calib_tokens)
        return sp_fail(SP_EX_USAGE, "export: --calib is used only with --quant-weighting calib");
    if (optind != argc - 1 || !out) {
        usage_export(stderr);
        return sp_fail(SP_EX_USAGE, "export: expected MODEL_DIR and --gguf OUT.gguf");
    }
    sp_export_stats st;
    SP_TRY(sp_export_gguf(argv[optind], out, &o, &st));
    printf("%s: %s, %lld tensors (%s", out, st.arch, (long long)st.n_tensors, sp_gguf_ttype_name(o.type));
    if (st.n_fallback_f16) printf(", %lld as f16: rows not a multiple of 32", (long long)st.n_fallback_f16);
    if (st.calib_tokens) printf(", rounding weighted by the inputs' second moments over %lld tokens (%.2f s)", (long long)st.calib_tokens, st.calib_seconds);
    printf("), tokenizer %s, %lld bytes, xxh3-128 %s, %.2f s", st.tokenizer, (long long)st.file_bytes, st.xxh128, st.seconds);
    if (st.reused) printf(" (already finished: verified by hash)");
    else if (st.resumed_bytes) printf(" (resumed: %lld bytes kept)", (long long)st.resumed_bytes);
    printf("\n");
    return 0;
}
