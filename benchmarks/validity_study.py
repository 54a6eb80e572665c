"""The estimator study: which template settings make fusion3d's answers agree with the ground truth.

For every (table, setting, template seed): train a template with the demo's recipe plus the
setting's overrides on the table's dataset (its training list; the test list is never trained on),
score it against the table with ``fusion3d bench score``, and append one row of results to
``<out>/study.csv`` (resumable: finished rows are skipped, finished templates are not retrained).
Then write ``docs/validity_study.md``: per setting, the template's Kendall tau before / after BN
recalibration (mean over template seeds, with each seed's bootstrap interval), Opt's regret in
standard errors, the per-slot agreement, beside the training-free baselines of the same table.

    .venv/bin/python benchmarks/validity_study.py --tables motion texture --settings default fair \\
        --seeds 0 1 --out runs/validity_study

Settings (``SETTINGS``) change one factor at a time from the demo's defaults.

``--recal-sweep N [N ...]``: for the finished templates of ``--settings`` (default: default) on
``--tables`` and ``--seeds``, score the table's strategies again with BatchNorm recalibrated on N clips
instead of 200 and append one row per (table, setting, seed, N) to ``<out>/recal.csv`` (resumable): the
Kendall tau with the ground truth and with the 200-clip ranking. The page gets a section from it.

``--combine K``: for the finished templates of ``--settings`` on ``--tables``, split ``--seeds`` into
consecutive groups of K and score each group as one run of K template seeds, the way ``fusion3d bench
score`` scores a run trained with ``run.seeds = K`` (a folder ``<table>_<setting>_seeds<a-b-..>`` of
links to the seed runs and its ``seeds.json``; the seeds' scores are averaged). One row per group in
``<out>/combined.csv`` (resumable); the page gets a section from it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import yaml

from fusion3d import bench as catalog
from fusion3d.analysis.benchmark import ground_truth
from fusion3d.analysis.stats import kendall_tau_b
from fusion3d.bench import check_reliability
from fusion3d.config import load_config
from fusion3d.engine.scoring import StrategyScorer
from fusion3d.engine.trainer import train
from fusion3d.models import Strategy
from fusion3d.run.seeds import write_seeds
from fusion3d.stages.bench import SCORE_GROUP, score
from fusion3d.utils import atomic_write_text, file_lock

RECIPE_KEYS = ("train.warmup_epochs", "train.epochs", "train.eval_every", "data.selection_fraction")
DEMO_TEMPLATE = [
    "train.warmup_epochs=12",
    "train.epochs=8",
    "train.k=1.0",
    "run.threads=1",
    "train.progress=false",
]
SETTINGS: dict[str, list[str]] = {
    "default": [],  # the demo's template: 12 warm-up epochs with every path on, 8 v-DropPath epochs, k = 1
    "uniform": ["train.warmup_sampling=uniform"],  # warm-up trains one uniformly drawn sub-network per step
    "fair": ["train.warmup_sampling=fair"],  # warm-up trains every unit of every slot equally often
    # 4 warm-up epochs with every path on, then 8 of fair single-path sampling
    "full_fair": ["train.warmup_sampling=fair", "train.warmup_full_epochs=4"],
    "k2": ["train.k=2.0", "train.epochs=16"],
    "logit_lr": ["train.logit_lr=0.5", "train.epochs=24"],
    "paper_form": ["train.reg_form=paper"],
    "anneal": ["train.temperature_from=1.0"],  # relaxed temperature 1.0 -> 0.2 over v-DropPath
    "per_batch": ["train.relaxed_masks=per_batch"],  # one relaxed mask per batch, not per sample
    "warmup6": ["train.warmup_epochs=6"],  # phase lengths: half the warm-up
    "warmup24": ["train.warmup_epochs=24"],  # twice the warm-up
    "vdroppath16": ["train.epochs=16"],  # twice the v-DropPath phase
    "selection40": ["data.selection_fraction=0.4"],  # 40% of the training list held out to score on
    "k_auto": ["train.k_auto=0.5"],  # k calibrated: the regulariser starts at half the classification pull
    # v-DropPath starts at p = 0.5: every unit of every slot (none included) a quarter of the time
    "drop_init": ["model.drop_init=0.5"],
    "paper_exact": [],  # configs/paper_exact.yaml's estimator keys (filled in below)
}
PAPER_EXACT = Path(__file__).resolve().parent.parent / "configs" / "paper_exact.yaml"


def _paper_exact() -> list[str]:
    """The estimator keys of configs/paper_exact.yaml (model gates, v-DropPath and optimiser; not the
    phase lengths, which stay the demo's for every setting)."""
    raw = yaml.safe_load(PAPER_EXACT.read_text())
    keep = {"model": ("drop_init", "temperature"), "train": ("warmup_sampling", "lr", "k", "reg_form")}
    return [
        f"{sec}.{key}={raw[sec][key]}"
        for sec, keys in keep.items()
        for key in keys
        if key in raw.get(sec, {})
    ]


SETTINGS["paper_exact"] = _paper_exact()
# How the default setting's rows (what reliability.json quotes) are made: the templates and their
# scores, then the per-slot ablation's columns added to finished rows.
DEFAULT_ROWS_COMMAND = (
    ".venv/bin/python benchmarks/validity_study.py --tables motion texture appearance order --settings default "
    "--seeds 0 1 2 3 (seeds 0 1 then rescored with --rescore for the ablation's columns)"
)
COLUMNS = [
    "table",
    "setting",
    "seed",
    "n",
    "tau_after",
    "tau_after_low",
    "tau_after_high",
    "tau_before",
    "regret_se_after",
    "slot_rho",
    "profile_matches",
    "tau_macs",
    "tau_params",
    "tau_temporal_rf",
    "tau_synflow",
    "noise_ceiling",
    "seconds",
    "tau_ablation",
    "regret_se_ablation",
    "slot_rho_ablation",
    "profile_matches_ablation",
]


def append_row(out: Path, path: Path, row: dict, columns: list[str] = COLUMNS) -> None:
    """Append ``row`` to the study folder's ``path`` (atomically, under the folder's lock: several study
    processes may share it) and print it."""
    with file_lock(out / "study.lock"):
        rows = pd.concat([read_rows(path, columns), pd.DataFrame([row], columns=columns)], ignore_index=True)
        atomic_write_text(path, rows.to_csv(index=False))
    print(json.dumps(row), flush=True)


def template_for(table: str, builds: Path, out: Path, setting: str, seed: int) -> Path:
    """Train (or resume) the template of ``setting`` on ``table``'s dataset; returns its run directory."""
    spec = catalog.load_spec(table)  # a table is named after its spec
    root = builds / spec.name / "data"
    shipped = table in catalog.shipped_tables()
    meta = catalog.load_table(table)[1] if shipped else {"data_id": catalog.data_id(root)}  # still building
    if catalog.data_id(root) is None or catalog.data_id(root) != meta.get("data_id"):
        raise SystemExit(
            f"{root} is not the dataset of table {table!r}: build it with `fusion3d bench build {table}`"
        )
    recipe = [o for o in spec.config if not o.startswith(RECIPE_KEYS)]
    run = out / f"{spec.name}_{setting}_s{seed}"
    cfg = load_config(
        None,
        [
            *recipe,
            *DEMO_TEMPLATE,
            *SETTINGS[setting],
            f"run.seed={seed}",
            f"data.root={root}",
            f"data.annotations={root / 'ucfTrainTestlist'}",
            f"data.cache_dir={out / 'cache'}",
            f"run.out={run}",
        ],
    )
    train(cfg, resume="auto")
    return run


def result_row(table: str, setting: str, seed: int, r: dict, seconds: float) -> dict:
    p = r["predictors"]

    def tau(name: str):
        return p[name]["kendall_tau"]["value"]

    after = p["template_after"]
    slots = r["slots"]["marginal_keep_T"]
    return {
        "table": table,
        "setting": setting,
        "seed": seed,
        "n": r["n"],
        "tau_after": tau("template_after"),
        "tau_after_low": after["kendall_tau"]["ci_low"],
        "tau_after_high": after["kendall_tau"]["ci_high"],
        "tau_before": tau("template_before"),
        "regret_se_after": after.get("regret_se"),
        "slot_rho": slots.get("spearman_rho"),
        "profile_matches": slots.get("profile_matches"),
        "tau_macs": tau("macs"),
        "tau_params": tau("params"),
        "tau_temporal_rf": tau("temporal_rf"),
        "tau_synflow": tau("synflow"),
        "noise_ceiling": r["table_summary"]["noise_ceiling"]["kendall_tau"],
        "seconds": round(seconds, 1),
        "tau_ablation": tau("ablation"),
        "regret_se_ablation": p["ablation"].get("regret_se"),
        "slot_rho_ablation": r["slots"]["ablation_t_effects"].get("spearman_rho"),
        "profile_matches_ablation": r["slots"]["ablation_t_effects"].get("profile_matches"),
    }


def read_rows(path: Path, columns: list[str] = COLUMNS) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=columns)


