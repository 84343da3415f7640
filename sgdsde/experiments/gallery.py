"""The papers' gallery: what every reproduced toy experiment shares.

Each experiment of the source papers (Andriushchenko et al., ICML 2023; Chen et al.,
NeurIPS 2023; Xing et al., 2018) is one experiment kind with one TOML config. Its
numbers are reported as a distribution over sampling seeds (median and range over
``n_seeds`` >= 8 seeds, and how many diverged) beside the paper's row, which is
usually one seed, and the paper's claims are checked both on the medians and seed by
seed: a published ordering that holds for the median but not in every seed is a
finding for the user, said plainly in the table.

A config of a gallery kind has, besides its kind's own keys:

* ``paper``, ``figure``: what it reproduces (printed above the table);
* ``seed``, ``n_seeds``: the root seed and the number of sampling seeds; seed index s
  is the s-th child of the root (``seed_children``), so a run's seeds do not depend on
  how many others there are;
* ``departures``: sentences on where the config departs from the paper, and why;
* ``[[published]]``: ``run``, ``quantity``, ``value`` (or ``range = [lo, hi]``), ``note``:
  the paper's numbers, each beside ours in the table;
* ``[[claims]]``: ``text``, ``quantity``, ``relation``, ``runs`` (and ``value``, ``factor``):
  a checkable statement of the paper (``Claim``);
* ``table_quantities``: the reported quantities the table prints, in order (default:
  all of the kind's); it must keep every quantity a published number or a claim is
  about (``check_table_quantities``).

An experiment returns a dataset with coordinates ``run`` and ``seed`` holding one
variable per reported quantity with dims ``(run, seed)`` (``reported_dataset``), a
boolean ``diverged`` with the same dims, and whatever curves its figure needs;
``gallery_table`` renders it, with the closed-form predictions of ``sgdsde.theory`` the
experiment lists in its ``theory_rows`` attribute (``theory_row``) as rows of their own.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from sgdsde.analysis.phase import seed_child
from sgdsde.experiments.base import EXPERIMENTS, Experiment, Plan
from sgdsde.experiments.config import (
    COMMON_KEYS,
    ConfigChecker,
    Key,
    builtin_configs,
    load_config,
)
from sgdsde.run.provenance import environment_attrs
from sgdsde.version import __version__

#: Top-level keys every gallery kind accepts (a kind adds its own, ``extra_keys``).
GALLERY_KEYS: dict[str, Key] = {
    **COMMON_KEYS,
    "paper": Key("str", "the paper reproduced, e.g. 'Andriushchenko et al. (2023)'", True),
    "figure": Key("str", "the figure or table reproduced, e.g. 'Fig. 2, diag_nets.ipynb'", True),
    "seed": Key("int", "the root seed; seed index s is its s-th child", default=0, minimum=0),
    "n_seeds": Key(
        "int", "sampling seeds per run (8 or more for a reported number)", default=8, minimum=1
    ),
    "departures": Key(
        "any", "a list of sentences: where the config departs from the paper, and why"
    ),
    "published": Key("tables", "[[published]]: run, quantity, value or range, note", default=[]),
    "claims": Key(
        "tables", "[[claims]]: text, quantity, relation, runs, value, factor", default=[]
    ),
    "quick": Key("table", "[quick]: overrides for `sgdsde gallery --quick` (reduced length)"),
    "table_quantities": Key(
        "any", "the reported quantities the table prints, in order (default: all of them)"
    ),
}

#: Keys of one ``[[published]]`` entry.
PUBLISHED_KEYS: dict[str, Key] = {
    "run": Key("str", "the run it belongs to (a run name of the experiment)", True),
    "quantity": Key("str", "the reported quantity (see the kind's quantities)", True),
    "value": Key("number", "the published value"),
    "range": Key("any", "[lo, hi]: a published range instead of one value"),
    "note": Key("str", "where the number comes from (figure, table, notebook cell)", default=""),
}

#: Claim relations: ``decreasing`` / ``increasing`` (the quantity strictly falls / rises
#: along ``runs``), ``below`` / ``above`` (every run's quantity < / > ``value``),
#: ``within`` (every run's quantity in [value / factor, value * factor]).
RELATIONS = ("decreasing", "increasing", "below", "above", "within")

#: Keys of one ``[[claims]]`` entry.
CLAIM_KEYS: dict[str, Key] = {
    "text": Key("str", "the claim in words, as the paper makes it", True),
    "quantity": Key("str", "the reported quantity it is about", True),
    "relation": Key("str", "how the quantity behaves", True, choices=RELATIONS),
    "runs": Key("any", "the run names, in order for decreasing/increasing", True),
    "value": Key("number", "the bound or target of below/above/within"),
    "factor": Key("number", "within: the allowed factor around value (> 1)", default=2.0),
}


def seed_children(root: Any, n_seeds: int) -> list[np.random.SeedSequence]:
    """The seeds of seed indices 0..n_seeds-1: the s-th child of ``root`` (an int or a
    ``SeedSequence``), the same whatever ``n_seeds`` is (``analysis.phase.seed_child``)."""
    return [seed_child(root, s) for s in range(n_seeds)]


@dataclasses.dataclass(frozen=True)
class SeedSummary:
    """A quantity of one run over sampling seeds: median, min and max over the seeds
    that did not diverge and gave a finite value, with the counts."""

    median: float
    low: float
    high: float
    n_seeds: int
    n_diverged: int

    @property
    def n_valid(self) -> int:
        """Seeds that entered the median."""
        return self.n_seeds - self.n_diverged


def seed_summary(values: Any, diverged: Any = None) -> SeedSummary:
    """Summarize ``values`` (one per seed); a seed flagged in ``diverged`` or with a
    non-finite value counts as diverged and is left out of the median and range."""
    values = np.asarray(values, dtype=float).ravel()
    bad = ~np.isfinite(values)
    if diverged is not None:
        bad |= np.asarray(diverged, dtype=bool).ravel()
    good = values[~bad]
    if good.size == 0:
        return SeedSummary(math.nan, math.nan, math.nan, values.size, int(bad.sum()))
    return SeedSummary(
        float(np.median(good)), float(good.min()), float(good.max()), values.size, int(bad.sum())
    )


@dataclasses.dataclass(frozen=True)
class Published:
    """A published number of ``run``'s ``quantity``: ``value``, or a ``range`` (lo, hi)."""

    run: str
    quantity: str
    value: float | None = None
    range: tuple[float, float] | None = None
    note: str = ""

    def text(self) -> str:
        """The published number as the table prints it."""
        if self.range is not None:
            return f"{_fmt(self.range[0])}-{_fmt(self.range[1])}"
        return _fmt(self.value)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A checkable statement of the paper about one reported quantity.

    text: the claim in words. quantity: the reported quantity. relation: one of
    ``RELATIONS``. runs: the runs (in order for ``decreasing`` / ``increasing``).
    value, factor: the bound of ``below`` / ``above``, the target and allowed factor of
    ``within``.
    """

    text: str
    quantity: str
    relation: str
    runs: tuple[str, ...]
    value: float | None = None
    factor: float = 2.0

    def holds(self, values: np.ndarray) -> bool:
        """Whether the claim holds for ``values`` (one per run of ``runs``; a NaN - a
        diverged run - makes it fail)."""
        v = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(v)):
            return False
        if self.relation == "decreasing":
            return bool(np.all(np.diff(v) < 0))
        if self.relation == "increasing":
            return bool(np.all(np.diff(v) > 0))
        if self.relation == "below":
            return bool(np.all(v < self.value))
        if self.relation == "above":
            return bool(np.all(v > self.value))
        return bool(np.all((v >= self.value / self.factor) & (v <= self.value * self.factor)))


@dataclasses.dataclass(frozen=True)
class ClaimCheck:
    """A claim checked on a dataset: on the medians over seeds, and seed by seed
    (``n_hold`` of ``n_seeds`` seeds; a seed where a run diverged does not hold)."""

    claim: Claim
    holds_for_median: bool
    n_hold: int
    n_seeds: int

    def verdict(self) -> str:
        """The check in words, plain about a claim that holds only for the median."""
        seeds = f"{self.n_hold} of {self.n_seeds} seeds"
        if self.holds_for_median and self.n_hold == self.n_seeds:
            return f"yes (all {self.n_seeds} seeds)"
        if self.holds_for_median:
            return f"yes for the median, but only in {seeds}"
        return f"no for the median; holds in {seeds}"


def check_claim(claim: Claim, ds: xr.Dataset) -> ClaimCheck:
    """Check ``claim`` on a gallery dataset (variables with dims (run, seed))."""
    values = ds[claim.quantity].sel(run=list(claim.runs)).transpose("run", "seed").values
    values = np.asarray(values, dtype=float)
    diverged = ds["diverged"].sel(run=list(claim.runs)).transpose("run", "seed").values
    values = np.where(diverged, np.nan, values)
    medians = [seed_summary(row).median for row in values]
    per_seed = [claim.holds(values[:, s]) for s in range(values.shape[1])]
    return ClaimCheck(claim, claim.holds(np.asarray(medians)), int(sum(per_seed)), len(per_seed))


def reported_dataset(
    runs: Sequence[str],
    quantities: Mapping[str, Any],
    diverged: Any,
    *,
    attrs: Mapping[str, Mapping[str, str]] | None = None,
) -> xr.Dataset:
    """The reported quantities of a gallery experiment: one variable per quantity with
    dims (run, seed), ``diverged`` (run, seed), coordinates ``run`` (names) and ``seed``
    (indices). ``attrs`` gives each quantity's ``long_name`` / ``units``."""
    diverged = np.asarray(diverged, dtype=bool)
    if diverged.ndim != 2 or diverged.shape[0] != len(runs):
        raise ValueError(
            f"diverged must have shape (runs, seeds) = ({len(runs)}, n_seeds) "
            f"(got {diverged.shape})"
        )
    coords = {"run": np.asarray(list(runs), dtype=object), "seed": np.arange(diverged.shape[1])}
    data_vars: dict[str, Any] = {"diverged": (("run", "seed"), diverged)}
    for name, values in quantities.items():
        values = np.asarray(values)
        if values.shape != diverged.shape:
            raise ValueError(
                f"quantity {name!r} must have shape (runs, seeds) = {diverged.shape} "
                f"(got {values.shape})"
            )
        data_vars[name] = (("run", "seed"), values, dict((attrs or {}).get(name, {})))
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs["reported_quantities"] = json.dumps(list(quantities))
    return ds


