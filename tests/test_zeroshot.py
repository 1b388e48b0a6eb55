#!/usr/bin/env python3
"""tests/test_zeroshot.py — `slicepipe eval --task` (zero-shot multiple choice)
against the independent numpy reference tests/ref/zeroshot_ref.py, and its
refusals of malformed task files.

  ref SLICEPIPE SHARED WORK
      stories260k (dense, F32) and a random sliced model with its tokenizer, on
      a JSONL task built here (trailing spaces, "" and "\\n" delimiters, an
      empty context, non-ASCII choices, 2..5 choices, a context longer than the
      model's 512 positions) and on the first HellaSwag tasks of the shared
      file; once more with --max-length 48 (most choices truncated, lm-eval's
      left cut). Per item: acc and acc_norm predictions identical, every
      log-likelihood within 1e-5 (atol) + 1e-6·|ref|; per task the figures
      and standard errors as the reference computes them.
  llamacpp SLICEPIPE SHARED ROOT NPM WORK
      llama.cpp (node-llama-cpp 3.21.1, installed by the gguf.npm test into NPM)
      on the F32 GGUF (`slicepipe export --type f32`) of stories260k and of the
      example model: every choice's log-likelihood from `slicepipe eval --task`
      equals llama.cpp's on the same tokens (the reference's requests) within
      1e-4; 77 without node-llama-cpp or the shared data.
  cloze SHARED ROOT WORK
      bench/tinystories_cloze.py on ../shared/data/tinystories/eval.txt: seed 23
      gives the same file twice and the pinned SHA-256; another seed another
      file; every item's context starts its story and is followed there by the
      gold choice, 4 distinct choices, the distractors from other stories.
  bad SLICEPIPE WORK
      malformed task files: exit 65, one line naming the file, the line and
      the reason; bad command lines: 64.
Exit 77 = skipped (no shared data)."""
import json
import math
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402

import model_ref as ref  # noqa: E402
import zeroshot_ref as zs  # noqa: E402

SKIP = 77
ATOL, RTOL = 1e-5, 1e-6


