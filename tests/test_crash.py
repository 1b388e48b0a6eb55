#!/usr/bin/python3
"""test_crash.py — crash safety and resume of `slicepipe run`, for real.

usage: test_crash.py SLICEPIPE WORKDIR SHARED_DIR

Models: stories260k (F32, one file) and llama2xs (BF16, two shards) from
SHARED_DIR, or two synthetic models from `slicepipe synth` when it is absent.
Each job writes several output shards (small shard_bytes) so resumes cross
shard boundaries.

1. Kill harness: for every stage (reader, compute, writer, supervisor) and
   every commit point N of it (SLICEPIPE_KILL_AT=stage:N raises SIGKILL there),
   run, resume with the same command, and compare every model file byte for
   byte with an uninterrupted run. Then 20 kills at random moments (SIGKILL
   of the whole process group). Prints the number of kill points tried.
2. The journal: a torn tail is dropped and the resume is identical; corruption
   in the middle is refused (65); a changed manifest or a changed input is
   refused (65, saying what differs and naming --restart); --restart works.
3. Faults: ENOSPC and EIO at the Nth write and the Nth fsync exit 74, and a
   resume gives identical output; a read-only output directory gives 73 before
   any work; a second run on a busy job directory gives 75 naming the PID.
4. Signals: SIGINT to the whole process group and SIGTERM to the supervisor
   mid-run stop the job within seconds (75, saying how to resume), leave no
   stage behind, and the resume is byte-identical.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

failures = []
MODEL_FILES = None


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(sp, man, env=None, extra=()):
    e = dict(os.environ)
    e.pop("SLICEPIPE_KILL_AT", None)
    if env:
        e.update(env)
    return subprocess.run([sp, "run", man, "--quiet", *extra], capture_output=True, text=True, env=e)


def model_bytes(out):
    files = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors") or f in ("model.safetensors.index.json", "config.json", "tokenizer.bin"):
            with open(os.path.join(out, f), "rb") as fh:
                files[f] = fh.read()
    return files


def write_manifest(path, model, calib, out, seqlen, nsamples, extra=""):
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = {seqlen}\n'
                f'nsamples = {nsamples}\n[slicing]\nsparsity = 0.25\n[output]\npath = "{out}"\n'
                f'shard_bytes = "200KB"\n{extra}')


def resume_until_done(sp, man, tries=3):
    for _ in range(tries):
        r = run(sp, man)
        if r.returncode == 0:
            return r
    return r


def kill_harness(sp, work, name, model, calib, seqlen, nsamples):
    man = os.path.join(work, name + ".toml")
    out = os.path.join(work, name)
    write_manifest(man, model, calib, out, seqlen, nsamples)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    r = run(sp, man)
    t_ref = time.time() - t0
    check(r.returncode == 0, f"{name}: uninterrupted run ({r.stderr.strip()[-200:]})")
    ref = model_bytes(out)
    check(len([f for f in ref if f.endswith(".safetensors")]) >= 3, f"{name}: the output has several shards")
    points = 0
    for stage in ("reader", "compute", "writer", "supervisor"):
        n = 0
        while True:
            n += 1
            shutil.rmtree(out, ignore_errors=True)
            k = run(sp, man, {"SLICEPIPE_KILL_AT": f"{stage}:{n}"})
            if k.returncode == 0:
                break  # past the last commit point of this stage
            points += 1
            r = resume_until_done(sp, man)
            same = r.returncode == 0 and model_bytes(out) == ref
            if not same:
                check(False, f"{name}: kill at {stage}:{n} (exit {k.returncode}), resume exit {r.returncode}: "
                             f"{'output differs' if r.returncode == 0 else r.stderr.strip()[-300:]}")
        print(f"     {name}: {stage}: {n - 1} commit points", flush=True)
    check(points > 0, f"{name}: {points} commit-point kills, each resumed byte-identical")
    rnd = random.Random(1234)
    bad = 0
    for i in range(20):
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.Popen([sp, "run", man, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        time.sleep(rnd.uniform(0, t_ref * 1.1))
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        time.sleep(0.05)
        r = resume_until_done(sp, man)
        if not (r.returncode == 0 and model_bytes(out) == ref):
            bad += 1
            print(f"     random kill {i}: resume exit {r.returncode} {r.stderr.strip()[-200:]}")
    check(bad == 0, f"{name}: 20 random kill -9 of the whole job, each resumed byte-identical ({bad} bad)")
    return points + 20, man, out, ref


def journal_cases(sp, work, man, out, ref, model_dir, calib):
    jpath = os.path.join(out, ".slicepipe", "journal")
    # Torn tail: a run killed mid-way, then a record cut short at the end, as
    # a crash in the middle of an append leaves it.
    shutil.rmtree(out, ignore_errors=True)
    run(sp, man, {"SLICEPIPE_KILL_AT": "writer:3"})
    st = subprocess.run([sp, "status", out], capture_output=True, text=True)
    check(st.returncode == 0 and "interrupted" in st.stdout and "of 5 done" in st.stdout,
          f"status of an interrupted job: {st.stdout.splitlines()[1:3] if st.stdout else st.stderr.strip()}")
    with open(jpath, "rb") as f:
        whole = f.read()
    with open(jpath, "ab") as f:
        f.write(whole[-200:-150])
    r = run(sp, man, extra=())
    check(r.returncode == 0 and model_bytes(out) == ref, f"torn journal tail dropped, resume identical ({r.stderr.strip()[-200:]})")
    st = subprocess.run([sp, "status", out], capture_output=True, text=True)
    check(st.returncode == 0 and "complete" in st.stdout, "status of a finished job: complete")
    # Corruption in the middle.
    shutil.rmtree(out, ignore_errors=True)
    run(sp, man, {"SLICEPIPE_KILL_AT": "writer:4"})
    with open(jpath, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 3] ^= 0x40
        f.seek(0)
        f.write(data)
    r = run(sp, man)
    check(r.returncode == 65 and "corrupt" in r.stderr, f"corrupt journal middle: exit 65 ({r.stderr.strip()[-200:]})")
    r = run(sp, man, extra=("--restart",))
    check(r.returncode == 0 and model_bytes(out) == ref, "--restart after corruption gives the same output")
    # A changed manifest.
    shutil.rmtree(out, ignore_errors=True)
    run(sp, man, {"SLICEPIPE_KILL_AT": "writer:3"})
    text = open(man).read()
    man2 = man.replace(".toml", "-changed.toml")
    open(man2, "w").write(text.replace("sparsity = 0.25", "sparsity = 0.125"))
    r = run(sp, man2)
    check(r.returncode == 65 and "manifest" in r.stderr and "--restart" in r.stderr,
          f"changed manifest refused: exit {r.returncode} ({r.stderr.strip()[-200:]})")
    # A changed input: a copy of the model whose shard header changes between runs.
    mcopy = os.path.join(work, "model-copy")
    shutil.rmtree(mcopy, ignore_errors=True)
    shutil.copytree(model_dir, mcopy)
    outc = os.path.join(work, "changed-input")
    manc = os.path.join(work, "changed-input.toml")
    write_manifest(manc, mcopy, calib, outc, 64, 8)
    shutil.rmtree(outc, ignore_errors=True)
    k = run(sp, manc, {"SLICEPIPE_KILL_AT": "writer:3"})
    shard = sorted(f for f in os.listdir(mcopy) if f.endswith(".safetensors"))[0]
    sp_path = os.path.join(mcopy, shard)
    with open(sp_path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    hdr = json.loads(data[8:8 + n])
    hdr.setdefault("__metadata__", {})["edited"] = "yes"
    new = json.dumps(hdr).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    with open(sp_path, "wb") as f:
        f.write(len(new).to_bytes(8, "little") + new + data[8 + n:])
    r = run(sp, manc)
    check(k.returncode != 0 and r.returncode == 65 and "input" in r.stderr and "--restart" in r.stderr,
          f"input changed between runs refused: exit {r.returncode} ({r.stderr.strip()[-200:]})")


def fault_cases(sp, work, man, out, ref):
    # Counts are per process: N=3 lands on the journal, larger N on spill and
    # shard writes in the compute and writer stages.
    for kind, ns in (("WRITE", (3, 12, 40)), ("FSYNC", (3, 6))):
        for n in ns:
            for err in ("ENOSPC", "EIO"):
                shutil.rmtree(out, ignore_errors=True)
                r = run(sp, man, {f"SLICEPIPE_FAULT_{kind}": f"{n}:{err}"})
                r2 = resume_until_done(sp, man)
                check(r.returncode == 74 and r2.returncode == 0 and model_bytes(out) == ref,
                      f"{err} at write/fsync #{n} ({kind.lower()}): exit {r.returncode} ({r.stderr.strip()[-110:]}), "
                      f"resume identical")
    # Two concurrent runs (a longer job, so the first surely holds the lock).
    manl = os.path.join(work, "long.toml")
    outl = os.path.join(work, "long")
    text = open(man).read()
    open(manl, "w").write(text.replace(f'path = "{out}"', f'path = "{outl}"').replace("nsamples = 16", "nsamples = 256"))
    shutil.rmtree(outl, ignore_errors=True)
    p = subprocess.Popen([sp, "run", manl, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_end = time.time() + 20
    lock = os.path.join(outl, ".slicepipe", "lock")
    r = None
    while time.time() < t_end and p.poll() is None:
        if os.path.exists(lock) and os.path.getsize(lock) > 0:
            r = run(sp, manl)
            break
        time.sleep(0.005)
    p.wait()
    if r is not None:
        check(r.returncode == 75 and str(p.pid) in r.stderr, f"second run on a busy job: exit {r.returncode} naming "
                                                            f"PID {p.pid} ({r.stderr.strip()[-160:]})")
    else:
        check(False, "could not catch the first run holding the lock")
    # A read-only output directory, as an unprivileged user.
    ro = os.path.join(work, "ro")
    os.makedirs(ro, exist_ok=True)
    os.chmod(ro, 0o755)
    os.chmod(work, 0o755)
    manr = os.path.join(work, "ro.toml")
    text = open(man).read().replace(f'path = "{out}"', f'path = "{ro}/out"')
    open(manr, "w").write(text)
    os.chmod(manr, 0o644)
    if os.geteuid() == 0 and shutil.which("setpriv"):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sp, "run", manr, "--quiet"],
                           capture_output=True, text=True)
        check(r.returncode == 73 and not os.path.exists(os.path.join(ro, "out")),
              f"read-only output directory: exit {r.returncode} before any work ({r.stderr.strip()[-160:]})")
    else:
        os.chmod(ro, 0o555)
        r = run(sp, manr)
        check(r.returncode == 73, f"read-only output directory: exit {r.returncode}")


def signal_cases(sp, work, man, out):
    """SIGINT (a terminal's ^C: the whole process group) and SIGTERM (the
    supervisor alone) mid-run: exit 75 within seconds saying how to resume, no
    stage left behind, and the resume is byte-identical to an uninterrupted run."""
    mans = os.path.join(work, "signals.toml")
    outs = os.path.join(work, "signals")
    text = open(man).read()
    open(mans, "w").write(text.replace(f'path = "{out}"', f'path = "{outs}"').replace("nsamples = 16", "nsamples = 256"))
    shutil.rmtree(outs, ignore_errors=True)
    r = run(sp, mans)
    ref = model_bytes(outs)
    check(r.returncode == 0, "signals: the uninterrupted reference run")
    jpath = os.path.join(outs, ".slicepipe", "journal")
    for sig, group in ((signal.SIGINT, True), (signal.SIGTERM, False)):
        shutil.rmtree(outs, ignore_errors=True)
        p = subprocess.Popen([sp, "run", mans, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        t_end = time.time() + 30
        while time.time() < t_end and p.poll() is None:  # until a layer is journaled (the embedding's is ~400 bytes)
            if os.path.exists(jpath) and os.path.getsize(jpath) > 4000:
                break
            time.sleep(0.005)
        t0 = time.time()
        if group:
            os.killpg(p.pid, sig)
        else:
            os.kill(p.pid, sig)
        try:
            _, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
        took = time.time() - t0
        time.sleep(0.1)
        left = subprocess.run(["pgrep", "-s", str(p.pid)], capture_output=True, text=True).stdout.split()
        r = resume_until_done(sp, mans)
        check(p.returncode == 75 and "resume" in err and took < 10 and not left and r.returncode == 0 and
              model_bytes(outs) == ref,
              f"{signal.Signals(sig).name} {'to the process group' if group else 'to the supervisor'} mid-run: exit "
              f"{p.returncode} in {took:.1f}s ({err.strip()[-120:]}), stages left {left}, resume identical")


def main():
    sp, work, shared = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if os.path.isdir(shared):
        data = os.path.join(shared, "data", "tinystories", "calib.tok512.npy")
        jobs = [("stories260k", os.path.join(shared, "models", "stories260k"), data, 128, 16),
                ("llama2xs", os.path.join(shared, "models", "llama2xs"), data, 128, 16)]
    else:
        print("../shared absent: using synthetic models")
        jobs = []
        for name, dt in (("synth-f32", "f32"), ("synth-bf16", "bf16")):
            d = os.path.join(work, name + "-model")
            subprocess.run([sp, "synth", d, "--hidden", "64", "--layers", "4", "--ffn", "160", "--heads", "8",
                            "--kv-heads", "4", "--vocab", "512", "--dtype", dt, "--shards", "2", "--tokens", "4096",
                            "--quiet"], check=True, capture_output=True)
            jobs.append((name, d, os.path.join(d, "calib.npy"), 128, 16))
    total = 0
    first = None
    for name, model, calib, seqlen, nsamples in jobs:
        n, man, out, ref = kill_harness(sp, work, name, model, calib, seqlen, nsamples)
        total += n
        if first is None:
            first = (man, out, ref, model, calib)
    print(f"kill points tried: {total}, all resumed byte-identical" if not failures else f"kill points tried: {total}")
    man, out, ref, model, calib = first
    journal_cases(sp, work, man, out, ref, model, calib)
    fault_cases(sp, work, man, out, ref)
    signal_cases(sp, work, man, out)
    print(f"{len(failures)} failed" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


main()
