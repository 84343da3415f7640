"""Three implementations of the same minibatch / label-noise SGD update.

    theta_{k+1} = theta_k - eta_k (1/B) sum_{i in S_k} (r_i + sqrt(delta) z_i) grad f(x_i)

with S_k, z_i and eta_k handed in per block (``Block``) so that every engine sees
the same random numbers. ``numba`` is the production engine (parallel over
trajectories, one compiled kernel for all models); ``numpy`` is the plain reference
used by the tests; ``torch`` runs batched on CPU or CUDA with autograd gradients.

Divergence: a trajectory whose sampled residual is non-finite or has r^2/2 above
``max_loss`` is frozen before that update and its ``diverged_step`` set to k.
"""

from __future__ import annotations

import dataclasses

import numba as nb
import numpy as np
import torch
from numba import types

from sgdsde.models.kernels import FASTMATH, MAT, VEC, GradKernel, PredictKernel

_I64V = types.int64[::1]
_SIG = types.void(
    PredictKernel,
    GradKernel,
    MAT,  # theta (T, p), updated in place
    MAT,  # X (n, d)
    VEC,  # y (n,)
    VEC,  # spec
    types.int64[:, :, ::1],  # sampled indices (T, S, B_sampled)
    types.float64[:, :, ::1],  # standard normals (T, S, B_noise)
    MAT,  # step sizes (T, S)
    _I64V,  # batch size per trajectory
    _I64V,  # 1 where the batch is the full data set in order (GD)
    VEC,  # sqrt(delta) per trajectory
    _I64V,  # diverged_step per trajectory (-1: alive), updated in place
    types.int64,  # absolute step of the block's first row
    types.int64,  # first row to run
    types.int64,  # one past the last row to run
    types.float64,  # max_loss
    MAT,  # gradient scratch (T, p)
)


@nb.njit(_SIG, cache=True, parallel=True, fastmath=FASTMATH)
def _sgd_block_numba(
    predict_one,
    grad_one,
    theta,
    X,
    y,
    spec,
    idx,
    normals,
    lrs,
    batch,
    full,
    sqrt_delta,
    diverged_step,
    k0,
    s0,
    s1,
    max_loss,
    scratch,
):
    T, p = theta.shape
    for t in nb.prange(T):
        if diverged_step[t] >= 0:
            continue
        th = theta[t]
        g = scratch[t]
        B = batch[t]
        sd = sqrt_delta[t]
        inv_b = 1.0 / B
        for j in range(p):
            g[j] = 0.0
        for s in range(s0, s1):
            bad = False
            for b in range(B):
                i = b if full[t] else idx[t, s, b]
                r = predict_one(th, X[i], spec) - y[i]
                if not (0.5 * r * r <= max_loss):
                    bad = True
                    break
                if sd != 0.0:
                    r += sd * normals[t, s, b]
                grad_one(th, X[i], spec, r * inv_b, g)
            if bad:
                diverged_step[t] = k0 + s
                break
            lr = lrs[t, s]
            # Clearing g in the update loop saves one pass over p per step.
            for j in range(p):
                th[j] -= lr * g[j]
                g[j] = 0.0


@dataclasses.dataclass
class Block:
    """Everything random or scheduled about steps k0 .. k0 + S - 1 of every trajectory."""

    k0: int
    idx: np.ndarray  # (T, S, B_sampled) int64
    normals: np.ndarray  # (T, S, B_noise) float64
    lrs: np.ndarray  # (T, S) float64

    def dense(self, batch, full, n):
        """(T, S, B_max) example indices with a validity mask, for the batched engines."""
        T, S = self.lrs.shape
        b_max = int(batch.max())
        index = np.zeros((T, S, b_max), dtype=np.int64)
        noise = np.zeros((T, S, b_max))
        for t in range(T):
            B = batch[t]
            index[t, :, :B] = np.arange(n) if full[t] else self.idx[t, :, :B]
            noise[t, :, : min(B, self.normals.shape[2])] = self.normals[t, :, :B]
        mask = np.arange(b_max)[None, :] < batch[:, None]  # (T, B_max)
        return index, noise, mask


