"""`sgdsde gallery`: runs gallery configs, writes each result and gallery.md; the
results are readable by `sgdsde info` and `sgdsde plot`."""

from __future__ import annotations

import os
import re
import tomllib
from importlib import resources

import pytest
from typer.testing import CliRunner

from sgdsde.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def tiny_config(tmp_path):
    text = (resources.files("sgdsde") / "configs" / "paper_collapse_quartic.toml").read_text()
    for key, value in dict(n_steps=400, n_paths=4, n_seeds=2, growth_time=2.0).items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    assert tomllib.loads(text)["n_steps"] == 400 and tomllib.loads(text)["n_seeds"] == 2
    return path


def test_gallery_runs_writes_and_summarizes(tiny_config, tmp_path):
    out = tmp_path / "out"
    result = invoke("gallery", tiny_config, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == [
        "gallery.md",
        "paper_collapse_quartic.nc",
        "paper_collapse_quartic.png",
    ]
    summary = (out / "gallery.md").read_text()
    assert "| paper_collapse_quartic | zeta=0.5 | growth_rate | 1.375 |" in summary
    assert "| experiment | claim | holds |" in summary and "seeds" in summary
    info = invoke("info", out / "paper_collapse_quartic.nc")
    assert info.exit_code == 0 and "paper_collapse_quartic" in info.output
    plot = invoke("plot", out / "paper_collapse_quartic.nc", "--out", tmp_path / "f.png")
    assert plot.exit_code == 0 and (tmp_path / "f.png").stat().st_size > 1000
    again = invoke("gallery", tiny_config, "--out", out, "--quiet")
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_gallery_refuses_a_config_of_another_kind_before_any_work(tmp_path):
    result = invoke("gallery", "dln_sparse_sgd", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "not a gallery config" in result.output
    assert not (tmp_path / "out").exists()


def test_quick_gallery_runs_every_builtin_experiment_and_writes_the_page(tmp_path):
    from sgdsde.experiments.gallery import gallery_configs

    names = gallery_configs()
    assert len(names) == 11
    result = invoke("gallery", "--quick", "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "gallery.md").read_text()
    assert page.startswith("# The papers' gallery") and "Quick run" in page
    for name in names:
        assert f"## {name}" in page and f"![{name}]({name}.png)" in page
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert page.count("**Claims.** ") == 11 and "claims hold for the median" in page
    assert "## Summary" in page and "| experiment | claim | holds |" in page


def test_quick_config_merges_nested_overrides_and_defaults_without_a_quick_table():
    from sgdsde.experiments.gallery import quick_config

    cfg = {"n_steps": 1000, "problems": {"a": {"n_steps": 50, "lr": 0.1}}}
    quick = quick_config({**cfg, "quick": {"n_seeds": 2, "problems": {"a": {"n_steps": 5}}}})
    assert quick == {"n_steps": 1000, "n_seeds": 2, "problems": {"a": {"n_steps": 5, "lr": 0.1}}}
    assert quick_config(cfg) == {**cfg, "n_seeds": 2, "n_steps": 100}
    assert cfg["problems"]["a"]["n_steps"] == 50  # the input is not changed


def test_gallery_page_option_writes_a_second_page_with_relative_figure_links(tiny_config, tmp_path):
    out = tmp_path / "docs" / "gallery"
    page = tmp_path / "docs" / "gallery.md"
    result = invoke("gallery", tiny_config, "--out", out, "--page", page, "--quiet")
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "![paper_collapse_quartic](gallery/paper_collapse_quartic.png)" in text
    inner = (out / "gallery.md").read_text()
    assert "![paper_collapse_quartic](paper_collapse_quartic.png)" in inner
    assert text.replace("](gallery/", "](") == inner  # the same page, links aside
    again = invoke("gallery", tiny_config, "--out", tmp_path / "docs" / "new", "--page", page)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert not (tmp_path / "docs" / "new" / "paper_collapse_quartic.nc").exists()


@pytest.mark.parametrize("page", ["elsewhere/gallery.md", "docs/gallery.txt"])
def test_gallery_refuses_a_page_outside_or_above_out_before_any_work(tiny_config, tmp_path, page):
    out = tmp_path / "docs" / "gallery"
    result = invoke("gallery", tiny_config, "--out", out, "--page", tmp_path / page)
    assert result.exit_code == 2 and "--page" in result.output
    assert not out.exists() and not (tmp_path / page).exists()
