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

import contextlib
import io
import json
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
    config: Any,
    out: Path,
    n_steps: int | None,
    quiet: bool,
    stem: str | None,
    overwrite: bool,
    runner: Any = None,
) -> None:
    """Validate, check the outputs, run (``runner(experiment, plan, progress)``, default
    ``experiment.run``), write the dataset and its figure, print the table."""
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
        if runner is None:
            ds = experiment.run(plan, progress=not quiet)
        else:
            ds = runner(experiment, plan, not quiet)
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


def _gallery_page_path(page: Path, folder: Path) -> tuple[Path, str]:
    """(the --page path, resolved; OUT relative to its folder, POSIX) after checking it
    is a .md file in OUT or a folder above it, so the figure links stay relative."""
    page = Path(page).expanduser().resolve()
    if page.suffix != ".md":
        raise ValueError(f"--page must name a markdown file ending in .md (got {page})")
    try:
        figures = Path(folder).expanduser().resolve().relative_to(page.parent)
    except ValueError:
        raise ValueError(
            f"--page {page} must lie in --out {folder} or in a folder above it, so that "
            "its figure links are relative (e.g. --out docs/gallery --page docs/gallery.md)"
        ) from None
    return page, figures.as_posix() if figures != Path(".") else ""


@app.command()
def gallery(
    configs: list[str] = typer.Argument(
        None, help="gallery configs (.toml paths or built-in names; default: all built-in ones)"
    ),
    out: Path = typer.Option(Path("results/gallery"), help="output folder"),
    n_seeds: int = typer.Option(None, help="override every config's number of sampling seeds"),
    quick: bool = typer.Option(False, help="each config at reduced length (its [quick] table)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    overwrite: bool = typer.Option(False, help="replace earlier results of these configs in OUT"),
    page: Path = typer.Option(
        None,
        help="also write the page here, its figure links relative to it "
        "(e.g. --out docs/gallery --page docs/gallery.md); it must lie in or above OUT",
    ),
):
    """Run the papers' gallery: each config's OUT/<name>.nc and OUT/<name>.png, then
    OUT/gallery.md (and --page) with every published number beside ours and every claim
    checked."""
    from sgdsde.experiments import experiment_for, load_config
    from sgdsde.experiments.gallery import (
        gallery_configs,
        gallery_page,
        gallery_summary,
        is_gallery_config,
        quick_config,
    )
    from sgdsde.run.outputs import check_new_files, check_output_folder, write_atomically

    try:
        names = configs or gallery_configs()
        if not names:
            raise ValueError("no gallery configs to run: name .toml files of a gallery kind")
        plans = []
        for name in names:
            cfg = load_config(name)
            if not is_gallery_config(cfg):
                raise ValueError(
                    f"{name} is not a gallery config (kind {cfg.get('kind', 'sgd')!r}): "
                    "use sgdsde run"
                )
            if quick:
                cfg = quick_config(cfg)
            if n_seeds is not None:
                cfg["n_seeds"] = n_seeds
            experiment = experiment_for(cfg)
            plans.append((experiment, experiment.prepare(cfg)))
        figures = ""
        if page is not None:  # checked before OUT is created: a bad --page writes nothing
            page, figures = _gallery_page_path(page, out)
        folder = check_output_folder(out, "--out")
        files = [folder / "gallery.md"] + ([page] if page is not None else [])
        for _, plan in plans:
            files += [folder / f"{plan.name}.nc", folder / f"{plan.name}.png"]
        check_new_files(files, overwrite, "pass --overwrite to replace, or choose another --out")
    except ValueError as err:
        _fail(err)
    results, failed = {}, []
    for experiment, plan in plans:
        typer.echo(f"\n## {plan.name}\n")
        try:
            ds = experiment.run(plan, progress=not quiet)
        except Exception as err:  # one failing experiment does not stop the gallery
            failed.append(plan.name)
            typer.echo(f"error: {plan.name} failed: {err!r}", err=True)
            continue
        nc, png = folder / f"{plan.name}.nc", folder / f"{plan.name}.png"
        if _write_result(experiment, ds, nc, png, plan.description or None) is not None:
            failed.append(plan.name)
        typer.echo(experiment.table(ds))
        results[plan.name] = ds
    summary = gallery_summary(results)
    text = gallery_page(results, quick=quick)
    write_atomically(folder / "gallery.md", lambda tmp: tmp.write_text(text + "\n"))
    written = [folder / "gallery.md"]
    if page is not None:
        text = gallery_page(results, quick=quick, figures=figures)
        written.append(write_atomically(page, lambda tmp: tmp.write_text(text + "\n")))
    typer.echo(f"\n## summary\n\n{summary}\n\nwrote {', '.join(map(str, written))}")
    if failed:
        _fail(f"these experiments failed (see above): {', '.join(failed)}", 1)


@app.command()
def sweep(
    config: str = typer.Argument(..., help='a .toml path or a built-in config of kind = "phase"'),
    out: Path = typer.Option(Path("results"), help="output folder"),
    seed: int = typer.Option(None, min=0, help="override the config's root seed"),
    workers: int = typer.Option(None, help="worker processes on this machine"),
    scheduler: str = typer.Option(None, help="a dask.distributed scheduler ADDRESS"),
    resume: bool = typer.Option(False, help="resume an interrupted sweep of this config in OUT"),
    n_steps: int = typer.Option(None, help="override the run length of every cell"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    overwrite: bool = typer.Option(False, help="replace an earlier result of this config in OUT"),
):
    """Run a phase-diagram sweep (kind = "phase"): blocks of cells go into the resumable
    store OUT/<name>.zarr as they finish; then writes OUT/<name>.nc and OUT/<name>.png."""
    from sgdsde.experiments import experiment_for, load_config
    from sgdsde.experiments.phase import PhaseExperiment, check_sweep_options, execute_phase

    try:
        cfg = load_config(config)
        if seed is not None:
            cfg["seed"] = seed
        experiment = experiment_for(cfg)
        if not isinstance(experiment, PhaseExperiment):
            raise ValueError(
                f"sweep runs configs of kind = 'phase' (config {config} has kind "
                f"{experiment.name!r}): run it with `sgdsde run {config}`"
            )
        check_sweep_options(workers, scheduler, resume, store=Path(out) / "store.zarr")
    except ValueError as err:
        _fail(err)

    def runner(experiment: Any, plan: Any, progress: bool) -> Any:
        # the blocks go into OUT/<name>.zarr as they finish: an interrupted sweep resumes
        store = Path(out) / f"{plan.name}.zarr"
        options = dict(workers=workers, scheduler=scheduler, resume=resume, store=store)
        return execute_phase(plan, progress=progress, overwrite=overwrite, **options)

    _run_and_report(cfg, out, n_steps, quiet, None, overwrite, runner)


@app.command()
def plot(
    result: Path = typer.Argument(..., help="a result file (.nc) written by sgdsde"),
    out: Path = typer.Option(None, help="the figure (default: beside RESULT, .png)"),
    variable: str = typer.Option(
        None, help="phase results: a heatmap of this variable (default: the summary figure)"
    ),
    curves: bool = typer.Option(False, help="phase results: curves over lr with seed bands"),
    overwrite: bool = typer.Option(False, help="replace an existing figure at OUT"),
):
    """Draw the figure of a result: a phase diagram for a sweep, the run curves for a run."""
    from sgdsde.analysis.plots import close_figure, save_figure
    from sgdsde.experiments import EXPERIMENTS
    from sgdsde.run.outputs import check_new_files, check_output_folder

    ds, kind = _load_result(result)
    suffix = "_curves" if curves else (f"_{variable}" if variable else "")
    out = out or result.with_name(f"{result.stem}{suffix}.png")
    try:
        if (variable or curves) and kind != "phase":
            raise ValueError(
                f"--variable and --curves draw phase results; {result} is a {kind!r} result: "
                "drop them"
            )
        if out.suffix not in (".png", ".pdf", ".svg"):
            raise ValueError(f"--out {out} must end in .png, .pdf or .svg")
        check_output_folder(out.parent, "--out")
        check_new_files([out], overwrite, "pass --overwrite to replace it, or choose another --out")
        fig = _figure_of(EXPERIMENTS.make(kind), ds, variable, curves)
    except ValueError as err:
        _fail(err)
    try:
        save_figure(fig, out)
    finally:
        close_figure(fig)
    typer.echo(f"wrote {out}")


def _figure_of(experiment: Any, ds: Any, variable: str | None, curves: bool):
    from sgdsde.analysis.phase_plots import plot_phase_curves, plot_phase_heatmap

    title = ds.attrs.get("description") or None
    if curves:
        return plot_phase_curves(ds, title=title)
    if variable:
        return plot_phase_heatmap(ds, variable, title=title)
    return experiment.plot(ds, title=title)


@app.command()
def info(result: Path = typer.Argument(..., help="a result file (.nc) written by sgdsde")):
    """Describe a result: kind, dims, seeds, version, provenance, regimes, config."""
    ds, kind = _load_result(result)
    typer.echo(_describe(result, ds, kind))


#: Attrs of the provenance block of ``sgdsde info``.
_PROVENANCE = (
    "sgdsde_version",
    "created",
    "host",
    "git_commit",
    "command_line",
    "python_version",
    "numpy_version",
    "numba_version",
    "xarray_version",
)


def _load_result(path: Path) -> tuple[Any, str]:
    """(dataset, experiment kind) of a result file, or one error line and exit 2."""
    from sgdsde.run.dataset import load_dataset

    if not path.is_file():
        _fail(f"{path} does not exist or is not a file: give a result .nc written by sgdsde")
    try:
        ds = load_dataset(path)
    except Exception as err:  # any reader failure: the file is not a dataset we can read
        _fail(f"{path} is not a netCDF dataset ({type(err).__name__}): give a sgdsde result .nc")
    kind = _kind_of(ds)
    if kind is None:
        _fail(
            f"{path} is not a sgdsde dataset (no sgdsde config in its attrs): give a result "
            "written by sgdsde run, sweep or demo"
        )
    return ds, kind


def _kind_of(ds: Any) -> str | None:
    """The experiment kind of a dataset: its ``experiment_kind`` attr, a phase diagram's
    variables, the ``kind`` of its stored config, or a run's (traj, step) layout."""
    from sgdsde.experiments import EXPERIMENTS

    if ds.attrs.get("experiment_kind") in EXPERIMENTS:
        return ds.attrs["experiment_kind"]
    configs = []
    for key in ("experiment_config", "config"):
        try:
            configs.append(json.loads(ds.attrs[key]))
        except (KeyError, TypeError, ValueError):
            continue
    if not configs and "sgdsde_version" not in ds.attrs:
        return None
    if "regime" in ds and "lr" in ds.dims:
        return "phase"
    for cfg in configs:
        if isinstance(cfg, dict) and cfg.get("kind") in EXPERIMENTS:
            return cfg["kind"]
    return "sgd" if {"traj", "step"} <= set(ds.dims) else None


def _describe(path: Path, ds: Any, kind: str) -> str:
    lines = [f"result: {path}", f"kind: {kind}"]
    for key in ("experiment", "description", "title"):
        if ds.attrs.get(key):
            lines.append(f"{key}: {ds.attrs[key]}")
    lines.append("dims: " + ", ".join(f"{d}={n}" for d, n in ds.sizes.items()))
    for name in ds.dims:
        if name in ds.coords:
            values = ds[name].values
            lines.append(f"  {name}: {_span(values)}")
    lines.append("variables: " + ", ".join(f"{v}{tuple(ds[v].dims)}" for v in ds.data_vars))
    seeds = {k: ds.attrs[k] for k in ("seed_entropy", "seed_spawn_key") if k in ds.attrs}
    lines.append(f"seeds: {json.dumps(seeds)}")
    if "seed_layout" in ds.attrs:
        lines.append(f"  layout: {ds.attrs['seed_layout']}")
    lines.append("provenance:")
    lines += [f"  {k}: {ds.attrs[k]}" for k in _PROVENANCE if k in ds.attrs]
    lines.append("regimes: " + _regimes_summary(ds, kind))
    if "gd_stability_edge" in ds.attrs:
        lines.append(
            f"GD stability edge 2/lambda_max(theta_0): {ds.attrs['gd_stability_edge']:.4g}"
        )
    config = ds.attrs.get("experiment_config", ds.attrs.get("config"))
    with contextlib.suppress(TypeError, ValueError):
        config = json.loads(config)
    if isinstance(config, dict):
        lines.append("config:")
        lines += [f"  {key} = {json.dumps(value)}" for key, value in config.items()]
    elif config is not None:
        lines.append(f"config: {config}")
    return "\n".join(lines)


def _span(values: Any) -> str:
    import numpy as np

    if values.size and np.issubdtype(values.dtype, np.number):
        return f"{values.min():g} .. {values.max():g} ({values.size} values)"
    shown = ", ".join(map(str, values[:6])) + (", ..." if values.size > 6 else "")
    return f"{shown} ({values.size} values)"


def _regimes_summary(ds: Any, kind: str) -> str:
    """Counts per regime, and for a phase result the lr range of each regime."""
    import numpy as np

    if kind == "phase":
        regime = ds["regime"]
    else:
        from sgdsde.analysis.regimes import classify_regimes

        try:
            regime = classify_regimes(ds)["regime"]
        except (ValueError, KeyError) as err:
            return f"not classified ({' '.join(str(err).split())})"
    names = regime.attrs["flag_meanings"].split()
    codes = np.atleast_1d(regime.attrs["flag_values"]).astype(int)
    parts = []
    for name, code in zip(names, codes, strict=True):
        hit = regime.values == code
        text = f"{name} {int(hit.sum())}/{hit.size}"
        if kind == "phase" and hit.any():
            lrs = ds["lr"].values[np.any(hit.reshape(hit.shape[0], -1), axis=1)]
            text += f" (lr {lrs.min():g} .. {lrs.max():g})"
        parts.append(text)
    return "; ".join(parts)


@app.command()
def validate(
    config: str = typer.Argument(..., help='a .toml path or a built-in name (e.g. "digits")'),
    out: Path = typer.Option(Path("results/validation"), help="output folder"),
    overwrite: bool = typer.Option(False, help="replace an earlier validation.nc/.png in OUT"),
):
    """Train a deep network with SGD and simulate its SDE model from the same
    initialization over seeds; writes OUT/validation.nc and OUT/validation.png and prints
    the agreement score of every observable."""
    from sgdsde.validation import load_validation_config, validate, validation_summary

    start = time.perf_counter()
    try:
        cfg = load_validation_config(config)
        ds = validate(cfg, out, overwrite=overwrite)
    except ValueError as err:
        _fail(err)
    typer.echo(validation_summary(ds))
    typer.echo(
        f"\nwrote {out / 'validation.nc'} and {out / 'validation.png'} "
        f"in {time.perf_counter() - start:.1f} s"
    )


@app.command("configs")
def list_configs():
    """List the built-in experiment configs."""
    from sgdsde.experiments import builtin_configs

    for name in builtin_configs():
        typer.echo(name)


if __name__ == "__main__":
    app()
