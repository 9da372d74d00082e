#!/usr/bin/env python3
"""Reference segmentation losses, MONAI semantics, for tests/train/test_segloss.c.

MONAI is not needed: its DiceLoss and DiceCELoss are written out below in plain torch, from their
documented behaviour, and computed in float64 with autograd from float32-exact logits.

MONAI's DiceLoss(include_background, to_onehot_y=True, sigmoid | softmax, squared_pred, smooth_nr,
smooth_dr, batch=False, reduction="mean") on logits (N,K,H,W) and class indices (N,1,H,W):
    p  = softmax over K (or sigmoid per channel),  g = one_hot(target, K)
    drop channel 0 of p and g when include_background is False (softmax head)
    f[n,c] = 1 - (2 sum_hw p*g + smooth_nr) / (sum_hw p^k + sum_hw g^k + smooth_dr), k = 2 if
             squared_pred else 1
    Dice = mean of f over images and channels (a channel whose class is absent from an image still
           counts: g = 0 there, and f rewards predicting nothing)
DiceCELoss = lambda_dice * Dice + lambda_ce * CE, where CE is
    softmax head: torch CrossEntropyLoss (mean over every pixel of the batch) against the class
                  indices; it always covers all classes (include_background is Dice-only);
    sigmoid head: BCEWithLogitsLoss (mean over every element) against the one-hot foreground.
For the sigmoid head medtrain's outputs are the foreground classes 1..C-1 (output k is class k+1)
and g is the one-hot of those classes (background pixels are 0 in every channel); the background
is never an output, so include_background has nothing to drop there. With 2 classes (1 output)
this is exactly MONAI with one channel (to_onehot_y and include_background are then ignored by
MONAI and the 0/1 mask is the target). With more classes MONAI has no direct equivalent (its
DiceCELoss would one-hot to C-1 classes, and uses BCE only for one channel); the reference is the
DiceLoss above on the foreground one-hot plus BCEWithLogitsLoss, which is what medtrain documents.

Multi-label masks (opts "multilabel": true, only in those cases): the target is C 0/1 planes
(N,C,H,W), one per structure, that may overlap and have no background; the head is sigmoid with C
outputs and g is the planes themselves: DiceLoss(sigmoid=True) on g plus BCEWithLogitsLoss(z, g),
the same formulas as the sigmoid head above with g given instead of one-hot.

How this maps to mt_seg_loss_opts (src/train/segloss.h):
    n_classes   = C (background included; multi-label: structures)
    sigmoid     = head is "sigmoid" (else softmax)   multilabel = opts "multilabel" (absent: false)
    include_bg  = include_background             squared    = squared_pred
    smooth_nr, smooth_dr, lambda_dice, lambda_ce = the MONAI arguments of the same names
Where medtrain reports per image: mt_seg_loss_compute gives img_loss[i] = the loss of image i alone
(MONAI on a batch of one), padding images (weight <= 0) get 0; sum of img_loss over the real
images / their number = MONAI's batch loss over the real images (all images have one size, so the
CE mean over the batch's pixels is the mean of per-image means). dlogits is the gradient of the
SUM of per-image losses, i.e. n_real * d(MONAI batch loss)/d(logits), and 0 on padding images.

Layouts: medtrain's logits are NHWC (n,S,S,K), torch's NCHW; the fixture holds NHWC.

Fixture (tests/train/data/segloss_reference.json), per case: name, opts, n, S, weights (n),
logits (n*S*S*K, NHWC, multiples of 1/32 so float32-exact and short), masks (a string of n*S*S
digits; multi-label: n*C*S*S digits 0/1, planes (n,C,S,S)), img_loss (n), batch_loss (MONAI over
the real images), dlogits (n*S*S*K, NHWC).

Regenerate: /work/torchenv/bin/python tests/oracles/segloss_oracle.py
"""
import json, os
import torch

torch.set_default_dtype(torch.float64)
gen = torch.Generator().manual_seed(20240611)


def dice_loss(z, y, o):
    """MONAI DiceLoss(to_onehot_y=True, batch=False, reduction='mean'); z (N,K,H,W), y (N,H,W)
    (multi-label: DiceLoss(sigmoid=True) with y (N,C,H,W) the 0/1 target itself)."""
    C = o["n_classes"]
    if o.get("multilabel"):
        p = torch.sigmoid(z)
        g = y.to(z.dtype)
    elif o["sigmoid"]:
        p = torch.sigmoid(z)
        g = torch.nn.functional.one_hot(y, C).permute(0, 3, 1, 2)[:, 1:].to(z.dtype)
    else:
        p = torch.softmax(z, dim=1)
        g = torch.nn.functional.one_hot(y, C).permute(0, 3, 1, 2).to(z.dtype)
        if not o["include_bg"]:
            p, g = p[:, 1:], g[:, 1:]
    axes = (2, 3)
    inter = (p * g).sum(axes)
    k = 2 if o["squared"] else 1
    den = (p**k).sum(axes) + (g**k).sum(axes)
    f = 1.0 - (2.0 * inter + o["smooth_nr"]) / (den + o["smooth_dr"])
    return f.mean()


