/* tests/test_manifest.c — the manifest parser (pipeline/run/manifest.c): one
 * hand-written invalid manifest per rule (exit 64, the right line number and
 * a keyword in the message), a full valid manifest with every key checked,
 * the defaults, relative-path resolution, output == model detection, and
 * sp_parse_size.
 *
 * Usage: test_manifest   (works in a fresh mkdtemp under /tmp) */
#include "error.h"
#include "gguf.h"
#include "manifest.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

static char g_dir[PATH_MAX]; /* canonical scratch dir */

static void write_bytes(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(text, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
}

/* Writes `text` to DIR/manifest.toml and returns its path (static buffer). */
static const char *put(const char *text) {
    static char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/manifest.toml", g_dir);
    write_bytes(path, text, strlen(text));
    return path;
}

#define HEAD "[model]\npath = \"models/m\"\n[calibration]\ntokens = \"calib.npy\"\n[output]\npath = \"out\"\n"
/* HEAD is lines 1..6; a case that appends starts at line 7. */
/* TEXT_HEAD: [calibration] from text, open for more calibration keys at line 5. */
#define TEXT_HEAD "[model]\npath = \"models/m\"\n[calibration]\ntext = \"wiki.txt\"\n"
#define TEXT_TAIL "[output]\npath = \"out\"\n"

typedef struct bad_case {
    const char *text;
    int line;
    const char *keyword;
} bad_case;

static const bad_case k_bad[] = {
    /* schema */
    {HEAD "[foo]\n", 7, "unknown table [foo]"},
    {HEAD "[slicing]\nsparsity = 0.5\nspars = 0.1\n", 9, "unknown key 'spars' in [slicing]"},
    {"x = 1\n" HEAD, 1, "outside any table"},
    {HEAD "[calibration]\n", 7, "duplicate table [calibration] (first at line 3)"},
    {HEAD "[slicing]\nround_to = 8\n\nround_to = 16\n", 10, "duplicate key 'round_to' in [slicing] (first at line 8)"},
    {HEAD "[resources]\nthreads = 2\n[calibration]\n", 9, "duplicate table"},
    /* types */
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"t\"\nseqlen = \"x\"\n[output]\npath = \"o\"\n", 5,
     "seqlen: expected an integer, got a string"},
    {HEAD "[slicing]\nsparsity = \"0.25\"\n", 8, "sparsity: expected a number, got a string"},
    {HEAD "[slicing]\nround_to = 2.5\n", 8, "round_to: expected an integer, got a float"},
    {HEAD "[slicing]\nround_to = true\n", 8, "expected an integer, got a boolean"},
    {HEAD "[resources]\nspill_dir = 3\n", 8, "spill_dir: expected a string (a path), got an integer"},
    {HEAD "[resources]\nbackend = false\n", 8, "backend: expected a string, got a boolean"},
    {HEAD "[output]\n", 7, "duplicate table [output]"},
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"o\"\ndtype = 16\n", 7,
     "dtype: expected a string, got an integer"},
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"o\"\nshard_bytes = 1.5\n", 7,
     "expected a size string or an integer, got a float"},
    {"[model]\npath = \"\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"o\"\n", 2, "path is empty"},
    /* ranges */
    {HEAD "[slicing]\nsparsity = 1.0\n", 8, "sparsity = 1 is out of range [0, 1)"},
    {HEAD "[slicing]\nsparsity = 1\n", 8, "out of range [0, 1)"},
    {HEAD "[slicing]\nsparsity = -0.1\n", 8, "out of range [0, 1)"},
    {HEAD "[slicing]\nround_to = 0\n", 8, "round_to = 0 is out of range"},
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"t\"\nseqlen = 1\n[output]\npath = \"o\"\n", 5,
     "seqlen = 1 is out of range"},
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"t\"\nnsamples = 0\n[output]\npath = \"o\"\n", 5,
     "nsamples = 0 is out of range"},
    {HEAD "[resources]\nthreads = -1\n", 8, "threads = -1 is out of range"},
    {HEAD "[eval]\ntokens = \"e\"\nwindows = -2\n", 9, "windows = -2 is out of range"},
    {HEAD "[eval]\ntokens = \"e\"\nseqlen = 1\n", 9, "seqlen = 1 is out of range"},
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"o\"\ndtype = \"fp16\"\n", 7,
     "unknown dtype 'fp16'"},
    {HEAD "[resources]\nbackend = \"rocm\"\n", 8, "unknown backend 'rocm'"},
    {HEAD "[slicing]\nbasis = \"Global\"\n", 8, "[slicing] basis: unknown basis 'Global' (per-layer or global)"},
    {HEAD "[slicing]\nbasis = 1\n", 8, "basis: expected a string, got an integer"},
    {HEAD "[slicing]\nglobal_weighting = \"sum\"\n", 8, "unknown global_weighting 'sum' (trace or raw)"},
    /* [slicing] params and policy = "stock" */
    {HEAD "[slicing]\npolicy = \"Stock\"\n", 8, "unknown policy 'Stock' (slicegpt or stock)"},
    {HEAD "[slicing]\nffn_score = \"norm\"\n", 8, "unknown ffn_score 'norm' (energy or leverage)"},
    {HEAD "[slicing]\nparams = 0\n", 8, "[slicing] params = 0 is out of range (0, 1]"},
    {HEAD "[slicing]\nparams = 1.5\n", 8, "params = 1.5 is out of range (0, 1]"},
    {HEAD "[slicing]\nparams = -0.2\n", 8, "params = -0.2 is out of range (0, 1]"},
    {HEAD "[slicing]\nparams = \"0.8\"\n", 8, "params: expected a number, got a string"},
    {HEAD "[slicing]\npolicy = \"stock\"\nparams = 0.8\nsplit = 1.5\n", 10, "split = 1.5 is out of range [0, 1]"},
    {HEAD "[slicing]\npolicy = \"stock\"\nparams = 0.8\nsplit = \"best\"\n", 10,
     "split: expected a number in [0, 1] or \"auto\", got 'best'"},
    {HEAD "[slicing]\npolicy = \"stock\"\nparams = 0.8\nsplit = true\n", 10, "split: expected a number or \"auto\""},
    {HEAD "[slicing]\npolicy = \"stock\"\nparams = 0.8\nsplit_holdout = 4\n", 10,
     "split_holdout is for split = \"auto\""},
    {HEAD "[slicing]\npolicy = \"stock\"\nparams = 0.8\nsplit = \"auto\"\nsplit_holdout = 128\n", 11,
     "holds back 128 of the 128 calibration windows"},
    {HEAD "[slicing]\nsplit_holdout = 4\n", 8, "split_holdout belongs to policy = \"stock\""},
    {HEAD "[slicing]\npolicy = \"stock\"\nparams = 0.8\nffn_ridge = 0\n", 10, "ffn_ridge = 0 is out of range (0, 1]"},
    {HEAD "[slicing]\nsparsity = 0.25\nparams = 0.8\n", 9, "[slicing] gives both sparsity and params; give one"},
    {HEAD "[slicing]\nparams = 0.8\n\nsparsity = 0.25\n", 8, "gives both sparsity and params"},
    {HEAD "[slicing]\nparams = 0.8\nsplit = 0.5\n", 9,
     "[slicing] split belongs to policy = \"stock\", and this manifest's policy is \"slicegpt\""},
    {HEAD "[slicing]\npolicy = \"slicegpt\"\nffn_score = \"leverage\"\n", 9, "ffn_score belongs to policy = \"stock\""},
    {HEAD "[slicing]\nffn_ridge = 0.01\n", 8, "ffn_ridge belongs to policy = \"stock\""},
    {HEAD "[slicing]\nrefit = \"yes\"\n", 8, "[slicing] refit: expected true or false, got a string"},
    {HEAD "[slicing]\nrefit = 1\n", 8, "refit: expected true or false, got an integer"},
    {HEAD "[slicing]\nrefit = true\nrefit_ridge = 2\n", 9, "refit_ridge = 2 is out of range (0, 1]"},
    {HEAD "[slicing]\nrefit = false\nrefit_ridge = 1e-3\n", 9, "refit_ridge is the ridge of refit = true"},
    {HEAD "[slicing]\nbasis = \"global\"\nrefit = true\n", 9, "it takes basis = \"per-layer\""},
    {HEAD "[slicing]\npolicy = \"stock\"\nparams = 0.8\nrefit = true\n", 10,
     "[slicing] refit belongs to policy = \"slicegpt\", and this manifest's policy is \"stock\""},
    {HEAD "[slicing]\npolicy = \"stock\"\nparams = 0.8\nbasis = \"global\"\n", 10,
     "[slicing] basis belongs to policy = \"slicegpt\", and this manifest's policy is \"stock\""},
    {HEAD "[slicing]\nbasis = \"per-layer\"\npolicy = \"stock\"\nparams = 0.8\n", 8, "basis belongs to policy = \"slicegpt\""},
    {HEAD "[slicing]\npolicy = \"stock\"\nglobal_weighting = \"raw\"\nparams = 0.8\n", 9,
     "global_weighting belongs to policy = \"slicegpt\""},
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"o\"\ngguf = \"q4_k\"\n", 7,
     "[output] gguf: unknown GGUF type 'q4_k' (none, f32, f16, bf16, q8_0, q5_1, q5_0, q4_1 or q4_0)"},
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"o\"\ngguf = true\n", 7,
     "gguf: expected a string, got a boolean"},
    {HEAD "[resources]\nmemory = \"16XB\"\n", 8, "bad size '16XB'"},
    {HEAD "[resources]\nmemory = \"1.5GB\"\n", 8, "bad size"},
    {HEAD "[resources]\nmemory = \"0\"\n", 8, "size must be positive"},
    {HEAD "[resources]\nmemory = -5\n", 8, "size must be positive"},
    /* missing required keys */
    {"[calibration]\ntokens = \"t\"\n[output]\npath = \"o\"\n", 0, "missing required key [model] path"},
    {"\n[model]\n[calibration]\ntokens = \"t\"\n[output]\npath = \"o\"\n", 2, "missing required key [model] path"},
    {"[model]\npath = \"m\"\n[output]\npath = \"o\"\n", 0, "missing required key [calibration] tokens"},
    {"[model]\npath = \"m\"\n[calibration]\nseqlen = 8\ntokens = \"t\"\n[output]\ndtype = \"f16\"\n", 6,
     "missing required key [output] path"},
    {HEAD "# eval\n[eval]\nseqlen = 8\n", 8, "missing required key [eval] tokens"},
    /* text inputs: exactly one of tokens and text; sampling and seed */
    {"[model]\npath = \"m\"\n[calibration]\nseqlen = 8\n[output]\npath = \"o\"\n", 3,
     "missing required key [calibration] tokens or text"},
    {HEAD "[eval]\nwindows = 2\n", 7, "missing required key [eval] tokens or text"},
    {TEXT_HEAD "tokens = \"c.npy\"\n" TEXT_TAIL, 5, "[calibration] tokens (line 5) and text (line 4) are mutually exclusive"},
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\nseqlen = 8\ntext = \"c.txt\"\n[output]\npath = \"o\"\n", 6,
     "tokens (line 4) and text (line 6) are mutually exclusive"},
    {TEXT_HEAD TEXT_TAIL "[eval]\ntext = \"e.txt\"\ntokens = \"e.npy\"\n", 9, "[eval] tokens (line 9) and text (line 8)"},
    {TEXT_HEAD "sampling = \"shuffle\"\n" TEXT_TAIL, 5, "[calibration] sampling: unknown sampling 'shuffle' (first or random)"},
    {TEXT_HEAD "sampling = \"Random\"\n" TEXT_TAIL, 5, "unknown sampling 'Random'"},
    {TEXT_HEAD "sampling = 1\n" TEXT_TAIL, 5, "sampling: expected a string, got an integer"},
    {TEXT_HEAD "seed = -1\n" TEXT_TAIL, 5, "seed = -1 is out of range"},
    {TEXT_HEAD "seed = 1.5\n" TEXT_TAIL, 5, "seed: expected an integer, got a float"},
    {TEXT_HEAD "seed = \"7\"\n" TEXT_TAIL, 5, "seed: expected an integer, got a string"},
    {TEXT_HEAD "sampling = \"first\"\nsampling = \"random\"\n" TEXT_TAIL, 6, "duplicate key 'sampling'"},
    {"[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\nsampling = \"random\"\n[output]\npath = \"o\"\n", 5,
     "sampling = \"random\" needs text = FILE"},
    {"[model]\npath = \"m\"\n[calibration]\ntext = \"\"\n[output]\npath = \"o\"\n", 4, "[calibration] text: the path is empty"},
    {"[model]\npath = \"m\"\n[calibration]\ntext = 3\n[output]\npath = \"o\"\n", 4, "text: expected a string (a path)"},
    {HEAD "[eval]\ntext = \"e.txt\"\nsampling = \"random\"\n", 9, "unknown key 'sampling' in [eval]"},
    {HEAD "[eval]\ntext = \"e.txt\"\nseed = 3\n", 9, "unknown key 'seed' in [eval]"},
    {HEAD "[slicing]\ntext = \"x.txt\"\n", 8, "unknown key 'text' in [slicing]"},
    /* output == model */
    {"[model]\npath = \"models/m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"models/m\"\n", 6, "is the model path"},
    {"[model]\npath = \"models/m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"models/m/\"\n", 6, "is the model path"},
    {"[model]\npath = \"models/m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"./models//m/.\"\n", 6,
     "is the model path"},
    {"[model]\npath = \"models/m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"models/x/../m\"\n", 6,
     "is the model path"},
    {"[model]\npath = \"models/m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"link_to_m\"\n", 6, "is the model path"},
    {"[model]\npath = \"sub/../models/m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"models/m//\"\n", 6,
     "is the model path"},
    /* a model path that does not exist yet (the loader reports 66 later): still compared */
    {"[model]\npath = \"nothere/m\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"nothere/x/../m/\"\n", 6,
     "is the model path"},
    /* syntax outside the subset */
    {HEAD "[slicing]\nround_to = [8, 16]\n", 8, "arrays are not supported"},
    {HEAD "[slicing]\nround_to = { a = 1 }\n", 8, "inline tables are not supported"},
    {HEAD "[slicing]\nround_to = 2024-01-01\n", 8, "dates and times are not supported"},
    {HEAD "[slicing]\nround_to = 07:32:00\n", 8, "dates and times are not supported"},
    {HEAD "[resources]\nspill_dir = \"\"\"x\"\"\"\n", 8, "multi-line strings are not supported"},
    {HEAD "[resources]\nspill_dir = '''x'''\n", 8, "multi-line strings are not supported"},
    {HEAD "[[eval]]\n", 7, "array tables"},
    {HEAD "[model.sub]\n", 7, "dotted table names"},
    {HEAD "[ \"eval\" ]\n", 7, "malformed table header"},
    {HEAD "[eval\n", 7, "malformed table header"},
    {HEAD "[eval] x\n", 7, "unexpected text after the table header"},
    {HEAD "[slicing]\nround.to = 8\n", 8, "dotted keys are not supported"},
    {HEAD "[slicing]\n\"round_to\" = 8\n", 8, "quoted keys are not supported"},
    {HEAD "[slicing]\nround_to 8\n", 8, "expected '=' after key 'round_to'"},
    {HEAD "[slicing]\nround_to =\n", 8, "missing value"},
    {HEAD "[slicing]\nround_to = # c\n", 8, "missing value"},
    {HEAD "[slicing]\nround_to = 8 9\n", 8, "unexpected text after the value"},
    {HEAD "[resources]\nbackend = \"cpu\" x\n", 8, "unexpected text after the value"},
    {HEAD "[resources]\nbackend = cpu\n", 8, "strings must be quoted"},
    {HEAD "[resources]\nbackend = \"cpu\n", 8, "unterminated string"},
    {HEAD "[resources]\nbackend = 'cpu\n", 8, "unterminated string"},
    {HEAD "[resources]\nspill_dir = \"a\\qb\"\n", 8, "unsupported escape '\\q'"},
    {HEAD "[resources]\nspill_dir = \"a\\u00\"\n", 8, "4 hex digits"},
    {HEAD "[resources]\nspill_dir = \"a\\u0000b\"\n", 8, "\\u0000 is not allowed"},
    {HEAD "[resources]\nspill_dir = \"a\\uD800b\"\n", 8, "is not allowed"},
    {HEAD "[resources]\nspill_dir = \"a\x01" "b\"\n", 8, "control character 0x01"},
    {HEAD "[slicing]\nround_to = 08\n", 8, "leading zeros"},
    {HEAD "[slicing]\nround_to = 1__0\n", 8, "'_' must sit between digits"},
    {HEAD "[slicing]\nround_to = 10_\n", 8, "'_' must sit between digits"},
    {HEAD "[slicing]\nround_to = _10\n", 8, "strings must be quoted"},
    {HEAD "[slicing]\nround_to = 99999999999999999999\n", 8, "integer '99999999999999999999' is out of range"},
    {HEAD "[slicing]\nsparsity = 1e999\n", 8, "float '1e999' is out of range"},
    {HEAD "[slicing]\nsparsity = nan\n", 8, "inf and nan are not supported"},
    {HEAD "[slicing]\nsparsity = -inf\n", 8, "inf and nan are not supported"},
    {HEAD "[slicing]\nround_to = 0x10\n", 8, "hexadecimal"},
    {HEAD "[slicing]\nsparsity = .5\n", 8, "strings must be quoted"},
    {HEAD "[slicing]\nsparsity = 5.\n", 8, "digits after the '.'"},
    {HEAD "[slicing]\nsparsity = 5e\n", 8, "digits in its exponent"},
    {HEAD "[slicing]\nsparsity = 0.2.5\n", 8, "invalid number"},
    {HEAD "[slicing]\nround_to = TRUE\n", 8, "strings must be quoted"},
    {HEAD "[resources]\nspill_dir = \"caf\xc3\"\n", 8, "invalid UTF-8"},
    {HEAD "# \xed\xa0\x80 surrogate\n", 7, "invalid UTF-8"},
    {HEAD "= 3\n", 7, "expected a key"},
};
#define N_BAD ((int)(sizeof k_bad / sizeof k_bad[0]))

