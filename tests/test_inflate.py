"""2D -> 3D inflation (fusion3d/models/inflate.py, docs/method.md §9).

The 2D reference networks are built here from torch primitives (nn.Conv2d, nn.BatchNorm2d, ...) with
torchvision's state-dict key names: torchvision is not installed, and nothing is downloaded. They are
small where the fusion3d constructors allow it (``width_mult``; the template's ``growth``, ``blocks``
and ``stem_channels``), and full size for densenet121 and resnet50. Their weights are random, and so
are their BatchNorm statistics. The running statistics are first measured on a random batch, so that
activations stay of order one through 30+ blocks, and then randomly shifted and scaled. The BN affine
parameters are random too.

The identity: an all-S network on a clip of ONE REPEATED FRAME gives, at frame t, the 2D network's
features of that frame, at every frame t whose temporal receptive field lies inside the clip.

The end frames. The stem conv (5x7x7 for the ResNets and the paper's template, 3x3x3 for MobileNetV2)
pads time with zeros. At the first and last kt // 2 frames, part of its kernel (the 2D kernel / kt,
repeated) falls on that padding, so the stem's output there is only a fraction of the 2D output. The
stem's 3x3x3 max pool (time stride 1) spreads this one frame further; its own padding is -inf and
changes nothing. The frames that are inside are read from the network's own receptive-field
description: ``model.rf_graph(strategy)`` gives lo and hi, and frame t is inside when t + lo >= 0 and
t + hi <= T - 1. The test checks these frames against hand-computed ones. The first and last frames are
asserted to differ, so the exclusion is needed. Frames just outside the receptive field may still
agree, because the max pool keeps the largest value of its window, which is usually an interior one.
The receptive field marks where the identity is guaranteed. A per-frame stem (the template with a 1x7x7
stem) matches at every frame. Time is never strided in these networks, so the identity holds for every
stem option; the CPU stem (stride 1, no pool) is tested too.

Precision. The comparisons run in float64: the 2D reference is randomised in float64, and the 3D
network is cast before inflation, so kernel / kt is computed in float64 too. With random weights, a
deep network's own float32 rounding exceeds the tolerance: resnet50 at width 0.25 gives features that
differ by 6e-4 between float32 and float64, at values up to 24. In float64, inflated and 2D networks
agree to about 1e-11, so the tolerance of 1e-4 measures the mapping, not the rounding. One float32
check on a shallow network is included as well.

All-ST. The T path holds the 2D kernel repeated along time and divided by 3, so on a static clip it
computes what the S path computes. An all-ST network therefore reproduces the 2D features too, at the
frames whose larger receptive field stays inside the clip. This is tested for the basic block's 3x3x3
T path, for MobileNetV2 and for the template.
"""

from __future__ import annotations

import argparse
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion3d.config import load_config
from fusion3d.models import create
from fusion3d.models.inflate import InflationError, detect_2d, inflate_2d, state_dict_2d
from fusion3d.models.registry import build_model
from fusion3d.models.rf_graph import compose
from fusion3d.models.spec import ModelConfig

TOL = 1e-4

# ---- 2D reference networks with torchvision's key names ------------------------------------------


def _round(c: float) -> int:  # fusion3d's width rounding (torchvision's widths at width_mult = 1)
    return max(1, int(round(c)))


