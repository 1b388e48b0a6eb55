#!/usr/bin/env python3
"""bench/scale_report.py — the comparison and the report of bench/scale_bench.sh.

  scale_report.py compare OUT_A OUT_B     every output file of two runs of one job;
                                          exit 0 when all agree, 1 otherwise
  scale_report.py report WORK_DIR RESULTS the markdown report from WORK_DIR/runs/

What `compare` compares: every regular file under OUT_A and OUT_B except the job folder
.slicepipe/ (the journal and the lock: the job's own record, which names its output path
and, for a resumed job, its run history; not part of the model). The two folders must hold
the same names. Every file is compared byte for byte except two that hold the run's own
measurements (wall and phase times, bytes each stage moved, peak RSS), which differ between
any two runs of a job and more so between a resumed job and an uninterrupted one:
  - slicing.json: compared as JSON with the keys "timing", "stages" and "peak_rss_bytes"
    removed; everything else (spectra, widths, EVRs, parameters, bytes) must be equal;
  - report.html: compared byte for byte after the cells of its "timings" and "phases"
    tables and its "peak memory (RSS)" cell are blanked.

The extrapolation (report): each phase of run A's compute stage (`slicepipe run`'s
"compute phases" line, slicing.json's stages.compute_phases) is scaled by the work it does
in docs/pipeline.md §8's terms, with N calibration tokens, T the window, D the width, L
layers, P the parameters of a layer, V the vocabulary and s the sparsity:
  forward         L·N·(2·P + 4·T·q_width)                      (FLOPs)
  second_moments  (2L+1)·N·D²                                  (two PCAs a layer, the embedding's)
  eigh            (2L+1)·D³
  rotations       2(1−s)·D·(L·P + 2·V·D) + 4(1−s)²·L·D³        (weights, embedding and head; shortcuts)
  spill_io        (2L+1)·N·D                                   (elements through the spills)
  waits, other    the checkpoint's bytes                       (the reader; hashing, writing, start-up)
"other" is the wall time less the phases. A 32-core machine is this machine's estimate
times threads/32 (cores only). One H100/H200 is tests/gpu/bench_cuda.c's cost model.
"""
import json
import math
import os
import re
import statistics
import sys

# ----------------------------------------------------------------------------- compare

TIMING_KEYS = ("timing", "stages", "peak_rss_bytes")


def _files(root):
    out = []
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        if rel == ".slicepipe" or rel.startswith(".slicepipe" + os.sep):
            continue
        dirs[:] = [x for x in dirs if not (rel == "." and x == ".slicepipe")]
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(os.path.normpath(os.path.relpath(p, root)))
    return sorted(out)


def _same_bytes(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 24), fb.read(1 << 24)
            if x != y:
                return False
            if not x:
                return True


def _html_masked(path):
    text = open(path, encoding="utf-8").read()

    def blank(m):
        return re.sub(r"<td>[^<]*</td>", "<td>*</td>", m.group(0))

    text = re.sub(r'<table class="kv" id="(timings|phases)">.*?</table>', blank, text, flags=re.S)
    return re.sub(r"(<th>peak memory \(RSS\)</th>)<td>[^<]*</td>", r"\1<td>*</td>", text)


def compare(out_a, out_b):
    fa, fb = _files(out_a), _files(out_b)
    ok = True
    for name in sorted(set(fa) ^ set(fb)):
        print(f"ONLY-IN-{'A' if name in fa else 'B'} {name}")
        ok = False
    for name in sorted(set(fa) & set(fb)):
        a, b = os.path.join(out_a, name), os.path.join(out_b, name)
        size = os.path.getsize(a)
        if name == "slicing.json":
            ja, jb = json.load(open(a)), json.load(open(b))
            for k in TIMING_KEYS:
                ja.pop(k, None), jb.pop(k, None)
            same, how = ja == jb, "json-without:" + ",".join(TIMING_KEYS)
        elif name == "report.html":
            same, how = _html_masked(a) == _html_masked(b), "bytes-with-timing-cells-blanked"
        else:
            same, how = _same_bytes(a, b), "bytes"
        print(f"{'SAME' if same else 'DIFF'} {name} {size} {how}")
        ok &= same
    return 0 if ok and fa else 1


