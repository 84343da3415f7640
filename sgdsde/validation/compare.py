"""SGD against its SDE models on a deep network: every observable over matched time,
mean and confidence band over seeds, and a numeric agreement score with its standard
error (issue 9, Sec. 4).

Inputs are runs of two methods, each over seeds: ``TrainResult``s (the SGD trainer's or
any simulator returning that shape) or their ``results_dataset``. The first method's
evaluation times t_k = sum_{j<k} eta_j are the comparison grid; the second must have
been evaluated at each of them (it may have more, e.g. SVAG's finer steps).

For an observable phi (per block for the feature metrics), with m_A and m_B seeds, the
sample means mu_A(t), mu_B(t) and standard deviations s_A(t), s_B(t) over the seeds
whose run has not diverged at t:

* confidence band of each mean: mu -+ z s / sqrt(m), z the normal quantile of
  ``confidence`` (normal approximation);
* agreement score: the largest gap between the means relative to their combined seed
  spread,

      D = max_t |mu_A(t) - mu_B(t)| / S(t),      S(t) = sqrt((s_A(t)^2 + s_B(t)^2) / 2),

  a standardized effect size (Cohen's d at the worst time): D = 0.5 means that at some
  time the two means differ by half a seed-to-seed standard deviation. Times where
  S = 0 count as 0 when the means are equal there (e.g. every run starts from the same
  initialization) and as inf otherwise; times with fewer than two seeds of either
  method are skipped. Seeds that agree exactly have spread exactly 0 (and their
  value as mean), not a rounding residue of 1e-19 that would turn a gap into 1e15.
* the observable's resolution r: an observable measured on a grid of step r (an error
  rate on n examples moves in steps of 1/n) cannot resolve a spread below that grid,
  so S(t) is floored at r / sqrt(12), the standard deviation of the rounding error of
  a value on that grid. Seeds that all reach train error 0 under both methods then
  score 0, and every seed one example apart scores sqrt(12) = 3.5, not inf. r = 0 (a
  continuous observable) leaves S as it is. ``compare_runs`` takes r of the error
  rates from the runs' configs (``observable_resolution``).
* its standard error: half the central 68 % range of D over ``n_boot`` bootstrap
  resamples of the seeds, (q_84 - q_16) / 2 (each method's seeds resampled with
  replacement, independently, from a generator seeded by ``seed``): the standard
  deviation for a normal distribution, but robust. With few seeds the resampled D is
  heavy-tailed: a resample that repeats nearly equal seeds has a spread near 0 and a D
  of up to 1e3 (the digits config's train_loss, score 0.6: standard deviation of the
  resamples 60, (q_84 - q_16) / 2 = 1.0). Some resamples are degenerate: D is not
  finite there (each method's resampled seeds all one run, S = 0 beside a gap; at r =
  0 a probability m_A^(1-m_A) m_B^(1-m_B), 1/81 at 3 seeds each).
  ``agreement_<obs>_degenerate`` is their fraction; they count as D = inf in the
  quantiles, so that above 16 % of them the standard error is inf: a flag that the
  seeds cannot bound the score, not a number to use. It is NaN where D is not finite;
* the noise level: D is a maximum of noisy gaps, so even two identical distributions
  give D > 0, of order sqrt(1/m_A + 1/m_B). ``agreement_<obs>_null`` is the mean of D
  over ``n_perm`` random reassignments of the pooled seeds to the two methods (a
  permutation test of "same distribution"), and ``agreement_<obs>_p`` its p-value,
  (1 + #{D_perm >= D}) / (1 + n_perm). A score near its null level (p not small) is
  agreement within seed noise.

Li, Malladi and Arora's SVAG code (NeurIPS 2021) judges agreement by overlaying curves;
the maximum-gap-over-spread criterion is the trajectory metric of
docs/shared reference phase-validation.md Sec. 1.5.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.analysis.plots import finish_figure
from sgdsde.random import as_seed_sequence
from sgdsde.run.checks import check_int
from sgdsde.run.dataset import encode_attrs
from sgdsde.run.provenance import run_attrs
from sgdsde.validation.trainer import TrainResult, results_dataset

__all__ = [
    "agreement_score",
    "agreement_table",
    "baseline_comparison",
    "compare_runs",
    "observable_resolution",
    "plot_comparison",
    "relative_gap",
]

#: Recorded variables that are not compared: per-trajectory bookkeeping, and the loss
#: along each update's segment (a curve per evaluation, summarized by the walk records,
#: which are compared; ``validate`` keeps the curves beside the comparison).
NOT_OBSERVABLES = ("diverged", "diverged_step", "segment_loss")

#: The quantiles of the bootstrap resamples whose half-distance is the standard error.
SE_QUANTILES = (0.16, 0.84)

#: The three sets of runs ``relative_gap`` reads, in its order.
GAP_ROLES = ("reference", "model", "baseline")

#: The suffixes of the per-observable score variables of ``compare_runs``.
SCORE_SUFFIXES = ("_se", "_time", "_null", "_p", "_degenerate")


def _seed_statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample standard deviation (ddof 1) and count of the finite values along
    the seed axis -3 of (..., seeds, steps, R); NaN where fewer than 1 (mean) or 2 (sd).
    Where every finite value is the same, the mean is that value and the sd exactly 0
    (sum / count would leave a rounding residue)."""
    ok = np.isfinite(values)
    count = ok.sum(axis=-3)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, values, 0.0).sum(axis=-3) / count
        centred = np.where(ok, values - np.expand_dims(mean, -3), 0.0)
        sd = np.sqrt((centred**2).sum(axis=-3) / (count - 1))
    largest = np.where(ok, values, -np.inf).max(axis=-3)
    constant = (count > 0) & (largest == np.where(ok, values, np.inf).min(axis=-3))
    mean = np.where(constant, largest, mean)
    sd = np.where(constant, 0.0, sd)
    sd = np.where(count > 1, sd, np.nan)
    return mean, sd, count


