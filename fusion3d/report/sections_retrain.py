"""Sections of a run report about strategies trained alone and diagnostics: the Table-2 analog
(and other strategies and backbones trained with the run's recipe), whether the template predicts
accuracy trained alone, the derived backbone designs, and CKA / receptive-field diagnostics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from fusion3d.report import fmt
from fusion3d.report.document import Code, Figures, Img, Items, Missing, Para, Section, Table
from fusion3d.report.status import RETRAIN_LABELS, _commands, _missing_retrain, _retrain_cmd, retrain_parts
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


def _table2_rows(run: RunData, t: pd.DataFrame | None = None) -> list[list[str]]:
    """Rows of the retrain table (default: the Table-2 part) with the same strategy's template score."""
    t = retrain_parts(run)[0] if t is None else t
    if t is None:
        return []
    order = {lab: i for i, lab in enumerate(RETRAIN_LABELS)}
    t = t.assign(_o=[order.get(str(x), len(order)) for x in t["label"]]).sort_values(
        ["_o", "label"], kind="stable"
    )
    sel = {} if run.strategies is None else {str(r["id"]): r for _, r in run.strategies.iterrows()}
    col = run.score_col
    rows = []
    for _, r in t.iterrows():
        s = sel.get(str(r.get("id")))
        label = str(r["label"])
        label = "Opt" if label == "opt" else label
        done = "" if str(r.get("complete", True)).lower() in ("true", "1") else " (**not finished**)"
        rows.append([f"**{label}**{done}", *_retrain_cells(r), fmt.pct(s.get(col)) if s is not None else "–"])
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
    blocks = [Table(TABLE2_HEADER, _table2_rows(run, t2), caption)]
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
        k = len(other) - len(rest)
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
                "Other strategies of this network trained alone. " + caption,
            )
        )
    return blocks


def _backbones_table(run: RunData, backbones: pd.DataFrame) -> Table:
    rows = [
        [fmt.code(r["label"]), str(r.get("model", "?")), *_retrain_cells(r)] for _, r in backbones.iterrows()
    ]
    return Table(
        BACKBONES_HEADER,
        rows,
        "Other backbones trained on this run's data (the Table-6 analog); each row's recipe, with "
        f"any overrides, is in {run.files.retrain_dir.name}/<label>/{FILES['config']}.",
    )


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
        "Backbone designs derived from the template's marginals (computed, not trained or measured). "
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