# ----------------------------------------------------------------------------- the work laws

PHASES = ("forward", "second_moments", "eigh", "rotations", "spill_io", "waits")
LAWS = {
    "forward": "L·N·(2P + 4·T·q_width)",
    "second_moments": "(2L+1)·N·D²",
    "eigh": "(2L+1)·D³",
    "rotations": "2(1−s)·D·(L·P + 2VD) + 4(1−s)²·L·D³",
    "spill_io": "(2L+1)·N·D",
    "waits": "checkpoint bytes",
    "other": "checkpoint bytes",
}


def shape(D, L, F, H, KV, V, N, T, s, name=""):
    return dict(D=D, L=L, F=F, H=H, KV=KV, V=V, N=N, T=T, s=s, name=name)


SHAPE_7B = shape(4096, 32, 11008, 32, 32, 32000, 8 * 1024, 1024, 0.25, "Llama-2-7B shape, 8×1024 tokens (this bench's default job)")
SHAPE_70B = shape(8192, 80, 28672, 64, 8, 32000, 128 * 2048, 2048, 0.25, "Llama-2-70B shape, 128×2048 tokens")


def layer_params(x):
    hd = x["D"] // x["H"]
    q, kv = x["H"] * hd, x["KV"] * hd
    return x["D"] * q + 2 * x["D"] * kv + q * x["D"] + 3 * x["D"] * x["F"]


def checkpoint_bytes(x):  # BF16, untied head, two norms a layer and the final one
    D, L, V = x["D"], x["L"], x["V"]
    return 2 * (L * (layer_params(x) + 2 * D) + 2 * V * D + D)


def work(x):
    D, L, N, T, V, keep = x["D"], x["L"], x["N"], x["T"], x["V"], 1 - x["s"]
    P = layer_params(x)
    qw = x["H"] * (D // x["H"])
    b = checkpoint_bytes(x)
    return {
        "forward": L * N * (2 * P + 4 * T * qw),
        "second_moments": (2 * L + 1) * N * D * D,
        "eigh": (2 * L + 1) * D ** 3,
        "rotations": 2 * keep * D * (L * P + 2 * V * D) + 4 * keep * keep * L * D ** 3,
        "spill_io": (2 * L + 1) * N * D,
        "waits": b,
        "other": b,
    }


def extrapolate(measured_s, src, dst):
    ws, wd = work(src), work(dst)
    return {p: measured_s[p] * wd[p] / ws[p] for p in measured_s}


# ----------------------------------------------------------------------------- GPU: bench_cuda's model

PEAK_FP32 = PEAK_FP64 = 67e12  # tests/gpu/bench_cuda.c (H200 SXM; the H100 SXM's FP32 and FP64 tensor peaks are the same)


def read_bench_cuda(path):
    kv = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9_]+) (.+)$", line.strip())
        if m:
            kv[m.group(1)] = m.group(2)
    return kv


def gpu_model(x, kv=None):
    """bench_cuda.c's compute-only extrapolation for shape x, from its measured rates
    (kv) or from the datasheet peaks (kv None: eigh is then left out)."""
    D, L, N, F = x["D"], x["L"], x["N"], x["F"]
    hd = D // x["H"]
    Pl = 2 * D * D + 2 * D * x["KV"] * hd + 3 * D * F  # as bench_cuda.c counts it
    T0, NH0, HD0 = 2048, 32, 128
    if kv:
        r_sgemm = float(kv["sgemm_tflops"]) * 1e12
        t_att = float(kv["attention_T2048_h32_s"])
        c = 4096 if D <= 4096 else 8192
        t_cov = float(kv[f"cov_add_D{c}_rows{2 * c}_s"]) / (2 * c)
        t_eigh = float(kv[f"eigh_D{c}_s"])
        r_dgemm = float(kv["rot_rows_fp64_tflops"]) * 1e12
    else:
        r_sgemm = PEAK_FP32
        t_att = 4.0 * T0 * T0 * NH0 * HD0 / PEAK_FP32
        t_cov = D * (D + 1) / PEAK_FP64
        t_eigh = 0.0
        r_dgemm = PEAK_FP64
    per = {
        "forward": 2.0 * N * Pl / r_sgemm,
        "attention": t_att * (N / T0) * (x["H"] / NH0),
        "second_moments": 2.0 * N * t_cov,
        "eigh": 2.0 * t_eigh,
        "rotations": 2.0 * Pl * D / r_dgemm,
    }
    return {k: v * L for k, v in per.items()}


