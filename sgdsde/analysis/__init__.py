"""Analysis: consumes what the simulators produce (SGD-vs-SDE statistics, weak-error
orders, regimes of a run, phase diagrams over the step size, plots)."""

from sgdsde.analysis.compare import compare_sgd_sde
from sgdsde.analysis.phase import (
    AXES,
    BatchSizeAxis,
    CellSettings,
    DecayFractionAxis,
    InitScaleAxis,
    LabelNoiseAxis,
    SDEDynamics,
    SGDDynamics,
    SweepAxis,
    label_noise_sde,
    phase_diagram,
    seed_child,
)
from sgdsde.analysis.regimes import Regime, RegimeCriteria, classify_regimes
from sgdsde.analysis.weak_error import weak_error_order

__all__ = [
    "AXES",
    "BatchSizeAxis",
    "CellSettings",
    "DecayFractionAxis",
    "InitScaleAxis",
    "LabelNoiseAxis",
    "Regime",
    "RegimeCriteria",
    "SDEDynamics",
    "SGDDynamics",
    "SweepAxis",
    "classify_regimes",
    "compare_sgd_sde",
    "label_noise_sde",
    "phase_diagram",
    "seed_child",
    "weak_error_order",
]
