"""fusion3d export: a strategy frozen into a plain network (TorchScript, ONNX) that computes what the
gated network computes in hard mode, and MMAction2 configs of derived ResNet designs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
import torch

from fusion3d.cli import main
from fusion3d.config import Config, save_config, to_dict
from fusion3d.engine.checkpoint import save_checkpoint
from fusion3d.models import Gate, create
from fusion3d.models.export import freeze, mmaction2_config, onnx_bytes, to_torchscript
from fusion3d.run.layout import RunDir
from fusion3d.stages.derive import derive
from fusion3d.stages.export import export

MIXED = {  # a strategy with every unit, none included (a skipped dense layer, transition, block)
    "tiny": "S|none|ST|none|S+ST|S",
    "resnet18_3d": "S|ST|S+ST|none|S|ST|S+ST|none",
    "mobilenetv2_3d": "none|ST|S|S+ST|none|none|S+ST|ST|S|ST|S+ST|none|ST|S|S+ST|ST",
}


def _randomize_bn(model, seed=1):
    """Non-trivial BatchNorm statistics, so that eval-mode outputs depend on every layer."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model


def _gated(model, strategy, x):
    model.apply_strategy(strategy)
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("tiny", {}),
        ("tiny", {"depth_gate": True}),
        ("resnet18_3d", {"width_mult": 0.25, "conv_impl": "conv3d"}),
        ("mobilenetv2_3d", {"width_mult": 0.25, "conv_impl": "conv3d"}),
    ],
)
def test_torchscript_equals_the_gated_network_in_hard_mode(name, kwargs):
    torch.manual_seed(0)
    model = _randomize_bn(create(name, num_classes=5, **kwargs)).eval()
    example, x = torch.randn(2, 3, 4, 32, 32), torch.randn(3, 3, 4, 32, 32)  # another batch size
    strategy = "S|ST|none|S+ST|none|ST" if kwargs.get("depth_gate") else MIXED[name]
    frozen = freeze(model, strategy, example)
    script = to_torchscript(frozen, example)
    reference = _gated(model, strategy, x)
    # the traced graph keeps torch's kernels; eager inference may use fusion3d's (equal to float
    # rounding: fusion3d.models.convs.fast_inference), so the tolerance is relative to the logits
    tol = 1e-5 * max(1.0, float(reference.abs().max()))
    with torch.no_grad():
        assert (frozen(x) - reference).abs().max() < tol
        assert (script(x) - reference).abs().max() < tol
    names = [n for n, _ in script.named_parameters()] + [n for n, _ in script.named_modules()]
    assert not [n for n in names if "gate" in n or "logit" in n]
    assert not any(isinstance(m, Gate) for m in frozen.modules())
    dropped = [s for s, u in zip(model.slot_names, model.current_strategy()) if u in ("S", "none")]
    assert dropped and not [n for n in names if any(n.startswith(f"{d}.path_t") for d in dropped)]
    assert model.gate_mode == "hard" and sum(p.numel() for p in model.drop_logits()) > 0  # untouched


def test_torchscript_loads_without_fusion3d(tmp_path):
    torch.manual_seed(0)
    model = create("tiny", num_classes=4).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    to_torchscript(freeze(model, "ST", x), x).save(str(tmp_path / "m.pt"))
    torch.save({"x": x, "y": _gated(model, "ST", x)}, tmp_path / "io.pt")
    code = (
        "import sys; sys.modules['fusion3d'] = None\n"  # any import of fusion3d fails
        "import torch\n"
        "m = torch.jit.load('m.pt'); d = torch.load('io.pt')\n"
        "assert (m(d['x']) - d['y']).abs().max() < 1e-5\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True)


def test_onnx_matches_torch_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = _randomize_bn(create("tiny", num_classes=5)).eval()
    example, x = torch.randn(2, 3, 4, 32, 32), torch.randn(3, 3, 4, 32, 32)
    frozen = freeze(model, MIXED["tiny"], example)
    data = onnx_bytes(frozen, example)
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 13
    out = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"clip": x.numpy()})[0]
    with torch.no_grad():
        assert abs(out - frozen(x).numpy()).max() < 1e-4
    assert abs(out - _gated(model, MIXED["tiny"], x).numpy()).max() < 1e-4


