"""``fusion3d agreement RUN --num M`` (once ``validate``): do template scores predict stand-alone accuracy?

The paper ranks strategies by their accuracy inside the trained template and never checks that this
ranking survives training each strategy alone. This stage checks it:

1. pick ``M`` strategies from ``strategies.csv`` spread over the range of template scores (the
   nearest to ``M`` scores evenly spaced from the best to the worst, both included);
2. train each alone with the run's recipe (``fusion3d retrain``, so each lives in
   ``RUN/retrain/<id>/`` and adds a row to ``retrain.csv``; a strategy already trained alone there,
   under any label, is reused; rows of extra training seeds, ``<label>#seed<s>``, are not used);
3. report Kendall's tau-b and Spearman's rho between the template score (before and after BatchNorm
   recalibration) and the stand-alone top-1, next to the same statistics for a FLOPs-only ranking
   (more MACs = better), with permutation p-values, in ``validate.json``, ``validate.csv`` and the
   scatter plot ``validate_scatter.png``.

Template scores are measured on the selection split and stand-alone accuracy on
``data.eval_subset``: two different sets of videos, so the correlation is not inflated by sharing
noise. The statistics are pure functions below, tested against closed forms.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.analysis.stats import agreement, spread_picks
from fusion3d.engine.standalone import run_retrain
from fusion3d.models.strategy import Strategy
from fusion3d.run.layout import RunDir
from fusion3d.run.loading import run_config
from fusion3d.run.retrains import read_retrain, reusable_rows
from fusion3d.run.strategies import read_strategies
from fusion3d.utils import atomic_write_text, save_figure

# ----------------------------------------------------------------------------- statistics (pure)


def rank_agreement(
    df: pd.DataFrame,
    target: str = "standalone_top1",
    permutations: int = 10000,
    seed: int = 0,
    n_boot: int = 2000,
) -> dict:
    """tau and rho of each predictor column (``top1_after``, ``top1_before``, ``macs``) vs ``target``,
    with p-values (exact over every permutation for n <= 8, else seeded Monte Carlo), bootstrap 95%
    intervals, and a plain-words warning when ``n`` strategies cannot support a conclusion.
    (The MACs ranking keeps the key suffix ``flops`` that earlier files used.)"""
    out: dict = {"n": int(len(df)), "p_values": {}, "p_methods": {}, "intervals": {}}
    names = {"top1_after": "after", "top1_before": "before", "macs": "flops"}
    for col, name in names.items():
        if col not in df or df[col].isna().all():
            continue
        sub = df[[col, target]].dropna()
        r = agreement(sub[col].to_numpy(float), sub[target].to_numpy(float), permutations, seed, n_boot)
        out["tau_critical"] = r["tau_critical"]
        for stat in ("kendall_tau", "spearman_rho"):
            key = f"{stat}_{name}"
            out[key] = r[stat]["value"]
            out["p_values"][key] = r[stat]["p"]
            out["p_methods"][key] = r[stat]["p_method"]
            out["intervals"][key] = [r[stat]["ci_low"], r[stat]["ci_high"]]
    out["warning"] = power_warning(out["n"], out.get("tau_critical"))
    return out


def power_warning(n: int, tau_critical: float | None) -> str | None:
    """A sentence when ``n`` strategies are too few for a rank correlation to mean much, else None."""
    if n < 5:
        return (
            f"with {n} strategies no Kendall tau can reach p < 0.05: the numbers describe these strategies "
            "and support no conclusion; train more (--num 12 or more)"
        )
    if n < 12:
        return (
            f"with {n} strategies only |tau| >= {tau_critical:.2f} reaches p < 0.05, and the 95% intervals span "
            "about one unit: read the intervals, not the point values; --num 12 or more narrows them"
        )
    return None


# ----------------------------------------------------------------------------- the plot


def plot_validation(df: pd.DataFrame, stats: dict, path: Path, measured_on: str) -> None:
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4))
    y = df["standalone_top1"]
    if "top1_before" in df and df["top1_before"].notna().any():
        ax.scatter(
            df["top1_before"], y, facecolors="none", edgecolors="tab:gray", label="template, before BN recal."
        )
        if "top1_after" in df and df["top1_after"].notna().any():
            for xb, xa, yy in zip(df["top1_before"], df["top1_after"], y):
                ax.plot([xb, xa], [yy, yy], color="0.8", lw=0.8, zorder=0)
    if "top1_after" in df and df["top1_after"].notna().any():
        ax.scatter(df["top1_after"], y, color="tab:blue", label="template, after BN recal.")
    ax.set_xlabel("top-1 inside the template (%, selection split)")
    ax.set_ylabel("top-1 trained alone (%, eval split)")

    def fmt(key):
        v = stats.get(key)
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:+.2f}"

    ax.set_title(
        f"tau after {fmt('kendall_tau_after')}, before {fmt('kendall_tau_before')}  (n = {stats['n']})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower right")
    bx.scatter(df["macs"] / 1e6, y, color="tab:orange")
    bx.set_xlabel("MMACs per clip")
    bx.set_ylabel("top-1 trained alone (%)")
    bx.set_title(f"FLOPs-only ranking: tau {fmt('kendall_tau_flops')}", fontsize=10)
    fig.suptitle(f"Do template scores predict stand-alone accuracy? ({measured_on})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- the stage


def _retrain_one(run_dir: str, spec: str, overrides: list[str]) -> dict:
    return run_retrain(run_dir, spec, overrides)


def run_validate(
    run_dir: str | Path, num: int = 8, workers: int = 1, overrides: list[str] = (), permutations: int = 10000
) -> dict:
    """Train ``num`` strategies spread over the template scores alone and measure rank agreement.
    ``workers`` retrains run in parallel processes (each with the run's ``run.threads``)."""
    run = RunDir(run_dir)
    run_dir = run.path
    csv_path = run.strategies
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} does not exist: run `fusion3d sample {run_dir}` first")
    table = read_strategies(csv_path)
    if len(table) < 2:
        raise ValueError(f"{csv_path} has {len(table)} strategies; validation needs at least 2")
    score = "top1_after" if table["top1_after"].notna().any() else "top1_before"
    picked = table.iloc[spread_picks(table[score].to_numpy(float), int(num))].reset_index(drop=True)

    model_name = run_config(run_dir).model.name
    out_dir = run.agreement_dir
    out_dir.mkdir(exist_ok=True)
    retrain_path = run.retrain

    def done_rows() -> pd.DataFrame:
        if not retrain_path.is_file():
            return pd.DataFrame(columns=["id", "top1", "top5", "label", "measured_on", "complete"])
        return reusable_rows(read_retrain(retrain_path), model_name)

    have = set(done_rows()["id"])
    todo = []
    for row in picked.itertuples(index=False):
        if row.id in have:
            continue
        path = out_dir / f"{row.id}.json"
        Strategy.from_string(row.strategy).save(path)
        todo.append(str(path))
    if todo:
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(
                max_workers=min(int(workers), len(todo)), mp_context=multiprocessing.get_context("spawn")
            ) as pool:
                for f in [pool.submit(_retrain_one, str(run_dir), spec, list(overrides)) for spec in todo]:
                    f.result()
        else:
            for spec in todo:
                _retrain_one(str(run_dir), spec, list(overrides))

    done = done_rows().drop_duplicates("id", keep="last").set_index("id")
    missing = [i for i in picked["id"] if i not in done.index]
    if missing:
        raise RuntimeError(f"strategies {missing} have no complete stand-alone run in {retrain_path}")
    picked["standalone_top1"] = [float(done.loc[i, "top1"]) for i in picked["id"]]
    picked["standalone_top5"] = [float(done.loc[i, "top5"]) for i in picked["id"]]
    picked["retrain_label"] = [str(done.loc[i, "label"]) for i in picked["id"]]
    measured_on = (
        f"template: {picked['views'].iloc[0]}; trained alone: {done.loc[picked['id'].iloc[0], 'measured_on']}"
    )
    stats = rank_agreement(picked, permutations=permutations)
    cols = [
        "id",
        "strategy",
        "source",
        "top1_before",
        "top1_after",
        "macs",
        "params",
        "standalone_top1",
        "standalone_top5",
        "retrain_label",
    ]
    atomic_write_text(run.agreement_csv, picked[cols].to_csv(index=False))
    result = {
        **stats,
        "score_column": score,
        "measured_on": measured_on,
        "strategies": picked["id"].tolist(),
        "permutations": int(permutations),
        "p_value_method": "two-sided permutation test: exact over every permutation for n <= 8, else "
        "seeded Monte Carlo (seed 0)",
    }
    result = json.loads(json.dumps(result, default=float).replace("NaN", "null"))
    atomic_write_text(run.agreement, json.dumps(result, indent=1) + "\n")
    plot_validation(picked, stats, run.agreement_scatter, measured_on)
    return result


