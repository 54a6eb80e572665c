"""Map-style video datasets.

A *table* is the parsed annotation subset with every video probed once (through the on-disk
``VideoIndex``). Two datasets read from it:

- ``TrainClips``: one random clip per video per epoch. The randomness of item ``i`` in epoch ``e``
  comes from ``np.random.default_rng([seed, e, i])``, so a batch does not depend on which worker
  produced it, and a resumed run sees the same clips. A video that fails to decode is replaced by
  another one drawn from the same generator; the failed paths travel with the sample so the
  trainer can log each once and count them.
- ``EvalViews``: explicit ``(video, clip, crop)`` views (clips x crops per video). A view whose
  video fails is returned with ``valid = False`` and is excluded and counted by the evaluator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fusion3d.config import DataConfig
from fusion3d.data.clip_sampling import clip_indices
from fusion3d.data.decode import VideoDecodeError, read_frames
from fusion3d.data.formats import VideoRecord, parse
from fusion3d.data.transforms import eval_geometry, normalize, swap_label, to_float_cthw, train_geometry
from fusion3d.data.video_index import VideoIndex
from fusion3d.errors import FusionError


class DataError(FusionError):
    """A dataset-level problem (e.g. every video failed), with a message naming the files (a RuntimeError)."""


# Errors a single bad video may raise while being read; anything else is a bug and propagates.
VIDEO_ERRORS = (VideoDecodeError, OSError, ValueError, EOFError)


@dataclass
class VideoTable:
    """Usable videos of one subset with their frame counts, and what was left out and why."""

    records: list[VideoRecord]
    num_frames: list[int]
    classes: list[str]
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    missing: list[str] = field(default_factory=list)  # in the annotations, absent on disk
    source: str = ""
    flip_pairs: list[tuple[int, int]] = field(
        default_factory=list
    )  # classes that become each other when mirrored

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def subset(self, positions) -> VideoTable:
        """A table with only the given record positions (order kept as given)."""
        pos = list(positions)
        return VideoTable(
            [self.records[i] for i in pos],
            [self.num_frames[i] for i in pos],
            self.classes,
            [],
            [],
            self.source,
            self.flip_pairs,
        )


def index_path(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir) / "video_index.json"


def load_table(cfg: DataConfig, subset: str, progress: bool = False) -> VideoTable:
    """Parse ``subset`` of the configured dataset and probe every video (once, cached on disk)."""
    parsed = parse(cfg.format, cfg.root, cfg.annotations, subset, cfg.split)
    source = f"{cfg.format} annotations {cfg.annotations} (subset {subset})"
    if parsed.escaped:
        raise DataError(
            f"{len(parsed.escaped)} entries of {parsed.annotation_file} point outside data.root "
            f"{cfg.root}, first {parsed.escaped[0]}: refusing to read them; fix the annotation list"
        )
    index = VideoIndex(index_path(cfg))
    records, frames, excluded = [], [], []
    it = parsed.records
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"probing {subset}", unit="video", leave=False)
    for rec in it:
        try:
            n = rec.num_frames if rec.num_frames is not None else index.get(rec.path).num_frames
        except VIDEO_ERRORS as e:
            excluded.append((rec.path, f"unreadable: {e}"))
            continue
        if n < cfg.min_frames:
            excluded.append((rec.path, f"too short: {n} frames < data.min_frames={cfg.min_frames}"))
            continue
        records.append(rec)
        frames.append(int(n))
    index.save()
    if not records:
        reasons = "; ".join(f"{p}: {r}" for p, r in excluded[:3]) or "no entries"
        raise DataError(
            f"no usable video in {source}: {len(parsed.missing)} missing, {len(excluded)} unreadable "
            f"or too short ({reasons})"
        )
    return VideoTable(
        records, frames, parsed.classes, excluded, list(parsed.missing), source, parsed.flip_swap_pairs()
    )


def carve_selection(table: VideoTable, fraction: float, seed: int) -> tuple[VideoTable, VideoTable]:
    """Split a training table into (fit, selection), stratified by class, deterministic for a seed.

    Each class gives about ``round(fraction * n)`` of its ``n`` videos to the selection split (at
    least one when ``fraction > 0`` and the class has two or more videos). Videos that share a
    ``group`` (UCF101's ``gXX``: clips cut from one long video, near-duplicates of each other) move
    together: whole groups, in a seeded random order, are taken until the class's share is reached,
    and at least one group stays for training, so no group is split between the two sets. A class
    whose training videos form a single group falls back to single videos (the source string of the
    selection table says how many classes did). Positions keep table order.
    """
    rng = np.random.default_rng([seed, 7207])
    by_class: dict[int, list[int]] = {}
    for i, rec in enumerate(table.records):
        by_class.setdefault(rec.label, []).append(i)
    selected: set[int] = set()
    grouped = fallback = 0
    for label in sorted(by_class):
        members = by_class[label]
        k = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        groups: dict[object, list[int]] = {}
        for i in members:  # first-appearance order; a video without a group is a group of its own
            groups.setdefault(table.records[i].group or ("video", i), []).append(i)
        units = list(groups.values())
        if len(units) == len(members):  # no shared groups: single videos (the original behaviour)
            selected.update(rng.permutation(members)[:k].tolist())
            continue
        if len(units) < 2:
            fallback += k > 0
            selected.update(rng.permutation(members)[:k].tolist())
            continue
        grouped += 1
        taken: list[int] = []
        for g in rng.permutation(len(units)).tolist()[: len(units) - 1]:  # at least one group stays
            if len(taken) >= k:
                break
            taken.extend(units[g])
        selected.update(taken)
    fit = [i for i in range(len(table)) if i not in selected]
    sel = [i for i in range(len(table)) if i in selected]
    fit_t, sel_t = table.subset(fit), table.subset(sel)
    how = ""
    if grouped or fallback:
        how = f", whole groups in {grouped} classes" + (
            f", single videos in {fallback} one-group classes" if fallback else ""
        )
    fit_t.source = f"{table.source}, minus the selection split"
    sel_t.source = f"{table.source}, selection split ({fraction:.0%} per class, seed {seed}{how})"
    fit_t.excluded, fit_t.missing = table.excluded, table.missing
    return fit_t, sel_t


def load_splits(cfg: DataConfig, seed: int, progress: bool = False) -> tuple[VideoTable, VideoTable]:
    """(fit, selection): the videos the template trains on, and the held-out ones strategies are scored on.

    With ``data.selection_subset`` set, fit is the whole training subset and selection that
    subset; otherwise selection is carved from the training subset (``data.selection_fraction``).
    """
    train = load_table(cfg, cfg.train_subset, progress)
    if cfg.selection_subset:
        return train, load_table(cfg, cfg.selection_subset, progress)
    if cfg.selection_fraction <= 0:
        return train, train.subset([])
    return carve_selection(train, cfg.selection_fraction, seed)


class TrainClips(Dataset):
    """One randomly sampled, augmented clip per video; failing videos are replaced and reported."""

    def __init__(self, table: VideoTable, cfg: DataConfig, seed: int, max_retries: int = 20):
        self.table, self.cfg, self.seed, self.max_retries = table, cfg, seed, max_retries
        self.epoch = 0
        self.swap_pairs = [tuple(p) for p in cfg.flip_swap] or list(table.flip_pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int | tuple[int, int]) -> dict:
        """Item ``i`` in the current epoch, or ``(epoch, i)``: item ``i`` in that epoch (``EpochSampler``)."""
        epoch, i = (int(i[0]), int(i[1])) if isinstance(i, (tuple, list)) else (self.epoch, int(i))
        cfg, table = self.cfg, self.table
        rng = np.random.default_rng([self.seed, epoch, i])
        failed: list[str] = []
        j = i
        for _ in range(self.max_retries + 1):
            rec = table.records[j]
            idx = clip_indices(cfg.sampling, table.num_frames[j], cfg.clip_len, cfg.frame_interval, rng=rng)
            try:
                frames = read_frames(rec.path, idx)
                break
            except VIDEO_ERRORS:
                failed.append(rec.path)
                j = int(rng.integers(len(table)))
        else:
            raise DataError(
                f"{self.max_retries + 1} videos in a row failed to decode in {table.source}, "
                f"last: {failed[-1]}; run `fusion3d data scan` to list the bad files"
            )
        x, flipped = train_geometry(frames, cfg.short_side, cfg.short_side_max, cfg.crop_size, cfg.flip, rng)
        label = rec.label
        if flipped and cfg.flip == "swap":
            label = swap_label(label, self.swap_pairs)
        clip = normalize(to_float_cthw(x), cfg.mean, cfg.std)
        return {"clip": clip, "label": label, "index": j, "failed": "\n".join(failed)}


def view_list(num_videos: int, num_clips: int, num_crops: int) -> list[tuple[int, int, int]]:
    """All ``(video, clip, crop)`` triples, video-major."""
    return [(v, c, r) for v in range(num_videos) for c in range(num_clips) for r in range(num_crops)]


def decode_views(table: VideoTable, cfg: DataConfig, video: int, clip: int) -> list[torch.Tensor]:
    """uint8 ``(T, S, S, 3)`` for every crop of one evaluation clip (the clip is decoded once)."""
    idx = clip_indices(
        cfg.sampling,
        table.num_frames[video],
        cfg.clip_len,
        cfg.frame_interval,
        view=clip,
        num_views=cfg.test_clips,
    )
    frames = read_frames(table.records[video].path, idx)
    return [
        eval_geometry(frames, cfg.short_side, cfg.crop_size, cfg.test_crops, r) for r in range(cfg.test_crops)
    ]


class EvalViews(Dataset):
    """Evaluation views with explicit ``(video, clip, crop)`` indices; failures give ``valid=False``."""

    def __init__(self, table: VideoTable, cfg: DataConfig, views: list[tuple[int, int, int]] | None = None):
        self.table, self.cfg = table, cfg
        self.views = views if views is not None else view_list(len(table), cfg.test_clips, cfg.test_crops)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, k: int) -> dict:
        v, c, r = self.views[k]
        cfg = self.cfg
        try:
            x = decode_views(self.table, cfg, v, c)[r]
            clip, valid, failed = normalize(to_float_cthw(x), cfg.mean, cfg.std), True, ""
        except VIDEO_ERRORS:
            clip = torch.zeros(3, cfg.clip_len, cfg.crop_size, cfg.crop_size)
            valid, failed = False, self.table.records[v].path
        return {
            "clip": clip,
            "label": self.table.records[v].label,
            "video": v,
            "view": k,
            "valid": valid,
            "failed": failed,
        }


def worker_init(worker_id: int) -> None:
    """Seed python, numpy and torch in a data-loader worker from torch's per-worker seed."""
    s = torch.initial_seed() % (2**32)
    random.seed(s)
    np.random.seed(s)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    sampler=None,
    collate_fn=None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader with seeded shuffling and seeded workers (one decode thread per worker).

    ``persistent_workers`` and ``prefetch_factor`` apply only with workers (``num_workers > 0``)."""
    g = torch.Generator()
    g.manual_seed(seed)
    extra = {}
    if num_workers > 0 and prefetch_factor is not None:
        extra["prefetch_factor"] = prefetch_factor
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=g,
        worker_init_fn=worker_init,
        persistent_workers=persistent_workers and num_workers > 0,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        **extra,
    )
