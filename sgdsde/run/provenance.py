"""Provenance written into every dataset's attrs: title, resolved config, package version
and the seeds of the run."""

from __future__ import annotations

from typing import Any

from sgdsde.random import seed_attrs
from sgdsde.version import __version__


def run_attrs(title: str, config: dict[str, Any], seed: Any, **extra: Any) -> dict[str, Any]:
    """Dataset attrs every run carries: title, resolved config, version, seeds, extras."""
    return {
        "title": title,
        "config": config,
        "sgdsde_version": __version__,
        **extra,
        **seed_attrs(seed),
    }
