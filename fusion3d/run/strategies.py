"""The strategies table (``strategies.csv``): its schema, its reader (torn-line repair), the locked
row writer of the sample stage, and the merge of sharded files.

One row per scored strategy, appended (flushed and fsynced) as soon as it is scored, so a crash
loses at most the row in progress; a torn last line is dropped on the next read.
"""

from __future__ import annotations

import csv
import io
import math
import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.errors import FusionError
from fusion3d.run.layout import RunDir
from fusion3d.utils import atomic_write_text, file_lock

COLUMNS: tuple[str, ...] = (
    "strategy",
    "id",
    "source",
    "top1_before",
    "top5_before",
    "top1_after",
    "top5_after",
    "macs",
    "params",
    "n_S",
    "n_ST",
    "n_S+ST",
    "n_none",
    "views",
    "seconds",
    "rf_t_min",
    "rf_t_max",
    "rf_s_min",
    "rf_s_max",
)
RF_COLUMNS: tuple[str, ...] = COLUMNS[
    -4:
]  # static receptive field at the head (fusion3d.analysis.receptive_field)
OLD_COLUMNS: tuple[str, ...] = COLUMNS[:-4]  # files written before the receptive-field columns existed
STRING_COLUMNS = {"id": str, "strategy": str}
# The accuracy columns; a run of several template seeds (``run.seeds > 1``) holds their mean over the
# seeds, and beside them each seed's value and the spread of the top-1 columns (``seed_columns``).
ACCURACY_COLUMNS: tuple[str, ...] = ("top1_before", "top5_before", "top1_after", "top5_after")
SPREAD_COLUMNS: tuple[str, ...] = ("top1_before", "top1_after")


def seed_columns(k: int) -> tuple[str, ...]:
    """The extra columns of a ``k``-seed strategies table: ``<acc>_seed<i>`` for every accuracy column and
    seed, then ``<top1>_sd`` (sample standard deviation over the seeds, ddof 1). Empty for k = 1."""
    if k < 2:
        return ()
    per_seed = tuple(f"{c}_seed{i}" for i in range(k) for c in ACCURACY_COLUMNS)
    return per_seed + tuple(f"{c}_sd" for c in SPREAD_COLUMNS)


def table_columns(k: int = 1) -> tuple[str, ...]:
    """Every column of a strategies table scored by ``k`` template seeds, in file order."""
    return COLUMNS + seed_columns(k)


def _seeds_of(header: tuple[str, ...]) -> int | None:
    """The number of template seeds a strategies header was written for, or None (not a known header)."""
    if header[: len(COLUMNS)] != COLUMNS:
        return None
    extra = len(header) - len(COLUMNS)
    per = len(ACCURACY_COLUMNS)
    if extra == 0:
        return 1
    k = (extra - len(SPREAD_COLUMNS)) // per
    return k if k >= 2 and header == table_columns(k) else None


def combine_seed_rows(rows: list[dict]) -> dict:
    """One strategies row from the rows each template seed scored for the same strategy: the accuracy
    columns are the mean over the seeds (NaN where a seed's is NaN), ``<acc>_seed<i>`` keep each seed's,
    ``<top1>_sd`` the spread (ddof 1); ``seconds`` is the sum; the other columns are the first seed's
    (strategy, cost and receptive field do not depend on the weights)."""
    if len(rows) < 2:
        raise ValueError(f"combining needs the rows of at least 2 seeds, got {len(rows)}")
    out = dict(rows[0])
    for c in ACCURACY_COLUMNS:
        values = np.array([float(r[c]) for r in rows])
        out[c] = float(values.mean())
        for i, v in enumerate(values):
            out[f"{c}_seed{i}"] = float(v)
        if c in SPREAD_COLUMNS:
            out[f"{c}_sd"] = float(values.std(ddof=1))
    out["seconds"] = round(sum(float(r["seconds"]) for r in rows), 4)
    views = rows[0]["views"]
    out["views"] = f"{views}; mean over {len(rows)} template seeds, each on its own selection split"
    return out


