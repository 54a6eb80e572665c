"""Estimator variants tried against the shipped tables and not shipped (docs/validity.md, "The
estimator study so far"): each scores the finished default templates of
``benchmarks/validity_study.py`` (``<study>/<table>_default_s<seed>``) and prints Kendall tau-b with
the table's ground truth and the regret of its pick in standard errors of the table's best.

    .venv/bin/python benchmarks/probes/estimator_probes.py nll        # mean NLL of the true class instead of top-1
    .venv/bin/python benchmarks/probes/estimator_probes.py ablation-nll # the ablation measured by NLL / p(true class)
    .venv/bin/python benchmarks/probes/estimator_probes.py none-blind # `none` units scored as S
    .venv/bin/python benchmarks/probes/estimator_probes.py bases      # the ablation from all-ST / all-S+ST too
    .venv/bin/python benchmarks/probes/estimator_probes.py opt-rules  # rules for Opt, from the stored scores

``nll``, ``none-blind`` and ``bases`` score sub-networks again (about 20-60 s per template on one
core); ``opt-rules`` reads only each template's ``bench_<table>_scores.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d import bench as catalog
from fusion3d.analysis.ablation import ablation_effects, ablation_plan, additive_scores
from fusion3d.analysis.benchmark import ground_truth
from fusion3d.analysis.stats import kendall_tau_b
from fusion3d.engine.bn import load_bn_state
from fusion3d.engine.evaluate import predict
from fusion3d.engine.prefix import score_shared
from fusion3d.engine.scoring import StrategyScorer
from fusion3d.models.strategy import Strategy

TABLES = ("motion", "texture", "order", "appearance")
SLOTS = 6  # the tiny template's


def _regret(values: np.ndarray, gt: pd.DataFrame) -> float:
    truth = gt["top1"].to_numpy(float)
    se = float(gt.loc[gt["top1"].idxmax(), "se"])
    return (truth.max() - truth[int(np.argmax(values))]) / se


def _report(name: str, predictors: dict[str, np.ndarray], gt: pd.DataFrame) -> None:
    truth = gt["top1"].to_numpy(float)
    cells = [
        f"{k} tau {kendall_tau_b(v, truth):+.3f} regret {_regret(v, gt):.1f} SE"
        for k, v in predictors.items()
    ]
    print(f"{name}: " + "; ".join(cells), flush=True)


def _scorer(run: Path) -> StrategyScorer:
    scorer = StrategyScorer(run)
    load_bn_state(scorer.model, scorer.template_bn)
    return scorer


def _after(scorer: StrategyScorer, strategies: list[Strategy]) -> dict[str, float]:
    """Top-1 after BatchNorm recalibration of each strategy, on the run's selection split."""
    res = score_shared(scorer.model, strategies, scorer.selection, scorer.device, scorer.recal)
    return {str(s): a.top1 for s, (_, a) in zip(strategies, res)}


def _video_scores(scorer: StrategyScorer, strategies: list[str]) -> dict[str, np.ndarray]:
    """Per strategy, after recalibration, on the selection split (softmax averaged over a video's
    views): top-1, the mean log-likelihood of the true class and the mean probability of the true class.
    One strategy at a time."""
    from fusion3d.engine.bn import recalibrate_bn

    out = {"top1": [], "-nll": [], "p_true": []}
    for x in strategies:
        load_bn_state(scorer.model, scorer.template_bn)
        scorer.model.apply_strategy(Strategy.from_string(x))
        recalibrate_bn(scorer.model, scorer.recal, scorer.device)
        probs, labels, videos = predict(scorer.model, scorer.selection, scorer.device)
        uniq, inverse = np.unique(videos.numpy(), return_inverse=True)
        summed = np.zeros((len(uniq), probs.shape[1]))
        np.add.at(summed, inverse, probs.numpy())
        counts = np.bincount(inverse)
        label = np.zeros(len(uniq), dtype=int)
        label[inverse] = labels.numpy()
        p_true = summed[np.arange(len(uniq)), label] / counts
        out["top1"].append(100.0 * np.mean(summed.argmax(1) == label))
        out["-nll"].append(float(np.mean(np.log(np.clip(p_true, 1e-12, None)))))
        out["p_true"].append(100.0 * float(np.mean(p_true)))
    return {k: np.array(v) for k, v in out.items()}


def nll(run: Path, gt: pd.DataFrame) -> dict[str, np.ndarray]:
    """Mean negative log-likelihood of the true class (softmax averaged over a video's views), after
    recalibration, beside top-1."""
    scorer = _scorer(run)
    scores = _video_scores(scorer, list(gt["strategy"]))
    scorer.restore()
    return {"top1": scores["top1"], "-nll": scores["-nll"]}


