/* tools/slicepipe.c — the `slicepipe` command: argument parsing and reporting
 * only; the work lives in io/, linalg/ and pipeline/. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"
#include "backend.h"
#include "blas_core.h"
#include "calib.h"
#include "cmd_eval_task.h"
#include "error.h"
#include "eval.h"
#include "manifest.h"
#include "model.h"
#include "safetensors.h"
#include "slice.h"
#include "sp_version.h"
#include "synth.h"
#include "tokens.h"
#include "verify.h"

int sp_cmd_tokenize(int argc, char **argv);
int sp_cmd_export(int argc, char **argv);
int sp_cmd_generate(int argc, char **argv);

/* Every failure ends with one line saying what is wrong; a status without a
 * message (a usage path that forgot one) still gets a line naming the command. */
static const char *g_cmd = "slicepipe";
static int die(int rc) {
    if (rc && sp_errmsg()[0]) fprintf(stderr, "slicepipe: %s\n", sp_errmsg());
    else if (rc) fprintf(stderr, "slicepipe: %s: failed (exit %d) without a message\n", g_cmd, rc);
    return rc;
}

/* getopt_long's '?' or ':' as one message (opterr is 0: getopt prints nothing). */
static int bad_option(const char *cmd, char **argv) {
    const char *a = optind > 0 ? argv[optind - 1] : "";
    if (optopt && optopt != '?' && strncmp(a, "--", 2) != 0) return sp_fail(SP_EX_USAGE, "%s: unknown option '-%c' (see the usage above)", cmd, optopt);
    return sp_fail(SP_EX_USAGE, "%s: unknown option or missing value in '%s' (see the usage above)", cmd, a);
}

static void usage_main(FILE *f) {
    fprintf(f,
            "usage: slicepipe <command> [options]\n"
            "\n"
            "commands:\n"
            "  run MANIFEST.toml     rotate and slice a model as the manifest says (SliceGPT)\n"
            "  eval MODEL_DIR        perplexity of a dense or sliced model over a token file\n"
            "  export MODEL_DIR --gguf OUT.gguf   a dense model as one GGUF file for llama.cpp\n"
            "  inspect PATH          validate a model directory or one .safetensors file\n"
            "  status OUTPUT_DIR     how far a job got (complete, running, interrupted)\n"
            "  synth OUT_DIR         write a deterministic synthetic checkpoint (any family) + calib.npy\n"
            "  tokenize MODEL_DIR FILE -o OUT.npy   text documents to an int32 .npy token stream\n"
            "  generate MODEL_DIR --prompt TEXT     continue a prompt (KV cache), with tokens/s\n"
            "  verify MODEL_DIR      re-hash every tensor against the XXH3-128 its shard recorded\n"
            "\n"
            "  slicepipe <command> --help    options of one command\n"
            "  slicepipe --version\n"
            "\n"
            "exit codes: 0 ok, 64 usage, 65 bad data, 66 missing input, 70 internal,\n"
            "            73 cannot create output, 74 I/O error, 75 locked\n");
}

static int parse_i64(const char *s, const char *what, int64_t min, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE) return sp_fail(SP_EX_USAGE, "%s: '%s' is out of range", what, s);
    if (!*s || *end || v < min) return sp_fail(SP_EX_USAGE, "%s: expected an integer >= %lld, got '%s'", what, (long long)min, s);
    *out = v;
    return 0;
}

/* ---- inspect ---- */

static void usage_inspect(FILE *f) {
    fprintf(f,
            "usage: slicepipe inspect PATH\n"
            "\n"
            "PATH is a model directory (config.json + model.safetensors or shards with\n"
            "model.safetensors.index.json) or a single .safetensors file. Every header is\n"
            "validated strictly, every tensor is read and checked for NaN/Inf, and shapes\n"
            "are checked against config.json. Prints the architecture, tensor count,\n"
            "dtypes and bytes.\n");
}

