"""Figures of the analysis: Figure 4 (unit marginals per slot), accuracy vs MACs, the accuracy
histogram. Pure functions of tables; each writes one PNG atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.models.strategy import Strategy
from fusion3d.models.units import CANONICAL_SOURCES
from fusion3d.utils import save_figure

UNIT_COLORS = {"S": "#4C72B0", "ST": "#DD8452", "S+ST": "#55A868", "none": "#8C8C8C"}


def figure4(marg: pd.DataFrame, opt: Strategy, convention: str, path: Path, title: str) -> None:
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


def acc_vs_macs(df: pd.DataFrame, score: str, front: list[int], opt_id: str, path: Path) -> None:
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
            ax.annotate(
                row["source"].replace("canonical_", "all-").replace("_", " "),
                (g[i], acc[i]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
        if row["id"] == opt_id:
            ax.scatter(
                [g[i]], [acc[i]], s=140, marker="*", color="gold", edgecolor="black", zorder=4, label="Opt"
            )
    ax.set_xlabel("GMACs per clip")
    ax.set_ylabel(f"selection top-1 (%) [{score}]")
    ax.set_title(f"{len(df)} strategies: accuracy vs cost", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)


def acc_hist(df: pd.DataFrame, score: str, path: Path) -> None:
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
    marks = {
        "canonical_S": ("#1f77b4", "--"),
        "canonical_ST": ("#ff7f0e", "-."),
        "canonical_S+ST": ("#2ca02c", ":"),
        "most_probable": ("#d62728", (0, (5, 1))),
    }
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
