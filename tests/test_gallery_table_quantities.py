"""A gallery config's ``table_quantities``: the table prints only those quantities (all
by default), the config may not drop a quantity a published number or claim is about,
and bad values are refused naming the field."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from sgdsde.experiments import EXPERIMENTS, ConfigError, load_config
from sgdsde.experiments.gallery import (
    THEORY_ROWS,
    PaperHeader,
    gallery_table,
    reported_dataset,
    theory_row,
)


def _dataset(table_quantities=()):
    header = PaperHeader(
        "P",
        "F",
        seed=0,
        n_seeds=2,
        claims=(),
        table_quantities=tuple(table_quantities),
    )
    ds = reported_dataset(
        ["a", "b"],
        {"x": np.ones((2, 2)), "y": 2 * np.ones((2, 2)), "z": 3 * np.ones((2, 2))},
        np.zeros((2, 2), bool),
    )
    ds.attrs.update(header.attrs())
    return ds


def test_table_prints_the_chosen_quantities_in_order_and_all_by_default():
    every = gallery_table(_dataset())
    assert [line.split(" | ")[1] for line in every.splitlines() if line.startswith("| a |")] == [
        "x",
        "y",
        "z",
    ]
    short = gallery_table(_dataset(["z", "x"]))
    rows = [line.split(" | ")[:2] for line in short.splitlines() if line[:4] in ("| a ", "| b ")]
    assert rows == [["| a", "z"], ["| a", "x"], ["| b", "z"], ["| b", "x"]]
    # the header round-trips through the dataset's attributes
    assert PaperHeader.from_attrs(_dataset(["z"]).attrs).table_quantities == ("z",)


def test_theory_rows_follow_the_runs():
    ds = _dataset(["x"])
    ds.attrs[THEORY_ROWS] = json.dumps([theory_row("theory: limit", "x", 0.125)])
    lines = gallery_table(ds).splitlines()
    assert lines[lines.index("| b | x | 1 [1, 1] | 0/2 |  |") + 1] == (
        "| theory: limit | x | 0.125 | - | |"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["test_loss", "nonsense"], "table_quantities: unknown quantity 'nonsense'"),
        (["train_loss", "test_loss", "l0_norm", "test_loss"], "lists 'test_loss' twice"),
        (["test_loss", "l0_norm"], "leaves out 'train_loss', which published"),
        (["train_loss", "l0_norm"], "leaves out 'test_loss', which published"),
        ([], "table_quantities: is empty"),
        ("test_loss", "table_quantities: must be a list"),
    ],
)
def test_table_quantities_are_checked_naming_the_field(value, message):
    config = copy.deepcopy(load_config("paper_dln_gd_vs_sgd"))
    config["table_quantities"] = value
    with pytest.raises(ConfigError, match=message):
        EXPERIMENTS.make("paper_dln_gd_vs_sgd").prepare(config)


def test_shipped_dln_configs_keep_every_published_and_claimed_quantity():
    for name in ("paper_dln_gd_vs_sgd", "paper_dln_notebook_data", "paper_dln_loss_slice"):
        config = load_config(name)
        chosen = config["table_quantities"]
        kind = EXPERIMENTS[config["kind"]]
        assert set(chosen) < set(kind.quantities)  # shorter than all of them
        needed = {p["quantity"] for p in config["published"]}
        needed |= {c["quantity"] for c in config["claims"]}
        assert needed <= set(chosen)
        EXPERIMENTS.make(config["kind"]).prepare(config)  # and the checks accept it
