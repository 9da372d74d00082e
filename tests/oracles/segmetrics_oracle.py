"""Reference values for the segmentation metrics (src/eval/segmetrics.c), with MONAI's semantics.

Regenerate (numpy; scipy when it imports, else numpy brute force; MONAI is NOT needed):
    /work/torchenv/bin/python tests/oracles/segmetrics_oracle.py
It writes tests/eval/data/segmetrics_cases.txt. The output is deterministic (fixed seed) for a given
numpy; the C test (tests/eval/test_segmetrics.c) reads it, so keep the two formats in step.

What is computed (float64 throughout; MONAI keeps HD in float32, hence no MONAI rounding here):
  Dice   MONAI DiceMetric: 2|P∩G| / (|P|+|G|); empty truth -> NaN (ignore_empty=True) or
         1 if the prediction is empty too else 0 (ignore_empty=False)
  IoU    MONAI MeanIoU: |P∩G| / |P∪G|, the same two empty-truth rules
  HD95   MONAI compute_hausdorff_distance(percentile=95, directed=False), reimplemented from MONAI's
         get_mask_edges / get_surface_distance: crop both masks to the bounding box of P∪G;
         edges = mask ^ binary_erosion(mask) (scipy's default cross, border_value 0); for each edge
         pixel of one mask distance_transform_edt(~edges_other, sampling=spacing) (the distance to
         the nearest edge pixel of the other); np.percentile(.., 95) (linear); max of the two
         directions. Undefined (nan) when either mask is empty: MONAI's surface distances are
         then inf (one empty) or none (both), and its percentile of them is nan.
         hd95_px uses spacing (1, 1), hd95_mm the case's spacing.
Every HD95 is also checked against a brute-force numpy computation (all pairs of edge pixels,
numpy-only erosion, no crop), and scipy's erosion against the numpy one.

Format (whitespace-separated tokens; '#' starts a comment line):
  case NAME GROUP H W N_CLASSES SPACING_ROW SPACING_COL
  pred RLE...          class map, row-major, as runs VALUE*COUNT ("*COUNT" omitted when 1)
  true RLE...          ends when H*W pixels are covered
  class C N_PRED N_TRUE N_INTER DICE_IGNORE DICE_ONE IOU_IGNORE IOU_ONE HD95_PX HD95_MM
                       one line per class 0..N_CLASSES-1 (class 0 = background, included)
  end
  mean GROUP MODE C  DICE N  IOU N  HD95_PX N  HD95_MM N
                       per class: means over the group's cases of the defined values (nanmean)
                       and how many were defined; MODE is ignore or one (empty-truth rule)
  overall GROUP MODE FIRST_CLASS  DICE N IOU N HD95_PX N HD95_MM N  then the same 8 pooled:
                       mean over classes FIRST_CLASS.. of the per-class means (classes with no
                       defined value skipped; N = classes that counted), then the mean over every
                       defined (case, class) value (MONAI reduction="mean"; N = values)
Numbers are Python repr (round-trip exact); undefined values are nan.
"""
import os
import sys

import numpy as np

try:
    from scipy.ndimage import binary_erosion as _sp_erosion
    from scipy.ndimage import distance_transform_edt as _sp_edt
    HAVE_SCIPY = True
except ImportError:  # pragma: no cover - numpy fallback below
    HAVE_SCIPY = False

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "eval", "data", "segmetrics_cases.txt"))
rng = np.random.default_rng(20240612)


# ---- MONAI's building blocks (scipy, or numpy brute force) ----------------------------------

def erosion_numpy(m):
    """binary_erosion with the 4-connected cross and border_value 0."""
    p = np.pad(m, 1, constant_values=False)
    return (p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])


def erosion(m):
    if not HAVE_SCIPY:
        return erosion_numpy(m)
    e = _sp_erosion(m)
    assert (e == erosion_numpy(m)).all()
    return e


def edt_to(sites, shape, spacing):
    """distance_transform_edt(~sites, sampling=spacing): distance of every pixel to the nearest
    True pixel of sites."""
    if HAVE_SCIPY:
        return _sp_edt(~sites, sampling=spacing)
    ys, xs = np.nonzero(sites)
    gy, gx = np.mgrid[0:shape[0], 0:shape[1]]
    out = np.full(shape, np.inf)
    for y, x in zip(ys, xs):  # pixel by pixel keeps memory small
        d = np.sqrt(((gy - y) * spacing[0]) ** 2 + ((gx - x) * spacing[1]) ** 2)
        np.minimum(out, d, out=out)
    return out


