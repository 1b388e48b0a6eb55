#!/usr/bin/env bash
# bench/scale_bench.sh — a Llama-2-7B-shaped job on this machine, inside a hard memory
# limit, killed twice and resumed (issue 26 point 6). A bench, not a CI test.
#
#   bench/scale_bench.sh [SLICEPIPE_BIN] [WORK_DIR]
#
# SLICEPIPE_BIN defaults to build/slicepipe (relative to the repository root). WORK_DIR
# defaults to $BENCH_DIR/slicepipe-scale, $BENCH_DIR to build-scale/ in the checkout
# (ignored by git). The default shape needs about 40 GB there: the 13.5 GB checkpoint
# and two 11 GB outputs.
#
# Steps:
#   1. the memory plan of the job on a checkpoint of the same shape whose weights are
#      sparse files (bench/plan70b.py writes it): `run --dry-run`, before any synth; a
#      refused plan stops the bench (exit 2). SCALE_DRY_ONLY=1 stops there.
#   2. `slicepipe synth` of the checkpoint (kept and reused while its shape is the same);
#   3. a cgroup v1 memory cgroup, a child of this shell's own, with memory.limit_in_bytes
#      set to SCALE_CGROUP_LIMIT; every `slicepipe run` below runs in it (synth does not);
#      its memory.max_usage_in_bytes is reset before each run and read after it, and
#      memory.stat is sampled every SCALE_POLL seconds (anonymous and shmem bytes, which
#      are not reclaimable, apart from the page cache that the limit also covers);
#   4. run A: the job, uninterrupted;
#   5. run B: the same job in another output folder, SIGKILLed (its whole process group)
#      SCALE_KILLS times at seeded random points between 10% and 90% of run A's wall
#      time, each time resumed with the same command (`slicepipe status` is recorded
#      after each kill); then every output file of A and B is compared
#      (bench/scale_report.py compare);
#   6. the report (bench/scale_report.py report): wall times, per-layer and per-phase
#      times, cgroup peaks, disk, what each kill cost, and the Llama-2-70B job
#      extrapolated from run A's phase rates to this machine, to a 32-core workstation
#      (by cores) and to one H100/H200 (tests/gpu/bench_cuda.c's cost model).
#
# Knobs (defaults: the issue's 7B job):
#   SCALE_HIDDEN=4096 SCALE_LAYERS=32 SCALE_FFN=11008 SCALE_HEADS=32 SCALE_KV_HEADS=32
#   SCALE_VOCAB=32000 SCALE_SHARDS=3 SCALE_SEQLEN=1024 SCALE_NSAMPLES=8 SCALE_SPARSITY=0.25
#   SCALE_CGROUP_LIMIT=6GiB   the cgroup's hard limit (memory.limit_in_bytes)
#   SCALE_MEMORY=             [resources] memory; default two thirds of the cgroup limit
#                             (4096MiB at 6GiB; the 7B plan is about 2.4 GiB at 8x1024
#                             tokens): the page cache of the checkpoint, the spills and
#                             the output shards is charged to the cgroup too
#   SCALE_THREADS=2           [resources] threads
#   SCALE_KILLS=2 SCALE_SEED=1
#   SCALE_POLL=1              memory.stat sampling period, seconds
#   SCALE_BENCH_CUDA=FILE     bench_cuda's output (the bench.txt of tests/gpu/device_check.sh):
#                             the GPU extrapolation then uses its measured rates; without
#                             it the report gives the datasheet-peak bound only
#   SCALE_KEEP_OUTPUTS=0      1 keeps both outputs (22 GB at 7B); the checkpoint is kept
#   SCALE_RESULTS=PATH        the report; default bench/SCALE.md at the default shape,
#                             WORK_DIR/SCALE.md at any other (a small validation run does
#                             not overwrite the 7B figures)
#   SCALE_REPORT_ONLY=1       rewrite the report from WORK_DIR's logs, running nothing
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${1:-$repo/build/slicepipe}
[[ $bin == /* ]] || bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
base=${BENCH_DIR:-$repo/build-scale}
work=${2:-$base/slicepipe-scale}

HIDDEN=${SCALE_HIDDEN:-4096}
LAYERS=${SCALE_LAYERS:-32}
FFN=${SCALE_FFN:-11008}
HEADS=${SCALE_HEADS:-32}
KV_HEADS=${SCALE_KV_HEADS:-32}
VOCAB=${SCALE_VOCAB:-32000}
SHARDS=${SCALE_SHARDS:-3}
SEQLEN=${SCALE_SEQLEN:-1024}
NSAMPLES=${SCALE_NSAMPLES:-8}
SPARSITY=${SCALE_SPARSITY:-0.25}
LIMIT=${SCALE_CGROUP_LIMIT:-6GiB}
THREADS=${SCALE_THREADS:-2}
KILLS=${SCALE_KILLS:-2}
SEED=${SCALE_SEED:-1}
POLL=${SCALE_POLL:-1}
KEEP=${SCALE_KEEP_OUTPUTS:-0}
TOKENS=$((SEQLEN * NSAMPLES))
default_shape=0
[[ "$HIDDEN $LAYERS $FFN $HEADS $KV_HEADS $VOCAB $SEQLEN $NSAMPLES $SPARSITY" == "4096 32 11008 32 32 32000 1024 8 0.25" ]] &&
    default_shape=1
if [[ -n ${SCALE_RESULTS:-} ]]; then RESULTS=$SCALE_RESULTS
elif [[ $default_shape == 1 ]]; then RESULTS=$repo/bench/SCALE.md
else RESULTS=$work/SCALE.md; fi

PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
die() { echo "scale_bench: $*" >&2; exit 1; }
log() { echo "scale_bench: $(date -u +%H:%M:%S) $*" >&2; }

if [[ ${SCALE_REPORT_ONLY:-0} == 1 ]]; then
    exec "$PY" "$here/scale_report.py" report "$work" "$RESULTS"
fi

[[ -x $bin ]] || die "no slicepipe binary at $bin (build: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build)"
"$PY" -c 'import numpy' 2>/dev/null || die "$PY has no numpy (bench/plan70b.py needs it for step 1)"

# bytes SIZE: "6GiB", "4096MiB", "6442450944" -> bytes
bytes() {
    awk -v m="$1" 'BEGIN {
        n = m + 0; u = m; sub(/^[0-9.]+ */, "", u)
        f["B"] = 1; f[""] = 1; f["KB"] = 1e3; f["MB"] = 1e6; f["GB"] = 1e9; f["TB"] = 1e12
        f["KiB"] = 1024; f["MiB"] = 1048576; f["GiB"] = 1073741824; f["TiB"] = 1099511627776
        if (!(u in f) || n <= 0) exit 1
        printf "%.0f", n * f[u] }' || die "cannot read the size \"$1\""
}
limit_bytes=$(bytes "$LIMIT")
MEMORY=${SCALE_MEMORY:-$((limit_bytes * 2 / 3 / 1048576))MiB}
memory_bytes=$(bytes "$MEMORY")
((memory_bytes < limit_bytes)) || die "[resources] memory ($MEMORY) must be under the cgroup limit ($LIMIT)"

