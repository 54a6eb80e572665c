"""The v-DropPath regulariser (docs/method.md §4).

For every gated path with drop probability p = sigmoid(logit) and gated conv weight W:

    coef * (1 - p) * ||W||^2  +  (1 / N) * [p log p + (1 - p) log(1 - p)]

summed over paths, where N is the number of training videos and

- ``form="code"`` (default): ``coef = k / N``, the form the original code trains with;
- ``form="paper"``: ``coef = k^2 / (2 N)``, the form printed in the paper.

Both use the paper's k values only as a starting point: k is the sparsity knob (p rises until the
classification gradient balances ``coef * ||W||^2``). Everything is computed from the logits with
``sigmoid`` and ``logsigmoid`` (1 - p = sigmoid(-logit), log p = logsigmoid(logit),
log(1 - p) = logsigmoid(-logit)), so the value and its gradient stay finite for saturated logits
(|logit| = 1e4) where p is exactly 0 or 1 in floating point; no clamp is needed.

The gradient reaches both the logits and the weights (the weight term acts as a weight decay of
strength ``2 coef (1 - p)`` on each gated conv).

Depth gates (``model.depth_gate``): each slot's depth gate, drop probability p_D, adds the same term
with ``||W||^2`` the sum of the squared norms of every conv weight the gate multiplies, i.e. of every
conv a kept slot computes (``GatedSlot.depth_weights``: the S and T path convs and, in a dense layer,
the shared 1x3x3 conv; BatchNorm parameters are not weighed, as for the paths):

    coef * (1 - p_D) * sum_{W in slot} ||W||^2  +  (1 / N) * [p_D log p_D + (1 - p_D) log(1 - p_D)]

The S / T terms are left exactly as without the depth gate (each gate is its own Bernoulli factor with
its own term, added), so the path convs are weighed twice, once per gate that multiplies them: their
effective weight decay becomes ``2 coef ((1 - p) + (1 - p_D))``. A slot's depth term is larger than its
path terms (it sums more weights), so for the same k the depth gate is pushed harder towards dropping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reg_coefficient(k: float, n: int, form: str = "code") -> float:
    """The weight-term coefficient: k / N ("code") or k^2 / (2 N) ("paper")."""
    if n <= 0:
        raise ValueError(f"N (number of training videos) must be > 0, got {n}")
    if form == "code":
        return float(k) / n
    if form == "paper":
        return float(k) ** 2 / (2.0 * n)
    raise ValueError(f"regulariser form must be 'code' or 'paper', got {form!r}")


def vdroppath_regularizer(
    logits: torch.Tensor, weight_sq_norms: torch.Tensor, k: float, n: int, form: str = "code"
) -> torch.Tensor:
    """Scalar regulariser; ``logits`` and ``weight_sq_norms`` are same-shape tensors, one entry per path."""
    if logits.shape != weight_sq_norms.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and weight norms {tuple(weight_sq_norms.shape)} differ in shape"
        )
    coef = reg_coefficient(k, n, form)
    p = torch.sigmoid(logits)
    q = torch.sigmoid(-logits)  # 1 - p, exact near p = 1
    neg_entropy = p * F.logsigmoid(logits) + q * F.logsigmoid(-logits)
    return (coef * q * weight_sq_norms).sum() + neg_entropy.sum() / n


def depth_sq_norms(depth_pairs) -> torch.Tensor:
    """Per slot, the sum of the squared norms of the weights a depth gate weighs (``depth_gated_weights``)."""
    return torch.stack([torch.stack([w.pow(2).sum() for w in ws]).sum() for _, ws in depth_pairs])


def template_regularizer(model, k: float, n: int, form: str = "code") -> torch.Tensor:
    """``vdroppath_regularizer`` over every gated path of a ``FusionTemplate`` (``model.gated_weights()``),
    plus, when the model has depth gates, the same over the depth gates (``model.depth_gated_weights()``,
    see the module docstring)."""
    pairs = model.gated_weights()
    logits = torch.stack([lg for lg, _ in pairs])
    norms = torch.stack([w.pow(2).sum() for _, w in pairs]).to(logits.dtype)
    reg = vdroppath_regularizer(logits, norms, k, n, form)
    depth = model.depth_gated_weights() if hasattr(model, "depth_gated_weights") else []
    if depth:
        d_logits = torch.stack([lg for lg, _ in depth])
        reg = reg + vdroppath_regularizer(d_logits, depth_sq_norms(depth).to(d_logits.dtype), k, n, form)
    return reg


def weight_term_pull(logits: torch.Tensor, weight_sq_norms: torch.Tensor, n: int) -> torch.Tensor:
    """Per path, the magnitude of d/d(logit) of the weight term at coefficient 1 / N: the pull of the
    regulariser on each drop logit per unit of ``coef * N`` (``||W||^2 p (1 - p) / N``)."""
    p, q = torch.sigmoid(logits), torch.sigmoid(-logits)
    return weight_sq_norms * p * q / n


def calibrated_k(ce_pull: float, unit_pull: float, fraction: float, form: str = "code") -> float:
    """The k whose regulariser pulls the drop logits ``fraction`` times as hard as the classification
    loss does: ``pull(k) = fraction * ce_pull`` with ``pull(k) = (coef(k) * N) * unit_pull``, i.e.
    ``k = fraction * ce_pull / unit_pull`` for the code's k / N and
    ``k = sqrt(2 * fraction * ce_pull / unit_pull)`` for the paper's k^2 / (2N)."""
    if ce_pull <= 0 or unit_pull <= 0 or fraction <= 0:
        raise ValueError(
            f"k calibration needs positive pulls and fraction, got ce {ce_pull}, unit {unit_pull}, fraction {fraction}"
        )
    ratio = fraction * ce_pull / unit_pull
    if form == "code":
        return float(ratio)
    if form == "paper":
        return float((2.0 * ratio) ** 0.5)
    raise ValueError(f"regulariser form must be 'code' or 'paper', got {form!r}")
