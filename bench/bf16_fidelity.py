#!/usr/bin/python3
"""bench/bf16_fidelity.py — fidelity of the bf16 forward, measured (issue 26 point 4).

Every shared model, the example (examples/kjv) and one synthetic model of every
family `slicepipe --version` lists, sliced by per-layer SliceGPT at sparsity
0.25 (round_to 8, 64 calibration windows of 256, F32 output), and the held-out
NLL of each output three ways. A synthetic model is `slicepipe synth --arch F`
at its default shapes (D 256, 4 layers, FFN 704, vocab 1024, bf16) with 8
heads over 4 KV heads, seed 26 (mistral and phi3: window 128; phi3 and phi:
partial rotary 0.5; qwen2: tied head); its calib.npy holds 128 windows of 256,
the first 64 calibrate and the other 64 are its held-out stream. Random weights
make its absolute NLL meaningless (about ln 1024), not its differences.

  float64 reference   ../shared/data/REFERENCE.md's NLL where it has one
                      (stories260k, llama2xs, on all 424 windows; the
                      numpy reference agrees with it, the JSON says by how
                      much), else the project's numpy
                      reference (tests/ref/slicegpt_ref.py slicing,
                      tests/ref/model_ref.py forward), run here
  f32                 `[resources] backend = "cpu"` and `backend = "onednn"`,
                      precision "f32"; NLL from the job's own [eval]
  bf16                `backend = "onednn"`, `precision = "bf16"`: NLL from the
                      job's [eval] (the eval forward in bf16 too) and from
                      `slicepipe eval --backend cpu` of its output (eval in f32)

Is the reference itself stable? The numpy reference is run under each
OpenBLAS core of REF_KERNELS (numpy's OpenBLAS; OPENBLAS_CORETYPE). A job
whose reference NLL moves by more than KERNEL_TOL (1e-4, REFERENCE.md's F32
tolerance) between cores is flagged kernel-sensitive: its NLL differences say
little, and it is judged by its projector error instead. Such a job is also
sliced by slicepipe's cpu backend under each other core
(SLICEPIPE_KEEP_OPENBLAS_CORE=1), against the reference under the same core.

Projector error: for every sliced residual position (the embedding's basis,
each layer's attention and MLP outputs but the last), the top-d projector
P = Q_d·Q_dᵀ of the output against the reference's, ‖P − P_ref‖_F (the
measure tests/test_backend_ops.c applies to cov_add and eigh). Where the
reference's eigenvalues tie across the cut (babyllama105's embedding: its
calibration windows hold 55 distinct tokens, so 73 eigenvalues equal the
damping), only the top r above the tie is determined, and the error there is
‖(I − P)·U_r‖_F, the part of it the output misses. The output does
not store Q_d; it is recovered from the readers of that position: the output
holds W_fused·Q_d for them (q/k/v, gate/up, ...), so Q_d = lstsq(W_fused,
W_out), orthonormalized. It is computed for every job and every run; the
reference's own spread across cores is the yardstick.

usage:
  /usr/bin/python3 bench/bf16_fidelity.py [--slicepipe build/slicepipe]
        [--work DIR] [--json bench/bf16_fidelity.json]
env:
  ONLY="babyllama105 synth-qwen2"  a subset of the jobs (labels as printed)
  EVAL_WINDOWS=424      held-out windows of 256 for the shared models (all
                        424 of eval.tok512.npy; babyllama105 and aidreams260k
                        take the first 424 of their holdout); the example
                        takes all of its 312, a synthetic model its 64
  REF_KERNELS="Zen Prescott"  OpenBLAS cores for the numpy reference
                        (default: the core slicepipe runs, from its --version
                        kernels line, then Prescott; "auto" is OpenBLAS's own
                        choice); the first is the reference the differences
                        are taken from
  THREADS=2             slicepipe's [resources] threads and numpy's
                        OPENBLAS_NUM_THREADS
Needs ../shared (skips with 77 when it is absent) and a build with the onednn
backend (libdnnl-dev). bf16 needs a CPU with AVX512-BF16 or AMX-BF16:
elsewhere slicepipe refuses it (64), and the table records the refusal.
Writes the results JSON (--json) and prints the markdown tables on stdout,
progress on stderr. Most of the time is the numpy reference's held-out
forward, once per core: 27 minutes on a busy 2-core AMD EPYC.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import model_ref as mr  # noqa: E402
import slicegpt_ref as sr  # noqa: E402
import sp_families  # noqa: E402

SEQLEN, NSAMPLES, SPARSITY, ROUND_TO = 256, 64, 0.25, 8
TOL = 2e-3          # the bar for bf16
KERNEL_TOL = 1e-4   # a reference that moves more than this between OpenBLAS cores is kernel-sensitive
TIE_RTOL = 1e-10    # eigenvalues this close (relative to the largest) across the cut are a tie
SYNTH_EXTRA = {"mistral": ["--window", "128"], "qwen2": ["--tied"], "phi3": ["--window", "128", "--partial-rotary", "0.5"],
               "phi": ["--partial-rotary", "0.5"]}
RUNS = [("cpu_f32", "cpu", "f32"), ("onednn_f32", "onednn", "f32"), ("onednn_bf16", "onednn", "bf16")]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def reference_md(shared):
    """{model: NLL at sparsity 0.25} from REFERENCE.md's table (float64 weights column)."""
    out, model = {}, None
    try:
        lines = open(os.path.join(shared, "data", "REFERENCE.md")).read().splitlines()
    except OSError:
        return out
    for line in lines:
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) < 5 or not line.startswith("|") or c[0] in ("model",) or set(c[0]) <= set("-"):
            continue
        model = c[0] or model
        if c[2] == "0.25":
            try:
                out[model] = float(c[4])
            except ValueError:
                pass
    return out


