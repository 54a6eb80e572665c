"""One training epoch: the step (autocast, loss scaling, gates, guards), its records, mid-epoch saves.

``train_epoch`` runs the batches of one epoch from the loader built once per run
(``fusion3d.engine.trainer``), from batch ``start`` on (a run resumed mid-epoch), and calls
``ctx["save_mid"]`` every ``train.checkpoint_every_steps`` steps inside the epoch.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fusion3d.analysis.marginals import drop_summary
from fusion3d.engine.guards import finite, grad_norm
from fusion3d.models.regularizer import template_regularizer
from fusion3d.models.strategy import single_path_strategy

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


def depth_record(model) -> dict:
    """``{"depth_drop_probs": [p_D per slot]}`` when the model has depth gates, else ``{}``."""
    d = model.depth_drop_probs()
    return {} if d is None else {"depth_drop_probs": d.tolist()}


# ----------------------------------------------------------------------------- one epoch


@dataclass
class Loop:
    """What the epochs share and update: the step counter and the unreadable videos seen so far."""

    step: int = 0
    failed_seen: set = field(default_factory=set)
    factor: float = 1.0


def relaxed_temperature(t_cfg, temperature: float, e_in_phase: int) -> float:
    """The relaxed-Bernoulli temperature of v-DropPath epoch ``e_in_phase``: ``temperature`` throughout, or
    with ``train.temperature_from`` > 0 a geometric fall from that value (first epoch) to ``temperature``
    (last epoch)."""
    start, n = t_cfg.temperature_from, t_cfg.epochs
    if start <= 0 or n <= 1:
        return float(temperature)
    return float(start * (temperature / start) ** (min(e_in_phase, n - 1) / (n - 1)))


def set_phase(model, t_cfg, epoch: int, fixed, total_epochs: int, temperature: float) -> tuple[str, int, int]:
    """Put the gates in this epoch's mode (and, in v-DropPath, their relaxation: ``temperature`` is
    ``model.temperature``); returns (phase, epoch within the phase, phase length)."""
    if fixed is not None:  # one strategy trained alone: hard gates throughout, one schedule, no regulariser
        model.apply_strategy(fixed)
        return "fixed", epoch, total_epochs
    phase, e_in_phase, _ = phase_of(epoch, t_cfg.warmup_epochs)
    model.set_gate_mode("off" if phase == "warmup" else "relaxed")
    if phase == "vdroppath":
        model.set_relaxation(
            relaxed_temperature(t_cfg, temperature, e_in_phase), t_cfg.relaxed_masks == "per_batch"
        )
    return phase, e_in_phase, t_cfg.warmup_epochs if phase == "warmup" else t_cfg.epochs


def single_path_epoch(t_cfg, phase: str, e_in_phase: int) -> bool:
    """Whether this epoch's steps each train one sub-network (``train.warmup_sampling`` uniform or fair,
    after ``train.warmup_full_epochs`` warm-up epochs with every path on)."""
    return phase == "warmup" and t_cfg.warmup_sampling != "full" and e_in_phase >= t_cfg.warmup_full_epochs


def count_failed(batch, loop: Loop, is_main: bool) -> int:
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


def new_sums() -> dict:
    return {
        "loss": 0.0,
        "ce": 0.0,
        "reg": 0.0,
        "correct": 0,
        "seen": 0,
        "data_time": 0.0,
        "step_time": 0.0,
        "failed": 0,
    }


def train_epoch(
    ctx: dict,
    epoch: int,
    phase: str,
    e_in_phase: int,
    phase_epochs: int,
    loop: Loop,
    start: int = 0,
    sums: dict | None = None,
) -> dict:
    """One pass over the training clips from batch ``start`` on; returns the epoch's sums (``sums``:
    those of the batches before ``start``, from a mid-epoch checkpoint)."""
    model, net, t_cfg, optimizer = ctx["model"], ctx["net"], ctx["t_cfg"], ctx["optimizer"]
    steps, log, device, prec = ctx["steps_per_epoch"], ctx["log"], ctx["device"], ctx["precision"]
    every = t_cfg.checkpoint_every_steps
    ctx["sampler"].set_epoch(epoch)
    ctx["sampler"].skip = start * t_cfg.batch_size
    net.train()
    it = iter(ctx["loader"])
    single_path = single_path_epoch(t_cfg, phase, e_in_phase)
    bar = None
    if ctx["show_bar"]:
        from tqdm import tqdm

        bar = tqdm(
            total=steps,
            initial=start,
            desc=f"epoch {epoch + 1}/{ctx['total_epochs']} [{phase}]",
            unit="step",
            leave=False,
        )
    sums = dict(sums) if sums else new_sums()
    for b in range(start, steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        sums["failed"] += count_failed(batch, loop, ctx["is_main"])
        loop.factor = lr_factor(
            t_cfg.schedule, e_in_phase + b / steps, phase_epochs, t_cfg.milestones, t_cfg.gamma
        )
        for g, base in zip(optimizer.param_groups, ctx["base_lrs"]):
            g["lr"] = base * loop.factor
        if single_path:  # one sub-network per step
            model.apply_strategy(
                single_path_strategy(
                    model.num_slots, loop.step, ctx["seed"], fair=t_cfg.warmup_sampling == "fair"
                )
            )
        x = prec.prepare_input(batch["clip"].to(device, non_blocking=True))
        y = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
        with prec.autocast():
            out = net(x)
        ce = F.cross_entropy(out.float(), y)  # fp32 logits: a no-op in fp32
        reg = (  # outside autocast: the regulariser stays fp32
            template_regularizer(model, ctx["k"], ctx["n_train"], t_cfg.reg_form)
            if phase == "vdroppath"
            else ce.new_zeros(())
        )
        loss = ce + reg
        finite(loss, "loss", epoch, loop.step + 1, ctx)
        optimizer.zero_grad(set_to_none=True)
        prec.backward(loss)
        if phase != "vdroppath":
            for p in ctx[
                "logits"
            ]:  # gates off or fixed: the logits must not move (momentum would carry stale grads)
                p.grad = None
        prec.unscale(optimizer)
        if prec.scaler is None:  # fp16: an overflowing step is the scaler's to skip, not a divergence
            finite(grad_norm(model), "gradient norm", epoch, loop.step + 1, ctx)
        if t_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(ctx["weights"], t_cfg.grad_clip)
        prec.step(optimizer)
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
        if every and loop.step % every == 0 and b + 1 < steps:  # the epoch's end saves anyway
            ctx["save_mid"](epoch, b + 1, sums)
    if bar is not None:
        bar.close()
    if single_path:
        model.apply_strategy(None)  # back to every path on (validation measures the full template)
    return sums


def epoch_record(model, optimizer, sums: dict, steps: int, loop: Loop, epoch: int, phase: str) -> dict:
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
        **depth_record(model),
    }


def epoch_message(record: dict, total_epochs: int, drop_probs: torch.Tensor) -> str:
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
