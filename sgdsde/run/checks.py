"""Argument checks shared by every simulator: each raises a ValueError that names the
argument, the value and the fix, before any work starts."""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import re
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from sgdsde.data import RegressionData
from sgdsde.lazy import lazy_module
from sgdsde.models.base import Model
from sgdsde.models.torch_model import TorchModel, no_kernels_error
from sgdsde.random import as_seed_sequence, fresh_copy

torch = lazy_module("torch")


def check_model_data(model: Any, data: Any, *, torch_model_ok: bool = False) -> None:
    """Raise ValueError unless ``model`` is a Model (or, where the caller runs torch
    maths only and passes ``torch_model_ok=True``, any TorchModel) and ``data``
    RegressionData of its dimension."""
    if not isinstance(model, TorchModel):
        raise ValueError(f"model must be a sgdsde Model (got {type(model).__name__})")
    if not torch_model_ok and not isinstance(model, Model):
        raise no_kernels_error(model)
    if not isinstance(data, RegressionData):
        raise ValueError("data must be a sgdsde.data.RegressionData (see sgdsde.data)")
    if data.d != model.input_dim:
        raise ValueError(
            f"data has input dimension {data.d} but the model expects {model.input_dim}: "
            "build the model with the data's dimension"
        )


def check_n_steps(n_steps: Any) -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer (got {n_steps!r})")
    return int(n_steps)


def check_bounds(max_loss: float, l0_threshold: float) -> None:
    """Raise ValueError unless ``max_loss > 0`` and ``l0_threshold >= 0`` (NaN fails both)."""
    if not (max_loss > 0):
        raise ValueError(
            f"max_loss must be > 0 (got {max_loss!r}): it is the training loss above which a "
            "trajectory counts as diverged"
        )
    if not (l0_threshold >= 0):
        raise ValueError(
            f"l0_threshold must be >= 0 (got {l0_threshold!r}): |beta_i| above it counts in "
            "l0_norm (1e-50 counts every non-zero coordinate)"
        )


def agree_n_traj(n_traj: Any, sizes: Mapping[str, int]) -> int:
    """The number of trajectories implied by ``n_traj`` and per-trajectory argument sizes."""
    sizes = dict(sizes)
    if n_traj is not None:
        if isinstance(n_traj, bool) or not isinstance(n_traj, int | np.integer) or n_traj < 1:
            raise ValueError(f"n_traj must be a positive integer (got {n_traj!r})")
        sizes["n_traj"] = int(n_traj)
    distinct = set(sizes.values())
    if len(distinct) > 1:
        raise ValueError(
            f"per-trajectory arguments disagree on the number of trajectories: {sizes}"
        )
    return distinct.pop() if distinct else 1


def shared_traj_sizes(theta0: Any, run_names: Any, seed: Any) -> dict[str, int]:
    """Trajectory counts implied by the arguments every simulator takes: a (T, p)
    theta0 (a single (p,) row is shared by all), run names, and one seed per trajectory."""
    sizes: dict[str, int] = {}
    if theta0 is not None and np.ndim(theta0) == 2:
        sizes["theta0"] = int(np.shape(theta0)[0])
    if run_names is not None:
        sizes["run_names"] = len(run_names)
    if isinstance(seed, list | tuple | np.ndarray):
        sizes["seed"] = len(seed)
    return sizes


def check_positive_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number > 0 (got {value!r})")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0 (got {value!r})")
    return float(value)


def check_int(name: str, value: Any, lo: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo} (got {value!r}): {fix}")
    return int(value)


def check_single_seed(seed: Any) -> np.random.SeedSequence:
    """One int or SeedSequence (not one per trajectory) as a fresh SeedSequence."""
    if isinstance(seed, list | tuple | np.ndarray):
        raise ValueError(
            "seed must be one int or SeedSequence (the comparison spawns one child per "
            "trajectory itself)"
        )
    return fresh_copy(as_seed_sequence(seed))


