#!/usr/bin/python3
"""test_verify.py — `slicepipe verify MODEL_DIR` end to end.

usage: test_verify.py SLICEPIPE WORKDIR

A random model is sliced with `slicepipe run` (one file, and with a small
shard_bytes: several shards + an index). Then:
  - verify exits 0 and prints "verify: ok" with the tensor and shard counts;
  - one byte flipped inside a tensor's data (in every shard in turn, and the
    last byte of the > 4 MiB embedding, hashed in two chunks): 65 naming the
    file and that tensor;
  - one hex digit of a recorded hash changed: 65 naming the tensor;
  - a shard with no recorded hashes (the dense input model): 65 "no hash recorded";
  - a truncated shard: 65; a missing shard: 66;
  - the directory copied elsewhere still verifies (no journal, no absolute paths).
"""
import json
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import model_ref  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(args):
    return subprocess.run(args, capture_output=True, text=True)


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return n, json.loads(f.read(n))


def shards_of(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))


def flip(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x10]))


def slice_model(sp, work, name, model, calib, extra=""):
    out = os.path.join(work, name)
    man = os.path.join(work, name + ".toml")
    with open(man, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = 32\nnsamples = 8\n'
                f'[slicing]\nsparsity = 0.25\nround_to = 8\n[output]\npath = "{out}"\n{extra}')
    r = run([sp, "run", man, "--quiet"])
    check(r.returncode == 0, f"{name}: slicepipe run exit {r.returncode} {r.stderr.strip()}")
    return out


def verify_ok(sp, d, what, nshards):
    r = run([sp, "verify", d])
    ntensors = sum(len([k for k in header(os.path.join(d, s))[1] if k != "__metadata__"]) for s in shards_of(d))
    check(r.returncode == 0 and "verify: ok" in r.stdout and f"tensors:  {ntensors} " in r.stdout
          and f"shards:   {nshards}\n" in r.stdout,
          f"{what}: verify exit 0, {ntensors} tensors, {nshards} shards ({r.returncode}: {r.stdout.strip()} {r.stderr.strip()})")


def damage_cases(sp, work, src, label):
    shards = shards_of(src)
    for s in shards:
        d = os.path.join(work, f"{label}-flip")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(src, d)
        p = os.path.join(d, s)
        n, h = header(p)
        # The last tensor with data in this shard; flip a byte in its middle.
        name, e = [(k, v) for k, v in h.items() if k != "__metadata__" and v["data_offsets"][1] > v["data_offsets"][0]][-1]
        b, en = e["data_offsets"]
        flip(p, 8 + n + (b + en) // 2)
        r = run([sp, "verify", d])
        check(r.returncode == 65 and f"'{name}'" in r.stderr and s in r.stderr and "mismatch" in r.stderr,
              f"{label}: a flipped byte in {s} / {name}: 65 naming both ({r.returncode}: {r.stderr.strip()})")
        shutil.rmtree(d)
        # The embedding (23000 x 48 f32 > 4 MiB) is hashed in several chunks:
        # its very last byte lies in the second one.
        e = h.get("model.embed_tokens.weight")
        if e:
            shutil.copytree(src, d)
            check(e["data_offsets"][1] - e["data_offsets"][0] > 4 << 20, f"{label}: the embedding spans two 4 MiB chunks")
            flip(os.path.join(d, s), 8 + n + e["data_offsets"][1] - 1)
            r = run([sp, "verify", d])
            check(r.returncode == 65 and "'model.embed_tokens.weight'" in r.stderr and "mismatch" in r.stderr,
                  f"{label}: the embedding's last byte flipped (2nd chunk): 65 ({r.returncode}: {r.stderr.strip()})")
            shutil.rmtree(d)

    # A recorded hash changed (one hex digit): the header is still valid JSON.
    d = os.path.join(work, f"{label}-hash")
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(src, d)
    p = os.path.join(d, shards[0])
    n, h = header(p)
    name = [k for k in h if k != "__metadata__"][0]
    want = h["__metadata__"]["xxh3_128:" + name]
    raw = bytearray(open(p, "rb").read())
    at = raw.index(want.encode(), 8)
    raw[at] = ord("0") if raw[at] != ord("0") else ord("1")
    open(p, "wb").write(raw)
    r = run([sp, "verify", d])
    check(r.returncode == 65 and f"'{name}'" in r.stderr and "mismatch" in r.stderr,
          f"{label}: a changed recorded hash: 65 naming {name} ({r.returncode}: {r.stderr.strip()})")

    # Truncated shard: the strict reader refuses it.
    shutil.rmtree(d)
    shutil.copytree(src, d)
    p = os.path.join(d, shards[-1])
    os.truncate(p, os.path.getsize(p) - 1)
    r = run([sp, "verify", d])
    check(r.returncode == 65 and shards[-1] in r.stderr, f"{label}: a truncated shard: 65 ({r.returncode}: {r.stderr.strip()})")
    shutil.rmtree(d)


def main():
    sp, work = sys.argv[1:3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    work = os.path.abspath(work)
    model = os.path.join(work, "rand")
    model_ref.write_random_model(model, seed=11, D=64, L=2, heads=4, kv=2, head_dim=16, ffn=96, vocab=23000, tied=False)
    calib = os.path.join(work, "calib.npy")
    model_ref.write_tokens(calib, 3, 8 * 32, 23000)

    one = slice_model(sp, work, "one", model, calib)
    sharded = slice_model(sp, work, "sharded", model, calib, 'shard_bytes = "64KB"\n')
    if failures:
        sys.exit(1)
    nsh = len(shards_of(sharded))
    check(nsh >= 3 and os.path.exists(os.path.join(sharded, "model.safetensors.index.json")),
          f"small shard_bytes gives several shards ({nsh})")

    verify_ok(sp, one, "single file", 1)
    verify_ok(sp, sharded, "sharded", nsh)
    damage_cases(sp, work, one, "single")
    damage_cases(sp, work, sharded, "sharded")

    # Missing shard: the reader's 66.
    d = os.path.join(work, "missing")
    shutil.copytree(sharded, d)
    os.unlink(os.path.join(d, shards_of(sharded)[1]))
    r = run([sp, "verify", d])
    check(r.returncode == 66 and shards_of(sharded)[1] in r.stderr, f"a missing shard: 66 ({r.returncode}: {r.stderr.strip()})")

    # A checkpoint without hashes (the dense input): 65 "no hash recorded".
    r = run([sp, "verify", model])
    check(r.returncode == 65 and "no hash recorded" in r.stderr and "model.safetensors" in r.stderr,
          f"no recorded hashes: 65 ({r.returncode}: {r.stderr.strip()})")

    # Copied elsewhere (and the original removed): still verifies.
    elsewhere = os.path.join(work, "elsewhere", "copy")
    shutil.copytree(sharded, elsewhere)
    shutil.rmtree(sharded)
    verify_ok(sp, elsewhere, "copied elsewhere", nsh)

    r = run([sp, "verify"])
    check(r.returncode == 64, f"no argument: 64 ({r.returncode})")
    r = run([sp, "verify", os.path.join(work, "nothing")])
    check(r.returncode == 66, f"missing directory: 66 ({r.returncode})")

    print(f"{len(failures)} failed" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


main()