def get_mask_edges(p, g):
    """MONAI get_mask_edges(crop=True) for boolean masks."""
    union = p | g
    if not union.any():
        return np.zeros_like(p), np.zeros_like(g)
    ys, xs = np.nonzero(union)
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    p, g = p[sl], g[sl]
    return erosion(p) ^ p, erosion(g) ^ g


def get_surface_distance(ep, eg, spacing):
    """MONAI get_surface_distance (euclidean): for each edge pixel of ep, the distance to eg."""
    if not eg.any():
        return np.full(int(ep.sum()), np.inf)  # MONAI: inf * ones_like(seg_gt), then [seg_pred]
    if not ep.any():
        return np.full(int(eg.sum()), np.inf)
    return edt_to(eg, eg.shape, spacing)[ep]


def monai_hd95(p, g, spacing):
    ep, eg = get_mask_edges(p, g)
    out = []
    for a, b in ((ep, eg), (eg, ep)):
        d = get_surface_distance(a, b, spacing)
        out.append(np.nan if d.shape == (0,) else np.percentile(d, 95))
    return max(out) if not any(np.isnan(out)) else np.nan


def medtrain_hd95(p, g, spacing):
    """MONAI's value; nan when either mask is empty. With one mask empty MONAI's distances are all
    inf, and torch.quantile's interpolation of infinities (inf + w * (inf - inf)) is nan; numpy's
    percentile is nan too, except for a single edge pixel, where it returns the inf itself."""
    with np.errstate(invalid="ignore"):
        v = monai_hd95(p, g, spacing)
    if not p.any() or not g.any():
        assert np.isnan(v) or (v == np.inf and p.any() != g.any()), v
        return np.nan
    assert np.isfinite(v), v
    return float(v)


def brute_hd95(p, g, spacing):
    """All-pairs distances between numpy-eroded edges (no crop: it must not matter), in chunks."""
    ep, eg = erosion_numpy(p) ^ p, erosion_numpy(g) ^ g
    if not ep.any() or not eg.any():
        return np.nan
    s = np.asarray(spacing, dtype=float)
    a, b = np.argwhere(ep) * s, np.argwhere(eg) * s
    a_to_b, b_to_a = [], np.full(len(b), np.inf)
    for i in range(0, len(a), 256):
        d = np.sqrt(((a[i:i + 256, None, :] - b[None, :, :]) ** 2).sum(-1))
        a_to_b.append(d.min(1))
        np.minimum(b_to_a, d.min(0), out=b_to_a)
    return max(np.percentile(np.concatenate(a_to_b), 95), np.percentile(b_to_a, 95))


# ---- One case ---------------------------------------------------------------------------------

def overlap(p, g, ignore_empty):
    np_, nt, ni = int(p.sum()), int(g.sum()), int((p & g).sum())
    if nt > 0:
        return 2.0 * ni / (np_ + nt), ni / (np_ + nt - ni)
    if ignore_empty:
        return np.nan, np.nan
    v = 1.0 if np_ == 0 else 0.0
    return v, v


def class_rows(pred, true, n_classes, spacing):
    rows = []
    for c in range(n_classes):
        p, g = pred == c, true == c
        di, ii = overlap(p, g, True)
        do, io = overlap(p, g, False)
        hpx = medtrain_hd95(p, g, (1.0, 1.0))
        hmm = medtrain_hd95(p, g, spacing)
        for sp, want in (((1.0, 1.0), hpx), (spacing, hmm)):
            got = brute_hd95(p, g, sp)
            assert (np.isnan(got) and np.isnan(want)) or abs(got - want) <= 1e-12 * max(1.0, want), (
                got, want)
        rows.append(dict(c=c, n_pred=int(p.sum()), n_true=int(g.sum()), n_inter=int((p & g).sum()),
                         dice_ignore=di, dice_one=do, iou_ignore=ii, iou_one=io,
                         hd95_px=hpx, hd95_mm=hmm))
    return rows


# ---- Mask makers ------------------------------------------------------------------------------

def ellipse(h, w, cy, cx, ry, rx, angle=0.0, wobble=0.0, phase=0.0):
    """Pixels inside a rotated ellipse whose radius wobbles with the polar angle."""
    y, x = np.mgrid[0:h, 0:w].astype(float)
    dy, dx = y - cy, x - cx
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    t = np.arctan2(v, u)
    r = 1.0 + wobble * np.sin(5 * t + phase) + 0.5 * wobble * np.cos(3 * t - phase)
    return (u / rx) ** 2 + (v / ry) ** 2 <= r ** 2


