"""Provenance written into every dataset's attrs: what ran (title, resolved config,
seeds), with what (package and dependency versions, git commit of a source checkout),
where and when (host, UTC creation time) and how it was started (the command line).

Every entry is a string or a number (netCDF attributes); the config and the seeds are
JSON. Nothing here may fail a run: an unknown git commit is simply left out. The list
of entries is in docs/conventions.md, "Outputs".
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import platform
import re
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sgdsde.random import seed_attrs
from sgdsde.version import __version__

#: module name -> distribution name of the dependencies whose versions are recorded.
DEPENDENCIES = {"numpy": "numpy", "numba": "numba", "torch": "torch", "xarray": "xarray"}

#: The folder holding the ``sgdsde`` package: a git checkout when run from source.
SOURCE_ROOT = Path(__file__).resolve().parents[2]

_HASH = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def run_attrs(title: str, config: dict[str, Any], seed: Any, **extra: Any) -> dict[str, Any]:
    """Dataset attrs every run carries: title, resolved config, version, the environment
    (``environment_attrs``), the simulator's ``extra`` entries and the seeds
    (``sgdsde.random.seed_attrs``)."""
    return {
        "title": title,
        "config": config,
        "sgdsde_version": __version__,
        **environment_attrs(),
        **extra,
        **seed_attrs(seed),
    }


def environment_attrs() -> dict[str, str]:
    """``created`` (UTC, ISO 8601), ``host``, ``python_version``, ``<dep>_version`` for
    numpy, numba, torch and xarray, ``command_line`` (``sys.argv``, shell-quoted) and,
    when the package runs from a git checkout, ``git_commit``."""
    attrs = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python_version": platform.python_version(),
    }
    for module, dist in DEPENDENCIES.items():
        attrs[f"{module}_version"] = dependency_version(module, dist)
    attrs["command_line"] = shlex.join(sys.argv)
    commit = git_commit(SOURCE_ROOT)
    if commit is not None:
        attrs["git_commit"] = commit
    return attrs


def dependency_version(module: str, dist: str) -> str:
    """The version of ``module`` if it is imported, else of its installed distribution
    ``dist`` (read from the package metadata, without importing it: torch alone takes
    seconds to import), or ``"not installed"``."""
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None)
    if isinstance(version, str):
        return str(version)  # a plain str: torch's TorchVersion subclass is no HDF5 type
    return installed_version(dist)


@functools.cache
def installed_version(dist: str) -> str:
    """The installed version of the distribution ``dist`` from its metadata, read once per
    process (a read costs ~3 ms, a tenth of a short run), or ``"not installed"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit(root: Path) -> str | None:
    """The commit checked out at ``root`` (a repository or a worktree), read from its
    ``.git`` files without running git; None if ``root`` is no checkout or anything is
    unreadable. Uncommitted changes are not detected."""
    try:
        git = root / ".git"
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = (root / text.removeprefix("gitdir:").strip()).resolve()
        elif git.is_dir():
            gitdir = git
        else:
            return None
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head if _HASH.fullmatch(head) else None  # detached HEAD
        ref = head.removeprefix("ref:").strip()
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        for base in (gitdir, common):
            if (base / ref).is_file():
                commit = (base / ref).read_text().strip()
                return commit if _HASH.fullmatch(commit) else None
        if (common / "packed-refs").is_file():
            for line in (common / "packed-refs").read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref and _HASH.fullmatch(parts[0]):
                    return parts[0]
    except (OSError, UnicodeDecodeError):
        return None
    return None


def data_config(data: Any) -> dict[str, Any]:
    """What a run records about its data: the generator's resolved config when the data
    came from a generator (``data.config``), else (data built by hand, config ``{}``)
    ``{"generator": "user", "shapes": ..., "sha256": data_fingerprint(data)}``."""
    if data.config:
        return dict(data.config)
    arrays = _data_arrays(data)
    return {
        "generator": "user",
        "shapes": {name: list(arr.shape) for name, arr in arrays.items()},
        "sha256": data_fingerprint(data),
    }


def data_fingerprint(data: Any) -> str:
    """sha256 (hex) of the data's arrays: for X, y, X_test, y_test and, when present,
    beta_star, in that order, the name, dtype, shape and the C-ordered bytes. Equal
    arrays give equal fingerprints, whatever their memory layout."""
    digest = hashlib.sha256()
    for name, arr in _data_arrays(data).items():
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def _data_arrays(data: Any) -> dict[str, np.ndarray]:
    names = ("X", "y", "X_test", "y_test", "beta_star")
    return {
        name: np.asarray(getattr(data, name))
        for name in names
        if getattr(data, name, None) is not None
    }
