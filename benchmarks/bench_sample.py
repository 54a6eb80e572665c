"""Sampling-stage performance, measured side by side in one run.

Prints:
 (a) strategies per minute, with and without BatchNorm recalibration (the same strategies scored
     twice by ``run_sample`` on fresh copies of the run), and recalibration's share of the total;
 (b) scoring one strategy from the evaluation clip cache vs decoding the selection videos with PyAV
     for every strategy (what a sampler without the cache pays): the speedup;
 (c) evaluation time per clip of the all-S sub-network vs the full template (every path on), next to
     their MACs ratio: skipping dropped paths should pay off in proportion.
Timed variants in (b) and (c) are interleaved (A, B, A, B, ...) and the median is reported.

Needs a trained run: ``--run RUN`` (e.g. ``runs/demo/motion``), or by default a tiny template is
trained for two epochs on a freshly generated synthetic motion dataset in a temporary folder.
Run:  .venv/bin/python benchmarks/bench_sample.py [--run RUN] [--num 12] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _median_interleaved(fns: dict, repeats: int) -> dict:
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _train_tiny(work: Path, threads: int) -> Path:
    from fusion3d.config import load_config
    from fusion3d.data.synth import generate
    from fusion3d.engine.trainer import train

    root = generate(work / "data", kind="motion", classes=4, videos_per_class=12, seed=0)
    cfg = load_config(
        None,
        [
            f"data.root={root}",
            f"data.annotations={root / 'ucfTrainTestlist'}",
            f"data.cache_dir={work / 'cache'}",
            f"run.out={work / 'run'}",
            f"run.threads={threads}",
            "model.name=tiny",
            "data.flip=off",
            "train.warmup_epochs=1",
            "train.epochs=1",
            "train.progress=false",
        ],
    )
    train(cfg)
    return work / "run"


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(
        run,
        dest,
        ignore=shutil.ignore_patterns(
            "strategies*", "sample.json", "retrain*", "validate*", "*.png", "report*", "derived"
        ),
    )
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="trained run directory (default: train a tiny one)")
    ap.add_argument("--num", type=int, default=12, help="strategies drawn for (a)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from fusion3d.data.clip_cache import build_clip_cache
    from fusion3d.data.dataset import EvalViews, load_splits, make_loader
    from fusion3d.engine.evaluate import predict
    from fusion3d.models import Strategy, count_macs
    from fusion3d.run.loading import load_run
    from fusion3d.stages.sample import run_sample

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_sample_"))
    work.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else _train_tiny(work / "tiny", args.threads)
    print(f"run {run}, torch threads {torch.get_num_threads()}")

    # (a) strategies per minute, with and without BN recalibration
    secs = {}
    for label, recal in (("with BN recal", True), ("without", False)):
        copy = _copy_run(run, work / f"a_{int(recal)}")
        t0 = time.perf_counter()
        df = run_sample(copy, num=args.num, recalibrate=recal, progress=False)
        secs[label] = (time.perf_counter() - t0, len(df), float(df["seconds"].sum()))
    (tw, nw, sw), (to, no, so) = secs["with BN recal"], secs["without"]
    print(
        f"(a) {nw} strategies: {60 * nw / sw:6.1f} strategies/min with BN recalibration, "
        f"{60 * no / so:6.1f} without; recalibration's share of scoring time {100 * (1 - so / sw):4.1f}% "
        f"(stage wall time incl. loading and caches: {tw:.1f}s vs {to:.1f}s)"
    )

    # (b) clip cache vs decoding per strategy, and (c) all-S vs full template
    state, cfg, model = load_run(run)
    model.eval()
    d = cfg.data
    _, selection = load_splits(d, cfg.run.seed)
    cache = build_clip_cache(selection, d)
    bs = max(2 * cfg.train.batch_size, 16)
    cached = make_loader(cache.dataset(d.mean, d.std), batch_size=bs, num_workers=0, shuffle=False, seed=0)
    decoded = make_loader(EvalViews(selection, d), batch_size=bs, num_workers=0, shuffle=False, seed=0)
    dev = torch.device("cpu")
    t = _median_interleaved(
        {"cache": lambda: predict(model, cached, dev), "decode": lambda: predict(model, decoded, dev)},
        args.repeats,
    )
    clips = len(cache.dataset(d.mean, d.std))
    print(
        f"(b) scoring one strategy on {clips} selection clips: from the clip cache {t['cache']:.2f}s vs decoding "
        f"with PyAV {t['decode']:.2f}s: speedup {t['decode'] / t['cache']:.1f}x"
    )

    shape = (model.in_channels, d.clip_len, d.crop_size, d.crop_size)
    x = torch.randn(bs, *shape)
    all_s = Strategy.uniform("S", model.num_slots)

    def forward(strategy):
        def f():
            model.apply_strategy(strategy)
            with torch.no_grad():
                model(x)
            model.apply_strategy(None)

        return f

    t = _median_interleaved({"S": forward(all_s), "full": forward(None)}, max(args.repeats, 5))
    macs_s, macs_full = count_macs(model, shape, all_s), count_macs(model, shape)
    print(
        f"(c) per clip: all-S {1e3 * t['S'] / bs:.2f} ms vs full template {1e3 * t['full'] / bs:.2f} ms: "
        f"time ratio {t['S'] / t['full']:.2f}, MACs ratio {macs_s / macs_full:.2f} "
        f"({macs_s / 1e6:.1f} vs {macs_full / 1e6:.1f} MMACs)"
    )
    print(
        json.dumps(
            {
                "strategies_per_min_recal": 60 * nw / sw,
                "strategies_per_min_plain": 60 * no / so,
                "recal_share": 1 - so / sw,
                "time_ratio_S_full": t["S"] / t["full"],
                "macs_ratio_S_full": macs_s / macs_full,
            }
        )
    )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
