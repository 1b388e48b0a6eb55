#!/usr/bin/python3
"""check_reference.py — run slicegpt_ref.py on the shared models with the
settings of ../shared/data/REFERENCE.md and verify its table.

usage: check_reference.py SHARED_DIR [--fast] [--tol 1e-4]

  SHARED_DIR  the shared folder (holds models/ and data/); exit 77 (skip) if absent.
  --fast      only stories260k 0.25 and llama2xs 0.25 (BF16-rounded): the ctest subset.

Settings (../shared/data/REFERENCE.md): calibration = the first 64 windows
of 256 tokens of data/tinystories/calib.tok512.npy; evaluation = all 424
non-overlapping 256-token windows of data/tinystories/eval.tok512.npy;
round_to 8, uniform.
Exit 0 when every checked value is within tol, 1 otherwise.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slicegpt_ref as ref  # noqa: E402

# (model, sparsity or None for dense, round dtype or None, expected NLL)
TABLE = [
    ("stories260k", None, None, 1.76572),
    ("stories260k", 0.0, None, 1.76572),
    ("stories260k", 0.0, "f32", 1.76572),
    ("stories260k", 0.125, None, 2.21614),
    ("stories260k", 0.25, None, 3.15845),
    ("stories260k", 0.5, None, 4.83322),
    ("llama2xs", None, None, 2.30280),
    ("llama2xs", 0.0, None, 2.30280),
    ("llama2xs", 0.0, "bf16", 2.30313),
    ("llama2xs", 0.25, None, 2.62172),
    ("llama2xs", 0.25, "bf16", 2.62052),
]
FAST = [("stories260k", 0.25, None), ("llama2xs", 0.25, "bf16")]
EXPECTED_D = {0.0: 64, 0.125: 56, 0.25: 48, 0.5: 32}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shared")
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    models_dir = os.path.join(a.shared, "models")
    data_dir = os.path.join(a.shared, "data", "tinystories")
    if not (os.path.isdir(models_dir) and os.path.isdir(data_dir)):
        print("SKIP: shared dir %s not found" % a.shared)
        return 77

    calib = ref.windows(ref.load_tokens(os.path.join(data_dir, "calib.tok512.npy")), 256, 64)
    ev = ref.windows(ref.load_tokens(os.path.join(data_dir, "eval.tok512.npy")), 256)
    if ev.shape[0] != 424:
        print("FAIL: expected 424 eval windows, got %d" % ev.shape[0])
        return 1

    rows = [r for r in TABLE if not a.fast or (r[0], r[1], r[2]) in FAST]
    fails = 0
    cache = {}
    for model, sp, rnd, want in rows:
        t0 = time.time()
        if model not in cache:
            config, W = ref.load_model_dir(os.path.join(models_dir, model))
            cache[model] = (ref.Cfg(config), W, {})
        cfg, W, sliced = cache[model]
        extra = ""
        if sp is None:
            got = ref.model_nll(cfg, ref.dense_model(cfg, W), ev)
        else:
            if sp not in sliced:
                sliced[sp] = ref.slice_llama(cfg, W, calib, sp, 8)
            res = sliced[sp]
            if res["d"] != EXPECTED_D[sp]:
                print("FAIL: %s sparsity %g: d=%d, expected %d" % (model, sp, res["d"], EXPECTED_D[sp]))
                fails += 1
            tens = ref.round_tensors(res["tensors"], rnd) if rnd else res["tensors"]
            got = ref.model_nll(cfg, ref.sliced_model(cfg, tens), ev)
            extra = " d=%d" % res["d"]
        ok = abs(got - want) <= a.tol
        fails += not ok
        print("%-4s %-12s %-6s %-5s NLL %.6f  expected %.5f  diff %+.2e%s  (%.1fs)" % (
            "ok" if ok else "FAIL", model, "dense" if sp is None else "%g" % sp, rnd or "f64",
            got, want, got - want, extra, time.time() - t0))
        sys.stdout.flush()
    print("%d of %d values match REFERENCE.md within %g" % (len(rows) - fails, len(rows), a.tol) if not fails
          else "FAILED: %d of %d values" % (fails, len(rows)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
