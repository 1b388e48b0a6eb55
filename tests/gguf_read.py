"""tests/gguf_read.py — an independent GGUF v3 reader, written from ggml's
docs/gguf.md (not from io/formats/gguf.c), for the tests.

read(path) -> (kv: dict key -> value, tensors: dict name -> (type, shape, ndarray|bytes), info)
Values: ints, floats, bools, str (UTF-8), lists. Tensors: F32/F16/BF16 as
float32 numpy arrays of shape ne[::-1] (rows first, like HF); the block
types dequantized (dequantize below). Every structural rule is checked:
magic, version 3, offsets aligned and increasing without overlap, data inside
the file, the file ending at the aligned end of the last tensor, and every
block's fp16 scale d (and min m) finite.

Block types, from ggml's ggml-common.h (blocks of 32 values along a row):
  Q4_0  18 bytes: fp16 d, qs[16]            x = (q - 8) d,  q in 0..15
  Q4_1  20 bytes: fp16 d, fp16 m, qs[16]    x = q d + m
  Q5_0  22 bytes: fp16 d, u32 qh, qs[16]    x = (q - 16) d, q in 0..31
  Q5_1  24 bytes: fp16 d, fp16 m, qh, qs    x = q d + m
  Q8_0  34 bytes: fp16 d, int8 q[32]        x = q d
qs[j] holds value j in its low nibble and value j + 16 in its high nibble;
the 5-bit types' fifth bit of value j is bit j of qh (little-endian u32).
"""
import struct

import numpy as np

GGML = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 30: "BF16"}
# block types: bytes per block of 32, has a min, bits
BLOCK = {"Q4_0": (18, False, 4), "Q4_1": (20, True, 4), "Q5_0": (22, False, 5), "Q5_1": (24, True, 5),
         "Q8_0": (34, False, 8)}


def block_fields(t, raw):
    """Block type t's raw bytes -> (d, m, q): float32 (nb,), float32 (nb,) (zeros
    for _0 types), int (nb, 32) levels as stored (unsigned for 4/5 bits)."""
    size, has_min, bits = BLOCK[t]
    blk = np.frombuffer(raw, np.uint8).reshape(-1, size)
    d = blk[:, 0:2].copy().view("<f2").astype(np.float32)[:, 0]
    o = 2
    m = np.zeros_like(d)
    if has_min:
        m = blk[:, 2:4].copy().view("<f2").astype(np.float32)[:, 0]
        o = 4
    if bits == 8:
        return d, m, blk[:, o:].view(np.int8).astype(np.int32)
    qh = None
    if bits == 5:
        qh = blk[:, o:o + 4].copy().view("<u4")[:, 0]
        o += 4
    qs = blk[:, o:o + 16].astype(np.int32)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1)  # values 0..15, then 16..31
    if qh is not None:
        bit = (qh[:, None].astype(np.int64) >> np.arange(32)[None, :]) & 1
        q = q | (bit.astype(np.int32) << 4)
    return d, m, q


def dequantize(t, raw):
    """Block type t's bytes -> float32 values (flat), as ggml's dequantize_row_*:
    the product of float32 d and the level, plus m, in float32."""
    size, has_min, bits = BLOCK[t]
    d, m, q = block_fields(t, raw)
    bad = ~np.isfinite(d) | ~np.isfinite(m)
    if bad.any():
        raise ValueError(f"{t}: block {int(np.argmax(bad))} has a non-finite scale or min")
    if not has_min and bits != 8:
        q = q - (1 << (bits - 1))
    return (d[:, None] * q.astype(np.float32) + m[:, None]).astype(np.float32).reshape(-1)


class Reader:
    def __init__(self, b):
        self.b, self.o = b, 0

    def take(self, n):
        if self.o + n > len(self.b):
            raise ValueError(f"truncated at {self.o}")
        s = self.b[self.o:self.o + n]
        self.o += n
        return s

    def u(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        n = self.u("Q")
        return self.take(n).decode("utf-8")

    def value(self, t):
        scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 10: "Q", 11: "q", 12: "d"}
        if t in scalar:
            return self.u(scalar[t])
        if t == 7:
            v = self.u("B")
            if v not in (0, 1):
                raise ValueError(f"bool {v}")
            return bool(v)
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.u("I"), self.u("Q")
            return [self.value(et) for _ in range(n)]
        raise ValueError(f"value type {t}")


def bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def read(path):
    b = open(path, "rb").read()
    r = Reader(b)
    if r.take(4) != b"GGUF":
        raise ValueError("magic")
    ver = r.u("I")
    if ver != 3:
        raise ValueError(f"version {ver}")
    nt, nkv = r.u("Q"), r.u("Q")
    kv, types = {}, {}
    for _ in range(nkv):
        k = r.string()
        if k in kv:
            raise ValueError(f"duplicate key {k}")
        t = r.u("I")
        kv[k] = r.value(t)
        types[k] = t
    align = kv.get("general.alignment", 32)
    infos = []
    for _ in range(nt):
        name = r.string()
        nd = r.u("I")
        ne = [r.u("Q") for _ in range(nd)]
        t, off = r.u("I"), r.u("Q")
        if t not in GGML:
            raise ValueError(f"{name}: type {t}")
        if off % align:
            raise ValueError(f"{name}: offset {off} not aligned to {align}")
        infos.append((name, ne, t, off))
    data = (r.o + align - 1) // align * align
    if any(b[r.o:data]):
        raise ValueError("non-zero padding before data")
    tensors, end = {}, 0
    for name, ne, t, off in sorted(infos, key=lambda x: x[3]):
        if off < end:
            raise ValueError(f"{name}: overlaps the previous tensor")
        n = int(np.prod(ne))
        if GGML[t] in BLOCK:
            if ne[0] % 32:
                raise ValueError(f"{name}: {GGML[t]} row of {ne[0]}")
            nb = n // 32 * BLOCK[GGML[t]][0]
        else:
            nb = n * (4 if GGML[t] == "F32" else 2)
        s = data + off
        if s + nb > len(b):
            raise ValueError(f"{name}: data past the end of the file")
        raw = b[s:s + nb]
        if GGML[t] == "F32":
            a = np.frombuffer(raw, "<f4")
        elif GGML[t] == "F16":
            a = np.frombuffer(raw, "<f2").astype(np.float32)
        elif GGML[t] == "BF16":
            a = bf16_to_f32(np.frombuffer(raw, "<u2"))
        else:
            try:
                a = dequantize(GGML[t], raw)
            except ValueError as e:
                raise ValueError(f"{name}: {e}")
        tensors[name] = (GGML[t], list(ne), a.reshape(list(reversed(ne))))
        end = off + nb
    last = data + (end + align - 1) // align * align
    if len(b) != last:
        raise ValueError(f"file is {len(b)} bytes, the aligned data ends at {last}")
    return kv, tensors, {"alignment": align, "types": types, "data_start": data}
