#!/usr/bin/python3
"""test_onednn.py — the oneDNN backend end to end (linalg/onednn.c;
docs/determinism.md, "The oneDNN backend").

usage: test_onednn.py SLICEPIPE WORKDIR SHARED_DIR [--sanitized]

On stories260k (SHARED_DIR/models; a `slicepipe synth` model without it) at
sparsity 0.25, 16 windows of 128 calibration tokens from calib.tok512.npy,
F32 output, evaluated on the first 64 windows of 128 tokens of eval.tok512.npy:

Every onednn run's processes stay within its memory plan (the run summary's
"all processes X MiB of the Y MiB plan"), oneDNN's library, code and caches
included; with --sanitized (an ASan/UBSan build, whose shadow memory the plan
does not hold) the figure is printed only.

1. backend = "onednn" and backend = "cpu": the two outputs' held-out NLLs
   (`slicepipe eval --backend cpu`) agree within 1e-4, and `eval --backend
   onednn` of the onednn output agrees with them within 1e-4 (eval serves it);
   so does the onednn job at oneDNN's AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2);
2. the onednn job at 1 and at 2 threads: NLLs within 1e-5 (its GEMMs' bits do
   not depend on the thread count, but the cpu backend's OpenBLAS ops it keeps,
   eigh's dsyevd among them, do: docs/determinism.md);
3. backend = "auto" gives the cpu output byte for byte on a CPU without
   AMX-BF16 (auto keeps cpu there, so existing outputs do not change), the
   onednn output on one with it;
4. a onednn job killed at its second compute commit point and resumed with
   backend = "cpu" is refused (65) naming both backends; `slicepipe status`
   names the job's backend; resumed with onednn it finishes byte-identical to
   the uninterrupted run;
5. precision = "bf16": refused (64, naming the manifest and the reason) with
   backend = "cpu", and with onednn and auto where oneDNN cannot run bf16 (forced
   here with ONEDNN_MAX_CPU_ISA=AVX2; also without it on a CPU lacking
   AVX512-BF16 and AMX-BF16). Where the CPU has bf16: the bf16 job runs, its
   NLL is printed against f32's and must lie within 1e-2 of it, and resuming
   the f32 onednn job at bf16 is refused (65).

First, in any build, the manifest key: precision = "fp16" is refused (64) and
backend = "cpu" with precision = "bf16" too. Exit 0, 1 on a failure, 77 (skip,
with a message) when this slicepipe has no onednn backend or it cannot run
here.
"""
import json
import os
import re
import shutil
import subprocess
import sys

TOL_NLL = 1e-4
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def clean_env(**extra):
    e = dict(os.environ)
    for k in ("SLICEPIPE_KILL_AT", "SLICEPIPE_FAULT_WRITE", "SLICEPIPE_FAULT_FSYNC", "SLICEPIPE_STAGED_BACKEND",
              "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        e.pop(k, None)
    e.update(extra)
    return e


def run(args, **env):
    return subprocess.run(args, capture_output=True, text=True, env=clean_env(**env))


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def model_bytes(out):
    if not os.path.isdir(out):
        return None
    return {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out))
            if f.endswith(".safetensors") or f in ("model.safetensors.index.json", "config.json")}


class Job:
    def __init__(self, work, model, calib, seqlen, nsamples):
        self.work, self.model, self.calib, self.seqlen, self.nsamples = work, model, calib, seqlen, nsamples

    def manifest(self, tag, out, backend, threads=2, precision=None):
        path = os.path.join(self.work, f"{tag}.toml")
        with open(path, "w") as f:
            f.write(f'[model]\npath = "{self.model}"\n[calibration]\ntokens = "{self.calib}"\nseqlen = {self.seqlen}\n'
                    f'nsamples = {self.nsamples}\n[slicing]\nsparsity = 0.25\n[output]\npath = "{out}"\n'
                    f'dtype = "f32"\n[resources]\nthreads = {threads}\nbackend = "{backend}"\n')
            if precision:
                f.write(f'precision = "{precision}"\n')
        return path


