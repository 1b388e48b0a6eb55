"""tests/ref/model_ref.py — independent numpy float64 forward passes of every
model family slicepipe supports, dense and sliced, written from Hugging Face
transformers' published model definitions (not from slicepipe's C code).

Families (config.json `model_type`): the per-family code of class Arch, for
RMSNorm families (gemma's (1 + w)) and LayerNorm ones (opt; phi, a parallel
block). Which families slicepipe supports is the binary's list
(tests/sp_families.py), and the tests run this reference on each of them, so
a family without code here fails there. Everything else is refused with
Unsupported naming the reason (opt-350m's project_in/project_out and
post-LayerNorm, mixture-of-experts, RoPE scalings other than
none/default/linear/llama3, Gemma-2/3, ...).

API (imported by tests/ref/slicegpt_ref.py and by tests/*.py):

  safetensors and dtypes
    write_safetensors(path, tensors, dtype="F32", metadata=None)
        tensors: {name: ndarray} (stored as `dtype`) or {name: (st_dtype, ndarray)};
        data in insertion order, 8-byte aligned; written to path.tmp, then renamed.
        st_dtype is "F64", "F32", "F16", "BF16", "I64", "I32", ...
    read_safetensors(path, with_dtypes=False) -> {name: ndarray} (floats as float64)
        (or ({name: ndarray}, {name: st_dtype}) with with_dtypes)
    read_model(dir) -> {"config": dict, "tensors": {name: float64}, "dir": dir}
        single model.safetensors, or model.safetensors.index.json + shards.
    load_model_dir(dir) -> (config, tensors)
    f32_to_bf16_bits(a), bf16_bits_to_f32(bits)   round to nearest even; NaN stays NaN
    round_to_dtype(a, dtype) -> float64 values of `a` once stored as dtype
        ("F64"/"F32"/"F16"/"BF16", any case; also "float32", "bf16", "none", ...)
    round_tensors({name: a}, dtype) -> {name: rounded}
    TORCH_TO_ST = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}

  data
    write_random_model(dir, seed, D, L, heads, kv, head_dim, ffn, vocab, dtype="float32",
                       tied=True, shards=1, rope_scaling=None, max_pos=512, eps=1e-5,
                       theta=10000.0) -> config     (a random Llama in the HF layout)
    write_tokens(path, seed, n, vocab) -> int32 ndarray (also saved as .npy)
    load_tokens(path) -> int64 1-D ndarray
    windows(tokens, seqlen, n=None) -> (n, seqlen): the first n non-overlapping windows

  architecture
    arch_of(config) -> Arch     raises Unsupported (a ValueError) with the reason.
        Arch fields: family, D, L, H, KV, hd, F, vocab, eps, norm ("rms" | "rms1p" |
        "ln"), parallel, act, gated, rot_dim, inv_freq, windows (per layer: None or
        the sliding window), pos_offset (None or 2 for OPT), tied, embed (tensor
        name), pos (name or None), final_norm (name prefix), layers[i] (a dict of
        the roles below).
        Per-layer roles (HF names without ".weight"/".bias"): in_norm, post_norm
        (None for a parallel block), q, k, v or qkv (fused rows q;k;v), o,
        gate, up or gate_up (fused rows gate;up) or fc1, down (down_proj/fc2),
        q_norm, k_norm (per-head norms or None), attn_readers, mlp_readers,
        attn_writer, mlp_writer, and the sliced shortcuts attn_shortcut,
        mlp_shortcut (sequential) or shortcut (parallel).
    rope_inv_freq(theta, rot_dim, rope_scaling) -> HF's inv_freq (none/default, linear, llama3)
    embed_scale(arch, dtype=None) -> Gemma's normalizer sqrt(hidden_size) rounded to
        `dtype` as HF does (the model dtype; None = float64, as HF's float64 logits),
        1.0 for the other families.

  forward
    forward_logits(model, toks, act_dtype=np.float64, embed_scale_dtype=None)
        -> logits (B, T, vocab). `model` is read_model()'s dict or a directory;
        toks (B, T) ints; positions restart at 0 in each row.
    forward_nll(model, tokens, seqlen, windows=None, return_logits=False, batch=16)
        -> mean NLL over non-overlapping windows (each predicts tokens 1..seqlen-1),
        or (mean NLL, logits (windows*seqlen, vocab)).
    nll_sum(logits (B, T, V), toks (B, T)) -> float, the summed NLL of toks[:, 1:].
    Layer-level pieces used by the SliceGPT reference (x is (B, T, width)):
        norm(arch, t, name, x), attn(arch, t, lay, xn, i), mlp(arch, t, lay, xn),
        layer(arch, t, i, x),
        embed(arch, t, toks, sliced, embed_scale_dtype), head(arch, t, x, sliced),
        rmsn(x, D, eps, gamma=None), is_sliced(arch, t).

Dense vs sliced (docs/algorithm.md §7): a model is "sliced" when its final norm has no
weight tensor. Every norm whose weight is absent is the weightless RMSN over the
ORIGINAL hidden_size, x / sqrt(sum(x²)/D + eps) — also for LayerNorm families,
whose means were baked into the weights. Widths come from the tensor shapes. A
sequential layer may carry <layer>.attn_shortcut_Q (d_in, d_mid) and
<layer>.mlp_shortcut_Q (d_mid, d_out), a parallel one <layer>.shortcut_Q
(d_in, d_out), where <layer> is "model.layers.N" ("model.decoder.layers.N" for
OPT):
    sequential:  h = x·S_attn + Attn(RMSN(x));  y = h·S_mlp + MLP(RMSN(h))
    parallel:    y = x·S + Attn(RMSN(x)) + MLP(RMSN(x))
In a sliced model the head is lm_head.weight (+ lm_head.bias when present: it
holds the final LayerNorm's β for LayerNorm families), never the embedding, and
Gemma's sqrt(hidden_size) is baked into the embedding rows (not applied again).

HF semantics implemented (transformers' modeling_<family>.py):
  * RoPE rotate-half on the first rot_dim = int(head_dim·partial_rotary_factor)
    dims of each head, inv_freq = 1/theta^(2i/rot_dim); llama3 and linear scaling.
  * attention softmax(q·kᵀ/sqrt(head_dim) + mask)·v; GQA head h reads KV head
    h // (H/KV); query i sees key j iff 0 <= i-j (< sliding_window where set).
    Mistral and Phi-3: every layer has the window; Qwen2/3: only with
    use_sliding_window, layers >= max_window_layers (or config layer_types).
  * Llama-like MLP down(act(gate(x))·up(x)); Phi-3 gate_up_proj rows [gate; up];
    OPT/Phi fc2(act(fc1(x))). Gemma: GeGLU with the tanh GELU unless
    hidden_activation says otherwise (hidden_act is ignored, as HF does).
  * Gemma: RMSNorm scale (1+w); embedding × sqrt(hidden_size); head_dim from config.
  * Qwen3: q_norm/k_norm RMSNorm over head_dim on each head, before RoPE.
  * OPT: pre-LN; position p uses embed_positions row p+2; q scaled by hd^-0.5.
  * Phi: y = x + Attn(LN(x)) + MLP(LN(x)); dense = output projection; biases,
    lm_head.bias; optional per-head q/k LayerNorm (qk_layernorm).
  * tied heads use the embedding (unscaled), whatever lm_head.weight the file holds.
Everything runs in float64. HF's own "float64" run of the hf-tiny fixtures keeps
float32 stages (its RMSNorm upcasts to float32, its eager softmax runs in
float32), so this forward agrees with those logits to ~1e-7 relative, and
exactly (1e-16) where HF has no such stage (position 0 of OPT and Phi);
tests/test_family_ref.py checks both.

Only numpy and the standard library.
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
TORCH_TO_ST = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}
_DTYPE_ALIASES = {"F64": "F64", "FLOAT64": "F64", "NONE": "F64", "F32": "F32", "FLOAT32": "F32",
                  "F16": "F16", "FLOAT16": "F16", "BF16": "BF16", "BFLOAT16": "BF16"}


def f32_to_bf16_bits(a):
    """float32 array -> uint16 BF16 bits, round to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    nan = np.isnan(np.asarray(a, dtype=np.float32))
    rounded = np.where(nan, ((u >> 16) | 0x40) & 0xFFFF, rounded)
    return rounded.astype("<u2")


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype="<u2").astype("<u4") << 16).view("<f4")


