"""``fusion3d train``: warm-up with gates off, then Variational DropPath, with exact resume.

The loop reads top to bottom: build data and model, restore a checkpoint if asked, then for each
epoch: train (gates off in warm-up, relaxed Bernoulli gates afterwards), validate (posterior
predictive over K hard-sampled strategies), write metrics, save a checkpoint atomically.

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

import hashlib
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from fusion3d.config import Config, from_dict, save_config, to_dict
from fusion3d.data.clip_cache import build_clip_cache
from fusion3d.data.dataset import TrainClips, load_splits, load_table, make_loader
from fusion3d.evaluate import posterior_predictive, predict, video_scores
from fusion3d.models import build_model
from fusion3d.models.regularizer import template_regularizer
from fusion3d.models.strategy import resolve_strategy
from fusion3d.utils import atomic_write_bytes, resolve_device, seed_everything

CHECKPOINT = "checkpoint.pt"


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


# ----------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"bit_generator": np_state["bit_generator"], "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, payload: dict) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise RuntimeError(f"checkpoint {path} could not be read ({type(e).__name__}: {e})") from None


def weights_digest(model: torch.nn.Module) -> str:
    """sha1 of every parameter and buffer, in name order: equal digests mean identical weights."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- distributed


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    rank, world, local = _dist_env()
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


# ----------------------------------------------------------------------------- metrics


class MetricsLog:
    """Append-only JSON lines (one flush per record, so a crash loses at most the last line)."""

    def __init__(self, path: Path, enabled: bool, tensorboard_dir: Path | None = None):
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RuntimeError("train.tensorboard=true needs the tensorboard package (pip install tensorboard)") from None
            self.tb = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records written after the checkpoint (they will be written again)."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        atomic_write_bytes(self.path, ("\n".join(keep) + "\n" if keep else "").encode())


def drop_summary(drop_probs: torch.Tensor) -> dict:
    """Summary of a (slots, 2) drop-probability table (columns S, T)."""
    p = drop_probs.detach().cpu()
    return {"p_s_mean": float(p[:, 0].mean()), "p_t_mean": float(p[:, 1].mean()),
            "slots_p_s_gt_p_t": int((p[:, 0] > p[:, 1]).sum()), "slots": int(p.shape[0])}


# ----------------------------------------------------------------------------- the run


def drop_table(slot_names, drop_probs, depth_probs=None) -> str:
    """Per-slot drop probabilities of the S and T paths (and of the depth gates, ``p_D``, when given),
    as a readable table."""
    p = torch.as_tensor(drop_probs)
    d = None if depth_probs is None else torch.as_tensor(depth_probs).tolist()
    width = max(len(n) for n in slot_names)
    lines = [f"{'slot':<{width}}  p_S    p_T    higher" + ("  p_D" if d is not None else "")]
    for i, (name, (ps, pt)) in enumerate(zip(slot_names, p.tolist())):
        lines.append(f"{name:<{width}}  {ps:.3f}  {pt:.3f}  {'S' if ps > pt else ('T' if pt > ps else '=')}"
                     + (f"       {d[i]:.3f}" if d is not None else ""))
    lines.append(f"S-path drop prob above T-path in {int((p[:, 0] > p[:, 1]).sum())} of {len(p)} slots")
    if d is not None:
        lines.append(f"depth gate drop prob above 0.5 (slot none in the most probable strategy) in "
                     f"{sum(v > 0.5 for v in d)} of {len(d)} slots")
    return "\n".join(lines)


def _depth_record(model) -> dict:
    """``{"depth_drop_probs": [p_D per slot]}`` when the model has depth gates, else ``{}``."""
    d = model.depth_drop_probs()
    return {} if d is None else {"depth_drop_probs": d.tolist()}


def _resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        p = run_dir / CHECKPOINT
        return p if p.is_file() else None
    return Path(resume)