@pytest.fixture(scope="module")
def template_run(tmp_path_factory):
    """A run directory with a trained-looking tiny template and its marginals (no training)."""
    run = RunDir(tmp_path_factory.mktemp("export") / "run")
    run.path.mkdir()
    cfg = Config()
    cfg.model.name, cfg.data.clip_len = "tiny", 4
    torch.manual_seed(0)
    model = _randomize_bn(create("tiny", num_classes=5))
    save_config(cfg, run.config)
    save_checkpoint(
        run.checkpoint, {"model": model.state_dict(), "config": to_dict(cfg), "num_classes": 5, "epoch": 3}
    )
    probs = [
        [0.6, 0.3, 0.1],
        [0.2, 0.6, 0.2],
        [0.1, 0.2, 0.7],
        [0.5, 0.4, 0.1],
        [0.1, 0.8, 0.1],
        [0.3, 0.3, 0.4],
    ]
    rows = [
        {"index": i, "slot": s, "P_S_paper": p[0], "P_ST_paper": p[1], "P_S+ST_paper": p[2]}
        for i, (s, p) in enumerate(zip(model.slot_names, probs))
    ]
    pd.DataFrame(rows).to_csv(run.marginals, index=False)
    return run


def test_export_a_run_as_torchscript_through_the_cli(template_run, tmp_path, capsys):
    out = tmp_path / "t.pt"
    args = ["export", str(template_run.path), "--format", "torch", "--strategy", MIXED["tiny"]]
    assert main([*args, "--out", str(out)]) == 0
    assert "equals the gated network" in capsys.readouterr().out
    meta = json.loads((tmp_path / "t.pt.json").read_text())
    assert meta["strategy"]["string"] == MIXED["tiny"] and meta["input"]["shape"] == ["N", 3, 4, 32, 32]
    with zipfile.ZipFile(out) as z:  # the description travels inside the TorchScript archive too
        assert any(n.endswith("extra/fusion3d.json") for n in z.namelist())
    assert (
        main(["export", str(template_run.path), "--format", "mmaction2", "--out", str(tmp_path / "x.py")])
        == 2
    )
    assert "ResNet / ResNeXt designs only" in capsys.readouterr().err


def _exec_config(text: str) -> dict:
    namespace: dict = {}
    exec(compile(text, "mmaction2 config", "exec"), namespace)
    return namespace["model"]


def test_mmaction2_config_of_a_derived_resnet50_design(template_run, tmp_path, capsys):
    design = derive(template_run.path, "resnet50_3d", width_mult=0.25)
    units = design["units"]
    assert "S+ST" in units and "S" in units
    assert main(["export", design["path"], "--format", "mmaction2", "--out", str(tmp_path / "r50.py")]) == 0
    assert "warning: S+ST at" in capsys.readouterr().err
    cfg = _exec_config((tmp_path / "r50.py").read_text())
    backbone = cfg["backbone"]
    assert backbone["type"] == "ResNet3d" and backbone["depth"] == 50
    assert [len(s) for s in backbone["inflate"]] == [3, 4, 6, 3]  # one entry per block
    flat = [f for stage in backbone["inflate"] for f in stage]
    assert flat == [int(u in ("ST", "S+ST")) for u in units]
    assert backbone["conv1_kernel"] == (5, 7, 7) and backbone["inflate_style"] == "3x1x1"
    assert backbone["pool1_stride_t"] == 1 and backbone["conv1_stride_t"] == 1 and not backbone["with_pool2"]
    assert cfg["cls_head"]["in_channels"] == 512 and backbone["base_channels"] == 16


def test_mmaction2_config_names_what_it_cannot_express():
    model = create("resnext50_32x4d_3d", num_classes=3, width_mult=0.25)
    text, warns = mmaction2_config(model, "|".join(["S"] * 15 + ["none"]))
    assert _exec_config(text)["backbone"]["inflate"][-1] == (0, 0, 0)
    assert any("cardinality" in w for w in warns) and any(
        w.startswith("none at layer4.block3") for w in warns
    )
    text, warns = mmaction2_config(create("resnet18_3d", num_classes=3), "ST")
    assert _exec_config(text)["backbone"]["depth"] == 18 and any("BasicBlock3d" in w for w in warns)
    assert not any("S+ST" in w for w in warns)


def test_export_a_design_as_onnx(template_run, tmp_path):
    pytest.importorskip("onnx")
    design = derive(template_run.path, "resnet18_3d", width_mult=0.25, out=tmp_path / "r18.json")
    done = export(design["path"], "onnx", out=tmp_path / "r18.onnx")
    assert done["strategy"] == design["string"] and (tmp_path / "r18.onnx").stat().st_size > 1000
    assert "onnxruntime output equals" in done["check"] or "not run" in done["check"]
    (tmp_path / "s.json").write_text(json.dumps({"units": ["S"] * 8}))
    with pytest.raises(ValueError, match="names no 'backbone'"):
        export(tmp_path / "s.json", "torch")
