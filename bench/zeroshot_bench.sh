#!/bin/sh
# bench/zeroshot_bench.sh — zero-shot accuracy (`slicepipe eval --task`) of the
# shared story models, dense and sliced at 25% (per-layer and basis = "global"),
# on HellaSwag (the first 1,000 validation tasks) and on the seeded TinyStories
# cloze task (bench/tinystories_cloze.py, seed 23, 279 items from eval.txt).
# Prints the README's table (markdown) on stdout.
#
#   sh bench/zeroshot_bench.sh [BUILD_DIR] [WORK_DIR]      (defaults: build, /tmp/slicepipe-zeroshot)
#   ONLY=babyllama105 sh bench/zeroshot_bench.sh ...      (one model's rows)
#
# Needs ../shared (models and data) beside the checkout; bzcat for the
# HellaSwag file. Every figure is acc / acc_norm ± its standard error.
set -eu
BUILD=${1:-build}
WORK=${2:-/tmp/slicepipe-zeroshot}
SP=$(cd "$BUILD" && pwd)/slicepipe
SH=$(cd ../shared && pwd)
TS=$SH/data/tinystories
ROOT=$(pwd)
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
mkdir -p "$WORK"
[ -s "$WORK/hellaswag_val.txt" ] || bzcat "$SH/data/hellaswag/hellaswag_val_full.txt.bz2" > "$WORK/hellaswag_val.txt"
$PY "$ROOT/bench/tinystories_cloze.py" "$TS/eval.txt" -o "$WORK/cloze.jsonl" --seed 23 >&2

# slice LABEL MODEL CALIB BASIS -> the output folder
slice() {
    out="$WORK/$1"
    cat > "$out.toml" <<EOF
[model]
path = "$2"
[calibration]
tokens = "$3"
seqlen = 256
nsamples = 64
[slicing]
sparsity = 0.25
round_to = 1
basis = "$4"
[output]
path = "$out"
dtype = "f32"
[resources]
memory = "2GB"
EOF
    "$SP" run "$out.toml" --quiet --restart > "$out.log" 2>&1 || { echo "zeroshot_bench: $1 failed" >&2; tail -3 "$out.log" >&2; exit 70; }
    echo "$out"
}

# score LABEL DIR [HELLASWAG OPTIONS] -> one table row
score() {
    row=$1; mdir=$2; shift 2  # not label/dir: sh has no locals, the caller's loop uses those
    "$SP" eval "$mdir" --task "$WORK/hellaswag_val.txt" --limit 1000 --json --quiet "$@" > "$WORK/$row.hs.json"
    "$SP" eval "$mdir" --task "$WORK/cloze.jsonl" --json --quiet > "$WORK/$row.cloze.json"
    $PY - "$row" "$WORK/$row.hs.json" "$WORK/$row.cloze.json" <<'EOF'
import json, sys
cells = []
for p in sys.argv[2:]:
    t = json.load(open(p))["tasks"][0]
    cells.append("%.3f ± %.3f | %.3f ± %.3f" % (t["acc"], t["acc_stderr"], t["acc_norm"], t["acc_norm_stderr"]))
print("| %s | %s |" % (sys.argv[1], " | ".join(cells)))
EOF
}

echo "| model | HellaSwag acc | HellaSwag acc_norm | cloze acc | cloze acc_norm |"
echo "|---|---|---|---|---|"
# babyllama105 reads characters: some HellaSwag endings are longer than its 256 positions, which
# lm-eval (and slicepipe) refuse; on HellaSwag, --max-length 512 lets RoPE run past them (positions
# it was never trained on). The cloze task runs at the model's own context (lm-eval's left cut).
for spec in "stories260k|$SH/models/stories260k|$TS/calib.tok512.npy|" \
            "babyllama105|$SH/models/babyllama105|$TS/calib.tok105.npy|--max-length 512"; do
    label=${spec%%|*}; rest=${spec#*|}; dir=${rest%%|*}; rest=${rest#*|}; calib=${rest%%|*}; opts=${rest#*|}
    case " ${ONLY:-$label} " in *" $label "*) ;; *) continue ;; esac
    score "$label dense" "$dir" $opts
    score "$label 25% per-layer" "$(slice "$label-pl25" "$dir" "$calib" per-layer)" $opts
    score "$label 25% global" "$(slice "$label-gl25" "$dir" "$calib" global)" $opts
done