def read_strategies(path: str | Path, repair: bool = False) -> pd.DataFrame:
    """The finished rows of a strategies CSV (an empty frame with the columns if there is none).

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
        df = pd.read_csv(io.BytesIO(data), dtype=STRING_COLUMNS)
        return df.assign(**{c: np.nan for c in RF_COLUMNS})
    if _seeds_of(tuple(header)) is None:
        raise FusionError(
            f"{path} has columns {header}, expected {list(COLUMNS)} (plus the per-seed columns of a run "
            "of several template seeds); move it away to start over"
        )
    return pd.read_csv(io.BytesIO(data), dtype=STRING_COLUMNS)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def rewrite_strategies(path: Path, df: pd.DataFrame) -> None:
    """Write ``df`` as a complete strategies CSV, atomically (with the per-seed columns it holds)."""
    columns = COLUMNS + tuple(c for c in df.columns if c not in COLUMNS)
    if _seeds_of(columns) is None:
        columns = COLUMNS
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in df.to_dict("records"):  # native Python values, so floats keep their repr
        writer.writerow([_fmt(row[c]) for c in columns])
    atomic_write_text(path, buf.getvalue())


class RowWriter:
    """Appends strategy rows, one flush + fsync per row. Holds an exclusive lock on the file while
    open, so two sample processes never append to the same file at once."""

    def __init__(self, path: Path, columns: tuple[str, ...] = COLUMNS):
        self.columns = tuple(columns)
        self._locks = ExitStack()
        self._locks.enter_context(
            file_lock(
                path.with_name(f".{path.name}.lock"),
                blocking=False,
                busy=f"another process is sampling into {path}; wait for it to finish",
            )
        )
        self.path = path
        self.fh = open(path, "a", newline="")  # noqa: SIM115 - closed in close()

    def reopen(self) -> None:
        """Append to the file now at the path (after ``rewrite_strategies`` replaced it)."""
        self.fh.close()
        self.fh = open(self.path, "a", newline="")  # noqa: SIM115 - closed in close()

    def ensure_header(self) -> None:
        if os.fstat(self.fh.fileno()).st_size == 0:
            self._write(self.columns)

    def _write(self, values) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([_fmt(v) for v in values])
        self.fh.write(buf.getvalue())
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def write(self, row: dict) -> None:
        self._write([row[c] for c in self.columns])

    def close(self) -> None:
        self.fh.close()
        self._locks.close()  # releases the lock


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


def merge_shards(run_dir: str | Path, order: list[str] | None = None) -> bool:
    """Merge finished shard files into ``strategies.csv``. Only complete sets are merged: shards
    ``0..n-1`` of one ``n``, each with its done marker. Rows keep their first occurrence per id (the
    existing ``strategies.csv`` first) and are sorted by ``order`` (strategy ids, e.g. the plan) when
    given. Returns True when something was merged. Safe to call from several processes at once."""
    run = RunDir(run_dir)
    merged = False
    if not run.shard_counts():  # nothing finished: no lock taken, nothing written
        return False
    with file_lock(run.lock("strategies.merge")):
        for n in run.shard_counts():
            parts = [(run.shard_rows(i, n), run.shard_done(i, n)) for i in range(n)]
            if not all(done.is_file() for _, done in parts):
                continue
            frames = [read_strategies(run.strategies)] + [read_strategies(rows) for rows, _ in parts]
            filled = [f for f in frames if len(f)]
            df = pd.concat(filled, ignore_index=True) if filled else frames[0]
            df = df.drop_duplicates("id", keep="first")
            if order is not None:
                rank = {sid: k for k, sid in enumerate(order)}
                keys = [rank.get(sid, len(rank)) for sid in df["id"]]
                df = df.assign(_k=keys).sort_values("_k", kind="stable").drop(columns="_k")
            rewrite_strategies(run.strategies, df)
            for rows, done in parts:
                rows.unlink(missing_ok=True)
                done.unlink(missing_ok=True)
            merged = True
    return merged
