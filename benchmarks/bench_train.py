"""Training-step performance of a template preset, measured side by side in one run.

Prints:
 (a) achieved training FLOP/s (analytic forward+backward FLOPs / step time; backward = 2x forward)
     next to this machine's fp32 matrix-multiply FLOP/s, and their ratio;
 (b) step time with v-DropPath (relaxed gates + regulariser) vs gates off: the overhead ratio;
 (c) step time with plain nn.Conv3d-equivalent kernels (conv_impl=conv3d) vs the fast path
     (conv_impl=auto): the speedup;
 (d) peak memory of a training step (CUDA: max allocated; CPU: growth of the process's peak RSS,
     each variant measured in a fresh subprocess);
 (e) step time with train.precision=fp32 vs bf16 (and fp16 on CUDA), and vs channels-last 3D, with
     the largest logit difference from fp32 (the numerics of a training run are tested on the tiny
     preset in tests/test_train_gpu.py);
 (f) an epoch from a data loader built once per run (persistent workers) vs one rebuilt every epoch
     (what the trainer used to do), on synthetic clips that cost some CPU to make;
 (g) the cost of a mid-epoch checkpoint (train.checkpoint_every_steps): one atomic save of weights,
     optimizer and RNG state, against the step time, as overhead at N = 10 and 100 steps;
 (h) activation checkpointing (train.activation_checkpointing) vs none: step time, the activations
     kept for the backward pass (counted from what autograd saves) and peak memory (as in (d)).
On CUDA when present, on the CPU otherwise.
Variants are timed interleaved (A, B, A, B, ...) and the median is reported, so machine noise
hits both sides alike. Run:  .venv/bin/python benchmarks/bench_train.py [--preset small] [--threads N]
[--sections h] (only the lettered sections named)
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


def make_step(
    preset: str,
    impl: str,
    gates: str,
    batch: int,
    shape,
    device,
    precision="fp32",
    channels_last=False,
    activation_checkpointing=False,
):
    """A training step as the trainer takes it (``fusion3d.engine.precision`` for autocast / scaling)."""
    from fusion3d.engine.precision import Precision
    from fusion3d.models import build_model
    from fusion3d.models.regularizer import template_regularizer
    from fusion3d.models.spec import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig(name=preset, conv_impl=impl), 10).to(device)
    model.set_gate_mode(gates)
    model.set_activation_checkpointing(activation_checkpointing)
    prec = Precision(precision, device, channels_last)
    prec.prepare_model(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x = prec.prepare_input(torch.randn(batch, *shape, generator=g).to(device))
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def step():
        with prec.autocast():
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        if gates == "relaxed":
            loss = loss + template_regularizer(model, 1.0, 1000)
        opt.zero_grad(set_to_none=True)
        prec.backward(loss)
        prec.unscale(opt)
        prec.step(opt)
        _sync(device)

    step.logits = lambda: _logits(model, prec, x, gates)
    step.kept = lambda: _kept_for_backward(model, prec, x)
    step.state = lambda: {"model": model.state_dict(), "optimizer": opt.state_dict()}
    return model, step


def _kept_for_backward(model, prec, x) -> int:
    """Bytes of the activations one training forward keeps for the backward pass: the distinct storages
    of the tensors autograd saves, parameters excluded (exact, on any device)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), prec.autocast():
        model(x)
    return sum(kept.values())


@torch.no_grad()
def _logits(model, prec, x, gates):
    """Eval-mode logits with every path on (no gate noise): comparable across precisions."""
    model.eval()
    model.set_gate_mode("off")
    with prec.autocast():
        out = model(x).float()
    model.set_gate_mode(gates)
    model.train()
    return out


class _SynthClips(torch.utils.data.Dataset):
    """Clips that cost some CPU to make (a few ops per frame), like a light decode + augment."""

    def __init__(self, n, shape):
        self.n, self.shape = n, shape

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        epoch, i = i if isinstance(i, tuple) else (0, i)
        g = torch.Generator().manual_seed(epoch * 100003 + i)
        x = torch.rand(self.shape, generator=g)
        for _ in range(3):
            x = torch.sigmoid(x * 2 - 1)
        return {"clip": x, "label": i % 10}


def loader_epochs(shape, batch: int, workers: int, epochs: int, repeats: int) -> dict:
    """Median seconds per epoch: a loader built once (persistent workers) vs rebuilt every epoch."""
    from fusion3d.data.samplers import EpochSampler

    def make_loader(ds, batch, workers, shuffle, seed, sampler=None, persistent_workers=False):
        # fusion3d.data.dataset.make_loader's arguments, without importing PyAV (absent on some GPU hosts)
        return torch.utils.data.DataLoader(
            ds,
            batch_size=batch,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(seed),
            persistent_workers=persistent_workers and workers > 0,
        )

    ds = _SynthClips(16 * batch, shape)
    sampler = EpochSampler(len(ds), lambda e: e)
    once = make_loader(ds, batch, workers, shuffle=False, seed=0, sampler=sampler, persistent_workers=True)
    epoch_counter = {"once": 0, "rebuilt": 0}

    def run_once():
        sampler.set_epoch(epoch_counter["once"])
        epoch_counter["once"] += 1
        for _ in once:
            pass

    def run_rebuilt():
        e = epoch_counter["rebuilt"]
        epoch_counter["rebuilt"] += 1
        loader = make_loader(ds, batch, workers, shuffle=True, seed=e)
        for _ in loader:
            pass

    out = {k: [] for k in ("once", "rebuilt")}
    run_once()  # the once-built loader starts its workers here (a cost paid once per run)
    for _ in range(repeats):
        for k, f in (("once", run_once), ("rebuilt", run_rebuilt)):
            t0 = time.perf_counter()
            for _ in range(epochs):
                f()
            out[k].append((time.perf_counter() - t0) / epochs)
    return {k: statistics.median(v) for k, v in out.items()}


