"""The ``fusion3d`` command: one verb per pipeline stage.

data -> train -> sample -> analyze -> (retrain, agreement, derive) -> report, plus ``demo`` that runs
them on the embedded synthetic default. argparse only: each verb calls its stage module
(``fusion3d.stages.<verb>``), imported when the verb runs. Nothing here runs at import;
``main(argv)`` parses and dispatches.
"""

from __future__ import annotations

import argparse
import sys

from fusion3d.config import ConfigError
from fusion3d.errors import FusionError


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "config",
        nargs="?" if not required else None,
        default=None,
        help="YAML config file (optional); later key=value arguments override it",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="key=value",
        help="dotted config overrides, e.g. data.clip_len=8 run.out=runs/x",
    )


def split_config(args) -> tuple[str | None, list[str]]:
    """argparse cannot tell a config path from a first override; a token with '=' is an override."""
    cfg, overrides = args.config, list(args.overrides)
    if cfg is not None and "=" in cfg:
        overrides.insert(0, cfg)
        cfg = None
    return cfg, overrides


def _train(args) -> int:
    from fusion3d.stages.train import command

    return command(
        args.config,
        args.overrides,
        resume=args.resume,
        init=args.init,
        max_epochs=args.max_epochs,
        overwrite=args.overwrite,
    )


def _retrain(args) -> int:
    from fusion3d.stages.retrain import command

    return command(args.run, args.strategy, args.overrides, args.seeds)


def _report(args) -> int:
    from fusion3d.stages.report import command

    return command(args.run)


def _demo(args) -> int:
    from fusion3d.demo import run_demo

    return run_demo(out=args.out, quick=args.quick)


def _stage(module: str, name: str = "command"):
    """A handler that imports ``fusion3d.stages.<module>`` only when its verb runs."""

    def handler(args) -> int:
        import importlib

        return getattr(importlib.import_module(f"fusion3d.stages.{module}"), name)(args)

    return handler