mkdir -p "$work"
work=$(cd "$work" && pwd)
model=$work/model
cd "$work"

# ---------------------------------------------------------------- the manifests
manifest() { # FILE MODEL_DIR OUTPUT_DIR
    cat >"$1" <<EOF
# written by bench/scale_bench.sh
[model]
path = "$2"
[calibration]
tokens = "$2/calib.npy"
seqlen = $SEQLEN
nsamples = $NSAMPLES
[slicing]
sparsity = $SPARSITY
[output]
path = "$3"
[resources]
memory = "$MEMORY"
threads = $THREADS
EOF
}

# ---------------------------------------------------------------- 1. the plan, before any synth
log "plan check on a sparse checkpoint of the same shape (bench/plan70b.py's writer)"
rm -rf "$work/plan"
mkdir -p "$work/plan"
"$PY" - "$here" "$work/plan/model" "$HIDDEN" "$LAYERS" "$FFN" "$HEADS" "$KV_HEADS" "$VOCAB" "$TOKENS" <<'PY'
import os, sys
sys.path.insert(0, sys.argv[1])
import plan70b
d, (D, L, F, H, KV, V, N) = sys.argv[2], map(int, sys.argv[3:10])
plan70b.write_checkpoint(d, dict(D=D, L=L, F=F, H=H, KV=KV, V=V))
plan70b.write_tokens(os.path.join(d, "calib.npy"), N)
PY
manifest "$work/plan/job.toml" model out
set +e
"$bin" run "$work/plan/job.toml" --dry-run >"$work/plan.out" 2>&1
plan_rc=$?
set -e
rm -rf "$work/plan"
cat "$work/plan.out" >&2
if [[ $plan_rc != 0 ]]; then
    echo "scale_bench: the plan is refused (exit $plan_rc) at [resources] memory = \"$MEMORY\"; nothing was run" >&2
    exit 2
