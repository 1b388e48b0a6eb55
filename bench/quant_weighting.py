#!/usr/bin/env python3
"""bench/quant_weighting.py — --quant-weighting calib against plain rounding,
measured in llama.cpp (node-llama-cpp 3.21.1, as tests/test_gguf.py drives it).

For each shared model and block type: `slicepipe export --type T` (ggml's
reference rounding) and `--quant-weighting calib --calib <calibration tokens>`
(each block's scale and min chosen to minimize Σ diag(H)_j (w_j − ŵ_j)²), then
llama.cpp's NLL on held-out windows. The difference calib − plain is paired per
token; its standard error is over windows (per-window means), so a gain is
shown with its noise.

  bench/quant_weighting.py --slicepipe build/slicepipe --npm build/npm-gguf \
      [--shared ../shared] [--windows 16] [--types q4_0,q4_1,q5_0,q5_1] [--out FILE.md]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = [  # (model, calibration tokens, held-out tokens)
    ("stories260k", "calib.tok512.npy", "holdout.tok512.npy"),
    ("llama2xs", "calib.tok512.npy", "holdout.tok512.npy"),
    ("babyllama105", "calib.tok105.npy", "holdout.tok105.npy"),
    ("aidreams260k", "calib.dreams512.npy", "holdout.dreams512.npy"),
]


def llama_nll(npm, gg, toks, T, W):
    script = os.path.join(npm, "test_gguf_llamacpp.mjs")
    open(script, "w").write(open(os.path.join(ROOT, "tests", "test_gguf_llamacpp.mjs")).read())
    tj = gg + ".tokens.json"
    json.dump([int(t) for t in toks[:T * W]], open(tj, "w"))
    r = subprocess.run(["node", script, "--gguf", gg, "--tokens", tj, "--seqlen", str(T), "--windows", str(W), "--per-token", "1"],
                       cwd=npm, capture_output=True, text=True, timeout=1200)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        sys.exit(f"llama.cpp on {gg}: {r.stderr[-400:]}")
    return np.array(json.loads(lines[-1])["per_token"]).reshape(W, T - 1)


def export(sp, d, gg, typ, calib=None, threads=2):
    cmd = [sp, "export", d, "--gguf", gg, "--type", typ, "--force", "--quiet"]
    if calib:
        cmd += ["--quant-weighting", "calib", "--calib", calib, "--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)}: {r.stderr}")
    return os.path.getsize(gg)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--slicepipe", default=os.path.join(ROOT, "build", "slicepipe"))
    p.add_argument("--npm", default=os.path.join(ROOT, "build", "npm-gguf"))
    p.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    p.add_argument("--work", default="/tmp/slicepipe-quant-weighting")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--models", default=",".join(m for m, _, _ in MODELS))
    p.add_argument("--types", default="q4_0,q4_1,q5_0,q5_1")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    T, W = a.seqlen, a.windows
    rows = []
    for m, cal, hold in MODELS:
        if m not in a.models.split(","):
            continue
        d = os.path.join(a.shared, "models", m)
        cal, hold = (os.path.join(a.shared, "data", "tinystories", f) for f in (cal, hold))
        toks = np.load(hold)
        w = min(W, len(toks) // T)
        gg = os.path.join(a.work, f"{m}.f32.gguf")
        export(a.slicepipe, d, gg, "f32")
        base = llama_nll(a.npm, gg, toks, T, w).mean()
        for typ in a.types.split(","):
            res = {}
            for how in ("plain", "calib"):
                gg = os.path.join(a.work, f"{m}.{typ}.{how}.gguf")
                size = export(a.slicepipe, d, gg, typ, cal if how == "calib" else None)
                res[how] = llama_nll(a.npm, gg, toks, T, w)
            dw = (res["calib"] - res["plain"]).mean(1)  # per window
            diff, se = dw.mean(), dw.std(ddof=1) / np.sqrt(len(dw))
            row = (m, typ, size, base, res["plain"].mean(), res["calib"].mean(), diff, se)
            rows.append(row)
            print("%-13s %-5s %8d B  f32 %.5f  plain %.5f  calib %.5f  calib-plain %+.5f ± %.5f" % row, flush=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write("# --quant-weighting calib against plain rounding (llama.cpp NLL)\n\n")
            f.write(f"`bench/quant_weighting.py --windows {W}`: held-out windows of {T} tokens, node-llama-cpp 3.21.1 at 2 threads, "
                    "F32 KV cache. Calibration statistics from the model's calibration tokens (64 windows of 256). "
                    "calib − plain is paired per token; ± is the standard error over windows.\n\n")
            f.write("| model | type | GGUF bytes | f32 NLL | plain NLL | calib NLL | calib − plain |\n|---|---|---|---|---|---|---|\n")
            for r in rows:
                f.write("| %s | %s | %d | %.5f | %.5f | %.5f | %+.5f ± %.5f |\n" % r)


if __name__ == "__main__":
    main()
