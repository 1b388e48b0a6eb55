#!/usr/bin/python3
"""tests/test_family_ref.py — the numpy float64 references of every family
(tests/ref/model_ref.py, tests/ref/slicegpt_ref.py) against HF transformers'
own float64 logits of the hf-tiny fixtures, and SliceGPT's invariance.

usage: test_family_ref.py HF_TINY_DIR      (exit 77, skip, when it is absent)

Checks:
  1. forward vs HF (tiny_opt, tiny_phi, tiny_qwen2, tiny_mistral, tiny_phi3,
     tiny_gemma): max|ref − HF| <= TOL_HF·max|HF| over the 3×16 logits.
     HF's "float64" run keeps float32 stages (RMSNorm upcast to float32,
     softmax in float32), so no float64 implementation can agree beyond
     ~1e-7 relative; where HF has none of them — position 0 of the LayerNorm
     families, where attention reads one key — the agreement must be exact
     (TOL_EXACT): that pins the embeddings, learned positions, LayerNorm, biases,
     MLP and head bit for bit.
  2. the tolerance discriminates: each family's own semantics, done wrong
     (position offset, partial rotary, tanh vs erf GELU, q/k/v biases, sliding
     window ±1, gate/up order, Gemma's 1+w and sqrt(D)), misses HF by more
     than 2·TOL_HF (the smallest, Phi's erf GELU, by 1.2e-6).
  3. refusals: tiny_opt350 (project_in/out, post-LN), MoE, Gemma-2, unknown
     rope_scaling: model_ref.Unsupported naming the reason.
  4. invariance: with random norm weights, LayerNorm biases and linear biases
     on each fixture (and a Qwen3 built from the Qwen2 fixture with q_norm/k_norm),
     fuse() and slice_model() at sparsity 0 (d = D) reproduce the dense
     reference logits within TOL_INV relative.
  5. sparsity 0.25 (round_to 2): the output has no norm weights, the
     shortcuts, an untied (vocab, D) head, embedding (vocab, d); the sliced model
     computes on the calibration windows exactly the signals the slicer
     PCA'd (TOL_SIG); it differs from the dense model; write_sliced() round-trips.
Exit 0 when all pass, 1 otherwise. A few seconds on one core.
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
import model_ref as mr  # noqa: E402
import slicegpt_ref as sg  # noqa: E402

FIXTURES = ["tiny_opt", "tiny_phi", "tiny_qwen2", "tiny_mistral", "tiny_phi3", "tiny_gemma"]
TOL_HF = 4e-7      # relative to max|logit|; measured <= 1.6e-7 (HF's float32 stages)
TOL_EXACT = 1e-12  # position 0 of the LayerNorm families; measured ~3e-16
TOL_INV = 1e-9     # invariance, relative to max|logit|; measured ~1e-14
TOL_SIG = 1e-10    # sliced forward vs the slicer's own signals

FAILS = []


def check(ok, msg):
    print(("ok   " if ok else "FAIL ") + msg, flush=True)
    if not ok:
        FAILS.append(msg)


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def load_fixture(root, name):
    d = os.path.join(root, name)
    model = mr.read_model(d)
    with open(os.path.join(d, "reference_logits.json")) as f:
        j = json.load(f)
    return model, np.array(j["sequences"], dtype=np.int64), np.array(j["logits"], dtype=np.float64)


def logits(arch, t, toks):
    return mr.forward_logits({"config": arch.config, "arch": arch, "tensors": t}, toks)


# ---------------------------------------------------------------- mutations

def _arch(config, **over):
    a = mr.Arch(config)
    for k, v in over.items():
        setattr(a, k, v)
    return a


def _full_rotary(config):
    a = mr.Arch(config)
    a.rot_dim = a.hd
    a.inv_freq = mr.rope_inv_freq(float(config.get("rope_theta", 10000.0)), a.hd, None)
    return a


def _swap_gate_up(t):
    t = dict(t)
    for k in list(t):
        if k.endswith("gate_up_proj.weight"):
            h = t[k].shape[0] // 2
            t[k] = np.concatenate([t[k][h:], t[k][:h]], axis=0)
    return t


def mutations(name, config, t):
    """[(what is done wrong, arch, tensors)]: each must miss HF's logits."""
    L = int(config["num_hidden_layers"])
    sw = config.get("sliding_window")
    out = []
    if name == "tiny_opt":
        out.append(("positions at offset 0 instead of 2", _arch(config, pos_offset=0), t))
        out.append(("GELU instead of ReLU", _arch(config, act="gelu_new"), t))
    if name == "tiny_phi":
        out.append(("full rotary instead of partial", _full_rotary(config), t))
        out.append(("erf GELU instead of gelu_new", _arch(config, act="gelu"), t))
    if name == "tiny_qwen2":
        out.append(("no q/k/v biases", mr.Arch(config), {k: v for k, v in t.items() if not k.endswith("proj.bias")}))
    if name in ("tiny_mistral", "tiny_phi3"):
        out.append(("no sliding window", _arch(config, windows=[None] * L), t))
        out.append(("sliding window + 1 (query sees i-j <= window)", _arch(config, windows=[sw + 1] * L), t))
        out.append(("sliding window - 1", _arch(config, windows=[sw - 1] * L), t))
    if name == "tiny_phi3":
        out.append(("full rotary instead of 0.75", _full_rotary(config), t))
        out.append(("gate_up_proj rows read as [up; gate]", mr.Arch(config), _swap_gate_up(t)))
    if name == "tiny_gemma":
        out.append(("erf GELU (config's hidden_act) instead of tanh", _arch(config, act="gelu"), t))
        out.append(("norm scale w instead of 1+w", _arch(config, norm="rms"), t))
        out.append(("no sqrt(hidden_size) on the embedding", _arch(config, family="gemma-unscaled"), t))
    return out


