"""``ModuleModel``: a small ``torch.nn.Module`` as a ``TorchModel`` with flat parameters.

theta is the module's parameters flattened one after the other, in
``named_parameters()`` order, each row-major: for
``nn.Sequential(nn.Linear(d, m), nn.ReLU(), nn.Linear(m, 1, bias=False))`` that is
(W (m, d), b (m), a (m)), the layout of ``TwoLayerReLU(d, m, bias=True)``.

Predictions run the module with its parameters replaced by the rows of theta
(``torch.func.functional_call``), batched over the T trajectories with
``torch.func.vmap`` (or a Python loop, for modules vmap cannot trace); phi^T v is one
backward pass through that (``TorchModel.predict_with_vjp_torch``). Buffers (running
statistics, say) are used as they are and are not part of theta.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from sgdsde.lazy import lazy_module
from sgdsde.models.torch_model import TorchModel

torch = lazy_module("torch")  # imported on first use: not at `import sgdsde`

INIT_SCHEMES = ("copy", "reset")


class ModuleModel(TorchModel):
    """A scalar-output torch module f(x) with flat parameters theta (module doc).

    module: a ``torch.nn.Module`` mapping inputs (m, d) to predictions (m,) or (m, 1).
    input_dim: d; by default the module's own ``input_dim`` where it declares one (the
        networks of ``sgdsde.validation``: C*H*W), else the ``in_features`` of its first
        ``nn.Linear``.
    init_scheme: ``"copy"``: every trajectory starts at the module's current parameters;
        ``"reset"``: each trajectory draws the module's own initialisation (every
        submodule's ``reset_parameters``) from a torch generator seeded by its "init"
        stream, so the draw is reproducible and independent of the other trajectories.
    vectorize: batch trajectories with ``torch.func.vmap`` (True) or a loop (False).
    """

    name = "torch_module"

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        input_dim: int | None = None,
        init_scheme: str = "copy",
        vectorize: bool = True,
    ):
        if not isinstance(module, torch.nn.Module):
            raise ValueError(f"module must be a torch.nn.Module (got {type(module).__name__})")
        if init_scheme not in INIT_SCHEMES:
            raise ValueError(
                f"unknown init_scheme {init_scheme!r}: choose one of {list(INIT_SCHEMES)}"
            )
        params = dict(module.named_parameters())
        if not params:
            raise ValueError("module has no parameters: there is nothing to train")
        self.module = module
        self.init_scheme = init_scheme
        self.vectorize = bool(vectorize)
        self._shapes = {key: tuple(p.shape) for key, p in params.items()}
        self._sizes = {key: math.prod(shape) for key, shape in self._shapes.items()}
        self._input_dim = _input_dim(module) if input_dim is None else input_dim
        if (
            isinstance(self._input_dim, bool)
            or not isinstance(self._input_dim, int | np.integer)
            or self._input_dim < 1
        ):
            raise ValueError(f"input_dim must be a positive integer (got {self._input_dim!r})")
        self._input_dim = int(self._input_dim)
        self._check_output(next(iter(params.values())))

    def _check_output(self, param: torch.Tensor) -> None:
        probe = torch.zeros((2, self._input_dim), dtype=param.dtype, device=param.device)
        with torch.no_grad():
            shape = tuple(self.module(probe).shape)
        if shape not in ((2,), (2, 1)):
            raise ValueError(
                f"module must map inputs (m, {self._input_dim}) to predictions (m,) or "
                f"(m, 1) (got {shape} for m = 2): give it one scalar output"
            )

    @property
    def n_params(self) -> int:
        return sum(self._sizes.values())

    @property
    def input_dim(self) -> int:
        return self._input_dim

    def param_blocks(self) -> dict[str, slice]:
        """One block per module parameter, named as in ``named_parameters()``."""
        blocks, start = {}, 0
        for key, size in self._sizes.items():
            blocks[key] = slice(start, start + size)
            start += size
        return blocks

    def flat_params(self, module: torch.nn.Module | None = None) -> np.ndarray:
        """The parameters of ``module`` (default: the wrapped one) as one float64 (p,)
        vector, in theta's layout."""
        module = self.module if module is None else module
        params = dict(module.named_parameters())
        return torch.cat(
            [params[key].detach().reshape(-1).to("cpu", torch.float64) for key in self._shapes]
        ).numpy()

    def unflatten(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """One trajectory's theta (p,) as the module's named parameters (views)."""
        out, start = {}, 0
        for key, shape in self._shapes.items():
            size = self._sizes[key]
            out[key] = row[start : start + size].reshape(shape)
            start += size
        return out

    def init(self, rngs):
        if self.init_scheme == "copy":
            return np.repeat(self.flat_params()[None], len(rngs), axis=0)
        rows = []
        for rng in rngs:
            clone = copy.deepcopy(self.module)
            # reset_parameters draws from torch's global generator: seed it from this
            # trajectory's stream inside fork_rng, which restores the global state after.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**63)))
                for sub in clone.modules():
                    reset = getattr(sub, "reset_parameters", None)
                    if callable(reset):
                        reset()
            rows.append(self.flat_params(clone))
        return np.stack(rows)

    def predict_torch(self, theta, X):
        def predict_one(row, x):
            out = torch.func.functional_call(self.module, self.unflatten(row), (x,))
            return out.reshape(x.shape[0])

        shared = X.shape[0] == 1
        if self.vectorize:
            if shared:
                return torch.func.vmap(predict_one, in_dims=(0, None))(theta, X[0])
            return torch.func.vmap(predict_one)(theta, X)
        return torch.stack(
            [predict_one(theta[t], X[0] if shared else X[t]) for t in range(theta.shape[0])]
        )

    def to_config(self) -> dict[str, Any]:
        """A description for the run's attrs (the module itself is not a config: a
        ModuleModel is not rebuilt by ``model_from_config``)."""
        return {
            "name": self.name,
            "module": repr(self.module),
            "parameters": {key: list(shape) for key, shape in self._shapes.items()},
            "n_params": self.n_params,
            "input_dim": self.input_dim,
            "init_scheme": self.init_scheme,
        }


def _input_dim(module: torch.nn.Module) -> int:
    declared = getattr(module, "input_dim", None)
    if isinstance(declared, int | np.integer) and not isinstance(declared, bool):
        return int(declared)  # a bad declared value is refused by the caller's check
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear):
            return int(sub.in_features)
    raise ValueError(
        "cannot tell the module's input dimension (it has no nn.Linear): give input_dim"
    )
