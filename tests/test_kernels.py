#!/usr/bin/python3
"""test_kernels.py — slicepipe's bits and its thread count under every OpenBLAS
kernel a user's machine may pick (docs/determinism.md).

usage: test_kernels.py SLICEPIPE TEST_BACKEND_OPS WORKDIR SHARED_DIR

Debian's OpenBLAS picks its kernels by CPU model: on a CPU newer than the
library it falls back to Prescott (SSE3), on most AMD and older Intel machines
it picks Haswell or Zen. Their threaded GEMMs give different bits at different
thread counts, which a machine that presets OPENBLAS_CORETYPE hides. So, for
the environment as it is (the kernel OpenBLAS auto-detects, with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed) and for each of Prescott,
Haswell and SkylakeX that this CPU can run (its /proc/cpuinfo flags; a kernel
it cannot run is reported as skipped, never forced, since it would die of
SIGILL; SLICEPIPE_KEEP_OPENBLAS_CORE=1 stops slicepipe from moving OpenBLAS
to the CPU's best core, linalg/blas_core.h):

1. test_backend_ops cpu passes: every op against its float64 reference, the
   pool's ops identical at 1, 2 and 3 threads, OpenBLAS's repeatable at one
   count; and OpenBLAS really ran that kernel (the identity names it);
2. stories260k at sparsity 0.25 with ../shared/data/REFERENCE.md's settings
   (64 windows of 256 calibration tokens, F32 output) sliced at 1 and at 2
   threads: each output's held-out NLL is within 1e-4 of
   ../shared/data/REFERENCE.md's 3.15845, and the two agree within 1e-5.

Then once: a job started at 2 threads, killed at a compute commit point and
resumed with `[resources] threads = 1` goes on at 2 threads (it says so) and
its output is byte-identical to the uninterrupted 2-thread run: the thread
count is part of the run identity.

Without SHARED_DIR's stories260k the end-to-end parts use a synthetic model
(`slicepipe synth`) and compare 1 and 2 threads with each other only.
Exit 0, 1 on a failure.
"""
import json
import os
import shutil
import subprocess
import sys

REF_NLL = 3.15845  # ../shared/data/REFERENCE.md: stories260k, sparsity 0.25, float64 reference
TOL_REF, TOL_THREADS = 1e-4, 1e-5
# OpenBLAS kernel → the /proc/cpuinfo flags its code needs ("pni" is SSE3).
KERNELS = {
    "Prescott": ["sse2", "pni"],
    "Haswell": ["avx2", "fma"],
    "SkylakeX": ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"],
}
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernel_env(kernel):
    e = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "SLICEPIPE_KILL_AT", "SLICEPIPE_KEEP_OPENBLAS_CORE",
              "SLICEPIPE_OPENBLAS_REEXEC"):
        e.pop(k, None)
    if kernel:
        # slicepipe moves OpenBLAS off a core weaker than the CPU's best
        # (linalg/blas_core.h); this test wants that core's bits: keep it.
        e["OPENBLAS_CORETYPE"] = kernel
        e["SLICEPIPE_KEEP_OPENBLAS_CORE"] = "1"
    return e


def run(args, env):
    return subprocess.run(args, capture_output=True, text=True, env=env)


def write_manifest(path, model, calib, out, seqlen, nsamples, threads):
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = {seqlen}\n'
                f'nsamples = {nsamples}\n[slicing]\nsparsity = 0.25\n[output]\npath = "{out}"\ndtype = "f32"\n'
                f'shard_bytes = "200KB"\n[resources]\nthreads = {threads}\n')


def model_bytes(out):
    if not os.path.isdir(out):
        return None
    return {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out))
            if f.endswith(".safetensors") or f in ("model.safetensors.index.json", "config.json")}


