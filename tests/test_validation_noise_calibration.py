"""The trace-matched label-noise variance (``noise_trace_delta``): exact on a linear
network (closed-form Jacobians), the residual variance for isotropic residuals
independent of the Jacobians (within a sampling error derived from m), invariant to
the order and chunking of the examples; its evaluation record leaves a run bit for bit
unchanged; and the ``sde.delta = "noise_trace"`` calibration of ``validate``."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from validation_support import validate_sgd_runs

from sgdsde.validation import MLP, EvaluationOptions, teacher_images, train_sgd, validate
from sgdsde.validation.data import metrics_subset
from sgdsde.validation.runner import check_validation_config
from sgdsde.validation.simulators import (
    loss_delta_path,
    noise_trace_delta,
    noise_trace_delta_path,
    noise_trace_plateau_delta,
    plateau_delta,
    simulate_label_noise_sde,
)
from sgdsde.validation.trainer import Evaluator

M, D, K = 40, 6, 3


def _linear(seed: int) -> torch.nn.Module:
    """f(x) = W x, bias-free, float64: J_i = I_K (x) x_i^T (row k: x_i in block k)."""
    torch.manual_seed(seed)  # the test's own network; nothing in the package draws it
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, K, bias=False))
    return net.double()


def _closed_form(W: np.ndarray, x: np.ndarray, targets: np.ndarray) -> float:
    """The trace ratio of a linear network: J_i^T r_i = r_i x_i^T, ||J_i||_F^2 = K ||x_i||^2."""
    r = x @ W.T - targets
    gradients = np.einsum("ik,id->ikd", r, x).reshape(len(x), -1)
    noise = (gradients**2).sum(1).mean() - (gradients.mean(0) ** 2).sum()
    return noise / (K * (x**2).sum(1).mean())


def _images(seed: int, m: int = M) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((m, 1, 2, 3)))


def test_linear_network_matches_the_closed_form_trace_ratio():
    net = _linear(0)
    X = _images(1)
    y = torch.from_numpy(np.random.default_rng(2).integers(0, K, M))
    W, x = net[1].weight.detach().numpy(), X.reshape(M, -1).numpy()
    expected = _closed_form(W, x, np.eye(K)[y.numpy()])
    assert noise_trace_delta(net, X, y, chunk_size=7) == pytest.approx(expected, rel=1e-10)
    # real targets (m, K) in place of class labels
    targets = torch.from_numpy(np.random.default_rng(3).standard_normal((M, K)))
    expected = _closed_form(W, x, targets.numpy())
    assert noise_trace_delta(net, X, targets) == pytest.approx(expected, rel=1e-10)


def test_isotropic_residuals_independent_of_the_jacobian_give_their_variance():
    """Targets f(x_i) + s z_i, z_i ~ N(0, I_K): r_i = -s z_i independent of J_i, so the
    estimate is s^2 (1 - 1/m) in expectation; its standard deviation is
    s^2 sqrt(2 sum_i ||J_i J_i^T||_F^2) / sum_i ||J_i||_F^2 (Gaussian quadratic forms;
    J_i J_i^T = ||x_i||^2 I_K) to leading order; tolerance 5 of them."""
    m, s = 4000, 0.7
    net = _linear(4)
    X = _images(5, m)
    with torch.no_grad():
        outputs = net(X)
    z = torch.from_numpy(np.random.default_rng(6).standard_normal((m, K)))
    value = noise_trace_delta(net, X, outputs + s * z, chunk_size=512)
    norms = (X.reshape(m, -1).numpy() ** 2).sum(1)
    sd = s**2 * np.sqrt(2 * K * (norms**2).sum()) / (K * norms.sum())
    assert abs(value - s**2 * (1 - 1 / m)) < 5 * sd
    assert 5 * sd < 0.1 * s**2  # the check is sharp


def test_invariant_to_the_order_and_the_chunking_of_the_examples():
    net = MLP((1, 2, 3), widths=[5, 4], n_outputs=K, seed=0).double()
    X = _images(7)
    y = torch.from_numpy(np.random.default_rng(8).integers(0, K, M))
    reference = noise_trace_delta(net, X, y, chunk_size=M)
    assert reference > 0
    order = torch.from_numpy(np.random.default_rng(9).permutation(M))
    assert noise_trace_delta(net, X[order], y[order]) == pytest.approx(reference, rel=1e-12)
    for chunk in (1, 3, 16, 1000):
        assert noise_trace_delta(net, X, y, chunk_size=chunk) == pytest.approx(reference, rel=1e-12)


def test_differs_from_the_mean_squared_residual_where_residuals_follow_the_jacobian():
    """A linear network whose residuals grow as ||x_i||^2: SGD's noise weighs them by
    ||x_i||^2 (= ||J_i||_F^2 / K), so delta_trace exceeds 2 L / K = mean ||r_i||^2 / K,
    in expectation by E||x||^6 / (E||x||^2 E||x||^4) = (D + 4) / D = 5/3."""
    m = 2000
    net = _linear(10)
    X = _images(11, m)
    with torch.no_grad():
        outputs = net(X)
    scale = (X.reshape(m, -1) ** 2).sum(dim=1, keepdim=True)
    z = torch.from_numpy(np.random.default_rng(12).standard_normal((m, K)))
    targets = outputs + scale * z
    mean_square = float(((scale * z) ** 2).sum(1).mean()) / K
    W, x = net[1].weight.detach().numpy(), X.reshape(m, -1).numpy()
    value = noise_trace_delta(net, X, targets)
    assert value == pytest.approx(_closed_form(W, x, targets.numpy()), rel=1e-10)
    assert value > 1.3 * mean_square


def test_bad_arguments_name_the_fix():
    net = _linear(0)
    X, y = _images(1), torch.zeros(M, dtype=torch.int64)
    with pytest.raises(ValueError, match="chunk_size"):
        noise_trace_delta(net, X, y, chunk_size=0)
    with pytest.raises(ValueError, match="same m >= 1 examples"):
        noise_trace_delta(net, X, y[:-1])
    with pytest.raises(ValueError, match="torch tensors"):
        noise_trace_delta(net, X.numpy(), y)
    with pytest.raises(ValueError, match="noise_delta_chunk"):
        EvaluationOptions(noise_delta_chunk=0)
    with pytest.raises(ValueError, match="noise_delta must be True or False"):
        EvaluationOptions(noise_delta=1)


DATA = teacher_images(n=24, n_test=8, input_shape=(1, 2, 2), n_classes=3, seed=0)
RUN = dict(schedule=0.2, n_steps=6, batch_size=4, loss="square", weight_decay=0.01)


def test_the_record_leaves_the_run_bit_identical_and_is_the_function():
    net = MLP((1, 2, 2), widths=[6], n_outputs=3, seed=1)
    off = EvaluationOptions(eval_every=2, metrics_size=16)
    on = dataclasses.replace(off, noise_delta=True, noise_delta_chunk=5)
    plain = train_sgd(net, DATA, evaluation=off, seed=3, **RUN)
    recorded = train_sgd(net, DATA, evaluation=on, seed=3, **RUN)
    assert plain.noise_delta is None
    np.testing.assert_array_equal(recorded.batch_losses, plain.batch_losses)
    np.testing.assert_array_equal(recorded.train_loss, plain.train_loss)
    for a, b in zip(recorded.network.parameters(), plain.network.parameters(), strict=True):
        assert torch.equal(a, b)
    assert recorded.noise_delta.shape == (4,) and np.all(recorded.noise_delta > 0)
    X, y = metrics_subset(DATA, 16)
    last = noise_trace_delta(
        plain.network, torch.from_numpy(X).float(), torch.from_numpy(y), chunk_size=16
    )
    assert recorded.noise_delta[-1] == pytest.approx(last, rel=1e-6)  # float32 network
    ds = recorded.to_dataset()
    np.testing.assert_array_equal(ds["noise_delta"].values[0], recorded.noise_delta)
    assert "trace" in ds["noise_delta"].attrs["long_name"] and ds["noise_delta"].attrs["units"]
    assert "noise_delta" not in plain.to_dataset()
    # a simulator records it too, harmlessly
    sde = simulate_label_noise_sde(
        net, DATA, delta=0.01, evaluation=on, seed=4, **{k: RUN[k] for k in RUN if k != "loss"}
    )
    assert sde.noise_delta.shape == (4,) and np.all(np.isfinite(sde.noise_delta))


def test_the_record_needs_the_square_loss():
    net = MLP((1, 2, 2), widths=[6], n_outputs=3, seed=1)
    with pytest.raises(ValueError, match="needs the square loss"):
        Evaluator(net, DATA, loss="cross_entropy", options=EvaluationOptions(noise_delta=True))


def test_plateau_average_of_the_record_and_its_errors():
    net = MLP((1, 2, 2), widths=[6], n_outputs=3, seed=1)
    options = EvaluationOptions(eval_every=1, metrics_size=16, noise_delta=True)
    run = train_sgd(net, DATA, evaluation=options, seed=3, **{**RUN, "n_steps": 8})
    # steps int(0.25 * 8) .. int(0.75 * 8) - 1 = 2 .. 5: the iterates theta_2 .. theta_5
    assert noise_trace_plateau_delta(run, window=(0.25, 0.75)) == pytest.approx(
        np.mean(run.noise_delta[2:6]), rel=1e-12
    )
    assert noise_trace_plateau_delta(run, 0.5) == pytest.approx(
        np.mean(run.noise_delta[4:8]), rel=1e-12
    )
    sparse = dataclasses.replace(options, eval_every=4)  # evaluations at steps 0, 4, 8
    sparse = train_sgd(net, DATA, evaluation=sparse, seed=3, **{**RUN, "n_steps": 8})
    with pytest.raises(ValueError, match="smaller eval_every"):
        noise_trace_plateau_delta(sparse, window=(0.65, 0.95))  # steps 5 .. 6
    without = train_sgd(net, DATA, evaluation=EvaluationOptions(eval_every=4), seed=3, **RUN)
    with pytest.raises(ValueError, match=r"EvaluationOptions\(noise_delta=True\)"):
        noise_trace_plateau_delta(without)


TINY = {
    "data": {"name": "teacher", "n": 24, "n_test": 8, "input_shape": [1, 2, 2], "n_classes": 3},
    "network": {"name": "mlp", "widths": [6]},
    "sgd": {"schedule": 0.2, "n_steps": 8, "batch_size": 4, "loss": "square"},
    "evaluation": {"eval_every": 2},
    "sde": {"method": "label_noise", "delta": "noise_trace", "calibration_window": [0.25, 1.0]},
    "n_seeds": 2,
    "compare": {"n_boot": 10, "n_perm": 10},
}


def test_validate_calibrates_delta_from_the_sgd_runs_noise_record(tmp_path):
    """Each seed's delta is the mean noise_delta of its SGD run at the evaluations in the
    window (steps 2 .. 7: the evaluations at 2, 4, 6), recomputed here by re-running that
    SGD run with validate's seeding; the SDE uses their mean."""
    ds = validate(TINY, tmp_path)
    options = EvaluationOptions(eval_every=2, noise_delta=True)
    expected = []
    for run in validate_sgd_runs(TINY["sgd"], evaluation=options):
        expected.append(np.mean(run.noise_delta[1:4]))
        assert plateau_delta(run, 3, window=(0.25, 1.0)) == pytest.approx(
            float(ds["plateau_delta"].values[len(expected) - 1]), rel=1e-12
        )
    np.testing.assert_allclose(ds["noise_trace_delta"].values, expected, rtol=1e-12)
    assert float(ds["sde_delta"]) == pytest.approx(np.mean(expected), rel=1e-12)
    assert "agreement_noise_delta" not in ds  # recorded by SGD only: not compared


