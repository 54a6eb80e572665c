"""``fusion3d analyze``: marginals, Figure 4, accuracy vs cost, and the Opt strategy of a run.

Reads ``strategies.csv`` (written by ``fusion3d sample``) and the template's drop probabilities
(``checkpoint.pt``), and writes into the run directory:

- ``marginals.csv``: per slot, drop / keep probabilities and unit marginals in both conventions
  (``fusion3d.marginals.marginals_table``);
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
  (``fusion3d.receptive_field``); the expected temporal receptive field under the learned drop
  probabilities goes to ``analysis.json``;
- with ``--cka``: ``cka.csv``, ``cka_within.png``, ``cka_between.png``, ``cka.json``, debiased
  minibatch CKA between slots within Opt and between Opt and all-S (``fusion3d.cka.run_cka``);
- ``analysis.json``: a summary (Opt, canonical scores, sampled mean/std, preferred-unit counts,
  receptive-field statistics).

The score is ``top1_after`` (after BatchNorm recalibration) when the sample stage recalibrated,
else ``top1_before``. Opt is the best strategy by that score among every scored strategy
(sampled, canonical and most probable), ties broken by fewer MACs, then by id. Every file is
written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.marginals import MARGINAL_UNITS, marginals_table, pareto_front
from fusion3d.models.strategy import UNITS, Strategy
from fusion3d.utils import atomic_write_text, save_figure

CANONICAL_SOURCES = ("canonical_S", "canonical_ST", "canonical_S+ST", "most_probable")
UNIT_COLORS = {"S": "#4C72B0", "ST": "#DD8452", "S+ST": "#55A868", "none": "#8C8C8C"}


def _read_strategies(run_dir: Path) -> pd.DataFrame:
    from fusion3d.sample import STRATEGIES_CSV, read_strategies

    path = run_dir / STRATEGIES_CSV
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `fusion3d sample {run_dir}` first")
    df = read_strategies(path)
    if df.empty:
        raise ValueError(f"{path} holds no scored strategy yet: run `fusion3d sample {run_dir}`")
    return df


def _template(run_dir: Path):
    """The run's trained network (the template, or a backbone trained with v-DropPath)."""
    from fusion3d.sample import load_run

    return load_run(run_dir)[2]


def _receptive_field(df: pd.DataFrame, model, score: str, run_dir: Path) -> dict | None:
    """``rf_vs_accuracy.png`` and its statistics, plus the expected temporal receptive field under the
    learned drop probabilities; None for a network without a receptive-field graph."""
    from fusion3d.receptive_field import expected_temporal_rf, plot_rf_vs_accuracy
    from fusion3d.sample import RF_COLUMNS, _with_rf_columns

    try:
        if df[list(RF_COLUMNS)].isna().all().all():  # a file from before the columns existed
            df = _with_rf_columns(df, model)
        if df["rf_t_max"].isna().all():
            return None
        stats = plot_rf_vs_accuracy(df, run_dir / "rf_vs_accuracy.png", score)
        stats["expected_temporal_rf"] = expected_temporal_rf(model)
        stats["temporal_rf_range"] = [int(df["rf_t_max"].min()), int(df["rf_t_max"].max())]
    except TypeError:  # no receptive-field graph for this network
        return None
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in stats.items()}


