"""Reference safetensors files for src/core/safetensors.c, written by the reference implementation
(the `safetensors` package: safetensors.torch.save_file and safetensors.numpy.save_file).

Writes into tests/core/data/safetensors/:
  mixed.safetensors         torch: every dtype torch can save (F64 I64 U64 F32 U32 I32 BF16 F16
                            U16 I16 I8 U8 BOOL F8_E4M3 F8_E5M2 C64), a scalar, zero-size tensors,
                            f16/bf16 specials (subnormals, infinities, NaN), and the metadata
                            {"format": "pt"}
  meta.safetensors          numpy: one tensor, three metadata entries, written until the reference
                            (which keeps metadata in a hash map) happens to write them sorted
  writer_torch.safetensors  torch: medtrain's dtypes only (F32 BF16 F16 U8 U16 I32 I64), names that
                            exercise the ordering (dtype, then bytewise name: "Z" < "a.10" < "a.2"),
                            a non-ASCII name, names and metadata needing JSON escapes, one
                            metadata key
  writer_numpy.safetensors  numpy: the same without BF16, no metadata
  empty.safetensors         numpy: no tensors
  expected.json             for each file: metadata, and its tensors in header order with dtype,
                            shape, raw bytes (hex) and values as float32 (torch's .float(); null for
                            NaN, "inf"/"-inf" for infinities; absent for dtypes medtrain does not
                            convert). test_safetensors reads the files and compares, and feeds the
                            writer_* tensors to the C writer and compares its file byte for byte.
and a few seed inputs into tests/fuzz/corpus/safetensors/.

Regenerate (torch, numpy and safetensors, e.g. /work/torchenv):
    /work/torchenv/bin/python tests/oracles/safetensors_fixtures.py
The output is the same on every run (for a given safetensors version).
"""
import json
import math
import os
import struct

import numpy as np
import safetensors
import torch
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import save_file as torch_save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "core", "data", "safetensors")
CORPUS = os.path.join(HERE, "..", "fuzz", "corpus", "safetensors")

F16_SPECIALS = [0.0, -0.0, 2.0**-24, 2.0**-14 - 2.0**-24, 2.0**-14, 1.0, -2.5, 65504.0, 1e-3,
                float("inf"), float("-inf"), float("nan")]
BF16_SPECIALS = [0.0, -0.0, 1.0, -3.140625, 2.0**-133, 3.0e38, float("inf"), float("-inf"),
                 float("nan")]


def mixed():
    return {
        "f64": torch.tensor([1.5, -2.25, 1e300, 1e-300], dtype=torch.float64),
        "i64": torch.tensor([-(2**62) + 1, 2**53 + 1, -5, 0, 7], dtype=torch.int64),
        "u64": torch.tensor([0, 2**63 + 2**40, 12], dtype=torch.uint64),
        "w.f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1.0,
        "scalar": torch.tensor(3.25, dtype=torch.float32),
        "empty.f32": torch.zeros((0, 3), dtype=torch.float32),
        "u32": torch.tensor([0, 4000000000, 17], dtype=torch.uint32),
        "i32": torch.tensor([[-(2**31), 2**31 - 1], [5, -6]], dtype=torch.int32),
        "bf16": torch.tensor(BF16_SPECIALS, dtype=torch.bfloat16),
        "f16": torch.tensor(F16_SPECIALS, dtype=torch.float16).reshape(3, 4),
        "u16": torch.tensor([0, 1, 65535], dtype=torch.uint16),
        "i16": torch.tensor([-32768, 32767, -1], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "u8": torch.tensor([[0, 255], [1, 2]], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True, True, False]),
        "empty.bool": torch.zeros((4, 0, 2), dtype=torch.bool),
        "f8_e4m3": torch.tensor([0.5, -2.0, 448.0], dtype=torch.float8_e4m3fn),
        "f8_e5m2": torch.tensor([0.5, -2.0], dtype=torch.float8_e5m2),
        "c64": torch.tensor([1 + 2j], dtype=torch.complex64),
    }


def writer_tensors():
    """(name, numpy dtype or 'bf16', shape, values); medtrain's dtypes only."""
    return [
        ("b.weight", np.float32, (2, 2), [1.0, -2.0, 0.5, 3.0]),
        ("a.weight", np.float32, (3,), [0.25, 0.125, -8.0]),
        ("a.10", np.float32, (1,), [10.0]),
        ("a.2", np.float32, (1,), [2.0]),
        ("Z", np.float32, (2, 1, 1), [-1.0, 1.0]),
        ("scalar", np.float32, (), [42.0]),
        ("empty", np.float32, (0, 4), []),
        ("emb.\u00e9\u4e2d", np.float16, (2, 3), [1.0, -0.5, 65504.0, 2.0**-24, 0.0, 3.0]),
        ('quote"back\\slash', np.int64, (2,), [-(2**40), 123456789012]),
        ("tab\tname\u0001", np.uint8, (3,), [0, 7, 255]),
        ("u16", np.uint16, (2,), [65535, 1]),
        ("i32", np.int32, (2, 2), [-1, 2, -3, 2**31 - 1]),
        ("i64.zero", np.int64, (0,), []),
        ("bf16", "bf16", (3, 2), [1.0, -2.0, 0.5, 0.0, 1e-3, 300.0]),
        ("bf16.empty", "bf16", (0,), []),
    ]


