"""BatchNorm recalibration: exact cumulative statistics, gates untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fusion3d.engine.bn import bn_state, load_bn_state, pooled_statistics, recalibrate_bn
from fusion3d.models import Strategy, build_model
from fusion3d.models.spec import ModelConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    torch.set_num_threads(1)  # the machine is shared: one thread is fastest and steadiest


class Toy(nn.Module):
    """A fixed linear map, then BatchNorm1d; a fixed 1x1x1 conv, then BatchNorm3d; dropout."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn1 = nn.BatchNorm1d(4, momentum=0.3)
        self.conv = nn.Conv3d(2, 3, 1)
        self.bn3 = nn.BatchNorm3d(3, momentum=0.2)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):  # x: (N, 2, T, H, W)
        flat = x.mean((2, 3, 4))
        self.bn1(self.lin(torch.cat([flat, flat[:, :1]], 1)))
        return self.drop(self.bn3(self.conv(x)))


def _batches(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 2, 3, 4, 5, generator=g) * 3.0 + 1.5 for n in sizes]


def _exact(values: torch.Tensor):
    """Per-channel mean and unbiased variance over every dim but 1."""
    c = values.shape[1]
    v = values.transpose(0, 1).reshape(c, -1).double()
    return v.mean(1), v.var(1, unbiased=True)


def test_running_stats_equal_exact_sample_weighted_statistics_with_unequal_batches():
    torch.manual_seed(0)
    model = Toy()
    for m in (model.bn1, model.bn3):
        m.running_mean.fill_(7.0)
        m.running_var.fill_(9.0)
    batches = _batches([5, 2, 9, 3])
    info = recalibrate_bn(model, batches, "cpu")
    allx = torch.cat(batches)
    with torch.no_grad():
        conv_out = model.conv(allx)
        flat = allx.mean((2, 3, 4))
        lin_out = model.lin(torch.cat([flat, flat[:, :1]], 1))
    for bn, values in ((model.bn3, conv_out), (model.bn1, lin_out)):
        mean, var = _exact(values)
        assert torch.allclose(bn.running_mean.double(), mean, atol=1e-5)
        assert torch.allclose(bn.running_var.double(), var, rtol=1e-5)
        assert int(bn.num_batches_tracked) == 4
    assert info == {"batches": 4, "samples": 19, "bn_layers": 2, "bn_updated": 2}


def test_exact_statistics_differ_from_torch_batch_weighted_cumulative_average():
    # the reason for the hooks: momentum=None averages batches equally, not samples
    torch.manual_seed(0)
    model = Toy()
    batches = _batches([8, 2], seed=3)
    ref = Toy()
    ref.load_state_dict(model.state_dict())
    ref.bn3.reset_running_stats()
    ref.bn3.momentum = None
    ref.train()
    with torch.no_grad():
        for b in batches:
            ref(b)
    recalibrate_bn(model, batches, "cpu")
    assert not torch.allclose(model.bn3.running_mean, ref.bn3.running_mean, atol=1e-3)


def test_recalibration_restores_momentum_and_eval_mode():
    model = Toy().train()
    recalibrate_bn(model, _batches([3, 4]), "cpu")
    assert model.bn1.momentum == 0.3 and model.bn3.momentum == 0.2
    assert not any(m.training for m in model.modules())


def test_recalibration_reads_dict_batches_and_stops_at_max_batches():
    model = Toy()
    batches = [{"clip": b, "label": 0} for b in _batches([4, 4, 4])]
    info = recalibrate_bn(model, batches, "cpu", max_batches=2)
    mean, _ = _exact(model.conv(torch.cat([b["clip"] for b in batches[:2]])).detach())
    assert info["batches"] == 2 and torch.allclose(model.bn3.running_mean.double(), mean, atol=1e-5)


def _tiny_template():
    torch.manual_seed(0)
    return build_model(ModelConfig(name="tiny"), num_classes=3)


def test_recalibration_keeps_the_hard_strategy_and_leaves_dropped_paths_untouched():
    model = _tiny_template()
    n = model.num_slots
    strategy = Strategy(tuple(["ST"] * (n - 1) + ["none"]))
    model.apply_strategy(strategy)
    s_path_bn = model.slots[0].path_s.norm
    before = (s_path_bn.running_mean.clone(), s_path_bn.running_var.clone())
    clips = [torch.randn(2, 3, 4, 24, 24) for _ in range(2)]
    info = recalibrate_bn(model, clips, "cpu")
    assert model.gate_mode == "hard" and model.current_strategy() == strategy
    assert all(g.mode == "hard" for g in model.gates())
    assert torch.equal(s_path_bn.running_mean, before[0]) and torch.equal(s_path_bn.running_var, before[1])
    assert model.slots[0].path_t.norm.num_batches_tracked.item() == 2
    assert 0 < info["bn_updated"] < info["bn_layers"]


def test_recalibration_covers_batchnorm3d_of_the_template_and_sync_batchnorm():
    model = _tiny_template()
    model.apply_strategy(Strategy.uniform("S+ST", model.num_slots))
    clips = [torch.randn(3, 3, 4, 24, 24) for _ in range(2)]
    recalibrate_bn(model, clips, "cpu")
    stem_in = torch.cat(clips)
    with torch.no_grad():
        mean, var = _exact(model.stem.conv(stem_in))
    assert isinstance(model.stem.norm, nn.BatchNorm3d)
    assert torch.allclose(model.stem.norm.running_mean.double(), mean, atol=1e-4)
    assert torch.allclose(model.stem.norm.running_var.double(), var, rtol=1e-4)
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(Toy())
    info = recalibrate_bn(sync, _batches([2, 3]), "cpu")
    assert info["bn_updated"] == 2


def test_bn_state_round_trip_restores_the_template_statistics():
    model = _tiny_template()
    saved = bn_state(model)
    recalibrate_bn(model, [torch.randn(2, 3, 4, 24, 24)], "cpu")
    assert not torch.equal(model.stem.norm.running_mean, saved["stem.norm.running_mean"])
    load_bn_state(model, saved)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(KeyError):
        load_bn_state(model, {"nope.running_mean": torch.zeros(1)})


def test_pooled_statistics_of_batches_are_the_statistics_of_all_their_values():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, 4, 5, generator=g) * 2.0 + 1.0 for n in (5, 2, 7)]
    counts = [b.numel() // b.shape[1] for b in batches]
    means = [_exact(b)[0].float() for b in batches]
    variances = [_exact(b)[1].float() for b in batches]  # unbiased, as BatchNorm's momentum-1 buffers
    mean, var = pooled_statistics(counts, means, variances)
    ref_mean, ref_var = _exact(torch.cat(batches))
    assert mean.dtype == var.dtype == torch.float64
    torch.testing.assert_close(mean, ref_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var, ref_var, rtol=1e-6, atol=1e-6)
