"""The sample stage on a real tiny run: CSV schema, strategy list, scores, resume."""

from __future__ import annotations

import csv
import json
import shutil

import pandas as pd
import pytest
import torch
from conftest import tiny_overrides

from fusion3d.analysis.ablation import ablation_plan
from fusion3d.config import from_dict, load_config
from fusion3d.engine.checkpoint import load_checkpoint
from fusion3d.engine.trainer import train
from fusion3d.models import Strategy, build_model, count_macs, count_params
from fusion3d.run.strategies import COLUMNS, read_strategies
from fusion3d.run.strategies import RowWriter as _RowWriter
from fusion3d.stages.sample import run_sample, strategy_plan

EXPECTED_COLUMNS = [
    "strategy",
    "id",
    "source",
    "top1_before",
    "top5_before",
    "top1_after",
    "top5_after",
    "macs",
    "params",
    "n_S",
    "n_ST",
    "n_S+ST",
    "n_none",
    "views",
    "seconds",
    "rf_t_min",
    "rf_t_max",
    "rf_s_min",
    "rf_s_max",
]
NUM = 8
OUTPUTS = ("strategies.csv", "sample.json")


_SHARED: dict = {}


def shared_runs(tiny_motion, tmp_path_factory):
    """(trained, sampled) run directories, built once per test session (test_analyze uses them too):
    a tiny template trained for 1 warm-up + 1 v-DropPath epoch, and a copy of it with ``NUM`` draws
    scored. Tests that modify a run work on their own copy."""
    if not _SHARED:
        torch.set_num_threads(1)
        tmp = tmp_path_factory.mktemp("sample_run")
        train(load_config(None, tiny_overrides(tiny_motion, tmp, **{"train.epochs": 1})))
        sampled = fresh_copy(tmp / "run", tmp_path_factory.mktemp("sampled") / "run")
        run_sample(sampled, num=NUM, progress=False)
        _SHARED.update(trained=tmp / "run", sampled=sampled)
    return _SHARED["trained"], _SHARED["sampled"]


