"""The main job: `sgdsde demo` and the experiment-config runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sgdsde as s
from sgdsde.cli import app
from sgdsde.experiments import DEMO_CONFIG, load_config, run_experiment, summary_table

ROOT = Path(__file__).resolve().parents[1]


def test_demo_cli_writes_table_dataset_and_figure(tmp_path):
    result = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path), "--n-steps", "2000", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "decay at 50%" in result.output and "| run |" in result.output
    ds = s.load_dataset(tmp_path / "demo.nc")
    assert list(ds.run.values) == [r["name"] for r in load_config(DEMO_CONFIG)["runs"]]
    assert ds.train_loss.dims == ("traj", "step") and ds.step.values[-1] == 2000
    png = (tmp_path / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_demo_at_reduced_length_shows_the_papers_ordering():
    """A longer large-step phase gives a sparser predictor and a lower test loss
    (Andriushchenko et al. 2023, Fig. 2: l0 200 > 156 > 89 > 71)."""
    ds = run_experiment(load_config(DEMO_CONFIG), n_steps=20_000)
    assert not ds.diverged.values.any()
    l0 = ds.l0_norm.values[:, -1]
    test = ds.test_loss.values[:, -1]
    assert l0[0] == 200
    assert np.all(np.diff(l0) < 0), l0
    assert np.all(np.diff(test) < 0), test


def test_repository_configs_folder_is_the_builtin_one():
    assert load_config(ROOT / "configs" / f"{DEMO_CONFIG}.toml") == load_config(DEMO_CONFIG)


def test_config_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown config"):
        load_config("no_such_config")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)
    cfg = load_config(DEMO_CONFIG)
    del cfg["runs"]
    with pytest.raises(ValueError, match="missing the key 'runs'"):
        run_experiment(cfg, n_steps=10)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_summary_table_marks_diverged_runs():
    cfg = load_config(DEMO_CONFIG)
    cfg["runs"][0]["schedule"] = {"name": "constant", "lr": 5.0}
    ds = run_experiment(cfg, n_steps=500)
    table = summary_table(ds)
    assert "diverged at step" in table.splitlines()[2]


DEMO_TABLE = """\
| run | final train loss | final test loss | l0 norm (|beta_i| > 1e-10) |
|---|---|---|---|
| constant eta=0.2 | 3.00e-16 | 6.25e-03 | 200 |
| eta=0.235, decay at 10% | 2.61e-07 | 2.49e-06 | 93 |
| eta=0.235, decay at 30% | 1.21e-07 | 7.28e-07 | 68 |
| eta=0.235, decay at 50% | 5.19e-08 | 3.02e-07 | 66 |"""


@pytest.mark.slow
def test_demo_prints_the_readme_table_to_the_last_digit():
    """`make demo` at its full length (100,001 steps) prints exactly the README's table."""
    assert summary_table(run_experiment(load_config(DEMO_CONFIG))) == DEMO_TABLE