@dataclasses.dataclass(frozen=True)
class PaperHeader:
    """What a gallery config says about the paper: its ``GALLERY_KEYS``."""

    paper: str
    figure: str
    seed: int
    n_seeds: int
    departures: tuple[str, ...] = ()
    published: tuple[Published, ...] = ()
    claims: tuple[Claim, ...] = ()
    table_quantities: tuple[str, ...] = ()

    def attrs(self) -> dict[str, str]:
        """The header as dataset attributes (JSON where structured)."""
        return {
            "paper": self.paper,
            "figure": self.figure,
            "departures": json.dumps(list(self.departures)),
            "published": json.dumps([dataclasses.asdict(p) for p in self.published]),
            "claims": json.dumps([dataclasses.asdict(c) for c in self.claims]),
            "table_quantities": json.dumps(list(self.table_quantities)),
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> PaperHeader:
        """The header written by ``attrs`` into a dataset."""
        published = [Published(**p) for p in json.loads(attrs.get("published", "[]"))]
        claims = [
            Claim(**{**c, "runs": tuple(c["runs"])}) for c in json.loads(attrs.get("claims", "[]"))
        ]
        return cls(
            paper=attrs.get("paper", ""),
            figure=attrs.get("figure", ""),
            seed=int(attrs.get("seed", 0)),
            n_seeds=int(attrs.get("n_seeds", 0)),
            departures=tuple(json.loads(attrs.get("departures", "[]"))),
            published=tuple(
                dataclasses.replace(p, range=None if p.range is None else tuple(p.range))
                for p in published
            ),
            claims=tuple(claims),
            table_quantities=tuple(json.loads(attrs.get("table_quantities", "[]"))),
        )


def _string_list(checker: ConfigChecker, path: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        checker.problem(path, f"must be a list of non-empty strings (got {value!r})")
        return ()
    return tuple(value)


def _prepare_published(checker: ConfigChecker, entries: list[Any]) -> tuple[Published, ...]:
    out = []
    for i, entry in enumerate(entries):
        path = f"published[{i}]"
        table = checker.table(path, entry, PUBLISHED_KEYS)
        has_value, has_range = "value" in table, "range" in table
        if has_value == has_range:
            checker.problem(path, "give exactly one of value = <number> or range = [lo, hi]")
            continue
        bounds = None
        if has_range:
            r = table["range"]
            if not (
                isinstance(r, list)
                and len(r) == 2
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in r)
                and r[0] <= r[1]
            ):
                checker.problem(f"{path}.range", f"must be [lo, hi] with lo <= hi (got {r!r})")
                continue
            bounds = (float(r[0]), float(r[1]))
        if "run" in table and "quantity" in table:
            value = float(table["value"]) if has_value else None
            out.append(Published(table["run"], table["quantity"], value, bounds, table["note"]))
    return tuple(out)


def _prepare_claims(checker: ConfigChecker, entries: list[Any]) -> tuple[Claim, ...]:
    out = []
    for i, entry in enumerate(entries):
        path = f"claims[{i}]"
        problems = len(checker.problems)
        table = checker.table(path, entry, CLAIM_KEYS)
        runs = _string_list(checker, f"{path}.runs", table.get("runs"))
        relation = table.get("relation")
        if relation in ("decreasing", "increasing") and len(runs) < 2:
            checker.problem(f"{path}.runs", f"{relation} needs at least two runs, in order")
        if relation in ("below", "above", "within") and "value" not in table:
            checker.problem(path, f"relation {relation!r} needs value = <number>")
        if relation == "within" and not table.get("factor", 2.0) > 1:
            checker.problem(f"{path}.factor", f"must be > 1 (got {table.get('factor')!r})")
        if len(checker.problems) > problems:
            continue
        value = table.get("value")
        out.append(
            Claim(
                table["text"],
                table["quantity"],
                relation,
                runs,
                None if value is None else float(value),
                float(table["factor"]),
            )
        )
    return tuple(out)


def prepare_header(checker: ConfigChecker, top: Mapping[str, Any]) -> PaperHeader:
    """The ``PaperHeader`` of a gallery config's checked top level (``GALLERY_KEYS``)."""
    return PaperHeader(
        paper=top.get("paper", ""),
        figure=top.get("figure", ""),
        seed=top.get("seed", 0),
        n_seeds=top.get("n_seeds", 8),
        departures=_string_list(checker, "departures", top.get("departures")),
        published=_prepare_published(checker, top.get("published", [])),
        claims=_prepare_claims(checker, top.get("claims", [])),
        table_quantities=_table_quantities(checker, top.get("table_quantities")),
    )


def _table_quantities(checker: ConfigChecker, value: Any) -> tuple[str, ...]:
    if value == []:
        checker.problem(
            "table_quantities", "is empty: list the quantities to print, or leave it out for all"
        )
    return _string_list(checker, "table_quantities", value)


def check_references(
    checker: ConfigChecker,
    header: PaperHeader,
    runs: Sequence[str],
    quantities: Mapping[str, str],
) -> None:
    """Every published number and claim names a run of the experiment and one of its
    reported quantities (problems recorded with the fix)."""
    entries = [("published", i, [p.run], p.quantity) for i, p in enumerate(header.published)]
    entries += [("claims", i, list(c.runs), c.quantity) for i, c in enumerate(header.claims)]
    for table, i, names, quantity in entries:
        for name in names:
            if name not in runs:
                checker.problem(f"{table}[{i}]", f"unknown run {name!r}: the runs are {list(runs)}")
        if quantity not in quantities:
            checker.problem(
                f"{table}[{i}].quantity",
                f"unknown quantity {quantity!r}: this experiment reports {sorted(quantities)}",
            )


def check_table_quantities(
    checker: ConfigChecker, header: PaperHeader, quantities: Mapping[str, str]
) -> None:
    """The config's ``table_quantities`` (when given) name reported quantities of the
    kind, each once, and keep every quantity that a published number or a claim is
    about: the table drops rows, never a number it is there to show."""
    chosen = header.table_quantities
    for q in chosen:
        if q not in quantities:
            checker.problem(
                "table_quantities",
                f"unknown quantity {q!r}: this experiment reports {sorted(quantities)}",
            )
    for q in {q for q in chosen if chosen.count(q) > 1}:
        checker.problem("table_quantities", f"lists {q!r} twice: list each quantity once")
    if not chosen:
        return
    needed = [(f"published[{i}]", p.quantity) for i, p in enumerate(header.published)]
    needed += [(f"claims[{i}]", c.quantity) for i, c in enumerate(header.claims)]
    for where, q in needed:
        if q not in chosen and q in quantities:
            checker.problem(
                "table_quantities",
                f"leaves out {q!r}, which {where} is about: add it (every published number "
                "and claim keeps its rows in the table)",
            )


@dataclasses.dataclass(frozen=True)
class PaperPlan(Plan):
    """A validated gallery config: its paper header and its run names."""

    header: PaperHeader
    run_names: tuple[str, ...]


def plan_fields(
    config: Mapping[str, Any],
    top: Mapping[str, Any],
    header: PaperHeader,
    run_names: Sequence[str],
) -> dict[str, Any]:
    """The ``PaperPlan`` fields every gallery kind fills alike, as keyword arguments of
    its plan (``MyPlan(**plan_fields(...), <the kind's fields>)``): ``name`` and
    ``description`` from ``top``; ``config``, the resolved config (``config`` with
    ``top``'s defaults filled in, as ``Plan`` documents it); ``header``; ``run_names``.

    config: the config as ``prepare_experiment`` receives it. top: its checked top level
    (``GALLERY_KEYS`` and the kind's ``extra_keys``, defaults filled in). header: the
    config's ``PaperHeader``. run_names: the experiment's runs, in dataset order.
    """
    return {
        "name": top.get("name", ""),
        "description": top.get("description", ""),
        "config": {**config, **top},
        "header": header,
        "run_names": tuple(run_names),
    }


class PaperExperiment(Experiment):
    """A gallery kind: ``GALLERY_KEYS`` plus the kind's ``extra_keys``; the kind's
    ``prepare_experiment`` builds its plan, and ``table`` is ``gallery_table``.

    Subclasses declare ``quantities`` (reported quantity -> its meaning, with units) and
    implement ``prepare_experiment``, ``run`` (returning ``finish(plan, ds)``) and
    ``plot``.
    """

    #: Reported quantity -> what it is (the table's and the schema's documentation).
    quantities: ClassVar[dict[str, str]] = {}
    #: The kind's own top-level keys.
    extra_keys: ClassVar[dict[str, Key]] = {}

    def _prepare(self, config: dict[str, Any], checker: ConfigChecker) -> PaperPlan:
        top = checker.table("", config, {**GALLERY_KEYS, **self.extra_keys})
        header = prepare_header(checker, top)
        plan = self.prepare_experiment(config, top, header, checker)
        check_references(checker, header, plan.run_names, self.quantities)
        check_table_quantities(checker, header, self.quantities)
        return plan

    @abc.abstractmethod
    def prepare_experiment(
        self,
        config: dict[str, Any],
        top: dict[str, Any],
        header: PaperHeader,
        checker: ConfigChecker,
    ) -> PaperPlan:
        """The plan of the checked top level ``top`` (problems recorded in ``checker``);
        ``plan_fields`` gives its ``PaperPlan`` fields."""

    def finish(self, plan: PaperPlan, ds: xr.Dataset) -> xr.Dataset:
        """``ds`` with the paper header, the experiment's name, description and resolved
        config, the package version and the environment (``environment_attrs``) in its
        attrs (what ``gallery_table``, ``sgdsde plot`` and ``sgdsde info`` read)."""
        ds.attrs.update(plan.header.attrs())
        ds.attrs["title"] = plan.description or plan.name
        ds.attrs["description"] = plan.description
        ds.attrs["sgdsde_version"] = __version__
        ds.attrs.update(environment_attrs())
        ds.attrs["seed"] = plan.header.seed
        ds.attrs["n_seeds"] = plan.header.n_seeds
        ds.attrs["experiment"] = plan.name
        ds.attrs["experiment_kind"] = self.name
        ds.attrs["experiment_config"] = json.dumps(plan.config, default=str)
        ds.attrs["quantity_docs"] = json.dumps(
            {q: self.quantities.get(q, "") for q in json.loads(ds.attrs["reported_quantities"])}
        )
        return ds

    def table(self, ds: xr.Dataset) -> str:
        return gallery_table(ds)


#: The dataset attribute listing the table's closed-form rows (JSON, ``theory_row`` each).
THEORY_ROWS = "theory_rows"


def theory_row(name: str, quantity: str, value: float) -> dict[str, Any]:
    """A row of ``gallery_table`` for a closed-form prediction (``sgdsde.theory``), not a
    run: one value, no seeds. name: what it is, starting with "theory: " so that it
    reads as theory beside the runs. quantity: a reported quantity of the runs, or what
    else the value is (with its units). value: the prediction."""
    if not name.startswith("theory"):
        raise ValueError(f"a theory row's name must start with 'theory' (got {name!r})")
    if "|" in name + quantity:
        raise ValueError(
            f"a theory row may not contain '|', the table's separator (got {name!r}, {quantity!r})"
        )
    return {"name": name, "quantity": quantity, "value": float(value)}


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.2e}"


