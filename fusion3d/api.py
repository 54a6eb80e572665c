"""The Python API: train any slot network on any dataset, then score strategies, in memory.

``fusion3d.fit`` and ``fusion3d.score_strategies`` (exported lazily by ``fusion3d``) are the library
counterparts of ``fusion3d train`` and ``fusion3d sample`` for users who bring their own network and
data and want no run directory:

- the network is any ``SlotNetwork``: a template preset or backbone from ``fusion3d.models.create``,
  or the user's own (a ``SlotNetwork`` of ``GatedSlot`` s, registered with ``register_model``);
- the data is any torch ``Dataset`` or ``DataLoader`` whose items are dicts ``{"clip", "label"[,
  "video"]}`` or tuples ``(clip, label[, video])``, clips ``(C, T, H, W)``
  (``fusion3d.engine.evaluate.split_batch``); without video ids every clip is its own video.

``fit`` follows the trainer's recipe (``fusion3d.engine.trainer``): warm-up with every path on, then
Variational DropPath (relaxed gates and the regulariser ``template_regularizer``), or one fixed
strategy throughout; the same optimiser groups, learning-rate schedules and validation. It keeps no
run directory: no resume, no metrics file; ``out`` saves the weights and the summary as a checkpoint
(``{"model": state_dict, ...}``, which ``fusion3d train --init`` also reads).

``score_strategies`` scores strategies as ``fusion3d sample`` does (``fusion3d.engine.scoring``): in
hard mode, before and after BatchNorm recalibration, per-video top-1 / top-5, with MACs and parameters.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fusion3d.analysis.marginals import drop_summary
from fusion3d.config import Config, TrainConfig, from_dict
from fusion3d.engine.bn import bn_state, load_bn_state, recalibrate_bn
from fusion3d.engine.checkpoint import save_checkpoint
from fusion3d.engine.epoch import epoch_message as _epoch_message
from fusion3d.engine.epoch import lr_factor
from fusion3d.engine.epoch import set_phase as _set_phase
from fusion3d.engine.evaluate import predict, split_batch, video_scores
from fusion3d.engine.trainer import _optimizer, _validate
from fusion3d.errors import NonFiniteError
from fusion3d.models import Strategy, as_strategy, count_macs, count_params, template_regularizer
from fusion3d.utils import resolve_device, seed_everything

__all__ = ["fit", "score_strategies", "train_config"]

SCORE_COLUMNS = ("strategy", "id", "top1_before", "top5_before", "top1_after", "top5_after", "macs", "params")


def train_config(cfg: Any = None) -> TrainConfig:
    """The training recipe ``cfg`` stands for: None (the defaults of the ``train`` config section), a
    ``TrainConfig``, a whole ``Config`` (its ``train`` section) or a mapping of ``train`` keys (plain,
    ``{"lr": 0.001}``, or dotted, ``{"train.lr": 0.001}``), checked like a config file's."""
    if cfg is None:
        return TrainConfig()
    if isinstance(cfg, Config):
        return dataclasses.replace(cfg.train)
    if isinstance(cfg, TrainConfig):
        return dataclasses.replace(cfg)
    if isinstance(cfg, Mapping):
        keys = {str(k).removeprefix("train."): v for k, v in cfg.items()}
        return from_dict({"train": keys}).train
    raise TypeError(
        f"cfg must be None, a TrainConfig, a Config or a mapping of train keys, got {type(cfg).__name__}"
    )


def _as_loader(data: Any, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """``data`` as a DataLoader: a DataLoader as it is, a dataset in batches of ``batch_size``
    (shuffled with a generator seeded by ``seed``; a last short batch is dropped when shuffling)."""
    if isinstance(data, DataLoader):
        return data
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(f"expected a torch Dataset or DataLoader, got {type(data).__name__}")
    drop = shuffle and len(data) > batch_size
    gen = torch.Generator().manual_seed(int(seed))
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, drop_last=drop, generator=gen)


def _sizes(loader: DataLoader) -> tuple[int, int]:
    """(batches per epoch, training items) of a training loader; both are needed (the learning-rate
    schedule runs over the batches, the regulariser's N counts the items)."""
    try:
        return max(1, len(loader)), len(loader.dataset)
    except TypeError:
        raise TypeError(
            "fit needs training data with a length (a map-style Dataset, or a DataLoader over one)"
        ) from None


