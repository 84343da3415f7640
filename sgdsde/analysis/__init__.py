"""Analysis: consumes what the simulators produce (SGD-vs-SDE statistics, weak-error
orders, plots)."""

from sgdsde.analysis.compare import compare_sgd_sde
from sgdsde.analysis.weak_error import weak_error_order

__all__ = ["compare_sgd_sde", "weak_error_order"]
