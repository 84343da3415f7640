"""Experiments from TOML configs: validation, one module per experiment kind, and a
registry kind -> ``Experiment`` (prepare / run / table / plot).

A top-level ``kind`` in a config selects the experiment: ``"sgd"`` (the default,
``sgdsde.experiments.sgd``) or ``"sgd_vs_sde"`` (exact dynamics and SDEs side by side
from one initialization, ``sgdsde.experiments.sgd_vs_sde``) or ``"phase"`` (a phase
diagram over the step size, ``sgdsde.experiments.phase``) or one of the papers' gallery
(``paper_*``, ``sgdsde.experiments.gallery``: each reproduces one figure and reports
its numbers over seeds beside the published ones). ``run_experiment``
validates a config whole, before any work, then runs it. The built-in configs live in
``sgdsde/configs`` (also reachable as ``configs/`` at the repository root).
"""

from sgdsde.experiments.base import EXPERIMENTS, Experiment, Plan, experiment_for, run_experiment
from sgdsde.experiments.config import (
    DEMO_CONFIG,
    ConfigError,
    builtin_configs,
    load_config,
    require_key,
)
from sgdsde.experiments.paper_collapse_gelu import GeluCollapse
from sgdsde.experiments.paper_collapse_linear_modes import CollapseLinearModes
from sgdsde.experiments.paper_collapse_quartic import QuarticCollapse
from sgdsde.experiments.paper_collapse_tanh import TanhCollapse
from sgdsde.experiments.paper_dln import PaperDLNGDvsSGD, PaperDLNNotebookData
from sgdsde.experiments.paper_dln_slice import PaperDLNLossSlice
from sgdsde.experiments.paper_relu_1d import PaperRelu1D
from sgdsde.experiments.paper_relu_teacher_student import PaperReluTeacherStudent
from sgdsde.experiments.paper_relu_three_layer import PaperReluThreeLayer
from sgdsde.experiments.paper_walk import Walk
from sgdsde.experiments.phase import PhaseExperiment, execute_phase, phase_table
from sgdsde.experiments.sgd import SGDExperiment, decay_steps, summary_table
from sgdsde.experiments.sgd_vs_sde import SGDvsSDE, sgd_vs_sde_table

__all__ = [
    "DEMO_CONFIG",
    "EXPERIMENTS",
    "CollapseLinearModes",
    "ConfigError",
    "Experiment",
    "GeluCollapse",
    "PaperDLNGDvsSGD",
    "PaperDLNLossSlice",
    "PaperDLNNotebookData",
    "PaperRelu1D",
    "PaperReluTeacherStudent",
    "PaperReluThreeLayer",
    "PhaseExperiment",
    "Plan",
    "QuarticCollapse",
    "SGDExperiment",
    "SGDvsSDE",
    "TanhCollapse",
    "Walk",
    "builtin_configs",
    "decay_steps",
    "execute_phase",
    "experiment_for",
    "load_config",
    "phase_table",
    "require_key",
    "run_experiment",
    "sgd_vs_sde_table",
    "summary_table",
]
