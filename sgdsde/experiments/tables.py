"""The config tables every experiment kind shares: ``[data]``, ``[model]``, ``[save]``,
``[sgd]`` and the names of ``[[runs]]``, each checked and turned into its object."""

from __future__ import annotations

from typing import Any

import numpy as np

from sgdsde.data import GENERATORS, RegressionData, make_data
from sgdsde.dynamics import SGD
from sgdsde.dynamics.schedules import Piecewise, schedule_from_config
from sgdsde.experiments.config import ConfigChecker, Key
from sgdsde.models import MODELS, Model, make_model
from sgdsde.run.checks import accepted_options
from sgdsde.run.grids import eval_grid

#: ``[save]``: the save grid (``sgdsde.run.grids.eval_grid``) and the l0 threshold.
SAVE_KEYS: dict[str, Key] = {
    "n_dense": Key("int", "how many leading steps to save (0: none)", minimum=0),
    "n_points": Key("int", "save points spread over the run (at least 2)", minimum=2),
    "spacing": Key("str", "how they are spread", choices=("linear", "log")),
    "l0_threshold": Key("number", "|beta_i| above it counts in l0_norm", minimum=0),
}

#: ``[sgd]``: minibatch SGD (``sgdsde.dynamics.SGD``); ``batch_size = "full"`` is GD.
SGD_KEYS: dict[str, Key] = {
    "batch_size": Key(
        "int",
        'the minibatch size B, "full" for GD, or a schedule table of integer B_k',
        minimum=1,
    ),
    "label_noise": Key(
        "any", "the label-noise variance delta (0: none), or a schedule table of delta_k"
    ),
    "with_replacement": Key("bool", "draw minibatches with replacement"),
}


def prepare_data(checker: ConfigChecker, value: Any) -> RegressionData | None:
    """``[data]``: ``generator`` (a key of ``sgdsde.data.GENERATORS``) and its options."""
    if not isinstance(value, dict):
        return None  # the top-level schema has recorded it
    generator = value.get("generator")
    if generator not in GENERATORS:
        checker.problem(
            "data.generator",
            f"must be one of {sorted(GENERATORS)} (got {generator!r}): "
            "the data generator of sgdsde.data",
        )
        return None
    options = checker.options("data", value, GENERATORS[generator], reserved=("generator",))
    if options is None:
        return None
    return checker.build("data", make_data, generator, **options)


def prepare_model(checker: ConfigChecker, value: Any, data: RegressionData | None) -> Model | None:
    """``[model]``: ``name`` (a key of ``sgdsde.models.MODELS``) and its options; the
    input dimension ``d``, when the model takes one and the table omits it, is the data's."""
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    if name not in MODELS:
        checker.problem(
            "model.name", f"must be one of {sorted(MODELS)} (got {name!r}): the model to train"
        )
        return None
    table = dict(value)
    if "d" not in table and "d" in accepted_options(MODELS[name])[0]:
        if data is None:  # [data] failed: check the keys only (d would come from it)
            table["d"] = 0
            checker.options("model", table, MODELS[name], reserved=("name",))
            return None
        table["d"] = data.d
    options = checker.options("model", table, MODELS[name], reserved=("name",))
    if options is None:
        return None
    model = checker.build("model", make_model, name, **options)
    if model is not None and data is not None and model.input_dim != data.d:
        checker.problem(
            "model",
            f"expects inputs of dimension {model.input_dim} but the data has d = {data.d}: "
            "drop d from [model] (it defaults to the data's) or match [data]",
        )
    return model


def prepare_save(
    checker: ConfigChecker, value: Any, n_steps: int | None
) -> tuple[np.ndarray | None, float | None]:
    """``[save]`` -> (save grid of SGD steps, l0 threshold or None for the simulator's)."""
    save = checker.table("save", value, SAVE_KEYS)
    l0_threshold = save.pop("l0_threshold", None)
    grid = None if n_steps is None else checker.build("save", eval_grid, n_steps, **save)
    return grid, None if l0_threshold is None else float(l0_threshold)


def prepare_sgd(
    checker: ConfigChecker, path: str, value: Any, data: RegressionData | None
) -> SGD | None:
    """An ``[sgd]`` table -> ``SGD``, with ``batch_size`` in [1, n], ``"full"`` (GD) or a
    schedule table of integer batch sizes B_k (e.g. ``{name = "piecewise", levels = [1,
    16], at = [0.5]}``)."""
    if not isinstance(value, dict):
        checker.problem(path, f"must be a table (got {value!r}): {list(SGD_KEYS)}")
        return None
    batch_value = value.get("batch_size")
    special = batch_value == "full" or isinstance(batch_value, dict)
    table = {k: v for k, v in value.items() if not (special and k == "batch_size")}
    problems = len(checker.problems)
    options = checker.table(path, table, SGD_KEYS)
    if batch_value == "full":
        options["batch_size"] = None
    elif isinstance(batch_value, dict):
        options["batch_size"] = checker.build(
            f"{path}.batch_size", schedule_from_config, batch_value
        )
    if isinstance(options.get("label_noise"), dict):
        options["label_noise"] = checker.build(
            f"{path}.label_noise", schedule_from_config, options["label_noise"]
        )
    batch = options.get("batch_size")
    peak = max(batch.levels) if isinstance(batch, Piecewise) else batch
    if isinstance(peak, int | float) and data is not None and peak > data.n:
        checker.problem(
            f"{path}.batch_size",
            f'must be <= n = {data.n} (got {peak:g}): the data has {data.n} examples; "full" is GD',
        )
    if len(checker.problems) > problems:
        return None
    return checker.build(path, SGD, **options)


def prepare_run_names(checker: ConfigChecker, runs: list[Any]) -> list[str]:
    """Each ``[[runs]]`` entry's ``name``: a string, distinct from the others (a run is
    selected by name in the dataset, ``ds.sel(run=name)``)."""
    names: list[str] = []
    for i, run in enumerate(runs):
        name = run.get("name") if isinstance(run, dict) else None
        if not isinstance(name, str) or not name:
            checker.problem(f"runs[{i}].name", f"must be a non-empty string (got {name!r})")
            name = f"run {i}"
        elif name in names:
            checker.problem(
                f"runs[{i}].name", f"{name!r} repeats runs[{names.index(name)}]: name each run"
            )
        names.append(name)
    return names
