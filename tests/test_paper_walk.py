"""Xing et al. (2018) walk metrics on toys: the quadratic window against its closed
form, the matched isotropic noise against enumeration, the gallery kind."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sgdsde.data import linear_teacher_student_data
from sgdsde.experiments import EXPERIMENTS, load_config
from sgdsde.experiments.config import ConfigError
from sgdsde.experiments.paper_walk import Walk, minibatch_noise_variance
from sgdsde.models import make_model
from sgdsde.theory import walk_window


def test_walk_window():
    assert walk_window(2.0) == (0.5, 1.0)
    with pytest.raises(ValueError, match="lam must be a curvature > 0"):
        walk_window(0.0)


def test_minibatch_noise_variance_against_enumeration():
    data = linear_teacher_student_data(n=5, d=3, noise_std=0.3, n_test=2, seed=2)
    model = make_model("two_layer_relu", d=3, m=4)
    theta = model.init([np.random.default_rng(s) for s in range(2)])
    g = model.residuals(theta, data.X, data.y)[..., None] * model.jacobian(theta, data.X)
    for batch in (1, 2, 5):
        means = np.array(
            [g[:, list(S)].mean(axis=1) for S in itertools.combinations(range(5), batch)]
        )
        exact = means.var(axis=0).sum(axis=-1) / model.n_params  # uniform over the subsets
        np.testing.assert_allclose(
            minibatch_noise_variance(model, theta, data, batch), exact, rtol=1e-12, atol=1e-15
        )


def _config(**changes):
    cfg = load_config("paper_walk")
    cfg.update(n_seeds=2, n_steps=60, save_every=2, claims=[], published=[])
    cfg["problems"]["quadratic"]["n_steps"] = 30
    cfg.update(changes)
    return cfg


def _quadratic_only(cfg):
    cfg["problems"] = {"quadratic": cfg["problems"]["quadratic"]}
    cfg["sweeps"] = [s for s in cfg["sweeps"] if s["problem"] == "quadratic"]
    return cfg


def test_quadratic_window_against_the_closed_form():
    """GD on L = (lambda/2)||theta||^2, lambda = 2: e_{k+1} = (1 - eta lambda) e_k, so on
    the 11-point segment grid the floor is at the alpha nearest 1/(eta lambda), the
    cosine is sign(1 - eta lambda) and the contraction |1 - eta lambda|, exactly."""
    kind = Walk()
    ds = kind.run(kind.prepare(_quadratic_only(_config())))
    alphas = np.linspace(0, 1, 11)
    for lr in (0.25, 0.45, 0.6, 0.75, 0.95, 1.05):
        run = ds.sel(run=f"quadratic GD lr={lr:g}")
        c = 1 - 2 * lr
        f = (1 - alphas * (1 - c)) ** 2  # the segment loss over L(theta_t)
        np.testing.assert_allclose(run["loss_rate"].values, abs(c), rtol=1e-9)
        np.testing.assert_allclose(run["update_cosine"].values, np.sign(c), atol=1e-12)
        interior = float(f.min() < min(f[0], f[-1]))
        np.testing.assert_array_equal(run["interior_fraction"].values, interior)
        np.testing.assert_allclose(run["relative_height"].values, 1 - f.min(), rtol=1e-9)
        np.testing.assert_allclose(run["sharpness"].values[np.isfinite(run["sharpness"])], 2.0)
    assert float(ds["lambda0"].sel(problem_name="quadratic")) == pytest.approx(2.0)
    noisy = ds.sel(run="quadratic GD+noise lr=0.75 B=1")
    assert np.all(noisy["update_cosine"].values > -0.99)  # noise breaks the exact bounce
    assert kind.plot(ds) is not None


def test_valley_and_relu_small_run():
    kind = EXPERIMENTS.make("paper_walk")
    cfg = _config()
    cfg["sweeps"] = [s for s in cfg["sweeps"] if s["problem"] != "quadratic"]
    cfg["problems"].pop("quadratic")
    for sweep in cfg["sweeps"]:
        sweep["lr"] = sweep["lr"][:2]
    cfg["claims"] = [
        {
            "text": "GD never crosses the valley floor late",
            "quantity": "interior_fraction",
            "relation": "below",
            "runs": ["valley GD lr=0.2", "valley GD lr=0.5"],
            "value": 0.01,
        }
    ]
    ds = kind.run(kind.prepare(cfg))
    assert set(ds["problem_name"].values) == {"valley", "relu"}
    assert ds.sizes == {"run": 20, "seed": 2, "problem_name": 2}  # 2 lr x 5 dynamics x 2
    valley = ds.sel(run=ds["problem"].values == "valley")
    assert float(ds["lambda0"].sel(problem_name="valley")) > 0
    sgd = valley.sel(run="valley SGD lr=0.2 B=5")
    assert np.all(sgd["interior_fraction"].values > 0)
    assert np.all(valley.sel(run="valley GD lr=0.2")["interior_fraction"].values == 0)
    assert "| GD never crosses the valley floor late | yes (all 2 seeds) |" in kind.table(ds)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"problem": "bowl"}, "sweeps\\[0\\].problem: unknown problem 'bowl'"),
        ({"batch_size": [2]}, "sweeps\\[0\\].batch_size: gd is full batch"),
        ({"lr": [0.1, -1]}, "sweeps\\[0\\].lr: must be a non-empty list of numbers > 0"),
        ({"method": "adam"}, "sweeps\\[0\\].method: must be one of"),
    ],
)
def test_sweep_errors_name_the_field(change, message):
    cfg = _config()
    cfg["sweeps"][0] = {**cfg["sweeps"][0], **change}
    with pytest.raises(ConfigError, match=message):
        Walk().prepare(cfg)


def test_other_config_errors():
    cfg = _config()
    cfg["sweeps"][1] = {**cfg["sweeps"][1], "batch_size": [11]}
    with pytest.raises(ConfigError, match="batch_size: 11 exceeds n = 10"):
        Walk().prepare(cfg)
    cfg = _config(window=0)
    with pytest.raises(ConfigError, match=r"window: must be in \(0, 1\]"):
        Walk().prepare(cfg)
    cfg = _config()
    cfg["sweeps"].append(dict(cfg["sweeps"][0]))
    with pytest.raises(ConfigError, match="appears twice"):
        Walk().prepare(cfg)
    cfg = _config()
    cfg["problems"]["quadratic"]["model"] = {"name": "nope"}
    with pytest.raises(ConfigError, match=r"problems\.quadratic: model\.name: must be one of"):
        Walk().prepare(cfg)
