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
static int staged_alloc(const sp_bk *bk, void **p, int64_t bytes, const char *what) {
    SP_TRY(sp_alloc(p, bytes > 0 ? bytes : 1, 1, what));
    float *f = *p;
    for (int64_t i = 0; i < bytes / 4; i++) f[i] = NAN;
    return 0;
}

static void (*cpu_identity_of_staged)(const sp_bk *, char *, int64_t);
static void staged_identity(const sp_bk *bk, char *buf, int64_t n) {
    char inner[240];
    cpu_identity_of_staged(bk, inner, sizeof inner);
    snprintf(buf, (size_t)n, "cpu-staged (%s)", inner);
}

static int cpu_or_staged_open(sp_bk **out) {
    SP_TRY(sp_bk_cpu_open(out));
    const char *e = getenv("SLICEPIPE_STAGED_BACKEND");
    if (e && strcmp(e, "1") == 0) {
        sp_bk *b = *out;
        cpu_identity_of_staged = b->identity;
        b->host_shared = 0;
        b->alloc = staged_alloc;
        b->identity = staged_identity;
        b->name = "cpu-staged";
    }
    return 0;
}

static int always_usable(char *why, int64_t n) {
    if (n > 0) why[0] = 0;
    return 1;
}

/* In preference order: "auto" takes the first usable one that its for_auto
 * (if any) accepts. */
static const sp_bk_reg registry[] = {
#ifdef SLICEPIPE_HAVE_CUDA
    {"cuda", "NVIDIA GPUs: cuBLAS and cuSOLVER (CUDA Toolkit)", cuda_usable, sp_bk_cuda_open, NULL, NULL},
#endif
#ifdef SLICEPIPE_HAVE_ONEDNN
    {"onednn", "the cpu backend with its GEMMs on oneDNN's matmul (f32, or bf16 on AVX512-BF16/AMX)",
     sp_bk_onednn_usable, sp_bk_onednn_open, sp_bk_onednn_for_auto, sp_bk_onednn_open_bf16},
#endif
    {"cpu", "OpenBLAS and LAPACKE, with its own thread pool", always_usable, cpu_or_staged_open, NULL, NULL},
};

const char *sp_bk_prec_name(enum sp_bk_prec p) { return p == SP_BK_PREC_BF16 ? "bf16" : "f32"; }

int sp_bk_reg_count(void) { return (int)(sizeof registry / sizeof registry[0]); }

const sp_bk_reg *sp_bk_reg_at(int i) {
    SP_ASSERT(i >= 0 && i < sp_bk_reg_count());
    return &registry[i];
}

const sp_bk_reg *sp_bk_reg_find(const char *name) {
    for (int i = 0; name && i < sp_bk_reg_count(); i++)
        if (strcmp(registry[i].name, name) == 0) return &registry[i];
    return NULL;
}

/* Every backend this slicepipe knows of, compiled in or not, so that a
 * manifest naming one this build lacks gets "built without" rather than
 * "unknown". */
static const char *const known[] = {"cpu", "cuda", "onednn"};
/* How to build each one in, for the "built without it" message. */
static const char *const known_how[] = {"", "configure with -DSLICEPIPE_CUDA=ON where the CUDA toolkit is installed",
                                        "install libdnnl-dev (tools/install-deps.sh) and configure with "
                                        "-DSLICEPIPE_ONEDNN=ON"};

int sp_bk_name_known(const char *name) {
    if (name && strcmp(name, "auto") == 0) return 1;
    for (size_t i = 0; name && i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i], name) == 0) return 1;
    return 0;
}

const char *sp_bk_reg_names(void) {
    static char names[128];
    if (!names[0]) { /* "auto, cpu, cuda or onednn" */
        size_t n = sizeof known / sizeof known[0], len = 0;
        len += (size_t)snprintf(names + len, sizeof names - len, "auto");
        for (size_t i = 0; i < n && len < sizeof names; i++)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i + 1 == n ? " or " : ", ", known[i]);
    }
    return names;
}

