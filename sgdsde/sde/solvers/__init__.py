"""SDE solvers, registered by name in ``SOLVERS``, and their increment sources
(``INCREMENTS``). Adding a solver: a file defining a ``Solver`` subclass (a frozen
dataclass with a ``name``) and one entry below; the conformance tests
(tests/test_conformance_steppers.py) then run on it."""

from __future__ import annotations

from typing import Any

from sgdsde.registry import Registry, to_config
from sgdsde.sde.solvers.base import Increments, SDEProblem, Solver
from sgdsde.sde.solvers.bridged import BridgedEulerMaruyama
from sgdsde.sde.solvers.euler_gemm import EulerMaruyamaGEMM
from sgdsde.sde.solvers.euler_numba import EulerMaruyamaNumba
from sgdsde.sde.solvers.euler_terms import EulerMaruyamaTerms, TermsProblem
from sgdsde.sde.solvers.euler_torch import EulerMaruyamaTorch
from sgdsde.sde.solvers.increments import (
    INCREMENTS,
    BrownianBridge,
    BrownianInterval,
    GivenIncrements,
    IncrementSource,
    NumpyIncrements,
    TorchIncrements,
    XoshiroIncrements,
)
from sgdsde.sde.solvers.torchsde_adapter import TorchsdeSolver

SOLVERS: Registry[Solver] = Registry(
    "solver",
    {
        cls.name: cls
        for cls in (
            EulerMaruyamaNumba,
            EulerMaruyamaGEMM,
            EulerMaruyamaTorch,
            TorchsdeSolver,
            EulerMaruyamaTerms,
        )
    },
)


def make_solver(name: str, **options: Any) -> Solver:
    """Build a registered solver by name, e.g. ``make_solver("euler_torch", dtype="float32")``."""
    return SOLVERS.make(name, **options)


def solver_from_config(cfg: Any) -> Solver:
    """Inverse of ``solver_to_config``, e.g. ``{"name": "euler_numba", "dtype": "float64",
    "increments": {"name": "numpy"}}`` -> ``EulerMaruyamaNumba()``."""
    return SOLVERS.from_config(cfg)


def solver_to_config(solver: Solver) -> dict[str, Any]:
    """``{"name": ..., <options>}`` of a solver, its increments as their own config."""
    return to_config(solver)


def make_increments(name: str, **options: Any) -> IncrementSource:
    """An increment source by name, e.g. ``make_increments("brownian_bridge", refine=4)``."""
    return INCREMENTS.make(name, **options)


def as_solver(solver: Any) -> Solver:
    """A ``Solver`` object from a solver, its registered name or its config dict."""
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str):
        return SOLVERS.make(solver)
    if isinstance(solver, dict):
        return SOLVERS.from_config(solver)
    raise ValueError(
        f"solver must be a name in {sorted(SOLVERS)} or a Solver instance "
        f"(got {type(solver).__name__})"
    )


__all__ = [
    "INCREMENTS",
    "SOLVERS",
    "BridgedEulerMaruyama",
    "BrownianBridge",
    "BrownianInterval",
    "EulerMaruyamaGEMM",
    "EulerMaruyamaNumba",
    "EulerMaruyamaTerms",
    "EulerMaruyamaTorch",
    "GivenIncrements",
    "IncrementSource",
    "Increments",
    "NumpyIncrements",
    "SDEProblem",
    "Solver",
    "TermsProblem",
    "TorchIncrements",
    "TorchsdeSolver",
    "XoshiroIncrements",
    "as_solver",
    "make_increments",
    "make_solver",
    "solver_from_config",
    "solver_to_config",
]