RECAL_COLUMNS = [
    "table",
    "setting",
    "seed",
    "recal_clips",
    "recal_videos",
    "tau_truth",
    "tau_vs_full",
    "seconds",
]


def recal_row(run: Path, table: str, setting: str, seed: int, clips: int) -> dict:
    """Score ``table``'s strategies in ``run``'s template with BatchNorm recalibrated on ``clips`` clips:
    Kendall tau-b with the ground truth and with the run's own (200-clip) scores in ``bench.json``'s
    score file. Nothing is written into the run."""
    t0 = time.time()
    gt = ground_truth(catalog.load_table(table)[0])
    full = (
        pd.read_csv(run / f"bench_{table}_scores.csv", dtype={"id": str})
        .drop_duplicates("id")
        .set_index("id")
    )
    scorer = StrategyScorer(run, recal_clips=clips)
    try:
        todo = [(Strategy.from_string(x), f"recal:{clips}") for x in gt["strategy"]]
        rows = [
            r for i in range(0, len(todo), SCORE_GROUP) for r in scorer.score_many(todo[i : i + SCORE_GROUP])
        ]
    finally:
        scorer.restore()
    after = pd.Series({r["id"]: r["top1_after"] for r in rows})
    ids = gt["id"].astype(str)
    return {
        "table": table,
        "setting": setting,
        "seed": seed,
        "recal_clips": clips,
        "recal_videos": scorer.measurement["recal_videos"],
        "tau_truth": kendall_tau_b(after[ids].to_numpy(float), gt["top1"].to_numpy(float)),
        "tau_vs_full": kendall_tau_b(after[ids].to_numpy(float), full.loc[ids, "top1_after"].to_numpy(float)),
        "seconds": round(time.time() - t0, 1),
    }