def gallery_table(ds: xr.Dataset) -> str:
    """The markdown table of a gallery dataset: per run and reported quantity (those of
    the config's ``table_quantities``, else all), ours (median [min, max] over seeds,
    diverged count) beside the published number; the
    closed-form rows of its ``THEORY_ROWS`` attribute; then each claim, checked on the
    medians and seed by seed."""
    header = PaperHeader.from_attrs(ds.attrs)
    published = {(p.run, p.quantity): p for p in header.published}
    quantities = list(header.table_quantities) or json.loads(ds.attrs["reported_quantities"])
    n_seeds = ds.sizes["seed"]
    lines = [f"{header.paper}, {header.figure}", ""] if header.paper else []
    lines += [
        f"| run | quantity | ours: median [min, max] over {n_seeds} seeds | diverged | paper |",
        "|---|---|---|---|---|",
    ]
    for run in ds["run"].values:
        diverged = ds["diverged"].sel(run=run).values
        for q in quantities:
            s = seed_summary(ds[q].sel(run=run).values, diverged)
            ours = f"{_fmt(s.median)} [{_fmt(s.low)}, {_fmt(s.high)}]"
            paper = published.get((str(run), q))
            lines.append(
                f"| {run} | {q} | {ours} | {s.n_diverged}/{s.n_seeds} | "
                f"{paper.text() if paper else ''} |"
            )
    for row in json.loads(ds.attrs.get(THEORY_ROWS, "[]")):
        lines.append(f"| {row['name']} | {row['quantity']} | {_fmt(row['value'])} | - | |")
    if header.claims:
        lines += ["", "| claim | holds |", "|---|---|"]
        lines += [f"| {c.text} | {check_claim(c, ds).verdict()} |" for c in header.claims]
    if header.departures:
        lines += ["", "Departures from the paper:"] + [f"- {d}" for d in header.departures]
    return "\n".join(lines)