# ----------------------------------------------------------------------------
# the numpy reference, in a process of its own per OpenBLAS core
# ----------------------------------------------------------------------------

def positions(arch, res, d):
    """[(name, reader prefixes, reference Q_d)] for every sliced residual position."""
    B = res["bases"]
    E = res["eigenvalues"]
    out = []
    for name, readers in _pos_readers(arch):
        if name == "embed":
            Q, w = B["embed"], E["embed"]
        else:
            l, kind = int(name[1:].split(".")[0]), name.split(".")[1]
            Q, w = B["layers"][l][kind], E["layers"][l][kind]
        out.append((name, readers, Q[:, :d], Q, w))
    return out


def ref_worker(a):
    """Slice with the numpy reference, evaluate the sliced model, save the bases."""
    t0 = time.time()
    config, W = mr.load_model_dir(a.model)
    cfg = sr.Cfg(config)
    calib = mr.windows(mr.load_tokens(a.calib), SEQLEN, NSAMPLES)
    res = sr.slice_model(cfg, W, calib, SPARSITY, ROUND_TO)
    t1 = time.time()
    ev = mr.windows(mr.load_tokens(a.eval), SEQLEN, a.windows)
    nll = sr.model_nll(cfg, sr.sliced_model(cfg, res["tensors"]), ev)
    pos = positions(cfg.arch, res, res["d"])
    np.savez(a.out + ".npz", **{p[0]: p[2] for p in pos})
    np.savez(a.out + ".full.npz", **{p[0]: p[3] for p in pos}, **{p[0] + ".eig": p[4] for p in pos})
    json.dump({"nll": nll, "d": res["d"], "positions": [p[0] for p in pos], "slice_s": t1 - t0,
               "eval_s": time.time() - t1}, open(a.out + ".json", "w"))


def run_reference(model, calib, ev, windows, core, threads, out):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OPENBLAS_VERBOSE="2")
    env.pop("OPENBLAS_CORETYPE", None)
    if core != "auto":
        env["OPENBLAS_CORETYPE"] = core
    t0 = time.time()
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--ref-worker", model, calib, ev, str(windows), out],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        return {"core_asked": core, "error": (r.stderr or r.stdout).strip()[-600:]}
    m = re.search(r"Core:\s*(\S+)", r.stdout + r.stderr)
    rep = json.load(open(out + ".json"))
    rep.update(core_asked=core, core=m.group(1) if m else None, seconds=round(time.time() - t0, 1))
    rep["bases"] = dict(np.load(out + ".npz"))
    full = dict(np.load(out + ".full.npz"))
    rep["ties"] = ties(full, rep["d"])
    return rep