/* Registry entry i is what "auto" takes at precision p: its for_auto (if
 * any) accepts it, and it is usable. for_auto asks first: it may decide
 * without loading anything (onednn's cpuid test), where usable loads the
 * backend's library. */
static int auto_takes(int i, enum sp_bk_prec p, char *why, int64_t n) {
    if (registry[i].for_auto && !registry[i].for_auto(p, why, n)) return 0;
    return registry[i].usable(why, n);
}

/* A name that is no registry entry: 64, "built without it" or "unknown". */
static int not_in_registry(const char *requested) {
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i], requested) == 0)
            return sp_fail(SP_EX_USAGE, "backend \"%s\": this slicepipe was built without it (%s); use backend = "
                                        "\"cpu\" or \"auto\"", requested, known_how[i]);
    return sp_fail(SP_EX_USAGE, "unknown backend '%.32s' (%s)", requested, sp_bk_reg_names());
}

int sp_bk_open(const char *requested, sp_bk **out) {
    *out = NULL;
    char why[256] = "";
    if (!requested || strcmp(requested, "auto") == 0) {
        for (int i = 0; i < sp_bk_reg_count(); i++)
            if (auto_takes(i, SP_BK_PREC_F32, why, (int64_t)sizeof why)) return registry[i].open(out);
        return sp_fail(SP_EX_USAGE, "no usable backend (%s)", why);
    }
    const sp_bk_reg *r = sp_bk_reg_find(requested);
    if (r) {
        if (r->usable(why, (int64_t)sizeof why)) return r->open(out);
        return sp_fail(SP_EX_USAGE, "backend \"%s\" (%s) is not usable here: %s; use backend = \"cpu\" or \"auto\"",
                       r->name, r->about, why[0] ? why : "no reason given");
    }
    return not_in_registry(requested);
}

int sp_bk_open_prec(const char *requested, enum sp_bk_prec prec, sp_bk **out) {
    if (prec == SP_BK_PREC_F32) return sp_bk_open(requested, out);
    SP_ASSERT(prec == SP_BK_PREC_BF16);
    *out = NULL;
    char why[256] = "";
    if (!requested || strcmp(requested, "auto") == 0) {
        /* The first that auto takes at bf16 and that opens at bf16; else the
         * reason of the last one that has bf16 GEMMs at all. */
        char reason[512] = "";
        for (int i = 0; i < sp_bk_reg_count(); i++) {
            if (!registry[i].open_bf16) continue;
            if (!auto_takes(i, prec, why, (int64_t)sizeof why)) {
                snprintf(reason, sizeof reason, "backend \"%s\": %s", registry[i].name, why);
                continue;
            }
            int rc = registry[i].open_bf16(out);
            if (rc != SP_EX_USAGE) return rc;
            snprintf(reason, sizeof reason, "%s", sp_errmsg());
        }
        if (!reason[0])
            snprintf(reason, sizeof reason, "no backend of this slicepipe computes in bf16 (the onednn backend does: "
                                            "%s)", known_how[2]);
        return sp_fail(SP_EX_USAGE, "precision = \"bf16\" cannot run here: %s; use precision = \"f32\"", reason);
    }
    const sp_bk_reg *r = sp_bk_reg_find(requested);
    if (!r) return not_in_registry(requested);
    if (!r->usable(why, (int64_t)sizeof why))
        return sp_fail(SP_EX_USAGE, "backend \"%s\" (%s) is not usable here: %s; use backend = \"cpu\" or \"auto\"",
                       r->name, r->about, why[0] ? why : "no reason given");
    if (!r->open_bf16)
        return sp_fail(SP_EX_USAGE, "precision = \"bf16\": backend \"%s\" computes in float32 only (backend = \"onednn\" "
                                    "has bf16 GEMMs on CPUs with AVX512-BF16 or AMX); use precision = \"f32\"", r->name);
    int rc = r->open_bf16(out);
    if (rc == SP_EX_USAGE) {
        char msg[768];
        snprintf(msg, sizeof msg, "%s", sp_errmsg());
        return sp_fail(rc, "precision = \"bf16\" cannot run here: %s; use precision = \"f32\"", msg);
    }
    return rc;
}

