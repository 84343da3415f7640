"""What the gallery kinds' tests share: a shipped config at reduced size, a claim
entry, and a config run through its kind."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
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
