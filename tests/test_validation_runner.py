"""validate(config, out_dir) end to end at tiny size: SGD beside the label-noise SDE (delta
-> 0 is GD), SVAG over l (l = 1 is SGD: score 0), the plateau calibration, the baseline's
final values, the config checks before any work, and the built-in configs."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from validation_support import validate_sgd_runs

from sgdsde.dynamics import as_schedule
from sgdsde.run.dataset import load_dataset
from sgdsde.validation import (
    MLP,
    Augmentation,
    EvaluationOptions,
    check_validation_config,
    load_validation_config,
    plateau_delta,
    teacher_images,
    train_sgd,
    validate,
    validation_summary,
)
from sgdsde.validation.runner import (
    augmentation,
    evaluation_options,
    large_step_phase,
    late_loss_change,
    phase_loss,
)

TINY_CONFIG = {
    "data": {"name": "teacher", "n": 24, "n_test": 8, "input_shape": [1, 2, 2], "n_classes": 3},
    "network": {"name": "mlp", "widths": [6]},
    "sgd": {"schedule": 0.2, "n_steps": 4, "batch_size": 4, "loss": "square"},
    "evaluation": {"eval_every": 2},
    "sde": {"method": "label_noise", "delta": 0.05, "substeps": 2},
    "n_seeds": 2,
    "compare": {"n_boot": 10, "n_perm": 10},
}


def _with(**changes):
    config = copy.deepcopy(TINY_CONFIG)
    for key, value in changes.items():
        merge = isinstance(value, dict) and key in config
        config[key] = {**config[key], **value} if merge else value
    return config


def test_validate_end_to_end_at_tiny_size(tmp_path):
    ds = validate(TINY_CONFIG, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["validation.nc", "validation.png"]
    saved = load_dataset(tmp_path / "validation.nc")
    assert saved["dynamics"].values.tolist() == ["SGD", "label-noise SDE"]
    assert saved["matched_step"].values.tolist() == [0, 4, 8]  # 2 SDE substeps per SGD step
    np.testing.assert_allclose(saved["time"].values, [0.0, 0.4, 0.8])
    np.testing.assert_array_equal(saved["agreement_test_loss"], ds["agreement_test_loss"])
    assert float(saved["sde_delta"]) == 0.05
    for name in ("train_loss", "test_error", "weight_norm", "distance_from_init", "dead_units"):
        assert f"agreement_{name}" in saved and f"{name}_mean" in saved
    # same initialization per seed: every observable starts equal in both methods
    first = saved["weight_norm"].isel(step=0).values
    np.testing.assert_array_equal(first[0], first[1])
    assert first[0, 0] != first[0, 1]  # and seeds differ in their initialization
    assert validation_summary(ds).splitlines()[1].startswith("train_loss")
    with pytest.raises(ValueError, match="already exist"):
        validate(TINY_CONFIG, tmp_path)


def test_validate_keeps_both_methods_segment_losses_at_matched_steps(tmp_path):
    """With the walk on, validation.nc holds each method's loss along the update ending
    at each compared evaluation (the SDE's at its matched step, 2 substeps per SGD
    step), equal to the runs' own records; it is kept, not scored."""
    config = _with(evaluation={"eval_every": 2, "walk": True, "walk_points": 5})
    ds = validate(config, tmp_path)
    saved = load_dataset(tmp_path / "validation.nc")
    segments = saved["segment_loss"]
    assert segments.dims == ("dynamics", "seed", "step", "segment_alpha")
    np.testing.assert_array_equal(segments["segment_alpha"], [0, 0.25, 0.5, 0.75, 1])
    assert "agreement_segment_loss" not in ds and "agreement_floor_height" in ds
    # the segment ends at the evaluated iterate: its last point is that iterate's loss
    # (the SDE's at its matched step), after the first evaluation
    np.testing.assert_allclose(
        segments.isel(step=slice(1, None), segment_alpha=-1),
        saved["train_loss"].isel(step=slice(1, None)),
        rtol=1e-6,
    )
    assert np.isfinite(segments.isel(step=slice(1, None)).values).all()
    plain = validate(TINY_CONFIG, tmp_path / "plain")
    assert "segment_loss" not in plain


