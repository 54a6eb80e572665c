"""Verdicts in numbers: which path type the learned drop probabilities prefer, whether they have moved
from their initial value, whether temporal units pay off in accuracy beyond binomial noise, and whether
a trained template collapsed (``collapse_warnings``).

Pure numpy on arrays and plain numbers; the report (``fusion3d.report``) turns them into sentences.
"""

from __future__ import annotations

import math

import numpy as np

# A path type is "preferred" when it is dropped less in most slots AND the mean drop probabilities differ
# by at least this much (absolute, and relative to their average): tiny differences are not a preference.
PREF_MIN_DIFF, PREF_REL_DIFF = 0.005, 0.10
# Drop probabilities that moved less than this from their initial value have barely been learned.
BARELY_MOVED = 0.05


def path_preference(p: np.ndarray) -> dict:
    """Of a (slots x 2) array of drop probabilities (p_S, p_T): ``n`` slots, ``s_gt`` / ``t_gt`` slots
    where p_S > p_T / p_T > p_S, the means ``mean_s`` / ``mean_t``, and ``pref``: ``"temporal"`` (the
    S path is dropped more), ``"spatial"`` or ``"none"``."""
    n = len(p)
    s_gt = int((p[:, 0] > p[:, 1]).sum())
    t_gt = int((p[:, 1] > p[:, 0]).sum())
    ms, mt = float(p[:, 0].mean()), float(p[:, 1].mean())
    clear = abs(ms - mt) >= max(PREF_MIN_DIFF, PREF_REL_DIFF * (ms + mt) / 2)
    if s_gt > n / 2 and ms > mt and clear:
        pref = "temporal"
    elif t_gt > n / 2 and mt > ms and clear:
        pref = "spatial"
    else:
        pref = "none"
    return {"n": n, "s_gt": s_gt, "t_gt": t_gt, "mean_s": ms, "mean_t": mt, "pref": pref}


def barely_moved(p: np.ndarray, init: float) -> bool:
    """Every drop probability is still within ``BARELY_MOVED`` of its initial value ``init``."""
    return float(np.abs(p - float(init)).max()) < BARELY_MOVED


def accuracy_gap(spatial: float, temporal: dict[str, float], n_videos: int | None) -> dict:
    """The spatial strategy's accuracy (percent) against the best of the ``temporal`` ones (name ->
    percent), judged against binomial noise on ``n_videos`` videos: ``gap`` (temporal minus spatial,
    points), ``tname`` (the best temporal one), ``noise`` (two standard errors of the difference, None
    without ``n_videos``) and ``kind``: ``"temporal"`` (the gap is above the noise), ``"spatial"``
    (below minus the noise) or ``"none"``."""
    s = float(spatial)
    tname, t = max(((k, float(x)) for k, x in temporal.items()), key=lambda kv: kv[1])
    gap, n = t - s, n_videos
    noise = None
    if n:
        noise = 200 * math.sqrt((s / 100) * (1 - s / 100) / n + (t / 100) * (1 - t / 100) / n)
        thr = noise
    else:
        thr = 0.0
    kind = "temporal" if gap > thr else ("spatial" if gap < -thr else "none")
    return {"gap": gap, "tname": tname, "noise": noise, "kind": kind}


def at_chance(top1: float, num_classes: int, n_videos: int) -> bool:
    """Whether a top-1 accuracy (percent) measured on ``n_videos`` videos lies within two binomial standard
    errors of chance (``100 / num_classes``)."""
    c = 1.0 / num_classes
    return abs(float(top1) / 100.0 - c) <= 2.0 * math.sqrt(c * (1.0 - c) / n_videos)


# What usually prevents a collapse (train prints it after each warning, the report beside it).
COLLAPSE_ADVICE = "a smaller train.k (or train.k_auto), a smaller train.logit_lr or fewer v-DropPath epochs usually prevents it"


def collapse_warnings(
    drop_probs: np.ndarray, val_top1: float | None, num_classes: int, n_videos: int
) -> list[str]:
    """One sentence per sign that a trained template carries no information (empty when there is none):
    its last validation accuracy ``val_top1`` (percent, on ``n_videos`` videos) is at chance, or
    v-DropPath dropped every path (``drop_probs``, ``(slots, 2)``: both paths of every slot above 0.5,
    so the most probable strategy computes nothing)."""
    out = []
    if (
        val_top1 is not None
        and n_videos > 0
        and num_classes > 1
        and at_chance(val_top1, num_classes, n_videos)
    ):
        out.append(
            f"the template's last validation accuracy {float(val_top1):.1f}% is at chance "
            f"({100.0 / num_classes:.1f}% for {num_classes} classes, within two binomial standard errors on "
            f"{n_videos} videos): its strategy scores and drop probabilities carry no information"
        )
    p = np.asarray(drop_probs, dtype=float)
    if p.size and (p > 0.5).all():
        out.append(
            "v-DropPath dropped every path: both drop probabilities of every slot are above 0.5, so the most "
            "probable strategy computes nothing"
        )
    return out
