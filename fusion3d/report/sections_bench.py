"""The report section of ``fusion3d bench score``: the template's answers against ground-truth tables
of strategies trained alone, next to training-free baselines, with intervals and the table's own
noise ceiling."""

from __future__ import annotations

from fusion3d.report import fmt
from fusion3d.report.document import Items, Para, Section, Table
from fusion3d.run.io import RunData

PREDICTOR_LABELS = {
    "template_after": "template score, after BN recalibration",
    "template_before": "template score, before BN recalibration",
    "macs": "MACs (bigger is better)",
    "params": "parameters (bigger is better)",
    "temporal_rf": "static temporal receptive field",
    "synflow": "synflow at initialisation (zero-cost proxy)",
    "ablation": "per-slot ablation from all-S, additive (template scores)",
}


def _num(v, digits: int = 2, signed: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _per_seed(per_seed: dict) -> str:
    return "each seed alone: " + "; ".join(
        f"`{d}` Kendall tau {_num(t.get('template_after'))} (ablation {_num(t.get('ablation'))})"
        for d, t in per_seed.items()
    )


def _predictor_row(name: str, p: dict) -> list[str]:
    if "kendall_tau" not in p:
        return [PREDICTOR_LABELS.get(name, name), "n/a", "n/a", "n/a", "n/a", "n/a"]
    t, r = p["kendall_tau"], p["spearman_rho"]
    se = "" if p.get("regret_se") is None else f" ({_num(p['regret_se'], 1, False)} SE)"
    return [
        PREDICTOR_LABELS.get(name, name),
        f"{_num(t['value'])} [{_num(t['ci_low'])}, {_num(t['ci_high'])}]",
        f"{_num(t['p'], 3, False)} ({t['p_method']})",
        f"{_num(r['value'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]",
        _num(p.get("top_k_overlap"), 1, False),
        f"{fmt.num(p.get('regret_points'))} pts{se}",
    ]


def _table_block(name: str, r: dict) -> list:
    summary = r.get("table_summary", {})
    nc = (summary.get("noise_ceiling") or {}).get("kendall_tau")
    attainable = (summary.get("noise_ceiling") or {}).get("attainable_tau")
    blocks = [
        Para(
            f"**Table `{name}`**: {r.get('n')} strategies trained alone, top-1 "
            f"{fmt.num(summary.get('top1_min'))}-{fmt.num(summary.get('top1_max'))}%; noise ceiling (Kendall tau "
            f"between two halves of its training seeds) {_num(nc)}; a perfect predictor would reach about "
            f"{_num(attainable)} against its mean over every seed. Template measured on: "
            f"{r['measured_on']['template']}."
        )
    ]
    if r.get("per_seed"):
        blocks.append(
            Para(
                f"The template scores are the mean over {len(r['per_seed'])} template seeds; {_per_seed(r['per_seed'])}."
            )
        )
    if r.get("data_matches") is False:
        blocks.append(
            Para(
                f"The run was trained on other data ({r.get('run_data')}) than the table's: these numbers "
                "say how well its answers transfer, not how well it read its own data.",
                "warn",
            )
        )
    rows = [_predictor_row(k, v) for k, v in r.get("predictors", {}).items()]
    blocks.append(
        Table(
            [
                "predictor",
                "Kendall tau [95% CI]",
                "p",
                "Spearman rho [95% CI]",
                "top-5 overlap",
                "regret of its pick",
            ],
            rows,
            "rank agreement with the ground truth (mean top-1 over seeds); intervals: paired bootstrap",
        )
    )
    m = (r.get("slots") or {}).get("marginal_keep_T", {})
    te = (r.get("slots") or {}).get("template_effects", {})
    ab = (r.get("slots") or {}).get("ablation_t_effects", {})
    blocks.append(
        Items(
            [
                f"marginal keep probability of the T path per slot vs the ground-truth effect of a T path there: Spearman "
                f"{_num(m.get('spearman_rho'))}; early-minus-late profile "
                f"{'matches' if m.get('profile_matches') else 'does not match'} "
                f"(effect {_num(m.get('effect_early_minus_late'), 1)} pts, preference "
                f"{_num(m.get('preference_early_minus_late'))})",
                f"per-slot T effects estimated from the template's scores vs the ground truth: Spearman "
                f"{_num(te.get('spearman_rho'))}",
                f"per-slot T effects by ablation (T only at that slot minus all-S, in the template) vs the "
                f"ground truth: Spearman {_num(ab.get('spearman_rho'))}; early-minus-late profile "
                f"{'matches' if ab.get('profile_matches') else 'does not match'}",
            ]
        )
    )
    return blocks


def section_bench(run: RunData) -> Section | None:
    """The benchmark section, or None when ``fusion3d bench score`` has not been run on this run."""
    if not isinstance(run.bench, dict) or not run.bench:
        return None
    sec = Section("bench", "Known-answer benchmark")
    sec.blocks.append(
        Para(
            "How far this run's answers agree with brute force: strategies of a ground-truth table, "
            "each trained alone, against the template's scores of the same strategies "
            "(`fusion3d bench score`)."
        )
    )
    for name, r in sorted(run.bench.items()):
        if isinstance(r, dict):
            sec.blocks.extend(_table_block(name, r))
    return sec