def fit(
    model: Any,
    train_data: Any,
    eval_data: Any = None,
    cfg: Any = None,
    *,
    strategy: Any = None,
    n_train: int | None = None,
    seed: int | None = 0,
    device: str | torch.device | None = None,
    out: str | PathLike | None = None,
    verbose: bool = True,
) -> dict:
    """Train ``model`` (a ``SlotNetwork``) on ``train_data``; returns a summary.

    ``cfg``: the recipe (``train_config``: ``warmup_epochs`` with every path on, then ``epochs`` of
    v-DropPath with regulariser ``k`` / ``reg_form``; ``batch_size``, ``optimizer``, ``lr``, ``schedule``,
    ...). ``strategy``: train this one strategy (any spec of ``fusion3d.models.as_strategy``) in hard
    mode for ``warmup_epochs + epochs`` epochs instead, without the regulariser. ``eval_data``
    (optional) is validated after every ``eval_every`` epochs and after the last, as the trainer
    does: the full network in warm-up, the posterior predictive over ``eval_samples`` sampled
    strategies in v-DropPath. ``n_train``: N of the regulariser (default: the number of training items,
    i.e. each item is one video). ``seed``: seeds python, numpy and torch first (None: leave the RNGs
    alone). ``device``: default ``auto`` (cuda if available); the model is moved there. ``out``: save
    ``{"model": state_dict, "num_classes", "slot_names", "fit": summary}`` there (atomic).

    The summary: ``epochs``, ``steps``, ``n_train``, ``strategy`` (the fixed one, or None),
    ``slot_names``, ``drop_probs`` ((slots, 2) list, columns S, T), ``depth_drop_probs`` (with depth
    gates), ``most_probable`` (a unit string ``score_strategies`` accepts), ``history`` (one record
    per epoch: phase, loss, ce, reg, train_acc, lr, drop probabilities, val_* when validated),
    ``checkpoint`` and the last validation (``val_top1``, ``val_top5``, ...). The model is returned in
    eval mode with its gates off (the full network), or with the fixed strategy applied.
    """
    t = train_config(cfg)
    if seed is not None:
        seed_everything(int(seed))
    dev = resolve_device(str(device)) if device is not None else resolve_device("auto")
    model.to(dev)
    model.set_activation_checkpointing(t.activation_checkpointing)
    fixed = as_strategy(strategy, model.num_slots) if strategy is not None else None
    loader = _as_loader(train_data, t.batch_size, True, seed or 0)
    val = None if eval_data is None else _as_loader(eval_data, max(2 * t.batch_size, 16), False, 0)
    steps, items = _sizes(loader)
    n = int(n_train) if n_train is not None else items
    optimizer, logits, weights = _optimizer(model, t)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    total = t.warmup_epochs + t.epochs
    history: list[dict] = []
    step, last_val = 0, {}
    gates = model.gates()
    temperature = gates[0].temperature if gates else 0.2  # the network's own (model.temperature)
    for epoch in range(total):
        phase, e_in_phase, phase_epochs = _set_phase(model, t, epoch, fixed, total, temperature)
        model.train()
        acc = dict.fromkeys(("loss", "ce", "reg", "correct", "seen"), 0.0)
        t0 = time.perf_counter()
        for b, batch in enumerate(loader):
            lr = lr_factor(t.schedule, e_in_phase + b / steps, phase_epochs, t.milestones, t.gamma)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * lr
            clips, labels, _ = split_batch(batch)
            target = torch.as_tensor(labels).long().to(dev)
            scores = model(clips.to(dev, non_blocking=True))
            ce = F.cross_entropy(scores, target)
            reg = template_regularizer(model, t.k, n, t.reg_form) if phase == "vdroppath" else None
            loss = ce if reg is None else ce + reg
            if not torch.isfinite(loss):
                raise NonFiniteError(
                    f"training diverged at epoch {epoch + 1}, step {step + 1}: the loss is {loss.item()}; "
                    f"lower lr (now {t.lr:g}) or set grad_clip"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if phase != "vdroppath":  # gates off or fixed: the drop logits stay where they are
                for p in logits:
                    p.grad = None
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(weights, t.grad_clip)
            optimizer.step()
            step += 1
            for key, value in (("loss", loss), ("ce", ce), ("reg", reg)):
                acc[key] += 0.0 if value is None else value.item()
            acc["correct"] += int((scores.argmax(1) == target).sum())
            acc["seen"] += len(target)
        record = {
            "epoch": epoch + 1,
            "phase": phase,
            **{k: acc[k] / steps for k in ("loss", "ce", "reg")},
            "train_acc": 100.0 * acc["correct"] / max(1.0, acc["seen"]),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - t0, 3),
            "drop_probs": model.drop_probs().tolist(),
            **drop_summary(model.drop_probs()),
        }
        if model.depth_drop_probs() is not None:
            record["depth_drop_probs"] = model.depth_drop_probs().tolist()
        if val is not None and ((epoch + 1) % t.eval_every == 0 or epoch + 1 == total):
            last_val = _validate(model, val, dev, phase, t.eval_samples, seed or 0, epoch)
            record.update(last_val)
        history.append(record)
        if verbose:
            print(_epoch_message(record, total, model.drop_probs()), flush=True)
    if fixed is None:
        model.set_gate_mode("off")
    model.eval()
    summary = {
        "epochs": total,
        "steps": step,
        "n_train": n,
        "strategy": None if fixed is None else str(fixed),
        "slot_names": list(model.slot_names),
        "drop_probs": model.drop_probs().tolist(),
        **(
            {}
            if model.depth_drop_probs() is None
            else {"depth_drop_probs": model.depth_drop_probs().tolist()}
        ),
        "most_probable": str(model.most_probable_strategy()),
        "history": history,
        "checkpoint": None if out is None else str(out),
        **last_val,
    }
    if out is not None:
        save_checkpoint(
            Path(out),
            {
                "model": model.state_dict(),
                "num_classes": model.num_classes,
                "slot_names": list(model.slot_names),
                "fit": summary,
            },
        )
    return summary