def fresh_copy(run, dest):
    """A copy of the run directory without sampling outputs."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(*OUTPUTS))
    return dest


@pytest.fixture(scope="module")
def trained(tiny_motion, tmp_path_factory):
    return shared_runs(tiny_motion, tmp_path_factory)[0]


@pytest.fixture(scope="module")
def sampled(tiny_motion, tmp_path_factory):
    run = shared_runs(tiny_motion, tmp_path_factory)[1]
    return run, pd.read_csv(run / "strategies.csv", dtype={"id": str, "strategy": str})


def _model(run):
    state = load_checkpoint(run / "checkpoint.pt")
    cfg = from_dict(state["config"])
    model = build_model(cfg.model, state["num_classes"])
    model.load_state_dict(state["model"])
    return model, cfg


def test_strategies_csv_has_the_exact_columns(sampled):
    run, df = sampled
    with open(run / "strategies.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header == EXPECTED_COLUMNS == list(COLUMNS) == list(df.columns)


def test_canonical_and_most_probable_strategies_are_scored(sampled):
    run, df = sampled
    model, _ = _model(run)
    by_id = dict(zip(df["id"], df["source"]))
    for unit in ("S", "ST", "S+ST"):
        assert by_id[Strategy.uniform(unit, model.num_slots).id] == f"canonical_{unit}"
    assert model.most_probable_strategy().id in by_id


def test_rows_are_the_unique_canonical_and_seeded_draws(sampled):
    run, df = sampled
    model, cfg = _model(run)
    g = torch.Generator().manual_seed(cfg.run.seed)
    draws = [model.sample_strategy(g) for _ in range(NUM)]
    canonical = [Strategy.uniform(u, model.num_slots) for u in ("S", "ST", "S+ST")] + [
        model.most_probable_strategy()
    ]
    ablation = ablation_plan(model.num_slots)
    expected = {s.id for s in canonical + ablation + draws}
    assert df["id"].is_unique
    assert set(df["id"]) == expected and len(df) == len(expected)
    assert set(df.loc[df["source"] == "sampled", "id"]) <= {s.id for s in draws}
    assert set(df.loc[df["source"] == "ablation", "id"]) == {s.id for s in ablation} - {
        s.id for s in canonical
    }


def test_scores_are_percentages_and_costs_match_the_model(sampled):
    run, df = sampled
    model, cfg = _model(run)
    for col in ("top1_before", "top5_before", "top1_after", "top5_after"):
        assert df[col].between(0, 100).all()
    shape = (3, cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size)
    for _, row in df.iterrows():
        s = Strategy.from_string(row["strategy"])
        assert s.id == row["id"]
        assert row["macs"] == count_macs(model, shape, s) and row["params"] == count_params(model, s)
        assert (row["n_S"], row["n_ST"], row["n_S+ST"], row["n_none"]) == tuple(s.counts().values())
        assert row["seconds"] > 0
    assert df["views"].str.startswith("selection split, 1 clip x 1 crop per video, per-video top-1").all()


def test_sample_json_records_settings_and_totals(sampled):
    run, df = sampled
    info = json.loads((run / "sample.json").read_text())
    assert info["complete"] and info["rows"] == len(df) and info["settings"]["num"] == NUM
    assert info["measurement"]["recalibrate"] and info["measurement"]["recal_videos"] > 0


def test_before_scores_do_not_depend_on_earlier_recalibrations(sampled, trained, tmp_path):
    # the template's BN statistics are put back before each strategy: scoring without any
    # recalibration gives the same "before" numbers
    run, df = sampled
    plain = run_sample(fresh_copy(trained, tmp_path / "run"), num=NUM, recalibrate=False, progress=False)
    assert plain["top1_after"].isna().all() and plain["top5_after"].isna().all()
    merged = df.merge(plain, on="id", suffixes=("", "_plain"))
    assert len(merged) == len(df)
    assert (merged["top1_before"] == merged["top1_before_plain"]).all()
    assert (merged["top5_before"] == merged["top5_before_plain"]).all()


def test_interrupted_sampling_resumes_without_redoing_finished_strategies(sampled, trained, tmp_path):
    _, reference = sampled
    run = fresh_copy(trained, tmp_path / "run")
    first = run_sample(run, num=NUM, limit=3, progress=False)
    assert len(first) == 3 and not json.loads((run / "sample.json").read_text())["complete"]
    with open(run / "strategies.csv", "a") as fh:  # a crash in the middle of a row
        fh.write("S|S|ST|none|S|S,deadbeef00,sampled,50.0,10")
    final = run_sample(run, num=NUM, progress=True)
    assert final["id"].is_unique and set(final["id"]) == set(reference["id"])
    pd.testing.assert_frame_equal(final.head(3), first)  # same rows, same seconds: not redone
    assert "deadbeef00" not in set(final["id"])
    assert (run / "strategies.csv").read_text().count("strategy,id,source") == 1
    assert json.loads((run / "sample.json").read_text())["complete"]


def test_a_second_run_with_the_same_seed_adds_nothing(sampled):
    run, df = sampled
    before = (run / "strategies.csv").read_bytes()
    again = run_sample(run, num=NUM, progress=False)
    assert (run / "strategies.csv").read_bytes() == before and len(again) == len(df)
    assert json.loads((run / "sample.json").read_text())["new_rows"] == 0


def test_resume_with_different_weights_is_refused(sampled, tmp_path):
    run, _ = sampled
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    info = json.loads((copy / "sample.json").read_text())
    info["measurement"]["weights_sha1"] = "0" * 40
    (copy / "sample.json").write_text(json.dumps(info))
    with pytest.raises(RuntimeError, match="weights_sha1"):
        run_sample(copy, num=NUM, progress=False)


def test_selection_split_that_differs_from_training_is_refused(trained, tmp_path):
    run = fresh_copy(trained, tmp_path / "run")
    splits = json.loads((run / "splits.json").read_text())
    splits["selection"] = splits["selection"][1:]
    (run / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(RuntimeError, match="selection split"):
        run_sample(run, num=1, progress=False)


def test_strategy_plan_puts_canonical_first_and_removes_duplicates(trained):
    model, _ = _model(trained)
    with torch.no_grad():
        for g in model.gates():
            g.logit.fill_(-20.0)  # p ~ 0: every draw is all S+ST, as is the most probable strategy
    plan = strategy_plan(model, 5, seed=0, ablation=False)
    assert [src for _, src in plan] == ["canonical_S", "canonical_ST", "canonical_S+ST"]
    assert plan[2][0] == model.most_probable_strategy() == Strategy.uniform("S+ST", model.num_slots)
    plan = strategy_plan(model, 5, seed=0)  # all-S of the ablation is canonical_S already
    assert [src for _, src in plan] == ["canonical_S", "canonical_ST", "canonical_S+ST"] + ["ablation"] * (
        3 * model.num_slots
    )


def test_reading_a_torn_csv_ignores_the_torn_line_without_changing_the_file(sampled, tmp_path):
    run, df = sampled
    path = tmp_path / "strategies.csv"
    torn = (run / "strategies.csv").read_bytes() + b"S|S,abc,samp"
    path.write_bytes(torn)
    assert len(read_strategies(path)) == len(df) and path.read_bytes() == torn
    assert len(read_strategies(path, repair=True)) == len(df)
    assert path.read_bytes() == (run / "strategies.csv").read_bytes()


def test_a_second_sampler_on_the_same_run_is_refused(sampled, tmp_path):
    run, _ = sampled
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    holder = _RowWriter(copy / "strategies.csv")  # what a running sampler holds
    try:
        with pytest.raises(RuntimeError, match="another process"):
            run_sample(copy, num=NUM, progress=False)
    finally:
        holder.close()


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


def test_shards_score_disjoint_parts_and_the_last_one_merges_in_plan_order(sampled, trained, tmp_path):
    _, reference = sampled
    run = fresh_copy(trained, tmp_path / "run")
    part1 = run_sample(run, num=NUM, progress=False, shard="1/2")
    assert not (run / "strategies.csv").exists() and (run / "strategies.shard1of2.done").is_file()
    assert set(part1["id"]) == set(reference["id"].iloc[1::2])
    merged = run_sample(run, num=NUM, progress=False, shard=(0, 2))
    assert not list(run.glob("strategies.shard*"))
    _same_rows(merged, reference)  # same strategies, same scores, same order as one process
    assert json.loads((run / "sample.json").read_text())["complete"]


def test_an_unsharded_run_merges_what_finished_shards_left_and_resumes_the_rest(sampled, trained, tmp_path):
    _, reference = sampled
    run = fresh_copy(trained, tmp_path / "run")
    run_sample(run, num=NUM, progress=False, shard="0/3")
    run_sample(run, num=NUM, progress=False, shard="2/3", limit=1)  # interrupted: not done, not merged
    assert not (run / "strategies.shard2of3.done").exists()
    final = run_sample(run, num=NUM, progress=False)  # shard 0 is unmerged (1/3 never ran): rows reused
    assert set(final["id"]) == set(reference["id"])


@pytest.mark.parametrize("bad", ["2/2", "1", "a/b", "0/0"])
def test_bad_shard_spec_is_refused(bad):
    from fusion3d.run.strategies import shard_spec

    with pytest.raises(ValueError, match="shard"):
        shard_spec(bad)


def test_sampling_under_torchrun_gives_the_single_process_file(sampled, trained, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    _, reference = sampled
    run = fresh_copy(trained, tmp_path / "run")
    with socket.socket() as s:  # torchrun's --master_port=0 hangs the rendezvous: pick a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={port}",
            "-m",
            "fusion3d",
            "sample",
            str(run),
            "-n",
            str(NUM),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert not list(run.glob("strategies.shard*")), out[-2000:]
    _same_rows(read_strategies(run / "strategies.csv"), reference)


def test_receptive_field_columns_match_the_strategy(sampled):
    from fusion3d.analysis.receptive_field import strategy_rf_columns

    run, df = sampled
    model, _ = _model(run)
    for row in df.itertuples(index=False):
        expected = strategy_rf_columns(model, Strategy.from_string(row.strategy))
        assert (row.rf_t_min, row.rf_t_max, row.rf_s_min, row.rf_s_max) == tuple(expected.values())
    by_id = df.set_index("id")
    n = model.num_slots
    assert (
        by_id.loc[Strategy.uniform("S", n).id, "rf_t_max"]
        < by_id.loc[Strategy.uniform("ST", n).id, "rf_t_max"]
    )


def test_a_file_from_before_the_receptive_field_columns_is_read_and_upgraded_on_resume(sampled, tmp_path):
    run, df = sampled
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    old = df.drop(columns=["rf_t_min", "rf_t_max", "rf_s_min", "rf_s_max"]).iloc[:-2]  # 2 rows left to score
    (copy / "strategies.csv").write_text(old.to_csv(index=False))
    assert read_strategies(copy / "strategies.csv")["rf_t_max"].isna().all()
    again = run_sample(copy, num=NUM, progress=False)
    assert json.loads((copy / "sample.json").read_text())["new_rows"] == 2
    assert len(read_strategies(copy / "strategies.csv")) == len(df)  # the new rows land in the rewritten file
    assert (again["rf_t_max"] == df["rf_t_max"]).all()
    with open(copy / "strategies.csv", newline="") as fh:
        assert next(csv.reader(fh)) == list(COLUMNS)


def test_scoring_a_group_gives_the_rows_of_scoring_one_at_a_time(trained):
    from fusion3d.engine.scoring import StrategyScorer

    scorer = StrategyScorer(trained)
    try:
        plan = strategy_plan(scorer.model, 3, seed=0)
        together = scorer.score_many(plan)
        alone = [scorer.score(s, src) for s, src in plan]
    finally:
        scorer.restore()
    cols = [c for c in COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(pd.DataFrame(together)[cols], pd.DataFrame(alone)[cols])


def test_group_size_does_not_change_the_rows(sampled, trained, tmp_path):
    _, reference = sampled
    rows = run_sample(fresh_copy(trained, tmp_path / "run"), num=NUM, progress=False, group_size=3)
    _same_rows(rows, reference)
    with pytest.raises(ValueError, match="group_size"):
        run_sample(fresh_copy(trained, tmp_path / "run2"), num=NUM, progress=False, group_size=0)
