"""The training loop: warm-up with gates off, then Variational DropPath, with exact resume.

``train`` reads top to bottom: restore a checkpoint if asked, build data and model, then for each
epoch: train (gates off in warm-up, relaxed Bernoulli gates afterwards, hard gates for a fixed
strategy), validate (posterior predictive over K hard-sampled strategies), write metrics, save a
checkpoint atomically.

Determinism: the clip of item ``i`` in epoch ``e`` depends only on (seed, e, i) (see
``fusion3d.data.dataset``), the shuffling generator and the data-loader worker seeds are
re-derived from (seed, epoch) at every epoch, validation draws strategies from its own generator
seeded from (seed, epoch), and the python/numpy/torch RNG states are saved in every checkpoint.
A run killed and resumed therefore ends with the same weights as an uninterrupted one (on CPU).

Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on CPU,
NCCL on GPU), each rank reads its shard through a DistributedSampler, and rank 0 alone validates,
logs and saves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from fusion3d.analysis.marginals import drop_summary, drop_table
from fusion3d.config import Config, save_config, to_dict
from fusion3d.data.clip_cache import build_clip_cache
from fusion3d.data.dataset import TrainClips, load_splits, load_table, make_loader
from fusion3d.engine.checkpoint import (
    load_checkpoint,
    non_finite_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
    weights_digest,
)
from fusion3d.engine.distributed import init_distributed
from fusion3d.engine.evaluate import posterior_predictive, predict, video_scores
from fusion3d.engine.guards import diverged, finite, grad_norm
from fusion3d.engine.metrics import MetricsLog
from fusion3d.engine.resume import restore_config, resume_path
from fusion3d.errors import FusionError
from fusion3d.models import build_model
from fusion3d.models.regularizer import template_regularizer
from fusion3d.models.strategy import resolve_strategy
from fusion3d.run.layout import RunDir
from fusion3d.utils import atomic_write_bytes, clean_stale_temps, file_lock, seed_everything

# ----------------------------------------------------------------------------- schedules


def lr_factor(schedule: str, epoch_in_phase: float, phase_epochs: int, milestones, gamma: float) -> float:
    """Multiplier of the base learning rate at a (fractional) epoch within a phase."""
    if schedule == "constant" or phase_epochs <= 0:
        return 1.0
    if schedule == "multistep":
        return gamma ** sum(epoch_in_phase >= m for m in milestones)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch_in_phase / phase_epochs, 1.0)))
    raise ValueError(f"unknown schedule {schedule!r}")


def phase_of(epoch: int, warmup_epochs: int) -> tuple[str, int, int]:
    """(phase name, epoch index within the phase) of a global epoch."""
    if epoch < warmup_epochs:
        return "warmup", epoch, warmup_epochs
    return "vdroppath", epoch - warmup_epochs, None


def _depth_record(model) -> dict:
    """``{"depth_drop_probs": [p_D per slot]}`` when the model has depth gates, else ``{}``."""
    d = model.depth_drop_probs()
    return {} if d is None else {"depth_drop_probs": d.tolist()}


# ----------------------------------------------------------------------------- set-up helpers


def _check_splits(run: RunDir, train_table, selection_table, resuming: bool) -> dict:
    """The ``splits.json`` record; a resumed run must keep training on the videos it started with."""
    splits = {
        "fit": [r.path for r in train_table.records],
        "selection": [r.path for r in selection_table.records],
        "selection_source": selection_table.source,
        "classes": list(train_table.classes),
    }
    if resuming and run.splits.is_file():
        recorded = json.loads(run.splits.read_text())
        if [recorded.get("fit"), recorded.get("selection")] != [splits["fit"], splits["selection"]]:
            raise FusionError(
                f"cannot resume in {run.path}: the fit / selection split rebuilt from the config differs "
                f"from {run.splits} (the dataset or the split rule changed since that run); start a "
                "new run directory (run.out) or move this one away"
            )
    return splits


def _optimizer(model, t_cfg) -> tuple[torch.optim.Optimizer, list, list]:
    """(optimizer, drop logits, weights): the logits in their own group, without weight decay."""
    logits = list(model.drop_logits())
    logit_ids = {id(p) for p in logits}
    weights = [p for p in model.parameters() if id(p) not in logit_ids]
    groups = [
        {"params": weights, "lr": t_cfg.lr, "weight_decay": t_cfg.weight_decay, "name": "weights"},
        {"params": logits, "lr": t_cfg.logit_lr or t_cfg.lr, "weight_decay": 0.0, "name": "drop_logits"},
    ]
    if t_cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t_cfg.lr, momentum=t_cfg.momentum), logits, weights
    return torch.optim.AdamW(groups, lr=t_cfg.lr, betas=(t_cfg.momentum, 0.999)), logits, weights


@dataclass
class _Validation:
    loader: object = None
    views: str = ""
    excluded: int = 0


def _validation_set(d_cfg, t_cfg, seed: int, progress: bool = True) -> _Validation:
    """The clip cache of ``data.eval_subset`` (built once) and what it measures."""
    table = load_table(d_cfg, d_cfg.eval_subset, progress=progress)
    cache = build_clip_cache(table, d_cfg, progress=progress)
    loader = make_loader(
        cache.dataset(d_cfg.mean, d_cfg.std),
        batch_size=max(2 * t_cfg.batch_size, 16),
        num_workers=cache.read_workers(d_cfg.num_workers),
        shuffle=False,
        seed=seed,
    )
    views = (
        f"{d_cfg.eval_subset} subset, {d_cfg.test_clips} clip(s) x {d_cfg.test_crops} crop(s) per video, "
        f"per-video accuracy, {cache.index['video'].nunique() - cache.num_excluded_videos} videos"
    )
    return _Validation(loader, views, cache.num_excluded_videos + len(table.excluded) + len(table.missing))


def _validate(model, loader, device, phase: str, num_strategies: int, seed: int, epoch: int) -> dict:
    """Warm-up: the full template (all paths on). v-DropPath: the posterior predictive over K strategies."""
    if phase in ("warmup", "fixed"):
        probs, labels, videos = predict(model, loader, device)
        s = video_scores(probs, labels, videos)
        what = (
            "template, every path on"
            if phase == "warmup"
            else f"strategy {model.current_strategy()} trained alone"
        )
        return {"val_top1": s.top1, "val_top5": s.top5, "val_measure": what}
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    s, single = posterior_predictive(model, loader, device, num_strategies, g)
    return {
        "val_top1": s.top1,
        "val_top5": s.top5,
        "val_single_mean": float(single.mean()),
        "val_single_max": float(single.max()),
        "val_measure": f"posterior predictive: softmax averaged over {num_strategies} hard-sampled strategies",
    }


# ----------------------------------------------------------------------------- one epoch


@dataclass
class _Loop:
    """What the epochs share and update: the step counter and the unreadable videos seen so far."""

    step: int = 0
    failed_seen: set = field(default_factory=set)
    factor: float = 1.0


def _set_phase(model, t_cfg, epoch: int, fixed, total_epochs: int) -> tuple[str, int, int]:
    """Put the gates in this epoch's mode; returns (phase, epoch within the phase, phase length)."""
    if fixed is not None:  # one strategy trained alone: hard gates throughout, one schedule, no regulariser
        model.apply_strategy(fixed)
        return "fixed", epoch, total_epochs
    phase, e_in_phase, _ = phase_of(epoch, t_cfg.warmup_epochs)
    model.set_gate_mode("off" if phase == "warmup" else "relaxed")
    return phase, e_in_phase, t_cfg.warmup_epochs if phase == "warmup" else t_cfg.epochs


