"""Conformance of every registered stepper: SDE solvers (``SOLVERS``, with every increment
source each accepts), SGD engines (``ENGINES``) and increment sources (``INCREMENTS``).

A new solver, engine or source gets these tests by registering: agreement with a plain
numpy reference of its scheme on a small problem (driven by the same documented draws),
its config round trip, divergence isolation, split invariance where its class promises
it, and refusal of bad input. Tolerances: the references use the same numbers and the
same maths in another order, so they agree to round-off (rtol 1e-9 over 20-40 steps).
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sgdsde.data import sparse_regression
from sgdsde.dynamics import ENGINES, SGDProblem, as_schedule
from sgdsde.models import DiagonalLinearNet
from sgdsde.random import trajectory_streams
from sgdsde.registry import to_config
from sgdsde.run.driver import Stepper
from sgdsde.sde import INCREMENTS, SOLVERS, NoiseCoefficients
from sgdsde.sde.solvers.base import Increments, SDEProblem, diffusion_product

ROOT = Path(__file__).resolve().parents[1]

# (solver name, increments name) for every increment source a solver of noise models
# accepts (solvers of SDETerms, ``takes_terms``, have theirs in tests/test_sde_terms.py).
SOLVER_CASES = [
    (name, source.name)
    for name, cls in SOLVERS.items()
    if not cls.takes_terms
    for source in cls.accepted_increments
]


def _solver(name: str, increments: str):
    return SOLVERS[name](increments=INCREMENTS.make(increments))


@pytest.fixture(scope="module")
def small():
    data = sparse_regression(n=8, d=5, k=2, n_test=10, seed=2)
    return DiagonalLinearNet(d=5, alpha=0.5), data


def _coefficients(increments: str, T: int) -> NoiseCoefficients:
    """Per-trajectory coefficients of the three channels (label only for the bridge)."""
    base = np.arange(1.0, T + 1.0)
    if increments == "brownian_bridge":
        return NoiseCoefficients(0.05 * base, np.zeros(T), np.zeros(T))
    return NoiseCoefficients(0.05 * base, 0.2 / base, 0.01 * base)


def _drive(stepper, problem, theta0, seed, splits):
    """Run through the protocol, advancing between consecutive ``splits``."""
    T = theta0.shape[0]
    state = stepper.init(problem, theta0, trajectory_streams(seed, T), "cpu")
    diverged = np.full(T, -1, dtype=np.int64)
    for k0, k1 in itertools.pairwise(splits):
        stepper.advance(state, k0, k1, diverged)
    return stepper.params(state).copy(), diverged, stepper.elapsed(state, splits[-1])


def _reference_em(problem: SDEProblem, theta0: np.ndarray, inc: Increments) -> np.ndarray:
    """theta <- theta - grad L dt + G(theta) dW with dW = -sqrt(dt) (z, u, zeta), numpy."""
    model, data, dt = problem.model, problem.data, problem.dt
    theta, sdt = theta0.copy(), math.sqrt(dt)
    T, S = theta.shape[0], inc.label.shape[1]
    widths = (data.n, data.n, model.n_params)
    inc = Increments(  # unused channels (width 0) as zeros of their full width
        0,
        *(
            x if x.shape[2] else np.zeros((T, S, w))
            for x, w in zip((inc.label, inc.sgd, inc.iso), widths, strict=True)
        ),
    )
    for k in range(S):
        g = diffusion_product(
            model,
            theta,
            data.X,
            data.y,
            problem.coefficients,
            -sdt * inc.label[:, k],
            -sdt * inc.sgd[:, k],
            -sdt * inc.iso[:, k],
        )
        theta = theta - dt * model.grad(theta, data.X, data.y) + g
    return theta


def _as_numpy(inc: Increments) -> Increments:
    arrays = (
        np.asarray(x.cpu()) if torch.is_tensor(x) else x for x in (inc.label, inc.sgd, inc.iso)
    )
    return Increments(inc.k0, *arrays)


# ------------------------------------------------------------------------ solvers


@pytest.mark.parametrize(("name", "increments"), SOLVER_CASES)
def test_solver_is_a_stepper_and_round_trips_its_config(name, increments):
    solver = _solver(name, increments)
    assert isinstance(solver, Stepper)
    cfg = json.loads(json.dumps(to_config(solver)))
    assert cfg["name"] == name and cfg["increments"]["name"] == increments
    assert SOLVERS.from_config(cfg) == solver
    assert SOLVERS.make(name) == SOLVERS[name]()  # defaults from the name alone


@pytest.mark.parametrize(("name", "increments"), SOLVER_CASES)
def test_solver_agrees_with_the_reference(small, name, increments):
    """The scheme on a small DLN: driven by its source's documented draws where they can
    be drawn outside the solver, else (torchsde) without noise, where it is plain GD."""
    model, data = small
    T, S, dt = 3, 30, 0.05
    solver = _solver(name, increments)
    source = solver.increments
    coef = _coefficients(increments, T)
    drawable = source.name != "brownian_interval"
    if not drawable:
        coef = NoiseCoefficients(np.zeros(T), np.zeros(T), np.zeros(T))
    problem = SDEProblem(model, data, coef, dt, 1e10, S)
    theta0 = model.init(trajectory_streams(1, T)["init"])
    got, diverged, time = _drive(solver, problem, theta0, seed=7, splits=[0, 11, S])
    if drawable:
        streams = trajectory_streams(7, T)
        inc = _as_numpy(source.sampler(problem, streams, device="cpu", dtype=torch.float64)(0, S))
    else:
        empty = np.zeros((T, S, 0))
        inc = Increments(0, empty, empty, np.zeros((T, S, model.n_params)))
    expected = _reference_em(problem, theta0, inc)
    assert np.all(diverged == -1)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(time, S * dt, rtol=1e-15)
    assert np.abs(got - theta0).max() > 1e-3  # it moved
    np.testing.assert_array_equal(theta0, model.init(trajectory_streams(1, T)["init"]))


@pytest.mark.parametrize(("name", "increments"), SOLVER_CASES)
def test_solver_isolates_a_diverging_trajectory(small, name, increments):
    """A trajectory with an enormous label coefficient diverges and is frozen; the others
    are those of a run without it (to the bit with per-trajectory increments; torch's
    batched maths may round differently for another T)."""
    model, data = small
    S, dt = 40, 0.05
    solver = _solver(name, increments)
    coef = _coefficients(increments, 3)
    wild = NoiseCoefficients(np.array([*coef.label[:2], 1e8]), coef.sgd, coef.iso)
    theta0 = model.init(trajectory_streams(1, 3)["init"])
    full, div, _ = _drive(solver, SDEProblem(model, data, wild, dt, 1e10, S), theta0, 3, [0, S])
    assert div.tolist()[:2] == [-1, -1] and 0 <= div[2] <= S
    assert np.all(np.isfinite(full[:2]))
    if not solver.increments.per_trajectory:
        return
    two = NoiseCoefficients(wild.label[:2], wild.sgd[:2], wild.iso[:2])
    seeds = list(np.random.SeedSequence(3).spawn(3)[:2])
    part, _, _ = _drive(
        solver, SDEProblem(model, data, two, dt, 1e10, S), theta0[:2], seeds, [0, S]
    )
    np.testing.assert_allclose(full[:2], part, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("name", "increments"), SOLVER_CASES)
def test_solver_split_invariance(small, name, increments, monkeypatch):
    """Where the class promises it: the same bits whatever the split of advance calls
    (the save grid) and whatever the chunk size of the draws."""
    import sgdsde.run.loop as loop

    solver = _solver(name, increments)
    if not solver.split_invariant:
        pytest.skip(f"{name} checks divergence at the ends of advance calls only")
    model, data = small
    S, T = 40, 3
    problem = SDEProblem(model, data, _coefficients(increments, T), 0.05, 1e10, S)
    theta0 = model.init(trajectory_streams(1, T)["init"])
    whole, _, _ = _drive(solver, problem, theta0, 5, [0, S])
    pieces, _, _ = _drive(solver, problem, theta0, 5, [0, 1, 7, 8, 23, 39, S])
    np.testing.assert_array_equal(pieces, whole)
    if solver.increments.per_trajectory:
        monkeypatch.setattr(loop, "BLOCK_ENTRIES", 7 * T * sum(problem.widths()))
        small_chunks, _, _ = _drive(solver, problem, theta0, 5, [0, 13, S])
        np.testing.assert_array_equal(small_chunks, whole)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solver_refuses_bad_options_and_devices(small, name):
    cls = SOLVERS[name]
    with pytest.raises(ValueError, match="dtype must be one of"):
        cls(dtype="float16")
    with pytest.raises(ValueError, match="increments must be one of"):
        cls(increments="philox")
    model, data = small
    problem = SDEProblem(model, data, _coefficients("numpy", 2), 0.05, 1e10, 4)
    theta0 = model.init(trajectory_streams(0, 2)["init"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"CPU only|no CUDA device"):
            cls().init(problem, theta0, trajectory_streams(0, 2), "cuda")


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solver_orders_depend_on_the_noise(small, name):
    """Weak order 1 for every Euler-type scheme; the strong order is at least 0.5 and
    rises to >= 1 for additive noise (isotropic only)."""
    model, data = small
    solver = SOLVERS[name]()
    zeros = np.zeros(2)
    general = SDEProblem(model, data, NoiseCoefficients(np.ones(2), zeros, zeros), 0.1)
    additive = SDEProblem(model, data, NoiseCoefficients(zeros, zeros, np.ones(2)), 0.1)
    assert solver.weak_order(general) >= 1.0
    assert solver.strong_order(general) == 0.5
    assert solver.strong_order(additive) >= 1.0


# ------------------------------------------------------------------------ engines


def _sgd_problem(model, data, T=3, lrs=(0.05, 0.08, 0.02), n_steps=40, replace=False):
    return SGDProblem(
        model=model,
        data=data,
        schedules=tuple(as_schedule(lr) for lr in lrs[:T]),
        batch_size=np.array([1, 3, data.n][:T], dtype=np.int64),
        label_noise=np.array([0.0, 0.05, 0.1][:T]),
        with_replacement=replace,
        n_steps=n_steps,
    )


def _reference_sgd(problem: SGDProblem, theta0: np.ndarray, seed) -> np.ndarray:
    """theta <- theta - eta_k (1/B) sum_b (r_i + sqrt(delta) z_b) grad f(x_i), trajectory by
    trajectory and step by step, from the documented draws (``SGDProblem.draw_block``)."""
    model, X, y = problem.model, problem.data.X, problem.data.y
    block = problem.draw_block(trajectory_streams(seed, problem.n_traj), 0, problem.n_steps)
    theta = theta0.copy()
    for t in range(problem.n_traj):
        B = int(problem.batch_size[t])
        for k in range(problem.n_steps):
            idx = np.arange(B) if problem.full[t] else block.idx[t, k, :B]
            th = theta[t : t + 1]
            r = model.residuals(th, X[idx], y[idx])[0]
            r = r + math.sqrt(problem.label_noise[t]) * block.normals[t, k, :B]
            grads = model.per_example_grads(th, X[idx])[0]  # (B, p)
            theta[t] -= block.lrs[t, k] * (r @ grads) / B
    return theta


@pytest.mark.parametrize("name", sorted(ENGINES))
@pytest.mark.parametrize("replace", [False, True])
def test_engine_agrees_with_the_reference(small, name, replace):
    model, data = small
    engine = ENGINES[name]()
    assert isinstance(engine, Stepper)
    problem = _sgd_problem(model, data, replace=replace)
    theta0 = model.init(trajectory_streams(1, 3)["init"])
    got, diverged, time = _drive(engine, problem, theta0, 6, [0, 9, 40])
    np.testing.assert_allclose(got, _reference_sgd(problem, theta0, 6), rtol=1e-10, atol=1e-13)
    assert np.all(diverged == -1)
    np.testing.assert_allclose(time, 40 * np.array([0.05, 0.08, 0.02]), rtol=1e-14)


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engine_round_trips_its_config(name):
    engine = ENGINES[name]()
    cfg = json.loads(json.dumps(to_config(engine)))
    assert cfg == {"name": name} and ENGINES.from_config(cfg) == engine


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engine_isolates_divergence_at_the_true_step(small, name):
    """A trajectory at a huge step size diverges at the step whose sampled residual blows
    up; the numpy reference engine finds the same step; the others are untouched."""
    model, data = small
    engine = ENGINES[name]()
    lrs = (0.05, 40.0, 0.02)
    problem = _sgd_problem(model, data, lrs=lrs)
    theta0 = model.init(trajectory_streams(1, 3)["init"])
    got, div, _ = _drive(engine, problem, theta0, 6, [0, 3, 40])
    _, ref_div, _ = _drive(ENGINES["numpy"](), problem, theta0, 6, [0, 40])
    assert div[0] == div[2] == -1 and div[1] > 0
    np.testing.assert_array_equal(div, ref_div)
    calm = _sgd_problem(model, data, lrs=(0.05, 0.08, 0.02))
    alone, _, _ = _drive(engine, calm, theta0, 6, [0, 40])
    np.testing.assert_allclose(got[[0, 2]], alone[[0, 2]], rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engine_split_and_chunk_invariance(small, name, monkeypatch):
    """The same bits whatever the advance splits and the chunk size (fixed chunk grid,
    split-invariant draws), and the same SDE time to round-off."""
    import sgdsde.run.loop as loop

    model, data = small
    engine = ENGINES[name]()
    problem = _sgd_problem(model, data)
    theta0 = model.init(trajectory_streams(1, 3)["init"])
    whole, _, t_whole = _drive(engine, problem, theta0, 2, [0, 40])
    pieces, _, t_pieces = _drive(engine, problem, theta0, 2, [0, 1, 2, 19, 33, 40])
    np.testing.assert_array_equal(pieces, whole)
    monkeypatch.setattr(loop, "BLOCK_ENTRIES", 3 * 3 * 6)  # 6-step chunks
    chunked, _, t_chunked = _drive(engine, problem, theta0, 2, [0, 17, 40])
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(t_pieces, t_whole)
    np.testing.assert_allclose(t_chunked, t_whole, rtol=1e-14)


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engine_refuses_a_device_it_cannot_use(small, name):
    model, data = small
    problem = _sgd_problem(model, data)
    theta0 = model.init(trajectory_streams(1, 3)["init"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"CPU only|no CUDA device"):
            ENGINES[name]().init(problem, theta0, trajectory_streams(0, 3), "cuda")
    with pytest.raises(ValueError, match="device"):
        ENGINES[name]().init(problem, theta0, trajectory_streams(0, 3), "tpu:x")


# ---------------------------------------------------------------- increment sources


@pytest.mark.parametrize("name", sorted(INCREMENTS))
def test_increments_round_trip_their_config(name):
    source = INCREMENTS.make(name)
    cfg = json.loads(json.dumps(to_config(source)))
    assert INCREMENTS.from_config(cfg) == source
    assert isinstance(source.couples_to_gd, bool) and isinstance(source.per_trajectory, bool)


def _drawable_sources():
    return [n for n in sorted(INCREMENTS) if n != "brownian_interval"]


@pytest.mark.parametrize("name", _drawable_sources())
def test_increments_keep_their_promises(small, name):
    """per_trajectory: a trajectory's numbers do not depend on T; couples_to_gd: the label
    channel is exactly the normals label-noise GD draws from the "label_noise" stream;
    every source: consecutive chunks continue one another (split invariance)."""
    model, data = small
    source = INCREMENTS.make(name)
    n, S = data.n, 12
    where = {"device": "cpu", "dtype": torch.float64}

    def draw(T, chunks):
        problem = SDEProblem(model, data, _coefficients(name, T), 0.1, 1e10, S)
        sample = source.sampler(problem, trajectory_streams(4, T), **where)
        parts = [_as_numpy(sample(a, b)) for a, b in itertools.pairwise(chunks)]
        return [
            np.concatenate([getattr(p, ch) for p in parts], axis=1)
            for ch in ("label", "sgd", "iso")
        ]

    three = draw(3, [0, S])
    for whole, split in zip(three, draw(3, [0, 4, 9, S]), strict=True):
        if source.per_trajectory:
            np.testing.assert_array_equal(split, whole)
    if source.per_trajectory:
        for a, b in zip(draw(2, [0, S]), three, strict=True):
            np.testing.assert_array_equal(a, b[:2])
    if source.couples_to_gd:
        gd = np.stack([g.standard_normal((S, n)) for g in trajectory_streams(4, 3)["label_noise"]])
        np.testing.assert_allclose(three[0], gd, rtol=1e-15, atol=1e-15)
    else:
        gd = np.stack([g.standard_normal((S, n)) for g in trajectory_streams(4, 3)["label_noise"]])
        assert not np.allclose(three[0], gd)


# ------------------------------------------------------------------------ start-up


def _module_level_imports(path: Path) -> set[str]:
    """Top-level module names imported by a module's own statements (not inside functions)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.If | ast.Try | ast.With):
            stack.extend(ast.iter_child_nodes(node))
    return names