def _scores(a: np.ndarray, b: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """D and the index of the time attaining it for values (..., seeds, steps, R), the
    combined spread floored at ``floor`` (R,) (module doc); both (..., R), NaN / -1
    where no time has two seeds of each.

    A time where one method has no value left (every seed diverged) while the other has
    some scores inf: a method that diverged does not agree, whatever the survivors do."""
    mean_a, sd_a, count_a = _seed_statistics(a)
    mean_b, sd_b, count_b = _seed_statistics(b)
    gap = np.abs(mean_a - mean_b)
    # fmax ignores a NaN spread (fewer than two seeds); the next line restores it
    spread = np.fmax(np.sqrt((sd_a**2 + sd_b**2) / 2), floor)
    spread = np.where(np.isnan(sd_a) | np.isnan(sd_b), np.nan, spread)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = gap / spread
    ratio = np.where((spread == 0) & (gap == 0), 0.0, ratio)
    ratio = np.where((spread == 0) & (gap > 0), np.inf, ratio)
    lost = (count_a == 0) != (count_b == 0)
    ratio = np.where(lost, np.inf, ratio)
    valid = (np.isfinite(spread) & np.isfinite(gap)) | lost
    filled = np.where(valid, ratio, -np.inf)
    where = filled.argmax(axis=-2)
    best = np.take_along_axis(filled, where[..., None, :], axis=-2)[..., 0, :]
    none = ~valid.any(axis=-2)
    return np.where(none, np.nan, best), np.where(none, -1, where)


def agreement_score(
    a: np.ndarray,
    b: np.ndarray,
    *,
    resolution: Any = 0.0,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: Any = 0,
) -> dict[str, np.ndarray]:
    """The agreement score of two methods' values and its uncertainty (module doc).

    a, b: values (seeds, steps) or (seeds, steps, R) of one observable, the two methods
        on the same time grid (NaN: not recorded, e.g. after a divergence); R columns
        (e.g. blocks) are scored separately.
    resolution: r >= 0, the grid step of the observable's values (1/n for an error rate
        on n examples; 0: continuous), a number or one per column; the combined spread
        is floored at r / sqrt(12).
    n_boot: bootstrap resamples for the standard error (>= 2).
    n_perm: seed permutations for the null level and the p-value (>= 1).
    seed: int or ``numpy.random.SeedSequence`` of the resampling (child 0: bootstrap,
        child 1: permutations).

    Returns {"score", "se", "step_index", "null", "p_value", "degenerate"}, each of
    shape () or (R,): D, its bootstrap standard error (q_84 - q_16) / 2 (inf when over
    16 % of the resamples are degenerate, NaN where D is not finite), the index of the
    time attaining D, the mean D under permutations, the permutation p-value and the
    fraction of degenerate bootstrap resamples (D not finite).
    """
    a, b, scalar = _as_values("a", a), _as_values("b", b), np.ndim(a) == 2
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"a and b must have the same steps (and columns): got {a.shape[1:]} and "
            f"{b.shape[1:]}; evaluate both methods on the same time grid"
        )
    floor = _resolution_floor(resolution, a.shape[2])
    n_boot = check_int("n_boot", n_boot, 2, "e.g. n_boot=1000")
    n_perm = check_int("n_perm", n_perm, 1, "e.g. n_perm=1000")
    boot_rng, perm_rng = (np.random.default_rng(s) for s in as_seed_sequence(seed).spawn(2))
    score, where = _scores(a, b, floor)
    m_a, m_b = a.shape[0], b.shape[0]
    boot, _ = _scores(
        a[boot_rng.integers(0, m_a, (n_boot, m_a))],
        b[boot_rng.integers(0, m_b, (n_boot, m_b))],
        floor,
    )
    pooled = np.concatenate([a, b])
    order = np.argsort(perm_rng.random((n_perm, m_a + m_b)), axis=1)
    null, _ = _scores(pooled[order[:, :m_a]], pooled[order[:, m_a:]], floor)
    degenerate = 1.0 - np.isfinite(boot).mean(axis=0)
    se = _robust_scale(boot)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        null_level = np.nanmean(np.where(np.isfinite(null), null, np.nan), axis=0)
        p_value = (1 + (null >= score).sum(axis=0)) / (1 + n_perm)
    se = np.where(np.isfinite(score), se, np.nan)
    p_value = np.where(np.isnan(score), np.nan, p_value)
    out = {
        "score": score,
        "se": se,
        "step_index": where,
        "null": null_level,
        "p_value": p_value,
        "degenerate": degenerate,
    }
    return {k: v[0] if scalar else v for k, v in out.items()}