def _figure4(marg: pd.DataFrame, opt: Strategy, convention: str, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    n = len(marg)
    x = np.arange(n)
    width = 0.27
    offsets = {"S": -width, "ST": 0.0, "S+ST": width}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * n + 2.5), 4.2))
    for u, off in offsets.items():
        ax.bar(x + off, marg[f"P_{u}_{convention}"], width, label=f"P({u})", color=UNIT_COLORS[u])
    mx, my = [], []
    for i, u in enumerate(opt.units):
        if u == "none":
            mx.append(float(i))
            my.append(0.0)
        else:
            mx.append(i + offsets[u])
            my.append(float(marg[f"P_{u}_{convention}"].iloc[i]))
    ax.plot(mx, my, "-", color="black", lw=1.0, alpha=0.6)
    ax.plot(mx, my, "o", color="black", ms=5, label="Opt strategy's unit")
    none_x = [mx[i] for i, u in enumerate(opt.units) if u == "none"]
    if none_x:
        ax.plot(none_x, [0.0] * len(none_x), "x", color="red", ms=8, mew=2, label="Opt: none")
    ax.set_xticks(x)
    ax.set_xticklabels(marg["slot"], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("marginal probability")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.32 if n > 8 else -0.25))
    save_figure(fig, path)
    plt.close(fig)


