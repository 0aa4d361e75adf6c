"""Bop with a second moment (Bop2ndOrder), searched in gamma, sigma and the threshold.

Bop2ndOrder keeps Bop's first moment ``m <- (1 - gamma) m + gamma g`` and adds ``v <- (1 - sigma) v + sigma
g^2``; it flips where ``|m| / (sqrt(v) + eps)`` exceeds the threshold tau (key ``threshold``) and agrees in
sign with the weight. Without bias correction (the authors' form) the statistic is about ``gamma /
sqrt(sigma)`` times the gradient's consistency, so tau is searched over the decades the authors use
(1e-8..1e-5 in their code) up to 1 (plus 0), and gamma and sigma, both time scales, log-uniformly down to
the authors' 1e-7. Suarez-Ramirez et al., "A Bop and Beyond: A Second Order Optimizer for Binarized Neural
Networks", CVPR Workshops 2021; Helwegen et al. 2019, Sec. 6 (the suggestion of a second moving average).
"""

from __future__ import annotations

from typing import Any

from ._common import REAL_LR, LogRange, check_overrides, ray_distribution, suggest_log

__all__ = ["GAMMA", "NAME", "PAPER_SETTINGS", "SIGMA", "THRESHOLD", "naive_suggest", "ray_space", "suggest"]

NAME = "bop2"
GAMMA = LogRange(1e-8, 1e-1)
SIGMA = LogRange(1e-8, 1e-1)
THRESHOLD = LogRange(1e-9, 1.0, zero_below=1e-9)

_REPO = "CuauSuarez/Bop2ndOrder (branch conference) bnn_optimization"
PAPER_SETTINGS = [
    {"gamma": 1e-6, "sigma": 1e-2, "threshold": 1e-6, "source": f"{_REPO}/optimizers.py Bop2ndOrder defaults"},
    {"gamma": 1e-7, "sigma": 1e-3, "threshold": 1e-5, "lr": 1e-2,
     "source": f"{_REPO}/models/binarynet_batch.py bop2ndOrder (CIFAR-10 BinaryNet)"},
    # bop2ndOrder_CIFAR decays linearly from these start values (tau -> 1e-8, gamma -> 1e-5, sigma -> 1e-2)
    {"gamma": 1e-2, "sigma": 1e-7, "threshold": 1e-5, "lr": 1e-2,
     "source": f"{_REPO}/models/binarynet_batch.py bop2ndOrder_CIFAR (start values)"},
    {"gamma": 1e-5, "sigma": 1e-2, "threshold": 1e-8,
     "source": f"{_REPO}/models/binarynet_batch.py bop2ndOrder_CIFAR (end values)"},
    {"gamma": 1e-7, "sigma": 1e-3, "threshold": 1e-6, "source": f"{_REPO}/models/binarynet_batch.py bop2ndOrder_testExp"},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample a Bop2ndOrder configuration (define-by-run; only ``trial.suggest_*`` calls)."""
    return {
        "optimizer": NAME,
        "gamma": suggest_log(trial, "gamma", GAMMA),
        "sigma": suggest_log(trial, "sigma", SIGMA),
        "threshold": suggest_log(trial, "threshold", THRESHOLD),
        "lr": suggest_log(trial, "lr", REAL_LR),
    }


def naive_suggest(trial: Any) -> dict[str, Any]:
    """Bop2ndOrder searched like Adam: gamma as a learning rate, sigma as 1 - beta2, tau linear in [0, 1e-3]."""
    return {
        "optimizer": NAME,
        "gamma": trial.suggest_float("gamma", 1e-4, 1e-1, log=True),
        "sigma": trial.suggest_categorical("sigma", [1e-1, 1e-2, 1e-3]),  # 1 - beta2 for beta2 in .9/.99/.999
        "threshold": trial.suggest_float("threshold", 0.0, 1e-3),
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
    }


def ray_space(**overrides: Any) -> dict[str, Any]:
    """The same space as Ray Tune domains; ``overrides`` replace or add keys."""
    space = {
        "optimizer": NAME,
        "gamma": ray_distribution(GAMMA),
        "sigma": ray_distribution(SIGMA),
        "threshold": ray_distribution(THRESHOLD),
        "lr": ray_distribution(REAL_LR),
    }
    return check_overrides(NAME, space, overrides)
