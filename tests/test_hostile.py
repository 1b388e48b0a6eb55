#!/usr/bin/python3
"""test_hostile.py — slicepipe used carelessly or with hostile intent (issue 14).

usage: test_hostile.py SLICEPIPE WORKDIR [--sanitized]

With --sanitized (an ASan/UBSan build) the [eval] max RSS is printed but not
held to the budget (the sanitizer's shadow memory is not slicepipe's).

Real files, real processes, real signals, on small synthetic models from
`slicepipe synth` (nothing outside the repository). One group per class of
the issue; each check names the class:

  spill     two jobs sharing a spill_dir, run at once: both byte-identical to
            solo runs (spills are named after the job, created exclusively)
  overlap   an output inside the model folder, a symlink to the model folder,
            an output that is the folder an index points into: 64, input intact
  foreign   a non-empty folder that is not a job: 73; --restart keeps a file
            slicepipe never wrote; synth refuses to replace a real model
  changed   a same-size edit of tensor data between runs (mtime restored), of a
            tensor already consumed and of one not yet read: 65
  complete  a finished job with config.json deleted: restored, identical; its
            last shard deleted or damaged: 65
  nonfinite a valid F32 model whose output overflows F16: 65 naming the tensor
            and bf16; no complete output
  symlink   planted links at OUT/.slicepipe/lock and OUT/model.safetensors.tmp
            and at eval's spill names: their targets untouched; a LICENSE side
            file linking outside the model folder: 65 before any work
  fifo      a FIFO as manifest, tokens, config.json, shard, side file, journal:
            a clear error within seconds, never a hang; an oversized
            tokenizer.json is refused before any work
  streams   fds 0-2 closed: the run succeeds, identical; progress into a closed
            pipe: the run succeeds (SIGPIPE ignored)
  limits    [eval] windows x seqlen overflowing, --seqlen out of range: 64
            before any work; a RoPE seqlen past max_position_embeddings warns;
            the [eval] step stays within [resources] memory (max RSS measured)
  small     status leaves the lock and journal untouched; --dump-logits cut
            short by ENOSPC leaves no file; usage errors say what is wrong
"""
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_common as hc  # noqa: E402
from hostile_common import check, failures, last, manifest, run  # noqa: E402

def model_bytes(out):
    files = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors") or f in ("model.safetensors.index.json", "config.json"):
            with open(os.path.join(out, f), "rb") as fh:
                files[f] = fh.read()
    return files


SYNTH = ["--hidden", "64", "--layers", "3", "--ffn", "160", "--heads", "4", "--vocab", "256", "--tokens", "4096",
         "--shards", "2", "--quiet"]


def synth(d, *extra):
    shutil.rmtree(d, ignore_errors=True)
    r = run(["synth", d, *SYNTH, *extra])
    assert r.returncode == 0, r.stderr
    return d


def read_header(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), 8 + n, data


def tree_state(d):
    st = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            if os.path.islink(p):
                continue
            with open(p, "rb") as fh:
                st[p] = fh.read()
    return st


class Ctx:
    pass


def setup(work):
    c = Ctx()
    c.work = work
    c.model = synth(os.path.join(work, "m"))
    c.calib = os.path.join(c.model, "calib.npy")
    c.ref_out = os.path.join(work, "ref")
    c.man = manifest(os.path.join(work, "ref.toml"), c.model, c.calib, c.ref_out)
    r = run(["run", c.man, "--quiet"])
    assert r.returncode == 0, r.stderr
    c.ref = model_bytes(c.ref_out)
    assert len([f for f in c.ref if f.endswith(".safetensors")]) >= 2
    return c


def job(c, name, model=None, extra="", **kw):
    out = os.path.join(c.work, name)
    shutil.rmtree(out, ignore_errors=True)
    return manifest(os.path.join(c.work, name + ".toml"), model or c.model, c.calib, out, extra, **kw), out


# ---------------------------------------------------------------- classes


