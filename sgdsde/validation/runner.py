"""``validate``: SGD on a deep network beside the SDE model of it, from a config, over
seeds, compared observable by observable (issue 9, Sec. 4), and the built-in validation
configs (``load_validation_config``).

A validation config is a dict (a TOML file's tables):

* ``data``: {"name": "digits" | "teacher" | "cifar", **loader options};
* ``network``: {"name": "mlp" | "small_cnn" | "resnet18", **network options}; input shape
  and n_outputs default to the data's; its ``seed`` is the run's (below);
* ``sgd``: options of ``train_sgd`` (schedule, n_steps, batch_size, loss, ...);
  ``augmentation`` is true (``Augmentation()``: the paper's crop and flip), false (off)
  or a table of ``Augmentation`` fields ({padding = 4, flip = true});
* ``evaluation`` (optional): fields of ``EvaluationOptions`` (eval_every, metrics_size,
  max_units, feature_threshold, collapse, ...), shared by every run of the comparison;
* ``sde``: {"method": "label_noise" | "sgd_covariance" | "svag", ...} (``SDE_KEYS``):
  label_noise: ``delta`` (a number >= 0; or calibrated from the SGD runs: one number
  from a plateau, "plateau" or "noise_trace", with ``plateau_fraction`` (0.5) or
  ``calibration_window`` ([a, b], fractions of the run: a plateau inside it, e.g.
  [0.25, 0.5] before a step decay at half); or one per step along the run,
  "loss_path" or "noise_trace_path", with ``delta_smoothing`` (50 steps)),
  ``substeps`` (1), ``chunk_size`` (1024); sgd_covariance:
  ``substeps``, ``chunk_size``; svag: ``l`` (an integer >= 1 or a list of them; default
  [1, 2, 4]);
* ``baseline`` (optional): overrides of ``sgd`` (e.g. a smaller ``schedule``) for a
  second SGD run per seed, whose final values are reported beside the SGD and SDE ones
  (the paper's small-step run against the large-step one), and its values over the
  steps with the SDE's relative gap to SGD on the scale of the baseline's
  (``relative_gap``);
* ``description`` (optional, free text), ``n_seeds`` (3, at least 2), ``seed`` (0),
  ``device`` ("cpu", "cuda", ... or "auto": "cuda" where ``torch.cuda.is_available()``,
  else "cpu"; resolved when the config is checked), ``compare``: options of
  ``compare_runs`` (n_boot, n_perm,
  confidence).

Seeds: run i uses child i of ``seed``, spawned into (network, SGD, SDE) streams. The
network of run i is initialized from its network stream, and its SGD, SDE (and
baseline) runs all start from that one network. The SDE's noise is its own stream,
independent of the SGD run's; SVAG instead uses the SGD run's seed (so SVAG with l = 1
is that SGD run, bit for bit, and for l > 1 its first minibatch stream is the SGD run's).

Calibration (delta = "plateau"): delta = 2 L* / K (``plateau_delta``; L* the mean
minibatch loss over the last ``plateau_fraction`` or over ``calibration_window``) per SGD run, then
pooled: the SDE of every seed uses the mean over seeds, one model of the SGD process
(a per-seed delta would add its own estimation noise to the SDE's seed spread). Both are
written (``plateau_delta`` per seed, ``sde_delta``). delta = "noise_trace": the same, with
the trace-matched delta in place of 2 L* / K (``noise_trace_plateau_delta``: the mean of
the SGD run's ``noise_delta`` records at its evaluations inside the window; ``validate``
records them, ``EvaluationOptions(noise_delta=True)``, for the SGD and baseline runs);
written as ``noise_trace_delta`` per seed, beside ``plateau_delta`` for reference.
delta = "loss_path" / "noise_trace_path": delta_k at every SGD step k, the same two
levels followed along the run instead of averaged over a plateau (``loss_delta_path``,
``noise_trace_delta_path``; pooled over seeds, the loss smoothed over
``delta_smoothing`` steps), so that the SDE's noise also follows a warm-up and a step
decay; written as ``sde_delta`` (sgd_step) and, for the trace, the SGD runs' records
``noise_delta`` (seed, step).

The SDEs model SGD without momentum, with or without (coupled) weight decay: with an
SDE method, ``sgd.momentum`` and ``sgd.label_noise`` must be 0 and ``sgd.augmentation``
off (SVAG allows augmentation); ``sgd.weight_decay`` passes to the simulators (their
drift -(grad L + lambda theta)); the label-noise SDE needs ``sgd.loss = "square"``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import numbers
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from sgdsde.analysis.plots import close_figure, write_figure
from sgdsde.random import as_seed_sequence
from sgdsde.run.checks import check_device, check_int, check_keys, check_options
from sgdsde.run.dataset import write_netcdf
from sgdsde.run.outputs import check_new_files, check_output_folder, write_together
from sgdsde.validation.compare import (
    agreement_table,
    baseline_comparison,
    compare_runs,
    plot_comparison,
)
from sgdsde.validation.data import Augmentation, load_cifar, load_digits, teacher_images
from sgdsde.validation.networks import MLP, ResNet18, SmallCNN
from sgdsde.validation.simulators import (
    loss_delta_path,
    noise_trace_delta_path,
    noise_trace_plateau_delta,
    plateau_delta,
    plateau_steps,
    simulate_label_noise_sde,
    simulate_sgd_covariance_sde,
    simulate_svag,
)
from sgdsde.validation.trainer import (
    BLOCK_RECORDS,
    LOSSES,
    SCALAR_RECORDS,
    EvaluationOptions,
    TrainResult,
    block_values,
    evaluation_steps,
    record_blocks,
    results_dataset,
    train_sgd,
)

__all__ = [
    "large_step_phase",
    "late_loss_change",
    "load_validation_config",
    "phase_loss",
    "validate",
    "validation_summary",
]

#: Data sets and networks a validation config names.
DATA = {"digits": load_digits, "teacher": teacher_images, "cifar": load_cifar}
NETWORKS = {"mlp": MLP, "small_cnn": SmallCNN, "resnet18": ResNet18}
CONFIG_KEYS = (
    "description",
    "data",
    "network",
    "sgd",
    "sde",
    "baseline",
    "n_seeds",
    "seed",
    "device",
    "compare",
    "evaluation",
)
#: The fields of the ``sde`` table of each method.
SDE_KEYS = {
    "label_noise": (
        "method",
        "delta",
        "plateau_fraction",
        "calibration_window",
        "delta_smoothing",
        "substeps",
        "chunk_size",
    ),
    "sgd_covariance": ("method", "substeps", "chunk_size"),
    "svag": ("method", "l"),
}
#: The calibrated values of the label-noise SDE's ``sde.delta`` (module doc): one number
#: from a plateau, or one per step along the run (``PATHS``).
PLATEAUS = ("plateau", "noise_trace")
PATHS = ("loss_path", "noise_trace_path")
CALIBRATIONS = PLATEAUS + PATHS
#: The SGD options the simulators share with ``train_sgd``.
SHARED_SGD = ("schedule", "n_steps", "batch_size", "weight_decay")
METHOD_NAMES = {"label_noise": "label-noise SDE", "sgd_covariance": "SGD-covariance SDE"}
COMPARE_KEYS = ("n_boot", "n_perm", "confidence")


def check_validation_config(config: Any) -> dict[str, Any]:
    """``config`` (module doc) checked whole, before any work, with its defaults filled
    in; a bad field raises one ValueError naming it."""
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict (got {type(config).__name__})")
    check_keys("validation config", config, CONFIG_KEYS, ("data", "network", "sgd"))
    for name, family in (("data", DATA), ("network", NETWORKS)):
        _check_named_table(name, config[name], family)
    if "seed" in config["network"]:
        raise ValueError(
            "validation config 'network': give no 'seed': run i's network is initialized "
            "from child i of the top-level 'seed'"
        )
    sgd = _check_sgd("sgd", config["sgd"])
    baseline = config.get("baseline")
    if baseline is not None:
        if not isinstance(baseline, dict):
            raise ValueError("validation config 'baseline' must be a table of 'sgd' overrides")
        _check_sgd("baseline", {**sgd, **baseline})
    sde = _check_sde(config.get("sde", {"method": "label_noise", "delta": "plateau"}), sgd)
    evaluation = config.get("evaluation", {})
    _check_noise_trace_evaluations(sde, sgd, evaluation_options(evaluation))
    compare = config.get("compare", {})
    if not isinstance(compare, dict):
        raise ValueError("validation config 'compare' must be a table")
    check_keys("validation config 'compare'", compare, COMPARE_KEYS)
    for key in ("n_boot", "n_perm"):
        if key in compare:
            check_int(f"compare.{key}", compare[key], 2 if key == "n_boot" else 1, "e.g. 1000")
    return {
        **config,
        "sgd": sgd,
        "sde": sde,
        "baseline": baseline,
        "n_seeds": check_int(
            "n_seeds", config.get("n_seeds", 3), 2, "at least 2 for a seed spread"
        ),
        "seed": config.get("seed", 0),
        "device": resolve_device(config.get("device", "cpu")),
        "compare": compare,
        "evaluation": evaluation,
    }


def resolve_device(device: Any) -> str:
    """A config's ``device``: "auto" is "cuda" where a CUDA device is available, else
    "cpu"; any other value is checked as a torch device ("cpu", "cuda", "cuda:1")."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return check_device(device, "validate")
    except ValueError as error:
        raise ValueError(f"validation config 'device' (or 'auto'): {error}") from error


