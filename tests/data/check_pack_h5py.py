#!/usr/bin/env python3
"""Opens a medtrain pack with h5py and checks it against the documented schema (docs/DATA.md):
root attributes, datasets, dtypes, shapes, label names, mask classes and split lists.

  check_pack_h5py.py PACK [--labels A,B,...] [--masks CLASSES [--mask-layout index|multilabel]]
                     [--n N] [--size S] [--dtype u8|u16]
Index masks are [N,H,W] class indices; multi-label masks [N,C,H,W] of 0/1, one plane per class.
Prints one line per check and exits non-zero on the first failure."""
import argparse
import sys

import h5py
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pack")
    ap.add_argument("--labels", default=None)
    ap.add_argument("--masks", default=None)
    ap.add_argument("--mask-layout", default="index", choices=("index", "multilabel"))
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--dtype", default=None)
    a = ap.parse_args()
    checks = 0

    def check(cond, what):
        nonlocal checks
        checks += 1
        if not cond:
            print(f"FAIL {what}")
            sys.exit(1)
        print(f"ok   {what}")

    with h5py.File(a.pack, "r") as f:
        def attr_str(obj, name):
            v = obj.attrs[name]
            return v.decode() if isinstance(v, bytes) else str(v)

        check(attr_str(f, "format") == "medtrain-dataset", "format attribute")
        check(int(f.attrs["version"]) == 1, "version attribute")
        for name in ("creator", "created", "input_digest"):
            check(name in f.attrs, f"root attribute {name}")
        check(len(attr_str(f, "input_digest")) == 64, "input digest is SHA-256 hex")
        images = f["images"]
        n, h, w = images.shape
        check(images.ndim == 3 and h == w, f"/images is [N,H,W] square: {images.shape}")
        check(images.dtype in (np.uint8, np.uint16), f"/images dtype {images.dtype}")
        check(images.chunks == (1, h, w), f"/images chunked one image per chunk: {images.chunks}")
        if a.n is not None:
            check(n == a.n, f"{n} images, expected {a.n}")
        if a.size is not None:
            check(h == a.size, f"size {h}, expected {a.size}")
        if a.dtype is not None:
            check(images.dtype == np.dtype(a.dtype.replace("u", "uint")), f"dtype {images.dtype}")
        labels = f["labels"]
        check(labels.dtype == np.float32 and labels.shape[0] == n, f"/labels f32 [N,L]: {labels.shape}")
        raw = labels.attrs["names"]  # an empty dataspace (h5py.Empty) when there are no labels
        names = [] if isinstance(raw, h5py.Empty) else [
            x.decode() if isinstance(x, bytes) else str(x) for x in raw]
        check(len(names) == labels.shape[1], f"label names {names}")
        if a.labels is not None:
            check(names == a.labels.split(","), f"label names are {a.labels}")
        lab = labels[...]
        check(np.all(np.isnan(lab) | (lab == 0) | (lab == 1)), "labels are 0, 1 or NaN")
        if a.masks is not None:
            masks = f["masks"]
            classes = [x.decode() if isinstance(x, bytes) else str(x) for x in masks.attrs["classes"]]
            check(classes == a.masks.split(","), f"mask classes {classes}")
            if a.mask_layout == "index":
                check(masks.shape == images.shape and masks.dtype == np.uint8,
                      f"/masks u8 [N,H,W] {masks.shape}")
                check(int(masks[...].max()) < len(classes), "mask values are class indices")
            else:
                want = (n, len(classes), h, w)
                check(masks.shape == want and masks.dtype == np.uint8,
                      f"/masks u8 [N,C,H,W] {masks.shape}, expected {want}")
                check(masks.chunks == (1,) + want[1:], f"/masks one image per chunk: {masks.chunks}")
                m = masks[...]
                check(np.all((m == 0) | (m == 1)), "multi-label mask values are 0 or 1")
                check(all(m[:, c].any() for c in range(len(classes))), "every class is present")
        else:
            check("masks" not in f, "no /masks")
        meta = f["meta"]
        for name in ("case_id", "modality", "view", "source_digest", "pixel_spacing", "split"):
            check(name in meta and meta[name].shape[0] == n, f"/meta/{name} has N rows")
        check(meta["pixel_spacing"].shape == (n, 2), "/meta/pixel_spacing is [N,2]")
        case = [x.decode() for x in meta["case_id"][...]]
        check(all(len(c) == 32 and all(ch in "0123456789abcdef" for ch in c) for c in case),
              "case ids are 32 hex characters (keyed hashes)")
        split = meta["split"][...]
        seen = set()
        patient_split = {}
        for i, c in enumerate(case):
            if patient_split.setdefault(c, split[i]) != split[i]:
                check(False, f"case {c} appears in two splits")
        for s, name in enumerate(("train", "val", "test")):
            idx = f["splits"][name][...]
            check(idx.dtype == np.int64, f"/splits/{name} is i64")
            check(np.array_equal(idx, np.nonzero(split == s)[0]), f"/splits/{name} matches /meta/split")
            seen.update(idx.tolist())
        check(seen == set(range(n)), "every image is in exactly one split")
        check(len(patient_split) > 0, "no patient crosses splits")
    print(f"{checks} passed, 0 failed")


if __name__ == "__main__":
    main()
