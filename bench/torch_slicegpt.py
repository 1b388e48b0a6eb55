#!/usr/bin/env python3
"""bench/torch_slicegpt.py: an in-RAM PyTorch SliceGPT of the same job, as a baseline.

    torch_slicegpt.py MODEL_DIR CALIB.npy --seqlen T --nsamples N --sparsity S
                      [--round-to 8] [--threads 2] [--batch 8] [--json OUT.json]

The algorithm is docs/algorithm.md §3–§5, the one slicepipe's compute stage runs, written the way
the published implementation (Ashkboos et al.) writes it: every calibration activation held in
RAM as float32, the layer forward in float32 torch ops (HF Llama eager attention: full T×T scores
with a causal mask), the second moment per batch as a float64 matmul `X.double().mT @ X.double()`
summed into a float64 H, damping 0.01·mean(diag H), torch.linalg.eigh sorted descending (and the
canonical sign rule, so the bases are comparable with slicepipe's), the rotations in float64.
Like slicepipe it runs one attention pass and one MLP pass per layer (M is rotated instead of
re-running attention).

Only the slicing is timed: loading the checkpoint (a plain safetensors parse) and the
calibration tokens comes before the clock starts; nothing is written. It prints
`torch_seconds S`, the OpenBLAS kernels it ran on (`torch_openblas_core`), and the eigenvalues of
a few PCAs so the bench can check it computed the same thing as slicepipe (slicing.json's
eigenvalues).

Llama-family only (RMSNorm, SiLU-GLU, rotate-half RoPE, GQA), F32/F16/BF16 inputs.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch


def load_safetensors(model_dir):
    """{name: float32 torch tensor} from model.safetensors (+ index shards)."""
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for f in files:
        with open(os.path.join(model_dir, f), "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            hdr = json.loads(fh.read(n))
            base = 8 + n
            for name, t in hdr.items():
                if name == "__metadata__":
                    continue
                a, b = t["data_offsets"]
                fh.seek(base + a)
                raw = fh.read(b - a)
                dt = t["dtype"]
                if dt == "F32":
                    arr = np.frombuffer(raw, dtype=np.float32)
                elif dt == "F16":
                    arr = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
                elif dt == "BF16":
                    u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
                    arr = u.view(np.float32)
                else:
                    sys.exit(f"torch_slicegpt: {f}: tensor {name}: dtype {dt} not handled")
                out[name] = torch.from_numpy(arr.copy()).reshape(t["shape"])
    return out


def pca(windows_iter, D):
    """Q (D, D) float64, columns descending, canonical signs; eigenvalues descending."""
    H = torch.zeros(D, D, dtype=torch.float64)
    for X in windows_iter:  # X (B, T, D) float32
        Xd = X.double()
        H += torch.sum(Xd.mT @ Xd, dim=0)
    damp = 0.01 * torch.mean(torch.diag(H))
    H += damp * torch.eye(D, dtype=torch.float64)
    evals, Q = torch.linalg.eigh(H)
    order = torch.argsort(evals, descending=True)
    evals, Q = evals[order], Q[:, order]
    arg = torch.argmax(Q.abs(), dim=0)  # first maximum on ties
    sign = torch.sign(Q[arg, torch.arange(D)])
    sign[sign == 0] = 1
    return Q * sign, evals


def rmsn(x, D, eps):
    """x / sqrt(‖x‖²/D + eps), over the ORIGINAL width D."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) / D + eps)


