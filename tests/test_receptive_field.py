"""Static receptive fields: composition rules, brute force from input gradients, expectation, statistics."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fusion3d.analysis.receptive_field import (
    RF,
    AxisRF,
    Mark,
    Op,
    Par,
    compose,
    expected_temporal_rf,
    partial_correlation,
    partial_spearman,
    plot_rf_vs_accuracy,
    receptive_fields,
    rf_distribution,
    rf_graph,
    strategy_rf_columns,
    trace,
    unit_probabilities,
)
from fusion3d.models import Strategy
from fusion3d.models.spec import ModelConfig
from fusion3d.models.strategy import UNITS
from fusion3d.models.template import DenseSlot, TransitionSlot, build_model

PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- composition rules


def _t(graph) -> AxisRF:
    return compose(graph).t


def test_single_and_stacked_ops():
    assert _t([Op((3, 1, 1))]).r_max == 3
    assert _t([Op((3, 1, 1)), Op((3, 1, 1))]).r_max == 5
    rf = _t([Op((3, 1, 1), stride=(2, 1, 1)), Op((3, 1, 1))])  # r = 3 + 2 * 2
    assert (rf.r_max, rf.r_min, rf.jump) == (7, 7, 2)
    assert _t([Op((3, 1, 1), dilation=(2, 1, 1))]).r_max == 5
    # the ResNet stem: 7x7 stride 2, MaxPool 3x3 stride 2 -> 11 pixels, jump 4
    h = compose([Op((1, 7, 7), (1, 2, 2)), Op((1, 3, 3), (1, 2, 2))]).h
    assert (h.r_max, h.jump, h.lo, h.hi) == (11, 4, -5, 5)
    assert compose([]) == RF()


def test_padding_moves_the_window_but_not_its_size():
    a, b = _t([Op((3, 1, 1), padding=0)]), _t([Op((3, 1, 1))])
    assert a.r_max == b.r_max == 3 and (a.lo, a.hi) == (0, 2) and (b.lo, b.hi) == (-1, 1)


def test_parallel_branches_take_max_and_min():
    rf = _t([Par([[], [Op((3, 1, 1))]])])
    assert (rf.r_min, rf.r_max) == (1, 3)
    rf = _t([Par([[Op((3, 1, 1))], [Op((5, 1, 1))]]), Op((3, 1, 1))])
    assert (rf.r_min, rf.r_max) == (5, 7)
    # nested: a branch holding a Par
    rf = _t([Par([[], [Par([[Op((1, 1, 1))], [Op((3, 1, 1))]]), Op((3, 1, 1))]])])
    assert (rf.r_min, rf.r_max) == (1, 5)


def test_misaligned_branches_give_the_hull():
    # kernel 2 without / with padding: windows [i, i+1] and [i-1, i]; together 3 positions
    rf = _t([Par([[Op((2, 1, 1), padding=0)], [Op((2, 1, 1), padding=(1, 0, 0))]])])
    assert (rf.lo, rf.hi, rf.r_max, rf.r_min) == (-1, 1, 3, 2)


def test_branches_with_different_jumps_are_refused():
    with pytest.raises(ValueError, match="different jumps"):
        compose([Par([[], [Op((1, 1, 1), stride=(2, 1, 1))]])])


def test_op_from_torch_modules():
    assert Op.from_module(nn.Conv3d(2, 2, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2))) == Op(
        (3, 5, 5), (1, 2, 2), padding=(1, 2, 2)
    )
    assert Op.from_module(nn.MaxPool3d(3, stride=(1, 2, 2), padding=1)) == Op((3, 3, 3), (1, 2, 2), padding=1)
    assert Op.from_module(nn.AvgPool3d((1, 2, 2))) == Op((1, 2, 2), (1, 2, 2), padding=0)
    assert Op.from_module(nn.Conv3d(1, 1, 3, dilation=2, padding=2)).dilation == (2, 2, 2)


def test_trace_records_top_level_marks():
    marks = trace([Op((3, 1, 1)), Mark("a"), [Op((3, 1, 1)), Mark("b")], Par([[Mark("hidden")]])])
    assert [(m.name, rf.t.r_max) for m, rf in marks] == [("a", 3), ("b", 5)]


# ----------------------------------------------------------------------------- the template


def _tiny(**kw):
    cfg = ModelConfig(name="tiny", conv_impl="conv3d", **kw)
    return build_model(cfg, num_classes=3)


def test_tiny_preset_head_receptive_fields():
    model = _tiny()  # stem 1x5x5 stride 2 + MaxPool 3x3x3 stride (1, 2, 2); blocks [2, 3]: 6 slots
    cols = {u: strategy_rf_columns(model, Strategy.uniform(u, 6)) for u in UNITS}
    # all-S: only the stem (1) and the max pool (+2) see time; every unit S+ST / ST adds 2 on the longest chain
    assert cols["S"] == {"rf_t_min": 3, "rf_t_max": 3, "rf_s_min": 13, "rf_s_max": 77}
    assert cols["ST"] == {"rf_t_min": 5, "rf_t_max": 15, "rf_s_min": 13, "rf_s_max": 77}
    assert cols["S+ST"] == {"rf_t_min": 3, "rf_t_max": 15, "rf_s_min": 13, "rf_s_max": 77}
    assert cols["none"] == {"rf_t_min": 3, "rf_t_max": 3, "rf_s_min": 13, "rf_s_max": 13}
    assert strategy_rf_columns(model, None) == cols["S+ST"]


def test_receptive_field_table():
    model = _tiny()
    df = receptive_fields(model, "S|ST|none|S+ST|ST|S")
    assert list(df["slot"]) == model.slot_names + ["head"]
    assert list(df["unit"]) == ["S", "ST", "none", "S+ST", "ST", "S", ""]
    assert list(df["t_max"]) == [3, 5, 5, 7, 9, 9, 9]
    assert list(df["t_min"]) == [3, 3, 3, 3, 3, 3, 3]
    assert list(df["s_max"]) == [17, 25, 29, 45, 61, 77, 77]
    assert (df["s_max"] == df["w_max"]).all() and (df["s_min"] == df["w_min"]).all()
    assert list(df["s_jump"]) == [4, 4, 8, 8, 8, 8, 8] and (df["t_jump"] == 1).all()


class _Backbone:
    """A stand-in network describing itself with ``rf_graph``: residual slots Par([identity, path])."""

    slot_names = ["r1", "r2"]
    num_slots = 2

    def rf_graph(self, strategy):
        g = [Op((5, 7, 7), (1, 2, 2))]
        for name, unit in zip(self.slot_names, strategy):
            paths = [[Op((1, 1, 1))]] * (unit in ("S", "S+ST")) + [[Op((3, 1, 1))]] * (unit in ("ST", "S+ST"))
            g += [Par([[], [Par(paths), Op((1, 3, 3))]])] if paths else []
            g.append(Mark(name, unit))
        return g + [Mark("head")]

    def drop_probs(self):
        return torch.tensor([[0.3, 0.6], [0.5, 0.2]])


def test_models_with_their_own_graph_are_used():
    df = receptive_fields(_Backbone(), "ST|S")
    assert list(df["slot"]) == ["r1", "r2", "head"] and list(df["t_max"]) == [7, 7, 7]
    assert list(df["s_max"]) == [11, 15, 15] and list(df["t_min"]) == [5, 5, 5]
    with pytest.raises(TypeError, match="rf_graph"):
        receptive_fields(nn.Linear(2, 2))


# ----------------------------------------------------------------------------- brute force from gradients


def _positive_template():
    """The tiny layout (stem 1x5x5 / 2, pool, blocks [2, 3]) at width 4, linear with positive weights:
    conv weights |w|, BN in eval with default statistics (a positive scale), positive activations (so
    ReLU is the identity) and the stem MaxPool replaced by an AvgPool of the same geometry (a max
    sends the gradient to one position). Every input position a feature depends on then gets a
    strictly positive gradient."""
    torch.manual_seed(0)
    model = _tiny(growth=4, bottleneck_factor=1, stem_channels=4).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 5:
                p.abs_().add_(1e-3)
    pool = model.stem.pool
    model.stem.pool = nn.AvgPool3d(pool.kernel_size, pool.stride, pool.padding)
    return model


def _window(n_out: int, n_in: int, rf: AxisRF) -> int:
    """The output index closest to the middle whose whole window lies inside the input."""
    ok = [i for i in range(n_out) if i * rf.jump + rf.lo >= 0 and i * rf.jump + rf.hi <= n_in - 1]
    assert ok, "input too small for this receptive field"
    return min(ok, key=lambda i: abs(i * rf.jump + (rf.lo + rf.hi) / 2 - (n_in - 1) / 2))


def _brute_force(model, strategy, shape=(21, 81, 81)):
    """Per mark (slot outputs and head): the input positions (first, last) with a nonzero gradient
    along T, H, W, and the predicted ones, for the output position chosen by ``_window``."""
    model.apply_strategy(strategy)
    feats = {}
    hooks = []
    for slot in model.slots:
        if isinstance(slot, DenseSlot):  # the running feature map: the layer's input and new channels
            hooks.append(slot.register_forward_hook(lambda m, a, o: feats.__setitem__(m.name, (a[0], o))))
        else:
            assert isinstance(slot, TransitionSlot)
            hooks.append(slot.register_forward_hook(lambda m, a, o: feats.__setitem__(m.name, (o,))))
    hooks.append(model.features.register_forward_hook(lambda m, a, o: feats.__setitem__("head", (o,))))
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(1, 3, *shape, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for mark, rf in trace(rf_graph(model, strategy)):
        tensors = feats[mark.name]
        size = tensors[0].shape[2:]
        idx = [_window(size[a], shape[a], rf.axis(ax)) for a, ax in enumerate(("t", "h", "w"))]
        scalar = sum(f[0, :, idx[0], idx[1], idx[2]].sum() for f in tensors)
        (grad,) = torch.autograd.grad(scalar, x, retain_graph=True)
        support = grad[0].abs().sum(0) > 0
        measured, predicted = [], []
        for a, ax in enumerate(("t", "h", "w")):
            other = tuple(d for d in range(3) if d != a)
            nz = torch.nonzero(support.any(dim=other[1]).any(dim=other[0])).flatten()
            measured.append((int(nz.min()), int(nz.max())))
            r = rf.axis(ax)
            predicted.append((idx[a] * r.jump + r.lo, idx[a] * r.jump + r.hi))
        out[mark.name] = (measured, predicted, rf)
    model.apply_strategy(None)
    return out


def _shortest(model, strategy: Strategy) -> Strategy:
    """The sub-network of the shortest path: identity at dense layers, the S path at transitions if kept."""
    units = []
    for slot, unit in zip(model.slots, strategy):
        if slot.kind == "dense":
            units.append("none")
        else:
            units.append("S" if unit in ("S", "S+ST") else unit)
    return Strategy(tuple(units))


STRATEGIES = [
    "S",
    "ST",
    "S+ST",
    "none",
    "S|ST|none|S+ST|ST|S",
    "none|S+ST|ST|S|none|ST",
    "ST|none|S+ST|ST|ST|none",
]


@pytest.fixture(scope="module")
def positive_model():
    return _positive_template()


@pytest.mark.parametrize("spec", STRATEGIES)
def test_gradient_support_matches_the_static_receptive_field(positive_model, spec):
    model = positive_model
    strategy = Strategy.uniform(spec, 6) if spec in UNITS else Strategy.from_string(spec)
    for name, (measured, predicted, _) in _brute_force(model, strategy).items():
        assert measured == predicted, f"{spec} at {name}"
    # r_min: the receptive field of the shortest path is the whole receptive field of the sub-network
    # made of that path alone (dense layers as identity, transitions on their S path when it is kept)
    short = _brute_force(model, _shortest(model, strategy))
    table = receptive_fields(model, strategy).set_index("slot")
    for name, (measured, _, rf) in short.items():
        assert rf.t.r_max == rf.t.r_min and rf.h.r_max == rf.h.r_min  # one path only
        assert measured[0][1] - measured[0][0] + 1 == table.loc[name, "t_min"], f"{spec} at {name}"
        assert measured[1][1] - measured[1][0] + 1 == table.loc[name, "s_min"], f"{spec} at {name}"


# ----------------------------------------------------------------------------- under the drop probabilities


def test_unit_probabilities_sum_to_one():
    p = np.array([[0.1, 0.9], [0.5, 0.5], [0.0, 1.0]])
    u = unit_probabilities(p)
    assert np.allclose(u.sum(1), 1.0)
    assert np.allclose(u[0], [0.9 * 0.9, 0.1 * 0.1, 0.9 * 0.1, 0.1 * 0.9]) and np.allclose(u[2], [1, 0, 0, 0])


def _enumerate(model, drop_probs) -> dict[str, dict[int, float]]:
    """Distribution of every head column over all 4^L strategies, by brute-force enumeration."""
    probs = unit_probabilities(drop_probs)
    out: dict[str, dict[int, float]] = {}
    for units in itertools.product(range(4), repeat=model.num_slots):
        pr = float(np.prod([probs[i, u] for i, u in enumerate(units)]))
        for key, v in strategy_rf_columns(model, Strategy(tuple(UNITS[u] for u in units))).items():
            out.setdefault(key, {})
            out[key][v] = out[key].get(v, 0.0) + pr
    return out


def test_expected_temporal_rf_matches_enumeration_of_all_strategies():
    model = _tiny()  # 6 slots: 4096 strategies
    drop = np.random.default_rng(3).uniform(0.05, 0.95, (6, 2))
    enumerated = _enumerate(model, drop)
    for key, axis, stat in (
        ("rf_t_max", "t", "max"),
        ("rf_t_min", "t", "min"),
        ("rf_s_max", "h", "max"),
        ("rf_s_min", "h", "min"),
    ):
        exact = enumerated[key]
        dp = rf_distribution(model, drop, axis, stat)
        assert dp.keys() == exact.keys()
        assert np.allclose([dp[k] for k in exact], list(exact.values()), rtol=0, atol=1e-12)
    expected = sum(k * v for k, v in enumerated["rf_t_max"].items())
    assert expected_temporal_rf(model, drop) == pytest.approx(expected, abs=1e-10)
    # closed form for the template: 3 (stem + pool) + 2 per kept T path
    assert expected == pytest.approx(3 + 2 * (1 - drop[:, 1]).sum(), abs=1e-10)


def test_expected_temporal_rf_uses_the_learned_drop_probabilities():
    model = _tiny()
    with torch.no_grad():
        for i, slot in enumerate(model.slots):
            slot.gate_t.logit.fill_(-2.0 + i)
    q_t = 1 - model.drop_probs()[:, 1].double().numpy()
    assert expected_temporal_rf(model) == pytest.approx(3 + 2 * q_t.sum(), abs=1e-6)
    # a network with its own graph: residual slots, enumeration of the 16 strategies
    bb = _Backbone()
    exact = {}
    probs = unit_probabilities(bb.drop_probs().numpy())
    for units in itertools.product(range(4), repeat=2):
        t = receptive_fields(bb, [UNITS[u] for u in units])["t_max"].iloc[-1]
        exact[t] = exact.get(t, 0.0) + probs[0, units[0]] * probs[1, units[1]]
    dist = rf_distribution(bb)
    assert dist.keys() == exact.keys() and np.allclose(list(dist.values()), [exact[k] for k in dist])


# ----------------------------------------------------------------------------- statistics and figure


def test_partial_correlation_closed_forms():
    rng = np.random.default_rng(0)
    x, y, z = rng.normal(size=(3, 50))
    assert partial_correlation(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    r = np.corrcoef([x, y, z])
    formula = (r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    assert partial_correlation(x, y, z) == pytest.approx(formula, abs=1e-12)
    # x and y share only z: exactly 0 once z is regressed out, strongly correlated before
    z = np.arange(20.0)
    q, _ = np.linalg.qr(np.column_stack([np.ones(20), z, rng.normal(size=(20, 2))]))
    x, y = 3 * z + q[:, 2], -0.5 + 2 * z + q[:, 3]
    assert partial_correlation(x, y) > 0.99 and abs(partial_correlation(x, y, z)) < 1e-12
    # the same residual: 1 (or -1), whatever z contributed
    e = rng.normal(size=20)
    assert partial_correlation(2 * z + e, 7 - z + e, z) == pytest.approx(1.0)
    assert partial_correlation(2 * z + e, 7 - z - e, z) == pytest.approx(-1.0)
    # several control variables
    z2 = np.column_stack([z, z**2])
    q, _ = np.linalg.qr(np.column_stack([np.ones(20), z2, rng.normal(size=(20, 2))]))
    assert abs(partial_correlation(z**2 + q[:, 3], z + q[:, 4], z2)) < 1e-12
    assert np.isnan(partial_correlation(z, 2 * z, z))  # nothing left after regressing z out


def test_partial_spearman_works_on_ranks():
    assert partial_spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)  # 1 - 6 * 4 / (5 * 24)
    rng = np.random.default_rng(1)
    x, y, z = rng.normal(size=(3, 40))
    base = partial_spearman(x, y, z)
    assert partial_spearman(np.exp(x), y**3, 5 * z + 1) == pytest.approx(base, abs=1e-12)
    assert base == pytest.approx(
        partial_correlation(pd.Series(x).rank(), pd.Series(y).rank(), pd.Series(z).rank())
    )
    with pytest.raises(ValueError):
        partial_correlation(x, y, method="kendall")


def test_plot_rf_vs_accuracy(tmp_path):
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"rf_t_max": rng.integers(3, 16, 30), "macs": rng.uniform(1e8, 3e8, 30)})
    df["top1_after"] = 2 * df["rf_t_max"] + rng.normal(size=30)
    df.loc[3, "top1_after"] = np.nan
    path = tmp_path / "rf_vs_acc.png"
    stats = plot_rf_vs_accuracy(df, path, "top1_after")
    assert path.read_bytes()[:8] == PNG and [p.name for p in tmp_path.iterdir()] == ["rf_vs_acc.png"]
    d = df.dropna()
    assert stats["n"] == 29
    assert stats["pearson_r"] == pytest.approx(np.corrcoef(d["rf_t_max"], d["top1_after"])[0, 1])
    assert stats["partial_r_macs"] == pytest.approx(
        partial_correlation(d["rf_t_max"], d["top1_after"], d["macs"])
    )