static void test_bad_cases(void) {
    for (int i = 0; i < N_BAD; i++) {
        sp_manifest m;
        const char *path = put(k_bad[i].text);
        sp_err_clear();
        int rc = sp_manifest_load(path, &m);
        char want[PATH_MAX + 64];
        snprintf(want, sizeof want, "%s:%d: ", path, k_bad[i].line);
        const char *msg = sp_errmsg();
        CHECK(rc == SP_EX_USAGE, "case %d (%s): rc %d, msg '%s'", i, k_bad[i].keyword, rc, msg);
        CHECK(strncmp(msg, want, strlen(want)) == 0, "case %d: message '%s' does not start with '%s'", i, msg, want);
        CHECK(strstr(msg, k_bad[i].keyword) != NULL, "case %d: message '%s' lacks '%s'", i, msg, k_bad[i].keyword);
        CHECK(m.path == NULL && m.model_path == NULL && m.backend == NULL, "case %d: struct not cleared on error", i);
        sp_manifest_free(&m);
    }
}

/* A NUL byte cannot live in a C string literal: written by length. */
static void test_nul_and_missing(void) {
    static const char text[] = HEAD "# a\0b\n";
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/nul.toml", g_dir);
    write_bytes(path, text, sizeof text - 1);
    sp_manifest m;
    int rc = sp_manifest_load(path, &m);
    CHECK(rc == SP_EX_USAGE && strstr(sp_errmsg(), ":7: NUL byte"), "NUL: rc %d '%s'", rc, sp_errmsg());

    snprintf(path, sizeof path, "%s/does-not-exist.toml", g_dir);
    rc = sp_manifest_load(path, &m);
    CHECK(rc == SP_EX_NOINPUT && strstr(sp_errmsg(), "does-not-exist.toml"), "missing: rc %d '%s'", rc, sp_errmsg());
    sp_manifest_free(&m);

    /* a directory given as the manifest */
    rc = sp_manifest_load(g_dir, &m);
    CHECK(rc == SP_EX_USAGE, "directory as manifest: rc %d '%s'", rc, sp_errmsg());
}