COMBINED_COLUMNS = [
    "table",
    "setting",
    "seeds",
    "k",
    "tau_after",
    "tau_after_low",
    "tau_after_high",
    "regret_se_after",
    "slot_rho",
    "tau_ablation",
    "tau_ablation_low",
    "tau_ablation_high",
    "regret_se_ablation",
    "slot_rho_ablation",
    "tau_after_seeds_mean",
    "tau_ablation_seeds_mean",
]


def combined_run(out: Path, table: str, setting: str, seeds: list[int]) -> Path:
    """A run folder of several template seeds made of the study's single-seed templates: links named
    ``seed<i>`` to ``<table>_<setting>_s<seed>`` and the ``seeds.json`` that lists them."""
    name = catalog.load_spec(table).name
    run = out / f"{name}_{setting}_seeds{'-'.join(map(str, seeds))}"
    run.mkdir(exist_ok=True)
    for i, seed in enumerate(seeds):
        link = run / f"seed{i}"
        if not link.exists():
            link.symlink_to(Path("..") / f"{name}_{setting}_s{seed}", target_is_directory=True)
    write_seeds(run, seeds)
    return run


def combined_row(table: str, setting: str, seeds: list[int], r: dict) -> dict:
    """One row of ``combined.csv``: the seeds' mean scores against the ground truth, and the mean of each
    seed's own tau beside it."""
    p, slots = r["predictors"], r["slots"]
    per_seed = r.get("per_seed", {}).values()
    return {
        "table": table,
        "setting": setting,
        "seeds": "-".join(map(str, seeds)),
        "k": len(seeds),
        "tau_after": p["template_after"]["kendall_tau"]["value"],
        "tau_after_low": p["template_after"]["kendall_tau"]["ci_low"],
        "tau_after_high": p["template_after"]["kendall_tau"]["ci_high"],
        "regret_se_after": p["template_after"].get("regret_se"),
        "slot_rho": slots["marginal_keep_T"].get("spearman_rho"),
        "tau_ablation": p["ablation"]["kendall_tau"]["value"],
        "tau_ablation_low": p["ablation"]["kendall_tau"]["ci_low"],
        "tau_ablation_high": p["ablation"]["kendall_tau"]["ci_high"],
        "regret_se_ablation": p["ablation"].get("regret_se"),
        "slot_rho_ablation": slots["ablation_t_effects"].get("spearman_rho"),
        "tau_after_seeds_mean": float(pd.Series([t["template_after"] for t in per_seed], dtype=float).mean()),
        "tau_ablation_seeds_mean": float(pd.Series([t["ablation"] for t in per_seed], dtype=float).mean()),
    }


