/* tools/cmd_eval_task.c — `slicepipe eval MODEL --task FILE ...`: zero-shot
 * multiple-choice accuracy as lm-eval-harness scores it
 * (pipeline/model/zeroshot.h), for tools/slicepipe.c's cmd_eval. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "mctask.h"
#include "model.h"
#include "tokenizer.h"
#include "zeroshot.h"

#include "cmd_eval_task.h"

static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '"' || *u == '\\') printf("\\%c", *u);
        else if (*u < 0x20) printf("\\u%04x", *u);
        else putchar(*u);
    }
    putchar('"');
}

static void json_num(double v) {
    if (isfinite(v)) printf("%.17g", v);
    else printf("null");
}

int sp_cmd_eval_tasks(const sp_eval_task_args *a) {
    sp_mctask **tasks = NULL;
    sp_model m;
    int have_model = 0;
    sp_tok *tok = NULL;
    sp_bk *bk = NULL;
    sp_zs_plan plan = {0};
    double *ll = NULL;
    int64_t *pred = NULL, *pred_n = NULL;
    double t0 = sp_now();
    int rc = sp_calloc((void **)&tasks, a->n_tasks, (int64_t)sizeof *tasks, "tasks");
    /* every task file is read and checked before the model is touched */
    for (int i = 0; !rc && i < a->n_tasks; i++) rc = sp_mctask_load(a->tasks[i], a->limit, &tasks[i]);
    if (!rc) rc = sp_model_open(a->model_dir, &m);
    if (rc) goto out;
    have_model = 1;
    rc = sp_tok_open(a->model_dir, &tok);
    if (!rc) rc = sp_zs_plan_build(&m, tok, tasks, a->n_tasks, a->max_length, &plan);
    if (!rc) rc = sp_bk_open_host(a->backend, "eval", &bk);
    if (rc) goto out;
    bk->set_threads(bk, a->threads, m.cfg.hidden_size);
    int64_t slots = sp_zs_slots(tasks, a->n_tasks), items_max = 0;
    for (int i = 0; i < a->n_tasks; i++)
        if (tasks[i]->n_items > items_max) items_max = tasks[i]->n_items;
    rc = sp_alloc((void **)&ll, slots, 8, "log-likelihoods");
    if (!rc) rc = sp_alloc((void **)&pred, items_max, 8, "predictions");
    if (!rc) rc = sp_alloc((void **)&pred_n, items_max, 8, "predictions");
    if (rc) goto out;
    if (!a->quiet)
        fprintf(stderr, "eval: %lld requests in %lld groups (%lld rows, longest sequence %lld of %lld)\n",
                (long long)plan.n_req, (long long)plan.n_groups, (long long)plan.rows, (long long)plan.seq_max,
                (long long)plan.L);
    sp_zs_opts zo = {.progress = !a->quiet, .spill_dir = a->spill_dir, .chunk_bytes = a->chunk_bytes, .bk = bk};
    rc = sp_zs_score(&m, &plan, &zo, ll);
    if (rc) goto out;
    double secs = sp_now() - t0;
    if (a->json) {
        printf("{\"model\": ");
        json_str(a->model_dir);
        printf(", \"max_length\": %lld, \"requests\": %lld, \"groups\": %lld, \"seconds\": %.3f, \"peak_rss_bytes\": %lld, "
               "\"tasks\": [",
               (long long)plan.L, (long long)plan.n_req, (long long)plan.n_groups, secs, (long long)sp_peak_rss_bytes());
    } else {
        printf("model:    %s\n", a->model_dir);
        printf("%-20s %7s  %-17s  %-17s\n", "task", "count", "acc", "acc_norm");
    }
    int64_t s = 0;
    for (int i = 0; i < a->n_tasks; i++) {
        const sp_mctask *t = tasks[i];
        sp_zs_metrics mt;
        sp_zs_task_metrics(t, ll + s, &mt, pred, pred_n);
        if (a->json) {
            printf("%s{\"task\": ", i ? ", " : "");
            json_str(t->name);
            printf(", \"file\": ");
            json_str(t->path);
            printf(", \"format\": \"%s\", \"count\": %lld, \"acc\": ", t->format == SP_MCTASK_FORMAT_JSONL ? "jsonl" : "hellaswag",
                   (long long)mt.count);
            json_num(mt.acc);
            printf(", \"acc_stderr\": ");
            json_num(mt.acc_stderr);
            printf(", \"acc_norm\": ");
            json_num(mt.acc_norm);
            printf(", \"acc_norm_stderr\": ");
            json_num(mt.acc_norm_stderr);
            printf(", \"items\": [");
            int64_t k = s;
            for (int64_t j = 0; j < t->n_items; j++) {
                const sp_mctask_item *it = &t->items[j];
                printf("%s{\"line\": %lld, \"gold\": %lld, \"pred\": %lld, \"pred_norm\": %lld, \"loglik\": [", j ? ", " : "",
                       (long long)it->line, (long long)it->gold, (long long)pred[j], (long long)pred_n[j]);
                for (int64_t c = 0; c < it->n_choices; c++) {
                    if (c) printf(", ");
                    json_num(ll[k + c]);
                }
                printf("]}");
                k += it->n_choices;
            }
            printf("]}");
        } else {
            printf("%-20s %7lld  %.4f ± %.4f    %.4f ± %.4f\n", t->name, (long long)mt.count, mt.acc, mt.acc_stderr,
                   mt.acc_norm, mt.acc_norm_stderr);
        }
        for (int64_t j = 0; j < t->n_items; j++) s += t->items[j].n_choices;
    }
    if (a->json) printf("]}\n");
    else
        printf("requests: %lld (%lld forward groups), max length %lld, %.2f s, peak RSS %.1f MiB\n", (long long)plan.n_req,
               (long long)plan.n_groups, (long long)plan.L, secs, (double)sp_peak_rss_bytes() / (1 << 20));
out:
    free(ll);
    free(pred);
    free(pred_n);
    sp_zs_plan_free(&plan);
    sp_tok_free(tok);
    if (bk) sp_bk_close(bk);
    if (have_model) sp_model_close(&m);
    if (tasks)
        for (int i = 0; i < a->n_tasks; i++) sp_mctask_free(tasks[i]);
    free(tasks);
    return rc;
}
