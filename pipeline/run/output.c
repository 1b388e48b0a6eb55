/* pipeline/run/output.c — the output folder of a `slicepipe run`: its creation,
 * the declaration of every output tensor (from the architecture table, in
 * the order compute emits them), config.json with the slicepipe block, and
 * the side files (tokenizer, generation config) copied beside it, and the
 * checks made before any work: the output neither is nor overlaps the
 * input's folders (by device and inode), a non-empty output is a slicepipe
 * job, and config.json and the side files lie inside the model folder. */
#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
    sp_config c = j->m.cfg; /* at each layer's kept MLP width */
    char nm[256];
    int64_t s[2], w[SP_POS_COUNT];
    int nd;
    j->layer_out0 = calloc((size_t)j->shape.layers + 1, sizeof *j->layer_out0);
    if (!j->layer_out0) return sp_fail(SP_EX_SOFTWARE, "out of memory");
    s[0] = j->shape.vocab, s[1] = j->plan.width[SP_POS_IN][0];
    SP_TRY(sp_stw_add(j->w, a->embed, j->out_dtype, 2, s));
    if (a->pos_embed) {
        s[0] = j->m.n_pos;
        SP_TRY(sp_stw_add(j->w, a->pos_embed, j->out_dtype, 2, s));
    }
    for (int64_t l = 0; l < j->shape.layers; l++) {
        j->layer_out0[l] = sp_stw_tensor_count(j->w);
        sp_plan_layer_widths(j, l, w);
        c.intermediate_size = j->plan.ffn[l];
        for (int k = 0; k < j->n_outs; k++) {
            sp_arch_out_tensor(a, &c, &j->outs[k], l, w, nm, s, &nd);
            SP_TRY(sp_stw_add(j->w, nm, j->out_dtype, nd, s));
        }
    }
    j->layer_out0[j->shape.layers] = sp_stw_tensor_count(j->w);
    if (j->plan.stock) { /* the stock final norm's weight (compute.c emit_norm), a LayerNorm's β as read */
        s[0] = j->plan.width[SP_POS_OUT][j->shape.layers - 1];
        SP_TRY(sp_stw_add(j->w, a->final_norm, j->out_dtype, 1, s));
        if (a->final_norm_bias) SP_TRY(sp_stw_add(j->w, a->final_norm_bias, j->out_dtype, 1, s));
    }
    s[0] = j->shape.vocab, s[1] = j->plan.width[SP_POS_OUT][j->shape.layers - 1];
    if (!j->plan.tied_head) SP_TRY(sp_stw_add(j->w, a->head, j->out_dtype, 2, s));
    if (!sp_output_head_bias(j)) return 0;
    s[0] = j->shape.vocab; /* the head's own bias, plus (not stock) the final LayerNorm's β through the head */
    return sp_stw_add(j->w, a->head_bias, j->out_dtype, 1, s);
}

int sp_output_head_bias(const job *j) {
    const sp_arch *a = j->m.arch;
    SP_ASSERT(!a->final_norm_bias || a->head_bias);
    SP_ASSERT(!a->final_norm_bias || !j->plan.stock || j->plan.identity); /* a stock LayerNorm model has no basis */
    return j->m.has_head_bias || (a->final_norm_bias != NULL && !j->plan.stock);
}

static const char *dtype_torch(sp_dtype t) {
    return t == SP_DTYPE_BF16 ? "bfloat16" : t == SP_DTYPE_F16 ? "float16" : "float32";
}