def is_gallery_config(config: Mapping[str, Any]) -> bool:
    """Whether ``config``'s kind is a gallery kind (a ``PaperExperiment``)."""
    kind = config.get("kind", "sgd")
    return kind in EXPERIMENTS and issubclass(EXPERIMENTS[kind], PaperExperiment)


def gallery_configs() -> list[str]:
    """The built-in configs of gallery kinds (``sgdsde gallery`` runs them all)."""
    return [name for name in builtin_configs() if is_gallery_config(load_config(name))]


def gallery_summary(results: Mapping[str, xr.Dataset]) -> str:
    """One markdown summary of gallery results (experiment name -> dataset): every
    published number beside ours, then every claim with its verdict."""
    numbers = [
        "| experiment | run | quantity | paper | ours: median [min, max] | diverged |",
        "|---|---|---|---|---|---|",
    ]
    claims = ["| experiment | claim | holds |", "|---|---|---|"]
    for name, ds in results.items():
        header = PaperHeader.from_attrs(ds.attrs)
        for p in header.published:
            s = seed_summary(ds[p.quantity].sel(run=p.run).values, ds["diverged"].sel(run=p.run))
            numbers.append(
                f"| {name} | {p.run} | {p.quantity} | {p.text()} | "
                f"{_fmt(s.median)} [{_fmt(s.low)}, {_fmt(s.high)}] | {s.n_diverged}/{s.n_seeds} |"
            )
        claims += [f"| {name} | {c.text} | {check_claim(c, ds).verdict()} |" for c in header.claims]
    return "\n".join([*numbers, "", *claims])


