"""Evaluation shared by training (validation) and sampling (strategy scores).

Scores are per video: the softmax of every view (clip x crop) of a video is averaged, and top-1 /
top-5 are taken on that average. Videos that failed to decode are excluded before this point and
counted by the caller.

Batches (``split_batch``): this package's datasets yield dicts (``clip``, ``label``, ``video``); any
other dataset may yield ``(clip, label)`` or ``(clip, label, video)`` tuples (a ``TensorDataset``'s, for
instance). Without video ids every clip is its own video.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Scores:
    top1: float  # percent, per video
    top5: float
    videos: int
    views: int


def split_batch(batch: Any) -> tuple[torch.Tensor, Any, Any]:
    """(clips, labels, video ids) of a loader batch: a dict with ``clip`` and optionally ``label`` and
    ``video`` (this package's datasets), a ``(clip, label[, video, ...])`` tuple or list (what a
    ``TensorDataset`` or a tuple-returning dataset gives through the default collate), or a bare
    tensor of clips. Labels and video ids are None where the batch has none."""
    if isinstance(batch, Mapping):
        if "clip" not in batch:
            raise KeyError(f"a batch dict needs a 'clip' entry (keys: {', '.join(map(str, batch))})")
        return batch["clip"], batch.get("label"), batch.get("video")
    if isinstance(batch, (list, tuple)) and batch:
        rest = list(batch[1:3]) + [None] * (3 - len(batch[:3]))
        return batch[0], rest[0], rest[1]
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    raise TypeError(
        f"a batch must be a dict with 'clip', a (clip, label[, video]) tuple or a tensor, got {type(batch).__name__}"
    )


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader, device: torch.device, gather=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax probabilities, labels and video ids of every view the loader yields (model in eval mode).

    Batches are dicts or ``(clip, label[, video])`` tuples (``split_batch``); a batch without video
    ids numbers its clips on from the clips seen so far, so each is a video of its own. ``gather``
    (sharded validation): maps this process's three tensors to those of every process."""
    was_training = model.training
    model.eval()
    probs, labels, videos = [], [], []
    seen = 0
    for batch in loader:
        clip, label, video = split_batch(batch)
        if label is None:
            raise ValueError("predict needs labelled batches: a dict with 'label' or a (clip, label) tuple")
        logits = model(clip.to(device, non_blocking=True))
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(torch.as_tensor(label))
        videos.append(torch.arange(seen, seen + len(logits)) if video is None else torch.as_tensor(video))
        seen += len(logits)
    model.train(was_training)
    if not probs:  # an empty shard: (0,)-shaped tensors, which torch.cat skips when gathering
        probs, labels, videos = (
            [torch.empty(0)],
            [torch.empty(0, dtype=torch.long)],
            [torch.empty(0, dtype=torch.long)],
        )
    out = torch.cat(probs), torch.cat(labels), torch.cat(videos)
    return out if gather is None else gather(out)


def video_scores(probs: torch.Tensor, labels: torch.Tensor, videos: torch.Tensor) -> Scores:
    """Average view probabilities per video, then top-1 and top-5 accuracy in percent."""
    uniq, inverse = torch.unique(videos, return_inverse=True)
    summed = torch.zeros(len(uniq), probs.shape[1], dtype=torch.float64)
    summed.index_add_(0, inverse, probs.double())
    vid_labels = torch.zeros(len(uniq), dtype=torch.long)
    vid_labels[inverse] = labels.long()
    k = min(5, probs.shape[1])
    topk = summed.topk(k, dim=1).indices
    hit = topk == vid_labels[:, None]
    return Scores(
        top1=100.0 * hit[:, 0].double().mean().item(),
        top5=100.0 * hit.any(1).double().mean().item(),
        videos=len(uniq),
        views=len(videos),
    )


def posterior_predictive(
    model, loader, device, num_strategies: int, generator: torch.Generator, gather=None
) -> tuple[Scores, np.ndarray]:
    """Softmax averaged over ``num_strategies`` hard-sampled strategies (template in hard mode).

    Returns the scores of the averaged prediction and each strategy's own top-1 (percent).
    """
    total = None
    single = []
    previous = model.gate_mode
    try:
        for _ in range(num_strategies):
            model.apply_strategy(model.sample_strategy(generator))
            probs, labels, videos = predict(model, loader, device, gather)
            single.append(video_scores(probs, labels, videos).top1)
            total = probs if total is None else total + probs
    finally:
        model.set_gate_mode(previous)
    return video_scores(total / num_strategies, labels, videos), np.asarray(single)