def evaluation_options(table: Any) -> EvaluationOptions:
    """The ``EvaluationOptions`` of a config's ``evaluation`` table (errors name it)."""
    if not isinstance(table, dict):
        raise ValueError("validation config 'evaluation' must be a table of EvaluationOptions")
    check_options("validation config 'evaluation'", EvaluationOptions, list(table))
    try:
        return EvaluationOptions(**table)
    except ValueError as error:
        raise ValueError(f"validation config 'evaluation': {error}") from error


def augmentation(value: Any, what: str = "sgd") -> Augmentation | None:
    """The ``Augmentation`` a config's ``<what>.augmentation`` names: true (the defaults),
    false or absent (None: off), or a table of its fields."""
    if value is None or value is False:
        return None
    if value is True:
        return Augmentation()
    if not isinstance(value, dict):
        raise ValueError(
            f"validation config {what}.augmentation must be true, false or a table "
            f"{{padding = 4, flip = true}} (got {value!r})"
        )
    check_options(f"validation config '{what}.augmentation'", Augmentation, list(value))
    try:
        return Augmentation(**value)
    except ValueError as error:
        raise ValueError(f"validation config {what}.augmentation: {error}") from error


def _check_named_table(what: str, options: Any, family: dict[str, Any]) -> None:
    if not isinstance(options, dict) or options.get("name") not in family:
        raise ValueError(
            f"validation config '{what}' must be a table with name one of {sorted(family)} "
            f"(got {options!r})"
        )
    # input_shape, n_outputs and seed are filled in from the data and the run
    rest = [k for k in options if k != "name"]
    if what == "network":
        rest += [k for k in ("input_shape", "n_outputs", "seed") if k not in rest]
    check_options(f"validation config '{what}'", family[options["name"]], rest)


