"""The figures a report draws from a run's training log: the training curves, the drop probability of
every path per epoch, and (depth gates) P(slot kept) per slot. Each is written atomically with
``fusion3d.utils.save_figure`` and redrawn only when one of its inputs is newer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusion3d.analysis.marginals import plot_depth
from fusion3d.report import fmt
from fusion3d.run.io import RunData
from fusion3d.utils import save_figure

# The files the training figures are drawn from (roles of fusion3d.run.layout).
FIGURE_INPUTS = ("metrics", "summary", "config")
DPI = 100


def _shade_phases(ax, epochs: list[dict], warmup: int | None) -> None:
    """Warm-up and v-DropPath phases as background spans (epoch e covers (e-1, e])."""
    for phase, color, label in (
        ("warmup", "#DCE6F2", "warm-up (gates off)"),
        ("vdroppath", "#FBE3D0", "v-DropPath"),
        ("fixed", "#E4EFE0", "strategy alone"),
    ):
        es = [int(r["epoch"]) for r in epochs if r.get("phase") == phase]
        if es:
            ax.axvspan(min(es) - 1, max(es), color=color, alpha=0.7, lw=0, label=label, zorder=0)
    if warmup and any(r.get("phase") == "vdroppath" for r in epochs):
        ax.axvline(warmup, color="#999999", lw=0.8, ls=":")


def up_to_date(path: Path, run: RunData, *newer_than: Path) -> bool:
    """``path`` exists and is newer than every file it is drawn from (then it is not drawn again):
    the run's training files and ``newer_than`` (those that exist)."""
    if not path.is_file():
        return False
    inputs = [p for p in (*(run.files.file(r) for r in FIGURE_INPUTS), *newer_than) if p.is_file()]
    return all(path.stat().st_mtime >= p.stat().st_mtime for p in inputs)


def _plot_epochs(axes, run: RunData) -> None:
    """The epoch means: loss and ce, regulariser, train accuracy and validation top-1."""
    ep = run.epochs
    x = [r["epoch"] for r in ep]
    axes[0].plot(x, [r.get("loss") for r in ep], "-o", color="#4C72B0", ms=3, label="loss (epoch mean)")
    axes[0].plot(x, [r.get("ce") for r in ep], "--s", color="#C44E52", ms=3, label="cross-entropy")
    axes[1].plot(x, [r.get("reg") for r in ep], "-o", color="#8172B2", ms=3, label="regulariser")
    axes[2].plot(
        x, [r.get("train_acc") for r in ep], "-o", color="#55A868", ms=3, label="train acc (training batches)"
    )
    vx = [r["epoch"] for r in ep if fmt.isnum(r.get("val_top1"))]
    if vx:
        axes[2].plot(
            vx,
            [r["val_top1"] for r in ep if fmt.isnum(r.get("val_top1"))],
            "-D",
            color="#DD8452",
            ms=4,
            label=f"val top-1 ({run.cfg('data', 'eval_subset', default='eval')} subset)",
        )


def training_figure(run: RunData, path: Path) -> Path | None:
    """The training curves: loss and ce, reg, train_acc and val_top1 per epoch (steps faint)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ep, steps = run.epochs, run.steps
    if not ep and not steps:
        return None
    fig = Figure(figsize=(13.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax in axes:
        _shade_phases(ax, ep, run.warmup_epochs)
    if steps:
        sx = [r.get("epoch", 0) for r in steps]
        axes[0].plot(
            sx, [r.get("loss") for r in steps], color="#4C72B0", alpha=0.25, lw=0.8, label="loss per step"
        )
    if ep:
        _plot_epochs(axes, run)
    axes[0].set_title("loss (training batches)", fontsize=10)
    axes[1].set_title("v-DropPath regulariser", fontsize=10)
    axes[2].set_title("accuracy (%)", fontsize=10)
    axes[2].set_ylim(0, 100)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path, dpi=DPI)
    return path


def drop_probs_figure(run: RunData, path: Path) -> Path | None:
    """The drop probabilities: p_S (solid, left) and p_T (dashed, right) per slot per epoch."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ep = [r for r in run.epochs if r.get("drop_probs")]
    if not ep or not run.vdroppath_reached():
        return None
    p = np.asarray([r["drop_probs"] for r in ep], dtype=float)  # epochs x slots x 2
    x = [int(r["epoch"]) for r in ep]
    init = run.cfg("model", "drop_init")
    if fmt.isnum(init) and x[0] == 1:
        p = np.concatenate([np.full((1, *p.shape[1:]), float(init)), p])
        x = [0, *x]
    n = p.shape[1]
    names = run.slot_names(n)
    cmap = colormaps["viridis"]
    colors = [cmap(i / max(1, n - 1) * 0.9) for i in range(n)]
    fig = Figure(figsize=(12.5, 4.0), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for k, (ax, title, style) in enumerate(zip(axes, ("S path (1x1x1)", "T path (3x1x1)"), ("-", "--"))):
        _shade_phases(ax, ep, run.warmup_epochs)
        for i in range(n):
            ax.plot(x, p[:, i, k], style, color=colors[i], lw=1.3, label=names[i] if n <= 12 else None)
        ax.set_title(f"drop probability, {title}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("p (drop)")
    top = float(np.nanmax(p))
    axes[0].set_ylim(0, min(1.0, max(0.2, top * 1.15)))
    if n <= 12:
        fig.legend(
            *axes[1].get_legend_handles_labels(),
            fontsize=7,
            loc="outside right upper",
            title="slot",
            title_fontsize=8,
        )
    else:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        sm = ScalarMappable(norm=Normalize(0, (n - 1) / 0.9), cmap=cmap)
        fig.colorbar(sm, ax=list(axes), label="slot index (depth)")
    save_figure(fig, path, dpi=DPI)
    return path


def depth_figure(run: RunData, path: Path) -> Path | None:
    """P(slot kept) per slot from the run's depth drop probabilities, CKA's redundant runs shaded."""
    d, _ = run.depth_probs()
    if d is None:
        return None
    names = run.slot_names(len(d))
    return plot_depth(
        d,
        names,
        path,
        redundant_runs=run.cka_runs() or [],
        title=f"Depth gate: P(slot kept) = 1 - p_D per slot ({run.name})",
    )


def training_png(run: RunData) -> Path | None:
    """The run's training-curves figure, drawn when missing or out of date; None without records."""
    png = run.files.training_curves
    return png if up_to_date(png, run) else training_figure(run, png)


def drop_probs_png(run: RunData) -> Path | None:
    """The run's drop-probabilities figure, drawn when missing or out of date; None before v-DropPath."""
    png = run.files.drop_probs
    return png if up_to_date(png, run) else drop_probs_figure(run, png)


def depth_png(run: RunData) -> Path | None:
    """The run's depth figure, drawn when missing or older than its inputs (the CKA file included)."""
    png = run.files.depth
    return png if up_to_date(png, run, run.files.cka) else depth_figure(run, png)
