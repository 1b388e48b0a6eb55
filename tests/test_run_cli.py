#!/usr/bin/python3
"""test_run_cli.py — `slicepipe run` end to end through the command line.

usage: test_run_cli.py SLICEPIPE WORKDIR SHARED_DIR GROUP

GROUP "reference": the shared models against ../shared/data/REFERENCE.md, an
  independent float64 implementation (calibration: the first 64 windows of 256
  tokens of calib.tok512.npy; evaluation: all 424 windows of eval.tok512.npy):
    stories260k 0.0  -> the dense NLL 1.76572 within 1e-5 (invariance)
    stories260k 0.125, 0.25, 0.5 -> 2.21614, 3.15845, 4.83322 within 1e-4
    llama2xs 0.25, BF16 output -> 2.62052 within 2e-3
  Exits 77 (skip) when SHARED_DIR is absent.
GROUP "local": needs nothing outside the repository:
    - invariance on a random GQA model with an untied head: sparsity 0.0 gives
      logits equal to the dense model's within 1e-4 relative;
    - determinism: two runs give byte-identical model files and identical
      slicing.json apart from timings;
    - sharding: a small shard_bytes gives several shards + an index whose
      evaluation equals the single-file output's, and config.json's slicepipe
      block holds the widths d = floor((1-s)·D) rounded down to round_to;
    - manifest errors at the command line: exit 64 with the line number and
      nothing created; a missing model: 66;
    - --version lists the backends and the families (tests/sp_families.py
      parses the list), and synth names every family for an unknown --arch;
    - a seqlen past OPT's learned positions: run ([calibration] and [eval])
      and eval refuse with 64 and the one message (a RoPE model's warning is
      test_hostile.py's).
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import model_ref  # noqa: E402
import sp_families  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def write_manifest(path, model, calib, seqlen, nsamples, sparsity, out, extra="", slicing=None):
    """slicing: [slicing] lines in place of sparsity = SPARSITY."""
    slicing = slicing or f"sparsity = {sparsity}\n"
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{model}"\n[calibration]\ntokens = "{calib}"\nseqlen = {seqlen}\n'
                f'nsamples = {nsamples}\n[slicing]\n{slicing}round_to = 8\n'
                f'[output]\npath = "{out}"\n{extra}')


def slice_and_eval(sp, work, name, model, calib, seqlen, nsamples, sparsity, evaltok, eseq, extra=""):
    man = os.path.join(work, name + ".toml")
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    write_manifest(man, model, calib, seqlen, nsamples, sparsity, out, extra)
    r = run([sp, "run", man, "--quiet"])
    if r.returncode != 0:
        check(False, f"{name}: slicepipe run exit {r.returncode}: {r.stderr.strip()}")
        return None, out
    e = run([sp, "eval", out, "--tokens", evaltok, "--seqlen", str(eseq), "--json", "--quiet"])
    if e.returncode != 0:
        check(False, f"{name}: slicepipe eval exit {e.returncode}: {e.stderr.strip()}")
        return None, out
    return json.loads(e.stdout)["nll"], out


def group_reference(sp, work, shared):
    if not os.path.isdir(shared):
        print(f"SKIP: {shared} absent; the REFERENCE.md parity needs ../shared")
        sys.exit(77)
    data = os.path.join(shared, "data", "tinystories")
    calib, evaltok = os.path.join(data, "calib.tok512.npy"), os.path.join(data, "eval.tok512.npy")
    cases = [("stories260k", 0.0, 1.76572, 1e-5, ""),
             ("stories260k", 0.125, 2.21614, 1e-4, ""),
             ("stories260k", 0.25, 3.15845, 1e-4, ""),
             ("stories260k", 0.5, 4.83322, 1e-4, ""),
             ("llama2xs", 0.25, 2.62052, 2e-3, 'dtype = "bf16"\n')]
    for model, s, ref, tol, extra in cases:
        nll, _ = slice_and_eval(sp, work, f"{model}-{s}", os.path.join(shared, "models", model), calib, 256, 64, s,
                                evaltok, 256, extra)
        if nll is not None:
            check(abs(nll - ref) <= tol, f"{model} sparsity {s}: nll {nll:.6f} vs REFERENCE.md {ref} "
                                         f"(|diff| {abs(nll - ref):.2e} <= {tol:g})")


def files_of(d):
    return sorted(f for f in os.listdir(d) if not f.endswith(".tmp") and not f.startswith("."))


def group_local(sp, work):
    model = os.path.join(work, "rand")
    model_ref.write_random_model(model, seed=7, D=64, L=3, heads=8, kv=4, head_dim=8, ffn=96, vocab=101,
                                 tied=False)
    calib, evaltok = os.path.join(work, "calib.npy"), os.path.join(work, "eval.npy")
    model_ref.write_tokens(calib, 1, 32 * 64, 101)
    model_ref.write_tokens(evaltok, 2, 8 * 64, 101)

    # Invariance: logits of the rotated, unsliced model equal the dense ones.
    _, out0 = slice_and_eval(sp, work, "inv", model, calib, 64, 16, 0.0, evaltok, 64, 'dtype = "f32"\n')
    la, lb = os.path.join(work, "dense.npy"), os.path.join(work, "inv.npy")
    ra = run([sp, "eval", model, "--tokens", evaltok, "--seqlen", "64", "--quiet", "--force", "--dump-logits", la])
    rb = run([sp, "eval", out0, "--tokens", evaltok, "--seqlen", "64", "--quiet", "--force", "--dump-logits", lb])
    check(ra.returncode == 0 and rb.returncode == 0, "eval with --dump-logits on dense and rotated models")
    if ra.returncode == 0 and rb.returncode == 0:
        a, b = np.load(la).astype(np.float64), np.load(lb).astype(np.float64)
        rel = np.max(np.abs(a - b)) / np.max(np.abs(a))
        check(a.shape == b.shape and rel <= 1e-4, f"sparsity 0.0 logits equal dense within 1e-4 relative ({rel:.2e})")
        # A wrong rotation would not be invariant: the test can fail.
        check(np.max(np.abs(a)) > 1.0, "logits are non-trivial")

    # Determinism.
    # 32 windows of 64: layer passes of 16 windows (1024 rows, sp_layer_group),
    # so spill chunks of 16 or of all 32.
    _, o1 = slice_and_eval(sp, work, "det1", model, calib, 64, 32, 0.25, evaltok, 64)
    _, o2 = slice_and_eval(sp, work, "det2", model, calib, 64, 32, 0.25, evaltok, 64)
    same = files_of(o1) == files_of(o2)
    for f in files_of(o1):
        if f in ("slicing.json", "report.html") or not same:
            continue
        with open(os.path.join(o1, f), "rb") as x, open(os.path.join(o2, f), "rb") as y:
            a, b = x.read(), y.read()
        if f == "config.json":
            a, b = a.replace(b"det1", b"detX"), b.replace(b"det2", b"detX")
        same = same and a == b
    j1, j2 = json.load(open(os.path.join(o1, "slicing.json"))), json.load(open(os.path.join(o2, "slicing.json")))
    for j in (j1, j2):
        j.pop("timing", None), j.pop("peak_rss_bytes", None), j.pop("model", None), j.pop("stages", None)
    check(same and j1 == j2, "two runs give byte-identical model files and slicing.json")

    # Out of core: a memory budget that forces spill chunks of one layer pass
    # (16 windows) gives the same bytes as a run whose chunks hold every
    # window; the spill is removed.
    _, o3 = slice_and_eval(sp, work, "det3", model, calib, 64, 32, 0.25, evaltok, 64, '[resources]\nmemory = "31MB"\n')
    dry = run([sp, "run", os.path.join(work, "det3.toml"), "--dry-run"])
    import re
    mm = re.search(r"chunks of (\d+) windows\s+\(layer passes of (\d+) at a time", dry.stdout)
    check(dry.returncode == 0 and mm and int(mm.group(1)) == 16 and int(mm.group(2)) == 16,
          f"a 31MB budget splits the 32 windows into two spill chunks of one 16-window pass: "
          f"{mm.group(0) if mm else dry.stdout}")
    same = True
    for f in files_of(o1):
        if f.endswith(".safetensors"):
            same = same and open(os.path.join(o1, f), "rb").read() == open(os.path.join(o3, f), "rb").read()
    check(same and files_of(o1) == files_of(o3), "small spill chunks give byte-identical output to all-window chunks")
    left = sorted(os.listdir(os.path.join(o3, ".slicepipe")))
    check(left == ["journal", "lock"], f"a finished job keeps only its journal and lock; spills and bases removed ({left})")

    # eval streams too: tiny chunks give the identical NLL.
    e1 = run([sp, "eval", o3, "--tokens", evaltok, "--seqlen", "64", "--json", "--quiet"])
    e2 = run([sp, "eval", o3, "--tokens", evaltok, "--seqlen", "64", "--json", "--quiet", "--memory", "20KB"])
    check(e1.returncode == 0 and e2.returncode == 0 and json.loads(e1.stdout)["nll"] == json.loads(e2.stdout)["nll"],
          "eval with 1-window chunks (--memory 20KB) gives the identical NLL")

    # bf16 spill: runs, and moves the NLL only a little (the figure is printed).
    nb, _ = slice_and_eval(sp, work, "bf16spill", model, calib, 64, 16, 0.25, evaltok, 64,
                           '[resources]\nspill_dtype = "bf16"\n')
    n32, _ = slice_and_eval(sp, work, "f32spill", model, calib, 64, 16, 0.25, evaltok, 64)
    check(nb is not None and n32 is not None and 0 < abs(nb - n32) < 2e-2,
          f"bf16 spill NLL {nb} vs f32 spill {n32} (cost {abs(nb - n32) if nb and n32 else float('nan'):.2e} nats)")

    # Sharding, widths in config.json.
    nll1, _ = slice_and_eval(sp, work, "one", model, calib, 64, 16, 0.3, evaltok, 64)
    nlls, osh = slice_and_eval(sp, work, "sharded", model, calib, 64, 16, 0.3, evaltok, 64, 'shard_bytes = "40KB"\n')
    shards = [f for f in files_of(osh) if f.endswith(".safetensors")]
    check(len(shards) >= 3 and "model.safetensors.index.json" in files_of(osh),
          f"shard_bytes 40KB gives several shards and an index ({len(shards)} shards)")
    check(nll1 is not None and nll1 == nlls, f"sharded output evaluates identically ({nll1} vs {nlls})")
    cfg = json.load(open(os.path.join(osh, "config.json")))
    d = int(np.floor(0.7 * 64)) // 8 * 8  # 44 -> 40
    widths = [(L["d_in"], L["d_mid"], L["d_out"]) for L in cfg["slicepipe"]["layers"]]
    check(widths == [(d, d, d), (d, d, d), (d, d, 64)] and cfg["slicepipe"]["d_embed"] == d
          and cfg["tie_word_embeddings"] is False, f"config.json widths {widths} (d={d}, last d_out=D)")

    # A checkpoint that contradicts its config.json is refused before anything
    # is allocated, naming the file, the tensor and the reason.
    def with_config(name, **changes):
        d = os.path.join(work, name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(model, d)
        cfg = json.load(open(os.path.join(d, "config.json")))
        cfg.update(changes)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        return run([sp, "inspect", d])
    r = with_config("cfg-width", intermediate_size=97)
    check(r.returncode == 65 and "mlp.gate_proj.weight" in r.stderr and "contradicts config.json" in r.stderr,
          f"shape contradicting config.json: exit 65 naming the tensor ({r.stderr.strip()})")
    r = with_config("cfg-dtype", torch_dtype="bfloat16")
    check(r.returncode == 65 and "dtype F32 contradicts" in r.stderr and "model.safetensors" in r.stderr,
          f"dtype contradicting config.json: exit 65 ({r.stderr.strip()})")
    r = with_config("cfg-layers", num_hidden_layers=4)
    check(r.returncode == 65 and "model.layers.3." in r.stderr and "missing" in r.stderr,
          f"a layer config.json implies but the checkpoint lacks: exit 65 ({r.stderr.strip()})")
    r = with_config("cfg-absurd", hidden_size=10**9)
    check(r.returncode == 65 and "hidden_size" in r.stderr, f"absurd hidden_size: exit 65 ({r.stderr.strip()})")
    r = with_config("cfg-untied", tie_word_embeddings=False)
    check(r.returncode == 0, f"an untied head that exists: ok ({r.stderr.strip()})")
    tied = os.path.join(work, "rand-tied")
    model_ref.write_random_model(tied, seed=8, D=64, L=1, heads=8, kv=4, head_dim=8, ffn=96, vocab=101, tied=True)
    cfg = json.load(open(os.path.join(tied, "config.json")))
    cfg["tie_word_embeddings"] = False
    json.dump(cfg, open(os.path.join(tied, "config.json"), "w"))
    r = run([sp, "inspect", tied])
    check(r.returncode == 65 and "lm_head.weight" in r.stderr, f"untied config without lm_head: exit 65 ({r.stderr.strip()})")

    # Activations that overflow to Inf: exit 65 naming the layer; that layer is
    # not committed (the journal stops at the one before).
    over = os.path.join(work, "overflow")
    model_ref.write_random_model(over, seed=3, D=64, L=3, heads=8, kv=4, head_dim=8, ffn=96, vocab=101, tied=False)
    t = model_ref.read_safetensors(os.path.join(over, "model.safetensors"))
    w = t["model.layers.1.mlp.down_proj.weight"]
    t["model.layers.1.mlp.down_proj.weight"] = np.sign(w) * 3e38
    model_ref.write_safetensors(os.path.join(over, "model.safetensors"),
                                {k: ("F32", v.astype(np.float32)) for k, v in t.items()})
    man_o = os.path.join(work, "overflow.toml")
    write_manifest(man_o, over, calib, 64, 16, 0.25, os.path.join(work, "overflow-out"))
    r = run([sp, "run", man_o, "--quiet"])
    st = run([sp, "status", os.path.join(work, "overflow-out")])
    check(r.returncode == 65 and "layer 1, MLP-block output" in r.stderr and "non-finite" in r.stderr
          and "1 of 3 done" in st.stdout, f"Inf activations: exit 65 naming the layer, not committed "
                                          f"({r.stderr.strip()}; {st.stdout.splitlines()[2:3]})")

    # Manifest errors at the command line.
    bad = os.path.join(work, "bad.toml")
    newout = os.path.join(work, "never")
    write_manifest(bad, model, calib, 64, 16, 0.25, newout, "colour = 3\n")
    r = run([sp, "run", bad])
    check(r.returncode == 64 and "bad.toml:12" in r.stderr and "colour" in r.stderr and not os.path.exists(newout),
          f"unknown key: exit 64 with file:line, nothing created ({r.returncode}: {r.stderr.strip()})")
    write_manifest(bad, model, calib, 64, 16, 1.0, newout)
    r = run([sp, "run", bad])
    check(r.returncode == 64 and "sparsity" in r.stderr, f"sparsity 1.0: exit 64 ({r.returncode})")
    write_manifest(bad, model, calib, 64, 16, 0.25, model)
    r = run([sp, "run", bad])
    check(r.returncode == 64, f"output == model: exit 64 ({r.returncode}: {r.stderr.strip()})")
    write_manifest(bad, os.path.join(work, "nomodel"), calib, 64, 16, 0.25, newout)
    r = run([sp, "run", bad])
    check(r.returncode == 66 and "nomodel" in r.stderr and not os.path.exists(newout),
          f"missing model: exit 66 naming it ({r.returncode}: {r.stderr.strip()})")
    write_manifest(bad, model, calib, 64, 1000, 0.25, newout)
    r = run([sp, "run", bad])
    check(r.returncode == 65 and "calib.npy" in r.stderr and not os.path.exists(newout),
          f"too few calibration tokens: exit 65 naming the file ({r.returncode}: {r.stderr.strip()})")
    write_manifest(bad, model, calib, 64, 16, 0.25, newout, '[resources]\nbackend = "cuda"\n')
    r = run([sp, "run", bad])
    check(r.returncode == 64 and "CUDA" in r.stderr and not os.path.exists(newout),
          f"backend cuda without a CUDA backend: exit 64 ({r.stderr.strip()})")
    # eval and generate resolve their backend as run does; both keep their buffers in host memory.
    ea = run([sp, "eval", model, "--tokens", evaltok, "--seqlen", "64", "--quiet", "--json"])
    eb = run([sp, "eval", model, "--tokens", evaltok, "--seqlen", "64", "--quiet", "--json", "--backend", "cpu"])
    check(ea.returncode == 0 and eb.returncode == 0 and json.loads(ea.stdout)["nll"] == json.loads(eb.stdout)["nll"],
          f"eval --backend cpu gives auto's NLL ({ea.stderr.strip()[-200:]}{eb.stderr.strip()[-200:]})")
    for cmd in (["eval", model, "--tokens", evaltok, "--seqlen", "64"], ["generate", model, "--prompt-ids", "1,2,3"]):
        r = run([sp, *cmd, "--backend", "gpu"])
        check(r.returncode == 64 and "unknown backend 'gpu'" in r.stderr,
              f"{cmd[0]} --backend gpu: exit 64 naming the choices ({r.returncode}: {r.stderr.strip()})")
        r = run([sp, *cmd, "--backend", "cuda"])
        check(r.returncode == 64 and "cuda" in r.stderr and len(r.stderr.strip().splitlines()) == 1,
              f"{cmd[0]} --backend cuda here: exit 64, one line ({r.returncode}: {r.stderr.strip()})")
    v = run([sp, "--version"])
    check(v.returncode == 0 and "cpu" in v.stdout and "usable" in v.stdout, f"--version lists the backends ({v.stdout!r})")
    fams = sp_families.families(sp)
    r = run([sp, "synth", os.path.join(work, "no-such-family"), "--arch", "no-such-family"])
    check(len(fams) >= 8 and fams.get("llama") == "llama" and fams.get("mistral") == "llama" and "opt" in fams
          and fams["opt"] is None and r.returncode == 64 and all(f in r.stderr for f in fams),
          f"--version lists the families with their llama.cpp architecture ({fams}); synth --arch names them ({r.stderr.strip()})")
    # one positions check (sp_model_check_positions) for run, [eval] and eval: learned positions refuse (64)
    opt = os.path.join(work, "opt-pos")
    r = run([sp, "synth", opt, "--arch", "opt", "--hidden", "32", "--layers", "1", "--ffn", "64", "--heads", "2",
             "--vocab", "64", "--max-pos", "32", "--tokens", "512", "--quiet"])
    optcal, optout, optman = os.path.join(opt, "calib.npy"), os.path.join(work, "opt-pos-out"), os.path.join(work, "opt-pos.toml")
    learned = "exceeds the model's 32 learned positions (max_position_embeddings)"
    for seqlen, extra, said in ((40, "", f"{optman}: [calibration] seqlen 40 {learned}"),
                                (16, f'[eval]\ntokens = "{optcal}"\nseqlen = 40\n', f"{optman}: [eval]: --seqlen 40 {learned}")):
        write_manifest(optman, opt, optcal, seqlen, 4, 0.25, optout, extra)
        r = run([sp, "run", optman, "--quiet"])
        check(r.returncode == 64 and said in r.stderr and not os.path.exists(optout),
              f"OPT seqlen past its learned positions: run refuses with 64 ({r.returncode}: {r.stderr.strip()})")
    r = run([sp, "eval", opt, "--tokens", optcal, "--seqlen", "40", "--quiet"])
    check(r.returncode == 64 and f"--seqlen 40 {learned}" in r.stderr,
          f"OPT seqlen past its learned positions: eval refuses with 64 ({r.returncode}: {r.stderr.strip()})")
    write_manifest(bad, model, calib, 64, 16, 0.25, newout, '[resources]\nmemory = "1MB"\n')
    r = run([sp, "run", bad])
    check(r.returncode == 64 and "memory" in r.stderr and not os.path.exists(newout),
          f"memory plan over budget: exit 64 saying what to change ({r.returncode}: {r.stderr.strip()})")

    # [slicing] params and policy = "stock", refused with 64 before any work, the manifest named. rand holds
    # 105,536 parameters (embedding and head 101·64 each, 3 layers of attention 12,288, MLP 3·64·96 and norms
    # 128, the final norm 64); the fewest a stock output at width 64 keeps is 54,848 (8 neurons a layer).
    def sliced_as(slicing, *opts):
        write_manifest(bad, model, calib, 64, 16, None, newout, slicing=slicing)
        return run([sp, "run", bad, *opts])
    for slicing, said in (
            ('policy = "stock"\n', 'policy = "stock" needs params = FRACTION'),
            ('policy = "stock"\nparams = 0.8\nsparsity = 0.25\n', "gives both sparsity and params"),
            ('params = 0.8\nsplit = 0.5\n', 'split belongs to policy = "stock"'),
            ('params = 0.8\nffn_score = "leverage"\n', 'ffn_score belongs to policy = "stock"'),
            ('params = 0.8\nffn_ridge = 0.01\n', 'ffn_ridge belongs to policy = "stock"'),
            ('policy = "stock"\nparams = 0.8\nbasis = "global"\n', 'basis belongs to policy = "slicegpt"'),
            ('policy = "stock"\nparams = 0\n', "params = 0 is out of range (0, 1]"),
            ('policy = "stock"\nparams = 1.25\n', "params = 1.25 is out of range (0, 1]"),
            ('policy = "stock"\nparams = 0.5\n', "params = 0.5 asks for at most 52768 of the dense model's 105536 "
             "parameters; at hidden width 64 the fewest this policy keeps is 54848 (8 neurons a layer); raise params or "
             "set split > 0"),
            ('policy = "stock"\nparams = 0.05\nsplit = 0.5\n', "raise params or split"),
            ('params = 0.05\n', "params = 0.05 asks for at most 5277 of the dense model's 105536 parameters, and the "
             "narrowest width this policy can write (d = 8) still keeps")):
        for opts in ((), ("--dry-run",)):
            r = sliced_as(slicing, *opts)
            check(r.returncode == 64 and said in r.stderr and "bad.toml" in r.stderr and not os.path.exists(newout),
                  f"[slicing] {slicing.strip()!r} {' '.join(opts)}: exit 64 saying why, nothing created "
                  f"({r.returncode}: {r.stderr.strip()})")
    r = sliced_as('policy = "stock"\nparams = 0.53\n', "--dry-run")
    check(r.returncode == 0 and "parameters: 105536 -> 54848 (0.5197 of dense; target 0.53), MLP 96 -> 8 neurons a "
          "layer\n" in r.stdout, f"stock at params 0.5, just above the fewest: the plan keeps 8 neurons a layer "
          f"({r.returncode}: {r.stdout.strip()[-300:]}{r.stderr.strip()})")


def main():
    sp, work, shared, group = sys.argv[1:5]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if group == "reference":
        group_reference(sp, os.path.abspath(work), os.path.abspath(shared))
    else:
        group_local(sp, os.path.abspath(work))
    print(f"{len(failures)} failed" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


main()