def _check_sgd(what: str, sgd: Any) -> dict[str, Any]:
    if not isinstance(sgd, dict):
        raise ValueError(f"validation config '{what}' must be a table of train_sgd options")
    for key in ("seed", "device"):
        if key in sgd:
            raise ValueError(f"validation config: give {key!r} at the top level, not in {what!r}")
    moved = sorted(set(sgd) & {f.name for f in dataclasses.fields(EvaluationOptions)})
    if moved or "evaluation" in sgd:
        raise ValueError(
            f"validation config '{what}': give the evaluation options "
            f"{moved or ['evaluation']} in the top-level [evaluation] table (EvaluationOptions)"
        )
    augmentation(sgd.get("augmentation"), what)
    check_options(f"validation config '{what}'", train_sgd, ["network", "data", *sgd])
    for key in ("n_steps", "batch_size", "eval_every"):
        if key in sgd:
            check_int(f"{what}.{key}", sgd[key], 1, f"{key} is a positive integer")
    if sgd.get("loss", "cross_entropy") not in LOSSES:
        raise ValueError(f"{what}.loss must be one of {list(LOSSES)} (got {sgd['loss']!r})")
    return dict(sgd)


def _check_sde(sde: Any, sgd: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(sde, dict) or sde.get("method") not in SDE_KEYS:
        raise ValueError(
            f"validation config 'sde' must be a table with method one of {list(SDE_KEYS)} "
            f"(got {sde!r})"
        )
    method = sde["method"]
    check_keys(f"validation config 'sde' (method {method!r})", sde, SDE_KEYS[method])
    unmodelled = [k for k in ("momentum", "label_noise") if sgd.get(k, 0) != 0]
    if method != "svag" and augmentation(sgd.get("augmentation"), "sgd") is not None:
        unmodelled.append("augmentation")
    if unmodelled:
        raise ValueError(
            f"validation config: sde.method {method!r} models plain SGD, but sgd sets "
            f"{unmodelled}: remove them (0 / off; weight_decay is modelled)"
        )
    out = dict(sde)
    if method == "svag":
        ls = sde.get("l", [1, 2, 4])
        ls = [ls] if isinstance(ls, int) and not isinstance(ls, bool) else ls
        if not isinstance(ls, list) or not ls:
            raise ValueError(f"sde.l must be an integer >= 1 or a list of them (got {ls!r})")
        out["l"] = sorted({check_int("sde.l", value, 1, "e.g. l = [1, 2, 4]") for value in ls})
        return out
    out["substeps"] = check_int("sde.substeps", sde.get("substeps", 1), 1, "e.g. substeps=1")
    out["chunk_size"] = check_int("sde.chunk_size", sde.get("chunk_size", 1024), 1, "e.g. 1024")
    if method == "label_noise":
        if sgd.get("loss") != "square":
            raise ValueError(
                "validation config: sde.method 'label_noise' models square-loss SGD: set "
                f"sgd.loss = 'square' (got {sgd.get('loss', 'cross_entropy')!r})"
            )
        delta = sde.get("delta", "plateau")
        is_number = isinstance(delta, numbers.Real) and not isinstance(delta, bool)
        calibrated = not is_number and delta in CALIBRATIONS
        if not (calibrated or (is_number and 0 <= delta < float("inf"))):
            raise ValueError(
                f"sde.delta must be a number >= 0, or calibrated from the SGD runs: 'plateau' "
                "(2 L* / K), 'noise_trace' (trace-matched), or along the run 'loss_path' (2 "
                f"L_k / K) or 'noise_trace_path' (trace-matched) (got {delta!r})"
            )
        if delta in PATHS:
            _check_path_keys(sde)
            smoothing = sde.get("delta_smoothing", 50)
            out["delta_smoothing"] = check_int(
                "sde.delta_smoothing", smoothing, 1, "a window in steps, e.g. 50"
            )
            out["delta"] = delta
            return out
        if "delta_smoothing" in sde:
            raise ValueError(
                f"sde.delta_smoothing smooths a delta along the run: it needs delta = "
                f"'loss_path' or 'noise_trace_path' (got delta {delta!r}); remove it"
            )
        fraction = sde.get("plateau_fraction", 0.5)
        if not (isinstance(fraction, numbers.Real) and 0 < fraction <= 1):
            raise ValueError(f"sde.plateau_fraction must lie in (0, 1] (got {fraction!r})")
        out.update(delta=delta, plateau_fraction=float(fraction))
        window = sde.get("calibration_window")
        if window is not None:
            if "plateau_fraction" in sde or not calibrated:
                raise ValueError(
                    "sde.calibration_window replaces plateau_fraction and needs delta = "
                    "'plateau' or 'noise_trace': give one of them (got delta "
                    f"{delta!r}, calibration_window "
                    f"{window!r}{', plateau_fraction' if 'plateau_fraction' in sde else ''})"
                )
            ok = isinstance(window, list) and len(window) == 2
            ok = ok and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in window)
            if not (ok and 0 <= window[0] < window[1] <= 1):
                raise ValueError(
                    "sde.calibration_window must be [a, b], fractions 0 <= a < b <= 1 of the "
                    f"run (got {window!r}), e.g. [0.25, 0.5] before a step decay at half"
                )
            out["calibration_window"] = [float(v) for v in window]
    return out


