"""Reference results for medtrain's ResNet and DenseNet (src/models) computed by torchvision.

Writes, under tests/models/data/:
  names_<arch>.txt   every state_dict key of torchvision's model with in_channels 1 and 14 outputs,
                     in state_dict order, with its shape ("name d0,d1,..." ; "-" for a 0-dim tensor)
  <case>.txt         one parity case: the logits of an eval-mode forward, then the logits, the
                     BCE-with-logits loss and the updated BN running statistics of a train-mode
                     forward, and a summary of every parameter gradient of its backward.

No weights are stored: every parameter, buffer, input and target comes from a formula that
tests/models/model_fill.c computes identically (fill() and inputs() below, fill_model() and
fill_input() there): element i (in torchvision's flat order) of state_dict entry p is a function
of u = hash(p, i) in [0,1).
The reference runs in float64 on the float32-rounded values, so the fixture holds the exact
result and the C test measures only its own float32 error. That error is measured against the
size of what was added up, not only of the result: a gradient element is compared relative to
max(|g|, rms of its tensor's contribution scales) (contribution_scales), a gradient's sum and
norms relative to the sum and norm of those scales. The script prints the worst error torch's
own float32 run has in that measure (about 2e-5 to 6e-5 for these cases); the C test allows
1e-4.

A case file is text, one record a line:
  case ARCH IN_CHANNELS OUTPUTS BATCH HEIGHT WIDTH
  eval_logits N v...                 (eval mode, before any training forward)
  logits N v...                      (train mode)
  loss v
  stat NAME NUMEL SUM SUMABS L2 K i v ...  (BN running stats after the train forward)
  grad NAME NUMEL SUM SUMABS L2 SSUM SL2 K i v ...  (d loss / d parameter; i indexes
                                     torchvision's layout; SSUM and SL2 are the sum and L2 norm
                                     of its elements' contribution scales: contribution_scales())

tests/oracles/unet_oracle.py makes the U-Net's fixtures with the same helpers (fill_model(),
inputs(), write_records(), contribution_scales()).

Regenerate (torch, torchvision and numpy; a CPU build is enough; about ten seconds):
    /work/torchenv/bin/python tests/oracles/torchvision_oracle.py
or  python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision numpy &&
    /tmp/tv/bin/python tests/oracles/torchvision_oracle.py
"""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "data")
M64 = (1 << 64) - 1
# BN biases sit around BN_BIAS so that few pre-ReLU values lie near 0. A value within float32
# noise (~1e-6) of 0 gets a different ReLU mask in float32 than in float64, which changes the
# gradients of the channel it feeds by O(1): with biases near 0, torch's own float32 run of
# DenseNet-121 at 64x64 differs from float64 by up to 68% on such elements. Around 3, the ReLUs
# still cut ~0.1% of values (the masking paths are exercised) but a flip becomes unlikely (none
# in torch's float32 runs of these cases, against 3 to 6 with biases near 0). FILL_BN_BIAS in
# tests/models/model_fill.h must match.
BN_BIAS = 3.0
# Prefixes of the 1-D biases that are not a norm's: the classifier heads' and the U-Net's head
# (tests/oracles/unet_oracle.py; its dec.{k}.up.bias too, see is_norm_bias). They sit around 0.
CONV_BIASES = ("fc.", "classifier.", "head.")
SAMPLES = 16  # sampled gradient elements per parameter
STAT_SAMPLES = 8
# Streams of the non-parameter formulas (parameters use their state_dict index).
X_STREAM, TARGET_STREAM, POS_WEIGHT_STREAM, SAMPLE_STREAM = 1000001, 1000002, 1000003, 1000004


