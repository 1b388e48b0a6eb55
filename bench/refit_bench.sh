#!/usr/bin/env bash
# bench/refit_bench.sh — what [slicing] refit = true costs in time: the same
# job with and without it (per-layer SliceGPT at 0.25), alternated REPS
# times on a synthetic model, with the phase table of the last run of each.
# Run it on an idle machine.
#
# usage: bench/refit_bench.sh [SLICEPIPE] [WORKDIR]
# Sizes can be overridden: D, LAYERS, FFN, HEADS, KV, VOCAB, SEQLEN, NSAMPLES, REPS, THREADS.
set -euo pipefail
SP=${1:-build/slicepipe}
WORK=${2:-${BENCH_DIR:-/tmp/slicepipe-refit-bench}}
D=${D:-1024} LAYERS=${LAYERS:-4} FFN=${FFN:-2816} HEADS=${HEADS:-16} KV=${KV:-4} VOCAB=${VOCAB:-8000}
SEQLEN=${SEQLEN:-256} NSAMPLES=${NSAMPLES:-64} REPS=${REPS:-2} THREADS=${THREADS:-2}
rm -rf "$WORK" && mkdir -p "$WORK"
"$SP" synth "$WORK/model" --hidden "$D" --layers "$LAYERS" --ffn "$FFN" --heads "$HEADS" --kv-heads "$KV" \
    --vocab "$VOCAB" --dtype bf16 --tokens $((SEQLEN * NSAMPLES)) --quiet >/dev/null
for r in false true; do
    cat > "$WORK/$r.toml" <<TOML
[model]
path = "model"
[calibration]
tokens = "model/calib.npy"
seqlen = $SEQLEN
nsamples = $NSAMPLES
[slicing]
sparsity = 0.25
refit = $r
[output]
path = "out-$r"
[resources]
threads = $THREADS
memory = "4GB"
TOML
done
t() { local s; s=$(date +%s.%N); "$@" >"$WORK/last.log" 2>&1; awk -v a="$(date +%s.%N)" -v b="$s" 'BEGIN{print a-b}'; }
declare -A sum=([false]=0 [true]=0)
printf 'model: D=%s, %s layers, FFN %s, %s/%s heads, vocab %s, bf16; calibration %s x %s tokens; %s threads of %s cores\n' \
    "$D" "$LAYERS" "$FFN" "$HEADS" "$KV" "$VOCAB" "$NSAMPLES" "$SEQLEN" "$THREADS" "$(nproc)"
for i in $(seq "$REPS"); do
    for r in false true; do
        rm -rf "$WORK/out-$r"
        s=$(t "$SP" run "$WORK/$r.toml")
        cp "$WORK/last.log" "$WORK/run-$r.log"
        sum[$r]=$(awk -v a="${sum[$r]}" -v b="$s" 'BEGIN{print a+b}')
        printf 'run %d, refit = %-5s %7.2f s\n' "$i" "$r" "$s"
    done
done
printf 'mean wall: plain %.2f s, refit %.2f s: refit takes %.2fx the time\n' \
    "$(awk -v a="${sum[false]}" -v n="$REPS" 'BEGIN{print a/n}')" "$(awk -v a="${sum[true]}" -v n="$REPS" 'BEGIN{print a/n}')" \
    "$(awk -v a="${sum[true]}" -v b="${sum[false]}" 'BEGIN{print a/b}')"
for r in false true; do
    echo "--- refit = $r: phases and memory of its last run"
    grep -E "compute phases|compute  busy|all processes" "$WORK/run-$r.log" || true
done
