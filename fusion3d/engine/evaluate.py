"""Evaluation shared by training (validation) and sampling (strategy scores).

Scores are per video: the softmax of every view (clip x crop) of a video is averaged, and top-1 /
top-5 are taken on that average. Videos that failed to decode are excluded before this point and
counted by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Scores:
    top1: float  # percent, per video
    top5: float
    videos: int
    views: int


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax probabilities, labels and video ids of every view the loader yields (model in eval mode)."""
    was_training = model.training
    model.eval()
    probs, labels, videos = [], [], []
    for batch in loader:
        logits = model(batch["clip"].to(device, non_blocking=True))
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(torch.as_tensor(batch["label"]))
        videos.append(torch.as_tensor(batch["video"]))
    model.train(was_training)
    return torch.cat(probs), torch.cat(labels), torch.cat(videos)


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
    model, loader, device, num_strategies: int, generator: torch.Generator
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
            probs, labels, videos = predict(model, loader, device)
            single.append(video_scores(probs, labels, videos).top1)
            total = probs if total is None else total + probs
    finally:
        model.set_gate_mode(previous)
    return video_scores(total / num_strategies, labels, videos), np.asarray(single)