class Basic2D(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, groups: int = 1, wpg: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck2D(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, groups: int = 1, wpg: int = 64) -> None:
        super().__init__()
        width = groups * max(1, int(planes * wpg / 64))  # torchvision: int(planes * wpg / 64) * groups
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(h)))))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class ResNet2D(nn.Module):
    """torchvision's ResNet / ResNeXt (keys conv1, bn1, layerI.J.*, downsample.0/1, fc)."""

    def __init__(self, block, layers, groups=1, wpg=64, m=1.0, classes=1000, stem_stride=2, stem_pool=True):
        super().__init__()
        c = _round(64 * m)
        self.conv1 = nn.Conv2d(3, c, 7, stem_stride, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        for i, (n, base) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            planes, blocks = _round(base * m), []
            for j in range(n):
                blocks.append(block(c, planes, 2 if i > 1 and j == 0 else 1, groups, wpg))
                c = planes * block.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c, classes)

    def features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class DenseLayer2D(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class DenseBlock2D(nn.ModuleDict):
    def forward(self, x):
        feats = [x]
        for layer in self.values():
            feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class DenseNet2D(nn.Module):
    """torchvision's DenseNet (keys features.conv0 / norm0, features.denseblockB.denselayerL.norm1 /
    conv1 / norm2 / conv2, features.transitionB.norm / conv, features.norm5, classifier)."""

    def __init__(self, growth=32, blocks=(6, 12, 24, 16), init=64, bn_size=4, classes=1000):
        super().__init__()
        feats = OrderedDict(
            conv0=nn.Conv2d(3, init, 7, 2, 3, bias=False),
            norm0=nn.BatchNorm2d(init),
            relu0=nn.ReLU(),
            pool0=nn.MaxPool2d(3, 2, 1),
        )
        c = init
        for b, n in enumerate(blocks, start=1):
            layers = {}
            for i in range(1, n + 1):
                layers[f"denselayer{i}"] = DenseLayer2D(c, growth, bn_size)
                c += growth
            feats[f"denseblock{b}"] = DenseBlock2D(layers)
            if b < len(blocks):
                feats[f"transition{b}"] = nn.Sequential(
                    OrderedDict(
                        norm=nn.BatchNorm2d(c),
                        relu=nn.ReLU(),
                        conv=nn.Conv2d(c, c // 2, 1, bias=False),
                        pool=nn.AvgPool2d(2, 2),
                    )
                )
                c //= 2
        feats["norm5"] = nn.BatchNorm2d(c)
        self.features = nn.Sequential(feats)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        return self.classifier(F.relu(self.features(x)).mean((2, 3)))


def make_divisible(v: float, d: int = 8) -> int:  # torchvision's _make_divisible
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def _cbr(cin, cout, k, stride=1, groups=1) -> nn.Sequential:  # torchvision's Conv2dNormActivation
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
    )


class InvertedResidual2D(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = int(round(cin * t))
        self.res = stride == 1 and cin == cout
        layers = [_cbr(cin, hidden, 1)] if t != 1 else []
        layers += [_cbr(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False)]
        self.conv = nn.Sequential(*layers, nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class MobileNetV2_2D(nn.Module):
    """torchvision's MobileNetV2 (keys features.0.0 / 0.1, features.N.conv.*, features.18.0 / 18.1,
    classifier.1)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip

    def __init__(self, m=1.0, classes=1000):
        super().__init__()
        c, last = make_divisible(32 * m), make_divisible(1280 * max(1.0, m))
        feats = [_cbr(3, c, 3, 2)]
        for t, ch, n, s in self.SETTINGS:
            out = make_divisible(ch * m)
            for j in range(n):
                feats.append(InvertedResidual2D(c, out, s if j == 0 else 1, t))
                c = out
        feats.append(_cbr(c, last, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


# ---- random weights and BatchNorm statistics -----------------------------------------------------


def randomise(net: nn.Module, size: int, seed: int = 0) -> nn.Module:
    """Random conv / linear weights (Kaiming), random BN affine parameters, and random BN running
    statistics: measured on a random batch (cumulative average), then shifted by up to ~0.3 standard
    deviations and scaled by 0.7-1.4. Returns the network in eval mode, in float64."""
    g = torch.Generator().manual_seed(seed)
    net = net.double()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=g))
                mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=g))
                mod.momentum = None
            elif isinstance(mod, nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) / math.sqrt(mod.in_features))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
        net.train()
        net(torch.randn(4, 3, size, size, generator=g, dtype=torch.float64))
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                sd = mod.running_var.sqrt()
                mod.running_mean.add_(0.15 * sd * torch.randn(sd.shape, generator=g))
                mod.running_var.mul_(0.7 + 0.7 * torch.rand(sd.shape, generator=g))
    return net.eval()


# ---- the 3D networks' per-frame features ---------------------------------------------------------


def features_3d(model: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    """(N, C, T, h, w): the last feature map before the global pool (what the 2D ``features`` gives,
    after the template's and MobileNetV2's last BN - activation)."""
    x = model.stem(clip)
    if hasattr(model, "stage_names"):
        for name in model.stage_names:
            x = getattr(model, name)(x)
    else:
        x = model.features(x)
    for name in ("conv", "norm", "relu"):
        if hasattr(model.head, name):
            x = getattr(model.head, name)(x)
    return x


def features_2d(net: nn.Module, frame: torch.Tensor) -> torch.Tensor:
    if isinstance(net, ResNet2D):
        return net.features(frame)
    if isinstance(net, DenseNet2D):
        return F.relu(net.features(frame))
    return net.features(frame)


def inside(model: nn.Module, strategy: str, frames: int) -> list[int]:
    """Frames whose temporal receptive field (the network's own description) lies inside the clip."""
    rf = compose(model.rf_graph(strategy)).t
    return [t for t in range(frames) if t + rf.lo >= 0 and t + rf.hi <= frames - 1]


def check_identity(
    model, net, size, frames, strategy="S", reach=None, all_frames=False, seed=1, dtype=torch.float64
):
    """Inflate ``net`` into ``model``, run one repeated frame, compare frame by frame. ``reach``: the
    temporal receptive-field half-width by hand (cross-checks ``rf_graph``). Both networks run in
    ``dtype`` (see the module docstring)."""
    net, model = net.to(dtype), model.to(dtype)
    report = inflate_2d(model, net.state_dict())
    model.apply_strategy(strategy)
    model.eval()
    frame = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    clip = frame.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()
    with torch.no_grad():
        f3, f2 = features_3d(model, clip), features_2d(net, frame)
        logits2 = net(frame)
        logits3 = torch.stack([model.head.fc(f3[:, :, t].mean((2, 3))) for t in range(frames)], 2)
    ok = inside(model, strategy, frames)
    if reach is not None:
        assert ok == list(range(reach, frames - reach)), ok
    assert ok, "the clip is too short for any frame to be inside"
    assert f2.abs().max() > 1.0  # the features are not trivially small
    for t in range(frames) if all_frames else ok:
        err = (f3[:, :, t] - f2).abs().max().item()
        assert err < TOL, f"frame {t}: features differ by {err:.2e}"
        assert (logits3[:, :, t] - logits2).abs().max().item() < TOL, f"frame {t}: logits differ"
    if not all_frames:  # the stem's zero time-padding reaches the first and last frames: they differ
        assert all((f3[:, :, t] - f2).abs().max() > 1e-2 for t in (0, frames - 1))
    return report


def tiny(name: str, **kw) -> nn.Module:
    return create(name, num_classes=10, dropout=0.0, **kw)


# ---- the identity, every family --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, block, layers, groups, wpg, m",
    [
        ("resnet18_3d", Basic2D, (2, 2, 2, 2), 1, 64, 0.25),
        ("resnet50_3d", Bottleneck2D, (3, 4, 6, 3), 1, 64, 0.25),
        ("resnext50_32x4d_3d", Bottleneck2D, (3, 4, 6, 3), 32, 4, 0.5),
        ("resnext101_32x8d_3d", Bottleneck2D, (3, 4, 23, 3), 32, 8, 0.125),
    ],
)
def test_resnets_all_s_on_a_repeated_frame_equal_the_2d_network(name, block, layers, groups, wpg, m):
    """Paper stem 5x7x7 + 3x3x3 max pool (time stride 1): frames 3 .. T-4 are inside."""
    net = randomise(ResNet2D(block, layers, groups, wpg, m, classes=10), 64)
    check_identity(tiny(name, width_mult=m), net, size=64, frames=8, reach=3)


def test_in_float32_the_identity_holds_within_float32_rounding():
    """The same check in float32, on a shallow network, where rounding stays below the tolerance."""
    net = randomise(ResNet2D(Basic2D, (2, 2, 2, 2), m=0.25, classes=10), 64)
    check_identity(tiny("resnet18_3d", width_mult=0.25), net, size=64, frames=8, reach=3, dtype=torch.float32)


def test_resnet_with_the_cpu_stem_equals_the_2d_network():
    """Stem stride 1 and no pool (model.stem_stride=1, model.stem_pool=false): 5x7x7 alone, frames 2 ..
    T-3 are inside; the 2D reference has the same stride-1, pool-free stem."""
    net = randomise(ResNet2D(Basic2D, (2, 2, 2, 2), m=0.25, classes=10, stem_stride=1, stem_pool=False), 16)
    model = tiny("resnet18_3d", width_mult=0.25, stem_stride=1, stem_pool=False)
    check_identity(model, net, size=16, frames=6, reach=2)


def test_full_size_resnet50_equals_the_2d_network():
    net = randomise(ResNet2D(Bottleneck2D, (3, 4, 6, 3)), 32)
    report = check_identity(create("resnet50_3d", num_classes=1000), net, size=32, frames=7, reach=3)
    assert report.family == "resnet50" and not report.skipped


def test_mobilenetv2_all_s_on_a_repeated_frame_equals_the_2d_network():
    """Stem 3x3x3 (no pool): frames 1 .. T-2 are inside."""
    net = randomise(MobileNetV2_2D(0.5, classes=10), 32)
    check_identity(tiny("mobilenetv2_3d", width_mult=0.5), net, size=32, frames=5, reach=1)


def dense_template(**kw) -> nn.Module:
    return create("densenet121_3d", num_classes=10, growth=8, blocks=[2, 3, 2, 2], stem_channels=16, **kw)


def test_densenet_template_all_s_on_a_repeated_frame_equals_the_2d_network():
    """The paper's stem, 5x7x7 + 3x3x3 max pool: frames 3 .. T-4 are inside."""
    net = randomise(DenseNet2D(growth=8, blocks=(2, 3, 2, 2), init=16, classes=10), 32)
    check_identity(dense_template(), net, size=32, frames=8, reach=3)


def test_densenet_template_with_a_per_frame_stem_matches_at_every_frame():
    """A 1x7x7 stem has no time padding and the max pool pads with -inf: every frame matches (the
    receptive field still says +-1 because of the pool)."""
    net = randomise(DenseNet2D(growth=8, blocks=(2, 3, 2, 2), init=16, classes=10), 32)
    check_identity(dense_template(stem_kernel=[1, 7, 7]), net, size=32, frames=4, reach=1, all_frames=True)


def test_full_size_densenet121_equals_the_2d_network():
    net = randomise(DenseNet2D(), 32)
    report = check_identity(create("densenet121_3d", num_classes=1000), net, size=32, frames=7, reach=3)
    assert report.family == "densenet121" and not report.skipped


@pytest.mark.parametrize(
    "name, make, frames, reach",
    [
        ("resnet18_3d", lambda: ResNet2D(Basic2D, (2, 2, 2, 2), m=0.25, classes=10), 23, 11),
        ("mobilenetv2_3d", lambda: MobileNetV2_2D(0.25, classes=10), 35, 17),
        ("densenet121_3d", lambda: DenseNet2D(growth=8, blocks=(1, 2), init=16, classes=10), 15, 7),
    ],
)
def test_all_st_on_a_repeated_frame_equals_the_2d_network(name, make, frames, reach):
    """The T path (kernel repeated along time, / 3) computes the S path's output on a static clip, so
    all-ST matches too, inside the receptive field (stem +- its reach, then +- 1 per slot)."""
    net = randomise(make(), 32)
    if name == "densenet121_3d":
        model = create(name, num_classes=10, growth=8, blocks=[1, 2], stem_channels=16)
    else:
        model = tiny(name, width_mult=0.25)
    check_identity(model, net, size=32, frames=frames, strategy="ST", reach=reach)


# ---- the key mapping and its report ----------------------------------------------------------------


def test_the_report_says_what_was_mapped_skipped_and_missing():
    net = randomise(ResNet2D(Basic2D, (2, 2, 2, 2), m=0.25), 32).float()  # 1000 classes
    model = tiny("resnet18_3d", width_mult=0.25)  # 10 classes: the classifier is re-initialised
    report = inflate_2d(model, net.state_dict())
    assert report.family == "resnet18" and report.model == "resnet18_3d"
    m = report.mapped
    assert m["stem.conv.weight"] == ("conv1.weight", "7x7 -> 5x7x7 (repeated, /5)")
    assert m["stem.norm.running_var"] == ("bn1.running_var", "copy")
    assert m["layer1.block1.path_s.conv.weight"] == ("layer1.0.conv1.weight", "3x3 -> 1x3x3")
    assert m["layer1.block1.path_t.conv.weight"] == ("layer1.0.conv1.weight", "3x3 -> 3x3x3 (repeated, /3)")
    assert m["layer1.block1.branch.norm1.weight"] == ("layer1.0.bn1.weight", "copy")
    assert m["layer1.block1.branch.conv2.weight"] == ("layer1.0.conv2.weight", "3x3 -> 1x3x3")
    assert m["layer2.block1.shortcut.conv.weight"] == ("layer2.0.downsample.0.weight", "1x1 -> 1x1x1")
    assert m["layer2.block1.shortcut.norm.running_mean"] == ("layer2.0.downsample.1.running_mean", "copy")
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert "10 classes, the checkpoint 1000" in report.skipped["fc.weight"]
    gates = {k for k in model.state_dict() if ".gate_" in k}
    assert len(gates) == 2 * model.num_slots
    assert set(report.missing) == gates | {"head.fc.weight", "head.fc.bias"}
    # every checkpoint key but the classifier was used; every model tensor but gates and fc was filled
    used = {src for src, _ in m.values()}
    assert used == set(net.state_dict()) - {"fc.weight", "fc.bias"}
    assert set(m) | set(report.missing) == set(model.state_dict())
    text = report.summary()
    assert "inflated resnet18" in text and "skipped: fc.weight, fc.bias" in text and "gate logit" in text
    assert "layer1.block1.path_t.conv.weight <- layer1.0.conv1.weight" in report.table()
    # the values: stem and T path are the 2D kernel repeated and divided; the S path a copy; BN copied
    sd, st = net.state_dict(), model.state_dict()
    w = sd["layer1.0.conv1.weight"]
    assert torch.equal(st["layer1.block1.path_s.conv.weight"][:, :, 0], w)
    for i in range(3):
        assert torch.allclose(st["layer1.block1.path_t.conv.weight"][:, :, i], w / 3)
    assert torch.allclose(st["stem.conv.weight"].sum(2), sd["conv1.weight"], atol=1e-6)
    assert torch.equal(st["stem.norm.running_mean"], sd["bn1.running_mean"])
    assert model.head.fc.weight.shape == (10, model.feature_channels) and not model.head.fc.bias.any()


def test_the_classifier_is_copied_when_the_class_count_matches():
    net = randomise(MobileNetV2_2D(0.25, classes=7), 32)
    model = create("mobilenetv2_3d", num_classes=7, width_mult=0.25)
    report = inflate_2d(model, net.state_dict())
    assert report.mapped["head.fc.weight"] == ("classifier.1.weight", "copy")
    assert torch.equal(model.head.fc.bias, net.classifier[1].bias)
    assert all(".gate_" in k for k in report.missing) and not report.skipped


def test_paths_of_a_slot_each_get_their_copy_of_the_2d_bn():
    """Template: both paths' pre-activation BN come from norm1; MobileNetV2: both paths' BN after the
    expansion conv from conv.0.1; ResNet: bn1 follows the sum, one copy (branch.norm1)."""
    d = inflate_2d(dense_template(), DenseNet2D(8, (2, 3, 2, 2), 16).state_dict()).mapped
    for path in ("path_s", "path_t"):
        src = d[f"features.block2.layer3.{path}.norm.weight"][0]
        assert src == "features.denseblock2.denselayer3.norm1.weight"
        assert d[f"features.transition1.{path}.conv.weight"][0] == "features.transition1.conv.weight"
    assert d["features.block1.layer1.shared.conv.weight"][1] == "3x3 -> 1x3x3"
    assert d["features.transition1.path_t.conv.weight"][1] == "1x1 -> 3x1x1 (repeated, /3)"
    assert d["head.norm.weight"][0] == "features.norm5.weight"
    mb = inflate_2d(tiny("mobilenetv2_3d", width_mult=0.25), MobileNetV2_2D(0.25).state_dict()).mapped
    assert mb["layer2.block1.path_t.norm.running_var"][0] == "features.2.conv.0.1.running_var"
    assert mb["layer2.block1.path_t.conv.weight"] == (
        "features.2.conv.0.0.weight",
        "1x1 -> 3x1x1 (repeated, /3)",
    )
    assert mb["layer1.block1.branch.dwconv.weight"][0] == "features.1.conv.0.0.weight"
    assert mb["layer7.block1.branch.norm2.weight"][0] == "features.17.conv.3.weight"
    assert mb["head.conv.weight"][0] == "features.18.0.weight"
    assert mb["stem.conv.weight"] == ("features.0.0.weight", "3x3 -> 3x3x3 (repeated, /3)")


# ---- other key formats ------------------------------------------------------------------------------


TIMM_MBV2 = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2", "conv.2": "conv_pwl", "conv.3": "bn3"}  # fmt: skip
TIMM_DS = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}


def timm_mobilenetv2_keys(sd: dict) -> dict:
    """torchvision mobilenet_v2 keys -> timm mobilenetv2_100 keys (conv_stem, bn1, blocks.S.B.*,
    conv_head, bn2, classifier), without num_batches_tracked (as some timm checkpoints)."""
    stages = [1, 2, 3, 4, 3, 3, 1]
    where = {
        n: (s, b) for n, (s, b) in enumerate(((s, b) for s, k in enumerate(stages) for b in range(k)), 1)
    }
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        parts = k.split(".")
        if k.startswith("features.0."):
            key = ("conv_stem." if parts[2] == "0" else "bn1.") + parts[-1]
        elif k.startswith("features.18."):
            key = ("conv_head." if parts[2] == "0" else "bn2.") + parts[-1]
        elif k.startswith("classifier.1."):
            key = "classifier." + parts[-1]
        else:
            s, b = where[int(parts[1])]
            table = TIMM_DS if s == 0 else TIMM_MBV2
            sub = next(t for p, t in table.items() if ".".join(parts[2:-1]) == p)
            key = f"blocks.{s}.{b}.{sub}.{parts[-1]}"
        out[key] = v
    return out


def test_timm_mobilenetv2_keys_inflate_like_torchvisions(tmp_path):
    """timm's mobilenetv2_100 names every layer differently (conv_stem / bn1, blocks.S.B.conv_pw / bn1 /
    conv_dw / bn2 / conv_pwl / bn3, the first block's conv_dw / bn1 / conv_pw / bn2, conv_head / bn2,
    classifier): renamed, the same tensors land in the same places."""
    sd = randomise(MobileNetV2_2D(0.25, classes=10), 32).state_dict()
    a, b = tiny("mobilenetv2_3d", width_mult=0.25), tiny("mobilenetv2_3d", width_mult=0.25)
    inflate_2d(a, sd)
    path = tmp_path / "timm_mobilenetv2.pth"
    torch.save({"state_dict": timm_mobilenetv2_keys(sd), "epoch": 3}, path)
    report = inflate_2d(b, path)
    assert report.key_format.startswith("timm") and not report.skipped
    assert report.mapped["layer2.block1.path_s.conv.weight"][0] == "features.2.conv.0.0.weight"
    state_a, state_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a if not k.endswith("num_batches_tracked"))


def test_timm_resnet_and_densenet_use_torchvisions_names(tmp_path):
    """timm's resnet / resnext (conv1, bn1, layerI.J.*, downsample.0/1, fc) and densenet121 (features.*,
    classifier; its BatchNormAct2d holds a BatchNorm's tensors) keep torchvision's key names: the same
    file inflates either way. Here a timm-style training checkpoint: nested under "state_dict", with
    DataParallel's "module." prefix and the run's argparse args (loaded with weights_only=True)."""
    sd = randomise(ResNet2D(Bottleneck2D, (3, 4, 6, 3), m=0.25, classes=10), 32).state_dict()
    path = tmp_path / "timm_resnet50.pth.tar"
    args = argparse.Namespace(model="resnet50", lr=0.5)  # timm's train.py saves its args too
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "arch": "resnet50", "args": args}, path
    )
    a, b = tiny("resnet50_3d", width_mult=0.25), tiny("resnet50_3d", width_mult=0.25)
    inflate_2d(a, sd)
    report = inflate_2d(b, path)
    assert report.family == "resnet50" and report.key_format == "torchvision/timm"
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    # {"model": state dict} (e.g. a DeiT-style checkpoint) unwraps as well
    torch.save({"model": sd}, path)
    assert inflate_2d(tiny("resnet50_3d", width_mult=0.25), path).family == "resnet50"


