"""BatchNorm recalibration of a sub-network (docs/method.md §5).

A sub-network sampled from the template sees different activations than the template did while it
trained under relaxed (per-clip random) drop masks, so its BatchNorm running statistics are off.
``recalibrate_bn`` re-estimates them: it resets every BatchNorm layer's running statistics, forwards
a fixed set of clips with the BatchNorm layers in training mode (normalising with batch statistics,
as in training) and no gradients, and stores the *exact* statistics of everything each layer saw:

- running_mean = mean over every sample and position of every batch,
- running_var  = unbiased (n - 1) variance over the same n values (what torch stores for one batch).

Every value counts once, so batches of different sizes are weighted by their size. (torch's own
``momentum=None`` "cumulative average" weights each *batch* equally and averages per-batch unbiased
variances; with a short last batch or varying sizes that is not the statistic of the data.) The
statistics are accumulated by forward pre-hooks (per-batch mean and variance in the input's dtype, merged
in float64 with Chan's pairwise formula); torch's own running-stat update is switched to ``momentum=None``
during the pass and overwritten at the end. Momentum values, training flags and gate modes are
restored; a BatchNorm layer that no clip reached (a dropped path: not computed in hard mode) keeps
the statistics it had.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fusion3d.engine.evaluate import split_batch


@dataclass
class _Moments:
    """Running count, mean and sum of squared deviations per channel (float64)."""

    n: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None
    batches: int = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        nb = x.numel() // x.shape[1]
        if nb == 0:
            return
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(
            x, dim=dims, correction=0
        )  # the batch's own statistics, as BN computes them
        mb, m2b = mean.to(torch.float64), var.to(torch.float64) * nb
        self.batches += 1
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / n)
        self.n = n


def pooled_statistics(
    counts: list[int], means: list[torch.Tensor], variances: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(running_mean, running_var) of several batches together, as ``recalibrate_bn`` stores them
    (float64): the mean and the unbiased variance of every value of every batch, each value counted
    once. Batch b has ``counts[b]`` values per channel, per-channel mean ``means[b]`` and *unbiased*
    variance ``variances[b]`` (what a BatchNorm layer in training mode with momentum 1 leaves in its
    running buffers). M2 = sum of (n_b - 1) var_b + sum of n_b (mean_b - mean)^2, the exact pooled sum
    of squared deviations."""
    n = torch.tensor(counts, dtype=torch.float64, device=means[0].device)[:, None]
    mb = torch.stack(means).to(torch.float64)
    vb = torch.stack(variances).to(torch.float64)
    total = n.sum()
    mean = (n * mb).sum(0) / total
    m2 = ((n - 1) * vb).sum(0) + (n * (mb - mean) ** 2).sum(0)
    var = m2 / (total - 1) if total > 1 else torch.zeros_like(m2)
    return mean, var


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer with running statistics (BatchNorm1d/2d/3d, SyncBatchNorm, ...)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def batch_input(batch) -> torch.Tensor:
    """The clip tensor of a loader batch (a dict with ``clip``, a (clip, label, ...) tuple, or a tensor):
    ``fusion3d.engine.evaluate.split_batch``, the one reading of a batch."""
    return split_batch(batch)[0]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, loader, device: torch.device | str | None = None, max_batches: int | None = None
) -> dict:
    """Re-estimate every BatchNorm layer's running statistics on the clips ``loader`` yields.

    ``loader`` yields dicts with a ``"clip"`` tensor (the evaluation datasets of this package),
    ``(clip, label[, video])`` tuples (a ``TensorDataset``), or bare tensors (``batch_input``). Only
    the BatchNorm layers are put in training mode (dropout and everything else stay in eval mode, so
    the pass is deterministic); the fusion gates are not touched, so a hard strategy stays in force.
    ``max_batches`` stops after that many batches. Afterwards the model is in eval mode.

    Returns ``{"batches", "samples", "bn_layers", "bn_updated"}`` (layers that saw at least one clip).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    layers = batchnorm_layers(model)
    saved = [
        (
            m.momentum,
            m.running_mean.clone(),
            m.running_var.clone(),
            m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None,
        )
        for m in layers
    ]
    moments = [_Moments() for _ in layers]
    handles = [
        m.register_forward_pre_hook(lambda _m, args, acc=acc: acc.add(args[0]))
        for m, acc in zip(layers, moments)
    ]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.eval()
    for m in layers:
        m.train()
    batches = samples = 0
    try:
        for batch in loader:
            if max_batches is not None and batches >= max_batches:
                break
            x = batch_input(batch).to(device, non_blocking=True)
            model(x)
            batches += 1
            samples += x.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.eval()
        updated = 0
        for m, acc, (momentum, mean, var, nbt) in zip(layers, moments, saved):
            m.momentum = momentum
            if acc.n == 0:  # never reached: keep what it had
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                if nbt is not None:
                    m.num_batches_tracked.copy_(nbt)
                continue
            updated += 1
            m.running_mean.copy_(acc.mean.to(m.running_mean.dtype))
            unbiased = acc.m2 / (acc.n - 1) if acc.n > 1 else torch.zeros_like(acc.m2)
            m.running_var.copy_(unbiased.to(m.running_var.dtype))
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.fill_(acc.batches)
    return {"batches": batches, "samples": samples, "bn_layers": len(layers), "bn_updated": updated}


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every BatchNorm buffer (running mean/var, batch count), keyed by state-dict name."""
    ids = {id(m) for m in batchnorm_layers(model)}
    out = {}
    for mod_name, m in model.named_modules():
        if id(m) in ids:
            for buf_name, buf in m.named_buffers(recurse=False):
                if buf is not None:
                    out[f"{mod_name}.{buf_name}" if mod_name else buf_name] = buf.detach().clone()
    return out


@torch.no_grad()
def load_bn_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put back BatchNorm buffers saved by ``bn_state`` (in place)."""
    buffers = dict(model.named_buffers())
    missing = [k for k in state if k not in buffers]
    if missing:
        raise KeyError(f"BatchNorm buffers not in the model: {missing[:3]}")
    for k, v in state.items():
        buffers[k].copy_(v)
