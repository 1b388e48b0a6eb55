"""tests/ref/llama_ref.py — an independent numpy float64 reference for Llama
models in the HF layout, dense or sliced (DESIGN.md §1).

API (also imported by other tests):
    write_safetensors(path, {name: (dtype, ndarray)}, metadata=None)
        dtype is "F32", "F16", "BF16", "F64" or "I32".
    read_safetensors(path) -> {name: ndarray}   (floats as float64)
    read_model(dir) -> {"config": dict, "tensors": {name: float64 ndarray}, "dir": dir}
    write_random_model(dir, seed, D, L, heads, kv, head_dim, ffn, vocab,
                       dtype="float32", tied=True, shards=1, rope_scaling=None,
                       max_pos=512, eps=1e-5, theta=10000.0) -> config dict
    write_tokens(path, seed, n, vocab) -> int32 ndarray (also saved as .npy)
    forward_nll(model, tokens, seqlen, windows=None, return_logits=False)
        -> mean NLL, or (mean NLL, logits (windows*seqlen, vocab)) with return_logits.
        `model` is read_model()'s dict or a directory path.

Sliced format: a layer may carry model.layers.{i}.attn_shortcut_Q (d_in, d_mid)
and mlp_shortcut_Q (d_mid, d_out); absent norm weights mean a weightless RMSN.
RMSN always divides by the original hidden_size from config.json. Widths come
from the tensor shapes.

Only numpy and the standard library; written from the formats' and HF's
definitions, not from any other implementation.
"""

import json
import math
import os
import struct

import numpy as np

# ---------------------------------------------------------------- dtypes

