"""The SDE model of SGD: noise models, solvers and ``simulate_sde``.

    d theta = -grad L dt + G(theta) dW,
    G dW = phi^T (a dW_label + b r (.) (dW_sgd - mean dW_sgd)) + s dW_iso   (Ito)

Noise models give the per-trajectory coefficients (a, b, s) (``sgdsde.sde.noise``);
solvers integrate with a fixed step (``SOLVERS``); ``simulate_sde`` returns a
Dataset in the layout of ``simulate_sgd``.
"""

from sgdsde.sde.noise import (
    NOISE_MODELS,
    GradientFlow,
    Isotropic,
    LabelNoise,
    NoiseCoefficients,
    NoiseModel,
    SGDCovariance,
    StabilizedLoss,
    make_noise,
)
from sgdsde.sde.simulate import simulate_sde
from sgdsde.sde.solvers import (
    SOLVERS,
    EulerMaruyamaNumba,
    EulerMaruyamaTorch,
    SDEProblem,
    Solver,
    make_solver,
    simulate_diagonal_sde,
)

__all__ = [
    "NOISE_MODELS",
    "SOLVERS",
    "EulerMaruyamaNumba",
    "EulerMaruyamaTorch",
    "GradientFlow",
    "Isotropic",
    "LabelNoise",
    "NoiseCoefficients",
    "NoiseModel",
    "SDEProblem",
    "SGDCovariance",
    "Solver",
    "StabilizedLoss",
    "make_noise",
    "make_solver",
    "simulate_diagonal_sde",
    "simulate_sde",
]
