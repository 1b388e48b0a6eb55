#!/usr/bin/python3
"""tests/test_stock_ref.py — `slicepipe run` with `[slicing] policy = "stock"`
(FFN-neuron pruning with the least-squares refit of down_proj, issue 21)
against the independent float64 numpy reference tests/ref/stock_ref.py.

usage: test_stock_ref.py SLICEPIPE WORKDIR SHARED_DIR
  exit 77 (skip) when SHARED_DIR's models or data are absent, or when
  `slicepipe run` rejects the key `policy` (or the value "stock"): the C side
  of the policy has not landed.

First, the reference's own checks (no slicepipe):
  * k = F, d = D, ridge 0 on stories260k: the NLL is the dense model's
    (model_ref) within 1e-10;
  * k < F: in every layer the refit's calibration-set MLP output error is
    below plain pruning's.
Then per case (stories260k with calib.tok512/eval.tok512, babyllama105 with
calib.tok105/holdout.tok105; calibration the first 16 windows of 128, eval
the first 8 windows of 128), the manifest
    [slicing] policy = "stock", params = PARAMS, split = 0,
              ffn_score = "energy", ffn_ridge = 1e-4,   [output] dtype = "f32"
and, with k = the output's intermediate_size and d = its hidden_size:
  1. d = D (split 0 is FFN only), 0 < k < F, the other config keys unchanged,
     tie_word_embeddings as in the input;
  2. the kept neurons (each output gate row found among the input's) are the
     reference's, layer by layer;
  3. exactly the reference's tensor set, every tensor F32 of the reference's
     shape and within TOL_W relative Frobenius error ‖C − R‖_F/‖R‖_F;
  4. `slicepipe eval` of the output vs the reference's NLL (its float64
     tensors) within TOL_NLL, and vs model_ref's forward of the output's own
     tensors within TOL_NLL.
Exit 0 when all pass, 1 otherwise.
"""
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "ref"))
import model_ref as mr  # noqa: E402
import stock_ref as st  # noqa: E402
import test_global_ref as tgr  # noqa: E402  (run, check, c_eval, stored_dtype)

# Per tensor, ‖C − R‖_F / ‖R‖_F; the target, 1e-5. What an fp32
# pipeline can reach, measured: stock_ref with float32 signals (act_dtype;
# C still accumulated and solved in float64) against the float64 reference at
# these settings keeps the same neurons and misses by at most 3.0e-7
# (stories260k, k = 128) and 2.4e-6 (babyllama105, layer 0's down_proj,
# k = 272); storing F32 adds 2.5e-8. So 1e-5 leaves a margin of about 4x. The
# kept sets are safe from fp32 noise: the relative gap between the k-th and
# the (k+1)-th score is 1e-3 or more in every layer of both models.
TOL_W = 1e-5
TOL_NLL = 1e-5
TOL_SELF = 1e-10
PARAMS = 0.85
SEQLEN, NCAL, NEVAL = 128, 16, 8
CASES = [("stories260k", "calib.tok512.npy", "eval.tok512.npy"),
         ("babyllama105", "calib.tok105.npy", "holdout.tok105.npy")]
SAME_KEYS = ["model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rope_theta",
             "rms_norm_eps", "hidden_act", "tie_word_embeddings"]

check = tgr.check


class Skip(Exception):
    pass


def manifest(work, name, model, tokens):
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{tokens}"\nseqlen = {SEQLEN}\n'
                f'nsamples = {NCAL}\n[slicing]\npolicy = "stock"\nparams = {PARAMS}\nsplit = 0\n'
                f'ffn_score = "energy"\nffn_ridge = 1e-4\n[output]\npath = "{out}"\ndtype = "f32"\n'
                f'[resources]\nthreads = 1\n')
    return path, out


def self_checks(stories, calib_path, eval_path):
    cfg, W = mr.load_model_dir(stories)
    cal = mr.windows(mr.load_tokens(calib_path), SEQLEN, NCAL)
    ev = mr.windows(mr.load_tokens(eval_path), SEQLEN, NEVAL)
    dense = mr.forward_nll({"config": cfg, "tensors": W}, ev.reshape(-1), SEQLEN)
    r = st.compress(cfg, W, cal, ridge=0.0)
    nll = st.heldout_nll({"config": r["config"], "tensors": r["tensors"]}, ev)[0]
    check(abs(nll - dense) <= TOL_SELF, "reference: k = F, d = D, ridge 0: NLL %.12f = dense %.12f (|diff| %.1e "
          "<= %g)" % (nll, dense, abs(nll - dense), TOL_SELF))
    F = mr.Arch(cfg).F
    r = st.compress(cfg, W, cal, k=F - 48)
    worse = [i for i, e in enumerate(r["mlp_err"]) if not e["refit"] < e["prune"]]
    check(not worse, "reference: k = %d < F: refit MLP error below plain pruning's in every layer (%s)%s"
          % (F - 48, ", ".join("%.3f<%.3f" % (e["refit"], e["prune"]) for e in r["mlp_err"]),
             "; not in layers %s" % worse if worse else ""))


def kept_rows(got, W, name):
    """For each output row of name, the nearest input row; and the largest
    |output row − that row| relative to max|input| (0 for copies)."""
    g, w = got[name], W[name]
    d2 = (g * g).sum(1)[:, None] - 2 * g @ w.T + (w * w).sum(1)[None, :]
    rows = np.argmin(d2, axis=1)
    return rows, float(np.abs(g - w[rows]).max() / np.abs(w).max())


