"""Phase diagrams over the step size (sgdsde.analysis.phase): regimes across the grid,
every cell equal to a direct run of that cell, each axis's setting, seeds independent of
the grid, bad input before any work, and the saved dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from sgdsde.analysis import (
    BatchSizeAxis,
    DecayFractionAxis,
    InitScaleAxis,
    LabelNoiseAxis,
    Regime,
    SDEDynamics,
    SGDDynamics,
    classify_regimes,
    phase_diagram,
    seed_child,
)
from sgdsde.analysis import phase as phase_module
from sgdsde.data import RegressionData, sparse_regression
from sgdsde.dynamics.schedules import Piecewise, StepDecay
from sgdsde.dynamics.sgd import SGD, simulate_sgd
from sgdsde.models.diagonal import DiagonalLinearNet
from sgdsde.run.dataset import load_dataset, save_dataset
from sgdsde.sde.noise import LabelNoise
from sgdsde.sde.simulate import simulate_sde

DATA = sparse_regression(n=20, d=30, k=3, n_test=50, seed=1)
MODEL = DiagonalLinearNet(d=30, alpha=0.1)
N_STEPS = 2000
SAVE = np.arange(0, N_STEPS + 1, 25)
# l0 at 1e-3 falls to 10 at eta = 0.3, B = 1 within the run (measured: steps 1475, 1925)
RUN = dict(n_steps=N_STEPS, save_steps=SAVE, l0_threshold=1e-3, sparsity_level=10)
LRS = [0.1, 0.3, 1.0]


@pytest.fixture(scope="module")
def diagram() -> xr.Dataset:
    return phase_diagram(MODEL, DATA, lrs=LRS, axis="batch_size", values=[1, 2], seeds=2, **RUN)


def direct_run(lr, batch, s, **kwargs):
    """One cell as a user would run it: simulate_sgd with the cell's seed as its root."""
    schedule = kwargs.pop("schedule", lr)
    model = kwargs.pop("model", MODEL)
    return simulate_sgd(
        model,
        DATA,
        schedule,
        n_steps=N_STEPS,
        sgd=SGD(batch_size=batch, **kwargs),
        seed=[seed_child(0, s)],
        save_steps=SAVE,
        l0_threshold=1e-3,
    )


def expected_time_to_sparsity(run, level=10):
    """First save step with l0 <= level after l0 exceeded it (l0 = 0 at the uv init)."""
    l0 = run["l0_norm"].values[0]
    above = np.flatnonzero(l0 > level)
    later = np.flatnonzero(l0[above[0] :] <= level) if above.size else []
    return int(run["step"].values[above[0] + later[0]]) if len(later) else -1


# The iterates of a trajectory are the same bits whatever the grid (per-trajectory seed
# streams); the recorded losses are one BLAS product beta X^T over all trajectories
# (sgdsde.metrics.builtin.mean_squared_residual), whose rounding depends on how many
# there are: equal to ~1e-14 relative.
LOSS_RTOL = 1e-12


def assert_cell_matches(cell, run):
    """The diagram's cell holds what a direct run of it gives."""
    last = run.isel(traj=0, step=-1)
    for name in ("train_loss", "test_loss"):
        np.testing.assert_allclose(
            cell[f"final_{name}"].values, last[name].values, rtol=LOSS_RTOL, equal_nan=True
        )
    if not bool(run["diverged"][0]):
        assert float(cell["final_l0_norm"]) == float(last["l0_norm"])
    regimes = classify_regimes(run).isel(traj=0)
    assert int(cell["regime"]) == int(regimes["regime"])
    np.testing.assert_allclose(
        cell["plateau_level"].values, regimes["plateau_level"].values, rtol=LOSS_RTOL
    )
    assert int(cell["time_to_sparsity"]) == expected_time_to_sparsity(run)