def _check_path_keys(sde: dict[str, Any]) -> None:
    """A delta along the run has no plateau: refuse the plateau's keys."""
    given = [k for k in ("plateau_fraction", "calibration_window") if k in sde]
    if given:
        raise ValueError(
            f"sde.delta = {sde['delta']!r} follows the whole run and reads no plateau: "
            f"remove {given} (or use delta = 'plateau' / 'noise_trace' for one plateau's "
            "value)"
        )


def _check_noise_trace_evaluations(
    sde: dict[str, Any], sgd: dict[str, Any], evaluation: EvaluationOptions
) -> None:
    """delta = "noise_trace" reads the SGD runs' evaluations inside the plateau: refuse a
    config that evaluates none there, before any work."""
    if sde.get("delta") != "noise_trace":
        return
    window = sde.get("calibration_window")
    window = None if window is None else tuple(window)
    n_steps = check_int("sgd.n_steps", sgd.get("n_steps"), 1, "give the number of SGD steps")
    start, stop = plateau_steps(n_steps, sde["plateau_fraction"], window)
    if not any(start <= k < stop for k in evaluation_steps(n_steps, evaluation.eval_every)):
        raise ValueError(
            f"sde.delta = 'noise_trace' averages the SGD runs' evaluations in steps {start} "
            f"..{stop - 1}, but evaluation.eval_every = {evaluation.eval_every} puts none "
            "there: lower evaluation.eval_every or widen the calibration window"
        )


