/* linalg/blas_core.c — OpenBLAS's kernels matched to this CPU at start-up
 * (contract and state diagram: blas_core.h). */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L /* setenv, execv, strcasecmp: bench/kernel_peaks.c builds it with -std=c11 */
#endif
#include "blas_core.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MARK_VAR "SLICEPIPE_OPENBLAS_REEXEC" /* "SLEEP:NEXT:PICKED:USER" across our own exec only */
#define KEEP_VAR "SLICEPIPE_KEEP_OPENBLAS_CORE"
#define CORE_VAR "OPENBLAS_CORETYPE"
/* OpenBLAS's idle threads spin (sched_yield) for 2^OPENBLAS_THREAD_TIMEOUT
 * cycles after each threaded call before they sleep: 2^28 by default, about
 * 0.1 s, so between the threaded GEMMs of a forward they never sleep and take
 * a core from the pool's workers. 4 is the smallest it takes (blas_core.h). */
#define SLEEP_VAR "OPENBLAS_THREAD_TIMEOUT"
#define SLEEP_OURS "4"
#define NAME_MAX_LEN 48

/* ISA classes: what a core's kernels need, and what a CPU runs. */
enum { CLASS_UNKNOWN = -1, CLASS_SSE = 0, CLASS_AVX = 1, CLASS_AVX2 = 2, CLASS_AVX512 = 3 };
static const char *const class_names[] = {"SSE", "AVX", "AVX2", "AVX-512"};

/* OpenBLAS's x86-64 core names (driver/others/dynamic.c) by class. */
static const struct {
    const char *name;
    int cls;
} cores[] = {
    {"Katmai", CLASS_SSE},       {"Coppermine", CLASS_SSE},   {"Northwood", CLASS_SSE},   {"Prescott", CLASS_SSE},
    {"Banias", CLASS_SSE},       {"Atom", CLASS_SSE},         {"Core2", CLASS_SSE},       {"Penryn", CLASS_SSE},
    {"Dunnington", CLASS_SSE},   {"Nehalem", CLASS_SSE},      {"Athlon", CLASS_SSE},      {"Opteron", CLASS_SSE},
    {"Opteron_SSE3", CLASS_SSE}, {"Barcelona", CLASS_SSE},    {"Nano", CLASS_SSE},        {"Bobcat", CLASS_SSE},
    {"Sandybridge", CLASS_AVX},  {"Bulldozer", CLASS_AVX},    {"Piledriver", CLASS_AVX},  {"Steamroller", CLASS_AVX},
    {"Excavator", CLASS_AVX},    {"Haswell", CLASS_AVX2},     {"Zen", CLASS_AVX2},        {"SkylakeX", CLASS_AVX512},
    {"Cooperlake", CLASS_AVX512}, {"SapphireRapids", CLASS_AVX512},
};

static int class_of(const char *core) {
    for (size_t i = 0; core && i < sizeof cores / sizeof cores[0]; i++)
        if (strcasecmp(cores[i].name, core) == 0) return cores[i].cls;
    return CLASS_UNKNOWN;
}

/* What sp_blas_core_ensure found and did, for describe. */
static struct {
    int done;
    int dynamic;               /* a DYNAMIC_ARCH build: it reads OPENBLAS_CORETYPE at load */
    int cpu_cls;               /* CLASS_* this CPU runs (CLASS_SSE: nothing better to ask for) */
    int ncand;                 /* candidate cores, best first, all of class cpu_cls */
    const char *cand[2];
    char picked[NAME_MAX_LEN]; /* the core OpenBLAS picked before any re-execution */
    char user[NAME_MAX_LEN];   /* OPENBLAS_CORETYPE as the user set it ("" when unset) */
    int upgraded, kept, stuck; /* re-executed onto a better core; kept by KEEP_VAR; could not change */
    int sleep_ours;            /* SLEEP_VAR was set by our re-execution (the user had not set it) */
} st;