def test_label_noise_sde_with_delta_0_agrees_with_full_batch_sgd(tmp_path):
    """B = n: SGD is GD (one minibatch, the whole set, in a permuted order), and the SDE
    at delta = 0, dt = eta is GD: the runs agree to rounding, far below the seed spread;
    a large delta moves the SDE away by many spreads."""
    gd_like = _with(
        sgd={"batch_size": 24, "n_steps": 6, "schedule": 0.5},
        sde={"delta": 0.0, "substeps": 1},
        n_seeds=3,
    )
    ds = validate(gd_like, tmp_path / "gd")
    for name in ("train_loss", "test_loss", "weight_norm", "distance_from_init"):
        assert float(ds[f"agreement_{name}"]) < 1e-3, name
    noisy = validate(_with(**{**gd_like, "sde": {"delta": 20.0}}), tmp_path / "noisy")
    assert float(noisy["agreement_train_loss"]) > 2


@pytest.mark.parametrize("method", ["label_noise", "sgd_covariance"])
def test_the_sdes_model_sgd_weight_decay(tmp_path, method):
    """sgd.weight_decay passes to the SDE: at B = n and delta = 0 both are GD with weight
    decay and agree to rounding; the decay acted (a smaller weight norm than without)."""
    sde = {"method": method, "substeps": 1, **({"delta": 0.0} if method == "label_noise" else {})}
    sgd = {"batch_size": 24, "n_steps": 6, "schedule": 0.5}
    decay = _with(sgd={**sgd, "weight_decay": 0.5}, n_seeds=3)
    decay["sde"] = sde
    ds = validate(decay, tmp_path / "wd")
    for name in ("train_loss", "test_loss", "weight_norm", "distance_from_init"):
        assert float(ds[f"agreement_{name}"]) < 1e-3, name
    plain = validate({**decay, "sgd": _with(sgd=sgd)["sgd"]}, tmp_path / "plain")
    decayed = ds["weight_norm_mean"].isel(step=-1).values
    assert np.all(decayed < plain["weight_norm_mean"].isel(step=-1).values - 0.05)


def test_svag_l_1_scores_0_and_the_scores_are_reported_over_l(tmp_path):
    config = _with(sgd={"loss": "cross_entropy"}, sde={"method": "svag", "l": [2, 1]}, n_seeds=3)
    del config["sde"]["delta"], config["sde"]["substeps"]
    ds = validate(config, tmp_path)
    assert ds["svag_l"].values.tolist() == [1, 2]
    assert ds["dynamics"].values.tolist() == ["SGD", "SVAG l=2"]  # compared at the largest l
    scores = [v for v in ds.data_vars if v.startswith("svag_agreement_") and "_se" not in v]
    assert "svag_agreement_test_loss" in scores and "svag_agreement_feature_sparsity" in scores
    for var in scores:
        assert np.all(ds[var].sel(svag_l=1).values == 0.0), var  # identical runs
    np.testing.assert_array_equal(
        ds["svag_agreement_train_loss"].sel(svag_l=2), ds["agreement_train_loss"]
    )
    assert "SVAG score over l" in validation_summary(ds)


def test_plateau_calibration_pools_the_seeds_and_the_baseline_reports_final_values(tmp_path):
    config = _with(sde={"delta": "plateau", "plateau_fraction": 0.5}, baseline={"schedule": 0.05})
    ds = validate(config, tmp_path)
    per_seed = ds["plateau_delta"].values
    assert per_seed.shape == (2,) and np.all(per_seed > 0) and per_seed[0] != per_seed[1]
    assert float(ds["sde_delta"]) == pytest.approx(per_seed.mean(), rel=1e-12)
    assert ds["run"].values.tolist() == ["SGD", "label-noise SDE", "baseline SGD"]
    # the final values are the last evaluation of each method's runs
    sgd_last = ds["train_loss"].sel(dynamics="SGD").isel(step=-1).values
    np.testing.assert_array_equal(ds["final_train_loss"].sel(run="SGD").values, sgd_last)
    # the baseline's smaller step moves less far from the initialization
    moved = ds["final_distance_from_init"]
    assert np.all(moved.sel(run="baseline SGD").values < moved.sel(run="SGD").values)
    assert "final value" in validation_summary(ds)
    # the baseline over the steps, and the SDE's gap to SGD on the scale of the baseline's
    last = ds["baseline_distance_from_init_mean"].isel(step=-1)
    assert float(last) == pytest.approx(float(moved.sel(run="baseline SGD").mean()), rel=1e-12)
    gap = ds["relative_gap_distance_from_init"]
    assert 0 < float(gap) < 1  # the SDE, at the large step, stays nearer SGD than eta 0.05
    assert " G " in validation_summary(ds).splitlines()[0] + " "


