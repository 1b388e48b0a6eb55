#!/usr/bin/env python3
"""tests/test_text.py — calibration and evaluation from text (pipeline/model/calib.c).

The window rule of pipeline/model/calib.h is reimplemented here (windows(), with its
own splitmix64), and the token streams it is applied to come from references
that do not use slicepipe's text path:

  windows  the shared models' tokenizer.bin: the stories of the shared
           TinyStories .txt files (split by this test's own story rule) as
           .jsonl and .jsonl.gz must give exactly the windows that the rule
           cuts from the shared .npy token files ("first", "random" with
           several seeds, the eval rule); the .txt file itself (blank-line
           documents) against the rule applied to `slicepipe tokenize` output
           (that tokenizer is checked by the tokenizer tests); the PRNG with
           rejection-heavy ranges
  hf       a tokenizer.json (mistral-v0.3, BOS template): .txt and .txt.gz
           documents split by test_tokenizer.py's independent blank-line rule,
           ids from HF's Rust tokenizers (npm, the tokenizer.npm fixture)
  run      slicepipe run with [calibration] text on stories260k: bit-identical
           to the tokens run, ../shared/data/REFERENCE.md's NLL; [eval] text; eval --text of
           the sliced model finite and close to the tokens run's; random
           sampling from the .txt
  resume   a killed text-calibrated job: refused (65) when the text changes,
           resumes bit-identically when it is restored; text past the first
           windows may change; sampling changes are refused
  bad      too little text (65 with both counts), missing text or tokenizer
           (66), invalid UTF-8 (65 naming the document), ids outside the
           vocabulary, corrupt gzip, "first" not reading past its windows,
           eval --text usage
Exit 77 = skipped (no ../shared, or no npm packages for hf)."""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_tokenizer as tt  # noqa: E402  (the npm reference, the .txt rule, the story rule)

SKIP = 77
M64 = (1 << 64) - 1
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def sh(cmd, env=None):
    e = dict(os.environ)
    e.pop("SLICEPIPE_KILL_AT", None)
    if env:
        e.update(env)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


# ---------------------------------------------------------------- the rule

def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def uniform(state, r):
    t = (1 << 64) % r
    while True:
        state, x = splitmix64(state)
        if x < (1 << 64) - t:
            return state, x % r