def _build(what: str, options: dict[str, Any], family: dict[str, Any], **defaults) -> Any:
    """The data set or network a config table names, its errors prefixed by the table."""
    options = dict(options)
    target = family[options.pop("name")]
    try:
        return target(**{**defaults, **options})
    except ValueError as error:
        raise ValueError(f"validation config '{what}': {error}") from error


def validate(config: dict[str, Any], out_dir: Any, *, overwrite: bool = False) -> xr.Dataset:
    """Run SGD and the SDE model the config names over seeds (module doc), compare them
    (``compare_runs``) and write ``out_dir/validation.nc`` and ``out_dir/validation.png``
    together, atomically; returns the comparison dataset (``validation_summary`` is the
    text a command prints).

    Beside ``compare_runs``'s variables the dataset has, for the label-noise SDE,
    ``sde_delta`` (the delta used) and, calibrated, ``plateau_delta`` (seed); for SVAG
    (compared at the largest l) ``svag_agreement_<obs>`` and ``svag_agreement_<obs>_se``
    (svag_l[, block]): the score at every l of the config, how the gap to SGD changes
    as l doubles; with a baseline, ``final_<obs>`` (run, seed[, block]): each run's value
    at its last evaluation, for runs "SGD", the SDE and "baseline SGD", and, when the
    baseline is evaluated at the SGD run's steps, ``baseline_comparison``'s variables:
    the baseline's mean and band at each step and the relative gap G of the SDE to SGD
    against the baseline's gap to SGD (``relative_gap_<obs>``); with the walk
    recorded (``evaluation.walk``), ``segment_loss`` (dynamics, seed, step,
    segment_alpha): each method's loss along the update ending at each evaluation.

    config: the validation config (module doc); checked whole before any work.
    out_dir: the output folder (created if needed).
    overwrite: replace existing output files.
    """
    config = check_validation_config(config)
    folder = check_output_folder(out_dir)
    paths = [folder / "validation.nc", folder / "validation.png"]
    check_new_files(paths, overwrite, "pass overwrite=True to replace them")
    data = _build("data", config["data"], DATA)
    sgd, sde, device = config["sgd"], config["sde"], config["device"]
    runs = []
    for child in as_seed_sequence(config["seed"]).spawn(config["n_seeds"]):
        init, sgd_seed, sde_seed = child.spawn(3)
        network = _build(
            "network",
            config["network"],
            NETWORKS,
            n_outputs=data.n_classes,
            input_shape=data.input_shape,
            seed=init,
        )
        runs.append((network, sgd_seed, sde_seed))
    evaluation = evaluation_options(config["evaluation"])
    sgd_evaluation = evaluation
    if sde.get("delta") in ("noise_trace", "noise_trace_path"):  # reads the SGD records
        sgd_evaluation = dataclasses.replace(evaluation, noise_delta=True)
    run_sgd = dict(
        sgd, augmentation=augmentation(sgd.get("augmentation")), evaluation=sgd_evaluation
    )
    sgd_runs = [train_sgd(net, data, seed=s, device=device, **run_sgd) for net, s, _ in runs]
    extra: dict[str, Any] = {}
    shared = {k: sgd[k] for k in SHARED_SGD if k in sgd}
    shared["evaluation"] = evaluation
    loss = sgd.get("loss", "cross_entropy")
    if sde["method"] == "svag":
        by_l = {
            l: [
                simulate_svag(
                    net,
                    data,
                    l=l,
                    loss=loss,
                    augmentation=run_sgd["augmentation"],
                    seed=s,
                    device=device,
                    **shared,
                )
                for net, s, _ in runs
            ]
            for l in sde["l"]
        }
        comparisons = {
            l: compare_runs(sgd_runs, r, methods=("SGD", f"SVAG l={l}"), **config["compare"])
            for l, r in by_l.items()
        }
        ds = comparisons[max(by_l)]
        extra.update(_over_l(comparisons))
        sde_runs = by_l[max(by_l)]
    else:
        sde_runs = _simulate_sde(sde, sgd_runs, runs, data, shared, loss, device, extra)
        methods = ("SGD", METHOD_NAMES[sde["method"]])
        ds = compare_runs(sgd_runs, sde_runs, methods=methods, **config["compare"])
    extra.update(_segment_losses(ds, sgd_runs, sde_runs))
    if config["baseline"] is not None:
        baseline = {**run_sgd, **config["baseline"]}
        if "augmentation" in config["baseline"]:
            baseline["augmentation"] = augmentation(baseline["augmentation"], "baseline")
        base_runs = [train_sgd(net, data, seed=s, device=device, **baseline) for net, s, _ in runs]
        names = ("SGD", str(ds["dynamics"].values[1]), "baseline SGD")
        extra.update(_final_values(dict(zip(names, (sgd_runs, sde_runs, base_runs), strict=True))))
        if np.array_equal(base_runs[0].steps, sgd_runs[0].steps):
            options = {k: v for k, v in config["compare"].items() if k != "n_perm"}
            extra.update(baseline_comparison(ds, base_runs, **options))
    ds = ds.assign(extra)
    ds.attrs["validation_config"] = json.dumps(config, default=str)
    fig = plot_comparison(ds, title=f"SGD vs {ds['dynamics'].values[1]}")
    try:
        write_together(
            {
                paths[0]: lambda tmp: write_netcdf(ds, tmp),
                paths[1]: lambda tmp: write_figure(fig, tmp),
            }
        )
    finally:
        close_figure(fig)
    return ds


