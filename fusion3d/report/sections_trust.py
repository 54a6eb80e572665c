"""Sections of a run report about how certain its answers are: the per-slot preferences across template
seeds (a run trained with ``run.seeds > 1``) and "How far to trust these scores", the agreement of
template scores with stand-alone training that the shipped benchmark measured
(``fusion3d/bench/reliability.json``)."""

from __future__ import annotations

from fusion3d.bench import load_reliability, load_table
from fusion3d.report import fmt
from fusion3d.report.document import Para, Section, Table
from fusion3d.run.io import RunData
from fusion3d.run.layout import FILES

SINGLE_SEED = (
    "This run has a single template seed, so its per-slot preferences carry no across-seed interval: "
    "one trained template cannot say how much of a preference comes from its seed. Train several "
    "templates with `run.seeds=3` (seeds run.seed .. run.seed+2; sample, analyze and report then "
    "combine them) to get one."
)


def _interval_words(k: int) -> str:
    if k >= 4:
        return f"95% t-interval of the mean over the {k} seeds"
    return f"range (lowest to highest) over the {k} seeds; with fewer than 4 seeds this is not a 95% interval"


def _preference_table(run: RunData, k: int) -> Table:
    m = run.marginals
    rows = []
    for _, r in m.iterrows():
        row = [fmt.code(r["slot"])]
        for conv in ("paper", "sampling"):
            unit = str(r.get(f"preferred_unit_{conv}", "–"))
            col = f"P_{unit}_{conv}"
            lo, hi = r.get(f"{col}_lo"), r.get(f"{col}_hi")
            agree = r.get(f"preferred_agreement_{conv}")
            seeds = round(float(agree) * k) if fmt.isnum(agree) else None
            row += [
                unit,
                f"{fmt.prob(r.get(f'{col}_mean'))} [{fmt.prob(lo)}, {fmt.prob(hi)}]",
                "–" if seeds is None else f"{seeds} of {k}",
            ]
        rows.append(row)
    head = ["slot"] + [
        f"{h} ({conv})"
        for conv in ("paper", "sampling")
        for h in ("preferred", "P(preferred)", "seeds agreeing")
    ]
    return Table(
        head,
        rows,
        f"{FILES['marginals']}: the preferred unit of the mean drop probabilities; P(preferred): mean over "
        f"the seeds [{_interval_words(k)}]; seeds agreeing: seeds whose own preferred unit is the same.",
    )


def _score_spread(run: RunData, k: int) -> Para | None:
    df, col = run.strategies, run.score_col
    if df is None or df.empty or f"{col}_sd" not in df or f"{col}_seed0" not in df:
        return None
    opt = run.opt() or {}
    rows = df[df["id"] == str(opt.get("id"))]
    text = (
        f"Scores: every strategy was scored by each of the {k} templates (each on its own selection split); "
        f"`{FILES['strategies']}` holds the mean ({col}), each seed's score ({col}_seed0 ...) and their "
        f"standard deviation ({col}_sd; median over strategies {fmt.num(df[f'{col}_sd'].median())} points)."
    )
    if len(rows):
        r = rows.iloc[0]
        per = ", ".join(fmt.pct(r[f"{col}_seed{i}"]) for i in range(k) if f"{col}_seed{i}" in r)
        text += f" Opt: {fmt.pct(r[col])} (per seed {per})."
    return Para(text)


def section_seeds(run: RunData) -> Section:
    """Per-slot preferences with their intervals across template seeds, or why a run has none."""
    sec = Section("seeds", "Preferences across template seeds")
    k = len(run.seed_runs)
    if k < 2:
        sec.blocks.append(Para(SINGLE_SEED))
        return sec
    sec.blocks.append(
        Para(
            f"This run trained **{k} templates** (seed runs "
            f"{', '.join(fmt.code(r.dir.name) for r in run.seed_runs)}), each with its own seed and its own "
            f"fit / selection split. Training curves and the drop-probability figure show the first seed; "
            f"the tables show the mean over the seeds."
        )
    )
    if run.marginals is None or "preferred_agreement_paper" not in run.marginals:
        sec.blocks.append(Para(f"Run `fusion3d analyze {run.dir}` to get the per-slot intervals."))
    else:
        sec.blocks.append(_preference_table(run, k))
        a = (run.analysis or {}).get("template_seeds") or {}
        agree = (a.get("slots_all_seeds_agree") or {}).get("paper")
        if fmt.isnum(agree):
            sec.blocks.append(
                Para(
                    f"Every seed prefers the same unit (paper convention) in **{agree} of {len(run.marginals)} "
                    "slots**; where they disagree, the preference is not settled by this run."
                )
            )
    spread = _score_spread(run, k)
    if spread is not None:
        sec.blocks.append(spread)
    return sec