def _st_dtype(name):
    key = str(name).upper()
    if key not in _DTYPE_ALIASES:
        raise ValueError("not a float dtype: %r" % (name,))
    return _DTYPE_ALIASES[key]


def round_to_dtype(a, dtype):
    """The float64 values that `a` takes once stored as dtype."""
    dt = _st_dtype(dtype)
    a = np.asarray(a, dtype=np.float64)
    if dt == "F64":
        return a.copy()
    if dt == "F32":
        return a.astype(np.float32).astype(np.float64)
    if dt == "F16":
        return a.astype(np.float16).astype(np.float64)
    return bf16_bits_to_f32(f32_to_bf16_bits(a.astype(np.float32))).astype(np.float64)


def round_tensors(tensors, dtype):
    return {k: round_to_dtype(v, dtype) for k, v in tensors.items()}


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

def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """tensors: {name: ndarray} stored as `dtype`, or {name: (st_dtype, ndarray)};
    data laid out in insertion order, the data region 8-byte aligned."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, val in tensors.items():
        dt, arr = val if isinstance(val, tuple) else (dtype, val)
        dt = str(dt).upper()
        arr = np.asarray(arr)
        b = _encode(dt, arr)
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - (8 + len(hj)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


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


def stored_params(d):
    """The number of stored parameters of model folder d: the sum of numel
    over every tensor of its .safetensors files, read from their headers
    alone (an independent count, not config.json's)."""
    total = 0
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"):
            continue
        with open(os.path.join(d, f), "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n).decode())
        for name, e in header.items():
            if name != "__metadata__":
                total += int(np.prod(e["shape"], dtype=np.int64))
    return total


def load_model_dir(d):
    m = read_model(d)
    return m["config"], m["tensors"]


# ---------------------------------------------------------------- data

def write_random_model(d, seed, D, L, heads, kv, head_dim, ffn, vocab, dtype="float32", tied=True, shards=1,
                       rope_scaling=None, max_pos=512, eps=1e-5, theta=10000.0):
    """A random Llama: config.json + model.safetensors (or `shards` shards +
    index) with seeded N(0, 1/in) weights (std 1/sqrt(in)), N(0, 1/D)
    embeddings (so that a tied head gives logits of order 1, like an untied
    one) and γ = 1 + 0.1·N."""
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
                          metadata={"format": "pt"})
    else:
        per = (len(names) + shards - 1) // shards
        wm, total = {}, 0
        for s in range(shards):
            fn = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            part = names[s * per:(s + 1) * per]
            write_safetensors(os.path.join(d, fn), {n: (st, t[n]) for n in part}, metadata={"format": "pt"})
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


def load_tokens(path):
    return np.asarray(np.load(path)).reshape(-1).astype(np.int64)


def windows(tokens, seqlen, n=None):
    """The first n (default: all) non-overlapping consecutive windows, (n, seqlen)."""
    tokens = np.asarray(tokens).reshape(-1)
    avail = len(tokens) // seqlen
    if n is None:
        n = avail
    if n > avail:
        raise ValueError("need %d windows of %d tokens, stream has %d tokens" % (n, seqlen, len(tokens)))
    return tokens[: n * seqlen].reshape(n, seqlen)


# ---------------------------------------------------------------- architecture

class Unsupported(ValueError):
    """A checkpoint the reference does not implement; the message says why."""


# The families Arch has code for, to refuse any other (not which families
# slicepipe supports: that is the binary's list, tests/sp_families.py).
IMPLEMENTED = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "opt", "phi")
_ACTS = ("silu", "swish", "relu", "gelu", "gelu_new", "gelu_pytorch_tanh")


