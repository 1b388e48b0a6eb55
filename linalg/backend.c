/* linalg/backend.c — choosing a backend, and the sp_bk_buf pairs of a host
 * view and a backend view (contract: backend.h). */
#include "backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#ifdef SLICEPIPE_HAVE_CUDA
#include <unistd.h>

/* A CUDA device can be used: first a device node, so that a machine without
 * an NVIDIA driver never loads the CUDA runtime (whose initialization alone
 * adds ~180 MiB to every process's RSS, and to the stages forked after it),
 * then the backend's own probe. */
static int cuda_usable(char *why, int64_t n) {
    if (access("/dev/nvidiactl", F_OK) != 0 && access("/dev/nvidia0", F_OK) != 0) {
        snprintf(why, (size_t)n, "no NVIDIA device node (/dev/nvidiactl)");
        return 0;
    }
    return sp_bk_cuda_usable(why, n);
}
#endif

/* The CPU backend with memory that is NOT host-shared: backend buffers are
 * separate allocations, filled with NaN, reached only through to_dev /
 * to_host / copy. It computes exactly what the CPU backend computes, so a
 * pipeline run on it must give byte-identical output; a missing upload or
 * download shows as NaN or as different bytes. A test backend, selected with
 * SLICEPIPE_STAGED_BACKEND=1 in place of the CPU, for testing the data
 * movement a GPU backend needs on a machine without a GPU. */
static int staged_alloc(void **p, int64_t bytes, const char *what) {
    SP_TRY(sp_alloc(p, bytes > 0 ? bytes : 1, 1, what));
    float *f = *p;
    for (int64_t i = 0; i < bytes / 4; i++) f[i] = NAN;
    return 0;
}

static void staged_identity(char *buf, int64_t n) {
    char inner[240];
    sp_bk_cpu.identity(inner, sizeof inner);
    snprintf(buf, (size_t)n, "cpu-staged (%s)", inner);
}

static const sp_bk *staged_cpu(void) {
    static sp_bk staged;
    if (!staged.name) {
        staged = sp_bk_cpu;
        staged.host_shared = 0;
        staged.alloc = staged_alloc;
        staged.identity = staged_identity;
        staged.name = "cpu-staged";
    }
    return &staged;
}

static const sp_bk *cpu_or_staged(void) {
    const char *e = getenv("SLICEPIPE_STAGED_BACKEND");
    return e && strcmp(e, "1") == 0 ? staged_cpu() : &sp_bk_cpu;
}

int sp_bk_resolve(const char *requested, const sp_bk **out) {
    *out = NULL;
    if (!requested || strcmp(requested, "auto") == 0) {
#ifdef SLICEPIPE_HAVE_CUDA
        char why[256] = "";
        if (cuda_usable(why, (int64_t)sizeof why)) {
            *out = &sp_bk_cuda;
            return 0;
        }
#endif
        *out = cpu_or_staged();
        return 0;
    }
    if (strcmp(requested, "cpu") == 0) {
        *out = cpu_or_staged();
        return 0;
    }
    if (strcmp(requested, "cuda") == 0) {
#ifdef SLICEPIPE_HAVE_CUDA
        char why[256] = "";
        if (cuda_usable(why, (int64_t)sizeof why)) {
            *out = &sp_bk_cuda;
            return 0;
        }
        return sp_fail(SP_EX_USAGE, "backend \"cuda\": no usable CUDA device (%s); use backend = \"cpu\" or \"auto\"",
                       why[0] ? why : "no reason given");
#else
        return sp_fail(SP_EX_USAGE,
                       "backend \"cuda\": this slicepipe was built without the CUDA backend (configure with "
                       "-DSLICEPIPE_CUDA=ON where the CUDA toolkit is installed); use backend = \"cpu\" or \"auto\"");
#endif
    }
    return sp_fail(SP_EX_USAGE, "unknown backend '%.32s' (auto, cpu or cuda)", requested);
}

int64_t sp_bk_buf_bytes(const sp_bk *bk, int64_t bytes, int64_t *device_bytes) {
    if (device_bytes) *device_bytes = bk->host_shared ? 0 : bytes;
    return bytes;
}

int sp_bk_buf_init(const sp_bk *bk, sp_bk_buf *b, int64_t bytes, const char *what) {
    memset(b, 0, sizeof *b);
    if (bytes < 0) return sp_fail(SP_EX_SOFTWARE, "buffer for %s: negative size %lld", what, (long long)bytes);
    if (bk->host_shared) {
        SP_TRY(bk->alloc(&b->host, bytes, what));
        b->dev = b->host;
    } else {
        SP_TRY(sp_alloc(&b->host, bytes, 1, what));
        int rc = bk->alloc(&b->dev, bytes, what);
        if (rc) {
            free(b->host);
            b->host = NULL;
            return rc;
        }
    }
    b->bytes = bytes;
    return 0;
}

void sp_bk_buf_free(const sp_bk *bk, sp_bk_buf *b) {
    if (!b) return;
    if (bk->host_shared) {
        bk->free(b->host);
    } else {
        free(b->host);
        bk->free(b->dev);
    }
    b->host = b->dev = NULL;
    b->bytes = 0;
}

void sp_bk_buf_to_dev(const sp_bk *bk, sp_bk_buf *b, int64_t off, int64_t n) {
    SP_ASSERT(off >= 0 && n >= 0 && off <= b->bytes && n <= b->bytes - off);
    if (!bk->host_shared && n > 0) bk->to_dev((char *)b->dev + off, (const char *)b->host + off, n);
}

void sp_bk_buf_to_host(const sp_bk *bk, sp_bk_buf *b, int64_t off, int64_t n) {
    SP_ASSERT(off >= 0 && n >= 0 && off <= b->bytes && n <= b->bytes - off);
    if (!bk->host_shared && n > 0) bk->to_host((char *)b->host + off, (const char *)b->dev + off, n);
}
