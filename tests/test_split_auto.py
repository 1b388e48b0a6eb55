#!/usr/bin/env python3
"""tests/test_split_auto.py — [slicing] split = "auto" for policy = "stock"
(docs/algorithm.md §12, "Choosing the split").

On stories260k at params 0.8 (16 calibration windows of 128, the last 4 held
back):

1. The wiring. Each candidate split (0, 0.5, 1) is run here by hand as a fixed
   split on the first 12 windows, and `slicepipe eval` scores it on windows
   12..15 of the calibration file, written out here as their own token file;
   the dense model likewise. The NLLs config.json records must be these, the
   chosen split the lowest of them, and the output's tensors byte-identical
   to a fixed-split run with the chosen split on all 16 windows.
2. Resume. The auto run is killed with SIGKILL (its whole process group) at
   8 points spread over an uninterrupted run's wall time, in the candidates,
   their scoring and the final job; rerun to the end each time, the output
   (shards and config.json) must be byte-identical to the uninterrupted run.
   A killed run must leave no candidate folder behind once it finishes, and
   `slicepipe status` on it lists the recorded scores (and the candidate's job).
3. --restart measures the candidates again (nothing "recorded") and gives
   the same bytes; a stale score (its key no longer matching) is measured again.

  test_split_auto.py SLICEPIPE SHARED WORK      (77 when SHARED is absent)
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from test_global_resume import die, digest  # the same output digest as the other resume tests

SEQLEN, NSAMPLES, HOLD = 128, 16, 4


def tensors(out):
    return {n: v for n, v in digest(out).items() if n.endswith(".safetensors")}


def main():
    sp, shared, work = sys.argv[1:4]
    model = os.path.join(shared, "models", "stories260k")
    calib = os.path.join(shared, "data", "tinystories", "calib.tok512.npy")
    if not os.path.isdir(model) or not os.path.exists(calib):
        print(f"skip: {model} or {calib} is absent")
        sys.exit(77)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    def manifest(name, split, nsamples=NSAMPLES, extra=""):
        out = os.path.join(work, name)
        mf = out + ".toml"
        sv = '"auto"' if split == "auto" else repr(split)
        with open(mf, "w") as f:
            f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = {SEQLEN}\nnsamples = {nsamples}\n'
                    f'[slicing]\npolicy = "stock"\nparams = 0.8\nsplit = {sv}\n{extra}[output]\npath = "{out}"\ndtype = "f32"\n'
                    f'[resources]\nmemory = "1GB"\nthreads = 1\n')
        return mf, out

    def run(mf, *args, check=True):
        r = subprocess.run([sp, "run", mf, *args], capture_output=True, text=True)
        if check and r.returncode:
            die(f"{os.path.basename(mf)} {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()[-600:]}")
        return r

    def eval_nll(out, toks):
        r = subprocess.run([sp, "eval", out, "--tokens", toks, "--seqlen", str(SEQLEN), "--windows", str(HOLD),
                            "--threads", "1", "--json", "--quiet"], capture_output=True, text=True)
        if r.returncode:
            die(f"eval {out}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])["nll"]  # 9 decimals

    # 1. the wiring
    mf, out = manifest("auto", "auto")
    t0 = time.time()
    r = run(mf)
    wall = time.time() - t0
    want = digest(out)
    cfg = json.load(open(os.path.join(out, "config.json")))["slicepipe"]
    sa = cfg.get("split_auto")
    if not sa or sa.get("holdout_windows") != HOLD or len(sa.get("candidates", [])) != 3:
        die(f"config.json's slicepipe block lacks the auto split's record (holdout {HOLD}, 3 candidates): {sa}")
    rep = json.load(open(os.path.join(out, "slicing.json"))).get("split_auto") or {}

    def same(a, b):  # the same record; config.json's writer may print a double with fewer digits
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, float) or isinstance(b, float):
            return a is not None and b is not None and abs(a - b) <= 1e-13 * max(1.0, abs(b))
        return a == b
    if not same(rep, sa):
        die(f"slicing.json's split_auto {rep} differs from config.json's {sa}")
    if "How the split was chosen" not in open(os.path.join(out, "report.html")).read():
        die("report.html has no section on the auto split")
    ids = np.load(calib).astype(np.int32)
    held = os.path.join(work, "held.npy")
    np.save(held, ids[(NSAMPLES - HOLD) * SEQLEN:NSAMPLES * SEQLEN])
    dense = eval_nll(model, held)
    if abs(dense - sa["nll_dense"]) > 1e-9:
        die(f"dense on the held-back windows: slicepipe eval {dense:.6f}, recorded {sa['nll_dense']:.6f}")
    got = {}
    for c in sa["candidates"]:
        s = c["split"]
        cmf, cout = manifest(f"cand{s:g}", s, nsamples=NSAMPLES - HOLD)
        run(cmf)
        got[s] = eval_nll(cout, held)
        if abs(got[s] - c["nll"]) > 1e-9:
            die(f"split {s:g}: its job on the first {NSAMPLES - HOLD} windows scores {got[s]:.6f} on the held-back ones, "
                f"the auto run recorded {c['nll']:.6f}")
        print(f"ok   split {s:g}: held-back NLL {got[s]:.6f} as recorded (dense {dense:.6f})")
    best = min(got, key=lambda s: (got[s], s))
    if sa["chosen"] != best or cfg["split"] != best:
        die(f"chose {sa['chosen']} (config split {cfg['split']}), the lowest held-back NLL is split {best}")
    fmf, fout = manifest("fixed", best)
    run(fmf)
    if tensors(fout) != tensors(out):
        die(f"the auto output's tensors differ from a fixed split {best} run on all {NSAMPLES} windows")
    if "split       auto" not in r.stdout:
        die(f"the summary does not say how the split was chosen: {r.stdout.strip()}")
    print(f"ok   chose split {best:g}, the lowest; tensors byte-identical to a fixed split {best:g} run")

    # 2. killed anywhere, resumed byte-identical
    kills = 0
    for k in range(8):
        shutil.rmtree(out)
        delay = wall * (k + 0.5) / 8
        p = subprocess.Popen([sp, "run", mf, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        time.sleep(delay)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
        if os.path.isdir(os.path.join(out, ".slicepipe", "split-auto")):
            st = subprocess.run([sp, "status", out], capture_output=True, text=True)
            if st.returncode not in (0, 66) or 'split:       "auto"' not in st.stdout:
                die(f"status of a killed auto run: exit {st.returncode}: {st.stdout.strip()[-300:]} {st.stderr.strip()[-300:]}")
        r2 = run(mf)
        if digest(out) != want:
            die(f"killed at {delay:.2f} s of {wall:.2f}: the resumed output differs from the uninterrupted run")
        left = [n for n in os.listdir(os.path.join(out, ".slicepipe", "split-auto")) if not n.endswith(".json")]
        if left:
            die(f"killed at {delay:.2f} s: candidate folders left behind: {left}")
    if kills < 3:
        die(f"only {kills} of 8 runs were still running when killed: the kill points are not being reached")
    print(f"ok   killed {kills} times over the run's {wall:.2f} s; every resume byte-identical, no candidate left")

    # 3. --restart, and a stale score
    r3 = run(mf, "--restart")
    if "recorded" in r3.stderr or digest(out) != want:
        die("--restart reused a recorded score or changed the output")
    with open(mf, "a") as f:
        f.write("# an edit: the scores' key changes\n")
    r4 = run(mf)
    if "recorded" in r4.stderr or digest(out) != want:
        die("after the manifest changed, a stale score was reused or the output changed")
    r5 = run(mf)
    if r5.stderr.count("recorded") != 3:
        die(f"an unchanged rerun did not reuse the 3 recorded scores: {r5.stderr.strip()[-400:]}")
    print("ok   --restart and a changed manifest measure again; an unchanged rerun reuses the scores")


if __name__ == "__main__":
    main()
