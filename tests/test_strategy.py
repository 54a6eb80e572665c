"""Strategy: validation, string / JSON / file round trips, keep masks, id."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from fusion3d.models.strategy import UNITS, Strategy


def test_validation_and_views():
    s = Strategy(("S+ST", "ST", "S", "none"))
    assert str(s) == "S+ST|ST|S|none"
    assert len(s) == 4 and s[1] == "ST" and list(s) == ["S+ST", "ST", "S", "none"]
    assert s.counts() == {"S": 1, "ST": 1, "S+ST": 1, "none": 1}
    assert Strategy(["S", "S"]).units == ("S", "S")  # lists become tuples
    with pytest.raises(ValueError, match="unknown unit 'T'"):
        Strategy(("S", "T"))
    assert set(UNITS) == {"S", "ST", "S+ST", "none"}


def test_id_is_stable_sha1_prefix():
    s = Strategy.from_string("S+ST|ST|S|none")
    assert s.id == hashlib.sha1(b"S+ST|ST|S|none").hexdigest()[:10]
    assert len(s.id) == 10 and s.id == Strategy(("S+ST", "ST", "S", "none")).id
    assert s.id != Strategy.from_string("S+ST|ST|none|S").id


def test_string_round_trip_and_uniform():
    u = Strategy.uniform("ST", 5)
    assert u.units == ("ST",) * 5
    assert Strategy.from_string(str(u)) == u
    assert Strategy.from_string(" S | none ") == Strategy(("S", "none"))
    assert Strategy.from_string("") == Strategy(())
    assert u.counts() == {"S": 0, "ST": 5, "S+ST": 0, "none": 0}


def test_keep_mask_round_trip():
    s = Strategy(("S", "ST", "S+ST", "none"))
    keep = np.array(s.keep())
    assert keep.dtype == bool and keep.shape == (4, 2)
    assert keep.tolist() == [[True, False], [False, True], [True, True], [False, False]]
    assert Strategy.from_keep(keep) == s
    with pytest.raises(ValueError):
        Strategy.from_keep([[True, False, True]])


def test_json_and_file_round_trip(tmp_path):
    s = Strategy(("S+ST", "none", "ST"))
    d = json.loads(s.to_json())
    assert d == {"id": s.id, "string": "S+ST|none|ST", "units": ["S+ST", "none", "ST"]}
    assert Strategy.from_json(s.to_json()) == s
    names = ["block1.layer1", "transition1", "block2.layer1"]
    path = tmp_path / "strategy.json"
    s.save(path, slot_names=names)
    assert json.loads(path.read_text())["slots"] == names
    assert Strategy.load(path) == s
    s.save(tmp_path / "noslots.json")
    assert Strategy.load(tmp_path / "noslots.json") == s
    assert Strategy.from_dict(["S", "ST"]) == Strategy(("S", "ST"))
    assert Strategy.from_dict({"string": "S|ST"}) == Strategy(("S", "ST"))
    with pytest.raises(ValueError, match="does not match"):
        Strategy.from_dict({"units": ["S"], "id": "0000000000"})
    with pytest.raises(ValueError):
        s.to_json(slot_names=["a"])
