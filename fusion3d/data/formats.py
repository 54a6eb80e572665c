"""Parsers for the official annotation formats of the video datasets fusion3d reads.

Each format is one function ``(root, annotations, subset, split) -> ParsedDataset`` in the
``FORMATS`` registry; :func:`parse` picks one by name. A parser only reads annotation files and
checks that each listed video (or JPEG frame folder) exists: entries whose file is absent are
skipped and listed in ``ParsedDataset.missing``, since a few missing videos are normal in real
datasets. Decoding, sampling and transforms live elsewhere. See docs/data_formats.md for the formats.

Errors name the file: a missing annotation file raises ``FileNotFoundError`` with the expected
path; a malformed entry raises ``ValueError`` with ``file:line`` (JSON: ``file: entry N``) and the
offending text.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PathLike = str | os.PathLike[str]

_SUBSET_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}

# Kinetics clips are found by file stem; these are the containers seen in the wild.
KINETICS_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video (or JPEG frame folder) that exists on disk."""

    path: str  # absolute path of the video file or JPEG frame folder
    label: int  # class index; -1 when the subset carries no labels (official test lists)
    video_id: str  # stable id: relative path without suffix (UCF/lists), clip stem (Kinetics), id (SSv1/v2)
    num_frames: int | None = None  # when the annotation states it (frame_list), else None
    group: str | None = None  # videos cut from one source (UCF101 "<Class>/gXX"): never split between
    #                           the training and the selection split


@dataclass
class ParsedDataset:
    """The records of one subset of a dataset, its class names, and what was missing."""

    records: list[VideoRecord]  # only entries whose file/folder exists
    classes: list[str]  # index -> class name
    missing: list[str]  # expected absolute paths of annotation entries whose file is absent
    format: str
    subset: str
    split: int = 1
    annotation_file: str = ""  # the annotation file the records came from
    escaped: list[str] = field(default_factory=list)  # entries pointing outside the root (never read)

    def flip_swap_pairs(self) -> list[tuple[int, int]]:
        """Class pairs that trade places under a horizontal flip (see :func:`flip_swap_pairs`)."""
        return flip_swap_pairs(self.classes)


# --------------------------------------------------------------------------- shared helpers


def _malformed(path: Path, lineno: int | str, reason: str, text: str) -> ValueError:
    where = f"{path}:{lineno}" if isinstance(lineno, int) else f"{path}: {lineno}"
    return ValueError(f"{where}: {reason}: {text!r}")


def _escapes(root: Path, rel: str) -> bool:
    """Whether annotation path ``rel`` leaves ``root`` (absolute, or ``..`` climbing out of it)."""
    if os.path.isabs(rel) or rel.startswith("~"):
        return True
    norm = os.path.normpath(os.path.join(root, rel))
    return os.path.commonpath([norm, os.path.normpath(root)]) != os.path.normpath(root)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: expected {path}")
    return path


def _first_existing(folder: Path, names: list[str], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    tried = " or ".join(str(folder / n) for n in names)
    raise FileNotFoundError(f"{what} not found: expected {tried}")


def _lines(path: Path):
    """Yield (1-based line number, stripped line) for non-blank lines; handles CRLF and a BOM."""
    with open(path, encoding="utf-8-sig", newline=None) as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if line:
                yield lineno, line


def _root_dir(root: PathLike) -> Path:
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"video root folder not found: expected {path}")
    return path


def _annotations(annotations: PathLike) -> Path:
    path = Path(annotations).expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(f"annotations not found: expected {path}")
    return path


def _strip_suffix(rel: str) -> str:
    stem, dot, suffix = rel.rpartition(".")
    return stem if dot and "/" not in suffix and stem else rel


# --------------------------------------------------------------------------- UCF101


