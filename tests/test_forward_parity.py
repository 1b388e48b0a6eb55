"""tests/test_forward_parity.py — `slicepipe eval` against the float64 numpy
reference (tests/ref/model_ref.py).

    test_forward_parity.py synthetic SLICEPIPE WORKDIR
        random models written by the reference: GQA F32 tied, untied, BF16 in
        2 shards, F16, llama3 rope_scaling, and a sliced model (shortcuts,
        weightless norms, per-layer widths); NLL within 1e-5 and logits within
        1e-4 + 1e-4·|ref|.
    test_forward_parity.py shared SLICEPIPE SHARED_DIR
        the shared models against ../shared/data/REFERENCE.md (stories260k
        1.76572 within 1e-4, llama2xs 2.30280 within 2e-3), and the reference
        itself against the same figures. Exit 77 (skip) when SHARED_DIR is absent.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import model_ref as ref  # noqa: E402

FAILS = []


def check(ok, msg):
    print(("ok   " if ok else "FAIL ") + msg, flush=True)
    if not ok:
        FAILS.append(msg)


def run_eval(exe, model_dir, tok_path, seqlen, logits_path=None, windows=None):
    cmd = [exe, "eval", model_dir, "--tokens", tok_path, "--seqlen", str(seqlen), "--json", "--quiet"]
    if logits_path:
        cmd += ["--dump-logits", logits_path, "--force"]
    if windows:
        cmd += ["--windows", str(windows)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    return json.loads(p.stdout)


def write_sliced_model(d, seed, D, heads, kv, head_dim, ffn, vocab, d_embed, widths):
    """A random model in slicepipe's sliced format: per-layer (d_in, d_mid,
    d_out), shortcuts, no norm weights, untied lm_head. Not the result of
    slicing anything; it exercises the sliced code path of eval."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)

    def lin(o, i):
        return rng.standard_normal((o, i)) / np.sqrt(i)

    def shortcut(i, o):  # rows of a random orthogonal matrix: well conditioned
        q, _ = np.linalg.qr(rng.standard_normal((D, D)))
        return q[:i, :o]

    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, d_embed)) / np.sqrt(D)}
    layers = []
    for l, (di, dm, do) in enumerate(widths):
        p = "model.layers.%d." % l
        t[p + "attn_shortcut_Q"] = shortcut(di, dm)
        t[p + "self_attn.q_proj.weight"] = lin(heads * head_dim, di)
        t[p + "self_attn.k_proj.weight"] = lin(kv * head_dim, di)
        t[p + "self_attn.v_proj.weight"] = lin(kv * head_dim, di)
        t[p + "self_attn.o_proj.weight"] = lin(dm, heads * head_dim)
        t[p + "mlp_shortcut_Q"] = shortcut(dm, do)
        t[p + "mlp.gate_proj.weight"] = lin(ffn, dm)
        t[p + "mlp.up_proj.weight"] = lin(ffn, dm)
        t[p + "mlp.down_proj.weight"] = lin(do, ffn)
        layers.append({"d_in": di, "d_mid": dm, "d_out": do})
    t["lm_head.weight"] = lin(vocab, widths[-1][2])
    cfg = {
        "architectures": ["SlicepipeSlicedForCausalLM"], "model_type": "slicepipe_sliced", "hidden_size": D,
        "intermediate_size": ffn, "num_hidden_layers": len(widths), "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": head_dim, "vocab_size": vocab,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float32",
        "slicepipe": {"base_model_type": "llama", "sparsity": 0.25, "d_embed": d_embed, "layers": layers},
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    ref.write_safetensors(os.path.join(d, "model.safetensors"), {n: ("F32", a) for n, a in t.items()})


def self_check_reference():
    # BF16 rounding: ties go to even, others to nearest.
    x = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -8 + 2.0 ** -20, -2.5], dtype=np.float32)
    got = ref.bf16_bits_to_f32(ref.f32_to_bf16_bits(x))
    want = np.array([1.0, 1.0 + 2.0 ** -6, 1.0 + 2.0 ** -7, -2.5], dtype=np.float32)
    check(np.array_equal(got, want), "reference BF16 round-to-nearest-even %s" % got.tolist())


