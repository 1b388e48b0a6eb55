#!/usr/bin/python3
"""Train slicepipe's example model: a small Llama on the King James Bible.

Run examples/train/setup.sh first, then (from anywhere):
    nice -n 10 /usr/bin/python3 examples/train/train.py

Everything is deterministic (fixed seeds, fixed split, fixed step count).
Outputs go to examples/kjv/model/ (HF Llama layout), examples/kjv/{calib,eval}.npy
and examples/train/loss.tsv.
"""
import argparse
import json
import math
import os
import re
import struct
import subprocess
import sys
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.dirname(HERE)
OUT = os.path.join(EXAMPLES, "kjv")
MODEL_DIR = os.path.join(OUT, "model")

# ---------------------------------------------------------------- settings
SEED = 1234
VOCAB = 1536
SEQ = 256
CFG = dict(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, head_dim=32, ffn=688,
           vocab=VOCAB, norm_eps=1e-5, rope_theta=10000.0, max_pos=SEQ)
# Disjoint split by whole books.
CALIB_BOOKS = ["Judges", "Romans"]
EVAL_BOOKS = ["Joshua", "Proverbs", "Mark"]
EVAL_MAX_TOKENS = 100_000


# ---------------------------------------------------------------- data
def read_kjv():
    """Return [(book, chapter, verse, text)] using Debian's bible-kjv reader.

    bible-kjv-text ships /usr/lib/bible.data in the BRS compressed format;
    the `bible` program (package bible-kjv, a dependency) decompresses it.
    -l100000 stops it from wrapping verses.
    """
    raw = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"],
                         check=True, capture_output=True, text=True).stdout
    verses, book, chap = [], None, None
    head = re.compile(r"^(.+) (\d+)$")
    verse = re.compile(r"^\s+(\d+) (.*)$")
    for line in raw.split("\n"):
        if not line.strip():
            continue
        m = verse.match(line)
        if m:
            assert book is not None
            verses.append((book, chap, int(m.group(1)), m.group(2).strip()))
            continue
        m = head.match(line)
        assert m, line
        book, chap = m.group(1), int(m.group(2))
    assert len(verses) == 31102, len(verses)
    return verses


def split(verses):
    parts = {"train": [], "calib": [], "eval": []}
    for b, c, v, t in verses:
        k = "calib" if b in CALIB_BOOKS else "eval" if b in EVAL_BOOKS else "train"
        parts[k].append(t)
    return parts


def train_tokenizer(train_texts, prefix):
    path = prefix + ".txt"
    with open(path, "w") as f:
        for t in train_texts:
            f.write(t + "\n")
    spm.SentencePieceTrainer.train(
        input=path, model_prefix=prefix, model_type="bpe", vocab_size=VOCAB,
        byte_fallback=True, character_coverage=1.0, split_digits=True,
        normalization_rule_name="identity", add_dummy_prefix=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        input_sentence_size=0, shuffle_input_sentence=False,
        num_threads=1, minloglevel=2)
    os.remove(path)


def encode_stream(sp, texts):
    ids = []
    for t in texts:
        ids.append(1)  # BOS before each verse
        ids.extend(sp.encode(t))
    return np.asarray(ids, dtype=np.int32)


