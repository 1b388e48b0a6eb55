#!/usr/bin/python3
"""test_blas_core.py — slicepipe runs OpenBLAS's best kernels for this CPU with
nothing set (linalg/blas_core.h, docs/determinism.md "Which kernels").

usage: test_blas_core.py SLICEPIPE unset|prescott WORKDIR

The best core is worked out here from /proc/cpuinfo, independently of
slicepipe's own cpuid code:
  avx512f, avx512cd, avx512bw, avx512dq, avx512vl  SkylakeX, or with avx512_bf16
                                                   Cooperlake (OpenBLAS 0.3.21
                                                   cannot be forced to it and stays
                                                   on SkylakeX: the same f32/f64
                                                   kernels, so either is accepted)
  avx2 and fma                                     Zen on AMD, Haswell otherwise
A CPU with neither is skipped (exit 77): there is nothing to upgrade to.

unset:    OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) removed, as a user runs it.
prescott: OPENBLAS_CORETYPE=Prescott, the SSE3 kernels OpenBLAS 0.3.21 falls back
          to on CPUs it does not know (Sapphire Rapids). Also checks that
          --version and the summary say what the kernels were chosen over, and
          that SLICEPIPE_KEEP_OPENBLAS_CORE=1 keeps Prescott (so the
          environment really reaches OpenBLAS, and the first check could fail).

In both, `slicepipe --version` names the best core with nothing on stderr, and
(under strace, when it is there) re-executes itself with OPENBLAS_THREAD_TIMEOUT=4
where the user has not set it and keeps a value the user set; and
a small `slicepipe run` names it in its summary: the backend line (the backend
identity, which the run identity hashes) and the kernels line. Exit 0, 1 on a
failure, 77 skipped.
"""
import os
import re
import shutil
import subprocess
import sys

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def cpuinfo():
    flags, vendor = set(), ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("vendor_id") and not vendor:
                vendor = line.split(":", 1)[1].strip()
    return flags, vendor


def best_cores(flags, vendor):
    if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return ["Cooperlake", "SkylakeX"] if "avx512_bf16" in flags else ["SkylakeX"]
    if {"avx2", "fma"} <= flags:
        return ["Zen"] if vendor == "AuthenticAMD" else ["Haswell"]
    return []


def env_for(mode, keep=False):
    e = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "SLICEPIPE_KEEP_OPENBLAS_CORE", "SLICEPIPE_OPENBLAS_REEXEC",
              "SLICEPIPE_KILL_AT"):
        e.pop(k, None)
    if mode == "prescott":
        e["OPENBLAS_CORETYPE"] = "Prescott"
    if keep:
        e["SLICEPIPE_KEEP_OPENBLAS_CORE"] = "1"
    return e


def version_core(sp, env):
    r = subprocess.run([sp, "--version"], capture_output=True, text=True, env=env)
    m = re.search(r"^kernels: OpenBLAS \S+, (\S+) kernels \((.*)\)$", r.stdout, re.M)
    return r, (m.group(1) if m else None), (m.group(0) if m else "(no kernels line)")


