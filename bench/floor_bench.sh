#!/usr/bin/env bash
# floor_bench.sh: the compute stage against this machine's floor, and against an in-RAM
# PyTorch SliceGPT of the same job (project issue 10, item 7 "Where the time goes"; issue 26:
# the onednn backend at f32 and bf16 beside the cpu one).
#
#   bench/floor_bench.sh [SLICEPIPE_BIN] [WORK_DIR]
#
# SLICEPIPE_BIN defaults to build-perf/slicepipe, built here when missing
# (cmake -S . -B build-perf -DCMAKE_BUILD_TYPE=Release -DSLICEPIPE_CUDA=OFF); WORK_DIR to
# $BENCH_DIR or /tmp; everything goes into WORK_DIR/slicepipe-floor.
#
# One bench, in this order, so the figures share the machine's state:
#   1. bench/kernel_peaks (cc against OpenBLAS/LAPACKE, and against oneDNN with -DKP_ONEDNN
#      where <dnnl.h> and libdnnl link): sgemm, dsyrk, ssyrk, dgemm GFLOP/s at the job's shapes,
#      one dsyevd of order D, and oneDNN's matmul in f32 and bf16 (onednn_f32, onednn_bf16) at
#      the dense layer shapes, driven as linalg/onednn.c drives it; all with the job's threads;
#   2. one slicepipe run of the job per entry of BENCH_RUNS (slicing.json:
#      stages.compute_phases), each with its own manifest ([resources] backend and precision)
#      and output folder (manifest-BACKEND-PRECISION.toml, out-BACKEND-PRECISION);
#   2b. bench/kernel_peaks again; each kernel's floor takes the better of its two figures;
#   3. bench/torch_slicegpt.py on the same checkpoint and tokens (python3-torch, installed
#      with apt-get when missing), only its slicing timed, once.
#
# OpenBLAS's kernels. kernel_peaks and slicepipe run with OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE removed from the environment (env -u), as a user runs them: both put OpenBLAS
# on this CPU's best kernels by themselves (linalg/blas_core.h), whatever core the machine
# presets. PyTorch cannot, so it runs with OPENBLAS_CORETYPE set to the core kernel_peaks' config
# line names (and OPENBLAS_L2_SIZE removed): the baseline on its best OpenBLAS kernels too. The
# report records the kernels of all three.
#
# The floor of a phase is its FLOP count (formulas in the report, "How the floor is counted")
# divided by the measured peak of the kernel the phase runs on in that run:
#   forward          cpu: sgemm. onednn: its linear layers, shortcuts and basis applications
#                    (bk->sgemm) on oneDNN's matmul at the run's precision, the per-head
#                    attention products (single-threaded OpenBLAS in the pool) on sgemm;
#   second_moments   dsyrk (float64-widened 256-row blocks), in both backends;
#   eigh             the measured dsyevd time times the number of PCAs;
#   rotations        dgemm (float64), in both;
#   spill_io, waits  no FLOPs: floor 0.
#
# The job (issue 10): synthetic Llama D=1024, 8 layers, FFN 2816, 16 heads, vocab 32000, F32;
# 64 windows x 512 calibration tokens; sparsity 0.25; 2 threads. Overridable:
#   BENCH_HIDDEN BENCH_LAYERS BENCH_FFN BENCH_HEADS BENCH_KV_HEADS BENCH_VOCAB BENCH_DTYPE
#   BENCH_SEQLEN BENCH_NSAMPLES BENCH_SPARSITY BENCH_THREADS BENCH_MEMORY
#   BENCH_RUNS="cpu:f32"  the slicepipe runs, BACKEND:PRECISION, space-separated, from cpu:f32,
#                         onednn:f32, onednn:bf16 (e.g. "cpu:f32 onednn:f32 onednn:bf16")
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
read -r -a RUNS <<<"${BENCH_RUNS:-cpu:f32}"
RESULTS=${BENCH_RESULTS:-$repo/bench/FLOOR.md}
TOKENS=$((SEQLEN * NSAMPLES))
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

die() { echo "floor_bench: $*" >&2; exit 1; }
log() { echo "floor_bench: $*" >&2; }

