#!/usr/bin/python3
"""tests/test_refit_ref.py — `slicepipe run` with `[slicing] refit = true`
(per-layer SliceGPT with o_proj and down_proj refit by ridge least squares to
the dense model's signals) against the independent float64 numpy reference
tests/ref/refit_ref.py.

usage: test_refit_ref.py SLICEPIPE WORKDIR SHARED_DIR
  exit 77 (skip) when SHARED_DIR's models or data are absent. The
  reference's own checks run first.

First, the reference's own checks (no slicepipe), on stories260k:
  a. refit=False: the tensors are slicegpt_ref.slice_model's (the same set and
     shapes, each within TOL_SELF relative Frobenius error);
  b. in every layer the refit's calibration-set error ‖M'·Qmd − Md·Qmd‖² is at
     most plain SliceGPT's at the same Qm and on the same inputs (x̂, H), and
     likewise for the MLP output ‖Y'·Qnd − Yd·Qnd‖² at the same Qn;
  c. (with SHARED_DIR/hf-tiny) the LayerNorm families (tiny_opt, tiny_phi)
     are refused, and so is a Llama given an o_proj or a down_proj bias.
Then per case (stories260k with calib.tok512/eval.tok512, babyllama105 with
calib.tok105/holdout.tok105; calibration the first 16 windows of 128, eval the
first 8 windows of 128), the manifest
    [slicing] sparsity = 0.25, round_to = 8, refit = true, refit_ridge = 1e-4
    [output]  dtype = "f32"
and:
  0. where the embedding's eigenvalues tie across the cut (babyllama105: 46
     distinct tokens in the calibration windows, so the 47th eigenvalue on are
     all the damping), only the top r of the kept directions are determined:
     the reference takes the output's choice of the other d − r within the
     tied eigenspace (recovered from its layer-0 attention readers) and its
     own top r (refit_ref.complete_tied); nothing else is taken from the output;
  1. exactly the reference's tensor set, every tensor F32 of the reference's
     shape and within TOL_W relative Frobenius error ‖C − R‖_F/‖R‖_F;
  2. `slicepipe eval` of the output vs the reference's NLL (its float64
     tensors) within TOL_NLL, and vs model_ref's forward of the output's own
     tensors within TOL_NLL;
  3. printed, nothing asserted: the dense NLL, plain SliceGPT's reference NLL
     (slicegpt_ref.slice_model) and the refit reference's.
Exit 0 when all pass, 1 otherwise.
"""
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "ref"))
import model_ref as mr  # noqa: E402
import refit_ref as rr  # noqa: E402
import slicegpt_ref as sg  # noqa: E402
import test_global_ref as tgr  # noqa: E402  (run, check, c_eval, stored_dtype, compare_tensors, frob)

# Per tensor, ‖C − R‖_F / ‖R‖_F: the target was 1e-5. Measured at these
# settings (16 windows of 128, sparsity 0.25, round_to 8, F32 output), what
# fp32 reaches is ABOVE it on babyllama105:
#   * the first C refit build (build/slicepipe of 2026-12-07 14:35): worst
#     5.3e-6 on stories260k (passes), 3.6e-5 on babyllama105 (layer 4's
#     mlp_shortcut_Q; down_proj 2.1e-5), with its NLL within 1.5e-7;
#   * today's C plain SliceGPT (no refit) against slicegpt_ref: 1.8e-5
#     (stories260k) and 2.6e-5 (babyllama105): the PCA bases of the later
#     layers move with fp32 signals;
#   * this reference with float32 signals (act_dtype=np.float32; PCAs, moments
#     and solves in float64) against its float64 run: refit 6.4e-6 and 2.9e-5.
# So a right fp32 implementation misses 1e-5 on babyllama105 by about 3.5x
# (its embedding's eigenvalues tie at the cut, see tie_at_cut below, and the
# later bases are ill-conditioned); the tolerance is 1e-4, which passes it
# with a margin of about 2.8x (test_slice_parity.py allows 1e-4 of max|ref|),
# while SliceGPT's unrefit writers miss the refit ones by 0.24 or more
# (stories260k). The NLL checks keep 1e-5, with margins of 50x or more.
TOL_W = 1e-4
TOL_NLL = 1e-5
TOL_SELF = 1e-10
SPARSITY = 0.25
RIDGE = 1e-4
ROUND_TO = 8
SEQLEN, NCAL, NEVAL = 128, 16, 8
CASES = [("stories260k", "calib.tok512.npy", "eval.tok512.npy"),
         ("babyllama105", "calib.tok105.npy", "holdout.tok105.npy")]
REFUSED = ["tiny_opt", "tiny_phi"]