def rope_inv_freq(theta, dim, rs):
    inv = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    kind = (rs or {}).get("rope_type", (rs or {}).get("type")) if rs else None
    if kind in (None, "default"):
        return inv
    if kind == "linear":
        return inv / float(rs["factor"])
    if kind == "llama3":
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
        return out
    raise Unsupported("rope_scaling %r is not implemented (none, default, linear and llama3 are)" % (rs,))


class Arch:
    """One family's semantics and tensor names, from config.json alone."""

    def __init__(self, config):
        c = config
        mt = c.get("model_type")
        if mt == "slicepipe_sliced":  # slicepipe's per-layer output names its family here
            mt = c.get("slicepipe", {}).get("base_model_type")
        if mt not in IMPLEMENTED:
            raise Unsupported("model_type %r is not supported (supported: %s)" % (mt, ", ".join(IMPLEMENTED)))
        for k in ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size"):
            if c.get(k):
                raise Unsupported("%s: mixture-of-experts (%s = %r) is not supported" % (mt, k, c[k]))
        self.family = mt
        self.config = c
        self.D = int(c["hidden_size"])
        self.L = int(c["num_hidden_layers"])
        self.H = int(c["num_attention_heads"])
        self.KV = int(c.get("num_key_value_heads") or self.H)
        self.vocab = int(c["vocab_size"])
        self.F = int(c["ffn_dim"] if mt == "opt" else c["intermediate_size"])
        if mt in ("opt", "phi", "phi3"):
            self.hd = self.D // self.H if mt != "phi3" else int(c.get("head_dim") or self.D // self.H)
        else:
            self.hd = int(c.get("head_dim") or self.D // self.H)
        if self.H % self.KV:
            raise Unsupported("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d"
                              % (mt, self.H, self.KV))
        self.tied = bool(c.get("tie_word_embeddings", mt in ("gemma", "opt")))
        self.parallel = mt == "phi"
        self.norm = {"gemma": "rms1p", "opt": "ln", "phi": "ln"}.get(mt, "rms")
        if mt == "opt":
            self.eps = 1e-5  # nn.LayerNorm's default: OPT has no eps key
        elif mt == "phi":
            self.eps = float(c.get("layer_norm_eps", 1e-5))
        else:
            self.eps = float(c.get("rms_norm_eps", 1e-6))

        # activation and MLP shape
        if mt == "opt":
            self.act = c.get("activation_function", "relu")
        elif mt == "gemma":
            self.act = c.get("hidden_activation") or "gelu_pytorch_tanh"
        else:
            self.act = c.get("hidden_act", "silu")
        if self.act not in _ACTS:
            raise Unsupported("%s: activation %r is not implemented" % (mt, self.act))
        self.gated = mt not in ("opt", "phi")

        # positions
        self.pos_offset = None
        if mt == "opt":
            if not c.get("do_layer_norm_before", True):
                raise Unsupported("opt: post-LayerNorm (do_layer_norm_before false, opt-350m style) "
                                  "is not supported")
            wd = c.get("word_embed_proj_dim", self.D)
            if wd != self.D:
                raise Unsupported("opt: word_embed_proj_dim %r != hidden_size %d needs project_in/project_out "
                                  "(opt-350m style), which is not supported" % (wd, self.D))
            if c.get("_remove_final_layer_norm", False):
                raise Unsupported("opt: _remove_final_layer_norm (no final LayerNorm) is not supported")
            if not c.get("layer_norm_elementwise_affine", True):
                raise Unsupported("opt: layer_norm_elementwise_affine false is not supported")
            self.pos_offset = 2
            self.rot_dim = 0
            self.inv_freq = np.zeros(0)
        else:
            prf = float(c.get("partial_rotary_factor", 0.5 if mt == "phi" else 1.0))
            self.rot_dim = int(self.hd * prf)
            if self.rot_dim % 2:
                raise Unsupported("%s: rotary dim %d is odd" % (mt, self.rot_dim))
            self.inv_freq = rope_inv_freq(float(c.get("rope_theta", 10000.0)), self.rot_dim,
                                           c.get("rope_scaling"))
        if mt == "phi" and c.get("qk_layernorm"):
            self.qk_norm = "ln"
        elif mt == "qwen3":
            self.qk_norm = "rms"
        else:
            self.qk_norm = None

        # sliding windows, per layer
        sw = c.get("sliding_window")
        if mt in ("mistral", "phi3"):
            self.windows = [int(sw) if sw else None] * self.L
        elif mt in ("qwen2", "qwen3"):
            lt = c.get("layer_types")
            if not c.get("use_sliding_window", False) or not sw:
                lt = None
            elif lt is None:
                mwl = int(c.get("max_window_layers", self.L))
                lt = ["sliding_attention" if i >= mwl else "full_attention" for i in range(self.L)]
            self.windows = [int(sw) if lt and lt[i] == "sliding_attention" else None for i in range(self.L)]
        else:
            self.windows = [None] * self.L

        # tensor names
        if mt == "opt":
            self.embed = "model.decoder.embed_tokens.weight"
            self.pos = "model.decoder.embed_positions.weight"
            self.final_norm = "model.decoder.final_layer_norm"
        else:
            self.embed = "model.embed_tokens.weight"
            self.pos = None
            self.final_norm = "model.final_layernorm" if mt == "phi" else "model.norm"
        self.layers = [self._layer_names(i) for i in range(self.L)]

    def _layer_names(self, i):
        mt = self.family
        if mt == "opt":
            p = "model.decoder.layers.%d." % i
            n = dict(in_norm=p + "self_attn_layer_norm", post_norm=p + "final_layer_norm",
                     q=p + "self_attn.q_proj", k=p + "self_attn.k_proj", v=p + "self_attn.v_proj",
                     o=p + "self_attn.out_proj", fc1=p + "fc1", down=p + "fc2")
        elif mt == "phi":
            p = "model.layers.%d." % i
            n = dict(in_norm=p + "input_layernorm", post_norm=None,
                     q=p + "self_attn.q_proj", k=p + "self_attn.k_proj", v=p + "self_attn.v_proj",
                     o=p + "self_attn.dense", fc1=p + "mlp.fc1", down=p + "mlp.fc2")
            if self.qk_norm:
                n.update(q_norm=p + "self_attn.q_layernorm", k_norm=p + "self_attn.k_layernorm")
        else:
            p = "model.layers.%d." % i
            n = dict(in_norm=p + "input_layernorm", post_norm=p + "post_attention_layernorm",
                     o=p + "self_attn.o_proj", down=p + "mlp.down_proj")
            if mt == "phi3":
                n.update(qkv=p + "self_attn.qkv_proj", gate_up=p + "mlp.gate_up_proj")
            else:
                n.update(q=p + "self_attn.q_proj", k=p + "self_attn.k_proj", v=p + "self_attn.v_proj",
                         gate=p + "mlp.gate_proj", up=p + "mlp.up_proj")
            if self.qk_norm:
                n.update(q_norm=p + "self_attn.q_norm", k_norm=p + "self_attn.k_norm")
        n.setdefault("q_norm", None)
        n.setdefault("k_norm", None)
        n["prefix"] = p
        n["attn_readers"] = [n["qkv"]] if "qkv" in n else [n["q"], n["k"], n["v"]]
        if "gate_up" in n:
            n["mlp_readers"] = [n["gate_up"]]
        elif "fc1" in n:
            n["mlp_readers"] = [n["fc1"]]
        else:
            n["mlp_readers"] = [n["gate"], n["up"]]
        n["attn_writer"], n["mlp_writer"] = n["o"], n["down"]
        if self.parallel:
            n["shortcut"] = p + "shortcut_Q"
        else:
            n["attn_shortcut"], n["mlp_shortcut"] = p + "attn_shortcut_Q", p + "mlp_shortcut_Q"
        return n


def arch_of(config):
    return Arch(config)


def embed_scale(arch, dtype=None):
    """Gemma multiplies the embedding by sqrt(hidden_size) as a tensor of the
    model's dtype; the other families do not scale."""
    if arch.family != "gemma":
        return 1.0
    return float(round_to_dtype(math.sqrt(arch.D), dtype or "F64"))


# ---------------------------------------------------------------- forward pieces

def rmsn(x, D, eps, gamma=None):
    """x / sqrt(sum(x²)/D + eps) (· γ); D is the ORIGINAL width."""
    y = x / np.sqrt((x * x).sum(-1, keepdims=True) / D + eps)
    return y * gamma if gamma is not None else y


def _layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    y = xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + eps)
    y = y * w
    return y + b if b is not None else y


