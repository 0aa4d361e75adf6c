"""BNEW searched in beta * T, the phase boundaries and the relaxed weights' step.

BNEW (the authors' form, Alasdair-P/bnew ``prox.py``) relaxes the binary weights to [-1, 1], pushes them
with ``w <- clamp((1 + 2 reg_t) w)`` before each Adam step, ``reg_t`` growing linearly over the T phase-2
steps, then projects onto {-1, 1} and freezes at ``t_lock``. The poster notes that the optimal slope beta
depends on the training length T, so the space samples ``beta_T`` (``reg`` at the lock, the reference's
``--reg``; the optimizer derives ``beta = beta_T / T`` with T the number of phase-2 steps of the run), the
Adam step ``latent_lr`` of the relaxed weights, and both phase boundaries as fractions of training
(``t_start`` and ``t_lock``; the reference's CIFAR-10 recipe is ~0.17 and ~0.98).
``benchmarks/science/bnew_beta_T.py`` measures how well beta * T transfers across T (BENCHMARKS.md).
Paren & Poudel, "Training Binarized Neural Networks the Easy Way" (seed 001).
"""

from __future__ import annotations

from typing import Any

from ._common import REAL_LR, LogRange, UniformRange, check_overrides, ray_distribution, suggest_log

__all__ = ["BETA_T", "LATENT_LR", "NAME", "PAPER_SETTINGS", "T_LOCK", "T_START", "naive_suggest", "ray_space",
           "suggest"]

NAME = "bnew"
# reg at the lock; the reference caps reg at 1 (prox.py adjust_reg max_reg=1.0)
BETA_T = LogRange(1e-6, 1.0)
LATENT_LR = LogRange(1e-4, 1e-1)
# fractions of training: end of phase 1, and the lock (projection and freeze)
T_START = UniformRange(0.0, 0.5)
T_LOCK = UniformRange(0.55, 1.0)

_REF = "Alasdair-P/bnew reproduce/cifar10/10bnew.py"
PAPER_SETTINGS = [
    # phase 1: 200 epochs (reproduce/cifar10/phase_1_10.py, convex hull only); phase 2: 1000 epochs,
    # --reg 0.001 or 0.0001 reached at the end (reg at the freeze epoch 980: 0.98 x), Adam --lr 0.01 linear
    {"beta_T": 1e-3 * 980 / 1000, "t_start": 200 / 1200, "t_lock": 1180 / 1200, "latent_lr": 1e-2, "lr": 1e-2,
     "source": f"{_REF} (phase_2_1_: --reg 0.001, --lr 0.01, --epochs 1000, --freeze 980) after phase_1_10.py"},
    {"beta_T": 1e-4 * 980 / 1000, "t_start": 200 / 1200, "t_lock": 1180 / 1200, "latent_lr": 1e-2, "lr": 1e-2,
     "source": f"{_REF} (phase_2_2..5: --reg 0.0001)"},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample a BNEW configuration in (beta * T, t_start, t_lock, latent_lr) (define-by-run)."""
    return {
        "optimizer": NAME,
        "beta_T": suggest_log(trial, "beta_T", BETA_T),
        "latent_lr": suggest_log(trial, "latent_lr", LATENT_LR),
        "t_start": trial.suggest_float("t_start", T_START.low, T_START.high),
        "t_lock": trial.suggest_float("t_lock", T_LOCK.low, T_LOCK.high),
        "lr": suggest_log(trial, "lr", REAL_LR),
    }


def naive_suggest(trial: Any) -> dict[str, Any]:
    """BNEW searched in beta directly, with a range that ignores the training length (the poster's
    observation is that the best beta moves with T, so this range is right only for one T)."""
    return {
        "optimizer": NAME,
        "beta": trial.suggest_float("beta", 1e-9, 1e-2, log=True),
        "latent_lr": trial.suggest_float("latent_lr", 1e-4, 1e-1, log=True),
        "t_start": trial.suggest_float("t_start", T_START.low, T_START.high),
        "t_lock": trial.suggest_float("t_lock", T_LOCK.low, T_LOCK.high),
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
    }


def ray_space(**overrides: Any) -> dict[str, Any]:
    """The same space as Ray Tune domains; ``overrides`` replace or add keys."""
    from bnn_tune._imports import require

    tune = require("ray.tune", feature="bnn_tune.search_spaces.bnew.ray_space()")
    space = {
        "optimizer": NAME,
        "beta_T": ray_distribution(BETA_T),
        "latent_lr": ray_distribution(LATENT_LR),
        "t_start": tune.uniform(T_START.low, T_START.high),
        "t_lock": tune.uniform(T_LOCK.low, T_LOCK.high),
        "lr": ray_distribution(REAL_LR),
    }
    return check_overrides(NAME, space, overrides)
