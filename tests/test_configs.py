"""The shipped configs: every one loads; the dataset configs hold the paper's hyper-parameters
(docs/method.md §3-§4) and read a tiny fake dataset in the official layout end to end (parse, probe,
carve the selection split, one training clip and one evaluation view with the config's sampling
and transforms); the README's "Running on real datasets" commands and table agree with them.

Fake trees reuse the official label lists of ``test_formats`` and the real tiny videos of
``videos``. Nothing here builds or trains the densenet121_3d template.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from test_formats import K6_HEADER, SSV1_LABELS, SSV2_LABELS, write
from videos import write_numbered_frame_folder, write_numbered_video

from fusion3d.cli import build_parser, main
from fusion3d.config import load_config
from fusion3d.data.dataset import EvalViews, TrainClips, load_splits, load_table

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
DATASETS = ("ucf101", "kinetics400", "ssv1", "ssv2")

# docs/method.md §4 (schedule, k) and §3 (16x224x224 clips), per dataset.
PAPER = {
    "ucf101": {
        "format": "ucf101",
        "k": 50,
        "epochs": 90,
        "lr": 0.005,
        "batch_size": 32,
        "sampling": "dense",
        "flip": "on",
        "eval_subset": "test",
    },
    "kinetics400": {
        "format": "kinetics",
        "k": 10,
        "epochs": 110,
        "lr": 0.01,
        "batch_size": 64,
        "sampling": "dense",
        "flip": "on",
        "eval_subset": "val",
    },
    "ssv1": {
        "format": "ssv1",
        "k": 250,
        "epochs": 90,
        "lr": 0.005,
        "batch_size": 32,
        "sampling": "segment",
        "flip": "swap",
        "eval_subset": "val",
    },
    "ssv2": {
        "format": "ssv2",
        "k": 50,
        "epochs": 90,
        "lr": 0.005,
        "batch_size": 32,
        "sampling": "segment",
        "flip": "swap",
        "eval_subset": "val",
    },
}
# docs/data_formats.md, Flip and label swap: the label-swap maps of Something-Something.
SWAP = {"ssv1": [[2, 4], [30, 41], [52, 66]], "ssv2": [[86, 87], [93, 94], [166, 167]]}


def config_path(name: str) -> Path:
    return ROOT / "configs" / f"{name}.yaml"


def test_the_four_dataset_configs_exist():
    assert {p.stem for p in CONFIGS} >= set(DATASETS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.run.out and cfg.data.root and cfg.data.annotations


@pytest.mark.parametrize("name", DATASETS)
def test_every_value_in_a_dataset_config_names_its_source(name):
    for lineno, line in enumerate(config_path(name).read_text().splitlines(), 1):
        m = re.match(r"^\s*[\w.]+:\s*(\S.*)$", line)
        if m and not line.lstrip().startswith("#"):
            assert " # " in line and line.split(" # ", 1)[1].strip(), (
                f"{name}.yaml:{lineno} has no source comment: {line!r}"
            )


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_config_holds_the_paper_hyper_parameters(name):
    cfg, want = load_config(config_path(name)), PAPER[name]
    t, d, m = cfg.train, cfg.data, cfg.model
    # the template and its gates (docs/method.md §3, §4)
    assert m.name == "densenet121_3d" and m.drop_init == 0.1 and m.temperature == 0.2 and m.strategy == ""
    # the recipe (docs/method.md §4)
    assert t.k == want["k"] and t.reg_form == "code"
    assert t.warmup_epochs == 50 and t.epochs == want["epochs"]
    assert t.optimizer == "sgd" and t.momentum == 0.9 and t.lr == pytest.approx(want["lr"])
    assert t.schedule == "multistep" and t.milestones == [40, 60, 80] and t.gamma == 0.1
    assert t.batch_size == want["batch_size"] and t.sync_bn is True
    # clips (docs/method.md §3: 16x224x224) and the dataset conventions (docs/data_formats.md)
    assert (
        d.format == want["format"] and d.sampling == want["sampling"] and d.eval_subset == want["eval_subset"]
    )
    assert d.clip_len == 16 and d.crop_size == 224 and (d.short_side, d.short_side_max) == (256, 320)
    assert d.flip == want["flip"] and d.flip_swap == SWAP.get(name, [])
    assert (d.test_clips, d.test_crops) == (1, 1)  # validation and strategy scoring: 1 clip, centre crop
    assert 0 < d.selection_fraction < 1 and d.selection_subset == ""  # strategies never chosen on eval_subset


# --------------------------------------------------------------------------- fake official trees
# Each builder writes a tiny dataset in the official layout with real decodable videos and returns
# (root, annotations, expected): class names in label order, the train / eval videos per label, and
# how many listed videos the parser must report missing in each.

DENSE_FRAMES, SEGMENT_FRAMES = 64, 24  # 16x4 dense clips need 61 frames; 16 segments need 16


def make_ucf101(tmp: Path):
    classes = ["Hammering", "HammerThrow", "HandstandPushups"]  # classInd order, not sorted() order
    root, ann = tmp / "UCF-101", tmp / "ucfTrainTestlist"
    write(ann / "classInd.txt", "".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    train, test = [], []
    for i, c in enumerate(classes, 1):
        stem = "HandStandPushups" if c == "HandstandPushups" else c  # the file name is not the class
        train += [(f"{c}/v_{stem}_g08_c0{j}.avi", i) for j in (1, 2)]
        test.append(f"{c}/v_{stem}_g01_c01.avi")
    write(ann / "trainlist01.txt", "".join(f"{p} {i}\n" for p, i in train))
    write(ann / "testlist01.txt", "".join(f"{p}\n" for p in test) + "Hammering/v_Hammering_g02_c01.avi\n")
    for rel in [p for p, _ in train] + test:
        write_numbered_video(root / rel, DENSE_FRAMES)
    return (
        root,
        ann,
        {
            "classes": classes,
            "train": {0: 2, 1: 2, 2: 2},
            "eval": {0: 1, 1: 1, 2: 1},
            "missing": {"train": 0, "eval": 1},
        },
    )


def make_kinetics400(tmp: Path):
    root, ann = tmp / "kinetics400" / "videos", tmp / "kinetics400" / "annotations"
    rows = {
        "train": [
            ("playing guitar", "gtr-1_aa", 14.0, 24.0),
            ("playing guitar", "gtr2", 0, 10),
            ("abseiling", "abs1", 3, 13),
            ("abseiling", "abs_2", 30, 40),
            ("abseiling", "gone", 1, 11),
        ],
        "validate": [("playing guitar", "gv1", 5, 15), ("abseiling", "av1", 0, 10)],
    }
    for subset, entries in rows.items():
        write(
            ann / f"{subset}.csv",
            K6_HEADER + "".join(f'"{lab}",{yt},{s},{e},{subset},0\n' for lab, yt, s, e in entries),
        )
        for lab, yt, s, e in entries:
            if yt != "gone":  # a clip missing from the download, as is normal
                write_numbered_video(
                    root / lab.replace(" ", "_") / f"{yt}_{int(s):06d}_{int(e):06d}.mp4", DENSE_FRAMES
                )
    write(ann / "test.csv", "youtube_id,time_start,time_end,split\ntst,0,10,test\n")
    return (
        root,
        ann,
        {
            "classes": ["abseiling", "playing guitar"],
            "train": {0: 2, 1: 2},
            "eval": {0: 1, 1: 1},
            "missing": {"train": 1, "eval": 0},
        },
    )


def make_ssv2(tmp: Path):
    root, ann = tmp / "20bn-something-something-v2", tmp / "something-something-v2" / "labels"
    write(
        ann / "something-something-v2-labels.json", json.dumps({t: str(i) for i, t in enumerate(SSV2_LABELS)})
    )
    left, right = "Pulling [something] from left to right", "Pulling [something] from right to left"
    subsets = {
        "train": [("11", left), ("12", left), ("21", right), ("22", right)],
        "validation": [("13", left), ("23", right)],
    }
    for name, entries in subsets.items():
        write(
            ann / f"something-something-v2-{name}.json",
            json.dumps(
                [
                    {"id": i, "label": "pulling a pen", "template": t, "placeholders": ["a pen"]}
                    for i, t in entries
                ]
            ),
        )
        for vid, _ in entries:
            write_numbered_video(root / f"{vid}.webm", SEGMENT_FRAMES)
    write(ann / "something-something-v2-test.json", json.dumps([{"id": "99"}]))
    return (
        root,
        ann,
        {
            "classes": SSV2_LABELS,
            "train": {86: 2, 87: 2},
            "eval": {86: 1, 87: 1},
            "missing": {"train": 0, "eval": 0},
        },
    )


def make_ssv1(tmp: Path):
    root, ann = tmp / "20bn-something-something-v1", tmp / "something-something-v1"
    write(ann / "something-something-v1-labels.csv", "\n".join(SSV1_LABELS) + "\n")
    left, right = SSV1_LABELS[2], SSV1_LABELS[4]  # "Turning the camera left/right while filming something"
    subsets = {
        "train": [("100218", left), ("100219", left), ("24", right), ("25", right)],
        "validation": [("1", left), ("2", right)],
    }
    for name, entries in subsets.items():
        write(ann / f"something-something-v1-{name}.csv", "".join(f"{i};{lab}\n" for i, lab in entries))
        for vid, _ in entries:
            write_numbered_frame_folder(root / vid, SEGMENT_FRAMES)
    write(ann / "something-something-v1-test.csv", "7\n")
    return (
        root,
        ann,
        {
            "classes": SSV1_LABELS,
            "train": {2: 2, 4: 2},
            "eval": {2: 1, 4: 1},
            "missing": {"train": 0, "eval": 0},
        },
    )


BUILDERS = {"ucf101": make_ucf101, "kinetics400": make_kinetics400, "ssv1": make_ssv1, "ssv2": make_ssv2}


def counts(table) -> dict[int, int]:
    out: dict[int, int] = {}
    for label in table.labels:
        out[label] = out.get(label, 0) + 1
    return out


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_config_reads_a_fake_official_tree_end_to_end(name, tmp_path):
    root, ann, want = BUILDERS[name](tmp_path)
    # exactly what the README tells a user to type: the config, then the two paths as overrides
    cfg = load_config(
        config_path(name),
        [
            f"data.root={root}",
            f"data.annotations={ann}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
        ],
    )
    d = cfg.data

    fit, selection = load_splits(d, cfg.run.seed)
    assert fit.classes == want["classes"]
    assert len(selection) >= 1 and not set(r.path for r in fit.records) & set(
        r.path for r in selection.records
    )
    merged = counts(fit)
    for label, n in counts(selection).items():
        merged[label] = merged.get(label, 0) + n
    assert merged == want["train"]
    assert len(fit.missing) == want["missing"]["train"]
    if d.flip == "swap":  # the config's swap map covers every left/right pair of the official label names
        assert set(fit.flip_pairs) <= {tuple(p) for p in d.flip_swap}
        assert fit.flip_pairs

    evaluation = load_table(d, d.eval_subset)
    assert counts(evaluation) == want["eval"] and len(evaluation.missing) == want["missing"]["eval"]

    item = TrainClips(fit, d, cfg.run.seed)[0]
    assert tuple(item["clip"].shape) == (3, d.clip_len, d.crop_size, d.crop_size) and item["failed"] == ""
    assert item["label"] in want["train"]
    view = EvalViews(evaluation, d)[0]
    assert view["valid"] and tuple(view["clip"].shape) == (3, d.clip_len, d.crop_size, d.crop_size)


# --------------------------------------------------------------------------- README section

SECTION = "## Running on real datasets"


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md lacks the section {SECTION!r}"
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def section_commands() -> list[list[str]]:
    out = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", readme_section(), flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("fusion3d "):
                out.append(shlex.split(line))
    return out


def test_readme_dataset_commands_parse_and_name_valid_configs(capsys):
    cmds = section_commands()
    verbs = [c[1] for c in cmds]
    assert (
        verbs.count("config") >= 4 and verbs.count("train") >= 4 and "sample" in verbs and "analyze" in verbs
    )
    parser = build_parser()
    shown = set()
    for cmd in cmds:
        args = parser.parse_args(cmd[1:])
        if cmd[1] in ("config", "train", "data"):
            assert args.config.startswith("configs/"), cmd
            shown.add(Path(args.config).stem)
            load_config(ROOT / args.config, args.overrides)  # every key valid; nothing is trained
        if cmd[1] == "config":  # these run as shown and print the resolved config
            assert main([cmd[1], str(ROOT / args.config), *args.overrides]) == 0
            printed = yaml.safe_load(capsys.readouterr().out)
            assert printed["model"]["name"] == "densenet121_3d"
            for override in args.overrides:
                key, value = override.split("=", 1)
                section, leaf = key.split(".")
                assert str(printed[section][leaf]) == value
    assert shown == set(DATASETS)


def test_readme_hyper_parameter_table_matches_the_configs():
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in readme_section().splitlines()
        if line.startswith("|") and not line.startswith("|--")
    ]
    header, body = rows[0], rows[1:]
    by_name = {r[0]: r for r in body}
    paths = by_name["config"][1 : len(header) - 1]
    cfgs = [load_config(ROOT / p.strip("`")) for p in paths]
    assert {Path(p.strip("`")).stem for p in paths} == set(DATASETS)
    checked = 0
    for row in body:
        key = row[0].strip("`")
        if not re.fullmatch(r"(data|model|train)\.\w+", key):
            continue
        for cell, cfg in zip(row[1 : len(header) - 1], cfgs):
            section, leaf = key.split(".")
            value = getattr(getattr(cfg, section), leaf)
            if isinstance(value, str):  # as written: YAML would read "on" as true
                assert cell == value, (key, cell)
            elif isinstance(value, list):
                assert yaml.safe_load(f"[{cell}]") == value, (key, cell)
            else:
                assert yaml.safe_load(cell) == pytest.approx(value), (key, cell)
            checked += 1
    assert checked >= 4 * 10