#: A file name we create: letters, digits, '_', '.', '-', not starting with a dot.
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def check_file_name(name: str, value: Any) -> str:
    """``value`` if it is safe as a file name inside an output folder (letters, digits,
    ``_ . -``, no leading dot, at most 200 characters), else a ValueError: such a name can
    neither leave the folder (``../x``, ``/x``) nor hide a file."""
    if not isinstance(value, str) or not _FILE_NAME.fullmatch(value) or len(value) > 200:
        raise ValueError(
            f"{name} must be a file name of letters, digits, '_', '.' and '-' not starting "
            f"with '.' (got {value!r}): it names the output files, e.g. {name} = \"my_run\""
        )
    return value


def check_keys(
    where: str, given: Collection[str], accepted: Collection[str], required: Collection[str] = ()
) -> None:
    """Raise ValueError if ``given`` (the keys of a table, the options of a call) has a key
    outside ``accepted`` or lacks one of ``required``; the message names ``where``, the
    keys at fault (with a "did you mean" for a near miss) and every accepted key."""
    accepted = list(accepted)
    unknown = [key for key in given if key not in accepted]
    if unknown:
        hints = [
            f"{close[0]!r} for {key!r}"
            for key in unknown
            if (close := difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.6))
        ]
        hint = f"; did you mean {', '.join(hints)}?" if hints else ""
        raise ValueError(
            f"{where}: unknown field(s) {sorted(map(str, unknown))}: it accepts {accepted}{hint}"
        )
    missing = [key for key in required if key not in given]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}: it accepts {accepted}")


def accepted_options(target: Any) -> tuple[list[str], list[str]]:
    """(accepted, required) keyword options of a function or class (its ``__init__``,
    e.g. a dataclass's init fields): the parameters that can be passed by keyword, and
    those among them without a default."""
    accepted, required = [], []
    for param in inspect.signature(target).parameters.values():
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            accepted.append(param.name)
            if param.default is param.empty:
                required.append(param.name)
    return accepted, required


def check_options(where: str, target: Any, options: Collection[str]) -> None:
    """``check_keys`` of the keyword ``options`` about to be passed to ``target`` (a
    function or class) against its signature: unknown ones and missing required ones
    raise a ValueError naming ``where``."""
    accepted, required = accepted_options(target)
    check_keys(where, options, accepted, required)


def check_seed(seed: Any) -> Any:
    """``seed`` unchanged if it is an int, None, a SeedSequence or a sequence of those
    (one per trajectory); a ``numpy.random.Generator`` is refused: its stream cannot be
    spawned into per-trajectory children reproducibly, so bit-for-bit reproducible
    runs need the seed itself."""
    seeds = seed if isinstance(seed, list | tuple | np.ndarray) else [seed]
    for one in seeds:
        if isinstance(one, np.random.Generator | np.random.BitGenerator):
            raise ValueError(
                f"seed must be an int or numpy.random.SeedSequence (got a {type(one).__name__}): "
                "bit-for-bit reproducibility needs the seed itself, spawned into one child per "
                "trajectory; pass the int or SeedSequence you would have built the generator from"
            )
    return seed


def check_device(device: Any, who: str, *, cpu_only: str | None = None) -> str:
    """``device`` as a string after checking that ``who`` (e.g. "solver 'euler_numba'")
    can run on it here: "cpu" always; any torch device string otherwise, "cuda" only where
    torch finds a CUDA device.

    cpu_only: for a CPU-only stepper, the sentence naming the alternative (e.g. "use
    solver='euler_torch' for a GPU"); any device but "cpu" is then refused with it.
    """
    name = str(device)
    if name == "cpu":
        return name
    if cpu_only is not None:
        raise ValueError(f"{who} runs on the CPU only (got device={device!r}): {cpu_only}")
    try:
        parsed = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be 'cpu' or a torch device such as 'cuda' (got {device!r}): {err}"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{who} got device={device!r} but torch finds no CUDA device on this machine: "
            "use device='cpu' (or install a CUDA build of torch on a GPU machine)"
        )
    return name
