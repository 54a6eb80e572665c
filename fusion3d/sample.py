"""``fusion3d sample``: score strategies drawn from a trained template (METHOD.md section 5).

For one run directory (written by ``fusion3d train``):

1. load the template (config and weights from ``checkpoint.pt``);
2. rebuild the selection split (held out from training; checked against ``splits.json``) and a
   fixed set of training clips for BatchNorm recalibration (a seeded subset of the fit split,
   centre crop, one clip per video); both are decoded once into clip caches;
3. list the strategies: the canonical all-S, all-ST, all-S+ST, the most probable one, then ``num``
   hard-Bernoulli draws from the learned drop probabilities (a torch generator seeded from the run
   seed, or ``seed``); duplicates (same strategy id) are scored once, under their first source;
4. for each strategy: put the template in hard mode (dropped paths are not computed), score it on
   the selection clips with the template's BatchNorm statistics ("before"), then recalibrate
   BatchNorm on the fixed training clips and score again ("after"). The template's BatchNorm
   statistics are put back before each strategy, so recalibrations never compound;
5. append one row per strategy to ``strategies.csv`` as soon as it is scored (flushed and fsynced).

Sharding: with ``shard=(i, n)`` (or under ``torchrun``, where ``RANK`` / ``WORLD_SIZE`` give it), a
process scores every n-th strategy of the plan, starting at the i-th, into
``strategies.shard<i>of<n>.csv``, then marks the shard done (``strategies.shard<i>of<n>.done``). The
process that finds every shard of the plan done merges them, under a lock, into ``strategies.csv``
(in plan order, atomically) and removes the shard files, so there is no process group and no
barrier: shards may run on different machines that share the run directory, at different times, and
an unsharded ``fusion3d sample`` also merges what shards left behind. Only shard 0 writes
``sample.json``'s settings; the merging process writes the totals.

Resuming: strategies whose id is already in ``strategies.csv`` (or in this shard's file) are skipped, and the draws are the
same for the same seed, so an interrupted run continues where it stopped. A torn last line (a
crash in the middle of a write) is dropped. ``sample.json`` records the measurement settings at the
start (a resume with different weights or settings is refused, so rows measured differently never
mix) and the totals at the end.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fusion3d.bn import bn_state, load_bn_state, recalibrate_bn
from fusion3d.config import from_dict
from fusion3d.data.clip_cache import build_clip_cache
from fusion3d.data.dataset import load_splits, make_loader
from fusion3d.evaluate import predict, video_scores
from fusion3d.models import Strategy, build_model, count_macs, count_params
from fusion3d.utils import atomic_write_text, resolve_device

STRATEGIES_CSV = "strategies.csv"
SAMPLE_JSON = "sample.json"
COLUMNS: tuple[str, ...] = ("strategy", "id", "source", "top1_before", "top5_before", "top1_after", "top5_after",
                            "macs", "params", "n_S", "n_ST", "n_S+ST", "n_none", "views", "seconds",
                            "rf_t_min", "rf_t_max", "rf_s_min", "rf_s_max")
RF_COLUMNS: tuple[str, ...] = COLUMNS[-4:]  # static receptive field at the head (fusion3d.receptive_field)
OLD_COLUMNS: tuple[str, ...] = COLUMNS[:-4]  # files written before the receptive-field columns existed
CANONICAL: tuple[tuple[str, str], ...] = (("canonical_S", "S"), ("canonical_ST", "ST"), ("canonical_S+ST", "S+ST"))
DEFAULT_RECAL_CLIPS = 200
# Keys of sample.json["measurement"] that must match for rows of one strategies.csv to be comparable.
MEASUREMENT_KEYS = ("weights_sha1", "recalibrate", "recal_videos", "recal_batch_size", "selection_videos", "views",
                    "input_shape")


# ----------------------------------------------------------------------------- the strategy list


def strategy_plan(model, num: int, seed: int) -> list[tuple[Strategy, str]]:
    """(strategy, source) in scoring order: the canonical ones, the most probable, then ``num`` draws
    from a generator seeded with ``seed``; each strategy id appears once (its first source wins)."""
    n = model.num_slots
    plan = [(Strategy.uniform(unit, n), source) for source, unit in CANONICAL]
    plan.append((model.most_probable_strategy(), "most_probable"))
    g = torch.Generator().manual_seed(int(seed))
    plan.extend((model.sample_strategy(g), "sampled") for _ in range(int(num)))
    seen: set[str] = set()
    out = []
    for s, source in plan:
        if s.id not in seen:
            seen.add(s.id)
            out.append((s, source))
    return out


# ----------------------------------------------------------------------------- the CSV


def read_strategies(path: str | Path, repair: bool = False) -> pd.DataFrame:
    """The finished rows of a ``strategies.csv`` (an empty frame with the columns if there is none).

    A torn last line (a crash in the middle of a write) is ignored; with ``repair=True`` it is also
    cut off the file (the sample stage does this, under its lock, before appending)."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=list(COLUMNS))
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1  # 0 when even the header is torn
        data = data[:cut]
        if repair:
            with open(path, "r+b") as fh:
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
    if not data.strip():
        return pd.DataFrame(columns=list(COLUMNS))
    header = next(csv.reader(io.StringIO(data.decode("utf-8").split("\n", 1)[0])))
    if tuple(header) == OLD_COLUMNS:  # an older file: the receptive-field columns are left empty
        df = pd.read_csv(io.BytesIO(data), dtype={"id": str, "strategy": str})
        return df.assign(**{c: np.nan for c in RF_COLUMNS})
    if tuple(header) != COLUMNS:
        raise RuntimeError(f"{path} has columns {header}, expected {list(COLUMNS)}; move it away to start over")
    return pd.read_csv(io.BytesIO(data), dtype={"id": str, "strategy": str})


