"""Bop with a second moment (Bop2ndOrder), searched in gamma, sigma and a normalised threshold.

Bop2ndOrder keeps Bop's first moment ``m <- (1 - gamma) m + gamma g`` and adds ``v <- (1 - sigma) v + sigma
g^2``; it flips where ``|m| / (sqrt(v) + eps)`` exceeds the threshold tau (key ``threshold``) and agrees in
sign with the weight. Because the test statistic is normalised (about 1 for a perfectly consistent
gradient, about sqrt(gamma/2) for pure noise), tau is dimensionless and searched over 1e-6..1 (plus 0)
instead of Bop's gradient-scaled 1e-9..1e-3; gamma and sigma are time scales, searched log-uniformly.
Suarez-Ramirez et al., "A Bop and Beyond: A Second Order Optimizer for Binarized Neural Networks",
CVPR Workshops 2021; Helwegen et al. 2019, Sec. 6 (the suggestion of a second moving average).
"""

from __future__ import annotations

from typing import Any

from ._common import REAL_LR, LogRange, check_overrides, ray_distribution, suggest_log

__all__ = ["GAMMA", "NAME", "PAPER_SETTINGS", "SIGMA", "THRESHOLD", "naive_suggest", "ray_space", "suggest"]

NAME = "bop2"
GAMMA = LogRange(1e-6, 1e-1)
SIGMA = LogRange(1e-5, 1e-1)
THRESHOLD = LogRange(1e-6, 1.0, zero_below=1e-6)

PAPER_SETTINGS = [
    {"gamma": 1e-4, "sigma": 1e-3, "threshold": 1e-6,
     "source": "Bop's CIFAR-10 gamma with Adam's second-moment rate (beta2 = 0.999)"},
    {"gamma": 1e-3, "sigma": 1e-2, "threshold": 0.0, "source": "unthresholded, as Bop Fig. 1 tau = 0"},
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