static int check_finite(const sp_st_file *f, int64_t *count, int64_t dtype_bytes[16]) {
    float *buf = NULL;
    int64_t cap = 0;
    int rc = 0;
    for (int i = 0; i < sp_st_count(f) && !rc; i++) {
        const sp_st_tensor *t = sp_st_at(f, i);
        (*count)++;
        dtype_bytes[t->dtype] += t->nbytes;
        if (!sp_dtype_is_float(t->dtype) && t->dtype != SP_DTYPE_F64) continue;
        if (t->numel > cap) {
            free(buf);
            cap = t->numel;
            rc = sp_alloc((void **)&buf, cap, 4, t->name);
            if (rc) break;
        }
        rc = sp_st_read_f32(f, t, buf);
    }
    free(buf);
    return rc;
}

static void print_dtypes(const int64_t dtype_bytes[16]) {
    for (int d = 0; d < 16; d++)
        if (dtype_bytes[d]) printf("  %-5s %lld bytes\n", sp_dtype_st_name((sp_dtype)d), (long long)dtype_bytes[d]);
}

static int cmd_inspect(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
        usage_inspect(stdout);
        return 0;
    }
    if (argc != 2) {
        usage_inspect(stderr);
        return sp_fail(SP_EX_USAGE, "inspect needs exactly one PATH (got %d arguments)", argc - 1);
    }
    const char *path = argv[1];
    struct stat st;
    if (stat(path, &st) != 0) return sp_fail(SP_EX_NOINPUT, "%s: no such file or directory", path);
    int64_t count = 0, dtype_bytes[16] = {0};
    if (!S_ISDIR(st.st_mode)) {
        sp_st_file *f;
        SP_TRY(sp_st_open(path, &f));
        int rc = check_finite(f, &count, dtype_bytes);
        if (!rc) {
            printf("file: %s\nheader: %lld bytes\ntensors: %lld\n", path, (long long)sp_st_header_len(f), (long long)count);
            print_dtypes(dtype_bytes);
            printf("validation: ok (header strict, offsets contiguous, no NaN/Inf)\n");
        }
        sp_st_free(f);
        return rc;
    }
    sp_model m;
    SP_TRY(sp_model_open(path, &m));
    int rc = 0;
    for (int i = 0; i < sp_ckpt_shard_count(m.ckpt) && !rc; i++) rc = check_finite(sp_ckpt_shard(m.ckpt, i), &count, dtype_bytes);
    if (!rc) {
        const sp_config *c = &m.cfg;
        printf("model: %s\n", path);
        printf("architecture: %s, %lld layers, hidden %lld, ffn %lld, heads %lld / kv %lld, head_dim %lld, vocab %lld\n",
               m.arch->model_type, (long long)c->n_layers, (long long)c->hidden_size, (long long)c->intermediate_size, (long long)c->n_heads,
               (long long)c->n_kv_heads, (long long)c->head_dim, (long long)c->vocab_size);
        printf("rope: theta %g%s; rms_norm_eps %g; head: %s\n", c->rope_theta, c->rope_llama3 ? ", llama3 scaling" : "",
               c->rms_norm_eps, m.has_head ? m.arch->head : "tied to the embedding");
        if (c->sliced) {
            printf("sliced by slicepipe: sparsity %g, embedding width %lld\n", c->sparsity, (long long)c->d_embed);
            for (int64_t l = 0; l < c->n_layers; l++)
                printf("  layer %lld: d_in %lld, d_mid %lld, d_out %lld\n", (long long)l, (long long)c->d_in[l],
                       (long long)c->d_mid[l], (long long)c->d_out[l]);
        }
        printf("shards: %d\ntensors: %lld\nparameters: %lld\n", sp_ckpt_shard_count(m.ckpt), (long long)count,
               (long long)m.n_params);
        print_dtypes(dtype_bytes);
        printf("validation: ok (headers strict, index consistent, shapes match config.json, no NaN/Inf)\n");
    }
    sp_model_close(&m);
    return rc;
}

/* ---- eval ---- */

