"""Reference outputs for mt_image_resize, computed by Pillow (Image.resize with the BILINEAR
filter on a mode 'F' image: separable triangle filter whose support grows with the reduction).

Writes tests/data/fixtures/resize_src.bin (a deterministic 37x53 float image with detail at
several frequencies) and resize_<h>x<w>.bin for each target size: a down-, an up- and a mixed
resize. Each file is int32 h, int32 w, then h*w float32, all little-endian. test_image compares
with them within 1e-4, so the C test needs no Python.

Regenerate (numpy and Pillow from pip):
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy pillow
    /tmp/venv/bin/python tests/oracles/image_resize_oracle.py
"""
import os
import struct

import numpy as np
from PIL import Image

H, W = 37, 53
TARGETS = [(16, 20), (80, 90), (60, 20)]  # (h, w): down, up, up in h and down in w
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "fixtures")


def source():
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    v = 0.5 + 0.3 * np.sin(0.7 * x) * np.cos(0.45 * y) + 0.2 * ((x * 7 + y * 13) % 11) / 10
    v[5:12, 30:41] = 1.0  # a sharp-edged block
    return v.astype(np.float32)


def write(name, a):
    a = np.ascontiguousarray(a, dtype="<f4")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(struct.pack("<ii", a.shape[0], a.shape[1]))
        f.write(a.tobytes())


def main():
    os.makedirs(OUT, exist_ok=True)
    src = source()
    write("resize_src.bin", src)
    img = Image.fromarray(src)
    assert img.mode == "F"
    for h, w in TARGETS:
        out = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
        assert out.shape == (h, w)
        write(f"resize_{h}x{w}.bin", out)
        print(f"resize_{h}x{w}.bin: mean {out.mean():.6f}")


if __name__ == "__main__":
    main()
