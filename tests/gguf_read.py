"""tests/gguf_read.py — an independent GGUF v3 reader, written from ggml's
docs/gguf.md (not from io/formats/gguf.c), for the tests.

read(path) -> (kv: dict key -> value, tensors: dict name -> (type, shape, ndarray|bytes), info)
Values: ints, floats, bools, str (UTF-8), lists. Tensors: F32/F16/BF16 as
float32 numpy arrays of shape ne[::-1] (rows first, like HF); Q8_0
dequantized (d · q). Every structural rule is checked: magic, version 3,
offsets aligned and increasing without overlap, data inside the file, the
file ending at the aligned end of the last tensor.
"""
import struct

import numpy as np

GGML = {0: "F32", 1: "F16", 8: "Q8_0", 30: "BF16"}


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
        if GGML[t] == "Q8_0":
            if ne[0] % 32:
                raise ValueError(f"{name}: Q8_0 row of {ne[0]}")
            nb = n // 32 * 34
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
            blk = np.frombuffer(raw, np.uint8).reshape(-1, 34)
            d = blk[:, :2].copy().view("<f2").astype(np.float32)
            q = blk[:, 2:].view(np.int8).astype(np.float32)
            a = (d * q).reshape(-1)
        tensors[name] = (GGML[t], list(ne), a.reshape(list(reversed(ne))))
        end = off + nb
    last = data + (end + align - 1) // align * align
    if len(b) != last:
        raise ValueError(f"file is {len(b)} bytes, the aligned data ends at {last}")
    return kv, tensors, {"alignment": align, "types": types, "data_start": data}
