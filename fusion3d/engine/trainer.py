"""The training loop: warm-up with gates off, then Variational DropPath, with exact resume.

``train`` reads top to bottom: restore a checkpoint if asked, build data and model, then for each
epoch: train (gates off in warm-up, relaxed Bernoulli gates afterwards, hard gates for a fixed
strategy; ``fusion3d.engine.epoch``), validate (posterior predictive over K hard-sampled
strategies), write metrics, save a checkpoint atomically (also every
``train.checkpoint_every_steps`` steps inside an epoch).

Determinism: the clip of item ``i`` in epoch ``e`` depends only on (seed, e, i) (see
``fusion3d.data.dataset``); the data loader is built once per run and its sampler
(``fusion3d.data.samplers.EpochSampler``) re-derives the shuffle from (seed, epoch) at every epoch,
index for index the order a loader rebuilt at every epoch would draw; validation draws strategies
from its own generator seeded from (seed, epoch), and the python/numpy/torch RNG states are saved
in every checkpoint, with the batch reached inside the epoch. A run killed and resumed therefore
ends with the same weights as an uninterrupted one (on CPU), whether it was killed at an epoch's
end or in the middle of one.

Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on CPU,
NCCL on GPU; ``find_unused_parameters`` only in the phases that leave parameters without a
gradient: warm-up and a fixed strategy), each rank reads its shard through the sampler, every rank
validates its share of the validation clips (the predictions are gathered), and rank 0 alone logs
and saves. At start-up every rank must see ``run.out`` (rank 0 writes a probe file there) and all
must resume from the same checkpoint, or every rank stops with the same error.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
from contextlib import ExitStack
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fusion3d.analysis.marginals import drop_table
from fusion3d.analysis.verdicts import COLLAPSE_ADVICE, collapse_warnings
from fusion3d.config import Config, save_config, to_dict
from fusion3d.data.clip_cache import build_clip_cache
from fusion3d.data.clip_cache_ranks import build_clip_cache_together
from fusion3d.data.dataset import TrainClips, load_splits, load_table, make_loader
from fusion3d.data.samplers import EpochSampler
from fusion3d.engine.checkpoint import (
    load_checkpoint,
    non_finite_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
    state_digest,
    weights_digest,
)
from fusion3d.engine.distributed import (
    agree_on_resume,
    check_shared_dir,
    gather_objects,
    gather_predictions,
    init_distributed,
)
from fusion3d.engine.epoch import (
    Loop,
    depth_record,
    epoch_message,
    epoch_record,
    lr_factor,
    phase_of,
    set_phase,
    train_epoch,
)
from fusion3d.engine.evaluate import posterior_predictive, predict, video_scores
from fusion3d.engine.guards import diverged
from fusion3d.engine.kcalibration import measure_k
from fusion3d.engine.metrics import MetricsLog
from fusion3d.engine.precision import Precision
from fusion3d.engine.resume import restore_config, resume_path
from fusion3d.errors import FusionError
from fusion3d.models import build_model
from fusion3d.models.strategy import resolve_strategy
from fusion3d.run.layout import RunDir
from fusion3d.utils import atomic_write_bytes, clean_stale_temps, file_lock, seed_everything, shard_range

__all__ = ["train", "lr_factor", "phase_of"]


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
    videos: int = 0


def _validation_set(
    d_cfg, t_cfg, seed: int, progress: bool = True, rank: int = 0, world: int = 1
) -> _Validation:
    """The clip cache of ``data.eval_subset`` (built once) and what it measures; under torchrun each
    rank holds a contiguous share of the views. Under torchrun the ranks also build the cache together
    (``build_clip_cache_together``): each decodes its share of the videos, then rank 0 joins the
    parts; where ``data.cache_dir`` is not shared, every rank builds its own full copy, all at the
    same time. Rank 0 probes the table's videos first, so ranks that share its video index reuse it."""
    if world > 1 and rank != 0:
        dist.barrier()  # wait for rank 0's probes
    table = load_table(d_cfg, d_cfg.eval_subset, progress=progress)
    if world > 1 and rank == 0:
        dist.barrier()
    if world > 1:
        cache = build_clip_cache_together(
            table, d_cfg, rank, world, lambda value: gather_objects(value, world), progress=progress
        )
    else:
        cache = build_clip_cache(table, d_cfg, progress=progress)
    dataset = cache.dataset(d_cfg.mean, d_cfg.std)
    if world > 1:
        dataset = torch.utils.data.Subset(dataset, list(shard_range(len(dataset), rank, world)))
    loader = make_loader(
        dataset,
        batch_size=max(2 * t_cfg.batch_size, 16),
        num_workers=cache.read_workers(d_cfg.num_workers),
        shuffle=False,
        seed=seed,
    )
    videos = int(cache.index["video"].nunique() - cache.num_excluded_videos)
    views = (
        f"{d_cfg.eval_subset} subset, {d_cfg.test_clips} clip(s) x {d_cfg.test_crops} crop(s) per video, "
        f"per-video accuracy, {videos} videos"
    )
    return _Validation(
        loader, views, cache.num_excluded_videos + len(table.excluded) + len(table.missing), videos
    )