/* The CPU's class and its candidate cores, best first. cpuid through the
 * compiler's builtins, which also check that the OS saves the AVX and
 * AVX-512 registers (XGETBV). */
static void cpu_probe(void) {
    const char *cfg = openblas_get_config();
    st.dynamic = cfg && strstr(cfg, "DYNAMIC_ARCH") != NULL;
    st.cpu_cls = CLASS_SSE;
    st.ncand = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512vl");
    if (avx512) {
        st.cpu_cls = CLASS_AVX512;
        if (__builtin_cpu_supports("avx512bf16")) st.cand[st.ncand++] = "Cooperlake"; /* SkylakeX's kernels + bf16 GEMMs */
        st.cand[st.ncand++] = "SkylakeX";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        st.cpu_cls = CLASS_AVX2;
        st.cand[st.ncand++] = __builtin_cpu_is("amd") ? "Zen" : "Haswell";
    } else if (__builtin_cpu_supports("avx")) {
        st.cpu_cls = CLASS_AVX;
        st.cand[st.ncand++] = "Sandybridge";
    }
#endif
}

static const char *prog_of(char **argv) {
    const char *p = argv && argv[0] ? strrchr(argv[0], '/') : NULL;
    return p ? p + 1 : argv && argv[0] ? argv[0] : "slicepipe";
}

/* OPENBLAS_CORETYPE back as the user had it, for whatever this process starts. */
static void restore_user_core(void) {
    if (st.user[0]) setenv(CORE_VAR, st.user, 1);
    else unsetenv(CORE_VAR);
}

/* Re-executes this program with the marker "SLEEP:NEXT:PICKED:USER", SLEEP_VAR
 * when ours and OPENBLAS_CORETYPE = core (NULL: as it is); returns errno when
 * the exec failed, with the environment as it was. */
static int reexec(char **argv, int next, const char *core) {
    char m[3 * NAME_MAX_LEN + 24];
    snprintf(m, sizeof m, "%d:%d:%s:%s", st.sleep_ours, next, st.picked, st.user);
    if (setenv(MARK_VAR, m, 1) == 0 && (!core || setenv(CORE_VAR, core, 1) == 0) &&
        (!st.sleep_ours || setenv(SLEEP_VAR, SLEEP_OURS, 1) == 0)) {
        fflush(stdout);
        fflush(stderr);
        execv("/proc/self/exe", argv);
    }
    int e = errno;
    unsetenv(MARK_VAR);
    if (st.sleep_ours) unsetenv(SLEEP_VAR);
    restore_user_core();
    return e;
}

