#!/usr/bin/env python3
"""tests/test_st_corpus.py — generated corpus of good and bad safetensors inputs.

For each case it runs `INSPECT inspect PATH` (PATH is a .safetensors file or a
model directory) and checks:
  * the exit status (0, 65 or 66);
  * on failure: exactly one line on stderr, naming the file (full path), the
    tensor where there is one (as 'name'), and a keyword of the reason;
  * no sanitizer report;
  * with --dump, values of good tensors read back through the C reader equal
    what numpy wrote (F16, BF16, F32, F64 at unaligned offsets);
  * the whole corpus again under SLICEPIPE_SHORT_READS=1 gives the same status
    and the same message.

usage: test_st_corpus.py --inspect BIN [--dump BIN] [--models DIR]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

CASES = []  # (label, path, want_rc, needles, dumps)


def case(label, path, rc, needles=(), dumps=()):
    CASES.append((label, str(path), rc, list(needles), list(dumps)))


def q(name):
    return "'%s'" % name


def entry(name, dtype, shape, offs):
    """One header entry; shape/offs are python values or raw JSON text (str)."""
    sh = shape if isinstance(shape, str) else json.dumps(shape)
    of = offs if isinstance(offs, str) else json.dumps(offs)
    return '%s:{"dtype":%s,"shape":%s,"data_offsets":%s}' % (json.dumps(name), json.dumps(dtype), sh, of)


def header(entries, meta=None):
    parts = []
    if meta is not None:
        parts.append('"__metadata__":' + (meta if isinstance(meta, str) else json.dumps(meta)))
    parts += entries
    return "{" + ",".join(parts) + "}"


def st_bytes(hdr, data=b"", pad=0, n=None):
    h = hdr.encode("utf-8") if isinstance(hdr, str) else hdr
    h += b" " * pad
    return struct.pack("<Q", len(h) if n is None else n) + h + data


def write(path, blob):
    with open(path, "wb") as f:
        f.write(blob)
    return path


def bf16_bits(x):
    """float32 array -> BF16 bit patterns (truncation: the values are exact)."""
    return (np.asarray(x, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")


def good_tensors(rng):
    """Tensors of every float dtype plus an U8 pad that misaligns all of them."""
    f16 = rng.standard_normal(15).astype("<f2")
    f16[0] = np.float16(65504.0)
    f16[1] = np.float16(6e-8)  # subnormal
    bf = bf16_bits(rng.standard_normal(12).astype(np.float32) * 1000)
    f32 = rng.standard_normal(7).astype("<f4")
    f32[2] = -0.0
    f64 = np.array([0.1, -1e30, 3.0], dtype="<f8")
    big = rng.standard_normal(40000).astype("<f2")  # > one 64 KiB conversion chunk
    items = [  # name, dtype, shape, bytes, expected float32 values
        ("pad", "U8", [3], b"\x01\x02\x03", None),
        ("h", "F16", [3, 5], f16.tobytes(), f16.astype(np.float32)),
        ("b", "BF16", [4, 3], bf.tobytes(), (bf.astype(np.uint32) << 16).view(np.float32)),
        ("f", "F32", [7], f32.tobytes(), f32.astype(np.float32)),
        ("d", "F64", [3], f64.tobytes(), f64.astype(np.float32)),
        ("s", "F32", [], np.array([2.5], "<f4").tobytes(), np.array([2.5], np.float32)),
        ("e", "F32", [0, 4], b"", np.zeros(0, np.float32)),
        ("big", "F16", [200, 200], big.tobytes(), big.astype(np.float32)),
    ]
    return items


def pack(items, meta=None, pad_to_odd=True):
    ents, data = [], b""
    for name, dt, shape, raw, _ in items:
        ents.append(entry(name, dt, shape, [len(data), len(data) + len(raw)]))
        data += raw
    hdr = header(ents, meta)
    pad = 3
    if pad_to_odd and (8 + len(hdr.encode()) + pad) % 2 == 0:
        pad += 1
    return st_bytes(hdr, data, pad=pad)


def f32x(n, v=1.0):
    return np.full(n, v, dtype="<f4").tobytes()


REAL_MODEL = "stories260k"


def load_st(path):
    """[(name, dtype, shape, raw bytes)] of a safetensors file, in data order."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    hdr = json.loads(blob[8:8 + n])
    hdr.pop("__metadata__", None)
    out = []
    for name, e in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, en = e["data_offsets"]
        out.append((name, e["dtype"], e["shape"], blob[8 + n + b:8 + n + en]))
    return out