def mix64(x):
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic, as C's uint64_t)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash64(p, n):
    """hash(p, i) for i in [0, n): mix64(p * golden + i + c)."""
    with np.errstate(over="ignore"):
        base = np.uint64((p * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & M64)
        return mix64(base + np.arange(n, dtype=np.uint64))


def u01(p, n):
    """n values in [0, 1) with 24 random bits, exact in float32 and float64."""
    return (hash64(p, n) >> np.uint64(40)).astype(np.float64) * 2.0**-24


def is_norm_bias(name):
    """A norm's shift (BatchNorm2d, InstanceNorm2d): every 1-D bias but a head's or an up's."""
    return not name.startswith(CONV_BIASES) and not name.endswith(".up.bias")


def fill(name, shape, p):
    """Value of state_dict entry p (name, shape) as float32, in torchvision's layout. Norms
    (batch and instance) share the BN formulas; a 4-D weight is a convolution's, transposed
    ones included ((Cin, Cout, R, S) as PyTorch lays them out: the same formula with
    shape[1] * R * S, which is PyTorch's fan_in for both)."""
    n = int(np.prod(shape)) if shape else 1
    u = u01(p, n)
    leaf = name.rsplit(".", 1)[1]
    if leaf == "num_batches_tracked":
        return np.full(shape, 3.0)
    if leaf == "running_mean":
        v = 0.1 * (2 * u - 1)
    elif leaf == "running_var":
        v = 0.6 + 0.8 * u
    elif leaf == "bias" and len(shape) == 1 and is_norm_bias(name):
        v = BN_BIAS + 0.2 * (2 * u - 1)  # BN: mostly positive, see BN_BIAS
    elif leaf == "bias":
        v = 0.2 * (2 * u - 1)
    elif len(shape) == 4:  # conv: uniform with kaiming's variance for fan_in
        v = (2 * u - 1) * np.sqrt(6.0 / (shape[1] * shape[2] * shape[3]))
    elif len(shape) == 2:  # linear
        v = (2 * u - 1) / np.sqrt(shape[1])
    else:  # norm weight
        v = 0.75 + 0.5 * u
    return v.astype(np.float32).reshape(shape)


def build(arch, in_channels, outputs):
    if arch.startswith("resnet"):
        m = getattr(torchvision.models, arch)(weights=None, num_classes=outputs)
        m.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    else:
        m = getattr(torchvision.models, arch)(weights=None, num_classes=outputs)
        m.features.conv0 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return m


def write_names_of(name, m):
    """names_<name>.txt: every state_dict key of m with its shape."""
    with open(os.path.join(OUT, f"names_{name}.txt"), "w") as f:
        for k, v in m.state_dict().items():
            f.write(f"{k} {','.join(str(d) for d in v.shape) if v.dim() else '-'}\n")


def write_names(arch):
    write_names_of(arch, build(arch, 1, 14))


def fill_model(m):
    sd = m.state_dict()
    new = {}
    for p, (k, v) in enumerate(sd.items()):
        a = fill(k, tuple(v.shape), p)
        new[k] = torch.from_numpy(a.astype(np.float64)).to(v.dtype)
    m.load_state_dict(new)


def inputs(batch, in_channels, h, w, outputs):
    x = u01(X_STREAM, batch * in_channels * h * w).astype(np.float32) * 2 - 1
    x = x.reshape(batch, in_channels, h, w)  # NCHW; the C test lays the same values out NHWC
    u = u01(TARGET_STREAM, batch * outputs).reshape(batch, outputs)
    y = np.where(u < 0.25, np.nan, np.where(u < 0.6, 1.0, 0.0))
    pw = (0.5 + 1.5 * u01(POS_WEIGHT_STREAM, outputs)).astype(np.float32)
    return x, y, pw


def bce(z, y, pw):
    """Mean over known targets (NaN = unknown) of BCEWithLogits with pos_weight."""
    known = ~torch.isnan(y)
    yk = torch.where(known, y, torch.zeros_like(y))
    l = -(pw * yk * F.logsigmoid(z) + (1 - yk) * F.logsigmoid(-z))
    return (l * known).sum() / known.sum()


def sample_idx(p, k, n):
    return (hash64(SAMPLE_STREAM * 1000 + p, k) % np.uint64(n)).astype(np.int64)


def stat_summary(name, t, p):
    a = t.detach().reshape(-1).to(torch.float64).numpy()
    idx = sample_idx(p, STAT_SAMPLES, a.size)
    head = (f"{name} {a.size} {a.sum():.12e} {np.abs(a).sum():.12e} "
            f"{np.sqrt((a * a).sum()):.12e} {STAT_SAMPLES}")
    return head + "".join(f" {i} {a[i]:.12e}" for i in idx) + "\n"


def grad_summary(name, g, scale, p):
    """The gradient's sum, sum|g| and L2 norm, the sum and L2 norm of its contribution scale
    (contribution_scales) and SAMPLES elements."""
    a = g.detach().reshape(-1).numpy()
    s = scale.detach().reshape(-1).numpy()
    idx = sample_idx(p, SAMPLES, a.size)
    head = (f"{name} {a.size} {a.sum():.12e} {np.abs(a).sum():.12e} {np.sqrt((a * a).sum()):.12e} "
            f"{s.sum():.12e} {np.sqrt((s * s).sum()):.12e} {SAMPLES}")
    return head + "".join(f" {i} {a[i]:.12e}" for i in idx) + "\n"


def vec(tag, t):
    a = t.detach().reshape(-1).numpy()
    return f"{tag} {a.size}" + "".join(f" {v:.12e}" for v in a) + "\n"


class Capture:
    """Keeps the input and output of every layer with parameters (Conv2d, ConvTranspose2d,
    BatchNorm2d, InstanceNorm2d, Linear) of a forward. The forward continues on a clone of each
    output, so the in-place ReLUs and residual additions of torchvision's blocks leave the kept
    outputs (whose gradients backward will give) intact."""

    TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.Linear)

    def __init__(self, model):
        self.io = {}
        self.on = False
        for name, mod in model.named_modules():
            if isinstance(mod, self.TYPES):
                mod.register_forward_hook(self.hook(name))

    def hook(self, name):
        def fn(mod, inputs, output):
            if not self.on:
                return None
            self.io[name] = (mod, inputs[0].detach(), output)
            return output.clone()
        return fn