def _validate(
    model, loader, device, phase: str, num_strategies: int, seed: int, epoch: int, gather=None
) -> dict:
    """Warm-up: the full template (all paths on). v-DropPath: the posterior predictive over K strategies.
    ``gather``: sharded validation (``fusion3d.engine.distributed.gather_predictions``)."""
    if phase in ("warmup", "fixed"):
        probs, labels, videos = predict(model, loader, device, gather)
        s = video_scores(probs, labels, videos)
        what = (
            "template, every path on"
            if phase == "warmup"
            else f"strategy {model.current_strategy()} trained alone"
        )
        return {"val_top1": s.top1, "val_top5": s.top5, "val_measure": what}
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    s, single = posterior_predictive(model, loader, device, num_strategies, g, gather)
    return {
        "val_top1": s.top1,
        "val_top5": s.top5,
        "val_single_mean": float(single.mean()),
        "val_single_max": float(single.max()),
        "val_measure": f"posterior predictive: softmax averaged over {num_strategies} hard-sampled strategies",
    }


def _wrap_for_phase(ctx: dict, phase: str) -> None:
    """Under torchrun: the DDP wrapper this phase needs. Warm-up (the drop logits get no gradient) and
    a fixed strategy (dropped paths are never computed) need ``find_unused_parameters``, which costs a
    graph traversal per step; v-DropPath uses every parameter and runs without it."""
    if ctx["world"] == 1:
        return
    find_unused = phase != "vdroppath"
    if ctx["find_unused"] is find_unused:
        return
    ctx["net"] = None
    gc.collect()  # the old wrapper's reducer, and its gradient hooks, go with it
    device = ctx["device"]
    ctx["net"] = torch.nn.parallel.DistributedDataParallel(
        ctx["model"],
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused,
    )
    ctx["find_unused"] = find_unused


def _calibrate_k(ctx: dict, state: dict | None, epoch: int, is_main: bool) -> None:
    """``train.k_auto``: the k of this run, measured once at the first v-DropPath epoch (a resumed run
    takes the one in its checkpoint)."""
    if ctx["k_calibration"] is None and state is not None and state.get("k_calibration"):
        ctx["k_calibration"] = state["k_calibration"]
    if ctx["k_calibration"] is None:
        ctx["k_calibration"] = measure_k(ctx, epoch)
        if is_main:
            c = ctx["k_calibration"]
            print(
                f"train.k_auto={ctx['t_cfg'].k_auto}: k = {c['k']:.4g} (classification pull {c['ce_pull']:.3g} "
                f"per logit, regulariser {c['unit_pull']:.3g} per unit of k, {c['batches']} batches)",
                flush=True,
            )
    ctx["k"] = ctx["k_calibration"]["k"]