# ----------------------------------------------------------------------------
# projectors of an output, recovered from the readers
# ----------------------------------------------------------------------------

def projector(Q):
    U, _ = np.linalg.qr(Q)
    return U @ U.T


def output_bases(fused, out_tensors, pos_readers):
    """{position: Q_d recovered from the sliced readers: lstsq(W_fused, W_out)}."""
    got = {}
    for name, readers in pos_readers:
        A = np.concatenate([fused[r + ".weight"] for r in readers], axis=0)
        B = np.concatenate([np.asarray(out_tensors[r + ".weight"], dtype=np.float64) for r in readers], axis=0)
        got[name] = np.linalg.lstsq(A, B, rcond=None)[0]
    return got


def ties(full, d):
    """{position: {"above": r, "tied": m, "U": U_r}} where the reference's eigenvalues tie across the cut
    (lambda_d-1 and lambda_d within TIE_RTOL·lambda_max): the top-d basis is then not determined by H, only
    its top r (the eigenvalues above the tied cluster) is; any d − r of the m tied directions are as good."""
    out = {}
    for k in full:
        if k.endswith(".eig"):
            continue
        w, Q = full[k + ".eig"], full[k]
        if d >= len(w) or w[d - 1] - w[d] > TIE_RTOL * w[0]:
            continue
        r = int(np.sum(w > w[d - 1] + TIE_RTOL * w[0]))
        m = int(np.sum(np.abs(w - w[d - 1]) <= TIE_RTOL * w[0]))
        out[k] = {"above": r, "tied": m, "U": Q[:, :r]}
    return out


def projector_errors(bases, ref_bases, ref_ties=None):
    """‖P − P_ref‖_F per position; where the reference ties across the cut, ‖(I − P)·U_r‖_F instead: how much
    of the determined part of the reference's basis (its top r) the basis misses."""
    out = {}
    for k in ref_bases:
        P = projector(bases[k])
        if ref_ties and k in ref_ties:
            U = ref_ties[k]["U"]
            out[k] = float(np.linalg.norm(U - P @ U))
        else:
            out[k] = float(np.linalg.norm(P - projector(ref_bases[k])))
    return out


# ----------------------------------------------------------------------------
# slicepipe
# ----------------------------------------------------------------------------

def slicepipe_job(sp, work, tag, model, calib, ev, windows, backend, precision, threads, env=None):
    out = os.path.join(work, tag)
    mf = out + ".toml"
    shutil.rmtree(out, ignore_errors=True)
    with open(mf, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = {SEQLEN}\nnsamples = {NSAMPLES}\n'
                f'[slicing]\nsparsity = {SPARSITY}\nround_to = {ROUND_TO}\n[output]\npath = "{out}"\ndtype = "f32"\n'
                f'[resources]\nmemory = "2GB"\nthreads = {threads}\nbackend = "{backend}"\nprecision = "{precision}"\n'
                f'[eval]\ntokens = "{ev}"\nseqlen = {SEQLEN}\nwindows = {windows}\n')
    t0 = time.time()
    r = subprocess.run([sp, "run", mf, "--quiet", "--restart"], capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})))
    rep = {"rc": r.returncode, "seconds": round(time.time() - t0, 2)}
    if r.returncode:  # the reason, without the manifest's path
        rep["error"] = re.sub(r"^slicepipe: \S+\.toml: ", "", (r.stderr.strip() or "no message").splitlines()[-1])[:600]
        return rep, None
    m = re.search(r"^\s*backend\s+(.*)$", r.stdout, re.M)
    rep["backend"] = m.group(1).strip() if m else None
    s = json.load(open(os.path.join(out, "slicing.json")))
    rep["nll"] = s["eval"]["nll_sliced"]
    rep["eval_tokens"] = s["eval"]["tokens"]
    if precision != "f32":
        e = subprocess.run([sp, "eval", out, "--tokens", ev, "--seqlen", str(SEQLEN), "--windows", str(windows),
                            "--backend", "cpu", "--threads", str(threads), "--json", "--quiet"],
                           capture_output=True, text=True)
        if e.returncode:
            rep["eval_f32_error"] = e.stderr.strip()[-600:]
        else:
            rep["nll_eval_f32"] = json.loads(e.stdout)["nll"]
    return rep, out


