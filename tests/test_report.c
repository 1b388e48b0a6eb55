/* tests/test_report.c — pipeline/run/report: slicing.json parsed back with cJSON
 * (every value, eigenvalues bit-exact, EVR recomputed independently), the EVR
 * arithmetic on hand-checked cases, HTML escaping and structure, and the
 * error codes. Leaves slicing.json and report.html of a synthetic 12-layer
 * report in OUT_DIR (argv[1]) for tests/test_report.sh to render. */
#include "error.h"
#include "eval.h"
#include "manifest.h"
#include "model.h"
#include "report.h"
#include "slice_plan.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"

#define D 256
#define L 12
static const char *k_name = "tiny-llama <script>alert(\"x\")</script> & 'q'";

static double g_eig[2 * L + 1][D]; /* embed, then attn/mlp per layer */
static sp_report_layer g_layers[L];
static const sp_report_timing g_timings[] = {{"calibration", 12.5}, {"layers <&>", 301.25}, {"eval", 40.0}};

/* Deterministic pseudo-random doubles with full 53-bit mantissas, so a
 * printer that keeps only 15 digits would be caught. */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * 0x1.0p-53;
}

static void make_spectrum(double *e, int j) {
    /* Power-law decay whose exponent depends on the PCA, with a few "outlier"
     * directions on top, as in real residual streams; strictly descending. */
    double alpha = 0.3 + 0.04 * j;
    for (int i = 0; i < D; i++) e[i] = 50.0 * pow(1.0 + i, -alpha) * (1.0 + 0.01 * urand());
    e[0] *= 40;
    e[1] *= 8;
    for (int i = 1; i < D; i++)
        if (e[i] >= e[i - 1]) e[i] = e[i - 1] * (1 - 1e-3 * (0.5 + urand()));
}

static void make_report(sp_report *r) {
    for (int j = 0; j < 2 * L + 1; j++) make_spectrum(g_eig[j], j);
    for (int l = 0; l < L; l++) {
        sp_report_layer *y = &g_layers[l];
        y->d_in = l == 0 ? 192 : g_layers[l - 1].d_out;
        y->d_mid = l == 5 ? 160 : 192;          /* one layer narrower */
        y->d_out = l == L - 1 ? D : 192;        /* head not sliced */
        y->attn.width = y->d_mid;
        y->attn.eigenvalues = g_eig[1 + 2 * l];
        y->mlp.width = y->d_out;
        y->mlp.eigenvalues = g_eig[2 + 2 * l];
    }
    memset(r, 0, sizeof *r);
    r->model_name = k_name;
    r->hidden_size = D;
    r->n_layers = L;
    r->sparsity = 0.25;
    r->round_to = 8;
    r->embed.width = 192;
    r->embed.eigenvalues = g_eig[0];
    r->layers = g_layers;
    r->nll_dense = 2.0794415416798357;  /* ln 8 */
    r->nll_sliced = 2.3025850929940459; /* ln 10 */
    r->eval_tokens = 130944;
    r->eval_seqlen = 256;
    r->timings = g_timings;
    r->n_timings = 3;
    r->params_before = 15191712;
    r->params_after = 11731296;
    r->bytes_before = 60766848;
    r->bytes_after = 46925184;
}

/* Independent EVR: long double sums. */
static double ref_evr(const double *e, int n, int d) {
    long double top = 0, all = 0;
    for (int i = 0; i < n; i++) {
        all += e[i];
        if (i < d) top += e[i];
    }
    return (double)(top / all);
}

static cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static double num(const cJSON *o, const char *k) {
    const cJSON *v = get(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void check_pca(const cJSON *p, const double *eig, int64_t width, const char *what) {
    CHECK(p && num(p, "width") == (double)width, "%s width %g, want %lld", what, num(p, "width"), (long long)width);
    double want = ref_evr(eig, D, (int)width);
    double got = num(p, "evr");
    CHECK(fabs(got - want) <= 1e-15 * want, "%s evr %.17g, want %.17g", what, got, want);
    CHECK(got > 0.5 && got < 1.0, "%s evr %.17g not in (0.5, 1): the test spectrum is not discriminating", what, got);
    const cJSON *a = get(p, "eigenvalues");
    CHECK(cJSON_IsArray(a) && cJSON_GetArraySize(a) == D, "%s eigenvalues array of %d", what, cJSON_GetArraySize(a));
    int i = 0, exact = 1;
    for (const cJSON *v = a ? a->child : NULL; v; v = v->next, i++)
        if (i >= D || !cJSON_IsNumber(v) || v->valuedouble != eig[i]) exact = 0;
    CHECK(exact && i == D, "%s eigenvalues do not read back bit-exact", what);
}

static void test_evr_arithmetic(void) {
    double e[4] = {4, 3, 2, 1};
    CHECK(sp_report_evr(e, 4, 2) == 0.7, "evr {4,3,2,1} d=2: %.17g", sp_report_evr(e, 4, 2));
    CHECK(sp_report_evr(e, 4, 0) == 0.0, "d=0");
    CHECK(sp_report_evr(e, 4, 4) == 1.0, "d=n");
    CHECK(sp_report_evr(e, 4, 1) == 0.4, "d=1");
    CHECK(isnan(sp_report_evr(e, 4, 5)) && isnan(sp_report_evr(e, 4, -1)), "d out of range");
    CHECK(isnan(sp_report_evr(NULL, 4, 2)), "NULL");
    double z[3] = {0, 0, 0};
    CHECK(isnan(sp_report_evr(z, 3, 1)), "zero total");
    double n[3] = {3, NAN, 1};
    CHECK(isnan(sp_report_evr(n, 3, 1)), "NaN eigenvalue");
    /* Naive summation loses the four small ones (1e16 + 1 == 1e16) and says 1. */
    double big[5] = {1e16, 1, 1, 1, 1};
    double want = 1e16 / (1e16 + 4);
    CHECK(sp_report_evr(big, 5, 1) == want && want < 1.0, "compensated sum: %.17g, want %.17g", sp_report_evr(big, 5, 1), want);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_json(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/slicing.json", dir);
    char *text = slurp(path);
    CHECK(text != NULL, "%s missing", path);
    if (!text) return;
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL, "slicing.json does not parse");
    if (!j) {
        free(text);
        return;
    }
    CHECK(cJSON_IsString(get(j, "model")) && strcmp(get(j, "model")->valuestring, k_name) == 0, "model name verbatim");
    CHECK(num(j, "sparsity") == 0.25 && num(j, "round_to") == 8 && num(j, "hidden_size") == D && num(j, "num_layers") == L,
          "scalars");
    check_pca(get(j, "embed"), g_eig[0], 192, "embed");
    const cJSON *layers = get(j, "layers");
    CHECK(cJSON_GetArraySize(layers) == L, "layers: %d", cJSON_GetArraySize(layers));
    double evr_attn5 = NAN, evr_attn4 = NAN;
    for (int l = 0; l < L && l < cJSON_GetArraySize(layers); l++) {
        const cJSON *y = cJSON_GetArrayItem(layers, l);
        char what[32];
        CHECK(num(y, "d_in") == g_layers[l].d_in && num(y, "d_mid") == g_layers[l].d_mid && num(y, "d_out") == g_layers[l].d_out,
              "layer %d widths", l);
        snprintf(what, sizeof what, "layer %d attn", l);
        check_pca(get(y, "attn"), g_eig[1 + 2 * l], g_layers[l].d_mid, what);
        snprintf(what, sizeof what, "layer %d mlp", l);
        if (l == L - 1)
            CHECK(num(get(y, "mlp"), "evr") == 1.0, "last layer keeps D: evr %.17g", num(get(y, "mlp"), "evr"));
        else
            check_pca(get(y, "mlp"), g_eig[2 + 2 * l], g_layers[l].d_out, what);
        if (l == 4) evr_attn4 = num(get(y, "attn"), "evr");
        if (l == 5) evr_attn5 = num(get(y, "attn"), "evr");
    }
    /* The narrower layer's EVR is computed at its own width. */
    CHECK(fabs(evr_attn5 - ref_evr(g_eig[11], D, 160)) < 1e-15 && fabs(evr_attn5 - ref_evr(g_eig[11], D, 192)) > 1e-4,
          "layer 5 EVR at width 160: %.17g", evr_attn5);
    CHECK(evr_attn4 != evr_attn5, "per-layer EVRs differ");
    const cJSON *ev = get(j, "eval");
    CHECK(num(ev, "nll_dense") == 2.0794415416798357 && fabs(num(ev, "ppl_dense") - 8.0) < 1e-12, "dense eval");
    CHECK(num(ev, "nll_sliced") == 2.3025850929940459 && fabs(num(ev, "ppl_sliced") - 10.0) < 1e-12, "sliced eval");
    CHECK(num(ev, "tokens") == 130944 && num(ev, "seqlen") == 256, "eval counts");
    const cJSON *tm = get(j, "timing");
    CHECK(num(tm, "calibration") == 12.5 && num(tm, "layers <&>") == 301.25 && cJSON_GetArraySize(tm) == 3, "timings");
    CHECK(num(get(j, "params"), "before") == 15191712 && num(get(j, "params"), "after") == 11731296, "params");
    CHECK(num(get(j, "bytes"), "before") == 60766848 && num(get(j, "bytes"), "after") == 46925184, "bytes");
    cJSON_Delete(j);
    free(text);
}

static void test_html(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/report.html", dir);
    char *h = slurp(path);
    CHECK(h != NULL, "%s missing", path);
    if (!h) return;
    CHECK(strstr(h, "<script") == NULL && strstr(h, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;"),
          "model name escaped");
    CHECK(strstr(h, "layers &lt;&amp;&gt;") != NULL, "timing name escaped");
    CHECK(count(h, "http://") == count(h, "xmlns=\"http://www.w3.org/2000/svg\"") && !strstr(h, "https://"),
          "no external references besides the SVG namespace");
    CHECK(strstr(h, "src=") == NULL && strstr(h, "href=") == NULL && strstr(h, "@import") == NULL, "self-contained");
    CHECK(count(h, "<svg ") == 4, "4 svg plots, got %d", count(h, "<svg "));
    CHECK(strstr(h, "id=\"evr-chart\"") && strstr(h, "id=\"spectra-attn\"") && strstr(h, "id=\"spectra-mlp\"") &&
              strstr(h, "id=\"ppl-chart\""),
          "plot ids");
    CHECK(count(h, "class=\"layer-row\"") == L, "layer rows %d", count(h, "class=\"layer-row\""));
    CHECK(count(h, "<polyline class=\"spec\"") == 2 * L + 1, "one spectrum polyline per PCA: %d", count(h, "<polyline class=\"spec\""));
    CHECK(count(h, "<circle class=\"pt attn\"") == L && count(h, "<circle class=\"pt mlp\"") == L, "EVR points");
    /* Kept widths: attn family has 192 (embed, most layers) and 160; mlp has 192 and 256. */
    CHECK(count(h, "<title>kept width 160</title>") == 1 && count(h, "<title>kept width 192</title>") == 2 &&
              count(h, "<title>kept width 256</title>") == 1,
          "kept-width lines");
    CHECK(strstr(h, ">8.0000<") && strstr(h, ">10.0000<"), "perplexities in the table");
    CHECK(strstr(h, "<td>192</td><td>160</td><td>192</td>"), "layer 5 widths row");
    free(h);
}

static void test_unknowns(const char *dir) {
    sp_report r;
    make_report(&r);
    r.nll_sliced = NAN;
    r.nll_dense = NAN;
    r.params_after = -1;
    r.layers = g_layers;
    sp_report_layer ls[L];
    memcpy(ls, g_layers, sizeof ls);
    ls[3].attn.eigenvalues = NULL;
    r.layers = ls;
    char *text;
    CHECK(sp_report_json(&r, &text, NULL) == 0, "json: %s", sp_errmsg());
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL, "json with unknowns parses");
    const cJSON *ev = get(j, "eval");
    CHECK(cJSON_IsNull(get(ev, "nll_sliced")) && cJSON_IsNull(get(ev, "ppl_sliced")) && cJSON_IsNull(get(ev, "ppl_dense")),
          "unknown eval is null");
    CHECK(cJSON_IsNull(get(get(j, "params"), "after")), "unknown params is null");
    const cJSON *a3 = get(cJSON_GetArrayItem(get(j, "layers"), 3), "attn");
    CHECK(cJSON_IsNull(get(a3, "evr")) && cJSON_IsNull(get(a3, "eigenvalues")) && num(a3, "width") == 192, "unrecorded PCA");
    cJSON_Delete(j);
    free(text);
    CHECK(sp_report_html(&r, &text, NULL) == 0, "html: %s", sp_errmsg());
    CHECK(strstr(text, "perplexity not measured") && count(text, "not measured</td>") == 2, "unmeasured perplexity");
    CHECK(count(text, "<polyline class=\"spec\"") == 2 * L, "no polyline for the unrecorded PCA");
    free(text);

    ls[7].d_mid = D + 1;
    CHECK(sp_report_json(&r, &text, NULL) == SP_EX_SOFTWARE && strstr(sp_errmsg(), "d_mid of layer 7"), "bad width: %s",
          sp_errmsg());
    ls[7].d_mid = 192;
    char bad[4200];
    snprintf(bad, sizeof bad, "%s/no/such/dir", dir);
    CHECK(sp_report_write(&r, bad) == SP_EX_CANTCREAT && strstr(sp_errmsg(), "slicing.json"), "unwritable: %s", sp_errmsg());
}

/* The pipeline's adapter, fed the way pipeline/run/slice.c feeds it. */
static void test_write_run(const char *dir) {
    char out[4200];
    snprintf(out, sizeof out, "%s/run", dir);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", out);
    if (system(cmd) != 0) return;
    sp_manifest mf;
    memset(&mf, 0, sizeof mf);
    mf.model_path = "/models/tiny-llama/";
    mf.output_path = out;
    mf.sparsity = 0.25;
    mf.round_to = 8;
    mf.has_eval = 1;
    mf.eval_seqlen = 256;
    sp_model m;
    memset(&m, 0, sizeof m);
    m.cfg.hidden_size = D;
    m.cfg.n_layers = L;
    m.n_params = 1000;
    m.n_bytes = 4000;
    int64_t d_in[L], d_mid[L], d_out[L];
    for (int l = 0; l < L; l++) {
        d_in[l] = g_layers[l].d_in;
        d_mid[l] = g_layers[l].d_mid;
        d_out[l] = g_layers[l].d_out;
    }
    int64_t ffn[L];
    for (int l = 0; l < L; l++) ffn[l] = 4 * D;
    m.cfg.intermediate_size = 4 * D;
    sp_slice_plan plan = {.policy = &sp_policy_per_layer, .width = {d_in, d_mid, d_out}, .ffn = ffn, .shortcuts = 1,
                          .layer_pcas = 2}; /* L and D: m.cfg */
    sp_eval_result dense = {.nll = 2.0, .ppl = exp(2.0), .tokens = 500, .seconds = 3.5};
    sp_eval_result sliced = {.nll = NAN, .ppl = NAN};
    sp_report_stage stg[2] = {{"reader", 1.5, 2.5, 100, 0, 1000}, {"compute", 4.0, 0.5, 10, 20, 3000}};
    sp_report_timing ph[2] = {{"forward", 3.0}, {"eigh", 0.75}};
    sp_report pipe = {.stages = stg, .n_stages = 2, .supervisor_rss_bytes = 500, .pipeline_seconds = 6.0,
                      .memory_plan_bytes = 9000, .phases = ph, .n_phases = 2};
    int rc = sp_report_write_run(&mf, &m, &plan, &g_eig[0][0], &dense, &sliced, 7.25, 750, 3000, 123456789, &pipe, 2);
    CHECK(rc == 0, "write_run: %d %s", rc, sp_errmsg());
    snprintf(cmd, sizeof cmd, "%s/slicing.json", out);
    char *text = slurp(cmd);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    CHECK(j != NULL, "run slicing.json");
    if (j) {
        CHECK(strcmp(cJSON_GetStringValue(get(j, "model")), "tiny-llama") == 0, "model name from the path");
        const cJSON *y5 = cJSON_GetArrayItem(get(j, "layers"), 5);
        CHECK(num(y5, "d_mid") == 160 &&
                  fabs(num(get(y5, "attn"), "evr") - ref_evr(g_eig[11], D, 160)) < 1e-15 &&
                  fabs(num(get(y5, "mlp"), "evr") - ref_evr(g_eig[12], D, 192)) < 1e-15,
              "layer 5 rows of evals");
        CHECK(fabs(num(get(j, "embed"), "evr") - ref_evr(g_eig[0], D, 192)) < 1e-15, "embed row, width d_in[0]");
        const cJSON *tm = get(j, "timing");
        CHECK(num(tm, "slice") == 7.25 && num(tm, "eval dense") == 3.5 && cJSON_GetArraySize(tm) == 2, "run timings");
        CHECK(num(get(j, "eval"), "nll_dense") == 2.0 && cJSON_IsNull(get(get(j, "eval"), "nll_sliced")) &&
                  num(get(j, "eval"), "tokens") == 500,
              "run eval");
        CHECK(num(get(j, "params"), "after") == 750 && num(get(j, "bytes"), "before") == 4000 && num(j, "peak_rss_bytes") == 123456789,
              "run sizes");
        const cJSON *st = get(j, "stages");
        CHECK(num(get(st, "reader"), "busy_seconds") == 1.5 && num(get(st, "compute"), "bytes_written") == 20 &&
                  fabs(num(get(st, "compute"), "gb_per_s_busy") - 30 / 4.0 / 1e9) < 1e-20 &&
                  num(get(st, "supervisor"), "peak_rss_bytes") == 500 && num(st, "peak_rss_sum_bytes") == 4500 &&
                  num(st, "wall_seconds") == 6.0 && num(st, "memory_plan_bytes") == 9000 &&
                  num(get(st, "compute_phases"), "forward") == 3.0 && num(get(st, "compute_phases"), "eigh") == 0.75,
              "run stages and phases");
    }
    cJSON_Delete(j);
    free(text);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "test_report_out";
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    if (system(cmd) != 0) return 1;
    test_evr_arithmetic();
    sp_report r;
    make_report(&r);
    int rc = sp_report_write(&r, dir);
    CHECK(rc == 0, "sp_report_write: %d %s", rc, sp_errmsg());
    test_json(dir);
    test_html(dir);
    test_unknowns(dir);
    test_write_run(dir);
    if (g_fail) {
        fprintf(stderr, "%d check(s) failed\n", g_fail);
        return 1;
    }
    printf("test_report: OK (%s/slicing.json, %s/report.html)\n", dir, dir);
    return 0;
}
