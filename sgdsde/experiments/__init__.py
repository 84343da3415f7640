"""Experiments from TOML configs: one module per experiment kind, a registry kind -> run.

A top-level ``kind`` in a config selects the experiment: ``"sgd"`` (the default,
``sgdsde.experiments.sgd``) or ``"sgd_vs_sde"`` (exact dynamics and SDEs side by side
from one initialization, ``sgdsde.experiments.sgd_vs_sde``). The built-in configs live
in ``sgdsde/configs`` (also reachable as ``configs/`` at the repository root).
"""

from sgdsde.experiments.config import DEMO_CONFIG, builtin_configs, load_config, require_key
from sgdsde.experiments.sgd import decay_steps, run_experiment, summary_table

__all__ = [
    "DEMO_CONFIG",
    "builtin_configs",
    "decay_steps",
    "load_config",
    "require_key",
    "run_experiment",
    "summary_table",
]
