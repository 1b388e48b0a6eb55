#!/usr/bin/python3
"""bench/global_quality_ref.py — which single basis (docs/algorithm.md §10) slices best?
A measurement with the float64 numpy reference tests/ref/global_ref.py, not a
test (no slicepipe binary involved).

usage: global_quality_ref.py [SHARED_DIR] [--models stories260k,llama2xs]
           [--nsamples 64] [--seqlen 256] [--eval-windows 424] [--sparsity 0.25]
           [--refinements 1] [--json OUT.json]

For each model, calibration = the first NSAMPLES windows of SEQLEN of
data/tinystories/calib.tok512.npy, evaluation = the first EVAL_WINDOWS
windows of SEQLEN of eval.tok512.npy (424 = all of it at 256), it prints the
mean NLL of:
  dense                 the input model;
  global trace / raw    Q from the dense model's residual positions, G = Σ H/tr(H) or Σ H;
  progressive-lifted    one refinement: G re-measured on the stock model sliced with the
                        first Q, its width-d signals lifted back as x·Q[:, :d]ᵀ. They lie in
                        span(Q[:, :d]), so the new Q[:, :d] spans the same subspace and the
                        model is the same function up to a rotation of the kept coordinates:
                        expected equal to the first pass (shown, not assumed);
  progressive trace/raw one refinement: every block reads the signal of the model sliced with
                        the first Q, and each position is measured before its writer is sliced
                        (X₀ full, M = x + Attn·W_oᵀ with W_o unsliced, Y likewise): the
                        per-layer SliceGPT reading of "signals of the sliced model";
                        --refinements N repeats it N times;
  per-layer             SliceGPT with shortcuts (tests/ref/slicegpt_ref.py), for scale.
All tensors stay float64 (no output rounding).
About 9 minutes a model on 2 cores at the defaults with --refinements 2 (float64
forwards over 424 x 256 eval tokens, seven sliced variants).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))
import global_ref as gr  # noqa: E402
import model_ref as mr  # noqa: E402
import slicegpt_ref as sg  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shared", nargs="?", default=os.path.join(HERE, "..", "..", "shared"))
    ap.add_argument("--models", default="stories260k,llama2xs")
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=424)
    ap.add_argument("--sparsity", type=float, default=0.25)
    ap.add_argument("--refinements", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    data = os.path.join(a.shared, "data", "tinystories")
    calib = mr.windows(mr.load_tokens(os.path.join(data, "calib.tok512.npy")), a.seqlen, a.nsamples)
    ev = mr.windows(mr.load_tokens(os.path.join(data, "eval.tok512.npy")), a.seqlen, a.eval_windows)
    print("calibration %d x %d, eval %d x %d, sparsity %g" % (calib.shape + ev.shape + (a.sparsity,)), flush=True)
    report = {}
    for name in a.models.split(","):
        t0 = time.time()
        cfg, W = mr.load_model_dir(os.path.join(a.shared, "models", name))
        arch = mr.Arch(cfg)
        sdt = gr._scale_dtype(cfg)
        d = sg.slice_width(arch.D, a.sparsity)
        sc = gr.stock_config(cfg, d)
        rows = {}

        def nll_stock(Q):
            return gr.stock_nll({"config": sc, "tensors": gr.slice_global(cfg, W, Q, d, sdt, sdt)}, ev, sdt)

        rows["dense"] = gr.stock_nll({"config": cfg, "tensors": W}, ev, sdt)
        Hs = gr.residual_moments({"config": cfg, "tensors": W}, calib, embed_scale_dtype=sdt)
        for w in gr.WEIGHTINGS:
            _, Q, _ = gr.basis_from_moments(Hs, w)
            rows["global %s" % w] = nll_stock(Q)
            if w == "trace":
                _, Ql, _ = gr.progressive_basis(cfg, W, calib, Q, d, w, in_scale_dtype=sdt, mode="lifted")
                rows["progressive-lifted trace"] = nll_stock(Ql)
            Qp = Q
            for r in range(a.refinements):
                _, Qp, _ = gr.progressive_basis(cfg, W, calib, Qp, d, w, in_scale_dtype=sdt)
                rows["progressive %s%s" % (w, "" if r == 0 else " x%d" % (r + 1))] = nll_stock(Qp)
        res = sg.slice_model(cfg, W, calib, a.sparsity, 8, embed_scale_dtype=sdt)
        rows["per-layer (shortcuts)"] = sg.model_nll(sg._cfg(cfg), sg.sliced_model(cfg, res["tensors"]), ev)
        print("%s (D %d -> d %d, %.0f s)" % (name, arch.D, d, time.time() - t0))
        for k, v in rows.items():
            print("  %-26s %.6f   ppl %.3f" % (k, v, np.exp(v)), flush=True)
        report[name] = dict(rows, D=arch.D, d=d)
    report["setup"] = {"calibration": list(calib.shape), "eval": list(ev.shape), "sparsity": a.sparsity}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
