"""The configuration schema: defaults, YAML, overrides, and errors that name the key."""

import pytest
import yaml

from fusion3d.config import Config, ConfigError, describe, from_dict, load_config, save_config, to_dict


def test_defaults_validate_and_every_key_has_a_description():
    cfg = load_config()
    assert isinstance(cfg, Config)
    rows = describe()
    assert len(rows) > 20
    assert all(help_ for _, _, _, help_ in rows), [k for k, _, _, h in rows if not h]


def test_yaml_then_overrides_apply_in_order(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  clip_len: 4\n  frame_interval: 3\nrun:\n  seed: 7\n")
    cfg = load_config(p, ["data.clip_len=6", "data.mean=[0.5, 0.5, 0.5]"])
    assert (cfg.data.clip_len, cfg.data.frame_interval, cfg.run.seed) == (6, 3, 7)
    assert cfg.data.mean == [0.5, 0.5, 0.5]


def test_unknown_key_names_the_key_and_suggests_the_valid_one():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.clip_lenn=4"])
    assert "data.clip_lenn" in str(e.value) and "clip_len" in str(e.value)


def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("data:\n  fromat: ucf101\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "bad.yaml" in str(e.value) and "data.fromat" in str(e.value) and "format" in str(e.value)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="data.clip_len.*integer"):
        load_config(None, ["data.clip_len=eight"])
    with pytest.raises(ConfigError, match="run.seed"):
        load_config(None, ["run.seed=1.5"])


def test_bad_choice_lists_the_valid_choices():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.sampling=random"])
    assert "data.sampling" in str(e.value) and "dense" in str(e.value) and "segment" in str(e.value)


def test_yaml_booleans_map_onto_on_off_choices():
    assert load_config(None, ["data.flip=off"]).data.flip == "off"
    assert load_config(None, ["data.flip=on"]).data.flip == "on"


def test_cross_key_check_names_both_keys():
    with pytest.raises(ConfigError, match="data.crop_size.*data.short_side"):
        load_config(None, ["data.crop_size=100", "data.short_side=64", "data.short_side_max=64"])


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["data.clip_len"])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["data.clip_len=5", "data.flip_swap=[[1, 2]]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert to_dict(again) == to_dict(cfg)


def test_shipped_configs_are_valid():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert files, "configs/ holds no YAML files"
    for f in files:
        load_config(f)


def test_exponent_without_dot_is_a_float():
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 0.001


def test_activation_checkpointing_is_a_boolean_off_by_default():
    assert load_config().train.activation_checkpointing is False
    assert load_config(None, ["train.activation_checkpointing=true"]).train.activation_checkpointing is True
    with pytest.raises(ConfigError, match=r"train\.activation_checkpointing.*true or false"):
        load_config(None, ["train.activation_checkpointing=2"])
