"""SDE solvers. Adding one: a file defining a ``Solver`` subclass and one line in
``SOLVERS`` below (name -> class, built with its default options by ``simulate_sde``)."""

from __future__ import annotations

from typing import Any

from sgdsde.sde.solvers.base import SDEProblem, Solver
from sgdsde.sde.solvers.bridged import BridgedEulerMaruyama
from sgdsde.sde.solvers.euler_gemm import EulerMaruyamaGEMM
from sgdsde.sde.solvers.euler_numba import EulerMaruyamaNumba, simulate_diagonal_sde
from sgdsde.sde.solvers.euler_torch import EulerMaruyamaTorch
from sgdsde.sde.solvers.torchsde_adapter import TorchsdeSolver

SOLVERS: dict[str, type[Solver]] = {
    "euler_numba": EulerMaruyamaNumba,
    "euler_gemm": EulerMaruyamaGEMM,
    "euler_torch": EulerMaruyamaTorch,
    "torchsde": TorchsdeSolver,
}


def make_solver(name: str, **options: Any) -> Solver:
    """Build a registered solver by name, e.g. ``make_solver("euler_torch", dtype="float32")``."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}: choose one of {sorted(SOLVERS)}")
    return SOLVERS[name](**options)


__all__ = [
    "SOLVERS",
    "BridgedEulerMaruyama",
    "EulerMaruyamaGEMM",
    "EulerMaruyamaNumba",
    "EulerMaruyamaTorch",
    "SDEProblem",
    "Solver",
    "TorchsdeSolver",
    "make_solver",
    "simulate_diagonal_sde",
]
