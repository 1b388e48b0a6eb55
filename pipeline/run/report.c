/* pipeline/run/report.c — slicing.json and report.html (see report.h). */
#include "report.h"

#include "error.h"
#include "eval.h"
#include "fileio.h"
#include "manifest.h"
#include "model.h"
#include "slice_plan.h"
#include "strbuf.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- text (io/base/strbuf.h) ---------------- */

/* Text from files (model name, stage names) is escaped for HTML text and
 * attribute values alike. */
static void sb_html(sp_sb *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': sp_sb_str(b, "&amp;"); break;
        case '<': sp_sb_str(b, "&lt;"); break;
        case '>': sp_sb_str(b, "&gt;"); break;
        case '"': sp_sb_str(b, "&quot;"); break;
        case '\'': sp_sb_str(b, "&#39;"); break;
        default: sp_sb_put(b, s, 1);
        }
    }
}

/* ---------------- numbers ---------------- */

double sp_report_evr(const double *eig, int64_t n, int64_t d) {
    if (!eig || n < 0 || d < 0 || d > n) return NAN;
    /* Neumaier summation of the prefix and of the whole. */
    double top = 0, top_c = 0, all = 0, all_c = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = eig[i];
        if (!isfinite(v)) return NAN;
        double t = all + v;
        all_c += fabs(all) >= fabs(v) ? (all - t) + v : (v - t) + all;
        all = t;
        if (i + 1 == d) {
            top = all;
            top_c = all_c;
        }
    }
    double total = all + all_c;
    if (!(total > 0)) return NAN;
    return (top + top_c) / total;
}

/* Shortest of %.15g..%.17g that reads back to the identical double (cJSON's
 * own printing accepts %.15g within an epsilon, which does not round-trip). */