# ----------------------------------------------------------------------------

def jobs(sp, shared, work, eval_windows):
    ts = os.path.join(shared, "data", "tinystories")
    J = []
    for name, cal, ev in (("stories260k", "calib.tok512.npy", "eval.tok512.npy"),
                          ("llama2xs", "calib.tok512.npy", "eval.tok512.npy"),
                          ("babyllama105", "calib.tok105.npy", "holdout.tok105.npy"),
                          ("aidreams260k", "calib.dreams512.npy", "holdout.dreams512.npy")):
        J.append({"label": name, "model": os.path.join(shared, "models", name), "calib": os.path.join(ts, cal),
                  "eval": os.path.join(ts, ev), "max_windows": eval_windows})
    kjv = os.path.join(ROOT, "examples", "kjv")
    J.append({"label": "kjv", "model": os.path.join(kjv, "model"), "calib": os.path.join(kjv, "calib.npy"),
              "eval": os.path.join(kjv, "eval.npy"), "max_windows": 1 << 30})
    for fam in sp_families.families(sp):
        J.append({"label": "synth-" + fam, "family": fam, "model": os.path.join(work, "synth-" + fam),
                  "calib": os.path.join(work, "synth-" + fam, "calib.npy"),
                  "eval": os.path.join(work, "synth-" + fam + ".eval.npy"), "max_windows": 1 << 30})
    return J


def make_synth(sp, job):
    """`slicepipe synth` at its default shapes (GQA 8/4), calib.npy of 128 windows of 256: the first 64
    calibrate, the other 64 are written out as the held-out stream."""
    d, fam = job["model"], job["family"]
    shutil.rmtree(d, ignore_errors=True)
    r = subprocess.run([sp, "synth", d, "--arch", fam, "--kv-heads", "4", "--tokens", str(2 * NSAMPLES * SEQLEN),
                        "--seed", "26", "--quiet"] + SYNTH_EXTRA.get(fam, []), capture_output=True, text=True)
    if r.returncode:
        return r.stderr.strip()[-400:]
    toks = np.load(job["calib"])
    np.save(job["eval"], toks[NSAMPLES * SEQLEN:].astype(np.int32))
    job["synth_args"] = ["--arch", fam, "--kv-heads", "4", "--seed", "26"] + SYNTH_EXTRA.get(fam, [])
    return None


