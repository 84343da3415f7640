"""Start-up times: import, the command line, and time to the first step of every SGD
engine and SDE solver, each in a fresh interpreter (as a user meets them).

Rows (wall time of the whole process, interpreter start included; median of --repeats):

* cold import: ``import sgdsde`` with an empty numba cache (``NUMBA_CACHE_DIR`` set to
  a fresh folder), as on a fresh install;
* warm import: ``import sgdsde`` again;
* ``sgdsde --help`` (the console script's code, ``sgdsde.cli:app``);
* first step, warm: import, build a small problem (diagonal network d = 20, n = 10,
  T = 4) and run one step with each engine of ``ENGINES`` and each solver of
  ``SOLVERS`` (kernels loaded from numba's cache); the columns split the time into
  the imports (``sgdsde`` and the simulator's modules) and the first ``simulate_*``
  call (kernels loaded or compiled, the step, the recording);
* first step, cold (not with --quick): the same with an empty numba cache, so every
  kernel the path needs compiles (tens of seconds each; run once).

Goals (issue 7): ``import sgdsde`` under 1.5 s warm, ``sgdsde --help`` under 1 s; the
last column is time / goal (<= 1 meets it).

    python benchmarks/bench_startup.py            # full (several minutes: cold compiles)
    python benchmarks/bench_startup.py --quick    # without the cold first steps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOALS = {"warm import": 1.5, "sgdsde --help": 1.0}

IMPORT = "import sgdsde"
HELP = "from sgdsde.cli import app; app()"
FIRST_STEP = """
import json, time
t0 = time.perf_counter()
import sgdsde as s
{load}
t1 = time.perf_counter()
data = s.sparse_regression(n=10, d=20, k=3, n_test=5, seed=0)
model = s.make_model("diagonal_linear", d=20)
t2 = time.perf_counter()
{call}
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "first_step": t3 - t2}}))
"""
SGD_LOAD = "simulate = s.simulate_sgd"
SGD_CALL = "simulate(model, data, 0.1, n_steps=1, n_traj=4, save_steps=[0, 1], engine={name!r})"
SDE_LOAD = "simulate = s.simulate_sde\nfrom sgdsde.sde import LabelNoise"
SDE_CALL = (
    "simulate(model, data, LabelNoise(delta=0.1, lr=0.1), dt=0.1, n_steps=1, n_traj=4,"
    " save_steps=[0, 1], solver={name!r})"
)

# A solver for your own terms (``takes_terms``) gets the quartic well's kind of noise,
# g(theta) = 0.1 theta, as a torch function (a numba kernel defined in ``python -c``
# could not be cached on disk, so it would compile in every process).
TERMS_LOAD = "simulate = s.simulate_sde\nfrom sgdsde.sde import DiagonalDiffusion, SDETerms"
TERMS_CALL = (
    "simulate(model, data, SDETerms(diffusion=DiagonalDiffusion(lambda t, th: 0.1 * th)),"
    " dt=0.1, n_steps=1, n_traj=4, save_steps=[0, 1], solver={name!r})"
)


def run(code: str, args: list[str] = (), cache_dir: str | None = None) -> tuple[float, dict]:
    """(wall seconds, the JSON the process printed or {}) for ``python -c code args``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{code!r} failed:\n{out.stderr}")
    lines = out.stdout.strip().splitlines()
    report = lines[-1] if lines and lines[-1].startswith("{") else "{}"
    return wall, json.loads(report)


def median_run(code: str, repeats: int, args: list[str] = ()) -> tuple[float, dict]:
    runs = [run(code, args) for _ in range(repeats)]
    wall = statistics.median(r[0] for r in runs)
    parts = {key: statistics.median(r[1][key] for r in runs) for key in runs[0][1]}
    return wall, parts


def cold_run(code: str, args: list[str] = ()) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache:
        return run(code, args, cache_dir=cache)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the cold first steps")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from sgdsde.dynamics.engines import ENGINES
    from sgdsde.sde.solvers import SOLVERS

    steps = [
        (f"SGD engine {name}", FIRST_STEP.format(load=SGD_LOAD, call=SGD_CALL.format(name=name)))
        for name in ENGINES
    ]
    for name, solver in SOLVERS.items():
        load, call = (TERMS_LOAD, TERMS_CALL) if solver.takes_terms else (SDE_LOAD, SDE_CALL)
        steps.append(
            (f"SDE solver {name}", FIRST_STEP.format(load=load, call=call.format(name=name)))
        )
    for _, code in steps:  # fill the on-disk cache so that "warm" means warm
        run(code)

    rows = [("cold import", *cold_run(IMPORT)), ("warm import", *median_run(IMPORT, args.repeats))]
    rows.append(("sgdsde --help", *median_run(HELP, args.repeats, ["--help"])))
    rows += [
        (f"first step, warm: {label}", *median_run(code, args.repeats)) for label, code in steps
    ]
    if not args.quick:
        rows += [(f"first step, cold: {label}", *cold_run(code)) for label, code in steps]

    print(
        f"start-up, {os.cpu_count()} cores, python {sys.version.split()[0]}; wall time of a "
        f"fresh process, median of {args.repeats} (cold: 1 run, empty numba cache)"
    )
    head = ("what", "wall s", "import s", "1st step s", "goal s", "/ goal")
    print(f"{head[0]:42s} {head[1]:>8s} {head[2]:>9s} {head[3]:>10s} {head[4]:>7s} {head[5]:>7s}")
    for label, wall, parts in rows:
        goal = GOALS.get(label)
        cells = [
            f"{parts['import']:9.2f}" if "import" in parts else f"{'':9s}",
            f"{parts['first_step']:10.2f}" if "first_step" in parts else f"{'':10s}",
            f"{goal:7.1f}" if goal else f"{'':7s}",
            f"{wall / goal:7.2f}" if goal else f"{'':7s}",
        ]
        print(f"{label:42s} {wall:8.2f} " + " ".join(cells))


if __name__ == "__main__":
    main()
