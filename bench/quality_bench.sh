#!/bin/sh
# bench/quality_bench.sh — what one basis costs: held-out NLL of per-layer SliceGPT against
# basis = "global" (trace-weighted and raw positions) at sparsity 0.1, 0.2, 0.25 and 0.3.
#
#   bench/quality_bench.sh [SLICEPIPE] [WORKDIR] [EVAL_WINDOWS]
#   ONLY="llama2xs kjv" bench/quality_bench.sh ...   # a subset of the models
#
# Models: the four shared checkpoints (calibration: the first 64 windows of 256 tokens of their
# TinyStories calibration stream, as ../shared/data/REFERENCE.md) and the example model (its own
# calib.npy, 64 windows of 256). Evaluation: the first EVAL_WINDOWS (default 424: all of
# eval.tok512.npy) non-overlapping 256-token windows of each model's held-out stream (the
# example: all of its eval.npy). F32
# output, round_to 1 (so each sparsity is its own width: at D = 64, round_to 8 gives 0.2 and 0.25
# the same d). Prints one markdown table: dense NLL, then per sparsity the per-layer
# NLL and the global NLLs with their difference to per-layer. Needs ../shared.
#
#   bench/quality_bench.sh params [SLICEPIPE] [WORKDIR] [EVAL_WINDOWS]
# compares the policies at equal total stored parameters instead ([slicing] params 0.9, 0.8,
# 0.7 and SliceGPT-0.25's own count; per-window standard errors; bench/params_bench.py), and
# draws bench/params_bench.svg. EVAL_WINDOWS defaults to 200 there.
#   bench/quality_bench.sh sweep ...   the stock policy's ffn_score and ffn_ridge at params 0.8
set -eu
cd "$(dirname "$0")/.."
MODE=sparsity
case "${1:-}" in params|sweep) MODE=$1; shift ;; esac
SP=${1:-build/slicepipe}
WORK=${2:-${TMPDIR:-/tmp}/slicepipe-quality-bench}
WIN=${3:-}
[ -n "$WIN" ] || { [ $MODE = sparsity ] && WIN=424 || WIN=200; }
case $WORK in /*) ;; *) WORK=$(pwd)/$WORK ;; esac
case $SP in /*) ;; *) SP=$(pwd)/$SP ;; esac
[ -x "$SP" ] || { echo "quality_bench: build first (make build), or give the slicepipe binary" >&2; exit 64; }
[ -d ../shared/models ] || { echo "quality_bench: ../shared is absent" >&2; exit 66; }
SH=$(cd ../shared && pwd)
TS=$SH/data/tinystories
ROOT=$(pwd)
mkdir -p "$WORK"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

# label | model dir | calibration | held-out tokens [| eval windows: the example's eval.npy has 312, 0 = all]
MODELS="stories260k|$SH/models/stories260k|$TS/calib.tok512.npy|$TS/eval.tok512.npy
llama2xs|$SH/models/llama2xs|$TS/calib.tok512.npy|$TS/eval.tok512.npy
babyllama105|$SH/models/babyllama105|$TS/calib.tok105.npy|$TS/holdout.tok105.npy
aidreams260k|$SH/models/aidreams260k|$TS/calib.dreams512.npy|$TS/holdout.dreams512.npy
kjv (example)|$ROOT/examples/kjv/model|$ROOT/examples/kjv/calib.npy|$ROOT/examples/kjv/eval.npy|0"

if [ $MODE != sparsity ]; then
    SEL=$(echo "$MODELS" | while IFS='|' read -r label rest; do
        case " ${ONLY:-$label} " in *" $label "*|*" ${label%% *} "*) echo "$label|$rest" ;; esac; done)
    exec $PY bench/params_bench.py --slicepipe "$SP" --work "$WORK" --models "$SEL" --windows "$WIN" \
        --svg bench/params_bench.svg $([ $MODE = sweep ] && echo --sweep)
fi

# run LABEL MODEL CALIB EVAL SPARSITY BASIS WEIGHTING WINDOWS -> prints "nll_dense nll_sliced"
run() {
    out="$WORK/out-$(echo "$1" | tr -c 'a-z0-9\n' '_')-$5-$6-$7"
    mf="$out.toml"
    cat > "$mf" <<EOF
[model]
path = "$2"
[calibration]
tokens = "$3"
seqlen = 256
nsamples = 64
[slicing]
sparsity = $5
round_to = 1
basis = "$6"
global_weighting = "$7"
[output]
path = "$out"
dtype = "f32"
[resources]
memory = "2GB"
[eval]
tokens = "$4"
seqlen = 256
windows = $8
EOF
    "$SP" run "$mf" --quiet --restart > "$out.log" 2>&1 || { echo "quality_bench: $mf failed:" >&2; tail -3 "$out.log" >&2; exit 70; }
    $PY -c "import json,sys; e=json.load(open(sys.argv[1]))['eval']; print(e['nll_dense'], e['nll_sliced'])" "$out/slicing.json"
    rm -rf "$out"
}

echo "quality_bench: $(echo "$MODELS" | wc -l) models x 4 sparsities x 3 variants, $WIN eval windows; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "| model | dense | sparsity | per-layer | global (trace) | Δ | global (raw) | Δ |"
echo "|---|---|---|---|---|---|---|---|"
echo "$MODELS" | while IFS='|' read -r label dir calib ev win; do
    case " ${ONLY:-$label} " in *" $label "*|*" ${label%% *} "*) ;; *) continue ;; esac
    win=${win:-$WIN}
    for s in 0.1 0.2 0.25 0.3; do
        set -- $(run "$label" "$dir" "$calib" "$ev" $s per-layer trace "$win"); dense=$1; pl=$2
        set -- $(run "$label" "$dir" "$calib" "$ev" $s global trace "$win"); gt=$2
        set -- $(run "$label" "$dir" "$calib" "$ev" $s global raw "$win"); gr=$2
        $PY -c "
import sys
l, d, s, pl, gt, gr = sys.argv[1], *map(float, sys.argv[2:])
print(f'| {l} | {d:.4f} | {s:g} | {pl:.4f} | {gt:.4f} | {gt - pl:+.4f} | {gr:.4f} | {gr - pl:+.4f} |')" \
            "$label" "$dense" "$s" "$pl" "$gt" "$gr"
        echo "  $label $s done" >&2
    done
done
