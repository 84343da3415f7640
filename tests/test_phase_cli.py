"""The phase experiment kind and the sweep / plot / info commands: configs validated
whole before any work (errors name the field and the fix), the headline configs at
tiny overrides, the result equal to a direct phase_diagram call, and the commands end
to end (what they write, how they fail: one line, status 2, nothing written)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from sgdsde.analysis import AXES, RegimeCriteria, SGDDynamics, phase_diagram, with_phase_edges
from sgdsde.cli import app
from sgdsde.data import sparse_regression
from sgdsde.dynamics.sgd import SGD
from sgdsde.experiments import ConfigError, PhaseExperiment, experiment_for, load_config
from sgdsde.experiments.phase import execute_phase
from sgdsde.models.diagonal import DiagonalLinearNet
from sgdsde.run.dataset import load_dataset
from sgdsde.run.grids import eval_grid
from sgdsde.version import __version__

TINY = """
name = "tiny_phase"
kind = "phase"
description = "tiny phase diagram"
n_steps = 300
seed = 3
seeds = 2
lrs = [0.1, 0.3, 1.0]

[data]
generator = "sparse_regression"
n = 20
d = 30
k = 3
n_test = 50
seed = 1

[model]
name = "diagonal_linear"
alpha = 0.1

[dynamics]
name = "sgd"
batch_size = 1

[axis]
name = "label_noise"
values = [0.0, 0.5]

