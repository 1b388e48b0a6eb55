/* linalg/blas_core.h — OpenBLAS's kernels matched to this CPU at start-up,
 * with nothing for the user to set (docs/determinism.md, "Which kernels").
 *
 * A DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernels, a "core" such as
 * Haswell or SkylakeX, once, when the library loads: by CPU model, or by
 * OPENBLAS_CORETYPE when that is set. On a CPU newer than the library it
 * falls back to Prescott (SSE3): OpenBLAS 0.3.21 does so on Sapphire Rapids,
 * and its GEMMs run 3 to 6 times slower. Some machines also preset
 * OPENBLAS_CORETYPE to a weaker core.
 *
 * sp_blas_core_ensure, called first in main, before any BLAS call, compares
 * the core OpenBLAS runs with the best one this CPU runs (cpuid, the OS's
 * saved register state included):
 *
 *   AVX-512 F/CD/BW/DQ/VL      SkylakeX (Cooperlake first with AVX-512 BF16)
 *   AVX2 and FMA               Zen on AMD, Haswell otherwise
 *   AVX                        Sandybridge
 *
 * When OpenBLAS's core is of another class (a weaker one, say Prescott on
 * an AVX-512 CPU; or, set by hand, a stronger one, which would die of
 * SIGILL), it re-executes the program (/proc/self/exe, the same argv and
 * environment) with OPENBLAS_CORETYPE set to the candidate core and a marker
 * variable, SLICEPIPE_OPENBLAS_REEXEC, that the new process reads and
 * removes: at most one re-execution per candidate, so it cannot loop. A core
 * the library does not take (0.3.21 cannot be forced to Cooperlake) is
 * followed by the next candidate. A core of the same class (Haswell for Zen)
 * or one this table does not know (a newer library's) is left as it is.
 *
 *   state diagram (one process image per box; "run" below also re-executes
 *   once for OPENBLAS_THREAD_TIMEOUT when the user has not set it, see
 *   "Idle threads"):
 *     start ──core fits, or unknown, or one core compiled in────► run
 *       │ another class, SLICEPIPE_KEEP_OPENBLAS_CORE=1 ──────────► run (kept)
 *       │ another class: exec with candidate 1 ──► start' ──fits─► run (upgraded)
 *       │                           │ not taken: exec with candidate 2 ...
 *       │                           └ no candidate left ─────────► run (stuck)
 *       └ exec fails: one warning on stderr ─────────────────────► run (as it is)
 *
 * An OPENBLAS_CORETYPE the user set is overridden the same way;
 * SLICEPIPE_KEEP_OPENBLAS_CORE=1 keeps whatever core OpenBLAS picked (to
 * measure or test another one). Nothing but a failed exec is said on
 * stderr, which holds one clear message when a command fails (also on
 * machines that preset OPENBLAS_CORETYPE): --version and the run summary say
 * what was chosen and over what (sp_blas_core_describe). A library built for
 * one core (no DYNAMIC_ARCH) does not read OPENBLAS_CORETYPE and is left
 * alone. The core in use is part of the CPU backend's identity, so of the
 * run identity: a resume under other kernels is refused.
 *
 * Idle threads. After each threaded call OpenBLAS's worker threads spin on
 * sched_yield for 2^OPENBLAS_THREAD_TIMEOUT cycles (2^28 by default, about
 * 0.1 s) before they sleep; the forward's threaded GEMMs come closer together
 * than that, so the workers never slept and took cycles from the pool's
 * threads (5.8% of a profile in __sched_yield, 11.7% in the hypervisor's
 * interrupt path, on 2 cores). The variable is read when the library loads,
 * so where the user has not set it, the process re-executes itself once with
 * it at 4, the smallest value OpenBLAS takes (workers sleep at once; the next
 * threaded call wakes them), marked "1" in the marker's first field. The
 * re-executed process removes it again, so what it starts sees the user's
 * environment. It changes no bits and is not in the identity; a failed exec
 * only costs that speed. The same exec carries a kernel change when one is
 * due (the marker: "SLEEP:NEXT:PICKED:USER").
 *
 * Plain C against cblas.h and libc only, so that bench/kernel_peaks.c can be
 * compiled with it alone. */
#ifndef SP_BLAS_CORE_H
#define SP_BLAS_CORE_H

#include <stddef.h>

/* Returns (the kernels fit, were kept, or could not be changed), or does not
 * return (the program re-executes itself). argv is main's. */
void sp_blas_core_ensure(char **argv);

/* The core OpenBLAS runs ("Cooperlake"). */
void sp_blas_core_name(char *buf, size_t n);

/* One line for --version: the core, the best this CPU runs, and what
 * sp_blas_core_ensure did ("OpenBLAS 0.3.21, Cooperlake kernels (this CPU's
 * best; OpenBLAS alone had picked Prescott)"). */
void sp_blas_core_describe(char *buf, size_t n);

#endif
