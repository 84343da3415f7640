"""sgdsde: exact SGD and its SDE model side by side on closed-form toy networks.

Conventions (fixed package-wide): loss L = 1/(2n) sum_i (f(x_i) - y_i)^2; SGD
theta <- theta - eta (1/B) sum_{i in S} (r_i + xi_i) grad f(x_i) with label noise
xi ~ N(0, delta); SDE time t = sum of step sizes.

The public names below load on first use (PEP 562 module ``__getattr__``): ``import
sgdsde`` itself imports none of numba, torch, torchsde or xarray, and
``sgdsde.simulate_sgd`` imports only what the SGD simulator needs.
"""

import importlib
import os
from typing import TYPE_CHECKING, Any

# numba's parallel kernels and torch each run an OpenMP pool; with the default
# (spinning) wait policy the two pools fight over the cores, and on 2 cores every
# numba parallel call then costs ~8 ms instead of ~0.05 ms (measured). Idle threads
# must sleep. This only takes effect if set before numba or torch start their pools,
# hence here, before they are imported (every sgdsde module imports this file
# first); a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sgdsde.version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "classify_regimes": "sgdsde.analysis",
    "compare_sgd_sde": "sgdsde.analysis",
    "weak_error_order": "sgdsde.analysis",
    "RegressionData": "sgdsde.data",
    "make_data": "sgdsde.data",
    "regression_1d": "sgdsde.data",
    "sparse_regression": "sgdsde.data",
    "teacher_student_sphere": "sgdsde.data",
    "GD": "sgdsde.dynamics",
    "SGD": "sgdsde.dynamics",
    "eval_grid": "sgdsde.dynamics",
    "make_schedule": "sgdsde.dynamics",
    "simulate_sgd": "sgdsde.dynamics",
    "MODELS": "sgdsde.models",
    "Model": "sgdsde.models",
    "ModuleModel": "sgdsde.models",
    "TorchModel": "sgdsde.models",
    "make_model": "sgdsde.models",
    "METRICS": "sgdsde.metrics",
    "FirstPassage": "sgdsde.metrics",
    "Metric": "sgdsde.metrics",
    "TimeAverage": "sgdsde.metrics",
    "load_dataset": "sgdsde.run.dataset",
    "save_dataset": "sgdsde.run.dataset",
    "make_noise": "sgdsde.sde",
    "simulate_sde": "sgdsde.sde",
}

# Subpackages and modules reachable as attributes (``sgdsde.models.MODELS``) without
# an import of their own, as when ``import sgdsde`` imported them all eagerly.
_SUBMODULES = {
    "analysis",
    "cli",
    "data",
    "dynamics",
    "experiments",
    "lazy",
    "metrics",
    "models",
    "random",
    "registry",
    "run",
    "sde",
    "theory",
    "validation",
    "version",
    "xoshiro",
}

__all__ = [  # the names of _EXPORTS and __version__ (tests/test_startup.py checks)
    "GD",
    "METRICS",
    "MODELS",
    "SGD",
    "FirstPassage",
    "Metric",
    "Model",
    "ModuleModel",
    "RegressionData",
    "TimeAverage",
    "TorchModel",
    "__version__",
    "classify_regimes",
    "compare_sgd_sde",
    "eval_grid",
    "load_dataset",
    "make_data",
    "make_model",
    "make_noise",
    "make_schedule",
    "regression_1d",
    "save_dataset",
    "simulate_sde",
    "simulate_sgd",
    "sparse_regression",
    "teacher_student_sphere",
    "weak_error_order",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from sgdsde.analysis import classify_regimes, compare_sgd_sde, weak_error_order
    from sgdsde.data import (
        RegressionData,
        make_data,
        regression_1d,
        sparse_regression,
        teacher_student_sphere,
    )
    from sgdsde.dynamics import GD, SGD, eval_grid, make_schedule, simulate_sgd
    from sgdsde.metrics import METRICS, FirstPassage, Metric, TimeAverage
    from sgdsde.models import MODELS, Model, ModuleModel, TorchModel, make_model
    from sgdsde.run.dataset import load_dataset, save_dataset
    from sgdsde.sde import make_noise, simulate_sde
