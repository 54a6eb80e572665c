"""Divergence guards of the training loop: the first non-finite loss, gradient norm, drop logit or
weight stops the run with a :class:`~fusion3d.errors.NonFiniteError` naming epoch, step and quantity."""

from __future__ import annotations

import torch

from fusion3d.errors import NonFiniteError


def grad_norm(model) -> torch.Tensor:
    """The 2-norm of every gradient of ``model`` (zero when none has one)."""
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def diverged(ctx: dict, epoch: int, step: int, what: str, value) -> NonFiniteError:
    """The error that stops a run at the first non-finite quantity; the checkpoint is never overwritten
    with it, so the one on disk is the last good state."""
    ckpt = ctx["checkpoint"]
    kept = (
        f"{ckpt} still holds epoch {ctx['saved_epoch']}, the last good state"
        if ctx["saved_epoch"]
        else f"no checkpoint was written to {ckpt.parent}"
    )
    return NonFiniteError(
        f"training diverged at epoch {epoch + 1}, step {step}: the {what} is {value} (not finite); "
        f"stopped, {kept}; lower train.lr (now {ctx['t_cfg'].lr:g}) or set train.grad_clip"
    )


def finite(t: torch.Tensor, what: str, epoch: int, step: int, ctx: dict) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = t[~torch.isfinite(t)].flatten()[0].item()
        raise diverged(ctx, epoch, step, what, bad)