def test_diagram_diverges_at_the_largest_lr_and_converges_at_the_smallest(diagram):
    assert diagram["regime"].dims == ("lr", "batch_size", "seed")
    assert diagram["regime"].shape == (3, 2, 2)
    assert (diagram["regime"].sel(lr=1.0) == int(Regime.DIVERGED)).all()
    assert (diagram["regime"].sel(lr=0.1) == int(Regime.CONVERGED)).all()
    assert diagram["diverged"].sel(lr=1.0).all() and not diagram["diverged"].sel(lr=0.1).any()
    assert np.isnan(diagram["final_train_loss"].sel(lr=1.0)).all()
    assert (diagram["final_train_loss"].sel(lr=0.1) < 1e-3).all()
    assert set(diagram["regime_name"].sel(lr=1.0).values.ravel()) == {"diverged"}
    # at eta = 0.3, B = 1 the l0 norm falls to the level during the run
    assert (diagram["time_to_sparsity"].sel(lr=0.3, batch_size=1) > 0).all()
    assert (diagram["time_to_sparsity"].sel(lr=0.1) == -1).all()


def test_every_cell_equals_a_direct_simulate_sgd_of_that_cell(diagram):
    for lr in LRS:
        for batch in (1, 2):
            for s in (0, 1):
                cell = diagram.sel(lr=lr, batch_size=batch, seed=s)
                assert_cell_matches(cell, direct_run(lr, batch, s))


def test_a_cell_alone_equals_the_same_cell_in_the_full_grid(diagram):
    alone = phase_diagram(
        MODEL, DATA, lrs=[0.3], axis=BatchSizeAxis(), values=[2], seeds=[1], **RUN
    )
    inside = diagram.sel(lr=[0.3], batch_size=[2], seed=[1])
    for name in ("final_l0_norm", "regime", "time_to_sparsity", "diverged"):
        np.testing.assert_array_equal(alone[name].values, inside[name].values)  # bit for bit
    for name in ("final_train_loss", "final_test_loss", "plateau_level"):
        np.testing.assert_allclose(alone[name].values, inside[name].values, rtol=LOSS_RTOL)
    np.testing.assert_array_equal(alone["gd_stability_edge"], inside["gd_stability_edge"])
    assert json.loads(alone.attrs["config"])["seeds"] == [1]


def test_attrs_describe_the_sweep_the_seeds_and_the_gd_edge(diagram):
    config = json.loads(diagram.attrs["config"])
    assert config["lrs"] == LRS and config["values"] == [1, 2] and config["seeds"] == [0, 1]
    assert config["axis"] == {"name": "batch_size"} and config["n_steps"] == N_STEPS
    assert config["dynamics"]["name"] == "sgd"
    assert json.loads(diagram.attrs["regime_criteria"])["window"] == 0.5
    assert "spawn_key + (s,)" in diagram.attrs["seed_layout"]
    theta0 = MODEL.init([np.random.default_rng(0)])
    edge = 2.0 / MODEL.top_hessian_eigenvalue(theta0, DATA.X, DATA.y)[0]
    assert diagram.attrs["gd_stability_edge"] == pytest.approx(edge, rel=1e-12)
    np.testing.assert_allclose(diagram["gd_stability_edge"].values, edge, rtol=1e-12)
    for name in ("final_train_loss", "final_l0_norm", "time_to_sparsity", "plateau_level"):
        assert diagram[name].attrs["long_name"] and "units" in diagram[name].attrs
    assert diagram["batch_size"].attrs["units"] == "examples"


def test_seed_child_is_the_sth_spawned_child():
    spawned = np.random.SeedSequence(7).spawn(4)[3]
    child = seed_child(7, 3)
    assert child.spawn_key == spawned.spawn_key == (3,)
    assert child.generate_state(4).tolist() == spawned.generate_state(4).tolist()
    nested = seed_child(np.random.SeedSequence(7, spawn_key=(2,)), 5)
    assert nested.spawn_key == (2, 5)


