"""sgdsde: exact SGD and its SDE model side by side on closed-form toy networks.

Conventions (fixed package-wide): loss L = 1/(2n) sum_i (f(x_i) - y_i)^2; SGD
theta <- theta - eta (1/B) sum_{i in S} (r_i + xi_i) grad f(x_i) with label noise
xi ~ N(0, delta); SDE time t = sum of step sizes.
"""

import os

# numba's parallel kernels and torch each run an OpenMP pool; with the default
# (spinning) wait policy the two pools fight over the cores, and on 2 cores every
# numba parallel call then costs ~8 ms instead of ~0.05 ms (measured). Idle threads
# must sleep. This only takes effect if set before numba or torch start their pools,
# hence here, before they are imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sgdsde.analysis import compare_sgd_sde, weak_error_order
from sgdsde.data import (
    RegressionData,
    make_data,
    regression_1d,
    sparse_regression,
    teacher_student_sphere,
)
from sgdsde.dynamics import GD, SGD, eval_grid, make_schedule, simulate_sgd
from sgdsde.models import MODELS, Model, make_model
from sgdsde.run.dataset import load_dataset, save_dataset
from sgdsde.sde import make_noise, simulate_sde
from sgdsde.version import __version__

__all__ = [
    "GD",
    "MODELS",
    "SGD",
    "Model",
    "RegressionData",
    "__version__",
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
