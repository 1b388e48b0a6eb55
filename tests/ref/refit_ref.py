#!/usr/bin/python3
"""tests/ref/refit_ref.py — an independent float64 numpy reference of
"SliceGPT with refit" (`[slicing] refit = true` with the per-layer SliceGPT
policy), on top of tests/ref/slicegpt_ref.py (its fusion, PCA, widths, bases,
readers, shortcuts, embedding and head) and model_ref's forward pieces.
Written from the definition below, not from slicepipe's C code.

Families: the sequential RMSNorm ones (llama, mistral, qwen2, qwen3, phi3,
gemma). Refused with model_ref.Unsupported: the LayerNorm families (opt, phi),
parallel blocks, and a model whose o_proj or down_proj has a bias (the refit
below has no constant column to move one).

The algorithm. Everything is plain per-layer SliceGPT (slicegpt_ref.slice_model:
the same fused model F, PCA with δ = 0.01·mean diag, widths
d = slice_width(D, sparsity, round_to), d_out = D in the last layer, the same
bases Q, Qm, Qn, readers, shortcuts, embedding and head), except that o_proj
and down_proj are refit by ridge least squares to the DENSE model's signals,
and the sliced stream continues with the refit weights. In D-space (N×D rows,
all calibration tokens, unrotated), with two streams, X (the sliced model's)
and Xd (the dense model's, run with the fused unrotated weights and the
weightless RMSN over D, which computes the dense function exactly):
    X₀ = Xd₀ = the embedding rows (model_ref.embed(F, sliced=True)); Q = PCA(X₀).
  per layer l, input basis Q, width d_in, Qi = Q[:, :d_in], W_o and W_down
  the dense (fused, unsliced) writers:
    1. x̂ = X·Qi·Qiᵀ                      (the sliced input mapped back to D)
    2. H = the attention context of the fused weights on x̂ (N × n_heads·head_dim,
       o_proj's input); M = x̂ + H·W_oᵀ;   Md = Xd + Attn(Xd) (dense)
    3. Qm = PCA(M) (M with the unrefit, unsliced W_o); Qmd = Qm[:, :d_mid]
    4. A = HᵀH, B = Hᵀ(Md − x̂), λ = ridge·mean(diag A);
       W_o'ᵀ = (A + λI)⁻¹·B·Qmd           (o_proj of the output: W_o', d_mid × Dh)
    5. M' = x̂·Qmd·Qmdᵀ + H·W_o'ᵀ·Qmdᵀ     (h = xr·S_attn + H·W_o'ᵀ, mapped back)
    6. Yd = Md + MLP(Md) (dense)
    7. Z = the MLP intermediate of the fused weights on M' (N × F, down_proj's
       input: act(gate)⊙up, GeGLU for gemma, fused gate_up for phi3);
       Y = M' + Z·W_downᵀ; Qn = PCA(Y); Qnd = Qn[:, :d_out]
    8. A2 = ZᵀZ, B2 = Zᵀ(Yd − M'), λ2 = ridge·mean(diag A2);
       W_down'ᵀ = (A2 + λ2·I)⁻¹·B2·Qnd   (down_proj of the output: W_down', d_out × F)
    9. Y' = M' + Z·W_down'ᵀ·Qndᵀ;  X ← Y', Xd ← Yd, Q ← Qn, d_in ← d_out.
  So each layer's PCAs are taken before its own refit, while later layers see
  the refit model. With refit=False, W_o'ᵀ = W_oᵀ·Qmd and W_down'ᵀ = W_downᵀ·Qnd
  (plain SliceGPT's writers), and the result is slice_model's.

The signals are computed as slice_model computes them, in the rotated bases
(xr = X·Qi through the readers W·Qi, h through the readers W·Qmd; the same
function as the fused weights on x̂ and M', the norm being over D); H and Z
come from model_ref.attn / model_ref.mlp with an identity writer (an exact
copy in floating point), so the forward is model_ref's own.

API:
    slice_refit(config, W, calib_win, sparsity, round_to=8, ridge=1e-4,
                act_dtype=np.float64, batch=16, embed_scale_dtype=None, refit=True) -> result
      the dict of slicegpt_ref.slice_model (tensors, eigenvalues, bases, widths,
      d, family, parallel), the same tensor set and shapes, o_proj and down_proj
      the refit ones; plus
        lambdas  [[λ, λ2] per layer]
        attn_err [{"refit": e, "plain": e, "ref": ‖Md·Qmd‖²} per layer]: the
                 calibration-set error ‖M'·Qmd − Md·Qmd‖² with the output's o_proj
                 ("refit") and with plain SliceGPT's (Qmᵀ·W_o)[:d_mid] on the same
                 x̂ and H ("plain"), at this layer's Qm;
        mlp_err  the same for the MLP output: ‖Y'·Qnd − Yd·Qnd‖² against
                 M'·Qnd + Z·W_downᵀ·Qnd, at this layer's Qn.
      act_dtype=np.float32 runs the layer math (not the PCAs, not the moments
      and solves) in float32, to estimate what an fp32 implementation reaches.
      embed_basis (D, >= d): used instead of the embedding's PCA basis (its
      first d columns); for a tie at the cut (below).
    tie_at_cut(w, d) -> None or (r, m); complete_tied(Q, r, m, d, Qd_other) -> (D, d)
      Where the embedding's eigenvalues tie across the cut (babyllama105: a
      vocabulary of 105 < D = 128 and 46 distinct tokens in 16 windows of 128,
      so the eigenvalues from the 47th on all equal the damping δ), only the
      top r of the kept d directions are determined; the other d − r are any
      orthonormal set in the tied eigenspace, and implementations differ
      there (in the embedding, layer 0's attention readers and
      attn_shortcut_Q, and the held-out NLL through tokens absent from the
      calibration windows; when the tie is the damping's, as here, the
      calibration signals lie in the top r and every later basis is
      unaffected). A test then takes that choice from the implementation
      under test (complete_tied) and passes it as embed_basis.
    check_supported(arch, W) raises Unsupported for what the refit refuses.
    window_nll(cfg, tensors, win, batch=16) -> per-window mean NLL (n,)

CLI:
  refit_ref.py MODEL_DIR --calib calib.npy --nsamples N --seqlen T --sparsity S
               --ridge R --eval eval.npy [--eval-windows K] [--out OUT_DIR]
prints JSON {dense_nll, sliced_nll, refit_nll, widths, attn_err, mlp_err, ...}
(sliced_nll: plain SliceGPT, slicegpt_ref.slice_model; --out writes the refit
model with slicegpt_ref.write_sliced, F32).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_ref as mr  # noqa: E402
import slicegpt_ref as sg  # noqa: E402
from slicegpt_ref import (_cfg, _rot_cols, dense_model, fuse, model_nll, pca, rmsn,  # noqa: E402,F401
                          slice_width, sliced_model, write_sliced)

RIDGE = 1e-4
TIE_RTOL = 1e-10  # eigenvalues this close (relative to the largest) across the cut are a tie


def check_supported(arch, W):
    """Refuse what the refit does not cover (module doc)."""
    if arch.norm == "ln":
        raise mr.Unsupported("%s: LayerNorm family: SliceGPT with refit covers the RMSNorm families only"
                             % arch.family)
    if arch.parallel:
        raise mr.Unsupported("%s: parallel block: SliceGPT with refit covers sequential blocks only" % arch.family)
    for lay in arch.layers:
        for wr in (lay["attn_writer"], lay["mlp_writer"]):
            if wr + ".bias" in W:
                raise mr.Unsupported("%s: %s.bias: the refit has no bias column (o_proj and down_proj "
                                     "must be bias-free)" % (arch.family, wr))


def _solve(A, B, lam):
    """(A + λI)⁻¹·B, A symmetric positive semi-definite."""
    A = 0.5 * (A + A.T)
    A[np.diag_indices_from(A)] += lam
    return np.linalg.solve(A, B)


def _sq(a):
    return float(np.einsum("ij,ij->", a, a))


def _refit_writer(inp, target, Wp, ridge, refit):
    """One writer's refit (steps 4 and 8): inp (N, n) its input, target (N, k)
    in the kept basis, Wp (n, k) plain SliceGPT's writer, transposed.
    -> (Wᵀ (n, k): the ridge solution, or Wp without refit; λ; the
    calibration-set squared errors of both)."""
    A = inp.T @ inp
    lam = ridge * float(np.mean(np.diag(A)))
    WT = _solve(A, inp.T @ target, lam) if refit else Wp
    return WT, lam, {"refit": _sq(inp @ WT - target), "plain": _sq(inp @ Wp - target)}


def tie_at_cut(w, d, rtol=TIE_RTOL):
    """Eigenvalues w (descending) tie across the cut d (w[d-1] ≈ w[d] within
    rtol·w[0])? -> None, or (r, m): the r eigenvalues above the tied cluster,
    the m tied ones (r < d < r + m); only the top r of the kept d are then
    determined, any d − r of the m tied directions being as good."""
    if d >= len(w) or abs(w[d - 1] - w[d]) > rtol * abs(w[0]):
        return None
    tol = rtol * abs(w[0])
    lo = d - 1
    while lo > 0 and abs(w[lo - 1] - w[d - 1]) <= tol:
        lo -= 1
    hi = d
    while hi + 1 < len(w) and abs(w[hi + 1] - w[d]) <= tol:
        hi += 1
    return lo, hi + 1 - lo


def complete_tied(Q, r, m, d, Qd_other):
    """The basis (D, d): Q's own determined columns [:r], then the d − r
    directions of another implementation's kept basis Qd_other (D, d) in the
    tied eigenspace T = Q[:, r:r+m], projected onto T exactly and made
    orthonormal (the nearest orthonormal set, by the polar decomposition), in
    the other's order and signs."""
    T = Q[:, r:r + m]
    C = T @ (T.T @ Qd_other[:, r:d])
    U, _, Vt = np.linalg.svd(C, full_matrices=False)
    return np.concatenate([Q[:, :r], U @ Vt], axis=1)