def main():
    sanitized = sys.argv[4:] == ["--sanitized"]
    if len(sys.argv) != 4 and not sanitized:
        print(__doc__)
        return 64
    sp, work, shared = (os.path.abspath(a) for a in sys.argv[1:4])
    os.makedirs(work, exist_ok=True)
    # 0. the manifest key, in any build: precision is f32 or bf16; cpu refuses bf16
    for value, want in (("fp16", "unknown precision 'fp16' (f32 or bf16)"), ("bf16", "computes in float32 only")):
        m = os.path.join(work, f"precision-{value}.toml")
        with open(m, "w") as f:
            f.write(f'[model]\npath = "{work}/none"\n[calibration]\ntokens = "{work}/none.npy"\n[output]\n'
                    f'path = "{work}/none-out"\n[resources]\nbackend = "cpu"\nprecision = "{value}"\n')
        r = run([sp, "run", m, "--dry-run"])
        check(r.returncode == 64 and want in r.stderr,
              f"precision = \"{value}\" with backend = \"cpu\": 64 ({r.returncode}: {r.stderr.strip()[-200:]})")
    v = run([sp, "--version"])
    line = [l for l in v.stdout.splitlines() if l.strip().startswith("onednn ")]
    skip = None
    if not line:
        skip = ("this slicepipe was built without the onednn backend (install libdnnl-dev and configure with "
                "-DSLICEPIPE_ONEDNN=AUTO or ON)")
    elif "not usable" in line[0]:
        skip = f"the onednn backend cannot run here: {line[0].strip()}"
    if skip:
        print(f"test_onednn.py: SKIP: {skip}", file=sys.stderr)
        return 1 if failures else 77
    st = os.path.join(shared, "models", "stories260k")
    ts = os.path.join(shared, "data", "tinystories")
    if os.path.isdir(st) and os.path.isfile(os.path.join(ts, "calib.tok512.npy")):
        model, calib, evalt, seqlen = st, os.path.join(ts, "calib.tok512.npy"), os.path.join(ts, "eval.tok512.npy"), 128
    else:
        print(f"note: {st} is absent: a synthetic model stands in")
        model = os.path.join(work, "synth")
        shutil.rmtree(model, ignore_errors=True)
        r = run([sp, "synth", model])
        check(r.returncode == 0, f"synth: {r.stderr.strip()[-200:]}")
        if r.returncode:
            return 1
        calib = evalt = os.path.join(model, "calib.npy")
        seqlen = 64
    J = Job(work, model, calib, seqlen, 16)
    flags = cpu_flags()

    def slice_to(tag, backend, threads=2, precision=None, **env):
        out = os.path.join(work, tag)
        shutil.rmtree(out, ignore_errors=True)
        man = J.manifest(tag, out, backend, threads, precision)
        r = run([sp, "run", man], **env)
        check(r.returncode == 0, f"{tag}: slice with backend = \"{backend}\" at {threads} thread(s): exit "
                                 f"{r.returncode} {r.stderr.strip()[-300:]}")
        # "all processes X MiB of the Y MiB plan": oneDNN's code and caches are in the plan
        m = re.search(r"all processes ([0-9.]+) MiB of the ([0-9.]+) MiB plan", r.stderr)
        if backend == "onednn" and not sanitized:
            check(m is not None and float(m.group(1)) <= float(m.group(2)),
                  f"{tag}: the processes' peak RSS within the memory plan ({m.group(0) if m else r.stderr[-200:]})")
        elif m:
            print(f"note: {tag}: {m.group(0)}")
        return out if r.returncode == 0 else None

    def nll(out, backend="cpu"):
        e = run([sp, "eval", out, "--tokens", evalt, "--seqlen", str(seqlen), "--windows", "64", "--threads", "2",
                 "--backend", backend, "--json", "--quiet"])
        check(e.returncode == 0, f"eval {os.path.basename(out)} --backend {backend}: exit {e.returncode} "
                                 f"{e.stderr.strip()[-300:]}")
        return json.loads(e.stdout)["nll"] if e.returncode == 0 else None

    # 1. onednn against cpu, and eval on onednn
    out_cpu, out_one = slice_to("cpu", "cpu"), slice_to("onednn", "onednn")
    if not out_cpu or not out_one:
        return 1
    n_cpu, n_one, n_one_e = nll(out_cpu), nll(out_one), nll(out_one, "onednn")
    if None not in (n_cpu, n_one, n_one_e):
        check(abs(n_one - n_cpu) <= TOL_NLL, f"held-out NLL: onednn {n_one:.9f}, cpu {n_cpu:.9f} "
                                             f"(|diff| {abs(n_one - n_cpu):.1e} <= {TOL_NLL})")
        check(abs(n_one_e - n_cpu) <= TOL_NLL, f"eval --backend onednn: {n_one_e:.9f} (|diff| to cpu's eval "
                                               f"{abs(n_one_e - n_cpu):.1e} <= {TOL_NLL})")
    # at oneDNN's AVX2 kernels, what an explicit onednn runs on an AVX2-only CPU
    out_avx2 = slice_to("onednn-avx2", "onednn", ONEDNN_MAX_CPU_ISA="AVX2")
    n_avx2 = nll(out_avx2) if out_avx2 else None
    if None not in (n_avx2, n_cpu):
        check(abs(n_avx2 - n_cpu) <= TOL_NLL, f"onednn at ONEDNN_MAX_CPU_ISA=AVX2: NLL {n_avx2:.9f} (|diff| to cpu "
                                              f"{abs(n_avx2 - n_cpu):.1e} <= {TOL_NLL})")
    ref_one = model_bytes(out_one)
    print(f"note: the onednn and cpu outputs are {'byte-identical' if ref_one == model_bytes(out_cpu) else 'different'}"
          " here")

    # 2. the thread count: onednn's GEMMs give the same bits at any count
    # (tests/test_onednn.c), but the ops it keeps from the cpu backend that run
    # on OpenBLAS's threads (eigh's dsyevd under every kernel) do not, so the
    # job's bits are held to what the cpu backend's are (test_kernels.py)
    out1 = slice_to("onednn-t1", "onednn", threads=1)
    n1 = nll(out1) if out1 else None
    if n1 is not None and n_one is not None:
        check(abs(n1 - n_one) <= 1e-5, f"onednn at 1 and 2 threads: NLL {n1:.9f} vs {n_one:.9f} (|diff| "
                                       f"{abs(n1 - n_one):.1e} <= 1e-5; outputs "
                                       f"{'byte-identical' if model_bytes(out1) == ref_one else 'different'})")

    # 3. auto keeps cpu unless the CPU has AMX-BF16
    out_auto = slice_to("auto", "auto")
    amx = "amx_bf16" in flags
    want = ref_one if amx else model_bytes(out_cpu)
    check(out_auto is not None and model_bytes(out_auto) == want,
          f"backend = \"auto\" gives the {'onednn' if amx else 'cpu'} output byte for byte "
          f"({'AMX-BF16' if amx else 'no AMX-BF16'} here)")

    # 4. resume on another backend refused; on the same one, byte-identical
    out = os.path.join(work, "resume")
    shutil.rmtree(out, ignore_errors=True)
    man = J.manifest("resume", out, "onednn")
    k = run([sp, "run", man, "--quiet"], SLICEPIPE_KILL_AT="compute:2")
    check(k.returncode != 0, f"resume: the onednn job killed at compute:2 (exit {k.returncode})")
    man_cpu = J.manifest("resume-cpu", out, "cpu")
    r = run([sp, "run", man_cpu, "--quiet"])
    check(r.returncode == 65 and 'started on backend "onednn' in r.stderr and 'resolves to "cpu' in r.stderr
          and man_cpu in r.stderr and "--restart" in r.stderr,
          f"resume with backend = \"cpu\": refused, 65, naming both backends ({r.returncode}: {r.stderr.strip()[-400:]})")
    s = run([sp, "status", out])
    check(s.returncode == 0 and "backend:     onednn" in s.stdout, f"status names the job's backend ({s.stdout[-300:]})")
    r = run([sp, "run", man, "--quiet"])
    check(r.returncode == 0 and model_bytes(out) == ref_one,
          f"resume with backend = \"onednn\": byte-identical to the uninterrupted run (exit {r.returncode})")

    # 5. precision = "bf16" (onednn capped at AVX2: where the CPU itself has
    # no bf16, the cpuid check refuses first and names that instead)
    has_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    for backend, env, why in (("cpu", {}, "float32 only"),
                              ("onednn", {"ONEDNN_MAX_CPU_ISA": "AVX2"},
                               "dispatches to avx2" if has_bf16 else "neither AVX512-BF16 nor AMX-BF16"),
                              ("auto", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "AMX-BF16")):
        o = os.path.join(work, f"bf16-{backend}-refused")
        m = J.manifest(f"bf16-{backend}-refused", o, backend, precision="bf16")
        r = run([sp, "run", m, "--quiet"], **env)
        check(r.returncode == 64 and m in r.stderr and 'precision = "bf16"' in r.stderr and why in r.stderr,
              f"bf16 with backend = \"{backend}\"{' and ' + str(env) if env else ''}: refused, 64, naming the "
              f"manifest and the reason ({r.returncode}: {r.stderr.strip()[-300:]})")
    if not has_bf16:
        o = os.path.join(work, "bf16-refused")
        m = J.manifest("bf16-refused", o, "onednn", precision="bf16")
        r = run([sp, "run", m, "--quiet"])
        check(r.returncode == 64 and m in r.stderr and "AVX512-BF16" in r.stderr,
              f"bf16 on a CPU without AVX512-BF16 and AMX-BF16: refused, 64 ({r.returncode}: {r.stderr.strip()[-300:]})")
    else:
        print("note: this CPU has bf16 (cpuid): the bf16 refusal without ONEDNN_MAX_CPU_ISA is not checked; the bf16 "
              "job runs instead")
        out_bf = slice_to("bf16", "onednn", precision="bf16")
        n_bf = nll(out_bf) if out_bf else None
        if n_bf is not None and n_one is not None:
            check(abs(n_bf - n_one) <= 1e-2, f"bf16 job: held-out NLL {n_bf:.9f}, f32 {n_one:.9f} "
                                             f"(diff {n_bf - n_one:+.2e}, within 1e-2)")
        man_bf = J.manifest("resume-bf16", out, "onednn", precision="bf16")
        shutil.rmtree(out, ignore_errors=True)
        run([sp, "run", man, "--quiet"], SLICEPIPE_KILL_AT="compute:2")
        r = run([sp, "run", man_bf, "--quiet"])
        check(r.returncode == 65 and "precision=fp32" in r.stderr and "precision=bf16" in r.stderr,
              f"resume of the f32 onednn job at bf16: refused, 65 ({r.returncode}: {r.stderr.strip()[-300:]})")

    print(f"{len(failures)} failed" if failures else "all onednn checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
