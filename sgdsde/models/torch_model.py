"""The torch-model protocol: a model given by its torch maths alone.

Conventions (fixed across the package, see the docs' conventions page):

* loss  L(theta) = 1/(2n) sum_i (f_theta(x_i) - y_i)^2,  residual r_i = f_theta(x_i) - y_i;
* phi_theta(X) in R^{n x p} is the Jacobian of the predictions (row i = grad_theta f(x_i));
* parameters of T trajectories are a (T, p) float64 array (a (T, p) tensor in torch).

A ``TorchModel`` supplies ``n_params``, ``input_dim``, batched predictions
``predict_torch(theta, X)`` and an initialisation ``init(rngs)``; everything else is
derived here from torch autograd: ``predict_with_vjp_torch`` (phi^T v by one backward
pass, never forming phi), which is all the torch SDE solver ``euler_torch`` needs, and the
numpy interface the run loop and the metrics use (predictions, loss, gradient, VJP,
Jacobian, Hessian). A deep network implements it directly or through ``ModuleModel``
(a ``torch.nn.Module`` with flat parameters).

The closed-form models (``sgdsde.models.base.Model``) are the subclass that adds numba
kernels; ``isinstance(model, Model)`` says whether a model has them. The numba solvers
and SGD engines need them: on a plain TorchModel the kernel attributes raise a
ValueError that names the torch solver instead.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from sgdsde.lazy import lazy_module
from sgdsde.registry import to_config

torch = lazy_module("torch")  # imported on first use: not at `import sgdsde`


def as_params(theta: Any, n_params: int) -> np.ndarray:
    """Return theta as a C-contiguous float64 (T, p) array, checking its width."""
    # "W": numba's compiled engines are typed for writable arrays, so a read-only input
    # (a broadcast view, a memory map) is copied rather than rejected at dispatch.
    arr = np.require(theta, dtype=np.float64, requirements=("C", "W"))
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n_params:
        raise ValueError(
            f"parameters must have shape (n_traj, {n_params}) or ({n_params},), "
            f"got {np.shape(theta)}: check the model's n_params"
        )
    return arr


def as_inputs(X: Any, input_dim: int, n_traj: int | None = None) -> np.ndarray:
    """Return inputs as a C-contiguous float64 (1 or T, m, d) array."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1 and input_dim == 1:
        arr = arr[:, None]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[2] != input_dim:
        raise ValueError(
            f"inputs must have shape (m, {input_dim}) or (n_traj, m, {input_dim}), "
            f"got {np.shape(X)}: the model was built for input dimension {input_dim}"
        )
    if n_traj is not None and arr.shape[0] not in (1, n_traj):
        raise ValueError(
            f"per-trajectory inputs have leading size {arr.shape[0]} but there are "
            f"{n_traj} trajectories"
        )
    return np.require(arr, dtype=np.float64, requirements=("C", "W"))


