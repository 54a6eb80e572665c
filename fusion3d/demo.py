"""``fusion3d demo``: the whole method on the embedded synthetic default, stage by stage.

Two datasets: ``motion`` (temporal order carries the class; time-reversed twin classes) and
``appearance`` (it does not). Each gets the same pipeline (synthesise -> train the tiny template
-> sample and score strategies -> analyze, with receptive fields and CKA). The two pipelines run at
the same time in two processes (one per core on a 2-core machine), each logging to
``<out>/<kind>.log``. As soon as the motion analysis is done, S / ST / S+ST / Opt are each trained
alone (the Table-2 analog, ``<out>/motion_retrain.log``). Then ResNet designs are derived from the
motion marginals and ``<out>/report.html`` tells the story on one page. Every stage's wall time is
printed. Re-running the demo resumes: finished data, training, sampling and retraining are reused.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fusion3d.analysis.marginals import drop_summary
from fusion3d.config import load_config
from fusion3d.run.layout import RunDir
from fusion3d.utils import atomic_write_text

# Demo settings. Everything not named here is the config schema's default (configs/synth_*.yaml).
FULL = {"classes": 6, "videos_per_class": 60, "warmup_epochs": 12, "epochs": 8, "strategies": 100}
QUICK = {"classes": 4, "videos_per_class": 12, "warmup_epochs": 3, "epochs": 3, "strategies": 12}
NOT_IN_DEMO = [
    "agreement (`fusion3d agreement RUN --num 8`, once `validate`; it trains 8 more strategies alone)",
    "bench (`fusion3d bench score RUN --table NAME` against a ground-truth table)",
]
RETRAIN = ("S", "ST", "S+ST", "opt")  # the Table-2 analog, on the motion run
DERIVE = (("resnet18_3d", None), ("resnet50_3d", (16, 112, 112)))  # None: the run's clip size


def demo_overrides(root: Path, out_dir: Path, kind: str, settings: dict) -> list[str]:
    return [
        f"data.root={root}",
        f"data.annotations={root / 'ucfTrainTestlist'}",
        f"data.cache_dir={out_dir / 'cache'}",
        f"run.out={out_dir / kind}",
        "run.threads=1",
        "model.name=tiny",
        "data.flip=off",
        f"train.warmup_epochs={settings['warmup_epochs']}",
        f"train.epochs={settings['epochs']}",
        "train.progress=false",
    ]


def pipeline(kind: str, out: str, settings: dict) -> dict:
    """synth -> train -> sample -> analyze for one dataset; returns timings and headline numbers."""
    from fusion3d.data.synth import generate
    from fusion3d.engine.trainer import train
    from fusion3d.stages.analyze import run_analyze
    from fusion3d.stages.sample import run_sample

    out_dir = Path(out)
    log_path = out_dir / f"{kind}.log"
    timings = []
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):

        def stage(name, fn):
            t0 = time.time()
            print(f"== {name}", flush=True)
            result = fn()
            timings.append((name, time.time() - t0))
            return result

        root = out_dir / "data" / f"synth_{kind}"
        stage(
            f"data synth --kind {kind} ({settings['classes']} classes x {settings['videos_per_class']} videos)",
            lambda: generate(
                root,
                kind=kind,
                seed=0,
                classes=settings["classes"],
                videos_per_class=settings["videos_per_class"],
            ),
        )
        cfg = load_config(None, demo_overrides(root, out_dir, kind, settings))
        summary = stage(
            f"train ({settings['warmup_epochs']} warm-up + {settings['epochs']} v-DropPath epochs)",
            lambda: train(cfg, resume="auto"),
        )
        strategies = stage(
            f"sample {settings['strategies']} strategies (+ canonical), BN recalibration",
            lambda: run_sample(cfg.run.out, num=settings["strategies"], progress=False),
        )
        analysis = stage(
            "analyze (marginals, Figure 4, receptive fields, CKA)", lambda: run_analyze(cfg.run.out, cka=True)
        )
    return {
        "kind": kind,
        "timings": timings,
        "summary": summary,
        "analysis": analysis,
        "num_strategies": len(strategies),
        "log": str(log_path),
    }


def retrain_task(out: str, kind: str, spec: str) -> dict:
    """One stand-alone training of the Table-2 analog (logged to ``<out>/<kind>_retrain.log``)."""
    from fusion3d.engine.standalone import run_retrain

    run = Path(out) / kind
    with (
        open(Path(out) / f"{kind}_retrain.log", "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        t0 = time.time()
        print(f"== retrain {spec}", flush=True)
        row = run_retrain(run, spec)
    return {"spec": spec, "row": row, "seconds": time.time() - t0}


def _headline(r: dict) -> list[str]:
    s, a = r["summary"], r["analysis"]
    col = a["score_column"]
    d = drop_summary(s["drop_probs"])
    lines = [
        f"  template: posterior-predictive top-1 {s.get('val_top1', float('nan')):.1f}% on the test list; "
        f"S-path drop prob above T-path in {d['slots_p_s_gt_p_t']}/{d['slots']} slots "
        f"(mean p_S {d['p_s_mean']:.3f}, p_T {d['p_t_mean']:.3f})"
    ]
    canon = ", ".join(
        f"{src.replace('canonical_', 'all-')} {row[col]:.1f}%" for src, row in a["canonical"].items()
    )
    lines.append(
        f"  selection split, {col}: {canon}; Opt (best of {a['strategies']}) {a['opt'][col]:.1f}% "
        f"= {a['opt']['strategy']}"
    )
    return lines


def run_demo(out: str = "runs/demo", quick: bool = False) -> int:
    from fusion3d.report import build_demo_report
    from fusion3d.stages.derive import derive

    settings = QUICK if quick else FULL
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(
        f"fusion3d demo ({'quick' if quick else 'full'}): motion and appearance pipelines run in parallel; "
        f"logs in {out_dir}/motion.log and {out_dir}/appearance.log",
        flush=True,
    )
    retrains = []
    # spawn, not fork: a process forked after torch started its thread pools can deadlock (seen when
    # the demo ran inside a pytest process that had trained before)
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            kind: pool.submit(pipeline, kind, str(out_dir), settings) for kind in ("motion", "appearance")
        }
        results = {}
        for kind, fut in futures.items():
            try:
                results[kind] = fut.result()
            except Exception as e:
                print(
                    f"the {kind} pipeline failed: {type(e).__name__}: {e} (see {out_dir / (kind + '.log')})",
                    file=sys.stderr,
                )
                return 1
            if kind == "motion":  # retrains start while the appearance pipeline finishes
                t_retrain = time.time()
                retrains = [pool.submit(retrain_task, str(out_dir), "motion", spec) for spec in RETRAIN]
        try:
            retrained = [f.result() for f in retrains]
        except Exception as e:
            print(
                f"a retrain failed: {type(e).__name__}: {e} (see {out_dir / 'motion_retrain.log'})",
                file=sys.stderr,
            )
            return 1
        results["motion"]["timings"].append(
            (
                f"retrain {' / '.join(RETRAIN)} alone ({len(RETRAIN)} runs, 2 at a time)",
                time.time() - t_retrain,
            )
        )
        results["motion"]["retrain"] = [r["row"] for r in retrained]
    for kind, r in results.items():
        print(f"\n== {kind}")
        for name, dt in r["timings"]:
            print(f"  {dt:7.1f}s  {name}")
        for line in _headline(r):
            print(line)
        if r.get("retrain"):
            print(
                "  Table-2 analog (trained alone, "
                + r["retrain"][0]["measured_on"]
                + "): "
                + ", ".join(f"{row['label']} {row['top1']:.1f}%" for row in r["retrain"])
            )
        print(f"  figures and tables in {out_dir / kind}")
    t1 = time.time()
    designs = [derive(out_dir / "motion", backbone, input_shape=shape) for backbone, shape in DERIVE]
    results["motion"]["timings"].append(
        ("derive " + ", ".join(b for b, _ in DERIVE) + " designs", time.time() - t1)
    )
    print("\n== derived designs (the motion template's per-slot answers mapped by relative depth)")
    for d in designs:
        print(
            f"  {d['backbone']:<14} {d['string']}  ({d['rule']} rule)  {d['macs'] / 1e9:.2f} G MACs at {d['input_shape']} "
            f"(all-S {d['canonical']['S']['macs'] / 1e9:.2f} G, all-S+ST {d['canonical']['S+ST']['macs'] / 1e9:.2f} G)"
            f" -> {d['path']}"
        )
    wall = time.time() - t0
    atomic_write_text(
        RunDir(out_dir).demo,
        json.dumps({"wall_seconds": wall, "settings": settings, "results": results}, indent=1, default=str),
    )
    t2 = time.time()
    report = build_demo_report(out_dir)
    print(f"\nreport: {report} ({time.time() - t2:.1f}s)")
    wall = time.time() - t0
    print(f"total wall time {wall:.1f}s (the two pipelines ran side by side)")
    print("Not run by the demo: " + ", ".join(NOT_IN_DEMO))
    return 0
