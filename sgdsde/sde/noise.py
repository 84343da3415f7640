"""Noise models of the SDE that models SGD.

Every SDE here is an Ito equation for the parameters of a closed-form model,

    d theta = -grad L(theta) dt + G(theta) dW,
    G(theta) dW = phi_theta(X)^T ( a dW_label + b r (.) (dW_sgd - mean(dW_sgd)) ) + s dW_iso,

with W_label, W_sgd in R^n, W_iso in R^p independent Brownian motions, r the
residuals and phi the Jacobian of the predictions (docs/conventions.md, "Label-noise
SDE" and "SGD-covariance SDE"). A noise model is the three per-trajectory
coefficients (a, b, s):

* ``GradientFlow``       a = b = s = 0.
* ``LabelNoise``         a = sqrt(eta delta / (n B)): label-noise SGD with label
  variance delta at step eta and batch B, the paper's Eq. (8) with its constant
  explicit (Andriushchenko et al. 2023). B = n: label-noise GD at step eta *is*
  Euler-Maruyama of this SDE at dt = eta.
* ``StabilizedLoss``     the same with delta = 2 L* (during loss stabilization at
  level L*, r_i^2 ~ 2 L*).
* ``SGDCovariance``      b = sqrt(eta c / (B n)), c = (n - B)/(n - 1) without
  replacement, 1 with: the stochastic modified equation of Li, Tai and E (2017);
  G G^T equals eta times the exact minibatch-gradient covariance.
* ``Isotropic``          s = scale: isotropic noise, the control of Xing et al. (2018).
* ``SGDNoise``           a = sqrt(eta delta / (n B)) and b = sqrt(eta c / (B n)): the full
  SDE model of (label-noise) minibatch SGD, both channels at once. The label noise and
  the sampling of S_k are independent, so the covariance of the (label-noise) minibatch
  gradient is the sum of the two, and G G^T = eta (c/(B n) phi^T diag(r) P diag(r) phi
  + delta/(B n) phi^T phi), P = I - 11^T/n. ``noise_for_sgd`` builds it from an ``SGD``.

The diffusion is only ever applied to a Gaussian vector, as one vector-Jacobian
product phi^T w; ``diffusion_matrix`` forms G for tests.

Every parameter is checked when the noise model is built (a scalar, or one value per
trajectory); what depends on the data (B <= n) and on the number of trajectories is
checked by ``coefficients``. ``NOISE_MODELS`` is the registry (``make_noise`` builds
one by name, ``to_config`` / ``NOISE_MODELS.from_config`` go to a config and back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from sgdsde.models.base import Model, as_params
from sgdsde.registry import Registry, to_config
from sgdsde.run.checks import check_options

Scalar = float | Sequence[float] | np.ndarray

#: What every noise-model field may hold, by field name (one meaning per name across the
#: family): (rule, the fix quoted in the error). A new field needs an entry here.
FIELD_RULES: dict[str, tuple[str, str]] = {
    "lr": ("positive", "pass the SGD step size eta that the SDE models"),
    "batch_size": ("batch", "pass the minibatch size B (B = n: full batch)"),
    "delta": ("non_negative", "pass the label-noise variance delta (0: none)"),
    "label_noise": ("non_negative", "pass the label-noise variance delta (0: none)"),
    "level": ("non_negative", "pass the loss level L* at which the loss stabilizes"),
    "scale": ("non_negative", "pass the standard deviation s of the isotropic noise"),
    "with_replacement": ("flag", "pass true or false"),
}


def _check_field(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` obeys ``FIELD_RULES[name]`` (a scalar, or one
    entry per trajectory)."""
    rule, fix = FIELD_RULES[name]
    if rule == "flag":
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"{name} must be True or False (got {value!r}): {fix}")
        return
    arr = np.asarray(value)
    shown = arr.tolist() if arr.ndim else value
    numeric = arr.dtype != np.bool_ and np.issubdtype(arr.dtype, np.number) and arr.ndim <= 1
    if rule == "batch":
        if not (numeric and np.issubdtype(arr.dtype, np.integer) and np.all(arr >= 1)):
            raise ValueError(f"batch_size must be in [1, n], integers (got {shown!r}): {fix}")
    elif not numeric:
        raise ValueError(
            f"{name} must be a number or one number per trajectory (got {shown!r}): {fix}"
        )
    elif rule == "positive" and not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"{name} must be > 0 and finite (got {shown!r}): {fix}")
    elif rule == "non_negative" and not np.all(np.isfinite(arr) & (arr >= 0)):
        raise ValueError(f"{name} must be finite and >= 0 (got {shown!r}): {fix}")


