"""PyTorch CPU training throughput of the U-Net medtrain trains (the reference module of
tests/oracles/unet_oracle.py, the same network layer for layer), for bench/bench_unet.sh.

Same measurement as ../shared/peers/torch_train_bench.py (AdamW lr 1e-4, a fixed random batch,
warmup steps, then timed steps; peak RSS), with softmax cross-entropy over the classes.

  torch_unet_bench.py --batch 8 --size 256 --depth 4 --channels 16 --classes 3 --threads 2
"""
import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                "oracles"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    import torch
    from unet_oracle import UNet
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = UNet(1, a.classes, depth=a.depth, channels=a.channels, norm="batch", up="transpose")
    x = torch.randn(a.batch, 1, a.size, a.size)
    y = torch.randint(0, a.classes, (a.batch, a.size, a.size))
    loss = torch.nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

    def one():
        opt.zero_grad(set_to_none=True)
        l = loss(m(x), y)
        l.backward()
        opt.step()

    for _ in range(a.warmup):
        one()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        one()
    dt = time.perf_counter() - t0
    print(json.dumps({"peer": "pytorch-same-unet", "torch": torch.__version__, "model": "unet",
                      "threads": torch.get_num_threads(), "batch": a.batch, "size": a.size,
                      "items_per_s": a.batch * a.steps / dt, "step_s": dt / a.steps,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


if __name__ == "__main__":
    main()
