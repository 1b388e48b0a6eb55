/* pipeline/output.c — the output folder of a `slicepipe run`: its creation,
 * the declaration of every output tensor (from the architecture table, in
 * the order compute emits them), config.json with the slicepipe block, and
 * the side files (tokenizer, generation config) copied beside it. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "job.h"
#include "sp_version.h"

int sp_output_declare(job *j) {
    const sp_arch *a = j->m.arch;
    const sp_config *c = &j->m.cfg;
    char nm[256];
    int64_t s[2], w[SP_POS_COUNT];
    int nd;
    j->layer_out0 = calloc((size_t)j->L + 1, sizeof *j->layer_out0);
    if (!j->layer_out0) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    s[0] = j->V, s[1] = j->d_in[0];
    SP_TRY(sp_stw_add(j->w, a->embed, j->out_dtype, 2, s));
    if (a->pos_embed) {
        s[0] = j->m.n_pos;
        SP_TRY(sp_stw_add(j->w, a->pos_embed, j->out_dtype, 2, s));
    }
    for (int64_t l = 0; l < j->L; l++) {
        j->layer_out0[l] = sp_stw_tensor_count(j->w);
        sp_plan_layer_widths(j, l, w);
        for (int k = 0; k < j->n_outs; k++) {
            sp_arch_out_tensor(a, c, &j->outs[k], l, w, nm, s, &nd);
            SP_TRY(sp_stw_add(j->w, nm, j->out_dtype, nd, s));
        }
    }
    j->layer_out0[j->L] = sp_stw_tensor_count(j->w);
    s[0] = j->V, s[1] = j->d_out[j->L - 1];
    SP_TRY(sp_stw_add(j->w, a->head, j->out_dtype, 2, s));
    if (!sp_output_head_bias(j)) return 0;
    s[0] = j->V; /* the head's own bias, plus the final LayerNorm's β through the head */
    return sp_stw_add(j->w, a->head_bias, j->out_dtype, 1, s);
}

int sp_output_head_bias(const job *j) {
    const sp_arch *a = j->m.arch;
    SP_ASSERT(!a->final_norm_bias || a->head_bias);
    return j->m.has_head_bias || a->final_norm_bias != NULL;
}

static const char *dtype_torch(sp_dtype t) {
    return t == SP_DTYPE_BF16 ? "bfloat16" : t == SP_DTYPE_F16 ? "float16" : "float32";
}

int sp_output_config(job *j, const char *fp) {
    cJSON *c = cJSON_Parse(j->m.cfg.raw_json);
    if (!c) return sp_fail(SP_EX_SOFTWARE, "config.json re-parse failed");
    cJSON_DeleteItemFromObject(c, "tie_word_embeddings");
    cJSON_AddBoolToObject(c, "tie_word_embeddings", 0);
    cJSON_DeleteItemFromObject(c, "torch_dtype");
    cJSON_DeleteItemFromObject(c, "dtype"); /* newer transformers spelling; must not contradict */
    cJSON_AddStringToObject(c, "torch_dtype", dtype_torch(j->out_dtype));
    cJSON_DeleteItemFromObject(c, "slicepipe");
    cJSON *s = cJSON_AddObjectToObject(c, "slicepipe");
    cJSON_AddStringToObject(s, "version", SP_VERSION);
    cJSON_AddNumberToObject(s, "sparsity", j->mf->sparsity);
    cJSON_AddNumberToObject(s, "round_to", (double)j->mf->round_to);
    cJSON_AddNumberToObject(s, "d_embed", (double)j->d_in[0]);
    cJSON *ls = cJSON_AddArrayToObject(s, "layers");
    for (int64_t l = 0; l < j->L; l++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "d_in", (double)j->d_in[l]);
        cJSON_AddNumberToObject(o, "d_mid", (double)j->d_mid[l]);
        cJSON_AddNumberToObject(o, "d_out", (double)j->d_out[l]);
        cJSON_AddItemToArray(ls, o);
    }
    cJSON_AddStringToObject(s, "source_fingerprint", fp);
    char *txt = cJSON_Print(c);
    cJSON_Delete(c);
    if (!txt) return sp_fail(SP_EX_SOFTWARE, "out of memory printing config.json");
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", j->mf->output_path);
    int rc = sp_io_write_atomic(path, txt, (int64_t)strlen(txt));
    free(txt);
    return rc;
}

/* Copies the tokenizer and generation files that sit beside the checkpoint. */
int sp_output_side_files(job *j) {
    static const char *files[] = {"tokenizer.bin",           "tokenizer.json",   "tokenizer.model",
                                  "tokenizer_config.json",   "special_tokens_map.json", "generation_config.json",
                                  "LICENSE"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", j->mf->model_path, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", j->mf->output_path, files[i]);
        if (access(src, F_OK) != 0) continue;
        char *buf;
        int64_t n;
        SP_TRY(sp_io_read_small(src, (int64_t)1 << 30, &buf, &n));
        int rc = sp_io_write_atomic(dst, buf, n);
        free(buf);
        SP_TRY(rc);
    }
    return 0;
}

/* mkdir -p: creates out and any missing parents. */
static int mkdirs(const char *out) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s", out) >= (int)sizeof p) return sp_fail(SP_EX_CANTCREAT, "%s: path too long", out);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the output directory (at %s)", out, p);
        *c = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot create the output directory", out);
    return 0;
}

int sp_output_prepare(const char *out) {
    struct stat st;
    if (stat(out, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return sp_fail(SP_EX_CANTCREAT, "%s: output path exists and is not a directory", out);
    } else {
        SP_TRY(mkdirs(out));
    }
    if (access(out, W_OK | X_OK) != 0) return sp_fail_errno(SP_EX_CANTCREAT, "%s: output directory is not writable", out);
    return 0;
}

/* A path for display: canonical when it exists, as given otherwise. */
const char *sp_path_shown(const char *path, char buf[4096]) {
    char *r = realpath(path, NULL);
    snprintf(buf, 4096, "%s", r ? r : path);
    free(r);
    return buf;
}

