"""The numbers of a run in words: the headline of a run report (which path type the drop
probabilities prefer, the best strategy against the canonical ones) and the demo's one sentence per
dataset. The statistics are ``fusion3d.analysis.verdicts``; this module only words them."""

from __future__ import annotations

from fusion3d.analysis.verdicts import (
    BARELY_MOVED,
    PREF_REL_DIFF,
    accuracy_gap,
    barely_moved,
    path_preference,
)
from fusion3d.models.units import TEMPORAL_UNITS
from fusion3d.report import fmt
from fusion3d.report.document import CANONICAL, DATA_FREE
from fusion3d.report.status import _commands
from fusion3d.run.io import RunData
from fusion3d.run.layout import FILES

_ps_pt = path_preference  # the name the tests and older code use
# The canonical strategies whose units keep the T path.
TEMPORAL_NAMES = tuple(f"all-{u}" for u in TEMPORAL_UNITS)


def _pref_sentence(p, init=None) -> str:
    s = path_preference(p)
    means = f"mean p_S {s['mean_s']:.3f}, p_T {s['mean_t']:.3f}; {DATA_FREE}"
    if fmt.isnum(init) and barely_moved(p, init):
        means += (
            f"; every drop probability is still within {BARELY_MOVED} of its initial {float(init):g}: "
            "train longer or raise `train.k`"
        )
    if s["pref"] == "temporal":
        return (
            f"**Temporal paths preferred**: the S-path drop probability is above the T-path's in "
            f"{s['s_gt']} of {s['n']} slots ({means})."
        )
    if s["pref"] == "spatial":
        return (
            f"**Spatial paths preferred**: the T-path drop probability is above the S-path's in "
            f"{s['t_gt']} of {s['n']} slots ({means})."
        )
    return (
        f"**No clear preference between S and T paths**: the S-path drop probability is above the "
        f"T-path's in {s['s_gt']} of {s['n']} slots ({means}; a preference needs a majority of slots "
        f"and mean drop probabilities at least {PREF_REL_DIFF:.0%} apart)."
    )


def ablation_sentence(table) -> str | None:
    """The per-slot ablation in one sentence (``ablation.csv`` as a DataFrame; None without one): the
    slots where a temporal unit beats all-S beyond binomial noise, or that there is none."""
    if table is None or not len(table):
        return None
    noise = table["t_noise"].dropna()
    nz = (
        f"two binomial standard errors: {noise.min():.1f}-{noise.max():.1f} points"
        if len(noise)
        else "no noise estimate: the number of selection videos is unknown"
    )
    pays = table[table["t_verdict"] == "temporal"]
    if len(pays):
        where = ", ".join(
            f"{fmt.code(r['slot'])} ({r['t_best_unit']} {float(r['t_gain']):+.1f})"
            for _, r in pays.iterrows()
        )
        return (
            f"**Per-slot ablation: temporal units pay off at {len(pays)} of {len(table)} slots**: {where} "
            f"points over all-S, each beyond noise ({nz}; {FILES['ablation']})."
        )
    best = table.loc[table["t_gain"].astype(float).idxmax()]
    return (
        f"**Per-slot ablation: no slot where a temporal unit pays off beyond noise** (largest gain over "
        f"all-S {float(best['t_gain']):+.1f} points, at {fmt.code(best['slot'])}; {nz}; {FILES['ablation']})."
    )


def _accuracy_sentence(run: RunData) -> str | None:
    opt = run.opt()
    if opt is None:
        return None
    col = run.score_col
    canon = run.canonical()
    parts = [f"{name} {fmt.pct(canon[src].get(col))}" for src, name in CANONICAL if src in canon]
    n = len(run.strategies) if run.strategies is not None else (run.analysis or {}).get("strategies", "?")
    src = str(opt.get("source", "?")).replace("canonical_", "all-").replace("_", " ")
    s = f"The best of {n} scored strategies (Opt, {src}) reaches {fmt.pct(opt.get(col))}"
    if parts:
        s += " vs " + ", ".join(parts)
    return s + f" ({run.views()}; {fmt.score_label(col)})."


def _fixed_headline(run: RunData) -> list[str]:
    strategy = run.cfg("model", "strategy") or "?"
    val = next((r for r in reversed(run.epochs) if "val_top1" in r), None)
    s = f"Strategy {fmt.code(strategy)} trained alone"
    if val is not None:
        s += (
            f": top-1 {fmt.pct(val['val_top1'])} after epoch {val['epoch']} "
            f"({val.get('val_views', 'views not recorded')})"
        )
    return [s + "."]


def headline(run: RunData) -> list[str]:
    """One or two sentences (inline markup) computed from the run's files."""
    if run.is_fixed:
        return _fixed_headline(run)
    out = []
    c = _commands(run)
    abl = ablation_sentence(run.ablation)  # the measured per-slot answer comes first
    if abl:
        out.append(abl)
    p, _, _ = run.drop_probs()
    if p is not None and run.vdroppath_reached():
        out.append(_pref_sentence(p, run.cfg("model", "drop_init")))
    elif run.metrics is not None:
        out.append(
            f"Drop probabilities not learned yet: the v-DropPath phase starts after epoch "
            f"{run.warmup_epochs}, and {run.epochs_done} epochs are done (resume: {fmt.code(c['train'])})."
        )
    else:
        out.append(f"Training has not produced metrics yet (run {fmt.code(c['train'])}).")
    if not run.trained and run.metrics is not None and run.vdroppath_reached():
        out.append(
            f"Training stopped after epoch {run.epochs_done} of {run.total_epochs or '?'} "
            f"(resume: {fmt.code(c['train'])})."
        )
    acc = _accuracy_sentence(run)
    if acc:
        out.append(acc)
    elif run.trained:
        out.append(f"No strategy scored yet (run {fmt.code(c['sample'])}).")
    return out


