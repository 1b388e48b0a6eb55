"""tests/test_families.py — every family of the architecture table, end to end,
against independent references (issue: seven model families).

  hf       each ../shared/hf-tiny fixture: `slicepipe eval --dump-logits` of the
           dense model matches HF transformers' own float64 logits within
           1e-5·max|logit| (F32); sliced at sparsity 0 (fused, rotated, mean-baked
           for LayerNorm families) it matches them again (the invariance check);
           tiny_opt350 (project_in/out, post-LayerNorm) is refused with 65 and the
           reason. policy = "stock": every family at params 1 matches HF's
           logits, at params 0.9 (with [output] gguf where the family has a
           llama.cpp architecture) it runs in eval with a smaller MLP width
           (OPT's ffn_dim) and different logits, and config.json's parameter
           counts are the files'; OPT and Phi-2 (LayerNorm: the MLP cut alone)
           refuse split > 0 (64), and OPT refuses [output] gguf (64). Skips (77)
           without ../shared/hf-tiny.
  synth    `slicepipe synth --arch F` for every family `slicepipe --version` lists
           (tests/sp_families.py; random norms and biases):
           the dense NLL matches the numpy float64 forward (tests/ref/model_ref.py);
           sliced at 0.25, the output has exactly the tensors of the numpy SliceGPT
           reference (tests/ref/slicegpt_ref.py), each within 2e-3·max|ref|, and the
           two sliced models' NLLs (numpy forward of each) agree within 2e-4; a run
           killed at the writer's second commit point resumes to byte-identical
           shards; inspect and verify pass on the output.

usage: test_families.py hf|synth SLICEPIPE WORKDIR [SHARED]
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import model_ref as mr  # noqa: E402
import slicegpt_ref as sr  # noqa: E402
import sp_families  # noqa: E402

fails = 0


def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        fails += 1


def run(args, env=None):
    e = dict(os.environ)
    e.pop("SLICEPIPE_KILL_AT", None)
    if env:
        e.update(env)
    return subprocess.run(args, capture_output=True, text=True, env=e)


def manifest(path, model, tokens, seqlen, nsamples, sparsity, out, slicing=None, output=""):
    """slicing: the [slicing] lines instead of sparsity = SPARSITY; output: more [output] lines."""
    slicing = slicing or f"sparsity = {sparsity}\n"
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{tokens}"\nseqlen = {seqlen}\n'
                f'nsamples = {nsamples}\n[slicing]\n{slicing}[output]\npath = "{out}"\n{output}'
                f'[resources]\nthreads = 1\n')
    return path


def shards(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            with open(os.path.join(d, f), "rb") as fh:
                out[f] = fh.read()
    return out


def test_hf(sp, work, shared):
    root = os.path.join(shared, "hf-tiny")
    if not os.path.isdir(root):
        print(f"skip: {root} is absent")
        sys.exit(77)
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        ref = json.load(open(os.path.join(d, "reference_logits.json")))
        seqs = np.array(ref["sequences"], dtype=np.int32)
        L = np.array(ref["logits"])
        B, T = seqs.shape
        toks = os.path.join(work, name + ".npy")
        np.save(toks, seqs.reshape(-1))
        lg = os.path.join(work, name + ".logits.npy")
        r = run([sp, "eval", d, "--tokens", toks, "--seqlen", str(T), "--dump-logits", lg, "--force", "--quiet"])
        if name == "tiny_opt350":
            check(r.returncode == 65 and "project_in/project_out" in r.stderr and "config.json" in r.stderr,
                  f"{name}: refused with 65 naming the reason ({r.stderr.strip()[:160]})")
            continue
        check(r.returncode == 0, f"{name}: eval exits 0 ({r.stderr.strip()[-200:]})")
        if r.returncode:
            continue
        scale = np.abs(L).max()
        err = np.abs(np.load(lg).reshape(L.shape) - L).max() / scale
        check(err <= 1e-5, f"{name}: dense logits match HF's within {err:.2e}·max|logit| (<= 1e-5)")
        # Fused and rotated at sparsity 0: calibration on random windows in the vocab.
        cal = os.path.join(work, name + ".calib.npy")
        np.save(cal, np.random.default_rng(5).integers(0, L.shape[2], size=8 * T).astype(np.int32))
        out = os.path.join(work, name + "-s0")
        shutil.rmtree(out, ignore_errors=True)
        r = run([sp, "run", manifest(os.path.join(work, name + ".toml"), d, cal, T, 8, 0.0, out), "--quiet"])
        check(r.returncode == 0, f"{name}: sliced at sparsity 0 ({r.stderr.strip()[-200:]})")
        if r.returncode:
            continue
        r = run([sp, "eval", out, "--tokens", toks, "--seqlen", str(T), "--dump-logits", lg, "--force", "--quiet"])
        check(r.returncode == 0, f"{name}: eval of the sliced model ({r.stderr.strip()[-200:]})")
        if r.returncode == 0:
            err = np.abs(np.load(lg).reshape(L.shape) - L).max() / scale
            check(err <= 1e-5, f"{name}: invariance: sparsity-0 logits match HF's within {err:.2e}·max|logit|")
        stock_hf(sp, work, name, d, cal, toks, T, L)


def stock_hf(sp, work, name, d, cal, toks, T, L):
    """policy = "stock" on an hf-tiny fixture: at params 1 (nothing to cut:
    HF's logits again) and at params 0.9 (a smaller MLP whose logits differ
    from the dense ones, and the parameter counts of its files). LayerNorm
    families (OPT, Phi-2) cut the MLP alone: split > 0 is refused (64)."""
    src = json.load(open(os.path.join(d, "config.json")))
    scale = np.abs(L).max()
    fk = "ffn_dim" if src["model_type"] == "opt" else "intermediate_size"
    gguf = src["model_type"] != "opt"  # llama.cpp has no OPT: [output] gguf is refused for it (64)
    if src["model_type"] in ("opt", "phi"):
        out = os.path.join(work, f"{name}-stock-split")
        shutil.rmtree(out, ignore_errors=True)
        man = manifest(os.path.join(work, f"{name}-stock.toml"), d, cal, T, 8, 0, out,
                       'policy = "stock"\nparams = 0.9\nsplit = 0.5\nround_to = 2\n')
        r = run([sp, "run", man, "--quiet"])
        check(r.returncode == 64 and "split = 0.5" in r.stderr and src["model_type"] in r.stderr and "LayerNorm" in r.stderr
              and "set split = 0" in r.stderr and not os.path.exists(out),
              f"{name}: policy stock with split 0.5 refused with 64 naming the family and the reason, nothing "
              f"written ({r.returncode}: {r.stderr.strip()[:200]})")
    if not gguf:
        out = os.path.join(work, f"{name}-stock-gguf")
        shutil.rmtree(out, ignore_errors=True)
        man = manifest(os.path.join(work, f"{name}-stock.toml"), d, cal, T, 8, 0, out,
                       'policy = "stock"\nparams = 0.9\nround_to = 2\n', 'gguf = "f32"\n')
        r = run([sp, "run", man, "--quiet"])
        check(r.returncode == 64 and "no llama.cpp architecture" in r.stderr and not os.path.exists(out),
              f"{name}: policy stock with [output] gguf refused with 64 ({r.returncode}: {r.stderr.strip()[:200]})")
    for params in (1, 0.9):
        out = os.path.join(work, f"{name}-stock{params}")
        shutil.rmtree(out, ignore_errors=True)
        # at 0.9 with [output] gguf: llama.cpp runs each of these at split 0 (stock.llamacpp), a tied
        # Gemma's head included, so the run must not refuse it
        man = manifest(os.path.join(work, f"{name}-stock.toml"), d, cal, T, 8, 0, out,
                       f'policy = "stock"\nparams = {params}\nround_to = 2\n',
                       'gguf = "f32"\n' if params < 1 and gguf else "")
        r = run([sp, "run", man, "--quiet"])
        check(r.returncode == 0 and (params == 1 or not gguf or os.path.exists(os.path.join(out, "model.gguf"))),
              f"{name}: policy stock at params {params}{' with [output] gguf' if params < 1 and gguf else ''} "
              f"({r.stderr.strip()[-200:]})")
        if r.returncode:
            continue
        lg = os.path.join(work, f"{name}-stock.logits.npy")
        r = run([sp, "eval", out, "--tokens", toks, "--seqlen", str(T), "--dump-logits", lg, "--force", "--quiet"])
        check(r.returncode == 0, f"{name}: eval of the stock output at params {params} ({r.stderr.strip()[-200:]})")
        if r.returncode:
            continue
        err = np.abs(np.load(lg).reshape(L.shape) - L).max() / scale
        cfg = json.load(open(os.path.join(out, "config.json")))
        n_in, n_out, sb = mr.stored_params(d), mr.stored_params(out), cfg["slicepipe"]
        check(sb["params_dense"] == n_in and sb["params_output"] == n_out and n_out <= params * n_in,
              f"{name}: params {params}: config.json counts {sb['params_dense']} -> {sb['params_output']}, the files "
              f"hold {n_in} -> {n_out} ({n_out / n_in:.3f} of dense)")
        if params == 1:
            check(err <= 1e-5 and cfg[fk] == src[fk],
                  f"{name}: stock at params 1 cuts nothing: logits match HF's within {err:.2e}·max|logit|")
        else:  # a no-op (params 1 above) stays within 1e-5 of HF's; random weights make the MLP's share small
            check(err > 1e-5 and cfg[fk] < src[fk] and cfg["model_type"] == src["model_type"]
                  and cfg["hidden_size"] == src["hidden_size"],
                  f"{name}: stock at params 0.9 is the stock {cfg['model_type']} with {fk} "
                  f"{src[fk]} -> {cfg[fk]}, its logits {err:.2e}·max|logit| from HF's")


def test_synth(sp, work):
    T, n = 32, 12
    for fam in sp_families.families(sp):
        d = os.path.join(work, fam)
        shutil.rmtree(d, ignore_errors=True)
        extra = {"mistral": ["--window", "8"], "phi3": ["--window", "16", "--partial-rotary", "0.5"],
                 "phi": ["--partial-rotary", "0.5"], "qwen2": ["--tied"]}.get(fam, [])
        r = run([sp, "synth", d, "--arch", fam, "--hidden", "48", "--layers", "2", "--ffn", "80", "--heads", "4",
                 "--kv-heads", "2", "--vocab", "150", "--dtype", "f32", "--tokens", str(2 * n * T), "--max-pos", "64",
                 "--seed", "11", "--quiet"] + extra)
        check(r.returncode == 0, f"{fam}: synth ({r.stderr.strip()[-200:]})")
        if r.returncode:
            continue
        cfg = json.load(open(os.path.join(d, "config.json")))
        check(cfg["model_type"] == fam, f"{fam}: config.json model_type")
        toks = mr.load_tokens(os.path.join(d, "calib.npy"))
        r = run([sp, "eval", d, "--tokens", os.path.join(d, "calib.npy"), "--seqlen", str(T), "--windows", str(n),
                 "--quiet", "--json"])
        dense_c = json.loads(r.stdout)["nll"] if r.returncode == 0 else float("nan")
        dense_np = mr.forward_nll(d, toks, T, windows=n)
        check(abs(dense_c - dense_np) < 1e-5, f"{fam}: dense NLL {dense_c:.7f} vs numpy {dense_np:.7f}")

        out = os.path.join(work, fam + "-s25")
        shutil.rmtree(out, ignore_errors=True)
        man = manifest(os.path.join(work, fam + ".toml"), d, os.path.join(d, "calib.npy"), T, n, 0.25, out)
        r = run([sp, "run", man, "--quiet"])
        check(r.returncode == 0, f"{fam}: sliced at 0.25 ({r.stderr.strip()[-200:]})")
        if r.returncode:
            continue
        W = mr.load_model_dir(d)[1]
        res = sr.slice_model(cfg, W, mr.windows(toks, T, n), 0.25)
        C = mr.read_model(out)["tensors"]
        R = res["tensors"]
        check(set(C) == set(R), f"{fam}: the output's tensors are the reference's "
                                f"(missing {sorted(set(R) - set(C))[:3]}, extra {sorted(set(C) - set(R))[:3]})")
        worst = max((np.abs(C[k] - R[k]).max() / (np.abs(R[k]).max() + 1e-30), k) for k in R if k in C)
        check(worst[0] <= 2e-3, f"{fam}: every tensor within {worst[0]:.1e}·max|ref| of the reference ({worst[1]})")
        ref_dir = os.path.join(work, fam + "-ref")
        sr.write_sliced(ref_dir, cfg, res)
        ev = mr.windows(toks, T)[n:2 * n]
        nll_c = mr.forward_nll(out, ev.reshape(-1), T)
        nll_r = mr.forward_nll(ref_dir, ev.reshape(-1), T)
        check(abs(nll_c - nll_r) < 2e-4, f"{fam}: held-out NLL of the sliced model {nll_c:.6f} vs reference {nll_r:.6f}")
        r = run([sp, "inspect", out])
        check(r.returncode == 0 and f"architecture: {fam}," in r.stdout, f"{fam}: inspect the sliced model")
        r = run([sp, "verify", out])
        check(r.returncode == 0, f"{fam}: verify ({r.stderr.strip()[-160:]})")

        good = shards(out)
        # The same job on the staged CPU backend (backend memory not host-shared: every upload and
        # download a GPU backend needs) gives the same bytes; a resume across backends is refused.
        out3 = out + "-staged"
        shutil.rmtree(out3, ignore_errors=True)
        man3 = manifest(os.path.join(work, fam + "-st.toml"), d, os.path.join(d, "calib.npy"), T, n, 0.25, out3)
        r = run([sp, "run", man3, "--quiet"], {"SLICEPIPE_STAGED_BACKEND": "1"})
        check(r.returncode == 0 and shards(out3) == good,
              f"{fam}: staged backend memory gives byte-identical shards ({r.stderr.strip()[-160:]})")
        if fam == "llama":
            shutil.rmtree(out3, ignore_errors=True)
            k = run([sp, "run", man3, "--quiet"], {"SLICEPIPE_STAGED_BACKEND": "1", "SLICEPIPE_KILL_AT": "writer:2"})
            r = run([sp, "run", man3, "--quiet"])
            check(k.returncode != 0 and r.returncode == 65 and "journal" in r.stderr.lower(),
                  f"{fam}: a resume on another backend is refused ({r.returncode}: {r.stderr.strip()[-160:]})")
        # Killed at the writer's second commit point (after the first layer), then resumed.
        out2 = out + "-resume"
        shutil.rmtree(out2, ignore_errors=True)
        man2 = manifest(os.path.join(work, fam + "-r.toml"), d, os.path.join(d, "calib.npy"), T, n, 0.25, out2)
        k = run([sp, "run", man2, "--quiet"], {"SLICEPIPE_KILL_AT": "writer:2"})
        r = run([sp, "run", man2, "--quiet"])
        check(k.returncode != 0 and r.returncode == 0 and shards(out2) == good,
              f"{fam}: killed (exit {k.returncode}) and resumed (exit {r.returncode}): shards byte-identical")


def test_table_rules(sp, work):
    """The table consumes every tensor: attention_bias biases are used, an
    unknown tensor is refused, never dropped."""
    base = os.path.join(work, "llama")
    cfg, W = mr.load_model_dir(base)
    toks = mr.load_tokens(os.path.join(base, "calib.npy"))
    rng = np.random.default_rng(3)
    b = os.path.join(work, "llama-bias")
    os.makedirs(b, exist_ok=True)
    W2 = dict(W)
    for l in range(cfg["num_hidden_layers"]):
        for p in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            w = W[f"model.layers.{l}.self_attn.{p}.weight"]
            W2[f"model.layers.{l}.self_attn.{p}.bias"] = 0.1 * rng.standard_normal(w.shape[0])
    mr.write_safetensors(os.path.join(b, "model.safetensors"), W2)
    json.dump(dict(cfg, attention_bias=True), open(os.path.join(b, "config.json"), "w"))
    r = run([sp, "eval", b, "--tokens", os.path.join(base, "calib.npy"), "--seqlen", "32", "--windows", "6", "--quiet",
             "--json"])
    got = json.loads(r.stdout)["nll"] if r.returncode == 0 else float("nan")
    want = mr.forward_nll(b, toks, 32, windows=6)
    check(abs(got - want) < 1e-5, f"attention_bias: the biases are used (NLL {got:.7f} vs numpy {want:.7f})")
    json.dump(dict(cfg, attention_bias=False), open(os.path.join(b, "config.json"), "w"))
    r = run([sp, "inspect", b])
    check(r.returncode == 65 and "self_attn.q_proj.bias" in r.stderr and "does not consume" in r.stderr,
          f"biases without attention_bias: refused, naming the tensor ({r.stderr.strip()[:140]})")


def main():
    mode, sp, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    if mode == "hf":
        test_hf(sp, work, sys.argv[4])
    else:
        test_synth(sp, work)
        test_table_rules(sp, work)
    print(f"{'PASS' if not fails else 'FAIL'}: {fails} failure(s)")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