static int streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

static char *cat(const char *a, const char *b) {
    static char buf[4][PATH_MAX + 256];
    static int k;
    char *r = buf[k++ % 4];
    snprintf(r, sizeof buf[0], "%s%s", a, b);
    return r;
}

/* Every key set, every value checked; comments, CRLF, escapes, underscores. */
static void test_full(void) {
    const char *text =
        "# slicepipe manifest\r\n"
        "\r\n"
        "[model]   # the input\r\n"
        "path = \"models/m\"\r\n"
        "[calibration]\n"
        "  tokens = \"data/c\\u0061lib.npy\"  # \\u escape\n"
        "\tseqlen = +1_024\n"
        "nsamples=64\n"
        "[slicing]\n"
        "sparsity = 2.5e-1\n"
        "round_to = 16\n"
        "[output]\n"
        "path = 'out dir/x#y'   # literal string keeps the '#'\n"
        "dtype = \"bf16\"\n"
        "shard_bytes = \"2 GiB\"\n"
        "[resources]\n"
        "memory = 123_456_789\n"
        "threads = 12\n"
        "spill_dir = \"/abs/sp\\\"ill\\\\dir\\t\\n\"\n"
        "backend = \"cuda\"\n"
        "[eval]\n"
        "tokens = 'C:\\eval.npy'\n"
        "seqlen = 256\n"
        "windows = 10\n";
    sp_manifest m;
    const char *path = put(text);
    int rc = sp_manifest_load(path, &m);
    CHECK(rc == 0, "full manifest: rc %d '%s'", rc, sp_errmsg());
    if (rc) return;
    CHECK(streq(m.path, path), "path %s", m.path);
    CHECK(streq(m.model_path, cat(g_dir, "/models/m")), "model_path %s", m.model_path);
    CHECK(streq(m.calib_tokens, cat(g_dir, "/data/calib.npy")), "calib_tokens %s", m.calib_tokens);
    CHECK(m.calib_seqlen == 1024, "seqlen %lld", (long long)m.calib_seqlen);
    CHECK(m.calib_nsamples == 64, "nsamples %lld", (long long)m.calib_nsamples);
    CHECK(m.sparsity == 0.25, "sparsity %g", m.sparsity);
    CHECK(m.round_to == 16, "round_to %lld", (long long)m.round_to);
    CHECK(streq(m.output_path, cat(g_dir, "/out dir/x#y")), "output_path %s", m.output_path);
    CHECK(m.output_dtype == SP_DTYPE_BF16, "dtype %d", (int)m.output_dtype);
    CHECK(m.shard_bytes == 2LL * 1024 * 1024 * 1024, "shard_bytes %lld", (long long)m.shard_bytes);
    CHECK(m.memory_bytes == 123456789, "memory %lld", (long long)m.memory_bytes);
    CHECK(m.threads == 12, "threads %lld", (long long)m.threads);
    CHECK(streq(m.spill_dir, "/abs/sp\"ill\\dir\t\n"), "spill_dir '%s'", m.spill_dir);
    CHECK(streq(m.backend, "cuda"), "backend %s", m.backend);
    CHECK(m.has_eval == 1, "has_eval");
    CHECK(streq(m.eval_tokens, cat(g_dir, "/C:\\eval.npy")), "eval_tokens %s", m.eval_tokens);
    CHECK(m.eval_seqlen == 256 && m.eval_windows == 10, "eval %lld %lld", (long long)m.eval_seqlen,
          (long long)m.eval_windows);
    sp_manifest_free(&m);
    CHECK(m.path == NULL && m.backend == NULL, "free clears");
    sp_manifest_free(&m); /* twice: harmless */
    sp_manifest_free(NULL);

    /* integer where a float is expected; decimal size; f16; cpu; \u to UTF-8 */
    path = put("[model]\npath = \"/abs/model\"\n[calibration]\ntokens = \"t\"\n[output]\npath = \"\\u00e9t\\u00E9\"\n"
               "dtype = \"f16\"\nshard_bytes = \"768MB\"\n[slicing]\nsparsity = 0\n[resources]\nbackend = \"cpu\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0, "variant: rc %d '%s'", rc, sp_errmsg());
    if (!rc) {
        CHECK(m.sparsity == 0.0, "sparsity int 0 -> %g", m.sparsity);
        CHECK(m.shard_bytes == 768000000, "shard %lld", (long long)m.shard_bytes);
        CHECK(m.output_dtype == SP_DTYPE_F16, "f16");
        CHECK(streq(m.backend, "cpu"), "cpu");
        CHECK(streq(m.model_path, "/abs/model"), "absolute path kept: %s", m.model_path);
        CHECK(streq(m.output_path, cat(g_dir, "/\xc3\xa9t\xc3\xa9")), "utf-8 from \\u: %s", m.output_path);
        sp_manifest_free(&m);
    }
}

/* [calibration] and [eval] from text: paths resolved, sampling and seed kept. */
static void test_text(void) {
    sp_manifest m;
    const char *path = put(TEXT_HEAD "sampling = \"random\"\nseed = 9223372036854775807\nnsamples = 4\n" TEXT_TAIL
                           "[eval]\ntext = \"data/wiki.test.jsonl.gz\"\nwindows = 3\n");
    int rc = sp_manifest_load(path, &m);
    CHECK(rc == 0, "text manifest: rc %d '%s'", rc, sp_errmsg());
    if (!rc) {
        CHECK(m.calib_tokens == NULL && streq(m.calib_text, cat(g_dir, "/wiki.txt")), "calib_text %s", m.calib_text);
        CHECK(m.calib_sampling == SP_CALIB_SAMPLING_RANDOM, "sampling %d", (int)m.calib_sampling);
        CHECK(m.calib_seed == INT64_MAX, "seed %lld", (long long)m.calib_seed);
        CHECK(m.calib_nsamples == 4, "nsamples %lld", (long long)m.calib_nsamples);
        CHECK(m.has_eval && m.eval_tokens == NULL && streq(m.eval_text, cat(g_dir, "/data/wiki.test.jsonl.gz")),
              "eval_text %s", m.eval_text);
        CHECK(m.eval_windows == 3 && m.eval_seqlen == 2048, "eval %lld %lld", (long long)m.eval_windows,
              (long long)m.eval_seqlen);
        sp_manifest_free(&m);
        CHECK(m.calib_text == NULL && m.eval_text == NULL, "free clears the text paths");
    }
    /* "first" spelled out, an explicit seed 0, and text with a token [eval] */
    path = put(TEXT_HEAD "sampling = \"first\"\nseed = 0\n" TEXT_TAIL "[eval]\ntokens = \"/abs/e.npy\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.calib_sampling == SP_CALIB_SAMPLING_FIRST && m.calib_seed == 0 && streq(m.eval_tokens, "/abs/e.npy") &&
              m.eval_text == NULL,
          "first: rc %d '%s'", rc, sp_errmsg());
    sp_manifest_free(&m);
    /* the basis and GGUF keys: defaults, then each value */
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\n[output]\npath = \"o\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.basis == SP_BASIS_PER_LAYER && m.global_weighting == SP_WEIGHT_TRACE && m.gguf_type == -1,
          "defaults: rc %d basis %d weighting %d gguf %d", rc, (int)m.basis, (int)m.global_weighting, m.gguf_type);
    sp_manifest_free(&m);
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\n[slicing]\nbasis = \"global\"\n"
               "global_weighting = \"raw\"\n[output]\npath = \"o\"\ngguf = \"q8_0\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.basis == SP_BASIS_GLOBAL && m.global_weighting == SP_WEIGHT_RAW && m.gguf_type == SP_GGUF_T_Q8_0,
          "global raw q8_0: rc %d basis %d weighting %d gguf %d", rc, (int)m.basis, (int)m.global_weighting, m.gguf_type);
    sp_manifest_free(&m);
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\n[slicing]\nbasis = \"per-layer\"\n"
               "global_weighting = \"trace\"\n[output]\npath = \"o\"\ngguf = \"none\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.basis == SP_BASIS_PER_LAYER && m.global_weighting == SP_WEIGHT_TRACE && m.gguf_type == -1,
          "explicit defaults: rc %d '%s'", rc, sp_errmsg());
    sp_manifest_free(&m);
    /* [slicing] params and the stock policy's keys: defaults, then each value */
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\n[output]\npath = \"o\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.policy == SP_POLICY_SLICEGPT && !m.has_params && m.split == 0 && m.ffn_score == SP_SCORE_ENERGY &&
              m.ffn_ridge == 1e-4 && m.sparsity == 0.25,
          "slicing defaults: rc %d policy %d has_params %d split %g score %d ridge %g", rc, (int)m.policy, m.has_params,
          m.split, (int)m.ffn_score, m.ffn_ridge);
    CHECK(m.refit == 0 && m.refit_ridge == 1e-4, "refit defaults: %d %g", m.refit, m.refit_ridge);
    sp_manifest_free(&m);
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\n[slicing]\npolicy = \"stock\"\nparams = 1\n"
               "split = 0.5\nffn_score = \"leverage\"\nffn_ridge = 1e-3\n[output]\npath = \"o\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.policy == SP_POLICY_STOCK && m.has_params && m.params == 1.0 && m.split == 0.5 &&
              m.ffn_score == SP_SCORE_LEVERAGE && m.ffn_ridge == 1e-3,
          "stock keys: rc %d '%s' policy %d has_params %d params %g split %g score %d ridge %g", rc, sp_errmsg(),
          (int)m.policy, m.has_params, m.params, m.split, (int)m.ffn_score, m.ffn_ridge);
    sp_manifest_free(&m);
    /* refit: both keys given (their defaults: above) */
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\n[slicing]\nrefit = true\nrefit_ridge = 1e-2\n"
               "[output]\npath = \"o\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.refit == 1 && m.refit_ridge == 1e-2, "refit keys: rc %d '%s' refit %d ridge %g", rc, sp_errmsg(),
          m.refit, m.refit_ridge);
    sp_manifest_free(&m);
    /* split = "auto": the hold-out defaults to nsamples / 4, at least 1; split = 1 is the global basis alone */
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\nnsamples = 3\n[slicing]\npolicy = \"stock\"\n"
               "params = 0.8\nsplit = \"auto\"\n[output]\npath = \"o\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.split_auto && m.split_holdout == 1, "split auto: rc %d '%s' auto %d holdout %lld", rc, sp_errmsg(),
          m.split_auto, (long long)m.split_holdout);
    sp_manifest_free(&m);
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\nnsamples = 64\n[slicing]\npolicy = \"stock\"\n"
               "params = 0.8\nsplit = \"auto\"\n[output]\npath = \"o\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.split_auto && m.split_holdout == 16, "split auto, 64 windows: holdout %lld", (long long)m.split_holdout);
    sp_manifest_free(&m);
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\n[slicing]\npolicy = \"stock\"\nparams = 0.8\n"
               "split = 1\n[output]\npath = \"o\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && !m.split_auto && m.split == 1.0, "split 1: rc %d '%s'", rc, sp_errmsg());
    sp_manifest_free(&m);
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\n[slicing]\npolicy = \"slicegpt\"\nparams = 0.7\n"
               "basis = \"global\"\n[output]\npath = \"o\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.policy == SP_POLICY_SLICEGPT && m.has_params && m.params == 0.7 && m.basis == SP_BASIS_GLOBAL,
          "slicegpt with params: rc %d '%s'", rc, sp_errmsg());
    sp_manifest_free(&m);
    /* a random seed may come with tokens only if sampling stays "first" */
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"c.npy\"\nseed = 5\n[output]\npath = \"o\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.calib_seed == 5 && m.calib_text == NULL, "tokens + seed: rc %d '%s'", rc, sp_errmsg());
    sp_manifest_free(&m);
}