def pack_raw(items, misalign=False):
    """A shard of `items`; misalign: the header is right-padded so that the data
    region starts at an offset of 1 mod 4 (every F32 tensor unaligned)."""
    ents, data = [], b""
    for name, dt, shape, raw in items:
        ents.append(entry(name, dt, shape, [len(data), len(data) + len(raw)]))
        data += raw
    hdr = header(ents, {"format": "pt"})
    pad = (1 - (8 + len(hdr.encode() if isinstance(hdr, str) else hdr)) % 4) % 4 if misalign else 0
    return st_bytes(hdr, data, pad=pad)


def build(root, rng, models_dir):
    R = os.path.join
    config, real = None, None
    if models_dir and os.path.isfile(R(models_dir, REAL_MODEL, "model.safetensors")):
        with open(R(models_dir, REAL_MODEL, "config.json"), "rb") as f:
            config = f.read()
        real = load_st(R(models_dir, REAL_MODEL, "model.safetensors"))
    W = lambda name, blob: write(R(root, name), blob)
    one = entry("w", "F32", [2], [0, 8])

    # ---- good files ----
    items = good_tensors(rng)
    p = W("good_mixed_unaligned.safetensors", pack(items, meta={"format": "pt"}))
    case("good: F16/BF16/F32/F64 at unaligned offsets", p, 0,
         dumps=[(n, exp) for n, _, _, _, exp in items if exp is not None])
    p = W("good_scalar.safetensors", st_bytes(header([entry("s", "F32", [], [0, 4])]), f32x(1, -7.5)))
    case("good: scalar", p, 0, dumps=[("s", np.array([-7.5], np.float32))])
    p = W("good_empty_tensor.safetensors",
          st_bytes(header([entry("e", "BF16", [4, 0], [0, 0]), entry("w", "F32", [2], [0, 8]),
                           entry("z", "F16", [0], [8, 8])]), f32x(2, 3.0)))
    case("good: empty tensors", p, 0, dumps=[("e", np.zeros(0, np.float32)), ("w", np.full(2, 3.0, np.float32))])
    p = W("good_no_tensors.safetensors", st_bytes("{}"))
    case("good: no tensors", p, 0)
    p = W("good_padded.safetensors", st_bytes(header([one], {"a": "b"}), f32x(2), pad=117))
    case("good: header right-padded with spaces", p, 0)
    p = W("good_int_dtypes.safetensors",
          st_bytes(header([entry("i", "I64", [2], [0, 16]), entry("m", "BOOL", [3], [16, 19])]), bytes(19)))
    case("good: integer dtypes are not read as float", p, 0)

    # ---- sizes and the length prefix ----
    case("file shorter than 8 bytes", W("short5.safetensors", b"\x02\x00\x00\x00\x00"), 65, ["shorter", "8"])
    case("empty file", W("empty.safetensors", b""), 65, ["shorter"])
    case("N above 100,000,000", W("n_huge.safetensors", st_bytes("{}", n=100_000_001)), 65, ["100000001", "limit"])
    case("N = 2^64-1", W("n_max.safetensors", st_bytes("{}", n=2**64 - 1)), 65, ["limit"])
    case("8+N beyond the file", W("n_beyond.safetensors", st_bytes("{}" + " " * 10, n=100)), 65, ["beyond the end"])
    case("not a regular file", "/dev/null", 65, ["not a regular file"])
    case("missing file", R(root, "does_not_exist.safetensors"), 66, ["no such file"])

    # ---- header text ----
    for tag, raw in [("bad_byte", b'{"w\xff":1}'), ("overlong", b'{"\xc0\xaf":1}'),
                     ("surrogate", b'{"\xed\xa0\x80":1}'), ("above_10ffff", b'{"\xf4\x90\x80\x80":1}'),
                     ("cut_sequence", b'{"\xe2\x82"  :1}')]:
        case("header not UTF-8 (%s)" % tag, W("utf8_%s.safetensors" % tag, st_bytes(raw)), 65, ["UTF-8"])
    case("header lone surrogate escape", W("json_lone_surrogate.safetensors", st_bytes('{"\\ud800":1}')), 65,
         ["surrogate"])
    case("header invalid JSON", W("json_invalid.safetensors", st_bytes('{"w": }')), 65, ["not valid JSON"])
    case("header unterminated", W("json_unterminated.safetensors", st_bytes('{"w":{"dtype":"F32"')), 65,
         ["not valid JSON"])
    case("header with leading zero number",
         W("json_leading_zero.safetensors", st_bytes(header([entry("w", "F32", "[02]", [0, 8])]), f32x(2))), 65,
         ["not valid JSON"])
    case("header is an array", W("json_array.safetensors", st_bytes("[]")), 65, ["begin with '{'"])
    case("header is a string", W("json_string.safetensors", st_bytes('"{}"')), 65, ["begin with '{'"])
    case("header with leading space", W("json_leading_space.safetensors", st_bytes(" {}")), 65, ["begin with '{'"])
    case("header trailing garbage", W("json_trailing.safetensors", st_bytes("{} x")), 65, ["trailing garbage"])
    case("header trailing NUL padding", W("json_trailing_nul.safetensors", st_bytes(b"{}\x00\x00")), 65,
         ["trailing garbage"])
    case("header trailing newline", W("json_trailing_nl.safetensors", st_bytes("{}\n")), 65, ["trailing garbage"])
    case("header second object", W("json_two_objects.safetensors", st_bytes("{}{}")), 65, ["trailing garbage"])

    # ---- entries ----
    case("duplicate tensor name",
         W("dup_name.safetensors", st_bytes(header([one, entry("w", "F32", [2], [8, 16])]), f32x(4))), 65,
         ["duplicate key 'w'"])
    case("unknown dtype", W("dtype_unknown.safetensors", st_bytes(header([entry("w", "Q4", [2], [0, 8])]), f32x(2))),
         65, [q("w"), "unknown dtype 'Q4'"])
    case("entry not an object", W("entry_not_object.safetensors", st_bytes('{"w":[1,2]}')), 65,
         [q("w"), "not a JSON object"])
    case("entry missing data_offsets",
         W("entry_missing_offsets.safetensors", st_bytes('{"w":{"dtype":"F32","shape":[1]}}')), 65,
         [q("w"), "missing field 'data_offsets'"])
    case("entry unknown field",
         W("entry_extra_field.safetensors",
           st_bytes('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}', f32x(1))), 65,
         [q("w"), "unknown field 'x'"])
    for tag, shape, kw in [("negative", "[-1,2]", "negative"), ("fractional", "[2.5]", "fractional"),
                           ("string", '["2"]', "not a number"), ("null", "[null]", "not a number"),
                           ("nested", "[[2]]", "not a number"), ("2p53", "[9007199254740992]", "too big"),
                           ("1e300", "[1e300]", "too big")]:
        case("shape %s" % tag, W("shape_%s.safetensors" % tag,
                                 st_bytes(header([entry("w", "F32", shape, [0, 8])]), f32x(2))), 65, [q("w"), kw])
    case("shape not an array", W("shape_not_array.safetensors",
                                 st_bytes(header([entry("w", "F32", "2", [0, 8])]), f32x(2))), 65,
         [q("w"), "shape is not an array"])
    case("shape with 9 dims", W("shape_9dims.safetensors",
                                st_bytes(header([entry("w", "F32", [1] * 9, [0, 4])]), f32x(1))), 65,
         [q("w"), "9 dims"])
    # products that wrap to exactly 0 in 64-bit arithmetic: a naive check sees an empty tensor
    case("shape product wraps to 0 (2^32*2^32)",
         W("shape_wrap0_a.safetensors", st_bytes(header([entry("w", "F32", [2**32, 2**32], [0, 0])]))), 65,
         [q("w"), "overflow"])
    case("shape product wraps to 0 (2^52*2^12)",
         W("shape_wrap0_b.safetensors", st_bytes(header([entry("w", "U8", [2**52, 2**12], [0, 0])]))), 65,
         [q("w"), "overflow"])
    case("byte size wraps to 0 (2^31*2^31 F32)",
         W("shape_wrap0_bytes.safetensors", st_bytes(header([entry("w", "F32", [2**31, 2**31], [0, 0])]))), 65,
         [q("w"), "overflow"])
    case("shape product overflows next to a 0 dim",
         W("shape_overflow_zero.safetensors", st_bytes(header([entry("w", "F32", [0, 2**40, 2**40], [0, 0])]))), 65,
         [q("w"), "overflow"])

    # ---- data_offsets ----
    for tag, offs, kw in [("not_array", '"0,8"', "not an array of 2"), ("three", "[0,4,8]", "not an array of 2"),
                          ("one", "[0]", "not an array of 2"), ("negative", "[-8,0]", "negative"),
                          ("fractional", "[0,7.5]", "fractional"), ("string", '["0","8"]', "not a number"),
                          ("huge", "[0,18446744073709551616]", "too big")]:
        case("data_offsets %s" % tag, W("offsets_%s.safetensors" % tag,
                                        st_bytes(header([entry("w", "F32", [2], offs)]), f32x(2))), 65, [q("w"), kw])
    case("data_offsets reversed", W("offsets_reversed.safetensors",
                                    st_bytes(header([entry("w", "F32", [0], [8, 0])]), f32x(2))), 65,
         [q("w"), "reversed"])
    case("data_offsets overlap",
         W("offsets_overlap.safetensors",
           st_bytes(header([entry("a", "F32", [2], [0, 8]), entry("b", "F32", [2], [4, 12])]), f32x(3))), 65,
         [q("b"), "overlaps", q("a")])
    case("data_offsets same range twice",
         W("offsets_alias.safetensors",
           st_bytes(header([entry("a", "F32", [2], [0, 8]), entry("b", "F32", [2], [0, 8])]), f32x(2))), 65,
         ["overlaps"])
    case("data_offsets gap",
         W("offsets_gap.safetensors",
           st_bytes(header([entry("a", "F32", [2], [0, 8]), entry("b", "F32", [2], [12, 20])]), f32x(5))), 65,
         [q("b"), "gap", q("a")])
    case("first begin is not 0",
         W("offsets_first_not0.safetensors", st_bytes(header([entry("w", "F32", [2], [4, 12])]), f32x(3))), 65,
         [q("w"), "not 0"])
    case("end-begin != dtype size * numel",
         W("offsets_size_mismatch.safetensors", st_bytes(header([entry("w", "F32", [3], [0, 8])]), f32x(2))), 65,
         [q("w"), "size mismatch"])
    case("F16 byte count of an F32 shape",
         W("offsets_size_mismatch_f16.safetensors", st_bytes(header([entry("w", "F16", [2], [0, 8])]), f32x(2))),
         65, [q("w"), "size mismatch"])

    # ---- data region ----
    case("data truncated",
         W("data_truncated.safetensors", st_bytes(header([entry("w", "F32", [4], [0, 16])]), f32x(3))), 65,
         ["truncated"])
    case("data trailing bytes",
         W("data_trailing.safetensors", st_bytes(header([entry("w", "F32", [2], [0, 8])]), f32x(2) + b"\0")), 65,
         ["trailing bytes"])
    case("no tensors but data", W("data_trailing_empty_header.safetensors", st_bytes("{}", b"abc")), 65,
         ["trailing bytes"])

    # ---- __metadata__ ----
    case("metadata not an object", W("meta_array.safetensors", st_bytes(header([one], "[]"), f32x(2))), 65,
         ["__metadata__", "not a JSON object"])
    case("metadata non-string value", W("meta_int.safetensors", st_bytes(header([one], '{"n":1}'), f32x(2))), 65,
         ["__metadata__", "'n'", "not a string"])
    case("metadata duplicate key", W("meta_dup.safetensors", st_bytes(header([one], '{"k":"a","k":"b"}'), f32x(2))),
         65, ["__metadata__", "duplicate key 'k'"])
    case("metadata twice", W("meta_twice.safetensors",
                             st_bytes('{"__metadata__":{},"__metadata__":{}}')), 65, ["duplicate", "__metadata__"])

    # ---- non-finite weights ----
    v = np.ones(6, "<f4")
    v[3] = np.nan
    case("NaN in F32", W("nan_f32.safetensors", st_bytes(header([entry("w.nan", "F32", [2, 3], [0, 24])]),
                                                         v.tobytes())), 65,
         [q("w.nan"), "non-finite", "element 3"])
    bf = bf16_bits(np.array([1, 2, np.inf], np.float32))
    case("Inf in BF16 (unaligned)",
         W("inf_bf16.safetensors", st_bytes(header([entry("pad", "U8", [1], [0, 1]), entry("w.inf", "BF16", [3], [1, 7])]),
                                            b"\0" + bf.tobytes(), pad=1)), 65,
         [q("w.inf"), "non-finite", "element 2"])
    h = np.ones(9, "<f2")
    h[5] = -np.inf
    h[7] = np.nan
    case("-Inf then NaN in F16",
         W("inf_f16.safetensors", st_bytes(header([entry("w.h", "F16", [9], [0, 18])]), h.tobytes())), 65,
         [q("w.h"), "non-finite", "element 5"])

    h = np.ones(40000, "<f2")
    h[35000] = np.nan  # past the first 64 KiB conversion chunk: the index must be global
    case("NaN deep in a large F16",
         W("nan_f16_large.safetensors", st_bytes(header([entry("w.big", "F16", [200, 200], [0, 80000])]),
                                                h.tobytes())), 65,
         [q("w.big"), "non-finite", "element 35000"])

    # ---- model directories ----
    def shard(d, name, tensors):
        """tensors: list of (name, float32 values)."""
        ents, data = [], b""
        for tn, vals in tensors:
            raw = np.asarray(vals, "<f4").tobytes()
            ents.append(entry(tn, "F32", [len(vals)], [len(data), len(data) + len(raw)]))
            data += raw
        return write(R(d, name), st_bytes(header(ents), data))

    def model(label, wm, shards, raw_index=None, setup=None):
        """A model dir with config.json (slicepipe inspect reads it before the
        checkpoint), the given shards and an index (none if wm and raw_index are None)."""
        d = R(root, "dir_" + label)
        os.mkdir(d)
        if config:
            write(R(d, "config.json"), config)
        for sname, tensors in shards.items():
            shard(d, sname, tensors)
        idx = R(d, "model.safetensors.index.json")
        if raw_index is not None or wm is not None:
            text = raw_index if raw_index is not None else json.dumps(
                {"metadata": {"total_size": 0}, "weight_map": wm}, indent=2) + "\n"
            write(idx, text if isinstance(text, bytes) else text.encode())
        if setup:
            setup(d)
        return d, idx

    S1, S2, S3 = "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", \
        "model-00003-of-00003.safetensors"
    two = {S1: [("a", [1, 2]), ("b", [3])], S2: [("c", [4, 5, 6])]}
    wm2 = {"a": S1, "b": S1, "c": S2}
    # Good model dirs are the real stories260k re-packed (so `slicepipe inspect`, which
    # also checks the tensors against config.json and refuses any tensor it does not
    # consume, accepts them); shard 2's header is padded so that every F32 tensor in
    # it is misaligned.
    if real:
        half = len(real) // 2
        part2 = real[half:]
        wm_real = {n: S1 for n, _, _, _ in real[:half]}
        wm_real.update({n: S2 for n, _, _, _ in part2})
        d, _ = model("good_2shards", wm_real, {},
                     setup=lambda d: (write(R(d, S1), pack_raw(real[:half])), write(R(d, S2), pack_raw(part2, True))))
        case("good: 2-shard checkpoint (shard 2 unaligned)", d, 0,
             dumps=[(R(d, S2), part2[-1][0], np.frombuffer(part2[-1][3], "<f4").astype(np.float32)),
                    (R(d, S1), real[0][0], np.frombuffer(real[0][3], "<f4").astype(np.float32))])
        # the same checkpoint with one NaN in shard 2
        nan_name, _, nan_shape, nan_raw = part2[3]
        v = np.frombuffer(nan_raw, "<f4").copy()
        v[17] = np.nan
        part2_nan = part2[:3] + [(nan_name, "F32", nan_shape, v.tobytes())] + part2[4:]
        d, _ = model("nan_in_shard", wm_real, {},
                     setup=lambda d: (write(R(d, S1), pack_raw(real[:half])), write(R(d, S2), pack_raw(part2_nan, True))))
        case("NaN in a shard", d, 65, [R(d, S2), q(nan_name), "non-finite", "element 17"])
        d, _ = model("good_single", None, {}, setup=lambda d: write(R(d, "model.safetensors"), pack_raw(real)))
        case("good: single model.safetensors", d, 0)
        wm_link = dict(wm_real)
        wm_link.update({n: "link.safetensors" for n, _, _, _ in part2})
        d, _ = model("good_symlink_inside", wm_link, {},
                     setup=lambda d: (write(R(d, S1), pack_raw(real[:half])), write(R(d, S2), pack_raw(part2, True)),
                                      os.symlink(S2, R(d, "link.safetensors"))))
        case("good: symlink that stays inside the model dir", d, 0)
        d, _ = model("good_subdir", {n: "sub/x.safetensors" for n, _, _, _ in real}, {},
                     setup=lambda d: (os.mkdir(R(d, "sub")), write(R(d, "sub", "x.safetensors"), pack_raw(real))))
        case("good: shard in a subdirectory", d, 0)
    else:
        print("note: %s not found: good model-directory cases skipped" % REAL_MODEL)

    d, idx = model("missing_shards", {"a": S1, "b": S2, "c": S3}, {S2: [("b", [1])]})
    case("missing shards (two, all listed)", d, 66, [idx, "missing", S1, S3])
    d, _ = model("empty_dir", None, {})
    case("no index and no model.safetensors", d, 66, [R(d, "model.safetensors"), "no such file"])
    d, idx = model("tensor_not_in_shard", {"a": S1, "b": S1, "c": S2, "x": S2}, two)
    case("tensor in index but not in its shard", d, 65, [idx, q("x"), S2, "not in its shard"])
    d, idx = model("tensor_in_other_shard", {"a": S1, "b": S2, "c": S2}, two)
    case("tensor in index under the wrong shard", d, 65, [idx, q("b"), S2, "not in its shard"])
    d, _ = model("tensor_in_two_shards", {"a": S1, "c": S2},
                 {S1: [("a", [1]), ("c", [2])], S2: [("c", [3])]})
    case("tensor in two shards", d, 65, [q("c"), "appears in both", S1, S2])
    d, idx = model("unlisted_tensor", {"a": S1, "c": S2}, two)
    case("tensor in a shard but not in the index", d, 65, [idx, q("b"), S1, "not listed"])

    outside_bad = write(R(root, "outside_corrupt.safetensors"), b"\x00garbage")
    outside_good = shard(root, "outside_good.safetensors", [("a", [1])])
    d, idx = model("dotdot", {"a": "../outside_corrupt.safetensors"}, {})
    case("weight_map path with '..' (target corrupt: must not be opened)", d, 65,
         [idx, q("a"), "'..'", "outside_corrupt"])
    d, idx = model("dotdot_middle", {"a": "sub/../../outside_good.safetensors"}, {},
                   setup=lambda d: os.mkdir(R(d, "sub")))
    case("weight_map path with a '..' component in the middle", d, 65, [idx, q("a"), "'..'"])
    d, idx = model("absolute", {"a": outside_good}, {})
    case("weight_map absolute path", d, 65, [idx, q("a"), "absolute"])
    d, idx = model("symlink_escape", {"a": S1}, {},
                   setup=lambda d: os.symlink(outside_good, R(d, S1)))
    case("weight_map symlink escaping the model dir", d, 65, [idx, q("a"), S1, "outside the model directory"])
    d, idx = model("symlink_dir_escape", {"a": "sub/x.safetensors"}, {},
                   setup=lambda d: os.symlink(root, R(d, "sub")) or shard(root, "x.safetensors", [("a", [1])]))
    case("weight_map directory symlink escaping the model dir", d, 65, [idx, q("a"), "outside the model directory"])
    d, idx = model("empty_path", {"a": ""}, {})
    case("weight_map empty path", d, 65, [idx, q("a"), "empty"])
    d, idx = model("dup_weight_map", None, two,
                   raw_index='{"weight_map":{"a":"%s","b":"%s","a":"%s","c":"%s"}}' % (S1, S1, S1, S2))
    case("duplicate name in weight_map", d, 65, [idx, "duplicate key 'a' in 'weight_map'"])
    d, idx = model("wm_not_object", None, two, raw_index='{"weight_map":[]}')
    case("weight_map not an object", d, 65, [idx, "weight_map", "not a JSON object"])
    d, idx = model("wm_missing", None, two, raw_index='{"metadata":{}}')
    case("index without weight_map", d, 65, [idx, "weight_map"])
    d, idx = model("wm_value_int", None, two, raw_index='{"weight_map":{"a":1}}')
    case("weight_map value not a string", d, 65, [idx, q("a"), "not a string"])
    d, idx = model("index_bad_json", None, two, raw_index='{"weight_map":{"a":"x",}}')
    case("index not valid JSON", d, 65, [idx, "not valid JSON"])
    d, idx = model("index_array", None, two, raw_index="[]")
    case("index not an object", d, 65, [idx, "not a JSON object"])
    d, idx = model("index_bad_utf8", None, two, raw_index=b'{"weight_map":{"a\xff":"x"}}')
    case("index not UTF-8", d, 65, [idx, "UTF-8"])
    other = R(root, "dir_missing_shards", "model.safetensors.index.json")
    d, _ = model("index_symlink_escape", None, two,
                 setup=lambda d: os.symlink(other, R(d, "model.safetensors.index.json")))
    case("index itself a symlink escaping the dir", d, 65, ["model.safetensors.index.json", "outside"])
    d, _ = model("corrupt_shard", wm2, two,
                 setup=lambda d: write(R(d, S2), st_bytes(header([entry("c", "F32", [3], [0, 12])]), f32x(2))))
    case("corrupt shard in a good index", d, 65, [R(d, S2), "truncated"])



