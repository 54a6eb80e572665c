"""``fusion3d export RUN|DESIGN --format torch|onnx|mmaction2``: a network for use outside fusion3d.

The source is a run directory (its trained weights, read through ``fusion3d.run.loading.load_run``)
or a design file written by ``fusion3d derive`` (its ``backbone`` and ``width_mult``, built with
initial weights: an architecture to train elsewhere). The strategy frozen into the export is
``--strategy`` (the strategy grammar: a unit, a unit string ``S|ST|...``, a strategy JSON file; for a
run also ``opt``, ``top:K`` and ``most_probable``), else the run's fixed strategy (a retrained run),
else the run's Opt (its most probable strategy before ``fusion3d analyze``), else the design's units.

Formats (the conversion itself is ``fusion3d.models.export``):

- ``torch``: TorchScript (``torch.jit.trace`` of the frozen network: no gates, no drop logits, no
  dropped path). It loads with ``torch.jit.load(PATH)`` and nothing else: no fusion3d, no class
  definitions, which a state dict would need to be rebuilt into a module (and it runs in C++ through
  libtorch). The architecture JSON is embedded in the archive (``fusion3d.json``) and written next
  to it (``PATH.json``). Its output is checked against the gated network in hard mode on a random
  batch before the file is written. torch 2.13 marks ``torch.jit.save`` as deprecated in favour of
  ``torch.export``; TorchScript is kept because it loads in older torch releases too and in C++
  (libtorch), where a ``torch.export`` archive needs a torch as recent as the one that wrote it.
- ``onnx``: ONNX (opset 17, dynamic batch), with the same JSON next to it; needs the ``onnx``
  package. When ``onnxruntime`` is installed the file is run and checked against torch's output
  (both are optional packages: fusion3d does not depend on them).
- ``mmaction2``: a Python config snippet for MMAction2's ``ResNet3d`` (ResNet / ResNeXt only), with
  one ``inflate`` entry per block; what MMAction2 cannot express is printed as a warning.

Without ``--out`` the file goes to the current directory as ``<model>_<strategy id>.pt`` /
``.onnx`` / ``_mmaction2.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from fusion3d.errors import FusionError
from fusion3d.models import Strategy, as_strategy, create
from fusion3d.models.export import architecture, freeze, mmaction2_config, onnx_bytes, to_torchscript
from fusion3d.run.loading import load_run, resolve_run_strategy, run_strategy_spec
from fusion3d.utils import atomic_write_bytes, atomic_write_text

FORMATS = ("torch", "onnx", "mmaction2")
SUFFIXES = {"torch": ".pt", "onnx": ".onnx", "mmaction2": "_mmaction2.py"}
TOLERANCE = 1e-4  # largest |logit difference| accepted, relative to the logits (float rounding only)


@dataclass
class Source:
    """A network to export and the strategy to freeze into it."""

    model: torch.nn.Module
    strategy: Strategy
    strategy_source: str
    input_shape: tuple[int, int, int, int]
    label: str
    description: str


def _from_run(run_dir: Path, spec: str | None) -> Source:
    state, cfg, model = load_run(run_dir)
    spec = spec or cfg.model.strategy or "opt"
    if spec.startswith("top:"):  # rank K of the run's top strategies, as a unit string
        spec = run_strategy_spec(run_dir, spec)[1]
    strategy, where = resolve_run_strategy(run_dir, spec, model)
    shape = (model.in_channels, cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size)
    return Source(
        model.eval(), strategy, where, shape, cfg.model.name, f"run {run_dir} (epoch {state.get('epoch')})"
    )


def _from_design(path: Path, spec: str | None) -> Source:
    try:
        design = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a design file (the JSON `fusion3d derive` writes)") from None
    if not isinstance(design, dict) or "backbone" not in design:
        raise ValueError(
            f"{path} names no 'backbone': not a design written by `fusion3d derive` (a strategy file "
            "names no network; export a run with --strategy FILE instead)"
        )
    width = float(design.get("width_mult", 1.0))
    torch.manual_seed(0)  # the initial weights of a design, the same at every export
    model = create(
        design["backbone"],
        num_classes=int(design.get("num_classes") or 1),
        **({"width_mult": width} if width != 1.0 else {}),
    ).eval()
    strategy = as_strategy(spec, model.num_slots) if spec else Strategy.from_dict(design)
    if len(strategy) != model.num_slots:
        raise ValueError(
            f"{path}: {len(strategy)} units for the {model.num_slots} blocks of {design['backbone']}"
        )
    shape = tuple(int(v) for v in design.get("input_shape") or (model.in_channels, 8, 112, 112))
    return Source(model, strategy, spec or f"design {path.name}", shape, design["backbone"], f"design {path}")


def load_source(source: str | Path, strategy: str | None = None) -> Source:
    """The network and strategy of a run directory or a design file (see the module docstring)."""
    path = Path(source)
    if path.is_dir():
        return _from_run(path, strategy)
    if path.is_file():
        return _from_design(path, strategy)
    raise FileNotFoundError(f"{path} is neither a run directory nor a design file")


def _reference(src: Source, example: torch.Tensor) -> torch.Tensor:
    """The gated network's logits in hard mode with the strategy (what an export must reproduce)."""
    model = src.model
    model.apply_strategy(src.strategy)
    try:
        with torch.no_grad():
            return model(example)
    finally:
        model.apply_strategy(None)


