"""The demo page of ``fusion3d demo``'s output folder (``motion/`` and ``appearance/`` runs and the
demo's timings): its first section tells the story of the two datasets in numbers, with the two
Figure-4 plots side by side; the run reports are linked below it."""

from __future__ import annotations

from pathlib import Path

from fusion3d.report import fmt
from fusion3d.report.document import (
    CANONICAL,
    DATA_FREE,
    Document,
    Figures,
    Img,
    Links,
    Missing,
    Para,
    Section,
    Table,
)
from fusion3d.report.sections_retrain import TABLE2_HEADER, _derived_table, _seed_caption, _table2_rows
from fusion3d.report.status import RETRAIN_LABELS, _commands, _retrain_cmd, retrain_parts
from fusion3d.report.verdicts import _story_sentence, _verdict, headline
from fusion3d.run.io import RunData, read_json
from fusion3d.run.layout import FILES, RunDir

# The runs of a demo folder, in the order the page shows them.
DEMO_RUNS = ("motion", "appearance")
TITLE = "fusion3d demo: where does temporal modelling pay off?"


def _demo_table(verdicts: dict[str, dict]) -> Table:
    rows = []
    for name, v in verdicts.items():
        pr = v["probs"] or {}
        rows.append(
            [
                f"**{name}**",
                fmt.prob(pr.get("mean_s")),
                fmt.prob(pr.get("mean_t")),
                f"{pr['s_gt']} of {pr['n']}" if pr else "–",
                *[fmt.pct(v["acc"].get(k)) for _, k in CANONICAL],
                fmt.pct(v["opt"]),
                f"{v['views']}; {fmt.score_label(v['col'])}",
            ]
        )
    return Table(
        [
            "dataset",
            "mean p_S",
            "mean p_T",
            "slots with p_S > p_T",
            *(k for _, k in CANONICAL),
            "Opt",
            "accuracies measured on",
        ],
        rows,
        f"Drop probabilities: {DATA_FREE}. Accuracies: strategies scored inside the template, "
        "without retraining, on the selection split (never trained on).",
    )


def _timings_rows(demo: dict) -> list[list[str]]:
    rows = []
    for kind, r in (demo.get("results") or {}).items():
        t = (r or {}).get("timings") if isinstance(r, dict) else None
        items = []
        if isinstance(t, dict):
            items = list(t.items())
        elif isinstance(t, list):
            for e in t:
                if isinstance(e, (list, tuple)) and len(e) >= 2:
                    items.append((e[0], e[1]))
                elif isinstance(e, dict):
                    items.append((e.get("stage", e.get("name", "?")), e.get("seconds", e.get("time"))))
        for stage, sec in items:
            rows.append([str(kind), str(stage), fmt.num(sec, 1, " s")])
    return rows


def _story(demo_dir: Path, verdicts: dict[str, dict], absent: list[str]) -> Para:
    """One sentence per dataset, what the accuracies were measured on, and the runs that are missing."""
    labels = {(v["views"], v["col"]) for v in verdicts.values() if v["acc"]}
    shared = len(labels) == 1
    story = [_story_sentence(k, v, label=not shared) for k, v in verdicts.items()]
    if shared:
        views, col = labels.pop()
        story.append(
            f"Accuracies: strategies scored inside the template without retraining, {views} "
            f"({fmt.score_label(col)}); drop probabilities are {DATA_FREE}."
        )
    if absent:
        story.append(
            f"The {' and '.join(absent)} run{'s are' if len(absent) > 1 else ' is'} missing from "
            f"{fmt.code(demo_dir)}: run {fmt.code(fmt.cmd('fusion3d', 'demo', '--out', str(demo_dir)))}."
        )
    return Para(" ".join(story), "story")