def contribution_scales(cap, douts):
    """For every parameter, elementwise: the sum of the absolute values of the terms its
    gradient adds up (conv and transposed conv: sum |dy| |x| over positions, a bias sum |dy|;
    BN: sum |dy| |xhat|, sum |dy|, xhat normalised per channel over the batch; instance norm:
    the same with xhat normalised per image and channel; linear: |dy|^T |x|). A float32 result
    can be expected to carry an error of order 1e-7 of this, never of the result itself when the
    terms cancel: several gradients here are zero up to rounding (a BN shift that a later BN
    removes), and the C test measures errors against these scales."""
    scales = {}
    for name, (mod, x, _) in cap.io.items():
        dy = douts[name].abs()
        if isinstance(mod, nn.Conv2d):
            scales[name + ".weight"] = torch.nn.grad.conv2d_weight(
                x.abs(), mod.weight.shape, dy, mod.stride, mod.padding, mod.dilation, mod.groups)
            if mod.bias is not None:
                scales[name + ".bias"] = dy.sum((0, 2, 3))
        elif isinstance(mod, nn.ConvTranspose2d):
            # the weight gradient of a transposed conv, by autograd: linear in the weight, so
            # the gradient of sum(|dy| * convT(|x|, w)) is sum |dy| |x| over positions
            w = torch.zeros_like(mod.weight, requires_grad=True)
            y = F.conv_transpose2d(x.abs(), w, None, mod.stride, mod.padding, mod.output_padding,
                                   mod.groups, mod.dilation)
            scales[name + ".weight"] = torch.autograd.grad((y * dy).sum(), w)[0]
            scales[name + ".bias"] = dy.sum((0, 2, 3))
        elif isinstance(mod, (nn.BatchNorm2d, nn.InstanceNorm2d)):
            dims = (0, 2, 3) if isinstance(mod, nn.BatchNorm2d) else (2, 3)
            mean = x.mean(dims, keepdim=True)
            var = x.var(dims, unbiased=False, keepdim=True)
            xhat = (x - mean) / torch.sqrt(var + mod.eps)
            scales[name + ".weight"] = (dy * xhat.abs()).sum((0, 2, 3))
            scales[name + ".bias"] = dy.sum((0, 2, 3))
        else:
            scales[name + ".weight"] = dy.t() @ x.abs()
            scales[name + ".bias"] = dy.sum(0)
    return scales