((${#RUNS[@]} > 0)) || die "BENCH_RUNS is empty"
want_onednn=0
for r in "${RUNS[@]}"; do
    case $r in
    cpu:f32) ;;
    onednn:f32 | onednn:bf16) want_onednn=1 ;;
    *) die "BENCH_RUNS: \"$r\" is not one of cpu:f32, onednn:f32, onednn:bf16" ;;
    esac
done

# ---------------------------------------------------------------- 0. build
if [[ ! -x $bin ]]; then
    log "building $repo/build-perf"
    cmake -S "$repo" -B "$repo/build-perf" -DCMAKE_BUILD_TYPE=Release -DSLICEPIPE_CUDA=OFF >/dev/null
    cmake --build "$repo/build-perf" -j"$(nproc)" --target slicepipe >/dev/null
fi
[[ -x $bin ]] || die "no slicepipe binary at $bin"
mkdir -p "$work"
peaks_bin=$work/kernel_peaks
# oneDNN's matmul is measured wherever its header and library link (Debian's libdnnl-dev); the
# onednn runs need it, for their forward's floor.
peaks_dnn=()
if printf '#include <dnnl.h>\nint main(void) { return dnnl_version()->major != 2; }\n' |
    cc -x c -o /dev/null - -ldnnl -lgomp 2>/dev/null; then
    peaks_dnn=(-DKP_ONEDNN -pthread -ldnnl -lgomp)
elif ((want_onednn)); then
    die "BENCH_RUNS has onednn runs, but oneDNN 2.x (libdnnl-dev: <dnnl.h> and libdnnl) does not link here"
fi
cc -O2 -std=c11 -Wall -Wextra -I"$repo/linalg" -o "$peaks_bin" "$here/kernel_peaks.c" "$repo/linalg/blas_core.c" \
    $(pkg-config --cflags --libs openblas lapacke) "${peaks_dnn[@]}" -lm ||
    die "cannot build bench/kernel_peaks.c (needs libopenblas-dev, liblapacke-dev, pkg-config; libdnnl-dev for oneDNN)"
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
for r in "${RUNS[@]}"; do
    cat >"$work/manifest-${r/:/-}.toml" <<EOF
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
path = "out-${r/:/-}"
[resources]
memory = "$MEMORY"
threads = $THREADS
backend = "${r%%:*}"
precision = "${r##*:}"
EOF
done
# The rows of the job's GEMMs, as its plan prints them: a layer pass's windows and the MLP's
# row chunks (pipeline/model/layer.h); kernel_peaks measures the dense products at them.
plan=$("$bin" run "$work/manifest-${RUNS[0]/:/-}.toml" --dry-run 2>&1) || { echo "$plan" >&2; die "slicepipe run --dry-run failed"; }
GROUP=$(sed -n 's/.*layer passes of \([0-9]*\) at a time.*/\1/p' <<<"$plan")
MLP_ROWS=$(sed -n 's/.*MLP chunks of \([0-9]*\) rows.*/\1/p' <<<"$plan")
[[ -n $GROUP && -n $MLP_ROWS ]] || die "no layer passes or MLP chunks in the plan ($plan)"
PASS_ROWS=$((GROUP * SEQLEN))

# ---------------------------------------------------------------- 2. the runs
D=$HIDDEN
d=$($PY -c "import math; d=int(math.floor((1-$SPARSITY)*$D)); print(d - d % 8)")
as_user=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE) # the header says why
loads=("before the kernel peaks: $(cut -d' ' -f1-3 /proc/loadavg)")
log "kernel peaks"
"${as_user[@]}" "$peaks_bin" "$D" "$d" "$FFN" "$SEQLEN" "$PASS_ROWS" "$MLP_ROWS" "$THREADS" >"$work/peaks.txt"
for r in "${RUNS[@]}"; do
    loads+=("before slicepipe $r: $(cut -d' ' -f1-3 /proc/loadavg)")
    log "slicepipe run $r"
    rm -rf "$work/out-${r/:/-}"
    "${as_user[@]}" "$bin" run "$work/manifest-${r/:/-}.toml" --quiet >"$work/run-${r/:/-}.txt" 2>&1 ||
        { cat "$work/run-${r/:/-}.txt" >&2; die "slicepipe run $r failed"; }
