#!/usr/bin/env python3
"""bench/plan70b.py — the memory plan of Llama-2-7B- and 70B-shaped jobs, without
their weights: `slicepipe run --dry-run` on a checkpoint whose config.json and
safetensors headers are real and whose data is a sparse file (ftruncate: no
disk blocks). For each job it prints the plan at the default memory and
bisects the smallest [resources] memory the run accepts (to 1 MiB).

  bench/plan70b.py [--slicepipe build/slicepipe] [--work DIR]

Shapes (bf16, untied head, vocab 32000): 7B: D 4096, 32 layers, FFN 11008,
32/32 heads; 70B: D 8192, 80 layers, FFN 28672, 64/8 heads. Calibration
128 × 2048 tokens. Jobs: per-layer SliceGPT at sparsity 0.25 (and with
refit = true), one basis at 0.25, and the stock policy at params 0.8 (split 0
and 0.5).
"""
import argparse
import json
import os
import struct
import subprocess
import sys

import numpy as np

SHAPES = {
    "7B": dict(D=4096, L=32, F=11008, H=32, KV=32, V=32000),
    "70B": dict(D=8192, L=80, F=28672, H=64, KV=8, V=32000),
}
JOBS = [
    ("SliceGPT per-layer, sparsity 0.25", 'sparsity = 0.25\n'),
    ("SliceGPT per-layer with refit, sparsity 0.25", 'sparsity = 0.25\nrefit = true\n'),
    ("SliceGPT one basis, sparsity 0.25", 'sparsity = 0.25\nbasis = "global"\n'),
    ("stock, params 0.8, split 0", 'policy = "stock"\nparams = 0.8\n'),
    ("stock, params 0.8, split 0.5", 'policy = "stock"\nparams = 0.8\nsplit = 0.5\n'),
]


def tensors(s):
    D, F, H, KV, V = s["D"], s["F"], s["H"], s["KV"], s["V"]
    hd = D // H
    yield "model.embed_tokens.weight", [V, D]
    for l in range(s["L"]):
        p = f"model.layers.{l}."
        yield p + "input_layernorm.weight", [D]
        yield p + "self_attn.q_proj.weight", [H * hd, D]
        yield p + "self_attn.k_proj.weight", [KV * hd, D]
        yield p + "self_attn.v_proj.weight", [KV * hd, D]
        yield p + "self_attn.o_proj.weight", [D, H * hd]
        yield p + "post_attention_layernorm.weight", [D]
        yield p + "mlp.gate_proj.weight", [F, D]
        yield p + "mlp.up_proj.weight", [F, D]
        yield p + "mlp.down_proj.weight", [D, F]
    yield "model.norm.weight", [D]
    yield "lm_head.weight", [V, D]


def write_checkpoint(d, s, shard_bytes=5 << 30):
    os.makedirs(d, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s["D"],
           "intermediate_size": s["F"], "num_hidden_layers": s["L"], "num_attention_heads": s["H"],
           "num_key_value_heads": s["KV"], "vocab_size": s["V"], "max_position_embeddings": 4096,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
           "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    shards, cur, size = [], [], 0
    for name, shape in tensors(s):
        n = 2
        for x in shape:
            n *= x
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape, n))
        size += n
    shards.append(cur)
    wmap = {}
    for i, sh in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        hdr, off = {}, 0
        for name, shape, n in sh:
            hdr[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
            off += n
            wmap[name] = fn
        h = json.dumps(hdr).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(d, fn), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            f.truncate(8 + len(h) + off)  # sparse: no blocks for the weights
    json.dump({"metadata": {}, "weight_map": wmap}, open(os.path.join(d, "model.safetensors.index.json"), "w"))


def write_tokens(path, n):
    # int32 ids (a dry run reads only the file's length)
    np.save(path, (3 + np.arange(n) % 31000).astype(np.int32))


def plan(sp, work, model, calib, slicing, memory):
    mf = os.path.join(work, "plan.toml")
    with open(mf, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = 2048\nnsamples = 128\n'
                f'[slicing]\n{slicing}[output]\npath = "{work}/out"\n[resources]\nmemory = "{memory}"\nthreads = 2\n')
    return subprocess.run([sp, "run", mf, "--dry-run"], capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slicepipe", default="build/slicepipe")
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "slicepipe-plan70b"))
    a = ap.parse_args()
    sp = os.path.abspath(a.slicepipe)
    os.makedirs(a.work, exist_ok=True)
    calib = os.path.join(a.work, "calib.npy")
    if not os.path.exists(calib):
        write_tokens(calib, 128 * 2048)
    print("| shape | job | plan at memory = 16GiB (MiB) | smallest memory accepted (MiB) |")
    print("|---|---|---|---|")
    for tag, s in SHAPES.items():
        model = os.path.join(a.work, tag)
        write_checkpoint(model, s)
        for label, slicing in JOBS:
            r = plan(sp, a.work, model, calib, slicing, "16GiB")
            line = next((x for x in (r.stdout + r.stderr).splitlines() if "memory plan" in x), "")
            if r.returncode not in (0, 64) or not line:
                sys.exit(f"{tag} {label}: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}")
            mib = float(line.split("memory plan")[1].split("MiB")[0])
            lo, hi = 1, 1 << 20  # MiB: lo refused, hi accepted
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if plan(sp, a.work, model, calib, slicing, f"{mid}MiB").returncode == 0:
                    hi = mid
                else:
                    lo = mid
            print(f"| {tag} | {label} | {mib:,.0f} | {hi:,} |", flush=True)
            if tag == "70B" and label == "SliceGPT per-layer, sparsity 0.25":
                r = plan(sp, a.work, model, calib, slicing, f"{hi}MiB")
                sys.stderr.write(f"--- the 70B per-layer plan at memory = {hi}MiB:\n{r.stdout}\n")


if __name__ == "__main__":
    main()