[save]
n_dense = 0
n_points = 31
l0_threshold = 1e-3
"""

HEADLINES = (
    "phase_dln_sgd",
    "phase_dln_sde",
    "phase_dln_sde_label_noise",
    "phase_dln_label_noise_gd",
)


def tiny_config(**changes) -> dict:
    import tomllib

    cfg = tomllib.loads(TINY)
    for key, value in changes.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    return cfg


def problems_of(cfg) -> list[str]:
    with pytest.raises(ConfigError) as info:
        PhaseExperiment().prepare(cfg)
    return info.value.problems


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, status: int = 2) -> str:
    assert result.exit_code == status, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


# -- configs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        ({"axis": {"name": "temperature", "values": [1]}}, "axis.name", "label_noise"),
        ({"lrs": []}, "lrs", "non-empty"),
        ({"lrs": [0.1, -0.2]}, "lrs", "> 0"),
        ({"lrs": [0.1, 0.1]}, "lrs", "repeats"),
        ({"lrs": {"start": 0.0, "stop": 1.0, "num": 5}}, "lrs", "spacing = 'linear'"),
        ({"lrs": {"start": 0.1, "stop": 1.0, "num": 0}}, "lrs.num", ">= 1"),
        ({"lrs": {"start": 0.1, "stop": 1.0}}, "lrs", "'num'"),
        ({"axis": {"name": "batch_size", "values": []}}, "axis.values", "non-empty"),
        ({"axis": {"name": "label_noise", "values": [-1.0]}}, "axis.values", ">= 0"),
        ({"axis": {"name": "decay_fraction", "values": [0.5, 1.5]}}, "axis.values", "(0, 1)"),
        ({"axis": {"name": "decay_fraction", "values": [0.5], "factr": 2}}, "axis", "factor"),
        ({"axis": {"name": "label_noise"}}, "axis", "values"),
        ({"seeds": 0}, "seeds", "seeds = 4"),
        ({"seeds": [0, 0]}, "seeds", "distinct"),
        ({"dynamics": {"name": "adam"}}, "dynamics.name", "'sgd' or 'sde'"),
        ({"dynamics": {"name": "sgd", "batch_size": 50}}, "dynamics.batch_size", "n = 20"),
        ({"dynamics": {"name": "sde", "solver": "rk4"}}, "dynamics.solver", "euler_numba"),
        ({"regimes": {"window": 2.0}}, "regimes", "window"),
        ({"n_steps": 0}, "n_steps", ">= 1"),
        ({"lrs": None}, "", "'lrs'"),
    ],
)
def test_bad_fields_are_named_with_the_fix_before_any_work(monkeypatch, change, field, fix):
    monkeypatch.setattr("sgdsde.experiments.phase.phase_diagram", pytest.fail)
    problems = problems_of(tiny_config(**change))
    text = "; ".join(problems)
    assert any(p.startswith(f"{field}:") or field in p for p in problems), text
    assert fix in text, text


def test_every_problem_is_reported_at_once():
    cfg = tiny_config(lrs=[], seeds=0, axis={"name": "temperature", "values": [1]})
    fields = {p.split(":")[0] for p in problems_of(cfg)}
    assert {"lrs", "seeds", "axis.name"} <= fields


def test_the_sde_sweeps_the_decay_fraction_as_label_noise_gd_with_that_decay():
    """An SDE config on the decay_fraction axis validates and runs: at B = n, m = 1 on
    euler_numba its cells are label-noise GD with the decay (the same numbers)."""
    axis = {"name": "decay_fraction", "values": [0.25, 0.75], "factor": 4.0}
    runs = {}
    for name, dynamics in [
        ("sde", {"name": "sde", "batch_size": 20, "label_noise": 0.5, "solver": "euler_numba"}),
        ("sgd", {"name": "sgd", "batch_size": "full", "label_noise": 0.5}),
    ]:
        plan = PhaseExperiment().prepare(tiny_config(dynamics=dynamics, axis=axis))
        runs[name] = execute_phase(plan)
    np.testing.assert_allclose(
        runs["sde"]["final_train_loss"], runs["sgd"]["final_train_loss"], rtol=1e-9
    )
    assert json.loads(runs["sde"].attrs["config"])["dynamics"]["name"] == "sde"


def test_grid_specs_resolve_to_the_grids_they_name():
    cfg = tiny_config(
        lrs={"start": 0.01, "stop": 1.0, "num": 5},
        axis={"name": "decay_fraction", "values": {"start": 0.1, "stop": 0.9, "num": 3}},
    )
    plan = PhaseExperiment().prepare(cfg)
    np.testing.assert_allclose(plan.options["lrs"], [0.01, 10**-1.5, 0.1, 10**-0.5, 1.0])
    np.testing.assert_allclose(plan.options["values"], [0.1, 0.5, 0.9])
    assert plan.config["lrs"] == plan.options["lrs"].tolist()
    assert plan.config["axis"] == {
        "name": "decay_fraction",
        "factor": 4.8,
        "values": plan.options["values"].tolist(),
    }


@pytest.mark.parametrize("name", HEADLINES)
def test_headline_configs_validate_at_full_size(name):
    cfg = load_config(name)
    plan = experiment_for(cfg).prepare(cfg)
    assert isinstance(plan.options["axis"], tuple(AXES.values()))
    assert plan.options["axis"].name in plan.config["axis"]["name"]
    if name != "phase_dln_label_noise_gd":  # the headline grid (issue 8, section 3)
        assert len(plan.options["lrs"]) >= 40
        assert len(plan.options["values"]) == 9
        assert plan.options["seeds"] == [0, 1, 2, 3]
        assert plan.options["n_steps"] == 100_000
        assert (plan.data.n, plan.data.d) == (80, 200)


@pytest.mark.parametrize("name", HEADLINES)
def test_headline_configs_run_at_tiny_overrides(name):
    cfg = load_config(name)
    cfg["lrs"], cfg["seeds"] = [0.1, 0.3], 1
    axis = cfg["axis"]
    axis["values"] = [0.25, 0.75] if axis["name"] == "decay_fraction" else [0.0, 0.5]
    experiment = experiment_for(cfg)
    ds = experiment.run(experiment.prepare(cfg, n_steps=120))
    assert dict(ds.sizes) == {"lr": 2, axis["name"]: 2, "seed": 1}
    stored = json.loads(ds.attrs["experiment_config"])
    assert stored["n_steps"] == 120 and stored["lrs"] == [0.1, 0.3]
    assert ds.attrs["experiment_kind"] == "phase" and ds.attrs["sgdsde_version"] == __version__
    assert "| lr |" in experiment.table(ds)


def test_the_result_equals_a_direct_phase_diagram_call():
    plan = PhaseExperiment().prepare(tiny_config())
    ds = execute_phase(plan)
    data = sparse_regression(n=20, d=30, k=3, n_test=50, seed=1)
    direct = phase_diagram(
        DiagonalLinearNet(d=30, alpha=0.1),
        data,
        lrs=[0.1, 0.3, 1.0],
        axis="label_noise",
        values=[0.0, 0.5],
        seeds=2,
        seed=3,
        n_steps=300,
        dynamics=SGDDynamics(SGD(batch_size=1)),
        save_steps=eval_grid(300, n_dense=0, n_points=31),
        l0_threshold=1e-3,
        criteria=RegimeCriteria(),
    )
    xr.testing.assert_identical(ds.drop_attrs(), with_phase_edges(direct).drop_attrs())
    assert json.loads(ds.attrs["config"]) == json.loads(direct.attrs["config"])
    assert int(ds["regime"].sel(lr=1.0).min()) == 2  # eta = 1 diverges


@pytest.mark.parametrize(
    ("options", "flag"),
    [({"workers": 2}, "need the sweep's store"), ({"resume": True}, "need the sweep's store"),
     ({"scheduler": "tcp://x:1"}, "need the sweep's store"), ({"workers": 0}, "positive integer"),
     ({"workers": 2, "scheduler": "tcp://x:1", "store": "s.zarr"}, "exclude each other")],
)  # fmt: skip
def test_backend_options_are_checked_before_any_work(monkeypatch, options, flag):
    monkeypatch.setattr("sgdsde.experiments.phase.phase_diagram", pytest.fail)
    monkeypatch.setattr("sgdsde.experiments.phase.run_sweep", pytest.fail)
    plan = PhaseExperiment().prepare(tiny_config())
    with pytest.raises(ValueError, match=flag):
        execute_phase(plan, **options)


def test_a_sweep_through_the_store_equals_the_in_process_run_and_resumes(tmp_path):
    """With a store the blocks are written as they finish; the result is the in-process
    diagram (losses to round-off: the BLAS products span other trajectory sets), an
    existing store is refused unless resumed or overwritten, and resuming a finished
    sweep reruns nothing."""
    plan = PhaseExperiment().prepare(tiny_config())
    direct = execute_phase(plan)
    store = tmp_path / "tiny.zarr"
    stored = execute_phase(plan, store=store, workers=1)
    for name in ("regime", "final_l0_norm", "time_to_sparsity", "diverged"):
        np.testing.assert_array_equal(stored[name].values, direct[name].values)
    np.testing.assert_allclose(
        stored["final_test_loss"].values, direct["final_test_loss"].values, rtol=1e-12
    )
    assert bool(stored["done"].all())
    with pytest.raises(ValueError, match="--resume to continue it or --overwrite"):
        execute_phase(plan, store=store, workers=1)
    again = execute_phase(plan, store=store, workers=1, resume=True)
    np.testing.assert_array_equal(again["final_test_loss"].values, stored["final_test_loss"].values)
    fresh = execute_phase(plan, store=store, workers=1, overwrite=True)
    np.testing.assert_array_equal(fresh["final_test_loss"].values, stored["final_test_loss"].values)
    not_ours = tmp_path / "notes.zarr"
    not_ours.mkdir()
    (not_ours / "keep.txt").write_text("mine")
    with pytest.raises(ValueError):
        execute_phase(plan, store=not_ours, workers=1, overwrite=True)
    assert (not_ours / "keep.txt").read_text() == "mine"


# -- the commands ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    config = folder / "tiny.toml"
    config.write_text(TINY)
    out = folder / "out"
    result = invoke("sweep", config, "--out", out, "--quiet", "--seed", "7")
    assert result.exit_code == 0, result.output
    return config, out, result.output


def test_sweep_writes_the_dataset_and_its_figure_and_nothing_else(swept):
    _, out, output = swept
    # the dataset, its figure, and the resumable store the blocks were written into
    assert sorted(os.listdir(out)) == ["tiny_phase.nc", "tiny_phase.png", "tiny_phase.zarr"]
    ds = load_dataset(out / "tiny_phase.nc")
    assert dict(ds.sizes) == {"lr": 3, "label_noise": 2, "seed": 2}
    assert json.loads(ds.attrs["experiment_config"])["seed"] == 7  # --seed
    assert json.loads(ds.attrs["seed_entropy"]) == 7
    assert "| lr |" in output and "wrote" in output


def test_sweep_with_another_seed_gives_other_numbers(swept, tmp_path):
    config, out, _ = swept
    assert invoke("sweep", config, "--out", tmp_path, "--quiet").exit_code == 0
    seven = load_dataset(out / "tiny_phase.nc")["final_train_loss"].sel(lr=0.1).values
    three = load_dataset(tmp_path / "tiny_phase.nc")["final_train_loss"].sel(lr=0.1).values
    assert not np.array_equal(seven, three)


def test_info_names_dims_seeds_version_provenance_regimes_and_config(swept):
    _, out, _ = swept
    result = invoke("info", out / "tiny_phase.nc")
    assert result.exit_code == 0, result.output
    text = result.output
    ds = load_dataset(out / "tiny_phase.nc")
    assert "kind: phase" in text and "dims: lr=3, label_noise=2, seed=2" in text
    assert f"sgdsde_version: {__version__}" in text and "created:" in text
    diverged = ds["regime"].values == 2
    lrs = ds["lr"].values[diverged.any(axis=(1, 2))]
    assert diverged.any() and 1.0 in lrs
    assert f"diverged {diverged.sum()}/12 (lr {lrs.min():g} .. {lrs.max():g})" in text
    assert '"seed_entropy": "7"' in text
    assert "  lrs = [0.1, 0.3, 1.0]" in text


def test_plot_draws_a_variable_and_the_curves_beside_the_result(swept):
    _, out, _ = swept
    result = invoke("plot", out / "tiny_phase.nc", "--variable", "final_l0_norm")
    assert result.exit_code == 0, result.output
    result = invoke("plot", out / "tiny_phase.nc", "--curves")
    assert result.exit_code == 0, result.output
    for name in ("tiny_phase_final_l0_norm.png", "tiny_phase_curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    line = assert_one_line_error(invoke("plot", out / "tiny_phase.nc"))
    assert "already exists" in line and "--overwrite" in line


def test_plot_picks_the_run_figure_for_a_run_result(tmp_path):
    result = invoke("run", "dln_sparse_sgd", "--out", tmp_path, "--n-steps", "50", "--quiet")
    assert result.exit_code == 0, result.output
    target = tmp_path / "again.png"
    result = invoke("plot", tmp_path / "dln_sparse_sgd.nc", "--out", target)
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:4] == b"\x89PNG"
    assert "kind: sgd" in invoke("info", tmp_path / "dln_sparse_sgd.nc").output
    line = assert_one_line_error(
        invoke("plot", tmp_path / "dln_sparse_sgd.nc", "--variable", "regime")
    )
    assert "phase results" in line


def test_bad_results_get_one_line_exit_2_and_nothing_written(tmp_path):
    notes = tmp_path / "notes.nc"
    notes.write_text("not a dataset")
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"x": ("i", np.arange(3.0))}).to_netcdf(foreign, engine="h5netcdf")
    before = sorted(os.listdir(tmp_path))
    for command in ("plot", "info"):
        assert "does not exist" in assert_one_line_error(invoke(command, tmp_path / "nope.nc"))
        assert "not a netCDF" in assert_one_line_error(invoke(command, notes))
        assert "not a sgdsde dataset" in assert_one_line_error(invoke(command, foreign))
    assert sorted(os.listdir(tmp_path)) == before


def test_bad_sweeps_get_one_line_exit_2_and_create_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace('name = "label_noise"', 'name = "temperature"'))
    out = tmp_path / "out"
    line = assert_one_line_error(invoke("sweep", bad, "--out", out))
    assert "axis.name" in line and "label_noise" in line
    good = tmp_path / "good.toml"
    good.write_text(TINY)
    line = assert_one_line_error(invoke("sweep", good, "--out", out, "--workers", "0"))
    assert "workers" in line and "positive integer" in line
    line = assert_one_line_error(invoke("sweep", "dln_sparse_sgd", "--out", out))
    assert "kind = 'phase'" in line and "sgdsde run" in line
    assert not out.exists()


def test_any_config_field_is_an_axis_at_the_config_boundary():
    axis = {"name": "config_field", "path": "data.noise_std", "values": [0.0, 0.5]}
    plan = PhaseExperiment().prepare(tiny_config(axis=axis))
    ds = execute_phase(plan)
    assert ds["data_noise_std"].values.tolist() == [0.0, 0.5]
    stored = json.loads(ds.attrs["experiment_config"])["axis"]
    assert stored == {"name": "config_field", "path": "data.noise_std", "values": [0.0, 0.5]}
    # the noisy labels change the runs
    loss = ds["final_train_loss"].sel(lr=0.1, seed=0).values
    assert loss[0] != loss[1]
    bad = {"name": "config_field", "path": "model.widht", "values": [1]}
    (problem,) = problems_of(tiny_config(axis=bad))
    assert problem.startswith("axis.values") and "no field 'widht'" in problem
    (problem,) = problems_of(tiny_config(axis={"name": "config_field", "values": [1]}))
    assert problem.startswith("axis") and "path" in problem


def test_sharpness_false_in_a_config_skips_it_in_process_and_through_the_store(tmp_path):
    with_it = execute_phase(PhaseExperiment().prepare(tiny_config()))
    assert "sharpness" in with_it and np.isfinite(with_it["sharpness"].sel(lr=0.1)).all()
    plan = PhaseExperiment().prepare(tiny_config(sharpness=False))
    for ds in (execute_phase(plan), execute_phase(plan, store=tmp_path / "s.zarr", workers=1)):
        assert "sharpness" not in ds
        np.testing.assert_array_equal(ds["final_l0_norm"].values, with_it["final_l0_norm"].values)
    assert problems_of(tiny_config(sharpness="no")) == [
        "sharpness: must be true or false (got 'no')"
    ]
