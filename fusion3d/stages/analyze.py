"""``fusion3d analyze``: marginals, Figure 4, accuracy vs cost, and the Opt strategy of a run.

Reads ``strategies.csv`` (written by ``fusion3d sample``) and the template's drop probabilities
(``checkpoint.pt``), and writes into the run directory:

- ``marginals.csv``: per slot, drop / keep probabilities and unit marginals in both conventions
  (``fusion3d.analysis.marginals.marginals_table``);
- ``figure4.png`` (paper convention, q = 1 - sqrt(p)) and ``figure4_sampling.png`` (q = 1 - p):
  per slot grouped bars of P(S), P(ST), P(S+ST), with markers joined by a line at the unit the Opt
  strategy uses in each slot (a cross on the axis where Opt uses ``none``);
- ``acc_vs_flops.png``: selection top-1 of every scored strategy against its MACs per clip, the
  Pareto front highlighted, canonical strategies labelled;
- ``acc_hist.png``: histogram of the sampled strategies' top-1 with the canonical ones marked;
- ``top_strategies.csv``: the ``top_k`` best strategies;
- ``opt_strategy.json``: the Opt strategy (``Strategy.save`` with slot names);
- ``rf_vs_accuracy.png``: the head's static temporal receptive field of every scored strategy against
  its score, coloured by MACs, with the Pearson and the partial (MACs held fixed) correlation
  (``fusion3d.analysis.receptive_field``); the expected temporal receptive field under the learned drop
  probabilities goes to ``analysis.json``;
- with ``--cka``: ``cka.csv``, ``cka_within.png``, ``cka_between.png``, ``cka.json``, debiased
  minibatch CKA between slots within Opt and between Opt and all-S (``fusion3d.analysis.cka.run_cka``);
- ``ablation.csv`` (when ``sample`` scored the per-slot ablation's strategies): per slot, the score of
  all-S with that slot set to each unit, the T effect and whether a temporal unit there pays off
  beyond binomial noise on the selection videos (``fusion3d.analysis.ablation.ablation_table``);
- ``analysis.json``: a summary (Opt, canonical scores, sampled mean/std, preferred-unit counts,
  receptive-field statistics).

Several template seeds (a run trained with ``run.seeds = K > 1``): the marginals are those of the
drop probabilities averaged over the seeds, with intervals across the seeds as extra columns
(``fusion3d.analysis.seeds.seed_marginals``: range for K < 4, 95% t-interval from K = 4); the scores are
the combined ones of ``strategies.csv``; ``analysis.json`` gains ``template_seeds``. Receptive-field
statistics use the first seed's template; ``--cka`` runs on one seed run (``fusion3d analyze RUN/seed0 --cka``).

The score is ``top1_after`` (after BatchNorm recalibration) when the sample stage recalibrated,
else ``top1_before``. Opt is the best strategy by that score among every scored strategy
(sampled, canonical and most probable), ties broken by fewer MACs, then by id. Every file is
written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fusion3d.analysis.ablation import ablation_table
from fusion3d.analysis.cka import cka_pass, plot_cka_heatmap, redundant_runs
from fusion3d.analysis.marginals import MARGINAL_UNITS, marginals_table
from fusion3d.analysis.plots import acc_hist, acc_vs_macs, figure4
from fusion3d.analysis.receptive_field import expected_temporal_rf, plot_rf_vs_accuracy, with_rf_columns
from fusion3d.analysis.seeds import interval_kind, seed_marginals
from fusion3d.analysis.stats import pareto_front
from fusion3d.data.dataset import make_loader
from fusion3d.engine.bn import bn_state, load_bn_state, recalibrate_bn
from fusion3d.errors import FusionError
from fusion3d.models.strategy import UNITS, Strategy
from fusion3d.models.units import CANONICAL_SOURCES
from fusion3d.run.layout import ANALYZE_FILES, CKA_FILES, FILES, RunDir
from fusion3d.run.loading import load_run, recal_loader, resolve_run_strategy, selection_cache
from fusion3d.run.seeds import seed_dirs
from fusion3d.run.strategies import RF_COLUMNS, read_strategies
from fusion3d.utils import atomic_write_text, resolve_device


def _read_strategies(run_dir: Path) -> pd.DataFrame:
    path = RunDir(run_dir).strategies
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `fusion3d sample {run_dir}` first")
    df = read_strategies(path)
    if df.empty:
        raise ValueError(f"{path} holds no scored strategy yet: run `fusion3d sample {run_dir}`")
    return df


def _template(run_dir: Path):
    """The run's trained network (the template, or a backbone trained with v-DropPath)."""
    return load_run(run_dir)[2]


