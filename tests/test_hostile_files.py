#!/usr/bin/python3
"""test_hostile_files.py — the model folder's link rule and single-file outputs.

usage: test_hostile_files.py GROUP SLICEPIPE WORKDIR SHARED ROOT

GROUP:
  hfcache  (needs SHARED/models/stories260k; 77 without it) a Hugging Face
           cache built in the test (REPO/snapshots/REV/* -> ../../blobs/HASH):
           inspect, eval, run, export, generate and tokenize work on the
           snapshot and give what they give on the plain folder (run:
           byte-identical shards); links out of the repository's blobs/ (to
           a file outside, to another repository's blob, into a sub-folder of
           blobs/, a blob that is itself a link, blobs/ itself a link), and a
           plain folder's config.json linking outside, are refused by every
           command that reads the file (65, "symlink escape", nothing
           written); a link that stays inside the folder is accepted
  outputs  (the repository's examples/kjv model, copied) every single-file
           output (tokenize -o and --decoded, eval --dump-logits, generate
           --out-ids and --dump-logits, synth's calib.npy): an existing file
           or link (even dangling) at the path is refused (73) and kept,
           unless --force; with --force a link planted at the path is
           replaced (its target unchanged); a FIFO, a folder at
           the path: 73, no hang; the path an input or the other output: 64
           naming both, the input unchanged; a write or fsync failure: 74,
           no file, no temporary, an older file intact; two tokenizations of
           different texts to one output at once: every look at the path
           sees one complete result, and both exit 0
"""
import hashlib
import json
import os
import shutil
import stat
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_common as hc  # noqa: E402
from hostile_common import check, failures, last, manifest, run  # noqa: E402

def read(p):
    with open(p, "rb") as f:
        return f.read()


def litter(path):
    """Temporaries of a single-file output left beside path."""
    d, b = os.path.split(path)
    return [f for f in os.listdir(d or ".") if f.startswith(b + ".") and f.endswith(".tmp")]


def fresh(p):
    if os.path.lexists(p):
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    return p


# ---------------------------------------------------------------- hfcache


def hf_cache(root, name, src):
    """REPO/{blobs,snapshots/REV,refs/main} as huggingface_hub lays it out."""
    repo = os.path.join(root, f"models--x--{name}")
    shutil.rmtree(repo, ignore_errors=True)
    snap = os.path.join(repo, "snapshots", "abc123")
    os.makedirs(os.path.join(repo, "blobs"))
    os.makedirs(snap)
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write("abc123")
    for f in sorted(os.listdir(src)):
        h = hashlib.sha256(read(os.path.join(src, f))).hexdigest()
        shutil.copyfile(os.path.join(src, f), os.path.join(repo, "blobs", h))
        os.symlink(os.path.join("..", "..", "blobs", h), os.path.join(snap, f))
    return repo, snap


def shard_bytes(out):
    return {f: read(os.path.join(out, f)) for f in sorted(os.listdir(out))
            if f.endswith(".safetensors") or f == "model.safetensors.index.json"}


