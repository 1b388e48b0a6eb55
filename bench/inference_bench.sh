#!/usr/bin/env bash
# inference_bench.sh: the paper's own claim, measured. SliceGPT says a sliced model is
# faster because it is smaller: generation (memory-bound) should speed up with the weight
# bytes, prompt processing (compute-bound) with the FLOPs. This measures both in llama.cpp
# and in slicepipe's own `generate`.
#
#   bench/inference_bench.sh [SLICEPIPE_BIN] [WORK_DIR]
#
# SLICEPIPE_BIN defaults to build-ib/slicepipe, built here when missing
# (cmake -S . -B build-ib -DCMAKE_BUILD_TYPE=Release); WORK_DIR to $BENCH_DIR or /tmp;
# everything goes into WORK_DIR/slicepipe-inference (about 8 GB of disk with the default
# model; the model, the slicings and the GGUFs are reused by a rerun while their inputs,
# manifests and the slicepipe binary are unchanged).
#
# Variants, on a synthetic Llama (default D=2048, 16 layers, FFN 5632, 16 heads, vocab 32000,
# BF16: 953M parameters):
#   (a) dense:           `slicepipe export --type T` for each T of $BENCH_GGUF_TYPES (f16 and
#                        q8_0), run by llama.cpp;
#   (b) global 0.25:     `slicepipe run` with [slicing] basis = "global" (the stock Llama
#                        architecture at width d, no shortcut matrices), exported as each T, run
#                        by llama.cpp. Probed first on a tiny synth model: when `run` or `export`
#                        refuses it, (b) is reported "skipped: basis = global not available";
#   (c) per-layer 0.25:  `slicepipe run` (the default basis: shortcut matrices, which
#                        llama.cpp has no architecture for), run by `slicepipe generate`,
#                        against the dense model in `slicepipe generate` as its baseline.
# llama.cpp is node-llama-cpp@3.21.1's prebuilt CPU build (npm i -E, into the work folder,
# as tests/test_gguf.py installs it; no download once installed), driven by
# bench/inference_bench.mjs: $BENCH_THREADS threads, flash attention off, KV cache
# $BENCH_KV (F32 by default, as tests/test_gguf_llamacpp.mjs; F16 is llama.cpp's default).
#
# Each variant is measured in $BENCH_REPEATS rounds (the llama.cpp variants, cheaper and
# noisier, in $BENCH_LLAMA_REPEATS), the rounds alternating the variants (and reversing their
# order every other round), and the best of the repeats is kept: the machine is shared, and
# noise only ever slows a run down. Prompt: $BENCH_PP tokens of calib.npy (past
# the calibration windows) as one batch; generation: $BENCH_TG greedy single-token decodes
# after it (EOS ignored). The ratios (dense / sliced) are within one run of this script.
#
# Goals (printed met / not met):
#   generation speed-up >= 0.9 x weight-byte ratio (all tensor bytes: the GGUFs' for
#                              llama.cpp, the safetensors' for slicepipe generate);
#   prompt speed-up     >= 0.9 x FLOP ratio (forward FLOPs per prompt token: 2 x the elements
#                              of every matrix applied, the embedding being a lookup, plus
#                              attention's 2 x 2 x context x heads x head_dim per layer at the
#                              prompt's mean causal context (T+1)/2).
#
# Overridable:
#   BENCH_HIDDEN BENCH_LAYERS BENCH_FFN BENCH_HEADS BENCH_KV_HEADS BENCH_VOCAB BENCH_DTYPE
#   BENCH_SPARSITY (0.25) BENCH_CALIB_SEQLEN (128) BENCH_CALIB_NSAMPLES (8)
#   BENCH_PP (512) BENCH_TG (128) BENCH_THREADS (2) BENCH_KV (F32 | F16) BENCH_REPEATS (3)
#   BENCH_GGUF_TYPES ("f16 q8_0"; any of f32 f16 bf16 q8_0) the GGUF types llama.cpp runs (a) and
#                        (b) in; the floor and the token agreement checks use the first
#   BENCH_LLAMA_REPEATS (5, at least BENCH_REPEATS)
#   BENCH_SP_GENERATE=0  skip (c) and its dense baseline (saves about 5 of the ~11 minutes that a
#                        run takes at load ~2, the slicings included)
#   BENCH_FLOOR=0        skip llama.cpp's per-token floor (the same depth at width 128, in the
#                        first GGUF type: informative, it explains a generation speed-up below
#                        the byte ratio)
#   BENCH_RESULTS=PATH   the markdown written (default bench/INFERENCE.md, overwritten)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${1:-$repo/build-ib/slicepipe}
[[ $bin == /* ]] || bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
base=${2:-${BENCH_DIR:-/tmp}}
work=$base/slicepipe-inference

HIDDEN=${BENCH_HIDDEN:-2048}
LAYERS=${BENCH_LAYERS:-16}
FFN=${BENCH_FFN:-5632}
HEADS=${BENCH_HEADS:-16}
KV_HEADS=${BENCH_KV_HEADS:-$HEADS}
VOCAB=${BENCH_VOCAB:-32000}
DTYPE=${BENCH_DTYPE:-bf16}
SPARSITY=${BENCH_SPARSITY:-0.25}
CSEQ=${BENCH_CALIB_SEQLEN:-128}
CN=${BENCH_CALIB_NSAMPLES:-8}
PP=${BENCH_PP:-512}
TG=${BENCH_TG:-128}
THREADS=${BENCH_THREADS:-2}
KV=${BENCH_KV:-F32}
read -r -a TYPES <<<"${BENCH_GGUF_TYPES:-f16 q8_0}"
((${#TYPES[@]} > 0)) || { echo "inference_bench: BENCH_GGUF_TYPES is empty" >&2; exit 1; }
for t in "${TYPES[@]}"; do
    case $t in f32 | f16 | bf16 | q8_0) ;; *) echo "inference_bench: BENCH_GGUF_TYPES: unknown type '$t'" >&2; exit 1 ;; esac
done
T0=${TYPES[0]}
REPEATS=${BENCH_REPEATS:-3}
LREPEATS=${BENCH_LLAMA_REPEATS:-5}
((LREPEATS >= REPEATS)) || LREPEATS=$REPEATS
DO_SP=${BENCH_SP_GENERATE:-1}
DO_FLOOR=${BENCH_FLOOR:-1}
RESULTS=${BENCH_RESULTS:-$repo/bench/INFERENCE.md}
NLC=node-llama-cpp@3.21.1
# calibration windows, then the prompt, with room to spare
TOKENS=$((CSEQ * CN + PP + 512))
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

t_start=$(date +%s)
# the command as run, for the report: the BENCH_ overrides, the script, its arguments
# (the arguments as their names: the report names no machine's paths)
cmdline="$(env | { grep -E '^BENCH_[A-Z_]+=' | grep -vE '^BENCH_(DIR|RESULTS)=' || true; } | sort | tr '\n' ' ')bench/inference_bench.sh${1:+ SLICEPIPE_BIN}${2:+ WORK_DIR}"
die() { echo "inference_bench: $*" >&2; exit 1; }
log() { echo "inference_bench: [$(($(date +%s) - t_start)) s] $*" >&2; }

# ---------------------------------------------------------------- 0. build, node-llama-cpp
if [[ ! -x $bin ]]; then
    log "building $repo/build-ib"
    cmake -S "$repo" -B "$repo/build-ib" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$repo/build-ib" -j"$(nproc)" --target slicepipe >/dev/null
fi
[[ -x $bin ]] || die "no slicepipe binary at $bin"
command -v node >/dev/null || die "node is not installed"
mkdir -p "$work/npm" "$work/runs"
if [[ ! -f $work/npm/node_modules/node-llama-cpp/package.json ]]; then
    log "installing $NLC into $work/npm"
    [[ -f $work/npm/package.json ]] || echo '{"name": "slicepipe-inference-bench", "private": true}' >"$work/npm/package.json"
    (cd "$work/npm" && npm i -E --no-audit --no-fund --prefer-offline "$NLC" >/dev/null) || die "npm could not install $NLC"
fi
cp "$here/inference_bench.mjs" "$work/npm/inference_bench.mjs"
bin_id="$("$bin" --version) $(md5sum <"$bin" | cut -c1-12)"

# fresh NAME STAMP: true when $work/NAME exists and was made from STAMP
fresh() { [[ -e $work/$1 && -f $work/$1.stamp && $(cat "$work/$1.stamp") == "$2" ]]; }
stamp() { echo "$2" >"$work/$1.stamp"; }

# ---------------------------------------------------------------- 1. the dense model
synth_args=(--hidden "$HIDDEN" --layers "$LAYERS" --ffn "$FFN" --heads "$HEADS" --kv-heads "$KV_HEADS"
    --vocab "$VOCAB" --dtype "$DTYPE" --tokens "$TOKENS")
model_stamp="${synth_args[*]} $("$bin" --version)"
if fresh model "$model_stamp"; then
    log "reusing $work/model"
else
    rm -rf "$work/model" "$work"/*.stamp
    log "synth: slicepipe synth model ${synth_args[*]}"
    "$bin" synth "$work/model" "${synth_args[@]}" --quiet >&2
    stamp model "$model_stamp"
fi
$PY - "$work" "$CSEQ" "$CN" "$PP" <<'PYEOF'
import json, sys, numpy as np
work, cseq, cn, pp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t = np.load(f"{work}/model/calib.npy")
p = t[cseq * cn:cseq * cn + pp].astype(np.int32)  # past the calibration windows
assert len(p) == pp
np.save(f"{work}/prompt.npy", p)
json.dump([int(x) for x in p], open(f"{work}/prompt.json", "w"))
PYEOF

# export NAME DIR STAMP TYPE: DIR as NAME.TYPE.gguf
export_gguf() {
    local g=$1.$4.gguf
    if fresh "$g" "$3"; then log "reusing $g"; return; fi
    log "export: slicepipe export $(basename "$2") --gguf $g --type $4"
    rm -f "$work/$g"
    "$bin" export "$2" --gguf "$work/$g" --type "$4" --force --quiet >&2
    stamp "$g" "$3"
}
for t in "${TYPES[@]}"; do export_gguf dense "$work/model" "$model_stamp $bin_id" "$t"; done
# The floor: the same depth, heads, head_dim, vocabulary and KV cache at width 128 and FFN 256
# (a few % of the bytes): what llama.cpp spends per token whatever the width (thread
# barriers of every op, norms, attention over the cache, the head's row count, sampling).
if [[ $DO_FLOOR == 1 ]]; then
    floor_args=(--hidden 128 --layers "$LAYERS" --ffn 256 --heads "$HEADS" --kv-heads "$KV_HEADS"
        --head-dim $((HIDDEN / HEADS)) --vocab "$VOCAB" --dtype "$DTYPE" --tokens 1024)
    floor_stamp="${floor_args[*]} $bin_id"
    if ! fresh floor "$floor_stamp"; then
        rm -rf "$work/floor"
        "$bin" synth "$work/floor" "${floor_args[@]}" --quiet >/dev/null
        stamp floor "$floor_stamp"
    fi
    export_gguf floor "$work/floor" "$floor_stamp" "$T0"
fi

# manifest NAME BASIS_LINE MODEL CALIB_SEQLEN CALIB_N
manifest() {
    cat <<EOF
# written by bench/inference_bench.sh
[model]
path = "$3"
[calibration]
tokens = "$3/calib.npy"
seqlen = $4
nsamples = $5
[slicing]
sparsity = $SPARSITY
$2
[output]
path = "$1"
[resources]
memory = "4GB"
threads = $THREADS
EOF
}

# slice NAME BASIS_LINE: slicepipe run of the bench model into $work/NAME
slice() {
    manifest "$1" "$2" model "$CSEQ" "$CN" >"$work/$1.toml"
    local st="$(cat "$work/$1.toml") $model_stamp $bin_id"
    if fresh "$1" "$st" && [[ -f $work/$1/slicing.json ]]; then log "reusing $work/$1"; return 0; fi
    rm -rf "${work:?}/$1"
    log "slicepipe run $1.toml (${2:-per-layer basis}; calibration $CN x $CSEQ tokens; about 2 minutes at the defaults)"
    if ! "$bin" run "$work/$1.toml" --quiet >"$work/$1.log" 2>&1; then
        tail -3 "$work/$1.log" >&2
        return 1
    fi
    stamp "$1" "$st"
}

# ---------------------------------------------------------------- 2. the slicings
global_note=""
log "probing [slicing] basis = \"global\" on a tiny synth model"
probe=$work/probe
rm -rf "$probe" && mkdir -p "$probe"
"$bin" synth "$probe/m" --hidden 64 --layers 2 --ffn 128 --heads 4 --vocab 256 --tokens 1024 --quiet >/dev/null 2>&1
manifest out 'basis = "global"' m 64 4 >"$probe/m.toml"
if "$bin" run "$probe/m.toml" --quiet >"$probe/run.log" 2>&1 &&
    "$bin" export "$probe/out" --gguf "$probe/out.gguf" --type f16 --force --quiet >"$probe/export.log" 2>&1; then
    have_global=1
else
    have_global=0
    global_note=$(cat "$probe/run.log" "$probe/export.log" 2>/dev/null | grep . | tail -1 || true)
    log "skipped: basis = global not available ($global_note)"
fi
if [[ $have_global == 1 ]]; then
    if slice global 'basis = "global"'; then
        for t in "${TYPES[@]}"; do export_gguf global "$work/global" "$(cat "$work/global.stamp")" "$t"; done
    else
        have_global=0
        global_note="slicepipe run failed on the bench model: $(tail -1 "$work/global.log")"
        log "skipped: basis = global not available ($global_note)"
    fi
fi
if [[ $DO_SP == 1 ]]; then
    slice perlayer '' || die "slicepipe run perlayer.toml failed (see $work/perlayer.log)"
fi

# ---------------------------------------------------------------- 3. the measurements
# llama-NAME-TYPE: llama.cpp on NAME.TYPE.gguf
variants=()
for t in "${TYPES[@]}"; do
    variants+=("llama-dense-$t")
    [[ $have_global == 1 ]] && variants+=("llama-global-$t")
done
[[ $DO_FLOOR == 1 ]] && variants+=("llama-floor-$T0")
[[ $DO_SP == 1 ]] && variants+=(sp_dense sp_perlayer)
rm -f "$work"/runs/*
measure() { # VARIANT ROUND
    local v=$1 r=$2 f=$work/runs/$1.$2
    case $v in
    llama-*)
        local g=$(cut -d- -f2 <<<"$v").$(cut -d- -f3 <<<"$v").gguf
        (cd "$work/npm" && node inference_bench.mjs --gguf "$work/$g" --tokens "$work/prompt.json" \
            --pp "$PP" --tg "$TG" --threads "$THREADS" --kv "$KV") >"$f.json" 2>"$f.err" ||
            { cat "$f.err" >&2; die "llama.cpp on $g failed"; }
        ;;
    sp_*)
        local dir=$work/model
        [[ $v == sp_perlayer ]] && dir=$work/perlayer
        # --max-tokens TG+1: TG decodes (the last token sampled is never fed)
        "$bin" generate "$dir" --prompt-tokens "$work/prompt.npy" --max-tokens $((TG + 1)) --ignore-eos \
            --threads "$THREADS" --memory 8GB >"$f.out" 2>"$f.err" ||
            { cat "$f.err" >&2; die "slicepipe generate $dir failed"; }
        ;;
    esac
}
describe() { # VARIANT ROUND: one progress line
    local f=$work/runs/$1.$2
    if [[ $1 == llama-* ]]; then
        $PY -c 'import json,sys; j=json.load(open(sys.argv[1])); print("prompt %.1f tokens/s, generation %.2f tokens/s" % (j["pp_tps"], j["tg_tps"]))' "$f.json"
    else
        grep -o 'prompt .*tokens/s)' "$f.err" | head -1
    fi
}
log "measuring ${variants[*]}: $LREPEATS rounds, slicepipe generate in the first $REPEATS" \
    "(at the defaults on an idle machine about 20 s a llama.cpp run, 45 s a slicepipe generate run)"
loads=()
for ((r = 1; r <= LREPEATS; r++)); do
    order=()
    for v in "${variants[@]}"; do [[ $v == llama-* || $r -le $REPEATS ]] && order+=("$v"); done
    if ((r % 2 == 0)); then
        rev=()
        for ((i = ${#order[@]} - 1; i >= 0; i--)); do rev+=("${order[i]}"); done
        order=("${rev[@]}")
    fi
    for v in "${order[@]}"; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        loads+=("$load")
        measure "$v" "$r"
        log "round $r/$LREPEATS $v (load $load): $(describe "$v" "$r")"
    done
done
# the global output in slicepipe generate, 8 tokens: does llama.cpp run the same model?
if [[ $have_global == 1 ]]; then
    "$bin" generate "$work/global" --prompt-tokens "$work/prompt.npy" --max-tokens 8 --ignore-eos \
        --threads "$THREADS" --memory 8GB >"$work/runs/sp_global.check.out" 2>/dev/null || true
fi

# ---------------------------------------------------------------- 4. the table
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$repo" status --porcelain -- pipeline io tools linalg 2>/dev/null | grep -q . && echo "+changes" || true)
$PY - "$work" "$PP" "$TG" "$REPEATS" "$have_global" "$DO_SP" "$global_note" "$SPARSITY" "$LREPEATS" "$KV" "$DO_FLOOR" \
    "${TYPES[*]}" <<'PYEOF'
import glob, json, os, re, struct, sys
work, PP, TG, R = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
have_global, do_sp, global_note, sparsity = sys.argv[5] == "1", sys.argv[6] == "1", sys.argv[7], sys.argv[8]
LR, kv_bytes = int(sys.argv[9]), 4 if sys.argv[10].upper() == "F32" else 2
do_floor = sys.argv[11] == "1"
types = sys.argv[12].split()

GGML_BYTES = {0: (4, 1), 1: (2, 1), 30: (2, 1), 8: (34, 32)}  # type: (bytes, per elements)

def gguf_tensors(path):
    """name -> (shape, bytes), from the header only (ggml's docs/gguf.md)."""
    with open(path, "rb") as fh:
        b = fh.read(64 << 20)
    o = 0
    def u(fmt):
        nonlocal o
        v = struct.unpack_from("<" + fmt, b, o); o += struct.calcsize(fmt); return v[0]
    def skip(t):
        nonlocal o
        size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        if t in size: o += size[t]
        elif t == 8:
            n = u("Q"); o += n
        elif t == 9:
            et, n = u("I"), u("Q")
            for _ in range(n): skip(et)
        else: raise ValueError(f"{path}: value type {t}")
    assert b[:4] == b"GGUF", path
    o = 4
    u("I"); nt = u("Q"); nkv = u("Q")
    meta = {}
    for _ in range(nkv):
        n = u("Q"); k = b[o:o + n].decode(); o += n
        t = u("I")
        if t in (4, 5, 10) and k.endswith((".block_count", ".head_count", ".head_count_kv", ".key_length", ".embedding_length")):
            meta[k.split(".")[-1]] = u({4: "I", 5: "i", 10: "Q"}[t])
        else:
            skip(t)
    out = {}
    for _ in range(nt):
        n = u("Q"); name = b[o:o + n].decode(); o += n
        nd = u("I"); ne = [u("Q") for _ in range(nd)]
        t = u("I"); u("Q")
        el = 1
        for x in ne: el *= x
        bb, per = GGML_BYTES[t]
        out[name] = (ne[::-1], el // per * bb)
    return out, meta

ST_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
def st_tensors(d):
    out = {}
    for f in sorted(glob.glob(f"{d}/*.safetensors")):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            h = json.loads(fh.read(n))
        for k, v in h.items():
            if k == "__metadata__": continue
            el = 1
            for x in v["shape"]: el *= x
            out[k] = (v["shape"], el * ST_BYTES[v["dtype"]])
    return out

def cost(tensors, embed_name, layers, qw, ctx_pp, ctx_tg):
    """(tensor bytes, FLOPs per prompt token, FLOPs per generated token)"""
    total = sum(b for _, b in tensors.values())
    mat = sum(2 * s[0] * s[1] for n, (s, _) in tensors.items() if len(s) == 2 and n != embed_name)
    return total, mat + layers * 4 * ctx_pp * qw, mat + layers * 4 * ctx_tg * qw

def read_per_token(tensors, embed_name, layers, kvw, ctx_tg, el_bytes=None):
    """Bytes a generated token reads (informative, not the goal's ratio): every tensor but the
    embedding (one row of it), at el_bytes per element if given (slicepipe holds float32),
    plus the K and V cache rows at the mean generation context."""
    w = sum((el_bytes * elements(s) if el_bytes else b) for n, (s, b) in tensors.items() if n != embed_name)
    return w + layers * 2 * ctx_tg * kvw * kv_bytes

def elements(s):
    n = 1
    for x in s: n *= x
    return n

cfg = json.load(open(f"{work}/model/config.json"))
open(f"{work}/params.txt", "w").write(f"{sum(elements(s) for s, _ in st_tensors(f'{work}/model').values()):,}\n")
L, H = cfg["num_hidden_layers"], cfg["num_attention_heads"]
qw = H * cfg.get("head_dim", cfg["hidden_size"] // H)
kvw = cfg.get("num_key_value_heads", H) * cfg.get("head_dim", cfg["hidden_size"] // H)
ctx_pp = (PP + 1) / 2            # mean causal context over the prompt
ctx_tg = PP - 1 + (TG - 1) / 2   # mean context of the generation decodes (pp-1 ... pp+tg-2)

rows = {}  # variant -> dict
def add(v, label, runtime, width, bytes_, fpp, ftg, rd, runs):
    rows[v] = dict(label=label, runtime=runtime, width=width, bytes=bytes_, fpp=fpp, ftg=ftg, read=rd,
                   pp=[x[0] for x in runs], tg=[x[1] for x in runs])

def llama_runs(v):
    out = []
    for r in range(1, LR + 1):
        j = json.load(open(f"{work}/runs/{v}.{r}.json"))
        out.append((j["pp_tps"], j["tg_tps"], j))
    return out

def sp_runs(v):
    out = []
    for r in range(1, R + 1):
        s = open(f"{work}/runs/{v}.{r}.err").read()
        m = re.search(r"prompt (\d+) tokens in ([\d.]+) s .*generated (\d+) tokens in ([\d.]+) s", s)
        n_p, t_p, n_g, t_g = int(m[1]), float(m[2]), int(m[3]), float(m[4])
        assert n_p == PP and n_g == TG + 1, s
        ids = open(f"{work}/runs/{v}.{r}.out").read().split()
        out.append((n_p / t_p, (n_g - 1) / t_g, [int(x) for x in ids[:8]]))  # n_g - 1 decodes
    return out

first = {}
LABEL = {"dense": "dense", "global": f"global basis, sparsity {sparsity}",
         "floor": "floor: same depth, heads and vocabulary, width 128, FFN 256 (informative)"}
llama_variants = [(n, t) for t in types for n in ("dense", "global")] + [("floor", types[0])]
for name, t in llama_variants:
    v = f"llama-{name}-{t}"
    if (name == "global" and not have_global) or (name == "floor" and not do_floor): continue
    ts, meta = gguf_tensors(f"{work}/{name}.{t}.gguf")
    b, fpp, ftg = cost(ts, "token_embd.weight", meta["block_count"], meta["head_count"] * meta["key_length"], ctx_pp, ctx_tg)
    rd = read_per_token(ts, "token_embd.weight", meta["block_count"], meta["head_count_kv"] * meta["key_length"], ctx_tg)
    runs = llama_runs(v)
    first[v] = runs[0][2]["first_generated"]
    add(v, LABEL[name], f"llama.cpp, GGUF {t}, KV {sys.argv[10]}",
        meta["embedding_length"], b, fpp, ftg, rd, runs)
if do_sp:
    for v, d in (("sp_dense", "model"), ("sp_perlayer", "perlayer")):
        ts = st_tensors(f"{work}/{d}")
        b, fpp, ftg = cost(ts, "model.embed_tokens.weight", L, qw, ctx_pp, ctx_tg)
        rd = read_per_token(ts, "model.embed_tokens.weight", L, kvw, ctx_tg, 4)
        c = json.load(open(f"{work}/{d}/config.json"))
        runs = sp_runs(v)
        first[v] = runs[0][2]
        w = c.get("slicepipe", {}).get("d_embed", c["hidden_size"]) if d != "model" else c["hidden_size"]
        add(v, "dense" if d == "model" else f"per-layer basis, sparsity {sparsity}",
            "slicepipe generate, float32 (checkpoint BF16)", w, b, fpp, ftg, rd, runs)

out = []
P = out.append
P(f"| variant | runtime | width | tensor bytes | MB read / generated token ¹ | GFLOP / prompt token | GFLOP / generated token | prompt tokens/s (best) | generation tokens/s (best) |")
P("|---|---|---|---|---|---|---|---|---|")
for v, x in rows.items():
    P(f"| {x['label']} | {x['runtime']} | {x['width']} | {x['bytes']:,} | {x['read']/1e6:,.0f} | {x['fpp']/1e9:.3f} | {x['ftg']/1e9:.3f} | "
      f"**{max(x['pp']):.1f}** ({', '.join(f'{y:.1f}' for y in x['pp'])}) | **{max(x['tg']):.2f}** ({', '.join(f'{y:.2f}' for y in x['tg'])}) |")
P("")
P("| comparison | prompt speed-up | FLOP ratio | goal: >= 0.9 x FLOP ratio | generation speed-up | weight-byte ratio | goal: >= 0.9 x byte ratio | read-per-token ratio ¹ |")
P("|---|---|---|---|---|---|---|---|")
verdicts = []
def goal(base, sliced, label):
    a, b = rows[base], rows[sliced]
    spp, stg = max(b["pp"]) / max(a["pp"]), max(b["tg"]) / max(a["tg"])
    fr, br, rr = a["fpp"] / b["fpp"], a["bytes"] / b["bytes"], a["read"] / b["read"]
    mp, mg = spp >= 0.9 * fr, stg >= 0.9 * br
    P(f"| {label} | {spp:.3f}x | {fr:.3f} | {0.9*fr:.3f}: **{'met' if mp else 'not met'}** | "
      f"{stg:.3f}x | {br:.3f} | {0.9*br:.3f}: **{'met' if mg else 'not met'}** | {rr:.3f} |")
    verdicts.append(f"{label}: prompt {spp:.3f}x vs 0.9 x {fr:.3f} = {0.9*fr:.3f}: {'met' if mp else 'NOT met'}; "
                    f"generation {stg:.3f}x vs 0.9 x {br:.3f} = {0.9*br:.3f}: {'met' if mg else 'NOT met'}")
T0 = types[0]
if have_global:
    for t in types:
        goal(f"llama-dense-{t}", f"llama-global-{t}", f"(b) global basis / dense, llama.cpp, GGUF {t}")
    if do_floor:
        fl = (f"llama-dense-{T0}", f"llama-global-{T0}", f"llama-floor-{T0}")
        d, g, f = (1 / max(rows[v]["tg"]) for v in fl)
        rd, rg, rf = (rows[v]["read"] for v in fl)
        floor_line = "llama.cpp's per-token floor (the floor row) is not below both models' times: no floor-corrected figure"
        if f < g < d:
            floor_line = (f"llama.cpp's per-token floor (the floor row, GGUF {T0}): {f*1e3:.1f} ms of dense's {d*1e3:.1f} ms and the global "
                          f"model's {g*1e3:.1f} ms per generated token. Above the floor, the generation speed-up is "
                          f"{(d - f) / (g - f):.3f}x for a {(rd - rf) / (rg - rf):.3f} ratio of the bytes read above the floor's.")
else:
    P(f"| (b) global basis / dense, llama.cpp | skipped: basis = global not available | | | | | | |")
    verdicts.append(f"(b) skipped: basis = global not available ({global_note})")
if do_sp:
    goal("sp_dense", "sp_perlayer", "(c) per-layer basis / dense, slicepipe generate")
P("")
P(f"¹ Informative, not a goal: the bytes one generated token reads, every tensor but the embedding (one row of it) in the "
  f"runtime's own element type, plus the K and V cache at the mean generation context {ctx_tg:g}. The KV cache has "
  f"the same size dense and sliced (slicing keeps the heads), so it pulls the achievable generation speed-up below "
  f"the weight-byte ratio.")
P("")
for s in verdicts: P("- " + s)
if have_global and do_floor: P("- " + floor_line)
def agree(a, b):
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]: k += 1
    return k
if do_sp:
    P(f"- Same model, two runtimes: llama.cpp's first 8 greedy tokens on dense.{T0}.gguf and slicepipe generate's on the "
      f"dense checkpoint agree on the first {agree(first[f'llama-dense-{T0}'], first['sp_dense'])} of 8.")
chk = f"{work}/runs/sp_global.check.out"
if have_global and os.path.exists(chk):
    g = [int(x) for x in open(chk).read().split()[:8]]
    P(f"- The global-basis output: llama.cpp on global.{T0}.gguf and slicepipe generate on the output folder agree on "
      f"the first {agree(first[f'llama-global-{T0}'], g)} of 8 greedy tokens.")
body = "\n".join(out)
print(body)
open(f"{work}/table.md", "w").write(body + "\n")
PYEOF

cat >"$RESULTS" <<EOF
# Inference speed of sliced models: the paper's own claim (llama.cpp and slicepipe generate)

Generated by \`bench/inference_bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); $("$bin" --version), commit $commit$dirty; $NLC (llama.cpp prebuilt, CPU).

- Command: \`$cmdline\` (so: \`BENCH_PP=$PP BENCH_TG=$TG BENCH_THREADS=$THREADS BENCH_KV=$KV BENCH_REPEATS=$REPEATS BENCH_LLAMA_REPEATS=$LREPEATS\`); it took $(($(date +%s) - t_start)) s.
- Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr). Load average (1 min) before each measurement: ${loads[*]}. The machine may be shared: the ratios are measured within this one run, from the best of $LREPEATS (llama.cpp) and $REPEATS (slicepipe generate) alternating repeats, listed in parentheses in run order.
- Model: \`slicepipe synth model ${synth_args[*]}\` ($(cat "$work/params.txt") parameters). Slicings: \`slicepipe run\` with \`sparsity = $SPARSITY\`, calibration $CN windows x $CSEQ tokens of calib.npy, threads $THREADS; (b) adds \`basis = "global"\`. GGUFs: \`slicepipe export DIR --gguf OUT.gguf --type T\` for T in ${TYPES[*]}.
- llama.cpp (\`bench/inference_bench.mjs\`): $THREADS threads, flash attention off, KV cache $KV, batch size $PP, context $((PP + TG)); prompt = $PP tokens of calib.npy in one batch; generation = $TG greedy single-token decodes right after it (context $((PP - 1))…$((PP + TG - 2)), sampling included), timed in the same process after a 16-token warm-up.
- slicepipe generate: \`slicepipe generate DIR --prompt-tokens prompt.npy --max-tokens $((TG + 1)) --ignore-eos --threads $THREADS --memory 8GB\` (layers resident as float32); prompt and generation times from its stderr summary, generation rate = $TG decodes / its generation seconds (its last sampled token is never fed).
- Weight bytes: every tensor of the GGUF (llama.cpp rows) or the safetensors (slicepipe rows: BF16 on disk, float32 in memory, the same ratio). FLOPs per token: 2 x the elements of every 2-D tensor but the embedding (a lookup; per-layer slicing's shortcut matrices count, they are applied), plus attention 2 x 2 x context x heads x head_dim per layer, context $(((PP + 1) / 2)) (the prompt's mean causal context) for the prompt and $((PP - 1 + (TG - 1) / 2)) for generation.

$(cat "$work/table.md")
EOF
log "wrote $RESULTS"