# ---------------------------------------------------------------- model
class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(T, hd, theta):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    f = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    emb = torch.cat((f, f), dim=-1)  # HF: dims i and i+hd/2 share a frequency
    return emb.cos(), emb.sin()


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, H, KV, hd, Fd = c["dim"], c["n_heads"], c["n_kv_heads"], c["head_dim"], c["ffn"]
        self.H, self.KV, self.hd = H, KV, hd
        self.input_layernorm = RMSNorm(D, c["norm_eps"])
        self.q_proj = nn.Linear(D, H * hd, bias=False)
        self.k_proj = nn.Linear(D, KV * hd, bias=False)
        self.v_proj = nn.Linear(D, KV * hd, bias=False)
        self.o_proj = nn.Linear(H * hd, D, bias=False)
        self.post_attention_layernorm = RMSNorm(D, c["norm_eps"])
        self.gate_proj = nn.Linear(D, Fd, bias=False)
        self.up_proj = nn.Linear(D, Fd, bias=False)
        self.down_proj = nn.Linear(Fd, D, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.KV, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.KV, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.H // self.KV  # HF repeat_kv: query head i uses kv head i // rep
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        y = att.softmax(-1) @ v
        x = x + self.o_proj(y.transpose(1, 2).reshape(B, T, self.H * self.hd))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab"], c["dim"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["dim"], c["norm_eps"])
        self.lm_head = nn.Linear(c["dim"], c["vocab"], bias=False)
        cos, sin = rope_cos_sin(c["max_pos"], c["head_dim"], c["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02
                if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                    std = 0.02 / math.sqrt(2 * c["n_layers"])
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        T = idx.shape[1]
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed_tokens(idx)
        cos, sin = self.cos[:T], self.sin[:T]
        for l in self.layers:
            x = l(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


def hf_state(model):
    """Parameters under Hugging Face LlamaForCausalLM names, W[out, in]."""
    sd = {"model.embed_tokens.weight": model.embed_tokens.weight}
    for i, l in enumerate(model.layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = l.input_layernorm.weight
        for n in ("q", "k", "v", "o"):
            sd[p + f"self_attn.{n}_proj.weight"] = getattr(l, n + "_proj").weight
        sd[p + "post_attention_layernorm.weight"] = l.post_attention_layernorm.weight
        for n in ("gate", "up", "down"):
            sd[p + f"mlp.{n}_proj.weight"] = getattr(l, n + "_proj").weight
    sd["model.norm.weight"] = model.norm.weight
    sd["lm_head.weight"] = model.lm_head.weight
    return {k: v.detach().contiguous() for k, v in sd.items()}


# ---------------------------------------------------------------- safetensors
def write_safetensors(path, tensors, dtype):
    st_name = {torch.float32: "F32", torch.bfloat16: "BF16"}[dtype]
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].to(dtype).contiguous()
        if dtype == torch.bfloat16:
            b = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            b = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": st_name, "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = data[a:b]
        if e["dtype"] == "BF16":
            i16 = torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy())
            t = i16.view(torch.bfloat16).float()
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
        out[name] = t.reshape(e["shape"])
    return out


def load_hf_state(model, sd):
    with torch.no_grad():
        for k, v in hf_state(model).items():
            v.copy_(sd[k])  # hf_state returns views of the parameters


# ---------------------------------------------------------------- eval
@torch.no_grad()
def eval_nll(model, toks):
    """Mean NLL over non-overlapping SEQ windows; each predicts tokens 1..SEQ-1."""
    model.eval()
    n = len(toks) // SEQ
    w = torch.from_numpy(toks[: n * SEQ].astype(np.int64)).view(n, SEQ)
    tot, cnt = 0.0, 0
    for i in range(0, n, 16):
        x = w[i:i + 16]
        logits = model(x[:, :-1])
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               x[:, 1:].reshape(-1), reduction="sum").item()
        cnt += x[:, 1:].numel()
    model.train()
    return tot / cnt


def unigram_nll(train_toks, eval_toks):
    counts = np.bincount(train_toks, minlength=VOCAB).astype(np.float64)
    p = (counts + 1.0) / (counts.sum() + VOCAB)
    n = len(eval_toks) // SEQ
    tgt = eval_toks[: n * SEQ].reshape(n, SEQ)[:, 1:].reshape(-1)
    return float(-np.log(p[tgt]).mean())


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=420)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--bench", type=int, default=0, help="time N steps and exit")
    ap.add_argument("--max-minutes", type=float, default=45.0,
                    help="safety stop; a normal run ends earlier by --steps")
    a = ap.parse_args()

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    os.makedirs(MODEL_DIR, exist_ok=True)

    verses = read_kjv()
    parts = split(verses)
    print({k: len(v) for k, v in parts.items()}, "verses", flush=True)
    tok_path = os.path.join(MODEL_DIR, "tokenizer")
    train_tokenizer(parts["train"], tok_path)
    os.remove(tok_path + ".vocab")
    sp = spm.SentencePieceProcessor(model_file=tok_path + ".model")
    assert sp.get_piece_size() == VOCAB and sp.bos_id() == 1 and sp.eos_id() == 2
    assert sp.unk_id() == 0 and sp.id_to_piece(3) == "<0x00>"
    train = encode_stream(sp, parts["train"])
    calib = encode_stream(sp, parts["calib"])
    evl = encode_stream(sp, parts["eval"])
    if len(evl) > EVAL_MAX_TOKENS:
        evl = evl[:EVAL_MAX_TOKENS]
    print(f"tokens: train {len(train)} calib {len(calib)} eval {len(evl)}", flush=True)
    np.save(os.path.join(OUT, "calib.npy"), calib)
    np.save(os.path.join(OUT, "eval.npy"), evl)

    model = Llama(CFG)
    nparam = sum(p.numel() for p in model.parameters())
    print(f"params {nparam}", flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    steps = a.bench or a.steps

    def lr_at(s):
        if s < a.warmup:
            return a.lr * (s + 1) / a.warmup
        pr = (s - a.warmup) / max(1, steps - a.warmup)
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * pr)))

    rng = np.random.RandomState(SEED)
    train_t = torch.from_numpy(train.astype(np.int64))
    loss_rows, t0, run_loss = [], time.time(), []
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        starts = rng.randint(0, len(train) - SEQ - 1, size=a.batch)
        x = torch.stack([train_t[i:i + SEQ + 1] for i in starts])
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss.append(loss.item())
        el = time.time() - t0
        if a.bench:
            print(f"bench step {s} loss {loss.item():.4f} {el / (s + 1):.3f} s/step", flush=True)
            continue
        if (s + 1) % a.log_every == 0 or s == 0:
            ev = ""
            evn = float("nan")
            if (s + 1) % a.eval_every == 0:
                evn = eval_nll(model, evl[: 40 * SEQ])  # quick partial eval
                ev = f" eval_nll(40 win) {evn:.4f}"
            m = float(np.mean(run_loss))
            loss_rows.append((s + 1, m, lr_at(s), evn, el))
            print(f"step {s + 1}/{steps} loss {m:.4f} lr {lr_at(s):.2e} "
                  f"{el:.0f}s ({el / (s + 1):.2f} s/step){ev}", flush=True)
            run_loss = []
            with open(os.path.join(HERE, "loss.tsv"), "w") as f:
                f.write("step\ttrain_loss\tlr\teval_nll_partial\telapsed_s\n")
                for r in loss_rows:
                    f.write(f"{r[0]}\t{r[1]:.4f}\t{r[2]:.3e}\t{r[3]:.4f}\t{r[4]:.0f}\n")
        if el > a.max_minutes * 60:
            print(f"SAFETY STOP at step {s + 1}: wall time exceeded", flush=True)
            break
    if a.bench:
        return

    # ------------------------------------------------------------ save + report
    sd = hf_state(model)
    f32_bytes = sum(t.numel() * 4 for t in sd.values())
    dtype = torch.float32 if f32_bytes <= 8_000_000 else torch.bfloat16
    dname = "float32" if dtype == torch.float32 else "bfloat16"
    write_safetensors(os.path.join(MODEL_DIR, "model.safetensors"), sd, dtype)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": CFG["dim"], "intermediate_size": CFG["ffn"],
        "num_hidden_layers": CFG["n_layers"], "num_attention_heads": CFG["n_heads"],
        "num_key_value_heads": CFG["n_kv_heads"], "head_dim": CFG["head_dim"],
        "vocab_size": VOCAB, "max_position_embeddings": CFG["max_pos"],
        "rms_norm_eps": CFG["norm_eps"], "rope_theta": CFG["rope_theta"],
        "tie_word_embeddings": False, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": dname,
    }
    with open(os.path.join(MODEL_DIR, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    nll = eval_nll(model, evl)
    uni = unigram_nll(train, evl)
    print(f"params {nparam}, saved {dname}, "
          f"{os.path.getsize(os.path.join(MODEL_DIR, 'model.safetensors'))} bytes")
    print(f"held-out NLL (float32 weights) {nll:.5f}  ppl {math.exp(nll):.3f}")
    # Reload what was written (BF16-rounded if BF16) and evaluate in float32.
    m2 = Llama(CFG)
    load_hf_state(m2, read_safetensors(os.path.join(MODEL_DIR, "model.safetensors")))
    nll2 = eval_nll(m2, evl)
    print(f"held-out NLL (saved {dname} weights) {nll2:.5f}  ppl {math.exp(nll2):.3f}")
    print(f"unigram baseline (train counts, add-one) NLL {uni:.5f}  ppl {math.exp(uni):.3f}")
    print(f"eval windows {len(evl) // SEQ} x {SEQ}, predicted tokens "
          f"{(len(evl) // SEQ) * (SEQ - 1)}; wall {time.time() - t0:.0f}s")
    with open(os.path.join(HERE, "results.txt"), "w") as f:
        f.write(f"params\t{nparam}\nsaved_dtype\t{dname}\nsteps\t{s + 1}\n"
                f"eval_nll_f32\t{nll:.5f}\neval_ppl_f32\t{math.exp(nll):.3f}\n"
                f"eval_nll_saved\t{nll2:.5f}\neval_ppl_saved\t{math.exp(nll2):.3f}\n"
                f"unigram_nll\t{uni:.5f}\nunigram_ppl\t{math.exp(uni):.3f}\n")


if __name__ == "__main__":
    main()
