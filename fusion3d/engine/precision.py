"""Numeric precision and memory layout of a training step (``train.precision``, ``train.channels_last``).

``fp32`` is plain training, untouched. ``bf16`` / ``fp16`` run the network's forward under
``torch.autocast``; the loss, the v-DropPath regulariser and the gates stay fp32 (the cross-entropy
is taken on fp32 logits, the regulariser is computed outside autocast, and a gate's keep multiplier
is computed from its fp32 logit before it is cast to the activation's type). The weights and the
optimizer state stay fp32 throughout. ``fp16`` scales the loss with a ``GradScaler`` (a step whose
gradients overflow is skipped and the scale lowered) and needs CUDA: on a CPU it is refused.
"""

from __future__ import annotations

import contextlib

import torch

from fusion3d.errors import FusionError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast, loss scaling and memory layout of one training run."""

    def __init__(self, name: str, device: torch.device, channels_last: bool = False) -> None:
        if name not in DTYPES:
            raise FusionError(f"config key 'train.precision': {name!r} is not one of {', '.join(DTYPES)}")
        if name == "fp16" and device.type != "cuda":
            raise FusionError(
                f"config key 'train.precision': fp16 needs a CUDA device (its loss scaler), this run is on "
                f"{device.type}; use train.precision=bf16 or fp32"
            )
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None
        self.memory_format = torch.channels_last_3d if channels_last else None

    def autocast(self):
        """The context of the network's forward (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Channels-last 3D weights (every 5-D parameter) when asked; the model is changed in place."""
        if self.memory_format is not None:
            for p in model.parameters():
                if p.dim() == 5:
                    p.data = p.data.contiguous(memory_format=self.memory_format)
        return model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format is not None and x.dim() == 5:
            return x.contiguous(memory_format=self.memory_format)
        return x

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """True gradients before they are measured or clipped (fp16: divide out the loss scale)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)  # skipped when the gradients overflowed
            self.scaler.update()

    def state_dict(self) -> dict:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