def case(sp, work, shared, label, calib_name, eval_name):
    model = os.path.join(shared, "models", label)
    calib_path = os.path.join(shared, "data", "tinystories", calib_name)
    eval_path = os.path.join(shared, "data", "tinystories", eval_name)
    cfg_in, W = mr.load_model_dir(model)
    a = mr.Arch(cfg_in)
    man, out = manifest(work, label, model, calib_path)
    t0 = time.time()
    r = tgr.run([sp, "run", man, "--quiet"])
    err = r.stderr.strip()
    if r.returncode and ("unknown key 'policy'" in err or "unknown policy" in err):
        raise Skip("slicepipe run rejects [slicing] policy: the stock policy has not landed (%s)" % err[-200:])
    if not check(r.returncode == 0, "%s: slicepipe run exits 0 (%.1f s)%s" % (
            label, time.time() - t0, "" if r.returncode == 0 else " (rc %d: %s)" % (r.returncode, err[-300:]))):
        return
    cfg_out = json.load(open(os.path.join(out, "config.json")))
    d, k = cfg_out.get("hidden_size"), cfg_out.get("intermediate_size")
    bad = [] if isinstance(k, int) and 0 < k < a.F else ["intermediate_size %r not in (0, %d)" % (k, a.F)]
    bad += ["%s %r -> %r" % (n, cfg_in.get(n), cfg_out.get(n)) for n in SAME_KEYS if cfg_in.get(n) != cfg_out.get(n)]
    if not check(not bad, "%s: config.json: hidden_size %r = D %d (split 0), intermediate_size %r < F %d, "
                 "family keys and the head's tie unchanged%s" % (label, d, a.D, k, a.F, ("; " + "; ".join(bad))
                                                                  if bad else "")):
        return
    cal = mr.windows(mr.load_tokens(calib_path), SEQLEN, NCAL)
    ev = mr.windows(mr.load_tokens(eval_path), SEQLEN, NEVAL)
    sdt = tgr.stored_dtype(model, a.embed)
    ref = st.compress(cfg_in, W, cal, d=d, k=k, score="energy", ridge=1e-4, in_scale_dtype=sdt)
    got, dts = mr.read_safetensors(os.path.join(out, "model.safetensors"), with_dtypes=True)

    # 2. the kept neurons
    mism = []
    for i, lay in enumerate(a.layers):
        readers, _ = st.mlp_names(a, lay)
        name = readers[0] + ".weight"
        if name not in got or got[name].shape[1] != W[name].shape[1]:
            mism.append("layer %d: %s absent or of another width" % (i, name))
            continue
        rows, dist = kept_rows(got, W, name)
        if "gate_up" in lay:
            rows = rows[:k]
        if dist > 1e-6 or not np.array_equal(rows, ref["kept"][i]):
            extra = sorted(set(rows.tolist()) - set(ref["kept"][i].tolist()))
            miss = sorted(set(ref["kept"][i].tolist()) - set(rows.tolist()))
            mism.append("layer %d: +%s -%s%s" % (i, extra[:6], miss[:6], " (rows not copies: %.1e)" % dist
                                                   if dist > 1e-6 else ""))
    check(not mism, "%s: the kept neurons (k = %d) are the reference's in every layer%s"
          % (label, k, ("; " + "; ".join(mism[:5])) if mism else ""))

    # 3. every tensor
    R = ref["tensors"]
    tgr.compare_tensors(label, got, dts, R, TOL_W, tgr.frob, "%g relative Frobenius error")

    # 4. NLL
    nll_c, cerr = tgr.c_eval(sp, out, eval_path, SEQLEN, NEVAL)
    check(nll_c is not None, "%s: slicepipe eval of the output%s" % (label, (" (" + cerr + ")") if cerr else ""))
    nll_ref = st.heldout_nll({"config": ref["config"], "tensors": R}, ev, sdt)[0]
    nll_np = st.heldout_nll(out, ev, "F32")[0]
    if nll_c is not None:
        check(abs(nll_ref - nll_c) <= TOL_NLL, "%s: slicepipe eval NLL %.7f vs the reference's %.7f (|diff| %.1e "
              "<= %g)" % (label, nll_c, nll_ref, abs(nll_ref - nll_c), TOL_NLL))
        check(abs(nll_np - nll_c) <= TOL_NLL, "%s: slicepipe eval NLL vs model_ref's forward of the output %.7f "
              "(|diff| %.1e <= %g)" % (label, nll_np, abs(nll_np - nll_c), TOL_NLL))


def main(argv):
    if len(argv) != 4:
        print(__doc__)
        return 64
    sp, work, shared = argv[1], os.path.abspath(argv[2]), os.path.abspath(argv[3])
    ts = os.path.join(shared, "data", "tinystories")
    need = [os.path.join(shared, "models", m) for m, _, _ in CASES] + \
        [os.path.join(ts, f) for _, c, e in CASES for f in (c, e)]
    missing = [p for p in need if not os.path.exists(p)]
    if missing:
        print("SKIP: %s absent" % missing[0])
        return 77
    t_start = time.time()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    self_checks(os.path.join(shared, "models", "stories260k"), os.path.join(ts, CASES[0][1]),
                os.path.join(ts, CASES[0][2]))
    skipped = None
    for label, c, e in CASES:
        try:
            case(sp, work, shared, label, c, e)
        except Skip as s:
            skipped = str(s)
            break
    print("%.1f s" % (time.time() - t_start))
    if tgr.FAILS:
        print("FAILED: %d check(s)" % len(tgr.FAILS))
        return 1
    if skipped:
        print("SKIP: " + skipped)
        return 77
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