def is_sliced(arch, t):
    return (arch.final_norm + ".weight") not in t


def norm(arch, t, name, x):
    """The norm `name` (a prefix) of arch applied to x; weightless RMSN over the
    original D when the weight tensor is absent (a sliced model)."""
    w = t.get(name + ".weight")
    if w is None:
        return rmsn(x, arch.D, arch.eps)
    if arch.norm == "ln":
        return _layernorm(x, w, t.get(name + ".bias"), arch.eps)
    if arch.norm == "rms1p":
        return rmsn(x, x.shape[-1], arch.eps, 1.0 + w)
    return rmsn(x, x.shape[-1], arch.eps, w)


# None, or f(weight_name, x, W) -> x·Wᵀ: how every linear layer and the head
# multiply (tests/test_gguf.py sets it to emulate llama.cpp's quantized dot
# products: activations rounded to q8_0/q8_1 blocks or fp16 first).
MATMUL_HOOK = None


def _mm(name, x, w):
    return MATMUL_HOOK(name, x, w) if MATMUL_HOOK is not None else x @ w.T


def _lin(t, name, x):
    y = _mm(name + ".weight", x, t[name + ".weight"])
    b = t.get(name + ".bias")
    return y + b if b is not None else y


def _act(name, x):
    if name in ("silu", "swish"):
        return x / (1.0 + np.exp(-x))
    if name == "relu":
        return np.maximum(x, 0)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
    if name == "gelu":
        erf = np.frompyfunc(math.erf, 1, 1)
        return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(x.dtype))).astype(x.dtype)
    raise Unsupported("activation %r" % name)


