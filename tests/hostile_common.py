"""hostile_common.py — what tests/test_hostile.py and tests/test_hostile_files.py share.

  check(cond, what)   prints "ok"/"FAIL" and the check's description; failures collects them
  run(args, ...)      runs slicepipe (hc.SP, set by the test) without the fault-injection
                      variables the test's own environment may hold; a run past its timeout
                      comes back as exit -999, "TIMEOUT (hang)", never waited on
  last(r)             the last line of a run's stderr: its one error message
  manifest(...)       writes a small slicing manifest (0.25, 100KB shards) and returns its path
"""
import os
import subprocess

failures = []
SP = None


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(args, env=None, timeout=60, **kw):
    e = dict(os.environ)
    for k in ("SLICEPIPE_KILL_AT", "SLICEPIPE_FAULT_WRITE", "SLICEPIPE_FAULT_FSYNC"):
        e.pop(k, None)
    if env:
        e.update(env)
    try:
        return subprocess.run([SP, *args], capture_output=True, text=True, env=e, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, -999, "", "TIMEOUT (hang)")


def last(r):
    return (r.stderr.strip().splitlines() or [""])[-1]


def manifest(path, model, calib, out, extra="", seqlen=64, nsamples=8, shard="100KB"):
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = {seqlen}\n'
                f'nsamples = {nsamples}\n[slicing]\nsparsity = 0.25\n[output]\npath = "{out}"\n'
                f'shard_bytes = "{shard}"\n{extra}')
    return path
