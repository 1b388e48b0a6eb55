#!/usr/bin/env bash
# bench/resume_bench.sh — what a crash costs: wall time of a resume against a
# fresh run, for a job killed (SIGKILL) right after the middle layer.
#
# usage: bench/resume_bench.sh [SLICEPIPE] [WORKDIR]
# Sizes can be overridden: D, LAYERS, FFN, VOCAB, SEQLEN, NSAMPLES.
set -euo pipefail
SP=${1:-build/slicepipe}
WORK=${2:-${BENCH_DIR:-/tmp/slicepipe-resume-bench}}
D=${D:-512} LAYERS=${LAYERS:-8} FFN=${FFN:-1408} VOCAB=${VOCAB:-8000} SEQLEN=${SEQLEN:-256} NSAMPLES=${NSAMPLES:-64}
rm -rf "$WORK" && mkdir -p "$WORK"
"$SP" synth "$WORK/model" --hidden "$D" --layers "$LAYERS" --ffn "$FFN" --heads 8 --kv-heads 4 --vocab "$VOCAB" \
    --dtype bf16 --tokens $((SEQLEN * NSAMPLES)) --quiet >/dev/null
cat > "$WORK/m.toml" <<TOML
[model]
path = "model"
[calibration]
tokens = "model/calib.npy"
seqlen = $SEQLEN
nsamples = $NSAMPLES
[slicing]
sparsity = 0.25
[output]
path = "out"
TOML
t() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; awk -v a="$(date +%s.%N)" -v b="$s" 'BEGIN{print a-b}'; }
calc() { awk "BEGIN{print $1}"; }
fresh=$(t "$SP" run "$WORK/m.toml" --quiet)
cp -r "$WORK/out" "$WORK/ref"
rm -rf "$WORK/out"
# Writer commit points: 1 = the embedding journaled, 1+k = layer k-1 journaled.
mid=$((1 + LAYERS / 2))
killed=$(SLICEPIPE_KILL_AT=writer:$mid t "$SP" run "$WORK/m.toml" --quiet)
resume=$(t "$SP" run "$WORK/m.toml" --quiet)
same=identical
for f in "$WORK"/ref/*.safetensors "$WORK/ref/config.json"; do
    cmp -s "$f" "$WORK/out/$(basename "$f")" || same=DIFFERENT
done
printf 'model: D=%s, %s layers, FFN %s, vocab %s, bf16; calibration %s x %s tokens; %s cores\n' \
    "$D" "$LAYERS" "$FFN" "$VOCAB" "$NSAMPLES" "$SEQLEN" "$(nproc)"
printf 'fresh run:                 %6.2f s\n' "$fresh"
printf 'run killed after layer %d:  %6.2f s\n' $((LAYERS / 2)) "$killed"
printf 'resume:                    %6.2f s  (%.2f of a fresh run; ideal %.2f)\n' "$resume" \
    "$(calc "$resume / $fresh")" "$(calc "($LAYERS - int($LAYERS / 2)) / $LAYERS")"
printf 'killed + resume:           %6.2f s  (%.2f of a fresh run)\n' "$(calc "$killed + $resume")" \
    "$(calc "($killed + $resume) / $fresh")"
printf 'output after resume:       %s to the fresh run (safetensors, config.json)\n' "$same"