static void usage_eval(FILE *f) {
    fprintf(f,
            "usage: slicepipe eval MODEL_DIR (--tokens FILE.npy | --text FILE) --seqlen T [options]\n"
            "       slicepipe eval MODEL_DIR --task FILE [--task FILE ...] [--limit N] [options]\n"
            "\n"
            "Perplexity over non-overlapping windows of T tokens; each window predicts its\n"
            "tokens 1..T-1. Works on dense HF Llama checkpoints and on slicepipe outputs,\n"
            "layer by layer (one layer's weights in memory at a time).\n"
            "\n"
            "  --tokens FILE     .npy token stream (int32, uint16, uint32 or int64)\n"
            "  --text FILE       or text: .txt (documents separated by blank lines) or .jsonl\n"
            "                    (a \"text\" field per line), either gzip-compressed; tokenized\n"
            "                    with MODEL_DIR's tokenizer, each document with its BOS/EOS\n"
            "                    rule, concatenated, and cut into windows from the start\n"
            "  --seqlen T        window length (>= 2)\n"
            "  --windows N       evaluate only the first N windows (default: all)\n"
            "  --threads N       BLAS threads (default 0: all cores; 1 when hidden size < 512)\n"
            "  --backend NAME    auto (default) or a backend of `slicepipe --version` whose\n"
            "                    memory is host memory (cpu, onednn)\n"
            "  --json            print the figures as one JSON object on stdout\n"
            "  --dump-logits F   write float32 logits (windows*T, vocab) to F (.npy)\n"
            "  --force           replace an existing --dump-logits file (without it an\n"
            "                    existing file there is refused)\n"
            "  --memory SIZE     budget for activation chunks (default 64MB); activations\n"
            "                    stream through two spill files, so any number of windows fits;\n"
            "                    with --text, also for its windows' token ids (64 past it)\n"
            "  --spill-dir DIR   folder for the spill files (default $TMPDIR or /tmp)\n"
            "  --quiet           no per-layer progress on stderr\n"
            "\n"
            "Zero-shot multiple choice (--task), scored as lm-eval-harness scores it: each\n"
            "choice's log-likelihood given the context; acc = argmax of it, acc_norm =\n"
            "argmax of it divided by the choice's length in characters; each with its\n"
            "standard error. Items sharing a context share its forward pass.\n"
            "  --task FILE       .jsonl ({\"context\", \"choices\", \"gold\"[, \"target_delimiter\"]}\n"
            "                    a line) or llama.cpp's HellaSwag text (6 lines a task);\n"
            "                    repeat for several tasks\n"
            "  --limit N         only the first N items of each task\n"
            "  --max-length N    the context a sequence may have (default: the model's\n"
            "                    max_position_embeddings, else 2048); longer ones are cut\n"
            "                    from the left, as lm-eval does\n"
            "  --json            adds every item's log-likelihoods\n"
            "  (--threads, --backend, --memory, --spill-dir and --quiet as above)\n");
}

