"""Models f_theta: R^d -> R with flat parameters theta in R^p.

* ``TorchModel`` (``sgdsde.models.torch_model``): the protocol a deep network
  implements with torch maths alone (predictions; phi^T v by one backward pass);
  ``ModuleModel`` wraps a ``torch.nn.Module`` into it. The torch SDE solver
  ``euler_torch`` runs any TorchModel.
* ``Model`` (``sgdsde.models.base``): the closed-form models, a TorchModel plus numba
  kernels, which every solver and SGD engine runs. Adding one: a file defining a
  ``Model`` subclass and one line in ``MODELS`` below; the conformance tests in
  tests/test_models.py then cover it (they fail until it has a test case).
"""

from __future__ import annotations

from typing import Any

from sgdsde.models.base import Model
from sgdsde.models.collapse import GeluPair, LinearTeacherStudent, QuarticWell, TanhNeuron
from sgdsde.models.deep_relu import DeepReLU
from sgdsde.models.diagonal import DiagonalLinearNet
from sgdsde.models.linear import LinearRegression
from sgdsde.models.module import ModuleModel
from sgdsde.models.relu import TwoLayerReLU
from sgdsde.models.torch_model import TorchModel
from sgdsde.registry import Registry

# name -> class of every closed-form model, built from its config (``make_model``,
# ``model_from_config``); a ModuleModel wraps a live torch module and is not in it.
MODELS: Registry[Model] = Registry("model")
for _cls in (
    DiagonalLinearNet,
    TwoLayerReLU,
    DeepReLU,
    LinearRegression,
    QuarticWell,
    TanhNeuron,
    GeluPair,
    LinearTeacherStudent,
):
    MODELS.register(_cls)
del _cls


def make_model(name: str, **options: Any) -> Model:
    """Build a registered model by name, e.g. ``make_model("diagonal_linear", d=200)``;
    an unknown name or option is a ValueError listing the choices."""
    return MODELS.make(name, **options)


def model_from_config(cfg: dict[str, Any]) -> Model:
    """Inverse of ``Model.to_config``: ``{"name": <MODELS key>, <option>: <value>}``."""
    return MODELS.from_config(cfg)


__all__ = [
    "MODELS",
    "DeepReLU",
    "DiagonalLinearNet",
    "GeluPair",
    "LinearRegression",
    "LinearTeacherStudent",
    "Model",
    "ModuleModel",
    "QuarticWell",
    "TanhNeuron",
    "TorchModel",
    "TwoLayerReLU",
    "make_model",
    "model_from_config",
]