def version() -> str:
    """The installed distribution's version, or the source tree's ``fusion3d.__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("fusion3d")
    except PackageNotFoundError:
        from fusion3d import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion3d", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"fusion3d {version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (for bug reports)"
    )
    sub = parser.add_subparsers(dest="verb", required=True)

    data = sub.add_parser("data", help="dataset tools: synthesise, scan")
    dsub = data.add_subparsers(dest="data_verb", required=True)
    p = dsub.add_parser("synth", help="write a synthetic video dataset (H.264 .mp4, UCF101 layout)")
    from fusion3d.data.synth import KINDS  # numpy only: cheap to import while parsing

    p.add_argument("--kind", choices=list(KINDS), default="motion")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--videos-per-class", type=int, default=60)
    p.add_argument(
        "--test-per-class",
        type=int,
        default=None,
        help="videos per class in the test list (default: a quarter)",
    )
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="encoder processes (output is identical)")
    p.set_defaults(func=_stage("data", "synth"))
    p = dsub.add_parser("scan", help="report missing, unreadable, truncated and too-short videos")
    _add_config_args(p)
    p.add_argument("--subset", default="train", help="annotation subset: train, val or test")
    p.add_argument("--full", action="store_true", help="decode every frame (slow, exhaustive)")
    p.add_argument(
        "--csv", default=None, help="where to write the CSV (default: <data.cache_dir>/scan_<subset>.csv)"
    )
    p.set_defaults(func=_stage("data", "scan"))

    p = sub.add_parser("train", help="train the template (warm-up, then Variational DropPath)")
    _add_config_args(p)
    p.add_argument(
        "--resume",
        default=None,
        help="auto (continue the run directory's checkpoint, if any) or a checkpoint path",
    )
    p.add_argument("--init", default=None, help="checkpoint to load weights from (weights only)")
    p.add_argument(
        "--max-epochs", type=int, default=None, help="stop after this many epochs in total (resumable)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a directory that holds a run: the old run is moved aside to DIR.old-<time>",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "sample", help="draw strategies from a trained template and score them without retraining"
    )
    p.add_argument("run", help="run directory written by `fusion3d train`")
    p.add_argument(
        "--num",
        "-n",
        type=int,
        default=100,
        help="strategies to draw (canonical ones are added); under torchrun write -n (torchrun takes --num for its own --numa-binding)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the draws (default: the run's seed)")
    p.add_argument("--no-recalibrate", action="store_true", help="skip BatchNorm recalibration per strategy")
    p.add_argument(
        "--no-ablation",
        action="store_true",
        help="skip the per-slot ablation's strategies (all-S with one slot changed; analyze reads them)",
    )
    p.add_argument("--recal-clips", type=int, default=None, help="training clips used for BN recalibration")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size")
    p.add_argument("--device", default=None, help="torch device (default: the run's)")
    p.add_argument(
        "--allow-unfinished",
        action="store_true",
        help="score a template whose training has not finished (checkpoint epoch < total epochs)",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="score only every N-th strategy from the I-th (default under torchrun: RANK/WORLD_SIZE); "
        "the last shard to finish merges all into strategies.csv",
    )
    p.set_defaults(func=_stage("sample"))

    p = sub.add_parser("analyze", help="marginals, Figure-4 plot, accuracy vs MACs, top strategies, Opt")
    p.add_argument("run", help="run directory with strategies.csv")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument(
        "--cka", action="store_true", help="also measure debiased CKA between slots (Opt vs all-S)"
    )
    p.add_argument("--cka-clips", type=int, default=64, help="selection clips for CKA")
    p.add_argument("--cka-batch-size", type=int, default=16, help="CKA minibatch size (fixed)")
    p.add_argument(
        "--cka-threshold", type=float, default=0.9, help="CKA above which adjacent slots are redundant"
    )
    p.set_defaults(func=_stage("analyze"))

    p = sub.add_parser(
        "derive", help="derive a fusion design for a backbone from the run's ablation or marginals"
    )
    p.add_argument("run", help="run directory with marginals.csv (after `fusion3d analyze`)")
    from fusion3d.models.registry import list_models  # torch-free: cheap to import while parsing
    from fusion3d.models.spec import ModelConfig  # noqa: F401 - registers the models

    p.add_argument("--backbone", required=True, help=f"a registered model: {', '.join(list_models())}")
    p.add_argument(
        "--rule",
        default="auto",
        choices=["auto", "argmax", "budget", "paper", "ablation"],
        help="auto (default): ablation where the run has ablation.csv, else argmax",
    )
    p.add_argument(
        "--macs-budget",
        "--flops-budget",
        dest="macs_budget",
        type=float,
        default=None,
        help="G MACs per clip (rule budget); --flops-budget is the deprecated name",
    )
    p.add_argument(
        "--convention", default="paper", choices=["paper", "sampling"], help="marginals convention"
    )
    p.add_argument("--input", default=None, metavar="TxHxW", help="input for MACs (default: the run's clip)")
    p.add_argument("--width-mult", type=float, default=1.0, help="backbone width multiplier")
    p.add_argument("--out", default=None, help="design file (default RUN/derived/<backbone>_<rule>.json)")
    p.set_defaults(func=_stage("derive"))

    p = sub.add_parser(
        "export",
        help="a run or a derived design as TorchScript, ONNX or an MMAction2 config (strategy frozen)",
    )
    p.add_argument(
        "source", metavar="RUN|DESIGN", help="run directory, or a design file from `fusion3d derive`"
    )
    p.add_argument("--format", required=True, choices=["torch", "onnx", "mmaction2"])
    p.add_argument(
        "--out", default=None, help="output file (default: <model>_<strategy id>.pt|.onnx|_mmaction2.py here)"
    )
    p.add_argument(
        "--strategy",
        default=None,
        help="S, ST, S+ST, S|ST|..., a strategy JSON file; for a run also opt, top:K, most_probable "
        "(default: the run's fixed strategy or opt; the design's units)",
    )
    p.set_defaults(func=_stage("export"))

    p = sub.add_parser("retrain", help="train one strategy alone with the run's recipe (the Table-2 analog)")
    p.add_argument("run", help="run directory written by `fusion3d train`")
    p.add_argument("--strategy", required=True, help="S, ST, S+ST, opt, top:K or a strategy JSON file")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="training seeds run.seed .. run.seed+K-1 (labels <label>, <label>#seed<s>; default 1)",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value", help="config overrides for the retrain"
    )
    p.set_defaults(func=_retrain)

    p = sub.add_parser(
        "agreement",
        aliases=["validate"],
        help="train M sampled strategies alone: do template scores predict stand-alone accuracy? "
        "(`validate` is the old name of this verb)",
    )
    p.add_argument("run", help="run directory with strategies.csv")
    p.add_argument(
        "--num", "-n", type=int, default=8, help="strategies to train alone, spread over the scores"
    )
    p.add_argument("--workers", type=int, default=1, help="retrains run in parallel processes")
    p.add_argument("--permutations", type=int, default=10000, help="permutations for the p-values")
    p.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value", help="config overrides for the retrains"
    )
    p.set_defaults(func=_stage("agreement"))

    bench = sub.add_parser(
        "bench", help="known-answer benchmark: ground-truth tables of strategies trained alone"
    )
    bsub = bench.add_subparsers(dest="bench_verb", required=True)
    p = bsub.add_parser("build", help="train a table's strategies alone (resumes row by row)")
    p.add_argument("name", help="a shipped spec (see fusion3d/bench/specs) or a spec YAML file")
    p.add_argument("--out", default="runs/bench", help="build folder (the table goes to OUT/NAME)")
    p.add_argument("--workers", type=int, default=1, help="rows trained at once (processes)")
    p.add_argument("--shard", default=None, metavar="I/N", help="build only every N-th row from the I-th")
    p.add_argument("--limit", type=int, default=None, help="stop after this many rows (resumable)")
    p.add_argument("--publish", action="store_true", help="copy a finished table into the package")
    p.set_defaults(func=_stage("bench"))
    p = bsub.add_parser("list", help="the ground-truth tables: spread, noise ceiling, depth profile")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dir", default=None, help="also list finished tables of this build folder")
    p.set_defaults(func=_stage("bench"))
    p = bsub.add_parser("score", help="compare a trained template's answers with a table's ground truth")
    p.add_argument("run", help="run directory written by `fusion3d train`")
    p.add_argument("--table", required=True, help="a shipped table name or a table CSV")
    p.add_argument("--recal-clips", type=int, default=None, help="fit clips for BatchNorm recalibration")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_stage("bench"))

    p = sub.add_parser("report", help="one HTML page and Markdown of a run (or of a demo folder)")
    p.add_argument("run", help="run directory, or a demo folder with motion/ and appearance/")
    p.set_defaults(func=_report)

    p = sub.add_parser("config", help="print the resolved config, or the schema with --schema")
    _add_config_args(p)
    p.add_argument("--schema", action="store_true", help="list every key with default and description")
    p.add_argument(
        "--list", action="store_true", help="list the configs shipped with fusion3d (usable by name)"
    )
    p.set_defaults(func=_stage("config"))

    p = sub.add_parser("demo", help="run the whole method on synthetic videos")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="smaller data and shorter training (about 3 minutes)")
    p.set_defaults(func=_demo)
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
    if hasattr(args, "config"):
        args.config, args.overrides = split_config(args)
    return args


def _one_line(e: BaseException) -> str:
    """The error as one line: its message (whitespace folded), naming the file when an OSError has one."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, KeyError):
        text = f"missing entry {text}"
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Expected failures (``FusionError``, config errors, missing files, bad values, OS
    errors) print one line, ``fusion3d: error: ...``, and return 2; ``--debug`` shows the traceback."""
    args = parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FusionError, ConfigError, FileNotFoundError, ValueError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"fusion3d: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fusion3d: interrupted", file=sys.stderr)
        return 130
