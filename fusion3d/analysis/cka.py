"""Layer-by-layer representational similarity of sub-networks: debiased minibatch linear CKA.

Centred kernel alignment (Kornblith et al. 2019) with linear kernels, estimated as in Nguyen, Raghu &
Kornblith 2021 ("Do wide and deep networks learn the same things?"):

- ``gram_linear(x)``: ``x`` (n, d) -> ``K = Xc Xc^T`` (n, n) in float64, with ``Xc`` the column-centred
  features. Centring in float64 makes the Gram immune to large constant offsets of float32 features
  (the unbiased estimator below is invariant to them in exact arithmetic, not in float32).
- ``hsic_unbiased(K, L)``: the unbiased HSIC estimator of Song et al. 2012 (diagonals zeroed,
  normaliser n (n - 3); needs n >= 4):
  ``[tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))``.
- ``cka_debiased(X, Y) = HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))``: close to 0 for
  independent features however high their dimension; ``cka_biased`` (the plain ``tr(Kc Lc) /
  (||Kc|| ||Lc||)``) is pulled towards 1 when d >> n (independent Gaussian features, n = 64, d = 4096:
  about 0.98).
- Minibatch CKA: per minibatch of a *fixed* size n, HSIC_u(K_a, L_b), HSIC_u(K_a, K_a), HSIC_u(L_b,
  L_b) for every pair of layers; CKA = mean HSIC_ab / sqrt(mean HSIC_aa * mean HSIC_bb). The average
  of unbiased estimates is unbiased only if every minibatch has the same n, so a batch of any other
  size (a short last batch) is dropped and counted.

Activations are never stored: ``SlotGrams`` registers forward hooks on a network's slots
(``model.slots``) that flatten each output to (n, C*T*H*W), form the float64 Gram inside the hook
and keep only that (n, n) matrix. The output of a dense slot is its ``growth`` *new* channels (not the
concatenated block features); a dense slot with unit ``none`` outputs zeros, whose Gram is 0, so its
CKA is NaN (it has no representation). A transition's output is its pooled, halved features.

``run_cka`` measures a trained run (``fusion3d.stages.sample.load_run``) on the first clips of its selection
split: (a) slot x slot CKA within one strategy (Opt from ``opt_strategy.json`` if the analyze stage
wrote it, else the most probable strategy) and (b) between two strategies (Opt vs all-S by default),
each with its own recalibrated BatchNorm statistics (``fusion3d.engine.bn.recalibrate_bn``), and writes
``cka.csv``, ``cka_within.png``, ``cka_between.png`` and ``cka.json`` into the run directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion3d.engine.bn import batch_input, bn_state, load_bn_state
from fusion3d.models.strategy import Strategy, as_strategy
from fusion3d.utils import save_figure

# ----------------------------------------------------------------------------- estimators


def gram_linear(x: Any) -> np.ndarray:
    """(n, ...) features -> (n, n) float64 Gram of the column-centred, flattened features. A torch
    tensor is converted and centred in float64 on its own device (only the Gram leaves it)."""
    if isinstance(x, torch.Tensor):
        f = x.detach().reshape(x.shape[0], -1).to(torch.float64)
        f = f - f.mean(0, keepdim=True)
        return (f @ f.T).cpu().numpy()
    f = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    f = f - f.mean(0)
    return f @ f.T


def _check_grams(K: np.ndarray, L: np.ndarray) -> int:
    if K.shape[-2:] != L.shape[-2:] or K.shape[-1] != K.shape[-2]:
        raise ValueError(f"Gram matrices must be square and of the same size, got {K.shape} and {L.shape}")
    n = K.shape[-1]
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs n >= 4 samples, got {n}")
    return n


def _zero_diag(K: np.ndarray) -> np.ndarray:
    K = np.array(K, dtype=np.float64, copy=True)
    idx = np.arange(K.shape[-1])
    K[..., idx, idx] = 0.0
    return K


def hsic_unbiased(K: Any, L: Any) -> float:
    """Unbiased HSIC estimator (Song et al. 2012, Eq. 5) of two (n, n) Gram matrices, n >= 4."""
    K, L = np.asarray(K, dtype=np.float64), np.asarray(L, dtype=np.float64)
    n = _check_grams(K, L)
    K, L = _zero_diag(K), _zero_diag(L)
    trace = float((K * L.T).sum())
    middle = float(K.sum() * L.sum()) / ((n - 1) * (n - 2))
    last = 2.0 * float(K.sum(0) @ L.sum(1)) / (n - 2)
    return (trace + middle - last) / (n * (n - 3))


def hsic_unbiased_matrix(Ks: Any, Ls: Any) -> np.ndarray:
    """``hsic_unbiased(Ks[i], Ls[j])`` for every pair: stacks (a, n, n), (b, n, n) -> (a, b)."""
    Ks, Ls = np.asarray(Ks, dtype=np.float64), np.asarray(Ls, dtype=np.float64)
    n = _check_grams(Ks, Ls)
    Ks, Ls = _zero_diag(Ks), _zero_diag(Ls)
    trace = np.einsum("aij,bji->ab", Ks, Ls)
    middle = np.outer(Ks.sum((1, 2)), Ls.sum((1, 2))) / ((n - 1) * (n - 2))
    last = 2.0 * np.einsum("ai,bi->ab", Ks.sum(1), Ls.sum(2)) / (n - 2)
    return (trace + middle - last) / (n * (n - 3))


def _self_hsic(Ks: np.ndarray) -> np.ndarray:
    """``hsic_unbiased(K, K)`` for each matrix of a stack (a, n, n) -> (a,)."""
    n = _check_grams(Ks, Ks)
    Ks = _zero_diag(Ks)
    s = Ks.sum((1, 2))
    trace = np.einsum("aij,aji->a", Ks, Ks)
    last = 2.0 * np.einsum("ai,ai->a", Ks.sum(1), Ks.sum(2)) / (n - 2)
    return (trace + s * s / ((n - 1) * (n - 2)) - last) / (n * (n - 3))


def _ratio(ab: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    den = np.sqrt(np.clip(np.multiply.outer(aa, bb), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, ab / np.where(den > 0, den, 1.0), np.nan)


def cka_debiased(X: Any, Y: Any) -> float:
    """Debiased linear CKA of features X (n, ...) and Y (n, ...) of the same n samples (n >= 4)."""
    K, L = gram_linear(X), gram_linear(Y)
    return float(
        _ratio(np.array(hsic_unbiased(K, L)), np.array(hsic_unbiased(K, K)), np.array(hsic_unbiased(L, L)))
    )


def hsic_biased(K: Any, L: Any) -> float:
    """The biased (plug-in) HSIC ``tr(H K H H L H) / (n - 1)^2`` (H the centring matrix)."""
    K, L = np.asarray(K, dtype=np.float64), np.asarray(L, dtype=np.float64)
    n = K.shape[0]
    H = np.eye(n) - 1.0 / n
    return float(((H @ K @ H) * (H @ L @ H).T).sum()) / (n - 1) ** 2


def cka_biased(X: Any, Y: Any) -> float:
    """Plain (biased) linear CKA of Kornblith et al. 2019, for comparison with ``cka_debiased``."""
    K, L = gram_linear(X), gram_linear(Y)
    return float(
        _ratio(np.array(hsic_biased(K, L)), np.array(hsic_biased(K, K)), np.array(hsic_biased(L, L)))
    )


class MinibatchCKA:
    """Accumulates per-minibatch unbiased HSIC between every layer of A and every layer of B.

    ``update(grams_a, grams_b)`` takes one minibatch's Grams (lists of (n, n)); every minibatch must
    have the n of the first one (``ValueError`` otherwise: drop short batches before). ``result()``
    is the (L_a, L_b) matrix mean HSIC_ab / sqrt(mean HSIC_aa mean HSIC_bb), NaN where a layer's
    self-HSIC is not positive (e.g. an all-zero output)."""

    def __init__(self) -> None:
        self.batches = 0
        self.batch_size: int | None = None
        self._ab: np.ndarray | None = None
        self._aa: np.ndarray | None = None
        self._bb: np.ndarray | None = None

    def update(self, grams_a: Sequence[Any], grams_b: Sequence[Any]) -> None:
        Ka = np.stack([np.asarray(g, dtype=np.float64) for g in grams_a])
        Lb = Ka if grams_b is grams_a else np.stack([np.asarray(g, dtype=np.float64) for g in grams_b])
        n = Ka.shape[-1]
        if self.batch_size is None:
            self.batch_size = n
        elif n != self.batch_size:
            raise ValueError(
                f"minibatch of {n} samples after minibatches of {self.batch_size}: the minibatch "
                "size must be fixed (drop short batches)"
            )
        ab = hsic_unbiased_matrix(Ka, Lb)
        aa = _self_hsic(Ka)
        bb = aa if Lb is Ka else _self_hsic(Lb)
        if self._ab is None:
            self._ab, self._aa, self._bb = ab, aa, bb
        else:
            if ab.shape != self._ab.shape:
                raise ValueError(f"{ab.shape} layer pairs after {self._ab.shape}")
            self._ab, self._aa, self._bb = self._ab + ab, self._aa + aa, self._bb + bb
        self.batches += 1

    def result(self) -> np.ndarray:
        if self._ab is None:
            raise ValueError("no minibatch was accumulated")
        m = float(self.batches)
        return _ratio(self._ab / m, self._aa / m, self._bb / m)


# ----------------------------------------------------------------------------- hooks


class SlotGrams:
    """Forward hooks on ``slots`` (default ``model.slots``) keeping only each output's (n, n) float64
    Gram (``gram_linear`` inside the hook; no activation is stored). Use as a context manager; after
    each forward pass, ``pop()`` returns the Grams in slot order and clears them."""

    def __init__(self, model: torch.nn.Module, slots: Sequence[torch.nn.Module] | None = None) -> None:
        self.slots = list(model.slots if slots is None else slots)
        self.names = [getattr(s, "name", str(i)) for i, s in enumerate(self.slots)]
        self.grams: list[np.ndarray | None] = [None] * len(self.slots)
        self._handles: list[Any] = []

    def _hook(self, i: int):
        def fn(module, args, output):
            self.grams[i] = gram_linear(output)

        return fn

    def __enter__(self) -> SlotGrams:
        self._handles = [s.register_forward_hook(self._hook(i)) for i, s in enumerate(self.slots)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def pop(self) -> list[np.ndarray]:
        missing = [n for n, g in zip(self.names, self.grams) if g is None]
        if missing:
            raise RuntimeError(f"no output was seen at slots {missing[:3]} during the forward pass")
        out = list(self.grams)  # type: ignore[arg-type]
        self.grams = [None] * len(self.slots)
        return out  # type: ignore[return-value]


def _strategy_or_none(model: Any, s: Any) -> Strategy | None:
    return None if s is None else as_strategy(s, model.num_slots)


@dataclasses.dataclass
class CKAPass:
    """A measured CKA matrix and how it was measured."""

    matrix: np.ndarray
    names_a: list[str]
    names_b: list[str]
    batches: int
    batch_size: int
    skipped_batches: int
    skipped_samples: int
    forward_passes: int


@torch.no_grad()
def cka_pass(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    strategy_a: Any,
    strategy_b: Any,
    batches: Iterable[Any],
    device: torch.device | str | None = None,
    bn_a: dict[str, torch.Tensor] | None = None,
    bn_b: dict[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
) -> CKAPass:
    """``cka_matrix`` with its bookkeeping (see there)."""
    device = torch.device(device) if device is not None else next(model_a.parameters()).device
    sa, sb = _strategy_or_none(model_a, strategy_a), _strategy_or_none(model_b, strategy_b)
    same = model_b is model_a
    one_pass = same and sa == sb and bn_b is bn_a
    models = [model_a] if same else [model_a, model_b]
    saved = []
    for m in models:
        saved.append(
            (
                m.training,
                m.gate_mode,
                m.current_strategy() if m.gate_mode == "hard" else None,
                bn_state(m) if (bn_a is not None or bn_b is not None) else None,
            )
        )
        m.eval()
    hooks = {id(m): SlotGrams(m) for m in models}
    acc = MinibatchCKA()
    skipped_batches = skipped_samples = passes = 0

    def grams(model, strategy, bn, x):
        if bn is not None:
            load_bn_state(model, bn)
        if strategy is not None:
            model.apply_strategy(strategy)
        model(x)
        return hooks[id(model)].pop()

    try:
        for h in hooks.values():
            h.__enter__()
        for batch in batches:
            x = batch_input(batch)
            n = int(x.shape[0])
            batch_size = n if batch_size is None else batch_size
            if n != batch_size:
                skipped_batches += 1
                skipped_samples += n
                continue
            x = x.to(device)
            ga = grams(model_a, sa, bn_a, x)
            gb = ga if one_pass else grams(model_b, sb, bn_b, x)
            passes += 1 if one_pass else 2
            acc.update(ga, gb)
    finally:
        for h in hooks.values():
            h.__exit__()
        for m, (training, mode, strategy, bn) in zip(models, saved):
            if bn is not None:
                load_bn_state(m, bn)
            if strategy is not None:
                m.apply_strategy(strategy)
            elif m.gate_mode != mode:
                m.apply_strategy(None)  # back to the mode in force before the first apply_strategy
            m.train(training)
    if acc.batches == 0:
        raise ValueError(f"no minibatch of {batch_size} samples to measure CKA on")
    return CKAPass(
        acc.result(),
        hooks[id(model_a)].names,
        hooks[id(model_b)].names,
        acc.batches,
        int(batch_size),
        skipped_batches,
        skipped_samples,
        passes,
    )


def cka_matrix(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    strategy_a: Any,
    strategy_b: Any,
    batches: Iterable[Any],
    device: torch.device | str | None = None,
    bn_a: dict[str, torch.Tensor] | None = None,
    bn_b: dict[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """(L_a, L_b) debiased minibatch CKA between the slot outputs of ``model_a`` under ``strategy_a`` and
    those of ``model_b`` under ``strategy_b`` on the inputs ``batches`` yields (tensors, ``(input, ...)``
    tuples or dicts with ``"clip"``).

    ``strategy`` None keeps the model's gate mode as it is (use a hard strategy: "sample" or "relaxed"
    modes draw random masks). ``model_b`` may be ``model_a`` itself: then each batch is forwarded once
    per strategy (two passes, ``apply_strategy`` before each) and the Grams are paired; with the same
    strategy and the same ``bn_*`` it is forwarded once.

    BatchNorm: the models are used in eval mode with the running statistics they hold (recalibrate
    them first with ``fusion3d.engine.bn.recalibrate_bn``). ``bn_a`` / ``bn_b`` (``fusion3d.engine.bn.bn_state``
    dicts) are loaded before each forward pass of that side: that is how one module is measured under
    two strategies with each strategy's own recalibrated statistics. Gate mode, training flag and
    (when ``bn_*`` is given) BatchNorm buffers are put back afterwards.

    ``batch_size``: the fixed minibatch size (default: the size of the first batch); batches of any
    other size are skipped (the minibatch estimator needs a fixed n >= 4)."""
    return cka_pass(model_a, model_b, strategy_a, strategy_b, batches, device, bn_a, bn_b, batch_size).matrix


def redundant_runs(matrix: Any, names: Sequence[str], threshold: float = 0.9) -> list[dict[str, Any]]:
    """Runs of two or more consecutive slots whose every adjacent pair has CKA above ``threshold``
    (``matrix[i, i + 1]`` of a within-network matrix; NaN breaks a run). Each run:
    ``{"first", "last", "slots", "length", "min_adjacent_cka"}``."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[0] != len(names) or m.shape[1] < len(names):
        raise ValueError(f"a {m.shape} matrix for {len(names)} slot names")
    runs: list[dict[str, Any]] = []
    start = None
    for i in range(len(names)):
        linked = i + 1 < len(names) and bool(m[i, i + 1] > threshold)  # NaN > t is False
        if linked and start is None:
            start = i
        if not linked and start is not None:
            adj = [float(m[k, k + 1]) for k in range(start, i)]
            runs.append(
                {
                    "first": names[start],
                    "last": names[i],
                    "slots": list(names[start : i + 1]),
                    "length": i - start + 1,
                    "min_adjacent_cka": min(adj),
                }
            )
            start = None
    return runs


def plot_cka_heatmap(
    matrix: Any,
    names_a: Sequence[str],
    names_b: Sequence[str],
    path: str | Path,
    title: str,
    label_a: str = "A",
    label_b: str = "B",
) -> None:
    """Heatmap of a CKA matrix (rows: slots of A, bottom to top; columns: slots of B), colour scale
    0..1, NaN in grey. Written atomically."""
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)
    la, lb = len(names_a), len(names_b)
    size = min(14.0, 3.0 + 0.28 * max(la, lb))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    cmap = plt.get_cmap("magma").with_extremes(bad="#bbbbbb")
    im = ax.imshow(np.ma.masked_invalid(m), origin="lower", cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(im, ax=ax, label="debiased linear CKA", fraction=0.046, pad=0.03)
    fs = 8 if max(la, lb) <= 24 else 5
    ax.set_xticks(range(lb))
    ax.set_xticklabels(names_b, rotation=90, fontsize=fs)
    ax.set_yticks(range(la))
    ax.set_yticklabels(names_a, fontsize=fs)
    ax.set_xlabel(label_b)
    ax.set_ylabel(label_a)
    ax.set_title(title, fontsize=10)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
