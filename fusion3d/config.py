"""One typed configuration schema for every stage.

The schema is a tree of dataclasses. Every key has a default and a one-line description (the
``help`` metadata). A config is built from the defaults, then a YAML file, then dotted
``key=value`` overrides; every step is validated against the schema before any work starts, and
errors name the offending key and the valid choices. The resolved config is saved (as YAML) into
every run directory.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from fusion3d.models.spec import ModelConfig, check_model_config
from fusion3d.utils import atomic_write_text


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


Format = Literal["ucf101", "kinetics", "ssv2", "ssv1", "video_list", "frame_list"]


@dataclass
class DataConfig:
    """Where the videos are, how clips are sampled and transformed."""

    format: Format = _f("ucf101", "annotation format of the dataset (see docs/data_formats.md)")
    root: str = _f("data/synth_motion", "folder holding the videos (or frame folders)")
    annotations: str = _f("data/synth_motion/ucfTrainTestlist", "official annotation file or folder")
    split: int = _f(1, "official split number where the format has several (UCF101: 1-3)")
    train_subset: str = _f("train", "annotation subset used for training")
    eval_subset: str = _f("test", "annotation subset used for final evaluation numbers")
    selection_fraction: float = _f(
        0.2, "share of each training class held out (never trained on) to score strategies"
    )
    selection_subset: str = _f(
        "", "use this annotation subset for strategy selection instead of carving it from train"
    )
    sampling: Literal["dense", "segment"] = _f(
        "dense", "clip sampler: dense (clip_len x frame_interval) or segment (TSN)"
    )
    clip_len: int = _f(8, "frames per clip (segment sampling: number of segments)")
    frame_interval: int = _f(2, "dense sampling: step between sampled frames")
    test_clips: int = _f(1, "temporal clips per video at evaluation")
    test_crops: Literal[1, 3] = _f(1, "spatial crops per clip at evaluation: 1 (centre) or 3")
    short_side: int = _f(40, "short side after resizing (evaluation, and lower bound of training jitter)")
    short_side_max: int = _f(44, "upper bound of the training short-side jitter (= short_side: no jitter)")
    crop_size: int = _f(32, "square crop size fed to the network")
    flip: Literal["off", "on", "swap"] = _f(
        "on", "horizontal flip in training: off (direction-sensitive classes), on, or on with label swap"
    )
    flip_swap: list = _f(
        [],
        "flip=swap: label pairs [[a, b], ...] swapped on flip (empty: derived from left/right in class names)",
    )
    mean: list = _f([0.45, 0.45, 0.45], "per-channel mean for normalisation (RGB, [0,1] scale)")
    std: list = _f([0.225, 0.225, 0.225], "per-channel std for normalisation")
    num_workers: int = _f(0, "data-loader worker processes")
    pin_memory: bool = _f(True, "page-locked training batches for faster host-to-GPU copies (CUDA only)")
    persistent_workers: bool = _f(
        True, "keep the data-loader workers alive from one epoch to the next (num_workers > 0)"
    )
    prefetch_factor: int = _f(2, "batches each data-loader worker prepares ahead (num_workers > 0)")
    min_frames: int = _f(1, "videos with fewer decodable frames are reported by scan and skipped")
    cache_dir: str = _f("cache", "folder for the per-video index and the evaluation clip cache")
    cache_compression: Literal["none", "zlib"] = _f(
        "none",
        "evaluation clip cache storage: none (uint8 memmap, 2.4 MB per 16x224x224 view) or zlib (exact, "
        "smaller, each read decompresses; docs/resources.md)",
    )


@dataclass
class TrainConfig:
    """Optimisation recipe: warm-up (gates off), then the Variational DropPath phase."""

    batch_size: int = _f(8, "clips per optimisation step (per process under torchrun)")
    warmup_epochs: int = _f(12, "epochs with every path on (gates off) before v-DropPath")
    warmup_sampling: Literal["full", "uniform", "fair"] = _f(
        "full",
        "what a warm-up step trains: full (every path on; the paper), uniform (one sub-network per step, "
        "each slot's unit S/ST/S+ST/none drawn uniformly) or fair (every unit of every slot equally often)",
    )
    warmup_full_epochs: int = _f(
        0,
        "uniform / fair warm-up: the first this many warm-up epochs train every path on, the rest single-path",
    )
    epochs: int = _f(8, "epochs of the v-DropPath phase (0: plain training only)")
    optimizer: Literal["sgd", "adamw"] = _f(
        "sgd", "sgd (momentum; the paper's) or adamw (faster on tiny CPU presets)"
    )
    lr: float = _f(0.05, "learning rate of the network weights (restarts at each phase)")
    momentum: float = _f(0.9, "SGD momentum (adamw: beta1)")
    weight_decay: float = _f(5e-4, "weight decay of the network weights (never applied to drop logits)")
    logit_lr: float = _f(0.0, "learning rate of the drop logits (0: same as train.lr)")
    schedule: Literal["multistep", "cosine", "constant"] = _f(
        "cosine", "learning-rate schedule within each phase"
    )
    milestones: list = _f([], "multistep: epochs (within the phase) where lr is multiplied by gamma")
    gamma: float = _f(0.1, "multistep: lr factor at each milestone")
    k: float = _f(
        1.0,
        "v-DropPath length-scale prior k (the sparsity knob; synthetic default measured; paper: 50, 10 Kinetics, 250 SSv1)",
    )
    reg_form: Literal["code", "paper"] = _f(
        "code", "regulariser coefficient: k/N (original code) or k^2/(2N) (paper text)"
    )
    temperature_from: float = _f(
        0.0,
        "when > 0: the relaxed-Bernoulli temperature starts v-DropPath at this value and falls geometrically, "
        "epoch by epoch, to model.temperature in its last epoch (0: fixed at model.temperature, the paper)",
    )
    relaxed_masks: Literal["per_sample", "per_batch"] = _f(
        "per_sample",
        "v-DropPath draws each gate's relaxed mask per sample (the paper's code) or once per batch",
    )
    k_auto: float = _f(
        0.0,
        "when > 0: k is calibrated at the start of v-DropPath so that the regulariser pulls the drop logits "
        "this many times as hard as the classification loss (measured on 8 batches); train.k is then unused "
        "and the k chosen is in summary.json (0: use train.k)",
    )
    eval_samples: int = _f(8, "K: hard-sampled strategies averaged for posterior-predictive validation")
    eval_every: int = _f(1, "validate every this many epochs (and after the last)")
    log_every: int = _f(10, "write a step record to metrics.jsonl every this many steps")
    grad_clip: float = _f(0.0, "clip the gradient norm to this value (0: off)")
    sync_bn: bool = _f(False, "convert BatchNorm to SyncBatchNorm under torchrun")
    precision: Literal["fp32", "bf16", "fp16"] = _f(
        "fp32",
        "fp32, or autocast to bf16 / fp16 (fp16: CUDA only, with a GradScaler); the regulariser and gates stay fp32",
    )
    channels_last: bool = _f(False, "channels-last 3D memory layout for the network and its input clips")
    activation_checkpointing: bool = _f(
        False,
        "recompute each slot's activations in the backward pass instead of keeping them: less memory, "
        "more time per step, the same gradients (docs/resources.md)",
    )
    cudnn_benchmark: bool = _f(True, "CUDA: let cuDNN time and pick the fastest convolution kernels")
    checkpoint_every_steps: int = _f(
        0, "also save the checkpoint every this many steps inside an epoch (0: at epoch ends only)"
    )
    tensorboard: bool = _f(False, "also write TensorBoard event files (needs the tensorboard package)")
    progress: bool = _f(True, "show a progress bar when attached to a terminal")


@dataclass
class RunConfig:
    """Where a run writes, and what makes it reproducible."""

    out: str = _f("runs/default", "run directory (created; holds config.yaml, checkpoints, metrics, results)")
    seed: int = _f(0, "seed for python, numpy, torch and every data-loader worker")
    seeds: int = _f(
        1,
        "train K templates with seeds run.seed .. run.seed+K-1 whose marginals and scores are combined "
        "(K > 1: one sub-run per seed, run.out/seed<i>/)",
    )
    device: str = _f("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:N")
    threads: int = _f(
        0, "CPU threads for torch ops (0: torch's default; 1 is fastest on a busy 2-core machine)"
    )
    dist_timeout_s: int = _f(
        0, "torchrun: seconds a rank waits for the others in a collective before failing (0: torch's default)"
    )


@dataclass
class Config:
    """The whole resolved configuration of a run."""

    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "run directory and reproducibility"})
    data: DataConfig = field(
        default_factory=DataConfig, metadata={"help": "dataset, sampling and transforms"}
    )
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "template or backbone"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "training recipe"})


# --------------------------------------------------------------------------------------------
# Validation


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, tp: Any, value: Any) -> Any:
    """Return ``value`` coerced to ``tp`` or raise a ConfigError naming ``key``."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        # a YAML override "3" arrives as int 3, "on" may arrive as bool True
        for c in choices:
            if str(c) == str(value) or (isinstance(value, bool) and str(c) == ("on" if value else "off")):
                return c
        raise ConfigError(
            f"config key '{key}': {value!r} is not valid; choose one of {', '.join(map(str, choices))}"
        )
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_value(key, a, value)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key '{key}': {value!r} does not match {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads 1e-9 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"config key '{key}': expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    if tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown(key: str, name: str, valid: list[str]) -> ConfigError:
    guess = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{guess[0]}'?" if guess else ""
    where = key.rsplit(".", 1)[0] if "." in key else "the top level"
    return ConfigError(f"unknown config key '{key}'{hint} Valid keys in {where}: {', '.join(valid)}")


# Keys older versions wrote into config.yaml that no longer mean anything; skipped when read, so old
# run directories still load (``data.synth`` described the synthetic data, which ``fusion3d data synth``
# takes as arguments).
RETIRED_KEYS = frozenset({"data.synth"})


def _apply_mapping(obj: Any, mapping: dict, prefix: str = "") -> None:
    if not isinstance(mapping, dict):
        raise ConfigError(
            f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {mapping!r}"
        )
    hints = _hints(type(obj))
    valid = [f.name for f in dataclasses.fields(obj)]
    for name, value in mapping.items():
        key = prefix + str(name)
        if key in RETIRED_KEYS:
            continue
        if name not in valid:
            raise _unknown(key, str(name), valid)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            _apply_mapping(getattr(obj, name), value, key + ".")
        else:
            setattr(obj, name, _check_value(key, tp, value))


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set a dotted ``key`` on ``cfg`` with type checking."""
    parts = key.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        valid = [f.name for f in dataclasses.fields(obj)]
        if part not in valid:
            raise _unknown(".".join(parts[: i + 1]), part, valid)
        tp = _hints(type(obj))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                _apply_mapping(getattr(obj, part), value, key + ".")
            else:
                setattr(obj, part, _check_value(key, tp, value))
        else:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"config key '{'.'.join(parts[: i + 1])}' is a value, not a section")
            obj = getattr(obj, part)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is read as YAML (``3`` is an int, ``[1, 2]`` a list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (for example data.clip_len=8)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def check_config(cfg: Config) -> None:
    """Cross-key checks that single types cannot express."""
    d = cfg.data
    for key, v in (
        ("data.clip_len", d.clip_len),
        ("data.frame_interval", d.frame_interval),
        ("data.test_clips", d.test_clips),
        ("data.crop_size", d.crop_size),
        ("data.short_side", d.short_side),
    ):
        if v < 1:
            raise ConfigError(f"config key '{key}' must be at least 1, got {v}")
    if not 0.0 <= d.selection_fraction < 1.0:
        raise ConfigError(
            f"config key 'data.selection_fraction' must be in [0, 1), got {d.selection_fraction}"
        )
    if d.num_workers < 0:
        raise ConfigError(f"config key 'data.num_workers' must be >= 0, got {d.num_workers}")
    if d.short_side_max < d.short_side:
        raise ConfigError(
            f"config key 'data.short_side_max' ({d.short_side_max}) must be >= data.short_side ({d.short_side})"
        )
    if d.crop_size > d.short_side:
        raise ConfigError(
            f"config key 'data.crop_size' ({d.crop_size}) must be <= data.short_side ({d.short_side})"
        )
    compressions = get_args(_hints(DataConfig)["cache_compression"])
    if d.cache_compression not in compressions:  # a DataConfig built in Python skips the YAML type check
        raise ConfigError(
            f"config key 'data.cache_compression': {d.cache_compression!r} is not valid; choose one of "
            f"{', '.join(compressions)}"
        )
    if len(d.mean) != 3 or len(d.std) != 3:
        raise ConfigError("config keys 'data.mean' and 'data.std' must hold 3 numbers (RGB)")
    for key, values in (("data.mean", d.mean), ("data.std", d.std)):
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"config key '{key}' must hold 3 finite numbers, got {values!r}")
    if any(v <= 0 for v in d.std):
        raise ConfigError(f"config key 'data.std' must hold 3 positive numbers (it divides), got {d.std!r}")
    for pair in d.flip_swap:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, int) for x in pair)):
            raise ConfigError(f"config key 'data.flip_swap': each entry must be a pair of ints, got {pair!r}")
    r = cfg.run
    if r.seed < 0:
        raise ConfigError(f"config key 'run.seed' must be >= 0, got {r.seed}")
    if r.seeds < 1:
        raise ConfigError(f"config key 'run.seeds' must be at least 1 (1: one template), got {r.seeds}")
    if r.threads < 0:
        raise ConfigError(f"config key 'run.threads' must be >= 0 (0: torch's default), got {r.threads}")
    if not r.out.strip():
        raise ConfigError("config key 'run.out' must name a run directory, got an empty string")
    if r.dist_timeout_s < 0:
        raise ConfigError(
            f"config key 'run.dist_timeout_s' must be >= 0 (0: torch's default), got {r.dist_timeout_s}"
        )
    if d.prefetch_factor < 1:
        raise ConfigError(f"config key 'data.prefetch_factor' must be at least 1, got {d.prefetch_factor}")
    t = cfg.train
    for key, v in (
        ("train.batch_size", t.batch_size),
        ("train.eval_samples", t.eval_samples),
        ("train.eval_every", t.eval_every),
        ("train.log_every", t.log_every),
    ):
        if v < 1:
            raise ConfigError(f"config key '{key}' must be at least 1, got {v}")
    if t.checkpoint_every_steps < 0:
        raise ConfigError(
            f"config key 'train.checkpoint_every_steps' must be >= 0 (0: at epoch ends only), "
            f"got {t.checkpoint_every_steps}"
        )
    if t.warmup_epochs < 0 or t.epochs < 0 or t.warmup_epochs + t.epochs < 1:
        raise ConfigError(
            "config keys 'train.warmup_epochs' and 'train.epochs' must be >= 0 with a positive sum"
        )
    if t.temperature_from < 0:
        raise ConfigError(
            f"config key 'train.temperature_from' must be >= 0 (0: fixed temperature), got {t.temperature_from}"
        )
    if t.warmup_full_epochs < 0:
        raise ConfigError(f"config key 'train.warmup_full_epochs' must be >= 0, got {t.warmup_full_epochs}")
    for key, v, low in (
        ("train.lr", t.lr, None),
        ("train.logit_lr", t.logit_lr, 0),
        ("train.k", t.k, 0),
        ("train.k_auto", t.k_auto, 0),
    ):
        if (low is None and v <= 0) or (low is not None and v < low):
            raise ConfigError(f"config key '{key}' must be {'> 0' if low is None else '>= 0'}, got {v}")
    if t.grad_clip < 0 or t.weight_decay < 0:
        raise ConfigError(
            f"config keys 'train.grad_clip' and 'train.weight_decay' must be >= 0, got {t.grad_clip}, "
            f"{t.weight_decay}"
        )
    if any(not isinstance(m, int) or m < 1 for m in t.milestones):
        raise ConfigError(
            f"config key 'train.milestones' must hold positive epoch numbers, got {t.milestones}"
        )
    try:
        check_model_config(cfg.model)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides; validated."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            mapping = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        try:
            _apply_mapping(cfg, mapping)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    for text in overrides:
        key, value = parse_override(text)
        set_key(cfg, key, value)
    check_config(cfg)
    return cfg


def explicit_keys(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> set[str]:
    """The dotted keys a config file and ``key=value`` overrides set (a section counts as its keys)."""
    keys: set[str] = set()

    def walk(mapping: Any, prefix: str) -> None:
        if not isinstance(mapping, dict):
            return
        for name, value in mapping.items():
            key = prefix + str(name)
            if isinstance(value, dict) and not prefix:
                walk(value, key + ".")
            else:
                keys.add(key)

    if path is not None and Path(path).is_file():
        try:
            walk(yaml.safe_load(Path(path).read_text()) or {}, "")
        except yaml.YAMLError:
            pass  # load_config reports it
    for text in overrides:
        key, value = parse_override(text)
        if isinstance(value, dict) and "." not in key:
            walk(value, key + ".")
        else:
            keys.add(key)
    return keys


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(mapping: dict) -> Config:
    cfg = Config()
    _apply_mapping(cfg, mapping)
    check_config(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config atomically as YAML."""
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every key: the schema as a table."""
    rows = []
    hints = _hints(cls)
    inst = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, prefix + f.name + "."))
        else:
            rows.append(
                (prefix + f.name, _type_name(tp), repr(getattr(inst, f.name)), f.metadata.get("help", ""))
            )
    return rows
