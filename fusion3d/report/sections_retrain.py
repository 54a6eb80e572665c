"""Sections of a run report about strategies trained alone and diagnostics: the Table-2 analog
(and other strategies and backbones trained with the run's recipe), whether the template predicts
accuracy trained alone, the derived backbone designs, and CKA / receptive-field diagnostics.

A retrain table in which some label was trained with several seeds (``fusion3d retrain --seeds K``)
shows one row per label with top-1 and top-5 as mean +- standard error over its seeds, and, when
every label compared has at least two seeds, whether Opt (a derived design, for a backbone) trained
alone beats the best of S / ST / S+ST by more than one standard error
(``fusion3d.analysis.standalone``). With one seed per label the tables are those of a single seed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from fusion3d.analysis.standalone import compare_to_best, seed_summary
from fusion3d.models.units import DESIGN_UNITS, UNITS
from fusion3d.report import fmt
from fusion3d.report.document import Code, Figures, Img, Items, Missing, Para, Section, Table
from fusion3d.report.status import (
    RETRAIN_LABELS,
    _commands,
    _missing_retrain,
    _retrain_cmd,
    base_labels,
    retrain_parts,
)
from fusion3d.run.io import RunData
from fusion3d.run.layout import FILES

TABLE2_HEADER = [
    "strategy",
    "units per slot",
    "top-1 (trained alone)",
    "top-5 (trained alone)",
    "MACs per clip",
    "params",
    "epochs",
    "trained alone: measured on",
    "in the template: selection top-1",
]
BACKBONES_HEADER = [
    "label",
    "network",
    "units per block",
    "top-1",
    "top-5",
    "MACs per clip",
    "params",
    "epochs",
    "measured on",
]


def _retrain_cells(r) -> list[str]:
    """The cells every retrain table shows: strategy, top-1, top-5, MACs, params, epochs, views."""
    return [
        fmt.code(r.get("strategy")),
        fmt.pct(r.get("top1")),
        fmt.pct(r.get("top5")),
        fmt.macs(r.get("macs")),
        fmt.params(r.get("params")),
        str(r.get("epochs", "–")),
        str(r.get("measured_on", "measured on: not recorded")),
    ]


def _finished(r) -> bool:
    return str(r.get("complete", True)).lower() in ("true", "1")


def multi_seed(t: pd.DataFrame | None) -> bool:
    """Whether some label of the retrain table ``t`` was trained with more than one seed."""
    return t is not None and "base_label" in t and bool(t["base_label"].astype(str).duplicated().any())


def _seed_groups(t: pd.DataFrame) -> list[tuple[str, pd.Series, pd.DataFrame]]:
    """(base label, the row of the run's seed (else the first), every row of the label) per base
    label, in the table's order."""
    out = []
    for base, g in t.groupby(t["base_label"].astype(str), sort=False):
        own = g[g["label"].astype(str) == base]
        out.append((base, (own if len(own) else g).iloc[0], g))
    return out


def _mean_se(g: pd.DataFrame, col: str) -> str:
    """``mean ± SE% (n seeds)`` of column ``col`` over a label's rows."""
    if col not in g:
        return "–"
    s = seed_summary(g.assign(_label=0), col, "_label").iloc[0]
    n = int(s["n"])
    if n == 0:
        return "–"
    if n == 1:
        return f"{fmt.pct(s['mean'])} (1 seed)"
    return f"{s['mean']:.1f} ± {s['se']:.1f}% ({n} seeds)"


def _seed_cells(r, g: pd.DataFrame) -> list[str]:
    """``_retrain_cells`` of a label trained with several seeds: top-1 and top-5 as mean ± SE."""
    cells = _retrain_cells(r)
    cells[1], cells[2] = _mean_se(g, "top1"), _mean_se(g, "top5")
    return cells


def _not_finished(g: pd.DataFrame) -> str:
    k = sum(not _finished(r) for _, r in g.iterrows())
    if not k:
        return ""
    return " (**not finished**)" if len(g) == 1 else f" (**{k} of {len(g)} seeds not finished**)"


def _seed_caption(t: pd.DataFrame | None) -> str:
    if not multi_seed(t):
        return ""
    return (
        " Top-1 and top-5: mean ± standard error of the mean over the label's training seeds "
        "(`fusion3d retrain --seeds K`; sample SD / sqrt(n)); the other columns are the run's seed's."
    )


def _seed_verdict(
    t: pd.DataFrame | None, label: str, canon: list[str], name: str, versus: str
) -> Para | None:
    """The sentence "<name> trained alone: X ± se vs <versus> (best) Y ± se: <verdict>", when
    ``label`` and every label of ``canon`` have at least two seeds in ``t``; else None."""
    if not multi_seed(t):
        return None
    names = [label, *canon]
    rows = t[t["base_label"].astype(str).isin(names)]
    summ = seed_summary(rows.assign(base_label=rows["base_label"].astype(str)))
    n = dict(zip(summ["base_label"], summ["n"]))
    if any(n.get(x, 0) < 2 for x in names):
        return None
    c = compare_to_best(summ, label, canon)
    unfinished = (
        "" if all(_finished(r) for _, r in rows.iterrows()) else " **Some of these seeds have not finished.**"
    )
    return Para(
        f"{name} trained alone: {c['mean']:.1f} ± {c['se']:.1f}% vs {versus} ({c['best']}) "
        f"{c['best_mean']:.1f} ± {c['best_se']:.1f}%: **{c['verdict']}** (difference {c['diff']:+.1f} "
        f"points, combined standard error {c['se_diff']:.1f}; {c['n']} and {c['best_n']} seeds; mean ± "
        f"standard error).{unfinished}"
    )


def _table2_rows(run: RunData, t: pd.DataFrame | None = None) -> list[list[str]]:
    """Rows of the retrain table (default: the Table-2 part) with the same strategy's template score;
    one row per label with mean ± SE when some label has several seeds."""
    t = retrain_parts(run)[0] if t is None else t
    if t is None:
        return []
    order = {lab: i for i, lab in enumerate(RETRAIN_LABELS)}
    sel = {} if run.strategies is None else {str(r["id"]): r for _, r in run.strategies.iterrows()}
    col = run.score_col

    def template(r) -> str:
        s = sel.get(str(r.get("id")))
        return fmt.pct(s.get(col)) if s is not None else "–"

    if multi_seed(t):
        t = t.assign(_o=[order.get(str(x), len(order)) for x in t["base_label"]]).sort_values(
            ["_o", "base_label", "seed"], kind="stable"
        )
        rows = []
        for base, r, g in _seed_groups(t):
            label = "Opt" if base == "opt" else base
            rows.append([f"**{label}**{_not_finished(g)}", *_seed_cells(r, g), template(r)])
        return rows
    t = t.assign(_o=[order.get(str(x), len(order)) for x in t["label"]]).sort_values(
        ["_o", "label"], kind="stable"
    )
    rows = []
    for _, r in t.iterrows():
        label = str(r["label"])
        label = "Opt" if label == "opt" else label
        done = "" if _finished(r) else " (**not finished**)"
        rows.append([f"**{label}**{done}", *_retrain_cells(r), template(r)])
    return rows


def _table2_blocks(run: RunData, t2: pd.DataFrame | None, caption: str) -> list:
    if t2 is None:
        return [
            Missing(
                "No strategy has been trained alone yet. The Table-2 analog trains S, ST, S+ST and "
                "Opt from scratch with the run's recipe, one command each.",
                " ; ".join(_retrain_cmd(run, lab) for lab in RETRAIN_LABELS),
            )
        ]
    blocks = [Table(TABLE2_HEADER, _table2_rows(run, t2), caption + _seed_caption(t2))]
    verdict = _seed_verdict(t2, "opt", list(DESIGN_UNITS), "Opt", "the best canonical")
    if verdict is not None:
        blocks.append(verdict)
    missing = _missing_retrain(run)
    if missing:
        blocks.append(
            Missing(
                f"Not trained alone yet: {', '.join(missing)}.",
                " ; ".join(_retrain_cmd(run, lab) for lab in missing),
            )
        )
    return blocks


def _other_blocks(run: RunData, other: pd.DataFrame, caption: str) -> list:
    """Other strategies of this network trained alone (the validation stage's picks are counted)."""
    blocks = []
    picked = set()
    if run.validate and isinstance(run.validate.get("strategies"), list):
        picked = {str(x) for x in run.validate["strategies"]}
    rest = other[~other["id"].astype(str).isin(picked)] if picked else other
    if picked & set(other["id"].astype(str)):
        k = len(base_labels(other)) - len(base_labels(rest))
        blocks.append(
            Para(
                f"{k} more {'strategy' if k == 1 else 'strategies'} trained alone by the "
                f"validation stage {'is' if k == 1 else 'are'} in the validation section."
            )
        )
    if len(rest):
        blocks.append(
            Table(
                TABLE2_HEADER,
                _table2_rows(run, rest),
                "Other strategies of this network trained alone. " + caption + _seed_caption(rest),
            )
        )
    return blocks


def _backbones_table(run: RunData, backbones: pd.DataFrame) -> Table:
    if multi_seed(backbones):
        rows = [
            [fmt.code(base) + _not_finished(g), str(r.get("model", "?")), *_seed_cells(r, g)]
            for base, r, g in _seed_groups(backbones)
        ]
    else:
        rows = [
            [fmt.code(r["label"]), str(r.get("model", "?")), *_retrain_cells(r)]
            for _, r in backbones.iterrows()
        ]
    return Table(
        BACKBONES_HEADER,
        rows,
        "Other backbones trained on this run's data (the Table-6 analog); each row's recipe, with "
        f"any overrides, is in {run.files.retrain_dir.name}/<label>/{FILES['config']}."
        + _seed_caption(backbones),
    )


def _backbone_verdicts(backbones: pd.DataFrame) -> list[Para]:
    """Per backbone, each design (a label that is not a unit) against the backbone's S / ST / S+ST."""
    out = []
    for base in base_labels(backbones):
        strategy, _, model = base.rpartition("@")
        if not strategy or strategy in UNITS:
            continue
        canon = [f"{u}@{model}" for u in DESIGN_UNITS]
        v = _seed_verdict(backbones, base, canon, fmt.code(base), f"the best of {model}'s S / ST / S+ST")
        if v is not None:
            out.append(v)
    return out


def _section_table2(run: RunData) -> Section:
    sec = Section("table2", "Strategies trained alone (Table-2 analog)")
    t2, other, backbones = retrain_parts(run)
    caption = (
        f"{FILES['retrain']}. Last column: the same strategy scored inside the template "
        f"({fmt.score_label(run.score_col)}; {run.views()})."
    )
    sec.blocks.extend(_table2_blocks(run, t2, caption))
    if other is not None:
        sec.blocks.extend(_other_blocks(run, other, caption))
    if backbones is not None:
        sec.blocks.append(_backbones_table(run, backbones))
        sec.blocks.extend(_backbone_verdicts(backbones))
    return sec


# ----------------------------------------------------------------------------- agreement (validate)


def _correlation_table(v: dict, measured: str) -> Table:
    pv = v.get("p_values") if isinstance(v.get("p_values"), dict) else {}

    def cell(key):
        s = fmt.num(v.get(key), 3)
        p = pv.get(key)
        return s + (f" (p = {p:.3g})" if fmt.isnum(p) and s != "–" else "")

    rows = [
        [
            "template accuracy, before BN recalibration",
            cell("kendall_tau_before"),
            cell("spearman_rho_before"),
        ],
        ["template accuracy, after BN recalibration", cell("kendall_tau_after"), cell("spearman_rho_after")],
        ["MACs alone (baseline: bigger is better)", cell("kendall_tau_flops"), cell("spearman_rho_flops")],
    ]
    n = v.get("n")
    return Table(
        ["predictor of the trained-alone ranking", "Kendall tau", "Spearman rho"],
        rows,
        f"Rank correlation over {n if n is not None else '?'} strategies; measured on: {measured}.",
    )


def _agreement_strategies_table(vc: pd.DataFrame, measured: str) -> Table:
    rows = [
        [
            fmt.code(r.get("strategy")),
            str(r.get("source", "–")),
            fmt.pct(r.get("top1_before")),
            fmt.pct(r.get("top1_after")),
            fmt.pct(r.get("standalone_top1")),
            fmt.macs(r.get("macs")),
            fmt.params(r.get("params")),
        ]
        for _, r in vc.iterrows()
    ]
    return Table(
        [
            "units per slot",
            "source",
            "template top-1 before recal.",
            "template top-1 after recal.",
            "top-1 trained alone",
            "MACs per clip",
            "params",
        ],
        rows,
        f"{FILES['agreement_csv']}; measured on: {measured}.",
    )


def _section_validate(run: RunData) -> Section:
    sec = Section("validate", "Does the template predict accuracy trained alone?")
    v = run.validate
    if v is None:
        sec.blocks.append(
            Missing(
                "The validation stage has not run. It trains a set of strategies alone and "
                "measures the rank correlation between their accuracy inside the template and "
                "trained alone.",
                _commands(run)["validate"],
            )
        )
        return sec
    measured = v.get("measured_on", "measured on: not recorded")
    sec.blocks.append(_correlation_table(v, measured))
    ta, tf = v.get("kendall_tau_after"), v.get("kendall_tau_flops")
    if fmt.isnum(ta) and fmt.isnum(tf):
        verdict = "better than" if ta > tf else ("no better than" if ta < tf else "as good as")
        sec.blocks.append(
            Para(
                f"With BN recalibration the template's ranking (tau {ta:.3f}) is {verdict} ranking by "
                f"cost alone (tau {tf:.3f})."
            )
        )
    if run.files.agreement_scatter.is_file():
        sec.blocks.append(
            Img(
                run.files.agreement_scatter,
                "template accuracy vs accuracy trained alone",
                f"Measured on: {measured}.",
            )
        )
    vc = run.agreement_table()
    if vc is not None and {"strategy", "standalone_top1"} <= set(vc.columns):
        sec.blocks.append(_agreement_strategies_table(vc, measured))
    sec.blocks.append(Code(json.dumps(v, indent=1), FILES["agreement"], "json"))
    return sec


# ----------------------------------------------------------------------------- derived designs, diagnostics


def _derived_table(derived: list[tuple[Path, dict]], rel_to: Path) -> Table:
    rows = []
    for p, d in derived:
        units = d.get("string") or (
            "|".join(map(str, d["units"])) if isinstance(d.get("units"), list) else d.get("units", "?")
        )
        canon = d.get("canonical") if isinstance(d.get("canonical"), dict) else {}
        ref = ", ".join(
            f"all-{u} {fmt.macs((c or {}).get('macs'))}" for u, c in canon.items() if isinstance(c, dict)
        )
        rule = str(d.get("rule", "–")) + (f" ({d['convention']} convention)" if d.get("convention") else "")
        if fmt.isnum(d.get("flops_budget_g")):
            rule += f", budget {d['flops_budget_g']} GMACs"
        rows.append(
            [
                fmt.code(os.path.relpath(p, rel_to)),
                str(d.get("backbone", "?")),
                fmt.code(units),
                fmt.macs(d.get("macs")) + (f" (vs {ref})" if ref else ""),
                fmt.params(d.get("params")),
                rule,
            ]
        )
    return Table(
        ["file", "backbone", "units per block", "MACs per clip", "params", "rule"],
        rows,
        "Backbone designs derived from the template's per-slot ablation (rule `ablation`) or marginals "
        "(computed, not trained or measured). "
        "Train one with the run's recipe: `fusion3d retrain RUN --strategy DESIGN.json model.name=BACKBONE`.",
    )


def _cka_run_text(r) -> str:
    if isinstance(r, dict):
        slots = r.get("slots") or [r.get("first", "?"), r.get("last", "?")]
        s = ", ".join(fmt.code(x) for x in slots)
        if fmt.isnum(r.get("min_adjacent_cka")):
            s += f" (adjacent CKA at least {r['min_adjacent_cka']:.3f})"
        return s
    if isinstance(r, (list, tuple)):
        return ", ".join(fmt.code(x) for x in r)
    return fmt.code(r)


def _cka_blocks(c: dict) -> list:
    """What the CKA file says: the strategies compared, the redundant runs, where it was measured."""
    blocks = []
    strat = c.get("strategies") if isinstance(c.get("strategies"), dict) else {}
    desc = [
        f"{k}: {fmt.code((v or {}).get('string', '?'))} ({(v or {}).get('source', '?')})"
        for k, v in strat.items()
        if isinstance(v, dict)
    ]
    if desc:
        blocks.append(Para("CKA of slot outputs; " + "; ".join(desc) + "."))
    runs = c.get("redundant_runs") or []
    thr = f" (adjacent CKA above {c['threshold']})" if fmt.isnum(c.get("threshold")) else ""
    if runs:
        blocks.append(Para(f"Redundant runs of consecutive slots{thr}, candidates for removal:"))
        blocks.append(Items([_cka_run_text(r) for r in runs]))
    else:
        blocks.append(Para(f"{FILES['cka']} lists no redundant run of slots{thr}."))
    if fmt.isnum(c.get("between_diagonal_mean")):
        blocks.append(
            Para(f"Mean CKA between the two strategies at the same slot: {c['between_diagonal_mean']:.3f}.")
        )
    where = c.get("views") or c.get("measured_on")
    if where:
        blocks.append(Para(f"CKA measured on: {where}."))
    return blocks


def _section_diagnostics(run: RunData) -> Section | None:
    sec = Section("diagnostics", "Diagnostics")
    f = run.files
    if f.rf_vs_accuracy.is_file():
        sec.blocks.append(
            Img(
                f.rf_vs_accuracy,
                "temporal receptive field vs accuracy",
                f"Temporal receptive field at the head vs template accuracy of the scored strategies "
                f"({run.views()}; {fmt.score_label(run.score_col)}).",
            )
        )
    cka_imgs = [
        Img(p, t)
        for p, t in ((f.cka_within, "CKA within one strategy"), (f.cka_between, "CKA between two strategies"))
        if p.is_file()
    ]
    if cka_imgs:
        sec.blocks.append(Figures(cka_imgs, [i.alt for i in cka_imgs]))
    if run.cka:
        sec.blocks.extend(_cka_blocks(run.cka))
    if run.derived:
        sec.blocks.append(_derived_table(run.derived, run.dir))
    return sec if sec.blocks else None