def linear_predictions_torch(X: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """beta_t . x_{t,i} for X (T or 1, m, d) and beta (T, d) -> (T, m).

    Shared inputs take one GEMM beta X^T (and one in the backward pass), not T
    matrix-vector products: ~10x faster for T = 1000 on a CPU (measured)."""
    if X.shape[0] == 1:
        return beta @ X[0].transpose(0, 1)
    return torch.matmul(X, beta[:, :, None])[..., 0]


def no_kernels_error(model: Any) -> ValueError:
    """The error a numba-only solver or engine gives for a model without numba kernels."""
    return ValueError(
        f"model {model.name!r} is a TorchModel without numba kernels, so the numba "
        "solvers and SGD engines cannot run it: integrate its SDE with the torch solver, "
        "simulate_sde(..., solver='euler_torch')"
    )


class TorchModel(abc.ABC):
    """A model f_theta: R^d -> R with flat parameters theta in R^p, in torch maths alone.

    Subclasses give ``name``, ``n_params``, ``input_dim``, ``predict_torch`` and
    ``init``; ``predict_with_vjp_torch`` may be overridden by a closed form (the torch
    solvers spend most of a step there).
    """

    name: ClassVar[str]

    # ----------------------------------------------------------------- to implement
    @property
    @abc.abstractmethod
    def n_params(self) -> int:
        """p, the length of the flat parameter vector."""

    @property
    @abc.abstractmethod
    def input_dim(self) -> int:
        """d, the input dimension."""

    @abc.abstractmethod
    def predict_torch(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Batched torch predictions: theta (T, p), X (T or 1, m, d) -> (T, m)."""

    @abc.abstractmethod
    def init(self, rngs: list[np.random.Generator]) -> np.ndarray:
        """Initial parameters (T, p), one generator per trajectory."""

    def param_blocks(self) -> dict[str, slice]:
        """Named slices of the flat parameter vector (for unpacking and plots)."""
        return {"theta": slice(0, self.n_params)}

    def linear_predictor(self, theta: np.ndarray) -> np.ndarray | None:
        """beta with f_theta(x) = beta . x when the model is linear in x, else None."""
        return None

    def hessian_closed_form(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray):
        """Exact (T, p, p) Hessian of L where a closed form exists, else None."""
        return None

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., <field>: <value>}``: rebuilds the model through ``MODELS``
        (``sgdsde.registry.to_config``)."""
        return to_config(self)

    # ------------------------------------------------- numba kernels: none here
    @property
    def kernels(self) -> tuple[Any, Any]:
        """A TorchModel has no numba kernels: raises a ValueError naming euler_torch."""
        raise no_kernels_error(self)

    @property
    def linear_predictor_kernels(self) -> tuple[Any, Any] | None:
        raise no_kernels_error(self)

    @property
    def gemm_kernels(self) -> Any:
        raise no_kernels_error(self)

    # ------------------------------------------------------------- torch, derived
    def predict_with_vjp_torch(self, theta: torch.Tensor, X: torch.Tensor):
        """(f, vjp): predictions f = predict_torch(theta, X) (detached, (T, m)) and a
        function vjp(w) = phi_theta(X)^T w, (T, m) -> (T, p).

        Default: one autograd forward pass, one backward pass per vjp call (the graph is
        kept, so vjp may be called more than once). Models with a cheap closed form
        override this: the torch solvers spend most of a step here."""
        theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            f = self.predict_torch(theta, X)

        def vjp(w: torch.Tensor) -> torch.Tensor:
            (g,) = torch.autograd.grad(f, theta, grad_outputs=w, retain_graph=True)
            return g

        return f.detach(), vjp

    def loss_torch(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L(theta) per trajectory, (T,), differentiable in theta."""
        r = self.predict_torch(theta, X) - y
        return 0.5 * (r * r).mean(dim=-1)

    # ------------------------------------------------------------- numpy, derived
    def _tensors(self, theta, X) -> tuple[np.ndarray, np.ndarray]:
        theta = as_params(theta, self.n_params)
        return theta, as_inputs(X, self.input_dim, theta.shape[0])

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """The named blocks of theta, each (T, block size)."""
        theta = as_params(theta, self.n_params)
        return {key: theta[:, sl] for key, sl in self.param_blocks().items()}

    def predict(self, theta, X) -> np.ndarray:
        """f_theta(x_i): (T, m) for X of shape (m, d) or (T, m, d)."""
        theta, X3 = self._tensors(theta, X)
        with torch.no_grad():
            return self.predict_torch(torch.from_numpy(theta), torch.from_numpy(X3)).numpy()

    def residuals(self, theta, X, y) -> np.ndarray:
        """r_i = f_theta(x_i) - y_i, shape (T, m)."""
        return self.predict(theta, X) - np.asarray(y, dtype=np.float64)

    def loss(self, theta, X, y) -> np.ndarray:
        """L(theta) = 1/(2n) sum_i r_i^2 for every trajectory, shape (T,)."""
        r = self.residuals(theta, X, y)
        return 0.5 * np.mean(r * r, axis=-1)

    def vjp(self, theta, X, V) -> np.ndarray:
        """phi_theta(X)^T v for each trajectory (T, p), never forming phi."""
        theta, X3 = self._tensors(theta, X)
        V = np.broadcast_to(np.asarray(V, np.float64), (theta.shape[0], X3.shape[1]))
        V = np.require(V, dtype=np.float64, requirements=("C", "W"))
        _, vjp = self.predict_with_vjp_torch(torch.from_numpy(theta), torch.from_numpy(X3))
        return vjp(torch.from_numpy(V)).detach().numpy()

    def grad(self, theta, X, y) -> np.ndarray:
        """grad L = phi^T r / n, shape (T, p)."""
        r = self.residuals(theta, X, y)
        return self.vjp(theta, X, r / r.shape[-1])

    def jacobian(self, theta, X) -> np.ndarray:
        """phi_theta(X), shape (T, m, p): row i is grad_theta f(x_i) (one backward pass
        per input, for metrics and tests)."""
        theta, X3 = self._tensors(theta, X)
        T, m = theta.shape[0], X3.shape[1]
        _, vjp = self.predict_with_vjp_torch(torch.from_numpy(theta), torch.from_numpy(X3))
        rows = []
        for i in range(m):
            e_i = torch.zeros((T, m), dtype=torch.float64)
            e_i[:, i] = 1.0
            rows.append(vjp(e_i).detach().numpy())
        return np.stack(rows, axis=1) if rows else np.zeros((T, 0, self.n_params))

    def per_example_grads(self, theta, X) -> np.ndarray:
        """grad_theta f(x_i) for a minibatch X (B, d) or per-trajectory (T, B, d)."""
        return self.jacobian(theta, X)

    def hessian(self, theta, X, y) -> np.ndarray:
        """Hessian of L, (T, p, p): the closed form if the model has one, else autograd."""
        theta = as_params(theta, self.n_params)
        closed = self.hessian_closed_form(theta, X, y)
        if closed is not None:
            return closed
        return self.hessian_autograd(theta, X, y)

    def hessian_autograd(self, theta, X, y) -> np.ndarray:
        """Hessian of L from torch autograd of ``predict_torch`` (float64)."""
        theta = as_params(theta, self.n_params)
        Xt = torch.from_numpy(as_inputs(X, self.input_dim, theta.shape[0]))
        yt = torch.as_tensor(np.asarray(y, dtype=np.float64))
        out = []
        for t, row in enumerate(theta):
            Xi = Xt if Xt.shape[0] == 1 else Xt[t : t + 1]

            def loss_fn(th, Xi=Xi):
                r = self.predict_torch(th[None], Xi) - yt
                return 0.5 * (r * r).mean()

            out.append(torch.autograd.functional.hessian(loss_fn, torch.from_numpy(row)).numpy())
        return np.stack(out)

    def top_hessian_eigenvalue(self, theta, X, y) -> np.ndarray:
        """lambda_max of the Hessian of L per trajectory (2/lambda_max: the GD edge)."""
        return np.linalg.eigvalsh(self.hessian(theta, X, y))[:, -1]
