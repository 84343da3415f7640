"""One registry per family of objects (models, schedules, noise models, solvers, engines,
metrics, experiment kinds), keyed by each class's ``name``, with make / from-config /
to-config.

Inside the package everything is an object; strings appear only at the config and
command-line boundary, where ``Registry.make`` and ``Registry.from_config`` turn them into
objects. ``to_config`` is the inverse: for every registered class,
``registry.from_config(to_config(obj)) == obj`` (tested over every registry).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


def to_config(obj: Any) -> dict[str, Any]:
    """``{"name": obj.name, <field>: <value>, ...}`` for a dataclass with a ``name``
    class attribute: tuples and arrays become lists, numpy scalars Python numbers, and
    fields that are objects with a ``to_config`` their own config, so the result is
    JSON-serializable and ``from_config`` rebuilds an equal object."""
    cfg: dict[str, Any] = {"name": obj.name}
    for field in dataclasses.fields(obj):
        if field.name.startswith("_") or not field.init:
            continue
        cfg[field.name] = config_value(getattr(obj, field.name))
    return cfg


def config_value(value: Any) -> Any:
    """A field value as plain JSON-able Python (see ``to_config``)."""
    if hasattr(value, "to_config") and not isinstance(value, type):
        return value.to_config()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [config_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): config_value(v) for k, v in value.items()}
    return value


class Registry(Mapping[str, type[T]], Generic[T]):
    """name -> class for one family; a read-only mapping plus ``register``, ``make`` and
    ``from_config``. ``family`` names the family in error messages ("model", ...)."""

    def __init__(self, family: str, classes: Mapping[str, type[T]] | None = None):
        self.family = family
        self._classes: dict[str, type[T]] = {}
        for cls in (classes or {}).values():
            self.register(cls)

    def register(self, cls: type[T]) -> type[T]:
        """Add ``cls`` under ``cls.name`` (usable as a class decorator)."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a registered {self.family} class needs a string `name` attribute")
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"{self.family} {name!r} is already registered")
        self._classes[name] = cls
        return cls

    def __getitem__(self, name: str) -> type[T]:
        if name not in self._classes:
            raise ValueError(
                f"unknown {self.family} {name!r}: choose one of {sorted(self._classes)}"
            )
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {sorted(self._classes)})"

    def make(self, name: str, **options: Any) -> T:
        """An instance of the class registered as ``name``, built from ``options``; an
        unknown name or option is a ValueError listing what is accepted."""
        cls = self[name]
        if dataclasses.is_dataclass(cls):
            accepted = [f.name for f in dataclasses.fields(cls) if f.init]
            unknown = sorted(set(options) - set(accepted))
            if unknown:
                raise ValueError(
                    f"{self.family} {name!r} got unknown option(s) {unknown}: it accepts {accepted}"
                )
        try:
            return cls(**options)
        except TypeError as err:
            raise ValueError(f"bad options for {self.family} {name!r}: {err}") from err

    def from_config(self, cfg: Mapping[str, Any]) -> T:
        """Inverse of ``to_config``: a dict with a ``name`` key and the class's options."""
        if not isinstance(cfg, Mapping) or "name" not in cfg:
            raise ValueError(
                f"a {self.family} config must be a table with a 'name' key (got {cfg!r}): "
                f"use one of {sorted(self._classes)}"
            )
        options = dict(cfg)
        return self.make(options.pop("name"), **options)
