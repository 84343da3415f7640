"""Experiments from TOML configs: validation, one module per experiment kind, and a
registry kind -> ``Experiment`` (prepare / run / table / plot).

A top-level ``kind`` in a config selects the experiment: ``"sgd"`` (the default,
``sgdsde.experiments.sgd``) or ``"sgd_vs_sde"`` (exact dynamics and SDEs side by side
from one initialization, ``sgdsde.experiments.sgd_vs_sde``) or ``"phase"`` (a phase
diagram over the step size, ``sgdsde.experiments.phase``). ``run_experiment``
validates a config whole, before any work, then runs it. The built-in configs live in
``sgdsde/configs`` (also reachable as ``configs/`` at the repository root).
"""

from sgdsde.experiments import paper_dln, paper_dln_slice  # noqa: F401 (registers the paper_dln kinds)
from sgdsde.experiments.base import EXPERIMENTS, Experiment, Plan, experiment_for, run_experiment
from sgdsde.experiments.config import (
    DEMO_CONFIG,
    ConfigError,
    builtin_configs,
    load_config,
    require_key,
)
from sgdsde.experiments.phase import PhaseExperiment, execute_phase, phase_table
from sgdsde.experiments.sgd import SGDExperiment, decay_steps, summary_table
from sgdsde.experiments.sgd_vs_sde import SGDvsSDE, sgd_vs_sde_table

__all__ = [
    "DEMO_CONFIG",
    "EXPERIMENTS",
    "ConfigError",
    "Experiment",
    "PhaseExperiment",
    "Plan",
    "SGDExperiment",
    "SGDvsSDE",
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
