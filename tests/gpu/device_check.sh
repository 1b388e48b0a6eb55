#!/bin/bash
# tests/gpu/device_check.sh — the one prepared check of the CUDA backend on a
# machine with a GPU (an H200), writing its figures under $OUT (default
# ./device-out). Every step has a timeout, the whole script stays under
# SP_BUDGET_S seconds (default 470, under 8 minutes), and a failed step is
# recorded in $OUT/summary.txt without stopping the steps after it.
#
#   1. build: Release, SLICEPIPE_CUDA=ON, in a fresh folder (SP_BUILD, default
#      /tmp/sp-device-build); when pkg-config does not find the C dependencies,
#      the Debian packages carried in .device-debs are unpacked under /tmp
#      (tests/gpu/debs_env.sh; tests/gpu/stage_device_inputs.sh makes them);
#   2. ctest -L gpu (test_backend_ops cuda: every op against float64 references);
#   3. bench_cuda: sgemm, attention, dsyrk and eigh at D = 4096 and 8192, float64
#      rotations, TFLOP/s against the H200's peaks, a compute-only 7B and 70B
#      extrapolation; to_dev/to_host rates with the pinned staging off and on;
#   4. stories260k at 0.25 (../shared/data/REFERENCE.md settings) sliced with backend cpu
#      and backend cuda, both evaluated by `slicepipe eval`: NLL within 1e-4;
#   5. a Llama-2-7B-shaped BF16 checkpoint made here by `slicepipe synth` (in
#      the background from step 2 on), sliced at 0.25 with backend "cuda" and
#      SP_NSAMPLES (default 128) × 2048 calibration tokens: wall time, per-layer
#      progress, calibration tokens per second, the per-stage profile.
#
# Files under $OUT (8 at most, as the device tool returns): summary.txt,
# env.txt (nvidia-smi, samples during the 7B run), build.log, ctest.log,
# bench.txt, stories.log, synth.log, run7b.log.
#
# Environment: OUT, SP_BUDGET_S, SP_BUILD, SP_JOBS (build jobs, default nproc), SP_WORK (default /tmp/sp-device-work,
# about 35 GB at 128 samples), SP_NSAMPLES, SP_SHARED (the shared folder;
# default .device-shared, shared or ../shared, the first that has stories260k),
# SP_DEBS (default .device-debs).
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
BUDGET=${SP_BUDGET_S:-470}
BUILD=${SP_BUILD:-/tmp/sp-device-build}
WORK=${SP_WORK:-/tmp/sp-device-work}
NS=${SP_NSAMPLES:-128}
SEQ=${SP_SEQLEN:-2048}
JOBS=${SP_JOBS:-$(nproc)}
# The Llama-2-7B shape; SP_SHAPE replaces it (a dry run of this script on a small machine).
SHAPE=${SP_SHAPE:---hidden 4096 --layers 32 --ffn 11008 --heads 32 --vocab 32000}
T0=$SECONDS
SUM=$OUT/summary.txt
: >"$SUM"
: >"$OUT/env.txt"

left() { echo $((BUDGET - (SECONDS - T0))); }
# cap N: N seconds, or what is left of the budget less a margin for the summary
cap() {
    local l=$(($(left) - 15))
    [ "$l" -lt 1 ] && l=1
    [ "$1" -lt "$l" ] && echo "$1" || echo "$l"
}
rec() { printf '%-22s %-5s %s\n' "$1" "$2" "$3" | tee -a "$SUM"; }
# step NAME SECONDS LOG CMD...: runs CMD under a timeout, appends to LOG, records the result
step() {
    local name=$1 t log=$3 s=$SECONDS rc
    t=$(cap "$2")
    shift 3
    echo "### $name: $* (timeout ${t}s)" >>"$log"
    timeout -k 5 "$t" "$@" >>"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        rec "$name" ok "$((SECONDS - s)) s"
    elif [ $rc -eq 77 ]; then
        rec "$name" SKIP "exit 77: no usable device (see $(basename "$log"))"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        rec "$name" FAIL "timed out after ${t} s (see $(basename "$log"))"
    else
        rec "$name" FAIL "exit $rc after $((SECONDS - s)) s (see $(basename "$log"))"
    fi
    return $rc
}

