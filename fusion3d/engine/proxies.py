"""Training-free quality proxies of a strategy, computed on a network at initialisation.

``synflow`` (Tanaka et al. 2020, used as a zero-cost NAS proxy by Abdelfattah et al., ICLR 2021):
with every weight replaced by its absolute value, BatchNorm in eval mode (the identity at
initialisation) and an all-ones input, ``R`` is the sum of the network's output and the score is
``sum(|theta| * dR/dtheta)`` over all parameters; it needs no data and no labels. Dropped paths are
not computed in the hard sub-network, so they contribute nothing. Computed in float64 (the product
of absolute weights overflows float32 in deep networks) and reported as log10.
"""

from __future__ import annotations

import copy
import math

import torch

from fusion3d.models.strategy import Strategy


@torch.no_grad()
def _abs_weights(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.abs_()


def synflow(model: torch.nn.Module, strategy: Strategy, input_shape: tuple[int, ...]) -> float:
    """log10 of the synflow score of ``strategy`` on a copy of ``model`` (its weights as they are:
    pass a freshly initialised network). ``input_shape``: (C, T, H, W) of one clip."""
    net = copy.deepcopy(model).double().eval()
    net.apply_strategy(strategy)
    _abs_weights(net)
    for p in net.parameters():
        p.grad = None
    x = torch.ones((1, *input_shape), dtype=torch.float64)
    net(x).sum().backward()
    total = sum(float((p.detach() * p.grad).sum()) for p in net.parameters() if p.grad is not None)
    return math.log10(total) if total > 0 else float("-inf")