# ----------------------------------------------------------------------------- the demo's story


def _verdict(run: RunData) -> dict:
    """Numbers the demo's story is told with (missing ones are None)."""
    col = run.score_col
    canon = run.canonical()
    opt = run.opt()
    p, _, _ = run.drop_probs()
    v = {
        "run": run,
        "col": col,
        "views": run.views(),
        "n_videos": run.selection_videos(),
        "acc": {name: canon[src].get(col) for src, name in CANONICAL if src in canon},
        "opt": opt.get(col) if opt else None,
        "opt_units": None,
        "probs": path_preference(p) if p is not None and run.vdroppath_reached() else None,
        "ablation": run.ablation,
    }
    if opt and opt.get("strategy"):
        v["opt_units"] = str(opt["strategy"]).split("|")
    return v


def _acc_verdict(v: dict) -> dict | None:
    """all-S against the better temporal canonical strategy, judged against binomial noise."""
    acc = v["acc"]
    temporal = {k: float(acc[k]) for k in TEMPORAL_NAMES if fmt.isnum(acc.get(k))}
    if not fmt.isnum(acc.get("all-S")) or not temporal:
        return None
    s = float(acc["all-S"])
    out = accuracy_gap(s, temporal, v["n_videos"])
    against = " and ".join(f"{k} {fmt.pct(x)}" for k, x in temporal.items())
    out["nums"] = f"all-S scores {fmt.pct(s)} against {against}"
    return out


_VERDICTS = {  # (accuracy verdict, drop-probability preference) -> words
    ("temporal", "temporal"): "temporal units pay off and the analyzer finds them",
    ("temporal", "none"): "temporal units pay off, but the drop probabilities do not single them out",
    ("temporal", "spatial"): "temporal units pay off, but the drop probabilities favour the spatial paths",
    (
        "none",
        "temporal",
    ): "temporal units make no clear difference in accuracy, yet the drop probabilities favour them",
    ("none", "none"): "temporal units make no clear difference, and the analyzer shows no preference either",
    (
        "none",
        "spatial",
    ): "temporal units make no clear difference, and the drop probabilities favour the spatial paths",
    ("spatial", "temporal"): "spatial units do better, yet the drop probabilities favour the temporal paths",
    ("spatial", "none"): "spatial units do better, and the drop probabilities show no preference",
    ("spatial", "spatial"): "spatial units do better and the analyzer prefers them",
}
_PROBS_ONLY = {  # drop-probability preference, no strategy scored -> words
    "temporal": "the drop probabilities favour the temporal paths (no strategy scored yet)",
    "spatial": "the drop probabilities favour the spatial paths (no strategy scored yet)",
    "none": "the drop probabilities show no preference (no strategy scored yet)",
}
_ACCURACY_ONLY = {  # accuracy verdict, no drop probability learned -> words
    "temporal": "temporal units pay off (drop probabilities not learned yet)",
    "spatial": "spatial units do better (drop probabilities not learned yet)",
    "none": "temporal units make no clear difference (drop probabilities not learned yet)",
}


def _evidence(v: dict, av: dict | None, pr: dict | None, label: bool) -> list[str]:
    """The numbers behind a story sentence: accuracies, drop probabilities, Opt's units."""
    evidence = []
    if av is not None:
        e = av["nums"]
        if av["noise"] is not None:
            e += (
                f" (gap {av['gap']:+.1f} points; two binomial standard errors on {v['n_videos']} videos: "
                f"{av['noise']:.1f})"
            )
        if label:
            e += f" [{v['views']}; {fmt.score_label(v['col'])}]"
        evidence.append(e)
    if pr is not None:
        evidence.append(
            f"the S path is dropped more often than the T path in {pr['s_gt']} of {pr['n']} slots "
            f"(mean p_S {pr['mean_s']:.3f}, p_T {pr['mean_t']:.3f})"
        )
        if v["opt_units"]:
            k, n = sum(u in TEMPORAL_UNITS for u in v["opt_units"]), len(v["opt_units"])
            where = "every slot" if k == n else f"{k} of {n} slots"
            evidence.append(f"Opt ({fmt.pct(v['opt'])}) keeps a temporal path in {where}")
    return evidence


def _story_sentence(name: str, v: dict, label: bool) -> str:
    """One sentence per dataset; ``label``: append the split/views the accuracies were measured on."""
    av, pr = _acc_verdict(v), v["probs"]
    if av is None and pr is None:
        return f"On **{name}** data nothing has been learned or scored yet."
    evidence = _evidence(v, av, pr, label)
    if av is None:
        words = _PROBS_ONLY[pr["pref"]]
    elif pr is None:
        words = _ACCURACY_ONLY[av["kind"]]
    else:
        words = _VERDICTS[(av["kind"], pr["pref"])]
    body = evidence[0] if len(evidence) == 1 else ", ".join(evidence[:-1]) + ", and " + evidence[-1]
    abl = ablation_sentence(v.get("ablation"))
    return f"On **{name}** data {words}: {body}." + (f" {abl}" if abl else "")
