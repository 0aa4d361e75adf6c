"""BNEW searched in beta * T, the coordinate that transfers across training lengths.

BNEW relaxes the binary weights to [-1, 1] and adds the negative weight decay ``lambda_t = beta * t``
(update ``w <- Pi((1 + 2 lambda_t eta_t)(w - eta_t g))``), then projects onto {-1, 1} and freezes at
``t_lock``. The poster notes that the optimal beta depends on the training length T; the final penalty
``beta * T`` is what decides how hard the weights are pushed to the corners, so the space samples the
product ``beta_T`` log-uniformly (the optimizer derives ``beta = beta_T / T`` from the run's length) and the
lock point ``t_lock`` as a fraction of training. Paren & Poudel, "Training Binarized Neural Networks the
Easy Way" (seed 001).
"""

from __future__ import annotations

from typing import Any

from ._common import REAL_LR, LogRange, check_overrides, ray_distribution, suggest_log

__all__ = ["BETA_T", "NAME", "PAPER_SETTINGS", "T_LOCK", "naive_suggest", "ray_space", "suggest"]

NAME = "bnew"
BETA_T = LogRange(1e-1, 1e4)
T_LOCK = (0.5, 0.95)  # fraction of training after which the weights are projected and frozen

PAPER_SETTINGS = [
    {"beta_T": 10.0, "t_lock": 0.8, "source": "moderate penalty, lock after 80% (poster: phases 1-4)"},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample a BNEW configuration in (beta * T, t_lock) (define-by-run)."""
    return {
        "optimizer": NAME,
        "beta_T": suggest_log(trial, "beta_T", BETA_T),
        "t_lock": trial.suggest_float("t_lock", *T_LOCK),
        "lr": suggest_log(trial, "lr", REAL_LR),
    }


def naive_suggest(trial: Any) -> dict[str, Any]:
    """BNEW searched in beta directly, with a range that ignores the training length (the poster's
    observation is that the best beta moves with T, so this range is right only for one T)."""
    return {
        "optimizer": NAME,
        "beta": trial.suggest_float("beta", 1e-6, 1e-1, log=True),
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
        "t_lock": tune.uniform(*T_LOCK),
        "lr": ray_distribution(REAL_LR),
    }
    return check_overrides(NAME, space, overrides)
