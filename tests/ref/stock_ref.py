#!/usr/bin/python3
"""tests/ref/stock_ref.py — an independent float64 numpy reference of the
"stock" compression policy (issue 21): FFN-neuron pruning with a ridge
least-squares refit of the down projection, optionally after the global basis
of tests/ref/global_ref.py. Written from the definition below, not from the C;
the forward pieces are model_ref's, the basis and the width-d stock model are
global_ref's.

Inputs: an HF model dir of an RMSNorm family with a gated MLP (llama, mistral,
qwen2/3, gemma; phi3's fused gate_up_proj), calibration windows (the first
`nsamples` non-overlapping windows of `seqlen` tokens), a residual width d, an
FFN width k, score "energy" or "leverage", ridge r (default 1e-4).

  * d == D: no residual slicing; the model keeps its norms, its embedding and
    its (tied or untied) head as they are.
  * d < D: global_ref's basis of the DENSE model on the same calibration
    windows (weighting "trace" unless told), then global_ref.slice_global and
    stock_config: the stock model at width d (head untied). The FFN pruning
    then runs on that model.

Layer by layer, l = 0..L-1, on the signals of the model already compressed in
layers 0..l-1 (every calibration window its own sequence, positions from 0):
    h = x + Attn(norm_in(x))                          (attention unchanged)
    z = act(norm_post(h)·W_gateᵀ) ⊙ (norm_post(h)·W_upᵀ)        N×F
    C = zᵀz (float64), λ = r·mean(diag C)
    score_i = C_ii·‖W_down[:, i]‖²                    (energy)
            = 1 − λ·[(C + λI)⁻¹]_ii = diag(C(C+λI)⁻¹)_i (leverage)
    S = the k largest scores (ties: the lower index first), sorted ascending
    W_gate, W_up ← rows S (phi3: rows S and F+S of gate_up_proj)
    W_down ← W_down·C[:, S]·(C[S, S] + λI)⁻¹
    next x = h + z[:, S]·W_downᵀ (the new W_down)
The refit is applied whatever k is, so at k = F with r > 0 the model is not
exactly the dense one (W_down·C(C+λI)⁻¹); at r = 0 it is.

Output: the model's config with intermediate_size k (global_ref.stock_config
first when d < D), the tensors (HF names, float64); a tied input stays tied
when d == D (no lm_head.weight).

API:
  MLP pieces:  mlp_names(arch, lay), intermediate(arch, t, lay, hn) -> z (..., F)
  ffn_scores(C, W_down, score, lam) -> (F,)
  select(scores, k) -> S (ascending)
  refit_down(W_down, C, S, lam) -> (D', k)
  compress(config, W, calib_win, d=None, k=None, score="energy", ridge=1e-4,
           weighting="trace", batch=16, in_scale_dtype=None,
           out_scale_dtype="F32", act_dtype=np.float64)
      -> {"config", "tensors", "d", "k", "kept": [S per layer], "lambdas",
          "mlp_err": [per layer {"refit", "prune"}], "scores": [...]}
      mlp_err: ‖z·W_downᵀ − z_S·W'ᵀ‖_F / ‖z·W_downᵀ‖_F on that layer's
      calibration signals, with the refit W' and with plain pruning
      (W' = W_down[:, S]). act_dtype=np.float32 runs the signals (not C, not
      the refit) in float32, to estimate what an fp32 implementation gives.
  param_count(tensors) -> int (every stored tensor, a tied head once)
  heldout_nll(model, win, embed_scale_dtype=None, batch=16)
      -> (mean NLL per predicted token, standard error over windows,
          per-window means); model_ref's convention (each window predicts
          its tokens 1..T-1), run by model_ref's forward.
  save_npz(path, result)

CLI: stock_ref.py MODEL CALIB.npy --seqlen T --nsamples N [--d D] [--k K]
     [--score energy|leverage] [--ridge r] [--weighting trace|raw]
     --eval HOLDOUT.npy [--eval-windows W] [--save-npz OUT.npz]
prints JSON {nll, se, params_total, params_dense, d, k, D, F, ...}; the eval
windows are `seqlen` long, all of the file unless --eval-windows.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import global_ref as gr  # noqa: E402
import model_ref as mr  # noqa: E402
from model_ref import Unsupported  # noqa: E402

SCORES = ("energy", "leverage")
RIDGE = 1e-4


# ---------------------------------------------------------------- the MLP

def mlp_names(arch, lay):
    """(reader names, down name) of a gated MLP; Unsupported otherwise."""
    if arch.norm == "ln" or arch.parallel or not arch.gated:
        raise Unsupported("%s: the stock reference covers RMSNorm families with a gated MLP" % arch.family)
    readers = [lay["gate_up"]] if "gate_up" in lay else [lay["gate"], lay["up"]]
    return readers, lay["down"]


def _check_no_mlp_bias(arch, t):
    for lay in arch.layers:
        readers, down = mlp_names(arch, lay)
        for n in readers + [down]:
            if n + ".bias" in t:
                raise Unsupported("%s: MLP biases (%s.bias) are outside this reference" % (arch.family, n))


def intermediate(arch, t, lay, hn):
    """z = act(hn·W_gateᵀ) ⊙ (hn·W_upᵀ), (..., F)."""
    if "gate_up" in lay:
        gu = hn @ t[lay["gate_up"] + ".weight"].T
        half = gu.shape[-1] // 2
        return mr._act(arch.act, gu[..., :half]) * gu[..., half:]
    return mr._act(arch.act, hn @ t[lay["gate"] + ".weight"].T) * (hn @ t[lay["up"] + ".weight"].T)


# ---------------------------------------------------------------- scores, selection, refit

def ffn_scores(C, W_down, score, lam):
    if score == "energy":
        return np.diag(C) * (W_down * W_down).sum(axis=0)
    if score == "leverage":
        F = C.shape[0]
        inv = np.linalg.inv(C + lam * np.eye(F))
        return 1.0 - lam * np.diag(inv)
    raise ValueError("score %r (energy or leverage)" % (score,))


def select(scores, k):
    """The k largest scores, ties to the lower index, returned ascending."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.sort(order[:k])


