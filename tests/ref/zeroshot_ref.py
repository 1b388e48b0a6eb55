"""tests/ref/zeroshot_ref.py — zero-shot multiple-choice scoring as
lm-eval-harness defines it, in numpy float64, independent of slicepipe's C
code (written from lm-eval's documented behaviour, not from its code or ours).

  llama2c_tokenizer(path, vocab) -> encode(text) -> [ids]
      llama2.c run.c's BPE: a dummy-prefix " " piece, each UTF-8 character's
      piece (else its bytes as ids byte+3), then repeatedly merge the adjacent
      pair whose joined piece has the highest score (first on ties). No BOS.
  hellaswag_preprocess(text)        lm-eval's HellaSwag `preprocess`
  read_task(path, limit=None) -> [{"context", "choices", "gold", "delim"}]
      JSONL or llama.cpp's 6-lines-a-task HellaSwag text (preprocessed).
  requests(item, encode, prefix_id, L) -> [(inp, n_cont)]
      lm-eval's loglikelihood for a causal LM: continuation = delim + choice;
      an empty context is [prefix_id]; else the context's trailing whitespace
      moves to the continuation, ctx = encode(context), cont =
      encode(context + continuation)[len(ctx):]; the model reads
      (ctx + cont)[-(L+1):][:-1] and the last n_cont positions are scored.
  loglik(model, inp, cont) -> float, the sum of float64 log-softmax.
  metrics(items, lls) -> dict(acc, acc_stderr, acc_norm, acc_norm_stderr)
      acc_norm divides by len(choice) in characters (code points); stderr is
      the sample standard deviation / sqrt(n).
"""
import json
import math
import re
import struct

import numpy as np

import model_ref as ref


def llama2c_tokenizer(path, vocab):
    with open(path, "rb") as f:
        data = f.read()
    off = 4
    pieces, scores = [], []
    for _ in range(vocab):
        s, n = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append(data[off:off + n])
        scores.append(s)
        off += n
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)

    cache = {}

    def encode(text):  # memoized: the tests encode the same long contexts many times
        if text not in cache:
            cache[text] = tuple(_encode(text))
        return list(cache[text])

    def _encode(text):
        ids = []
        if text:
            ids.append(lookup[b" "])
        for ch in text:
            b = ch.encode("utf-8")
            if b in lookup:
                ids.append(lookup[b])
            else:
                ids.extend(x + 3 for x in b)
        # pair scores, updated around each merge (same result as rescanning)
        def pair(i):
            j = lookup.get(pieces[ids[i]] + pieces[ids[i + 1]])
            return (scores[j], j) if j is not None else (None, None)

        ps = [pair(i) for i in range(len(ids) - 1)]
        while True:
            best, best_i, best_id = -1e10, -1, -1
            for i, (sc, j) in enumerate(ps):
                if sc is not None and sc > best:
                    best, best_i, best_id = sc, i, j
            if best_i < 0:
                return ids
            ids[best_i:best_i + 2] = [best_id]
            del ps[best_i]
            if best_i < len(ids) - 1:
                ps[best_i] = pair(best_i)
            if best_i > 0:
                ps[best_i - 1] = pair(best_i - 1)

    return encode


def hellaswag_preprocess(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def read_task(path, limit=None):
    items = []
    with open(path, encoding="utf-8", newline="") as f:
        raw = f.read()
    if path.endswith(".jsonl"):
        for line in raw.split("\n"):
            if not line.strip():
                continue
            o = json.loads(line)
            items.append({"context": o["context"], "choices": o["choices"], "gold": o["gold"],
                          "delim": o.get("target_delimiter", " ")})
    else:
        lines = [l[:-1] if l.endswith("\r") else l for l in raw.split("\n")]
        if lines and lines[-1] == "":
            lines.pop()
        for k in range(0, len(lines) - 5, 6):
            items.append({"context": hellaswag_preprocess(lines[k]), "gold": int(lines[k + 1]),
                          "choices": [hellaswag_preprocess(e) for e in lines[k + 2:k + 6]], "delim": " "})
    return items[:limit] if limit else items


def requests(item, encode, prefix_id, L):
    out = []
    for choice in item["choices"]:
        context, cont = item["context"], item["delim"] + choice
        if context == "":
            c_enc, k_enc = [prefix_id], encode(cont)
        else:
            n_sp = len(context) - len(context.rstrip())
            if n_sp:
                cont = context[-n_sp:] + cont
                context = context[:-n_sp]
            whole = encode(context + cont)
            c_enc = encode(context)
            k_enc = whole[len(c_enc):]
        inp = (c_enc + k_enc)[-(L + 1):][:-1]
        out.append((inp, k_enc))
    return out


def loglik(model, inp, cont):
    lg = ref.forward_logits(model, np.asarray([inp]))[0]  # (T, V) float64
    lg = lg - lg.max(axis=1, keepdims=True)
    lp = lg - np.log(np.exp(lg).sum(axis=1, keepdims=True))
    n = len(cont)
    rows = lp[len(inp) - n:len(inp)]
    return float(sum(rows[k, cont[k]] for k in range(n)))


def _stderr(xs):
    n = len(xs)
    if n < 2:
        return float("nan")
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def metrics(items, lls):
    acc, accn, preds = [], [], []
    for it, ll in zip(items, lls):
        ll = np.asarray(ll)
        lens = np.array([float(len(c)) for c in it["choices"]])
        p, pn = int(np.argmax(ll)), int(np.argmax(ll / lens))
        acc.append(1.0 if p == it["gold"] else 0.0)
        accn.append(1.0 if pn == it["gold"] else 0.0)
        preds.append((p, pn))
    return {"count": len(items), "acc": sum(acc) / len(acc), "acc_stderr": _stderr(acc),
            "acc_norm": sum(accn) / len(accn), "acc_norm_stderr": _stderr(accn), "preds": preds}
