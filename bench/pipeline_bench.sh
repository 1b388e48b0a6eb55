#!/usr/bin/env bash
# pipeline_bench.sh: end-to-end benchmark of `slicepipe run` (project issue 4).
#
#   bench/pipeline_bench.sh [SLICEPIPE_BIN] [WORK_DIR]
#
# SLICEPIPE_BIN defaults to build-bench/slicepipe (relative to the repository root),
# WORK_DIR to $BENCH_DIR or /tmp; everything goes into WORK_DIR/slicepipe-bench.
#
# It generates a synthetic Llama checkpoint with `slicepipe synth`, measures the disk's
# sequential read rate on its largest shard, runs `slicepipe run` under /usr/bin/time -v
# with io_uring and then with --io=pread while a sampler polls /proc/<pid>/status (and
# smaps_rollup) of every process of the run's tree every $BENCH_POLL seconds, and writes a
# table to $BENCH_RESULTS (default bench/RESULTS.md, overwritten).
#
# Sizes are overridable (defaults: the issue-4 model, ~1.7 GB of BF16):
#   BENCH_HIDDEN=2048 BENCH_LAYERS=16 BENCH_FFN=5632 BENCH_HEADS=16 BENCH_KV_HEADS=4
#   BENCH_VOCAB=32000 BENCH_SHARDS=2 BENCH_DTYPE=bf16 BENCH_SEQLEN=512 BENCH_NSAMPLES=64
#   BENCH_SPARSITY=0.25 BENCH_MEMORY=768MB BENCH_OUT_DTYPE=bf16 BENCH_THREADS=0
# Other knobs:
#   BENCH_POLL=0.2      sampler period in seconds
#   BENCH_COLD=1        drop the page cache before the disk measurement and each run
#                       (needs root; falls back to dd iflag=direct / warm runs if refused)
#   BENCH_PREAD=1       also run with --io=pread (0 skips it)
#   BENCH_RESULTS=PATH  where the markdown table goes
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${1:-$repo/build-bench/slicepipe}
[[ $bin == /* ]] || bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
base=${2:-${BENCH_DIR:-/tmp}}
work=$base/slicepipe-bench

HIDDEN=${BENCH_HIDDEN:-2048}
LAYERS=${BENCH_LAYERS:-16}
FFN=${BENCH_FFN:-5632}
HEADS=${BENCH_HEADS:-16}
KV_HEADS=${BENCH_KV_HEADS:-4}
VOCAB=${BENCH_VOCAB:-32000}
SHARDS=${BENCH_SHARDS:-2}
DTYPE=${BENCH_DTYPE:-bf16}
SEQLEN=${BENCH_SEQLEN:-512}
NSAMPLES=${BENCH_NSAMPLES:-64}
SPARSITY=${BENCH_SPARSITY:-0.25}
MEMORY=${BENCH_MEMORY:-768MB}
OUT_DTYPE=${BENCH_OUT_DTYPE:-bf16}
THREADS=${BENCH_THREADS:-0}
POLL=${BENCH_POLL:-0.2}
COLD=${BENCH_COLD:-1}
DO_PREAD=${BENCH_PREAD:-1}
RESULTS=${BENCH_RESULTS:-$repo/bench/RESULTS.md}
TOKENS=$((SEQLEN * NSAMPLES))

die() { echo "pipeline_bench: $*" >&2; exit 1; }
log() { echo "pipeline_bench: $*" >&2; }

[[ -x $bin ]] || die "no slicepipe binary at $bin (build: cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release && cmake --build build-bench -j2)"
if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time"
    apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }
fi
mkdir -p "$work"

# ---------------------------------------------------------------- 1. the checkpoint
model=$work/model
stamp="hidden=$HIDDEN layers=$LAYERS ffn=$FFN heads=$HEADS kv=$KV_HEADS vocab=$VOCAB shards=$SHARDS dtype=$DTYPE tokens=$TOKENS $("$bin" --version)"
synth_cmd=("$bin" synth "$model" --hidden "$HIDDEN" --layers "$LAYERS" --ffn "$FFN" --heads "$HEADS"
    --kv-heads "$KV_HEADS" --vocab "$VOCAB" --dtype "$DTYPE" --shards "$SHARDS" --tokens "$TOKENS")
if [[ -f $model/.bench-stamp && $(cat "$model/.bench-stamp") == "$stamp" ]]; then
    log "reusing $model ($stamp)"
else
    rm -rf "$model"
    log "synth: ${synth_cmd[*]}"
    "${synth_cmd[@]}" >&2
    echo "$stamp" >"$model/.bench-stamp"
fi
model_bytes=$(cat "$model"/*.safetensors | wc -c)
nshards=$(ls "$model"/*.safetensors | wc -l)
# the largest shard is the disk probe
shard=$(ls -S "$model"/*.safetensors | head -1)
shard_bytes=$(stat -c %s "$shard")

# ---------------------------------------------------------------- 2. the disk's own rate
can_drop=0
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; }
if [[ $COLD == 1 ]] && drop_caches; then can_drop=1; fi

# dd_rate FILE [dd flags...] -> prints "bytes seconds"
dd_rate() {
    local f=$1; shift
    LC_ALL=C dd if="$f" of=/dev/null bs=8M "$@" 2>&1 | awk '/bytes/ && /copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) s = $(i-1); print $1, s }'
}
disk_cold="" disk_direct=""
if [[ $can_drop == 1 ]]; then
    drop_caches
    read -r b s < <(dd_rate "$shard")
    disk_cold=$(awk -v b="$b" -v s="$s" 'BEGIN { printf "%.3f", b / s / 1e9 }')
    log "disk: cold buffered read of $(basename "$shard") ($b B) in $s s = $disk_cold GB/s"
fi
read -r b s < <(dd_rate "$shard" iflag=direct)
disk_direct=$(awk -v b="$b" -v s="$s" 'BEGIN { printf "%.3f", b / s / 1e9 }')
log "disk: dd iflag=direct bs=8M of $(basename "$shard") ($b B) in $s s = $disk_direct GB/s"
# the reference rate: the cold buffered read (what the reader does) when possible
disk_ref=${disk_cold:-$disk_direct}
disk_ref_how=$([[ -n $disk_cold ]] && echo "cold page cache, dd bs=8M" || echo "dd iflag=direct bs=8M")

# ---------------------------------------------------------------- 3. the runs
manifest=$work/manifest.toml
cat >"$manifest" <<EOF
# written by bench/pipeline_bench.sh
[model]
path = "model"
[calibration]
tokens = "model/calib.npy"
seqlen = $SEQLEN
nsamples = $NSAMPLES
[slicing]
sparsity = $SPARSITY
[output]
path = "out"
dtype = "$OUT_DTYPE"
[resources]
memory = "$MEMORY"
threads = $THREADS
EOF

# The memory plan first: a refused plan is reported, never worked around.
set +e
"$bin" run "$manifest" --dry-run >"$work/dryrun.out" 2>"$work/dryrun.err"
dry_rc=$?
set -e
plan_text=$(cat "$work/dryrun.err" "$work/dryrun.out")
if [[ $dry_rc != 0 ]]; then
    {
        echo "# slicepipe pipeline benchmark: REFUSED"
        echo
        echo "\`slicepipe run --dry-run\` exited $dry_rc with [resources] memory = \"$MEMORY\"; no run was made."
        echo
        echo '```'
        echo "$plan_text"
        echo '```'
    } | tee "$RESULTS"
    exit 2
fi
log "plan:"
echo "$plan_text" >&2

# sampler ROOT_PID LOG: every $POLL s, one line per process of ROOT's tree:
#   tick pid ppid VmHWM_kB VmRSS_kB RssShmem_kB Pss_kB
# Only bash builtins inside the loop (apart from sleep), so polling costs little.
sampler() {
    local root=$1 out=$2 tick=0 p q c line k v hwm rss shm pss ppid
    local -a queue kids
    exec 3>"$out"
    while kill -0 "$root" 2>/dev/null; do
        queue=("$root")
        kids=()
        while ((${#queue[@]})); do
            p=${queue[0]}
            queue=("${queue[@]:1}")
            kids+=("$p")
            for c in /proc/"$p"/task/*/children; do
                [[ -r $c ]] || continue
                read -r -a line <"$c" 2>/dev/null || true
                ((${#line[@]})) && queue+=("${line[@]}")
            done
        done
        for p in "${kids[@]}"; do
            hwm=0 rss=0 shm=0 pss=0 ppid=0
            while read -r k v _; do
                case $k in
                    PPid:) ppid=$v ;; VmHWM:) hwm=$v ;; VmRSS:) rss=$v ;; RssShmem:) shm=$v ;;
                esac
            done <"/proc/$p/status" 2>/dev/null || continue
            while read -r k v _; do
                [[ $k == Pss: ]] && { pss=$v; break; }
            done <"/proc/$p/smaps_rollup" 2>/dev/null || true
            echo "$tick $p $ppid $hwm $rss $shm $pss" >&3
        done
        tick=$((tick + 1))
        sleep "$POLL"
    done
    exec 3>&-
}

