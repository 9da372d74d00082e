"""Reference values for the classification metrics (src/eval/metrics.c), computed by scikit-learn.

Writes tests/eval/data/metrics_cases.json: a list of cases, each a score table (scores and targets,
(n, L) row-major; a null target is NaN = unknown) and what sklearn says about it:

  auroc, n_pos, n_neg, n_unknown   per label: roc_auc_score on the label's known pairs (null when
                                   they hold one class only)
  macro_auroc, n_auroc_defined     mean over the defined labels
  micro_auroc                      roc_auc_score of all known (row, label) pairs pooled (equals
                                   average='micro' when nothing is unknown; asserted below)
  at[]                             for each threshold t: confusion_matrix, precision_score,
                                   recall_score and f1_score (zero_division=0) of (score >= t) per
                                   label, macro F1 (mean over the L labels) and micro F1 (pooled)
  best                             per label the threshold among the distinct known scores that
                                   maximises f1_score, the largest on ties (null when the label has
                                   no known positive), and macro/micro F1 at those thresholds (a
                                   label without one uses +inf: nothing predicted positive)
  roc[]                            roc_curve(drop_intermediate=False) for some labels

JSON has no NaN or infinity: null stands for NaN, the strings "inf" and "-inf" for infinities.
Scores are float32, written as the shortest decimal that parses back (through a double, as cJSON
does) to the same float32; thresholds are float32 too, and predictions compare float32 with
float32, as numpy does for a float32 array and a Python float.

Regenerate (numpy and scikit-learn, e.g. /work/torchenv or any venv with both):
    /work/torchenv/bin/python tests/oracles/metrics_oracle.py
The output is deterministic for a given numpy and scikit-learn (the seed is fixed).
"""
import json
import os
import warnings

import numpy as np
import sklearn
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (confusion_matrix, f1_score, precision_score, recall_score,
                             roc_auc_score, roc_curve)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "eval", "data", "metrics_cases.json"))
rng = np.random.default_rng(20240611)


