"""What the gallery kinds' tests share: a shipped config (whole, or at reduced size), a
claim entry, a config run through its kind, and a figure written."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sgdsde.experiments import load_config


def shipped_config(name: str, *updates: Mapping[str, Any]) -> dict[str, Any]:
    """The built-in config ``name`` with each of ``updates`` applied in turn (its
    top-level keys replace the config's; copied, so a test may change the result)."""
    config = load_config(name)
    for update in updates:
        config.update(copy.deepcopy(dict(update)))
    return config


def claim(text: str, quantity: str, relation: str, runs: Iterable[str], **more: Any) -> dict:
    """A ``[[claims]]`` entry: ``text``, ``quantity``, ``relation``, ``runs`` (and
    ``value``, ``factor`` in ``more``)."""
    return {"text": text, "quantity": quantity, "relation": relation, "runs": list(runs), **more}


def run_config(kind: Any, config: Mapping[str, Any]) -> Any:
    """``config`` prepared and run by the experiment ``kind``: its dataset."""
    return kind.run(kind.prepare(config))


def shipped_plan(kind: Any, name: str) -> tuple[dict[str, Any], Any]:
    """The built-in config ``name`` and its plan by the experiment ``kind``, checking
    the gallery's rule that a shipped config reports over at least 8 sampling seeds."""
    config = load_config(name)
    plan = kind.prepare(config)
    assert plan.header.n_seeds >= 8
    return config, plan


def written_figure(kind: Any, ds: Any, path: Path) -> Any:
    """``kind.plot(ds, path)``: the figure, checked to be written at ``path`` (more than
    1000 bytes: not an empty image)."""
    fig = kind.plot(ds, path)
    assert path.stat().st_size > 1000
    return fig
