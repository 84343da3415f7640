"""Heavy optional modules (torch, torchsde) load on first use, not at ``import sgdsde``.

``torch = lazy_module("torch")`` gives an object that imports torch the first time one
of its attributes is read; until then, importing a module that holds it costs nothing.
Keeps ``import sgdsde`` and ``sgdsde --help`` fast (torch alone takes ~2 s to import).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """A stand-in for the module ``name``, imported on first attribute access."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def _load(self) -> ModuleType:
        target = self.__dict__["_lazy_target"]
        if target is None:
            target = importlib.import_module(self.__name__)
            self.__dict__["_lazy_target"] = target
        return target

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())


def lazy_module(name: str) -> ModuleType:
    """The module ``name`` if already imported, else a ``LazyModule`` for it."""
    import sys

    return sys.modules.get(name) or LazyModule(name)