static void test_defaults(void) {
    sp_manifest m;
    const char *path = put(HEAD);
    int rc = sp_manifest_load(path, &m);
    CHECK(rc == 0, "minimal: rc %d '%s'", rc, sp_errmsg());
    if (rc) return;
    CHECK(m.calib_seqlen == 2048 && m.calib_nsamples == 128, "calib defaults %lld %lld", (long long)m.calib_seqlen,
          (long long)m.calib_nsamples);
    CHECK(m.sparsity == 0.25 && m.round_to == 8, "slicing defaults %g %lld", m.sparsity, (long long)m.round_to);
    CHECK(m.output_dtype == SP_DTYPE_INVALID, "dtype default = the model's");
    CHECK(m.shard_bytes == 4000000000LL && m.memory_bytes == 16000000000LL, "sizes %lld %lld",
          (long long)m.shard_bytes, (long long)m.memory_bytes);
    CHECK(m.threads == 0 && m.spill_dir == NULL && streq(m.backend, "auto"), "resources defaults");
    CHECK(m.has_eval == 0 && m.eval_tokens == NULL && m.eval_seqlen == 0 && m.eval_windows == 0, "no eval");
    CHECK(m.calib_text == NULL && m.eval_text == NULL && m.calib_sampling == SP_CALIB_SAMPLING_FIRST && m.calib_seed == 0,
          "text defaults");
    sp_manifest_free(&m);

    /* [eval] seqlen defaults to the calibration seqlen */
    path = put("[model]\npath = \"m\"\n[calibration]\ntokens = \"t\"\nseqlen = 512\n[output]\npath = \"o\"\n"
               "[eval]\ntokens = \"e\"\n");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.has_eval && m.eval_seqlen == 512 && m.eval_windows == 0, "eval defaults: rc %d seqlen %lld", rc,
          (long long)m.eval_seqlen);
    sp_manifest_free(&m);

    /* empty [slicing] and a file without a final newline */
    path = put(HEAD "[slicing]\n[resources]\nthreads = 3");
    rc = sp_manifest_load(path, &m);
    CHECK(rc == 0 && m.threads == 3 && m.sparsity == 0.25, "no final newline: rc %d '%s'", rc, sp_errmsg());
    sp_manifest_free(&m);
}