def _rope(x, cos, sin, rd):
    """x (B, h, T, hd); cos/sin (T, rd/2); rotate-half on the first rd dims."""
    if rd == 0:
        return x
    h = rd // 2
    x1, x2, rest = x[..., :h], x[..., h:rd], x[..., rd:]
    parts = [x1 * cos - x2 * sin, x2 * cos + x1 * sin]
    if rest.shape[-1]:
        parts.append(rest)
    return np.concatenate(parts, axis=-1)


def _rope_tables(arch, T, dtype=np.float64):
    ang = np.arange(T, dtype=np.float64)[:, None] * arch.inv_freq[None, :]
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


def _mask(T, window, dtype=np.float64):
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    bad = j > i
    if window:
        bad |= (i - j) >= window
    m = np.zeros((T, T), dtype=dtype)
    m[bad] = -np.inf
    return m


def _ctx_cache(arch, T, dtype):
    key = (T, np.dtype(dtype).str)
    cache = arch.__dict__.setdefault("_cache", {})
    if key not in cache:
        cos, sin = _rope_tables(arch, T, dtype)
        cache[key] = (cos, sin, {w: _mask(T, w, dtype) for w in set(arch.windows)})
    return cache[key]


def attn(arch, t, lay, xn, i):
    """The attention block of layer i on normalized input xn (B, T, d_in);
    returns the output projection's result (B, T, rows of o)."""
    B, T, _ = xn.shape
    H, KV, hd = arch.H, arch.KV, arch.hd
    cos, sin, masks = _ctx_cache(arch, T, xn.dtype)
    if "qkv" in lay:
        qkv = _lin(t, lay["qkv"], xn)
        q, k, v = qkv[..., :H * hd], qkv[..., H * hd:(H + KV) * hd], qkv[..., (H + KV) * hd:]
    else:
        q, k, v = _lin(t, lay["q"], xn), _lin(t, lay["k"], xn), _lin(t, lay["v"], xn)
    q = q.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
    k = k.reshape(B, T, KV, hd).transpose(0, 2, 1, 3)
    v = v.reshape(B, T, KV, hd).transpose(0, 2, 1, 3)
    if lay["q_norm"]:
        if arch.qk_norm == "ln":
            q = _layernorm(q, t[lay["q_norm"] + ".weight"], t.get(lay["q_norm"] + ".bias"), arch.eps)
            k = _layernorm(k, t[lay["k_norm"] + ".weight"], t.get(lay["k_norm"] + ".bias"), arch.eps)
        else:
            q = rmsn(q, hd, arch.eps, t[lay["q_norm"] + ".weight"])
            k = rmsn(k, hd, arch.eps, t[lay["k_norm"] + ".weight"])
    q, k = _rope(q, cos, sin, arch.rot_dim), _rope(k, cos, sin, arch.rot_dim)
    rep = H // KV
    if rep > 1:  # HF repeat_kv: head h reads kv head h // rep
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + masks[arch.windows[i]]
    s = s - s.max(-1, keepdims=True)
    pr = np.exp(s)
    pr /= pr.sum(-1, keepdims=True)
    ctx = (pr @ v).transpose(0, 2, 1, 3).reshape(B, T, H * hd)
    return _lin(t, lay["o"], ctx)