def test_calibration_window_takes_delta_from_a_plateau_inside_the_run(tmp_path):
    """sde.calibration_window = [a, b]: each seed's delta is 2 / K times the mean minibatch
    loss of steps int(a n) .. int(b n) - 1 of its SGD run, recomputed here by re-running
    that SGD run with validate's seeding (child i of seed -> network, SGD, SDE streams)."""
    config = _with(
        sgd={
            "n_steps": 8,
            "schedule": {"name": "step_decay", "lr": 0.2, "at": [0.5], "factors": [10.0]},
        },
        sde={"delta": "plateau", "calibration_window": [0.25, 0.5]},
    )
    ds = validate(config, tmp_path)
    expected = [
        2.0 * np.mean(run.batch_losses[2:4]) / 3 for run in validate_sgd_runs(config["sgd"])
    ]
    np.testing.assert_allclose(ds["plateau_delta"].values, expected, rtol=1e-12)
    assert float(ds["sde_delta"]) == pytest.approx(np.mean(expected), rel=1e-12)
    # the window differs from the default calibration (the last half of the run)
    default = validate(_with(**{**config, "sde": {"delta": "plateau"}}), tmp_path / "last")
    assert not np.allclose(default["plateau_delta"].values, expected, rtol=1e-3)


def test_plateau_delta_window_errors():
    data = teacher_images(n=8, n_test=4, input_shape=(1, 1, 2), n_classes=2, seed=0)
    run = train_sgd(MLP((1, 1, 2), [3], 2), data, schedule=0.1, n_steps=5, batch_size=4)
    assert plateau_delta(run, 2, window=(0.2, 0.6)) == pytest.approx(
        np.mean(run.batch_losses[1:3]), rel=1e-12
    )
    for bad in [(0.5, 0.5), (0.2,), (-0.1, 0.5), (0.2, True)]:
        with pytest.raises(ValueError, match="window must be two fractions"):
            plateau_delta(run, 2, window=bad)
    with pytest.raises(ValueError, match="holds no step of a 5-step run"):
        plateau_delta(run, 2, window=(0.1, 0.15))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"sgd": {"lr": 0.1}}, "unknown field"),
        ({"network": {"name": "vgg"}}, "name one of"),
        ({"sde": {"method": "ito"}}, "method one of"),
        ({"sde": {"l": 2}}, r"'sde' \(method 'label_noise'\): unknown field"),
        (
            {"sde": {"delta": -1.0}},
            "sde.delta must be a number >= 0, or calibrated from the SGD runs: 'plateau'",
        ),
        ({"sde": {"delta": "auto"}}, "sde.delta"),
        ({"sde": {"substeps": 0}}, "sde.substeps"),
        ({"sde": {"delta": "plateau", "calibration_window": [0.5, 0.25]}}, "calibration_window"),
        ({"sde": {"delta": "plateau", "calibration_window": 0.5}}, "calibration_window"),
        ({"sde": {"delta": 0.1, "calibration_window": [0.2, 0.5]}}, "needs delta = 'plateau'"),
        (
            {"sde": {"delta": "plateau", "plateau_fraction": 0.5, "calibration_window": [0, 1]}},
            "replaces plateau_fraction",
        ),
        ({"sgd": {"loss": "cross_entropy"}}, "set sgd.loss = 'square'"),
        ({"sgd": {"momentum": 0.9}}, r"models plain SGD, but sgd sets \['momentum'\]"),
        ({"sgd": {"label_noise": 0.1}}, r"models plain SGD, but sgd sets \['label_noise'\]"),
        (
            {"sgd": {"momentum": 0.5, "weight_decay": 0.1}},
            r"sgd sets \['momentum'\]: remove them \(0 / off; weight_decay is modelled\)",
        ),
        ({"n_seeds": 1}, "n_seeds"),
        ({"network": {"seed": 3}}, "give no 'seed'"),
        ({"compare": {"n_boot": 1}}, "compare.n_boot"),
        ({"baseline": {"batch_size": 0}}, "baseline.batch_size"),
        ({"extra": 1}, "unknown field"),
        ({"sgd": {"eval_every": 2}}, r"options \['eval_every'\] in the top-level \[evaluation\]"),
        ({"evaluation": {"every": 2}}, r"'evaluation': unknown field"),
        ({"evaluation": {"max_units": 0}}, r"'evaluation': max_units must be an integer >= 1"),
        ({"evaluation": {"feature_threshold": 2.0}}, "'evaluation': .*threshold"),
        ({"sgd": {"augmentation": "crop"}}, "sgd.augmentation must be true, false or a table"),
        ({"sgd": {"augmentation": {"pad": 2}}}, r"'sgd.augmentation': unknown field"),
        ({"sgd": {"augmentation": {"padding": -1}}}, "sgd.augmentation: padding must be"),
        ({"sgd": {"augmentation": True}}, r"models plain SGD, but sgd sets \['augmentation'\]"),
    ],
)
def test_a_bad_config_is_refused_before_any_work(tmp_path, changes, match):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        validate(_with(**changes), out)
    assert not out.exists()


