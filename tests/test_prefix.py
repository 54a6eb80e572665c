"""Prefix-shared scoring (fusion3d.engine.prefix): the same predictions and the same recalibrated
statistics as scoring one strategy at a time."""

from __future__ import annotations

import pytest
import torch

from fusion3d.engine.bn import bn_state, load_bn_state, recalibrate_bn
from fusion3d.engine.evaluate import predict, video_scores
from fusion3d.engine.prefix import merged_steps, score_shared, shared_bn_stats, shared_predictions, tree_nodes
from fusion3d.models import Strategy, build_model
from fusion3d.models.network import ForwardStep, SlotNetwork
from fusion3d.models.spec import ModelConfig


def _template(name="tiny", **kw):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, **kw), num_classes=4)
    model.train()
    with torch.no_grad():  # template statistics that are not the initial ones
        model(torch.randn(4, 3, 4, 32, 32) * 1.5 + 0.3)
    return model.eval()


def _data(seed=0):
    """Selection batches (clip, label, video) with 2 views per video, and recalibration batches of
    unequal sizes (the last one short, as a loader's)."""
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(10, 3, 4, 32, 32, generator=g)
    labels = torch.randint(0, 4, (10,), generator=g)
    videos = torch.arange(10) // 2
    selection = [(clips[i : i + 4], labels[i : i + 4], videos[i : i + 4]) for i in range(0, 10, 4)]
    recal = [torch.randn(n, 3, 4, 32, 32, generator=g) * 1.2 + 0.1 for n in (4, 4, 3)]
    return selection, recal


