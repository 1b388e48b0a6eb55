#!/usr/bin/python3
"""test_hostile_input.py — hostile files for the parsers, and sizes that come from input.

usage: test_hostile_input.py GROUP SLICEPIPE WORKDIR SHARED ROOT [--sanitized]

With --sanitized (an ASan/UBSan build, which cannot start under an
address-space limit: its shadow memory is reserved up front) the checks run
without the ulimit -v they otherwise use; what they check is the same.

Small hand-made files against the repository's examples/kjv model (and
SHARED/models/stories260k where a group says so; 77 without it). Every check
names what it refuses and how (the sysexits code, the file, the reason).

GROUP:
  json       the one strict JSON reader (io/base/json.h) for every JSON slicepipe
             reads: a .jsonl line holding two objects, a key twice once
             unescaped ({"te\\u0078t": ..., "text": 5}), tokenizer.json and
             tokenizer_config.json with a top-level key twice: 65 naming the
             file, the line and the key; an escaped "text" key is "text"
  tokenizer  tokenizer validation: one id given to two vocabulary pieces, an
             added token over another piece's id, a 70-byte tokenizer.json
             whose one id is 2147483646 (run under a 1 GiB address-space
             limit), a tokenizer.model whose trainer_spec.model_type is 99:
             65 naming the file and the id or field, before any table is
             sized from them
  limits     sizes that come from input are bounded: a Replace normalizer
             that makes a 64 KiB document 4 GiB long (under a 1 GiB
             address-space limit): 65 naming the tokenizer and the limit,
             --max-doc-bytes lowering it; eval --text on a ~300 KB .gz of
             100 MB of text without --windows: 64 naming --memory as soon as
             the ids pass it, and with --windows 2 it reads only what it needs;
             generate on a model without max_position_embeddings with
             --max-tokens 10^8 (under a 2 GiB limit): 64 before anything is
             allocated, and 20 tokens still generate
  regex      regex work has a per-document budget: a Split regex
             \p{L}{0,3000}?\p{L}{0,3000}?\d (seconds per 3000-letter word, under
             PCRE2's per-call limits) on three such words, and as a Replace
             normalizer: 65 naming the text, the tokenizer and the component,
             within seconds; GPT-2's and Llama-3's Split regexes from the file
             on prose, code, CJK and whitespace runs stay inside the budget,
             and GPT-2's gives the built-in regex path's ids
  gguf       GGUF export refusals: a finite weight of 1e7 is 65 with
             --type f16 and --type q8_0 (its block's fp16 scale max|x|/127
             overflows), naming the tensor; f32 and bf16 export it
  export     the export's output path before any work: a folder, '' (it
             wrote ./.tmp), the model's own shard: refused with nothing
             created; an existing file: 73 and kept, replaced with --force;
             a kill right after the rename: the rerun keeps its own file
             without --force; the lock file is never unlinked, so a process
             holding the lock file a finished export used still keeps a
             second export out (75); [output] gguf for a global Gemma, a
             partial-rotary Phi-3 and a model whose tokenizer has no GGUF
             vocabulary: 64 naming the manifest before any work (no output
             folder), while a global Llama exports
  leaks      tokenizer.json components refused after part of them was
             built (an empty Replace pattern, a Replace or Split regex that
             does not compile, a Split without a behavior, bad prepend_scheme
             values): 65, and under the sanitizer build (ASan's
             LeakSanitizer) no leak reported
  resume     resume after the inputs were restored (a synthetic Hugging Face
             folder, rm -rf and cp -r back: new inodes and ctimes): after a
             kill (per-layer, and basis = "global" killed in the survey) the
             rerun re-hashes and goes on, byte-identical to an uninterrupted
             run, and a later resume needs no second pass; restored with one
             bit changed in a tensor already consumed or not yet read: 65 on
             every rerun naming the file and the tensor, then the original put
             back resumes; a finished job restored: complete; a finished job
             whose journal was deleted: 65 before any work, its output
             re-verified (whole, or what is missing) and --restart named
"""
import fcntl
import gzip
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_common as hc  # noqa: E402
from hostile_common import check, failures, last, run  # noqa: E402


def write(path, data):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


SANITIZED = False


