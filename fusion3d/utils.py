"""Small shared helpers: atomic file writes, one figure saver, one file lock, seeding, device choice,
sharding."""

from __future__ import annotations

import errno
import glob
import os
import random
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fusion3d.errors import FusionError


def _temp_tag() -> str:
    """This process's part of a temporary file's name: host and pid (who may clean it up)."""
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temps(folder: Path, name: str = "*") -> list[Path]:
    """Remove temporary files that crashed atomic writes of ``folder/name`` left behind
    (``.<name>.<host>-<pid>.<random>.tmp`` whose writer, on this host, is no longer running); returns them."""
    removed = []
    host, _ = _temp_tag().rsplit("-", 1)
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        try:
            tag = tmp.name[: -len(".tmp")].rsplit(".", 2)[-2]
            t_host, t_pid = tag.rsplit("-", 1)
            pid = int(t_pid)
        except ValueError:
            continue  # not ours (an older name without a pid): left alone
        if t_host == host and pid != os.getpid() and not _pid_alive(pid):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _umask() -> int:
    """The process umask (read from /proc where it can be, so no other thread sees it change)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half.

    The file gets the mode a plain ``open`` would give (``0o666`` minus the umask). The temporary
    file is ``.<name>.<host>-<pid>.<random>.tmp`` next to ``path``; ones whose writer died are removed
    here, the next time the file is written. A full disk raises a FusionError naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, glob.escape(path.name))
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_temp_tag()}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise


def _write_error(path: Path, e: OSError) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return FusionError(f"no space left on the device writing {path} (the old file, if any, is intact)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FusionError(f"cannot write {path}: {e.strerror}")
    return e


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically as PNG and release it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())
    try:  # a pyplot figure is also closed, so long runs do not accumulate figures
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


@contextmanager
def file_lock(path: Path, blocking: bool = True, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` (created if missing; portable, via filelock).

    ``blocking=False``: raise ``FusionError(busy)`` (a RuntimeError) at once when another process holds it."""
    from filelock import FileLock, Timeout

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=-1 if blocking else 0)
    try:
        lock.acquire()
    except Timeout:
        raise FusionError(busy or f"{path} is locked by another process") from None
    try:
        yield
    finally:
        lock.release()


def shard_range(n: int, rank: int, world: int) -> range:
    """The contiguous share of ``n`` items rank ``rank`` of ``world`` holds (sharded validation, the
    evaluation clip cache built by several ranks)."""
    return range(n * rank // world, n * (rank + 1) // world)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str):
    """The torch device ``name`` means (``auto``: cuda if available); an unknown name or an absent
    CUDA device raises a FusionError naming the value."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise FusionError(
            f"unknown torch device {name!r} (run.device / --device): use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FusionError(
                f"device {name!r} (run.device / --device): CUDA is not available here; use cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FusionError(
                f"device {name!r} (run.device / --device): this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type not in ("cpu", "mps", "xpu", "meta"):
        raise FusionError(
            f"device {name!r} (run.device / --device) is not supported: use auto, cpu or cuda[:N]"
        )
    return device
