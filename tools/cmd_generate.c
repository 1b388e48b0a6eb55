/* tools/cmd_generate.c — `slicepipe generate MODEL_DIR --prompt TEXT`:
 * greedy or sampled continuation of a prompt with a KV cache
 * (pipeline/model/generate.h), printed as it is generated, with the prompt's and
 * the generation's tokens per second on stderr at the end.
 *
 * Printing. Decoding a token on its own can split a multi-byte character
 * (byte-fallback pieces, byte-level BPE) or lose a leading space (decoders
 * that strip the first piece's space). So the text is decoded over a short
 * window of ids [p, n) that starts inside the already printed text: with
 * a = decode(ids[p, r)) (printed) and b = decode(ids[p, n)), the bytes of b
 * after a are printed once b is longer than a, valid UTF-8 and does not end
 * in U+FFFD (an incomplete sequence); then p = r, r = n. A sequence still
 * incomplete after DETOK_HOLD tokens, and the tail at the end, are printed
 * as they are. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "error.h"
#include "eval.h"
#include "fileio.h"
#include "generate.h"
#include "manifest.h"
#include "model.h"
#include "npy.h"
#include "tokenizer.h"
#include "tokens.h"

#define DETOK_CONTEXT 4 /* prompt ids decoded before the first new one */
#define DETOK_HOLD 8    /* tokens an incomplete UTF-8 sequence may be held back */
#define DEFAULT_WEIGHTS ((int64_t)4000000000) /* 4GB of resident float32 layer weights */

int sp_cmd_generate(int argc, char **argv); /* called by tools/slicepipe.c */

static void usage_generate(FILE *f) {
    fprintf(f,
            "usage: slicepipe generate MODEL_DIR (--prompt TEXT | --prompt-ids 1,2,3 | --prompt-tokens F.npy)\n"
            "                          [options]\n"
            "\n"
            "Continues the prompt with a dense or sliced model (any supported family),\n"
            "incrementally with a KV cache, and prints the continuation as it is generated.\n"
            "Tokens per second (prompt and generation) go to stderr at the end. Stops at the\n"
            "tokenizer's EOS (or a BOS: a new document), at --max-tokens, or at the model's\n"
            "context length (max_position_embeddings). Ids of a vocabulary padded beyond the\n"
            "tokenizer's are never sampled.\n"
            "\n"
            "  --prompt TEXT        encoded with MODEL_DIR's tokenizer and its BOS/EOS rule\n"
            "                       (tokenizer.json, tokenizer.model or tokenizer.bin)\n"
            "  --prompt-ids LIST    or token ids, comma-separated (no tokenizer needed: without\n"
            "                       one the continuation is printed as ids)\n"
            "  --prompt-tokens F    or a 1-D .npy token file\n"
            "  --max-tokens N       tokens to generate (default 256)\n"
            "  --temperature T      0 (default): greedy; > 0: sampling from softmax(logits/T)\n"
            "  --top-k K            sample among the K most likely tokens (default 0: all)\n"
            "  --seed S             the sampler's splitmix64 seed (default 0); the same seed\n"
            "                       gives the same tokens\n"
            "  --no-special         no BOS/EOS around the prompt\n"
            "  --ignore-eos         do not stop at EOS/BOS (fixed-length runs, benchmarks)\n"
            "  --echo               print the prompt before the continuation (id by id, as\n"
            "                       the continuation is)\n"
            "  --threads N          BLAS threads (default 0: all cores; 1 when hidden size < 512)\n"
            "  --backend NAME       auto (default) or a backend of `slicepipe --version` whose\n"
            "                       memory is host memory (cpu, onednn)\n"
            "  --memory SIZE        budget for resident float32 layer weights (default 4GB);\n"
            "                       a model over it re-reads each layer from disk every step\n"
            "  --out-ids F.npy      write the prompt's ids, the generated ids and the stop\n"
            "                       token if one was generated (1-D int32)\n"
            "  --dump-logits F.npy  write the logits each of those new tokens was chosen from\n"
            "                       (float32, new tokens x vocab)\n"
            "  --force              replace an existing --out-ids or --dump-logits file\n"
            "                       (without it an existing file there is refused)\n"
            "  --quiet              no summary on stderr\n");
}