def group_hfcache(work, shared, root):
    plain = os.path.join(shared, "models", "stories260k")
    data = os.path.join(shared, "data", "tinystories")
    if not os.path.isdir(plain):
        print(f"skip: {plain} not found")
        sys.exit(77)
    calib, evtok, text = (os.path.join(data, f) for f in ("calib.tok512.npy", "eval.tok512.npy", "eval.txt"))
    hub = os.path.join(work, "hub")
    repo, snap = hf_cache(hub, "stories", plain)

    # The snapshot works as the plain folder does.
    a, b = run(["inspect", plain]), run(["inspect", snap])
    strip = lambda r: [l for l in r.stdout.splitlines() if not l.startswith("model:")]
    check(a.returncode == 0 and b.returncode == 0 and strip(a) == strip(b) and "validation: ok" in b.stdout,
          f"hfcache: inspect on the snapshot: exit {b.returncode}, the plain folder's report ({last(b)})")
    ev = ["--tokens", evtok, "--seqlen", "256", "--windows", "4", "--json", "--quiet"]
    a = run(["eval", plain, *ev, "--dump-logits", os.path.join(work, "plain-logits.npy")])
    b = run(["eval", snap, *ev, "--dump-logits", os.path.join(work, "snap-logits.npy")])
    ja = json.loads(a.stdout) if a.returncode == 0 else {}
    jb = json.loads(b.stdout) if b.returncode == 0 else {}
    check(b.returncode == 0 and ja.get("nll") == jb.get("nll") and jb.get("tokens") == 1020 and
          read(os.path.join(work, "plain-logits.npy")) == read(os.path.join(work, "snap-logits.npy")),
          f"hfcache: eval on the snapshot: exit {b.returncode}, NLL {jb.get('nll')} = {ja.get('nll')}, "
          f"identical logits ({last(b)})")
    outs = {}
    for what, model in (("plain", plain), ("snap", snap)):
        out = fresh(os.path.join(work, f"run-{what}"))
        r = run(["run", manifest(os.path.join(work, f"run-{what}.toml"), model, calib, out), "--quiet"])
        outs[what] = (r, out)
    r, out = outs["snap"]
    sa, sb = shard_bytes(outs["plain"][1]), shard_bytes(out) if r.returncode == 0 else {}
    copied = [f for f in ("tokenizer.bin", "LICENSE") if os.path.isfile(os.path.join(out, f))
              and not os.path.islink(os.path.join(out, f)) and read(os.path.join(out, f)) == read(os.path.join(plain, f))]
    check(r.returncode == 0 and sa and sa == sb and len(copied) == 2 and
          read(os.path.join(out, "config.json")) == read(os.path.join(outs["plain"][1], "config.json")),
          f"hfcache: run on the snapshot: exit {r.returncode}, shards and config.json byte-identical to the plain "
          f"folder's ({len(sb)} files), side files copied as regular files ({last(r)})")
    a = run(["export", plain, "--gguf", os.path.join(work, "plain.gguf"), "--quiet"])
    b = run(["export", snap, "--gguf", os.path.join(work, "snap.gguf"), "--quiet"])
    # general.name is the repository's name ("stories") for the snapshot, not its revision; the
    # tensor data (its last 10^6 bytes, after the aligned header) is the plain folder's.
    ga, gb = (read(os.path.join(work, f)) if os.path.exists(os.path.join(work, f)) else b""
              for f in ("plain.gguf", "snap.gguf"))
    name = b"general.name\x08\x00\x00\x00"
    check(a.returncode == 0 and b.returncode == 0 and name + b"\x0b" + bytes(7) + b"stories260k" in ga and
          name + b"\x07" + bytes(7) + b"stories\x11" in gb and len(ga) > 10**6 and ga[-10**6:] == gb[-10**6:],
          f"hfcache: export on the snapshot: exit {b.returncode}, the plain folder's tensors, named after the "
          f"repository ({last(b)})")
    gen = ["--prompt", "Once upon a time", "--max-tokens", "24", "--quiet"]
    a, b = run(["generate", plain, *gen]), run(["generate", snap, *gen])
    check(b.returncode == 0 and a.stdout == b.stdout and len(b.stdout) > 20,
          f"hfcache: generate on the snapshot: exit {b.returncode}, the same text ({b.stdout.strip()[:60]!r})")
    a = run(["tokenize", plain, text, "-o", os.path.join(work, "plain.npy"), "--quiet"])
    b = run(["tokenize", snap, text, "-o", os.path.join(work, "snap.npy"), "--quiet"])
    check(b.returncode == 0 and read(os.path.join(work, "plain.npy")) == read(os.path.join(work, "snap.npy")),
          f"hfcache: tokenize on the snapshot: exit {b.returncode}, identical ids ({last(b)})")

    # Links out of the repository's own blobs/ are refused by every command that reads the file.
    outside = os.path.join(work, "outside")
    fresh(outside)
    os.makedirs(outside)
    for f in os.listdir(plain):
        shutil.copyfile(os.path.join(plain, f), os.path.join(outside, f))  # valid files: only the rule refuses them
    other_repo, _ = hf_cache(hub, "other", plain)
    commands = {
        "inspect": lambda m: ["inspect", m],
        "eval": lambda m: ["eval", m, *ev],
        "run": lambda m: ["run", manifest(os.path.join(work, "bad.toml"), m, calib, fresh(os.path.join(work, "run-bad"))),
                          "--quiet"],
        "export": lambda m: ["export", m, "--gguf", fresh(os.path.join(work, "bad.gguf")), "--quiet"],
        "generate": lambda m: ["generate", m, *gen],
        "tokenize": lambda m: ["tokenize", m, text, "-o", fresh(os.path.join(work, "bad.npy")), "--quiet"],
    }
    # (case, the file linked, where the link goes (relative to the snapshot), commands that read that file)
    blob = lambda f: hashlib.sha256(read(os.path.join(plain, f))).hexdigest()
    cases = [
        ("tokenizer.bin -> /etc/passwd", "tokenizer.bin", "/etc/passwd", list(commands)),
        ("config.json -> a file outside the repository", "config.json", os.path.join(outside, "config.json"),
         list(commands)),
        ("model.safetensors -> a valid copy outside the repository", "model.safetensors",
         os.path.join(outside, "model.safetensors"), [c for c in commands if c != "tokenize"]),
        ("LICENSE -> another repository's blob", "LICENSE",
         os.path.join(other_repo, "blobs", blob("LICENSE")), [c for c in commands if c != "tokenize"]),
        ("tokenizer.bin -> a sub-folder of blobs/", "tokenizer.bin", "../../blobs/sub/" + blob("tokenizer.bin"),
         list(commands)),
    ]
    for case, name, target, cmds in cases:
        bad_repo, bad = hf_cache(hub, "bad", plain)
        if "blobs/sub/" in target:
            os.makedirs(os.path.join(bad_repo, "blobs", "sub"))
            shutil.copyfile(os.path.join(plain, name), os.path.join(bad_repo, "blobs", "sub", blob(name)))
        os.unlink(os.path.join(bad, name))
        os.symlink(target, os.path.join(bad, name))
        for c in cmds:
            r = run(commands[c](bad))
            wrote = [p for p in (os.path.join(work, "run-bad"), os.path.join(work, "bad.gguf"),
                                 os.path.join(work, "bad.npy")) if os.path.exists(p)]
            check(r.returncode == 65 and "symlink escape" in last(r) and name in last(r) and not wrote,
                  f"hfcache: {case}: {c} exit {r.returncode}, nothing written ({last(r)})")
    # A blob that is itself a link elsewhere; blobs/ itself a link to another folder.
    bad_repo, bad = hf_cache(hub, "bad", plain)
    b = os.path.join(bad_repo, "blobs", blob("model.safetensors"))
    os.unlink(b)
    os.symlink(os.path.join(outside, "model.safetensors"), b)
    for c in ("inspect", "eval", "generate"):
        r = run(commands[c](bad))
        check(r.returncode == 65 and "symlink escape" in last(r),
              f"hfcache: a blob that is a link out of blobs/: {c} exit {r.returncode} ({last(r)})")
    bad_repo, bad = hf_cache(hub, "bad", plain)
    elsewhere = os.path.join(work, "blobs-elsewhere")
    fresh(elsewhere)
    os.rename(os.path.join(bad_repo, "blobs"), elsewhere)
    os.symlink(elsewhere, os.path.join(bad_repo, "blobs"))
    r = run(commands["inspect"](bad))
    check(r.returncode == 65 and "symlink escape" in last(r),
          f"hfcache: blobs/ itself a link to another folder: inspect exit {r.returncode} ({last(r)})")

    # The same rule for a plain folder: a link inside it is fine, a link out is refused by every command.
    mp = os.path.join(work, "m-plain")
    shutil.rmtree(mp, ignore_errors=True)
    shutil.copytree(plain, mp)
    os.makedirs(os.path.join(mp, "sub"))
    os.rename(os.path.join(mp, "config.json"), os.path.join(mp, "sub", "config.json"))
    os.symlink(os.path.join("sub", "config.json"), os.path.join(mp, "config.json"))
    for c in commands:
        r = run(commands[c](mp))
        check(r.returncode == 0, f"plain: config.json linking inside the folder: {c} exit {r.returncode} ({last(r)})")
    os.unlink(os.path.join(mp, "config.json"))
    os.symlink(os.path.join(outside, "config.json"), os.path.join(mp, "config.json"))
    for c in commands:
        r = run(commands[c](mp))
        check(r.returncode == 65 and "symlink escape" in last(r) and "config.json" in last(r),
              f"plain: config.json linking outside the folder: {c} exit {r.returncode} ({last(r)})")