done
# The peaks again after the runs: on a shared machine a kernel's rate drifts by 5-10 % within
# minutes, and a floor counted from peaks taken in a slow spell would flatter the runs. Each
# kernel's floor takes the better of the two (the table below says both).
loads+=("before the second kernel peaks: $(cut -d' ' -f1-3 /proc/loadavg)")
log "kernel peaks, again"
"${as_user[@]}" "$peaks_bin" "$D" "$d" "$FFN" "$SEQLEN" "$PASS_ROWS" "$MLP_ROWS" "$THREADS" >"$work/peaks-after.txt"
slicepipe_kernels=$("${as_user[@]}" "$bin" --version | sed -n 's/^kernels: //p')
torch_core=$(sed -n 's/^config .* core=\([^ ]*\) .*/\1/p' "$work/peaks.txt")
[[ -n $torch_core ]] || die "no core= in kernel_peaks' config line ($work/peaks.txt)"
: >"$work/torch.txt"
if [[ $DO_TORCH == 1 ]]; then
    loads+=("before PyTorch: $(cut -d' ' -f1-3 /proc/loadavg)")
    log "PyTorch baseline (OPENBLAS_CORETYPE=$torch_core)"
    env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE="$torch_core" $PY "$here/torch_slicegpt.py" "$model" "$model/calib.npy" \
        --seqlen "$SEQLEN" --nsamples "$NSAMPLES" --sparsity "$SPARSITY" --threads "$THREADS" >"$work/torch.txt"
fi
loads+=("at the end: $(cut -d' ' -f1-3 /proc/loadavg)")

# ---------------------------------------------------------------- 3. the tables
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$repo" status --porcelain -- linalg pipeline bench 2>/dev/null | grep -q . && echo "+changes" || true)
FB_TOKENS=$TOKENS FB_SEQLEN=$SEQLEN FB_D=$D FB_d=$d FB_LAYERS=$LAYERS FB_FFN=$FFN FB_VOCAB=$VOCAB FB_HEADS=$HEADS \
    FB_KV_HEADS=$KV_HEADS FB_RUNS="${RUNS[*]}" $PY - "$work" <<'PYEOF'
import json, os, sys
work = sys.argv[1]
E = os.environ
N, T, D, d = int(E["FB_TOKENS"]), int(E["FB_SEQLEN"]), int(E["FB_D"]), int(E["FB_d"])
L, F, V, nh, nkv = int(E["FB_LAYERS"]), int(E["FB_FFN"]), int(E["FB_VOCAB"]), int(E["FB_HEADS"]), int(E["FB_KV_HEADS"])
runs = E["FB_RUNS"].split()
hd = D // nh
qw, kw = nh * hd, nkv * hd
peaks, shapes, notes, configs, t_eigh = {}, [], [], [], None
both = {}  # (kind, name) -> [before, after]: the runs are floored at the better of the two
for i, fname in enumerate(("peaks.txt", "peaks-after.txt")):
    for line in open(f"{work}/{fname}"):
        f = line.split()
        if f[0] in ("peak", "shape") or (f[0] == "time" and f[1] == "dsyevd"):
            key = (f[0], f[1], f[2] if f[0] == "shape" else "")
            both.setdefault(key, []).append(float(f[-1]))
        elif i == 0 and f[0] == "config": configs.append(" ".join(f[1:]))
        elif i == 0 and f[0] == "note": notes.append(" ".join(f[1:]))
for (kind, k, w), v in both.items():
    if kind == "peak": peaks[k] = max(v)
    elif kind == "shape": shapes.append((k, w, max(v)))
    else: t_eigh = min(v)
drift = "; ".join(f"{k} {v[0]:.1f} / {v[1]:.1f}" for (kind, k, w), v in both.items() if kind == "peak" and len(v) == 2)
drift += "; " + "; ".join(f"dsyevd({D}) {v[0]:.4f} / {v[1]:.4f} s" for (kind, k, w), v in both.items()
                          if kind == "time" and len(v) == 2)
