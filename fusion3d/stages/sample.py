"""``fusion3d sample``: score strategies drawn from a trained template (docs/method.md §5).

For one run directory (written by ``fusion3d train``):

1. load the template (config and weights from ``checkpoint.pt``);
2. rebuild the selection split (held out from training; checked against ``splits.json``) and a
   fixed set of training clips for BatchNorm recalibration (a seeded subset of the fit split,
   centre crop, one clip per video); both are decoded once into clip caches;
3. list the strategies: the canonical all-S, all-ST, all-S+ST, the most probable one, the per-slot
   ablation's (all-S with one slot set to ST, S+ST or none; ``fusion3d.analysis.ablation``; skipped
   with ``ablation=False``), then ``num`` hard-Bernoulli draws from the learned drop probabilities
   (a torch generator seeded from the run seed, or ``seed``); duplicates (same strategy id) are
   scored once, under their first source;
4. for each strategy: put the template in hard mode (dropped paths are not computed), score it on
   the selection clips with the template's BatchNorm statistics ("before"), then recalibrate
   BatchNorm on the fixed training clips and score again ("after"). The template's BatchNorm
   statistics are put back before each strategy, so recalibrations never compound. Strategies are
   scored in groups of ``group_size`` consecutive ones of the plan, each group on its prefix tree
   (``StrategyScorer.score_many``, ``fusion3d.engine.prefix``): what strategies of a group share (their
   first slots) is computed, recalibrated and evaluated once; a strategy's scores do not depend on its
   group;
5. append one row per strategy to ``strategies.csv`` as soon as its group is scored (in plan order,
   flushed and fsynced).

Sharding: with ``shard=(i, n)`` (or under ``torchrun``, where ``RANK`` / ``WORLD_SIZE`` give it), a
process scores every n-th strategy of the plan, starting at the i-th, into
``strategies.shard<i>of<n>.csv``, then marks the shard done (``strategies.shard<i>of<n>.done``). The
process that finds every shard of the plan done merges them, under a lock, into ``strategies.csv``
(in plan order, atomically) and removes the shard files, so there is no process group and no
barrier: shards may run on different machines that share the run directory, at different times, and
an unsharded ``fusion3d sample`` also merges what shards left behind. Only shard 0 writes
``sample.json``'s settings; the merging process writes the totals.

Resuming: strategies whose id is already in ``strategies.csv`` (or in this shard's file) are skipped, and the draws are the
same for the same seed, so an interrupted run continues where it stopped. A torn last line (a
crash in the middle of a write) is dropped. ``sample.json`` records the measurement settings at the
start (a resume with different weights or settings is refused, so rows measured differently never
mix) and the totals at the end.

Several template seeds (a run trained with ``run.seeds = K > 1``; ``fusion3d.engine.seeds``): the
plan is drawn from the drop probabilities averaged over the seeds, every strategy is scored by every
seed run's template (each on its own selection split), and ``strategies.csv`` at the top holds the
mean over the seeds of each accuracy column, each seed's value (``<column>_seed<i>``) and the spread
of the top-1 columns (``top1_before_sd``, ``top1_after_sd``); resumable the same way (not sharded).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fusion3d.analysis.ablation import ablation_plan
from fusion3d.analysis.receptive_field import with_rf_columns
from fusion3d.engine.scoring import StrategyScorer
from fusion3d.engine.seeds import SeedScorer
from fusion3d.errors import FusionError
from fusion3d.models import Strategy
from fusion3d.models.units import ABLATION_SOURCE, CANONICAL
from fusion3d.run.layout import RunDir
from fusion3d.run.seeds import seed_dirs
from fusion3d.run.strategies import (
    COLUMNS,
    RF_COLUMNS,
    RowWriter,
    merge_shards,
    read_strategies,
    rewrite_strategies,
    shard_spec,
)
from fusion3d.utils import atomic_write_text

# Keys of sample.json["measurement"] that must match for rows of one strategies.csv to be comparable.
MEASUREMENT_KEYS = (
    "weights_sha1",
    "recalibrate",
    "recal_videos",
    "recal_batch_size",
    "selection_videos",
    "views",
    "input_shape",
)
# Strategies scored together on one prefix tree. Measured on the demo's motion run (87 strategies, a
# shared 2-core machine, an early version of the tree): 94 strategies/min in groups of 8, 153 in groups
# of 32, 179 in groups of 64, 182 in one group. Rows are written after each group.
GROUP_SIZE = 64


# ----------------------------------------------------------------------------- the strategy list


def strategy_plan(model, num: int, seed: int, ablation: bool = True) -> list[tuple[Strategy, str]]:
    """(strategy, source) in scoring order: the canonical ones, the most probable, the per-slot
    ablation's (``ablation``: all-S with each slot set to each other unit, source ``ablation``), then
    ``num`` draws from a generator seeded with ``seed``; each strategy id appears once (its first
    source wins)."""
    n = model.num_slots
    plan = [(Strategy.uniform(unit, n), source) for source, unit in CANONICAL]
    plan.append((model.most_probable_strategy(), "most_probable"))
    if ablation:
        plan.extend((s, ABLATION_SOURCE) for s in ablation_plan(n))
    g = torch.Generator().manual_seed(int(seed))
    plan.extend((model.sample_strategy(g), "sampled") for _ in range(int(num)))
    seen: set[str] = set()
    out = []
    for s, source in plan:
        if s.id not in seen:
            seen.add(s.id)
            out.append((s, source))
    return out


# ----------------------------------------------------------------------------- the stage


def _totals(
    df, plan, model, num: int, new_rows: int, seconds: list, t_start: float, recalibrate: bool, ablation: bool
) -> dict:
    """The totals ``sample.json`` ends with: what was planned and scored, timing, the best row."""
    scored = set(df["id"].astype(str))
    score = "top1_after" if recalibrate else "top1_before"
    sampled = df[df["source"] == "sampled"]
    best = (
        df.sort_values([score, "macs"], ascending=[False, True], kind="stable").iloc[0] if len(df) else None
    )
    return {
        "complete": all(s.id in scored for s, _ in plan),
        "rows": len(df),
        "new_rows": new_rows,
        "unique_sampled_planned": sum(1 for _, src in plan if src == "sampled"),
        "duplicates_removed": int(num)
        + 4
        + (len(ablation_plan(model.num_slots)) if ablation else 0)
        - len(plan),
        "seconds_total": round(time.perf_counter() - t_start, 3),
        "seconds_per_strategy": round(float(np.mean(seconds)), 4) if seconds else None,
        "canonical_ids": {source: Strategy.uniform(unit, model.num_slots).id for source, unit in CANONICAL},
        "most_probable_id": model.most_probable_strategy().id,
        "score_column": score,
        "sampled_mean": float(sampled[score].mean()) if len(sampled) else None,
        "sampled_std": float(sampled[score].std(ddof=0)) if len(sampled) else None,
        "best": None
        if best is None
        else {
            "id": best["id"],
            "strategy": best["strategy"],
            "source": best["source"],
            score: float(best[score]),
            "macs": int(best["macs"]),
        },
    }


def run_sample(
    run_dir: str | Path,
    num: int = 100,
    seed: int | None = None,
    recalibrate: bool = True,
    recal_clips: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
    limit: int | None = None,
    shard: str | tuple[int, int] | None = None,
    allow_unfinished: bool = False,
    group_size: int = GROUP_SIZE,
    ablation: bool = True,
) -> pd.DataFrame:
    """Score ``num`` sampled strategies plus the canonical ones; returns every row of ``strategies.csv``.

    ``seed``: seed of the strategy draws (default: the run seed). ``recalibrate``: also score after
    BatchNorm recalibration (else the ``*_after`` columns are empty). ``recal_clips``: number of fit
    videos (one centre clip each) used for recalibration (default 200, at most the fit split).
    ``batch_size``: evaluation batch size (default ``max(2 * train.batch_size, 16)``); recalibration
    batches use ``train.batch_size``, the batch size the template's statistics were trained at.
    ``device``: torch device (default: the run's ``run.device``). ``limit``: stop after scoring this
    many new strategies (the run can be resumed; for staged runs and tests). ``shard``: ``"I/N"``
    to score only this process's share (see the module docstring); default from torchrun's
    environment. A shard that does not merge returns its own rows. A template whose training has
    not finished is refused unless ``allow_unfinished``. ``group_size``: strategies scored together
    (see the module docstring; rows are written after each group). ``ablation``: also score the
    per-slot ablation's ``1 + 3 x slots`` strategies (``fusion3d.analysis.ablation``), which
    ``analyze`` reads.
    """
    if num < 0:
        raise ValueError(f"--num must be >= 0, got {num}")
    if recal_clips is not None and recal_clips < 1:
        raise ValueError(f"--recal-clips must be at least 1, got {recal_clips} (or pass --no-recalibrate)")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    run = RunDir(run_dir)
    run_dir = run.path
    t_start = time.perf_counter()
    shard_i, shard_n = shard_spec(shard)
    seeds = seed_dirs(run_dir)
    if seeds and shard_n > 1:
        raise FusionError(
            f"{run.path} holds {len(seeds)} template seeds: sharded sampling of such a run is not supported; "
            "run `fusion3d sample` without --shard or torchrun"
        )
    if seeds:
        scorer = SeedScorer(seeds, recalibrate, recal_clips, batch_size, device, progress)
        plan_model, columns, parts = scorer.plan_model, scorer.columns, scorer.scorers
    else:
        scorer = StrategyScorer(
            run_dir, recalibrate, recal_clips, batch_size, device, progress, sharded=shard_n > 1
        )
        plan_model, columns, parts = scorer.model, COLUMNS, [scorer]
    model, state, measurement = scorer.model, scorer.state, scorer.measurement
    for part in parts:
        total = part.cfg.train.warmup_epochs + part.cfg.train.epochs
        epoch = part.state.get("epoch", total)
        if not allow_unfinished and int(epoch) < total:
            scorer.restore()
            where = part.run_dir if seeds else run.path
            raise FusionError(
                f"the training of {where} has not finished (checkpoint at epoch {epoch} of "
                f"{total}): resume it with `fusion3d train --resume auto run.out={run.path}`, or pass "
                "--allow-unfinished to score this template anyway"
            )
    draw_seed = scorer.cfg.run.seed if seed is None else int(seed)

    main_csv, json_path = run.strategies, run.sample
    plan = strategy_plan(plan_model, num, draw_seed, ablation)
    order = [s.id for s, _ in plan]
    if shard_n == 1:
        merge_shards(run_dir, order)  # what earlier sharded runs left behind
        csv_path, done_path = main_csv, None
    else:
        csv_path, done_path = run.shard_rows(shard_i, shard_n), run.shard_done(shard_i, shard_n)
        done_path.unlink(missing_ok=True)
    settings = {
        "num": int(num),
        "seed": draw_seed,
        "recalibrate": bool(recalibrate),
        "recal_clips": recal_clips,
        "eval_batch_size": scorer.eval_batch_size,
        "device": str(scorer.device),
        "limit": limit,
        "shards": shard_n,
        "ablation": bool(ablation),
    }
    if seeds:
        settings["template_seeds"] = [p.name for p in seeds]
    info = {
        "complete": False,
        "settings": settings,
        "measurement": measurement,
        "checkpoint_epoch": state.get("epoch"),
        "planned": len(plan),
    }
    writer = RowWriter(csv_path, columns)  # takes the lock before the existing rows are read
    bar = None
    new_rows, seconds = 0, []
    try:
        existing = read_strategies(csv_path, repair=True)
        if len(existing) and existing[list(RF_COLUMNS)].isna().all().all():  # written before the RF columns
            existing = with_rf_columns(existing, model)
            rewrite_strategies(csv_path, existing)
            writer.reopen()  # the rewrite replaced the file the writer had open
        if csv_path != main_csv:
            existing = pd.concat([read_strategies(main_csv), existing], ignore_index=True)
        if len(existing) and json_path.is_file():
            previous = json.loads(json_path.read_text()).get("measurement", {})
            diff = [k for k in MEASUREMENT_KEYS if k in previous and previous[k] != measurement[k]]
            if diff:
                raise FusionError(
                    f"{csv_path} was measured with a different {', '.join(diff)} (other weights or "
                    "settings); move it away to sample again"
                )
        done = set(existing["id"].astype(str))
        mine = plan[shard_i::shard_n]
        todo = [(s, src) for s, src in mine if s.id not in done]
        if shard_i == 0:
            atomic_write_text(json_path, json.dumps(info, indent=1) + "\n")
        writer.ensure_header()
        if progress:
            from tqdm import tqdm

            desc = "scoring strategies" + (f" (shard {shard_i}/{shard_n})" if shard_n > 1 else "")
            bar = tqdm(
                total=len(mine),
                initial=len(mine) - len(todo),
                desc=desc,
                unit="strategy",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        scoring = todo if limit is None else todo[:limit]
        for start in range(0, len(scoring), group_size):
            for row in scorer.score_many(scoring[start : start + group_size]):
                writer.write(row)
                seconds.append(row["seconds"])
                new_rows += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(top1=f"{(row['top1_after'] if recalibrate else row['top1_before']):.1f}")
        finished = limit is None or new_rows < limit or not todo[new_rows:]
        df = read_strategies(csv_path)
    finally:
        writer.close()
        if bar is not None:
            bar.close()
        scorer.restore()

    if done_path is not None:
        if not finished:
            return df
        done_path.write_text("done\n")
        if not merge_shards(run_dir, order):
            return df  # other shards still running: the last one to finish merges
        df = read_strategies(main_csv)
    info.update(_totals(df, plan, plan_model, num, new_rows, seconds, t_start, recalibrate, ablation))
    atomic_write_text(json_path, json.dumps(info, indent=1) + "\n")
    return df


# ----------------------------------------------------------------------------- the verb


def command(args) -> int:
    t0 = time.time()
    i, n = shard_spec(args.shard)
    df = run_sample(
        args.run,
        num=args.num,
        seed=args.seed,
        recalibrate=not args.no_recalibrate,
        recal_clips=args.recal_clips,
        batch_size=args.batch_size,
        device=args.device,
        progress=sys.stderr.isatty(),
        shard=(i, n),
        allow_unfinished=args.allow_unfinished,
        ablation=not args.no_ablation,
    )
    run = RunDir(args.run)
    merged = not run.shard_rows(i, n).exists()
    if n > 1 and not merged:
        print(
            f"shard {i}/{n}: {len(df)} strategies scored in {time.time() - t0:.1f}s; the last shard to finish "
            f"merges them into {run.strategies}"
        )
        return 0
    col = "top1_after" if not args.no_recalibrate else "top1_before"
    if len(df):
        best = df.sort_values(col, ascending=False).iloc[0]
        print(
            f"scored {len(df)} strategies in {time.time() - t0:.1f}s -> {run.strategies}; "
            f"best {col} {best[col]:.1f}% ({best['strategy']})"
        )
    return 0