echo "slicepipe device check $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" | tee -a "$SUM"
{
    echo "## nvidia-smi"
    nvidia-smi 2>&1
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    echo "## nvcc"
    nvcc --version 2>&1 || /usr/local/cuda/bin/nvcc --version 2>&1
    echo "## host"
    uname -a
    nproc
    free -g 2>/dev/null
    df -h /tmp 2>/dev/null
} >>"$OUT/env.txt" 2>&1

# ---- 1. build ----
# The pkg-config modules CMakeLists.txt asks for (keep in step with it and with stage_device_inputs.sh).
SP_PC_MODULES="liburing libxxhash libcjson openblas lapacke libpcre2-8 libutf8proc zlib sentencepiece"
deps_ok() { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists $SP_PC_MODULES; }
if ! deps_ok; then
    . tests/gpu/debs_env.sh
    if sp_debs_env >>"$OUT/build.log" 2>&1 && deps_ok; then
        rec deps ok "unpacked ${SP_DEBS:-.device-debs} under $SP_DEPS_PREFIX"
    else
        rec deps FAIL "pkg-config does not find all of $SP_PC_MODULES, and no usable .device-debs"
    fi
else
    rec deps ok "system packages"
fi
export PATH=$PATH:/usr/local/cuda/bin
GEN=()
command -v make >/dev/null 2>&1 || GEN=(-G Ninja)
rm -rf "$BUILD"
step configure 120 "$OUT/build.log" cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DSLICEPIPE_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90
step build 240 "$OUT/build.log" cmake --build "$BUILD" -j "$JOBS"
SP=$BUILD/slicepipe
if [ ! -x "$SP" ]; then
    rec summary FAIL "no slicepipe binary: nothing else can run"
    cat "$SUM"
    exit 1
fi

# ---- 5a. the 7B-shaped checkpoint, in the background ----
mkdir -p "$WORK"
rm -rf "$WORK/llama7b" "$WORK/llama7b-sliced"
SYNTH_T0=$SECONDS
(
    # shellcheck disable=SC2086
    timeout -k 5 "$(cap 300)" "$SP" synth "$WORK/llama7b" $SHAPE --dtype bf16 --shards 3 --tokens $((NS * SEQ)) --quiet
    echo "synth exit $? after $((SECONDS - SYNTH_T0)) s"
) >"$OUT/synth.log" 2>&1 &
SYNTH_PID=$!

# ---- 2. gpu tests ----
(cd "$BUILD" && step ctest_gpu 150 "$OUT/ctest.log" ctest -L gpu --output-on-failure --timeout 140)
grep -E "tests passed|Passed|Failed|Skipped|SKIP|Not Run" "$OUT/ctest.log" | tail -5 | sed 's/^/    /' | tee -a "$SUM"

# ---- 3. bench ----
step bench_ops 150 "$OUT/bench.txt" "$BUILD/bench_cuda" ops
SLICEPIPE_CUDA_STAGING=0 step bench_copy_direct 40 "$OUT/bench.txt" "$BUILD/bench_cuda" copy
SLICEPIPE_CUDA_STAGING=1 step bench_copy_staged 40 "$OUT/bench.txt" "$BUILD/bench_cuda" copy

# ---- 4. stories260k end to end: cuda vs cpu ----
SH=""
for d in ${SP_SHARED:-} "$ROOT/.device-shared" "$ROOT/shared" "$ROOT/../shared"; do
    [ -n "$d" ] && [ -f "$d/models/stories260k/model.safetensors" ] && SH=$(cd "$d" && pwd) && break
done
NLL_CPU="" NLL_CUDA=""
if [ -z "$SH" ]; then
    rec stories SKIP "no shared folder with models/stories260k (carry .device-shared, see stage_device_inputs.sh)"
else
    for b in cpu cuda; do
        m=$WORK/stories-$b.toml
        rm -rf "$WORK/stories-$b"
        cat >"$m" <<EOF