def fmt_nll(v, ref):
    return "—" if v is None else f"{v:.6f} ({v - ref:+.1e})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slicepipe", default=os.path.join(ROOT, "build", "slicepipe"))
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "slicepipe-bf16-fidelity"))
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "bf16_fidelity.json"))
    ap.add_argument("--ref-worker", nargs=5, metavar=("MODEL", "CALIB", "EVAL", "WINDOWS", "OUT"))
    a = ap.parse_args()
    if a.ref_worker:
        m, c, e, w, o = a.ref_worker
        return ref_worker(argparse.Namespace(model=m, calib=c, eval=e, windows=int(w), out=o))

    shared = os.path.join(os.path.dirname(ROOT), "shared")
    if not os.path.isdir(os.path.join(shared, "models")):
        log("bf16_fidelity: skip: ../shared is absent")
        return 77
    sp = os.path.abspath(a.slicepipe)
    if not os.access(sp, os.X_OK):
        log("bf16_fidelity: build first (make build), or give --slicepipe")
        return 64
    os.makedirs(a.work, exist_ok=True)
    eval_windows = int(os.environ.get("EVAL_WINDOWS", "424"))
    version = subprocess.run([sp, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"kernels: OpenBLAS \S+, (\w+) kernels", version)
    kernels = os.environ.get("REF_KERNELS", f"{m.group(1) if m else 'auto'} Prescott").split()
    kernels = list(dict.fromkeys(kernels))
    threads = int(os.environ.get("THREADS", "2"))
    only = os.environ.get("ONLY", "").split()
    refmd = reference_md(shared)
    cpu = open("/proc/cpuinfo").read()
    flags = set(re.search(r"^flags\s*:(.*)$", cpu, re.M).group(1).split())
    machine = {"cpu": re.search(r"^model name\s*:\s*(.*)$", cpu, re.M).group(1), "cores": os.cpu_count(),
               "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
               "avx512f": "avx512f" in flags, "slicepipe_version": version.strip().splitlines()[:2]}
    log(f"bf16_fidelity: {machine['cpu']}, avx512_bf16={machine['avx512_bf16']} amx_bf16={machine['amx_bf16']}; "
        f"reference under {kernels}; load {open('/proc/loadavg').read().split()[:3]}")
    t_all = time.time()
    results = []
    for job in jobs(sp, shared, a.work, eval_windows):
        if only and job["label"] not in only:
            continue
        t_job = time.time()
        res = {k: job[k] for k in ("label", "model", "calib", "eval")}
        for k in ("model", "calib", "eval"):
            if res[k].startswith(ROOT + os.sep):
                res[k] = os.path.relpath(res[k], ROOT)
            elif res[k].startswith(shared + os.sep):
                res[k] = "../shared/" + os.path.relpath(res[k], shared)
            elif res[k].startswith(a.work + os.sep):
                res[k] = "WORK/" + os.path.relpath(res[k], a.work)
        results.append(res)
        if "family" in job:
            err = make_synth(sp, job)
            res["synth_args"] = job.get("synth_args")
            if err:
                res["error"] = "synth: " + err
                log(f"  {job['label']}: synth failed: {err}")
                continue
        n = min(job["max_windows"], len(np.load(job["eval"], mmap_mode="r")) // SEQLEN)
        res["eval_windows"] = n
        # the numpy float64 reference, once per OpenBLAS core
        refs = []
        for k in kernels:
            r = run_reference(job["model"], job["calib"], job["eval"], n, k, threads,
                              os.path.join(a.work, f"{job['label']}-ref-{k}"))
            refs.append(r)
            log(f"  {job['label']}: numpy reference under {k} ({r.get('core')}): "
                f"{r.get('nll', r.get('error'))} [{r.get('seconds')} s]")
        ok = [r for r in refs if "nll" in r]
        if not ok:
            res["error"] = "numpy reference: " + refs[0].get("error", "")
            continue
        base = ok[0]
        res["numpy_reference"] = [{k: v for k, v in r.items() if k not in ("bases", "ties")} for r in refs]
        spread = max(r["nll"] for r in ok) - min(r["nll"] for r in ok)
        res["reference_kernel_spread"] = spread
        res["kernel_sensitive"] = bool(spread > KERNEL_TOL)
        res["ties"] = {k: {"above": v["above"], "tied": v["tied"]} for k, v in base["ties"].items()}
        res["reference_projector_spread"] = {
            r["core_asked"]: projector_errors(r["bases"], base["bases"], base["ties"]) for r in ok[1:]}
        if job["label"] in refmd and n == 424:  # REFERENCE.md evaluates all 424 windows
            res["reference"] = {"nll": refmd[job["label"]], "source": "REFERENCE.md"}
            res["reference_md_vs_numpy"] = base["nll"] - refmd[job["label"]]
        else:
            res["reference"] = {"nll": base["nll"], "source": f"numpy (tests/ref), OpenBLAS {base.get('core')}"}
        # slicepipe: readers of each position in the fused dense model, for the projectors
        config, W = mr.load_model_dir(job["model"])
        arch = sr.Cfg(config).arch
        fused = sr.fuse(arch, W)
        pos_readers = _pos_readers(arch)
        res["runs"] = {}
        for tag, backend, prec in RUNS:
            rep, out = slicepipe_job(sp, a.work, f"{job['label']}-{tag}", job["model"], job["calib"], job["eval"], n,
                                     backend, prec, threads)
            if out:
                got = output_bases(fused, mr.read_model(out)["tensors"], pos_readers)
                rep["projector"] = projector_errors(got, base["bases"], base["ties"])
                shutil.rmtree(out, ignore_errors=True)
            res["runs"][tag] = rep
            log(f"  {job['label']}: {tag}: " + (f"nll {rep['nll']:.7f}" + (
                f", eval in f32 {rep.get('nll_eval_f32')}" if prec != "f32" else "") +
                f", max projector error {max(rep['projector'].values()):.2e} [{rep['seconds']} s]"
                if rep["rc"] == 0 else f"exit {rep['rc']}: {rep['error'][-200:]}"))
        # a kernel-sensitive job: slicepipe's own cpu f32 run under the reference's other cores too
        for r in (ok[1:] if res["kernel_sensitive"] else []):
            k = r["core_asked"]
            rep, out = slicepipe_job(sp, a.work, f"{job['label']}-cpu_f32-{k}", job["model"], job["calib"],
                                     job["eval"], n, "cpu", "f32", threads,
                                     {"SLICEPIPE_KEEP_OPENBLAS_CORE": "1", "OPENBLAS_CORETYPE": k})
            if out:
                got = output_bases(fused, mr.read_model(out)["tensors"], pos_readers)
                rep["projector"] = projector_errors(got, r["bases"], r["ties"])
                rep["reference_nll"] = r["nll"]
                shutil.rmtree(out, ignore_errors=True)
            res.setdefault("cpu_f32_other_cores", {})[k] = rep
            log(f"  {job['label']}: cpu_f32 under {k}: " + (f"nll {rep['nll']:.7f} (reference under {k}: "
                f"{r['nll']:.7f})" if rep["rc"] == 0 else f"exit {rep['rc']}: {rep['error'][-200:]}"))
        res["seconds"] = round(time.time() - t_job, 1)
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "settings": settings(kernels, threads, eval_windows),
                       "jobs": results}, f, indent=1)
    total = round(time.time() - t_all, 1)
    with open(a.json, "w") as f:
        json.dump({"machine": machine, "settings": settings(kernels, threads, eval_windows), "seconds": total,
                   "jobs": results}, f, indent=1)
    report(results, machine, kernels, total)
    return 0


