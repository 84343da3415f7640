"""Data generators (every entry of ``GENERATORS``): shapes, determinism by seed, a value
property each, and validation of ``RegressionData`` (an empty test set is refused)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sgdsde.data import (
    GENERATORS,
    RegressionData,
    linear_teacher_student_data,
    make_data,
    quartic_well_data,
    tanh_neuron_data,
)

# Small options per generator: (options, n, n_test, d, seeded)
SMALL = {
    "sparse_regression": (dict(n=6, d=5, k=2, n_test=4), 6, 4, 5, True),
    "sparse_regression_notebook": (dict(n=6, d=5, k=2, n_test=4), 6, 4, 5, True),
    "teacher_student_sphere": (dict(n=6, d=3, teacher_width=2, n_test=4), 6, 4, 3, True),
    "deep_relu_teacher": (dict(n=6, d=3, widths=[2, 2], n_test=4), 6, 4, 3, True),
    "regression_1d": ({}, 12, 12, 1, False),
    "quartic_well": (dict(mu=2.0), 1, 1, 1, False),
    "tanh_neuron": (dict(n=6, n_test=4), 6, 4, 1, True),
    "linear_teacher_student": (dict(n=6, d=3, n_test=4), 6, 4, 3, True),
}


def test_every_generator_has_a_case():
    assert set(GENERATORS) == set(SMALL), f"add a case for {set(GENERATORS) ^ set(SMALL)}"
    # the ones the model docstrings point to
    assert {"quartic_well", "tanh_neuron", "linear_teacher_student"} <= set(GENERATORS)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_shapes_config_and_determinism(name):
    options, n, n_test, d, seeded = SMALL[name]
    data = make_data(name, **options)
    assert data.X.shape == (n, d) and data.y.shape == (n,)
    assert data.X_test.shape == (n_test, d) and data.y_test.shape == (n_test,)
    assert data.config["generator"] == name
    json.dumps(data.config)  # written into every dataset's attrs
    again = make_data(name, **options)
    for key in ("X", "y", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(data, key), getattr(again, key))
    if seeded:
        assert isinstance(data.config["seed"], int)  # the default seed, recorded
        other = make_data(name, **options, seed=12345)
        assert other.config["seed"] == 12345
        assert not np.array_equal(data.X, other.X)
        seq = make_data(name, **options, seed=np.random.SeedSequence(3))
        np.testing.assert_array_equal(
            seq.X, make_data(name, **options, seed=np.random.SeedSequence(3)).X
        )


def test_make_data_errors_name_the_choices():
    with pytest.raises(ValueError, match=r"unknown data generator 'nope'.*quartic_well"):
        make_data("nope")
    with pytest.raises(ValueError, match="bad arguments for data generator 'tanh_neuron'"):
        make_data("tanh_neuron", width=3)


def test_quartic_well_data():
    data = quartic_well_data(2.0)
    np.testing.assert_array_equal(data.X, [[1.0]])
    np.testing.assert_allclose(data.y, [2.0 / np.sqrt(2.0)], rtol=1e-15)
    np.testing.assert_array_equal(data.X_test, data.X)
    assert make_data("quartic_well", mu=2.0).y[0] == data.y[0]
    with pytest.raises(ValueError, match="mu"):
        quartic_well_data(float("nan"))


def test_tanh_neuron_data_statistics():
    """x ~ N(0, 1), y = slope x + noise_std N(0, 1) (Chen et al. 2023, Fig. 2): with
    n = 20000 the sample moments lie within 5 standard errors of the truth."""
    n, sigma, slope = 20000, 0.3, 1.5
    data = tanh_neuron_data(n=n, noise_std=sigma, slope=slope, n_test=50, seed=7)
    x, noise = data.X[:, 0], data.y - slope * data.X[:, 0]
    se = 5.0 / np.sqrt(n)
    assert abs(x.mean()) < se and abs(x.var() - 1.0) < 5.0 * np.sqrt(2.0 / n)
    assert abs(noise.mean()) < sigma * se
    assert abs(noise.std() / sigma - 1.0) < 5.0 / np.sqrt(2.0 * n)
    assert abs(np.corrcoef(x, noise)[0, 1]) < se
    np.testing.assert_allclose(data.y_test, slope * data.X_test[:, 0], rtol=1e-15)
    x, y = data.X[:, 0], data.y
    assert data.config["collapse_threshold"] == pytest.approx(np.dot(x, y) / np.dot(x, x))
    assert abs(data.config["collapse_threshold"] - slope) < 5 * sigma / np.sqrt(n)
    # the paper's setting by default: 32 points, y = x + 0.1 N(0, 1)
    default = tanh_neuron_data()
    assert default.n == 32 and np.std(default.y - default.X[:, 0]) < 0.2
    with pytest.raises(ValueError, match="noise_std"):
        tanh_neuron_data(noise_std=-1.0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        tanh_neuron_data(n=0)


def test_linear_teacher_student_data():
    spectrum = np.array([4.0, 1.0, 0.25])
    data = linear_teacher_student_data(n=20000, d=3, spectrum=spectrum, teacher=[1, -1, 0.5])
    np.testing.assert_allclose(data.X.var(axis=0), spectrum, rtol=0.05)
    np.testing.assert_allclose(data.y, data.X @ data.beta_star, atol=1e-12)
    with pytest.raises(ValueError, match="positive integer"):
        linear_teacher_student_data(n=True)


def test_sparse_regression_teacher():
    data = make_data("sparse_regression", n=50, d=20, k=4, n_test=30, seed=1)
    beta = data.beta_star
    assert np.count_nonzero(beta) == 4 and np.all(beta[:4] > 0)
    np.testing.assert_allclose(np.linalg.norm(beta), 1.0, rtol=1e-15)
    np.testing.assert_allclose(data.y, data.X @ beta, rtol=1e-15)


def test_teacher_student_sphere_on_the_sphere():
    data = make_data("teacher_student_sphere", n=10, d=3, teacher_width=2, n_test=5)
    np.testing.assert_allclose(np.linalg.norm(data.X, axis=1), 1.0, rtol=1e-15)
    W, a = np.array(data.config["teacher"]["W"]), np.array(data.config["teacher"]["a"])
    np.testing.assert_allclose(data.y, np.maximum(data.X @ W.T, 0.0) @ a, rtol=1e-15)


# ------------------------------------------------------------------ RegressionData


def test_an_empty_test_set_is_refused_with_the_fix():
    """Every run records the test loss, a mean over the test set: an empty one would be
    NaN with a numpy warning in every row, so RegressionData refuses it up front."""
    X, y = np.ones((3, 2)), np.ones(3)
    with pytest.raises(ValueError, match=r"test set is empty.*X_test=X, y_test=y"):
        RegressionData(X, y, np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="training set is empty"):
        RegressionData(np.zeros((0, 2)), np.zeros(0), X, y)
    with pytest.raises(ValueError, match="n_test must be a positive integer"):
        make_data("sparse_regression", n_test=0)


def test_regression_data_validates_shapes_and_values():
    X, y = np.ones((3, 2)), np.ones(3)
    with pytest.raises(ValueError, match="NaN or inf"):
        RegressionData(X, np.array([1.0, np.nan, 0.0]), X, y)
    with pytest.raises(ValueError, match=r"X_test must be \(n_test, 2\)"):
        RegressionData(X, y, np.ones((3, 3)), y)
    with pytest.raises(ValueError, match=r"y_test must be \(3,\)"):
        RegressionData(X, y, X, np.ones(2))
    one_d = RegressionData(np.arange(3.0), y, np.arange(2.0), np.ones(2))
    assert one_d.X.shape == (3, 1) and one_d.d == 1 and one_d.n == 3