def _resume_identity(state: dict | None):
    """What every rank must agree on before resuming: (epoch, batch, step, weights digest)."""
    if state is None:
        return None
    return (int(state["epoch"]), int(state.get("batch", 0)), int(state["step"]), state_digest(state["model"]))


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
    the run directory (under torchrun, rank 0 first creates it, empty, to check that every rank sees
    it); then the run holds ``.train.lock`` (one trainer per directory). A non-finite loss, gradient
    norm, drop logit or weight stops the run with a NonFiniteError; the checkpoint on disk is then the
    last good one.
    """
    with ExitStack() as held:
        return _train(cfg, resume, init, max_epochs, overwrite, explicit, held)


def _train(cfg, resume, init, max_epochs, overwrite, explicit, held: ExitStack) -> dict:
    # 1. where we are: process rank, device, run directory, the config (the checkpoint's on resume)
    if max_epochs is not None and max_epochs < 1:
        raise FusionError(f"--max-epochs must be at least 1, got {max_epochs}")
    rank, world, device = init_distributed(cfg.run.device, cfg.run.dist_timeout_s)
    is_main = rank == 0
    run = RunDir(cfg.run.out)
    if run.path.exists() and not run.path.is_dir():
        raise FusionError(f"run.out {run.path} is a file, not a run directory")
    if resume is None and is_main and run.is_run() and not overwrite:
        raise FusionError(
            f"{run.path} already holds a run; continue it with --resume auto, or pass --overwrite to move "
            f"it aside (to {run.path.name}.old-<time>) and start over"
        )
    check_shared_dir(run.path, run.shared_probe(), rank, world)
    ckpt_path, state, problem = None, None, None
    try:
        ckpt_path = resume_path(run, resume)
        if ckpt_path is not None:
            cfg, state = restore_config(cfg, ckpt_path, explicit, say=print if is_main else lambda _: None)
    except (FusionError, FileNotFoundError) as e:
        if world == 1:
            raise
        problem = str(e)
    agree_on_resume(_resume_identity(state), problem, rank, world)
    t_cfg, d_cfg, seed = cfg.train, cfg.data, cfg.run.seed
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = t_cfg.cudnn_benchmark
    precision = Precision(t_cfg.precision, device, t_cfg.channels_last)
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
    precision.prepare_model(model)
    try:
        model.set_activation_checkpointing(t_cfg.activation_checkpointing)
    except ValueError as e:  # a user's network whose slots define forward themselves
        raise FusionError(f"config key 'train.activation_checkpointing': {e}") from None
    optimizer, logits, weights = _optimizer(model, t_cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    # 4. data: the training clips (a shard of them per rank, one loader for the run) and the validation cache
    train_ds = TrainClips(train_table, d_cfg, seed)
    if len(train_ds) // world < t_cfg.batch_size:
        raise FusionError(
            f"config key 'train.batch_size' ({t_cfg.batch_size}) is larger than the fit split "
            f"({len(train_ds)} videos{f' over {world} processes' if world > 1 else ''}): no full batch; "
            "lower train.batch_size"
        )
    sampler = EpochSampler(len(train_ds), lambda e: seed * 1000 + e, seed, world, rank)
    loader = make_loader(
        train_ds,
        t_cfg.batch_size,
        d_cfg.num_workers,
        shuffle=False,
        seed=seed,
        drop_last=True,
        sampler=sampler,
        pin_memory=d_cfg.pin_memory and device.type == "cuda",
        persistent_workers=d_cfg.persistent_workers,
        prefetch_factor=d_cfg.prefetch_factor,
    )
    val = _validation_set(d_cfg, t_cfg, seed, bars, rank, world)

    # 5. restore the training state on resume (mid-epoch: the batch reached and the epoch's sums so far)
    loop, start_epoch, start_batch, start_sums, last_val = Loop(), 0, 0, None, {}
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise FusionError(
                f"cannot resume from {ckpt_path}: its weights do not fit the model ({e})"
            ) from None
        precision.prepare_model(model)
        precision.load_state_dict(state.get("scaler"))
        start_epoch, loop.step = state["epoch"], state["step"]
        start_batch, start_sums = int(state.get("batch", 0)), state.get("sums")
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
            where = f", batch {start_batch}" if start_batch else ""
            print(f"resumed from {ckpt_path} at epoch {start_epoch}{where}, step {loop.step}")
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
                "precision": t_cfg.precision,
                "params": sum(p.numel() for p in model.parameters()),
            }
        )

    def save(epoch_done: int, batch: int = 0, sums: dict | None = None) -> None:
        """The checkpoint after ``epoch_done`` epochs and ``batch`` batches of the next (rank 0)."""
        if not is_main:
            return
        save_checkpoint(
            run.checkpoint,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"kind": t_cfg.schedule, "base_lrs": base_lrs, "factor": loop.factor},
                "scaler": precision.state_dict(),
                "epoch": epoch_done,
                "batch": batch,
                "sums": sums,
                "step": loop.step,
                "rng": rng_state(),
                "k_calibration": ctx.get("k_calibration"),
                "config": to_dict(cfg),
                "failed_videos": sorted(loop.failed_seen),
                "num_classes": num_classes,
                "classes": list(train_table.classes),
                "last_val": last_val,
            },
        )
        ctx["saved_epoch"] = epoch_done

    # 7. the epochs: train, validate, log, checkpoint
    ctx = {
        "model": model,
        "net": model,
        "world": world,
        "find_unused": None,
        "t_cfg": t_cfg,
        "d_cfg": d_cfg,
        "optimizer": optimizer,
        "precision": precision,
        "logits": logits,
        "weights": weights,
        "base_lrs": base_lrs,
        "loader": loader,
        "sampler": sampler,
        "seed": seed,
        "k": t_cfg.k,
        "k_calibration": None,
        "steps_per_epoch": max(1, (len(train_ds) // world) // t_cfg.batch_size),
        "n_train": n_train,
        "total_epochs": total_epochs,
        "log": log,
        "device": device,
        "is_main": is_main,
        "show_bar": bars,
        "checkpoint": run.checkpoint,
        "saved_epoch": start_epoch,
        "save_mid": save,
    }
    gather = gather_predictions(world)
    end_epoch = total_epochs if max_epochs is None else min(total_epochs, max_epochs)
    for epoch in range(start_epoch, end_epoch):
        phase, e_in_phase, phase_epochs = set_phase(
            model, t_cfg, epoch, fixed, total_epochs, cfg.model.temperature
        )
        _wrap_for_phase(ctx, phase)
        if phase == "vdroppath" and t_cfg.k_auto > 0:
            _calibrate_k(ctx, state, epoch, is_main)
        first = epoch == start_epoch
        sums = train_epoch(
            ctx,
            epoch,
            phase,
            e_in_phase,
            phase_epochs,
            loop,
            start_batch if first else 0,
            start_sums if first else None,
        )
        if world > 1:  # BN running stats are per rank after the last forward: make every rank hold rank 0's
            for buf in model.buffers():
                dist.broadcast(buf, src=0)
        record = epoch_record(model, optimizer, sums, ctx["steps_per_epoch"], loop, epoch, phase)
        if (epoch + 1) % t_cfg.eval_every == 0 or epoch + 1 == end_epoch:
            record.update(
                _validate(model, val.loader, device, phase, t_cfg.eval_samples, seed, epoch, gather)
            )
            record["val_views"] = val.views
            last_val = {k: v for k, v in record.items() if k.startswith("val_")}
        bad = non_finite_tensors(model.state_dict())
        if bad:
            raise diverged(ctx, epoch, loop.step, f"weight tensor {bad[0]}", "NaN or inf")
        if is_main:
            log.write(record)
            print(epoch_message(record, total_epochs, model.drop_probs()), flush=True)
        save(epoch + 1)
        if world > 1:
            dist.barrier()

    # 8. the summary
    if is_main and fixed is None and t_cfg.epochs > 0 and end_epoch > t_cfg.warmup_epochs:
        print(drop_table(model.slot_names, model.drop_probs(), model.depth_drop_probs()))
    summary = {
        "epochs_done": end_epoch,
        "total_epochs": total_epochs,
        "steps": loop.step,
        "weights_sha1": weights_digest(model),
        **({"k": ctx["k"], "k_calibration": ctx["k_calibration"]} if ctx["k_calibration"] else {}),
        "drop_probs": model.drop_probs().detach().cpu().tolist(),
        "slot_names": list(model.slot_names),
        **depth_record(model),
        "failed_videos": sorted(loop.failed_seen),
        "complete": end_epoch == total_epochs,
        **last_val,
    }
    if fixed is None and end_epoch == total_epochs:
        warnings = collapse_warnings(
            summary["drop_probs"] if end_epoch > t_cfg.warmup_epochs else [],
            last_val.get("val_top1"),
            num_classes,
            val.videos,
        )
        if warnings:
            summary["warnings"] = warnings
            if is_main:
                for w in warnings:
                    print(f"warning: {w} ({COLLAPSE_ADVICE}; docs/validity.md)", file=sys.stderr)
    if world > 1:
        run.weights_rank(rank).write_text(summary["weights_sha1"] + "\n")
        dist.barrier()
    if is_main:
        atomic_write_bytes(run.summary, json.dumps(summary, indent=1).encode())
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return summary
