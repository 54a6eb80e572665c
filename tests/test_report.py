"""The report stage on a real tiny run (trained, sampled, analysed, one strategy retrained alone)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
from test_sample import shared_runs

from fusion3d.engine.standalone import run_retrain
from fusion3d.report import RunData, build_demo_report, build_report, headline
from fusion3d.stages.analyze import run_analyze

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Checks that every non-void tag is closed in order; collects images and text per <section>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.doctype = False
        self.section: str | None = None
        self.images: dict[str | None, list[dict]] = {}
        self.text: dict[str | None, list[str]] = {}
        self.tags: set[str] = set()
        self.hrefs: list[str] = []

    def handle_decl(self, decl):
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.section = a.get("id")
        if tag == "img":
            self.images.setdefault(self.section, []).append(a)
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        self.text.setdefault(self.section, []).append(data)

    def section_text(self, sid) -> str:
        return " ".join(" ".join(self.text.get(sid, [])).split())


def parse_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    page.close()
    assert page.doctype, "no <!DOCTYPE html>"
    assert not page.errors, page.errors[:5]
    assert page.stack == [], f"unclosed tags {page.stack}"
    assert {"html", "head", "body", "main", "section", "h1", "h2", "table"} <= page.tags
    return page


def md_sections(md: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def md_targets(md: str) -> list[str]:
    return [
        unquote(t) for t in re.findall(r"\]\(([^)\s]+)\)", md) if not t.startswith(("http:", "https:", "#"))
    ]


def decoded_images(page: Page, section=...) -> list[bytes]:
    imgs = [i for s, lst in page.images.items() if section is ... or s == section for i in lst]
    out = []
    for img in imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def full_run(tiny_motion, tmp_path_factory):
    """A tiny template trained, sampled and analysed, with all-S retrained alone (1 epoch)."""
    src = shared_runs(tiny_motion, tmp_path_factory)[1]
    run = tmp_path_factory.mktemp("report") / "motion"
    shutil.copytree(src, run)
    run_analyze(run, top_k=5)
    run_retrain(run, "S", ["train.warmup_epochs=0", "train.epochs=1"])
    return run


@pytest.fixture(scope="module")
def reported(full_run):
    html_path, md_path = build_report(full_run)
    return full_run, html_path, md_path


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("report.*", "retrain", "checkpoint.pt"))
    return dest


# ----------------------------------------------------------------------------- run report


def test_report_files_and_figures_are_written(reported):
    run, html_path, md_path = reported
    assert html_path == run / "report.html" and md_path == run / "report.md"
    for p in (html_path, md_path):
        assert p.is_file() and p.stat().st_size > 0
    for name in ("training_curves.png", "drop_probs.png"):
        assert (run / name).read_bytes()[:8] == PNG, name
    assert not list(run.glob(".*.tmp"))


def test_html_is_balanced_self_contained_and_embeds_png_data_uris(reported):
    run, html_path, _ = reported
    page = parse_page(html_path)
    text = html_path.read_text()
    assert "<script" not in text and "<link" not in text and "http://" not in text and "https://" not in text
    images = decoded_images(page)
    # training, drop probabilities, two Figure 4, accuracy vs MACs, histogram, receptive field vs score
    assert len(images) == 7
    assert all(b[:8] == PNG for b in images)
    assert (run / "figure4.png").read_bytes() in images and (
        run / "training_curves.png"
    ).read_bytes() in images
    assert "<details>" in text  # the config is collapsible


def test_markdown_references_files_that_exist(reported):
    run, _, md_path = reported
    md = md_path.read_text()
    targets = md_targets(md)
    assert {"figure4.png", "figure4_sampling.png", "training_curves.png", "drop_probs.png"} <= set(targets)
    for t in targets:
        assert (run / t).is_file(), t


def test_numbers_are_labelled_with_split_and_views(reported):
    run, html_path, md_path = reported
    sec = md_sections(md_path.read_text())
    views = pd.read_csv(run / "strategies.csv")["views"].iloc[0]
    measured_on = pd.read_csv(run / "retrain.csv")["measured_on"].iloc[0]
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val_views = next(r["val_views"] for r in val if r.get("kind") == "epoch" and "val_views" in r)
    assert views in sec["Summary"] and views in sec["Sampled strategies"]
    assert measured_on in sec["Strategies trained alone (Table-2 analog)"]
    assert val_views in sec["Training curves"]
    # the same labels in the HTML, inside the section that holds the numbers
    page = parse_page(html_path)
    assert views in page.section_text("sampling") and measured_on in page.section_text("table2")
    # each row of the sampling table carries its own label
    rows = [ln for ln in sec["Sampled strategies"].splitlines() if ln.startswith("| all-")]
    assert len(rows) == 3 and all(views in r for r in rows)


def test_headline_is_computed_from_the_run(reported):
    run, _, md_path = reported
    md = md_path.read_text()
    summary = json.loads((run / "summary.json").read_text())
    p = summary["drop_probs"]
    k = sum(ps > pt for ps, pt in p)
    assert (
        f"in {k} of {len(p)} slots" in md_sections(md)["Summary"]
        or f"in {sum(pt > ps for ps, pt in p)} of" in md
    )
    analysis = json.loads((run / "analysis.json").read_text())
    assert f"{analysis['opt'][analysis['score_column']]:.1f}%" in md_sections(md)["Summary"]


def test_missing_stages_name_the_command_that_runs_them(reported):
    run, _, md_path = reported
    md = md_path.read_text()
    assert f"fusion3d validate {run}" in md_sections(md)["Does the template predict accuracy trained alone?"]
    table2 = md_sections(md)["Strategies trained alone (Table-2 analog)"]
    assert "**S**" in table2  # the real retrain of all-S
    for label in ("ST", "S+ST", "opt"):
        assert f"fusion3d retrain {run} --strategy {label}" in table2


def test_headline_states_the_preference_the_probabilities_show(full_run, tmp_path):
    run = _copy(full_run, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    n = len(summary["drop_probs"])
    for probs, words in (
        (
            [[0.5, 0.1]] * n,
            f"**Temporal paths preferred**: the S-path drop probability is above "
            f"the T-path's in {n} of {n} slots",
        ),
        (
            [[0.1, 0.5]] * n,
            f"**Spatial paths preferred**: the T-path drop probability is above "
            f"the S-path's in {n} of {n} slots",
        ),
        ([[0.121, 0.120]] * n, "**No clear preference between S and T paths**"),
    ):  # 1% apart
        summary["drop_probs"] = probs
        (run / "summary.json").write_text(json.dumps(summary))
        assert words in " ".join(headline(RunData(run)))


def test_optional_inputs_appear_and_tolerate_missing_keys(full_run, tmp_path):
    run = _copy(full_run, tmp_path / "run")
    png = (full_run / "acc_hist.png").read_bytes()
    for name in ("validate_scatter.png", "rf_vs_accuracy.png", "cka_within.png", "cka_between.png"):
        (run / name).write_bytes(png)
    strategies = pd.read_csv(run / "strategies.csv", dtype={"id": str})
    pick = strategies.iloc[-1]
    (run / "validate.json").write_text(
        json.dumps(
            {  # no 'before' keys, one p-value
                "kendall_tau_after": 0.6123,
                "spearman_rho_after": 0.75,
                "kendall_tau_flops": 0.2,
                "n": 8,
                "p_values": {"kendall_tau_after": 0.012},
                "measured_on": "test subset, 1 clip x 1 crop, per-video top-1",
                "strategies": [pick["id"]],
            }
        )
    )
    pd.DataFrame(
        [
            {
                "id": pick["id"],
                "strategy": pick["strategy"],
                "source": "sampled",
                "top1_before": 40.0,
                "top1_after": 45.0,
                "macs": 1e6,
                "params": 1e4,
                "standalone_top1": 43.21,
                "standalone_top5": 90.0,
                "retrain_label": pick["id"],
            }
        ]
    ).to_csv(run / "validate.csv", index=False)
    retrain = pd.read_csv(full_run / "retrain.csv", dtype={"id": str})
    own = retrain.iloc[0].to_dict()
    rows = [
        own,
        {**own, "label": pick["id"], "id": pick["id"], "strategy": pick["strategy"], "top1": 43.21},
        {**own, "label": "S@resnet18_3d", "model": "resnet18_3d", "top1": 12.34},
    ]
    pd.DataFrame(rows).to_csv(run / "retrain.csv", index=False)
    (run / "cka.json").write_text(
        json.dumps(
            {
                "threshold": 0.9,
                "redundant_runs": [
                    ["block1.layer1", "block1.layer2"],  # the plain form, and the form fusion3d cka writes
                    {
                        "first": "block2.layer1",
                        "last": "block2.layer2",
                        "slots": ["block2.layer1", "block2.layer2"],
                        "length": 2,
                        "min_adjacent_cka": 0.93,
                    },
                ],
                "views": "selection split, 16 clips",
            }
        )
    )
    (run / "derived").mkdir()
    (run / "derived" / "resnet50_argmax.json").write_text(
        json.dumps(
            {
                "backbone": "resnet50",
                "string": "S+ST|ST|ST",
                "macs": 3.2e10,
                "params": 2.4e7,
                "rule": "argmax",
            }
        )
    )
    html_path, md_path = build_report(run)
    md = md_path.read_text()
    sec = md_sections(md)
    val = sec["Does the template predict accuracy trained alone?"]
    assert (
        "0.612 (p = 0.012)" in val
        and "0.200" in val
        and "test subset, 1 clip x 1 crop, per-video top-1" in val
    )
    assert "over 8 strategies" in val and "–" in val  # the missing 'before' keys print as a dash
    assert "43.2%" in val  # validate.csv's stand-alone accuracy
    table2 = sec["Strategies trained alone (Table-2 analog)"]
    assert "1 more strategy trained alone by the validation stage is" in table2
    assert "Table-6 analog" in table2 and "resnet18_3d" in table2 and "12.3%" in table2
    diag = sec["Diagnostics"]
    assert (
        "`block1.layer1`, `block1.layer2`" in diag
        and "`block2.layer1`, `block2.layer2` (adjacent CKA" in diag
    )
    assert "resnet50" in diag and "argmax" in diag and "selection split, 16 clips" in diag
    for t in md_targets(md):
        assert (run / t).is_file(), t
    page = parse_page(html_path)
    assert len(decoded_images(page, "validate")) == 1 and len(decoded_images(page, "diagnostics")) == 3


def test_interrupted_training_still_yields_a_report_saying_what_is_missing(full_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(full_run / "config.yaml", run / "config.yaml")
    lines = (full_run / "metrics.jsonl").read_text().splitlines()
    first_epoch = next(i for i, ln in enumerate(lines) if json.loads(ln)["kind"] == "epoch")
    (run / "metrics.jsonl").write_text(
        "\n".join(lines[: first_epoch + 1]) + '\n{"kind": "st'
    )  # torn last line
    html_path, md_path = build_report(run)
    md = md_path.read_text()
    sec = md_sections(md)
    resume = f"fusion3d train {run}/config.yaml run.out={run} --resume auto"
    assert "**not finished**: 1 of 2 epochs done" in sec["Summary"] and resume in sec["Summary"]
    assert "Drop probabilities not learned yet" in sec["Summary"]
    assert "v-DropPath phase has not started" in sec["Drop probabilities"]
    assert f"fusion3d sample {run} --num 100" in sec["Sampled strategies"]
    assert f"fusion3d analyze {run}" in sec["Layer-level preference (Figure 4)"]
    assert f"fusion3d retrain {run} --strategy S" in sec["Strategies trained alone (Table-2 analog)"]
    for t in md_targets(md):
        assert (run / t).is_file(), t
    page = parse_page(html_path)
    assert [b[:8] for b in decoded_images(page)] == [PNG]  # the training curves only


def test_a_run_directory_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "no_such_run"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_report(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        build_report(tmp_path / "empty")


# ----------------------------------------------------------------------------- demo report


def test_demo_report_first_section_shows_both_figure4_plots(full_run, tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    motion = _copy(full_run, demo / "motion")
    shutil.copy(full_run / "retrain.csv", motion / "retrain.csv")
    _copy(full_run, demo / "appearance")
    (demo / "demo.json").write_text(
        json.dumps(
            {
                "wall_seconds": 12.5,
                "settings": {"classes": 4},
                "results": {
                    k: {"kind": k, "timings": [[f"train ({k})", 3.25], ["analyze", 0.5]]}
                    for k in ("motion", "appearance")
                },
            }
        )
    )
    html_path = build_demo_report(demo)
    assert html_path == demo / "report.html" and (demo / "report.md").is_file()
    page = parse_page(html_path)
    first = decoded_images(page, "story")
    assert first == [
        (demo / "motion" / "figure4.png").read_bytes(),
        (demo / "appearance" / "figure4.png").read_bytes(),
    ]
    story = page.section_text("story")
    assert "On motion data" in story and "On appearance data" in story
    assert (
        pd.read_csv(motion / "retrain.csv")["measured_on"].iloc[0] in story
    )  # the Table-2 analog is on screen one
    md = (demo / "report.md").read_text()
    first_md = md_sections(md)["What the demo shows"]
    assert "motion/figure4.png" in first_md and "appearance/figure4.png" in first_md
    for t in md_targets(md):
        assert (demo / t).is_file(), t
    for k in ("motion", "appearance"):
        assert (demo / k / "report.html").is_file() and f"{k}/report.html" in page.hrefs
    assert "3.2 s" in page.section_text("timings") and "12.5 s" in page.section_text("timings")


def test_demo_story_follows_the_numbers():
    from fusion3d.report import _story_sentence

    def verdict(acc, p_s, p_t, units):
        import numpy as np

        from fusion3d.report import _ps_pt

        return {
            "acc": acc,
            "opt": 90.0,
            "opt_units": units,
            "views": "selection split",
            "col": "top1_after",
            "n_videos": 54,
            "probs": _ps_pt(np.array([[p_s, p_t]] * 6)),
        }

    motion = _story_sentence(
        "motion",
        verdict({"all-S": 15.0, "all-ST": 85.0, "all-S+ST": 89.0}, 0.4, 0.1, ["ST"] * 6),
        label=False,
    )
    assert "temporal units pay off and the analyzer finds them" in motion and "every slot" in motion
    flat = _story_sentence(
        "appearance",
        verdict({"all-S": 50.0, "all-ST": 44.4, "all-S+ST": 51.9}, 0.4, 0.4, ["S"] * 6),
        label=True,
    )
    assert "no clear difference" in flat and "[selection split" in flat
    spatial = _story_sentence("x", verdict({"all-S": 90.0, "all-ST": 40.0}, 0.1, 0.5, ["S"] * 6), label=False)
    assert "spatial units do better and the analyzer prefers them" in spatial
    assert "ablation" not in spatial  # no ablation.csv: nothing said about it


def test_the_ablation_sentence_names_the_slots_where_t_pays_off_beyond_noise():
    import pandas as pd

    from fusion3d.analysis.ablation import ablation_table
    from fusion3d.report.verdicts import ablation_sentence

    names = ["a", "b", "c"]
    scores = {"S|S|S": 40.0, "ST|S|S": 80.0, "S+ST|S|S": 70.0, "none|S|S": 30.0}
    scores.update({"S|ST|S": 44.0, "S|S+ST|S": 41.0, "S|none|S": 40.0})
    scores.update({"S|S|ST": 20.0, "S|S|S+ST": 25.0, "S|S|none": 39.0})
    table = ablation_table(scores, names, n_videos=100)
    assert table["t_verdict"].tolist() == ["temporal", "none", "spatial"]
    assert table["t_effect"].tolist() == [40.0, 4.0, -20.0] and table["t_best_unit"].tolist()[0] == "ST"
    text = ablation_sentence(table)
    assert "pay off at 1 of 3 slots" in text and "`a` (ST +40.0)" in text and "`b`" not in text
    flat = ablation_sentence(table.assign(t_verdict="none"))
    assert "no slot where a temporal unit pays off beyond noise" in flat and "`a`" in flat  # largest gain
    assert ablation_table({"S|S": 1.0}, ["a", "b"], 10) is None  # the ablation was not scored
    assert ablation_sentence(None) is None and ablation_sentence(pd.DataFrame()) is None


def test_the_trust_paragraph_reads_each_tables_recipe_length():
    from fusion3d.report.sections_trust import _budget_sentence, _recipe_epochs

    epochs = _recipe_epochs(["motion", "texture", "no-such-table"])
    assert epochs == {
        "motion": 12,
        "texture": 8,
    }  # from the shipped tables' recipes; a missing one is left out
    assert "(8-12 epochs" in _budget_sentence(epochs) and "(12 epochs" in _budget_sentence({"motion": 12})
    assert _budget_sentence({}) == ""
