#!/usr/bin/python3
"""slicegpt_ref.py — an independent float64 numpy reference of DESIGN.md §1.

Self-contained (numpy only): a safetensors reader/writer (F32/F16/BF16/F64),
a float64 Llama forward pass (RMSNorm, rotate-half RoPE, GQA, SwiGLU,
tied/untied head) and SliceGPT with the exact conventions of DESIGN.md §1:

  * RMSNorm fusion: q,k,v columns · input γ; gate,up · post-attn γ; head · final γ;
    the head is untied from the embedding. RMSN(x) = x / sqrt(sum(x²)/D + eps)
    with D the ORIGINAL width, forever.
  * PCA: H = Σ xᵀx (uncentered) in float64 over every calibration token,
    δ = 0.01·mean(diag H) added to the diagonal, eigh, descending order, each
    eigenvector's sign chosen so that its largest-|.| component is positive.
  * widths: d = floor((1−s)·D), d −= d mod round_to, uniform; the last layer's
    d_out = D (the head is not sliced).
  * calibration: the first nsamples consecutive, non-overlapping windows of
    seqlen tokens; RoPE positions restart at 0 in each window.
  * layer by layer (steps 1, 2.1–2.5, 3), the attention runs once per layer
    (Mr = M·Qm[:, :d_mid]).

Reported eigenvalues are those of the decomposed matrix H + δI, descending.

HF conventions: W[out, in], y = x·Wᵀ. Rows of X are tokens.

CLI:
  slicegpt_ref.py MODEL_DIR --calib calib.npy --nsamples 64 --seqlen 256
                  --sparsity 0.25 --eval eval.npy [--round bf16] [--out OUT_DIR]
prints JSON {dense_nll, sliced_nll, widths, ...}.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

# ----------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------

_ST_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"),
              "BF16": np.dtype("<u2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8")}


def bf16_bits_to_f32(u16):
    return (np.asarray(u16, dtype=np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(a):
    """Round-to-nearest-even float32 -> bfloat16 bits (uint16). NaN stays NaN."""
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    u = a.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def round_to_dtype(a, dtype):
    """Value of `a` (float64) after storing it in `dtype`, returned as float64."""
    dtype = dtype.lower()
    if dtype in ("f64", "float64", "none"):
        return np.asarray(a, dtype=np.float64)
    if dtype in ("f32", "float32"):
        return np.asarray(a, dtype=np.float32).astype(np.float64)
    if dtype in ("f16", "float16"):
        return np.asarray(a, dtype=np.float16).astype(np.float64)
    if dtype in ("bf16", "bfloat16"):
        return bf16_bits_to_f32(f32_to_bf16_bits(a)).astype(np.float64)
    raise ValueError("unknown dtype %r" % dtype)


def read_safetensors(path):
    """Returns {name: float64 ndarray} (integer tensors keep their type)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _ST_DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        raw = np.frombuffer(buf, dtype=dt, count=(e - b) // dt.itemsize, offset=base + b)
        if info["dtype"] == "BF16":
            arr = bf16_bits_to_f32(raw).astype(np.float64)
        elif info["dtype"] in ("I32", "I64"):
            arr = raw.copy()
        else:
            arr = raw.astype(np.float64)
        out[name] = arr.reshape(shape)
    return out


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """Writes {name: array} with every tensor stored as `dtype` (F32/F16/BF16/F64)."""
    dtype = dtype.upper()
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        if dtype == "BF16":
            data = f32_to_bf16_bits(a).astype("<u2").tobytes()
        elif dtype in ("F32", "F16", "F64"):
            data = np.ascontiguousarray(a, dtype=_ST_DTYPES[dtype]).tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_model_dir(model_dir):
    """Returns (config dict, {name: float64 array}); single file or index + shards."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        for shard in sorted(set(wm.values())):
            tensors.update(read_safetensors(os.path.join(model_dir, shard)))
    else:
        tensors = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return config, tensors


def load_tokens(path):
    a = np.load(path)
    return np.asarray(a).reshape(-1).astype(np.int64)


def windows(tokens, seqlen, n=None):
    """The first n (default: all) non-overlapping consecutive windows, (n, seqlen)."""
    avail = len(tokens) // seqlen
    if n is None:
        n = avail
    if n > avail:
        raise ValueError("need %d windows of %d tokens, stream has %d tokens" % (n, seqlen, len(tokens)))
    return tokens[: n * seqlen].reshape(n, seqlen)


# ----------------------------------------------------------------------------
# Llama forward (float64 by default)
# ----------------------------------------------------------------------------

class Cfg:
    def __init__(self, config):
        self.D = int(config["hidden_size"])
        self.L = int(config["num_hidden_layers"])
        self.H = int(config["num_attention_heads"])
        self.KV = int(config.get("num_key_value_heads", self.H))
        self.hd = int(config.get("head_dim", self.D // self.H))
        self.F = int(config["intermediate_size"])
        self.vocab = int(config["vocab_size"])
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        self.theta = float(config.get("rope_theta", 10000.0))
        self.tied = bool(config.get("tie_word_embeddings", False))
        rs = config.get("rope_scaling")
        if rs and rs.get("rope_type", rs.get("type")) not in (None, "default"):
            raise NotImplementedError("rope_scaling %r not supported by the reference" % rs)


def rmsn(x, D, eps, gamma=None):
    """x / sqrt(sum(x²)/D + eps) (· γ); D is the ORIGINAL width."""
    ms = np.sum(x * x, axis=-1, keepdims=True) / D
    y = x / np.sqrt(ms + eps)
    if gamma is not None:
        y = y * gamma
    return y


def rope_tables(T, hd, theta, dtype=np.float64):
    inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    fr = np.outer(np.arange(T, dtype=np.float64), inv)
    emb = np.concatenate([fr, fr], axis=-1)
    return np.cos(emb).astype(dtype), np.sin(emb).astype(dtype)


def _rope(x, cos, sin):
    # x (B, h, T, hd), HF rotate-half
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rot * sin


def attention(xn, wq, wk, wv, wo, cfg, cos, sin):
    """xn (B, T, d) already normalized; returns (B, T, rows(wo))."""
    B, T, _ = xn.shape
    H, KV, hd = cfg.H, cfg.KV, cfg.hd
    q = (xn @ wq.T).reshape(B, T, H, hd).transpose(0, 2, 1, 3)
    k = (xn @ wk.T).reshape(B, T, KV, hd).transpose(0, 2, 1, 3)
    v = (xn @ wv.T).reshape(B, T, KV, hd).transpose(0, 2, 1, 3)
    q = _rope(q, cos, sin)
    k = _rope(k, cos, sin)
    rep = H // KV
    if rep > 1:  # HF repeat_kv: head h reads kv head h // rep
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
    s = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(hd)
    mask = np.triu(np.ones((T, T), dtype=bool), 1)
    s = np.where(mask, -np.inf, s)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, H * hd)
    return o @ wo.T


def mlp(xn, wg, wu, wd):
    g = xn @ wg.T
    u = xn @ wu.T
    return ((g / (1.0 + np.exp(-g))) * u) @ wd.T


def nll_sum(logits, tok):
    """Sum of NLL of tok[:, 1:] predicted at positions 0..T-2. logits (B, T, V)."""
    lg = logits[:, :-1, :]
    m = lg.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(lg - m).sum(axis=-1)) + m[..., 0]
    tgt = np.take_along_axis(lg, tok[:, 1:, None], axis=-1)[..., 0]
    return float(np.sum(lse - tgt))


def dense_model(cfg, W):
    """Dense HF weights -> the generic layered model (norm γ, no shortcuts)."""
    emb = W["model.embed_tokens.weight"]
    head = W["lm_head.weight"] if "lm_head.weight" in W else emb
    layers = []
    for l in range(cfg.L):
        p = "model.layers.%d." % l
        layers.append(dict(
            in_norm=W[p + "input_layernorm.weight"], post_norm=W[p + "post_attention_layernorm.weight"],
            wq=W[p + "self_attn.q_proj.weight"], wk=W[p + "self_attn.k_proj.weight"],
            wv=W[p + "self_attn.v_proj.weight"], wo=W[p + "self_attn.o_proj.weight"],
            wg=W[p + "mlp.gate_proj.weight"], wu=W[p + "mlp.up_proj.weight"], wd=W[p + "mlp.down_proj.weight"],
            S_attn=None, S_mlp=None))
    return dict(emb=emb, layers=layers, final_norm=W["model.norm.weight"], head=head)


def sliced_model(cfg, T):
    """Sliced HF-named tensors -> the generic layered model (no γ, shortcuts)."""
    layers = []
    for l in range(cfg.L):
        p = "model.layers.%d." % l
        layers.append(dict(
            in_norm=None, post_norm=None,
            wq=T[p + "self_attn.q_proj.weight"], wk=T[p + "self_attn.k_proj.weight"],
            wv=T[p + "self_attn.v_proj.weight"], wo=T[p + "self_attn.o_proj.weight"],
            wg=T[p + "mlp.gate_proj.weight"], wu=T[p + "mlp.up_proj.weight"], wd=T[p + "mlp.down_proj.weight"],
            S_attn=T[p + "attn_shortcut_Q"], S_mlp=T[p + "mlp_shortcut_Q"]))
    return dict(emb=T["model.embed_tokens.weight"], layers=layers, final_norm=None, head=T["lm_head.weight"])


def model_nll(cfg, model, win, batch=16):
    """Mean NLL over the windows win (n, T) of the generic layered model:
       h = x·S_attn + Attn(RMSN(x)·γ);  y = h·S_mlp + MLP(RMSN(h)·γ)."""
    n, T = win.shape
    cos, sin = rope_tables(T, cfg.hd, cfg.theta)
    total = 0.0
    for b0 in range(0, n, batch):
        tok = win[b0:b0 + batch]
        x = model["emb"][tok]
        for ly in model["layers"]:
            a = attention(rmsn(x, cfg.D, cfg.eps, ly["in_norm"]), ly["wq"], ly["wk"], ly["wv"], ly["wo"], cfg, cos, sin)
            h = (x if ly["S_attn"] is None else x @ ly["S_attn"]) + a
            m = mlp(rmsn(h, cfg.D, cfg.eps, ly["post_norm"]), ly["wg"], ly["wu"], ly["wd"])
            x = (h if ly["S_mlp"] is None else h @ ly["S_mlp"]) + m
        logits = rmsn(x, cfg.D, cfg.eps, model["final_norm"]) @ model["head"].T
        total += nll_sum(logits, tok)
    return total / (n * (T - 1))


# ----------------------------------------------------------------------------
# SliceGPT (DESIGN.md §1)
# ----------------------------------------------------------------------------

def slice_width(D, sparsity, round_to=8):
    d = int(math.floor((1.0 - sparsity) * D))
    d -= d % round_to
    if d <= 0:
        raise ValueError("sparsity %g leaves no width (D=%d, round_to=%d)" % (sparsity, D, round_to))
    return d


def pca(X):
    """X (..., D) -> (eigenvalues of H+δI descending, Q with canonical signs)."""
    X2 = np.asarray(X, dtype=np.float64).reshape(-1, X.shape[-1])
    H = X2.T @ X2
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


def slice_llama(cfg, W, calib_win, sparsity, round_to=8, act_dtype=np.float64, batch=16):
    """SliceGPT on dense HF weights W (float64) with calibration windows (n, T).

    act_dtype=np.float32 runs the layer math (not the PCA, not the rotations) in
    float32, to mimic an fp32 implementation.
    Returns dict(tensors={HF name: float64}, eigenvalues={"embed": w,
    "layers": [{"attn": w, "mlp": w}]}, bases=same layout with the full Q,
    widths={"embed": d, "layers": [[d_in, d_mid, d_out]]}, d=d)."""
    D, L = cfg.D, cfg.L
    d = slice_width(D, sparsity, round_to)
    n, T = calib_win.shape
    ad = act_dtype
    cos, sin = rope_tables(T, cfg.hd, cfg.theta, ad)

    # Norm fusion into the readers' columns; untie the head.
    emb = W["model.embed_tokens.weight"].astype(np.float64)
    head = (W["lm_head.weight"] if "lm_head.weight" in W else emb) * W["model.norm.weight"][None, :]
    out = {}
    eig = {"layers": []}
    bases = {"layers": []}
    widths = {"layers": []}

    # Step 1
    X = emb[calib_win]  # (n, T, D), unrotated
    if ad != np.float64:
        X = X.astype(ad)
    w0, Q = pca(X)
    eig["embed"], bases["embed"], widths["embed"] = w0, Q, d
    out["model.embed_tokens.weight"] = emb @ Q[:, :d]
    d_in = d

    for l in range(L):
        p = "model.layers.%d." % l
        g_in = W[p + "input_layernorm.weight"][None, :]
        g_post = W[p + "post_attention_layernorm.weight"][None, :]
        wq = W[p + "self_attn.q_proj.weight"] * g_in
        wk = W[p + "self_attn.k_proj.weight"] * g_in
        wv = W[p + "self_attn.v_proj.weight"] * g_in
        wo = W[p + "self_attn.o_proj.weight"]
        wg = W[p + "mlp.gate_proj.weight"] * g_post
        wu = W[p + "mlp.up_proj.weight"] * g_post
        wd = W[p + "mlp.down_proj.weight"]
        d_mid = d
        d_out = D if l == L - 1 else d

        # 2.1
        Qi = Q[:, :d_in]
        S_attn = Qi.T  # (d_in, D)
        wq, wk, wv = wq @ Qi, wk @ Qi, wv @ Qi
        # 2.2: M = Xr·S_attn + Attn(RMSN(Xr))·W_oᵀ, W_o unsliced
        M = np.empty((n, T, D), dtype=ad)
        wqa, wka, wva, woa, Sa = (t.astype(ad) for t in (wq, wk, wv, wo, S_attn))
        Qia = Qi.astype(ad)
        for b0 in range(0, n, batch):
            xr = X[b0:b0 + batch] @ Qia
            M[b0:b0 + batch] = xr @ Sa + attention(rmsn(xr, D, cfg.eps), wqa, wka, wva, woa, cfg, cos, sin)
        # 2.3
        wm, Qm = pca(M)
        Qmd = Qm[:, :d_mid]
        S_attn = S_attn @ Qmd  # (d_in, d_mid)
        wo = (Qm.T @ wo)[:d_mid, :]
        S_mlp = Qmd.T  # (d_mid, D)
        wg, wu = wg @ Qmd, wu @ Qmd
        # 2.4: Y = Mr·S_mlp + MLP(RMSN(Mr)), W_down unsliced
        Y = np.empty((n, T, D), dtype=ad)
        wga, wua, wda, Sm = (t.astype(ad) for t in (wg, wu, wd, S_mlp))
        Qmda = Qmd.astype(ad)
        for b0 in range(0, n, batch):
            mr = M[b0:b0 + batch] @ Qmda
            Y[b0:b0 + batch] = mr @ Sm + mlp(rmsn(mr, D, cfg.eps), wga, wua, wda)
        # 2.5
        wn, Qn = pca(Y)
        S_mlp = S_mlp @ Qn[:, :d_out]  # (d_mid, d_out)
        wd = (Qn.T @ wd)[:d_out, :]

        out[p + "self_attn.q_proj.weight"] = wq
        out[p + "self_attn.k_proj.weight"] = wk
        out[p + "self_attn.v_proj.weight"] = wv
        out[p + "self_attn.o_proj.weight"] = wo
        out[p + "attn_shortcut_Q"] = S_attn
        out[p + "mlp.gate_proj.weight"] = wg
        out[p + "mlp.up_proj.weight"] = wu
        out[p + "mlp.down_proj.weight"] = wd
        out[p + "mlp_shortcut_Q"] = S_mlp
        eig["layers"].append({"attn": wm, "mlp": wn})
        bases["layers"].append({"attn": Qm, "mlp": Qn})
        widths["layers"].append([d_in, d_mid, d_out])

        X, Q, d_in = Y, Qn, d_out

    # Step 3
    out["lm_head.weight"] = head @ Q
    return dict(tensors=out, eigenvalues=eig, bases=bases, widths=widths, d=d)


def round_tensors(tensors, dtype):
    return {k: round_to_dtype(v, dtype) for k, v in tensors.items()}


def write_sliced(out_dir, config, result, dtype="F32"):
    os.makedirs(out_dir, exist_ok=True)
    cfg = dict(config)
    cfg["tie_word_embeddings"] = False
    cfg["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}[dtype.upper()]
    cfg["slicegpt_ref"] = {"widths": result["widths"]}
    write_safetensors(os.path.join(out_dir, "model.safetensors"), result["tensors"], dtype)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


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
    cfg = Cfg(config)
    calib = windows(load_tokens(a.calib), a.seqlen, a.nsamples)
    res = slice_llama(cfg, W, calib, a.sparsity, a.round_to)
    tens = res["tensors"]
    if a.round:
        tens = round_tensors(tens, a.round)
    rep = {"sparsity": a.sparsity, "d": res["d"], "widths": res["widths"], "round": a.round}
    if a.eval_tokens:
        ev = windows(load_tokens(a.eval_tokens), a.eval_seqlen or a.seqlen)
        rep["eval_windows"] = int(ev.shape[0])
        rep["dense_nll"] = model_nll(cfg, dense_model(cfg, W), ev)
        rep["sliced_nll"] = model_nll(cfg, sliced_model(cfg, tens), ev)
    if a.eigenvalues:
        rep["eigenvalues"] = {"embed": res["eigenvalues"]["embed"].tolist(),
                              "layers": [{"attn": e["attn"].tolist(), "mlp": e["mlp"].tolist()}
                                         for e in res["eigenvalues"]["layers"]]}
    if a.out:
        write_sliced(a.out, config, dict(res, tensors=tens), "BF16" if (a.round or "").lower() == "bf16" else "F32")
    json.dump(rep, sys.stdout, indent=None)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