# run_one TAG [extra run args]: runs the pipeline, leaves $work/TAG.{out,err,time,samples}
run_one() {
    local tag=$1; shift
    rm -rf "$work/out"
    [[ $can_drop == 1 ]] && drop_caches
    log "run ($tag): $bin run $manifest $*"
    /usr/bin/time -v -o "$work/$tag.time" "$bin" run "$manifest" "$@" >"$work/$tag.out" 2>"$work/$tag.err" &
    local tpid=$!
    sampler "$tpid" "$work/$tag.samples" &
    local spid=$!
    local rc=0
    wait "$tpid" || rc=$?
    wait "$spid" || true
    [[ $rc == 0 ]] || { tail -5 "$work/$tag.err" >&2; die "slicepipe run ($tag) exited $rc"; }
    cp "$work/out/slicing.json" "$work/$tag.slicing.json" 2>/dev/null || true
    ( cd "$work/out" && cat $(ls *.safetensors | sort) | md5sum | cut -d' ' -f1 ) >"$work/$tag.md5"
}

# parse TAG: sets P_* variables from the outputs of run TAG
parse() {
    local tag=$1 f=$work/$1
    # /usr/bin/time -v
    P_wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; print s }' "$f.time")
    P_user=$(awk -F': ' '/User time/ { print $2 }' "$f.time")
    P_sys=$(awk -F': ' '/System time/ { print $2 }' "$f.time")
    P_cpu=$(awk -F': ' '/Percent of CPU/ { print $2 }' "$f.time")
    P_maxrss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$f.time")
    P_majflt=$(awk -F': ' '/Major \(requiring I\/O\)/ { print $2 }' "$f.time")
    P_fsin=$(awk -F': ' '/File system inputs/ { print $2 }' "$f.time")
    # the tool's report: "  STAGE busy X s (P%) wait W s | read R MB written W MB | G GB/s busy | peak RSS M MiB"
    local st
    for st in reader compute writer; do
        read -r b bp w r wr rss gb < <(awk -v s="$st" '$1 == s && $2 == "busy" {
            match($0, /busy +[0-9.]+s/); bz = substr($0, RSTART + 5, RLENGTH - 6)
            match($0, /read +[0-9.]+ MB/); rd = substr($0, RSTART + 5, RLENGTH - 8)
            match($0, /written +[0-9.]+ MB/); wrt = substr($0, RSTART + 8, RLENGTH - 11)
            match($0, /wait +[0-9.]+s/); wt = substr($0, RSTART + 5, RLENGTH - 6)
            match($0, /\( *[0-9.]+%\)/); pc = substr($0, RSTART + 1, RLENGTH - 3)
            match($0, /peak RSS [0-9.]+ MiB/); pr = substr($0, RSTART + 9, RLENGTH - 13)
            match($0, /[0-9.]+ GB\/s busy/); gb = substr($0, RSTART, RLENGTH - 10)
            print bz + 0, pc + 0, wt + 0, rd + 0, wrt + 0, pr + 0, gb + 0 }' "$f.err")
        printf -v "P_${st}_busy" %s "$b"
        printf -v "P_${st}_pct" %s "$bp"
        printf -v "P_${st}_wait" %s "$w"
        printf -v "P_${st}_readMB" %s "$r"
        printf -v "P_${st}_writtenMB" %s "$wr"
        printf -v "P_${st}_rssMiB" %s "$rss"
        printf -v "P_${st}_gbs" %s "$gb"
    done
    P_tool_time=$(awk '/^  time / { print $2 }' "$f.out")
    P_tool_rss=$(awk '/all processes: / { print $(NF-1) }' "$f.out")
    # the sampler: per-process peak VmHWM; per-tick sums of VmRSS and Pss
    read -r P_nproc P_sum_hwm P_max_sum_rss P_max_sum_pss P_max_shm P_ticks P_roles < <(awk -v root="$(awk '{print $2; exit}' "$f.samples")" '
        { t = $1; pid = $2; ppid[pid] = $3; if ($4 > hwm[pid]) hwm[pid] = $4
          if ($2 != root) { rs[t] += $5; ps[t] += $7; if ($6 > shm) shm = $6 } ticks[t] = 1 }
        END {
          # the supervisor: the child of /usr/bin/time; stages: its children, in fork (pid) order
          for (p in ppid) if (ppid[p] == root) sup = p
          n = 0; for (p in ppid) if (ppid[p] == sup) st[++n] = p + 0
          for (i = 1; i <= n; i++) for (k = i + 1; k <= n; k++) if (st[k] < st[i]) { x = st[i]; st[i] = st[k]; st[k] = x }
          split("reader compute writer", nm, " ")
          roles = sprintf("supervisor=%.1f", hwm[sup] / 1024)
          for (i = 1; i <= n; i++) roles = roles sprintf(",%s=%.1f", (i <= 3 ? nm[i] : "pid" st[i]), hwm[st[i]] / 1024)
          sum = 0; np = 0; for (p in hwm) if (p != root) { sum += hwm[p]; np++ }
          mr = 0; mp = 0; nt = 0; for (x in ticks) { nt++; if (rs[x] > mr) mr = rs[x]; if (ps[x] > mp) mp = ps[x] }
          printf "%d %.1f %.1f %.1f %.1f %d %s\n", np, sum / 1024, mr / 1024, mp / 1024, shm / 1024, nt, roles }' "$f.samples")
}

