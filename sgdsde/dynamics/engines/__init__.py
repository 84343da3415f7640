"""SGD engines: three implementations of the same update (``sgdsde.dynamics.engines.base``),
registered by name in ``ENGINES``. Adding one: a file with an ``Engine`` subclass (a
frozen dataclass with a ``name``) and one ``ENGINES.register`` line below; the
conformance tests (tests/test_conformance_steppers.py) then run on it."""

from __future__ import annotations

from typing import Any

from sgdsde.dynamics.engines.base import Block, Engine, SGDProblem, SGDState
from sgdsde.dynamics.engines.numba_engine import NumbaEngine
from sgdsde.dynamics.engines.numpy_engine import NumpyEngine
from sgdsde.dynamics.engines.torch_engine import TorchEngine
from sgdsde.registry import Registry, to_config

ENGINES: Registry[Engine] = Registry(
    "engine", {cls.name: cls for cls in (NumbaEngine, NumpyEngine, TorchEngine)}
)


def make_engine(name: str, **options: Any) -> Engine:
    """A registered engine by name, e.g. ``make_engine("torch")``."""
    return ENGINES.make(name, **options)


def engine_from_config(cfg: Any) -> Engine:
    """Inverse of ``engine_to_config``: ``{"name": "numba"}`` -> ``NumbaEngine()``."""
    return ENGINES.from_config(cfg)


def engine_to_config(engine: Engine) -> dict[str, Any]:
    """``{"name": ..., <options>}`` of an engine (JSON-serializable)."""
    return to_config(engine)


def as_engine(engine: Any) -> Engine:
    """An ``Engine`` object from an engine or its registered name (the config boundary)."""
    if isinstance(engine, Engine):
        return engine
    if isinstance(engine, str):
        return ENGINES.make(engine)
    raise ValueError(
        f"engine must be an Engine (NumbaEngine(), NumpyEngine(), TorchEngine()) or one of "
        f"{sorted(ENGINES)} (got {type(engine).__name__})"
    )


__all__ = [
    "ENGINES",
    "Block",
    "Engine",
    "NumbaEngine",
    "NumpyEngine",
    "SGDProblem",
    "SGDState",
    "TorchEngine",
    "as_engine",
    "engine_from_config",
    "engine_to_config",
    "make_engine",
]
