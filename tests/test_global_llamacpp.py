#!/usr/bin/env python3
"""tests/test_global_llamacpp.py — basis = "global" outputs are stock models
that llama.cpp (node-llama-cpp 3.21.1) runs with slicepipe's own perplexity.

For each of the four shared models, the example model and the hf-tiny RMSNorm
families (Gemma, Qwen2, Mistral, Phi-3): `slicepipe run` with [slicing]
sparsity = 0.25 and basis = "global" (F32 output), `slicepipe export` of the
output to GGUF (F32, and F16 for two of them), then llama.cpp's mean NLL over
the same windows must equal `slicepipe eval` of the output folder within 1e-4
(F32) or 2e-3 (F16). The sliced model must also be measurably sliced: its
GGUF holds fewer bytes and its NLL differs from the dense one, so a dense
model passing through unchanged would fail.

Arguments as tests/test_gguf.py's (it provides the helpers); its npm mode
installs node-llama-cpp (the gguf_npm fixture). Shared data or node-llama-cpp
missing: 77.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gguf as tg  # noqa: E402

SPARSITY = 0.25


def slice_global(a, label, model, calib, seqlen, nsamples, round_to):
    out = os.path.join(a.work, f"global-{label}")
    mf = os.path.join(a.work, f"global-{label}.toml")
    with open(mf, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = {seqlen}\n'
                f'nsamples = {nsamples}\n[slicing]\nsparsity = {SPARSITY}\nround_to = {round_to}\nbasis = "global"\n'
                f'[output]\npath = "{out}"\ndtype = "f32"\n[resources]\nmemory = "1GB"\nthreads = 2\n')
    r = tg.run([a.slicepipe, "run", mf, "--quiet", "--restart"])
    if r.returncode:
        tg.die(f"slicepipe run {mf}: exit {r.returncode}: {r.stderr.strip()[-600:]}")
    cfg = json.load(open(os.path.join(out, "config.json")))
    src = json.load(open(os.path.join(model, "config.json")))
    D = src["hidden_size"]
    if cfg.get("model_type") != src.get("model_type") or cfg["hidden_size"] >= D:
        tg.die(f"{label}: config.json is not the stock {src.get('model_type')} at a smaller width: "
               f"model_type {cfg.get('model_type')}, hidden_size {cfg['hidden_size']} (dense {D})")
    return out


# Global outputs no llama.cpp architecture runs, refused by export (65): label
# -> (the reason's words, what it is). llama.cpp's phi3 sizes attention by
# n_embd and its llama (which the export uses instead, unfused) rotates whole
# heads only; its gemma always reads the head from the embedding, and a
# global-basis head is untied (the final norm's γ is fused into it).
REFUSED = {"tiny_phi3": ("partial rotary", "partial-rotary global Phi-3"),
           "tiny_gemma": ("ties the head", "untied global Gemma")}

def main():
    p = argparse.ArgumentParser()
    for k in ("--slicepipe", "--shared", "--root", "--npm", "--work"):
        p.add_argument(k)
    a = p.parse_args()
    if not os.path.isdir(os.path.join(a.shared, "models")):
        print(f"skip: {a.shared} is missing")
        sys.exit(tg.SKIP)
    if not os.path.exists(os.path.join(a.npm, "node_modules", "node-llama-cpp", "package.json")):
        print("skip: node-llama-cpp is not installed (the gguf.npm test installs it)")
        sys.exit(tg.SKIP)
    ts = os.path.join(a.shared, "data", "tinystories")
    if not os.path.isdir(ts):
        print("skip: shared data missing")
        sys.exit(tg.SKIP)
    os.makedirs(a.work, exist_ok=True)
    # (label, model dir, calibration tokens, eval tokens, seqlen, windows, GGUF types)
    cases = [
        ("stories260k", "stories260k", "calib.tok512.npy", "eval.tok512.npy", ("f32", "f16")),
        ("llama2xs", "llama2xs", "calib.tok512.npy", "eval.tok512.npy", ("f32", "f16")),
        ("babyllama105", "babyllama105", "calib.tok105.npy", "holdout.tok105.npy", ("f32",)),
        ("aidreams260k", "aidreams260k", "calib.dreams512.npy", "holdout.dreams512.npy", ("f32",)),
    ]
    runs = []
    for label, m, calib, ev, types in cases:
        runs.append((label, os.path.join(a.shared, "models", m), os.path.join(ts, calib), os.path.join(ts, ev), 256, 3,
                     types, 256, 32, 8))
    kjv = os.path.join(a.root, "examples", "kjv")
    runs.append(("kjv", os.path.join(kjv, "model"), os.path.join(kjv, "calib.npy"), os.path.join(kjv, "eval.npy"), 256, 3,
                 ("f32",), 256, 32, 8))
    for f in ("gemma", "qwen2", "mistral", "phi3"):
        d, tf, T, W = tg.tiny_eval(a, f, f"global_tiny_{f}.npy")
        runs.append(("tiny_" + f, d, tf, tf, T, W, ("f32",), T, W, 2))  # D is 8 or 16
    # full-rotary Phi-3 (as Phi-3-mini; the hf-tiny one rotates 3/4 of each head) and Qwen3 (q/k norms)
    for fam in ("phi3", "qwen3"):
        d = os.path.join(a.work, f"synth-{fam}")
        shutil.rmtree(d, ignore_errors=True)
        r = tg.run([a.slicepipe, "synth", d, "--arch", fam, "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                    "--ffn", "96", "--vocab", "64", "--dtype", "f32", "--tokens", "8192", "--quiet"])
        if r.returncode:
            tg.die(f"synth {fam}: exit {r.returncode}: {r.stderr.strip()}")
        cal = os.path.join(d, "calib.npy")
        runs.append((f"synth_{fam}", d, cal, cal, 64, 3, ("f32",), 64, 32, 8))
    tol = {"f32": 1e-4, "f16": 2e-3}
    worst = 0.0
    for label, d, calib, ev, T, W, types, cT, cN, r8 in runs:
        out = slice_global(a, label, d, calib, cT, cN, r8)
        dense = tg.sp_eval(a, d, ev, T, W)
        ref = tg.sp_eval(a, out, ev, T, W)
        if abs(ref - dense) < 1e-6:
            tg.die(f"{label}: the global-sliced NLL {ref:.7f} equals the dense one: nothing was sliced")
        toks = np.load(ev)
        if label in REFUSED:
            needle, what = REFUSED[label]
            r = tg.run([a.slicepipe, "export", out, "--gguf", os.path.join(a.work, f"global-{label}.gguf"), "--force",
                        "--quiet"])
            if r.returncode != 65 or needle not in r.stderr:
                tg.die(f"{label}: export of the {what}: exit {r.returncode}, {r.stderr.strip()}")
            print(f"{label:13s} dense {dense:.7f}  global-sliced {ref:.7f}; export refused (65): {needle}")
            continue
        dense_gg = os.path.join(a.work, f"global-{label}.dense.gguf")
        tg.export(a, d, dense_gg, "f32")
        for typ in types:
            gg = os.path.join(a.work, f"global-{label}.{typ}.gguf")
            tg.export(a, out, gg, typ)
            if typ == "f32" and os.path.getsize(gg) >= os.path.getsize(dense_gg):
                tg.die(f"{label}: the sliced GGUF ({os.path.getsize(gg)} bytes) is not smaller than the dense one")
            res = tg.llama(a, gg, toks, T, W)
            if res["windows"] != W:
                tg.die(f"{label} {typ}: llama.cpp evaluated {res['windows']} windows, not {W}")
            dn = res["nll"] - ref
            print(f"{label:13s} {typ:4s} T={T:3d} windows={W:2d}  dense {dense:.7f}  global-sliced: slicepipe {ref:.7f}"
                  f"  llama.cpp {res['nll']:.7f}  dNLL {dn:+.2e}")
            if abs(dn) > tol[typ]:
                tg.die(f"{label} {typ}: |dNLL| {abs(dn):.3g} > {tol[typ]}")
            if typ == "f32":
                worst = max(worst, abs(dn))
    print(f"worst F32 |dNLL| {worst:.2e}")


if __name__ == "__main__":
    main()