def _simulate_sde(sde, sgd_runs, runs, data, shared, loss, device, extra) -> list[TrainResult]:
    """The SDE runs of every seed (label-noise or SGD-covariance); records the delta used
    (and the per-seed plateau deltas) in ``extra``."""
    options = dict(shared, substeps=sde["substeps"], chunk_size=sde["chunk_size"])
    if sde["method"] == "sgd_covariance":
        return [
            simulate_sgd_covariance_sde(net, data, loss=loss, seed=s, device=device, **options)
            for net, _, s in runs
        ]
    delta = sde["delta"]
    if delta in PATHS:
        delta = _delta_path(sde, sgd_runs, data.n_classes, extra)
    elif delta in PLATEAUS:
        window = sde.get("calibration_window")
        plateau = dict(
            fraction=sde["plateau_fraction"], window=None if window is None else tuple(window)
        )
        per_seed = [plateau_delta(r, data.n_classes, **plateau) for r in sgd_runs]
        extra["plateau_delta"] = (
            ("seed",),
            np.array(per_seed),
            {"long_name": "2 L* / K of each SGD run (L*: mean late minibatch loss)"},
        )
        if delta == "noise_trace":
            per_seed = [noise_trace_plateau_delta(r, **plateau) for r in sgd_runs]
            extra["noise_trace_delta"] = (
                ("seed",),
                np.array(per_seed),
                {
                    "long_name": "trace-matched label-noise variance of each SGD run (mean "
                    "noise_delta record on the plateau)"
                },
            )
        delta = float(np.mean(per_seed))
    if not isinstance(delta, np.ndarray):
        extra["sde_delta"] = ((), float(delta), {"long_name": "label-noise variance of the SDE"})
    return [
        simulate_label_noise_sde(net, data, delta=delta, seed=s, device=device, **options)
        for net, _, s in runs
    ]


def _delta_path(sde, sgd_runs, n_outputs, extra) -> np.ndarray:
    """The label-noise SDE's delta along the run (``loss_delta_path`` or
    ``noise_trace_delta_path``), recorded in ``extra`` as ``sde_delta`` (sgd_step), with
    the SGD runs' records it reads (``noise_delta``, seed, step)."""
    smoothing = sde["delta_smoothing"]
    if sde["delta"] == "loss_path":
        path = loss_delta_path(sgd_runs, n_outputs, smoothing=smoothing)
        how = "2 Lbar_k / K, Lbar_k the SGD runs' minibatch loss"
    else:
        path = noise_trace_delta_path(sgd_runs, n_outputs, smoothing=smoothing)
        how = "trace-matched: rho(k) 2 Lbar_k / K"
        extra["noise_delta"] = (
            ("seed", "step"),
            np.stack([np.asarray(r.noise_delta) for r in sgd_runs]),
            {"long_name": "trace-matched label-noise variance of each SGD run's iterate"},
        )
    extra["sde_delta"] = (
        ("sgd_step",),
        path,
        {"long_name": f"label-noise variance of the SDE during SGD step k ({how})"},
    )
    return path


def _segment_losses(
    ds: xr.Dataset, sgd_runs: list[TrainResult], sde_runs: list[TrainResult]
) -> dict[str, Any]:
    """{"segment_loss": (dynamics, seed, step, segment_alpha)}: both methods' training
    loss along the segment of the update ending at each compared evaluation (the SDE's
    at the matched step; NaN-padded seeds), where both recorded the walk; else {}."""
    if any(r.segment_loss is None for r in (*sgd_runs, *sde_runs)):
        return {}
    steps = (ds["step"].values, ds["matched_step"].values)
    curves = [
        results_dataset(runs)["segment_loss"].sel(step=at)
        for runs, at in zip((sgd_runs, sde_runs), steps, strict=True)
    ]
    values = np.full((2, ds.sizes["seed"], *curves[0].shape[1:]), np.nan)
    for i, curve in enumerate(curves):
        values[i, : curve.sizes["traj"]] = curve.values
    attrs = dict(curves[0].attrs)
    return {
        "segment_loss": (("dynamics", "seed", "step", "segment_alpha"), values, attrs),
        "segment_alpha": (
            "segment_alpha",
            curves[0]["segment_alpha"].values,
            curves[0]["segment_alpha"].attrs,
        ),
    }