def checkpoint_seconds(state_fn, repeats: int) -> float:
    """Median seconds of one atomic checkpoint save (weights, optimizer, RNG state)."""
    import tempfile
    from pathlib import Path

    from fusion3d.engine.checkpoint import rng_state, save_checkpoint

    times = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(repeats):
            t0 = time.perf_counter()
            save_checkpoint(Path(d) / "checkpoint.pt", {**state_fn(), "rng": rng_state()})
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
    shape = (3, args.frames, args.size, args.size)
    _, step = make_step(
        args.preset, args.impl, args.gates, args.batch, shape, device, activation_checkpointing=args.ckpt
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


def peak_memory(args, impl: str = "auto", ckpt: bool = False) -> dict:
    """``peak_memory_child`` of one variant, run in a fresh subprocess: {"mib", "kind"}."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--impl",
        impl,
        *(["--ckpt"] if ckpt else []),
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
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


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
    ap.add_argument("--ckpt", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sections", default="abcdefgh", help="the lettered sections to run (default: all)")
    ap.add_argument("--workers", type=int, default=2, help="(f): data-loader workers")
    ap.add_argument("--loader-epochs", type=int, default=3, help="(f): epochs per timed repeat")
    args = ap.parse_args(argv)
    if not args.sections or set(args.sections) - set("abcdefgh"):
        ap.error(f"--sections takes letters of abcdefgh, got {args.sections!r}")
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
    sections = set(args.sections)
    if sections & set("abc"):
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
    if "d" in sections:
        for impl in ("auto", "conv3d"):
            out = peak_memory(args, impl)
            print(f"(d) peak memory, conv_impl={impl:<6}: {out['mib']:8.1f} MiB ({out['kind']})")

    if sections & set("eg"):
        precisions = ["fp32"] + (
            ["bf16"] + (["fp16"] if device.type == "cuda" else []) if "e" in sections else []
        )
        steps = {
            p: make_step(args.preset, "auto", "relaxed", args.batch, shape, device, p)[1] for p in precisions
        }
        if "e" in sections:
            steps["fp32+cl3d"] = make_step(
                args.preset, "auto", "relaxed", args.batch, shape, device, "fp32", True
            )[1]
        ref = steps["fp32"].logits()
        diffs = {k: float((s.logits() - ref).abs().max()) for k, s in steps.items()}
        t = interleaved(steps, args.repeats)
        for k in steps if "e" in sections else ():
            print(
                f"(e) step {k:<9} {t[k] * 1e3:8.1f} ms  vs fp32 {t['fp32'] * 1e3:8.1f} ms  speedup "
                f"{t['fp32'] / t[k]:5.2f}x  max |logit - fp32| {diffs[k]:.2e}"
            )
    if "f" in sections:
        lo = loader_epochs(shape, args.batch, args.workers, args.loader_epochs, max(1, args.repeats // 2))
        print(
            f"(f) epoch from a loader built once {lo['once'] * 1e3:8.1f} ms  vs rebuilt every epoch "
            f"{lo['rebuilt'] * 1e3:8.1f} ms  ({args.workers} workers, 16 batches; saves "
            f"{(lo['rebuilt'] - lo['once']) * 1e3:+.1f} ms per epoch)"
        )
    if "g" in sections:
        save = checkpoint_seconds(steps["fp32"].state, max(3, args.repeats))
        print(
            f"(g) mid-epoch checkpoint {save * 1e3:7.1f} ms  vs step {t['fp32'] * 1e3:7.1f} ms: overhead "
            f"{100 * save / (10 * t['fp32']):5.1f}% every 10 steps, {100 * save / (100 * t['fp32']):5.1f}% every 100"
        )
    if "h" in sections:
        steps = {
            ckpt: make_step(
                args.preset, "auto", "relaxed", args.batch, shape, device, activation_checkpointing=ckpt
            )[1]
            for ckpt in (False, True)
        }
        t = interleaved(steps, args.repeats)
        kept = {ckpt: s.kept() / 2**20 for ckpt, s in steps.items()}
        mem = {ckpt: peak_memory(args, ckpt=ckpt) for ckpt in (False, True)}
        print(
            f"(h) step with activation checkpointing {t[True] * 1e3:8.1f} ms  vs without {t[False] * 1e3:8.1f} ms "
            f"({t[True] / t[False]:4.2f}x the time)"
        )
        print(
            f"(h) activations kept for the backward {kept[True]:8.1f} MiB  vs {kept[False]:8.1f} MiB "
            f"({kept[True] / kept[False]:4.2f}x)"
        )
        print(
            f"(h) peak memory {mem[True]['mib']:8.1f} MiB  vs {mem[False]['mib']:8.1f} MiB "
            f"({mem[True]['mib'] / max(mem[False]['mib'], 1e-9):4.2f}x; {mem[True]['kind']})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