def random_blob(h, w, scale=0.3):
    return ellipse(h, w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w,
                   rng.uniform(0.3, 1.0) * scale * h, rng.uniform(0.3, 1.0) * scale * w,
                   angle=rng.uniform(0, np.pi), wobble=rng.uniform(0, 0.25),
                   phase=rng.uniform(0, 6.3))


def u8(m):
    return np.asarray(m, dtype=np.uint8)


def binary_cases():
    """(name, pred, true, spacing) with 0/1 maps."""
    cases = []
    add = lambda name, p, t, sp=(1.0, 1.0): cases.append((name, u8(p), u8(t), sp))
    h, w = 40, 52
    add("blob_overlap", random_blob(h, w), random_blob(h, w))
    t = random_blob(h, w)
    add("blob_shifted", np.roll(t, (2, -3), axis=(0, 1)), t)
    add("blob_disjoint", ellipse(h, w, 10, 10, 6, 8), ellipse(h, w, 30, 40, 7, 5))
    add("noise", rng.random((23, 31)) < 0.3, rng.random((23, 31)) < 0.4)
    add("noise_dense", rng.random((19, 27)) < 0.8, rng.random((19, 27)) < 0.7)
    b = np.zeros((30, 30), bool)
    b[:, :8] = True
    c = np.zeros((30, 30), bool)
    c[0:12, :] = True
    c[20:, 25:] = True
    add("border_touching", b, c)
    add("border_corner_blobs", ellipse(30, 30, 0, 0, 9, 12), ellipse(30, 30, 29, 29, 10, 7))
    add("full_both", np.ones((12, 15)), np.ones((12, 15)))
    add("full_vs_blob", np.ones((16, 16)), ellipse(16, 16, 8, 8, 4, 5))
    add("empty_truth", random_blob(24, 24), np.zeros((24, 24)))
    add("empty_pred", np.zeros((24, 24)), random_blob(24, 24))
    add("both_empty", np.zeros((20, 22)), np.zeros((20, 22)))
    p1, t1 = np.zeros((25, 25), bool), np.zeros((25, 25), bool)
    p1[3, 4], t1[20, 17] = True, True
    add("single_pixels", p1, t1)
    add("single_pixel_same", t1, t1)
    add("single_vs_blob", p1, ellipse(25, 25, 12, 12, 5, 6))
    lines_p, lines_t = np.zeros((30, 30), bool), np.zeros((30, 30), bool)
    idx = np.arange(5, 25)
    lines_p[idx, idx] = True
    lines_t[idx, 29 - idx] = True
    lines_t[15, 3:27] = True
    add("thin_lines", lines_p, lines_t)
    ring_t = ellipse(36, 36, 18, 18, 14, 14) & ~ellipse(36, 36, 18, 18, 7, 7)
    add("ring_vs_disc", ellipse(36, 36, 17, 19, 13, 12), ring_t)
    add("non_square_aniso", random_blob(17, 64, 0.4), random_blob(17, 64, 0.4), (0.7, 1.3))
    add("tall_aniso", random_blob(70, 13, 0.4), random_blob(70, 13, 0.4), (2.5, 0.8))
    add("blob_iso_mm", random_blob(33, 33), random_blob(33, 33), (0.5, 0.5))
    add("row_1xN", rng.random((1, 40)) < 0.5, rng.random((1, 40)) < 0.5, (1.0, 0.3))
    add("col_Nx1", rng.random((37, 1)) < 0.5, rng.random((37, 1)) < 0.5, (0.3, 1.0))
    add("pixel_1x1", np.ones((1, 1)), np.ones((1, 1)))
    # A chest-film-sized case: two lungs, the prediction wobbling around them.
    H = W = 512
    lt = ellipse(H, W, 250, 150, 170, 85, 0.1, 0.05, 1.0) | ellipse(H, W, 260, 360, 180, 90, -0.1,
                                                                  0.05, 2.0)
    lp = ellipse(H, W, 254, 147, 166, 88, 0.12, 0.08, 4.0) | ellipse(H, W, 257, 365, 183, 86,
                                                                   -0.08, 0.07, 0.5)
    add("lungs_512", lp, lt, (0.7, 0.7))
    return cases


def class_map(h, w, n_classes, present):
    m = np.zeros((h, w), np.uint8)
    for c in range(1, n_classes):
        if c in present:
            m[random_blob(h, w, 0.35)] = c
    return m


