"""Time FactorConv3d with impl="conv3d" vs impl="conv2d" (forward, and backward for input + weight).

    .venv/bin/python benchmarks/bench_convs.py [--threads 2] [--repeats 5]

Prints one line per (kernel, shape, impl): median milliseconds of forward and of backward.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fusion3d.models.convs import FactorConv3d

CASES = [
    # (name, cin, cout, kernel, stride, padding, (N, T, H, W))
    ("3x1x1", 64, 32, (3, 1, 1), 1, (1, 0, 0), (8, 8, 28, 28)),
    ("3x1x1", 256, 128, (3, 1, 1), 1, (1, 0, 0), (2, 16, 28, 28)),
    ("1x3x3", 32, 16, (1, 3, 3), 1, (0, 1, 1), (8, 8, 28, 28)),
    ("1x3x3", 128, 32, (1, 3, 3), 1, (0, 1, 1), (2, 16, 28, 28)),
    ("1x1x1", 256, 128, (1, 1, 1), 1, 0, (2, 16, 28, 28)),
]


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'kernel':7s} {'cin->cout':>10s} {'N,T,H,W':>14s} {'impl':7s} {'fwd ms':>8s} {'bwd ms':>8s}")
    for name, cin, cout, k, s, p, (n, t, h, w) in CASES:
        res = {}
        for impl in ("conv3d", "conv2d"):
            conv = FactorConv3d(cin, cout, k, s, p, impl=impl)
            x = torch.randn(n, cin, t, h, w, requires_grad=True)

            def fwd(conv=conv, x=x):
                with torch.no_grad():
                    conv(x)

            y = conv(x)
            g = torch.randn_like(y)

            def bwd(conv=conv, x=x, g=g):
                y = conv(x)
                torch.autograd.grad(y, (x, conv.weight), g)

            tf = _time(fwd, args.repeats)
            tb = _time(bwd, args.repeats) - tf  # backward alone = (forward + backward) - forward
            res[impl] = (tf, tb)
            shape = f"{n},{t},{h},{w}"
            print(f"{name:7s} {f'{cin}->{cout}':>10s} {shape:>14s} {impl:7s} {tf:8.1f} {tb:8.1f}")
        (f3, b3), (f2, b2) = res["conv3d"], res["conv2d"]
        print(f"{'':7s} conv3d/conv2d ratio: forward {f3 / f2:.1f}x, backward {b3 / b2:.1f}x")


if __name__ == "__main__":
    main()