def train(cfg: Config, resume: str | None = None, init: str | None = None, max_epochs: int | None = None) -> dict:
    """Train the configured model; returns the final summary (also written to ``summary.json``).

    ``resume``: "auto" (continue from the run directory's checkpoint if there is one) or a path.
    ``init``: a checkpoint to take weights from only. ``max_epochs``: stop after this many epochs
    in total (the run can be resumed later), for staged runs and tests.
    """
    rank, world, device = _init_distributed(cfg.run.device)
    is_main = rank == 0
    run_dir = Path(cfg.run.out)
    t_cfg, d_cfg = cfg.train, cfg.data
    ckpt_path = _resolve_resume(run_dir, resume)
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path)
        saved = from_dict(state["config"])
        saved.run.out, saved.run.device = cfg.run.out, cfg.run.device
        if to_dict(saved)["model"] != to_dict(cfg)["model"]:
            raise RuntimeError(f"cannot resume from {ckpt_path}: its model config differs from this run's")
        cfg = saved
        t_cfg, d_cfg = cfg.train, cfg.data
    else:
        state = None
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")

    seed = cfg.run.seed
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(seed)
    train_table, selection_table = load_splits(d_cfg, seed, progress=is_main)
    num_classes = cfg.model.num_classes or len(train_table.classes)
    splits = {"fit": [r.path for r in train_table.records], "selection": [r.path for r in selection_table.records],
              "selection_source": selection_table.source, "classes": list(train_table.classes)}
    recorded_path = run_dir / "splits.json"
    if state is not None and recorded_path.is_file():  # a resumed run must keep training on the same videos
        recorded = json.loads(recorded_path.read_text())
        if [recorded.get("fit"), recorded.get("selection")] != [splits["fit"], splits["selection"]]:
            raise RuntimeError(f"cannot resume in {run_dir}: the fit / selection split rebuilt from the config differs "
                               f"from {recorded_path} (the dataset or the split rule changed since that run); start a "
                               "new run directory (run.out) or move this one away")
    if is_main:
        atomic_write_bytes(recorded_path, json.dumps(splits, indent=1).encode())
    model = build_model(cfg.model, num_classes).to(device)
    if init is not None:
        init_state = load_checkpoint(init)
        missing, unexpected = model.load_state_dict(init_state["model"], strict=False)
        if is_main:
            print(f"initialised weights from {init} (missing {len(missing)}, unexpected {len(unexpected)} keys)")
    fixed = resolve_strategy(cfg.model.strategy, model.num_slots) if cfg.model.strategy else None
    if world > 1 and t_cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)  # the drop logits get no gradient while the gates are off (warm-up)

    logits = list(model.drop_logits())
    logit_ids = {id(p) for p in logits}
    weights = [p for p in model.parameters() if id(p) not in logit_ids]
    groups = [
        {"params": weights, "lr": t_cfg.lr, "weight_decay": t_cfg.weight_decay, "name": "weights"},
        {"params": logits, "lr": t_cfg.logit_lr or t_cfg.lr, "weight_decay": 0.0, "name": "drop_logits"},
    ]
    if t_cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=t_cfg.lr, momentum=t_cfg.momentum)
    else:
        optimizer = torch.optim.AdamW(groups, lr=t_cfg.lr, betas=(t_cfg.momentum, 0.999))
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    train_ds = TrainClips(train_table, d_cfg, seed)
    sampler = None
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                                                  seed=seed, drop_last=True)
    steps_per_epoch = max(1, (len(train_ds) // world) // t_cfg.batch_size)
    total_epochs = t_cfg.warmup_epochs + t_cfg.epochs
    n_train = len(train_table)

    val_loader = None
    if is_main:
        val_table = load_table(d_cfg, d_cfg.eval_subset, progress=True)
        cache = build_clip_cache(val_table, d_cfg, progress=True)
        val_loader = make_loader(cache.dataset(d_cfg.mean, d_cfg.std), batch_size=max(2 * t_cfg.batch_size, 16),
                                 num_workers=0, shuffle=False, seed=seed)
        excluded_val = cache.num_excluded_videos + len(val_table.excluded) + len(val_table.missing)
        val_desc = (f"{d_cfg.eval_subset} subset, {d_cfg.test_clips} clip(s) x {d_cfg.test_crops} crop(s) per video, "
                    f"per-video accuracy, {cache.index['video'].nunique() - cache.num_excluded_videos} videos")

    start_epoch, step = 0, 0
    failed_seen: set[str] = set()
    last_val: dict = {}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"], state["step"]
        failed_seen = set(state.get("failed_videos", []))
        last_val = dict(state.get("last_val", {}))
        set_rng_state(state["rng"])
        if is_main:
            print(f"resumed from {ckpt_path} at epoch {start_epoch}, step {step}")
    log = MetricsLog(run_dir / "metrics.jsonl", is_main, run_dir / "tensorboard" if t_cfg.tensorboard else None)
    if state is not None:
        log.truncate_after(step)
    elif is_main and (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").unlink()
    if is_main:
        log.write({"kind": "start", "step": step, "epoch": start_epoch, "train_videos": n_train,
                   "selection_videos": len(selection_table),
                   "excluded_train_videos": len(train_table.excluded), "missing_train_videos": len(train_table.missing),
                   "excluded_val_videos": excluded_val, "classes": num_classes, "world_size": world,
                   "device": str(device), "params": sum(p.numel() for p in model.parameters())})

    end_epoch = total_epochs if max_epochs is None else min(total_epochs, max_epochs)
    show_bar = is_main and t_cfg.progress and sys.stderr.isatty()
    for epoch in range(start_epoch, end_epoch):
        if fixed is not None:  # one strategy trained alone: hard gates throughout, one schedule, no regulariser
            phase, e_in_phase, phase_epochs = "fixed", epoch, total_epochs
            model.apply_strategy(fixed)
        else:
            phase, e_in_phase, _ = phase_of(epoch, t_cfg.warmup_epochs)
            phase_epochs = t_cfg.warmup_epochs if phase == "warmup" else t_cfg.epochs
            model.set_gate_mode("off" if phase == "warmup" else "relaxed")
        train_ds.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = make_loader(train_ds, t_cfg.batch_size, d_cfg.num_workers, shuffle=True, seed=seed * 1000 + epoch,
                             drop_last=True, sampler=sampler)
        net.train()
        it = iter(loader)
        bar = None
        if show_bar:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{total_epochs} [{phase}]", unit="step", leave=False)
        sums = {"loss": 0.0, "ce": 0.0, "reg": 0.0, "correct": 0, "seen": 0, "data_time": 0.0, "step_time": 0.0}
        failed_epoch = 0
        for b in range(steps_per_epoch):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            for f in batch["failed"]:
                for path in filter(None, f.split("\n")):
                    failed_epoch += 1
                    if path not in failed_seen and is_main:
                        print(f"warning: skipped unreadable video {path} (replaced by another sample)", file=sys.stderr)
                    failed_seen.add(path)
            factor = lr_factor(t_cfg.schedule, e_in_phase + b / steps_per_epoch, phase_epochs, t_cfg.milestones, t_cfg.gamma)
            for g, base in zip(optimizer.param_groups, base_lrs):
                g["lr"] = base * factor
            x = batch["clip"].to(device, non_blocking=True)
            y = torch.as_tensor(batch["label"]).to(device)
            out = net(x)
            ce = F.cross_entropy(out, y)
            reg = template_regularizer(model, t_cfg.k, n_train, t_cfg.reg_form) if phase == "vdroppath" else ce.new_zeros(())
            loss = ce + reg
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if phase != "vdroppath":
                for p in logits:  # gates off or fixed: the logits must not move (momentum would carry stale grads)
                    p.grad = None
            if t_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(weights, t_cfg.grad_clip)
            optimizer.step()
            step += 1
            t2 = time.perf_counter()
            sums["loss"] += loss.item()
            sums["ce"] += ce.item()
            sums["reg"] += reg.item()
            sums["correct"] += int((out.argmax(1) == y).sum())
            sums["seen"] += len(y)
            sums["data_time"] += t1 - t0
            sums["step_time"] += t2 - t1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if is_main and step % t_cfg.log_every == 0:
                log.write({"kind": "step", "step": step, "epoch": epoch + (b + 1) / steps_per_epoch, "phase": phase,
                           "loss": loss.item(), "ce": ce.item(), "reg": reg.item(), "lr": optimizer.param_groups[0]["lr"],
                           "data_time": t1 - t0, "step_time": t2 - t1, **drop_summary(model.drop_probs())})
        if bar is not None:
            bar.close()
        del it, loader
        if world > 1:  # BN running stats are per rank after the last forward: make every rank hold rank 0's
            for buf in model.buffers():
                dist.broadcast(buf, src=0)

        record = {"kind": "epoch", "step": step, "epoch": epoch + 1, "phase": phase,
                  "loss": sums["loss"] / steps_per_epoch, "ce": sums["ce"] / steps_per_epoch,
                  "reg": sums["reg"] / steps_per_epoch, "train_acc": 100.0 * sums["correct"] / max(1, sums["seen"]),
                  "lr": optimizer.param_groups[0]["lr"], "data_time": sums["data_time"], "step_time": sums["step_time"],
                  "failed_videos": failed_epoch, "failed_videos_total": len(failed_seen),
                  "drop_probs": model.drop_probs().detach().cpu().tolist(), **drop_summary(model.drop_probs()),
                  **_depth_record(model)}
        last = epoch + 1 == end_epoch
        if is_main and ((epoch + 1) % t_cfg.eval_every == 0 or last):
            record.update(_validate(model, val_loader, device, phase, t_cfg.eval_samples, seed, epoch))
            record["val_views"] = val_desc
            last_val = {k: v for k, v in record.items() if k.startswith("val_")}
        if is_main:
            log.write(record)
            p = model.drop_probs().detach().cpu()
            msg = (f"epoch {epoch + 1}/{total_epochs} [{phase}] loss {record['loss']:.3f} ce {record['ce']:.3f} "
                   f"reg {record['reg']:.4f} train_acc {record['train_acc']:.1f}%")
            if "val_top1" in record:
                msg += f" val_top1 {record['val_top1']:.1f}%"
            if phase == "vdroppath":
                msg += f" | p_S {p[:, 0].mean():.3f} p_T {p[:, 1].mean():.3f} (S>T in {int((p[:, 0] > p[:, 1]).sum())}/{len(p)} slots)"
                if "depth_drop_probs" in record:
                    msg += f" p_D {np.mean(record['depth_drop_probs']):.3f}"
            print(msg, flush=True)
            save_checkpoint(run_dir / CHECKPOINT, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": {"kind": t_cfg.schedule, "base_lrs": base_lrs, "factor": factor},
                "epoch": epoch + 1, "step": step, "rng": rng_state(), "config": to_dict(cfg),
                "failed_videos": sorted(failed_seen), "num_classes": num_classes, "classes": list(train_table.classes),
                "last_val": last_val,
            })
        if world > 1:
            dist.barrier()

    if is_main and fixed is None and t_cfg.epochs > 0 and end_epoch > t_cfg.warmup_epochs:
        print(drop_table(model.slot_names, model.drop_probs(), model.depth_drop_probs()))
    summary = {"epochs_done": end_epoch, "total_epochs": total_epochs, "steps": step, "weights_sha1": weights_digest(model),
               "drop_probs": model.drop_probs().detach().cpu().tolist(), "slot_names": list(model.slot_names),
               **_depth_record(model), "failed_videos": sorted(failed_seen),
               "complete": end_epoch == total_epochs, **last_val}
    if world > 1:
        (run_dir / f"weights_rank{rank}.sha1").write_text(summary["weights_sha1"] + "\n")
        dist.barrier()
    if is_main:
        atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=1).encode())
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return summary


def _validate(model, loader, device, phase: str, num_strategies: int, seed: int, epoch: int) -> dict:
    """Warm-up: the full template (all paths on). v-DropPath: the posterior predictive over K strategies."""
    if phase in ("warmup", "fixed"):
        probs, labels, videos = predict(model, loader, device)
        s = video_scores(probs, labels, videos)
        what = "template, every path on" if phase == "warmup" else f"strategy {model.current_strategy()} trained alone"
        return {"val_top1": s.top1, "val_top5": s.top5, "val_measure": what}
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    s, single = posterior_predictive(model, loader, device, num_strategies, g)
    return {"val_top1": s.top1, "val_top5": s.top5, "val_single_mean": float(single.mean()),
            "val_single_max": float(single.max()),
            "val_measure": f"posterior predictive: softmax averaged over {num_strategies} hard-sampled strategies"}