static int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"tokens", required_argument, 0, 't'},  {"seqlen", required_argument, 0, 's'},
                                         {"text", required_argument, 0, 'x'},
                                         {"windows", required_argument, 0, 'w'}, {"json", no_argument, 0, 'j'},
                                         {"dump-logits", required_argument, 0, 'd'}, {"threads", required_argument, 0, 'n'},
                                         {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
                                         {"memory", required_argument, 0, 'm'},  {"spill-dir", required_argument, 0, 'S'},
                                         {"backend", required_argument, 0, 'B'}, {"force", no_argument, 0, 'F'},
                                         {"task", required_argument, 0, 'T'},    {"limit", required_argument, 0, 'L'},
                                         {"max-length", required_argument, 0, 'M'},
                                         {0, 0, 0, 0}};
    const char *tokens = NULL, *text = NULL, *dump = NULL, *backend = NULL;
    const char *task_files[64];
    int n_task = 0;
    int64_t limit = 0, max_length = 0;
    int json = 0, quiet = 0, out_flags = 0;
    int64_t threads = 0;
    sp_eval_opts eo = {.progress = 1};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't': tokens = optarg; break;
        case 'x': text = optarg; break;
        case 's': SP_TRY(parse_i64(optarg, "--seqlen", 2, &eo.seqlen)); break;
        case 'w': SP_TRY(parse_i64(optarg, "--windows", 0, &eo.windows)); break;
        case 'n': SP_TRY(parse_i64(optarg, "--threads", 0, &threads)); break;
        case 'j': json = 1; break;
        case 'q': quiet = 1; break;
        case 'd': dump = optarg; break;
        case 'm':
            if (sp_parse_size(optarg, &eo.chunk_bytes) != 0 || eo.chunk_bytes <= 0)
                return sp_fail(SP_EX_USAGE, "--memory: expected a size such as 512MB, got '%s'", optarg);
            break;
        case 'S': eo.spill_dir = optarg; break;
        case 'B': backend = optarg; break;
        case 'F': out_flags = SP_IO_OUT_REPLACE; break;
        case 'T':
            if (n_task == (int)(sizeof task_files / sizeof task_files[0]))
                return sp_fail(SP_EX_USAGE, "eval: at most %d --task files", n_task);
            task_files[n_task++] = optarg;
            break;
        case 'L': SP_TRY(parse_i64(optarg, "--limit", 1, &limit)); break;
        case 'M': SP_TRY(parse_i64(optarg, "--max-length", 2, &max_length)); break;
        case 'h': usage_eval(stdout); return 0;
        default: usage_eval(stderr); return bad_option("eval", argv);
        }
    }
    if (n_task || limit || max_length) {
        if (optind != argc - 1 || !n_task || tokens || text || eo.seqlen || eo.windows || dump || out_flags) {
            usage_eval(stderr);
            return sp_fail(SP_EX_USAGE, "eval --task needs MODEL_DIR and one or more --task files, and takes none of "
                                        "--tokens, --text, --seqlen, --windows, --dump-logits, --force");
        }
        sp_eval_task_args ta = {.model_dir = argv[optind], .tasks = task_files, .n_tasks = n_task, .limit = limit,
                                .max_length = max_length, .threads = threads, .chunk_bytes = eo.chunk_bytes,
                                .backend = backend, .spill_dir = eo.spill_dir, .json = json, .quiet = quiet};
        return sp_cmd_eval_tasks(&ta);
    }
    if (optind != argc - 1 || !tokens == !text || !eo.seqlen) {
        usage_eval(stderr);
        return sp_fail(SP_EX_USAGE, "eval needs MODEL_DIR, one of --tokens and --text, and --seqlen");
    }
    eo.progress = !quiet;
    sp_model m;
    SP_TRY(sp_model_open(argv[optind], &m));
    sp_bk *bk;
    int rc = sp_bk_open_host(backend, "eval", &bk);
    if (rc) {
        sp_model_close(&m);
        return rc;
    }
    bk->set_threads(bk, threads, m.cfg.hidden_size);
    eo.bk = bk;
    /* --dump-logits is begun before any work: never over an input (io/base/fileio.h). */
    sp_io_paths *taken = NULL;
    rc = sp_model_add_inputs(&m, &taken);
    if (!rc) rc = sp_io_paths_add(&taken, text ? text : tokens, 0);
    if (!rc && dump) rc = sp_npy_out_begin(dump, "<f4", m.cfg.vocab_size, out_flags, &taken, &eo.dump_logits);
    sp_io_paths_free(taken);
    sp_tokens tk = {0};
    sp_calib_opts co = {.seqlen = eo.seqlen, .nsamples = eo.windows, .vocab = m.cfg.vocab_size, .what = "--text",
                        .ids_bytes_max = eo.chunk_bytes > 0 ? eo.chunk_bytes : SP_EVAL_CHUNK_BYTES_DEFAULT,
                        .budget_what = "--memory", .progress = !quiet};
    if (!rc) rc = text ? sp_calib_text_windows(text, argv[optind], &co, &tk, NULL)
                       : sp_tokens_load(tokens, m.cfg.vocab_size, 0, &tk);
    sp_eval_result r;
    if (!rc) rc = sp_eval(&m, &tk, &eo, &r);
    int rc_dump = sp_npy_out_end(eo.dump_logits, rc == 0);
    if (!rc) rc = rc_dump;
    if (!rc) {
        if (json)
            printf("{\"model\": \"%s\", \"nll\": %.9f, \"ppl\": %.6f, \"tokens\": %lld, \"windows\": %lld, \"seqlen\": %lld, "
                   "\"seconds\": %.3f, \"tokens_per_s\": %.1f, \"peak_rss_bytes\": %lld}\n",
                   argv[optind], r.nll, r.ppl, (long long)r.tokens, (long long)r.windows, (long long)eo.seqlen, r.seconds,
                   r.tokens_per_s, (long long)r.peak_rss_bytes);
        else
            printf("model:        %s\nwindows:      %lld x %lld tokens (%lld predicted)\nnll:          %.6f nats/token\n"
                   "perplexity:   %.4f\nthroughput:   %.0f tokens/s (%.2f s)\npeak RSS:     %.1f MiB\n",
                   argv[optind], (long long)r.windows, (long long)eo.seqlen, (long long)r.tokens, r.nll, r.ppl,
                   r.tokens_per_s, r.seconds, (double)r.peak_rss_bytes / (1 << 20));
    }
    sp_tokens_free(&tk);
    sp_model_close(&m);
    sp_bk_close(bk);
    return rc;
}