# ----------------------------------------------------------------------------- parsing the runs

PROG = re.compile(r"^slicepipe: layer (\d+)/(\d+) (\S+)\s*\|.*\| elapsed ([0-9.]+)s")


def read_meta(path):
    meta = {}
    for line in open(path):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            meta[k] = v
    return meta


def parse_err(path):
    r = {"progress": [], "phases": {}, "stages": {}, "plan": [], "hash_s": None, "resume": None, "all_rss": None}
    if not os.path.exists(path):
        return r
    in_plan = False
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = PROG.match(line)
        if m:
            in_plan = False
            r["progress"].append((int(m.group(1)), m.group(3), float(m.group(4))))
            continue
        if line.startswith("plan:"):
            in_plan = True
        elif in_plan and not line.startswith("  "):
            in_plan = False
        if in_plan:
            r["plan"].append(line)
        m = re.search(r"input hashed for resume: .* in ([0-9.]+) s", line)
        if m:
            r["hash_s"] = float(m.group(1))
        if line.startswith("slicepipe: resuming"):
            r["resume"] = line[len("slicepipe: "):]
        m = re.match(r"^\s+compute phases: (.*)$", line)
        if m:
            for name, sec in re.findall(r"(\w+) ([0-9.]+)s", m.group(1)):
                r["phases"][name] = float(sec)
        m = re.match(r"^\s+(reader|compute|writer)\s+busy\s+([0-9.]+)s.*wait\s+([0-9.]+)s.*peak RSS ([0-9.]+) MiB", line)
        if m:
            r["stages"][m.group(1)] = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
        m = re.search(r"all processes ([0-9.]+) MiB of the ([0-9.]+) MiB plan", line)
        if m:
            r["all_rss"] = (float(m.group(1)), float(m.group(2)))
    return r


def read_runs(d):
    runs = {}
    for line in open(os.path.join(d, "runs.txt")):
        f = line.split()
        runs[f[0]] = dict(rc=int(f[1]), wall=float(f[2]), kill_at=None if f[3] == "-" else float(f[3]),
                          landed=f[4], max_usage=int(f[5]), failcnt=int(f[6]), oom=int(f[7]),
                          memsw=int(f[8]) if len(f) > 8 else 0)
    return runs


def mem_samples(path):
    peak = dict(usage=0, anon_shmem=0, rss=0, shmem=0, cache=0, n=0)
    if not os.path.exists(path):
        return peak
    for line in open(path):
        f = line.split()
        if len(f) < 6:
            continue
        usage, rss, shm, cache = (int(v) for v in f[1:5])
        peak["usage"] = max(peak["usage"], usage)
        peak["rss"] = max(peak["rss"], rss)
        peak["shmem"] = max(peak["shmem"], shm)
        peak["anon_shmem"] = max(peak["anon_shmem"], rss + shm)
        peak["cache"] = max(peak["cache"], cache)
        peak["n"] += 1
    return peak


def status_layers(path):
    if not os.path.exists(path):
        return None, ""
    text = open(path).read()
    m = re.search(r"^layers:\s+(\d+) of (\d+) done(.*)$", text, re.M)
    return (int(m.group(1)), m.group(3).strip()) if m else (None, "")


