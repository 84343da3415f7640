"""sgdsde.theory: each closed form against its ground truth or a simulation that
approaches it."""

import numpy as np
import pytest

from sgdsde.data import sparse_regression
from sgdsde.dynamics import GD, simulate_sgd
from sgdsde.models import make_model
from sgdsde.theory import (
    gd_stability_edge,
    gradient_flow_limit,
    min_l1_interpolator,
    min_l2_interpolator,
)


@pytest.fixture(scope="module")
def sparse():
    return sparse_regression(n=10, d=20, k=3, n_test=10, seed=0)


def _final_params(model, data, lr, n_steps):
    ds = simulate_sgd(
        model, data, lr, n_steps=n_steps, sgd=GD(), save_steps=[n_steps], save_params=True
    )
    return ds["params"].values.reshape(-1, model.n_params)[-1]


def test_gd_stability_edge_is_two_over_the_top_curvature_of_a_quadratic(sparse):
    model = make_model("linear_regression", d=20)
    lam = np.linalg.eigvalsh(sparse.X.T @ sparse.X / sparse.n)[-1]
    edge = gd_stability_edge(model, np.zeros(20), sparse)
    assert edge.shape == (1,) and edge[0] == pytest.approx(2 / lam, rel=1e-12)
    # GD on the quadratic: just below the edge it converges, just above it diverges
    below = _final_params(model, sparse, 0.98 * edge[0], 3000)
    above = _final_params(model, sparse, 1.02 * edge[0], 3000)
    assert np.linalg.norm(sparse.X @ below - sparse.y) < 1e-6
    assert not np.all(np.isfinite(above)) or np.linalg.norm(above) > 1e3


def test_gd_stability_edge_matches_the_hessian_of_a_diagonal_network(sparse):
    model = make_model("diagonal_linear", d=20, parametrization="uu-vv", alpha=0.3)
    theta = np.random.default_rng(1).standard_normal((3, 40))
    lam = np.linalg.eigvalsh(model.hessian(theta, sparse.X, sparse.y))[:, -1]
    np.testing.assert_allclose(gd_stability_edge(model, theta, sparse), 2 / lam, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_gradient_flow_limit_is_where_small_step_gd_converges(sparse, alpha):
    # GD at step eta is gradient flow up to O(eta) (measured: 2e-4 relative at eta = 2e-3
    # for alpha = 0.1, halving with eta); a wrong constant (alpha^2 for 2 alpha^2, i.e.
    # alpha / sqrt 2) moves beta by 10%.
    model = make_model("diagonal_linear", d=20, parametrization="uu-vv", alpha=alpha)
    theta = _final_params(model, sparse, 2e-3, 150_000)
    beta = theta[:20] ** 2 - theta[20:] ** 2
    predicted = gradient_flow_limit(sparse.X, sparse.y, alpha)
    assert np.linalg.norm(beta - predicted) < 1e-3 * np.linalg.norm(predicted)
    np.testing.assert_allclose(sparse.X @ predicted, sparse.y, atol=1e-12)


def test_gradient_flow_limit_moves_from_min_l1_to_min_l2_as_alpha_grows(sparse):
    X, y = sparse.X, sparse.y
    l1, l2 = min_l1_interpolator(X, y), min_l2_interpolator(X, y)
    np.testing.assert_allclose(X @ l1, y, atol=1e-9)
    np.testing.assert_allclose(X @ l2, y, atol=1e-12)
    assert np.abs(l1).sum() < np.abs(l2).sum() and np.linalg.norm(l2) < np.linalg.norm(l1)
    alphas = [1e-12, 1e-8, 1e-4, 1e-2, 1e-1, 1.0, 10.0]
    limits = [gradient_flow_limit(X, y, a) for a in alphas]
    to_l1 = np.array([np.linalg.norm(b - l1) for b in limits])
    to_l2 = np.array([np.linalg.norm(b - l2) for b in limits])
    assert np.all(np.diff(to_l1) > 0) and np.all(np.diff(to_l2) < 0)
    # the l1 end is approached slowly (~ 1 / log(1 / alpha)), the l2 end fast (~ alpha^-4)
    assert to_l1[0] < 0.1 * np.linalg.norm(l1)
    assert to_l2[-1] < 1e-6 * np.linalg.norm(l2)


def test_interpolators_reject_more_examples_than_dimensions():
    X, y = np.ones((3, 2)), np.ones(3)
    for fn in (min_l1_interpolator, min_l2_interpolator):
        with pytest.raises(ValueError, match="full row rank"):
            fn(X, y)
    with pytest.raises(ValueError, match="alpha"):
        gradient_flow_limit(np.eye(2), np.ones(2), 0.0)


def test_collapse_thresholds_live_in_theory_and_the_experiments_use_them():
    from sgdsde import theory
    from sgdsde.experiments import (
        paper_collapse_linear_modes,
        paper_collapse_quartic,
        paper_collapse_tanh,
    )

    for module, names in (
        (paper_collapse_quartic, ("sde_threshold", "discrete_growth_rate", "discrete_threshold")),
        (paper_collapse_tanh, ("label_noise_threshold", "matched_sde_threshold", "sgd_threshold")),
        (paper_collapse_linear_modes, ("soft_threshold_level", "soft_threshold")),
    ):
        for name in names:
            assert getattr(module, name) is getattr(theory, name)
    # the quartic well's SDE threshold sqrt(2 mu) is the zero of the rate mu - zeta^2 / 2
    assert theory.discrete_growth_rate(2.0, theory.sde_threshold(2.0), 1e-8) == pytest.approx(
        0.0, abs=1e-6
    )
    assert theory.walk_window(4.0) == (0.25, 0.5)


def test_label_noise_sde_shrinks_u_v_at_the_predicted_rate(sparse):
    # d log(u_j v_j) = -kappa_j dt exactly in continuous time; Euler-Maruyama at dt = 0.01
    # adds O(dt) (measured: 0.4%-1.8% over these 20 coordinates), the paths spread by
    # ~0.03 in log(u_j v_j) against a decay of ~1 over T = 200.
    from sgdsde.sde import simulate_sde
    from sgdsde.sde.noise import LabelNoise
    from sgdsde.theory import label_noise_scale_decay

    alpha, lr, delta, batch, n_steps, dt = 0.5, 0.05, 0.5, 10, 20_000, 0.01
    model = make_model("diagonal_linear", d=20, parametrization="uu-vv", alpha=alpha)
    ds = simulate_sde(
        model,
        sparse,
        LabelNoise(delta, lr, batch),
        dt=dt,
        n_steps=n_steps,
        n_traj=8,
        seed=1,
        save_steps=[n_steps],
        save_params=True,
    )
    theta = ds["params"].values.reshape(8, -1, 40)[:, -1]
    measured = -np.log(theta[:, :20] * theta[:, 20:] / alpha**2).mean(axis=0) / (n_steps * dt)
    kappa = label_noise_scale_decay(sparse.X, lr, delta, batch)
    np.testing.assert_allclose(kappa, 4 * lr * delta / batch * np.mean(sparse.X**2, axis=0))
    np.testing.assert_allclose(measured, kappa, rtol=0.03)
    with pytest.raises(ValueError, match="batch_size"):
        label_noise_scale_decay(sparse.X, lr, delta, 11)
