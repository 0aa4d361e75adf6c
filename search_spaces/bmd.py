"""Binary mirror descent searched in its annealing coordinates: initial inverse temperature and growth.

BMD trains the latent (dual) weights with Adam and uses ``tanh(beta_t * w~)`` forward, with ``beta_t``
growing from ``beta0`` to ``beta0 * beta_growth`` over the run so the forward weight hardens into
``sign(w~)``. Scaling ``w~`` by C and ``beta`` by 1/C leaves the forward pass unchanged (the analogue of
Theorem 1), so the latent step size is not an independent dimension: the space samples ``beta0`` (how soft
the start is, relative to the latent scale) and the total growth ``beta_growth`` log-uniformly. Ajanthan
et al., "Mirror Descent View for Neural Network Quantization", AISTATS 2021; Paren & Poudel (seed 001).
"""

from __future__ import annotations

from typing import Any

from ._common import REAL_LR, LogRange, check_overrides, ray_distribution, suggest_log

__all__ = ["BETA0", "BETA_GROWTH", "NAME", "PAPER_SETTINGS", "naive_suggest", "ray_space", "suggest"]

NAME = "bmd"
BETA0 = LogRange(1e-1, 1e2)
BETA_GROWTH = LogRange(1.0, 1e4)

PAPER_SETTINGS = [
    {"beta0": 1.0, "beta_growth": 100.0, "source": "bnn_tune.optim.BMD defaults (tanh slope 1 -> 100)"},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample a BMD configuration (define-by-run)."""
    return {
        "optimizer": NAME,
        "beta0": suggest_log(trial, "beta0", BETA0),
        "beta_growth": suggest_log(trial, "beta_growth", BETA_GROWTH),
        "lr": suggest_log(trial, "lr", REAL_LR),
    }


def naive_suggest(trial: Any) -> dict[str, Any]:
    """BMD searched as a real-valued user would: a linear beta0 range and a linear growth range,
    independently of the latent scale."""
    return {
        "optimizer": NAME,
        "beta0": trial.suggest_float("beta0", 0.5, 10.0),
        "beta_growth": trial.suggest_float("beta_growth", 1.0, 1000.0),
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
    }


def ray_space(**overrides: Any) -> dict[str, Any]:
    """The same space as Ray Tune domains; ``overrides`` replace or add keys."""
    space = {
        "optimizer": NAME,
        "beta0": ray_distribution(BETA0),
        "beta_growth": ray_distribution(BETA_GROWTH),
        "lr": ray_distribution(REAL_LR),
    }
    return check_overrides(NAME, space, overrides)