def test_svag_config_checks(tmp_path):
    base = _with(sgd={"loss": "cross_entropy"})
    with pytest.raises(ValueError, match=r"sde\.l must be"):
        check_validation_config({**base, "sde": {"method": "svag", "l": [0, 1]}})
    with pytest.raises(ValueError, match=r"sde\.l must be"):
        check_validation_config({**base, "sde": {"method": "svag", "l": []}})
    checked = check_validation_config({**base, "sde": {"method": "svag", "l": 4}})
    assert checked["sde"]["l"] == [4] and checked["n_seeds"] == 2


def test_load_validation_config_errors(tmp_path):
    with pytest.raises(ValueError, match="no built-in validation config 'nope'"):
        load_validation_config("nope")
    with pytest.raises(ValueError, match="does not exist"):
        load_validation_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("data = {name = 'digits'\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_validation_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[data]\nname = 'digits'\n[network]\nname = 'mlp'\n[sgd]\nlr = 1\n")
    with pytest.raises(ValueError, match="unknown field"):
        load_validation_config(unknown)


def _tiny_digits(config, n_steps, eval_every):
    """A digits config shrunk to test size: 97 training images, a width-8 MLP, 2 seeds."""
    config["data"]["n_test"] = 1700
    config["network"]["widths"] = [8]
    config["sgd"].update(n_steps=n_steps, batch_size=16)
    config["evaluation"].update(eval_every=eval_every, metrics_size=50)
    config["sde"]["chunk_size"] = 50
    config.update(n_seeds=2, compare={"n_boot": 5, "n_perm": 5})
    return config


def test_the_default_digits_config_runs_with_tiny_overrides(tmp_path):
    """The default config (validate_digits.toml, the weight-decay recipe): a large-step
    phase of 3000 of its 4000 steps at eta 0.8, weight decay in SGD and SDE, the SDE on
    the SGD runs' noise-trace path; at tiny size every run, the path, the phase
    measures and the baseline's relative gaps are finite."""
    config = load_validation_config("digits")
    assert load_validation_config("validate_digits") == config
    assert config["data"]["name"] == "digits"
    assert config["sde"]["delta"] == "noise_trace_path"
    schedule = as_schedule(config["sgd"]["schedule"])
    assert large_step_phase(schedule.values(config["sgd"]["n_steps"])) == 3000
    assert schedule.peak(4000) == 0.8 and config["sgd"]["weight_decay"] == 0.008
    assert config["baseline"] == {"schedule": 0.004}
    ds = validate(_tiny_digits(config, n_steps=40, eval_every=20), tmp_path)
    assert ds["run"].values.tolist() == ["SGD", "label-noise SDE", "baseline SGD"]
    assert ds["sde_delta"].dims == ("sgd_step",) and np.all(ds["sde_delta"].values > 0)
    assert "final_feature_sparsity" in ds
    assert np.isfinite(ds["relative_gap_distance_from_init"].values).all()
    assert np.isfinite(ds["final_phase_loss"].values).all()
    assert np.isfinite(ds["final_late_loss_change"].values).all()
    assert ds["final_late_loss_change"].dims == ("run", "seed")
    assert json.loads(ds.attrs["validation_config"])["sgd"]["weight_decay"] == 0.008
    assert (tmp_path / "validation.png").is_file()


def test_the_interpolating_digits_config_runs_with_tiny_overrides(tmp_path):
    """validate_digits_interpolating.toml (no weight decay, constant steps)."""
    config = load_validation_config("digits_interpolating")
    assert config["sgd"]["schedule"] == 0.1 and config["baseline"]["schedule"] == 0.02
    assert "weight_decay" not in config["sgd"] and config["sde"]["delta"] == "plateau"
    config["sgd"]["schedule"] = 0.2
    ds = validate(_tiny_digits(config, n_steps=4, eval_every=2), tmp_path)
    assert ds["run"].values.tolist() == ["SGD", "label-noise SDE", "baseline SGD"]
    assert float(ds["sde_delta"]) > 0 and "final_feature_sparsity" in ds