torch_s, torch_core, torch_evals = None, None, {}
for line in open(f"{work}/torch.txt"):
    f = line.split()
    if f[0] == "torch_seconds": torch_s = float(f[1])
    elif f[0] == "torch_openblas_core": torch_core = f[1]
    elif f[0] == "torch_evals": torch_evals[f[1]] = [float(x) for x in f[2:]]

def gfs(k):
    return f"{peaks[k]:.1f}"

summary, sections = [], []
for run in runs:
    backend, prec = run.split(":")
    sj = json.load(open(f"{work}/out-{run.replace(':', '-')}/slicing.json"))
    ph = sj["stages"]["compute"]; phases = sj["stages"]["compute_phases"]
    wall = sj["stages"]["wall_seconds"]
    widths = [(l["d_in"], l["d_mid"], l["d_out"]) for l in sj["layers"]]
    d0 = sj["embed"]["width"]

    # FLOPs per phase ("How the floor is counted"); the forward's attention products apart,
    # since the onednn backend leaves them on OpenBLAS.
    fwd_lin = fwd_att = 0
    for (din, dmid, dout) in widths:
        fwd_lin += 2*N*D*din + 2*N*din*(qw + 2*kw) + 2*N*qw*D + 2*N*din*D
        fwd_att += 2*N*(T + 1)*qw
        fwd_lin += 2*N*D*dmid + 4*N*dmid*F + 2*N*F*D + 2*N*dmid*D
    fwd = fwd_lin + fwd_att
    n_pca = 1 + 2*L
    cov = n_pca * N * D * (D + 1)
    rot = 2*V*D*d0 + 2*V*D*widths[-1][2]
    for (din, dmid, dout) in widths:
        rot += 2*(qw + 2*kw)*D*din + 2*dmid*D*qw + 4*F*D*dmid + 2*dout*D*F + 2*din*dmid*D + 2*dmid*dout*D

    if backend == "onednn":
        lin_k = f"onednn_{prec}"
        if lin_k not in peaks:
            sys.exit(f"floor_bench: run {run}: kernel_peaks measured no {lin_k} (its notes: {'; '.join(notes) or 'none'})")
        fwd_floor = fwd_lin / (peaks[lin_k] * 1e9) + fwd_att / (peaks["sgemm"] * 1e9)
        fwd_kernel, fwd_rate = f"{lin_k}; attention sgemm", f"{gfs(lin_k)}; {gfs('sgemm')}"
    else:
        fwd_floor = fwd / (peaks["sgemm"] * 1e9)
        fwd_kernel, fwd_rate = "sgemm", gfs("sgemm")
    # (phase, seconds, GFLOP, kernel, its GFLOP/s, floor seconds)
    rows = [
        ("forward", phases["forward"], fwd, fwd_kernel, fwd_rate, fwd_floor),
        ("second_moments", phases["second_moments"], cov, "dsyrk", gfs("dsyrk"), cov / (peaks["dsyrk"] * 1e9)),
        ("eigh", phases["eigh"], None, f"dsyevd x {n_pca}", "-", n_pca * t_eigh),
        ("rotations", phases["rotations"], rot, "dgemm", gfs("dgemm"), rot / (peaks["dgemm"] * 1e9)),
        ("spill_io", phases["spill_io"], None, "-", "-", 0.0),
        ("waits", phases["waits"], None, "-", "-", 0.0),
    ]
    busy = sum(r[1] for r in rows)
    floor = sum(r[5] for r in rows)
    floor_ssyrk = floor - rows[1][5] + cov / (peaks["ssyrk"] * 1e9)
    ratio = f"{torch_s / wall:.2f}x" if torch_s else "-"
    summary.append(f"| {run} | {busy:.2f} s | {floor:.2f} s | {busy / floor:.3f}x | {floor / busy * 100:.1f} % "
                   f"| {wall:.2f} s | {ratio} |")

    out = [f"### {run}: backend \"{backend}\", precision \"{prec}\"", "",
           "| phase | seconds | GFLOP | kernel | kernel GFLOP/s | floor s | efficiency (floor / seconds) |",
           "|---|---|---|---|---|---|---|"]
    for name, s, fl, k, kr, fs in rows:
        gfl = f"{fl/1e9:.1f}" if fl is not None else "-"
        eff = f"{fs/s*100:.0f} %" if s > 0 and fs > 0 else "-"
        out.append(f"| {name} | {s:.2f} | {gfl} | {k} | {kr} | {fs:.2f} | {eff} |")
    out.append(f"| **compute busy** | **{busy:.2f}** | | | | **{floor:.2f}** | **{floor/busy*100:.1f} %** |")
    out.append("")
    out.append(f"- **{run}**: compute busy / floor = {busy:.2f} s / {floor:.2f} s = {busy/floor:.3f}x the floor "
               f"({floor/busy*100:.1f} % of it); slicepipe wall {wall:.2f} s (slicing.json; compute busy "
               f"{ph['busy_seconds']:.2f} s); PyTorch / slicepipe wall = {ratio}.")
    ident = [l.split(None, 1)[1].strip() for l in open(f"{work}/run-{run.replace(':', '-')}.txt")
             if l.split(None, 1)[:1] == ["backend"]]
    if ident:
        out.append(f"- Backend, from the run's summary: {ident[0]}.")
    if backend == "onednn":
        out.append(f"- forward: {fwd_lin/1e9:.1f} GFLOP of linear layers, shortcuts and basis applications on {lin_k}, "
                   f"{fwd_att/1e9:.1f} GFLOP of per-head attention products on sgemm.")
    out.append(f"- With ssyrk's rate for the second moments (the float32 blocks cov_add used for a while) the floor "
               f"would be {floor_ssyrk:.2f} s.")
    # the baseline computed the same PCAs: its eigenvalues against this run's
    ev = []
    for key, te in torch_evals.items():
        if key == "embed": se = sj["embed"]["eigenvalues"]
        else:
            li, kind = key[5:].split("."); se = sj["layers"][int(li)][kind]["eigenvalues"]
        ev.append(f"{key} {max(abs(a - b) / abs(b) for a, b in zip(te, se)):.1e}")
    if ev:
        out.append("- Its eigenvalues against the PyTorch baseline's (largest relative difference of the top 4): "
                   + ", ".join(ev) + ".")
    sections.append("\n".join(out))