def test_config_checks_of_the_noise_trace_calibration():
    config = check_validation_config(copy.deepcopy(TINY))
    assert config["sde"]["delta"] == "noise_trace"
    assert config["sde"]["calibration_window"] == [0.25, 1.0]
    fraction = copy.deepcopy(TINY)
    fraction["sde"] = {"method": "label_noise", "delta": "noise_trace", "plateau_fraction": 0.5}
    assert check_validation_config(fraction)["sde"]["plateau_fraction"] == 0.5
    bad = copy.deepcopy(TINY)
    bad["sde"]["delta"] = "trace"
    with pytest.raises(ValueError, match=r"'plateau' .*'noise_trace'.*'noise_trace_path'"):
        check_validation_config(bad)
    sparse = copy.deepcopy(TINY)
    sparse["evaluation"] = {"eval_every": 4}  # evaluations at 0, 4, 8
    sparse["sde"]["calibration_window"] = [0.6, 0.9]  # steps 4 .. 6: one
    check_validation_config(sparse)
    sparse["sde"]["calibration_window"] = [0.65, 0.95]  # steps 5 .. 6: none
    with pytest.raises(ValueError, match=r"lower evaluation\.eval_every"):
        check_validation_config(sparse)
    fixed = copy.deepcopy(TINY)
    fixed["sde"]["delta"] = 0.1
    with pytest.raises(ValueError, match="'plateau' or 'noise_trace'"):
        check_validation_config(fixed)