# ----------------------------------------------------------------------------- the verb


def command(args) -> int:
    t0 = time.time()
    r = run_validate(
        args.run, num=args.num, workers=args.workers, overrides=args.overrides, permutations=args.permutations
    )

    def f(key):
        v = r.get(key)
        if v is None:
            return "n/a"
        lo, hi = r.get("intervals", {}).get(key, (None, None))
        ci = "" if lo is None or hi is None else f" [{lo:+.2f}, {hi:+.2f}]"
        return f"{v:+.3f}{ci} (p {r['p_values'].get(key, float('nan')):.3f})"

    print(f"{r['n']} strategies trained alone in {time.time() - t0:.1f}s; {r['measured_on']}")
    print(
        f"  Kendall tau  template after BN recal {f('kendall_tau_after')}, before {f('kendall_tau_before')}, "
        f"MACs only {f('kendall_tau_flops')}"
    )
    print(
        f"  Spearman rho template after BN recal {f('spearman_rho_after')}, before {f('spearman_rho_before')}, "
        f"MACs only {f('spearman_rho_flops')}"
    )
    if r.get("warning"):
        print(f"  warning: {r['warning']}")
    run = RunDir(args.run)
    print(f"wrote {run.agreement.name}, {run.agreement_csv.name}, {run.agreement_scatter.name} in {args.run}")
    return 0
