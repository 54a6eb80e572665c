"""Scoring strategies of a trained run without retraining (shared by ``sample`` and ``bench score``).

For each strategy: put the template in hard mode (dropped paths are not computed), score it on the
selection clips with the template's BatchNorm statistics ("before"), then recalibrate BatchNorm on a
fixed set of fit clips and score again ("after"). The template's statistics are put back before
each strategy, so recalibrations never compound.

Two ways to the same rows: ``score`` scores one strategy at a time (a full recalibration pass and two
evaluation passes per strategy); ``score_many`` scores a group of strategies on their prefix tree
(``fusion3d.engine.prefix``): what strategies share (their first slots) is computed, recalibrated and
evaluated once. Scores agree (tests/test_prefix.py): "before" exactly, "after" up to float rounding of
the recalibrated statistics. ``sample`` uses ``score_many``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from fusion3d.analysis.receptive_field import rf_columns
from fusion3d.data.dataset import make_loader
from fusion3d.engine.bn import bn_state, load_bn_state, recalibrate_bn
from fusion3d.engine.checkpoint import state_digest
from fusion3d.engine.evaluate import Scores, predict, video_scores
from fusion3d.engine.prefix import DEFAULT_CACHE_MB, score_shared
from fusion3d.models import Strategy, count_macs, count_params
from fusion3d.run.loading import load_run, recal_loader, selection_cache
from fusion3d.utils import resolve_device


class StrategyScorer:
    """The trained template of ``run_dir`` with its selection clips and recalibration clips, ready
    to score strategies. ``measurement`` describes what a score means (rows measured differently
    must not be mixed). Call ``restore()`` when done: it puts the template's statistics back."""

    def __init__(
        self,
        run_dir: str | Path,
        recalibrate: bool = True,
        recal_clips: int | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        progress: bool = False,
        sharded: bool = False,
    ):
        self.run_dir = Path(run_dir)
        self.state, self.cfg, self.model = load_run(run_dir)
        cfg, d_cfg = self.cfg, self.cfg.data
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        dev = resolve_device(device or cfg.run.device)
        if dev.type == "cuda" and sharded and "LOCAL_RANK" in os.environ:
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.device = dev
        self.model.to(dev).eval()

        # data: the selection split (scored) and the fixed recalibration clips
        fit, sel_cache = selection_cache(cfg, run_dir, progress)
        n_videos = int(sel_cache.index.loc[sel_cache.index["valid"], "video"].nunique())
        self.views = (
            f"selection split, {d_cfg.test_clips} clip x {d_cfg.test_crops} crop per video, per-video top-1, "
            f"{n_videos} videos"
        )
        self.eval_batch_size = batch_size or max(2 * cfg.train.batch_size, 16)
        self.selection = make_loader(
            sel_cache.dataset(d_cfg.mean, d_cfg.std),
            batch_size=self.eval_batch_size,
            num_workers=sel_cache.read_workers(d_cfg.num_workers),
            shuffle=False,
            seed=cfg.run.seed,
        )
        self.recal, recal_videos = recal_loader(cfg, fit, recal_clips, progress) if recalibrate else (None, 0)
        self.input_shape = (self.model.in_channels, d_cfg.clip_len, d_cfg.crop_size, d_cfg.crop_size)
        self.measurement = {
            "weights_sha1": state_digest(self.state["model"]),
            "recalibrate": bool(recalibrate),
            "recal_videos": recal_videos,
            "recal_batch_size": cfg.train.batch_size if recalibrate else 0,
            "selection_videos": n_videos,
            "views": self.views,
            "input_shape": list(self.input_shape),
        }
        self.template_bn = bn_state(self.model)

    def _scores(self):
        probs, labels, videos = predict(self.model, self.selection, self.device)
        return video_scores(probs, labels, videos)

    def score(self, strategy: Strategy, source: str) -> dict:
        """One row of the strategies table for ``strategy``, scored on its own (one recalibration
        pass and two evaluation passes)."""
        t0 = time.perf_counter()
        model = self.model
        load_bn_state(model, self.template_bn)
        model.apply_strategy(strategy)
        before = self._scores()
        after = None
        if self.recal is not None:
            recalibrate_bn(model, self.recal, self.device)
            after = self._scores()
        return self._row(strategy, source, before, after, time.perf_counter() - t0)

    def score_many(self, items: list[tuple[Strategy, str]], cache_mb: float = DEFAULT_CACHE_MB) -> list[dict]:
        """Rows for ``items`` ((strategy, source) pairs), in their order, scored together on their prefix
        tree (``fusion3d.engine.prefix.score_shared``); ``seconds`` is the group's time per strategy."""
        if not items:
            return []
        t0 = time.perf_counter()
        load_bn_state(self.model, self.template_bn)
        scores = score_shared(
            self.model, [s for s, _ in items], self.selection, self.device, self.recal, cache_mb
        )
        self.model.apply_strategy(None)
        per = (time.perf_counter() - t0) / len(items)
        return [self._row(s, src, b, a, per) for (s, src), (b, a) in zip(items, scores)]

    def _row(
        self, strategy: Strategy, source: str, before: Scores, after: Scores | None, seconds: float
    ) -> dict:
        model = self.model
        counts = strategy.counts()
        return {
            "strategy": str(strategy),
            "id": strategy.id,
            "source": source,
            "top1_before": before.top1,
            "top5_before": before.top5,
            "top1_after": float("nan") if after is None else after.top1,
            "top5_after": float("nan") if after is None else after.top5,
            "macs": count_macs(model, self.input_shape, strategy),
            "params": count_params(model, strategy),
            "n_S": counts["S"],
            "n_ST": counts["ST"],
            "n_S+ST": counts["S+ST"],
            "n_none": counts["none"],
            "views": self.views,
            "seconds": round(seconds, 4),
            **rf_columns(model, strategy),
        }

    def restore(self) -> None:
        """The template as loaded: its BatchNorm statistics, no strategy applied."""
        load_bn_state(self.model, self.template_bn)
        self.model.apply_strategy(None)
