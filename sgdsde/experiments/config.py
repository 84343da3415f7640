"""Experiment configs: TOML files by path or by built-in name (``sgdsde/configs``)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

DEMO_CONFIG = "dln_sparse_sgd"


def builtin_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    files = resources.files("sgdsde") / "configs"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """Read a config from a TOML path or by built-in name (see ``builtin_configs``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise ValueError(f"config file {path} does not exist")
        text = path.read_text()
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
