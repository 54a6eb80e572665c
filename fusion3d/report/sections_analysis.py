"""Sections of a run report about what the analysis found: the layer-level preference (Figure 4),
the depth gates next to CKA's redundant runs, and the sampled strategies."""

from __future__ import annotations

import numpy as np

from fusion3d.analysis.marginals import depth_marginals
from fusion3d.models.units import UNITS
from fusion3d.report import fmt
from fusion3d.report.document import CANONICAL, DATA_FREE, Figures, Img, Missing, Para, Section, Table
from fusion3d.report.figures import depth_png
from fusion3d.report.status import _chain, _commands
from fusion3d.report.verdicts import ablation_sentence
from fusion3d.run.io import RunData
from fusion3d.run.layout import FILES


def _existing_images(run: RunData, roles) -> list:
    """``Img`` of each (file role, caption) whose file exists in the run directory."""
    return [Img(run.files.file(r), t) for r, t in roles if run.files.file(r).is_file()]


# ----------------------------------------------------------------------------- Figure 4


def _marginals_table(run: RunData) -> Table:
    rows = []
    for _, r in run.marginals.iterrows():
        row = [fmt.code(r["slot"])]
        for conv in ("paper", "sampling"):
            row += [fmt.prob(r.get(f"P_{u}_{conv}")) for u in UNITS]
            row.append(str(r.get(f"preferred_unit_{conv}", "–")))
        rows.append(row)
    head = ["slot"] + [
        f"{h} ({conv})" for conv in ("paper", "sampling") for h in (*(f"P({u})" for u in UNITS), "preferred")
    ]
    return Table(
        head,
        rows,
        f"{FILES['marginals']}: paper convention q = 1 - sqrt(p) (Eq. 7), sampling "
        f"convention q = 1 - p; {DATA_FREE}.",
    )


def _section_marginals(run: RunData) -> Section:
    sec = Section("marginals", "Layer-level preference (Figure 4)")
    imgs = _existing_images(
        run,
        (
            ("figure4", "Figure 4, paper convention q = 1 - sqrt(p)"),
            ("figure4_sampling", "Figure 4, sampling convention q = 1 - p"),
        ),
    )
    if not imgs and run.marginals is None:
        sec.blocks.append(
            Missing(
                "Marginals and Figure 4 are written by the analyze stage, which has not run.",
                _chain(run, "analyze"),
            )
        )
        return sec
    if imgs:
        sec.blocks.append(Figures(imgs, [i.alt for i in imgs]))
        sec.blocks.append(
            Para(
                f"Bars: per-slot marginal probability of each unit ({DATA_FREE}); markers: the unit "
                "the Opt strategy uses in each slot (a red cross where it uses none)."
            )
        )
    if run.marginals is not None:
        sec.blocks.append(_marginals_table(run))
    a = run.analysis or {}
    if a.get("preferred_unit_counts") and a.get("slots"):
        cnt = a["preferred_unit_counts"].get("paper", {})
        s = ", ".join(f"{u} in {k}" for u, k in cnt.items() if k)
        line = f"Preferred unit (paper convention): {s} of {a['slots']} slots."
        if fmt.isnum(a.get("opt_agrees_with_paper_preference")):
            agree = a["opt_agrees_with_paper_preference"]
            line += f" Opt uses the preferred unit in {agree} of {a['slots']} slots."
        sec.blocks.append(Para(line))
    return sec


# ----------------------------------------------------------------------------- per-slot ablation


