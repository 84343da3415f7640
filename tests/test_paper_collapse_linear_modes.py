"""Chen et al. (2023) Fig. 5: the orthogonal design, the collapse criterion of the
linear teacher-student modes (checked against simulation), and the gallery kind."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sgdsde.data import linear_teacher_student_data
from sgdsde.dynamics.sgd import GD, simulate_sgd
from sgdsde.experiments import EXPERIMENTS, load_config
from sgdsde.experiments.config import ConfigError
from sgdsde.experiments.gallery import check_claim
from sgdsde.experiments.paper_collapse_linear_modes import (
    CollapseLinearModes,
    linear_modes_dataset,
    mode_values,
    soft_threshold,
    soft_threshold_level,
)
from sgdsde.models.collapse import LinearTeacherStudent


def test_orthogonal_design_is_exactly_diagonal_and_leaves_the_gaussian_draws_alone():
    lam = np.array([4.0, 1.0, 0.25])
    data = linear_teacher_student_data(
        n=7, d=3, spectrum=lam, teacher=[1, -1, 0.5], noise_std=0.3, design="orthogonal"
    )
    np.testing.assert_allclose(data.X.T @ data.X / 7, np.diag(lam), atol=1e-13)
    assert data.config["design"] == "orthogonal"
    gaussian = linear_teacher_student_data(n=7, d=3, spectrum=lam, seed=4)
    again = linear_teacher_student_data(n=7, d=3, spectrum=lam, seed=4, design="gaussian")
    np.testing.assert_array_equal(gaussian.X, again.X)
    np.testing.assert_array_equal(gaussian.X_test, again.X_test)
    assert abs(gaussian.X.T @ gaussian.X / 7 - np.diag(lam)).max() > 0.05  # not diagonal
    with pytest.raises(ValueError, match="n >= 3"):
        linear_teacher_student_data(n=2, d=3, design="orthogonal")
    with pytest.raises(ValueError, match="unknown design 'sphere'"):
        linear_teacher_student_data(design="sphere")


def test_a_mode_collapses_iff_its_signal_is_below_the_threshold_whatever_its_variance():
    """d log s_k / dt = 2 lambda_k (hat beta_k - tau) near s = 0 (the model docstring):
    the sign is set by hat beta_k - tau alone, lambda_k only scales the rate. Four
    (lambda, hat beta) cells, 8 modes each, 8 trajectories: 64 rate estimates per cell,
    each with standard deviation 2 sqrt(2 lambda tau / t); tolerance 4 standard errors
    plus 0.1 lambda for the O(eta) discretization."""
    tau, eta, n = 0.25, 0.005, 32
    lam = np.repeat([4.0, 4.0, 0.25, 0.25], 8)
    beta_hat = np.repeat([tau - 0.15, tau + 0.15, tau - 0.15, tau + 0.15], 8)
    data = linear_teacher_student_data(
        n=n, d=n, spectrum=lam, teacher=beta_hat, n_test=2, design="orthogonal", seed=1
    )
    model = LinearTeacherStudent(d=n, init_scale=1e-5)
    horizon = {4.0: 10.0, 0.25: 40.0}  # long enough to resolve, short of s ~ 1e-3
    steps = sorted({round(t / eta) for t in horizon.values()})
    ds = simulate_sgd(
        model,
        data,
        eta,
        n_steps=steps[-1],
        sgd=GD(label_noise=2 * n * tau / eta),  # tau = eta delta / (2 n)
        n_traj=8,
        seed=3,
        save_steps=[0, *steps],
        save_params=True,
    )
    log_s = np.log(mode_values(model, ds["params"].values))  # (traj, save, mode)
    for cell in range(4):
        k = slice(8 * cell, 8 * cell + 8)
        lam_k, t = lam[8 * cell], horizon[lam[8 * cell]]
        save = 1 + steps.index(round(t / eta))
        rates = (log_s[:, save, k] - log_s[:, 0, k]).ravel() / t
        predicted = 2 * lam_k * (beta_hat[8 * cell] - tau)
        se = 2 * np.sqrt(2 * lam_k * tau / t) / np.sqrt(rates.size)
        assert np.sign(rates.mean()) == np.sign(beta_hat[8 * cell] - tau)
        assert abs(rates.mean() - predicted) < 4 * se + 0.1 * lam_k, (cell, rates.mean())
    # the old claim "small lambda beta*^2 collapse first" fails: cell 0 (lambda beta^2 =
    # 0.04) collapses while cell 3 (0.04) grows, and cell 2 (0.0025) collapses slower
    # (rate -0.075) than cell 0 (-1.2): the input variance sets only the speed.


def test_soft_threshold():
    np.testing.assert_allclose(soft_threshold([-1.0, 0.2, 0.9], 0.3), [0, 0, 0.6])
    np.testing.assert_allclose(
        soft_threshold_level(3 / 1024, [0, 10, 20]), [0, 0.146484375, 0.5859375]
    )


def _small_config(**changes):
    cfg = load_config("paper_collapse_linear_modes")
    cfg.update(n_steps=3000, n_seeds=4, sigmas=[0, 10], n_average=20, claims=[], published=[])
    cfg["data"].update(n=8, d=8, n_test=4, spectrum=[1.0] * 8, teacher=[0.9, 0.5] + [0.0] * 6)
    cfg["data"]["noise_std"] = 0.25 * np.sqrt(8)  # hat s_k = teacher_k + N(0, 0.25^2)
    for key, value in changes.items():
        cfg[key] = value
    return cfg


def test_quantities_against_an_independent_computation():
    kind = CollapseLinearModes()
    plan = kind.prepare(_small_config())
    data = plan.data
    s_hat = data.X.T @ data.y / data.n
    tau = np.array([0.0, soft_threshold_level(plan.lr, 10)])
    exact = np.tile(soft_threshold(s_hat, tau[:, None]), (2, 1))  # (run, mode)
    modes = np.broadcast_to(exact[:, None, None, :], (4, 2, 3, 8)).copy()
    ds = linear_modes_dataset(plan, modes, np.zeros((4, 2), bool))
    decided = np.abs(s_hat - np.tile(tau, 2)[:, None]) > plan.margin
    # the exact stationary means: ratio 1, agreement 1 where any mode is decided
    np.testing.assert_allclose(ds["threshold_ratio"].values, 1.0)
    assert np.all(ds["collapse_agreement"].values[decided.any(-1)] == 1)
    loss = np.mean((exact - data.beta_star) ** 2, axis=-1)
    np.testing.assert_allclose(ds["test_loss"].values, np.repeat(loss[:, None], 2, 1))
    frac = np.mean(exact < plan.collapse_threshold, axis=-1)
    np.testing.assert_allclose(ds["collapsed_fraction"].values, np.repeat(frac[:, None], 2, 1))
    assert list(ds["run"].values) == ["GD sigma=0", "GD sigma=10", "SDE sigma=0", "SDE sigma=10"]


def test_small_run_gd_beside_its_sde():
    kind = EXPERIMENTS.make("paper_collapse_linear_modes")
    cfg = _small_config()
    cfg["claims"] = [
        {
            "text": "noise collapses more modes",
            "quantity": "collapsed_fraction",
            "relation": "increasing",
            "runs": ["GD sigma=0", "GD sigma=10"],
        }
    ]
    ds = kind.run(kind.prepare(cfg))
    assert not ds["diverged"].any()
    # sigma = 0: GD and gradient flow both converge to hat s (t = 8.8, rates >= 2 * 0.1
    # on the modes counted): averages equal up to O(eta) and the late-window transient
    gd0 = ds["mode_average"].sel(run="GD sigma=0").values
    flow = ds["mode_average"].sel(run="SDE sigma=0").values
    np.testing.assert_allclose(gd0, flow, atol=0.02)
    s_hat = ds["s_hat"].values
    strong = s_hat > 0.3
    np.testing.assert_allclose(
        gd0[:, strong], np.broadcast_to(s_hat[strong], (4, strong.sum())), atol=0.02
    )
    # sigma = 10: the teacher mode shrinks by tau = 0.146 in GD and SDE alike. Its
    # Gamma law has std sqrt(2 tau s) ~ 0.5 and correlation time 1 / (2 (s - tau)) ~ 0.7
    # over a 4.4-long window: a seed's average has standard error ~0.2, the mean of 4
    # seeds ~0.1; tolerance 3 of those
    for run in ("GD sigma=10", "SDE sigma=10"):
        mode0 = ds["mode_average"].sel(run=run).values[:, 0].mean()
        assert abs(mode0 - (s_hat[0] - 0.146484375)) < 0.3, (run, mode0)
    check = check_claim(kind.prepare(cfg).header.claims[0], ds)
    assert check.n_seeds == 4 and check.holds_for_median
    assert "noise collapses more modes" in kind.table(ds)
    fig = kind.plot(ds)
    assert len(fig.axes) == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sigmas": [0, -1]}, "sigmas: must be a non-empty list"),
        ({"sigmas": [5, 5]}, "sigmas: must be distinct"),
        ({"average_from": 1.0}, r"average_from: must be in \[0, 1\)"),
        ({"lr": 0}, "lr: must be > 0"),
        ({"data": "design"}, 'data.design: must be "orthogonal"'),
        ({"model": "depth"}, "model: must be name"),
    ],
)
def test_config_errors_name_the_field(change, message):
    cfg = _small_config()
    if change.get("data") == "design":
        cfg["data"] = copy.deepcopy(cfg["data"]) | {"design": "gaussian"}
    elif change.get("model") == "depth":
        cfg["model"] = copy.deepcopy(cfg["model"]) | {"depth": 3}
    else:
        cfg.update(change)
    with pytest.raises(ConfigError, match=message):
        CollapseLinearModes().prepare(cfg)