@dataclasses.dataclass(frozen=True)
class NoiseCoefficients:
    """Per-trajectory coefficients (T,) of the three noise channels."""

    label: np.ndarray
    sgd: np.ndarray
    iso: np.ndarray

    def channels(self) -> tuple[bool, bool, bool]:
        """Which channels are used by any trajectory (unused ones draw no numbers)."""
        return bool(np.any(self.label)), bool(np.any(self.sgd)), bool(np.any(self.iso))


def _per_traj(name: str, value: Any, n_traj: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n_traj, float(arr))
    if arr.shape != (n_traj,):
        raise ValueError(f"{name} has shape {arr.shape} but there are {n_traj} trajectories")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and >= 0 (got {arr})")
    return arr


def _lr_and_batch(lr: Any, batch_size: Any, n: int, n_traj: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-trajectory SGD step size (> 0) and batch size (in [1, n])."""
    lr = _per_traj("lr", lr, n_traj)
    batch = _per_traj("batch_size", batch_size, n_traj)
    if np.any(lr <= 0):
        raise ValueError(f"lr must be > 0 (got {lr}): pass the SGD step size eta")
    if np.any((batch < 1) | (batch > n)):
        raise ValueError(f"batch_size must be in [1, n = {n}] (got {batch})")
    return lr, batch


def _n_entries(values: dict[str, Any]) -> int | None:
    """The common length of the per-trajectory (sequence) values, None if all are scalars."""
    sizes = {name: np.size(v) for name, v in values.items() if np.ndim(v) > 0}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name} has {size}" for name, size in sizes.items())
        raise ValueError(
            f"per-trajectory noise parameters disagree in length ({listed}): give every "
            "sequence one entry per trajectory, or a single value shared by all"
        )
    return next(iter(sizes.values())) if sizes else None


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """Base class: subclasses define ``coefficients(n, n_traj)``; their fields are checked
    at construction by ``FIELD_RULES`` (name -> rule)."""

    name: ClassVar[str]

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_field(field.name, getattr(self, field.name))
        _ = self.n_traj  # per-trajectory parameters must agree in length

    def coefficients(self, n: int, n_traj: int) -> NoiseCoefficients:
        raise NotImplementedError

    @property
    def n_traj(self) -> int | None:
        """Number of trajectories implied by per-trajectory parameters (None: any)."""
        return _n_entries({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., <field>: <value>}``, JSON-ready; ``make_noise`` inverts it."""
        return to_config(self)

    def diffusion_matrix(self, model: Model, theta, X, y) -> np.ndarray:
        """G(theta), shape (T, p, 2n + p), columns ordered (label, sgd, iso) as dW."""
        theta = as_params(theta, model.n_params)
        T, p = theta.shape
        n = np.asarray(X).shape[-2]
        c = self.coefficients(n, T)
        phi_t = np.swapaxes(model.jacobian(theta, X), 1, 2)  # (T, p, n)
        r = model.residuals(theta, X, y)  # (T, n)
        centring = np.eye(n) - np.full((n, n), 1.0 / n)
        label = c.label[:, None, None] * phi_t
        sgd = c.sgd[:, None, None] * np.einsum("tpi,ti,ij->tpj", phi_t, r, centring)
        iso = c.iso[:, None, None] * np.broadcast_to(np.eye(p), (T, p, p))
        return np.concatenate([label, sgd, iso], axis=2)


@dataclasses.dataclass(frozen=True)
class GradientFlow(NoiseModel):
    """No noise: d theta = -grad L dt."""

    name = "gradient_flow"

    def coefficients(self, n, n_traj):
        zero = np.zeros(n_traj)
        return NoiseCoefficients(zero, zero.copy(), zero.copy())


@dataclasses.dataclass(frozen=True)
class LabelNoise(NoiseModel):
    """Label noise of variance delta at SGD step size lr and batch size B."""

    delta: Scalar
    lr: Scalar
    batch_size: Scalar = 1

    name = "label_noise"

    def coefficients(self, n, n_traj):
        delta = _per_traj("delta", self.delta, n_traj)
        lr, batch = _lr_and_batch(self.lr, self.batch_size, n, n_traj)
        zero = np.zeros(n_traj)
        return NoiseCoefficients(np.sqrt(lr * delta / (n * batch)), zero, zero.copy())


@dataclasses.dataclass(frozen=True)
class StabilizedLoss(NoiseModel):
    """Loss stabilized at level L*: label noise with delta = 2 L*."""

    level: Scalar
    lr: Scalar
    batch_size: Scalar = 1

    name = "stabilized_loss"

    def coefficients(self, n, n_traj):
        level = _per_traj("level", self.level, n_traj)
        return LabelNoise(2.0 * level, self.lr, self.batch_size).coefficients(n, n_traj)


@dataclasses.dataclass(frozen=True)
class SGDCovariance(NoiseModel):
    """Stochastic modified equation: G G^T = eta * covariance of the minibatch gradient."""

    lr: Scalar
    batch_size: Scalar = 1
    with_replacement: bool = False

    name = "sgd_covariance"

    def coefficients(self, n, n_traj):
        lr, batch = _lr_and_batch(self.lr, self.batch_size, n, n_traj)
        c = np.ones(n_traj) if self.with_replacement else (n - batch) / max(n - 1, 1)
        zero = np.zeros(n_traj)
        return NoiseCoefficients(zero, np.sqrt(lr * c / (batch * n)), zero.copy())


@dataclasses.dataclass(frozen=True)
class Isotropic(NoiseModel):
    """Isotropic noise s dW, W in R^p (the control of 'A Walk with SGD')."""

    scale: Scalar

    name = "isotropic"

    def coefficients(self, n, n_traj):
        zero = np.zeros(n_traj)
        return NoiseCoefficients(zero, zero.copy(), _per_traj("scale", self.scale, n_traj))


@dataclasses.dataclass(frozen=True)
class SGDNoise(NoiseModel):
    """The SDE model of (label-noise) minibatch SGD at step size lr.

    Minibatch sampling (``SGDCovariance``: b = sqrt(eta c / (B n)), c = (n - B)/(n - 1)
    without replacement, 1 with) plus label noise of variance ``label_noise`` = delta
    (``LabelNoise``: a = sqrt(eta delta / (n B))). G G^T is eta times the exact
    covariance of the label-noise minibatch gradient (1/B) sum_{i in S} (r_i + xi_i)
    grad f(x_i). B = n without replacement (GD) leaves only the label channel, so label-
    noise GD at step eta is Euler-Maruyama of this SDE at dt = eta (same numbers, same
    seed: see ``sgdsde.sde.solvers.base``).
    """

    lr: Scalar
    batch_size: Scalar = 1
    label_noise: Scalar = 0.0
    with_replacement: bool = False

    name = "sgd"

    def coefficients(self, n, n_traj):
        sampling = SGDCovariance(self.lr, self.batch_size, self.with_replacement)
        b = sampling.coefficients(n, n_traj).sgd
        delta = _per_traj("label_noise", self.label_noise, n_traj)
        a = LabelNoise(delta, self.lr, self.batch_size).coefficients(n, n_traj).label
        return NoiseCoefficients(a, b, np.zeros(n_traj))


def noise_for_sgd(sgd: Any, lr: Scalar, n: int) -> SGDNoise:
    """The ``SGDNoise`` matched to an ``sgdsde.dynamics.SGD`` run at step size ``lr`` on n
    examples (``batch_size=None``, GD, becomes B = n). A batch size or label noise that
    follows a schedule has no constant-coefficient SDE here: a ValueError says so."""
    for field in ("batch_size", "label_noise"):
        value = getattr(sgd, field)
        values = value if isinstance(value, list | tuple) else [value]
        if any(hasattr(v, "change_points") for v in values):
            raise ValueError(
                f"the matched SDE takes a constant {field} per trajectory (got a schedule "
                f"{value!r}): pass numbers, or simulate the SDE yourself with "
                "simulate_sde and a noise model per phase (ScheduledNoise follows step-size "
                "schedules only)"
            )
    batch = sgd.batch_size
    if batch is None:
        batch = n
    elif np.ndim(batch) > 0:
        batch = [n if b is None else b for b in batch]
    return SGDNoise(
        lr=lr,
        batch_size=batch,
        label_noise=sgd.label_noise,
        with_replacement=bool(sgd.with_replacement),
    )


#: name -> noise-model class.
NOISE_MODELS: Registry[NoiseModel] = Registry(
    "noise model",
    {
        cls.name: cls
        for cls in (GradientFlow, LabelNoise, StabilizedLoss, SGDCovariance, Isotropic, SGDNoise)
    },
)


def make_noise(name: str, **fields: Any) -> NoiseModel:
    """Build the noise model registered as ``name`` (see ``NOISE_MODELS``) from its
    ``fields``; an unknown or missing field is a ValueError listing the accepted ones."""
    cls = NOISE_MODELS[name]
    check_options(f"bad arguments for noise {name!r}", cls, fields)
    return cls(**fields)
