"""Closed-form models. Adding a model: one file defining a ``Model`` subclass, and
one line in ``MODELS`` below; the conformance tests in tests/test_models.py then
cover it."""

from __future__ import annotations

from typing import Any

from sgdsde.models.base import Model
from sgdsde.models.collapse import GeluPair, LinearTeacherStudent, QuarticWell, TanhNeuron
from sgdsde.models.deep_relu import DeepReLU
from sgdsde.models.diagonal import DiagonalLinearNet
from sgdsde.models.linear import LinearRegression
from sgdsde.models.relu import TwoLayerReLU

MODELS: dict[str, type[Model]] = {
    "diagonal_linear": DiagonalLinearNet,
    "two_layer_relu": TwoLayerReLU,
    "deep_relu": DeepReLU,
    "linear_regression": LinearRegression,
    "quartic_well": QuarticWell,
    "tanh_neuron": TanhNeuron,
    "gelu_pair": GeluPair,
    "linear_teacher_student": LinearTeacherStudent,
}


def make_model(name: str, **kwargs: Any) -> Model:
    """Build a registered model by name, e.g. ``make_model("diagonal_linear", d=200)``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as err:
        import dataclasses

        fields = [f.name for f in dataclasses.fields(MODELS[name])]
        raise ValueError(f"bad arguments for model {name!r} ({err}); accepted: {fields}") from err


def model_from_config(cfg: dict[str, Any]) -> Model:
    """Inverse of ``Model.to_config``."""
    cfg = dict(cfg)
    return make_model(cfg.pop("name"), **cfg)


__all__ = [
    "MODELS",
    "DeepReLU",
    "DiagonalLinearNet",
    "GeluPair",
    "LinearRegression",
    "LinearTeacherStudent",
    "Model",
    "QuarticWell",
    "TanhNeuron",
    "TwoLayerReLU",
    "make_model",
    "model_from_config",
]