def relative_gap(
    reference: np.ndarray,
    model: np.ndarray,
    baseline: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: Any = 0,
) -> dict[str, np.ndarray]:
    """How far a model is from the reference process, as a fraction of how far a
    baseline is from it:

        G = max_t |mu_model(t) - mu_ref(t)| / max_t |mu_base(t) - mu_ref(t)|,

    mu the means over seeds on one time grid. G = 0: the model's mean is the
    reference's at every time; G = 1: it is as far from the reference as the baseline
    is; 1 - G is the share of the baseline's effect (the large step against the small
    one) that the model reproduces at its worst time. Unlike the agreement score it does
    not shrink with the seed spread: a model can be distinguishable from the reference
    (score above its null level) and still close to it on the scale of the effect.

    reference, model, baseline: values (seeds, steps) or (seeds, steps, R), on the same
        steps (NaN: not recorded); R columns are measured separately.
    n_boot: bootstrap resamples (each method's seeds resampled with replacement,
        independently) for the standard error, (q_84 - q_16) / 2 (``agreement_score``'s).
    seed: int or ``numpy.random.SeedSequence`` of the resampling.

    Returns {"gap", "se"}, each () or (R,): G and its standard error; NaN where the
    baseline's mean never differs from the reference's (no effect to measure against).
    """
    values = (reference, model, baseline)
    arrays = [_as_values(name, v) for name, v in zip(GAP_ROLES, values, strict=True)]
    if len({a.shape[1:] for a in arrays}) != 1:
        raise ValueError(
            "reference, model and baseline must have the same steps (and columns): got "
            f"{[a.shape[1:] for a in arrays]}; evaluate them on the same step grid"
        )
    n_boot = check_int("n_boot", n_boot, 2, "e.g. n_boot=1000")
    rng = np.random.default_rng(as_seed_sequence(seed))
    gap = _gaps(*arrays)
    resampled = [a[rng.integers(0, len(a), (n_boot, len(a)))] for a in arrays]
    boot = _gaps(*resampled)
    se = _robust_scale(boot)
    out = {"gap": gap, "se": np.where(np.isnan(gap), np.nan, se)}
    return {k: v[0] for k, v in out.items()} if np.ndim(reference) == 2 else out


