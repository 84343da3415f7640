"""Regimes of a run (sgdsde.analysis.regimes): synthetic loss and sharpness curves with
known answers, then real runs of simulate_sgd and simulate_sde."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

from sgdsde.analysis import Regime, RegimeCriteria, classify_regimes
from sgdsde.data import RegressionData, sparse_regression
from sgdsde.dynamics.sgd import GD, simulate_sgd
from sgdsde.metrics.curvature import TopHessianEigenvalue
from sgdsde.models import MODELS
from sgdsde.run.dataset import load_dataset, save_dataset
from sgdsde.sde.noise import LabelNoise
from sgdsde.sde.simulate import simulate_sde

STEPS = np.linspace(0, 2000, 1001).astype(np.int64)
CONVERGED, STABILIZED, DIVERGED = (int(r) for r in Regime)


def run_dataset(curves, lr=0.1, diverged=None, **variables) -> xr.Dataset:
    """A run dataset with the layout of the simulators: train_loss (traj, step)."""
    losses = np.atleast_2d(np.asarray(curves, dtype=float))
    n_traj = losses.shape[0]
    flags = np.zeros(n_traj, bool) if diverged is None else np.asarray(diverged)
    data = {"train_loss": (("traj", "step"), losses), "diverged": ("traj", flags)}
    data.update({k: (("traj", "step"), np.atleast_2d(v)) for k, v in variables.items()})
    coords = {"traj": np.arange(n_traj), "step": STEPS, "lr": ("traj", np.full(n_traj, lr))}
    return xr.Dataset(data, coords=coords)


def lognormal_plateau(level, spread_decades, seed):
    rng = np.random.default_rng(seed)
    return level * 10.0 ** (spread_decades * rng.standard_normal(STEPS.size))


# -- synthetic curves ------------------------------------------------------------------


def test_exponential_convergence_is_converged_by_level_and_by_trend():
    below = 0.5 * np.exp(-STEPS / 50)  # 1e-18 at the end: below converged_loss
    falling = 10.0 * np.exp(-STEPS / 250)  # 7e-3 at the end, but x14 over the window
    out = classify_regimes(run_dataset([below, falling]))
    assert out["regime"].values.tolist() == [CONVERGED, CONVERGED]
    assert out["regime_name"].values.tolist() == ["converged", "converged"]
    # noise-free: the decline is exp(distance between the thirds' middle points / 250)
    assert out["window_decline"].values[1] == pytest.approx(math.exp(1000 * (2 / 3) / 250), 0.02)
    assert np.isnan(out["plateau_level"].values).all()
    assert not out["catapult"].values.any()


def test_noisy_plateau_is_stabilized_at_its_level_and_band():
    level, spread = 0.02, 0.4  # log10 L ~ N(log10 0.02, 0.4^2) after a transient
    curve = lognormal_plateau(level, spread, seed=3) + 0.5 * np.exp(-STEPS / 20)
    out = classify_regimes(run_dataset(curve))
    assert int(out["regime"][0]) == STABILIZED
    # median of the window's last third: 167 points, se = 1.2533 * 0.4 / sqrt(167) decades
    se = 1.2533 * spread / math.sqrt(167)
    assert abs(math.log10(float(out["plateau_level"][0]) / level)) < 4 * se
    # band = 10% / 90% quantiles of the 501 window points: level * 10^(-+1.2816 spread)
    low, high = out["plateau_band"].sel(traj=0).values
    assert out["plateau_band"]["bound"].values.tolist() == ["low", "high"]
    assert math.log10(low / level) == pytest.approx(-1.2816 * spread, abs=0.1)
    assert math.log10(high / level) == pytest.approx(1.2816 * spread, abs=0.1)
    assert 1 / 3 < float(out["window_decline"][0]) < 3


def test_divergence_by_flag_by_nan_and_by_growth():
    growing = 0.5 * np.exp(STEPS / 100.0)  # 1e4 L_0 at step ~921, finite throughout
    frozen = np.where(STEPS < 300, 0.5 * np.exp(STEPS / 30.0), np.nan)
    plateau = lognormal_plateau(0.02, 0.1, seed=0)
    ds = run_dataset([growing, frozen, frozen, plateau], diverged=[False, True, False, True])
    out = classify_regimes(ds)
    assert out["regime"].values.tolist() == [DIVERGED] * 4
    assert np.isnan(out["plateau_level"].values).all()
    assert np.isnan(out["window_decline"].values).all()
    # below the growth threshold the same curve is no divergence
    slower = classify_regimes(run_dataset(0.5 * np.exp(STEPS / 300.0)))
    assert int(slower["regime"][0]) == STABILIZED


def test_slow_decay_near_the_boundary_follows_the_thresholds():
    # falls x3 between the middles of the window's first and last thirds (667 steps)
    curve = 0.05 * np.exp(-(STEPS - 1000) * math.log(3) / (1000 * 2 / 3))
    ds = run_dataset(curve)
    default = classify_regimes(ds)
    assert int(default["regime"][0]) == STABILIZED
    assert float(default["window_decline"][0]) == pytest.approx(3.0, rel=0.01)
    assert int(classify_regimes(ds, RegimeCriteria(max_decline=2.5))["regime"][0]) == CONVERGED
    level = float(default["plateau_level"][0])
    higher_floor = RegimeCriteria(converged_loss=1.5 * level)
    assert int(classify_regimes(ds, higher_floor)["regime"][0]) == CONVERGED


def catapult_curve():
    """GD at eta = 0.1: the loss spikes x100 over 20 steps, then converges linearly."""
    rise = 0.5 * 100.0 ** (np.minimum(STEPS, 20) / 20)
    return np.where(STEPS <= 20, rise, 50.0 * np.exp(-(STEPS - 20) / 40.0))


def test_catapult_spike_then_convergence_at_lower_sharpness():
    curve = catapult_curve()
    flatter = np.where(STEPS <= 20, 30.0, 8.0)  # lambda_0 = 30 > 2/eta = 20 > 8
    sharper = np.where(STEPS <= 20, 8.0, 15.0)
    ds = run_dataset([curve, curve, 0.5 * np.exp(-STEPS / 40.0)])
    by_loss = classify_regimes(ds)
    assert by_loss["catapult"].values.tolist() == [True, True, False]
    assert "edge_of_stability" not in by_loss
    sharpness = xr.DataArray(np.stack([flatter, sharper, flatter]), dims=("traj", "step"))
    with_sharpness = classify_regimes(ds, sharpness=sharpness)
    assert with_sharpness["catapult"].values.tolist() == [True, False, False]
    assert with_sharpness["regime"].values.tolist() == [CONVERGED] * 3
    # a spike that ends on a plateau is no catapult
    spike_plateau = np.where(STEPS <= 20, curve, 0.02)
    assert not classify_regimes(run_dataset(spike_plateau))["catapult"].values.any()


def test_edge_of_stability_when_sharpness_hovers_at_two_over_eta():
    eta = 0.1
    rng = np.random.default_rng(1)
    hovering = (2 / eta) * (1 + 0.03 * rng.standard_normal(STEPS.size))
    sharpening = np.minimum(STEPS / 100.0, 1.0) * hovering  # progressive sharpening, then EoS
    below = np.full(STEPS.size, 1 / eta)
    leaves = np.where(STEPS < 1600, hovering, 0.5 * hovering)  # at the edge on 60% of it
    loss = 0.5 * np.exp(-STEPS / 500.0) * (1 + 0.3 * np.abs(np.sin(STEPS)))
    ds = run_dataset(
        [loss] * 4, lr=eta, top_hessian_eigenvalue=np.stack([sharpening, hovering, below, leaves])
    )
    out = classify_regimes(ds)  # the sharpness read from ds's top_hessian_eigenvalue
    assert out["edge_of_stability"].values.tolist() == [True, True, False, False]
    # the window's step size decides: at eta = 0.05 (2/eta = 40) nothing is at the edge
    assert not classify_regimes(ds, lr=0.05)["edge_of_stability"].values.any()
    # 60% of the window at the edge passes eos_fraction = 0.5
    half = classify_regimes(ds, RegimeCriteria(eos_fraction=0.5))
    assert half["edge_of_stability"].values.tolist() == [True, True, False, True]


def test_sharpness_on_its_own_coarser_step_grid():
    eta = 0.1
    coarse_steps = STEPS[::10]
    hovering = np.full((1, coarse_steps.size), 2 / eta * 1.02)
    sharpness = xr.DataArray(hovering, dims=("traj", "step"), coords={"step": coarse_steps})
    out = classify_regimes(
        run_dataset(lognormal_plateau(0.02, 0.2, 2), lr=eta), sharpness=sharpness
    )
    assert bool(out["edge_of_stability"][0])


def test_output_layout_attributes_and_round_trip(tmp_path):
    ds = run_dataset([0.5 * np.exp(-STEPS / 50), lognormal_plateau(0.02, 0.3, 5)])
    ds = ds.assign_coords(run=("traj", ["small", "large"])).set_xindex("run")
    criteria = RegimeCriteria(window=0.4, band=(0.25, 0.75))
    out = classify_regimes(ds, criteria)
    assert dict(out.sizes) == {"traj": 2, "bound": 2}
    assert out["regime"].dtype == np.int8
    assert out["regime"].attrs["flag_values"].tolist() == [0, 1, 2]
    assert out["regime"].attrs["flag_meanings"] == "converged stabilized diverged"
    assert str(out.sel(run="large")["regime_name"].values) == "stabilized"
    assert out["lr"].values.tolist() == [0.1, 0.1]
    stored = json.loads(out.attrs["regime_criteria"])
    assert RegimeCriteria.from_config(stored) == criteria
    assert stored["band"] == [0.25, 0.75] and stored["name"] == "regime_criteria"
    assert json.loads(out.attrs["regime_window_steps"]) == [1200, 2000]
    merged = xr.merge([ds, out])
    assert merged["regime"].values.tolist() == [CONVERGED, STABILIZED]
    path = tmp_path / "regimes.nc"
    save_dataset(out, path)
    back = load_dataset(path)
    assert back["regime_name"].values.tolist() == ["converged", "stabilized"]
    np.testing.assert_array_equal(back["plateau_band"].values, out["plateau_band"].values)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"window": 0.0}, "window"),
        ({"window": 1.5}, "window"),
        ({"max_decline": 1.0}, "max_decline"),
        ({"band": (0.9, 0.1)}, "band"),
        ({"converged_loss": -1.0}, "converged_loss"),
        ({"eos_tolerance": 1.0}, "eos_tolerance"),
        ({"min_points": 2}, "min_points"),
        ({"diverged_factor": True}, "diverged_factor"),
    ],
)
def test_bad_criteria_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        RegimeCriteria(**options)


def test_bad_input_is_refused_before_work():
    ds = run_dataset(lognormal_plateau(0.02, 0.3, 0))
    with pytest.raises(ValueError, match="no loss curve 'test_loss'"):
        classify_regimes(ds, loss="test_loss")
    with pytest.raises(ValueError, match="save_steps"):
        classify_regimes(ds.isel(step=[0, 1, 2, 900, 1000]))
    with pytest.raises(ValueError, match="one sharpness curve per trajectory"):
        classify_regimes(
            ds, sharpness=xr.DataArray(np.ones((2, STEPS.size)), dims=("traj", "step"))
        )
    with pytest.raises(ValueError, match="no sharpness variable"):
        classify_regimes(ds, sharpness="top_hessian_eigenvalue")
    sharp = xr.DataArray(np.ones((1, STEPS.size)), dims=("traj", "step"))
    with pytest.raises(ValueError, match="lr must be"):
        classify_regimes(ds, sharpness=sharp, lr=-0.1)
    with pytest.raises(ValueError, match="unknown option"):
        RegimeCriteria.from_config({"name": "regime_criteria", "windw": 0.3})


# -- real runs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_problem():
    """The demo's diagonal network problem (data seed 1): SGD converges at eta = 0.1,
    stabilizes at 0.235-0.25 and diverges from ~0.26 (configs/dln_sparse_sgd.toml)."""
    data = sparse_regression(n=80, d=200, k=20, n_test=10, seed=1)
    return MODELS.make("diagonal_linear", d=200, parametrization="uv", alpha=0.1), data


def test_sgd_runs_converge_stabilize_and_diverge(demo_problem):
    model, data = demo_problem
    n_steps = 5000
    save = np.linspace(0, n_steps, 201).astype(int)
    lrs = [0.1, 0.245, 0.245, 0.4]
    ds = simulate_sgd(model, data, lrs, n_steps=n_steps, seed=0, save_steps=save)
    out = classify_regimes(ds)
    regime = out["regime"].values
    assert regime[0] == CONVERGED and regime[3] == DIVERGED
    # chaotic at 0.245: a trajectory may still diverge, but none converges
    assert STABILIZED in regime[1:3] and CONVERGED not in regime[1:3]
    levels = out["plateau_level"].values[1:3]
    levels = levels[np.isfinite(levels)]
    assert ((levels > 5e-3) & (levels < 0.3)).all()
    final_converged = float(ds["train_loss"].isel(traj=0, step=-1))
    assert final_converged < 1e-4 * levels.min()


def test_label_noise_sde_stabilizes_at_the_ou_level(demo_problem):
    """Near a minimum the residuals of the label-noise SDE are an Ornstein-Uhlenbeck
    process, dr = -(K/n) r dt + sqrt(eta delta / (n B)) K dW with K = phi phi^T, whose
    stationary covariance is (eta delta / (2B)) K: the loss plateaus at
    L* = eta delta tr(K) / (4 n B). It is delta / 2 (docs/conventions.md) where
    eta tr(K) / (2 n B) ~ 1, as here at eta = 0.2, B = 1; at eta = 0.05 it is ~4x lower."""
    model, data = demo_problem
    delta, n_traj, n_steps = 0.02, 6, 2000  # stationary from t ~ 50 at eta = 0.05
    levels, predicted = {}, {}
    for lr in (0.2, 0.05):
        ds = simulate_sde(
            model,
            data,
            LabelNoise(delta, lr, 1),
            dt=0.05,
            n_steps=n_steps,
            n_traj=n_traj,
            seed=0,
            save_steps=np.linspace(0, n_steps, 101).astype(int),
            save_params=True,
        )
        out = classify_regimes(ds)
        assert (out["regime"].values == STABILIZED).all()
        levels[lr] = out["plateau_level"].values.mean()
        trace_k = [
            np.sum(model.jacobian(theta, data.X) ** 2) for theta in ds["params"].values[:, -1]
        ]
        predicted[lr] = lr * delta * np.mean(trace_k) / (4 * data.n)
        assert (out["plateau_band"].sel(bound="low") < out["plateau_level"]).all()
    for lr in levels:
        assert levels[lr] / predicted[lr] == pytest.approx(1.0, abs=0.25)
    assert levels[0.2] / (delta / 2) == pytest.approx(1.0, abs=0.3)
    assert 2.5 < levels[0.2] / levels[0.05] < 6


@pytest.mark.parametrize("engine", ["numba", "numpy", "torch"])
def test_gd_catapult_and_edge_of_stability_on_real_runs(engine):
    """GD on the uv model of Lewkowycz et al. (2020), f(x) = (1/sqrt(m)) v . u x on one
    example (a diagonal network with equal inputs), lambda_0 = (|u|^2 + |v|^2) / m, the
    sharpness recorded by the top_hessian_eigenvalue metric: at eta = c / lambda_0,
    c = 1 converges plainly, c in (2, 4) catapults (the loss spikes, then converges at
    sharpness below 2/eta), c = 5 diverges; just below 2 (c = 1.9) the sharpness ends
    at ~0.95 x 2/eta: the edge of stability. Every engine gives the same flags."""
    width = 40
    X = np.full((1, width), width**-0.5)
    data = RegressionData(X, np.zeros(1), X, np.zeros(1))
    model = MODELS.make("diagonal_linear", d=width, alpha=1.0, init_scheme="gaussian")
    theta0 = model.init([np.random.default_rng(3)])[0]
    lam0 = float((theta0**2).sum() / width)
    np.testing.assert_allclose(
        model.top_hessian_eigenvalue(theta0[None], X, data.y), lam0, rtol=1e-3
    )
    c = np.array([1.0, 1.9, 2.05, 2.2, 3.0, 3.8, 5.0])
    ds = simulate_sgd(
        model, data, list(c / lam0), n_steps=300, sgd=GD(), theta0=theta0, n_traj=c.size,
        save_steps=np.arange(0, 301, 3), metrics=[TopHessianEigenvalue()], engine=engine,
    )  # fmt: skip
    out = classify_regimes(ds)
    assert out["regime"].values.tolist() == [CONVERGED] * 6 + [DIVERGED]
    assert out["catapult"].values.tolist() == [False, False, True, True, True, True, False]
    assert out["edge_of_stability"].values.tolist() == [False, True, True] + [False] * 4
    loss = ds["train_loss"].values
    spiked = (loss[:, 1:] > loss[:, :1]).any(axis=1)
    assert spiked[2:6].all() and not spiked[:2].any()
    end = ds["top_hessian_eigenvalue"].values[2:6, -1] * c[2:6] / lam0 / 2
    assert (end < 1).all()  # the catapult lands where GD is stable