def multi_cases():
    cases = []
    h, w, C = 44, 38, 4
    for i in range(5):
        present_t = {1, 2, 3} - ({i % 3 + 1} if i >= 3 else set())
        present_p = {1, 2, 3} - ({(i + 1) % 3 + 1} if i >= 2 else set())
        sp = ((1.0, 1.0), (0.8, 1.2), (1.5, 1.5), (1.0, 2.0), (0.6, 0.9))[i]
        cases.append((f"multi_{i}", class_map(h, w, C, present_p), class_map(h, w, C, present_t),
                      sp))
    t = class_map(h, w, C, {1, 2, 3})
    cases.append(("multi_perfect", t.copy(), t, (1.0, 1.0)))
    noise_p = rng.integers(0, C, (21, 26), dtype=np.uint8)
    noise_t = rng.integers(0, C, (21, 26), dtype=np.uint8)
    cases.append(("multi_noise", noise_p, noise_t, (1.1, 0.9)))
    return cases, C


# ---- Output -----------------------------------------------------------------------------------

def rle(m):
    v = m.ravel()
    out, i = [], 0
    while i < v.size:
        j = i
        while j < v.size and v[j] == v[i]:
            j += 1
        out.append(f"{v[i]}" if j - i == 1 else f"{v[i]}*{j - i}")
        i = j
    return " ".join(out)


def num(x):
    return "nan" if np.isnan(x) else repr(float(x))


def wrap(prefix, text, width=100):
    """prefix + text, wrapped at spaces (the reader does not care about lines)."""
    lines, cur = [], prefix
    for tok in text.split(" "):
        if len(cur) + 1 + len(tok) > width:
            lines.append(cur)
            cur = "   "
        cur += " " + tok
    lines.append(cur)
    return "\n".join(lines)


def nanmean_n(v):
    v = np.asarray(v, float)
    ok = ~np.isnan(v)
    return (float(np.mean(v[ok])) if ok.any() else np.nan), int(ok.sum())


def summaries(group, table, n_classes):
    """mean and overall lines for one group's table (cases x classes of row dicts)."""
    out = []
    keys = {"ignore": ("dice_ignore", "iou_ignore"), "one": ("dice_one", "iou_one")}
    for mode, (dk, ik) in keys.items():
        fields = (dk, ik, "hd95_px", "hd95_mm")
        per_class = []
        for c in range(n_classes):
            ms = [nanmean_n([rows[c][f] for rows in table]) for f in fields]
            per_class.append(ms)
            out.append(f"mean {group} {mode} {c} " + "  ".join(f"{num(m)} {n}" for m, n in ms))
        for first in (0, 1):
            if first >= n_classes:
                continue
            over = [nanmean_n([per_class[c][k][0] for c in range(first, n_classes)])
                    for k in range(4)]
            pooled = [nanmean_n([rows[c][f] for rows in table for c in range(first, n_classes)])
                      for f in fields]
            out.append(f"overall {group} {mode} {first} " +
                       "  ".join(f"{num(m)} {n}" for m, n in over + pooled))
    return out


def main():
    lines = ["# Segmentation metric references: tests/oracles/segmetrics_oracle.py (format there).",
             f"# numpy {np.__version__}, " +
             ("scipy " + __import__("scipy").__version__ if HAVE_SCIPY else "no scipy")]
    groups = [("binary", binary_cases(), 2)]
    mc, C = multi_cases()
    groups.append(("multi", mc, C))
    for group, cases, n_classes in groups:
        table = []
        for name, pred, true, sp in cases:
            assert pred.shape == true.shape and pred.max(initial=0) < n_classes
            h, w = pred.shape
            rows = class_rows(pred, true, n_classes, sp)
            table.append(rows)
            lines.append(f"case {name} {group} {h} {w} {n_classes} {sp[0]!r} {sp[1]!r}")
            lines.append(wrap("pred", rle(pred)))
            lines.append(wrap("true", rle(true)))
            for r in rows:
                lines.append("class {c} {n_pred} {n_true} {n_inter} ".format(**r) + " ".join(
                    num(r[k]) for k in ("dice_ignore", "dice_one", "iou_ignore", "iou_one",
                                        "hd95_px", "hd95_mm")))
            lines.append("end")
        lines.extend(summaries(group, table, n_classes))
    text = "\n".join(lines) + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT}: {len(text)} bytes, scipy={HAVE_SCIPY}", file=sys.stderr)


if __name__ == "__main__":
    main()