def _specs(strategies: Any) -> list:
    """One spec or a list of them: a str, a path or a ``Strategy`` is one spec."""
    if isinstance(strategies, (str, PathLike, Strategy)):
        return [strategies]
    if isinstance(strategies, Iterable):
        return list(strategies)
    raise TypeError(f"strategies must be a strategy spec or a list of them, got {type(strategies).__name__}")


@torch.no_grad()
def _clip_shape(loader: DataLoader) -> tuple[int, ...]:
    for batch in loader:
        return tuple(split_batch(batch)[0].shape[1:])
    raise ValueError("the evaluation data is empty")


def score_strategies(
    model: Any,
    eval_loader: Any,
    recal_loader: Any = None,
    strategies: Any = ("S", "ST", "S+ST"),
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    input_shape: tuple[int, int, int, int] | None = None,
) -> pd.DataFrame:
    """Score each strategy of ``strategies`` on ``eval_loader``, before and after BatchNorm
    recalibration on ``recal_loader``; one row per strategy.

    ``strategies``: one spec or a list of specs of the strategy grammar (``as_strategy``: a unit for
    every slot, a unit string ``"S|ST|..."``, a strategy JSON file, a ``Strategy``). ``eval_loader`` /
    ``recal_loader``: DataLoaders or datasets (batched by ``batch_size``; recalibration batches
    should be as large as the training batches were); ``recal_loader=None`` skips recalibration
    (``top1_after`` / ``top5_after`` are NaN). ``input_shape`` (C, T, H, W) of the MACs: default, the
    evaluation clips'. Columns: strategy, id, top1_before, top5_before, top1_after, top5_after (per-video
    percent), macs, params. The model's BatchNorm statistics are put back before each strategy and
    at the end, and its gates go back to the mode they were in.
    """
    dev = resolve_device(str(device)) if device is not None else next(model.parameters()).device
    evaluation = _as_loader(eval_loader, batch_size, False, 0)
    recal = None if recal_loader is None else _as_loader(recal_loader, batch_size, False, 0)
    shape = tuple(input_shape) if input_shape is not None else _clip_shape(evaluation)
    chosen = [as_strategy(spec, model.num_slots) for spec in _specs(strategies)]
    was_training, mode = model.training, model.gate_mode
    fixed_before = model.current_strategy() if mode == "hard" else None
    model.to(dev)
    saved = bn_state(model)
    rows = []
    try:
        for strategy in chosen:
            load_bn_state(model, saved)
            model.apply_strategy(strategy)
            before = video_scores(*predict(model, evaluation, dev))
            after = None
            if recal is not None:
                recalibrate_bn(model, recal, dev)
                after = video_scores(*predict(model, evaluation, dev))
            rows.append(
                {
                    "strategy": str(strategy),
                    "id": strategy.id,
                    "top1_before": before.top1,
                    "top5_before": before.top5,
                    "top1_after": float("nan") if after is None else after.top1,
                    "top5_after": float("nan") if after is None else after.top5,
                    "macs": count_macs(model, shape, strategy),
                    "params": count_params(model, strategy),
                }
            )
    finally:
        load_bn_state(model, saved)
        if fixed_before is not None:
            model.apply_strategy(fixed_before)
        else:
            model.set_gate_mode(mode)
        model.train(was_training)
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