int sp_bk_open_host(const char *requested, const char *who, sp_bk **out) {
    *out = NULL;
    if (!requested || strcmp(requested, "auto") == 0) {
        char why[256];
        for (int i = 0; i < sp_bk_reg_count(); i++) {
            if (!auto_takes(i, SP_BK_PREC_F32, why, (int64_t)sizeof why)) continue;
            sp_bk *b;
            SP_TRY(registry[i].open(&b));
            if (b->host_shared) {
                *out = b;
                return 0;
            }
            sp_bk_close(b);
        }
        return sp_bk_cpu_open(out); /* the CPU itself, when a test stages it */
    }
    SP_TRY(sp_bk_open(requested, out));
    if (!(*out)->host_shared) {
        sp_bk_close(*out);
        *out = NULL;
        return sp_fail(SP_EX_USAGE,
                       "%s: backend \"%s\" keeps its buffers in device memory, which %s does not support yet; use "
                       "--backend cpu or auto", who, requested, who);
    }
    return 0;
}

void sp_bk_close(sp_bk *bk) {
    if (bk) bk->release(bk);
}

int64_t sp_bk_buf_bytes(const sp_bk *bk, int64_t bytes, int64_t *device_bytes) {
    if (device_bytes) *device_bytes = bk->host_shared ? 0 : bytes;
    return bytes;
}

int sp_bk_buf_init(const sp_bk *bk, sp_bk_buf *b, int64_t bytes, const char *what) {
    memset(b, 0, sizeof *b);
    if (bytes < 0) return sp_fail(SP_EX_SOFTWARE, "buffer for %s: negative size %lld", what, (long long)bytes);
    if (bk->host_shared) {
        SP_TRY(bk->alloc(bk, &b->host, bytes, what));
        b->dev = b->host;
    } else {
        SP_TRY(sp_alloc(&b->host, bytes, 1, what));
        int rc = bk->alloc(bk, &b->dev, bytes, what);
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
        bk->free(bk, b->host);
    } else {
        free(b->host);
        bk->free(bk, b->dev);
    }
    b->host = b->dev = NULL;
    b->bytes = 0;
}

void sp_bk_buf_to_dev(const sp_bk *bk, sp_bk_buf *b, int64_t off, int64_t n) {
    SP_ASSERT(off >= 0 && n >= 0 && off <= b->bytes && n <= b->bytes - off);
    sp_bk_put(bk, (char *)b->dev + off, (const char *)b->host + off, n);
}

void sp_bk_buf_to_host(const sp_bk *bk, sp_bk_buf *b, int64_t off, int64_t n) {
    SP_ASSERT(off >= 0 && n >= 0 && off <= b->bytes && n <= b->bytes - off);
    sp_bk_get(bk, (char *)b->host + off, (const char *)b->dev + off, n);
}

const void *sp_bk_put(const sp_bk *bk, void *dev, const void *src, int64_t bytes) {
    if (bk->host_shared) return src;
    SP_ASSERT(dev && bytes >= 0);
    if (bytes > 0) bk->to_dev(bk, dev, src, bytes);
    return dev;
}

void *sp_bk_out(const sp_bk *bk, void *dev, void *host) { return bk->host_shared ? host : dev; }

void sp_bk_get(const sp_bk *bk, void *host, const void *dev, int64_t bytes) {
    if (bk->host_shared || bytes <= 0) return;
    SP_ASSERT(dev);
    bk->to_host(bk, host, dev, bytes);
}

const void *sp_bk_fetch(const sp_bk *bk, void *host, const void *dev, int64_t bytes) {
    if (bk->host_shared) return dev;
    sp_bk_get(bk, host, dev, bytes);
    return host;
}