fi
[[ ${SCALE_DRY_ONLY:-0} == 1 ]] && { log "SCALE_DRY_ONLY=1: the plan is accepted; stopping"; exit 0; }

# ---------------------------------------------------------------- the cgroup
cgmount=/sys/fs/cgroup/memory
[[ -f $cgmount/memory.limit_in_bytes ]] || die "no cgroup v1 memory controller at $cgmount"
cgparent=$cgmount$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
cg=$cgparent/slicepipe-scale-$$
mkdir "$cg" 2>/dev/null || die "cannot create the memory cgroup $cg (needs root and a writable cgroup v1 memory hierarchy)"
cleanup() {
    local p n=0
    if [[ -n ${SAMPLER:-} ]]; then kill -- -"$SAMPLER" 2>/dev/null || true; fi
    if [[ -d $cg ]]; then
        # the only processes in it are the runs this script started
        while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <"$cg/cgroup.procs"
        if [[ -n ${RUN_PID:-} ]]; then wait "$RUN_PID" 2>/dev/null || true; fi # reaped, it leaves the cgroup
        until rmdir "$cg" 2>/dev/null; do
            ((n++ < 100)) || { echo "scale_bench: could not remove the cgroup $cg" >&2; break; }
            sleep 0.1
        done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "$limit_bytes" >"$cg/memory.limit_in_bytes" || die "cannot set $cg/memory.limit_in_bytes"
[[ $(cat "$cg/memory.limit_in_bytes") -le $limit_bytes ]] || die "the cgroup did not take the limit"
log "memory cgroup $cg, limit $LIMIT ($(cat "$cg/memory.limit_in_bytes") bytes); [resources] memory = \"$MEMORY\""

# ---------------------------------------------------------------- 2. the checkpoint
synth_cmd=("$bin" synth "$model" --hidden "$HIDDEN" --layers "$LAYERS" --ffn "$FFN" --heads "$HEADS"
    --kv-heads "$KV_HEADS" --vocab "$VOCAB" --dtype bf16 --shards "$SHARDS" --tokens "$TOKENS")
stamp="${synth_cmd[*]:2} $("$bin" --version | head -1)"
if [[ -f $model/.bench-stamp && $(cat "$model/.bench-stamp") == "$stamp" ]]; then
    log "reusing $model"
    synth_s=reused
else
    rm -rf "$model"
    log "synth: ${synth_cmd[*]}"
    t=$EPOCHREALTIME
    "${synth_cmd[@]}" --quiet >"$work/synth.out"
    synth_s=$(awk -v a="$EPOCHREALTIME" -v b="$t" 'BEGIN { printf "%.1f", a - b }')
    echo "$stamp" >"$model/.bench-stamp"
fi

# ---------------------------------------------------------------- runs in the cgroup
set -m # every background job is its own process group: a kill reaches the whole job
rm -rf "$work/out-a" "$work/out-b" "$work"/runs "$work"/*.toml
mkdir -p "$work/runs"
manifest "$work/a.toml" model out-a
manifest "$work/b.toml" model out-b
runs=$work/runs

cgread() { cat "$cg/$1" 2>/dev/null || echo 0; }
oom_kills() { awk '$1 == "oom_kill" { print $2; f = 1 } END { if (!f) print 0 }' "$cg/memory.oom_control"; }
# sampler FILE: every $POLL s: time usage total_rss total_shmem total_cache total_mapped_file
sampler() {
    local k v rss shm cache mf usage
    exec >"$1"
    while :; do
        rss=0 shm=0 cache=0 mf=0
        while read -r k v; do
            case $k in total_rss) rss=$v ;; total_shmem) shm=$v ;; total_cache) cache=$v ;; total_mapped_file) mf=$v ;; esac
        done <"$cg/memory.stat"
        read -r usage <"$cg/memory.usage_in_bytes"
        echo "$EPOCHREALTIME $usage $rss $shm $cache $mf"
        sleep "$POLL"
    done
}
alive() { [[ -r /proc/$1/stat ]] && [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# start_run TAG MANIFEST: `slicepipe run MANIFEST` in the cgroup, in its own process group
start_run() {
    RUN_TAG=$1
    [[ -s $cg/cgroup.procs ]] && die "the cgroup is not empty before run $1"
    echo 0 >"$cg/memory.force_empty" 2>/dev/null || true # the page cache left charged by the previous run
    echo 0 >"$cg/memory.max_usage_in_bytes"
    echo 0 >"$cg/memory.failcnt" 2>/dev/null || true
    if [[ -f $cg/memory.memsw.max_usage_in_bytes ]]; then echo 0 >"$cg/memory.memsw.max_usage_in_bytes" 2>/dev/null || true; fi
    RUN_OOM0=$(oom_kills)
    sampler "$runs/$1.mem" &
    SAMPLER=$!
    RUN_T0=$EPOCHREALTIME
    (echo "$BASHPID" >"$cg/cgroup.procs" && exec "$bin" run "$2") >"$runs/$1.out" 2>"$runs/$1.err" &
    RUN_PID=$!
}
# finish_run [KILL_AT_S]: waits for the run (SIGKILL to its process group at KILL_AT_S
# seconds after its start, if it is still running then), then for the cgroup to empty
finish_run() {
    local kill_at=${1:-} landed=- rc=0 t_end n=0
    if [[ -n $kill_at ]]; then
        local deadline
        deadline=$(awk -v a="$RUN_T0" -v k="$kill_at" 'BEGIN { printf "%.6f", a + k }')
        while alive "$RUN_PID" && awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { exit !(n < d) }'; do sleep 0.05; done
        if alive "$RUN_PID"; then
            kill -KILL -- -"$RUN_PID"
            landed=1
        else
            landed=0
        fi
    fi
    wait "$RUN_PID" 2>/dev/null || rc=$?
    t_end=$EPOCHREALTIME
    while [[ -s $cg/cgroup.procs ]] && ((n++ < 600)); do sleep 0.05; done # the stages, after a kill
    [[ -s $cg/cgroup.procs ]] && die "processes still in the cgroup 30 s after run $RUN_TAG"
    kill -- -"$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    local wall
    wall=$(awk -v a="$t_end" -v b="$RUN_T0" 'BEGIN { printf "%.3f", a - b }')
    # tag rc wall_s kill_at_s landed max_usage failcnt oom_kills memsw_max
    echo "$RUN_TAG $rc $wall ${kill_at:--} $landed $(cgread memory.max_usage_in_bytes) $(cgread memory.failcnt)" \
        "$(($(oom_kills) - RUN_OOM0)) $(cgread memory.memsw.max_usage_in_bytes)" >>"$runs/runs.txt"
    RUN_RC=$rc RUN_WALL=$wall RUN_LANDED=$landed
}

host="$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r)"
{
    echo "hidden=$HIDDEN"; echo "layers=$LAYERS"; echo "ffn=$FFN"; echo "heads=$HEADS"; echo "kv_heads=$KV_HEADS"
    echo "vocab=$VOCAB"; echo "shards=$SHARDS"; echo "seqlen=$SEQLEN"; echo "nsamples=$NSAMPLES"; echo "sparsity=$SPARSITY"
    echo "limit=$LIMIT"; echo "limit_bytes=$limit_bytes"; echo "memory=$MEMORY"; echo "threads=$THREADS"
    echo "kills=$KILLS"; echo "seed=$SEED"; echo "poll=$POLL"; echo "synth_s=$synth_s"
    echo "synth_cmd=slicepipe ${synth_cmd[*]:1}" | sed "s#$work/##g"
    echo "version=$("$bin" --version | head -1)"
    echo "commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "host=$host"
    echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "bench_cuda=${SCALE_BENCH_CUDA:-}"
} >"$runs/meta.txt"

# ---------------------------------------------------------------- 4. run A
log "run A (uninterrupted): slicepipe run a.toml"
start_run A "$work/a.toml"
finish_run
[[ $RUN_RC == 0 ]] || { tail -5 "$runs/A.err" >&2; die "run A exited $RUN_RC (see $runs/A.err)"; }
wall_a=$RUN_WALL
log "run A: $wall_a s"

# ---------------------------------------------------------------- 5. run B, killed and resumed
# Kill points: sorted uniform draws in [0.1, 0.9] of run A's wall time, measured along the
# job: kill i lands (p_i - p_{i-1}) x wall_A after the start of the run it interrupts.
read -r -a fracs < <("$PY" -c "import random; r = random.Random($SEED); print(*sorted(round(r.uniform(0.1, 0.9), 4) for _ in range($KILLS)))")
echo "kill_fractions=${fracs[*]}" >>"$runs/meta.txt"
prev=0 i=0
for p in "${fracs[@]}"; do
    i=$((i + 1))
    at=$(awk -v p="$p" -v q="$prev" -v w="$wall_a" 'BEGIN { printf "%.3f", (p - q) * w }')
    prev=$p
    log "run B$i: kill $i at $at s (fraction $p of run A's wall time)"
    start_run "B$i" "$work/b.toml"
    finish_run "$at"
    "$bin" status "$work/out-b" >"$runs/B$i.status" 2>&1 || true
    if [[ $RUN_LANDED != 1 ]]; then
        # the run was faster than run A (the load changed): it ended before the kill
        log "kill $i did not land: run B$i ended (exit $RUN_RC) after $RUN_WALL s, before $at s"
        missed=1
        break
    fi
    log "run B$i killed after $RUN_WALL s; $(grep -m1 '^layers:' "$runs/B$i.status" || true)"
done
if [[ ${missed:-0} == 0 ]]; then
    i=$((i + 1))
    log "run B$i: the resume to the end"
    start_run "B$i" "$work/b.toml"
    finish_run
fi
[[ $RUN_RC == 0 ]] || { tail -5 "$runs/B$i.err" >&2; die "the last run of B exited $RUN_RC (see $runs/B$i.err)"; }
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$runs/meta.txt"

# ---------------------------------------------------------------- compare, disk
log "comparing out-a and out-b"
set +e
"$PY" "$here/scale_report.py" compare "$work/out-a" "$work/out-b" >"$runs/compare.txt"
cmp_rc=$?
set -e
cat "$runs/compare.txt" >&2
{
    echo "model $(du -sb "$model" | cut -f1)"
    echo "out-a $(du -sb "$work/out-a" | cut -f1)"
    echo "out-b $(du -sb "$work/out-b" | cut -f1)"
    echo "jobdir-a $(du -sb "$work/out-a/.slicepipe" | cut -f1)"
    echo "fs_avail $(df -B1 --output=avail "$work" | tail -1 | tr -d ' ')"
} >"$runs/disk.txt"
[[ $KEEP == 1 ]] || rm -rf "$work/out-a" "$work/out-b"

# ---------------------------------------------------------------- 6. the report
"$PY" "$here/scale_report.py" report "$work" "$RESULTS"
[[ $cmp_rc == 0 ]] || die "the outputs of run A and run B differ"
[[ ${missed:-0} == 0 ]] || die "a kill did not land (the report says which); rerun, or pick another SCALE_SEED"