def test_torchvisions_legacy_densenet_keys_are_renamed():
    """torchvision's published densenet121 file has denselayerN.norm.1 / conv.1 / norm.2 / conv.2 keys
    (torchvision renames them on load, and so does fusion3d)."""
    sd = randomise(DenseNet2D(8, (2, 3, 2, 2), 16, classes=10), 32).state_dict()
    legacy = {
        k.replace(".norm1.", ".norm.1.").replace(".conv1.", ".conv.1.").replace(".norm2.", ".norm.2.").replace(".conv2.", ".conv.2."): v
        for k, v in sd.items()
    }  # fmt: skip
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    renamed, fmt = state_dict_2d(legacy)
    assert set(renamed) == set(sd) and "legacy" in fmt
    a, b = dense_template(), dense_template()
    inflate_2d(a, sd)
    inflate_2d(b, legacy)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# ---- refusals --------------------------------------------------------------------------------------


def test_a_wrong_family_checkpoint_is_refused_and_the_model_left_untouched():
    resnet50 = ResNet2D(Bottleneck2D, (3, 4, 6, 3), m=0.25).state_dict()
    model = dense_template()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        InflationError, match=r"resnet50 checkpoint, but the model densenet121_3d inflates from"
    ):
        inflate_2d(model, resnet50)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(InflationError, match=r"is a resnet50 checkpoint.*resnext50_32x4d \(bottleneck"):
        inflate_2d(tiny("resnext50_32x4d_3d", width_mult=0.25), resnet50)
    with pytest.raises(InflationError, match=r"is a resnet50 checkpoint.*resnet18"):
        inflate_2d(tiny("resnet18_3d", width_mult=0.25), resnet50)
    with pytest.raises(InflationError, match=r"is a mobilenet_v2 checkpoint.*resnext101_32x8d"):
        inflate_2d(tiny("resnext101_32x8d_3d", width_mult=0.125), MobileNetV2_2D(0.25).state_dict())
    assert issubclass(InflationError, ValueError)  # the CLI prints it as one line