run_one uring
parse uring
for v in wall user sys cpu maxrss_kb majflt fsin tool_time tool_rss nproc sum_hwm max_sum_rss max_sum_pss max_shm ticks roles \
    reader_busy reader_pct reader_wait reader_readMB compute_busy compute_pct compute_wait compute_readMB compute_writtenMB \
    writer_busy writer_pct writer_writtenMB reader_gbs reader_rssMiB compute_rssMiB writer_rssMiB; do
    eval "U_$v=\${P_$v}"
done
if [[ $DO_PREAD == 1 ]]; then
    run_one pread --io=pread
    parse pread
    same=$([[ $(cat "$work/uring.md5") == $(cat "$work/pread.md5") ]] && echo "yes" || echo "NO")
fi

# ---------------------------------------------------------------- 4. the table
calc() { awk "BEGIN { printf \"$1\", ($2) }"; }
budget_bytes=$(awk -v m="$MEMORY" 'BEGIN {
    n = m + 0; u = m; sub(/^[0-9.]+ */, "", u)
    f["B"] = 1; f[""] = 1; f["KB"] = 1e3; f["MB"] = 1e6; f["GB"] = 1e9; f["TB"] = 1e12
    f["KiB"] = 1024; f["MiB"] = 1048576; f["GiB"] = 1073741824; f["TiB"] = 1099511627776
    printf "%.0f", n * f[u] }')
