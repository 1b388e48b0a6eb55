#!/usr/bin/env python3
"""bench/params_bench.py — quality at equal total stored parameters (issue: the
stock policy against SliceGPT), run by `bench/quality_bench.sh params`.

For each model (the four shared checkpoints and the example, as
quality_bench.sh lists them) and each parameter target — [slicing] params =
0.9, 0.8, 0.7 and SliceGPT-0.25's own count (that of per-layer SliceGPT at
sparsity 0.25, read from its --dry-run) — every policy is run:

  slicegpt            per-layer SliceGPT (basis = "per-layer"), the width params picks
  slicegpt-refit      per-layer SliceGPT with refit = true: its widths, o_proj and down_proj refit to the dense
                      model's signals (docs/algorithm.md §14)
  slicegpt-global     SliceGPT's one basis (basis = "global")
  stock               policy = "stock", split 0: MLP neurons cut, down projection refit
  stock-split0.5      policy = "stock", split 0.5: half the cut from the residual width
  stock-auto          policy = "stock", split = "auto": the split (0, 0.5 or 1) with the lowest NLL
                      on the last 16 calibration windows, held back from its candidates' PCA

and evaluated with `slicepipe eval --dump-logits` on the model's held-out
windows; the per-window mean NLL is computed here from the logits, so every
figure has a standard error over windows, and each policy's difference to
per-layer SliceGPT a paired one (the same windows). Parameters are what the
output's config.json records (params_output: every stored tensor).

With --sweep, instead: the stock policy's own choices at params 0.8 (split 0):
ffn_score energy and leverage, each at ffn_ridge 1e-6, 1e-4 and 1e-2, as a
table of held-out NLL (`bench/quality_bench.sh sweep`).

Writes RESULTS to WORK/params_bench.json, a markdown table on stdout and an
SVG plot of NLL against parameters (one panel per model) to --svg.
Calibration: 64 windows of 256 tokens, F32 output, 2 threads, round_to 1 (each
policy gets as close to the target as its widths allow: at D = 64, steps of 8
would leave SliceGPT far below it).
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

POLICIES = {
    "slicegpt": '[slicing]\nparams = {p}\nround_to = 1\nbasis = "per-layer"\n',
    "slicegpt-refit": '[slicing]\nparams = {p}\nround_to = 1\nbasis = "per-layer"\nrefit = true\n',
    "slicegpt-global": '[slicing]\nparams = {p}\nround_to = 1\nbasis = "global"\n',
    "stock": '[slicing]\npolicy = "stock"\nparams = {p}\nround_to = 1\n',
    "stock-split0.5": '[slicing]\npolicy = "stock"\nparams = {p}\nround_to = 1\nsplit = 0.5\n',
    "stock-auto": '[slicing]\npolicy = "stock"\nparams = {p}\nround_to = 1\nsplit = "auto"\n',
}


def sh(cmd, cwd=None):
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if r.returncode:
        sys.exit(f"{os.path.basename(sys.argv[0])}: {' '.join(cmd)}: exit {r.returncode}: "
                 f"{(r.stderr or r.stdout).strip()[-800:]}")
    return r.stdout


def manifest(work, tag, model, calib, slicing, nsamples=64, memory="2GB"):
    out = os.path.join(work, tag)
    mf = out + ".toml"
    with open(mf, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = 256\nnsamples = {nsamples}\n'
                f'{slicing}[output]\npath = "{out}"\ndtype = "f32"\n[resources]\nmemory = "{memory}"\nthreads = 2\n')
    return mf, out


def window_nlls(sp, model, ev, windows, work):
    """Per-window mean NLL of tokens 1..T-1 from slicepipe's logits."""
    logits = os.path.join(work, "logits.npy")
    sh([sp, "eval", model, "--tokens", ev, "--seqlen", "256", "--windows", str(windows), "--threads", "2",
        "--dump-logits", logits, "--force"])
    lg = np.load(logits, mmap_mode="r")
    ids = np.load(ev).astype(np.int64)
    T = 256
    W = lg.shape[0] // T
    out = np.empty(W)
    for w in range(W):
        x = np.asarray(lg[w * T:(w + 1) * T - 1], dtype=np.float64)
        tgt = ids[w * T + 1:(w + 1) * T]
        m = x.max(axis=1)
        lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
        out[w] = float(np.mean(lse - x[np.arange(T - 1), tgt]))
    os.unlink(logits)
    return out


def s25_params(sp, work, label, model, calib):
    mf, _ = manifest(work, f"{label}-s25", model, calib, '[slicing]\nsparsity = 0.25\nround_to = 1\n')
    txt = sh([sp, "run", mf, "--dry-run"])
    for line in txt.splitlines():
        if line.strip().startswith("parameters:"):
            a, b = line.split(":")[1].split("(")[0].split("->")
            return int(b) / int(a)
    sys.exit("params_bench: no parameters line in --dry-run")