def address_space(gib):
    """preexec_fn: the child may map at most gib GiB (ulimit -v); none under a sanitizer (see the top)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))
    return None if SANITIZED else limit


def tok_json(**over):
    """A small byte-level BPE tokenizer.json as a dict, with top-level keys replaced."""
    t = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
         "pre_tokenizer": None, "post_processor": None, "decoder": {"type": "ByteLevel"},
         "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    t.update(over)
    return t


def tok_scratch(work):
    """(the output path, a small text, the path of a tokenizer.json to write) for a group in work."""
    os.makedirs(os.path.join(work, "tok"), exist_ok=True)
    return (os.path.join(work, "out.npy"), write(os.path.join(work, "ab.txt"), "abab ba\n"),
            os.path.join(work, "tok", "tokenizer.json"))


def tokenize(tok, text, out, *extra, **kw):
    if os.path.lexists(out):
        os.unlink(out)
    return run(["tokenize", tok, text, "-o", out, "--quiet", *extra], **kw)


# ---------------------------------------------------------------- json


def group_json(work, shared, root):
    kjv = os.path.join(root, "examples", "kjv", "model")
    out = os.path.join(work, "out.npy")
    cases = [
        ("two objects on one line", '{"text": "And God said"}{"text": "Let there be light"}\n', "trailing garbage"),
        ("a key twice once unescaped", '{"te\\u0078t": "And God said", "text": 5}\n', "duplicate key 'text'"),
        ("two objects separated by a space", '{"text": "a"} {"text": "b"}\n', "trailing garbage"),
    ]
    for what, line, why in cases:
        p = write(os.path.join(work, "bad.jsonl"), '{"text": "In the beginning"}\n' + line)
        r = tokenize(kjv, p, out)
        check(r.returncode == 65 and p in last(r) and "line 2" in last(r) and why in last(r) and not os.path.exists(out),
              f"json: .jsonl with {what}: exit {r.returncode}, naming the file, the line and '{why}', no output ({last(r)})")
        r = run(["eval", kjv, "--text", p, "--seqlen", "8", "--quiet"])
        check(r.returncode == 65 and p in last(r) and why in last(r),
              f"json: eval --text reads the same .jsonl the same way: exit {r.returncode} ({last(r)})")
    # An escaped key is its unescaped self: the same ids as the plain key.
    plain = write(os.path.join(work, "plain.jsonl"), '{"text": "And God said, Let there be light"}\n')
    esc = write(os.path.join(work, "esc.jsonl"), '{"te\\u0078t": "And God said, Let there be light", "n": {"text": 1}}\n')
    ra, rb = tokenize(kjv, plain, os.path.join(work, "plain.npy")), tokenize(kjv, esc, out)
    ok = ra.returncode == 0 and rb.returncode == 0
    check(ok and np.array_equal(np.load(os.path.join(work, "plain.npy")), np.load(out)),
          f"json: an escaped \"te\\u0078t\" key is \"text\": exit {rb.returncode}, the plain line's ids ({last(rb)})")
    # "\u0000" in a document's text is a NUL byte of the text (a golden HF encoding has one).
    nul = write(os.path.join(work, "nul.jsonl"), '{"text": "a\\u0000b"}\n')
    dec = os.path.join(work, "nul.dec.jsonl")
    if os.path.exists(dec):
        os.unlink(dec)
    r = tokenize(kjv, nul, out, "--decoded", dec)
    check(r.returncode == 0 and json.loads(open(dec).read())["text"] == "a\x00b",
          f"json: \"\\u0000\" in a .jsonl text is kept as a NUL byte: exit {r.returncode} ({last(r)})")

    # tokenizer.json: a top-level key twice (HF refuses the file; the first used to win).
    text = write(os.path.join(work, "ab.txt"), "abab ba\n")
    good = json.dumps(tok_json())
    dup = good[:-1] + ', "model": {"type": "WordPiece", "vocab": {}}}'
    os.makedirs(os.path.join(work, "dup-top"), exist_ok=True)
    tj = write(os.path.join(work, "dup-top", "tokenizer.json"), dup)
    r = tokenize(tj, text, out)
    check(r.returncode == 65 and tj in last(r) and "duplicate key 'model'" in last(r) and not os.path.exists(out),
          f"json: tokenizer.json with 'model' twice: exit {r.returncode}, naming the file and the key ({last(r)})")
    dup = good.replace('"merges": ["a b"]', '"merges": ["a b"], "vocab": {"a": 0}')
    write(tj, dup)
    r = tokenize(tj, text, out)
    check(r.returncode == 65 and "duplicate key 'vocab' in 'model'" in last(r),
          f"json: tokenizer.json with model.vocab twice: exit {r.returncode} ({last(r)})")
    # tokenizer_config.json beside a tokenizer.model: add_bos_token twice.
    m = os.path.join(work, "kjv-cfg")
    shutil.rmtree(m, ignore_errors=True)
    shutil.copytree(kjv, m)
    cfg = write(os.path.join(m, "tokenizer_config.json"), '{"add_bos_token": true, "add_bos_token": false}')
    r = tokenize(m, text, out)
    check(r.returncode == 65 and cfg in last(r) and "duplicate key 'add_bos_token'" in last(r),
          f"json: tokenizer_config.json with add_bos_token twice: exit {r.returncode} ({last(r)})")


# ---------------------------------------------------------------- tokenizer


def pb_varint(b, i):
    x, s = 0, 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << s
        s += 7
        if not c & 0x80:
            return x, i


def pb_enc_varint(x):
    out = bytearray()
    while True:
        c = x & 0x7F
        x >>= 7
        out.append(c | (0x80 if x else 0))
        if not x:
            return bytes(out)


def pb_fields(b):
    """(field, wire type, start, end of the whole field, payload start) of a protobuf message."""
    i, out = 0, []
    while i < len(b):
        s = i
        key, i = pb_varint(b, i)
        f, wt = key >> 3, key & 7
        p = i
        if wt == 0:
            _, i = pb_varint(b, i)
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        elif wt == 2:
            n, i = pb_varint(b, i)
            p = i
            i += n
        else:
            raise ValueError("wire type")
        out.append((f, wt, s, i, p))
    return out


def spm_with_model_type(model, value):
    """model (a ModelProto's bytes) with trainer_spec.model_type = value."""
    for f, wt, s, e, p in pb_fields(model):
        if f == 2 and wt == 2:
            spec = model[p:e]
            spec = b"".join(spec[a:z] for g, w, a, z, _ in pb_fields(spec) if not (g == 3 and w == 0))
            spec += pb_enc_varint(3 << 3) + pb_enc_varint(value)
            field = pb_enc_varint(2 << 3 | 2) + pb_enc_varint(len(spec)) + spec
            return model[:s] + field + model[e:]
    raise ValueError("no trainer_spec")


def group_tokenizer(work, shared, root):
    out, text, tj = tok_scratch(work)
    r = tokenize(write(tj, json.dumps(tok_json())), text, out)
    check(r.returncode == 0, f"tokenizer: the small tokenizer.json itself tokenizes ({last(r)})")
    # One id, two pieces: decoding could not tell them apart.
    t = tok_json()
    t["model"]["vocab"]["ba"] = 2
    r = tokenize(write(tj, json.dumps(t)), text, out)
    check(r.returncode == 65 and tj in last(r) and "id 2" in last(r) and "'ab'" in last(r) and "'ba'" in last(r)
          and not os.path.exists(out),
          f"tokenizer: model.vocab gives id 2 to 'ab' and 'ba': exit {r.returncode}, naming both ({last(r)})")
    t = tok_json(added_tokens=[{"id": 1, "content": "<x>", "special": True}])
    r = tokenize(write(tj, json.dumps(t)), text, out)
    check(r.returncode == 65 and "added_tokens[0]" in last(r) and "'<x>'" in last(r) and "id 1" in last(r),
          f"tokenizer: an added token over the id of 'b': exit {r.returncode} ({last(r)})")
    t = tok_json(added_tokens=[{"id": 1, "content": "b", "special": False}])
    r = tokenize(write(tj, json.dumps(t)), text, out)
    check(r.returncode == 0, f"tokenizer: an added token that is its own vocabulary piece is fine ({last(r)})")
    # A 70-byte file whose one id would size the id tables at ~28 GB.
    huge = write(tj, '{"model": {"type": "BPE", "vocab": {"a": 2147483646}, "merges": []}}')
    t0 = time.time()
    r = tokenize(huge, text, out, preexec_fn=address_space(1))
    check(r.returncode == 65 and tj in last(r) and "2147483646" in last(r) and "largest vocabulary" in last(r)
          and time.time() - t0 < 20,
          f"tokenizer: a {os.path.getsize(huge)}-byte tokenizer.json with id 2147483646, under ulimit -v 1 GiB: "
          f"exit {r.returncode} in {time.time() - t0:.1f}s ({last(r)})")
    huge = write(tj, '{"added_tokens": [{"id": 2000000000, "content": "x"}], "model": {"type": "BPE", '
                     '"vocab": {"a": 0}, "merges": []}}')
    r = tokenize(huge, text, out, preexec_fn=address_space(1))
    check(r.returncode == 65 and "2000000000" in last(r) and "largest vocabulary" in last(r),
          f"tokenizer: an added token with id 2000000000, under ulimit -v 1 GiB: exit {r.returncode} ({last(r)})")
    # tokenizer.model with trainer_spec.model_type 99 (libsentencepiece reads it as unigram).
    with open(os.path.join(root, "examples", "kjv", "model", "tokenizer.model"), "rb") as f:
        model = f.read()
    m = os.path.join(work, "spm")
    os.makedirs(m, exist_ok=True)
    ok = write(os.path.join(m, "tokenizer.model"), spm_with_model_type(model, 2))
    r = tokenize(ok, text, out)
    check(r.returncode == 0, f"tokenizer: the model rewritten with model_type 2 (BPE) still tokenizes ({last(r)})")
    bad = write(os.path.join(m, "tokenizer.model"), spm_with_model_type(model, 99))
    r = tokenize(bad, text, out)
    check(r.returncode == 65 and bad in last(r) and "model_type 99" in last(r) and not os.path.exists(out),
          f"tokenizer: tokenizer.model with model_type 99: exit {r.returncode}, naming the file and the field ({last(r)})")


# ---------------------------------------------------------------- limits


def group_limits(work, shared, root):
    out, _, tj = tok_scratch(work)
    # A Replace normalizer turning each 'a' into 64 KiB: a 64 KiB document becomes 4 GiB.
    t = tok_json(normalizer={"type": "Replace", "pattern": {"String": "a"}, "content": "x" * 65536})
    t["model"]["vocab"]["x"] = 3
    write(tj, json.dumps(t))
    doc = write(os.path.join(work, "a64k.txt"), "a" * 65536 + "\n")
    t0 = time.time()
    r = tokenize(tj, doc, out, preexec_fn=address_space(1))
    check(r.returncode == 65 and doc in last(r) and tj in last(r) and "grows past 268435456 bytes" in last(r)
          and not os.path.exists(out) and time.time() - t0 < 30,
          f"limits: a Replace normalizer making a 64 KiB document 4 GiB, under ulimit -v 1 GiB: exit {r.returncode} in "
          f"{time.time() - t0:.1f}s, naming the text, the tokenizer and the limit ({last(r)})")
    r = tokenize(tj, doc, out, "--max-doc-bytes", "1000000")
    check(r.returncode == 65 and "grows past 1000000 bytes" in last(r),
          f"limits: --max-doc-bytes 1000000 bounds the normalized text too: exit {r.returncode} ({last(r)})")
    # eval --text without --windows keeps every window's ids: held to --memory.
    kjv = os.path.join(root, "examples", "kjv", "model")
    gz = os.path.join(work, "big.txt.gz")
    with open(gz, "wb") as f:
        f.write(gzip.compress(("And God said, Let there be light: and there was light.\n\n" * 1800000).encode(), 9))
    t0 = time.time()
    r = run(["eval", kjv, "--text", gz, "--seqlen", "64", "--memory", "4MB", "--quiet"], timeout=60)
    check(r.returncode == 64 and gz in last(r) and "--memory" in last(r) and "--windows" in last(r) and time.time() - t0 < 60,
          f"limits: eval --text on a {os.path.getsize(gz) // 1000} KB .gz without --windows, --memory 4MB: exit "
          f"{r.returncode} in {time.time() - t0:.1f}s, naming the file and --memory ({last(r)})")
    r = run(["eval", kjv, "--text", gz, "--seqlen", "64", "--windows", "2", "--json", "--quiet"], timeout=60)
    check(r.returncode == 0 and json.loads(r.stdout)["windows"] == 2,
          f"limits: the same text with --windows 2: exit {r.returncode}, two windows ({last(r)})")
    # generate on a model without max_position_embeddings: the sequence's state is planned first.
    syn = os.path.join(work, "syn")
    r = run(["synth", syn, "--hidden", "64", "--layers", "2", "--ffn", "128", "--heads", "4", "--vocab", "256",
             "--tokens", "2048", "--quiet"])
    with open(os.path.join(syn, "config.json")) as f:
        cfg = json.load(f)
    del cfg["max_position_embeddings"]
    write(os.path.join(syn, "config.json"), json.dumps(cfg))
    t0 = time.time()
    r = run(["generate", syn, "--prompt-ids", "1,2,3", "--max-tokens", "100000000", "--quiet"], preexec_fn=address_space(2))
    check(r.returncode == 64 and "--max-tokens" in last(r) and "max_position_embeddings" in last(r)
          and time.time() - t0 < 20,
          f"limits: generate --max-tokens 10^8 on a model without max_position_embeddings, under ulimit -v 2 GiB: exit "
          f"{r.returncode} in {time.time() - t0:.1f}s, before any allocation ({last(r)})")
    r = run(["generate", syn, "--prompt-ids", "1,2,3", "--max-tokens", "20", "--ignore-eos", "--quiet"],
            preexec_fn=address_space(2))
    check(r.returncode == 0 and len(r.stdout.split()) == 20,
          f"limits: the same model generates 20 tokens: exit {r.returncode}, {len(r.stdout.split())} ids ({last(r)})")

    small = write(os.path.join(work, "a2.txt"), "aa b\n")
    r = tokenize(tj, small, out)
    check(r.returncode == 0 and np.load(out).tolist() == [3] * (2 * 65536) + [1],
          f"limits: the same tokenizer on a short document: exit {r.returncode}, 'x' 131072 times, then 'b' ({last(r)})")


# ---------------------------------------------------------------- regex

GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
LLAMA3_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def group_regex(work, shared, root):
    out, _, tj = tok_scratch(work)
    split = {"type": "Split", "pattern": {"Regex": "\\p{L}{0,3000}?\\p{L}{0,3000}?\\d"}, "behavior": "Isolated",
             "invert": False}
    write(tj, json.dumps(tok_json(pre_tokenizer=split)))
    doc = write(os.path.join(work, "words.txt"), " ".join(["a" * 3000] * 3) + "\n")
    t0 = time.time()
    r = tokenize(tj, doc, out, timeout=20)
    dt = time.time() - t0
    check(r.returncode == 65 and doc in last(r) and tj in last(r) and "pre_tokenizer Split" in last(r)
          and "steps" in last(r) and dt < 10 and not os.path.exists(out),
          f"regex: a backtracking Split regex on three 3000-letter words: exit {r.returncode} in {dt:.1f}s, naming the "
          f"text, the tokenizer and the component ({last(r)})")
    rep = {"type": "Replace", "pattern": {"Regex": "\\p{L}{0,3000}?\\p{L}{0,3000}?\\d"}, "content": ""}
    write(tj, json.dumps(tok_json(normalizer=rep)))
    t0 = time.time()
    r = tokenize(tj, doc, out, timeout=20)
    check(r.returncode == 65 and "normalizer Replace" in last(r) and time.time() - t0 < 10,
          f"regex: the same pattern as a Replace normalizer: exit {r.returncode} in {time.time() - t0:.1f}s ({last(r)})")
    # Real pre-tokenizer regexes from the file, on prose, code, CJK and whitespace runs: inside the
    # budget, and metering changes no match (GPT-2's regex from the file gives the built-in path's ids).
    text = ("The quick brown fox's 12345 jumps!!  over\t\tthe lazy dog.\n" * 400 + "def f(x):\n    return x ** 2\n" * 400
            + "日本語のテキスト、中文文本。 " * 400 + " " * 20000 + "x\n" + "\t \r\n" * 5000 + "1234567890" * 2000)
    doc = write(os.path.join(work, "prose.jsonl"), json.dumps({"text": text}) + "\n")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
    vocab = {ch: i for i, ch in enumerate(sorted(set(
        "ĠĊĉč!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~")))}
    model = {"type": "BPE", "vocab": vocab, "merges": []}
    builtin = os.path.join(work, "builtin.npy")
    r = tokenize(write(tj, json.dumps(tok_json(pre_tokenizer=dict(byte_level, use_regex=True), model=model))), doc, builtin)
    ids = np.load(builtin) if r.returncode == 0 else None
    for name, regex in (("GPT-2", GPT2_REGEX), ("Llama-3", LLAMA3_REGEX)):
        split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
        t = tok_json(pre_tokenizer={"type": "Sequence", "pretokenizers": [split, byte_level]}, model=model)
        r = tokenize(write(tj, json.dumps(t)), doc, out)
        same = name != "GPT-2" or (r.returncode == 0 and np.array_equal(np.load(out), ids))
        check(r.returncode == 0 and ids is not None and same and np.load(out).size > len(text) // 2,
              f"regex: {name}'s Split regex from the file on {len(text)} bytes of prose, code, CJK and whitespace runs: "
              f"exit {r.returncode}, within the budget" + (", the built-in regex path's ids" if name == "GPT-2" else "")
              + f" ({last(r)})")


# ---------------------------------------------------------------- gguf


def synth(work, name, *extra):
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    r = run(["synth", d, "--hidden", "64", "--layers", "2", "--ffn", "128", "--heads", "4", "--vocab", "256",
             "--tokens", "4096", "--quiet", *extra])
    if r.returncode != 0:
        sys.exit(f"synth {name} failed: {last(r)}")
    return d


def set_f32(model, tensor, index, value):
    """Writes value into a float32 tensor of a one-shard model, in place."""
    p = os.path.join(model, "model.safetensors")
    with open(p, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        hdr = json.loads(f.read(n))
        begin = hdr[tensor]["data_offsets"][0]
        f.seek(8 + n + begin + 4 * index)
        f.write(np.float32(value).tobytes())


def group_gguf(work, shared, root):
    m = synth(work, "big-weight", "--dtype", "f32")
    set_f32(m, "model.embed_tokens.weight", 5 * 64 + 3, 1e7)  # row 5, in the block of columns 0..31
    for typ in ("q8_0", "f16"):
        gg = os.path.join(work, f"big.{typ}.gguf")
        r = run(["export", m, "--gguf", gg, "--type", typ, "--quiet"])
        check(r.returncode == 65 and "token_embd.weight" in last(r) and "row 5" in last(r) and not os.path.exists(gg)
              and not os.path.exists(gg + ".tmp"),
              f"gguf: a weight of 1e7 exported as {typ}: exit {r.returncode}, naming the tensor and the row, no file "
              f"({last(r)})")
    for typ in ("f32", "bf16"):
        gg = os.path.join(work, f"big.{typ}.gguf")
        r = run(["export", m, "--gguf", gg, "--type", typ, "--quiet"])
        check(r.returncode == 0 and os.path.getsize(gg) > 0, f"gguf: the same weight exported as {typ}: exit {r.returncode} "
              f"({last(r)})")


# ---------------------------------------------------------------- export


def run_manifest(work, name, model, extra=""):
    out = os.path.join(work, name + "-out")
    shutil.rmtree(out, ignore_errors=True)
    m = write(os.path.join(work, name + ".toml"),
              f'[model]\npath = "{model}"\n[calibration]\ntokens = "{os.path.join(model, "calib.npy")}"\nseqlen = 32\n'
              f'nsamples = 4\n[slicing]\nsparsity = 0.25\nbasis = "global"\n[output]\npath = "{out}"\ngguf = "f32"\n{extra}')
    t0 = time.time()
    r = run(["run", m, "--quiet"], timeout=120)
    return r, m, out, time.time() - t0


def group_export(work, shared, root):
    m = synth(work, "llama")
    gg = os.path.join(work, "out.gguf")
    litter = lambda p: [f for f in (p + ".tmp", p + ".journal", p + ".lock") if os.path.lexists(f)]
    # Refused before any work, nothing created: a folder, an empty name, the model's own shard.
    d = os.path.join(work, "a-folder")
    os.makedirs(os.path.join(d, "keep"))
    r = run(["export", m, "--gguf", d, "--quiet"])
    check(r.returncode == 73 and "directory" in last(r) and not litter(d) and os.listdir(d) == ["keep"],
          f"export: --gguf a folder: exit {r.returncode} before any work, no .tmp/.journal/.lock ({last(r)})")
    r = run(["export", m, "--gguf", "", "--quiet"], cwd=work)
    check(r.returncode == 73 and not os.path.lexists(os.path.join(work, ".tmp"))
          and not os.path.lexists(os.path.join(work, ".journal")),
          f"export: --gguf '': exit {r.returncode}, no ./.tmp ({last(r)})")
    shard = os.path.join(m, "model.safetensors")
    before = open(shard, "rb").read()
    r = run(["export", m, "--gguf", shard, "--force", "--quiet"])
    check(r.returncode == 64 and "the input" in last(r) and open(shard, "rb").read() == before and not litter(shard),
          f"export: --gguf the model's shard, even with --force: exit {r.returncode}, the shard intact ({last(r)})")
    # An existing file: kept without --force, replaced with it.
    write(gg, "someone's data\n")
    r = run(["export", m, "--gguf", gg, "--quiet"])
    check(r.returncode == 73 and open(gg).read() == "someone's data\n" and "--force" in last(r) and not litter(gg),
          f"export: an existing file at --gguf: exit {r.returncode}, kept, naming --force ({last(r)})")
    r = run(["export", m, "--gguf", gg, "--force", "--quiet"])
    ref = open(gg, "rb").read() if r.returncode == 0 else b""
    check(r.returncode == 0 and ref[:4] == b"GGUF", f"export: the same with --force: exit {r.returncode} ({last(r)})")
    # Killed right after the rename (its journal outlived it): the rerun keeps its own file, without --force.
    os.unlink(gg)
    c = run(["export", m, "--gguf", gg, "--quiet"], env={"SLICEPIPE_COUNT_COMMITS": "1"})
    n = int(c.stderr.split("commit-points export ")[1].split()[0]) if "commit-points export" in c.stderr else 0
    os.unlink(gg)
    k = run(["export", m, "--gguf", gg, "--quiet"], env={"SLICEPIPE_KILL_AT": f"export:{n}"})
    r = run(["export", m, "--gguf", gg])
    check(n > 2 and k.returncode == -9 and r.returncode == 0 and "already finished" in r.stdout
          and open(gg, "rb").read() == ref,
          f"export: killed after the rename (commit point {n}): the rerun without --force keeps its own file "
          f"(exit {r.returncode}: {r.stdout.strip()[-80:]}{last(r)})")
    # The lock file is never unlinked: a process that opened it while an export held it, and locks it
    # once that export is done, holds the lock every later export takes (75), not a nameless one.
    lock = gg + ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        r1 = run(["export", m, "--gguf", gg, "--force", "--quiet"])
        flock = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        r2 = run(["export", m, "--gguf", gg, "--force", "--quiet"])
    finally:
        os.close(fd)
    check(r1.returncode == 0 and r2.returncode == 75 and str(os.getpid()) in last(r2),
          f"export: a lock held on the lock file a finished export used keeps the next export out: exits "
          f"{r1.returncode}, {r2.returncode} ({last(r2)})")
    r = run(["export", m, "--gguf", gg, "--force", "--quiet"])
    check(r.returncode == 0, f"export: once that lock is released, the export runs: exit {r.returncode} ({last(r)})")

    # [output] gguf: what the export would refuse on the sliced model is refused before the slicing.
    r, man, out, dt = run_manifest(work, "global-llama", m)
    check(r.returncode == 0 and os.path.exists(os.path.join(out, "model.gguf")),
          f"export: [output] gguf for a global Llama: exit {r.returncode}, model.gguf written ({last(r)})")
    with open(os.path.join(root, "examples", "kjv", "model", "tokenizer.model"), "rb") as f:
        unigram = spm_with_model_type(f.read(), 1)  # a SentencePiece unigram model: llama.cpp's SPM vocabulary is BPE
    cases = [("a global Gemma (its head is untied)", synth(work, "gemma", "--arch", "gemma"), "ties the head"),
             ("a partial-rotary global Phi-3", synth(work, "phi3", "--arch", "phi3", "--partial-rotary", "0.5"),
              "partial rotary"),
             ("a model whose tokenizer has no GGUF vocabulary", synth(work, "unigram", "--vocab", "1536"), "BPE")]
    write(os.path.join(cases[2][1], "tokenizer.model"), unigram)
    for what, model, why in cases:
        r, man, out, dt = run_manifest(work, os.path.basename(model), model)
        check(r.returncode == 64 and man in last(r) and "[output] gguf" in last(r) and why in last(r)
              and not os.path.exists(out) and dt < 30,
              f"export: [output] gguf for {what}: exit {r.returncode} in {dt:.1f}s, before any work (no output "
              f"folder), naming the manifest and the reason ({last(r)})")


# ---------------------------------------------------------------- leaks


def group_leaks(work, shared, root):
    out, text, tj = tok_scratch(work)
    cases = [
        ("a Replace normalizer with an empty pattern",
         dict(normalizer={"type": "Replace", "pattern": {"String": ""}, "content": "x"}), "empty pattern"),
        ("a Replace normalizer whose regex does not compile",
         dict(normalizer={"type": "Replace", "pattern": {"Regex": "(a"}, "content": "x"}), "regex"),
        ("a Sequence whose second Replace has an empty pattern",
         dict(normalizer={"type": "Sequence", "normalizers": [
             {"type": "Replace", "pattern": {"String": "a"}, "content": "b"},
             {"type": "Replace", "pattern": {"String": ""}, "content": "x"}]}), "empty pattern"),
        ("a Split without a behavior", dict(pre_tokenizer={"type": "Split", "pattern": {"String": "a"}}), "behavior"),
        ("a Split regex that does not compile",
         dict(pre_tokenizer={"type": "Split", "pattern": {"Regex": "[a"}, "behavior": "Isolated"}), "regex"),
        ("a Metaspace pre-tokenizer with a bad prepend_scheme",
         dict(pre_tokenizer={"type": "Metaspace", "replacement": "_", "prepend_scheme": "sometimes"}), "prepend_scheme"),
        ("a Metaspace decoder with a bad prepend_scheme",
         dict(decoder={"type": "Metaspace", "replacement": "_", "prepend_scheme": "sometimes"}), "prepend_scheme"),
    ]
    env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=1"}
    for what, over, why in cases:
        r = tokenize(write(tj, json.dumps(tok_json(**over))), text, out, env=env)
        check(r.returncode == 65 and tj in last(r) and why in last(r) and "LeakSanitizer" not in r.stderr,
              f"leaks: {what}: exit {r.returncode}, no leak reported ({last(r)})")


# ---------------------------------------------------------------- resume


def out_bytes(out):
    """The output a run promises to reproduce: shards, index, config.json."""
    files = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors") or f in ("model.safetensors.index.json", "config.json"):
            with open(os.path.join(out, f), "rb") as fh:
                files[f] = fh.read()
    return files


def flip_byte(model, tensor):
    """One bit of tensor's data changed, in the file the index names; returns that file."""
    idx = json.load(open(os.path.join(model, "model.safetensors.index.json")))["weight_map"]
    p = os.path.join(model, idx[tensor])
    with open(p, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        begin = json.loads(f.read(n))[tensor]["data_offsets"][0]
        f.seek(8 + n + begin + 1)
        b = f.read(1)
        f.seek(8 + n + begin + 1)
        f.write(bytes([b[0] ^ 0x01]))
    return p


def group_resume(work, shared, root):
    orig = synth(work, "orig", "--layers", "3", "--shards", "2")
    model = os.path.join(work, "model")  # the folder the jobs read: deleted and put back

    def restore(change=None):
        """rm -rf the model folder, then cp -r it back from the original (new inodes and ctimes);
        change: a tensor to alter by one bit in the copy. Returns the changed file."""
        shutil.rmtree(model, ignore_errors=True)
        subprocess.run(["cp", "-r", orig, model], check=True)
        return flip_byte(model, change) if change else None

    def job(name, basis=None):
        out = os.path.join(work, name)
        shutil.rmtree(out, ignore_errors=True)
        m = hc.manifest(os.path.join(work, name + ".toml"), model, os.path.join(model, "calib.npy"), out)
        if basis:
            write(m, open(m).read().replace("[slicing]\n", f'[slicing]\nbasis = "{basis}"\n'))
        return m, out

    restore()
    m, ref = job("ref")
    r = run(["run", m, "--quiet"])
    assert r.returncode == 0, r.stderr
    want = out_bytes(ref)
    assert len([f for f in want if f.endswith(".safetensors")]) >= 2

    # Deleted and restored byte for byte between the kill and the rerun: the rerun re-hashes and goes on.
    for basis, what in ((None, "per-layer"), ("global", "basis = global, killed in the survey")):
        ref_x = want
        if basis:
            mr, rout = job("restored-ref", basis)
            r = run(["run", mr, "--quiet"])
            assert r.returncode == 0, r.stderr
            ref_x = out_bytes(rout)
        m, out = job("restored", basis)
        k = run(["run", m, "--quiet"], {"SLICEPIPE_KILL_AT": "writer:2"})
        restore()
        r = run(["run", m])
        check(k.returncode != 0 and r.returncode == 0 and "re-hashed" in r.stderr and "going on" in r.stderr
              and out_bytes(out) == ref_x,
              f"resume ({what}): the model folder deleted and put back with cp -r after a kill: the rerun re-hashes, "
              f"goes on, and the output is byte-identical to an uninterrupted run (exit {k.returncode}, then "
              f"{r.returncode}: {last(r)})")

    # Restored twice, the resume killed again: the resume after it needs no re-hash (a new STAT record).
    m, out = job("restored-twice")
    restore()
    k1 = run(["run", m, "--quiet"], {"SLICEPIPE_KILL_AT": "writer:2"})
    restore()
    k2 = run(["run", m], {"SLICEPIPE_KILL_AT": "writer:2"})
    r = run(["run", m])
    check(k1.returncode != 0 and k2.returncode != 0 and "re-hashed" in k2.stderr and r.returncode == 0
          and "re-hashed" not in r.stderr and out_bytes(out) == want,
          f"resume: restored, resumed, killed again: the next resume trusts the re-verified files without a second "
          f"pass, identical output (exits {k1.returncode}, {k2.returncode}, {r.returncode}: {last(r)})")

    # Restored with one bit changed: in a tensor the journaled layers were computed from, and in one not read yet.
    for tensor, when in (("model.layers.0.self_attn.q_proj.weight", "the journaled layers were computed from it"),
                         ("model.layers.2.mlp.down_proj.weight", "not read yet")):
        m, out = job("restored-changed")
        restore()
        k = run(["run", m, "--quiet"], {"SLICEPIPE_KILL_AT": "writer:2"})
        before = out_bytes(out)
        changed = restore(tensor)
        r1 = run(["run", m, "--quiet"])
        r2 = run(["run", m, "--quiet"])
        check(k.returncode != 0 and r1.returncode == 65 and r2.returncode == 65 and changed in last(r1)
              and f"'{tensor}'" in last(r1) and "changed" in last(r1) and when in last(r1) and "--restart" in last(r1)
              and out_bytes(out) == before,
              f"resume: restored with one bit changed in {tensor} ({when}): 65 on every rerun, naming the file and "
              f"the tensor, the output untouched (exits {r1.returncode}, {r2.returncode}: {last(r1)})")
        restore()
        r = run(["run", m, "--quiet"])
        check(r.returncode == 0 and out_bytes(out) == want,
              f"resume: ... and with the original bytes put back, the job resumes to the identical output "
              f"(exit {r.returncode}: {last(r)})")

    # A finished job, its input restored: still complete.
    m, out = job("complete")
    r0 = run(["run", m, "--quiet"])
    restore()
    r = run(["run", m])
    check(r0.returncode == 0 and r.returncode == 0 and "already complete" in r.stderr and out_bytes(out) == want,
          f"resume: a finished job whose model folder was restored with cp -r: complete, verified "
          f"(exit {r.returncode}: {last(r)})")

    # A finished job whose journal was deleted: refused before any work, saying what to do; nothing touched.
    jp = os.path.join(out, ".slicepipe", "journal")
    os.unlink(jp)
    mt = {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in os.listdir(out)}
    r = run(["run", m, "--quiet"])
    msg = last(r)
    n = len(json.load(open(os.path.join(out, "model.safetensors.index.json")))["weight_map"])
    check(r.returncode == 65 and jp in msg and "missing" in msg and f"{n} tensors" in msg and "verify" in msg
          and "usable as it is" in msg and "--restart" in msg and not os.path.exists(jp)
          and {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in os.listdir(out)} == mt and out_bytes(out) == want,
          f"resume: a finished job whose journal was deleted: 65 before any work, its output re-verified and "
          f"called whole, --restart named, nothing written (exit {r.returncode}: {msg})")
    shard = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))[-1]
    os.unlink(os.path.join(out, shard))
    r = run(["run", m, "--quiet"])
    check(r.returncode == 65 and "not a whole output" in last(r) and shard in last(r) and "--restart" in last(r),
          f"resume: ... and with a shard deleted too: 65, not a whole output, naming the shard ({last(r)})")
    r = run(["run", m, "--quiet", "--restart"])
    check(r.returncode == 0 and out_bytes(out) == want, f"resume: ... --restart makes it again, identical "
                                                        f"(exit {r.returncode}: {last(r)})")


def main():
    global SANITIZED
    group, hc.SP, work, shared, root = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3]), sys.argv[4], sys.argv[5]
    SANITIZED = "--sanitized" in sys.argv[6:]
    work = os.path.join(work, group)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t0 = time.time()
    groups = {"json": group_json, "tokenizer": group_tokenizer, "limits": group_limits, "regex": group_regex,
              "gguf": group_gguf, "export": group_export, "leaks": group_leaks, "resume": group_resume}
    groups[group](work, os.path.abspath(shared), os.path.abspath(root))
    print(f"{len(failures)} failed" if failures else f"all checks passed ({time.time() - t0:.1f}s)")
    sys.exit(1 if failures else 0)


main()
