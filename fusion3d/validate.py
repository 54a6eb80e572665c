"""``fusion3d validate RUN --num M``: do template scores predict stand-alone accuracy?

The paper ranks strategies by their accuracy inside the trained template and never checks that this
ranking survives training each strategy alone. This stage checks it:

1. pick ``M`` strategies from ``strategies.csv`` spread over the range of template scores (the
   nearest to ``M`` scores evenly spaced from the best to the worst, both included);
2. train each alone with the run's recipe (``fusion3d retrain``, so each lives in
   ``RUN/retrain/<id>/`` and adds a row to ``retrain.csv``; a strategy already trained alone there,
   under any label, is reused);
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.utils import atomic_write_text

VALIDATE_JSON = "validate.json"
VALIDATE_CSV = "validate.csv"
VALIDATE_PNG = "validate_scatter.png"


# ----------------------------------------------------------------------------- statistics (pure)


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n, ties get the mean of the ranks they span."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (ties in either variable corrected): (C - D) / sqrt((n0 - n1)(n0 - n2)).
    NaN when either variable is constant or there are fewer than 2 points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values, y has {len(y)}")
    n = len(x)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    s = float(np.sum(sx * sy))
    tx, ty = float(np.sum(sx != 0)), float(np.sum(sy != 0))  # pairs not tied in x / in y
    if tx == 0 or ty == 0:
        return float("nan")
    return s / np.sqrt(tx * ty)


def spearman_rho(x, y) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks. NaN for a constant variable."""
    rx, ry = average_ranks(x), average_ranks(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def permutation_p_value(stat, x, y, permutations: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of ``stat(x, y)`` under independence: the share of seeded random
    permutations of ``y`` whose |stat| reaches the observed one (with the +1 correction)."""
    observed = stat(x, y)
    if np.isnan(observed):
        return float("nan")
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    hits = sum(abs(stat(x, rng.permutation(y))) >= abs(observed) - 1e-12 for _ in range(int(permutations)))
    return (hits + 1) / (int(permutations) + 1)


def spread_picks(scores, m: int) -> list[int]:
    """Positions of ``m`` entries spread over the range of ``scores``: for ``m`` targets evenly
    spaced in value from the best score to the worst, the not yet picked entry nearest to each
    (ties: the earlier position). The best and the worst are always included; all when m >= n.
    Spacing in value rather than in rank matters when most strategies crowd at the top: a few poor
    ones then still get picked, and the test sees the whole range."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    if m < 1:
        raise ValueError(f"num must be >= 1, got {m}")
    if m >= n:
        return np.argsort(-scores, kind="stable").tolist()
    picked: list[int] = []
    for target in np.linspace(scores.max(), scores.min(), m):
        free = [i for i in range(n) if i not in picked]
        picked.append(min(free, key=lambda i: (abs(scores[i] - target), i)))
    return picked


def rank_agreement(df: pd.DataFrame, target: str = "standalone_top1", permutations: int = 10000,
                   seed: int = 0) -> dict:
    """tau and rho of each predictor column (``top1_after``, ``top1_before``, ``macs``) vs ``target``."""
    out: dict = {"n": int(len(df)), "p_values": {}}
    names = {"top1_after": "after", "top1_before": "before", "macs": "flops"}
    for col, name in names.items():
        if col not in df or df[col].isna().all():
            continue
        sub = df[[col, target]].dropna()
        x, y = sub[col].to_numpy(float), sub[target].to_numpy(float)
        out[f"kendall_tau_{name}"] = kendall_tau_b(x, y)
        out[f"spearman_rho_{name}"] = spearman_rho(x, y)
        out["p_values"][f"kendall_tau_{name}"] = permutation_p_value(kendall_tau_b, x, y, permutations, seed)
        out["p_values"][f"spearman_rho_{name}"] = permutation_p_value(spearman_rho, x, y, permutations, seed)
    return out


# ----------------------------------------------------------------------------- the plot


def plot_validation(df: pd.DataFrame, stats: dict, path: Path, measured_on: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fusion3d.utils import save_figure

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4))
    y = df["standalone_top1"]
    if "top1_before" in df and df["top1_before"].notna().any():
        ax.scatter(df["top1_before"], y, facecolors="none", edgecolors="tab:gray", label="template, before BN recal.")
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

    ax.set_title(f"tau after {fmt('kendall_tau_after')}, before {fmt('kendall_tau_before')}  "
                 f"(n = {stats['n']})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    bx.scatter(df["macs"] / 1e6, y, color="tab:orange")
    bx.set_xlabel("MMACs per clip")
    bx.set_ylabel("top-1 trained alone (%)")
    bx.set_title(f"FLOPs-only ranking: tau {fmt('kendall_tau_flops')}", fontsize=10)
    fig.suptitle(f"Do template scores predict stand-alone accuracy? ({measured_on})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


# ----------------------------------------------------------------------------- the stage


def _retrain_one(run_dir: str, spec: str, overrides: list[str]) -> dict:
    from fusion3d.retrain import run_retrain

    return run_retrain(run_dir, spec, overrides)


def run_validate(run_dir: str | Path, num: int = 8, workers: int = 1, overrides: list[str] = (),
                 permutations: int = 10000) -> dict:
    """Train ``num`` strategies spread over the template scores alone and measure rank agreement.
    ``workers`` retrains run in parallel processes (each with the run's ``run.threads``)."""
    from fusion3d.models.strategy import Strategy
    from fusion3d.retrain import RETRAIN_CSV
    from fusion3d.sample import STRATEGIES_CSV, read_strategies

    run_dir = Path(run_dir)
    csv_path = run_dir / STRATEGIES_CSV
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} does not exist: run `fusion3d sample {run_dir}` first")
    table = read_strategies(csv_path)
    if len(table) < 2:
        raise ValueError(f"{csv_path} has {len(table)} strategies; validation needs at least 2")
    score = "top1_after" if table["top1_after"].notna().any() else "top1_before"
    picked = table.iloc[spread_picks(table[score].to_numpy(float), int(num))].reset_index(drop=True)

    from fusion3d.config import load_config

    model_name = load_config(run_dir / "config.yaml").model.name
    out_dir = run_dir / "validate"
    out_dir.mkdir(exist_ok=True)
    retrain_path = run_dir / RETRAIN_CSV

    def done_rows() -> pd.DataFrame:
        if not retrain_path.is_file():
            return pd.DataFrame(columns=["id", "top1", "top5", "label", "measured_on", "complete"])
        r = pd.read_csv(retrain_path, dtype={"id": str})
        same_model = r["model"].fillna(model_name) == model_name if "model" in r else True
        return r[(r["complete"].astype(str) == "True") & same_model]

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
            with ProcessPoolExecutor(max_workers=min(int(workers), len(todo)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
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
    measured_on = (f"template: {picked['views'].iloc[0]}; trained alone: {done.loc[picked['id'].iloc[0], 'measured_on']}")
    stats = rank_agreement(picked, permutations=permutations)
    cols = ["id", "strategy", "source", "top1_before", "top1_after", "macs", "params", "standalone_top1",
            "standalone_top5", "retrain_label"]
    atomic_write_text(run_dir / VALIDATE_CSV, picked[cols].to_csv(index=False))
    result = {**stats, "score_column": score, "measured_on": measured_on, "strategies": picked["id"].tolist(),
              "permutations": int(permutations),
              "p_value_method": "two-sided permutation test, seed 0"}
    result = json.loads(json.dumps(result, default=float).replace("NaN", "null"))
    atomic_write_text(run_dir / VALIDATE_JSON, json.dumps(result, indent=1) + "\n")
    plot_validation(picked, stats, run_dir / VALIDATE_PNG, measured_on)
    return result