/* ---- incremental decoding of the printed text ---- */

typedef struct detok {
    sp_tok *tok;
    sp_tok_text a, b;
    int64_t p, r; /* ids[p, r) decoded as printed context */
} detok;

static int ends_incomplete(const sp_tok_text *t) {
    if (sp_utf8_valid_prefix(t->s, t->n) != t->n) return 1;
    return t->n >= 3 && (unsigned char)t->s[t->n - 3] == 0xEF && (unsigned char)t->s[t->n - 2] == 0xBF &&
           (unsigned char)t->s[t->n - 1] == 0xBD;
}

/* Prints what ids[0, n) add to the text; final: everything left. */
static int detok_step(detok *d, const int32_t *ids, int64_t n, int final) {
    d->a.n = d->b.n = 0;
    SP_TRY(sp_tok_decode(d->tok, ids + d->p, d->r - d->p, 1, &d->a));
    SP_TRY(sp_tok_decode(d->tok, ids + d->p, n - d->p, 1, &d->b));
    if (d->b.n <= d->a.n) {
        if (final) d->p = d->r = n;
        return 0;
    }
    if (!final && ends_incomplete(&d->b) && n - d->r < DETOK_HOLD) return 0;
    fwrite(d->b.s + d->a.n, 1, (size_t)(d->b.n - d->a.n), stdout);
    fflush(stdout);
    d->p = d->r;
    d->r = n;
    return 0;
}

/* ---- prompt ---- */

static int parse_ids(const char *s, sp_tok_ids *out) {
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ','))
            return sp_fail(SP_EX_USAGE, "--prompt-ids: expected comma-separated ids >= 0, got '%s'", s);
        SP_TRY(sp_tok_ids_push(out, (int32_t)v));
        p = *end ? end + 1 : end;
    }
    if (out->n == 0) return sp_fail(SP_EX_USAGE, "--prompt-ids: no ids in '%s'", s);
    return 0;
}

typedef struct gen_args {
    const char *dir, *prompt, *prompt_ids, *prompt_tokens, *out_ids, *dump_logits, *backend;
    int64_t max_tokens, top_k, threads, weights;
    double temperature;
    uint64_t seed;
    int special, ignore_eos, echo, quiet, out_flags;
} gen_args;

static const char *stop_name[] = {"max-tokens", "eos", "context length"};