@pytest.mark.slow
def test_the_default_digits_config_reproduces_the_plateau_picture(tmp_path):
    """The full default config (~6.5 min on 2 cores): over the large-step phase the large
    step's loss holds (change within 5 % in every seed) above the small step's in every
    seed while the small step's falls; it ends sparser (penultimate) and with a lower
    mean test error; the label-noise SDE on SGD's noise-trace path follows the
    penultimate sparsity: its worst gap to SGD is under a tenth of the small step's (G,
    the header's 0.03) and its score within 1.5 times its null level (1.87 and 1.7),
    while in the first block it carries almost none of SGD's unit death (G > 0.8)."""
    ds = validate(load_validation_config("digits"), tmp_path)
    change, level = ds["final_late_loss_change"], ds["final_phase_loss"]
    assert np.all(np.abs(change.sel(run="SGD").values) < 0.05)
    assert np.all(change.sel(run="baseline SGD").values < -0.1)
    assert np.all(level.sel(run="SGD").values > level.sel(run="baseline SGD").values)
    sparsity = ds["final_feature_sparsity"].sel(block="block2").mean("seed")
    assert float(sparsity.sel(run="SGD")) < float(sparsity.sel(run="baseline SGD")) / 4
    assert float(ds["relative_gap_feature_sparsity"].sel(block="block2")) < 0.1
    score = ds["agreement_feature_sparsity"].sel(block="block2")
    assert float(score) < 1.5 * float(ds["agreement_feature_sparsity_null"].sel(block="block2"))
    assert float(ds["relative_gap_dead_units"].sel(block="block1")) > 0.8
    error = ds["final_test_error"].mean("seed")
    assert float(error.sel(run="SGD")) < float(error.sel(run="baseline SGD"))