# ---------------------------------------------------------------- invariance helpers

def perturb(arch, t, seed):
    """Random norm weights (Gemma: the w of 1+w), LayerNorm biases and linear
    biases, so that fusion has something to fuse."""
    rng = np.random.default_rng(seed)
    t = dict(t)
    norms = [arch.final_norm] + [n for lay in arch.layers for n in (lay["in_norm"], lay["post_norm"]) if n]
    for n in norms:
        w = t[n + ".weight"]
        t[n + ".weight"] = (w + 0.3 * rng.standard_normal(w.shape)) if arch.norm == "rms1p" \
            else 1.0 + 0.3 * rng.standard_normal(w.shape)
        if n + ".bias" in t:
            t[n + ".bias"] = 0.2 * rng.standard_normal(w.shape)
    for k in sorted(t):
        if k.endswith(".bias") and not any(k.startswith(n + ".") for n in norms):
            t[k] = t[k] + 0.2 * rng.standard_normal(t[k].shape)
    return t


def make_qwen3(config, t, seed):
    """A Qwen3 from the Qwen2 fixture: q_norm/k_norm (head_dim), no q/k/v biases."""
    rng = np.random.default_rng(seed)
    c = dict(config, model_type="qwen3", architectures=["Qwen3ForCausalLM"], attention_bias=False)
    hd = int(c["hidden_size"]) // int(c["num_attention_heads"])
    c["head_dim"] = hd
    q = {k: v for k, v in t.items() if not k.endswith("proj.bias")}
    for i in range(int(c["num_hidden_layers"])):
        for n in ("q_norm", "k_norm"):
            q["model.layers.%d.self_attn.%s.weight" % (i, n)] = 1.0 + 0.3 * rng.standard_normal(hd)
    return c, q