def section_ablation(run: RunData) -> Section | None:
    """Per slot: all-S with that slot set to each unit, the T effect, and whether a temporal unit pays
    off beyond noise (``ablation.csv``); None when the run has no ablation."""
    t = run.ablation
    if t is None or not len(t):
        return None
    sec = Section("ablation", "Per-slot ablation: where temporal units pay off")
    sec.blocks.append(
        Para(
            "The template scored near one reference point: all-S, and all-S with one slot changed to each "
            "other unit (selection split, after BatchNorm recalibration when the sample stage recalibrated). "
            "Unlike a whole sampled strategy, each of these differs from all-S in one slot only, so "
            "co-adaptation between far-apart units weighs less; on the known-answer benchmark this ranking "
            "and these per-slot effects agreed with stand-alone training better than the template's whole-"
            "strategy scores (docs/validity.md)."
        )
    )
    sec.blocks.append(Para(ablation_sentence(t)))
    rows = [
        [
            fmt.code(r["slot"]),
            *(fmt.pct(r[u]) if u in t.columns else "n/a" for u in UNITS),
            f"{float(r['t_effect']):+.1f}",
            f"{r['t_best_unit']} {float(r['t_gain']):+.1f}",
            "n/a" if not fmt.isnum(r.get("t_noise")) else f"{float(r['t_noise']):.1f}",
            str(r["t_verdict"]),
        ]
        for _, r in t.iterrows()
    ]
    sec.blocks.append(
        Table(
            [
                "slot",
                *(f"unit {u} here" for u in UNITS),
                "T effect (ST - S)",
                "best T gain",
                "noise",
                "verdict",
            ],
            rows,
            "score of all-S with only this slot changed; T effect and gains in points over all-S; noise: two "
            "binomial standard errors of the gain",
        )
    )
    return sec


# ----------------------------------------------------------------------------- depth gates


def _depth_summary(kept, names: list[str], src: str) -> Para:
    n = len(kept)
    dropped = [nm for nm, q in zip(names, kept) if q < 0.5]
    return Para(
        f"With `model.depth_gate` each slot has a third gate that drops the whole slot (unit none); "
        f"P(slot kept) = 1 - p_D ({DATA_FREE}; from {src}). "
        + (
            f"**{len(dropped)} of {n} slots** have P(slot kept) < 0.5 (the most probable strategy drops "
            f"them): {', '.join(fmt.code(x) for x in dropped)}."
            if dropped
            else f"Every slot has P(slot kept) >= 0.5 (lowest {min(kept):.3f}, at "
            f"{fmt.code(names[int(np.argmin(kept))])}): no layer is judged unneeded yet."
        )
    )


def _depth_figures(run: RunData, png):
    cka_png = run.files.cka_within
    depth_img = Img(
        png,
        "P(slot kept) per slot",
        "Bars: P(slot kept) per slot in depth order; dashed line "
        "at 0.5" + ("; shaded: CKA's redundant runs of slots." if run.cka_runs() else "."),
    )
    if cka_png.is_file():
        return Figures(
            [depth_img, Img(cka_png, "CKA within one strategy")],
            ["depth gate: P(slot kept)", "CKA within one strategy"],
        )
    return depth_img


def _depth_vs_cka(run: RunData, runs: list[list[str]], kept, names: list[str]) -> list:
    """The CKA redundant runs against the depth gates' keep probabilities."""
    thr = run.cka.get("threshold")
    idx = {nm: i for i, nm in enumerate(names)}
    rows = []
    for r in runs:
        qs = [kept[idx[x]] for x in r if x in idx]
        low = [x for x in r if x in idx and kept[idx[x]] < 0.5]
        rows.append(
            [
                ", ".join(fmt.code(x) for x in r),
                fmt.prob(np.mean(qs)) if qs else "–",
                fmt.prob(min(qs)) if qs else "–",
                ", ".join(fmt.code(x) for x in low) or "none",
            ]
        )
    blocks = [
        Table(
            ["CKA redundant run", "mean P(slot kept)", "min P(slot kept)", "slots the depth gate drops"],
            rows,
            "Runs of consecutive slots whose adjacent CKA is above "
            + (f"{thr}" if fmt.isnum(thr) else "the threshold")
            + f" ({FILES['cka']}), against the depth gates' keep probabilities.",
        )
    ]
    in_run = {x for r in runs for x in r}
    inside = [kept[idx[x]] for x in in_run if x in idx]
    outside = [q for nm, q in zip(names, kept) if nm not in in_run]
    if inside and outside:
        blocks.append(
            Para(
                f"Mean P(slot kept): {np.mean(inside):.3f} in CKA redundant runs ({fmt.n_slots(len(inside))}), "
                f"{np.mean(outside):.3f} elsewhere ({fmt.n_slots(len(outside))}); the two signals agree when "
                "redundant slots are kept less."
            )
        )
    return blocks