body = ["| run | compute busy | floor | busy / floor | share of the floor | slicepipe wall | PyTorch / slicepipe wall |",
        "|---|---|---|---|---|---|---|"] + summary + [""]
if torch_s:
    body.append(f"- PyTorch in-RAM baseline (slicing only), run once: {torch_s:.2f} s, on OpenBLAS core "
                f"{torch_core or 'unknown'}.")
body.append("- kernel shapes (GFLOP/s), each the better of its two measurements: " + "; ".join(f"{k} {w} {r}" for k, w, r in shapes) + f"; dsyevd({D}) {t_eigh:.3f} s.")
body.append(f"- kernel peaks before / after the runs (GFLOP/s): {drift}.")
body += [f"- {c}" for c in configs] + [f"- {n}" for n in notes]
body += [""] + ["\n\n".join(sections)]
text = "\n".join(body)
print(text)
with open(f"{work}/table.md", "w") as fh: fh.write(text + "\n")
PYEOF

load_text=$(printf '%s; ' "${loads[@]}")
with_dnn=""
((${#peaks_dnn[@]} == 0)) || with_dnn=" (built with oneDNN)"
cat >"$RESULTS" <<EOF
# slicepipe compute stage against this machine's floor (issue 10, item 7; issue 26)

Generated by \`bench/floor_bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); $("$bin" --version | head -1), commit $commit$dirty.

- Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr). Load average (1/5/15 min) ${load_text%; }. The machine may be shared: compare the ratios, which are measured within this one bench.
- Job: \`slicepipe synth model ${synth_cmd[*]:3}\` (in the work folder), then \`slicepipe run manifest-BACKEND-PRECISION.toml\` for each of ${RUNS[*]}, with seqlen $SEQLEN, nsamples $NSAMPLES, sparsity $SPARSITY, threads $THREADS, memory $MEMORY, and [resources] backend and precision set.
- Kernel peaks: \`kernel_peaks $D $d $FFN $SEQLEN $PASS_ROWS $MLP_ROWS $THREADS\`$with_dnn (the job's plan: layer passes of $GROUP windows, $PASS_ROWS rows, and MLP chunks of $MLP_ROWS rows) right before the runs and again right after them, each kernel's floor at the better of the two; PyTorch: \`torch_slicegpt.py model model/calib.npy --seqlen $SEQLEN --nsamples $NSAMPLES --sparsity $SPARSITY --threads $THREADS\` last.
- OpenBLAS: kernel_peaks and slicepipe ran with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (\`env -u\`), as a user runs them, and chose their kernels themselves (slicepipe: $slicepipe_kernels). PyTorch ran with OPENBLAS_CORETYPE=$torch_core, the core kernel_peaks' config line names, and OPENBLAS_L2_SIZE unset.

## Summary

$(cat "$work/table.md")

## How the floor is counted

N calibration tokens (W windows of T), D the width, d_in/d_mid/d_out a layer's widths (from
slicing.json), F the MLP width, qw = heads·head_dim, kw = kv_heads·head_dim, V the vocabulary.
A FLOP is a multiply or an add (gemm 2·m·n·k).

- **forward**, per layer, the products pipeline/slice/compute.c and pipeline/model/layer.c run:
  - attention pass: X·Q[:, :d_in] 2·N·D·d_in; q/k/v 2·N·d_in·(qw + 2·kw); scores and context
    over the causal half only, 2·(T(T+1)/2)·head_dim per head and window each, that is
    2·N·(T+1)·qw together; W_o (unsliced in the pass) 2·N·qw·D; the shortcut Xr·S 2·N·d_in·D;
  - MLP pass: M·Q[:, :d_mid] 2·N·D·d_mid; gate and up 4·N·d_mid·F; down 2·N·F·D; the
    shortcut 2·N·d_mid·D;
  - at sgemm's peak on the cpu backend. On the onednn backend everything but the scores and
    context goes through its sgemm, oneDNN's matmul (linalg/onednn.c), so it is counted at
    onednn_f32's or onednn_bf16's peak, the run's precision; the scores and context stay on
    single-threaded OpenBLAS calls in the pool and are counted at sgemm's peak;
  - norms, RoPE, softmax, SiLU (and, at bf16, the rounding of the operands to bf16) are not
    counted (few FLOPs each; they are part of what the measured phase pays above its floor).
- **second_moments**: N·D·(D+1) per PCA (the triangle of XᵀX), 1 + 2·L PCAs, at the kernel
  cov_add uses in both backends (dsyrk: 256-row blocks widened to float64, every product exact).
- **eigh**: one dsyevd of order D, measured directly (not a formula: ~(4/3 + 4/3·…)·D³ depends
  on the deflation) on one thread and on the job's, the better of the two, times 1 + 2·L.
- **rotations** (dgemm, float64, in both backends): embedding 2·V·D·d_0 and head 2·V·D·d_L;
  per layer the readers q/k/v 2·(qw + 2·kw)·D·d_in, W_o 2·d_mid·D·qw, gate/up 4·F·D·d_mid,
  down 2·d_out·D·F, the two shortcuts 2·d_in·d_mid·D + 2·d_mid·d_out·D.
- **spill_io**, **waits**: floor 0.

The kernel peak is the better of two measurements, before and after the runs, each the best of three ~0.4 s repetitions at the job's shapes (the dense layer
products for sgemm and oneDNN, at a layer pass's rows and an MLP chunk's, as the job's plan
prints them; a 256-row block into the D×D moment for syrk; rotation blocks
of the job's rows or columns for dgemm, sp_bk_rot_block(D) in linalg/backend.h, which the config line gives), with
the job's thread count. oneDNN's matmul is driven as
linalg/onednn.c drives it: C in 256×256 tiles, each computed by a one-thread primitive, the
tiles split over the job's threads (bench/kernel_peaks.c says what it emulates); at bf16 the
operands are rounded once, outside the clock.
EOF
log "wrote $RESULTS"
