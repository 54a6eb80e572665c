"""``fusion3d bench``: the known-answer benchmark.

- ``bench build NAME``: train every strategy of a table's design alone (each seed), with the spec's
  recipe, on the spec's synthetic dataset; one row per (strategy, seed) appended to ``rows.csv``
  as soon as it finishes (under a lock, flushed), so a killed build loses at most the rows in
  progress, and those resume from their own checkpoints. ``--workers N`` trains N rows at once;
  ``--shard I/N`` builds every N-th row (several processes or machines sharing the folder). When
  every row is there, ``table.csv`` and ``table.json`` are written; ``--publish`` copies them into
  the package (``fusion3d/bench/tables``).
- ``bench list``: each table with its spread, its noise ceiling (Kendall tau between two halves of
  its seeds), the tau a perfect predictor is expected to reach against it (``attainable_tau``),
  and its depth profile.
- ``bench score RUN --table NAME``: the run's template scores the table's strategies (before and
  after BatchNorm recalibration, resumable) and is compared with the ground truth next to
  training-free baselines (MACs, parameters, the static temporal receptive field, synflow at
  initialisation); per-slot agreement of the learned preferences with the ground-truth effect of a
  T path. Writes ``bench.json`` (one entry per table) into the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import shlex
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fusion3d import bench as catalog
from fusion3d.analysis.ablation import DEFAULT_BASE as ABLATION_BASE
from fusion3d.analysis.ablation import ablation_effects, ablation_plan, ablation_t_effects, additive_scores
from fusion3d.analysis.benchmark import (
    TABLE_COLUMNS,
    describe_table,
    design,
    ground_truth,
    linear_t_effects,
    score_predictors,
    slot_agreement,
    slot_effects,
)
from fusion3d.analysis.marginals import keep_probs
from fusion3d.analysis.stats import kendall_tau_b
from fusion3d.config import load_config
from fusion3d.data.synth import generate
from fusion3d.engine.proxies import synflow
from fusion3d.engine.scoring import StrategyScorer
from fusion3d.engine.trainer import train
from fusion3d.models import Strategy, build_model, count_macs, count_params
from fusion3d.run.layout import BenchDir, RunDir
from fusion3d.run.seeds import seed_dirs
from fusion3d.run.strategies import RowWriter, read_strategies, shard_spec
from fusion3d.utils import atomic_write_text, file_lock

# ----------------------------------------------------------------------------- build


def _base_config(spec: catalog.BenchSpec, bdir: BenchDir, extra: list[str] = ()):
    root = bdir.data_dir
    return load_config(
        None,
        [
            *spec.config,
            f"data.root={root}",
            f"data.annotations={root / 'ucfTrainTestlist'}",
            f"data.cache_dir={bdir.path / 'cache'}",
            *extra,
        ],
    )


def plan_rows(spec: catalog.BenchSpec, bdir: BenchDir) -> list[dict]:
    """Every (strategy, seed) row of the table, strategy-major (a strategy's seeds are adjacent)."""
    cfg = _base_config(spec, bdir)
    model = build_model(
        dataclasses.replace(cfg.model, pretrained_2d=""), spec.synth.get("classes", 2)
    )  # costs only
    shape = (model.in_channels, cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size)
    if "strategies" in spec.design:  # an explicit list (small fixtures): unit strings or units
        strategies = [
            (Strategy.from_string(x) if "|" in x else Strategy.uniform(x, model.num_slots), "listed")
            for x in spec.design["strategies"]
        ]
    else:
        strategies = design(
            model.num_slots,
            int(spec.design.get("random", 31)),
            int(spec.design.get("seed", 0)),
            lambda s: count_macs(model, shape, s),
        )
    rows = []
    for s, label in strategies:
        for seed in spec.seeds:
            rows.append(
                {
                    "strategy": str(s),
                    "id": s.id,
                    "design": label,
                    "seed": int(seed),
                    "key": f"{s.id}_s{seed}",
                    "macs": count_macs(model, shape, s),
                    "params": count_params(model, s),
                }
            )
    return rows


def train_row(spec_path: str, out: str, row: dict) -> dict:
    """Train one (strategy, seed) row alone; returns the table row. Runs in a worker process."""
    spec, bdir = catalog.load_spec(spec_path), BenchDir(out)
    bdir.row_log(row["key"]).parent.mkdir(parents=True, exist_ok=True)
    cfg = _base_config(
        spec,
        bdir,
        [
            f"run.out={bdir.row_run(row['key'])}",
            f"model.strategy={row['strategy']}",
            f"run.seed={row['seed']}",
            "run.threads=1",
            "train.progress=false",
        ],
    )
    t0 = time.time()
    with (
        open(bdir.row_log(row["key"]), "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        summary = train(cfg, resume="auto")
    n_test = _test_videos(bdir)
    return {
        "strategy": row["strategy"],
        "id": row["id"],
        "design": row["design"],
        "seed": row["seed"],
        "top1": summary.get("val_top1"),
        "top5": summary.get("val_top5"),
        "macs": row["macs"],
        "params": row["params"],
        "test_videos": n_test,
        "seconds": round(time.time() - t0, 2),
    }


def _test_videos(bdir: BenchDir) -> int:
    lists = sorted((bdir.data_dir / "ucfTrainTestlist").glob("testlist*.txt"))
    return sum(1 for line in lists[0].read_text().splitlines() if line.strip()) if lists else 0


def _append_row(bdir: BenchDir, row: dict) -> None:
    with file_lock(bdir.lock("rows")):
        new = not bdir.rows.is_file() or bdir.rows.stat().st_size == 0
        with open(bdir.rows, "a") as fh:
            fh.write(pd.DataFrame([row], columns=list(TABLE_COLUMNS)).to_csv(index=False, header=new))
            fh.flush()
            os.fsync(fh.fileno())


def read_rows(bdir: BenchDir) -> pd.DataFrame:
    """The finished rows of a build (a torn last line is ignored)."""
    if not bdir.rows.is_file():
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    data = bdir.rows.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    if not data.strip():
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    import io

    return pd.read_csv(io.BytesIO(data), dtype={"id": str, "strategy": str, "design": str})


def build(
    name: str,
    out: str = "runs/bench",
    workers: int = 1,
    shard: str | None = None,
    limit: int | None = None,
    publish: bool = False,
    progress: bool = True,
) -> dict:
    """Build (or continue) the table ``name``; returns what ``build.json`` holds."""
    spec_path = str(catalog.SPECS_DIR / f"{name}.yaml") if not Path(name).is_file() else name
    spec = catalog.load_spec(spec_path)
    bdir = BenchDir(Path(out) / spec.name)
    bdir.path.mkdir(parents=True, exist_ok=True)
    with file_lock(bdir.lock("data")):  # shards started together generate the dataset once
        generate(bdir.data_dir, **spec.synth)
    rows = plan_rows(spec, bdir)
    shard_i, shard_n = shard_spec(shard or (0, 1))
    done = {f"{i}_s{s}" for i, s in zip(read_rows(bdir)["id"], read_rows(bdir)["seed"])}
    todo = [r for r in rows[shard_i::shard_n] if r["key"] not in done]
    # seed-major: a build stopped part-way leaves whole seeds (every strategy), which is what the
    # noise ceiling and a table grown by adding seeds need; the table itself stays strategy-major
    todo.sort(key=lambda r: spec.seeds.index(r["seed"]))
    if limit is not None:
        todo = todo[: int(limit)]
    invocations = json.loads(bdir.build.read_text()).get("invocations", []) if bdir.build.is_file() else []
    invocations.append(
        {
            "command": _command_line(name, out, workers, shard, limit, publish),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "rows": len(todo),
            "device": _device_name(),
        }
    )
    info = {
        "name": spec.name,
        "spec": spec.__dict__,
        "data_id": catalog.data_id(bdir.data_dir),
        "planned_rows": len(rows),
        "invocations": invocations,
    }
    atomic_write_text(bdir.build, json.dumps(info, indent=1, default=str) + "\n")
    if progress:
        print(
            f"{spec.name}: {len(rows)} rows planned, {len(done)} done, {len(todo)} to train in this process "
            f"(shard {shard_i}/{shard_n}, {workers} worker(s)); logs in {bdir.path / 'logs'}",
            flush=True,
        )
    t0 = time.time()
    if workers > 1 and len(todo) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(int(workers), len(todo)), mp_context=ctx) as pool:
            futures = [pool.submit(train_row, spec_path, str(bdir.path), r) for r in todo]
            for k, f in enumerate(as_completed(futures)):  # each row is kept as soon as it is trained
                _finish(bdir, f.result(), k, len(todo), t0, progress)
    else:
        for k, r in enumerate(todo):
            _finish(bdir, train_row(spec_path, str(bdir.path), r), k, len(todo), t0, progress)
    info["invocations"][-1]["wall_seconds"] = round(time.time() - t0, 1)
    atomic_write_text(bdir.build, json.dumps(info, indent=1, default=str) + "\n")
    return _maybe_finish_table(spec, bdir, rows, publish)


def _device_name() -> str:
    """Where this invocation trains (the spec's recipe leaves ``run.device`` at auto)."""
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({os.cpu_count()} cores)"


def _command_line(name, out, workers, shard, limit, publish) -> str:
    """The ``fusion3d bench build`` command of this call (recorded with the table)."""
    parts = ["fusion3d", "bench", "build", str(name), "--out", str(out), "--workers", str(workers)]
    parts += ["--shard", str(shard)] if shard else []
    parts += ["--limit", str(limit)] if limit is not None else []
    parts += ["--publish"] if publish else []
    return " ".join(shlex.quote(p) for p in parts)


def _finish(bdir: BenchDir, row: dict, k: int, n: int, t0: float, progress: bool) -> None:
    _append_row(bdir, row)
    if progress:
        print(
            f"  [{k + 1}/{n}] {row['design']:<14} {row['strategy']:<32} seed {row['seed']}: top-1 {row['top1']:.1f}% "
            f"({row['seconds']:.0f}s; {time.time() - t0:.0f}s so far)",
            flush=True,
        )


def _maybe_finish_table(spec: catalog.BenchSpec, bdir: BenchDir, rows: list[dict], publish: bool) -> dict:
    have = read_rows(bdir).drop_duplicates(["id", "seed"], keep="last")
    keyed = {f"{i}_s{s}": r for (i, s), r in zip(zip(have["id"], have["seed"]), have.to_dict("records"))}
    missing = [r["key"] for r in rows if r["key"] not in keyed]
    info = json.loads(bdir.build.read_text())
    info.update({"rows_done": len(rows) - len(missing), "complete": not missing})
    if not missing:
        table = pd.DataFrame([keyed[r["key"]] for r in rows], columns=list(TABLE_COLUMNS))
        atomic_write_text(bdir.table, table.to_csv(index=False))
        meta = {
            "name": spec.name,
            "description": spec.description,
            "data_id": catalog.data_id(bdir.data_dir),
            "synth": spec.synth,
            "recipe": spec.config,
            "design": spec.design,
            "seeds": spec.seeds,
            "train_seconds_total": round(float(table["seconds"].sum()), 1),
            "commands": [i["command"] for i in info.get("invocations", [])],
            "invocations": [  # where each part was trained (a table may mix machines; the recipe is one)
                {k: i[k] for k in ("command", "device", "rows", "wall_seconds", "note") if k in i}
                for i in info.get("invocations", [])
            ],
            "wall_seconds_total": round(
                sum(i.get("wall_seconds", 0.0) for i in info.get("invocations", [])), 1
            ),
            "summary": describe_table(table),
        }
        atomic_write_text(bdir.table_meta, json.dumps(meta, indent=1) + "\n")
        info["table"] = str(bdir.table)
        if publish:
            catalog.TABLES_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bdir.table, catalog.TABLES_DIR / f"{spec.name}.csv")
            shutil.copyfile(bdir.table_meta, catalog.TABLES_DIR / f"{spec.name}.json")
            info["published"] = str(catalog.TABLES_DIR / f"{spec.name}.csv")
    atomic_write_text(bdir.build, json.dumps(info, indent=1, default=str) + "\n")
    return info


# ----------------------------------------------------------------------------- list


def list_tables(folder: str | None = None) -> list[dict]:
    """Every shipped table (and the finished tables of a build folder ``folder``), described."""
    sources = [(n, catalog.table_paths(n)[0]) for n in catalog.shipped_tables()]
    if folder:
        sources += [(p.parent.name, p) for p in sorted(Path(folder).glob("*/table.csv"))]
    out = []
    for name, csv in sources:
        df, meta = catalog.load_table(csv)
        out.append(
            {
                "name": name,
                "path": str(csv),
                "data_id": meta.get("data_id"),
                "train_seconds_total": meta.get("train_seconds_total"),
                **describe_table(df),
            }
        )
    return out


# ----------------------------------------------------------------------------- score


SCORE_GROUP = 64  # strategies scored together (``StrategyScorer.score_many``); a kill loses one group


def _template_scores(
    run: RunDir, table: str, gt: pd.DataFrame, recal_clips: int | None
) -> tuple[pd.DataFrame, StrategyScorer]:
    """(the template's scores of the table's strategies, indexed by id; the scorer). Rows are resumable,
    in ``bench_<table>_scores.csv``."""
    scorer = StrategyScorer(run.path, recal_clips=recal_clips)
    path = run.bench_scores(table)
    writer = RowWriter(path)
    try:
        have = set(read_strategies(path, repair=True)["id"].astype(str))
        writer.ensure_header()
        todo = [(Strategy.from_string(x), f"bench:{table}") for x in gt["strategy"]]
        num_slots = len(todo[0][0]) if todo else 0
        todo += [(s, f"ablation:{ABLATION_BASE}") for s in ablation_plan(num_slots, ABLATION_BASE)]
        seen = set(have)
        todo = [(s, src) for s, src in todo if s.id not in seen and not seen.add(s.id)]
        for start in range(0, len(todo), SCORE_GROUP):  # shared prefixes computed once per group
            for row in scorer.score_many(todo[start : start + SCORE_GROUP]):
                writer.write(row)
    finally:
        writer.close()
        scorer.restore()
    scores = read_strategies(path).drop_duplicates("id").set_index("id")
    return scores, scorer


def score(run_dir: str, table: str, recal_clips: int | None = None, permutations: int = 10000) -> dict:
    """Compare the run's answers with the ground truth of ``table``; returns (and stores in
    ``bench.json``) every number.

    A run of several template seeds (``run.seeds = K``) is scored with every seed's template (each
    seed run keeps its own resumable ``bench_<table>_scores.csv``); its answers are the seeds' mean
    scores, mean drop probabilities and the ablation of the mean scores, like ``fusion3d sample`` and
    ``analyze`` combine them, and ``per_seed`` gives each template's own Kendall tau."""
    run = RunDir(run_dir)
    df, meta = catalog.load_table(table)
    name = meta.get("name", Path(table).stem)
    gt = ground_truth(df)
    seeds = seed_dirs(run_dir)
    per_seed = []
    for seed_run in [RunDir(d) for d in seeds] or [run]:
        scores, scorer = _template_scores(seed_run, name, gt, recal_clips)
        per_seed.append((seed_run, scores.loc[gt["id"]], scores, scorer))
    scorer = per_seed[0][3]
    s = per_seed[0][1].copy()
    all_scores = per_seed[0][2].copy()
    for col in ("top1_before", "top1_after"):  # the seeds' mean (one seed: its own scores)
        s[col] = np.mean([p[1][col].to_numpy(float) for p in per_seed], axis=0)
        all_scores[col] = np.mean([p[2].loc[all_scores.index, col].to_numpy(float) for p in per_seed], axis=0)
    torch.manual_seed(0)  # synflow is measured on one seeded initialisation
    init = build_model(scorer.cfg.model, scorer.state["num_classes"])
    predictors = {
        "template_after": s["top1_after"].to_numpy(float),
        "template_before": s["top1_before"].to_numpy(float),
        "macs": gt["macs"].to_numpy(float),
        "params": gt["params"].to_numpy(float),
        "temporal_rf": s["rf_t_max"].to_numpy(float),
        "synflow": np.array(
            [synflow(init, Strategy.from_string(x), scorer.input_shape) for x in gt["strategy"]]
        ),
    }
    effects = slot_effects(gt)
    drop = np.mean([p[3].model.drop_probs().detach().cpu().numpy() for p in per_seed], axis=0)
    q_t = keep_probs(drop, "paper")[:, 1]  # P(ST) + P(S+ST): the marginal of keeping the T path
    template_effects = linear_t_effects(gt["strategy"], s["top1_after"].to_numpy(float))[0]
    ablation = _ablation(all_scores, gt, len(q_t))
    predictors["ablation"] = ablation["additive"]
    result = {
        "table": name,
        "table_data_id": meta.get("data_id"),
        "run_data": scorer.cfg.data.root,
        "data_matches": _data_matches(scorer.cfg.data.root, meta.get("data_id")),
        "n": int(len(gt)),
        "template_seeds": len(per_seed),
        "measured_on": {
            "template": scorer.views + (f"; mean over {len(per_seed)} template seeds" if seeds else ""),
            "ground_truth": "table test set, mean over seeds",
        },
        "table_summary": describe_table(df),
        "predictors": score_predictors(gt, predictors, permutations=permutations),
        "slot_effects": effects.to_dict("records"),
        "slots": {
            "marginal_keep_T": slot_agreement(effects, q_t),
            "template_effects": slot_agreement(effects, template_effects),
            "ablation_t_effects": slot_agreement(effects, ablation["t_effects"]),
        },
        "ablation": {
            "base": ABLATION_BASE,
            "base_top1": ablation["base_score"],
            "effects": ablation["effects"].to_dict("records"),
        },
    }
    if seeds:  # each template on its own: the spread the mean hides
        result["per_seed"] = {
            seed_run.path.name: {
                "template_after": _tau(gt, one["top1_after"]),
                "template_before": _tau(gt, one["top1_before"]),
                "ablation": _tau(gt, pd.Series(_ablation(every, gt, len(q_t))["additive"])),
            }
            for seed_run, one, every, _ in per_seed
        }
    result = json.loads(json.dumps(result, default=float).replace("NaN", "null").replace("Infinity", "null"))
    with file_lock(run.lock("bench")):
        allr = json.loads(run.bench.read_text()) if run.bench.is_file() else {}
        allr[name] = result
        atomic_write_text(run.bench, json.dumps(allr, indent=1) + "\n")
    return result


def per_seed_text(per_seed: dict) -> str:
    """One line: each template seed's own Kendall tau (template after recalibration, ablation)."""

    def signed(v):
        return "n/a" if v is None else f"{v:+.2f}"

    return "each template seed alone: " + "; ".join(
        f"{d} tau {signed(t.get('template_after'))} (ablation {signed(t.get('ablation'))})"
        for d, t in per_seed.items()
    )


def _tau(gt: pd.DataFrame, values: pd.Series) -> float:
    """Kendall tau-b of ``values`` (one per ground-truth row) with the ground truth's mean top-1."""
    return float(kendall_tau_b(np.asarray(values, dtype=float), gt["top1"].to_numpy(float)))


def _ablation(scores: pd.DataFrame, gt: pd.DataFrame, num_slots: int) -> dict:
    """The per-slot ablation from the template's scores (after recalibration) of ``ablation_plan``:
    effects per (slot, unit), each slot's T effect, and the additive score of every table strategy."""
    by_strategy = scores.drop_duplicates("strategy").set_index("strategy")["top1_after"]
    effects = ablation_effects(by_strategy.to_dict(), num_slots, ABLATION_BASE)
    base_score = float(by_strategy["|".join([ABLATION_BASE] * num_slots)])
    return {
        "effects": effects,
        "base_score": base_score,
        "t_effects": ablation_t_effects(effects),
        "additive": additive_scores(effects, base_score, gt["strategy"]),
    }


def _data_matches(root: str, table_data_id: str | None) -> bool | None:
    """Whether the run's dataset is the table's (same generator record); None when unknown."""
    run_id = catalog.data_id(root)
    return None if run_id is None or table_data_id is None else run_id == table_data_id


# ----------------------------------------------------------------------------- the verbs


def command(args) -> int:
    if args.bench_verb == "build":
        info = build(
            args.name,
            out=args.out,
            workers=args.workers,
            shard=args.shard,
            limit=args.limit,
            publish=args.publish,
        )
        state = (
            "complete: " + info.get("table", "")
            if info["complete"]
            else f"{info['rows_done']}/{info['planned_rows']} rows"
        )
        print(f"{info['name']}: {state}")
        return 0
    if args.bench_verb == "list":
        tables = list_tables(args.dir)
        if args.json:
            print(json.dumps(tables, indent=1))
            return 0
        if not tables:
            print("no finished tables (build one: fusion3d bench build NAME)")
        for t in tables:
            nc, at = t["noise_ceiling"]["kendall_tau"], t["noise_ceiling"].get("attainable_tau")
            dp = t["depth_profile"]
            print(
                f"{t['name']:<12} {t['strategies']} strategies x {len(t['seeds'])} seeds, top-1 {t['top1_min']:.1f}-"
                f"{t['top1_max']:.1f}% (spread {t['spread']:.1f}), {t['within_1se_of_best']} within 1 SE of the best, "
                f"noise ceiling tau {'n/a' if nc is None else f'{nc:.2f}'} (attainable {'n/a' if at is None else f'{at:.2f}'}), T early-half {dp['early_half_T']:.1f}% vs "
                f"late-half {dp['late_half_T']:.1f}%"
            )
        return 0
    r = score(args.run, args.table, recal_clips=args.recal_clips)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['table']}: {r['n']} strategies; template: {r['measured_on']['template']}")
    for name, p in r["predictors"].items():
        if "kendall_tau" not in p:
            continue
        t = p["kendall_tau"]
        se = "n/a" if p["regret_se"] is None else f"{p['regret_se']:.1f}"
        print(
            f"  {name:<16} tau {t['value']:+.2f} [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}]  rho "
            f"{p['spearman_rho']['value']:+.2f}  top-5 overlap {p['top_k_overlap']:.1f}  regret "
            f"{p['regret_points']:.1f} pts ({se} SE)"
        )
    for key, what in (("marginal_keep_T", "marginals"), ("ablation_t_effects", "ablation")):
        m = r["slots"][key]
        rho = "n/a" if m["spearman_rho"] is None else f"{m['spearman_rho']:+.2f}"
        print(
            f"  per-slot: {what} vs ground-truth T effect Spearman {rho}, early-late profile "
            f"{'matches' if m['profile_matches'] else 'does not match'}"
        )
    if r.get("per_seed"):
        print("  " + per_seed_text(r["per_seed"]))
    print(f"wrote {RunDir(args.run).bench}")
    return 0