def _receptive_field(df: pd.DataFrame, model, score: str, run_dir: Path) -> dict | None:
    """``rf_vs_accuracy.png`` and its statistics, plus the expected temporal receptive field under the
    learned drop probabilities; None for a network without a receptive-field graph."""
    try:
        if df[list(RF_COLUMNS)].isna().all().all():  # a file from before the columns existed
            df = with_rf_columns(df, model)
        if df["rf_t_max"].isna().all():
            return None
        stats = plot_rf_vs_accuracy(df, RunDir(run_dir).rf_vs_accuracy, score)
        stats["expected_temporal_rf"] = expected_temporal_rf(model)
        stats["temporal_rf_range"] = [int(df["rf_t_max"].min()), int(df["rf_t_max"].max())]
    except TypeError:  # no receptive-field graph for this network
        return None
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in stats.items()}


def _ablation(df: pd.DataFrame, score: str, slot_names: list[str], run: RunDir) -> pd.DataFrame | None:
    """The per-slot ablation table (``fusion3d.analysis.ablation.ablation_table``) from the scored
    strategies, judged against binomial noise on the selection videos (for several template seeds:
    the fewest any seed scored on); None when ``sample`` did not score the ablation's strategies."""
    scores = df.drop_duplicates("strategy").set_index("strategy")[score].dropna().to_dict()
    n_videos = None
    if run.sample.is_file():
        n = json.loads(run.sample.read_text()).get("measurement", {}).get("selection_videos")
        n_videos = min(n) if isinstance(n, list) and n else n
    return ablation_table(scores, slot_names, int(n_videos) if n_videos else None)


def _ablation_summary(table: pd.DataFrame | None) -> dict | None:
    if table is None:
        return None
    pays = table[table["t_verdict"] == "temporal"]
    return {
        "base": "all-S",
        "slots_where_t_pays": pays["slot"].tolist(),
        "slots_where_t_costs": table.loc[table["t_verdict"] == "spatial", "slot"].tolist(),
        "t_effects": dict(zip(table["slot"], table["t_effect"].round(3))),
        "noise_points": None if table["t_noise"].isna().all() else float(table["t_noise"].max()),
    }