def test_label_noise_axis_sets_delta_per_cell():
    ds = phase_diagram(
        MODEL, DATA, lrs=[0.1], axis="label_noise", values=[0.0, 0.5], seeds=1, **RUN
    )
    for delta in (0.0, 0.5):
        run = direct_run(0.1, 1, 0, label_noise=delta)
        assert_cell_matches(ds.sel(lr=0.1, label_noise=delta, seed=0), run)
    final = ds["final_train_loss"].sel(lr=0.1, seed=0).values
    assert final[1] > 10 * final[0]  # label noise keeps the loss up


def test_label_noise_until_adds_noise_then_fine_tunes_without_it():
    axis = LabelNoiseAxis(until=0.5)
    ds = phase_diagram(MODEL, DATA, lrs=[0.1], axis=axis, values=[0.0, 0.5], seeds=1, **RUN)
    for delta in (0.0, 0.5):
        noise = Piecewise(levels=(delta, 0.0), at=(0.5,))
        assert_cell_matches(
            ds.sel(lr=0.1, label_noise=delta, seed=0), direct_run(0.1, 1, 0, label_noise=noise)
        )
    always = phase_diagram(MODEL, DATA, lrs=[0.1], axis="label_noise", values=[0.5], seeds=1, **RUN)
    # fine-tuning without the noise brings the loss down from the noisy plateau
    noisy = float(always["final_train_loss"].sel(lr=0.1, label_noise=0.5, seed=0))
    tuned = float(ds["final_train_loss"].sel(lr=0.1, label_noise=0.5, seed=0))
    assert tuned < noisy / 10
    assert json.loads(ds.attrs["config"])["axis"] == {"name": "label_noise", "until": 0.5}
    with pytest.raises(ValueError, match="until must be a fraction"):
        LabelNoiseAxis(until=1.5)
    with pytest.raises(ValueError, match="runs with SGDDynamics"):
        phase_diagram(
            MODEL, DATA, lrs=[0.1], axis=axis, values=[0.5], seeds=1, dynamics=SDEDynamics(), **RUN
        )


def test_decay_fraction_axis_decays_at_the_value():
    axis = DecayFractionAxis(factor=4.0)
    ds = phase_diagram(MODEL, DATA, lrs=[0.3], axis=axis, values=[0.25, 0.75], seeds=1, **RUN)
    for fraction in (0.25, 0.75):
        schedule = StepDecay(lr=0.3, at=(fraction,), factors=(4.0,))
        run = direct_run(0.3, 1, 0, schedule=schedule)
        assert_cell_matches(ds.sel(lr=0.3, decay_fraction=fraction, seed=0), run)
    assert json.loads(ds.attrs["config"])["axis"] == {"name": "decay_fraction", "factor": 4.0}


def test_large_step_regime_classifies_the_loss_curve_before_the_decay():
    """regime_large_step / plateau_level_large_step: classify_regimes of a direct run's
    loss curve up to the decay step; -1 (unclassified) where the phase before the
    decay holds too few save points (0.02 N = 40 steps: 2 save points)."""
    axis = DecayFractionAxis(factor=4.0)
    values = [0.02, 0.25, 0.75]
    ds = phase_diagram(MODEL, DATA, lrs=[0.3, 1.0], axis=axis, values=values, seeds=1, **RUN)
    assert ds["regime_large_step"].attrs["flag_meanings"].split()[0] == "unclassified"
    for lr in (0.3, 1.0):
        cell = ds.sel(lr=lr, seed=0)
        assert int(cell["regime_large_step"].sel(decay_fraction=0.02)) == -1
        assert np.isnan(cell["plateau_level_large_step"].sel(decay_fraction=0.02))
        for fraction in (0.25, 0.75):
            schedule = StepDecay(lr=lr, at=(fraction,), factors=(4.0,))
            run = direct_run(lr, 1, 0, schedule=schedule)
            before = run.sel(step=run["step"] <= fraction * N_STEPS)
            expected = classify_regimes(before).isel(traj=0)
            got = cell.sel(decay_fraction=fraction)
            assert int(got["regime_large_step"]) == int(expected["regime"])
            np.testing.assert_allclose(
                got["plateau_level_large_step"], expected["plateau_level"], rtol=LOSS_RTOL
            )
    assert (ds["regime_large_step"].sel(lr=1.0, decay_fraction=[0.25, 0.75]) == 2).all()
    # no step size changes on the other axes: no large-step variables
    plain = phase_diagram(MODEL, DATA, lrs=[0.3], axis="label_noise", values=[0.0], seeds=1, **RUN)
    assert "regime_large_step" not in plain