# ---------------------------------------------------------------- outputs


def group_outputs(work, shared, root):
    kjv = os.path.join(work, "kjv")
    shutil.rmtree(kjv, ignore_errors=True)
    shutil.copytree(os.path.join(root, "examples", "kjv"), kjv)  # copies: a bug must not damage the repository
    model, tok = os.path.join(kjv, "model"), os.path.join(kjv, "model", "tokenizer.model")
    evtok = os.path.join(kjv, "eval.npy")
    words = ("and the LORD said unto Moses , behold I will send thee a land of milk and honey ; "
             "go in peace , for the night cometh").split()
    texts = []
    for seed, docs in ((1, 6000), (2, 6500)):  # about 1 MB each: long enough for two runs to overlap
        rng = np.random.default_rng(seed)
        p = os.path.join(work, f"text{seed}.txt")
        with open(p, "w") as f:
            for _ in range(docs):
                f.write(" ".join(words[i] for i in rng.integers(0, len(words), 28)) + "\n\n")
        texts.append(p)
    text = texts[0]
    prompt = os.path.join(work, "prompt.npy")
    np.save(prompt, np.array([1, 300, 389, 396], dtype=np.int32))

    # Every single-file output: (what, args for a path P, the output's reference bytes)
    def tok_o(p):
        return ["tokenize", model, text, "-o", p, "--quiet"]

    def tok_dec(p):
        return ["tokenize", model, text, "-o", fresh(os.path.join(work, "dec-ids.npy")), "--decoded", p, "--quiet"]

    def eval_dump(p):
        return ["eval", model, "--tokens", evtok, "--seqlen", "64", "--windows", "2", "--quiet", "--dump-logits", p]

    def gen_ids(p):
        return ["generate", model, "--prompt-tokens", prompt, "--max-tokens", "12", "--quiet", "--out-ids", p]

    def gen_logits(p):
        return ["generate", model, "--prompt-tokens", prompt, "--max-tokens", "12", "--quiet", "--dump-logits", p]

    kinds = [("tokenize -o", tok_o), ("tokenize --decoded", tok_dec), ("eval --dump-logits", eval_dump),
             ("generate --out-ids", gen_ids), ("generate --dump-logits", gen_logits)]
    ref = {}
    for what, args in kinds:
        p = fresh(os.path.join(work, "ref.out"))
        r = run(args(p))
        ref[what] = read(p) if r.returncode == 0 else None
        ok = r.returncode == 0 and not litter(p)
        if ok and what == "tokenize --decoded":
            lines = [json.loads(l) for l in read(p).decode().splitlines()]
            ok = len(lines) == 6000 and all(set(l) == {"text"} for l in lines)
        elif ok:
            ok = np.load(p).size > 0
        check(ok, f"outputs: {what}: a plain run: exit {r.returncode}, a valid file and no temporary ({last(r)})")

    victim = os.path.join(work, "victim.txt")
    for what, args in kinds:
        # An existing file at the path: slicepipe never replaces a file it did not write, unless --force.
        p = fresh(os.path.join(work, "out.bin"))
        open(p, "w").write("someone's data\n")
        r = run(args(p))
        check(r.returncode == 73 and read(p) == b"someone's data\n" and p in last(r) and "--force" in last(r)
              and not litter(p),
              f"outputs: {what}: an existing file at the path: exit {r.returncode}, the file unchanged, naming it and "
              f"--force ({last(r)})")
        r = run(args(p) + ["--force"])
        check(r.returncode == 0 and read(p) == ref[what] and not litter(p),
              f"outputs: {what}: the same with --force: exit {r.returncode}, replaced by the output ({last(r)})")
        # A link planted at the path (a dangling one too), and at the fixed temporary name tokenize used to write.
        fresh(p)
        os.symlink(os.path.join(work, "nowhere"), p)
        r = run(args(p))
        check(r.returncode == 73 and os.path.islink(p) and not litter(p),
              f"outputs: {what}: a dangling link at the path: exit {r.returncode}, the link kept ({last(r)})")
        fresh(p)
        open(victim, "w").write("precious\n")
        os.symlink(victim, p)
        old_tmp = fresh(p + ".tmp")
        os.symlink(victim, old_tmp)
        r0 = run(args(p))
        r = run(args(p) + ["--force"])
        kept = os.path.islink(old_tmp)
        fresh(old_tmp)
        check(r0.returncode == 73 and r.returncode == 0 and read(victim) == b"precious\n" and not os.path.islink(p)
              and read(p) == ref[what] and kept and not litter(p),
              f"outputs: {what}: links planted at the path and at PATH.tmp: exit {r0.returncode}, then with --force "
              f"exit {r.returncode}, the path replaced by the output, the targets unchanged ({last(r)})")
        # A FIFO, a folder at the path.
        fresh(p)
        os.mkfifo(p)
        t0 = time.time()
        r = run(args(p), timeout=20)
        check(r.returncode == 73 and time.time() - t0 < 15 and stat.S_ISFIFO(os.lstat(p).st_mode) and "FIFO" in last(r)
              and p in last(r) and not litter(p),
              f"outputs: {what}: a FIFO at the path: exit {r.returncode} in {time.time() - t0:.1f}s ({last(r)})")
        fresh(p)
        os.makedirs(os.path.join(p, "keep"))
        r = run(args(p))
        check(r.returncode == 73 and os.path.isdir(os.path.join(p, "keep")) and "directory" in last(r),
              f"outputs: {what}: a folder at the path: exit {r.returncode} ({last(r)})")
        fresh(p)
        # A write failing at the last write (the header), then at the first fsync: nothing
        # at the path, no temporary; an older file there stays as it was.
        for fault, env in (("the last write", None), ("an fsync", {"SLICEPIPE_FAULT_FSYNC": "1:EIO"})):
            if env is None:
                lo, hi = 1, 4096  # the smallest N at which the Nth write is past the last one
                while lo < hi:
                    mid = (lo + hi) // 2
                    if run(args(fresh(p)), {"SLICEPIPE_FAULT_WRITE": f"{mid}:ENOSPC"}).returncode == 0:
                        hi = mid
                    else:
                        lo = mid + 1
                env = {"SLICEPIPE_FAULT_WRITE": f"{lo - 1}:ENOSPC"}
            fresh(p)
            r = run(args(p), env)
            ok = r.returncode == 74 and not os.path.exists(p) and not litter(p)
            open(p, "wb").write(b"older")
            r2 = run(args(p) + ["--force"], env)
            check(ok and r2.returncode == 74 and read(p) == b"older" and not litter(p),
                  f"outputs: {what}: {fault} fails: exit {r.returncode}, no file, no temporary; over an older file: "
                  f"exit {r2.returncode}, the older file intact ({last(r)})")
            fresh(p)

    # An output that is an input (by name, through a link, as a hard link) or the other output: 64.
    link_to_tok = os.path.join(work, "tok-link.model")
    fresh(link_to_tok)
    os.symlink(tok, link_to_tok)
    hard = os.path.join(work, "eval-hard.npy")
    fresh(hard)
    os.link(evtok, hard)
    same = [
        ("tokenize -o the text", tok_o(text), text),
        ("tokenize -o a link to the tokenizer", tok_o(link_to_tok), tok),
        ("tokenize --decoded the text", tok_dec(text), text),
        ("tokenize --decoded = -o", ["tokenize", model, text, "-o", os.path.join(work, "x.npy"), "--decoded",
                                     os.path.join(work, "x.npy"), "--quiet"], None),
        ("eval --dump-logits the tokens", eval_dump(evtok), evtok),
        ("eval --dump-logits a hard link to the tokens", eval_dump(hard), evtok),
        ("eval --dump-logits the shard", eval_dump(os.path.join(model, "model.safetensors")),
         os.path.join(model, "model.safetensors")),
        ("generate --out-ids the prompt file", gen_ids(prompt), prompt),
        ("generate --dump-logits config.json", gen_logits(os.path.join(model, "config.json")),
         os.path.join(model, "config.json")),
        ("generate --out-ids = --dump-logits", gen_ids(os.path.join(work, "y.npy")) + ["--dump-logits",
                                                                                      os.path.join(work, "y.npy")], None),
    ]
    for what, args, inp in same:
        before = {f: read(f) for f in (text, tok, evtok, prompt, os.path.join(model, "model.safetensors"),
                                       os.path.join(model, "config.json"))}
        r = run(args)
        after = {f: read(f) for f in before}
        check(r.returncode == 64 and before == after and ("the input" if inp else "also the output") in last(r)
              and (inp is None or inp in last(r)) and os.path.islink(link_to_tok),
              f"outputs: {what}: exit {r.returncode}, every input unchanged ({last(r)})")
        for f in ("x.npy", "y.npy"):
            fresh(os.path.join(work, f))

    # synth's calib.npy: a planted link replaced, its target unchanged.
    sd = os.path.join(work, "synth")
    args = ["synth", sd, "--hidden", "64", "--layers", "2", "--ffn", "128", "--heads", "4", "--vocab", "256",
            "--tokens", "2048", "--quiet"]
    shutil.rmtree(sd, ignore_errors=True)
    r0 = run(args)
    calib = read(os.path.join(sd, "calib.npy")) if r0.returncode == 0 else None
    os.unlink(os.path.join(sd, "calib.npy"))
    open(victim, "w").write("precious\n")
    os.symlink(victim, os.path.join(sd, "calib.npy"))
    r = run(args)
    check(r.returncode == 0 and read(victim) == b"precious\n" and read(os.path.join(sd, "calib.npy")) == calib
          and not litter(os.path.join(sd, "calib.npy")),
          f"outputs: synth calib.npy: a planted link: exit {r.returncode}, replaced, its target unchanged ({last(r)})")

    # Two tokenizations of different texts to one output at once, three times: every look at
    # the path while they run sees one complete result; both exit 0; no temporary is left.
    refs = []
    for t in texts:
        p = fresh(os.path.join(work, "solo.npy"))
        r = run(["tokenize", model, t, "-o", p, "--quiet"])
        refs.append(read(p) if r.returncode == 0 else b"")
    out = os.path.join(work, "shared.npy")
    for round_ in range(3):
        fresh(out)
        rs = {}

        def go(i):
            rs[i] = run(["tokenize", model, texts[i], "-o", out, "--force", "--quiet"])
        ts = [threading.Thread(target=go, args=(i,)) for i in (0, 1)]
        for t in ts:
            t.start()
        seen, bad = 0, 0
        while any(t.is_alive() for t in ts):
            try:
                b = read(out)
            except FileNotFoundError:
                continue
            seen += 1
            bad += b not in refs
        for t in ts:
            t.join()
        final = read(out) if os.path.exists(out) else b""
        check(rs[0].returncode == 0 and rs[1].returncode == 0 and final in refs and refs[0] != refs[1] and bad == 0
              and not litter(out),
              f"outputs: two tokenizations to one output at once (round {round_ + 1}): exits {rs[0].returncode}, "
              f"{rs[1].returncode}; {seen} looks during the runs, {bad} incomplete; the final file is one run's "
              f"complete result")


def main():
    group, hc.SP, work, shared, root = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3]), sys.argv[4], sys.argv[5]
    work = os.path.join(work, group)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t0 = time.time()
    {"hfcache": group_hfcache, "outputs": group_outputs}[group](work, os.path.abspath(shared), os.path.abspath(root))
    print(f"{len(failures)} failed" if failures else f"all checks passed ({time.time() - t0:.1f}s)")
    sys.exit(1 if failures else 0)


main()
