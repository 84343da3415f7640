"""Experiment configs: reading (a TOML path or a built-in name, ``sgdsde/configs``) and
validating.

Validation is whole and comes before any work: a ``ConfigChecker`` walks the config
against the schema of its kind (``Key`` per top-level key, the signature of the
function or class a table feeds), collects every problem with the path of the field at
fault (unknown keys with a "did you mean", missing keys, wrong types, non-integers
where integers are due, bad values reported by the objects the config builds), and
``ConfigError`` reports them all at once.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import tomllib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from sgdsde.run.checks import check_file_name, check_keys, check_options

DEMO_CONFIG = "dln_sparse_sgd"


#: Built-in configs named ``validate_*`` are for ``sgdsde validate`` (deep networks against
#: their SDE models, ``sgdsde.validation``), not experiment kinds.
VALIDATION_PREFIX = "validate_"


def builtin_configs() -> list[str]:
    """Names of the experiment configs shipped with the package (``sgdsde run``)."""
    files = resources.files("sgdsde") / "configs"
    return sorted(
        p.name[:-5]
        for p in files.iterdir()
        if p.name.endswith(".toml") and not p.name.startswith(VALIDATION_PREFIX)
    )


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """Read a config from a TOML path or by built-in name (see ``builtin_configs``); a
    missing, unreadable or malformed file is a ValueError saying which."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist (or is not a file)")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"config file {path} cannot be read: {err}") from err
    else:
        entry = resources.files("sgdsde") / "configs" / f"{name_or_path}.toml"
        if not entry.is_file():
            raise ValueError(
                f"unknown config {name_or_path!r}: give a .toml path or one of {builtin_configs()}"
            )
        text = entry.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config {name_or_path} is not valid TOML: {err}") from err


def require_key(cfg: dict, key: str, where: str = "config") -> Any:
    """cfg[key], or a ValueError naming the missing key and where it belongs."""
    if key not in cfg:
        raise ValueError(f"{where} is missing the key {key!r}")
    return cfg[key]


class ConfigError(ValueError):
    """An invalid config: ``problems`` lists each one as "<field path>: <what and the fix>"."""

    def __init__(self, name: str, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"invalid config {name}: " + "; ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a config table.

    kind: ``"int"`` (a TOML integer, not 2000.5 nor "2000"), ``"number"`` (integer or
        float, finite), ``"str"``, ``"bool"``, ``"name"`` (a safe file name, see
        ``sgdsde.run.checks.check_file_name``), ``"table"``, ``"tables"`` (an array of
        tables, ``[[runs]]``) or ``"any"`` (checked by the object it builds).
    doc: what the key is (quoted in the error when it is missing or wrong).
    required: a missing key is an error; otherwise ``default`` is filled in.
    minimum: the least value allowed (``"int"``, ``"number"``); ``positive``: > 0.
    choices: the allowed values (``"str"``).
    """

    kind: str
    doc: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    positive: bool = False
    choices: tuple[str, ...] = ()


#: Keys every experiment kind accepts at the top level.
COMMON_KEYS: dict[str, Key] = {
    "name": Key("name", "the experiment's name, which names its output files", required=True),
    "kind": Key("str", "the experiment kind", default="sgd"),
    "description": Key("str", "a sentence on the experiment (the figure's title)", default=""),
}


class ConfigChecker:
    """Collects the problems of one config; each check records a problem instead of
    raising, so that one pass reports everything (``raise_if_any``)."""

    def __init__(self, name: str = "config"):
        self.name = name
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        """Record ``message`` about the field at ``path`` ("" for the whole config)."""
        self.problems.append(f"{path}: {message}" if path else message)

    def raise_if_any(self) -> None:
        """Raise ``ConfigError`` listing every recorded problem."""
        if self.problems:
            raise ConfigError(self.name, self.problems)

    def table(self, path: str, value: Any, schema: Mapping[str, Key]) -> dict[str, Any]:
        """Check the table ``value`` at ``path`` against ``schema``: unknown keys, missing
        required keys, each value's kind. Returns the valid values with the defaults of
        absent keys filled in (invalid ones left out, their problems recorded)."""
        where = path or "config"
        if not isinstance(value, Mapping):
            self.problem(path, f"must be a table (got {value!r})")
            return {}
        try:
            check_keys(where, value, schema)
        except ValueError as err:
            self.problem("", str(err))
        out: dict[str, Any] = {}
        for key, spec in schema.items():
            field = f"{path}.{key}" if path else key
            if key not in value:
                if spec.required:
                    self.problem("", f"{where} is missing the key {key!r}: {spec.doc}")
                elif spec.default is not None:
                    out[key] = spec.default
                continue
            message = _kind_problem(key, value[key], spec)
            if message is None:
                out[key] = value[key]
            else:
                self.problem(field, message)
        return out

    def options(
        self, path: str, value: Any, target: Callable, *, reserved: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        """The table ``value`` at ``path`` as keyword options of ``target`` (a function or
        class): its keys other than ``reserved`` must be parameters of ``target`` and
        include its required ones. None (problem recorded) if not."""
        if not isinstance(value, Mapping):
            self.problem(path, f"must be a table (got {value!r})")
            return None
        options = {k: v for k, v in value.items() if k not in reserved}
        try:
            check_options(path, target, options)
        except ValueError as err:
            self.problem("", str(err))
            return None
        return options

    def build(self, path: str, make: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``make(*args, **kwargs)``, or None with its ValueError (or TypeError) recorded
        as a problem of the field at ``path``."""
        try:
            return make(*args, **kwargs)
        except (ValueError, TypeError) as err:
            self.problem(path, str(err))
            return None


def _kind_problem(key: str, value: Any, spec: Key) -> str | None:
    """What is wrong with ``value`` for ``spec`` (None: nothing)."""
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return (
                f"must be an integer (got {value!r}): write a whole number without quotes "
                f"or decimal point, e.g. {key} = {_example_int(value, spec)}"
            )
    elif spec.kind == "number":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"must be a number (got {value!r}): write it without quotes"
        if not math.isfinite(value):
            return f"must be finite (got {value!r})"
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            return f"must be true or false (got {value!r})"
    elif spec.kind in ("str", "name"):
        if not isinstance(value, str):
            return f"must be a string (got {value!r}): {spec.doc}"
        if spec.kind == "name":
            try:
                check_file_name(key, value)
            except ValueError as err:
                return str(err).removeprefix(f"{key} ")
        if spec.choices and value not in spec.choices:
            return f"must be one of {list(spec.choices)} (got {value!r})"
    elif spec.kind == "table":
        if not isinstance(value, Mapping):
            return f"must be a table (got {value!r}): {spec.doc}"
    elif spec.kind == "tables" and (
        not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value)
    ):
        return f"must be an array of tables (got {value!r}): {spec.doc}"
    if spec.positive and not value > 0:
        return f"must be > 0 (got {value!r}): {spec.doc}"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be >= {spec.minimum:g} (got {value!r}): {spec.doc}"
    return None


def _example_int(value: Any, spec: Key) -> int:
    if isinstance(value, float) and math.isfinite(value):
        return max(round(value), int(spec.minimum or 0))
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return int(spec.minimum or 1)
