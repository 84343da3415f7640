"""The ``sgdsde`` command line (imports the package lazily: ``sgdsde --help`` and
``sgdsde --version`` load no simulator).

Outputs: ``sgdsde run CONFIG --out DIR`` writes exactly ``DIR/<name>.nc`` and
``DIR/<name>.png`` (``sgdsde demo``: ``DIR/demo.nc`` and ``DIR/demo.png``), nothing
else. Before any work it validates the config whole, creates ``DIR`` and checks that
it can write there, and refuses to replace an existing result unless ``--overwrite``.
After the run, the figure is rendered in memory, then both files are written to
temporaries and renamed into place back to back (the dataset first): a failure while
writing changes neither final name. If the figure fails, the dataset is still written
(the run is not lost), any older figure of that name is removed so that no stale
figure sits beside new data, and the command exits with status 1. Bad input (config,
``--out``) prints one line and exits with status 2.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(add_completion=False, help="Exact SGD and its SDE model on toy networks.")


def _show_version(value: bool) -> None:
    if value:
        from sgdsde.version import __version__

        typer.echo(f"sgdsde {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="print the version"
    ),
) -> None:
    """Exact SGD and its SDE model on toy networks."""


def _fail(message: Any, status: int = 2) -> None:
    """Print ``error: <message>`` on one line to stderr and exit with ``status``."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(status)


def _run_and_report(
    config: Any, out: Path, n_steps: int | None, quiet: bool, stem: str | None, overwrite: bool
) -> None:
    from sgdsde.experiments import experiment_for
    from sgdsde.run.dataset import check_dataset_path
    from sgdsde.run.outputs import check_new_files, check_output_folder

    try:
        experiment = experiment_for(config)
        plan = experiment.prepare(config, n_steps=n_steps)
        folder = check_output_folder(out, "--out")
        stem = stem or plan.name
        nc, png = folder / f"{stem}.nc", folder / f"{stem}.png"
        check_dataset_path(nc)
        check_new_files(
            [nc, png], overwrite, "pass --overwrite to replace, or choose another --out"
        )
    except ValueError as err:
        _fail(err)
    start = time.perf_counter()
    try:
        ds = experiment.run(plan, progress=not quiet)
    except ValueError as err:
        _fail(err)
    plot_error = _write_result(experiment, ds, nc, png, plan.description or None)
    typer.echo(experiment.table(ds))
    elapsed = time.perf_counter() - start
    if plot_error is not None:
        typer.echo(f"\nwrote {nc} in {elapsed:.1f} s")
        _fail(f"the figure failed ({plot_error!r}); {nc} is written, without {png.name}", 1)
    typer.echo(f"\nwrote {nc} and {png} in {elapsed:.1f} s")


def _write_result(experiment: Any, ds: Any, nc: Path, png: Path, title: str | None):
    """Write the dataset ``nc`` and its figure ``png`` as one (see the module docstring);
    returns the plotting error, if plotting failed."""
    from sgdsde.analysis.plots import close_figure, write_figure
    from sgdsde.run.dataset import save_dataset, write_netcdf
    from sgdsde.run.outputs import write_together

    image = io.BytesIO()
    try:
        fig = experiment.plot(ds, title=title)
        try:
            write_figure(fig, image)
        finally:
            close_figure(fig)
    except Exception as err:  # any plotting failure: keep the run's data regardless
        save_dataset(ds, nc)
        png.unlink(missing_ok=True)
        return err
    write_together(
        {nc: lambda tmp: write_netcdf(ds, tmp), png: lambda tmp: tmp.write_bytes(image.getvalue())}
    )
    return None


@app.command()
def demo(
    out: Path = typer.Option(Path("results/demo"), help="output folder"),
    n_steps: int = typer.Option(None, help="override the run length (default 100,001)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    overwrite: bool = typer.Option(False, help="replace an earlier demo.nc / demo.png in OUT"),
):
    """Reproduce the diagonal-network experiment of Andriushchenko et al. (2023), Sec. 3:
    writes OUT/demo.nc and OUT/demo.png."""
    from sgdsde.experiments import DEMO_CONFIG, load_config

    _run_and_report(load_config(DEMO_CONFIG), out, n_steps, quiet, "demo", overwrite)


@app.command()
def run(
    config: str = typer.Argument(..., help="a .toml path or a built-in config name"),
    out: Path = typer.Option(Path("results"), help="output folder"),
    n_steps: int = typer.Option(None, help="override the run length"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    overwrite: bool = typer.Option(False, help="replace an earlier result of this config in OUT"),
):
    """Run an experiment config: writes OUT/<name>.nc and OUT/<name>.png."""
    from sgdsde.experiments import load_config

    try:
        cfg = load_config(config)
    except ValueError as err:
        _fail(err)
    _run_and_report(cfg, out, n_steps, quiet, None, overwrite)


@app.command("configs")
def list_configs():
    """List the built-in experiment configs."""
    from sgdsde.experiments import builtin_configs

    for name in builtin_configs():
        typer.echo(name)


if __name__ == "__main__":
    app()
