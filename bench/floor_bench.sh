#!/usr/bin/env bash
# floor_bench.sh: the compute stage against this machine's floor, and against an in-RAM
# PyTorch SliceGPT of the same job (project issue 10, item 7 "Where the time goes").
#
#   bench/floor_bench.sh [SLICEPIPE_BIN] [WORK_DIR]
#
# SLICEPIPE_BIN defaults to build-perf/slicepipe, built here when missing
# (cmake -S . -B build-perf -DCMAKE_BUILD_TYPE=Release -DSLICEPIPE_CUDA=OFF); WORK_DIR to
# $BENCH_DIR or /tmp; everything goes into WORK_DIR/slicepipe-floor.
#
# One run, in this order, so the three figures share the machine's state:
#   1. bench/kernel_peaks (cc against OpenBLAS/LAPACKE): sgemm, dsyrk, ssyrk, dgemm GFLOP/s at
#      the job's shapes and one dsyevd of order D, with the job's thread count;
#   2. slicepipe run of the job (slicing.json: stages.compute_phases);
#   3. bench/torch_slicegpt.py on the same checkpoint and tokens (python3-torch, installed
#      with apt-get when missing), only its slicing timed.
# The floor of a phase is its FLOP count (formulas in bench/FLOOR.md and below) divided by the
# measured peak of the kernel that phase runs on; eigh is the measured dsyevd time times the
# number of PCAs. spill_io and waits have no FLOPs: their floor is 0.
#
# The job (issue 10): synthetic Llama D=1024, 8 layers, FFN 2816, 16 heads, vocab 32000, F32;
# 64 windows x 512 calibration tokens; sparsity 0.25; 2 threads. Overridable:
#   BENCH_HIDDEN BENCH_LAYERS BENCH_FFN BENCH_HEADS BENCH_KV_HEADS BENCH_VOCAB BENCH_DTYPE
#   BENCH_SEQLEN BENCH_NSAMPLES BENCH_SPARSITY BENCH_THREADS BENCH_MEMORY
#   BENCH_TORCH=0        skip the PyTorch baseline
#   BENCH_RESULTS=PATH   the markdown written (default bench/FLOOR.md, overwritten)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${1:-$repo/build-perf/slicepipe}
[[ $bin == /* ]] || bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
base=${2:-${BENCH_DIR:-/tmp}}
work=$base/slicepipe-floor

HIDDEN=${BENCH_HIDDEN:-1024}
LAYERS=${BENCH_LAYERS:-8}
FFN=${BENCH_FFN:-2816}
HEADS=${BENCH_HEADS:-16}
KV_HEADS=${BENCH_KV_HEADS:-$HEADS}
VOCAB=${BENCH_VOCAB:-32000}
DTYPE=${BENCH_DTYPE:-f32}
SEQLEN=${BENCH_SEQLEN:-512}
NSAMPLES=${BENCH_NSAMPLES:-64}
SPARSITY=${BENCH_SPARSITY:-0.25}
THREADS=${BENCH_THREADS:-2}
MEMORY=${BENCH_MEMORY:-2GB}
DO_TORCH=${BENCH_TORCH:-1}
RESULTS=${BENCH_RESULTS:-$repo/bench/FLOOR.md}
TOKENS=$((SEQLEN * NSAMPLES))
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

die() { echo "floor_bench: $*" >&2; exit 1; }
log() { echo "floor_bench: $*" >&2; }

# ---------------------------------------------------------------- 0. build
if [[ ! -x $bin ]]; then
    log "building $repo/build-perf"
    cmake -S "$repo" -B "$repo/build-perf" -DCMAKE_BUILD_TYPE=Release -DSLICEPIPE_CUDA=OFF >/dev/null
    cmake --build "$repo/build-perf" -j"$(nproc)" --target slicepipe >/dev/null
fi
[[ -x $bin ]] || die "no slicepipe binary at $bin"
mkdir -p "$work"
peaks_bin=$work/kernel_peaks
cc -O2 -std=c11 -Wall -Wextra -I"$repo/linalg" -o "$peaks_bin" "$here/kernel_peaks.c" "$repo/linalg/blas_core.c" \
    $(pkg-config --cflags --libs openblas lapacke) -lm ||
    die "cannot build bench/kernel_peaks.c (needs libopenblas-dev, liblapacke-dev, pkg-config)"
if [[ $DO_TORCH == 1 ]] && ! $PY -c 'import torch, numpy' 2>/dev/null; then
    log "installing python3-torch (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-torch python3-numpy >/dev/null 2>&1 ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-torch python3-numpy >/dev/null; } ||
        die "cannot install python3-torch (BENCH_TORCH=0 skips the baseline)"
fi

# ---------------------------------------------------------------- 1. the job
model=$work/model
stamp="hidden=$HIDDEN layers=$LAYERS ffn=$FFN heads=$HEADS kv=$KV_HEADS vocab=$VOCAB dtype=$DTYPE tokens=$TOKENS"
synth_cmd=("$bin" synth "$model" --hidden "$HIDDEN" --layers "$LAYERS" --ffn "$FFN" --heads "$HEADS"
    --kv-heads "$KV_HEADS" --vocab "$VOCAB" --dtype "$DTYPE" --tokens "$TOKENS" --quiet)
if [[ -f $model/.bench-stamp && $(cat "$model/.bench-stamp") == "$stamp" ]]; then
    log "reusing $model ($stamp)"
else
    rm -rf "$model"
    log "synth: ${synth_cmd[*]}"
    "${synth_cmd[@]}" >&2
    echo "$stamp" >"$model/.bench-stamp"
fi
cat >"$work/manifest.toml" <<EOF
[model]
path = "model"
[calibration]
tokens = "model/calib.npy"
seqlen = $SEQLEN
nsamples = $NSAMPLES
[slicing]
sparsity = $SPARSITY
round_to = 8
[output]
path = "out"
[resources]
memory = "$MEMORY"
threads = $THREADS
EOF

# ---------------------------------------------------------------- 2. the run
D=$HIDDEN
d=$($PY -c "import math; d=int(math.floor((1-$SPARSITY)*$D)); print(d - d % 8)")
load0=$(cut -d' ' -f1-3 /proc/loadavg)
log "kernel peaks (load $load0)"
"$peaks_bin" "$D" "$d" "$FFN" "$SEQLEN" "$THREADS" >"$work/peaks.txt"
load1=$(cut -d' ' -f1-3 /proc/loadavg)
log "slicepipe run (load $load1)"
rm -rf "$work/out"
run_cmd=("$bin" run "$work/manifest.toml" --quiet)
"${run_cmd[@]}" >"$work/run.txt" 2>&1 || { cat "$work/run.txt" >&2; die "slicepipe run failed"; }
load2=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$work/torch.txt"
if [[ $DO_TORCH == 1 ]]; then
    log "PyTorch baseline (load $load2)"
    $PY "$here/torch_slicegpt.py" "$model" "$model/calib.npy" --seqlen "$SEQLEN" --nsamples "$NSAMPLES" \
        --sparsity "$SPARSITY" --threads "$THREADS" >"$work/torch.txt"
fi
load3=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- 3. the table
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$repo" status --porcelain -- linalg pipeline bench 2>/dev/null | grep -q . && echo "+changes" || true)
$PY - "$work" "$RESULTS" <<PYEOF
import json, math, sys, platform, os
work, results = sys.argv[1], sys.argv[2]
N, T, D, d = $TOKENS, $SEQLEN, $D, $d
L, F, V, nh, nkv = $LAYERS, $FFN, $VOCAB, $HEADS, $KV_HEADS
hd = D // nh
qw, kw = nh * hd, nkv * hd
peaks, shapes, t_eigh = {}, [], None
for line in open(f"{work}/peaks.txt"):
    f = line.split()
    if f[0] == "peak": peaks[f[1]] = float(f[2])
    elif f[0] == "shape": shapes.append((f[1], f[2], float(f[3])))
    elif f[0] == "time" and f[1] == "dsyevd": t_eigh = float(f[2])
    elif f[0] == "config": config = " ".join(f[1:])
sj = json.load(open(f"{work}/out/slicing.json"))
ph = sj["stages"]["compute"]; phases = sj["stages"]["compute_phases"]
wall = sj["stages"]["wall_seconds"]
widths = [(l["d_in"], l["d_mid"], l["d_out"]) for l in sj["layers"]]
d0 = sj["embed"]["width"]

# FLOPs per phase (see FLOOR.md)
fwd = 0
for (din, dmid, dout) in widths:
    attn = 2*N*D*din + 2*N*din*(qw + 2*kw) + 2*N*(T + 1)*qw + 2*N*qw*D + 2*N*din*D
    mlp = 2*N*D*dmid + 4*N*dmid*F + 2*N*F*D + 2*N*dmid*D
    fwd += attn + mlp
n_pca = 1 + 2*L
cov = n_pca * N * D * (D + 1)
rot = 2*V*D*d0 + 2*V*D*widths[-1][2]
for (din, dmid, dout) in widths:
    rot += 2*(qw + 2*kw)*D*din + 2*dmid*D*qw + 4*F*D*dmid + 2*dout*D*F + 2*din*dmid*D + 2*dmid*dout*D

cov_kernel = "dsyrk"  # linalg/cpu_blas.c cov_add: 256-row blocks widened to float64 into H
rows = [
    ("forward", phases["forward"], fwd, fwd / (peaks["sgemm"] * 1e9), "sgemm"),
    ("second_moments", phases["second_moments"], cov, cov / (peaks[cov_kernel] * 1e9), cov_kernel),
    ("eigh", phases["eigh"], None, n_pca * t_eigh, "dsyevd x %d" % n_pca),
    ("rotations", phases["rotations"], rot, rot / (peaks["dgemm"] * 1e9), "dgemm"),
    ("spill_io", phases["spill_io"], None, 0.0, "-"),
    ("waits", phases["waits"], None, 0.0, "-"),
]
busy = sum(r[1] for r in rows)
floor = sum(r[3] for r in rows)
floor_ssyrk = floor - rows[1][3] + cov / (peaks["ssyrk"] * 1e9)
torch_s = None
for line in open(f"{work}/torch.txt"):
    if line.startswith("torch_seconds"): torch_s = float(line.split()[1])
# the baseline computed the same PCAs: its eigenvalues against slicing.json's
ev_check = []
for line in open(f"{work}/torch.txt"):
    if line.startswith("torch_evals"):
        f = line.split(); key = f[1]; te = [float(x) for x in f[2:]]
        if key == "embed": se = sj["embed"]["eigenvalues"]
        else:
            li, kind = key[5:].split("."); se = sj["layers"][int(li)][kind]["eigenvalues"]
        ev_check.append((key, max(abs(a - b) / abs(b) for a, b in zip(te, se))))

out = []
P = out.append
P("| phase | seconds | GFLOP | kernel | kernel GFLOP/s | floor s | efficiency (floor / seconds) |")
P("|---|---|---|---|---|---|---|")
for name, s, fl, fs, k in rows:
    kr = peaks.get(k.split()[0])
    gfl = f"{fl/1e9:.1f}" if fl is not None else "-"
    eff = f"{fs/s*100:.0f} %" if s > 0 and fs > 0 else "-"
    P(f"| {name} | {s:.2f} | {gfl} | {k} | {kr if kr else '-'} | {fs:.2f} | {eff} |")
P(f"| **compute busy** | **{busy:.2f}** | | | | **{floor:.2f}** | **{floor/busy*100:.1f} %** |")
table = "\n".join(out)
lines = [table, "",
    f"- compute busy vs floor: {busy:.2f} s / {floor:.2f} s = {busy/floor:.3f}x the floor ({floor/busy*100:.1f} % of it)."
    f" With ssyrk's rate for the second moments (the float32 blocks cov_add used for a while) the floor would be {floor_ssyrk:.2f} s.",
    f"- slicepipe run wall time (slicing.json) {wall:.2f} s; compute busy {ph['busy_seconds']:.2f} s."]
if torch_s:
    lines.append(f"- PyTorch in-RAM baseline (slicing only) {torch_s:.2f} s: PyTorch / slicepipe wall = {torch_s/wall:.2f}x.")
    lines.append("- The baseline's eigenvalues against slicepipe's (largest relative difference of the top 4): "
                 + ", ".join(f"{k} {e:.1e}" for k, e in ev_check) + ".")
lines.append("- kernel shapes (GFLOP/s): " + "; ".join(f"{k} {w} {r}" for k, w, r in shapes) + f"; dsyevd({D}) {t_eigh:.3f} s.")
lines.append(f"- {config}")
body = "\n".join(lines)
print(body)
with open(f"{work}/table.md", "w") as fh: fh.write(body + "\n")
PYEOF

cat >"$RESULTS" <<EOF
# slicepipe compute stage against this machine's floor (issue 10, item 7)

Generated by \`bench/floor_bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); $("$bin" --version), commit $commit$dirty.

- Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr). Load average (1/5/15 min) before the kernel peaks: $load0; before slicepipe: $load1; before PyTorch: $load2; at the end: $load3. The machine may be shared: compare the ratios, which are measured within this one run.
- Job: \`slicepipe synth model ${synth_cmd[*]:3}\` (in the work folder), then \`$(basename "$bin") run manifest.toml\` with seqlen $SEQLEN, nsamples $NSAMPLES, sparsity $SPARSITY, threads $THREADS, memory $MEMORY.
- Kernel peaks: \`kernel_peaks $D $d $FFN $SEQLEN $THREADS\` right before the run; PyTorch: \`torch_slicegpt.py model model/calib.npy --seqlen $SEQLEN --nsamples $NSAMPLES --sparsity $SPARSITY --threads $THREADS\` right after it.

$(cat "$work/table.md")

## How the floor is counted

N calibration tokens (W windows of T), D the width, d_in/d_mid/d_out a layer's widths (from
slicing.json), F the MLP width, qw = heads·head_dim, kw = kv_heads·head_dim, V the vocabulary.
A FLOP is a multiply or an add (gemm 2·m·n·k).

- **forward** (sgemm), per layer, the products pipeline/slice/compute.c and pipeline/model/layer.c run:
  - attention pass: X·Q[:, :d_in] 2·N·D·d_in; q/k/v 2·N·d_in·(qw + 2·kw); scores and context
    over the causal half only, 2·(T(T+1)/2)·head_dim per head and window each, that is
    2·N·(T+1)·qw together; W_o (unsliced in the pass) 2·N·qw·D; the shortcut Xr·S 2·N·d_in·D;
  - MLP pass: M·Q[:, :d_mid] 2·N·D·d_mid; gate and up 4·N·d_mid·F; down 2·N·F·D; the
    shortcut 2·N·d_mid·D;
  - norms, RoPE, softmax, SiLU are not counted (few FLOPs each; they are part of what the
    measured phase pays above its floor).
- **second_moments**: N·D·(D+1) per PCA (the triangle of XᵀX), 1 + 2·L PCAs, at the kernel
  cov_add uses (dsyrk: 256-row blocks widened to float64, every product exact).
- **eigh**: one dsyevd of order D, measured directly (not a formula: ~(4/3 + 4/3·…)·D³ depends
  on the deflation), times 1 + 2·L.
- **rotations** (dgemm, float64): embedding 2·V·D·d_0 and head 2·V·D·d_L; per layer the
  readers q/k/v 2·(qw + 2·kw)·D·d_in, W_o 2·d_mid·D·qw, gate/up 4·F·D·d_mid, down
  2·d_out·D·F, the two shortcuts 2·d_in·d_mid·D + 2·d_mid·d_out·D.
- **spill_io**, **waits**: floor 0.

The kernel peak is the best of three ~0.4 s repetitions at the job's shapes (the dense layer
products for sgemm; a 256-row block into the D×D moment for syrk; 256-row/column rotation
blocks for dgemm), with the job's thread count.
EOF
log "wrote $RESULTS"
