"""The gallery's shared parts: seed summaries, claims checked on medians and per seed,
the reported dataset, the paper header in configs and datasets, the table."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from sgdsde.experiments.config import ConfigError
from sgdsde.experiments.gallery import (
    Claim,
    PaperExperiment,
    PaperHeader,
    PaperPlan,
    check_claim,
    gallery_table,
    plan_fields,
    reported_dataset,
    seed_children,
    seed_summary,
)


def test_seed_summary_leaves_out_diverged_and_non_finite_seeds():
    s = seed_summary([3.0, 1.0, np.nan, 100.0, 2.0], diverged=[False, False, False, True, False])
    assert (s.median, s.low, s.high) == (2.0, 1.0, 3.0)
    assert (s.n_seeds, s.n_diverged, s.n_valid) == (5, 2, 3)
    empty = seed_summary([np.inf, 1.0], diverged=[False, True])
    assert np.isnan(empty.median) and empty.n_diverged == 2


def test_seed_children_do_not_depend_on_how_many():
    a, b = seed_children(7, 3), seed_children(7, 8)
    assert [s.generate_state(2).tolist() for s in a] == [
        s.generate_state(2).tolist() for s in b[:3]
    ]
    assert len({tuple(s.generate_state(2)) for s in b}) == 8


@pytest.mark.parametrize(
    ("relation", "values", "value", "factor", "expected"),
    [
        ("decreasing", [3, 2, 1], None, 2, True),
        ("decreasing", [3, 3, 1], None, 2, False),
        ("increasing", [1, 2, 5], None, 2, True),
        ("increasing", [1, np.nan, 5], None, 2, False),
        ("below", [0.1, 0.2], 0.25, 2, True),
        ("below", [0.1, 0.3], 0.25, 2, False),
        ("above", [5, 6], 4, 2, True),
        ("within", [0.5, 2.0], 1.0, 2, True),
        ("within", [0.49, 1.0], 1.0, 2, False),
        ("within", [1.0, 3.1], 1.0, 3, False),
    ],
)
def test_claim_relations(relation, values, value, factor, expected):
    claim = Claim("c", "q", relation, tuple(f"r{i}" for i in range(len(values))), value, factor)
    assert claim.holds(np.asarray(values, dtype=float)) is expected


def _dataset():
    # run a: 1, 2, 3, 4 ; run b: 0.5, 3, 1, diverged -> ordering a > b holds in seeds 0 and 2
    a = [1.0, 2.0, 3.0, 4.0]
    b = [0.5, 3.0, 1.0, 0.1]
    diverged = [[False] * 4, [False, False, False, True]]
    return reported_dataset(
        ["a", "b"], {"l0": np.array([a, b])}, diverged, attrs={"l0": {"long_name": "l0 norm"}}
    )


def test_check_claim_on_medians_and_per_seed():
    ds = _dataset()
    check = check_claim(Claim("a above b", "l0", "decreasing", ("a", "b")), ds)
    # medians: a 2.5, b 1.0 (diverged seed left out) -> holds; seeds 0 and 2 hold, 3 diverged
    assert check.holds_for_median and (check.n_hold, check.n_seeds) == (2, 4)
    assert check.verdict() == "yes for the median, but only in 2 of 4 seeds"
    reverse = check_claim(Claim("b above a", "l0", "decreasing", ("b", "a")), ds)
    assert not reverse.holds_for_median and reverse.n_hold == 1
    assert reverse.verdict() == "no for the median; holds in 1 of 4 seeds"
    every = check_claim(Claim("a below 5", "l0", "below", ("a",), 5.0), ds)
    assert every.verdict() == "yes (all 4 seeds)"


def test_reported_dataset_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        reported_dataset(["a"], {"q": np.zeros((1, 3))}, np.zeros((1, 4), bool))
    with pytest.raises(ValueError, match="diverged must have shape"):
        reported_dataset(["a", "b"], {}, np.zeros((1, 4), bool))


def test_plan_fields_resolve_the_config_and_tuple_the_run_names():
    header = PaperHeader("p", "f", seed=0, n_seeds=8)
    config = {"name": "x", "kind": "toy", "n_seeds": 8}
    top = {"name": "x", "kind": "toy", "n_seeds": 8, "seed": 0, "claims": []}
    fields = plan_fields(config, top, header, (n for n in ["a", "b"]))
    assert fields == {
        "name": "x",
        "description": "",
        "config": {"name": "x", "kind": "toy", "n_seeds": 8, "seed": 0, "claims": []},
        "header": header,
        "run_names": ("a", "b"),
    }
    assert config == {"name": "x", "kind": "toy", "n_seeds": 8}  # not modified
    plan = PaperPlan(**fields)
    assert plan.run_names == ("a", "b") and plan.config["seed"] == 0


class _Toy(PaperExperiment):
    """A gallery kind for the tests (not registered): runs 'small' and 'large'."""

    name = "toy_gallery"
    quantities: ClassVar[dict[str, str]] = {"l0": "the l0 norm", "test_loss": "test loss"}

    def prepare_experiment(self, config, top, header, checker):
        return PaperPlan(
            name=top.get("name", ""),
            description="",
            config=config,
            header=header,
            run_names=("small", "large"),
        )

    def run(self, plan, *, engine="numba", progress=False):
        n = plan.header.n_seeds
        l0 = np.array([np.full(n, 200.0), np.arange(n) + 30.0])
        loss = np.array([np.full(n, 1e-2), np.full(n, 1e-5)])
        ds = reported_dataset(plan.run_names, {"l0": l0, "test_loss": loss}, np.zeros((2, n), bool))
        return self.finish(plan, ds)

    def plot(self, ds, path=None, *, title=None):
        raise NotImplementedError


CONFIG = {
    "name": "toy",
    "kind": "toy_gallery",
    "paper": "Andriushchenko et al. (2023)",
    "figure": "Fig. 2",
    "n_seeds": 3,
    "departures": ["our data generator, not the notebook's"],
    "published": [
        {"run": "large", "quantity": "l0", "value": 33},
        {"run": "small", "quantity": "test_loss", "range": [0.44, 0.5], "note": "Fig. 2"},
    ],
    "claims": [
        {
            "text": "large steps sparsify",
            "quantity": "l0",
            "relation": "decreasing",
            "runs": ["small", "large"],
        },
        {
            "text": "large-step l0 near 33",
            "quantity": "l0",
            "relation": "within",
            "runs": ["large"],
            "value": 33,
            "factor": 1.05,
        },
    ],
}


def test_gallery_table_prints_ours_beside_the_paper_and_the_claims():
    toy = _Toy()
    ds = toy.run(toy.prepare(CONFIG))
    header = PaperHeader.from_attrs(ds.attrs)
    assert ds.attrs["sgdsde_version"] and ds.attrs["created"] and ds.attrs["n_seeds"] == 3
    assert header.published[1].range == (0.44, 0.5) and header.claims[1].factor == 1.05
    table = gallery_table(ds)
    assert table.startswith("Andriushchenko et al. (2023), Fig. 2")
    assert "| large | l0 | 31 [30, 32] | 0/3 | 33 |" in table
    assert "| small | test_loss | 0.01 [0.01, 0.01] | 0/3 | 0.44-0.5 |" in table
    assert "| large steps sparsify | yes (all 3 seeds) |" in table
    # 30, 31, 32 vs 33 * [1/1.05, 1.05] = [31.4, 34.65]: median 31 is out, seed 2 (32) in
    assert "| large-step l0 near 33 | no for the median; holds in 1 of 3 seeds |" in table
    assert "- our data generator, not the notebook's" in table


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"published": [{"run": "huge", "quantity": "l0", "value": 1}]}, "unknown run 'huge'"),
        ({"published": [{"run": "large", "quantity": "l1", "value": 1}]}, "unknown quantity 'l1'"),
        ({"published": [{"run": "large", "quantity": "l0"}]}, "exactly one of value"),
        ({"published": [{"run": "large", "quantity": "l0", "range": [2, 1]}]}, "lo <= hi"),
        (
            {"claims": [{"text": "t", "quantity": "l0", "relation": "falls", "runs": ["a"]}]},
            "must be one of",
        ),
        (
            {
                "claims": [
                    {"text": "t", "quantity": "l0", "relation": "decreasing", "runs": ["small"]}
                ]
            },
            "at least two runs",
        ),
        (
            {"claims": [{"text": "t", "quantity": "l0", "relation": "below", "runs": ["small"]}]},
            "needs value",
        ),
        ({"departures": "one string"}, "list of non-empty strings"),
        ({"paper": None}, "missing the key 'paper'"),
        ({"n_seeds": 0}, "n_seeds"),
    ],
)
def test_gallery_config_errors_name_the_field(change, message):
    config = {k: v for k, v in {**CONFIG, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        _Toy().prepare(config)


def test_plan_keeps_the_header():
    plan = _Toy().prepare(CONFIG)
    assert plan.header.n_seeds == 3 and plan.header.departures == (
        "our data generator, not the notebook's",
    )
    assert plan.run_names == ("small", "large")
    assert [c.relation for c in plan.header.claims] == ["decreasing", "within"]