def slice_and_eval(sp, env, work, tag, model, calib, evalt, seqlen, nsamples, threads):
    man, out = os.path.join(work, f"{tag}-t{threads}.toml"), os.path.join(work, f"{tag}-t{threads}")
    shutil.rmtree(out, ignore_errors=True)
    write_manifest(man, model, calib, out, seqlen, nsamples, threads)
    r = run([sp, "run", man, "--quiet"], env)
    if r.returncode != 0:
        check(False, f"{tag}: slice at {threads} thread(s): exit {r.returncode}: {r.stderr.strip()[-300:]}")
        return None
    want = env.get("OPENBLAS_CORETYPE")
    if want:  # the summary's backend line is the backend identity: it names the kernel that ran
        line = [l for l in r.stdout.splitlines() if l.strip().startswith("backend")]
        check(line and f"kernel={want}".lower() in line[0].lower(),
              f"{tag}: the slice at {threads} thread(s) ran OpenBLAS's {want} kernels ({line[0].strip() if line else r.stdout[-200:]})")
    e = run([sp, "eval", out, "--tokens", evalt, "--seqlen", str(seqlen), "--threads", str(threads), "--json",
             "--quiet"], env)
    if e.returncode != 0:
        check(False, f"{tag}: eval at {threads} thread(s): exit {e.returncode}: {e.stderr.strip()[-300:]}")
        return None
    return json.loads(e.stdout)["nll"]


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        return 64
    sp, ops, work, shared = (os.path.abspath(a) for a in sys.argv[1:])
    os.makedirs(work, exist_ok=True)
    st = os.path.join(shared, "models", "stories260k")
    ts = os.path.join(shared, "data", "tinystories")
    if os.path.isdir(st) and os.path.isfile(os.path.join(ts, "calib.tok512.npy")):
        model, calib, evalt = st, os.path.join(ts, "calib.tok512.npy"), os.path.join(ts, "eval.tok512.npy")
        seqlen, nsamples, have_ref = 256, 64, True
    else:
        print(f"note: {st} is absent: a synthetic model stands in, without REFERENCE.md's NLL")
        model = os.path.join(work, "synth")
        shutil.rmtree(model, ignore_errors=True)
        r = run([sp, "synth", model], kernel_env(None))
        check(r.returncode == 0, f"synth: {r.stderr.strip()[-200:]}")
        if r.returncode:
            return 1
        calib = evalt = os.path.join(model, "calib.npy")
        seqlen, nsamples, have_ref = 64, 16, False

    flags = cpu_flags()
    for kernel in [None] + list(KERNELS):
        name = kernel or "auto-detected"
        if kernel:
            missing = [f for f in KERNELS[kernel] if f not in flags]
            if missing:
                print(f"skip {name}: this CPU lacks {', '.join(missing)}, which OpenBLAS's {kernel} kernels need")
                continue
        env = kernel_env(kernel)
        r = run([ops, "cpu"], env)
        ident = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
        ran = kernel is None or f"kernel={kernel}".lower() in ident[0].lower()
        check(r.returncode == 0 and ran, f"{name}: test_backend_ops cpu: exit {r.returncode}: {ident[0][:200]}")
        if r.returncode:
            print((r.stdout + r.stderr)[-2000:])
        nll = {t: slice_and_eval(sp, env, work, name, model, calib, evalt, seqlen, nsamples, t) for t in (1, 2)}
        if None in nll.values():
            continue
        if have_ref:
            for t in (1, 2):
                check(abs(nll[t] - REF_NLL) <= TOL_REF,
                      f"{name}: stories260k 0.25 at {t} thread(s): NLL {nll[t]:.6f}, REFERENCE.md {REF_NLL} "
                      f"(|diff| {abs(nll[t] - REF_NLL):.2e} <= {TOL_REF})")
        check(abs(nll[1] - nll[2]) <= TOL_THREADS,
              f"{name}: 1 and 2 threads agree: {nll[1]:.8f} vs {nll[2]:.8f} (|diff| {abs(nll[1] - nll[2]):.1e})")

    # The thread count is part of the run identity: a resume keeps the first run's.
    env = kernel_env(None)
    man, out = os.path.join(work, "resume.toml"), os.path.join(work, "resume")
    shutil.rmtree(out, ignore_errors=True)
    write_manifest(man, model, calib, out, seqlen, nsamples, 2)
    r = run([sp, "run", man, "--quiet"], env)
    check(r.returncode == 0, f"resume: the uninterrupted 2-thread run ({r.stderr.strip()[-200:]})")
    ref = model_bytes(out)
    shutil.rmtree(out, ignore_errors=True)
    k = run([sp, "run", man, "--quiet"], dict(env, SLICEPIPE_KILL_AT="compute:3"))
    check(k.returncode != 0, f"resume: killed at compute:3 (exit {k.returncode})")
    write_manifest(man, model, calib, out, seqlen, nsamples, 1)
    r = run([sp, "run", man], env)
    check(r.returncode == 0 and "started with 2" in r.stderr,
          f"resume with threads = 1 goes on at the journaled 2 and says so (exit {r.returncode}: "
          f"{[l for l in r.stderr.splitlines() if 'threads' in l][:1]})")
    check(r.returncode == 0 and model_bytes(out) == ref, "resume with threads = 1: output byte-identical to 2 threads")

    print(f"{len(failures)} failed" if failures else "all kernel checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
