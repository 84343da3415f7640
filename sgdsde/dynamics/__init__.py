"""Exact discrete dynamics: GD, minibatch SGD, label-noise SGD; schedules; save grids."""

from sgdsde.dynamics.schedules import (
    SCHEDULES,
    Constant,
    ExponentialWarmup,
    LinearWarmup,
    PiecewiseEpochs,
    PowerWarmup,
    Schedule,
    StepDecay,
    as_schedule,
    cumulative_time,
    make_schedule,
    schedule_from_config,
)
from sgdsde.dynamics.sgd import GD, SGD, simulate_sgd
from sgdsde.run.grids import as_grid, eval_grid

__all__ = [
    "GD",
    "SCHEDULES",
    "SGD",
    "Constant",
    "ExponentialWarmup",
    "LinearWarmup",
    "PiecewiseEpochs",
    "PowerWarmup",
    "Schedule",
    "StepDecay",
    "as_grid",
    "as_schedule",
    "cumulative_time",
    "eval_grid",
    "make_schedule",
    "schedule_from_config",
    "simulate_sgd",
]