def fail(msg):
    sys.exit("FAIL: " + msg)


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def eval_tasks(exe, model, tasks, *extra):
    cmd = [exe, "eval", model, "--json", "--quiet", *extra]
    for t in tasks:
        cmd += ["--task", t]
    p = run(cmd)
    if p.returncode:
        fail("%s: rc %d: %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    return json.loads(p.stdout)


def sentences(text):
    out = []
    for story in text.split("\n\n"):
        for s in story.replace("\n", " ").split(". "):
            s = s.strip()
            if 3 <= len(s.split()) <= 14:
                out.append(s.rstrip(".") + ".")
    return out


def build_jsonl(path, stories):
    sents = sentences(stories)
    rng = np.random.default_rng(23)
    items = []
    for k in range(14):
        n = 2 + k % 4
        ch = [sents[int(rng.integers(len(sents)))] for _ in range(n)]
        items.append({"context": sents[k * 7] + " " + sents[k * 7 + 1], "choices": ch, "gold": int(k % n)})
    items.append({"context": "Once upon a time, ", "choices": ["there was a cat.", "a dog ran.", "yes"], "gold": 0})
    items.append({"context": "Lily said", "choices": [":", "\"hi\"", " no"], "gold": 1, "target_delimiter": ""})
    items.append({"context": "The end.", "choices": ["Tom smiled.", "Café ☕ au lait.", "naïve"], "gold": 0,
                  "target_delimiter": "\n"})
    items.append({"context": "", "choices": ["Once upon a time.", "Zzz qq."], "gold": 0})
    items.append({"context": "The sun was hot. \t ", "choices": ["a", "b", "ccc"], "gold": 2, "id": "x7"})
    long_ctx = " ".join(sents[200:255])  # well past 512 tokens: lm-eval's left cut
    items.append({"context": long_ctx, "choices": [sents[5], sents[6], sents[7], sents[8]], "gold": 3})
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")


def compare(name, got_task, items, model, encode, prefix_id, L):
    lls = []
    for it in items:
        lls.append([zs.loglik(model, inp, cont) for inp, cont in zs.requests(it, encode, prefix_id, L)])
    want = zs.metrics(items, lls)
    if got_task["count"] != len(items):
        fail("%s: count %d, reference %d" % (name, got_task["count"], len(items)))
    worst = 0.0
    for j, (it, gi, ll) in enumerate(zip(items, got_task["items"], lls)):
        g = np.asarray(gi["loglik"], dtype=np.float64)
        err = np.abs(g - np.asarray(ll))
        worst = max(worst, float(err.max()))
        if not (err <= ATOL + RTOL * np.abs(ll)).all():
            fail("%s item %d: log-likelihoods %s, reference %s" % (name, j, g.tolist(), ll))
        if (gi["pred"], gi["pred_norm"]) != want["preds"][j]:
            fail("%s item %d: predictions %s, reference %s" % (name, j, (gi["pred"], gi["pred_norm"]), want["preds"][j]))
    for k in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr"):
        a, b = got_task[k], want[k]
        if (a is None) != (b is None or math.isnan(b)) or (a is not None and abs(a - b) > 1e-12):
            fail("%s: %s %s, reference %s" % (name, k, a, b))
    print("%s: %d items, acc %.4f ± %.4f, acc_norm %.4f ± %.4f identical; log-likelihoods within %.2g" %
          (name, len(items), want["acc"], want["acc_stderr"], want["acc_norm"], want["acc_norm_stderr"], worst))
    return lls


def cmd_ref(exe, shared, work):
    mdir = os.path.join(shared, "models", "stories260k")
    hs = os.path.join(shared, "data", "hellaswag", "hellaswag_val_full.txt.bz2")
    ts = os.path.join(shared, "data", "tinystories", "eval.txt")
    if not all(os.path.exists(p) for p in (mdir, hs, ts)):
        print("SKIP: no shared models/data at", shared)
        return SKIP
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    import bz2
    with bz2.open(hs, "rt", encoding="utf-8", newline="") as f:
        head = [next(f) for _ in range(6 * 12)]
    hs_txt = os.path.join(work, "hellaswag12.txt")
    with open(hs_txt, "w", encoding="utf-8", newline="") as f:
        f.writelines(head)
    with open(ts, encoding="utf-8") as f:
        stories = f.read()
    jl = os.path.join(work, "mixed.jsonl")
    build_jsonl(jl, stories)
    tokbin = os.path.join(mdir, "tokenizer.bin")
    encode = zs.llama2c_tokenizer(tokbin, 512)
    # the reference tokenizer agrees with slicepipe's on a sample (else the comparison is moot)
    probe = os.path.join(work, "probe.jsonl")
    texts = ["Once upon a time, there was a cat.", "Café ☕ au lait.", "  spaces  ", "\"hi\" :"]
    for t in texts:
        with open(probe, "w", encoding="utf-8") as f:
            f.write(json.dumps({"text": t}) + "\n")
        p = run([exe, "tokenize", mdir, probe, "-o", os.path.join(work, "probe.npy"), "--no-special", "--force", "--quiet"])
        if p.returncode:
            fail("tokenize: " + p.stderr)
        if np.load(os.path.join(work, "probe.npy")).tolist() != encode(t):
            fail("reference tokenizer differs from slicepipe's on %r" % t)

    sliced = os.path.join(work, "sliced")
    from test_forward_parity import write_sliced_model
    write_sliced_model(sliced, 31, 64, 8, 4, 8, 96, 512, 48, [(48, 40, 48), (48, 32, 40), (40, 48, 56)])
    shutil.copy(tokbin, os.path.join(sliced, "tokenizer.bin"))

    # the long context is past stories260k's 512 positions: its choices take lm-eval's left cut
    long_it = zs.read_task(jl)[-1]
    if not all(len(inp) == 512 for inp, _ in zs.requests(long_it, encode, 1, 512)):
        fail("the long item does not reach the 512-token cut")
    both = [jl, hs_txt]
    for label, d, L, tasks in (("stories260k", mdir, 512, both), ("stories260k", mdir, 48, [jl]),
                               ("sliced", sliced, 512, [jl]), ("sliced", sliced, 44, [jl])):
        model = ref.read_model(d)
        items = [zs.read_task(t) for t in tasks]
        if True:
            extra = ["--max-length", str(L)] if L != 512 else []
            got = eval_tasks(exe, d, tasks, *extra)
            if got["max_length"] != L:
                fail("%s: max_length %s, want %d" % (label, got["max_length"], L))
            for t, its in zip(got["tasks"], items):
                compare("%s L=%d %s" % (label, L, t["task"]), t, its, model, encode, 1, L)
    # --limit keeps the first N items of each task
    got = eval_tasks(exe, mdir, both, "--limit", "3")
    if [t["count"] for t in got["tasks"]] != [3, 3]:
        fail("--limit 3: counts %s" % [t["count"] for t in got["tasks"]])
    # a small --memory makes many chunks; the figures do not change
    a = eval_tasks(exe, mdir, [jl])
    b = eval_tasks(exe, mdir, [jl], "--memory", "1")
    if [i["loglik"] for i in a["tasks"][0]["items"]] != [i["loglik"] for i in b["tasks"][0]["items"]]:
        fail("--memory 1 changed the log-likelihoods")
    print("OK")
    return 0


def cmd_llamacpp(exe, shared, root, npm, work):
    mdir = os.path.join(shared, "models", "stories260k")
    ts = os.path.join(shared, "data", "tinystories", "eval.txt")
    hs = os.path.join(shared, "data", "hellaswag", "hellaswag_val_full.txt.bz2")
    if not os.path.exists(os.path.join(npm, "node_modules", "node-llama-cpp", "package.json")):
        print("SKIP: node-llama-cpp is not installed in", npm, "(the gguf.npm test installs it)")
        return SKIP
    if not all(os.path.exists(p) for p in (mdir, ts, hs)):
        print("SKIP: no shared models/data at", shared)
        return SKIP
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    import bz2
    with bz2.open(hs, "rt", encoding="utf-8", newline="") as f:
        head = [next(f) for _ in range(6 * 2)]
    hs_txt = os.path.join(work, "hellaswag2.txt")
    with open(hs_txt, "w", encoding="utf-8", newline="") as f:
        f.writelines(head)
    with open(ts, encoding="utf-8") as f:
        jl = os.path.join(work, "mixed.jsonl")
        build_jsonl(jl, f.read())
    with open(jl, encoding="utf-8") as f:  # node-llama-cpp is slow per request: two plain items and the edge cases
        lines = f.readlines()
    with open(jl, "w", encoding="utf-8") as f:
        f.writelines(lines[:2] + lines[-6:])
    import sentencepiece
    kjv = os.path.join(root, "examples", "kjv", "model")
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(kjv, "tokenizer.model"))
    models = [("stories260k", mdir, zs.llama2c_tokenizer(os.path.join(mdir, "tokenizer.bin"), 512), 512, 1),
              ("kjv", kjv, lambda t: sp.encode(t), 256, sp.bos_id())]
    script = os.path.join(npm, "test_zeroshot_llamacpp.mjs")  # an ES module resolves packages from its folder
    shutil.copy(os.path.join(HERE, "test_zeroshot_llamacpp.mjs"), script)
    for label, d, encode, L, bos in models:
        gg = os.path.join(work, label + ".gguf")
        p = run([exe, "export", d, "--gguf", gg, "--type", "f32", "--force", "--quiet"])
        if p.returncode:
            fail("export %s: %s" % (label, p.stderr.strip()))
        got = eval_tasks(exe, d, [jl, hs_txt], "--threads", "2")
        reqs, ours = [], []
        for task, t in zip((jl, hs_txt), got["tasks"]):
            for it, gi in zip(zs.read_task(task), t["items"]):
                for (inp, cont), ll in zip(zs.requests(it, encode, bos, L), gi["loglik"]):
                    reqs.append({"inp": inp, "cont": cont})
                    ours.append(ll)
        rj = os.path.join(work, label + ".requests.json")
        with open(rj, "w") as f:
            json.dump(reqs, f)
        p = subprocess.run(["node", script, "--gguf", gg, "--requests", rj, "--ctx", str(L + 64)], capture_output=True,
                           text=True, cwd=npm, timeout=600)
        lines = [l for l in p.stdout.splitlines() if l.startswith("[")]
        if p.returncode or not lines:
            fail("llama.cpp on %s: rc %d: %s" % (gg, p.returncode, p.stderr.strip()[-600:]))
        theirs = json.loads(lines[-1])
        d_max = max(abs(a - b) for a, b in zip(ours, theirs))
        if len(theirs) != len(ours) or d_max > 1e-4:
            fail("%s: %d choices, llama.cpp's log-likelihoods differ by up to %.3g (> 1e-4)" % (label, len(ours), d_max))
        print("%s: %d choices, log-likelihoods within %.2g of llama.cpp's" % (label, len(ours), d_max))
    print("OK")
    return 0


