#!/usr/bin/python3
"""test_pipeline.py — the stage processes of `slicepipe run`, for real.

usage: test_pipeline.py SLICEPIPE WORKDIR [--sanitized]

With --sanitized (an ASan/UBSan build) the RSS figures are printed but not
held to the budget: shadow memory and the allocator's quarantine inflate them.

- A synthetic model whose checkpoint (~178 MB) is larger than the memory
  budget (125 MB; its layer passes of 8 windows of 128 take 20 MB of it) is
  sliced within the budget: the tool's own summed peak RSS
  and /proc sampling of every process of the run (VmHWM) both stay under it.
- The same job at 512 MiB, killed at the writer's second commit point and
  resumed: the plan counts the supervisor's hashing buffer (the staging
  size), the resume's summed peak RSS stays within its plan, and its reader
  and writer hold no more than an uninterrupted run's (the supervisor's freed
  hashing buffers of the resume checks are not inherited at the fork).
- --io=pread and forced short reads give byte-identical output.
- A stage killed with SIGKILL: the supervisor notices, stops the others and
  exits non-zero within seconds naming the stage; no process is left.
- The supervisor killed with SIGKILL: the stages exit too (no orphans).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out


def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def manifest(work, name, nsamples, memory, extra=""):
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as f:
        f.write(f'[model]\npath = "model"\n[calibration]\ntokens = "model/calib.npy"\nseqlen = 128\n'
                f'nsamples = {nsamples}\n[slicing]\nsparsity = 0.25\n[output]\npath = "{name}"\n'
                f'[resources]\nmemory = "{memory}"\n{extra}')
    return path


def shard_bytes(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d)) if f.endswith(".safetensors")}


def main():
    sp, work = sys.argv[1], os.path.abspath(sys.argv[2])
    sanitized = "--sanitized" in sys.argv[3:]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    r = subprocess.run([sp, "synth", os.path.join(work, "model"), "--hidden", "512", "--layers", "4", "--ffn", "1408",
                        "--heads", "8", "--kv-heads", "4", "--vocab", "32000", "--dtype", "f32", "--tokens", "16384",
                        "--quiet"], capture_output=True, text=True)
    check(r.returncode == 0, f"synth ({r.stderr.strip()})")
    ckpt = sum(os.path.getsize(os.path.join(work, "model", f)) for f in os.listdir(os.path.join(work, "model"))
               if f.endswith(".safetensors"))
    budget = 125_000_000
    check(ckpt > budget, f"checkpoint {ckpt / 1e6:.0f} MB is larger than the {budget / 1e6:.0f} MB budget")

    # Under budget, with /proc sampling of every process of the run.
    p = subprocess.Popen([sp, "run", manifest(work, "a", 32, "125MB"), "--quiet"], stderr=subprocess.PIPE, text=True)
    peak = {}
    while p.poll() is None:
        for pid in [p.pid] + children(p.pid):
            peak[pid] = max(peak.get(pid, 0), hwm(pid))
        time.sleep(0.02)
    err = p.stderr.read()
    check(p.returncode == 0, f"run under a 125 MB budget exits 0 ({err.strip()[-300:]})")
    if p.returncode == 0:
        st = json.load(open(os.path.join(work, "a", "slicing.json")))["stages"]
        tool = st["peak_rss_sum_bytes"]
        check(tool <= budget or sanitized, f"{'(sanitized build, not held to the budget) ' if sanitized else ''}tool-reported summed peak RSS {tool / 1e6:.1f} MB <= 125 MB "
                              f"(plan {st['memory_plan_bytes'] / 1e6:.1f} MB)")
        sampled = sum(peak.values())
        check(len(peak) >= 4 and (sampled <= budget or sanitized),
              f"/proc-sampled summed VmHWM of {len(peak)} processes {sampled / 1e6:.1f} MB <= 125 MB")
        check(st["compute"]["busy_seconds"] > 0 and st["reader"]["bytes_read"] >= ckpt * 0.9,
              f"accounting: reader read {st['reader']['bytes_read'] / 1e6:.0f} MB, compute busy "
              f"{st['compute']['busy_seconds']:.2f}s")

        # Killed after a layer and resumed: before it forks the stages, the
        # resume hashes the journaled outputs, the spill (8 MiB here) and the
        # basis in the supervisor, in chunks of the staging size (8 MiB at a
        # 512 MiB budget). The plan counts that buffer; the summed peak stays
        # within the plan, and the reader and writer peak where an
        # uninterrupted run of the same job does.
        mf0, mf = manifest(work, "r0", 32, "512MiB"), manifest(work, "r", 32, "512MiB")
        r = subprocess.run([sp, "run", mf, "--dry-run"], capture_output=True, text=True)
        m = re.search(r"reader staging ([0-9.]+) MiB, the supervisor's hashing buffer ([0-9.]+) MiB", r.stdout)
        check(r.returncode == 0 and m and m.group(1) == m.group(2) == "8.0",
              f"the plan counts the supervisor's hashing buffer, the staging size ({m.group(0) if m else r.stdout[-300:]})")
        r0 = subprocess.run([sp, "run", mf0, "--quiet"], capture_output=True, text=True)
        r = subprocess.run([sp, "run", mf, "--quiet"], capture_output=True, text=True,
                           env=dict(os.environ, SLICEPIPE_KILL_AT="writer:2"))
        r2 = subprocess.run([sp, "run", mf], capture_output=True, text=True)  # not quiet: it says it resumes
        ok = r0.returncode == 0 and r.returncode != 0 and r2.returncode == 0 and "resuming after a layer" in r2.stderr
        check(ok, f"512 MiB: uninterrupted (exit {r0.returncode}); killed at writer:2 (exit {r.returncode}), resumed "
                  f"(exit {r2.returncode})" + ("" if ok else f": {r0.stderr.strip()[-200:]} / {r.stderr.strip()[-200:]} / "
                                              f"{r2.stderr.strip()[-200:]}"))
        if ok:
            s0 = json.load(open(os.path.join(work, "r0", "slicing.json")))["stages"]
            rs = json.load(open(os.path.join(work, "r", "slicing.json")))["stages"]
            mib = lambda b: f"{b / 1048576:.1f} MiB"
            held = not sanitized
            check(rs["peak_rss_sum_bytes"] <= rs["memory_plan_bytes"] or not held,
                  f"resume: summed peak RSS {mib(rs['peak_rss_sum_bytes'])} within the "
                  f"{mib(rs['memory_plan_bytes'])} plan")
            for name in ("reader", "writer"):
                a, b = s0[name]["peak_rss_bytes"], rs[name]["peak_rss_bytes"]
                check(b <= a + (1 << 20) or not held,
                      f"resume: the {name} peaks at {mib(b)}, the uninterrupted run's {mib(a)} (+1 MiB at most)")

    # [resources] activations: the spills held in memory or streamed from
    # disk give the same bytes, and a job killed with its activations in
    # memory resumes from the files its boundaries wrote, streaming them.
    ok0 = os.path.isdir(os.path.join(work, "r0"))
    plans = {}
    for mode in ("memory", "disk"):
        r = subprocess.run([sp, "run", manifest(work, "act-" + mode, 32, "512MiB", f'activations = "{mode}"'), "--dry-run"],
                           capture_output=True, text=True)
        plans[mode] = r.stdout
    check("held in memory too" in plans["memory"] and "; streamed)" in plans["disk"],
          "the plan says where the activations live (memory: held in memory too; disk: streamed)")
    r = subprocess.run([sp, "run", manifest(work, "act-disk", 32, "512MiB", 'activations = "disk"'), "--quiet"],
                       capture_output=True, text=True)
    check(ok0 and r.returncode == 0 and shard_bytes(os.path.join(work, "act-disk")) == shard_bytes(os.path.join(work, "r0")),
          f"activations = \"disk\" gives the bytes of the run with them in memory ({r.stderr.strip()[-200:]})")
    mf = manifest(work, "act-x", 32, "512MiB", 'activations = "memory"')
    r = subprocess.run([sp, "run", mf, "--quiet"], capture_output=True, text=True, env=dict(os.environ, SLICEPIPE_KILL_AT="writer:3"))
    mf = manifest(work, "act-x", 32, "512MiB", 'activations = "disk"')
    r2 = subprocess.run([sp, "run", mf], capture_output=True, text=True)
    check(ok0 and r.returncode != 0 and r2.returncode == 0 and "resuming after a layer" in r2.stderr
          and shard_bytes(os.path.join(work, "act-x")) == shard_bytes(os.path.join(work, "r0")),
          f"killed with its activations in memory (exit {r.returncode}), resumed streaming them from disk "
          f"(exit {r2.returncode}): byte-identical" + ("" if r2.returncode == 0 else f" ({r2.stderr.strip()[-200:]})"))
    # With the activations in memory a layer's boundary is written and sent
    # from behind, on a thread of its own, while the next layer computes;
    # its commit point is on that thread. Killed there, twice, the job
    # resumes to the same bytes; the time behind the math is reported
    # apart from the phases, and only in memory.
    mf = manifest(work, "act-b", 32, "512MiB", 'activations = "memory"')
    codes = []
    for at in ("compute:2", "compute:2"):
        r = subprocess.run([sp, "run", mf, "--quiet"], capture_output=True, text=True, env=dict(os.environ, SLICEPIPE_KILL_AT=at))
        codes.append(r.returncode)
    r2 = subprocess.run([sp, "run", mf], capture_output=True, text=True)
    check(ok0 and all(c != 0 for c in codes) and r2.returncode == 0 and "resuming after a layer" in r2.stderr
          and shard_bytes(os.path.join(work, "act-b")) == shard_bytes(os.path.join(work, "r0")),
          f"killed at compute:2, twice, with its boundaries sent from behind (exits {codes}), resumed "
          f"(exit {r2.returncode}): byte-identical" + ("" if r2.returncode == 0 else f" ({r2.stderr.strip()[-200:]})"))
    behind = {}
    for mode in ("memory", "disk"):
        try:
            sj = json.load(open(os.path.join(work, "act-b" if mode == "memory" else "act-disk", "slicing.json")))
            behind[mode] = sj["stages"]["boundaries_behind_seconds"]
        except (OSError, ValueError, KeyError):
            behind[mode] = None
    check(behind["memory"] is not None and behind["memory"] > 0 and behind["disk"] == 0,
          f"slicing.json's boundaries_behind_seconds: {behind['memory']} in memory, {behind['disk']} on disk (> 0 and 0)")
    r = subprocess.run([sp, "run", manifest(work, "act-small", 32, "125MB", 'activations = "memory"'), "--dry-run"],
                       capture_output=True, text=True)
    check(r.returncode == 64 and "activations = \"memory\"" in r.stderr and "raise memory" in r.stderr,
          f"activations = \"memory\" that does not fit the budget: exit 64 naming it ({r.returncode}: {r.stderr.strip()[-200:]})")

    # pread and short reads give the same bytes.
    base = shard_bytes(os.path.join(work, "a"))
    r = subprocess.run([sp, "run", manifest(work, "b", 32, "125MB"), "--quiet", "--io=pread"], capture_output=True,
                       text=True)
    check(r.returncode == 0 and shard_bytes(os.path.join(work, "b")) == base, "--io=pread output byte-identical")
    env = dict(os.environ, SLICEPIPE_SHORT_READS="1")
    r = subprocess.run([sp, "run", manifest(work, "c", 4, "125MB"), "--quiet"], capture_output=True, text=True, env=env)
    r2 = subprocess.run([sp, "run", manifest(work, "c2", 4, "125MB"), "--quiet"], capture_output=True, text=True)
    check(r.returncode == 0 and r2.returncode == 0
          and shard_bytes(os.path.join(work, "c")) == shard_bytes(os.path.join(work, "c2")),
          "forced short reads: output byte-identical")

    # A stage killed.
    for victim in (1, 0):  # compute, then reader (by fork order)
        p = subprocess.Popen([sp, "run", manifest(work, f"k{victim}", 128, "125MB"), "--quiet"],
                             stderr=subprocess.PIPE, text=True)
        kids = []
        t_end = time.time() + 20
        while len(kids) < 3 and time.time() < t_end and p.poll() is None:
            kids = sorted(children(p.pid))
            time.sleep(0.01)
        if len(kids) < 3:
            check(False, f"stages did not start ({len(kids)})")
            p.kill()
            continue
        time.sleep(0.3)
        os.kill(kids[victim], signal.SIGKILL)
        t0 = time.time()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        dt = time.time() - t0
        err = p.stderr.read()
        name = ["reader", "compute", "writer"][victim]
        left = [k for k in kids if hwm(k) > 0]  # zombies and reaped processes have no VmHWM
        check(p.returncode not in (0, None) and dt < 5 and name in err and "signal 9" in err and not left,
              f"{name} killed: supervisor exits {p.returncode} in {dt:.2f}s naming it ({err.strip()[-160:]})")

    # The supervisor killed.
    p = subprocess.Popen([sp, "run", manifest(work, "s", 128, "125MB"), "--quiet"], stderr=subprocess.DEVNULL)
    kids = []
    t_end = time.time() + 20
    while len(kids) < 3 and time.time() < t_end:
        kids = children(p.pid)
        time.sleep(0.01)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    t0 = time.time()
    while time.time() - t0 < 5 and any(os.path.exists(f"/proc/{k}") and hwm(k) > 0 for k in kids):
        time.sleep(0.05)
    alive = [k for k in kids if os.path.exists(f"/proc/{k}") and hwm(k) > 0]
    check(len(kids) == 3 and not alive, f"supervisor killed: its {len(kids)} stages are gone within "
                                        f"{time.time() - t0:.2f}s (left: {alive})")

    print(f"{len(failures)} failed" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


main()