static void fmt_double(char buf[40], double v) {
    if (!isfinite(v)) {
        strcpy(buf, "null");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, 40, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static cJSON *jnum(double v) {
    char buf[40];
    fmt_double(buf, v);
    return isfinite(v) ? cJSON_CreateRaw(buf) : cJSON_CreateNull();
}

static cJSON *jint(int64_t v, int unknown_below_zero) {
    if (unknown_below_zero && v < 0) return cJSON_CreateNull();
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    return cJSON_CreateRaw(buf);
}

/* cJSON_AddItemToObject that tolerates a NULL item (reported as OOM later). */
static int jadd(cJSON *obj, const char *key, cJSON *item) {
    if (!obj || !item) {
        cJSON_Delete(item);
        return 0;
    }
    cJSON_AddItemToObject(obj, key, item);
    return 1;
}

/* ---------------- validation ---------------- */

static int check_width(int64_t w, int64_t D, const char *what, int64_t layer) {
    if (w < 0 || w > D)
        return sp_fail(SP_EX_SOFTWARE, "report: %s of layer %lld is %lld, outside [0, %lld]", what, (long long)layer, (long long)w,
                       (long long)D);
    return 0;
}

static int check_report(const sp_report *r) {
    if (r->hidden_size < 1) return sp_fail(SP_EX_SOFTWARE, "report: hidden_size %lld", (long long)r->hidden_size);
    if (r->n_layers < 0 || (r->n_layers > 0 && !r->layers))
        return sp_fail(SP_EX_SOFTWARE, "report: %lld layers without layer data", (long long)r->n_layers);
    if (r->n_timings < 0 || (r->n_timings > 0 && !r->timings)) return sp_fail(SP_EX_SOFTWARE, "report: timings missing");
    if (r->n_stages < 0 || (r->n_stages > 0 && !r->stages) || r->n_phases < 0 || (r->n_phases > 0 && !r->phases))
        return sp_fail(SP_EX_SOFTWARE, "report: stages or phases missing");
    int64_t D = r->hidden_size;
    SP_TRY(check_width(r->embed.width, D, "embedding width", -1));
    for (int64_t l = 0; l < r->n_layers; l++) {
        const sp_report_layer *L = &r->layers[l];
        SP_TRY(check_width(L->d_in, D, "d_in", l));
        SP_TRY(check_width(L->d_mid, D, "d_mid", l));
        SP_TRY(check_width(L->d_out, D, "d_out", l));
        SP_TRY(check_width(L->attn.width, D, "attn PCA width", l));
        SP_TRY(check_width(L->mlp.width, D, "mlp PCA width", l));
    }
    return 0;
}

/* ---------------- slicing.json ---------------- */

static cJSON *pca_json(const sp_report_pca *p, int64_t D) {
    cJSON *o = cJSON_CreateObject();
    int ok = jadd(o, "width", jint(p->width, 0));
    ok = ok && jadd(o, "evr", jnum(sp_report_evr(p->eigenvalues, D, p->width)));
    if (!p->eigenvalues) {
        ok = ok && jadd(o, "eigenvalues", cJSON_CreateNull());
    } else {
        cJSON *a = cJSON_CreateArray();
        ok = ok && jadd(o, "eigenvalues", a);
        for (int64_t i = 0; ok && i < D; i++) {
            cJSON *v = jnum(p->eigenvalues[i]);
            ok = v != NULL;
            if (ok) cJSON_AddItemToArray(a, v);
        }
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Prints `item` into b if `ok` (the item was built completely), and deletes
 * it in any case; a NULL item, !ok or a failed print marks b failed. */
static void sb_json(sp_sb *b, cJSON *item, int ok) {
    char *s = item && ok ? cJSON_PrintUnformatted(item) : NULL;
    cJSON_Delete(item);
    if (!s) {
        b->oom = 1;
        return;
    }
    sp_sb_str(b, s);
    free(s);
}

int sp_report_json(const sp_report *r, char **text_out, int64_t *len_out) {
    *text_out = NULL;
    SP_TRY(check_report(r));
    int64_t D = r->hidden_size;
    sp_sb b = {0};
    /* One line per section and per layer; cJSON builds one layer at a time so
     * memory stays O(D), not O(L*D). */
    cJSON *head = cJSON_CreateObject();
    int ok = jadd(head, "model", cJSON_CreateString(r->model_name ? r->model_name : ""));
    ok = ok && jadd(head, "hidden_size", jint(D, 0));
    ok = ok && jadd(head, "num_layers", jint(r->n_layers, 0));
    ok = ok && jadd(head, "sparsity", jnum(r->sparsity));
    ok = ok && jadd(head, "round_to", jint(r->round_to, 0));
    ok = ok && jadd(head, "policy", cJSON_CreateString(r->policy ? r->policy : "SliceGPT"));
    ok = ok && jadd(head, "params_target", jnum(r->params_target));
    cJSON *ffn = cJSON_CreateObject();
    ok = ok && jadd(head, "ffn", ffn) && jadd(ffn, "before", jint(r->ffn_before, 1)) && jadd(ffn, "after", jint(r->ffn_after, 1));
    if (r->split_choice) ok = ok && jadd(head, "split_auto", sp_split_choice_json(r->split_choice));
    char *hs = ok ? cJSON_PrintUnformatted(head) : NULL;
    cJSON_Delete(head);
    if (!hs) return sp_fail(SP_EX_SOFTWARE, "out of memory building slicing.json");
    sp_sb_put(&b, hs, (int64_t)strlen(hs) - 1); /* without the closing brace */
    free(hs);

    sp_sb_str(&b, ",\n\"embed\":");
    sb_json(&b, pca_json(&r->embed, D), 1);
    sp_sb_str(&b, ",\n\"layers\":[");
    for (int64_t l = 0; l < r->n_layers && !b.oom; l++) {
        const sp_report_layer *L = &r->layers[l];
        cJSON *o = cJSON_CreateObject();
        int lok = jadd(o, "d_in", jint(L->d_in, 0));
        lok = lok && jadd(o, "d_mid", jint(L->d_mid, 0));
        lok = lok && jadd(o, "d_out", jint(L->d_out, 0));
        lok = lok && jadd(o, "attn", pca_json(&L->attn, D));
        lok = lok && jadd(o, "mlp", pca_json(&L->mlp, D));
        sp_sb_str(&b, l ? ",\n" : "\n");
        sb_json(&b, o, lok);
    }
    sp_sb_str(&b, "],\n\"eval\":");
    cJSON *ev = cJSON_CreateObject();
    ok = jadd(ev, "nll_dense", jnum(r->nll_dense));
    ok = ok && jadd(ev, "ppl_dense", jnum(exp(r->nll_dense)));
    ok = ok && jadd(ev, "nll_sliced", jnum(r->nll_sliced));
    ok = ok && jadd(ev, "ppl_sliced", jnum(exp(r->nll_sliced)));
    ok = ok && jadd(ev, "tokens", r->eval_tokens > 0 ? jint(r->eval_tokens, 0) : cJSON_CreateNull());
    ok = ok && jadd(ev, "seqlen", r->eval_seqlen > 0 ? jint(r->eval_seqlen, 0) : cJSON_CreateNull());
    sb_json(&b, ev, ok);
    sp_sb_str(&b, ",\n\"timing\":");
    cJSON *tm = cJSON_CreateObject();
    ok = tm != NULL;
    for (int i = 0; ok && i < r->n_timings; i++)
        ok = jadd(tm, r->timings[i].name ? r->timings[i].name : "", jnum(r->timings[i].seconds));
    sb_json(&b, tm, ok);
    sp_sb_str(&b, ",\n\"params\":");
    cJSON *pm = cJSON_CreateObject();
    ok = jadd(pm, "before", jint(r->params_before, 1)) && jadd(pm, "after", jint(r->params_after, 1));
    sb_json(&b, pm, ok);
    sp_sb_str(&b, ",\n\"bytes\":");
    cJSON *by = cJSON_CreateObject();
    ok = jadd(by, "before", jint(r->bytes_before, 1)) && jadd(by, "after", jint(r->bytes_after, 1));
    sb_json(&b, by, ok);
    sp_sb_str(&b, ",\n\"peak_rss_bytes\":");
    sb_json(&b, r->peak_rss_bytes > 0 ? jint(r->peak_rss_bytes, 0) : cJSON_CreateNull(), 1);
    if (r->n_stages > 0) {
        sp_sb_str(&b, ",\n\"stages\":");
        cJSON *st = cJSON_CreateObject();
        ok = st != NULL;
        int64_t sum = r->supervisor_rss_bytes;
        for (int i = 0; ok && i < r->n_stages; i++) {
            const sp_report_stage *x = &r->stages[i];
            cJSON *o = cJSON_CreateObject();
            double busy = x->busy_seconds, io = (double)(x->bytes_read + x->bytes_written);
            ok = jadd(st, x->name, o) && jadd(o, "busy_seconds", jnum(busy)) && jadd(o, "wait_seconds", jnum(x->wait_seconds)) &&
                 jadd(o, "bytes_read", jint(x->bytes_read, 1)) && jadd(o, "bytes_written", jint(x->bytes_written, 1)) &&
                 jadd(o, "gb_per_s_busy", jnum(busy > 0 ? io / busy / 1e9 : 0)) &&
                 jadd(o, "peak_rss_bytes", jint(x->peak_rss_bytes, 1));
            sum += x->peak_rss_bytes;
        }
        cJSON *sup = ok ? cJSON_CreateObject() : NULL;
        ok = ok && jadd(st, "supervisor", sup) && jadd(sup, "peak_rss_bytes", jint(r->supervisor_rss_bytes, 1)) &&
             jadd(st, "peak_rss_sum_bytes", jint(sum, 1)) && jadd(st, "wall_seconds", jnum(r->pipeline_seconds)) &&
             jadd(st, "memory_plan_bytes", jint(r->memory_plan_bytes, 1)) &&
             jadd(st, "boundaries_behind_seconds", jnum(r->behind_seconds));
        cJSON *ph = ok ? cJSON_CreateObject() : NULL;
        ok = ok && jadd(st, "compute_phases", ph);
        for (int i = 0; ok && i < r->n_phases; i++) ok = jadd(ph, r->phases[i].name, jnum(r->phases[i].seconds));
        sb_json(&b, st, ok);
    }
    sp_sb_str(&b, "}\n");
    return sp_sb_take(&b, text_out, len_out, "slicing.json");
}

/* ---------------- report.html ---------------- */

/* Plot frame: data (x, y) -> pixels inside [left, left+w] x [top, top+h]. */
typedef struct frame {
    double left, top, w, h;
    double xmin, xmax, ymin, ymax; /* y in log10 units when logy */
    int logy;
} frame;

#define SVG_W 760
#define SVG_H 360

static double fx(const frame *f, double x) { return f->left + (x - f->xmin) / (f->xmax - f->xmin) * f->w; }
static double fy(const frame *f, double y) {
    double v = f->logy ? log10(y) : y;
    if (v < f->ymin) v = f->ymin;
    if (v > f->ymax) v = f->ymax;
    return f->top + f->h - (v - f->ymin) / (f->ymax - f->ymin) * f->h;
}

static double nice_step(double range, int target) {
    double raw = range / target;
    if (!(raw > 0)) return 1;
    double mag = pow(10, floor(log10(raw)));
    double m = raw / mag;
    return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * mag;
}

static void svg_open(sp_sb *b, const char *id, const char *label) {
    sp_sb_printf(b, "<svg id=\"%s\" class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\" aria-label=\"",
              id, SVG_W, SVG_H, SVG_W, SVG_H);
    sb_html(b, label);
    sp_sb_str(b, "\">\n");
}

/* Axes box, grid and tick labels. x ticks are integers when int_x. */
static void svg_axes(sp_sb *b, const frame *f, const char *xlabel, const char *ylabel, int int_x) {
    sp_sb_printf(b, "<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n", f->left, f->top, f->w, f->h);
    double xs = nice_step(f->xmax - f->xmin, 8);
    if (int_x && xs < 1) xs = 1;
    for (double x = ceil(f->xmin / xs) * xs; x <= f->xmax + 1e-9 * xs; x += xs) {
        double px = fx(f, x);
        sp_sb_printf(b, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", px, f->top, px, f->top + f->h);
        sp_sb_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", px, f->top + f->h + 16, x);
    }
    if (f->logy) {
        for (double e = ceil(f->ymin - 1e-9); e <= f->ymax + 1e-9; e += 1) {
            double py = f->top + f->h - (e - f->ymin) / (f->ymax - f->ymin) * f->h;
            sp_sb_printf(b, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", f->left, py, f->left + f->w, py);
            sp_sb_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">1e%d</text>\n", f->left - 6, py + 4, (int)e);
        }
    } else {
        double ys = nice_step(f->ymax - f->ymin, 6);
        for (double y = ceil(f->ymin / ys) * ys; y <= f->ymax + 1e-9 * ys; y += ys) {
            double py = fy(f, y);
            sp_sb_printf(b, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", f->left, py, f->left + f->w, py);
            sp_sb_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", f->left - 6, py + 4,
                      fabs(y) < 1e-12 * ys ? 0.0 : y);
        }
    }
    sp_sb_printf(b, "<text class=\"axis\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", f->left + f->w / 2,
              f->top + f->h + 36, xlabel);
    sp_sb_printf(b, "<text class=\"axis\" transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
              f->top + f->h / 2, ylabel);
}

static void fmt_evr(char buf[32], double v) {
    if (isfinite(v))
        snprintf(buf, 32, "%.4f", v);
    else
        snprintf(buf, 32, "&#8212;");
}

static void plot_evr(sp_sb *b, const sp_report *r) {
    int64_t L = r->n_layers, D = r->hidden_size;
    double lo = INFINITY;
    double e_embed = sp_report_evr(r->embed.eigenvalues, D, r->embed.width);
    if (isfinite(e_embed)) lo = e_embed;
    for (int64_t l = 0; l < L; l++) {
        double a = sp_report_evr(r->layers[l].attn.eigenvalues, D, r->layers[l].attn.width);
        double m = sp_report_evr(r->layers[l].mlp.eigenvalues, D, r->layers[l].mlp.width);
        if (isfinite(a) && a < lo) lo = a;
        if (isfinite(m) && m < lo) lo = m;
    }
    svg_open(b, "evr-chart", "explained variance ratio per layer");
    if (!isfinite(lo)) {
        sp_sb_str(b, "<text class=\"empty\" x=\"380\" y=\"180\" text-anchor=\"middle\">no PCA spectra recorded</text>\n</svg>\n");
        return;
    }
    frame f = {70, 20, SVG_W - 70 - 150, SVG_H - 20 - 50, 0, (double)(L > 1 ? L - 1 : 1), 0, 1, 0};
    if (L <= 1) f.xmin = -1;
    f.ymin = floor(lo * 20) / 20;
    if (f.ymin > 0.95) f.ymin = 0.95;
    if (f.ymin < 0) f.ymin = 0;
    svg_axes(b, &f, "layer", "EVR at kept width", 1);
    if (isfinite(e_embed)) {
        double py = fy(&f, e_embed);
        sp_sb_printf(b, "<line class=\"embed\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"><title>embedding EVR %.4f</title></line>\n",
                  f.left, py, f.left + f.w, py, e_embed);
    }
    static const char *kinds[2] = {"attn", "mlp"};
    for (int k = 0; k < 2; k++) {
        sp_sb_printf(b, "<polyline class=\"series %s\" points=\"", kinds[k]);
        for (int64_t l = 0; l < L; l++) {
            const sp_report_pca *p = k ? &r->layers[l].mlp : &r->layers[l].attn;
            double v = sp_report_evr(p->eigenvalues, D, p->width);
            if (isfinite(v)) sp_sb_printf(b, "%.1f,%.1f ", fx(&f, (double)l), fy(&f, v));
        }
        sp_sb_str(b, "\"/>\n");
        for (int64_t l = 0; l < L && L <= 200; l++) {
            const sp_report_pca *p = k ? &r->layers[l].mlp : &r->layers[l].attn;
            double v = sp_report_evr(p->eigenvalues, D, p->width);
            if (isfinite(v))
                sp_sb_printf(b, "<circle class=\"pt %s\" cx=\"%.1f\" cy=\"%.1f\" r=\"3\"><title>layer %lld %s: width %lld, EVR %.5f</title></circle>\n",
                          kinds[k], fx(&f, (double)l), fy(&f, v), (long long)l, kinds[k], (long long)p->width, v);
        }
    }
    double lx = f.left + f.w + 16;
    sp_sb_printf(b, "<line class=\"series attn\" x1=\"%.1f\" y1=\"40\" x2=\"%.1f\" y2=\"40\"/><text class=\"legend\" x=\"%.1f\" y=\"44\">attn (M)</text>\n",
              lx, lx + 24, lx + 30);
    sp_sb_printf(b, "<line class=\"series mlp\" x1=\"%.1f\" y1=\"62\" x2=\"%.1f\" y2=\"62\"/><text class=\"legend\" x=\"%.1f\" y=\"66\">mlp (Y)</text>\n",
              lx, lx + 24, lx + 30);
    sp_sb_printf(b, "<line class=\"embed\" x1=\"%.1f\" y1=\"84\" x2=\"%.1f\" y2=\"84\"/><text class=\"legend\" x=\"%.1f\" y=\"88\">embedding</text>\n",
              lx, lx + 24, lx + 30);
    sp_sb_str(b, "</svg>\n");
}

/* Eigenvalue spectra of one family (attn, with the embedding, or mlp): log y,
 * one polyline per PCA (at most 256 points each), a dashed vertical line at
 * every distinct kept width. */
static void plot_spectra(sp_sb *b, const sp_report *r, int mlp) {
    int64_t L = r->n_layers, D = r->hidden_size;
    int64_t npca = L + (mlp ? 0 : 1);
    double ymax = -INFINITY, ymin_pos = INFINITY;
    for (int64_t j = 0; j < npca; j++) {
        const sp_report_pca *p = mlp ? &r->layers[j].mlp : j == 0 ? &r->embed : &r->layers[j - 1].attn;
        for (int64_t i = 0; p->eigenvalues && i < D; i++) {
            double v = p->eigenvalues[i];
            if (!isfinite(v)) continue;
            if (v > ymax) ymax = v;
            if (v > 0 && v < ymin_pos) ymin_pos = v;
        }
    }
    const char *id = mlp ? "spectra-mlp" : "spectra-attn";
    svg_open(b, id, mlp ? "eigenvalue spectra of the MLP-output PCAs" : "eigenvalue spectra of the embedding and attention-output PCAs");
    if (!(ymax > 0)) {
        sp_sb_str(b, "<text class=\"empty\" x=\"380\" y=\"180\" text-anchor=\"middle\">no PCA spectra recorded</text>\n</svg>\n");
        return;
    }
    if (ymin_pos < ymax * 1e-12) ymin_pos = ymax * 1e-12;
    frame f = {70, 20, SVG_W - 70 - 150, SVG_H - 20 - 50, 1, (double)(D > 1 ? D : 2), 0, 0, 1};
    f.ymin = floor(log10(ymin_pos));
    f.ymax = ceil(log10(ymax));
    if (f.ymax <= f.ymin) f.ymax = f.ymin + 1;
    svg_axes(b, &f, "component (descending eigenvalue)", "eigenvalue (log scale)", 1);

    /* Kept widths: dashed verticals, labelled when few. */
    int64_t widths[16];
    int nw = 0, many = 0;
    for (int64_t j = 0; j < npca; j++) {
        const sp_report_pca *p = mlp ? &r->layers[j].mlp : j == 0 ? &r->embed : &r->layers[j - 1].attn;
        if (!p->eigenvalues) continue;
        int seen = 0;
        for (int k = 0; k < nw; k++) seen |= widths[k] == p->width;
        if (seen) continue;
        if (nw == 16) {
            many = 1;
            continue;
        }
        widths[nw++] = p->width;
    }
    for (int k = 0; k < nw; k++) {
        double px = fx(&f, (double)widths[k]);
        sp_sb_printf(b, "<line class=\"kept\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"><title>kept width %lld</title></line>\n", px,
                  f.top, px, f.top + f.h, (long long)widths[k]);
        if (nw <= 4) {
            int right = px + 60 > f.left + f.w; /* keep the label inside the frame */
            sp_sb_printf(b, "<text class=\"kept-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">d=%lld</text>\n", right ? px - 4 : px + 4,
                      f.top + 14 + 14 * k, right ? "end" : "start", (long long)widths[k]);
        }
    }
    if (many) sp_sb_printf(b, "<text class=\"kept-label\" x=\"%.1f\" y=\"%.1f\">(first 16 widths shown)</text>\n", f.left + 8, f.top + f.h - 8);

    int64_t npts = D < 256 ? D : 256;
    for (int64_t j = 0; j < npca; j++) {
        const sp_report_pca *p = mlp ? &r->layers[j].mlp : j == 0 ? &r->embed : &r->layers[j - 1].attn;
        if (!p->eigenvalues) continue;
        int64_t layer = mlp ? j : j - 1;
        if (layer < 0)
            sp_sb_str(b, "<polyline class=\"spec\" stroke=\"#111\" stroke-width=\"2\" points=\"");
        else
            sp_sb_printf(b, "<polyline class=\"spec\" stroke=\"hsl(%.0f,70%%,45%%)\" points=\"", L > 1 ? 240.0 - 240.0 * (double)layer / (double)(L - 1) : 240.0);
        for (int64_t k = 0; k < npts; k++) {
            int64_t i = npts > 1 ? (int64_t)llround((double)k * (double)(D - 1) / (double)(npts - 1)) : 0;
            double v = p->eigenvalues[i];
            if (!isfinite(v)) continue;
            if (v < ymin_pos) v = ymin_pos;
            sp_sb_printf(b, "%.1f,%.1f ", fx(&f, (double)(i + 1)), fy(&f, v));
        }
        char evr[32];
        fmt_evr(evr, sp_report_evr(p->eigenvalues, D, p->width));
        if (layer < 0)
            sp_sb_printf(b, "\"><title>embedding: width %lld, EVR %s</title></polyline>\n", (long long)p->width, evr);
        else
            sp_sb_printf(b, "\"><title>layer %lld %s: width %lld, EVR %s</title></polyline>\n", (long long)layer, mlp ? "mlp" : "attn",
                      (long long)p->width, evr);
    }
    /* Legend: colour runs from the first layer (blue) to the last (red). */
    double lx = f.left + f.w + 16;
    sp_sb_str(b, "<defs><linearGradient id=\"");
    sp_sb_str(b, id);
    sp_sb_str(b, "-grad\" x1=\"0\" x2=\"0\" y1=\"0\" y2=\"1\"><stop offset=\"0\" stop-color=\"hsl(240,70%,45%)\"/>"
              "<stop offset=\"0.5\" stop-color=\"hsl(120,70%,45%)\"/><stop offset=\"1\" stop-color=\"hsl(0,70%,45%)\"/></linearGradient></defs>\n");
    sp_sb_printf(b, "<rect x=\"%.1f\" y=\"40\" width=\"14\" height=\"120\" fill=\"url(#%s-grad)\"/>\n", lx, id);
    sp_sb_printf(b, "<text class=\"legend\" x=\"%.1f\" y=\"50\">layer 0</text><text class=\"legend\" x=\"%.1f\" y=\"160\">layer %lld</text>\n",
              lx + 20, lx + 20, (long long)(L > 0 ? L - 1 : 0));
    if (!mlp)
        sp_sb_printf(b, "<line x1=\"%.1f\" y1=\"186\" x2=\"%.1f\" y2=\"186\" stroke=\"#111\" stroke-width=\"2\"/><text class=\"legend\" x=\"%.1f\" y=\"190\">embedding</text>\n",
                  lx, lx + 14, lx + 20);
    sp_sb_printf(b, "<line class=\"kept\" x1=\"%.1f\" y1=\"206\" x2=\"%.1f\" y2=\"226\"/><text class=\"legend\" x=\"%.1f\" y=\"220\">kept width</text>\n",
              lx + 7, lx + 7, lx + 20);
    sp_sb_str(b, "</svg>\n");
}

static void plot_ppl(sp_sb *b, const sp_report *r) {
    double v[2] = {exp(r->nll_dense), exp(r->nll_sliced)};
    static const char *names[2] = {"dense", "sliced"};
    double top = 0;
    for (int k = 0; k < 2; k++)
        if (isfinite(v[k]) && v[k] > top) top = v[k];
    sp_sb_printf(b, "<svg id=\"ppl-chart\" class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 360 260\" width=\"360\" height=\"260\" role=\"img\" aria-label=\"perplexity, dense and sliced\">\n");
    if (!(top > 0)) {
        sp_sb_str(b, "<text class=\"empty\" x=\"180\" y=\"130\" text-anchor=\"middle\">perplexity not measured</text>\n</svg>\n");
        return;
    }
    frame f = {60, 20, 280, 200, 0, 2, 0, top * 1.15, 0};
    double ys = nice_step(f.ymax, 5);
    for (double y = 0; y <= f.ymax + 1e-9 * ys; y += ys) {
        double py = fy(&f, y);
        sp_sb_printf(b, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/><text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                  f.left, py, f.left + f.w, py, f.left - 6, py + 4, y);
    }
    for (int k = 0; k < 2; k++) {
        double cx = fx(&f, k + 0.5);
        if (isfinite(v[k])) {
            double py = fy(&f, v[k]);
            sp_sb_printf(b, "<rect class=\"bar %s\" x=\"%.1f\" y=\"%.1f\" width=\"80\" height=\"%.1f\"><title>%s perplexity %.4f</title></rect>\n",
                      names[k], cx - 40, py, f.top + f.h - py, names[k], v[k]);
            sp_sb_printf(b, "<text class=\"value\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.3f</text>\n", cx, py - 6, v[k]);
        } else {
            sp_sb_printf(b, "<text class=\"value\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">not measured</text>\n", cx, f.top + f.h - 8);
        }
        sp_sb_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", cx, f.top + f.h + 18, names[k]);
    }
    sp_sb_printf(b, "<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n</svg>\n", f.left, f.top, f.w, f.h);
}

static void fmt_count(char buf[64], int64_t v, const char *unit) {
    if (v < 0) {
        snprintf(buf, 64, "&#8212;");
        return;
    }
    static const char *sfx[] = {"", " k", " M", " G", " T", " P"};
    double x = (double)v;
    int k = 0;
    while (x >= 1000 && k < 5) {
        x /= 1000;
        k++;
    }
    if (k == 0)
        snprintf(buf, 64, "%lld%s%s", (long long)v, *unit ? " " : "", unit);
    else
        snprintf(buf, 64, "%.2f%s%s", x, sfx[k], unit);
}

static void row_before_after(sp_sb *b, const char *what, int64_t before, int64_t after, const char *unit) {
    char x[64], y[64];
    fmt_count(x, before, unit);
    fmt_count(y, after, unit);
    sp_sb_printf(b, "<tr><th>%s</th><td>%s &#8594; %s", what, x, y);
    if (before > 0 && after >= 0) sp_sb_printf(b, " (%.1f%% kept)", 100.0 * (double)after / (double)before);
    sp_sb_str(b, "</td></tr>\n");
}

static const char k_css[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:980px;"
    "color:#1b1f24;background:#fff;padding:0 16px}\n"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}\n"
    ".sub{color:#57606a;margin:0 0 16px}\n"
    "table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:right}\n"
    "th{text-align:left;font-weight:600}table.kv td{text-align:left}\n"
    "#widths thead th{text-align:right;background:#f6f8fa}#widths thead th:first-child{text-align:left}\n"
    ".plot{display:block;max-width:100%;height:auto;margin:6px 0}\n"
    ".plot .frame{fill:none;stroke:#57606a}.plot .grid{stroke:#eaeef2}.plot text{font-size:12px;fill:#1b1f24}\n"
    ".plot .axis{font-size:13px}.plot .empty{fill:#57606a}\n"
    ".series{fill:none;stroke-width:2}.series.attn{stroke:#1f6feb}.series.mlp{stroke:#cf222e}\n"
    ".pt.attn{fill:#1f6feb}.pt.mlp{fill:#cf222e}\n"
    ".embed{stroke:#111;stroke-width:1.5;stroke-dasharray:2 3}\n"
    ".spec{fill:none;stroke-width:1.2;stroke-opacity:.85}\n"
    ".kept{stroke:#6e7781;stroke-width:1.2;stroke-dasharray:6 4}.kept-label{fill:#57606a}\n"
    ".bar.dense{fill:#8c959f}.bar.sliced{fill:#1f6feb}.value{font-weight:600}\n"
    ".grid2{display:flex;flex-wrap:wrap;gap:8px 24px;align-items:flex-start}\n";

int sp_report_html(const sp_report *r, char **text_out, int64_t *len_out) {
    *text_out = NULL;
    SP_TRY(check_report(r));
    int64_t D = r->hidden_size, L = r->n_layers;
    sp_sb b = {0};
    sp_sb_str(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>slicepipe report: ");
    sb_html(&b, r->model_name);
    sp_sb_str(&b, "</title>\n<style>\n");
    sp_sb_str(&b, k_css);
    sp_sb_str(&b, "</style>\n</head>\n<body>\n<h1>slicepipe report</h1>\n<p class=\"sub\" id=\"model-name\">");
    sb_html(&b, r->model_name);
    sp_sb_str(&b, " &#8212; ");
    sb_html(&b, r->policy ? r->policy : "SliceGPT");
    if (isfinite(r->params_target)) sp_sb_printf(&b, ", %.4g of the parameters kept as asked</p>\n", r->params_target);
    else sp_sb_printf(&b, " at sparsity %.4g</p>\n", r->sparsity);

    sp_sb_str(&b, "<h2>Summary</h2>\n<table class=\"kv\" id=\"summary\">\n");
    sp_sb_printf(&b, "<tr><th>hidden size (D)</th><td>%lld</td></tr>\n<tr><th>layers</th><td>%lld</td></tr>\n", (long long)D, (long long)L);
    sp_sb_printf(&b, "<tr><th>sparsity</th><td>%.6g</td></tr>\n<tr><th>round widths to</th><td>%lld</td></tr>\n", r->sparsity,
              (long long)r->round_to);
    row_before_after(&b, "parameters", r->params_before, r->params_after, "");
    if (r->ffn_before > 0) row_before_after(&b, "MLP neurons a layer", r->ffn_before, r->ffn_after, "");
    row_before_after(&b, "tensor bytes", r->bytes_before, r->bytes_after, "B");
    if (r->peak_rss_bytes > 0) {
        char x[64];
        fmt_count(x, r->peak_rss_bytes, "B");
        sp_sb_printf(&b, "<tr><th>peak memory (RSS)</th><td>%s</td></tr>\n", x);
    }
    sp_sb_str(&b, "</table>\n");

    sp_sb_str(&b, "<h2>Perplexity</h2>\n<div class=\"grid2\">\n");
    plot_ppl(&b, r);
    sp_sb_str(&b, "<table class=\"kv\" id=\"ppl\">\n<tr><th></th><th>mean NLL (nats)</th><th>perplexity</th></tr>\n");
    double nll[2] = {r->nll_dense, r->nll_sliced};
    static const char *names[2] = {"dense", "sliced"};
    for (int k = 0; k < 2; k++) {
        if (isfinite(nll[k]))
            sp_sb_printf(&b, "<tr><th>%s</th><td>%.6f</td><td>%.4f</td></tr>\n", names[k], nll[k], exp(nll[k]));
        else
            sp_sb_printf(&b, "<tr><th>%s</th><td colspan=\"2\">not measured</td></tr>\n", names[k]);
    }
    if (r->eval_tokens > 0) sp_sb_printf(&b, "<tr><th>tokens</th><td colspan=\"2\">%lld</td></tr>\n", (long long)r->eval_tokens);
    if (r->eval_seqlen > 0) sp_sb_printf(&b, "<tr><th>window</th><td colspan=\"2\">%lld</td></tr>\n", (long long)r->eval_seqlen);
    sp_sb_str(&b, "</table>\n</div>\n");

    if (r->split_choice) { /* split = "auto": what each candidate measured */
        const sp_split_choice *ch = r->split_choice;
        sp_sb_printf(&b, "<h2>How the split was chosen</h2>\n<p>Each candidate was calibrated without the last %lld "
                         "calibration windows and scored on them; the lowest mean NLL won, and ran on all the windows.</p>\n"
                         "<table id=\"split-auto\">\n<thead><tr><th>split</th><th>held-back NLL</th><th>vs dense</th>"
                         "<th>parameters</th><th></th></tr></thead>\n<tbody>\n", (long long)ch->holdout);
        sp_sb_printf(&b, "<tr><td>dense</td><td>%.6f</td><td></td><td>%lld</td><td></td></tr>\n", ch->dense_nll,
                     (long long)r->params_before);
        for (int i = 0; i < SP_SPLIT_CANDIDATES; i++) {
            if (isfinite(ch->nll[i]))
                sp_sb_printf(&b, "<tr><td>%g</td><td>%.6f</td><td>%+.6f</td><td>%lld</td><td>%s</td></tr>\n",
                             sp_split_candidates[i], ch->nll[i], ch->nll[i] - ch->dense_nll, (long long)ch->params[i],
                             i == ch->chosen ? "chosen" : "");
            else
                sp_sb_printf(&b, "<tr><td>%g</td><td colspan=\"4\">cannot meet the target</td></tr>\n", sp_split_candidates[i]);
        }
        sp_sb_str(&b, "</tbody></table>\n");
    }

    sp_sb_str(&b, "<h2>Explained variance at the kept width</h2>\n");
    plot_evr(&b, r);
    sp_sb_str(&b, "<h2>Eigenvalue spectra</h2>\n<p>Embedding and attention-output PCAs (M):</p>\n");
    plot_spectra(&b, r, 0);
    sp_sb_str(&b, "<p>MLP-output PCAs (Y):</p>\n");
    plot_spectra(&b, r, 1);

    sp_sb_str(&b, "<h2>Widths per layer</h2>\n<table id=\"widths\">\n<thead><tr><th>layer</th><th>d_in</th><th>d_mid</th><th>d_out</th>"
               "<th>EVR attn</th><th>EVR mlp</th></tr></thead>\n<tbody>\n");
    char e1[32], e2[32];
    fmt_evr(e1, sp_report_evr(r->embed.eigenvalues, D, r->embed.width));
    sp_sb_printf(&b, "<tr class=\"embed-row\"><th>embedding</th><td colspan=\"3\">%lld</td><td>%s</td><td></td></tr>\n",
              (long long)r->embed.width, e1);
    for (int64_t l = 0; l < L; l++) {
        const sp_report_layer *y = &r->layers[l];
        fmt_evr(e1, sp_report_evr(y->attn.eigenvalues, D, y->attn.width));
        fmt_evr(e2, sp_report_evr(y->mlp.eigenvalues, D, y->mlp.width));
        sp_sb_printf(&b, "<tr class=\"layer-row\"><th>%lld</th><td>%lld</td><td>%lld</td><td>%lld</td><td>%s</td><td>%s</td></tr>\n",
                  (long long)l, (long long)y->d_in, (long long)y->d_mid, (long long)y->d_out, e1, e2);
    }
    sp_sb_str(&b, "</tbody>\n</table>\n");

    if (r->n_timings > 0) {
        sp_sb_str(&b, "<h2>Timings</h2>\n<table class=\"kv\" id=\"timings\">\n");
        double total = 0;
        for (int i = 0; i < r->n_timings; i++) {
            sp_sb_str(&b, "<tr><th>");
            sb_html(&b, r->timings[i].name);
            sp_sb_printf(&b, "</th><td>%.2f s</td></tr>\n", r->timings[i].seconds);
            if (isfinite(r->timings[i].seconds)) total += r->timings[i].seconds;
        }
        sp_sb_printf(&b, "<tr><th>total</th><td>%.2f s</td></tr>\n</table>\n", total);
    }
    if (r->n_phases > 0) {
        double total = 0;
        for (int i = 0; i < r->n_phases; i++)
            if (isfinite(r->phases[i].seconds)) total += r->phases[i].seconds;
        sp_sb_str(&b, "<h2>Where the compute stage's time went</h2>\n<table class=\"kv\" id=\"phases\">\n");
        for (int i = 0; i < r->n_phases; i++) {
            sp_sb_str(&b, "<tr><th>");
            sb_html(&b, r->phases[i].name);
            sp_sb_printf(&b, "</th><td>%.2f s (%.0f%%)</td></tr>\n", r->phases[i].seconds,
                         total > 0 ? 100.0 * r->phases[i].seconds / total : 0.0);
        }
        sp_sb_str(&b, "</table>\n");
    }
    sp_sb_str(&b, "<p class=\"sub\">Generated by slicepipe. EVR = sum of the kept eigenvalues / sum of all of them.</p>\n</body>\n</html>\n");
    return sp_sb_take(&b, text_out, len_out, "report.html");
}

int sp_report_write(const sp_report *r, const char *out_dir) {
    char *text = NULL, *path = NULL;
    int64_t len = 0;
    int rc = sp_report_json(r, &text, &len);
    if (!rc && asprintf(&path, "%s/slicing.json", out_dir) < 0) {
        path = NULL;
        rc = sp_fail(SP_EX_SOFTWARE, "out of memory");
    }
    if (!rc) rc = sp_io_write_atomic(path, text, len);
    free(text);
    free(path);
    text = path = NULL;
    if (!rc) rc = sp_report_html(r, &text, &len);
    if (!rc && asprintf(&path, "%s/report.html", out_dir) < 0) {
        path = NULL;
        rc = sp_fail(SP_EX_SOFTWARE, "out of memory");
    }
    if (!rc) rc = sp_io_write_atomic(path, text, len);
    free(text);
    free(path);
    return rc;
}

int sp_report_write_run(const struct sp_manifest *mf, const struct sp_model *m, const struct sp_slice_plan *plan,
                        const double *evals, const struct sp_eval_result *dense,
                        const struct sp_eval_result *sliced, double slice_seconds, int64_t params_after, int64_t bytes_after,
                        int64_t peak_rss_bytes, const sp_report *pipeline, int n_pca) {
    int64_t D = m->cfg.hidden_size, L = m->cfg.n_layers;
    sp_report_layer *layers = NULL;
    SP_TRY(sp_calloc((void **)&layers, L, sizeof *layers, "report layers"));
    for (int64_t l = 0; l < L; l++) {
        layers[l].d_in = plan->width[SP_POS_IN][l];
        layers[l].d_mid = plan->width[SP_POS_MID][l];
        layers[l].d_out = plan->width[SP_POS_OUT][l];
        layers[l].attn.width = layers[l].d_mid;
        /* parallel: no attention PCA; a survey's one basis: one PCA, shown as the embedding's */
        const double *ev = plan->layer_pcas ? evals : NULL;
        layers[l].attn.eigenvalues = ev && n_pca == 2 ? ev + (1 + 2 * l) * D : NULL;
        layers[l].mlp.width = layers[l].d_out;
        layers[l].mlp.eigenvalues = ev ? ev + (n_pca + n_pca * l) * D : NULL;
    }
    /* The model's name: the last component of its directory. */
    const char *name = mf->model_path ? mf->model_path : "";
    size_t n = strlen(name);
    while (n > 1 && name[n - 1] == '/') n--;
    size_t s0 = n;
    while (s0 > 0 && name[s0 - 1] != '/') s0--;
    char model_name[256];
    snprintf(model_name, sizeof model_name, "%.*s", (int)(n - s0), name + s0);

    sp_report_timing tm[3];
    int nt = 0;
    tm[nt++] = (sp_report_timing){"slice", slice_seconds};
    if (dense && isfinite(dense->nll)) tm[nt++] = (sp_report_timing){"eval dense", dense->seconds};
    if (sliced && isfinite(sliced->nll)) tm[nt++] = (sp_report_timing){"eval sliced", sliced->seconds};

    sp_report r = {
        .model_name = model_name,
        .hidden_size = D,
        .n_layers = L,
        .sparsity = mf->has_params && L > 0 ? 1.0 - (double)plan->width[SP_POS_IN][0] / (double)D : mf->sparsity,
        .round_to = mf->round_to,
        .policy = plan->title,
        .params_target = mf->has_params ? mf->params : NAN,
        .ffn_before = m->cfg.intermediate_size,
        .ffn_after = L > 0 ? plan->ffn[0] : m->cfg.intermediate_size,
        .split_choice = mf->split_choice,
        .embed = {L > 0 ? plan->width[SP_POS_IN][0] : D, evals},
        .layers = layers,
        .nll_dense = dense ? dense->nll : NAN,
        .nll_sliced = sliced ? sliced->nll : NAN,
        .eval_tokens = sliced && isfinite(sliced->nll) ? sliced->tokens : dense && isfinite(dense->nll) ? dense->tokens : 0,
        .eval_seqlen = mf->has_eval ? mf->eval_seqlen : 0,
        .timings = tm,
        .n_timings = nt,
        .params_before = m->n_params,
        .params_after = params_after,
        .bytes_before = m->n_bytes,
        .bytes_after = bytes_after,
        .peak_rss_bytes = peak_rss_bytes,
    };
    if (pipeline) {
        r.stages = pipeline->stages, r.n_stages = pipeline->n_stages;
        r.supervisor_rss_bytes = pipeline->supervisor_rss_bytes, r.pipeline_seconds = pipeline->pipeline_seconds;
        r.memory_plan_bytes = pipeline->memory_plan_bytes;
        r.phases = pipeline->phases, r.n_phases = pipeline->n_phases;
        r.behind_seconds = pipeline->behind_seconds;
    }
    int rc = sp_report_write(&r, mf->output_path);
    free(layers);
    return rc;
}