/* ---- run ---- */

static void usage_run(FILE *f) {
    fprintf(f,
            "usage: slicepipe run MANIFEST.toml [--dry-run] [--quiet] [--io=auto|pread] [--restart]\n"
            "\n"
            "Rotates every weight matrix into the PCA basis of the model's own calibration\n"
            "activations and deletes the least-variance directions (SliceGPT). The manifest\n"
            "schema is in the README. Writes an HF-style directory: config.json (with a\n"
            "\"slicepipe\" block), safetensors shards + index, tokenizer files, slicing.json\n"
            "and report.html.\n"
            "\n"
            "  --dry-run   validate the manifest and inputs, print the plan, do nothing\n"
            "  --quiet     no progress on stderr\n"
            "  --io=pread  read the checkpoint with pread instead of io_uring (same bytes)\n"
            "  --restart   discard the job's journal and partial output and start fresh\n"
            "\n"
            "Rerunning the same command resumes an interrupted job from its last complete\n"
            "layer (the journal is in OUTPUT/.slicepipe); the result is bit-identical to an\n"
            "uninterrupted run. A changed manifest, input or tool version is refused.\n"
            "\n"
            "The run is three processes (reader, compute, writer) joined by shared-memory\n"
            "rings; activations stream through spill files; memory stays within the plan.\n");
}

static int cmd_run(int argc, char **argv) {
    static const struct option opts[] = {{"dry-run", no_argument, 0, 'n'}, {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},    {"io", required_argument, 0, 'i'},
                                         {"restart", no_argument, 0, 'r'},  {0, 0, 0, 0}};
    sp_run_opts ro = {0};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'n': ro.dry_run = 1; break;
        case 'q': ro.quiet = 1; break;
        case 'r': ro.restart = 1; break;
        case 'i':
            if (!strcmp(optarg, "pread")) ro.io_pread = 1;
            else if (strcmp(optarg, "auto") != 0) return sp_fail(SP_EX_USAGE, "--io: expected auto or pread, got '%s'", optarg);
            break;
        case 'h': usage_run(stdout); return 0;
        default: usage_run(stderr); return bad_option("run", argv);
        }
    }
    if (optind != argc - 1) {
        usage_run(stderr);
        return sp_fail(SP_EX_USAGE, "run needs exactly one MANIFEST.toml");
    }
    sp_manifest mf;
    SP_TRY(sp_manifest_load(argv[optind], &mf));
    int rc = sp_slice_run(&mf, &ro);
    sp_manifest_free(&mf);
    return rc;
}

