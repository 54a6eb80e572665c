"""Process-group set-up under torchrun (gloo on CPU, NCCL on GPU) and the checks every rank must pass
together: a shared run directory, one checkpoint to resume from, and gathering what ranks computed.

Each check gathers every rank's answer and raises the same FusionError on every rank, so a problem
on one rank stops all of them at once with one clear line instead of leaving the others waiting in
a collective until the process-group timeout (``run.dist_timeout_s``).
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from fusion3d.errors import FusionError
from fusion3d.utils import resolve_device


def dist_env() -> tuple[int, int, int]:
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device_name: str, timeout_s: int = 0) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group under torchrun. ``timeout_s``: how long a
    collective waits for the other ranks (0: torch's default)."""
    rank, world, local = dist_env()
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        extra = {"timeout": timedelta(seconds=timeout_s)} if timeout_s > 0 else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **extra)
    return rank, world, device


def gather_objects(value, world: int) -> list:
    """``value`` of every rank, in rank order (every rank gets the list)."""
    if world == 1:
        return [value]
    out = [None] * world
    dist.all_gather_object(out, value)
    return out


def check_shared_dir(path: Path, probe: Path, rank: int, world: int) -> None:
    """Stop every rank unless each sees the file rank 0 just wrote into ``path`` (``run.out``)."""
    if world == 1:
        return
    nonce = None
    if rank == 0:
        path.mkdir(parents=True, exist_ok=True)
        nonce = secrets.token_hex(8)
        probe.write_text(nonce)
    box = [nonce]
    dist.broadcast_object_list(box, src=0)
    try:
        seen = probe.read_text() == box[0]
    except OSError:
        seen = False
    answers = gather_objects(seen, world)
    if rank == 0:
        probe.unlink(missing_ok=True)
    blind = [r for r, ok in enumerate(answers) if not ok]
    if blind:
        raise FusionError(
            f"run.out {path} is not shared by every rank: rank(s) {', '.join(map(str, blind))} of {world} "
            "cannot see the file rank 0 wrote there; put run.out on a file system that every node "
            "mounts at the same path"
        )


def agree_on_resume(what, problem: str | None, rank: int, world: int) -> None:
    """Stop every rank unless all resume from the same checkpoint (``what``: None for a fresh start,
    else something that identifies it: epoch, step, weights digest) and none hit a ``problem``."""
    if world == 1:
        if problem:
            raise FusionError(problem)
        return
    answers = gather_objects((what, problem), world)
    problems = [(r, p) for r, (_, p) in enumerate(answers) if p]
    if problems:
        if len({p for _, p in problems}) == 1 and len(problems) == world:
            raise FusionError(problems[0][1])
        raise FusionError(
            "cannot resume: " + "; ".join(f"rank {r}: {p}" for r, p in problems) + " (the other ranks could)"
        )
    if len({repr(w) for w, _ in answers}) > 1:
        seen = "; ".join(
            f"rank {r}: " + ("no checkpoint (a fresh start)" if w is None else _describe(w))
            for r, (w, _) in enumerate(answers)
        )
        raise FusionError(
            f"the ranks would resume from different checkpoints ({seen}); every rank must see the same "
            "checkpoint (run.out on a shared file system, or the same --resume file)"
        )


def _describe(what) -> str:
    epoch, batch, step, digest = what
    return f"epoch {epoch}, batch {batch}, step {step}, weights {digest[:10]}"


def gather_predictions(world: int):
    """A ``gather`` for ``fusion3d.engine.evaluate.predict``: every rank's (probs, labels, videos),
    concatenated in rank order (each rank held a contiguous shard, so the order is the unsharded one)."""
    if world == 1:
        return None

    def gather(parts: tuple) -> tuple:
        got = gather_objects(tuple(t.cpu() for t in parts), world)
        return tuple(torch.cat([g[i] for g in got]) for i in range(len(parts)))

    return gather
