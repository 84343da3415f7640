"""Metrics: functions of parameters, models and data (norms of beta, ...), usable on saved
parameters and, through ``sgdsde.run.recording``, recorded while a run goes."""

from sgdsde.metrics.norms import l0_norm, l1_norm, l2_norm

__all__ = ["l0_norm", "l1_norm", "l2_norm"]