def refit_down(W_down, C, S, lam):
    """W_down·C[:, S]·(C[S, S] + λI)⁻¹ (the system is symmetric)."""
    A = C[np.ix_(S, S)] + lam * np.eye(len(S))
    B = W_down @ C[:, S]
    return np.linalg.solve(A, B.T).T


# ---------------------------------------------------------------- the policy

def compress(config, W, calib_win, d=None, k=None, score="energy", ridge=RIDGE, weighting="trace", batch=16,
             in_scale_dtype=None, out_scale_dtype="F32", act_dtype=np.float64):
    arch = mr.Arch(config)
    D, F = arch.D, arch.F
    d = D if d is None else int(d)
    k = F if k is None else int(k)
    if not (0 < d <= D) or not (0 < k <= F):
        raise ValueError("need 0 < d <= %d and 0 < k <= %d (got d=%d, k=%d)" % (D, F, d, k))
    if score not in SCORES:
        raise ValueError("score %r (energy or leverage)" % (score,))
    for lay in arch.layers:
        mlp_names(arch, lay)
    _check_no_mlp_bias(arch, W)
    win = np.asarray(calib_win, dtype=np.int64)

    if d == D:
        cfg = dict(config)
        t = {n: np.asarray(v, dtype=np.float64).copy() for n, v in W.items()}
        es = in_scale_dtype
    else:
        Q = gr.global_basis(config, W, win, weighting, batch, in_scale_dtype)[1]
        t = gr.slice_global(config, W, Q, d, in_scale_dtype, out_scale_dtype)
        cfg = gr.stock_config(config, d, out_scale_dtype or "F32")
        es = out_scale_dtype
    cfg["intermediate_size"] = k
    sarch = mr.Arch(dict(cfg, intermediate_size=F))  # the signals run on the unpruned layers

    def cast(a):
        return np.asarray(a, dtype=act_dtype)

    def tcast(names):
        return {n: cast(t[n]) for n in names if n in t}

    x = cast(mr.embed(sarch, tcast([sarch.embed] + ([sarch.pos] if sarch.pos else [])), win,
                      sliced=False, embed_scale_dtype=es))
    kept, lambdas, errs, all_scores = [], [], [], []
    for i, lay in enumerate(sarch.layers):
        tl = tcast([n for n in t if n.startswith(lay["prefix"])])
        h = np.empty_like(x)
        for b0 in range(0, x.shape[0], batch):
            xb = x[b0:b0 + batch]
            h[b0:b0 + batch] = xb + mr.attn(sarch, tl, lay, mr.norm(sarch, tl, lay["in_norm"], xb), i)
        hn = mr.norm(sarch, tl, lay["post_norm"], h)
        z = intermediate(sarch, tl, lay, hn).reshape(-1, F)
        z64 = z.astype(np.float64)
        C = z64.T @ z64
        C = 0.5 * (C + C.T)
        lam = ridge * float(np.mean(np.diag(C)))
        _, down = mlp_names(sarch, lay)
        Wd = t[down + ".weight"]
        sc = ffn_scores(C, Wd, score, lam)
        S = select(sc, k)
        # k = F keeps the MLP as it is: no neuron cut, no refit (the contract of docs/algorithm.md §12)
        Wd_new = Wd if k == F else refit_down(Wd, C, S, lam)
        # the layer's new tensors
        if "gate_up" in lay:
            gu = t[lay["gate_up"] + ".weight"]
            t[lay["gate_up"] + ".weight"] = np.concatenate([gu[S], gu[F + S]], axis=0)
        else:
            t[lay["gate"] + ".weight"] = t[lay["gate"] + ".weight"][S]
            t[lay["up"] + ".weight"] = t[lay["up"] + ".weight"][S]
        t[down + ".weight"] = Wd_new
        # calibration-set MLP output error: refit vs plain pruning
        full = z64 @ Wd.T
        zs = z64[:, S]
        nf = np.linalg.norm(full)
        errs.append({"refit": float(np.linalg.norm(full - zs @ Wd_new.T) / nf),
                     "prune": float(np.linalg.norm(full - zs @ Wd[:, S].T) / nf)})
        x = h + (z[:, S] @ cast(Wd_new).T).reshape(h.shape)
        kept.append(S)
        lambdas.append(lam)
        all_scores.append(sc)
    return {"config": cfg, "tensors": t, "d": d, "k": k, "kept": kept, "lambdas": lambdas, "mlp_err": errs,
            "scores": all_scores}


