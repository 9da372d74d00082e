#!/usr/bin/env python3
"""Reference optimizer steps from torch.optim for tests/train/test_optim.c.

Two parameters (20 elements with weight decay, 17 without, as medtrain's decay flags make them)
take three steps with fixed gradients under SGD (plain, momentum, Nesterov, dampening) and AdamW;
the parameters after each step go to tests/train/data/optim_reference.json.

Regenerate: /path/to/venv-with-torch/bin/python tests/oracles/optim_oracle.py
"""
import json, os
import torch

torch.manual_seed(1234)
p0 = [torch.randn(20, dtype=torch.float64), torch.randn(17, dtype=torch.float64)]
grads = [[torch.randn(20, dtype=torch.float64), torch.randn(17, dtype=torch.float64)]
         for _ in range(3)]

cases = [
    ("sgd", dict(lr=0.1, momentum=0.0, weight_decay=0.01)),
    ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("sgd", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.0)),
    ("adamw", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)),
    ("adamw", dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
]
out = {"p0": [p.tolist() for p in p0], "grads": [[g.tolist() for g in gs] for gs in grads],
       "cases": []}
for kind, kw in cases:
    ps = [p.clone().requires_grad_(True) for p in p0]
    wd = kw.pop("weight_decay")
    groups = [{"params": [ps[0]], "weight_decay": wd}, {"params": [ps[1]], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, **kw) if kind == "sgd" else torch.optim.AdamW(groups, **kw)
    steps = []
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
        steps.append([p.detach().tolist() for p in ps])
    kw["weight_decay"] = wd
    if "betas" in kw:
        kw["betas"] = list(kw["betas"])
    out["cases"].append({"kind": kind, "hyper": kw, "steps": steps})

here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "train", "data", "optim_reference.json")
with open(path, "w") as f:
    json.dump(out, f)
print("wrote", os.path.normpath(path))
