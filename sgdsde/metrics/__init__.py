"""Metrics: functions of parameters, models and data, and the metric objects a run
records (``sgdsde.run.recording``), as diffrax's ``SaveAt(fn=...)``.

* ``norms``: array functions (l0/l1/l2 norms), usable on saved parameters;
* ``base``: ``Metric`` (a named function of theta, the model and the data), the
  ``METRICS`` registry and ``as_recordable`` (name / config / (name, fn) -> object);
* ``builtin``: the metrics every run records and ``beta``;
* ``temporal``: ``TimeAverage`` and ``FirstPassage`` of a metric.
"""

from sgdsde.metrics.base import METRICS, Metric, Recordable, as_metric, as_recordable
from sgdsde.metrics.builtin import (
    Beta,
    L0Norm,
    L1Norm,
    ParamNorm,
    Params,
    TestLoss,
    TrainLoss,
)
from sgdsde.metrics.norms import l0_norm, l1_norm, l2_norm
from sgdsde.metrics.temporal import FirstPassage, TimeAverage

__all__ = [
    "METRICS",
    "Beta",
    "FirstPassage",
    "L0Norm",
    "L1Norm",
    "Metric",
    "ParamNorm",
    "Params",
    "Recordable",
    "TestLoss",
    "TimeAverage",
    "TrainLoss",
    "as_metric",
    "as_recordable",
    "l0_norm",
    "l1_norm",
    "l2_norm",
]