def t_spill(c):
    sd = os.path.join(c.work, "shared-spill")
    os.makedirs(sd, exist_ok=True)
    # Job B is another input (another seed): sharing spills would mix them.
    mb = synth(os.path.join(c.work, "m-seed2"), "--seed", "2")
    ma, oa = job(c, "spill-a", extra=f'[resources]\nspill_dir = "{sd}"\n', nsamples=32)
    mbm = manifest(os.path.join(c.work, "spill-b.toml"), mb, os.path.join(mb, "calib.npy"),
                   os.path.join(c.work, "spill-b"), f'[resources]\nspill_dir = "{sd}"\n', nsamples=32)
    ob = os.path.join(c.work, "spill-b")
    shutil.rmtree(ob, ignore_errors=True)
    solo_b_man, solo_b = manifest(os.path.join(c.work, "solo-b.toml"), mb, os.path.join(mb, "calib.npy"),
                                  os.path.join(c.work, "solo-b"), nsamples=32), os.path.join(c.work, "solo-b")
    solo_a_man, solo_a = job(c, "solo-a", nsamples=32)
    shutil.rmtree(solo_b, ignore_errors=True)
    run(["run", solo_a_man, "--quiet"])
    run(["run", solo_b_man, "--quiet"])
    rs = {}

    def go(k, m):
        rs[k] = run(["run", m, "--quiet"])
    ts = [threading.Thread(target=go, args=("a", ma)), threading.Thread(target=go, args=("b", mbm))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ok = rs["a"].returncode == 0 and rs["b"].returncode == 0
    check(ok and model_bytes(oa) == model_bytes(solo_a) and model_bytes(ob) == model_bytes(solo_b),
          f"spill: two jobs sharing a spill_dir at once are each byte-identical to a solo run "
          f"(exit {rs['a'].returncode}, {rs['b'].returncode})")
    va, vb = run(["verify", oa]), run(["verify", ob])
    check(va.returncode == 0 and vb.returncode == 0, "spill: both outputs verify")


def t_overlap(c):
    before = tree_state(c.model)
    m, out = job(c, "ov")
    # (a) inside the model folder
    for name, o in (("inside", os.path.join(c.model, "sliced")), ("deep inside", os.path.join(c.model, "a", "b"))):
        manifest(m, c.model, c.calib, o)
        r = run(["run", m, "--quiet"])
        check(r.returncode == 64 and not os.path.exists(o) and "input" in last(r),
              f"overlap: an output {name} the model folder: exit {r.returncode}, nothing created ({last(r)})")
    # (b) a symlink to the model folder
    link = os.path.join(c.work, "model-link")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(c.model, link)
    manifest(m, c.model, c.calib, link)
    r = run(["run", m, "--quiet"])
    check(r.returncode == 64 and tree_state(c.model) == before,
          f"overlap: a symlink to the model folder as output: exit {r.returncode}, input intact ({last(r)})")
    # (c) the output contains the model folder
    manifest(m, c.model, c.calib, c.work)
    r = run(["run", m, "--quiet"])
    check(r.returncode == 64, f"overlap: an output containing the model folder: exit {r.returncode} ({last(r)})")
    # (d) an index pointing into a subfolder that is the output
    mi = os.path.join(c.work, "m-indexed")
    shutil.rmtree(mi, ignore_errors=True)
    shutil.copytree(c.model, mi)
    idx = json.load(open(os.path.join(mi, "model.safetensors.index.json")))
    os.makedirs(os.path.join(mi, "shards"))
    for f in sorted(set(idx["weight_map"].values())):
        os.rename(os.path.join(mi, f), os.path.join(mi, "shards", f))
    idx["weight_map"] = {k: "shards/" + v for k, v in idx["weight_map"].items()}
    json.dump(idx, open(os.path.join(mi, "model.safetensors.index.json"), "w"))
    b2 = tree_state(mi)
    manifest(m, mi, c.calib, os.path.join(mi, "shards"))
    r = run(["run", m, "--quiet"])
    check(r.returncode == 64 and tree_state(mi) == b2,
          f"overlap: output = the folder the index points into: exit {r.returncode}, shards intact ({last(r)})")


def t_foreign(c):
    m, out = job(c, "foreign")
    os.makedirs(out)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(b"someone else's model")
    r = run(["run", m, "--quiet"])
    check(r.returncode == 73 and open(os.path.join(out, "model.safetensors"), "rb").read() == b"someone else's model",
          f"foreign: a non-empty folder that is not a job: exit {r.returncode}, its file intact ({last(r)})")
    # --restart removes only what slicepipe writes.
    shutil.rmtree(out)
    run(["run", m, "--quiet"], {"SLICEPIPE_KILL_AT": "writer:2"})
    mine = os.path.join(out, "my-weights.safetensors")
    open(mine, "wb").write(b"precious")
    r = run(["run", m, "--quiet", "--restart"])
    check(r.returncode == 0 and os.path.exists(mine) and model_bytes(out) == {**c.ref, "my-weights.safetensors": b"precious"},
          f"foreign: --restart keeps my-weights.safetensors and gives the reference output ({last(r)})")
    # synth never replaces a real model; it may redo its own output.
    real = os.path.join(c.work, "real-model")
    shutil.rmtree(real, ignore_errors=True)
    shutil.copytree(c.ref_out, real)
    before = tree_state(real)
    r = run(["synth", real, "--quiet"])
    check(r.returncode == 73 and tree_state(real) == before,
          f"foreign: synth onto an existing model: exit {r.returncode}, untouched ({last(r)})")
    r = run(["synth", c.model, *SYNTH])
    check(r.returncode == 0, f"foreign: synth redoes its own earlier output ({last(r)})")


def edit_tensor(path, name, mtime_keep=True):
    hdr, base, data = read_header(path)
    b, e = hdr[name]["data_offsets"]
    st = os.stat(path)
    buf = bytearray(data)
    buf[base + b] ^= 0x01  # same size, one bit
    with open(path, "r+b") as f:
        f.write(buf)
    if mtime_keep:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def t_changed(c):
    for which, pick in (("already consumed (layer 0)", "model.layers.0.self_attn.q_proj.weight"),
                        ("not yet read (last layer)", "model.layers.2.mlp.down_proj.weight")):
        mc = os.path.join(c.work, "m-changed")
        shutil.rmtree(mc, ignore_errors=True)
        shutil.copytree(c.model, mc)
        m, out = job(c, "changed", model=mc)
        k = run(["run", m, "--quiet"], {"SLICEPIPE_KILL_AT": "writer:2"})
        idx = json.load(open(os.path.join(mc, "model.safetensors.index.json")))["weight_map"]
        edit_tensor(os.path.join(mc, idx[pick]), pick)
        r = run(["run", m, "--quiet"])
        check(k.returncode != 0 and r.returncode == 65 and "changed" in last(r) and "--restart" in r.stderr,
              f"changed: a same-size edit of a tensor {which}, mtime restored: exit {r.returncode} ({last(r)})")
        r2 = run(["run", m, "--quiet"])
        check(r2.returncode == 65, f"changed: ... and a second rerun is refused too (exit {r2.returncode})")


def t_complete(c):
    m, out = job(c, "complete")
    run(["run", m, "--quiet"])
    os.unlink(os.path.join(out, "config.json"))
    r = run(["run", m])
    check(r.returncode == 0 and model_bytes(out) == c.ref and "restored" in r.stderr,
          f"complete: config.json deleted: restored, identical ({last(r)})")
    shards = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    os.unlink(os.path.join(out, shards[-1]))
    r = run(["run", m, "--quiet"])
    check(r.returncode == 65 and shards[-1] in last(r) and "missing" in last(r),
          f"complete: last shard deleted: exit {r.returncode} ({last(r)})")
    run(["run", m, "--quiet", "--restart"])
    p = os.path.join(out, shards[0])
    data = bytearray(open(p, "rb").read())
    data[-5] ^= 0x10
    open(p, "wb").write(data)
    r = run(["run", m, "--quiet"])
    check(r.returncode == 65, f"complete: a damaged shard in a finished job: exit {r.returncode} ({last(r)})")


def t_nonfinite(c):
    mf = synth(os.path.join(c.work, "m-f32"), "--dtype", "f32", "--shards", "1")
    path = os.path.join(mf, "model.safetensors")
    hdr, base, data = read_header(path)
    name = "model.embed_tokens.weight"
    b, e = hdr[name]["data_offsets"]
    a = np.frombuffer(data[base + b:base + e], dtype="<f4").copy() * 3e5  # finite in F32, not in F16
    buf = bytearray(data)
    buf[base + b:base + e] = a.astype("<f4").tobytes()
    open(path, "wb").write(buf)
    r0 = run(["inspect", mf])
    m, out = job(c, "nonfinite", model=mf, extra='dtype = "f16"\n')
    m = manifest(m, mf, os.path.join(mf, "calib.npy"), out, 'dtype = "f16"\n')
    r = run(["run", m, "--quiet"])
    st = run(["status", out])
    check(r0.returncode == 0 and r.returncode == 65 and name in last(r) and "bf16" in last(r)
          and "complete" not in st.stdout,
          f"nonfinite: F16 overflow refused naming the tensor and the dtype: exit {r.returncode} ({last(r)})")


def t_symlink(c):
    victim = os.path.join(c.work, "victim.txt")
    for planted in (os.path.join(".slicepipe", "lock"), "model.safetensors.tmp", "model-00001-of-00004.safetensors.tmp"):
        open(victim, "w").write("precious\n")
        m, out = job(c, "sym")
        os.makedirs(os.path.join(out, ".slicepipe"))
        os.symlink(victim, os.path.join(out, planted))
        r = run(["run", m, "--quiet"])
        check(open(victim).read() == "precious\n" and r.returncode in (0, 73) and
              (r.returncode == 73 or model_bytes(out) == c.ref),
              f"symlink: planted link at OUT/{planted}: target untouched, exit {r.returncode} ({last(r)})")
    # eval's spills: names are random, made with O_EXCL|O_NOFOLLOW.
    td = os.path.join(c.work, "tmpdir")
    shutil.rmtree(td, ignore_errors=True)
    os.makedirs(td)
    open(victim, "w").write("precious\n")
    base = os.getpid()
    for pid in range(base, base + 400):
        for s in "ab":
            os.symlink(victim, os.path.join(td, f"slicepipe-eval-{pid}-{s}.act"))
    r = run(["eval", c.model, "--tokens", c.calib, "--seqlen", "64", "--quiet"], {"TMPDIR": td})
    left = [f for f in os.listdir(td) if not os.path.islink(os.path.join(td, f))]
    check(r.returncode == 0 and open(victim).read() == "precious\n" and not left,
          f"symlink: links at eval's old spill names: target untouched, no spill left ({last(r)})")
    # A side file that escapes the model folder is refused before any work.
    ml = os.path.join(c.work, "m-license")
    shutil.rmtree(ml, ignore_errors=True)
    shutil.copytree(c.model, ml)
    os.symlink(victim, os.path.join(ml, "LICENSE"))
    m, out = job(c, "license", model=ml)
    m = manifest(m, ml, c.calib, out)
    r = run(["run", m, "--quiet"])
    check(r.returncode == 65 and not os.path.exists(out) and "LICENSE" in last(r),
          f"symlink: LICENSE linking outside the model folder: exit {r.returncode}, nothing created ({last(r)})")


def t_fifo(c):
    def fifo_at(p):
        if os.path.lexists(p):
            os.unlink(p)
        os.mkfifo(p)

    cases = []
    # the manifest
    fm = os.path.join(c.work, "fifo.toml")
    fifo_at(fm)
    cases.append(("manifest", ["run", fm, "--quiet"], None))
    # the token file
    ft = os.path.join(c.work, "fifo-tokens.npy")
    fifo_at(ft)
    m, out = job(c, "fifo-tok")
    manifest(m, c.model, ft, out)
    cases.append(("token file", ["run", m, "--quiet"], out))
    # config.json, a shard, a side file: in copies of the model
    for what, name in (("config.json", "config.json"), ("a shard", None), ("a side file", "tokenizer.json")):
        mc = os.path.join(c.work, "m-fifo-" + what.replace(" ", "-").replace(".", ""))
        shutil.rmtree(mc, ignore_errors=True)
        shutil.copytree(c.model, mc)
        if name is None:
            name = sorted(f for f in os.listdir(mc) if f.endswith(".safetensors"))[0]
        fifo_at(os.path.join(mc, name))
        m, out = job(c, "fifo-" + os.path.basename(mc))
        manifest(m, mc, c.calib, out)
        cases.append((what, ["run", m, "--quiet"], out))
    for what, args, out in cases:
        t0 = time.time()
        r = run(args, timeout=20)
        check(r.returncode in (64 if what == "manifest" else 65, 66) and time.time() - t0 < 15 and (out is None or not os.path.exists(out)),
              f"fifo: {what} is a FIFO: exit {r.returncode} in {time.time() - t0:.1f}s, nothing created ({last(r)})")
    # the journal
    m, out = job(c, "fifo-journal")
    run(["run", m, "--quiet"], {"SLICEPIPE_KILL_AT": "writer:1"})
    jp = os.path.join(out, ".slicepipe", "journal")
    fifo_at(jp)
    t0 = time.time()
    r = run(["run", m, "--quiet"], timeout=20)
    s = run(["status", out], timeout=20)
    check(r.returncode == 65 and s.returncode == 65 and time.time() - t0 < 15,
          f"fifo: the journal is a FIFO: run exit {r.returncode}, status exit {s.returncode} ({last(r)})")
    # an oversized side file, found before any work
    mc = os.path.join(c.work, "m-bigtok")
    shutil.rmtree(mc, ignore_errors=True)
    shutil.copytree(c.model, mc)
    with open(os.path.join(mc, "tokenizer.json"), "wb") as f:
        f.truncate((1 << 30) + 1)
    m, out = job(c, "bigtok", model=mc)
    manifest(m, mc, c.calib, out)
    t0 = time.time()
    r = run(["run", m, "--quiet"])
    check(r.returncode == 65 and not os.path.exists(out) and "tokenizer.json" in last(r),
          f"fifo: an oversized tokenizer.json refused before any work in {time.time() - t0:.1f}s ({last(r)})")
    os.unlink(os.path.join(mc, "tokenizer.json"))


def t_streams(c):
    m, out = job(c, "streams")

    def close_std():
        for fd in (0, 1, 2):
            os.close(fd)
    p = subprocess.run([hc.SP, "run", m], preexec_fn=close_std, timeout=60)
    check(p.returncode == 0 and model_bytes(out) == c.ref,
          f"streams: fds 0-2 closed: exit {p.returncode}, identical output")
    shutil.rmtree(out)
    rfd, wfd = os.pipe()
    os.close(rfd)  # the log reader is gone before the first line
    p = subprocess.run([hc.SP, "run", m], stdin=subprocess.DEVNULL, stdout=wfd, stderr=wfd, timeout=60)
    os.close(wfd)
    check(p.returncode == 0 and model_bytes(out) == c.ref,
          f"streams: progress into a closed pipe: exit {p.returncode} (not SIGPIPE), identical output")


def t_limits(c):
    m, out = job(c, "limits", extra=f'[eval]\ntokens = "{c.calib}"\nseqlen = 64\nwindows = 4611686018427387904\n')
    r = run(["run", m, "--quiet"])
    check(r.returncode in (64, 65) and not os.path.exists(out) and "eval" in last(r),
          f"limits: [eval] windows x seqlen overflowing: exit {r.returncode} before any work ({last(r)})")
    for v in ("9223372036854775808", "99999999999999999999", "9223372036854775807"):
        r = run(["eval", c.model, "--tokens", c.calib, "--seqlen", v, "--quiet"])
        check(r.returncode in (64, 65) and last(r).startswith("slicepipe: ") and len(last(r)) > 20,
              f"limits: eval --seqlen {v}: exit {r.returncode} ({last(r)})")
    mp = synth(os.path.join(c.work, "m-pos"), "--max-pos", "32")
    m, out = job(c, "ropewarn", model=mp)
    manifest(m, mp, os.path.join(mp, "calib.npy"), out)
    r = run(["run", m, "--quiet"])
    check(r.returncode == 0 and "max_position_embeddings" in r.stderr,
          f"limits: RoPE seqlen 64 > max_position_embeddings 32 warns ({last(r)})")
    # The [eval] step within [resources] memory: the largest process's max RSS.
    budget = 40_000_000
    ev = os.path.join(c.work, "eval-big.npy")  # 1875 windows: a 64 MiB chunk would hold 1365 of them (89 MB)
    np.save(ev, (np.arange(120_000, dtype=np.int64) * 7919 % 256).astype(np.int32))
    m, out = job(c, "evalmem", extra=f'[resources]\nmemory = "40MB"\n[eval]\ntokens = "{ev}"\nseqlen = 64\n')
    code = ("import resource,subprocess,sys;r=subprocess.run(sys.argv[1:],capture_output=True);"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss*1024);sys.stderr.write(r.stderr.decode())")
    p = subprocess.run([sys.executable, "-c", code, hc.SP, "run", m, "--quiet"], capture_output=True, text=True, timeout=120)
    rc, rss = (int(x) for x in p.stdout.split())
    sanitized = "--sanitized" in sys.argv[3:]
    check(rc == 0 and (rss <= budget or sanitized), f"limits: run with [eval] under memory = 40MB: exit {rc}, max RSS "
                                     f"{rss / 1e6:.1f} MB <= 40 MB ({p.stderr.strip()[-200:]})")
    m, out = job(c, "evalmem2", extra=f'[resources]\nmemory = "1MB"\n[eval]\ntokens = "{c.calib}"\nseqlen = 64\n')
    r = run(["run", m, "--quiet"])
    check(r.returncode == 64 and not os.path.exists(out), f"limits: a budget nothing fits: 64 before any work ({last(r)})")


def t_small(c):
    m, out = job(c, "status")
    run(["run", m, "--quiet"], {"SLICEPIPE_KILL_AT": "writer:2"})
    sd = os.path.join(out, ".slicepipe")
    with open(os.path.join(sd, "journal"), "ab") as f:
        f.write(b"SPJ1\x10\x00")  # a torn tail
    before = tree_state(sd)
    s = run(["status", out])
    check(s.returncode == 0 and "interrupted" in s.stdout and tree_state(sd) == before,
          f"small: status leaves the lock (no PID written) and the journal (torn tail kept) untouched")
    r = run(["run", m, "--quiet"])
    check(r.returncode == 0 and model_bytes(out) == c.ref, "small: the resume after status is identical")
    # --dump-logits cut short: the last write of the process fails.
    dump = os.path.join(c.work, "logits.npy")
    args = ["eval", c.model, "--tokens", c.calib, "--seqlen", "64", "--windows", "2", "--quiet", "--force", "--dump-logits", dump]
    lo, hi = 1, 4096
    while lo < hi:  # the smallest N at which the Nth write is beyond the last one
        mid = (lo + hi) // 2
        if run(args, {"SLICEPIPE_FAULT_WRITE": f"{mid}:ENOSPC"}).returncode == 0:
            hi = mid
        else:
            lo = mid + 1
    if os.path.exists(dump):
        os.unlink(dump)
    r = run(args, {"SLICEPIPE_FAULT_WRITE": f"{lo - 1}:ENOSPC"})
    litter = [f for f in os.listdir(c.work) if f.startswith("logits.npy")]
    check(r.returncode == 74 and not litter, f"small: --dump-logits hit by ENOSPC: exit {r.returncode}, no file left "
                                             f"({litter}; {last(r)})")
    for args in (["inspect"], ["inspect", "a", "b"], ["eval", "--bogus"], ["run"], ["status"], ["synth", "--nope", "x"]):
        r = run(args)
        msg = last(r)
        check(r.returncode == 64 and msg.startswith("slicepipe: ") and len(msg) > len("slicepipe: ") + 5,
              f"small: `slicepipe {' '.join(args)}`: exit {r.returncode}, says what is wrong ({msg})")


def main():
    hc.SP, work = sys.argv[1], os.path.abspath(sys.argv[2])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t0 = time.time()
    c = setup(work)
    for t in (t_spill, t_overlap, t_foreign, t_changed, t_complete, t_nonfinite, t_symlink, t_fifo, t_streams,
              t_limits, t_small):
        t1 = time.time()
        t(c)
        print(f"     {t.__name__[2:]}: {time.time() - t1:.1f}s", flush=True)
    print(f"{len(failures)} failed" if failures else f"all checks passed ({time.time() - t0:.1f}s)")
    sys.exit(1 if failures else 0)


main()
