#!/usr/bin/python3
"""bench/stock_bias_ref.py — with a down-projection bias refit as a constant
column (docs/algorithm.md §12), should the neuron scores be taken on the
uncentred second moment C = zᵀz, or on the scatter about the mean, what the
bias cannot absorb? A measurement with the float64 numpy reference
tests/ref/stock_ref.py (centre_scores), not a test (no slicepipe binary).

usage: stock_bias_ref.py [SHARED_DIR] [--models stories260k,...] [--nsamples 32]
           [--seqlen 256] [--eval-windows 64] [--fractions 0.7,0.5]

The shared models are Llamas without MLP biases: each gets a zero down_proj
bias, so the bias column is refit; calibration = the first NSAMPLES windows
of the model's calibration tokens, evaluation = the first EVAL_WINDOWS windows
of its held-out tokens. Per model and k = FRACTION·F it prints the held-out
NLL of: no bias column (today's refit), the bias column with uncentred
scores (slicepipe's), the bias column with centred scores; for energy and
leverage, each with the paired difference to "no bias, energy" and its
standard error over windows. About 8.5 minutes on 2 cores at the defaults.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import model_ref as mr  # noqa: E402
import stock_ref as st  # noqa: E402

CASES = {"stories260k": ("calib.tok512.npy", "eval.tok512.npy"), "llama2xs": ("calib.tok512.npy", "eval.tok512.npy"),
         "babyllama105": ("calib.tok105.npy", "holdout.tok105.npy"),
         "aidreams260k": ("calib.dreams512.npy", "holdout.dreams512.npy")}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("shared", nargs="?", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                             "shared"))
    p.add_argument("--models", default=",".join(CASES))
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--eval-windows", type=int, default=64)
    p.add_argument("--fractions", default="0.7,0.5")
    a = p.parse_args()
    ts = os.path.join(a.shared, "data", "tinystories")
    for m in a.models.split(","):
        calib, ev_name = CASES[m]
        cfg, W = mr.load_model_dir(os.path.join(a.shared, "models", m))
        arch = mr.Arch(cfg)
        cal = mr.windows(mr.load_tokens(os.path.join(ts, calib)), a.seqlen, a.nsamples)
        ev = mr.windows(mr.load_tokens(os.path.join(ts, ev_name)), a.seqlen)[:a.eval_windows]
        Wb = dict(W)
        for lay in arch.layers:
            Wb[lay["down"] + ".bias"] = np.zeros(arch.D)
        dense = st.heldout_nll({"config": cfg, "tensors": W}, ev)[0]
        for frac in (float(f) for f in a.fractions.split(",")):
            k = int(arch.F * frac)
            per = {}
            for name, WW, centre in (("no bias", W, False), ("bias, uncentred", Wb, False), ("bias, centred", Wb, True)):
                for score in st.SCORES:
                    r = st.compress(cfg, WW, cal, k=k, score=score, centre_scores=centre)
                    per[(name, score)] = st.heldout_nll({"config": r["config"], "tensors": r["tensors"]}, ev)[2]
            base = per[("no bias", "energy")]
            print("%s: k = %d of %d, dense %.4f" % (m, k, arch.F, dense))
            for (name, score), v in per.items():
                dl = v - base
                print("  %-16s %-8s %.4f  %+.4f ± %.4f" % (name, score, v.mean(), dl.mean(),
                                                           dl.std(ddof=1) / np.sqrt(len(dl))))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
