"""The evaluation clip cache built by the ranks of a torchrun job together.

``build_clip_cache_together`` is what every rank calls instead of ``build_clip_cache``. First the
ranks find out who shares ``data.cache_dir``: each writes a marker file into the cache folder and
lists the markers it sees. Ranks that see each other's markers form a group (all of them when the
folder is shared). Each member of a group decodes its contiguous share of the videos
(``fusion3d.utils.shard_range``) into a part folder next to the cache, ``.<key>.part-<i>-of-<n>``
(``build_clip_part``: written in a temporary folder, then renamed); after a barrier the group's first
rank joins the parts in order into the cache folder (``merge_clip_parts``: the files a single-process
build writes, byte for byte, renamed into place only once complete) and removes them; after a second
barrier every rank opens the cache. A finished cache is just opened.

Where no two ranks share the folder (each node its own disk), every rank builds the full cache
itself, all at the same time, and rank 0 says so in one line. The size line and the disk check come
from the first rank of each group, for the whole cache (the merge needs room for the cache plus one
part); in a compressed build every rank checks the projected size of the whole cache after its own
first videos. A problem on any rank (a refused disk check, an unwritable folder, every video failing
to decode) stops every rank with the same FusionError instead of leaving the others waiting in a
barrier until the process-group timeout.

The data layer holds no process group: the caller passes ``gather`` (``gather(value)``: every
rank's value in rank order; ``fusion3d.engine.distributed.gather_objects``), which is also the
barrier.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from fusion3d.config import DataConfig
from fusion3d.data.clip_cache import (
    ClipCache,
    _announce,
    _build_alone,
    _open,
    build_clip_part,
    cache_key,
    merge_clip_parts,
)
from fusion3d.data.dataset import VideoTable
from fusion3d.errors import FusionError


def build_clip_cache_together(
    table: VideoTable,
    cfg: DataConfig,
    rank: int,
    world: int,
    gather,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    num_workers: int | None = None,
    say=print,
) -> ClipCache:
    """Open the cache for ``(table, cfg)`` on every rank, the ranks building it together first if it
    does not exist yet (the module docstring says how). Every rank must call it."""
    root = Path(cache_dir if cache_dir is not None else cfg.cache_dir) / "clips"
    folder = root / cache_key(table, cfg)
    workers = cfg.num_workers if num_workers is None else num_workers
    groups = sharing_groups(root, folder.name, (folder / "meta.json").is_file(), rank, world, gather)
    if all(done for _, _, done in groups):
        return _open(folder)
    ranks, _, done = next(g for g in groups if rank in g[0])
    if rank == 0 and len({g[0] for g in groups}) > 1:
        say(_not_shared(root, world, [g[0] for g in groups]))
    first = rank == ranks[0]
    quiet = say if first else (lambda _: None)
    parts = [root / f".{folder.name}.part-{i}-of-{len(ranks)}" for i in range(len(ranks))]

    def announce() -> None:
        if first and not done:
            _announce(table, cfg, root, say)

    def decode() -> None:
        if done:
            return
        if len(ranks) == 1:  # a rank that shares the folder with no other builds as one process does
            _build_alone(table, cfg, root, folder, progress, workers, say)
        else:
            i = ranks.index(rank)
            build_clip_part(table, cfg, root, i, len(ranks), progress and first, workers, quiet)

    def merge() -> None:
        if first and not done and len(ranks) > 1:
            merge_clip_parts(table, cfg, parts, folder)
            for stale in root.glob(f".{folder.name}.part-*"):  # what interrupted builds left
                shutil.rmtree(stale, ignore_errors=True)

    together(gather, announce)  # each step ends in a barrier of every rank
    try:
        together(gather, decode)
    except FusionError:  # a share failed somewhere: the others' parts go too
        if not done and len(ranks) > 1:
            shutil.rmtree(parts[ranks.index(rank)], ignore_errors=True)
        raise
    together(gather, merge)
    return _open(folder)


def _not_shared(root: Path, world: int, groups: list[tuple[int, ...]]) -> str:
    if all(len(g) == 1 for g in groups):
        return (
            f"clip cache: data.cache_dir {root} is not shared by the {world} ranks, so each rank builds "
            "the full cache itself, all at the same time"
        )
    return (
        f"clip cache: data.cache_dir {root} is shared only within groups of ranks "
        f"({'; '.join(', '.join(map(str, g)) for g in groups)}), so each group builds its own copy, "
        "its ranks sharing the work"
    )


def together(gather, step):
    """``step()`` on this rank, then a barrier; when it raised on any rank, every rank stops with the
    same FusionError (the one message, or each rank's)."""
    problem, result = None, None
    try:
        result = step()
    except Exception as e:  # reported to every rank, then raised everywhere
        problem = str(e) if isinstance(e, FusionError) else f"{type(e).__name__}: {e}"
    problems = [(r, p) for r, p in enumerate(gather(problem)) if p]
    if problems:
        if len({p for _, p in problems}) == 1:
            raise FusionError(problems[0][1])
        raise FusionError("; ".join(f"rank {r}: {p}" for r, p in problems))
    return result


def sharing_groups(root: Path, key: str, done: bool, rank: int, world: int, gather) -> list[tuple]:
    """The ranks grouped by the cache folder they share: ``[(ranks, key, done), ...]`` (``key``: the
    group's cache key; ``done``: whether that cache exists), the same list on every rank. Each rank
    writes a marker into ``root`` and lists the markers it sees; ranks that see the same markers and
    agree on the key form a group. Where what the ranks see does not add up (one sees another that
    does not see it), each rank is a group of its own."""
    tag = gather(secrets.token_hex(8) if rank == 0 else None)[0]

    def marker(r: int) -> Path:
        return root / f".{key}.{tag}.rank-{r}"

    def mark() -> None:
        root.mkdir(parents=True, exist_ok=True)
        marker(rank).write_text(f"{rank}\n")

    together(gather, mark)  # every marker written
    seen = tuple(r for r in range(world) if marker(r).is_file())
    views = gather((seen, key, done))  # every rank has looked
    marker(rank).unlink(missing_ok=True)
    consistent = all(views[q][0] == views[r][0] for r in range(world) for q in views[r][0])
    groups: dict[tuple, list[int]] = {}
    for r, (s, k, _) in enumerate(views):
        groups.setdefault((s, k) if consistent else (r,), []).append(r)
    return [
        (tuple(ranks), views[ranks[0]][1], all(views[r][2] for r in ranks))
        for ranks in sorted(groups.values())
    ]