def _read_classind(path: Path) -> list[str]:
    by_index: dict[int, str] = {}
    for lineno, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise _malformed(path, lineno, "expected '<1-based index> <ClassName>'", line)
        index = int(parts[0])
        if index < 1 or index in by_index:
            raise _malformed(path, lineno, "index must be >= 1 and unique", line)
        by_index[index] = parts[1]
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise ValueError(f"{path}: class indices must run 1..{len(by_index)} without gaps")
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def parse_ucf101(root: PathLike, annotations: PathLike, subset: str, split: int = 1) -> ParsedDataset:
    """UCF101: ``annotations`` is the ``ucfTrainTestlist/`` folder; videos at ``root/<ClassDir>/<file>``.

    Labels follow ``classInd.txt`` order and the class of each video is its directory part (the
    ``HandstandPushups/v_HandStandPushups_*`` files make the file name unreliable). ``train`` reads
    ``trainlist0{split}.txt``; ``val`` and ``test`` read ``testlist0{split}.txt``.
    """
    if split not in (1, 2, 3):
        raise ValueError(f"UCF101 split must be 1, 2 or 3, got {split!r}")
    ann = _annotations(annotations)
    if not ann.is_dir():
        raise ValueError(f"UCF101 annotations must be the ucfTrainTestlist folder, got the file {ann}")
    video_root = _root_dir(root)
    classes = _read_classind(_require_file(ann / "classInd.txt", "UCF101 class index"))
    class_index = {name: i for i, name in enumerate(classes)}
    folded = {name.casefold(): i for i, name in enumerate(classes)}
    list_name = f"{'trainlist' if subset == 'train' else 'testlist'}{split:02d}.txt"
    list_path = _require_file(ann / list_name, f"UCF101 {subset} list")

    records: list[VideoRecord] = []
    missing: list[str] = []
    escaped: list[str] = []
    for lineno, line in _lines(list_path):
        parts = line.split()
        if len(parts) not in (1, 2):
            raise _malformed(list_path, lineno, "expected '<ClassDir>/<file>.avi [<1-based label>]'", line)
        rel = parts[0].replace("\\", "/")
        class_dir, sep, _ = rel.partition("/")
        if not sep:
            raise _malformed(list_path, lineno, "path has no class directory", line)
        label = class_index.get(class_dir, folded.get(class_dir.casefold()))
        if label is None:
            raise _malformed(list_path, lineno, f"class directory {class_dir!r} is not in classInd.txt", line)
        if len(parts) == 2:
            if not parts[1].lstrip("-").isdigit():
                raise _malformed(list_path, lineno, "label is not an integer", line)
            if int(parts[1]) - 1 != label:
                raise _malformed(
                    list_path,
                    lineno,
                    f"label {parts[1]} is {_name_of(classes, int(parts[1]) - 1)} in classInd.txt "
                    f"but the directory says {classes[label]} ({label + 1})",
                    line,
                )
        if _escapes(video_root, rel):
            escaped.append(f"{video_root / rel} ({list_path}:{lineno})")
            continue
        path = video_root / rel
        if path.is_file():
            group = re.search(r"_g(\d+)_c\d+", rel)
            records.append(
                VideoRecord(
                    str(path),
                    label,
                    _strip_suffix(rel),
                    group=f"{classes[label]}/g{group.group(1)}" if group else None,
                )
            )
        else:
            missing.append(str(path))
    return ParsedDataset(records, classes, missing, "ucf101", subset, split, str(list_path), escaped)


def _name_of(classes: list[str], index: int) -> str:
    return repr(classes[index]) if 0 <= index < len(classes) else "out of range"


# --------------------------------------------------------------------------- Kinetics


def _kinetics_csv(ann: Path, subset: str) -> Path:
    names = {"train": ["train.csv"], "val": ["validate.csv", "val.csv"], "test": ["test.csv"]}[subset]
    return _first_existing(ann, names, f"Kinetics {subset} CSV")