def synthetic(exe, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    self_check_reference()
    D, L, H, KV, HD, FFN, V = 48, 3, 6, 2, 8, 80, 97
    T = 160  # crosses the attention (128) and head (64) row blocks
    tok = os.path.join(work, "tok.npy")
    ref.write_tokens(tok, 7, 3 * T + 37, V)  # 3 full windows and a dropped tail
    tokens = np.load(tok)
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 1024}  # hd 8: kept, kept, smoothed, divided
    cases = [
        ("gqa_f32_tied", dict(dtype="float32", tied=True, shards=1)),
        ("gqa_f32_untied", dict(dtype="float32", tied=False, shards=1)),
        ("gqa_bf16_2shards", dict(dtype="bfloat16", tied=True, shards=2)),
        ("gqa_f16_untied", dict(dtype="float16", tied=False, shards=1)),
        ("gqa_f32_llama3_rope", dict(dtype="float32", tied=True, shards=1, rope_scaling=llama3)),
    ]
    dirs = []
    for i, (name, kw) in enumerate(cases):
        d = os.path.join(work, name)
        ref.write_random_model(d, 100 + i, D, L, H, KV, HD, FFN, V, **kw)
        dirs.append((name, d))
    d = os.path.join(work, "sliced_f32")
    write_sliced_model(d, 200, D, H, KV, HD, FFN, V, 40, [(40, 32, 40), (40, 24, 32), (32, 40, 48)])
    dirs.append(("sliced_f32", d))

    nlls = {}
    for name, d in dirs:
        model = ref.read_model(d)
        want, want_lg = ref.forward_nll(model, tokens, T, return_logits=True)
        lp = os.path.join(work, name + ".logits.npy")
        r = run_eval(exe, d, tok, T, logits_path=lp)
        lg = np.load(lp)
        check(r["windows"] == 3 and r["tokens"] == 3 * (T - 1),
              "%s: windows %s tokens %s (want 3, %d)" % (name, r["windows"], r["tokens"], 3 * (T - 1)))
        check(abs(r["nll"] - want) <= 1e-5, "%s: nll %.8f vs reference %.8f (|diff| %.2e <= 1e-5)"
              % (name, r["nll"], want, abs(r["nll"] - want)))
        check(abs(r["ppl"] - np.exp(want)) <= 1e-4 * np.exp(want), "%s: ppl %.6f = exp(nll)" % (name, r["ppl"]))
        ok_shape = lg.dtype == np.float32 and lg.shape == want_lg.shape
        check(ok_shape, "%s: logits %s %s (want float32 %s)" % (name, lg.dtype, lg.shape, want_lg.shape))
        if ok_shape:
            err = np.abs(lg.astype(np.float64) - want_lg) - (1e-4 + 1e-4 * np.abs(want_lg))
            check(err.max() <= 0, "%s: logits max |diff| %.2e (max |ref| %.1f), within 1e-4 + 1e-4|ref|"
                  % (name, np.abs(lg - want_lg).max(), np.abs(want_lg).max()))
        nlls[name] = want

    # --windows N: only the first N windows.
    name, d = dirs[1]
    want2 = ref.forward_nll(d, tokens, T, windows=2)
    r = run_eval(exe, d, tok, T, windows=2)
    check(r["windows"] == 2 and abs(r["nll"] - want2) <= 1e-5,
          "%s --windows 2: nll %.8f vs reference %.8f" % (name, r["nll"], want2))
    # The cases must differ, or the comparisons above would prove little.
    vals = sorted(nlls.values())
    check(min(b - a for a, b in zip(vals, vals[1:])) > 1e-3, "reference NLLs of the cases differ: %s"
          % {k: round(v, 5) for k, v in nlls.items()})


def shared(exe, sh):
    if not os.path.isdir(os.path.join(sh, "models")):
        print("SKIP: %s absent" % sh)
        return 77
    tok = os.path.join(sh, "data", "tinystories", "eval.tok512.npy")
    tokens = np.load(tok)
    for model, want, tol in (("stories260k", 1.76572, 1e-4), ("llama2xs", 2.30280, 2e-3)):
        d = os.path.join(sh, "models", model)
        r = run_eval(exe, d, tok, 256)
        check(r["windows"] == 424, "%s: %s windows (want 424)" % (model, r["windows"]))
        check(abs(r["nll"] - want) <= tol, "%s: slicepipe nll %.6f vs REFERENCE.md %.5f (|diff| %.2e <= %g)"
              % (model, r["nll"], want, abs(r["nll"] - want), tol))
        mine = ref.forward_nll(d, tokens, 256)
        # ../shared/data/REFERENCE.md prints 5 decimals: agreement to rounding is 5e-6.
        check(abs(mine - want) <= 6e-6, "%s: numpy reference nll %.6f vs REFERENCE.md %.5f" % (model, mine, want))
        check(abs(r["nll"] - mine) <= 1e-4, "%s: slicepipe vs numpy reference |diff| %.2e <= 1e-4"
              % (model, abs(r["nll"] - mine)))
    return 0


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("synthetic", "shared"):
        print(__doc__)
        return 64
    mode, exe, path = sys.argv[1:]
    rc = synthetic(exe, path) if mode == "synthetic" else shared(exe, path)
    if rc:
        return rc
    print("%d failure(s)" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
