"""Binary mirror descent searched in its annealing coordinates: initial inverse temperature and growth.

BMD trains the latent (dual) weights with Adam and uses ``tanh(beta_t * w~)`` forward, with ``beta_t``
growing from ``beta0`` to ``beta0 * beta_growth`` over the run so the forward weight hardens into
``sign(w~)``. Scaling ``w~`` (initial scale and Adam step) by C and ``beta`` by 1/C leaves every forward
pass unchanged (the analogue of Theorem 1), so of (init scale, latent step, beta0) only two are free: the
model's init is kept and the space samples ``beta0`` (how soft the start is) and ``latent_lr`` (the step in
units of the init), plus the total growth ``beta_growth``, all log-uniformly. Ajanthan et al., "Mirror
Descent View for Neural Network Quantization", AISTATS 2021; Paren & Poudel (seed 001).
"""

from __future__ import annotations

from typing import Any

from ._common import REAL_LR, LogRange, check_overrides, ray_distribution, suggest_log

__all__ = ["BETA0", "BETA_GROWTH", "LATENT_LR", "NAME", "PAPER_SETTINGS", "naive_suggest", "ray_space", "suggest"]

NAME = "bmd"
BETA0 = LogRange(1e-1, 1e2)
# total growth of beta over the run: the references reach ~2e4 (1.01 ** 1000, 1.02 ** 500)
BETA_GROWTH = LogRange(1.0, 1e5)
LATENT_LR = LogRange(1e-4, 1e-1)

PAPER_SETTINGS = [
    # MD-tanh: Adam 1e-3, beta x1.01 every 100 of 100k iterations (growth 1.01 ** 1000 ~ 2.1e4)
    {"beta0": 1.0, "beta_growth": 1.01 ** 1000, "latent_lr": 1e-3,
     "source": "kartikgupta-at-anu/md-bnn train_scripts/cifar10resnet18.sh (MD-tanh, --beta-scale 1.01 "
               "--beta-interval 100 --num-iters 100000; methods/tanh_projn.py)"},
    {"beta0": 1.0, "beta_growth": 1.02 ** 500, "latent_lr": 1e-3,
     "source": "kartikgupta-at-anu/md-bnn train_scripts/cifar10resnet18.sh (MD-tanh-S, --beta-scale 1.02 "
               "--beta-interval 200)"},
    # BNEW authors' BMD baseline: mirror_binary, --reg 1.01 per epoch over 1000 epochs, Adam 0.01
    {"beta0": 1.0, "beta_growth": 1.01 ** 1000, "latent_lr": 1e-2, "lr": 1e-2,
     "source": "Alasdair-P/bnew reproduce/cifar10/10bmd.py (--reg-type mirror_binary --reg 1.01 --epochs 1000)"},
    {"beta0": 1.0, "beta_growth": 100.0, "latent_lr": 1e-2,
     "source": "bnn_tune.optim 'bmd' defaults (tanh slope 1 -> 100, Adam 1e-2)"},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample a BMD configuration (define-by-run)."""
    return {
        "optimizer": NAME,
        "beta0": suggest_log(trial, "beta0", BETA0),
        "beta_growth": suggest_log(trial, "beta_growth", BETA_GROWTH),
        "latent_lr": suggest_log(trial, "latent_lr", LATENT_LR),
        "lr": suggest_log(trial, "lr", REAL_LR),
    }


def naive_suggest(trial: Any) -> dict[str, Any]:
    """BMD searched as a real-valued user would: linear beta0 and growth ranges, the latent learning rate
    as for a real network."""
    return {
        "optimizer": NAME,
        "beta0": trial.suggest_float("beta0", 0.5, 10.0),
        "beta_growth": trial.suggest_float("beta_growth", 1.0, 1000.0),
        "latent_lr": trial.suggest_float("latent_lr", 1e-5, 1e-1, log=True),
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
    }


def ray_space(**overrides: Any) -> dict[str, Any]:
    """The same space as Ray Tune domains; ``overrides`` replace or add keys."""
    space = {
        "optimizer": NAME,
        "beta0": ray_distribution(BETA0),
        "beta_growth": ray_distribution(BETA_GROWTH),
        "latent_lr": ray_distribution(LATENT_LR),
        "lr": ray_distribution(REAL_LR),
    }
    return check_overrides(NAME, space, overrides)