def windows(stream, T, n, sampling="first", seed=0):
    """calib.h's rule on a whole token stream; n = 0: every full window."""
    S = np.asarray(stream, dtype=np.int32)
    if n == 0:
        return S[:len(S) // T * T]
    assert len(S) >= n * T
    if sampling == "first":
        return S[:n * T]
    state, out = seed, []
    for _ in range(n):
        state, s = uniform(state, len(S) - T + 1)
        out.append(S[s:s + T])
    return np.concatenate(out)


# ---------------------------------------------------------------- helpers

def cut(a, text, tokdir, T, n, sampling="first", seed=0, vocab=0, name="w"):
    out = os.path.join(a.work, name + ".npy")
    r = sh([a.windows, text, tokdir, str(T), str(n), sampling, str(seed), str(vocab), out])
    return r, (np.load(out) if r.returncode == 0 else None)


def same(ours, ref):
    return ours is not None and ours.shape == ref.shape and bool((ours == ref).all())


def stories(path):
    with open(path, encoding="utf-8") as f:
        return [s.strip("\n") for s in tt.STORY_START.split(f.read()) if s.strip()]


def need_shared(a):
    ts = os.path.join(a.shared, "data", "tinystories")
    if not os.path.exists(os.path.join(ts, "calib.txt")) or not os.path.isdir(os.path.join(a.shared, "models")):
        print("SKIP: no shared data in", a.shared)
        sys.exit(SKIP)
    os.makedirs(a.work, exist_ok=True)
    return ts


def story_files(a, ts, src):
    """src's stories as .jsonl and .jsonl.gz (the test's story rule)."""
    p = os.path.join(a.work, f"{src}.stories.jsonl")
    st = stories(os.path.join(ts, src + ".txt"))
    tt.write_jsonl(p, st)
    with open(p, "rb") as f, gzip.open(p + ".gz", "wb") as g:
        g.write(f.read())
    return p, p + ".gz", st


def tokenize(a, model, text, name):
    out = os.path.join(a.work, name + ".tok.npy")
    r = sh([a.slicepipe, "tokenize", model, text, "-o", out, "--force", "--quiet"])
    if r.returncode:
        sys.exit(f"FAIL: slicepipe tokenize {text}: {r.stderr.strip()}")
    return np.load(out)


# ---------------------------------------------------------------- modes

def cmd_windows(a):
    ts = need_shared(a)
    # the PRNG alone, on ranges where rejection is frequent (2^63+1: about half) and on small ones
    for seed, rng in ((0, 1), (0, 7), (42, 1000003), (2**63, 2**63 + 1), (M64, 3 * 2**62 + 5)):
        r = sh([a.windows, "--prng", str(seed), str(rng), "64"])
        mine, st = [], seed
        for _ in range(64):
            st, x = uniform(st, rng)
            mine.append(x)
        check(r.returncode == 0 and [int(x) for x in r.stdout.split()] == mine,
              f"splitmix64 uniform(seed {seed}, range {rng}): 64 draws identical to the Python rule")
    cases = [("calib", "stories260k", "calib.tok512"), ("eval", "stories260k", "eval.tok512"),
             ("calib", "llama2xs", "calib.tok512"), ("calib", "babyllama105", "calib.tok105"),
             ("calib", "aidreams260k", "calib.dreams512")]
    files = {src: story_files(a, ts, src) for src in ("calib", "eval")}
    for src, model, npy in cases:
        ref = np.load(os.path.join(ts, npy + ".npy"))
        mdir = os.path.join(a.shared, "models", model)
        jl, gz, st = files[src]
        for T, n, sampling, seed in ((256, 64, "first", 0), (256, 64, "random", 0), (256, 64, "random", 1234),
                                     (512, 16, "random", 2**63 + 11), (97, 300, "random", 5), (256, 0, "first", 0)):
            if n * T > len(ref):
                continue
            want = windows(ref, T, n, sampling, seed)
            for path in (jl, gz):
                r, ours = cut(a, path, mdir, T, n, sampling, seed, 0, "w_" + model)
                check(same(ours, want), f"{model} {os.path.basename(path)} T={T} n={n} {sampling} seed={seed}: "
                      f"{len(want)} ids = the rule on {npy}.npy" + ("" if r.returncode == 0 else f" ({r.stderr.strip()})"))
        # the rule actually samples: different seeds, different windows; not the first ones
        r0, w0 = cut(a, jl, mdir, 256, 16, "random", 0, 0, "r0")
        r1, w1 = cut(a, jl, mdir, 256, 16, "random", 1, 0, "r1")
        check(w0 is not None and w1 is not None and not same(w0, w1) and not same(w0, ref[:16 * 256]),
              f"{model}: seeds 0 and 1 give different windows, neither the first ones")
    # the .txt file itself: blank-line documents (paragraphs, each with a BOS) against the rule applied
    # to `slicepipe tokenize` of the same file; .txt.gz the same
    mdir = os.path.join(a.shared, "models", "stories260k")
    txt = os.path.join(ts, "calib.txt")
    gz = os.path.join(a.work, "calib.txt.gz")
    with open(txt, "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    stream = tokenize(a, mdir, txt, "calibtxt")
    check(int((stream == 1).sum()) > len(stories(txt)), "calib.txt has more blank-line documents (BOS) than stories")
    for T, n, sampling, seed in ((256, 64, "first", 0), (256, 64, "random", 3), (128, 0, "first", 0)):
        want = windows(stream, T, n, sampling, seed)
        for path in (txt, gz):
            r, ours = cut(a, path, mdir, T, n, sampling, seed, 512, "wtxt")
            check(same(ours, want), f"stories260k {os.path.basename(path)} T={T} n={n} {sampling} seed={seed}: "
                  f"{len(want)} ids = the rule on slicepipe tokenize's stream")
    return finish()


def cmd_hf(a):
    ts = need_shared(a)
    if not tt.npm_ok(a):
        print("SKIP: HF tokenizers (npm) not installed; see the tokenizer.npm test")
        return SKIP
    tokdir = os.path.join(a.work, "mistral")  # a model-like folder: tokenizer.json found the way HF finds it
    os.makedirs(tokdir, exist_ok=True)
    tj = os.path.join(a.shared, "tokenizers", "mistral-v0.3", "tokenizer.json")
    shutil.copy(tj, os.path.join(tokdir, "tokenizer.json"))
    # a wikitext-style .txt corpus: paragraphs separated by blank lines, some runs of blank lines
    txt = os.path.join(a.work, "corpus.txt")
    with open(os.path.join(ts, "eval.txt"), encoding="utf-8") as f:
        body = f.read()
    with open(txt, "w", encoding="utf-8") as f:
        f.write(" = Stories = \n\n\n" + body.replace("\n\nOnce upon", "\n\n \n\n = Story = \n\nOnce upon"))
    docs = tt.txt_docs(txt)
    dj = os.path.join(a.work, "corpus.docs.jsonl")
    tt.write_jsonl(dj, docs)
    ref = tt.hf_ref(a, tj, dj, os.path.join(a.work, "corpus.ref.json"))["ids"]
    stream = np.asarray([i for d in ref for i in d], dtype=np.int32)
    check(len(ref) == len(docs) and all(d[:1] == [1] for d in ref), f"HF adds BOS to each of the {len(docs)} documents")
    gz = txt + ".gz"
    with open(txt, "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    for T, n, sampling, seed in ((512, 64, "first", 0), (512, 64, "random", 0), (300, 100, "random", 99),
                                 (1024, 0, "first", 0)):
        want = windows(stream, T, n, sampling, seed)
        for path in (txt, gz):
            r, ours = cut(a, path, tokdir, T, n, sampling, seed, 32768, "whf")
            check(same(ours, want), f"mistral {os.path.basename(path)} T={T} n={n} {sampling} seed={seed}: "
                  f"{len(want)} ids = the rule on HF's ids" + ("" if r.returncode == 0 else f" ({r.stderr.strip()})"))
    return finish()


def manifest(path, model, calib_line, out, extra="", eval_line=None, nsamples=64):
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\n{calib_line}\nseqlen = 256\nnsamples = {nsamples}\n'
                f'[slicing]\nsparsity = 0.25\n[output]\npath = "{out}"\n{extra}')
        if eval_line:
            f.write(f"[eval]\n{eval_line}\nwindows = 60\n")


def run(a, man, env=None, *extra):
    return sh([a.slicepipe, "run", man, "--quiet", *extra], env)


def eval_json(a, model, *args):
    r = sh([a.slicepipe, "eval", model, "--seqlen", "256", "--json", "--quiet", *args])
    if r.returncode:
        check(False, f"eval {model} {args}: rc {r.returncode}: {r.stderr.strip()}")
        return {"nll": float("nan")}
    return json.loads(r.stdout)


def model_bytes(out):
    with open(os.path.join(out, "model.safetensors"), "rb") as f:
        return f.read()


def cmd_run(a):
    ts = need_shared(a)
    model = os.path.join(a.shared, "models", "stories260k")
    jl, _, _ = story_files(a, ts, "calib")
    eval_txt = os.path.join(ts, "eval.txt")
    outs = {}
    for name, calib, ev in (("tok", f'tokens = "{ts}/calib.tok512.npy"', f'tokens = "{ts}/eval.tok512.npy"'),
                            ("txt", f'text = "{jl}"', f'text = "{eval_txt}"'),
                            ("rnd", f'text = "{ts}/calib.txt"\nsampling = "random"\nseed = 7', None)):
        man = os.path.join(a.work, f"run_{name}.toml")
        out = os.path.join(a.work, f"run_{name}")
        shutil.rmtree(out, ignore_errors=True)
        manifest(man, model, calib, out, eval_line=ev)
        r = run(a, man)
        check(r.returncode == 0, f"run {name}: rc {r.returncode} {r.stderr.strip()[-300:]}")
        outs[name] = (out, r.stdout)
    check(model_bytes(outs["tok"][0]) == model_bytes(outs["txt"][0]),
          "[calibration] text (stories .jsonl) gives a sliced model bit-identical to tokens = calib.tok512.npy")
    ref = eval_json(a, outs["txt"][0], "--tokens", os.path.join(ts, "eval.tok512.npy"))["nll"]
    check(abs(ref - 3.15845) < 1e-4, f"text-calibrated stories260k at 0.25 on eval.tok512: nll {ref:.6f} "
          "(REFERENCE.md 3.15845 +- 1e-4)")
    # [eval] text in the manifest = slicepipe eval --text on the dense model, 60 windows
    dense = eval_json(a, model, "--text", eval_txt, "--windows", "60")["nll"]
    line = [l for l in outs["txt"][1].splitlines() if "perplexity" in l]
    got = float(line[0].split("(nll ")[1].split(")")[0]) if line else float("nan")
    check(abs(got - dense) < 5e-6, f"[eval] text dense nll {got:.6f} = eval --text {dense:.6f}")
    e_tok = eval_json(a, outs["tok"][0], "--text", eval_txt)["nll"]
    e_txt = eval_json(a, outs["txt"][0], "--text", eval_txt)["nll"]
    e_rnd = eval_json(a, outs["rnd"][0], "--text", eval_txt)["nll"]
    e_dense = eval_json(a, model, "--text", eval_txt)["nll"]
    check(np.isfinite(e_txt) and e_txt == e_tok, f"eval --text eval.txt: text-calibrated {e_txt:.6f}, tokens-calibrated {e_tok:.6f}")
    check(np.isfinite(e_rnd) and abs(e_rnd - e_tok) < 0.25 and e_rnd > e_dense,
          f"eval --text eval.txt: random-window (.txt, seed 7) {e_rnd:.6f} close to the tokens run's {e_tok:.6f} "
          f"(|d| < 0.25), above dense {e_dense:.6f}")
    return finish()


def cmd_resume(a):
    ts = need_shared(a)
    model = os.path.join(a.shared, "models", "stories260k")
    src, _, st = story_files(a, ts, "calib")
    jl = os.path.join(a.work, "resume.jsonl")
    shutil.copy(src, jl)
    man = os.path.join(a.work, "resume.toml")
    out = os.path.join(a.work, "resume_out")
    ref_out = os.path.join(a.work, "resume_ref")
    for o in (out, ref_out):
        shutil.rmtree(o, ignore_errors=True)
    manifest(os.path.join(a.work, "resume_ref.toml"), model, f'text = "{jl}"', ref_out)
    check(run(a, os.path.join(a.work, "resume_ref.toml")).returncode == 0, "uninterrupted text run")
    manifest(man, model, f'text = "{jl}"', out)
    k = run(a, man, {"SLICEPIPE_KILL_AT": "writer:3"})
    check(k.returncode != 0, f"killed at writer:3 (rc {k.returncode})")
    changed = ["Once upon a time there was a changed first story." if i == 0 else s for i, s in enumerate(st)]
    tt.write_jsonl(jl, changed)
    r = run(a, man)
    check(r.returncode == 65 and "manifest changed" in r.stderr, f"resume with a changed text: rc {r.returncode} "
          f"{r.stderr.strip()[-200:]}")
    shutil.copy(src, jl)
    r = run(a, man)
    check(r.returncode == 0 and model_bytes(out) == model_bytes(ref_out),
          f"text restored: resumes (rc {r.returncode}) bit-identical to the uninterrupted run")
    # "first" reads only its windows: a change past them is not part of the job
    tt.write_jsonl(jl, st[:-1] + ["Once upon a time the last story changed."])
    r = run(a, man)
    check(r.returncode == 0, f"text changed after the first 64x256 tokens: the completed job verifies (rc {r.returncode})")
    shutil.copy(src, jl)
    manifest(man, model, f'text = "{jl}"\nsampling = "random"', out)
    r = run(a, man)
    check(r.returncode == 65, f"sampling changed to random: refused (rc {r.returncode})")
    manifest(man, model, f'text = "{jl}"\nseed = 3', out)
    r = run(a, man)
    check(r.returncode == 65, f"seed changed: refused (rc {r.returncode})")
    return finish()


def cmd_bad(a):
    ts = need_shared(a)
    mdir = os.path.join(a.shared, "models", "stories260k")
    ref = np.load(os.path.join(ts, "calib.tok512.npy"))
    src, _, st = story_files(a, ts, "calib")
    few = os.path.join(a.work, "few.jsonl")
    tt.write_jsonl(few, st[:5])
    have = int(np.nonzero(ref == 1)[0][5])  # the tokens of the first five stories
    for sampling in ("first", "random"):
        r, _ = cut(a, few, mdir, 256, 64, sampling, 0, 512)
        check(r.returncode == 65 and f"has {have} tokens (5 documents" in r.stderr and "need 16384" in r.stderr
              and few in r.stderr, f"too little text ({sampling}): 65 with {have} and 16384: {r.stderr.strip()}")
    r, _ = cut(a, few, mdir, 4096, 0, "first", 0, 512)
    check(r.returncode == 65 and "1 windows x 4096" in r.stderr, f"eval rule, less than one window: 65: {r.stderr.strip()}")
    r, _ = cut(a, os.path.join(a.work, "nothere.txt"), mdir, 256, 4)
    check(r.returncode == 66 and "nothere.txt" in r.stderr, f"missing text: 66: {r.stderr.strip()}")
    empty = os.path.join(a.work, "notok")
    os.makedirs(empty, exist_ok=True)
    r, _ = cut(a, src, empty, 256, 4)
    check(r.returncode == 66 and "no tokenizer" in r.stderr and src in r.stderr, f"no tokenizer: 66: {r.stderr.strip()}")
    r, _ = cut(a, src, mdir, 256, 4, vocab=300)
    check(r.returncode == 65 and "outside the model's vocabulary of 300" in r.stderr and "document 1 (line 1)" in r.stderr,
          f"ids outside the vocabulary: 65: {r.stderr.strip()}")
    # invalid UTF-8 in the last story: "first" never reads it, "random" (which counts the whole file) refuses it
    badtxt = os.path.join(a.work, "badutf8.txt")
    with open(badtxt, "wb") as f:
        f.write("\n\n".join(st).encode() + b"\n\nbroken \xff byte\n")
    r, w = cut(a, badtxt, mdir, 256, 8, "first", 0, 512)
    check(r.returncode == 0 and w is not None and len(w) == 2048, f"first: reads only its windows, not the bad tail (rc {r.returncode})")
    r, _ = cut(a, badtxt, mdir, 256, 8, "random", 0, 512)
    good = os.path.join(a.work, "good.txt")
    with open(good, "wb") as f:
        f.write("\n\n".join(st).encode())
    ndocs = len(tt.txt_docs(good)) + 1
    check(r.returncode == 65 and f"document {ndocs}" in r.stderr and badtxt in r.stderr,
          f"random: invalid UTF-8 refused naming document {ndocs}: {r.stderr.strip()[:200]}")
    gzbad = os.path.join(a.work, "corrupt.txt.gz")
    with open(gzbad, "wb") as f:
        f.write(gzip.compress(b"hello world\n" * 1000)[:-40] + b"\x00" * 40)
    r, _ = cut(a, gzbad, mdir, 4, 2000, "first", 0, 512)
    check(r.returncode == 65 and "corrupt.txt.gz" in r.stderr, f"corrupt gzip: 65: {r.stderr.strip()}")
    # through the commands
    r = sh([a.slicepipe, "eval", mdir, "--seqlen", "256", "--text", src, "--tokens", os.path.join(ts, "eval.tok512.npy")])
    check(r.returncode == 64 and "one of --tokens and --text" in r.stderr, f"eval --text with --tokens: 64")
    r = sh([a.slicepipe, "eval", mdir, "--seqlen", "256", "--text", few, "--windows", "50", "--quiet"])
    check(r.returncode == 65 and "need 12800" in r.stderr, f"eval --text, too little for 50 windows: 65: {r.stderr.strip()}")
    man = os.path.join(a.work, "bad.toml")
    out = os.path.join(a.work, "bad_out")
    shutil.rmtree(out, ignore_errors=True)
    manifest(man, mdir, f'text = "{few}"', out)
    r = run(a, man)
    check(r.returncode == 65 and "need 16384" in r.stderr and not os.path.exists(out),
          f"run with too little text: 65 before any output: {r.stderr.strip()}")
    manifest(man, mdir, 'text = "missing.txt"', out)
    r = run(a, man, None, "--dry-run")
    check(r.returncode == 66 and "missing.txt" in r.stderr, f"run with a missing text: 66: {r.stderr.strip()}")
    return finish()


def finish():
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("OK")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--slicepipe", required=True)
    p.add_argument("--windows", required=True, help="the test_text_windows driver")
    p.add_argument("--shared", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--npm", required=True)
    p.add_argument("--work", required=True)
    a = p.parse_args()
    a.work = os.path.join(a.work, a.mode)
    return {"windows": cmd_windows, "hf": cmd_hf, "run": cmd_run, "resume": cmd_resume, "bad": cmd_bad}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
