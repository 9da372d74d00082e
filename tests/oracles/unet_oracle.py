"""medtrain's U-Net (docs/SEGMENTATION.md) in PyTorch, and the parity fixtures of its C version.

The module. `UNet` is the reference network: its state_dict names, shapes and order are exactly
those of medtrain's parameter table, so a model.safetensors that medtrain wrote loads into it as
it is (and a state_dict saved from it with safetensors loads into medtrain):

    from safetensors.torch import load_file
    from unet_oracle import UNet           # needs only torch
    net = UNet(1, 3, depth=4, channels=32, norm="batch", up="transpose")
    net.load_state_dict(load_file("run/model.safetensors"))
    logits = net.eval()(x)                 # x (N, 1, H, W), H and W multiples of 2**depth

Use the options the run used (model.depth, model.channels, model.norm, model.upsample).
medtrain's logits are (N, H, W, C) (channels last); this module's are PyTorch's (N, C, H, W).

The fixtures. Run as a script, it writes under tests/models/data/:
  names_unet.txt, names_unet_instance_bilinear.txt
                     the state_dict keys and shapes (as names_<arch>.txt of torchvision_oracle.py)
                     of UNet(1, 3) with the defaults, and of UNet(1, 3, depth=3, channels=16,
                     norm="instance", up="bilinear")
  unet_*.txt         parity cases in torchvision_oracle.py's format, with the U-Net's options
                     appended to the case line:
                       case unet IN OUT BATCH H W depth=D channels=F norm=batch|instance
                            up=transpose|bilinear
                     eval_logits and logits are (N, C, H, W) in PyTorch's order (the C test
                     reorders medtrain's NHWC logits). The loss is the mean softmax cross-entropy
                     over all pixels, F.cross_entropy(logits, targets), against targets (N, H, W)
                     class = floor(u * C) with u = hash(CLASS_STREAM, pixel) over the pixels in
                     (N, H, W) order (tests/models/model_fill.c: fill_classes()).
Weights, inputs and the way errors are measured are torchvision_oracle.py's (fill(), inputs(),
contribution_scales()); the reference runs in float64 and the script prints the worst error
torch's own float32 run has in the C test's measure.

Regenerate (torch, torchvision and numpy; a CPU build is enough; a few seconds):
    /work/torchenv/bin/python tests/oracles/unet_oracle.py
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- the network ---------------------------------------------------------------------------

def make_norm(kind, channels):
    """BatchNorm2d, or InstanceNorm2d with a learned scale and shift and no running statistics
    (instance statistics in training and in eval alike)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    raise ValueError(f"norm must be 'batch' or 'instance', not {kind!r}")


class DoubleConv(nn.Module):
    """conv1 -> norm1 -> ReLU -> conv2 -> norm2 -> ReLU: 3x3 convolutions, padding 1, no bias
    (the norm's shift replaces it). (N, cin, H, W) -> (N, cout, H, W)."""

    def __init__(self, cin, cout, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm1 = make_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, cout)

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(x)))


