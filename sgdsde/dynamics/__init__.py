"""Exact discrete dynamics: GD, minibatch SGD, label-noise SGD; schedules; save grids;
the SGD engines (``ENGINES``), steppers of ``sgdsde.run.driver``."""

from sgdsde.dynamics.engines import (
    ENGINES,
    Engine,
    NumbaEngine,
    NumpyEngine,
    SGDProblem,
    TorchEngine,
    engine_from_config,
    engine_to_config,
    make_engine,
)
from sgdsde.dynamics.schedules import (
    SCHEDULES,
    Constant,
    ExponentialWarmup,
    LinearWarmup,
    Piecewise,
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
    "ENGINES",
    "GD",
    "SCHEDULES",
    "SGD",
    "Constant",
    "Engine",
    "ExponentialWarmup",
    "LinearWarmup",
    "NumbaEngine",
    "NumpyEngine",
    "Piecewise",
    "PiecewiseEpochs",
    "PowerWarmup",
    "SGDProblem",
    "Schedule",
    "StepDecay",
    "TorchEngine",
    "as_grid",
    "as_schedule",
    "cumulative_time",
    "engine_from_config",
    "engine_to_config",
    "eval_grid",
    "make_engine",
    "make_schedule",
    "schedule_from_config",
    "simulate_sgd",
]
