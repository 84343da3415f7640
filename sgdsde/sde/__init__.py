"""The SDE model of SGD: noise models, solvers and ``simulate_sde``; and your own SDEs.

    d theta = -grad L dt + G(theta) dW,
    G dW = phi^T (a dW_label + b r (.) (dW_sgd - mean dW_sgd)) + s dW_iso   (Ito)

Noise models give the per-trajectory coefficients (a, b, s) (``sgdsde.sde.noise``);
``ScheduledNoise`` makes SGD's step size follow a schedule (dt and the coefficients
follow eta_k: ``sgdsde.sde.scheduled``);
``SDETerms`` give your own drift and diffusion instead (``sgdsde.sde.terms``, integrated
by ``euler_terms``);
solvers integrate with a fixed step (``SOLVERS``), driven by increment sources
(``INCREMENTS``: numpy, xoshiro, torch, Brownian bridge); ``simulate_sde`` returns a
Dataset in the layout of ``simulate_sgd`` (``sgdsde.analysis.compare_sgd_sde`` and
``weak_error_order`` measure how well the SDE matches exact SGD).
"""

from sgdsde.sde.noise import (
    NOISE_MODELS,
    GradientFlow,
    Isotropic,
    LabelNoise,
    NoiseCoefficients,
    NoiseModel,
    SGDCovariance,
    SGDNoise,
    StabilizedLoss,
    make_noise,
    noise_for_sgd,
)
from sgdsde.sde.scheduled import ScheduledNoise
from sgdsde.sde.simulate import default_solver, simulate_diagonal_sde, simulate_sde
from sgdsde.sde.solvers import (
    INCREMENTS,
    SOLVERS,
    BrownianBridge,
    BrownianInterval,
    EulerMaruyamaGEMM,
    EulerMaruyamaNumba,
    EulerMaruyamaTerms,
    EulerMaruyamaTorch,
    GivenIncrements,
    IncrementSource,
    NumpyIncrements,
    SDEProblem,
    Solver,
    TermsProblem,
    TorchIncrements,
    TorchsdeSolver,
    XoshiroIncrements,
    make_increments,
    make_solver,
    solver_from_config,
    solver_to_config,
)
from sgdsde.sde.terms import (
    DiagonalDiffusion,
    Drift,
    GeneralDiffusion,
    GradientDrift,
    SDETerms,
    diagonal_sde_kernel,
    product_kernel,
    sde_kernel,
)

__all__ = [
    "INCREMENTS",
    "NOISE_MODELS",
    "SOLVERS",
    "BrownianBridge",
    "BrownianInterval",
    "DiagonalDiffusion",
    "Drift",
    "EulerMaruyamaGEMM",
    "EulerMaruyamaNumba",
    "EulerMaruyamaTerms",
    "EulerMaruyamaTorch",
    "GeneralDiffusion",
    "GivenIncrements",
    "GradientDrift",
    "GradientFlow",
    "IncrementSource",
    "Isotropic",
    "LabelNoise",
    "NoiseCoefficients",
    "NoiseModel",
    "NumpyIncrements",
    "SDEProblem",
    "SDETerms",
    "SGDCovariance",
    "SGDNoise",
    "ScheduledNoise",
    "Solver",
    "StabilizedLoss",
    "TermsProblem",
    "TorchIncrements",
    "TorchsdeSolver",
    "XoshiroIncrements",
    "default_solver",
    "diagonal_sde_kernel",
    "make_increments",
    "make_noise",
    "make_solver",
    "noise_for_sgd",
    "product_kernel",
    "sde_kernel",
    "simulate_diagonal_sde",
    "simulate_sde",
    "solver_from_config",
    "solver_to_config",
]