/* Relative paths resolve against the manifest's folder, whatever the cwd and
 * however the manifest path itself is written. */
static void test_relative(void) {
    char sub[PATH_MAX + 16], path[PATH_MAX + 32], cwd[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/sub", g_dir);
    mkdir(sub, 0755);
    snprintf(path, sizeof path, "%s/m.toml", sub);
    const char *text = "[model]\npath = \"../models/m\"\n[calibration]\ntokens = \"t.npy\"\n[output]\npath = \"o\"\n";
    write_bytes(path, text, strlen(text));
    if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
    if (chdir(g_dir) != 0) {
        CHECK(0, "chdir");
        return;
    }
    sp_manifest m;
    int rc = sp_manifest_load("sub/m.toml", &m);
    CHECK(rc == 0, "relative manifest: rc %d '%s'", rc, sp_errmsg());
    if (!rc) {
        CHECK(streq(m.model_path, cat(g_dir, "/sub/../models/m")), "model %s", m.model_path);
        CHECK(streq(m.calib_tokens, cat(g_dir, "/sub/t.npy")), "tokens %s", m.calib_tokens);
        char *real = realpath(m.model_path, NULL);
        CHECK(streq(real, cat(g_dir, "/models/m")), "resolves to %s", real);
        free(real);
        sp_manifest_free(&m);
    }
    /* a bare file name: the folder is the cwd */
    if (chdir(sub) == 0) {
        rc = sp_manifest_load("m.toml", &m);
        CHECK(rc == 0 && streq(m.output_path, cat(g_dir, "/sub/o")), "bare name: rc %d %s", rc, m.output_path);
        sp_manifest_free(&m);
    }
    if (cwd[0] && chdir(cwd) != 0) CHECK(0, "chdir back");
}

/* Lines far longer than any fixed buffer are parsed whole. */
static void test_long_lines(void) {
    size_t n = 200000;
    char *text = malloc(n * 2 + 512);
    char *o = text;
    o += sprintf(o, HEAD "#");
    memset(o, 'c', n), o += n;
    o += sprintf(o, "\n[resources]\nspill_dir = \"");
    memset(o, 'd', n), o += n;
    o += sprintf(o, "\"\nthreads = 1\n");
    const char *path = put(text);
    free(text);
    sp_manifest m;
    int rc = sp_manifest_load(path, &m);
    CHECK(rc == 0, "long lines: rc %d '%s'", rc, sp_errmsg());
    if (!rc) {
        CHECK(m.spill_dir && strlen(m.spill_dir) == strlen(g_dir) + 1 + n, "spill_dir kept whole");
        CHECK(m.threads == 1, "line after the long one parsed");
        sp_manifest_free(&m);
    }
    /* an error after a long line still has the right line number */
    text = malloc(n + 256);
    o = text;
    o += sprintf(o, HEAD "#");
    memset(o, 'c', n), o += n;
    sprintf(o, "\n[resources]\nthreads = -3\n");
    path = put(text);
    free(text);
    rc = sp_manifest_load(path, &m);
    CHECK(rc == SP_EX_USAGE && strstr(sp_errmsg(), ":9: [resources] threads = -3"), "long then bad: %s", sp_errmsg());
}

static void test_parse_size(void) {
    static const struct {
        const char *s;
        int64_t v;
    } ok[] = {
        {"16GB", 16000000000LL}, {"768MB", 768000000LL}, {"4GiB", 4294967296LL}, {"1000", 1000},
        {"1KiB", 1024},          {"5kb", 5000},          {"2TB", 2000000000000LL}, {"1TiB", 1099511627776LL},
        {"3MiB", 3145728},       {"10 MB", 10000000},    {"12B", 12},             {"0", 0},
        {"7gib", 7516192768LL},  {"9223372036854775807", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -7;
        int rc = sp_parse_size(ok[i].s, &v);
        CHECK(rc == 0 && v == ok[i].v, "'%s' -> rc %d v %lld, want %lld", ok[i].s, rc, (long long)v, (long long)ok[i].v);
    }
    static const char *const bad[] = {"",     "GB",  "-1GB", "+1",    "1.5GB", "16G",  "16 ", " 16GB",
                                      "16GBx", "16iB", "1e9", "16 GB ", "9223372036854775808", "10000000TB",
                                      "9000000TiB", "16 G B", "0x10", "16Gib2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = -7;
        int rc = sp_parse_size(bad[i], &v);
        CHECK(rc == -1 && v == -7, "'%s' should be rejected (rc %d v %lld)", bad[i], rc, (long long)v);
    }
    int64_t v;
    CHECK(sp_parse_size(NULL, &v) == -1, "NULL");
}

int main(void) {
    char tmpl[] = "/tmp/sp_manifest_XXXXXX";
    if (!mkdtemp(tmpl) || !realpath(tmpl, g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/models", g_dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/models/m", g_dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/models/x", g_dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub", g_dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/link_to_m", g_dir);
    if (symlink("models/m", p) != 0) perror("symlink");

    test_bad_cases();
    test_nul_and_missing();
    test_full();
    test_text();
    test_defaults();
    test_relative();
    test_long_lines();
    test_parse_size();

    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (!g_fail && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    if (g_fail) fprintf(stderr, "%d check(s) failed; scratch kept in %s\n", g_fail, g_dir);
    else printf("test_manifest: %d invalid manifests + valid cases, all passed\n", N_BAD);
    return g_fail ? 1 : 0;
}