def check_sliced(label, arch, dense_t, calib, toks):
    # sparsity 0: d = D, nothing sliced; the function must not change.
    dense = logits(arch, dense_t, toks)
    F = sg.fuse(arch, dense_t)
    check(not any(k.endswith("norm.weight") or k.endswith("layernorm.weight") or k.endswith("layer_norm.weight")
                  for k in F if "q_norm" not in k and "k_norm" not in k and "q_layernorm" not in k
                  and "k_layernorm" not in k),
          "%s: fuse() leaves no norm weights" % label)
    e = rel(logits(arch, F, toks), dense)
    check(e <= TOL_INV, "%s: fused model vs dense: rel %.2e <= %g" % (label, e, TOL_INV))
    r0 = sg.slice_model(arch.config, dense_t, calib, 0.0, 8)
    e0 = rel(logits(arch, r0["tensors"], toks), dense)
    check(r0["d"] == arch.D and e0 <= TOL_INV,
          "%s: invariance at sparsity 0 (d=%d=D): rel %.2e <= %g" % (label, r0["d"], e0, TOL_INV))

    # sparsity 0.25
    r = sg.slice_model(arch.config, dense_t, calib, 0.25, 2, signals=True)
    T, d, D = r["tensors"], r["d"], arch.D
    want = {arch.embed: (arch.vocab, d), "lm_head.weight": (arch.vocab, D)}
    if arch.pos is not None:
        want[arch.pos] = (dense_t[arch.pos].shape[0], d)
    for l, lay in enumerate(arch.layers):
        w = r["widths"]["layers"][l]
        if arch.parallel:
            want[lay["shortcut"]] = (w[0], w[1])
        else:
            want[lay["attn_shortcut"]] = (w[0], w[1])
            want[lay["mlp_shortcut"]] = (w[1], w[2])
        for rd in lay["attn_readers"]:
            want[rd + ".weight"] = (dense_t[rd + ".weight"].shape[0], w[0])
        for rd in lay["mlp_readers"]:
            want[rd + ".weight"] = (dense_t[rd + ".weight"].shape[0], w[0] if arch.parallel else w[1])
        want[lay["attn_writer"] + ".weight"] = (w[-1] if arch.parallel else w[1], dense_t[lay["attn_writer"] + ".weight"].shape[1])
        want[lay["mlp_writer"] + ".weight"] = (w[-1], dense_t[lay["mlp_writer"] + ".weight"].shape[1])
    bad = ["%s %s != %s" % (k, None if k not in T else T[k].shape, s) for k, s in want.items()
           if k not in T or T[k].shape != s]
    norms = [k for k in T if k.startswith(arch.final_norm) or any(
        k.startswith(lay["in_norm"] + ".") or (lay["post_norm"] and k.startswith(lay["post_norm"] + "."))
        for lay in arch.layers)]
    check(not bad and not norms and r["widths"]["layers"][-1][-1] == D,
          "%s: sparsity 0.25 d=%d: shapes of %d tensors, no norm weights, last d_out = D%s"
          % (label, d, len(want), (": " + "; ".join(bad[:4])) if bad else (" (norms %s)" % norms if norms else "")))
    x = mr.embed(arch, T, calib, sliced=True)
    errs = [rel(x, r["signals"][0])]
    for l in range(arch.L):
        x = mr.layer(arch, T, l, x)
        errs.append(rel(x, r["signals"][l + 1]))
    check(max(errs) <= TOL_SIG, "%s: the sliced model computes the slicer's signals on the calibration "
          "windows (worst rel %.2e <= %g)" % (label, max(errs), TOL_SIG))
    es = rel(logits(arch, T, toks), dense)
    check(es > 1e-3, "%s: sparsity 0.25 changes the logits (rel %.2e > 1e-3)" % (label, es))
    return r


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 64
    root = argv[1]
    if not os.path.isdir(os.path.join(root, "tiny_opt")):
        print("SKIP: %s absent" % root)
        return 77

    # 1 + 2: HF's logits and the discrimination of the tolerance.
    loaded = {}
    for name in FIXTURES:
        model, toks, hf = load_fixture(root, name)
        loaded[name] = (model, toks)
        arch = mr.Arch(model["config"])
        got = mr.forward_logits(model, toks)
        e = rel(got, hf)
        check(got.shape == hf.shape and e <= TOL_HF, "%s (%s): forward vs HF float64 logits: rel %.2e <= %g"
              % (name, arch.family, e, TOL_HF))
        if arch.norm == "ln":
            e0 = float(np.abs(got[:, 0] - hf[:, 0]).max() / np.abs(hf).max())
            check(e0 <= TOL_EXACT, "%s: position 0 (no float32 stage in HF) exact: rel %.2e <= %g"
                  % (name, e0, TOL_EXACT))
        for what, a, t in mutations(name, model["config"], model["tensors"]):
            em = rel(logits(a, t, toks), hf)
            check(em > 2 * TOL_HF, "%s: done wrong (%s) misses HF: rel %.2e > %g" % (name, what, em, 2 * TOL_HF))

    # 3: refusals.
    cfg350 = mr.read_model(os.path.join(root, "tiny_opt350"))["config"]
    qcfg = loaded["tiny_qwen2"][0]["config"]
    refusals = [
        ("tiny_opt350", cfg350, "post-LayerNorm"),
        ("opt with project_in/out only", dict(cfg350, do_layer_norm_before=True), "project_in"),
        ("Gemma-2", dict(loaded["tiny_gemma"][0]["config"], model_type="gemma2"), "gemma2"),
        ("Qwen2-MoE keys", dict(qcfg, num_experts=8), "mixture-of-experts"),
        ("yarn rope_scaling", dict(qcfg, rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_scaling"),
    ]
    for what, c, word in refusals:
        try:
            mr.Arch(c)
            check(False, "%s: refused (it was accepted)" % what)
        except mr.Unsupported as e:
            check(word in str(e), "%s: refused: %s" % (what, e))

    # 4 + 5: invariance and the sliced model, on every fixture with perturbed
    # norms and biases, and on a Qwen3.
    cases = []
    for i, name in enumerate(FIXTURES):
        model, toks = loaded[name]
        arch = mr.Arch(model["config"])
        cases.append((name, arch, perturb(arch, model["tensors"], 100 + i), toks))
    c3, t3 = make_qwen3(qcfg, loaded["tiny_qwen2"][0]["tensors"], 7)
    a3 = mr.Arch(c3)
    toks3 = loaded["tiny_qwen2"][1]
    ones = {k: (np.ones_like(v) if ".q_norm." in k or ".k_norm." in k else v) for k, v in t3.items()}
    e = rel(logits(a3, t3, toks3), logits(a3, ones, toks3))
    check(e > 1e-3, "qwen3: q_norm/k_norm weights change the logits (rel %.2e)" % e)
    cases.append(("qwen3 (from tiny_qwen2)", a3, perturb(a3, t3, 99), toks3))
    results = {}
    for label, arch, t, toks in cases:
        calib = np.random.default_rng(len(label)).integers(0, arch.vocab, size=(6, 16))
        results[label] = (arch, check_sliced(label, arch, t, calib, toks), toks)

    # write_sliced: the HF-named safetensors round-trip (F32).
    tmp = tempfile.mkdtemp(prefix="sp_family_ref_")
    try:
        for label in ("tiny_opt", "tiny_phi", "tiny_phi3"):
            arch, r, toks = results[label]
            out = os.path.join(tmp, label)
            sg.write_sliced(out, arch.config, r, "F32")
            back = mr.read_model(out)
            same = set(back["tensors"]) == set(r["tensors"])
            e = rel(mr.forward_logits(back, toks), logits(arch, r["tensors"], toks))
            check(same and not back["config"]["tie_word_embeddings"] and e <= 1e-5,
                  "%s: write_sliced round-trip: %d tensors by HF name, untied, F32 logits rel %.2e <= 1e-5"
                  % (label, len(back["tensors"]), e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if FAILS:
        print("FAILED: %d check(s)" % len(FAILS))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