def test_large_step_regime_sees_the_stabilization_band_that_the_final_regime_misses():
    """The demo's network (Andriushchenko et al. 2023, Sec. 3; data seed 1): inside the
    band (eta = 0.24) SGD's loss plateaus at L* ~ 1e-2 to 1e-1 before the decay (where
    the final regime reads the small step size after it); from 0.3 on it diverges."""
    data = sparse_regression(n=80, d=200, k=20, n_test=100, seed=1)
    model = DiagonalLinearNet(d=200, alpha=0.1)
    ds = phase_diagram(
        model, data, lrs=[0.24, 0.3], axis=DecayFractionAxis(4.8), values=[0.5], seeds=2,
        n_steps=4000, save_steps=np.arange(0, 4001, 50), l0_threshold=1e-10, seed=1,
    )  # fmt: skip
    band = ds.sel(lr=0.24, decay_fraction=0.5)
    assert (band["regime_large_step"] == int(Regime.STABILIZED)).all()
    assert (
        (band["plateau_level_large_step"] > 1e-2) & (band["plateau_level_large_step"] < 1e-1)
    ).all()
    assert (ds["regime_large_step"].sel(lr=0.3) == int(Regime.DIVERGED)).any()


def test_init_scale_axis_rebuilds_the_model_and_its_gd_edge():
    ds = phase_diagram(
        MODEL, DATA, lrs=[0.1], axis=InitScaleAxis("alpha"), values=[0.05, 0.5], seeds=1, **RUN
    )
    for alpha in (0.05, 0.5):
        model = DiagonalLinearNet(d=30, alpha=alpha)
        assert_cell_matches(
            ds.sel(lr=0.1, init_scale=alpha, seed=0), direct_run(0.1, 1, 0, model=model)
        )
        theta0 = model.init([np.random.default_rng(0)])
        edge = 2.0 / model.top_hessian_eigenvalue(theta0, DATA.X, DATA.y)[0]
        assert float(ds["gd_stability_edge"].sel(init_scale=alpha, seed=0)) == pytest.approx(edge)
    edges = ds["gd_stability_edge"].sel(seed=0).values
    assert edges[0] != pytest.approx(edges[1])
    assert "gd_stability_edge" not in ds.attrs  # it varies over the grid


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(axis="learning_rate", values=[1]), "unknown sweep axis 'learning_rate'"),
        (dict(lrs=[]), "lrs must be a non-empty"),
        (dict(lrs=[0.1, -0.2]), "lrs must hold finite numbers > 0"),
        (dict(lrs=[0.0]), "lrs must hold finite numbers > 0"),
        (dict(axis="batch_size", values=[]), "non-empty"),
        (dict(axis="batch_size", values=[0, 2]), "> 0"),
        (dict(axis="batch_size", values=[1, 50]), r"\[1, n = 20\]"),
        (dict(axis="decay_fraction", values=[0.5, 1.0]), r"\(0, 1\)"),
        (dict(axis="label_noise"), "axis and values go together"),
        (dict(values=[1, 2]), "axis and values go together"),
        (dict(seeds=0), "seeds must be a count >= 1"),
        (dict(seeds=[1, 1]), "distinct seed indices"),
        (dict(axis=InitScaleAxis("scale"), values=[0.1]), "field 'scale'"),
    ],
)
def test_bad_input_is_a_value_error_before_any_work(monkeypatch, kwargs, match):
    def no_run(*args, **kw):
        raise AssertionError("a run started before the arguments were checked")

    monkeypatch.setattr(phase_module, "simulate_sgd", no_run)
    args = dict(lrs=[0.1], seeds=1, n_steps=10) | kwargs
    with pytest.raises(ValueError, match=match):
        phase_diagram(MODEL, DATA, **args)