def as_torch(dtype, shape, values):
    if dtype == "bf16":
        return torch.tensor(values, dtype=torch.float32).reshape(shape).to(torch.bfloat16)
    return torch.from_numpy(np.array(values, dtype=dtype).reshape(shape))


def jfloat(x):
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


CONVERTIBLE = {"F32", "BF16", "F16", "F64", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8",
               "BOOL"}


def describe(path):
    """Metadata and tensors in header order, as the C test expects them."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])  # dicts keep the file's order
    meta = header.pop("__metadata__", None) or {}
    data = raw[8 + n :]
    loaded = {}
    with safetensors.safe_open(path, framework="pt") as sf:
        for name in sf.keys():
            loaded[name] = sf.get_tensor(name)
    tensors = []
    for name, info in header.items():
        b, e = info["data_offsets"]
        entry = {"name": name, "dtype": info["dtype"], "shape": info["shape"],
                 "hex": data[b:e].hex()}
        if info["dtype"] in CONVERTIBLE:
            t = loaded[name]
            vals = t.to(torch.float32).flatten().tolist() if t.numel() else []
            entry["f32"] = [jfloat(v) for v in vals]
        tensors.append(entry)
    return {"metadata": meta, "tensors": tensors, "size": len(raw)}


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(CORPUS, exist_ok=True)
    files = {}

    p = os.path.join(OUT, "mixed.safetensors")
    torch_save_file(mixed(), p, metadata={"format": "pt"})
    files["mixed.safetensors"] = describe(p)

    # The reference writes metadata in hash-map order, which changes from run to run; write until
    # it comes out sorted by key (1 chance in 6 each time), the order medtrain's writer uses, so
    # that this file is reproducible and the C writer can reproduce it too.
    p = os.path.join(OUT, "meta.safetensors")
    meta = {"format": "np", "epoch": "3", "note": "caf\u00e9 \"q\"\n"}
    for _ in range(200):
        np_save_file({"x": np.array([1, 2, 3], dtype=np.int32)}, p, metadata=meta)
        if list(describe(p)["metadata"]) == sorted(meta):
            break
    else:
        raise SystemExit("the reference never wrote the metadata keys in sorted order")
    files["meta.safetensors"] = describe(p)

    p = os.path.join(OUT, "writer_torch.safetensors")
    tensors = {name: as_torch(dt, shape, vals) for name, dt, shape, vals in writer_tensors()}
    torch_save_file(tensors, p, metadata={"note": "tab\there \"quoted\" caf\u00e9 \u0001 \\"})
    files["writer_torch.safetensors"] = describe(p)

    p = os.path.join(OUT, "writer_numpy.safetensors")
    arrays = {name: np.array(vals, dtype=dt).reshape(shape)
              for name, dt, shape, vals in writer_tensors() if dt != "bf16"}
    np_save_file(arrays, p)
    files["writer_numpy.safetensors"] = describe(p)

    p = os.path.join(OUT, "empty.safetensors")
    np_save_file({}, p)
    files["empty.safetensors"] = describe(p)

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"safetensors_version": safetensors.__version__, "files": files}, f, indent=1)
        f.write("\n")

    # Fuzz seeds: small valid files of several shapes.
    np_save_file({"a": np.arange(4, dtype=np.float32), "b": np.array([1, 0], dtype=np.uint8)},
                 os.path.join(CORPUS, "two.safetensors"), metadata={"format": "np"})
    torch_save_file({"s": torch.tensor(1.0, dtype=torch.bfloat16),
                     "z": torch.zeros((0, 2), dtype=torch.float16),
                     "m": torch.tensor([True, False])},
                    os.path.join(CORPUS, "scalar_zero.safetensors"))
    np_save_file({}, os.path.join(CORPUS, "empty.safetensors"), metadata={"k": "v"})
    torch_save_file({"e4": torch.tensor([1.0, 2.0], dtype=torch.float8_e4m3fn),
                     "i64": torch.tensor([[1, -2]], dtype=torch.int64)},
                    os.path.join(CORPUS, "f8.safetensors"))

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(files)} files and expected.json into {os.path.normpath(OUT)} "
          f"({total} bytes), seeds into {os.path.normpath(CORPUS)}")


if __name__ == "__main__":
    main()