class NumbaEngine:
    name = "numba"

    def __init__(self, model, data, theta0, batch, full, sqrt_delta, max_loss, device="cpu"):
        self.model = model
        self.X, self.y = data.X, data.y
        self.theta = np.array(theta0, dtype=np.float64, order="C")
        self.batch, self.full, self.sqrt_delta = batch, full.astype(np.int64), sqrt_delta
        self.max_loss = float(max_loss)
        self.scratch = np.empty_like(self.theta)

    def run(self, block: Block, s0: int, s1: int, diverged_step: np.ndarray) -> None:
        predict_one, grad_one = self.model.kernels
        _sgd_block_numba(
            predict_one,
            grad_one,
            self.theta,
            self.X,
            self.y,
            self.model.spec,
            block.idx,
            block.normals,
            block.lrs,
            self.batch,
            self.full,
            self.sqrt_delta,
            diverged_step,
            block.k0,
            s0,
            s1,
            self.max_loss,
            self.scratch,
        )

    def params(self) -> np.ndarray:
        return self.theta


class NumpyEngine(NumbaEngine):
    """Reference: one vectorised numpy update per step over all trajectories."""

    name = "numpy"

    def run(self, block, s0, s1, diverged_step):
        index, noise, mask = block.dense(self.batch, self.full, self.X.shape[0])
        weight = mask / self.batch[:, None]
        for s in range(s0, s1):
            alive = diverged_step < 0
            Xb = self.X[index[:, s]]  # (T, B_max, d)
            r = self.model.predict(self.theta, Xb) - self.y[index[:, s]]
            bad = alive & np.any(mask & ~(0.5 * r * r <= self.max_loss), axis=1)
            diverged_step[bad] = block.k0 + s
            alive &= ~bad
            coef = (r + self.sqrt_delta[:, None] * noise[:, s]) * weight
            g = np.einsum("tb,tbp->tp", coef, self.model.per_example_grads(self.theta, Xb))
            self.theta[alive] -= block.lrs[alive, s, None] * g[alive]


class TorchEngine:
    """Batched torch engine (float64) on CPU or CUDA; gradients by one backward pass."""

    name = "torch"

    def __init__(self, model, data, theta0, batch, full, sqrt_delta, max_loss, device="cpu"):
        self.model = model
        self.device = torch.device(device)
        self.dev = {"device": self.device, "dtype": torch.float64}
        self.X = torch.as_tensor(data.X, **self.dev)
        self.y = torch.as_tensor(data.y, **self.dev)
        self.theta = torch.as_tensor(np.array(theta0), **self.dev)
        self.batch, self.full = batch, full
        self.sqrt_delta = torch.as_tensor(sqrt_delta, **self.dev)
        self.max_loss = float(max_loss)

    def run(self, block, s0, s1, diverged_step):
        index, noise, mask = block.dense(self.batch, self.full, self.X.shape[0])
        index = torch.as_tensor(index, device=self.device)
        noise = torch.as_tensor(noise, **self.dev)
        mask_t = torch.as_tensor(mask, device=self.device)
        weight = mask_t / torch.as_tensor(self.batch, **self.dev)[:, None]
        lrs = torch.as_tensor(block.lrs, **self.dev)
        alive = torch.as_tensor(diverged_step < 0, device=self.device)
        newly = torch.full_like(alive, False)
        first_bad = torch.full(alive.shape, -1, dtype=torch.int64, device=self.device)
        for s in range(s0, s1):
            Xb = self.X[index[:, s]]
            theta = self.theta.detach().requires_grad_(True)
            f = self.model.predict_torch(theta, Xb)
            r = f.detach() - self.y[index[:, s]]
            bad = alive & torch.any(mask_t & ~(0.5 * r * r <= self.max_loss), dim=1)
            first_bad = torch.where(bad & ~newly, block.k0 + s, first_bad)
            newly |= bad
            alive &= ~bad
            coef = (r + self.sqrt_delta[:, None] * noise[:, s]) * weight
            (g,) = torch.autograd.grad((coef * f).sum(), theta)
            with torch.no_grad():
                step = lrs[:, s, None] * g
                self.theta = torch.where(alive[:, None], self.theta - step, self.theta)
        hit = first_bad.cpu().numpy()
        diverged_step[hit >= 0] = hit[hit >= 0]

    def params(self) -> np.ndarray:
        return self.theta.detach().cpu().numpy()


ENGINES = {"numba": NumbaEngine, "numpy": NumpyEngine, "torch": TorchEngine}