def test_dataset_survives_save_and_load(diagram, tmp_path):
    path = save_dataset(diagram, tmp_path / "phase.nc")
    back = load_dataset(path)
    xr.testing.assert_equal(back, diagram)
    assert back.attrs["config"] == diagram.attrs["config"]
    assert back["regime"].attrs["flag_meanings"] == "converged stabilized diverged"


# -- the SDE path ----------------------------------------------------------------------


def test_sde_cells_equal_direct_label_noise_sde_runs():
    ds = phase_diagram(
        MODEL,
        DATA,
        lrs=[0.1, 0.2],
        axis="label_noise",
        values=[0.0, 0.2],
        seeds=2,
        dynamics=SDEDynamics(solver="euler_numba"),
        **RUN,
    )
    assert ds.attrs["dynamics"] == "sde"
    for lr in (0.1, 0.2):
        for delta in (0.0, 0.2):
            for s in (0, 1):
                run = simulate_sde(
                    MODEL,
                    DATA,
                    LabelNoise(delta, lr, 1),
                    dt=lr,
                    n_steps=N_STEPS,
                    solver="euler_numba",
                    seed=[seed_child(0, s)],
                    save_steps=SAVE,
                    l0_threshold=1e-3,
                )
                assert_cell_matches(ds.sel(lr=lr, label_noise=delta, seed=s), run)


def test_sde_cells_with_a_step_decay_are_label_noise_gd_with_that_decay():
    """SDE cells on the decay_fraction axis follow the schedule in dt and in their noise
    coefficients: at B = n and m = 1 (euler_numba, GD's own normals) every cell is
    label-noise GD with that step decay, so the SDE diagram equals the SGD one."""
    kwargs = dict(lrs=[0.1, 0.3], axis=DecayFractionAxis(factor=4.0), values=[0.25, 0.75])
    kwargs.update(seeds=2, **RUN)
    sde = SDEDynamics(batch_size=DATA.n, label_noise=0.2, solver="euler_numba")
    gd = SGDDynamics(sgd=SGD(batch_size=None, label_noise=0.2))
    ds_sde = phase_diagram(MODEL, DATA, dynamics=sde, **kwargs)
    ds_gd = phase_diagram(MODEL, DATA, dynamics=gd, **kwargs)
    assert not ds_gd["diverged"].any()
    for name in ("final_train_loss", "final_test_loss", "plateau_level"):
        np.testing.assert_allclose(ds_sde[name], ds_gd[name], rtol=1e-9, atol=1e-14, err_msg=name)
    np.testing.assert_array_equal(ds_sde["regime"], ds_gd["regime"])
    # the decay point matters: an early decay ends elsewhere than a late one
    loss = ds_sde["final_train_loss"].sel(lr=0.3, seed=0).values
    assert abs(loss[0] - loss[1]) > 1e-3 * loss.max()


# -- sharpness and the GD flags -------------------------------------------------------


def test_sharpness_is_the_top_hessian_eigenvalue_at_the_end_of_each_run(diagram):
    """``sharpness``: lambda_max of the Hessian at the last step of a direct run of the
    cell (NaN where it diverged); no GD flags for SGD."""
    assert "catapult" not in diagram and "edge_of_stability" not in diagram
    for lr in LRS:
        run = simulate_sgd(
            MODEL, DATA, lr, n_steps=N_STEPS, sgd=SGD(batch_size=2),
            seed=[seed_child(0, 1)], save_steps=[0, N_STEPS], save_params=True,
        )  # fmt: skip
        got = float(diagram["sharpness"].sel(lr=lr, batch_size=2, seed=1))
        if bool(run["diverged"][0]):
            assert np.isnan(got)
            continue
        theta = run["params"].isel(step=-1).values
        expected = MODEL.top_hessian_eigenvalue(theta, DATA.X, DATA.y)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert np.isnan(diagram["sharpness"].sel(lr=1.0)).all()  # eta = 1 diverges
    assert json.loads(diagram.attrs["config"])["sharpness"] is True
    off = phase_diagram(MODEL, DATA, lrs=[0.1], seeds=1, sharpness=False, **RUN)
    assert "sharpness" not in off and json.loads(off.attrs["config"])["sharpness"] is False


