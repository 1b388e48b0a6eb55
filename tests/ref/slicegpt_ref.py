#!/usr/bin/python3
"""tests/ref/slicegpt_ref.py — an independent float64 numpy reference of
SliceGPT (docs/algorithm.md §3–§6) for every family of tests/ref/model_ref.py, on top of
its forward passes.

API:
    slice_model(config_or_cfg, W, calib_win, sparsity, round_to=8,
                act_dtype=np.float64, batch=16, embed_scale_dtype=None, signals=False) -> result
        W: dense HF tensors {name: float64}; calib_win (n, T) token windows
        (positions restart at 0 in each). act_dtype=np.float32 runs the layer
        math (not the PCA, not the rotations) in float32, to mimic an fp32
        implementation. result is a dict:
          tensors     {HF name: float64 ndarray}: the sliced model, keyed by HF
                      tensor name, in the format model_ref's forward reads (see
                      "Output tensors" below). A C-vs-numpy test compares by name.
          eigenvalues {"embed": w, "layers": [{"attn": w, "mlp": w}]} (sequential)
                      or [{"block": w}] (parallel); those of H + δI, descending.
          bases       same layout, the full D×D Q (columns = eigenvectors).
          widths      {"embed": d, "layers": [[d_in, d_mid, d_out]]} (sequential)
                      or [[d_in, d_out]] (parallel).
          d, family, parallel
          signals     (signals=True) [X₀·Q[:, :d], then each layer's output Y·Qn[:, :d_out]]
                      on the calibration windows: what the sliced model computes there.
    slice_llama(cfg, W, calib_win, sparsity, round_to=8, act_dtype=np.float64, batch=16)
        the same (kept for the Llama tests).
    fuse(arch, W, embed_scale_dtype=None) -> {HF name: float64}: the fused model
        before any rotation (norm weights folded into the readers, β into their
        biases, means baked, head untied, Gemma's sqrt(D) baked); model_ref's
        forward runs it as a sliced model (weightless RMSN) and it computes the
        dense function exactly.
    pca(X (..., D)) -> (eigenvalues of H+δI descending, Q with canonical signs)
    eig_desc(H (D, D)) -> the same from a second moment
    slice_width(D, sparsity, round_to=8) -> d = floor((1-s)·D) - (.. mod round_to)
    write_sliced(out_dir, config, result, dtype="F32")
        config.json (the input config, tie_word_embeddings false, torch_dtype,
        a "slicegpt_ref" block with the widths) + model.safetensors (names sorted).
    Cfg(config), dense_model(cfg, W), sliced_model(cfg, T), model_nll(cfg, model, win, batch=16)
        the generic model wrapper and mean NLL over windows (any family).
    Re-exported from model_ref: read_safetensors, write_safetensors, load_model_dir,
    load_tokens, windows, round_to_dtype, round_tensors, f32_to_bf16_bits,
    bf16_bits_to_f32, rmsn, arch_of, Unsupported.

The algorithm (docs/algorithm.md §3–§6), for every family:
  * PCA: H = Σ xᵀx (uncentered) in float64, δ = 0.01·mean(diag H) on the diagonal,
    eigh, descending, each eigenvector's largest-|.| component positive.
  * RMSNorm families: γ into the readers' columns (q,k,v or qkv by the input norm,
    gate,up or gate_up by the post-attention norm, the head by the final norm);
    Gemma's scale is 1+w and sqrt(hidden_size) (embed_scale_dtype, see model_ref)
    is baked into the embedding rows. q_norm/k_norm (head space) are untouched.
  * LayerNorm families (opt, phi): γ into the readers' columns and β into their
    biases (b += W·β; the head gains lm_head.bias if it had none); the embedding
    and positional tables centred (each row minus its mean); every writer
    (o/out_proj/dense, fc2/down) centred (W minus its mean over output rows,
    b minus mean(b)); then every LayerNorm is the weightless RMSN over D.
  * the head is untied (lm_head.weight always present in the output).
  * X₀ = Emb[tokens] (+ Pos[positions + 2] for OPT: one PCA of the sum), Q = PCA(X₀),
    Emb ← Emb·Q[:, :d], Pos ← Pos·Q[:, :d].
  * sequential layer, input basis Q (width d_in), inputs X (N×D, unrotated):
      readers of the attention W ← W·Q[:, :d_in]; S_attn = Q[:, :d_in]ᵀ;
      M = Xr·S_attn + Attn(RMSN(Xr)) (writer unsliced); Qm = PCA(M);
      S_attn ← S_attn·Qm[:, :d_mid]; W_o ← (Qmᵀ·W_o)[:d_mid]; b_o ← (Qmᵀ·b_o)[:d_mid];
      MLP readers W ← W·Qm[:, :d_mid]; S_mlp = Qm[:, :d_mid]ᵀ;
      Y = Mr·S_mlp + MLP(RMSN(Mr)); Qn = PCA(Y); S_mlp ← S_mlp·Qn[:, :d_out];
      W_down ← (Qnᵀ·W_down)[:d_out], b_down likewise.
  * parallel layer (phi): readers q,k,v,fc1 W ← W·Q[:, :d_in]; S = Q[:, :d_in]ᵀ;
      Y = Xr·S + Attn(RMSN(Xr)) + MLP(RMSN(Xr)); Qn = PCA(Y); S ← S·Qn[:, :d_out];
      writers dense and fc2 W ← (Qnᵀ·W)[:d_out], b ← (Qnᵀ·b)[:d_out].
  * readers' biases never change with a rotation; the last layer has d_out = D;
    the head W ← W·Q (lm_head.bias untouched by the rotation).
  * widths: d = floor((1−s)·D), d −= d mod round_to, uniform.

Output tensors (result["tensors"]), with <layer> = "model.layers.N"
("model.decoder.layers.N" for OPT):
  the embedding (vocab, d) [and OPT's embed_positions (max_pos+2, d)];
  per layer the readers (rows, d_in or d_mid) with their biases, the writers
  (d_mid or d_out, cols) with their rotated biases, q_norm/k_norm unchanged,
  <layer>.attn_shortcut_Q (d_in, d_mid) and <layer>.mlp_shortcut_Q (d_mid, d_out),
  or for a parallel block <layer>.shortcut_Q (d_in, d_out);
  lm_head.weight (vocab, D) [and lm_head.bias (vocab)]; no norm weights.

CLI:
  slicegpt_ref.py MODEL_DIR --calib calib.npy --nsamples 64 --seqlen 256
                  --sparsity 0.25 --eval eval.npy [--round bf16] [--out OUT_DIR]
prints JSON {dense_nll, sliced_nll, widths, ...}.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_ref as mr  # noqa: E402
from model_ref import (Unsupported, arch_of, bf16_bits_to_f32, f32_to_bf16_bits, load_model_dir,  # noqa: E402,F401
                       load_tokens, read_safetensors, rmsn, round_tensors, round_to_dtype, windows,
                       write_safetensors)


# ----------------------------------------------------------------------------
# generic model wrapper (any family)
# ----------------------------------------------------------------------------

class Cfg:
    """config.json, parsed by model_ref.Arch; the old Llama field names kept."""

    def __init__(self, config):
        self.config = config
        self.arch = mr.Arch(config)
        a = self.arch
        self.D, self.L, self.H, self.KV, self.hd, self.F = a.D, a.L, a.H, a.KV, a.hd, a.F
        self.vocab, self.eps, self.tied = a.vocab, a.eps, a.tied
        self.theta = float(config.get("rope_theta", 10000.0))


def _cfg(c):
    if isinstance(c, Cfg):
        return c
    if isinstance(c, mr.Arch):
        return Cfg(c.config)
    return Cfg(c)


def dense_model(cfg, W):
    cfg = _cfg(cfg)
    return {"config": cfg.config, "arch": cfg.arch, "tensors": W}


def sliced_model(cfg, T):
    cfg = _cfg(cfg)
    return {"config": cfg.config, "arch": cfg.arch, "tensors": T}


def model_nll(cfg, model, win, batch=16):
    """Mean NLL of the windows win (n, T) (each predicts its tokens 1..T-1)."""
    n, T = win.shape
    total = 0.0
    for b0 in range(0, n, batch):
        tok = win[b0:b0 + batch]
        total += mr.nll_sum(mr.forward_logits(model, tok), tok)
    return total / (n * (T - 1))


# ----------------------------------------------------------------------------
# SliceGPT (docs/algorithm.md §5)
# ----------------------------------------------------------------------------

def slice_width(D, sparsity, round_to=8):
    d = int(math.floor((1.0 - sparsity) * D))
    d -= d % round_to
    if d <= 0:
        raise ValueError("sparsity %g leaves no width (D=%d, round_to=%d)" % (sparsity, D, round_to))
    return d


def eig_desc(H):
    """A second moment H (D, D) -> (eigenvalues of H+δI descending, δ =
    0.01·mean(diag H); Q with each column's largest-|.| component positive)."""
    H = 0.5 * (H + H.T)
    delta = 0.01 * float(np.mean(np.diag(H)))
    H[np.diag_indices_from(H)] += delta
    w, V = np.linalg.eigh(H)
    order = np.argsort(-w, kind="stable")
    w = w[order]
    V = V[:, order]
    i = np.argmax(np.abs(V), axis=0)
    sgn = np.where(V[i, np.arange(V.shape[1])] < 0, -1.0, 1.0)
    return w, V * sgn


def pca(X):
    """X (..., D) -> (eigenvalues of H+δI descending, Q with canonical signs)."""
    X2 = np.asarray(X, dtype=np.float64).reshape(-1, X.shape[-1])
    return eig_desc(X2.T @ X2)


def _norm_readers(arch):
    """[(norm prefix, [reader prefixes])] for every norm; "lm_head" is the head."""
    out = []
    for lay in arch.layers:
        if arch.parallel:
            out.append((lay["in_norm"], lay["attn_readers"] + lay["mlp_readers"]))
        else:
            out.append((lay["in_norm"], lay["attn_readers"]))
            out.append((lay["post_norm"], lay["mlp_readers"]))
    out.append((arch.final_norm, ["lm_head"]))
    return out


def fuse(arch, W, embed_scale_dtype=None):
    """The dense model W with its norms folded away (see the module doc)."""
    F = {k: np.asarray(v, dtype=np.float64) for k, v in W.items()}
    if arch.tied or "lm_head.weight" not in W:
        if not arch.tied:
            raise ValueError("%s: untied config without lm_head.weight" % arch.family)
        F["lm_head.weight"] = F[arch.embed].copy()
    ln = arch.norm == "ln"
    for nname, readers in _norm_readers(arch):
        w = F.pop(nname + ".weight")
        beta = F.pop(nname + ".bias", None)
        gamma = 1.0 + w if arch.norm == "rms1p" else w
        for r in readers:
            W0 = F[r + ".weight"]
            if ln and beta is not None:
                b = F.get(r + ".bias")
                F[r + ".bias"] = (b if b is not None else 0.0) + W0 @ beta
            F[r + ".weight"] = W0 * gamma[None, :]
    if arch.family == "gemma":
        F[arch.embed] = F[arch.embed] * mr.embed_scale(arch, embed_scale_dtype)
    if ln:
        F[arch.embed] = F[arch.embed] - F[arch.embed].mean(axis=1, keepdims=True)
        if arch.pos is not None:
            F[arch.pos] = F[arch.pos] - F[arch.pos].mean(axis=1, keepdims=True)
        for lay in arch.layers:
            for wr in (lay["attn_writer"], lay["mlp_writer"]):
                F[wr + ".weight"] = F[wr + ".weight"] - F[wr + ".weight"].mean(axis=0, keepdims=True)
                if wr + ".bias" in F:
                    F[wr + ".bias"] = F[wr + ".bias"] - F[wr + ".bias"].mean()
    return F


def _rot_cols(F, out, names, Qd):
    """Readers: W ← W·Qd; biases copied unchanged."""
    for r in names:
        out[r + ".weight"] = F[r + ".weight"] @ Qd
        if r + ".bias" in F:
            out[r + ".bias"] = F[r + ".bias"]


def _rot_rows(F, out, name, Q, d):
    """Writers: W ← (Qᵀ·W)[:d], b ← (Qᵀ·b)[:d]."""
    out[name + ".weight"] = (Q.T @ F[name + ".weight"])[:d, :]
    if name + ".bias" in F:
        out[name + ".bias"] = (Q.T @ F[name + ".bias"])[:d]


def _cast(t, names, ad):
    return {k: v.astype(ad) for k, v in t.items()} if ad != np.float64 else t


def slice_model(config, W, calib_win, sparsity, round_to=8, act_dtype=np.float64, batch=16,
                embed_scale_dtype=None, signals=False):
    """SliceGPT on dense HF weights W (float64); see the module doc. With
    signals=True the result also holds "signals": [X₀·Q[:, :d]] + [Y_l·Qn[:, :d_out]
    per layer], the calibration activations of the sliced model as it is built."""
    cfg = _cfg(config)
    arch = cfg.arch
    D, L = arch.D, arch.L
    d = slice_width(D, sparsity, round_to)
    calib_win = np.asarray(calib_win, dtype=np.int64)
    n, T = calib_win.shape
    ad = act_dtype
    F = fuse(arch, W, embed_scale_dtype)

    out = {}
    eig = {"layers": []}
    bases = {"layers": []}
    widths = {"layers": []}

    # Step 1: the embedding (and OPT's positions, added to it).
    X = mr.embed(arch, F, calib_win, sliced=True)  # (n, T, D), unrotated
    if ad != np.float64:
        X = X.astype(ad)
    w0, Q = pca(X)
    eig["embed"], bases["embed"], widths["embed"] = w0, Q, d
    out[arch.embed] = F[arch.embed] @ Q[:, :d]
    if arch.pos is not None:
        out[arch.pos] = F[arch.pos] @ Q[:, :d]
    d_in = d
    sig = [X @ Q[:, :d]] if signals else None

    for l in range(L):
        lay = arch.layers[l]
        d_mid = d
        d_out = D if l == L - 1 else d
        Qi = Q[:, :d_in]
        cur = {}  # this layer's working tensors
        for k in ("q_norm", "k_norm"):
            if lay[k]:
                for s in (".weight", ".bias"):
                    if lay[k] + s in F:
                        out[lay[k] + s] = cur[lay[k] + s] = F[lay[k] + s]
        S = Qi.T  # (d_in, D)
        Qia, Sa = Qi.astype(ad), S.astype(ad)

        if arch.parallel:
            _rot_cols(F, cur, lay["attn_readers"] + lay["mlp_readers"], Qi)
            for wr in (lay["attn_writer"], lay["mlp_writer"]):
                for s in (".weight", ".bias"):
                    if wr + s in F:
                        cur[wr + s] = F[wr + s]
            ca = _cast(cur, None, ad)
            Y = np.empty((n, T, D), dtype=ad)
            for b0 in range(0, n, batch):
                xr = X[b0:b0 + batch] @ Qia
                xn = rmsn(xr, D, arch.eps)
                Y[b0:b0 + batch] = xr @ Sa + mr.attn(arch, ca, lay, xn, l) + mr.mlp(arch, ca, lay, xn)
            wn, Qn = pca(Y)
            S = S @ Qn[:, :d_out]  # (d_in, d_out)
            _rot_rows(F, cur, lay["attn_writer"], Qn, d_out)
            _rot_rows(F, cur, lay["mlp_writer"], Qn, d_out)
            cur[lay["shortcut"]] = S
            eig["layers"].append({"block": wn})
            bases["layers"].append({"block": Qn})
            widths["layers"].append([d_in, d_out])
        else:
            # 2.1 attention readers in the input basis; 2.2 M with W_o unsliced
            _rot_cols(F, cur, lay["attn_readers"], Qi)
            wo = lay["attn_writer"]
            for s in (".weight", ".bias"):
                if wo + s in F:
                    cur[wo + s] = F[wo + s]
            ca = _cast(cur, None, ad)
            M = np.empty((n, T, D), dtype=ad)
            for b0 in range(0, n, batch):
                xr = X[b0:b0 + batch] @ Qia
                M[b0:b0 + batch] = xr @ Sa + mr.attn(arch, ca, lay, rmsn(xr, D, arch.eps), l)
            # 2.3
            wm, Qm = pca(M)
            Qmd = Qm[:, :d_mid]
            S_attn = S @ Qmd  # (d_in, d_mid)
            _rot_rows(F, cur, wo, Qm, d_mid)
            S_mlp = Qmd.T  # (d_mid, D)
            _rot_cols(F, cur, lay["mlp_readers"], Qmd)
            wd = lay["mlp_writer"]
            for s in (".weight", ".bias"):
                if wd + s in F:
                    cur[wd + s] = F[wd + s]
            # 2.4 Y = Mr·S_mlp + MLP(RMSN(Mr)), W_down unsliced
            ca = _cast(cur, None, ad)
            Qmda, Sma = Qmd.astype(ad), S_mlp.astype(ad)
            Y = np.empty((n, T, D), dtype=ad)
            for b0 in range(0, n, batch):
                mrot = M[b0:b0 + batch] @ Qmda
                Y[b0:b0 + batch] = mrot @ Sma + mr.mlp(arch, ca, lay, rmsn(mrot, D, arch.eps))
            # 2.5
            wn, Qn = pca(Y)
            S_mlp = S_mlp @ Qn[:, :d_out]  # (d_mid, d_out)
            _rot_rows(F, cur, wd, Qn, d_out)
            cur[lay["attn_shortcut"]] = S_attn
            cur[lay["mlp_shortcut"]] = S_mlp
            eig["layers"].append({"attn": wm, "mlp": wn})
            bases["layers"].append({"attn": Qm, "mlp": Qn})
            widths["layers"].append([d_in, d_mid, d_out])
        out.update(cur)
        X, Q, d_in = Y, Qn, d_out
        if signals:
            sig.append(Y @ Qn[:, :d_out])

    # Step 3: the head, in the last basis (d_out = D).
    out["lm_head.weight"] = F["lm_head.weight"] @ Q
    if "lm_head.bias" in F:
        out["lm_head.bias"] = F["lm_head.bias"]
    res = dict(tensors=out, eigenvalues=eig, bases=bases, widths=widths, d=d, family=arch.family,
               parallel=arch.parallel)
    if signals:
        res["signals"] = sig
    return res


def slice_llama(cfg, W, calib_win, sparsity, round_to=8, act_dtype=np.float64, batch=16):
    return slice_model(cfg, W, calib_win, sparsity, round_to, act_dtype, batch)


def write_sliced(out_dir, config, result, dtype="F32"):
    os.makedirs(out_dir, exist_ok=True)
    cfg = dict(config)
    cfg["tie_word_embeddings"] = False
    dt = mr._st_dtype(dtype)
    cfg["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}[dt]
    cfg["slicegpt_ref"] = {"widths": result["widths"]}
    T = result["tensors"]
    write_safetensors(os.path.join(out_dir, "model.safetensors"), {k: T[k] for k in sorted(T)}, dt)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def _eig_json(e):
    return {"embed": e["embed"].tolist(),
            "layers": [{k: v.tolist() for k, v in x.items()} for x in e["layers"]]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--sparsity", type=float, default=0.25)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--eval", dest="eval_tokens")
    ap.add_argument("--eval-seqlen", type=int, default=None)
    ap.add_argument("--round", default=None, help="round the sliced weights to this dtype (bf16|f16|f32) before eval")
    ap.add_argument("--out", default=None)
    ap.add_argument("--eigenvalues", action="store_true", help="include the eigenvalues in the JSON")
    a = ap.parse_args(argv)

    config, W = load_model_dir(a.model_dir)
    try:
        cfg = Cfg(config)
    except Unsupported as e:
        print("slicegpt_ref: %s: %s" % (a.model_dir, e), file=sys.stderr)
        return 65
    calib = windows(load_tokens(a.calib), a.seqlen, a.nsamples)
    res = slice_model(cfg, W, calib, a.sparsity, a.round_to)
    tens = res["tensors"]
    if a.round:
        tens = round_tensors(tens, a.round)
    rep = {"family": res["family"], "sparsity": a.sparsity, "d": res["d"], "widths": res["widths"],
           "round": a.round}
    if a.eval_tokens:
        ev = windows(load_tokens(a.eval_tokens), a.eval_seqlen or a.seqlen)
        rep["eval_windows"] = int(ev.shape[0])
        rep["dense_nll"] = model_nll(cfg, dense_model(cfg, W), ev)
        rep["sliced_nll"] = model_nll(cfg, sliced_model(cfg, tens), ev)
    if a.eigenvalues:
        rep["eigenvalues"] = _eig_json(res["eigenvalues"])
    if a.out:
        write_sliced(a.out, config, dict(res, tensors=tens), "BF16" if (a.round or "").lower() == "bf16" else "F32")
    json.dump(rep, sys.stdout, indent=None)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