def f32(x):
    return np.asarray(x, dtype=np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def num(x):
    """A JSON value for a float: null for NaN, "inf"/"-inf" for infinities."""
    x = float(x)
    if np.isnan(x):
        return None
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def f32_text(x):
    """Shortest decimal for float32 x that comes back as x through a double (cJSON's path)."""
    x = np.float32(x)
    s = np.format_float_positional(x, unique=True, trim="-")
    assert np.float32(float(s)) == x or (np.isnan(x) and s == "nan"), (x, s)
    return s


class F32:
    """A float32 written with its shortest text (json.dumps would write the double's 17 digits)."""

    def __init__(self, x):
        self.x = np.float32(x)


def encode(obj):
    """json.dumps with F32 values written by f32_text (NaN scores become null)."""
    if isinstance(obj, F32):
        return "null" if np.isnan(obj.x) else f32_text(obj.x)
    if isinstance(obj, dict):
        return "{" + ", ".join(json.dumps(k) + ": " + encode(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(encode(v) for v in obj) + "]"
    return json.dumps(obj)


# ---- cases ---------------------------------------------------------------------------------------

def correlated(n, prevalence, strength=1.2):
    """Targets with the given prevalences and float32 probabilities that rank them imperfectly."""
    y = (rng.random((n, len(prevalence))) < np.asarray(prevalence)).astype(np.float32)
    s = f32(sigmoid(strength * (2 * y - 1) + rng.normal(0, 1.2, y.shape)))
    return s, y


def hide(y, fraction):
    """Marks a fraction of the targets unknown (NaN)."""
    y = y.copy()
    y[rng.random(y.shape) < fraction] = np.nan
    return y


def cases():
    out = []

    s, y = correlated(300, [0.3, 0.5, 0.1, 0.2])
    y = hide(y, 0.05)
    s[np.isnan(y) & (rng.random(y.shape) < 0.5)] = np.nan  # NaN score, unknown target: skipped
    out.append(dict(name="random", s=s, y=y, thresholds=[0.5, 0.3, 0.7, 0.25], roc=[1],
                    names=["Atelectasis", "Cardiomegaly", "Edema", "Effusion"]))

    s, y = correlated(200, [0.4, 0.25, 0.6])
    out.append(dict(name="tied_2dp", s=f32(np.round(s, 2)), y=hide(y, 0.03),
                    thresholds=[0.5, 0.3, 0.45], roc=[0]))
    s, y = correlated(200, [0.4, 0.25, 0.6])
    out.append(dict(name="tied_1dp", s=f32(np.round(s, 1)), y=y, thresholds=[0.5, 0.3, 0.7, 0.2],
                    roc=[0, 2]))

    y = (rng.random((40, 2)) < 0.4).astype(np.float32)
    out.append(dict(name="all_equal", s=np.full((40, 2), 0.5, np.float32), y=y,
                    thresholds=[0.5, 0.6], roc=[0]))

    # Label 0 positives only, 1 negatives only, 2 mixed, 3 unknown throughout.
    s, y = correlated(60, [1.0, 0.0, 0.5, 0.5])
    y[:, 3] = np.nan
    y[:5, 0] = np.nan
    out.append(dict(name="one_class", s=s, y=y, thresholds=[0.5], roc=[0, 1]))

    out.append(dict(name="tiny_1", s=f32([[0.7, 0.2]]), y=f32([[1, 0]]), thresholds=[0.5, 0.1],
                    roc=[0]))
    # Label 0 ranked right, 1 tied, 2 ranked wrong.
    out.append(dict(name="tiny_2", s=f32([[0.9, 0.4, 0.1], [0.2, 0.4, 0.8]]),
                    y=f32([[1, 1, 1], [0, 0, 0]]), thresholds=[0.5, 0.4], roc=[0, 1, 2]))

    s, y = correlated(800, [0.01, 0.03], strength=1.5)
    out.append(dict(name="imbalanced", s=s, y=hide(y, 0.02), thresholds=[0.5, 0.8, 0.2]))

    # Logits, mixed signs, with +0.0 and -0.0 (one score) and many ties at a few values.
    y = (rng.random((150, 3)) < np.asarray([0.3, 0.5, 0.4])).astype(np.float32)
    s = f32(np.round(1.5 * (2 * y - 1) + rng.normal(0, 2.0, y.shape), 1))
    s[rng.random(s.shape) < 0.08] = np.float32(0.0)
    s[rng.random(s.shape) < 0.08] = np.float32(-0.0)
    out.append(dict(name="logits", s=s, y=hide(y, 0.04), thresholds=[0.0, -1.0, 1.5], roc=[2]))
    return out


# ---- metrics -------------------------------------------------------------------------------------

def known(c, j):
    m = ~np.isnan(c["y"][:, j])
    return c["s"][m, j], c["y"][m, j].astype(int)


def label_auroc(s, y):
    if len(np.unique(y)) < 2:
        return float("nan")
    return roc_auc_score(y, s)


def at_threshold(c, t, per_label_t=None):
    """Per-label counts and ratios of (score >= t) with t float32, plus macro and micro F1."""
    L = c["s"].shape[1]
    r = dict(tp=[], fp=[], fn=[], tn=[], precision=[], recall=[], f1=[])
    ys, ps = [], []
    for j in range(L):
        tj = np.float32(per_label_t[j] if per_label_t is not None else t)
        s, y = known(c, j)
        p = (s >= tj).astype(int)
        ys.append(y), ps.append(p)
        if len(y):
            tn, fp, fn, tp = confusion_matrix(y, p, labels=[0, 1]).ravel()
            pr = precision_score(y, p, zero_division=0)
            rc = recall_score(y, p, zero_division=0)
            f1 = f1_score(y, p, zero_division=0)
        else:
            tn = fp = fn = tp = 0
            pr = rc = f1 = 0.0
        for k, v in zip(("tp", "fp", "fn", "tn"), (tp, fp, fn, tn)):
            r[k].append(int(v))
        r["precision"].append(float(pr)), r["recall"].append(float(rc)), r["f1"].append(float(f1))
    r["macro_f1"] = float(np.mean(r["f1"]))
    r["micro_f1"] = float(f1_score(np.concatenate(ys), np.concatenate(ps), zero_division=0))
    if not np.isnan(c["y"]).any():  # the pooled definitions are sklearn's own averages
        pred = (c["s"] >= (f32(per_label_t) if per_label_t is not None else np.float32(t)))
        for avg in ("macro", "micro"):
            ref = f1_score(c["y"].astype(int), pred.astype(int), average=avg, zero_division=0)
            assert abs(ref - r[avg + "_f1"]) <= 1e-15, (c["name"], avg, ref, r[avg + "_f1"])
    return r


def best_threshold(s, y):
    """The distinct score maximising f1_score of (s >= t); the largest on ties."""
    if not (y == 1).any():
        return float("nan"), 0.0
    best_t, best_f1 = None, -1.0
    for t in np.unique(s)[::-1]:  # descending: only a strictly better F1 replaces
        f1 = f1_score(y, (s >= t).astype(int), zero_division=0)
        if f1 > best_f1:
            best_t, best_f1 = t, f1
    return float(best_t), float(best_f1)


def expected(c):
    S, Y = c["s"], c["y"]
    L = S.shape[1]
    e = dict(name=c["name"], n=S.shape[0], L=L)
    if "names" in c:
        e["names"] = c["names"]
    e["scores"] = [F32(v) for v in S.ravel()]
    e["targets"] = [None if np.isnan(v) else int(v) for v in Y.ravel()]

    au = [label_auroc(*known(c, j)) for j in range(L)]
    e["auroc"] = [num(a) for a in au]
    e["n_pos"] = [int((Y[:, j] == 1).sum()) for j in range(L)]
    e["n_neg"] = [int((Y[:, j] == 0).sum()) for j in range(L)]
    e["n_unknown"] = [int(np.isnan(Y[:, j]).sum()) for j in range(L)]
    defined = [a for a in au if not np.isnan(a)]
    e["n_auroc_defined"] = len(defined)
    e["macro_auroc"] = num(np.mean(defined)) if defined else None
    m = ~np.isnan(Y.ravel())
    e["micro_auroc"] = num(label_auroc(S.ravel()[m], Y.ravel()[m].astype(int)))
    if not np.isnan(Y).any() and len(np.unique(Y)) == 2:
        ref = roc_auc_score(Y.astype(int), S, average="micro")
        assert abs(ref - e["micro_auroc"]) <= 1e-15, (c["name"], ref, e["micro_auroc"])

    e["at"] = []
    for t in c["thresholds"]:
        r = at_threshold(c, t)
        e["at"].append(dict(threshold=F32(t), **r))

    best = [best_threshold(*known(c, j)) for j in range(L)]
    use = [t if not np.isnan(t) else np.inf for t, _ in best]
    r = at_threshold(c, None, per_label_t=use)
    e["best"] = dict(threshold=[None if np.isnan(t) else F32(t) for t, _ in best],
                     f1=[f for _, f in best], macro_f1=r["macro_f1"], micro_f1=r["micro_f1"])

    e["roc"] = []
    for j in c.get("roc", []):
        s, y = known(c, j)
        fpr, tpr, th = roc_curve(y, s, pos_label=1, drop_intermediate=False)
        e["roc"].append(dict(label=j, fpr=[num(v) for v in fpr], tpr=[num(v) for v in tpr],
                             thresholds=[F32(v) if np.isfinite(v) else num(v) for v in th]))
    return e


def main():
    warnings.simplefilter("ignore", UndefinedMetricWarning)  # one-class labels are the point
    doc = dict(generator="tests/oracles/metrics_oracle.py", sklearn=sklearn.__version__,
               numpy=np.__version__, cases=[expected(c) for c in cases()])
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    # One case per line, so that a regenerated file diffs case by case.
    head = encode({k: v for k, v in doc.items() if k != "cases"})[:-1]
    text = head + ', "cases": [\n' + ",\n".join(encode(c) for c in doc["cases"]) + "\n]}\n"
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT}: {len(doc['cases'])} cases, {len(text)} bytes")


if __name__ == "__main__":
    main()
