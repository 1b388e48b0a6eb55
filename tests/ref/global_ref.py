#!/usr/bin/python3
"""tests/ref/global_ref.py — an independent float64 numpy reference of
slicepipe's single-basis ("global") slicing (docs/algorithm.md §10), written from the
definition, on top of tests/ref/model_ref.py (forward passes) and
tests/ref/slicegpt_ref.py (fuse, pca conventions, slice_width). Not from the C.

The basis:
  * run the DENSE model (HF semantics) on the calibration windows, each window
    its own sequence with positions from 0;
  * residual positions (2L+1): X₀ = the embedding output (× Gemma's sqrt(D)),
    and per layer l: M_l = X + Attn(norm(X)), Y_l = M_l + MLP(norm(M_l))
    (Y_l is layer l+1's X);
  * H_p = Σ_tokens x xᵀ (float64, uncentered) at each position p;
  * G = Σ_p H_p / tr(H_p) ("trace") or Σ_p H_p ("raw");
  * Q = eigh(G + δI), δ = 0.01·mean(diag G), descending, each eigenvector's
    largest-|.| component positive;
  * d = slice_width(D, sparsity, round_to) everywhere (the head too).

The sliced model is the STOCK architecture at width d:
  * γ fused into the readers (slicegpt_ref.fuse; Gemma's 1+w, sqrt(D) baked
    into the embedding rows, the head untied);
  * readers W·Q[:, :d] (biases unchanged), writers (Qᵀ·W)[:d, :] with Qᵀb[:d],
    q_norm/k_norm unchanged, embedding Emb·scale·Q[:, :d], head
    W_head·diag(γ_final)·Q[:, :d];
  * every norm weight sqrt(D/d) (Gemma: sqrt(D/d) − 1), rms_norm_eps·D/d, so a
    stock RMSNorm over d computes the weightless RMSN over D;
  * Gemma's embedding ÷ sqrt(d) (rounded to the output dtype as HF rounds it),
    because a stock Gemma multiplies by sqrt(hidden_size) = sqrt(d);
  * config.json: hidden_size d, head_dim explicit, tie_word_embeddings false.
LayerNorm families (opt, phi) are refused (Unsupported): after mean-baking
they need RMSN, which stock OPT / Phi-2 do not have.

API:
  residual_moments(model, calib_win, batch=16, embed_scale_dtype=None,
                   lift=None) -> (2L+1, D', D') float64
      H_p of every residual position of `model` (model_ref's dict or a
      directory), run with model_ref's forward (dense if the model has norm
      weights). lift (D×d) maps a width-d model's signals back to D (x·liftᵀ).
  basis_from_moments(Hs, weighting="trace") -> (eigenvalues of G+δI, Q, G)
  global_basis(config, W, calib_win, weighting="trace", batch=16,
               embed_scale_dtype=None) -> (eigenvalues, Q, G, Hs)
  slice_global(config, W, Q, d, in_scale_dtype=None, out_scale_dtype=None)
      -> {HF name: float64}: the stock model's tensors
  stock_config(config, d, dtype="F32") -> config.json of the stock model
  expected_stock_shapes(config) -> {name: shape}: what HF's stock class of
      config builds (from config.json alone)
  stock_nll(model_or_dir, win, embed_scale_dtype=None, batch=16) -> mean NLL by
      model_ref's DENSE forward (the output must read as a stock model)
  progressive_basis(config, W, calib_win, Q, d, weighting, batch=16)
      -> (eigenvalues, Q2, G2): G re-measured on the model sliced with Q (see
      bench/global_quality_ref.py for the two readings of "lifted").
  write_stock(out_dir, config, tensors, d, dtype="F32")

CLI: global_ref.py MODEL_DIR --calib calib.npy --nsamples N --seqlen T
     --sparsity S [--weighting trace|raw] [--round-to 8] [--eval eval.npy
     --eval-windows N] [--out DIR]   prints JSON {d, dense_nll, sliced_nll}.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_ref as mr  # noqa: E402
import slicegpt_ref as sg  # noqa: E402
from model_ref import Unsupported  # noqa: E402,F401

WEIGHTINGS = ("trace", "raw")


def _model(m):
    if isinstance(m, str):
        m = mr.read_model(m)
    return dict(m, arch=m.get("arch") or mr.Arch(m["config"]))


def _require_rms(arch):
    if arch.norm == "ln":
        raise Unsupported("%s: LayerNorm family: a single-basis stock output needs RMSNorm "
                          "(after mean-baking a LayerNorm model needs RMSN, which stock %s does not have)"
                          % (arch.family, arch.family))


# ---------------------------------------------------------------- the basis

def residual_moments(model, calib_win, batch=16, embed_scale_dtype=None, lift=None):
    """Hs[p] = Σ x xᵀ (float64) over every calibration token at residual
    position p = 0 (embedding output), 2l+1 (M_l), 2l+2 (Y_l).

    model runs with model_ref's pieces: a model with norm weights is the dense
    HF model, one without is the weightless-RMSN (fused) model. lift (D×d):
    the model is width d and its signals are lifted to D as x·liftᵀ."""
    m = _model(model)
    arch, t = m["arch"], m["tensors"]
    win = np.asarray(calib_win, dtype=np.int64)
    P = 2 * arch.L + 1
    Hs = None

    def acc(p, x):
        nonlocal Hs
        x2 = x.reshape(-1, x.shape[-1])
        if lift is not None:
            x2 = x2 @ lift.T
        if Hs is None:
            Hs = np.zeros((P, x2.shape[1], x2.shape[1]))
        Hs[p] += x2.T @ x2

    for b0 in range(0, win.shape[0], batch):
        tok = win[b0:b0 + batch]
        x = mr.embed(arch, t, tok, embed_scale_dtype=embed_scale_dtype)
        acc(0, x)
        for i, lay in enumerate(arch.layers):
            if arch.parallel:
                raise Unsupported("%s: parallel blocks have no M position" % arch.family)
            h = x + mr.attn(arch, t, lay, mr.norm(arch, t, lay["in_norm"], x), i)
            acc(2 * i + 1, h)
            x = h + mr.mlp(arch, t, lay, mr.norm(arch, t, lay["post_norm"], h))
            acc(2 * i + 2, x)
    return 0.5 * (Hs + Hs.transpose(0, 2, 1))


def combine(Hs, weighting="trace"):
    if weighting not in WEIGHTINGS:
        raise ValueError("weighting %r (trace or raw)" % (weighting,))
    if weighting == "raw":
        return Hs.sum(axis=0)
    return sum(H / np.trace(H) for H in Hs)


def basis_from_moments(Hs, weighting="trace"):
    G = combine(Hs, weighting)
    w, Q = sg.eig_desc(G)
    return w, Q, G


def _scale_dtype(config, default="F32"):
    return mr.TORCH_TO_ST.get(config.get("torch_dtype") or "", default)


def global_basis(config, W, calib_win, weighting="trace", batch=16, embed_scale_dtype=None):
    """The basis of the DENSE model: (eigenvalues of G+δI, Q, G, Hs)."""
    arch = mr.Arch(config)
    _require_rms(arch)
    Hs = residual_moments({"config": config, "arch": arch, "tensors": W}, calib_win, batch, embed_scale_dtype)
    w, Q, G = basis_from_moments(Hs, weighting)
    return w, Q, G, Hs


# ---------------------------------------------------------------- the stock model

def norm_weight(arch, D, d):
    s = math.sqrt(D / d)
    return s - 1.0 if arch.norm == "rms1p" else s


def slice_global(config, W, Q, d, in_scale_dtype=None, out_scale_dtype=None):
    """The stock model's tensors at width d in the basis Q (D×D).
    in_scale_dtype: the dtype sqrt(D) is rounded to (the input's); out: that of
    sqrt(d) (the output's), Gemma only."""
    arch = mr.Arch(config)
    _require_rms(arch)
    D = arch.D
    Qd = np.asarray(Q, dtype=np.float64)[:, :d]
    F = sg.fuse(arch, W, in_scale_dtype)  # γ in the readers; Gemma's sqrt(D) in the rows; head untied
    out = {}
    emb = F[arch.embed] @ Qd
    if arch.family == "gemma":
        emb = emb / float(mr.round_to_dtype(math.sqrt(d), out_scale_dtype or "F64"))
    out[arch.embed] = emb
    nw = np.full(d, norm_weight(arch, D, d))
    used = {arch.embed, "lm_head.weight", arch.final_norm + ".weight"}
    for lay in arch.layers:
        out[lay["in_norm"] + ".weight"] = nw.copy()
        out[lay["post_norm"] + ".weight"] = nw.copy()
        used |= {lay["in_norm"] + ".weight", lay["post_norm"] + ".weight"}
        for r in lay["attn_readers"] + lay["mlp_readers"]:
            out[r + ".weight"] = F[r + ".weight"] @ Qd
            used.add(r + ".weight")
            if r + ".bias" in F:
                out[r + ".bias"] = F[r + ".bias"].copy()
                used.add(r + ".bias")
        for wr in (lay["attn_writer"], lay["mlp_writer"]):
            out[wr + ".weight"] = (Qd.T @ F[wr + ".weight"])
            used.add(wr + ".weight")
            if wr + ".bias" in F:
                out[wr + ".bias"] = Qd.T @ F[wr + ".bias"]
                used.add(wr + ".bias")
        for k in ("q_norm", "k_norm"):
            if lay[k]:
                for s in (".weight", ".bias"):
                    if lay[k] + s in F:
                        out[lay[k] + s] = F[lay[k] + s].copy()
                        used.add(lay[k] + s)
    out[arch.final_norm + ".weight"] = nw.copy()
    out["lm_head.weight"] = F["lm_head.weight"] @ Qd
    if "lm_head.bias" in F:
        out["lm_head.bias"] = F["lm_head.bias"].copy()
        used.add("lm_head.bias")
    left = sorted(set(W) - used)
    if left:
        raise Unsupported("%s: tensors with no role in the global slicing: %s" % (arch.family, left[:6]))
    return out


def stock_config(config, d, dtype="F32"):
    arch = mr.Arch(config)
    _require_rms(arch)
    c = dict(config)
    c["hidden_size"] = d
    c["head_dim"] = arch.hd
    c["rms_norm_eps"] = arch.eps * arch.D / d
    c["tie_word_embeddings"] = False
    c["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}[mr._st_dtype(dtype)]
    return c


def expected_stock_shapes(config):
    """{tensor name: shape} of the stock HF class of config.json (untied head),
    from the config alone: what `from_pretrained` would expect."""
    a = mr.Arch(config)
    _require_rms(a)
    c = config
    D, F, H, KV, hd, V = a.D, a.F, a.H, a.KV, a.hd, a.vocab
    s = {a.embed: (V, D), a.final_norm + ".weight": (D,)}
    if not a.tied:
        s["lm_head.weight"] = (V, D)
    abias = a.family == "qwen2" or (a.family in ("llama", "qwen3") and c.get("attention_bias"))
    mbias = a.family == "llama" and c.get("mlp_bias")
    for lay in a.layers:
        s[lay["in_norm"] + ".weight"] = (D,)
        s[lay["post_norm"] + ".weight"] = (D,)
        if "qkv" in lay:
            s[lay["qkv"] + ".weight"] = ((H + 2 * KV) * hd, D)
        else:
            for n, rows in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
                s[lay[n] + ".weight"] = (rows, D)
                if abias:
                    s[lay[n] + ".bias"] = (rows,)
        s[lay["o"] + ".weight"] = (D, H * hd)
        if a.family in ("llama", "qwen3") and c.get("attention_bias"):
            s[lay["o"] + ".bias"] = (D,)
        if "gate_up" in lay:
            s[lay["gate_up"] + ".weight"] = (2 * F, D)
        else:
            s[lay["gate"] + ".weight"] = (F, D)
            s[lay["up"] + ".weight"] = (F, D)
            if mbias:
                s[lay["gate"] + ".bias"] = (F,)
                s[lay["up"] + ".bias"] = (F,)
        s[lay["down"] + ".weight"] = (D, F)
        if mbias:
            s[lay["down"] + ".bias"] = (D,)
        if lay["q_norm"]:
            s[lay["q_norm"] + ".weight"] = (hd,)
            s[lay["k_norm"] + ".weight"] = (hd,)
    return s


def stock_nll(model, win, embed_scale_dtype=None, batch=16):
    """Mean NLL of the windows `win` (n, T) by model_ref's forward; the model
    must carry every norm weight (it then runs as a dense, stock model)."""
    m = _model(model)
    if mr.is_sliced(m["arch"], m["tensors"]):
        raise ValueError("not a stock model: %s has no weight" % m["arch"].final_norm)
    win = np.asarray(win, dtype=np.int64)
    tot = 0.0
    for b0 in range(0, win.shape[0], batch):
        tk = win[b0:b0 + batch]
        tot += mr.nll_sum(mr.forward_logits(m, tk, embed_scale_dtype=embed_scale_dtype), tk)
    return tot / (win.shape[0] * (win.shape[1] - 1))


def write_stock(out_dir, config, tensors, d, dtype="F32"):
    os.makedirs(out_dir, exist_ok=True)
    mr.write_safetensors(os.path.join(out_dir, "model.safetensors"),
                         {k: tensors[k] for k in sorted(tensors)}, mr._st_dtype(dtype))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(stock_config(config, d, dtype), f, indent=2)


def slice_model_global(config, W, calib_win, sparsity, round_to=8, weighting="trace", batch=16,
                       in_scale_dtype=None, out_scale_dtype=None):
    """The whole thing: {d, Q, eigenvalues, tensors, config}."""
    arch = mr.Arch(config)
    _require_rms(arch)
    d = sg.slice_width(arch.D, sparsity, round_to)
    w, Q, G, Hs = global_basis(config, W, calib_win, weighting, batch, in_scale_dtype)
    T = slice_global(config, W, Q, d, in_scale_dtype, out_scale_dtype)
    return {"d": d, "Q": Q, "eigenvalues": w, "G": G, "moments": Hs, "tensors": T,
            "config": stock_config(config, d)}


# ---------------------------------------------------------------- progressive

def progressive_basis(config, W, calib_win, Q, d, weighting="trace", batch=16, in_scale_dtype=None,
                      mode="writer-full"):
    """G re-measured on the model sliced with Q (width d), Q recomputed.

    mode "lifted": the stock model's own residual signals x (width d), lifted
    as x·Q[:, :d]ᵀ. Their span is span(Q[:, :d]), so the new Q[:, :d] spans
    the same subspace and the sliced model computes the same function (a
    rotation within the kept coordinates): a no-op, kept to show it.
    mode "writer-full": the per-layer SliceGPT reading (docs/algorithm.md §5): every
    block READS the sliced signal (its readers are the sliced ones), but the
    position's signal is measured before its writer is sliced — X₀ = the full
    embedding, M_l = lift(x) + Attn(·)·W_oᵀ with W_o unsliced (D rows), Y_l =
    lift(h) + MLP(·)·W_downᵀ with W_down unsliced — so the signals can leave
    the old subspace and the slicing error of earlier blocks is seen."""
    arch = mr.Arch(config)
    Qd = Q[:, :d]
    D = arch.D
    if mode == "lifted":
        T = slice_global(config, W, Q, d, in_scale_dtype, in_scale_dtype)
        sc = stock_config(config, d)
        Hs = residual_moments({"config": sc, "tensors": T}, calib_win, batch, in_scale_dtype, lift=Qd)
        return basis_from_moments(Hs, weighting)
    if mode != "writer-full":
        raise ValueError(mode)
    # The fused dense model in D (weightless RMSN over D), readers sliced
    # through the projection P = Qd·Qdᵀ (x·Qd·(Qdᵀ·W) = the sliced reader on
    # the sliced signal), writers full.
    F = sg.fuse(arch, W, in_scale_dtype)
    win = np.asarray(calib_win, dtype=np.int64)
    P = 2 * arch.L + 1
    Hs = np.zeros((P, D, D))
    proj = Qd @ Qd.T

    def acc(p, x):
        x2 = x.reshape(-1, D)
        Hs[p] += x2.T @ x2

    for b0 in range(0, win.shape[0], batch):
        tok = win[b0:b0 + batch]
        x = mr.embed(arch, F, tok, sliced=True)  # the full embedding (sqrt(D) baked)
        acc(0, x)
        x = x @ proj  # what the sliced model carries
        for i, lay in enumerate(arch.layers):
            h = x + mr.attn(arch, F, lay, mr.rmsn(x, D, arch.eps), i)
            acc(2 * i + 1, h)
            h = h @ proj
            y = h + mr.mlp(arch, F, lay, mr.rmsn(h, D, arch.eps))
            acc(2 * i + 2, y)
            x = y @ proj
    return basis_from_moments(0.5 * (Hs + Hs.transpose(0, 2, 1)), weighting)


# ---------------------------------------------------------------- CLI

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--sparsity", type=float, default=0.25)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--weighting", default="trace", choices=WEIGHTINGS)
    ap.add_argument("--eval", dest="eval_tokens")
    ap.add_argument("--eval-seqlen", type=int)
    ap.add_argument("--eval-windows", type=int)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    config, W = mr.load_model_dir(a.model_dir)
    try:
        mr.Arch(config)
        _require_rms(mr.Arch(config))
    except Unsupported as e:
        print("global_ref: %s: %s" % (a.model_dir, e), file=sys.stderr)
        return 64
    sdt = _scale_dtype(config)
    calib = mr.windows(mr.load_tokens(a.calib), a.seqlen, a.nsamples)
    r = slice_model_global(config, W, calib, a.sparsity, a.round_to, a.weighting, in_scale_dtype=sdt,
                           out_scale_dtype="F32")
    rep = {"d": r["d"], "weighting": a.weighting, "sparsity": a.sparsity}
    if a.eval_tokens:
        ev = mr.windows(mr.load_tokens(a.eval_tokens), a.eval_seqlen or a.seqlen, a.eval_windows)
        rep["eval_windows"] = int(ev.shape[0])
        rep["dense_nll"] = stock_nll({"config": config, "tensors": W}, ev, sdt)
        T = mr.round_tensors(r["tensors"], "F32")
        rep["sliced_nll"] = stock_nll({"config": r["config"], "tensors": T}, ev, "F32")
    if a.out:
        write_stock(a.out, config, r["tensors"], r["d"], "F32")
    json.dump(rep, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
