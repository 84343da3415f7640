"""Seeded data generators for the toy experiments, registered in ``GENERATORS``.

Every random generator takes ``seed`` (int or ``np.random.SeedSequence``) and returns a
``RegressionData``: training inputs/targets, a test set (independent, or the training
set where the source uses none), and the generator's resolved configuration (written
into every output dataset). ``make_data(name, **options)`` builds one by name.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sgdsde.arguments import check_finite, check_nonnegative, check_positive_int
from sgdsde.lazy import lazy_module

torch = lazy_module("torch")  # the notebooks' draws only: not at `import sgdsde`


@dataclasses.dataclass(frozen=True)
class RegressionData:
    """A regression problem: X (n, d), y (n,), X_test (n_test, d), y_test (n_test,)."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    beta_star: np.ndarray | None = None

    def __post_init__(self):
        for name in ("X", "y", "X_test", "y_test"):
            arr = np.ascontiguousarray(np.asarray(getattr(self, name), dtype=np.float64))
            if name.startswith("X") and arr.ndim == 1:
                arr = arr[:, None]
            object.__setattr__(self, name, arr)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"data array {name} contains NaN or inf: clean the data first")
        if self.X.ndim != 2 or self.y.ndim != 1 or self.X.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"X must be (n, d) and y (n,), got X {self.X.shape} and y {self.y.shape}"
            )
        if self.X_test.ndim != 2 or self.X_test.shape[1] != self.X.shape[1]:
            raise ValueError(f"X_test must be (n_test, {self.X.shape[1]}), got {self.X_test.shape}")
        if self.y_test.shape != (self.X_test.shape[0],):
            raise ValueError(f"y_test must be ({self.X_test.shape[0]},), got {self.y_test.shape}")
        if self.X.shape[0] < 1:
            raise ValueError("the training set is empty: give at least one example")
        # Every run records the test loss, a mean over the test set: an empty one would
        # be NaN with a numpy warning in every row, so it is refused here, once.
        if self.X_test.shape[0] < 1:
            raise ValueError(
                "the test set is empty: give at least one test example (without a "
                "held-out set, pass the training set: X_test=X, y_test=y)"
            )

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def _seed_config(seed) -> Any:
    """The seed as written into a data set's config (JSON: an int, else its repr)."""
    return seed if isinstance(seed, int | np.integer) else str(seed)


def sparse_regression(
    n: int = 80,
    d: int = 200,
    k: int = 20,
    n_test: int = 1000,
    noise_std: float = 0.0,
    seed=0,
) -> RegressionData:
    """Sparse linear regression of Andriushchenko et al. (2023), Sec. 3 / ``diag_nets.ipynb``.

    x ~ N(0, I_d); beta* has k non-zero (first) coordinates, |N(0, 1)| draws
    normalised to ||beta*||_2 = 1; y = X beta* (+ noise_std * N(0, 1) on the
    training labels only, so the test loss measures recovery of beta*).
    """
    check_positive_int(n=n, d=d, k=k, n_test=n_test)
    if k > d:
        raise ValueError(f"k = {k} non-zero coordinates cannot exceed d = {d}")
    check_nonnegative(noise_std=noise_std)
    rng = _rng(seed)
    beta = np.zeros(d)
    beta[:k] = np.abs(rng.standard_normal(k))
    beta /= np.linalg.norm(beta)
    X = rng.standard_normal((n, d))
    X_test = rng.standard_normal((n_test, d))
    y = X @ beta + noise_std * rng.standard_normal(n)
    config = dict(generator="sparse_regression", n=n, d=d, k=k, n_test=n_test, noise_std=noise_std)
    config["seed"] = _seed_config(seed)
    return RegressionData(X, y, X_test, X_test @ beta, config, beta_star=beta)