def combine(out: Path, tables: list[str], settings: list[str], seeds: list[int], k: int) -> None:
    """``--combine K``: score consecutive groups of ``k`` of ``seeds``' finished templates as one run of K
    seeds; one row per (table, setting, group) in ``<out>/combined.csv`` (resumable)."""
    path = out / "combined.csv"
    groups = [seeds[i : i + k] for i in range(0, len(seeds), k) if len(seeds[i : i + k]) == k]
    for table in tables:
        name = catalog.load_spec(table).name
        for setting in settings:
            for group in groups:
                have = read_rows(path, COMBINED_COLUMNS)
                done = (have["table"] == table) & (have["setting"] == setting)
                if (done & (have["seeds"].astype(str) == "-".join(map(str, group)))).any():
                    continue
                missing = [
                    s for s in group if not (out / f"{name}_{setting}_s{s}" / "summary.json").is_file()
                ]
                if missing:
                    print(f"{table} {setting}: no finished template for seeds {missing}; run the study first")
                    continue
                r = score(str(combined_run(out, table, setting, group)), table)
                append_row(out, path, combined_row(table, setting, group, r), COMBINED_COLUMNS)


def combined_markdown(rows: pd.DataFrame) -> list[str]:
    """The page's section on several template seeds scored as one run."""
    if rows.empty:
        return []
    lines = [
        "## Several template seeds combined",
        "",
        "Groups of template seeds scored as one run of K seeds (`--combine K`; the seeds' scores averaged,",
        "as `fusion3d bench score` does for a run trained with `run.seeds = K`), beside the mean of the",
        "same seeds' own taus.",
        "",
        "| table | setting | seeds | tau after recal. | interval | seeds' own tau, mean | regret (SE) | "
        "slots rho | ablation tau | interval | seeds' own ablation tau, mean | ablation regret (SE) | "
        "ablation slots rho |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in rows.iterrows():
        lines.append(
            f"| {r['table']} | {r['setting']} | {r['seeds']} | {r['tau_after']:+.2f} | "
            f"[{r['tau_after_low']:+.2f}, {r['tau_after_high']:+.2f}] | {r['tau_after_seeds_mean']:+.2f} | "
            f"{r['regret_se_after']:.1f} | {r['slot_rho']:+.2f} | {r['tau_ablation']:+.2f} | "
            f"[{r['tau_ablation_low']:+.2f}, {r['tau_ablation_high']:+.2f}] | {r['tau_ablation_seeds_mean']:+.2f} | {r['regret_se_ablation']:.1f} | "
            f"{r['slot_rho_ablation']:+.2f} |"
        )
    return lines + [""]


def recal_markdown(recal: pd.DataFrame) -> list[str]:
    """The page's section on the number of recalibration clips (mean over template seeds)."""
    if recal.empty:
        return []
    lines = [
        "## BatchNorm recalibration clips",
        "",
        "Kendall tau of the template's ranking (after recalibration on N clips of the fit split) with the",
        "ground truth, and with the same template's ranking after the default 200 clips; mean over template",
        "seeds (`--recal-sweep`).",
        "",
        "| table | setting | seeds | clips | tau with ground truth | tau with the 200-clip ranking |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (table, setting, clips), g in recal.groupby(["table", "setting", "recal_clips"], sort=False):
        lines.append(
            f"| {table} | {setting} | {len(g)} | {int(clips)} | {g['tau_truth'].mean():+.2f} | "
            f"{g['tau_vs_full'].mean():+.2f} |"
        )
    return lines + [""]


def _mean(g: pd.DataFrame, column: str, spec: str) -> str:
    """The mean of ``column`` over a setting's seeds, or "n/a" where no row has it (rows from before it)."""
    v = pd.to_numeric(g[column], errors="coerce") if column in g else pd.Series(dtype=float)
    return "n/a" if v.isna().all() else format(v.mean(), spec)


def markdown(
    rows: pd.DataFrame, command: str, recal: pd.DataFrame | None = None, combined: pd.DataFrame | None = None
) -> str:
    """The study's page: one table per ground-truth table, one line per setting (mean over seeds)."""
    lines = [
        "# Estimator study (generated)",
        "",
        "Written by `benchmarks/validity_study.py`; do not edit by hand. Rows accumulate over invocations",
        "(each resumes the study folder's `study.csv`); the last one was:",
        "",
        f"    {command}",
        "",
        "Per setting: the template's Kendall tau with the table's ground truth after (and before) BatchNorm",
        "recalibration, as the mean over template seeds with the range of the seeds' bootstrap 95% intervals;",
        "Opt's regret in standard errors of the table's best; the Spearman correlation over slots between the",
        "marginal keep probability of T paths and the ground-truth T effect. The ablation columns read the",
        "same template through the per-slot ablation from all-S (`fusion3d.analysis.ablation`: additive",
        "scores from 19 scored sub-networks, and each slot's T effect). Baselines (training-free, the",
        "same for every setting) and the table's noise ceiling (split-half tau) are given once per table.",
        "",
    ]
    for table, t in rows.groupby("table", sort=False):
        first = t.iloc[0]
        lines += [
            f"## {table} ({int(first['n'])} strategies; noise ceiling {first['noise_ceiling']:.2f})",
            "",
            f"Baselines: MACs {first['tau_macs']:+.2f}, parameters {first['tau_params']:+.2f}, temporal RF "
            f"{first['tau_temporal_rf']:+.2f}, synflow {first['tau_synflow']:+.2f}.",
            "",
            "| setting | seeds | tau after recal. | interval | tau before | regret (SE) | slots rho | "
            "ablation tau | ablation regret (SE) | ablation slots rho | seconds |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for setting, g in t.groupby("setting", sort=False):
            lines.append(
                f"| {setting} | {len(g)} | {g['tau_after'].mean():+.2f} | [{g['tau_after_low'].min():+.2f}, "
                f"{g['tau_after_high'].max():+.2f}] | {g['tau_before'].mean():+.2f} | "
                f"{g['regret_se_after'].mean():.1f} | {g['slot_rho'].mean():+.2f} | "
                f"{_mean(g, 'tau_ablation', '+.2f')} | {_mean(g, 'regret_se_ablation', '.1f')} | "
                f"{_mean(g, 'slot_rho_ablation', '+.2f')} | {g['seconds'].sum():.0f} |"
            )
        lines.append("")
    lines += recal_markdown(recal if recal is not None else pd.DataFrame(columns=RECAL_COLUMNS))
    lines += combined_markdown(combined if combined is not None else pd.DataFrame(columns=COMBINED_COLUMNS))
    return "\n".join(lines)


def reliability(rows: pd.DataFrame, command: str, setting: str = "default") -> dict | None:
    """``fusion3d/bench/reliability.json`` (schema in ``fusion3d.bench``) from the rows of ``setting``:
    what the report's "How far to trust these scores" quotes. None when the study has no such rows."""
    rows = rows[rows["setting"] == setting]
    if rows.empty:
        return None
    tables = {}
    for table, t in rows.groupby("table", sort=False):
        first = t.iloc[0]
        per_seed = [round(float(v), 3) for v in t.sort_values("seed")["tau_after"]]
        tables[table] = {
            "kendall_tau_after": round(float(t["tau_after"].mean()), 3),
            "per_seed": per_seed,
            "interval": [min(per_seed), max(per_seed)],
            "interval_kind": "min-max over template seeds",
            "template_seeds": int(len(t)),
            "baselines": {
                k: round(float(first[f"tau_{k}"]), 3) for k in ("macs", "params", "temporal_rf", "synflow")
            },
            "noise_ceiling": round(float(first["noise_ceiling"]), 3),
        }
        ordered = t.sort_values("seed")
        abl = pd.to_numeric(ordered["tau_ablation"], errors="coerce") if "tau_ablation" in t else None
        if abl is not None and abl.notna().all():
            rho = pd.to_numeric(ordered["slot_rho_ablation"], errors="coerce")
            tables[table]["ablation"] = {
                "kendall_tau": round(float(abl.mean()), 3),
                "per_seed": [round(float(v), 3) for v in abl],
                "slot_spearman": None if rho.isna().any() else round(float(rho.mean()), 3),
            }
    return {
        "schema": 1,
        "placeholder": False,
        "what": (
            "Kendall tau between the template's scores (top-1 after BatchNorm recalibration) and stand-alone "
            "training (each strategy trained alone; the table's mean top-1 over its training seeds), over "
            "the 48 strategies of each shipped ground-truth table"
        ),
        "template": f"setting {setting!r} of benchmarks/validity_study.py (the demo's template settings), "
        "one template per seed",
        "source": command,
        "measured": time.strftime("%Y-%m-%d"),
        "tables": tables,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tables", nargs="+", default=catalog.shipped_tables())
    p.add_argument("--settings", nargs="+", default=None, choices=list(SETTINGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--builds", default="runs/bench", help="folder of `fusion3d bench build` (the datasets)")
    p.add_argument("--out", default="runs/validity_study")
    p.add_argument("--train-only", action="store_true", help="train the templates, score nothing")
    p.add_argument(
        "--doc-only",
        action="store_true",
        help="only write the page (and reliability.json) from the rows already in the study folder",
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="score finished templates again (new predictors) and replace their rows; trains nothing",
    )
    p.add_argument("--doc", default="docs/validity_study.md")
    p.add_argument(
        "--recal-sweep",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="score finished templates again with BatchNorm recalibrated on N clips (default settings: default)",
    )
    p.add_argument(
        "--combine",
        type=int,
        default=0,
        metavar="K",
        help="score consecutive groups of K of --seeds' finished templates as one run of K seeds",
    )
    p.add_argument(
        "--reliability",
        default=str(catalog.RELIABILITY_FILE),
        help="where to write the default setting's numbers the report quotes ('' to skip)",
    )
    args = p.parse_args()
    if args.settings is None:
        args.settings = ["default"] if args.recal_sweep else list(SETTINGS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "study.csv"
    tables = [] if args.doc_only else args.tables
    if args.recal_sweep and not args.doc_only:
        recal_path = out / "recal.csv"
        for table in tables:
            for setting in args.settings:
                for seed in args.seeds:
                    run = out / f"{catalog.load_spec(table).name}_{setting}_s{seed}"
                    if not (run / f"bench_{table}_scores.csv").is_file():
                        print(f"{run}: no finished template scored on {table!r}; run the study first")
                        continue
                    for clips in args.recal_sweep:
                        have = read_rows(recal_path, RECAL_COLUMNS)
                        key = (have["table"] == table) & (have["setting"] == setting) & (have["seed"] == seed)
                        if (key & (have["recal_clips"] == clips)).any():
                            continue
                        append_row(
                            out, recal_path, recal_row(run, table, setting, seed, clips), RECAL_COLUMNS
                        )
    if args.combine and not args.doc_only:
        combine(out, tables, args.settings, args.seeds, args.combine)
    for table in tables if not (args.recal_sweep or args.combine) else []:
        for setting in args.settings:
            for seed in args.seeds:
                have = read_rows(path)
                key = (have["table"] == table) & (have["setting"] == setting) & (have["seed"] == seed)
                if args.rescore:
                    run = out / f"{catalog.load_spec(table).name}_{setting}_s{seed}"
                    if key.any() and (run / "summary.json").is_file():
                        row = result_row(table, setting, seed, score(str(run), table), 0.0)
                        row["seconds"] = float(have.loc[key, "seconds"].iloc[0])  # the template's time
                        with file_lock(out / "study.lock"):
                            rows = read_rows(path)
                            k = (
                                (rows["table"] == table)
                                & (rows["setting"] == setting)
                                & (rows["seed"] == seed)
                            )
                            rows = rows.reindex(columns=COLUMNS).astype(object)  # in place: the order stays
                            rows.loc[rows.index[k][0], COLUMNS] = [row[c] for c in COLUMNS]
                            atomic_write_text(path, rows.to_csv(index=False))
                        print(json.dumps(row), flush=True)
                    continue
                if key.any():
                    continue
                t0 = time.time()
                run = template_for(table, Path(args.builds), out, setting, seed)
                if args.train_only or table not in catalog.shipped_tables():
                    print(
                        f"{run}: template trained (table {table!r} not scored: --train-only or not shipped yet)"
                    )
                    continue
                append_row(
                    out, path, result_row(table, setting, seed, score(str(run), table), time.time() - t0)
                )
    rows = read_rows(path)
    command = (
        f".venv/bin/python benchmarks/validity_study.py --tables {' '.join(args.tables)} --settings "
        f"{' '.join(args.settings)} --seeds {' '.join(map(str, args.seeds))} --out {args.out}"
    )
    if args.recal_sweep:
        command += f" --recal-sweep {' '.join(map(str, args.recal_sweep))}"
    if args.combine:
        command += f" --combine {args.combine}"
    if args.doc_only:
        command = f".venv/bin/python benchmarks/validity_study.py --doc-only --out {args.out}"
    recal = read_rows(out / "recal.csv", RECAL_COLUMNS)
    combined = read_rows(out / "combined.csv", COMBINED_COLUMNS)
    atomic_write_text(Path(args.doc), markdown(rows, command, recal, combined) + "\n")
    print(f"wrote {args.doc} ({len(rows)} rows)")
    rel = reliability(rows, DEFAULT_ROWS_COMMAND if args.doc_only else command)
    if rel is not None and args.reliability:
        check_reliability(rel)
        atomic_write_text(Path(args.reliability), json.dumps(rel, indent=1) + "\n")
        print(f"wrote {args.reliability}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