static int run_generate(const gen_args *a) {
    sp_model m;
    SP_TRY(sp_model_open(a->dir, &m));
    sp_bk *bk;
    int brc = sp_bk_open_host(a->backend, "generate", &bk);
    if (brc) {
        sp_model_close(&m);
        return brc;
    }
    bk->set_threads(bk, a->threads, m.cfg.hidden_size);
    const int64_t V = m.cfg.vocab_size;
    sp_tok *tok = NULL;
    sp_tok_ids ids = {0};
    sp_tokens tk = {0};
    sp_gen *g = NULL;
    sp_sampler smp = {0};
    detok dt = {0};
    float *dump = NULL;
    sp_io_paths *taken = NULL;
    sp_npy_out *out_ids = NULL, *out_logits = NULL;
    int rc = sp_tok_open(a->dir, &tok);
    if (rc == SP_EX_NOINPUT && !a->prompt) { /* no tokenizer: ids in, ids out */
        rc = 0;
        sp_err_clear();
    }
    /* The outputs are begun before any work: never over an input (io/base/fileio.h). */
    if (!rc) rc = sp_model_add_inputs(&m, &taken);
    if (!rc && a->prompt_tokens) rc = sp_io_paths_add(&taken, a->prompt_tokens, 0);
    if (!rc && a->out_ids) rc = sp_npy_out_begin(a->out_ids, "<i4", 0, a->out_flags, &taken, &out_ids);
    if (!rc && a->dump_logits) rc = sp_npy_out_begin(a->dump_logits, "<f4", V, a->out_flags, &taken, &out_logits);
    if (rc) goto out;
    if (a->prompt) {
        rc = sp_tok_encode(tok, a->prompt, -1, a->special, &ids);
        if (rc) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", sp_errmsg());
            rc = sp_fail(rc, "--prompt: %s", msg);
        }
    } else if (a->prompt_ids) {
        rc = parse_ids(a->prompt_ids, &ids);
    } else {
        rc = sp_tokens_load(a->prompt_tokens, V, 0, &tk);
        for (int64_t i = 0; !rc && i < tk.n; i++) rc = sp_tok_ids_push(&ids, tk.ids[i]);
        if (!rc && tk.n == 0) rc = sp_fail(SP_EX_DATAERR, "%s: the prompt has no tokens", a->prompt_tokens);
    }
    if (rc) goto out;
    if (ids.n == 0) {
        rc = sp_fail(SP_EX_USAGE, "--prompt: the text encodes to no tokens (and --no-special adds no BOS)");
        goto out;
    }
    for (int64_t i = 0; i < ids.n; i++)
        if (ids.ids[i] >= V) {
            rc = sp_fail(SP_EX_DATAERR, "prompt token %lld is id %d, outside the model's vocabulary of %lld", (long long)i,
                         ids.ids[i], (long long)V);
            goto out;
        }
    const int64_t n_prompt = ids.n;
    /* The sequence length: the prompt plus max-tokens, within the model's context. */
    int64_t ctx = sp_model_positions(&m), max_len;
    if (ctx <= 0) ctx = INT64_MAX; /* no max_position_embeddings: no limit */
    if (n_prompt >= ctx) {
        rc = sp_fail(SP_EX_USAGE, "the prompt's %lld tokens fill the model's context of %lld (max_position_embeddings)",
                     (long long)n_prompt, (long long)ctx);
        goto out;
    }
    if (sp_add_i64(n_prompt, a->max_tokens, &max_len) || max_len > ctx) max_len = ctx;
    const int64_t gen_max = max_len - n_prompt;
    /* Everything the run will hold, planned before any of it is allocated: a
     * model without max_position_embeddings bounds max_len by nothing else. */
    int64_t extra = 0, dump_bytes = 0;
    if (sp_mul_i64(max_len, 4, &extra) || (a->dump_logits && (sp_mul_i64(gen_max, V * 4, &dump_bytes) ||
                                                              sp_add_i64(extra, dump_bytes, &extra))))
        extra = INT64_MAX;
    rc = sp_gen_check(&m, bk, max_len > 1 ? max_len - 1 : 1, extra);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        rc = sp_fail(rc, "%s (the prompt's %lld tokens + --max-tokens %lld%s); lower --max-tokens", msg, (long long)n_prompt,
                     (long long)a->max_tokens, m.cfg.max_pos > 0 ? "" : "; the model sets no max_position_embeddings");
        goto out;
    }
    rc = sp_tok_ids_reserve(&ids, max_len); /* room for the whole sequence: no growth later */
    /* A vocabulary padded beyond the tokenizer's (Phi-2: 51200 rows, 50295 ids)
     * has rows no text decodes to: they are never sampled. */
    const int64_t V_tok = tok && sp_tok_vocab_size(tok) < V ? sp_tok_vocab_size(tok) : V;
    if (!rc) rc = sp_sampler_init(&smp, V_tok, a->temperature, a->top_k, a->seed);
    if (!rc && a->dump_logits) rc = sp_alloc((void **)&dump, gen_max, V * 4, "logits dump"); /* (gen_max, V) */
    /* The last generated token is never fed: the cache needs max_len - 1 rows. */
    if (!rc) rc = sp_gen_init(&m, bk, max_len > 1 ? max_len - 1 : 1, a->weights, &g);
    if (rc) goto out;
    const int32_t eos = tok && !a->ignore_eos ? sp_tok_eos_id(tok) : -1;
    const int32_t bos = tok && !a->ignore_eos ? sp_tok_bos_id(tok) : -1;
    dt.tok = tok;
    dt.p = n_prompt > DETOK_CONTEXT ? n_prompt - DETOK_CONTEXT : 0;
    dt.r = n_prompt;
    if (a->echo) { /* the prompt through the same incremental printing, id by id */
        dt.p = dt.r = 0;
        for (int64_t i = 1; i <= n_prompt && !rc; i++) {
            if (tok) rc = detok_step(&dt, ids.ids, i, 0);
            else printf("%d ", ids.ids[i - 1]);
        }
        fflush(stdout);
        if (rc) goto out;
    }

    /* Prefill: the whole prompt in one block. */
    double t0 = sp_now();
    const float *lg;
    rc = sp_gen_feed(g, ids.ids, n_prompt, &lg);
    if (rc) goto out;
    double t1 = sp_now();
    int stop = 0; /* index into stop_name */
    int64_t n_gen = 0;
    for (;;) {
        int32_t next = sp_sampler_next(&smp, lg);
        if (dump) memcpy(dump + (ids.n - n_prompt) * V, lg, (size_t)V * 4);
        ids.ids[ids.n++] = next;
        if (next == eos || next == bos) { /* kept in --out-ids and --dump-logits, not printed */
            stop = 1;
            break;
        }
        n_gen++;
        if (tok) rc = detok_step(&dt, ids.ids, ids.n, 0);
        else printf("%d ", next), fflush(stdout);
        if (rc) goto out;
        if (n_gen == gen_max) {
            stop = n_gen < a->max_tokens ? 2 : 0;
            break;
        }
        rc = sp_gen_feed(g, &ids.ids[ids.n - 1], 1, &lg);
        if (rc) goto out;
    }
    double t2 = sp_now();
    if (tok) rc = detok_step(&dt, ids.ids, n_prompt + n_gen, 1);
    printf("\n");
    fflush(stdout);
    if (rc) goto out;
    if (out_ids) rc = sp_npy_out_write(out_ids, ids.ids, ids.n);
    if (!rc && dump) rc = sp_npy_out_write(out_logits, dump, (ids.n - n_prompt) * V);
    int rc_ids = sp_npy_out_end(out_ids, rc == 0);
    out_ids = NULL;
    if (!rc) rc = rc_ids;
    int rc_logits = sp_npy_out_end(out_logits, rc == 0);
    out_logits = NULL;
    if (!rc) rc = rc_logits;
    if (rc) goto out;
    if (!a->quiet) {
        double tp = t1 - t0, tg = t2 - t1;
        fprintf(stderr,
                "generate: prompt %lld tokens in %.3f s (%.1f tokens/s); generated %lld tokens in %.3f s "
                "(%.1f tokens/s); stopped at %s; %s, %s, KV cache %.1f MiB, state %.1f MiB\n",
                (long long)n_prompt, tp, tp > 0 ? (double)n_prompt / tp : 0.0, (long long)n_gen, tg,
                tg > 0 ? (double)n_gen / tg : 0.0, stop_name[stop],
                a->temperature == 0.0 ? "greedy" : "sampled",
                sp_gen_resident(g) ? "layers resident" : "layers re-read every step",
                (double)(2 * m.cfg.n_layers * sp_gen_max_len(g) * m.cfg.n_kv_heads * m.cfg.head_dim * 4) / (1 << 20),
                (double)sp_gen_bytes(&m, bk, sp_gen_max_len(g), sp_gen_resident(g)) / (1 << 20));
    }