def layer_times(progress, end_s=None):
    """[(layer, seconds)] from the progress lines: a layer runs from the first line that
    names it to the first line of the next (the last to the 'done' line)."""
    first = {}
    done = None
    for layer, ph, el in progress:
        if ph == "done":
            done = el
        elif layer not in first:
            first[layer] = el
    keys = sorted(first)
    out = []
    for i, k in enumerate(keys):
        nxt = first[keys[i + 1]] if i + 1 < len(keys) else (done if done is not None else end_s)
        if nxt is not None:
            out.append((k, nxt - first[k]))
    return out


# ----------------------------------------------------------------------------- the report

def fmt_s(s):
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "—"
    if s >= 2 * 86400:
        return f"{s / 86400:.1f} d"
    if s >= 7200:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.2f} s"


def signed(s):
    return ("+" if s >= 0 else "−") + fmt_s(abs(s))


def gib(b):
    return f"{b / 2 ** 30:.2f} GiB"


def mib(b):
    return f"{b / 2 ** 20:,.0f} MiB"


def report(work_dir, results):
    d = os.path.join(work_dir, "runs")
    meta = read_meta(os.path.join(d, "meta.txt"))
    runs = read_runs(d)
    g = lambda k: int(meta[k])
    src = shape(g("hidden"), g("layers"), g("ffn"), g("heads"), g("kv_heads"), g("vocab"),
                g("seqlen") * g("nsamples"), g("seqlen"), float(meta["sparsity"]), "this run")
    L = src["L"]
    A = parse_err(os.path.join(d, "A.err"))
    wall_a = runs["A"]["wall"]
    b_tags = sorted((t for t in runs if t.startswith("B")), key=lambda t: int(t[1:]))
    B = {t: parse_err(os.path.join(d, t + ".err")) for t in b_tags}
    lines = []
    w = lines.append

    is_7b = all(src[k] == SHAPE_7B[k] for k in ("D", "L", "F", "H", "KV", "V", "N", "T", "s"))
    w("# slicepipe at scale: one job in a memory cgroup, killed twice and resumed (issue 26)")
    w("")
    if not is_7b:
        w(f"**A validation run at a small shape (D {src['D']}, {L} layers), not the Llama-2-7B-shaped job.**")
        w("")
    w(f"Generated by `bench/scale_bench.sh` on {meta.get('date', '?')}; {meta.get('version', '?')}, commit {meta.get('commit', '?')}.")
    w("")
    w(f"- Machine: {meta.get('host', '?')}; load average {meta.get('load_start', '?')} at the start, "
      f"{meta.get('load_end', '?')} at the end. The machine is shared: every figure is one run.")
    w(f"- Checkpoint: `{meta.get('synth_cmd', '?')}` (D {src['D']}, {L} layers, FFN {src['F']}, {src['H']}/{src['KV']} heads, "
      f"vocab {src['V']}, BF16; " +
      ("synth reused from an earlier run of the same shape and version" if meta.get('synth_s') == 'reused'
       else f"synth {meta.get('synth_s', '?')} s") + ", outside the cgroup).")
    w(f"- Job: per-layer SliceGPT at sparsity {meta['sparsity']}, {meta['nsamples']}×{meta['seqlen']} = {src['N']} calibration "
      f"tokens, `[resources] memory = \"{meta['memory']}\"`, `threads = {meta['threads']}`, output BF16.")
    w(f"- Memory cgroup (v1): `memory.limit_in_bytes` = {meta['limit']} ({meta['limit_bytes']} bytes), a child of the "
      f"shell's own cgroup; every `slicepipe run` ran in it. The limit covers the page cache the run charges (checkpoint "
      f"reads, spills, output shards) as well as its processes' memory; the page cache is reclaimed at the limit.")
    w("")
    w("The memory plan (`slicepipe run --dry-run`, run A's own plan):")
    w("")
    w("```")
    w("\n".join(x.replace(work_dir.rstrip("/") + "/", "") for x in A["plan"]) if A["plan"] else "(not found)")
    w("```")
    w("")

    # ---- runs
    w("## Runs")
    w("")
    w("| run | what | exit | wall | cgroup peak (max_usage_in_bytes) | peak anon + shmem (sampled) | limit hits (failcnt) | OOM kills |")
    w("|---|---|---|---|---|---|---|---|")
    for t in ["A"] + b_tags:
        r = runs[t]
        m = mem_samples(os.path.join(d, t + ".mem"))
        what = ("uninterrupted" if t == "A" else "resume to the end" if r["kill_at"] is None else
                f"SIGKILL to its process group at {r['kill_at']:.1f} s" if r["landed"] == "1" else
                f"**ended before its kill at {r['kill_at']:.1f} s**")
        w(f"| {t} | {what} | {r['rc']} | {fmt_s(r['wall'])} | {mib(r['max_usage'])} | {mib(m['anon_shmem'])} "
          f"(anon {mib(m['rss'])}, shmem {mib(m['shmem'])}; {m['n']} samples) | {r['failcnt']} | {r['oom']} |")
    total_b = sum(runs[t]["wall"] for t in b_tags)
    w("")
    w(f"Run B in all: {fmt_s(total_b)} over {len(b_tags)} processes, against {fmt_s(wall_a)} for run A "
      f"({signed(total_b - wall_a)}, {total_b / wall_a:.2f}×).")
    peak_all = max(runs[t]["max_usage"] for t in runs)
    anon_all = max(mem_samples(os.path.join(d, t + ".mem"))["anon_shmem"] for t in runs)
    w("")
    w(f"**Peak memory of the cgroup:** {mib(peak_all)} (`memory.max_usage_in_bytes`, page cache included) against the "
      f"{meta['limit']} limit; the non-reclaimable part (anonymous + shmem: the processes' heaps and the rings' memfds), "
      f"sampled every {meta.get('poll', '1')} s, peaked at {mib(anon_all)}.")
    if A["all_rss"]:
        w(f"The tool's own figure for run A: all processes {A['all_rss'][0]:,.1f} MiB of the {A['all_rss'][1]:,.1f} MiB plan "
          f"(summed peak RSS; ring pages counted in both processes that map them).")
    if any(runs[t]["oom"] for t in runs):
        w("")
        w("**The OOM killer fired inside the cgroup** (see the table).")
    w("")

    # ---- per phase, per layer
    w("## Run A: where the time went")
    w("")
    ph = A["phases"]
    tot_ph = sum(ph.get(p, 0.0) for p in PHASES)
    w(f"Wall {fmt_s(wall_a)}; input hashed for resume in {fmt_s(A['hash_s'])}; compute stage phases "
      f"(the run summary's `compute phases` line):")
    w("")
    w("| phase | seconds | share of wall |")
    w("|---|---|---|")
    for p in PHASES:
        w(f"| {p} | {ph.get(p, float('nan')):.2f} | {100 * ph.get(p, 0) / wall_a:.1f}% |")
    w(f"| other (wall less the phases: start-up, input hashing, emitting tensors, report) | {wall_a - tot_ph:.2f} | "
      f"{100 * (wall_a - tot_ph) / wall_a:.1f}% |")
    w("")
    if A["stages"]:
        w("Stages (busy / wait / peak RSS): " + "; ".join(
            f"{k} {v[0]:.1f} s / {v[1]:.1f} s / {v[2]:.1f} MiB" for k, v in A["stages"].items()) + ".")
        w("")
    lt = layer_times(A["progress"], wall_a)
    if lt:
        secs = [s for _, s in lt]
        w(f"Per layer (from the progress lines the supervisor prints each time the compute stage enters a layer; it "
          f"polls every 0.25 s): median {statistics.median(secs):.2f} s, min {min(secs):.2f} s, max {max(secs):.2f} s. "
          f"Layer 1 includes the embedding's PCA and rotation, layer {L} the head's.")
        w("")
        w("| layer | " + " | ".join(str(k) for k, _ in lt) + " |")
        w("|---|" + "---|" * len(lt))
        w("| seconds | " + " | ".join(f"{s:.1f}" for _, s in lt) + " |")
        w("")

    # ---- kills
    w("## The kills and what each cost")
    w("")
    fr = meta.get("kill_fractions", "").split()
    w(f"Kill points: seed {meta.get('seed')}, fractions {', '.join(fr)} of run A's wall time, drawn uniformly in "
      f"[0.1, 0.9] and sorted; kill i lands (p_i − p_(i−1)) × wall_A after the start of the run it interrupts. Each is "
      f"`kill -KILL -- -PGID` of the run's process group (supervisor and its three stages); `slicepipe status` after it "
      f"gives the layers durable.")
    w("")
    w("Cost of a kill = the work it threw away (from the start, in the killed run, of the first layer not durable, to "
      "the kill: those layers are redone) + the start-up of the run that resumes it beyond run A's own start-up "
      "(re-hashing the journaled outputs, the spill, the basis and the inputs of the done layers).")
    w("")
    w("| kill | at (s into its run) | layers durable before → after (status) | compute had reached layer | layers redone | work lost | resume start-up (A's) | cost | cost / layer of A |")
    w("|---|---|---|---|---|---|---|---|---|")
    a_first = A["progress"][0][2] if A["progress"] else 0.0
    mean_layer = wall_a / L
    prev_n, sum_cost = 0, 0.0
    kill_tags = [t for t in b_tags if runs[t]["kill_at"] is not None]
    for i, t in enumerate(kill_tags):
        r, P = runs[t], B[t]
        if r["landed"] != "1":
            w(f"| {i + 1} ({t}) | planned at {r['kill_at']:.1f} | did not land: the run ended after {r['wall']:.1f} s "
              f"| | | | | | |")
            continue
        n, extra = status_layers(os.path.join(d, t + ".status"))
        t_kill = r["wall"]
        reached = P["progress"][-1][0] if P["progress"] else None
        start_first_lost = next((el for layer, phs, el in P["progress"] if layer == (n or 0) + 1), None)
        lost = t_kill - start_first_lost if start_first_lost is not None else t_kill
        k = b_tags.index(t) + 1
        nxt_first = B[b_tags[k]]["progress"][0][2] if k < len(b_tags) and B[b_tags[k]]["progress"] else None
        over = (nxt_first - a_first) if nxt_first is not None else float("nan")  # nan: no progress line
        cost = lost + (over if not math.isnan(over) else 0)
        sum_cost += cost
        lo = (n or 0) + 1
        redone = ("none (start-up only)" if not reached or reached < lo else str(lo) if reached == lo else f"{lo}–{reached}")
        # With the embedding durable and no layer, the embedding's own time (inside layer 1's) counts as lost too.
        bound = "≤ " if n == 0 and "embedding done" in extra else ""
        w(f"| {i + 1} ({t}) | {t_kill:.1f} | {prev_n} → {n} {extra} | {reached or '—'} "
          f"| {redone} | {bound}{fmt_s(lost)} | {fmt_s(nxt_first)} ({fmt_s(a_first)}) | {bound}{fmt_s(cost)} | {cost / mean_layer:.2f} |")
        prev_n = n or 0
    w("")
    w("Times come from the progress lines (0.25 s resolution). “≤”: the kill came after the embedding was durable "
      "but before layer 1 was, and the progress lines do not say when the embedding ended, so its time counts as lost.")
    w("")
    w(f"Sum of the kill costs {fmt_s(sum_cost)}; run B took {signed(total_b - wall_a)} against run A (the rest is "
      f"run-to-run noise on a shared machine). Resume messages: " +
      "; ".join(f"{t}: “{B[t]['resume']}”" for t in b_tags if B[t]["resume"]) + ".")
    w("")

    # ---- comparison
    w("## Output of the killed-and-resumed run against the uninterrupted one")
    w("")
    cmp_path = os.path.join(d, "compare.txt")
    cmp_lines = open(cmp_path).read().split("\n") if os.path.exists(cmp_path) else []
    cmp_lines = [x for x in cmp_lines if x.strip()]
    bad = [x for x in cmp_lines if not x.startswith("SAME")]
    verdict = "**identical**" if cmp_lines and not bad else "**DIFFERENT**"
    w(f"Result: {verdict} ({len(cmp_lines) - len(bad)} of {len(cmp_lines)} files agree; `bench/scale_report.py compare`).")
    w("")
    w("| file | bytes | compared as | result |")
    w("|---|---|---|---|")
    for x in cmp_lines:
        f = x.split()
        if f[0] in ("SAME", "DIFF"):
            w(f"| {f[1]} | {int(f[2]):,} | {f[3]} | {f[0].lower()} |")
        else:
            w(f"| {f[1]} | | | {f[0].lower()} |")
    w("")
    w("Every file but the job folder `.slicepipe/` is compared. `slicing.json` and `report.html` are the two that hold "
      "the run's own measurements (wall and phase times, each stage's bytes and peak RSS: a resumed run reads and "
      "writes less and takes longer), so those fields alone are left out: `slicing.json` without `timing`, `stages` "
      "and `peak_rss_bytes`, `report.html` with its timings and phases tables and its peak-RSS cell blanked. "
      "`.slicepipe/` holds the journal and the lock: the job's record (its identity names the output path, which "
      "differs between A and B, and a resumed job journals its own history), not the model.")
    w("")

    # ---- disk
    w("## Disk")
    w("")
    disk = {}
    if os.path.exists(os.path.join(d, "disk.txt")):
        for line in open(os.path.join(d, "disk.txt")):
            k, v = line.split()
            disk[k] = int(v)
    spill = next((x.strip() for x in A["plan"] if x.strip().startswith("disk:")), "")
    if disk:
        tot = disk["model"] + disk["out-a"] + disk["out-b"]
        w(f"- checkpoint {gib(disk['model'])}; output A {gib(disk['out-a'])}, output B {gib(disk['out-b'])} (each with "
          f"its job folder, {mib(disk['jobdir-a'])} in A after the run: journal and lock); in all {gib(tot)}.")
    w(f"- spills, during the run only (in the output's `.slicepipe/`, removed at the end), from the plan: `{spill}`.")
    w("")

    # ---- extrapolation
    w("## Extrapolation from run A's phase rates")
    w("")
    measured = {p: ph.get(p, 0.0) for p in PHASES}
    measured["other"] = max(wall_a - tot_ph, 0.0)
    targets = []
    if (src["D"], src["L"], src["F"], src["H"], src["KV"], src["V"], src["N"], src["T"]) != tuple(
            SHAPE_7B[k] for k in ("D", "L", "F", "H", "KV", "V", "N", "T")):
        targets.append(SHAPE_7B)
    targets.append(SHAPE_70B)
    ws = work(src)
    w("Each phase is scaled by the work it does (the module docstring of `bench/scale_report.py`; N tokens, T window, "
      "D width, L layers, P a layer's parameters, V vocabulary, s sparsity). The rates are run A's at "
      f"D {src['D']}; larger matrices run GEMMs at least as fast on a CPU, but eigh at D 8192 (a 512 MiB float64 "
      "matrix) leaves the caches and is likely slower than D³ predicts, and at 70B the spills (17 GB) no longer fit "
      "the page cache, so spill_io then runs at the disk's rate. The 70B job also needs more memory than this "
      "bench's cgroup: README's table gives 7.9 GiB at least.")
    w("")
    hdr = "| phase | law | run A (s) | " + " | ".join(t["name"] for t in targets) + " |"
    w(hdr)
    w("|---|---|---|" + "---|" * len(targets))
    ests = [extrapolate(measured, src, t) for t in targets]
    for p in list(PHASES) + ["other"]:
        w(f"| {p} | {LAWS[p]} | {measured[p]:.2f} | " + " | ".join(
            f"{fmt_s(e[p])} (×{work(t)[p] / ws[p]:,.0f})" for e, t in zip(ests, targets)) + " |")
    w(f"| **total** | | {wall_a:.2f} | " + " | ".join(f"**{fmt_s(sum(e.values()))}**" for e in ests) + " |")
    w(f"| per layer | | {wall_a / L:.2f} | " + " | ".join(fmt_s(sum(e.values()) / t['L']) for e, t in zip(ests, targets)) + " |")
    w("")
    est70 = sum(ests[-1].values())
    thr = int(meta.get("threads", "2"))
    w(f"**Llama-2-70B (D 8192, 80 layers, FFN 28672, 64/8 heads, 128×2048 tokens):**")
    w("")
    w(f"- **this machine ({thr} threads):** {fmt_s(est70)}.")
    w(f"- **a 32-core AMX workstation:** {fmt_s(est70 * thr / 32)}: this machine's estimate × {thr}/32, by cores "
      f"alone. Nothing else is modeled: not AMX (the default f32 GEMMs do not use it; `precision = \"bf16\"` on the "
      f"onednn backend would), not the memory bandwidth, not how eigh and the disk scale with cores.")
    host = ests[-1]["spill_io"] + ests[-1]["waits"] + ests[-1]["other"]
    spill_src, spill_70 = 8 * work(src)["spill_io"], 8 * work(SHAPE_70B)["spill_io"]  # float32, read and written
    if measured["spill_io"] > 0:
        w(f"- **the spills at 70B:** {spill_70 / 1e12:.2f} TB read and written in all (two passes a layer, N·D float32 "
          f"each way); run A moved {spill_src / 1e9:.2f} GB through its spills at {spill_src / measured['spill_io'] / 1e9:.2f} "
          f"GB/s (page cache), the rate every estimate here assumes for them.")
    bc = meta.get("bench_cuda") or ""
    kv = read_bench_cuda(bc) if bc and os.path.exists(bc) else None
    gm = gpu_model(SHAPE_70B, kv)
    gtot = sum(gm.values())
    if kv:
        w(f"- **one GPU, measured rates** (`{os.path.basename(bc)}`: {kv.get('identity', '?')}): compute "
          f"{fmt_s(gtot)} by `tests/gpu/bench_cuda.c`'s model (its own figure: extrap_70b_total_s = "
          f"{kv.get('extrap_70b_total_s', '?')} s), + {fmt_s(host)} of host I/O and start-up scaled from this machine "
          f"(spill_io, waits, other) = **{fmt_s(gtot + host)}**.")
    else:
        w(f"- **one H100 or H200:** no bench_cuda measurement was given (`SCALE_BENCH_CUDA`), so only "
          f"`tests/gpu/bench_cuda.c`'s model at its datasheet peaks (67 TFLOP/s FP32 and FP64 tensor, the same on "
          f"H100 SXM and H200 SXM), eigh left out: compute ≥ {fmt_s(gtot)} "
          f"({', '.join(f'{k} {fmt_s(v)}' for k, v in gm.items() if v)}), + {fmt_s(host)} of host I/O and start-up "
          f"scaled from this machine = **≥ {fmt_s(gtot + host)}**, a lower bound, not a measurement. "
          f"`tests/gpu/device_check.sh` measures the rates (its bench.txt); pass it as `SCALE_BENCH_CUDA` and rerun "
          f"with `SCALE_REPORT_ONLY=1`.")
    w("")
    w("The GPU model (`bench_cuda.c`, per layer): forward 2·N·P / sgemm rate, attention from its T 2048 × 32-head "
      "timing × N/T × heads/32, two second moments at its per-row dsyrk time, two eighs, rotations 2·P·D / float64 "
      "rate; I/O and host work are not in it, and the CUDA backend does not yet overlap copies with compute "
      "(`gpu/README.md`).")
    w("")
    text = "\n".join(lines)
    tmp = results + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, results)
    print(text)
    return 0


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "compare":
        return compare(sys.argv[2], sys.argv[3])
    if len(sys.argv) == 4 and sys.argv[1] == "report":
        return report(sys.argv[2], sys.argv[3])
    sys.stderr.write(__doc__)
    return 64


if __name__ == "__main__":
    sys.exit(main())
