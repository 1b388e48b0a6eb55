#!/usr/bin/python3
"""tests/ref/stock_ref.py — an independent float64 numpy reference of the
"stock" compression policy (issue 21): FFN-neuron pruning with a ridge
least-squares refit of the down projection, optionally after the global basis
of tests/ref/global_ref.py. Written from the definition below, not from the C;
the forward pieces are model_ref's, the basis and the width-d stock model are
global_ref's.

Inputs: an HF model dir of any family model_ref runs: RMSNorm families with a
gated MLP (llama, mistral, qwen2/3, gemma; phi3's fused gate_up_proj) and the
LayerNorm ones with fc1/fc2 (opt: ReLU, a sequential block; phi: gelu_new and
the parallel block x + Attn(LN(x)) + MLP(LN(x))), calibration windows (the
first `nsamples` non-overlapping windows of `seqlen` tokens), a residual width
d, an FFN width k, score "energy" or "leverage", ridge r (default 1e-4).

  * d == D: no residual slicing; the model keeps its norms (LayerNorm: γ and
    β), its embedding and its (tied or untied) head as they are.
  * d < D (RMSNorm families only: a LayerNorm family is Unsupported):
    global_ref's basis of the DENSE model on the same calibration windows
    (weighting "trace" unless told), then global_ref.slice_global and
    stock_config: the stock model at width d (head untied). The FFN pruning
    then runs on that model.

Layer by layer, l = 0..L-1, on the signals of the model already compressed in
layers 0..l-1 (every calibration window its own sequence, positions from 0):
    h = x + Attn(norm_in(x))                          (attention unchanged)
    z = act(norm_post(h)·W_gateᵀ + b_gate) ⊙ (norm_post(h)·W_upᵀ + b_up)  N×F
        (fc1/fc2: z = act(norm_post(h)·W_fc1ᵀ + b_fc1); a parallel block's
        MLP reads norm_in(x), and h = x + Attn(norm_in(x)) as before)
    C = zᵀz (float64), λ = r·mean(diag C)
    score_i = C_ii·‖W_down[:, i]‖²                    (energy)
            = 1 − λ·[(C + λI)⁻¹]_ii = diag(C(C+λI)⁻¹)_i (leverage)
Without a down bias:
    W_down ← W_down·C[:, S]·(C[S, S] + λI)⁻¹
With a down bias b (OPT's and Phi-2's fc2; Llama's mlp_bias): the bias is
refit as a constant column of ones appended to z. [W' | b'] is the ridge
least-squares fit of the unpruned output z·W_downᵀ + b from [z[:, S] | 1],
with λ on the neuron block only (the bias is not regularised), solved on the
augmented moments
    A = [C[S, S] + λI, s[S]; s[S]ᵀ, n],  s = zᵀ1, n tokens
    A·[W'ᵀ; b'ᵀ] = [C[S, :]·W_downᵀ + s[S]·bᵀ; sᵀ·W_downᵀ + n·bᵀ],
so the new bias absorbs the mean of the dropped neurons. The scores and λ
are the ones above, on C = zᵀz as it is (not centred); centre_scores=True
scores on the scatter about the mean, (z − z̄)ᵀ(z − z̄), instead (a
measurement: bench/stock_bias_ref.py).
Then, either way:
    S = the k largest scores (ties: the lower index first), sorted ascending
    W_gate, W_up (fc1) and their biases ← rows S (phi3: rows S and F+S of
    gate_up_proj)
    next x = h + z[:, S]·W_downᵀ (+ b') (the new W_down, b')
With k = F the MLP is kept as it is (no refit).

Output: the model's config with intermediate_size k (OPT: ffn_dim;
global_ref.stock_config first when d < D), the tensors (HF names, float64); a
tied input stays tied when d == D (no lm_head.weight).

API:
  MLP pieces:  mlp_names(arch, lay), intermediate(arch, t, lay, hn) -> z (..., F)
  ffn_key(arch) -> the config key of the MLP width
  ffn_scores(C, W_down, score, lam) -> (F,)
  select(scores, k) -> S (ascending)
  refit_down(W_down, C, S, lam) -> (D', k)
  refit_down_bias(W_down, b, z, S, lam) -> ((D', k), (D',))  the augmented solve
  compress(config, W, calib_win, d=None, k=None, score="energy", ridge=1e-4,
           weighting="trace", batch=16, in_scale_dtype=None,
           out_scale_dtype="F32", act_dtype=np.float64, centre_scores=False)
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
    """(reader names, down name): gate and up (or fused gate_up), or fc1."""
    if "fc1" in lay:
        return [lay["fc1"]], lay["down"]
    readers = [lay["gate_up"]] if "gate_up" in lay else [lay["gate"], lay["up"]]
    return readers, lay["down"]


def ffn_key(arch):
    return "ffn_dim" if arch.family == "opt" else "intermediate_size"


def _lin(t, name, x):
    y = x @ t[name + ".weight"].T
    b = t.get(name + ".bias")
    return y if b is None else y + b


def intermediate(arch, t, lay, hn):
    """z = act(hn·W_gateᵀ + b_gate) ⊙ (hn·W_upᵀ + b_up), or act(hn·W_fc1ᵀ + b_fc1), (..., F)."""
    if "fc1" in lay:
        return mr._act(arch.act, _lin(t, lay["fc1"], hn))
    if "gate_up" in lay:
        gu = _lin(t, lay["gate_up"], hn)
        half = gu.shape[-1] // 2
        return mr._act(arch.act, gu[..., :half]) * gu[..., half:]
    return mr._act(arch.act, _lin(t, lay["gate"], hn)) * _lin(t, lay["up"], hn)


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


def refit_down_bias(W_down, b, z, S, lam):
    """[W' | b']: ridge least squares of z·W_downᵀ + b from [z[:, S] | 1],
    λ on the neuron block only, by the augmented normal equations."""
    n, F = z.shape
    k = len(S)
    za = np.concatenate([z, np.ones((n, 1))], axis=1)
    M = za.T @ za                           # [[zᵀz, zᵀ1], [1ᵀz, n]]
    M = 0.5 * (M + M.T)
    Sa = np.concatenate([np.asarray(S), [F]])
    A = M[np.ix_(Sa, Sa)] + np.diag(np.concatenate([np.full(k, lam), [0.0]]))
    Wb = np.concatenate([W_down, b[:, None]], axis=1)   # the unpruned map of [z | 1]
    rhs = M[Sa, :] @ Wb.T                   # [z_S | 1]ᵀ·(z·W_downᵀ + 1·bᵀ)
    X = np.linalg.solve(A, rhs).T           # (D', k + 1)
    return X[:, :k], X[:, k]


# ---------------------------------------------------------------- the policy

def compress(config, W, calib_win, d=None, k=None, score="energy", ridge=RIDGE, weighting="trace", batch=16,
             in_scale_dtype=None, out_scale_dtype="F32", act_dtype=np.float64, centre_scores=False):
    arch = mr.Arch(config)
    D, F = arch.D, arch.F
    d = D if d is None else int(d)
    k = F if k is None else int(k)
    if not (0 < d <= D) or not (0 < k <= F):
        raise ValueError("need 0 < d <= %d and 0 < k <= %d (got d=%d, k=%d)" % (D, F, d, k))
    if score not in SCORES:
        raise ValueError("score %r (energy or leverage)" % (score,))
    if d < D and arch.norm == "ln":
        raise Unsupported("%s: LayerNorm family: the stock policy cuts its MLP alone (d = D)" % arch.family)
    win = np.asarray(calib_win, dtype=np.int64)

    if d == D:
        cfg = dict(config)
        t = {n: np.asarray(v, dtype=np.float64).copy() for n, v in W.items()}
        if arch.tied:  # tied stays tied: a stored copy of the head (HF saves one for OPT, Gemma) is not written
            t.pop("lm_head.weight", None)
        es = in_scale_dtype
    else:
        Q = gr.global_basis(config, W, win, weighting, batch, in_scale_dtype)[1]
        t = gr.slice_global(config, W, Q, d, in_scale_dtype, out_scale_dtype)
        cfg = gr.stock_config(config, d, out_scale_dtype or "F32")
        es = out_scale_dtype
    fk = ffn_key(arch)
    cfg[fk] = k
    sarch = mr.Arch(dict(cfg, **{fk: F}))  # the signals run on the unpruned layers

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
        # the MLP's input: after the attention block, or a parallel block's own input
        hn = mr.norm(sarch, tl, lay["in_norm"], x) if sarch.parallel else mr.norm(sarch, tl, lay["post_norm"], h)
        z = intermediate(sarch, tl, lay, hn).reshape(-1, F)
        z64 = z.astype(np.float64)
        C = z64.T @ z64
        C = 0.5 * (C + C.T)
        lam = ridge * float(np.mean(np.diag(C)))
        readers, down = mlp_names(sarch, lay)
        Wd = t[down + ".weight"]
        bd = t.get(down + ".bias")
        if bd is not None and centre_scores:
            zc = z64 - z64.mean(axis=0)
            Sg = zc.T @ zc
            sc = ffn_scores(0.5 * (Sg + Sg.T), Wd, score, lam)
        else:
            sc = ffn_scores(C, Wd, score, lam)
        S = select(sc, k)
        # k = F keeps the MLP as it is: no neuron cut, no refit (the contract of docs/algorithm.md §12)
        bd_new = bd
        if k == F:
            Wd_new = Wd
        elif bd is None:
            Wd_new = refit_down(Wd, C, S, lam)
        else:
            Wd_new, bd_new = refit_down_bias(Wd, bd, z64, S, lam)
        # the layer's new tensors: the readers' rows (and their biases' entries) S
        for n in readers:
            for suf in (".weight", ".bias"):
                if n + suf not in t:
                    continue
                a = t[n + suf]
                t[n + suf] = np.concatenate([a[S], a[F + S]], axis=0) if n == lay.get("gate_up") else a[S]
        t[down + ".weight"] = Wd_new
        b0v = 0.0 if bd is None else bd
        b1v = 0.0 if bd_new is None else bd_new
        if bd is not None:
            t[down + ".bias"] = bd_new
        # calibration-set MLP output error: refit vs plain pruning (the bias as read)
        full = z64 @ Wd.T + b0v
        zs = z64[:, S]
        nf = np.linalg.norm(full)
        errs.append({"refit": float(np.linalg.norm(full - zs @ Wd_new.T - b1v) / nf),
                     "prune": float(np.linalg.norm(full - zs @ Wd[:, S].T - b0v) / nf)})
        mlp_out = (z[:, S] @ cast(Wd_new).T + cast(b1v)).reshape(h.shape)
        x = h + mlp_out  # a parallel block's h is x + Attn(norm_in(x)) too
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