def ablation_nll(run: Path, gt: pd.DataFrame) -> dict[str, np.ndarray]:
    """The per-slot ablation's additive score with each sub-network measured by a continuous score (mean
    log-likelihood or mean probability of the true class) instead of top-1, beside the top-1 one."""
    scorer = _scorer(run)
    plan = [str(s) for s in ablation_plan(SLOTS, "S")]
    scores = _video_scores(scorer, plan)
    scorer.restore()
    base = "|".join(["S"] * SLOTS)
    out = {}
    for name, values in scores.items():
        by = dict(zip(plan, values))
        out[f"ablation by {name}"] = additive_scores(
            ablation_effects(by, SLOTS, "S"), by[base], gt["strategy"]
        )
    return out


def none_blind(run: Path, gt: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every strategy scored with its `none` units replaced by S, and that plus the ablation's `none`
    effects; the template's own scores beside them."""
    scorer = _scorer(run)
    blind = [Strategy.from_string(x.replace("none", "S")) for x in gt["strategy"]]
    plan = ablation_plan(SLOTS, "S")
    scores = _after(scorer, list({s.id: s for s in blind + plan}.values()))
    scorer.restore()
    effects = ablation_effects(scores, SLOTS, "S").set_index(["slot", "unit"])["effect"]
    penalty = np.array(
        [sum(effects[(i, u)] for i, u in enumerate(x.split("|")) if u == "none") for x in gt["strategy"]]
    )
    stored = _stored(run, gt)
    return {
        "template": stored.loc[gt["strategy"], "top1_after"].to_numpy(float),
        "none-blind": np.array([scores[str(s)] for s in blind]),
        "none-blind + ablation none effects": np.array([scores[str(s)] for s in blind]) + penalty,
    }


def bases(run: Path, gt: pd.DataFrame) -> dict[str, np.ndarray]:
    """The additive ablation score from each base (all-S, all-ST, all-S+ST), their mean, and the all-S
    and all-ST ones interpolated by each strategy's share of T slots."""
    scorer = _scorer(run)
    scores = {}
    for base in ("S", "ST", "S+ST"):
        scores.update(_after(scorer, ablation_plan(SLOTS, base)))
    scorer.restore()
    strategies = list(gt["strategy"])
    add = {
        base: additive_scores(
            ablation_effects(scores, SLOTS, base), scores["|".join([base] * SLOTS)], strategies
        )
        for base in ("S", "ST", "S+ST")
    }
    share = np.array([sum(u in ("ST", "S+ST") for u in x.split("|")) / SLOTS for x in strategies])
    return {
        "from all-S": add["S"],
        "from all-ST": add["ST"],
        "from all-S+ST": add["S+ST"],
        "mean of all-S and all-ST": (add["S"] + add["ST"]) / 2,
        "interpolated": (1 - share) * add["S"] + share * add["ST"],
    }


def _stored(run: Path, gt: pd.DataFrame) -> pd.DataFrame:
    table = gt.attrs["table"]
    return (
        pd.read_csv(run / f"bench_{table}_scores.csv", dtype={"id": str, "strategy": str})
        .drop_duplicates("strategy")
        .set_index("strategy")
    )


def opt_rules(run: Path, gt: pd.DataFrame) -> dict[str, np.ndarray]:
    """Picks for Opt from the stored scores (one value per strategy, the pick is its argmax): the
    template, the ablation, the ablation's best among the strategies the template cannot separate
    from its own best (within two binomial standard errors of the selection split), the summed rank."""
    stored = _stored(run, gt)
    strategies = list(gt["strategy"])
    template = stored.loc[strategies, "top1_after"].to_numpy(float)
    effects = ablation_effects(stored["top1_after"].to_dict(), SLOTS, "S")
    ablation = additive_scores(effects, float(stored.loc["|".join(["S"] * SLOTS), "top1_after"]), strategies)
    videos = int(str(stored["views"].iloc[0]).split(" videos")[0].rsplit(" ", 1)[-1])
    p = template.max() / 100.0
    tied = template >= template.max() - 2 * 100.0 * np.sqrt(p * (1 - p) / videos)
    ranks = pd.Series(template).rank().to_numpy() + pd.Series(ablation).rank().to_numpy()
    return {
        "template": template,
        "ablation": ablation,
        "ablation among the template's ties": np.where(tied, ablation, ablation.min() - 1000.0),
        "summed rank": ranks,
    }


PROBES = {
    "nll": nll,
    "ablation-nll": ablation_nll,
    "none-blind": none_blind,
    "bases": bases,
    "opt-rules": opt_rules,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("probe", choices=list(PROBES))
    p.add_argument("--study", default="runs/validity_study", help="the folder of validity_study.py")
    p.add_argument("--tables", nargs="+", default=list(TABLES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    for table in args.tables:
        gt = ground_truth(catalog.load_table(table)[0])
        gt.attrs["table"] = table
        for seed in args.seeds:
            run = Path(args.study) / f"{table}_default_s{seed}"
            if not (run / "checkpoint.pt").is_file():
                print(f"{run}: no finished template (run benchmarks/validity_study.py first)")
                continue
            _report(f"{table} seed {seed}", PROBES[args.probe](run, gt), gt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