# Lewkowycz et al. (2020)'s uv model: f(x) = (1/sqrt(m)) sum_j u_j v_j x on one example
# x = 1, y = 0, u, v ~ N(0, 1): a diagonal network whose inputs all equal 1/sqrt(m).
UV_WIDTH = 40
UV_DATA = RegressionData(
    np.full((1, UV_WIDTH), UV_WIDTH**-0.5), np.zeros(1), np.full((1, UV_WIDTH), UV_WIDTH**-0.5),
    np.zeros(1),
)  # fmt: skip
UV_MODEL = DiagonalLinearNet(d=UV_WIDTH, alpha=1.0, init_scheme="gaussian")
UV_LRS = np.geomspace(0.5, 3.0, 12)
UV_RUN = dict(n_steps=300, save_steps=np.arange(0, 301, 3))


@pytest.fixture(scope="module")
def uv_diagram() -> xr.Dataset:
    return phase_diagram(
        UV_MODEL, UV_DATA, lrs=UV_LRS, seeds=2, dynamics=SGDDynamics(SGD(batch_size=None)),
        **UV_RUN,
    )  # fmt: skip


def test_gd_flags_are_classify_regimes_on_the_sampled_sharpness_curve(uv_diagram):
    """For GD the catapult and edge-of-stability flags are those of classify_regimes
    given the sharpness sampled every E = N // (4 min_points) steps of a direct run."""
    every = 300 // (4 * 6)
    for lr in UV_LRS[[2, 6, 9]]:
        run = simulate_sgd(
            UV_MODEL, UV_DATA, lr, n_steps=300, sgd=SGD(batch_size=None),
            seed=[seed_child(0, 0)], save_steps=UV_RUN["save_steps"], save_params=True,
        )  # fmt: skip
        samples = run.sel(step=np.arange(0, 301, every))
        lam = [
            UV_MODEL.top_hessian_eigenvalue(theta[None], UV_DATA.X, UV_DATA.y)[0]
            if np.isfinite(theta).all() else np.nan
            for theta in samples["params"].values[0]
        ]  # fmt: skip
        curve = xr.DataArray([lam], dims=("traj", "step"), coords={"step": samples["step"]})
        if bool(run["diverged"][0]):
            curve[:] = np.nan  # a diverged trajectory's curve reads NaN
        flags = classify_regimes(run, sharpness=curve, lr=lr).isel(traj=0)
        cell = uv_diagram.sel(lr=lr, seed=0)
        assert int(cell["catapult"]) == int(flags["catapult"])
        assert int(cell["edge_of_stability"]) == int(flags["edge_of_stability"])
    # the flags fire on this problem: catapults above 2 / lambda_0, none at small eta
    assert uv_diagram["catapult"].sum() >= 4
    assert not uv_diagram["catapult"].sel(lr=UV_LRS[:3]).any()


# -- any config field as an axis -------------------------------------------------------


def test_config_field_axis_rebuilds_the_model_and_runs_it():
    """axis "model.alpha": each cell is a direct run of the rebuilt model (its init and
    its dynamics); the dim is model_alpha and the config names the path."""
    ds = phase_diagram(
        MODEL, DATA, lrs=[0.1], axis="model.alpha", values=[0.05, 0.5], seeds=1, **RUN
    )
    assert ds["model_alpha"].values.tolist() == [0.05, 0.5]
    for alpha in (0.05, 0.5):
        model = DiagonalLinearNet(d=30, alpha=alpha)
        assert_cell_matches(
            ds.sel(lr=0.1, model_alpha=alpha, seed=0), direct_run(0.1, 1, 0, model=model)
        )
    assert json.loads(ds.attrs["config"])["axis"] == {"name": "config_field", "path": "model.alpha"}