def claims_sentence(ds: xr.Dataset) -> str:
    """One sentence on whether the paper's claims hold in ``ds``: how many hold for the
    median, how many in every seed, and which fail for the median."""
    checks = [check_claim(c, ds) for c in PaperHeader.from_attrs(ds.attrs).claims]
    if not checks:
        return "The config states no claim to check."
    median = sum(c.holds_for_median for c in checks)
    every = sum(c.holds_for_median and c.n_hold == c.n_seeds for c in checks)
    failed = [c.claim.text for c in checks if not c.holds_for_median]
    sentence = (
        f"{median} of the paper's {len(checks)} claims hold for the median over seeds, "
        f"{every} of them in every seed"
    )
    if failed:
        sentence += "; fails for the median: " + "; ".join(failed)
    return sentence + "."


def gallery_page(results: Mapping[str, xr.Dataset], quick: bool = False, figures: str = "") -> str:
    """The gallery's markdown page (``sgdsde gallery`` writes it as ``gallery.md``): per
    experiment its figure, one sentence on whether the paper's claims hold, and its
    table beside the published numbers; then the summary of every published number and
    claim (``gallery_summary``).

    results: {name: dataset} in page order. quick: say the runs were ``--quick``.
    figures: the folder of the ``<name>.png`` figures relative to the page, in POSIX
        form ("" when they sit beside it, e.g. "gallery" for a page one level up).
    """
    prefix = f"{figures.rstrip('/')}/" if figures else ""
    lines = ["# The papers' gallery", ""]
    if quick:
        lines += [
            "Quick run (reduced lengths and seeds, `--quick`): not the published settings.",
            "",
        ]
    for name, ds in results.items():
        title = ds.attrs.get("description") or name
        lines += [f"## {name}", "", f"{title}.", "", f"![{name}]({prefix}{name}.png)", ""]
        lines += [f"**Claims.** {claims_sentence(ds)}", "", gallery_table(ds), ""]
    lines += ["## Summary", "", gallery_summary(results)]
    return "\n".join(lines)


def quick_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` at reduced length for ``sgdsde gallery --quick`` (CI): its ``[quick]``
    table of overrides merged in (nested tables merged key by key), else 2 seeds and a
    tenth of ``n_steps``."""
    config = dict(config)
    overrides = config.pop("quick", None)
    if overrides is None:
        overrides = {"n_seeds": 2}
        if isinstance(config.get("n_steps"), int):
            overrides["n_steps"] = max(config["n_steps"] // 10, 10)
    return _merged(config, overrides)


def _merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out