_ST_NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U8": "u1", "BOOL": "?"}
_ST_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
TORCH_TO_ST = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def f32_to_bf16_bits(a):
    """float32 array -> uint16 BF16 bits, round to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    nan = np.isnan(np.asarray(a, dtype=np.float32))
    rounded = np.where(nan, ((u >> 16) | 0x40) & 0xFFFF, rounded)
    return rounded.astype("<u2")


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype="<u2").astype("<u4") << 16).view("<f4")


def round_to_dtype(a, st_dtype):
    """The float64 values that `a` takes once stored as st_dtype."""
    a = np.asarray(a, dtype=np.float64)
    if st_dtype == "F64":
        return a.copy()
    if st_dtype == "F32":
        return a.astype(np.float32).astype(np.float64)
    if st_dtype == "F16":
        return a.astype(np.float16).astype(np.float64)
    if st_dtype == "BF16":
        return bf16_bits_to_f32(f32_to_bf16_bits(a.astype(np.float32))).astype(np.float64)
    raise ValueError("not a float dtype: " + st_dtype)


def _encode(st_dtype, arr):
    if st_dtype == "BF16":
        return f32_to_bf16_bits(np.asarray(arr, dtype=np.float32)).tobytes()
    return np.ascontiguousarray(arr, dtype=_ST_NP[st_dtype]).tobytes()


def _decode(st_dtype, buf, shape):
    if st_dtype == "BF16":
        a = bf16_bits_to_f32(np.frombuffer(buf, dtype="<u2"))
    else:
        a = np.frombuffer(buf, dtype=_ST_NP[st_dtype])
    a = a.reshape(shape)
    if st_dtype in ("F64", "F32", "F16", "BF16"):
        return a.astype(np.float64)
    return a.copy()


# ---------------------------------------------------------------- safetensors

def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (st_dtype, ndarray)}; data laid out in insertion order."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, (dt, arr) in tensors.items():
        arr = np.asarray(arr)
        b = _encode(dt, arr)
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - (8 + len(hj)) % 8) % 8)  # data region 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path, with_dtypes=False):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode())
    base = 8 + n
    out, dtypes = {}, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        out[name] = _decode(e["dtype"], data[base + b:base + en], tuple(e["shape"]))
        dtypes[name] = e["dtype"]
    return (out, dtypes) if with_dtypes else out


def read_model(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    idx = os.path.join(d, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        for shard in sorted(set(wm.values())):
            tensors.update(read_safetensors(os.path.join(d, shard)))
        missing = set(wm) - set(tensors)
        if missing:
            raise ValueError("%s: tensors missing from shards: %s" % (d, sorted(missing)))
    else:
        tensors = read_safetensors(os.path.join(d, "model.safetensors"))
    return {"config": cfg, "tensors": tensors, "dir": d}


# ---------------------------------------------------------------- random models

def write_random_model(d, seed, D, L, heads, kv, head_dim, ffn, vocab, dtype="float32", tied=True, shards=1,
                       rope_scaling=None, max_pos=512, eps=1e-5, theta=10000.0):
    """Writes config.json + model.safetensors (or 2 shards + index) with seeded
    N(0, 1/in) weights (std 1/sqrt(in)), N(0, 1/D) embeddings (so that a tied
    head gives logits of order 1, like an untied one) and γ = 1 + 0.1·N."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    st = TORCH_TO_ST[dtype]

    def lin(out_f, in_f):
        return rng.standard_normal((out_f, in_f)) / math.sqrt(in_f)

    def gamma(n):
        return 1.0 + 0.1 * rng.standard_normal(n)

    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, D)) / math.sqrt(D)}
    for i in range(L):
        p = "model.layers.%d." % i
        t[p + "input_layernorm.weight"] = gamma(D)
        t[p + "self_attn.q_proj.weight"] = lin(heads * head_dim, D)
        t[p + "self_attn.k_proj.weight"] = lin(kv * head_dim, D)
        t[p + "self_attn.v_proj.weight"] = lin(kv * head_dim, D)
        t[p + "self_attn.o_proj.weight"] = lin(D, heads * head_dim)
        t[p + "post_attention_layernorm.weight"] = gamma(D)
        t[p + "mlp.gate_proj.weight"] = lin(ffn, D)
        t[p + "mlp.up_proj.weight"] = lin(ffn, D)
        t[p + "mlp.down_proj.weight"] = lin(D, ffn)
    t["model.norm.weight"] = gamma(D)
    if not tied:
        t["lm_head.weight"] = lin(vocab, D)

    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D,
        "intermediate_size": ffn, "num_hidden_layers": L, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": head_dim, "vocab_size": vocab,
        "max_position_embeddings": max_pos, "rms_norm_eps": eps, "rope_theta": theta,
        "tie_word_embeddings": bool(tied), "hidden_act": "silu", "torch_dtype": dtype,
    }
    if rope_scaling is not None:
        cfg["rope_scaling"] = dict(rope_scaling)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    names = list(t)
    if shards <= 1:
        write_safetensors(os.path.join(d, "model.safetensors"), {n: (st, t[n]) for n in names},
                          {"format": "pt"})
    else:
        per = (len(names) + shards - 1) // shards
        wm, total = {}, 0
        for s in range(shards):
            fn = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            part = names[s * per:(s + 1) * per]
            write_safetensors(os.path.join(d, fn), {n: (st, t[n]) for n in part}, {"format": "pt"})
            for n in part:
                wm[n] = fn
                total += t[n].size * _ST_SIZE[st]
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)
    return cfg


def write_tokens(path, seed, n, vocab):
    toks = np.random.default_rng(seed).integers(0, vocab, size=n, dtype=np.int64).astype(np.int32)
    np.save(path, toks)
    return toks


# ---------------------------------------------------------------- forward

