#!/usr/bin/python3
"""test_synth.py — `slicepipe synth`: synthetic Llama checkpoints.

usage: test_synth.py SLICEPIPE WORKDIR

1. shape: a small GQA model (D 64, L 2, F 128, H 4, K 2, V 300, bf16,
   --shards 3) passes `slicepipe inspect` with the right architecture; the
   index spreads the tensors over >= 2 shards; config.json and calib.npy
   hold what was asked.
2. determinism: the same command twice gives byte-identical files; another
   seed gives other weights and tokens; --tied drops lm_head and leaves every
   other tensor byte-identical; f32 rounded to bf16 equals the bf16 output
   (values do not depend on the dtype).
3. statistics (safetensors parsed here, bf16 as uint16 << 16): every
   projection has std 1/sqrt(fan_in) within 5% and mean ~0, norms 1 + 0.05 z,
   the 1-sigma mass is Gaussian's; tokens are skewed (Zipf-like) with BOS=1
   exactly every 512.
4. `slicepipe run` at sparsity 0.25 on OUT/calib.npy exits 0, and `slicepipe
   eval` gives finite NLLs for the dense and sliced models, near ln V for the
   dense one (well-scaled logits).
5. bad options exit 64 and create nothing; an uncreatable OUT_DIR exits 73.
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(args):
    return subprocess.run(args, capture_output=True, text=True)


def load_st(path):
    """{name: float32 array} from one safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    hdr = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[b:end]
        if e["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            a = np.frombuffer(raw, dtype="<f4").copy()
        out[name] = (e["dtype"], a.reshape(e["shape"]), raw)
    return out


def load_model(d):
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    out = {}
    for f in files:
        out.update(load_st(os.path.join(d, f)))
    return out


def tree_bytes(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def bf16_round(x):
    """float32 -> bf16 (round to nearest even) -> float32."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return (u.astype(np.uint32) << 16).view(np.float32)


M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_value(seed, t, i, scale, offset):
    """synth.h: element i of tensor t, from splitmix64 mixing + Marsaglia polar."""
    key = mix64(mix64((seed + GOLDEN) & M64) ^ mix64((t * GOLDEN + 1) & M64))
    x = mix64((key + ((i >> 1) + 1) * GOLDEN) & M64)
    while True:
        hi, lo = x >> 32, x & 0xFFFFFFFF
        u = (hi - (1 << 32) if hi >= 1 << 31 else hi) / 2147483648.0
        v = (lo - (1 << 32) if lo >= 1 << 31 else lo) / 2147483648.0
        s = u * u + v * v
        if 0 < s < 1:
            f = math.sqrt(-2.0 * math.log(s) / s)
            return np.float32(offset + scale * (v if i & 1 else u) * f)
        x = mix64((x + GOLDEN) & M64)


SMALL = ["--hidden", "64", "--layers", "2", "--ffn", "128", "--heads", "4", "--kv-heads", "2", "--vocab", "300"]


def main():
    sp, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    def synth(name, *extra):
        out = os.path.join(work, name)
        r = run([sp, "synth", out, "--quiet"] + SMALL + list(extra))
        check(r.returncode == 0, f"synth {name} {' '.join(extra)}: exit 0 (got {r.returncode}: {r.stderr.strip()})")
        return out

    # ---- 1. shape ----
    a = synth("a", "--dtype", "bf16", "--shards", "3")
    r = run([sp, "inspect", a])
    check(r.returncode == 0, f"inspect exits 0 (got {r.returncode}: {r.stderr.strip()})")
    check("architecture: llama, 2 layers, hidden 64, ffn 128, heads 4 / kv 2, head_dim 16, vocab 300" in r.stdout,
          "inspect reports the architecture asked for")
    check("head: lm_head.weight" in r.stdout and "BF16" in r.stdout, "inspect: untied head, BF16")
    idx = json.load(open(os.path.join(a, "model.safetensors.index.json")))
    shards = set(idx["weight_map"].values())
    check(len(shards) >= 2, f"index lists >= 2 shards ({len(shards)})")
    check(len(idx["weight_map"]) == 1 + 9 * 2 + 2, f"21 tensors in the index ({len(idx['weight_map'])})")
    cfg = json.load(open(os.path.join(a, "config.json")))
    check(cfg["torch_dtype"] == "bfloat16" and cfg["tie_word_embeddings"] is False and cfg["model_type"] == "llama"
          and cfg["architectures"] == ["LlamaForCausalLM"] and cfg["max_position_embeddings"] == 4096,
          "config.json: dtype, untied, llama, max_position_embeddings")
    toks = np.load(os.path.join(a, "calib.npy"))
    check(toks.dtype == np.int32 and toks.shape == (64 * 512,), f"calib.npy: int32 (32768,) ({toks.dtype} {toks.shape})")

    # ---- 2. determinism ----
    a2 = synth("a2", "--dtype", "bf16", "--shards", "3")
    check(tree_bytes(a) == tree_bytes(a2), "same command twice: byte-identical files")
    b = synth("b", "--dtype", "bf16", "--shards", "3", "--seed", "7")
    ma, mb = load_model(a), load_model(b)
    same = [n for n in ma if n in mb and ma[n][2] == mb[n][2]]
    check(not same, f"--seed 7: every tensor differs ({same[:3]})")
    check(not np.array_equal(np.load(os.path.join(b, "calib.npy")), toks), "--seed 7: other tokens")
    t = synth("t", "--dtype", "bf16", "--tied")
    mt = load_model(t)
    check("lm_head.weight" not in mt and json.load(open(os.path.join(t, "config.json")))["tie_word_embeddings"] is True,
          "--tied: no lm_head, tie_word_embeddings true")
    check(set(mt) == set(ma) - {"lm_head.weight"} and all(mt[n][2] == ma[n][2] for n in mt),
          "--tied: every other tensor byte-identical to the untied model's")
    ri = run([sp, "inspect", t])
    check(ri.returncode == 0 and "tied to the embedding" in ri.stdout and "shards: 1" in ri.stdout,
          "--tied: inspect ok, tied head, one shard (no --shards)")
    f = synth("f", "--dtype", "f32")
    mf = load_model(f)
    check(all(mf[n][0] == "F32" for n in mf), "--dtype f32: F32 tensors")
    check(all(np.array_equal(bf16_round(mf[n][1]), ma[n][1]) for n in ma),
          "f32 output rounded to bf16 equals the bf16 output (values independent of dtype)")

    # Element i of tensor t is a pure function of (seed, t, i): recomputed here
    # from synth.h's recipe, across the 1 Mi-element chunk boundary of a
    # (20000, 64) embedding, and in a norm.
    c = os.path.join(work, "c")
    r = run([sp, "synth", c, "--quiet", "--hidden", "64", "--layers", "1", "--ffn", "64", "--heads", "2", "--vocab",
             "20000", "--dtype", "f32", "--seed", "12345", "--tokens", "600"])
    check(r.returncode == 0, f"synth (20000, 64) f32 embedding: exit 0 ({r.stderr.strip()})")
    mc = load_model(c)
    emb, g0 = mc["model.embed_tokens.weight"][1].ravel(), mc["model.layers.0.input_layernorm.weight"][1]
    idx_e = [0, 1, 2, 3, (1 << 20) - 2, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, emb.size - 1]
    check(all(emb[i] == ref_value(12345, 0, i, 1 / 8, 0.0) for i in idx_e)
          and all(g0[i] == ref_value(12345, 1, i, 0.05, 1.0) for i in (0, 1, 62, 63)),
          "weights equal the reference recipe f(seed, tensor, element), across the chunk boundary")

    # ---- 3. statistics ----
    D, F, hq = 64, 128, 64
    want = {"model.embed_tokens.weight": 1 / math.sqrt(D), "lm_head.weight": 1 / math.sqrt(D)}
    for l in range(2):
        p = f"model.layers.{l}."
        want.update({p + "self_attn.q_proj.weight": 1 / math.sqrt(D), p + "self_attn.k_proj.weight": 1 / math.sqrt(D),
                     p + "self_attn.v_proj.weight": 1 / math.sqrt(D), p + "self_attn.o_proj.weight": 1 / math.sqrt(hq),
                     p + "mlp.gate_proj.weight": 1 / math.sqrt(D), p + "mlp.up_proj.weight": 1 / math.sqrt(D),
                     p + "mlp.down_proj.weight": 1 / math.sqrt(F)})
    for n, s in sorted(want.items()):
        x = mf[n][1].astype(np.float64)
        tol = 0.05 if x.size >= 4096 else 0.08  # k/v (2048 elements): sampling error of std ~1.6%
        check(abs(x.std() / s - 1) < tol and abs(x.mean()) < 4 * s / math.sqrt(x.size),
              f"{n}: std {x.std():.5f} ~ {s:.5f} within {tol:.0%}, mean {x.mean():+.5f} ~ 0")
    x = np.concatenate([mf[n][1].ravel() for n in mf if "q_proj" in n or "gate_proj" in n or "up_proj" in n])
    z = x / (1 / math.sqrt(D))
    frac = np.mean(np.abs(z) < 1)
    check(abs(frac - 0.6827) < 0.01, f"projections: mass within 1 sigma {frac:.4f} ~ 0.6827 (Gaussian)")
    check(mf["model.layers.0.self_attn.q_proj.weight"][1].shape == (64, 64)
          and mf["model.layers.0.self_attn.k_proj.weight"][1].shape == (32, 64)
          and mf["model.layers.1.mlp.down_proj.weight"][1].shape == (64, 128), "shapes (out, in), GQA k_proj (K*hd, D)")
    g = np.concatenate([mf[n][1] for n in mf if n.endswith("norm.weight")]).astype(np.float64)
    check(g.size == 5 * 64 and abs(g.mean() - 1) < 0.012 and abs(g.std() / 0.05 - 1) < 0.15,
          f"norms: gamma mean {g.mean():.4f} ~ 1, std {g.std():.4f} ~ 0.05 (320 values)")
    norms = [mf[n][2] for n in mf if n.endswith("norm.weight")]
    check(len(norms) == 5 and len(set(norms)) == 5, "the 5 norms differ from one another (seeded per tensor)")
    bos = np.arange(0, toks.size, 512)
    rest = np.setdiff1d(np.arange(toks.size), bos)
    check(np.all(toks[bos] == 1) and np.all(toks[rest] >= 2) and toks.max() < 300,
          "tokens: BOS=1 exactly at multiples of 512, other ids in [2, 300)")
    cnt = np.bincount(toks[rest], minlength=300)[2:].astype(np.float64)
    p = cnt / cnt.sum()
    ent = -(p[p > 0] * np.log(p[p > 0])).sum()
    top10 = np.sort(cnt)[::-1][:10].sum() / cnt.sum()
    check(ent < math.log(298) - 0.5 and top10 > 0.25 and (cnt > 0).sum() > 250,
          f"tokens: Zipf-like (entropy {ent:.2f} < ln 298 - 0.5 = {math.log(298) - 0.5:.2f}, "
          f"top-10 share {top10:.2f} > 0.25, {int((cnt > 0).sum())} ids used)")

    # ---- 4. slice and evaluate ----
    man, out = os.path.join(work, "m.toml"), os.path.join(work, "sliced")
    with open(man, "w") as fh:
        fh.write(f'[model]\npath = "{a}"\n[calibration]\ntokens = "{a}/calib.npy"\nseqlen = 64\nnsamples = 8\n'
                 f'[slicing]\nsparsity = 0.25\nround_to = 8\n[output]\npath = "{out}"\n')
    r = run([sp, "run", man, "--quiet"])
    check(r.returncode == 0, f"slicepipe run on the synthetic model: exit 0 (got {r.returncode}: {r.stderr.strip()})")
    nll = {}
    for name, d in (("dense", a), ("sliced", out)):
        e = run([sp, "eval", d, "--tokens", os.path.join(a, "calib.npy"), "--seqlen", "64", "--windows", "16",
                 "--json", "--quiet"])
        ok = e.returncode == 0
        nll[name] = json.loads(e.stdout)["nll"] if ok else float("nan")
        check(ok and math.isfinite(nll[name]), f"eval {name}: finite NLL ({nll[name]:.4f}; {e.stderr.strip()})")
    check(abs(nll["dense"] - math.log(300)) < 1.5, f"dense NLL {nll['dense']:.3f} within 1.5 of ln 300 = {math.log(300):.3f}")
    if r.returncode == 0:
        sc = json.load(open(os.path.join(out, "config.json")))["slicepipe"]
        check(sc["d_embed"] == 48, f"sliced: d_embed 48 = 0.75·64 ({sc['d_embed']})")

    # ---- 5. bad options ----
    bad = [
        (["--kv-heads", "3"], "does not divide"),
        (["--heads", "5", "--kv-heads", "5"], "does not divide --hidden"),
        (["--head-dim", "15"], "even"),
        (["--vocab", "2"], "--vocab"),
        (["--vocab", "5000000"], "--vocab"),
        (["--hidden", "70000"], "--hidden"),
        (["--layers", "0"], "--layers"),
        (["--shards", "0"], "--shards"),
        (["--tokens", "0"], "--tokens"),
        (["--dtype", "f8"], "--dtype"),
        (["--hidden", "6x4"], "--hidden"),
        (["--seed", "-1"], "--seed"),
        (["--max-pos", "3000000000"], "--max-pos"),
        (["--bogus"], ""),
    ]
    for args, needle in bad:
        o = os.path.join(work, "bad")
        r = run([sp, "synth", o] + SMALL + args)
        check(r.returncode == 64 and needle in r.stderr and not os.path.exists(o),
              f"synth {' '.join(args)}: exit 64 naming '{needle}', nothing created (got {r.returncode}: {r.stderr.strip()[-90:]})")
    r = run([sp, "synth"])
    check(r.returncode == 64, f"synth without OUT_DIR: exit 64 (got {r.returncode})")
    r = run([sp, "synth", os.path.join(work, "a", "a", "x"), "--quiet"] + SMALL)
    check(r.returncode == 73 and "cannot create" in r.stderr,
          f"synth into a missing parent: exit 73 (got {r.returncode}: {r.stderr.strip()})")

    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
