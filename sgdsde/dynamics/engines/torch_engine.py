"""Batched torch SGD engine (float64) on CPU or CUDA; gradients by one backward pass.
torch loads when the engine first runs, not at import."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sgdsde.dynamics.engines.base import Block, Engine, SGDProblem, SGDState
from sgdsde.lazy import lazy_module
from sgdsde.run.checks import check_device

torch = lazy_module("torch")


@dataclasses.dataclass
class _TorchWork:
    device: Any  # torch.device
    X: Any  # (n, d) tensor
    y: Any  # (n,) tensor
    sqrt_delta: Any  # (T,) tensor


@dataclasses.dataclass(frozen=True)
class TorchEngine(Engine):
    """The update of ``sgdsde.dynamics.engines.base`` in batched torch, float64, with
    the gradient of sum_i coef_i f(x_i) by autograd (CPU or CUDA)."""

    name = "torch"

    def setup(self, problem: SGDProblem, theta0: np.ndarray, device: str):
        device = torch.device(check_device(device, "engine 'torch'"))
        dev = {"device": device, "dtype": torch.float64}
        work = _TorchWork(
            device=device,
            X=torch.as_tensor(problem.data.X, **dev),
            y=torch.as_tensor(problem.data.y, **dev),
            sqrt_delta=torch.as_tensor(np.sqrt(problem.label_noise), **dev),
        )
        return torch.as_tensor(np.array(theta0), **dev), work

    def run_block(self, state: SGDState, block: Block, s0, s1, diverged_step):
        pb, w = state.problem, state.work
        dev = {"device": w.device, "dtype": torch.float64}
        index, noise, mask = block.dense(pb.full, pb.data.n)
        index = torch.as_tensor(index, device=w.device)
        noise = torch.as_tensor(noise, **dev)
        mask_t = torch.as_tensor(mask, device=w.device)
        weight = mask_t / torch.as_tensor(block.batch, **dev)[:, :, None]  # 1 / B_k
        lrs = torch.as_tensor(block.lrs, **dev)
        alive = torch.as_tensor(diverged_step < 0, device=w.device)
        newly = torch.full_like(alive, False)
        first_bad = torch.full(alive.shape, -1, dtype=torch.int64, device=w.device)
        for s in range(s0, s1):
            Xb = w.X[index[:, s]]
            theta = state.theta.detach().requires_grad_(True)
            f = pb.model.predict_torch(theta, Xb)
            r = f.detach() - w.y[index[:, s]]
            bad = alive & torch.any(mask_t[:, s] & ~(0.5 * r * r <= pb.max_loss), dim=1)
            first_bad = torch.where(bad & ~newly, block.k0 + s, first_bad)
            newly |= bad
            alive &= ~bad
            coef = (r + w.sqrt_delta[:, None] * noise[:, s]) * weight[:, s]
            (g,) = torch.autograd.grad((coef * f).sum(), theta)
            with torch.no_grad():
                step = lrs[:, s, None] * g
                state.theta = torch.where(alive[:, None], state.theta - step, state.theta)
        hit = first_bad.cpu().numpy()
        diverged_step[hit >= 0] = hit[hit >= 0]

    def params(self, state: SGDState) -> np.ndarray:
        return state.theta.detach().cpu().numpy()