def slice_refit(config, W, calib_win, sparsity, round_to=8, ridge=RIDGE, act_dtype=np.float64, batch=16,
                embed_scale_dtype=None, refit=True, embed_basis=None):
    cfg = _cfg(config)
    arch = cfg.arch
    check_supported(arch, W)
    D, L, eps = arch.D, arch.L, arch.eps
    Dh = arch.H * arch.hd
    Fw = arch.F
    d = slice_width(D, sparsity, round_to)
    calib_win = np.asarray(calib_win, dtype=np.int64)
    n, T = calib_win.shape
    N = n * T
    ad = act_dtype
    F = fuse(arch, W, embed_scale_dtype)
    I_o = np.eye(Dh, dtype=ad)
    I_f = np.eye(Fw, dtype=ad)

    def cast(t):
        return {k: np.asarray(v, dtype=ad) for k, v in t.items()}

    out = {}
    eig, bases, widths = {"layers": []}, {"layers": []}, {"layers": []}
    lambdas, attn_err, mlp_err = [], [], []

    # the embedding: X₀ = Xd₀, Q = PCA(X₀)
    X = mr.embed(arch, F, calib_win, sliced=True).astype(ad)  # (n, T, D)
    Xd = X.copy()
    w0, Q = pca(X)
    if embed_basis is not None:  # a choice within a tie at the cut (tie_at_cut, complete_tied)
        Q = np.asarray(embed_basis, dtype=np.float64)
        if Q.shape[0] != D or Q.shape[1] < d:
            raise ValueError("embed_basis %s: need (%d, >= %d)" % (Q.shape, D, d))
    eig["embed"], bases["embed"], widths["embed"] = w0, Q, d
    out[arch.embed] = F[arch.embed] @ Q[:, :d]
    d_in = d

    for l in range(L):
        lay = arch.layers[l]
        d_mid = d
        d_out = D if l == L - 1 else d
        Qi = Q[:, :d_in]
        wo, wd = lay["attn_writer"], lay["mlp_writer"]
        Wo, Wdn = F[wo + ".weight"], F[wd + ".weight"]  # (D, Dh), (D, F)
        cur = {}
        for k in ("q_norm", "k_norm"):
            if lay[k]:
                for s in (".weight", ".bias"):
                    if lay[k] + s in F:
                        out[lay[k] + s] = cur[lay[k] + s] = F[lay[k] + s]
        # dense (fused, unrotated) tensors of this layer, for the dense stream
        dense = cast({k: v for k, v in F.items() if k.startswith(lay["prefix"])})

        # 1-2: x̂, H, M (unrefit, unsliced W_o) and the dense Md
        _rot_cols(F, cur, lay["attn_readers"], Qi)
        ca = cast(cur)
        ca[wo + ".weight"] = I_o  # the identity writer: attn returns the context H
        Qia, Sa, Woa = Qi.astype(ad), Qi.T.astype(ad), Wo.astype(ad)
        xh = np.empty((n, T, D), dtype=ad)
        H = np.empty((n, T, Dh), dtype=ad)
        M = np.empty((n, T, D), dtype=ad)
        Md = np.empty((n, T, D), dtype=ad)
        for b0 in range(0, n, batch):
            sl = slice(b0, b0 + batch)
            xr = X[sl] @ Qia
            H[sl] = mr.attn(arch, ca, lay, rmsn(xr, D, eps), l)
            xh[sl] = xr @ Sa
            M[sl] = xh[sl] + H[sl] @ Woa.T
            Md[sl] = Xd[sl] + mr.attn(arch, dense, lay, rmsn(Xd[sl], D, eps), l)
        # 3: Qm
        wm, Qm = pca(M)
        Qmd = Qm[:, :d_mid]
        # 4: the o_proj refit
        H2 = H.reshape(N, Dh).astype(np.float64)
        Ta = (Md - xh).reshape(N, D).astype(np.float64) @ Qmd  # (N, d_mid)
        WoT, lam, err = _refit_writer(H2, Ta, Wo.T @ Qmd, ridge, refit)  # plain: Wo.T @ Qmd (Dh, d_mid)
        out[wo + ".weight"] = WoT.T.copy()
        attn_err.append(dict(err, ref=_sq(Md.reshape(N, D).astype(np.float64) @ Qmd)))
        del H2, Ta, xh
        # 5: h = xr·S_attn + H·W_o'ᵀ (rotated by Qmd); M' = h·Qmdᵀ
        S_attn = Qi.T @ Qmd  # (d_in, d_mid)
        hr = np.empty((n, T, d_mid), dtype=ad)
        Sat, WoTa = S_attn.astype(ad), WoT.astype(ad)
        for b0 in range(0, n, batch):
            sl = slice(b0, b0 + batch)
            hr[sl] = (X[sl] @ Qia) @ Sat + H[sl] @ WoTa
        del H, M
        Mp = hr @ Qmd.T.astype(ad)  # (n, T, D)

        # 6-7: dense Yd; the MLP on M' (readers rotated by Qmd), Z, Y (W_down unsliced)
        _rot_cols(F, cur, lay["mlp_readers"], Qmd)
        cm = cast({k: cur[k] for k in cur if k.startswith(lay["prefix"])})
        cm[wd + ".weight"] = I_f  # the identity writer: mlp returns the intermediate Z
        Wda = Wdn.astype(ad)
        Z = np.empty((n, T, Fw), dtype=ad)
        Y = np.empty((n, T, D), dtype=ad)
        Yd = np.empty((n, T, D), dtype=ad)
        for b0 in range(0, n, batch):
            sl = slice(b0, b0 + batch)
            Z[sl] = mr.mlp(arch, cm, lay, rmsn(hr[sl], D, eps))
            Y[sl] = Mp[sl] + Z[sl] @ Wda.T
            Yd[sl] = Md[sl] + mr.mlp(arch, dense, lay, rmsn(Md[sl], D, eps))
        del Md
        wn, Qn = pca(Y)
        Qnd = Qn[:, :d_out]
        # 8: the down_proj refit
        Z2 = Z.reshape(N, Fw).astype(np.float64)
        Tm = (Yd - Mp).reshape(N, D).astype(np.float64) @ Qnd  # (N, d_out)
        WdT, lam2, err = _refit_writer(Z2, Tm, Wdn.T @ Qnd, ridge, refit)  # plain: Wdn.T @ Qnd (F, d_out)
        out[wd + ".weight"] = WdT.T.copy()
        mlp_err.append(dict(err, ref=_sq(Yd.reshape(N, D).astype(np.float64) @ Qnd)))
        del Z2, Tm, Y
        # 9: Y' = M' + Z·W_down'ᵀ·Qndᵀ
        S_mlp = Qmd.T @ Qnd  # (d_mid, d_out)
        Xn = np.empty((n, T, D), dtype=ad)
        WdTa, Qndt = WdT.astype(ad), Qnd.T.astype(ad)
        for b0 in range(0, n, batch):
            sl = slice(b0, b0 + batch)
            Xn[sl] = Mp[sl] + (Z[sl] @ WdTa) @ Qndt
        del Z, Mp, hr

        cur[lay["attn_shortcut"]] = S_attn
        cur[lay["mlp_shortcut"]] = S_mlp
        out.update({k: v for k, v in cur.items() if k not in (wo + ".weight", wd + ".weight")})
        eig["layers"].append({"attn": wm, "mlp": wn})
        bases["layers"].append({"attn": Qm, "mlp": Qn})
        widths["layers"].append([d_in, d_mid, d_out])
        lambdas.append([lam, lam2])
        X, Xd, Q, d_in = Xn, Yd, Qn, d_out

    out["lm_head.weight"] = F["lm_head.weight"] @ Q
    if "lm_head.bias" in F:
        out["lm_head.bias"] = F["lm_head.bias"]
    return dict(tensors=out, eigenvalues=eig, bases=bases, widths=widths, d=d, family=arch.family,
                parallel=arch.parallel, lambdas=lambdas, attn_err=attn_err, mlp_err=mlp_err, ridge=ridge,
                refit=bool(refit))