def test_other_widths_and_stems_are_refused_naming_the_tensors():
    sd = ResNet2D(Basic2D, (2, 2, 2, 2), m=0.25).state_dict()
    with pytest.raises(InflationError, match=r"tensors differ in shape, e\.g\. conv1\.weight.*width_mult=1"):
        inflate_2d(tiny("resnet18_3d", width_mult=0.5), sd)
    # the tiny preset is a DenseNet template too, but its 1x5x5 stem and widths are not densenet121's
    with pytest.raises(
        InflationError, match=r"densenet121 checkpoint, but the model tiny inflates from a DenseNet"
    ):
        inflate_2d(create("tiny", num_classes=3), DenseNet2D().state_dict())
    custom = DenseNet2D(growth=12, blocks=(2, 3), init=24, classes=3).state_dict()
    with pytest.raises(
        InflationError, match=r"features\.conv0\.weight \(24x3x7x7\) -> stem\.conv\.weight \(24x3x1x5x5\)"
    ):
        inflate_2d(create("tiny", num_classes=3), custom)


def test_unreadable_incomplete_and_foreign_checkpoints_are_refused(tmp_path):
    model = tiny("resnet18_3d", width_mult=0.25)
    with pytest.raises(InflationError, match=r"model.pretrained_2d'.*does not exist.*nothing is downloaded"):
        inflate_2d(model, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(InflationError, match="not a readable torch state dict"):
        inflate_2d(model, tmp_path / "junk.pth")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(InflationError, match="holds no state dict"):
        inflate_2d(model, tmp_path / "empty.pth")
    with pytest.raises(InflationError, match="fusion3d checkpoint.*--init"):
        inflate_2d(model, {"model": tiny("resnet18_3d", width_mult=0.25).state_dict()})
    with pytest.raises(InflationError, match="not those of a supported"):
        inflate_2d(model, {"encoder.weight": torch.zeros(3)})
    with pytest.raises(InflationError, match="timm MobileNet / EfficientNet other than mobilenetv2"):
        inflate_2d(
            model,
            {"conv_stem.weight": torch.zeros(8, 3, 3, 3), "blocks.0.0.se.conv_reduce.weight": torch.zeros(1)},
        )
    full = ResNet2D(Basic2D, (2, 2, 2, 2), m=0.25).state_dict()
    cut = {k: v for k, v in full.items() if not k.startswith("layer4.1.bn2")}
    with pytest.raises(InflationError, match=r"unfilled, e\.g\. layer4\.block2\.branch\.norm2"):
        inflate_2d(model, cut)
    report = inflate_2d(model, cut, strict=False)
    assert (
        report.missing["layer4.block2.branch.norm2.weight"] == "layer4.1.bn2.weight is not in the checkpoint"
    )


def test_detect_names_the_family():
    assert detect_2d(ResNet2D(Basic2D, (2, 2, 2, 2), m=0.25).state_dict()).name == "resnet18"
    assert (
        detect_2d(ResNet2D(Bottleneck2D, (3, 4, 23, 3), 32, 8, m=0.125).state_dict()).name
        == "resnext101_32x8d"
    )
    assert (
        detect_2d(ResNet2D(Bottleneck2D, (3, 4, 6, 3), 32, 4, m=0.5).state_dict()).name == "resnext50_32x4d"
    )
    assert detect_2d(DenseNet2D(8, (6, 12, 24, 16), 16).state_dict()).name == "densenet121"
    assert detect_2d(MobileNetV2_2D(0.25).state_dict()).name == "mobilenet_v2"


# ---- through create, build_model and the config --------------------------------------------------


def test_the_config_key_and_create_inflate(tmp_path, capsys):
    net = randomise(ResNet2D(Basic2D, (2, 2, 2, 2), m=0.25, classes=10), 32)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    ref = tiny("resnet18_3d", width_mult=0.25)
    inflate_2d(ref, net.state_dict())

    model = create("resnet18_3d", num_classes=10, width_mult=0.25, pretrained_2d=str(path), strategy="S")
    assert "inflated resnet18" in capsys.readouterr().out
    assert model.inflation_report.family == "resnet18" and model.current_strategy().units[0] == "S"
    cfg = load_config(
        None, [f"model.pretrained_2d={path}", "model.name=resnet18_3d", "model.width_mult=0.25"]
    )
    assert cfg.model.pretrained_2d == str(path)
    built = build_model(cfg.model, 10)
    for m in (model, built):
        assert all(
            torch.equal(v, m.state_dict()[k]) for k, v in ref.state_dict().items() if ".gate_" not in k
        )
    assert not hasattr(build_model(ModelConfig(name="resnet18_3d", width_mult=0.25), 10), "inflation_report")
    with pytest.raises(InflationError, match="does not exist"):
        build_model(ModelConfig(name="resnet18_3d", pretrained_2d=str(tmp_path / "gone.pth")), 10)