def sparse_regression_notebook(
    n: int = 80, d: int = 200, k: int = 20, n_test: int = 1000, seed: int = 0
) -> RegressionData:
    """The data draw of ``diag_nets.ipynb`` (Andriushchenko et al., ICML 2023), number for
    number: the same problem as ``sparse_regression``, drawn in the notebook's order.

    A local legacy ``np.random.RandomState(seed)`` (never the global RNG) draws, in this
    order: X (n, d), then X_test (n_test, d), each by ``multivariate_normal(0, I_d)``;
    then d standard normals, of which coordinates k.. are set to 0, the rest made
    positive and the vector normalised to ||beta*||_2 = 1. y = X beta*, noiseless. With
    seed 0 and the default sizes this is the paper's draw (its constant eta = 0.25 SGD
    row, train 1.42e-6 / test 3.53e-3, is a run on it).

    seed: an int in [0, 2**32) (legacy seeding; the paper's draw is 0), or a
        ``np.random.SeedSequence``, whose first 32-bit state word is the legacy seed.
    """
    check_positive_int(n=n, d=d, k=k, n_test=n_test)
    if k > d:
        raise ValueError(f"k = {k} non-zero coordinates cannot exceed d = {d}")
    if isinstance(seed, np.random.SeedSequence):
        legacy = int(seed.generate_state(1)[0])
    elif isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(
            f"seed must be an integer in [0, 2**32) or a SeedSequence (got {seed!r}): the "
            "notebook's legacy RandomState takes an integer seed (the paper's draw is seed = 0)"
        )
    else:
        legacy = int(seed)
    rs = np.random.RandomState(legacy)
    mean, cov = np.zeros(d), np.eye(d)
    X = rs.multivariate_normal(mean, cov, n)
    X_test = rs.multivariate_normal(mean, cov, n_test)
    beta = rs.standard_normal(d)
    beta[k:] = 0.0
    beta = np.abs(beta) / np.linalg.norm(beta)
    config = dict(generator="sparse_regression_notebook", n=n, d=d, k=k, n_test=n_test)
    config["seed"] = _seed_config(seed)
    return RegressionData(X, X @ beta, X_test, X_test @ beta, config, beta_star=beta)