def param_count(tensors):
    return int(sum(np.asarray(v).size for v in tensors.values()))


def heldout_nll(model, win, embed_scale_dtype=None, batch=16):
    """(mean NLL, its standard error over windows, per-window mean NLLs)."""
    m = model if not isinstance(model, str) else mr.read_model(model)
    m = dict(m, arch=m.get("arch") or mr.Arch(m["config"]))
    win = np.asarray(win, dtype=np.int64)
    n, T = win.shape
    per = np.empty(n)
    for b0 in range(0, n, batch):
        tk = win[b0:b0 + batch]
        lg = mr.forward_logits(m, tk, embed_scale_dtype=embed_scale_dtype)
        for j in range(tk.shape[0]):
            per[b0 + j] = mr.nll_sum(lg[j:j + 1], tk[j:j + 1]) / (T - 1)
    se = float(per.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return float(per.mean()), se, per


def save_npz(path, result):
    arrays = {n: v for n, v in result["tensors"].items()}
    arrays["__config__"] = np.array(json.dumps(result["config"], sort_keys=True))
    for i, S in enumerate(result["kept"]):
        arrays["__kept__.%d" % i] = np.asarray(S, dtype=np.int64)
    np.savez(path, **arrays)


# ---------------------------------------------------------------- CLI

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("calib")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--d", type=int, help="residual width (default: hidden_size, no residual slicing)")
    ap.add_argument("--k", type=int, help="FFN width (default: intermediate_size)")
    ap.add_argument("--score", default="energy", choices=SCORES)
    ap.add_argument("--ridge", type=float, default=RIDGE)
    ap.add_argument("--weighting", default="trace", choices=gr.WEIGHTINGS)
    ap.add_argument("--eval", dest="eval_tokens", required=True)
    ap.add_argument("--eval-windows", type=int)
    ap.add_argument("--save-npz")
    a = ap.parse_args(argv)
    config, W = mr.load_model_dir(a.model_dir)
    try:
        arch = mr.Arch(config)
        sdt = gr._scale_dtype(config)
        calib = mr.windows(mr.load_tokens(a.calib), a.seqlen, a.nsamples)
        r = compress(config, W, calib, a.d, a.k, a.score, a.ridge, a.weighting, in_scale_dtype=sdt)
    except (Unsupported, ValueError) as e:
        print("stock_ref: %s: %s" % (a.model_dir, e), file=sys.stderr)
        return 64
    ev = mr.windows(mr.load_tokens(a.eval_tokens), a.seqlen, a.eval_windows)
    nll, se, _ = heldout_nll({"config": r["config"], "tensors": r["tensors"]}, ev,
                             sdt if r["d"] == arch.D else "F32")
    rep = {"nll": nll, "se": se, "params_total": param_count(r["tensors"]), "params_dense": param_count(W),
           "D": arch.D, "F": arch.F, "d": r["d"], "k": r["k"], "score": a.score, "ridge": a.ridge,
           "calib_windows": int(calib.shape[0]), "seqlen": a.seqlen, "eval_windows": int(ev.shape[0]),
           "mlp_err": r["mlp_err"]}
    if r["d"] < arch.D:
        rep["weighting"] = a.weighting
    if a.save_npz:
        save_npz(a.save_npz, r)
    json.dump(rep, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