def test_the_validate_command_end_to_end(tmp_path):
    """``sgdsde validate CONFIG --out DIR``: the summary printed, the two files written,
    a second run refused without --overwrite (one error line, exit 2)."""
    import tomllib

    from typer.testing import CliRunner

    from sgdsde.cli import app

    config = tmp_path / "tiny.toml"
    lines = []
    for table, values in TINY_CONFIG.items():
        if not isinstance(values, dict):
            lines.append(f"{table} = {values!r}")
    for table, values in TINY_CONFIG.items():
        if isinstance(values, dict):
            lines.append(f"[{table}]")
            lines += [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
    config.write_text("\n".join(lines) + "\n")
    assert tomllib.loads(config.read_text()) == TINY_CONFIG
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["validate", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "train_loss" in result.output and "wrote" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["validation.nc", "validation.png"]
    again = CliRunner().invoke(app, ["validate", str(config), "--out", str(out)])
    assert again.exit_code == 2
    assert [line for line in again.output.splitlines() if line.startswith("error:")]


def test_evaluation_and_augmentation_tables_reach_the_runs(tmp_path):
    """The [evaluation] table is one EvaluationOptions shared by SGD and the SDE; a
    table sgd.augmentation is an Augmentation (SVAG takes it, as SGD)."""
    config = _with(
        sgd={"loss": "cross_entropy", "augmentation": {"padding": 1, "flip": False}},
        sde={"method": "svag", "l": [1]},
        evaluation={"eval_every": 1, "max_units": 4},
    )
    del config["sde"]["delta"], config["sde"]["substeps"]
    ds = validate(config, tmp_path)
    assert ds["step"].values.tolist() == [0, 1, 2, 3, 4]  # eval_every = 1 for both methods
    methods = json.loads(ds.attrs["config"])["methods"]
    for method in methods.values():
        assert method["evaluation"]["max_units"] == 4
        assert method["augmentation"] == {"padding": 1, "flip": False}
    # augmentation true: the paper's crop and flip; false: off
    assert augmentation(True) == Augmentation() and augmentation(False) is None
    assert evaluation_options({"eval_every": 7}) == EvaluationOptions(eval_every=7)


def test_the_resnet_synthetic_config_loads_and_resolves_its_device():
    config = load_validation_config("resnet_synthetic")
    assert config["network"] == {"name": "resnet18", "width": 16}
    assert config["data"]["input_shape"] == [3, 32, 32] and config["device"] == "auto"
    checked = check_validation_config(copy.deepcopy(config))
    assert checked["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert check_validation_config(_with(device="cpu"))["device"] == "cpu"
    with pytest.raises(ValueError, match="'device' \\(or 'auto'\\)"):
        check_validation_config(_with(device="gpu"))


@pytest.mark.slow
def test_the_resnet_synthetic_config_runs_at_tiny_size(tmp_path):
    config = load_validation_config("resnet_synthetic")
    config["data"].update(n=32, n_test=8)
    config["network"]["width"] = 2
    config["sgd"].update(n_steps=4, batch_size=8)
    config["evaluation"].update(eval_every=2, metrics_size=16)
    config["sde"]["chunk_size"] = 16
    config.update(n_seeds=2, device="cpu", compare={"n_boot": 5, "n_perm": 5})
    ds = validate(config, tmp_path)
    assert ds["dynamics"].values.tolist() == ["SGD", "label-noise SDE"]
    assert ds["block"].values.tolist() == [f"block{i}" for i in range(1, 6)]
    assert np.isfinite(ds["train_loss_mean"].values).all() and float(ds["sde_delta"]) > 0
    np.testing.assert_allclose(ds["time"].values, config["sgd"]["schedule"] * np.array([0, 2, 4]))


def test_late_loss_change_tells_a_stabilized_loss_from_a_descending_one():
    data = teacher_images(n=8, n_test=4, input_shape=(1, 1, 2), n_classes=2, seed=0)
    run = train_sgd(MLP((1, 1, 2), (3,), n_outputs=2), data, schedule=0.1, n_steps=8, batch_size=4)
    descending = dataclasses.replace(run, batch_losses=np.array([5, 4, 4, 3, 2, 2, 1, 1.0]))
    assert late_loss_change(descending) == pytest.approx(-0.5)  # mean(1, 1) / mean(2, 2) - 1
    flat = dataclasses.replace(run, batch_losses=np.array([5, 4, 3, 2, 1, 2, 2, 1.0]))
    assert late_loss_change(flat) == pytest.approx(0.0)
    assert np.isnan(late_loss_change(dataclasses.replace(flat, diverged_step=6)))
    assert np.isnan(late_loss_change(dataclasses.replace(flat, batch_losses=np.ones(3))))
    assert np.isnan(phase_loss(dataclasses.replace(flat, batch_losses=np.ones(3))))


def test_large_step_phase_ends_at_the_first_decay_after_the_peak():
    assert large_step_phase(np.full(7, 0.1)) == 7  # constant: the whole run
    assert large_step_phase([0.1, 0.1, 0.1, 0.01, 0.01]) == 3  # step / 10 at 3
    # a warm-up (staircase or exponential) up to the peak, then the decay
    assert large_step_phase([0.05, 0.1, 0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01]) == 6
    assert large_step_phase([0.01, 0.02, 0.04, 0.08, 0.016]) == 4
    with pytest.raises(ValueError, match="step_sizes must be a non-empty 1-d array"):
        large_step_phase([])


def test_late_loss_change_and_phase_loss_read_the_large_step_phase():
    """A step decay at 8 of 12 steps: the measures read steps 0 .. 7 (flat at 2 after a
    descent: change 0, level 2), not the decayed tail; any window by ``stop``."""
    data = teacher_images(n=8, n_test=4, input_shape=(1, 1, 2), n_classes=2, seed=0)
    schedule = {"name": "step_decay", "lr": 0.1, "at": [0.7], "factors": [10.0]}
    run = train_sgd(
        MLP((1, 1, 2), (3,), n_outputs=2), data, schedule=schedule, n_steps=12, batch_size=4
    )
    losses = np.array([5, 4, 3, 3, 2, 2, 2, 2, 0.5, 0.4, 0.3, 0.2])
    run = dataclasses.replace(run, batch_losses=losses)
    assert large_step_phase(run.lrs) == 8
    assert late_loss_change(run) == pytest.approx(0.0)  # mean(2, 2) / mean(2, 2) - 1
    assert phase_loss(run) == pytest.approx(2.0)  # steps 6, 7
    # the whole run: mean(0.4, 0.3, 0.2) / mean(2, 2, 0.5) - 1
    assert late_loss_change(run, stop=12) == pytest.approx(0.3 / 1.5 - 1)
    assert phase_loss(run, stop=12) == pytest.approx(np.mean(losses[8:]))
    assert np.isnan(phase_loss(dataclasses.replace(run, diverged_step=7)))
    assert phase_loss(dataclasses.replace(run, diverged_step=9)) == pytest.approx(2.0)