def _stats(values: pd.Series) -> dict:
    v = values.dropna().to_numpy(dtype=float)
    if not len(v):
        return {"count": 0}
    return {
        "count": int(len(v)),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _row_summary(row: pd.Series) -> dict:
    out = {"id": str(row["id"]), "strategy": str(row["strategy"]), "source": str(row["source"])}
    for c in ("top1_before", "top5_before", "top1_after", "top5_after"):
        v = float(row[c])
        out[c] = None if np.isnan(v) else v
    out.update({"macs": int(row["macs"]), "params": int(row["params"])})
    out.update({f"n_{u}": int(row[f"n_{u}"]) for u in UNITS})
    return out


def run_analyze(
    run_dir: str | Path, top_k: int = 10, cka: bool = False, cka_options: dict | None = None
) -> dict:
    """Write the analysis files of a sampled run (see the module docstring); returns ``analysis.json``.
    ``cka``: also measure layer-by-layer representation similarity (``fusion3d.analysis.cka.run_cka``, with
    ``cka_options``), after ``opt_strategy.json`` is written."""
    if top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {top_k}")
    if cka_options:
        for key, flag in (("num_clips", "--cka-clips"), ("batch_size", "--cka-batch-size")):
            if key in cka_options and cka_options[key] < 1:
                raise ValueError(f"{flag} must be at least 1, got {cka_options[key]}")
    run = RunDir(run_dir)
    run_dir = run.path
    seeds = seed_dirs(run_dir)
    if seeds and cka:
        raise FusionError(
            f"{run_dir} holds {len(seeds)} template seeds: run --cka on one of them "
            f"(`fusion3d analyze {seeds[0]} --cka`)"
        )
    models = [_template(d) for d in seeds] if seeds else [_template(run_dir)]  # damaged checkpoints first
    model = models[0]
    df = _read_strategies(run_dir)
    slot_names = model.slot_names
    if seeds:
        marg = seed_marginals([m.drop_probs().numpy() for m in models], slot_names)
    else:
        marg = marginals_table(model.drop_probs().numpy(), slot_names)
    atomic_write_text(run.marginals, marg.to_csv(index=False))

    score = "top1_after" if df["top1_after"].notna().any() else "top1_before"
    top5 = score.replace("top1", "top5")
    ranked = (
        df.assign(_score=df[score].fillna(-np.inf))
        .sort_values(["_score", "macs", "id"], ascending=[False, True, True], kind="stable")
        .drop(columns="_score")
    )
    opt_row = ranked.iloc[0]
    opt = Strategy.from_string(opt_row["strategy"])
    if len(opt) != len(slot_names):
        raise ValueError(
            f"strategies.csv holds {len(opt)}-slot strategies, the template has {len(slot_names)} slots"
        )
    opt.save(run.opt, slot_names)

    top = ranked.head(top_k).reset_index(drop=True)
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    atomic_write_text(run.top, top.to_csv(index=False))

    front_pos = pareto_front(df["macs"].to_numpy(dtype=float), df[score].to_numpy(dtype=float))
    figure4(
        marg,
        opt,
        "paper",
        run.figure4,
        "Unit marginals per slot, paper convention (q = 1 - sqrt(p), Eq. 7); markers: Opt strategy",
    )
    figure4(
        marg,
        opt,
        "sampling",
        run.figure4_sampling,
        "Unit marginals per slot, sampling convention (q = 1 - p); markers: Opt strategy",
    )
    acc_vs_macs(df, score, front_pos, opt.id, run.acc_vs_macs)
    acc_hist(df, score, run.acc_hist)
    rf = _receptive_field(df, model, score, run_dir)
    ablation = _ablation(df, score, slot_names, run)
    if ablation is not None:
        atomic_write_text(run.ablation, ablation.to_csv(index=False))
    elif run.ablation.is_file():
        run.ablation.unlink()  # from an earlier sample of other weights
    cka_summary = None
    if cka:
        cka_summary = run_cka(run_dir, **(cka_options or {}))

    sampled = df[df["source"] == "sampled"]
    best_sampled = ranked[ranked["source"] == "sampled"]
    agree = sum(u == p for u, p in zip(opt.units, marg["preferred_unit_paper"]))
    summary = {
        "score_column": score,
        "top5_column": top5,
        "strategies": int(len(df)),
        "sampled": int(len(sampled)),
        "opt": {**_row_summary(opt_row), "units": list(opt.units)},
        "best_sampled": _row_summary(best_sampled.iloc[0]) if len(best_sampled) else None,
        "canonical": {
            src: _row_summary(df[df["source"] == src].iloc[0])
            for src in CANONICAL_SOURCES
            if (df["source"] == src).any()
        },
        "sampled_scores": {
            c: _stats(sampled[c]) for c in ("top1_before", "top5_before", "top1_after", "top5_after")
        },
        "recalibration_gain_top1": _stats(df["top1_after"] - df["top1_before"]),
        "pareto_front": [str(df["id"].iloc[i]) for i in front_pos],
        "preferred_unit_counts": {
            conv: {u: int(Counter(marg[f"preferred_unit_{conv}"]).get(u, 0)) for u in MARGINAL_UNITS}
            for conv in ("paper", "sampling")
        },
        "opt_unit_counts": opt.counts(),
        "opt_agrees_with_paper_preference": int(agree),
        "slots": len(slot_names),
        "receptive_field": rf,
        "ablation": _ablation_summary(ablation),
        "cka": None if cka_summary is None else {k: cka_summary.get(k) for k in ("redundant_runs", "views")},
        "files": [FILES[r] for r in ANALYZE_FILES]
        + ([FILES["rf_vs_accuracy"]] if rf else [])
        + ([FILES["ablation"]] if ablation is not None else [])
        + ([FILES[r] for r in CKA_FILES] if cka_summary else []),
    }
    if seeds:
        summary["template_seeds"] = _seeds_summary(marg, seeds)
    atomic_write_text(run.analysis, json.dumps(summary, indent=1) + "\n")
    return summary


def _seeds_summary(marg: pd.DataFrame, seeds: list[Path]) -> dict:
    """``analysis.json["template_seeds"]``: the seed runs, how the intervals are made, and how often the
    seeds agree with the combined preferred unit."""
    return {
        "count": len(seeds),
        "runs": [p.name for p in seeds],
        "interval": interval_kind(len(seeds)),
        "preferred_agreement": {
            conv: float(marg[f"preferred_agreement_{conv}"].mean()) for conv in ("paper", "sampling")
        },
        "slots_all_seeds_agree": {
            conv: int((marg[f"preferred_agreement_{conv}"] == 1.0).sum()) for conv in ("paper", "sampling")
        },
    }


# ----------------------------------------------------------------------------- --cka


def run_cka(
    run_dir: str | Path,
    strategies: Sequence[str] = ("opt", "S"),
    num_clips: int = 64,
    batch_size: int = 16,
    threshold: float = 0.9,
    recalibrate: bool = True,
    recal_clips: int | None = None,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """CKA of a trained run: within ``strategies[0]`` (slot x slot) and between ``strategies[0]`` and
    ``strategies[1]``; writes ``cka.csv``, ``cka_within.png``, ``cka_between.png``, ``cka.json``.

    Strategy specs: ``opt`` (``opt_strategy.json`` if present, else the most probable strategy),
    ``most_probable``, a unit (uniform), a unit string ``S|ST|...`` or a strategy JSON file.
    ``num_clips``: the first views of the selection split's clip cache (``data.test_clips`` x
    ``data.test_crops`` views per video, video order); they are cut into minibatches of ``batch_size``
    (>= 4), and a short last minibatch is dropped. ``recalibrate``: recalibrate BatchNorm for each
    strategy on the fit clips the sample stage uses (``recal_clips`` videos, default 200), else use the
    template's statistics. Returns what ``cka.json`` holds."""
    if len(strategies) != 2:
        raise ValueError(f"strategies must name two strategies (within / between), got {list(strategies)}")
    if batch_size < 4 or num_clips < batch_size:
        raise ValueError(
            f"need batch_size >= 4 and num_clips >= batch_size, got {batch_size} and {num_clips}"
        )
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    _, cfg, model = load_run(run_dir)
    dev = resolve_device(device or cfg.run.device)
    model.to(dev).eval()
    d_cfg, seed = cfg.data, cfg.run.seed
    (sa, src_a), (sb, src_b) = (resolve_run_strategy(run_dir, s, model) for s in strategies)

    fit, sel_cache = selection_cache(cfg, run_dir, progress)
    sel_ds = sel_cache.dataset(d_cfg.mean, d_cfg.std)
    used = min(int(num_clips), len(sel_ds))
    if 4 <= used < batch_size:  # a small selection split: one minibatch of every view
        batch_size = used
    full = used // batch_size * batch_size
    if full == 0:
        raise ValueError(f"{len(sel_ds)} selection views: fewer than the 4 the unbiased HSIC needs")
    loader = make_loader(
        torch.utils.data.Subset(sel_ds, range(full)),
        batch_size=batch_size,
        num_workers=0,
        shuffle=False,
        seed=seed,
        drop_last=True,
    )
    views = (
        f"selection split, first {full} views ({d_cfg.test_clips} clip x {d_cfg.test_crops} crop per video, "
        f"{d_cfg.clip_len}x{d_cfg.crop_size}x{d_cfg.crop_size}), minibatches of {batch_size}"
    )

    template_bn = bn_state(model)
    bn: dict[str, dict[str, torch.Tensor] | None] = {}
    recal_videos = 0
    if recalibrate:
        recal, recal_videos = recal_loader(cfg, fit, recal_clips, progress)
        for s in (sa, sb):
            if s.id not in bn:
                load_bn_state(model, template_bn)
                model.apply_strategy(s)
                recalibrate_bn(model, recal, dev)
                bn[s.id] = bn_state(model)
        load_bn_state(model, template_bn)
        model.apply_strategy(None)
    else:
        bn = {sa.id: template_bn, sb.id: template_bn}

    within = cka_pass(model, model, sa, sa, loader, dev, bn[sa.id], bn[sa.id], batch_size)
    between = cka_pass(model, model, sa, sb, loader, dev, bn[sa.id], bn[sb.id], batch_size)
    load_bn_state(model, template_bn)

    names = model.slot_names
    rows = []
    for pair, res, (ua, ub) in (("within", within, (sa, sa)), ("between", between, (sa, sb))):
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                rows.append(
                    {
                        "pair": pair,
                        "a_slot": a,
                        "b_slot": b,
                        "a_unit": ua[i],
                        "b_unit": ub[j],
                        "cka": float(res.matrix[i, j]),
                    }
                )
    atomic_write_text(RunDir(run_dir).cka_csv, pd.DataFrame(rows).to_csv(index=False))
    plot_cka_heatmap(
        within.matrix,
        names,
        names,
        RunDir(run_dir).cka_within,
        f"CKA within {src_a.split(' ')[0]} (slot outputs; {views})",
        "slot",
        "slot",
    )
    plot_cka_heatmap(
        between.matrix,
        names,
        names,
        RunDir(run_dir).cka_between,
        f"CKA between {src_a.split(' ')[0]} and {src_b.split(' ')[0]} ({views})",
        f"{src_a.split(' ')[0]} slot",
        f"{src_b.split(' ')[0]} slot",
    )

    def describe(s: Strategy, source: str) -> dict[str, Any]:
        return {"source": source, "id": s.id, "string": str(s), "counts": s.counts()}

    diag = np.diag(between.matrix)
    info = {
        "strategies": {"a": describe(sa, src_a), "b": describe(sb, src_b)},
        "threshold": float(threshold),
        "redundant_runs": redundant_runs(within.matrix, names, threshold),
        "between_diagonal": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, diag)},
        "between_diagonal_mean": None if np.all(np.isnan(diag)) else float(np.nanmean(diag)),
        "views": views,
        "representation": "slot outputs: a dense slot's new channels (unit none: zeros, CKA NaN), a transition's "
        "pooled output; debiased linear CKA, minibatch estimator (Nguyen et al. 2021)",
        "settings": {
            "num_clips": int(num_clips),
            "clips_used": full,
            "batch_size": int(batch_size),
            "minibatches": within.batches,
            "dropped_clips": used - full,
            "recalibrate": bool(recalibrate),
            "recal_videos": recal_videos,
            "device": str(dev),
            "forward_passes": within.forward_passes + between.forward_passes,
        },
        "seconds": round(time.perf_counter() - t0, 3),
        "files": [FILES[r] for r in ("cka_csv", "cka_within", "cka_between", "cka")],
    }
    atomic_write_text(RunDir(run_dir).cka, json.dumps(info, indent=1) + "\n")
    return info