def _depth_marginals_table(p, d, names: list[str], runs: list[list[str]] | None) -> Table:
    in_run: set[str] = {x for r in runs for x in r} if runs else set()
    m = depth_marginals(p, d, names)
    rows = [
        [
            fmt.code(r["slot"]),
            fmt.prob(r["p_D"]),
            fmt.prob(r["P_kept"]),
            fmt.prob(r["P_none"]),
            str(r["preferred_unit"]),
            ("yes" if r["slot"] in in_run else "no") if runs is not None else "–",
        ]
        for _, r in m.iterrows()
    ]
    return Table(
        [
            "slot",
            "p_D",
            "P(slot kept)",
            "P(none), depth folded in",
            "preferred unit",
            "in a CKA redundant run",
        ],
        rows,
        "Sampling convention (q = 1 - p): P(none) = p_D + (1 - p_D) p_S p_T; the other units' "
        f"marginals are scaled by 1 - p_D; {DATA_FREE}.",
    )


def _section_depth(run: RunData) -> Section | None:
    """ "Depth redundancy": the depth gates' P(slot kept) next to CKA's redundant runs (None without
    depth gates)."""
    d, src = run.depth_probs()
    if d is None:
        return None
    sec = Section("depth", "Depth redundancy")
    n = len(d)
    names = run.slot_names(n)
    png = depth_png(run)
    kept = 1.0 - d
    sec.blocks.append(_depth_summary(kept, names, src))
    sec.blocks.append(_depth_figures(run, png))
    runs = run.cka_runs()
    if runs is None:
        sec.blocks.append(
            Missing(
                f"{FILES['cka']} is missing: no CKA redundancy to compare the depth gates with.",
                fmt.cmd("fusion3d", "analyze", str(run.dir), "--cka"),
            )
        )
    elif not runs:
        sec.blocks.append(
            Para(f"{FILES['cka']} lists no redundant run of slots to compare the depth gates with.")
        )
    else:
        sec.blocks.extend(_depth_vs_cka(run, runs, kept, names))
    p, _, _ = run.drop_probs()
    if p is not None and len(p) == n:
        sec.blocks.append(_depth_marginals_table(p, d, names, runs))
    return sec


# ----------------------------------------------------------------------------- sampled strategies


def _strategy_row(label: str, r: dict, col: str) -> list[str]:
    top5 = col.replace("top1", "top5")
    return [
        label,
        fmt.code(r.get("strategy", "?")),
        fmt.pct(r.get("top1_before")),
        fmt.pct(r.get("top1_after")),
        fmt.pct(r.get(top5)),
        fmt.macs(r.get("macs")),
        fmt.params(r.get("params")),
        str(r.get("views", "–")),
    ]


def _sampling_text(run: RunData) -> str:
    """What was scored, how, and on what."""
    df, smp = run.strategies, run.sample or {}
    meas = smp.get("measurement") or {}
    n_sampled = int((df["source"] == "sampled").sum())
    txt = (
        f"{len(df)} strategies scored: the canonical all-S, all-ST, all-S+ST, the most probable one, and "
        f"{n_sampled} distinct hard-Bernoulli draws"
    )
    settings = smp.get("settings") or {}
    if fmt.isnum(settings.get("num")):
        txt += f" (of {settings['num']} draws"
        txt += (
            f", {smp['duplicates_removed']} duplicates removed)"
            if fmt.isnum(smp.get("duplicates_removed"))
            else ")"
        )
    txt += f". Measured on: {run.views()}."
    if meas.get("recalibrate"):
        txt += (
            f" BatchNorm recalibrated per strategy on {meas.get('recal_videos', '?')} training clips "
            "before the "
            "'after' scores."
        )
    elif meas:
        txt += " No BatchNorm recalibration (only 'before' scores)."
    if fmt.isnum(smp.get("seconds_per_strategy")):
        txt += f" {smp['seconds_per_strategy']:.2f} s per strategy ({settings.get('device', '?')})."
    return txt