def _unit_sphere(rng, m, d):
    x = rng.standard_normal((m, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


#: How a teacher-student generator draws: ``"numpy"`` (ours, a ``np.random.Generator``)
#: or ``"notebook"`` (the paper's notebooks' exact draw, see ``_notebook_sphere``).
PROCEDURES = ("numpy", "notebook")


def _check_procedure(procedure: str, seed: Any) -> None:
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {list(PROCEDURES)} (got {procedure!r})")
    if procedure == "notebook" and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(
            f"procedure 'notebook' seeds numpy's RandomState and torch with an int seed "
            f"(got {seed!r}): pass the notebook's data seed, e.g. seed = 1"
        )


def _notebook_sphere(rs: np.random.RandomState, n: int, d: int):
    """n inputs as the notebooks draw them (``utils.get_data_*_relu_net``): a legacy
    ``multivariate_normal(0, I_d)`` draw from the local RandomState ``rs``, cast to
    float32 and normalised to unit norm by torch (a float32 torch tensor)."""
    X = torch.tensor(rs.multivariate_normal(np.zeros(d), np.eye(d), n)).float()
    return X / torch.sum(X**2, 1, keepdim=True) ** 0.5


def _notebook_linear(gen, fan_in: int, fan_out: int, bias: bool):
    """torch ``nn.Linear(fan_in, fan_out, bias)``'s default init drawn from the local
    torch generator ``gen`` (weight, then bias, U(-1/sqrt(fan_in), 1/sqrt(fan_in))):
    the draws the notebooks' teachers make before ``init_gaussian``."""
    bound = 1.0 / math.sqrt(fan_in)
    W = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=gen)
    b = torch.empty(fan_out).uniform_(-bound, bound, generator=gen) if bias else None
    return W, b


def teacher_student_sphere(
    n: int = 15,
    d: int = 2,
    teacher_width: int = 3,
    n_test: int = 1000,
    seed=1,
    procedure: str = "numpy",
) -> RegressionData:
    """Two-layer ReLU teacher on the unit sphere (``fc_nets_two_layer.ipynb``).

    Inputs are Gaussian vectors normalised to ||x|| = 1. The teacher
    f*(x) = sum_j a_j relu(w_j . x) has unit-norm rows w_j and a_j = +-1 (signs of
    Gaussians), no biases. Its weights are in ``config["teacher"]``.

    procedure: ``"numpy"`` (ours), or ``"notebook"``: the notebook's exact draw with its
    data seed (``seed + 1`` of ``get_data_two_layer_relu_net``; the paper's is 1): X and
    X_test from a local ``np.random.RandomState(seed)``, the teacher from a local torch
    generator seeded with ``seed`` (float32, as the notebook; its printed labels are
    reproduced, tests/test_paper_relu.py).
    """
    check_positive_int(n=n, d=d, teacher_width=teacher_width, n_test=n_test)
    _check_procedure(procedure, seed)
    if procedure == "notebook":
        return _notebook_teacher_student(n, d, teacher_width, n_test, seed)
    rng = _rng(seed)
    W = _unit_sphere(rng, teacher_width, d)
    a = np.sign(rng.standard_normal(teacher_width))
    X = _unit_sphere(rng, n, d)
    X_test = _unit_sphere(rng, n_test, d)

    def teacher(Z):
        return np.maximum(Z @ W.T, 0.0) @ a

    config = dict(
        generator="teacher_student_sphere",
        n=n,
        d=d,
        teacher_width=teacher_width,
        n_test=n_test,
        seed=_seed_config(seed),
        teacher={"W": W.tolist(), "a": a.tolist()},
    )
    return RegressionData(X, teacher(X), X_test, teacher(X_test), config)


def _notebook_teacher_student(n, d, teacher_width, n_test, seed) -> RegressionData:
    rs = np.random.RandomState(seed)  # a local legacy stream: the notebook's draw order
    X, X_test = _notebook_sphere(rs, n, d), _notebook_sphere(rs, n_test, d)
    gen = torch.Generator().manual_seed(seed)
    _notebook_linear(gen, d, teacher_width, False)  # nn.Linear's init, then overwritten
    _notebook_linear(gen, teacher_width, 1, False)
    W = torch.randn(teacher_width, d, generator=gen)
    a = torch.sign(torch.randn(1, teacher_width, generator=gen))
    W = W / torch.sum(W**2, 1, keepdim=True) ** 0.5

    def teacher(Z):
        return (torch.relu(Z @ W.T) @ a.T)[:, 0].double().numpy()

    config = dict(
        generator="teacher_student_sphere",
        n=n,
        d=d,
        teacher_width=teacher_width,
        n_test=n_test,
        seed=seed,
        procedure="notebook",
        teacher={"W": W.double().tolist(), "a": a[0].double().tolist()},
    )
    return RegressionData(
        X.double().numpy(), teacher(X), X_test.double().numpy(), teacher(X_test), config
    )


def deep_relu_teacher(
    n: int = 50,
    d: int = 5,
    widths: tuple[int, ...] = (2, 2),
    scale: float = 1.0,
    n_test: int = 1000,
    seed=6,
    procedure: str = "numpy",
) -> RegressionData:
    """Deep ReLU teacher on the unit sphere (``fc_nets_multi_layer.ipynb``,
    ``get_data_multi_layer_relu_net``; Andriushchenko et al., ICML 2023, App.).

    Inputs are Gaussian vectors normalised to ||x|| = 1. The teacher is the fully
    connected net h_l = relu(W_l h_{l-1} + b_l), f*(x) = W_out h_H + b_out with hidden
    ``widths``, weights ``scale`` N(0, 1) and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (torch's ``nn.Linear`` default, which the notebook keeps). Its weights are in
    ``config["teacher"]`` as lists [W_1, b_1, ..., W_out, b_out].

    procedure: ``"numpy"`` (ours), or ``"notebook"``: the notebook's exact draw with its
    data seed (``seed + 1`` of ``get_data_multi_layer_relu_net``; the paper's is 6): X
    and X_test from a local ``np.random.RandomState(seed)``, the teacher from a local
    torch generator seeded with ``seed`` (float32 draws, as the notebook; its printed
    labels are reproduced, tests/test_paper_relu.py).
    """
    widths = tuple(int(w) for w in np.atleast_1d(widths))
    check_positive_int(n=n, d=d, n_test=n_test)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"widths must be positive integers, e.g. [2, 2] (got {list(widths)})")
    check_nonnegative(scale=scale)
    _check_procedure(procedure, seed)
    sizes = [d, *widths, 1]
    layers = []
    if procedure == "notebook":
        rs = np.random.RandomState(seed)  # a local legacy stream: the notebook's draw order
        X = _notebook_sphere(rs, n, d).double().numpy()
        X_test = _notebook_sphere(rs, n_test, d).double().numpy()
        gen = torch.Generator().manual_seed(seed)
        drawn = [_notebook_linear(gen, a, b, True) for a, b in itertools.pairwise(sizes)]
        for W, b in drawn:  # init_gaussian: the weights redrawn, torch's biases kept
            W = scale * torch.randn(W.shape, generator=gen)
            layers.append((W.double().numpy(), b.double().numpy()))
    else:
        rng = _rng(seed)
        X = _unit_sphere(rng, n, d)
        X_test = _unit_sphere(rng, n_test, d)
        for fan_in, fan_out in itertools.pairwise(sizes):
            W = scale * rng.standard_normal((fan_out, fan_in))
            bound = 1.0 / math.sqrt(fan_in)
            layers.append((W, rng.uniform(-bound, bound, fan_out)))

    def teacher(Z):
        h = Z
        for W, b in layers[:-1]:
            h = np.maximum(h @ W.T + b, 0.0)
        W, b = layers[-1]
        return (h @ W.T + b)[:, 0]

    config = dict(
        generator="deep_relu_teacher",
        n=n,
        d=d,
        widths=list(widths),
        scale=scale,
        n_test=n_test,
        seed=_seed_config(seed),
        procedure=procedure,
        teacher=[a.tolist() for layer in layers for a in layer],
    )
    return RegressionData(X, teacher(X), X_test, teacher(X_test), config)