def svg(results, path):
    models = list(results)
    pw, ph, m = 300, 220, 45
    colors = {"dense": "#000", "slicegpt": "#d62728", "slicegpt-refit": "#e377c2", "slicegpt-global": "#ff7f0e", "stock": "#1f77b4",
              "stock-split0.5": "#2ca02c", "stock-auto": "#9467bd"}
    W = pw * len(models)
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{ph + 40}" font-family="sans-serif" '
         f'font-size="10">']
    for i, name in enumerate(models):
        r = results[name]
        pts = [(e["params_fraction"], e["nll"], e["policy"]) for e in r["runs"] if "error" not in e]
        xs = [p[0] for p in pts] + [1.0]
        ys = [p[1] for p in pts] + [r["dense"]["nll"]]
        x0, x1 = min(xs) - 0.02, 1.01
        y0, y1 = min(ys) - 0.05, max(ys) + 0.05
        X = lambda v: i * pw + m + (v - x0) / (x1 - x0) * (pw - m - 10)  # noqa: E731
        Y = lambda v: 10 + (y1 - v) / (y1 - y0) * (ph - m)  # noqa: E731
        o.append(f'<text x="{i * pw + pw / 2}" y="{ph + 22}" text-anchor="middle">{name}</text>')
        o.append(f'<line x1="{X(x0)}" y1="{Y(y0)}" x2="{X(x1)}" y2="{Y(y0)}" stroke="#888"/>'
                 f'<line x1="{X(x0)}" y1="{Y(y0)}" x2="{X(x0)}" y2="{Y(y1)}" stroke="#888"/>')
        for t in range(5):
            vx = x0 + (x1 - x0) * t / 4
            vy = y0 + (y1 - y0) * t / 4
            o.append(f'<text x="{X(vx)}" y="{Y(y0) + 12}" text-anchor="middle">{vx:.2f}</text>'
                     f'<text x="{X(x0) - 3}" y="{Y(vy) + 3}" text-anchor="end">{vy:.2f}</text>')
        o.append(f'<line x1="{X(x0)}" y1="{Y(r["dense"]["nll"])}" x2="{X(x1)}" y2="{Y(r["dense"]["nll"])}" '
                 f'stroke="#000" stroke-dasharray="3,3"/>')
        for pol in POLICIES:
            ser = sorted((p[0], p[1]) for p in pts if p[2] == pol)
            if not ser:
                continue
            d = " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in ser)
            o.append(f'<polyline points="{d}" fill="none" stroke="{colors[pol]}"/>')
            for a, b in ser:
                o.append(f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="2.5" fill="{colors[pol]}"/>')
        if i == 0:
            for k, pol in enumerate(["dense"] + list(POLICIES)):
                o.append(f'<text x="{X(x0) + 8}" y="{20 + 12 * k}" fill="{colors[pol]}">{pol}</text>')
    o.append(f'<text x="{W / 2}" y="{ph + 36}" text-anchor="middle">held-out NLL (y) against the stored parameters '
             f'kept, as a fraction of the dense model\'s (x); dashed: dense</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o))


def sweep(a, lines):
    print("| model | score | ridge | held-out NLL ± se | Δ vs energy, 1e-4 ± paired se |")
    print("|---|---|---|---|---|")
    for line in lines:
        label, model, calib, ev, *rest = line.split("|")
        nwin = len(np.load(ev, mmap_mode="r")) // 256
        win = min(a.windows, nwin)
        base, rows = None, []
        for score in ("energy", "leverage"):
            for ridge in ("1e-4", "1e-6", "1e-2"):
                sl = f'[slicing]\npolicy = "stock"\nparams = 0.8\nround_to = 1\nffn_score = "{score}"\nffn_ridge = {ridge}\n'
                mf, out = manifest(a.work, f"{label.split()[0]}-sweep-{score}-{ridge}", model, calib, sl)
                sh([a.slicepipe, "run", mf, "--quiet", "--restart"])
                nl = window_nlls(a.slicepipe, out, ev, win, a.work)
                subprocess.run(["rm", "-rf", out])
                if base is None:
                    base = nl
                dl = nl - base
                rows.append((score, ridge, nl, dl))
        for score, ridge, nl, dl in sorted(rows, key=lambda r: (r[0], float(r[1]))):
            d = "" if not dl.any() else f"{dl.mean():+.4f} ± {dl.std(ddof=1) / math.sqrt(len(dl)):.4f}"
            print(f"| {label} | {score} | {ridge} | {nl.mean():.4f} ± {nl.std(ddof=1) / math.sqrt(len(nl)):.4f} | {d} |")
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slicepipe", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--models", required=True, help="lines label|dir|calib|eval[|windows]")
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--targets", default="s25,0.9,0.8,0.7")
    ap.add_argument("--svg", required=True)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--plot-only", metavar="JSON", help="redraw the SVG from a params_bench.json")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset (slicegpt is always run: "
                    "the deltas are paired against it)")
    a = ap.parse_args()
    if a.plot_only:
        return svg(json.load(open(a.plot_only)), a.svg)
    os.makedirs(a.work, exist_ok=True)
    if a.sweep:
        return sweep(a, a.models.strip().splitlines())
    results = {}
    for line in a.models.strip().splitlines():
        label, model, calib, ev, *rest = line.split("|")
        nwin = len(np.load(ev, mmap_mode="r")) // 256
        win = min(a.windows, nwin) if not rest or rest[0] in ("", "0") else min(int(rest[0]), nwin)
        dense = window_nlls(a.slicepipe, model, ev, win, a.work)
        r = {"dense": {"nll": float(dense.mean()), "se": float(dense.std(ddof=1) / math.sqrt(len(dense)))},
             "windows": int(win), "runs": []}
        per = {}
        for t in a.targets.split(","):
            p = s25_params(a.slicepipe, a.work, label.split()[0], model, calib) if t == "s25" else float(t)
            for pol, tmpl in POLICIES.items():
                if pol != "slicegpt" and pol not in a.policies.split(","):
                    continue
                tag = f"{label.split()[0]}-{pol}-{t}"
                mf, out = manifest(a.work, tag, model, calib, tmpl.format(p=repr(p)))
                rr = subprocess.run([a.slicepipe, "run", mf, "--quiet", "--restart"], capture_output=True, text=True)
                if rr.returncode:  # a target a policy cannot reach (or a family it refuses): recorded, not fatal
                    r["runs"].append({"policy": pol, "target": t, "error": rr.stderr.strip()[-300:]})
                    print(f"  {label} {pol} {t}: refused: {rr.stderr.strip()[-200:]}", file=sys.stderr)
                    continue
                cfg = json.load(open(os.path.join(out, "config.json")))["slicepipe"]
                nl = window_nlls(a.slicepipe, out, ev, win, a.work)
                per[(pol, t)] = nl
                e = {"policy": pol, "target": t, "params_target": p, "params_output": cfg["params_output"],
                     "params_fraction": cfg["params_output"] / cfg["params_dense"], "nll": float(nl.mean()),
                     "se": float(nl.std(ddof=1) / math.sqrt(len(nl))),
                     "intermediate_size": json.load(open(os.path.join(out, "config.json"))).get("intermediate_size"),
                     "hidden_size": json.load(open(os.path.join(out, "config.json")))["hidden_size"]}
                if "split_auto" in cfg:
                    e["split_chosen"] = cfg["split_auto"]["chosen"]
                    e["split_holdout_nll"] = {str(c["split"]): c["nll"] for c in cfg["split_auto"]["candidates"]}
                if ("slicegpt", t) in per and pol != "slicegpt":
                    dlt = nl - per[("slicegpt", t)]
                    e["delta_vs_slicegpt"] = float(dlt.mean())
                    e["delta_se"] = float(dlt.std(ddof=1) / math.sqrt(len(dlt)))
                r["runs"].append(e)
                print(f"  {label} {pol} {t}: params {e['params_fraction']:.4f} nll {e['nll']:.4f}", file=sys.stderr)
                subprocess.run(["rm", "-rf", out])
        results[label] = r
        with open(os.path.join(a.work, "params_bench.json"), "w") as f:
            json.dump(results, f, indent=1)
    print("| model | target | policy | params kept | hidden / MLP | held-out NLL ± se | Δ vs per-layer SliceGPT ± paired se |")
    print("|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | dense | — | 1.0000 | | {r['dense']['nll']:.4f} ± {r['dense']['se']:.4f} | |")
        for e in r["runs"]:
            tgt = "SliceGPT-0.25's" if e["target"] == "s25" else e["target"]
            if "error" in e:
                print(f"| {label} | {tgt} | {e['policy']} | — | | refused | |")
                continue
            d = f"{e['delta_vs_slicegpt']:+.4f} ± {e['delta_se']:.4f}" if "delta_vs_slicegpt" in e else ""
            pol = e["policy"] + (f" (chose {e['split_chosen']:g})" if "split_chosen" in e else "")
            print(f"| {label} | {tgt} | {pol} | {e['params_fraction']:.4f} | {e['hidden_size']} / "
                  f"{e['intermediate_size']} | {e['nll']:.4f} ± {e['se']:.4f} | {d} |")
    svg(results, a.svg)


if __name__ == "__main__":
    main()