void sp_blas_core_ensure(char **argv) {
    if (st.done) return;
    st.done = 1;
    cpu_probe();
    const char *now = openblas_get_corename();
    int next = 0; /* the next candidate to try */
    const char *mark = getenv(MARK_VAR);
    if (mark) { /* we re-executed ourselves: "SLEEP:NEXT:PICKED:USER" */
        char buf[3 * NAME_MAX_LEN + 24];
        snprintf(buf, sizeof buf, "%s", mark);
        char *z = strchr(buf, ':'), *a = z ? strchr(z + 1, ':') : NULL, *b = a ? strchr(a + 1, ':') : NULL;
        if (z && a && b) {
            *z = *a = *b = 0;
            st.sleep_ours = atoi(buf) == 1;
            next = atoi(z + 1);
            snprintf(st.picked, sizeof st.picked, "%s", a + 1);
            snprintf(st.user, sizeof st.user, "%s", b + 1);
        }
        unsetenv(MARK_VAR);
        if (st.sleep_ours) unsetenv(SLEEP_VAR); /* OpenBLAS read it at load; what this process starts gets the user's */
        if (next < 1 || next > st.ncand) next = st.ncand; /* not ours, or garbled: never exec again */
    } else {
        snprintf(st.picked, sizeof st.picked, "%s", now ? now : "");
        const char *u = getenv(CORE_VAR);
        snprintf(st.user, sizeof st.user, "%s", u ? u : "");
        st.sleep_ours = getenv(SLEEP_VAR) == NULL; /* a value the user set is theirs */
    }
    /* The kernels' decision; a process that keeps its core and was not
     * re-executed yet still is, once, for SLEEP_VAR (a few milliseconds). */
    int cls = class_of(now);
    if (mark && now && strcasecmp(now, st.picked) != 0) st.upgraded = 1;
    int fits = !st.dynamic /* one core compiled in: OPENBLAS_CORETYPE is not read */ || st.ncand == 0 ||
               cls == CLASS_UNKNOWN || cls == st.cpu_cls; /* fits (or a core this table does not know) */
    const char *keep = getenv(KEEP_VAR);
    if (!fits && keep && keep[0] && strcmp(keep, "0") != 0) st.kept = 1;
    if (fits || st.kept) {
        /* Silent: stderr holds one clear message when something fails, on
         * machines that preset OPENBLAS_CORETYPE too; --version and the run
         * summary say what was overridden (sp_blas_core_describe). A failed
         * exec for SLEEP_VAR alone costs speed, not correctness, and is
         * not said: the workers spin as they always did. */
        if (!mark && st.sleep_ours && reexec(argv, st.ncand, NULL)) st.sleep_ours = 0;
        return;
    }
    /* weaker than the CPU (or, set by hand, stronger: it would die of SIGILL) */
    if (next < st.ncand) {
        int e = reexec(argv, next + 1, st.cand[next]);
        st.stuck = 1;
        st.sleep_ours = 0;
        fprintf(stderr, "%s: warning: OpenBLAS runs its %s kernels, not this CPU's %s, and re-executing with "
                        "OPENBLAS_CORETYPE=%s failed (%s): its products may run several times slower\n",
                prog_of(argv), now, class_names[st.cpu_cls], st.cand[next], strerror(e));
        return;
    }
    restore_user_core(); /* OpenBLAS took no candidate: a property of the library, said by describe */
    st.stuck = 1;
}

void sp_blas_core_name(char *buf, size_t n) {
    const char *c = openblas_get_corename();
    snprintf(buf, n, "%s", c ? c : "unknown");
}

void sp_blas_core_describe(char *buf, size_t n) {
    if (!st.done) cpu_probe();
    const char *now = openblas_get_corename();
    char ver[64];
    snprintf(ver, sizeof ver, "%s", openblas_get_config()); /* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ..." */
    char *sp = strchr(ver, ' ');
    sp = sp ? strchr(sp + 1, ' ') : NULL;
    if (sp) *sp = 0; /* "OpenBLAS 0.3.21" */
    int cls = class_of(now);
    const char *cpu = class_names[st.cpu_cls];
    char why[160] = "";
    if (!st.dynamic)
        snprintf(why, sizeof why, "built for one core only; this CPU runs %s", cpu);
    else if (st.kept)
        snprintf(why, sizeof why, "not this CPU's %s: kept by %s", cpu, KEEP_VAR);
    else if (st.stuck)
        snprintf(why, sizeof why, "not this CPU's %s: OpenBLAS would not switch", cpu);
    else if (cls == CLASS_UNKNOWN)
        snprintf(why, sizeof why, "a core slicepipe does not rank; this CPU runs %s", cpu);
    else if (cls != st.cpu_cls)
        snprintf(why, sizeof why, "not this CPU's %s", cpu);
    else if (st.upgraded && st.user[0])
        snprintf(why, sizeof why, "%s, this CPU's best class; chosen over OPENBLAS_CORETYPE=%s", class_names[cls], st.user);
    else if (st.upgraded)
        snprintf(why, sizeof why, "%s, this CPU's best class; OpenBLAS alone had picked %s", class_names[cls], st.picked);
    else
        snprintf(why, sizeof why, "%s, this CPU's best class", class_names[cls]);
    snprintf(buf, n, "%s, %s kernels (%s)", ver, now ? now : "unknown", why);
}
