#!/usr/bin/env python3
"""bench/frontier_bench.py — the size–quality–speed frontier of compression ×
quantization in llama.cpp (issue 24), run by bench/frontier_bench.sh.

Per model (the shared ones and the example; ONLY= picks):
  dense                    the model itself
  stock 0.9 / 0.8 / 0.7    [slicing] policy = "stock", params = p (a stock
                           checkpoint: exports to GGUF)
each written as GGUF f16, q8_0, q5_0 and q4_0 (`slicepipe export`; 4/5-bit
types keep token_embd and output at q8_0), and measured in llama.cpp
(node-llama-cpp 3.21.1's prebuilt CPU build, 2 threads, F32 KV cache):
  bytes      the GGUF file
  NLL        mean over held-out windows of 256 (bench/frontier_llama.mjs)
  KL         from the dense f16 GGUF's next-token distribution at the same
             positions: mean and 99th percentile over positions
  pp, tg     prompt (256 tokens, one batch) and generation (--tg, 64
             single-token decodes of the held-out tokens after the prompt, as
             llama-bench's tg) tokens/s at 2 threads, best of --reps (3), in the
             same process
plus per-layer SliceGPT at sparsity 0.25, which llama.cpp cannot run
(shortcut matrices): its held-out NLL from `slicepipe eval` (float32), for
reference, beside the dense model's.

With --synth, also a synthetic Llama of about 1B parameters (`slicepipe
synth`: D 2048, 16 layers, FFN 5632, 16 heads, vocab 32000, bf16), for speed
only: random weights have no meaningful quality, so it has no NLL or KL; its
stock variants are calibrated on 16 of its own windows of 256, with round_to = 32
(every width a whole number of blocks). Each GGUF is
deleted once measured.

Writes WORK/frontier.json, a markdown table (--md), an SVG (--svg: NLL and
generation tokens/s against bytes, one row of panels per model), and one
line per model: at equal bytes, which wins.
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from params_bench import manifest, sh  # noqa: E402  (one manifest writer and runner for the benches)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPES = ("f16", "q8_0", "q5_0", "q4_0")
PARAMS = (0.9, 0.8, 0.7)


def node_json(a, script, args):
    dst = os.path.join(a.npm, os.path.basename(script))  # an ES module resolves packages from its own folder
    open(dst, "w").write(open(script).read())
    out = sh(["node", dst] + args, cwd=a.npm)
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def kl_stats(p, q):
    """KL(P || Q) per position (rows), P the reference."""
    q = np.maximum(q.astype(np.float64), 1e-30)
    p = p.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * (np.log(np.maximum(p, 1e-30)) - np.log(q)), 0.0)
    k = t.sum(1)
    return float(k.mean()), float(np.percentile(k, 99))


def svg(results, path):
    W, H, pad = 440, 220, 50
    rows = [r for r in results if r["points"]]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H * len(rows) + 30}" font-family="sans-serif" '
           'font-size="11">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="18" font-size="13">NLL (left) and generation tokens/s at 2 threads (right) against GGUF bytes; '
           'llama.cpp; shapes: f16 ○ q8_0 □ q5_0 △ q4_0 ◇</text>']
    colors = {"dense": "#000000", "stock 0.9": "#1f77b4", "stock 0.8": "#2ca02c", "stock 0.7": "#d62728"}
    marks = {"f16": "circle", "q8_0": "square", "q5_0": "tri", "q4_0": "diamond"}
    for ri, r in enumerate(rows):
        pts = r["points"]
        bx = [math.log10(p["bytes"]) for p in pts]
        x0, x1 = min(bx) - 0.05, max(bx) + 0.05
        for ci, (key, lab) in enumerate((("nll", "NLL"), ("tg_tps", "tg tok/s"))):
            ox, oy = ci * W, 30 + ri * H
            ys = [p[key] for p in pts if math.isfinite(p[key])]
            if not ys:  # the speed-only model has no NLL
                continue
            y0, y1 = min(ys), max(ys)
            y0, y1 = y0 - 0.05 * (y1 - y0 + 1e-9), y1 + 0.05 * (y1 - y0 + 1e-9)
            X = lambda v: ox + pad + (math.log10(v) - x0) / (x1 - x0) * (W - pad - 15)
            Y = lambda v: oy + H - 35 - (v - y0) / (y1 - y0) * (H - 55)
            out.append(f'<rect x="{ox + pad}" y="{oy + 20}" width="{W - pad - 15}" height="{H - 55}" fill="none" stroke="#999"/>')
            out.append(f'<text x="{ox + pad}" y="{oy + 14}">{r["model"]}: {lab}</text>')
            for v in (y0, y1):
                out.append(f'<text x="{ox + 4}" y="{Y(v) + 4:.1f}">{v:.3g}</text>')
            for v in (10 ** x0, 10 ** x1):
                out.append(f'<text x="{X(v) - 20:.1f}" y="{oy + H - 20}">{v / 1e6:.2f} MB</text>')
            for var in colors:
                s = sorted((p for p in pts if p["variant"] == var and math.isfinite(p[key])), key=lambda p: p["bytes"])
                if len(s) > 1:
                    out.append('<polyline fill="none" stroke="%s" stroke-width="1" points="%s"/>' % (
                        colors[var], " ".join(f"{X(p['bytes']):.1f},{Y(p[key]):.1f}" for p in s)))
                for p in s:
                    x, y, c = X(p["bytes"]), Y(p[key]), colors[var]
                    m = marks[p["type"]]
                    if m == "circle":
                        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="none" stroke="{c}"/>')
                    elif m == "square":
                        out.append(f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="none" stroke="{c}"/>')
                    elif m == "tri":
                        out.append(f'<polygon points="{x:.1f},{y - 4:.1f} {x - 4:.1f},{y + 3:.1f} {x + 4:.1f},{y + 3:.1f}" fill="none" stroke="{c}"/>')
                    else:
                        out.append(f'<polygon points="{x:.1f},{y - 4:.1f} {x - 4:.1f},{y:.1f} {x:.1f},{y + 4:.1f} {x + 4:.1f},{y:.1f}" fill="none" stroke="{c}"/>')
            if ri == 0 and ci == 0:
                for i, (var, c) in enumerate(colors.items()):
                    out.append(f'<text x="{ox + W - 90}" y="{oy + 34 + 12 * i}" fill="{c}">{var}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


def verdict(r):
    """At equal bytes: each stock point against the dense curve (NLL linear in
    log bytes between dense types; outside their range, the nearest)."""
    dense = sorted((p for p in r["points"] if p["variant"] == "dense"), key=lambda p: p["bytes"])
    if len(dense) < 2:
        return f"{r['model']}: no dense curve"
    lb = np.log([p["bytes"] for p in dense])
    ln = np.array([p["nll"] for p in dense])
    wins, losses = [], []
    for p in r["points"]:
        if p["variant"] == "dense":
            continue
        d = float(np.interp(math.log(p["bytes"]), lb, ln))
        (wins if p["nll"] < d else losses).append((p["nll"] - d, p))
    best = min(wins + losses, key=lambda t: t[0])
    if not wins:
        return (f"{r['model']}: dense wins at every size — the closest compressed point, {best[1]['variant']} "
                f"{best[1]['type']} ({best[1]['bytes']:,} B), is {best[0]:+.4f} nats above the dense curve there")
    names = ", ".join(f"{p['variant']} {p['type']} ({d:+.4f})" for d, p in sorted(wins, key=lambda t: t[0]))
    return (f"{r['model']}: compressed wins at {len(wins)} of {len(wins) + len(losses)} points against the dense "
            f"curve at equal bytes: {names}")


def speed_verdict(r):
    """The speed-only model: at about equal bytes, tokens/s of each stock point
    against the dense type nearest in bytes."""
    dense = [p for p in r["points"] if p["variant"] == "dense"]
    out = []
    for p in r["points"]:
        if p["variant"] == "dense":
            continue
        n = min(dense, key=lambda q: abs(math.log(q["bytes"] / p["bytes"])))
        out.append(f"{p['variant']} {p['type']} {p['bytes'] / 1e6:.0f} MB: tg {p['tg_tps'] / n['tg_tps']:.2f}x, "
                   f"pp {p['pp_tps'] / n['pp_tps']:.2f}x dense {n['type']} ({n['bytes'] / 1e6:.0f} MB)")
    return f"{r['model']} (speed only): " + "; ".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--slicepipe", required=True)
    p.add_argument("--npm", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--models", required=True, help="label|dir|calib|heldout lines")
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--tg", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--md", default=None)
    p.add_argument("--svg", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--synth", action="store_true", help="also the ~1B synthetic model, speed only")
    p.add_argument("--synth-shape", default="2048,16,5632,16,32000", help="D,layers,FFN,heads,vocab of --synth")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    T = 256
    results = []
    lines = a.models.strip().splitlines()
    if a.synth:
        D, L, F, H, V = a.synth_shape.split(",")
        sd = os.path.join(a.work, f"synth-{a.synth_shape.replace(',', 'x')}")
        if not os.path.exists(os.path.join(sd, "config.json")):
            sh([a.slicepipe, "synth", sd, "--hidden", D, "--layers", L, "--ffn", F, "--heads", H,
                "--vocab", V, "--dtype", "bf16", "--tokens", "65536", "--quiet"])
        lines.append(f"synth-1B|{sd}|{sd}/calib.npy|")
    for line in lines:
        label, d, calib, held = line.split("|")[:4]
        tag = label.split()[0]
        speed_only = not held  # the synthetic model: no meaningful quality
        toks = np.load(held if held else calib)
        W = 0 if speed_only else min(a.windows, len(toks) // T)
        tj = os.path.join(a.work, f"{tag}.tokens.json")
        json.dump([int(t) for t in toks[:max(W * T, 256 + a.tg)]], open(tj, "w"))  # the speed steps' tokens too
        variants = [("dense", d)]
        for pv in PARAMS:
            # the speed-only model: 16 windows of 256, the memory a 1B model's plan needs, and
            # widths in multiples of 32 (a block type's row length: with round_to = 8 a
            # down projection of 4,656 falls back to F16, and the speed would measure that)
            rt = 32 if speed_only else 8
            mf, out = manifest(a.work, f"{tag}-stock{pv}", d, calib, f'[slicing]\npolicy = "stock"\nparams = {pv}\nround_to = {rt}\n',
                               **({"nsamples": 16, "memory": "12GB"} if speed_only else {}))
            if not os.path.exists(os.path.join(out, "config.json")):
                sh([a.slicepipe, "run", mf, "--quiet"])
            variants.append((f"stock {pv}", out))
        r = {"model": label, "windows": W, "points": []}
        ref = None
        for var, md in variants:
            for typ in TYPES:
                gg = os.path.join(a.work, f"{tag}.{var.replace(' ', '')}.{typ}.gguf")
                sh([a.slicepipe, "export", md, "--gguf", gg, "--type", typ, "--force", "--quiet"])
                pf = gg + ".probs"
                res = node_json(a, os.path.join(ROOT, "bench", "frontier_llama.mjs"),
                                ["--gguf", gg, "--tokens", tj, "--seqlen", str(T), "--windows", str(W), "--probs", pf,
                                 "--pp", "256", "--tg", str(a.tg), "--reps", str(a.reps)])
                if speed_only:
                    klm = kl99 = nll = float("nan")
                else:
                    q = np.fromfile(pf, np.float32).reshape(res["positions"], res["vocab"])
                    if ref is None:  # dense f16 first
                        ref = q
                    klm, kl99 = kl_stats(ref, q)
                    nll = res["nll"]
                os.unlink(pf)
                pt = {"variant": var, "type": typ, "bytes": os.path.getsize(gg), "nll": nll, "kl_mean": klm,
                      "kl_p99": kl99, "pp_tps": res["pp_tps"], "tg_tps": res["tg_tps"]}
                if speed_only:
                    os.unlink(gg)
                    os.unlink(gg + ".lock")  # export's lock file (it stays after an export: io/base/lock.h)
                r["points"].append(pt)
                print(f"{label} {var} {typ}: {pt['bytes']} B nll {pt['nll']:.4f} KL {klm:.4f}/{kl99:.4f} "
                      f"pp {pt['pp_tps']:.0f} tg {pt['tg_tps']:.0f}", file=sys.stderr, flush=True)
        if speed_only:
            r["verdict"] = speed_verdict(r)
            print(r["verdict"], file=sys.stderr, flush=True)
            results.append(r)
            if a.json:
                json.dump(results, open(a.json, "w"), indent=1)
            continue
        # per-layer SliceGPT 0.25, for reference (no GGUF: shortcut matrices)
        mf, out = manifest(a.work, f"{tag}-slicegpt25", d, calib, '[slicing]\nsparsity = 0.25\nbasis = "per-layer"\n')
        sh([a.slicepipe, "run", mf, "--quiet"])
        ev = lambda m: json.loads(sh([a.slicepipe, "eval", m, "--tokens", held, "--seqlen", str(T), "--windows", str(W), "--json",
                                      "--quiet", "--threads", "2"]).strip().splitlines()[-1])["nll"]
        r["slicegpt25"] = {"nll": ev(out), "dense_nll": ev(d)}
        r["verdict"] = verdict(r)
        print(r["verdict"], file=sys.stderr, flush=True)
        results.append(r)
        if a.json:
            json.dump(results, open(a.json, "w"), indent=1)
    if a.svg:
        svg(results, a.svg)
    lines = ["| model | variant | type | GGUF bytes | NLL | KL mean | KL p99 | pp tok/s | tg tok/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for pt in r["points"]:
            f4 = lambda v: f"{v:.4f}" if math.isfinite(v) else "—"  # noqa: E731
            lines.append(f"| {r['model']} | {pt['variant']} | {pt['type']} | {pt['bytes']:,} | {f4(pt['nll'])} | "
                         f"{f4(pt['kl_mean'])} | {f4(pt['kl_p99'])} | {pt['pp_tps']:.0f} | {pt['tg_tps']:.1f} |")
        s = r.get("slicegpt25")
        if s is None:
            continue
        lines.append(f"| {r['model']} | per-layer SliceGPT 0.25 (slicepipe eval, f32; no GGUF) | | | {s['nll']:.4f} "
                     f"(dense {s['dense_nll']:.4f}) | | | | |")
    lines.append("")
    lines += [r["verdict"] for r in results]
    txt = "\n".join(lines) + "\n"
    print(txt)
    if a.md:
        open(a.md, "w").write(txt)


if __name__ == "__main__":
    main()
