"""Training-step performance of a template preset, measured side by side in one run.

Prints:
 (a) achieved training FLOP/s (analytic forward+backward FLOPs / step time; backward = 2x forward)
     next to this machine's fp32 matrix-multiply FLOP/s, and their ratio;
 (b) step time with v-DropPath (relaxed gates + regulariser) vs gates off: the overhead ratio;
 (c) step time with plain nn.Conv3d-equivalent kernels (conv_impl=conv3d) vs the fast path
     (conv_impl=auto): the speedup;
 (d) peak memory of a training step (CUDA: max allocated; CPU: growth of the process's peak RSS,
     each variant measured in a fresh subprocess).
Variants are timed interleaved (A, B, A, B, ...) and the median is reported, so machine noise
hits both sides alike. Run:  .venv/bin/python benchmarks/bench_train.py [--preset small] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def matmul_flops(device: torch.device, n: int = 1024, seconds: float = 2.0) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    _sync(device)
    return 2 * n**3 * count / (time.perf_counter() - t0)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(preset: str, impl: str, gates: str, batch: int, shape, device):
    from fusion3d.models import build_model
    from fusion3d.models.regularizer import template_regularizer
    from fusion3d.models.spec import ModelConfig

    model = build_model(ModelConfig(name=preset, conv_impl=impl), 10).to(device)
    model.set_gate_mode(gates)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        loss = F.cross_entropy(model(x), y)
        if gates == "relaxed":
            loss = loss + template_regularizer(model, 1.0, 1000)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)

    return model, step


def interleaved(steps: dict, repeats: int) -> dict:
    for s in steps.values():  # warm-up
        s()
        s()
    times = {k: [] for k in steps}
    for _ in range(repeats):
        for k, s in steps.items():
            t0 = time.perf_counter()
            s()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _vm_hwm_kib() -> int:
    """Peak resident set of this address space (VmHWM); unlike ru_maxrss it is reset by exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_memory_child(args) -> None:
    """Subprocess entry: one variant, print its peak memory growth in MiB."""
    device = torch.device(args.device)
    before = _vm_hwm_kib()
    _, step = make_step(
        args.preset, args.impl, args.gates, args.batch, (3, args.frames, args.size, args.size), device
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        step()
    if device.type == "cuda":
        print(json.dumps({"mib": torch.cuda.max_memory_allocated() / 2**20, "kind": "cuda max allocated"}))
    else:
        after = _vm_hwm_kib()
        print(json.dumps({"mib": (after - before) / 1024, "kind": "CPU peak RSS growth"}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--gates", default="relaxed", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        peak_memory_child(args)
        return 0
    from fusion3d.models.macs import count_macs

    device = torch.device(args.device)
    shape = (3, args.frames, args.size, args.size)
    print(
        f"preset {args.preset}, batch {args.batch}, clip {shape}, device {device}, torch threads {torch.get_num_threads()}"
    )
    model, fast_relaxed = make_step(args.preset, "auto", "relaxed", args.batch, shape, device)
    _, fast_off = make_step(args.preset, "auto", "off", args.batch, shape, device)
    _, slow_relaxed = make_step(args.preset, "conv3d", "relaxed", args.batch, shape, device)
    t = interleaved({"vdp": fast_relaxed, "off": fast_off, "conv3d": slow_relaxed}, args.repeats)
    mm = matmul_flops(device)
    macs = count_macs(model, shape)
    train_flops = 3 * 2 * macs * args.batch  # forward 2*MACs, backward ~2x forward
    achieved = train_flops / t["vdp"]
    print(
        f"(a) training FLOP/s {achieved / 1e9:8.2f} G  vs fp32 matmul {mm / 1e9:8.2f} G  ratio {achieved / mm:5.2f}"
        f"   ({macs / 1e6:.1f} M MACs per clip, step {t['vdp'] * 1e3:.0f} ms)"
    )
    print(
        f"(b) step with v-DropPath {t['vdp'] * 1e3:7.1f} ms  vs gates off {t['off'] * 1e3:7.1f} ms  "
        f"overhead {100 * (t['vdp'] / t['off'] - 1):+5.1f}%"
    )
    print(
        f"(c) step with conv3d kernels {t['conv3d'] * 1e3:7.1f} ms  vs fast path {t['vdp'] * 1e3:7.1f} ms  "
        f"speedup {t['conv3d'] / t['vdp']:5.2f}x"
    )
    for impl in ("auto", "conv3d"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--impl",
            impl,
            "--preset",
            args.preset,
            "--batch",
            str(args.batch),
            "--frames",
            str(args.frames),
            "--size",
            str(args.size),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ]
        out = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        )
        print(f"(d) peak memory, conv_impl={impl:<6}: {out['mib']:8.1f} MiB ({out['kind']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