[model]
path = "$SH/models/stories260k"
[calibration]
tokens = "$SH/data/tinystories/calib.tok512.npy"
seqlen = 256
nsamples = 64
[slicing]
sparsity = 0.25
round_to = 8
[output]
path = "$WORK/stories-$b"
dtype = "f32"
[resources]
memory = "4GB"
backend = "$b"
EOF
        step "stories_run_$b" 90 "$OUT/stories.log" "$SP" run "$m" --quiet
        step "stories_eval_$b" 60 "$OUT/stories.log" sh -c "'$SP' eval '$WORK/stories-$b' --tokens '$SH/data/tinystories/eval.tok512.npy' --seqlen 256 --json > '$WORK/stories-$b.json'"
        cat "$WORK/stories-$b.json" >>"$OUT/stories.log" 2>/dev/null
        v=$(python3 -c "import json,sys; print('%.8f' % json.load(open(sys.argv[1]))['nll'])" "$WORK/stories-$b.json" 2>/dev/null)
        [ "$b" = cpu ] && NLL_CPU=$v || NLL_CUDA=$v
    done
    if [ -n "$NLL_CPU" ] && [ -n "$NLL_CUDA" ]; then
        verdict=$(python3 -c "
import sys
c, g = float(sys.argv[1]), float(sys.argv[2])
print(('ok' if abs(g - c) <= 1e-4 and abs(g - 3.15845) <= 1e-4 else 'FAIL') + ' cpu %.6f cuda %.6f |diff| %.2e (REFERENCE.md 3.15845)' % (c, g, abs(g - c)))
" "$NLL_CPU" "$NLL_CUDA")
        rec stories_nll "${verdict%% *}" "${verdict#* }"
    else
        rec stories_nll FAIL "missing NLL (cpu '${NLL_CPU}', cuda '${NLL_CUDA}'; see stories.log)"
    fi
fi

# ---- 5b. slice the 7B shape on the GPU ----
wait "$SYNTH_PID"
tail -1 "$OUT/synth.log" | sed 's/^/    /' | tee -a "$SUM"
if [ -f "$WORK/llama7b/calib.npy" ] && grep -q "synth exit 0" "$OUT/synth.log"; then
    rec synth_7b ok "$(du -sh "$WORK/llama7b" 2>/dev/null | cut -f1)"
    cat >"$WORK/llama7b.toml" <<EOF
[model]
path = "$WORK/llama7b"
[calibration]
tokens = "$WORK/llama7b/calib.npy"
seqlen = $SEQ
nsamples = $NS
[slicing]
sparsity = 0.25
round_to = 8
[output]
path = "$WORK/llama7b-sliced"
dtype = "bf16"
[resources]
memory = "100GB"
threads = 0
backend = "cuda"
EOF
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw,clocks.sm --format=csv -l 10 \
        >>"$OUT/env.txt" 2>&1 &
    SMI_PID=$!
    R0=$SECONDS
    step run_7b 400 "$OUT/run7b.log" "$SP" run "$WORK/llama7b.toml"
    RT=$((SECONDS - R0))
    kill "$SMI_PID" 2>/dev/null
    last=$(grep -a "slicepipe: layer" "$OUT/run7b.log" | tail -1 | tr -d '\r')
    rec run_7b_time info "${RT} s wall for $NS x $SEQ tokens; last progress: ${last:-none}"
    grep -aiE "stage|phase|forward|second moment|eigh|rotation|spill|busy|calib tok/s|parameters|elapsed|took|seconds" "$OUT/run7b.log" | tail -24 | sed 's/^/    /' >>"$SUM"
    "$SP" status "$WORK/llama7b-sliced" >>"$OUT/run7b.log" 2>&1
else
    rec synth_7b FAIL "see synth.log"
fi

# ---- summary ----
{
    echo "## bench (bench.txt)"
    grep -E "^(identity|sgemm_tflops|sgemm_of|attention_|cov_add_D[0-9]+_(tflops|of)|eigh_D|rot_rows_fp64|extrap_.*_total|copy_staging|to_dev|to_host)" \
        "$OUT/bench.txt" 2>/dev/null | sed 's/^/    /'
    echo "## total $((SECONDS - T0)) s of a ${BUDGET} s budget"
} >>"$SUM"
echo "=================== summary ==================="
cat "$SUM"
grep -q " FAIL " "$SUM" && exit 1
exit 0