/* config.json's text: the input config with the slicepipe block. */
static int config_text(job *j, const char *fp, char **out, int64_t *n) {
    cJSON *c = cJSON_Parse(j->m.cfg.raw_json);
    if (!c) return sp_fail(SP_EX_SOFTWARE, "config.json re-parse failed");
    cJSON_DeleteItemFromObject(c, "tie_word_embeddings");
    cJSON_AddBoolToObject(c, "tie_word_embeddings", j->plan.tied_head);
    cJSON_DeleteItemFromObject(c, "torch_dtype");
    cJSON_DeleteItemFromObject(c, "dtype"); /* newer transformers spelling; must not contradict */
    cJSON_AddStringToObject(c, "torch_dtype", dtype_torch(j->out_dtype));
    const int stock = j->plan.stock;
    const int64_t d = j->plan.width[SP_POS_IN][0];
    cJSON *s;
    if (stock) {
        /* One basis: the family's own architecture at width d
         * (docs/algorithm.md §10). head_dim is written because loaders
         * derive it from hidden_size when it is absent; the norms' weights
         * (sqrt(D/d)) are tensors. */
        const sp_config *cf = &j->m.cfg;
        const double eps = j->plan.identity ? cf->rms_norm_eps : cf->rms_norm_eps * (double)j->shape.hidden / (double)d;
        cJSON_DeleteItemFromObject(c, "hidden_size");
        cJSON_AddNumberToObject(c, "hidden_size", (double)d);
        if (j->plan.prune_ffn) { /* every layer keeps the same count */
            cJSON_DeleteItemFromObject(c, j->m.arch->ffn_key);
            cJSON_AddNumberToObject(c, j->m.arch->ffn_key, (double)j->plan.ffn[0]);
        }
        cJSON_DeleteItemFromObject(c, "head_dim");
        cJSON_AddNumberToObject(c, "head_dim", (double)cf->head_dim);
        if (j->m.arch->eps_key) {
            cJSON_DeleteItemFromObject(c, j->m.arch->eps_key);
            cJSON_AddNumberToObject(c, j->m.arch->eps_key, eps);
        }
        cJSON_DeleteItemFromObject(c, "slicepipe");
        s = cJSON_AddObjectToObject(c, "slicepipe");
        cJSON_AddStringToObject(s, "version", SP_VERSION);
        cJSON_AddStringToObject(s, "basis", j->plan.policy->name);
        if (j->plan.policy->config) j->plan.policy->config(j->mf, s);
        cJSON_AddStringToObject(s, "loaded_by", "any loader of the stock architecture (transformers, llama.cpp via "
                                                "slicepipe export, vLLM); slicepipe eval and generate");
        cJSON_AddNumberToObject(s, "original_hidden_size", (double)j->shape.hidden);
        cJSON_AddNumberToObject(s, "original_eps", cf->rms_norm_eps);
        cJSON_AddNumberToObject(s, "original_intermediate_size", (double)cf->intermediate_size);
    } else {
        /* A per-layer sliced model is not its stock architecture (shortcut
         * matrices, weightless norms over the original width): it must not
         * claim one, or a stock loader would take it for the dense model. The
         * family moves into the slicepipe block; slicepipe's eval and generate
         * load it. */
        cJSON *arch = cJSON_DetachItemFromObject(c, "architectures");
        cJSON_DeleteItemFromObject(c, "model_type");
        cJSON_AddStringToObject(c, "model_type", SP_SLICED_MODEL_TYPE);
        cJSON *archs = cJSON_AddArrayToObject(c, "architectures");
        cJSON_AddItemToArray(archs, cJSON_CreateString("SlicepipeSlicedForCausalLM"));
        cJSON_DeleteItemFromObject(c, "slicepipe");
        s = cJSON_AddObjectToObject(c, "slicepipe");
        cJSON_AddStringToObject(s, "version", SP_VERSION);
        cJSON_AddStringToObject(s, "base_model_type", j->m.arch->model_type);
        if (arch) cJSON_AddItemToObject(s, "base_architectures", arch);
        cJSON_AddStringToObject(s, "loaded_by", "slicepipe eval, slicepipe generate (per-layer SliceGPT layout: see README)");
        cJSON_AddStringToObject(s, "basis", j->plan.policy->name);
        if (j->plan.policy->config) j->plan.policy->config(j->mf, s);
    }
    /* With [slicing] params, the sparsity its width amounts to. */
    cJSON_AddNumberToObject(s, "sparsity", j->mf->has_params ? 1.0 - (double)d / (double)j->shape.hidden : j->mf->sparsity);
    if (j->mf->has_params) cJSON_AddNumberToObject(s, "params_target", j->mf->params);
    sp_params pd, po;
    sp_params_dense(&j->m, &pd);
    sp_params_plan(&j->m, &j->plan, &po);
    cJSON_AddNumberToObject(s, "params_dense", (double)pd.total);
    cJSON_AddNumberToObject(s, "params_output", (double)po.total);
    cJSON_AddNumberToObject(s, "round_to", (double)j->mf->round_to);
    cJSON_AddNumberToObject(s, "d_embed", (double)d);
    cJSON *ls = stock ? NULL : cJSON_AddArrayToObject(s, "layers"); /* stock: every width is d */
    for (int64_t l = 0; ls && l < j->shape.layers; l++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "d_in", (double)j->plan.width[SP_POS_IN][l]);
        cJSON_AddNumberToObject(o, "d_mid", (double)j->plan.width[SP_POS_MID][l]);
        cJSON_AddNumberToObject(o, "d_out", (double)j->plan.width[SP_POS_OUT][l]);
        cJSON_AddItemToArray(ls, o);
    }
    cJSON_AddStringToObject(s, "source_fingerprint", fp);
    char *txt = cJSON_Print(c);
    cJSON_Delete(c);
    if (!txt) return sp_fail(SP_EX_SOFTWARE, "out of memory printing config.json");
    *out = txt;
    *n = (int64_t)strlen(txt);
    return 0;
}

