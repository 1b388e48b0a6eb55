#!/usr/bin/env python3
"""tests/test_global_llamacpp.py — basis = "global" and policy = "stock"
outputs are stock models that llama.cpp (node-llama-cpp 3.21.1) runs with
slicepipe's own perplexity.

For each of the four shared models, the example model and the hf-tiny RMSNorm
families (Gemma, Qwen2, Mistral, Phi-3): `slicepipe run` with [slicing]
sparsity = 0.25 and basis = "global" (F32 output), `slicepipe export` of the
output to GGUF (F32, and F16 for two of them), then llama.cpp's mean NLL over
the same windows must equal `slicepipe eval` of the output folder within 1e-4
(F32) or 2e-3 (F16). The sliced model must also be measurably sliced: its
GGUF holds fewer bytes and its NLL differs from the dense one, so a dense
model passing through unchanged would fail.

--policy stock instead slices with [slicing] policy = "stock", params = 0.8:
every model above at split = 0 (the MLPs cut, the width and a tied head kept)
and stories260k and llama2xs also at split = 0.5 (the global basis too). The
output must be the stock model_type with a smaller intermediate_size (the
same hidden_size at split 0, a smaller one at 0.5, and at split 0 the head
tied as the dense config.json ties it, with no head tensor then), and the parameter counts its
config.json records must be the ones its files hold: params_output the sum of
numel over the output's safetensors tensors, params_dense the input's (every
tensor counted), params_output at most 0.8 of params_dense. A head kept tied
lets llama.cpp run a stock Gemma, and an MLP cut keeps Phi-3's width and so its
partial rotary: neither is refused at split 0. The stock policy also runs the
hf-tiny Phi-2 (a LayerNorm family: the MLP cut alone, fc2's bias refit), which
llama.cpp runs as phi2; OPT has no llama.cpp architecture.

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

SPARSITY = 0.25  # basis = "global"
PARAMS = 0.8     # policy = "stock"


def slice_model(a, label, model, calib, seqlen, nsamples, round_to, split):
    """Slices model by a.policy (split: the stock policy's) to an F32 output,
    checks its config.json, and returns its folder."""
    out = os.path.join(a.work, f"{a.policy}-{label}")
    mf = os.path.join(a.work, f"{a.policy}-{label}.toml")
    if a.policy == "stock":
        slicing = f'policy = "stock"\nparams = {PARAMS}\nsplit = {split}\n'
    else:
        slicing = f'sparsity = {SPARSITY}\nbasis = "global"\n'
    with open(mf, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = {seqlen}\n'
                f'nsamples = {nsamples}\n[slicing]\n{slicing}round_to = {round_to}\n'
                f'[output]\npath = "{out}"\ndtype = "f32"\n[resources]\nmemory = "1GB"\nthreads = 2\n')
    r = tg.run([a.slicepipe, "run", mf, "--quiet", "--restart"])
    if r.returncode:
        tg.die(f"slicepipe run {mf}: exit {r.returncode}: {r.stderr.strip()[-600:]}")
    cfg = json.load(open(os.path.join(out, "config.json")))
    src = json.load(open(os.path.join(model, "config.json")))
    D, F = src["hidden_size"], src["intermediate_size"]
    if a.policy == "global":
        if cfg.get("model_type") != src.get("model_type") or cfg["hidden_size"] >= D:
            tg.die(f"{label}: config.json is not the stock {src.get('model_type')} at a smaller width: "
                   f"model_type {cfg.get('model_type')}, hidden_size {cfg['hidden_size']} (dense {D})")
        return out
    if (cfg.get("model_type") != src.get("model_type") or cfg["intermediate_size"] >= F
            or (cfg["hidden_size"] == D) != (split == 0) or cfg["hidden_size"] > D):
        tg.die(f"{label}: config.json is not the stock {src.get('model_type')} with a smaller MLP (and at split "
               f"{split} {'the same' if split == 0 else 'a smaller'} width): model_type {cfg.get('model_type')}, "
               f"intermediate_size {cfg['intermediate_size']} (dense {F}), hidden_size {cfg['hidden_size']} (dense {D})")
    if split == 0:  # the head kept as config.json has it: tied (no head tensor written) or not
        head = {d: "lm_head.weight" in tg.st_tensors(d) for d in (model, out)}
        tied = src.get("tie_word_embeddings", not head[model])
        if bool(cfg.get("tie_word_embeddings")) != tied or head[out] == tied:
            tg.die(f"{label}: split 0 must keep the head as it is: the dense model's tie_word_embeddings {tied} "
                   f"(lm_head tensor {head[model]}), the output's {cfg.get('tie_word_embeddings')} (lm_head tensor "
                   f"{head[out]})")
    sb = cfg.get("slicepipe", {})
    dense_n, out_n = tg.mr.stored_params(model), tg.mr.stored_params(out)
    if sb.get("params_dense") != dense_n or sb.get("params_output") != out_n or not out_n <= PARAMS * dense_n:
        tg.die(f"{label}: config.json's parameter counts are not the files': params_dense {sb.get('params_dense')} "
               f"(the input holds {dense_n}), params_output {sb.get('params_output')} (the output holds {out_n}, "
               f"{out_n / dense_n:.4f} of dense; target {PARAMS})")
    print(f"{label:18s} params {dense_n} -> {out_n} ({out_n / dense_n:.4f}), hidden {D} -> {cfg['hidden_size']}, "
          f"MLP {F} -> {cfg['intermediate_size']}")
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
    p.add_argument("--policy", choices=("global", "stock"), default="global")
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
    # llama.cpp's windows of 256 (64 for synth): its per-token distributions in JS are most of
    # the test's time; the stock runs are twice as many, and one window each (255 tokens) pins
    # their NLL down as well
    nw = 3 if a.policy == "global" else 1
    runs = []
    for label, m, calib, ev, types in cases:
        runs.append((label, os.path.join(a.shared, "models", m), os.path.join(ts, calib), os.path.join(ts, ev), 256, nw,
                     types, 256, 32, 8))
    kjv = os.path.join(a.root, "examples", "kjv")
    runs.append(("kjv", os.path.join(kjv, "model"), os.path.join(kjv, "calib.npy"), os.path.join(kjv, "eval.npy"), 256, nw,
                 ("f32",), 256, 32, 8))
    for f in ("gemma", "qwen2", "mistral", "phi3") + (("phi",) if a.policy == "stock" else ()):
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
        runs.append((f"synth_{fam}", d, cal, cal, 64, nw, ("f32",), 64, 32, 8))
    # (label, ..., the stock policy's split): every run at split 0; two Llamas also with the global basis
    runs = [(label, *rest, 0.0) for label, *rest in runs]
    if a.policy == "stock":
        runs += [(f"{r[0]}_split0.5", *r[1:-1], 0.5) for r in runs if r[0] in ("stories260k", "llama2xs")]
    refused = REFUSED if a.policy == "global" else {}
    tol = {"f32": 1e-4, "f16": 2e-3}
    jobs, checks = [], []  # llama.cpp runs every GGUF in one process, after the slices
    for label, d, calib, ev, T, W, types, cT, cN, r8, split in runs:
        out = slice_model(a, label, d, calib, cT, cN, r8, split)
        dense = tg.sp_eval(a, d, ev, T, W)
        ref = tg.sp_eval(a, out, ev, T, W)
        if abs(ref - dense) < 1e-6:
            tg.die(f"{label}: the {a.policy}-sliced NLL {ref:.7f} equals the dense one: nothing was sliced")
        toks = np.load(ev)
        if label in refused:
            needle, what = refused[label]
            r = tg.run([a.slicepipe, "export", out, "--gguf", os.path.join(a.work, f"global-{label}.gguf"), "--force",
                        "--quiet"])
            if r.returncode != 65 or needle not in r.stderr:
                tg.die(f"{label}: export of the {what}: exit {r.returncode}, {r.stderr.strip()}")
            print(f"{label:13s} dense {dense:.7f}  global-sliced {ref:.7f}; export refused (65): {needle}")
            continue
        dense_gg = os.path.join(a.work, f"{a.policy}-{label}.dense.gguf")
        tg.export(a, d, dense_gg, "f32")
        for typ in types if a.policy == "global" else ("f32",):  # F16's export does not depend on the policy
            gg = os.path.join(a.work, f"{a.policy}-{label}.{typ}.gguf")
            tg.export(a, out, gg, typ)
            if typ == "f32" and os.path.getsize(gg) >= os.path.getsize(dense_gg):
                tg.die(f"{label}: the sliced GGUF ({os.path.getsize(gg)} bytes) is not smaller than the dense one")
            jobs.append((gg, toks, T, W))
            checks.append((label, typ, T, W, dense, ref))
    worst = 0.0
    for (label, typ, T, W, dense, ref), res in zip(checks, tg.llama_batch(a, jobs)):
        if res["windows"] != W:
            tg.die(f"{label} {typ}: llama.cpp evaluated {res['windows']} windows, not {W}")
        dn = res["nll"] - ref
        print(f"{label:17s} {typ:4s} T={T:3d} windows={W:2d}  dense {dense:.7f}  {a.policy}-sliced: slicepipe {ref:.7f}"
              f"  llama.cpp {res['nll']:.7f}  dNLL {dn:+.2e}")
        if abs(dn) > tol[typ]:
            tg.die(f"{label} {typ}: |dNLL| {abs(dn):.3g} > {tol[typ]}")
        if typ == "f32":
            worst = max(worst, abs(dn))
    print(f"worst F32 |dNLL| {worst:.2e}")

if __name__ == "__main__":
    main()
