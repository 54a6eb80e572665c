"""The ``fusion3d`` command: one verb per pipeline stage.

data -> train -> sample -> analyze -> (retrain, derive) -> report, plus ``demo`` that runs them on
the embedded synthetic default. Nothing here runs at import; ``main(argv)`` parses and dispatches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fusion3d.config import ConfigError, describe, load_config


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("config", nargs="?" if not required else None, default=None,
                   help="YAML config file (optional); later key=value arguments override it")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="dotted config overrides, e.g. data.clip_len=8 run.out=runs/x")


def _split_config(args) -> tuple[str | None, list[str]]:
    """argparse cannot tell a config path from a first override; a token with '=' is an override."""
    cfg, overrides = args.config, list(args.overrides)
    if cfg is not None and "=" in cfg:
        overrides.insert(0, cfg)
        cfg = None
    return cfg, overrides


def cmd_data_synth(args) -> int:
    from fusion3d.data.synth import generate

    t0 = time.time()
    out = generate(args.out, kind=args.kind, classes=args.classes, videos_per_class=args.videos_per_class,
                   frames=args.frames, size=args.size, seed=args.seed, workers=args.workers, progress=True)
    print(f"wrote {args.kind} dataset to {out} in {time.time() - t0:.1f}s "
          f"(UCF101 layout: annotations in {Path(out) / 'ucfTrainTestlist'})")
    return 0


def cmd_data_scan(args) -> int:
    from fusion3d.data.formats import parse
    from fusion3d.data.scan import scan_videos, summarize
    from fusion3d.utils import atomic_write_text

    path, overrides = _split_config(args)
    cfg = load_config(path, overrides)
    d = cfg.data
    parsed = parse(d.format, d.root, d.annotations, args.subset, d.split)
    paths = [r.path for r in parsed.records] + list(parsed.missing)
    df = scan_videos(paths, min_frames=d.min_frames, full=args.full, progress=True)
    print(f"{d.format} {args.subset}: {len(parsed.records) + len(parsed.missing)} annotated videos")
    print(summarize(df))
    out = Path(args.csv) if args.csv else Path(d.cache_dir) / f"scan_{args.subset}.csv"
    atomic_write_text(out, df.to_csv(index=False))
    print(f"wrote {out}")
    bad = int((df["status"] != "ok").sum())
    return 0 if bad < len(df) else 2


def cmd_train(args) -> int:
    from fusion3d.train import train

    path, overrides = _split_config(args)
    cfg = load_config(path, overrides)
    t0 = time.time()
    summary = train(cfg, resume=args.resume, init=args.init, max_epochs=args.max_epochs)
    if int(__import__("os").environ.get("RANK", 0)) == 0:
        state = "complete" if summary["complete"] else f"stopped after epoch {summary['epochs_done']} (resume with --resume auto)"
        print(f"training {state} in {time.time() - t0:.1f}s; run directory {cfg.run.out}")
    return 0


def cmd_sample(args) -> int:
    from fusion3d.sample import run_sample

    t0 = time.time()
    from fusion3d.sample import shard_spec

    i, n = shard_spec(args.shard)
    df = run_sample(args.run, num=args.num, seed=args.seed, recalibrate=not args.no_recalibrate,
                    recal_clips=args.recal_clips, batch_size=args.batch_size, device=args.device,
                    progress=sys.stderr.isatty(), shard=(i, n))
    merged = not (Path(args.run) / f"strategies.shard{i}of{n}.csv").exists()
    if n > 1 and not merged:
        print(f"shard {i}/{n}: {len(df)} strategies scored in {time.time() - t0:.1f}s; the last shard to finish "
              f"merges them into {Path(args.run) / 'strategies.csv'}")
        return 0
    col = "top1_after" if not args.no_recalibrate else "top1_before"
    if len(df):
        best = df.sort_values(col, ascending=False).iloc[0]
        print(f"scored {len(df)} strategies in {time.time() - t0:.1f}s -> {Path(args.run) / 'strategies.csv'}; "
              f"best {col} {best[col]:.1f}% ({best['strategy']})")
    return 0


def cmd_analyze(args) -> int:
    from fusion3d.analyze import run_analyze

    options = {"num_clips": args.cka_clips, "batch_size": args.cka_batch_size, "threshold": args.cka_threshold}
    summary = run_analyze(args.run, top_k=args.top_k, cka=args.cka, cka_options=options)
    col = summary["score_column"]
    print(f"{summary['strategies']} strategies; Opt {summary['opt']['strategy']} {summary['opt'][col]:.1f}% ({col})")
    for src, row in summary["canonical"].items():
        print(f"  {src:<16} {row[col]:5.1f}%")
    rf = summary.get("receptive_field")
    if rf:
        def f(v):  # None: undefined (e.g. every strategy scored the same)
            return "n/a" if v is None else f"{v:+.2f}"

        print(f"  temporal receptive field vs score: Pearson r {f(rf['pearson_r'])}, partial r given MACs "
              f"{f(rf['partial_r_macs'])} (n = {rf['n']}); expected temporal RF {rf['expected_temporal_rf']:.1f} frames")
    if summary.get("cka"):
        print(f"  CKA redundant runs (threshold {args.cka_threshold}): {summary['cka']['redundant_runs']}")
    print(f"wrote {', '.join(summary['files'])} in {args.run}")
    return 0


def cmd_derive(args) -> int:
    from fusion3d.derive import derive

    shape = tuple(int(v) for v in args.input.split("x")) if args.input else None
    d = derive(args.run, args.backbone, rule=args.rule, flops_budget=args.flops_budget, convention=args.convention,
               input_shape=shape, width_mult=args.width_mult, out=args.out)
    c = d["canonical"]
    print(f"{d['backbone']} ({d['rule']}): {d['string']}")
    print(f"  {d['macs'] / 1e9:.3f} G MACs, {d['params'] / 1e6:.2f} M params at input {d['input_shape']}; all-S "
          f"{c['S']['macs'] / 1e9:.3f} G, all-ST {c['ST']['macs'] / 1e9:.3f} G, all-S+ST {c['S+ST']['macs'] / 1e9:.3f} G")
    print(f"wrote {d['path']}; train it with: fusion3d retrain {args.run} --strategy {d['path']} "
          f"model.name={d['backbone']}" + (f" model.width_mult={args.width_mult}" if args.width_mult != 1.0 else ""))
    return 0


def cmd_report(args) -> int:
    from fusion3d.report import build

    print(f"wrote {build(args.run)}")
    return 0


def cmd_retrain(args) -> int:
    from fusion3d.retrain import run_retrain

    t0 = time.time()
    row = run_retrain(args.run, args.strategy, args.overrides)
    print(f"{row['label']} ({row['strategy']}): top-1 {row['top1']:.1f}% on {row['measured_on']} "
          f"in {time.time() - t0:.1f}s -> {Path(args.run) / 'retrain.csv'}")
    return 0


def cmd_validate(args) -> int:
    from fusion3d.validate import run_validate

    t0 = time.time()
    r = run_validate(args.run, num=args.num, workers=args.workers, overrides=args.overrides,
                     permutations=args.permutations)

    def f(key):
        v = r.get(key)
        return "n/a" if v is None else f"{v:+.3f} (p {r['p_values'].get(key, float('nan')):.3f})"

    print(f"{r['n']} strategies trained alone in {time.time() - t0:.1f}s; {r['measured_on']}")
    print(f"  Kendall tau  template after BN recal {f('kendall_tau_after')}, before {f('kendall_tau_before')}, "
          f"FLOPs only {f('kendall_tau_flops')}")
    print(f"  Spearman rho template after BN recal {f('spearman_rho_after')}, before {f('spearman_rho_before')}, "
          f"FLOPs only {f('spearman_rho_flops')}")
    print(f"wrote validate.json, validate.csv, validate_scatter.png in {args.run}")
    return 0


def cmd_config(args) -> int:
    import yaml

    from fusion3d.config import to_dict

    if args.schema:
        rows = describe()
        width = max(len(r[0]) for r in rows)
        for key, tp, default, help_ in rows:
            print(f"{key:<{width}}  {default:<24} {help_}  [{tp}]")
        return 0
    path, overrides = _split_config(args)
    print(yaml.safe_dump(to_dict(load_config(path, overrides)), sort_keys=False), end="")
    return 0


def cmd_demo(args) -> int:
    from fusion3d.demo import run_demo

    return run_demo(out=args.out, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion3d", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)

    data = sub.add_parser("data", help="dataset tools: synthesise, scan")
    dsub = data.add_subparsers(dest="data_verb", required=True)
    p = dsub.add_parser("synth", help="write a synthetic video dataset (H.264 .mp4, UCF101 layout)")
    p.add_argument("--kind", choices=["motion", "appearance", "mixed"], default="motion")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--videos-per-class", type=int, default=60)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="encoder processes (output is identical)")
    p.set_defaults(func=cmd_data_synth)
    p = dsub.add_parser("scan", help="report missing, unreadable, truncated and too-short videos")
    _add_config_args(p)
    p.add_argument("--subset", default="train", help="annotation subset: train, val or test")
    p.add_argument("--full", action="store_true", help="decode every frame (slow, exhaustive)")
    p.add_argument("--csv", default=None, help="where to write the CSV (default: <data.cache_dir>/scan_<subset>.csv)")
    p.set_defaults(func=cmd_data_scan)

    p = sub.add_parser("train", help="train the template (warm-up, then Variational DropPath)")
    _add_config_args(p)
    p.add_argument("--resume", default=None, help="auto (continue the run directory's checkpoint, if any) or a checkpoint path")
    p.add_argument("--init", default=None, help="checkpoint to load weights from (weights only)")
    p.add_argument("--max-epochs", type=int, default=None, help="stop after this many epochs in total (resumable)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw strategies from a trained template and score them without retraining")
    p.add_argument("run", help="run directory written by `fusion3d train`")
    p.add_argument("--num", "-n", type=int, default=100,
                   help="strategies to draw (canonical ones are added); under torchrun write -n (torchrun takes --num for its own --numa-binding)")
    p.add_argument("--seed", type=int, default=None, help="seed of the draws (default: the run's seed)")
    p.add_argument("--no-recalibrate", action="store_true", help="skip BatchNorm recalibration per strategy")
    p.add_argument("--recal-clips", type=int, default=None, help="training clips used for BN recalibration")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size")
    p.add_argument("--device", default=None, help="torch device (default: the run's)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="score only every N-th strategy from the I-th (default under torchrun: RANK/WORLD_SIZE); "
                        "the last shard to finish merges all into strategies.csv")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("analyze", help="marginals, Figure-4 plot, accuracy vs FLOPs, top strategies, Opt")
    p.add_argument("run", help="run directory with strategies.csv")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--cka", action="store_true", help="also measure debiased CKA between slots (Opt vs all-S)")
    p.add_argument("--cka-clips", type=int, default=64, help="selection clips for CKA")
    p.add_argument("--cka-batch-size", type=int, default=16, help="CKA minibatch size (fixed)")
    p.add_argument("--cka-threshold", type=float, default=0.9, help="CKA above which adjacent slots are redundant")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("derive", help="derive a fusion design for a backbone from the run's marginals")
    p.add_argument("run", help="run directory with marginals.csv (after `fusion3d analyze`)")
    p.add_argument("--backbone", required=True, help="resnet18_3d, resnet50_3d, resnext50_32x4d_3d, "
                   "resnext101_32x8d_3d, mobilenetv2_3d or densenet121_3d")
    p.add_argument("--rule", default="argmax", choices=["argmax", "budget", "paper"])
    p.add_argument("--flops-budget", type=float, default=None, help="G MACs per clip (rule budget)")
    p.add_argument("--convention", default="paper", choices=["paper", "sampling"], help="marginals convention")
    p.add_argument("--input", default=None, metavar="TxHxW", help="input for MACs (default: the run's clip)")
    p.add_argument("--width-mult", type=float, default=1.0, help="backbone width multiplier")
    p.add_argument("--out", default=None, help="design file (default RUN/derived/<backbone>_<rule>.json)")
    p.set_defaults(func=cmd_derive)

    p = sub.add_parser("retrain", help="train one strategy alone with the run's recipe (the Table-2 analog)")
    p.add_argument("run", help="run directory written by `fusion3d train`")
    p.add_argument("--strategy", required=True, help="S, ST, S+ST, opt, top:K or a strategy JSON file")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="config overrides for the retrain")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("validate", help="train M sampled strategies alone: do template scores predict accuracy?")
    p.add_argument("run", help="run directory with strategies.csv")
    p.add_argument("--num", "-n", type=int, default=8, help="strategies to train alone, spread over the scores")
    p.add_argument("--workers", type=int, default=1, help="retrains run in parallel processes")
    p.add_argument("--permutations", type=int, default=10000, help="permutations for the p-values")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="config overrides for the retrains")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("report", help="one HTML page and Markdown of a run (or of a demo folder)")
    p.add_argument("run", help="run directory, or a demo folder with motion/ and appearance/")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("config", help="print the resolved config, or the schema with --schema")
    _add_config_args(p)
    p.add_argument("--schema", action="store_true", help="list every key with default and description")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("demo", help="run the whole method on synthetic videos")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="smaller data and shorter training (about 3 minutes)")
    p.set_defaults(func=cmd_demo)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; ``key=value`` overrides may also follow options
    (``retrain RUN --strategy S train.epochs=2``). Exits with a usage error like argparse."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or not all("=" in e and not e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"fusion3d: config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"fusion3d: error: {e}", file=sys.stderr)
        return 2