/* ---- synth ---- */

static int has_window(const sp_arch *a) { return a->window_key; }
static int has_partial_rotary(const sp_arch *a) { return a->partial_rotary; }

static void usage_synth(FILE *f) {
    char all[512], window[512], rotary[512];
    fprintf(f,
            "usage: slicepipe synth OUT_DIR [options]\n"
            "\n"
            "Writes a deterministic synthetic checkpoint in a family's real HF layout\n"
            "(config.json, safetensors shards + index) and OUT_DIR/calib.npy, a matching\n"
            "int32 token stream. Weights are N(0,1)/sqrt(fan_in) (norms 1 + 0.05 N(0,1),\n"
            "biases 0.02 N(0,1)), a pure function of the seed, streamed in 4 MiB chunks:\n"
            "memory stays flat for any model size.\n"
            "\n"
            "  --arch FAMILY    %s\n"
            "                   (default llama)\n"
            "  --window N       sliding_window (%s; default none)\n"
            "  --partial-rotary F  partial_rotary_factor (%s; default 1)\n"
            "  --hidden D       hidden size (default 256)\n"
            "  --layers L       layers (default 4)\n"
            "  --ffn F          intermediate size (default 704)\n"
            "  --heads H        attention heads (default 8)\n"
            "  --kv-heads K     key/value heads, divides H (default H)\n"
            "  --head-dim N     even (default D/H)\n"
            "  --vocab V        vocabulary size, >= 3 (default 1024)\n"
            "  --max-pos N      max_position_embeddings (default 4096)\n"
            "  --dtype T        f32 | f16 | bf16 (default bf16)\n"
            "  --shards N       split into about N shards (default 1)\n"
            "  --seed S         (default 0)\n"
            "  --tokens N       calibration tokens in calib.npy (default 32768; BOS=1 every 512)\n"
            "  --tied           tie the head to the embedding (no head tensor)\n"
            "  --quiet          no progress on stderr\n",
            sp_arch_names(all, sizeof all, NULL, "", " | ", " | "), sp_arch_names(window, sizeof window, has_window, "", ", ", ", "),
            sp_arch_names(rotary, sizeof rotary, has_partial_rotary, "", ", ", ", "));
}