def train_step(m, x, loss_fn):
    """Training forward and backward of loss_fn(logits): logits, loss, parameter gradients and
    their scales."""
    cap = Capture(m)
    cap.on = True
    m.train()
    z = m(x)
    loss = loss_fn(z)
    names = list(cap.io)
    params = dict(m.named_parameters())
    outs = [cap.io[n][2] for n in names]
    grads = torch.autograd.grad(loss, list(params.values()) + outs)
    pgrads = dict(zip(params, grads[:len(params)]))
    scales = contribution_scales(cap, dict(zip(names, grads[len(params):])))
    return z, loss, pgrads, scales


def worst_grad_error(g32, ref, scales):
    """float32 gradients g32 measured as the C test measures medtrain's, over every element:
    |g32 - g| / max(|g|, rms of the tensor's scales); the worst and its parameter."""
    worst = (0.0, "")
    for k, r in ref.items():
        floor = scales[k].norm() / np.sqrt(r.numel())
        e = ((g32[k].double() - r).abs() / torch.maximum(r.abs(), floor)).max().item()
        worst = max(worst, (e, k))
    return worst


def float32_error(arch, in_channels, outputs, batch, h, w, ref, scales):
    """torch's own float32 gradients against the float64 ones (ref). For the record: the
    accuracy an exact float32 implementation reaches."""
    m = build(arch, in_channels, outputs)
    fill_model(m)
    x, y, pw = inputs(batch, in_channels, h, w, outputs)
    y, pw = torch.from_numpy(y).float(), torch.from_numpy(pw)
    _, _, g32, _ = train_step(m, torch.from_numpy(x), lambda z: bce(z, y, pw))
    return worst_grad_error(g32, ref, scales)


def write_records(f, m, x, loss_fn):
    """Every record after the case line, for the float64 model m on x with loss loss_fn(logits):
    eval logits, then a training forward's logits, loss and running statistics, then its
    gradients. Logits are written in m's layout (row-major over m's output shape). Returns the
    eval and train logits, the gradients and their contribution scales."""
    keys = list(m.state_dict().keys())
    m.eval()
    with torch.no_grad():
        z_eval = m(x)
    f.write(vec("eval_logits", z_eval))
    z, loss, grads, scales = train_step(m, x, loss_fn)
    f.write(vec("logits", z))
    f.write(f"loss {loss.item():.12e}\n")
    sd = m.state_dict()
    for p, k in enumerate(keys):
        if k.endswith("running_mean") or k.endswith("running_var"):
            f.write("stat " + stat_summary(k, sd[k], p))
    for p, k in enumerate(keys):
        if k in grads:
            f.write("grad " + grad_summary(k, grads[k], scales[k], p))
    return z_eval, z, grads, scales


def write_case(case, arch, in_channels, outputs, batch, h, w):
    torch.manual_seed(0)
    m = build(arch, in_channels, outputs)
    fill_model(m)
    m = m.double()
    x, y, pw = inputs(batch, in_channels, h, w, outputs)
    x = torch.from_numpy(x.astype(np.float64))
    y = torch.from_numpy(y)
    pw = torch.from_numpy(pw.astype(np.float64))
    with open(os.path.join(OUT, f"{case}.txt"), "w") as f:
        f.write(f"case {arch} {in_channels} {outputs} {batch} {h} {w}\n")
        _, _, grads, scales = write_records(f, m, x, lambda z: bce(z, y, pw))
    e, k = float32_error(arch, in_channels, outputs, batch, h, w, grads, scales)
    print(f"{case}: torch float32 gradients, worst element error {e:.2e} ({k})")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for arch in ("resnet18", "resnet34", "resnet50", "densenet121"):
        write_names(arch)
    write_case("resnet18_train", "resnet18", 1, 3, 2, 64, 64)
    write_case("densenet121_train", "densenet121", 1, 3, 2, 64, 64)
    write_case("resnet50_train", "resnet50", 3, 3, 2, 64, 64)


if __name__ == "__main__":
    main()