CLOZE_SHA256 = "2deb098fbaa2b1a62d5e21cfd61f1ed031a5ed7e12396bcfc252a43584c691c8"  # seed 23, all 279 items


def cmd_cloze(shared, root, work):
    import hashlib
    ts = os.path.join(shared, "data", "tinystories", "eval.txt")
    if not os.path.exists(ts):
        print("SKIP: no", ts)
        return SKIP
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    gen = os.path.join(root, "bench", "tinystories_cloze.py")
    outs = []
    for name, seed in (("a", 23), ("b", 23), ("c", 24)):
        o = os.path.join(work, name + ".jsonl")
        p = run([sys.executable, gen, ts, "-o", o, "--seed", str(seed)])
        if p.returncode:
            fail("%s: %s" % (gen, p.stderr))
        outs.append(open(o, "rb").read())
    digest = hashlib.sha256(outs[0]).hexdigest()
    if outs[0] != outs[1] or digest != CLOZE_SHA256:
        fail("seed 23 is not reproducible: sha256 %s, pinned %s" % (digest, CLOZE_SHA256))
    if outs[2] == outs[0]:
        fail("seed 24 gave the seed-23 file")
    import re
    with open(ts, encoding="utf-8") as f:  # stories as the generator's docstring defines them
        stories = [" ".join(x.split()) for x in
                   re.split(r"\n\n(?=Once upon|One day|Once there|There was|Once,|Long ago|In a )", f.read())]
    items = [json.loads(l) for l in outs[0].decode("utf-8").splitlines()]
    for k, it in enumerate(items):
        ch, gold = it["choices"], it["choices"][it["gold"]]
        story = stories[it["story"] - 1]
        if len(ch) != 4 or len(set(ch)) != 4 or not story.startswith(it["context"] + " " + gold):
            fail("item %d: %d choices, or its story does not start with context + gold" % (k, len(ch)))
        for c in ch:
            if c != gold and c in story:
                fail("item %d: distractor %r is from its own story" % (k, c))
    print("OK: %d cloze items, seed 23 reproducible (sha256 %s...)" % (len(items), digest[:12]))
    return 0