def execs(sp, env, work):
    """The execve calls of `slicepipe --version` under strace: [(path, {var: value})] for the
    OPENBLAS_THREAD_TIMEOUT and SLICEPIPE_OPENBLAS_REEXEC each one passed; None without strace."""
    strace = shutil.which("strace")
    if not strace:
        return None
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, "execve.txt")
    r = subprocess.run([strace, "-f", "-qq", "-v", "-s", "4096", "-e", "trace=execve", "-o", log, sp, "--version"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0 or not os.path.exists(log):
        return None  # ptrace not permitted here
    out = []
    for line in open(log):
        m = re.search(r'execve\("([^"]*)"', line)
        if m and "= 0" in line.rsplit(")", 1)[-1]:
            out.append((m.group(1), dict(re.findall(r'"(OPENBLAS_THREAD_TIMEOUT|SLICEPIPE_OPENBLAS_REEXEC)=([^"]*)"',
                                                    line))))
    return out


def sleep_checks(sp, env, mode, work):
    """OpenBLAS's idle threads sleep at once (blas_core.h, "Idle threads"): where the user has not
    set OPENBLAS_THREAD_TIMEOUT, slicepipe re-executes itself once with it at 4 (the marker's first
    field 1); a value the user set is passed on as it is, and no exec is made for it."""
    e = dict(env)
    e.pop("OPENBLAS_THREAD_TIMEOUT", None)
    x = execs(sp, e, work)
    if x is None:
        print(f"skip {mode}: the idle-thread checks need strace and ptrace (not available here)")
        return
    last = x[-1][1] if x else {}
    check(len(x) >= 2 and last.get("OPENBLAS_THREAD_TIMEOUT") == "4"
          and last.get("SLICEPIPE_OPENBLAS_REEXEC", "").startswith("1:"),
          f"{mode}: unset by the user, OPENBLAS_THREAD_TIMEOUT=4 reaches the re-executed process ({x})")
    e["OPENBLAS_THREAD_TIMEOUT"] = "7"
    x = execs(sp, e, work)
    check(all(v.get("OPENBLAS_THREAD_TIMEOUT") == "7" for _, v in x)
          and all(v.get("SLICEPIPE_OPENBLAS_REEXEC", "0:").startswith("0:") for _, v in x)
          and (mode != "unset" or len(x) == 1 or x[-1][1].get("SLICEPIPE_OPENBLAS_REEXEC")),
          f"{mode}: the user's OPENBLAS_THREAD_TIMEOUT=7 is kept, with no exec of its own ({x})")


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ("unset", "prescott"):
        print(__doc__)
        return 64
    sp, mode, work = os.path.abspath(sys.argv[1]), sys.argv[2], os.path.abspath(sys.argv[3])
    flags, vendor = cpuinfo()
    want = best_cores(flags, vendor)
    if not want:
        print(f"SKIP: this CPU ({vendor or 'unknown vendor'}) has neither AVX2+FMA nor AVX-512: "
              "OpenBLAS has no better kernels for it than the ones it picks")
        return 77
    print(f"this CPU's best OpenBLAS core: {' or '.join(want)} ({vendor})")
    env = env_for(mode)

    r, core, line = version_core(sp, env)
    check(r.returncode == 0, f"{mode}: slicepipe --version exits 0 ({r.returncode})")
    check(core in want, f"{mode}: --version names the core in use, {core}, this CPU's best ({line})")
    # stderr stays for one clear message when a command fails: nothing there
    check(r.stderr.strip() == "", f"{mode}: nothing on stderr ({r.stderr.strip()!r})")
    if mode == "prescott":
        check("OPENBLAS_CORETYPE=Prescott" in line, f"prescott: --version says what it chose the kernels over ({line})")
        k, kcore, kline = version_core(sp, env_for(mode, keep=True))
        check(k.returncode == 0 and kcore == "Prescott" and "SLICEPIPE_KEEP_OPENBLAS_CORE" in kline,
              f"prescott: SLICEPIPE_KEEP_OPENBLAS_CORE=1 keeps Prescott and says so ({kline})")

    sleep_checks(sp, env, mode, work)

    # A run names the kernels it used in its summary (the backend identity).
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    model, out = os.path.join(work, "model"), os.path.join(work, "out")
    s = subprocess.run([sp, "synth", model, "--hidden", "64", "--layers", "2", "--ffn", "128", "--heads", "4",
                        "--vocab", "64", "--tokens", "2048", "--quiet"], capture_output=True, text=True, env=env)
    check(s.returncode == 0, f"{mode}: synth ({s.stderr.strip()[-200:]})")
    man = os.path.join(work, "job.toml")
    with open(man, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{model}/calib.npy"\nseqlen = 32\nnsamples = 8\n'
                f'[slicing]\nsparsity = 0.25\n[output]\npath = "{out}"\n[resources]\nthreads = 1\n')
    r = subprocess.run([sp, "run", man, "--quiet"], capture_output=True, text=True, env=env)
    m = re.search(r"^  backend +(.*)$", r.stdout, re.M)
    used = re.search(r"kernel=(\S+)", m.group(1)).group(1) if m and "kernel=" in m.group(1) else None
    check(r.returncode == 0 and used == core,
          f"{mode}: the run's summary names the kernels it ran, {used}, as --version does ({m.group(0).strip() if m else r.stderr.strip()[-300:]})")
    k = re.search(r"^  kernels +(.*)$", r.stdout, re.M)
    check(k is not None and f", {core} kernels (" in k.group(1)
          and (mode != "prescott" or "OPENBLAS_CORETYPE=Prescott" in k.group(1)),
          f"{mode}: the summary's kernels line names them{' and what they were chosen over' if mode == 'prescott' else ''} "
          f"({k.group(0).strip() if k else 'none'})")

    print(f"{len(failures)} failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