def rope_inv_freq(cfg):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    theta = float(cfg.get("rope_theta", 10000.0))
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.get("rope_scaling")
    if rs and (rs.get("rope_type") or rs.get("type")) == "llama3":
        factor, lo, hi = float(rs["factor"]), float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        old = float(rs["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        out = np.empty_like(inv)
        for i, (f, w) in enumerate(zip(inv, wavelen)):
            if w < old / hi:
                out[i] = f
            elif w > old / lo:
                out[i] = f / factor
            else:
                sm = (old / w - lo) / (hi - lo)
                out[i] = (1 - sm) * f / factor + sm * f
        inv = out
    elif rs:
        raise ValueError("unsupported rope_scaling %r" % (rs,))
    return inv


def _rmsn(x, gamma, D, eps):
    y = x / np.sqrt((x * x).sum(-1, keepdims=True) / D + eps)
    return y * gamma if gamma is not None else y


def _rope(x, cos, sin):
    """x (B, H, T, hd); cos/sin (T, hd/2); rotate-half."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _layer(cfg, t, i, x, cos, sin, mask):
    """x (B, T, d_in) -> y (B, T, d_out), float64."""
    D, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // nh
    p = "model.layers.%d." % i
    B, T, _ = x.shape
    xn = _rmsn(x, t.get(p + "input_layernorm.weight"), D, eps)
    q = (xn @ t[p + "self_attn.q_proj.weight"].T).reshape(B, T, nh, hd).transpose(0, 2, 1, 3)
    k = (xn @ t[p + "self_attn.k_proj.weight"].T).reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)
    v = (xn @ t[p + "self_attn.v_proj.weight"].T).reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)
    q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    rep = nh // nkv
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)  # head h uses kv head h // rep
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + mask
    s = s - s.max(-1, keepdims=True)
    pr = np.exp(s)
    pr /= pr.sum(-1, keepdims=True)
    ctx = (pr @ v).transpose(0, 2, 1, 3).reshape(B, T, nh * hd)
    sc = t.get(p + "attn_shortcut_Q")
    h = (x @ sc if sc is not None else x) + ctx @ t[p + "self_attn.o_proj.weight"].T
    hn = _rmsn(h, t.get(p + "post_attention_layernorm.weight"), D, eps)
    g = hn @ t[p + "mlp.gate_proj.weight"].T
    u = hn @ t[p + "mlp.up_proj.weight"].T
    m = (g / (1.0 + np.exp(-g)) * u) @ t[p + "mlp.down_proj.weight"].T
    sc = t.get(p + "mlp_shortcut_Q")
    return (h @ sc if sc is not None else h) + m


def forward_logits(model, toks):
    """toks (B, T) int -> logits (B, T, vocab), float64."""
    if isinstance(model, str):
        model = read_model(model)
    cfg, t = model["config"], model["tensors"]
    B, T = toks.shape
    inv = rope_inv_freq(cfg)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    x = t["model.embed_tokens.weight"][toks]
    for i in range(cfg["num_hidden_layers"]):
        x = _layer(cfg, t, i, x, cos, sin, mask)
    x = _rmsn(x, t.get("model.norm.weight"), cfg["hidden_size"], cfg["rms_norm_eps"])
    w = t.get("lm_head.weight")
    if w is None:
        w = t["model.embed_tokens.weight"]
    return x @ w.T


def forward_nll(model, tokens, seqlen, windows=None, return_logits=False, batch=16):
    """Mean NLL over non-overlapping windows of `seqlen` tokens (each window
    predicts its tokens 1..seqlen-1); `windows` caps the number of windows."""
    if isinstance(model, str):
        model = read_model(model)
    tokens = np.asarray(tokens).astype(np.int64).ravel()
    nw = len(tokens) // seqlen
    if windows is not None:
        nw = min(nw, windows)
    if nw < 1 or seqlen < 2:
        raise ValueError("need at least one window of >= 2 tokens")
    W = tokens[:nw * seqlen].reshape(nw, seqlen)
    total, logits_all = 0.0, []
    for b0 in range(0, nw, batch):
        tk = W[b0:b0 + batch]
        lg = forward_logits(model, tk)
        z = lg[:, :-1, :]
        mx = z.max(-1, keepdims=True)
        lse = (mx + np.log(np.exp(z - mx).sum(-1, keepdims=True)))[..., 0]
        tgt = np.take_along_axis(z, tk[:, 1:, None], axis=-1)[..., 0]
        total += float((lse - tgt).sum())
        if return_logits:
            logits_all.append(lg.reshape(-1, lg.shape[-1]))
    nll = total / (nw * (seqlen - 1))
    if return_logits:
        return nll, np.concatenate(logits_all, axis=0)
    return nll


if __name__ == "__main__":
    import sys
    if len(sys.argv) < 4:
        print("usage: llama_ref.py MODEL_DIR TOKENS.npy SEQLEN [WINDOWS]")
        sys.exit(64)
    wn = int(sys.argv[4]) if len(sys.argv) > 4 else None
    print("%.6f" % forward_nll(sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3]), wn))