def _strategies(model):
    n = model.num_slots
    units = [
        ("S",) * n,
        ("ST",) * n,
        ("S+ST",) * n,
        ("S", "ST") + ("S+ST",) * (n - 2),
        ("S", "ST") + ("none",) * (n - 2),
        ("S", "none") + ("ST",) * (n - 2),
        ("none",) * n,
        ("S+ST", "S") + ("S", "ST") * ((n - 2) // 2) + ("S",) * ((n - 2) % 2),
    ]
    return [Strategy(u) for u in units]


def _one_at_a_time(model, strategy, selection, recal):
    """What StrategyScorer.score does: template statistics, predict; recalibrate, predict."""
    template = bn_state(model)
    load_bn_state(model, template)
    model.apply_strategy(strategy)
    before = predict(model, selection, torch.device("cpu"))
    recalibrate_bn(model, recal, "cpu")
    stats = bn_state(model)
    after = predict(model, selection, torch.device("cpu"))
    load_bn_state(model, template)
    return before, after, stats


@pytest.mark.parametrize("name,kw", [("tiny", {}), ("resnet18_3d", {"width_mult": 0.25})])
def test_shared_predictions_equal_one_strategy_at_a_time(name, kw):
    model = _template(name, **kw)
    selection, recal = _data()
    strategies = _strategies(model)
    template = bn_state(model)
    before, after, labels, videos = shared_predictions(model, strategies, selection, "cpu", recal)
    assert all(torch.equal(v, template[k]) for k, v in bn_state(model).items())  # statistics put back
    for k, strategy in enumerate(strategies):
        ref_before, ref_after, _ = _one_at_a_time(model, strategy, selection, recal)
        assert torch.equal(before[k], ref_before[0]), strategy  # the same module calls: bitwise
        torch.testing.assert_close(after[k], ref_after[0], rtol=1e-5, atol=1e-6)
        assert torch.equal(labels, ref_before[1]) and torch.equal(videos, ref_before[2])


def test_shared_recalibrated_statistics_equal_recalibrate_bn():
    model = _template()
    selection, recal = _data(1)
    strategies = _strategies(model)
    shared = shared_bn_stats(model, strategies, recal, "cpu")
    template = bn_state(model)
    for strategy, stats in zip(strategies, shared):
        *_, ref = _one_at_a_time(model, strategy, selection, recal)
        # the layers the sub-network computes: the ones recalibrate_bn changed
        changed = {
            k.rsplit(".", 1)[0]
            for k in ref
            if k.endswith("running_mean") and not torch.equal(ref[k], template[k])
        }
        assert set(stats) == changed, strategy
        for name, (mean, var) in stats.items():
            torch.testing.assert_close(mean, ref[f"{name}.running_mean"], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(var, ref[f"{name}.running_var"], rtol=1e-5, atol=1e-6)


def test_a_strategy_scores_the_same_in_any_group_and_any_chunking():
    model = _template()
    selection, recal = _data(2)
    strategies = _strategies(model)
    all_b, all_a, *_ = shared_predictions(model, strategies, selection, "cpu", recal)
    for group in ([strategies[3]], [strategies[5], strategies[3], strategies[3]]):
        b, a, *_ = shared_predictions(model, group, selection, "cpu", recal)
        k = strategies.index(group[-1])
        assert torch.equal(b[-1], all_b[k]) and torch.equal(a[-1], all_a[k])
    # chunks of one batch (a tiny memory budget): the same numbers
    b, a, *_ = shared_predictions(model, strategies, selection, "cpu", recal, cache_mb=1e-6)
    assert all(torch.equal(u, v) for u, v in zip(b, all_b)) and all(
        torch.equal(u, v) for u, v in zip(a, all_a)
    )


def test_score_shared_gives_per_video_scores_and_none_without_recalibration():
    model = _template()
    selection, recal = _data(3)
    strategies = _strategies(model)[:3]
    with_recal = score_shared(model, strategies, selection, "cpu", recal)
    plain = score_shared(model, strategies, selection, "cpu")
    before, *_ = shared_predictions(model, strategies, selection, "cpu")
    labels = torch.cat([b[1] for b in selection])
    videos = torch.cat([b[2] for b in selection])
    for (b, a), (pb, pa), probs in zip(with_recal, plain, before):
        assert a is not None and pa is None and b == pb
        assert b == video_scores(probs, labels, videos) and b.videos == 5 and b.views == 10
    assert score_shared(model, [], selection, "cpu", recal) == []


def test_the_prefix_tree_shares_the_first_slots():
    model = _template()
    steps = merged_steps(model)
    strategies = _strategies(model)
    assert [s.slots for s in steps] == sorted({s.slots for s in steps})  # equal slots merged
    nodes = tree_nodes(strategies, steps)
    assert nodes < len(strategies) * len(steps)
    assert tree_nodes(strategies[:1], steps) == len(steps)
    # the stem (no slot) is one node for any number of strategies
    assert len({s.units[: steps[0].slots] for s in strategies}) == 1


def test_a_network_without_steps_is_scored_whole():
    model = _template()

    class Whole(type(model)):
        forward_steps = SlotNetwork.forward_steps  # the default: one step, the whole forward

    model.__class__ = Whole
    assert len(merged_steps(model)) == 1
    selection, recal = _data(4)
    strategies = _strategies(model)[:4]
    before, after, *_ = shared_predictions(model, strategies, selection, "cpu", recal)
    for k, strategy in enumerate(strategies):
        ref_before, ref_after, _ = _one_at_a_time(model, strategy, selection, recal)
        assert torch.equal(before[k], ref_before[0])
        torch.testing.assert_close(after[k], ref_after[0], rtol=1e-5, atol=1e-6)


def test_steps_that_share_a_batchnorm_layer_are_refused():
    model = _template()

    def rest(x):  # the stem's BatchNorm again, in a later step
        return model.head(model.features(model.stem.norm(x)))

    model.forward_steps = lambda: [ForwardStep(0, model.stem), ForwardStep(model.num_slots, rest)]
    selection, recal = _data(5)
    with pytest.raises(ValueError, match="more than one forward step"):
        shared_predictions(model, _strategies(model)[:2], selection, "cpu", recal)
