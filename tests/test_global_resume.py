#!/usr/bin/env python3
"""tests/test_global_resume.py — a basis = "global" job killed anywhere resumes
byte-identically.

llama2xs (BF16, two shards) is sliced at 0.25 with one basis. Then, for each
stage (reader, compute, writer) and each N = 1, 2, ... until the stage has
no Nth commit point, the run is killed with SIGKILL at that point
(SLICEPIPE_KILL_AT, io/base/faults.h) and rerun: the output shards and config.json
must equal the uninterrupted run's, byte for byte. Every layer of the survey
ends at a journaled survey boundary, so a kill there resumes the survey at the
next layer; later kills resume per layer. Only a kill before the first
boundary starts over. Then jobs killed twice, at points in the survey and
after it, must resume each time (the second resume relies on what the first
one journaled) and end byte-identical too.

With SPLIT, the job is policy = "stock" at params 0.8 and that split instead:
split 0 cuts the MLPs alone (no survey: every kill resumes per layer), split
0.5 the residual width too (a survey, as above). With "refit" instead of a
split, it is per-layer SliceGPT at 0.25 with refit = true (docs/algorithm.md
§14: no survey; the spills carry the dense stream too).

  test_global_resume.py SLICEPIPE SHARED WORK [SPLIT|refit]     (77 when SHARED is absent)
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys


def die(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def digest(out):
    names = sorted(n for n in os.listdir(out) if n.endswith(".safetensors") or n in ("config.json", "model.safetensors.index.json"))
    return {n: hashlib.sha256(open(os.path.join(out, n), "rb").read()).hexdigest() for n in names}


def main():
    sp, shared, work = sys.argv[1:4]
    refit = len(sys.argv) > 4 and sys.argv[4] == "refit"
    split = float(sys.argv[4]) if len(sys.argv) > 4 and not refit else None  # None: basis = "global" (or refit)
    survey = split != 0 and not refit
    model = os.path.join(shared, "models", "llama2xs")
    if not os.path.isdir(model):
        print(f"skip: {model} is absent")
        sys.exit(77)
    os.makedirs(work, exist_ok=True)
    calib = os.path.join(shared, "data", "tinystories", "calib.tok512.npy")
    out = os.path.join(work, "out")
    mf = os.path.join(work, "global.toml")
    with open(mf, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = 128\nnsamples = 16\n'
                '[slicing]\n' + ('sparsity = 0.25\nrefit = true\n' if refit else
                                  'sparsity = 0.25\nbasis = "global"\n' if split is None else
                                  f'policy = "stock"\nparams = 0.8\nsplit = {split}\n') + f'[output]\npath = "{out}"\n'
                f'[resources]\nmemory = "1GB"\nthreads = 1\n')
    env = dict(os.environ)
    env.pop("SLICEPIPE_KILL_AT", None)

    def run(kill=None):
        e = dict(env)
        if kill:
            e["SLICEPIPE_KILL_AT"] = kill
        return subprocess.run([sp, "run", mf, "--quiet"], capture_output=True, text=True, env=e)

    shutil.rmtree(out, ignore_errors=True)
    r = run()
    if r.returncode:
        die(f"uninterrupted run: exit {r.returncode}: {r.stderr.strip()}")
    want = digest(out)
    if not any(n.endswith(".safetensors") for n in want):
        die("no output shard")
    cfg = json.load(open(os.path.join(out, "config.json")))
    if split is not None and not (cfg["intermediate_size"] < 192 and (cfg["hidden_size"] < 64) == survey):
        die(f"the stock output is not cut as split {split} asks: intermediate_size {cfg['intermediate_size']} (dense 192), "
            f"hidden_size {cfg['hidden_size']} (dense 64)")
    kills = resumed = survey_resumes = 0
    points = {}
    for stage in ("reader", "compute", "writer"):
        n = 1
        while True:
            shutil.rmtree(out, ignore_errors=True)
            r = run(f"{stage}:{n}")
            if r.returncode == 0:  # the stage has fewer than n commit points
                if digest(out) != want:
                    die(f"{stage}:{n}: an unkilled run differs")
                break
            kills += 1
            r2 = subprocess.run([sp, "run", mf], capture_output=True, text=True, env=env)
            if r2.returncode:
                die(f"{stage}:{n}: the resume failed: exit {r2.returncode}: {r2.stderr.strip()[-400:]}")
            if "resuming after" in r2.stderr:
                resumed += 1
            if "resuming after a survey layer" in r2.stderr:
                survey_resumes += 1
            got = digest(out)
            if got != want:
                bad = [k for k in want if got.get(k) != want[k]]
                die(f"{stage}:{n}: the resumed output differs from the uninterrupted run in {bad}")
            n += 1
            if n > 64:
                die(f"{stage}: more than 64 commit points?")
        points[stage] = n - 1
        print(f"ok   {stage}: killed at each of its {n - 1} commit points, every resume byte-identical")
    if kills < 10 or resumed < kills // 2:
        die(f"only {kills} kills, {resumed} of them resumed after a boundary: the kill points are not being reached")
    print(f"ok   {kills} kills, {resumed} resumed after a journaled boundary (the others started over)")
    if survey and survey_resumes < 2:
        die(f"only {survey_resumes} resumes went on with the survey: its boundaries are not being journaled")
    if not survey and (survey_resumes or points["compute"] != 7):
        die(f"{'refit' if refit else 'split 0'} has no survey, yet {survey_resumes} resumes went on with one and compute has "
            f"{points['compute']} commit points (the embedding, 5 layers, the head: 7)")
    if survey:
        print(f"ok   {survey_resumes} of them went on with the survey after a survey boundary")

    # Killed twice: the second run resumes from the first one's boundaries and
    # is killed again; the third must still resume and end identical.
    # llama2xs has 5 layers: compute's commit points 1-5 are the survey's, 6
    # the embedding, 7-11 the layers, 12 the head; without a survey 1 is the
    # embedding, 2-6 the layers, 7 the head.
    if survey:
        twice = (("compute:2", "compute:2"), ("compute:4", "compute:3"), ("writer:3", "compute:5"), ("compute:8", "writer:2"))
    else:
        twice = (("compute:2", "compute:2"), ("compute:4", "compute:2"), ("writer:3", "compute:1"), ("compute:5", "writer:1"))
    for first, second in twice:
        shutil.rmtree(out, ignore_errors=True)
        if run(first).returncode == 0:
            die(f"{first}: the run was not killed")
        r = run(second)
        if r.returncode == 0:
            die(f"{first} then {second}: the second run was not killed")
        r3 = subprocess.run([sp, "run", mf], capture_output=True, text=True, env=env)
        if r3.returncode:
            die(f"{first} then {second}: the last resume failed: exit {r3.returncode}: {r3.stderr.strip()[-400:]}")
        if "resuming after" not in r3.stderr:
            die(f"{first} then {second}: the last run did not resume ({r3.stderr.strip()[-300:]})")
        if digest(out) != want:
            die(f"{first} then {second}: the output differs from the uninterrupted run")
    print("ok   killed twice " + ("(in the survey, across its end, and after it)" if survey else "(in the layers)") +
          ": every last resume byte-identical")


if __name__ == "__main__":
    main()
