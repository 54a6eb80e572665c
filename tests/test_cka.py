"""Debiased minibatch linear CKA: estimators, invariances, hooks, the two-strategy pass, the run stage."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_overrides

from fusion3d.analysis.cka import (
    MinibatchCKA,
    SlotGrams,
    cka_biased,
    cka_debiased,
    cka_matrix,
    cka_pass,
    gram_linear,
    hsic_unbiased,
    hsic_unbiased_matrix,
    plot_cka_heatmap,
    redundant_runs,
)
from fusion3d.config import load_config
from fusion3d.engine.bn import bn_state, recalibrate_bn
from fusion3d.engine.trainer import train
from fusion3d.models import Strategy
from fusion3d.models.spec import ModelConfig
from fusion3d.models.template import build_model
from fusion3d.stages.analyze import run_cka

PNG = b"\x89PNG\r\n\x1a\n"


def _features(seed: int, n: int = 32, d: int = 20):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.tanh(x @ rng.normal(size=(d, 12))) + 0.3 * rng.normal(size=(n, 12))
    return x, y


# ----------------------------------------------------------------------------- estimators


def test_hsic_unbiased_is_the_u_statistic():
    # Song et al. 2012: the average over ordered 4-tuples of distinct indices of
    # K_ij L_ij + K_ij L_qr - 2 K_ij L_iq
    x, y = _features(0, n=6)
    K, L = gram_linear(x), gram_linear(y) + 0.7  # any symmetric Grams (the offset is not centred away)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(6), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
        count += 1
    assert hsic_unbiased(K, L) == pytest.approx(total / count, rel=1e-12)
    stack_k, stack_l = np.stack([K, L, K + L]), np.stack([L, 2 * K])
    pairwise = [[hsic_unbiased(a, b) for b in stack_l] for a in stack_k]
    assert np.allclose(hsic_unbiased_matrix(stack_k, stack_l), pairwise, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="n >= 4"):
        hsic_unbiased(K[:3, :3], L[:3, :3])


def test_identical_representations_give_one():
    x, _ = _features(1)
    for cka in (cka_debiased, cka_biased):
        assert cka(x, x) == pytest.approx(1.0, abs=1e-12)
        assert cka(x, 2 * x + 5) == pytest.approx(1.0, abs=1e-12)


def test_independent_high_dimensional_features():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 64, 4096))
    debiased, biased = cka_debiased(x, y), cka_biased(x, y)
    assert abs(debiased) < 0.05  # -0.017 with this seed
    assert biased > 0.95  # 0.984: the plug-in estimator sees two near-isotropic Grams when d >> n


def test_invariance_to_orthogonal_transforms_and_isotropic_scaling():
    x, y = _features(2)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(20, 20)))
    for cka in (cka_debiased, cka_biased):
        ref = cka(x, y)
        assert 0.2 < ref < 1.0
        assert cka(x @ q, y) == pytest.approx(ref, abs=1e-12)
        assert cka(3.5 * x, 0.01 * y) == pytest.approx(ref, abs=1e-12)
        assert cka(y, x) == pytest.approx(ref, abs=1e-12)


def test_large_constant_offset_on_float32_features():
    rng = np.random.default_rng(4)
    # multiples of 2^-8: x + 1e4 is exact in float32 (spacing 2^-10 there), so the offset-free and the
    # offset features carry the same numbers and any difference comes from the estimator
    x = (np.round(rng.normal(size=(32, 50)) * 256) / 256).astype(np.float32)
    y = (np.round(np.tanh(x[:, :30] * 2) * 256) / 256).astype(np.float32)
    shifted = x + np.float32(1e4)
    assert np.array_equal(shifted - np.float32(1e4), x)
    for cka in (cka_debiased, cka_biased):
        assert cka(shifted, y) == pytest.approx(cka(x, y), abs=1e-6)
        assert cka(torch.from_numpy(shifted), torch.from_numpy(y)) == pytest.approx(cka(x, y), abs=1e-6)


def test_minibatch_cka():
    xs, ys = zip(*(_features(s, n=16) for s in range(3)))
    acc = MinibatchCKA()
    acc.update([gram_linear(xs[0]), gram_linear(ys[0])], [gram_linear(ys[0])])
    m = acc.result()
    assert m.shape == (2, 1)
    assert m[0, 0] == pytest.approx(cka_debiased(xs[0], ys[0]), abs=1e-12) and m[1, 0] == pytest.approx(1.0)
    for x, y in zip(xs[1:], ys[1:]):
        acc.update([gram_linear(x), gram_linear(y)], [gram_linear(y)])
    ab = np.mean([hsic_unbiased(gram_linear(x), gram_linear(y)) for x, y in zip(xs, ys)])
    aa = np.mean([hsic_unbiased(gram_linear(x), gram_linear(x)) for x in xs])
    bb = np.mean([hsic_unbiased(gram_linear(y), gram_linear(y)) for y in ys])
    assert acc.batches == 3 and acc.result()[0, 0] == pytest.approx(ab / np.sqrt(aa * bb), abs=1e-12)
    with pytest.raises(ValueError, match="fixed"):
        acc.update([gram_linear(xs[0][:8])] * 2, [gram_linear(ys[0][:8])])
    zero = MinibatchCKA()
    zero.update([np.zeros((8, 8))], [gram_linear(xs[0][:8])])
    assert np.isnan(zero.result()[0, 0])  # no representation (a dense slot with unit none)


def test_redundant_runs():
    names = [f"s{i}" for i in range(7)]
    m = np.eye(7)
    for i, v in enumerate([0.95, 0.92, 0.5, np.nan, 0.99, 0.9]):
        m[i, i + 1] = m[i + 1, i] = v
    runs = redundant_runs(m, names, threshold=0.9)
    assert [(r["first"], r["last"], r["length"]) for r in runs] == [("s0", "s2", 3), ("s4", "s5", 2)]
    assert runs[0]["slots"] == ["s0", "s1", "s2"] and runs[0]["min_adjacent_cka"] == pytest.approx(0.92)
    assert redundant_runs(m, names, threshold=0.99) == []
    assert [r["slots"] for r in redundant_runs(m, names, threshold=0.3)] == [
        ["s0", "s1", "s2", "s3"],
        ["s4", "s5", "s6"],
    ]


def test_heatmap_is_written_atomically(tmp_path):
    m = np.array([[1.0, 0.4], [np.nan, 0.8]])
    path = tmp_path / "cka.png"
    plot_cka_heatmap(m, ["a1", "a2"], ["b1", "b2"], path, "test")
    assert path.read_bytes()[:8] == PNG and [p.name for p in tmp_path.iterdir()] == ["cka.png"]


# ----------------------------------------------------------------------------- hooks and passes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(
        ModelConfig(name="tiny", growth=4, bottleneck_factor=1, stem_channels=4), num_classes=3
    ).eval()


def _batches(sizes=(6, 6, 6, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 4, 24, 24, generator=g) for n in sizes]


def test_slot_hooks_keep_only_grams(model):
    outputs = {}
    extra = [
        s.register_forward_hook(lambda m, a, o: outputs.__setitem__(m.name, o.detach())) for s in model.slots
    ]
    try:
        with SlotGrams(model) as sg, torch.no_grad():
            model(_batches((5,))[0])
            stored = list(sg.grams)
            held = [v for v in vars(sg).values() if isinstance(v, torch.Tensor)]
            grams = sg.pop()
    finally:
        for h in extra:
            h.remove()
    assert not held and all(
        isinstance(g, np.ndarray) and g.shape == (5, 5) and g.dtype == np.float64 for g in stored
    )
    for name, g in zip(model.slot_names, grams):
        assert outputs[name].dim() == 5
        assert np.allclose(g, gram_linear(outputs[name]), rtol=1e-12, atol=1e-12)
    assert sg.grams == [None] * model.num_slots and not model.slots[0]._forward_hooks


def test_cka_matrix_within_and_between_strategies(model):
    names = model.slot_names
    # block1.layer2 (dense) and transition1 with unit none: the dense one outputs zeros (CKA NaN), the
    # transition its channel-average skip (a representation)
    sa, sb = Strategy.uniform("S+ST", 6), Strategy.from_string("S|none|none|S+ST|ST|S")
    # the second strategy with its own BatchNorm statistics, on a copy of the module
    other = copy.deepcopy(model)
    other.apply_strategy(sb)
    recalibrate_bn(other, _batches((6, 6), seed=5))
    bn_b = bn_state(other)
    before = bn_state(model)
    mode = model.gate_mode

    within = cka_pass(model, model, sa, sa, _batches())
    assert within.batches == 3 and within.skipped_batches == 1 and within.skipped_samples == 3
    assert within.forward_passes == 3 and within.names_a == names
    assert np.allclose(np.diag(within.matrix), 1.0) and np.allclose(within.matrix, within.matrix.T)
    assert within.matrix.shape == (6, 6)

    one_module = cka_pass(model, model, sa, sb, _batches(), bn_a=before, bn_b=bn_b)
    assert one_module.forward_passes == 6
    two_modules = cka_matrix(model, other, sa, sb, _batches())
    assert np.allclose(one_module.matrix, two_modules, rtol=0, atol=1e-10, equal_nan=True)
    assert np.isnan(two_modules[:, 1]).all() and not np.isnan(np.delete(two_modules, 1, axis=1)).any()
    # the model is left as it was: gate mode, BatchNorm buffers
    assert model.gate_mode == mode and not model.training
    after = bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # deterministic
    assert np.array_equal(cka_matrix(model, model, sa, sa, _batches()), within.matrix)


# ----------------------------------------------------------------------------- the run stage


@pytest.fixture(scope="module")
def trained_run(tiny_motion, tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("cka_run")
    train(
        load_config(
            None, tiny_overrides(tiny_motion, tmp, **{"train.epochs": 1, "data.selection_fraction": 0.5})
        )
    )
    return tmp / "run"


def test_run_cka_writes_its_files(trained_run):
    run = trained_run
    info = run_cka(run, num_clips=8, batch_size=4, recal_clips=8)  # the selection split holds 8 videos
    for name in ("cka_within.png", "cka_between.png"):
        assert (run / name).read_bytes()[:8] == PNG
    assert json.loads((run / "cka.json").read_text()) == info
    df = pd.read_csv(run / "cka.csv")
    assert list(df.columns) == ["pair", "a_slot", "b_slot", "a_unit", "b_unit", "cka"]
    assert len(df) == 2 * 6 * 6 and set(df["pair"]) == {"within", "between"}
    within = df[df["pair"] == "within"].pivot(index="a_slot", columns="b_slot", values="cka")
    diag = np.diag(within.to_numpy())
    units = df[(df["pair"] == "within") & (df["a_slot"] == df["b_slot"])]
    assert (
        np.allclose(diag[~np.isnan(diag)], 1.0) and np.isnan(diag).sum() == (units["a_unit"] == "none").sum()
    )
    a, b = info["strategies"]["a"], info["strategies"]["b"]
    assert (
        a["source"].startswith("most_probable")
        and b["source"] == "all-S"
        and b["string"] == "|".join(["S"] * 6)
    )
    s = info["settings"]
    assert (s["clips_used"], s["minibatches"], s["dropped_clips"], s["batch_size"]) == (8, 2, 0, 4)
    assert s["recalibrate"] and s["recal_videos"] == 8 and s["forward_passes"] == 2 + 4
    assert isinstance(info["redundant_runs"], list) and info["views"].startswith(
        "selection split, first 8 views"
    )

    # with an Opt strategy from the analyze stage
    opt = Strategy.from_string("ST|S+ST|S|ST|none|S")
    opt.save(run / "opt_strategy.json")
    info = run_cka(run, strategies=("opt", "S+ST"), num_clips=7, batch_size=4, recalibrate=False)
    assert info["strategies"]["a"]["string"] == str(opt) and info["strategies"]["a"]["source"].startswith(
        "opt"
    )
    s = info["settings"]
    assert (s["recal_videos"], s["clips_used"], s["minibatches"], s["dropped_clips"]) == (0, 4, 1, 3)