def _over_l(comparisons: dict[int, xr.Dataset]) -> dict[str, Any]:
    """``svag_agreement_<obs>`` (and ``_se``) over l from each l's comparison."""
    ls = list(comparisons)
    first = comparisons[ls[0]]
    out: dict[str, Any] = {}
    for var in first.data_vars:
        if var.startswith("agreement_") and not var.endswith(
            ("_time", "_null", "_p", "_degenerate")
        ):
            stacked = xr.concat([comparisons[l][var] for l in ls], dim="svag_l")
            stacked = stacked.assign_coords(svag_l=ls)
            stacked.attrs["long_name"] = f"{var} of SVAG against SGD at each l"
            out[f"svag_{var}"] = stacked
    return out


def large_step_phase(step_sizes: Any) -> int:
    """The end (exclusive) of a run's large-step phase: the first step after the largest
    step size whose step size is below it (the first decay after the peak, e.g. the step
    / 10 of Andriushchenko et al.'s schedules), or the number of steps when the step size
    never falls after its peak (a constant run: the whole run is the phase).

    step_sizes: eta_0 .. eta_{n-1} (a ``TrainResult``'s ``lrs``), at least one.
    """
    lrs = np.asarray(step_sizes, dtype=np.float64)
    if lrs.ndim != 1 or lrs.size == 0:
        raise ValueError(f"step_sizes must be a non-empty 1-d array (got shape {lrs.shape})")
    peak = int(np.argmax(lrs))
    below = np.flatnonzero(lrs[peak:] < lrs[peak])
    return len(lrs) if below.size == 0 else peak + int(below[0])


def late_loss_change(result: TrainResult, stop: int | None = None) -> float:
    """The relative change of the mean step loss from the third to the last quarter of
    the steps 0 .. stop - 1, mean(last) / mean(third) - 1: about 0 for a loss that has
    stabilized (the large-step regime of Andriushchenko et al. 2023), clearly negative
    for one still descending; NaN for a run diverged before ``stop``, a window of fewer
    than 4 steps or one past the run's recorded steps.

    result: a run (``train_sgd`` or a simulator).
    stop: the end of the window; None: ``large_step_phase(result.lrs)`` (the whole run
        at a constant step size).
    """
    losses = np.asarray(result.batch_losses, dtype=np.float64)
    stop = large_step_phase(result.lrs) if stop is None else stop
    quarter = stop // 4
    if quarter == 0 or stop > len(losses) or (result.diverged and result.diverged_step < stop):
        return float("nan")
    third = losses[2 * quarter : 3 * quarter].mean()
    return float(losses[stop - quarter : stop].mean() / third - 1.0)


