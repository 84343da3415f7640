"""The generic registry (make / from_config / to_config) and the lazy module loader."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest

from sgdsde.registry import Registry, to_config


@dataclasses.dataclass(frozen=True)
class Widget:
    name: ClassVar[str] = "widget"
    size: int = 1
    weights: tuple = (1.0, 2.0)


def test_make_from_config_round_trip():
    reg = Registry("widget", {"widget": Widget})
    w = reg.make("widget", size=3, weights=(np.float64(0.5),))
    cfg = to_config(w)
    assert cfg == {"name": "widget", "size": 3, "weights": [0.5]}
    assert isinstance(cfg["weights"][0], float)
    assert reg.from_config(cfg) == Widget(size=3, weights=[0.5])


def test_errors_name_the_choices():
    reg = Registry("widget", {"widget": Widget})
    with pytest.raises(ValueError, match=r"unknown widget 'gadget'.*\['widget'\]"):
        reg.make("gadget")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\].*accepts \['size'"):
        reg.make("widget", colour="red")
    with pytest.raises(ValueError, match="'name' key"):
        reg.from_config({"size": 2})
    with pytest.raises(ValueError, match="already registered"):
        reg.register(type("Other", (), {"name": "widget"}))


def test_lazy_module_defers_import():
    code = (
        "import sys; from sgdsde.lazy import lazy_module; "
        "m = lazy_module('wave'); assert 'wave' not in sys.modules; "
        "assert m.Error is not None; assert 'wave' in sys.modules"
    )
    # a fresh interpreter: the test process has imported everything already
    subprocess.run([sys.executable, "-c", code], check=True)
