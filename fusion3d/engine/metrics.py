"""The metrics log: append-only JSON lines (``metrics.jsonl``), optionally mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from fusion3d.errors import FusionError
from fusion3d.utils import atomic_write_bytes


class MetricsLog:
    """Append-only JSON lines (one flush per record, so a crash loses at most the last line)."""

    def __init__(self, path: Path, enabled: bool, tensorboard_dir: Path | None = None):
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RuntimeError(
                    "train.tensorboard=true needs the tensorboard package (pip install tensorboard)"
                ) from None
            self.tb = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(_json_safe(record), allow_nan=False) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records written after the checkpoint (they will be written again).

        A torn last line (a crash in the middle of a write) is dropped and reported; a damaged line
        elsewhere raises a FusionError naming the file and the line."""
        if not (self.enabled and self.path.is_file()):
            return
        lines = self.path.read_text(errors="replace").splitlines()
        keep = []
        for n, ln in enumerate(lines, 1):
            if not ln.strip():
                continue
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError:
                if n == len(lines):
                    print(f"warning: {self.path}: dropped a torn last line (line {n})", file=sys.stderr)
                    continue
                raise FusionError(
                    f"{self.path} line {n} is not a JSON record; repair or remove that line to resume"
                ) from None
            if isinstance(rec, dict) and rec.get("step", 0) <= step:
                keep.append(ln)
        atomic_write_bytes(self.path, ("\n".join(keep) + "\n" if keep else "").encode())


def _json_safe(value):
    """``value`` with every non-finite float as null: metrics.jsonl stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