def _read_kinetics_rows(path: Path) -> list[tuple[int, str | None, str]]:
    """Rows as (line number, label name or None when the CSV has no label, clip stem)."""
    rows: list[tuple[int, str | None, str]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty CSV, expected a header with youtube_id,time_start,time_end")
        columns = {name.strip(): i for i, name in enumerate(header)}
        needed = ("youtube_id", "time_start", "time_end")
        absent = [c for c in needed if c not in columns]
        if absent:
            raise ValueError(f"{path}:1: header lacks column(s) {', '.join(absent)}: {','.join(header)!r}")
        has_label = "label" in columns
        for row in reader:
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            text = ",".join(row)
            if len(row) < len(header):
                raise _malformed(path, lineno, f"expected {len(header)} columns, got {len(row)}", text)
            youtube_id = row[columns["youtube_id"]].strip()
            try:
                start = int(float(row[columns["time_start"]]))
                end = int(float(row[columns["time_end"]]))
            except ValueError:
                raise _malformed(path, lineno, "time_start/time_end are not numbers", text) from None
            if not youtube_id:
                raise _malformed(path, lineno, "empty youtube_id", text)
            label = row[columns["label"]].strip() if has_label else ""
            rows.append((lineno, label or None, f"{youtube_id}_{start:06d}_{end:06d}"))
    return rows


def _index_by_stem(root: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """Walk ``root`` once; map file stem -> path (first in sorted walk order wins)."""
    index: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in extensions and stem not in index:
                index[stem] = Path(dirpath) / name
    return index


def parse_kinetics(root: PathLike, annotations: PathLike, subset: str, split: int = 1) -> ParsedDataset:
    """Kinetics: a CSV file, or a folder with ``train.csv``, ``validate.csv``/``val.csv``, ``test.csv``.

    Columns are read by header name. Clips ``{youtube_id}_{start:06d}_{end:06d}.*`` are found
    anywhere under ``root`` (class folders are optional and may spell spaces as ``_``). Class
    indices are the sorted unique labels of the train CSV when ``annotations`` is a folder (so
    train and val agree), else of the given CSV. Rows without a label get -1.
    """
    ann = _annotations(annotations)
    video_root = _root_dir(root)
    csv_path = _kinetics_csv(ann, subset) if ann.is_dir() else ann
    rows = _read_kinetics_rows(csv_path)
    if ann.is_dir() and csv_path.name != "train.csv":
        train_rows = _read_kinetics_rows(_first_existing(ann, ["train.csv"], "Kinetics train CSV"))
    else:
        train_rows = rows
    classes = sorted({label for _, label, _ in train_rows if label is not None})
    class_index = {name: i for i, name in enumerate(classes)}

    clips = _index_by_stem(video_root, KINETICS_EXTENSIONS)
    records: list[VideoRecord] = []
    missing: list[str] = []
    for lineno, label_name, stem in rows:
        if label_name is None:
            label = -1
        elif label_name in class_index:
            label = class_index[label_name]
        else:
            raise _malformed(csv_path, lineno, "label is not a class of the train CSV", label_name)
        path = clips.get(stem)
        if path is None:
            missing.append(str(video_root / f"{stem}.mp4"))
        else:
            records.append(VideoRecord(str(path), label, stem))
    return ParsedDataset(records, classes, missing, "kinetics", subset, split, str(csv_path))


# --------------------------------------------------------------------------- Something-Something


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


_SSV2_SUBSET_FILES = {"train": "train", "val": "validation", "test": "test"}


def parse_ssv2(root: PathLike, annotations: PathLike, subset: str, split: int = 1) -> ParsedDataset:
    """Something-Something V2: JSON annotations folder; videos ``root/<id>.webm``.

    The label is the template with its brackets removed, looked up in the labels JSON; the
    ``label`` field holds object names and is never used. Test entries (only ``id``) get -1.
    Both the original ``something-something-v2-*.json`` names and the later ``labels/*.json``
    names (``labels.json``, ``train.json``, ...) are accepted.
    """
    ann = _annotations(annotations)
    if not ann.is_dir():
        raise ValueError(f"Something-Something V2 annotations must be a folder, got the file {ann}")
    video_root = _root_dir(root)
    labels_path = _first_existing(
        ann, ["something-something-v2-labels.json", "labels.json"], "Something-Something V2 labels"
    )
    labels = _load_json(labels_path)
    if not isinstance(labels, dict):
        raise ValueError(f"{labels_path}: expected an object {{template: index}}")
    by_index: dict[int, str] = {}
    for template, index in labels.items():
        try:
            by_index[int(index)] = template
        except (TypeError, ValueError):
            raise ValueError(f"{labels_path}: index of {template!r} is not an integer: {index!r}") from None
    if sorted(by_index) != list(range(len(labels))):
        raise ValueError(
            f"{labels_path}: class indices must run 0..{len(labels) - 1} without gaps or repeats"
        )
    classes = [by_index[i] for i in range(len(by_index))]
    template_index = {template: int(index) for template, index in labels.items()}

    stem = _SSV2_SUBSET_FILES[subset]
    list_path = _first_existing(
        ann, [f"something-something-v2-{stem}.json", f"{stem}.json"], f"Something-Something V2 {subset} list"
    )
    entries = _load_json(list_path)
    if not isinstance(entries, list):
        raise ValueError(f'{list_path}: expected a list of {{"id", ...}} entries')
    records: list[VideoRecord] = []
    missing: list[str] = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise _malformed(list_path, f"entry {n}", "expected an object with an 'id'", json.dumps(entry))
        video_id = str(entry["id"])
        if "template" in entry:
            template = str(entry["template"]).replace("[", "").replace("]", "")
            if template not in template_index:
                raise _malformed(
                    list_path, f"entry {n}", f"template is not in {labels_path.name}", entry["template"]
                )
            label = template_index[template]
        else:
            label = -1
        path = video_root / f"{video_id}.webm"
        if path.is_file():
            records.append(VideoRecord(str(path), label, video_id))
        else:
            missing.append(str(path))
    return ParsedDataset(records, classes, missing, "ssv2", subset, split, str(list_path))


def parse_ssv1(root: PathLike, annotations: PathLike, subset: str, split: int = 1) -> ParsedDataset:
    """Something-Something V1: ``;``-separated CSVs; JPEG frames in ``root/<id>/``.

    Class index = line order of ``something-something-v1-labels.csv``. Subset lines are
    ``id;label text`` (test: ``id`` only, label -1).
    """
    ann = _annotations(annotations)
    if not ann.is_dir():
        raise ValueError(f"Something-Something V1 annotations must be a folder, got the file {ann}")
    video_root = _root_dir(root)
    labels_path = _require_file(ann / "something-something-v1-labels.csv", "Something-Something V1 labels")
    classes = [line for _, line in _lines(labels_path)]
    class_index = {name: i for i, name in enumerate(classes)}
    name = {"train": "train", "val": "validation", "test": "test"}[subset]
    list_path = _require_file(
        ann / f"something-something-v1-{name}.csv", f"Something-Something V1 {subset} list"
    )

    records: list[VideoRecord] = []
    missing: list[str] = []
    for lineno, line in _lines(list_path):
        video_id, sep, label_text = (part.strip() for part in line.partition(";"))
        if not video_id or (sep and not label_text):
            raise _malformed(list_path, lineno, "expected 'id;label text' (test: 'id')", line)
        if sep:
            if label_text not in class_index:
                raise _malformed(list_path, lineno, f"label is not in {labels_path.name}", line)
            label = class_index[label_text]
        elif subset == "test":
            label = -1
        else:
            raise _malformed(list_path, lineno, "expected 'id;label text'", line)
        path = video_root / video_id
        if path.is_dir():
            records.append(VideoRecord(str(path), label, video_id))
        else:
            missing.append(str(path))
    return ParsedDataset(records, classes, missing, "ssv1", subset, split, str(list_path))


# --------------------------------------------------------------------------- generic lists

_LIST_NAMES = {"train": ["train.txt"], "val": ["val.txt", "validation.txt"], "test": ["test.txt"]}
_VIDEO_LINE = re.compile(r"^(?P<path>.*\S)\s+(?P<label>-?\d+)$")
_FRAME_LINE = re.compile(r"^(?P<path>.*\S)\s+(?P<frames>\d+)\s+(?P<label>-?\d+)$")


def _generic_list(
    format_name: str, root: PathLike, annotations: PathLike, subset: str, split: int, frames: bool
) -> ParsedDataset:
    ann = _annotations(annotations)
    video_root = _root_dir(root)
    list_path = _first_existing(ann, _LIST_NAMES[subset], f"{subset} list") if ann.is_dir() else ann
    pattern = _FRAME_LINE if frames else _VIDEO_LINE
    expected = "'<relative_dir> <num_frames> <label>'" if frames else "'<relative/path> <label>'"

    def read(path: Path) -> list[tuple[int, str, str, int | None, int]]:
        rows = []
        for lineno, line in _lines(path):
            match = pattern.match(line)
            if match is None:
                raise _malformed(path, lineno, f"expected {expected}", line)
            num_frames = int(match["frames"]) if frames else None
            rows.append((lineno, line, match["path"], num_frames, int(match["label"])))
        return rows

    rows = read(list_path)
    classes_path = list_path.parent / "classes.txt"
    if classes_path.is_file():
        classes = [line for _, line in _lines(classes_path)]
    else:
        # Without names, size the class list over every standard list beside this one, so that
        # train and val agree even when the highest label is absent from one of them.
        labels = [row[4] for row in rows]
        if ann.is_dir():
            for names in _LIST_NAMES.values():
                for name in names:
                    other = ann / name
                    if other.is_file() and other != list_path:
                        labels.extend(row[4] for row in read(other))
        classes = [str(i) for i in range(max(labels, default=-1) + 1)]

    records: list[VideoRecord] = []
    missing: list[str] = []
    escaped: list[str] = []
    for lineno, line, rel, num_frames, label in rows:
        if not -1 <= label < len(classes):
            raise _malformed(list_path, lineno, f"label out of range 0..{len(classes) - 1}", line)
        if _escapes(video_root, rel):
            escaped.append(f"{video_root / rel} ({list_path}:{lineno})")
            continue
        path = video_root / rel
        present = path.is_dir() if frames else path.is_file()
        if present:
            video_id = rel if frames else _strip_suffix(rel)
            records.append(VideoRecord(str(path), label, video_id, num_frames))
        else:
            missing.append(str(path))
    return ParsedDataset(records, classes, missing, format_name, subset, split, str(list_path), escaped)


def parse_video_list(root: PathLike, annotations: PathLike, subset: str, split: int = 1) -> ParsedDataset:
    """Generic video list: lines ``<relative/path> <int label>``, split on the last whitespace.

    ``annotations`` is the list file, or a folder with ``train.txt``, ``val.txt`` (or
    ``validation.txt``), ``test.txt``. Class names come from ``classes.txt`` beside the list
    (one per line), else ``"0".."max"``.
    """
    return _generic_list("video_list", root, annotations, subset, split, frames=False)


def parse_frame_list(root: PathLike, annotations: PathLike, subset: str, split: int = 1) -> ParsedDataset:
    """TSN/TSM frame-folder list: lines ``<relative_dir> <num_frames> <label>`` (split from the right).

    Same file layout and class names as :func:`parse_video_list`; ``num_frames`` goes into the record.
    """
    return _generic_list("frame_list", root, annotations, subset, split, frames=True)


# --------------------------------------------------------------------------- registry and API

FORMATS: dict[str, Callable[..., ParsedDataset]] = {
    "ucf101": parse_ucf101,
    "kinetics": parse_kinetics,
    "ssv2": parse_ssv2,
    "ssv1": parse_ssv1,
    "video_list": parse_video_list,
    "frame_list": parse_frame_list,
}


def normalize_subset(subset: str) -> str:
    """``train``, ``val`` (or ``validation``) or ``test``; anything else is a ValueError."""
    key = str(subset).strip().lower()
    if key not in _SUBSET_ALIASES:
        raise ValueError(f"unknown subset {subset!r}; valid: train, val (or validation), test")
    return _SUBSET_ALIASES[key]


def parse(format: str, root: PathLike, annotations: PathLike, subset: str, split: int = 1) -> ParsedDataset:
    """Read one subset of a dataset in its official annotation format.

    ``root`` holds the videos (or frame folders); ``annotations`` is the official annotation
    folder or file (per format). Only entries whose file exists become records; the others are
    listed in ``missing``.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; valid formats: {', '.join(FORMATS)}")
    return FORMATS[format](root, annotations, normalize_subset(subset), split)


_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def _swap_left_right(name: str) -> str:
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1).lower() == "left" else "left", name)


def flip_swap_pairs(classes: list[str]) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of classes whose names turn into each other when the words
    ``left`` and ``right`` are swapped (whole words, case-insensitive).

    A horizontal flip turns a clip of class ``i`` into one of class ``j``: flip augmentation must
    swap these labels. On the official label names this gives SSv2's 86<->87, 93<->94, 166<->167
    and SSv1's 2<->4, 30<->41, 52<->66.
    """
    index: dict[str, int] = {}
    for i, name in enumerate(classes):
        index.setdefault(name.casefold(), i)
    pairs = set()
    for i, name in enumerate(classes):
        swapped = _swap_left_right(name).casefold()
        j = index.get(swapped)
        if j is not None and swapped != name.casefold() and j != i:
            pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)