def _count_failed(batch, loop: _Loop, is_main: bool) -> int:
    """Count the unreadable videos the loader replaced in this batch; warn once per video."""
    n = 0
    for f in batch["failed"]:
        for path in filter(None, f.split("\n")):
            n += 1
            if path not in loop.failed_seen and is_main:
                print(
                    f"warning: skipped unreadable video {path} (replaced by another sample)", file=sys.stderr
                )
            loop.failed_seen.add(path)
    return n


def _train_epoch(ctx: dict, epoch: int, phase: str, e_in_phase: int, phase_epochs: int, loop: _Loop) -> dict:
    """One pass over the training clips; returns the epoch's sums."""
    model, net, t_cfg, optimizer = ctx["model"], ctx["net"], ctx["t_cfg"], ctx["optimizer"]
    steps, log, device = ctx["steps_per_epoch"], ctx["log"], ctx["device"]
    ctx["train_ds"].set_epoch(epoch)
    if ctx["sampler"] is not None:
        ctx["sampler"].set_epoch(epoch)
    loader = make_loader(
        ctx["train_ds"],
        t_cfg.batch_size,
        ctx["d_cfg"].num_workers,
        shuffle=True,
        seed=ctx["seed"] * 1000 + epoch,
        drop_last=True,
        sampler=ctx["sampler"],
    )
    net.train()
    it = iter(loader)
    bar = None
    if ctx["show_bar"]:
        from tqdm import tqdm

        bar = tqdm(
            total=steps, desc=f"epoch {epoch + 1}/{ctx['total_epochs']} [{phase}]", unit="step", leave=False
        )
    sums = {
        "loss": 0.0,
        "ce": 0.0,
        "reg": 0.0,
        "correct": 0,
        "seen": 0,
        "data_time": 0.0,
        "step_time": 0.0,
        "failed": 0,
    }
    for b in range(steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        sums["failed"] += _count_failed(batch, loop, ctx["is_main"])
        loop.factor = lr_factor(
            t_cfg.schedule, e_in_phase + b / steps, phase_epochs, t_cfg.milestones, t_cfg.gamma
        )
        for g, base in zip(optimizer.param_groups, ctx["base_lrs"]):
            g["lr"] = base * loop.factor
        x = batch["clip"].to(device, non_blocking=True)
        y = torch.as_tensor(batch["label"]).to(device)
        out = net(x)
        ce = F.cross_entropy(out, y)
        reg = (
            template_regularizer(model, t_cfg.k, ctx["n_train"], t_cfg.reg_form)
            if phase == "vdroppath"
            else ce.new_zeros(())
        )
        loss = ce + reg
        finite(loss, "loss", epoch, loop.step + 1, ctx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if phase != "vdroppath":
            for p in ctx[
                "logits"
            ]:  # gates off or fixed: the logits must not move (momentum would carry stale grads)
                p.grad = None
        finite(grad_norm(model), "gradient norm", epoch, loop.step + 1, ctx)
        if t_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(ctx["weights"], t_cfg.grad_clip)
        optimizer.step()
        loop.step += 1
        if ctx["logits"]:
            finite(
                torch.cat([p.detach().flatten() for p in ctx["logits"]]), "drop logit", epoch, loop.step, ctx
            )
        t2 = time.perf_counter()
        for k, v in (
            ("loss", loss.item()),
            ("ce", ce.item()),
            ("reg", reg.item()),
            ("data_time", t1 - t0),
            ("step_time", t2 - t1),
            ("correct", int((out.argmax(1) == y).sum())),
            ("seen", len(y)),
        ):
            sums[k] += v
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if ctx["is_main"] and loop.step % t_cfg.log_every == 0:
            log.write(
                {
                    "kind": "step",
                    "step": loop.step,
                    "epoch": epoch + (b + 1) / steps,
                    "phase": phase,
                    "loss": loss.item(),
                    "ce": ce.item(),
                    "reg": reg.item(),
                    "lr": optimizer.param_groups[0]["lr"],
                    "data_time": t1 - t0,
                    "step_time": t2 - t1,
                    **drop_summary(model.drop_probs()),
                }
            )
    if bar is not None:
        bar.close()
    return sums


def _epoch_record(model, optimizer, sums: dict, steps: int, loop: _Loop, epoch: int, phase: str) -> dict:
    return {
        "kind": "epoch",
        "step": loop.step,
        "epoch": epoch + 1,
        "phase": phase,
        "loss": sums["loss"] / steps,
        "ce": sums["ce"] / steps,
        "reg": sums["reg"] / steps,
        "train_acc": 100.0 * sums["correct"] / max(1, sums["seen"]),
        "lr": optimizer.param_groups[0]["lr"],
        "data_time": sums["data_time"],
        "step_time": sums["step_time"],
        "failed_videos": sums["failed"],
        "failed_videos_total": len(loop.failed_seen),
        "drop_probs": model.drop_probs().detach().cpu().tolist(),
        **drop_summary(model.drop_probs()),
        **_depth_record(model),
    }


def _epoch_message(record: dict, total_epochs: int, drop_probs: torch.Tensor) -> str:
    msg = (
        f"epoch {record['epoch']}/{total_epochs} [{record['phase']}] loss {record['loss']:.3f} ce {record['ce']:.3f} "
        f"reg {record['reg']:.4f} train_acc {record['train_acc']:.1f}%"
    )
    if "val_top1" in record:
        msg += f" val_top1 {record['val_top1']:.1f}%"
    if record["phase"] == "vdroppath":
        d = drop_summary(drop_probs)
        msg += f" | p_S {d['p_s_mean']:.3f} p_T {d['p_t_mean']:.3f} (S>T in {d['slots_p_s_gt_p_t']}/{d['slots']} slots)"
        if "depth_drop_probs" in record:
            msg += f" p_D {np.mean(record['depth_drop_probs']):.3f}"
    return msg


# ----------------------------------------------------------------------------- the loop


def train(
    cfg: Config,
    resume: str | None = None,
    init: str | None = None,
    max_epochs: int | None = None,
    overwrite: bool = False,
    explicit: set[str] | None = None,
) -> dict:
    """Train the configured model; returns the final summary (also written to ``summary.json``).

    ``resume``: "auto" (continue from the run directory's checkpoint if there is one) or a path.
    ``init``: a checkpoint to take weights from only. ``max_epochs``: stop after this many epochs
    in total (the run can be resumed later), for staged runs and tests. A directory that already
    holds a run is refused unless ``resume`` is given or ``overwrite`` (which moves it aside to
    ``<dir>.old-<time>``). ``explicit``: the config keys the caller set on purpose; on resume they
    are applied or refused by name (``fusion3d.engine.resume``).

    Every check (config, data, split, model, batch size, device) runs before anything is written to
    the run directory; then the run holds ``.train.lock`` (one trainer per directory). A non-finite
    loss, gradient norm, drop logit or weight stops the run with a NonFiniteError; the checkpoint on
    disk is then the last good one.
    """
    with ExitStack() as held:
        return _train(cfg, resume, init, max_epochs, overwrite, explicit, held)


def _train(cfg, resume, init, max_epochs, overwrite, explicit, held: ExitStack) -> dict:
    # 1. where we are: process rank, device, run directory, the config (the checkpoint's on resume)
    if max_epochs is not None and max_epochs < 1:
        raise FusionError(f"--max-epochs must be at least 1, got {max_epochs}")
    rank, world, device = init_distributed(cfg.run.device)
    is_main = rank == 0
    run = RunDir(cfg.run.out)
    if run.path.exists() and not run.path.is_dir():
        raise FusionError(f"run.out {run.path} is a file, not a run directory")
    if resume is None and is_main and run.is_run() and not overwrite:
        raise FusionError(
            f"{run.path} already holds a run; continue it with --resume auto, or pass --overwrite to move "
            f"it aside (to {run.path.name}.old-<time>) and start over"
        )
    ckpt_path = resume_path(run, resume)
    state = None
    if ckpt_path is not None:
        cfg, state = restore_config(cfg, ckpt_path, explicit, say=print if is_main else lambda _: None)
    t_cfg, d_cfg, seed = cfg.train, cfg.data, cfg.run.seed
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(seed)

    # 2. the fit / selection split (checked against splits.json on resume)
    bars = is_main and t_cfg.progress and sys.stderr.isatty()  # progress bars on a terminal only
    train_table, selection_table = load_splits(d_cfg, seed, progress=bars)
    num_classes = cfg.model.num_classes or len(train_table.classes)
    splits = _check_splits(run, train_table, selection_table, state is not None)

    # 3. model and optimizer (the drop logits in their own group; built first: it draws the initial weights)
    # a resumed run takes every weight from its checkpoint: inflating 2D weights first would be wasted
    model_cfg = dataclasses.replace(cfg.model, pretrained_2d="") if state is not None else cfg.model
    model = build_model(model_cfg, num_classes).to(device)
    if init is not None:
        init_state = load_checkpoint(init)
        if not isinstance(init_state, dict) or not isinstance(init_state.get("model"), dict):
            raise FusionError(f"--init {init}: not a fusion3d checkpoint (no 'model' weights in it)")
        try:
            missing, unexpected = model.load_state_dict(init_state["model"], strict=False)
        except RuntimeError as e:  # shapes that do not fit this model
            raise FusionError(
                f"--init {init}: its weights do not fit model {cfg.model.name!r} ({e})"
            ) from None
        if is_main:
            print(
                f"initialised weights from {init} (missing {len(missing)}, unexpected {len(unexpected)} keys)"
            )
    fixed = resolve_strategy(cfg.model.strategy, model.num_slots) if cfg.model.strategy else None
    if world > 1 and t_cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )  # the drop logits get no gradient while the gates are off (warm-up)
    optimizer, logits, weights = _optimizer(model, t_cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    # 4. data: the training clips (a shard of them per rank) and the validation cache
    train_ds = TrainClips(train_table, d_cfg, seed)
    if len(train_ds) // world < t_cfg.batch_size:
        raise FusionError(
            f"config key 'train.batch_size' ({t_cfg.batch_size}) is larger than the fit split "
            f"({len(train_ds)} videos{f' over {world} processes' if world > 1 else ''}): no full batch; "
            "lower train.batch_size"
        )
    sampler = None
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(
            train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
    val = _validation_set(d_cfg, t_cfg, seed, bars) if is_main else _Validation()

    # 5. restore the training state on resume
    loop, start_epoch, last_val = _Loop(), 0, {}
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise FusionError(
                f"cannot resume from {ckpt_path}: its weights do not fit the model ({e})"
            ) from None
        start_epoch, loop.step = state["epoch"], state["step"]
        loop.failed_seen = set(state.get("failed_videos", []))
        last_val = dict(state.get("last_val", {}))
        set_rng_state(state["rng"])

    # 6. every check passed: hold the run directory, then write config, splits and the metrics log
    if is_main:
        if resume is None and overwrite and run.is_run():
            print(f"moved the old run {run.path} aside to {run.move_aside()}")
        run.path.mkdir(parents=True, exist_ok=True)
        held.enter_context(
            file_lock(
                run.lock("train"),
                blocking=False,
                busy=f"another process is training in {run.path}; wait for it to finish or use another run.out",
            )
        )
        clean_stale_temps(run.path)
        save_config(cfg, run.config)
        atomic_write_bytes(run.splits, json.dumps(splits, indent=1).encode())
        if state is not None:
            print(f"resumed from {ckpt_path} at epoch {start_epoch}, step {loop.step}")
    log = MetricsLog(run.metrics, is_main, run.tensorboard_dir if t_cfg.tensorboard else None)
    if state is not None:
        log.truncate_after(loop.step)
    elif is_main and run.metrics.exists():
        run.metrics.unlink()
    n_train, total_epochs = len(train_table), t_cfg.warmup_epochs + t_cfg.epochs
    if is_main:
        log.write(
            {
                "kind": "start",
                "step": loop.step,
                "epoch": start_epoch,
                "train_videos": n_train,
                "selection_videos": len(selection_table),
                "excluded_train_videos": len(train_table.excluded),
                "missing_train_videos": len(train_table.missing),
                "excluded_val_videos": val.excluded,
                "classes": num_classes,
                "world_size": world,
                "device": str(device),
                "params": sum(p.numel() for p in model.parameters()),
            }
        )

    # 6. the epochs: train, validate, log, checkpoint
    ctx = {
        "model": model,
        "net": net,
        "t_cfg": t_cfg,
        "d_cfg": d_cfg,
        "optimizer": optimizer,
        "logits": logits,
        "weights": weights,
        "base_lrs": base_lrs,
        "train_ds": train_ds,
        "sampler": sampler,
        "seed": seed,
        "steps_per_epoch": max(1, (len(train_ds) // world) // t_cfg.batch_size),
        "n_train": n_train,
        "total_epochs": total_epochs,
        "log": log,
        "device": device,
        "is_main": is_main,
        "show_bar": is_main and t_cfg.progress and sys.stderr.isatty(),
        "checkpoint": run.checkpoint,
        "saved_epoch": start_epoch,
    }
    end_epoch = total_epochs if max_epochs is None else min(total_epochs, max_epochs)
    for epoch in range(start_epoch, end_epoch):
        phase, e_in_phase, phase_epochs = _set_phase(model, t_cfg, epoch, fixed, total_epochs)
        sums = _train_epoch(ctx, epoch, phase, e_in_phase, phase_epochs, loop)
        if world > 1:  # BN running stats are per rank after the last forward: make every rank hold rank 0's
            for buf in model.buffers():
                dist.broadcast(buf, src=0)
        record = _epoch_record(model, optimizer, sums, ctx["steps_per_epoch"], loop, epoch, phase)
        if is_main and ((epoch + 1) % t_cfg.eval_every == 0 or epoch + 1 == end_epoch):
            record.update(_validate(model, val.loader, device, phase, t_cfg.eval_samples, seed, epoch))
            record["val_views"] = val.views
            last_val = {k: v for k, v in record.items() if k.startswith("val_")}
        bad = non_finite_tensors(model.state_dict())
        if bad:
            raise diverged(ctx, epoch, loop.step, f"weight tensor {bad[0]}", "NaN or inf")
        if is_main:
            log.write(record)
            print(_epoch_message(record, total_epochs, model.drop_probs()), flush=True)
            save_checkpoint(
                run.checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": {"kind": t_cfg.schedule, "base_lrs": base_lrs, "factor": loop.factor},
                    "epoch": epoch + 1,
                    "step": loop.step,
                    "rng": rng_state(),
                    "config": to_dict(cfg),
                    "failed_videos": sorted(loop.failed_seen),
                    "num_classes": num_classes,
                    "classes": list(train_table.classes),
                    "last_val": last_val,
                },
            )
            ctx["saved_epoch"] = epoch + 1
        if world > 1:
            dist.barrier()

    # 7. the summary
    if is_main and fixed is None and t_cfg.epochs > 0 and end_epoch > t_cfg.warmup_epochs:
        print(drop_table(model.slot_names, model.drop_probs(), model.depth_drop_probs()))
    summary = {
        "epochs_done": end_epoch,
        "total_epochs": total_epochs,
        "steps": loop.step,
        "weights_sha1": weights_digest(model),
        "drop_probs": model.drop_probs().detach().cpu().tolist(),
        "slot_names": list(model.slot_names),
        **_depth_record(model),
        "failed_videos": sorted(loop.failed_seen),
        "complete": end_epoch == total_epochs,
        **last_val,
    }
    if world > 1:
        run.weights_rank(rank).write_text(summary["weights_sha1"] + "\n")
        dist.barrier()
    if is_main:
        atomic_write_bytes(run.summary, json.dumps(summary, indent=1).encode())
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return summary