def _acc_vs_flops(df: pd.DataFrame, score: str, front: list[int], opt_id: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    g = df["macs"].to_numpy(dtype=float) / 1e9
    acc = df[score].to_numpy(dtype=float)
    sampled = (df["source"] == "sampled").to_numpy()
    ax.scatter(g[sampled], acc[sampled], s=14, color="#4C72B0", alpha=0.6, label="sampled")
    fr = sorted(front, key=lambda i: g[i])
    ax.plot(g[fr], acc[fr], "-o", color="#C44E52", ms=5, lw=1.2, label="Pareto front")
    for i, row in df.reset_index(drop=True).iterrows():
        if row["source"] in CANONICAL_SOURCES:
            ax.scatter([g[i]], [acc[i]], s=50, marker="s", color="#55A868", edgecolor="black", zorder=3)
            ax.annotate(row["source"].replace("canonical_", "all-").replace("_", " "), (g[i], acc[i]),
                        textcoords="offset points", xytext=(5, 4), fontsize=8)
        if row["id"] == opt_id:
            ax.scatter([g[i]], [acc[i]], s=140, marker="*", color="gold", edgecolor="black", zorder=4, label="Opt")
    ax.set_xlabel("GMACs per clip")
    ax.set_ylabel(f"selection top-1 (%) [{score}]")
    ax.set_title(f"{len(df)} strategies: accuracy vs cost", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)
    plt.close(fig)


def _acc_hist(df: pd.DataFrame, score: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    vals = df.loc[df["source"] == "sampled", score].dropna().to_numpy(dtype=float)
    every = df[score].dropna().to_numpy(dtype=float)
    lo, hi = (float(every.min()), float(every.max())) if len(every) else (0.0, 100.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    if len(vals):
        bins = np.linspace(lo, hi, min(30, max(5, len(vals) // 3)) + 1)
        ax.hist(vals, bins=bins, color="#4C72B0", alpha=0.75, label=f"sampled ({len(vals)})")
    marks = {"canonical_S": ("#1f77b4", "--"), "canonical_ST": ("#ff7f0e", "-."), "canonical_S+ST": ("#2ca02c", ":"),
             "most_probable": ("#d62728", (0, (5, 1)))}
    for source, (color, style) in marks.items():
        row = df[df["source"] == source]
        if len(row):
            v = float(row[score].iloc[0])
            ax.axvline(v, color=color, ls=style, lw=1.8, label=f"{source} ({v:.1f})")
    ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.set_xlabel(f"selection top-1 (%) [{score}]")
    ax.set_ylabel("strategies")
    ax.set_title("accuracy of sampled strategies", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)
    plt.close(fig)


def _stats(values: pd.Series) -> dict:
    v = values.dropna().to_numpy(dtype=float)
    if not len(v):
        return {"count": 0}
    return {"count": int(len(v)), "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max())}


def _row_summary(row: pd.Series) -> dict:
    out = {"id": str(row["id"]), "strategy": str(row["strategy"]), "source": str(row["source"])}
    for c in ("top1_before", "top5_before", "top1_after", "top5_after"):
        v = float(row[c])
        out[c] = None if np.isnan(v) else v
    out.update({"macs": int(row["macs"]), "params": int(row["params"])})
    out.update({f"n_{u}": int(row[f"n_{u}"]) for u in UNITS})
    return out


def run_analyze(run_dir: str | Path, top_k: int = 10, cka: bool = False, cka_options: dict | None = None) -> dict:
    """Write the analysis files of a sampled run (see the module docstring); returns ``analysis.json``.
    ``cka``: also measure layer-by-layer representation similarity (``fusion3d.cka.run_cka``, with
    ``cka_options``), after ``opt_strategy.json`` is written."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    df = _read_strategies(run_dir)
    model = _template(run_dir)
    drop_probs, slot_names = model.drop_probs().numpy(), model.slot_names
    marg = marginals_table(drop_probs, slot_names)
    atomic_write_text(run_dir / "marginals.csv", marg.to_csv(index=False))

    score = "top1_after" if df["top1_after"].notna().any() else "top1_before"
    top5 = score.replace("top1", "top5")
    ranked = df.assign(_score=df[score].fillna(-np.inf)).sort_values(
        ["_score", "macs", "id"], ascending=[False, True, True], kind="stable").drop(columns="_score")
    opt_row = ranked.iloc[0]
    opt = Strategy.from_string(opt_row["strategy"])
    if len(opt) != len(slot_names):
        raise ValueError(f"strategies.csv holds {len(opt)}-slot strategies, the template has {len(slot_names)} slots")
    opt.save(run_dir / "opt_strategy.json", slot_names)

    top = ranked.head(top_k).reset_index(drop=True)
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    atomic_write_text(run_dir / "top_strategies.csv", top.to_csv(index=False))

    front_pos = pareto_front(df["macs"].to_numpy(dtype=float), df[score].to_numpy(dtype=float))
    _figure4(marg, opt, "paper", run_dir / "figure4.png",
             "Unit marginals per slot, paper convention (q = 1 - sqrt(p), Eq. 7); markers: Opt strategy")
    _figure4(marg, opt, "sampling", run_dir / "figure4_sampling.png",
             "Unit marginals per slot, sampling convention (q = 1 - p); markers: Opt strategy")
    _acc_vs_flops(df, score, front_pos, opt.id, run_dir / "acc_vs_flops.png")
    _acc_hist(df, score, run_dir / "acc_hist.png")
    rf = _receptive_field(df, model, score, run_dir)
    cka_summary = None
    if cka:
        from fusion3d.cka import run_cka

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
        "canonical": {src: _row_summary(df[df["source"] == src].iloc[0]) for src in CANONICAL_SOURCES
                      if (df["source"] == src).any()},
        "sampled_scores": {c: _stats(sampled[c]) for c in ("top1_before", "top5_before", "top1_after", "top5_after")},
        "recalibration_gain_top1": _stats(df["top1_after"] - df["top1_before"]),
        "pareto_front": [str(df["id"].iloc[i]) for i in front_pos],
        "preferred_unit_counts": {conv: {u: int(Counter(marg[f"preferred_unit_{conv}"]).get(u, 0))
                                         for u in MARGINAL_UNITS} for conv in ("paper", "sampling")},
        "opt_unit_counts": opt.counts(),
        "opt_agrees_with_paper_preference": int(agree),
        "slots": len(slot_names),
        "receptive_field": rf,
        "cka": None if cka_summary is None else {k: cka_summary.get(k) for k in ("redundant_runs", "views")},
        "files": ["marginals.csv", "figure4.png", "figure4_sampling.png", "acc_vs_flops.png", "acc_hist.png",
                  "top_strategies.csv", "opt_strategy.json", "analysis.json"]
        + (["rf_vs_accuracy.png"] if rf else []) + (["cka.csv", "cka_within.png", "cka_between.png", "cka.json"]
                                                     if cka_summary else []),
    }
    atomic_write_text(run_dir / "analysis.json", json.dumps(summary, indent=1) + "\n")
    return summary
