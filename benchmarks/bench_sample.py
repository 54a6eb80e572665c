"""Sampling-stage performance, old path and new path side by side in one run.

Prints:
 (a) scoring throughput on the run's strategy plan (the sample stage's: canonical strategies, the most
     probable one and ``--num`` draws), with and without BatchNorm recalibration:
       old path: ``StrategyScorer.score``, one strategy at a time (a full recalibration pass and two
                 evaluation passes each), torch's own CPU kernels (``fast_inference(False)``): what the
                 sampler did before prefix sharing; timed on the first ``--old-num`` strategies, half
                 before and half after the new path;
       new path: ``StrategyScorer.score_many`` on the whole plan in the sample stage's groups (prefix
                 sharing, ``fusion3d.engine.prefix``), the inference kernels on;
     strategies per minute by CPU time of this process and by wall time (the machine may be shared:
     CPU time is the steadier of the two), and the speedup;
 (r) the ranking: Kendall tau-b between the two paths' top-1 after recalibration (both with the run's
     full recalibration set, default 200 clips) over the strategies both scored, and the largest
     score difference; then, unless ``--sweep ''``, the new path with fewer recalibration clips
     (``--sweep``), each ranking's tau-b against the full recalibration's;
 (b) scoring one strategy from the evaluation clip cache vs decoding the selection videos with PyAV
     for every strategy (what a sampler without the cache pays): the speedup;
 (c) forward time per clip of the all-S sub-network vs the full template (every path on), next to
     their MACs ratio, at the run's clip size and at 16x112x112 (random clips), with torch's kernels
     (old) and with the inference kernels (new): CPU times, all four forwards in turn per repeat; the
     time ratio is that of the fastest repeats (contention only adds time), the median of the
     per-repeat ratios is printed beside it.
Timed variants in (b) and (c) are interleaved (A, B, A, B, ...) and the median is reported.

``--sections c`` runs only (c) (any subset of ``arbc``; (r) runs (a) first).

Needs a trained run: ``--run RUN`` (e.g. ``runs/demo/motion``), or by default a tiny template is
trained for two epochs on a freshly generated synthetic motion dataset in a temporary folder.
Run:  .venv/bin/python benchmarks/bench_sample.py [--run RUN] [--num 100] [--old-num 12] [--threads 1]
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


class _Clock:
    """CPU time of this process and wall time, summed over timed blocks."""

    def __init__(self):
        self.cpu = self.wall = 0.0

    def __enter__(self):
        self._c, self._w = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu += time.process_time() - self._c
        self.wall += time.perf_counter() - self._w


def _throughput(run: Path, plan, old_num: int, recalibrate: bool, recal_clips: int | None) -> dict:
    """Old path on the first ``old_num`` strategies (half before, half after the new path), new path on
    the whole plan: rows and clocks of each."""
    from fusion3d.engine.scoring import StrategyScorer
    from fusion3d.models.convs import fast_inference
    from fusion3d.stages.sample import GROUP_SIZE

    scorer = StrategyScorer(run, recalibrate=recalibrate, recal_clips=recal_clips)
    old_items = plan[:old_num]
    half = len(old_items) // 2
    old_rows, new_rows = [], []
    old_clock, new_clock = _Clock(), _Clock()
    try:
        with old_clock, fast_inference(False):
            old_rows += [scorer.score(s, src) for s, src in old_items[:half]]
        with new_clock:
            for i in range(0, len(plan), GROUP_SIZE):
                new_rows += scorer.score_many(plan[i : i + GROUP_SIZE])
        with old_clock, fast_inference(False):
            old_rows += [scorer.score(s, src) for s, src in old_items[half:]]
    finally:
        scorer.restore()
    return {
        "old": old_rows,
        "new": new_rows,
        "old_clock": old_clock,
        "new_clock": new_clock,
        "recal_videos": scorer.measurement["recal_videos"],
    }


def _rate(n: int, seconds: float) -> float:
    return 60.0 * n / seconds if seconds > 0 else float("nan")


def _forward_ratio(model, shape, batch: int, repeats: int) -> dict:
    """All-S vs the full template on random clips, with torch's kernels (old) and with the inference
    kernels (new): per repeat, the four forwards back to back (the order alternating), timed by this
    process's CPU time; the ratio of the fastest repeats, the median of the per-repeat ratios, the
    median times; and the MACs ratio."""
    from fusion3d.models import Strategy, count_macs
    from fusion3d.models.convs import fast_inference

    x = torch.randn(batch, *shape)
    all_s = Strategy.uniform("S", model.num_slots)

    def forward(strategy, fast):
        model.apply_strategy(strategy)
        with torch.no_grad(), fast_inference(fast):
            model(x)
        model.apply_strategy(None)

    runs = {
        "S_old": (all_s, False),
        "full_old": (None, False),
        "S_new": (all_s, True),
        "full_new": (None, True),
    }
    for strategy, fast in runs.values():
        forward(strategy, fast)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(repeats):
        for k in list(runs) if i % 2 == 0 else list(runs)[::-1]:
            t0 = time.process_time()
            forward(*runs[k])
            times[k].append(time.process_time() - t0)
    # the fastest repeat of each: on a shared machine contention only ever adds time
    ratio = {v: min(times[f"S_{v}"]) / min(times[f"full_{v}"]) for v in ("old", "new")}
    ratio_med = {
        v: statistics.median(s / f for s, f in zip(times[f"S_{v}"], times[f"full_{v}"]))
        for v in ("old", "new")
    }
    macs_s, macs_full = count_macs(model, shape, all_s), count_macs(model, shape)
    return {
        "ms_per_clip": {k: 1e3 * statistics.median(v) / batch for k, v in times.items()},
        "time_ratio_old": ratio["old"],
        "time_ratio_new": ratio["new"],
        "median_ratio_old": ratio_med["old"],
        "median_ratio_new": ratio_med["new"],
        "macs_ratio": macs_s / macs_full,
        "macs": (macs_s, macs_full),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="trained run directory (default: train a tiny one)")
    ap.add_argument("--num", type=int, default=100, help="strategies drawn for the plan (as `sample -n`)")
    ap.add_argument(
        "--old-num", type=int, default=12, help="strategies the old path scores (0: the whole plan)"
    )
    ap.add_argument(
        "--sweep",
        default="16,32,64,128",
        help="recalibration clip counts whose ranking is compared with the full one ('' to skip)",
    )
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the timings in (b)")
    ap.add_argument("--ratio-repeats", type=int, default=30, help="repeats of the timings in (c)")
    ap.add_argument("--big-batch", type=int, default=4, help="clips per forward at 16x112x112 in (c)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument(
        "--sections",
        default="arbc",
        help="which of (a), (r), (b), (c) to run, e.g. 'c' for the all-S vs full ratio only ((r) needs (a))",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from fusion3d.analysis.stats import kendall_tau_b
    from fusion3d.data.clip_cache import build_clip_cache
    from fusion3d.data.dataset import EvalViews, load_splits, make_loader
    from fusion3d.engine.evaluate import predict
    from fusion3d.run.loading import DEFAULT_RECAL_CLIPS, load_run
    from fusion3d.stages.sample import strategy_plan

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_sample_"))
    work.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else _train_tiny(work / "tiny", args.threads)
    state, cfg, model = load_run(run)
    model.eval()
    plan = strategy_plan(model, args.num, cfg.run.seed)
    old_num = len(plan) if args.old_num <= 0 else min(args.old_num, len(plan))
    print(
        f"run {run}, torch threads {torch.get_num_threads()}, plan of {len(plan)} strategies "
        f"({args.num} draws + canonical, duplicates removed); old path on the first {old_num}"
    )
    summary: dict = {"plan": len(plan), "old_num": old_num}
    d = cfg.data
    bs = max(2 * cfg.train.batch_size, 16)  # the sample stage's evaluation batch

    if "a" in args.sections or "r" in args.sections:
        # (a) throughput, old vs new, with and without recalibration
        results = {}
        for label, recal in (("with BN recal", True), ("without", False)):
            r = _throughput(run, plan, old_num, recal, None)
            results[label] = r
            oc, nc = r["old_clock"], r["new_clock"]
            old_cpu, new_cpu = _rate(len(r["old"]), oc.cpu), _rate(len(r["new"]), nc.cpu)
            old_wall, new_wall = _rate(len(r["old"]), oc.wall), _rate(len(r["new"]), nc.wall)
            what = f"{label} ({r['recal_videos']} clips)" if recal else label
            print(
                f"(a) {what:<26s} strategies/min by CPU time: old {old_cpu:7.1f}  new {new_cpu:7.1f}  "
                f"speedup {new_cpu / old_cpu:5.2f}x | by wall time: old {old_wall:7.1f}  new {new_wall:7.1f}  "
                f"speedup {new_wall / old_wall:5.2f}x"
            )
            key = "recal" if recal else "plain"
            summary[f"strategies_per_min_{key}"] = {
                "old_cpu": old_cpu,
                "new_cpu": new_cpu,
                "old_wall": old_wall,
                "new_wall": new_wall,
                "speedup_cpu": new_cpu / old_cpu,
                "speedup_wall": new_wall / old_wall,
            }
        rec = results["with BN recal"]
        per = {
            k: (r["old_clock"].cpu / len(r["old"]), r["new_clock"].cpu / len(r["new"]))
            for k, r in results.items()
        }
        share_old = 1 - per["without"][0] / per["with BN recal"][0]
        share_new = 1 - per["without"][1] / per["with BN recal"][1]
        print(
            f"    recalibration's share of scoring CPU time: old {100 * share_old:4.1f}%, new {100 * share_new:4.1f}%"
        )
        summary["recal_share"] = {"old": share_old, "new": share_new}

    if "r" in args.sections:
        # (r) ranking: new vs old with the full recalibration, then fewer recalibration clips
        new_by_id = {row["id"]: row for row in rec["new"]}
        old_top1 = [row["top1_after"] for row in rec["old"]]
        new_top1 = [new_by_id[row["id"]]["top1_after"] for row in rec["old"]]
        diffs = [
            abs(row[c] - new_by_id[row["id"]][c])
            for row in rec["old"]
            for c in ("top1_before", "top5_before", "top1_after", "top5_after")
        ]
        tau_paths = kendall_tau_b(new_top1, old_top1) if len(old_top1) > 1 else float("nan")
        print(
            f"(r) top-1 after recalibration, new vs old path on {len(old_top1)} strategies: Kendall tau-b "
            f"{tau_paths:.3f}, largest score difference {max(diffs):.2e} points"
        )
        summary["tau_new_vs_old"] = tau_paths
        summary["max_score_diff"] = max(diffs)
        full_top1 = [row["top1_after"] for row in rec["new"]]
        sweep = {}
        for n in [int(c) for c in args.sweep.split(",") if c.strip()]:
            if n >= rec["recal_videos"]:
                continue
            r = _throughput(run, plan, 0, True, n)
            top1 = [row["top1_after"] for row in r["new"]]
            tau = kendall_tau_b(top1, full_top1)
            rate = _rate(len(r["new"]), r["new_clock"].cpu)
            sweep[n] = {"tau": tau, "strategies_per_min_cpu": rate}
            print(
                f"    {n:4d} recalibration clips: tau-b vs {rec['recal_videos']} clips {tau:.3f}, "
                f"new path {rate:6.1f} strategies/min (CPU)"
            )
        summary["recal_clip_sweep"] = sweep
        summary["recal_clips_full"] = rec["recal_videos"]
        if sweep:
            print(
                f"    (the default stays {DEFAULT_RECAL_CLIPS} clips unless a smaller count keeps tau-b >= 0.95)"
            )

    if "b" in args.sections:
        # (b) clip cache vs decoding per strategy
        _, selection = load_splits(d, cfg.run.seed)
        cache = build_clip_cache(selection, d)
        cached = make_loader(
            cache.dataset(d.mean, d.std), batch_size=bs, num_workers=0, shuffle=False, seed=0
        )
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
        summary["cache_speedup"] = t["decode"] / t["cache"]

    if "c" in args.sections:
        # (c) all-S vs full template, at the run's clip size and at 16x112x112
        sizes = {
            "run": ((model.in_channels, d.clip_len, d.crop_size, d.crop_size), bs),
            "16x112x112": ((model.in_channels, 16, 112, 112), args.big_batch),
        }
        for name, (shape, batch) in sizes.items():
            r = _forward_ratio(
                model, shape, batch, args.ratio_repeats if name == "run" else max(args.ratio_repeats // 4, 3)
            )
            ms = r["ms_per_clip"]
            rel_old, rel_new = r["time_ratio_old"] / r["macs_ratio"], r["time_ratio_new"] / r["macs_ratio"]
            print(
                f"(c) {'x'.join(map(str, shape[1:]))} ({name}), per clip: all-S {ms['S_old']:.2f} -> {ms['S_new']:.2f} ms, "
                f"full {ms['full_old']:.2f} -> {ms['full_new']:.2f} ms; time ratio old {r['time_ratio_old']:.2f}, "
                f"new {r['time_ratio_new']:.2f} vs MACs ratio {r['macs_ratio']:.2f} "
                f"({r['macs'][0] / 1e6:.1f} vs {r['macs'][1] / 1e6:.1f} MMACs): time/MACs {rel_old:.2f} -> {rel_new:.2f} "
                f"(median of per-repeat ratios: old {r['median_ratio_old']:.2f}, new {r['median_ratio_new']:.2f})"
            )
            summary[f"all_s_vs_full_{name}"] = {
                "time_ratio_old": r["time_ratio_old"],
                "time_ratio_new": r["time_ratio_new"],
                "median_ratio_old": r["median_ratio_old"],
                "median_ratio_new": r["median_ratio_new"],
                "macs_ratio": r["macs_ratio"],
                "ms_per_clip": ms,
            }
    print(json.dumps(summary))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