static int cmd_synth(int argc, char **argv) {
    static const struct option opts[] = {
        {"hidden", required_argument, 0, 'D'}, {"layers", required_argument, 0, 'L'},   {"ffn", required_argument, 0, 'F'},
        {"heads", required_argument, 0, 'H'},  {"kv-heads", required_argument, 0, 'K'}, {"head-dim", required_argument, 0, 'd'},
        {"vocab", required_argument, 0, 'V'},  {"max-pos", required_argument, 0, 'P'},  {"dtype", required_argument, 0, 't'},
        {"shards", required_argument, 0, 'S'}, {"seed", required_argument, 0, 's'},     {"tokens", required_argument, 0, 'n'},
        {"tied", no_argument, 0, 'T'},         {"quiet", no_argument, 0, 'q'},          {"help", no_argument, 0, 'h'},
        {"arch", required_argument, 0, 'A'},   {"window", required_argument, 0, 'W'},   {"partial-rotary", required_argument, 0, 'R'},
        {0, 0, 0, 0}};
    sp_synth_opts so;
    sp_synth_defaults(&so);
    int64_t kv = 0, seed = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'D': SP_TRY(parse_i64(optarg, "--hidden", 1, &so.hidden)); break;
        case 'L': SP_TRY(parse_i64(optarg, "--layers", 1, &so.layers)); break;
        case 'F': SP_TRY(parse_i64(optarg, "--ffn", 1, &so.ffn)); break;
        case 'H': SP_TRY(parse_i64(optarg, "--heads", 1, &so.heads)); break;
        case 'K': SP_TRY(parse_i64(optarg, "--kv-heads", 1, &kv)); break;
        case 'd': SP_TRY(parse_i64(optarg, "--head-dim", 1, &so.head_dim)); break;
        case 'V': SP_TRY(parse_i64(optarg, "--vocab", 1, &so.vocab)); break;
        case 'P': SP_TRY(parse_i64(optarg, "--max-pos", 1, &so.max_pos)); break;
        case 'S': SP_TRY(parse_i64(optarg, "--shards", 1, &so.shards)); break;
        case 's': SP_TRY(parse_i64(optarg, "--seed", 0, &seed)); break;
        case 'n': SP_TRY(parse_i64(optarg, "--tokens", 1, &so.tokens)); break;
        case 'T': so.tied = 1; break;
        case 'q': so.progress = 0; break;
        case 'A': so.arch = optarg; break;
        case 'W': SP_TRY(parse_i64(optarg, "--window", 1, &so.window)); break;
        case 'R': {
            char *end;
            so.rotary = strtod(optarg, &end);
            if (end == optarg || *end || !(so.rotary > 0 && so.rotary <= 1))
                return sp_fail(SP_EX_USAGE, "--partial-rotary '%s': expected a number in (0, 1]", optarg);
            break;
        }
        case 't':
            so.dtype = !strcmp(optarg, "f32")    ? SP_DTYPE_F32
                       : !strcmp(optarg, "f16")  ? SP_DTYPE_F16
                       : !strcmp(optarg, "bf16") ? SP_DTYPE_BF16
                                                 : SP_DTYPE_INVALID;
            if (so.dtype == SP_DTYPE_INVALID) return sp_fail(SP_EX_USAGE, "--dtype: expected f32, f16 or bf16, got '%s'", optarg);
            break;
        case 'h': usage_synth(stdout); return 0;
        default: usage_synth(stderr); return bad_option("synth", argv);
        }
    }
    if (optind != argc - 1) {
        usage_synth(stderr);
        return sp_fail(SP_EX_USAGE, "synth needs exactly one OUT_DIR");
    }
    so.kv_heads = kv ? kv : so.heads;
    so.seed = (uint64_t)seed;
    sp_synth_result r;
    SP_TRY(sp_synth_write(argv[optind], &so, &r));
    printf("model:       %s\nparameters:  %lld\nbytes:       %lld (%s)\nshards:      %d\ncalib.npy:   %lld tokens\n"
           "time:        %.2f s (%.1f MB/s), peak RSS %.1f MiB\n",
           argv[optind], (long long)r.params, (long long)r.tensor_bytes, sp_dtype_st_name(so.dtype), r.shards, (long long)r.tokens, r.seconds, r.mb_per_s, (double)r.peak_rss_bytes / (1 << 20));
    return 0;
}

/* ---- verify ---- */

static void usage_verify(FILE *f) {
    fprintf(f,
            "usage: slicepipe verify MODEL_DIR\n"
            "\n"
            "Opens a slicepipe output directory with the strict reader (headers, index)\n"
            "and re-hashes every tensor of every shard, comparing it with the XXH3-128\n"
            "recorded in that shard's __metadata__ (\"xxh3_128:<tensor>\"). Needs no job\n"
            "journal: a copied or moved output verifies the same. A missing or wrong\n"
            "hash is exit 65 naming the file and the tensor.\n");
}

static int cmd_verify(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
        usage_verify(stdout);
        return 0;
    }
    if (argc != 2) {
        usage_verify(stderr);
        return sp_fail(SP_EX_USAGE, "verify needs exactly one MODEL_DIR");
    }
    sp_verify_result r;
    SP_TRY(sp_verify_model(argv[1], &r));
    double s = r.seconds > 1e-9 ? r.seconds : 1e-9;
    printf("model:    %s\nshards:   %d\ntensors:  %lld (every one hashed: XXH3-128)\nbytes:    %lld\n"
           "speed:    %.2f GB/s (%.3f s)\nverify: ok\n",
           argv[1], r.shards, (long long)r.tensors, (long long)r.bytes, (double)r.bytes / s / 1e9, r.seconds);
    return 0;
}