def test_dynamics_and_sde_modules_import_no_torch_at_module_level():
    files = sorted((ROOT / "sgdsde" / "dynamics").rglob("*.py"))
    files += sorted((ROOT / "sgdsde" / "sde").rglob("*.py"))
    assert len(files) > 10
    eager = {
        str(f.relative_to(ROOT)): _module_level_imports(f) & {"torch", "torchsde"} for f in files
    }
    assert not {k: v for k, v in eager.items() if v}


def test_importing_dynamics_and_sde_loads_no_torch():
    """In a fresh interpreter: no module of the package loads torch or torchsde on import
    (the models load it lazily; the failure names the importing module)."""
    code = """
import importlib.abc, sys, traceback
who = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in ("torch", "torchsde") and not who:
            who.append([f.filename for f in traceback.extract_stack()])
        return None
sys.meta_path.insert(0, Spy())
import sgdsde.dynamics, sgdsde.sde
frames = who[0] if who else []
ours = [f for f in frames if "/sgdsde/" in f and "/lazy.py" not in f]
print(repr(ours[-1:]))  # the package module whose statement imports torch
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    importers = ast.literal_eval(out.strip().splitlines()[-1])
    culprits = [f for f in importers if "/sgdsde/dynamics/" in f or "/sgdsde/sde/" in f]
    assert not culprits, importers
    assert not importers, f"torch is loaded eagerly elsewhere in the package: {importers}"