def cmd_bad(exe, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    model = os.path.join(work, "m")
    ref.write_random_model(model, 5, 16, 1, 2, 1, 8, 24, 300)
    # a tokenizer for the random model: stories260k's is not needed, refusals come first
    cases = [
        ("notjson.jsonl", '{"context": "a", "choices": ["b", "c"], "gold": 0}\n{oops\n', "notjson.jsonl", "line 2"),
        ("noctx.jsonl", '{"choices": ["b", "c"], "gold": 0}\n', "noctx.jsonl:1", "\"context\" is missing"),
        ("ctxnum.jsonl", '{"context": 5, "choices": ["b", "c"], "gold": 0}\n', "ctxnum.jsonl:1", "\"context\" must be a string"),
        ("onechoice.jsonl", '\n{"context": "a", "choices": ["b"], "gold": 0}\n', "onechoice.jsonl:2", "needs 2"),
        ("choicenum.jsonl", '{"context": "a", "choices": ["b", 3], "gold": 0}\n', "choicenum.jsonl:1", "choice 1 must be a string"),
        ("emptychoice.jsonl", '{"context": "a", "choices": ["b", ""], "gold": 0}\n', "emptychoice.jsonl:1", "choice 1 is empty"),
        ("gold.jsonl", '{"context": "a", "choices": ["b", "c"], "gold": 2}\n', "gold.jsonl:1", "not an index"),
        ("goldfrac.jsonl", '{"context": "a", "choices": ["b", "c"], "gold": 0.5}\n', "goldfrac.jsonl:1", "not an index"),
        ("nogold.jsonl", '{"context": "a", "choices": ["b", "c"]}\n', "nogold.jsonl:1", "\"gold\" is missing"),
        ("delim.jsonl", '{"context": "a", "choices": ["b", "c"], "gold": 0, "target_delimiter": 1}\n', "delim.jsonl:1",
         "target_delimiter"),
        ("array.jsonl", '[1, 2]\n', "array.jsonl:1", "JSON object"),
        ("dup.jsonl", '{"context": "a", "context": "b", "choices": ["b", "c"], "gold": 0}\n', "dup.jsonl", "duplicate"),
        ("empty.jsonl", '\n\n', "empty.jsonl", "no items"),
        ("cut.txt", "ctx\n0\na\nb\nc\nd\nctx2\n1\na\n", "cut.txt:7", "cut off after 3 of its 6 lines"),
        ("goldline.txt", "ctx\n7\na\nb\nc\nd\n", "goldline.txt:2", "0, 1, 2 or 3"),
        ("blankend.txt", "ctx\n0\na\n [x] \nc\nd\n", "blankend.txt:4", "ending 1 is empty"),
    ]
    for name, body, where, why in cases:
        path = os.path.join(work, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(body)
        p = run([exe, "eval", model, "--task", path, "--quiet"])
        msg = p.stderr.strip()
        if p.returncode != 65 or where not in msg or why not in msg or len(msg.splitlines()) != 1:
            fail("%s: rc %d, stderr %r (want 65 naming %r and %r)" % (name, p.returncode, msg, where, why))
    path = os.path.join(work, "utf8.txt")
    with open(path, "wb") as f:
        f.write(b"ctx\n0\na\nb\xff\nc\nd\n")
    p = run([exe, "eval", model, "--task", path, "--quiet"])
    if p.returncode != 65 or "utf8.txt:4" not in p.stderr or "UTF-8" not in p.stderr:
        fail("invalid UTF-8: rc %d %r" % (p.returncode, p.stderr))
    p = run([exe, "eval", model, "--task", os.path.join(work, "missing.jsonl"), "--quiet"])
    if p.returncode != 66:
        fail("missing task file: rc %d %r" % (p.returncode, p.stderr))
    good = os.path.join(work, "good.jsonl")
    with open(good, "w") as f:
        f.write('{"context": "a", "choices": ["b", "c"], "gold": 0}\n')
    for extra in (["--seqlen", "8"], ["--tokens", good], ["--limit", "0"], []):
        args = [exe, "eval", model, "--quiet", *extra] + (["--task", good] if extra else ["--limit", "2"])
        p = run(args)
        if p.returncode != 64:
            fail("%s: rc %d, want 64: %r" % (" ".join(args), p.returncode, p.stderr))
    print("OK: %d malformed task files refused with file, line and reason" % (len(cases) + 1))
    return 0


def main():
    mode = sys.argv[1]
    if mode == "ref":
        return cmd_ref(sys.argv[2], sys.argv[3], sys.argv[4])
    if mode == "llamacpp":
        return cmd_llamacpp(*sys.argv[2:7])
    if mode == "cloze":
        return cmd_cloze(*sys.argv[2:5])
    if mode == "bad":
        return cmd_bad(sys.argv[2], sys.argv[3])
    sys.exit("usage: test_zeroshot.py ref SLICEPIPE SHARED WORK | bad SLICEPIPE WORK")


if __name__ == "__main__":
    sys.exit(main())
