"""The metrics log: append-only JSON lines (``metrics.jsonl``), optionally mirrored to TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

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
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records written after the checkpoint (they will be written again)."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = [
            ln
            for ln in self.path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= step
        ]
        atomic_write_bytes(self.path, ("\n".join(keep) + "\n" if keep else "").encode())
