"""BNEW searched in beta * T, the coordinate that transfers across training lengths.

BNEW relaxes the binary weights to [-1, 1] and adds the negative weight decay ``lambda_t = beta * t``
(update ``w <- Pi((1 + 2 lambda_t eta_t)(w - eta_t g))``), then projects onto {-1, 1} and freezes at
``t_lock``. The poster notes that the optimal beta depends on the training length T; the final penalty
``beta * T`` is what decides how hard the weights are pushed to the corners, so the space samples the
product ``beta_T`` (the value lambda reaches at the lock; the optimizer derives ``beta = beta_T / T`` with T
the number of phase-2 steps of the run), the Adam step ``latent_lr`` of the relaxed weights (real-valued
in [-1, 1] until the lock, so here the step is a genuine coordinate) and the lock point ``t_lock`` as a
fraction of training. Paren & Poudel, "Training Binarized Neural Networks the
Easy Way" (seed 001).
"""

from __future__ import annotations

from typing import Any

from ._common import REAL_LR, LogRange, check_overrides, ray_distribution, suggest_log

__all__ = ["BETA_T", "LATENT_LR", "NAME", "PAPER_SETTINGS", "T_LOCK", "naive_suggest", "ray_space", "suggest"]

NAME = "bnew"
BETA_T = LogRange(1e-2, 1e4)
LATENT_LR = LogRange(1e-4, 1e-1)
# fraction of training after which the weights are projected and frozen (phase 2 starts at t_start=0.25)
T_LOCK = (0.5, 0.95)

PAPER_SETTINGS = [
    {"beta_T": 1.0, "t_lock": 0.8, "latent_lr": 1e-2,
     "source": "bnn_tune.optim 'bnew' defaults (poster's four phases, lock after 80% of the run)"},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample a BNEW configuration in (beta * T, t_lock) (define-by-run)."""
    return {
        "optimizer": NAME,
        "beta_T": suggest_log(trial, "beta_T", BETA_T),
        "latent_lr": suggest_log(trial, "latent_lr", LATENT_LR),
        "t_lock": trial.suggest_float("t_lock", *T_LOCK),
        "lr": suggest_log(trial, "lr", REAL_LR),
    }


def naive_suggest(trial: Any) -> dict[str, Any]:
    """BNEW searched in beta directly, with a range that ignores the training length (the poster's
    observation is that the best beta moves with T, so this range is right only for one T)."""
    return {
        "optimizer": NAME,
        "beta": trial.suggest_float("beta", 1e-6, 1e-1, log=True),
        "latent_lr": trial.suggest_float("latent_lr", 1e-4, 1e-1, log=True),
        "t_lock": trial.suggest_float("t_lock", *T_LOCK),
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
    }


def ray_space(**overrides: Any) -> dict[str, Any]:
    """The same space as Ray Tune domains; ``overrides`` replace or add keys."""
    from bnn_tune._imports import require

    tune = require("ray.tune", feature="search_spaces.bnew.ray_space()")
    space = {
        "optimizer": NAME,
        "beta_T": ray_distribution(BETA_T),
        "latent_lr": ray_distribution(LATENT_LR),
        "t_lock": tune.uniform(*T_LOCK),
        "lr": ray_distribution(REAL_LR),
    }
    return check_overrides(NAME, space, overrides)