def ce_loss(z, y, o):
    if o.get("multilabel"):
        return torch.nn.BCEWithLogitsLoss(reduction="mean")(z, y.to(z.dtype))
    if o["sigmoid"]:
        g = torch.nn.functional.one_hot(y, o["n_classes"]).permute(0, 3, 1, 2)[:, 1:].to(z.dtype)
        return torch.nn.BCEWithLogitsLoss(reduction="mean")(z, g)
    return torch.nn.CrossEntropyLoss(reduction="mean")(z, y)


def dice_ce_loss(z, y, o):
    """MONAI DiceCELoss: lambda_dice * Dice + lambda_ce * CE (a term with weight 0 is skipped)."""
    loss = torch.zeros((), dtype=z.dtype)
    if o["lambda_dice"] > 0:
        loss = loss + o["lambda_dice"] * dice_loss(z, y, o)
    if o["lambda_ce"] > 0:
        loss = loss + o["lambda_ce"] * ce_loss(z, y, o)
    return loss


def outputs(o):
    if o.get("multilabel"):
        return o["n_classes"]
    return o["n_classes"] - 1 if o["sigmoid"] else o["n_classes"]


def make_opts(C, sigmoid=False, include_bg=False, squared=False, smooth_nr=1e-5, smooth_dr=1e-5,
              lambda_dice=1.0, lambda_ce=1.0, multilabel=False):
    o = dict(n_classes=C, sigmoid=sigmoid, include_bg=include_bg, squared=squared,
             smooth_nr=smooth_nr, smooth_dr=smooth_dr, lambda_dice=lambda_dice,
             lambda_ce=lambda_ce)
    if multilabel:  # only in multi-label cases: the others stay as they were
        o["multilabel"] = True
    return o


def grid(x):
    """Round to a multiple of 1/32: float32-exact and printed in few digits."""
    return torch.round(x * 32) / 32


def random_logits(n, S, K, scale=2.0):
    return grid(torch.randn(n, S, S, K, generator=gen) * scale)


def random_masks(n, S, C):
    return torch.randint(0, C, (n, S, S), generator=gen)


def saturated_logits(n, S, K, masks, sigmoid):
    """|z| ~ 30: right at about 2/3 of the pixels, confidently wrong at the rest."""
    z = -grid(28 + 4 * torch.rand(n, S, S, K, generator=gen))
    right = torch.rand(n, S, S, generator=gen) < 0.67
    if sigmoid:
        # channel k is class k+1: positive where the pixel is that class (if right), else negative
        for k in range(K):
            on = (masks == k + 1) == right
            z[..., k] = torch.where(on, -z[..., k], z[..., k])
        return z
    wrong = (masks + 1 + torch.randint(0, K - 1, masks.shape, generator=gen)) % K
    hot = torch.where(right, masks, wrong)
    return torch.where(torch.nn.functional.one_hot(hot, K).bool(), -z, z)


def reference(o, logits, masks, weights):
    """Per-image losses and d(sum over real images)/dlogits, both zero on padding images."""
    n = logits.shape[0]
    real = [i for i in range(n) if weights[i] > 0]
    z = logits.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    img_loss = [0.0] * n
    for i in real:
        img_loss[i] = dice_ce_loss(z[i : i + 1], masks[i : i + 1], o).item()
    zr = z[real].clone().requires_grad_(True)
    batch = dice_ce_loss(zr, masks[real], o)
    batch.backward()
    dz = torch.zeros_like(z)
    dz[real] = len(real) * zr.grad
    mean_img = sum(img_loss) / len(real)
    assert abs(mean_img - batch.item()) <= 1e-12 * max(1.0, abs(batch.item())), (mean_img, batch)
    return img_loss, batch.item(), dz.permute(0, 2, 3, 1).contiguous()  # NCHW -> NHWC


def short(x):
    return float(f"{x:.9g}")


cases = []


def random_planes(n, S, C, p=0.4):
    """Independent 0/1 planes (n,C,S,S): structures overlap wherever two planes are both 1."""
    return (torch.rand(n, C, S, S, generator=gen) < p).long()