def _pos_readers(arch):
    """[(position, reader prefixes)] as positions() names them."""
    first = lambda l: (arch.layers[l]["attn_readers"] + arch.layers[l]["mlp_readers"] if arch.parallel  # noqa: E731
                       else arch.layers[l]["attn_readers"])
    out = [("embed", first(0))]
    for l in range(arch.L):
        if arch.parallel:
            if l < arch.L - 1:
                out.append((f"L{l}.block", first(l + 1)))
        else:
            out.append((f"L{l}.attn", arch.layers[l]["mlp_readers"]))
            if l < arch.L - 1:
                out.append((f"L{l}.mlp", first(l + 1)))
    return out


def settings(kernels, threads, eval_windows):
    return {"sparsity": SPARSITY, "round_to": ROUND_TO, "seqlen": SEQLEN, "nsamples": NSAMPLES, "output_dtype": "f32",
            "threads": threads, "eval_windows_max": eval_windows, "reference_kernels": kernels,
            "kernel_tol": KERNEL_TOL, "bf16_tol": TOL}


def report(results, machine, kernels, total):
    print(f"Per-layer SliceGPT at 0.25, held-out NLL; in parentheses the difference from the float64 reference. "
          f"{machine['cpu']}, {machine['cores']} cores, AVX512-BF16 {'yes' if machine['avx512_bf16'] else 'no'}, "
          f"AMX-BF16 {'yes' if machine['amx_bf16'] else 'no'}; {total:.0f} s.\n")
    print("| job | windows | float64 reference | reference across OpenBLAS cores | cpu f32 | onednn f32 | "
          "onednn bf16, eval in f32 | onednn bf16, eval in bf16 | bf16 within 2e-3 |")
    print("|---|---|---|---|---|---|---|---|---|")
    refusals = {}
    for r in results:
        if "error" in r:
            print(f"| {r['label']} | | {r['error'][:120]} | | | | | | |")
            continue
        ref = r["reference"]["nll"]
        cores = " / ".join(f"{x.get('core') or x['core_asked']} {x['nll']:.7f}" for x in r["numpy_reference"]
                           if "nll" in x)
        sens = f"{cores}: {r['reference_kernel_spread']:.1e}" + (" **kernel-sensitive**" if r["kernel_sensitive"] else "")
        cells = []
        for tag, key in (("cpu_f32", "nll"), ("onednn_f32", "nll"), ("onednn_bf16", "nll_eval_f32"),
                         ("onednn_bf16", "nll")):
            run = r["runs"][tag]
            if run["rc"]:
                labels = refusals.setdefault(f"exit {run['rc']}: {run['error']}", [])
                if r["label"] not in labels:
                    labels.append(r["label"])
                cells.append(f"exit {run['rc']}")
            else:
                cells.append(fmt_nll(run.get(key), ref))
        b = r["runs"]["onednn_bf16"]
        if b["rc"]:
            verdict = "not measured"
        elif r["kernel_sensitive"]:
            verdict = "judged by projector"
        else:
            ds = [abs(b[k] - ref) for k in ("nll", "nll_eval_f32") if k in b]
            verdict = "yes" if ds and max(ds) <= TOL else "**no**"
        refcell = f"{ref:.6f}" + (" (REFERENCE.md)" if r["reference"]["source"] == "REFERENCE.md" else "")
        print(f"| {r['label']} | {r['eval_windows']} | {refcell} | {sens} | " + " | ".join(cells) + f" | {verdict} |")
        for k, o in r.get("cpu_f32_other_cores", {}).items():
            c = fmt_nll(o["nll"], o["reference_nll"]) if o["rc"] == 0 else f"exit {o['rc']}"
            rk = f"{o['reference_nll']:.6f}" if "reference_nll" in o else "—"
            print(f"| {r['label']}, both under OpenBLAS {k} | {r['eval_windows']} | {rk} | | {c} | — | — | — | |")
    for msg, labels in refusals.items():
        print(f"\n{', '.join(labels)}: {msg}")
    print("\nProjector error ‖P − P_ref‖_F of the top-d basis, the largest over the sliced positions (which one in "
          "brackets), against the numpy reference under the first core; the reference under the other core(s) "
          "against it first. Where the reference's eigenvalues tie across the cut (ties column: the position, "
          "how many eigenvalues lie above the tie, how many tie), only the top r is determined, and the error "
          "there is ‖(I − P)·U_r‖_F, what the basis misses of it.\n")
    print("| job | d | ties at the cut | reference, other core | cpu f32 | onednn f32 | onednn bf16 |")
    print("|---|---|---|---|---|---|---|")

    def worst(p):
        if not p:
            return "—"
        k = max(p, key=p.get)
        return f"{p[k]:.1e} ({k})"
    for r in results:
        if "error" in r:
            continue
        d = r["numpy_reference"][0].get("d")
        sp_ = "; ".join(f"{c}: {worst(p)}" for c, p in r["reference_projector_spread"].items()) or "—"
        cells = [worst(r["runs"][t].get("projector")) if r["runs"][t]["rc"] == 0 else f"exit {r['runs'][t]['rc']}"
                 for t, _, _ in RUNS]
        ti = "; ".join(f"{k}: r {v['above']}, {v['tied']} tied" for k, v in r["ties"].items()) or "none"
        print(f"| {r['label']} | {d} | {ti} | {sp_} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
