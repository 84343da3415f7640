"""The experiments package: the kind registry, whole-config validation before any work,
the ``sgd_vs_sde`` experiment in the shared dataset layout, and ``run_experiment``'s
outputs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import sgdsde as s
from sgdsde.cli import app
from sgdsde.dynamics import SGD
from sgdsde.experiments import (
    DEMO_CONFIG,
    EXPERIMENTS,
    ConfigError,
    Experiment,
    PhaseExperiment,
    SGDExperiment,
    SGDvsSDE,
    builtin_configs,
    decay_steps,
    experiment_for,
    load_config,
    run_experiment,
    sgd_vs_sde_table,
)
from sgdsde.experiments import sgd as sgd_kind
from sgdsde.experiments import sgd_vs_sde as sgd_vs_sde_kind
from sgdsde.random import trajectory_streams

RUN_NAMES = ["label-noise GD", "label-noise SDE", "GD", "gradient flow"]


def small_sde_config(n_traj: int = 2) -> dict:
    cfg = load_config("dln_label_noise_sde")
    cfg["n_traj"] = n_traj
    return cfg


def problems_of(cfg: dict, n_steps: int | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        experiment_for(cfg).prepare(cfg, n_steps=n_steps)
    return info.value.problems


def forbid_simulation(monkeypatch):
    """Make every simulator call fail the test: validation must come before any work."""

    def fail(*args, **kwargs):
        raise AssertionError("a simulation started before the config was validated")

    for module in (sgd_kind, sgd_vs_sde_kind):
        for name in ("simulate_sgd", "simulate_sde"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, fail)


# ------------------------------------------------------------------ the kind registry


def test_kinds_are_registered_experiments():
    assert set(EXPERIMENTS) == {
        "sgd",
        "sgd_vs_sde",
        "phase",
        "paper_dln_notebook_data",
        "paper_dln_gd_vs_sgd",
        "paper_dln_loss_slice",
    }
    assert EXPERIMENTS["phase"] is PhaseExperiment
    assert EXPERIMENTS["sgd"] is SGDExperiment and EXPERIMENTS["sgd_vs_sde"] is SGDvsSDE
    for kind in EXPERIMENTS:
        assert isinstance(EXPERIMENTS.make(kind), Experiment)
    assert isinstance(experiment_for({"name": "x"}), SGDExperiment)  # kind defaults to sgd
    assert isinstance(experiment_for(small_sde_config()), SGDvsSDE)


@pytest.mark.parametrize("name", builtin_configs())
def test_every_builtin_config_validates(name):
    cfg = load_config(name)
    plan = experiment_for(cfg).prepare(cfg)
    assert plan.name == name == cfg["name"]
    assert plan.config["n_steps"] == cfg["n_steps"]
    json.dumps(plan.config)  # the resolved config goes into the dataset as JSON


def test_unknown_kind():
    cfg = small_sde_config()
    cfg["kind"] = "nope"
    with pytest.raises(
        ValueError, match=r"unknown config kind 'nope'.*'phase', 'sgd', 'sgd_vs_sde'\]"
    ):
        run_experiment(cfg, n_steps=10)
    cfg["kind"] = 3
    with pytest.raises(ConfigError, match="kind must be a string"):
        run_experiment(cfg, n_steps=10)


# ------------------------------------------------------------------ validation


def test_unknown_top_level_keys_are_errors_with_a_suggestion():
    cfg = load_config(DEMO_CONFIG)
    cfg["n_stepz"] = 3
    (problem,) = problems_of(cfg)
    assert "unknown field(s) ['n_stepz']" in problem
    assert "did you mean 'n_steps' for 'n_stepz'" in problem
    assert "'common_random_numbers'" in problem  # the accepted keys are listed
    cfg = small_sde_config()
    cfg["solver"] = "heun"
    (problem,) = problems_of(cfg)
    assert "unknown field(s) ['solver']" in problem and "'refine'" in problem


@pytest.mark.parametrize(
    ("table", "bad_key", "suggestion"),
    [
        ("sgd", "batchsize", "batch_size"),
        ("save", "n_point", "n_points"),
        ("data", "n_tests", "n_test"),
        ("model", "alpah", "alpha"),
    ],
)
def test_unknown_keys_in_tables_are_errors(table, bad_key, suggestion):
    cfg = load_config(DEMO_CONFIG)
    cfg[table][bad_key] = 1
    (problem,) = problems_of(cfg)
    assert f"{table}: unknown field(s) [{bad_key!r}]" in problem
    assert f"did you mean {suggestion!r} for {bad_key!r}" in problem


def test_unknown_keys_in_runs_and_their_tables():
    cfg = load_config(DEMO_CONFIG)
    cfg["runs"][1]["lr"] = 0.1
    cfg["runs"][2]["schedule"]["factor"] = [2.0]
    problems = problems_of(cfg)
    assert any(p.startswith("runs[1]: unknown field(s) ['lr']") for p in problems), problems
    assert any("runs[2].schedule" in p and "'factors' for 'factor'" in p for p in problems)
    cfg = small_sde_config()
    cfg["runs"][0]["sgd"]["labelnoise"] = 1.0
    cfg["runs"][1]["noise"]["delta"] = 1.0
    cfg["runs"][2]["noise"] = {"name": "gradient_flow"}  # noise belongs to method "sde"
    problems = problems_of(cfg)
    assert len(problems) == 3, problems
    assert "runs[0] ('label-noise GD').sgd: unknown field(s) ['labelnoise']" in problems[0]
    assert "runs[1] ('label-noise SDE').noise" in problems[1] and "['delta']" in problems[1]
    assert "runs[2] ('GD'): unknown field(s) ['noise']" in problems[2]


@pytest.mark.parametrize("bad", [2000.5, "2000", 2000.0, True, 0, -5])
def test_n_steps_must_be_a_positive_integer(bad):
    cfg = load_config(DEMO_CONFIG)
    cfg["n_steps"] = bad
    (problem,) = problems_of(cfg)
    assert problem.startswith("n_steps: must be"), problem
    sde = small_sde_config()
    sde["n_steps"] = bad
    (problem,) = problems_of(sde)
    assert problem.startswith("n_steps: must be"), problem


def test_an_integer_error_says_how_to_write_it():
    cfg = load_config(DEMO_CONFIG)
    cfg["n_steps"] = "2000"
    (problem,) = problems_of(cfg)
    assert "must be an integer (got '2000')" in problem and "n_steps = 2000" in problem


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("seed", "0", "seed: must be an integer"),
        ("seed", -1, "seed: must be >= 0"),
        ("common_random_numbers", "yes", "common_random_numbers: must be true or false"),
        ("description", 3, "description: must be a string"),
        ("data", [1], "data: must be a table"),
        ("runs", {"name": "x"}, "runs: must be an array of tables"),
    ],
)
def test_types_are_checked(key, value, match):
    cfg = load_config(DEMO_CONFIG)
    cfg[key] = value
    assert any(match in p for p in problems_of(cfg)), problems_of(cfg)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("lr", "0.2", "lr: must be a number"),
        ("lr", 0.0, "lr: must be > 0"),
        ("n_traj", 2.0, "n_traj: must be an integer"),
        ("refine", 0, "refine: must be >= 1"),
    ],
)
def test_sgd_vs_sde_types_are_checked(key, value, match):
    cfg = small_sde_config()
    cfg[key] = value
    assert any(match in p for p in problems_of(cfg)), problems_of(cfg)


@pytest.mark.parametrize(
    "name", ["../../x", "/tmp/x", "a/b", ".hidden", "", "two words", "x\n", 5, "é"]
)
def test_name_must_be_a_safe_file_name(name):
    cfg = load_config(DEMO_CONFIG)
    cfg["name"] = name
    (problem,) = problems_of(cfg)
    assert problem.startswith("name: must be"), problem


def test_safe_names_are_accepted():
    cfg = load_config(DEMO_CONFIG)
    for name in ("run_1", "eta-0.235", "A.b-c_d", "2024"):
        cfg["name"] = name
        assert experiment_for(cfg).prepare(cfg, n_steps=10).name == name


def test_every_problem_is_reported_at_once_before_any_work(monkeypatch):
    forbid_simulation(monkeypatch)
    cfg = small_sde_config()
    cfg["name"] = "../x"
    cfg["n_steps"] = 2000.5
    cfg["save"]["spacing"] = "cubic"
    cfg["runs"][0]["sgd"]["batch_size"] = 41  # n = 40
    cfg["runs"][1]["noise"]["batch_size"] = 2.5
    cfg["runs"][3]["method"] = "ode"
    problems = problems_of(cfg)
    assert len(problems) == 6, problems
    joined = "\n".join(problems)
    for field in ("name:", "n_steps:", "save.spacing:", "runs[0]", "runs[1]", "runs[3]"):
        assert field in joined
    assert "batch_size: must be <= n = 40 (got 41)" in joined
    assert "batch_size must be in [1, n], integers (got 2.5)" in joined
    with pytest.raises(ConfigError, match="method must be 'sgd' or 'sde'"):
        run_experiment(cfg)


def test_data_dependent_values_are_checked_before_any_work(monkeypatch):
    """A noise model whose batch exceeds n fails in prepare, not after the first runs."""
    forbid_simulation(monkeypatch)
    cfg = small_sde_config()
    cfg["runs"][3] = {
        "name": "sampled",
        "method": "sde",
        "noise": {"name": "sgd", "batch_size": 50},
    }
    with pytest.raises(ConfigError, match=r"runs\[3\] \('sampled'\)\.noise: batch_size must be in"):
        run_experiment(cfg, n_steps=10)
    cfg = load_config(DEMO_CONFIG)
    cfg["sgd"]["batch_size"] = 81  # n = 80
    with pytest.raises(ConfigError, match=r"sgd\.batch_size: must be <= n = 80"):
        run_experiment(cfg, n_steps=10)


def test_missing_keys_and_generators():
    cfg = load_config(DEMO_CONFIG)
    del cfg["n_steps"], cfg["data"]["generator"]
    cfg["model"]["name"] = "mlp"
    problems = problems_of(cfg)
    assert any("missing the key 'n_steps'" in p for p in problems)
    assert any(p.startswith("data.generator: must be one of") for p in problems)
    assert any(p.startswith("model.name: must be one of") for p in problems)
    cfg = load_config(DEMO_CONFIG)
    cfg["runs"] = []
    assert problems_of(cfg) == [
        "runs: config has no [[runs]]: add at least one run with a schedule"
    ]


def test_run_names_must_be_distinct():
    cfg = load_config(DEMO_CONFIG)
    cfg["runs"][2]["name"] = cfg["runs"][0]["name"]
    (problem,) = problems_of(cfg)
    assert problem.startswith("runs[2].name:") and "repeats runs[0]" in problem


def test_n_steps_override_is_validated_too():
    cfg = load_config(DEMO_CONFIG)
    (problem,) = problems_of(cfg, n_steps=10.5)
    assert problem.startswith("n_steps: must be an integer")
    assert experiment_for(cfg).prepare(cfg, n_steps=10).config["n_steps"] == 10


def test_schedules_without_defaults_in_configs():
    cfg = load_config(DEMO_CONFIG)
    cfg["runs"][1]["schedule"] = {"name": "step_decay", "lr": 0.1}
    (problem,) = problems_of(cfg)
    assert "missing field(s) ['at', 'factors']" in problem
    cfg["runs"][1]["schedule"] = 0.1  # a plain step size is a constant schedule
    experiment_for(cfg).prepare(cfg)


# ------------------------------------------------------------------ the sgd kind


def test_decay_steps_are_the_schedules_change_points():
    ds = run_experiment(load_config(DEMO_CONFIG), n_steps=1000)
    assert decay_steps(ds) == [[], [100], [300], [500]]
    cfg = json.loads(ds.attrs["experiment_config"])
    assert cfg["n_steps"] == 1000 and cfg["kind"] == "sgd" and cfg["seed"] == 1


# ------------------------------------------------------------------ sgd_vs_sde


def test_label_noise_sparsifies_gd_and_gradient_flow_stay_dense():
    """The claim of docs/sgd_vs_sde.png at 6,000 of its 20,000 steps (t = 1,200):
    label-noise GD and its SDE have l0 well below d = 100, GD and gradient flow stay
    at l0 >= 90 (threshold 1e-3), and label noise has a much lower test loss."""
    cfg = load_config("dln_label_noise_sde")
    ds = run_experiment(cfg, n_steps=6000)
    d = cfg["data"]["d"]
    assert list(dict.fromkeys(ds.run.values)) == RUN_NAMES
    assert not ds.diverged.any()
    final = ds.isel(step=-1)
    l0 = np.array([final.l0_norm.sel(run=r).mean("traj") for r in RUN_NAMES])
    test = np.array([final.test_loss.sel(run=r).mean("traj") for r in RUN_NAMES])
    assert l0[0] < d / 2 and l0[1] < d / 2, l0
    assert l0[2] >= 0.9 * d and l0[3] >= 0.9 * d, l0
    assert max(test[0], test[1]) < 0.2 * min(test[2], test[3]), test
    # the SDE tracks label-noise GD (same law up to O(eta)): l0 within 25 %
    assert abs(l0[0] - l0[1]) < 0.25 * l0[0], l0
    np.testing.assert_allclose(ds.time, (ds.step * cfg["lr"]).broadcast_like(ds.time))
    assert "| label-noise SDE |" in sgd_vs_sde_table(ds)


def test_sgd_vs_sde_cli(tmp_path):
    result = CliRunner().invoke(
        app, ["run", "dln_label_noise_sde", "--out", str(tmp_path), "--n-steps", "500", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "| gradient flow |" in result.output
    ds = s.load_dataset(tmp_path / "dln_label_noise_sde.nc")
    assert ds.l0_norm.dims == ("traj", "step") and ds.run.dims == ("traj",)
    assert int(ds.step[-1]) == 500
    assert json.loads(ds.attrs["config"])["kind"] == "sgd_vs_sde"
    png = (tmp_path / "dln_label_noise_sde.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_sgd_vs_sde_config_errors():
    cfg = load_config("dln_label_noise_sde")
    cfg["runs"][0]["method"] = "ode"
    with pytest.raises(ValueError, match="method must be 'sgd' or 'sde'"):
        run_experiment(cfg, n_steps=10)
    cfg = load_config("dln_label_noise_sde")
    cfg["runs"][1]["noise"]["name"] = "pink"
    with pytest.raises(ValueError, match="noise name must be one of"):
        run_experiment(cfg, n_steps=10)
    cfg = load_config("dln_label_noise_sde")
    cfg["kind"] = "nope"
    with pytest.raises(ValueError, match="unknown config kind"):
        run_experiment(cfg, n_steps=10)


@pytest.fixture(scope="module")
def sde_run():
    return run_experiment(small_sde_config(n_traj=3), n_steps=200)


def test_sgd_vs_sde_has_the_shared_layout(sde_run):
    """dims (traj, step); run / method / dt per trajectory, run-major; time (traj, step);
    diverged and diverged_step per trajectory: the layout of simulate_sgd."""
    ds = sde_run
    assert dict(ds.sizes) == {"traj": 12, "step": 101}
    for var in ("train_loss", "test_loss", "l0_norm", "l1_norm", "param_norm"):
        assert ds[var].dims == ("traj", "step")
    assert ds.time.dims == ("traj", "step") and ds.diverged.dims == ("traj",)
    assert ds.diverged_step.dims == ("traj",) and ds.diverged_step.dtype == np.int64
    assert np.all(ds.diverged_step.values == -1)
    assert list(ds.run.values) == [r for r in RUN_NAMES for _ in range(3)]
    assert list(ds.method.values) == ["sgd"] * 3 + ["sde"] * 3 + ["sgd"] * 3 + ["sde"] * 3
    np.testing.assert_allclose(ds.dt.values, np.repeat([0.2, 0.05, 0.2, 0.05], 3))
    np.testing.assert_array_equal(ds.traj.values, np.arange(12))
    # the layout of a plain simulate_sgd run (same variables, same dims)
    sgd = s.simulate_sgd(
        s.make_model("diagonal_linear", d=5), s.sparse_regression(n=8, d=5, k=2), 0.1, n_steps=10
    )
    assert set(sgd.data_vars) == set(ds.data_vars)
    for var in sgd.data_vars:
        assert ds[var].dims == sgd[var].dims and ds[var].dtype == sgd[var].dtype


def test_sgd_vs_sde_runs_select_by_name_in_memory_and_on_disk(sde_run, tmp_path):
    gd = sde_run.sel(run="GD")
    assert gd.sizes["traj"] == 3 and set(gd.method.values) == {"sgd"}
    np.testing.assert_array_equal(gd.train_loss.values, sde_run.train_loss.values[6:9])
    loaded = s.load_dataset(s.save_dataset(sde_run, tmp_path / "r.nc"))
    np.testing.assert_array_equal(loaded.sel(run="GD").train_loss.values, gd.train_loss.values)


def test_sgd_vs_sde_runs_match_their_own_simulations(sde_run):
    """Each run's block holds what its simulator returned: run 0 is label-noise GD from
    the shared init with child 1 of the seed (the documented seeding)."""
    cfg = small_sde_config(n_traj=3)
    plan = experiment_for(cfg).prepare(cfg, n_steps=200)
    theta0 = plan.model.init(trajectory_streams(0, 3)["init"])
    direct = s.simulate_sgd(
        plan.model,
        plan.data,
        0.2,
        n_steps=200,
        sgd=SGD(batch_size=None, label_noise=2.0),
        n_traj=3,
        seed=np.random.SeedSequence(0).spawn(5)[1],
        theta0=theta0,
        save_steps=plan.save_steps,
        l0_threshold=1e-3,
    )
    block = sde_run.sel(run="label-noise GD")
    np.testing.assert_array_equal(block.train_loss.values, direct.train_loss.values)
    np.testing.assert_array_equal(block.time.values, direct.time.values)


def test_sgd_vs_sde_attrs(sde_run):
    attrs = sde_run.attrs
    cfg = json.loads(attrs["config"])
    assert cfg["kind"] == "sgd_vs_sde" and cfg["n_traj"] == 3 and cfg["refine"] == 4
    assert cfg["runs"][1]["noise"]["lr"] == 0.2  # resolved: the config's lr filled in
    run_configs = json.loads(attrs["run_configs"])
    assert [c["kind"] for c in run_configs] == ["sgd", "sde", "sgd", "sde"]
    assert json.loads(attrs["seed_entropy"]) == 0 and json.loads(attrs["seed_spawn_key"]) == []
    assert attrs["experiment"] == "dln_label_noise_sde" and "created" in attrs


def test_sgd_vs_sde_table_reads_the_new_layout(sde_run):
    table = sgd_vs_sde_table(sde_run).splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == RUN_NAMES
    gd = sde_run.sel(run="GD").isel(step=-1)
    assert f"{np.mean(gd.train_loss.values):.2e}" in table[4]
    assert table[4].endswith("| 0/3 |")


def test_sgd_vs_sde_plot(sde_run, tmp_path):
    fig = SGDvsSDE().plot(sde_run, tmp_path / "f.png", title="t")
    assert len(fig.axes) == 3
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == [
        "label-noise GD (exact)",
        "label-noise SDE (SDE, dt = 0.05)",
        "GD (exact)",
        "gradient flow (SDE, dt = 0.05)",
    ]
    mean_l0 = sde_run.sel(run="GD").l0_norm.mean("traj").values
    np.testing.assert_allclose(fig.axes[0].lines[2].get_ydata(), mean_l0)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ outputs


def test_run_experiment_writes_only_its_own_name_and_refuses_to_overwrite(tmp_path):
    cfg = load_config(DEMO_CONFIG)
    ds = run_experiment(cfg, tmp_path, n_steps=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dln_sparse_sgd.nc"]
    before = (tmp_path / "dln_sparse_sgd.nc").read_bytes()
    with pytest.raises(ValueError, match=r"already exist.*overwrite=True"):
        run_experiment(cfg, tmp_path, n_steps=60)
    assert (tmp_path / "dln_sparse_sgd.nc").read_bytes() == before
    again = run_experiment(cfg, tmp_path, n_steps=60, overwrite=True)
    assert int(s.load_dataset(tmp_path / "dln_sparse_sgd.nc").step[-1]) == 60
    assert int(again.step[-1]) == 60 and int(ds.step[-1]) == 50


def test_run_experiment_checks_out_dir_before_any_work(tmp_path, monkeypatch):
    forbid_simulation(monkeypatch)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cfg = load_config(DEMO_CONFIG)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run_experiment(cfg, a_file, n_steps=10)
    with pytest.raises(ValueError, match="not a folder we can write to"):
        run_experiment(cfg, a_file / "sub", n_steps=10)


def test_config_is_not_modified():
    cfg = small_sde_config()
    before = copy.deepcopy(cfg)
    experiment_for(cfg).prepare(cfg, n_steps=10)
    assert cfg == before
