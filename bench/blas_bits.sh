#!/bin/sh
# bench/blas_bits.sh — bench/blas_bits.c under the kernel OpenBLAS picks by
# itself (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed) and under each of
# Prescott, Haswell, Zen and SkylakeX that this CPU can run (docs/determinism.md).
# A kernel whose instructions the CPU lacks is skipped, never forced: it would
# die of SIGILL.
#
#   bench/blas_bits.sh [WORKDIR]     (default: a temporary folder)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cc -O2 -std=c11 -Wall -Wextra -o "$work/blas_bits" "$here/blas_bits.c" $(pkg-config --cflags --libs openblas lapacke) ||
    { echo "blas_bits.sh: cannot build bench/blas_bits.c (needs libopenblas-dev, liblapacke-dev, pkg-config)" >&2; exit 69; }
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { for f in "$@"; do case " $flags " in *" $f "*) ;; *) return 1 ;; esac; done; }
echo "# auto-detected"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$work/blas_bits"
for k in Prescott Haswell Zen SkylakeX; do
    case $k in
    Prescott) need="sse2 pni" ;;
    Haswell | Zen) need="avx2 fma" ;;
    SkylakeX) need="avx512f avx512cd avx512bw avx512dq avx512vl" ;;
    esac
    # shellcheck disable=SC2086
    if ! has $need; then echo "# $k: skipped, this CPU lacks one of: $need"; continue; fi
    echo "# OPENBLAS_CORETYPE=$k"
    env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=$k "$work/blas_bits"
done