def _gaps(reference: np.ndarray, model: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """``relative_gap``'s G for values (..., seeds, steps, R); NaN where the baseline's
    largest gap is 0 or not defined."""
    ref, mod, base = (_seed_statistics(v)[0] for v in (reference, model, baseline))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN
        numerator = np.nanmax(np.abs(mod - ref), axis=-2)
        denominator = np.nanmax(np.abs(base - ref), axis=-2)
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _robust_scale(boot: np.ndarray) -> np.ndarray:
    """(q_84 - q_16) / 2 along axis 0 of bootstrap scores (module doc): NaN resamples
    (no time with two seeds of each) left out, inf ones kept as the largest, so that
    the upper quantile, and the result, is inf once over 16 % of them are inf. The
    quantiles are order statistics (no interpolation towards an inf)."""
    lower, upper = SE_QUANTILES
    scale = np.full(boot.shape[1:], np.nan)
    for column in np.ndindex(*boot.shape[1:]):
        values = boot[(slice(None), *column)]
        values = values[~np.isnan(values)]
        if values.size:
            low, high = np.quantile(values, [lower, upper], method="inverted_cdf")
            scale[column] = np.inf if np.isinf(high) else (high - low) / 2
    return scale


def _resolution_floor(resolution: Any, n_columns: int) -> np.ndarray:
    """The spread floor r / sqrt(12) per column of a ``resolution`` r (module doc)."""
    r = np.asarray(resolution, dtype=np.float64) if _is_real_array(resolution) else None
    if r is None or r.ndim > 1 or not np.all(np.isfinite(r) & (r >= 0)):
        raise ValueError(
            f"resolution must be a finite number >= 0 or one per column (got {resolution!r}): "
            "the grid step of the observable, e.g. 1/n for an error rate on n examples, 0 "
            "for a continuous one"
        )
    if r.ndim == 1 and r.shape[0] != n_columns:
        raise ValueError(
            f"resolution has {r.shape[0]} entries but the values {n_columns} columns: give "
            "one number or one per column"
        )
    return np.broadcast_to(r / math.sqrt(12.0), (n_columns,))


def _is_real_array(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        return False
    return arr.dtype.kind in "iuf"


def observable_resolution(name: str, config: Any) -> float:
    """The grid step r of an observable's values, from a run's config (``TrainResult
    .config``; 0 where unknown or continuous): 1/m for the training error on the m
    images of the metrics subset, 1/n_test for the test error, 1 for a count
    (``identical_pairs``).

    name: the observable (a ``SCALAR_RECORDS`` or ``BLOCK_RECORDS`` name).
    config: the run's config dict (its "evaluation" and "data" tables).
    """
    config = config if isinstance(config, dict) else {}
    if name == "train_error":
        size = (config.get("evaluation") or {}).get("metrics_size")
    elif name == "test_error":
        size = (config.get("data") or {}).get("n_test")
    elif name == "identical_pairs":
        size = 1
    else:
        size = None
    return 1.0 / size if isinstance(size, int) and size > 0 else 0.0


def _as_values(name: str, values: Any) -> np.ndarray:
    """(seeds, steps, R) float64 from (seeds, steps) or (seeds, steps, R)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(
            f"{name} must be values (seeds, steps) or (seeds, steps, columns) with at least "
            f"one seed and one step (got shape {arr.shape})"
        )
    return arr


def _as_method(name: str, runs: Any, method: str) -> xr.Dataset:
    """A method's runs as a dataset (``results_dataset`` of TrainResults)."""
    if isinstance(runs, xr.Dataset):
        if "traj" not in runs.dims or "step" not in runs.dims or "time" not in runs.coords:
            raise ValueError(
                f"{name} must be TrainResults or a dataset with dims traj and step and a "
                "time coordinate (sgdsde.validation.results_dataset)"
            )
        return runs
    if isinstance(runs, TrainResult) or (
        isinstance(runs, Sequence) and runs and all(isinstance(r, TrainResult) for r in runs)
    ):
        return results_dataset(runs, run=method)
    raise ValueError(
        f"{name} must be a TrainResult, a non-empty list of them (one per seed) or their "
        f"results_dataset (got {type(runs).__name__})"
    )


def _time_grid(name: str, ds: xr.Dataset) -> np.ndarray:
    """The dataset's evaluation times, after checking every trajectory shares them."""
    time = np.asarray(ds["time"].values, dtype=np.float64)
    if time.ndim == 2:
        if not np.allclose(time, time[:1], rtol=1e-12, atol=0):
            raise ValueError(f"the {name} runs were evaluated at different times")
        time = time[0]
    return time


def _matched_steps(time_a: np.ndarray, time_b: np.ndarray, methods: Sequence[str]) -> np.ndarray:
    """Index into ``time_b`` of every time of ``time_a`` (relative tolerance 1e-9)."""
    scale = max(float(np.max(np.abs(time_a))), 1e-300)
    distance = np.abs(time_a[:, None] - time_b[None, :])
    index = distance.argmin(axis=1)
    missing = distance[np.arange(len(time_a)), index] > 1e-9 * scale
    if missing.any():
        raise ValueError(
            f"the {methods[1]} runs were not evaluated at the {methods[0]} times "
            f"{time_a[missing][:5].tolist()}: evaluate both at matched times t = sum of step "
            "sizes (same schedule and eval grid in time units)"
        )
    return index


def _observable_names(ds_a: xr.Dataset, ds_b: xr.Dataset, observables: Any) -> list[str]:
    def recorded(ds):
        return [
            name
            for name, var in ds.data_vars.items()
            if var.dims[:2] == ("traj", "step") and name not in NOT_OBSERVABLES
        ]

    if observables is None:
        names = [name for name in recorded(ds_a) if name in recorded(ds_b)]
        if not names:
            raise ValueError("the two methods record no observable in common")
        return names
    names = [observables] if isinstance(observables, str) else list(observables)
    for name in names:
        for which, ds in (("first", ds_a), ("second", ds_b)):
            if name not in recorded(ds):
                raise ValueError(
                    f"observable {name!r} is not recorded by the {which} method's runs; "
                    f"they record {recorded(ds)}"
                )
    return names


def compare_runs(
    sgd: Any,
    sde: Any,
    *,
    observables: Any = None,
    methods: Sequence[str] = ("SGD", "SDE"),
    confidence: float = 0.95,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: Any = 0,
    resolution: dict[str, float] | None = None,
) -> xr.Dataset:
    """Compare two methods' runs observable by observable over matched time (module doc).

    sgd: the reference runs: TrainResults (one per seed) or their ``results_dataset``.
    sde: the runs compared with them, the same way; evaluated at (at least) every time
        of ``sgd``.
    observables: names of recorded variables to compare (default: every one both record).
    methods: the names of the two methods, for the ``dynamics`` coordinate and plots.
    confidence: level of the confidence bands of the means, in (0, 1).
    n_boot, n_perm, seed: the bootstrap and permutation settings (``agreement_score``).
    resolution: {observable: r}, the grid step of its values (``agreement_score``);
        observables not named take ``observable_resolution`` of the first method's
        config (1/metrics_size for train_error, 1/n_test for test_error, else 0).

    Returns a dataset with dims ``dynamics`` (the two methods), ``seed``, ``step`` (the
    first method's evaluated steps; coords ``time`` and ``matched_step``, the second
    method's step at the same time) and ``block`` for per-block observables; per
    observable ``<obs>`` (dynamics, seed, step[, block]) the values (NaN-padded to the
    larger number of seeds), ``<obs>_mean``, ``<obs>_se``, ``<obs>_spread`` (seed
    standard deviation), ``<obs>_lower``, ``<obs>_upper`` (dynamics, step[, block]), and
    ``agreement_<obs>``, ``agreement_<obs>_se``, ``agreement_<obs>_time``,
    ``agreement_<obs>_null``, ``agreement_<obs>_p``, ``agreement_<obs>_degenerate``
    ([block]; the score's attr ``resolution``: the r used); attrs with both methods'
    configs and the provenance of ``run_attrs``.
    """
    methods = [str(m) for m in methods]
    if len(methods) != 2 or methods[0] == methods[1]:
        raise ValueError(f"methods must be two different names (got {methods!r})")
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, numbers.Real)
        or not 0 < confidence < 1
    ):
        raise ValueError(f"confidence must lie in (0, 1) (got {confidence!r}), e.g. 0.95")
    check_int("n_boot", n_boot, 2, "e.g. n_boot=1000")
    check_int("n_perm", n_perm, 1, "e.g. n_perm=1000")
    ds_a = _as_method("sgd", sgd, methods[0])
    ds_b = _as_method("sde", sde, methods[1])
    names = _observable_names(ds_a, ds_b, observables)
    resolutions = _resolutions(names, resolution, _config_of(ds_a))
    time = _time_grid(methods[0], ds_a)
    matched = _matched_steps(time, _time_grid(methods[1], ds_b), methods)
    ds_b = ds_b.isel(step=matched)
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    n_seed = max(ds_a.sizes["traj"], ds_b.sizes["traj"])
    variables: dict[str, Any] = {}
    children = as_seed_sequence(seed).spawn(len(names))
    for name, child in zip(names, children, strict=True):
        boot = {"n_boot": n_boot, "n_perm": n_perm, "seed": child, "resolution": resolutions[name]}
        variables.update(_observable(name, ds_a, ds_b, n_seed, z, confidence, boot))
    coords: dict[str, Any] = {
        "dynamics": methods,
        "step": np.asarray(ds_a["step"].values),
        "time": ("step", time),
        "matched_step": ("step", np.asarray(ds_b["step"].values)),
    }
    if "block" in ds_a.coords:
        coords["block"] = np.asarray(ds_a["block"].values)
    out = xr.Dataset(variables, coords=coords)
    config = {
        "methods": {m: _config_of(ds) for m, ds in zip(methods, (ds_a, ds_b), strict=True)},
        "observables": names,
        "confidence": confidence,
        "n_boot": n_boot,
        "n_perm": n_perm,
        "resolution": resolutions,
    }
    out.attrs.update(encode_attrs(run_attrs(f"{methods[0]} vs {methods[1]}", config, seed)))
    return out