int sp_output_config(job *j, const char *fp) {
    char *txt;
    int64_t n;
    SP_TRY(config_text(j, fp, &txt, &n));
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", j->mf->output_path);
    int rc = sp_io_write_atomic(path, txt, n);
    free(txt);
    return rc;
}

/* 1 if the file at path has exactly these n bytes. */
static int same_bytes(const char *path, const char *want, int64_t n) {
    char *have;
    int64_t hn;
    if (sp_io_read_small(path, n + 1, &have, &hn)) {
        sp_err_clear();
        return 0;
    }
    int same = hn == n && memcmp(have, want, (size_t)n) == 0;
    free(have);
    return same;
}

/* Copies the tokenizer and generation files that sit beside the checkpoint
 * (each already checked by sp_model_open); with `changed_only`, only those
 * missing or different in the output, counted in *written. */
static int copy_side_files(job *j, int changed_only, int *written) {
    for (int i = 0; i < SP_MODEL_N_SIDE; i++) {
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", j->mf->model_path, sp_model_side_files[i]);
        snprintf(dst, sizeof dst, "%s/%s", j->mf->output_path, sp_model_side_files[i]);
        struct stat st;
        if (stat(src, &st) != 0) continue; /* absent, or a link to nothing (sp_modelfile_check) */
        char *buf;
        int64_t n;
        SP_TRY(sp_io_read_small(src, SP_MODEL_SIDE_BYTES_MAX, &buf, &n));
        int rc = 0;
        if (!changed_only || !same_bytes(dst, buf, n)) {
            rc = sp_io_write_atomic(dst, buf, n);
            if (written) ++*written;
        }
        free(buf);
        SP_TRY(rc);
    }
    return 0;
}

int sp_output_side_files(job *j) { return copy_side_files(j, 0, NULL); }

int sp_output_restore(job *j, int *restored) {
    *restored = 0;
    char *cfg = NULL;
    int64_t n = 0;
    SP_TRY(config_text(j, j->id.input, &cfg, &n));
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", j->mf->output_path);
    int rc = 0;
    if (!same_bytes(path, cfg, n)) {
        rc = sp_io_write_atomic(path, cfg, n);
        ++*restored;
    }
    free(cfg);
    if (!rc) rc = copy_side_files(j, 1, restored);
    return rc;
}

int sp_output_is_ours(const char *name) {
    size_t n = strlen(name);
    if (n > 4 && !strcmp(name + n - 4, ".tmp")) n -= 4;
    if ((n == 17 && !strncmp(name, "model.safetensors", n)) || (n == 28 && !strncmp(name, "model.safetensors.index.json", n)) ||
        (n == 10 && !strncmp(name, "model.gguf", n)))
        return 1;
    /* model-NNNNN-of-NNNNN.safetensors */
    if (n != 32 || strncmp(name, "model-", 6) || strncmp(name + 11, "-of-", 4) || strncmp(name + 20, ".safetensors", 12)) return 0;
    for (int i = 0; i < 5; i++)
        if (name[6 + i] < '0' || name[6 + i] > '9' || name[15 + i] < '0' || name[15 + i] > '9') return 0;
    return 1;
}

/* 1 if the directory a lies inside the directory whose (dev, ino) is b (or
 * is it): walks a's ".." chain by directory fd, so links and bind mounts are
 * compared by what they are, not by how they are spelled. */