# ----------------------------------------------------------------------------- the verb


def command(args) -> int:
    options = {
        "num_clips": args.cka_clips,
        "batch_size": args.cka_batch_size,
        "threshold": args.cka_threshold,
    }
    summary = run_analyze(args.run, top_k=args.top_k, cka=args.cka, cka_options=options)
    col = summary["score_column"]
    print(
        f"{summary['strategies']} strategies; Opt {summary['opt']['strategy']} {summary['opt'][col]:.1f}% ({col})"
    )
    for src, row in summary["canonical"].items():
        print(f"  {src:<16} {row[col]:5.1f}%")
    rf = summary.get("receptive_field")
    if rf:

        def f(v):  # None: undefined (e.g. every strategy scored the same)
            return "n/a" if v is None else f"{v:+.2f}"

        print(
            f"  temporal receptive field vs score: Pearson r {f(rf['pearson_r'])}, partial r given MACs "
            f"{f(rf['partial_r_macs'])} (n = {rf['n']}); expected temporal RF {rf['expected_temporal_rf']:.1f} frames"
        )
    if summary.get("cka"):
        print(f"  CKA redundant runs (threshold {args.cka_threshold}): {summary['cka']['redundant_runs']}")
    print(f"wrote {', '.join(summary['files'])} in {args.run}")
    return 0