def baseline_comparison(
    ds: xr.Dataset,
    baseline: Any,
    *,
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: Any = 0,
) -> dict[str, tuple]:
    """A third set of runs beside a ``compare_runs`` dataset, at the same steps (not the
    same times: the paper's small-step run beside the large-step one, epoch by epoch):
    per compared observable its mean and confidence band over seeds, and the
    ``relative_gap`` of the second method (the model) to the first (the reference)
    against this baseline's gap to the first.

    ds: a ``compare_runs`` dataset.
    baseline: the baseline's runs, TrainResults (one per seed) or their
        ``results_dataset``, evaluated at the steps of ds.
    confidence, n_boot, seed: the band's level and the bootstrap (``relative_gap``).

    Returns the variables to assign to ds: ``baseline_<obs>_mean``,
    ``baseline_<obs>_lower``, ``baseline_<obs>_upper`` (step[, block]) and
    ``relative_gap_<obs>``, ``relative_gap_<obs>_se`` ([block]).
    """
    base = _as_method("baseline", baseline, "baseline")
    steps = np.asarray(ds["step"].values)
    if not np.array_equal(np.asarray(base["step"].values), steps):
        raise ValueError(
            f"the baseline runs were evaluated at steps {base['step'].values[:6].tolist()}..., "
            f"not at the compared steps {steps[:6].tolist()}...: give the baseline the same "
            "n_steps and eval_every"
        )
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    names = _config_of(ds)["observables"]
    out: dict[str, tuple] = {}
    for name, child in zip(names, as_seed_sequence(seed).spawn(len(names)), strict=True):
        extra = ds[name].dims[3:]
        values = np.asarray(base[name].values, dtype=np.float64)
        mean, _, se = _mean_and_errors(values)
        half, shape = z * se, values.shape[1:]
        dims = ("step", *extra)
        label = f"the baseline's {name} (mean over seeds, at the same step)"
        out[f"baseline_{name}_mean"] = (dims, mean, {"long_name": label})
        out[f"baseline_{name}_lower"] = (
            dims,
            mean - half,
            {"long_name": f"lower {confidence:.0%} bound of {label}"},
        )
        out[f"baseline_{name}_upper"] = (
            dims,
            mean + half,
            {"long_name": f"upper {confidence:.0%} bound of {label}"},
        )
        ours = [np.asarray(ds[name].isel(dynamics=i).values, dtype=np.float64) for i in (0, 1)]
        flat = [v.reshape(*v.shape[:2], -1) for v in (*ours, values)]
        gap = relative_gap(*flat, n_boot=n_boot, seed=child)
        methods = ds["dynamics"].values.tolist()
        long = (
            f"max_t |{methods[1]} - {methods[0]}| / max_t |baseline - {methods[0]}| of the "
            f"mean {name} (0: the model is the reference; 1: as far as the baseline)"
        )
        out[f"relative_gap_{name}"] = (
            tuple(extra),
            gap["gap"].reshape(shape[1:]),
            {"long_name": long},
        )
        out[f"relative_gap_{name}_se"] = (
            tuple(extra),
            gap["se"].reshape(shape[1:]),
            {"long_name": "bootstrap standard error of the relative gap, (q84 - q16) / 2"},
        )
    return out