def shard_spec(shard: str | tuple[int, int] | None = None) -> tuple[int, int]:
    """(index, count) of this sampling process: ``"I/N"`` or ``(I, N)``; None takes ``RANK`` /
    ``WORLD_SIZE`` from the environment (torchrun), else ``(0, 1)``, no sharding."""
    if shard is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return 0, 1
    if isinstance(shard, str):
        try:
            i, n = (int(v) for v in shard.split("/"))
        except ValueError:
            raise ValueError(f"shard {shard!r}: expected I/N, e.g. 0/4") from None
    else:
        i, n = (int(v) for v in shard)
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {i}/{n}: need N >= 1 and 0 <= I < N")
    return i, n


def shard_paths(run_dir: Path, i: int, n: int) -> tuple[Path, Path]:
    """(rows, done marker) of shard ``i`` of ``n``."""
    return run_dir / f"strategies.shard{i}of{n}.csv", run_dir / f"strategies.shard{i}of{n}.done"


def merge_shards(run_dir: str | Path, order: list[str] | None = None) -> bool:
    """Merge finished shard files into ``strategies.csv``. Only complete sets are merged: shards
    ``0..n-1`` of one ``n``, each with its done marker. Rows keep their first occurrence per id (the
    existing ``strategies.csv`` first) and are sorted by ``order`` (strategy ids, e.g. the plan) when
    given. Returns True when something was merged. Safe to call from several processes at once."""
    import fcntl

    run_dir = Path(run_dir)
    merged = False
    with open(run_dir / ".strategies.merge.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counts = sorted({int(p.name.split("of")[1].split(".")[0]) for p in run_dir.glob("strategies.shard*of*.done")})
        for n in counts:
            parts = [shard_paths(run_dir, i, n) for i in range(n)]
            if not all(done.is_file() for _, done in parts):
                continue
            main = run_dir / STRATEGIES_CSV
            frames = [read_strategies(main)] + [read_strategies(rows) for rows, _ in parts]
            df = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
                else frames[0]
            df = df.drop_duplicates("id", keep="first")
            if order is not None:
                rank = {sid: k for k, sid in enumerate(order)}
                keys = [rank.get(sid, len(rank)) for sid in df["id"]]
                df = df.assign(_k=keys).sort_values("_k", kind="stable").drop(columns="_k")
            _rewrite(main, df)
            for rows, done in parts:
                rows.unlink(missing_ok=True)
                done.unlink(missing_ok=True)
            merged = True
    return merged


def _rewrite(path: Path, df: pd.DataFrame) -> None:
    """Write ``df`` as a complete strategies CSV, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in df.to_dict("records"):  # native Python values, so floats keep their repr
        writer.writerow([_fmt(row[c]) for c in COLUMNS])
    atomic_write_text(path, buf.getvalue())


def rf_columns(model, strategy) -> dict:
    """The receptive-field columns of one strategy (empty for a network without a receptive-field graph)."""
    from fusion3d.receptive_field import strategy_rf_columns

    try:
        return strategy_rf_columns(model, strategy)
    except TypeError:
        return {c: float("nan") for c in RF_COLUMNS}


def _with_rf_columns(df: pd.DataFrame, model) -> pd.DataFrame:
    """``df`` with its receptive-field columns computed from the strategy strings."""
    rows = [rf_columns(model, Strategy.from_string(s)) for s in df["strategy"]]
    return df.assign(**{c: [r[c] for r in rows] for c in RF_COLUMNS})


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


class _RowWriter:
    """Appends CSV rows, one flush + fsync per row. Holds an exclusive lock on the file (POSIX), so two
    sample processes never append to the same run at once."""

    def __init__(self, path: Path):
        self.fh = open(path, "a", newline="")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise RuntimeError(f"another process is sampling into {path}; wait for it to finish") from None

    def ensure_header(self) -> None:
        if os.fstat(self.fh.fileno()).st_size == 0:
            self._write(COLUMNS)

    def _write(self, values) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([_fmt(v) for v in values])
        self.fh.write(buf.getvalue())
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def write(self, row: dict) -> None:
        self._write([row[c] for c in COLUMNS])

    def close(self) -> None:
        self.fh.close()  # releases the lock


# ----------------------------------------------------------------------------- helpers


def _weights_sha1(state_dict: dict) -> str:
    """sha1 of every tensor of a state dict, in name order (the same digest as ``train.weights_digest``)."""
    h = hashlib.sha1()
    for name, t in sorted(state_dict.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def recal_positions(num_fit: int, num: int, seed: int) -> list[int]:
    """A seeded subset of ``num`` positions of the fit split (sorted), the recalibration videos."""
    k = min(int(num), num_fit)
    rng = np.random.default_rng([int(seed), 5151])
    return sorted(rng.choice(num_fit, size=k, replace=False).tolist())


def _score(model, loader, device):
    probs, labels, videos = predict(model, loader, device)
    return video_scores(probs, labels, videos)


def load_run(run_dir: str | Path):
    """(checkpoint dict, Config, template with the trained weights) of a run directory."""
    from fusion3d.train import CHECKPOINT, load_checkpoint

    state = load_checkpoint(Path(run_dir) / CHECKPOINT)
    cfg = from_dict(state["config"])
    model = build_model(cfg.model, state["num_classes"])
    model.load_state_dict(state["model"])
    return state, cfg, model


def selection_cache(cfg, run_dir: Path, progress: bool = False):
    """(fit split, clip cache of the selection split) of a run. The selection split is rebuilt from
    the config and checked against the run's ``splits.json``: strategies (and other diagnostics) are
    never measured on videos the template may have trained on."""
    fit, selection = load_splits(cfg.data, cfg.run.seed)
    if len(selection) == 0:
        raise ValueError("the run has no selection split (data.selection_fraction = 0 and no data.selection_subset): "
                         "strategies must be scored on videos the template never trained on")
    splits_file = Path(run_dir) / "splits.json"
    if splits_file.is_file():
        recorded = json.loads(splits_file.read_text())
        if [r.path for r in selection.records] != recorded.get("selection"):
            raise RuntimeError(f"the selection split rebuilt from the config differs from {splits_file} (the dataset "
                               "changed since training?): refusing to score strategies on videos the template may have "
                               "trained on")
    return fit, build_clip_cache(selection, cfg.data, progress=progress)


def recal_loader(cfg, fit, recal_clips: int | None = None, progress: bool = False):
    """(loader, number of videos) of the fixed BatchNorm-recalibration clips: a seeded subset of the
    fit split (``recal_clips`` videos, default 200), one centre clip each, batches of
    ``train.batch_size`` (the batch size the template's statistics were trained at)."""
    positions = recal_positions(len(fit), DEFAULT_RECAL_CLIPS if recal_clips is None else recal_clips, cfg.run.seed)
    if not positions:
        raise ValueError("no fit videos for BatchNorm recalibration (recal_clips = 0?); pass recalibrate=False")
    recal_cfg = dataclasses.replace(cfg.data, test_clips=1, test_crops=1)
    ds = build_clip_cache(fit.subset(positions), recal_cfg, progress=progress).dataset(cfg.data.mean, cfg.data.std)
    return make_loader(ds, batch_size=cfg.train.batch_size, num_workers=0, shuffle=False, seed=cfg.run.seed), len(ds)


# ----------------------------------------------------------------------------- the stage


def run_sample(run_dir: str | Path, num: int = 100, seed: int | None = None, recalibrate: bool = True,
               recal_clips: int | None = None, batch_size: int | None = None, device: str | None = None,
               progress: bool = True, limit: int | None = None,
               shard: str | tuple[int, int] | None = None) -> pd.DataFrame:
    """Score ``num`` sampled strategies plus the canonical ones; returns every row of ``strategies.csv``.

    ``seed``: seed of the strategy draws (default: the run seed). ``recalibrate``: also score after
    BatchNorm recalibration (else the ``*_after`` columns are empty). ``recal_clips``: number of fit
    videos (one centre clip each) used for recalibration (default 200, at most the fit split).
    ``batch_size``: evaluation batch size (default ``max(2 * train.batch_size, 16)``); recalibration
    batches use ``train.batch_size``, the batch size the template's statistics were trained at.
    ``device``: torch device (default: the run's ``run.device``). ``limit``: stop after scoring this
    many new strategies (the run can be resumed; for staged runs and tests). ``shard``: ``"I/N"``
    to score only this process's share (see the module docstring); default from torchrun's
    environment. A shard that does not merge returns its own rows.
    """
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    state, cfg, model = load_run(run_dir)
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    shard_i, shard_n = shard_spec(shard)
    dev = resolve_device(device or cfg.run.device)
    if dev.type == "cuda" and shard_n > 1 and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    model.to(dev).eval()
    run_seed = cfg.run.seed
    draw_seed = run_seed if seed is None else int(seed)
    d_cfg = cfg.data

    # data: the selection split (scored) and the fixed recalibration clips
    fit, sel_cache = selection_cache(cfg, run_dir, progress)
    n_videos = int(sel_cache.index.loc[sel_cache.index["valid"], "video"].nunique())
    views = (f"selection split, {d_cfg.test_clips} clip x {d_cfg.test_crops} crop per video, per-video top-1, "
             f"{n_videos} videos")
    eval_bs = batch_size or max(2 * cfg.train.batch_size, 16)
    sel_loader = make_loader(sel_cache.dataset(d_cfg.mean, d_cfg.std), batch_size=eval_bs, num_workers=0,
                             shuffle=False, seed=run_seed)
    recal, recal_videos = (recal_loader(cfg, fit, recal_clips, progress) if recalibrate else (None, 0))

    input_shape = (model.in_channels, d_cfg.clip_len, d_cfg.crop_size, d_cfg.crop_size)
    measurement = {"weights_sha1": _weights_sha1(state["model"]), "recalibrate": bool(recalibrate),
                   "recal_videos": recal_videos, "recal_batch_size": cfg.train.batch_size if recalibrate else 0,
                   "selection_videos": n_videos, "views": views, "input_shape": list(input_shape)}

    main_csv, json_path = run_dir / STRATEGIES_CSV, run_dir / SAMPLE_JSON
    plan = strategy_plan(model, num, draw_seed)
    order = [s.id for s, _ in plan]
    if shard_n == 1:
        merge_shards(run_dir, order)  # what earlier sharded runs left behind
        csv_path, done_path = main_csv, None
    else:
        csv_path, done_path = shard_paths(run_dir, shard_i, shard_n)
        done_path.unlink(missing_ok=True)
    settings = {"num": int(num), "seed": draw_seed, "recalibrate": bool(recalibrate), "recal_clips": recal_clips,
                "eval_batch_size": eval_bs, "device": str(dev), "limit": limit, "shards": shard_n}
    info = {"complete": False, "settings": settings, "measurement": measurement,
            "checkpoint_epoch": state.get("epoch"), "planned": len(plan)}
    template_bn = bn_state(model)
    writer = _RowWriter(csv_path)  # takes the lock before the existing rows are read
    bar = None
    new_rows, seconds = 0, []
    try:
        existing = read_strategies(csv_path, repair=True)
        if len(existing) and existing[list(RF_COLUMNS)].isna().all().all():  # written before the RF columns
            existing = _with_rf_columns(existing, model)
            _rewrite(csv_path, existing)
        if csv_path != main_csv:
            existing = pd.concat([read_strategies(main_csv), existing], ignore_index=True)
        if len(existing) and json_path.is_file():
            previous = json.loads(json_path.read_text()).get("measurement", {})
            diff = [k for k in MEASUREMENT_KEYS if k in previous and previous[k] != measurement[k]]
            if diff:
                raise RuntimeError(f"{csv_path} was measured with a different {', '.join(diff)} (other weights or "
                                   "settings); move it away to sample again")
        done = set(existing["id"].astype(str))
        mine = plan[shard_i::shard_n]
        todo = [(s, src) for s, src in mine if s.id not in done]
        if shard_i == 0:
            atomic_write_text(json_path, json.dumps(info, indent=1) + "\n")
        writer.ensure_header()
        if progress:
            from tqdm import tqdm

            desc = "scoring strategies" + (f" (shard {shard_i}/{shard_n})" if shard_n > 1 else "")
            bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=desc, unit="strategy",
                       file=sys.stderr, dynamic_ncols=True)
        for strategy, source in todo:
            if limit is not None and new_rows >= limit:
                break
            t0 = time.perf_counter()
            load_bn_state(model, template_bn)
            model.apply_strategy(strategy)
            before = _score(model, sel_loader, dev)
            top1_after = top5_after = float("nan")
            if recal is not None:
                recalibrate_bn(model, recal, dev)
                after = _score(model, sel_loader, dev)
                top1_after, top5_after = after.top1, after.top5
            counts = strategy.counts()
            row = {"strategy": str(strategy), "id": strategy.id, "source": source,
                   "top1_before": before.top1, "top5_before": before.top5,
                   "top1_after": top1_after, "top5_after": top5_after,
                   "macs": count_macs(model, input_shape, strategy), "params": count_params(model, strategy),
                   "n_S": counts["S"], "n_ST": counts["ST"], "n_S+ST": counts["S+ST"], "n_none": counts["none"],
                   "views": views, "seconds": round(time.perf_counter() - t0, 4), **rf_columns(model, strategy)}
            writer.write(row)
            seconds.append(row["seconds"])
            new_rows += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(top1=f"{(top1_after if recal is not None else before.top1):.1f}")
        finished = limit is None or new_rows < limit or not todo[new_rows:]
        df = read_strategies(csv_path)
    finally:
        writer.close()
        if bar is not None:
            bar.close()
        load_bn_state(model, template_bn)
        model.apply_strategy(None)

    if done_path is not None:
        if not finished:
            return df
        done_path.write_text("done\n")
        if not merge_shards(run_dir, order):
            return df  # other shards still running: the last one to finish merges
        df = read_strategies(main_csv)
    scored = set(df["id"].astype(str))
    score = "top1_after" if recalibrate else "top1_before"
    sampled = df[df["source"] == "sampled"]
    best = df.sort_values([score, "macs"], ascending=[False, True], kind="stable").iloc[0] if len(df) else None
    info.update({
        "complete": all(s.id in scored for s, _ in plan), "rows": len(df), "new_rows": new_rows,
        "unique_sampled_planned": sum(1 for _, src in plan if src == "sampled"),
        "duplicates_removed": int(num) + 4 - len(plan),
        "seconds_total": round(time.perf_counter() - t_start, 3),
        "seconds_per_strategy": round(float(np.mean(seconds)), 4) if seconds else None,
        "canonical_ids": {source: Strategy.uniform(unit, model.num_slots).id for source, unit in CANONICAL},
        "most_probable_id": model.most_probable_strategy().id,
        "score_column": score,
        "sampled_mean": float(sampled[score].mean()) if len(sampled) else None,
        "sampled_std": float(sampled[score].std(ddof=0)) if len(sampled) else None,
        "best": None if best is None else {"id": best["id"], "strategy": best["strategy"], "source": best["source"],
                                           score: float(best[score]), "macs": int(best["macs"])},
    })
    atomic_write_text(json_path, json.dumps(info, indent=1) + "\n")
    return df
