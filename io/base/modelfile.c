/* io/base/modelfile.c — the model folder's link rule (modelfile.h). */
#include "modelfile.h"

#include "error.h"
#include "fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* 1 if rp lies under the folder rdir (both realpaths). */
static int under(const char *rp, const char *rdir) {
    size_t n = strlen(rdir);
    return strncmp(rp, rdir, n) == 0 && (rp[n] == '/' || (n == 1 && rdir[0] == '/'));
}

/* The length of REPO when rdir is REPO/snapshots/REV, else -1. */
static long hf_repo_len(const char *rdir) {
    const char *rev = strrchr(rdir, '/');
    if (!rev || rev == rdir || !rev[1]) return -1;
    const char *snap = rev - 1;
    while (snap > rdir && *snap != '/') snap--;
    if (*snap != '/' || rev - snap - 1 != 9 || strncmp(snap + 1, "snapshots", 9) != 0) return -1;
    return (long)(snap - rdir);
}

/* 1 if rp is a file directly inside REPO/blobs (rdir = REPO/snapshots/REV). */
static int in_blobs(const char *rp, const char *rdir, long repo_len) {
    size_t rl = (size_t)repo_len;
    const char *base = strrchr(rp, '/');
    return repo_len >= 0 && strncmp(rp, rdir, rl) == 0 && strncmp(rp + rl, "/blobs/", 7) == 0 &&
           base == rp + rl + 6 && base[1] != 0;
}

int sp_modelfile_check(const char *dir, const char *path, int *present) {
    *present = 0;
    char *rdir = realpath(dir, NULL);
    if (!rdir && errno != ENOENT && errno != ENOTDIR)
        return sp_fail_errno(SP_EX_NOINPUT, "%s: cannot resolve the model directory", dir);
    char *rp = rdir ? realpath(path, NULL) : NULL;
    int rc = 0;
    if (!rp) {
        int e = errno;
        if (e != ENOENT && e != ENOTDIR) {
            errno = e;
            rc = sp_fail_errno(e == ELOOP ? SP_EX_DATAERR : SP_EX_NOINPUT, "%s: cannot resolve", path);
        }
        free(rdir);
        return rc;
    }
    long repo = hf_repo_len(rdir);
    struct stat st;
    if (!under(rp, rdir) && !in_blobs(rp, rdir, repo)) {
        if (repo >= 0)
            rc = sp_fail(SP_EX_DATAERR,
                         "%s: resolves to %s, outside the model directory %s and its Hugging Face cache blobs "
                         "%.*s/blobs (symlink escape); refused",
                         path, rp, rdir, (int)repo, rdir);
        else
            rc = sp_fail(SP_EX_DATAERR, "%s: resolves to %s, outside the model directory %s (symlink escape); refused",
                         path, rp, rdir);
    } else if (stat(rp, &st) != 0) {
        rc = sp_fail_errno(SP_EX_NOINPUT, "%s: stat", path);
    } else if (!S_ISREG(st.st_mode)) {
        rc = sp_fail(SP_EX_DATAERR, "%s: not a regular file (%s); refused", path, sp_io_kind(st.st_mode));
    } else {
        *present = 1;
    }
    free(rp);
    free(rdir);
    return rc;
}

void sp_modelfile_name(const char *dir, char *out, size_t cap) {
    char *rdir = realpath(dir, NULL);
    long repo = rdir ? hf_repo_len(rdir) : -1;
    if (repo > 0) {
        rdir[repo] = 0;
        const char *base = strrchr(rdir, '/') + 1, *name = strstr(base, "--");
        for (const char *q = name; q; q = strstr(q + 2, "--")) name = q;
        if (strncmp(base, "models--", 8) == 0 && name && name[2]) {
            snprintf(out, cap, "%s", name + 2);
            free(rdir);
            return;
        }
    }
    free(rdir);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    snprintf(out, cap, "%.*s", (int)(n - b), dir + b);
}
