"""Checkpoints: atomic save, safe load (no code from the file), RNG state, the weights digest."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import numpy as np
import torch

from fusion3d.errors import FusionError
from fusion3d.run.layout import FILES
from fusion3d.utils import atomic_write_bytes

CHECKPOINT = FILES["checkpoint"]  # the checkpoint's name inside a run directory


def save_checkpoint(path: Path, payload: dict) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FusionError(
            f"checkpoint {path} could not be read, it is damaged or not a checkpoint "
            f"({type(e).__name__}: {first[:200]})"
        ) from None


def non_finite_tensors(state_dict: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold a NaN or an infinity."""
    return [
        name
        for name, t in state_dict.items()
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite_weights(state_dict: dict, where: str) -> None:
    """Raise a FusionError naming ``where`` and the tensors when some weight is NaN or infinite."""
    bad = non_finite_tensors(state_dict)
    if bad:
        raise FusionError(
            f"{where} holds non-finite weights (NaN or inf in {len(bad)} tensors, e.g. {', '.join(bad[:3])}): "
            "the training diverged; retrain with a smaller train.lr"
        )


def state_digest(state_dict: dict) -> str:
    """sha1 of every tensor of a state dict, in name order: equal digests mean identical weights."""
    h = hashlib.sha1()
    for name, t in sorted(state_dict.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_digest(model: torch.nn.Module) -> str:
    """sha1 of every parameter and buffer of ``model`` (see ``state_digest``)."""
    return state_digest(model.state_dict())


def rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
