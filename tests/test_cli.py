"""The command line as a new user meets it: what it writes (only its own final names,
never over an earlier result unless asked), and how it fails (one line, status 2, before
any work)."""

from __future__ import annotations

import os
import re

import pytest
from typer.testing import CliRunner

import sgdsde as s
from sgdsde.cli import app
from sgdsde.experiments import sgd as sgd_kind
from sgdsde.version import __version__

QUICK = ["--n-steps", "100", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result, status: int = 2) -> str:
    assert result.exit_code == status, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"sgdsde {__version__}"


def test_demo_and_run_keep_each_others_results(tmp_path):
    """`sgdsde demo --out DIR` once renamed DIR/dln_sparse_sgd.nc to demo.nc, deleting an
    earlier `sgdsde run dln_sparse_sgd --out DIR` and leaving its PNG stale."""
    assert invoke("run", "dln_sparse_sgd", "--out", str(tmp_path), *QUICK).exit_code == 0
    earlier = (tmp_path / "dln_sparse_sgd.nc").read_bytes()
    assert invoke("demo", "--out", str(tmp_path), *QUICK).exit_code == 0
    assert sorted(os.listdir(tmp_path)) == [
        "demo.nc",
        "demo.png",
        "dln_sparse_sgd.nc",
        "dln_sparse_sgd.png",
    ]
    assert (tmp_path / "dln_sparse_sgd.nc").read_bytes() == earlier


def test_an_existing_result_is_replaced_only_with_overwrite(tmp_path):
    assert invoke("demo", "--out", str(tmp_path), *QUICK).exit_code == 0
    before = {p: (tmp_path / p).read_bytes() for p in ("demo.nc", "demo.png")}
    line = assert_one_line_error(invoke("demo", "--out", str(tmp_path), "--n-steps", "200"))
    assert "already exist" in line and "--overwrite" in line
    assert {p: (tmp_path / p).read_bytes() for p in before} == before
    result = invoke("demo", "--out", str(tmp_path), "--n-steps", "200", "--quiet", "--overwrite")
    assert result.exit_code == 0, result.output
    assert int(s.load_dataset(tmp_path / "demo.nc").step[-1]) == 200
    assert sorted(os.listdir(tmp_path)) == ["demo.nc", "demo.png"]


def test_results_are_readable_by_the_group(tmp_path):
    old = os.umask(0o022)
    try:
        assert invoke("demo", "--out", str(tmp_path), *QUICK).exit_code == 0
    finally:
        os.umask(old)
    for name in ("demo.nc", "demo.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def write_config(tmp_path, text: str):
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return str(path)


def demo_config_text(**replace: str) -> str:
    from importlib import resources

    text = (resources.files("sgdsde") / "configs" / "dln_sparse_sgd.toml").read_text()
    for key, value in replace.items():
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
    return text


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        ({"n_steps": "2000.5"}, "n_steps: must be an integer (got 2000.5)"),
        ({"n_steps": '"2000"'}, "n_steps: must be an integer (got '2000')"),
        ({"common_random_numbers": "true\nn_stepz = 3"}, "did you mean 'n_steps' for 'n_stepz'"),
        ({"common_random_numbers": 'true\nsolver = "heun"'}, "unknown field(s) ['solver']"),
        ({"batch_size": "2.5"}, "sgd.batch_size: must be an integer (got 2.5)"),
        ({"spacing": '"linear"\nfoo = 1'}, "save: unknown field(s) ['foo']"),
    ],
)
def test_bad_configs_fail_on_one_line_before_any_work(tmp_path, monkeypatch, replace, expected):
    def fail(*args, **kwargs):
        raise AssertionError("simulated before validating")

    monkeypatch.setattr(sgd_kind, "simulate_sgd", fail)
    out = tmp_path / "out"
    line = assert_one_line_error(
        invoke("run", write_config(tmp_path, demo_config_text(**replace)), "--out", str(out))
    )
    assert expected in line, line
    assert not out.exists()


def test_a_name_cannot_write_outside_out(tmp_path):
    out = tmp_path / "a" / "b"
    cfg = write_config(tmp_path, demo_config_text(name='"../../x"'))
    line = assert_one_line_error(invoke("run", cfg, "--out", str(out), *QUICK))
    assert "name: must be a file name" in line
    assert sorted(os.listdir(tmp_path)) == ["cfg.toml"]


def test_bad_toml_and_missing_files(tmp_path):
    line = assert_one_line_error(invoke("run", write_config(tmp_path, "name = [")))
    assert "not valid TOML" in line
    line = assert_one_line_error(invoke("run", str(tmp_path / "missing.toml")))
    assert "does not exist" in line
    line = assert_one_line_error(invoke("run", str(tmp_path)))  # a folder
    assert "unknown config" in line or "not a file" in line


def test_out_that_is_a_file_or_unwritable_fails_before_any_work(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("simulated before checking --out")

    monkeypatch.setattr(sgd_kind, "simulate_sgd", fail)
    a_file = tmp_path / "file"
    a_file.write_text("notes")
    line = assert_one_line_error(invoke("demo", "--out", str(a_file), *QUICK))
    assert "--out" in line and "is a file" in line
    line = assert_one_line_error(invoke("demo", "--out", str(a_file / "sub"), *QUICK))
    assert "--out" in line and "not a folder we can write to" in line
    assert a_file.read_text() == "notes"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = assert_one_line_error(invoke("demo", "--out", str(folder), *QUICK))
        assert "not a folder we can write to" in line
    finally:
        folder.chmod(0o755)


def test_a_failing_figure_keeps_the_data_and_drops_the_stale_figure(tmp_path, monkeypatch):
    assert invoke("demo", "--out", str(tmp_path), *QUICK).exit_code == 0

    def broken_plot(self, ds, path=None, *, title=None):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(sgd_kind.SGDExperiment, "plot", broken_plot)
    result = invoke("demo", "--out", str(tmp_path), "--n-steps", "200", "--quiet", "--overwrite")
    line = assert_one_line_error(result, status=1)
    assert "no fonts" in line and "demo.nc is written" in line
    assert sorted(os.listdir(tmp_path)) == ["demo.nc"]  # no figure of the older run
    assert int(s.load_dataset(tmp_path / "demo.nc").step[-1]) == 200
    assert "| run |" in result.output  # the table is still printed


def test_a_failing_write_changes_neither_file(tmp_path, monkeypatch):
    """Dataset and figure are renamed into place only once both are written."""
    assert invoke("demo", "--out", str(tmp_path), *QUICK).exit_code == 0
    before = {p: (tmp_path / p).read_bytes() for p in ("demo.nc", "demo.png")}

    def disk_full(ds, file):
        with open(file, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sgdsde.run.dataset.write_netcdf", disk_full)
    result = invoke("demo", "--out", str(tmp_path), "--n-steps", "200", "--quiet", "--overwrite")
    assert result.exit_code != 0
    assert sorted(os.listdir(tmp_path)) == ["demo.nc", "demo.png"]  # no temporaries left
    assert {p: (tmp_path / p).read_bytes() for p in before} == before


def test_configs_lists_the_builtin_ones():
    result = invoke("configs")
    assert result.exit_code == 0
    names = result.output.split()
    assert names == sorted(names)  # the built-in ones (the gallery adds its paper_* configs)
    assert {
        "dln_label_noise_sde",
        "dln_sparse_sgd",
        "paper_collapse_gelu",
        "paper_collapse_quartic",
        "paper_collapse_tanh",
        "phase_dln_label_noise_gd",
        "phase_dln_sde",
        "phase_dln_sde_label_noise",
        "phase_dln_sgd",
    } <= set(names)