def mlp(arch, t, lay, xn):
    """The MLP block on normalized input xn; returns the down/fc2 result."""
    if "gate_up" in lay:
        gu = _lin(t, lay["gate_up"], xn)
        half = gu.shape[-1] // 2
        h = _act(arch.act, gu[..., :half]) * gu[..., half:]
    elif "fc1" in lay:
        h = _act(arch.act, _lin(t, lay["fc1"], xn))
    else:
        h = _act(arch.act, _lin(t, lay["gate"], xn)) * _lin(t, lay["up"], xn)
    return _lin(t, lay["down"], h)


def _shortcut(t, name, x):
    s = t.get(name) if name else None
    return x @ s if s is not None else x


def layer(arch, t, i, x):
    """One decoder layer, dense or sliced: x (B, T, d_in) -> (B, T, d_out)."""
    lay = arch.layers[i]
    if arch.parallel:
        xn = norm(arch, t, lay["in_norm"], x)
        return _shortcut(t, lay["shortcut"], x) + attn(arch, t, lay, xn, i) + mlp(arch, t, lay, xn)
    h = _shortcut(t, lay["attn_shortcut"], x) + attn(arch, t, lay, norm(arch, t, lay["in_norm"], x), i)
    return _shortcut(t, lay["mlp_shortcut"], h) + mlp(arch, t, lay, norm(arch, t, lay["post_norm"], h))