def openblas_core():
    """The kernels ("core") of the OpenBLAS this process runs, or None without one: torch does not
    choose them itself (OpenBLAS picks by CPU model, or OPENBLAS_CORETYPE), so the bench records them."""
    import ctypes
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if os.path.basename(path).startswith("libopenblas"):
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib.openblas_get_corename().decode()
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("calib")
    ap.add_argument("--seqlen", type=int, required=True)
    ap.add_argument("--nsamples", type=int, required=True)
    ap.add_argument("--sparsity", type=float, required=True)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="windows per forward batch")
    ap.add_argument("--json", help="write seconds and eigenvalues here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)

    cfg = json.load(open(os.path.join(a.model, "config.json")))
    if cfg.get("model_type") != "llama":
        sys.exit("torch_slicegpt: only llama checkpoints")
    D, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", D // nh)
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    if cfg.get("rope_scaling"):
        sys.exit("torch_slicegpt: rope_scaling not handled")
    T, W = a.seqlen, a.nsamples
    d = int(math.floor((1 - a.sparsity) * D))
    d -= d % a.round_to

    w = load_safetensors(a.model)
    emb = w["model.embed_tokens.weight"]
    head = w.get("lm_head.weight", emb)
    ids = np.load(a.calib).astype(np.int64)
    if ids.size < W * T:
        sys.exit(f"torch_slicegpt: {a.calib}: {ids.size} tokens, need {W * T}")
    ids = torch.from_numpy(ids[: W * T].copy()).reshape(W, T)
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1).float()  # (T, hd), HF layout
    sin = torch.cat([ang.sin(), ang.sin()], -1).float()
    mask = torch.full((T, T), float("-inf")).triu(1)
    B = a.batch

    def batches(X):
        for b0 in range(0, W, B):
            yield X[b0 : b0 + B]

    def rope(x):  # x (B, h, T, hd)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def attn(xn, Wq, Wk, Wv, Wo):  # xn (B, T, d_in)
        b = xn.shape[0]
        q = (xn @ Wq.T).view(b, T, nh, hd).transpose(1, 2)
        k = (xn @ Wk.T).view(b, T, nkv, hd).transpose(1, 2)
        v = (xn @ Wv.T).view(b, T, nkv, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        if nkv != nh:
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
        ctx = torch.softmax(s, dim=-1) @ v
        return ctx.transpose(1, 2).reshape(b, T, nh * hd) @ Wo.T

    def rot_rows(Wt, gamma, Q, k):  # (W·diag γ)·Q[:, :k], float64 → float32
        Wd = Wt.double() * (gamma.double() if gamma is not None else 1.0)
        return (Wd @ Q[:, :k]).float()

    def rot_cols(Q, k, Wt):  # (Qᵀ·W)[:k]
        return (Q[:, :k].T @ Wt.double()).float()

    evals_out = {}
    t0 = time.perf_counter()
    # 1. X0 = Emb[tokens]; Q = PCA(X0); Emb ← Emb·Q[:, :d]
    X = emb[ids]  # (W, T, D) float32
    Q, ev = pca(batches(X), D)
    evals_out["embed"] = ev[:8].tolist()
    emb_s = rot_rows(emb, None, Q, d)
    outs = {"embed": emb_s}
    for l in range(L):
        p = f"model.layers.{l}."
        d_in, d_mid, d_out = d, d, (D if l == L - 1 else d)
        g_in, g_post = w[p + "input_layernorm.weight"], w[p + "post_attention_layernorm.weight"]
        Wq = rot_rows(w[p + "self_attn.q_proj.weight"], g_in, Q, d_in)
        Wk = rot_rows(w[p + "self_attn.k_proj.weight"], g_in, Q, d_in)
        Wv = rot_rows(w[p + "self_attn.v_proj.weight"], g_in, Q, d_in)
        Wo = w[p + "self_attn.o_proj.weight"]  # (D, nh·hd), unsliced for the pass
        Qf, S0 = Q[:, :d_in].float(), Q[:, :d_in].T.float()
        M = torch.empty(W, T, D)
        for b0 in range(0, W, B):
            Xr = X[b0 : b0 + B] @ Qf
            M[b0 : b0 + B] = Xr @ S0 + attn(rmsn(Xr, D, eps), Wq, Wk, Wv, Wo)
        Qm, ev = pca(batches(M), D)
        evals_out[f"layer{l}.attn"] = ev[:8].tolist()
        S_attn = (Q[:, :d_in].T @ Qm[:, :d_mid]).float()
        Wo_s = rot_cols(Qm, d_mid, Wo)
        Wg = rot_rows(w[p + "mlp.gate_proj.weight"], g_post, Qm, d_mid)
        Wu = rot_rows(w[p + "mlp.up_proj.weight"], g_post, Qm, d_mid)
        Wd = w[p + "mlp.down_proj.weight"]
        Qf, S0 = Qm[:, :d_mid].float(), Qm[:, :d_mid].T.float()
        Y = M  # in place, batch by batch
        for b0 in range(0, W, B):
            Mr = M[b0 : b0 + B] @ Qf
            xn = rmsn(Mr, D, eps)
            Y[b0 : b0 + B] = Mr @ S0 + (torch.nn.functional.silu(xn @ Wg.T) * (xn @ Wu.T)) @ Wd.T
        Qn, ev = pca(batches(Y), D)
        evals_out[f"layer{l}.mlp"] = ev[:8].tolist()
        S_mlp = (Qm[:, :d_mid].T @ Qn[:, :d_out]).float()
        Wd_s = rot_cols(Qn, d_out, Wd)
        outs[l] = (Wq, Wk, Wv, Wo_s, S_attn, Wg, Wu, Wd_s, S_mlp)
        X, Q = Y, Qn
    outs["head"] = rot_rows(head, w["model.norm.weight"], Q, D)
    secs = time.perf_counter() - t0
    print(f"torch_seconds {secs:.3f}")
    print(f"torch_threads {torch.get_num_threads()} torch {torch.__version__}")
    print(f"torch_openblas_core {openblas_core() or 'none'}")
    for k in ("embed", "layer0.attn", f"layer{L - 1}.mlp"):
        print(f"torch_evals {k} " + " ".join(f"{x:.10g}" for x in evals_out[k][:4]))
    if a.json:
        json.dump({"seconds": secs, "eigenvalues": evals_out}, open(a.json, "w"))


if __name__ == "__main__":
    main()