static int cmd_status(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        printf("usage: slicepipe status OUTPUT_DIR\n\nShows how far the job writing OUTPUT_DIR got: complete, running (and by\n"
               "which process) or interrupted, layers and tensors durable, its run identity.\n");
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: slicepipe status OUTPUT_DIR\n");
        return sp_fail(SP_EX_USAGE, "status needs exactly one OUTPUT_DIR");
    }
    return sp_job_status(argv[1]);
}

/* Before anything opens a file: a closed fd among 0-2 gets /dev/null, so no
 * later open (a ring's memfd, a shard) can become "stderr" and receive the
 * progress line; a vanished log reader (EPIPE) must not kill a long run. */
static void std_streams(void) {
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (n >= 0 && n != fd) { /* cannot happen (lowest free fd), but never leave it misplaced */
            dup2(n, fd);
            close(n);
        }
    }
    signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv) {
    std_streams();
    sp_blas_core_ensure(argv); /* before any BLAS call: may re-execute with OpenBLAS's right kernels (blas_core.h) */
    opterr = 0; /* bad options are reported once, by bad_option */
    if (argc < 2) {
        usage_main(stderr);
        fprintf(stderr, "slicepipe: no command given\n");
        return SP_EX_USAGE;
    }
    const char *cmd = argv[1];
    g_cmd = cmd;
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        char kernels[256];
        sp_blas_core_describe(kernels, sizeof kernels);
        printf("slicepipe %s\nkernels: %s\nbackends (auto takes the first usable one it may take here):\n", SP_VERSION, kernels);
        for (int i = 0; i < sp_bk_reg_count(); i++) {
            const sp_bk_reg *b = sp_bk_reg_at(i);
            char why[256] = "";
            int ok = b->usable(why, (int64_t)sizeof why);
            printf("  %-6s %s: %s%s\n", b->name, b->about, ok ? "usable" : "not usable: ", ok ? "" : why);
            if (ok && b->for_auto && !b->for_auto(SP_BK_PREC_F32, why, (int64_t)sizeof why))
                printf("         not taken by auto here: %s\n", why);
        }
        printf("families (config.json model_type, then the llama.cpp architecture export writes; -: none):\n");
        for (int i = 0; i < sp_arch_count(); i++) {
            const sp_arch *a = sp_arch_at(i);
            printf("  %-8s %s\n", a->model_type, a->gguf.arch ? a->gguf.arch : "-");
        }
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "help") || !strcmp(cmd, "-h")) {
        usage_main(stdout);
        return 0;
    }
    if (!strcmp(cmd, "inspect")) return die(cmd_inspect(argc - 1, argv + 1));
    if (!strcmp(cmd, "eval")) return die(cmd_eval(argc - 1, argv + 1));
    if (!strcmp(cmd, "run")) return die(cmd_run(argc - 1, argv + 1));
    if (!strcmp(cmd, "status")) return die(cmd_status(argc - 1, argv + 1));
    if (!strcmp(cmd, "synth")) return die(cmd_synth(argc - 1, argv + 1));
    if (!strcmp(cmd, "verify")) return die(cmd_verify(argc - 1, argv + 1));
    if (!strcmp(cmd, "tokenize")) return die(sp_cmd_tokenize(argc - 1, argv + 1)); /* tools/cmd_tokenize.c */
    if (!strcmp(cmd, "export")) return die(sp_cmd_export(argc - 1, argv + 1));     /* tools/cmd_export.c */
    if (!strcmp(cmd, "generate")) return die(sp_cmd_generate(argc - 1, argv + 1)); /* tools/cmd_generate.c */
    fprintf(stderr, "slicepipe: unknown command '%s'\n", cmd);
    usage_main(stderr);
    return SP_EX_USAGE;
}