def test_config_field_axis_on_sgd_settings_equals_the_dedicated_axis(diagram):
    ds = phase_diagram(MODEL, DATA, lrs=LRS, axis="sgd.batch_size", values=[1, 2], seeds=2, **RUN)
    for name in ("final_train_loss", "final_l0_norm", "regime"):
        np.testing.assert_allclose(
            ds[name].values, diagram[name].values, rtol=LOSS_RTOL, equal_nan=True
        )


def test_config_field_axis_rebuilds_the_data():
    """axis "data.seed": each cell runs on sparse_regression(..., seed=value), a direct
    run on that data; the two data sets give different runs."""
    ds = phase_diagram(MODEL, DATA, lrs=[0.3], axis="data.seed", values=[1, 2], seeds=1, **RUN)
    assert ds["data_seed"].dtype == np.int64
    for data_seed in (1, 2):
        data = sparse_regression(n=20, d=30, k=3, n_test=50, seed=data_seed)
        run = simulate_sgd(
            MODEL, data, 0.3, n_steps=N_STEPS, sgd=SGD(batch_size=1), seed=[seed_child(0, 0)],
            save_steps=SAVE, l0_threshold=1e-3,
        )  # fmt: skip
        cell = ds.sel(lr=0.3, data_seed=data_seed, seed=0)
        np.testing.assert_allclose(
            cell["final_train_loss"], run["train_loss"].values[0, -1], rtol=LOSS_RTOL
        )
    losses = ds["final_train_loss"].values.ravel()
    assert losses[0] != losses[1]


@pytest.mark.parametrize(
    ("axis", "values", "match"),
    [
        ("optimizer.lr", [1.0], "prefix one of"),
        ("sgd.with_replacement", [1.0], "per-cell settings"),
        ("model.width", [1.0], "has no field 'width'"),
        ("model.d", [20], "input dimension"),
        ("data.seed", [1.5], "must be integers"),
        ("data.colour", [1.0], "no option 'colour'"),
        ("sgd.batch_size", [50], r"\[1, n = 20\]"),
        ("config_field", [1.0], "config path such as 'model.alpha'"),
    ],
)
def test_config_field_axis_errors_name_the_path_and_the_fix(monkeypatch, axis, values, match):
    monkeypatch.setattr(phase_module, "simulate_sgd", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(ValueError, match=match):
        phase_diagram(MODEL, DATA, lrs=[0.1], axis=axis, values=values, seeds=1, n_steps=10)


def test_config_field_axis_refuses_data_built_by_hand():
    data = RegressionData(DATA.X, DATA.y, DATA.X_test, DATA.y_test)
    with pytest.raises(ValueError, match="built by hand cannot be rebuilt"):
        phase_diagram(MODEL, data, lrs=[0.1], axis="data.seed", values=[1], seeds=1, n_steps=10)


def test_config_field_axis_keeps_gd_full_batch_on_rebuilt_data():
    """GD over "data.n": each cell is full-batch GD on its own data (B = its n)."""
    gd = SGDDynamics(SGD(batch_size=None))
    ds = phase_diagram(
        MODEL, DATA, lrs=[0.5], axis="data.n", values=[10, 40], seeds=1, dynamics=gd, **RUN
    )
    assert "catapult" in ds  # still a GD diagram
    for n in (10, 40):
        data = sparse_regression(n=n, d=30, k=3, n_test=50, seed=1)
        run = simulate_sgd(
            MODEL, data, 0.5, n_steps=N_STEPS, sgd=SGD(batch_size=None), seed=[seed_child(0, 0)],
            save_steps=SAVE, l0_threshold=1e-3,
        )  # fmt: skip
        np.testing.assert_allclose(
            ds["final_train_loss"].sel(lr=0.5, data_n=n, seed=0),
            run["train_loss"].values[0, -1], rtol=LOSS_RTOL,
        )  # fmt: skip