def embed(arch, t, toks, sliced=None, embed_scale_dtype=None):
    """Token (+ learned position) embeddings of toks (B, T); positions 0..T-1."""
    if sliced is None:
        sliced = is_sliced(arch, t)
    x = t[arch.embed][toks]
    if not sliced and arch.family == "gemma":
        x = x * embed_scale(arch, embed_scale_dtype)
    if arch.pos is not None:
        T = toks.shape[-1]
        x = x + t[arch.pos][np.arange(T) + arch.pos_offset]
    return x


def head(arch, t, x, sliced=None):
    """Final norm and head: x (B, T, width) -> logits (B, T, vocab)."""
    if sliced is None:
        sliced = is_sliced(arch, t)
    x = norm(arch, t, arch.final_norm, x)
    if sliced or not arch.tied:
        if "lm_head.weight" not in t:
            raise ValueError("%s: no lm_head.weight (config says tie_word_embeddings %s)"
                             % (arch.family, arch.tied))
        wn = "lm_head.weight"
    else:
        wn = arch.embed
    y = _mm(wn, x, t[wn])
    b = t.get("lm_head.bias")
    return y + b if b is not None else y


def forward_logits(model, toks, act_dtype=np.float64, embed_scale_dtype=None):
    """toks (B, T) int -> logits (B, T, vocab). act_dtype=np.float32 runs the
    math in float32 (weights cast), to mimic an fp32 implementation."""
    if isinstance(model, str):
        model = read_model(model)
    arch = model.get("arch") or Arch(model["config"])
    t = model["tensors"]
    if act_dtype != np.float64:
        t = {k: v.astype(act_dtype) for k, v in t.items()}
    sliced = is_sliced(arch, t)
    toks = np.asarray(toks)
    x = embed(arch, t, toks, sliced, embed_scale_dtype)
    for i in range(arch.L):
        x = layer(arch, t, i, x)
    return head(arch, t, x, sliced)


def nll_tokens(logits, toks):
    """The NLL of each of toks[:, 1:] predicted at positions 0..T-2: (B, T-1)."""
    z = logits[:, :-1, :]
    mx = z.max(-1, keepdims=True)
    lse = (mx + np.log(np.exp(z - mx).sum(-1, keepdims=True)))[..., 0]
    tgt = np.take_along_axis(z, toks[:, 1:, None], axis=-1)[..., 0]
    return lse - tgt


def nll_sum(logits, toks):
    """Sum of the NLL of toks[:, 1:] predicted at positions 0..T-2."""
    return float(nll_tokens(logits, toks).sum())


def forward_nll(model, tokens, seqlen, windows=None, return_logits=False, batch=16):
    """Mean NLL over non-overlapping windows of `seqlen` tokens (each window
    predicts its tokens 1..seqlen-1); `windows` caps the number of windows."""
    if isinstance(model, str):
        model = read_model(model)
    model = dict(model, arch=model.get("arch") or Arch(model["config"]))
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
        total += nll_sum(lg, tk)
        if return_logits:
            logits_all.append(lg.reshape(-1, lg.shape[-1]))
    nll = total / (nw * (seqlen - 1))
    if return_logits:
        return nll, np.concatenate(logits_all, axis=0)
    return nll


if __name__ == "__main__":
    import sys
    if len(sys.argv) < 4:
        print("usage: model_ref.py MODEL_DIR TOKENS.npy SEQLEN [WINDOWS]")
        sys.exit(64)
    wn = int(sys.argv[4]) if len(sys.argv) > 4 else None
    print("%.6f" % forward_nll(sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3]), wn))