def _canonical_table(run: RunData) -> Table:
    """The canonical strategies, the most probable one, Opt, and the mean of the sampled ones."""
    df, col = run.strategies, run.score_col
    canon = run.canonical()
    rows = [_strategy_row(name, canon[src], col) for src, name in CANONICAL if src in canon]
    if "most_probable" in canon:
        rows.append(_strategy_row("most probable", canon["most_probable"], col))
    opt = run.opt()
    if opt is not None:
        rows.append(_strategy_row(f"**Opt** ({opt.get('source', '?')})", opt, col))
    sampled = df.loc[df["source"] == "sampled", col].dropna()
    if len(sampled):
        rows.append([f"sampled: mean ± std (n={len(sampled)})", "", "", "", "", "", "", run.views()])
        rows[-1][3 if col == "top1_after" else 2] = f"{sampled.mean():.1f} ± {sampled.std(ddof=0):.1f}%"
    return Table(
        [
            "strategy",
            "units per slot",
            "top-1 before recal.",
            "top-1 after recal.",
            f"top-5 ({'after' if col == 'top1_after' else 'before'})",
            "MACs per clip",
            "params",
            "measured on",
        ],
        rows,
        f"Ranking score: {fmt.score_label(col)}. Opt = best score, ties broken by fewer MACs.",
    )


def _top_table(run: RunData) -> Table:
    top, col = run.top, run.score_col
    trows = []
    for _, r in top.iterrows():
        d = r.to_dict()
        trows.append(
            [
                str(d.get("rank", "")),
                fmt.code(d.get("strategy")),
                str(d.get("source", "")),
                fmt.pct(d.get("top1_before")),
                fmt.pct(d.get("top1_after")),
                fmt.pct(d.get(col.replace("top1", "top5"))),
                fmt.macs(d.get("macs")),
                fmt.params(d.get("params")),
            ]
        )
    views = "; ".join(str(v) for v in top["views"].dropna().unique()) if "views" in top else run.views()
    return Table(
        [
            "rank",
            "units per slot",
            "source",
            "top-1 before recal.",
            "top-1 after recal.",
            "top-5",
            "MACs",
            "params",
        ],
        trows,
        f"{FILES['top']}, measured on: {views}; ranked by {fmt.score_label(col)}.",
    )


def _sampling_missing(run: RunData) -> Missing:
    if run.trained:
        return Missing("No strategy has been scored: the sample stage has not run.", _commands(run)["sample"])
    return Missing(
        "Training is not finished, so no strategy has been scored; finish training, then sample.",
        _chain(run, "sample"),
    )


def _sampling_progress(run: RunData) -> list:
    """Blocks saying that sampling or the analysis is unfinished or out of date."""
    smp, out = run.sample or {}, []
    if run.sample is None:
        why = "the sampling run has not finished or was interrupted"
        out.append(Para(f"{FILES['sample']} is missing: {why}.", "missing"))
    elif not smp.get("complete", True):
        out.append(
            Missing(
                f"Sampling not finished ({len(run.strategies)} of {smp.get('planned', '?')} strategies); "
                "resume it (scored strategies are skipped).",
                fmt.cmd("fusion3d", "sample", str(run.dir)),
            )
        )
    return out


def _analysis_missing(run: RunData) -> Missing | None:
    c = _commands(run)
    if run.analysis is None:
        return Missing(
            "The analyze stage has not run (no Opt file, top-strategies table or figures); "
            f"Opt above is the best row of {FILES['strategies']}.",
            c["analyze"],
        )
    if run.analysis_stale():
        return Missing(
            f"{FILES['analysis']} is older than {FILES['strategies']}; re-run analyze.", c["analyze"]
        )
    return None


def _section_sampling(run: RunData) -> Section:
    sec = Section("sampling", "Sampled strategies")
    if run.strategies is None or run.strategies.empty:
        sec.blocks.append(_sampling_missing(run))
        return sec
    col = run.score_col
    sec.blocks.append(Para(_sampling_text(run)))
    sec.blocks.extend(_sampling_progress(run))
    sec.blocks.append(_canonical_table(run))
    missing = _analysis_missing(run)
    if missing is not None:
        sec.blocks.append(missing)
    if run.top is not None and len(run.top):
        sec.blocks.append(_top_table(run))
    imgs = _existing_images(
        run,
        (("acc_vs_macs", "accuracy vs MACs, Pareto front"), ("acc_hist", "histogram of sampled accuracies")),
    )
    if imgs:
        sec.blocks.append(Figures(imgs, [i.alt for i in imgs]))
        sec.blocks.append(Para(f"Both figures: {fmt.score_label(col)}, measured on: {run.views()}."))
    return sec