def _figure4_blocks(runs: dict[str, RunData]) -> list:
    """The runs' Figure 4 side by side (a missing one is named with its command)."""
    blocks = []
    figs = [(k, r.files.figure4) for k, r in runs.items() if r.files.figure4.is_file()]
    if figs:
        blocks.append(
            Figures([Img(p, f"Figure 4, {k}") for k, p in figs], [f"{k}: Figure 4" for k, _ in figs])
        )
        blocks.append(
            Para(
                f"Per-slot marginal probability of S, ST and S+ST (paper convention q = 1 - sqrt(p); "
                f"{DATA_FREE}); markers: the Opt strategy's unit in each slot."
            )
        )
    for k, r in runs.items():
        if not r.files.figure4.is_file():
            blocks.append(Missing(f"Figure 4 of the {k} run is not drawn yet.", _commands(r)["analyze"]))
    return blocks


def _motion_table2(m: RunData) -> Table | Missing:
    """The motion run's strategies trained alone (the Table-2 analog), or the commands that train them."""
    t2 = retrain_parts(m)[0]
    if t2 is not None:
        return Table(
            TABLE2_HEADER,
            _table2_rows(m),
            f"motion: strategies trained alone from scratch (Table-2 analog, {FILES['retrain']}); "
            f"last column scored inside the template ({m.views()})." + _seed_caption(t2),
        )
    return Missing(
        "motion: no strategy trained alone yet (Table-2 analog).",
        " ; ".join(_retrain_cmd(m, lab) for lab in RETRAIN_LABELS),
    )


def _story_section(demo_dir: Path, runs: dict[str, RunData], absent: list[str]) -> Section:
    verdicts = {k: _verdict(r) for k, r in runs.items()}
    first = Section("story", "What the demo shows")
    first.blocks.append(_story(demo_dir, verdicts, absent))
    first.blocks.extend(_figure4_blocks(runs))
    if "motion" in runs:
        first.blocks.append(_motion_table2(runs["motion"]))
    if verdicts:
        first.blocks.append(_demo_table(verdicts))
    return first


def _timings_section(demo: dict) -> Section:
    tim = Section("timings", "Stage timings")
    rows = _timings_rows(demo)
    if not rows:
        tim.blocks.append(Para(f"{FILES['demo']} is missing or holds no timings.", "missing"))
        return tim
    wall = demo.get("wall_seconds")
    caption = ""
    if fmt.isnum(wall):
        caption = f"Total wall time {fmt.num(wall, 1, ' s')}; the two pipelines ran side by side."
    tim.blocks.append(Table(["dataset", "stage", "wall time"], rows, caption))
    if isinstance(demo.get("settings"), dict):
        settings = ", ".join(f"{k} {v}" for k, v in demo["settings"].items())
        tim.blocks.append(Para(f"Settings: {settings}."))
    return tim


def _links_section(runs: dict[str, RunData]) -> Section:
    links = Section("runs", "Run reports")
    html_name, md_name = FILES["report_html"], FILES["report_md"]
    items = [
        (f"{k}: full report of {fmt.code(r.dir)}", f"{k}/{html_name}", f"{k}/{md_name}")
        for k, r in runs.items()
    ]
    links.blocks.append(Links(items))
    for k, r in runs.items():
        links.blocks.append(Para(f"**{k}**: " + " ".join(headline(r))))
    return links


def demo_document(demo_dir: Path, runs: dict[str, RunData], absent: list[str]) -> Document:
    """The demo page of ``demo_dir`` whose runs are ``runs`` (by kind); ``absent``: kinds not there."""
    problems: list[str] = []
    demo = read_json(RunDir(demo_dir).demo, problems) or {}
    sections = [_story_section(demo_dir, runs, absent), _timings_section(demo), _links_section(runs)]
    if "motion" in runs and runs["motion"].derived:
        der = Section("derived", "Derived backbone designs (from the motion template)")
        der.blocks.append(_derived_table(runs["motion"].derived, demo_dir))
        sections.append(der)
    for prob in problems:
        sections[-1].blocks.append(Para(f"**Unreadable file**: {prob}", "missing"))
    meta = [f"demo folder {fmt.code(demo_dir)}", f"report generated {fmt.now()}"]
    return Document(TITLE, meta, sections)
