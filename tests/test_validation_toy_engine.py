"""The validation label-noise SDE of a linear network equals the toy engines' result.

A bias-free linear network f(x) = W x with K outputs, trained on one-hot targets, is K
independent linear regressions: row k of W follows the label-noise SDE of
``sgdsde.models.LinearRegression`` on the targets 1[y_i = k]. Fed the very normals the
toy engine draws (``normals=``), ``simulate_label_noise_sde`` (torch, chunked VJPs) must
reproduce ``sgdsde.sde.simulate_sde`` (numba, closed-form kernels) path by path, and at
dt = eta with B = n, label-noise GD of ``sgdsde.dynamics.simulate_sgd`` (issue 9, Sec. 5).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdsde.data import RegressionData
from sgdsde.dynamics import GD, simulate_sgd
from sgdsde.models import LinearRegression
from sgdsde.random import trajectory_streams
from sgdsde.sde import LabelNoise, simulate_sde
from sgdsde.validation import EvaluationOptions, ImageData, simulate_label_noise_sde

N, D, K = 12, 4, 3


@pytest.fixture(scope="module")
def linear_problem():
    """(data, bias-free float64 linear network, its initial weights W0 (K, D))."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((N, 1, 1, D))
    data = ImageData(
        X=X,
        y=np.arange(N) % K,
        X_test=rng.standard_normal((4, 1, 1, D)),
        y_test=np.arange(4) % K,
        n_classes=K,
    )
    torch.manual_seed(0)  # only the initial weights, read back below
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, K, bias=False)).double()
    W0 = network[1].weight.detach().numpy().copy()
    return data, network, W0


def _regression(data: ImageData, k: int) -> RegressionData:
    """Output k of the linear network as a toy regression: targets 1[y_i = k]."""
    X = data.X.reshape(data.n, -1).astype(np.float64)  # the float32 images, exactly
    X_test = data.X_test.reshape(len(data.y_test), -1).astype(np.float64)
    return RegressionData(X, (data.y == k) * 1.0, X_test, (data.y_test == k) * 1.0)


def _label_normals(seed: int, n_steps: int) -> np.ndarray:
    """The label-channel normals (n_steps, n) the toy engine's trajectory 0 draws."""
    return trajectory_streams(seed, 1)["label_noise"][0].standard_normal((n_steps, N))


@pytest.mark.parametrize(
    ("substeps", "delta", "batch_size"), [(1, 0.3, 4), (2, 0.3, 12), (1, 0.0, 4)]
)
def test_linear_label_noise_sde_equals_the_toy_engine(linear_problem, substeps, delta, batch_size):
    data, network, W0 = linear_problem
    eta, n_steps = 0.2, 7
    n_sim = n_steps * substeps
    rows, normals = [], np.zeros((n_sim, N, K))
    for k in range(K):
        toy = simulate_sde(
            LinearRegression(D),
            _regression(data, k),
            LabelNoise(delta, eta, batch_size),
            dt=eta / substeps,
            n_steps=n_sim,
            solver="euler_numba",  # numpy increments: the label channel's normals below
            seed=10 + k,
            theta0=W0[k],
            save_params=True,
        )
        rows.append(toy["params"].isel(traj=0, step=-1).values)
        if delta > 0:
            normals[:, :, k] = _label_normals(10 + k, n_sim)
    result = simulate_label_noise_sde(
        network,
        data,
        schedule=eta,
        n_steps=n_steps,
        batch_size=batch_size,
        delta=delta,
        substeps=substeps,
        chunk_size=5,  # three chunks: the VJP summed over chunks
        evaluation=EvaluationOptions(eval_every=n_steps),
        normals=normals,
    )
    W = result.network[1].weight.detach().numpy()
    np.testing.assert_allclose(W, np.stack(rows), rtol=1e-10, atol=1e-10)
    assert np.abs(W - W0).max() > 1e-2  # the runs moved
    assert result.config["normals"] == "given"


def test_linear_label_noise_sde_at_dt_eta_and_full_batch_is_label_noise_gd(linear_problem):
    """At dt = eta and B = n the SDE is label-noise GD (labels + sqrt(delta) xi): the toy
    GD of ``simulate_sgd``, whose label noise is the label channel's normals."""
    data, network, W0 = linear_problem
    eta, n_steps, delta = 0.25, 6, 0.2
    rows, normals = [], np.zeros((n_steps, N, K))
    for k in range(K):
        gd = simulate_sgd(
            LinearRegression(D),
            _regression(data, k),
            eta,
            n_steps=n_steps,
            sgd=GD(label_noise=delta),
            seed=20 + k,
            theta0=W0[k],
            save_params=True,
        )
        rows.append(gd["params"].isel(traj=0, step=-1).values)
        normals[:, :, k] = _label_normals(20 + k, n_steps)
    result = simulate_label_noise_sde(
        network,
        data,
        schedule=eta,
        n_steps=n_steps,
        batch_size=N,
        delta=delta,
        evaluation=EvaluationOptions(eval_every=n_steps),
        normals=normals,
    )
    W = result.network[1].weight.detach().numpy()
    np.testing.assert_allclose(W, np.stack(rows), rtol=1e-10, atol=1e-10)


def test_given_normals_are_checked(linear_problem):
    data, network, _ = linear_problem
    kw = dict(
        schedule=0.1, n_steps=3, batch_size=4, delta=0.1, evaluation=EvaluationOptions(eval_every=3)
    )
    with pytest.raises(ValueError, match=r"normals must be .*shape \(3, 12, 3\)"):
        simulate_label_noise_sde(network, data, normals=np.zeros((3, 12, 2)), **kw)
    with pytest.raises(ValueError, match="finite"):
        simulate_label_noise_sde(network, data, normals=np.full((3, 12, 3), np.nan), **kw)