budget_mib=$(calc %.1f "$budget_bytes / 1048576")
ok() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**missed**"; }

compute_pct_wall=$(calc %.1f "100 * $U_compute_busy / $U_wall")
rd_bytes=$(calc %.0f "$U_reader_readMB * 1e6")
# the tool's own "GB/s busy" = (read + written) / busy at full precision; the reader writes nothing
rd_busy_gbs=$U_reader_gbs
rd_wall_gbs=$(calc %.5f "$U_reader_readMB / 1e3 / $U_wall")
plan_line=$(grep -m1 'memory plan' <<<"$plan_text" | sed 's/^ *//')
plan_mib=$(sed -n 's/.*memory plan \([0-9.]*\) MiB.*/\1/p' <<<"$plan_line")
machine="$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME"), load average at start of report: $(cut -d' ' -f1-3 /proc/loadavg)"

{
    echo "# slicepipe pipeline benchmark (issue 4)"
    echo
    echo "Generated by \`bench/pipeline_bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); slicepipe $("$bin" --version | awk '{print $2}'), commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo
    echo "- Machine: $machine. The machine is shared (other jobs were running); figures are one run each."
    echo "- Model: synthetic Llama, D=$HIDDEN, $LAYERS layers, FFN $FFN, $HEADS heads / $KV_HEADS KV heads, vocab $VOCAB, ${DTYPE^^}, $nshards shards, $(calc %.2f "$model_bytes / 1e9") GB."
    echo "- Calibration: $NSAMPLES windows x $SEQLEN = $TOKENS tokens; sparsity $SPARSITY; output $OUT_DTYPE; [resources] memory = \"$MEMORY\" ($budget_mib MiB), threads = $THREADS."
    echo "- Page cache: $([[ $can_drop == 1 ]] && echo 'dropped (echo 3 > /proc/sys/vm/drop_caches) before the disk probe and before each run: the reader reads from disk' || echo 'could NOT be dropped: the runs may read from the page cache')."
    echo "- Synth: \`${synth_cmd[*]}\`"
    echo "- Run: \`/usr/bin/time -v $bin run $manifest\` (then the same with \`--io=pread\`); sampler: /proc/<pid>/status and smaps_rollup of the run's process tree every ${POLL} s."
    echo
    echo "Plan printed by the tool:"
    echo
    echo '```'
    grep -v '^slicepipe: layer' <<<"$plan_text"
    echo '```'
    echo
    echo "| figure | io_uring run | target | verdict |"
    echo "|---|---|---|---|"
    echo "| wall time (/usr/bin/time) | $(calc %.1f "$U_wall") s (tool's own: ${U_tool_time} s); user $U_user s, sys $U_sys s, CPU $U_cpu | | |"
    echo "| compute busy / wall | $U_compute_busy s = $compute_pct_wall % (tool's own: $U_compute_pct %) | >= 90 % | $(ok "$compute_pct_wall >= 90") |"
    echo "| reader / writer busy | reader $U_reader_busy s ($U_reader_pct %), wait $U_reader_wait s; writer $U_writer_busy s ($U_writer_pct %) | | |"
    echo "| peak RSS, sum over processes, tool (sum of each VmHWM incl. supervisor) | $U_tool_rss MiB | <= $budget_mib MiB | $(ok "$U_tool_rss <= $budget_mib") |"
    echo "| peak RSS per process, tool | reader $U_reader_rssMiB, compute $U_compute_rssMiB, writer $U_writer_rssMiB MiB | | |"
    echo "| peak RSS per process, /proc VmHWM | ${U_roles//,/, } MiB | | |"
    echo "| peak RSS, /proc: sum of the $U_nproc processes' VmHWM | $U_sum_hwm MiB | <= $budget_mib MiB | $(ok "$U_sum_hwm <= $budget_mib") |"
    echo "| peak of the summed VmRSS (same instant, $U_ticks samples) | $U_max_sum_rss MiB (shared rings counted once per mapping; largest RssShmem of one process $U_max_shm MiB) | <= $budget_mib MiB | $(ok "$U_max_sum_rss <= $budget_mib") |"
    echo "| peak of the summed Pss (shared pages split) | $U_max_sum_pss MiB | <= $budget_mib MiB | $(ok "$U_max_sum_pss <= $budget_mib") |"
    echo "| memory plan (tool) | $plan_mib MiB | <= $budget_mib MiB | $(ok "${plan_mib:-0} <= $budget_mib") |"
    echo "| /usr/bin/time max RSS (largest single process) | $(calc %.1f "$U_maxrss_kb / 1024") MiB | | |"
    echo "| major faults / fs inputs (512 B blocks) | $U_majflt / $U_fsin | | |"
    echo "| disk sequential read ($disk_ref_how, $(calc %.2f "$shard_bytes / 1e9") GB shard) | $disk_ref GB/s (dd iflag=direct: $disk_direct GB/s) | | |"
    echo "| reader: bytes read | $U_reader_readMB MB (checkpoint $(calc %.1f "$model_bytes / 1e6") MB) | | |"
    echo "| reader throughput, bytes / reader busy s | $rd_busy_gbs GB/s = $(calc %.3f "$rd_busy_gbs / $disk_ref") x disk (the tool's \"GB/s busy\") | | |"
    echo "| reader throughput, bytes / wall | $rd_wall_gbs GB/s = $(calc %.5f "$rd_wall_gbs / $disk_ref") x disk | | |"
    echo "| compute spill traffic | read $U_compute_readMB MB, written $U_compute_writtenMB MB; writer wrote $U_writer_writtenMB MB | | |"
    if [[ $DO_PREAD == 1 ]]; then
        p_rd_busy=$P_reader_gbs
        echo "| **--io=pread** wall time | $(calc %.1f "$P_wall") s; compute busy $P_compute_busy s ($(calc %.1f "100 * $P_compute_busy / $P_wall") %); reader busy $P_reader_busy s | | |"
        echo "| wall time ratio pread / io_uring | $(calc %.3f "$P_wall / $U_wall") | | |"
        echo "| reader throughput (bytes / busy s) ratio pread / io_uring | $p_rd_busy / $rd_busy_gbs GB/s = $(calc %.3f "$rd_busy_gbs > 0 ? $p_rd_busy / $rd_busy_gbs : 0") | | |"
        echo "| pread peak RSS: tool sum / /proc summed VmRSS | $P_tool_rss / $P_max_sum_rss MiB | <= $budget_mib MiB | $(ok "$P_tool_rss <= $budget_mib") |"
        echo "| output shards identical (md5) io_uring vs pread | $same | identical | $([[ $same == yes ]] && echo met || echo '**missed**') |"
    fi
    echo
    echo "Per-stage report of the io_uring run (stderr):"
    echo
    echo '```'
    grep -E '^  (reader|compute|writer) ' "$work/uring.err"
    echo '```'
    if [[ $DO_PREAD == 1 ]]; then
        echo
        echo "Per-stage report of the --io=pread run:"
        echo
        echo '```'
        grep -E '^  (reader|compute|writer) ' "$work/pread.err"
        echo '```'
    fi
    echo
    echo "Notes: RSS sums count the shared-memory rings once in every process that maps them, so they over-state the"
    echo "footprint; the Pss sum splits shared pages and is the closest to real memory use. /usr/bin/time reports the"
    echo "largest single process, not the sum. \"busy\" is the stage's lifetime minus its waits on the rings, so a reader"
    echo "blocked on the disk counts as busy."
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
cat "$RESULTS"