def _check(what: str, got, reference: torch.Tensor) -> str:
    """Compare an export's logits with the gated network's: equal up to float rounding (the gated
    network may run its convs through folded 2D kernels), i.e. within ``TOLERANCE`` of the logits'
    scale; anything more is a bug."""
    diff = float((torch.as_tensor(got) - reference).abs().max())
    scale = max(1.0, float(reference.abs().max()))
    if not diff <= TOLERANCE * scale:
        raise FusionError(
            f"the {what} output differs from the gated network's by {diff:.2e} (logits up to {scale:.3g}): "
            "the export is wrong, please report it"
        )
    return f"{what} output equals the gated network's in hard mode (max |diff| {diff:.1e} on a random batch)"


def _onnx_check(data: bytes, example: torch.Tensor, reference: torch.Tensor) -> str:
    """Run the ONNX file with onnxruntime when it is installed (an optional package)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "not run: onnxruntime is not installed (pip install onnxruntime to check the file)"
    ort = importlib.import_module("onnxruntime")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return _check("onnxruntime", session.run(None, {"clip": example.numpy()})[0], reference)


def export(source: str | Path, fmt: str, out: str | Path | None = None, strategy: str | None = None) -> dict:
    """Export a run or a design in ``fmt`` (``torch``, ``onnx`` or ``mmaction2``); returns what was
    written: ``path``, ``format``, ``strategy``, ``strategy_source``, ``check`` (what was verified) and
    ``warnings``."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise FusionError(
            "--format onnx needs the onnx package: pip install onnx (and onnxruntime to check it)"
        )
    src = load_source(source, strategy)
    path = Path(out) if out else Path(f"{src.label}_{src.strategy.id}{SUFFIXES[fmt]}")
    done = {
        "path": str(path),
        "format": fmt,
        "strategy": str(src.strategy),
        "strategy_source": src.strategy_source,
    }
    if fmt == "mmaction2":
        text, warns = mmaction2_config(src.model, src.strategy, source=src.description)
        atomic_write_text(path, text)
        return {**done, "check": "config snippet (no weights)", "warnings": warns}
    example = torch.randn((2, *src.input_shape), generator=torch.Generator().manual_seed(0))
    reference = _reference(src, example)
    frozen = freeze(src.model, src.strategy, example)
    meta = {
        **architecture(src.model, src.strategy, src.input_shape),
        "format": "TorchScript" if fmt == "torch" else "ONNX",
        "load": (
            "torch.jit.load(path), with torch alone (no fusion3d)"
            if fmt == "torch"
            else "onnxruntime.InferenceSession(path); input 'clip', output 'logits'"
        ),
        "source": src.description,
        "strategy_source": src.strategy_source,
    }
    if fmt == "torch":
        module = to_torchscript(frozen, example)
        with torch.no_grad():
            check = _check("TorchScript", module(example), reference)
        buf = io.BytesIO()
        with warnings.catch_warnings():  # torch 2.13 calls torch.jit.save deprecated (see the docstring)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, buf, _extra_files={"fusion3d.json": json.dumps(meta)})
        data = buf.getvalue()
    else:
        data = onnx_bytes(frozen, example)
        check = _onnx_check(data, example, reference)
    atomic_write_bytes(path, data)
    atomic_write_text(path.with_name(path.name + ".json"), json.dumps(meta, indent=1) + "\n")
    return {**done, "check": check, "warnings": []}


def command(args) -> int:
    done = export(args.source, args.format, out=args.out, strategy=args.strategy)
    for w in done["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {done['path']} ({done['format']}): strategy {done['strategy']} ({done['strategy_source']})")
    print(f"  {done['check']}")
    return 0
