"""Gradient filters (Quist et al.): the latent-weight hyperparameters re-expressed as filter parameters.

Order 1 is Bop-like smoothing, ``m <- (1 - gamma) m + gamma g``, flipping where ``m * w > 0`` (optionally
above a threshold); order 2 adds the inertia ``i <- (1 - alpha) i + alpha m`` and flips where ``i * w > 0``.
Latent SGD with EMA momentum and decoupled weight decay is exactly the order-2 filter with ``alpha =
lr * weight_decay`` (the init scale only sets a transient), so this space searches the filter order,
gamma and alpha -- never lr, weight decay and init scale. Quist et al., "Understanding Weight-Magnitude
Hyperparameters in Training Binary Networks", ICLR 2023; Helwegen et al., NeurIPS 2019.
"""

from __future__ import annotations

from typing import Any

from . import latent_adam
from ._common import REAL_LR, LogRange, check_overrides, ray_distribution, suggest_log

__all__ = ["ALPHA", "GAMMA", "NAME", "PAPER_SETTINGS", "THRESHOLD", "naive_suggest", "ray_space", "suggest"]

NAME = "filter"
ORDERS = (1, 2)
GAMMA = LogRange(1e-6, 1.0)
ALPHA = LogRange(1e-7, 1e-1)
THRESHOLD = LogRange(1e-9, 1e-3, zero_below=1e-9)
# the authors decay alpha with the learning-rate schedule, once per epoch (jorisquist/Understanding-WM-HP-in-BNNs
# optimizers/cema_optimizer.py: alpha = initial_alpha * lr factor); linear is per-epoch linear decay to 0
ALPHA_SCHEDULES = ("constant", "linear", "cosine")

PAPER_SETTINGS = [
    {"order": 2, "gamma": 1e-1, "alpha": 1e-4, "alpha_schedule": "linear",
     "source": "jorisquist/Understanding-WM-HP-in-BNNs optimizers/cema_optimizer.py (alpha decayed with the "
               "lr schedule); SGD momentum 0.9 (gamma = 1 - momentum) with lr 0.1 x weight decay 1e-3"},
    {"order": 2, "gamma": 1e-1, "alpha": 1e-4, "alpha_schedule": "cosine",
     "source": "the same filter under the cosine learning-rate decay of latent-weight training"},
    {"order": 1, "gamma": 1e-4, "threshold": 1e-8,
     "source": "Bop's CIFAR-10 setting as an order-1 filter (plumerai/rethinking-bnn-optimization "
               "bnn_optimization/models/binarynet.py bop_sec52)"},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample a gradient-filter configuration (define-by-run; ``alpha`` only for order 2,
    ``threshold`` only for order 1)."""
    order = trial.suggest_categorical("order", list(ORDERS))
    cfg: dict[str, Any] = {"optimizer": NAME, "order": order, "gamma": suggest_log(trial, "gamma", GAMMA)}
    if order == 2:
        cfg["alpha"] = suggest_log(trial, "alpha", ALPHA)
        cfg["alpha_schedule"] = trial.suggest_categorical("alpha_schedule", list(ALPHA_SCHEDULES))
    else:
        cfg["threshold"] = suggest_log(trial, "threshold", THRESHOLD)
    cfg["lr"] = suggest_log(trial, "lr", REAL_LR)
    return cfg


def naive_suggest(trial: Any) -> dict[str, Any]:
    """The latent-weight search the filter view replaces: lr, weight decay, init scale independently
    (:func:`bnn_tune.search_spaces.latent_adam.naive_suggest`)."""
    return latent_adam.naive_suggest(trial)


def ray_space(**overrides: Any) -> dict[str, Any]:
    """Ray Tune domains for the order-2 filter (Ray's native spaces have no conditionals; use
    ``OptunaSearch(space=suggest)`` for both orders, or ``ray_space(order=1, threshold=...)``)."""
    from bnn_tune._imports import require

    tune = require("ray.tune", feature="bnn_tune.search_spaces.filters.ray_space()")
    space = {
        "optimizer": NAME,
        "order": 2,
        "gamma": ray_distribution(GAMMA),
        "alpha": ray_distribution(ALPHA),
        "alpha_schedule": tune.choice(list(ALPHA_SCHEDULES)),
        "lr": ray_distribution(REAL_LR),
    }
    return check_overrides(NAME, space, overrides)
