"""What a probe tells about a video, and the one error every reader raises for an unreadable one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoInfo:
    path: str  # absolute path
    num_frames: int
    fps: float
    duration: float  # seconds
    height: int
    width: int


class VideoDecodeError(RuntimeError):
    """A video (or frame folder) cannot be read; the message names the file and the reason."""

    def __init__(self, path, reason: str | None = None):
        if reason is None:  # a plain message, e.g. rebuilt by a DataLoader worker's re-raise
            self.path, self.reason = "", str(path)
            super().__init__(self.reason)
            return
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))