class UpBlock(nn.Module):
    """One decoder level: upsample the coarser map x (N, 2c, H/2, W/2) to (N, c, H, W), join it
    to the encoder's skip (N, c, H, W) as cat([skip, up], channels), and DoubleConv 2c -> c.

    up='transpose': `up` is ConvTranspose2d(2c, c, kernel 2, stride 2) (weight (2c, c, 2, 2)).
    up='bilinear':  x is first upsampled x2 bilinearly (align_corners=False), then `up` is a 1x1
                    Conv2d(2c, c) (weight (c, 2c, 1, 1)). Both have a bias."""

    def __init__(self, c, norm, up):
        super().__init__()
        if up == "transpose":
            self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        elif up == "bilinear":
            self.up = nn.Conv2d(2 * c, c, 1)
        else:
            raise ValueError(f"up must be 'transpose' or 'bilinear', not {up!r}")
        self.bilinear = up == "bilinear"
        self.conv = DoubleConv(2 * c, c, norm)

    def forward(self, x, skip):
        if self.bilinear:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """The 2-D U-Net of docs/SEGMENTATION.md: (N, in_channels, H, W) -> logits
    (N, out_channels, H, W), H and W multiples of 2**depth.

    Level i = 0..depth works at resolution H/2**i with F*2**i channels (F = channels):
      enc[i]   DoubleConv (in_channels or F*2**(i-1)) -> F*2**i, after a 2x2 max pool for i >= 1
      dec[k]   UpBlock of level l = depth-1-k (deepest first): up from level l+1, cat with
               enc[l]'s output, DoubleConv 2*F*2**l -> F*2**l
      head     1x1 Conv2d F -> out_channels, with bias
    The attribute names give the state_dict names medtrain uses (enc.0.conv1.weight, ...,
    dec.0.up.weight, ..., head.bias), in medtrain's order."""

    def __init__(self, in_channels, out_channels, depth=4, channels=32, norm="batch",
                 up="transpose"):
        super().__init__()
        self.depth = depth
        widths = [channels * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList(
            DoubleConv(in_channels if i == 0 else widths[i - 1], widths[i], norm)
            for i in range(depth + 1))
        self.dec = nn.ModuleList(UpBlock(widths[depth - 1 - k], norm, up) for k in range(depth))
        self.head = nn.Conv2d(channels, out_channels, 1)
        self.reset_parameters()

    def reset_parameters(self):
        """medtrain's initialisation from scratch: 3x3 convs kaiming_normal_(mode='fan_out',
        nonlinearity='relu'); norms weight 1, bias 0; `up` and `head` PyTorch's default."""
        for m in self.modules():
            if isinstance(m, DoubleConv):
                for conv in (m.conv1, m.conv2):
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                for norm in (m.norm1, m.norm2):
                    nn.init.ones_(norm.weight)
                    nn.init.zeros_(norm.bias)

    def forward(self, x):
        step = 2**self.depth
        h, w = x.shape[-2:]
        if h % step or w % step:
            def near(s):
                lo = s // step * step
                return f"{lo} or {lo + step}" if lo else f"{step}"
            raise ValueError(f"UNet(depth={self.depth}) needs H and W multiples of {step}, got "
                             f"{h}x{w} (nearest valid: H {near(h)}, W {near(w)})")
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()  # the deepest level has no skip: it is dec[0]'s input
        for block in self.dec:
            x = block(x, skips.pop())
        return self.head(x)


# ---- the fixtures ----------------------------------------------------------------------------

CLASS_STREAM = 1000005  # targets; tests/models/model_fill.h FILL_CLASS_STREAM


def class_targets(batch, h, w, classes):
    """(N, H, W) class indices floor(u * C), u = hash(CLASS_STREAM, pixel)."""
    from torchvision_oracle import u01
    u = u01(CLASS_STREAM, batch * h * w).reshape(batch, h, w)
    return torch.from_numpy((u * classes).astype("int64"))


def build_filled(opts):
    """UNet with opts (in, out, depth, channels, norm, up), every entry from the formula."""
    from torchvision_oracle import fill_model
    torch.manual_seed(0)
    m = UNet(opts["in"], opts["out"], opts["depth"], opts["channels"], opts["norm"], opts["up"])
    fill_model(m)
    return m


def logits_error(z32, ref):
    """The worst |z32 - z| / max(|z|, rms z), as the C test measures logits."""
    rms = ref.pow(2).mean().sqrt()
    return ((z32.double() - ref).abs() / torch.clamp(ref.abs(), min=rms)).max().item()


def float32_errors(opts, batch, h, w, ref_eval, ref_train, ref_grads, scales):
    """torch's own float32 run measured as the C test measures medtrain's: eval logits, train
    logits and the worst gradient element (worst_grad_error, with its parameter)."""
    from torchvision_oracle import inputs, train_step, worst_grad_error
    m = build_filled(opts)
    x = torch.from_numpy(inputs(batch, opts["in"], h, w, 1)[0])
    t = class_targets(batch, h, w, opts["out"])
    with torch.no_grad():
        z_eval = m.eval()(x)
    z32, _, g32, _ = train_step(m, x, lambda z: F.cross_entropy(z, t))
    return (logits_error(z_eval, ref_eval), logits_error(z32, ref_train),
            worst_grad_error(g32, ref_grads, scales))


def write_case(case, opts, batch, h, w):
    from torchvision_oracle import OUT, inputs, write_records
    m = build_filled(opts).double()
    x = torch.from_numpy(inputs(batch, opts["in"], h, w, 1)[0]).double()
    t = class_targets(batch, h, w, opts["out"])
    with open(os.path.join(OUT, f"{case}.txt"), "w") as f:
        f.write(f"case unet {opts['in']} {opts['out']} {batch} {h} {w} depth={opts['depth']} "
                f"channels={opts['channels']} norm={opts['norm']} up={opts['up']}\n")
        z_eval, z, grads, scales = write_records(f, m, x, lambda z: F.cross_entropy(z, t))
    ee, ez, (eg, k) = float32_errors(opts, batch, h, w, z_eval, z, grads, scales)
    print(f"{case}: torch float32 errors: eval logits {ee:.2e}, train logits {ez:.2e}, "
          f"worst gradient element {eg:.2e} ({k})")


def main():
    from torchvision_oracle import OUT, write_names_of
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    write_names_of("unet", UNet(1, 3))
    write_names_of("unet_instance_bilinear", UNet(1, 3, 3, 16, "instance", "bilinear"))
    base = {"in": 1}
    write_case("unet_bn_transpose", dict(base, out=3, depth=3, channels=8, norm="batch",
                                         up="transpose"), 2, 32, 32)
    write_case("unet_in_bilinear", dict(base, out=2, depth=2, channels=8, norm="instance",
                                        up="bilinear"), 2, 16, 24)
    write_case("unet_bn_bilinear_d4", dict(base, out=3, depth=4, channels=4, norm="batch",
                                           up="bilinear"), 1, 32, 32)


if __name__ == "__main__":
    main()
