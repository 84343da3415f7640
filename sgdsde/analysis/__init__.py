"""Analysis: consumes what the simulators produce (SGD-vs-SDE statistics, weak-error
orders, regimes of a run, plots)."""

from sgdsde.analysis.compare import compare_sgd_sde
from sgdsde.analysis.regimes import Regime, RegimeCriteria, classify_regimes
from sgdsde.analysis.weak_error import weak_error_order

__all__ = [
    "Regime",
    "RegimeCriteria",
    "classify_regimes",
    "compare_sgd_sde",
    "weak_error_order",
]