check = tgr.check


def manifest(work, name, model, tokens):
    return tgr.write_manifest(work, name, model, tokens, SEQLEN, NCAL, f'sparsity = {SPARSITY}\nround_to = {ROUND_TO}\n'
                              f'refit = true\nrefit_ridge = {RIDGE:g}\n')


def self_checks(shared, calib_path):
    stories = os.path.join(shared, "models", "stories260k")
    cfg, W = mr.load_model_dir(stories)
    cal = mr.windows(mr.load_tokens(calib_path), SEQLEN, NCAL)
    # a. refit=False is plain SliceGPT
    P = sg.slice_model(cfg, W, cal, SPARSITY, ROUND_TO)["tensors"]
    R0 = rr.slice_refit(cfg, W, cal, SPARSITY, ROUND_TO, RIDGE, refit=False)["tensors"]
    bad = ["%s %s != %s" % (k, R0[k].shape, P[k].shape) for k in sorted(set(P) & set(R0)) if R0[k].shape != P[k].shape]
    errs = {k: tgr.frob(R0[k], P[k]) for k in set(P) & set(R0) if R0[k].shape == P[k].shape}
    worst = max(errs, key=errs.get)
    check(set(P) == set(R0) and not bad and errs[worst] <= TOL_SELF,
          "reference: refit=False equals slicegpt_ref.slice_model: %d tensors, same shapes, worst %.1e (%s) <= %g%s"
          % (len(P), errs[worst], worst, TOL_SELF,
             "" if set(P) == set(R0) and not bad else "; sets/shapes differ: extra %s, missing %s; %s"
             % (sorted(set(R0) - set(P))[:3], sorted(set(P) - set(R0))[:3], bad[:3])))
    # b. the refit beats plain SliceGPT's writers on its own calibration set
    r = rr.slice_refit(cfg, W, cal, SPARSITY, ROUND_TO, RIDGE)
    for what in ("attn_err", "mlp_err"):
        e = r[what]
        worse = [i for i, x in enumerate(e) if not x["refit"] <= x["plain"]]
        check(not worse, "reference: %s: the refit's calibration-set error <= plain SliceGPT's at the same basis "
              "in every layer (refit/plain, relative to the dense signal: %s)%s"
              % (what[:-4], ", ".join("%.4f/%.4f" % (x["refit"] / x["ref"], x["plain"] / x["ref"]) for x in e),
                 "; not in layers %s" % worse if worse else ""))
    # c. refusals
    tiny = os.path.join(shared, "hf-tiny")
    for name in REFUSED:
        d = os.path.join(tiny, name)
        if not os.path.exists(d):
            print("note: %s absent, its refusal not checked" % d)
            continue
        m = mr.read_model(d)
        try:
            rr.slice_refit(m["config"], m["tensors"], np.zeros((2, 8), dtype=np.int64), SPARSITY, 2)
            check(False, "reference: %s (LayerNorm) is refused" % name)
        except mr.Unsupported as e:
            check("LayerNorm" in str(e), "reference: %s refused (%s)" % (name, e))
    a = mr.Arch(cfg)
    for wr in (a.layers[0]["o"], a.layers[-1]["down"]):
        Wb = dict(W)
        Wb[wr + ".bias"] = np.zeros(a.D)
        try:
            rr.slice_refit(cfg, Wb, cal[:2, :8], SPARSITY, ROUND_TO)
            check(False, "reference: a Llama with %s.bias is refused" % wr)
        except mr.Unsupported as e:
            check("bias" in str(e), "reference: a Llama with %s.bias is refused (%s)" % (wr, e))


def tied_embed_basis(label, a, W, sdt, got, ref, tie):
    """The embedding's eigenvalues tie across the cut (babyllama105): the C
    output's kept basis Q_d, recovered from layer 0's attention readers (the
    output holds W_fused·Q_d for them: Q_d = lstsq(W_fused, W_out)), gives the
    choice within the tie; the reference's own top r, completed with it
    (refit_ref.complete_tied). None (and a failed check) when it cannot be
    recovered."""
    r, m = tie
    d = ref["d"]
    F = sg.fuse(a, W, sdt)
    names = [n + ".weight" for n in a.layers[0]["attn_readers"]]
    if any(n not in got or got[n].shape != (F[n].shape[0], d) for n in names):
        check(False, "%s: layer 0's attention readers %s present with %d columns, to recover the output's "
              "embedding basis" % (label, names, d))
        return None
    Wf = np.concatenate([F[n] for n in names], axis=0)
    Wc = np.concatenate([got[n] for n in names], axis=0)
    sv = np.linalg.svd(Wf, compute_uv=False)
    Qd = np.linalg.lstsq(Wf, Wc, rcond=None)[0]
    orth = float(np.abs(Qd.T @ Qd - np.eye(d)).max())
    print("info %s: the embedding's eigenvalues tie across the cut: the top %d of the kept %d are determined, "
          "%d eigenvalues tie; the output's %d directions within the tie are taken from its layer-0 readers "
          "(condition of the fused readers %.1f; max|Q_dᵀQ_d - I| of the recovered basis %.1e)"
          % (label, r, d, m, d - r, sv[0] / sv[-1], orth), flush=True)
    return rr.complete_tied(ref["bases"]["embed"], r, m, d, Qd)


