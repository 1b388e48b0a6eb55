#!/usr/bin/python3
"""tests/test_global_ref.py — `slicepipe run` with `[slicing] basis = "global"`
against the independent float64 numpy reference tests/ref/global_ref.py.

usage: test_global_ref.py SLICEPIPE WORKDIR SHARED_DIR   (exit 77, skip, when
       SHARED_DIR's models or hf-tiny fixtures are absent)

Cases:
  * stories260k (F32) at sparsity 0.25 and 0.0, weighting trace and raw,
    calibration the first 16 windows of 128 of calib.tok512.npy;
  * hf-tiny gemma, qwen2, mistral, phi3 at 0.25 (round_to 2; trace and raw)
    and 0.0 (trace), calibration 16 seeded random windows of 16 ids;
  * tiny_opt and tiny_phi (LayerNorm): refused, exit 64, naming LayerNorm.
Checks per slicing case (F32 output):
  1. exactly the reference's tensor set, every tensor F32 of the reference's
     shape, max|C − ref| <= TOL_W·max|ref| for each;
  2. the tensor set and shapes are what the stock HF class of the output's
     config.json builds (global_ref.expected_stock_shapes, from the config);
  3. config.json: hidden_size d, head_dim, rms_norm_eps = eps·D/d,
     tie_word_embeddings false, model_type/architectures and the other
     shape keys unchanged;
  4. NLL of the output folder by model_ref's DENSE (stock) forward vs
     `slicepipe eval OUTPUT --json` within TOL_NLL; the reference's own
     tensors within TOL_NLL_REF of it;
  5. sparsity 0: that NLL is the dense model's within TOL_NLL (invariance);
  6. discrimination: the C output at 0.25 trace misses the reference computed
     with the other weighting by more than 2·TOL_W (the check sees the
     weighting).
Exit 0 when all pass, 1 otherwise.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
import global_ref as gr  # noqa: E402
import model_ref as mr  # noqa: E402

TOL_W = 1e-4        # per tensor, relative to its max|.|
TOL_NLL = 1e-5      # numpy stock forward of the C output vs slicepipe eval; invariance
TOL_NLL_REF = 1e-4  # the reference's own tensors vs slicepipe eval
TINY = ["tiny_gemma", "tiny_qwen2", "tiny_mistral", "tiny_phi3"]
REFUSED = ["tiny_opt", "tiny_phi"]
SAME_KEYS = ["model_type", "architectures", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta", "sliding_window",
             "hidden_act", "hidden_activation"]

FAILS = []


def check(ok, msg):
    print(("ok   " if ok else "FAIL ") + msg, flush=True)
    if not ok:
        FAILS.append(msg)
    return ok


def run(args):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("SLICEPIPE_"):
            e.pop(k)
    return subprocess.run(args, capture_output=True, text=True, env=e)


def stored_dtype(d, name):
    m = mr.read_safetensors(os.path.join(d, "model.safetensors"), with_dtypes=True)[1] \
        if os.path.exists(os.path.join(d, "model.safetensors")) else None
    if m is None:
        idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"]
        m = mr.read_safetensors(os.path.join(d, idx[name]), with_dtypes=True)[1]
    return m[name]


def write_manifest(work, name, model, tokens, seqlen, nsamples, slicing):
    """WORK/NAME.toml: the model, its first NSAMPLES windows of SEQLEN tokens,
    the [slicing] lines SLICING, F32 output to WORK/NAME (removed first), one
    thread. -> (manifest path, output dir)."""
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{tokens}"\nseqlen = {seqlen}\n'
                f'nsamples = {nsamples}\n[slicing]\n{slicing}[output]\npath = "{out}"\ndtype = "f32"\n'
                f'[resources]\nthreads = 1\n')
    return path, out


def manifest(work, name, model, tokens, seqlen, nsamples, sparsity, round_to, weighting):
    return write_manifest(work, name, model, tokens, seqlen, nsamples, f'sparsity = {sparsity}\nround_to = {round_to}\n'
                          f'basis = "global"\nglobal_weighting = "{weighting}"\n')


def c_eval(sp, model_dir, tokens, seqlen, windows):
    r = run([sp, "eval", model_dir, "--tokens", tokens, "--seqlen", str(seqlen), "--windows", str(windows),
             "--threads", "1", "--json", "--quiet"])
    if r.returncode:
        return None, r.stderr.strip()[-300:]
    return json.loads(r.stdout)["nll"], ""


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def frob(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def compare_tensors(label, got, dtypes, ref, tol=TOL_W, err=rel, within="%g·max|ref|"):
    """The output's tensors against the reference's: the same names, all F32,
    each within tol by err (rel: of max|ref|; frob: relative Frobenius)."""
    names_ok = check(set(got) == set(ref), "%s: tensor set equals the reference's (%d)%s" % (
        label, len(ref), "" if set(got) == set(ref) else ": extra %s, missing %s"
        % (sorted(set(got) - set(ref))[:4], sorted(set(ref) - set(got))[:4])))
    bad_dt = sorted(k for k, v in dtypes.items() if v != "F32")
    check(not bad_dt, "%s: every output tensor is F32%s" % (label, (": " + ", ".join(bad_dt[:4])) if bad_dt else ""))
    worst, wname, bad = 0.0, None, []
    for k in sorted(set(got) & set(ref)):
        if got[k].shape != ref[k].shape:
            bad.append("%s shape %s != %s" % (k, got[k].shape, ref[k].shape))
            continue
        e = err(got[k], ref[k])
        if e > worst:
            worst, wname = e, k
        if e > tol:
            bad.append("%s %.2e" % (k, e))
    check(names_ok and not bad, "%s: every tensor within %s (worst %.2e, %s)%s"
          % (label, within % tol, worst, wname, ("; " + "; ".join(bad[:6])) if bad else ""))
    return worst


def check_config(label, cfg_in, cfg_out, d):
    a = mr.Arch(cfg_in)
    bad = []
    if cfg_out.get("hidden_size") != d:
        bad.append("hidden_size %r != %d" % (cfg_out.get("hidden_size"), d))
    if cfg_out.get("head_dim") != a.hd:
        bad.append("head_dim %r != %d" % (cfg_out.get("head_dim"), a.hd))
    eps = cfg_out.get("rms_norm_eps")
    want = a.eps * a.D / d
    if not isinstance(eps, (int, float)) or abs(eps - want) > 1e-12 * want:
        bad.append("rms_norm_eps %r != %r" % (eps, want))
    if cfg_out.get("tie_word_embeddings") is not False:
        bad.append("tie_word_embeddings %r" % cfg_out.get("tie_word_embeddings"))
    for k in SAME_KEYS:
        if cfg_in.get(k) != cfg_out.get(k):
            bad.append("%s %r -> %r" % (k, cfg_in.get(k), cfg_out.get(k)))
    check(not bad, "%s: config.json hidden_size %d, head_dim %d, eps %.6g, untied, family keys unchanged%s"
          % (label, d, a.hd, want, (": " + "; ".join(bad)) if bad else ""))


def check_stock_shapes(label, cfg_out, got):
    try:
        want = gr.expected_stock_shapes(cfg_out)
    except (mr.Unsupported, KeyError, ValueError) as e:
        check(False, "%s: the output config is a stock config (%s)" % (label, e))
        return
    bad = ["%s %s != %s" % (k, None if k not in got else got[k].shape, s) for k, s in want.items()
           if k not in got or tuple(got[k].shape) != tuple(s)]
    bad += ["%s not in the stock class" % k for k in got if k not in want]
    check(not bad, "%s: tensors are exactly the stock %s class of its config.json (%d)%s"
          % (label, cfg_out.get("model_type"), len(want), ("; " + "; ".join(bad[:4])) if bad else ""))


def slice_case(sp, work, label, model_dir, calib_path, calib_win, seqlen, sparsity, round_to, weighting,
               eval_path, eval_win, dense_nll, cache):
    cfg_in, W = mr.load_model_dir(model_dir)
    a = mr.Arch(cfg_in)
    in_dt = stored_dtype(model_dir, a.embed)
    man, out = manifest(work, label, model_dir, calib_path, seqlen, calib_win.shape[0], sparsity, round_to,
                        weighting)
    t0 = time.time()
    r = run([sp, "run", man, "--quiet"])
    if not check(r.returncode == 0, "%s: slicepipe run exits 0 (%.1f s)%s"
                 % (label, time.time() - t0, "" if r.returncode == 0 else
                    " (rc %d: %s)" % (r.returncode, r.stderr.strip()[-300:]))):
        return None
    key = (model_dir, weighting)
    if key not in cache:
        cache[key] = gr.global_basis(cfg_in, W, calib_win, weighting, embed_scale_dtype=in_dt)
    Q = cache[key][1]
    d = gr.sg.slice_width(a.D, sparsity, round_to)
    ref = gr.slice_global(cfg_in, W, Q, d, in_dt, "F32")
    got, dts = mr.read_safetensors(os.path.join(out, "model.safetensors"), with_dtypes=True)
    cfg_out = json.load(open(os.path.join(out, "config.json")))
    compare_tensors(label, got, dts, ref)
    check_config(label, cfg_in, cfg_out, d)
    check_stock_shapes(label, cfg_out, got)

    nll_c, err = c_eval(sp, out, eval_path, eval_win.shape[1], eval_win.shape[0])
    check(nll_c is not None, "%s: slicepipe eval of the output%s" % (label, (" (" + err + ")") if err else ""))
    nll_np = gr.stock_nll(out, eval_win, "F32")
    nll_ref = gr.stock_nll({"config": gr.stock_config(cfg_in, d), "tensors": mr.round_tensors(ref, "F32")},
                           eval_win, "F32")
    if nll_c is not None:
        check(abs(nll_np - nll_c) <= TOL_NLL, "%s: NLL of the output by the numpy stock forward %.7f vs slicepipe "
              "eval %.7f (|diff| %.1e <= %g)" % (label, nll_np, nll_c, abs(nll_np - nll_c), TOL_NLL))
        check(abs(nll_ref - nll_c) <= TOL_NLL_REF, "%s: NLL of the reference's tensors %.7f vs slicepipe eval "
              "(|diff| %.1e <= %g)" % (label, nll_ref, abs(nll_ref - nll_c), TOL_NLL_REF))
    if sparsity == 0.0:
        check(abs(nll_np - dense_nll) <= TOL_NLL and nll_c is not None and abs(nll_c - dense_nll) <= TOL_NLL,
              "%s: invariance: sliced NLL %.7f (numpy) / %s (eval) = dense %.7f within %g"
              % (label, nll_np, "%.7f" % nll_c if nll_c is not None else "-", dense_nll, TOL_NLL))
    return {"got": got, "cfg_in": cfg_in, "W": W, "d": d, "in_dt": in_dt, "nll": nll_c}


def discriminate(label, res, calib_win, weighting, cache, model_dir):
    """The C output (weighting w) must miss the reference with the other one."""
    other = "raw" if weighting == "trace" else "trace"
    key = (model_dir, other)
    if key not in cache:
        cache[key] = gr.global_basis(res["cfg_in"], res["W"], calib_win, other, embed_scale_dtype=res["in_dt"])
    ref = gr.slice_global(res["cfg_in"], res["W"], cache[key][1], res["d"], res["in_dt"], "F32")
    worst = max(rel(res["got"][k], ref[k]) for k in ref if k in res["got"] and res["got"][k].shape == ref[k].shape)
    check(worst > 2 * TOL_W, "%s: discrimination: the %s output misses the %s-weighted reference (worst rel "
          "%.2e > %g)" % (label, weighting, other, worst, 2 * TOL_W))


def main(argv):
    if len(argv) != 4:
        print(__doc__)
        return 64
    sp, work, shared = argv[1], os.path.abspath(argv[2]), os.path.abspath(argv[3])
    stories = os.path.join(shared, "models", "stories260k")
    calib_path = os.path.join(shared, "data", "tinystories", "calib.tok512.npy")
    eval_path = os.path.join(shared, "data", "tinystories", "eval.tok512.npy")
    tiny = os.path.join(shared, "hf-tiny")
    need = [stories, calib_path, eval_path] + [os.path.join(tiny, n) for n in TINY + REFUSED]
    missing = [p for p in need if not os.path.exists(p)]
    if missing:
        print("SKIP: %s absent" % missing[0])
        return 77
    t_start = time.time()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    # stories260k
    calib = mr.windows(mr.load_tokens(calib_path), 128, 16)
    ev = mr.windows(mr.load_tokens(eval_path), 128, 8)
    cfg, W = mr.load_model_dir(stories)
    dense = gr.stock_nll({"config": cfg, "tensors": W}, ev, "F32")
    dense_c, err = c_eval(sp, stories, eval_path, 128, 8)
    check(dense_c is not None and abs(dense_c - dense) <= TOL_NLL,
          "stories260k: dense NLL numpy %.7f vs slicepipe eval %s%s" % (dense, dense_c, err))
    cache = {}
    for sparsity in (0.25, 0.0):
        for w in ("trace", "raw"):
            label = "stories260k s%g %s" % (sparsity, w)
            res = slice_case(sp, work, label.replace(" ", "-"), stories, calib_path, calib, 128, sparsity, 8, w,
                             eval_path, ev, dense, cache)
            if res is not None and sparsity == 0.25:
                discriminate(label, res, calib, w, cache, stories)

    # hf-tiny families
    for name in TINY:
        d = os.path.join(tiny, name)
        cfg, W = mr.load_model_dir(d)
        a = mr.Arch(cfg)
        T = 16
        cal = np.random.default_rng(1234).integers(0, a.vocab, size=(16, T)).astype(np.int32)
        cal_path = os.path.join(work, name + ".calib.npy")
        np.save(cal_path, cal.reshape(-1))
        seqs = np.array(json.load(open(os.path.join(d, "reference_logits.json")))["sequences"], dtype=np.int64)
        ev_path = os.path.join(work, name + ".eval.npy")
        np.save(ev_path, seqs.reshape(-1).astype(np.int32))
        dt = stored_dtype(d, a.embed)
        dense = gr.stock_nll({"config": cfg, "tensors": W}, seqs, dt)
        cache = {}
        for sparsity, w in ((0.25, "trace"), (0.25, "raw"), (0.0, "trace")):
            label = "%s-s%g-%s" % (name, sparsity, w)
            res = slice_case(sp, work, label, d, cal_path, cal.astype(np.int64), T, sparsity, 2, w, ev_path,
                             seqs, dense, cache)
            if res is not None and sparsity == 0.25 and w == "trace":
                discriminate(label, res, cal.astype(np.int64), w, cache, d)

    # LayerNorm families are refused.
    for name in REFUSED:
        d = os.path.join(tiny, name)
        cal_path = os.path.join(work, name + ".calib.npy")
        np.save(cal_path, np.random.default_rng(1).integers(0, 11, size=4 * 16).astype(np.int32))
        man, out = manifest(work, name, d, cal_path, 16, 4, 0.25, 2, "trace")
        r = run([sp, "run", man, "--quiet"])
        check(r.returncode == 64 and "layernorm" in r.stderr.lower(),
              "%s: refused with 64 naming LayerNorm (rc %d: %s)" % (name, r.returncode, r.stderr.strip()[:200]))
        try:
            gr.slice_global(mr.read_model(d)["config"], mr.read_model(d)["tensors"], np.eye(16), 8)
            check(False, "%s: the reference refuses it too" % name)
        except mr.Unsupported:
            pass

    print("%.1f s" % (time.time() - t_start))
    if FAILS:
        print("FAILED: %d check(s)" % len(FAILS))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