def add(name, o, n, S, weights=None, logits=None, masks=None):
    K = outputs(o)
    ml = o.get("multilabel", False)
    if masks is None:
        masks = random_planes(n, S, K) if ml else random_masks(n, S, o["n_classes"])
    logits = random_logits(n, S, K) if logits is None else logits
    weights = [1.0] * n if weights is None else weights
    assert logits.shape == (n, S, S, K) and masks.shape == ((n, K, S, S) if ml else (n, S, S))
    assert torch.equal(logits.float().double(), logits)
    img_loss, batch, dl = reference(o, logits, masks, weights)
    cases.append({
        "name": name, "opts": o, "n": n, "S": S, "weights": weights,
        "logits": [float(v) for v in logits.flatten().tolist()],
        "masks": "".join(str(int(v)) for v in masks.flatten().tolist()),
        "img_loss": img_loss, "batch_loss": batch,
        "dlogits": [short(v) for v in dl.flatten().tolist()],
    })


add("softmax3", make_opts(3), 2, 8)
add("softmax3_include_bg", make_opts(3, include_bg=True), 3, 6)
add("softmax3_squared", make_opts(3, squared=True), 2, 7)
add("softmax4_smooth", make_opts(4, include_bg=True, smooth_nr=0.25, smooth_dr=1.5), 2, 6)
add("softmax3_smooth_nr0_squared", make_opts(3, squared=True, smooth_nr=0.0, smooth_dr=1e-3), 1, 9)
add("softmax3_lambdas", make_opts(3, lambda_dice=0.7, lambda_ce=1.3), 2, 5)
add("softmax3_dice_only", make_opts(3, include_bg=True, lambda_ce=0.0), 2, 6)
add("softmax3_ce_only", make_opts(3, lambda_dice=0.0), 2, 6)
add("softmax2_one_image", make_opts(2), 1, 12)
add("sigmoid2", make_opts(2, sigmoid=True), 3, 8)
add("sigmoid3", make_opts(3, sigmoid=True, squared=True, lambda_dice=0.6, lambda_ce=0.4), 2, 9)
add("sigmoid3_include_bg_ignored", make_opts(3, sigmoid=True, include_bg=True), 2, 5)
# Absent classes: image 0 has no class 3, image 1 no classes 1 and 2, image 2 only background.
m = random_masks(3, 6, 4)
m[0][m[0] == 3] = 0
m[1][(m[1] == 1) | (m[1] == 2)] = 3
m[2][:] = 0
add("softmax4_absent", make_opts(4), 3, 6, masks=m)
add("softmax4_absent_include_bg", make_opts(4, include_bg=True, squared=True), 3, 6, masks=m)
m = random_masks(2, 6, 3)
m[0][m[0] == 2] = 1
m[1][:] = 0
add("sigmoid3_absent", make_opts(3, sigmoid=True), 2, 6, masks=m)
# Saturated logits (|z| ~ 30), softmax and sigmoid.
m = random_masks(2, 5, 3)
add("softmax3_saturated", make_opts(3, include_bg=True), 2, 5, masks=m,
    logits=saturated_logits(2, 5, 3, m, False))
m = random_masks(2, 6, 3)
add("sigmoid3_saturated", make_opts(3, sigmoid=True), 2, 6, masks=m,
    logits=saturated_logits(2, 6, 2, m, True))
# Padding images (weight 0): no loss, no gradient; the reference covers the real images only.
add("softmax3_padding", make_opts(3, lambda_dice=0.8, lambda_ce=1.1), 4, 6,
    weights=[1.0, 0.0, 1.0, 0.0])
add("sigmoid2_padding", make_opts(2, sigmoid=True), 3, 7, weights=[0.5, 2.0, 0.0])
add("sigmoid3_padding_dice_only", make_opts(3, sigmoid=True, lambda_ce=0.0), 3, 5,
    weights=[1.0, 0.0, 1.0])
# Multi-label masks: overlapping 0/1 planes as the target, sigmoid head, one output per plane.
add("multilabel3_overlap", make_opts(3, sigmoid=True, multilabel=True), 2, 7)
add("multilabel2_squared_padding", make_opts(2, sigmoid=True, multilabel=True, squared=True,
    smooth_nr=0.5, smooth_dr=0.75, lambda_dice=0.6, lambda_ce=1.4), 3, 6, weights=[1.0, 0.0, 1.0])
# Nested and identical structures, one empty in image 1; and a single structure.
m = random_planes(2, 6, 4)
m[:, 1] &= m[:, 0]  # plane 1 inside plane 0
m[:, 2] = m[:, 0]   # plane 2 is plane 0
m[1, 3] = 0         # plane 3 absent from image 1
add("multilabel4_nested_same_absent", make_opts(4, sigmoid=True, multilabel=True), 2, 6,
    masks=m)
add("multilabel1_dice_only", make_opts(1, sigmoid=True, multilabel=True, lambda_ce=0.0), 2, 8)

here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "train", "data", "segloss_reference.json")
with open(path, "w") as f:
    json.dump({"cases": cases}, f, separators=(",", ":"))
print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes,", len(cases), "cases")
