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
    phase_config,
    phase_diagram,
    seed_child,
)
from sgdsde.analysis.phase_theory import (
    catapult_window,
    majority_regime,
    stabilization_edges,
    with_phase_edges,
)
from sgdsde.analysis.regimes import Regime, RegimeCriteria, classify_regimes
from sgdsde.analysis.sweep import (
    DaskExecutor,
    ProcessExecutor,
    SerialExecutor,
    Sweep,
    as_executor,
    export_sweep,
    open_sweep,
    run_sweep,
)
from sgdsde.analysis.weak_error import weak_error_order

__all__ = [
    "AXES",
    "BatchSizeAxis",
    "CellSettings",
    "DaskExecutor",
    "DecayFractionAxis",
    "InitScaleAxis",
    "LabelNoiseAxis",
    "ProcessExecutor",
    "Regime",
    "RegimeCriteria",
    "SDEDynamics",
    "SGDDynamics",
    "SerialExecutor",
    "Sweep",
    "SweepAxis",
    "as_executor",
    "catapult_window",
    "classify_regimes",
    "compare_sgd_sde",
    "export_sweep",
    "label_noise_sde",
    "majority_regime",
    "open_sweep",
    "phase_config",
    "phase_diagram",
    "run_sweep",
    "seed_child",
    "stabilization_edges",
    "weak_error_order",
    "with_phase_edges",
]