static int dir_within(const char *a, dev_t bdev, ino_t bino) {
    int fd = open(a, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int hit = 0;
    for (int depth = 0; fd >= 0 && depth < 4096; depth++) {
        struct stat st, up;
        if (fstat(fd, &st) != 0) break;
        if (st.st_dev == bdev && st.st_ino == bino) {
            hit = 1;
            break;
        }
        int pfd = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (pfd < 0 || fstat(pfd, &up) != 0 || (up.st_dev == st.st_dev && up.st_ino == st.st_ino)) {
            if (pfd >= 0) close(pfd);
            break; /* the root */
        }
        close(fd);
        fd = pfd;
    }
    if (fd >= 0) close(fd);
    return hit;
}

/* The folder of an input file, for the containment rule. */
static int input_folder(const char *file, char *dir, size_t cap) {
    char *rp = realpath(file, NULL);
    if (!rp) return 0;
    char *sl = strrchr(rp, '/');
    if (sl == rp) sl[1] = 0;
    else if (sl) *sl = 0;
    snprintf(dir, cap, "%s", rp);
    free(rp);
    return 1;
}

/* Checks one input folder against the output (existing: out_exists; or its
 * deepest existing ancestor `anc`). */
static int check_folder(const job *j, const char *what, const char *folder, int out_exists, const char *anc) {
    struct stat fs, os;
    if (stat(folder, &fs) != 0) return 0;
    const char *out = j->mf->output_path;
    int bad = 0;
    if (out_exists) {
        if (stat(out, &os) != 0) return sp_fail_errno(SP_EX_CANTCREAT, "%s: stat", out);
        bad = dir_within(out, fs.st_dev, fs.st_ino) || dir_within(folder, os.st_dev, os.st_ino);
    } else {
        bad = dir_within(anc, fs.st_dev, fs.st_ino);
    }
    if (bad)
        return sp_fail(SP_EX_USAGE,
                       "%s: [output] path %s is, contains or lies inside the folder %s of the input's %s (compared by "
                       "device and inode: links and bind mounts count); writing there could overwrite the input; choose "
                       "a folder outside the model",
                       j->mf->path, out, folder, what);
    return 0;
}

int sp_output_check(job *j) {
    const char *out = j->mf->output_path;

    /* The output, or its deepest existing ancestor. */
    struct stat st;
    int exists = lstat(out, &st) == 0;
    if (exists && S_ISLNK(st.st_mode) && stat(out, &st) != 0)
        return sp_fail(SP_EX_CANTCREAT, "%s: the output path is a dangling link", out);
    char anc[4096];
    if (snprintf(anc, sizeof anc, "%s", out) >= (int)sizeof anc) return sp_fail(SP_EX_CANTCREAT, "%s: path too long", out);
    if (!exists) {
        for (;;) {
            char *sl = strrchr(anc, '/');
            if (strcmp(sl ? sl + 1 : anc, "..") == 0)
                return sp_fail(SP_EX_USAGE, "%s: [output] path %s: '..' after the part that exists; spell it without", j->mf->path, out);
            if (!sl) {
                snprintf(anc, sizeof anc, ".");
                break;
            }
            if (sl == anc) {
                anc[1] = 0;
                break;
            }
            *sl = 0;
            if (stat(anc, &st) == 0) break;
        }
    }
    char folder[4096];
    snprintf(folder, sizeof folder, "%s", j->mf->model_path);
    SP_TRY(check_folder(j, "model", folder, exists, anc));
    for (int i = 0; i < sp_ckpt_shard_count(j->m.ckpt); i++)
        if (input_folder(sp_st_path(sp_ckpt_shard(j->m.ckpt, i)), folder, sizeof folder))
            SP_TRY(check_folder(j, "shard", folder, exists, anc));

    /* A folder with someone else's files is never written into. */
    if (!exists) return 0;
    if (!S_ISDIR(st.st_mode)) return sp_fail(SP_EX_CANTCREAT, "%s: output path exists and is not a directory", out);
    char jd[4096];
    snprintf(jd, sizeof jd, "%s/.slicepipe", out);
    struct stat js;
    int is_job = lstat(jd, &js) == 0;
    if (is_job && !S_ISDIR(js.st_mode))
        return sp_fail(SP_EX_CANTCREAT, "%s: is not a directory (a link or a file); refused as the job directory", jd);
    if (is_job) return 0;
    DIR *d = opendir(out);
    if (!d) return sp_fail_errno(SP_EX_CANTCREAT, "%s: cannot list the output directory", out);
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            rc = sp_fail(SP_EX_CANTCREAT,
                         "%s: the output folder is not empty and is not a slicepipe job (it holds '%s'); slicepipe "
                         "writes only into a new or empty folder, or resumes its own job there",
                         out, e->d_name);
    closedir(d);
    return rc;
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

