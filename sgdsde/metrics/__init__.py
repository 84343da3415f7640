"""Metrics: functions of parameters, models and data, and the metric objects a run
records (``sgdsde.run.recording``), as diffrax's ``SaveAt(fn=...)``.

* ``norms``: array functions (l0/l1/l2 norms), usable on saved parameters;
* ``base``: ``Metric`` (a named function of theta, the model and the data), the
  ``METRICS`` registry and ``as_recordable`` (name / config / (name, fn) -> object);
* ``builtin``: the metrics every run records and ``beta``;
* ``temporal``: ``TimeAverage`` and ``FirstPassage`` of a metric, and
  ``IterateMetric`` (a function of consecutive iterates and theta_0);
* the papers' measurements, each a plain function and a registered metric:
  ``diagonal`` (distance to beta*, balancedness), ``jacobian`` (rank, effective rank,
  column norms), ``features`` (feature sparsity, active fraction, dead units, ReLU
  flips), ``collapse`` (vanishing, identical and independent neurons), ``walk``
  (segment floor, update cosine, distance from init), ``curvature`` (top Hessian
  eigenvalue, Hessian trace).
"""

from sgdsde.metrics import collapse, curvature, diagonal, features, jacobian, walk
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
from sgdsde.metrics.temporal import FirstPassage, IterateMetric, TimeAverage

__all__ = [
    "METRICS",
    "Beta",
    "FirstPassage",
    "IterateMetric",
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
    "collapse",
    "curvature",
    "diagonal",
    "features",
    "jacobian",
    "l0_norm",
    "l1_norm",
    "l2_norm",
    "walk",
]
