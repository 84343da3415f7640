"""The ``sgdsde`` command line."""

from __future__ import annotations

import time
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, help="Exact SGD and its SDE model on toy networks.")


def _run_and_report(config: dict, out: Path, n_steps: int | None, quiet: bool, stem: str):
    from sgdsde.analysis.plots import plot_runs
    from sgdsde.experiments import decay_steps, run_experiment, summary_table

    start = time.perf_counter()
    try:
        ds = run_experiment(config, out, n_steps=n_steps, progress=not quiet)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    ds_path = out / f"{config['name']}.nc"
    final = out / f"{stem}.nc"
    if final != ds_path:
        ds_path.replace(final)
    if config.get("kind") == "sgd_vs_sde":
        from sgdsde.analysis.plots import plot_sgd_vs_sde
        from sgdsde.experiments.sgd_vs_sde import sgd_vs_sde_table

        plot_sgd_vs_sde(ds, out / f"{stem}.png", title=config.get("description"))
        typer.echo(sgd_vs_sde_table(ds))
    else:
        plot_runs(ds, out / f"{stem}.png", markers=decay_steps(ds), title=config.get("description"))
        typer.echo(summary_table(ds))
    typer.echo(f"\nwrote {final} and {out / f'{stem}.png'} in {time.perf_counter() - start:.1f} s")


@app.command()
def demo(
    out: Path = typer.Option(Path("results/demo"), help="output folder"),
    n_steps: int = typer.Option(None, help="override the run length (default 100,001)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
):
    """Reproduce the diagonal-network experiment of Andriushchenko et al. (2023), Sec. 3."""
    from sgdsde.experiments import DEMO_CONFIG, load_config

    _run_and_report(load_config(DEMO_CONFIG), out, n_steps, quiet, "demo")


@app.command()
def run(
    config: str = typer.Argument(..., help="a .toml path or a built-in config name"),
    out: Path = typer.Option(Path("results"), help="output folder"),
    n_steps: int = typer.Option(None, help="override the run length"),
    quiet: bool = typer.Option(False, help="no progress bar"),
):
    """Run an experiment config: writes OUT/<name>.nc and OUT/<name>.png."""
    from sgdsde.experiments import load_config

    try:
        cfg = load_config(config)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    _run_and_report(cfg, out, n_steps, quiet, cfg["name"])


@app.command("configs")
def list_configs():
    """List the built-in experiment configs."""
    from sgdsde.experiments import builtin_configs

    for name in builtin_configs():
        typer.echo(name)


if __name__ == "__main__":
    app()