def window_nll(cfg, tensors, win, batch=16, dense=False):
    """Per-window mean NLL (n,) of the windows win (n, T), each predicting its
    tokens 1..T-1; tensors a sliced model (or the dense one with dense=True)."""
    cfg = _cfg(cfg)
    model = dense_model(cfg, tensors) if dense else sliced_model(cfg, tensors)
    win = np.asarray(win, dtype=np.int64)
    n, T = win.shape
    per = np.empty(n)
    for b0 in range(0, n, batch):
        tk = win[b0:b0 + batch]
        per[b0:b0 + tk.shape[0]] = mr.nll_tokens(mr.forward_logits(model, tk), tk).mean(axis=1)
    return per


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--sparsity", type=float, default=0.25)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--ridge", type=float, default=RIDGE)
    ap.add_argument("--eval", dest="eval_tokens")
    ap.add_argument("--eval-seqlen", type=int, default=None)
    ap.add_argument("--eval-windows", type=int, default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    config, W = mr.load_model_dir(a.model_dir)
    try:
        cfg = sg.Cfg(config)
        check_supported(cfg.arch, W)
    except mr.Unsupported as e:
        print("refit_ref: %s: %s" % (a.model_dir, e), file=sys.stderr)
        return 65
    calib = mr.windows(mr.load_tokens(a.calib), a.seqlen, a.nsamples)
    res = slice_refit(cfg, W, calib, a.sparsity, a.round_to, a.ridge)
    rep = {"family": res["family"], "sparsity": a.sparsity, "ridge": a.ridge, "d": res["d"],
           "widths": res["widths"], "lambdas": res["lambdas"], "attn_err": res["attn_err"],
           "mlp_err": res["mlp_err"]}
    if a.eval_tokens:
        ev = mr.windows(mr.load_tokens(a.eval_tokens), a.eval_seqlen or a.seqlen, a.eval_windows)
        plain = sg.slice_model(cfg, W, calib, a.sparsity, a.round_to)
        rep["eval_windows"] = int(ev.shape[0])
        rep["dense_nll"] = model_nll(cfg, dense_model(cfg, W), ev)
        rep["sliced_nll"] = model_nll(cfg, sliced_model(cfg, plain["tensors"]), ev)
        rep["refit_nll"] = model_nll(cfg, sliced_model(cfg, res["tensors"]), ev)
    if a.out:
        write_sliced(a.out, config, res, "F32")
    json.dump(rep, sys.stdout, indent=None)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
