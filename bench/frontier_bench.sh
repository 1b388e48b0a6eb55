#!/bin/sh
# bench/frontier_bench.sh — compression × quantization in llama.cpp (issue 24):
# GGUF bytes, held-out NLL, KL from the dense f16 model, prompt and generation
# tokens/s at 2 threads, for the dense model and the stock compressed model at
# params 0.9 / 0.8 / 0.7, each at f16, q8_0, q5_0 and q4_0 (bench/frontier_bench.py).
#
#   bench/frontier_bench.sh [SLICEPIPE] [WORKDIR] [WINDOWS] [TG] [REPS]
#
# ONLY="stories260k llama2xs" picks models (default: every shared model and the
# example); SYNTH=1 adds the ~1B synthetic model, speed only (about 2 GB of
# checkpoint and one GGUF at a time in WORKDIR); ONLY=none SYNTH=1 runs it
# alone. Needs node-llama-cpp in build/npm-gguf (ctest -R gguf.npm). Writes
# bench/FRONTIER.md and bench/frontier_bench.svg, or FRONTIER_MD and
# FRONTIER_SVG when set (so a run of some models keeps the others' page).
# Timings are only comparable on a quiet machine: /proc/loadavg is recorded in
# the page.
set -eu
SP=${1:-build/slicepipe}
WORK=${2:-${TMPDIR:-/tmp}/slicepipe-frontier-bench}
WIN=${3:-8}
TG=${4:-64}
REPS=${5:-3}
case $WORK in /*) ;; *) WORK=$(pwd)/$WORK ;; esac
case $SP in /*) ;; *) SP=$(pwd)/$SP ;; esac
NPM=$(pwd)/build/npm-gguf
[ -x "$SP" ] || { echo "frontier_bench: build first, or give the slicepipe binary" >&2; exit 64; }
[ -f "$NPM/node_modules/node-llama-cpp/package.json" ] || { echo "frontier_bench: run ctest -R gguf.npm first" >&2; exit 66; }
[ -d ../shared/models ] || { echo "frontier_bench: ../shared is absent" >&2; exit 66; }
SH=$(cd ../shared && pwd)
TS=$SH/data/tinystories
ROOT=$(pwd)
mkdir -p "$WORK"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
MODELS="stories260k|$SH/models/stories260k|$TS/calib.tok512.npy|$TS/eval.tok512.npy
llama2xs|$SH/models/llama2xs|$TS/calib.tok512.npy|$TS/eval.tok512.npy
babyllama105|$SH/models/babyllama105|$TS/calib.tok105.npy|$TS/holdout.tok105.npy
aidreams260k|$SH/models/aidreams260k|$TS/calib.dreams512.npy|$TS/holdout.dreams512.npy
kjv|$ROOT/examples/kjv/model|$ROOT/examples/kjv/calib.npy|$ROOT/examples/kjv/eval.npy"
SEL=$(echo "$MODELS" | while IFS='|' read -r label rest; do
    case " ${ONLY:-$label} " in *" $label "*) echo "$label|$rest" ;; esac; done)
MD=${FRONTIER_MD:-bench/FRONTIER.md}
SVG=${FRONTIER_SVG:-bench/frontier_bench.svg}
LOAD0=$(cat /proc/loadavg)
$PY bench/frontier_bench.py --slicepipe "$SP" --npm "$NPM" --work "$WORK" --models "$SEL" --windows "$WIN" --tg "$TG" --reps "$REPS" \
    --md "$WORK/frontier.md" --svg "$SVG" --json "$WORK/frontier.json" \
    $([ "${SYNTH:-0}" = 1 ] && echo --synth)
{
    echo "# Compression × quantization in llama.cpp (bench/frontier_bench.sh)"
    echo
    echo "Held-out windows of 256: $WIN per model; speed: 256-token prompt, $TG generated tokens, best of $REPS. /proc/loadavg before: $LOAD0; after: $(cat /proc/loadavg) (2 cores)."
    echo
    cat "$WORK/frontier.md"
} > "$MD"
echo "frontier_bench: $MD, $SVG"
