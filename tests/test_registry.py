"""One strategy grammar and one model registry, as the models package exposes them."""

from __future__ import annotations

import math

import pytest

from fusion3d.analysis.receptive_field import rf_columns
from fusion3d.models import Strategy, count_macs, count_params, create, list_models
from fusion3d.models.network import SlotNetwork
from fusion3d.models.registry import register_model
from fusion3d.models.strategy import as_strategy


def test_every_model_name_comes_from_the_registry():
    names = list_models()
    assert {"tiny", "small", "densenet121_3d", "resnet18_3d", "resnet50_3d", "mobilenetv2_3d"} <= set(names)
    assert set(list_models("backbone")) | set(list_models("preset")) == set(names)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny")(lambda num_classes, **kw: None)


def test_the_strategy_grammar_names_the_bad_unit_and_the_slot_count():
    with pytest.raises(ValueError, match=r"slot 1: unknown unit 'XX'; valid units: S, ST, S\+ST, none"):
        as_strategy("S|XX", 2)
    with pytest.raises(ValueError, match="has 2 units, the model has 6 slots"):
        as_strategy("S|ST", 6)


def test_cost_counters_accept_every_spec_create_accepts():
    model = create("tiny", num_classes=4)
    shape = (3, 4, 32, 32)
    uniform = Strategy.uniform("S", model.num_slots)
    assert count_macs(model, shape, "S") == count_macs(model, shape, uniform)
    assert count_params(model, "S") == count_params(model, uniform)
    assert count_macs(model, shape, "|".join(["S"] * model.num_slots)) == count_macs(model, shape, uniform)


def test_a_network_without_a_receptive_field_description_gives_nan_columns():
    class Bare(SlotNetwork):  # a slot network that does not describe itself
        pass

    model = create("tiny", num_classes=4)
    model.__class__ = type("BareTiny", (Bare,), {"rf_graph": SlotNetwork.rf_graph})
    cols = rf_columns(model, Strategy.uniform("S", model.num_slots))
    assert all(math.isnan(v) for v in cols.values())


def test_a_model_registered_by_the_user_is_accepted_by_the_config_and_built():
    from fusion3d.config import load_config
    from fusion3d.models import build_model
    from fusion3d.models.registry import _MODELS

    @register_model("user_net_for_test", kind="backbone")
    def user_net_for_test(num_classes, **kw):
        """a user's network: a small ResNet-18"""
        return create("resnet18_3d", num_classes=num_classes, width_mult=0.25)

    try:
        cfg = load_config(None, ["model.name=user_net_for_test"])
        model = build_model(cfg.model, 3)
        assert model.num_slots == 8
    finally:
        _MODELS.pop("user_net_for_test", None)
    with pytest.raises(Exception, match="not a registered model"):
        load_config(None, ["model.name=user_net_for_test"])