def _resolutions(names: list[str], given: Any, config: Any) -> dict[str, float]:
    """Every compared observable's resolution: ``given`` where it names one, else
    ``observable_resolution`` of the config."""
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise ValueError(
            f"resolution must be a dict {{observable: grid step}} or None (got {given!r}), "
            "e.g. {'test_error': 1 / 297}"
        )
    unknown = [name for name in given if name not in names]
    if unknown:
        raise ValueError(f"resolution names observables {unknown} that are not compared ({names})")
    out = {}
    for name in names:
        r = given.get(name, observable_resolution(name, config))
        _resolution_floor(r, 1)  # checked here, before any work
        out[name] = float(r)
    return out


def _config_of(ds: xr.Dataset) -> Any:
    config = ds.attrs.get("config", "{}")
    return json.loads(config) if isinstance(config, str) else config


def _mean_and_errors(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean over seeds, the seed standard deviation and the standard error of the
    mean of one method's values (seeds, steps[, ...]), each (steps[, ...])."""
    shape = values.shape[1:]
    mean, spread, count = _seed_statistics(values.reshape(*values.shape[:2], -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        se = spread / np.sqrt(count)
    return mean.reshape(shape), spread.reshape(shape), se.reshape(shape)


def _observable(
    name: str,
    ds_a: xr.Dataset,
    ds_b: xr.Dataset,
    n_seed: int,
    z: float,
    confidence: float,
    boot: dict[str, Any],
) -> dict[str, tuple]:
    """The comparison variables of one observable (``compare_runs``); ``boot``: the
    keyword arguments of ``agreement_score`` (resolution, n_boot, n_perm, seed)."""
    extra = ds_a[name].dims[2:]
    dims = ("dynamics", "step", *extra)
    values = [np.asarray(ds[name].values, dtype=np.float64) for ds in (ds_a, ds_b)]
    padded = np.full((2, n_seed, *values[0].shape[1:]), np.nan)
    for i, v in enumerate(values):
        padded[i, : v.shape[0]] = v
    flat = [_as_values(name, v.reshape(*v.shape[:2], -1)) for v in values]
    stats = [_mean_and_errors(v) for v in values]
    mean, spread, se = (np.stack([s[i] for s in stats]) for i in range(3))
    shape = values[0].shape[1:]
    agreement = agreement_score(*flat, **boot)
    time = np.asarray(_time_grid("first", ds_a))
    index = agreement["step_index"]
    at_time = np.where(index >= 0, time[np.maximum(index, 0)], np.nan)
    long = ds_a[name].attrs.get("long_name", name)
    band = f"{confidence:.0%} confidence bound of the mean over seeds (mean -+ z s / sqrt(m))"
    score_dims = tuple(extra)
    score_shape = shape[1:]

    def scored(array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float64).reshape(score_shape)

    return {
        name: (("dynamics", "seed", "step", *extra), padded, {"long_name": long}),
        f"{name}_mean": (dims, mean, {"long_name": f"mean over seeds of {long}"}),
        f"{name}_spread": (dims, spread, {"long_name": f"standard deviation over seeds of {name}"}),
        f"{name}_se": (dims, se, {"long_name": f"standard error of the mean of {name}"}),
        f"{name}_lower": (dims, mean - z * se, {"long_name": f"lower {band}"}),
        f"{name}_upper": (dims, mean + z * se, {"long_name": f"upper {band}"}),
        f"agreement_{name}": (
            score_dims,
            scored(agreement["score"]),
            {
                "long_name": f"max_t |mean gap| / combined seed spread of {name}",
                "resolution": boot["resolution"],
            },
        ),
        f"agreement_{name}_se": (
            score_dims,
            scored(agreement["se"]),
            {
                "long_name": "bootstrap standard error of the agreement score, (q84 - "
                "q16) / 2 over seed resamples (inf: over 16 % of them degenerate)"
            },
        ),
        f"agreement_{name}_time": (
            score_dims,
            scored(at_time),
            {"long_name": "time t at which the largest relative gap occurs"},
        ),
        f"agreement_{name}_null": (
            score_dims,
            scored(agreement["null"]),
            {"long_name": "mean agreement score of identical distributions (seed permutations)"},
        ),
        f"agreement_{name}_p": (
            score_dims,
            scored(agreement["p_value"]),
            {"long_name": "permutation p-value of the agreement score (same distribution)"},
        ),
        f"agreement_{name}_degenerate": (
            score_dims,
            scored(agreement["degenerate"]),
            {
                "long_name": "fraction of bootstrap resamples whose score is not finite",
                "units": "1",
            },
        ),
    }


def agreement_table(ds: xr.Dataset) -> str:
    """A text table of a ``compare_runs`` dataset: per observable (and block) the
    agreement score +- its standard error, its null level, p-value and time, the
    relative gap G +- se where a ``baseline_comparison`` is assigned, and the fraction
    of degenerate bootstrap resamples where there are any."""
    gaps = any(v.startswith("relative_gap_") for v in ds.data_vars)
    header = f"{'observable':<28} {'score':>8} {'+-se':>7} {'null':>7} {'p':>6} {'at t':>9}"
    rows = [header + (f" {'G':>6} {'+-se':>6}" if gaps else "")]
    for var in ds.data_vars:
        if not _is_score(var):
            continue
        name = var.removeprefix("agreement_")
        for label, sel in _columns(ds[var], name):
            values = [float(ds[f"{var}{suffix}"].sel(sel)) for suffix in ("", "_se", "_null")]
            p, t = float(ds[f"{var}_p"].sel(sel)), float(ds[f"{var}_time"].sel(sel))
            row = (
                f"{label:<28} {values[0]:8.3g} {values[1]:7.2g} {values[2]:7.2g} {p:6.3f} {t:9.4g}"
            )
            if f"relative_gap_{name}" in ds:
                gap = [float(ds[f"relative_gap_{name}{x}"].sel(sel)) for x in ("", "_se")]
                row += f" {gap[0]:6.2f} {gap[1]:6.2f}"
            degenerate = ds.get(f"{var}_degenerate")
            if degenerate is not None and float(degenerate.sel(sel)) > 0:
                row += f"  ({float(degenerate.sel(sel)):.0%} of bootstrap resamples degenerate)"
            rows.append(row)
    return "\n".join(rows)


def _columns(da: xr.DataArray, name: str) -> list[tuple[str, dict]]:
    """(label, selection) of every column of a per-observable variable (one per block)."""
    if "block" not in da.dims:
        return [(name, {})]
    return [(f"{name} {b}", {"block": b}) for b in da["block"].values.tolist()]


def plot_comparison(
    ds: xr.Dataset,
    path: str | Path | None = None,
    observables: Sequence[str] | None = None,
    title: str | None = None,
):
    """One panel per observable (and block) of a ``compare_runs`` dataset against time:
    per method the mean over seeds (line; the second method dashed) and its confidence
    band (shaded), the agreement score +- se in the panel title; with a
    ``baseline_comparison`` assigned, the baseline's mean and band (grey, dotted) at the
    same steps and the relative gap G in the title. Written atomically to
    ``path`` (PNG by default; ``sgdsde.analysis.plots.save_figure``) and closed when a
    path is given; returns the figure.

    ds: the ``compare_runs`` dataset.
    path: where to write the figure, or None (return it open).
    observables: which to draw (default: every compared one).
    title: the figure's title.
    """
    import matplotlib.pyplot as plt

    compared = [v.removeprefix("agreement_") for v in ds.data_vars if _is_score(v)]
    names = compared if observables is None else list(observables)
    unknown = [n for n in names if n not in compared]
    if unknown:
        raise ValueError(f"observables {unknown} were not compared; the dataset has {compared}")
    panels = [(name, label, sel) for name in names for label, sel in _columns(ds[name], name)]
    n_cols = min(4, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.0 * n_cols, 3.2 * n_rows), squeeze=False)
    time = ds["time"].values
    for ax, (name, label, sel) in zip(axes.ravel(), panels, strict=False):
        for i, method in enumerate(ds["dynamics"].values.tolist()):
            pick = {"dynamics": method, **sel}
            line = ax.plot(time, ds[f"{name}_mean"].sel(pick), ls="-" if i == 0 else "--")
            lower, upper = ds[f"{name}_lower"].sel(pick), ds[f"{name}_upper"].sel(pick)
            ax.fill_between(time, lower, upper, color=line[0].get_color(), alpha=0.25, lw=0)
            line[0].set_label(str(method))
        heading = f"{label}: D = {float(ds[f'agreement_{name}'].sel(sel)):.2g}"
        heading += f" +- {float(ds[f'agreement_{name}_se'].sel(sel)):.1g}"
        if f"baseline_{name}_mean" in ds:
            mean = ds[f"baseline_{name}_mean"].sel(sel)
            line = ax.plot(time, mean, ls=":", color="0.4", label="baseline (same step)")
            lower, upper = (
                ds[f"baseline_{name}_lower"].sel(sel),
                ds[f"baseline_{name}_upper"].sel(sel),
            )
            ax.fill_between(time, lower, upper, color="0.4", alpha=0.15, lw=0)
            heading += f", G = {float(ds[f'relative_gap_{name}'].sel(sel)):.2g}"
        ax.set_title(heading, fontsize=9)
        ax.set_xlabel("time t = sum of step sizes")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=8)
    return finish_figure(fig, title, path, title_size=10)


def _is_score(var: str) -> bool:
    return var.startswith("agreement_") and not var.endswith(SCORE_SUFFIXES)