def regression_1d() -> RegressionData:
    """The 12-point 1-D regression benchmark of ``fc_nets_1d_regression.ipynb``.

    x = (-5.5, -4.5, ..., 5.5)/4 + 0.07, y = 0.345 + (-2, 1.5, 0, 0, 2, 1, 0, -1, 0, 1, 2, -1).
    The training set doubles as the test set, as in the notebook.
    """
    x = (np.arange(12) - 5.5) / 4 + 0.07
    y = 0.345 + np.array([-2, 1.5, 0, 0, 2, 1, 0, -1, 0, 1, 2, -1], dtype=float)
    return RegressionData(x[:, None], y, x[:, None], y.copy(), {"generator": "regression_1d"})


_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def quartic_well_data(mu: float = 1.0) -> RegressionData:
    """The one example x = 1, y = mu / sqrt(2) that turns ``QuarticWell`` into
    L = theta^4/4 - mu theta^2/2 + mu^2/4 (Chen et al., "Stochastic Collapse",
    NeurIPS 2023, Sec. 3). The test set is the training set."""
    check_finite(mu=mu)
    X = np.ones((1, 1))
    y = np.array([mu * _INV_SQRT2])
    return RegressionData(X, y, X.copy(), y.copy(), {"generator": "quartic_well", "mu": mu})


def tanh_neuron_data(
    n: int = 32,
    noise_std: float = 0.1,
    slope: float = 1.0,
    n_test: int = 1000,
    seed=0,
) -> RegressionData:
    """Scalar regression for ``TanhNeuron`` f(x) = w2 tanh(w1 x): the single-neuron
    experiment of Chen et al., "Stochastic Collapse", NeurIPS 2023, Fig. 2 (n = 32,
    x ~ N(0, 1), y = x + 0.1 N(0, 1)).

    x ~ N(0, 1), y = slope x + noise_std N(0, 1) on the training labels; the test set is
    noise-free, y = slope x. ``config["collapse_threshold"]`` is
    sum_i x_i y_i / sum_i x_i^2 over the training set: by the paper's Theorem 5.1 the
    invariant point w = 0 attracts the label-noise dynamics once the noise level
    eta zeta^2 tanh'(0) / 2 exceeds it; in this package's label-noise convention
    (variance delta, batch B) zeta^2 = delta / B, so the level is eta delta / (2 B).
    """
    check_positive_int(n=n, n_test=n_test)
    check_nonnegative(noise_std=noise_std)
    check_finite(slope=slope)
    rng = _rng(seed)
    x = rng.standard_normal(n)
    x_test = rng.standard_normal(n_test)
    y = slope * x + noise_std * rng.standard_normal(n)
    config = dict(
        generator="tanh_neuron",
        n=n,
        noise_std=noise_std,
        slope=slope,
        n_test=n_test,
        seed=_seed_config(seed),
        collapse_threshold=float(np.dot(x, y) / np.dot(x, x)),
    )
    return RegressionData(x[:, None], y, x_test[:, None], slope * x_test, config)


