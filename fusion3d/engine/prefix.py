"""Scoring many strategies of one template with shared work (docs/method.md §5).

Strategies that agree on their first k slots compute the same activations up to slot k, and after
BatchNorm recalibration the same statistics there too: a BatchNorm layer's recalibrated statistics
depend only on what reaches it, which the units of the slots before it (and of its own slot) decide.
``score_shared`` scores a list of strategies on a prefix tree: the strategies sorted by their units,
cut by ``model.forward_steps()`` (``fusion3d.models.network.ForwardStep``). A node of the tree is a
step and the units of the slots it depends on; every node is computed once for all the strategies
below it, so the stem runs once per group of strategies, the first slot at most four times, and so on.

1. Recalibration (``recal`` given). The recalibration clips go through every node, batch by batch as
   the loader gives them (the template's batch size), with the BatchNorm layers in training mode (each
   batch normalised with its own statistics, as in ``fusion3d.engine.bn.recalibrate_bn``), and for each
   node the exact statistics of everything each BatchNorm layer of its step saw are kept: per batch,
   its count, mean and unbiased variance, which a layer with momentum 1 leaves in its running buffers
   (computed once, by BatchNorm's own fused kernel); pooled at the end in float64
   (``bn.pooled_statistics``: every value counts once) and stored as ``recalibrate_bn`` stores them
   (mean, unbiased variance). They equal ``recalibrate_bn``'s up to float rounding.
2. Evaluation. The selection clips go through every node twice: with the template's statistics
   ("before") and with the node's recalibrated ones ("after"). Each leaf's logits are the predictions of
   its strategies, turned into per-video scores as ``fusion3d.engine.evaluate.predict`` does.

Every strategy sees the same batches through the same module calls as ``model(x)`` (the steps'
contract), so its numbers do not depend on which other strategies share its tree: "before" logits
are bitwise those of ``predict``, and a strategy scores the same in any group and any shard.

Entry points: ``score_shared`` (per-video scores, what ``StrategyScorer.score_many`` uses),
``shared_predictions`` (the probabilities ``predict`` would give, per strategy) and ``shared_bn_stats``
(the recalibrated statistics of each strategy, what ``recalibrate_bn`` would store).

Memory: the tree is walked depth first and holds the states of one root-to-leaf path, for a chunk of
consecutive batches at a time; a chunk holds as many clips as fit in ``cache_mb`` (measured on the
first batch: the bytes of every state along a path, two streams), so the recalibration statistics
accumulate over chunks (per batch, pooled at the end: the same numbers) and predictions are gathered
chunk by chunk. The probabilities of every strategy are kept until the end (strategies x views x
classes floats, on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from fusion3d.engine.bn import batchnorm_layers, pooled_statistics
from fusion3d.engine.evaluate import Scores, split_batch, video_scores
from fusion3d.models.network import ForwardStep
from fusion3d.models.strategy import Strategy

Key = tuple[int, tuple[str, ...]]  # (step index, units of the slots the step depends on)
DEFAULT_CACHE_MB = 1024


class _Chain:
    """Steps of equal ``slots`` composed into one call."""

    def __init__(self, fns: Sequence[Callable]):
        self.fns = list(fns)

    def __call__(self, state):
        for fn in self.fns:
            state = fn(state)
        return state


def merged_steps(model: nn.Module) -> list[ForwardStep]:
    """``model.forward_steps()``, checked (``slots`` never decreases, from 0 up to ``num_slots``), with
    consecutive steps of equal ``slots`` composed into one (fewer nodes, same calls)."""
    steps = list(model.forward_steps())
    slots = [s.slots for s in steps]
    if not steps or slots != sorted(slots) or slots[0] < 0 or slots[-1] != model.num_slots:
        raise ValueError(
            f"{type(model).__name__}.forward_steps(): slots must not decrease and must end at "
            f"num_slots = {model.num_slots}, got {slots}"
        )
    out: list[ForwardStep] = []
    for step in steps:
        if out and out[-1].slots == step.slots:
            prev = out[-1].fn
            fns = [*(prev.fns if isinstance(prev, _Chain) else [prev]), step.fn]
            out[-1] = ForwardStep(step.slots, _Chain(fns))
        else:
            out.append(step)
    return out


def tree_nodes(strategies: Sequence[Strategy], steps: Sequence[ForwardStep]) -> int:
    """Number of nodes of the prefix tree (what ``score_shared`` computes, per clip and stream);
    ``len(strategies) * len(steps)`` without sharing."""
    return sum(len({s.units[: step.slots] for s in strategies}) for step in steps)


def _walk(model, steps, strategies, order, i, lo, hi, state, run_node, at_leaf) -> None:
    """Depth-first walk of the prefix tree of ``strategies[order[lo:hi]]`` (sorted by units) from step
    ``i`` on: ``run_node(key, fn, state)`` gives a node's state from its parent's; ``at_leaf(members,
    state)`` receives the final state (the logits) of the strategies that end there."""
    if i == len(steps):
        at_leaf(order[lo:hi], state)
        return
    depth = steps[i].slots
    a = lo
    while a < hi:
        units = strategies[order[a]].units[:depth]
        b = a + 1
        while b < hi and strategies[order[b]].units[:depth] == units:
            b += 1
        model.apply_strategy(strategies[order[a]])  # every member agrees on the slots this step uses
        child = run_node((i, units), steps[i].fn, state)
        _walk(model, steps, strategies, order, i + 1, a, b, child, run_node, at_leaf)
        a = b


def _tensors(state) -> Iterator[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, (tuple, list)):
        for s in state:
            yield from _tensors(s)


def path_bytes_per_clip(model, steps: Sequence[ForwardStep], strategy: Strategy, clips: torch.Tensor) -> int:
    """Bytes per clip of the states along one root-to-leaf path (tensors shared between consecutive
    states, such as a dense block's earlier features, counted once), measured on ``clips``."""
    model.apply_strategy(strategy)
    seen: set[int] = set()
    total = 0
    state = clips
    for step in steps:
        state = step.fn(state)
        for t in _tensors(state):
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total // max(1, clips.shape[0]) + 1


def _chunks(loader: Iterable, max_clips: int) -> Iterator[list]:
    """Consecutive batches of ``loader``, grouped while they hold fewer than ``max_clips`` clips."""
    chunk, clips = [], 0
    for batch in loader:
        chunk.append(batch)
        clips += len(split_batch(batch)[0])
        if clips >= max_clips:
            yield chunk
            chunk, clips = [], 0
    if chunk:
        yield chunk


class _Recalibration:
    """Phase 1: every BatchNorm layer in training mode with momentum 1, so that after each call its
    running buffers hold that batch's mean and unbiased variance (computed by BatchNorm itself, which
    normalises the batch with them as in training); a forward hook keeps them, per node and layer, and
    ``stats()`` pools them (``fusion3d.engine.bn.pooled_statistics``)."""

    def __init__(self, layers: list[nn.Module]):
        self.layers = layers
        self.batches: dict[Key, dict[int, list]] = {}
        self.key: Key | None = None

    def hook(self, index: int):
        def post(m, args, out):
            x = args[0]
            per_node = self.batches.setdefault(self.key, {})
            per_node.setdefault(index, []).append(
                (x.numel() // x.shape[1], m.running_mean.clone(), m.running_var.clone())
            )

        return post

    def run_node(self, key: Key, fn, states: list) -> list:
        self.key = key
        return [fn(s) for s in states]

    def stats(self) -> dict[Key, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        steps: dict[int, set[int]] = {}
        for key, per in self.batches.items():
            for i in per:
                steps.setdefault(i, set()).add(key[0])
        shared = [i for i, s in steps.items() if len(s) > 1]
        if shared:  # its statistics would be split between nodes: the steps' contract is broken
            raise ValueError(
                f"a BatchNorm layer ({type(self.layers[shared[0]]).__name__}) runs in more than one forward "
                "step; forward_steps() must not call a module in two steps"
            )
        out: dict[Key, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        for key, per in self.batches.items():
            out[key] = {}
            for i, batches in per.items():
                mean, var = pooled_statistics(*map(list, zip(*batches)))
                dtype = self.layers[i].running_mean.dtype
                out[key][i] = (mean.to(dtype), var.to(dtype))
        return out


def _load(layers: list[nn.Module], stats: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
    for i, (mean, var) in stats.items():
        layers[i].running_mean.copy_(mean)
        layers[i].running_var.copy_(var)


class _Tree:
    """The prefix tree of ``strategies`` on ``model`` and what a walk needs: the merged steps, the
    BatchNorm layers and the statistics they hold now (the template's, put back by ``restore``), the
    chunk size (clips) that ``cache_mb`` allows, measured on ``probe`` (a batch of clips)."""

    def __init__(self, model, strategies, device, probe: torch.Tensor, cache_mb: float):
        self.model, self.strategies, self.device = model, list(strategies), torch.device(device)
        self.steps = merged_steps(model)
        self.layers = batchnorm_layers(model)
        self.template = [(m.running_mean.clone(), m.running_var.clone()) for m in self.layers]
        self.tracked = [
            None if m.num_batches_tracked is None else m.num_batches_tracked.clone() for m in self.layers
        ]
        self.order = sorted(range(len(self.strategies)), key=lambda i: self.strategies[i].units)
        model.eval()
        probe = probe.to(self.device)
        first = self.strategies[self.order[0]]
        per_clip = (
            path_bytes_per_clip(model, self.steps, first, probe) + probe[0].numel() * probe.element_size()
        )
        self.max_clips = max(1, int(cache_mb * 2**20) // (2 * per_clip))

    def walk(self, state, run_node, at_leaf) -> None:
        _walk(
            self.model,
            self.steps,
            self.strategies,
            self.order,
            0,
            0,
            len(self.order),
            state,
            run_node,
            at_leaf,
        )

    def restore(self) -> None:
        _load(self.layers, dict(enumerate(self.template)))
        for m, nbt in zip(self.layers, self.tracked):
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)

    def recalibrate(self, recal: Iterable) -> dict[Key, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        """Phase 1 over the ``recal`` loader: the recalibrated statistics of every node."""
        rec = _Recalibration(self.layers)
        handles = [m.register_forward_hook(rec.hook(i)) for i, m in enumerate(self.layers)]
        momenta = [m.momentum for m in self.layers]
        for m in self.layers:
            m.momentum = 1.0
            m.train()
        try:
            for chunk in _chunks(recal, 2 * self.max_clips):
                self.walk(
                    [split_batch(b)[0].to(self.device, non_blocking=True) for b in chunk],
                    rec.run_node,
                    _no_leaf,
                )
        finally:
            for h in handles:
                h.remove()
            for m, momentum in zip(self.layers, momenta):
                m.momentum = momentum
            self.model.eval()
            self.restore()
        return rec.stats()

    def strategy_stats(self, stats, index: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The recalibrated statistics of strategy ``index``: those of the nodes on its path."""
        units = self.strategies[index].units
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, step in enumerate(self.steps):
            out.update(stats.get((i, units[: step.slots]), {}))
        return out


def _first_clips(loader: Iterable) -> torch.Tensor:
    for batch in loader:
        return split_batch(batch)[0]
    raise ValueError("the loader yields no batch")


@torch.no_grad()
def shared_bn_stats(
    model: nn.Module,
    strategies: Sequence[Strategy],
    recal: Iterable,
    device: torch.device | str,
    cache_mb: float = DEFAULT_CACHE_MB,
) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The recalibrated BatchNorm statistics of each strategy (phase 1 alone), ``{module name: (running
    mean, running var)}`` for every BatchNorm layer its sub-network computes: what
    ``fusion3d.engine.bn.recalibrate_bn`` stores, for all the strategies at once. The model is left as
    it was (statistics; gates in hard mode)."""
    strategies = list(strategies)
    if not strategies:
        return []
    tree = _Tree(model, strategies, device, _first_clips(recal), cache_mb)
    try:
        stats = tree.recalibrate(recal)
    finally:
        tree.restore()
    names = {id(m): name for name, m in model.named_modules()}
    return [
        {names[id(tree.layers[i])]: v for i, v in tree.strategy_stats(stats, k).items()}
        for k in range(len(strategies))
    ]


@torch.no_grad()
def shared_predictions(
    model: nn.Module,
    strategies: Sequence[Strategy],
    selection: Iterable,
    device: torch.device | str,
    recal: Iterable | None = None,
    cache_mb: float = DEFAULT_CACHE_MB,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor, torch.Tensor]:
    """(softmax probabilities of every view per strategy before recalibration, the same after it (None
    without ``recal``), labels, video ids): what ``fusion3d.engine.evaluate.predict`` returns, for all the
    strategies at once (see the module docstring). The model's BatchNorm statistics are left as they
    were (the template's: they are the "before" statistics), its gates in hard mode."""
    strategies = list(strategies)
    tree = _Tree(model, strategies, device, _first_clips(selection), cache_mb)
    try:
        stats = tree.recalibrate(recal) if recal is not None else None
        return _evaluate(tree, selection, stats)
    finally:
        tree.restore()


def score_shared(
    model: nn.Module,
    strategies: Sequence[Strategy],
    selection: Iterable,
    device: torch.device | str,
    recal: Iterable | None = None,
    cache_mb: float = DEFAULT_CACHE_MB,
) -> list[tuple[Scores, Scores | None]]:
    """(before, after) scores of each strategy (in the order given): per-video top-1 / top-5 on the
    ``selection`` loader's clips with the model's BatchNorm statistics as they are (the template's), and
    after BatchNorm recalibration on the ``recal`` loader's clips (None without ``recal``), from
    ``shared_predictions``. The model's gates are left in hard mode (call ``apply_strategy(None)``
    after) and its BatchNorm statistics as they were."""
    strategies = list(strategies)
    if not strategies:
        return []
    before, after, labels, videos = shared_predictions(model, strategies, selection, device, recal, cache_mb)
    return [
        (video_scores(b, labels, videos), None if after is None else video_scores(after[k], labels, videos))
        for k, b in enumerate(before)
    ]


def _no_leaf(members, state) -> None:
    return None


def _evaluate(tree: _Tree, selection: Iterable, stats):
    """Phase 2: before / after probabilities of every strategy, chunk by chunk."""
    n = len(tree.strategies)
    layers, template = tree.layers, tree.template
    probs: list[list[list[torch.Tensor]]] = [[[] for _ in range(n)], [[] for _ in range(n)]]
    labels, videos = [], []
    seen = 0

    def run_node(key: Key, fn, states):
        before, after = states
        if stats is None:
            return [fn(s) for s in before], None
        node = stats.get(key, {})
        _load(layers, {i: template[i] for i in node})
        before = [fn(s) for s in before]
        _load(layers, node)
        return before, [fn(s) for s in after]

    def at_leaf(members, states):
        for stream, logits in enumerate(states):
            if logits is None:
                continue
            p = torch.cat([torch.softmax(x.float(), dim=1).cpu() for x in logits])
            for idx in members:
                probs[stream][idx].append(p)

    for chunk in _chunks(selection, tree.max_clips):
        clips = []
        for batch in chunk:
            clip, label, video = split_batch(batch)
            if label is None:
                raise ValueError(
                    "scoring needs labelled batches: a dict with 'label' or a (clip, label) tuple"
                )
            clips.append(clip.to(tree.device, non_blocking=True))
            labels.append(torch.as_tensor(label))
            videos.append(torch.arange(seen, seen + len(clip)) if video is None else torch.as_tensor(video))
            seen += len(clip)
        tree.walk((clips, clips if stats is not None else None), run_node, at_leaf)
    before = [torch.cat(p) for p in probs[0]]
    after = [torch.cat(p) for p in probs[1]] if stats is not None else None
    return before, after, torch.cat(labels), torch.cat(videos)