def case(sp, work, shared, label, calib_name, eval_name):
    model = os.path.join(shared, "models", label)
    calib_path = os.path.join(shared, "data", "tinystories", calib_name)
    eval_path = os.path.join(shared, "data", "tinystories", eval_name)
    man, out = manifest(work, label, model, calib_path)
    t0 = time.time()
    r = tgr.run([sp, "run", man, "--quiet"])
    err = r.stderr.strip()
    if not check(r.returncode == 0, "%s: slicepipe run exits 0 (%.1f s)%s" % (
            label, time.time() - t0, "" if r.returncode == 0 else " (rc %d: %s)" % (r.returncode, err[-300:]))):
        return
    cfg_in, W = mr.load_model_dir(model)
    a = mr.Arch(cfg_in)
    cfg = sg.Cfg(cfg_in)
    cal = mr.windows(mr.load_tokens(calib_path), SEQLEN, NCAL)
    ev = mr.windows(mr.load_tokens(eval_path), SEQLEN, NEVAL)
    sdt = tgr.stored_dtype(model, a.embed)
    ref = rr.slice_refit(cfg_in, W, cal, SPARSITY, ROUND_TO, RIDGE, embed_scale_dtype=sdt)
    got, dts = mr.read_safetensors(os.path.join(out, "model.safetensors"), with_dtypes=True)
    tie = rr.tie_at_cut(ref["eigenvalues"]["embed"], ref["d"])
    if tie:
        basis = tied_embed_basis(label, a, W, sdt, got, ref, tie)
        if basis is not None:
            ref = rr.slice_refit(cfg_in, W, cal, SPARSITY, ROUND_TO, RIDGE, embed_scale_dtype=sdt, embed_basis=basis)

    # 1. every tensor
    R = ref["tensors"]
    tgr.compare_tensors(label, got, dts, R, TOL_W, tgr.frob, "%g relative Frobenius error")

    # 2. NLL
    nll_c, cerr = tgr.c_eval(sp, out, eval_path, SEQLEN, NEVAL)
    check(nll_c is not None, "%s: slicepipe eval of the output%s" % (label, (" (" + cerr + ")") if cerr else ""))
    nll_ref = sg.model_nll(cfg, sg.sliced_model(cfg, R), ev)
    if nll_c is not None:
        check(abs(nll_ref - nll_c) <= TOL_NLL, "%s: slicepipe eval NLL %.7f vs the reference's %.7f (|diff| %.1e "
              "<= %g)" % (label, nll_c, nll_ref, abs(nll_ref - nll_c), TOL_NLL))
        if set(got) == set(R) and all(got[k].shape == R[k].shape for k in R):
            nll_np = sg.model_nll(cfg, sg.sliced_model(cfg, got), ev)
            check(abs(nll_np - nll_c) <= TOL_NLL, "%s: slicepipe eval NLL vs model_ref's forward of the output "
                  "%.7f (|diff| %.1e <= %g)" % (label, nll_np, abs(nll_np - nll_c), TOL_NLL))

    # 3. for the record
    plain = sg.slice_model(cfg_in, W, cal, SPARSITY, ROUND_TO, embed_scale_dtype=sdt)["tensors"]
    nll_plain = sg.model_nll(cfg, sg.sliced_model(cfg, plain), ev)
    nll_dense = sg.model_nll(cfg, sg.dense_model(cfg, W), ev)
    print("info %s: eval NLL (%d windows of %d): dense %.5f, plain SliceGPT %.5f, refit %.5f (reference, float64)"
          % (label, NEVAL, SEQLEN, nll_dense, nll_plain, nll_ref), flush=True)


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
    self_checks(shared, os.path.join(ts, CASES[0][1]))
    for label, c, e in CASES:
        case(sp, work, shared, label, c, e)
    print("%.1f s" % (time.time() - t_start))
    if tgr.FAILS:
        print("FAILED: %d check(s)" % len(tgr.FAILS))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