def _runs(n_steps: int = 10, eval_every: int = 3) -> list:
    """Two SGD runs of one config with the noise record (evaluations 0, 3, 6, 9, 10)."""
    net = MLP((1, 2, 2), widths=[6], n_outputs=3, seed=1)
    options = EvaluationOptions(eval_every=eval_every, metrics_size=16, noise_delta=True)
    return [
        train_sgd(net, DATA, evaluation=options, seed=s, **{**RUN, "n_steps": n_steps})
        for s in (3, 4)
    ]


def test_loss_path_is_the_pooled_centred_moving_average_of_the_minibatch_loss():
    runs = _runs()
    losses = np.stack([r.batch_losses for r in runs])
    for window in (1, 4, 5, 30):
        expected = []
        for k in range(10):
            lo, hi = max(0, k - window // 2), min(10, k - window // 2 + window)
            expected.append(2 * losses[:, lo:hi].mean() / 3)
        path = loss_delta_path(runs, 3, smoothing=window)
        np.testing.assert_allclose(path, expected, rtol=1e-12)
    # window 1: each step's own minibatch losses, pooled over the runs
    np.testing.assert_allclose(loss_delta_path(runs, 3, smoothing=1), 2 * losses.mean(0) / 3)


def test_noise_trace_path_scales_the_loss_path_by_the_interpolated_trace_ratio():
    """rho(e) = mean noise_delta / (2 mean train_loss / K) at each evaluation e, linear
    in k between them; the path is rho(k) times the loss path."""
    runs = _runs()
    steps = runs[0].steps.tolist()
    assert steps == [0, 3, 6, 9, 10]
    trace = np.mean([r.noise_delta for r in runs], axis=0)
    loss = np.mean([r.train_loss for r in runs], axis=0)
    rho = trace / (2 * loss / 3)
    level = loss_delta_path(runs, 3, smoothing=3)
    path = noise_trace_delta_path(runs, 3, smoothing=3)
    for i, e in enumerate(steps[:-1]):
        assert path[e] == pytest.approx(rho[i] * level[e], rel=1e-12)
    # step 4 lies a third of the way from the evaluation at 3 to the one at 6
    assert path[4] == pytest.approx((rho[1] + (rho[2] - rho[1]) / 3) * level[4], rel=1e-12)
    assert not np.allclose(rho, rho[0])  # the ratio moves, so the check has teeth


def test_delta_paths_refuse_runs_they_cannot_read():
    runs = _runs()
    with pytest.raises(ValueError, match="non-empty list of TrainResults"):
        loss_delta_path([], 3)
    with pytest.raises(ValueError, match="smoothing"):
        loss_delta_path(runs, 3, smoothing=0)
    with pytest.raises(ValueError, match="different numbers of steps"):
        loss_delta_path([runs[0], _runs(n_steps=8)[0]], 3)
    net = MLP((1, 2, 2), widths=[6], n_outputs=3, seed=1)
    plain = train_sgd(net, DATA, evaluation=EvaluationOptions(eval_every=3), seed=3, **RUN)
    with pytest.raises(ValueError, match=r"EvaluationOptions\(noise_delta=True\)"):
        noise_trace_delta_path([plain], 3)
    other = _runs(eval_every=5)[0]
    with pytest.raises(ValueError, match="evaluated at different steps"):
        noise_trace_delta_path([runs[0], other], 3)
    blown = train_sgd(net, DATA, seed=3, **{**RUN, "schedule": 1e4})
    assert blown.diverged
    with pytest.raises(ValueError, match="diverged"):
        loss_delta_path([blown], 3)


@pytest.mark.parametrize("delta", ["loss_path", "noise_trace_path"])
def test_validate_runs_the_sde_on_the_delta_path_of_the_sgd_runs(tmp_path, delta):
    """sde_delta (sgd_step) is the path of validate's own SGD runs (re-run here with its
    seeding), and the SDE runs on it."""
    config = copy.deepcopy(TINY)
    config["sde"] = {"method": "label_noise", "delta": delta, "delta_smoothing": 3}
    ds = validate(config, tmp_path)
    options = EvaluationOptions(eval_every=2, noise_delta=delta == "noise_trace_path")
    runs = validate_sgd_runs(TINY["sgd"], evaluation=options)
    path = (loss_delta_path if delta == "loss_path" else noise_trace_delta_path)(
        runs, 3, smoothing=3
    )
    assert ds["sde_delta"].dims == ("sgd_step",)
    np.testing.assert_allclose(ds["sde_delta"].values, path, rtol=1e-12)
    assert ("noise_delta" in ds) == (delta == "noise_trace_path")
    if delta == "noise_trace_path":
        np.testing.assert_allclose(
            ds["noise_delta"].values, [r.noise_delta for r in runs], rtol=1e-12
        )
    sde_config = json.loads(ds.attrs["config"])["methods"]["label-noise SDE"]
    assert sde_config["delta"] == "per step"
    assert sde_config["delta_mean"] == pytest.approx(path.mean(), rel=1e-12)


def test_config_checks_of_the_delta_paths():
    config = copy.deepcopy(TINY)
    config["sde"] = {"method": "label_noise", "delta": "noise_trace_path"}
    assert check_validation_config(config)["sde"]["delta_smoothing"] == 50
    for extra in ({"calibration_window": [0.25, 1.0]}, {"plateau_fraction": 0.5}):
        bad = copy.deepcopy(config)
        bad["sde"].update(extra)
        with pytest.raises(ValueError, match="follows the whole run and reads no plateau"):
            check_validation_config(bad)
    bad = copy.deepcopy(config)
    bad["sde"]["delta_smoothing"] = 0
    with pytest.raises(ValueError, match="delta_smoothing"):
        check_validation_config(bad)
    plateau = copy.deepcopy(TINY)
    plateau["sde"]["delta_smoothing"] = 10
    with pytest.raises(ValueError, match="needs delta = 'loss_path' or 'noise_trace_path'"):
        check_validation_config(plateau)