BASELINE_LABELS = {"macs": "MACs", "params": "parameters", "temporal_rf": "temporal receptive field"}


def _signed(v) -> str:
    return f"{v:+.2f}"


def _table_sentence(name: str, t: dict) -> str:
    per = t.get("per_seed") or []
    seeds = f" (per template seed {', '.join(_signed(v) for v in per)})" if per else ""
    base = t.get("baselines") or {}
    vs = "; ".join(f"{_signed(v)} ranking by {BASELINE_LABELS.get(b, b)} alone" for b, v in base.items())
    abl = t.get("ablation")
    abl_text = ""
    if abl:
        per_abl = ", ".join(_signed(v) for v in abl.get("per_seed") or [])
        abl_text = f"; the per-slot ablation's additive ranking {_signed(abl['kendall_tau'])}" + (
            f" (per seed {per_abl})" if per_abl else ""
        )
        if abl.get("slot_spearman") is not None:
            abl_text += f", its per-slot T effects Spearman {_signed(abl['slot_spearman'])} over slots"
    return (
        f"table `{name}`: Kendall tau {_signed(t['kendall_tau_after'])}{seeds}"
        + (f", against {vs}" if vs else "")
        + abl_text
        + f"; noise ceiling {t['noise_ceiling']:.2f} (stand-alone training agreeing with itself across its seeds)"
    )


def _recipe_epochs(names) -> dict[str, int]:
    """``train.epochs`` of each shipped table's stand-alone recipe (tables without one are left out)."""
    out = {}
    for name in names:
        try:
            recipe = load_table(name)[1].get("recipe") or []
        except (OSError, ValueError):
            continue
        for item in recipe:
            key, _, value = str(item).partition("=")
            if key.strip() == "train.epochs" and value.strip().isdigit():
                out[name] = int(value)
    return out


def _budget_sentence(epochs: dict[str, int]) -> str:
    if not epochs:
        return ""
    low, high = min(epochs.values()), max(epochs.values())
    span = f"{low}" if low == high else f"{low}-{high}"
    return (
        f" Stand-alone training in these tables is a short, fixed recipe ({span} epochs on a few hundred "
        "videos), so agreement means agreeing on which strategies learn the task within such a budget; "
        "after much longer training the differences between strategies can shrink (the benchmark's "
        "documentation, docs/validity.md, measures this on the motion table)."
    )


def section_trust(run: RunData) -> Section:
    """'How far to trust these scores': what the shipped benchmark measured, and that the user's data may differ."""
    sec = Section("trust", "How far to trust these scores")
    try:
        rel = load_reliability()
    except (OSError, ValueError) as e:
        sec.blocks.append(Para(f"The benchmark's reliability numbers could not be read ({e}).", "warn"))
        return sec
    tables = rel["tables"]
    sec.blocks.append(
        Para(
            "A template score ranks strategies without training each alone; the known-answer benchmark "
            f"measured how far that ranking agrees with stand-alone training. What was measured: {rel['what']} "
            f"({rel.get('template', 'template settings not recorded')}; {rel['source']}, {rel['measured']}). On "
            f"the shipped synthetic tables {', '.join(fmt.code(n) for n in tables)}: "
            + "; ".join(_table_sentence(n, t) for n, t in tables.items())
            + ". A tau of 1 would be perfect agreement; the noise ceiling is how well stand-alone training agrees "
            "with itself (half its seeds against the other half), so no predictor can be expected to do much better."
            + _budget_sentence(_recipe_epochs(tables))
        )
    )
    if rel.get("placeholder"):
        sec.blocks.append(
            Para("These numbers are provisional (the final benchmark study will replace them).", "warn")
        )
    sec.blocks.append(
        Para(
            "These agreements were measured on synthetic benchmark tables, not on this run's data: your own "
            "data, model and settings may agree more or less. To measure it for this run, train a few "
            f"strategies alone and compare (`fusion3d agreement {run.dir}`), or score a shipped table "
            f"(`fusion3d bench score {run.dir} --table {next(iter(tables))}`)."
        )
    )
    return sec