def linear_teacher_student_data(
    n: int = 100,
    d: int = 10,
    spectrum=None,
    teacher=None,
    n_test: int = 1000,
    noise_std: float = 0.0,
    seed=0,
    design: str = "gaussian",
) -> RegressionData:
    """Inputs in the teacher's eigenbasis for ``LinearTeacherStudent`` (Chen et al.,
    "Stochastic Collapse", NeurIPS 2023, Sec. 6).

    ``design="gaussian"``: x_ik = sqrt(lambda_k) z_ik with z ~ N(0, 1), so the input
    covariance is diag(lambda) = ``spectrum`` (default power law lambda_k = 1/k,
    k = 1..d) in expectation only. ``design="orthogonal"`` (the paper's setting, X with
    orthogonal columns): X = sqrt(n) Q diag(sqrt(lambda)) with Q (n, d) orthonormal
    columns (QR of a Gaussian matrix; needs n >= d), so X^T X / n = diag(lambda)
    exactly and the modes of the model decouple exactly. The test inputs are Gaussian
    with covariance diag(lambda) in both designs. The teacher beta* (``teacher``,
    default beta*_k = 1/k) gives y = X beta* (+ ``noise_std`` N(0, 1) on the training
    labels only).

    Which modes label noise collapses (orthogonal design, depth 2, balanced init;
    derivation in ``sgdsde.models.collapse.LinearTeacherStudent``): label-noise GD at
    step eta with label variance delta collapses mode k iff its least-squares value
    hat beta_k = (X^T y / n)_k / lambda_k is below eta delta / (2 n), whatever its input
    variance lambda_k (lambda_k only sets how fast), and soft-thresholds the others:
    E beta_k = hat beta_k - eta delta / (2 n).
    """
    check_positive_int(n=n, d=d, n_test=n_test)
    check_nonnegative(noise_std=noise_std)
    if design not in ("gaussian", "orthogonal"):
        raise ValueError(f"unknown design {design!r}: choose 'gaussian' or 'orthogonal'")
    if design == "orthogonal" and n < d:
        raise ValueError(
            f"design='orthogonal' needs n >= d orthogonal columns (got n = {n}, d = {d}): "
            f"pass n >= {d}"
        )
    k = np.arange(1, d + 1, dtype=np.float64)
    lam = 1.0 / k if spectrum is None else np.asarray(spectrum, dtype=np.float64)
    beta = 1.0 / k if teacher is None else np.asarray(teacher, dtype=np.float64)
    if lam.shape != (d,) or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError(f"spectrum must be {d} finite positive variances (got {spectrum!r})")
    if beta.shape != (d,) or not np.all(np.isfinite(beta)):
        raise ValueError(f"teacher must be {d} finite numbers (got {teacher!r})")
    rng = _rng(seed)
    X = rng.standard_normal((n, d)) * np.sqrt(lam)
    X_test = rng.standard_normal((n_test, d)) * np.sqrt(lam)
    y = X @ beta + noise_std * rng.standard_normal(n)
    if design == "orthogonal":
        # drawn after the Gaussian design's numbers, which stay what they were
        Q, R = np.linalg.qr(rng.standard_normal((n, d)))
        X = math.sqrt(n) * Q * np.sign(np.diag(R)) * np.sqrt(lam)
        y = X @ beta + noise_std * rng.standard_normal(n)
    config = dict(
        generator="linear_teacher_student",
        n=n,
        d=d,
        n_test=n_test,
        noise_std=noise_std,
        spectrum=lam.tolist(),
        teacher=beta.tolist(),
        seed=_seed_config(seed),
        design=design,
    )
    return RegressionData(X, y, X_test, X_test @ beta, config, beta_star=beta)


# name -> generator; the name is also ``config["generator"]`` of the data it builds.
GENERATORS: dict[str, Callable[..., RegressionData]] = {
    "sparse_regression": sparse_regression,
    "sparse_regression_notebook": sparse_regression_notebook,
    "teacher_student_sphere": teacher_student_sphere,
    "deep_relu_teacher": deep_relu_teacher,
    "regression_1d": regression_1d,
    "quartic_well": quartic_well_data,
    "tanh_neuron": tanh_neuron_data,
    "linear_teacher_student": linear_teacher_student_data,
}


def make_data(generator: str, **kwargs) -> RegressionData:
    """Build a data set by generator name (see ``GENERATORS``), e.g.
    ``make_data("sparse_regression", n=80, d=200, seed=0)``; ``kwargs`` are the
    generator's own arguments."""
    if generator not in GENERATORS:
        raise ValueError(
            f"unknown data generator {generator!r}: choose one of {sorted(GENERATORS)}"
        )
    try:
        return GENERATORS[generator](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for data generator {generator!r}: {err}") from err