def phase_loss(result: TrainResult, stop: int | None = None) -> float:
    """The mean step loss over the last third of the steps 0 .. stop - 1: the level a
    stabilized loss holds (compared between a large-step run and a small-step run over
    the same steps); NaN for a run diverged before ``stop``, a window of fewer than 3
    steps or one past the run's recorded steps.

    result: a run (``train_sgd`` or a simulator).
    stop: the end of the window; None: ``large_step_phase(result.lrs)``.
    """
    losses = np.asarray(result.batch_losses, dtype=np.float64)
    stop = large_step_phase(result.lrs) if stop is None else stop
    if stop // 3 == 0 or stop > len(losses) or (result.diverged and result.diverged_step < stop):
        return float("nan")
    return float(losses[stop - stop // 3 : stop].mean())


def _final_values(methods: dict[str, list[TrainResult]]) -> dict[str, Any]:
    """``final_<obs>`` (run, seed[, block]): every run's value at its last evaluation,
    and, over the first run's large-step phase (``large_step_phase`` of its first seed,
    as a fraction of the run, the same steps in every run), ``final_late_loss_change``
    (``late_loss_change``) and ``final_phase_loss`` (``phase_loss``) (run, seed)."""
    out: dict[str, Any] = {}
    names = list(methods)
    first = next(iter(methods.values()))[0]
    phase = large_step_phase(first.lrs) / len(first.lrs)

    def stop(result: TrainResult) -> int:
        return round(phase * len(result.batch_losses))

    for key in SCALAR_RECORDS:
        values = [[getattr(r, key)[-1] for r in rs] for rs in methods.values()]
        out[f"final_{key}"] = xr.DataArray(
            np.array(values, dtype=np.float64), dims=("run", "seed"), coords={"run": names}
        )
    for key, measure, long_name in (
        (
            "late_loss_change",
            late_loss_change,
            "over the large-step phase, mean step loss of its last quarter / of its third "
            "quarter - 1 (~0: stabilized)",
        ),
        ("phase_loss", phase_loss, "mean step loss of the last third of the large-step phase"),
    ):
        values = [[measure(r, stop(r)) for r in rs] for rs in methods.values()]
        out[f"final_{key}"] = xr.DataArray(
            np.array(values), dims=("run", "seed"), coords={"run": names}
        )
        out[f"final_{key}"].attrs["long_name"] = long_name
    taps = record_blocks(first)
    for key in [k for k in BLOCK_RECORDS if getattr(first, k)]:
        values = [[block_values(r, key, taps)[-1] for r in rs] for rs in methods.values()]
        out[f"final_{key}"] = xr.DataArray(
            np.array(values, dtype=np.float64),
            dims=("run", "seed", "block"),
            coords={"run": names, "block": taps},
        )
    return out


def validation_summary(ds: xr.Dataset) -> str:
    """The text a command prints for a ``validate`` dataset: the agreement table, the
    SVAG scores over l and the final values of each run, where present."""
    parts = [agreement_table(ds)]
    svag = [v for v in ds.data_vars if v.startswith("svag_agreement_") and not v.endswith("_se")]
    if svag:
        ls = ds["svag_l"].values.tolist()
        rows = [f"{'SVAG score over l':<28} " + " ".join(f"{f'l={l}':>14}" for l in ls)]
        for var in svag:
            da, se = ds[var], ds[f"{var}_se"]
            extra_dims = [d for d in da.dims if d != "svag_l"]
            for index in np.ndindex(*[da.sizes[d] for d in extra_dims]):
                sel = dict(zip(extra_dims, index, strict=True))
                label = var.removeprefix("svag_agreement_") + "".join(
                    f" {da[d].values[i]}" for d, i in sel.items()
                )
                cells = [
                    f"{float(da.isel(sel).sel(svag_l=l)):7.3g}+-{float(se.isel(sel).sel(svag_l=l)):<5.2g}"
                    for l in ls
                ]
                rows.append(f"{label:<28} " + " ".join(f"{c:>14}" for c in cells))
        parts.append("\n".join(rows))
    finals = [v for v in ds.data_vars if v.startswith("final_")]
    if finals:
        runs = ds["run"].values.tolist()
        rows = [f"{'final value (mean over seeds)':<28} " + " ".join(f"{r:>20}" for r in runs)]
        for var in finals:
            mean = ds[var].mean("seed")
            blocks = mean["block"].values.tolist() if "block" in mean.dims else [None]
            for block in blocks:
                row = mean if block is None else mean.sel(block=block)
                label = var.removeprefix("final_") + ("" if block is None else f" {block}")
                rows.append(
                    f"{label:<28} " + " ".join(f"{float(row.sel(run=r)):>20.4g}" for r in runs)
                )
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


def load_validation_config(name_or_path: str | Path) -> dict[str, Any]:
    """A validation config: a built-in one by name ("digits" or "validate_digits" reads
    ``sgdsde/configs/validate_digits.toml``) or a TOML file by path; checked whole
    (``check_validation_config``) and returned as written (without its defaults).

    name_or_path: a built-in name or the path of a ``.toml`` file.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ValueError(f"validation config file {str(path)!r} does not exist")
        text = path.read_text()
    else:
        name = str(name_or_path).removeprefix("validate_")
        builtin = resources.files("sgdsde") / "configs" / f"validate_{name}.toml"
        if not builtin.is_file():
            known = sorted(
                p.name.removeprefix("validate_").removesuffix(".toml")
                for p in (resources.files("sgdsde") / "configs").iterdir()
                if p.name.startswith("validate_") and p.name.endswith(".toml")
            )
            raise ValueError(
                f"no built-in validation config {name_or_path!r}: the built-in ones are "
                f"{known}, or give the path of a .toml file"
            )
        text = builtin.read_text()
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(
            f"validation config {str(name_or_path)!r} is not valid TOML: {error}"
        ) from error
    check_validation_config(copy.deepcopy(config))
    return config