out:
    sp_npy_out_end(out_ids, 0);
    sp_npy_out_end(out_logits, 0);
    sp_io_paths_free(taken);
    free(dump);
    sp_tok_text_free(&dt.a);
    sp_tok_text_free(&dt.b);
    sp_sampler_free(&smp);
    sp_gen_free(g);
    sp_tokens_free(&tk);
    sp_tok_ids_free(&ids);
    sp_tok_free(tok);
    sp_model_close(&m);
    sp_bk_close(bk);
    return rc;
}

static int parse_num(const char *s, const char *what, int64_t min, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < min)
        return sp_fail(SP_EX_USAGE, "%s: expected an integer >= %lld, got '%s'", what, (long long)min, s);
    *out = v;
    return 0;
}

int sp_cmd_generate(int argc, char **argv) {
    static const struct option opts[] = {
        {"prompt", required_argument, 0, 'p'},        {"prompt-ids", required_argument, 0, 'i'},
        {"prompt-tokens", required_argument, 0, 't'}, {"max-tokens", required_argument, 0, 'n'},
        {"temperature", required_argument, 0, 'T'},   {"top-k", required_argument, 0, 'k'},
        {"seed", required_argument, 0, 's'},          {"no-special", no_argument, 0, 'N'},
        {"ignore-eos", no_argument, 0, 'E'},          {"echo", no_argument, 0, 'e'},
        {"threads", required_argument, 0, 'j'},       {"memory", required_argument, 0, 'm'},
        {"backend", required_argument, 0, 'B'},
        {"out-ids", required_argument, 0, 'o'},       {"dump-logits", required_argument, 0, 'd'},
        {"quiet", no_argument, 0, 'q'},               {"help", no_argument, 0, 'h'},
        {"force", no_argument, 0, 'F'},               {0, 0, 0, 0}};
    gen_args a = {.max_tokens = 256, .special = 1, .weights = DEFAULT_WEIGHTS};
    int64_t seed = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'p': a.prompt = optarg; break;
        case 'i': a.prompt_ids = optarg; break;
        case 't': a.prompt_tokens = optarg; break;
        case 'n': SP_TRY(parse_num(optarg, "--max-tokens", 1, &a.max_tokens)); break;
        case 'T': {
            char *end;
            a.temperature = strtod(optarg, &end);
            if (!*optarg || *end || !(a.temperature >= 0.0) || a.temperature > 1e30)
                return sp_fail(SP_EX_USAGE, "--temperature: expected a number >= 0, got '%s'", optarg);
            break;
        }
        case 'k': SP_TRY(parse_num(optarg, "--top-k", 0, &a.top_k)); break;
        case 's': SP_TRY(parse_num(optarg, "--seed", 0, &seed)); break;
        case 'N': a.special = 0; break;
        case 'E': a.ignore_eos = 1; break;
        case 'e': a.echo = 1; break;
        case 'j': SP_TRY(parse_num(optarg, "--threads", 0, &a.threads)); break;
        case 'B': a.backend = optarg; break;
        case 'm':
            if (sp_parse_size(optarg, &a.weights) != 0 || a.weights <= 0)
                return sp_fail(SP_EX_USAGE, "--memory: expected a size such as 4GB, got '%s'", optarg);
            break;
        case 'o': a.out_ids = optarg; break;
        case 'd': a.dump_logits = optarg; break;
        case 'q': a.quiet = 1; break;
        case 'F': a.out_flags = SP_IO_OUT_REPLACE; break;
        case 'h': usage_generate(stdout); return 0;
        default:
            usage_generate(stderr);
            return sp_fail(SP_EX_USAGE, "generate: unknown option or missing value in '%s' (see the usage above)",
                           argv[optind - 1]);
        }
    }
    a.seed = (uint64_t)seed;
    if (optind != argc - 1 || (!!a.prompt + !!a.prompt_ids + !!a.prompt_tokens) != 1) {
        usage_generate(stderr);
        return sp_fail(SP_EX_USAGE, "generate needs MODEL_DIR and one of --prompt, --prompt-ids and --prompt-tokens");
    }
    a.dir = argv[optind];
    return run_generate(&a);
}