def run(bin_, args, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    p = subprocess.run([bin_] + args, capture_output=True, text=True, errors="replace", env=env, timeout=120)
    return p.returncode, p.stdout, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inspect", required=True, help="binary run as BIN inspect PATH")
    ap.add_argument("--dump", help="test_safetensors, run as BIN dump PATH NAME")
    ap.add_argument("--models", help="shared models dir: every model in it must inspect cleanly")
    a = ap.parse_args()

    rng = np.random.default_rng(1234)
    failures = []
    with tempfile.TemporaryDirectory(prefix="st_corpus_") as root:
        root = os.path.realpath(root)
        build(root, rng, a.models)
        if a.models and os.path.isdir(a.models):
            for m in sorted(os.listdir(a.models)):
                md = os.path.join(a.models, m)
                if os.path.isdir(md):
                    case("good: shared model " + m, md, 0)
        results = {}
        for label, path, want, needles, dumps in CASES:
            rc, out, err = run(a.inspect, ["inspect", path])
            results[label] = (rc, err)
            problems = []
            if rc != want:
                problems.append("exit %d, want %d" % (rc, want))
            if "Sanitizer" in err or "runtime error" in err:
                problems.append("sanitizer report")
            if want != 0:
                lines = [l for l in err.splitlines() if l.strip()]
                if len(lines) != 1:
                    problems.append("want exactly one stderr line, got %d" % len(lines))
                for n in [path] + needles:
                    if n not in err:
                        problems.append("stderr lacks %r" % n)
            for d in dumps:
                if not a.dump:
                    break
                fpath, name, exp = d if len(d) == 3 else (path, d[0], d[1])
                drc, dout, derr = run(a.dump, ["dump", fpath, name])
                try:
                    got = np.array([float(x) for x in dout.split()], dtype=np.float32)
                except ValueError:
                    got = np.zeros(0, np.float32)
                    drc = drc or -1000
                if drc != 0 or got.shape != exp.shape or not np.array_equal(got.view(np.uint32), exp.view(np.uint32)):
                    problems.append("dump %s: rc %d, values differ (got %s..., want %s...)" %
                                    (name, drc, got[:4], exp[:4]))
            if problems:
                failures.append("%s [%s]: %s\n    stderr: %s" % (label, path, "; ".join(problems), err.strip()))

        # the same corpus with forced short reads: identical status and message
        for label, path, want, _, _ in CASES:
            rc, _, err = run(a.inspect, ["inspect", path], {"SLICEPIPE_SHORT_READS": "1"})
            if (rc, err) != results[label]:
                failures.append("%s [SLICEPIPE_SHORT_READS=1]: exit %d %r differs from %r" %
                                (label, rc, err.strip(), results[label]))

    n65 = sum(1 for c in CASES if c[2] == 65)
    n66 = sum(1 for c in CASES if c[2] == 66)
    print("%d cases (%d good, %d exit 65, %d exit 66), %d value dumps, x2 with short reads" %
          (len(CASES), len(CASES) - n65 - n66, n65, n66, sum(len(c[4]) for c in CASES)))
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
